#!/usr/bin/env bash
# The one script to run on the GPU machine, from anywhere in the repository:
#
#   scripts/gpu_tests.sh [--bench] [--sanitize] [--stages LIST]
#
# Stages (default: install,pytest,cpp-build,cpp-tests; --bench and --sanitize add theirs):
#   cutlass     CUTLASS headers (skipped when third_party/cutlass or $CUTLASS_DIR has them;
#               the device has no network, so carry third_party/cutlass there)
#   install     pip install --no-build-isolation --no-deps . (builds flash_mla._C), import check
#   pytest      python3 -m pytest tests/python (FLASH_MLA_REQUIRE_GPU=1: no silent skips)
#   cpp-build   CMake + Ninja build of the C++ tests in $BUILD_DIR (default build/)
#   cpp-tests   $BUILD_DIR/flashmla_gpu_tests
#   sanitize    compute-sanitizer memcheck and racecheck of flashmla_gpu_tests, filtered by
#               $SANITIZER_FILTER (gtest filter, default: a few small cases)
#   bench       scripts/bench.sh: dense decode, sparse decode, sparse prefill (JSON into the log
#               directory)
# A device command may run 10 minutes at most and the two builds (pip and CMake) compile the
# same kernels, so a first run may need splitting: --stages install,pytest then
# --stages cpp-build,cpp-tests (build outputs stay on a warm machine; ninja rebuilds nothing).
# Every stage runs even if an earlier one failed (a stage whose prerequisite failed is marked
# SKIP); the script exits non-zero if any stage failed. Logs go to $LOG_DIR, default $OUT (the
# device's returned folder) when set, else build-logs/.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

stages="cutlass,install,pytest,cpp-build,cpp-tests"
extra=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bench) extra+=",bench" ;;
    --sanitize) extra+=",sanitize" ;;
    --stages) stages="$2"; shift ;;
    --stages=*) stages="${1#--stages=}" ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
stages+="$extra"

jobs="${MAX_JOBS:-16}"
# A hung kernel must fail its stage, not the whole run: every GPU stage runs under a timeout.
limit="${STAGE_TIMEOUT:-900}"
build_dir="${BUILD_DIR:-build}"  # shared with scripts/test.sh: one CMake build
log_dir="${LOG_DIR:-${OUT:-$root/build-logs}}"
mkdir -p "$log_dir"
python="${PYTHON:-python3}"

declare -a names=() statuses=() seconds=()
declare -A status_of=()

wants() { [[ ",$stages," == *",$1,"* ]]; }

# run_stage NAME COMMAND...: runs COMMAND with its output in $log_dir/NAME.log (also shown),
# records PASS/FAIL and the time taken.
run_stage() {
  local name="$1"; shift
  local start=$SECONDS rc=0
  echo "=== [$name] $*"
  set +e
  "$@" 2>&1 | tee "$log_dir/$name.log"
  rc=${PIPESTATUS[0]}
  set -e
  local status=PASS
  [[ $rc -eq 0 ]] || status="FAIL"
  names+=("$name"); statuses+=("$status"); seconds+=("$((SECONDS - start))")
  status_of[$name]=$status
  [[ $status == PASS ]] || echo "=== [$name] FAILED (exit $rc), log: $log_dir/$name.log"
}

skip_stage() {
  names+=("$1"); statuses+=("SKIP ($2)"); seconds+=(0); status_of[$1]=SKIP
  echo "=== [$1] skipped: $2"
}

passed() { [[ "${status_of[$1]:-}" == PASS ]]; }

have_cutlass() {
  [[ -n "${CUTLASS_DIR:-}" && -d "$CUTLASS_DIR/include/cute" ]] || [[ -d third_party/cutlass/include/cute ]]
}

stage_install() {
  MAX_JOBS="$jobs" "$python" -m pip install --no-build-isolation --no-deps -v . \
    > "$log_dir/pip_install_full.log" 2>&1 || {
    echo "pip install failed; last lines of $log_dir/pip_install_full.log:"
    tail -n 60 "$log_dir/pip_install_full.log"
    return 1
  }
  grep -E "warning|error" "$log_dir/pip_install_full.log" | grep -v "^ *$" | tail -n 30 || true
  (cd /tmp && "$python" -c "import torch, flash_mla; print('flash_mla', flash_mla.__version__, \
'from', flash_mla.__file__, '| torch', torch.__version__, '| GPU', torch.cuda.get_device_name())")
}

stage_cpp_build() {
  # CMAKE_ARGS: extra configure arguments, e.g. -DGTEST_SOURCE_DIR=... where GoogleTest is
  # not installed (the GPU machine has none; carry a source tree).
  local extra=()
  read -r -a extra <<<"${CMAKE_ARGS:-}"
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release ${extra[@]+"${extra[@]}"} &&
    cmake --build "$build_dir" -j "$jobs"
}

