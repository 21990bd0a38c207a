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

variable "namespace" {
  description = "Namespace of the CloudNativePG cluster (the overlay's namespace)."
  type        = string
}

variable "cnpg_cluster_name" {
  description = "Name of the CloudNativePG Cluster; the operator names the instances' service account after it."
  type        = string
  default     = "flowforge-db"
}

variable "bucket_arn" {
  description = "ARN of the backups bucket."
  type        = string
}

variable "bucket_kms_key_arn" {
  description = "KMS key the backups bucket encrypts with."
  type        = string
}

variable "prefix" {
  description = "Folder of the bucket this cluster's base backups and WAL go to (the overlay's destinationPath)."
  type        = string

  validation {
    condition     = length(var.prefix) > 0 && !startswith(var.prefix, "/") && !endswith(var.prefix, "/")
    error_message = "The prefix is a folder name without slashes around it."
  }
}
