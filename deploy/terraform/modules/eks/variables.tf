variable "name" {
  description = "Name of the EKS cluster, and prefix of its roles and keys."
  type        = string
}

variable "kubernetes_version" {
  description = "Kubernetes minor version of the control plane and the nodes, one in EKS standard support."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets, one per zone, for the control plane's network interfaces and the nodes."
  type        = list(string)
}

variable "endpoint_public_access" {
  description = "Open the Kubernetes API's public endpoint as well as the private one."
  type        = bool
  default     = false

  # With no list, EKS would open it to 0.0.0.0/0.
  validation {
    condition     = !var.endpoint_public_access || length(var.public_access_cidrs) > 0
    error_message = "An open public endpoint needs public_access_cidrs."
  }
}

variable "public_access_cidrs" {
  description = "Addresses allowed to the public endpoint when it is open."
  type        = list(string)
  default     = []

  validation {
    condition     = !contains(var.public_access_cidrs, "0.0.0.0/0")
    error_message = "Name the addresses allowed to the public endpoint, never 0.0.0.0/0."
  }
}

variable "cluster_admin_arns" {
  description = "IAM principals given cluster-admin through EKS access entries (people and break-glass roles)."
  type        = list(string)
}

variable "log_kms_key_arn" {
  description = "KMS key that encrypts the control plane's log group."
  type        = string
}

variable "log_retention_days" {
  description = "Days the control plane logs are kept."
  type        = number

  validation {
    condition     = var.log_retention_days >= 365
    error_message = "Keep the control plane's logs (the audit log among them) for a year at least."
  }
}

variable "node_instance_types" {
  description = "EC2 instance types of the managed node group, in order of preference."
  type        = list(string)
}

variable "node_min_size" {
  description = "Fewest nodes."
  type        = number
}

variable "node_desired_size" {
  description = "Nodes at creation; an autoscaler, if you add one, moves it afterwards."
  type        = number
}

variable "node_max_size" {
  description = "Most nodes."
  type        = number
}

variable "node_disk_size_gb" {
  description = "Size of each node's encrypted gp3 root volume (images and logs; PostgreSQL has volumes of its own)."
  type        = number
}

variable "tags" {
  description = "Tags for what EC2 launches from the node group's launch template, which the provider's default_tags do not reach."
  type        = map(string)
}
