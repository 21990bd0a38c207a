output "repository_urls" {
  description = "Repository URL by image name, for the overlays' images (kustomize edit set image)."
  value       = { for name, repository in aws_ecr_repository.this : name => repository.repository_url }
}

output "repository_arns" {
  description = "Repository ARN by image name."
  value       = { for name, repository in aws_ecr_repository.this : name => repository.arn }
}
