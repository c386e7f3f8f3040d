// AVX2 + FMA kernels (this file alone is compiled with -mavx2 -mfma): a 6 x 16 GEMM micro-kernel
// (12 ymm accumulators + 2 for B + 1 broadcast = 15 of 16 registers) and the portable loops.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <vector>

#include "kernels.h"
#include "kernels/avx2/lanes_avx2.h"

namespace convkit {
namespace avx2 {
// winograd_lanes_avx2.cpp
bool wino_lanes_item_avx2(const WinoLanesArgs& a, int64_t n0, int64_t ty0, int64_t ty1);
void wino_lanes_dw_item_avx2(const WinoLanesDwArgs& a, int64_t n0, int64_t ty0, int64_t ty1);
// conv_rows_avx2.cpp
void conv_rows_avx2(float* y, int64_t ystep, int64_t nrows, int64_t Q, const float* base,
                    int64_t bstep, const int64_t* off, const float* w, int64_t ntaps, float bias);
void conv_rows_k_avx2(float* y, int64_t ystep, int64_t kstep, int nk, int64_t nrows, int64_t Q,
                      const float* base, int64_t bstep, const int64_t* off, const float* w,
                      int64_t ntaps, const float* bias);
void conv_row_dots_avx2(float* lanes, const float* dy, int64_t dystep, int64_t nrows, int64_t Q,
                        const float* base, int64_t bstep, const int64_t* off, int64_t ntaps);
void conv_dw_plane_avx2(int ks, float* y, int64_t ystride, int64_t n, int64_t P, int64_t Q,
                        const float* x, int64_t xstride, int64_t H, int64_t W, int64_t ph,
                        int64_t pw, const float* w, const float* bias, const float* zeros);
void conv_dw3s2_plane_avx2(float* y, int64_t ystride, int64_t n, int64_t P, int64_t Q,
                           const float* x, int64_t xstride, int64_t H, int64_t W, int64_t ph,
                           int64_t pw, const float* w, const float* bias);
void conv_dw3s2_dots_avx2(float* lanes, const float* dy, int64_t P, int64_t Q, const float* x,
                          int64_t H, int64_t W, int64_t ph, int64_t pw);
void conv_dw3s2_dx_avx2(float* dx, int64_t dxstride, int64_t n, int64_t H, int64_t W,
                        const float* dy, int64_t dystride, int64_t P, int64_t Q, int64_t ph,
                        int64_t pw, const float* w);
#include "../portable.inc"

constexpr int MR = 6, NR = 16;

// Lane masks for the first n of 8 floats (n in 0..8), for partial tiles.
static inline __m256i lane_mask(int n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}

// a: kc x 6 packed, b: kc x 16 packed -> the mr x nr corner of c (ldc)
// Direct: B row k is the NR floats at b + boff[k] (masked: nothing past column nr is read),
// else the packed row b + k * NR.
// M (2, 4 or 6, at least mr): the rows computed, so that a last block of 4 rows (K = 16:
// 6 + 6 + 4) does not run six rows' multiply-adds. Each row's sums are the same whatever M.
template <bool Direct, int M>
static inline void ukernel(int64_t kc, const float* a, const float* b, const int64_t* boff,
                           float* c, int64_t ldc, int mr, int nr, bool accumulate,
                           const float* bias) {
  __m256 acc[M][2];
  const bool full = nr == NR;
  const __m256i m0 = lane_mask(nr < 8 ? nr : 8), m1 = lane_mask(nr > 8 ? nr - 8 : 0);
#pragma GCC unroll 6
  for (int i = 0; i < M; ++i) {
    if (i < mr && accumulate) {
      acc[i][0] = full ? _mm256_loadu_ps(c + i * ldc) : _mm256_maskload_ps(c + i * ldc, m0);
      acc[i][1] = full ? _mm256_loadu_ps(c + i * ldc + 8) : _mm256_maskload_ps(c + i * ldc + 8, m1);
    } else {
      acc[i][0] = acc[i][1] = (bias && i < mr) ? _mm256_set1_ps(bias[i]) : _mm256_setzero_ps();
    }
  }
  for (int64_t k = 0; k < kc; ++k) {
    const float* bk = Direct ? b + boff[k] : b + k * NR;
    const __m256 b0 = Direct && !full ? _mm256_maskload_ps(bk, m0) : _mm256_loadu_ps(bk);
    const __m256 b1 = Direct && !full ? _mm256_maskload_ps(bk + 8, m1) : _mm256_loadu_ps(bk + 8);
#pragma GCC unroll 6
    for (int i = 0; i < M; ++i) {
      const __m256 ai = _mm256_broadcast_ss(a + k * MR + i);
      acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
  if (full && mr == M) {
#pragma GCC unroll 6
    for (int i = 0; i < M; ++i) {
      _mm256_storeu_ps(c + i * ldc, acc[i][0]);
      _mm256_storeu_ps(c + i * ldc + 8, acc[i][1]);
    }
    return;
  }
  // unrolled with constant indices, so that acc stays in registers in the loop above
#pragma GCC unroll 6
  for (int i = 0; i < M; ++i) {
    if (i < mr) {
      store_first(c + i * ldc, acc[i][0], nr);
      if (nr > 8) store_first(c + i * ldc + 8, acc[i][1], nr - 8);
    }
  }
}

template <bool Direct>
static void ukernel_rows(int64_t kc, const float* a, const float* b, const int64_t* boff,
                         float* c, int64_t ldc, int mr, int nr, bool accumulate,
                         const float* bias) {
  if (mr > 4)
    ukernel<Direct, 6>(kc, a, b, boff, c, ldc, mr, nr, accumulate, bias);
  else if (mr > 2)
    ukernel<Direct, 4>(kc, a, b, boff, c, ldc, mr, nr, accumulate, bias);
  else
    ukernel<Direct, 2>(kc, a, b, boff, c, ldc, mr, nr, accumulate, bias);
}

static void gemm_ukernel(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                         int mr, int nr, bool accumulate, const float* bias) {
  ukernel_rows<false>(kc, a, b, nullptr, c, ldc, mr, nr, accumulate, bias);
}

static void direct_ukernel(int64_t kc, const float* a, const float* b, const int64_t* boff,
                           float* c, int64_t ldc, int mr, int nr, bool accumulate,
                           const float* bias) {
  ukernel_rows<true>(kc, a, b, boff, c, ldc, mr, nr, accumulate, bias);
}
// KernelTable::conv_dw_tile: KT x TG dot products in 8 lanes, per 8 positions TG input loads
// held while KT dy vectors stream past them (KT * TG + TG + 1 <= 16 registers); the lanes add
// up as the portable loop's eight running sums. Rows kk >= kt reread row kt - 1, columns
// tt >= tg column tg - 1, and neither is stored.
template <int KT, int TG>
static void dw_tile(float* out, int64_t ldo, const DwTileArgs& a, int kt, int tg) {
  __m256 acc[KT][TG];
#pragma GCC unroll 12
  for (int kk = 0; kk < KT; ++kk)
#pragma GCC unroll 5
    for (int tt = 0; tt < TG; ++tt) acc[kk][tt] = _mm256_setzero_ps();
  int64_t xo[TG], dyo[KT];
#pragma GCC unroll 5
  for (int tt = 0; tt < TG; ++tt) xo[tt] = a.xoff[tt < tg ? tt : tg - 1];
#pragma GCC unroll 12
  for (int kk = 0; kk < KT; ++kk) dyo[kk] = (kk < kt ? kk : kt - 1) * a.dy_ks;
  const int64_t Q8 = a.Q / 8 * 8;
  // 8 positions from q, the first `rest` of them (all 8 when rest is 0) read and the others 0
  auto step = [&](const float* d, const float* xr, int64_t q, int rest) {
    __m256 xv[TG];
#pragma GCC unroll 5
    for (int tt = 0; tt < TG; ++tt)
      xv[tt] = rest ? _mm256_maskload_ps(xr + xo[tt] + q, lane_mask(rest))
                    : _mm256_loadu_ps(xr + xo[tt] + q);
#pragma GCC unroll 12
    for (int kk = 0; kk < KT; ++kk) {
      const __m256 dv = rest ? _mm256_maskload_ps(d + dyo[kk] + q, lane_mask(rest))
                             : _mm256_loadu_ps(d + dyo[kk] + q);
#pragma GCC unroll 5
      for (int tt = 0; tt < TG; ++tt) acc[kk][tt] = _mm256_fmadd_ps(dv, xv[tt], acc[kk][tt]);
    }
  };
  for (int64_t n = 0; n < a.N; ++n)
    for (int64_t p = 0; p < a.P; ++p) {
      const float* d = a.dy + n * a.dy_ns + p * a.dy_rs;
      const float* xr = a.x + n * a.x_ns + p * a.x_rs;
      for (int64_t q = 0; q < Q8; q += 8) step(d, xr, q, 0);
      if (Q8 < a.Q) step(d, xr, Q8, static_cast<int>(a.Q - Q8));
    }
  // constant indices only, so that acc stays in registers through the loops above
  alignas(32) float l[KT][TG][8];
#pragma GCC unroll 12
  for (int kk = 0; kk < KT; ++kk)
#pragma GCC unroll 5
    for (int tt = 0; tt < TG; ++tt) _mm256_store_ps(l[kk][tt], acc[kk][tt]);
  for (int kk = 0; kk < kt && kk < KT; ++kk)
    for (int tt = 0; tt < tg && tt < TG; ++tt) {
      const float* v = l[kk][tt];
      out[kk * ldo + tt] = ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
    }
}

using DwTileFn = void (*)(float*, int64_t, const DwTileArgs&, int, int);

// The first of dw_tile<KTs, TG>... with KT >= kt (null when kt exceeds them all).
template <int TG, int... KTs>
static DwTileFn dw_tile_for(int kt) {
  DwTileFn f = nullptr;
  ((f = (f == nullptr && kt <= KTs) ? dw_tile<KTs, TG> : f), ...);
  return f;
}

// Tiles up to (12, 1) (6, 2) (4, 3) (3, 3) (2, 5), best first for the caller, and the smaller
// ones the last tiles of a row or column of dW take.
static const int kDwTileShapes[5][2] = {{4, 3}, {6, 2}, {3, 3}, {2, 5}, {12, 1}};

static void conv_dw_tile_avx2(float* out, int64_t ldo, const DwTileArgs& a, int kt, int tg) {
  DwTileFn f = nullptr;
  switch (tg) {
    case 1: f = dw_tile_for<1, 1, 2, 3, 4, 6, 8, 12>(kt); break;
    case 2: f = dw_tile_for<2, 1, 2, 3, 4, 6>(kt); break;
    case 3: f = dw_tile_for<3, 1, 2, 3, 4>(kt); break;
    case 4: f = dw_tile_for<4, 1, 2>(kt); break;
    case 5: f = dw_tile_for<5, 1, 2>(kt); break;
    default: break;
  }
  if (f) f(out, ldo, a, kt, tg);
  else conv_dw_tile(out, ldo, a, kt, tg);
}
// KernelTable::conv_kvec: 16 output channels as two halves of 8 lanes, a pass of exactly ROWS
// rows x NQ positions (up to 2 x 3 or 1 x 5: 12 or 10 accumulators, two weight vectors, a
// broadcast). The same sums in the same order as the AVX-512 kernel: bias, then one
// multiply-add per k. STRIDED: positions xstep apart (else adjacent, at constant offsets).
template <int NQ, int ROWS, bool STRIDED>
static void kvec_pass(float* out, int64_t ldo, int64_t ldr, const float* x, int64_t Wp,
                      int64_t xstep, const int64_t* off, int64_t crs, const float* w,
                      const __m256* b, int nk) {
  __m256 acc[ROWS][NQ][2];
#pragma GCC unroll 2
  for (int rr = 0; rr < ROWS; ++rr)
#pragma GCC unroll 5
    for (int i = 0; i < NQ; ++i) acc[rr][i][0] = b[0], acc[rr][i][1] = b[1];
  for (int64_t k = 0; k < crs; ++k) {
    const __m256 w0 = _mm256_loadu_ps(w + k * 16), w1 = _mm256_loadu_ps(w + k * 16 + 8);
    const float* xk = x + off[k];
#pragma GCC unroll 2
    for (int rr = 0; rr < ROWS; ++rr)
#pragma GCC unroll 5
      for (int i = 0; i < NQ; ++i) {
        const __m256 xv = _mm256_broadcast_ss(xk + rr * Wp + (STRIDED ? i * xstep : i));
        acc[rr][i][0] = _mm256_fmadd_ps(xv, w0, acc[rr][i][0]);
        acc[rr][i][1] = _mm256_fmadd_ps(xv, w1, acc[rr][i][1]);
      }
  }
  alignas(32) float t[ROWS][NQ][16];
#pragma GCC unroll 2
  for (int rr = 0; rr < ROWS; ++rr)
#pragma GCC unroll 5
    for (int i = 0; i < NQ; ++i) {
      _mm256_store_ps(t[rr][i], acc[rr][i][0]);
      _mm256_store_ps(t[rr][i] + 8, acc[rr][i][1]);
    }
  for (int rr = 0; rr < ROWS; ++rr)
    for (int kk = 0; kk < nk; ++kk)
      for (int i = 0; i < NQ; ++i) out[kk * ldo + rr * ldr + i] = t[rr][i][kk];
}

// Passes of 2 rows x 3 positions (one row: 5 positions), the last ones sized to the positions
// left. A pass takes max(NQ * ROWS, 4) cycles a tap: its multiply-adds at two a cycle, or, below
// 8 accumulators, the multiply-add's latency (4 cycles) on each one. So a row's last 4 positions
// go as two passes of 2 (not 3 + 1), and a single row's last 6-8 as two passes of 3-4: a 7-wide
// row in passes of 3 took 18 cycles a tap for two rows, 14 now (1-thread (1, 512, 7, 7) 3x3:
// the multiply-adds had run at 95 % of the peak, 74 GFLOP/s of the layer's own).
template <bool STRIDED>
static void kvec_passes(float* out, int64_t ldo, int64_t ldr, const float* x, int64_t Wp,
                        int64_t xstep, const int64_t* off, int64_t crs, const float* w,
                        const float* bias, int nq, int nk, bool two_rows) {
  alignas(32) float b16[16] = {};
  for (int kk = 0; kk < nk; ++kk) b16[kk] = bias ? bias[kk] : 0.f;
  const __m256 b[2] = {_mm256_load_ps(b16), _mm256_load_ps(b16 + 8)};
  using Pass = void (*)(float*, int64_t, int64_t, const float*, int64_t, int64_t, const int64_t*,
                        int64_t, const float*, const __m256*, int);
  static const Pass one_row[6] = {nullptr,
                                  kvec_pass<1, 1, STRIDED>,
                                  kvec_pass<2, 1, STRIDED>,
                                  kvec_pass<3, 1, STRIDED>,
                                  kvec_pass<4, 1, STRIDED>,
                                  kvec_pass<5, 1, STRIDED>};
  static const Pass two[4] = {nullptr, kvec_pass<1, 2, STRIDED>, kvec_pass<2, 2, STRIDED>,
                              kvec_pass<3, 2, STRIDED>};
  const int full = two_rows ? 3 : 5;  // the widest pass
  for (int i0 = 0; i0 < nq;) {
    const int left = nq - i0;
    int n = left < full ? left : full;
    if (two_rows && left == 4) n = 2;
    if (!two_rows && left > 5 && left <= 8) n = (left + 1) / 2;
    const float* xi = x + i0 * xstep;
    if (two_rows) two[n](out + i0, ldo, ldr, xi, Wp, xstep, off, crs, w, b, nk);
    else one_row[n](out + i0, ldo, 0, xi, Wp, xstep, off, crs, w, b, nk);
    i0 += n;
  }
}

static void conv_kvec_avx2(float* out, int64_t ldo, int64_t ldr, const float* x, int64_t Wp,
                           int64_t xstep, const int64_t* off, int64_t crs, const float* w,
                           const float* bias, int nq, int nk, bool two_rows) {
  (xstep == 1 ? kvec_passes<false> : kvec_passes<true>)(out, ldo, ldr, x, Wp, xstep, off, crs, w,
                                                         bias, nq, nk, two_rows);
}

// KernelTable::conv_dw_kvec: T (<= 6) consecutive taps x 16 channels (two 8-lane halves) in
// registers per pass; the same sums in the same order as the AVX-512 kernel.
template <int T>
static void dw_kvec_pass(float* out, int64_t ldo, const float* dyT, const float* x, int64_t x_ns,
                         int64_t x_rs, int64_t x_cs, int64_t o, int nk, int64_t N, int64_t P,
                         int64_t Q) {
  __m256 acc[T][2];
#pragma GCC unroll 6
  for (int i = 0; i < T; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t p = 0; p < P; ++p) {
      const float* xq = x + n * x_ns + p * x_rs + o;  // column q's taps: xq + q * x_cs
      const float* d = dyT + (n * P + p) * Q * 16;
      for (int64_t q = 0; q < Q; ++q, xq += x_cs) {
        const __m256 d0 = _mm256_loadu_ps(d + q * 16), d1 = _mm256_loadu_ps(d + q * 16 + 8);
#pragma GCC unroll 6
        for (int t = 0; t < T; ++t) {
          const __m256 xv = _mm256_broadcast_ss(xq + t);
          acc[t][0] = _mm256_fmadd_ps(xv, d0, acc[t][0]);
          acc[t][1] = _mm256_fmadd_ps(xv, d1, acc[t][1]);
        }
      }
    }
  alignas(32) float tmp[T][16];
#pragma GCC unroll 6
  for (int i = 0; i < T; ++i) {
    _mm256_store_ps(tmp[i], acc[i][0]);
    _mm256_store_ps(tmp[i] + 8, acc[i][1]);
  }
  for (int kk = 0; kk < nk; ++kk)
    for (int i = 0; i < T; ++i) out[kk * ldo + i] = tmp[i][kk];
}

static void conv_dw_kvec_avx2(float* out, int64_t ldo, const float* dyT, const float* x,
                              int64_t x_ns, int64_t x_rs, int64_t x_cs, const int64_t* off, int S,
                              int nt, int nk, int64_t N, int64_t P, int64_t Q) {
  using Fn = void (*)(float*, int64_t, const float*, const float*, int64_t, int64_t, int64_t,
                      int64_t, int, int64_t, int64_t, int64_t);
  static const Fn by_t[7] = {nullptr,         dw_kvec_pass<1>, dw_kvec_pass<2>, dw_kvec_pass<3>,
                             dw_kvec_pass<4>, dw_kvec_pass<5>, dw_kvec_pass<6>};
  // kernel row g: taps g * S .. (those < nt) at consecutive offsets from off[g * S]
  for (int g = 0; g * S < nt; ++g)
    for (int t0 = 0; t0 < S && g * S + t0 < nt;) {
      const int n = std::min({6, S - t0, nt - g * S - t0});
      by_t[n](out + g * S + t0, ldo, dyT, x, x_ns, x_rs, x_cs, off[g * S] + t0, nk, N, P, Q);
      t0 += n;
    }
}

// Winograd F(2x2, 3x3) transforms (KernelTable::wino_in_row / wino_out_row), 8 tiles per
// vector: the same additions in the same order as the plain loops and the AVX-512 kernels.
// The even and odd columns of 16 consecutive floats, each in column order.
static inline void even_odd(const float* p, __m256& even, __m256& odd) {
  const __m256 a0 = _mm256_loadu_ps(p), a1 = _mm256_loadu_ps(p + 8);
  const __m256 e = _mm256_shuffle_ps(a0, a1, _MM_SHUFFLE(2, 0, 2, 0));  // 0 2 8 10 4 6 12 14
  const __m256 o = _mm256_shuffle_ps(a0, a1, _MM_SHUFFLE(3, 1, 3, 1));
  even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xd8));
  odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), 0xd8));
}

