// C++ microbenchmarks of the convkit core (no Python): every kernel family, forward and backward,
// and every convolution algorithm forced on each shape it applies to (conv2d_algo/<direction>/
// <algorithm>/<shape>), reporting time and FLOP/s. The ISA is chosen like the library does: the widest the CPU has, or
// $CONVKIT_ISA; threads follow $OMP_NUM_THREADS.
//
//   CONVKIT_ISA=avx2 OMP_NUM_THREADS=1 ./build/bench/convkit_bench --benchmark_filter=conv
#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <utility>
#include <vector>

#include "convkit/convkit.h"

namespace {

std::vector<float> randn(int64_t n, unsigned seed = 1) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(g);
  return v;
}

struct ConvCase {
  const char* name;
  int64_t N, C, H, W, K, R, stride, pad, dilation, groups;
};

// The shape set of bench/compare.py (and bench/RESULTS.md), then bench/conv_general.py's.
const ConvCase kConv[] = {
    {"lenet_conv1", 64, 1, 28, 28, 6, 5, 1, 2, 1, 1},
    {"lenet_conv2", 64, 6, 14, 14, 16, 5, 1, 0, 1, 1},
    {"vgg3x3", 8, 64, 56, 56, 64, 3, 1, 1, 1, 1},
    {"strided", 8, 64, 56, 56, 128, 3, 2, 1, 1, 1},
    {"rgb_stem", 16, 3, 64, 64, 32, 3, 1, 1, 1, 1},
    {"pointwise", 8, 128, 28, 28, 128, 1, 1, 0, 1, 1},
    {"large7x7", 8, 16, 32, 32, 16, 7, 1, 3, 1, 1},
    {"depthwise", 8, 144, 28, 28, 144, 3, 1, 1, 1, 144},
    {"depthwise_strided", 8, 96, 56, 56, 96, 3, 2, 1, 1, 96},
    {"grouped", 8, 128, 28, 28, 128, 3, 1, 1, 1, 32},
    {"dilated", 4, 64, 56, 56, 64, 3, 1, 2, 2, 1},
    // conv_general's conv_transpose2d (16, 128, 16, 16) -> 64, 4x4 stride 2: the convolution it
    // transposes (its input gradient is that layer's forward); winograd4_s2 in all directions
    {"transposed4x4", 16, 64, 32, 32, 128, 4, 2, 1, 1, 1},
    // ResNet-20's 16-, 32- and 64-channel layers at batch 128 (winograd3_lanes; the 32-channel
    // one's weight gradient too)
    {"resnet20_16", 128, 16, 32, 32, 16, 3, 1, 1, 1, 1},
    {"resnet20_32", 128, 32, 16, 16, 32, 3, 1, 1, 1, 1},
    {"resnet20_64", 128, 64, 8, 8, 64, 3, 1, 1, 1, 1},
    // a ResNet-18's last stage at batch 1 and its downsampling layer (kvec: runs of taps, stride 2)
    {"deep512", 1, 512, 7, 7, 512, 3, 1, 1, 1, 1},
    {"deep_s2", 1, 256, 14, 14, 512, 3, 2, 1, 1, 1},
    // a 5x5 depthwise layer (read in place)
    {"depthwise5x5", 8, 576, 14, 14, 576, 5, 1, 2, 1, 576},
};

convkit::Conv2dShape shape_of(const ConvCase& c) {
  convkit::Conv2dShape s{c.N, c.C, c.H, c.W, c.K, c.R, c.R, c.stride, c.stride, c.pad, c.pad,
                         0, 0, c.dilation, c.dilation, c.groups};
  convkit::conv2d_out_size(s);
  return s;
}

// multiply-adds of the direct method, twice
double conv_flops(const convkit::Conv2dShape& s) {
  return 2.0 * s.N * s.K * (s.C / s.G) * s.R * s.S * s.P * s.Q;
}

// A rate counter that prints as e.g. "FLOP=215.1G/s".
benchmark::Counter flop_rate(double flops) {
  return benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate,
                            benchmark::Counter::kIs1000);
}

