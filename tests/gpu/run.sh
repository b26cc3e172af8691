#!/usr/bin/env bash
# run.sh — the GPU checks, for a machine with an NVIDIA GPU, the CUDA toolkit, cmake and gcc.
# Builds into build-gpu, optionally runs the CPU ctest suite, runs test_kernels (every kernel
# and matmul against the CPU reference executor), compiles the tiny Llama (LoRA and full) for
# the GPU's architecture, trains each 20 steps with --device cuda and --device cpu from the
# same plan and compares the loss curves step by step (and that the GPU's metrics carry MFU
# where runtime/device.c knows the GPU's peak, the CPU's never), checks that CUDA-graph
# replay gives the same bits as launch-by-launch runs and that a stopped and resumed GPU run repeats the
# uninterrupted one, that --device auto/cuda choose as documented and that a diverging run
# stops naming a culprit (noting when the CPU names another), and runs a 2-step GPU training
# under compute-sanitizer (memcheck and racecheck). Logs go to build-gpu/gpu-logs
# (summary.txt lists the results); where $OUT is set (the device tool fetches that folder)
# summary.txt, test_kernels.log and gpu-logs.tar.gz are copied there. Plans, checkpoints
# and weights go to build-gpu/gpu-work.
#
# usage: bash tests/gpu/run.sh [--ctest] [--no-build] [--steps N]
#   FTC_GPU_BUILD=DIR  the build folder (default build-gpu); FTC_GPU_WORK=DIR  the work folder
# Where the GPU machine cannot build (no jansson headers), build build-gpu elsewhere with
#   cmake -S . -B build-gpu && cmake --build build-gpu -j
# carry it there and run with --no-build.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
B=${FTC_GPU_BUILD:-$ROOT/build-gpu}
LOG=$B/gpu-logs # copied to $OUT at the end: summary.txt, test_kernels.log and the rest as a tarball
STEPS=20
CTEST=0
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
    --ctest) CTEST=1 ;;
    --no-build) BUILD=0 ;;
    --steps) STEPS=$2; shift ;;
    *) echo "usage: bash tests/gpu/run.sh [--ctest] [--no-build] [--steps N]" >&2; exit 2 ;;
    esac
    shift
done
rm -rf "$LOG"
mkdir -p "$LOG"
W=${FTC_GPU_WORK:-$B/gpu-work} # plans, checkpoints and weights: kept out of $OUT
rm -rf "$W"
mkdir -p "$W"
SUMMARY=$LOG/summary.txt
: >"$SUMMARY"
FAILS=0
export PATH=/usr/local/cuda/bin:$PATH

note() { echo "$*" | tee -a "$SUMMARY"; }
result() { # name status detail
    if [ "$2" = ok ]; then note "ok    $1${3:+  ($3)}"; else note "FAIL  $1${3:+  ($3)}"; FAILS=$((FAILS + 1)); fi
}

note "ftc GPU checks, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
nvidia-smi --query-gpu=index,name,compute_cap,driver_version,memory.total --format=csv,noheader 2>/dev/null |
    sed 's/^/gpu   /' | tee -a "$SUMMARY"

# ---- build ----
# The GPU machine of GPU-NOTES.md has libjansson's runtime but not its headers, so a build
# there stops at configure; build-gpu built on the development machine (same toolkit, older
# glibc) runs there unchanged: build it there and carry it, then use --no-build.
if [ $BUILD = 1 ]; then
    if cmake -S "$ROOT" -B "$B" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$LOG/cmake.log" 2>&1 &&
        cmake --build "$B" -j"$(nproc)" >>"$LOG/cmake.log" 2>&1; then
        result build ok
    elif [ -x "$B/ftc" ] && [ -x "$B/ftrun" ] && [ -x "$B/test_kernels" ]; then
        note "skip  build: cmake failed here ($(grep -m1 -iE 'not found|error' "$LOG/cmake.log")); using the binaries already in $B"
    else
        result build fail "see cmake.log; without jansson headers, build $B elsewhere and carry it (--no-build)"
        tail -30 "$LOG/cmake.log"
        exit 1
    fi
fi
for exe in ftc ftrun test_kernels; do
    [ -x "$B/$exe" ] || { result "build: $exe" fail "missing (CUDA toolkit not found by CMake?)"; exit 1; }
done

if [ $CTEST = 1 ]; then
    if (cd "$B" && ctest -j"$(nproc)" --output-on-failure) >"$LOG/ctest.log" 2>&1; then
        result "CPU ctest suite" ok
    else
        result "CPU ctest suite" fail "see ctest.log"
    fi
fi

