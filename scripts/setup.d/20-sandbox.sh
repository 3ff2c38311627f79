#!/usr/bin/env bash
# Sandbox set-up (run by scripts/setup.sh after the venv is ready; VENV and REPO_ROOT are exported):
#   1. gVisor's runsc from apt, registered with dockerd as the "runsc" runtime (optional: open_sandbox(runtime="runsc"));
#   2. the Docker sandbox image, built offline from this host's Python (`agentscope sandbox build-image`; a no-op
#      when it is up to date).
# Idempotent and quick when there is nothing to do. Knobs: AGENTSCOPE_SKIP_APT=1, AGENTSCOPE_SKIP_DOCKER=1,
# AGENTSCOPE_SKIP_GVISOR=1.
set -euo pipefail

log() { printf '[setup:sandbox] %s\n' "$*" >&2; }

: "${REPO_ROOT:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${VENV:=$REPO_ROOT/.venv}"

docker_answers() { timeout 10 docker info >/dev/null 2>&1; }

install_gvisor() {
    if [ "${AGENTSCOPE_SKIP_GVISOR:-0}" = "1" ] || [ "${AGENTSCOPE_SKIP_APT:-0}" = "1" ]; then
        return 0
    fi
    [ "$(id -u)" -eq 0 ] || return 0
    command -v apt-get >/dev/null 2>&1 || return 0
    if ! command -v runsc >/dev/null 2>&1; then
        log "installing runsc (gVisor) from apt"
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends runsc >/dev/null 2>&1; then
            DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends runsc >/dev/null 2>&1 \
                || { log "runsc not installable here; the gVisor runtime stays unavailable"; return 0; }
        fi
    fi
    docker_answers || return 0
    if docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"'; then
        return 0
    fi
    local conf=/etc/docker/daemon.json runsc_path
    runsc_path="$(command -v runsc)"
    log "registering runsc with dockerd ($conf) and reloading it"
    mkdir -p /etc/docker
    "$VENV/bin/python" - "$conf" "$runsc_path" <<'PY'
import json, os, sys
conf, path = sys.argv[1], sys.argv[2]
data = json.load(open(conf)) if os.path.exists(conf) and os.path.getsize(conf) else {}
data.setdefault("runtimes", {})["runsc"] = {"path": path}
tmp = conf + ".tmp"
with open(tmp, "w") as f:
    json.dump(data, f, indent=2)
os.replace(tmp, conf)
PY
    local pid
    pid="$(cat /var/run/docker.pid 2>/dev/null || true)"
    [ -n "$pid" ] && kill -HUP "$pid" 2>/dev/null || true  # dockerd reloads its runtimes on SIGHUP
}

build_image() {
    if [ "${AGENTSCOPE_SKIP_DOCKER:-0}" = "1" ] || ! command -v docker >/dev/null 2>&1 || ! docker_answers; then
        log "no Docker engine: skipping the sandbox image (the bubblewrap backend needs none)"
        return 0
    fi
    "$VENV/bin/agentscope" sandbox build-image >&2
}

install_gvisor
build_image
