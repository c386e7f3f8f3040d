// Batch normalisation over (N, C, L). Memory is read in its own order (sample by sample), so
// every pass streams: a channel's runs lie C*L floats apart, and walking one channel at a time
// would fetch them one short run at a time (going by blocks of channels small enough to stay in a
// core's cache, so that x is read from memory once instead of twice, measured no faster on the
// Intel Xeon VM: the passes are bound by the stores). The per-channel sums come from one pass
// (KernelTable::bn_moments, float64, shifted by the channel's first value so that the variance
// does not cancel) over fixed blocks of samples; the blocks' partial sums are added in block
// order, and the blocks depend only on the shape, so the bits do not depend on the thread count.
// The equations are PyTorch's (batch_norm_cpu and its backward).
#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <vector>

#include "convkit/convkit.h"
#include "kernels.h"
#include "parallel.h"

namespace convkit {

namespace {
float inv_std(double var, double eps) { return static_cast<float>(1.0 / std::sqrt(var + eps)); }

// a float64 mean as two floats, hi + lo
void split(double m, float* hi, float* lo) {
  *hi = static_cast<float>(m);
  *lo = static_cast<float>(m - *hi);
}

// Planes smaller than this (BatchNorm1d's (N, C): 1) go a sample's C L positions at a time
// (KernelTable::bn_*_pos), vectors across positions: one kernel call per channel and sample took
// (256, 1024) 8x longer than PyTorch.
constexpr int64_t kBnPosL = 32;

// m (C x 4) from per-position sums s (4 x C L, as bn_moments_pos), each channel's L positions
// added in order
void sums_to_channels(double* m, const double* s, int64_t C, int64_t L) {
  const int64_t P = C * L;
  for (int64_t c = 0; c < C; ++c)
    for (int k = 0; k < 4; ++k) {
      double v = 0.0;
      for (int64_t l = 0; l < L; ++l) v += s[k * P + c * L + l];
      m[c * 4 + k] = v;
    }
}

// m (C x 4): per channel, with d = x - shift[c]: sum d, sum d^2, sum dy, sum d*dy (dy may be
// null: the last two are then 0). With short runs (L < 256) one kernel call takes a channel's
// runs in all the block's samples, so that its sums are reduced once per block, not per run;
// planes below kBnPosL go by positions.
void channel_moments(double* m, const float* x, const float* dy, const double* shift, int64_t N,
                     int64_t C, int64_t L) {
  const auto moments = g_kernels->bn_moments;
  const int64_t per = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(1, C * L));
  const int64_t nb = (N + per - 1) / per;
  if (L < kBnPosL) {
    const int64_t P = C * L;
    std::vector<double> shift_pos(static_cast<size_t>(P)), part(static_cast<size_t>(nb * 4 * P));
    for (int64_t j = 0; j < P; ++j) shift_pos[j] = shift[j / L];
    parallel_for(nb, 4.0 * N * P, [&](int64_t b) {
      double* ps = part.data() + b * 4 * P;  // (zeroed by the vector)
      const int64_t n0 = b * per, nn = std::min(N, n0 + per) - n0;
      g_kernels->bn_moments_pos(ps, x + n0 * P, dy ? dy + n0 * P : nullptr, P, nn,
                                shift_pos.data());
    });
    for (int64_t b = 1; b < nb; ++b)
      for (int64_t i = 0; i < 4 * P; ++i) part[i] += part[b * 4 * P + i];
    if (nb > 0) sums_to_channels(m, part.data(), C, L);
    else std::fill(m, m + C * 4, 0.0);
    return;
  }
  std::vector<double> part(static_cast<size_t>(nb * C * 4), 0.0);
  parallel_for(nb, 4.0 * N * C * L, [&](int64_t b) {
    double* pm = part.data() + b * C * 4;
    const int64_t n0 = b * per, nn = std::min(N, n0 + per) - n0;
    if (L < 256) {
      for (int64_t c = 0; c < C; ++c) {
        const int64_t off = (n0 * C + c) * L;
        moments(pm + c * 4, x + off, dy ? dy + off : nullptr, L, C * L, nn, shift[c]);
      }
      return;
    }
    for (int64_t n = n0; n < n0 + nn; ++n)  // memory in its own order
      for (int64_t c = 0; c < C; ++c) {
        const int64_t off = (n * C + c) * L;
        moments(pm + c * 4, x + off, dy ? dy + off : nullptr, L, 0, 1, shift[c]);
      }
  });
  for (int64_t i = 0; i < C * 4; ++i) {
    double s = 0.0;
    for (int64_t b = 0; b < nb; ++b) s += part[b * C * 4 + i];
    m[i] = s;
  }
}

// The per-channel parameters (C floats each) repeated over each channel's L positions, one
// after another.
std::vector<float> per_position(std::initializer_list<const float*> params, int64_t C,
                                int64_t L) {
  std::vector<float> out;
  for (const float* v : params)
    for (int64_t c = 0; c < C; ++c) out.insert(out.end(), static_cast<size_t>(L), v[c]);
  return out;
}

// Batch mean and biased variance of each channel (and the moments, for the backward).
void batch_stats_of(double* mean, double* var, double* m, const float* x, const float* dy,
                    int64_t N, int64_t C, int64_t L) {
  std::vector<double> shift(C);
  for (int64_t c = 0; c < C; ++c) shift[c] = N * L > 0 ? x[c * L] : 0.0;
  channel_moments(m, x, dy, shift.data(), N, C, L);
  const double count = static_cast<double>(N * L);
  for (int64_t c = 0; c < C; ++c) {
    const double d = count > 0 ? m[c * 4] / count : 0.0;
    mean[c] = shift[c] + d;
    var[c] = count > 0 ? std::max(m[c * 4 + 1] / count - d * d, 0.0) : 0.0;
    if (std::isnan(m[c * 4 + 1])) var[c] = m[c * 4 + 1];
    m[c * 4 + 3] -= d * m[c * 4 + 2];  // sum (x - mean) dy
  }
}
}  // namespace

