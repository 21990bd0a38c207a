output "region" {
  description = "AWS region (aws eks update-kubeconfig --region)."
  value       = var.region
}

output "cluster_name" {
  description = "Name of the EKS cluster (aws eks update-kubeconfig --name)."
  value       = module.eks.cluster_name
}

output "cluster_endpoint" {
  description = "URL of the Kubernetes API."
  value       = module.eks.cluster_endpoint
  sensitive   = true
}

output "ecr_repository_urls" {
  description = "ECR repository by image name: the overlay's image names."
  value       = module.registry.repository_urls
}

output "backups_bucket" {
  description = "The backups bucket."
  value       = module.backups.bucket_name
}

output "cnpg_destination_path" {
  description = "The CloudNativePG Cluster's backup destinationPath."
  value       = module.database_backups.destination_path
}

output "cnpg_backup_role_arn" {
  description = "Role for the CloudNativePG Cluster's serviceAccountTemplate annotation."
  value       = module.database_backups.role_arn
}

output "external_secrets_role_arn" {
  description = "Role for External Secrets Operator's service account annotation."
  value       = module.secrets.external_secrets_role_arn
}

output "cert_manager_role_arn" {
  description = "Role for cert-manager's service account annotation."
  value       = module.cert_manager_dns.role_arn
}

output "volumes_kms_key_arn" {
  description = "KMS key of the encrypted gp3 StorageClass."
  value       = module.eks.volumes_kms_key_arn
}

output "vpc_cidr_block" {
  description = "The VPC's range, for the NetworkPolicy egress to ElastiCache."
  value       = module.network.vpc_cidr_block
}

output "nat_public_ips" {
  description = "Source addresses of webhook deliveries."
  value       = module.network.nat_public_ips
}

output "redis_primary_endpoint" {
  description = "ElastiCache primary host (flowforge/redis_url holds the full URL)."
  value       = module.cache.primary_endpoint
  sensitive   = true
}

output "secret_arns" {
  description = "Secrets Manager ARN of each flowforge/ secret."
  value       = module.secrets.secret_arns
  sensitive   = true
}

output "github_push_role_arn" {
  description = "Role the image-publishing workflow assumes."
  value       = module.github_oidc.push_role_arn
}

output "github_deploy_role_arn" {
  description = "Role the deploying workflow assumes."
  value       = module.github_oidc.deploy_role_arn
}

output "github_deployers_group" {
  description = "Kubernetes group of the deploy role, for the namespace's RoleBinding."
  value       = module.github_oidc.deployers_group
}

output "github_plan_role_arn" {
  description = "Role the infra workflow's plan job assumes on pull requests (secret AWS_PLAN_ROLE_ARN)."
  value       = module.github_oidc.plan_role_arn
}

output "github_apply_role_arn" {
  description = "Role the infra workflow's apply job assumes in the infra-ENV environment (secret AWS_APPLY_ROLE_ARN)."
  value       = module.github_oidc.apply_role_arn
}
