output "vpc_id" {
  description = "ID of the VPC."
  value       = aws_vpc.this.id
}

output "vpc_cidr_block" {
  description = "The VPC's IPv4 range (the NetworkPolicy that lets the api reach ElastiCache names it)."
  value       = aws_vpc.this.cidr_block
}

output "private_subnet_ids" {
  description = "IDs of the private subnets, one per zone."
  value       = [for zone in var.availability_zones : aws_subnet.private[zone].id]
}

output "public_subnet_ids" {
  description = "IDs of the public subnets, one per zone (load balancer and NAT gateways only)."
  value       = [for zone in var.availability_zones : aws_subnet.public[zone].id]
}

output "nat_public_ips" {
  description = "Addresses the cluster's outbound traffic (webhook deliveries) comes from, for receivers' allow lists."
  value       = [for eip in aws_eip.nat : eip.public_ip]
}

output "flow_log_group_name" {
  description = "CloudWatch log group of the VPC flow logs."
  value       = aws_cloudwatch_log_group.flow.name
}
