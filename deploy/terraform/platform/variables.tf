# What sets each variable:
#   - environments/ENV.tfvars (committed): the environment, its names and its sizes;
#   - the account's own values (environments/account.tfvars.example lists them), from
#     environments/ENV.account.tfvars or TF_VAR_* variables;
#   - the defaults below, the same in every environment.
# docs/deploy-aws.md has them all in a table, with staging's and production's values.

# The environment and its names.

variable "environment" {
  description = "The environment: staging or prod. Names everything (flowforge-ENV) and its state."
  type        = string

  validation {
    condition     = contains(["staging", "prod"], var.environment)
    error_message = "environment is staging or prod."
  }
}

variable "kubernetes_namespace" {
  description = "Namespace FlowForge runs in: the one the Kubernetes overlay of the same environment sets."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.kubernetes_namespace))
    error_message = "kubernetes_namespace is a Kubernetes namespace name (a DNS label)."
  }
}

variable "backup_prefix" {
  description = "Folder of the backups bucket the database's backups go to (the overlay's destinationPath ends with it)."
  type        = string
}

variable "github_deploy_environment" {
  description = "The GitHub environment whose jobs may deploy releases (the deploy role's subject)."
  type        = string

  # The infra-ENV environments belong to the apply role; a deploy job must not get it.
  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+$", var.github_deploy_environment)) && !startswith(var.github_deploy_environment, "infra-")
    error_message = "github_deploy_environment is one GitHub environment name, not an infra-* one."
  }
}

# The account's own values.

variable "aws_account_id" {
  description = "The AWS account the environment lives in; the provider refuses any other."
  type        = string

  validation {
    condition     = can(regex("^[0-9]{12}$", var.aws_account_id))
    error_message = "aws_account_id is the account's twelve digits."
  }
}

variable "kubernetes_version" {
  description = "EKS Kubernetes minor version, one in standard support."
  type        = string

  validation {
    condition     = can(regex("^1\\.[0-9]+$", var.kubernetes_version))
    error_message = "kubernetes_version is a minor version, such as 1.33."
  }
}

variable "cluster_admin_arns" {
  description = "IAM users or roles given cluster-admin on the cluster."
  type        = list(string)
}

variable "route53_zone_id" {
  description = "Route 53 hosted zone of the public hostname; cert-manager writes its DNS-01 challenges there."
  type        = string
}

variable "github_repository" {
  description = "The GitHub repository (OWNER/REPO) whose workflows plan, apply, push images and deploy."
  type        = string
}

# Sizes and settings.

variable "region" {
  description = "AWS region."
  type        = string
  default     = "us-east-1"
}

variable "availability_zones" {
  description = "Three availability zones of the region."
  type        = list(string)
  default     = ["us-east-1a", "us-east-1b", "us-east-1c"]
}

variable "vpc_cidr" {
  description = "The VPC's /16, distinct per environment in case they are ever peered."
  type        = string
}

variable "single_nat_gateway" {
  description = "One NAT gateway for the three zones instead of one each."
  type        = bool
}

variable "cluster_endpoint_public_access" {
  description = "Open the Kubernetes API's public endpoint (to cluster_public_access_cidrs only)."
  type        = bool
  default     = false
}

variable "cluster_public_access_cidrs" {
  description = "Addresses allowed to the public endpoint when it is open."
  type        = list(string)
  default     = []
}

variable "node_instance_types" {
  description = "Instance types of the node group."
  type        = list(string)
}

variable "node_min_size" {
  description = "Fewest nodes (three: the database's instances each need a node of their own)."
  type        = number

  validation {
    condition     = var.node_min_size >= 3
    error_message = "Three nodes at least: one for each database instance."
  }
}

variable "node_desired_size" {
  description = "Nodes at creation."
  type        = number

  validation {
    condition     = var.node_min_size <= var.node_desired_size && var.node_desired_size <= var.node_max_size
    error_message = "node_desired_size lies between node_min_size and node_max_size."
  }
}

variable "node_max_size" {
  description = "Most nodes."
  type        = number
}

variable "log_retention_days" {
  description = "Days the VPC flow logs, the EKS control plane logs and the S3 access logs are kept."
  type        = number
  default     = 365
}

variable "cache_node_type" {
  description = "ElastiCache node type."
  type        = string
}

variable "cache_nodes" {
  description = "ElastiCache nodes (primary and replicas)."
  type        = number
}

variable "cache_multi_az" {
  description = "ElastiCache Multi-AZ with automatic failover."
  type        = bool
}

variable "backup_noncurrent_version_days" {
  description = "Days a deleted or replaced backup object's old version is kept."
  type        = number
}

variable "ecr_keep_last_images" {
  description = "Images each ECR repository keeps."
  type        = number
}

variable "secrets_recovery_window_days" {
  description = "Days a deleted secret can still be restored."
  type        = number
}

variable "image_push_subjects" {
  description = "Workflow token subjects allowed to push images (after repo:OWNER/REPO:)."
  type        = list(string)
}

variable "extra_tags" {
  description = "Tags added to every resource besides Project, Environment, ManagedBy and Repository (an owner, a cost centre)."
  type        = map(string)
  default     = {}
}
