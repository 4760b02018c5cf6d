// What the dense and the sparse decode GPU tests share: poisoned outputs, pointing params at
// them and at a plan, the reference results, and the failure log and rounding-bound report of
// the comparison. Params is DenseDecodeParams or SparseDecodeParams.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "device_buffer.h"

namespace flashmla::testing {

// Outputs with an optional padding after each head row (must stay untouched).
template <typename Params>
struct DeviceOutputs {
  DeviceOutputs(const Params& p, int64_t out_head_pad)
      : head_stride(p.head_dim_v + out_head_pad),
        out(size_t(p.batch) * p.seqlen_q * p.num_heads_q * head_stride),
        lse(size_t(p.batch) * p.num_heads_q * p.seqlen_q) {}
  void poison() {
    out.fill_bytes(0xff);  // 0xffff: NaN in bf16 and fp16
    lse.fill_bytes(0xff);  // NaN in float
  }
  int64_t head_stride;
  DeviceBuffer<uint16_t> out;
  DeviceBuffer<float> lse;
};

// Points `p` at the outputs (out [b, s_q, h_q, head_stride], lse [b, h_q, s_q]) and at the
// plan's metadata; the workspace is left to the caller.
template <typename Params, typename Plan>
void use_outputs_and_plan(Params& p, const DeviceOutputs<Params>& outputs, const Plan& plan) {
  p.out = outputs.out.get();
  p.out_head_stride = outputs.head_stride;
  p.out_seq_stride = p.num_heads_q * outputs.head_stride;
  p.out_batch_stride = p.seqlen_q * p.out_seq_stride;
  p.lse = outputs.lse.get();
  p.lse_head_stride = p.seqlen_q;
  p.lse_batch_stride = int64_t(p.num_heads_q) * p.seqlen_q;
  p.tile_scheduler_metadata = plan.metadata.get();
  p.num_splits = plan.num_splits.get();
  p.num_parts = plan.num_parts;
}

struct DecodeReference {
  std::vector<float> out;        // [b, s_q, h_q, d_v]
  std::vector<float> lse;        // [b, h_q, s_q]
  std::vector<float> out_abs;    // [b, s_q, h_q, d_v]: sum_t w_t |v_t|
  std::vector<float> max_logit;  // [b, h_q, s_q]: largest scaled logit (-inf when none)
  // softmax_scale * max |q row| * max |k row| over the rows read: bounds sum_i |q_i k_i| of
  // every logit, the magnitude whose float32 rounding a logit (hence lse) inherits.
  double logit_magnitude = 0.0;
};

// Collects the first failures with their indices, counts the rest.
class FailureLog {
 public:
  template <typename... Parts>
  void add(const Parts&... parts) {
    if (count_++ < kShown) {
      std::ostringstream line;
      (line << ... << parts);
      lines_ += "  " + line.str() + "\n";
    }
  }
  int count() const { return count_; }
  std::string report(const char* what) const {
    return std::string(what) + ": " + std::to_string(count_) + " failing elements, first:\n" +
           lines_;
  }

 private:
  static constexpr int kShown = 10;
  int count_ = 0;
  std::string lines_;
};

// Records and prints how many elements passed only by the rounding bounds; `tag` distinguishes
// several comparisons in one test, `p_dtype` names the dtype P is rounded to.
inline void report_rounding_only(const std::string& tag, const char* p_dtype,
                                 int64_t out_rounding_only, int64_t lse_rounding_only) {
  ::testing::Test::RecordProperty("out_rounding_only" + tag, std::to_string(out_rounding_only));
  ::testing::Test::RecordProperty("lse_rounding_only" + tag, std::to_string(lse_rounding_only));
  const std::string prefix = tag.empty() ? "" : tag + " ";
  std::printf("%sout: %lld elements within the %s P-rounding bound only\n", prefix.c_str(),
              static_cast<long long>(out_rounding_only), p_dtype);
  std::printf("%slse: %lld elements within the fp32 logit-rounding bound only\n", prefix.c_str(),
              static_cast<long long>(lse_rounding_only));
}

}  // namespace flashmla::testing
