#!/usr/bin/env bash
# Data-parallel training on a GPU host in one invocation (issue 7): `trainer doctor` (its NCCL
# line: libnccl loads and a one-rank communicator all-reduces), then `trainer bench-scaling` with
# the gradients through burn-collective and, when the host has two GPUs or more, through NCCL
# (one GPU per rank; NCCL refuses two ranks on one GPU). Prints each bench-scaling table and a
# summary table last: engine, processes, step s, all-reduce s, bus GB/s, status.
#
#   bench/gpu-scaling.sh BIN_DIR [OUT_DIR]
#
# BIN_DIR holds `trainer` built with `--features cuda`. OUT_DIR (default bench/out/gpu-scaling)
# gets every log and gpu-scaling.jsonl. libnccl: NCCL's packages install libnccl.so.2, a name
# cudarc does not look for; when no libnccl.so loads, the script links one from the PyTorch
# virtualenv's nvidia-nccl package or the system's libnccl.so.2 into OUT_DIR and puts it on
# LD_LIBRARY_PATH.
#
# Environment: MODEL (base), BATCH per process (16), STEPS (5), MAX_RANKS (the GPU count, at
# least 2), STEP_TIMEOUT per command (240 s), PYTHON (/opt/torch/.venv/bin/python when present,
# else python3). SMALL=1 shrinks every shape for a smoke run on the CPU build (scripts/test).
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${1:?usage: bench/gpu-scaling.sh BIN_DIR [OUT_DIR]}
source bench/gpu-env.sh "${2:-bench/out/gpu-scaling}"
jsonl="$out/gpu-scaling.jsonl"
: >"$jsonl"
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
model=${MODEL:-base}
shapes=(--batch "${BATCH:-16}" --steps "${STEPS:-5}")
if [ "${SMALL:-0}" = 1 ]; then
  model=mini
  shapes=(--batch 1 --steps 1 --text-len 5 --regions 3 --feature-dim 8 --classes 4)
fi
max_ranks=${MAX_RANKS:-$(( gpus > 2 ? gpus : 2 ))}
step_timeout=${STEP_TIMEOUT:-240}

# A libnccl.so for cudarc, linked from the newest libnccl.so.2 found, unless one loads already.
if ! ldconfig -p 2>/dev/null | grep -q 'libnccl\.so '; then
  nccl=$("$python" -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib", "libnccl.so.2"))' 2>/dev/null)
  [ -e "${nccl:-/nonexistent}" ] || nccl=$(ldconfig -p 2>/dev/null | awk '/libnccl\.so\.2 / {print $NF; exit}')
  if [ -e "${nccl:-/nonexistent}" ]; then
    mkdir -p "$out/nccl-lib"
    ln -sf "$nccl" "$out/nccl-lib/libnccl.so"
    export LD_LIBRARY_PATH="$out/nccl-lib:$LD_LIBRARY_PATH"
    echo "libnccl: $nccl" >&2
  fi
fi

# record LABEL ENGINE STATUS LOG: appends the command's last JSON line (if any) to the JSONL file.
record() {
  local json
  json=$(grep '^{' "$4" 2>/dev/null | tail -1)
  python3 -c 'import json,sys; print(json.dumps({"label": sys.argv[1], "engine": sys.argv[2], "status": sys.argv[3], "json": json.loads(sys.argv[4]) if sys.argv[4] else None}))' \
    "$1" "$2" "$3" "${json:-}" >>"$jsonl"
}

# run LABEL ENGINE LOG COMMAND...: runs one command under the step timeout and records it.
run() {
  local label=$1 engine=$2 log=$3 status
  shift 3
  echo "==> $label" >&2
  timeout "$step_timeout" "$@" >"$out/$log" 2>"$out/${log%.log}.err"
  case $? in
    0) status=ok ;;
    124) status="timed out after ${step_timeout} s" ;;
    *) status="failed: $(tail -c 200 "$out/${log%.log}.err" | tr '\n"|' '   ')" ;;
  esac
  record "$label" "$engine" "$status" "$out/$log"
}

run "trainer doctor" - doctor.log "$bin/trainer" doctor --size 256
run "bench-scaling" burn-collective scaling-burn-collective.log "$bin/trainer" bench-scaling \
  --model "$model" --max-ranks "$max_ranks" "${shapes[@]}" --all-reduce burn-collective
if [ "$gpus" -ge 2 ]; then
  run "bench-scaling" nccl scaling-nccl.log "$bin/trainer" bench-scaling \
    --model "$model" --max-ranks "$max_ranks" "${shapes[@]}" --all-reduce nccl
else
  record "bench-scaling" nccl "skipped: $gpus GPU(s); NCCL needs one GPU per rank" /dev/null
fi

for log in doctor.log scaling-burn-collective.log scaling-nccl.log; do
  [ -s "$out/$log" ] && { echo "## $log"; grep -v '^{' "$out/$log"; echo; }
done
python3 - "$jsonl" "$card" "$commit" "$model" <<'PY'
import json, sys
path, card, commit, model = sys.argv[1:]
print(f"card: {card}; commit {commit}; model {model}")
print("| what | engine | processes | step s | all-reduce s | all-reduce bus GB/s | status |")
print("|---|---|---|---|---|---|---|")
for line in open(path):
    r = json.loads(line)
    rows = (r["json"] or {}).get("rows") or [None]
    for row in rows:
        cells = ["-"] * 4
        if row:
            bus = row.get("bus_gb_per_s")
            cells = [str(row["ranks"]), f"{row['step_s']:.3f}", f"{row['allreduce_s']:.3f}",
                     f"{bus:.2f}" if bus else "-"]
        engine = (row.get("engine") or "-") if row else r["engine"]
        print(f"| {r['label']} | {engine} | {' | '.join(cells)} | {r['status']} |")
PY
