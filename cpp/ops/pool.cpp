// Pooling front-ends: one (H, W) plane per work item; planes never share memory, so results do
// not depend on the thread count. Forward uses the ISA's plane kernel; backward recomputes each
// window's argmax from x (max) or spreads dy evenly (avg), accumulating where windows overlap.
#include <algorithm>
#include <cmath>

#include "convkit/convkit.h"
#include "kernels.h"
#include "parallel.h"

namespace convkit {

void pool2d_out_size(Pool2dShape& s) {
  s.P = (s.H + 2 * s.ph - s.R) / s.sh + 1;
  s.Q = (s.W + 2 * s.pw - s.S) / s.sw + 1;
}

void max_pool2d_forward(float* y, const float* x, const Pool2dShape& s) {
  const int64_t HW = s.H * s.W, PQ = s.P * s.Q;
  const auto kern = g_kernels->maxpool_plane;
  parallel_for(s.N * s.C, 8.0 * s.N * s.C * PQ * s.R * s.S, [&](int64_t i) {
    kern(y + i * PQ, x + i * HW, s.H, s.W, s.P, s.Q, s.R, s.S, s.sh, s.sw, s.ph, s.pw);
  });
}

void max_pool2d_backward(float* dx, const float* dy, const float* x, const Pool2dShape& s) {
  const int64_t HW = s.H * s.W, PQ = s.P * s.Q;
  parallel_for(s.N * s.C, 8.0 * s.N * s.C * PQ * s.R * s.S, [&](int64_t i) {
    const float* xp = x + i * HW;
    const float* g = dy + i * PQ;
    float* d = dx + i * HW;
    if (s.R == 2 && s.S == 2 && s.sh == 2 && s.sw == 2 && s.ph == 0 && s.pw == 0) {
      g_kernels->maxpool2x2_bwd_plane(d, g, xp, s.H, s.W, s.P, s.Q);
      return;
    }
    std::fill(d, d + HW, 0.f);
    for (int64_t p = 0; p < s.P; ++p) {
      const int64_t h0 = p * s.sh - s.ph;
      const int64_t r0 = std::max<int64_t>(0, -h0), r1 = std::min(s.R, s.H - h0);
      for (int64_t q = 0; q < s.Q; ++q) {
        const int64_t w0 = q * s.sw - s.pw;
        const int64_t t0 = std::max<int64_t>(0, -w0), t1 = std::min(s.S, s.W - w0);
        // first maximum in row-major order; a NaN takes over, as PyTorch does
        int64_t arg = -1;
        float m = -INFINITY;
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t t = t0; t < t1; ++t) {
            const int64_t idx = (h0 + r) * s.W + w0 + t;
            const float v = xp[idx];
            if (arg < 0 || v > m || std::isnan(v)) {
              m = v;
              arg = idx;
            }
          }
        if (arg >= 0) d[arg] += g[p * s.Q + q];
      }
    }
  });
}

void avg_pool2d_forward(float* y, const float* x, const Pool2dShape& s) {
  const int64_t HW = s.H * s.W, PQ = s.P * s.Q;
  const auto kern = g_kernels->avgpool_plane;
  parallel_for(s.N * s.C, 8.0 * s.N * s.C * PQ * s.R * s.S, [&](int64_t i) {
    kern(y + i * PQ, x + i * HW, s.H, s.W, s.P, s.Q, s.R, s.S, s.sh, s.sw, s.ph, s.pw);
  });
}

void avg_pool2d_backward(float* dx, const float* dy, const Pool2dShape& s) {
  const int64_t HW = s.H * s.W, PQ = s.P * s.Q;
  const float inv = 1.f / static_cast<float>(s.R * s.S);
  parallel_for(s.N * s.C, 8.0 * s.N * s.C * PQ * s.R * s.S, [&](int64_t i) {
    const float* g = dy + i * PQ;
    float* d = dx + i * HW;
    std::fill(d, d + HW, 0.f);
    for (int64_t p = 0; p < s.P; ++p) {
      const int64_t h0 = p * s.sh - s.ph;
      const int64_t r0 = std::max<int64_t>(0, -h0), r1 = std::min(s.R, s.H - h0);
      for (int64_t q = 0; q < s.Q; ++q) {
        const int64_t w0 = q * s.sw - s.pw;
        const int64_t t0 = std::max<int64_t>(0, -w0), t1 = std::min(s.S, s.W - w0);
        const float v = g[p * s.Q + q] * inv;
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t t = t0; t < t1; ++t) d[(h0 + r) * s.W + w0 + t] += v;
      }
    }
  });
}

}  // namespace convkit
