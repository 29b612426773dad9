#!/usr/bin/env bash
# The CUDA path in one invocation on a GPU host (issue 8): the ImageBERT pre-training step in Burn
# (f32 and bf16, fusion on and off, cold and with the kernel cache present) beside the same model
# and step in PyTorch on the same card (f32/TF32 and bf16 autocast), then retrieval scoring
# (`trainer bench`, pairs/s, with Burn's fused attention operation and with explicit
# matmul/softmax kernels) and `detector bench` (images/s). Prints one table last: what,
# samples/s (pairs/s, images/s), ratio to PyTorch bf16 autocast (scoring: to explicit
# attention), and cold start (process start to first finished step) without and with the
# kernel cache.
#
#   bench/gpu.sh BIN_DIR [OUT_DIR]
#
# BIN_DIR holds `trainer` and `detector` built with `--features cuda`, and optionally
# `trainer-without-fusion` built with `--features cuda-without-fusion`. OUT_DIR (default
# bench/out/gpu) gets every log, the kernel caches and CubeCL's kernel logs, and gpu-bench.jsonl.
# Run from a checkout with assets/detectors and assets/photos (scripts/fetch-assets).
#
# Environment: MODEL (base), BATCH (64), TEXT_LEN (44), REGIONS (100), FIGURE_SECONDS (15),
# STEP_TIMEOUT per command (150 s), DEADLINE for the whole script (540 s: later steps are
# skipped and the table says so), PYTHON (/opt/torch/.venv/bin/python when present, else
# python3; without torch the PyTorch rows are skipped), TORCH_DEVICE (cuda).
# SMALL=1 shrinks every shape for a smoke run of the script on the CPU build (scripts/test).
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${1:?usage: bench/gpu.sh BIN_DIR [OUT_DIR]}
source bench/gpu-env.sh "${2:-bench/out/gpu}"
jsonl="$out/gpu-bench.jsonl"
: >"$jsonl"
torch_device=${TORCH_DEVICE:-cuda}
model=${MODEL:-base}
batch=${BATCH:-64}
seconds=${FIGURE_SECONDS:-15}
step_timeout=${STEP_TIMEOUT:-150}
deadline=$(( $(date +%s) + ${DEADLINE:-540} ))
# The shape flags, the same for `trainer bench` and bench/imagebert_step.py.
shapes=(--text-len "${TEXT_LEN:-44}" --regions "${REGIONS:-100}")
pair_batch=256
detector_batches=16,64
if [ "${SMALL:-0}" = 1 ]; then
  model=mini batch=2 seconds=0 pair_batch=2 detector_batches=1
  shapes=(--text-len 5 --regions 3 --feature-dim 8 --classes 4)
  torch_device=${TORCH_DEVICE:-cpu}
fi

# run LABEL LOG COMMAND...: runs one step under the step timeout unless the deadline has passed,
# then appends {"label", "status", "json": <its last JSON line>} to the JSONL file.
run() {
  local label=$1 log=$2
  shift 2
  local status json
  if [ "$(date +%s)" -ge "$deadline" ]; then
    status="skipped: deadline"
  else
    echo "==> $label" >&2
    timeout "$step_timeout" "$@" >"$out/$log" 2>"$out/${log%.log}.err"
    local rc=$?
    case $rc in
      0) status=ok ;;
      124) status="timed out after ${step_timeout} s" ;;
      *) status="failed rc=$rc: $(tail -c 160 "$out/${log%.log}.err" | tr '\n"' ' ' )" ;;
    esac
  fi
  json=$(grep '^{' "$out/$log" 2>/dev/null | tail -1)
  python3 -c 'import json,sys; print(json.dumps({"label": sys.argv[1], "status": sys.argv[2], "json": json.loads(sys.argv[3]) if sys.argv[3] else None}))' \
    "$label" "$status" "${json:-}" >>"$jsonl"
}

# burn LABEL LOG BINARY PRECISION CACHE [EXTRA FLAGS...]: one `trainer bench` pre-training step.
burn() {
  local label=$1 log=$2 binary=$3 precision=$4 cache=$5
  shift 5
  run "$label" "$log" "$binary" bench --models "$model" --train-batch "$batch" "${shapes[@]}" \
    --skip-scoring --warmup 3 --seconds "$seconds" --precision "$precision" \
    --kernel-cache "$cache" --kernel-log "$out/${log%.log}.kernels" "$@"
}

torch_step() {
  local label=$1 log=$2 precision=$3
  if "$python" -c 'import torch' 2>/dev/null; then
    run "$label" "$log" "$python" bench/imagebert_step.py --model "$model" --batch "$batch" \
      "${shapes[@]}" --warmup 3 --seconds "$seconds" --device "$torch_device" \
      --precision "$precision"
  else
    python3 -c 'import json,sys; print(json.dumps({"label": sys.argv[1], "status": "skipped: no torch in " + sys.argv[2], "json": None}))' \
      "$label" "$python" >>"$jsonl"
  fi
}

