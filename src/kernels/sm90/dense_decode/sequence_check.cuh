// Checks the values of a sequence that live on the GPU (its length and the block-table entries
// of its pages) so that a bad one never yields a plausible answer: the caller marks the
// sequence's outputs NaN, and the first error of the device is recorded for the host.
#pragma once

#include <cstdint>

#include "api/device_error_record.h"
#include "kernels/sm90/dense_decode/kernel_params.h"
#include "kernels/sm90/dense_decode/work_range.cuh"

namespace flashmla::sm90 {

// Called by `num_threads` threads (thread = 0..num_threads-1) for sequence `batch`; returns
// whether this thread found something wrong (and records it). Every CTA serving the sequence
// checks its length, and the table entries of the pages under its planned tiles (before the
// causal cut): the parts of a sequence's splits cover all its pages, so for every m-block some
// CTA sees a bad entry.
__device__ __forceinline__ bool check_sequence_values(const DenseDecodeKernelParams& p,
                                                      const BatchTiles& tiles, int batch,
                                                      int thread, int num_threads) {
  const int64_t capacity = int64_t(p.max_blocks_per_seq) * p.page_block_size;
  if (tiles.length < 0 || tiles.length > capacity) {
    if (thread == 0) {
      record_device_error(p.error_record,
                          tiles.length < 0 ? DeviceErrorKind::kNegativeSeqlen
                                           : DeviceErrorKind::kSeqlenBeyondCapacity,
                          DeviceErrorOperation::kDenseDecode, batch, -1, tiles.length,
                          tiles.length < 0 ? 0 : capacity);
    }
    // The length is the error; the table columns it would reach may hold anything, so checking
    // them would only report garbage (and race this record).
    return true;
  }
  if (p.block_table == nullptr) return false;  // non-paged: sequence i is page i
  const int64_t token_begin = int64_t(tiles.planned_first) * kDecodeTileTokens;
  const int64_t token_end =
      min(int64_t(tiles.planned_last) * kDecodeTileTokens, int64_t(tiles.seqlen));
  if (token_end <= token_begin) return false;
  const int page_begin = static_cast<int>(token_begin / p.page_block_size);
  const int page_end = static_cast<int>((token_end - 1) / p.page_block_size + 1);
  const int32_t* row = p.block_table + batch * p.block_table_batch_stride;
  bool bad = false;
  for (int page = page_begin + thread; page < page_end; page += num_threads) {
    const int32_t block = row[page];
    if (block < 0 || block >= p.num_blocks) {
      bad = true;
      record_device_error(p.error_record, DeviceErrorKind::kBlockTableEntryOutOfRange,
                          DeviceErrorOperation::kDenseDecode, batch, page, block, p.num_blocks);
    }
  }
  return bad;
}

}  // namespace flashmla::sm90
