variable "name" {
  description = "Name of the IAM role."
  type        = string
}

variable "oidc_provider_arn" {
  description = "ARN of the cluster's IAM OIDC provider."
  type        = string
}

variable "oidc_issuer_url" {
  description = "The cluster's OIDC issuer URL."
  type        = string
}

variable "hosted_zone_id" {
  description = "Route 53 hosted zone of the public hostname, where cert-manager answers DNS-01 challenges."
  type        = string
}