// One direction of one conv case with algorithm `algo` forced ("" = the plan).
void BM_conv2d_algo(benchmark::State& st, ConvCase c, convkit::ConvDir d, std::string algo) {
  auto s = shape_of(c);
  auto x = randn(s.N * s.C * s.H * s.W), w = randn(s.K * (s.C / s.G) * s.R * s.S), b = randn(s.K);
  auto dy = randn(s.N * s.K * s.P * s.Q);
  std::vector<float> y(dy.size()), dx(x.size()), dw(w.size());
  convkit::conv2d_force(d, algo);
  for (auto _ : st) {
    if (d == convkit::ConvDir::forward)
      convkit::conv2d_forward(y.data(), x.data(), w.data(), b.data(), s);
    else if (d == convkit::ConvDir::input_grad)
      convkit::conv2d_backward(dx.data(), nullptr, nullptr, dy.data(), x.data(), w.data(), s);
    else
      convkit::conv2d_backward(nullptr, dw.data(), nullptr, dy.data(), x.data(), w.data(), s);
  }
  convkit::conv2d_force(d, "");
  st.counters["FLOP"] = flop_rate(conv_flops(s));
  st.SetLabel(std::string(convkit::isa_name()) + " " +
              (algo.empty() ? "plan: " + convkit::conv2d_plan(s, d) : algo));
}

void BM_conv2d_forward(benchmark::State& st, ConvCase c) {
  auto s = shape_of(c);
  auto x = randn(s.N * s.C * s.H * s.W), w = randn(s.K * (s.C / s.G) * s.R * s.S), b = randn(s.K);
  std::vector<float> y(static_cast<size_t>(s.N * s.K * s.P * s.Q));
  for (auto _ : st) convkit::conv2d_forward(y.data(), x.data(), w.data(), b.data(), s);
  st.counters["FLOP"] = flop_rate(conv_flops(s));
  st.SetLabel(convkit::isa_name());
}

void BM_conv2d_backward(benchmark::State& st, ConvCase c) {
  auto s = shape_of(c);
  auto x = randn(s.N * s.C * s.H * s.W), w = randn(s.K * (s.C / s.G) * s.R * s.S);
  auto dy = randn(s.N * s.K * s.P * s.Q);
  std::vector<float> dx(x.size()), dw(w.size()), db(static_cast<size_t>(s.K));
  for (auto _ : st)
    convkit::conv2d_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), s);
  st.counters["FLOP"] = flop_rate(2 * conv_flops(s));
  st.SetLabel(convkit::isa_name());
}

void BM_max_pool2d(benchmark::State& st, bool backward) {
  convkit::Pool2dShape s{64, 6, 28, 28, 2, 2, 2, 2, 0, 0, 0, 0};
  convkit::pool2d_out_size(s);
  auto x = randn(s.N * s.C * s.H * s.W), dy = randn(s.N * s.C * s.P * s.Q);
  std::vector<float> y(dy.size()), dx(x.size());
  for (auto _ : st) {
    if (backward) convkit::max_pool2d_backward(dx.data(), dy.data(), x.data(), s);
    else convkit::max_pool2d_forward(y.data(), nullptr, x.data(), s);
  }
  st.SetBytesProcessed(st.iterations() * int64_t(x.size() * sizeof(float)));
  st.SetLabel(convkit::isa_name());
}

void BM_avg_pool2d(benchmark::State& st, bool backward) {
  convkit::Pool2dShape s{64, 6, 28, 28, 2, 2, 2, 2, 0, 0, 0, 0};
  convkit::pool2d_out_size(s);
  auto x = randn(s.N * s.C * s.H * s.W), dy = randn(s.N * s.C * s.P * s.Q);
  std::vector<float> y(dy.size()), dx(x.size());
  for (auto _ : st) {
    if (backward) convkit::avg_pool2d_backward(dx.data(), dy.data(), s);
    else convkit::avg_pool2d_forward(y.data(), x.data(), s);
  }
  st.SetBytesProcessed(st.iterations() * int64_t(x.size() * sizeof(float)));
  st.SetLabel(convkit::isa_name());
}

void BM_softmax(benchmark::State& st, bool log, bool backward) {
  const int64_t rows = 256, L = 1000;
  auto x = randn(rows * L), dy = randn(rows * L, 2);
  std::vector<float> y(x.size());
  for (auto _ : st) {
    if (backward) convkit::softmax_backward(y.data(), dy.data(), x.data(), rows, L, 1, log);
    else convkit::softmax_forward(y.data(), x.data(), rows, L, 1, log);
  }
  st.SetItemsProcessed(st.iterations() * rows * L);
  st.SetLabel(convkit::isa_name());
}

