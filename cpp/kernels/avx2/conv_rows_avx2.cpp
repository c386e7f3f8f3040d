// The depthwise family's row kernels for AVX2 (KernelTable::conv_rows, conv_rows_k and
// conv_row_dots): the portable loops' products in the same order, in 8-float vectors with the
// running sums in registers, so the same bits as the portable loops and AVX-512's kernels.
// Compiled as the portable loops they replace were (-mavx2 -mfma: a + b * c contracted to FMA).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels.h"
#include "kernels/avx2/lanes_avx2.h"

namespace convkit {
namespace avx2 {
namespace {

// Lanes below n (0..8).
inline __m256i first(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// NV vectors of one output row from column q0 (n floats in the last one): bias, then the taps in
// order. Partial vectors are read with masked loads and written through a buffer.
template <int NV>
void row_block(float* y, const float* base, const int64_t* off, const float* w, int64_t ntaps,
               float bias, int64_t q0, int64_t n) {
  __m256 acc[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) acc[v] = _mm256_set1_ps(bias);
  const __m256i m = first(n);
  for (int64_t i = 0; i < ntaps; ++i) {
    const __m256 wv = _mm256_broadcast_ss(w + i);
    const float* s = base + off[i] + q0;
#pragma GCC unroll 4
    for (int v = 0; v < NV - 1; ++v) acc[v] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(s + 8 * v), acc[v]);
    acc[NV - 1] = _mm256_fmadd_ps(wv, _mm256_maskload_ps(s + 8 * (NV - 1), m), acc[NV - 1]);
  }
#pragma GCC unroll 4
  for (int v = 0; v < NV - 1; ++v) _mm256_storeu_ps(y + q0 + 8 * v, acc[v]);
  store_first(y + q0 + 8 * (NV - 1), acc[NV - 1], n);
}

// T taps' 16 lanes (two vectors each) in registers through all the rows: per row and 16 columns
// one dy load and T tap loads; the last partial block adds only its lanes.
template <int T>
void dots_rows(float* lanes, const float* dy, int64_t dystep, int64_t nrows, int64_t Q,
               const float* base, int64_t bstep, const int64_t* off) {
  __m256 acc[T][2];
#pragma GCC unroll 6
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < 2; ++h) acc[t][h] = _mm256_loadu_ps(lanes + 16 * t + 8 * h);
  const int64_t Qf = Q - Q % 16, rest = Q - Qf;
  const __m256i m0 = first(std::min<int64_t>(8, rest)), m1 = first(std::max<int64_t>(0, rest - 8));
  for (int64_t p = 0; p < nrows; ++p) {
    const float* d = dy + p * dystep;
    const float* b = base + p * bstep;
    for (int64_t q = 0; q < Qf; q += 16) {
      const __m256 d0 = _mm256_loadu_ps(d + q), d1 = _mm256_loadu_ps(d + q + 8);
#pragma GCC unroll 6
      for (int t = 0; t < T; ++t) {
        acc[t][0] = _mm256_fmadd_ps(d0, _mm256_loadu_ps(b + off[t] + q), acc[t][0]);
        acc[t][1] = _mm256_fmadd_ps(d1, _mm256_loadu_ps(b + off[t] + q + 8), acc[t][1]);
      }
    }
    if (rest) {
      const __m256 d0 = _mm256_maskload_ps(d + Qf, m0), d1 = _mm256_maskload_ps(d + Qf + 8, m1);
      const __m256 k0 = _mm256_castsi256_ps(m0), k1 = _mm256_castsi256_ps(m1);
#pragma GCC unroll 6
      for (int t = 0; t < T; ++t) {
        const float* s = b + off[t] + Qf;
        acc[t][0] = _mm256_blendv_ps(
            acc[t][0], _mm256_fmadd_ps(d0, _mm256_maskload_ps(s, m0), acc[t][0]), k0);
        acc[t][1] = _mm256_blendv_ps(
            acc[t][1], _mm256_fmadd_ps(d1, _mm256_maskload_ps(s + 8, m1), acc[t][1]), k1);
      }
    }
  }
#pragma GCC unroll 6
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < 2; ++h) _mm256_storeu_ps(lanes + 16 * t + 8 * h, acc[t][h]);
}

// Stride-2 3x3 depthwise layers on whole planes, x read in place (as AVX-512's S2Taps): the
// three taps of an input row for 8 outputs are the even, odd and next even columns of the 16
// (or 18) columns from 2 q0 - pw, from two masked loads each; rows outside the plane are zeros.
struct S2Taps {
  int64_t H, W, ph, pw;
  __m256i cols(int64_t c) const {  // the lanes of a load at column c that lie in the row
    const __m256i l = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(c)),
                                       _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return _mm256_and_si256(_mm256_cmpgt_epi32(l, _mm256_set1_epi32(-1)),
                            _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(W)), l));
  }
  static __m256 evens(__m256 a, __m256 b) {  // a0 a2 a4 a6 b0 b2 b4 b6
    return _mm256_castpd_ps(_mm256_permute4x64_pd(
        _mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0))), _MM_SHUFFLE(3, 1, 2, 0)));
  }
  static __m256 odds(__m256 a, __m256 b) {
    return _mm256_castpd_ps(_mm256_permute4x64_pd(
        _mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))), _MM_SHUFFLE(3, 1, 2, 0)));
  }
  // v[t] = x[2 p - ph + r][2 (q0 + j) - pw + t] for lanes j and the taps t of kernel row r
  void row(__m256* v, const float* x, int64_t p, int r, int64_t q0) const {
    const int64_t h = 2 * p - ph + r, c0 = 2 * q0 - pw;
    if (h < 0 || h >= H) {
      v[0] = v[1] = v[2] = _mm256_setzero_ps();
      return;
    }
    const float* s = x + h * W + c0;
    if (c0 >= 0 && c0 + 18 <= W) {  // inside the row: plain loads
      const __m256 a = _mm256_loadu_ps(s), b = _mm256_loadu_ps(s + 8);
      v[0] = evens(a, b);
      v[1] = odds(a, b);
      v[2] = evens(_mm256_loadu_ps(s + 2), _mm256_loadu_ps(s + 10));
      return;
    }
    const __m256 a = _mm256_maskload_ps(s, cols(c0)), b = _mm256_maskload_ps(s + 8, cols(c0 + 8));
    v[0] = evens(a, b);
    v[1] = odds(a, b);
    v[2] = evens(_mm256_maskload_ps(s + 2, cols(c0 + 2)), _mm256_maskload_ps(s + 10, cols(c0 + 10)));
  }
};

}  // namespace

