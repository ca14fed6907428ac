// Google Benchmark of hepsim's components on mlp_2-256 (float): one relaxation step (fused engine
// and per-edge path), a free phase, a full training step for N = 1, 2, 4, 6, the homeostasis
// term, evaluation, and Eigen's GEMM on the relaxation's own shapes (the peak to compare with);
// and the packed-panel GEMM against Eigen's on the conv engine's shapes.
// Counters: items/s = examples/s, "GFLOP/s" from the flop counts of ep/train.hpp.
//   build/tools/bench/bench_components [--benchmark_filter=…]
#include <benchmark/benchmark.h>

#include <array>
#include <numeric>
#include <vector>

#include "ep/train.hpp"
#include "sim/panel_gemm.hpp"

namespace hepsim {
namespace {

struct Fixture {
  Model model;
  Vec<float> theta;
  Mat<float> x, y;
  explicit Fixture(Index B) {
    model.net = compile(load_architecture("mlp_2-256", 784, 10));
    theta = init_params<float>(model.net, 0, 0.0);
    Rng rng(1, Stream::data);
    x.resize(784, B);
    y = Mat<float>::Zero(10, B);
    for (Index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<float>(rng.uniform());
    for (Index j = 0; j < B; ++j) y(static_cast<Index>(rng.below(10)), j) = 1;
  }
  double recurrent_flops() const {
    double f = 0;
    for (const Edge& e : model.net.edges)
      if (e.pre != Network::kInput) f += edge_flops(e);
    return f;
  }
};

void set_rate(benchmark::State& state, double flops_per_iteration, double examples_per_iteration) {
  state.counters["GFLOP/s"] = benchmark::Counter(flops_per_iteration * static_cast<double>(state.iterations()) / 1e9,
                                                 benchmark::Counter::kIsRate);
  state.SetItemsProcessed(static_cast<int64_t>(examples_per_iteration * static_cast<double>(state.iterations())));
}

// One map step: range(0) columns, range(1) = 1 for the fused engine, 0 for the per-edge path,
// range(2) = 1 with the cycle and stall tests of sim/relax.hpp (the default), 0 without. From
// u = 0 every column converges, so the cycle test watches none (its cost for converging phases);
// range(3) = 1 starts instead from the fixed point with report_tol 1e-12, where float's residual
// stays at its rounding floor (~1e-7): every column is watched from the second window (step 17)
// on, the test's worst case, timed over 80 steps. Compare
// with --benchmark_repetitions=… --benchmark_enable_random_interleaving=true.
void BM_RelaxStep(benchmark::State& state) {
  const Index B = state.range(0);
  Fixture f(B);
  Mat<float> drive(f.model.net.neurons, B);
  input_drive<float>(f.model.net, f.theta, f.x, drive);
  const Vec<float> zero = Vec<float>::Zero(B);
  Field<float> field(f.model, f.theta, drive, f.y, zero);
  Mat<float> start = Mat<float>::Zero(f.model.net.neurons, B);
  RelaxConfig cfg;
  if (state.range(3) != 0) {
    RelaxConfig settle;
    settle.max_steps = 3000;
    (void)relax(field, start, settle);
    cfg.report_tol = 1e-12;
  }
  const long steps = state.range(3) != 0 ? 80 : 20;
  cfg.max_steps = steps;
  cfg.fused = state.range(1) != 0;
  if (state.range(2) == 0) {
    cfg.cycle_period = 0;
    cfg.stall_window = 0;
  }
  Mat<float> u = start;
  for (auto _ : state) {
    u = start;
    benchmark::DoNotOptimize(relax(field, u, cfg));
  }
  const double n = static_cast<double>(steps);
  set_rate(state, n * f.recurrent_flops() * static_cast<double>(B), n * static_cast<double>(B));
}
BENCHMARK(BM_RelaxStep)->ArgsProduct({{25, 50, 100}, {0, 1}, {0, 1}, {0, 1}})->Unit(benchmark::kMicrosecond);

// Eigen's GEMM on the same shapes as one map step (no epilogue, no packing reuse).
void BM_GemmPeak(benchmark::State& state) {
  const Index B = state.range(0);
  Fixture f(B);
  const auto shapes = map_gemm_shapes(f.model.net);
  std::vector<Mat<float>> A, X, Y;
  double flops = 0;
  for (const auto& s : shapes) {
    A.push_back(Mat<float>::Random(s[0], s[1]));
    X.push_back(Mat<float>::Random(s[1], B));
    Y.push_back(Mat<float>(s[0], B));
    flops += 2.0 * static_cast<double>(s[0] * s[1] * B);
  }
  Eigen::setNbThreads(1);
  for (auto _ : state)
    for (std::size_t i = 0; i < A.size(); ++i) {
      Y[i].noalias() = A[i] * X[i];
      benchmark::ClobberMemory();
    }
  set_rate(state, flops, static_cast<double>(B));
}
BENCHMARK(BM_GemmPeak)->Arg(25)->Arg(50)->Arg(100)->Unit(benchmark::kMicrosecond);

// The packed-panel GEMM of the engines (sim/panel_gemm.hpp, range(3) = 1) against Eigen's general
// GEMM (range(3) = 0) on the conv engine's shapes: rows x inner x columns of cnn_small's and cnn's
// stacked-kernel and transposed-conv products for a chunk of 256 columns. One thread; the panel
// is packed once outside the loop, as the engine packs its kernels once per relaxation.
void BM_ConvGemm(benchmark::State& state) {
  const Index M = state.range(0), K = state.range(1), N = state.range(2);
  const Mat<float> A = Mat<float>::Random(M, K), X = Mat<float>::Random(K, N);
  Mat<float> Y(M, N);
  const detail::PackedMatrix packed(A);
  Eigen::setNbThreads(1);
  for (auto _ : state) {
    if (state.range(3))
      packed.multiply(X.data(), K, N, Y.data(), M);
    else
      Y.noalias() = A * X;
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * static_cast<double>(M * K * N) *
                                                     static_cast<double>(state.iterations()) / 1e9,
                                                 benchmark::Counter::kIsRate);
}
void conv_gemm_shapes(benchmark::internal::Benchmark* b) {
  for (const auto& s : std::vector<std::array<int64_t, 3>>{
           {128, 288, 256}, {32, 576, 256}, {256, 576, 256}, {64, 1152, 256}, {512, 1152, 256}, {1024, 2304, 64},
           {256, 4608, 256}})
    for (int64_t panel : {0, 1}) b->Args({s[0], s[1], s[2], panel});
}
BENCHMARK(BM_ConvGemm)->Apply(conv_gemm_shapes)->Unit(benchmark::kMicrosecond);

// A full training step of batch 50: range(0) = N, range(1) = threads.
void BM_TrainStep(benchmark::State& state) {
  const Index B = 50;
  Fixture f(B);
  TrainConfig cfg;
  cfg.N = static_cast<int>(state.range(0));
  cfg.free.max_steps = 150;
  cfg.nudged.max_steps = 20;
  cfg.threads = static_cast<int>(state.range(1));
  cfg.batch_size = B;
  Trainer<float> t(f.model, cfg, f.theta);
  long k = 0;
  for (auto _ : state) benchmark::DoNotOptimize(t.step(f.x, f.y, k++, 1 << 30));
  set_rate(state, train_step_flops(f.model.net, cfg, B), static_cast<double>(B));
}
BENCHMARK(BM_TrainStep)->ArgsProduct({{1, 2, 4, 6}, {1, 2}})->Unit(benchmark::kMillisecond)->UseRealTime();

// The Hutchinson homeostasis gradient: 5 draws x 50 samples.
void BM_Homeostasis(benchmark::State& state) {
  Fixture f(50);
  Homeostasis<float> h(f.model.net, HomeoConfig{HomeoMode::hutchinson, 5, 1.0}, 50);
  Vec<float> grad = Vec<float>::Zero(f.model.net.n_params);
  std::uint64_t k = 0;
  for (auto _ : state) benchmark::DoNotOptimize(h.add_gradient(f.theta, 0, k++, grad));
  set_rate(state, 4 * f.recurrent_flops() * 250, 50);
}
BENCHMARK(BM_Homeostasis)->Unit(benchmark::kMillisecond);

// Evaluation: the free phase (T1 = 150) of 500 samples in one chunk.
void BM_Evaluate(benchmark::State& state) {
  const Index B = 500;
  Fixture f(B);
  RelaxConfig cfg;
  cfg.max_steps = 150;
  for (auto _ : state) benchmark::DoNotOptimize(free_phase<float>(f.model, f.theta, f.x, f.y, cfg));
  set_rate(state, 150 * f.recurrent_flops() * static_cast<double>(B), static_cast<double>(B));
}
BENCHMARK(BM_Evaluate)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace hepsim

BENCHMARK_MAIN();
