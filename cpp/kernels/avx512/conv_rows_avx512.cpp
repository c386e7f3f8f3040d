// Row kernels of the depthwise / few-channels-per-group convolution (KernelTable::conv_rows,
// conv_row_dots): up to 64 outputs of a row in four registers, summed over the taps without
// leaving them; the dot products keep up to 12 taps' lanes in registers through all rows. The
// last vector of a row is masked, so nothing is read or written past Q.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "kernels/avx512/avx512.h"



namespace convkit {
namespace avx512 {
namespace {

inline __mmask16 tail_mask(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1);
}

// The lanes of a load at column c that lie in a row of W columns.
inline __mmask16 row_lanes(int64_t c, int64_t W) {
  if (c >= W || c <= -16) return 0;
  const __mmask16 m = c < 0 ? static_cast<__mmask16>(0xFFFFu << -c) : __mmask16(0xFFFF);
  return c + 16 > W ? static_cast<__mmask16>(m & tail_mask(W - c)) : m;
}

// A plane's N weights, each broadcast to a vector: the depthwise kernels keep them in registers.
template <int N>
inline __attribute__((always_inline)) void broadcast_taps(__m512 (&wv)[N], const float* w) {
  #pragma GCC unroll 25
  for (int i = 0; i < N; ++i) wv[i] = _mm512_set1_ps(w[i]);
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

// The running sums of ROWS output rows of NV vectors, each starting at the bias.
template <int ROWS, int NV>
__attribute__((always_inline)) inline void fill_rows(__m512 (&acc)[ROWS][NV], float bias) {
  #pragma GCC unroll 16
  for (int o = 0; o < ROWS; ++o)
    #pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[o][v] = _mm512_set1_ps(bias);
}

// Input row j of a block, its KS taps xt for vector v, into the sums of the output rows o that
// read it (tap row r = j - STEP o), weights wv[KS r + t] (fully unrolled callers: j and v are
// constants).
template <int ROWS, int NV, int STEP, int KS>
__attribute__((always_inline)) inline void taps_into(__m512 (&acc)[ROWS][NV], int j, int v,
                                                     const __m512* xt, const __m512* wv) {
  #pragma GCC unroll 5
  for (int t = 0; t < KS; ++t)
    #pragma GCC unroll 16
    for (int o = 0; o < ROWS; ++o) {
      const int r = j - STEP * o;
      if (r >= 0 && r < KS) acc[o][v] = _mm512_fmadd_ps(wv[KS * r + t], xt[t], acc[o][v]);
    }
}

// ROWS output rows ystep apart of NV vectors, the last one's lanes `last`.
template <int ROWS, int NV>
__attribute__((always_inline)) inline void store_rows(float* y, int64_t ystep,
                                                      const __m512 (&acc)[ROWS][NV],
                                                      __mmask16 last) {
  #pragma GCC unroll 16
  for (int o = 0; o < ROWS; ++o) {
    #pragma GCC unroll 16
    for (int v = 0; v < NV - 1; ++v) _mm512_storeu_ps(y + o * ystep + 16 * v, acc[o][v]);
    _mm512_mask_storeu_ps(y + o * ystep + 16 * (NV - 1), last, acc[o][NV - 1]);
  }
}

// KS x KS taps (3 or 5) with the weights in registers: output row o of a block reads input rows
// o + r (r < KS) of the block, rows[j] for j < ROWS + KS - 1, tap t at column offset coff[t] (t
// when coff is null), its vector v loading only the lanes mask[t][v]. Each input row's KS
// shifted loads serve every output row of the block that reads it; rows are visited in order,
// so every output still adds its taps in (r, t) order, as conv_rows' contract says.
template <int KS, int ROWS, int NV>
void taps_block(float* y, int64_t ystep, const float* const* rows, const int64_t* coff,
                const __mmask16 (*mask)[4], const __m512* wv, float bias, int64_t q0,
                __mmask16 last) {
  __m512 acc[ROWS][NV];
  fill_rows(acc, bias);
  #pragma GCC unroll 32
  for (int j = 0; j < ROWS + KS - 1; ++j) {
    #pragma GCC unroll 5
    for (int t = 0; t < KS; ++t) {
      const float* s = rows[j] + (coff ? coff[t] : t) + q0;
      #pragma GCC unroll 16
      for (int v = 0; v < NV; ++v) {
        const __m512 x = _mm512_maskz_loadu_ps(mask[t][v], s + 16 * v);
        #pragma GCC unroll 16
        for (int o = 0; o < ROWS; ++o) {
          const int r = j - o;
          if (r >= 0 && r < KS) acc[o][v] = _mm512_fmadd_ps(wv[KS * r + t], x, acc[o][v]);
        }
      }
    }
  }
  store_rows(y + q0, ystep, acc, last);
}

// taps_block for the last `left` (< L + 1) rows of a plane.
template <int KS, int L, int NV>
void taps_tail(int left, float* y, int64_t ystep, const float* const* rows, const int64_t* coff,
               const __mmask16 (*mask)[4], const __m512* wv, float bias, int64_t q0,
               __mmask16 last) {
  if constexpr (L >= 1) {
    if (left == L) {
      taps_block<KS, L, NV>(y, ystep, rows, coff, mask, wv, bias, q0, last);
      return;
    }
    taps_tail<KS, L - 1, NV>(left, y, ystep, rows, coff, mask, wv, bias, q0, last);
  }
}

// All output rows of one column block: blocks of ROWS, then the rest one by one. row(i) is
// padded input row i of the plane.
// A plane's padded rows as a table: row i is tab[i] (Row for taps_of, which then hands blocks
// slices of it instead of building each block's row list).
struct RowTable {
  const float* const* tab;
  const float* operator()(int64_t i) const { return tab[i]; }
};

template <int KS, int ROWS, int NV, class Row>
void taps_of(float* y, int64_t ystep, int64_t nrows, const Row& row, const int64_t* coff,
             const __mmask16 (*mask)[4], const __m512* wv, float bias, int64_t q0,
             __mmask16 last) {
  const float* own[ROWS + KS - 1];
  auto rows_at = [&](int64_t o, int n) -> const float* const* {
    if constexpr (std::is_same_v<Row, RowTable>) {
      (void)n;
      return row.tab + o;
    } else {
      for (int j = 0; j < n; ++j) own[j] = row(o + j);
      return own;
    }
  };
  int64_t o = 0;
  for (; o + ROWS <= nrows; o += ROWS)
    taps_block<KS, ROWS, NV>(y + o * ystep, ystep, rows_at(o, ROWS + KS - 1), coff, mask, wv,
                             bias, q0, last);
  // the last rows as one block of their own (one by one, each output's nine taps were a chain
  // of dependent FMAs: the 4 rows left of a 28-row plane cost as much as 16)
  const int left = static_cast<int>(nrows - o);
  taps_tail<KS, ROWS - 1, NV>(left, y + o * ystep, ystep, rows_at(o, left + KS - 1), coff, mask,
                              wv, bias, q0, last);
}

// Columns per block of taps<KS>: 64 for 3 x 3; 32 for 5 x 5, whose 25 weights leave room for 4
// accumulators (2 rows of 2 vectors share each load between two output rows).
constexpr int64_t taps_block_cols(int KS) { return KS == 3 ? 64 : 32; }

// Every output row, a block of taps_block_cols(KS) columns at a time; masks(q0, mask) fills the
// load masks of a block. Accumulators: ROWS * NV registers next to the KS * KS weights.
template <int KS, class Row, class Masks>
void taps(float* y, int64_t ystep, int64_t nrows, int64_t Q, const Row& row, const int64_t* coff,
          const Masks& masks, const float* w, float bias) {
  __m512 wv[KS * KS];
  broadcast_taps(wv, w);
  __mmask16 mask[KS][4];
  for (int64_t q0 = 0; q0 < Q; q0 += taps_block_cols(KS)) {
    const int64_t n = Q - q0;
    masks(q0, mask);
    if constexpr (KS == 3) {
      const __mmask16 last = tail_mask(n - (n > 64 ? 48 : (n - 1) / 16 * 16));
      const __mmask16 full = n >= 64 ? __mmask16(0xFFFF) : last;
      if (n > 48) taps_of<3, 4, 4>(y, ystep, nrows, row, coff, mask, wv, bias, q0, full);
      else if (n > 32) taps_of<3, 4, 3>(y, ystep, nrows, row, coff, mask, wv, bias, q0, last);
      else if (n > 16 && nrows % 7 == 0)  // no tail block: (8, 144, 28, 28), one thread, 6 %
        taps_of<3, 7, 2>(y, ystep, nrows, row, coff, mask, wv, bias, q0, last);
      else if (n > 16) taps_of<3, 6, 2>(y, ystep, nrows, row, coff, mask, wv, bias, q0, last);
      else taps_of<3, 8, 1>(y, ystep, nrows, row, coff, mask, wv, bias, q0, last);
    } else {
      const __mmask16 last = tail_mask(n > 32 ? 16 : n - (n - 1) / 16 * 16);
      if (n > 16) taps_of<5, 2, 2>(y, ystep, nrows, row, coff, mask, wv, bias, q0, last);
      else taps_of<5, 4, 1>(y, ystep, nrows, row, coff, mask, wv, bias, q0, last);
    }
  }
}

// The row step D between kernel rows when the taps are 3 x 3 with rows D apart
// (off[3 r + t] = off[t] + r D) and output rows one kernel row apart (bstep = D: stride 1,
// undilated); 0 otherwise. (At stride 2 the same kernels measured no faster: those layers are
// bound by the phase-split copy.)
int64_t rows3x3_step(int64_t ntaps, int64_t bstep, const int64_t* off) {
  if (ntaps != 9) return 0;
  const int64_t D = off[3] - off[0];
  for (int t = 0; t < 3; ++t)
    if (off[3 + t] - off[t] != D || off[6 + t] - off[3 + t] != D) return 0;
  return D > 0 && bstep == D ? D : 0;
}

// conv_rows for rows3x3_step's taps: padded row i is base + i D, every lane of a row inside it.
void rows3x3(float* y, int64_t ystep, int64_t nrows, int64_t Q, const float* base, int64_t D,
             const int64_t* off, const float* w, float bias) {
  auto masks = [Q](int64_t q0, __mmask16 (*mask)[4]) {
    for (int t = 0; t < 3; ++t)
      for (int v = 0; v < 4; ++v) mask[t][v] = tail_mask(std::max<int64_t>(0, Q - q0 - 16 * v));
  };
  auto row = [base, D](int64_t i) { return base + i * D; };
  taps<3>(y, ystep, nrows, Q, row, off, masks, w, bias);
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

// conv_row_dots for 3 x 3 taps, padded input row i at row(i), tap t at column offset coff[t]
// (t when coff is null), dy row p reading padded rows p + r: each input row's three shifted
// loads serve the dy rows that read it, mask(q, t, mq) giving the lanes of tap t's load at
// column q. Input rows are visited in order, so every tap adds its dy rows in order, each row's
// columns in order: conv_row_dots' contract.
template <class Row, class Mask>
void dots3x3(float* lanes, const float* dy, int64_t dystep, int64_t P, int64_t Q, const Row& row,
             const int64_t* coff, const Mask& mask) {
  __m512 acc[9];
  #pragma GCC unroll 9
  for (int i = 0; i < 9; ++i) acc[i] = _mm512_loadu_ps(lanes + 16 * i);
  // rows of up to 64 columns: the load masks once, not per row (they cost as much as the FMAs)
  __mmask16 mk[4][3];
  const bool fixed = Q <= 64;
  if (fixed)
    for (int64_t q = 0; q < Q; q += 16)
      for (int t = 0; t < 3; ++t) mk[q / 16][t] = mask(q, t, tail_mask(Q - q));
  for (int64_t i = 0; i < P + 2; ++i) {
    const float* xr = row(i);
    for (int64_t q = 0; q < Q; q += 16) {
      const __mmask16 mq = tail_mask(Q - q);
      __m512 xv[3];
      #pragma GCC unroll 3
      for (int t = 0; t < 3; ++t)
        xv[t] = _mm512_maskz_loadu_ps(fixed ? mk[q / 16][t] : mask(q, t, mq),
                                      xr + (coff ? coff[t] : t) + q);
      #pragma GCC unroll 3
      for (int r = 0; r < 3; ++r) {
        const int64_t p = i - r;
        if (p < 0 || p >= P) continue;
        const __m512 dv = _mm512_maskz_loadu_ps(mq, dy + p * dystep + q);
        #pragma GCC unroll 3
        for (int t = 0; t < 3; ++t) acc[3 * r + t] = _mm512_fmadd_ps(dv, xv[t], acc[3 * r + t]);
      }
    }
  }
  #pragma GCC unroll 9
  for (int i = 0; i < 9; ++i) _mm512_storeu_ps(lanes + 16 * i, acc[i]);
}

// "Same" 3 x 3 planes (ph = pw = 1: P = H, Q = W) with the outputs flattened: vector v holds
// outputs 16 v .. 16 v + 15 of the row-major plane, whatever rows they fall in, so no lane idles
// at the end of a row (a 7-wide row in a vector of its own wastes 9 of its 16 lanes). Tap (r, t)
// of output f reads x[f + (r - 1) W + t - 1]; lanes whose row or column falls outside the plane
// load zeros, through masks made once per plane shape. Same products in the same (r, t) order
// as `taps`, so the same bits. Each output vector loads all nine taps (no load serves two
// output rows), so this pays only for narrow planes: one thread, (8, 256, 7, 7) 20 -> 26
// GFLOP/s, but (8, 144, 28, 28) 62-68 -> 56 and (8, 144, 14, 14) 49 -> 46.
struct FlatMasks {
  __mmask16 m[9];  // tap 3 r + t's lanes
  bool inner;      // m = {c0, all, c2} in each row: rows -1 and +1 of every lane inside
};

const FlatMasks* flat_masks(int64_t H, int64_t W) {
  thread_local std::vector<FlatMasks> table;
  thread_local int64_t th = -1, tw = -1;
  if (th == H && tw == W) return table.data();
  const int64_t HW = H * W, nv = (HW + 15) / 16;
  table.assign(static_cast<size_t>(nv), FlatMasks{});
  for (int64_t v = 0; v < nv; ++v) {
    FlatMasks& f = table[static_cast<size_t>(v)];
    for (int l = 0; l < 16 && 16 * v + l < HW; ++l) {
      const int64_t p = (16 * v + l) / W, q = (16 * v + l) % W;
      for (int r = 0; r < 3; ++r)
        for (int t = 0; t < 3; ++t)
          if (p + r - 1 >= 0 && p + r - 1 < H && q + t - 1 >= 0 && q + t - 1 < W)
            f.m[3 * r + t] |= static_cast<__mmask16>(1u << l);
    }
    f.inner = f.m[1] == 0xFFFF;
    for (int r = 0; r < 3; ++r)
      f.inner = f.inner && f.m[3 * r] == f.m[0] && f.m[3 * r + 1] == 0xFFFF &&
                f.m[3 * r + 2] == f.m[2];
  }
  th = H;
  tw = W;
  return table.data();
}

// NB vectors from output f0 on; INNER: every vector's masks are {c0, all, c2} per row.
template <int NB, bool INNER>
void flat_vectors(float* y, const float* x, int64_t f0, int64_t W, const FlatMasks* mk,
                  const __m512* wv, float bias) {
  __m512 acc[NB];
  #pragma GCC unroll 8
  for (int v = 0; v < NB; ++v) acc[v] = _mm512_set1_ps(bias);
  #pragma GCC unroll 3
  for (int r = 0; r < 3; ++r)
    #pragma GCC unroll 3
    for (int t = 0; t < 3; ++t)
      #pragma GCC unroll 8
      for (int v = 0; v < NB; ++v) {
        const float* s = x + f0 + 16 * v + (r - 1) * W + t - 1;
        const __m512 xv = INNER && t == 1 ? _mm512_loadu_ps(s)
                                          : _mm512_maskz_loadu_ps(mk[v].m[INNER ? t : 3 * r + t], s);
        acc[v] = _mm512_fmadd_ps(wv[3 * r + t], xv, acc[v]);
      }
  #pragma GCC unroll 8
  for (int v = 0; v < NB; ++v) {
    if (INNER) _mm512_storeu_ps(y + f0 + 16 * v, acc[v]);
    else _mm512_mask_storeu_ps(y + f0 + 16 * v, mk[v].m[4], acc[v]);
  }
}

void flat_plane(float* y, const float* x, int64_t H, int64_t W, const FlatMasks* mk,
                const float* w, float bias) {
  __m512 wv[9];
  broadcast_taps(wv, w);
  const int64_t nv = (H * W + 15) / 16;
  constexpr int NB = 4;
  for (int64_t v = 0; v < nv;) {
    if (!mk[v].inner) {
      flat_vectors<1, false>(y, x, 16 * v, W, mk + v, wv, bias);
      ++v;
      continue;
    }
    int64_t e = v;
    while (e < nv && e < v + NB && mk[e].inner) ++e;
    switch (e - v) {
      case 4: flat_vectors<4, true>(y, x, 16 * v, W, mk + v, wv, bias); break;
      case 3: flat_vectors<3, true>(y, x, 16 * v, W, mk + v, wv, bias); break;
      case 2: flat_vectors<2, true>(y, x, 16 * v, W, mk + v, wv, bias); break;
      default: flat_vectors<1, true>(y, x, 16 * v, W, mk + v, wv, bias); break;
    }
    v = e;
  }
}

// "Same" 3 x 3 planes (ph = pw = 1, so P = H, Q = W): ROWS output rows (Q apart in y) from
// input rows -1 .. ROWS of the block (x: its row 0), NV vectors of columns from the block's
// first. Each input row is loaded once, vector by vector, and its three taps come from those
// vectors shifted by one lane either way (valignd), with the lanes past the block from the
// columns beside it (EDGES, planes wider than 64: lmask / rmask, the one lane read there, 0 at
// the plane's edge; zeros otherwise): taps_block loaded each row three times, from unaligned
// addresses across two cache lines.
// TOP / BOT: the rows above / below are the padding, whose products (exact zeros) are
// skipped; otherwise the products and their order are taps_block's, so are the values.
// Kept out of line: inlined down the chain same3_rows -> same3_cols -> same3_planes, GCC 12
// scheduled the block worse (a 28x28 plane 8 % slower, a 14x14 one 10 %, -O3 -fPIC); the
// other block kernels of this file ran 1.15-1.45x slower out of line, so they stay inlined.
template <int ROWS, int NV, bool TOP, bool BOT, bool EDGES>
__attribute__((noinline)) void same3_block(float* y, int64_t Q, const float* x, const __m512* wv,
                                          float bias, __mmask16 last, __mmask16 lmask,
                                          __mmask16 rmask) {
  __m512 acc[ROWS][NV];
  fill_rows(acc, bias);
  #pragma GCC unroll 32
  for (int j = TOP ? 1 : 0; j < (BOT ? ROWS + 1 : ROWS + 2); ++j) {
    const float* s = x + (j - 1) * Q;
    __m512i a[NV + 2];  // a[v + 1]: vector v; a[0], a[NV + 1]: the lanes beside the block
    a[0] = EDGES ? _mm512_castps_si512(_mm512_maskz_loadu_ps(lmask, s - 16))
                 : _mm512_setzero_si512();
    #pragma GCC unroll 16
    for (int v = 0; v < NV - 1; ++v) a[v + 1] = _mm512_castps_si512(_mm512_loadu_ps(s + 16 * v));
    a[NV] = _mm512_castps_si512(_mm512_maskz_loadu_ps(last, s + 16 * (NV - 1)));
    a[NV + 1] = EDGES ? _mm512_castps_si512(_mm512_maskz_loadu_ps(rmask, s + 16 * NV))
                      : _mm512_setzero_si512();
    #pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      const __m512 xt[3] = {_mm512_castsi512_ps(_mm512_alignr_epi32(a[v + 1], a[v], 15)),
                            _mm512_castsi512_ps(a[v + 1]),
                            _mm512_castsi512_ps(_mm512_alignr_epi32(a[v + 2], a[v + 1], 1))};
      taps_into<ROWS, NV, 1, 3>(acc, j, v, xt, wv);
    }
  }
  store_rows<ROWS, NV>(y, Q, acc, last);
}

// Rows o .. o + n - 1 (n <= L) of a column block as one block.
template <int L, int NV, bool EDGES>
void same3_rows(int n, int64_t o, int64_t P, float* y, int64_t Q, const float* x,
                const __m512* wv, float bias, __mmask16 last, __mmask16 lm, __mmask16 rm) {
  if constexpr (L >= 1) {
    if (n < L) {
      same3_rows<L - 1, NV, EDGES>(n, o, P, y, Q, x, wv, bias, last, lm, rm);
      return;
    }
    y += o * Q;
    x += o * Q;
    const bool top = o == 0, bot = o + L == P;
    if (top && bot) same3_block<L, NV, true, true, EDGES>(y, Q, x, wv, bias, last, lm, rm);
    else if (top) same3_block<L, NV, true, false, EDGES>(y, Q, x, wv, bias, last, lm, rm);
    else if (bot) same3_block<L, NV, false, true, EDGES>(y, Q, x, wv, bias, last, lm, rm);
    else same3_block<L, NV, false, false, EDGES>(y, Q, x, wv, bias, last, lm, rm);
  }
}

// All rows of the column block from q0 on (NV vectors, the last one `last`).
template <int ROWS, int NV, bool EDGES>
void same3_cols(float* y, int64_t P, int64_t Q, const float* x, const __m512* wv, float bias,
                int64_t q0, __mmask16 last) {
  const __mmask16 lm = q0 > 0 ? 0x8000 : 0, rm = q0 + 16 * NV < Q ? 1 : 0;
  for (int64_t o = 0; o < P; o += ROWS)
    same3_rows<ROWS, NV, EDGES>(static_cast<int>(std::min<int64_t>(ROWS, P - o)), o, P, y + q0,
                                Q, x + q0, wv, bias, last, lm, rm);
}

// n "same" 3 x 3 planes: column blocks of up to 64, rows in blocks of 4 to 8 (the
// accumulators, the nine weights and the row's vectors fill the 32 registers).
void same3_planes(float* y, int64_t ystride, int64_t n, int64_t P, int64_t Q, const float* x,
                  int64_t xstride, const float* w, const float* bias) {
  for (int64_t i = 0; i < n; ++i) {
    __m512 wv[9];
    broadcast_taps(wv, w + 9 * i);
    float* yi = y + i * ystride;
    const float* xi = x + i * xstride;
    const float b = bias ? bias[i] : 0.f;
    for (int64_t q0 = 0; q0 < Q; q0 += 64) {
      const int64_t m = std::min<int64_t>(64, Q - q0), nv = (m + 15) / 16;
      const __mmask16 last = tail_mask(m - 16 * (nv - 1));
      if (Q > 64) {  // blocks of 4 vectors, the last one of 1 to 4
        if (nv == 4) same3_cols<4, 4, true>(yi, P, Q, xi, wv, b, q0, last);
        else if (nv == 3) same3_cols<4, 3, true>(yi, P, Q, xi, wv, b, q0, last);
        else if (nv == 2) same3_cols<6, 2, true>(yi, P, Q, xi, wv, b, q0, last);
        else same3_cols<8, 1, true>(yi, P, Q, xi, wv, b, q0, last);
      } else if (nv == 4) same3_cols<4, 4, false>(yi, P, Q, xi, wv, b, q0, last);
      else if (nv == 3) same3_cols<4, 3, false>(yi, P, Q, xi, wv, b, q0, last);
      else if (nv == 1) same3_cols<8, 1, false>(yi, P, Q, xi, wv, b, q0, last);
      else if (P % 7 == 0 || P % 7 > 4) same3_cols<7, 2, false>(yi, P, Q, xi, wv, b, q0, last);
      else same3_cols<6, 2, false>(yi, P, Q, xi, wv, b, q0, last);
    }
  }
}

// Depthwise KS x KS planes (3 or 5) at stride STEP (1 or 2) whose output rows are at most 8
// wide, two rows a vector: rows p and p + 1 in lanes 0-7 and 8-15 (a row alone in a vector
// used half its lanes or less). Both halves read the same input row, through the same lanes
// of its taps, with different weights (tap rows r and r - STEP), from a table of per-half
// weight vectors; a half whose tap row is outside the kernel is masked out of the
// multiply-add, so every output keeps its products and their order. A block: PAIRS pairs of
// rows from output row p0, input rows from STEP p0 - ph on; padding rows' products skipped.
template <int KS, int STEP, int PAIRS>
void pairs_block(float* y, int64_t P, int64_t Q, const float* x, int64_t H, int64_t W,
                 int64_t p0, int64_t ph, int64_t c0, const __m512* wt, float bias,
                 __mmask16 mA, __mmask16 mB, __mmask16 mq) {
  __m512i idx[KS];  // tap t of lane l: column STEP (l % 8) + t of the window from c0
  #pragma GCC unroll 5
  for (int t = 0; t < KS; ++t)
    idx[t] = _mm512_add_epi32(
        _mm512_setr_epi32(0, STEP, 2 * STEP, 3 * STEP, 4 * STEP, 5 * STEP, 6 * STEP, 7 * STEP, 0,
                          STEP, 2 * STEP, 3 * STEP, 4 * STEP, 5 * STEP, 6 * STEP, 7 * STEP),
        _mm512_set1_epi32(t));
  __m512 acc[PAIRS];
  #pragma GCC unroll 8
  for (int m = 0; m < PAIRS; ++m) acc[m] = _mm512_set1_ps(bias);
  const int64_t h0 = STEP * p0 - ph;
  #pragma GCC unroll 32
  for (int j = 0; j < STEP * (2 * PAIRS - 1) + KS; ++j) {
    const int64_t h = h0 + j;
    if (h < 0 || h >= H) continue;
    const float* s = x + h * W + c0;
    const __m512 a = _mm512_maskz_loadu_ps(mA, s), b = _mm512_maskz_loadu_ps(mB, s + 16);
    __m512 xt[KS];
    #pragma GCC unroll 5
    for (int t = 0; t < KS; ++t) xt[t] = _mm512_permutex2var_ps(a, idx[t], b);
    #pragma GCC unroll 8
    for (int m = 0; m < PAIRS; ++m) {
      const int r = j - 2 * STEP * m;  // the low row's tap row; the high row's is r - STEP
      if (r < 0 || r >= KS + STEP) continue;
      const __mmask16 k = static_cast<__mmask16>((r < KS ? 0x00FF : 0) | (r >= STEP ? 0xFF00 : 0));
      #pragma GCC unroll 5
      for (int t = 0; t < KS; ++t)
        acc[m] = _mm512_mask3_fmadd_ps(xt[t], wt[KS * r + t], acc[m], k);
    }
  }
  #pragma GCC unroll 8
  for (int m = 0; m < PAIRS; ++m) {
    const int64_t p = p0 + 2 * m;
    if (p < P) _mm512_mask_storeu_ps(y + p * Q, mq, acc[m]);
    if (p + 1 < P)
      _mm512_mask_storeu_ps(y + (p + 1) * Q - 8, static_cast<__mmask16>(mq << 8), acc[m]);
  }
}

// n planes of the above: the weight table per plane (KS + STEP tap rows of KS vectors: w[r] in
// the low half, w[r - STEP] in the high half, zero where there is none), blocks of 4 pairs.
template <int KS, int STEP>
void pairs_planes(float* y, int64_t ystride, int64_t n, int64_t P, int64_t Q, const float* x,
                  int64_t xstride, int64_t H, int64_t W, int64_t ph, int64_t pw, const float* w,
                  const float* bias) {
  constexpr int kRows = KS + STEP;
  __m512 wt[kRows * KS];
  const int64_t c0 = -pw;
  const __mmask16 mA = row_lanes(c0, W), mB = row_lanes(c0 + 16, W), mq = tail_mask(Q);
  for (int64_t i = 0; i < n; ++i) {
    const float* wi = w + KS * KS * i;
    for (int r = 0; r < kRows; ++r)
      for (int t = 0; t < KS; ++t)
        wt[KS * r + t] = _mm512_mask_blend_ps(
            0xFF00, _mm512_set1_ps(r < KS ? wi[KS * r + t] : 0.f),
            _mm512_set1_ps(r >= STEP ? wi[KS * (r - STEP) + t] : 0.f));
    for (int64_t p0 = 0; p0 < P; p0 += 8)
      pairs_block<KS, STEP, 4>(y + i * ystride, P, Q, x + i * xstride, H, W, p0, ph, c0, wt,
                               bias ? bias[i] : 0.f, mA, mB, mq);
  }
}

// "Same" 5 x 5 planes (ph = pw = 2) of up to 32 columns (EfficientNet's and MobileNetV3's
// 28x28, 14x14 and 7x7 stages): ROWS output rows of NV vectors from input rows -2 .. ROWS + 1
// of the block (x: its row 0; rows outside [0, H) are padding, their products skipped), each
// loaded once, its five taps the row shifted by -2 .. 2 lanes in registers (zeros past both
// ends: the load stops at Q). The products and their order are taps_block's.
template <int ROWS, int NV>
void same5_block(float* y, int64_t Q, const float* x, int64_t o0, int64_t H, const __m512* wv,
                 float bias, __mmask16 last) {
  __m512 acc[ROWS][NV];
  fill_rows(acc, bias);
  const __m512i zero = _mm512_setzero_si512();
  #pragma GCC unroll 16
  for (int j = 0; j < ROWS + 4; ++j) {
    const int64_t h = o0 + j - 2;
    if (h < 0 || h >= H) continue;
    const float* s = x + (j - 2) * Q;
    __m512i a[NV + 2];  // a[v + 1]: vector v, zeros beside
    a[0] = a[NV + 1] = zero;
    #pragma GCC unroll 2
    for (int v = 0; v < NV - 1; ++v) a[v + 1] = _mm512_castps_si512(_mm512_loadu_ps(s + 16 * v));
    a[NV] = _mm512_castps_si512(_mm512_maskz_loadu_ps(last, s + 16 * (NV - 1)));
    #pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      const __m512 xt[5] = {_mm512_castsi512_ps(_mm512_alignr_epi32(a[v + 1], a[v], 14)),
                            _mm512_castsi512_ps(_mm512_alignr_epi32(a[v + 1], a[v], 15)),
                            _mm512_castsi512_ps(a[v + 1]),
                            _mm512_castsi512_ps(_mm512_alignr_epi32(a[v + 2], a[v + 1], 1)),
                            _mm512_castsi512_ps(_mm512_alignr_epi32(a[v + 2], a[v + 1], 2))};
      taps_into<ROWS, NV, 1, 5>(acc, j, v, xt, wv);
    }
  }
  store_rows<ROWS, NV>(y, Q, acc, last);
}

