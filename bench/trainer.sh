#!/usr/bin/env bash
# Pre-training step throughput, ours beside the same model and step in PyTorch on the same machine
# and in the same run:
#   bench/trainer.sh [TRAINER_BINARY] [SECONDS]
# MODELS (default mini,base) and BATCH (default 8) pick the sizes; the shapes are the paper's
# (44 text tokens, 100 regions of 2048-d BUTD features, 1601 classes). TRAINER_BINARY: a release
# build (default target/release/trainer; a `--features cuda` build measures the GPU, and the
# PyTorch side then runs on the CPU: compare like with like). PYTHON (default python3) must have
# torch for the peer (bench/imagebert_step.py); it is skipped with a note otherwise. Writes JSON
# lines to $OUT/trainer-bench.jsonl (OUT default bench/out) and prints a table last: model,
# samples/s of each, and ours / PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-${CARGO_TARGET_DIR:-target}/release/trainer}
seconds=${2:-10}
models=${MODELS:-mini,base}
batch=${BATCH:-8}
python=${PYTHON:-python3}
out=${OUT:-bench/out}
mkdir -p "$out"
log="$out/trainer-bench.jsonl"
: >"$log"

# `trainer bench` also measures retrieval scoring; one pair batch keeps that part short.
"$binary" bench --models "$models" --train-batch "$batch" --pair-batch 1 --seconds "$seconds" \
  | tail -1 | tee -a "$log"
if "$python" -c 'import torch' 2>/dev/null; then
  for model in ${models//,/ }; do
    "$python" bench/imagebert_step.py --model "$model" --batch "$batch" --seconds "$seconds" | tee -a "$log"
  done
else
  echo "note: $python has no torch: the PyTorch side is skipped" >&2
fi

python3 - "$log" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ours = {r["model"]: r["train_samples_per_s"] for line in lines if "rows" in line for r in line["rows"]}
device = next(line["device"] for line in lines if "rows" in line)
torch = {line["model"]: line for line in lines if "torch" in line}
print(f"ours on {device}; PyTorch on the CPU")
print(f"{'model':<6} {'ours samples/s':>15} {'PyTorch samples/s':>18} {'ours / PyTorch':>15}")
for model, mine in ours.items():
    peer = torch.get(model)
    ratio = f"{mine / peer['samples_per_s']:.2f}x" if peer else "-"
    theirs = f"{peer['samples_per_s']:.2f}" if peer else "-"
    print(f"{model:<6} {mine:>15.2f} {theirs:>18} {ratio:>15}")
PY
