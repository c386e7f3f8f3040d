// Winograd-style transforms: F(2x2, 3x3) at stride 1 and the phase-split F(2, 2)-style parts at
// stride 2, 16 tiles per vector.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/avx512/avx512.h"
#include "transpose_avx512.h"

namespace convkit {
namespace avx512 {
// are split with permutes, so each of the 4 x 4 patch entries is one vector of 16 tiles.
void wino_in_row_avx512(float* v, int64_t vs, const float* const* r, int64_t nt) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  for (int64_t t0 = 0; t0 < nt; t0 += 16) {
    const __mmask16 m = nt - t0 >= 16 ? __mmask16(0xffff) : __mmask16((1u << (nt - t0)) - 1u);
    __m512 t[4][4];  // B^T d: rows transformed, one vector per (row, column)
    __m512 d[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      const float* p = r[i] + 2 * t0;
      const __m512 a0 = _mm512_loadu_ps(p), a1 = _mm512_loadu_ps(p + 16);
      const __m512 b0 = _mm512_loadu_ps(p + 2), b1 = _mm512_loadu_ps(p + 18);
      d[i][0] = _mm512_permutex2var_ps(a0, even, a1);
      d[i][1] = _mm512_permutex2var_ps(a0, odd, a1);
      d[i][2] = _mm512_permutex2var_ps(b0, even, b1);
      d[i][3] = _mm512_permutex2var_ps(b0, odd, b1);
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      t[0][j] = _mm512_sub_ps(d[0][j], d[2][j]);
      t[1][j] = _mm512_add_ps(d[1][j], d[2][j]);
      t[2][j] = _mm512_sub_ps(d[2][j], d[1][j]);
      t[3][j] = _mm512_sub_ps(d[1][j], d[3][j]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      float* o = v + 4 * i * vs + t0;
      _mm512_mask_storeu_ps(o, m, _mm512_sub_ps(t[i][0], t[i][2]));
      _mm512_mask_storeu_ps(o + vs, m, _mm512_add_ps(t[i][1], t[i][2]));
      _mm512_mask_storeu_ps(o + 2 * vs, m, _mm512_sub_ps(t[i][2], t[i][1]));
      _mm512_mask_storeu_ps(o + 3 * vs, m, _mm512_sub_ps(t[i][1], t[i][3]));
    }
  }
}

// Output columns c0 .. c0 + 31 of row y (those < Q) from 16 tiles' even (e0) and odd (e1)
// columns, interleaved; lanes stored with a NaN or an infinity (v - v is not 0) set in bad.
static inline void store_column_pairs(float* y, __m512 e0, __m512 e1, int64_t c0, int64_t Q,
                                      __mmask16& bad) {
  const __m512i lo_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi_idx = _mm512_add_epi32(lo_idx, _mm512_set1_epi32(8));
  const int64_t left = Q - c0;
  const __mmask16 mlo = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1u);
  const __mmask16 mhi = left >= 32 ? __mmask16(0xffff)
                        : left <= 16 ? __mmask16(0) : __mmask16((1u << (left - 16)) - 1u);
  const __m512 lo = _mm512_permutex2var_ps(e0, lo_idx, e1);
  const __m512 hi = _mm512_permutex2var_ps(e0, hi_idx, e1);
  _mm512_mask_storeu_ps(y + c0, mlo, lo);
  _mm512_mask_storeu_ps(y + c0 + 16, mhi, hi);
  const __m512 zero = _mm512_setzero_ps();
  bad |= _mm512_mask_cmp_ps_mask(mlo, _mm512_sub_ps(lo, lo), zero, _CMP_NEQ_UQ) |
         _mm512_mask_cmp_ps_mask(mhi, _mm512_sub_ps(hi, hi), zero, _CMP_NEQ_UQ);
}

bool wino_out_row_avx512(float* y0, float* y1, const float* mm, int64_t ms, int64_t nt,
                                int64_t Q, float bias) {
  const __m512 vb = _mm512_set1_ps(bias);
  __mmask16 bad = 0;
  for (int64_t t0 = 0; t0 < nt; t0 += 16) {
    const __mmask16 m = nt - t0 >= 16 ? __mmask16(0xffff) : __mmask16((1u << (nt - t0)) - 1u);
    __m512 a[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i)
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) a[i][j] = _mm512_maskz_loadu_ps(m, mm + (4 * i + j) * ms + t0);
    __m512 t[2][4];  // A^T m
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      t[0][j] = _mm512_add_ps(_mm512_add_ps(a[0][j], a[1][j]), a[2][j]);
      t[1][j] = _mm512_sub_ps(_mm512_sub_ps(a[1][j], a[2][j]), a[3][j]);
    }
#pragma GCC unroll 2
    for (int i = 0; i < 2; ++i) {
      float* y = i == 0 ? y0 : y1;
      if (!y) continue;
      const __m512 e0 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(t[i][0], t[i][1]), t[i][2]), vb);
      const __m512 e1 = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(t[i][1], t[i][2]), t[i][3]), vb);
      store_column_pairs(y, e0, e1, 2 * t0, Q, bad);
    }
  }
  return bad == 0;
}

