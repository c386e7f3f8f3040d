// Threading in one place: ops call parallel_for over independent work items; items never write
// the same memory, so the result does not depend on how many threads run them.
#pragma once
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
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
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

// Work buffers reused across calls, one set per thread (grown on demand, never shrunk); slots
// 0-1 belong to gemm_st, 2 to per-item buffers of the ops, 3-5 to per-call packed operands.
float* scratch(int slot, int64_t count);

}  // namespace convkit
