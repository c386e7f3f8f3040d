// AVX-512 kernels (this file alone is compiled with -mavx512f/dq/bw/vl): an 8 x 32 GEMM
// micro-kernel (16 zmm accumulators; 8 rows suit the 6-, 16-, 64- and 128-channel layers we
// target) and the portable loops.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels.h"
#include "transpose_avx512.h"

namespace convkit {
namespace avx512 {
#include "../portable.inc"

constexpr int MR = 8, NR = 32;

// a: kc x 8 packed, b: kc x 32 packed -> the mr x nr corner of c (ldc); masked loads and stores
// serve partial tiles, so edges need no copies. Edge tiles of at most 4 rows or 16 columns run a
// smaller register tile (MRT rows, NV vectors) instead of computing zeros.
// Direct: B row k is the NR floats at b + boff[k] (read with the column mask, so nothing past
// column nr is touched), else the packed row b + k * NR.
// Wide (Direct only, never accumulating): the tile's columns are positions j0 .. j0 + nr - 1 of
// a grid p * Wq + q whose columns q >= Q are dropped; the others are stored compacted, at
// c[i * ldc + p * Q + q] (each vector's kept lanes are consecutive there: compress, then store).
template <bool Direct, int MRT, int NV, bool Wide = false>
static inline void ukernel(int64_t kc, const float* a, const float* b, const int64_t* boff,
                           float* c, int64_t ldc, int mr, int nr, bool accumulate,
                           const float* bias, int64_t j0 = 0, int64_t Wq = 0, int64_t Q = 0) {
  __m512 acc[MRT][NV];
  const uint32_t bits = nr >= 32 ? 0xffffffffu : ((1u << nr) - 1u);
  const __mmask16 m0 = static_cast<__mmask16>(bits), m1 = static_cast<__mmask16>(bits >> 16);
  const bool full = nr == NR;
  if (!accumulate && !Wide)  // C is only stored: start fetching its lines now, not at the stores
#pragma GCC unroll 8
    for (int i = 0; i < MRT; ++i)
      if (i < mr) {
        _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
        if (NV == 2) _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 16), _MM_HINT_T0);
      }
#pragma GCC unroll 8
  for (int i = 0; i < MRT; ++i) {
    if (i < mr && accumulate) {
      acc[i][0] = _mm512_maskz_loadu_ps(m0, c + i * ldc);
      if (NV == 2) acc[i][NV - 1] = _mm512_maskz_loadu_ps(m1, c + i * ldc + 16);
    } else {
      acc[i][0] = (bias && i < mr) ? _mm512_set1_ps(bias[i]) : _mm512_setzero_ps();
      if (NV == 2) acc[i][NV - 1] = acc[i][0];
    }
  }
  for (int64_t k = 0; k < kc; ++k) {
    const float* bk = Direct ? b + boff[k] : b + k * NR;
    const __m512 b0 = Direct && !full ? _mm512_maskz_loadu_ps(m0, bk) : _mm512_loadu_ps(bk);
    __m512 b1 = b0;
    if (NV == 2) b1 = Direct && !full ? _mm512_maskz_loadu_ps(m1, bk + 16) : _mm512_loadu_ps(bk + 16);
#pragma GCC unroll 8
    for (int i = 0; i < MRT; ++i) {
      const __m512 ai = _mm512_set1_ps(a[k * MR + i]);
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      if (NV == 2) acc[i][NV - 1] = _mm512_fmadd_ps(ai, b1, acc[i][NV - 1]);
    }
  }
  if (Wide) {
    __mmask16 keep[NV], out[NV];  // lanes kept; the first popcount(keep) lanes
    int64_t dst[NV];              // where the first kept lane goes
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      uint32_t kbits = 0;
      int64_t first = -1;
      for (int l = 0; l < 16; ++l) {
        const int64_t j = j0 + 16 * v + l;
        if (16 * v + l < nr && j % Wq < Q) {
          kbits |= 1u << l;
          if (first < 0) first = j / Wq * Q + j % Wq;
        }
      }
      keep[v] = static_cast<__mmask16>(kbits);
      out[v] = static_cast<__mmask16>((1u << __builtin_popcount(kbits)) - 1u);
      dst[v] = first < 0 ? 0 : first;
    }
#pragma GCC unroll 8
    for (int i = 0; i < MRT; ++i)
      if (i < mr)
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v)
          _mm512_mask_storeu_ps(c + i * ldc + dst[v], out[v],
                                _mm512_maskz_compress_ps(keep[v], acc[i][v]));
    return;
  }
#pragma GCC unroll 8
  for (int i = 0; i < MRT; ++i) {
    if (i < mr) {
      _mm512_mask_storeu_ps(c + i * ldc, m0, acc[i][0]);
      if (NV == 2) _mm512_mask_storeu_ps(c + i * ldc + 16, m1, acc[i][NV - 1]);
    }
  }
}

