// Invariants of the split-KV decode plan (plan_decode_host), checked from the documented
// meaning of the metadata (DecodePartRange in flashmla/decode_schedule.h) only:
//  - every tile of every sequence is covered exactly once, in order;
//  - every sequence (even an empty one) has >= 1 split, numbered 0..n-1 in part order, and
//    num_splits holds their prefix sums;
//  - the total fits decode_max_total_splits, which sizes the workspace;
//  - the cost (tiles + kDecodeSplitOverheadTiles per split) is balanced over the parts.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "flashmla/decode_schedule.h"

namespace flashmla {
namespace {

int num_tiles(int32_t seqlen) {
  return seqlen > 0 ? (seqlen + kDecodeTileTokens - 1) / kDecodeTileTokens : 0;
}

std::string describe(const std::vector<int32_t>& seqlens, int num_parts) {
  std::ostringstream s;
  s << "batch " << seqlens.size() << ", num_parts " << num_parts << ", seqlens [";
  for (size_t i = 0; i < seqlens.size() && i < 12; ++i) s << (i ? ", " : "") << seqlens[i];
  if (seqlens.size() > 12) s << ", ...";
  s << "]";
  return s.str();
}

struct Plan {
  std::vector<DecodePartRange> parts;
  std::vector<int32_t> num_splits;
};

Plan make_plan(const std::vector<int32_t>& seqlens, int num_parts, int page_block_size = 64) {
  const int batch = static_cast<int>(seqlens.size());
  const DecodeScheduleShape shape{batch, 128, 1, 132};
  Plan plan;
  plan.parts.assign(num_parts, DecodePartRange{-7, -7, -7, -7, -7, -7, {-7, -7}});
  plan.num_splits.assign(batch + 1, -7);
  plan_decode_host(shape, seqlens.data(), page_block_size, num_parts,
                   reinterpret_cast<int32_t*>(plan.parts.data()), plan.num_splits.data());
  return plan;
}

bool is_empty(const DecodePartRange& part) {
  return part.begin_batch > part.end_batch;
}

// Tiles [first, last) of `batch` that `part` covers (requires begin_batch <= batch <= end).
std::pair<int, int> covered_tiles(const DecodePartRange& part, int batch,
                                  const std::vector<int32_t>& seqlens) {
  const int first = batch == part.begin_batch ? part.begin_tile : 0;
  const int last = batch == part.end_batch ? part.end_tile : num_tiles(seqlens[batch]);
  return {first, last};
}

int64_t part_cost(const DecodePartRange& part, const std::vector<int32_t>& seqlens) {
  if (is_empty(part)) return 0;
  int64_t cost = 0;
  for (int b = part.begin_batch; b <= part.end_batch; ++b) {
    const auto [first, last] = covered_tiles(part, b, seqlens);
    cost += (last - first) + kDecodeSplitOverheadTiles;
  }
  return cost;
}

// The planner's target load per part: everything's cost spread evenly, plus one overhead
// for the split a cut adds.
int64_t payload(const std::vector<int32_t>& seqlens, int num_parts) {
  int64_t total = 0;
  for (int32_t len : seqlens) total += num_tiles(len) + kDecodeSplitOverheadTiles;
  return (total + num_parts - 1) / num_parts + kDecodeSplitOverheadTiles;
}

// Coverage, split numbering, prefix sums and ordering; returns the total number of splits.
int check_structure(const Plan& plan, const std::vector<int32_t>& seqlens) {
  const int batch = static_cast<int>(seqlens.size());
  const int num_parts = static_cast<int>(plan.parts.size());

  // Field ranges and ordering: the non-empty parts tile the flattened (batch, tile) list.
  int next_batch = 0, next_tile = 0;  // where the next non-empty part must begin
  for (int p = 0; p < num_parts; ++p) {
    const DecodePartRange& part = plan.parts[p];
    if (is_empty(part)) continue;
    EXPECT_GE(part.begin_batch, 0) << "part " << p;
    EXPECT_LT(part.end_batch, batch) << "part " << p;
    if (part.begin_batch < 0 || part.end_batch >= batch) return -1;
    EXPECT_EQ(part.begin_batch, next_batch) << "part " << p << " does not start where the "
                                            << "previous one ended";
    EXPECT_EQ(part.begin_tile, next_tile) << "part " << p;
    EXPECT_GE(part.end_tile, 0) << "part " << p;
    EXPECT_LE(part.end_tile, num_tiles(seqlens[part.end_batch])) << "part " << p;
    if (part.end_tile < num_tiles(seqlens[part.end_batch])) {
      next_batch = part.end_batch;
      next_tile = part.end_tile;
    } else {
      next_batch = part.end_batch + 1;
      next_tile = 0;
    }
  }
  EXPECT_EQ(next_batch, batch) << "the parts end before the last sequence";

  // Per sequence: the parts that list it, in part order.
  EXPECT_EQ(plan.num_splits[0], 0);
  int total_splits = 0;
  for (int b = 0; b < batch; ++b) {
    const int tiles = num_tiles(seqlens[b]);
    int splits = 0, covered_until = 0;
    for (int p = 0; p < num_parts; ++p) {
      const DecodePartRange& part = plan.parts[p];
      if (is_empty(part) || b < part.begin_batch || b > part.end_batch) continue;
      const auto [first, last] = covered_tiles(part, b, seqlens);
      const int split = b == part.begin_batch ? part.begin_split : 0;
      EXPECT_EQ(split, splits) << "sequence " << b << ", part " << p << ": splits must be "
                               << "numbered 0, 1, ... in part order";
      EXPECT_EQ(first, covered_until) << "sequence " << b << ", part " << p << ": gap/overlap";
      if (tiles > 0) {
        EXPECT_LT(first, last) << "sequence " << b << ", part " << p << ": empty split";
      } else {
        EXPECT_EQ(last, 0) << "sequence " << b << " (no tiles), part " << p;
      }
      covered_until = last;
      ++splits;
    }
    EXPECT_EQ(covered_until, tiles) << "sequence " << b << " not fully covered";
    EXPECT_GE(splits, 1) << "sequence " << b << " has no split: its output is never written";
    if (tiles == 0) {
      EXPECT_EQ(splits, 1) << "sequence " << b << " has no tiles";
    }
    EXPECT_EQ(plan.num_splits[b + 1] - plan.num_splits[b], splits) << "sequence " << b;
    total_splits += splits;
  }
  EXPECT_EQ(plan.num_splits[batch], total_splits);
  return total_splits;
}

// Every part but the last stays within the payload (the last takes whatever remains).
void check_balance(const Plan& plan, const std::vector<int32_t>& seqlens) {
  const int num_parts = static_cast<int>(plan.parts.size());
  const int64_t limit = payload(seqlens, num_parts);
  for (int p = 0; p + 1 < num_parts; ++p) {
    EXPECT_LE(part_cost(plan.parts[p], seqlens), limit) << "part " << p;
  }
}

void check_plan(const std::vector<int32_t>& seqlens, int num_parts, int page_block_size = 64) {
  SCOPED_TRACE(describe(seqlens, num_parts));
  const Plan plan = make_plan(seqlens, num_parts, page_block_size);
  const int total_splits = check_structure(plan, seqlens);
  // Every sequence has one split and each of the num_parts - 1 boundaries cuts at most one.
  EXPECT_LE(total_splits, static_cast<int>(seqlens.size()) + num_parts - 1);
  check_balance(plan, seqlens);
}

// Failures `check` reports, intercepted so that a test can expect them.
int count_failures(const std::function<void()>& check) {
  ::testing::TestPartResultArray results;
  {
    ::testing::ScopedFakeTestPartResultReporter reporter(
        ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &results);
    check();
  }
  return results.size();
}

// ---------------------------------------------------------------------------------------

// The checker itself, on hand-written plans for lengths {130, 0, 64} (3, 0 and 1 tiles).
TEST(DecodeScheduleChecker, CatchesBrokenPlans) {
  const std::vector<int32_t> seqlens = {130, 0, 64};
  const auto failures = [&](std::vector<DecodePartRange> parts, std::vector<int32_t> splits) {
    const Plan plan{std::move(parts), std::move(splits)};
    return count_failures([&] { check_structure(plan, seqlens); });
  };
  // A correct plan: seq 0 split in two, seq 1 (empty) and seq 2 in the second part.
  EXPECT_EQ(failures({{0, 0, 0, 2, 0, {}}, {0, 2, 2, 1, 1, {}}}, {0, 2, 3, 4}), 0);
  EXPECT_EQ(failures({{0, 0, 2, 1, 0, {}}, {3, 0, 2, 0, 0, {}}}, {0, 1, 2, 3}), 0);
  // Tile 2 of seq 0 never covered.
  EXPECT_GT(failures({{0, 0, 0, 2, 0, {}}, {1, 0, 2, 1, 0, {}}}, {0, 1, 2, 3}), 0);
  // Tile 1 of seq 0 covered twice.
  EXPECT_GT(failures({{0, 0, 0, 2, 0, {}}, {0, 1, 2, 1, 1, {}}}, {0, 2, 3, 4}), 0);
  // The second split of seq 0 numbered 0.
  EXPECT_GT(failures({{0, 0, 0, 2, 0, {}}, {0, 2, 2, 1, 0, {}}}, {0, 2, 3, 4}), 0);
  // The empty seq 1 gets no split.
  EXPECT_GT(failures({{0, 0, 0, 3, 0, {}}, {2, 0, 2, 1, 0, {}}}, {0, 1, 1, 2}), 0);
  // Wrong prefix sums.
  EXPECT_GT(failures({{0, 0, 2, 1, 0, {}}, {3, 0, 2, 0, 0, {}}}, {0, 1, 2, 4}), 0);
  // An empty split of a non-empty sequence.
  EXPECT_GT(failures({{0, 0, 0, 3, 0, {}}, {0, 3, 2, 1, 1, {}}}, {0, 2, 3, 4}), 0);
}

TEST(DecodeSchedule, SingleSequenceSinglePart) {
  check_plan({1000}, 1);
  const Plan plan = make_plan({1000}, 1);
  EXPECT_EQ(plan.parts[0].begin_batch, 0);
  EXPECT_EQ(plan.parts[0].begin_tile, 0);
  EXPECT_EQ(plan.parts[0].end_batch, 0);
  EXPECT_EQ(plan.parts[0].end_tile, num_tiles(1000));
  EXPECT_EQ(plan.parts[0].begin_split, 0);
  EXPECT_EQ(plan.num_splits, (std::vector<int32_t>{0, 1}));
}

TEST(DecodeSchedule, EmptySequencesStillGetOneSplit) {
  check_plan({0}, 1);
  check_plan({0}, 132);
  check_plan({0, 0, 0, 0, 0}, 3);
  check_plan(std::vector<int32_t>(200, 0), 132);
  check_plan({0, 100000, 0}, 16);
  check_plan({100000, 0, 0, 0}, 64);
}

TEST(DecodeSchedule, TileBoundaries) {
  for (int parts : {1, 2, 3, 7, 132}) {
    check_plan({1, 63, 64, 65, 127, 128, 129}, parts);
  }
}

TEST(DecodeSchedule, OneLongSequenceOverManyParts) {
  for (int parts = 1; parts <= 132; parts += 7) check_plan({200000}, parts);
  check_plan({64 * 132}, 132);
  check_plan({64 * 3}, 132);  // fewer tiles than parts
}

TEST(DecodeSchedule, OneHugeAndManyTiny) {
  std::vector<int32_t> seqlens(150, 3);
  seqlens[77] = 200000;
  for (int parts : {1, 8, 33, 66, 132}) check_plan(seqlens, parts);
  seqlens.assign(150, 0);
  seqlens[0] = 150000;
  for (int parts : {2, 132}) check_plan(seqlens, parts);
}

TEST(DecodeSchedule, PageSizeDoesNotMatter) {
  for (int page : {64, 128, 256}) check_plan({5, 6000, 129, 0, 77777}, 20, page);
}

TEST(DecodeSchedule, RandomCases) {
  std::mt19937 rng(1234);
  for (int iteration = 0; iteration < 400; ++iteration) {
    const int batch = std::uniform_int_distribution<int>(1, 200)(rng);
    const int num_parts = std::uniform_int_distribution<int>(1, 132)(rng);
    const int max_len = std::vector<int>{0, 1, 64, 1000, 20000, 200000}[iteration % 6];
    std::uniform_int_distribution<int> length(0, max_len);
    std::vector<int32_t> seqlens(batch);
    for (auto& len : seqlens) len = length(rng);
    check_plan(seqlens, num_parts);
    if (::testing::Test::HasFailure()) return;  // one failing case is enough to read
  }
}

// More parts than sequences: the capacity search lets every part take its share instead of
// leaving a third of them idle (FlashMLA's capacity, mean + one overhead, gives 3 tiles a part
// here and 22 busy parts).
TEST(DecodeSchedule, FewSequencesSpreadOverTheParts) {
  const auto busy_parts_and_max_cost = [](const Plan& plan, const std::vector<int32_t>& seqlens) {
    int busy = 0;
    int64_t max_cost = 0;
    for (const DecodePartRange& part : plan.parts) {
      busy += !is_empty(part);
      max_cost = std::max(max_cost, part_cost(part, seqlens));
    }
    return std::pair<int, int64_t>{busy, max_cost};
  };
  const std::vector<int32_t> two = {2048, 2048};  // 32 tiles each
  check_plan(two, 33);
  EXPECT_EQ(busy_parts_and_max_cost(make_plan(two, 33), two),
            (std::pair<int, int64_t>{32, 2 + kDecodeSplitOverheadTiles}));
  const std::vector<int32_t> four(4, 2048);
  check_plan(four, 66);
  EXPECT_EQ(busy_parts_and_max_cost(make_plan(four, 66), four),
            (std::pair<int, int64_t>{64, 2 + kDecodeSplitOverheadTiles}));
}

// The smallest achievable largest part cost over every way to cut the flattened tile list
// into `num_parts` contiguous ranges (non-empty sequences only): a brute-force oracle.
int64_t best_max_cost(const std::vector<int32_t>& seqlens, int num_parts) {
  std::vector<int> seq_begin = {0};  // flattened tile index where each sequence starts
  for (int32_t len : seqlens) seq_begin.push_back(seq_begin.back() + num_tiles(len));
  const int total = seq_begin.back();
  const auto range_cost = [&](int first, int last) -> int64_t {
    if (first == last) return 0;
    int64_t cost = last - first;
    for (size_t s = 0; s + 1 < seq_begin.size(); ++s) {
      if (seq_begin[s] < last && first < seq_begin[s + 1]) cost += kDecodeSplitOverheadTiles;
    }
    return cost;
  };
  // Best largest cost covering tiles [first, total) with `parts` ranges.
  std::function<int64_t(int, int)> best = [&](int first, int parts) -> int64_t {
    if (parts == 1) return range_cost(first, total);
    int64_t result = INT64_MAX;
    for (int cut = first; cut <= total; ++cut) {
      result = std::min(result, std::max(range_cost(first, cut), best(cut, parts - 1)));
    }
    return result;
  };
  return best(0, num_parts);
}

TEST(DecodeSchedule, OptimalWhenPartsOutnumberSequences) {
  // Small enough for the oracle; the lengths span 1..9 tiles a sequence.
  std::mt19937 rng(7);
  for (int iteration = 0; iteration < 300; ++iteration) {
    const int batch = std::uniform_int_distribution<int>(1, 3)(rng);
    const int num_parts = std::uniform_int_distribution<int>(batch + 1, 6)(rng);
    std::vector<int32_t> seqlens(batch);
    for (auto& len : seqlens) len = std::uniform_int_distribution<int>(1, 9 * 64)(rng);
    SCOPED_TRACE(describe(seqlens, num_parts));
    check_plan(seqlens, num_parts);
    const Plan plan = make_plan(seqlens, num_parts);
    int64_t max_cost = 0;
    for (const DecodePartRange& part : plan.parts) {
      max_cost = std::max(max_cost, part_cost(part, seqlens));
    }
    // The planner keeps at least 2 tiles a part (one a part doubles the combine's splits).
    const int64_t best = best_max_cost(seqlens, num_parts);
    if (best >= 2 + kDecodeSplitOverheadTiles) {
      EXPECT_EQ(max_cost, best);
    } else {
      EXPECT_LE(max_cost, 2 + kDecodeSplitOverheadTiles);
    }
    if (::testing::Test::HasFailure()) return;
  }
}

// Lengths like the benchmark anchors: max(int(normal(s_k, s_k / 2)), s_q), b = 128.
std::vector<int32_t> anchor_seqlens(int batch, int s_k, int s_q, std::mt19937& rng) {
  std::normal_distribution<double> normal(s_k, s_k / 2.0);
  std::vector<int32_t> seqlens(batch);
  for (auto& len : seqlens) len = std::max(static_cast<int32_t>(normal(rng)), int32_t(s_q));
  return seqlens;
}

TEST(DecodeSchedule, AnchorLikeVarlenLastPartWithinTwicePayload) {
  std::mt19937 rng(0);
  for (int s_k : {4096, 8192, 16384, 32768}) {
    for (int batch : {1, 2, 16, 64, 128}) {
      for (int num_parts : {1, 2, 66, 132}) {
        const std::vector<int32_t> seqlens = anchor_seqlens(batch, s_k, 2, rng);
        check_plan(seqlens, num_parts);
        const Plan plan = make_plan(seqlens, num_parts);
        EXPECT_LE(part_cost(plan.parts.back(), seqlens), 2 * payload(seqlens, num_parts))
            << describe(seqlens, num_parts);
      }
    }
  }
}

// With num_parts from decode_num_parts (explicit SM count: no GPU needed), the total number
// of splits must fit the bound that sizes the workspace.
TEST(DecodeSchedule, TotalSplitsWithinWorkspaceBound) {
  std::mt19937 rng(99);
  for (int num_sms : {1, 2, 78, 114, 132}) {
    for (int rows : {1, 16, 64, 128, 256, 512}) {
      for (int heads_kv : {1, 2}) {
        for (int batch : {1, 3, 64, 200}) {
          const DecodeScheduleShape shape{batch, rows, heads_kv, num_sms};
          const int num_parts = decode_num_parts(shape);
          ASSERT_GE(num_parts, 1);
          const std::vector<int32_t> seqlens = anchor_seqlens(batch, 8192, 1, rng);
          SCOPED_TRACE(describe(seqlens, num_parts));
          const Plan plan = make_plan(seqlens, num_parts);
          const int total_splits = check_structure(plan, seqlens);
          EXPECT_LE(total_splits, decode_max_total_splits(shape));
          EXPECT_LE(plan.num_splits[batch], decode_max_total_splits(shape));
        }
      }
    }
  }
}

TEST(DecodeSchedule, NumPartsWithinTheSms) {
  // Never zero parts, and never more parts per (m-block, KV head) than there are SMs.
  for (int num_sms : {1, 7, 132}) {
    for (int rows : {1, 64, 65, 512, 4096}) {
      for (int heads_kv : {1, 2, 8}) {
        const int parts = decode_num_parts(DecodeScheduleShape{16, rows, heads_kv, num_sms});
        EXPECT_GE(parts, 1) << num_sms << " " << rows << " " << heads_kv;
        EXPECT_LE(parts, num_sms) << num_sms << " " << rows << " " << heads_kv;
      }
    }
  }
}

}  // namespace
}  // namespace flashmla