static void wino_in_row_avx2(float* v, int64_t vs, const float* const* r, int64_t nt) {
  for (int64_t t0 = 0; t0 < nt; t0 += 8) {
    const int n = nt - t0 >= 8 ? 8 : static_cast<int>(nt - t0);
    auto store = [&](float* o, __m256 a) { store_first(o, a, n); };
    __m256 d[4][4], t[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      even_odd(r[i] + 2 * t0, d[i][0], d[i][1]);
      even_odd(r[i] + 2 * t0 + 2, d[i][2], d[i][3]);
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {  // B^T d
      t[0][j] = _mm256_sub_ps(d[0][j], d[2][j]);
      t[1][j] = _mm256_add_ps(d[1][j], d[2][j]);
      t[2][j] = _mm256_sub_ps(d[2][j], d[1][j]);
      t[3][j] = _mm256_sub_ps(d[1][j], d[3][j]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {  // (B^T d) B
      float* o = v + 4 * i * vs + t0;
      store(o, _mm256_sub_ps(t[i][0], t[i][2]));
      store(o + vs, _mm256_add_ps(t[i][1], t[i][2]));
      store(o + 2 * vs, _mm256_sub_ps(t[i][2], t[i][1]));
      store(o + 3 * vs, _mm256_sub_ps(t[i][1], t[i][3]));
    }
  }
}

// Output columns c0 .. c0 + 15 of y (those < Q) from 8 tiles' even (e0) and odd (e1) columns,
// interleaved; whether a value stored is NaN or infinite (v - v is not 0) goes into bad.
static inline void store_column_pairs(float* y, __m256 e0, __m256 e1, int64_t c0, int64_t Q,
                                      __m256& bad) {
  const __m256 lo4 = _mm256_unpacklo_ps(e0, e1), hi4 = _mm256_unpackhi_ps(e0, e1);
  const __m256 lo = _mm256_permute2f128_ps(lo4, hi4, 0x20);
  const __m256 hi = _mm256_permute2f128_ps(lo4, hi4, 0x31);
  const int64_t left = Q - c0;
  const __m256 zero = _mm256_setzero_ps();
  const int nlo = left >= 8 ? 8 : static_cast<int>(left);
  const int nhi = left >= 16 ? 8 : left <= 8 ? 0 : static_cast<int>(left - 8);
  const __m256i mlo = lane_mask(nlo), mhi = lane_mask(nhi);
  store_first(y + c0, lo, nlo);
  store_first(y + c0 + 8, hi, nhi);
  bad = _mm256_or_ps(bad, _mm256_and_ps(_mm256_castsi256_ps(mlo),
                                        _mm256_cmp_ps(_mm256_sub_ps(lo, lo), zero, _CMP_NEQ_UQ)));
  bad = _mm256_or_ps(bad, _mm256_and_ps(_mm256_castsi256_ps(mhi),
                                        _mm256_cmp_ps(_mm256_sub_ps(hi, hi), zero, _CMP_NEQ_UQ)));
}

static bool wino_out_row_avx2(float* y0, float* y1, const float* mm, int64_t ms, int64_t nt,
                              int64_t Q, float bias) {
  const __m256 vb = _mm256_set1_ps(bias);
  __m256 bad = _mm256_setzero_ps();
  for (int64_t t0 = 0; t0 < nt; t0 += 8) {
    const __m256i m = lane_mask(nt - t0 >= 8 ? 8 : static_cast<int>(nt - t0));
    __m256 a[4][4], t[2][4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i)
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) a[i][j] = _mm256_maskload_ps(mm + (4 * i + j) * ms + t0, m);
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {  // A^T m
      t[0][j] = _mm256_add_ps(_mm256_add_ps(a[0][j], a[1][j]), a[2][j]);
      t[1][j] = _mm256_sub_ps(_mm256_sub_ps(a[1][j], a[2][j]), a[3][j]);
    }
#pragma GCC unroll 2
    for (int i = 0; i < 2; ++i) {
      float* y = i == 0 ? y0 : y1;
      if (!y) continue;
      const __m256 e0 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(t[i][0], t[i][1]), t[i][2]), vb);
      const __m256 e1 = _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(t[i][1], t[i][2]), t[i][3]), vb);
      store_column_pairs(y, e0, e1, 2 * t0, Q, bad);
    }
  }
  return _mm256_movemask_ps(bad) == 0;
}

