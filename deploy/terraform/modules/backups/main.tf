# The backups bucket (CloudNativePG's base backups and WAL) and the bucket its access logs
# go to. Both: versioned, encrypted with a key of their own, TLS only, never public,
# owned by the account (no ACLs), with lifecycle rules and events to EventBridge.
data "aws_caller_identity" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  # Settings both buckets share, by bucket.
  buckets = {
    backups     = aws_s3_bucket.backups
    access_logs = aws_s3_bucket.access_logs
  }
  # Backups go to Intelligent-Tiering at once: the Cluster's 30-day retention deletes most
  # objects before Standard-IA's 30-day minimum would pay off, while what outlives it
  # unread (old versions, the oldest base backup) drops to the infrequent-access rate by
  # itself, with no retrieval fee for a restore. Access logs age predictably.
  transitions = {
    backups     = { days = 0, storage_class = "INTELLIGENT_TIERING" }
    access_logs = { days = 30, storage_class = "STANDARD_IA" }
  }
  # Backups age out through the Cluster's retentionPolicy; access logs by age here.
  current_expiration_days = {
    backups     = null
    access_logs = var.access_log_expiration_days
  }
}

# S3 server access logging writes to a KMS-encrypted bucket only when the key lets the
# logging service use it.
data "aws_iam_policy_document" "key_for_access_logs" {
  statement {
    sid       = "S3ServerAccessLoggingWritesEncrypted"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

module "key" {
  source      = "../kms-key"
  alias       = "${var.bucket_name}-s3"
  description = "Objects of the ${var.bucket_name} buckets"
  policy_json = data.aws_iam_policy_document.key_for_access_logs.json
}

resource "aws_s3_bucket" "backups" {
  #checkov:skip=CKV_AWS_144:a second copy in another region is a disaster-recovery decision with its own cost, left to the operator (docs/deploy-aws.md)
  bucket        = var.bucket_name
  force_destroy = false
}

resource "aws_s3_bucket" "access_logs" {
  #checkov:skip=CKV_AWS_144:access logs of the backups bucket need no copy in another region
  bucket        = "${var.bucket_name}-access-logs"
  force_destroy = false
}

resource "aws_s3_bucket_logging" "backups" {
  bucket        = aws_s3_bucket.backups.id
  target_bucket = aws_s3_bucket.access_logs.id
  target_prefix = "backups/"
}

resource "aws_s3_bucket_versioning" "this" {
  for_each = local.buckets
  bucket   = each.value.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  for_each = local.buckets
  bucket   = each.value.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = module.key.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  for_each                = local.buckets
  bucket                  = each.value.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "this" {
  for_each = local.buckets
  bucket   = each.value.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  for_each = local.buckets
  bucket   = each.value.id

  rule {
    id     = "age-out"
    status = "Enabled"
    filter {}

    transition {
      days          = local.transitions[each.key].days
      storage_class = local.transitions[each.key].storage_class
    }

    dynamic "expiration" {
      for_each = local.current_expiration_days[each.key] == null ? [] : [local.current_expiration_days[each.key]]
      content {
        days = expiration.value
      }
    }

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]
}

data "aws_iam_policy_document" "bucket" {
  for_each = local.buckets

  statement {
    sid       = "DenyWithoutTls"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [each.value.arn, "${each.value.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  dynamic "statement" {
    for_each = each.key == "access_logs" ? [aws_s3_bucket.backups.arn] : []
    content {
      sid       = "S3ServerAccessLoggingDelivers"
      actions   = ["s3:PutObject"]
      resources = ["${each.value.arn}/*"]
      principals {
        type        = "Service"
        identifiers = ["logging.s3.amazonaws.com"]
      }
      condition {
        test     = "StringEquals"
        variable = "aws:SourceAccount"
        values   = [local.account_id]
      }
      condition {
        test     = "ArnLike"
        variable = "aws:SourceArn"
        values   = [statement.value]
      }
    }
  }
}

resource "aws_s3_bucket_policy" "this" {
  for_each   = local.buckets
  bucket     = each.value.id
  policy     = data.aws_iam_policy_document.bucket[each.key].json
  depends_on = [aws_s3_bucket_public_access_block.this]
}

# Object events (deletions above all) reach EventBridge, where alerts can match them.
resource "aws_s3_bucket_notification" "this" {
  for_each    = local.buckets
  bucket      = each.value.id
  eventbridge = true
}
