// Two passes over the rows for a block of heads at a time: scaled logits of every head against
// every row, a softmax per head (with the sink factor), then the weighted sum of the V rows.
#include "reference/gathered_rows_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "reference/half_convert.h"

namespace flashmla::reference {

void attend_gathered_rows(const uint16_t* q, int64_t q_head_stride, int num_heads, int head_dim_qk,
                          int head_dim_v, double softmax_scale, const float* attn_sink,
                          bool want_abs, GatheredRowsAttention& a) {
  const int d_qk = head_dim_qk;
  const int d_v = head_dim_v;
  const int blocks = (num_heads + kHeadBlock - 1) / kHeadBlock;
  const int64_t tokens = static_cast<int64_t>(a.keys.size() / d_qk);

  a.q_t.assign(size_t(blocks) * d_qk * kHeadBlock, 0.0);
  for (int r = 0; r < num_heads; ++r) {
    const uint16_t* q_row = q + r * q_head_stride;
    double* q_t = &a.q_t[size_t(r / kHeadBlock) * d_qk * kHeadBlock + r % kHeadBlock];
    for (int d = 0; d < d_qk; ++d) q_t[size_t(d) * kHeadBlock] = bf16_bits_to_float(q_row[d]);
  }

  // Pass 1: scaled logits of every head against every token.
  const double scale = softmax_scale;
  a.weights.assign(size_t(blocks) * tokens * kHeadBlock, 0.0);
  for (int b = 0; b < blocks; ++b) {
    const double* q_t = &a.q_t[size_t(b) * d_qk * kHeadBlock];
    for (int64_t t = 0; t < tokens; ++t) {
      const float* key = &a.keys[size_t(t) * d_qk];
      double dot[kHeadBlock] = {};
      for (int d = 0; d < d_qk; ++d) {
        const double k = key[d];
        for (int r = 0; r < kHeadBlock; ++r) dot[r] += q_t[d * kHeadBlock + r] * k;
      }
      double* logits = &a.weights[(size_t(b) * tokens + t) * kHeadBlock];
      for (int r = 0; r < kHeadBlock; ++r) logits[r] = scale * dot[r];
    }
  }

  // Softmax per head: logits become weights, including the sink factor
  // exp(lse) / (exp(lse) + exp(sink)) = 1 / (1 + exp(sink - lse)) (0 for sink = +inf, 1 for
  // sink = -inf).
  a.lse.resize(size_t(blocks) * kHeadBlock);
  a.max_logit.resize(a.lse.size());
  for (int r = 0; r < blocks * kHeadBlock; ++r) {
    double* w = &a.weights[size_t(r / kHeadBlock) * tokens * kHeadBlock + r % kHeadBlock];
    const auto at = [&](int64_t t) -> double& { return w[t * kHeadBlock]; };
    double& head_max = a.max_logit[r];
    double& head_lse = a.lse[r];
    head_max = -std::numeric_limits<double>::infinity();
    if (tokens == 0 || r >= num_heads) {
      head_lse = std::numeric_limits<double>::infinity();
      for (int64_t t = 0; t < tokens; ++t) at(t) = 0.0;
      continue;
    }
    for (int64_t t = 0; t < tokens; ++t) head_max = std::max(head_max, at(t));
    double sum = 0.0;
    for (int64_t t = 0; t < tokens; ++t) sum += std::exp(at(t) - head_max);
    head_lse = head_max + std::log(sum);
    double factor = 1.0;
    if (attn_sink != nullptr) {
      const double sink = attn_sink[r];
      factor = 1.0 / (1.0 + std::exp(sink - head_lse));
    }
    for (int64_t t = 0; t < tokens; ++t) at(t) = factor * (std::exp(at(t) - head_max) / sum);
  }

  // Pass 2: weighted sum of the V rows (the first d_v columns of K). The head blocks of acc
  // are contiguous, so head r's row is acc[r * d_v].
  a.acc.assign(size_t(blocks) * kHeadBlock * d_v, 0.0);
  if (want_abs) a.acc_abs.assign(a.acc.size(), 0.0);
  for (int b = 0; b < blocks; ++b) {
    for (int64_t t = 0; t < tokens; ++t) {
      const float* value = &a.keys[size_t(t) * d_qk];
      const double* weights = &a.weights[(size_t(b) * tokens + t) * kHeadBlock];
      for (int r = 0; r < kHeadBlock; ++r) {
        const double w = weights[r];
        if (w == 0.0) continue;  // padding head, sink +inf, or underflowed: adds nothing
        double* acc = &a.acc[(size_t(b) * kHeadBlock + r) * d_v];
        for (int d = 0; d < d_v; ++d) acc[d] += w * value[d];
        if (want_abs) {
          double* acc_abs = &a.acc_abs[(size_t(b) * kHeadBlock + r) * d_v];
          for (int d = 0; d < d_v; ++d) acc_abs[d] += w * std::fabs(value[d]);
        }
      }
    }
  }
}

int heads_per_work_item(int64_t query_tokens, int num_heads, int threads) {
  const int64_t groups = std::max<int64_t>(1, (threads + query_tokens - 1) / query_tokens);
  int heads = static_cast<int>((num_heads + groups - 1) / groups);
  heads = (heads + kHeadBlock - 1) / kHeadBlock * kHeadBlock;
  return std::min(heads, kMaxAttentionHeads);
}

}  // namespace flashmla::reference
