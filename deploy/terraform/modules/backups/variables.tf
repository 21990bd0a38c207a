variable "bucket_name" {
  description = "Name of the backups bucket (globally unique); its access logs go to NAME-access-logs."
  type        = string
}

variable "noncurrent_version_expiration_days" {
  description = "Days a deleted or overwritten object's old version is kept before it expires."
  type        = number
}

variable "access_log_expiration_days" {
  description = "Days the bucket's access logs are kept."
  type        = number

  validation {
    condition     = var.access_log_expiration_days >= 365
    error_message = "Keep access logs for a year at least."
  }
}