void BM_dropout(benchmark::State& st, bool backward) {
  const int64_t n = 64 * 6 * 28 * 28;
  auto x = randn(n);
  std::vector<float> y(x.size()), mask(x.size()), dx(x.size());
  convkit::dropout_forward(y.data(), mask.data(), x.data(), n, 0.5f, 1);
  for (auto _ : st) {
    if (backward) convkit::dropout_backward(dx.data(), x.data(), mask.data(), n, 0.5f);
    else convkit::dropout_forward(y.data(), mask.data(), x.data(), n, 0.5f, 1);
  }
  st.SetItemsProcessed(st.iterations() * n);
}

void BM_pair_loss(benchmark::State& st, bool bce, bool backward) {
  const int64_t n = 256 * 1000;
  auto x = randn(n), t = randn(n, 3);
  std::vector<float> d(x.size());
  for (auto _ : st) {
    if (backward) {
      if (bce) convkit::bce_with_logits_backward(d.data(), 1.f, x.data(), t.data(), n);
      else convkit::mse_backward(d.data(), 1.f, x.data(), t.data(), n);
    } else {
      benchmark::DoNotOptimize(bce ? convkit::bce_with_logits_forward(x.data(), t.data(), n)
                                   : convkit::mse_forward(x.data(), t.data(), n));
    }
  }
  st.SetItemsProcessed(st.iterations() * n);
}

void BM_activation(benchmark::State& st, convkit::Act a, bool backward) {
  const int64_t n = 64 * 6 * 28 * 28;
  auto x = randn(n), dy = randn(n, 2);
  std::vector<float> y(static_cast<size_t>(n));
  for (auto _ : st) {
    if (backward) convkit::activation_backward(a, 0.01f, y.data(), dy.data(), x.data(), n);
    else convkit::activation_forward(a, 0.01f, y.data(), x.data(), n);
  }
  st.SetItemsProcessed(st.iterations() * n);
  st.SetLabel(convkit::isa_name());
}

void BM_linear(benchmark::State& st, int64_t N, int64_t I, int64_t O, bool backward) {
  auto x = randn(N * I), w = randn(O * I), b = randn(O), dy = randn(N * O);
  std::vector<float> y(static_cast<size_t>(N * O)), dx(x.size()), dw(w.size()), db(b.size());
  for (auto _ : st) {
    if (backward) convkit::linear_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), N, I, O);
    else convkit::linear_forward(y.data(), x.data(), w.data(), b.data(), N, I, O);
  }
  st.counters["FLOP"] = flop_rate((backward ? 4.0 : 2.0) * N * I * O);
  st.SetLabel(convkit::isa_name());
}

void BM_gemm(benchmark::State& st, int64_t n) {
  auto a = randn(n * n), b = randn(n * n);
  std::vector<float> c(static_cast<size_t>(n * n));
  for (auto _ : st)
    convkit::gemm(n, n, n, convkit::MatView{a.data(), n, 1}, convkit::MatView{b.data(), n, 1}, c.data(), n, false);
  st.counters["FLOP"] = flop_rate(2.0 * n * n * n);
  st.SetLabel(convkit::isa_name());
}

void BM_softmax_xent(benchmark::State& st, bool backward) {
  const int64_t N = 256, K = 10;
  auto x = randn(N * K);
  std::vector<int64_t> y(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) y[i] = i % K;
  std::vector<float> d(x.size());
  for (auto _ : st) {
    if (backward) convkit::cross_entropy_backward(d.data(), 1.f, x.data(), y.data(), N, K);
    else benchmark::DoNotOptimize(convkit::cross_entropy_forward(x.data(), y.data(), N, K));
  }
  st.SetItemsProcessed(st.iterations() * N * K);
}

