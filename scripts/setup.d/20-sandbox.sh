#!/usr/bin/env bash
# Sandbox set-up (run by scripts/setup.sh after the venv is ready; VENV and REPO_ROOT are exported):
#   1. gVisor's runsc from apt, registered with dockerd as the "runsc" runtime with --network=none (optional:
#      open_sandbox(runtime="runsc"));
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
    # --network=none: sandboxes never have a network, and Debian's runsc (2022) cannot start any container on
    # current kernels while it sets one up. An existing registration without the flag is updated.
    local changed pid
    changed="$("$VENV/bin/agentscope" sandbox register-gvisor)" \
        || { log "could not register runsc with dockerd; the gVisor runtime stays unavailable"; return 0; }
    [ "$changed" = "changed" ] || return 0
    log "registered runsc (--network=none) in /etc/docker/daemon.json; reloading dockerd"
    pid="$(cat /var/run/docker.pid 2>/dev/null || true)"
    [ -n "$pid" ] && kill -HUP "$pid" 2>/dev/null || true  # dockerd reloads its runtimes on SIGHUP
    local i
    for i in $(seq 1 20); do  # the reload is asynchronous: wait until the engine reports the new arguments
        docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q -- '--network=none' && return 0
        sleep 0.5
    done
    log "dockerd did not pick up the runsc arguments (see /var/log/dockerd.log)"
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
