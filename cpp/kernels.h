// The kernel table: one set of single-threaded inner loops per ISA, picked once at start-up
// (dispatch.cpp). Front-ends in cpp/ops/ split work over threads and call through this table.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "convkit/convkit.h"

namespace convkit {

// Adaptive pooling's windows: window i of an axis of n inputs and m outputs spans
// [adaptive_start(i, n, m), adaptive_end(i, n, m)) = [floor(i*n/m), ceil((i+1)*n/m)), as
// PyTorch.
inline int64_t adaptive_start(int64_t i, int64_t n, int64_t m) { return i * n / m; }
inline int64_t adaptive_end(int64_t i, int64_t n, int64_t m) {
  return ((i + 1) * n + m - 1) / m;
}

// Work floats of KernelTable::maxpool_argmax_plane (row winners and their positions, one input
// row split by column phase with its positions) and of KernelTable::avgpool_bwd_plane (the rows'
// sums split by column phase, one output row of dy / divisor).
inline int64_t maxpool_argmax_floats(const Pool2dShape& s) {
  const int64_t Wk = s.Q + ((s.S - 1) * s.dw) / s.sw + 1;  // per phase of a padded row
  return 2 * s.H * s.Q + 2 * s.sw * Wk;
}
inline int64_t avgpool_bwd_floats(const Pool2dShape& s) {
  const int64_t Wk = s.Q + (s.S - 1) / s.sw + 1;
  return s.H * s.sw * Wk + s.Q;
}

// Micro-kernel of the GEMM: the top-left mr x nr corner (mr <= MR, nr <= NR) of
//   C (leading dimension ldc) = init + Apanel * Bpanel
// where Apanel is kc x MR (MR values per k) and Bpanel is kc x NR (NR values per k), both packed
// and zero-padded. init is C itself when `accumulate`, else bias[i] on row i when bias is given,
// else zero. Rows >= mr and columns >= nr of C are neither read nor written.
using GemmUkernel = void (*)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                             int mr, int nr, bool accumulate, const float* bias);

// The same, but B row k is read in place from b + boff[k] (NR consecutive floats, of which only
// the first nr are touched): convolution reads its implicit im2col rows straight from the image.
using GemmDirectUkernel = void (*)(int64_t kc, const float* a, const float* b,
                                   const int64_t* boff, float* c, int64_t ldc, int mr, int nr,
                                   bool accumulate, const float* bias);

// Operands of KernelTable::conv_dw_tile: dy(n, kk, p, q) = dy[n*dy_ns + kk*dy_ks + p*dy_rs + q],
// x(n, tt, p, q) = x[n*x_ns + xoff[tt] + p*x_rs + q] (a row of taps (c, r, t) of the weight).
struct DwTileArgs {
  const float* dy;
  int64_t dy_ns, dy_ks, dy_rs;
  const float* x;
  int64_t x_ns, x_rs;
  const int64_t* xoff;
  int64_t N, P, Q;
};

// Shape of KernelTable::conv_dx_rows: dy (K, P, Q) of a stride-1 convolution with an R x S
// kernel and padding (ph, pw), input rows W wide.
struct DxRowsArgs {
  int64_t K, R, S, P, Q, W, ph, pw;
};

// Shape of KernelTable::col2im_plane: input (H, W), output (P, Q), kernel (R, S), padding and
// stride.
struct Col2imArgs {
  int64_t H, W, P, Q, R, S, ph, pw, sh, sw;
};

// An evaluation-mode batch norm as a convolution's epilogue (conv2d_bn_forward): per output
// channel k, y = ((y - mh[k]) - ml[k]) * alpha[k] + beta[k] (KernelTable::bn_affine, the mean as
// two floats), then y += add (the same (N, K, P, Q) positions; null: none), then max(y, 0) when
// relu.
struct BnTerms {
  const float *mh, *ml, *alpha, *beta;
  const float* add;
  bool relu;
};

// batch_norm_forward's terms for mean and var (C each): mh, ml, alpha, beta, C floats each.
std::vector<float> bn_eval_terms(const double* mean, const double* var, const float* weight,
                                 const float* bias, double eps, int64_t C);
BnTerms bn_terms_view(const std::vector<float>& t, int64_t C, const float* add, bool relu);
// y (N, C, L) = t applied to x (x may be y): batch_norm_forward's pass over memory.
void bn_terms_pass(float* y, const float* x, int64_t N, int64_t C, int64_t L, const BnTerms& t);
// Whether an epilogue with bn_affine's arithmetic gives bn_terms_pass's bits on planes of L
// positions (bn_terms_pass applies bn_affine to each plane from kBnPosL positions on).
bool bn_terms_by_block(int64_t L);

