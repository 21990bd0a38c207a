variable "name" {
  description = "Replication group ID, and prefix of its subnet group, security group and key."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the cache's security group."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets the cache nodes go in."
  type        = list(string)
}

variable "client_security_group_id" {
  description = "The only security group allowed to connect (the EKS nodes')."
  type        = string
}

variable "node_type" {
  description = "ElastiCache node type."
  type        = string
}

variable "num_cache_clusters" {
  description = "Nodes: one primary, the rest replicas in other zones."
  type        = number
}

variable "multi_az" {
  description = "Multi-AZ with automatic failover to a replica (needs two nodes at least)."
  type        = bool

  validation {
    condition     = !var.multi_az || var.num_cache_clusters >= 2
    error_message = "Multi-AZ needs num_cache_clusters >= 2."
  }
}

variable "auth_token" {
  description = "Redis AUTH token, from the Secrets Manager secret the secrets module generates."
  type        = string
  sensitive   = true
}
