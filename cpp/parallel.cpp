// convkit's thread pool (see parallel.h for the contract).
//
// One job at a time: the caller publishes it (a generation number, the item count, the run
// length, the function), wakes the workers, and then works on it itself. Everyone claims runs of
// items from one shared word that holds the generation and the job's first and last free runs,
// with a compare-and-swap: the caller from the front, workers from the back. A claim that sees
// another generation fails, so a worker that wakes late can never touch a job that has ended.
// Claiming from both ends keeps the caller on the first part of every job and a worker on the
// last, call after call, so what one op writes is still in the cache of the core that reads it
// in the next (runs handed out in arrival order from the front made ReLU on a 1.2 MB array
// 1.7-1.8x slower at 2 threads; one fixed part per thread, stolen only when its owner was late,
// made a batch-1 LeNet-5 forward 1.1-1.6x slower, as the late worker then always took its share).
// Completion is counted in items: the caller returns when every item is done, whoever did it. A
// worker the OS has not scheduled yet costs nothing; only a worker descheduled in the middle of
// its run is waited for, and runs are short.
//
// Idle workers spin a little (a region usually follows soon in a training step), then sleep on
// a condition variable.
#include "parallel.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CK_PAUSE() _mm_pause()
#else
#define CK_PAUSE() std::this_thread::yield()
#endif
#include <pthread.h>
#if defined(__linux__)
#include <sched.h>
#define CK_HAVE_GETCPU 1
#endif

namespace convkit {
namespace {

// The claim word: generation (24 bits, wrapped) | first free run (20) | end of the free runs (20)
constexpr int kRunBits = 20;
constexpr int64_t kMaxRuns = int64_t(1) << kRunBits;
constexpr uint64_t kRunMask = uint64_t(kMaxRuns) - 1;
constexpr int kIndexBits = 2 * kRunBits;
constexpr uint64_t kTagMask = (uint64_t(1) << (64 - kIndexBits)) - 1;
constexpr uint64_t word(uint64_t tag, uint64_t front, uint64_t back) {
  return (tag << kIndexBits) | (front << kRunBits) | back;
}
// Pause instructions an idle worker spins before it sleeps: about 50 us, the usual gap
// between two parallel regions of a training step. Longer spins measured worse with a busy
// core (a spinning worker uses up its time slice and is then preempted in the middle of a run:
// LeNet-5's step at 2 threads went from 1.0x to 1.55x its 1-thread time with 20,000), shorter
// ones no better (bench/RESULTS.md). $CONVKIT_SPIN overrides it.
int spin_before_sleep() {
  static const int n = [] {
    const char* e = std::getenv("CONVKIT_SPIN");
    return e ? std::max(0, std::atoi(e)) : 1000;
  }();
  return n;
}

thread_local bool t_inside = false;  // this thread is running items of a job

class Pool {
 public:
  // Grows the pool to `threads` participants (the caller and threads - 1 workers).
  void ensure(int threads) {
    std::lock_guard<std::mutex> lock(grow_mu_);
    while (static_cast<int>(workers_.size()) + 1 < threads) {
      const int index = static_cast<int>(workers_.size()) + 1;
      workers_.emplace_back([this, index] { worker(index); });
      workers_.back().detach();  // never joined: the pool lives until the process ends
    }
  }

