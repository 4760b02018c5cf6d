// Invariants of the sparse split-KV plan (plan_sparse_decode_host), checked from the documented
// meaning of the metadata (DecodePartRange in flashmla/decode_schedule.h) only. The tiles of
// sequence i are those of its main list, ceil(min(topk, topk_length[i]) / 64), plus those of its
// extra list; a negative length counts as 0. The checks:
//  - every tile of every sequence is covered exactly once, in order;
//  - every sequence (even one with no tiles) has >= 1 split, numbered 0..n-1 in part order,
//    and num_splits holds their prefix sums;
//  - end_is_last is set on a non-empty part exactly when its split of end_batch is that
//    sequence's last one;
//  - the total fits sparse_decode_max_total_splits, which sizes the workspace;
//  - the cost (tiles + kDecodeSplitOverheadTiles per split) is balanced over the parts.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "flashmla/common.h"
#include "flashmla/decode_schedule.h"

namespace flashmla {
namespace {

// The lengths of a plan's problem; empty length vectors mean "no topk_length pointer".
struct Lengths {
  int topk = 0;
  std::vector<int32_t> topk_length;
  int extra_topk = 0;
  std::vector<int32_t> extra_topk_length;
  int batch = 0;
};

int tiles_of_list(int topk, const std::vector<int32_t>& lengths, int i) {
  const int len = lengths.empty() ? topk : std::clamp<int32_t>(lengths[i], 0, topk);
  return (len + kDecodeTileTokens - 1) / kDecodeTileTokens;
}

std::vector<int> tiles_per_sequence(const Lengths& l) {
  std::vector<int> tiles(l.batch);
  for (int i = 0; i < l.batch; ++i) {
    tiles[i] = tiles_of_list(l.topk, l.topk_length, i) +
               tiles_of_list(l.extra_topk, l.extra_topk_length, i);
  }
  return tiles;
}

std::string describe(const Lengths& l, int num_parts) {
  std::ostringstream s;
  s << "batch " << l.batch << ", num_parts " << num_parts << ", topk " << l.topk << ", extra_topk "
    << l.extra_topk << ", tiles [";
  const std::vector<int> tiles = tiles_per_sequence(l);
  for (size_t i = 0; i < tiles.size() && i < 12; ++i) s << (i ? ", " : "") << tiles[i];
  if (tiles.size() > 12) s << ", ...";
  s << "]";
  return s.str();
}

struct Plan {
  std::vector<DecodePartRange> parts;
  std::vector<int32_t> num_splits;
};

Plan make_plan(const Lengths& l, int num_parts, int seqlen_q = 1, int num_heads_q = 64) {
  const SparseDecodeScheduleShape shape{l.batch, seqlen_q, num_heads_q, 132};
  Plan plan;
  plan.parts.assign(num_parts, DecodePartRange{-7, -7, -7, -7, -7, -7, {-7, -7}});
  plan.num_splits.assign(l.batch + 1, -7);
  plan_sparse_decode_host(
      shape, l.topk, l.topk_length.empty() ? nullptr : l.topk_length.data(), l.extra_topk,
      l.extra_topk_length.empty() ? nullptr : l.extra_topk_length.data(), num_parts,
      reinterpret_cast<int32_t*>(plan.parts.data()), plan.num_splits.data());
  return plan;
}

bool is_empty(const DecodePartRange& part) {
  return part.begin_batch > part.end_batch;
}

// Tiles [first, last) of `batch` that `part` covers (requires begin_batch <= batch <= end).
std::pair<int, int> covered_tiles(const DecodePartRange& part, int batch,
                                  const std::vector<int>& tiles) {
  const int first = batch == part.begin_batch ? part.begin_tile : 0;
  const int last = batch == part.end_batch ? part.end_tile : tiles[batch];
  return {first, last};
}

int64_t part_cost(const DecodePartRange& part, const std::vector<int>& tiles) {
  if (is_empty(part)) return 0;
  int64_t cost = 0;
  for (int b = part.begin_batch; b <= part.end_batch; ++b) {
    const auto [first, last] = covered_tiles(part, b, tiles);
    cost += (last - first) + kDecodeSplitOverheadTiles;
  }
  return cost;
}

// Coverage, split numbering, prefix sums, end_is_last; returns the total number of splits.
int check_structure(const Plan& plan, const std::vector<int>& tiles) {
  const int batch = static_cast<int>(tiles.size());
  const int num_parts = static_cast<int>(plan.parts.size());

  // The non-empty parts tile the flattened (batch, tile) list in order.
  int next_batch = 0, next_tile = 0;
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
    EXPECT_LE(part.end_tile, tiles[part.end_batch]) << "part " << p;
    if (part.end_tile < tiles[part.end_batch]) {
      next_batch = part.end_batch, next_tile = part.end_tile;
    } else {
      next_batch = part.end_batch + 1, next_tile = 0;
    }
  }
  EXPECT_EQ(next_batch, batch) << "the parts end before the last sequence";