std::vector<float> bn_eval_terms(const double* mean, const double* var, const float* weight,
                                 const float* bias, double eps, int64_t C) {
  std::vector<float> t(static_cast<size_t>(4 * C));
  for (int64_t c = 0; c < C; ++c) {
    split(mean[c], &t[c], &t[C + c]);
    const float is = inv_std(var[c], eps);
    t[2 * C + c] = weight ? is * weight[c] : is;
    t[3 * C + c] = bias ? bias[c] : 0.f;
  }
  return t;
}

BnTerms bn_terms_view(const std::vector<float>& t, int64_t C, const float* add, bool relu) {
  return BnTerms{t.data(), t.data() + C, t.data() + 2 * C, t.data() + 3 * C, add, relu};
}

bool bn_terms_by_block(int64_t L) { return L >= kBnPosL; }

void bn_terms_pass(float* y, const float* x, int64_t N, int64_t C, int64_t L, const BnTerms& t) {
  const auto affine = g_kernels->bn_affine;
  const auto act = g_kernels->act_fwd;
  const std::vector<float> pos = L < kBnPosL ? per_position({t.mh, t.ml, t.alpha, t.beta}, C, L)
                                             : std::vector<float>();
  parallel_for(N, 2.0 * N * C * L, [&](int64_t n) {
    if (pos.empty()) {  // the residual add and the ReLU in the affine's pass
      for (int64_t c = 0; c < C; ++c) {
        const int64_t off = (n * C + c) * L;
        affine(y + off, x + off, L, t.mh[c], t.ml[c], t.alpha[c], t.beta[c],
               t.add ? t.add + off : nullptr, t.relu);
      }
      return;
    }
    g_kernels->bn_affine_pos(y + n * C * L, x + n * C * L, C * L, pos.data());
    // the sample's C * L values are still in cache (L may be 1)
    float* yn = y + n * C * L;
    if (t.add)
      for (int64_t i = 0; i < C * L; ++i) yn[i] += t.add[n * C * L + i];
    if (t.relu) act(static_cast<int>(Act::relu), 0.f, yn, yn, C * L);
  });
}

void batch_norm_forward(float* y, double* mean, double* var, const float* x, const float* weight,
                        const float* bias, double eps, int64_t N, int64_t C, int64_t L,
                        bool batch_stats, bool relu, const float* add) {
  if (batch_stats) {
    std::vector<double> m(static_cast<size_t>(C * 4));
    batch_stats_of(mean, var, m.data(), x, nullptr, N, C, L);
  }
  const std::vector<float> t = bn_eval_terms(mean, var, weight, bias, eps, C);
  bn_terms_pass(y, x, N, C, L, bn_terms_view(t, C, add, relu));
}

void batch_norm_backward(float* dx, float* dw, float* db, const float* dy, const float* x,
                         const double* mean, const double* var, const float* weight, double eps,
                         int64_t N, int64_t C, int64_t L, bool batch_stats) {
  const double count = static_cast<double>(N * L);
  std::vector<double> mu(C), v(C), m(static_cast<size_t>(C * 4));
  if (batch_stats) {
    batch_stats_of(mu.data(), v.data(), m.data(), x, dy, N, C, L);
  } else {
    mu.assign(mean, mean + C);
    v.assign(var, var + C);
    channel_moments(m.data(), x, dy, mu.data(), N, C, L);  // sum d*dy is about the mean already
  }
  std::vector<float> mh(C), ml(C), kk(C, 0.f), gmean(C, 0.f), scale(C);
  for (int64_t c = 0; c < C; ++c) {
    const float is = inv_std(v[c], eps);
    const double sum_dy = m[c * 4 + 2], dot = m[c * 4 + 3];
    if (dw) dw[c] = static_cast<float>(dot * is);
    if (db) db[c] = static_cast<float>(sum_dy);
    if (batch_stats && count > 0) {
      kk[c] = static_cast<float>(dot * is * is / count);
      gmean[c] = static_cast<float>(sum_dy / count);
    }
    split(mu[c], &mh[c], &ml[c]);
    scale[c] = weight ? is * weight[c] : is;
  }
  if (!dx) return;
  const auto kdx = g_kernels->bn_dx;
  if (L < kBnPosL) {
    const std::vector<float> pos = per_position(
        {mh.data(), ml.data(), kk.data(), gmean.data(), scale.data()}, C, L);
    parallel_for(N, 4.0 * N * C * L, [&](int64_t n) {
      const int64_t off = n * C * L;
      g_kernels->bn_dx_pos(dx + off, dy + off, x + off, C * L, pos.data());
    });
    return;
  }
  parallel_for(N, 4.0 * N * C * L, [&](int64_t n) {
    for (int64_t c = 0; c < C; ++c) {
      const int64_t off = (n * C + c) * L;
      kdx(dx + off, dy + off, x + off, L, mh[c], ml[c], kk[c], gmean[c], scale[c]);
    }
  });
}

}  // namespace convkit
