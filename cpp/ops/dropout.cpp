// Inverted dropout. The mask comes from a counter-based generator (SplitMix64 of seed and index),
// so element i's coin depends only on (seed, i): any thread count gives the same mask.
#include <algorithm>

#include "convkit/convkit.h"
#include "parallel.h"

namespace convkit {

namespace {
inline uint64_t splitmix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
constexpr int64_t kChunk = 1 << 14;
}  // namespace

void dropout_forward(float* y, float* mask, const float* x, int64_t n, float p, uint64_t seed) {
  if (p <= 0.f) {  // keeps everything (also eval mode): no coins to draw
    parallel_for((n + kChunk - 1) / kChunk, 1.0 * n, [&](int64_t c) {
      for (int64_t i = c * kChunk, e = std::min(n, i + kChunk); i < e; ++i) {
        y[i] = x[i];
        mask[i] = 1.f;
      }
    });
    return;
  }
  const float scale = p < 1.f ? 1.f / (1.f - p) : 0.f;
  const uint64_t key = splitmix64(seed);
  parallel_for((n + kChunk - 1) / kChunk, 10.0 * n, [&](int64_t c) {
    for (int64_t i = c * kChunk, e = std::min(n, i + kChunk); i < e; ++i) {
      // 24 random bits -> uniform in [0, 1)
      const float u = static_cast<float>(splitmix64(key ^ static_cast<uint64_t>(i)) >> 40) *
                      (1.f / 16777216.f);
      const bool keep = u >= p;
      mask[i] = keep ? 1.f : 0.f;
      y[i] = x[i] * (keep ? scale : 0.f);  // NaN * 0 stays NaN, as in PyTorch
    }
  });
}

void dropout_backward(float* dx, const float* dy, const float* mask, int64_t n, float p) {
  const float scale = p < 1.f ? 1.f / (1.f - p) : 0.f;
  parallel_for((n + kChunk - 1) / kChunk, 2.0 * n, [&](int64_t c) {
    for (int64_t i = c * kChunk, e = std::min(n, i + kChunk); i < e; ++i)
      dx[i] = dy[i] * (mask[i] * scale);
  });
}

}  // namespace convkit
