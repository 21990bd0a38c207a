variable "name" {
  description = "Prefix of the roles' names."
  type        = string
}

variable "github_repository" {
  description = "The repository whose workflows may assume the roles, as OWNER/REPO."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "github_repository is OWNER/REPO."
  }
}

variable "image_push_subjects" {
  description = "Workflow token subjects (after repo:OWNER/REPO:) allowed to push images, e.g. ref:refs/heads/main."
  type        = list(string)

  validation {
    condition     = alltrue([for subject in var.image_push_subjects : can(regex("^(ref:refs/(heads|tags)/|environment:)[^*]+$", subject))])
    error_message = "Each subject names one ref or one environment, without wildcards."
  }
}

variable "deploy_environment" {
  description = "The GitHub environment whose jobs may deploy (repo:OWNER/REPO:environment:NAME)."
  type        = string
}

variable "ecr_repository_arns" {
  description = "The ECR repositories the push role may push to."
  type        = list(string)
}

variable "cluster_name" {
  description = "The EKS cluster the deploy role may describe and deploy to."
  type        = string
}

variable "cluster_arn" {
  description = "ARN of that cluster."
  type        = string
}

variable "deploy_namespace" {
  description = "The Kubernetes namespace the deploy role may change (the overlay's namespace)."
  type        = string
}

variable "apply_environment" {
  description = "The GitHub environment whose jobs may apply Terraform (repo:OWNER/REPO:environment:NAME); give it required reviewers."
  type        = string
}

variable "state_bucket_arn" {
  description = "The Terraform state bucket, which the plan role reads."
  type        = string
}

variable "state_kms_key_arn" {
  description = "The state bucket's KMS key, which the plan role decrypts with."
  type        = string
}

variable "secrets_arn_pattern" {
  description = "ARN pattern of the Secrets Manager secrets Terraform manages, whose values the plan role reads when refreshing them."
  type        = string
}

variable "secrets_kms_key_arn" {
  description = "The KMS key of those secrets."
  type        = string
}