// Rows o0 .. o0 + n - 1 (n <= L) as one block.
template <int L, int NV>
void same5_rows(int n, int64_t o0, float* y, int64_t Q, const float* x, int64_t H,
                const __m512* wv, float bias, __mmask16 last) {
  if constexpr (L >= 1) {
    if (n < L) {
      same5_rows<L - 1, NV>(n, o0, y, Q, x, H, wv, bias, last);
      return;
    }
    same5_block<L, NV>(y + o0 * Q, Q, x + o0 * Q, o0, H, wv, bias, last);
  }
}

template <int ROWS, int NV>
void same5_plane(float* y, int64_t P, int64_t Q, const float* x, const __m512* wv, float bias) {
  const __mmask16 last = tail_mask(Q - 16 * (NV - 1));
  for (int64_t o = 0; o < P; o += ROWS)
    same5_rows<ROWS, NV>(static_cast<int>(std::min<int64_t>(ROWS, P - o)), o, y, Q, x, P, wv,
                         bias, last);
}

// n "same" 5 x 5 planes of up to 32 columns, rows in blocks of 4 (3 for two vectors a row:
// blocks of 1 and 2 rows ran 25 % and 5 % slower on 28x28 planes).
void same5_planes(float* y, int64_t ystride, int64_t n, int64_t P, int64_t Q, const float* x,
                  int64_t xstride, const float* w, const float* bias) {
  for (int64_t i = 0; i < n; ++i) {
    __m512 wv[25];
    broadcast_taps(wv, w + 25 * i);
    const float b = bias ? bias[i] : 0.f;
    if (Q > 16) same5_plane<3, 2>(y + i * ystride, P, Q, x + i * xstride, wv, b);
    else same5_plane<4, 1>(y + i * ystride, P, Q, x + i * xstride, wv, b);
  }
}

}  // namespace

