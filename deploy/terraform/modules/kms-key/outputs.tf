output "arn" {
  description = "ARN of the key."
  value       = aws_kms_key.this.arn
}

output "alias" {
  description = "The key's alias, alias/ prefix included."
  value       = aws_kms_alias.this.name
}
