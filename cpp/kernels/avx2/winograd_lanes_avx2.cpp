// Winograd F(2x2, 3x3) and F(2x2, 5x5) for AVX2 (KernelTable::wino_lanes_item): the AVX-512
// kernel's item (winograd_lanes_avx512.cpp) with each 16-image vector as two 8-float halves, the
// same operations in the same order on every lane, so the same bits. With A = r + 1 points:
//   1. the input rows the item reads, transposed to (c, row, column, image), zero-padded (xt);
//   2. per tile row, the input transform down the columns (colt); per tile, across the rows
//      (vb: A^2 x C); per block of 8 output channels, the products with the transformed weights
//      summed over c (mb: A^2 x 8) and the output transform (ot, position-major);
//   3. ot transposed back to (image, k, p, q) in y.
// Also the 3x3 weight gradient's item (KernelTable::wino_lanes_dw_item, below).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels.h"
#include "kernels/avx2/lanes_avx2.h"

#define NOINLINE __attribute__((noinline))

namespace convkit {
namespace avx2 {
namespace {

struct Vec {
  using T = __m256;
  static T add(T a, T b) { return _mm256_add_ps(a, b); }
  static T sub(T a, T b) { return _mm256_sub_ps(a, b); }
  static T fmadd(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static T set1(float v) { return _mm256_set1_ps(v); }
};
#include "../winograd_1d.inc"

// B^T down the columns of buffer rows i0 .. i0 + A - 1, every column: colt[c][e_row][w]
template <class F>
NOINLINE void columns_stage(const WinoLanesArgs& a, const Bufs& b, int64_t i0) {
  constexpr int A = F::A;
  const int64_t C = a.C, Wt = b.Wt, rows = b.rows;
  const float* xt = b.xt;
  float* colt = b.colt;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t w = 0; w < Wt; ++w)
      for (int h = 0; h < 16; h += 8) {
        __m256 d[A], v[A];
#pragma GCC unroll 6
        for (int i = 0; i < A; ++i)
          d[i] = _mm256_loadu_ps(xt + 16 * ((c * rows + i0 + i) * Wt + w) + h);
        F::input(d, v);
#pragma GCC unroll 6
        for (int e = 0; e < A; ++e) _mm256_storeu_ps(colt + 16 * ((c * A + e) * Wt + w) + h, v[e]);
      }
}

// B^T across the rows of the tile at column 2tx: vb[(e_row * A + e_col) * es + c] (es: C, or
// more where vb holds several tiles e-major)
template <class F>
NOINLINE void rows_stage(const WinoLanesArgs& a, const Bufs& b, int64_t tx, int64_t es = 0) {
  constexpr int A = F::A;
  const int64_t C = a.C, Wt = b.Wt;
  if (es == 0) es = C;
  const float* colt = b.colt;
  float* vb = b.vb;
  for (int64_t c = 0; c < C; ++c)
    for (int er = 0; er < A; ++er)
      for (int h = 0; h < 16; h += 8) {
        __m256 d[A], v[A];
        const float* src = colt + 16 * ((c * A + er) * Wt + 2 * tx) + h;
#pragma GCC unroll 6
        for (int j = 0; j < A; ++j) d[j] = _mm256_loadu_ps(src + 16 * j);
        F::input(d, v);
#pragma GCC unroll 6
        for (int ec = 0; ec < A; ++ec)
          _mm256_storeu_ps(vb + 16 * ((er * A + ec) * es + c) + h, v[ec]);
      }
}

// mb[e][k - kb] = sum over c (ascending) of vb[e][c] * u[e][c][k], k in [kb, kb + 8), e < ne: four
// output channels x both halves (8 accumulators) per pass, 6 loads per 8 multiply-adds
NOINLINE void products_stage(const WinoLanesArgs& a, const Bufs& b, int64_t kb, int64_t ne) {
  const int64_t C = a.C, Kp = a.Kp;
  const float* vb = b.vb;
  float* mb = b.mb;
  for (int64_t e = 0; e < ne; ++e) {
    const float* u = a.u + (e * Kp + kb) * C;  // (e, k / 8, c, k % 8)
    const float* v = vb + 16 * e * C;
    for (int k0 = 0; k0 < 8; k0 += 4) {
      __m256 acc[4][2];
#pragma GCC unroll 4
      for (int kk = 0; kk < 4; ++kk) acc[kk][0] = acc[kk][1] = _mm256_setzero_ps();
      for (int64_t c = 0; c < C; ++c) {
        const __m256 v0 = _mm256_loadu_ps(v + 16 * c), v1 = _mm256_loadu_ps(v + 16 * c + 8);
#pragma GCC unroll 4
        for (int kk = 0; kk < 4; ++kk) {
          const __m256 uk = _mm256_broadcast_ss(u + c * 8 + k0 + kk);
          acc[kk][0] = _mm256_fmadd_ps(v0, uk, acc[kk][0]);
          acc[kk][1] = _mm256_fmadd_ps(v1, uk, acc[kk][1]);
        }
      }
#pragma GCC unroll 4
      for (int kk = 0; kk < 4; ++kk) {
        _mm256_storeu_ps(mb + 16 * (e * 8 + k0 + kk), acc[kk][0]);
        _mm256_storeu_ps(mb + 16 * (e * 8 + k0 + kk) + 8, acc[kk][1]);
      }
    }
  }
}

// A^T m A + bias of tile (ty, tx) into ot (rows relative to p0), outputs past P or Q dropped
template <class F>
NOINLINE void output_stage(const WinoLanesArgs& a, const Bufs& b, int64_t p0, int64_t orows,
                           int64_t ty, int64_t tx, int64_t kb) {
  constexpr int A = F::A;
  const int64_t pl = 2 * ty - p0, q = 2 * tx, Q = a.Q, kend = std::min(a.K, kb + 8);
  const bool two_rows = 2 * ty + 1 < a.P, two_cols = q + 1 < Q;
  const float* mb = b.mb;
  float* ot = b.ot;
  for (int64_t k = kb; k < kend; ++k)
    for (int h = 0; h < 16; h += 8) {
      const float* m = mb + 16 * (k - kb) + h;
      __m256 s0[A], s1[A];
#pragma GCC unroll 6
      for (int ec = 0; ec < A; ++ec) {
        __m256 col[A];
#pragma GCC unroll 6
        for (int er = 0; er < A; ++er) col[er] = _mm256_loadu_ps(m + 16 * 8 * (er * A + ec));
        F::output(col, s0[ec], s1[ec]);
      }
      const __m256 bias = a.bias ? _mm256_set1_ps(a.bias[k]) : _mm256_setzero_ps();
      __m256 y[2][2];
      F::output(s0, y[0][0], y[0][1]);
      F::output(s1, y[1][0], y[1][1]);
      float* o = ot + 16 * ((k * orows + pl) * Q + q) + h;
      _mm256_storeu_ps(o, _mm256_add_ps(y[0][0], bias));
      if (two_cols) _mm256_storeu_ps(o + 16, _mm256_add_ps(y[0][1], bias));
      if (two_rows) {
        _mm256_storeu_ps(o + 16 * Q, _mm256_add_ps(y[1][0], bias));
        if (two_cols) _mm256_storeu_ps(o + 16 * (Q + 1), _mm256_add_ps(y[1][1], bias));
      }
    }
}

#include "../winograd_lanes_item.inc"

// ---- weight gradient (KernelTable::wino_lanes_dw_item) ----
// AVX-512's item (winograd_lanes_avx512.cpp) with each 16-lane vector as two halves: every lane
// gets the same operations in the same order, and the lanes are added in the same tree.

// Y = A dY A^T of the 2x2 block of dy at local rows 2i, 2i + 1, columns 2tx, 2tx + 1 of every
// channel k, into yb[e * es + k]; A's rows are (1, 0), (1, 1), (1, -1), (0, -1): down, then across
NOINLINE void dy_tiles_stage(float* yb, int64_t es, const float* dyt, int64_t K, int64_t rows,
                             int64_t Wd, int64_t i, int64_t tx) {
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; ++k)
    for (int h = 0; h < 16; h += 8) {
      const float* r0 = dyt + 16 * ((k * rows + 2 * i) * Wd + 2 * tx) + h;
      const float* r1 = r0 + 16 * Wd;
      const __m256 d00 = _mm256_loadu_ps(r0), d01 = _mm256_loadu_ps(r0 + 16);
      const __m256 d10 = _mm256_loadu_ps(r1), d11 = _mm256_loadu_ps(r1 + 16);
      const __m256 a[4][2] = {{d00, d01},
                              {_mm256_add_ps(d00, d10), _mm256_add_ps(d01, d11)},
                              {_mm256_sub_ps(d00, d10), _mm256_sub_ps(d01, d11)},
                              {_mm256_sub_ps(zero, d10), _mm256_sub_ps(zero, d11)}};
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        float* o = yb + 16 * (4 * r * es + k) + h;
        _mm256_storeu_ps(o, a[r][0]);
        _mm256_storeu_ps(o + 16 * es, _mm256_add_ps(a[r][0], a[r][1]));
        _mm256_storeu_ps(o + 32 * es, _mm256_sub_ps(a[r][0], a[r][1]));
        _mm256_storeu_ps(o + 48 * es, _mm256_sub_ps(zero, a[r][1]));
      }
    }
}

// Lane i of the result: the sum of v[i]'s 8 lanes as AVX-512's lane_sums16 adds a half of a
// vector, (l0 + l2) + (l1 + l3) per 128-bit quarter, then the two quarters.
inline __m256 half_sums8(const __m256* v) {
  __m256 t[4], u[2];
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i)
    t[i] = _mm256_add_ps(_mm256_unpacklo_ps(v[2 * i], v[2 * i + 1]),
                         _mm256_unpackhi_ps(v[2 * i], v[2 * i + 1]));
#pragma GCC unroll 2
  for (int i = 0; i < 2; ++i)
    u[i] = _mm256_add_ps(_mm256_shuffle_ps(t[2 * i], t[2 * i + 1], 0x44),
                         _mm256_shuffle_ps(t[2 * i], t[2 * i + 1], 0xEE));
  return _mm256_add_ps(_mm256_permute2f128_ps(u[0], u[1], 0x20),
                       _mm256_permute2f128_ps(u[0], u[1], 0x31));
}