void conv_rows_avx512(float* y, int64_t ystep, int64_t nrows, int64_t Q, const float* base,
                      int64_t bstep, const int64_t* off, const float* w, int64_t ntaps,
                      float bias) {
  if (const int64_t D = rows3x3_step(ntaps, bstep, off)) {
    rows3x3(y, ystep, nrows, Q, base, D, off, w, bias);
    return;
  }
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
  if (const int64_t D = rows3x3_step(ntaps, bstep, off)) {
    auto row = [base, D](int64_t i) { return base + i * D; };
    auto mask = [](int64_t, int, __mmask16 mq) { return mq; };
    dots3x3(lanes, dy, dystep, nrows, Q, row, off, mask);
    return;
  }
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

namespace {

// conv_dw_plane for KS x KS taps
template <int KS>
void dw_plane(float* y, int64_t ystride, int64_t n, int64_t P, int64_t Q, const float* x,
              int64_t xstride, int64_t H, int64_t W, int64_t ph, int64_t pw, const float* w,
              const float* bias, const float* zeros) {
  // x read in place: padded row i is row i - ph shifted by pw, or the row of zeros outside the
  // plane; a lane loads only columns inside [0, W). The products and their order are those of
  // the rows kernels on the zero-padded copy, so the bits are too.
  auto masks = [Q, W, pw](int64_t q0, __mmask16 (*mask)[4]) {
    for (int t = 0; t < KS; ++t)
      for (int v = 0; v < 4; ++v) {  // lanes l in [lo, hi): c0 + l in [0, W), l < n
        const int64_t c0 = q0 + 16 * v + t - pw, n = std::min<int64_t>(16, Q - q0 - 16 * v);
        const int64_t lo = std::max<int64_t>(0, -c0), hi = std::min(n, W - c0);
        mask[t][v] = hi > lo ? static_cast<__mmask16>(tail_mask(hi) & ~tail_mask(lo)) : 0;
      }
  };
  if (KS == 3 && ph == 1 && pw == 1 && Q <= 8) {  // rows of at most half a vector: flattened
    const FlatMasks* mk = flat_masks(H, W);
    for (int64_t i = 0; i < n; ++i)
      flat_plane(y + i * ystride, x + i * xstride, H, W, mk, w + 9 * i, bias ? bias[i] : 0.f);
    return;
  }
  if (KS == 3 && ph == 1 && pw == 1) {
    same3_planes(y, ystride, n, P, Q, x, xstride, w, bias);
    return;
  }
  if (KS == 5 && Q <= 8) {
    pairs_planes<5, 1>(y, ystride, n, P, Q, x, xstride, H, W, ph, pw, w, bias);
    return;
  }
  if (KS == 5 && ph == 2 && pw == 2 && Q <= 32) {
    same5_planes(y, ystride, n, P, Q, x, xstride, w, bias);
    return;
  }
  if (Q > taps_block_cols(KS)) {  // several column blocks: plane by plane
    for (int64_t i = 0; i < n; ++i) {
      const float* xi = x + i * xstride;
      auto row = [=](int64_t r) { return r >= ph && r < H + ph ? xi + (r - ph) * W - pw : zeros; };
      taps<KS>(y + i * ystride, Q, P, Q, row, nullptr, masks, w + KS * KS * i,
               bias ? bias[i] : 0.f);
    }
    return;
  }
  // one column block: its masks once for all the planes (per plane they cost as much as the
  // arithmetic of a 14 x 14 plane)
  __mmask16 mask[KS][4];
  masks(0, mask);
  auto fixed = [&mask](int64_t, __mmask16 (*m)[4]) {
    for (int t = 0; t < KS; ++t)
      for (int v = 0; v < 4; ++v) m[t][v] = mask[t][v];
  };
  // and its rows as a table, made per plane without a test per row (the test per block row
  // took 7 % of a (8, 144, 28, 28) layer)
  const int64_t nr = P + KS - 1, top = std::min(ph, nr), mid = std::min(H, nr - top);
  std::vector<const float*> tab(static_cast<size_t>(nr), zeros);
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = x + i * xstride - pw;
    for (int64_t r = 0; r < mid; ++r) tab[top + r] = xi + r * W;
    taps<KS>(y + i * ystride, Q, P, Q, RowTable{tab.data()}, nullptr, fixed, w + KS * KS * i,
             bias ? bias[i] : 0.f);
  }
}

}  // namespace

