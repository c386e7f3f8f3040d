// Transposes shared by the AVX-512 kernel files (each compiled with the AVX-512 flags).
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels.h"
#include "kernels/transpose8.h"

namespace convkit {
namespace avx512 {

// In-register 16 x 16 transpose: lane j of r[i] goes to lane i of r[j].
static inline void transpose16(__m512* r) {
  __m512 t[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    r[4 * i + 0] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0xEE);
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xDD);
    t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xDD);
  }
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
  }
}

// Rows to lanes for one 16 x cnt block: d[16 * j + l] = s[l * ld + j] for j < cnt (<= 16),
// l < 16 (0 for l >= nrows).
static inline void block_to_lanes16(float* d, const float* s, int64_t ld, int nrows,
                                    int64_t cnt) {
  const __mmask16 m = static_cast<__mmask16>((1u << cnt) - 1u);
  __m512 r[16];
#pragma GCC unroll 16
  for (int l = 0; l < 16; ++l)
    r[l] = l < nrows ? _mm512_maskz_loadu_ps(m, s + l * ld) : _mm512_setzero_ps();
  transpose16(r);
  // constant indices: a runtime-indexed r lived on the stack and was copied out with memcpy
#pragma GCC unroll 16
  for (int j = 0; j < 16; ++j)
    if (j < cnt) _mm512_storeu_ps(d + 16 * j, r[j]);
}

// Images n0 .. n0 + nimg - 1 (nimg <= 16) of x (N, C, H, W) into the vector lanes: for c < C,
// i < rows, j < Wt,  dst[((c * cs + i) * Wt + j) * 16 + l] = x[n0 + l][c][h0 + i][j - pl],
// zero where that row or column is outside the image and in lanes l >= nimg; cs (rows a
// channel's block holds) is rows unless given.
static inline void images_to_lanes(float* dst, const float* x, int64_t n0, int nimg, int64_t C,
                                   int64_t H, int64_t W, int64_t h0, int64_t rows, int64_t pl,
                                   int64_t Wt, int64_t cs = 0) {
  const int64_t HW = H * W;
  if (cs == 0) cs = rows;
  // With KernelTable::wide_fma (AMD EPYC Zen 5), each block first asks for the same columns two
  // rows down in the 16 images: 16 rows a whole image apart are 16 streams, more than the
  // hardware prefetchers follow, and the loads waited on memory. ResNet-20's lanes layers, the
  // rows forced, 1 thread, process time, minima (medians) of 10 alternating processes, without
  // against with, ms: weight gradient (128, 16, 32, 32) -> 16 4.63 (5.64) against 3.95 (5.01),
  // (128, 32, 16, 16) -> 32 3.04 (3.71) against 2.57 (3.65), (128, 64, 8, 8) -> 64 2.56 (3.49)
  // against 2.42 (3.18); forward 3.98 (4.67) against 3.88 (4.40), 2.69 (3.38) against 2.51
  // (3.31), 2.38 (2.83) against 2.27 (2.57). (Four rows ahead, 2 threads, measured between the
  // two. On a Zen 3, AVX2's prefetch of the next channel's rows was slower: lanes_avx2.h.)
  const bool prefetch = g_kernels->wide_fma;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < rows; ++i) {
      float* d = dst + 16 * (c * cs + i) * Wt;
      const int64_t h = h0 + i;
      if (h < 0 || h >= H) {
        std::memset(d, 0, sizeof(float) * 16 * Wt);
        continue;
      }
      std::memset(d, 0, sizeof(float) * 16 * pl);
      std::memset(d + 16 * (pl + W), 0, sizeof(float) * 16 * (Wt - pl - W));
      for (int64_t w0 = 0; w0 < W; w0 += 16) {
        const float* s = x + (n0 * C + c) * HW + h * W + w0;
        if (prefetch)  // (past the plane's last row: the next plane's, never a fault)
          for (int l = 0; l < nimg; ++l)
            _mm_prefetch(reinterpret_cast<const char*>(s + l * C * HW + 2 * W), _MM_HINT_T0);
        block_to_lanes16(d + 16 * (pl + w0), s, C * HW, nimg, std::min<int64_t>(16, W - w0));
      }
    }
}