  EXPECT_EQ(plan.num_splits[0], 0);
  int total_splits = 0;
  for (int b = 0; b < batch; ++b) {
    int splits = 0, covered_until = 0, last_part = -1;
    for (int p = 0; p < num_parts; ++p) {
      const DecodePartRange& part = plan.parts[p];
      if (is_empty(part) || b < part.begin_batch || b > part.end_batch) continue;
      const auto [first, last] = covered_tiles(part, b, tiles);
      const int split = b == part.begin_batch ? part.begin_split : 0;
      EXPECT_EQ(split, splits) << "sequence " << b << ", part " << p << ": splits must be "
                               << "numbered 0, 1, ... in part order";
      EXPECT_EQ(first, covered_until) << "sequence " << b << ", part " << p << ": gap/overlap";
      if (tiles[b] > 0) {
        EXPECT_LT(first, last) << "sequence " << b << ", part " << p << ": empty split";
      } else {
        EXPECT_EQ(last, 0) << "sequence " << b << " (no tiles), part " << p;
      }
      covered_until = last;
      last_part = p;
      ++splits;
    }
    EXPECT_EQ(covered_until, tiles[b]) << "sequence " << b << " not fully covered";
    EXPECT_GE(splits, 1) << "sequence " << b << " has no split: its output is never written";
    if (tiles[b] == 0) EXPECT_EQ(splits, 1) << "sequence " << b << " has no tiles";
    EXPECT_EQ(plan.num_splits[b + 1] - plan.num_splits[b], splits) << "sequence " << b;
    // The part computing the last split of b, if b is its end_batch, must say so; any other
    // part ending at b must not (its kernel would otherwise run past its tiles).
    for (int p = 0; p < num_parts; ++p) {
      const DecodePartRange& part = plan.parts[p];
      if (is_empty(part) || part.end_batch != b) continue;
      EXPECT_EQ(part.end_is_last, p == last_part ? 1 : 0)
          << "part " << p << " ends sequence " << b << " whose last split is in part " << last_part;
    }
    total_splits += splits;
  }
  EXPECT_EQ(plan.num_splits[batch], total_splits);
  return total_splits;
}

// Every part but the last stays within the payload (the last takes whatever remains).
void check_balance(const Plan& plan, const std::vector<int>& tiles) {
  const int num_parts = static_cast<int>(plan.parts.size());
  int64_t total = 0;
  for (int t : tiles) total += t + kDecodeSplitOverheadTiles;
  const int64_t payload = (total + num_parts - 1) / num_parts + kDecodeSplitOverheadTiles;
  for (int p = 0; p + 1 < num_parts; ++p) {
    EXPECT_LE(part_cost(plan.parts[p], tiles), payload) << "part " << p;
  }
}

void check_plan(const Lengths& l, int num_parts) {
  SCOPED_TRACE(describe(l, num_parts));
  const std::vector<int> tiles = tiles_per_sequence(l);
  const Plan plan = make_plan(l, num_parts);
  const int total_splits = check_structure(plan, tiles);
  EXPECT_LE(total_splits, l.batch + num_parts - 1);
  check_balance(plan, tiles);
}

Lengths fixed(int batch, int topk, int extra_topk = 0) {
  Lengths l;
  l.batch = batch;
  l.topk = topk;
  l.extra_topk = extra_topk;
  return l;
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

// The checker itself, on hand-written plans for sequences of 3, 0 and 1 tiles.
TEST(SparseDecodeScheduleChecker, CatchesBrokenPlans) {
  const std::vector<int> tiles = {3, 0, 1};
  const auto failures = [&](std::vector<DecodePartRange> parts, std::vector<int32_t> splits) {
    const Plan plan{std::move(parts), std::move(splits)};
    return count_failures([&] { check_structure(plan, tiles); });
  };
  // Correct: sequence 0 split in two, sequences 1 and 2 in the second part.
  EXPECT_EQ(failures({{0, 0, 0, 2, 0, 0, {}}, {0, 2, 2, 1, 1, 1, {}}}, {0, 2, 3, 4}), 0);
  EXPECT_EQ(failures({{0, 0, 2, 1, 0, 1, {}}, {3, 0, 2, 0, 0, 0, {}}}, {0, 1, 2, 3}), 0);
  // end_is_last on a part whose split of sequence 0 is not the last one.
  EXPECT_GT(failures({{0, 0, 0, 2, 0, 1, {}}, {0, 2, 2, 1, 1, 1, {}}}, {0, 2, 3, 4}), 0);
  // end_is_last missing on the part that ends the last split of sequence 2.
  EXPECT_GT(failures({{0, 0, 0, 2, 0, 0, {}}, {0, 2, 2, 1, 1, 0, {}}}, {0, 2, 3, 4}), 0);
  // Tile 2 of sequence 0 never covered.
  EXPECT_GT(failures({{0, 0, 0, 2, 0, 0, {}}, {1, 0, 2, 1, 0, 1, {}}}, {0, 1, 2, 3}), 0);
  // The second split of sequence 0 numbered 0.
  EXPECT_GT(failures({{0, 0, 0, 2, 0, 0, {}}, {0, 2, 2, 1, 0, 1, {}}}, {0, 2, 3, 4}), 0);
  // Wrong prefix sums.
  EXPECT_GT(failures({{0, 0, 2, 1, 0, 1, {}}, {3, 0, 2, 0, 0, 0, {}}}, {0, 1, 2, 4}), 0);
}

TEST(SparseDecodeSchedule, FixedTopkOnly) {
  for (int topk : {1, 63, 64, 65, 100, 576, 2048, 16384}) {
    for (int parts : {1, 2, 7, 66, 132}) {
      check_plan(fixed(1, topk), parts);
      check_plan(fixed(5, topk), parts);
      check_plan(fixed(74, topk), parts);
    }
  }
}

TEST(SparseDecodeSchedule, SingleSequenceSinglePart) {
  const Lengths l = fixed(1, 2048);
  check_plan(l, 1);
  const Plan plan = make_plan(l, 1);
  EXPECT_EQ(plan.parts[0].begin_batch, 0);
  EXPECT_EQ(plan.parts[0].begin_tile, 0);
  EXPECT_EQ(plan.parts[0].end_batch, 0);
  EXPECT_EQ(plan.parts[0].end_tile, 32);
  EXPECT_EQ(plan.parts[0].begin_split, 0);
  EXPECT_EQ(plan.parts[0].end_is_last, 1);
  EXPECT_EQ(plan.num_splits, (std::vector<int32_t>{0, 1}));
}

TEST(SparseDecodeSchedule, LengthsFromTopkLength) {
  Lengths l = fixed(6, 576);
  l.topk_length = {0, 1, 64, 65, 576, 100000};  // 0, 1, 1, 2, 9, 9 tiles
  EXPECT_EQ(tiles_per_sequence(l), (std::vector<int>{0, 1, 1, 2, 9, 9}));
  for (int parts : {1, 2, 3, 5, 132}) check_plan(l, parts);
  const Plan plan = make_plan(l, 1);
  EXPECT_EQ(plan.parts[0].end_batch, 5);
  EXPECT_EQ(plan.parts[0].end_tile, 9);
  EXPECT_EQ(plan.num_splits, (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6}));
}

TEST(SparseDecodeSchedule, NegativeLengthsCountAsZero) {
  Lengths l = fixed(4, 128, 64);
  l.topk_length = {-1, -100000, 128, -5};
  l.extra_topk_length = {-3, 64, -1, 0};
  EXPECT_EQ(tiles_per_sequence(l), (std::vector<int>{0, 1, 2, 0}));
  for (int parts : {1, 2, 4, 132}) check_plan(l, parts);
}

TEST(SparseDecodeSchedule, ExtraListsAddTheirOwnTiles) {
  // 100 main tokens (2 tiles) + 65 extra tokens (2 tiles): 4 tiles, not ceil(165 / 64) = 3.
  Lengths l = fixed(1, 100, 65);
  EXPECT_EQ(tiles_per_sequence(l), (std::vector<int>{4}));
  check_plan(l, 1);
  EXPECT_EQ(make_plan(l, 1).parts[0].end_tile, 4);
  for (int parts : {2, 3, 132}) check_plan(l, parts);
  // MODEL1-like: top-k 128 and an extra list of up to 1024 with its own lengths.
  Lengths model1 = fixed(74, 128, 1024);
  std::mt19937 rng(5);
  for (int i = 0; i < 74; ++i) {
    model1.extra_topk_length.push_back(std::uniform_int_distribution<int>(0, 1024)(rng));
  }
  for (int parts : {1, 16, 33, 66, 132}) check_plan(model1, parts);
}

TEST(SparseDecodeSchedule, ExtraLengthsIgnoredWithoutExtraList) {
  Lengths l = fixed(3, 64, 0);
  l.extra_topk_length = {500, 1000, 64};  // extra_topk 0: no extra set
  EXPECT_EQ(tiles_per_sequence(l), (std::vector<int>{1, 1, 1}));
  check_plan(l, 2);
}

TEST(SparseDecodeSchedule, AllLengthsZeroStillGiveOneSplitEach) {
  Lengths l = fixed(200, 2048, 512);
  l.topk_length.assign(200, 0);
  l.extra_topk_length.assign(200, 0);
  for (int parts : {1, 3, 132}) check_plan(l, parts);
  Lengths one = fixed(1, 64);
  one.topk_length = {0};
  check_plan(one, 132);
  const Plan plan = make_plan(one, 132);
  EXPECT_EQ(plan.num_splits, (std::vector<int32_t>{0, 1}));
}

TEST(SparseDecodeSchedule, OneLongListOverManyParts) {
  for (int parts = 1; parts <= 132; parts += 13) check_plan(fixed(1, 16384, 4096), parts);
  check_plan(fixed(1, 64 * 132), 132);
  check_plan(fixed(1, 64 * 3), 132);  // fewer tiles than parts
}

TEST(SparseDecodeSchedule, RandomCases) {
  std::mt19937 rng(4321);
  for (int iteration = 0; iteration < 400; ++iteration) {
    const int batch = std::uniform_int_distribution<int>(1, 330)(rng);
    const int num_parts = std::uniform_int_distribution<int>(1, 132)(rng);
    const int topk = std::vector<int>{1, 64, 100, 576, 2048, 16384}[iteration % 6];
    const int extra_topk = std::vector<int>{0, 0, 64, 512, 1024}[iteration % 5];
    Lengths l = fixed(batch, topk, extra_topk);
    std::uniform_int_distribution<int> length(-2, topk + 2);
    if (iteration % 3 != 0) {
      for (int i = 0; i < batch; ++i) l.topk_length.push_back(length(rng));
    }
    if (extra_topk > 0 && iteration % 2 == 0) {
      std::uniform_int_distribution<int> extra_length(0, extra_topk);
      for (int i = 0; i < batch; ++i) l.extra_topk_length.push_back(extra_length(rng));
    }
    check_plan(l, num_parts);
    if (::testing::Test::HasFailure()) return;  // one failing case is enough to read
  }
}

// With num_parts from sparse_decode_num_parts (explicit SM count: no GPU needed), the total
// number of splits must fit the bound that sizes the workspace.
TEST(SparseDecodeSchedule, TotalSplitsWithinWorkspaceBound) {
  std::mt19937 rng(77);
  for (int num_sms : {1, 2, 78, 114, 132}) {
    for (int s_q : {1, 2, 4}) {
      for (int h_q : {1, 16, 64, 128}) {
        for (int batch : {1, 3, 64, 321}) {
          const SparseDecodeScheduleShape shape{batch, s_q, h_q, num_sms};
          const int num_parts = sparse_decode_num_parts(shape);
          ASSERT_GE(num_parts, 1);
          ASSERT_LE(num_parts, num_sms);
          Lengths l = fixed(batch, 2048, 512);
          std::uniform_int_distribution<int> length(0, 2048);
          for (int i = 0; i < batch; ++i) l.topk_length.push_back(length(rng));
          SCOPED_TRACE(describe(l, num_parts));
          const Plan plan = make_plan(l, num_parts, s_q, h_q);
          const int total_splits = check_structure(plan, tiles_per_sequence(l));
          EXPECT_LE(total_splits, sparse_decode_max_total_splits(shape));
          EXPECT_LE(plan.num_splits[batch], sparse_decode_max_total_splits(shape));
        }
      }
    }
  }
}

TEST(SparseDecodeSchedule, RejectsBadArguments) {
  const Lengths l = fixed(2, 64);
  std::vector<int32_t> metadata(8 * 4), num_splits(3);
  const auto argument_of = [&](SparseDecodeScheduleShape shape, int topk, int extra_topk,
                               int num_parts) -> std::string {
    try {
      plan_sparse_decode_host(shape, topk, nullptr, extra_topk, nullptr, num_parts, metadata.data(),
                              num_splits.data());
    } catch (const Error& e) {
      return e.argument();
    }
    return "(accepted)";
  };
  const SparseDecodeScheduleShape ok{l.batch, 1, 64, 132};
  EXPECT_EQ(argument_of(ok, 64, 0, 4), "(accepted)");
  EXPECT_EQ(argument_of({0, 1, 64, 132}, 64, 0, 4), "batch");
  EXPECT_EQ(argument_of({2, 0, 64, 132}, 64, 0, 4), "seqlen_q");
  EXPECT_EQ(argument_of({2, 1, 0, 132}, 64, 0, 4), "num_heads_q");
  EXPECT_EQ(argument_of(ok, 0, 0, 4), "topk");
  EXPECT_EQ(argument_of(ok, 64, -1, 4), "extra_topk");
  EXPECT_EQ(argument_of(ok, 64, 0, 0), "num_parts");
}

}  // namespace
}  // namespace flashmla