void conv_dw_plane_avx512(int ks, float* y, int64_t ystride, int64_t n, int64_t P, int64_t Q,
                          const float* x, int64_t xstride, int64_t H, int64_t W, int64_t ph,
                          int64_t pw, const float* w, const float* bias, const float* zeros) {
  if (ks == 5) dw_plane<5>(y, ystride, n, P, Q, x, xstride, H, W, ph, pw, w, bias, zeros);
  else dw_plane<3>(y, ystride, n, P, Q, x, xstride, H, W, ph, pw, w, bias, zeros);
}

void conv_dw3_dots_avx512(float* lanes, const float* dy, int64_t P, int64_t Q, const float* x,
                          int64_t H, int64_t W, int64_t ph, int64_t pw, const float* zeros) {
  // x read in place, as conv_dw_plane_avx512 reads it
  auto row = [=](int64_t i) { return i >= ph && i < H + ph ? x + (i - ph) * W - pw : zeros; };
  auto mask = [W, pw](int64_t q, int t, __mmask16 mq) {
    const int64_t c0 = q + t - pw;  // column of lane 0
    if (c0 < 0) mq &= static_cast<__mmask16>(0xFFFFu << -c0);
    if (c0 + 16 > W) mq &= tail_mask(std::max<int64_t>(0, W - c0));
    return mq;
  };
  dots3x3(lanes, dy, Q, P, Q, row, nullptr, mask);
}

