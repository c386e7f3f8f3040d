// convkit C++ core: public declarations. No Python here; the bindings and the C++
// microbenchmarks both link this library directly.
//
// Conventions: tensors are dense, C-contiguous float32, NCHW. Sizes are int64_t.
// Every op writes (overwrites) its outputs; accumulation into parameter gradients lives in Python.
// Every op gives bitwise-identical results for any thread count.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace convkit {

// ---- threading and configuration ----------------------------------------------------------
void set_num_threads(int n);
int get_num_threads();
bool have_openmp();
const char* compiler_id();

// ISA selection. `isa_name()` is the table in use; set_isa() switches it (returns false when the
// CPU lacks that ISA). cpu_features() lists what the CPU reports, e.g. "sse4.2 avx2 fma avx512f".
const char* isa_name();
bool set_isa(const std::string& name);
std::string cpu_features();
std::string best_isa();

// ---- shapes -------------------------------------------------------------------------------
struct Conv2dShape {
  int64_t N, C, H, W;   // input
  int64_t K, R, S;      // weight (K, C / G, R, S)
  int64_t sh, sw;       // stride
  int64_t ph, pw;       // padding (zeros)
  int64_t P, Q;         // output: P = (H + 2ph - dh(R-1) - 1) / sh + 1
  int64_t dh = 1, dw = 1;  // dilation
  int64_t G = 1;           // groups: C and K are multiples of G
};
// Fills P and Q from the rest.
void conv2d_out_size(Conv2dShape& s);

struct Pool2dShape {
  int64_t N, C, H, W;
  int64_t R, S;         // window
  int64_t sh, sw;
  int64_t ph, pw;
  int64_t P, Q;
  int64_t dh = 1, dw = 1;          // dilation (max pooling)
  bool ceil_mode = false;          // output size rounds up (windows may run past the padding)
  bool count_include_pad = true;   // average pooling: padding counts in the divisor
  int64_t divisor = 0;             // average pooling: divisor_override (0: none)
};
// Fills P and Q from the rest, as PyTorch: with ceil_mode a window that would start in the
// bottom/right padding is dropped.
void pool2d_out_size(Pool2dShape& s);
// Average pooling's divisor for output (p, q), as PyTorch's avg_pool2d counts it: the
// override, or the window's rows times its columns (counted with or without the padding).
int64_t avg_pool2d_divisor(const Pool2dShape& s, int64_t p, int64_t q);
int64_t avg_pool2d_rows(const Pool2dShape& s, int64_t p);
int64_t avg_pool2d_cols(const Pool2dShape& s, int64_t q);

// ---- conv2d -------------------------------------------------------------------------------
// x (N,C,H,W), w (K,C/G,R,S), b (K) or null -> y (N,K,P,Q)
void conv2d_forward(float* y, const float* x, const float* w, const float* b, const Conv2dShape& s);
// conv2d_forward, then batch_norm_forward in evaluation mode (the running statistics mean and
// var, K each; bn_weight, bn_bias null: 1, 0) with its add and relu on the output, in place: the
// same bits as the two calls. Where the lanes Winograd runs (AVX2 and AVX-512) it applies the
// norm in registers as its outputs leave the lanes, one pass over memory fewer; after any other
// row the norm is a pass of its own. add must not overlap y.
void conv2d_bn_forward(float* y, const float* x, const float* w, const float* b,
                       const Conv2dShape& s, const double* mean, const double* var,
                       const float* bn_weight, const float* bn_bias, double eps,
                       bool relu = false, const float* add = nullptr);
// dy (N,K,P,Q), x, w -> dx (N,C,H,W) [may be null], dw (K,C/G,R,S) [may be null], db (K) [may be null]
void conv2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x,
                     const float* w, const Conv2dShape& s);
