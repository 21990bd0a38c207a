output "role_arn" {
  description = "Role for the CloudNativePG Cluster's serviceAccountTemplate annotation (eks.amazonaws.com/role-arn)."
  value       = module.role.arn
}

output "destination_path" {
  description = "The Cluster's backup.barmanObjectStore.destinationPath."
  # An S3 bucket's ARN is arn:PARTITION:s3:::NAME.
  value = "s3://${element(split(":", var.bucket_arn), 5)}/${var.prefix}"
}
