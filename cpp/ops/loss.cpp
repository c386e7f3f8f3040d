// Losses (means) and their gradients. Sums run over fixed blocks whose partial sums are added in
// block order (float64), so the value does not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <vector>

#include "convkit/convkit.h"
#include "kernels.h"
#include "parallel.h"

namespace convkit {

namespace {
constexpr int64_t kBlock = 4096;

// sum over the blocks [i0, i0 + len) of [0, n) (kBlock each) of block(i0, len), the blocks'
// sums added in order
template <class F>
double fixed_order_sum(int64_t n, double cost, F&& block) {
  const int64_t nb = (n + kBlock - 1) / kBlock;
  std::vector<double> part(static_cast<size_t>(nb), 0.0);
  parallel_for(nb, cost * n, [&](int64_t b) {
    part[b] = block(b * kBlock, std::min(kBlock, n - b * kBlock));
  });
  double total = 0.0;
  for (double p : part) total += p;
  return total;
}

// log(sum(exp(row))) - row[label], with max subtraction: (m - row[label]) + log(sum(exp(row - m)))
// so that huge logits keep the log-sum's digits (1e30 + log 2 would round to 1e30 first);
// `tmp` has room for K floats
double nll(const float* row, int64_t label, float* tmp, int64_t K) {
  const float m = g_kernels->row_max(row, K);
  if (std::isinf(m)) return double(m) - double(row[label]);  // all -inf, or +inf present
  return (double(m) - double(row[label])) + std::log(g_kernels->exp_shift_sum(tmp, row, m, K));
}
}  // namespace

// logits (N, K), labels (N) -> mean over rows of logsumexp(row) - row[label]
double cross_entropy_forward(const float* logits, const int64_t* labels, int64_t N, int64_t K) {
  if (N == 0) return NAN;
  const int64_t nb = (N + 63) / 64;
  std::vector<double> part(static_cast<size_t>(nb), 0.0);
  parallel_for(nb, 20.0 * N * K, [&](int64_t b) {
    float* tmp = scratch(Buf::loss_row, K);
    double acc = 0.0;
    for (int64_t n = b * 64, e = std::min(N, n + 64); n < e; ++n) {
      const float* row = logits + n * K;
      acc += nll(row, labels[n], tmp, K);
    }
    part[b] = acc;
  });
  double total = 0.0;
  for (double p : part) total += p;
  return total / double(N);
}

// dlogits = grad_out / N * (softmax(row) - onehot(label))
void cross_entropy_backward(float* dlogits, float grad_out, const float* logits,
                            const int64_t* labels, int64_t N, int64_t K) {
  const float scale = grad_out / static_cast<float>(N);
  parallel_for(N, 20.0 * N * K, [&](int64_t n) {
    const float* row = logits + n * K;
    float* d = dlogits + n * K;
    const float m = g_kernels->row_max(row, K);
    const float inv = static_cast<float>(1.0 / g_kernels->exp_shift_sum(d, row, m, K));
    for (int64_t k = 0; k < K; ++k) d[k] = d[k] * inv * scale;
    d[labels[n]] -= scale;
  });
}

// mean of max(x, 0) - x t + log1p(exp(-|x|)), blocks of kBlock summed in order
double bce_with_logits_forward(const float* x, const float* t, int64_t n) {
  if (n == 0) return NAN;
  return fixed_order_sum(n, 30.0, [&](int64_t i0, int64_t len) {
           return g_kernels->bce_logits_sum(x + i0, t + i0, len);
         }) / double(n);
}

// dx = grad_out / n * (sigmoid(x) - t)
void bce_with_logits_backward(float* dx, float grad_out, const float* x, const float* t, int64_t n) {
  const float scale = grad_out / static_cast<float>(n);
  parallel_for((n + kBlock - 1) / kBlock, 30.0 * n, [&](int64_t b) {
    const int64_t i0 = b * kBlock, len = std::min(kBlock, n - i0);
    g_kernels->act_fwd(static_cast<int>(Act::sigmoid), 0.f, dx + i0, x + i0, len);
    for (int64_t i = i0; i < i0 + len; ++i) dx[i] = (dx[i] - t[i]) * scale;
  });
}

double mse_forward(const float* p, const float* t, int64_t n) {
  if (n == 0) return NAN;
  return fixed_order_sum(n, 2.0, [&](int64_t i0, int64_t len) {
           double acc = 0.0;  // in order within the block, as before
           for (int64_t i = i0; i < i0 + len; ++i) {
             const double d = double(p[i]) - t[i];
             acc += d * d;
           }
           return acc;
         }) / double(n);
}

// dp = grad_out * 2 (p - t) / n
void mse_backward(float* dp, float grad_out, const float* p, const float* t, int64_t n) {
  const float scale = 2.f * grad_out / static_cast<float>(n);
  parallel_for((n + kBlock - 1) / kBlock, 2.0 * n, [&](int64_t b) {
    for (int64_t i = b * kBlock, e = std::min(n, i + kBlock); i < e; ++i)
      dp[i] = (p[i] - t[i]) * scale;
  });
}

}  // namespace convkit
