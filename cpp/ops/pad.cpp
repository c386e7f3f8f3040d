// Explicit padding of image planes in PyTorch's modes, and its gradient. conv2d uses it for
// padding_mode != "zeros" and for padding="same" with an even total (extra row/column at the
// bottom/right).
#include <algorithm>
#include <cstring>

#include "convkit/convkit.h"
#include "parallel.h"

namespace convkit {
namespace {

// The input index that output index o (of a dimension padded by `lo` in front) copies, or -1 for
// a zero. n > 0.
inline int64_t source(int64_t o, int64_t lo, int64_t n, int mode) {
  int64_t i = o - lo;
  if (i >= 0 && i < n) return i;
  switch (mode) {
    case 1: return i < 0 ? -i : 2 * (n - 1) - i;          // reflect (pad < n)
    case 2: return i < 0 ? 0 : n - 1;                     // replicate
    case 3: return ((i % n) + n) % n;                     // circular (pad <= n)
    default: return -1;                                   // zeros
  }
}

}  // namespace

void pad2d_forward(float* y, const float* x, int64_t planes, int64_t H, int64_t W, int64_t top,
                   int64_t bottom, int64_t left, int64_t right, int mode) {
  const int64_t Ho = H + top + bottom, Wo = W + left + right;
  parallel_for(planes, 16.0 * planes * Ho * Wo, [&](int64_t i) {
    const float* xp = x + i * H * W;
    float* yp = y + i * Ho * Wo;
    for (int64_t o = 0; o < Ho; ++o) {
      float* row = yp + o * Wo;
      const int64_t h = source(o, top, H, mode);
      if (h < 0) {
        std::fill(row, row + Wo, 0.f);
        continue;
      }
      const float* src = xp + h * W;
      for (int64_t v = 0; v < left; ++v) {
        const int64_t c = source(v, left, W, mode);
        row[v] = c < 0 ? 0.f : src[c];
      }
      std::memcpy(row + left, src, sizeof(float) * W);
      for (int64_t v = left + W; v < Wo; ++v) {
        const int64_t c = source(v, left, W, mode);
        row[v] = c < 0 ? 0.f : src[c];
      }
    }
  });
}

void pad2d_backward(float* dx, const float* dy, int64_t planes, int64_t H, int64_t W, int64_t top,
                    int64_t bottom, int64_t left, int64_t right, int mode) {
  const int64_t Ho = H + top + bottom, Wo = W + left + right;
  parallel_for(planes, 16.0 * planes * Ho * Wo, [&](int64_t i) {
    float* dp = dx + i * H * W;
    const float* gp = dy + i * Ho * Wo;
    std::fill(dp, dp + H * W, 0.f);
    // fixed order: output rows top to bottom, columns left to right
    for (int64_t o = 0; o < Ho; ++o) {
      const int64_t h = source(o, top, H, mode);
      if (h < 0) continue;
      float* row = dp + h * W;
      const float* g = gp + o * Wo;
      for (int64_t v = 0; v < Wo; ++v) {
        const int64_t c = source(v, left, W, mode);
        if (c >= 0) row[c] += g[v];
      }
    }
  });
}

}  // namespace convkit