// KernelTable::conv_dw_plane at AVX2: blocks of RB output rows by 8 columns, each input row the
// block reads loaded once (KS shifted vectors; rows outside the plane as zero vectors, loads
// masked only where a tap's columns leave the row) and multiplied into every output row of the
// block that reads it: RB independent sums, each still the taps (r, t) in order. Rows of the last
// block past P are summed too (from in-plane rows or zeros) and not stored.
template <int KS>
void dw_plane(float* y, int64_t ystride, int64_t n, int64_t P, int64_t Q, const float* x,
              int64_t xstride, int64_t H, int64_t W, int64_t ph, int64_t pw, const float* w,
              const float* bias) {
  constexpr int RB = 4;
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = x + i * xstride;
    const float* wi = w + KS * KS * i;
    const __m256 b = _mm256_set1_ps(bias ? bias[i] : 0.f);
    __m256 wv[KS * KS];
    for (int k = 0; k < KS * KS; ++k) wv[k] = _mm256_broadcast_ss(wi + k);
    for (int64_t q0 = 0; q0 < Q; q0 += 8) {
      const int64_t c0 = q0 - pw;  // the column of lane 0 at tap t = 0
      const bool inside = c0 >= 0 && c0 + 8 + KS - 1 <= W;
      __m256i m[KS];  // tap t's lanes inside the row
      for (int t = 0; t < KS; ++t) {
        const __m256i l = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(c0 + t)), lane);
        m[t] = _mm256_and_si256(_mm256_cmpgt_epi32(l, _mm256_set1_epi32(-1)),
                                _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(W)), l));
      }
      for (int64_t p0 = 0; p0 < P; p0 += RB) {
        __m256 acc[RB];
#pragma GCC unroll 4
        for (int j = 0; j < RB; ++j) acc[j] = b;
#pragma GCC unroll 8
        for (int ii = 0; ii < RB + KS - 1; ++ii) {  // input row p0 - ph + ii
          const int64_t h = p0 - ph + ii;
          __m256 v[KS];
          const float* row = xi + h * W + c0;
          if (h < 0 || h >= H) {  // zero products, as on the padded rows
#pragma GCC unroll 5
            for (int t = 0; t < KS; ++t) v[t] = _mm256_setzero_ps();
          } else if (inside) {
#pragma GCC unroll 5
            for (int t = 0; t < KS; ++t) v[t] = _mm256_loadu_ps(row + t);
          } else {
#pragma GCC unroll 5
            for (int t = 0; t < KS; ++t) v[t] = _mm256_maskload_ps(row + t, m[t]);
          }
#pragma GCC unroll 4
          for (int j = 0; j < RB; ++j) {
            const int r = ii - j;  // output row p0 + j reads it as kernel row r
            if (r < 0 || r >= KS) continue;
#pragma GCC unroll 5
            for (int t = 0; t < KS; ++t) acc[j] = _mm256_fmadd_ps(wv[KS * r + t], v[t], acc[j]);
          }
        }
#pragma GCC unroll 4
        for (int j = 0; j < RB; ++j)
          if (p0 + j < P) store_first(y + i * ystride + (p0 + j) * Q + q0, acc[j], Q - q0);
      }
    }
  }
}

