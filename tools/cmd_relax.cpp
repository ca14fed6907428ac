// `hepsim relax`: relaxes K test samples with freshly initialised weights by the chosen solver
// and by the discrete map, and reports convergence and the largest difference between the two
// fixed points (SPEC 9). With --beta, each sample's free phase is followed by a nudged phase from
// its free fixed point, and the nudged fixed points are compared. Every phase reports its statuses
// (converged, max_steps, diverged, cycling, stalled; relax.hpp) and the samples that did not
// settle; with fewer than half settled, or any diverged, the run ends with exit code 2 after its
// JSON.
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>

#include <omp.h>

#include "datasets/dataset.hpp"
#include "sim/sim.hpp"
#include "tools/cli.hpp"
#include "tools/progress.hpp"

namespace hepsim::tools {
namespace {

struct RelaxOptions {
  std::string arch = "mlp_2-256";
  std::string dataset = "fmnist";
  std::string data_dir;         // default: the dataset's standard place
  long samples = 100;           // test samples to relax (the first K)
  std::string solver = "map";
  double beta = 0;              // nudge of the second phase (0: free phase only)
  std::uint64_t seed = 0;       // weight initialisation (parsed from seed_text)
  std::string seed_text = "0";  // --seed as given: see parse_seed
  double angle = 90;            // SPEC 5 --angle (degrees); 90 = independent feedback, as on a substrate
  double tol = 1e-8;            // residual tolerance ‖M(u) − u‖∞ of every phase
  long max_steps = 20000;       // step budget per phase: 100 samples on mlp_2-256 in about a minute
                                // when some sample needs all of it (the cycle and stall tests end
                                // phases that do not converge long before)
  double dt = 0;                // map damping / Anderson mixing (0: 1), rk4 step / dopri5 first step (0: 0.5)
  int anderson_m = 5;           // anderson memory
  double stall_window = RelaxConfig{}.stall_window;  // see add_stall_window
  std::string activation = "sigmoid";
  std::string precision = "double";
  long batch_size = 100;        // columns relaxed together (independent of --threads)
  int threads = 0;
};

// The sums of one phase over all chunks (merged per thread) and each sample's status (written by
// the chunk that holds the sample).
struct PhaseStats {
  long converged = 0, diverged = 0;
  double sum_steps = 0, sum_residual = 0, max_residual = 0;
  long field_evals = 0;
  void add(const RelaxResult& r, std::vector<RelaxStatus>& status, Index first) {
    converged += r.converged();
    diverged += r.diverged();
    field_evals += r.field_evals;
    std::copy(r.status.begin(), r.status.end(), status.begin() + first);
    for (Index j = 0; j < r.residual.size(); ++j) {
      sum_steps += static_cast<double>(r.col_steps[static_cast<std::size_t>(j)]);
      if (r.status[static_cast<std::size_t>(j)] != RelaxStatus::diverged) {
        sum_residual += r.residual[j];
        max_residual = std::max(max_residual, r.residual[j]);
      }
    }
  }
  void merge(const PhaseStats& o) {
    converged += o.converged;
    diverged += o.diverged;
    sum_steps += o.sum_steps;
    sum_residual += o.sum_residual;
    max_residual = std::max(max_residual, o.max_residual);
    field_evals += o.field_evals;
  }
  nlohmann::json json(long n, const std::vector<RelaxStatus>& status) const {
    // Residuals are over the samples that did not diverge; with none left there is no residual
    // to report: NaN (null in the JSON), never the 0.0 that would read as "converged exactly".
    const long live = n - diverged;
    const double nan = std::numeric_limits<double>::quiet_NaN();
    nlohmann::json j = status_json(status);
    j.update({{"mean_steps", sum_steps / static_cast<double>(n)},
              {"mean_residual", live > 0 ? sum_residual / static_cast<double>(live) : nan},
              {"max_residual", live > 0 ? max_residual : nan}, {"field_evals", field_evals}});
    return j;
  }
};

// A sample whose fixed point differs from the map's by more than this has landed on another
// fixed point (multistability: the map and the flow can pick different basins from u = 0). The
// tolerance-induced difference is tol/(1 − ρ), orders of magnitude smaller at the default tol.
constexpr double kDifferent = 1e-4;

template <class R>
nlohmann::json run_relax(const RelaxOptions& o, std::vector<RelaxStatus>& free_status,
                         std::vector<RelaxStatus>& nudged_status) {
  const TestSamples loaded = load_test_samples(o.dataset, o.data_dir, o.samples);
  const Dataset& test = loaded.test;
  Model model;
  model.net = compile(load_architecture(o.arch, test.dim(), test.classes, MapShape{test.channels, test.height, test.width}));
  model.activation = parse_activation(o.activation);
  const double columns = static_cast<double>(std::min(o.batch_size, o.samples)) * omp_get_max_threads();
  std::vector<MemoryPart> extra;
  if (o.solver == "anderson")  // per column: m past differences of states and residuals, and work (complex: twice)
    extra.push_back({"Anderson's history (m = " + std::to_string(o.anderson_m) + ")", "--anderson-m",
                     (2.0 * o.anderson_m + 6) * static_cast<double>(model.net.neurons) * columns * 16});
  // Each thread's batch of inputs and targets (the data themselves are already resident).
  extra.push_back({"the batches' inputs (" + std::to_string(test.dim()) + " per sample)", "--batch-size",
                   static_cast<double>(test.dim() + test.classes) * columns * sizeof(R)});
  check_network_memory(model.net, columns, "--batch-size", extra);
  const Vec<R> theta = init_params<R>(model.net, o.seed, o.angle);

  RelaxConfig cfg;
  cfg.solver = parse_solver(o.solver);
  cfg.tol = o.tol;
  cfg.max_steps = o.max_steps;
  cfg.dt = o.dt;
  cfg.anderson_m = o.anderson_m;
  cfg.stall_window = o.stall_window;
  PhaseProgress progress("relax");
  RelaxConfig map_cfg = cfg;
  map_cfg.solver = Solver::map;
  map_cfg.dt = 0;  // the paper's map, whatever the solver's step
  map_cfg.progress = progress.phase("the map's fixed points");
  RelaxConfig free_cfg = cfg, nudged_cfg = cfg;
  free_cfg.progress = progress.phase("free phases");
  nudged_cfg.progress = progress.phase("nudged phases");
  const bool nudge = o.beta != 0;
  const Normalization norm = default_normalization(loaded.source);

  const Index n = model.net.neurons;
  const long chunks = (o.samples - 1) / o.batch_size + 1;  // not samples + batch − 1: overflows at 2^63
  PhaseStats free_stats, nudged_stats;
  free_status.assign(static_cast<std::size_t>(o.samples), RelaxStatus::converged);
  nudged_status.assign(nudge ? static_cast<std::size_t>(o.samples) : 0, RelaxStatus::converged);
  double max_diff = 0;
  long differing = 0, compared = 0;
  const auto t0 = std::chrono::steady_clock::now();
  std::exception_ptr error;  // an exception must not leave an OpenMP region
#pragma omp parallel
  {
    PhaseStats my_free, my_nudged;
    double my_diff = 0;
    long my_differing = 0, my_compared = 0;
#pragma omp for schedule(dynamic, 1)
    for (long c = 0; c < chunks; ++c) try {
      const Index first = c * o.batch_size;
      const Index cols = std::min<Index>(o.batch_size, o.samples - first);
      std::vector<Index> idx(static_cast<std::size_t>(cols));
      for (Index j = 0; j < cols; ++j) idx[static_cast<std::size_t>(j)] = first + j;
      Mat<R> x(test.dim(), cols), y(test.classes, cols), drive(n, cols);
      make_batch<R>(test, idx.data(), cols, norm, Augmentation{}, nullptr, x, y);
      input_drive<R>(model.net, theta, x, drive);
      const Vec<R> zero = Vec<R>::Zero(cols), beta = Vec<R>::Constant(cols, static_cast<R>(o.beta));
      Field<R> free_field(model, theta, drive, y, zero), nudged_field(model, theta, drive, y, beta);

      // The solver under test: free phase, then (with β) the nudged phase from its fixed point.
      Mat<R> u = Mat<R>::Zero(n, cols);
      my_free.add(relax(free_field, u, free_cfg), free_status, first);
      if (nudge) my_nudged.add(relax(nudged_field, u, nudged_cfg), nudged_status, first);
      // The discrete map's fixed points (the reference of max_abs_diff_vs_map).
      // Only samples that settled under both are compared (a cycling map has no fixed point).
      Mat<R> v = Mat<R>::Zero(n, cols);
      std::vector<char> compare(static_cast<std::size_t>(cols), 1);
      if (cfg.solver != Solver::map || cfg.step() != 1) {  // the damped map is compared with the plain one too
        const RelaxResult rf = relax(free_field, v, map_cfg);
        for (Index k = 0; k < cols; ++k) compare[static_cast<std::size_t>(k)] = rf.status[static_cast<std::size_t>(k)] == RelaxStatus::converged;
        if (nudge) {
          const RelaxResult rn = relax(nudged_field, v, map_cfg);
          for (Index k = 0; k < cols; ++k) compare[static_cast<std::size_t>(k)] &= rn.status[static_cast<std::size_t>(k)] == RelaxStatus::converged;
        }
      } else {
        v = u;
      }
      const std::vector<RelaxStatus>& mine = nudge ? nudged_status : free_status;
      for (Index k = 0; k < cols; ++k) {
        if (!compare[static_cast<std::size_t>(k)] || mine[static_cast<std::size_t>(first + k)] != RelaxStatus::converged) continue;
        const double diff = static_cast<double>((u.col(k) - v.col(k)).cwiseAbs().maxCoeff());
        ++my_compared;
        my_diff = std::max(my_diff, diff);
        my_differing += diff > kDifferent;
      }
    } catch (...) {
#pragma omp critical
      error = std::current_exception();
    }
#pragma omp critical
    {
      free_stats.merge(my_free);
      nudged_stats.merge(my_nudged);
      max_diff = std::max(max_diff, my_diff);
      differing += my_differing;
      compared += my_compared;
    }
  }
  if (error) std::rethrow_exception(error);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const PhaseStats& main = nudge ? nudged_stats : free_stats;
  nlohmann::json j = main.json(o.samples, nudge ? nudged_status : free_status);
  j["solver"] = o.solver;
  j["samples"] = o.samples;
  // Samples that settled under both this solver and the plain map (the only ones with two fixed
  // points to compare); none compared: no difference to report.
  j["compared_with_map"] = compared;
  j["max_abs_diff_vs_map"] = compared > 0 ? nlohmann::json(max_diff) : nlohmann::json(nullptr);
  j["differing_fixed_points"] = differing;
  j["arch"] = o.arch;
  j["beta"] = o.beta;
  j["tol"] = o.tol;
  j["dt"] = cfg.step();
  j["precision"] = o.precision;
  j["seconds"] = seconds;
  if (nudge) j["free"] = free_stats.json(o.samples, free_status);
  return j;
}

// A diverged sample means the run's settings do not relax this network: the JSON (printed first)
// says how many, and the exit code must not say success. Names the flag most likely at fault:
// a free phase diverges by the ODE step (rk4, dopri5) or by Anderson's extrapolation; a nudged
// phase whose free phase did not diverge, by the nudge. Fewer than half the samples settled in a
// phase: exit 2 naming --dt/--solver (check_settled; with fewer left out, one line lists them).
void check_outcome(const nlohmann::json& j, const RelaxOptions& o, const std::vector<RelaxStatus>& free_status,
                   const std::vector<RelaxStatus>& nudged_status) {
  const bool nudge = o.beta != 0;
  const long free_div = (nudge ? j.at("free") : j).at("diverged").get<long>();
  const long main_div = j.at("diverged").get<long>();
  const std::string of = " of " + std::to_string(o.samples) + " samples diverged in the ";
  if (free_div > 0) {
    // The ODE step or Anderson's extrapolation; the plain map diverges only by the weights.
    const bool ode = o.solver == "rk4" || o.solver == "dopri5";
    const double dt = j.at("dt").get<double>();
    throw InputError(ode || dt > 1 ? "--dt" : o.solver == "anderson" ? "--solver" : "--arch/--angle/--seed",
                     std::to_string(free_div) + of + "free phase (" + o.solver +
                         (ode || dt != 1 ? ", dt " + nlohmann::json(dt).dump() : std::string()) + ")");
  }
  if (main_div > 0)
    throw InputError("--beta", std::to_string(main_div) + of + "nudged phase (" + o.solver + ", beta " +
                                   nlohmann::json(o.beta).dump() + ")");
  check_settled("relax", free_status, "the free phase", "count as not converged");
  if (nudge) check_settled("relax", nudged_status, "the nudged phase", "count as not converged");
}

}  // namespace

void register_relax(CLI::App& app) {
  auto opt = std::make_shared<RelaxOptions>();
  CLI::App* cmd = app.add_subcommand("relax", "Relax test samples with fresh weights; compare a solver with the map");
  cmd->add_option("--arch", opt->arch, "Architecture: mlp_2-256, loop_mnist, cnn, cnn_small or a JSON file")->capture_default_str();
  cmd->add_option("--dataset", opt->dataset, "fmnist, mnist, cifar10, cifar100, imagenet32, imagenet64, h5")
      ->capture_default_str();
  cmd->add_option("--data-dir", opt->data_dir, "Dataset directory (default: the dataset's standard place)");
  add_integer(cmd, "--samples", opt->samples, 1, 100000000, "Number of test samples to relax");
  cmd->add_option("--solver", opt->solver, "map, rk4, dopri5 or anderson")->capture_default_str();
  add_integer(cmd, "--anderson-m", opt->anderson_m, 1, 16, "Anderson memory");
  add_stall_window(cmd, opt->stall_window);
  add_real(cmd, "--beta", opt->beta, "Nudge of a second phase from the free fixed point (0: none)");
  cmd->add_option("--seed", opt->seed_text, "Seed of the weight initialisation (0 .. 2^63 − 1)")
      ->capture_default_str();
  add_real(cmd, "--angle", opt->angle, "Initial angle between feedback and forward weights (degrees, 0 .. 180)");
  add_real(cmd, "--tol", opt->tol, "Residual tolerance of every phase");
  add_integer(cmd, "--max-steps", opt->max_steps, 1, 1000000000, "Step budget of every phase");
  add_real(cmd, "--dt", opt->dt, "Time step: map damping (1 = the paper's map) and Anderson mixing, rk4 step, dopri5 first step "
                  "(0: the solver's default, 1 for map/anderson, 0.5 for rk4/dopri5)");
  cmd->add_option("--activation", opt->activation, "sigmoid or dsilu (default: dsilu for cnn and cnn_small, else sigmoid)");
  cmd->add_option("--precision", opt->precision, "double or float")->capture_default_str();
  add_integer(cmd, "--batch-size", opt->batch_size, 1, 1000000, "Samples relaxed together");
  add_integer(cmd, "--threads", opt->threads, 0, kMaxThreads, "Threads (0 = all cores)");
  cmd->callback([cmd, opt] {
    opt->seed = parse_seed(opt->seed_text);
    if (cmd->count("--activation") == 0) opt->activation = default_activation(opt->arch);  // dsilu for the CNNs
    const RelaxOptions& o = *opt;
    require_stall_window(o.stall_window);
    require_finite(o.beta, "--beta");
    require_angle(o.angle, "--angle");
    // The statuses are measured against it: 0 (fixed steps) would count samples as converged
    // against a tolerance nobody gave.
    if (!(o.tol > 0) || !std::isfinite(o.tol))
      throw InputError("--tol", "must be a finite positive number (the residual every phase is relaxed to)");
    if (!(o.dt >= 0) || !std::isfinite(o.dt)) throw InputError("--dt", "must be a finite number ≥ 0 (0: the solver's default)");
    set_threads(o.threads);
    // Columns are parallelised by chunks here; Eigen's own GEMM threads would oversubscribe.
    Eigen::setNbThreads(1);
    if (o.precision != "double" && o.precision != "float") throw InputError("--precision", "must be double or float");
    std::vector<RelaxStatus> free_status, nudged_status;
    const nlohmann::json j = o.precision == "double" ? run_relax<double>(o, free_status, nudged_status)
                                                     : run_relax<float>(o, free_status, nudged_status);
    print_json(j);  // the counts are useful even when some samples diverged
    check_outcome(j, o, free_status, nudged_status);
  });
}

}  // namespace hepsim::tools
