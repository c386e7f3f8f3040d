// AVX2 helpers shared by the kernels that hold 16 images in the lanes (as two 8-float halves):
// the moves of images into and out of the lanes (through kernels/transpose8.h), and partial
// stores. Included by the AVX2 kernel files (all compiled with -mavx2 -mfma).
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels.h"
#include "kernels/transpose8.h"

namespace convkit {
namespace avx2 {

// Stores the first n (0..8) lanes of v. A masked store (vmaskmovps) takes ~13 cycles on AMD Zen
// 4 against ~1 for this: whole vector, 4, 2, 1 floats as n needs.
inline void store_first(float* p, __m256 v, int64_t n) {
  if (n >= 8) {
    _mm256_storeu_ps(p, v);
    return;
  }
  __m128 h = _mm256_castps256_ps128(v);
  if (n >= 4) {
    _mm_storeu_ps(p, h);
    h = _mm256_extractf128_ps(v, 1);
    p += 4, n -= 4;
  }
  if (n >= 2) {
    _mm_storel_pi(reinterpret_cast<__m64*>(p), h);
    h = _mm_movehl_ps(h, h);
    p += 2, n -= 2;
  }
  if (n >= 1) _mm_store_ss(p, h);
}

// lanes 0 .. n - 1 set (n in 0..8)
inline __m256i first_lanes(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Images n0 .. n0 + nimg - 1 (nimg <= 16) of x (N, C, H, W) into 16 lanes: for c < C,
// i < rows, j < Wt,  dst[((c * cs + i) * Wt + j) * 16 + l] = x[n0 + l][c][h0 + i][j - pl],
// zero where that row or column is outside the image and in lanes l >= nimg; cs (rows if 0)
// rows apart per channel. 8 images x 8 columns at a time through a register transpose (plain
// loads for whole blocks of 8 columns, masked ones for the last); only the padding columns are
// zeroed first, the stores cover the rest.
inline void images_to_lanes(float* dst, const float* x, int64_t n0, int nimg, int64_t C,
                              int64_t H, int64_t W, int64_t h0, int64_t rows, int64_t pl,
                              int64_t Wt, int64_t cs = 0) {
  if (cs == 0) cs = rows;
  const int64_t S = C * H * W;  // one image to the next in x
  const int64_t pr = std::max<int64_t>(0, Wt - pl - W);  // zero columns on the right
  // Not when the images lie a multiple of 4 KiB apart (ResNet-20's 16 x 32 x 32, 32 x 16 x 16,
  // 64 x 8 x 8): then the 16 images' rows share their L1 and L2 sets (8 ways each), and the
  // prefetched rows evict the rows being read. Evaluation-mode conv2d_bn with a residual, AMD
  // EPYC Zen 3, medians of 9 alternating processes, with against without: (128, 16, 32, 32) ->
  // 16 7.37 against 6.91 ms at 1 thread, 5.05 against 4.74 at 2; (128, 32, 16, 16) -> 32 4.36
  // against 3.95 at 2. (128, 16, 28, 28), which keeps it: 4.97 and 5.00 at 1.
  const bool prefetch = S * sizeof(float) % 4096 != 0;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t h = h0 + i;
      float* row = dst + 16 * (c * cs + i) * Wt;
      if (h < 0 || h >= H) {
        std::memset(row, 0, sizeof(float) * 16 * Wt);
        continue;
      }
      // the stores below write every lane of columns pl .. pl + W - 1 (zeros past nimg)
      std::memset(row, 0, sizeof(float) * 16 * pl);
      std::memset(row + 16 * (pl + W), 0, sizeof(float) * 16 * pr);
      float* d = row + 16 * pl;
      const float* src = x + (n0 * C + c) * H * W + h * W;
      if (prefetch && c + 1 < C)  // the same row of the next channel: 16 images' rows
        for (int l = 0; l < nimg; ++l)
          for (int64_t j = 0; j < W; j += 16)
            _mm_prefetch(reinterpret_cast<const char*>(src + l * S + H * W + j), _MM_HINT_T0);
      for (int l0 = 0; l0 < 16; l0 += 8)
        for (int64_t j0 = 0; j0 < W; j0 += 8) {
          const int cnt = static_cast<int>(std::min<int64_t>(8, W - j0));
          __m256 r[8];
          if (cnt == 8) {
            for (int l = 0; l < 8; ++l)
              r[l] = l0 + l < nimg ? _mm256_loadu_ps(src + (l0 + l) * S + j0)
                                   : _mm256_setzero_ps();
          } else {
            const __m256i m = first_lanes(cnt);
            for (int l = 0; l < 8; ++l)
              r[l] = l0 + l < nimg ? _mm256_maskload_ps(src + (l0 + l) * S + j0, m)
                                   : _mm256_setzero_ps();
          }
          transpose8(r);
          for (int j = 0; j < cnt; ++j) _mm256_storeu_ps(d + 16 * (j0 + j) + l0, r[j]);
        }
    }
}

// A batch norm's terms for one channel as vectors, and bn_affine's arithmetic on v (the same
// operations in the same order: ((v - mh) - ml) * alpha + beta as one multiply-add, + add, then
// v < 0 ? 0 : v, which keeps NaN and -0).
struct BnLanes {
  __m256 mh, ml, alpha, beta;
  BnLanes(const BnTerms* t, int64_t k)  // (t null: unused)
      : mh(_mm256_set1_ps(t ? t->mh[k] : 0.f)), ml(_mm256_set1_ps(t ? t->ml[k] : 0.f)),
        alpha(_mm256_set1_ps(t ? t->alpha[k] : 0.f)), beta(_mm256_set1_ps(t ? t->beta[k] : 0.f)) {}
  __m256 operator()(__m256 v, const float* add, bool relu) const {
    v = _mm256_fmadd_ps(_mm256_sub_ps(_mm256_sub_ps(v, mh), ml), alpha, beta);
    if (add) v = _mm256_add_ps(v, _mm256_loadu_ps(add));
    if (relu) v = _mm256_andnot_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ), v);
    return v;
  }
};

