#!/usr/bin/env bash
# The AWS deployment's Terraform (deploy/terraform): one root configuration
# (deploy/terraform/platform) that every environment applies with values of its own.
#   check            what scripts/test.sh runs, with no Terraform, provider or AWS account
#                    (none can be had where this project is tested): every file parses and
#                    the cross-references hold (deploy/terraform/check.py, with PyPI's
#                    python-hcl2), then checkov finds nothing (deploy/terraform/checkov.yaml).
#   validate ENV     terraform fmt -check, then init without a backend and validate.
#   plan ENV         init against the account's state bucket, plan into
#                    deploy/terraform/platform/ENV.tfplan and its text into ENV.plan.txt
#                    beside it, without a lock (the plan role only reads).
#   comment ENV      post ENV.plan.txt on pull request PULL_REQUEST (gh, with GH_TOKEN).
#   apply ENV        init, then plan and apply, holding the state's lock: at once when not
#                    run from a terminal (CI), after Terraform asks for yes when it is.
#   output ENV [NAME]  init, then print the outputs, or output NAME's value alone (-raw).
# ENV is staging or prod: its values are deploy/terraform/environments/ENV.tfvars, then the
# account's own (environments/account.tfvars.example lists them) from
# environments/ENV.account.tfvars when it exists, else from TF_VAR_* variables; its state
# is the key environments/ENV.s3.tfbackend names, in the bucket of the account the AWS
# credentials belong to (flowforge-terraform-state-ACCOUNT, with the KMS key
# alias/flowforge-terraform-state, which docs/deploy-aws.md makes). Terraform's working
# data is deploy/terraform/.terraform-ENV, one per environment, so that the two states
# never mix. validate, plan, apply and output need Terraform 1.10 or later; plan, apply and
# output need the AWS CLI and credentials of the environment's account.
# python-hcl2 gets a virtualenv of its own: checkov depends on bc-python-hcl2, a fork
# installed under the same `hcl2` import name. Seconds the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '==> %s\n' "$*" >&2; }
# shellcheck source=scripts/lib/tools.sh
source scripts/lib/tools.sh

tools=${FLOWFORGE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/flowforge}/terraform-tools
environments=(staging prod)

ensure_tools() {
    if [ ! -x "$tools/bin/python" ] || ! "$tools/bin/python" -c 'import hcl2' 2>/dev/null; then
        log "installing python-hcl2 into $tools"
        python3 -m venv "$tools" 2>/dev/null || {
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            python3 -m venv "$tools"
        }
        "$tools/bin/pip" install -q --disable-pip-version-check python-hcl2==8.1.4
    fi
    if ! command -v checkov >/dev/null; then
        log "installing checkov"
        pip_tools checkov==3.3.30
    fi
}

check() {
    "$tools/bin/python" deploy/terraform/check.py
    checkov -d deploy/terraform --framework terraform --config-file deploy/terraform/checkov.yaml \
        --skip-download --quiet --compact
}

terraform_dir=$PWD/deploy/terraform
root=$terraform_dir/platform

# Checks ENV and points Terraform at the environment's working data; refuses any other
# name. Sets env, and var_files for the commands that take variables.
use_environment() {
    env=${1:-}
    local known found=
    for known in "${environments[@]}"; do
        [ "$env" = "$known" ] && found=1
    done
    [ -n "$found" ] || { echo "environment: one of ${environments[*]}" >&2; exit 2; }
    command -v terraform >/dev/null || { echo "terraform 1.10 or later is needed" >&2; exit 1; }
    # Terraform would read these for every environment alike.
    if compgen -G "$root/*.auto.tfvars" >/dev/null || [ -e "$root/terraform.tfvars" ]; then
        echo "$root holds terraform.tfvars or *.auto.tfvars, which every environment would read:" \
            "put the values in deploy/terraform/environments/$env.account.tfvars" >&2
        exit 1
    fi
    export TF_DATA_DIR=$terraform_dir/.terraform-$env
    var_files=(-var-file="$terraform_dir/environments/$env.tfvars")
    if [ -f "$terraform_dir/environments/$env.account.tfvars" ]; then
        var_files+=(-var-file="$terraform_dir/environments/$env.account.tfvars")
    fi
}

# Init against the environment's state, in the state bucket and key of the account the
# credentials belong to. Its messages go to standard error: `output` prints values.
init_backend() {
    local account key
    account=$(aws sts get-caller-identity --query Account --output text)
    key=$(aws kms describe-key --key-id alias/flowforge-terraform-state --query KeyMetadata.Arn --output text)
    terraform -chdir="$root" init -input=false -no-color \
        -backend-config="$terraform_dir/environments/$env.s3.tfbackend" \
        -backend-config="bucket=flowforge-terraform-state-$account" -backend-config="kms_key_id=$key" >&2
}

validate() {
    use_environment "$1"
    terraform fmt -check -recursive -diff deploy/terraform
    terraform -chdir="$root" init -input=false -no-color -backend=false
    terraform -chdir="$root" validate -no-color
}

plan() {
    use_environment "$1"
    init_backend
    terraform -chdir="$root" plan -input=false -no-color -lock=false "${var_files[@]}" -out="$env.tfplan"
    terraform -chdir="$root" show -no-color "$env.tfplan" >"$root/$env.plan.txt"
}

comment() {
    local body
    use_environment "$1"
    body=$(mktemp)
    trap 'rm -f "$body"' RETURN
    {
        printf '### terraform plan: %s\n\n```\n' "$env"
        # GitHub refuses comments over 65,536 characters.
        head -c 60000 "$root/$env.plan.txt"
        printf '\n```\n'
    } >"$body"
    gh pr comment "${PULL_REQUEST:?the pull request number}" --body-file "$body"
}

apply() {
    local approve=(-input=false -auto-approve)
    use_environment "$1"
    # From a terminal (the first apply, by an administrator), Terraform shows the plan and
    # asks; elsewhere (the infra workflow, behind its environment's reviewers) it applies.
    [ -t 0 ] && approve=()
    init_backend
    terraform -chdir="$root" apply -no-color -lock-timeout=10m "${var_files[@]}" "${approve[@]}"
}

output() {
    use_environment "$1"
    init_backend
    if [ -n "${2:-}" ]; then
        terraform -chdir="$root" output -no-color -raw "$2"
    else
        terraform -chdir="$root" output -no-color
    fi
}

case "${1:-}" in
    check) ensure_tools; check ;;
    validate) validate "${2:-}" ;;
    plan) plan "${2:-}" ;;
    comment) comment "${2:-}" ;;
    apply) apply "${2:-}" ;;
    output) output "${2:-}" "${3:-}" ;;
    *) echo "usage: $0 check | validate ENV | plan ENV | comment ENV | apply ENV | output ENV [NAME] (ENV: ${environments[*]})" >&2; exit 2 ;;
esac
