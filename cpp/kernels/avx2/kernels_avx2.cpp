// AVX2 + FMA kernels (this file alone is compiled with -mavx2 -mfma): a 6 x 16 GEMM micro-kernel
// (12 ymm accumulators + 2 for B + 1 broadcast = 15 of 16 registers) and the portable loops.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels.h"

namespace convkit {
namespace avx2 {
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
template <bool Direct>
static inline void ukernel(int64_t kc, const float* a, const float* b, const int64_t* boff,
                           float* c, int64_t ldc, int mr, int nr, bool accumulate,
                           const float* bias) {
  __m256 acc[MR][2];
  const bool full = nr == NR;
  const __m256i m0 = lane_mask(nr < 8 ? nr : 8), m1 = lane_mask(nr > 8 ? nr - 8 : 0);
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) {
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
    for (int i = 0; i < MR; ++i) {
      const __m256 ai = _mm256_broadcast_ss(a + k * MR + i);
      acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
  if (full && mr == MR) {
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      _mm256_storeu_ps(c + i * ldc, acc[i][0]);
      _mm256_storeu_ps(c + i * ldc + 8, acc[i][1]);
    }
    return;
  }
  // unrolled with constant indices, so that acc stays in registers in the loop above
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) {
    if (i < mr) {
      _mm256_maskstore_ps(c + i * ldc, m0, acc[i][0]);
      _mm256_maskstore_ps(c + i * ldc + 8, m1, acc[i][1]);
    }
  }
}

static void gemm_ukernel(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                         int mr, int nr, bool accumulate, const float* bias) {
  ukernel<false>(kc, a, b, nullptr, c, ldc, mr, nr, accumulate, bias);
}

static void direct_ukernel(int64_t kc, const float* a, const float* b, const int64_t* boff,
                           float* c, int64_t ldc, int mr, int nr, bool accumulate,
                           const float* bias) {
  ukernel<true>(kc, a, b, boff, c, ldc, mr, nr, accumulate, bias);
}
}  // namespace avx2

void fill_table_avx2(KernelTable& t) {
  t.name = "avx2";
  t.mr = avx2::MR;
  t.nr = avx2::NR;
  t.gemm = avx2::gemm_ukernel;
  t.gemm_direct = avx2::direct_ukernel;
  t.sgd = sgd_avx2;
  avx2::fill_portable(t);
}

}  // namespace convkit
