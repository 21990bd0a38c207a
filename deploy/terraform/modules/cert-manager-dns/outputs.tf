output "role_arn" {
  description = "Role for cert-manager's service account annotation (eks.amazonaws.com/role-arn)."
  value       = module.role.arn
}
