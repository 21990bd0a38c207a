# One ECR repository per image the overlays deploy. Tags are immutable: a tag names one
# image forever, and the release pipeline pins digests anyway.
locals {
  repositories = toset(["flowforge-api", "flowforge-worker", "flowforge-web", "flowforge-cli", "flowforge-redis"])
}

module "key" {
  source      = "../kms-key"
  alias       = "${var.name}-registry"
  description = "ECR images of ${var.name}"
}

resource "aws_ecr_repository" "this" {
  for_each             = local.repositories
  name                 = each.key
  image_tag_mutability = "IMMUTABLE"
  force_delete         = false

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = module.key.arn
  }
}

resource "aws_ecr_lifecycle_policy" "this" {
  for_each   = aws_ecr_repository.this
  repository = each.value.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "Keep the last ${var.keep_last_images} images"
      selection = {
        tagStatus   = "any"
        countType   = "imageCountMoreThan"
        countNumber = var.keep_last_images
      }
      action = { type = "expire" }
    }]
  })
}