// Operands of KernelTable::wino_lanes_item, a stride-1 r x r convolution (r = 3 or 5): x (N, C,
// H, W) and y (N, K, P, Q) whole; u the transformed weights in blocks of 8 output channels,
//   u[((e * Kp + k / 8 * 8) * C + c * 8) + k % 8] = (G g_kc G^T)[e]   for e < (r + 1)^2
// (zero for k >= K, Kp a multiple of 8); bias K values or null; buf at least
// wino_lanes_buf_floats(...) floats.
struct WinoLanesArgs {
  const float* x;
  float* y;
  int64_t N, C, H, W, K, P, Q, ph, pw;
  const float* u;
  int64_t Kp;
  const float* bias;
  float* buf;
  int r;
  const BnTerms* bn = nullptr;  // an evaluation-mode batch norm applied to each item's outputs
};

// Floats of WinoLanesArgs::buf for an item of `tr` tile rows: 16 lanes each of the input rows,
// the column-transformed rows, one transformed tile, its products for 8 output channels, and
// the item's outputs.
inline int64_t wino_lanes_buf_floats(const WinoLanesArgs& a, int64_t tr) {
  const int64_t A = a.r + 1, Wt = a.Q + a.Q % 2 + a.r - 1, rows = 2 * tr + a.r - 1;
  return 16 * (a.C * rows * Wt + a.C * A * Wt + A * A * a.C + A * A * 8 + a.K * 2 * tr * a.Q);
}

// Operands of KernelTable::wino_lanes_dw_item: the weight gradient of a stride-1 3x3
// convolution, x (N, C, H, W) and dy (N, K, P, Q) whole, C and K multiples of 4; du the item's
// 16 K C sums (e, k, c); buf at least wino_lanes_dw_buf_floats(...) floats.
struct WinoLanesDwArgs {
  const float* x;
  const float* dy;
  int64_t N, C, H, W, K, P, Q, ph, pw;
  float* du;
  float* buf;
};

// Tile rows an item of wino_lanes_dw_item transforms at a time: enough for 4 tiles. Its sums
// stay in registers over the band's tiles, so a small band costs little and keeps the
// transformed tiles in cache (2 threads, (128, 64, 64, 7, 7) 1.9 ms with 4 tiles, 2.1 with 16).
inline int64_t wino_lanes_dw_band(const WinoLanesDwArgs& a) {
  const int64_t TX = (a.Q + 1) / 2;
  return (4 + TX - 1) / TX;
}

// Floats of WinoLanesDwArgs::buf: 16 lanes each of the band's input rows, their column
// transforms and dy rows, the band's transformed tiles (input and dy).
inline int64_t wino_lanes_dw_buf_floats(const WinoLanesDwArgs& a) {
  const int64_t TX = (a.Q + 1) / 2, Wt = 2 * TX + 2, tb = wino_lanes_dw_band(a);
  return 16 * (a.C * (2 * tb + 2) * Wt + a.C * 4 * Wt + a.K * 2 * tb * 2 * TX +
               16 * (tb * TX * (a.C + a.K) + 2));
}

// The dy rows that dx row h of a 3x3 stride-2 depthwise layer reads (KernelTable::conv_dw3s2_dx):
// kernel rows r with h + ph - r = 2 p, 0 <= p < P, in order; their rows of dy (P, Q) in src,
// r in rr. Returns how many (at most 2).
inline int dw3s2_dx_rows(const float** src, int* rr, const float* dy, int64_t h, int64_t ph,
                         int64_t P, int64_t Q) {
  int nr = 0;
  for (int r = 0; r < 3; ++r) {
    const int64_t hp = h + ph - r;
    if (hp >= 0 && hp % 2 == 0 && hp / 2 < P) {
      src[nr] = dy + hp / 2 * Q;
      rr[nr++] = r;
    }
  }
  return nr;
}

// Operands of KernelTable::conv_dx_lanes: the input gradient dx (N, C, H, W) of a stride-1
// convolution with weights w (K, C, R, S), output gradient dy (N, K, P, Q), padding (ph, pw);
// buf at least dx_lanes_buf_floats(...) floats.
struct DxLanesArgs {
  const float* w;
  const float* dy;
  int64_t N, C, H, W, K, R, S, P, Q, ph, pw;
  float* dx;
  float* buf;
};

inline int64_t dx_lanes_buf_floats(const DxLanesArgs& a) {
  return 16 * (a.K * a.P * (a.Q + 2) + a.C * a.H * a.W);
}

