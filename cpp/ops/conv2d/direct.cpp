// Direct forward convolution: the implicit im2col read in place from (padded, phase-split)
// input rows by the GEMM micro-kernel, and the channels-in-lanes tile for narrow outputs.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "ops/conv2d/conv2d_internal.h"

namespace convkit {
namespace conv {
// Convolution on a "wide" grid of positions j' = p * Wq + q, where row (c, r, t) of the implicit
// im2col is a contiguous run base + off(c, r, t) + j' that the micro-kernel reads in place (no
// im2col at all). Columns q >= Q of the wide grid are computed and dropped: the ISA's
// compacting store (gemm_direct_wide) writes the rest straight into y, else tiles go to a
// buffer that is copied out; when Wq == Q the wide grid is the output and tiles land in y
// directly. When the dropped columns would waste more than tiles kept within each output row,
// tiles go by row.
// Dilation (dh, dw) puts tap (r, t) at (r*dh, t*dw) of the window; below, r and t stand for those.
//   Stride 1: the zero-padded input itself, Wq = Wp = W + 2pw, off = c*plane + r*Wp + t. Each
//   item pads just the input rows it reads into its own buffer (hot in cache when the kernel
//   reads it); without padding the kernel reads x itself.
//   Stride (sh, sw): each item splits the input rows it reads into sh row phases and sw column
//   phases (Wq = ceil(Wp / sw) wide): buffer row l of phase (fr, fc) holds columns fc, fc + sw,
//   ... of input row hbase + l * sh + fr (hbase = p0 * sh - ph). Tap (r, t) of output row
//   p0 + pl then sits in phase (r % sh, t % sw) at row pl + r / sh, column q + t / sw: rows and
//   columns adjacent again, and each input row copied once.
bool direct_forward(float* y, const float* x, const float* w, const float* b,
                    const Conv2dShape& s) {
  const KernelTable& kt = *g_kernels;
  float* apack = scratch(Buf::direct_weights, round_up(s.K, kt.mr) * s.C * s.R * s.S);
  pack_weights(apack, MatView{w, s.C * s.R * s.S, 1}, s.K, s.C * s.R * s.S, kt.mr);
  const bool unit = s.sh == 1 && s.sw == 1;
  const int64_t Wp = s.W + 2 * s.pw, Wq = (Wp + s.sw - 1) / s.sw;
  const int64_t CRS = s.C * s.R * s.S, PQ = s.P * s.Q;
  // Output rows per item: the wide tile buffer K x rows x Wq stays near 256 KiB, and there are
  // enough items for the threads.
  int64_t rows = std::max<int64_t>(1, (64 * 1024) / std::max<int64_t>(s.K * Wq, 1));
  if (!unit)  // and the phase-split input rows near 512 KiB
    rows = std::min(rows, std::max<int64_t>(1, (128 * 1024) / (s.C * s.sh * s.sw * Wq) - (s.R - 1) * s.dh / s.sh));
  // per image: one block per thread (with two, 8-wide output rows in pairs shared cache lines
  // between items: (1, 32, 16, 16) -> 64 stride 2 took 44 us on 2 threads, 37 now)
  const int64_t want_blocks = (get_num_threads() + s.N - 1) / s.N;
  rows = std::min({rows, s.P, std::max<int64_t>(1, (s.P + want_blocks - 1) / want_blocks)});
  const int64_t nblk = (s.P + rows - 1) / rows;
  rows = (s.P + nblk - 1) / nblk;  // blocks as even as they come
  const bool own = !unit || s.ph || s.pw;  // items build their own input buffer
  // floats per input channel in the buffer the kernel reads
  const int64_t L = rows + (s.R - 1) * s.dh / s.sh;  // buffer rows per phase (strided)
  const int64_t plane = !unit ? s.sh * s.sw * L * Wq : own ? (rows + (s.R - 1) * s.dh) * Wp : s.H * s.W;
  thread_local std::vector<int64_t> off;
  off.resize(static_cast<size_t>(CRS));
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t r = 0; r < s.R; ++r)
      for (int64_t t = 0; t < s.S; ++t)
        off[(c * s.R + r) * s.S + t] =
            unit ? c * plane + r * s.dh * Wp + t * s.dw
                 : c * plane + ((r * s.dh % s.sh) * s.sw + t * s.dw % s.sw) * L * Wq +
                       (r * s.dh / s.sh) * Wq + t * s.dw / s.sw;
  const int64_t* offp = off.data();

