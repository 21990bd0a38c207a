# GitHub Actions reach AWS with short-lived OIDC tokens, never stored keys. Four roles,
# each assumable only by this repository's workflows with the named subjects:
#   - push: pushes to FlowForge's ECR repositories and nothing else;
#   - deploy: describes the one cluster, and edits the one namespace through an access entry;
#   - plan: the infra workflow on pull requests; reads (ReadOnlyAccess, the state, the
#     secrets), changes nothing;
#   - apply: the infra workflow on main, in the infra-ENV environment only; changes anything.
# The plan and apply roles exist once the first apply, by an administrator from a
# workstation, has made them (docs/deploy-aws.md); from then on the infra workflow
# plans and applies with them.
data "aws_partition" "current" {}

locals {
  issuer          = "token.actions.githubusercontent.com"
  deployers_group = "flowforge-deployers"
  eks_edit        = "arn:${data.aws_partition.current.partition}:eks::aws:cluster-access-policy/AmazonEKSEditPolicy"
  aws_policy      = "arn:${data.aws_partition.current.partition}:iam::aws:policy"
  subjects = {
    push   = [for subject in var.image_push_subjects : "repo:${var.github_repository}:${subject}"]
    deploy = ["repo:${var.github_repository}:environment:${var.deploy_environment}"]
    # Any pull request's workflow run (forks' runs get no OIDC token).
    plan = ["repo:${var.github_repository}:pull_request"]
    # Only jobs in the environment that has required reviewers.
    apply = ["repo:${var.github_repository}:environment:${var.apply_environment}"]
  }
}

resource "aws_iam_openid_connect_provider" "github" {
  url            = "https://${local.issuer}"
  client_id_list = ["sts.amazonaws.com"]
}

data "aws_iam_policy_document" "trust" {
  for_each = local.subjects
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [aws_iam_openid_connect_provider.github.arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.issuer}:sub"
      values   = each.value
    }
  }
}

resource "aws_iam_role" "this" {
  for_each             = local.subjects
  name                 = "${var.name}-github-${each.key}"
  assume_role_policy   = data.aws_iam_policy_document.trust[each.key].json
  max_session_duration = 3600
}

data "aws_iam_policy_document" "push" {
  # GetAuthorizationToken names no resource: the login is account-wide, the pushes are not.
  statement {
    sid       = "RegistryLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }
  statement {
    sid = "PushFlowForgeImages"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:CompleteLayerUpload",
      "ecr:DescribeImages",
      "ecr:GetDownloadUrlForLayer",
      "ecr:InitiateLayerUpload",
      "ecr:PutImage",
      "ecr:UploadLayerPart",
    ]
    resources = var.ecr_repository_arns
  }
}

data "aws_iam_policy_document" "deploy" {
  statement {
    sid       = "DescribeTheCluster"
    actions   = ["eks:DescribeCluster"]
    resources = [var.cluster_arn]
  }
}

# What plan needs besides ReadOnlyAccess: the state (read, -lock=false) and its key, and
# the secrets' values, which refreshing their versions reads. The state holds the values
# Terraform generated anyway; what this adds is the current value of the webhook keys,
# which are rotated by hand (docs/deploy-aws.md).
data "aws_iam_policy_document" "plan" {
  statement {
    sid       = "ReadTheState"
    actions   = ["s3:ListBucket", "s3:GetObject"]
    resources = [var.state_bucket_arn, "${var.state_bucket_arn}/*"]
  }
  statement {
    sid       = "ReadTheSecretsTerraformManages"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.secrets_arn_pattern]
  }
  statement {
    sid       = "DecryptThem"
    actions   = ["kms:Decrypt"]
    resources = [var.state_kms_key_arn, var.secrets_kms_key_arn]
  }
}

resource "aws_iam_role_policy" "this" {
  for_each = {
    push   = data.aws_iam_policy_document.push.json
    deploy = data.aws_iam_policy_document.deploy.json
    plan   = data.aws_iam_policy_document.plan.json
  }
  name   = each.key
  role   = aws_iam_role.this[each.key].id
  policy = each.value
}

# Kubernetes rights for the deploy role: EKS's edit policy within the one namespace, and
# a group that docs/deploy-aws.md binds, in that namespace only, to the operators'
# custom resources (the edit policy covers built-in kinds).
resource "aws_eks_access_entry" "deploy" {
  cluster_name      = var.cluster_name
  principal_arn     = aws_iam_role.this["deploy"].arn
  kubernetes_groups = [local.deployers_group]
}

resource "aws_eks_access_policy_association" "deploy" {
  cluster_name  = var.cluster_name
  principal_arn = aws_eks_access_entry.deploy.principal_arn
  policy_arn    = local.eks_edit
  access_scope {
    type       = "namespace"
    namespaces = [var.deploy_namespace]
  }
}

resource "aws_iam_role_policy_attachment" "plan" {
  role       = aws_iam_role.this["plan"].name
  policy_arn = "${local.aws_policy}/ReadOnlyAccess"
}

resource "aws_iam_role_policy_attachment" "apply" {
  #checkov:skip=CKV_AWS_274:Terraform creates IAM roles and policies, the VPC, EKS and KMS keys, so the role that applies it needs every right; the guards are the trust policy (this repository's infra-ENV environment only) and that environment's required reviewers
  role       = aws_iam_role.this["apply"].name
  policy_arn = "${local.aws_policy}/AdministratorAccess"
}
