// How the sparse decode and sparse prefill GPU tests judge one element against the CPU
// reference. An element passes FlashMLA's fixed tolerance (each test names its own), or else
// the rounding bounds of docs/testing.md:
//  - out (bf16): the kernels round the softmax numerators P to bf16 before the P.V product,
//    which alone allows |err| <= 2^-8 * sum_t w_t |v_t|; the final rounding adds 2^-8 * |ref|;
//  - lse and max_logits (fp32): the fp32 logits are off by about 2^-24 * |logit| per rounding:
//    2^-21 * (|max logit| + |ref| + the logit magnitude).
// Elements passing only by the rounding bounds are counted (to be reported), not failed.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>

#include "flashmla/common.h"
#include "reference/half_convert.h"

namespace flashmla::testing {

// Passes where |err| < abs or |err| / |ref| < rel.
struct FixedTolerance {
  float abs, rel;
  bool admits(float err, float want) const { return err < abs || err / std::fabs(want) < rel; }
};

// bf16 out elements; also accumulates the cosine similarity of the whole tensor.
class SparseOutCheck {
 public:
  explicit SparseOutCheck(FixedTolerance tolerance) : tolerance_(tolerance) {}

  // `exact`: the reference, `out_abs` its sum_t w_t |v_t|. With nothing to attend, got must be
  // exactly 0. False: the element fails (the caller logs where).
  bool check(float got, float exact, float out_abs, bool attends_to_nothing) {
    const float want = reference::round_to_dtype(ScalarType::kBFloat16, exact);
    const float err = std::fabs(got - want);
    bool ok;
    if (attends_to_nothing) {
      ok = got == 0.f;
    } else if (std::isnan(got) || std::isinf(got) != std::isinf(want)) {
      ok = false;
    } else if (tolerance_.admits(err, want)) {
      ok = true;
    } else {
      const double bound = kPRoundingUnit * (double(out_abs) + std::fabs(exact));
      ok = double(std::fabs(got - exact)) <= bound;
      if (ok) ++rounding_only_;
    }
    dot_ += double(got) * want;
    norm_got_ += double(got) * got;
    norm_ref_ += double(want) * want;
    return ok;
  }

  int64_t rounding_only() const { return rounding_only_; }

  // 1 - cosine similarity of got vs the bf16-rounded reference is below `limit`.
  void expect_cosine_within(double limit) const {
    if (norm_ref_ > 0 || norm_got_ > 0) {
      const double cosine = dot_ / std::sqrt(norm_got_ * norm_ref_);
      EXPECT_LT(1.0 - cosine, limit) << "cosine similarity of out vs reference: " << cosine;
    }
  }

 private:
  static constexpr double kPRoundingUnit = 0x1p-8;  // bf16
  FixedTolerance tolerance_;
  int64_t rounding_only_ = 0;
  double dot_ = 0, norm_got_ = 0, norm_ref_ = 0;
};

// fp32 lse / max_logits elements.
class SparseStatCheck {
 public:
  explicit SparseStatCheck(FixedTolerance tolerance) : tolerance_(tolerance) {}

  // `max_logit`: the reference's largest logit of that row; `logit_magnitude`: the reference's
  // bound on sum_i |q_i k_i|. +-inf must match exactly (nothing attended), NaN never passes.
  // False: the element fails (the caller logs where).
  bool check(float got, float want, float max_logit, double logit_magnitude) {
    const float err = std::fabs(got - want);
    if (std::isinf(want) || std::isinf(got) || std::isnan(got)) return got == want;
    if (tolerance_.admits(err, want)) return true;
    const double bound =
        kLogitRoundingUnit * (std::fabs(double(max_logit)) + std::fabs(want) + logit_magnitude);
    const bool ok = double(err) <= bound;
    if (ok) ++rounding_only_;
    return ok;
  }

  int64_t rounding_only() const { return rounding_only_; }

 private:
  static constexpr double kLogitRoundingUnit = 0x1p-21;
  FixedTolerance tolerance_;
  int64_t rounding_only_ = 0;
};

}  // namespace flashmla::testing
