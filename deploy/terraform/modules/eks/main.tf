# An EKS cluster with a private API endpoint, secrets encrypted with a key of its own,
# every control plane log type kept, and one managed node group in the private subnets.
data "aws_partition" "current" {}

locals {
  partition = data.aws_partition.current.partition
  aws_iam   = "arn:${local.partition}:iam::aws:policy"
}

module "secrets_key" {
  source      = "../kms-key"
  alias       = "${var.name}-kubernetes-secrets"
  description = "Envelope encryption of the ${var.name} cluster's Kubernetes secrets"
}

# PersistentVolumes (PostgreSQL's data) are encrypted with this key by the EBS CSI driver;
# docs/deploy-aws.md shows the StorageClass that names it.
module "volumes_key" {
  source      = "../kms-key"
  alias       = "${var.name}-volumes"
  description = "EBS volumes of the ${var.name} cluster's PersistentVolumes"
}

data "aws_iam_policy_document" "cluster_trust" {
  statement {
    actions = ["sts:AssumeRole", "sts:TagSession"]
    principals {
      type        = "Service"
      identifiers = ["eks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "cluster" {
  name               = "${var.name}-cluster"
  assume_role_policy = data.aws_iam_policy_document.cluster_trust.json
}

resource "aws_iam_role_policy_attachment" "cluster" {
  role       = aws_iam_role.cluster.name
  policy_arn = "${local.aws_iam}/AmazonEKSClusterPolicy"
}

# Made before the cluster, so that EKS writes into an encrypted group with a retention
# rather than creating its own.
resource "aws_cloudwatch_log_group" "cluster" {
  name              = "/aws/eks/${var.name}/cluster"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.log_kms_key_arn
}

resource "aws_eks_cluster" "this" {
  name     = var.name
  version  = var.kubernetes_version
  role_arn = aws_iam_role.cluster.arn

  enabled_cluster_log_types = ["api", "audit", "authenticator", "controllerManager", "scheduler"]

  vpc_config {
    subnet_ids              = var.subnet_ids
    endpoint_private_access = true
    endpoint_public_access  = var.endpoint_public_access
    public_access_cidrs     = var.endpoint_public_access ? var.public_access_cidrs : null
  }

  encryption_config {
    resources = ["secrets"]
    provider {
      key_arn = module.secrets_key.arn
    }
  }

  # Access entries only (no aws-auth ConfigMap); whoever runs Terraform gets no
  # Kubernetes rights from it.
  access_config {
    authentication_mode                         = "API"
    bootstrap_cluster_creator_admin_permissions = false
  }

  # Upgraded by EKS at the end of standard support rather than billed for extended support.
  upgrade_policy {
    support_type = "STANDARD"
  }

  depends_on = [aws_iam_role_policy_attachment.cluster, aws_cloudwatch_log_group.cluster]
}

resource "aws_eks_access_entry" "admin" {
  for_each      = toset(var.cluster_admin_arns)
  cluster_name  = aws_eks_cluster.this.name
  principal_arn = each.value
}

resource "aws_eks_access_policy_association" "admin" {
  for_each      = toset(var.cluster_admin_arns)
  cluster_name  = aws_eks_cluster.this.name
  principal_arn = aws_eks_access_entry.admin[each.value].principal_arn
  policy_arn    = "arn:${local.partition}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
  access_scope {
    type = "cluster"
  }
}

# IAM roles for service accounts: External Secrets, CloudNativePG's backups and the EBS
# CSI driver each assume a role of their own through this provider.
resource "aws_iam_openid_connect_provider" "cluster" {
  url            = aws_eks_cluster.this.identity[0].oidc[0].issuer
  client_id_list = ["sts.amazonaws.com"]
}

# Nodes: the node role carries only what the kubelet and the VPC CNI (host network)
# need. Pods can't borrow it: the instance metadata service answers one hop only.
data "aws_iam_policy_document" "node_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "node" {
  name               = "${var.name}-node"
  assume_role_policy = data.aws_iam_policy_document.node_trust.json
}

resource "aws_iam_role_policy_attachment" "node" {
  for_each = {
    worker   = "${local.aws_iam}/AmazonEKSWorkerNodePolicy"
    cni      = "${local.aws_iam}/AmazonEKS_CNI_Policy"
    ecr_pull = "${local.aws_iam}/AmazonEC2ContainerRegistryPullOnly"
  }
  role       = aws_iam_role.node.name
  policy_arn = each.value
}

resource "aws_launch_template" "node" {
  name_prefix            = "${var.name}-node-"
  update_default_version = true

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = var.node_disk_size_gb
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  # default_tags stop at the launch template: the instances, volumes and interfaces
  # launched from it get their tags from here.
  dynamic "tag_specifications" {
    for_each = toset(["instance", "volume", "network-interface"])
    content {
      resource_type = tag_specifications.value
      tags          = merge(var.tags, { Name = "${var.name}-node" })
    }
  }
}

resource "aws_eks_node_group" "default" {
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "${var.name}-default"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = var.subnet_ids
  ami_type        = "AL2023_x86_64_STANDARD"
  capacity_type   = "ON_DEMAND"
  instance_types  = var.node_instance_types
  version         = var.kubernetes_version

  scaling_config {
    min_size     = var.node_min_size
    desired_size = var.node_desired_size
    max_size     = var.node_max_size
  }

  update_config {
    max_unavailable = 1
  }

  launch_template {
    id      = aws_launch_template.node.id
    version = aws_launch_template.node.latest_version
  }

  # A cluster autoscaler owns the count once the group exists.
  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]
  }

  depends_on = [aws_iam_role_policy_attachment.node, aws_eks_addon.before_nodes]
}

# The network add-ons come before the nodes (a node is Ready only with its CNI); with
# network policy enforcement on, since the overlays deny by default.
resource "aws_eks_addon" "before_nodes" {
  for_each = {
    vpc-cni    = jsonencode({ enableNetworkPolicy = "true" })
    kube-proxy = null
  }
  cluster_name                = aws_eks_cluster.this.name
  addon_name                  = each.key
  configuration_values        = each.value
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "OVERWRITE"
}

resource "aws_eks_addon" "coredns" {
  cluster_name                = aws_eks_cluster.this.name
  addon_name                  = "coredns"
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "OVERWRITE"
  depends_on                  = [aws_eks_node_group.default]
}

data "aws_iam_policy_document" "ebs_csi_volumes_key" {
  statement {
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]
    resources = [module.volumes_key.arn]
  }
  statement {
    actions   = ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"]
    resources = [module.volumes_key.arn]
    condition {
      test     = "Bool"
      variable = "kms:GrantIsForAWSResource"
      values   = ["true"]
    }
  }
}

module "ebs_csi_role" {
  source              = "../workload-role"
  name                = "${var.name}-ebs-csi"
  oidc_provider_arn   = aws_iam_openid_connect_provider.cluster.arn
  oidc_issuer_url     = aws_eks_cluster.this.identity[0].oidc[0].issuer
  namespace           = "kube-system"
  service_account     = "ebs-csi-controller-sa"
  policy_json         = data.aws_iam_policy_document.ebs_csi_volumes_key.json
  managed_policy_arns = { ebs_csi = "${local.aws_iam}/service-role/AmazonEBSCSIDriverPolicy" }
}

resource "aws_eks_addon" "ebs_csi" {
  cluster_name                = aws_eks_cluster.this.name
  addon_name                  = "aws-ebs-csi-driver"
  service_account_role_arn    = module.ebs_csi_role.arn
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "OVERWRITE"
  depends_on                  = [aws_eks_node_group.default]
}