// Stride-2 3x3 depthwise weight gradients on whole planes, x read in place: the three taps of an
// input row for 16 outputs are the even, odd and next even columns of the 32 (or 34) columns
// from 2 q0 - pw, permutes of two masked loads (zero outside the row); rows outside the plane
// are zeros, so that every output has its nine products in tap order, as on the zero-padded
// phase rows.
struct S2Taps {
  int64_t H, W, ph, pw;
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28,
                                         30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  __mmask16 cols(int64_t c) const { return row_lanes(c, W); }
  // v[3 r + t] = x[2 p - ph + r][2 (q0 + j) - pw + t] for lanes j
  void get(__m512* v, const float* x, int64_t p, int64_t q0) const {
    const int64_t c0 = 2 * q0 - pw;
    const __mmask16 m0 = cols(c0), m1 = cols(c0 + 16), m2 = cols(c0 + 2), m3 = cols(c0 + 18);
    for (int r = 0; r < 3; ++r) {
      const int64_t h = 2 * p - ph + r;
      if (h < 0 || h >= H) {
        v[3 * r] = v[3 * r + 1] = v[3 * r + 2] = _mm512_setzero_ps();
        continue;
      }
      const float* row = x + h * W + c0;
      const __m512 a = _mm512_maskz_loadu_ps(m0, row), b = _mm512_maskz_loadu_ps(m1, row + 16);
      v[3 * r] = _mm512_permutex2var_ps(a, even, b);
      v[3 * r + 1] = _mm512_permutex2var_ps(a, odd, b);
      v[3 * r + 2] = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(m2, row + 2), even,
                                            _mm512_maskz_loadu_ps(m3, row + 18));
    }
  }
};

