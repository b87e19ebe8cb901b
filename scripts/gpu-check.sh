#!/usr/bin/env bash
# One command on a machine with one NVIDIA GPU: is the GPU path real, and how fast is it?
#
#   1. builds `--features cuda` offline (scripts/cuda-build.sh: LLVM SDK from PyPI, crates from
#      crates.io, nothing else) — the train and bench binaries and the kernel tests;
#   2. runs the `#[cube]` kernel tests on the GPU (values and gradients against the composed
#      versions; attention memory linear in T);
#   3. times our training step against the PyTorch peer on the GPU at the original's shape
#      (depth 8, width 512, T 2048, vocab 8192, SSSL windows), alternating ours and theirs, both in
#      bf16 mixed precision (the original's setting), and prints tokens/s, MFU against the
#      detected GPU's peak, and peak GPU memory for both sides;
#   4. prints what it could not do, and how long steps 2–3 took (budget: 8 minutes).
#
# Usage: scripts/gpu-check.sh [PATH/TO/reference_gpt.py]
#   (default: ../shared/bench/reference_gpt.py next to the repository, if present)
# GPU_CHECK_ON=wgpu rehearses every part that needs no NVIDIA GPU on wgpu (lavapipe on a machine
# without a GPU) at a small shape, with the PyTorch peer on the CPU: the script's own logic, the
# wrapper, the parsing and the summary run for real.
# Environment: GPU_CHECK_BATCH (sequences per micro-batch; default 128, the original's, on a GPU
# with ≥ 79 GB, else 32), GPU_CHECK_STEPS (timed steps, default 8), GPU_CHECK_PAIRS (default 2),
# PYTHON (with torch + CUDA; default python3), CARGO_TARGET_DIR as usual.
# Needs at run time: the NVIDIA driver, libnvrtc (CUDA toolkit, or `pip install
# nvidia-cuda-nvrtc-cu12`; this script finds the pip one), and for the peer, torch with CUDA.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
REFERENCE=${1:-$REPO/../shared/bench/reference_gpt.py}
PYTHON=${PYTHON:-python3}
PAIRS=${GPU_CHECK_PAIRS:-2}
STEPS=${GPU_CHECK_STEPS:-8}
WARMUP=3
ON=${GPU_CHECK_ON:-cuda}
LOG=$(mktemp -d /tmp/gpu-check.XXXXXX)
COULD_NOT=()
could_not() { COULD_NOT+=("$*"); echo "gpu-check: could not: $*" >&2; }
say() { echo "gpu-check: $*" >&2; }

