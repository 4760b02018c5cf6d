// The split-KV planning algorithm, shared by the GPU planner kernel and the host version.
//
// Greedy walk over the flattened (sequence, tile) list: every part gets about the same cost,
// where a split costs its tiles plus kDecodeSplitOverheadTiles. A sequence that does not fit
// in the rest of a part is cut there and continues in the next part as a new split. Every
// sequence, even an empty one, gets at least one split so that its output is written.
//
// The capacity of a part starts as FlashMLA's: the mean cost plus one overhead. With more
// parts than sequences that is loose (sparse h_q 128, top-k 2048, 33 parts: 5 tiles a part at
// b 4 where 4 fit, 9 at b 8 where 8 fit, 18 at b 16 where 16 fit), so there the smallest
// capacity whose walk fits in num_parts is searched (a few walks; monotone in the capacity),
// down to 2 tiles a part (-4 to -8% at b 4 to 16: docs/perf-notes.md).
#pragma once

#include <cstdint>

#include "flashmla/decode_schedule.h"

#if defined(__CUDACC__)
#define FLASHMLA_HOST_DEVICE __host__ __device__
#else
#define FLASHMLA_HOST_DEVICE
#endif

namespace flashmla::detail {

FLASHMLA_HOST_DEVICE inline int decode_num_tiles(int32_t seqlen) {
  // Negative lengths are treated as empty; the kernels clamp them the same way.
  // In 64 bits: a (wrong) length near INT32_MAX must not wrap.
  return seqlen > 0
             ? static_cast<int>((int64_t(seqlen) + kDecodeTileTokens - 1) / kDecodeTileTokens)
             : 0;
}

// Tiles of sparse sequence i: its main and extra index lists are tiled separately.
FLASHMLA_HOST_DEVICE inline int sparse_decode_num_tiles(int i, int topk, const int32_t* topk_length,
                                                        int extra_topk,
                                                        const int32_t* extra_topk_length) {
  const auto clamp_len = [](int32_t len, int max) { return len < 0 ? 0 : (len > max ? max : len); };
  const int main_len = topk_length ? clamp_len(topk_length[i], topk) : topk;
  const int extra_len =
      extra_topk_length ? clamp_len(extra_topk_length[i], extra_topk) : extra_topk;
  return decode_num_tiles(main_len) + decode_num_tiles(extra_len);
}

// Parts the walk needs with capacity `payload` per part, counted up to `limit` + 1: the walk of
// plan_decode_core below without its outputs (the same cutting rule; the brute-force test of
// tests/cpp/test_schedule.cpp fails if the two disagree).
template <class TilesOf>
FLASHMLA_HOST_DEVICE inline int decode_parts_needed(int batch, TilesOf tiles_of, int64_t payload,
                                                    int limit) {
  constexpr int overhead = kDecodeSplitOverheadTiles;
  int parts_used = 1;
  int64_t remaining = payload;
  for (int i = 0; i < batch; ++i) {
    int64_t rest = tiles_of(i);
    while (rest + overhead > remaining) {
      // Cut here (if a tile fits) and open the next part.
      if (remaining - overhead > 0) rest -= remaining - overhead;
      if (++parts_used > limit) return parts_used;
      remaining = payload;
    }
    remaining -= rest + overhead;
  }
  return parts_used;
}

// Writes num_parts ranges and batch + 1 split prefix sums. Single-threaded: O(batch + parts),
// a few times over when there are more parts than sequences. `tiles_of(i)` is the number of
// KV tiles of sequence i.
template <class TilesOf>
FLASHMLA_HOST_DEVICE inline void plan_decode_core(int batch, TilesOf tiles_of, int num_parts,
                                                  DecodePartRange* parts, int32_t* num_splits) {
  constexpr int overhead = kDecodeSplitOverheadTiles;
  int64_t total_cost = 0;
  for (int i = 0; i < batch; ++i) total_cost += tiles_of(i) + overhead;
  const int64_t mean_cost = (total_cost + num_parts - 1) / num_parts;
  int64_t payload = mean_cost + overhead;
  if (num_parts > batch) {
    // Binary search over [max(mean, overhead + 2), mean + overhead]; the upper end keeps the
    // walk below (whose last part takes any rest) when nothing smaller fits. At least 2 tiles
    // a part: one tile a part doubles the splits, and the combine's time grows by more than
    // a tile saves (measured: b 1 and h_q 64 b 2).
    int64_t low = mean_cost > overhead + 2 ? mean_cost : overhead + 2;
    while (low < payload) {
      const int64_t mid = low + (payload - low) / 2;
      if (decode_parts_needed(batch, tiles_of, mid, num_parts) <= num_parts) {
        payload = mid;
      } else {
        low = mid + 1;
      }
    }
  }

  int batch_idx = 0;  // next sequence to place
  int tile_idx = 0;   // next tile of that sequence
  int split_idx = 0;  // splits of that sequence placed so far
  num_splits[0] = 0;
  for (int part = 0; part < num_parts; ++part) {
    DecodePartRange range{};
    range.begin_batch = batch_idx;
    range.begin_tile = tile_idx;
    range.begin_split = split_idx;
    range.end_batch = batch_idx - 1;  // empty until something is placed
    range.end_tile = 0;
    range.end_is_last = 0;
    range.reserved[0] = range.reserved[1] = 0;
    // The last part takes whatever remains, so the plan always covers everything.
    int64_t remaining = (part == num_parts - 1) ? INT64_MAX / 2 : payload;
    while (batch_idx < batch) {
      const int num_tiles = tiles_of(batch_idx);
      const int64_t rest_cost = (num_tiles - tile_idx) + overhead;
      if (rest_cost <= remaining) {
        // The rest of this sequence fits: its last split ends here.
        remaining -= rest_cost;
        range.end_batch = batch_idx;
        range.end_tile = num_tiles;
        range.end_is_last = 1;
        num_splits[batch_idx + 1] = split_idx + 1;
        ++batch_idx;
        tile_idx = 0;
        split_idx = 0;
        continue;
      }
      const int64_t tiles_taken = remaining - overhead;
      if (tiles_taken > 0) {
        // Cut the sequence: this part computes one split of it.
        tile_idx += static_cast<int>(tiles_taken);
        range.end_batch = batch_idx;
        range.end_tile = tile_idx;
        range.end_is_last = 0;
        ++split_idx;
      }
      break;
    }
    parts[part] = range;
  }
  for (int i = 0; i < batch; ++i) num_splits[i + 1] += num_splits[i];
}

}  // namespace flashmla::detail
