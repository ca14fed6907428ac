// `hepsim bench`: training-step throughput on real data with the protocol of the PyTorch baseline
// (../shared/peers/torch_hep.py --bench): a fixed sequence of batches, `warmup` untimed steps,
// then `repeats` timed rounds of `batches` steps; examples/s per round and the median. Also, in
// the same run, the free-phase (relaxation) throughput in GFLOP/s and the GEMM peak measured with
// Eigen on the relaxation's own GEMM shapes (one column chunk per thread, all threads at once).
// Accepts every `hepsim train` key (the model, the algorithm, --threads, --batch-size, …).
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <numeric>

#include "tools/cli.hpp"
#include "tools/config.hpp"

namespace hepsim::tools {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Eigen's single-precision GEMM on the map's shapes, `threads` independent column chunks at once
// (the relaxation's pattern): GFLOP/s over at least `min_seconds`.
double gemm_peak(const Network& net, Index batch, int threads, double min_seconds) {
  const auto shapes = map_gemm_shapes(net);
  double flops_per_round = 0;
  const Index cols = std::max<Index>(1, batch / threads);
  for (const auto& s : shapes) flops_per_round += 2.0 * static_cast<double>(s[0] * s[1] * cols);
  long rounds = 0;
  double elapsed = 0;
  std::exception_ptr error;  // an exception must not leave an OpenMP region
  bool failed = false;
#pragma omp parallel num_threads(threads)
  {
    std::vector<Mat<float>> A, X, Y;
    try {
      for (const auto& s : shapes) {
        A.push_back(Mat<float>::Random(s[0], s[1]));
        X.push_back(Mat<float>::Random(s[1], cols));
        Y.push_back(Mat<float>(s[0], cols));
      }
    } catch (...) {
#pragma omp critical(hepsim_bench)
      {
        if (!error) error = std::current_exception();
        failed = true;
      }
    }
#pragma omp barrier
    if (!failed) {  // every thread sees the same value after the barrier
      const auto t0 = Clock::now();
      long r = 0;
      do {
        for (int rep = 0; rep < 50; ++rep, ++r)
          for (std::size_t i = 0; i < shapes.size(); ++i) Y[i].noalias() = A[i] * X[i];
      } while (seconds_since(t0) < min_seconds);
      const double dt = seconds_since(t0);
#pragma omp critical(hepsim_bench)
      {
        rounds += r;
        elapsed = std::max(elapsed, dt);
      }
    }
  }
  if (error) std::rethrow_exception(error);
  return flops_per_round * static_cast<double>(rounds) / elapsed / 1e9;
}

// The machine's FMA peak: every thread runs 12 independent chains of fused multiply-adds on the
// widest vectors the build targets (AVX-512: 16 floats; else AVX2 + FMA: 8) in registers, no memory
// traffic; 12 chains cover the FMA latency of every x86-64 core we know. GFLOP/s of all threads
// together (2 FLOP per lane per FMA) over at least `min_seconds`; 0 without a vector FMA.
double fma_peak(int threads, double min_seconds) {
#if defined(__AVX512F__)
  using V = __m512;
  constexpr int kLanes = 16;
  const auto set1 = [](float f) { return _mm512_set1_ps(f); };
  const auto fma = [](V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); };
  const auto first = [](V a) { return _mm512_cvtss_f32(a); };
#elif defined(__AVX2__) && defined(__FMA__)
  using V = __m256;
  constexpr int kLanes = 8;
  const auto set1 = [](float f) { return _mm256_set1_ps(f); };
  const auto fma = [](V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); };
  const auto first = [](V a) { return _mm256_cvtss_f32(a); };
#else
  (void)threads;
  (void)min_seconds;
  return 0;
#endif
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
  constexpr int kChains = 12;
  double total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
  {
    V acc[kChains];
    for (int c = 0; c < kChains; ++c) acc[c] = set1(static_cast<float>(c));
    const V mul = set1(0.999999f), add = set1(1e-7f);
    const auto t0 = Clock::now();
    long rounds = 0;
    double dt = 0;
    do {
      for (int k = 0; k < 100000; ++k)
#pragma GCC unroll 12
        for (int c = 0; c < kChains; ++c) acc[c] = fma(acc[c], mul, add);
      rounds += 100000;
      dt = seconds_since(t0);
    } while (dt < min_seconds);
    float sink = 0;
    for (int c = 0; c < kChains; ++c) sink += first(acc[c]);
    __asm__ volatile("" : : "x"(sink));  // the chains are used: they cannot be optimised away
    total += static_cast<double>(rounds) * kChains * kLanes * 2 / dt / 1e9;
  }
  return total;
#endif
}

}  // namespace