// Stride-2 3x3 transforms (KernelTable::wino_s2_in_row / wino_s2_out_row), 16 tiles per step:
// tile tx reads padded columns 4tx .. 4tx + 4 of the five rows, straight from the image rows
// (masked loads supply the zero padding); the columns 4tx + j of 16 tiles are gathered from five
// loads with permutes (j = 4 is j = 0 moved on by one tile).
void wino_s2_in_row_avx512(float* const* v, const float* const* r, int64_t nt,
                                  int64_t pw, int64_t W) {
  __m512i idx[4];
  for (int j = 0; j < 4; ++j)  // lanes 0-7: columns j, j + 4, ... of two loads
    idx[j] = _mm512_setr_epi32(j, j + 4, j + 8, j + 12, j + 16, j + 20, j + 24, j + 28, j, j + 4,
                               j + 8, j + 12, j + 16, j + 20, j + 24, j + 28);
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i vw = _mm512_set1_epi32(static_cast<int>(W)), zero = _mm512_setzero_si512();
  for (int64_t t0 = 0; t0 < nt; t0 += 16) {
    const __mmask16 m = nt - t0 >= 16 ? __mmask16(0xffff) : __mmask16((1u << (nt - t0)) - 1u);
    __mmask16 lm[5];  // lanes of each load inside the image row
    for (int l = 0; l < 5; ++l) {
      const __m512i col =
          _mm512_add_epi32(iota, _mm512_set1_epi32(static_cast<int>(4 * t0 + 16 * l - pw)));
      lm[l] = _mm512_cmpge_epi32_mask(col, zero) & _mm512_cmplt_epi32_mask(col, vw);
    }
    const int64_t off = 4 * t0 - pw;  // image column of padded column 4 * t0
    __m512 c[5][5];  // B^T down the columns: item i (A0, A1, B0, C0, C1) of column j
#pragma GCC unroll 5
    for (int i = 0; i < 5; ++i) {
      __m512 a[5], d[5];
#pragma GCC unroll 5
      for (int l = 0; l < 5; ++l)
        a[l] = r[i] ? _mm512_maskz_loadu_ps(lm[l], r[i] + off + 16 * l) : _mm512_setzero_ps();
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j)
        d[j] = _mm512_shuffle_f32x4(_mm512_permutex2var_ps(a[0], idx[j], a[1]),
                                    _mm512_permutex2var_ps(a[2], idx[j], a[3]), 0x44);
      d[4] = _mm512_castsi512_ps(
          _mm512_alignr_epi32(_mm512_castps_si512(a[4]), _mm512_castps_si512(d[0]), 1));
      // row i of the patch, columns j: the column items
      c[i][0] = _mm512_sub_ps(d[0], d[2]);
      c[i][1] = d[1];
      c[i][2] = d[2];
      c[i][3] = _mm512_sub_ps(d[4], d[2]);
      c[i][4] = d[3];
    }
#pragma GCC unroll 5
    for (int j = 0; j < 5; ++j) {  // the row items of column item j
      _mm512_mask_storeu_ps(v[0 * 5 + j] + t0, m, _mm512_sub_ps(c[0][j], c[2][j]));
      _mm512_mask_storeu_ps(v[1 * 5 + j] + t0, m, c[1][j]);
      _mm512_mask_storeu_ps(v[2 * 5 + j] + t0, m, c[2][j]);
      _mm512_mask_storeu_ps(v[3 * 5 + j] + t0, m, _mm512_sub_ps(c[4][j], c[2][j]));
      _mm512_mask_storeu_ps(v[4 * 5 + j] + t0, m, c[3][j]);
    }
  }
}

bool wino_s2_out_row_avx512(float* y0, float* y1, const float* mm, int64_t ms,
                                   int64_t nt, int64_t Q, float bias) {
  const __m512 vb = _mm512_set1_ps(bias);
  __mmask16 bad = 0;
  for (int64_t t0 = 0; t0 < nt; t0 += 16) {
    const __mmask16 m = nt - t0 >= 16 ? __mmask16(0xffff) : __mmask16((1u << (nt - t0)) - 1u);
    __m512 a[3][3];  // patterns (A, B, C) x (A, B, C)
#pragma GCC unroll 3
    for (int i = 0; i < 3; ++i)
#pragma GCC unroll 3
      for (int j = 0; j < 3; ++j) a[i][j] = _mm512_maskz_loadu_ps(m, mm + (3 * i + j) * ms + t0);
    // A^T = (1 1 0; 0 1 1) down the rows, then along the columns
    const __m512 t0r[3] = {_mm512_add_ps(a[0][0], a[1][0]), _mm512_add_ps(a[0][1], a[1][1]),
                           _mm512_add_ps(a[0][2], a[1][2])};
    const __m512 t1r[3] = {_mm512_add_ps(a[1][0], a[2][0]), _mm512_add_ps(a[1][1], a[2][1]),
                           _mm512_add_ps(a[1][2], a[2][2])};
    if (y0)
      store_column_pairs(y0, _mm512_add_ps(_mm512_add_ps(t0r[0], t0r[1]), vb),
                         _mm512_add_ps(_mm512_add_ps(t0r[1], t0r[2]), vb), 2 * t0, Q, bad);
    if (y1)
      store_column_pairs(y1, _mm512_add_ps(_mm512_add_ps(t1r[0], t1r[1]), vb),
                         _mm512_add_ps(_mm512_add_ps(t1r[1], t1r[2]), vb), 2 * t0, Q, bad);
  }
  return bad == 0;
}

// phase_split_rows for sw = 1 (padded row copies): 16 floats per step, padding and tails by
}  // namespace avx512
}  // namespace convkit