// A batch norm's terms for one channel as vectors, and bn_affine's arithmetic on v (the same
// operations in the same order as its AVX-512 code: ((v - mh) - ml) * alpha + beta as one
// multiply-add, + add, then v < 0 ? 0 : v, which keeps NaN and -0).
struct BnLanes16 {
  __m512 mh, ml, alpha, beta;
  BnLanes16(const BnTerms* t, int64_t k)  // (t null: unused)
      : mh(_mm512_set1_ps(t ? t->mh[k] : 0.f)), ml(_mm512_set1_ps(t ? t->ml[k] : 0.f)),
        alpha(_mm512_set1_ps(t ? t->alpha[k] : 0.f)),
        beta(_mm512_set1_ps(t ? t->beta[k] : 0.f)) {}
  __m512 operator()(__m512 v, __mmask16 m, const float* add, bool relu) const {
    v = _mm512_fmadd_ps(_mm512_sub_ps(_mm512_sub_ps(v, mh), ml), alpha, beta);
    if (add) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, add));
    if (relu) v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NLT_UQ), v);
    return v;
  }
};

// Back out of the lanes: for k < K, j < npos, l < nimg,
//   y[((n0 + l) * K + k) * PQ + j] = src[(k * npos + j) * 16 + l]
// then, with BN, t applied to it (add: t.add's values at y's positions, or null). Returns false
// if a value out of the lanes (before t) is NaN or infinite.
template <bool BN>
static inline bool lanes_to_images_t(float* y, int64_t PQ, const float* src, int64_t K,
                                     int64_t npos, int64_t n0, int nimg, const BnTerms* t,
                                     const float* add) {
  const __m512 zero = _mm512_setzero_ps();
  const bool relu = BN && t->relu;
  __mmask16 bad = 0;
  for (int64_t k = 0; k < K; ++k) {
    const BnLanes16 bn(BN ? t : nullptr, k);
    for (int64_t j0 = 0; j0 < npos; j0 += 16) {
      const int64_t cnt = std::min<int64_t>(16, npos - j0);
      const __mmask16 m = static_cast<__mmask16>((1u << cnt) - 1u);
      __m512 r[16];
#pragma GCC unroll 16
      for (int l = 0; l < 16; ++l)
        r[l] = l < cnt ? _mm512_loadu_ps(src + 16 * (k * npos + j0 + l)) : zero;
      transpose16(r);
      for (int n = 0; n < nimg; ++n) {
        const int64_t off = ((n0 + n) * K + k) * PQ + j0;
        bad |= _mm512_mask_cmp_ps_mask(m, _mm512_sub_ps(r[n], r[n]), zero, _CMP_NEQ_UQ);
        const __m512 v = BN ? bn(r[n], m, add ? add + off : nullptr, relu) : r[n];
        _mm512_mask_storeu_ps(y + off, m, v);
      }
    }
  }
  return bad == 0;
}

static inline bool lanes_to_images(float* y, int64_t PQ, const float* src, int64_t K,
                                   int64_t npos, int64_t n0, int nimg) {
  return lanes_to_images_t<false>(y, PQ, src, K, npos, n0, nimg, nullptr, nullptr);
}

// KernelTable::transpose in 8 x 8 blocks of 256-bit registers, edges through masks.
static inline void transpose_avx512(float* dst, int64_t ds, const float* src, int64_t ss,
                                    int64_t m, int64_t n) {
  for (int64_t i = 0; i < m; i += 8) {
    const int rows = static_cast<int>(std::min<int64_t>(8, m - i));
    const __mmask8 rm = static_cast<__mmask8>((1u << rows) - 1u);
    for (int64_t k = 0; k < n; k += 8) {
      const int64_t cols = std::min<int64_t>(8, n - k);
      const __mmask8 cm = static_cast<__mmask8>((1u << cols) - 1u);
      __m256 r[8];
#pragma GCC unroll 8
      for (int q = 0; q < 8; ++q)
        r[q] = q < rows ? _mm256_maskz_loadu_ps(cm, src + (i + q) * ss + k) : _mm256_setzero_ps();
      transpose8(r);
#pragma GCC unroll 8
      for (int q = 0; q < 8; ++q)
        if (q < cols) _mm256_mask_storeu_ps(dst + (k + q) * ds + i, rm, r[q]);
    }
  }
}

}  // namespace avx512
}  // namespace convkit
