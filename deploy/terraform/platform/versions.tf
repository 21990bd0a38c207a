terraform {
  # 1.10: the S3 backend's own lock file (use_lockfile), no DynamoDB table.
  required_version = ">= 1.10"
  required_providers {
    aws    = { source = "hashicorp/aws", version = "~> 6.0" }
    random = { source = "hashicorp/random", version = "~> 3.7" }
  }
}
