// `hepsim bench`: training-step throughput on real data with the protocol of the PyTorch baseline
// (../shared/peers/torch_hep.py --bench): a fixed sequence of batches, `warmup` untimed steps,
// then `repeats` timed rounds of `batches` steps; examples/s per round and the median. Also, in
// the same run, the free-phase (relaxation) throughput in GFLOP/s and the GEMM peak measured with
// Eigen on the relaxation's own GEMM shapes (one column chunk per thread, all threads at once).
// Accepts every `hepsim train` key (the model, the algorithm, --threads, --batch-size, …).
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
    check_memory(train_memory(model.net, s.train, data.train.n, data.test.n, 4),
                 static_cast<double>(data.train.images.size() + data.test.images.size()));
    Trainer<float> trainer(model, s.train, init_params<float>(model.net, s.train.seed, s.angle));
    const Index B = s.train.batch_size;
    const std::vector<Index> perm = shuffled_indices(data.train.n, s.train.seed, 1);
    Mat<float> x(data.train.dim(), B), y(data.train.classes, B);
    long next = 0;
    const long per_pass = static_cast<long>(data.train.n / B);
    auto one_step = [&](long index) {
      const Index first = (next++ % per_pass) * B;
      make_batch<float>(data.train, perm.data() + first, B, s.train.norm, Augmentation{}, nullptr, x, y);
      (void)trainer.step(x, y, index, 1);
    };
    for (long i = 0; i < *warmup; ++i) one_step(i);
    std::vector<double> rates;
    for (long r = 0; r < *repeats; ++r) {
      const auto t0 = Clock::now();
      for (long i = 0; i < *batches; ++i) one_step(*warmup + r * *batches + i);
      rates.push_back(static_cast<double>(*batches * B) / seconds_since(t0));
    }
    const double flops = train_step_flops(model.net, s.train, B);
    const double med = median(rates);

    // The free phase alone (T1 map steps from 0), chunked over threads like a training step.
    const int threads = s.train.threads;
    double rec_flops = 0;
    for (const Edge& e : model.net.edges)
      if (e.pre != Network::kInput) rec_flops += edge_flops(e);
    make_batch<float>(data.train, perm.data(), B, s.train.norm, Augmentation{}, nullptr, x, y);
    std::vector<double> relax_rates;
    for (long r = 0; r < *repeats; ++r) {
      const long phases = std::max(1L, *batches / 4);
      const auto t0 = Clock::now();
      for (long p = 0; p < phases; ++p)
        parallel_items(threads, [&](long c) {
          const Index first = B * c / threads, count = B * (c + 1) / threads - first;
          (void)free_phase<float>(model, trainer.theta(), x.middleCols(first, count), y.middleCols(first, count),
                                  s.train.free);
        });
      relax_rates.push_back(static_cast<double>(phases) * static_cast<double>(s.train.free.max_steps) * rec_flops *
                            static_cast<double>(B) / seconds_since(t0) / 1e9);
    }
    const double relax = median(relax_rates);
    const double peak = gemm_peak(model.net, B, threads, 0.5);
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
    j["train_median"] = med;
    j["flops_per_step"] = flops;
    j["train_gflops"] = flops * med / static_cast<double>(B) / 1e9;
    j["relax_gflops"] = relax;
    j["gemm_peak_gflops"] = peak;
    j["relax_fraction_of_peak"] = relax / peak;
    print_json(j);
  });
}

}  // namespace hepsim::tools
