output "primary_endpoint" {
  description = "Host name of the primary (AUTH token required)."
  value       = aws_elasticache_replication_group.this.primary_endpoint_address
  sensitive   = true
}

output "port" {
  description = "Port of the cache (TLS only)."
  value       = aws_elasticache_replication_group.this.port
}

output "security_group_id" {
  description = "Security group of the cache nodes."
  value       = aws_security_group.this.id
}
