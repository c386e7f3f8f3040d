// Threading in one place: ops call parallel_for over independent work items; items never write
// the same memory, so the result does not depend on how many threads run them.
#pragma once
#include <algorithm>
#include <cstdint>
#include <exception>
#include <mutex>
#include <type_traits>
#ifdef CONVKIT_HAVE_OPENMP
#include <omp.h>
#endif

namespace convkit {

int get_num_threads();

// The pool behind parallel_for (parallel.cpp): fn(ctx, begin, end) runs items [begin, end).
using RangeFn = void (*)(void* ctx, int64_t begin, int64_t end);
// Runs items [0, n) in runs of `run` on up to `threads` threads, the calling one included;
// false when it cannot (called from inside another job, or another thread's job is running):
// the caller then runs them itself.
bool run_in_pool(int64_t n, int64_t run, int threads, RangeFn fn, void* ctx);
bool use_openmp_runtime();  // CONVKIT_RUNTIME=openmp: OpenMP's runtime instead (to compare)
#ifdef CONVKIT_HAVE_TBB
// CONVKIT_RUNTIME=tbb in a build with -DCONVKIT_TBB=ON: oneTBB's parallel_for in an arena of
// `threads` slots (the caller takes part), to compare runtimes (bench/contention.py)
bool use_tbb_runtime();
void run_in_tbb(int64_t n, int64_t run, int threads, RangeFn fn, void* ctx);
#endif

// Runs fn(i) for i in [0, n). `work` is a rough cost in flops; small jobs stay on one thread
// because waking the pool costs more than they do. Items are independent and never write the
// same memory, so the result does not depend on the thread count or on who runs which item.
//
// The runtime: convkit's pool, where the calling thread takes part, items are handed out in runs
// from a shared counter (the caller's from the front, the workers' from the back), and the call
// returns when every item is done, so it never waits for a thread that has not started (a core
// busy with another process costs its share of the work, not a barrier); CONVKIT_RUNTIME=openmp
// (or tbb) selects another, to compare. Exceptions are rethrown on the calling thread either way.
template <class F>
void parallel_for(int64_t n, double work, F&& fn) {
  int nt = get_num_threads();
  if (nt > 1 && n > 1 && work > 2e5) {
    if (nt > n) nt = static_cast<int>(n);
    // Items are handed out in runs: cheap items one by one would spend more time on the shared
    // counter than on the work (a 2x2 max-pool of 1024 small planes ran 3x slower that way).
    const double per_item = work / static_cast<double>(n);
    const int64_t run = std::max<int64_t>(
        1, std::min<int64_t>(n / (4 * nt), static_cast<int64_t>(1e5 / std::max(per_item, 1.0))));
#ifdef CONVKIT_HAVE_OPENMP
    if (use_openmp_runtime()) {
      // An exception must not escape an OpenMP region (that would terminate the process):
      // keep the first one and rethrow it on the calling thread.
      std::exception_ptr err;
      std::mutex mu;
#pragma omp parallel for schedule(dynamic, run) num_threads(nt)
      for (int64_t i = 0; i < n; ++i) {
        try {
          fn(i);
        } catch (...) {
          std::lock_guard<std::mutex> lock(mu);
          if (!err) err = std::current_exception();
        }
      }
      if (err) std::rethrow_exception(err);
      return;
    }
#endif
    auto range = [](void* ctx, int64_t begin, int64_t end) {
      F& f = *static_cast<std::remove_reference_t<F>*>(ctx);
      for (int64_t i = begin; i < end; ++i) f(i);
    };
#ifdef CONVKIT_HAVE_TBB
    if (use_tbb_runtime()) {
      run_in_tbb(n, run, nt, range, const_cast<void*>(static_cast<const void*>(&fn)));
      return;
    }
#endif
    if (run_in_pool(n, run, nt, range, const_cast<void*>(static_cast<const void*>(&fn))))
      return;
  }
  (void)work;
  for (int64_t i = 0; i < n; ++i) fn(i);
}

// Per-thread work buffers reused across calls (grown on demand). Each belongs to the one
// function named beside it, which may hold it for the length of one call; a pointer is good only
// until that owner asks for the same buffer again. No owner calls another owner of the same
// buffer while it holds it, so two live uses never meet.
enum class Buf : int {
  gemm_a, gemm_b,               // gemm_st and gemm (gemm.cpp): packed panels of one block
  gemm_a_full, gemm_b_full,     // gemm (gemm.cpp): operands packed once for the whole product
  loss_row,                     // cross_entropy (loss.cpp): one row of exponentials
  softmax_rows,                 // softmax forward and backward (softmax.cpp)
  direct_weights, direct_rows, direct_tiles,  // conv::direct_forward
  kvec_weights, kvec_rows, kvec_part,         // conv::kvec_forward
  wino_weights, wino_rows, wino_v, wino_m,  // the Winograd-style paths
  im2col_weights, im2col_panels,  // conv::im2col_gemm_forward; conv::gemm_batch_forward
  conv1x1_x, conv1x1_y,                       // conv::gemm1x1_forward (around gemm's own)
  dx_weights,      // the input-gradient paths' rearranged weights (dx_transposed_conv hands
                   // them to the forward convolution, which never uses this buffer)
  dx_weights_packed, dx_cols, dx_lanes_buf,   // conv::dx_gemm_col2im, conv::dx_lanes
  padded_input,    // conv::padded_input and the phase-split input of conv::dw_dot
  dw_dy, dw_partials, dw_gemm_a, dw_gemm_b,   // the weight-gradient paths
  rows_in, rows_acc,                          // the conv::rows_* paths
  dwise_in, dwise_dy, dwise_lanes, dwise_row, // the conv::depthwise_* paths
  phase_in, phase_out,                        // conv::dilated_phases, conv::dw_dilated_phases
  pool_rows, pool_arg,   // pooling (pool.cpp): one plane's row sums or maxima; window winners
  pool_work,             // (pool.cpp) the lanes kernels' own work rows, beside the two above
  dw_pool_in,  // conv2d_weight_grad_maxpool2x2: one padded image and its windows' winners
  grouped_a, grouped_b,  // conv::grouped_* (plan.cpp): one group's operands, gathered, and result
  count_
};
float* scratch(Buf buf, int64_t count);

}  // namespace convkit
