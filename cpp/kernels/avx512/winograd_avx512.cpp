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

// F(2, 2) of stride-2 4x4 layers (KernelTable::wino22_in_rows, wino22_grad_rows). Rows of up
// to 8 tiles share a vector: G rows in slots of 16 / G lanes, row i in lanes i * 16 / G ..,
// loaded and stored through masks (a row past the last has an empty mask, which neither reads
// nor writes); longer rows go 16 tiles at a time. (Four tiles at a time in SSE, the transforms
// took 8 % of a transposed 128 -> 64 layer's forward and backward.)
namespace {
template <int G>
struct Slots {
  static constexpr int S = 16 / G;
  __mmask16 m[G];  // row i's lanes of its slot (empty for rows past the last)
  Slots(int64_t w, int64_t rows) {
    for (int i = 0; i < G; ++i)
      m[i] = i < rows ? static_cast<__mmask16>((1u << w) - 1u) : __mmask16(0);
  }
  __m512 load(const float* p, int64_t step) const {
    if constexpr (G == 1) {
      return _mm512_maskz_loadu_ps(m[0], p);
    } else if constexpr (G == 2) {
      const __m256 lo = _mm256_maskz_loadu_ps(static_cast<__mmask8>(m[0]), p);
      const __m256 hi = _mm256_maskz_loadu_ps(static_cast<__mmask8>(m[1]), p + step);
      return _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1);
    } else {
      __m512 x = _mm512_castps128_ps512(_mm_maskz_loadu_ps(static_cast<__mmask8>(m[0]), p));
      x = _mm512_insertf32x4(x, _mm_maskz_loadu_ps(static_cast<__mmask8>(m[1]), p + step), 1);
      x = _mm512_insertf32x4(x, _mm_maskz_loadu_ps(static_cast<__mmask8>(m[2]), p + 2 * step),
                             2);
      return _mm512_insertf32x4(
          x, _mm_maskz_loadu_ps(static_cast<__mmask8>(m[3]), p + 3 * step), 3);
    }
  }
  void store(float* p, int64_t step, __m512 x) const {
    if constexpr (G == 1) {
      _mm512_mask_storeu_ps(p, m[0], x);
    } else if constexpr (G == 2) {
      _mm256_mask_storeu_ps(p, static_cast<__mmask8>(m[0]), _mm512_castps512_ps256(x));
      _mm256_mask_storeu_ps(p + step, static_cast<__mmask8>(m[1]), _mm512_extractf32x8_ps(x, 1));
    } else {
      _mm_mask_storeu_ps(p, static_cast<__mmask8>(m[0]), _mm512_castps512_ps128(x));
      _mm_mask_storeu_ps(p + step, static_cast<__mmask8>(m[1]), _mm512_extractf32x4_ps(x, 1));
      _mm_mask_storeu_ps(p + 2 * step, static_cast<__mmask8>(m[2]),
                         _mm512_extractf32x4_ps(x, 2));
      _mm_mask_storeu_ps(p + 3 * step, static_cast<__mmask8>(m[3]),
                         _mm512_extractf32x4_ps(x, 3));
    }
  }
};

// Calls f(slots, row, tile) for each vector of rows and tiles.
template <int G, class F>
inline void for_slots(int64_t n, int64_t nrows, F&& f) {
  for (int64_t j = 0; j < nrows; j += G)
    for (int64_t t = 0; t < n; t += 16 / G)
      f(Slots<G>(std::min<int64_t>(16 / G, n - t), nrows - j), j, t);
}

template <class F>
inline void by_slots(int64_t n, int64_t nrows, F&& f) {
  if (n <= 4)
    for_slots<4>(n, nrows, f);
  else if (n <= 8)
    for_slots<2>(n, nrows, f);
  else
    for_slots<1>(n, nrows, f);
}
}  // namespace

void wino22_in_rows_avx512(float* v, int64_t vs, int64_t vrow, const float* r, int64_t rs,
                           int64_t rrow, const int64_t* col, int64_t n, int64_t nrows) {
  by_slots(n, nrows, [&](const auto& sl, int64_t j, int64_t t) {
    const float* p = r + j * rrow + t;
    float* o = v + j * vrow + t;
    __m512 d[3][3];
#pragma GCC unroll 3
    for (int ri = 0; ri < 3; ++ri)
#pragma GCC unroll 3
      for (int ci = 0; ci < 3; ++ci) d[ri][ci] = sl.load(p + ri * rs + col[ci], rrow);
#pragma GCC unroll 3
    for (int ci = 0; ci < 3; ++ci) {
      d[0][ci] = _mm512_sub_ps(d[0][ci], d[1][ci]);
      d[2][ci] = _mm512_sub_ps(d[2][ci], d[1][ci]);
    }
#pragma GCC unroll 3
    for (int ri = 0; ri < 3; ++ri) {
      sl.store(o + 3 * ri * vs, vrow, _mm512_sub_ps(d[ri][0], d[ri][1]));
      sl.store(o + (3 * ri + 1) * vs, vrow, d[ri][1]);
      sl.store(o + (3 * ri + 2) * vs, vrow, _mm512_sub_ps(d[ri][2], d[ri][1]));
    }
  });
}

void wino22_grad_rows_avx512(float* y, int64_t ys, int64_t yrow, const float* r, int64_t rs,
                             int64_t rrow, int64_t n, int64_t nrows) {
  by_slots(n, nrows, [&](const auto& sl, int64_t j, int64_t t) {
    const float* p = r + j * rrow + t;
    float* o = y + j * yrow + t;
    const __m512 a0 = sl.load(p, rrow), a1 = sl.load(p + rs, rrow);
    const __m512 c0 = sl.load(p + 2 * rs, rrow), c1 = sl.load(p + 3 * rs, rrow);
    const __m512 d[3][2] = {{a0, a1}, {_mm512_add_ps(a0, c0), _mm512_add_ps(a1, c1)}, {c0, c1}};
#pragma GCC unroll 3
    for (int pr = 0; pr < 3; ++pr) {
      sl.store(o + 3 * pr * ys, yrow, d[pr][0]);
      sl.store(o + (3 * pr + 1) * ys, yrow, _mm512_add_ps(d[pr][0], d[pr][1]));
      sl.store(o + (3 * pr + 2) * ys, yrow, d[pr][1]);
    }
  });
}

}  // namespace avx512
}  // namespace convkit
