// The depthwise family's row kernels for AVX2 (KernelTable::conv_rows, conv_rows_k and
// conv_row_dots): the portable loops' products in the same order, in 8-float vectors with the
// running sums in registers, so the same bits as the portable loops and AVX-512's kernels.
// Compiled as the portable loops they replace were (-mavx2 -mfma: a + b * c contracted to FMA).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels.h"

namespace convkit {
namespace avx2 {
namespace {

// Lanes below n (0..8).
inline __m256i first(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// NV vectors of one output row from column q0 (n floats in the last one): bias, then the taps in
// order. Partial vectors are read with masked loads and written through a buffer (a masked
// store, vmaskmovps, takes ~13 cycles on AMD Zen 4).
template <int NV>
void row_block(float* y, const float* base, const int64_t* off, const float* w, int64_t ntaps,
               float bias, int64_t q0, int64_t n) {
  __m256 acc[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) acc[v] = _mm256_set1_ps(bias);
  const __m256i m = first(n);
  for (int64_t i = 0; i < ntaps; ++i) {
    const __m256 wv = _mm256_broadcast_ss(w + i);
    const float* s = base + off[i] + q0;
#pragma GCC unroll 4
    for (int v = 0; v < NV - 1; ++v) acc[v] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(s + 8 * v), acc[v]);
    acc[NV - 1] = _mm256_fmadd_ps(wv, _mm256_maskload_ps(s + 8 * (NV - 1), m), acc[NV - 1]);
  }
#pragma GCC unroll 4
  for (int v = 0; v < NV - 1; ++v) _mm256_storeu_ps(y + q0 + 8 * v, acc[v]);
  alignas(32) float last[8];
  _mm256_store_ps(last, acc[NV - 1]);
  std::memcpy(y + q0 + 8 * (NV - 1), last, sizeof(float) * n);
}

// T taps' 16 lanes (two vectors each) in registers through all the rows: per row and 16 columns
// one dy load and T tap loads; the last partial block adds only its lanes.
template <int T>
void dots_rows(float* lanes, const float* dy, int64_t dystep, int64_t nrows, int64_t Q,
               const float* base, int64_t bstep, const int64_t* off) {
  __m256 acc[T][2];
#pragma GCC unroll 6
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < 2; ++h) acc[t][h] = _mm256_loadu_ps(lanes + 16 * t + 8 * h);
  const int64_t Qf = Q - Q % 16, rest = Q - Qf;
  const __m256i m0 = first(std::min<int64_t>(8, rest)), m1 = first(std::max<int64_t>(0, rest - 8));
  for (int64_t p = 0; p < nrows; ++p) {
    const float* d = dy + p * dystep;
    const float* b = base + p * bstep;
    for (int64_t q = 0; q < Qf; q += 16) {
      const __m256 d0 = _mm256_loadu_ps(d + q), d1 = _mm256_loadu_ps(d + q + 8);
#pragma GCC unroll 6
      for (int t = 0; t < T; ++t) {
        acc[t][0] = _mm256_fmadd_ps(d0, _mm256_loadu_ps(b + off[t] + q), acc[t][0]);
        acc[t][1] = _mm256_fmadd_ps(d1, _mm256_loadu_ps(b + off[t] + q + 8), acc[t][1]);
      }
    }
    if (rest) {
      const __m256 d0 = _mm256_maskload_ps(d + Qf, m0), d1 = _mm256_maskload_ps(d + Qf + 8, m1);
      const __m256 k0 = _mm256_castsi256_ps(m0), k1 = _mm256_castsi256_ps(m1);
#pragma GCC unroll 6
      for (int t = 0; t < T; ++t) {
        const float* s = b + off[t] + Qf;
        acc[t][0] = _mm256_blendv_ps(
            acc[t][0], _mm256_fmadd_ps(d0, _mm256_maskload_ps(s, m0), acc[t][0]), k0);
        acc[t][1] = _mm256_blendv_ps(
            acc[t][1], _mm256_fmadd_ps(d1, _mm256_maskload_ps(s + 8, m1), acc[t][1]), k1);
      }
    }
  }
#pragma GCC unroll 6
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < 2; ++h) _mm256_storeu_ps(lanes + 16 * t + 8 * h, acc[t][h]);
}

}  // namespace

void conv_rows_avx2(float* y, int64_t ystep, int64_t nrows, int64_t Q, const float* base,
                    int64_t bstep, const int64_t* off, const float* w, int64_t ntaps,
                    float bias) {
  for (int64_t r = 0; r < nrows; ++r, y += ystep, base += bstep)
    for (int64_t q0 = 0; q0 < Q; q0 += 32) {
      const int64_t n = std::min<int64_t>(32, Q - q0), nv = (n + 7) / 8, last = n - 8 * (nv - 1);
      switch (nv) {
        case 1: row_block<1>(y, base, off, w, ntaps, bias, q0, last); break;
        case 2: row_block<2>(y, base, off, w, ntaps, bias, q0, last); break;
        case 3: row_block<3>(y, base, off, w, ntaps, bias, q0, last); break;
        default: row_block<4>(y, base, off, w, ntaps, bias, q0, last); break;
      }
    }
}

void conv_rows_k_avx2(float* y, int64_t ystep, int64_t kstep, int nk, int64_t nrows, int64_t Q,
                      const float* base, int64_t bstep, const int64_t* off, const float* w,
                      int64_t ntaps, const float* bias) {
  for (int j = 0; j < nk; ++j)
    conv_rows_avx2(y + j * kstep, ystep, nrows, Q, base, bstep, off, w + j * ntaps, ntaps,
                   bias ? bias[j] : 0.f);
}

void conv_row_dots_avx2(float* lanes, const float* dy, int64_t dystep, int64_t nrows, int64_t Q,
                        const float* base, int64_t bstep, const int64_t* off, int64_t ntaps) {
  using Fn = void (*)(float*, const float*, int64_t, int64_t, int64_t, const float*, int64_t,
                      const int64_t*);
  static constexpr Fn kFns[] = {nullptr, dots_rows<1>, dots_rows<2>, dots_rows<3>,
                                dots_rows<4>, dots_rows<5>, dots_rows<6>};
  for (int64_t i = 0; i < ntaps; i += 6) {  // up to 6 taps at a time: 12 running sums + 3
    const int64_t t = std::min<int64_t>(6, ntaps - i);
    kFns[t](lanes + 16 * i, dy, dystep, nrows, Q, base, bstep, off + i);
  }
}

}  // namespace avx2
}  // namespace convkit
