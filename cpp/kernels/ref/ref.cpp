// Plain, obviously-correct loops with float64 accumulation: the oracle the tests compare the fast
// kernels against. Single-threaded on purpose; never used on a hot path.
#include <cmath>
#include <vector>

#include "convkit/convkit.h"

namespace convkit {
namespace ref {

// x (N,C,H,W), w (K,C/G,R,S), b (K) or null -> y (N,K,P,Q)
void conv2d_forward(float* y, const float* x, const float* w, const float* b, const Conv2dShape& s) {
  const int64_t Cg = s.C / s.G, Kg = s.K / s.G;
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t k = 0; k < s.K; ++k)
      for (int64_t p = 0; p < s.P; ++p)
        for (int64_t q = 0; q < s.Q; ++q) {
          double acc = b ? b[k] : 0.0;
          for (int64_t c = 0; c < Cg; ++c)
            for (int64_t r = 0; r < s.R; ++r)
              for (int64_t t = 0; t < s.S; ++t) {
                const int64_t h = p * s.sh - s.ph + r * s.dh, v = q * s.sw - s.pw + t * s.dw;
                if (h < 0 || h >= s.H || v < 0 || v >= s.W) continue;
                acc += double(x[((n * s.C + k / Kg * Cg + c) * s.H + h) * s.W + v]) *
                       w[((k * Cg + c) * s.R + r) * s.S + t];
              }
          y[((n * s.K + k) * s.P + p) * s.Q + q] = static_cast<float>(acc);
        }
}

// dy (N,K,P,Q) -> dx (N,C,H,W), dw (K,C/G,R,S), db (K)
void conv2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x,
                     const float* w, const Conv2dShape& s) {
  const int64_t Cg = s.C / s.G, Kg = s.K / s.G;
  std::vector<double> gx(s.N * s.C * s.H * s.W, 0.0), gw(s.K * Cg * s.R * s.S, 0.0),
      gb(s.K, 0.0);
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t k = 0; k < s.K; ++k)
      for (int64_t p = 0; p < s.P; ++p)
        for (int64_t q = 0; q < s.Q; ++q) {
          const double g = dy[((n * s.K + k) * s.P + p) * s.Q + q];
          gb[k] += g;
          for (int64_t c = 0; c < Cg; ++c)
            for (int64_t r = 0; r < s.R; ++r)
              for (int64_t t = 0; t < s.S; ++t) {
                const int64_t h = p * s.sh - s.ph + r * s.dh, v = q * s.sw - s.pw + t * s.dw;
                if (h < 0 || h >= s.H || v < 0 || v >= s.W) continue;
                const int64_t xi = ((n * s.C + k / Kg * Cg + c) * s.H + h) * s.W + v;
                const int64_t wi = ((k * Cg + c) * s.R + r) * s.S + t;
                if (dx) gx[xi] += g * w[wi];
                if (dw) gw[wi] += g * x[xi];
              }
        }
  if (dx) for (size_t i = 0; i < gx.size(); ++i) dx[i] = static_cast<float>(gx[i]);
  if (dw) for (size_t i = 0; i < gw.size(); ++i) dw[i] = static_cast<float>(gw[i]);
  if (db) for (size_t i = 0; i < gb.size(); ++i) db[i] = static_cast<float>(gb[i]);
}

// Visits the window of output (p, q) in row-major order; padding positions are skipped.
template <class F>
static void for_window(const Pool2dShape& s, int64_t p, int64_t q, F&& f) {
  for (int64_t r = 0; r < s.R; ++r)
    for (int64_t t = 0; t < s.S; ++t) {
      const int64_t h = p * s.sh - s.ph + r * s.dh, v = q * s.sw - s.pw + t * s.dw;
      if (h >= 0 && h < s.H && v >= 0 && v < s.W) f(h * s.W + v);
    }
}

void max_pool2d_forward(float* y, const float* x, const Pool2dShape& s) {
  for (int64_t nc = 0; nc < s.N * s.C; ++nc)
    for (int64_t p = 0; p < s.P; ++p)
      for (int64_t q = 0; q < s.Q; ++q) {
        const float* xp = x + nc * s.H * s.W;
        float m = -INFINITY;
        for_window(s, p, q, [&](int64_t i) { if (xp[i] > m || std::isnan(xp[i])) m = xp[i]; });
        y[(nc * s.P + p) * s.Q + q] = m;
      }
}

void max_pool2d_backward(float* dx, const float* dy, const float* x, const Pool2dShape& s) {
  for (int64_t i = 0; i < s.N * s.C * s.H * s.W; ++i) dx[i] = 0.f;
  for (int64_t nc = 0; nc < s.N * s.C; ++nc)
    for (int64_t p = 0; p < s.P; ++p)
      for (int64_t q = 0; q < s.Q; ++q) {
        const float* xp = x + nc * s.H * s.W;
        float m = -INFINITY;
        int64_t arg = -1;
        for_window(s, p, q, [&](int64_t i) {
          if (arg < 0 || xp[i] > m || std::isnan(xp[i])) { m = xp[i]; arg = i; }
        });
        if (arg >= 0) dx[nc * s.H * s.W + arg] += dy[(nc * s.P + p) * s.Q + q];
      }
}

void avg_pool2d_forward(float* y, const float* x, const Pool2dShape& s) {
  for (int64_t nc = 0; nc < s.N * s.C; ++nc)
    for (int64_t p = 0; p < s.P; ++p)
      for (int64_t q = 0; q < s.Q; ++q) {
        const float* xp = x + nc * s.H * s.W;
        double acc = 0.0;
        for_window(s, p, q, [&](int64_t i) { acc += xp[i]; });
        y[(nc * s.P + p) * s.Q + q] =
            static_cast<float>(acc / double(avg_pool2d_divisor(s, p, q)));
      }
}

void avg_pool2d_backward(float* dx, const float* dy, const Pool2dShape& s) {
  std::vector<double> g(s.N * s.C * s.H * s.W, 0.0);
  for (int64_t nc = 0; nc < s.N * s.C; ++nc)
    for (int64_t p = 0; p < s.P; ++p)
      for (int64_t q = 0; q < s.Q; ++q) {
        const double d = dy[(nc * s.P + p) * s.Q + q] / double(avg_pool2d_divisor(s, p, q));
        for_window(s, p, q, [&](int64_t i) { g[nc * s.H * s.W + i] += d; });
      }
  for (size_t i = 0; i < g.size(); ++i) dx[i] = static_cast<float>(g[i]);
}

// x (N, I), w (O, I), b (O) -> y (N, O)
void linear_forward(float* y, const float* x, const float* w, const float* b, int64_t N,
                    int64_t I, int64_t O) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o) {
      double acc = b ? b[o] : 0.0;
      for (int64_t i = 0; i < I; ++i) acc += double(x[n * I + i]) * w[o * I + i];
      y[n * O + o] = static_cast<float>(acc);
    }
}

}  // namespace ref
}  // namespace convkit
