#!/usr/bin/env bash
# GPU check: how fast DTQL updates and acts on this machine, and what it scores in the rest of an 8-minute budget.
#
#   bash benchmarks/gpu_check.sh            # on a CUDA machine: at most 8 minutes, no network needed
#   bash benchmarks/gpu_check.sh --smoke    # any machine (CPU too): tiny sizes, under a minute (CI runs this)
#
# Extra arguments go to benchmarks/gpu_check.py (--out FILE, --budget-s S, --device D, --threads N, --compile).
# It regenerates the embedded default dataset in a temporary folder, measures update steps/s (eager, compiled, CUDA
# graphs) at batch 256 and 2048 and action latency, trains DTQL for the rest of the budget and writes one JSON
# (default benchmarks/results/gpu_check.json; with --smoke, gpu_check_smoke.json beside it), whose fields
# docs/benchmarks.md ("GPU check") describes. Python: $PYTHON, else the python on PATH (the package installed, or
# this checkout, which is put on PYTHONPATH).
set -euo pipefail
cd "$(dirname "$0")/.."

export HF_HUB_OFFLINE=1                      # no network: nothing may try the Hugging Face hub
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export MPLBACKEND=Agg
PYTHON="${PYTHON:-python}"

# The Python side budgets itself (450 s, smoke 40 s) and writes its JSON after every phase; this hard limit only
# ends a run that overshoots (8 minutes, smoke 2), SIGTERM first, then SIGKILL 15 s later.
LIMIT_S=480
for arg in "$@"; do
    if [[ "$arg" == "--smoke" ]]; then LIMIT_S=120; fi
done
exec timeout --signal=TERM --kill-after=15 "$LIMIT_S" "$PYTHON" benchmarks/gpu_check.py "$@"
