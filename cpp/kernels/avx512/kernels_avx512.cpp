// AVX-512 kernels (this file alone is compiled with -mavx512f/dq/bw/vl): an 8 x 32 GEMM
// micro-kernel (16 zmm accumulators; 8 rows suit the 6-, 16-, 64- and 128-channel layers we
// target) and the portable loops.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels.h"

namespace convkit {
namespace avx512 {
#include "../portable.inc"

constexpr int MR = 8, NR = 32;

// a: kc x 8 packed, b: kc x 32 packed -> the mr x nr corner of c (ldc); masked loads and stores
// serve partial tiles, so edges need no copies.
static void gemm_ukernel(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                         int mr, int nr, bool accumulate, const float* bias) {
  __m512 acc[MR][2];
  const uint32_t bits = nr >= 32 ? 0xffffffffu : ((1u << nr) - 1u);
  const __mmask16 m0 = static_cast<__mmask16>(bits), m1 = static_cast<__mmask16>(bits >> 16);
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    if (i < mr && accumulate) {
      acc[i][0] = _mm512_maskz_loadu_ps(m0, c + i * ldc);
      acc[i][1] = _mm512_maskz_loadu_ps(m1, c + i * ldc + 16);
    } else {
      acc[i][0] = acc[i][1] = (bias && i < mr) ? _mm512_set1_ps(bias[i]) : _mm512_setzero_ps();
    }
  }
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_loadu_ps(b + k * NR);
    const __m512 b1 = _mm512_loadu_ps(b + k * NR + 16);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512 ai = _mm512_set1_ps(a[k * MR + i]);
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    if (i < mr) {
      _mm512_mask_storeu_ps(c + i * ldc, m0, acc[i][0]);
      _mm512_mask_storeu_ps(c + i * ldc + 16, m1, acc[i][1]);
    }
  }
}
}  // namespace avx512

void fill_table_avx512(KernelTable& t) {
  t.name = "avx512";
  t.mr = avx512::MR;
  t.nr = avx512::NR;
  t.gemm = avx512::gemm_ukernel;
  avx512::fill_portable(t);
}

}  // namespace convkit
