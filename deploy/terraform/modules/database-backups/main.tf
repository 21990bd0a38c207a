# What CloudNativePG needs from AWS: its instances' service account may read and write
# its own folder of the backups bucket (barman's base backups and WAL archive), and
# nothing else. barman-cloud picks the role up from the service account's annotation
# (s3Credentials.inheritFromIAMRole), so no access key exists.
data "aws_iam_policy_document" "backups" {
  statement {
    sid       = "ListOwnFolder"
    actions   = ["s3:ListBucket"]
    resources = [var.bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [var.prefix, "${var.prefix}/*"]
    }
  }
  statement {
    sid       = "LocateBucket"
    actions   = ["s3:GetBucketLocation"]
    resources = [var.bucket_arn]
  }
  # Delete: the Cluster's retentionPolicy removes backups older than it.
  statement {
    sid       = "ReadWriteOwnFolder"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${var.bucket_arn}/${var.prefix}/*"]
  }
  statement {
    sid       = "UseBucketKey"
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.bucket_kms_key_arn]
  }
}

module "role" {
  source            = "../workload-role"
  name              = var.name
  oidc_provider_arn = var.oidc_provider_arn
  oidc_issuer_url   = var.oidc_issuer_url
  namespace         = var.namespace
  service_account   = var.cnpg_cluster_name
  policy_json       = data.aws_iam_policy_document.backups.json
}
