// Resizing of image planes by two taps per axis (functional.interpolate's "nearest" and
// "bilinear"), and its gradient. The source indices and weights come from the caller (PyTorch's
// rules, in Python); this is the arithmetic, one plane per work item, so the bits do not depend
// on the thread count.
#include <algorithm>

#include "convkit/convkit.h"
#include "parallel.h"

namespace convkit {

void resize2d_forward(float* y, const float* x, int64_t planes, int64_t H, int64_t W, int64_t Ho,
                      int64_t Wo, const Resize2dTaps& t) {
  parallel_for(planes, 8.0 * planes * Ho * Wo, [&](int64_t p) {
    const float* xp = x + p * H * W;
    float* yp = y + p * Ho * Wo;
    for (int64_t i = 0; i < Ho; ++i) {
      const float* r0 = xp + t.h0[i] * W;
      float* row = yp + i * Wo;
      if (t.nearest) {
        for (int64_t j = 0; j < Wo; ++j) row[j] = r0[t.w0[j]];
        continue;
      }
      const float* r1 = xp + t.h1[i] * W;
      const float a0 = t.a0[i], a1 = t.a1[i];
      for (int64_t j = 0; j < Wo; ++j) {  // PyTorch's order: along the row, then down
        const float b0 = t.b0[j], b1 = t.b1[j];
        row[j] = a0 * (b0 * r0[t.w0[j]] + b1 * r0[t.w1[j]]) +
                 a1 * (b0 * r1[t.w0[j]] + b1 * r1[t.w1[j]]);
      }
    }
  });
}

void resize2d_backward(float* dx, const float* dy, int64_t planes, int64_t H, int64_t W,
                       int64_t Ho, int64_t Wo, const Resize2dTaps& t) {
  parallel_for(planes, 8.0 * planes * Ho * Wo, [&](int64_t p) {
    float* dp = dx + p * H * W;
    const float* gp = dy + p * Ho * Wo;
    std::fill(dp, dp + H * W, 0.f);
    for (int64_t i = 0; i < Ho; ++i) {  // every output's gradient to its taps, in output order
      float* r0 = dp + t.h0[i] * W;
      const float* g = gp + i * Wo;
      if (t.nearest) {
        for (int64_t j = 0; j < Wo; ++j) r0[t.w0[j]] += g[j];
        continue;
      }
      float* r1 = dp + t.h1[i] * W;
      const float a0 = t.a0[i], a1 = t.a1[i];
      for (int64_t j = 0; j < Wo; ++j) {
        const float b0 = t.b0[j], b1 = t.b1[j];
        r0[t.w0[j]] += a0 * b0 * g[j];
        r0[t.w1[j]] += a0 * b1 * g[j];
        r1[t.w0[j]] += a1 * b0 * g[j];
        r1[t.w1[j]] += a1 * b1 * g[j];
      }
    }
  });
}

}  // namespace convkit