void register_bench(CLI::App& app) {
  auto flags = std::make_shared<FlagTable>();
  auto batches = std::make_shared<long>(100);
  auto warmup = std::make_shared<long>(5);
  auto repeats = std::make_shared<long>(3);
  CLI::App* cmd = app.add_subcommand("bench", "Training-step throughput (examples/s, GFLOP/s) and the GEMM peak");
  add_integer(cmd, "--batches", *batches, 1, 1000000, "Timed steps per round");
  add_integer(cmd, "--warmup", *warmup, 0, 1000000, "Untimed steps first");
  add_integer(cmd, "--repeats", *repeats, 1, 1000, "Timed rounds (the median is reported)");
  flags->add_to(*cmd);
  cmd->callback([cmd, flags, batches, warmup, repeats] {
    if (*warmup < 0) throw InputError("--warmup", "must be ≥ 0");
    ConfigBuilder b;
    b.set_flag("angle", "0");  // the paper's Table-1 setting unless given
    flags->apply(*cmd, b);
    RunSetup s = make_setup(b);
    if (s.precision != "float")  // the steps and phases below are the float engine's
      throw InputError(b.where("precision"), "bench times float training steps only (must be float)");
    const bool limited = s.train_limit > 0;  // --train-limit given
    // In double: warmup + batches · repeats steps of batch_size samples overflows a long for
    // large flags (and only decides the default of train_limit, capped at 60,000).
    const double needed = (static_cast<double>(*warmup) + static_cast<double>(*batches) * static_cast<double>(*repeats)) *
                          static_cast<double>(s.train.batch_size);
    if (s.train_limit == 0) s.train_limit = static_cast<Index>(std::min(needed, 60000.0));
    s.test_limit = 1;
    const DatasetSplits data = load_data(s);
    // Every step takes a full batch from the training set (per_pass = n / B below must be ≥ 1, or
    // the step index divides by zero), so the set must hold one batch; checked before anything of
    // batch size is allocated.
    if (data.train.n < s.train.batch_size)
      throw InputError(b.where("batch-size"),
                       std::to_string(s.train.batch_size) + " is more than the " + std::to_string(data.train.n) +
                           " training samples" +
                           (limited ? " (" + b.where("train-limit") + " " + std::to_string(s.train_limit) + ")" : ""));
    const Model model = make_model(s, data.train.dim(), data.train.classes,
                                   MapShape{data.train.channels, data.train.height, data.train.width});
    set_time_constants(s, model.net);
    check_memory(train_memory(model.net, s.train, data.train.n, data.test.n, 4, false),
                 static_cast<double>(data.train.images.size() + data.test.images.size()), "--train-limit");
    Trainer<float> trainer(model, s.train, init_params<float>(model.net, s.train.seed, s.angle));
    const Index B = s.train.batch_size;
    const std::vector<Index> perm = shuffled_indices(data.train.n, s.train.seed, 1);
    Mat<float> x(data.train.dim(), B), y(data.train.classes, B);
    long next = 0;
    const long per_pass = static_cast<long>(data.train.n / B);
    long samples = 0, diverged = 0, free_diverged = 0, cycled = 0;  // of every step, warm-up included
    auto one_step = [&](long index) {
      const Index first = (next++ % per_pass) * B;
      make_batch<float>(data.train, perm.data() + first, B, s.train.norm, Augmentation{}, nullptr, x, y);
      const auto st = trainer.step(x, y, index, 1);
      samples += B;
      diverged += st.diverged;
      free_diverged += st.free_diverged;
      cycled += st.nudged_cycling;
    };
    for (long i = 0; i < *warmup; ++i) one_step(i);
    std::vector<double> rates;
    for (long r = 0; r < *repeats; ++r) {
      const auto t0 = Clock::now();
      for (long i = 0; i < *batches; ++i) one_step(*warmup + r * *batches + i);
      rates.push_back(static_cast<double>(*batches * B) / seconds_since(t0));
    }
    // Steps in which no sample contributed time relaxations that blew up or cycled, not training:
    // refused like a training epoch that nothing contributed to.
    if (diverged + cycled >= samples) {
      const auto [flag, advice] = divergence_cause(s.train, free_diverged, diverged - free_diverged, cycled, trainer.moved());
      throw InputError(flag, "no sample contributed an error vector to the timed training steps (" + std::to_string(diverged) +
                                 " of " + std::to_string(samples) + " diverged, " + std::to_string(free_diverged) +
                                 " of them in the free phase; " + std::to_string(cycled) +
                                 " cycled in a nudged phase): " + advice);
    }
    const double flops = train_step_flops(model.net, s.train, B);
    const double med = median(rates);

    // The phases alone, with the protocol of the PyTorch peers (--bench): a fixed number of map
    // steps (no tolerance, no cycle or stall test) on the batch, chunked over threads like a
    // training step: the free phase (T1 steps from 0) and a complex nudged phase (T2 steps from
    // the free state at β = i|β|, the k = 1 point of N = 4), in image-steps per second.
    const int threads = s.train.threads;
    double rec_flops = 0;  // one real map step of one image (SPEC: the recurrent edges)
    for (const Edge& e : model.net.edges)
      if (e.pre != Network::kInput) rec_flops += edge_flops(e);
    make_batch<float>(data.train, perm.data(), B, s.train.norm, Augmentation{}, nullptr, x, y);
    RelaxConfig fixed_free = s.train.free, fixed_nudged = s.train.nudged;
    for (RelaxConfig* c : {&fixed_free, &fixed_nudged}) {
      c->tol = 0;
      c->cycle_period = 0;
      c->stall_window = 0;
      c->growth_factor = 0;
    }
    const auto chunk = [&](long c) {
      const Index first = B * c / threads;
      return std::make_pair(first, B * (c + 1) / threads - first);
    };
    std::vector<FreeState<float>> states(static_cast<std::size_t>(threads));
    std::vector<double> free_rates, complex_rates;
    for (long r = 0; r < *repeats; ++r) {
      const long phases = std::max(1L, *batches / 4);
      auto t0 = Clock::now();
      for (long p = 0; p < phases; ++p)
        parallel_items(threads, [&](long c) {
          const auto [first, count] = chunk(c);
          states[static_cast<std::size_t>(c)] = free_phase<float>(model, trainer.theta(), x.middleCols(first, count),
                                                                  y.middleCols(first, count), fixed_free);
        });
      free_rates.push_back(static_cast<double>(phases * fixed_free.max_steps * B) / seconds_since(t0));
      t0 = Clock::now();
      for (long p = 0; p < phases; ++p)
        parallel_items(threads, [&](long c) {
          const FreeState<float>& fs = states[static_cast<std::size_t>(c)];
          const Vec<std::complex<float>> beta =
              Vec<std::complex<float>>::Constant(fs.u.cols(), std::complex<float>(0.f, static_cast<float>(s.train.beta)));
          Field<std::complex<float>> field(model, trainer.theta(), fs.drive, fs.y, beta);
          Mat<std::complex<float>> u = fs.u.cast<std::complex<float>>();
          (void)relax(field, u, fixed_nudged);
        });
      complex_rates.push_back(static_cast<double>(phases * fixed_nudged.max_steps * B) / seconds_since(t0));
    }
    const double free_rate = median(free_rates), complex_rate = median(complex_rates);
    const double relax = free_rate * rec_flops / 1e9;
    // What the engine executes: fewer FLOPs than counted where it runs convolutions by Winograd.
    const double exec_flops = engine_flops_per_image_step(model.net);
    const double executed = free_rate * exec_flops / 1e9;
    // Eigen's GEMM on the dense engine's shapes: meaningless for conv networks (their layers are
    // not dense products), which are compared with the FMA peak only.
    const bool conv = model.net.has_conv();
    const double peak = conv ? 0.0 : gemm_peak(model.net, B, threads, 0.5);
    const double fma = fma_peak(threads, 0.5);
    nlohmann::json j;
    j["arch"] = s.arch;
    j["algo"] = to_string(s.train.algo);
    j["N"] = s.train.N;
    j["beta"] = s.train.beta;
    j["T1"] = s.train.free.max_steps;
    j["T2"] = s.train.nudged.max_steps;
    j["batch_size"] = B;
    j["threads"] = threads;
    j["homeostasis"] = s.train.homeostasis;
    j["train_rates"] = rates;
    j["train_samples"] = samples;  // of the training steps (warm-up included): how many diverged or cycled
    j["train_diverged"] = diverged;
    j["train_nudged_cycling"] = cycled;
    j["train_median"] = med;
    j["flops_per_step"] = flops;
    j["train_gflops"] = flops * med / static_cast<double>(B) / 1e9;
    j["flop_per_image_step"] = rec_flops;
    j["free_image_steps_per_s"] = free_rate;
    j["complex_image_steps_per_s"] = complex_rate;
    j["free_gflops"] = relax;
    j["complex_gflops"] = complex_rate * 2 * rec_flops / 1e9;  // real weights on (Re, Im): twice the FLOPs
    j["relax_gflops"] = relax;
    j["gemm_peak_gflops"] = conv ? nlohmann::json(nullptr) : nlohmann::json(peak);
    j["relax_fraction_of_peak"] = conv ? nlohmann::json(nullptr) : nlohmann::json(relax / peak);
    j["fma_peak_gflops"] = fma;
    j["flop_executed_per_image_step"] = exec_flops;
    j["free_executed_gflops"] = executed;
    j["complex_executed_gflops"] = complex_rate * 2 * exec_flops / 1e9;
    j["free_fraction_of_fma_peak"] = executed / fma;  // of the FLOPs executed: the engine's efficiency
    print_json(j);
  });
}

}  // namespace hepsim::tools
