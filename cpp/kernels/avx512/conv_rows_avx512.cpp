// Row kernels of the depthwise / few-channels-per-group convolution (KernelTable::conv_rows,
// conv_row_dots): up to 64 outputs of a row in four registers, summed over the taps without
// leaving them; the dot products keep up to 12 taps' lanes in registers through all rows. The
// last vector of a row is masked, so nothing is read or written past Q.
#include <immintrin.h>

#include <cstdint>

#include "kernels/avx512/avx512.h"

namespace convkit {
namespace avx512 {
namespace {

inline __mmask16 tail_mask(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1);
}

// NV vectors of outputs from q0 on, the last one masked to `last` lanes, for ROWS rows (bstep
// apart in base, ystep in y) sharing each tap's broadcast weight.
template <int NV, int ROWS>
void row_block(float* y, int64_t ystep, const float* base, int64_t bstep, const int64_t* off,
               const float* w, int64_t ntaps, float bias, int64_t q0, __mmask16 last) {
  __m512 acc[ROWS][NV];
  #pragma GCC unroll 16
  for (int r = 0; r < ROWS; ++r)
    #pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_set1_ps(bias);
  for (int64_t i = 0; i < ntaps; ++i) {
    const __m512 wv = _mm512_set1_ps(w[i]);
    #pragma GCC unroll 16
    for (int r = 0; r < ROWS; ++r) {
      const float* s = base + r * bstep + off[i] + q0;
      #pragma GCC unroll 16
      for (int v = 0; v < NV - 1; ++v)
        acc[r][v] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(s + 16 * v), acc[r][v]);
      acc[r][NV - 1] =
          _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(last, s + 16 * (NV - 1)), acc[r][NV - 1]);
    }
  }
  #pragma GCC unroll 16
  for (int r = 0; r < ROWS; ++r) {
    #pragma GCC unroll 16
    for (int v = 0; v < NV - 1; ++v) _mm512_storeu_ps(y + r * ystep + q0 + 16 * v, acc[r][v]);
    _mm512_mask_storeu_ps(y + r * ystep + q0 + 16 * (NV - 1), last, acc[r][NV - 1]);
  }
}

template <int NV>
void rows_of(float* y, int64_t ystep, int64_t nrows, const float* base, int64_t bstep,
             const int64_t* off, const float* w, int64_t ntaps, float bias, int64_t q0,
             __mmask16 last) {
  int64_t r = 0;
  // two rows at a time where eight accumulators fit (NV <= 2: up to 32 columns)
  if (NV <= 2)
    for (; r + 2 <= nrows; r += 2)
      row_block<NV, 2>(y + r * ystep, ystep, base + r * bstep, bstep, off, w, ntaps, bias, q0,
                       last);
  for (; r < nrows; ++r)
    row_block<NV, 1>(y + r * ystep, ystep, base + r * bstep, bstep, off, w, ntaps, bias, q0,
                     last);
}

// NV vectors of one output row for NK output channels sharing each input load.
template <int NV, int NK>
void row_block_k(float* y, int64_t kstep, const float* base, const int64_t* off, const float* w,
                 int64_t ntaps, const float* bias, int64_t q0, __mmask16 last) {
  __m512 acc[NK][NV];
  #pragma GCC unroll 16
  for (int j = 0; j < NK; ++j)
    #pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[j][v] = _mm512_set1_ps(bias ? bias[j] : 0.f);
  for (int64_t i = 0; i < ntaps; ++i) {
    const float* s = base + off[i] + q0;
    __m512 x[NV];
    #pragma GCC unroll 16
    for (int v = 0; v < NV - 1; ++v) x[v] = _mm512_loadu_ps(s + 16 * v);
    x[NV - 1] = _mm512_maskz_loadu_ps(last, s + 16 * (NV - 1));
    #pragma GCC unroll 16
    for (int j = 0; j < NK; ++j) {
      const __m512 wv = _mm512_set1_ps(w[j * ntaps + i]);
      #pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) acc[j][v] = _mm512_fmadd_ps(wv, x[v], acc[j][v]);
    }
  }
  #pragma GCC unroll 16
  for (int j = 0; j < NK; ++j) {
    #pragma GCC unroll 16
    for (int v = 0; v < NV - 1; ++v) _mm512_storeu_ps(y + j * kstep + q0 + 16 * v, acc[j][v]);
    _mm512_mask_storeu_ps(y + j * kstep + q0 + 16 * (NV - 1), last, acc[j][NV - 1]);
  }
}

template <int NV>
void rows_of_k(float* y, int64_t ystep, int64_t kstep, int nk, int64_t nrows, const float* base,
               int64_t bstep, const int64_t* off, const float* w, int64_t ntaps,
               const float* bias, int64_t q0, __mmask16 last) {
  for (int64_t r = 0; r < nrows; ++r) {
    float* yr = y + r * ystep;
    const float* br = base + r * bstep;
    switch (nk) {
      case 1: row_block_k<NV, 1>(yr, kstep, br, off, w, ntaps, bias, q0, last); break;
      case 2: row_block_k<NV, 2>(yr, kstep, br, off, w, ntaps, bias, q0, last); break;
      case 3: row_block_k<NV, 3>(yr, kstep, br, off, w, ntaps, bias, q0, last); break;
      default: row_block_k<NV, 4>(yr, kstep, br, off, w, ntaps, bias, q0, last); break;
    }
  }
}