// The weight (and bias) gradient of a convolution whose output y (N,K,P,Q) went through a
// 2x2 / stride-2 max pool, from the pool's gradient g (N,K,P/2,Q/2): x (N,C,H,W) -> dw, db [may
// be null]. Stride 1, no groups or dilation, kernels up to 8 wide, x all finite; false (nothing
// written) otherwise.
bool conv2d_weight_grad_maxpool2x2(float* dw, float* db, const float* g, const float* y,
                                   const float* x, const Conv2dShape& s);
// The transposed convolution is the input gradient of the convolution `s` describes: x (N,K,P,Q)
// -> y (N,C,H,W) plus b (C) or null, with w (K, C/G, R, S). P and Q may be below the natural size
// of s (PyTorch's output_padding).
void conv_transpose2d_forward(float* y, const float* x, const float* w, const float* b,
                              const Conv2dShape& s);
// dy (N,C,H,W) -> dx (N,K,P,Q), dw (K,C/G,R,S), db (C); any output may be null.
void conv_transpose2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x,
                               const float* w, const Conv2dShape& s);

// The algorithm tables (cpp/ops/conv2d/plan.cpp): one per direction, rows in priority order.
enum class ConvDir : int { forward = 0, input_grad = 1, weight_grad = 2 };
// Row names of a table, in priority order.
std::vector<std::string> conv2d_algorithms(ConvDir d);
// The row that runs for this shape on the current ISA with finite operands (first row that
// applies and whose cost model says it pays; a row may still decline at run time).
std::string conv2d_plan(const Conv2dShape& s, ConvDir d);
// Whether row `name` can run this shape on the current ISA (throws std::invalid_argument for an
// unknown name).
bool conv2d_applies(const Conv2dShape& s, ConvDir d, const std::string& name);
// Tests and benchmarks: run row `name` whenever it applies, else the plan ("" clears). Throws
// std::invalid_argument for an unknown name. Process-wide.
void conv2d_force(ConvDir d, const std::string& name);

// ---- explicit padding ---------------------------------------------------------------------
// x (planes, H, W) -> y (planes, H + top + bottom, W + left + right). mode: 0 zeros, 1 reflect
// (no edge repeat; pads < H, W), 2 replicate, 3 circular (pads <= H, W), as PyTorch's F.pad.
void pad2d_forward(float* y, const float* x, int64_t planes, int64_t H, int64_t W, int64_t top,
                   int64_t bottom, int64_t left, int64_t right, int mode);
// dy (planes, H + top + bottom, W + left + right) -> dx (planes, H, W): each dy value added to
// the input element it was copied from.
void pad2d_backward(float* dx, const float* dy, int64_t planes, int64_t H, int64_t W, int64_t top,
                    int64_t bottom, int64_t left, int64_t right, int mode);

// ---- resizing -----------------------------------------------------------------------------
// Two taps per axis: output (i, j) of a plane = a0[i] (b0[j] x[h0[i]][w0[j]] + b1[j]
// x[h0[i]][w1[j]]) + a1[i] (b0[j] x[h1[i]][w0[j]] + b1[j] x[h1[i]][w1[j]]), or x[h0[i]][w0[j]]
// when nearest (functional.interpolate; indices within the plane, h* and a* Ho long, w* and
// b* Wo long).
struct Resize2dTaps {
  const int64_t *h0, *h1, *w0, *w1;
  const float *a0, *a1, *b0, *b1;
  bool nearest;
};
void resize2d_forward(float* y, const float* x, int64_t planes, int64_t H, int64_t W, int64_t Ho,
                      int64_t Wo, const Resize2dTaps& taps);
// The gradient: dx (planes, H, W) = each output's dy times its weights, added to its taps in
// output order.
void resize2d_backward(float* dx, const float* dy, int64_t planes, int64_t H, int64_t W,
                       int64_t Ho, int64_t Wo, const Resize2dTaps& taps);

