#!/usr/bin/env bash
# Make this machine ready to run AgentScope and its tests: system packages, the Docker engine, a virtual
# environment in .venv with every extra installed. One command, safe to re-run: finished steps are skipped.
#
#   bash scripts/setup.sh
#
# Target: a fresh Debian 12 machine, as root, with Python 3.11, reaching only package registries (Debian apt,
# PyPI through pip's configured indexes, the npm registry). pip's configuration is used as it is.
#
# Knobs (environment variables):
#   AGENTSCOPE_SKIP_APT=1     don't install system packages (no root, or not Debian)
#   AGENTSCOPE_SKIP_DOCKER=1  don't start dockerd
#   AGENTSCOPE_FORCE_PIP=1    reinstall the Python packages even when the stamp says they are current
#   AGENTSCOPE_TORCH=SPEC     the torch requirement to install first (default torch==2.13.0); empty: keep the
#                             torch already in .venv (a CUDA build you installed yourself)
#
# Later parts of the project add their own set-up steps as scripts/setup.d/*.sh (run in name order, after the
# venv is ready, with VENV and REPO_ROOT exported). Each one must be idempotent and fast when there is nothing to do.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
# The CPU build of this torch lies on this machine's disk (pip's find-links); any other torch requirement makes pip
# download a multi-GB CUDA build. It is installed first, and pinned again next to the extras, so pip never picks one.
TORCH_REQ="${AGENTSCOPE_TORCH-torch==2.13.0}"
# postgresql: the server that the PostgreSQL trajectory-store tests start themselves (tests/rl/conftest.py).
APT_PACKAGES=(bubblewrap chromium docker.io fonts-liberation libseccomp2 postgresql procps)
export REPO_ROOT VENV

cd "$REPO_ROOT"

if [ -t 2 ]; then _b=$'\033[1m' _y=$'\033[33m' _r=$'\033[0m'; else _b="" _y="" _r=""; fi
log() { printf '%s[setup]%s %s\n' "$_b" "$_r" "$*" >&2; }
warn() { printf '%s[setup] warning:%s %s\n' "$_y" "$_r" "$*" >&2; }
die() {
    printf '[setup] error: %s\n' "$*" >&2
    exit 1
}

is_root() { [ "$(id -u)" -eq 0 ]; }

as_root() {
    if is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        return 1
    fi
}

pkg_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

is_py311() {
    "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' >/dev/null 2>&1
}