namespace {

// ROWS output rows (Q apart in y; y at the first's column q0) of a stride-2 KS x KS (3 or 5)
// depthwise plane from input rows h0 .. h0 + 2 ROWS + KS - 3 (h0 = 2 p0 - ph; rows outside
// [0, H) are padding, whose products, exact zeros, are skipped), NV vectors of 16 columns. Each
// input row is loaded once: vector v's 32 columns from c0 + 32 v (c0 = 2 q0 - pw; masks mA /
// mB, zero outside the row) split into its even (E) and odd (O) columns; tap t is E, O, then
// E and O a lane on, E two lanes on, the lanes past the vector from the next one's (or from
// columns c0 + 32 NV .. + 2 alone, mask mC). The products and their order are those of the
// zero-padded phase rows, so are the values.
template <int KS, int ROWS, int NV>
void s2_block(float* y, int64_t Q, const float* x, int64_t H, int64_t W, int64_t h0, int64_t c0,
              const __m512* wv, float bias, const __mmask16* mA, const __mmask16* mB,
              __mmask16 mC, __mmask16 last) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28,
                                         30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  __m512 acc[ROWS][NV];
  fill_rows(acc, bias);
  #pragma GCC unroll 32
  for (int j = 0; j < 2 * ROWS + KS - 2; ++j) {
    const int64_t h = h0 + j;
    if (h < 0 || h >= H) continue;
    const float* s = x + h * W + c0;
    __m512i e[NV + 1], od[NV + 1];
    #pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      const __m512 a = _mm512_maskz_loadu_ps(mA[v], s + 32 * v);
      const __m512 b = _mm512_maskz_loadu_ps(mB[v], s + 32 * v + 16);
      e[v] = _mm512_castps_si512(_mm512_permutex2var_ps(a, even, b));
      od[v] = _mm512_castps_si512(_mm512_permutex2var_ps(a, odd, b));
    }
    const __m512 c = _mm512_maskz_loadu_ps(mC, s + 32 * NV);  // (KS 3: lane 0 alone)
    e[NV] = KS == 3 ? _mm512_castps_si512(c)
                    : _mm512_castps_si512(_mm512_permutex2var_ps(c, even, c));
    od[NV] = KS == 3 ? e[NV] : _mm512_castps_si512(_mm512_permutex2var_ps(c, odd, c));
    #pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
      __m512 xt[KS];
      xt[0] = _mm512_castsi512_ps(e[v]);
      xt[1] = _mm512_castsi512_ps(od[v]);
      xt[2] = _mm512_castsi512_ps(_mm512_alignr_epi32(e[v + 1], e[v], 1));
      if constexpr (KS == 5) {
        xt[3] = _mm512_castsi512_ps(_mm512_alignr_epi32(od[v + 1], od[v], 1));
        xt[4] = _mm512_castsi512_ps(_mm512_alignr_epi32(e[v + 1], e[v], 2));
      }
      taps_into<ROWS, NV, 2, KS>(acc, j, v, xt, wv);
    }
  }
  store_rows<ROWS, NV>(y, Q, acc, last);
}

