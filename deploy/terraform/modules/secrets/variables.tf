variable "name" {
  description = "Prefix of the secrets' KMS key alias and of External Secrets Operator's role."
  type        = string
}

variable "recovery_window_in_days" {
  description = "Days a deleted secret can still be restored (7 to 30)."
  type        = number

  validation {
    condition     = var.recovery_window_in_days >= 7 && var.recovery_window_in_days <= 30
    error_message = "Secrets Manager takes 7 to 30 days."
  }
}

variable "redis_host" {
  description = "Host name of the ElastiCache primary, for flowforge/redis_url."
  type        = string
  sensitive   = true
}

variable "oidc_provider_arn" {
  description = "ARN of the cluster's IAM OIDC provider."
  type        = string
}

variable "oidc_issuer_url" {
  description = "The cluster's OIDC issuer URL."
  type        = string
}

variable "external_secrets_namespace" {
  description = "Namespace External Secrets Operator runs in."
  type        = string
  default     = "external-secrets"
}

variable "external_secrets_service_account" {
  description = "Service account of External Secrets Operator's controller."
  type        = string
  default     = "external-secrets"
}