// Stride-2 3x3 transforms (KernelTable::wino_s2_in_row / wino_s2_out_row), 8 tiles per step:
// the same additions in the same order as the plain loops and the AVX-512 kernels. Tile tx
// reads padded columns 4tx .. 4tx + 4, straight from the image rows; where 8 tiles' 36
// columns reach past the image (most steps of a narrow row), masked loads (fast, unlike masked
// stores) supply the zero padding.
static void wino_s2_in_row_avx2(float* const* v, const float* const* r, int64_t nt, int64_t pw,
                                int64_t W) {
  for (int64_t t0 = 0; t0 < nt; t0 += 8) {
    const int n = nt - t0 >= 8 ? 8 : static_cast<int>(nt - t0);
    const int64_t off = 4 * t0 - pw;  // image column of padded column 4 * t0
    const bool inside = off >= 0 && off + 36 <= W;
    __m128i mk[10];  // load q reads image columns off + 4 * (q % 5) + 16 * (q / 5) + 0..3
    if (!inside)
      for (int q = 0; q < 10; ++q) {
        const __m128i col = _mm_add_epi32(_mm_setr_epi32(0, 1, 2, 3),
                                          _mm_set1_epi32(static_cast<int>(off + 4 * (q % 5) +
                                                                          16 * (q / 5))));
        mk[q] = _mm_and_si128(_mm_cmpgt_epi32(col, _mm_set1_epi32(-1)),
                              _mm_cmplt_epi32(col, _mm_set1_epi32(static_cast<int>(W))));
      }
    // the five column items (A0, A1, B0, C0, C1) of row i for 8 tiles
    auto items = [&](int i, __m256* c) {
      if (!r[i]) {
        for (int j = 0; j < 5; ++j) c[j] = _mm256_setzero_ps();
        return;
      }
      const float* p = r[i] + off;
      // group g = the 4 columns of tile g; lanes (g, g + 4) side by side, transposed 4 x 4
      __m256 g[5];
      for (int k = 0; k < 5; ++k) {
        const __m128 a = inside ? _mm_loadu_ps(p + 4 * k) : _mm_maskload_ps(p + 4 * k, mk[k]);
        const __m128 b = inside ? _mm_loadu_ps(p + 4 * k + 16)
                                : _mm_maskload_ps(p + 4 * k + 16, mk[5 + k]);
        g[k] = _mm256_insertf128_ps(_mm256_castps128_ps256(a), b, 1);
      }
      const __m256 lo01 = _mm256_unpacklo_ps(g[0], g[1]), hi01 = _mm256_unpackhi_ps(g[0], g[1]);
      const __m256 lo23 = _mm256_unpacklo_ps(g[2], g[3]), hi23 = _mm256_unpackhi_ps(g[2], g[3]);
      const __m256 d0 = _mm256_shuffle_ps(lo01, lo23, _MM_SHUFFLE(1, 0, 1, 0));
      const __m256 d1 = _mm256_shuffle_ps(lo01, lo23, _MM_SHUFFLE(3, 2, 3, 2));
      const __m256 d2 = _mm256_shuffle_ps(hi01, hi23, _MM_SHUFFLE(1, 0, 1, 0));
      const __m256 d3 = _mm256_shuffle_ps(hi01, hi23, _MM_SHUFFLE(3, 2, 3, 2));
      // column 4 of tile g is column 0 of tile g + 1
      const __m256 lo12 = _mm256_unpacklo_ps(g[1], g[2]), lo34 = _mm256_unpacklo_ps(g[3], g[4]);
      const __m256 d4 = _mm256_shuffle_ps(lo12, lo34, _MM_SHUFFLE(1, 0, 1, 0));
      c[0] = _mm256_sub_ps(d0, d2);
      c[1] = d1;
      c[2] = d2;
      c[3] = _mm256_sub_ps(d4, d2);
      c[4] = d3;
    };
    __m256 c2[5], c[5];
    items(2, c2);
    for (int j = 0; j < 5; ++j) store_first(v[2 * 5 + j] + t0, c2[j], n);
    items(1, c);
    for (int j = 0; j < 5; ++j) store_first(v[1 * 5 + j] + t0, c[j], n);
    items(3, c);
    for (int j = 0; j < 5; ++j) store_first(v[4 * 5 + j] + t0, c[j], n);
    items(0, c);
    for (int j = 0; j < 5; ++j) store_first(v[0 * 5 + j] + t0, _mm256_sub_ps(c[j], c2[j]), n);
    items(4, c);
    for (int j = 0; j < 5; ++j) store_first(v[3 * 5 + j] + t0, _mm256_sub_ps(c[j], c2[j]), n);
  }
}

