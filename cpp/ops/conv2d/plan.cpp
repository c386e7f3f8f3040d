// conv2d front-end and planner. Every path is a GEMM-like sum over the implicit im2col matrix
// col (C/G*R*S x P*Q per image and group); the paths differ in how they feed it to the ISA's
// micro-kernels. One table per direction lists them in priority order; each row has
//   name     what conv2d_plan() reports and conv2d_force() takes
//   applies  whether it can run the shape on this ISA
//   pays     its cost model (null: always, once it applies)
//   zeros    whether it multiplies padding zeros (or other stand-in zeros): such a row may not run
//            when an operand the zeros meet is NaN or Inf, since IEEE gives 0 * NaN = NaN where
//            the definition has no term at all; kSelfChecked: it does, and checks that operand
//            itself (declining when it is not finite), so the planner need not scan it
//   run      the function; it may decline at run time (returns false), and the next row that
//            applies runs
//
// Forward
//   grouped        groups of 32+ input and output channels (12+ at AVX2, not 1x1): each group as
//                  a dense convolution through this table (operands gathered, result scattered)
//   winograd5      5x5, stride 1, batches of 16+: Winograd F(2x2, 5x5), 16 images in the lanes
//   winograd3_lanes  3x3, stride 1, batches of 16+, up to 192 x 192 channels, where its cost model
//                  says it pays: Winograd F(2x2, 3x3), 16 images in the lanes (ResNet-20's
//                  layers)
//   gemm_1x1       1x1, stride 1, no padding, up to 128 positions in all and 256 x 256 channels
//                  or more (deep stages at batch 1): the GEMM with the positions as its rows
//   gemm_batch     1x1, strided, no padding, 256+ channels each side (not 1024+ inputs where
//                  kvec's tiles exist; any at AVX2, and there stride 1 from 256 x 256 channels):
//                  one GEMM over the batch's positions
//   kvec           stride 1, narrow outputs (Q < 16), 12+ output channels, unless winograd3
//                  pays; or 32+ output channels of at most 64 inputs, Q <= 16 (tiles of
//                  several channel blocks): channels in the lanes
//   winograd3      3x3, stride 1, 32+ channels (64+ and planes 24+ wide with the plain
//                  transforms of SSE), enough work: Winograd F(2x2, 3x3), 16 GEMMs;
//                  dilated too, each item gathering the input's phases (also where the phases
//                  would take winograd3_lanes)
//   winograd3_s2   3x3, stride 2, 32+ channels, enough work, GEMM columns mostly busy:
//                  phase-split F(2, 2)-style sum, 9 GEMMs
//   winograd4_s2   4x4, stride 2, 16+ channels, 16+ tiles an image: the four input phases'
//                  2-tap sums F(2, 2)-style, 9 GEMMs
//   dilated_phases dilated, stride 1: dh*dw undilated convolutions of the input's phases split
//                  out as one batch, when that goes to winograd5
//   direct         stride <= 4: col read in place from padded, phase-split input rows
//   depthwise      few channels per group, any groups at AVX-512 and AVX2, or at AVX-512 an
//                  RGB-like stem (up to 3 input channels, 3x3 or smaller, a batch): each output
//                  row summed in registers over padded, phase-split input rows
//   rows           non-finite weights: tap by tap over in-range columns only (exact)
//   im2col_gemm    anything: col packed into GEMM panels, one group at a time
// Input gradient
//   grouped        as the forward's: each group through this table
//   transposed_conv  stride 1, "same"-like padding, C fills the tiles: a forward convolution of
//                    dy with flipped, transposed weights
//   winograd4_s2     4x4, stride 2, 16+ channels: each of dx's four phases a 2-tap sum over dy
//                    F(2, 2)-style, 9 GEMMs per phase
//   rows_x           few input channels, stride 1: rows of dx from dy, columns in the lanes
//   lanes            batches, stride 1, C <= 8: 16 images in the lanes
//   depthwise_transposed  few channels per group, stride 1: the transposed convolution, run by
//                  the depthwise forward
//   depthwise      few channels per group: per dx row and column phase, the taps that reach dy
//   rows           non-finite weights, few channels per group: scatter tap by tap (exact)
//   gemm_col2im    anything: gcol = W^T dy, scattered back by col2im (exact)
// Weight gradient
//   grouped        groups of 2+ input channels where dot's tiles exist (else 32+ each side):
//                  each group through this table
//   winograd3_lanes  3x3, stride 1, batches of 16+, up to 32 x 32 channels: Winograd F(2x2,
//                  3x3), 16 images in the lanes (ResNet-20's 16- and 32-channel layers)
//   winograd3      3x3, stride 1, 64+ channels each side: Winograd F(2x2, 3x3), transformed dy
//                  times transformed input summed over the tiles, 16 GEMMs
//   kvec           stride 1, narrow outputs or many taps: 16 output channels in the lanes
//   dilated_phases dilated, stride 1: the sum of the phases' undilated weight gradients, when
//                  those go to kvec
//   winograd4_s2   4x4, stride 2, 16+ channels, a batch: transformed dy times transformed input
//                  phases summed over the tiles, 9 GEMMs
//   dot            register tiles of dot products of dy rows with input rows
//   gemm           dW = sum_n dy_n col_n^T: ISAs without dot's kernels, and strided layers with
//                  many input channels and small kernels; weights larger than a chunk's
//                  inputs as one GEMM over the whole batch
//   depthwise      few channels per group: dot products of dy rows with padded input rows
//   rows           non-finite results: dot products tap by tap over in-range columns (exact)
//   im2col_gemm    anything: per group, col built block by block, GEMM
// Grad bias: sums of dy per output channel.
//
// Every output element is produced by one work item, reduction blocking depends only on the
// shape, and partial sums over image chunks are added in chunk order: any thread count gives
// the same bits. The path taken depends on the shape and the ISA, never on the thread count.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "ops/conv2d/conv2d_internal.h"

