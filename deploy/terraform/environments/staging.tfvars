# Staging: production's shape (three zones, three database instances on three nodes, the
# same roles and secrets) at a smaller size, with one NAT gateway and one cache node.
# No secrets and nothing of an account here: those are environments/staging.account.tfvars
# (from account.tfvars.example) or TF_VAR_* variables.
environment = "staging"
# What the Kubernetes overlay of the same name expects.
kubernetes_namespace      = "flowforge-staging"
backup_prefix             = "staging"
github_deploy_environment = "staging"
image_push_subjects       = ["ref:refs/heads/main"]

vpc_cidr           = "10.20.0.0/16"
single_nat_gateway = true

node_instance_types = ["m7i.large"]
node_min_size       = 3
node_desired_size   = 3
node_max_size       = 4

cache_node_type = "cache.t4g.small"
cache_nodes     = 1
cache_multi_az  = false

backup_noncurrent_version_days = 14
ecr_keep_last_images           = 30
secrets_recovery_window_days   = 7
