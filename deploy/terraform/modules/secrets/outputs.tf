output "secret_arns" {
  description = "ARN of each secret, by key under flowforge/."
  value       = { for key, secret in aws_secretsmanager_secret.this : key => secret.arn }
  sensitive   = true
}

output "redis_auth_token" {
  description = "The ElastiCache AUTH token, as stored in flowforge/redis_password."
  value       = aws_secretsmanager_secret_version.password["redis_password"].secret_string
  sensitive   = true
}

output "external_secrets_role_arn" {
  description = "Role for External Secrets Operator's service account (eks.amazonaws.com/role-arn)."
  value       = module.external_secrets_role.arn
}

output "arn_pattern" {
  description = "ARN pattern of every flowforge/ secret, for policies that read them all."
  value       = local.secret_pattern
}

output "kms_key_arn" {
  description = "The KMS key the secrets are encrypted with."
  value       = module.key.arn
}
