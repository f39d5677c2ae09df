#!/usr/bin/env bash
# Run `python -m validate` on a lent GPU machine.
#
#   bash validate/gpu_run.sh all           # everything in one call of at most 8 minutes (validate/gpu_all.py):
#                                          # CUDA tests, small model, GPU bench, 7B measure, 7B short replay
#   bash validate/gpu_run.sh all --dry-run # the CPU rehearsal of that call (CI runs it)
#   bash validate/gpu_run.sh all --skip bench,small --replay-policies full/none,full/fixed
#                                          # leave out what an earlier call measured; choose the replay's policies
#
# or one step per call (each fits a 10-minute call):
#   bash validate/gpu_run.sh small     # every GPU code path on SmolLM2's shape, with replay: ~2-3 min
#   bash validate/gpu_run.sh measure   # LLaMA-2-7B shapes (13.5 GB written once to runs/cache): ~4-6 min
#   bash validate/gpu_run.sh replay    # replay on the 7B profile measured by `measure`: ~6-8 min
#
# The machine lacks simpy (for `python -m sim`): carry its wheel in .whl (docs/validate.md shows
# how to fetch it). It lacks the shared trace samples too: carry a copy of the two the replay
# reads in .traces (git-ignored; docs/validate.md). Results are tarred into $OUT even when
# the run fails (the device tool brings back 8 files at most), and the run's status is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .traces ]; then
  export PROGRESSIVE_SERVE_TRACES="$PWD/.traces"
fi
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
OUT="${OUT:-runs/out}"
mkdir -p "$OUT" runs
nvidia-smi --query-gpu=name,memory.total,pcie.link.gen.max,pcie.link.width.max --format=csv > "$OUT/nvidia-smi.csv" || true
rc=0
case "${1:-}" in
  all)
    shift
    python3 -m validate.gpu_all --out "$OUT" --cache-dir runs/cache "$@" || rc=$? ;;
  small)
    python3 -m validate --gpu --small --replay --replay-preset short --cache-dir runs/cache --out runs/gpu-small 2>&1 \
      | tee "$OUT/small.log" || rc=$?
    tar czf "$OUT/gpu-small.tgz" --exclude='*.parquet' runs/gpu-small || true ;;
  measure)
    python3 -m validate --gpu --cache-dir runs/cache --out runs/gpu-7b 2>&1 | tee "$OUT/measure.log" || rc=$?
    tar czf "$OUT/gpu-7b.tgz" runs/gpu-7b || true ;;
  replay)
    if [ ! -f runs/gpu-7b/profile.json ]; then
      echo "no runs/gpu-7b/profile.json: run 'measure' first, or extract gpu-7b.tgz here and carry runs/gpu-7b" >&2
      exit 2
    fi
    python3 -m validate --gpu --replay --profile runs/gpu-7b/profile.json --cache-dir runs/cache \
      --out runs/gpu-7b-replay 2>&1 | tee "$OUT/replay.log" || rc=$?
    tar czf "$OUT/gpu-7b-replay.tgz" --exclude='*.parquet' runs/gpu-7b-replay || true ;;
  *)
    echo "usage: bash validate/gpu_run.sh all [--dry-run] [--skip NAMES] [--replay-policies LIST]|small|measure|replay" >&2
    exit 2 ;;
esac
exit $rc
