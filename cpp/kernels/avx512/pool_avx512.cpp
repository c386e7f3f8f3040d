// Max pooling: the 2x2 / stride-2 / unpadded windows vectorised, forward and backward; other
// windows take the portable loops.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/avx512/avx512.h"
#include "transpose_avx512.h"

namespace convkit {
namespace avx512 {
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
void maxpool2x2_bwd(float* dx, const float* dy, const float* x, int64_t H, int64_t W,
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
void maxpool_plane_avx512(float* y, const float* x, const Pool2dShape& s) {
  if (!(s.R == 2 && s.S == 2 && s.sh == 2 && s.sw == 2 && s.ph == 0 && s.pw == 0 && s.dh == 1 &&
        s.dw == 1 && 2 * s.P <= s.H && 2 * s.Q <= s.W)) {
    portable_maxpool_plane(y, x, s);
    return;
  }
  const int64_t W = s.W, P = s.P, Q = s.Q;
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

// planes_to_lanes (see portable.inc) by 16 x 16 blocks transposed in registers
void planes_to_lanes_avx512(float* xt, const float* x, int64_t stride, int n, int64_t len) {
  for (int64_t e = 0; e < len; e += 16) {
    const int m = static_cast<int>(std::min<int64_t>(16, len - e));
    const __mmask16 k = static_cast<__mmask16>((1u << m) - 1u);
    __m512 r[16];
    for (int l = 0; l < 16; ++l)
      r[l] = l < n ? _mm512_maskz_loadu_ps(k, x + l * stride + e) : _mm512_setzero_ps();
    transpose16(r);
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j)  // constant indices, so that r stays in registers
      if (j < m) _mm512_storeu_ps(xt + (e + j) * 16, r[j]);
  }
}
}  // namespace avx512
}  // namespace convkit
