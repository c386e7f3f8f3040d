// Row copies: zero-padded rows and rows split into their column phases.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/avx512/avx512.h"
#include "transpose_avx512.h"

namespace convkit {
namespace avx512 {
// masks. Output columns j < Wt hold input column j - pl.
static void pad_rows_avx512(float* dst, int64_t dstride, const float* src, int64_t sstride,
                            int64_t nrows, int64_t W, int64_t pl, int64_t Wt) {
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i vw = _mm512_set1_epi32(static_cast<int>(W)), zero = _mm512_setzero_si512();
  for (int64_t i = 0; i < nrows; ++i) {
    float* d = dst + i * dstride;
    const float* s = src ? src + i * sstride - pl : nullptr;  // s[j] is the value of column j
    for (int64_t j = 0; j < Wt; j += 16) {
      const __mmask16 mt = Wt - j >= 16 ? __mmask16(0xffff) : __mmask16((1u << (Wt - j)) - 1u);
      __m512 v = _mm512_setzero_ps();
      if (s) {
        const __m512i col = _mm512_add_epi32(iota, _mm512_set1_epi32(static_cast<int>(j - pl)));
        const __mmask16 m = mt & _mm512_cmpge_epi32_mask(col, zero) & _mm512_cmplt_epi32_mask(col, vw);
        v = _mm512_maskz_loadu_ps(m, s + j);
      }
      _mm512_mask_storeu_ps(d + j, mt, v);
    }
  }
}

// The masks of phase_split_rows' stride-S kernels, for all rows: block b of 16 output columns
// reads S vectors of input, load q from input column 16 (S b + q) - pw; ml[b][q] marks its lanes
// inside [0, W), mj[b] the output columns below Wq. Returns the number of blocks (Wq <= 256).
template <int S>
static int split_masks(__mmask16 (*ml)[S], __mmask16* mj, int64_t W, int64_t pw, int64_t Wq) {
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i vw = _mm512_set1_epi32(static_cast<int>(W)), zero = _mm512_setzero_si512();
  const int nb = static_cast<int>((Wq + 15) / 16);
  for (int b = 0; b < nb; ++b) {
    for (int q = 0; q < S; ++q) {
      const int first = static_cast<int>(16 * (S * b + q) - pw);  // input column of lane 0
      const __m512i c = _mm512_add_epi32(iota, _mm512_set1_epi32(first));
      ml[b][q] = _mm512_cmpge_epi32_mask(c, zero) & _mm512_cmplt_epi32_mask(c, vw);
    }
    const int64_t j0 = 16 * b;
    mj[b] = Wq - j0 >= 16 ? __mmask16(0xffff) : __mmask16((1u << (Wq - j0)) - 1u);
  }
  return nb;
}

// phase_split_rows for sw = 4: 64 input columns per step, split into even and odd lanes and
// each of those again (six permutes), the column masks computed once for all rows.
static void phase_split4_rows(float* dst, int64_t dstep, int64_t fstride, const float* src,
                              int64_t sstep, int64_t nrows, int64_t W, int64_t pw, int64_t Wq) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  __mmask16 ml[16][4], mj[16];  // source lanes of the four loads, destination lanes
  const int nb = split_masks<4>(ml, mj, W, pw, Wq);
  for (int64_t i = 0; i < nrows; ++i) {
    const float* r = src + i * sstep - pw;
    float* d = dst + i * dstep;
    for (int b = 0; b < nb; ++b) {
      __m512 v[4];
      for (int q = 0; q < 4; ++q) v[q] = _mm512_maskz_loadu_ps(ml[b][q], r + 64 * b + 16 * q);
      const __m512 e0 = _mm512_permutex2var_ps(v[0], even, v[1]);  // columns 0, 2, .. 30
      const __m512 o0 = _mm512_permutex2var_ps(v[0], odd, v[1]);
      const __m512 e1 = _mm512_permutex2var_ps(v[2], even, v[3]);  // columns 32, 34, .. 62
      const __m512 o1 = _mm512_permutex2var_ps(v[2], odd, v[3]);
      float* o = d + 16 * b;
      _mm512_mask_storeu_ps(o, mj[b], _mm512_permutex2var_ps(e0, even, e1));  // 0, 4, .. 60
      _mm512_mask_storeu_ps(o + fstride, mj[b], _mm512_permutex2var_ps(o0, even, o1));
      _mm512_mask_storeu_ps(o + 2 * fstride, mj[b], _mm512_permutex2var_ps(e0, odd, e1));
      _mm512_mask_storeu_ps(o + 3 * fstride, mj[b], _mm512_permutex2var_ps(o0, odd, o1));
    }
  }
}

// phase_split_rows for sw = 3: 48 input columns per step, each phase's 16 lanes from the three
// loads with two permutes (the first two loads, then the third), the column masks computed once
// for all rows (the portable loop, a column at a time, made a dilation-3 layer's phases 2x
// slower to split than to convolve).
static void phase_split3_rows(float* dst, int64_t dstep, int64_t fstride, const float* src,
                              int64_t sstep, int64_t nrows, int64_t W, int64_t pw, int64_t Wq) {
  __m512i first2[3], third[3];  // lane l of phase f is column 3l + f of the block's 48
  for (int f = 0; f < 3; ++f) {
    alignas(64) int32_t a[16], b[16];
    for (int l = 0; l < 16; ++l) {
      const int c = 3 * l + f;
      a[l] = c < 32 ? c : 0;              // from load 0 or 1
      b[l] = c < 32 ? l : 16 + (c - 32);  // kept, or from load 2
    }
    first2[f] = _mm512_load_si512(a);
    third[f] = _mm512_load_si512(b);
  }
  __mmask16 ml[16][3], mj[16];  // source lanes of the three loads, destination lanes
  const int nb = split_masks<3>(ml, mj, W, pw, Wq);
  for (int64_t i = 0; i < nrows; ++i) {
    const float* r = src + i * sstep - pw;
    float* d = dst + i * dstep;
    for (int b = 0; b < nb; ++b) {
      __m512 v[3];
      for (int q = 0; q < 3; ++q) v[q] = _mm512_maskz_loadu_ps(ml[b][q], r + 48 * b + 16 * q);
      for (int f = 0; f < 3; ++f) {
        const __m512 t = _mm512_permutex2var_ps(v[0], first2[f], v[1]);
        _mm512_mask_storeu_ps(d + f * fstride + 16 * b, mj[b],
                              _mm512_permutex2var_ps(t, third[f], v[2]));
      }
    }
  }
}

// phase_split_rows for sw = 2: 32 input columns per step, split into even and odd lanes with two
// permutes, the column masks computed once for all rows; other strides take the portable loop.
void phase_split_rows_avx512(float* dst, int64_t dstep, int64_t fstride, const float* src,
                                    int64_t sstep, int64_t nrows, int64_t W, int64_t pw,
                                    int64_t sw, int64_t Wq) {
  if (sw == 1) {
    pad_rows_avx512(dst, dstep, src, sstep, nrows, W, pw, Wq);
    return;
  }
  if (sw == 4 && src && Wq <= 256) {
    phase_split4_rows(dst, dstep, fstride, src, sstep, nrows, W, pw, Wq);
    return;
  }
  if (sw == 3 && src && Wq <= 256) {
    phase_split3_rows(dst, dstep, fstride, src, sstep, nrows, W, pw, Wq);
    return;
  }
  if (sw != 2 || !src || Wq > 256) {
    portable_phase_split_rows(dst, dstep, fstride, src, sstep, nrows, W, pw, sw, Wq);
    return;
  }
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  __mmask16 ml[16][2], mj[16];  // source lanes of the two loads, destination lanes
  const int nb = split_masks<2>(ml, mj, W, pw, Wq);
  for (int64_t i = 0; i < nrows; ++i) {
    const float* r = src + i * sstep - pw;
    float* d = dst + i * dstep;
    for (int b = 0; b < nb; ++b) {
      const __m512 lo = _mm512_maskz_loadu_ps(ml[b][0], r + 32 * b);
      const __m512 hi = _mm512_maskz_loadu_ps(ml[b][1], r + 32 * b + 16);
      _mm512_mask_storeu_ps(d + 16 * b, mj[b], _mm512_permutex2var_ps(lo, even, hi));
      _mm512_mask_storeu_ps(d + fstride + 16 * b, mj[b], _mm512_permutex2var_ps(lo, odd, hi));
    }
  }
}
// phase_merge_row for sw = 2: 32 output columns per step, interleaved from 16 values of each
// phase with two permutes; other strides take the portable loop.
void phase_merge_row_avx512(float* dst, const float* src, int64_t fstride, int64_t sw,
                            int64_t first, int64_t n) {
  if (sw != 2 || n <= 0) {
    portable_phase_merge_row(dst, src, fstride, sw, first, n);
    return;
  }
  int64_t k = 0, j = first / 2;
  if (first % 2) {  // an odd first column: it comes from phase 1
    dst[0] = src[fstride + j];
    k = 1;
    ++j;
  }
  const float* a = src + j;            // even columns from here on
  const float* b = src + fstride + j;  // odd ones
  const __m512i lo_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi_idx = _mm512_add_epi32(lo_idx, _mm512_set1_epi32(8));
  const int64_t m = n - k;  // columns left: a[0], b[0], a[1], b[1], ...
  for (int64_t i = 0; i < m; i += 32) {
    const int64_t left = m - i;
    const int64_t na = std::min<int64_t>(16, (left + 1) / 2), nb = std::min<int64_t>(16, left / 2);
    const __m512 va = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << na) - 1u), a + i / 2);
    const __m512 vb = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << nb) - 1u), b + i / 2);
    const __mmask16 mlo = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1u);
    const __mmask16 mhi = left >= 32   ? __mmask16(0xffff)
                          : left <= 16 ? __mmask16(0)
                                       : __mmask16((1u << (left - 16)) - 1u);
    _mm512_mask_storeu_ps(dst + k + i, mlo, _mm512_permutex2var_ps(va, lo_idx, vb));
    _mm512_mask_storeu_ps(dst + k + i + 16, mhi, _mm512_permutex2var_ps(va, hi_idx, vb));
  }
}

}  // namespace avx512
}  // namespace convkit
