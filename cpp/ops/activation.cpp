// Elementwise activations: fixed-size chunks of the flat array per work item, each run by the
// ISA's vectorised loop.
#include <algorithm>

#include "convkit/convkit.h"
#include "kernels.h"
#include "parallel.h"

namespace convkit {

namespace {
constexpr int64_t kChunk = 1 << 15;
constexpr double kCostPerElem[] = {1, 1, 20, 20, 20};
}  // namespace

void activation_forward(Act a, float param, float* y, const float* x, int64_t n,
                        const float* add) {
  const auto kern = g_kernels->act_fwd;
  const int kind = static_cast<int>(a);
  parallel_for((n + kChunk - 1) / kChunk, kCostPerElem[kind] * n, [&](int64_t c) {
    const int64_t i0 = c * kChunk, len = std::min(kChunk, n - i0);
    if (add == nullptr) {
      kern(kind, param, y + i0, x + i0, len);
      return;
    }
    float* yc = y + i0;  // the chunk's sum, then f of it while it is in cache
    for (int64_t i = 0; i < len; ++i) yc[i] = x[i0 + i] + add[i0 + i];
    kern(kind, param, yc, yc, len);
  });
}

void activation_backward(Act a, float param, float* dx, const float* dy, const float* x, int64_t n) {
  const auto kern = g_kernels->act_bwd;
  const int kind = static_cast<int>(a);
  parallel_for((n + kChunk - 1) / kChunk, kCostPerElem[kind] * n, [&](int64_t c) {
    const int64_t i0 = c * kChunk, len = std::min(kChunk, n - i0);
    kern(kind, param, dx + i0, dy + i0, x + i0, len);
  });
}

}  // namespace convkit
