output "push_role_arn" {
  description = "Role the image-publishing workflow assumes (aws-actions/configure-aws-credentials role-to-assume)."
  value       = aws_iam_role.this["push"].arn
}

output "deploy_role_arn" {
  description = "Role the deploying workflow's environment job assumes."
  value       = aws_iam_role.this["deploy"].arn
}

output "deployers_group" {
  description = "Kubernetes group of the deploy role, for the namespace's RoleBinding."
  value       = local.deployers_group
}

output "plan_role_arn" {
  description = "Role the infra workflow's plan job assumes on pull requests (read-only)."
  value       = aws_iam_role.this["plan"].arn
}

output "apply_role_arn" {
  description = "Role the infra workflow's apply job assumes in the apply environment."
  value       = aws_iam_role.this["apply"].arn
}