# ---- every kernel against the CPU ----
"$B/test_kernels" --cache "$B/kernel-cache" >"$LOG/test_kernels.log" 2>&1
rc=$?
result "test_kernels" "$([ $rc = 0 ] && echo ok || echo fail)" "$(tail -1 "$LOG/test_kernels.log")"
grep -E "FAIL" "$LOG/test_kernels.log" | head -40
# sm_90 compiles run attention_wg.cuh's kernels; the mma.sync ones that other GPUs run are
# checked here too, forced by FTC_ATTN_MMA_SYNC (codegen/emit.c)
FTC_ATTN_MMA_SYNC=1 "$B/test_kernels" --cache "$B/kernel-cache" attn >"$LOG/test_kernels_mma.log" 2>&1
rc=$?
result "test_kernels attention, mma.sync kernels" "$([ $rc = 0 ] && echo ok || echo fail)" \
    "$(tail -1 "$LOG/test_kernels_mma.log")"

# ---- the GPU's architecture ----
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader -i "${LOCAL_RANK:-0}" 2>/dev/null | head -1 | tr -d ' .')
ARCH=${cap:+sm_$cap}
[ -n "$ARCH" ] || ARCH=$(sed -n 's/^GPU [0-9]*: .*, \(sm_[0-9]*\), .*/\1/p' "$LOG/test_kernels.log" | head -1)
[ -n "$ARCH" ] || { result "GPU architecture" fail "neither nvidia-smi nor test_kernels named it"; exit 1; }
note "arch  $ARCH"

# ---- training: CUDA against the CPU from one plan ----
# Prints "max_rel step" of the per-step relative difference of key $3 between two metrics files.
curve_diff() {
    awk -v key="\"$3\": " '
        function val(line,   i, s) { i = index(line, key); if (!i) return "x"; s = substr(line, i + length(key)); sub(/[,}].*/, "", s); return s + 0 }
        FNR == NR { a[FNR] = val($0); n = FNR; next }
        { b[FNR] = val($0); m = FNR }
        END {
            if (n == 0 || n != m) { print "inf count:" n "/" m; exit }
            worst = 0; at = 0
            for (i = 1; i <= n; i++) {
                d = a[i] - b[i]; if (d < 0) d = -d
                s = b[i] < 0 ? -b[i] : b[i]
                r = s > 0 ? d / s : d
                if (r > worst || r != r) { worst = r; at = i }
            }
            printf "%.3g %d\n", worst, at
        }' "$1" "$2"
}

