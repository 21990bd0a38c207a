# Production: three zones, a NAT gateway in each, three database instances on nodes of
# their own, and a cache with a replica in another zone that takes over on failure.
# No secrets and nothing of an account here: those are environments/prod.account.tfvars
# (from account.tfvars.example) or TF_VAR_* variables.
environment = "prod"
# What the Kubernetes overlay of the same name expects.
kubernetes_namespace      = "flowforge"
backup_prefix             = "postgres"
github_deploy_environment = "production"
# The release job, in the production environment, copies the digests staging passed.
image_push_subjects = ["environment:production"]

vpc_cidr           = "10.30.0.0/16"
single_nat_gateway = false

node_instance_types = ["m7i.xlarge"]
node_min_size       = 3
node_desired_size   = 3
node_max_size       = 9

cache_node_type = "cache.m7g.large"
cache_nodes     = 2
cache_multi_az  = true

backup_noncurrent_version_days = 90
ecr_keep_last_images           = 100
secrets_recovery_window_days   = 30