template <bool Direct>
static inline void ukernel_any(int64_t kc, const float* a, const float* b, const int64_t* boff,
                               float* c, int64_t ldc, int mr, int nr, bool accumulate,
                               const float* bias) {
  if (mr > 4) {
    if (nr > 16) ukernel<Direct, 8, 2>(kc, a, b, boff, c, ldc, mr, nr, accumulate, bias);
    else ukernel<Direct, 8, 1>(kc, a, b, boff, c, ldc, mr, nr, accumulate, bias);
  } else {
    if (nr > 16) ukernel<Direct, 4, 2>(kc, a, b, boff, c, ldc, mr, nr, accumulate, bias);
    else ukernel<Direct, 4, 1>(kc, a, b, boff, c, ldc, mr, nr, accumulate, bias);
  }
}

static void gemm_ukernel(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                         int mr, int nr, bool accumulate, const float* bias) {
  ukernel_any<false>(kc, a, b, nullptr, c, ldc, mr, nr, accumulate, bias);
}

static void direct_ukernel(int64_t kc, const float* a, const float* b, const int64_t* boff,
                           float* c, int64_t ldc, int mr, int nr, bool accumulate,
                           const float* bias) {
  ukernel_any<true>(kc, a, b, boff, c, ldc, mr, nr, accumulate, bias);
}

static void direct_wide_ukernel(int64_t kc, const float* a, const float* b, const int64_t* boff,
                                float* c, int64_t ldc, int mr, int nr, const float* bias,
                                int64_t j0, int64_t Wq, int64_t Q) {
  if (mr > 4) {
    if (nr > 16) ukernel<true, 8, 2, true>(kc, a, b, boff, c, ldc, mr, nr, false, bias, j0, Wq, Q);
    else ukernel<true, 8, 1, true>(kc, a, b, boff, c, ldc, mr, nr, false, bias, j0, Wq, Q);
  } else {
    if (nr > 16) ukernel<true, 4, 2, true>(kc, a, b, boff, c, ldc, mr, nr, false, bias, j0, Wq, Q);
    else ukernel<true, 4, 1, true>(kc, a, b, boff, c, ldc, mr, nr, false, bias, j0, Wq, Q);
  }
}
// 16 2x2 windows of rows r0, r1 starting at output column q (n <= 16 of them valid): the four
// corners a b / c e as vectors (even and odd columns split with permutes), and the masks of the
// valid outputs (mq) and of the valid input floats in each half (mlo, mhi).
struct Windows2x2 {
  __m512 a, b, c, e;
  __mmask16 mq, mlo, mhi;
};

static inline Windows2x2 load_2x2(const float* r0, const float* r1, int64_t q, int n) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  Windows2x2 w;
  w.mq = static_cast<__mmask16>((1u << n) - 1u);
  w.mlo = static_cast<__mmask16>(n >= 8 ? 0xffffu : (1u << (2 * n)) - 1u);
  w.mhi = static_cast<__mmask16>(n <= 8 ? 0u : (1u << (2 * (n - 8))) - 1u);
  const __m512 x0l = _mm512_maskz_loadu_ps(w.mlo, r0 + 2 * q);
  const __m512 x0h = _mm512_maskz_loadu_ps(w.mhi, r0 + 2 * q + 16);
  const __m512 x1l = _mm512_maskz_loadu_ps(w.mlo, r1 + 2 * q);
  const __m512 x1h = _mm512_maskz_loadu_ps(w.mhi, r1 + 2 * q + 16);
  w.a = _mm512_permutex2var_ps(x0l, even, x0h);
  w.b = _mm512_permutex2var_ps(x0l, odd, x0h);
  w.c = _mm512_permutex2var_ps(x1l, even, x1h);
  w.e = _mm512_permutex2var_ps(x1l, odd, x1h);
  return w;
}

