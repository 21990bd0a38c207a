# cert-manager proves the public hostname to Let's Encrypt with DNS-01 records in one
# Route 53 zone: the Gateway listens on 443 only, so HTTP-01 has nowhere to answer.
data "aws_partition" "current" {}

locals {
  route53 = "arn:${data.aws_partition.current.partition}:route53:::"
}

data "aws_iam_policy_document" "dns01" {
  statement {
    sid       = "WatchOwnChanges"
    actions   = ["route53:GetChange"]
    resources = ["${local.route53}change/*"]
  }
  statement {
    sid       = "WriteChallengeRecords"
    actions   = ["route53:ChangeResourceRecordSets", "route53:ListResourceRecordSets"]
    resources = ["${local.route53}hostedzone/${var.hosted_zone_id}"]
    condition {
      test     = "ForAllValues:StringEquals"
      variable = "route53:ChangeResourceRecordSetsRecordTypes"
      values   = ["TXT"]
    }
  }
}

module "role" {
  source            = "../workload-role"
  name              = var.name
  oidc_provider_arn = var.oidc_provider_arn
  oidc_issuer_url   = var.oidc_issuer_url
  namespace         = "cert-manager"
  service_account   = "cert-manager"
  policy_json       = data.aws_iam_policy_document.dns01.json
}