void conv_dw_plane_avx2(int ks, float* y, int64_t ystride, int64_t n, int64_t P, int64_t Q,
                        const float* x, int64_t xstride, int64_t H, int64_t W, int64_t ph,
                        int64_t pw, const float* w, const float* bias, const float* zeros) {
  (void)zeros;  // rows outside the plane are zero vectors here
  if (ks == 5) dw_plane<5>(y, ystride, n, P, Q, x, xstride, H, W, ph, pw, w, bias);
  else dw_plane<3>(y, ystride, n, P, Q, x, xstride, H, W, ph, pw, w, bias);
}

void conv_dw3s2_plane_avx2(float* y, int64_t ystride, int64_t n, int64_t P, int64_t Q,
                           const float* x, int64_t xstride, int64_t H, int64_t W, int64_t ph,
                           int64_t pw, const float* w, const float* bias) {
  const S2Taps taps{H, W, ph, pw};
  for (int64_t i = 0; i < n; ++i) {
    const float* wi = w + 9 * i;
    const __m256 b = _mm256_set1_ps(bias ? bias[i] : 0.f);
    for (int64_t p = 0; p < P; ++p)
      for (int64_t q0 = 0; q0 < Q; q0 += 8) {
        __m256 acc = b;
        for (int r = 0; r < 3; ++r) {
          __m256 v[3];
          taps.row(v, x + i * xstride, p, r, q0);
          for (int t = 0; t < 3; ++t) acc = _mm256_fmadd_ps(_mm256_set1_ps(wi[3 * r + t]), v[t], acc);
        }
        store_first(y + i * ystride + p * Q + q0, acc, Q - q0);
      }
  }
}

// lanes[16 t + l] += dy[p][q] * tap t's x (q % 16 == l): rows p in order, then 16-column blocks
// as two halves; taps of kernel rows 0-1 and then of row 2 (12 and 6 running sums in registers)
void conv_dw3s2_dots_avx2(float* lanes, const float* dy, int64_t P, int64_t Q, const float* x,
                          int64_t H, int64_t W, int64_t ph, int64_t pw) {
  const S2Taps taps{H, W, ph, pw};
  for (int r0 = 0; r0 < 3; r0 += 2) {
    const int nr = r0 == 0 ? 2 : 1;
    __m256 acc[6][2];
    for (int t = 0; t < 3 * nr; ++t)
      for (int h = 0; h < 2; ++h) acc[t][h] = _mm256_loadu_ps(lanes + 16 * (3 * r0 + t) + 8 * h);
    for (int64_t p = 0; p < P; ++p)
      for (int64_t q0 = 0; q0 < Q; q0 += 8) {
        const int h = static_cast<int>(q0 / 8 % 2);
        const __m256i m = first(std::min<int64_t>(8, Q - q0));
        const __m256 d = _mm256_maskload_ps(dy + p * Q + q0, m), k = _mm256_castsi256_ps(m);
        for (int r = 0; r < nr; ++r) {
          __m256 v[3];
          taps.row(v, x, p, r0 + r, q0);
          for (int t = 0; t < 3; ++t) {
            __m256& a = acc[3 * r + t][h];
            a = Q - q0 >= 8 ? _mm256_fmadd_ps(d, v[t], a)
                            : _mm256_blendv_ps(a, _mm256_fmadd_ps(d, v[t], a), k);
          }
        }
      }
    for (int t = 0; t < 3 * nr; ++t)
      for (int h = 0; h < 2; ++h) _mm256_storeu_ps(lanes + 16 * (3 * r0 + t) + 8 * h, acc[t][h]);
  }
}