// lanes where v takes over as the running maximum m: larger, or NaN (as PyTorch)
static inline __mmask16 takes_max(__m512 v, __m512 m) {
  return _mm512_cmp_ps_mask(v, m, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
}

// 2x2 / stride-2 max-pool backward of one plane (see portable.inc for the contract): 16 windows
// per step; even/odd columns are split with permutes, winners picked with mask compares.
static void maxpool2x2_bwd(float* dx, const float* dy, const float* x, int64_t H, int64_t W,
                           int64_t P, int64_t Q) {
  const __m512i lo_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi_idx = _mm512_add_epi32(lo_idx, _mm512_set1_epi32(8));
  for (int64_t p = 0; p < P; ++p) {
    const float* r0 = x + 2 * p * W;
    const float* r1 = r0 + W;
    float* d0 = dx + 2 * p * W;
    float* d1 = d0 + W;
    const float* g = dy + p * Q;
    for (int64_t q = 0; q < Q; q += 16) {
      const Windows2x2 w = load_2x2(r0, r1, q, static_cast<int>(std::min<int64_t>(16, Q - q)));
      const __mmask16 mq = w.mq, mlo = w.mlo, mhi = w.mhi;
      const __mmask16 kb = takes_max(w.b, w.a);
      const __m512 m1 = _mm512_mask_blend_ps(kb, w.a, w.b);
      const __mmask16 kc = takes_max(w.c, m1);
      const __mmask16 ke = takes_max(w.e, _mm512_mask_blend_ps(kc, m1, w.c));
      const __m512 gv = _mm512_maskz_loadu_ps(mq, g + q);
      const __m512 ge = _mm512_maskz_mov_ps(ke, gv);
      const __m512 gc = _mm512_maskz_mov_ps(static_cast<__mmask16>(kc & ~ke), gv);
      const __m512 gb = _mm512_maskz_mov_ps(static_cast<__mmask16>(kb & ~kc & ~ke), gv);
      const __m512 ga = _mm512_maskz_mov_ps(static_cast<__mmask16>(~(kb | kc | ke)), gv);
      _mm512_mask_storeu_ps(d0 + 2 * q, mlo, _mm512_permutex2var_ps(ga, lo_idx, gb));
      _mm512_mask_storeu_ps(d0 + 2 * q + 16, mhi, _mm512_permutex2var_ps(ga, hi_idx, gb));
      _mm512_mask_storeu_ps(d1 + 2 * q, mlo, _mm512_permutex2var_ps(gc, lo_idx, ge));
      _mm512_mask_storeu_ps(d1 + 2 * q + 16, mhi, _mm512_permutex2var_ps(gc, hi_idx, ge));
    }
    if (W > 2 * Q) {  // odd width: the last column belongs to no window
      d0[W - 1] = 0.f;
      d1[W - 1] = 0.f;
    }
  }
  for (int64_t i = 2 * P * W; i < H * W; ++i) dx[i] = 0.f;  // odd height: the last row
}
// Max pool: the 2x2 / stride-2 / unpadded case vectorised like maxpool2x2_bwd, others portable.
static void maxpool_plane_avx512(float* y, const float* x, int64_t H, int64_t W, int64_t P,
                                 int64_t Q, int64_t R, int64_t S, int64_t sh, int64_t sw,
                                 int64_t ph, int64_t pw) {
  if (!(R == 2 && S == 2 && sh == 2 && sw == 2 && ph == 0 && pw == 0)) {
    maxpool_plane(y, x, H, W, P, Q, R, S, sh, sw, ph, pw);
    return;
  }
  for (int64_t p = 0; p < P; ++p) {
    const float* r0 = x + 2 * p * W;
    const float* r1 = r0 + W;
    for (int64_t q = 0; q < Q; q += 16) {
      const Windows2x2 w = load_2x2(r0, r1, q, static_cast<int>(std::min<int64_t>(16, Q - q)));
      __m512 m = w.a;
      for (__m512 v : {w.b, w.c, w.e}) m = _mm512_mask_blend_ps(takes_max(v, m), m, v);
      _mm512_mask_storeu_ps(y + p * Q + q, w.mq, m);
    }
  }
}
// conv_dw_tile with KT x TG accumulators held in registers (TG x vectors + 1 dy vector + KT*TG
// sums <= 32 registers); rows kk >= kt reread row kt - 1, columns tt >= tg reread column tg - 1,
// and neither is stored.
template <int KT, int TG>
static void dw_tile(float* out, int64_t ldo, const DwTileArgs& a, int kt, int tg) {
  __m512 acc[KT][TG];
#pragma GCC unroll 24
  for (int kk = 0; kk < KT; ++kk)
#pragma GCC unroll 7
    for (int tt = 0; tt < TG; ++tt) acc[kk][tt] = _mm512_setzero_ps();
  int64_t xo[TG], dyo[KT];
#pragma GCC unroll 7
  for (int tt = 0; tt < TG; ++tt) xo[tt] = a.xoff[tt < tg ? tt : tg - 1];
#pragma GCC unroll 24
  for (int kk = 0; kk < KT; ++kk) dyo[kk] = (kk < kt ? kk : kt - 1) * a.dy_ks;
  for (int64_t n = 0; n < a.N; ++n)
    for (int64_t p = 0; p < a.P; ++p) {
      const float* d = a.dy + n * a.dy_ns + p * a.dy_rs;
      const float* xr = a.x + n * a.x_ns + p * a.x_rs;
      for (int64_t q = 0; q < a.Q; q += 16) {
        const __mmask16 m =
            a.Q - q >= 16 ? __mmask16(0xffff) : __mmask16((1u << (a.Q - q)) - 1u);
        __m512 xv[TG];
#pragma GCC unroll 7
        for (int tt = 0; tt < TG; ++tt) xv[tt] = _mm512_maskz_loadu_ps(m, xr + xo[tt] + q);
#pragma GCC unroll 24
        for (int kk = 0; kk < KT; ++kk) {
          const __m512 dv = _mm512_maskz_loadu_ps(m, d + dyo[kk] + q);
#pragma GCC unroll 7
          for (int tt = 0; tt < TG; ++tt) acc[kk][tt] = _mm512_fmadd_ps(dv, xv[tt], acc[kk][tt]);
        }
      }
    }
  // constant indices only, so acc stays in registers through the loops above
  float sums[KT][TG];
#pragma GCC unroll 24
  for (int kk = 0; kk < KT; ++kk)
#pragma GCC unroll 7
    for (int tt = 0; tt < TG; ++tt) sums[kk][tt] = _mm512_reduce_add_ps(acc[kk][tt]);
  for (int kk = 0; kk < kt && kk < KT; ++kk)
    for (int tt = 0; tt < tg && tt < TG; ++tt) out[kk * ldo + tt] = sums[kk][tt];
}

using DwTileFn = void (*)(float*, int64_t, const DwTileArgs&, int, int);

// The first of dw_tile<KTs, TG>... with KT >= kt (null when kt exceeds them all).
template <int TG, int... KTs>
static DwTileFn dw_tile_for(int kt) {
  DwTileFn f = nullptr;
  ((f = (f == nullptr && kt <= KTs) ? dw_tile<KTs, TG> : f), ...);
  return f;
}

// Register tiles up to (24,1) (12,2) (8,3) (6,4) (4,5) (4,6) (3,7), and smaller ones, so that the
// last tiles of a row or column of dW do not pay for a full one.
static void conv_dw_tile_avx512(float* out, int64_t ldo, const DwTileArgs& a, int kt, int tg) {
  DwTileFn f = nullptr;
  switch (tg) {
    case 1: f = dw_tile_for<1, 1, 2, 3, 4, 6, 8, 12, 24>(kt); break;
    case 2: f = dw_tile_for<2, 1, 2, 3, 4, 6, 8, 12>(kt); break;
    case 3: f = dw_tile_for<3, 1, 2, 3, 4, 6, 8>(kt); break;
    case 4: f = dw_tile_for<4, 1, 2, 3, 4, 6>(kt); break;
    case 5: f = dw_tile_for<5, 1, 2, 3, 4>(kt); break;
    case 6: f = dw_tile_for<6, 1, 2, 3, 4>(kt); break;
    case 7: f = dw_tile_for<7, 1, 2, 3>(kt); break;
    default: break;
  }
  if (f) f(out, ldo, a, kt, tg);
  else conv_dw_tile(out, ldo, a, kt, tg);
}
// conv_kvec: 2 rows x NQ positions, one zmm of 16 output channels each (2 * NQ accumulators).
template <int NQ>
static void kvec_tile(float* out, int64_t ldo, int64_t ldr, const float* x, int64_t Wp,
                      const int64_t* off, int64_t crs, const float* w, const float* bias, int nq,
                      int nk, bool two_rows) {
  __m512 acc[2][NQ];
  const __mmask16 mk = static_cast<__mmask16>((1u << nk) - 1u);
  const __m512 b0 = bias ? _mm512_maskz_loadu_ps(mk, bias) : _mm512_setzero_ps();
#pragma GCC unroll 16
  for (int i = 0; i < NQ; ++i) acc[0][i] = acc[1][i] = b0;
  for (int64_t k = 0; k < crs; ++k) {
    const __m512 wk = _mm512_loadu_ps(w + k * 16);
    const float* xk = x + off[k];
#pragma GCC unroll 16
    for (int i = 0; i < NQ; ++i) {
      acc[0][i] = _mm512_fmadd_ps(_mm512_set1_ps(xk[i]), wk, acc[0][i]);
      acc[1][i] = _mm512_fmadd_ps(_mm512_set1_ps(xk[Wp + i]), wk, acc[1][i]);
    }
  }
  // position-major in registers, channel-major in y: transpose in registers, masked stores
  const __mmask16 mq = static_cast<__mmask16>((1u << nq) - 1u);
  for (int rr = 0; rr < (two_rows ? 2 : 1); ++rr) {
    __m512 t[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) t[i] = i < NQ ? acc[rr][i < NQ ? i : 0] : _mm512_setzero_ps();
    transpose16(t);
#pragma GCC unroll 16
    for (int kk = 0; kk < 16; ++kk)
      if (kk < nk) _mm512_mask_storeu_ps(out + kk * ldo + rr * ldr, mq, t[kk]);
  }
}

static void conv_kvec_avx512(float* out, int64_t ldo, int64_t ldr, const float* x, int64_t Wp,
                             const int64_t* off, int64_t crs, const float* w, const float* bias,
                             int nq, int nk, bool two_rows) {
  if (nq <= 8) kvec_tile<8>(out, ldo, ldr, x, Wp, off, crs, w, bias, nq, nk, two_rows);
  else if (nq <= 10) kvec_tile<10>(out, ldo, ldr, x, Wp, off, crs, w, bias, nq, nk, two_rows);
  else kvec_tile<12>(out, ldo, ldr, x, Wp, off, crs, w, bias, nq < 12 ? nq : 12, nk, two_rows);
}
// conv_dx_rows: up to 4 rows x NSEG vectors of 16 columns in registers. Each dy row vector
// (for kernel column t) is loaded once and serves every output row it reaches (r = h + ph - i).
template <int NSEG>
static void dx_rows_tile(float* dx, const float* dy, const float* wt, int64_t h0, int nh,
                         int64_t w0, const DxRowsArgs& a) {
  __m512 acc[4][NSEG];
#pragma GCC unroll 4
  for (int hh = 0; hh < 4; ++hh)
#pragma GCC unroll 4
    for (int sg = 0; sg < NSEG; ++sg) acc[hh][sg] = _mm512_setzero_ps();
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __mmask16 mk[16][NSEG];  // lanes whose dy column w + pw - t is inside [0, Q), and w < W
  for (int64_t t = 0; t < a.S; ++t)
    for (int sg = 0; sg < NSEG; ++sg) {
      const int64_t w = w0 + sg * 16;
      const __m512i col = _mm512_add_epi32(iota, _mm512_set1_epi32(static_cast<int>(w + a.pw - t)));
      const __m512i ww = _mm512_add_epi32(iota, _mm512_set1_epi32(static_cast<int>(w)));
      mk[t][sg] = _mm512_cmpge_epi32_mask(col, _mm512_setzero_si512()) &
                  _mm512_cmplt_epi32_mask(col, _mm512_set1_epi32(static_cast<int>(a.Q))) &
                  _mm512_cmplt_epi32_mask(ww, _mm512_set1_epi32(static_cast<int>(a.W)));
    }
  const int64_t i0 = std::max<int64_t>(0, h0 + a.ph - (a.R - 1));
  const int64_t i1 = std::min<int64_t>(a.P, h0 + nh + a.ph);
  for (int64_t k = 0; k < a.K; ++k)
    for (int64_t i = i0; i < i1; ++i) {
      const float* drow = dy + (k * a.P + i) * a.Q + w0 + a.pw;
      const float* wr[4];  // the weight row (k, r) serving output row hh, or null
#pragma GCC unroll 4
      for (int hh = 0; hh < 4; ++hh) {
        const int64_t r = h0 + hh + a.ph - i;
        wr[hh] = (hh < nh && r >= 0 && r < a.R) ? wt + (k * a.R + r) * a.S : nullptr;
      }
      for (int64_t t = 0; t < a.S; ++t) {
        __m512 v[NSEG];
#pragma GCC unroll 4
        for (int sg = 0; sg < NSEG; ++sg) v[sg] = _mm512_maskz_loadu_ps(mk[t][sg], drow + sg * 16 - t);
#pragma GCC unroll 4
        for (int hh = 0; hh < 4; ++hh)
          if (wr[hh]) {
            const __m512 wv = _mm512_set1_ps(wr[hh][t]);
#pragma GCC unroll 4
            for (int sg = 0; sg < NSEG; ++sg) acc[hh][sg] = _mm512_fmadd_ps(wv, v[sg], acc[hh][sg]);
          }
      }
    }
#pragma GCC unroll 4
  for (int hh = 0; hh < 4; ++hh)
    if (hh < nh)
#pragma GCC unroll 4
      for (int sg = 0; sg < NSEG; ++sg) {
        const int64_t w = w0 + sg * 16, left = a.W - w;
        if (left <= 0) break;
        const __mmask16 m = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1u);
        _mm512_mask_storeu_ps(dx + hh * a.W + w, m, acc[hh][sg]);
      }
}

