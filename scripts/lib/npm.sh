# shellcheck shell=bash
# npm_install DIR: DIR's locked npm packages, installed with `npm ci` when node_modules is
# missing or older than package-lock.json (npm ci records what it installed in
# node_modules/.package-lock.json).
npm_install() {
    local dir=$1
    if [ ! -f "$dir/node_modules/.package-lock.json" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
        printf '==> installing the npm packages of %s (npm ci)\n' "$dir" >&2
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    fi
}