find_python() {
    local candidate
    for candidate in python3.11 python3 /usr/bin/python3.11; do
        if command -v "$candidate" >/dev/null 2>&1 && is_py311 "$candidate"; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

# --- 1. system packages ------------------------------------------------------------------------------------------
install_system_packages() {
    if [ "${AGENTSCOPE_SKIP_APT:-0}" = "1" ]; then
        log "system packages: skipped (AGENTSCOPE_SKIP_APT=1)"
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-query >/dev/null 2>&1; then
        warn "no apt-get here: install ${APT_PACKAGES[*]} yourself; tests that need them will skip"
        return 0
    fi
    local wanted=("${APT_PACKAGES[@]}") missing=() pkg py
    # Debian's python3.11 lacks ensurepip (so `python -m venv` fails) until python3.11-venv is installed.
    if py="$(find_python)"; then
        "$py" -c 'import ensurepip' >/dev/null 2>&1 || wanted+=(python3.11-venv)
    else
        wanted+=(python3.11 python3.11-venv)
    fi
    # Node and npm run the third-party MCP servers in the interop tests. Keep a Node that is already there
    # (Debian's npm package conflicts with NodeSource's nodejs, which bundles npm).
    command -v npm >/dev/null 2>&1 || wanted+=(nodejs npm)
    for pkg in "${wanted[@]}"; do
        pkg_installed "$pkg" || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        log "system packages: all present (${wanted[*]})"
        return 0
    fi
    if ! is_root && ! command -v sudo >/dev/null 2>&1; then
        warn "not root and no sudo: can't install ${missing[*]}; tests that need them will skip"
        return 0
    fi
    log "system packages: installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        >/dev/null
    log "system packages: done"
}

# --- 2. the Docker engine (no systemd here: start dockerd ourselves) ----------------------------------------------
docker_answers() { timeout 10 docker info >/dev/null 2>&1; }

start_docker() {
    if [ "${AGENTSCOPE_SKIP_DOCKER:-0}" = "1" ]; then
        log "docker: skipped (AGENTSCOPE_SKIP_DOCKER=1)"
        return 0
    fi
    if ! command -v docker >/dev/null 2>&1; then
        warn "docker: no docker client; tests that need Docker will skip"
        return 0
    fi
    if docker_answers; then
        log "docker: engine is up"
        return 0
    fi
    local dockerd_bin
    dockerd_bin="$(command -v dockerd 2>/dev/null || true)"
    if [ -z "$dockerd_bin" ] && [ -x /usr/sbin/dockerd ]; then
        dockerd_bin=/usr/sbin/dockerd
    fi
    if [ -z "$dockerd_bin" ]; then
        warn "docker: no dockerd installed and no engine answers; tests that need Docker will skip"
        return 0
    fi
    if ! is_root; then
        warn "docker: the engine is not running and only root can start it; tests that need Docker will skip"
        return 0
    fi
    local pid=""
    if [ -f /var/run/docker.pid ]; then
        pid="$(cat /var/run/docker.pid 2>/dev/null || true)"
    fi
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        log "docker: dockerd (pid $pid) is starting; waiting for it"
    else
        log "docker: starting dockerd (log: /var/log/dockerd.log)"
        # setsid + nohup: the daemon outlives this script and the terminal that ran it.
        setsid nohup "$dockerd_bin" </dev/null >/var/log/dockerd.log 2>&1 &
    fi
    local i
    for i in $(seq 1 30); do
        if docker_answers; then
            log "docker: engine is up (after ${i} s)"
            return 0
        fi
        sleep 1
    done
    warn "docker: dockerd did not answer within 30 s (see /var/log/dockerd.log); tests that need Docker will skip"
}

# --- 3. the virtual environment ----------------------------------------------------------------------------------
setup_venv() {
    local py
    py="$(find_python)" || die "Python 3.11 not found (on Debian 12: apt-get install python3.11 python3.11-venv)"
    if [ -x "$VENV/bin/python" ] && is_py311 "$VENV/bin/python"; then
        log "venv: $VENV exists ($("$VENV/bin/python" --version 2>&1))"
    else
        log "venv: creating $VENV with $py"
        "$py" -m venv --clear "$VENV"
    fi

    local stamp_file="$VENV/.agentscope-setup-stamp" stamp
    stamp="$( (cat pyproject.toml scripts/setup.sh && echo "$TORCH_REQ") | sha256sum | cut -d' ' -f1)"
    if [ "${AGENTSCOPE_FORCE_PIP:-0}" != "1" ] && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ] \
        && venv_is_current; then
        log "python packages: up to date (stamp matches pyproject.toml)"
        return 0
    fi

    log "python packages: upgrading pip"
    pip_install --quiet --upgrade pip
    if [ -z "$TORCH_REQ" ]; then
        log "python packages: keeping the installed torch (AGENTSCOPE_TORCH is empty)"
    elif torch_is_pinned; then
        log "python packages: $TORCH_REQ already installed"
    else
        log "python packages: installing $TORCH_REQ first (the CPU build on this disk)"
        pip_install --quiet "$TORCH_REQ"
    fi
    log "python packages: installing -e '.[all,dev]'"
    pip_install --quiet -e ".[all,dev]" ${TORCH_REQ:+"$TORCH_REQ"}
    venv_is_current || die "the venv is still not usable after pip install (see messages above)"
    printf '%s\n' "$stamp" >"$stamp_file"
    log "python packages: done"
}

# pip with this machine's configuration, minus one harmless warning per package that a configured local index
# does not hold ("Location 'file:///...' is ignored: it is neither a file nor a directory").
pip_install() {
    "$VENV/bin/python" -m pip install "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

torch_is_pinned() {
    [ -n "$TORCH_REQ" ] || return 0
    "$VENV/bin/python" - "$TORCH_REQ" <<'EOF' >/dev/null 2>&1
import sys
from importlib.metadata import PackageNotFoundError, version

from pip._vendor.packaging.requirements import Requirement

wanted = Requirement(sys.argv[1])
try:
    sys.exit(not wanted.specifier.contains(version(wanted.name), prereleases=True))
except PackageNotFoundError:
    sys.exit(1)
EOF
}

# The stamp alone can lie (a venv copied from elsewhere, a package removed by hand): also check that agentscope
# imports from this checkout and that the pinned torch is the one installed.
venv_is_current() {
    torch_is_pinned || return 1
    local where
    where="$("$VENV/bin/python" -c 'import agentscope; print(agentscope.__file__)' 2>/dev/null)" || return 1
    [ "$where" = "$REPO_ROOT/agentscope/__init__.py" ]
}

# --- 4. set-up steps contributed by other parts of the project -----------------------------------------------------
run_setup_hooks() {
    local hook
    shopt -s nullglob
    for hook in "$REPO_ROOT"/scripts/setup.d/*.sh; do
        log "hook: ${hook#"$REPO_ROOT"/}"
        bash "$hook" || die "set-up hook ${hook#"$REPO_ROOT"/} failed (exit $?)"
    done
    shopt -u nullglob
}

start_s=$SECONDS
install_system_packages
start_docker
setup_venv
run_setup_hooks
log "ready in $((SECONDS - start_s)) s: $("$VENV/bin/python" --version 2>&1), venv $VENV"