for model in lora full; do
    plan=$W/$model.bin
    if ! "$B/ftc" compile "$ROOT/models/tiny-llama-$model.fbs" -o "$plan" --target "$ARCH" >"$LOG/compile-$model.log" 2>&1; then
        result "compile tiny-llama-$model --target $ARCH" fail "$(tail -1 "$LOG/compile-$model.log")"
        continue
    fi
    ok=1
    for dev in cuda cpu; do
        if ! "$B/ftrun" "$plan" --device $dev --steps "$STEPS" --out "$W/$model-$dev" >"$LOG/train-$model-$dev.log" 2>&1; then
            result "train tiny-llama-$model --device $dev" fail "$(tail -1 "$LOG/train-$model-$dev.log")"
            ok=0
        fi
    done
    [ $ok = 1 ] || continue
    for dev in cuda cpu; do cp "$W/$model-$dev/metrics.jsonl" "$LOG/metrics-$model-$dev.jsonl"; done
    grep -h "^training:" "$LOG/train-$model-cuda.log" | tee -a "$SUMMARY"
    read -r worst at <<<"$(curve_diff "$W/$model-cuda/metrics.jsonl" "$W/$model-cpu/metrics.jsonl" loss)"
    read -r gworst gat <<<"$(curve_diff "$W/$model-cuda/metrics.jsonl" "$W/$model-cpu/metrics.jsonl" grad_norm)"
    pass=$(awk -v w="$worst" 'BEGIN { print (w + 0 < 1e-4 && w != "inf") ? "ok" : "fail" }')
    result "tiny-llama-$model: $STEPS-step loss curve, cuda vs cpu" "$pass" \
        "max rel diff $worst at step $at; grad norm max rel diff $gworst at step $gat"
    paste -d' ' <(grep -o '"loss": [^,]*' "$W/$model-cpu/metrics.jsonl") \
        <(grep -o '"loss": [^,]*' "$W/$model-cuda/metrics.jsonl") |
        awk '{ printf "  step %3d  cpu %-22s cuda %-22s\n", NR, $2, $4 }' >"$LOG/curve-$model.txt"
    grep -o '"device_mem_bytes": [0-9]*' "$W/$model-cuda/metrics.jsonl" | tail -1 | sed 's/^/      /' | tee -a "$SUMMARY"
    grep -o '"tokens_per_s": [0-9.]*' "$W/$model-cuda/metrics.jsonl" | tail -1 | sed 's/^/      /' | tee -a "$SUMMARY"
    # MFU: in the GPU's metrics where runtime/device.c knows its peak, never in the CPU's
    if grep -q '"mfu": ' "$W/$model-cpu/metrics.jsonl"; then
        result "tiny-llama-$model: no mfu in the CPU's metrics" fail "the CPU run reported one"
    fi
    case "$(nvidia-smi --query-gpu=name --format=csv,noheader -i "${LOCAL_RANK:-0}" 2>/dev/null)" in
    *H100* | *H200* | *A100*)
        if grep -q '"mfu": [0-9]' "$W/$model-cuda/metrics.jsonl" && grep -q '| MFU [0-9.]*% |' "$LOG/train-$model-cuda.log"; then
            result "tiny-llama-$model: the GPU's metrics and progress line carry MFU" ok \
                "$(grep -o '"mfu": [0-9.e-]*' "$W/$model-cuda/metrics.jsonl" | tail -1)"
        else
            result "tiny-llama-$model: the GPU's metrics and progress line carry MFU" fail "no mfu"
        fi
        ;;
    *) note "skip  MFU check: this GPU is not in runtime/device.c's table of peaks" ;;
    esac

    # the same run launch by launch: CUDA-graph replay must not change a bit
    if FTC_NO_CUDA_GRAPH=1 "$B/ftrun" "$plan" --device cuda --steps "$STEPS" --out "$W/$model-nograph" \
        >"$LOG/train-$model-nograph.log" 2>&1; then
        if cmp -s <(grep -o '"loss": [^,]*' "$W/$model-cuda/metrics.jsonl") \
            <(grep -o '"loss": [^,]*' "$W/$model-nograph/metrics.jsonl"); then
            result "tiny-llama-$model: graphs on and off give the same losses" ok
        else
            result "tiny-llama-$model: graphs on and off give the same losses" fail "see $W/$model-*/metrics.jsonl"
        fi
    else
        result "tiny-llama-$model: FTC_NO_CUDA_GRAPH=1 run" fail "$(tail -1 "$LOG/train-$model-nograph.log")"
    fi
done

# ---- --device auto: the GPU for a GPU plan, the CPU with a notice for a CPU plan ----
if [ -f "$W/lora.bin" ]; then
    "$B/ftc" compile "$ROOT/models/tiny-llama-lora.fbs" -o "$W/lora-cpu.bin" --target cpu >/dev/null 2>&1
    "$B/ftrun" "$W/lora.bin" --steps 1 --quiet --out "$W/auto-gpu" >"$LOG/auto.log" 2>&1
    "$B/ftrun" "$W/lora-cpu.bin" --steps 1 --quiet --out "$W/auto-cpu" >>"$LOG/auto.log" 2>&1
    if grep -q "(CUDA executor" "$LOG/auto.log" && grep -q "notice: .*running the CPU reference executor" "$LOG/auto.log" &&
        grep -q "(CPU reference executor)" "$LOG/auto.log"; then
        result "--device auto picks the GPU for an $ARCH plan and the CPU for a cpu plan" ok
    else
        result "--device auto picks the GPU for an $ARCH plan and the CPU for a cpu plan" fail "see auto.log"
    fi
    if "$B/ftrun" "$W/lora-cpu.bin" --device cuda --steps 1 --out "$W/cuda-cpuplan" >>"$LOG/auto.log" 2>&1; then
        result "--device cuda refuses a cpu plan" fail "it ran"
    else
        result "--device cuda refuses a cpu plan" ok "$(grep -m1 -- '--device cuda' "$LOG/auto.log")"
    fi
fi

# ---- resume on the GPU: stop halfway, resume, same losses as the uninterrupted run ----
if [ -f "$W/lora.bin" ] && [ -f "$W/lora-cuda/metrics.jsonl" ]; then
    half=$((STEPS / 2))
    if "$B/ftrun" "$W/lora.bin" --device cuda --steps "$STEPS" --stop-after $half --quiet --out "$W/lora-resume"         >"$LOG/train-lora-resume.log" 2>&1 &&
        "$B/ftrun" "$W/lora.bin" --device cuda --steps "$STEPS" --resume "$W/lora-resume" --quiet --out "$W/lora-resume"             >>"$LOG/train-lora-resume.log" 2>&1 &&
        cmp -s <(grep -o '"loss": [^,]*' "$W/lora-cuda/metrics.jsonl") <(grep -o '"loss": [^,]*' "$W/lora-resume/metrics.jsonl"); then
        result "tiny-llama-lora: stop at $half, resume on the GPU: same losses" ok
    else
        result "tiny-llama-lora: stop at $half, resume on the GPU: same losses" fail "see train-lora-resume.log"
    fi