  const bool exact = Wq == s.Q;
  // One pass over the reduction up to the ISA's direct_kc, else the GEMM's blocks.
  const int64_t kcmax = CRS <= kt.direct_kc ? CRS : gemm_kc(CRS);
  const int MR = kt.mr, NR = kt.nr;
  // Tiles along the wide grid waste its Wq - Q dropped columns and need a copy-out; tiles kept
  // within one output row waste the part of the last tile past Q but store into y directly.
  // Take whichever computes fewer useless columns (the copy-out counted as 3 %).
  // With a compacting store (one pass over the reduction) the wide tiles go straight into y.
  const bool compact = !exact && kt.gemm_direct_wide && kcmax == CRS;
  const int64_t width_max = (rows - 1) * Wq + s.Q;
  const double eff_wide =
      1.0 * rows * s.Q / round_up(width_max, NR) * (exact || compact ? 1.0 : 0.97);
  const double eff_row = 1.0 * s.Q / round_up(s.Q, NR);
  const bool by_row = !exact && eff_row >= eff_wide;
  parallel_for(s.N * nblk, 2.0 * s.N * s.K * CRS * PQ, [&](int64_t item) {
    const int64_t n = item / nblk, p0 = (item % nblk) * rows, p1 = std::min(s.P, p0 + rows);
    const float* xn = x + n * s.C * s.H * s.W;
    const float* base = xn + p0 * Wp;
    if (own) {
      float* buf = scratch(Buf::direct_rows, s.C * plane);
      if (unit) {  // input rows p0 - ph .. p1 - 1 + R - 1 - ph, zero outside the image
        for (int64_t c = 0; c < s.C; ++c)
          pad_rows(buf + c * plane, Wp, xn + c * s.H * s.W, s.H, s.W, p0 - s.ph,
                   p1 - p0 + (s.R - 1) * s.dh, s.pw);
      } else {  // input rows hbase .. into their (row, column) phases
        const int64_t hbase = p0 * s.sh - s.ph, nrows = (p1 - p0 - 1) * s.sh + (s.R - 1) * s.dh + 1;
        for (int64_t c = 0; c < s.C; ++c)
          for (int64_t fr = 0; fr < std::min(s.sh, nrows); ++fr)  // input rows hbase + fr + l*sh
            split_rows(buf + c * plane + fr * s.sw * L * Wq, Wq, L * Wq, xn + c * s.H * s.W, s.H,
                       s.W, hbase + fr, s.sh, (nrows - fr + s.sh - 1) / s.sh, s.pw, s.sw, Wq);
      }
      base = buf;
    }
    const int64_t width = (p1 - p0 - 1) * Wq + s.Q;
    float* yn = y + n * s.K * PQ;
    // one NR-wide tile of the grid: columns [jr, jr + nr) of buffer `base`, output tile c
    auto tile = [&](int64_t pc, int64_t kc, int64_t jr, int nr, float* c, int64_t ldc) {
      for (int64_t ir = 0; ir < s.K; ir += MR) {
        const int mr = static_cast<int>(std::min<int64_t>(MR, s.K - ir));
        kt.gemm_direct(kc, apack + ir * CRS + pc * MR, base + jr, offp + pc, c + ir * ldc, ldc,
                       mr, nr, pc > 0, (pc == 0 && b) ? b + ir : nullptr);
      }
    };
    if (by_row) {  // tiles within one output row, stored straight into y
      for (int64_t pc = 0; pc < CRS; pc += kcmax) {
        const int64_t kc = std::min(kcmax, CRS - pc);
        for (int64_t p = p0; p < p1; ++p)
          for (int64_t q0 = 0; q0 < s.Q; q0 += NR)
            tile(pc, kc, (p - p0) * Wq + q0, static_cast<int>(std::min<int64_t>(NR, s.Q - q0)),
                 yn + p * s.Q + q0, PQ);
      }
      return;
    }
    if (compact) {
      for (int64_t jr = 0; jr < width; jr += NR)
        for (int64_t ir = 0; ir < s.K; ir += MR)
          kt.gemm_direct_wide(CRS, apack + ir * CRS, base + jr, offp, yn + ir * PQ + p0 * s.Q, PQ,
                              static_cast<int>(std::min<int64_t>(MR, s.K - ir)),
                              static_cast<int>(std::min<int64_t>(NR, width - jr)),
                              b ? b + ir : nullptr, jr, Wq, s.Q);
      return;
    }
    const int64_t ldc = exact ? PQ : width;
    float* cw = exact ? yn + p0 * s.Q : scratch(Buf::direct_tiles, s.K * width);
    for (int64_t pc = 0; pc < CRS; pc += kcmax) {
      const int64_t kc = std::min(kcmax, CRS - pc);
      for (int64_t jr = 0; jr < width; jr += NR)
        tile(pc, kc, jr, static_cast<int>(std::min<int64_t>(NR, width - jr)), cw + jr, ldc);
    }
    if (!exact)
      for (int64_t k = 0; k < s.K; ++k)
        kt.phase_split_rows(yn + k * PQ + p0 * s.Q, s.Q, 0, cw + k * width, Wq, p1 - p0, s.Q, 0,
                            1, s.Q);
  });
  return true;
}

// Convolution of narrow images (few output columns: lanes along a row would mostly idle) or of
// deep layers with the ISA's channel-vectorised tile: 16 output channels in the lanes, two
// output rows of up to 12 positions per tile; items (image, block of 16 output channels). With
// 32+ output channels and conv_kvec_blocks, tiles of 2 or 4 blocks x one row of 4-14 positions
// (also strided: position i of a tile reads i * sw columns on); items (image, group of blocks,
// run of rows).
// flipped: w is not the layer's weights but those of the convolution whose input gradient this
// layer is (kvec_forward_flipped), laid out here straight from them.
static bool kvec_run(float* y, const float* x, const float* w, const float* b,
                     const Conv2dShape& s, bool flipped) {
  const bool unit = s.sh == 1 && s.sw == 1;  // else only the several-block tiles (planner)
  const int64_t Hp = s.H + 2 * s.ph, Wp = s.W + 2 * s.pw, plane = Hp * Wp;
  const int64_t CRS = s.C * s.R * s.S, PQ = s.P * s.Q;
  const int64_t kblocks = (s.K + 15) / 16;
  // weights as [block][crs][16], zero-padded past K
  // (per call, so kept cheap: at batch 1 this setup was a fifth of LeNet-5's conv2)
  // (zero blocks up to a multiple of 4: a tile of 4 blocks may read them, storing nothing;
  // per call, so transposed in registers: scalar, this was a fifth of a 64-channel 8x8 layer)
  // Tiles of nb blocks (conv_kvec_blocks, 2+ blocks; below): 4, or 2 below 4 blocks. With
  // KernelTable::wide_fma 3 on rows of 7 (a ResNet's last stage): 4 x 7 = 28 sums leave no
  // register for the broadcast input value, so each of the 28 multiply-adds reads it from
  // memory, and the loads, not the multiply-adds, set the pace where the multiply-adds run at
  // full width (the tile alone in L1, AMD EPYC Zen 5, 1 thread: 4 x 7 113-136 GFLOP/s, 3 x 7
  // 207-212; on a Zen 4, where each multiply-add went in halves, 3 x 7 ran 17 % slower:
  // (8, 512, 7, 7) 3x3, 1 thread, 18.1-18.9 against 15.6-16.3 ms).
  const bool rows7 = s.Q % 7 == 0 && s.Q % 4 != 0 && s.Q % 6 != 0;
  const int nb = kblocks >= 4 ? (g_kernels->wide_fma && rows7 ? 3 : 4) : 2;
  // (a last group of one block of 3-block tiles runs a 2-block tile: one zero block after it)
  const int64_t kalloc = kblocks >= 2 ? round_up(kblocks + (nb == 3), 4) : kblocks;
  float* wp = scratch(Buf::kvec_weights, kalloc * CRS * 16);
  // (in parallel: a (512, 512, 3, 3) weight alone took a fifth of its layer at batch 1)
  // The tiles multiply the padding's zeros: a NaN or Inf weight declines (the planner's row
  // flag kSelfChecked), found here in each block just laid out (in cache), where the planner's
  // own scan of the weights cost 6 % of a batch-1 (1, 512, 7, 7) layer.
  std::atomic<bool> finite{true};
  parallel_for(kalloc, kCopyCost * 16.0 * kalloc * CRS, [&](int64_t kb) {
    const int rows = static_cast<int>(std::clamp<int64_t>(s.K - kb * 16, 0, 16));
    float* wb = wp + kb * CRS * 16;
    if (flipped && rows) {  // tap (k, i) of channel c: w[k][c][RS - 1 - i], k < C
      const int64_t RS = s.R * s.S;
      for (int64_t k = 0; k < s.C; ++k) {
        float* d = wb + k * RS * 16;
        g_kernels->rows_to_lanes16(d, w + (k * s.K + kb * 16) * RS, RS, rows, RS);
        for (int64_t i = 0; i < RS / 2; ++i)
          std::swap_ranges(d + i * 16, d + i * 16 + 16, d + (RS - 1 - i) * 16);
      }
    } else {
      g_kernels->rows_to_lanes16(wb, rows ? w + kb * 16 * CRS : w, CRS, rows, CRS);
    }
    if (rows && !g_kernels->all_finite(wb, CRS * 16))
      finite.store(false, std::memory_order_relaxed);
  });
  if (!finite.load()) return false;
  thread_local std::vector<int64_t> off;
  off.resize(static_cast<size_t>(CRS));
  for (int64_t c = 0, i = 0; c < s.C; ++c)
    for (int64_t r = 0; r < s.R; ++r)
      for (int64_t t = 0; t < s.S; ++t) off[i++] = c * plane + r * Wp + t;
  const int64_t* offp = off.data();
  const auto kern = g_kernels->conv_kvec;
  const int64_t slack = 2 * Wp + 16 * s.sw, img = s.C * s.H * s.W;
  // The tiles read up to a row and 16 positions past the image (into lanes never stored). Without
  // padding, an image followed by that much of x is read in place; else it is copied,
  // zero-padded, with the slack.
  // Only padded rows [r0, r1) are filled (the rows an item's tiles read, the last one for the
  // lanes past a row's end).
  // 32+ channels (conv_kvec_blocks): tiles of nb blocks, so each broadcast input value serves
  // nb weight vectors; items (image, group of blocks, run of rows) give every thread work even
  // at batch 1.
  const bool blocks = kblocks >= 2 && g_kernels->conv_kvec_blocks;
  const int64_t groups = blocks ? (kblocks + nb - 1) / nb : 1;
  // With several items an image (groups of output channels; with one-block tiles, each block)
  // and padding, the images are padded once, shared, where that takes 16 MiB or less: each item
  // padding its rows itself took 5 % of an (8, 512, 7, 7) 3x3 layer (11 items an image), and
  // AVX2's 32 blocks of a batch-1 (1, 512, 7, 7) layer padded the whole image 32 times.
  const int64_t per_image = blocks ? groups : kblocks;
  const float* shared = (s.ph || s.pw) && per_image > 1 && s.N * s.C * plane <= 4 * 1024 * 1024
                            ? padded_input(x, s, slack) : nullptr;
  auto image = [&](int64_t n, int64_t r0 = 0, int64_t r1 = -1) {
    if (shared) return shared + n * s.C * plane;
    if (!(s.ph || s.pw || (s.N - 1 - n) * img < slack)) return x + n * img;
    r1 = r1 < 0 ? Hp : std::min(Hp, r1);
    float* b = scratch(Buf::kvec_rows, s.C * plane + slack);
    for (int64_t c = 0; c < s.C; ++c)
      pad_rows(b + c * plane + r0 * Wp, Wp, x + (n * s.C + c) * s.H * s.W, s.H, s.W, r0 - s.ph,
               r1 - r0, s.pw);
    std::fill(b + s.C * plane, b + s.C * plane + slack, 0.f);
    return static_cast<const float*>(b);
  };
  if (blocks) {
    // positions per tile: of the two tile widths, the one that wastes fewer lanes on a row;
    // rows of 7 or 14 (a ResNet's last stages) go 7 at a time in tiles of 4 blocks (28
    // accumulators), or of 3 (above)
    auto waste = [&](int64_t w) { return (s.Q + w - 1) / w * w - s.Q; };
    const int64_t w1 = nb >= 3 ? 4 : 8, w2 = nb >= 3 ? 6 : 12;
    int64_t nqt = nb == 3 ? 7 : waste(w2) <= waste(w1) ? w2 : w1;
    if (nb == 4 && waste(7) == 0 && waste(nqt) > 0) nqt = 7;
    if (nb == 2 && waste(14) == 0 && waste(nqt) > 0) nqt = 14;
    // The products of padding (a row outside the image, a tile's first or last position
    // outside it) are skipped: the classes of the kernel's R * S taps for tile (p, q). A 7x7
    // plane with padding 1 has 18 % of its 3x3 products in the padding (PyTorch's oneDNN skips
    // them too: it ran (8, 512, 7, 7) at 117 GFLOP/s counting them, the FMA peak of a core
    // measured 117.5, convkit at 95 before).
    const int64_t RS = s.R * s.S;
    const bool skips = s.ph || s.pw;
    auto tap_classes = [&](uint8_t* cls, int64_t p, int64_t q, int64_t nq) {
      for (int64_t r = 0; r < s.R; ++r)
        for (int64_t t = 0; t < s.S; ++t) {
          const int64_t h = p * s.sh - s.ph + r * s.dh;
          const int64_t c0 = q * s.sw - s.pw + t * s.dw, c1 = c0 + (nq - 1) * s.sw;
          const bool first = c0 < 0 || c0 >= s.W, last = c1 < 0 || c1 >= s.W;
          cls[r * s.S + t] = h < 0 || h >= s.H || (first && nq == 1) ? kTapNone
                             : first && last ? kTapNotEnds
                             : first         ? kTapNotFirst
                             : last          ? kTapNotLast
                                             : kTapAll;
        }
    };
    // one item per thread where the batch is smaller: runs of two 8-wide rows per item wrote
    // output cache lines shared with the next item's (a 64-channel 8x8 layer at batch 1 took
    // 64 us on 2 threads against 54 on 1; 47 us now)
    const int64_t want = get_num_threads(), have = s.N * groups;
    const int64_t runs = std::min<int64_t>(s.P, std::max<int64_t>(1, (want + have - 1) / have));
    const int64_t rows = (s.P + runs - 1) / runs, nruns = (s.P + rows - 1) / rows;
    const auto kernb = g_kernels->conv_kvec_blocks;
    // Deep layers (512 channels of 3x3: 4608 taps) in runs of kKvecTaps taps, every tile of the
    // item going through a run while its nb weight blocks (64 KiB a block) stay in L2: in one
    // run each tile streamed all of them (1.2 MB) from L3, and two threads ran no faster than
    // one. The tiles' running sums wait in `part` between runs (the same sums, the same bits).
    // 256 taps (64 KiB of weights for 4 blocks, near L1) rather than 1024 (AMD EPYC Zen 5,
    // forced, 1 thread, 3 rounds of alternating processes, minima: (8, 512, 7, 7) -> 512 11.6
    // -> 10.9 ms, (1, 512, 7, 7) 1.83 -> 1.66, (8, 256, 14, 14) -> 512 stride 2 6.73 -> 6.22,
    // (4, 256, 8, 8) 1.47 -> 1.42; 128 taps in between).
    constexpr int64_t kKvecTaps = 256;
    const int64_t nruns_k = (CRS + kKvecTaps - 1) / kKvecTaps;
    const int64_t tiles_row = (s.Q + nqt - 1) / nqt;
    parallel_for(s.N * groups * nruns, 2.0 * s.N * s.K * CRS * PQ, [&](int64_t item) {
      const int64_t n = item / (groups * nruns), g = item / nruns % groups;
      const int64_t p0 = item % nruns * rows, p1 = std::min(s.P, p0 + rows);
      const float* buf = image(n, p0 * s.sh, (p1 - 1) * s.sh + s.R + 1);
      const int64_t kb0 = g * nb, k0 = kb0 * 16;
      const int nbk = static_cast<int>(std::min<int64_t>(nb, kblocks - kb0));
      const int nk = static_cast<int>(std::min<int64_t>(16 * nbk, s.K - k0));
      const bool lone = nbk == 1 && unit;
      float* part = nruns_k > 1 && !lone
                        ? scratch(Buf::kvec_part, (p1 - p0) * tiles_row * 448) : nullptr;
      thread_local std::vector<uint8_t> cls;
      cls.resize(static_cast<size_t>(RS));
      for (int64_t k1 = 0; k1 < CRS; k1 += kKvecTaps) {
        const int64_t taps = lone ? CRS : std::min(kKvecTaps, CRS - k1);
        const int mode = (k1 > 0 ? kKvecResume : 0) | (k1 + taps < CRS ? kKvecSuspend : 0);
        for (int64_t p = p0; p < p1; ++p)
          for (int64_t q = 0; q < s.Q; q += nqt) {
            const int nq = static_cast<int>(std::min<int64_t>(nqt, s.Q - q));
            KvecTaps tc{cls.data(), static_cast<int>(RS), static_cast<int>(k1 % RS)};
            if (skips && !lone) tap_classes(cls.data(), p, q, nq);
            const float* wb = wp + kb0 * CRS * 16;
            const float* xb = buf + p * s.sh * Wp + q * s.sw;
            if (lone)  // a last lone block at stride 1 (its tile: 12 positions at most)
              for (int64_t q2 = q; q2 < q + nq; q2 += 12)
                kern(y + (n * s.K + k0) * PQ + p * s.Q + q2, PQ, s.Q, xb + (q2 - q), Wp, 1,
                     offp, CRS, wb, b ? b + k0 : nullptr,
                     static_cast<int>(std::min<int64_t>(12, q + nq - q2)), nk, false);
            else  // (a lone block strided: with the zero block after it)
              kernb(y + (n * s.K + k0) * PQ + p * s.Q + q, PQ, xb, s.sw, offp + k1, taps,
                    wb + k1 * 16, CRS * 16, b ? b + k0 : nullptr, nq, nk,
                    nbk == 3 && nb == 4 ? 4 : std::max(2, nbk),
                    part ? part + ((p - p0) * tiles_row + q / nqt) * 448 : nullptr, mode,
                    skips ? &tc : nullptr);
          }
        if (lone) break;
      }
    });
    return true;
  }
  parallel_for(s.N * kblocks, 2.0 * s.N * s.K * CRS * PQ, [&](int64_t item) {
    const int64_t n = item / kblocks, kb = item % kblocks;
    const float* buf = image(n);
    const int nk = static_cast<int>(std::min<int64_t>(16, s.K - kb * 16));
    float* yk = y + (n * s.K + kb * 16) * PQ;
    const float* bk = b ? b + kb * 16 : nullptr;
    for (int64_t p = 0; p < s.P; p += 2)
      for (int64_t q = 0; q < s.Q; q += 12) {
        const int nq = static_cast<int>(std::min<int64_t>(12, s.Q - q));
        kern(yk + p * s.Q + q, PQ, s.Q, buf + p * s.sh * Wp + q * s.sw, s.sh * Wp, s.sw, offp,
             CRS, wp + kb * CRS * 16, bk, nq, nk, p + 1 < s.P);
      }
  });
  return true;
}

bool kvec_forward(float* y, const float* x, const float* w, const float* b, const Conv2dShape& s) {
  return kvec_run(y, x, w, b, s, false);
}

bool kvec_forward_flipped(float* y, const float* x, const float* w, const Conv2dShape& s) {
  return kvec_run(y, x, w, nullptr, s, true);
}

}  // namespace conv
}  // namespace convkit
