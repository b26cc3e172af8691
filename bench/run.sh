#!/usr/bin/env bash
# run.sh — ftc against HF transformers + PEFT on this machine's GPU, side by side, in one go:
#   bash bench/run.sh [--workloads a,b,c] [--steps N] [--build DIR] [--profile] [--budget S] ...
# For each workload, HF + PEFT (bench/hf_peft.py) and ftc (ftc compile + ftrun) run one after
# the other, each in its own process under a timeout; the table goes to stdout, one JSON line
# per (system, workload) to bench/results/results.jsonl, and where $OUT is set the table,
# this run's JSON lines, the logs and (--profile) ftrun --profile's per-op summary to $OUT.
# `bash bench/run.sh --help` lists the options; bench/README.md says what is measured.
# ftc and ftrun come from --build (default build/), built beforehand, on this machine or on
# one with the same toolkit and carried here; compiled kernels are cached in
# <build>/ftc-cache (FTC_CACHE_DIR), so a cache warmed elsewhere is reused.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export PATH=/usr/local/cuda/bin:$PATH
cd "$ROOT" || exit 1
exec python3 "$ROOT/bench/bench.py" "$@"