static bool wino_s2_out_row_avx2(float* y0, float* y1, const float* mm, int64_t ms, int64_t nt,
                                 int64_t Q, float bias) {
  const __m256 vb = _mm256_set1_ps(bias);
  __m256 bad = _mm256_setzero_ps();
  for (int64_t t0 = 0; t0 < nt; t0 += 8) {
    const __m256i m = lane_mask(nt - t0 >= 8 ? 8 : static_cast<int>(nt - t0));
    __m256 a[3][3];  // patterns (A, B, C) x (A, B, C)
#pragma GCC unroll 3
    for (int i = 0; i < 3; ++i)
#pragma GCC unroll 3
      for (int j = 0; j < 3; ++j) a[i][j] = _mm256_maskload_ps(mm + (3 * i + j) * ms + t0, m);
#pragma GCC unroll 2
    for (int i = 0; i < 2; ++i) {  // A^T = (1 1 0; 0 1 1) down the rows, then along the columns
      float* y = i == 0 ? y0 : y1;
      if (!y) continue;
      const __m256 t0r = _mm256_add_ps(a[i][0], a[i + 1][0]);
      const __m256 t1r = _mm256_add_ps(a[i][1], a[i + 1][1]);
      const __m256 t2r = _mm256_add_ps(a[i][2], a[i + 1][2]);
      store_column_pairs(y, _mm256_add_ps(_mm256_add_ps(t0r, t1r), vb),
                         _mm256_add_ps(_mm256_add_ps(t1r, t2r), vb), 2 * t0, Q, bad);
    }
  }
  return _mm256_movemask_ps(bad) == 0;
}

