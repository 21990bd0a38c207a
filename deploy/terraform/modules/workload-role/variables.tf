variable "name" {
  description = "Name of the IAM role."
  type        = string
}

variable "oidc_provider_arn" {
  description = "ARN of the cluster's IAM OIDC provider (IAM roles for service accounts)."
  type        = string
}

variable "oidc_issuer_url" {
  description = "The cluster's OIDC issuer URL, https:// included."
  type        = string
}

variable "namespace" {
  description = "Kubernetes namespace of the service account that may assume the role."
  type        = string
}

variable "service_account" {
  description = "Name of the Kubernetes service account that may assume the role."
  type        = string
}

variable "policy_json" {
  description = "The role's permissions, as an IAM policy document in JSON."
  type        = string
}

variable "managed_policy_arns" {
  description = "AWS managed policies to attach as well, by a name of your choosing."
  type        = map(string)
  default     = {}
}