namespace convkit {

void conv2d_out_size(Conv2dShape& s) {
  s.P = (s.H + 2 * s.ph - s.dh * (s.R - 1) - 1) / s.sh + 1;
  s.Q = (s.W + 2 * s.pw - s.dw * (s.S - 1) - 1) / s.sw + 1;
}

namespace conv {
namespace {

using Applies = bool (*)(const Conv2dShape&, const KernelTable&);
using Pays = bool (*)(const Conv2dShape&, const KernelTable&);
using FwdRun = bool (*)(float*, const float*, const float*, const float*, const Conv2dShape&);
using BwdRun = bool (*)(float*, const float*, const float*, const Conv2dShape&);

constexpr int kSelfChecked = 2;  // Row::zeros: see the file's top

template <class Run>
struct Row {
  const char* name;
  Applies applies;
  Pays pays;
  int zeros;  // false, true or kSelfChecked
  Run run;
};

// P and Q are what the rest of the shape gives (a transposed convolution's output_padding can
// leave them smaller).
bool natural(const Conv2dShape& s) {
  Conv2dShape t = s;
  conv2d_out_size(t);
  return t.P == s.P && t.Q == s.Q;
}
// The shapes the specialised paths were written for.
bool special(const Conv2dShape& s) { return plain(s) && natural(s); }
// ... and those of them that also take dilation.
bool special_dilated(const Conv2dShape& s) { return s.G == 1 && natural(s); }
bool unit_stride(const Conv2dShape& s) { return s.sh == 1 && s.sw == 1; }
// Dilated, stride 1, no groups: the phase split into undilated convolutions applies.
bool dilated_unit(const Conv2dShape& s, const KernelTable&) {
  return special_dilated(s) && unit_stride(s) && (s.dh > 1 || s.dw > 1);
}
// Stride 1, padding at most the dilated kernel's reach: dx is a forward convolution of dy.
bool transposable(const Conv2dShape& s) {
  return natural(s) && unit_stride(s) && s.ph <= (s.R - 1) * s.dh && s.pw <= (s.S - 1) * s.dw;
}
bool any(const Conv2dShape&, const KernelTable&) { return true; }
// Only where the rows that multiply stand-in zeros may not run (non-finite operands) or forced.
bool never(const Conv2dShape&, const KernelTable&) { return false; }
// Few channels per group: nothing for a GEMM tile to share.
bool few_per_group(const Conv2dShape& s, const KernelTable&) {
  return s.G > 1 && group_in(s) * group_out(s) <= 16;
}

// An RGB-like stem: up to 3 input channels, small kernel, a batch. At AVX-512 its forward runs
// the depthwise rows (each output channel's rows summed in registers) rather than direct (AMD
// EPYC Zen 4, forced, 2 threads: (16, 3, 64, 64) -> 32 0.52 ms against 0.56, -> 64 1.04 against
// 1.14, (8, 3, 112, 112) -> 32 0.81 against 1.24; 4 channels level; at batch 1 the one work item
// per group leaves a thread idle, 7x7 kernels are slower). The other ISAs' row kernels are the
// portable loops: 5.7x slower than direct at AVX2.
// A 7x7 stride-2 stem on 112+ columns (ResNet's) takes them from batch 2 (forced, 2 threads,
// medians of 7, against direct: (8, 3, 224, 224) -> 64 8.9 ms against 11.0, (2, 3, 224, 224)
// 2.26 against 2.57, (16, 3, 112, 112) 4.86 against 5.30; level on 64 columns).
bool rgb_stem(const Conv2dShape& s, const KernelTable& kt) {
  if (kt.lanes != 16 || s.G != 1 || s.C > 3 || s.dh != 1 || s.dw != 1) return false;
  return (s.R * s.S <= 9 && s.N >= 8) ||
         (s.R * s.S <= 49 && s.sh == 2 && s.sw == 2 && s.W >= 112 && s.N >= 2);
}

// 4x4 kernels at stride 2, no groups or dilation, padding up to 3 (DCGAN- and U-Net-style
// down- and upsampling): the phases' F(2, 2) sums of winograd4_s2.cpp.
bool four_by_four_s2(const Conv2dShape& s, const KernelTable& kt) {
  return s.G == 1 && s.dh == 1 && s.dw == 1 && s.R == 4 && s.S == 4 && s.sh == 2 && s.sw == 2 &&
         s.ph <= 3 && s.pw <= 3 && kt.wino_s2_out_row && winograd4_s2_fits(s);
}
// 16+ channels each side and 50 MFLOP of direct work; the input gradient also needs 16+ 2x2
// tiles per image and phase and 64+ in all, the GEMMs' columns, the forward (F(4, 2), whose items
// group images) 4+ 4x4 tiles an image and 16+ in all (AMD EPYC Zen 4, forced,
// 2 threads, 4x4 stride 2 padding 1: (16, 64, 32, 32) -> 128 forward 4.2 ms against direct's 6.2,
// (16, 128, 16, 16) -> 256 3.8 against 7.3, but (16, 256, 8, 8) -> 512, 4 tiles an image,
// 21.5 against 12.7; weight gradients with fewer tiles still gain: 37 ms against gemm's 50).
bool winograd4_s2_pays(const Conv2dShape& s, ConvDir d) {
  if (s.C < 16 || s.K < 16 || 2.0 * s.N * s.P * s.Q * s.K * s.C * 16 < 5e7) return false;
  auto enough = [&](int64_t rows, int64_t cols) {  // 16+ tiles an image, 64+ in all
    const int64_t t = (rows + 1) / 2 * ((cols + 1) / 2);
    return t >= 16 && s.N * t >= 64;
  };
  if (d == ConvDir::forward) {  // F(4, 2)'s 4x4 tiles: 4+ an image, 16+ in all
    const int64_t t = (s.P + 3) / 4 * ((s.Q + 3) / 4);
    return t >= 4 && s.N * t >= 16;
  }
  if (d == ConvDir::input_grad) return enough((s.H + 1) / 2, (s.W + 1) / 2);
  return s.N >= 2;  // its items are chunks of images
}

// ---- forward -------------------------------------------------------------------------------
// Multiply-adds of the direct method, times 2.
double direct_flops(const Conv2dShape& s) {
  return 2.0 * s.N * s.P * s.Q * s.K * (s.C / s.G) * s.R * s.S;
}

// The 2x2 output tiles of an image (F(2x2, r x r) Winograd)
int64_t tiles2x2(const Conv2dShape& s) { return ((s.P + 1) / 2) * ((s.Q + 1) / 2); }
// Whether those tiles cover 1.2x the outputs or more (odd planes such as 7x7 and 9x9)
bool tiles2x2_waste(const Conv2dShape& s) { return 4 * tiles2x2(s) * 5 >= 6 * s.P * s.Q; }

// Winograd F(2x2, 3x3) pays from 32 channels, 7 output columns and 150 MFLOP of direct work per
// call (forced, 2 threads: with 16 channels direct and kvec are faster, e.g. (64, 16, 32, 32)
// 2.3 ms against 3.4; at 4 columns direct is, (128, 128, 4, 4) 8.0 against 10.2; below the work
// its weight transform and extra passes do not pay back: (1, 64, 8, 8) 376 us against kvec's
// 126, (16, 32, 16, 16) 706 against direct's 689, (2, 128, 14, 14) 1553 against 1161, while
// (4, 128, 14, 14) ties at 231 MFLOP and (8, 128, 14, 14) gains 3.6 ms against 4.1).
// It also needs 192+ tiles in all up to 256 x 256 channels (with 256 channels (1, 256, 14, 14),
// 49 tiles, 2.40 against 1.52, (4, 256, 8, 8), 64, 2.74 against 1.82, but (4, 256, 14, 14), 196,
// 5.00 against 5.55 and (16, 256, 8, 8), 256, 5.61 against 6.33; (16, 128, 7, 7) 1.57 against
// 1.41). Deeper layers once ran 2x slower than kvec ((8, 512, 14, 14) 89.5 ms against 42.2):
// each item streamed the transformed weights (16 K C floats) and they were built a value at a
// time; they now run the grouped path below.
bool winograd3_pays(const Conv2dShape& s, const KernelTable& kt) {
  const int64_t tiles = s.N * tiles2x2(s);
  // AVX2, whose direct and kvec tiles have 8 lanes: from 64 channels and 64 tiles, 7x7 planes
  // too (2 threads, medians of 7, against the plan before, ms: (8, 512, 7, 7) 11.5 against
  // direct's 15.1, (4, 512, 7, 7) 8.5 against kvec's 11.2, (8, 256, 7, 7) 2.35 against 3.36,
  // (2, 256, 14, 14) 2.30 against 3.38, (2, 128, 14, 14) 0.58 against 0.71, (8, 96, 8, 8)
  // 0.39 against 0.62, (8, 64, 8, 8) 0.31 against 0.39, (1, 64, 28, 28) 0.38 against 0.56;
  // but (1, 128, 14, 14), 49 tiles, 0.50 against kvec's 0.38, (1, 512, 7, 7) 5.2 against 3.8).
  // With 256 x 256 channels 49 tiles do (an AVX2-only AMD EPYC, Zen 3, forced, 2 threads,
  // medians of 5, two runs: (1, 256, 14, 14) 1.66-2.51 ms against kvec's 2.17-3.46 and
  // direct's 1.86-2.82, (1, 512, 14, 14) 8.2 against 11.1 and 8.6; (1, 128, 14, 14) level).
  // On that Zen 3 also 32+ x 32+ channels on planes 24+ wide from 50 MFLOP (forced, 2 threads,
  // medians of 5, against the best of direct and kvec, ms: (8, 32, 56, 56) -> 32 2.55 against
  // 2.98, (8, 48, 56, 56) -> 48 5.01 against 7.14, (8, 32, 56, 56) -> 64 4.49 against 6.20,
  // (1, 32, 56, 56) -> 32 0.41 against 0.55, (8, 32, 28, 28) -> 32 0.70 against 0.78, (8, 32,
  // 24, 24) -> 32 0.53 against 0.63; level at (8, 32, 20, 20) and (2, 32, 28, 28); not with 16
  // channels on a side: (8, 32, 56, 56) -> 16 2.13 against kvec's 1.97).
  if (kt.lanes == 8) {
    if (s.R != 3 || s.S != 3 || s.K * s.C > 1024 * 1024) return false;
    if (s.C >= 32 && s.K >= 32 && s.Q >= 24 && s.P >= 2 && direct_flops(s) >= 5e7) return true;
    return s.C >= 64 && s.K >= 16 && s.Q >= 7 && s.P >= 2 &&
           (tiles >= 64 || (tiles >= 49 && s.K * s.C >= 256 * 256)) && direct_flops(s) >= 3e7;
  }
  if (!(s.R == 3 && s.S == 3 && s.C >= 32 && s.K >= 16 && s.Q >= 7 && s.P >= 2 &&
        direct_flops(s) >= 1.5e8))
    return false;
  if (s.K * s.C <= 256 * 256) return tiles >= 192;
  // deeper: the tiles of groups of images in one set of GEMMs (winograd_forward_grouped), on
  // planes the 2x2 tiles fit (forced, 2 threads, against kvec: (8, 512, 14, 14) 23-25 ms
  // against 32-34, (2, 512, 14, 14) 8.0-8.1 against 8.7-8.8, (1, 512, 28, 28) 12.4-12.5
  // against 17.8, (4, 384, 14, 14) 7.0 against 9.4-9.5, (8, 1024, 14, 14) 93-95 against 150;
  // AVX2 1.3-2.1x; but (1, 512, 14, 14), 49 tiles, 5.4-5.6 against 4.3-4.6, and 7x7 planes,
  // 16 tiles for 49 outputs: (8, 512, 7, 7) 9.4-9.7 against 7.5, (32, ...) 31.3 against 28.8)
  return tiles >= 96 && !tiles2x2_waste(s) && s.K * s.C <= 1024 * 1024;
}

// Strided layers of many input channels, where kvec's tiles (the weights in L2 a run of taps
// at a time) beat direct, im2col_gemm and winograd3_s2 at any batch: 1x1 over 1024+ channels,
// 3x3 over 512+, and 3x3 over 128+ on output planes up to 14 wide (forced, 2 threads, AMD EPYC
// Zen 4, against the best other row: 1x1 (8, 1024, 14, 14) -> 2048 12.1 ms against
// im2col_gemm's 13.3 (direct, the row it took, 22.9), (32, ...) 42.2 against 50.4; 3x3
// (32, 512, 14, 14) -> 512 46.7 against direct's 61.9, (8, 512, 28, 28) -> 1024 83.9
// against winograd3_s2's 107.8, (32, 1024, 14, 14) -> 2048 370 against im2col_gemm's 560,
// (32, 256, 28, 28) -> 256 41.2 against 44.5, (32, 256, 14, 14) -> 512 21.1 against direct's
// 23.7; ties at (1, 512, 28, 28) -> 1024 and (1, 256, 28, 28) -> 256; winograd3_s2 keeps
// (8, 256, 56, 56) -> 512, 28 wide: 69.2 against 84.0). 128+ since kvec's tiles skip the
// padding's products (planned, 2 threads, two interleaved rounds, winograd3_s2 -> kvec:
// (8, 128, 28, 28) -> 256 5.6-6.2 ms -> 4.95-5.01, (16, ...) 10.7-10.9 -> 9.8-9.9, (8, 160, 28,
// 28) -> 160 4.6 -> 4.2; (32, 128, 28, 28) -> 256 level, 20.7-20.8 against 20.6-21.0).
bool deep_strided(const Conv2dShape& s) {
  if (s.R * s.S == 1) return s.C >= 1024;
  return s.R == 3 && s.S == 3 && (s.C >= 512 || (s.C >= 128 && s.Q <= 14));
}

// Groups of 32+ input and output channels each run as dense convolutions, one group at a time
// through the same direction's table (Winograd, kvec, ...), where the grouped rows below
// (depthwise's row kernels, im2col + GEMM one group at a time) ran 1.0-1.6x slower forward
// and 1.3-1.7x backward (forced, 2 threads, per-group dense calls against the grouped layer:
// (32, 64, 28, 28) groups 2 forward 3.3 ms against 5.3, forward + backward 11.6 against 19.5;
// (8, 256, 28, 28) groups 4 7.1 against 10.3, 22.3 against 32.6; (8, 256, 14, 14) groups 8
// level forward, 3.6 against 3.6 backward; with 16 channels a group slower: (8, 512, 14, 14)
// groups 32 forward 2.1 against 1.5). Each group's operands are gathered into contiguous
// buffers and its result scattered back. They multiply padding zeros wherever the dense rows
// do, so the planner keeps them to finite weights (and a non-finite weight gradient is
// recomputed by the rows after them).
// At AVX2 (an AVX2-only AMD EPYC, Zen 3) from 12 channels a group each side, but not 1x1
// (forced, 2 threads, medians of 7, against the row planned before, im2col_gemm forward and
// gemm_col2im input gradient (that column with the weight gradient), ms: (8, 48, 27, 27) -> 128
// 5x5 groups 2 6.6 against 9.2, 18.7 against 19.2; (8, 32, 56, 56) -> 32 groups 2 3.2 against
// 6.3, 4.5 against 5.2; (8, 64, 28, 28) groups 4 1.35 against 2.43, 2.25 against 3.32; (8, 96,
// 28, 28) groups 8 1.66 against 4.82, 4.67 against 8.58; (8, 128, 14, 14) groups 8 0.88 against
// 2.08, 1.38 against 2.14; (1, 64, 56, 56) groups 4 0.75 against 1.37, 1.32 against 1.45; 1x1
// (8, 64, 28, 28) groups 4: 0.50 against depthwise's 0.31, input gradient level).
bool grouped_pays(const Conv2dShape& s, const KernelTable& kt) {
  if (group_in(s) >= 32 && group_out(s) >= 32) return true;
  return kt.lanes == 8 && group_in(s) >= 12 && group_out(s) >= 12 && s.R * s.S > 1;
}
// The weight gradient a group at a time pays on 2+ input channels a group wherever the dense
// weight-gradient tiles exist (AVX2, AVX-512): forced, 2 threads, medians of 11 calls, two
// rounds, against the row planned before (AVX-512, ms): 5x5 (8, 48, 27, 27) -> 128 groups 2
// 4.42-4.49 against im2col_gemm's 6.24-6.25, (32, ...) 17.6 against 24.3; (8, 64, 28, 28) ->
// 64 groups 8 0.43 against 1.34-1.35, groups 16 0.35 against depthwise's 0.49-0.51, groups 32
// (2 a group) 0.24 against 0.27; (8, 128, 28, 28) -> 128 groups 32 0.64-0.66 against
// 0.89-0.99; (128, 32, 16, 16) -> 32 groups 2 2.03-2.09 against 4.27-4.32; 1x1 (8, 64, 28, 28)
// -> 64 groups 8 0.09 against 0.59; (8, 64, 14, 14) -> 128 7x7 groups 4 1.89-1.94 against
// 4.00; level on (1, 32, 112, 112) groups 16 and (4, 30, 20, 20) groups 3. AVX2: (8, 64, 28, 28)
// groups 16 0.44 against 0.68, (128, 32, 16, 16) groups 2 3.9-4.0 against 6.9-7.0. One
// channel a group (depthwise, multipliers) stays depthwise's (0.22 against 0.49 ms), and the
// scalar set, without those tiles, keeps the rule above (there groups 32 with 2 a group took
// 2.42 ms against 1.33).
bool grouped_dw_pays(const Conv2dShape& s, const KernelTable& kt) {
  return grouped_pays(s, kt) || (group_in(s) >= 2 && kt.conv_dw_tile != nullptr);
}
bool grouped(const Conv2dShape& s, const KernelTable&) { return s.G > 1; }
bool grouped_forward(float* y, const float* x, const float* w, const float* b,
                     const Conv2dShape& s);
bool grouped_input_grad(float* dx, const float* dy, const float* w, const Conv2dShape& s);
bool grouped_weight_grad(float* dw, const float* dy, const float* x, const Conv2dShape& s);

const Row<FwdRun> kForward[] = {
    {"grouped", grouped, grouped_pays, true, grouped_forward},
    {"winograd5",
     [](const Conv2dShape& s, const KernelTable& kt) {
       return special(s) && kt.wino_lanes_item && s.R == 5 && s.S == 5 && unit_stride(s);
     },
     [](const Conv2dShape& s, const KernelTable& kt) { return winograd_lanes_pays(s, kt); },
     true, winograd_lanes_forward},
    // With KernelTable::wide_fma, where winograd3's GEMMs gained more than the lanes' broadcast
    // products, up to 64 images of 64+ channels go to winograd3 where it pays (AMD EPYC Zen 5,
    // forced, 2 threads, medians of 5, against winograd3, ms: (32, 128, 28, 28) 18.0 against
    // 14.4, (32, 128, 14, 14) 5.33 against 4.87, (32, 96, 16, 16) 3.67 against 3.00, (32, 64,
    // 32, 32) 7.02 against 6.25; level at (64, 128, 8, 8), 4.01 against 3.86; at batch 128 the
    // lanes lead: (128, 128, 8, 8) 6.35 against 7.96, ResNet-20's (128, 64, 8, 8) 2.72 against
    // 3.46).
    {"winograd3_lanes",
     [](const Conv2dShape& s, const KernelTable& kt) {
       return special(s) && kt.wino_lanes_item && s.R == 3 && s.S == 3 && unit_stride(s);
     },
     [](const Conv2dShape& s, const KernelTable& kt) {
       if (kt.wide_fma && s.N <= 64 && s.C >= 64 && winograd3_pays(s, kt)) return false;
       return winograd_lanes_pays(s, kt);
     },
     true, winograd_lanes_forward},
    {"gemm_1x1",
     [](const Conv2dShape& s, const KernelTable&) {
       return special(s) && s.R == 1 && s.S == 1 && unit_stride(s) && s.ph == 0 && s.pw == 0;
     },
     // (see gemm1x1_forward; at 14x14 kvec is as fast, and past it faster). At AVX2 up to 196
     // positions (2 threads, medians of 7, against direct: (1, 1024, 14, 14) -> 256 1.05 ms
     // against 1.31, (1, 512, 14, 14) -> 512 0.90 against 1.44, (4, 512, 7, 7) -> 2048 3.65
     // against 4.81; at 392 level, at 784 slower: (1, 256, 28, 28) -> 256 1.11 against 0.81).
     [](const Conv2dShape& s, const KernelTable& kt) {
       return s.N * s.P * s.Q <= (kt.lanes == 8 ? 196 : 128) && s.C * s.K >= 256 * 256;
     },
     false, gemm1x1_forward},  // (no stand-in zeros: every product is one of the sum's terms)
    {"gemm_batch",
     [](const Conv2dShape& s, const KernelTable&) {
       return special(s) && s.R == 1 && s.S == 1 && s.ph == 0 && s.pw == 0;
     },
     // Strided 1x1 layers of 256+ channels each side (ResNet-50's projection shortcuts), but
     // not AVX-512's over 1024+, where kvec's tiles are faster ((8, 1024, 14, 14) -> 2048 8.9
     // ms against 11.4). Forced, 2 threads, 3 rounds of medians of 9 calls, ms: (8, 512, 28,
     // 28) -> 1024 8.9-9.6 against direct's 11.0-11.5 (PyTorch 9.1-10.4), (32, ...) 35.5-36.5
     // against 44.6-46.5, (1, ...) 1.47-1.53 against kvec's 1.74-1.85, (8, 256, 56, 56) ->
     // 512 9.6-10.2 against 10.1-11.0; level on 64-128 channels. AVX2: 9.4-11.1 against
     // 14.9-18.2, (1, 256, 56, 56) -> 512 1.26-1.31 against 1.62-1.64, (8, 1024, 14, 14) ->
     // 2048 9.2-11.6 against 14.4-16.4; the scalar set 29.4-30.0 against 70.7-85.6.
     // At AVX2 every strided 1x1 layer (an AVX2-only AMD EPYC, Zen 3, 2 threads, forced,
     // medians of 5, against direct: ResNet-20's shortcuts (128, 32, 16, 16) -> 64 0.39 ms
     // against 0.84, (128, 16, 32, 32) -> 32 0.95 against 1.28; (128, 64, 8, 8) -> 128 0.51
     // against 1.27, (8, 64, 56, 56) -> 128 1.67 against 2.16, (1, 64, 56, 56) -> 128 0.22
     // against 0.27).
     // At AVX2 also stride 1 from 256 x 256 channels, past gemm_1x1's positions (forced, 2
     // threads, medians of 5, against the best other row, ms: (8, 512, 7, 7) -> 2048 6.78
     // against gemm_1x1's 8.14 (PyTorch 6.1-6.5), (8, 2048, 7, 7) -> 512 7.07 against
     // im2col_gemm's 8.66, (16, 2048, 7, 7) -> 512 14.4 against 16.8, (8, 1024, 14, 14) -> 256
     // 5.25 against 6.11, (32, 256, 14, 14) -> 256 5.44 against direct's 6.00, (4, 512, 14, 14)
     // -> 512 3.13 against 3.91, (8, 512, 28, 28) -> 128 6.03 against 7.00, (1, 512, 28, 28) ->
     // 128 0.95 against 1.17, (8, 128, 28, 28) -> 512 9.43 against 9.89; with fewer channels
     // direct leads or ties: (2, 256, 56, 56) -> 128 5.84 against 5.12, (8, 256, 28, 28) -> 128
     // 5.96 against 5.86, (8, 256, 56, 56) -> 64 9.30 against 7.74).
     // With KernelTable::wide_fma (AMD EPYC Zen 5) also strided over 1024+ channels (forced, 2
     // threads, medians of 5, against kvec, ms: (8, 1024, 14, 14) -> 2048 7.07 against 9.36,
     // (32, ...) 22.8 against 31.0, (1, ...) 2.54 against 3.22). (Stride-1 rows of 7 stay
     // kvec's, whose 3 x 7 tiles there run level or ahead: (8, 512, 7, 7) -> 2048 3.17 ms
     // against 3.86, (32, ...) 10.8 against 10.6.)
     [](const Conv2dShape& s, const KernelTable& kt) {
       if (unit_stride(s)) return kt.lanes == 8 && s.C * s.K >= 256 * 256;
       if (kt.lanes == 8) return true;
       return s.C >= 256 && s.K >= 256 && (s.C < 1024 || !kt.conv_kvec_blocks || kt.wide_fma);
     },
     false, gemm_batch_forward},  // (as gemm_1x1)
    {"kvec",
     [](const Conv2dShape& s, const KernelTable& kt) {
       return special(s) && kt.conv_kvec &&
              (unit_stride(s) || (kt.conv_kvec_blocks && s.K >= 32 && s.sh <= 2 && s.sw <= 2) ||
               !kt.conv_kvec_blocks);  // (AVX2: one-block tiles at any stride)
     },
     // not where winograd3 pays (below): 3x3 layers of 32+ channels measured faster there at
     // every width tried (forced, 2 threads: (128, 64, 8, 8) 6.0 ms against 6.9, (64, 128, 8, 8)
     // 8.5 against 13.7, (32, 96, 7, 7) 3.0 against 4.0)
     // With tiles of several channel blocks (32+ channels, conv_kvec_blocks) it also beats
     // winograd3 on ResNet-20's 32- and 64-channel layers (forced, interleaved, 11 rounds:
     // (128, 32, 16, 16) 1.02x at 2 threads, 1.11x at 1; (128, 64, 8, 8) 1.02x, 1.10x) but not
     // on 128 channels ((64, 128, 8, 8) 0.83x, (8, 128, 14, 14) 0.93x).
     // With 8 lanes (AVX2), 5x5 and larger kernels over 8-16 input channels into 16 or 32
     // output channels take it at any width (AMD EPYC Zen 4, forced, 2 threads, 9 rounds:
     // (8, 16, 32, 32) -> 16 7x7 1.38 ms against direct's 1.51, -> 32 7x7 2.32 against 2.73,
     // 5x5 1.23 against 1.34; level at 8 channels; slower with 12, 24 or 64 output channels,
     // 3 or 32 input channels: (8, 16, 32, 32) -> 64 7x7 4.08 against 3.97). On an AVX2-only
     // Zen 3 also 16+ input channels into 32+, up to 3200 taps (forced, 2 threads, medians of 5,
     // against direct, ms: (8, 24, 27, 27) -> 64 5x5 3.63 against 4.85, (8, 48, 27, 27) -> 64
     // 8.9 against 10.6, (8, 128, 28, 28) -> 128 37.6 against 42.4, (8, 32, 28, 28) -> 32 2.37
     // against 3.05, (8, 16, 32, 32) -> 64 7x7 5.75 against 6.36, (4, 64, 56, 56) -> 64 7x7 39.6
     // against 42.7; level at (8, 64, 28, 28) -> 64 5x5; past 3200 taps slower: (2, 256, 14, 14)
     // -> 256 5x5 15.6 against 14.4; 12 -> 24 channels too, 1.34 against 0.94).
     // Deep layers (1152+ taps, e.g. 3x3 over 128+ channels) where winograd3 does not pay take
     // the tiles of several blocks at any width, their taps in runs that keep the weights in L2
     // (forced, 2 threads, against direct: (1, 512, 7, 7) 2.5 ms against 4.2, (1, 512, 28, 28)
     // 18.8 against 28.2, (1, 128, 16, 16) 0.38 against 0.50, (1, 192, 20, 20) 1.68 against
     // 1.59). The one-block tile (AVX2) goes past 2048 taps only for few positions (AVX2:
     // (1, 512, 7, 7) 4.6 against direct's 6.0, (1, 256, 14, 14) 2.3 against 2.7, but
     // (8, 512, 7, 7) 26.9 against 18.6).
     // Strided (2 at most; several-block tiles only): up to 1024 positions in all (256 for a
     // 1x1 kernel), the stages of a ResNet at batch 1-8 (forced, 2 threads, against the best
     // other row: (1, 256, 14, 14) -> 512 3x3 0.86 ms against im2col_gemm's 1.33, (8, 256, 14,
     // 14) -> 512 5.95 against direct's 6.65, (1, 64, 56, 56) -> 128 0.61 against 0.70, (1, 256,
     // 14, 14) -> 512 1x1 0.16 against 0.20; level at 196-784 positions; with more, slower:
     // (16, 64, 32, 32) -> 128 3.13 against winograd3_s2's 2.77; a 1x1 over 1024 channels
     // measured 20.4 ms against 13.9 then, 12.1 against 13.3 now: see deep_strided). Also at
     // any batch on narrow planes of few input channels, ResNet-20's downsampling layers
     // (forced, 2 threads, 11 calls, best of 2: (128, 32, 16, 16) -> 64 3x3 1.64 ms against
     // winograd3_s2's 2.12, (128, 16, 32, 32) -> 32
     // 1.77 against direct's 1.96, (128, 32, 14, 14) -> 64 1.39 against 1.67, 1x1 (128, 32, 16,
     // 16) -> 64 0.24 against 0.35, (128, 64, 8, 8) -> 128 3x3 1.78 against 3.24; but (128, 64,
     // 16, 16) -> 128 3x3 6.60 against winograd3_s2's 6.11, (8, 32, 64, 64) -> 64 1.65 against
     // direct's 1.53, 1x1 (16, 64, 32, 32) -> 128 0.48 against 0.44). Since then winograd3_s2
     // has caught up on 3x3 layers with 16-wide outputs and 512+ positions (2 threads, medians
     // of 9, against kvec, ms: ResNet-20's (128, 16, 32, 32) -> 32 1.83 against 2.06, (32, 32,
     // 32, 32) -> 64 1.37 against 1.63, (64, 16, 32, 32) -> 32 0.80 against 0.91, (1, 64, 56,
     // 56) -> 128 0.55 against 0.64; level at (128, 32, 16, 16) -> 64, 1.63 against 1.59, and
     // (1, 128, 28, 28) -> 256; kvec still leads on rows up to 7 wide: (32, 32, 14, 14) -> 64
     // 0.28 against 0.45).
     // 1x1 at stride 1 only on rows of 7 or 14 positions at AVX-512 (its tiles of 4 blocks x 7
     // positions): elsewhere direct leads (2 threads, medians of 7, against kvec, ms: (128, 64,
     // 8, 8) -> 256 1.26 against 1.91, (128, 32, 16, 16) -> 128 1.44 against 2.62, (128, 128, 4,
     // 4) -> 512 1.32 against 1.64, (16, 64, 8, 8) -> 256 0.16 against 0.21, AVX2 (one-block
     // tiles) (1, 1024, 14, 14) -> 256 0.81 against 1.26; but (16, 256, 7, 7) -> 1024 2.51
     // against 2.02, (16, 2048, 7, 7) -> 512 11.2 against 8.5, (1, 1024, 14, 14) -> 256 0.63
     // against 0.59, (4, 512, 14, 14) -> 512 2.57 against 2.27).
     [](const Conv2dShape& s, const KernelTable& kt) {
       // AVX2 (one-block tiles, the positions sw columns apart): batch-1 strided 3x3 layers of
       // 128-256 input channels on up to 196 output positions (ResNet-18/34/50's downsampling
       // layers; 2 threads, forced, interleaved, ms: (1, 128, 28, 28) -> 256 0.78-1.03 against
       // winograd3_s2's 0.92-1.51, (1, 256, 14, 14) -> 512 1.18-1.63 against direct's and
       // im2col_gemm's 1.58-1.82, 1 thread 1.91 against 2.45; level at 2 images or 512
       // channels, slower on (1, 64, 56, 56) -> 128 and 1x1 layers)
       if (!unit_stride(s) && !kt.conv_kvec_blocks)
         return s.N == 1 && s.R * s.S > 1 && s.C >= 128 && s.C <= 256 && s.P * s.Q <= 196;
       // With KernelTable::wide_fma, direct's tiles lead on rows wider than 12 (stride 1) or 8
       // (strided 3x3), where kvec's broadcasts of single input values feed fewer multiply-adds
       // a load (AMD EPYC Zen 5, forced, 2 threads, medians of 3 interleaved calls, against
       // direct, ms: (1, 256, 14, 14) -> 256 1.07 against 0.96, (8, 64, 14, 14) -> 64 0.40
       // against 0.31, (1, 192, 20, 20) -> 192 0.94 against 0.79; 1x1 (32, 256, 14, 14) -> 256
       // 3.29 against 2.27, (1, 1024, 14, 14) -> 256 0.48 against 0.33; stride 2 (8, 128, 28,
       // 28) -> 256 3.40 against 2.72, (32, ...) 13.9 against 10.8, (32, 32, 28, 28) -> 32 0.54
       // against 0.46, (128, 16, 28, 28) -> 32 0.98 against 0.84; rows of 7 or 8 keep kvec:
       // (8, 512, 7, 7) -> 512 6.66 against 7.57, (4, 256, 8, 8) -> 256 0.85 against 1.08,
       // (8, 256, 14, 14) -> 512 stride 2 3.53 against 3.92, (128, 32, 16, 16) -> 64 0.89
       // against 1.13; strided 1x1 layers too: (128, 16, 32, 32) -> 32 0.24 against 0.33)
       if (kt.wide_fma && s.R * s.S <= 9 && (unit_stride(s) || s.R * s.S > 1) &&
           s.Q > (unit_stride(s) ? 12 : 8))
         return false;
       if (!unit_stride(s)) {  // (applies: several-block tiles, 32+ output channels)
         const bool k1 = s.R * s.S == 1;
         return s.N * s.P * s.Q <= (k1 ? 256 : 512) || (s.C <= 32 && s.Q <= (k1 ? 16 : 15)) ||
                (s.C <= 64 && s.Q <= (k1 ? 8 : 4)) || deep_strided(s);
       }
       // 1x1: only rows of 7 or 14 (a ResNet-50's last stages) in tiles of several blocks
       if (s.R * s.S == 1 && (!kt.conv_kvec_blocks || s.K <= 16 || s.Q % 7 != 0)) return false;
       const int64_t taps = s.C * s.R * s.S;
       const bool deep_ok = taps <= 2048 || kt.conv_kvec_blocks || s.N * s.P * s.Q <= 256;
       return (s.Q < 16 && s.K >= 12 && !winograd3_pays(s, kt) && deep_ok) ||
              (kt.conv_kvec_blocks && s.K >= 32 && s.C <= 64 && s.Q <= 16) ||
              (kt.conv_kvec_blocks && s.K >= 32 && taps >= 1152 && !winograd3_pays(s, kt)) ||
              (kt.lanes < 16 && (s.K == 16 || s.K == 32) && s.C >= 8 && s.C <= 16 &&
               s.R * s.S >= 25) ||
              (kt.lanes == 8 && s.R * s.S >= 25 && s.C >= 16 && s.K >= 32 && taps <= 3200);
     },
     kSelfChecked, kvec_forward},
    // also dilated: its items then gather the phases' rows (see winograd_forward)
    {"winograd3",
     [](const Conv2dShape& s, const KernelTable& kt) {
       return special_dilated(s) && kt.wino_in_row && s.R == 3 && s.S == 3 && unit_stride(s);
     },
     // The plain transforms (SSE) pay on 64+ channels and planes 24+ wide only (forced A/B
     // against direct when AVX2 had them, 2 threads: 8x64x28x28 1.26x, 8x128x28x28 1.53x, VGG
     // 8x64x56x56 1.26x, but 8x32x56x56 0.97x, 128x64x8x8 0.89x, 128x32x16x16 0.44x). AVX2's own
     // (8 tiles a vector) pay where AVX-512's do (AMD EPYC Zen 4, forced, 2 threads, against the
     // best of direct and kvec: 8x32x56x56 2.68 ms against 3.11, 128x64x8x8 5.46 against 6.22,
     // 128x32x16x16 4.39 against 4.66, 32x32x16x16 1.12 against 1.19, 8x128x14x14 3.36 against
     // 4.17). A dilated layer: where its phases as one batch would take this row.
     [](const Conv2dShape& s, const KernelTable& kt) {
       // (where the phases would take winograd3_lanes, this row gathering them is faster:
       // (4, 64, 56, 56) dilation 2, forced, 2 threads, 2.96 ms against 3.11)
       if (s.dh > 1 || s.dw > 1) {
         const std::string sub = dilated_sub_plan(s);
         return sub == "winograd3" || sub == "winograd3_lanes";
       }
       return winograd3_pays(s, kt) && (!kt.wino_plain || (s.C >= 64 && s.Q >= 24));
     },
     true, winograd_forward},
    {"winograd3_s2",
     [](const Conv2dShape& s, const KernelTable& kt) {
       return special(s) && kt.wino_s2_in_row && s.R == 3 && s.S == 3 && s.sh == 2 && s.sw == 2;
     },
     // 32+ channels and 100 MFLOP of direct work (forced, 2 threads: with 16 channels direct
     // is faster even at batch 128, (128, 16, 32, 32) -> 32 3.6 ms against 4.5; (128, 32, 16,
     // 16) -> 64 3.3 against 3.7 and the benchmark set's strided layer 7.9 against 10.3 gain;
     // (32, 32, 16, 16) -> 64 ties at 75 MFLOP; at batch 1 direct is 2-3x faster). Since then
     // it leads with 16 channels too (2 threads, medians of 9, against direct, ms: (128, 16,
     // 32, 32) -> 32 1.90 against 2.11, (64, 16, 32, 32) 0.83 against 0.90, (16, 16, 64, 64)
     // 0.70 against 0.77, (8, 24, 56, 56) -> 48 0.59 against 0.69; AVX2 2.40 against 3.00,
     // 1.15 against 1.48, 1.10 against 1.45). At AVX2 also 7 output columns from 4 images (an
     // AVX2-only Zen 3, forced, 2 threads, medians of 5, against direct, the row planned before,
     // ms: (8, 512, 14, 14) -> 512 15.4 against 18.3, (16, 256, 14, 14) -> 512 12.9 against
     // 17.1, (4, 256, 14, 14) -> 512 4.16 against 5.01, (4, 128, 14, 14) -> 256 1.01 against
     // 1.15; level at 2 images, slower at 1: (1, 256, 14, 14) -> 512 3.65 against 2.39).
     // With KernelTable::wide_fma, not below 32 input channels on output rows up to 16 wide
     // (forced, AMD EPYC Zen 5, medians of 9 interleaved calls, against direct, ms, 2 threads /
     // 1 thread: (128, 16, 32, 32) -> 32 1.98 against 1.60 / 4.43 against 3.62, (64, 16, 32,
     // 32) 0.70 against 0.64 / 1.99 against 1.74; wider rows keep it: (32, 16, 56, 56) 0.85
     // against 0.93 / 2.52 against 2.70). Nor from 128 input channels on rows up to 14 (2
     // threads, medians of 3, against direct: (8, 128, 28, 28) -> 256 3.61 against 3.63,
     // (32, ...) 14.6 against 12.9, (1, ...) 1.16 against 0.49, (8, 256, 28, 28) -> 512 18.8
     // against 13.7; wider rows keep it: (8, 256, 56, 56) -> 512 47.3 against 50.8, (8, 128,
     // 56, 56) -> 256 11.8 against 12.1).
     [](const Conv2dShape& s, const KernelTable& kt) {
       const bool wide = s.Q >= 8 || (kt.lanes == 8 && s.Q == 7 && s.N >= 4);
       if (kt.wide_fma && ((s.C < 32 && s.Q <= 16) || (s.C >= 128 && s.Q <= 14))) return false;
       return s.C >= 16 && s.K >= 16 && wide && s.P >= 2 && direct_flops(s) >= 1e8 &&
              winograd_s2_columns_pay(s, kt);
     },
     true, winograd_s2_forward},
    {"winograd4_s2", four_by_four_s2,
     [](const Conv2dShape& s, const KernelTable&) {
       return winograd4_s2_pays(s, ConvDir::forward);
     },
     true, winograd4_s2_forward},
    {"dilated_phases", dilated_unit,
     [](const Conv2dShape& s, const KernelTable&) { return dilated_phases_pays(s); }, true,
     dilated_phases},
    // wider strides leave too many phases per input row
    {"direct",
     [](const Conv2dShape& s, const KernelTable&) { return special_dilated(s) && s.sw <= 4; },
     [](const Conv2dShape& s, const KernelTable& kt) { return !rgb_stem(s, kt); }, true,
     direct_forward},
    // At AVX-512 also groups of many channels (its row kernels share each input row load among
    // 4 output channels), where im2col_gemm's packed columns cost more (forced, 2 threads:
    // (8, 256, 14, 14) -> 256 groups 8 1.42 ms against 2.47, (8, 128, 28, 28) groups 4 2.60
    // against 4.23, (8, 48, 27, 27) -> 128 5x5 groups 2 4.98 against 5.92, (8, 96, 28, 28)
    // stride 2 groups 3 0.62 against 1.13; level at 128 channels a group). At AVX2 too, where
    // grouped does not take them (an AVX2-only AMD EPYC, Zen 3, forced, 2 threads, medians of
    // 7, against im2col_gemm: (8, 64, 28, 28) groups 8 1.24 ms against 3.54, 1x1 groups 4 0.31
    // against 0.39, (8, 64, 14, 14) groups 4 0.88 against 1.29, (8, 96, 28, 28) groups 8 1.96
    // against 4.82).
    {"depthwise", any,
     [](const Conv2dShape& s, const KernelTable& kt) {
       return few_per_group(s, kt) || rgb_stem(s, kt) || (kt.lanes >= 8 && s.G > 1);
     },
     true, depthwise_forward},
    {"rows", any, never, false, rows_forward},
    {"im2col_gemm", any, nullptr, true, im2col_gemm_forward},
};

// ---- input gradient ------------------------------------------------------------------------
const Row<BwdRun> kInputGrad[] = {
    {"grouped", grouped, grouped_pays, true, grouped_input_grad},
    // It computes over the zero border of the padded dy, so only "same"-like padding pays
    // where the ISA has the lanes kernel below (AVX-512, AVX2: LeNet-5 conv2, a valid 5x5 on
    // 14x14 at batch 64, one thread, AVX2 dx 0.39 ms by lanes against 0.78 this way); without
    // it, up to 2.5x the exact work still beats gemm_col2im (SSE's case; measured at AVX2
    // before it had lanes, 2 threads: LeNet-5 conv2 0.65 ms against 1.17 at batch 64).
    {"transposed_conv",
     [](const Conv2dShape& s, const KernelTable&) { return s.G == 1 && transposable(s); },
     [](const Conv2dShape& s, const KernelTable& kt) {
       return 4 * s.C >= 3 * round_up(s.C, kt.mr) &&
              (kt.conv_dx_lanes ? 3 * s.H * s.W <= 4 * s.P * s.Q : 2 * s.H * s.W <= 5 * s.P * s.Q);
     },
     true, dx_transposed_conv},
    {"winograd4_s2", four_by_four_s2,
     [](const Conv2dShape& s, const KernelTable&) {
       return winograd4_s2_pays(s, ConvDir::input_grad);
     },
     true, winograd4_s2_input_grad},
    {"rows_x",
     [](const Conv2dShape& s, const KernelTable& kt) {
       return special(s) && kt.conv_dx_rows && unit_stride(s) && s.S <= 16;
     },
     // (up to 8 output channels: with more, its sums over K R S taps per input position lose to
     // gemm_col2im, 2 threads, medians of 7, ms (these with the weight gradient): (4, 3, 224,
     // 224) -> 64 3x3 29.8 against 16.8, (128, 3, 32, 32) -> 16 2.42 against 1.86, (64, 1, 28,
     // 28) -> 32 1.01 against 0.85; LeNet-5's conv1 (64, 1, 28, 28) -> 6 5x5 0.27 against 0.32)
     [](const Conv2dShape& s, const KernelTable&) { return s.C <= 4 && s.K <= 8; }, true,
     dx_rows},
    // the transposed dy and dx of a group of 16 images within 16 MiB
    {"lanes",
     [](const Conv2dShape& s, const KernelTable& kt) {
       return special(s) && kt.conv_dx_lanes && unit_stride(s) &&
              dx_lanes_buf_floats(lanes_args(nullptr, nullptr, nullptr, s)) <= 4 * 1024 * 1024;
     },
     // Only while a group's transposed dy (16 K P Q floats) stays within 2 MiB: on larger planes
     // its reads miss the caches (forced, 2 threads, dx against gemm_col2im: (16, 6, 64, 64) ->
     // 32 3x3 4.3 ms against 1.5 at AVX-512, (16, 3, 64, 64) -> 32 4.1 against 1.6 at AVX2; LeNet-5
     // conv2, 100 K floats, 0.34 against 0.81 at AVX2; (32, 4, 32, 32) -> 16, 262 K, 0.62
     // against 0.81). Not below 5 input channels since (2 threads, medians of 7, with the weight
     // gradient, against gemm_col2im, AVX2: (64, 1, 28, 28) -> 32 2.12 ms against 0.92, (128,
     // 3, 32, 32) -> 16 3.26 against 3.10, (32, 4, 32, 32) -> 16 0.95 against 0.99; AVX-512
     // (128, 3, 32, 32) -> 16 2.94 against 1.86).
     [](const Conv2dShape& s, const KernelTable&) {
       return s.C >= 5 && s.C <= 8 && s.N >= 16 && 4 * s.N >= 3 * round_up(s.N, 16) &&
              16 * s.K * s.P * s.Q <= 512 * 1024;
     },
     true, dx_lanes},
    // at stride 1, the depthwise forward of dy with the flipped weights
    {"depthwise_transposed",
     [](const Conv2dShape& s, const KernelTable&) { return s.G > 1 && transposable(s); },
     few_per_group, true, dx_transposed_conv},
    {"depthwise", [](const Conv2dShape& s, const KernelTable&) { return s.R <= 64 && s.sw <= 16; },
     few_per_group, true, depthwise_input_grad},
    {"rows", any, never, false, rows_input_grad},
    // Its zero-padded GEMM rows are never stored, and col2im adds in-range terms only.
    {"gemm_col2im", any, nullptr, false, dx_gemm_col2im},
};

// ---- weight gradient -----------------------------------------------------------------------
// 1x1 stride-1 layers of 32+ channels each side over 2+ images: dW = dY X^T is one plain GEMM,
// and the packed gemm leads or comes within 10 % (2 threads, medians of 7, AVX-512, against
// kvec and dot, ms: (128, 64, 8, 8) -> 256 1.92 against 2.35 and 2.57, (32, 256, 14, 14) ->
// 256 4.80 against 5.61 and 7.05, (16, 256, 7, 7) -> 1024 2.77 against 4.25 and 4.13,
// (128, 32, 16, 16) -> 128 2.50 against 4.35 and 2.78; (8, 512, 28, 28) -> 128 5.24 against
// 4.78 and 6.38; AVX2: 1.95 against 5.63 and 3.34, 4.89 against 15.5 and 9.00, (8, 512, 28,
// 28) -> 128 5.39 against 14.9 and 8.85). At batch 1 kvec keeps them ((1, 1024, 14, 14) ->
// 256 0.67 against 0.73).
bool pointwise_gemm(const Conv2dShape& s) {
  return s.R * s.S == 1 && unit_stride(s) && s.N > 1 && s.C >= 32 && s.K >= 32;
}
const Row<BwdRun> kWeightGrad[] = {
    {"grouped", grouped, grouped_dw_pays, true, grouped_weight_grad},
    // 64+ channels on each side (full GEMM panels; with fewer, kvec and dot are faster: forced,
    // 2 threads, (128, 32, 16, 16) 4.1 ms against kvec's 3.7, (128, 16, 32, 32) 5.9 against dot's
    // 4.1): (128, 64, 8, 8) 3.26 against kvec's 3.59 (AVX2 3.83 against 4.61), VGG (8, 64, 56,
    // 56) 7.4 against 9.5 (AVX2 7.8 against 12.4), (16, 128, 28, 28) 12.0 against 18.6,
    // (4, 64, 28, 28) 0.97 against 1.31. Not 64 x 64 channels on odd planes whose tiles
    // cover 1.2x the outputs or more (forced, 2 threads, 9 calls, best of 2, against kvec:
    // (128, 64, 7, 7) 3.21 ms against 2.53, AVX2 3.70 against 3.29; (128, 64, 9, 9) 4.79
    // against 4.19; but (64, 64, 15, 15) 5.56 against 5.85, (16, 128, 7, 7) 1.32 against 1.65).
    // Batches of 16+ images (lanes three-quarters full or more), C and K multiples of 4. Its
    // sums stay in registers over a band of 4+ tiles, then go to the item's 16 K C sums, so it
    // leads wherever the item has tiles enough for those (AMD EPYC Zen 4, forced, 2 threads,
    // medians of 7, interleaved, against the row planned before, ms): up to 32 x 32 channels
    // everywhere but rows of 32+ columns with 16 x 16 channels below 64 images, where dot's
    // long rows catch up ((128, 16, 28, 28) 2.41 against kvec's 3.08, (128, 32, 7, 7) 0.57
    // against 0.66, (128, 32, 32, 32) 8.7 against 14.6; (16, 16, 64, 64) 1.96 against dot's
    // 1.68, (64, 16, 32, 32) 1.70-1.88 against 1.85-1.89, (128, 8, 32, 32) 2.03-2.10 against
    // 1.84-1.89 in earlier sessions); with more channels on rows up to 15 columns, and up to 27
    // with at most 64 x 64 ((128, 64, 8, 8) 2.00 against winograd3's 3.30, (128, 64, 16, 16)
    // 9.3 against 11.3, (128, 256, 256, 14) 101 against 107; but (128, 64, 28, 28) 31.1-32.1
    // against 31.0-31.6, (16, 64, 28, 28) 5.1-5.4 against 4.4-4.5 (the phases of a dilated
    // (4, 64, 56, 56) layer), (128, 128, 16, 16) 31.2 against 31.9); below 64 images, items
    // have fewer tiles: not above 128 x 128 channels ((32, 256, 7, 7) 13.7 against 8.9); at
    // most 256 x 256 (the item's sums: 16 K C floats, 4 MiB).
    {"winograd3_lanes",
     [](const Conv2dShape& s, const KernelTable& kt) {
       return special(s) && kt.wino_lanes_dw_item && s.R == 3 && s.S == 3 && unit_stride(s) &&
              s.C % 4 == 0 && s.K % 4 == 0;
     },
     [](const Conv2dShape& s, const KernelTable& kt) {
       if (s.N < 16 || 4 * s.N < 3 * round_up(s.N, 16)) return false;
       // AVX2 (the vectors in halves; measured on an AVX2-only AMD EPYC, Zen 3, L2 512 KiB, 2
       // threads, forced, against the best other row): up to 64 x 64 channels on rows below 28
       // ((128, 32, 16, 16) 4.6 ms against kvec's 6.0, (128, 64, 8, 8) 3.5 against 5.4,
       // (128, 64, 7, 7) 4.4 against 5.0), 16 x 16 below 32 ((128, 16, 28, 28) 6.3 against
       // 7.1); not 16 x 16 on 32+ ((128, 16, 32, 32) 6.2-7.1 against dot's 5.1-5.6), nor
       // 128 x 128 ((128, 128, 8, 8) 14.0 against winograd3's 13.2) or 64 x 64 on 28 (the band's
       // tiles overflow L2: 92 against 40)
       if (kt.lanes == 8)
         return s.C * s.K <= 64 * 64 && (s.Q < 28 || (s.C * s.K <= 256 && s.Q < 32));
       if (s.C <= 32 && s.K <= 32)
         return s.Q < 32 || s.C * s.K > 256 || (s.C * s.K == 256 && s.N >= 64);
       if (s.C * s.K > 256 * 256 || (s.N < 64 && s.C * s.K > 128 * 128)) return false;
       return s.Q < 16 || (s.Q < 28 && s.C * s.K <= 64 * 64);
     },
     true, winograd_lanes_weight_grad},
    {"winograd3",
     [](const Conv2dShape& s, const KernelTable& kt) {
       return special(s) && kt.wino_in_row && s.R == 3 && s.S == 3 && unit_stride(s);
     },
     // Batches of 2+: its items are chunks of images, so one image leaves a thread idle, where
     // kvec takes the layer (2 threads, forced, medians of 9, winograd3 against kvec:
     // (1, 128, 28, 28) 1.39 ms against 1.10, (1, 64, 56, 56) 1.60 against 1.12, (1, 64, 28, 28)
     // 0.47 against 0.30; at batch 2 winograd3 leads, 1.44 against 2.18, 1.71 against 2.18).
     // At AVX2, 256 x 256 channels or more on planes the 2x2 tiles fit badly (7x7: 64 outputs
     // for 49) below 512 tiles go to gemm (an AVX2-only AMD EPYC, Zen 3, forced, 2 threads,
     // medians of 5: (4, 512, 7, 7) -> 512 7.2 ms against 17.1, (8, 512, 7, 7) 14.5 against
     // 18.3, (8, 256, 7, 7) 3.9 against 5.2, (16, 256, 7, 7) 7.4 against 9.0; level at 128
     // channels; (32, 512, 7, 7) 36.9 against gemm's 46.3).
     // With KernelTable::wide_fma (AMD EPYC Zen 5), where gemm's multiply-adds run twice as fast,
     // not on planes the tiles fit badly, at batch 1 or 2, below 128 tiles, with under 128 channels
     // on a side, nor below 512 tiles under 256 x 256 channels (forced, 2 threads, medians of 3
     // interleaved calls, against the best other row, ms: (8, 512, 7, 7) -> 512 9.84 against gemm's
     // 6.59, (8, 128, 14, 14) 2.58 against 1.51, (4, 256, 8, 8) 1.87 against 1.05, (8, 64, 14, 14)
     // 0.86 against 0.43, (2, 64, 56, 56) 1.94 against kvec's 1.29, (8, 64, 56, 56) 5.83 against
     // 5.19 and 9.00 against 6.21 in a slow spell, (4, 128, 128, 128) -> 64 41.9 against 32.6; it
     // keeps (8, 256, 14, 14), 392 tiles, 5.18 against gemm's 6.31, (8, 128, 28, 28) 4.13 against
     // 5.19, (8, 512, 14, 14) 16.3 against 25.8).
     [](const Conv2dShape& s, const KernelTable& kt) {
       const int64_t tiles = s.N * tiles2x2(s);
       if (kt.wide_fma && (s.N <= 2 || tiles2x2_waste(s) || tiles < 128 ||
                           std::min(s.C, s.K) < 128 || (tiles < 512 && s.C * s.K < 256 * 256)))
         return false;
       if (s.C * s.K <= 64 * 64 && tiles2x2_waste(s)) return false;
       if (kt.lanes == 8 && s.C * s.K >= 256 * 256 && tiles2x2_waste(s) && tiles < 512)
         return false;
       return s.C >= 64 && s.K >= 64 && s.N >= 2 && s.N * tiles2x2(s) >= 64;
     },
     true, winograd3_weight_grad},
    // before kvec, whose strided tiles it beats on 4x4 stride-2 layers where it pays (a
    // conv_transpose2d's weight gradient (16, 64, 32, 32) -> 128 6.71 ms against kvec's 7.31)
    {"winograd4_s2", four_by_four_s2,
     [](const Conv2dShape& s, const KernelTable&) {
       return winograd4_s2_pays(s, ConvDir::weight_grad);
     },
     true, winograd4_s2_weight_grad},
    {"kvec",
     [](const Conv2dShape& s, const KernelTable& kt) {
       return special(s) && kt.conv_dw_kvec && s.S <= 7;
     },
     // narrow outputs, and wide ones with many taps per output channel (bench_kernels'
     // conv2d_algo rows at 2 threads: VGG 3x3 12.0 ms against dot's 15.0, 7x7 1.0 against 2.1;
     // 1x1 and 3-channel layers slower than dot). With 8 lanes (AVX2), rows up to 16 only
     // (forced, 2 threads, against dot: LeNet-5 conv2 0.51 ms against 1.00, (64, 16, 16, 16)
     // -> 32 2.85 against 3.31, 7x7 level; VGG 26.2 against 21.6, (128, 16, 32, 32) 15.8
     // against 10.6). A 3x3 layer with one block of 16 channels or fewer on rows 32+ wide goes
     // to dot (AMD EPYC Zen 4, forced, 2 threads: ResNet-20's (128, 16, 32, 32) -> 16 3.7 ms
     // against kvec's 4.3, (32, 16, 32, 32) 0.89 against 1.07; at 16 columns level, at 8 kvec
     // 2x faster; 5x5 and 7x7 kvec 1.1-1.2x faster).
     // Not deep layers (a weight of 256 K floats or more) over several images: their image
     // chunks' partial sums are whole weights (forced, 2 threads, against gemm: (2, 512, 7, 7)
     // -> 2048 1x1 2.20 ms against 1.42, (8, 512, 7, 7) -> 2048 10.7 against 5.6, (2, 512, 7,
     // 7) -> 512 3x3 5.18 against 4.02; at batch 1 kvec stays ahead, 0.78 against 1.04 and 1.94
     // against 2.61).
     // Strided layers (a column step in the kernel) but 1x1 ones, where gemm leads ((128, 16,
     // 32, 32) -> 32 0.34 ms against 0.72): against gemm and dot, 2 threads, medians of 7-9
     // (bench/timing.py), AVX-512: ResNet-20's (128, 16, 32, 32) -> 32 3x3 2.14 against 2.45
     // and 2.78, (128, 32, 16, 16) -> 64 1.68 against 2.09 and 4.22, (128, 8, 32, 32) -> 16
     // 0.52 against 0.77 and 0.64, (64, 32, 56, 56) -> 64 5x5 25.8 against 30.7 and 36.4,
     // stride 3 (32, 64, 15, 15) 0.51 against 0.83; level on rows of 28+ ((8, 64, 56, 56) ->
     // 128 4.98 against 4.95); AVX2 (8 lanes, rows up to 16): 3.26 against 3.92, 2.77 against
     // 3.05, 0.79 against 1.34 (dot). At batch 1 deep weights stay gemm's on rows up to 14
     // ((1, 256, 14, 14) -> 512 0.83 against 0.59, (1, 128, 28, 28) -> 256 0.62 against 0.58),
     // but not on wider ones ((1, 128, 56, 56) -> 256 2.22 against dot's 2.96 and gemm's 4.38,
     // (1, 128, 30, 30) 0.70 against 1.08 and 1.27); (1, 64, 56, 56) -> 128 0.61 against 0.78.
     // Since the faster col^T pack gemm also takes batch-1 weights of 4 M floats or more at
     // stride 1 ((1, 768, 7, 7) -> 768 3.12 ms against kvec's 4.58, (1, 1024, 7, 7) -> 1024
     // 5.76 against 8.96; level at 512 x 512), and at AVX2 (one-block tiles) every stride-1
     // weight of 256 K floats or more ((1, 512, 7, 7) -> 512 1.31 against 1.89, (1, 512, 14,
     // 14) -> 512 4.90 against 6.35, 1x1 (1, 1024, 14, 14) -> 256 0.58 against 1.80).
     [](const Conv2dShape& s, const KernelTable& kt) {
       if (pointwise_gemm(s)) return false;
       const int64_t weights = s.K * s.C * s.R * s.S;
       // (but 5x5+ kernels on rows of 24+ at stride 1, where the products outweigh the chunks'
       // partial weights: (32, 128, 28, 28) -> 128 5x5 94.4 ms against dot's 133 and gemm's
       // 106, (8, 192, 28, 28) -> 192 56.0 against 68.7; AVX2 111 against 179, 60.5 against
       // 77.8; on 14x14 level with gemm, (8, 256, 14, 14) -> 256 31.4 against 28.4)
       const bool wide5 = unit_stride(s) && s.R * s.S >= 25 && s.Q >= 24;
       if (weights >= 256 * 1024 && !wide5 &&
           (s.N > 1 || (!unit_stride(s) && s.Q < 15) ||
            (unit_stride(s) && (kt.lanes < 16 || weights >= 4 * 1024 * 1024))))
         return false;
       if (!unit_stride(s) && s.R * s.S == 1) return false;
       // With KernelTable::wide_fma, gemm also takes stride-1 layers of 64+ input channels on
       // rows up to 16 over several images, and batch-1 weights of 256 K floats on rows up to 14
       // (forced, AMD EPYC Zen 5, 2 threads, medians of 3, against kvec, ms: (4, 256, 8, 8) ->
       // 256 1.05 against 1.84, (8, 96, 12, 12) 0.85 against 1.07, (8, 128, 14, 14) 1.51 against
       // 1.88, (8, 64, 14, 14) 0.43 against 0.48; (1, 512, 7, 7) -> 512 0.82 against 1.27,
       // (1, 256, 14, 14) -> 256 0.71 against 0.82, 1x1 (1, 1024, 14, 14) -> 256 0.31 against
       // 0.48; kvec keeps (1, 128, 16, 16) -> 128, 0.25 against 0.41, and (1, 192, 20, 20), 0.84
       // against 1.44)
       if (kt.wide_fma && unit_stride(s) && s.R * s.S <= 9 &&
           ((s.N >= 2 && s.C >= 64 && s.Q <= 16) || (weights >= 256 * 1024 && s.Q <= 14)))
         return false;
       // (AVX2: 5x5 and larger kernels on rows up to 32, (32, 32, 28, 28) -> 64 5x5 15.2 ms
       // against dot's 20.8, (16, 16, 32, 32) -> 32 5x5 2.60 against 2.89; but 7x7 on 56
       // columns dot, 27.9 against 33.1)
       if (kt.lanes < 16)
         return s.K >= 12 && (s.Q <= 16 || (s.R * s.S >= 25 && s.Q <= 32));
       if (!unit_stride(s)) return s.K >= 12 && (s.Q <= 16 || s.C >= 16);
       if (s.K <= 16 && s.Q >= 32 && s.R * s.S <= 9) return false;
       return s.K >= 12 && (s.Q < 16 || (s.R * s.S >= 9 && s.C >= 16));
     },
     true, dw_kvec},
    {"dilated_phases", dilated_unit,
     [](const Conv2dShape& s, const KernelTable&) { return dw_dilated_phases_pays(s); }, true,
     dw_dilated_phases},
    {"dot",
     [](const Conv2dShape& s, const KernelTable& kt) {
       return special_dilated(s) && kt.conv_dw_tile != nullptr;
     },
     // strided layers with 32+ input channels and small kernels go to gemm (forced, 2 threads:
     // ResNet-20's 32 -> 64 3x3 stride 2 at batch 128 5.4 ms against 9.2, the benchmark set's
     // strided layer 9.7 against 12.1, a 4x4 stride-2 layer 11.5 against 13.8, 1x1 stride 2 0.8
     // against 1.6; with 16 channels or 7x7 kernels dot stays ahead). The AVX2 tiles (forced,
     // 2 threads, gemm / dot): LeNet-5 conv1 3.68, conv2 1.46, 7x7 2.11, VGG 1.07, 1x1 1.06.
     // Deep layers on narrow rows go to gemm as well (dot's rows are short: forced, 2 threads,
     // (8, 512, 7, 7) -> 2048 1x1 7.6 ms against 5.6, (1, 512, 7, 7) -> 512 3x3 4.9 against 2.6,
     // (4, 1024, 14, 14) -> 256 1x1 2.7 against 2.4).
     // But at batch 1 strided 3x3 and 4x4 layers keep dot on 28+ columns, and on 14+ up to 128
     // channels (2 threads, medians of 11 calls, two interleaved rounds, dot (the new plan)
     // against gemm (the old): (1, 64, 56, 56) -> 128 0.77-0.79 ms against 1.22-1.33,
     // (1, 128, 28, 28) -> 256 1.00-1.01 against 1.33-1.39, (1, 32, 112, 112) -> 64 0.76
     // against 1.41-1.49; at batch 2 and more gemm held ((2, 64, 56, 56) 1.28-1.53 against dot's
     // 1.47-1.49, (16, 32, 32, 32) -> 64 0.96-1.12 against 1.20-1.24), and (1, 256, 14, 14) ->
     // 512 stays gemm's, 1.21 against dot's 2.34 forced). Since the faster col^T pack (4d77e2f)
     // gemm leads on rows of 14 ((1, 128, 28, 28) -> 256 0.58 ms against dot's 1.00, AVX2 0.64
     // against 1.29), and kvec takes most of the rest at AVX-512 (its row above).
     // Strided 1x1 and 3x3 layers with fewer channels go to gemm on narrow outputs too (forced,
     // 2 threads, medians of 7 interleaved, dot against gemm: ResNet-20's 16 -> 32 1x1 shortcut
     // (128, 16, 32, 32) 1.32 ms against 0.73, (128, 8, 14, 14) -> 16 1x1 0.50 against 0.10,
     // its 16 -> 32 3x3 (128, 16, 32, 32) 3.29 against 2.91, (128, 24, 28, 28) -> 48 6.9 against
     // 4.6, (32, 16, 14, 14) -> 32 0.23 against 0.19 (AVX2 0.25 against 0.33: there 3x3 below
     // 128 images stays dot); but (32, 16, 32, 32) -> 32 3x3 0.58 against 0.73, (64, 16, 32,
     // 32) -> 32 1.24 against 1.69, and with 8 channels 3x3 dot leads, (128, 8, 32, 32) 1.15
     // against 1.33).
     [](const Conv2dShape& s, const KernelTable& kt) {
       if (pointwise_gemm(s)) return false;
       const bool wide = s.N == 1 && s.R * s.S >= 9 && s.Q >= 28;
       const bool strided = special(s) && !unit_stride(s);
       if (special(s) && s.Q < 16 && s.C * s.R * s.S >= 512 && !wide) return false;
       if (strided && s.R * s.S == 1 && (s.Q <= 8 || (s.C >= 16 && s.Q <= 16))) return false;
       if (strided && s.R * s.S == 9 && s.C >= 16 &&
           ((s.N >= 128 && s.Q <= 16) || (kt.lanes == 16 && s.Q <= 7)))
         return false;
       return wide || !(strided && s.C >= 32 && s.R * s.S <= 16);
     },
     true, dw_dot},
    {"gemm", [](const Conv2dShape& s, const KernelTable&) { return special(s); }, nullptr, true,
     dw_gemm},
    {"depthwise", any, few_per_group, true, depthwise_weight_grad},
    {"rows", any, never, false, rows_weight_grad},
    {"im2col_gemm", any, nullptr, true, dw_im2col_gemm},
};

template <class Run, size_t N>
const Row<Run>* find(const Row<Run> (&table)[N], const std::string& name) {
  for (const auto& r : table)
    if (name == r.name) return &r;
  return nullptr;
}

std::string g_forced[3];

// The rows to try, in order: the forced one first (when it applies), then every row that applies
// and pays. When the operands are not all finite (is_finite(), asked only when a row's choice
// depends on it: a scan of a deep layer's weights, 4 MB, took a tenth of a batch-1 1x1 layer),
// rows that multiply stand-in zeros are left out and the others run whether their cost model
// likes the shape or not.
template <class Run, size_t N, class Fin, class F>
void run_table(const Row<Run> (&table)[N], const std::string& forced, const Conv2dShape& s,
               Fin&& is_finite, F&& call) {
  const KernelTable& kt = *g_kernels;
  int known = -1;  // is_finite(), once asked
  auto finite = [&] {
    if (known < 0) known = is_finite() ? 1 : 0;
    return known == 1;
  };
  if (!forced.empty()) {
    const Row<Run>* r = find(table, forced);
    if (r && r->applies(s, kt) && (r->zeros != true || finite()) && call(r->run)) return;
  }
  for (const auto& r : table) {
    if (!r.applies(s, kt)) continue;
    const bool pays = !r.pays || r.pays(s, kt);
    bool runs = pays;                          // (kSelfChecked: declines if it must)
    if (r.zeros == true) runs = pays && finite();
    else if (!r.zeros) runs = pays || !finite();
    if (runs && call(r.run)) return;
  }
  // unreachable: the last row applies to everything and never declines
}

template <class Run, size_t N>
std::string plan_of(const Row<Run> (&table)[N], const Conv2dShape& s) {
  const KernelTable& kt = *g_kernels;
  for (const auto& r : table)
    if (r.applies(s, kt) && (!r.pays || r.pays(s, kt))) return r.name;
  return "";
}

template <class Run, size_t N>
std::vector<std::string> names_of(const Row<Run> (&table)[N]) {
  std::vector<std::string> v;
  for (const auto& r : table) v.push_back(r.name);
  return v;
}

// db[k] (or per-channel sums of any (N, K, PQ) array): 16 float lanes per image (vectorised,
// fixed order), added into 16 float64 lanes over the images (KernelTable::plane_sums).
void channel_sums(float* db, const float* dy, int64_t N, int64_t K, int64_t PQ) {
  const auto sums = g_kernels->plane_sums;
  parallel_for(K, 4.0 * N * K * PQ, [&](int64_t k) {
    db[k] = static_cast<float>(sums(dy + k * PQ, N, K * PQ, PQ));
  });
}

// f(the table of direction d)
template <class F>
auto with_table(ConvDir d, F&& f) {
  switch (d) {
    case ConvDir::forward: return f(kForward);
    case ConvDir::input_grad: return f(kInputGrad);
    case ConvDir::weight_grad: return f(kWeightGrad);
  }
  throw std::invalid_argument("conv2d: unknown direction");
}

// With bn (an evaluation-mode batch norm for the output): the lanes row applies it as its items
// store their outputs (on planes of bn_terms_by_block's size); returns whether it was applied.
bool forward(float* y, const float* x, const float* w, const float* b, const Conv2dShape& s,
             const std::string& forced, bool finite_known = false,
             const BnTerms* bn = nullptr) {
  const int64_t PQ = s.P * s.Q, CRS = group_in(s) * s.R * s.S;
  if (s.N == 0 || s.K == 0 || PQ == 0) return false;
  if (CRS == 0) {  // no input channels: the output is the bias
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t k = 0; k < s.K; ++k)
        std::fill(y + (n * s.K + k) * PQ, y + (n * s.K + k + 1) * PQ, b ? b[k] : 0.f);
    return false;
  }
  const bool lanes_bn = bn && bn_terms_by_block(PQ);
  bool applied = false;
  run_table(kForward, forced, s, [&] { return finite_known || all_finite(w, s.K * CRS); },
            [&](FwdRun run) {
              if (lanes_bn && run == winograd_lanes_forward)
                return applied = winograd_lanes_forward_bn(y, x, w, b, s, bn);
              return run(y, x, w, b, s);
            });
  return applied;
}

// One group of s as a dense layer.
Conv2dShape group_shape(const Conv2dShape& s) {
  Conv2dShape t = s;
  t.C = group_in(s);
  t.K = group_out(s);
  t.G = 1;
  return t;
}

// Channels [c0, c0 + cn) of N images of ctot channels (hw floats each) into dst (N, cn, hw),
// or (back) from it: one contiguous run per image.
void copy_channels(float* dst, const float* src, int64_t N, int64_t ctot, int64_t c0, int64_t cn,
                   int64_t hw, bool back) {
  parallel_for(N, kCopyCost * N * cn * hw, [&](int64_t n) {
    float* a = back ? dst + (n * ctot + c0) * hw : dst + n * cn * hw;
    const float* b = back ? src + n * cn * hw : src + (n * ctot + c0) * hw;
    std::memcpy(a, b, sizeof(float) * cn * hw);
  });
}

// The groups run side by side, one a thread at a time (each group's dense layer then runs
// serially in its thread: parallel_for inside a job does), where they divide evenly among the
// threads; else one after another, each spread over the threads. One after another, each group
// paid three waits for the threads (gather, layer, scatter): (8, 256, 14, 14) in 8 groups, 2
// threads, forward 1.76 ms against PyTorch's 1.63. The bits are the same either way (each row's
// blocking depends on the shape only).
template <class Fn>
void each_group(const Conv2dShape& s, Fn&& fn) {
  const int64_t T = get_num_threads();
  if (T > 1 && s.G % T == 0) {
    parallel_for(s.G, direct_flops(s), [&](int64_t g) { fn(g); });
    return;
  }
  for (int64_t g = 0; g < s.G; ++g) fn(g);
}

bool grouped_forward(float* y, const float* x, const float* w, const float* b,
                     const Conv2dShape& s) {
  const Conv2dShape t = group_shape(s);
  const int64_t HW = s.H * s.W, PQ = s.P * s.Q;
  each_group(s, [&](int64_t g) {
    float* xg = scratch(Buf::grouped_a, s.N * t.C * HW);
    float* yg = scratch(Buf::grouped_b, s.N * t.K * PQ);
    copy_channels(xg, x, s.N, s.C, g * t.C, t.C, HW, false);
    forward(yg, xg, w + g * t.K * t.C * t.R * t.S, b ? b + g * t.K : nullptr, t, "", true);
    copy_channels(y, yg, s.N, s.K, g * t.K, t.K, PQ, true);
  });
  return true;
}

// Each group g of s (each_group): its slice of dy (N images of K / G channels) gathered into a
// contiguous buffer, with x its slice of x too, then fn(g, t, dyg, xg), t one group's dense shape.
template <class Fn>
void each_group_grad(const Conv2dShape& s, const float* dy, const float* x, Fn&& fn) {
  const Conv2dShape t = group_shape(s);
  const int64_t HW = s.H * s.W, PQ = s.P * s.Q;
  each_group(s, [&](int64_t g) {
    float* dyg = scratch(Buf::grouped_a, s.N * t.K * PQ);
    float* xg = x ? scratch(Buf::grouped_b, s.N * t.C * HW) : nullptr;
    copy_channels(dyg, dy, s.N, s.K, g * t.K, t.K, PQ, false);
    if (x) copy_channels(xg, x, s.N, s.C, g * t.C, t.C, HW, false);
    fn(g, t, dyg, xg);
  });
}

bool grouped_input_grad(float* dx, const float* dy, const float* w, const Conv2dShape& s) {
  each_group_grad(s, dy, nullptr, [&](int64_t g, const Conv2dShape& t, const float* dyg,
                                      const float*) {
    float* dxg = scratch(Buf::grouped_b, s.N * t.C * s.H * s.W);
    const float* wg = w + g * t.K * t.C * t.R * t.S;
    run_table(kInputGrad, "", t, [] { return true; },
              [&](BwdRun run) { return run(dxg, dyg, wg, t); });
    copy_channels(dx, dxg, s.N, s.C, g * t.C, t.C, s.H * s.W, true);
  });
  return true;
}

bool grouped_weight_grad(float* dw, const float* dy, const float* x, const Conv2dShape& s) {
  each_group_grad(s, dy, x, [&](int64_t g, const Conv2dShape& t, const float* dyg,
                                const float* xg) {
    float* dwg = dw + g * t.K * t.C * t.R * t.S;  // the group's weights are contiguous
    run_table(kWeightGrad, "", t, [] { return true; },
              [&](BwdRun run) { return run(dwg, dyg, xg, t); });
  });
  return true;
}

}  // namespace

void forward_planned(float* y, const float* x, const float* w, const float* b,
                     const Conv2dShape& s) {
  forward(y, x, w, b, s, "", true);
}

}  // namespace conv

