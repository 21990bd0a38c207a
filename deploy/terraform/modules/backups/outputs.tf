output "bucket_name" {
  description = "Name of the backups bucket."
  value       = aws_s3_bucket.backups.bucket
}

output "bucket_arn" {
  description = "ARN of the backups bucket."
  value       = aws_s3_bucket.backups.arn
}

output "kms_key_arn" {
  description = "KMS key both buckets encrypt with."
  value       = module.key.arn
}

output "access_log_bucket_name" {
  description = "Name of the bucket holding the backups bucket's access logs."
  value       = aws_s3_bucket.access_logs.bucket
}
