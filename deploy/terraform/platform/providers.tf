provider "aws" {
  region = var.region
  # A plan made with the wrong account's credentials stops here.
  allowed_account_ids = [var.aws_account_id]

  default_tags {
    tags = local.tags
  }
}