stage_sanitize() {
  # A few small cases cover every code path (splits, causal, GQA, empty rows, 512-wide heads,
  # 128-token pages); the whole grid under the sanitizers would take far too long.
  local default_filter='Grid/*bf16_d576_hq16_hkv1_sq2_b*:Grid/*fp16_d512_hq6_hkv3_sq3_causal*'
  default_filter+=':Special/*lengths_below_s_q*:Special/*all_empty*:Special/*page*128*'
  # The seesaw kernel (256 or more rows per KV head, whole tiles): edge lengths, causal.
  default_filter+=':Grid/*bf16_d576_hq128_hkv1_sq2_b*:Grid/*fp16_d512_hq128_hkv1_sq4_causal*'
  # Dense pages in pieces (16, 1, 53), non-paged caches, empty batches, bad values (every
  # kind, split sequences), the device error record.
  default_filter+=':Limits/*page16_*:Limits/*page1_bf16_hq16:Limits/*page53_bf16_hq16_sq3_causal'
  default_filter+=':Limits/*non_paged_50_*:Limits/*batch0*:Cases/DenseDecodeGpuBadValues.*'
  default_filter+=':DenseDecodeGpuDeviceErrors.*:DenseDecodeGpuLimits.*'
  # Sparse decode (every cache format, extra list, sinks, invalid rows, a foreign plan) and
  # the FP8 cache tools.
  default_filter+=':Special/SparseDecodeGpu.*/all_invalid_rows_half:*/sink_mixed_hq128'
  default_filter+=':*/padded_strides_*:*/plan_for_other_lengths:*/two_layers_model1_extra'
  default_filter+=':*/topk_length_zero_for_some:SparseDecodeGpuDeterminism.*'
  default_filter+=':*/few_heads_*:*/mostly_invalid_entries_page1:*/topk_length_zero_for_all'
  default_filter+=':*/many_sequences_a_part_some_empty_*'
  default_filter+=':FormatsAndPages/KVCacheToolsGpu.*/*page53*:KVCacheToolsGpuGraph.*'
  # Sparse prefill: invalid rows, topk_length corners, sinks, padded strides, NaN rows, h_q 128.
  default_filter+=':Special/SparsePrefillGpu.*/all_invalid_rows_half'
  default_filter+=':*/topk_length_zero_negative_past_topk_d512_hq3:*/sink_mixed_hq128_lengths'
  default_filter+=':*/padded_strides_d576_hq3:*/half_the_kv_rows_nan_d512_hq100'
  default_filter+=':Grid/SparsePrefillGpu.*/d576_hq128_sq62*:*/persistent_walk_mixed_lengths'
  local filter="${SANITIZER_FILTER:-$default_filter}" rc=0
  timeout "$limit" compute-sanitizer --tool memcheck --error-exitcode 1 \
    "$build_dir"/flashmla_gpu_tests --gtest_filter="$filter" || rc=1
  # racecheck leaves the sparse-prefill kernel out: it reports two hand-offs of that kernel
  # that are ordered (bar.arrive -> bar.sync; cp.async completing on an mbarrier), and
  # tests/probes/racecheck_prefill_handoffs.cu shows it reports both patterns in a kernel
  # where every access is ordered (docs/testing.md, Sanitizers).
  local race_filter="$filter"
  [[ "$race_filter" == *-* ]] || race_filter+="-"
  race_filter+=":*SparsePrefill*"
  race_filter="${race_filter/-:/-}"
  timeout "$limit" compute-sanitizer --tool racecheck --error-exitcode 1 \
    "$build_dir"/flashmla_gpu_tests --gtest_filter="$race_filter" || rc=1
  return $rc
}

if wants cutlass; then
  if have_cutlass; then skip_stage cutlass "headers present"
  else run_stage cutlass bash scripts/fetch_cutlass.sh; fi
fi

if wants install; then run_stage install stage_install; fi

if wants pytest; then
  if [[ "${status_of[install]:-PASS}" == FAIL ]]; then skip_stage pytest "install failed"
  else
    run_stage pytest timeout "$limit" env FLASH_MLA_REQUIRE_GPU=1 "$python" -m pytest -q -rs --durations=10 \
      -p no:cacheprovider tests/python
  fi
fi

if wants cpp-build; then run_stage cpp-build stage_cpp_build; fi

if wants cpp-tests; then
  if [[ -x "$build_dir"/flashmla_gpu_tests ]]; then
    run_stage cpp-tests timeout "$limit" "$build_dir"/flashmla_gpu_tests
  else skip_stage cpp-tests "$build_dir/flashmla_gpu_tests not built"; fi
fi

if wants sanitize; then
  if [[ -x "$build_dir"/flashmla_gpu_tests ]]; then run_stage sanitize stage_sanitize
  else skip_stage sanitize "$build_dir/flashmla_gpu_tests not built"; fi
fi

if wants bench; then
  if [[ "${status_of[install]:-PASS}" == FAIL ]]; then skip_stage bench "install failed"
  else
    run_stage bench timeout "$limit" bash scripts/bench.sh --json "$log_dir/bench.json"
  fi
fi

echo
echo "=== summary (logs in $log_dir)"
printf '%-10s %-48s %6s\n' stage status seconds
failed=0
for i in "${!names[@]}"; do
  printf '%-10s %-48s %6s\n' "${names[$i]}" "${statuses[$i]}" "${seconds[$i]}"
  [[ "${statuses[$i]}" != FAIL ]] || failed=1
done
exit $failed