// KernelTable::conv_dx_lanes: the input gradient of a stride-1 convolution with 16 images in
// the lanes of two 8-float halves (LeNet-5's second layer: 6 input channels, 14 x 14 inputs, too
// few channels for the GEMM tiles). dy goes once per group of images to (k, p, q, image), each dx
// value is summed over only the (r, t) taps that reach dy, r then t then k ascending (k inner:
// a fixed trip count; the AVX-512 kernel's order, so the same bits), and the result goes back
// to (image, c, h, w). CB (<= 6) channels at a time: 12 accumulators.
template <int CB>
static void dx_lanes_rows(const DxLanesArgs& a, const float* dyT, float* dxT, int64_t c0) {
  const int64_t RS = a.R * a.S, S = a.S, CRS = a.C * RS;
  for (int64_t h = 0; h < a.H; ++h) {
    const int64_t r0 = std::max<int64_t>(0, h + a.ph - a.P + 1);
    const int64_t r1 = std::min(a.R - 1, h + a.ph);
    for (int64_t w = 0; w < a.W; ++w) {
      const int64_t t0 = std::max<int64_t>(0, w + a.pw - a.Q + 1);
      const int64_t t1 = std::min(S - 1, w + a.pw);
      __m256 acc[CB][2];
#pragma GCC unroll 6
      for (int c = 0; c < CB; ++c) acc[c][0] = acc[c][1] = _mm256_setzero_ps();
      for (int64_t r = r0; r <= r1; ++r)
        for (int64_t t = t0; t <= t1; ++t) {
          const float* d = dyT + 16 * ((h + a.ph - r) * a.Q + w + a.pw - t);
          const float* wt = a.w + c0 * RS + r * S + t;
          for (int64_t k = 0; k < a.K; ++k) {
            const __m256 d0 = _mm256_loadu_ps(d + 16 * k * a.P * a.Q);
            const __m256 d1 = _mm256_loadu_ps(d + 16 * k * a.P * a.Q + 8);
#pragma GCC unroll 6
            for (int c = 0; c < CB; ++c) {
              const __m256 wv = _mm256_broadcast_ss(wt + k * CRS + c * RS);
              acc[c][0] = _mm256_fmadd_ps(wv, d0, acc[c][0]);
              acc[c][1] = _mm256_fmadd_ps(wv, d1, acc[c][1]);
            }
          }
        }
#pragma GCC unroll 6
      for (int c = 0; c < CB; ++c) {
        float* o = dxT + 16 * (((c0 + c) * a.H + h) * a.W + w);
        _mm256_storeu_ps(o, acc[c][0]);
        _mm256_storeu_ps(o + 8, acc[c][1]);
      }
    }
  }
}

