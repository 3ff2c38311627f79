#!/usr/bin/env bash
# Set-up hook (run by scripts/setup.sh): install the third-party MCP servers that tests/mcp's interop tests run,
# with npm, into .cache/npm (not global, nothing on PATH). Skipped when the stamp says the same packages are in
# place; without npm it warns and the interop tests skip.
set -euo pipefail

REPO_ROOT="${REPO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
PREFIX="$REPO_ROOT/.cache/npm"
# Pinned: the interop tests know these versions' tools (bump both together, then run tests/mcp).
PACKAGES=(@modelcontextprotocol/server-everything@2026.8.31 @modelcontextprotocol/server-filesystem@2026.8.31)
STAMP="$PREFIX/.agentscope-stamp"
WANT="$(printf '%s\n' "${PACKAGES[@]}" "$(cat "${BASH_SOURCE[0]}")" | sha256sum | cut -d' ' -f1)"

log() { printf '[setup] mcp-npm: %s\n' "$*" >&2; }

installed() {
    local spec
    for spec in "${PACKAGES[@]}"; do
        [ -f "$PREFIX/node_modules/${spec%@*}/package.json" ] || return 1
    done
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && installed; then
    log "up to date (${PACKAGES[*]} in ${PREFIX#"$REPO_ROOT"/})"
    exit 0
fi
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    log "warning: node/npm not found; the MCP interop tests will skip"
    exit 0
fi
log "installing ${PACKAGES[*]} into ${PREFIX#"$REPO_ROOT"/} (node $(node --version))"
mkdir -p "$PREFIX"
npm install --prefix "$PREFIX" --save-exact --no-audit --no-fund --loglevel=error "${PACKAGES[@]}" >&2
installed || { log "error: npm install finished but the packages are missing"; exit 1; }
printf '%s\n' "$WANT" >"$STAMP"
log "done"