  bool try_run(int64_t n, int64_t run, int threads, RangeFn call, void* ctx) {
    std::unique_lock<std::mutex> busy(job_mu_, std::try_to_lock);
    if (!busy.owns_lock()) return false;  // another thread's job is running: go serial
    ensure(threads);
    run = std::max(run, (n + kMaxRuns - 2) / (kMaxRuns - 1));  // at most kMaxRuns - 1 runs
    const int64_t runs = (n + run - 1) / run;
    const uint64_t gen = ++gen_counter_;
    // Close the previous job's word before its fields change: a worker still in that job's
    // claim loop may read the fields below while they are rewritten, and with the old word
    // (every item taken) left in place it could claim "items" past the old count under the new
    // count, run the new function on a mix of old and new fields, and add to the new job's
    // count of items done, so that its caller returned while items still ran (ThreadSanitizer
    // showed a worker reading a finished caller's stack; the sanitizer report once seen in CI).
    // The new tag with every run taken also keeps the new job closed until it is published.
    state_.store(word(gen & kTagMask, kRunMask, 0), std::memory_order_seq_cst);
    call_.store(call, std::memory_order_relaxed);
    ctx_.store(ctx, std::memory_order_relaxed);
    n_.store(n, std::memory_order_relaxed);
    run_.store(run, std::memory_order_relaxed);
    want_.store(threads, std::memory_order_relaxed);
    err_ = nullptr;
    done_.store(0, std::memory_order_relaxed);
    state_.store(word(gen & kTagMask, 0, static_cast<uint64_t>(runs)), std::memory_order_release);
#ifdef CK_HAVE_GETCPU
    caller_cpu_.store(sched_getcpu(), std::memory_order_relaxed);
#endif
    posted_.store(gen, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> lock(sleep_mu_);
      wake_.notify_all();
    }
    participate(gen, true);
    for (int spins = 0; done_.load(std::memory_order_acquire) < n; ++spins) {
      if (spins < 4000) CK_PAUSE();
      else std::this_thread::yield();  // a worker was descheduled mid-run: let it finish
    }
    if (err_) std::rethrow_exception(err_);
    return true;
  }

 private:
  // Runs of the job `gen` until none is left, from the front (the caller) or the back.
  void participate(uint64_t gen, bool front) {
    t_inside = true;
    const uint64_t tag = gen & kTagMask;  // the generation as the state word holds it
    for (;;) {
      uint64_t s = state_.load(std::memory_order_acquire);
      if ((s >> kIndexBits) != tag) break;
      const uint64_t f = (s >> kRunBits) & kRunMask, b = s & kRunMask;
      if (f >= b) break;  // every run taken
      // the job's fields, valid as long as the claim below succeeds (a new job is published
      // only once every item of this one is done, so none can be published before it)
      const int64_t n = n_.load(std::memory_order_relaxed);
      const int64_t run = run_.load(std::memory_order_relaxed);
      RangeFn call = call_.load(std::memory_order_relaxed);
      void* ctx = ctx_.load(std::memory_order_relaxed);
      const uint64_t r = front ? f : b - 1;  // the run to claim
      if (!state_.compare_exchange_weak(s, front ? word(tag, f + 1, b) : word(tag, f, b - 1),
                                        std::memory_order_acq_rel))
        continue;
      const int64_t begin = static_cast<int64_t>(r) * run, end = std::min(n, begin + run);
      try {
        call(ctx, begin, end);
      } catch (...) {
        std::lock_guard<std::mutex> lock(err_mu_);
        if (!err_) err_ = std::current_exception();
      }
      done_.fetch_add(end - begin, std::memory_order_release);
    }
    t_inside = false;
  }

  // A worker the OS has put on the caller's CPU only takes turns with it there (with a busy
  // core beside it, the LeNet-5 step ran 1.1-1.25x its 1-thread time in such spells, 0.65-0.75x
  // otherwise): it moves itself to another CPU it may run on (its affinity narrowed for a
  // moment, then given back, so that the kernel migrates it now), at most once a millisecond.
  void step_off_callers_cpu() {
#ifdef CK_HAVE_GETCPU
    const int cc = caller_cpu_.load(std::memory_order_relaxed);
    if (cc < 0 || cc >= CPU_SETSIZE || sched_getcpu() != cc) return;
    thread_local std::chrono::steady_clock::time_point last{};
    const auto now = std::chrono::steady_clock::now();
    if (now - last < std::chrono::milliseconds(1)) return;
    last = now;
    cpu_set_t mine, others;
    if (pthread_getaffinity_np(pthread_self(), sizeof mine, &mine) != 0) return;
    others = mine;
    CPU_CLR(cc, &others);
    if (CPU_COUNT(&others) == 0) return;
    if (pthread_setaffinity_np(pthread_self(), sizeof others, &others) == 0)
      pthread_setaffinity_np(pthread_self(), sizeof mine, &mine);
#endif
  }