static void conv_dx_lanes_avx2(const DxLanesArgs& a, int64_t n0) {
  const int nimg = static_cast<int>(std::min<int64_t>(16, a.N - n0));
  const int64_t PQ = a.P * a.Q, HW = a.H * a.W;
  float* dyT = a.buf;  // (k, p, q) x 16 lanes, lanes past nimg zero
  float* dxT = dyT + 16 * a.K * PQ;
  images_to_lanes(dyT, a.dy, n0, nimg, a.K, a.P, a.Q, 0, a.P, 0, a.Q);
  for (int64_t c0 = 0; c0 < a.C; c0 += 6) {
    switch (std::min<int64_t>(6, a.C - c0)) {
      case 1: dx_lanes_rows<1>(a, dyT, dxT, c0); break;
      case 2: dx_lanes_rows<2>(a, dyT, dxT, c0); break;
      case 3: dx_lanes_rows<3>(a, dyT, dxT, c0); break;
      case 4: dx_lanes_rows<4>(a, dyT, dxT, c0); break;
      case 5: dx_lanes_rows<5>(a, dyT, dxT, c0); break;
      default: dx_lanes_rows<6>(a, dyT, dxT, c0); break;
    }
  }
  lanes_to_images(a.dx, HW, dxT, a.C, HW, n0, nimg);
}

