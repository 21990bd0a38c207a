# State in the account's state bucket (docs/deploy-aws.md makes it), locked by a lock
# object beside it. Partial on purpose: one configuration serves every environment, so
# the state's key (and the bucket's region) come from environments/ENV.s3.tfbackend, and
# the account's bucket and KMS key at init (scripts/terraform.sh looks them up):
#   terraform init -backend-config=../environments/ENV.s3.tfbackend \
#     -backend-config="bucket=$STATE_BUCKET" -backend-config="kms_key_id=$STATE_KEY_ARN"
terraform {
  backend "s3" {
    use_lockfile = true
    encrypt      = true
  }
}
