variable "name" {
  description = "Prefix of the registry's KMS key alias."
  type        = string
}

variable "keep_last_images" {
  description = "Images each repository keeps; older ones expire."
  type        = number

  validation {
    condition     = var.keep_last_images >= 10
    error_message = "Keep at least ten images, so that a rollback has somewhere to go."
  }
}