// Back out of the lanes: for k < K, j < npos, l < nimg,
//   y[((n0 + l) * K + k) * PQ + j] = src[(k * npos + j) * 16 + l]
// then, with BN, t applied to it (add: t.add's values at y's positions, or null). Returns false
// if a value out of the lanes (before t) is NaN or infinite.
template <bool BN>
inline bool lanes_to_images_t(float* y, int64_t PQ, const float* src, int64_t K, int64_t npos,
                              int64_t n0, int nimg, const BnTerms* t, const float* add) {
  const __m256 zero = _mm256_setzero_ps();
  // NaN and infinities: v - v is not 0. Finite values give +0 (all bits clear), the others
  // NaN, so OR-ing the differences keeps a NaN in any lane that saw one.
  __m256 bad = zero;
  const int64_t S = K * PQ;  // one image to the next in y
  const int64_t full = npos / 8 * 8;
  const bool relu = BN && t->relu;
  for (int64_t k = 0; k < K; ++k) {
    const float* sk = src + 16 * k * npos;
    const BnLanes bn(BN ? t : nullptr, k);
    for (int l0 = 0; l0 < nimg; l0 += 8) {
      const int64_t off = ((n0 + l0) * K + k) * PQ;
      float* o = y + off;
      const float* ao = BN && add ? add + off : nullptr;
      const int nl = std::min(8, nimg - l0);
      int64_t j0 = 0;
      if (nl == 8)  // whole blocks: every lane stored, so the check needs no mask
        for (; j0 < full; j0 += 8) {
          __m256 r[8];
#pragma GCC unroll 8
          for (int j = 0; j < 8; ++j) {
            r[j] = _mm256_loadu_ps(sk + 16 * (j0 + j) + l0);
            bad = _mm256_or_ps(bad, _mm256_sub_ps(r[j], r[j]));
          }
          transpose8(r);
#pragma GCC unroll 8
          for (int l = 0; l < 8; ++l) {
            if (BN) r[l] = bn(r[l], ao ? ao + l * S + j0 : nullptr, relu);
            _mm256_storeu_ps(o + l * S + j0, r[l]);
          }
        }
      for (; j0 < npos; j0 += 8) {  // the last positions, or fewer than 8 images
        const int cnt = static_cast<int>(std::min<int64_t>(8, npos - j0));
        const __m256 m = _mm256_castsi256_ps(first_lanes(cnt));
        __m256 r[8];
        for (int j = 0; j < 8; ++j)
          r[j] = j < cnt ? _mm256_loadu_ps(sk + 16 * (j0 + j) + l0) : zero;
        transpose8(r);
        for (int l = 0; l < nl; ++l) {
          float* ol = o + l * S + j0;
          bad = _mm256_or_ps(bad, _mm256_and_ps(m, _mm256_sub_ps(r[l], r[l])));
          alignas(32) float a8[8] = {};
          if (BN && ao) std::memcpy(a8, ao + l * S + j0, sizeof(float) * cnt);
          if (BN) r[l] = bn(r[l], ao ? a8 : nullptr, relu);
          if (cnt == 8) {
            _mm256_storeu_ps(ol, r[l]);
          } else {  // a masked store takes ~13 cycles on AMD Zen 4
            alignas(32) float tmp[8];
            _mm256_store_ps(tmp, r[l]);
            std::memcpy(ol, tmp, sizeof(float) * cnt);
          }
        }
      }
    }
  }
  return _mm256_movemask_ps(_mm256_cmp_ps(bad, bad, _CMP_UNORD_Q)) == 0;
}

inline bool lanes_to_images(float* y, int64_t PQ, const float* src, int64_t K, int64_t npos,
                            int64_t n0, int nimg) {
  return lanes_to_images_t<false>(y, PQ, src, K, npos, n0, nimg, nullptr, nullptr);
}

}  // namespace avx2
}  // namespace convkit
