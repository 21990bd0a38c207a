# A customer managed key with yearly rotation. The account administers it through IAM
# (the default key policy); services that encrypt on their own behalf are let in by name.
data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_arn = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"
  log_groups  = "arn:${data.aws_partition.current.partition}:logs:${data.aws_region.current.region}:${data.aws_caller_identity.current.account_id}:log-group:*"
}

data "aws_iam_policy_document" "key" {
  source_policy_documents = var.policy_json == null ? [] : [var.policy_json]

  # In a key policy, "*" as the resource means this key and nothing else.
  #checkov:skip=CKV_AWS_109:a key policy's resource is the key itself; this is KMS's default statement that hands the key's administration to IAM
  #checkov:skip=CKV_AWS_111:a key policy's resource is the key itself; this is KMS's default statement that hands the key's administration to IAM
  #checkov:skip=CKV_AWS_356:a key policy's resource is the key itself; this is KMS's default statement that hands the key's administration to IAM
  statement {
    sid       = "AccountAdministersThroughIam"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = [local.account_arn]
    }
  }

  dynamic "statement" {
    for_each = var.allow_cloudwatch_logs ? [local.log_groups] : []
    content {
      sid       = "CloudWatchLogsEncryptsThisAccountsLogGroups"
      actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
      resources = ["*"]
      principals {
        type        = "Service"
        identifiers = ["logs.${data.aws_region.current.region}.amazonaws.com"]
      }
      condition {
        test     = "ArnLike"
        variable = "kms:EncryptionContext:aws:logs:arn"
        values   = [statement.value]
      }
    }
  }
}

resource "aws_kms_key" "this" {
  description             = var.description
  enable_key_rotation     = true
  rotation_period_in_days = 365
  deletion_window_in_days = var.deletion_window_in_days
  policy                  = data.aws_iam_policy_document.key.json
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.alias}"
  target_key_id = aws_kms_key.this.key_id
}