finish() {
    echo
    echo "== what this run could not do"
    if ((${#COULD_NOT[@]} == 0)); then echo "  nothing: every part ran"; fi
    for c in "${COULD_NOT[@]}"; do echo "  - $c"; done
    echo "logs: $LOG"
}
trap finish EXIT

# -- the GPU ------------------------------------------------------------------------------------
GPU_NAME="" GPU_MEM_MB=0
# One cargo package selection for every build and test below: cargo unifies features over the
# selected packages, so a different selection would rebuild all of burn (35 minutes with cuda).
PACKAGES=(-p train -p kernels --features "train/$ON,kernels/$ON")
if [[ "$ON" == wgpu ]]; then
    say "rehearsal on wgpu: small shapes, the PyTorch peer on the CPU, no driver memory readings"
    export VK_ICD_FILENAMES=${VK_ICD_FILENAMES:-/usr/share/vulkan/icd.d/lvp_icd.x86_64.json}
    export PEER_DEVICE=cpu
    GPU_NAME="wgpu rehearsal"
    CARGO=(cargo)
elif command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
    GPU_MEM_MB=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
    (($(nvidia-smi -L | wc -l) == 1)) || say "several GPUs: everything runs on GPU 0"
    say "GPU: $GPU_NAME, ${GPU_MEM_MB} MiB"
else
    could_not "find an NVIDIA GPU (nvidia-smi missing or failing): only the build runs"
fi
[[ "$ON" == wgpu ]] || CARGO=(scripts/cuda-build.sh --)
BATCH=${GPU_CHECK_BATCH:-$(( GPU_MEM_MB >= 79000 ? 128 : 32 ))}
CONFIG=(--vocab 8192 --seq-len 2048 --depth 8 --aspect-ratio 64 --head-dim 128 --window-pattern SSSL
        --device-batch "$BATCH" --steps "$STEPS" --warmup-steps "$WARMUP" --autocast bf16)
if [[ "$ON" == wgpu ]]; then
    BATCH=2 STEPS=3 WARMUP=1
    CONFIG=(--vocab 512 --seq-len 128 --depth 2 --aspect-ratio 64 --head-dim 64 --window-pattern SSSL
            --device-batch "$BATCH" --steps "$STEPS" --warmup-steps "$WARMUP" --autocast bf16)
fi

# -- 1. the build (not in the 8-minute budget) ---------------------------------------------------
say "building --features $ON (offline for cuda; the first build takes a while)"
if ! "${CARGO[@]}" test --release --locked "${PACKAGES[@]}" --no-run \
        --test cube_kernels --test cube_memory >"$LOG/build.log" 2>&1 ||
   ! "${CARGO[@]}" build --release --locked "${PACKAGES[@]}" --bins >>"$LOG/build.log" 2>&1; then
    tail -30 "$LOG/build.log" >&2
    could_not "build --features $ON (see $LOG/build.log); nothing else ran"
    exit 1
fi
say "build done"
[[ -n "$GPU_NAME" ]] || exit 1

# The cuda-cpp compiler needs libnvrtc at run time; the PyPI wheel's copy works too.
if [[ "$ON" == cuda ]] && ! ldconfig -p 2>/dev/null | grep -q libnvrtc; then
    NVRTC_DIR=$("$PYTHON" -c 'import nvidia.cuda_nvrtc, os; print(os.path.join(list(nvidia.cuda_nvrtc.__path__)[0], "lib"))' 2>/dev/null)
    if [[ -n "$NVRTC_DIR" ]]; then
        export LD_LIBRARY_PATH="$NVRTC_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    else
        say "libnvrtc not found by ldconfig; if kernels fail to compile: pip install nvidia-cuda-nvrtc-cu12"
    fi
fi
START=$(date +%s)

# -- 2. the kernel tests on the GPU ---------------------------------------------------------------
say "kernel tests on $ON"
if KERNELS_TEST_DEVICE=$ON cargo test --release --locked --offline "${PACKAGES[@]}" \
        --test cube_kernels --test cube_memory -- --test-threads=1 --nocapture >"$LOG/kernel-tests.log" 2>&1; then
    grep -E "^test |max abs diff|growth" "$LOG/kernel-tests.log" | sed 's/^/  /'
else
    grep -E "^test |panicked|FAILED" "$LOG/kernel-tests.log" | head -40 >&2
    could_not "pass the kernel tests on the GPU (see $LOG/kernel-tests.log)"
fi

# -- 3. ours vs the PyTorch peer --------------------------------------------------------------------
# Peak GPU memory is read the same way for both sides, from the driver (nvidia-smi, every
# 100 ms, the maximum over the run), and each side also reports its own allocator's count.
sample_memory() { # $1: output file; runs until killed
    if [[ "$ON" == cuda ]]; then
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$1" 2>/dev/null
    else
        : >"$1"
    fi
}
run_sampled() { # $1: name, rest: command; prints the JSON line, records the driver's peak
    local name=$1 out
    shift
    sample_memory "$LOG/$name.mem" &
    local sampler=$!
    out=$("$@" 2>"$LOG/$name.err")
    local status=$?
    kill "$sampler" 2>/dev/null
    wait "$sampler" 2>/dev/null
    local peak
    peak=$(sort -n "$LOG/$name.mem" | tail -1)
    [[ $status == 0 ]] || return 1
    echo "$out" | grep '^{' | tail -1 | "$PYTHON" -c "import json,sys; r=json.loads(sys.stdin.read()); r['driver_peak_mem_mb']=float('${peak:-0}'); print(json.dumps(r))"
}

PEER_OK=1
if [[ ! -f "$REFERENCE" ]]; then
    could_not "run the PyTorch peer: $REFERENCE not found (pass its path as the first argument)"
    PEER_OK=0
elif [[ "$ON" == cuda ]] && ! "$PYTHON" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    could_not "run the PyTorch peer: $PYTHON has no torch with CUDA (pip install torch)"
    PEER_OK=0
fi
: >"$LOG/pairs.jsonl"
for pair in $(seq 1 "$PAIRS"); do
    say "pair $pair/$PAIRS: ours (${CONFIG[*]})"
    if ours=$(run_sampled "ours-$pair" env AR_DEVICE="$ON" "$TARGET/release/bench" "${CONFIG[@]}"); then
        echo "$ours" >>"$LOG/pairs.jsonl"
    else
        tail -5 "$LOG/ours-$pair.err" >&2
        could_not "run our training step on the GPU, pair $pair (see $LOG/ours-$pair.err)"
    fi
    if ((PEER_OK)); then
        say "pair $pair/$PAIRS: PyTorch (same config, autocast bf16)"
        if theirs=$(run_sampled "torch-$pair" "$PYTHON" scripts/reference_cuda.py "$REFERENCE" "${CONFIG[@]}"); then
            echo "$theirs" >>"$LOG/pairs.jsonl"
        else
            tail -5 "$LOG/torch-$pair.err" >&2
            could_not "run the PyTorch peer on the GPU, pair $pair (see $LOG/torch-$pair.err; out of memory? set GPU_CHECK_BATCH)"
        fi
    fi
done

# -- 4. the summary -----------------------------------------------------------------------------
"$PYTHON" - "$LOG/pairs.jsonl" "$GPU_NAME" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
gpu = sys.argv[2]
# Dense bf16 peaks (the table prepare/src/hardware.rs uses for MFU).
PEAKS = [("H200", 989.5e12), ("GH200", 989.5e12), ("H100", 989.5e12), ("B200", 2250e12), ("A100", 312e12),
         ("A10G", 70e12), ("L40S", 362e12), ("L4", 121e12), ("RTX 4090", 165e12), ("RTX 3090", 71e12),
         ("V100", 125e12), ("T4", 65e12)]
peak = next((p for k, p in PEAKS if k.upper() in gpu.upper()), None)
print(f"\n== ours vs PyTorch on {gpu} (bf16 peak {peak / 1e12:.0f} TFLOP/s)" if peak else f"\n== on {gpu} (peak unknown: no MFU)")
print(f"{'side':<16}{'tok/s':>12}{'MFU':>8}{'step ms':>10}{'own peak MB':>13}{'driver MB':>11}{'loss 0 → last':>18}")
by_side = {}
for r in rows:
    side = "ours" if r["framework"] == "autoresearch-rs" else "pytorch"
    own = r.get("gpu_peak_mem_mb") or r.get("gpu_mem_reserved_mb") or 0.0
    mfu = 100 * r["flops_per_token"] * r["tokens_per_sec"] / peak if peak else float("nan")
    by_side.setdefault(side, []).append(r["tokens_per_sec"])
    print(f"{side:<16}{r['tokens_per_sec']:>12.0f}{mfu:>7.1f}%{r['step_ms_median']:>10.1f}{own:>13.0f}"
          f"{r['driver_peak_mem_mb']:>11.0f}{r['first_loss']:>9.3f} → {r['last_loss']:.3f}")
if "ours" in by_side and "pytorch" in by_side:
    ratios = [o / t for o, t in zip(by_side["ours"], by_side["pytorch"])]
    print(f"ours/pytorch tokens/s per pair: {', '.join(f'{x:.3f}' for x in ratios)}; median {statistics.median(ratios):.3f}")
EOF

ELAPSED=$(( $(date +%s) - START ))
echo "steps 2–3 took ${ELAPSED} s (budget 480 s)"
((ELAPSED <= 480)) || could_not "finish within 8 minutes after the build (took ${ELAPSED} s; lower GPU_CHECK_STEPS)"