// ---- pooling ------------------------------------------------------------------------------
// x (N,C,H,W) -> y (N,C,P,Q). Max treats padding as -inf; avg counts padding as zeros.
// indices (may be null): the argmax of each window in its flattened (H*W) plane; the first
// maximum in row-major order, a NaN winning, as PyTorch. The backward sends dy there.
void max_pool2d_forward(float* y, int64_t* indices, const float* x, const Pool2dShape& s);
void max_pool2d_backward(float* dx, const float* dy, const float* x, const Pool2dShape& s);
// max_unpool2d over `planes` planes: y (planes, out) zero but x (planes, in) placed at idx
// (planes, in; a later entry wins a shared index, as PyTorch); its backward: dx = dy read back
// at idx. Both return the flat position of the first index outside [0, out) (the output is then
// not meaningful), or -1.
int64_t max_unpool2d_forward(float* y, const float* x, const int64_t* idx, int64_t planes,
                             int64_t in, int64_t out);
int64_t max_unpool2d_backward(float* dx, const float* dy, const int64_t* idx, int64_t planes,
                              int64_t in, int64_t out);
void avg_pool2d_forward(float* y, const float* x, const Pool2dShape& s);
void avg_pool2d_backward(float* dx, const float* dy, const Pool2dShape& s);
// Tests and benchmarks: max and average pooling (forward and backward) run on 16 planes at a time
// in the vector lanes ("lanes") or plane by plane ("planes"); "" restores the choice by size.
// Same values either way. Throws std::invalid_argument for another name. Process-wide.
void pool2d_force(const std::string& name);
// Adaptive pooling of `planes` (H, W) planes to (P, Q): window i of an axis of size n out of m
// spans [floor(i*n/m), ceil((i+1)*n/m)), as PyTorch. indices as for max_pool2d (may be null).
void adaptive_avg_pool2d_forward(float* y, const float* x, int64_t planes, int64_t H, int64_t W,
                                 int64_t P, int64_t Q);
void adaptive_avg_pool2d_backward(float* dx, const float* dy, int64_t planes, int64_t H,
                                  int64_t W, int64_t P, int64_t Q);
void adaptive_max_pool2d_forward(float* y, int64_t* indices, const float* x, int64_t planes,
                                 int64_t H, int64_t W, int64_t P, int64_t Q);
void adaptive_max_pool2d_backward(float* dx, const float* dy, const float* x, int64_t planes,
                                  int64_t H, int64_t W, int64_t P, int64_t Q);

// ---- batch normalisation over (N, C, L) (L = H*W, or 1 for (N, C) input) -------------------
// y = (x - mean) / sqrt(var + eps) * weight + bias per channel (weight, bias null: 1, 0).
// batch_stats: mean and the biased var of the batch are computed (float64, a fixed order) and
// written to mean / var; else mean / var are read (the running statistics). Then, applied to
// each sample while it is in cache (one pass over memory where separate ops took two or three,
// with the same bits): y += add when add is given (a residual sum), and y = max(y, 0)
// (activation_forward's relu) when relu.
void batch_norm_forward(float* y, double* mean, double* var, const float* x, const float* weight,
                        const float* bias, double eps, int64_t N, int64_t C, int64_t L,
                        bool batch_stats, bool relu = false, const float* add = nullptr);
// Gradients of batch_norm_forward with the same arguments (batch_stats: the statistics are
// recomputed from x and dx includes their gradient; mean / var unused). dx, dw, db may be null.
void batch_norm_backward(float* dx, float* dw, float* db, const float* dy, const float* x,
                         const double* mean, const double* var, const float* weight, double eps,
                         int64_t N, int64_t C, int64_t L, bool batch_stats);

// ---- activations (elementwise, any shape, n elements) ---------------------------------------
enum class Act : int { relu = 0, leaky_relu = 1, sigmoid = 2, tanh = 3, elu = 4 };
// y = f(x), or f(x + add) when add is given (a residual sum and its activation in one pass)
void activation_forward(Act a, float param, float* y, const float* x, int64_t n,
                        const float* add = nullptr);
void activation_backward(Act a, float param, float* dx, const float* dy, const float* x, int64_t n);