// conv_kvec_blocks' modes (bits)
constexpr int kKvecSuspend = 1, kKvecResume = 2;
// Which of a conv_kvec_blocks tile's positions a tap multiplies with padding (zeros), so that it
// can skip those products: tap k (of the run passed) has class cls[(rt0 + k) % rs] (rs: the
// kernel's R * S taps a channel, the class depending on (r, t) only): kTapAll (every
// position), kTapNone (the row is padding), kTapNotFirst, kTapNotLast, kTapNotEnds (all but
// position 0, nq - 1, or both; in a tile narrower than the kernel's register tile, "last"
// skips the unused last lane instead, and the zero products of nq - 1 are done).
// Skipping a zero product leaves the sum's bits as they were (finite weights: kvec declines on
// others), so a tile gives the same bits with the classes or without them.
enum : uint8_t { kTapAll, kTapNone, kTapNotFirst, kTapNotLast, kTapNotEnds };
struct KvecTaps {
  const uint8_t* cls;
  int rs, rt0;
};

struct KernelTable {
  const char* name;
  int lanes;  // floats per vector register: 16 (AVX-512), 8 (AVX2), 4 (SSE)
  int mr, nr;
  // Longest reduction the direct forward runs in one pass over a tile; longer ones go in
  // gemm_kc passes, each resuming the tile's sums (the same bits). One pass saves the reloads of
  // the tile; short passes keep its B rows in L1.
  int64_t direct_kc = 2048;
  // AVX-512 multiply-adds at full width, two a cycle (AMD Zen 5, family 0x1A; Zen 4 splits
  // them in halves): the direct paths run twice as fast per cycle, the Winograd rows' transforms
  // and moves do not, so the planner gives those rows fewer layers (winograd_lanes_pays,
  // winograd3_s2)
  bool wide_fma = false;
  GemmUkernel gemm;
  GemmDirectUkernel gemm_direct;
  // gemm_direct over the whole reduction (never accumulating), for a tile of a "wide" grid:
  // column jj < nr is grid position j = j0 + jj = p * Wq + q, stored at c[i * ldc + p * Q + q]
  // when q < Q and dropped otherwise. Null where the ISA has none.
  void (*gemm_direct_wide)(int64_t kc, const float* a, const float* b, const int64_t* boff,
                           float* c, int64_t ldc, int mr, int nr, const float* bias, int64_t j0,
                           int64_t Wq, int64_t Q);
  // activations: y = f(x), dx = dy * f'(x); `kind` is convkit::Act as int
  void (*act_fwd)(int kind, float param, float* y, const float* x, int64_t n);
  void (*act_bwd)(int kind, float param, float* dx, const float* dy, const float* x, int64_t n);
  // SGD on n values (convkit.h: sgd_update); the same bits on every ISA
  void (*sgd)(float* p, const float* grad, float* buf, int64_t n, const SgdArgs& a);
  // y[i] = exp(x[i] - shift); returns the sum of y in a fixed order
  double (*exp_shift_sum)(float* y, const float* x, float shift, int64_t n);
  // the largest of n floats, NaN skipped (-inf when there is none)
  float (*row_max)(const float* x, int64_t n);
  // whether none of n floats is NaN or infinite
  bool (*all_finite)(const float* x, int64_t n);
  // softmax / log_softmax of one contiguous row, and its gradient (softmax.cpp; tmp: L floats)
  void (*softmax_row)(float* y, const float* x, int64_t L, bool log);
  void (*softmax_row_bwd)(float* dx, const float* dy, const float* x, float* tmp, int64_t L,
                          bool log);
  // the same down softmax_col_lanes columns of an (L, ld) slab at once (tmp: L vectors for the
  // forward, 2 L for the gradient)
  void (*softmax_cols)(float* y, const float* x, float* tmp, int64_t L, int64_t ld, bool log);
  void (*softmax_cols_bwd)(float* dx, const float* dy, const float* x, float* tmp, int64_t L,
                           int64_t ld, bool log);
  // their gradients from the output y instead of x (nn.Softmax / nn.LogSoftmax)
  void (*softmax_row_bwd_out)(float* dx, const float* dy, const float* y, int64_t L, bool log);
  void (*softmax_cols_bwd_out)(float* dx, const float* dy, const float* y, int64_t L, int64_t ld,
                               bool log);
  int softmax_col_lanes;
  // sum over n of max(x, 0) - x t + log1p(exp(-|x|)) (binary cross-entropy with logits)
  double (*bce_logits_sum)(const float* x, const float* t, int64_t n);
  // sum of the n floats of each of `planes` planes (stride apart): per plane 16 running float
  // sums of g[16 j + l] (l < 16), added into 16 double sums; in double the tails past each
  // plane's last whole 16, in order; then the 16 double sums in lane order. The same bits on
  // every ISA.
  double (*plane_sums)(const float* g, int64_t planes, int64_t stride, int64_t n);
  // Convolution tile with the output channels in the vector lanes (for images too narrow for
  // lanes along a row): for rr < 2 rows, i < nq positions, kk < nk <= 16 channels,
  //   out[kk * ldo + rr * ldr + i] = bias[kk] (or 0) +
  //       sum_{k < crs} w[k * 16 + kk] * x[rr * Wp + i * xstep + off[k]]
  // (Wp: the input rows' step between the two output rows; xstep: the stride along a row). x
  // must be readable for 16 positions (of xstep) past each row start. Null where the ISA has no
  // such kernel.
  void (*conv_kvec)(float* out, int64_t ldo, int64_t ldr, const float* x, int64_t Wp,
                    int64_t xstep, const int64_t* off, int64_t crs, const float* w,
                    const float* bias, int nq, int nk, bool two_rows);
  // conv_kvec for nb (2, 3 or 4) blocks of 16 output channels at once, one row, position i
  // reading x + i * xstep (xstep: the stride): each broadcast input value serves nb weight
  // vectors (the one-block tile spends a load per multiply). Block b's weights at
  // w + b * wstride, its channels at out + b * 16 * ldo, its bias at bias + 16b; nk (<= 16 * nb)
  // channels are stored, nq <= 7 (nb = 3 or 4) or 14 (nb = 2) positions. The same sums
  // in the same order as conv_kvec. Null where the ISA has none.
  // A long sum may go in runs of taps (the tile's weights of a run staying in L2): mode
  // kKvecSuspend keeps the tile's running sums in part (448 floats) instead of storing
  // them, kKvecResume starts from them instead of the bias. Same bits as one run. taps (or
  // null: every tap multiplies every position) says which products read padding.
  void (*conv_kvec_blocks)(float* out, int64_t ldo, const float* x, int64_t xstep,
                           const int64_t* off, int64_t crs, const float* w, int64_t wstride,
                           const float* bias, int nq, int nk, int nb, float* part, int mode,
                           const KvecTaps* taps);
  // Rows to 16 lanes: dst[k * 16 + i] = src[i * ld + k] for k < n, i < 16 (0 for i >= rows).
  void (*rows_to_lanes16)(float* dst, const float* src, int64_t ld, int rows, int64_t n);
  // col2im of one input channel, all of it: for h < H, w < W,
  //   dx[h * W + w] = sum over r < R, t < S with h + ph - r = p * sh, w + pw - t = q * sw,
  //                   0 <= p < P, 0 <= q < Q, of g[(r * S + t) * ld + p * Q + q]
  // (dx written, not added to: each row's taps are summed in registers and stored once).
  void (*col2im_plane)(float* dx, const float* g, int64_t ld, const Col2imArgs& a);
  // A tile of the weight gradient of a convolution as dot products over output positions:
  //   out[kk * ldo + tt] = sum over n < N, p < P, q < Q of dy(n, kk, p, q) * x(n, tt, p, q)
  // for kk < kt (<= 24) and tt < tg (<= 7), element addresses as in DwTileArgs; the sum runs in
  // a fixed order. Null where the ISA has no such kernel (the packed GEMM path is used instead).
  void (*conv_dw_tile)(float* out, int64_t ldo, const DwTileArgs& a, int kt, int tg);
  // The (kt, tg) tile shapes conv_dw_tile keeps in registers, for its caller to choose from
  // (dw_tile_nshapes of them).
  const int (*dw_tile_shapes)[2];
  int dw_tile_nshapes;
  // Weight-gradient tile with 16 output channels in the vector lanes, for outputs too narrow
  // for lanes along a row: for kk < nk (<= 16), i < nt (<= 28) taps,
  //   out[kk * ldo + i] = sum over n < N, p < P, q < Q of
  //       dyT[((n * P + p) * Q + q) * 16 + kk] * x[n * x_ns + off[i] + p * x_rs + q * x_cs]
  // (dyT: dy with the channels last; x_cs: the column stride). The taps come in runs of S
  // (<= 7) consecutive offsets (off[g * S + t] = off[g * S] + t: the columns of a kernel row).
  // The sum runs in a fixed order. Null where the ISA has no such kernel.
  void (*conv_dw_kvec)(float* out, int64_t ldo, const float* dyT, const float* x, int64_t x_ns,
                       int64_t x_rs, int64_t x_cs, const int64_t* off, int S, int nt, int nk,
                       int64_t N, int64_t P, int64_t Q);
  // Input gradient of a stride-1 convolution for one input channel, rows h0 .. h0 + nh - 1
  // (nh <= 4), positions in the vector lanes: for hh < nh, w < W,
  //   dx[hh * W + w] = sum over k < K, r < R, t < S (<= 16) of
  //                    wt[(k * R + r) * S + t] * dy[k * P * Q + (h0 + hh + ph - r) * Q + w + pw - t]
  // with dy terms outside [0, P) x [0, Q) taken as zero; the sum runs in a fixed order. For
  // inputs with too few channels to fill the GEMM tiles. Null where the ISA has no such kernel.
  void (*conv_dx_rows)(float* dx, const float* dy, const float* wt, int64_t h0, int nh,
                       const DxRowsArgs& a);
  // Winograd F(2x2, 3x3) transforms of one row of tiles: vectorised on AVX-512 and AVX2, plain
  // loops (portable.inc) elsewhere; wino_plain says which, since the plain ones pay on fewer
  // shapes.
  // Input: r[i] (i < 4) are zero-padded input rows, tile
  // tx reading columns 2tx .. 2tx + 3 (rows readable up to column 2 * ntiles + 32); for
  // e = 4 * xi + nu < 16 and tx < ntiles, v[e * vstride + tx] = (B^T d B)[xi][nu] with
  // d[i][j] = r[i][2tx + j].
  void (*wino_in_row)(float* v, int64_t vstride, const float* const* r, int64_t ntiles);
  bool wino_plain;
  // Output: Y = A^T m A + bias from m[e * mstride + tx] (e < 16); y0[2tx + j] = Y[0][j] and
  // y1[2tx + j] = Y[1][j] (y1 may be null) for the columns 2tx + j < Q. Returns false if any
  // value stored is NaN or infinite.
  bool (*wino_out_row)(float* y0, float* y1, const float* m, int64_t mstride, int64_t ntiles,
                       int64_t Q, float bias);
  // Winograd F(2x2, r x r) of a stride-1 r x r convolution (r = a.r, 3 or 5) for images
  // n0 .. n0 + 15 (those < N), one image per vector lane, output rows 2 * ty0 .. 2 * ty1 - 1
  // (those < P): each 2x2 block of outputs is A^T [sum_c (G g G^T) . (B^T d B)] A + bias over
  // the (r + 1) x (r + 1) input patch d (zero outside the image); interpolation points 0, 1, -1,
  // infinity for r = 3, and 1/2, -2 too for r = 5 (kernels/winograd_1d.inc). Returns false if
  // any output stored is NaN or infinite. Null where the ISA has none.
  bool (*wino_lanes_item)(const WinoLanesArgs& a, int64_t n0, int64_t ty0, int64_t ty1);
  // Weight gradient the same way (F(2x2, 3x3), one image per lane): for images n0 .. n0 + 15
  // (those < N) and tile rows ty0 .. ty1 - 1, a.du[(e * K + k) * C + c] = the sum over their
  // tiles of (A dY A^T)[e] (B^T d B)[e], dY the tile's 2x2 block of dy[k] (zero past P and Q)
  // and d its 4x4 input patch of x[c]; per image (lane), then the 16 lanes added in a fixed
  // order. Null where the ISA has none.
  void (*wino_lanes_dw_item)(const WinoLanesDwArgs& a, int64_t n0, int64_t ty0, int64_t ty1);
  // Input gradient of a stride-1 convolution for images n0 .. n0 + 15 (those < N), one image
  // per vector lane, written to a.dx for those images; sums run in a fixed order. Null where
  // the ISA has none.
  void (*conv_dx_lanes)(const DxLanesArgs& a, int64_t n0);
  // Stride-2 3x3 Winograd-style transforms (plain loops in portable.inc, vectorised on
  // AVX-512 and AVX2; the same bits on every ISA). Along each axis a
  // tile's two outputs come from five padded inputs d0 .. d4 (outputs 2t, 2t + 1 read inputs
  // 4t .. 4t + 4) through five items: A0 = d0 - d2 and A1 = d1 (pattern A, output 0 only),
  // B0 = d2 (pattern B, both outputs), C0 = d4 - d2 and C1 = d3 (pattern C, output 1 only).
  // Input: r[i] (i < 5) are image rows W wide, or null for rows of zeros; padded column jj is
  // r[i][jj - pw], zero outside [0, W). For item pairs (ri, ci) < 5 x 5 and tx < ntiles,
  // v[ri * 5 + ci][tx] = item ri down the rows of item ci along the columns of the patch
  // (padded columns 4tx .. 4tx + 4 of the five rows).
  void (*wino_s2_in_row)(float* const* v, const float* const* r, int64_t ntiles, int64_t pw,
                         int64_t W);
  // Output: from m[e * mstride + tx], e = 3 * pattern_row + pattern_col (patterns A, B, C),
  // Y = A^T m A + bias with A^T = (1 1 0; 0 1 1); y0[2tx + j] = Y[0][j], y1[2tx + j] = Y[1][j]
  // (y1 may be null) for columns < Q. Returns false if any value stored is NaN or infinite.
  bool (*wino_s2_out_row)(float* y0, float* y1, const float* m, int64_t mstride,
                          int64_t ntiles, int64_t Q, float bias);
  // Winograd F(2, 2) along each axis, the transforms of stride-2 4x4 layers (winograd4_s2.cpp),
  // for nrows rows of n tiles (the same bits on every ISA). Input: for j < nrows, t < n and
  // e = 3 pr + pc, v[j * vrow + e * vs + t] = (B^T d B)[pr][pc], B^T = (1 -1 0; 0 1 0; 0 -1 1),
  // of the 3x3 inputs d(ri, ci) = r[j * rrow + ri * rs + col[ci] + t].
  void (*wino22_in_rows)(float* v, int64_t vs, int64_t vrow, const float* r, int64_t rs,
                         int64_t rrow, const int64_t* col, int64_t n, int64_t nrows);
  // Output gradient: y[j * yrow + e * ys + t] = (A D A^T)[pr][pc], A = (1 0; 1 1; 0 1), of the
  // 2x2 blocks D = (r0[t], r0[rs + t]; r0[2 rs + t], r0[3 rs + t]), r0 = r + j * rrow.
  void (*wino22_grad_rows)(float* y, int64_t ys, int64_t yrow, const float* r, int64_t rs,
                           int64_t rrow, int64_t n, int64_t nrows);
  // dst[k * ds + i] = src[i * ss + k] for i < m, k < n: blocks transposed in registers (4 x 4 in
  // SSE on every ISA, 8 x 8 at AVX-512), what packs a row-major A or column-major B panel.
  void (*transpose)(float* dst, int64_t ds, const float* src, int64_t ss, int64_t m, int64_t n);
  // Rows of a col^T panel NR wide (conv::pack_colT; NR a multiple of 16): for i < cnt (<= 16),
  //   dst[i * NR + jj] = base[jj][o + i * sw] for jj < nr, 0 for nr <= jj < NR.
  // Null where the ISA has none (the portable loop, a value at a time).
  void (*colT_rows16)(float* dst, int NR, const float* const* base, int nr, int64_t o,
                      int64_t sw, int cnt);
  // Splits rows into their sw column phases, zero-padded: for i < nrows, f < sw, j < Wq,
  //   dst[i * dstep + f * fstride + j] = src[i * sstep + j * sw + f - pw] if that column is
  //   inside [0, W), else 0. src null: all-zero rows. With sw = 1 it copies rows, padding them
  //   with pw zeros on the left and zeros up to Wq on the right.
  void (*phase_split_rows)(float* dst, int64_t dstep, int64_t fstride, const float* src,
                           int64_t sstep, int64_t nrows, int64_t W, int64_t pw, int64_t sw,
                           int64_t Wq);
  // Output rows of a convolution whose taps read consecutive floats (the "depthwise" paths:
  // zero-padded, phase-split input rows): for i < nrows, q < Q,
  //   y[i * ystep + q] = bias + sum over t < ntaps, in that order, of
  //                      w[t] * base[i * bstep + off[t] + q].
  void (*conv_rows)(float* y, int64_t ystep, int64_t nrows, int64_t Q, const float* base,
                    int64_t bstep, const int64_t* off, const float* w, int64_t ntaps, float bias);
  // conv_rows for nk (<= 4) output channels that read the same input rows (a group of a grouped
  // convolution), each input load shared by them: output channel j's rows at y + j * kstep, its
  // weights at w + j * ntaps, its bias bias[j] (0 when bias is null).
  void (*conv_rows_k)(float* y, int64_t ystep, int64_t kstep, int nk, int64_t nrows, int64_t Q,
                      const float* base, int64_t bstep, const int64_t* off, const float* w,
                      int64_t ntaps, const float* bias);
  // conv_rows of whole planes for the stride-1, undilated ks x ks case (ks 3 or 5), read from x
  // in place: for planes i < n, y_i (P, Q) at y + i * ystride = bias[i] (0 when bias is null) +
  // the taps (r, t) in order of w_i[ks r + t] * x_i[p - ph + r][q - pw + t], with
  // w_i = w + ks^2 i and x_i (H, W) at x + i * xstride, zero outside the plane; zeros: Q + ks - 1
  // zero floats (the rows outside it). Same values as conv_rows on the padded rows (a kernel may
  // skip the products of padding rows, exact zeros, whose only trace would be the sign of a zero
  // sum). Null where the ISA has none (the caller pads and runs conv_rows).
  void (*conv_dw_plane)(int ks, float* y, int64_t ystride, int64_t n, int64_t P, int64_t Q,
                        const float* x, int64_t xstride, int64_t H, int64_t W, int64_t ph,
                        int64_t pw, const float* w, const float* bias, const float* zeros);
  // conv_row_dots of one whole plane for the same case, x read in place: for the taps
  // i = 3 r + t, lanes[16 i + l] += dy[p][q] * x[p - ph + r][q - pw + t] over the rows p in
  // order, then q in order with q % 16 == l (x zero outside the plane). zeros: Q + 2 zero
  // floats. Same bits as conv_row_dots on the padded rows; null where the ISA has none.
  // The forward of a 3x3 depthwise layer at stride 2, padding 0 or 1 each way, whole planes,
  // x read in place: for planes i < n, y_i (P, Q) at y + i * ystride = bias[i] (0 when bias is
  // null) + the taps (r, t) in order of w_i[3 r + t] * x_i[2 p - ph + r][2 q - pw + t], w_i =
  // w + 9 i, x_i (H, W) at x + i * xstride, zero outside it. Same values as conv_rows on the
  // zero-padded phase rows (padding rows' products may be skipped, as above); null where the
  // ISA has none.
  void (*conv_dw3s2_plane)(float* y, int64_t ystride, int64_t n, int64_t P, int64_t Q,
                           const float* x, int64_t xstride, int64_t H, int64_t W, int64_t ph,
                           int64_t pw, const float* w, const float* bias);
  // The same for 5x5 taps, padding 0 to 2 each way (w_i = w + 25 i, taps (r, t) in order of
  // w_i[5 r + t] * x_i[2 p - ph + r][2 q - pw + t]); null where the ISA has none.
  void (*conv_dw5s2_plane)(float* y, int64_t ystride, int64_t n, int64_t P, int64_t Q,
                           const float* x, int64_t xstride, int64_t H, int64_t W, int64_t ph,
                           int64_t pw, const float* w, const float* bias);
  // Its weight gradient's dot products, x read in place: for the taps t = 3 r + t',
  // lanes[16 t + l] += dy[p][q] * x[2 p - ph + r][2 q - pw + t'] over the rows p in order, then
  // q in order with q % 16 == l (x zero outside (H, W)). Same bits as conv_row_dots on the
  // zero-padded phase rows; null where the ISA has none.
  void (*conv_dw3s2_dots)(float* lanes, const float* dy, int64_t P, int64_t Q, const float* x,
                          int64_t H, int64_t W, int64_t ph, int64_t pw);
  // The input gradient of a 3x3 depthwise layer at stride 2, padding 0 or 1 each way, whole
  // planes: for planes i < n, dx_i (H, W) at dx + i * dxstride = the taps (r, t) in order (rows
  // r that reach dy_i, then every t of the column's phase) of w_i[3 r + t] * dy_i[p][q] with
  // h + ph = 2 p + r, w + pw = 2 q + t, w_i = w + 9 i, dy_i (P, Q) at dy + i * dystride and zero
  // outside it. Same bits as conv_rows over depthwise's phase rows; null where the ISA has none.
  void (*conv_dw3s2_dx)(float* dx, int64_t dxstride, int64_t n, int64_t H, int64_t W,
                        const float* dy, int64_t dystride, int64_t P, int64_t Q, int64_t ph,
                        int64_t pw, const float* w);
  void (*conv_dw3_dots)(float* lanes, const float* dy, int64_t P, int64_t Q, const float* x,
                        int64_t H, int64_t W, int64_t ph, int64_t pw, const float* zeros);
  // The inverse of phase_split_rows for one row: for k < n, with v = first + k,
  //   dst[k] = src[(v % sw) * fstride + v / sw].
  void (*phase_merge_row)(float* dst, const float* src, int64_t fstride, int64_t sw,
                          int64_t first, int64_t n);
  // Dot products of dy rows with the tap rows, in 16 lanes: for i < ntaps, l < 16, rows p in
  // order, then q < Q in order with q % 16 == l,
  //   lanes[i * 16 + l] += dy[p * dystep + q] * base[p * bstep + off[i] + q].
  void (*conv_row_dots)(float* lanes, const float* dy, int64_t dystep, int64_t nrows, int64_t Q,
                        const float* base, int64_t bstep, const int64_t* off, int64_t ntaps);
  // max-pool / avg-pool of one (H, W) plane (s.N and s.C unused); avg divides by
  // avg_pool2d_divisor
  void (*maxpool_plane)(float* y, const float* x, const Pool2dShape& s);
  // max-pool backward of one plane for 2x2 windows, stride 2, no padding (writes all of dx)
  void (*maxpool2x2_bwd_plane)(float* dx, const float* dy, const float* x, int64_t H, int64_t W,
                               int64_t P, int64_t Q);
  // a stride-1 convolution's weight gradient through a 2x2 / stride-2 max pool, one image
  // (conv2d_weight_grad_maxpool2x2; see portable.inc)
  void (*dw_maxpool2x2_image)(float* acc, double* db, const float* g, const float* y,
                              const float* xp, int64_t K, int64_t C, int64_t R, int64_t Hp,
                              int64_t Wp, int64_t P, int64_t Q, int32_t* off, float* gs);
  void (*avgpool_plane)(float* y, const float* x, const Pool2dShape& s);
  // max-pool of one plane with each window's winner: y (P, Q), arg (P, Q) its flat index in the
  // plane (-1: no input element in the window), as PyTorch's indices; work holds
  // maxpool_argmax_floats(s) floats (see portable.inc)
  void (*maxpool_argmax_plane)(float* y, int32_t* arg, const float* x, const Pool2dShape& s,
                               float* work);
  // up to 16 planes into the vector lanes, and adaptive max pooling of them there (portable.inc)
  void (*planes_to_lanes)(float* xt, const float* x, int64_t stride, int n, int64_t len);
  void (*adaptive_maxpool_lanes)(float* ym, int32_t* ya, const float* xt, int64_t H, int64_t W,
                                 int64_t P, int64_t Q);
  // max and average pooling of 16 planes in the lanes (xt as planes_to_lanes lays them out; the
  // same values as the plane kernels), and the average's backward (dxt all written); for small
  // planes (see portable.inc)
  void (*maxpool_lanes)(float* ym, int32_t* ya, const float* xt, const Pool2dShape& s);
  void (*avgpool_lanes)(float* y, const float* xt, const Pool2dShape& s);
  void (*avgpool_bwd_lanes)(float* dxt, const float* gt, const Pool2dShape& s);
  // adaptive average pooling of 16 planes in the lanes and its backward, with the plane kernels'
  // arithmetic (work: 16 * W doubles / floats)
  void (*adaptive_avgpool_lanes)(float* y, const float* xt, int64_t H, int64_t W, int64_t P,
                                 int64_t Q, double* work);
  void (*adaptive_avgpool_bwd_lanes)(float* dxt, const float* gt, int64_t H, int64_t W,
                                     int64_t P, int64_t Q, float* work);
  // avg-pool backward of one plane (writes all of dx), with avgpool_bwd_floats(s) floats of work
  void (*avgpool_bwd_plane)(float* dx, const float* dy, const Pool2dShape& s, float* work);
  // adaptive average pooling of one plane for Q > 1 (W doubles of work), and its backward for
  // any P, Q (writes all of dx; W floats of work)
  void (*adaptive_avgpool_plane)(float* y, const float* x, int64_t H, int64_t W, int64_t P,
                                 int64_t Q, double* work);
  void (*adaptive_avgpool_bwd_plane)(float* dx, const float* dy, int64_t H, int64_t W, int64_t P,
                                     int64_t Q, float* work);
  // sum of n floats in float64, in a fixed order
  double (*sum_f64)(const float* x, int64_t n);
  // The weight gradient of a 3x3 Winograd F(2x2, 3x3) layer for one output channel from dU:
  // value e < 16 of input channel c < C is the float sum, in part order, of the np partial
  // sums u[p * ps + e * es + c]; then dW = G^T dU G in double into o[c * 9 + 3i + j] (G's rows
  // (1, 0, 0), (1, 1, 1) / 2, (1, -1, 1) / 2, (0, 0, 1)). False if an output is NaN or
  // infinite.
  bool (*wino3_dw_from_du)(float* o, const float* u, int64_t es, int64_t ps, int64_t np,
                           int64_t C);
  // Batch norm: the moments of one channel's runs of L floats added into m[0..3] (see
  // portable.inc).
  void (*bn_moments)(double* m, const float* x, const float* dy, int64_t L, int64_t stride,
                     int64_t nruns, double shift);
  // y = ((x - mh) - ml) * alpha + beta over L floats, then + add (not null) and ReLU (relu) in
  // the same pass, with the values of the three passes
  void (*bn_affine)(float* y, const float* x, int64_t L, float mh, float ml, float alpha,
                    float beta, const float* add, bool relu);
  void (*bn_dx)(float* dx, const float* dy, const float* x, int64_t L, float mh, float ml,
                float k, float gmean, float c);
  // the same for planes smaller than kBnPosL, in vectors across the C L positions of a sample
  // (per-position shifts and parameters; see portable.inc)
  void (*bn_moments_pos)(double* s, const float* x, const float* dy, int64_t P, int64_t nrows,
                         const double* shift);
  void (*bn_affine_pos)(float* y, const float* x, int64_t P, const float* p);
  void (*bn_dx_pos)(float* dx, const float* dy, const float* x, int64_t P, const float* p);
};

// The SGD kernels (kernels/<isa>/optim_<isa>.cpp, compiled without fused multiply-adds).
void sgd_scalar(float* p, const float* grad, float* buf, int64_t n, const SgdArgs& a);
void sgd_avx2(float* p, const float* grad, float* buf, int64_t n, const SgdArgs& a);
void sgd_avx512(float* p, const float* grad, float* buf, int64_t n, const SgdArgs& a);

extern const KernelTable* g_kernels;  // never null after static initialisation

void fill_table_scalar(KernelTable& t);
void fill_table_avx2(KernelTable& t);
void fill_table_avx512(KernelTable& t);

}  // namespace convkit
