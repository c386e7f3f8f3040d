// ThreadSanitizer stress of convkit's thread pool (tools/tsan_pool.sh builds and runs it): the
// main thread alone and then three threads at once (one runs its jobs on the pool while the
// others, refused, run theirs serially) call convolutions in all three directions, pooling and
// batch norm many times in a row, so that workers waking late meet jobs that have just ended.
// Any report fails the run. Usage: tsan_pool THREADS ITERATIONS
#include <convkit/convkit.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <thread>
#include <vector>

using namespace convkit;

static void work(int seed, int iters) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal;
  Conv2dShape s{8, 16, 16, 16, 32, 3, 3, 1, 1, 1, 1, 0, 0};
  conv2d_out_size(s);
  Conv2dShape s2 = s;  // stride 2
  s2.sh = s2.sw = 2;
  conv2d_out_size(s2);
  std::vector<float> x(s.N * s.C * s.H * s.W), w(s.K * s.C * s.R * s.S);
  for (auto& v : x) v = normal(gen);
  for (auto& v : w) v = normal(gen);
  std::vector<float> y(s.N * s.K * s.P * s.Q), y2(s2.N * s2.K * s2.P * s2.Q), dx(x.size()),
      dw(w.size()), db(s.K), bn(x.size());
  Pool2dShape ps{};
  ps.N = s.N;
  ps.C = s.C;
  ps.H = s.H;
  ps.W = s.W;
  ps.R = ps.S = 3;
  ps.sh = ps.sw = 2;
  ps.ph = ps.pw = 1;
  ps.ceil_mode = true;
  pool2d_out_size(ps);
  std::vector<float> py(ps.N * ps.C * ps.P * ps.Q), pdx(x.size());
  std::vector<int64_t> pi(py.size());
  std::vector<double> mean(s.C), var(s.C);
  for (int it = 0; it < iters; ++it) {
    conv2d_forward(y.data(), x.data(), w.data(), nullptr, s);
    conv2d_backward(dx.data(), dw.data(), db.data(), y.data(), x.data(), w.data(), s);
    conv2d_forward(y2.data(), x.data(), w.data(), nullptr, s2);
    max_pool2d_forward(py.data(), pi.data(), x.data(), ps);
    max_pool2d_backward(pdx.data(), py.data(), x.data(), ps);
    adaptive_max_pool2d_forward(py.data(), pi.data(), x.data(), s.N * s.C, s.H, s.W, 3, 3);
    batch_norm_forward(bn.data(), mean.data(), var.data(), x.data(), nullptr, nullptr, 1e-5, s.N,
                       s.C, s.H * s.W, true);
  }
}

int main(int argc, char** argv) {
  set_num_threads(argc > 1 ? std::atoi(argv[1]) : 4);
  const int iters = argc > 2 ? std::atoi(argv[2]) : 60;
  work(1, iters);
  std::vector<std::thread> callers;
  for (int i = 0; i < 3; ++i) callers.emplace_back(work, i + 2, iters);
  for (auto& t : callers) t.join();
  std::printf("tsan_pool: %d threads, %d iterations: no report\n", get_num_threads(), iters);
  return 0;
}
