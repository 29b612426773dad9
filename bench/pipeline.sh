#!/usr/bin/env bash
# Image-step throughput of `pipeline bench`, ours beside img2dataset's on the same photos, on the
# same machine and in the same run, one core each:
#   bench/pipeline.sh [PIPELINE_BINARY] [SECONDS]
# PIPELINE_BINARY: a release build (default target/release/pipeline); SECONDS (default 3) is each
# side's time for the photos, split between formats. The peer (bench/img2dataset_images.py) runs
# img2dataset's Resizer with our settings (longest side 512, never enlarged, JPEG quality 90,
# width and height > 300) plus its SHA-256 of the bytes; PYTHON (default python3) must have
# img2dataset and cv2 for it, and it is skipped with a note otherwise. Writes JSON lines to
# $OUT/pipeline-bench.jsonl (OUT default bench/out) and prints, last, ours' MB/s figures and a
# table: format, images/s per core of each, ours / img2dataset, and ours for the decode step
# alone (the ceiling that no faster resize or encoder can lift).
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-${CARGO_TARGET_DIR:-target}/release/pipeline}
seconds=${2:-3}
python=${PYTHON:-python3}
out=${OUT:-bench/out}
mkdir -p "$out"
log="$out/pipeline-bench.jsonl"
: >"$log"

"$binary" bench --seconds "$seconds" | tail -1 | tee -a "$log"
if NO_ALBUMENTATIONS_UPDATE=1 "$python" -c 'import img2dataset, cv2' 2>/dev/null; then
  "$python" bench/img2dataset_images.py --seconds "$seconds" | tail -1 | tee -a "$log"
else
  echo "note: $python lacks img2dataset or cv2: the img2dataset side is skipped" >&2
fi

python3 - "$log" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
figures = next(line for line in lines if isinstance(line, list))
peer = next((line for line in lines if isinstance(line, dict) and line.get("peer")), None)
def by_format(prefix):
    return {f["name"].split(", ", 1)[1].split(" ", 1)[0]: f["per_second"]
            for f in figures if f["name"].startswith(prefix)}
ours = by_format("image decode+filter")
ceiling = by_format("image decode only")
theirs = {r["format"]: r["images_per_cpu_second"] for r in peer["rows"]} if peer else {}
for f in figures:
    if f["unit"] == "MB/s":
        print(f"{f['per_second']:10.1f} MB/s  {f['name']}")
if peer:
    print(f"img2dataset {peer['img2dataset']}, OpenCV {peer['opencv']}; "
          f"refused by it: {', '.join(peer['refused']) or 'none'}")
print(f"{'format':<6} {'ours images/s':>14} {'img2dataset images/s':>21} {'ours / img2dataset':>19}"
      f" {'ours decode only':>17}")
for fmt, mine in ours.items():
    peer_rate = theirs.get(fmt)
    other = f"{peer_rate:.1f}" if peer_rate else "-"
    ratio = f"{mine / peer_rate:.2f}x" if peer_rate else "-"
    print(f"{fmt:<6} {mine:>14.1f} {other:>21} {ratio:>19} {ceiling.get(fmt, 0):>17.1f}")
PY
