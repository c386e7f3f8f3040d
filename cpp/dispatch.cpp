// Picks the kernel table once, at static initialisation: the widest ISA the CPU (and OS) supports,
// or a lower one named by $CONVKIT_ISA. Also owns the thread count and per-thread scratch memory.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>
#if defined(__linux__)
#include <sched.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "convkit/convkit.h"
#include "kernels.h"
#include "parallel.h"

namespace convkit {
namespace {

// AMD's CPU family (Zen 3 and 4: 0x19, Zen 5: 0x1A), 0 on other vendors
unsigned amd_family() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned a, b, c, d;
  if (!__get_cpuid(0, &a, &b, &c, &d) || b != 0x68747541) return 0;  // "AuthenticAMD"
  if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
  const unsigned base = (a >> 8) & 0xF;
  return base == 0xF ? base + ((a >> 20) & 0xFF) : base;
#else
  return 0;
#endif
}

KernelTable make_table(const std::string& isa) {
  KernelTable t{};
  fill_table_scalar(t);
  if (isa == "avx2") fill_table_avx2(t);
  if (isa == "avx512") fill_table_avx512(t);
  if (isa == "avx512" && amd_family() >= 0x1A) t.wide_fma = true;
  return t;
}

bool cpu_has(const std::string& isa) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (isa == "scalar") return true;
  if (isa == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#ifdef CONVKIT_EMULATE_AVX512  // a developers' build: the AVX-512 kernels run on AVX2
  if (isa == "avx512") return cpu_has("avx2");
#endif
  if (isa == "avx512")
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           cpu_has("avx2");
  return false;
#else
  return isa == "scalar";
#endif
}

KernelTable g_tables[3];
const char* const kIsaNames[3] = {"scalar", "avx2", "avx512"};

const KernelTable* initial_table() {
  // Only the tables this CPU can run are filled: each ISA's fill function is compiled with that
  // ISA's flags, and the compiler may use its instructions for the filling itself (AVX-512 stores
  // of the function pointers), which would kill the import on an older CPU.
  for (int i = 0; i < 3; ++i)
    if (cpu_has(kIsaNames[i])) g_tables[i] = make_table(kIsaNames[i]);
  std::string want = best_isa();
  if (const char* env = std::getenv("CONVKIT_ISA")) {
    std::string e(env);
    if (!e.empty()) {
      if (e != "scalar" && e != "avx2" && e != "avx512")
        std::fprintf(stderr, "convkit: CONVKIT_ISA=%s is not one of scalar, avx2, avx512; using %s\n",
                     env, want.c_str());
      else if (!cpu_has(e))
        std::fprintf(stderr, "convkit: CONVKIT_ISA=%s is not supported by this CPU; using %s\n",
                     env, want.c_str());
      else
        want = e;
    }
  }
  for (int i = 0; i < 3; ++i)
    if (want == kIsaNames[i]) return &g_tables[i];
  return &g_tables[0];
}

int initial_threads() {
  // $OMP_NUM_THREADS (its first number) as OpenMP programs read it, else the CPUs this process
  // may run on (its affinity mask: taskset and container limits count)
  if (const char* e = std::getenv("OMP_NUM_THREADS")) {
    const int n = std::atoi(e);
    if (n > 0) return n;
  }
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

std::atomic<int> g_threads{initial_threads()};

}  // namespace

const KernelTable* g_kernels = initial_table();

std::string best_isa() {
  if (cpu_has("avx512")) return "avx512";
  if (cpu_has("avx2")) return "avx2";
  return "scalar";
}

const char* isa_name() { return g_kernels->name; }

bool set_isa(const std::string& name) {
  for (int i = 0; i < 3; ++i)
    if (name == kIsaNames[i] && cpu_has(name)) {
      g_kernels = &g_tables[i];
      return true;
    }
  return false;
}

std::string cpu_features() {
  std::string out;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
#define CK_FEATURE(s) if (__builtin_cpu_supports(s)) { out += s; out += ' '; }
  CK_FEATURE("sse2") CK_FEATURE("sse4.2") CK_FEATURE("avx") CK_FEATURE("avx2") CK_FEATURE("fma")
  CK_FEATURE("avx512f") CK_FEATURE("avx512dq") CK_FEATURE("avx512bw") CK_FEATURE("avx512vl")
  CK_FEATURE("avx512vnni")
#undef CK_FEATURE
#endif
  if (!out.empty()) out.pop_back();
  return out;
}

void set_num_threads(int n) { g_threads.store(n < 1 ? 1 : n); }
int get_num_threads() { return g_threads.load(); }

bool have_openmp() {
#ifdef CONVKIT_HAVE_OPENMP
  return true;
#else
  return false;
#endif
}

const char* compiler_id() {
#ifdef CONVKIT_COMPILER
  return CONVKIT_COMPILER;
#else
  return "unknown";
#endif
}

float* scratch(Buf buf, int64_t count) {
  thread_local std::vector<float> bufs[static_cast<int>(Buf::count_)];
  std::vector<float>& b = bufs[static_cast<int>(buf)];
  if (static_cast<int64_t>(b.size()) < count) b.resize(static_cast<size_t>(count));
  return b.data();
}

}  // namespace convkit
