# One configuration for every environment (staging, prod): each is this root with its
# own values (environments/ENV.tfvars, committed, and the account's own values) and its
# own state (environments/ENV.s3.tfbackend). Staging has production's shape (three zones,
# three database instances on three nodes, the same roles and secrets) at a smaller size.
data "aws_partition" "current" {}

locals {
  name = "flowforge-${var.environment}"

  tags = merge(var.extra_tags, {
    Project     = "flowforge"
    Environment = var.environment
    ManagedBy   = "terraform"
    Repository  = var.github_repository
  })

  # The state bucket and key docs/deploy-aws.md makes once per account, by these names
  # (scripts/terraform.sh finds them by the same).
  state_bucket_arn = "arn:${data.aws_partition.current.partition}:s3:::flowforge-terraform-state-${var.aws_account_id}"
}

data "aws_kms_alias" "state" {
  name = "alias/flowforge-terraform-state"
}

module "logs_key" {
  source                = "../modules/kms-key"
  alias                 = "${local.name}-logs"
  description           = "CloudWatch log groups of ${local.name}"
  allow_cloudwatch_logs = true
}

module "network" {
  source                  = "../modules/network"
  name                    = local.name
  cidr_block              = var.vpc_cidr
  availability_zones      = var.availability_zones
  single_nat_gateway      = var.single_nat_gateway
  cluster_name            = local.name
  log_kms_key_arn         = module.logs_key.arn
  flow_log_retention_days = var.log_retention_days
}

module "eks" {
  source                 = "../modules/eks"
  name                   = local.name
  kubernetes_version     = var.kubernetes_version
  subnet_ids             = module.network.private_subnet_ids
  endpoint_public_access = var.cluster_endpoint_public_access
  public_access_cidrs    = var.cluster_public_access_cidrs
  cluster_admin_arns     = var.cluster_admin_arns
  log_kms_key_arn        = module.logs_key.arn
  log_retention_days     = var.log_retention_days
  node_instance_types    = var.node_instance_types
  node_min_size          = var.node_min_size
  node_desired_size      = var.node_desired_size
  node_max_size          = var.node_max_size
  node_disk_size_gb      = 50
  tags                   = local.tags
}

module "registry" {
  source           = "../modules/registry"
  name             = local.name
  keep_last_images = var.ecr_keep_last_images
}

module "backups" {
  source                             = "../modules/backups"
  bucket_name                        = "${local.name}-backups-${var.aws_account_id}"
  noncurrent_version_expiration_days = var.backup_noncurrent_version_days
  access_log_expiration_days         = var.log_retention_days
}

module "database_backups" {
  source             = "../modules/database-backups"
  name               = "${local.name}-cnpg-backups"
  oidc_provider_arn  = module.eks.oidc_provider_arn
  oidc_issuer_url    = module.eks.oidc_issuer_url
  namespace          = var.kubernetes_namespace
  bucket_arn         = module.backups.bucket_arn
  bucket_kms_key_arn = module.backups.kms_key_arn
  prefix             = var.backup_prefix
}

module "secrets" {
  source                  = "../modules/secrets"
  name                    = local.name
  recovery_window_in_days = var.secrets_recovery_window_days
  redis_host              = module.cache.primary_endpoint
  oidc_provider_arn       = module.eks.oidc_provider_arn
  oidc_issuer_url         = module.eks.oidc_issuer_url
}

module "cert_manager_dns" {
  source            = "../modules/cert-manager-dns"
  name              = "${local.name}-cert-manager"
  oidc_provider_arn = module.eks.oidc_provider_arn
  oidc_issuer_url   = module.eks.oidc_issuer_url
  hosted_zone_id    = var.route53_zone_id
}

module "cache" {
  source                   = "../modules/cache"
  name                     = local.name
  vpc_id                   = module.network.vpc_id
  subnet_ids               = module.network.private_subnet_ids
  client_security_group_id = module.eks.node_security_group_id
  node_type                = var.cache_node_type
  num_cache_clusters       = var.cache_nodes
  multi_az                 = var.cache_multi_az
  auth_token               = module.secrets.redis_auth_token
}

module "github_oidc" {
  source              = "../modules/github-oidc"
  name                = local.name
  github_repository   = var.github_repository
  image_push_subjects = var.image_push_subjects
  deploy_environment  = var.github_deploy_environment
  ecr_repository_arns = values(module.registry.repository_arns)
  cluster_name        = module.eks.cluster_name
  cluster_arn         = module.eks.cluster_arn
  deploy_namespace    = var.kubernetes_namespace
  # The infra workflow's apply job runs in this GitHub environment (.github/workflows/infra.yml).
  apply_environment   = "infra-${var.environment}"
  state_bucket_arn    = local.state_bucket_arn
  state_kms_key_arn   = data.aws_kms_alias.state.target_key_arn
  secrets_arn_pattern = module.secrets.arn_pattern
  secrets_kms_key_arn = module.secrets.kms_key_arn
}