// The sums over tiles t < nt of half h (lanes 8h .. 8h + 7) of
// yb[e * ye + t * K + k0 + i] * vb[e * ve + t * C + c0 + j], i < 2, j < 4, then over the half's
// lanes: lane 4i + j of the result
inline __m256 half_block(const float* y, const float* v, int64_t nt, int64_t K, int64_t C) {
  __m256 s[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) s[i] = _mm256_setzero_ps();
  for (int64_t t = 0; t < nt; ++t, y += 16 * K, v += 16 * C) {
    const __m256 y0 = _mm256_loadu_ps(y), y1 = _mm256_loadu_ps(y + 16);
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      __m256 vj = _mm256_loadu_ps(v + 16 * j);
      __asm__("" : "+x"(vj));  // one load for both products, not one folded into each
      s[j] = _mm256_fmadd_ps(y0, vj, s[j]);
      s[4 + j] = _mm256_fmadd_ps(y1, vj, s[4 + j]);
    }
  }
  return half_sums8(s);
}

// du[(e * K + k) * C + c] += the sum over tiles t < nt and the 16 lanes of
// yb[e * ye + t * K + k] * vb[e * ve + t * C + c], in blocks of 2 x 4 channels, a half of the
// lanes at a time (8 running sums in registers), the halves' sums then added
NOINLINE void dw_products_stage(float* du, const float* yb, int64_t ye, const float* vb,
                                int64_t ve, int64_t nt, int64_t K, int64_t C) {
  for (int e = 0; e < 16; ++e)
    for (int64_t k0 = 0; k0 < K; k0 += 2)
      for (int64_t c0 = 0; c0 < C; c0 += 4) {
        const float* y = yb + 16 * (e * ye + k0);
        const float* v = vb + 16 * (e * ve + c0);
        const __m256 sums = _mm256_add_ps(half_block(y, v, nt, K, C),
                                          half_block(y + 8, v + 8, nt, K, C));
        float* d = du + (e * K + k0) * C + c0;
        _mm_storeu_ps(d, _mm_add_ps(_mm_loadu_ps(d), _mm256_castps256_ps128(sums)));
        _mm_storeu_ps(d + C, _mm_add_ps(_mm_loadu_ps(d + C), _mm256_extractf128_ps(sums, 1)));
      }
}

#include "../winograd_lanes_dw_item.inc"

}  // namespace

bool wino_lanes_item_avx2(const WinoLanesArgs& a, int64_t n0, int64_t ty0, int64_t ty1) {
  return lanes_item(a, n0, ty0, ty1);
}

void wino_lanes_dw_item_avx2(const WinoLanesDwArgs& a, int64_t n0, int64_t ty0, int64_t ty1) {
  lanes_dw_item(a, n0, ty0, ty1);
}

}  // namespace avx2
}  // namespace convkit
