variable "name" {
  description = "Prefix of every resource's Name tag."
  type        = string
}

variable "cidr_block" {
  description = "The VPC's IPv4 range, a /16: the private subnets take /19s (pods get VPC addresses), the public ones /24s."
  type        = string

  validation {
    condition     = can(cidrhost(var.cidr_block, 0)) && endswith(var.cidr_block, "/16")
    error_message = "cidr_block must be an IPv4 /16."
  }
}

variable "availability_zones" {
  description = "The three availability zones the subnets span."
  type        = list(string)

  validation {
    condition     = length(var.availability_zones) == 3
    error_message = "Three availability zones: the database keeps a synchronous standby in another zone than its primary, with a third for quorum."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones (cheaper; a zone outage cuts the others' way out) instead of one per zone."
  type        = bool
}

variable "cluster_name" {
  description = "Name of the EKS cluster, tagged on the subnets so that its load balancers find them."
  type        = string
}

variable "log_kms_key_arn" {
  description = "KMS key that encrypts the flow log group."
  type        = string
}

variable "flow_log_retention_days" {
  description = "Days the VPC flow logs are kept."
  type        = number

  validation {
    condition     = var.flow_log_retention_days >= 365
    error_message = "Keep flow logs for a year at least."
  }
}
