#!/usr/bin/env bash
# verl, for the RL trainer's algorithms (agentscope.rl.trainer uses verl.trainer.ppo.core_algos and
# verl.trainer.ppo.rollout_corr_helper), installed without its declared dependencies.
#
# Why --no-deps: verl's dependency list (and its [cpu] extra) pins a CUDA build of torch and pulls about 2 GB of
# NVIDIA wheels; the modules we use need only torch and transformers (already in .venv from the `rl` extra) plus
# tensordict, hydra-core, codetiming and ray. So verl goes in with --no-deps and those four are installed next to
# the torch already in .venv, pinned to it, so pip can never swap it for another build. verl's agent loop
# (verl.experimental.agent_loop, which agentscope.rl.verl_loop subclasses) imports two more: datasets (through
# verl.utils.dataset) and cachetools (through its rollout router). The verl_fsdp trainer backend (verl's FSDP actor
# worker, agentscope.rl.trainer._verl_fsdp) imports two more through verl's engine: peft and psutil.
#
# Run by scripts/setup.sh (VENV and REPO_ROOT exported). Idempotent: does nothing when everything is in place.
set -euo pipefail

VENV="${VENV:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/.venv}"
PY="$VENV/bin/python"
VERL_REQ="verl==0.9.1"
DEP_REQS=("tensordict>=0.8,<=0.10,!=0.9.0" "hydra-core" "codetiming" "ray" "datasets" "cachetools" "peft" "psutil")

log() { printf '[setup] verl: %s\n' "$*" >&2; }

# Exit 0 when every requirement is installed at a matching version (metadata only: no import, so it is fast).
requirements_met() {
    "$PY" - "$VERL_REQ" "${DEP_REQS[@]}" <<'EOF' >/dev/null 2>&1
import sys
from importlib.metadata import PackageNotFoundError, version

from pip._vendor.packaging.requirements import Requirement

for spec in sys.argv[1:]:
    req = Requirement(spec)
    try:
        installed = version(req.name)
    except PackageNotFoundError:
        sys.exit(1)
    if not req.specifier.contains(installed, prereleases=True):
        sys.exit(1)
EOF
}

if [ ! -x "$PY" ]; then
    log "no $PY (run scripts/setup.sh first)"
    exit 1
fi

if requirements_met; then
    log "$VERL_REQ and its CPU dependencies are installed"
    exit 0
fi

# Keep whichever torch is in .venv (the CPU build, or a CUDA build the user installed on purpose).
torch_version="$("$PY" -c 'from importlib.metadata import version; print(version("torch"))' 2>/dev/null || true)"
if [ -z "$torch_version" ]; then
    log "torch is not installed in $VENV (the rl extra installs it); run scripts/setup.sh first"
    exit 1
fi

pip_quiet() {
    "$PY" -m pip install --quiet "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

log "installing ${DEP_REQS[*]} (keeping torch==$torch_version)"
pip_quiet "${DEP_REQS[@]}" "torch==$torch_version"
log "installing $VERL_REQ --no-deps"
pip_quiet --no-deps "$VERL_REQ"

requirements_met || {
    log "requirements still not met after pip install"
    exit 1
}
"$PY" -c "import verl.trainer.ppo.core_algos, verl.trainer.ppo.rollout_corr_helper, verl.experimental.agent_loop" >/dev/null || {
    log "verl.trainer.ppo.core_algos or verl.experimental.agent_loop does not import; see the error above"
    exit 1
}
log "done"
