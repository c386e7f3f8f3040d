// Winograd F(2x2, 3x3) and F(2x2, 5x5) for AVX-512 (KernelTable::wino_lanes_item), one image
// per vector lane: every step is a whole vector whatever C, K and the image size, and the
// element-wise products become 16-image vectors times broadcast weights. With A = r + 1 points,
// an item of 16 images and a band of tile rows:
//   1. the input rows it reads, transposed to (c, row, column, image) and zero-padded (xt);
//   2. per tile row, the input transform down the columns (colt, shared by the row's tiles);
//      per tile, across the rows (vb: A^2 x C vectors); per block of 8 output channels, the
//      products with the transformed weights summed over c (mb: 8 x A^2 vectors) and the output
//      transform (ot, position-major);
//   3. ot transposed back to (image, k, p, q) in y.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "kernels/avx512/avx512.h"
#include "transpose_avx512.h"

// The stages stay out of line: a profile then shows one line per stage.
#define NOINLINE __attribute__((noinline))

namespace convkit {
namespace avx512 {
namespace {

struct Vec {
  using T = __m512;
  static T add(T a, T b) { return _mm512_add_ps(a, b); }
  static T sub(T a, T b) { return _mm512_sub_ps(a, b); }
  static T fmadd(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static T set1(float v) { return _mm512_set1_ps(v); }
};
#include "../winograd_1d.inc"

// acc[kk] += sum over c < NC of v[c] * u[c * 8 + kk], kk < 8
template <int NC>
inline void products(__m512* acc, const float* v, const float* u) {
  __m512 vv[NC];
#pragma GCC unroll 8
  for (int c = 0; c < NC; ++c) vv[c] = _mm512_loadu_ps(v + 16 * c);
#pragma GCC unroll 8
  for (int c = 0; c < NC; ++c)
#pragma GCC unroll 8
    for (int kk = 0; kk < 8; ++kk)
      acc[kk] = _mm512_fmadd_ps(vv[c], _mm512_set1_ps(u[c * 8 + kk]), acc[kk]);
}

// B^T down the columns of buffer rows i0 .. i0 + A - 1, every column: colt[c][e_row][w]
template <class F>
NOINLINE void columns_stage(const WinoLanesArgs& a, const Bufs& b, int64_t i0) {
  constexpr int A = F::A;
  const int64_t C = a.C, Wt = b.Wt, rows = b.rows;
  const float* xt = b.xt;
  float* colt = b.colt;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t w = 0; w < Wt; ++w) {
      __m512 d[A], v[A];
#pragma GCC unroll 6
      for (int i = 0; i < A; ++i) d[i] = _mm512_loadu_ps(xt + 16 * ((c * rows + i0 + i) * Wt + w));
      F::input(d, v);
#pragma GCC unroll 6
      for (int e = 0; e < A; ++e) _mm512_storeu_ps(colt + 16 * ((c * A + e) * Wt + w), v[e]);
    }
}

// B^T across the rows of the tile at column 2tx: vb[e_row * A + e_col][c]
template <class F>
NOINLINE void rows_stage(const WinoLanesArgs& a, const Bufs& b, int64_t tx) {
  constexpr int A = F::A;
  const int64_t C = a.C, Wt = b.Wt;  // locals: the stores below could alias a and b
  const float* colt = b.colt;
  float* vb = b.vb;
  for (int64_t c = 0; c < C; ++c)
    for (int er = 0; er < A; ++er) {
      __m512 d[A], v[A];
      const float* src = colt + 16 * ((c * A + er) * Wt + 2 * tx);
#pragma GCC unroll 6
      for (int j = 0; j < A; ++j) d[j] = _mm512_loadu_ps(src + 16 * j);
      F::input(d, v);
#pragma GCC unroll 6
      for (int ec = 0; ec < A; ++ec) _mm512_storeu_ps(vb + 16 * ((er * A + ec) * C + c), v[ec]);
    }
}

// mb[e][k - kb] = sum over c of vb[e][c] * u[e][c][k] for k in [kb, kb + 8), e < A^2
NOINLINE void products_stage(const WinoLanesArgs& a, const Bufs& b, int64_t kb, int64_t ne) {
  const int64_t C = a.C, Kp = a.Kp;
  const float* vb = b.vb;
  float* mb = b.mb;
  for (int64_t e = 0; e < ne; ++e) {
    const float* u = a.u + (e * Kp + kb) * C;  // (e, k / 8, c, k % 8)
    __m512 acc[8];
#pragma GCC unroll 8
    for (int kk = 0; kk < 8; ++kk) acc[kk] = _mm512_setzero_ps();
    for (int64_t cb = 0; cb < C; cb += 8) {
      const float* v = vb + 16 * (e * C + cb);
      switch (std::min<int64_t>(8, C - cb)) {
        case 1: products<1>(acc, v, u + 8 * cb); break;
        case 2: products<2>(acc, v, u + 8 * cb); break;
        case 3: products<3>(acc, v, u + 8 * cb); break;
        case 4: products<4>(acc, v, u + 8 * cb); break;
        case 5: products<5>(acc, v, u + 8 * cb); break;
        case 6: products<6>(acc, v, u + 8 * cb); break;
        case 7: products<7>(acc, v, u + 8 * cb); break;
        default: products<8>(acc, v, u + 8 * cb); break;
      }
    }
#pragma GCC unroll 8
    for (int kk = 0; kk < 8; ++kk) _mm512_storeu_ps(mb + 16 * (e * 8 + kk), acc[kk]);
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
  const float* bias_k = a.bias;
  float* ot = b.ot;
  for (int64_t k = kb; k < kend; ++k) {
    const float* m = mb + 16 * (k - kb);
    __m512 s0[A], s1[A];
#pragma GCC unroll 6
    for (int ec = 0; ec < A; ++ec) {
      __m512 col[A];
#pragma GCC unroll 6
      for (int er = 0; er < A; ++er) col[er] = _mm512_loadu_ps(m + 16 * 8 * (er * A + ec));
      F::output(col, s0[ec], s1[ec]);
    }
    const __m512 bias = bias_k ? _mm512_set1_ps(bias_k[k]) : _mm512_setzero_ps();
    __m512 y[2][2];
    F::output(s0, y[0][0], y[0][1]);
    F::output(s1, y[1][0], y[1][1]);
    float* o = ot + 16 * ((k * orows + pl) * Q + q);
    _mm512_storeu_ps(o, _mm512_add_ps(y[0][0], bias));
    if (two_cols) _mm512_storeu_ps(o + 16, _mm512_add_ps(y[0][1], bias));
    if (two_rows) {
      _mm512_storeu_ps(o + 16 * Q, _mm512_add_ps(y[1][0], bias));
      if (two_cols) _mm512_storeu_ps(o + 16 * (Q + 1), _mm512_add_ps(y[1][1], bias));
    }
  }
}

#include "../winograd_lanes_item.inc"

}  // namespace

bool wino_lanes_item_avx512(const WinoLanesArgs& a, int64_t n0, int64_t ty0, int64_t ty1) {
  return lanes_item(a, n0, ty0, ty1);
}

}  // namespace avx512
}  // namespace convkit
