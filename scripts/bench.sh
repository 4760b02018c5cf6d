#!/usr/bin/env bash
# Runs the dense-decode benchmark (bench/bench_dense_decode.py), installing flash_mla first if it
# does not import (or always with --install). Other arguments go to the benchmark, e.g.
#   scripts/bench.sh --s-k 4096 8192 --h-q 128 --json /tmp/bench.json
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"

install=0
args=()
for arg in "$@"; do
  if [[ "$arg" == --install ]]; then install=1; else args+=("$arg"); fi
done

if [[ $install -eq 1 ]] || ! (cd /tmp && "$python" -c "import flash_mla") 2>/dev/null; then
  if [[ -z "${CUTLASS_DIR:-}" && ! -d third_party/cutlass/include/cute ]]; then
    bash scripts/fetch_cutlass.sh
  fi
  echo "installing flash_mla (log: build-logs/pip_install_bench.log)"
  mkdir -p build-logs
  MAX_JOBS="${MAX_JOBS:-16}" "$python" -m pip install --no-build-isolation --no-deps -v . \
    > build-logs/pip_install_bench.log 2>&1 || { tail -n 60 build-logs/pip_install_bench.log; exit 1; }
fi
exec "$python" bench/bench_dense_decode.py ${args[@]+"${args[@]}"}