int register_all() {
  for (const ConvCase& c : kConv) {
    benchmark::RegisterBenchmark((std::string("conv2d_forward/") + c.name).c_str(), BM_conv2d_forward, c)->UseRealTime();
    benchmark::RegisterBenchmark((std::string("conv2d_backward/") + c.name).c_str(), BM_conv2d_backward, c)->UseRealTime();
  }
  // every algorithm of every table, forced, on every case it applies to (on this CPU's ISA)
  const std::pair<const char*, convkit::ConvDir> dirs[] = {
      {"forward", convkit::ConvDir::forward},
      {"input_grad", convkit::ConvDir::input_grad},
      {"weight_grad", convkit::ConvDir::weight_grad}};
  for (const auto& d : dirs)
    for (const std::string& algo : convkit::conv2d_algorithms(d.second))
      for (const ConvCase& c : kConv)
        if (convkit::conv2d_applies(shape_of(c), d.second, algo))
          benchmark::RegisterBenchmark(
              (std::string("conv2d_algo/") + d.first + "/" + algo + "/" + c.name).c_str(),
              BM_conv2d_algo, c, d.second, algo)->UseRealTime();
  benchmark::RegisterBenchmark("max_pool2d_forward/64x6x28x28", BM_max_pool2d, false)->UseRealTime();
  benchmark::RegisterBenchmark("max_pool2d_backward/64x6x28x28", BM_max_pool2d, true)->UseRealTime();
  benchmark::RegisterBenchmark("avg_pool2d_forward/64x6x28x28", BM_avg_pool2d, false)->UseRealTime();
  benchmark::RegisterBenchmark("avg_pool2d_backward/64x6x28x28", BM_avg_pool2d, true)->UseRealTime();
  benchmark::RegisterBenchmark("softmax_forward/256x1000", BM_softmax, false, false)->UseRealTime();
  benchmark::RegisterBenchmark("softmax_backward/256x1000", BM_softmax, false, true)->UseRealTime();
  benchmark::RegisterBenchmark("log_softmax_forward/256x1000", BM_softmax, true, false)->UseRealTime();
  benchmark::RegisterBenchmark("log_softmax_backward/256x1000", BM_softmax, true, true)->UseRealTime();
  benchmark::RegisterBenchmark("dropout_forward/64x6x28x28", BM_dropout, false)->UseRealTime();
  benchmark::RegisterBenchmark("dropout_backward/64x6x28x28", BM_dropout, true)->UseRealTime();
  benchmark::RegisterBenchmark("bce_with_logits_forward/256000", BM_pair_loss, true, false)->UseRealTime();
  benchmark::RegisterBenchmark("bce_with_logits_backward/256000", BM_pair_loss, true, true)->UseRealTime();
  benchmark::RegisterBenchmark("mse_forward/256000", BM_pair_loss, false, false)->UseRealTime();
  benchmark::RegisterBenchmark("mse_backward/256000", BM_pair_loss, false, true)->UseRealTime();
  const std::pair<const char*, convkit::Act> acts[] = {
      {"relu", convkit::Act::relu}, {"leaky_relu", convkit::Act::leaky_relu},
      {"tanh", convkit::Act::tanh}, {"sigmoid", convkit::Act::sigmoid}, {"elu", convkit::Act::elu}};
  for (auto& a : acts) {
    benchmark::RegisterBenchmark((std::string(a.first) + "_forward").c_str(), BM_activation, a.second, false)->UseRealTime();
    benchmark::RegisterBenchmark((std::string(a.first) + "_backward").c_str(), BM_activation, a.second, true)->UseRealTime();
  }
  benchmark::RegisterBenchmark("linear_forward/64x400x120", BM_linear, 64, 400, 120, false)->UseRealTime();
  benchmark::RegisterBenchmark("linear_backward/64x400x120", BM_linear, 64, 400, 120, true)->UseRealTime();
  benchmark::RegisterBenchmark("linear_forward/256x1024x1024", BM_linear, 256, 1024, 1024, false)->UseRealTime();
  benchmark::RegisterBenchmark("gemm/1024", BM_gemm, 1024)->UseRealTime();
  benchmark::RegisterBenchmark("cross_entropy_forward/256x10", BM_softmax_xent, false)->UseRealTime();
  benchmark::RegisterBenchmark("cross_entropy_backward/256x10", BM_softmax_xent, true)->UseRealTime();
  return 0;
}

}  // namespace

// Registration asks the library (algorithm tables, ISA), so it runs in main, after the library's
// own static initialisation.
int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
