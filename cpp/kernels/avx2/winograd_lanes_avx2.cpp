// Winograd F(2x2, 3x3) and F(2x2, 5x5) for AVX2 (KernelTable::wino_lanes_item): the AVX-512
// kernel's item (winograd_lanes_avx512.cpp) with each 16-image vector as two 8-float halves, the
// same operations in the same order on every lane, so the same bits. With A = r + 1 points:
//   1. the input rows the item reads, transposed to (c, row, column, image), zero-padded (xt);
//   2. per tile row, the input transform down the columns (colt); per tile, across the rows
//      (vb: A^2 x C); per block of 8 output channels, the products with the transformed weights
//      summed over c (mb: A^2 x 8) and the output transform (ot, position-major);
//   3. ot transposed back to (image, k, p, q) in y.
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

// B^T across the rows of the tile at column 2tx: vb[e_row * A + e_col][c]
template <class F>
NOINLINE void rows_stage(const WinoLanesArgs& a, const Bufs& b, int64_t tx) {
  constexpr int A = F::A;
  const int64_t C = a.C, Wt = b.Wt;
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
          _mm256_storeu_ps(vb + 16 * ((er * A + ec) * C + c) + h, v[ec]);
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

}  // namespace

bool wino_lanes_item_avx2(const WinoLanesArgs& a, int64_t n0, int64_t ty0, int64_t ty1) {
  return lanes_item(a, n0, ty0, ty1);
}

}  // namespace avx2
}  // namespace convkit