// T taps' lanes in registers through all the rows: per row and 16 columns one dy load and T
// tap loads, each tap's additions in the order of the contract (rows, then columns).
template <int T>
void dots_rows(float* lanes, const float* dy, int64_t dystep, int64_t nrows, int64_t Q,
               const float* base, int64_t bstep, const int64_t* off) {
  __m512 acc[T];
  #pragma GCC unroll 16
  for (int t = 0; t < T; ++t) acc[t] = _mm512_loadu_ps(lanes + 16 * t);
  const __mmask16 last = tail_mask(Q % 16);
  const int64_t Qf = Q - Q % 16;
  for (int64_t p = 0; p < nrows; ++p) {
    const float* d = dy + p * dystep;
    const float* b = base + p * bstep;
    int64_t q = 0;
    for (; q < Qf; q += 16) {
      const __m512 dv = _mm512_loadu_ps(d + q);
      #pragma GCC unroll 16
      for (int t = 0; t < T; ++t)
        acc[t] = _mm512_fmadd_ps(dv, _mm512_loadu_ps(b + off[t] + q), acc[t]);
    }
    if (q < Q) {
      const __m512 dv = _mm512_maskz_loadu_ps(last, d + q);
      #pragma GCC unroll 16
      for (int t = 0; t < T; ++t)
        acc[t] = _mm512_fmadd_ps(dv, _mm512_maskz_loadu_ps(last, b + off[t] + q), acc[t]);
    }
  }
  #pragma GCC unroll 16
  for (int t = 0; t < T; ++t) _mm512_storeu_ps(lanes + 16 * t, acc[t]);
}

}  // namespace

void conv_rows_avx512(float* y, int64_t ystep, int64_t nrows, int64_t Q, const float* base,
                      int64_t bstep, const int64_t* off, const float* w, int64_t ntaps,
                      float bias) {
  for (int64_t q0 = 0; q0 < Q; q0 += 64) {
    const int64_t n = Q - q0;
    const __mmask16 last = tail_mask(n - (n > 64 ? 48 : (n - 1) / 16 * 16));
    if (n > 48) rows_of<4>(y, ystep, nrows, base, bstep, off, w, ntaps, bias, q0, n >= 64 ? 0xFFFF : last);
    else if (n > 32) rows_of<3>(y, ystep, nrows, base, bstep, off, w, ntaps, bias, q0, last);
    else if (n > 16) rows_of<2>(y, ystep, nrows, base, bstep, off, w, ntaps, bias, q0, last);
    else rows_of<1>(y, ystep, nrows, base, bstep, off, w, ntaps, bias, q0, last);
  }
}

void conv_rows_k_avx512(float* y, int64_t ystep, int64_t kstep, int nk, int64_t nrows, int64_t Q,
                        const float* base, int64_t bstep, const int64_t* off, const float* w,
                        int64_t ntaps, const float* bias) {
  for (int64_t q0 = 0; q0 < Q; q0 += 64) {
    const int64_t n = Q - q0;
    const __mmask16 last = tail_mask(n - (n > 64 ? 48 : (n - 1) / 16 * 16));
    if (n > 48)
      rows_of_k<4>(y, ystep, kstep, nk, nrows, base, bstep, off, w, ntaps, bias, q0,
                   n >= 64 ? 0xFFFF : last);
    else if (n > 32)
      rows_of_k<3>(y, ystep, kstep, nk, nrows, base, bstep, off, w, ntaps, bias, q0, last);
    else if (n > 16)
      rows_of_k<2>(y, ystep, kstep, nk, nrows, base, bstep, off, w, ntaps, bias, q0, last);
    else
      rows_of_k<1>(y, ystep, kstep, nk, nrows, base, bstep, off, w, ntaps, bias, q0, last);
  }
}

void conv_row_dots_avx512(float* lanes, const float* dy, int64_t dystep, int64_t nrows,
                          int64_t Q, const float* base, int64_t bstep, const int64_t* off,
                          int64_t ntaps) {
  using Fn = void (*)(float*, const float*, int64_t, int64_t, int64_t, const float*, int64_t,
                      const int64_t*);
  static constexpr Fn kFns[] = {nullptr,      dots_rows<1>, dots_rows<2>, dots_rows<3>,
                                dots_rows<4>, dots_rows<5>, dots_rows<6>, dots_rows<7>,
                                dots_rows<8>, dots_rows<9>, dots_rows<10>, dots_rows<11>,
                                dots_rows<12>};
  for (int64_t i = 0; i < ntaps;) {  // up to 12 taps at a time: 12 accumulators + loads
    const int64_t t = ntaps - i >= 12 ? 12 : (ntaps - i > 9 ? (ntaps - i + 1) / 2 : ntaps - i);
    kFns[t](lanes + 16 * i, dy, dystep, nrows, Q, base, bstep, off + i);
    i += t;
  }
}

}  // namespace avx512
}  // namespace convkit