// The portable bn_moments (kernels/portable.inc), sum for sum: element i of a run into sum i % 16,
// each run's tail after its 16-element chunks, d * d and d * dy fused as the compiler fuses them
// there. The portable loop keeps 64 float64 sums with dy, 16 ymm registers and more, and its
// AVX2 build spilled them to the stack; here a pass takes NV x 4 of the 16 sums (two passes of
// 8 with dy, re-reading the runs from L1; one of 16 without).
template <bool DY, int NV>
void bn_moments_pass(double (*out)[16], const float* x, const float* dy, int64_t L,
                     int64_t stride, int64_t nruns, double shift, int h0) {
  const int64_t L16 = L / 16 * 16;
  const __m256d sh = _mm256_set1_pd(shift);
  __m256d s[4][NV];
  for (int q = 0; q < 4; ++q)
    for (int v = 0; v < NV; ++v) s[q][v] = _mm256_setzero_pd();
  for (int64_t k = 0; k < nruns; ++k) {
    const float* xr = x + k * stride;
    const float* er = DY ? dy + k * stride : nullptr;
    for (int64_t i = 0; i < L16; i += 16)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        const __m256d d = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(xr + i + h0 + 4 * v)), sh);
        s[0][v] = _mm256_add_pd(s[0][v], d);
        s[1][v] = _mm256_fmadd_pd(d, d, s[1][v]);
        if (DY) {
          const __m256d e = _mm256_cvtps_pd(_mm_loadu_ps(er + i + h0 + 4 * v));
          s[2][v] = _mm256_add_pd(s[2][v], e);
          s[3][v] = _mm256_fmadd_pd(d, e, s[3][v]);
        }
      }
    if (L16 < L) {  // the tail's elements h0 .. h0 + 4 NV - 1 into their sums, in order
      alignas(32) double t[4][4 * NV];
      for (int q = 0; q < 4; ++q)
        for (int v = 0; v < NV; ++v) _mm256_store_pd(t[q] + 4 * v, s[q][v]);
      for (int64_t i = L16 + h0; i < std::min<int64_t>(L, L16 + h0 + 4 * NV); ++i) {
        const int j = static_cast<int>(i - L16 - h0);
        const double d = double(xr[i]) - shift;
        t[0][j] += d;
        t[1][j] = std::fma(d, d, t[1][j]);
        if (DY) {
          const double e = er[i];
          t[2][j] += e;
          t[3][j] = std::fma(d, e, t[3][j]);
        }
      }
      for (int q = 0; q < 4; ++q)
        for (int v = 0; v < NV; ++v) s[q][v] = _mm256_load_pd(t[q] + 4 * v);
    }
  }
  for (int q = 0; q < 4; ++q)
    for (int v = 0; v < NV; ++v) _mm256_storeu_pd(out[q] + h0 + 4 * v, s[q][v]);
}

void bn_moments_avx2(double* m, const float* x, const float* dy, int64_t L, int64_t stride,
                     int64_t nruns, double shift) {
  double out[4][16];
  if (dy) {
    bn_moments_pass<true, 2>(out, x, dy, L, stride, nruns, shift, 0);
    bn_moments_pass<true, 2>(out, x, dy, L, stride, nruns, shift, 8);
  } else {  // (sums 2 and 3 stay zero)
    bn_moments_pass<false, 4>(out, x, dy, L, stride, nruns, shift, 0);
  }
  for (int q = 0; q < 4; ++q) m[q] += ck_sum16(out[q]);
}

