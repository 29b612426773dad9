#!/usr/bin/env bash
# Detector throughput, ours beside torchvision's Faster R-CNN on the same photos and device:
#   bench/detector.sh [DETECTOR_BINARY] [SECONDS]
# BATCH_SIZES (default 1,4,16) picks the batch sizes.
# DETECTOR_BINARY: a release build (default target/release/detector; a `--features cuda` build
# measures the GPU). PYTHON (default python3) must have torch + torchvision for the anchor; it is
# skipped with a note otherwise. Writes JSON lines to $OUT/detector-bench.jsonl (OUT default
# bench/out) and prints a table last: name, batch, images/s, ratio to the torchvision MobileNetV3
# Faster R-CNN at the same batch size.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-${CARGO_TARGET_DIR:-target}/release/detector}
seconds=${2:-10}
batch_sizes=${BATCH_SIZES:-1,4,16}
python=${PYTHON:-python3}
out=${OUT:-bench/out}
mkdir -p "$out"
log="$out/detector-bench.jsonl"
: >"$log"

"$binary" bench --seconds "$seconds" --batch-sizes "$batch_sizes" | tee -a "$log"
if "$python" -c 'import torch, torchvision' 2>/dev/null; then
  "$python" bench/torchvision_detector.py --seconds "$seconds" --batch-sizes "$batch_sizes" | tee -a "$log"
else
  echo "note: $python has no torch/torchvision: the torchvision anchor is skipped" >&2
fi

python3 - "$log" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
anchor = {r["batch_size"]: r["images_per_second"] for r in rows
          if "mobilenet_v3" in r["name"]}
print(f"{'what':<72} {'batch':>5} {'images/s':>9} {'vs tv-mbv3':>10}")
for r in rows:
    b = r.get("batch_size")
    ratio = f"{r['images_per_second'] / anchor[b]:.2f}x" if b in anchor else "-"
    print(f"{r['name']:<72} {str(b or '-'):>5} {r['images_per_second']:>9.2f} {ratio:>10}")
PY