using namespace conv;

void conv2d_forward(float* y, const float* x, const float* w, const float* b,
                    const Conv2dShape& s) {
  forward(y, x, w, b, s, g_forced[0]);
}

void conv2d_bn_forward(float* y, const float* x, const float* w, const float* b,
                       const Conv2dShape& s, const double* mean, const double* var,
                       const float* bn_weight, const float* bn_bias, double eps, bool relu,
                       const float* add) {
  const std::vector<float> terms = bn_eval_terms(mean, var, bn_weight, bn_bias, eps, s.K);
  const BnTerms t = bn_terms_view(terms, s.K, add, relu);
  // after a row that did not apply it, the norm's own pass (batch_norm_forward's)
  if (!forward(y, x, w, b, s, g_forced[0], false, &t)) bn_terms_pass(y, y, s.N, s.K, s.P * s.Q, t);
}

void conv2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x,
                     const float* w, const Conv2dShape& s) {
  const int64_t PQ = s.P * s.Q, CRS = group_in(s) * s.R * s.S;
  if (db) channel_sums(db, dy, s.N, s.K, PQ);
  if (dx && s.N > 0 && s.C > 0 && s.H > 0 && s.W > 0) {
    if (s.K == 0 || PQ == 0 || CRS == 0) {
      std::fill(dx, dx + s.N * s.C * s.H * s.W, 0.f);
    } else {
      run_table(kInputGrad, g_forced[1], s, [&] { return all_finite(w, s.K * CRS); },
                [&](BwdRun run) { return run(dx, dy, w, s); });
    }
  }
  if (dw && s.K > 0 && CRS > 0) {
    if (s.N == 0 || PQ == 0) {
      std::fill(dw, dw + s.K * CRS, 0.f);
      return;
    }
    // The zeros these paths multiply meet dy (and x's finite values): a NaN or Inf in dy (or an
    // Inf in x) shows up as a non-finite result, which is then recomputed without them.
    run_table(kWeightGrad, g_forced[2], s, [] { return true; },
              [&](BwdRun run) { return run(dw, dy, x, s); });
    if (!all_finite(dw, s.K * CRS))
      run_table(kWeightGrad, "", s, [] { return false; },
                [&](BwdRun run) { return run(dw, dy, x, s); });
  }
}