// Output rows p0 .. p0 + n - 1 (n <= L) as one block.
template <int KS, int L, int NV>
void s2_rows(int n, int64_t p0, float* y, int64_t Q, const float* x, int64_t H, int64_t W,
             int64_t ph, int64_t c0, const __m512* wv, float bias, const __mmask16* mA,
             const __mmask16* mB, __mmask16 mC, __mmask16 last) {
  if constexpr (L >= 1) {
    if (n < L) {
      s2_rows<KS, L - 1, NV>(n, p0, y, Q, x, H, W, ph, c0, wv, bias, mA, mB, mC, last);
      return;
    }
    s2_block<KS, L, NV>(y + p0 * Q, Q, x, H, W, 2 * p0 - ph, c0, wv, bias, mA, mB, mC, last);
  }
}

// The column block of NV vectors from q0 on (the last one `last`), all rows.
template <int KS, int ROWS, int NV>
void s2_cols(float* y, int64_t P, int64_t Q, const float* x, int64_t H, int64_t W, int64_t ph,
             int64_t pw, const __m512* wv, float bias, int64_t q0, __mmask16 last) {
  const int64_t c0 = 2 * q0 - pw;
  __mmask16 mA[NV], mB[NV];
  for (int v = 0; v < NV; ++v) {
    mA[v] = row_lanes(c0 + 32 * v, W);
    mB[v] = row_lanes(c0 + 32 * v + 16, W);
  }
  const __mmask16 mC = row_lanes(c0 + 32 * NV, W) & (KS == 3 ? 1 : 7);
  for (int64_t p0 = 0; p0 < P; p0 += ROWS)
    s2_rows<KS, ROWS, NV>(static_cast<int>(std::min<int64_t>(ROWS, P - p0)), p0, y + q0, Q, x, H,
                          W, ph, c0, wv, bias, mA, mB, mC, last);
}

// Stride-2 KS x KS planes: column blocks of 2 vectors (1 where 16 columns or fewer are left),
// rows in blocks of 4 (3x3) or 2 (5x5: its 25 weights take most registers; 8 and 4 for one
// vector).
template <int KS>
void s2_planes(float* y, int64_t ystride, int64_t n, int64_t P, int64_t Q, const float* x,
               int64_t xstride, int64_t H, int64_t W, int64_t ph, int64_t pw, const float* w,
               const float* bias) {
  if (Q <= 8) {
    pairs_planes<KS, 2>(y, ystride, n, P, Q, x, xstride, H, W, ph, pw, w, bias);
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    __m512 wv[KS * KS];
    broadcast_taps(wv, w + KS * KS * i);
    float* yi = y + i * ystride;
    const float* xi = x + i * xstride;
    const float b = bias ? bias[i] : 0.f;
    for (int64_t q0 = 0; q0 < Q; q0 += 32) {
      const int64_t m = std::min<int64_t>(32, Q - q0);
      if (m > 16)
        s2_cols<KS, KS == 3 ? 4 : 2, 2>(yi, P, Q, xi, H, W, ph, pw, wv, b, q0, tail_mask(m - 16));
      else
        s2_cols<KS, KS == 3 ? 8 : 4, 1>(yi, P, Q, xi, H, W, ph, pw, wv, b, q0, tail_mask(m));
    }
  }
}

}  // namespace

// KernelTable::conv_dw3s2_plane
void conv_dw3s2_plane_avx512(float* y, int64_t ystride, int64_t n, int64_t P, int64_t Q,
                             const float* x, int64_t xstride, int64_t H, int64_t W, int64_t ph,
                             int64_t pw, const float* w, const float* bias) {
  s2_planes<3>(y, ystride, n, P, Q, x, xstride, H, W, ph, pw, w, bias);
}

// KernelTable::conv_dw5s2_plane
void conv_dw5s2_plane_avx512(float* y, int64_t ystride, int64_t n, int64_t P, int64_t Q,
                             const float* x, int64_t xstride, int64_t H, int64_t W, int64_t ph,
                             int64_t pw, const float* w, const float* bias) {
  s2_planes<5>(y, ystride, n, P, Q, x, xstride, H, W, ph, pw, w, bias);
}

// KernelTable::conv_dw3s2_dots: lanes[16 t + l] += dy[p][q] * tap t's x, rows p in order, then
// 16-column blocks
void conv_dw3s2_dots_avx512(float* lanes, const float* dy, int64_t P, int64_t Q, const float* x,
                            int64_t H, int64_t W, int64_t ph, int64_t pw) {
  const S2Taps taps{H, W, ph, pw};
  __m512 acc[9];
#pragma GCC unroll 9
  for (int t = 0; t < 9; ++t) acc[t] = _mm512_loadu_ps(lanes + 16 * t);
  for (int64_t p = 0; p < P; ++p)
    for (int64_t q0 = 0; q0 < Q; q0 += 16) {
      const __m512 d = _mm512_maskz_loadu_ps(tail_mask(std::min<int64_t>(16, Q - q0)),
                                             dy + p * Q + q0);
      __m512 v[9];
      taps.get(v, x, p, q0);
#pragma GCC unroll 9
      for (int t = 0; t < 9; ++t) acc[t] = _mm512_fmadd_ps(d, v[t], acc[t]);
    }
#pragma GCC unroll 9
  for (int t = 0; t < 9; ++t) _mm512_storeu_ps(lanes + 16 * t, acc[t]);
}

