// Input gradient of a stride-1 convolution with 16 images in the vector lanes
// (KernelTable::conv_dx_lanes). For layers with few input channels (too few for the GEMM
// tiles) and images too narrow for lanes along a row (LeNet's second layer: 6 input channels,
// 14 x 14 inputs), the batch fills the lanes instead: dy is transposed once per group of images
// to (k, p, q, image), each dx row is summed two columns at a time over only the (r, t) taps
// that reach dy (r, then t, then k ascending: the order of the AVX2 kernel, so the same bits),
// and the result is transposed back.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "kernels/avx512/avx512.h"
#include "transpose_avx512.h"

namespace convkit {
namespace avx512 {
namespace {

// dx of channels c0 .. c0 + CB - 1, row h, columns w0 and w0 + 1 (the second only if < W), into
// dxT (c, h, w) vectors. dyT holds dy as (k, p, 1 + q) vectors, Wd = Q + 2 columns, the two
// border columns zero: taps valid for one of the two columns read zeros for the other.
template <int CB>
void dx_pair(const DxLanesArgs& a, const float* dyT, float* dxT, int64_t c0, int64_t h,
             int64_t w0) {
  const int64_t RS = a.R * a.S, Wd = a.Q + 2, K = a.K, P = a.P, S = a.S, CRS = a.C * RS;
  const int64_t r0 = std::max<int64_t>(0, h + a.ph - P + 1), r1 = std::min(a.R - 1, h + a.ph);
  const int64_t t0 = std::max<int64_t>(0, w0 + a.pw - a.Q + 1);
  const int64_t t1 = std::min(S - 1, w0 + 1 + a.pw);
  __m512 acc[CB][2];
#pragma GCC unroll 6
  for (int c = 0; c < CB; ++c) acc[c][0] = acc[c][1] = _mm512_setzero_ps();
  // k innermost: a fixed trip count for the hot loop (the taps' ranges vary at the edges)
  for (int64_t r = r0; r <= r1; ++r)
    for (int64_t t = t0; t <= t1; ++t) {
      const float* d = dyT + 16 * ((h + a.ph - r) * Wd + 1 + w0 + a.pw - t);
      const float* wt = a.w + c0 * RS + r * S + t;
      for (int64_t k = 0; k < K; ++k) {
        const float* dk = d + 16 * k * P * Wd;
        const __m512 d0 = _mm512_loadu_ps(dk), d1 = _mm512_loadu_ps(dk + 16);
#pragma GCC unroll 6
        for (int c = 0; c < CB; ++c) {
          const __m512 wv = _mm512_set1_ps(wt[k * CRS + c * RS]);
          acc[c][0] = _mm512_fmadd_ps(wv, d0, acc[c][0]);
          acc[c][1] = _mm512_fmadd_ps(wv, d1, acc[c][1]);
        }
      }
    }
#pragma GCC unroll 6
  for (int c = 0; c < CB; ++c) {
    float* o = dxT + 16 * (((c0 + c) * a.H + h) * a.W + w0);
    _mm512_storeu_ps(o, acc[c][0]);
    if (w0 + 1 < a.W) _mm512_storeu_ps(o + 16, acc[c][1]);
  }
}

template <int CB>
void dx_rows(const DxLanesArgs& a, const float* dyT, float* dxT, int64_t c0) {
  for (int64_t h = 0; h < a.H; ++h)
    for (int64_t w0 = 0; w0 < a.W; w0 += 2) dx_pair<CB>(a, dyT, dxT, c0, h, w0);
}

}  // namespace

void conv_dx_lanes_avx512(const DxLanesArgs& a, int64_t n0) {
  const int nimg = static_cast<int>(std::min<int64_t>(16, a.N - n0));
  float* dyT = a.buf;
  float* dxT = dyT + 16 * a.K * a.P * (a.Q + 2);
  images_to_lanes(dyT, a.dy, n0, nimg, a.K, a.P, a.Q, 0, a.P, 1, a.Q + 2);
  for (int64_t c0 = 0; c0 < a.C; c0 += 6) {
    switch (std::min<int64_t>(6, a.C - c0)) {
      case 1: dx_rows<1>(a, dyT, dxT, c0); break;
      case 2: dx_rows<2>(a, dyT, dxT, c0); break;
      case 3: dx_rows<3>(a, dyT, dxT, c0); break;
      case 4: dx_rows<4>(a, dyT, dxT, c0); break;
      case 5: dx_rows<5>(a, dyT, dxT, c0); break;
      default: dx_rows<6>(a, dyT, dxT, c0); break;
    }
  }
  lanes_to_images(a.dx, a.H * a.W, dxT, a.C, a.H * a.W, n0, nimg);
}

}  // namespace avx512
}  // namespace convkit