void conv_transpose2d_forward(float* y, const float* x, const float* w, const float* b,
                              const Conv2dShape& s) {
  const int64_t HW = s.H * s.W;
  if (s.N == 0 || s.C == 0 || HW == 0) return;
  conv2d_backward(y, nullptr, nullptr, x, nullptr, w, s);
  if (b)
    parallel_for(s.N * s.C, 1.0 * s.N * s.C * HW, [&](int64_t i) {
      float* yi = y + i * HW;
      const float v = b[i % s.C];
      for (int64_t j = 0; j < HW; ++j) yi[j] += v;
    });
}

void conv_transpose2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x,
                               const float* w, const Conv2dShape& s) {
  if (db) channel_sums(db, dy, s.N, s.C, s.H * s.W);
  if (s.H * s.W == 0) {  // an empty output: nothing reaches x or w
    if (dx) std::fill(dx, dx + s.N * s.K * s.P * s.Q, 0.f);
    if (dw) std::fill(dw, dw + s.K * group_in(s) * s.R * s.S, 0.f);
    return;
  }
  if (dx) conv2d_forward(dx, dy, w, nullptr, s);
  if (dw) conv2d_backward(nullptr, dw, nullptr, x, dy, w, s);
}

std::vector<std::string> conv2d_algorithms(ConvDir d) {
  return with_table(d, [](const auto& table) { return names_of(table); });
}

std::string conv2d_plan(const Conv2dShape& s, ConvDir d) {
  return with_table(d, [&](const auto& table) { return plan_of(table, s); });
}

bool conv2d_applies(const Conv2dShape& s, ConvDir d, const std::string& name) {
  return with_table(d, [&](const auto& table) {
    const auto* r = find(table, name);
    if (!r) throw std::invalid_argument("conv2d: no algorithm named '" + name + "'");
    return r->applies(s, *g_kernels);
  });
}

void conv2d_force(ConvDir d, const std::string& name) {
  with_table(d, [&](const auto& table) {
    if (!name.empty() && !find(table, name))
      throw std::invalid_argument("conv2d: no algorithm named '" + name + "'");
    return 0;
  });
  g_forced[static_cast<int>(d)] = name;
}

}  // namespace convkit
