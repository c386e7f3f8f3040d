// Threading in one place: ops call parallel_for over independent work items; items never write
// the same memory, so the result does not depend on how many threads run them.
#pragma once
#include <algorithm>
#include <cstdint>
#include <exception>
#include <mutex>
#ifdef CONVKIT_HAVE_OPENMP
#include <omp.h>
#endif

namespace convkit {

int get_num_threads();

// Runs fn(i) for i in [0, n). `work` is a rough cost in flops; small jobs stay on one thread
// because waking the pool costs more than they do.
template <class F>
void parallel_for(int64_t n, double work, F&& fn) {
#ifdef CONVKIT_HAVE_OPENMP
  int nt = get_num_threads();
  if (nt > 1 && n > 1 && work > 2e5) {
    if (nt > n) nt = static_cast<int>(n);
    // An exception must not escape an OpenMP region (that would terminate the process):
    // keep the first one and rethrow it on the calling thread.
    std::exception_ptr err;
    std::mutex mu;
    // Items are handed out in runs: cheap items one by one would spend more time on the shared
    // counter than on the work (a 2x2 max-pool of 1024 small planes ran 3x slower that way).
    const double per_item = work / static_cast<double>(n);
    const int64_t run = std::max<int64_t>(
        1, std::min<int64_t>(n / (4 * nt), static_cast<int64_t>(1e5 / std::max(per_item, 1.0))));
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
  (void)work;
  for (int64_t i = 0; i < n; ++i) fn(i);
}

// Work buffers reused across calls, one set per thread (grown on demand, so a pointer is good
// only until the next request of the same slot). Slots 0-1 belong to gemm_st; ops use 1, 2 and 6
// for per-item buffers and 3, 4, 5 and 7 for per-call operands. An op that calls another (the
// input gradient of conv2d runs a forward convolution) must not hand it a pointer into a slot
// the callee requests (conv2d's callee leaves 4 and 5 alone).
float* scratch(int slot, int64_t count);

}  // namespace convkit