fi

# ---- the NaN guard names the same op on the GPU as on the CPU ----
if "$B/ftc" compile "$ROOT/models/tiny-llama-full.fbs" -o "$W/diverge.bin" --target "$ARCH" -s train.lr=1e30     -s train.grad_clip=0 -s train.warmup=0 >"$LOG/compile-diverge.log" 2>&1; then
    for dev in cuda cpu; do
        "$B/ftrun" "$W/diverge.bin" --device $dev --steps 3 --quiet --out "$W/diverge-$dev" >"$LOG/diverge-$dev.log" 2>&1
    done
    gmsg=$(grep -o 'step [0-9]*: .* not finite.*' "$LOG/diverge-cuda.log" | head -1)
    cmsg=$(grep -o 'step [0-9]*: .* not finite.*' "$LOG/diverge-cpu.log" | head -1)
    if [ -n "$gmsg" ] && grep -qE "comes from|holds NaN/Inf" <<<"$gmsg"; then
        result "a diverging GPU run stops and names the culprit" ok "$gmsg"
    else
        result "a diverging GPU run stops and names the culprit" fail "cuda: '$gmsg'"
    fi
    [ "$gmsg" = "$cmsg" ] || note "note  the CPU names another culprit: '$cmsg'"
else
    result "compile the diverging plan" fail "$(tail -1 "$LOG/compile-diverge.log")"
fi

# ---- compute-sanitizer on a short GPU run ----
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
if [ -x "$SAN" ] && [ -f "$W/lora.bin" ]; then
    for tool in memcheck racecheck; do
        if "$SAN" --tool $tool --error-exitcode 3 "$B/ftrun" "$W/lora.bin" --device cuda --steps 2 --quiet \
            --out "$W/san-$tool" >"$LOG/sanitizer-$tool.log" 2>&1; then
            result "compute-sanitizer --tool $tool, 2 steps" ok "$(grep -m1 -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$LOG/sanitizer-$tool.log")"
        else
            result "compute-sanitizer --tool $tool, 2 steps" fail "$(grep -m1 -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$LOG/sanitizer-$tool.log" || tail -1 "$LOG/sanitizer-$tool.log")"
        fi
    done
else
    result "compute-sanitizer" fail "not found at $SAN, or no plan to run"
fi

# ---- against PyTorch (HF transformers + PEFT), bf16: step-1 loss and gradients, 50-step curves ----
# tests/gpu/test_vs_torch.py (tiny and Llama-3-8B-shaped 2-layer models; full and LoRA); its
# table goes to vs_torch.log, its JSON summary to $OUT/vs_torch.json. FTC_GPU_NO_TORCH=1 skips
# it; FTC_GPU_TORCH_ARGS adds arguments (e.g. "--models tiny").
if [ "${FTC_GPU_NO_TORCH:-0}" = 1 ]; then
    note "skip  test_vs_torch (FTC_GPU_NO_TORCH=1)"
elif ! python3 -c "import torch, transformers, peft, safetensors" >/dev/null 2>&1; then
    note "skip  test_vs_torch: python3 lacks torch, transformers, peft or safetensors"
else
    # shellcheck disable=SC2086
    PYTHONUNBUFFERED=1 FTC_GPU_BUILD="$B" FTC_GPU_WORK="$W" python3 "$ROOT/tests/gpu/test_vs_torch.py" \
        --build "$B" --work "$W/vs-torch" --target "$ARCH" ${FTC_GPU_TORCH_ARGS:-} >"$LOG/vs_torch.log" 2>&1
    rc=$?
    sed -n '/^case /,$p' "$LOG/vs_torch.log" | tee -a "$SUMMARY"
    result "ftrun vs PyTorch (test_vs_torch.py)" "$([ $rc = 0 ] && echo ok || echo fail)" \
        "$(grep -m1 '^test_vs_torch: [0-9]' "$LOG/vs_torch.log" || tail -1 "$LOG/vs_torch.log")"
fi

note "$FAILS check(s) failed"
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    cp "$SUMMARY" "$LOG/test_kernels.log" "$OUT/"
    tar -C "$LOG" -czf "$OUT/gpu-logs.tar.gz" .
fi
[ $FAILS = 0 ]