// ---- softmax over the middle axis of (outer, L, inner) --------------------------------------
void softmax_forward(float* y, const float* x, int64_t outer, int64_t L, int64_t inner, bool log);
void softmax_backward(float* dx, const float* dy, const float* x, int64_t outer, int64_t L,
                      int64_t inner, bool log);
// the same from the forward's output y (what nn.Softmax / nn.LogSoftmax keep)
void softmax_backward_from_output(float* dx, const float* dy, const float* y, int64_t outer,
                                  int64_t L, int64_t inner, bool log);

// ---- losses (means; the backward scales by grad_out) ---------------------------------------
// logits (N, K), labels (N) in [0, K)
double cross_entropy_forward(const float* logits, const int64_t* labels, int64_t N, int64_t K);
void cross_entropy_backward(float* dlogits, float grad_out, const float* logits,
                            const int64_t* labels, int64_t N, int64_t K);
double bce_with_logits_forward(const float* x, const float* t, int64_t n);
void bce_with_logits_backward(float* dx, float grad_out, const float* x, const float* t, int64_t n);
double mse_forward(const float* p, const float* t, int64_t n);
void mse_backward(float* dp, float grad_out, const float* p, const float* t, int64_t n);

// ---- linear -------------------------------------------------------------------------------
// x (N, I), w (O, I), b (O) or null -> y (N, O)
void linear_forward(float* y, const float* x, const float* w, const float* b, int64_t N,
                    int64_t I, int64_t O);
// dy (N, O) -> dx (N, I), dw (O, I), db (O); any output may be null
void linear_backward(float* dx, float* dw, float* db, const float* dy, const float* x,
                     const float* w, int64_t N, int64_t I, int64_t O);

// ---- optimisers ---------------------------------------------------------------------------
// PyTorch's SGD on n values (PyTorch's order of operations, each rounded to float32):
//   g = p * weight_decay + grad (when weight_decay != 0)
//   with a momentum buffer buf (null for momentum 0):
//     buf = g on the first step, else buf = buf * momentum + g * keep (keep = 1 - dampening,
//     the product skipped when dampening is 0); g = buf * momentum + g (nesterov) or buf
//   p = p - g * lr
struct SgdArgs {
  float lr, momentum, dampening, keep, weight_decay;
  bool nesterov, first;
};
void sgd_update(float* p, const float* grad, float* buf, int64_t n, const SgdArgs& a);

// ---- dropout ------------------------------------------------------------------------------
// mask[i] = 1 with probability 1-p (counter-based RNG keyed by seed: same bits for any threads)
void dropout_forward(float* y, float* mask, const float* x, int64_t n, float p, uint64_t seed);
void dropout_backward(float* dx, const float* dy, const float* mask, int64_t n, float p);

// ---- GEMM (shared by conv2d and linear) ----------------------------------------------------
// A view of a matrix with arbitrary element strides: element (i, j) at p[i*rs + j*cs].
struct MatView {
  const float* p;
  int64_t rs, cs;
};
// C (M,N) (+)= A (M,K) * B (K,N), C row-major with leading dimension ldc. Multithreaded over
// tiles of C; every element's reduction order depends only on K, so any thread count gives
// the same bits.
void gemm(int64_t M, int64_t N, int64_t K, MatView A, MatView B, float* C, int64_t ldc,
          bool accumulate);

// ---- reference implementations (plain loops, float64 accumulation): the test oracle ---------
namespace ref {
void conv2d_forward(float* y, const float* x, const float* w, const float* b, const Conv2dShape& s);
void conv2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x,
                     const float* w, const Conv2dShape& s);
void max_pool2d_forward(float* y, const float* x, const Pool2dShape& s);
void max_pool2d_backward(float* dx, const float* dy, const float* x, const Pool2dShape& s);
void avg_pool2d_forward(float* y, const float* x, const Pool2dShape& s);
void avg_pool2d_backward(float* dx, const float* dy, const Pool2dShape& s);
void linear_forward(float* y, const float* x, const float* w, const float* b, int64_t N,
                    int64_t I, int64_t O);
}  // namespace ref

}  // namespace convkit