// Input gradient (as AVX-512's conv_dw3s2_dx): 8 columns a vector, dy expanded in registers
void conv_dw3s2_dx_avx2(float* dx, int64_t dxstride, int64_t n, int64_t H, int64_t W,
                        const float* dy, int64_t dystride, int64_t P, int64_t Q, int64_t ph,
                        int64_t pw, const float* w) {
  const __m256i half = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
  const __m256i half_up = _mm256_setr_epi32(0, 1, 1, 2, 2, 3, 3, 4);
  const __m256 odd = _mm256_castsi256_ps(_mm256_setr_epi32(0, -1, 0, -1, 0, -1, 0, -1));
  const __m256 even = _mm256_castsi256_ps(_mm256_setr_epi32(-1, 0, -1, 0, -1, 0, -1, 0));
  for (int64_t i = 0; i < n; ++i) {
    const float* wi = w + 9 * i;
    for (int64_t h = 0; h < H; ++h) {
      const float* src[2];
      int rr[2];
      const int nr = dw3s2_dx_rows(src, rr, dy + i * dystride, h, ph, P, Q);
      float* o = dx + i * dxstride + h * W;
      for (int64_t w0 = 0; w0 < W; w0 += 8) {
        const int64_t q0 = w0 / 2;
        const bool inside = q0 + 8 <= Q;  // else masked loads, zero past the row
        const __m256i m = inside ? __m256i() : first(std::clamp<int64_t>(Q - q0, 0, 8));
        __m256 acc = _mm256_setzero_ps();
        for (int k = 0; k < nr; ++k) {
          const float* g = wi + 3 * rr[k];
          const __m256 d = inside ? _mm256_loadu_ps(src[k] + q0) : _mm256_maskload_ps(src[k] + q0, m);
          const __m256 a = _mm256_permutevar8x32_ps(d, half);
          if (pw == 1) {
            const __m256 bv = _mm256_permutevar8x32_ps(d, half_up);
            acc = _mm256_blendv_ps(acc, _mm256_fmadd_ps(bv, _mm256_set1_ps(g[0]), acc), odd);
            acc = _mm256_fmadd_ps(a, _mm256_blendv_ps(_mm256_set1_ps(g[1]), _mm256_set1_ps(g[2]), odd),
                                  acc);
          } else {
            acc = _mm256_fmadd_ps(a, _mm256_blendv_ps(_mm256_set1_ps(g[0]), _mm256_set1_ps(g[1]), odd),
                                  acc);
            // D[q0 - 1 ...]: lane 0 is outside the row at q0 = 0
            __m256 dg;
            if (q0 > 0 && q0 + 7 <= Q) {
              dg = _mm256_loadu_ps(src[k] + q0 - 1);
            } else {
              __m256i mg = first(std::clamp<int64_t>(Q - q0 + 1, 0, 8));
              if (q0 == 0) mg = _mm256_and_si256(mg, _mm256_setr_epi32(0, -1, -1, -1, -1, -1, -1, -1));
              dg = _mm256_maskload_ps(src[k] + q0 - 1, mg);
            }
            const __m256 gv = _mm256_permutevar8x32_ps(dg, half);
            acc = _mm256_blendv_ps(acc, _mm256_fmadd_ps(gv, _mm256_set1_ps(g[2]), acc), even);
          }
        }
        store_first(o + w0, acc, W - w0);
      }
    }
  }
}

void conv_rows_avx2(float* y, int64_t ystep, int64_t nrows, int64_t Q, const float* base,
                    int64_t bstep, const int64_t* off, const float* w, int64_t ntaps,
                    float bias) {
  for (int64_t r = 0; r < nrows; ++r, y += ystep, base += bstep)
    for (int64_t q0 = 0; q0 < Q; q0 += 32) {
      const int64_t n = std::min<int64_t>(32, Q - q0), nv = (n + 7) / 8, last = n - 8 * (nv - 1);
      switch (nv) {
        case 1: row_block<1>(y, base, off, w, ntaps, bias, q0, last); break;
        case 2: row_block<2>(y, base, off, w, ntaps, bias, q0, last); break;
        case 3: row_block<3>(y, base, off, w, ntaps, bias, q0, last); break;
        default: row_block<4>(y, base, off, w, ntaps, bias, q0, last); break;
      }
    }
}

void conv_rows_k_avx2(float* y, int64_t ystep, int64_t kstep, int nk, int64_t nrows, int64_t Q,
                      const float* base, int64_t bstep, const int64_t* off, const float* w,
                      int64_t ntaps, const float* bias) {
  for (int j = 0; j < nk; ++j)
    conv_rows_avx2(y + j * kstep, ystep, nrows, Q, base, bstep, off, w + j * ntaps, ntaps,
                   bias ? bias[j] : 0.f);
}

void conv_row_dots_avx2(float* lanes, const float* dy, int64_t dystep, int64_t nrows, int64_t Q,
                        const float* base, int64_t bstep, const int64_t* off, int64_t ntaps) {
  using Fn = void (*)(float*, const float*, int64_t, int64_t, int64_t, const float*, int64_t,
                      const int64_t*);
  static constexpr Fn kFns[] = {nullptr, dots_rows<1>, dots_rows<2>, dots_rows<3>,
                                dots_rows<4>, dots_rows<5>, dots_rows<6>};
  for (int64_t i = 0; i < ntaps; i += 6) {  // up to 6 taps at a time: 12 running sums + 3
    const int64_t t = std::min<int64_t>(6, ntaps - i);
    kFns[t](lanes + 16 * i, dy, dystep, nrows, Q, base, bstep, off + i);
  }
}

}  // namespace avx2
}  // namespace convkit