static void conv_dx_rows_avx512(float* dx, const float* dy, const float* wt, int64_t h0, int nh,
                                const DxRowsArgs& a) {
  for (int64_t w0 = 0; w0 < a.W; w0 += 64) {
    const int64_t nseg = std::min<int64_t>(4, (a.W - w0 + 15) / 16);
    if (nseg == 1) dx_rows_tile<1>(dx, dy, wt, h0, nh, w0, a);
    else if (nseg == 2) dx_rows_tile<2>(dx, dy, wt, h0, nh, w0, a);
    else if (nseg == 3) dx_rows_tile<3>(dx, dy, wt, h0, nh, w0, a);
    else dx_rows_tile<4>(dx, dy, wt, h0, nh, w0, a);
  }
}
// Winograd F(2x2, 3x3) transforms, 16 tiles per step: the even and odd input columns of a row
// are split with permutes, so each of the 4 x 4 patch entries is one vector of 16 tiles.
static void wino_in_row_avx512(float* v, int64_t vs, const float* const* r, int64_t nt) {
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

static bool wino_out_row_avx512(float* y0, float* y1, const float* mm, int64_t ms, int64_t nt,
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
static void wino_s2_in_row_avx512(float* const* v, const float* const* r, int64_t nt,
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

static bool wino_s2_out_row_avx512(float* y0, float* y1, const float* mm, int64_t ms,
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

// phase_split_rows for sw = 2: 32 input columns per step, split into even and odd lanes with two
// permutes, the column masks computed once for all rows; other strides take the portable loop.
static void phase_split_rows_avx512(float* dst, int64_t dstep, int64_t fstride, const float* src,
                                    int64_t sstep, int64_t nrows, int64_t W, int64_t pw,
                                    int64_t sw, int64_t Wq) {
  if (sw == 1) {
    pad_rows_avx512(dst, dstep, src, sstep, nrows, W, pw, Wq);
    return;
  }
  if (sw != 2 || !src || Wq > 256) {
    phase_split_rows(dst, dstep, fstride, src, sstep, nrows, W, pw, sw, Wq);
    return;
  }
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __m512i vw = _mm512_set1_epi32(static_cast<int>(W)), zero = _mm512_setzero_si512();
  const int nb = static_cast<int>((Wq + 15) / 16);
  __mmask16 m0[16], m1[16], mj[16];  // source lanes of the two loads, destination lanes
  for (int b = 0; b < nb; ++b) {
    const int64_t j0 = 16 * b, base = 2 * j0 - pw;  // input column of the first even lane
    const __m512i c0 = _mm512_add_epi32(iota, _mm512_set1_epi32(static_cast<int>(base)));
    const __m512i c1 = _mm512_add_epi32(c0, _mm512_set1_epi32(16));
    m0[b] = _mm512_cmpge_epi32_mask(c0, zero) & _mm512_cmplt_epi32_mask(c0, vw);
    m1[b] = _mm512_cmpge_epi32_mask(c1, zero) & _mm512_cmplt_epi32_mask(c1, vw);
    mj[b] = Wq - j0 >= 16 ? __mmask16(0xffff) : __mmask16((1u << (Wq - j0)) - 1u);
  }
  for (int64_t i = 0; i < nrows; ++i) {
    const float* r = src + i * sstep - pw;
    float* d = dst + i * dstep;
    for (int b = 0; b < nb; ++b) {
      const __m512 lo = _mm512_maskz_loadu_ps(m0[b], r + 32 * b);
      const __m512 hi = _mm512_maskz_loadu_ps(m1[b], r + 32 * b + 16);
      _mm512_mask_storeu_ps(d + 16 * b, mj[b], _mm512_permutex2var_ps(lo, even, hi));
      _mm512_mask_storeu_ps(d + fstride + 16 * b, mj[b], _mm512_permutex2var_ps(lo, odd, hi));
    }
  }
}
// conv_dw_kvec: NT taps x 16 channels in registers; per position one dy vector and NT broadcast
// input values. Taps come in runs of S consecutive offsets (the S columns of a kernel row) when
// the caller's offsets allow: G row pointers and constant displacements, no offset reloads.
template <int S, int G>
static void dw_kvec_rows(float* out, int64_t ldo, const float* dyT, const float* x, int64_t x_ns,
                         int64_t x_rs, const int64_t* off, int nt, int nk, int64_t N, int64_t P,
                         int64_t Q) {
  constexpr int NT = S * G;
  __m512 acc[NT];
#pragma GCC unroll 28
  for (int i = 0; i < NT; ++i) acc[i] = _mm512_setzero_ps();
  const int ng = (nt + S - 1) / S;
  int64_t ro[G];  // row g starts at off[g * S]; rows past ng reread the last one
#pragma GCC unroll 28
  for (int g = 0; g < G; ++g) ro[g] = off[(g < ng ? g : ng - 1) * S];
  for (int64_t n = 0; n < N; ++n)
    for (int64_t p = 0; p < P; ++p) {
      const float* xr = x + n * x_ns + p * x_rs;
      const float* d = dyT + (n * P + p) * Q * 16;
      for (int64_t q = 0; q < Q; ++q) {
        // opaque to the compiler: otherwise it carries the shifted window of input values
        // from one q to the next through spilled scalars, which runs far slower than reloading
        const __m512 dv = _mm512_loadu_ps(d + q * 16);
#pragma GCC unroll 28
        for (int g = 0; g < G; ++g) {
          const float* row = xr + ro[g] + q;  // taps of row g at constant displacements
          asm("" : "+r"(row));
#pragma GCC unroll 8
          for (int t = 0; t < S; ++t)
            acc[g * S + t] = _mm512_fmadd_ps(_mm512_set1_ps(row[t]), dv, acc[g * S + t]);
        }
      }
    }
  alignas(64) float tmp[NT][16];
#pragma GCC unroll 28
  for (int i = 0; i < NT; ++i) _mm512_store_ps(tmp[i], acc[i]);
  for (int kk = 0; kk < nk; ++kk)
    for (int i = 0; i < nt; ++i) out[kk * ldo + i] = tmp[i][kk];
}

// The portable dot products for tiles the register versions do not cover, from dyT.
static void dw_kvec_plain(float* out, int64_t ldo, const float* dyT, const float* x, int64_t x_ns,
                          int64_t x_rs, const int64_t* off, int nt, int nk, int64_t N, int64_t P,
                          int64_t Q) {
  for (int i = 0; i < nt; ++i) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t n = 0; n < N; ++n)
      for (int64_t p = 0; p < P; ++p) {
        const float* xr = x + n * x_ns + p * x_rs + off[i];
        const float* d = dyT + (n * P + p) * Q * 16;
        for (int64_t q = 0; q < Q; ++q)
          acc = _mm512_fmadd_ps(_mm512_set1_ps(xr[q]), _mm512_loadu_ps(d + q * 16), acc);
      }
    alignas(64) float tmp[16];
    _mm512_store_ps(tmp, acc);
    for (int kk = 0; kk < nk; ++kk) out[kk * ldo + i] = tmp[kk];
  }
}

static void conv_dw_kvec_avx512(float* out, int64_t ldo, const float* dyT, const float* x,
                                int64_t x_ns, int64_t x_rs, const int64_t* off, int S, int nt,
                                int nk, int64_t N, int64_t P, int64_t Q) {
  using Fn = void (*)(float*, int64_t, const float*, const float*, int64_t, int64_t,
                      const int64_t*, int, int, int64_t, int64_t, int64_t);
  static const Fn by_s[8] = {nullptr,          dw_kvec_rows<1, 28>, dw_kvec_rows<2, 14>,
                             dw_kvec_rows<3, 9>, dw_kvec_rows<4, 7>,  dw_kvec_rows<5, 5>,
                             dw_kvec_rows<6, 4>, dw_kvec_rows<7, 4>};
  const Fn f = (S >= 1 && S <= 7 && nt % S == 0 && nt <= 28 / S * S) ? by_s[S] : dw_kvec_plain;
  f(out, ldo, dyT, x, x_ns, x_rs, off, nt, nk, N, P, Q);
}

// col2im_plane: 16 dx columns at a time, all taps (r, t) reaching them added in a register and
// the result stored once. Lanes whose source column falls outside [0, Q) load nothing; for
// column stride 2 each tap's 8 or 9 source values are spread to the lanes of matching parity
// with a permute. Masks, offsets and permutes are computed once per (t, column block) for rows
// up to 64 wide and 16 taps; other shapes and strides take the portable loop.
struct C2iTables {
  const __mmask16* mw;
  const __mmask16 (*ml)[4];
  const __mmask16 (*ma)[4];
  const int64_t (*src)[4];
  const __m512i (*perm)[4];
};

// The rows of col2im_plane for NB column blocks (a constant, so the sums stay in registers).
template <int NB>
static void col2im_plane_rows(float* dx, const float* g, int64_t ld, const Col2imArgs& a,
                              const C2iTables& tb) {
  for (int64_t h = 0; h < a.H; ++h) {
    __m512 acc[NB];
#pragma GCC unroll 4
    for (int b = 0; b < NB; ++b) acc[b] = _mm512_setzero_ps();
    for (int64_t r = 0; r < a.R; ++r) {
      const int64_t u = h + a.ph - r;
      if (u < 0 || u % a.sh != 0 || u / a.sh >= a.P) continue;
      const float* gr = g + r * a.S * ld + (u / a.sh) * a.Q;
      for (int64_t t = 0; t < a.S; ++t) {
        const float* gt = gr + t * ld;
#pragma GCC unroll 4
        for (int b = 0; b < NB; ++b) {
          const __m512 v = _mm512_maskz_loadu_ps(tb.ml[t][b], gt + tb.src[t][b]);
          acc[b] = a.sw == 1 ? _mm512_add_ps(acc[b], v)
                             : _mm512_mask_add_ps(acc[b], tb.ma[t][b], acc[b],
                                                  _mm512_permutexvar_ps(tb.perm[t][b], v));
        }
      }
    }
#pragma GCC unroll 4
    for (int b = 0; b < NB; ++b) _mm512_mask_storeu_ps(dx + h * a.W + 16 * b, tb.mw[b], acc[b]);
  }
}

static void col2im_plane_avx512(float* dx, const float* g, int64_t ld, const Col2imArgs& a) {
  if (a.sw > 2 || a.S > 16 || a.W > 64) {
    col2im_plane(dx, g, ld, a);
    return;
  }
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i zero = _mm512_setzero_si512(), one = _mm512_set1_epi32(1);
  const __m512i vq = _mm512_set1_epi32(static_cast<int>(a.Q));
  const int nb = static_cast<int>((a.W + 15) / 16);
  __mmask16 mw[4], ml[16][4], ma[16][4];  // dx lanes; source lanes loaded; lanes added
  int64_t src[16][4];                     // source offset of lane 0 within a tap row
  __m512i perm[16][4];                    // stride 2: source lane of each dx lane
  for (int b = 0; b < nb; ++b) {
    const int64_t w0 = 16 * b;
    mw[b] = a.W - w0 >= 16 ? __mmask16(0xffff) : __mmask16((1u << (a.W - w0)) - 1u);
    for (int64_t t = 0; t < a.S; ++t) {
      const int64_t base = w0 + a.pw - t;  // w + pw - t of lane 0
      if (a.sw == 1) {
        const __m512i q = _mm512_add_epi32(iota, _mm512_set1_epi32(static_cast<int>(base)));
        ml[t][b] = mw[b] & _mm512_cmpge_epi32_mask(q, zero) & _mm512_cmplt_epi32_mask(q, vq);
        src[t][b] = base;
        continue;
      }
      // lane l takes source q = (base + l) / 2 when base + l is even; loaded from floor(base / 2)
      const int64_t q0 = base >= 0 ? base / 2 : -((1 - base) / 2);
      const __m512i u = _mm512_add_epi32(iota, _mm512_set1_epi32(static_cast<int>(base)));
      const __m512i q = _mm512_srai_epi32(u, 1);
      ma[t][b] = mw[b] & _mm512_testn_epi32_mask(u, one) & _mm512_cmpge_epi32_mask(u, zero) &
                 _mm512_cmplt_epi32_mask(q, vq);
      const __m512i ql = _mm512_add_epi32(iota, _mm512_set1_epi32(static_cast<int>(q0)));
      ml[t][b] = _mm512_cmpge_epi32_mask(ql, zero) & _mm512_cmplt_epi32_mask(ql, vq);
      perm[t][b] = _mm512_sub_epi32(q, _mm512_set1_epi32(static_cast<int>(q0)));
      src[t][b] = q0;
    }
  }
  const C2iTables tb{mw, ml, ma, src, perm};
  switch (nb) {
    case 1: col2im_plane_rows<1>(dx, g, ld, a, tb); break;
    case 2: col2im_plane_rows<2>(dx, g, ld, a, tb); break;
    case 3: col2im_plane_rows<3>(dx, g, ld, a, tb); break;
    default: col2im_plane_rows<4>(dx, g, ld, a, tb); break;
  }
}
bool wino5_item_avx512(const Wino5Args& a, int64_t n0, int64_t ty0, int64_t ty1);  // winograd5
void conv_dx_lanes_avx512(const DxLanesArgs& a, int64_t n0);                       // conv_lanes
void conv_rows_avx512(float* y, int64_t ystep, int64_t nrows, int64_t Q,            // conv_rows
                      const float* base, int64_t bstep, const int64_t* off, const float* w,
                      int64_t ntaps, float bias);
void conv_row_dots_avx512(float* lanes, const float* dy, int64_t Q, const float* base,
                          const int64_t* off, int64_t ntaps);
}  // namespace avx512

void fill_table_avx512(KernelTable& t) {
  t.name = "avx512";
  t.mr = avx512::MR;
  t.nr = avx512::NR;
  t.gemm = avx512::gemm_ukernel;
  t.gemm_direct = avx512::direct_ukernel;
  avx512::fill_portable(t);
  t.maxpool2x2_bwd_plane = avx512::maxpool2x2_bwd;
  t.maxpool_plane = avx512::maxpool_plane_avx512;
  t.conv_dw_tile = avx512::conv_dw_tile_avx512;
  t.conv_kvec = avx512::conv_kvec_avx512;
  t.conv_dx_rows = avx512::conv_dx_rows_avx512;
  t.conv_dw_kvec = avx512::conv_dw_kvec_avx512;
  t.col2im_plane = avx512::col2im_plane_avx512;
  t.phase_split_rows = avx512::phase_split_rows_avx512;
  t.wino_in_row = avx512::wino_in_row_avx512;
  t.wino_out_row = avx512::wino_out_row_avx512;
  t.wino_s2_in_row = avx512::wino_s2_in_row_avx512;
  t.wino_s2_out_row = avx512::wino_s2_out_row_avx512;
  t.wino5_item = avx512::wino5_item_avx512;
  t.gemm_direct_wide = avx512::direct_wide_ukernel;
  t.conv_dx_lanes = avx512::conv_dx_lanes_avx512;
  t.conv_rows = avx512::conv_rows_avx512;
  t.conv_row_dots = avx512::conv_row_dots_avx512;
}

}  // namespace convkit
