// The 8 x 32 GEMM micro-kernel (16 zmm accumulators; 8 rows suit the 6-, 16-, 64- and
// 128-channel layers we target): packed, direct (B rows read in place) and wide (compacting store).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/avx512/avx512.h"
#include "transpose_avx512.h"

namespace convkit {
namespace avx512 {
// a: kc x 8 packed, b: kc x 32 packed -> the mr x nr corner of c (ldc); masked loads and stores
// serve partial tiles, so edges need no copies. Tiles of fewer rows or at most 16 columns run a
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

// The smallest register tile of 2, 4, 6 or 8 rows and 1 or 2 vectors that covers mr x nr
// (the rows of a tile are summed alike whatever its height: the same bits).
template <bool Direct, bool Wide = false>
static inline void ukernel_fit(int64_t kc, const float* a, const float* b, const int64_t* boff,
                               float* c, int64_t ldc, int mr, int nr, bool accumulate,
                               const float* bias, int64_t j0 = 0, int64_t Wq = 0, int64_t Q = 0) {
  const bool two = nr > 16;
#define CK_TILE(R)                                                                              \
  (two ? ukernel<Direct, R, 2, Wide>(kc, a, b, boff, c, ldc, mr, nr, accumulate, bias, j0, Wq, Q) \
       : ukernel<Direct, R, 1, Wide>(kc, a, b, boff, c, ldc, mr, nr, accumulate, bias, j0, Wq, Q))
  if (mr > 6) CK_TILE(8);
  else if (mr > 4) CK_TILE(6);  // LeNet-5's 6-channel conv1: a quarter fewer multiplies than 8
  else if (mr > 2) CK_TILE(4);
  else CK_TILE(2);  // a batch of 1 or 2 rows (linear_backward's small batches)
#undef CK_TILE
}

void gemm_ukernel(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                         int mr, int nr, bool accumulate, const float* bias) {
  ukernel_fit<false>(kc, a, b, nullptr, c, ldc, mr, nr, accumulate, bias);
}

void direct_ukernel(int64_t kc, const float* a, const float* b, const int64_t* boff,
                           float* c, int64_t ldc, int mr, int nr, bool accumulate,
                           const float* bias) {
  ukernel_fit<true>(kc, a, b, boff, c, ldc, mr, nr, accumulate, bias);
}

void direct_wide_ukernel(int64_t kc, const float* a, const float* b, const int64_t* boff,
                                float* c, int64_t ldc, int mr, int nr, const float* bias,
                                int64_t j0, int64_t Wq, int64_t Q) {
  ukernel_fit<true, true>(kc, a, b, boff, c, ldc, mr, nr, false, bias, j0, Wq, Q);
}

// KernelTable::colT_rows16: 16 taps at a time, each tap's cnt positions loaded as one vector
// (stride 2: two loads and a permute; wider strides: a gather), then transposed in registers so
// that each position's 16 taps are one store (the portable loop moved a value at a time, a third
// of a strided 3x3 weight gradient).
template <int Mode>  // 1: stride 1, 2: stride 2, 0: any stride
static void colT_rows16_sw(float* dst, int NR, const float* const* base, int nr, int64_t o,
                           int64_t sw, int cnt) {
  const __mmask16 mc = static_cast<__mmask16>((1u << cnt) - 1u);
  const int need = 2 * cnt - 1;  // (stride 2) source columns read: 0 .. 2 cnt - 2
  const __mmask16 m0 = static_cast<__mmask16>((1u << std::min(16, need)) - 1u);
  const __mmask16 m1 = static_cast<__mmask16>((1u << std::max(0, need - 16)) - 1u);
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i idx = _mm512_mullo_epi32(
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
      _mm512_set1_epi32(static_cast<int>(sw)));
  for (int j0 = 0; j0 < NR; j0 += 16) {
    __m512 r[16];
#pragma GCC unroll 16
    for (int l = 0; l < 16; ++l) {
      if (j0 + l >= nr) {
        r[l] = _mm512_setzero_ps();
        continue;
      }
      const float* s = base[j0 + l] + o;
      if (Mode == 1) {
        r[l] = _mm512_maskz_loadu_ps(mc, s);
      } else if (Mode == 2) {
        r[l] = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(m0, s), even,
                                      _mm512_maskz_loadu_ps(m1, s + 16));
      } else {
        r[l] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mc, idx, s, 4);
      }
    }
    transpose16(r);
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i)
      if (i < cnt) _mm512_storeu_ps(dst + i * NR + j0, r[i]);
  }
}

void colT_rows16_avx512(float* dst, int NR, const float* const* base, int nr, int64_t o,
                        int64_t sw, int cnt) {
  if (sw == 1) colT_rows16_sw<1>(dst, NR, base, nr, o, sw, cnt);
  else if (sw == 2) colT_rows16_sw<2>(dst, NR, base, nr, o, sw, cnt);
  else colT_rows16_sw<0>(dst, NR, base, nr, o, sw, cnt);
}

}  // namespace avx512
}  // namespace convkit
