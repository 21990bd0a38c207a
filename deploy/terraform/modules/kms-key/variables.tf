variable "alias" {
  description = "Name of the key's alias, without the alias/ prefix."
  type        = string
}

variable "description" {
  description = "What the key encrypts, shown in the KMS console."
  type        = string
}

variable "allow_cloudwatch_logs" {
  description = "Let CloudWatch Logs in this region encrypt this account's log groups with the key."
  type        = bool
  default     = false
}

variable "policy_json" {
  description = "Further key policy statements (a policy document as JSON) for services that use the key on their own behalf."
  type        = string
  default     = null
}

variable "deletion_window_in_days" {
  description = "Days a deleted key can still be recovered (7 to 30)."
  type        = number
  default     = 30
}
