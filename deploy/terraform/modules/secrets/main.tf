# The secrets deploy/kubernetes/base/secrets.yaml's ExternalSecrets read, under the same
# keys, generated here and encrypted with a key of their own. External Secrets Operator
# reads them through its own role, limited to flowforge/*.
#
# Not here: flowforge/backup_s3_key and flowforge/backup_s3_key_secret. On AWS the
# database's backups use an IAM role (the database-backups module), and the AWS overlay
# drops the ExternalSecret that reads them (docs/deploy-aws.md).
data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  prefix         = "flowforge/"
  secret_pattern = "arn:${data.aws_partition.current.partition}:secretsmanager:${data.aws_region.current.region}:${data.aws_caller_identity.current.account_id}:secret:${local.prefix}*"
  # %s is ROLE:PASSWORD; the host is the CloudNativePG primary's Service in the namespace.
  database_url = "postgres://%s@flowforge-db-rw:5432/flowforge?sslmode=verify-full&sslrootcert=/run/secrets/ca.pem"

  # Every for_each below iterates over these plain names, never over the (sensitive)
  # values, which Terraform would refuse as instance keys.
  passwords = toset(["postgres_owner_password", "postgres_app_password", "redis_password", "redis_exporter_password"])
  database_urls = {
    database_url_owner = { role = "flowforge_owner", password = "postgres_owner_password" }
    database_url_app   = { role = "flowforge_app", password = "postgres_app_password" }
  }
  # Set once, then rotated by hand (docs/deploy-aws.md): Terraform leaves their values alone.
  rotated_by_hand = toset(["webhook_secrets_key", "webhook_secrets_key_previous"])
  secret_keys     = setunion(local.passwords, keys(local.database_urls), local.rotated_by_hand, ["redis_url"])
}

# Letters and digits only: they go into URLs unescaped, and ElastiCache refuses some
# punctuation in AUTH tokens. 48 of them carry about 285 bits.
resource "random_password" "this" {
  for_each = local.passwords
  length   = 48
  special  = false
}

resource "random_bytes" "webhook_secrets_key" {
  length = 32
}

module "key" {
  source      = "../kms-key"
  alias       = "${var.name}-secrets"
  description = "FlowForge's secrets in Secrets Manager (${var.name})"
}

resource "aws_secretsmanager_secret" "this" {
  #checkov:skip=CKV2_AWS_57:rotating these means changing PostgreSQL roles, the ElastiCache token or resealing webhook secrets in step, which the procedures in docs/runbooks.md do; a rotation Lambda would not
  for_each                = local.secret_keys
  name                    = "${local.prefix}${each.key}"
  description             = "FlowForge ${each.key}, read by External Secrets Operator"
  kms_key_id              = module.key.arn
  recovery_window_in_days = var.recovery_window_in_days
}

resource "aws_secretsmanager_secret_version" "password" {
  for_each      = local.passwords
  secret_id     = aws_secretsmanager_secret.this[each.key].id
  secret_string = random_password.this[each.key].result
}

# Built from the passwords, so a new password reaches its URL in the same apply.
resource "aws_secretsmanager_secret_version" "database_url" {
  for_each      = local.database_urls
  secret_id     = aws_secretsmanager_secret.this[each.key].id
  secret_string = format(local.database_url, "${each.value.role}:${random_password.this[each.value.password].result}")
}

resource "aws_secretsmanager_secret_version" "rotated_by_hand" {
  for_each  = local.rotated_by_hand
  secret_id = aws_secretsmanager_secret.this[each.key].id
  # The previous key starts as whitespace, which the services read as none.
  secret_string = each.key == "webhook_secrets_key" ? random_bytes.webhook_secrets_key.base64 : "\n"

  lifecycle {
    ignore_changes = [secret_string]
  }
}

# A version of its own: the URL needs the cache's host, and the cache needs
# redis_password's version first.
resource "aws_secretsmanager_secret_version" "redis_url" {
  secret_id     = aws_secretsmanager_secret.this["redis_url"].id
  secret_string = "rediss://:${random_password.this["redis_password"].result}@${var.redis_host}:6379"
}

data "aws_iam_policy_document" "external_secrets" {
  statement {
    sid       = "ReadFlowForgeSecrets"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = [local.secret_pattern]
  }
  statement {
    sid       = "DecryptThem"
    actions   = ["kms:Decrypt"]
    resources = [module.key.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${data.aws_region.current.region}.amazonaws.com"]
    }
  }
}

module "external_secrets_role" {
  source            = "../workload-role"
  name              = "${var.name}-external-secrets"
  oidc_provider_arn = var.oidc_provider_arn
  oidc_issuer_url   = var.oidc_issuer_url
  namespace         = var.external_secrets_namespace
  service_account   = var.external_secrets_service_account
  policy_json       = data.aws_iam_policy_document.external_secrets.json
}
