output "cluster_name" {
  description = "Name of the EKS cluster."
  value       = aws_eks_cluster.this.name
}

output "cluster_arn" {
  description = "ARN of the EKS cluster."
  value       = aws_eks_cluster.this.arn
}

output "cluster_endpoint" {
  description = "URL of the Kubernetes API (reachable from inside the VPC, or from the allowed addresses when the public endpoint is open)."
  value       = aws_eks_cluster.this.endpoint
  sensitive   = true
}

output "oidc_provider_arn" {
  description = "ARN of the cluster's IAM OIDC provider, for IAM roles for service accounts."
  value       = aws_iam_openid_connect_provider.cluster.arn
}

output "oidc_issuer_url" {
  description = "The cluster's OIDC issuer URL."
  value       = aws_eks_cluster.this.identity[0].oidc[0].issuer
}

output "node_security_group_id" {
  description = "The cluster security group EKS creates and puts every managed node in."
  value       = aws_eks_cluster.this.vpc_config[0].cluster_security_group_id
}

output "volumes_kms_key_arn" {
  description = "KMS key for the encrypted gp3 StorageClass (kmsKeyId)."
  value       = module.volumes_key.arn
}
