// Register tiles of the plain convolution paths: weight-gradient dot products (dw_tile,
// dw_kvec), channels-in-lanes forward (kvec), input-gradient rows (dx_rows), col2im of a plane.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/avx512/avx512.h"
#include "transpose_avx512.h"

namespace convkit {
namespace avx512 {
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
const int kDwTileShapes[7][2] = {{4, 6}, {6, 4}, {8, 3}, {3, 7}, {4, 5}, {12, 2}, {24, 1}};
void conv_dw_tile_avx512(float* out, int64_t ldo, const DwTileArgs& a, int kt, int tg) {
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
  else portable_conv_dw_tile(out, ldo, a, kt, tg);
}
// conv_kvec: 2 rows x NQ positions, one zmm of 16 output channels each (2 * NQ accumulators).
// STRIDED: positions xstep apart (else adjacent, at constant offsets).
template <int NQ, bool STRIDED>
static void kvec_tile(float* out, int64_t ldo, int64_t ldr, const float* x, int64_t Wp,
                      int64_t xstep, const int64_t* off, int64_t crs, const float* w,
                      const float* bias, int nq, int nk, bool two_rows) {
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
      const int64_t xi = STRIDED ? i * xstep : i;
      acc[0][i] = _mm512_fmadd_ps(_mm512_set1_ps(xk[xi]), wk, acc[0][i]);
      acc[1][i] = _mm512_fmadd_ps(_mm512_set1_ps(xk[Wp + xi]), wk, acc[1][i]);
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

template <bool STRIDED>
static void kvec_tiles(float* out, int64_t ldo, int64_t ldr, const float* x, int64_t Wp,
                       int64_t xstep, const int64_t* off, int64_t crs, const float* w,
                       const float* bias, int nq, int nk, bool two_rows) {
  if (nq <= 8)
    kvec_tile<8, STRIDED>(out, ldo, ldr, x, Wp, xstep, off, crs, w, bias, nq, nk, two_rows);
  else if (nq <= 10)
    kvec_tile<10, STRIDED>(out, ldo, ldr, x, Wp, xstep, off, crs, w, bias, nq, nk, two_rows);
  else
    kvec_tile<12, STRIDED>(out, ldo, ldr, x, Wp, xstep, off, crs, w, bias, nq < 12 ? nq : 12, nk,
                           two_rows);
}

void conv_kvec_avx512(float* out, int64_t ldo, int64_t ldr, const float* x, int64_t Wp,
                      int64_t xstep, const int64_t* off, int64_t crs, const float* w,
                      const float* bias, int nq, int nk, bool two_rows) {
  (xstep == 1 ? kvec_tiles<false> : kvec_tiles<true>)(out, ldo, ldr, x, Wp, xstep, off, crs, w,
                                                       bias, nq, nk, two_rows);
}
// conv_kvec_blocks: KB blocks of 16 channels x NQ positions of one row (KB * NQ <= 28
// accumulators); per tap KB weight loads and NQ broadcasts feed KB * NQ multiply-adds.
// The multiply-adds of one tap for positions [I0, I1). With 28 accumulators and 4 weight
// vectors every register is taken: the input value is broadcast from memory inside the
// multiply-add ({1to16}), which the compiler does not emit itself.
template <int KB, int NQ, int I0, int I1>
static inline __attribute__((always_inline)) void kvec_fmas(__m512 (&acc)[KB][NQ],
                                                            const __m512 (&wk)[KB],
                                                            const float* xk, int64_t xstep) {
#pragma GCC unroll 16
  for (int i = I0; i < I1; ++i) {
    const float* xp = xk + i * xstep;
#ifndef CONVKIT_EMULATED_AVX512  // (tools/emulated_avx512.h: the same multiply-adds below)
    if (KB * NQ > 24) {
#pragma GCC unroll 4
      for (int b = 0; b < KB; ++b)
        asm("vfmadd231ps %1%{1to16%}, %2, %0" : "+v"(acc[b][i]) : "m"(*xp), "v"(wk[b]));
    } else
#endif
    {
      const __m512 xv = _mm512_set1_ps(*xp);
#pragma GCC unroll 4
      for (int b = 0; b < KB; ++b) acc[b][i] = _mm512_fmadd_ps(xv, wk[b], acc[b][i]);
    }
  }
}

// The same for 4 blocks x 7 positions, a block at a time (the weight vectors at wk + b *
// wstride, one of them live): position by position, the 4 weight vectors and 28 sums took
// every register and the compiler kept 3-4 sums on the stack, which ran at 77 % of the FMA
// peak on one core ((8, 512, 7, 7) -> 2048 1x1, 1 thread: 8.6-8.8 ms -> 8.2-8.3). The same
// products in the same order for each sum. (2 blocks x 14 measured slower this way.)
template <int KB, int NQ, int I0, int I1>
static inline __attribute__((always_inline)) void kvec_fmas_by_block(__m512 (&acc)[KB][NQ],
                                                                     const float* wk,
                                                                     int64_t wstride,
                                                                     const float* xk,
                                                                     int64_t xstep) {
#pragma GCC unroll 4
  for (int b = 0; b < KB; ++b) {
    const __m512 wv = _mm512_loadu_ps(wk + b * wstride);
#pragma GCC unroll 16
    for (int i = I0; i < I1; ++i)
#ifdef CONVKIT_EMULATED_AVX512  // (tools/emulated_avx512.h: the same multiply-add)
      acc[b][i] = _mm512_fmadd_ps(_mm512_set1_ps(xk[i * xstep]), wv, acc[b][i]);
#else
      asm("vfmadd231ps %1%{1to16%}, %2, %0" : "+v"(acc[b][i]) : "m"(xk[i * xstep]), "v"(wv));
#endif
  }
}

template <int KB, int NQ>
static void kvec_blocks_tile(float* out, int64_t ldo, const float* x, int64_t xstep,
                             const int64_t* off, int64_t crs, const float* w, int64_t wstride,
                             const float* bias, int nq, int nk, float* part, int mode,
                             const KvecTaps* taps) {
  __m512 acc[KB][NQ];
#pragma GCC unroll 4
  for (int b = 0; b < KB; ++b) {
    const int nkb = nk - 16 * b < 0 ? 0 : (nk - 16 * b > 16 ? 16 : nk - 16 * b);
    const __mmask16 mk = static_cast<__mmask16>((1u << nkb) - 1u);
    const __m512 b0 = bias ? _mm512_maskz_loadu_ps(mk, bias + 16 * b) : _mm512_setzero_ps();
#pragma GCC unroll 16
    for (int i = 0; i < NQ; ++i)
      acc[b][i] = mode & kKvecResume ? _mm512_loadu_ps(part + (b * NQ + i) * 16) : b0;
  }
  // the taps' classes, (rt0 + k) % rs counted along. "Not last" skips lane NQ - 1: in a tile
  // of fewer positions that lane is never stored, and the zero products of position nq - 1
  // are computed, which leaves them as they are.
  const uint8_t* cls = taps ? taps->cls : nullptr;
  const int rs = taps ? taps->rs : 1;
  int rt = taps ? taps->rt0 : 0;
  for (int64_t k = 0; k < crs; ++k) {
    int c = kTapAll;
    if (cls) {
      c = cls[rt];
      rt = rt + 1 == rs ? 0 : rt + 1;
      if (c == kTapNone) continue;
    }
    const float* xk = x + off[k];
    if constexpr (KB == 4 && NQ == 7) {
      const float* wk = w + k * 16;
      if (c == kTapAll)
        kvec_fmas_by_block<KB, NQ, 0, NQ>(acc, wk, wstride, xk, xstep);
      else if (c == kTapNotFirst)
        kvec_fmas_by_block<KB, NQ, 1, NQ>(acc, wk, wstride, xk, xstep);
      else if (c == kTapNotLast)
        kvec_fmas_by_block<KB, NQ, 0, NQ - 1>(acc, wk, wstride, xk, xstep);
      else
        kvec_fmas_by_block<KB, NQ, 1, NQ - 1>(acc, wk, wstride, xk, xstep);
      continue;
    }
    __m512 wk[KB];
#pragma GCC unroll 4
    for (int b = 0; b < KB; ++b) wk[b] = _mm512_loadu_ps(w + b * wstride + k * 16);
    if (c == kTapAll)
      kvec_fmas<KB, NQ, 0, NQ>(acc, wk, xk, xstep);
    else if (c == kTapNotFirst)
      kvec_fmas<KB, NQ, 1, NQ>(acc, wk, xk, xstep);
    else if (c == kTapNotLast)
      kvec_fmas<KB, NQ, 0, NQ - 1>(acc, wk, xk, xstep);
    else
      kvec_fmas<KB, NQ, 1, NQ - 1>(acc, wk, xk, xstep);
  }
  if (mode & kKvecSuspend) {
#pragma GCC unroll 4
    for (int b = 0; b < KB; ++b)
#pragma GCC unroll 16
      for (int i = 0; i < NQ; ++i) _mm512_storeu_ps(part + (b * NQ + i) * 16, acc[b][i]);
    return;
  }
  const __mmask16 mq = static_cast<__mmask16>((1u << nq) - 1u);
#pragma GCC unroll 4
  for (int b = 0; b < KB; ++b) {
    __m512 t[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) t[i] = i < NQ ? acc[b][i < NQ ? i : 0] : _mm512_setzero_ps();
    transpose16(t);
    for (int kk = 0; kk < 16 && 16 * b + kk < nk; ++kk)
      _mm512_mask_storeu_ps(out + (16 * b + kk) * ldo, mq, t[kk]);
  }
}

void conv_kvec_blocks_avx512(float* out, int64_t ldo, const float* x, int64_t xstep,
                             const int64_t* off, int64_t crs, const float* w, int64_t wstride,
                             const float* bias, int nq, int nk, int nb, float* part, int mode,
                             const KvecTaps* taps) {
#define CK_KVEC_TILE(KB, NQ) \
  kvec_blocks_tile<KB, NQ>(out, ldo, x, xstep, off, crs, w, wstride, bias, nq, nk, part, mode, taps)
  if (nb == 3) {  // (rows of 7: 21 sums, the input values broadcast into a register)
    CK_KVEC_TILE(3, 7);
  } else if (nb == 4) {
    if (nq <= 4)
      CK_KVEC_TILE(4, 4);
    else if (nq <= 6)
      CK_KVEC_TILE(4, 6);
    else
      CK_KVEC_TILE(4, 7);
  } else {
    if (nq <= 8)
      CK_KVEC_TILE(2, 8);
    else if (nq <= 12)
      CK_KVEC_TILE(2, 12);
    else
      CK_KVEC_TILE(2, 14);
  }
#undef CK_KVEC_TILE
}

// rows_to_lanes16: 16 x 16 blocks transposed in registers
void rows_to_lanes16_avx512(float* dst, const float* src, int64_t ld, int rows, int64_t n) {
  for (int64_t k0 = 0; k0 < n; k0 += 16)
    block_to_lanes16(dst + k0 * 16, src + k0, ld, rows, std::min<int64_t>(16, n - k0));
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

void conv_dx_rows_avx512(float* dx, const float* dy, const float* wt, int64_t h0, int nh,
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
// the caller's offsets allow: G row pointers and constant displacements, no offset reloads.
template <int S, int G>
static void dw_kvec_rows(float* out, int64_t ldo, const float* dyT, const float* x, int64_t x_ns,
                         int64_t x_rs, int64_t x_cs, const int64_t* off, int nt, int nk, int64_t N,
                         int64_t P, int64_t Q) {
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
      const float* xq = x + n * x_ns + p * x_rs;  // column q's window: xq + q * x_cs
      const float* d = dyT + (n * P + p) * Q * 16;
      for (int64_t q = 0; q < Q; ++q, xq += x_cs) {
        // opaque to the compiler: otherwise it carries the shifted window of input values
        // from one q to the next through spilled scalars, which runs far slower than reloading
        const __m512 dv = _mm512_loadu_ps(d + q * 16);
#pragma GCC unroll 28
        for (int g = 0; g < G; ++g) {
          const float* row = xq + ro[g];  // taps of row g at constant displacements
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
                          int64_t x_rs, int64_t x_cs, const int64_t* off, int nt, int nk,
                          int64_t N, int64_t P, int64_t Q) {
  for (int i = 0; i < nt; ++i) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t n = 0; n < N; ++n)
      for (int64_t p = 0; p < P; ++p) {
        const float* xr = x + n * x_ns + p * x_rs + off[i];
        const float* d = dyT + (n * P + p) * Q * 16;
        for (int64_t q = 0; q < Q; ++q)
          acc = _mm512_fmadd_ps(_mm512_set1_ps(xr[q * x_cs]), _mm512_loadu_ps(d + q * 16), acc);
      }
    alignas(64) float tmp[16];
    _mm512_store_ps(tmp, acc);
    for (int kk = 0; kk < nk; ++kk) out[kk * ldo + i] = tmp[kk];
  }
}

void conv_dw_kvec_avx512(float* out, int64_t ldo, const float* dyT, const float* x,
                                int64_t x_ns, int64_t x_rs, int64_t x_cs, const int64_t* off,
                                int S, int nt, int nk, int64_t N, int64_t P, int64_t Q) {
  using Fn = void (*)(float*, int64_t, const float*, const float*, int64_t, int64_t, int64_t,
                      const int64_t*, int, int, int64_t, int64_t, int64_t);
  static const Fn by_s[8] = {nullptr,          dw_kvec_rows<1, 28>, dw_kvec_rows<2, 14>,
                             dw_kvec_rows<3, 9>, dw_kvec_rows<4, 7>,  dw_kvec_rows<5, 5>,
                             dw_kvec_rows<6, 4>, dw_kvec_rows<7, 4>};
  const Fn f = (S >= 1 && S <= 7 && nt % S == 0 && nt <= 28 / S * S) ? by_s[S] : dw_kvec_plain;
  f(out, ldo, dyT, x, x_ns, x_rs, x_cs, off, nt, nk, N, P, Q);
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

void col2im_plane_avx512(float* dx, const float* g, int64_t ld, const Col2imArgs& a) {
  if (a.sw > 2 || a.S > 16 || a.W > 64) {
    portable_col2im_plane(dx, g, ld, a);
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
}  // namespace avx512
}  // namespace convkit
