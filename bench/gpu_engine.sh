#!/usr/bin/env bash
# The hf engine and rollout benchmarks (bench/hf_engine.py, bench/rollout.py) on a GPU
# machine that has torch, transformers and peft but no vLLM and no package index: the few
# wheels spar's servers need travel in .whl/, the default model's config and tokenizer in
# .gpu/smollm2 (the benchmarks use random weights: the checkpoint is not needed).
#
#   bench/gpu_engine.sh prepare     # HERE (dev machine): fill .whl/ and .gpu/smollm2
#   bench/gpu_engine.sh all [ARGS]  # THERE: install, check, engine bench (ARGS), rollout -> $OUT
#   bench/gpu_engine.sh check | engine [ARGS...] | rollout [ARGS...]   # one of them
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/gpu_wheels.sh
. bench/gpu_wheels.sh

SITE=${SPAR_GPU_SITE:-/tmp/spar-site}
export PYTHONPATH=$SITE:$PWD
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1
OUT=${OUT:-/tmp/spar-out}
WORK=/tmp/spar-bench
TOKENIZER=.gpu/smollm2

#: What the GPU machine lacks for an actor, a trainer (store) and the coordinator's rollout.
WHEELS="grpcio==1.85.1 grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1
protobuf==7.36.2 pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3
annotated-types typing-inspection python-dotenv peft==0.21.2"

install() {
  mkdir -p "$SITE" "$OUT" "$WORK"
  if [ -f "$SITE/.installed" ]; then return; fi
  install_wheels "$SITE"
  python3 -c 'import torch, transformers, peft, grpc
print("torch", torch.__version__, "transformers", transformers.__version__, "peft",
      peft.__version__, "grpc", grpc.__version__, "gpus", torch.cuda.device_count())'
  nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true
  touch "$SITE/.installed"
}

check() {
  set -o pipefail
  python3 -m bench.hf_engine_check --tokenizer "$TOKENIZER" 2>&1 | tee "$OUT/check.log"
}

engine() {
  set -o pipefail
  python3 -m bench.hf_engine --tokenizer "$TOKENIZER" "$@" 2>&1 | tee "$OUT/hf_engine.log"
}

rollout() {
  set -o pipefail
  python3 -c "from bench.train_gpu import materialise; from pathlib import Path
materialise('default', Path('$TOKENIZER'), Path('$WORK/default'), 'cuda')"
  python3 -m bench.rollout --processes --engine hf --model "$WORK/default" --start-timeout 150 \
    --log-dir "$OUT/actors" "$@" 2>&1 |
    tee "$OUT/rollout.log"
}

case ${1:-} in
  prepare)
    # shellcheck disable=SC2086
    download_wheels $WHEELS
    mkdir -p "$TOKENIZER"
    src=${SPAR_LOCAL_CACHE:-$HOME/.cache/spar}/models/SmolLM2-135M-Instruct
    for f in config.json generation_config.json tokenizer.json tokenizer_config.json \
      special_tokens_map.json chat_template.jinja; do
      if [ -f "$src/$f" ]; then cp "$src/$f" "$TOKENIZER/"; fi
    done
    du -sh .whl "$TOKENIZER"
    ;;
  all)
    shift
    install
    check || echo "check failed ($?)"
    rollout || echo "rollout bench failed ($?)"
    engine "$@" || echo "engine bench failed ($?)"
    ;;
  check)
    install
    check
    ;;
  engine)
    shift
    install
    engine "$@"
    ;;
  rollout)
    shift
    install
    rollout "$@"
    ;;
  *)
    echo "usage: $0 prepare|all [ENGINE ARGS]|check|engine [ARGS]|rollout [ARGS]" >&2
    exit 2
    ;;
esac
