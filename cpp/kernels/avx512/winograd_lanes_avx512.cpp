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
#include <cstring>

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

// B^T across the rows of the tile at column 2tx: vb[(e_row * A + e_col) * es + c] (es: C, or
// more where vb holds several tiles e-major)
template <class F>
NOINLINE void rows_stage(const WinoLanesArgs& a, const Bufs& b, int64_t tx, int64_t es = 0) {
  constexpr int A = F::A;
  const int64_t C = a.C, Wt = b.Wt;  // locals: the stores below could alias a and b
  if (es == 0) es = C;
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
      for (int ec = 0; ec < A; ++ec) _mm512_storeu_ps(vb + 16 * ((er * A + ec) * es + c), v[ec]);
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

// ---- weight gradient (KernelTable::wino_lanes_dw_item) ----

// Y = A dY A^T of the 2x2 block of dy at local rows 2i, 2i + 1, columns 2tx, 2tx + 1 of every
// channel k, into yb[e * es + k]; A's rows are (1, 0), (1, 1), (1, -1), (0, -1): down, then across
NOINLINE void dy_tiles_stage(float* yb, int64_t es, const float* dyt, int64_t K, int64_t rows,
                             int64_t Wd, int64_t i, int64_t tx) {
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const float* r0 = dyt + 16 * ((k * rows + 2 * i) * Wd + 2 * tx);
    const float* r1 = r0 + 16 * Wd;
    const __m512 d00 = _mm512_loadu_ps(r0), d01 = _mm512_loadu_ps(r0 + 16);
    const __m512 d10 = _mm512_loadu_ps(r1), d11 = _mm512_loadu_ps(r1 + 16);
    const __m512 a[4][2] = {{d00, d01},
                            {_mm512_add_ps(d00, d10), _mm512_add_ps(d01, d11)},
                            {_mm512_sub_ps(d00, d10), _mm512_sub_ps(d01, d11)},
                            {_mm512_sub_ps(zero, d10), _mm512_sub_ps(zero, d11)}};
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) {
      float* o = yb + 16 * (4 * r * es + k);
      _mm512_storeu_ps(o, a[r][0]);
      _mm512_storeu_ps(o + 16 * es, _mm512_add_ps(a[r][0], a[r][1]));
      _mm512_storeu_ps(o + 32 * es, _mm512_sub_ps(a[r][0], a[r][1]));
      _mm512_storeu_ps(o + 48 * es, _mm512_sub_ps(zero, a[r][1]));
    }
  }
}

// The 16 lane sums of each of v[0..15] in one vector: lane i is v[i]'s sum, always added in
// the same order (pairs of lanes, then of lane pairs, of 128-bit quarters, of halves).
inline __m512 lane_sums16(const __m512* v) {
  __m512 t[8], u[4], w[2];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i)  // per quarter: lanes 0 + 2 and 1 + 3 of v[2i] and v[2i + 1]
    t[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]),
                         _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i)  // per quarter: v[4i .. 4i + 3]'s sums over that quarter
    u[i] = _mm512_add_ps(_mm512_shuffle_ps(t[2 * i], t[2 * i + 1], 0x44),
                         _mm512_shuffle_ps(t[2 * i], t[2 * i + 1], 0xEE));
#pragma GCC unroll 2
  for (int i = 0; i < 2; ++i)  // quarters 0 + 1 and 2 + 3 of u[2i], then of u[2i + 1]
    w[i] = _mm512_add_ps(_mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], 0x88),
                         _mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], 0xDD));
  return _mm512_add_ps(_mm512_shuffle_f32x4(w[0], w[1], 0x88),
                       _mm512_shuffle_f32x4(w[0], w[1], 0xDD));
}

// du[(e * K + k) * C + c] += the sum over tiles t < nt and the 16 lanes of
// yb[e * ye + t * K + k] * vb[e * ve + t * C + c], in blocks of 4 x 4 channels (16 running sums
// in registers, their lanes added at the end of the band: the sums never leave the registers)
NOINLINE void dw_products_stage(float* du, const float* yb, int64_t ye, const float* vb,
                                int64_t ve, int64_t nt, int64_t K, int64_t C) {
  for (int e = 0; e < 16; ++e)
    for (int64_t k0 = 0; k0 < K; k0 += 4)
      for (int64_t c0 = 0; c0 < C; c0 += 4) {
        __m512 s[16];
#pragma GCC unroll 16
        for (int i = 0; i < 16; ++i) s[i] = _mm512_setzero_ps();
        const float* y = yb + 16 * (e * ye + k0);
        const float* v = vb + 16 * (e * ve + c0);
        for (int64_t t = 0; t < nt; ++t, y += 16 * K, v += 16 * C) {
          __m512 yy[4], vv[4];
#pragma GCC unroll 4
          for (int i = 0; i < 4; ++i) yy[i] = _mm512_loadu_ps(y + 16 * i);
#pragma GCC unroll 4
          for (int j = 0; j < 4; ++j) vv[j] = _mm512_loadu_ps(v + 16 * j);
#pragma GCC unroll 4
          for (int i = 0; i < 4; ++i)
#pragma GCC unroll 4
            for (int j = 0; j < 4; ++j) s[4 * i + j] = _mm512_fmadd_ps(yy[i], vv[j], s[4 * i + j]);
        }
        const __m512 sums = lane_sums16(s);  // quarter i: row k0 + i, columns c0 .. c0 + 3
        float* d = du + (e * K + k0) * C + c0;
#pragma GCC unroll 4
        for (int i = 0; i < 4; ++i)
          _mm_storeu_ps(d + i * C,
                        _mm_add_ps(_mm_loadu_ps(d + i * C), _mm512_extractf32x4_ps(sums, i)));
      }
}

#include "../winograd_lanes_dw_item.inc"

}  // namespace

bool wino_lanes_item_avx512(const WinoLanesArgs& a, int64_t n0, int64_t ty0, int64_t ty1) {
  return lanes_item(a, n0, ty0, ty1);
}

void wino_lanes_dw_item_avx512(const WinoLanesDwArgs& a, int64_t n0, int64_t ty0, int64_t ty1) {
  lanes_dw_item(a, n0, ty0, ty1);
}

}  // namespace avx512
}  // namespace convkit
