#!/usr/bin/env bash
# The test command: builds everything (every kernel for sm_90a) and runs the tests that need no
# GPU; on a machine with an NVIDIA GPU it then runs the GPU tests too (scripts/gpu_tests.sh:
# the flash_mla package, the C++ API on the GPU, pytest). CI runs this through .ci/run.
#   scripts/test.sh            Environment: BUILD_DIR (build), JOBS (nproc), CMAKE_ARGS,
#                              FLASHMLA_SKIP_GPU_TESTS=1 to stop after the CPU tests.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
build_dir="${BUILD_DIR:-build}"
jobs="${JOBS:-$(nproc)}"

bash scripts/fetch_cutlass.sh
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
extra=()
read -r -a extra <<<"${CMAKE_ARGS:-}"
cmake -S . -B "$build_dir" ${generator[@]+"${generator[@]}"} -DCMAKE_BUILD_TYPE=Release \
  ${extra[@]+"${extra[@]}"}
cmake --build "$build_dir" -j "$jobs"
# --no-tests=error: a build that registers no tests fails instead of passing silently.
ctest --test-dir "$build_dir" --output-on-failure --no-tests=error -j "$jobs"

if [[ "${FLASHMLA_SKIP_GPU_TESTS:-0}" != 1 ]] && command -v nvidia-smi >/dev/null &&
  nvidia-smi -L >/dev/null 2>&1; then
  bash scripts/gpu_tests.sh
else
  echo "no GPU here: GPU tests skipped (run scripts/gpu_tests.sh on a Hopper machine)"
fi