// Stride-2 3x3 depthwise input gradient of whole planes (KernelTable::conv_dw3s2_dx): each dx
// row from the one or two dy rows its kernel rows reach, 16 columns a vector: with q0 = w0 / 2,
// lane j of the dy values expanded as D[q0 + j / 2] (A) and D[q0 + (j + 1) / 2] (B) or
// D[q0 + j / 2 - 1] (G), a column's taps are A and B (pw 1: t = 1 even, t = 0, 2 odd) or A and
// G (pw 0: t = 0, 2 even, t = 1 odd), added in tap order, zero past the row's ends.
namespace {

// NG groups of 32 columns of one dx row from c0 = 32 g0 on: the 16 even and 16 odd columns
// summed apart over the dy rows (src[k], kernel row rr[k]) from dy columns j0 = 16 g0 .. and
// their neighbours (j0 + 1 at PW 1, j0 - 1 at PW 0), then interleaved. Per lane, the products
// and their order are conv_dw3s2_dx's. mk[3 g + i]: the lanes of group g's loads at j0, j0 + 1,
// j0 - 1 that lie in the dy row; ms[2 g + h]: its output half h's lanes inside the dx row.
template <int NG, int PW, int NR>
void s2_dx_groups(float* o, int64_t g0, const float* const* src, const int* rr,
                  const float* wi, const __mmask16* mk, const __mmask16* ms) {
  __m512 ev[NG], od[NG];
  #pragma GCC unroll 4
  for (int g = 0; g < NG; ++g) ev[g] = od[g] = _mm512_setzero_ps();
  #pragma GCC unroll 2
  for (int k = 0; k < NR; ++k) {
    const float* w3 = wi + 3 * rr[k];
    const __m512 w0 = _mm512_set1_ps(w3[0]), w1 = _mm512_set1_ps(w3[1]),
                 w2 = _mm512_set1_ps(w3[2]);
    #pragma GCC unroll 4
    for (int g = 0; g < NG; ++g) {
      const __mmask16* m = mk + 3 * (g0 + g);
      const float* d = src[k] + 16 * (g0 + g);
      const __m512 dj = _mm512_maskz_loadu_ps(m[0], d);
      if constexpr (PW == 1) {  // even 2j: w1 D[j]; odd 2j + 1: w0 D[j + 1], then w2 D[j]
        ev[g] = _mm512_fmadd_ps(dj, w1, ev[g]);
        od[g] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m[1], d + 1), w0, od[g]);
        od[g] = _mm512_fmadd_ps(dj, w2, od[g]);
      } else {  // even 2j: w0 D[j], then w2 D[j - 1]; odd 2j + 1: w1 D[j]
        ev[g] = _mm512_fmadd_ps(dj, w0, ev[g]);
        ev[g] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m[2], d - 1), w2, ev[g]);
        od[g] = _mm512_fmadd_ps(dj, w1, od[g]);
      }
    }
  }
  const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
  #pragma GCC unroll 4
  for (int g = 0; g < NG; ++g) {
    float* out = o + 32 * (g0 + g);
    _mm512_mask_storeu_ps(out, ms[2 * (g0 + g)], _mm512_permutex2var_ps(ev[g], lo, od[g]));
    _mm512_mask_storeu_ps(out + 16, ms[2 * (g0 + g) + 1],
                          _mm512_permutex2var_ps(ev[g], hi, od[g]));
  }
}

// A dx row of ng groups from NR dy rows.
template <int PW, int NR>
void s2_dx_row(float* o, int64_t ng, const float* const* src, const int* rr, const float* wi,
               const __mmask16* mk, const __mmask16* ms) {
  int64_t g = 0;
  for (; ng - g > 4; g += 4) s2_dx_groups<4, PW, NR>(o, g, src, rr, wi, mk, ms);
  switch (ng - g) {
    case 4: s2_dx_groups<4, PW, NR>(o, g, src, rr, wi, mk, ms); break;
    case 3: s2_dx_groups<3, PW, NR>(o, g, src, rr, wi, mk, ms); break;
    case 2: s2_dx_groups<2, PW, NR>(o, g, src, rr, wi, mk, ms); break;
    default: s2_dx_groups<1, PW, NR>(o, g, src, rr, wi, mk, ms); break;
  }
}

template <int PW>
void s2_dx_planes(float* dx, int64_t dxstride, int64_t n, int64_t H, int64_t W, const float* dy,
                  int64_t dystride, int64_t P, int64_t Q, int64_t ph, const float* w) {
  const int64_t ng = (W + 31) / 32;
  thread_local std::vector<__mmask16> masks;  // (no allocation per call once grown)
  masks.resize(static_cast<size_t>(5 * ng));
  __mmask16 *mk = masks.data(), *ms = mk + 3 * ng;
  for (int64_t g = 0; g < ng; ++g) {
    for (int i = 0; i < 3; ++i) mk[3 * g + i] = row_lanes(16 * g + (i == 2 ? -1 : i), Q);
    ms[2 * g] = row_lanes(32 * g, W);
    ms[2 * g + 1] = row_lanes(32 * g + 16, W);
  }
  for (int64_t i = 0; i < n; ++i) {
    const float* wi = w + 9 * i;
    for (int64_t h = 0; h < H; ++h) {
      const float* src[2];
      int rr[2];
      const int nr = dw3s2_dx_rows(src, rr, dy + i * dystride, h, ph, P, Q);
      float* o = dx + i * dxstride + h * W;
      if (nr == 2) s2_dx_row<PW, 2>(o, ng, src, rr, wi, mk, ms);
      else if (nr == 1) s2_dx_row<PW, 1>(o, ng, src, rr, wi, mk, ms);
      else s2_dx_row<PW, 0>(o, ng, src, rr, wi, mk, ms);
    }
  }
}

}  // namespace

void conv_dw3s2_dx_avx512(float* dx, int64_t dxstride, int64_t n, int64_t H, int64_t W,
                          const float* dy, int64_t dystride, int64_t P, int64_t Q, int64_t ph,
                          int64_t pw, const float* w) {
  if (pw == 1) s2_dx_planes<1>(dx, dxstride, n, H, W, dy, dystride, P, Q, ph, w);
  else s2_dx_planes<0>(dx, dxstride, n, H, W, dy, dystride, P, Q, ph, w);
}

}  // namespace avx512
}  // namespace convkit