// KernelTable::rows_to_lanes16: 8 x 8 blocks transposed in registers (the portable loop's
// stride-16 stores took a fifth of a batch-1 ResNet-20 forward on small planes, where kvec lays
// out its weights on every call)
static void rows_to_lanes16_avx2(float* dst, const float* src, int64_t ld, int rows, int64_t n) {
  for (int64_t k0 = 0; k0 < n; k0 += 8) {
    const int cnt = static_cast<int>(std::min<int64_t>(8, n - k0));
    const __m256i m = first_lanes(cnt);
    for (int h = 0; h < 16; h += 8) {
      __m256 r[8];
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i)
        r[i] = h + i >= rows ? _mm256_setzero_ps()
               : cnt == 8    ? _mm256_loadu_ps(src + (h + i) * ld + k0)
                             : _mm256_maskload_ps(src + (h + i) * ld + k0, m);
      transpose8(r);
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j)
        if (j < cnt) _mm256_storeu_ps(dst + (k0 + j) * 16 + h, r[j]);
    }
  }
}

// KernelTable::phase_split_rows at strides 1 and 2 in vector moves: masked loads straight from
// the row (lanes outside it read as zeros), deinterleaved at stride 2. The portable loop moves
// one float at a time: a batch-1 (1, 16, 32, 32) -> 32 3x3 stride-2 direct layer took 46.6 us
// with it, 35.8 with this (1 thread). (A padded copy of each row in a stack buffer, read back in
// vector moves, stalled on store forwarding and gained nothing on (1, 32, 16, 16) -> 64.)
static void phase_split_rows_avx2(float* dst, int64_t dstep, int64_t fstride, const float* src,
                                  int64_t sstep, int64_t nrows, int64_t W, int64_t pw, int64_t sw,
                                  int64_t Wq) {
  if (!src || sw > 2 || W + 2 * pw + 32 > INT32_MAX) {  // (columns in 32-bit lanes)
    phase_split_rows(dst, dstep, fstride, src, sstep, nrows, W, pw, sw, Wq);
    return;
  }
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  // the lanes of the 8 columns from c on that lie inside [0, W)
  auto inside = [&](int64_t c) {
    const __m256i col = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(c)), lane);
    return _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_setzero_si256(), col),
                               _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(W)), col));
  };
  for (int64_t i = 0; i < nrows; ++i)
    for (int64_t j = 0; j < Wq; j += 8) {
      const int cnt = static_cast<int>(std::min<int64_t>(8, Wq - j));
      const int64_t c0 = j * sw - pw;  // the first column read
      const float* r = src + i * sstep + c0;
      float* d = dst + i * dstep + j;
      const __m256 a = _mm256_maskload_ps(r, inside(c0));
      if (sw == 1) {
        store_first(d, a, cnt);
        continue;
      }
      const __m256 b = _mm256_maskload_ps(r + 8, inside(c0 + 8));
      // [a0 a2 b0 b2 | a4 a6 b4 b6] -> [a0 a2 a4 a6 b0 b2 b4 b6], and the odd columns alike
      const __m256 ev = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
      const __m256 od = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
      store_first(d, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ev), 0xD8)), cnt);
      store_first(d + fstride,
                  _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(od), 0xD8)), cnt);
    }
}
}  // namespace avx2

void fill_table_avx2(KernelTable& t) {
  t.name = "avx2";
  t.lanes = 8;
  t.mr = avx2::MR;
  t.nr = avx2::NR;
  // (AVX-512 keeps 2048: 5 % faster than 256-deep passes on 7x7 layers, Zen 4.) Here, AMD EPYC
  // Zen 3, direct forced, 1 / 2 threads, ms: (8, 64, 56, 56) -> 64 3x3 25.8 -> 23.1 / 15.2 ->
  // 14.0; (8, 128, 28, 28) -> 256 3x3 stride 2 14.9 -> 13.4 / 9.3 -> 6.8; (32, 32, 56, 56) -> 64
  // 5x5 stride 2 34.6 -> 33.8 / 20.6 -> 17.1: the B rows of 576-1200 taps had left L1.
  t.direct_kc = 512;
  t.gemm = avx2::gemm_ukernel;
  t.gemm_direct = avx2::direct_ukernel;
  t.sgd = sgd_avx2;
  avx2::fill_portable(t);
  t.conv_dw_tile = avx2::conv_dw_tile_avx2;
  t.dw_tile_shapes = avx2::kDwTileShapes;
  t.dw_tile_nshapes = static_cast<int>(std::size(avx2::kDwTileShapes));
  t.conv_kvec = avx2::conv_kvec_avx2;
  t.conv_dw_kvec = avx2::conv_dw_kvec_avx2;
  t.rows_to_lanes16 = avx2::rows_to_lanes16_avx2;
  t.phase_split_rows = avx2::phase_split_rows_avx2;
  t.wino_in_row = avx2::wino_in_row_avx2;
  t.wino_out_row = avx2::wino_out_row_avx2;
  t.wino_plain = false;
  t.conv_dx_lanes = avx2::conv_dx_lanes_avx2;
  t.wino_lanes_item = avx2::wino_lanes_item_avx2;
  t.wino_lanes_dw_item = avx2::wino_lanes_dw_item_avx2;
  t.wino_s2_in_row = avx2::wino_s2_in_row_avx2;
  t.wino_s2_out_row = avx2::wino_s2_out_row_avx2;
  t.conv_rows = avx2::conv_rows_avx2;
  t.conv_rows_k = avx2::conv_rows_k_avx2;
  t.conv_row_dots = avx2::conv_row_dots_avx2;
  t.conv_dw_plane = avx2::conv_dw_plane_avx2;
  t.conv_dw3s2_plane = avx2::conv_dw3s2_plane_avx2;
  t.conv_dw3s2_dots = avx2::conv_dw3s2_dots_avx2;
  t.conv_dw3s2_dx = avx2::conv_dw3s2_dx_avx2;
  t.bn_moments = avx2::bn_moments_avx2;
}

}  // namespace convkit