rm -rf "$out"/cache-*
# Most important first: the deadline cuts the tail.
burn "Burn step f32, fusion, cold" f32-cold.log "$bin/trainer" f32 "$out/cache-f32" --same-batch
burn "Burn step f32, fusion, cache present" f32-cached.log "$bin/trainer" f32 "$out/cache-f32" --same-batch
torch_step "PyTorch step bf16 autocast" torch-bf16.log bf16
torch_step "PyTorch step f32 (TF32)" torch-f32.log f32
burn "Burn step bf16, fusion, cold" bf16-cold.log "$bin/trainer" bf16 "$out/cache-bf16" --same-batch
# scoring LABEL LOG PRECISION ATTENTION: one `trainer bench` retrieval-scoring figure.
scoring() {
  run "$1" "$2" "$bin/trainer" bench --models "$model" "${shapes[@]}" --skip-train \
    --pair-batch "$pair_batch" --warmup 3 --seconds "$seconds" --precision "$3" --attention "$4" \
    --kernel-cache "$out/cache-$3" --kernel-log "$out/${2%.log}.kernels"
}
scoring "Burn retrieval scoring f32, fused attention" scoring-fused.log f32 fused
scoring "Burn retrieval scoring f32, explicit attention" scoring-explicit.log f32 explicit
run "detector bench CenterNet f32" detector.log "$bin/detector" --kernel-cache "$out/cache-detector" \
  bench --batch-sizes "$detector_batches" --seconds "$seconds"
burn "Burn step f32, fusion, fresh masks every step" f32-fresh.log "$bin/trainer" f32 "$out/cache-f32"
burn "Burn step f32, fusion, fresh masks, fixed shapes" f32-fixed.log "$bin/trainer" f32 "$out/cache-f32" --fixed-shapes
if [ -x "$bin/trainer-without-fusion" ]; then
  burn "Burn step f32, no fusion, cold" f32-nofusion.log "$bin/trainer-without-fusion" f32 "$out/cache-nofusion" --same-batch
fi
burn "Burn step bf16, fusion, cache present" bf16-cached.log "$bin/trainer" bf16 "$out/cache-bf16" --same-batch
scoring "Burn retrieval scoring bf16, fused attention" scoring-bf16.log bf16 fused

python3 - "$jsonl" "$card" "$commit" "$model" "$batch" <<'PY'
import json, sys
path, card, commit, model, batch = sys.argv[1:]
rows = [json.loads(line) for line in open(path) if line.strip()]
by_label = {r["label"]: r for r in rows}

def figure(r):
    j = r["json"]
    if not j or r["status"] != "ok":
        return None, None, None
    if "rows" in j:  # trainer bench
        row = j["rows"][0]
        if "train_samples_per_s" in row:
            return row["train_samples_per_s"], "samples/s", row["train_first_step_after_start_s"]
        return row["pairs_per_s"], "pairs/s", None
    if "samples_per_s" in j:  # PyTorch
        return j["samples_per_s"], "samples/s", j["first_step_after_start_s"]
    if "images_per_second" in j:  # detector bench: its last line is the largest batch
        return j["images_per_second"], f"images/s (batch {j.get('batch_size')})", None
    return None, None, None

none = {"json": None, "status": ""}
anchor = figure(by_label.get("PyTorch step bf16 autocast", none))[0]
# Scoring's anchor: the same model with attention as separate matmul/softmax kernels.
scoring_anchor = figure(by_label.get("Burn retrieval scoring f32, explicit attention", none))[0]
cached = {"Burn step f32, fusion, cold": "Burn step f32, fusion, cache present",
          "Burn step bf16, fusion, cold": "Burn step bf16, fusion, cache present"}
print(f"card: {card}; commit {commit}; model {model}, batch {batch}")
print("| what | figure | unit | ratio (steps: to PyTorch bf16; scoring: to explicit attention f32) | cold start s | cold start s, cache present | status |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    if r["label"] in cached.values():
        continue
    value, unit, cold = figure(r)
    warm_cold = None
    if r["label"] in cached and cached[r["label"]] in by_label:
        warm_cold = figure(by_label[cached[r["label"]]])[2]
    base = {"samples/s": anchor, "pairs/s": scoring_anchor}.get(unit)
    ratio = f"{value / base:.2f}x" if value and base else "-"
    fmt = lambda x, spec: format(x, spec) if x is not None else "-"
    print(f"| {r['label']} | {fmt(value, '.2f')} | {unit or '-'} | {ratio} | {fmt(cold, '.1f')} "
          f"| {fmt(warm_cold, '.1f')} | {r['status']} |")
PY