  void worker(int index) {
    uint64_t seen = posted_.load(std::memory_order_acquire);
    for (;;) {
      uint64_t gen = posted_.load(std::memory_order_acquire);
      for (int spins = 0; gen == seen && spins < spin_before_sleep(); ++spins) {
        CK_PAUSE();
        gen = posted_.load(std::memory_order_acquire);
      }
      if (gen == seen) {
        std::unique_lock<std::mutex> lock(sleep_mu_);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        wake_.wait(lock, [&] { return posted_.load(std::memory_order_seq_cst) != seen; });
        sleepers_.fetch_sub(1, std::memory_order_seq_cst);
        gen = posted_.load(std::memory_order_acquire);
      }
      seen = gen;
      // want_ may already be a later job's: then the claim fails, which is harmless
      if (index < want_.load(std::memory_order_relaxed)) {
        step_off_callers_cpu();
        participate(gen, false);
      }
    }
  }

  std::mutex grow_mu_, job_mu_, sleep_mu_, err_mu_;
  std::condition_variable wake_;
  std::vector<std::thread> workers_;
  std::atomic<uint64_t> state_{0}, posted_{0};
  std::atomic<int64_t> done_{0};
  std::atomic<int> sleepers_{0};
  uint64_t gen_counter_ = 0;
  // the current job (written by its caller before `posted_`; read by claimants of it)
  std::atomic<RangeFn> call_{nullptr};
  std::atomic<void*> ctx_{nullptr};
  std::atomic<int64_t> n_{0}, run_{1};
  std::atomic<int> want_{0};
  std::atomic<int> caller_cpu_{-1};  // where the current job's caller ran when it posted it
  std::exception_ptr err_;
};

std::atomic<Pool*> g_pool{nullptr};
std::mutex g_pool_mu;

void forget_pool_after_fork() {
  // The child has the parent's memory but none of its threads: start a new pool when needed
  // (the old one is leaked on purpose; its mutexes may be held by threads that are gone).
  g_pool.store(nullptr);
  new (&g_pool_mu) std::mutex();
}

Pool* pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (p) return p;
  std::lock_guard<std::mutex> lock(g_pool_mu);
  p = g_pool.load();
  if (!p) {
    static bool registered = (pthread_atfork(nullptr, nullptr, forget_pool_after_fork), true);
    (void)registered;
    p = new Pool();
    g_pool.store(p, std::memory_order_release);
  }
  return p;
}

}  // namespace

bool use_openmp_runtime() {
  static const bool openmp = [] {
    const char* e = std::getenv("CONVKIT_RUNTIME");
    return e && std::strcmp(e, "openmp") == 0;
  }();
  return openmp;
}

#ifdef CONVKIT_HAVE_TBB
}  // namespace convkit
#include <map>
#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>
namespace convkit {

bool use_tbb_runtime() {
  static const bool tbb = [] {
    const char* e = std::getenv("CONVKIT_RUNTIME");
    return e && std::strcmp(e, "tbb") == 0;
  }();
  return tbb;
}

void run_in_tbb(int64_t n, int64_t run, int threads, RangeFn fn, void* ctx) {
  static std::mutex mu;
  static std::map<int, std::unique_ptr<oneapi::tbb::task_arena>> arenas;
  oneapi::tbb::task_arena* arena;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto& a = arenas[threads];
    if (!a) a = std::make_unique<oneapi::tbb::task_arena>(threads);
    arena = a.get();
  }
  arena->execute([&] {
    oneapi::tbb::parallel_for(
        oneapi::tbb::blocked_range<int64_t>(0, n, static_cast<size_t>(run)),
        [&](const oneapi::tbb::blocked_range<int64_t>& r) { fn(ctx, r.begin(), r.end()); },
        oneapi::tbb::simple_partitioner());
  });
}
#endif

bool run_in_pool(int64_t n, int64_t run, int threads, RangeFn call, void* ctx) {
  if (t_inside) return false;  // nested: the caller runs it serially
  return pool()->try_run(n, run, threads, call, ctx);
}

}  // namespace convkit
