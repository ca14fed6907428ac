// `hepsim jacobian`: the Jacobian analysis of SPEC 4 for freshly initialised weights — symmetry
// (exact and from random probes), the homeostatic loss (exact and Hutchinson), the spectrum of
// J = H − I with its non-normality, the rightmost eigenvalue of the linearised dynamics
// J_G D − I at the free fixed points of a few samples, and the weight angle (SPEC 5). Samples whose
// free phase does not settle are listed (free.not_settled) and left out of the dynamics; with
// fewer than half settled the run ends with exit code 2 after its JSON.
#include <chrono>
#include <cmath>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>

#include <omp.h>

#include "jacobian/jacobian.hpp"
#include "tools/cli.hpp"
#include "tools/progress.hpp"

namespace hepsim::tools {
namespace {

struct JacobianOptions {
  std::string arch = "mlp_2-256";
  double angle = 90;            // SPEC 5 --angle (degrees); 90 = independent feedback
  std::uint64_t seed = 0;       // weight initialisation, probes and random inputs (separate streams)
  std::string seed_text = "0";  // --seed as given: see parse_seed
  long probes = 1000;           // Gaussian probe columns of the estimates (2 .. kMaxProbes)
  std::string dataset = "random";  // inputs of the dynamics: random (uniform [0,1), 784 -> 10) or a dataset
  std::string data_dir;         // default: the dataset's standard place
  long samples = 8;             // samples whose free fixed point is linearised (1 .. kMaxSamples)
  std::string activation = "sigmoid";
  long max_dense = kMaxDenseNeurons;  // spectra only up to this many neurons (0 .. kMaxDenseLimit)
  double tol = 1e-9;            // free-phase residual ‖M(u) − u‖∞
  std::string solver = "map";   // map or anderson (the fixed-point solvers; rk4/dopri5 too)
  double dt = 0;                // the solver's time step (0: its default; the map: 1)
  double stall_window = RelaxConfig{}.stall_window;  // see add_stall_window
  long max_steps = 10000;       // free-phase step budget (see AnalysisConfig)
  int threads = 0;
};

// Random inputs have Fashion-MNIST's shape so that the built-in architectures fit.
constexpr Index kRandomInput = 784, kRandomClasses = 10;  // Fashion-MNIST's shape: 1 x 28 x 28

// Upper bounds of the flags that size allocations (beyond them a typo ends in std::bad_alloc).
// --probes: the estimates hold three neurons × probes matrices (E, HE, HᵀE); 100,000 probes on
// mlp_2-256 (522 neurons) are 1.3 GB, and the relative standard error (≈ 1/√probes: 0.4% at
// 2000) is then already below 0.1%, so more probes buy nothing.
constexpr long kMaxProbes = 100000;
// --samples: the random inputs are 784 × samples and the dynamics hold four neurons × samples
// matrices; 100,000 is 10× the Fashion-MNIST test set (each sample is also one dense
// eigenproblem, measured 0.4 s on one core at 522 neurons, so larger counts are impractical).
constexpr long kMaxSamples = 100000;
// --max-dense: the spectra form dense n × n matrices (H, the eigen-solver's complex workspace);
// at n = 16,384 each is 2–4 GB and one eigenproblem takes hours, so a larger threshold is a typo.
constexpr long kMaxDenseLimit = 16384;
// One dense nonsymmetric eigenproblem (eigenvalues only) of n × n: measured 0.25 s at n = 522 on
// one core of the development machine, and its cost grows as n³. The spectrum of J and one per
// sample's dynamics run on the threads; more than 5 minutes is refused before starting.
constexpr double kEigSecondsPerCubedNeuron = 0.25 / (522.0 * 522.0 * 522.0);
constexpr double kMaxSpectraSeconds = 300;
constexpr double kAnnounceSpectraSeconds = 10;  // longer spectra are announced with their estimate

nlohmann::json number_or_null(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

nlohmann::json run_jacobian(const JacobianOptions& o, std::vector<RelaxStatus>& free_status) {
  const auto t0 = std::chrono::steady_clock::now();
  Mat<double> x;
  Model model;
  model.activation = parse_activation(o.activation);
  std::optional<TestSamples> loaded;  // the inputs are made once their memory is checked
  if (o.dataset == "random") {
    if (!o.data_dir.empty())  // a directory named for random inputs is a mistake, not something to ignore
      throw InputError("--data-dir", "names the files of a dataset; --dataset random makes its inputs (give --dataset)");
    model.net = compile(load_architecture(o.arch, kRandomInput, kRandomClasses, MapShape{1, 28, 28}));
  } else {
    loaded = load_test_samples(o.dataset, o.data_dir, o.samples);
    const Dataset& test = loaded->test;
    model.net = compile(load_architecture(o.arch, test.dim(), test.classes, MapShape{test.channels, test.height, test.width}));
  }
  std::vector<MemoryPart> extra;
  // Spectra run one sample per thread at a time.
  const double concurrent = static_cast<double>(std::min<long>(o.samples, omp_get_max_threads()));
  if (!model.net.has_conv() && model.net.neurons <= o.max_dense) {
    // The dense H, the exact norms' and J's eigenproblem (a Hessenberg/Schur copy and workspace),
    // and per concurrent sample J_G D − I with its own eigenproblem.
    const double nn = static_cast<double>(model.net.neurons);
    extra.push_back({"the dense spectra (" + std::to_string(model.net.neurons) + " x " +
                         std::to_string(model.net.neurons) + " matrices)",
                     "--max-dense", (4 + 3 * concurrent) * nn * nn * 8});
  }
  if (model.net.has_conv() && model.net.neurons <= o.max_dense) {
    // Each settled sample's dense H from n JVPs (replicated state, identity, H, the dynamics'
    // matrix and the n columns' pre-pool products), one sample per thread; all H kept.
    const double nn = static_cast<double>(model.net.neurons);
    extra.push_back({"the dense Jacobians at the samples' states (" + std::to_string(model.net.neurons) + " x " +
                         std::to_string(model.net.neurons) + " each)",
                     "--max-dense",
                     nn * nn * 8 * static_cast<double>(o.samples) +
                         (5 * nn * nn + 2 * conv_product_values(model.net) * nn) * 8 * concurrent});
  }
  {
    // The estimates' probe columns: E, HE, HᵀE and a scratch (dense); at a conv network's states
    // also the states per column, the complex step's copies and the pre-pool products (as the
    // conv homeostasis of training counts them).
    const double nn = static_cast<double>(model.net.neurons), p = static_cast<double>(o.probes);
    extra.push_back({"the estimates' " + std::to_string(o.probes) + " probe columns", "--probes",
                     model.net.has_conv() ? p * (18 * nn + 5 * conv_product_values(model.net)) * 8 : 4 * nn * p * 8});
  }
  const Index input_size = loaded ? loaded->test.dim() : kRandomInput;
  extra.push_back({"the inputs (" + std::to_string(input_size) + " x " + std::to_string(o.samples) + ")", "--samples",
                   8.0 * static_cast<double>(input_size) * static_cast<double>(o.samples)});
  check_network_memory(model.net, static_cast<double>(o.samples), "--samples", extra);
  x.resize(input_size, o.samples);
  if (!loaded) {
    Rng rng(o.seed, Stream::data);
    for (Index i = 0; i < x.size(); ++i) x.data()[i] = rng.uniform();
  } else {
    Mat<double> y(loaded->test.classes, o.samples);
    std::vector<Index> idx(static_cast<std::size_t>(o.samples));
    for (Index j = 0; j < o.samples; ++j) idx[static_cast<std::size_t>(j)] = j;
    make_batch<double>(loaded->test, idx.data(), o.samples, default_normalization(loaded->source), Augmentation{},
                       nullptr, x, y);
  }
  const Vec<double> theta = init_params<double>(model.net, o.seed, o.angle);
  const Index n = model.net.neurons;
  if (n <= o.max_dense) {
    const double nd = static_cast<double>(n);
    // The spectra run one per thread, but never faster than on the machine's cores.
    const double seconds = kEigSecondsPerCubedNeuron * nd * nd * nd * static_cast<double>(1 + o.samples) /
                           static_cast<double>(std::max(1, std::min(omp_get_max_threads(), omp_get_num_procs())));
    if (seconds > kMaxSpectraSeconds)
      throw InputError("--max-dense", "the dense spectra of " + std::to_string(n) + " neurons (J and " +
                                          std::to_string(o.samples) + " samples' dynamics) would take about " +
                                          std::to_string(static_cast<long>(seconds / 60)) +
                                          " minutes: set --max-dense below " + std::to_string(n) +
                                          " to skip them, or fewer --samples");
    // Each spectrum is one eigensolver call that reports nothing until it is done: say up front
    // what is coming when it is long (the per-spectrum lines follow).
    if (seconds > kAnnounceSpectraSeconds)
      std::cerr << "jacobian: dense spectra of " << n << " neurons (J and " << o.samples
                << " samples' dynamics): about " << static_cast<long>(std::ceil(seconds)) << " s\n"
                << std::flush;
  }

  AnalysisConfig cfg;
  cfg.probes = o.probes;
  cfg.seed = o.seed;
  cfg.max_dense = o.max_dense;
  cfg.tol = o.tol;
  cfg.max_steps = o.max_steps;
  cfg.solver = parse_solver(o.solver);
  cfg.dt = o.dt;
  cfg.stall_window = o.stall_window;
  PhaseProgress progress("jacobian");
  cfg.progress = progress.phase("free phase");
  cfg.spectra_progress = progress.count("dense spectra");
  const JacobianAnalysis a = analyse_jacobian(model, theta, x, cfg);
  free_status = a.free_status;

  nlohmann::json j;
  j["neurons"] = a.neurons;
  j["jac_sym"] = number_or_null(a.jac_sym);  // null: a conv network above --max-dense
  j["jac_sym_estimate"] = number_or_null(a.jac_sym_estimate.value);
  j["jac_sym_estimate_stderr"] = number_or_null(a.jac_sym_estimate.std_error);  // null for conv networks
  j["homeo_exact"] = number_or_null(a.homeo_exact);
  j["homeo_estimate"] = a.homeo_estimate.value;
  j["homeo_estimate_stderr"] = a.homeo_estimate.std_error;
  j["max_real_eig"] = a.jac ? nlohmann::json(a.jac->max_real.real()) : nlohmann::json(nullptr);
  j["max_real_eig_imag"] = a.jac ? nlohmann::json(a.jac->max_real.imag()) : nlohmann::json(nullptr);
  j["henrici"] = a.jac ? nlohmann::json(a.jac->henrici) : nlohmann::json(nullptr);
  j["max_real_eig_dynamics"] =
      a.max_real_eig_dynamics ? nlohmann::json(a.max_real_eig_dynamics->real()) : nlohmann::json(nullptr);
  j["dynamics_samples"] = a.samples;
  j["dynamics_converged"] = a.converged;
  j["dynamics_unstable"] = a.unstable;
  if (!a.free_status.empty()) j["free"] = status_json(a.free_status);  // only where the dynamics were analysed
  j["weight_angle_deg"] = number_or_null(a.weight_angle_deg);
  j["arch"] = o.arch;
  j["angle"] = o.angle;
  j["seed"] = o.seed;
  j["probes"] = o.probes;
  j["dataset"] = o.dataset;
  j["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return j;
}

}  // namespace

void register_jacobian(CLI::App& app) {
  auto opt = std::make_shared<JacobianOptions>();
  CLI::App* cmd = app.add_subcommand(
      "jacobian", "Jacobian symmetry, spectrum and homeostatic loss of freshly initialised weights");
  cmd->add_option("--arch", opt->arch, "Architecture: mlp_2-256, loop_mnist, cnn, cnn_small or a JSON file")->capture_default_str();
  add_real(cmd, "--angle", opt->angle, "Initial angle between feedback and forward weights (degrees, 0 .. 180)");
  cmd->add_option("--seed", opt->seed_text, "Seed of the weights, the probes and the random inputs (0 .. 2^63 − 1)")
      ->capture_default_str();
  add_integer(cmd, "--probes", opt->probes, 2, kMaxProbes, "Gaussian probes of the estimates");
  cmd->add_option("--dataset", opt->dataset,
                  "Inputs of the dynamics: random, fmnist, mnist, cifar10, cifar100, imagenet32, imagenet64, h5")
      ->capture_default_str();
  cmd->add_option("--data-dir", opt->data_dir, "Dataset directory (default: the dataset's standard place)");
  add_integer(cmd, "--samples", opt->samples, 1, kMaxSamples, "Samples whose fixed point is linearised");
  cmd->add_option("--activation", opt->activation, "sigmoid or dsilu (default: dsilu for cnn and cnn_small, else sigmoid)");
  add_integer(cmd, "--max-dense", opt->max_dense, 0, kMaxDenseLimit, "Largest neuron count for which spectra are computed");
  add_real(cmd, "--tol", opt->tol, "Free-phase residual tolerance");
  cmd->add_option("--solver", opt->solver, "Free-phase solver: map, rk4, dopri5 or anderson")->capture_default_str();
  add_integer(cmd, "--max-steps", opt->max_steps, 1, 1000000000, "Free-phase step budget");
  add_stall_window(cmd, opt->stall_window);
  add_real(cmd, "--dt", opt->dt, "Time step: map damping (1 = the paper's map), rk4 step, dopri5 first step (0: the solver's default)");
  add_integer(cmd, "--threads", opt->threads, 0, kMaxThreads, "Threads (0 = all cores)");
  cmd->callback([cmd, opt] {
    opt->seed = parse_seed(opt->seed_text);
    if (cmd->count("--activation") == 0) opt->activation = default_activation(opt->arch);  // dsilu for the CNNs
    const JacobianOptions& o = *opt;
    require_angle(o.angle, "--angle");
    if (!(o.tol > 0) || !std::isfinite(o.tol)) throw InputError("--tol", "must be a finite positive number");
    if (!(o.dt >= 0) || !std::isfinite(o.dt)) throw InputError("--dt", "must be a finite number ≥ 0 (0: the solver's default)");
    require_stall_window(o.stall_window);
    set_threads(o.threads);
    std::vector<RelaxStatus> free_status;
    print_json(run_jacobian(o, free_status));  // the counts are useful even when samples did not settle
    check_settled("jacobian", free_status, "the free phase", "are left out of the dynamics' spectra");
  });
}

}  // namespace hepsim::tools
