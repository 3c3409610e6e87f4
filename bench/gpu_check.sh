#!/usr/bin/env bash
# One check of the CUDA paths at the reference size (model=base block_size=1024 batch_size=16):
# 200 steps of each configuration below, then a table of step time, tokens/s, MFU, peak memory,
# final val loss and any error. About 4-6 minutes on one H100-class GPU (compilation is the
# longest row); each run is cut at $RUN_TIMEOUT seconds (the compiled one at twice that).
#
#   bench/gpu_check.sh                      # from anywhere; run folders go to gpu_check/<time>/
#   PEAK_FLOPS=989e12 bench/gpu_check.sh    # the device's dense bf16 peak, when its name is not known below
#   DATA="data=text data.path=/data/input.txt" bench/gpu_check.sh   # another corpus than the built-in one
#
# Every row uses fused AdamW (system.fused_adamw=true) and the pinned-memory prefetch of the batch
# stream (data.prefetch batches prepared ahead in a thread, pinned and copied without blocking),
# except the row that turns the fused kernel off to show what it is worth. The DDP row (two processes
# under torchrun, NCCL, two micro-batches per step: one per GPU) runs when two GPUs exist; its
# tokens/s count both GPUs, and its MFU is against both GPUs' peak.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's trainer
STEPS=${STEPS:-200}
RUN_TIMEOUT=${RUN_TIMEOUT:-100}
OUT="gpu_check/$(date +%Y-%m-%d_%H-%M-%S)"
read -r -a DATA_ARGS <<< "${DATA:-}"

GPUS=$("$PY" -c 'import torch; print(torch.cuda.device_count())') || exit 1
if [ "$GPUS" -lt 1 ]; then
    echo "gpu_check: no CUDA device here" >&2
    exit 1
fi
# Dense bf16 peak FLOP/s of one device, by name (PEAK_FLOPS overrides; unknown names fall back to A100's).
PEAK=${PEAK_FLOPS:-$("$PY" - <<'EOF'
import torch
name = torch.cuda.get_device_name(0)
peaks = [("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("GH200", 989e12), ("B200", 2250e12),
         ("A100", 312e12), ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12), ("A10", 125e12),
         ("RTX 4090", 165e12), ("A6000", 155e12), ("V100", 125e12), ("T4", 65e12)]
print(next((f"{peak:g}" for key, peak in peaks if key in name), "312e12"))
EOF
)}
DEVICE=$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))')
echo "gpu_check: $GPUS x $DEVICE, peak $PEAK FLOP/s per device, $STEPS steps per row, runs in $OUT/"

COMMON=(model=base block_size=1024 batch_size=16 "max_iters=$STEPS" "eval_interval=$STEPS" log_interval=50
        system=cuda "system.peak_flops=$PEAK" "logger=[jsonl]" "${DATA_ARGS[@]}")
ROWS=()

# run NAME PROCESSES TIMEOUT OVERRIDES...: one training run into $OUT/NAME, its output in $OUT/NAME.log
run() {
    local name=$1 processes=$2 limit=$3
    shift 3
    local launcher=(-m trainer)
    if [ "$processes" -gt 1 ]; then
        launcher=(-m torch.distributed.run --standalone "--nproc_per_node=$processes" -m trainer)
    fi
    echo "  $name ..."
    mkdir -p "$OUT"
    timeout "$limit" "$PY" "${launcher[@]}" "${COMMON[@]}" "hydra.run.dir=$OUT/$name" "$@" > "$OUT/$name.log" 2>&1
    echo $? > "$OUT/$name.rc"
    ROWS+=("$name")
}

run bf16 1 "$RUN_TIMEOUT" system.dtype=bfloat16
run fp16_scaler 1 "$RUN_TIMEOUT" system.dtype=float16
run fp32_tf32 1 "$RUN_TIMEOUT" system.dtype=float32
run bf16_unfused_adamw 1 "$RUN_TIMEOUT" system.dtype=bfloat16 system.fused_adamw=false
run bf16_compile 1 $((2 * RUN_TIMEOUT)) system.dtype=bfloat16 system.compile=true
if [ "$GPUS" -ge 2 ]; then
    run bf16_ddp_2gpu 2 "$RUN_TIMEOUT" system.dtype=bfloat16 gradient_accumulation_steps=2
fi

"$PY" - "$OUT" "${ROWS[@]}" <<'EOF'
"""The table: the last log record (steps 150-200: compilation and warm-up are behind), summary.json."""
import json
import sys
from pathlib import Path

out, rows = Path(sys.argv[1]), sys.argv[2:]
header = f"{'run':<20} {'ms/step':>8} {'tokens/s':>10} {'MFU':>6} {'peak mem':>9} {'val loss':>9}  error"
print(header)
print("-" * len(header))
for name in rows:
    folder, rc = out / name, int((out / f"{name}.rc").read_text())
    log = (out / f"{name}.log").read_text(errors="replace").splitlines()
    metrics = folder / "metrics.jsonl"
    steps = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    steps = [r for r in steps if "ms_per_step" in r]
    last = steps[-1] if steps else {}
    summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").exists() else {}
    memory = summary.get("peak_memory_bytes")
    val = summary.get("final", {}).get("val/loss")
    error = ""
    if rc != 0:
        said = [line for line in log if line.startswith("error") or "Error" in line] or log[-1:] or ["no output"]
        error = ("timed out: " if rc == 124 else f"exit {rc}: ") + said[-1][:100]

    def cell(value, form):
        return "-" if value is None else format(value, form)

    print(
        f"{name:<20} {cell(last.get('ms_per_step'), '8.1f')} {cell(last.get('tokens_per_second'), '10,.0f')} "
        f"{cell(last.get('mfu') and 100 * last['mfu'], '5.1f')}% {cell(memory and memory / 2**30, '6.2f')} GiB "
        f"{cell(val, '9.4f')}  {error}"
    )
print(f"\nlogs and run folders: {out}/")
EOF
