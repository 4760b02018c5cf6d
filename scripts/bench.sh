#!/usr/bin/env bash
# Runs the benchmarks, dense decode (bench/bench_dense_decode.py), sparse decode
# (bench/bench_sparse_decode.py) and sparse prefill (bench/bench_sparse_prefill.py), and prints a
# short summary table of all of them last. Installs flash_mla first if it does not import (or
# always with --install).
#   --only dense|sparse|prefill   run one of the three (sparse = sparse decode)
#   --json PATH           dense results to PATH, sparse decode results to PATH less .json plus
#                         _sparse.json, sparse prefill results to PATH less .json plus
#                         _sparse_prefill.json (default: bench/results/{dense_decode,
#                         sparse_decode,sparse_prefill}_<device>.json)
# Other arguments go to every benchmark (--s-k, --h-q, --warmup, --reps, --check, --no-check;
# the sparse ones run only their rows matching --s-k / --h-q, the prefill one reading --s-k as
# s_kv), e.g.
#   scripts/bench.sh --s-k 4096 8192 --h-q 128 --json /tmp/bench.json
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"

install=0
only=""
json=""
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --install) install=1 ;;
    --only) only="${2:-}"; shift ;;
    --only=*) only="${1#--only=}" ;;
    --json) json="${2:-}"; shift ;;
    --json=*) json="${1#--json=}" ;;
    *) args+=("$1") ;;
  esac
  shift
done
if [[ -n "$only" && "$only" != dense && "$only" != sparse && "$only" != prefill ]]; then
  echo "bench.sh: --only takes dense, sparse or prefill, got '$only'" >&2
  exit 2
fi

if [[ $install -eq 1 ]] || ! (cd /tmp && "$python" -c "import flash_mla") 2>/dev/null; then
  if [[ -z "${CUTLASS_DIR:-}" && ! -d third_party/cutlass/include/cute ]]; then
    bash scripts/fetch_cutlass.sh
  fi
  echo "installing flash_mla (log: build-logs/pip_install_bench.log)"
  mkdir -p build-logs
  MAX_JOBS="${MAX_JOBS:-16}" "$python" -m pip install --no-build-isolation --no-deps -v . \
    > build-logs/pip_install_bench.log 2>&1 || { tail -n 60 build-logs/pip_install_bench.log; exit 1; }
fi

if [[ -n "$json" ]]; then
  dense_json="$json"
  sparse_json="${json%.json}_sparse.json"
  prefill_json="${json%.json}_sparse_prefill.json"
else
  device="$(cd /tmp && "$python" -c 'import re, torch
print(re.sub(r"[^A-Za-z0-9]+", "_", torch.cuda.get_device_name()).strip("_"))')"
  dense_json="bench/results/dense_decode_${device}.json"
  sparse_json="bench/results/sparse_decode_${device}.json"
  prefill_json="bench/results/sparse_prefill_${device}.json"
fi

status=0
written=()
run_bench() {  # run_bench SCRIPT JSON: runs one benchmark; a failure is reported at the end
  local script="$1" out="$2"
  rm -f "$out"  # the summary shows this run's results only
  echo "=== $script"
  if "$python" "$script" --json "$out" ${args[@]+"${args[@]}"}; then
    written+=("$out")
  else
    local rc=$?
    echo "bench.sh: $script failed (exit $rc)" >&2
    status=$rc
  fi
}
if [[ -z "$only" || "$only" == dense ]]; then run_bench bench/bench_dense_decode.py "$dense_json"; fi
if [[ -z "$only" || "$only" == sparse ]]; then
  run_bench bench/bench_sparse_decode.py "$sparse_json"
fi
if [[ -z "$only" || "$only" == prefill ]]; then
  run_bench bench/bench_sparse_prefill.py "$prefill_json"
fi

if ((${#written[@]})); then
  "$python" bench/summary.py "${written[@]}"
fi
exit "$status"
