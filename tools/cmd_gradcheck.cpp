// `hepsim gradcheck`: one batch in double precision; every estimator of SPEC 3 against the exact
// references. By default every phase is relaxed to convergence (residual ≤ --tol) so that each
// estimator's own bias is isolated; explicit --T1/--T2 measure the truncated setting instead.
// Samples whose free phase does not settle (cycling, stalled, out of budget, diverged) have no
// fixed point to be exact about: they are listed in free.not_settled and every metric is computed
// on the others; with fewer than half settled the run ends with exit code 2 after its JSON.
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <iomanip>
#include <limits>
#include <memory>
#include <optional>
#include <numeric>
#include <sstream>

#include "datasets/dataset.hpp"
#include "ep/estimators.hpp"
#include "ep/krylov.hpp"
#include <omp.h>

#include "tools/cli.hpp"
#include "tools/progress.hpp"

namespace hepsim::tools {
namespace {

struct GradcheckOptions {
  std::string arch = "mlp_2-256";
  std::string dataset = "fmnist";  // or "random": uniform [0,1) inputs, random labels
  std::string data_dir;
  double angle = 90;              // SPEC 5 --angle (degrees, 0 .. 180)
  std::uint64_t seed = 0;
  std::string seed_text = "0";    // --seed as given: see parse_seed
  long batch = 16;                // 1 .. kMaxBatch, and see the size checks below
  std::string N_list = "1,2,4,6";  // each 0 .. kMaxN
  std::string beta_list = "0.05,0.5";
  std::string algo = "hep";       // hep (separate phases) or online (SPEC 3.3: phase points carried)
  long periods = 3;               // online: periods of the rotation (the first is discarded)
  double noise = 0;               // σ of the state noise of the estimators' relaxations
  long T1 = 0, T2 = 0;            // 0: relax every phase to convergence
  double tol = 1e-12;             // convergence residual of every phase (and the iterations)
  long max_steps = 10000;         // budget of a converged phase: samples of the built-in networks
                                  // need a few hundred to a few thousand steps to 1e-12 (the
                                  // slowest steady rate the stall test lets through, 2x per 5000
                                  // steps, would need 200,000); a whole run stays near a minute.
  std::string solver = "map";     // map, rk4, dopri5, anderson
  double dt = 0;                  // the solver's time step (0: its default; the map: 1)
  double stall_window = RelaxConfig{}.stall_window;  // see add_stall_window
  long fd_directions = 4;         // 1 .. kMaxFdDirections
  double fd_step = 1e-5;
  std::string activation = "sigmoid";
  std::string reference = "auto";  // auto (dense up to kMaxDenseReference neurons, else gmres), dense, gmres
  long input_size = 784, classes = 10;  // for --dataset random: 1 .. kMaxInputSize, kMinClasses .. kMaxClasses
  int threads = 0;
};

// ---- bounds of the flags. Beyond them a typo ends in std::bad_alloc (exit 1) or an hour of
// swapping instead of one line naming the flag.
// --N: kMaxContourPoints, as for `hepsim train`; each relaxation stacks ⌊N/2⌋ + 1 contour points.
constexpr int kMaxN = kMaxContourPoints;
// --classes: a one-class softmax has a zero loss gradient (every cosine is 0/0). The built-in
// architectures' output layer has one neuron per class and their readout is classes × classes,
// so parameters grow as classes² (10,000 classes: 10^8 readout weights, 5 GB and 90 s for a batch
// of 2; 100,000: 80 GB per parameter vector). 4096 is 4× ImageNet's 1000 classes, the most any
// dataset hepsim reads has, and its readout (16.8M weights) is the size of the first kernel at
// the largest --input-size.
constexpr long kMinClasses = 2, kMaxClasses = 4096;
// --input-size: 65,536 inputs (256 × 256 grey) is 5× ImageNet64's 12,288, the largest input of a
// dataset hepsim reads. It sizes the first kernel: mlp_2-256 has 256 × input-size weights, and
// gradcheck holds about ten parameter-sized vectors (θ ± steps, directions, gradients), so at
// 2^24 inputs (34 GB per vector) the run cannot even initialise.
constexpr long kMaxInputSize = 65536;
// --batch: a verification batch (default 16); the size checks below are the real limit.
constexpr long kMaxBatch = 100000;
// --fd-directions: two converged relaxations of the batch each; the check's error is set by
// --fd-step, not by averaging, so thousands of directions already are a typo.
constexpr long kMaxFdDirections = 10000;
// Matrix sizes, in entries. A run needs a few matrices of these sizes at once, so these bounds
// keep a valid run within a few GB: the random batch (--input-size + --classes) × --batch in
// double; the stacked nudged states (⌊N/2⌋ + 1) × neurons × --batch in complex (1 GiB);
// truncated BPTT's trajectory (steps + 1) × neurons × --batch in double (2 GiB).
constexpr double kMaxBatchValues = 1 << 26, kMaxStackedValues = 1 << 26, kMaxTrajectoryValues = 1 << 28;
// Networks up to this many neurons get dense-solve references (one n × n LU per sample).
constexpr long kMaxDenseReference = 4096;

// Whether the exact references are dense solves (--reference dense, or auto on a network of at most
// kMaxDenseReference neurons) rather than GMRES.
bool use_dense_reference(const GradcheckOptions& o, const Network& net) {
  if (o.reference == "dense" && net.neurons > kMaxDenseReference)
    throw InputError("--reference", "dense solves are for networks of at most " + std::to_string(kMaxDenseReference) +
                                        " neurons (this one has " + std::to_string(net.neurons) + "): use gmres or auto");
  return o.reference == "dense" || (o.reference == "auto" && net.neurons <= kMaxDenseReference);
}

// InputError naming `flag` when a matrix of `values` entries (a product of flags, computed in
// double so that it cannot overflow) exceeds `limit`.
void check_size(double values, double limit, const std::string& flag, const std::string& what) {
  if (values > limit) {
    std::ostringstream msg;
    msg << std::fixed << std::setprecision(0) << what << " would have " << values << " entries (at most " << limit << ")";
    throw InputError(flag, msg.str());
  }
}

// Integer list items: within int, then each list's own range (require_range below).
constexpr long long kMinListInt = -2147483648LL, kMaxListInt = 2147483647LL;

template <class T>
std::vector<T> parse_list(const std::string& text, const std::string& flag, long long lo = kMinListInt,
                          long long hi = kMaxListInt) {
  std::vector<T> out;
  if (!text.empty() && text.back() == ',') throw InputError(flag, "'" + text + "': an empty item after the last comma");
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if constexpr (std::is_integral_v<T>) {
      out.push_back(static_cast<T>(parse_integer(item, flag, lo, hi)));
    } else {
      out.push_back(static_cast<T>(parse_real(item, flag)));
    }
  }
  if (out.empty()) throw InputError(flag, "empty list");
  return out;
}

// Cosine and relative error, per layer (each over that layer's neurons × the batch) and in total,
// with norms that do not overflow: an estimate at a tiny |β| (rounding / β, about 1e284 at 1e-300)
// has a finite length that norm()'s sum of squares overflows (its cosine came out 0).
nlohmann::json per_layer(const Network& net, const Mat<double>& a, const Mat<double>& b, bool cosine) {
  nlohmann::json j;
  auto metric = [&](const auto& x, const auto& y) {
    if (cosine) return (x / x.stableNorm()).cwiseProduct(y / y.stableNorm()).sum();
    return (x - y).stableNorm() / y.stableNorm();
  };
  j["total"] = metric(a, b);
  for (const Layer& l : net.layers) j[l.name] = metric(a.middleRows(l.offset, l.size), b.middleRows(l.offset, l.size));
  return j;
}

double cosine(const Vec<double>& a, const Vec<double>& b) { return (a / a.stableNorm()).dot(b / b.stableNorm()); }

// The batch-mean loss at the free fixed point; `unsettled` counts columns that did not converge.
double batch_loss(const Model& m, const Vec<double>& theta, const Mat<double>& x, const Mat<double>& y,
                  const RelaxConfig& cfg, long& unsettled) {
  const FreeState<double> fs = free_phase<double>(m, theta, x, y, cfg);
  unsettled += static_cast<long>(fs.relax.not_settled().size());
  Mat<double> s(fs.u.rows(), fs.u.cols());
  activate<double>(m.activation, fs.u, s);
  const Layer& o = m.net.layers[static_cast<std::size_t>(m.net.out)];
  return loss_per_sample<double>(m.net, theta, m.loss, s.middleRows(o.offset, o.size), y).mean();
}

// `free_status` receives the free phase's status of every sample of the batch.
nlohmann::json run_gradcheck(const GradcheckOptions& o, std::vector<RelaxStatus>& free_status) {
  const auto t0 = std::chrono::steady_clock::now();
  // ---- the network, from the batch's shape (the batch is filled once its memory is checked)
  Mat<double> x, y;
  MapShape image{0, 0, 0};  // the images' C x H x W (convolutions need it); flat for random inputs
  std::optional<TestSamples> loaded;
  Index input_size = o.input_size, classes = o.classes;
  if (o.dataset == "random") {
    if (!o.data_dir.empty())  // a directory named for random inputs is a mistake, not something to ignore
      throw InputError("--data-dir", "names the files of a dataset; --dataset random makes its inputs (give --dataset)");
    check_size(static_cast<double>(o.input_size + o.classes) * static_cast<double>(o.batch), kMaxBatchValues,
               "--batch", "the random batch (--input-size + --classes) × --batch");
  } else {
    loaded = load_test_samples(o.dataset, o.data_dir, o.batch, "--batch");
    input_size = loaded->test.dim();
    classes = loaded->test.classes;
    image = {loaded->test.channels, loaded->test.height, loaded->test.width};
  }
  Model model;
  model.net = compile(load_architecture(o.arch, input_size, classes, image));
  model.activation = parse_activation(o.activation);
  const Network& net = model.net;
  int max_N = 0;
  for (int N : parse_list<int>(o.N_list, "--N")) max_N = std::max(max_N, N);
  // The finite-difference directions are held together (drawn in order): θ-sized each, in double,
  // plus each thread's two perturbed copies.
  std::vector<MemoryPart> extra = {
      {"the finite-difference directions (" + std::to_string(o.fd_directions) + " x " + std::to_string(net.n_params) +
           " parameters, double)",
       "--fd-directions",
       8.0 * static_cast<double>(net.n_params) * (static_cast<double>(o.fd_directions) + 2.0 * omp_get_max_threads())}};
  // A truncated run (--T1 or --T2) measures against its iterations; a converged one against
  // dense or GMRES solves.
  const bool truncated = o.T1 > 0 || o.T2 > 0;
  const bool dense = !truncated && use_dense_reference(o, net);
  if (!net.has_conv() && dense) {
    // The dense references of a dense network: H, and per sample and thread its n x n system and LU.
    const double nn = static_cast<double>(net.neurons);
    extra.push_back({"the dense references (" + std::to_string(net.neurons) + " x " + std::to_string(net.neurons) +
                         " matrices)",
                     "--arch", (2 + 3 * static_cast<double>(std::min<long>(o.batch, omp_get_max_threads()))) * nn * nn * 8});
  }
  if (net.has_conv() && dense) {
    // The dense references of a conv network: each sample's H from n JVPs (the replicated state,
    // the identity, H, its LU and the n columns' pre-pool products), one sample per thread.
    const double nn = static_cast<double>(net.neurons);
    extra.push_back({"the dense references (one " + std::to_string(net.neurons) + " x " + std::to_string(net.neurons) +
                         " Jacobian per sample and thread)",
                     "--arch",
                     (8 * nn * nn + 2 * conv_product_values(net) * nn) * 8 *
                         static_cast<double>(std::min<long>(o.batch, omp_get_max_threads()))});
  }
  if (!truncated && !dense)  // GMRES's Krylov basis and work matrices for the batch, one solve at a time,
                             // and a conv network's linearisation at the batch's states
    extra.push_back({"GMRES's Krylov basis (" + std::to_string(KrylovConfig{}.restart + 8) + " x " +
                         std::to_string(net.neurons) + " neurons x --batch, double)",
                     "--batch",
                     ((KrylovConfig{}.restart + 8) * static_cast<double>(net.neurons) + 2 * conv_product_values(net)) *
                         static_cast<double>(o.batch) * 8});
  // The estimators run one (N, |β|) per thread at a time, each with its own states.
  const double parallel = static_cast<double>(std::min<std::size_t>(
      parse_list<int>(o.N_list, "--N").size() * parse_list<double>(o.beta_list, "--beta").size(),
      static_cast<std::size_t>(omp_get_max_threads())));
  // The batch's inputs and labels: the batch, the converged and the truncated free states' copies,
  // and one more per thread evaluating finite-difference losses.
  extra.push_back({"the batch's inputs and labels (copies: the batch, two free states, one per thread)", "--batch",
                   8.0 * static_cast<double>(input_size + classes) * static_cast<double>(o.batch) *
                       (3.0 + omp_get_max_threads())});
  check_network_memory(net, static_cast<double>(o.batch) * (max_N / 2 + 1) * parallel, "--batch", extra);
  const double states = static_cast<double>(net.neurons) * static_cast<double>(o.batch);
  check_size((max_N / 2 + 1) * states, kMaxStackedValues, "--batch",
             "the stacked nudged states (⌊N/2⌋ + 1) × " + std::to_string(net.neurons) + " neurons × --batch");
  if (o.T2 > 0)
    check_size(static_cast<double>(o.T2 + 1) * states, kMaxTrajectoryValues, "--T2",
               "truncated BPTT's trajectory (--T2 + 1) × " + std::to_string(net.neurons) + " neurons × --batch");
  // ---- the batch
  if (!loaded) {
    Rng rng(o.seed, Stream::data);
    x.resize(o.input_size, o.batch);
    y = Mat<double>::Zero(o.classes, o.batch);
    for (Index i = 0; i < x.size(); ++i) x.data()[i] = rng.uniform();
    for (Index j = 0; j < o.batch; ++j) y(static_cast<Index>(rng.below(static_cast<std::uint64_t>(o.classes))), j) = 1;
  } else {
    std::vector<Index> idx(static_cast<std::size_t>(o.batch));
    for (Index j = 0; j < o.batch; ++j) idx[static_cast<std::size_t>(j)] = j;
    x.resize(input_size, o.batch);
    y.resize(classes, o.batch);
    make_batch<double>(loaded->test, idx.data(), o.batch, default_normalization(loaded->source), Augmentation{},
                       nullptr, x, y);
  }
  const Vec<double> theta = init_params<double>(net, o.seed, o.angle);

  // ---- phases
  PhaseProgress progress("gradcheck");
  RelaxConfig converged;
  converged.solver = parse_solver(o.solver);
  converged.dt = o.dt;
  converged.stall_window = o.stall_window;
  converged.max_steps = o.max_steps;
  converged.tol = o.tol;
  converged.report_tol = o.tol;
  RelaxConfig free_cfg = converged, nudged_cfg = converged;
  if (o.T1 > 0) free_cfg.max_steps = o.T1, free_cfg.tol = 0, free_cfg.report_tol = RelaxConfig{}.report_tol;
  if (o.T2 > 0) nudged_cfg.max_steps = o.T2, nudged_cfg.tol = 0, nudged_cfg.report_tol = RelaxConfig{}.report_tol;
  // State noise in the estimators' relaxations (the free phase and the references stay exact).
  nudged_cfg.noise.sigma = o.noise;
  nudged_cfg.noise.seed = o.seed;
  free_cfg.progress = progress.phase("free phase");
  const FreeState<double> fs_all = free_phase<double>(model, theta, x, y, free_cfg);
  free_status = fs_all.relax.status;

  // Only the samples whose free phase settled are measured (with --T1: those that did not cycle,
  // stall or diverge within their T1 steps; running out of them is the point).
  std::vector<Index> measured;
  for (Index j = 0; j < o.batch; ++j)
    if (settled(fs_all.relax.status[static_cast<std::size_t>(j)], o.T1 > 0)) measured.push_back(j);
  nlohmann::json j;
  j["arch"] = o.arch;
  j["angle"] = o.angle;
  j["weight_angle_deg"] = weight_angle_deg(net, theta);
  j["batch"] = o.batch;
  j["measured"] = measured.size();
  j["neurons"] = net.neurons;
  j["mode"] = truncated ? "truncated" : "converged";
  j["solver"] = o.solver;
  j["dt"] = free_cfg.step();
  double free_max = 0;
  for (Index c : measured) free_max = std::max(free_max, fs_all.relax.residual[c]);
  j["free"] = status_json(fs_all.relax.status, o.T1 > 0);
  j["free"]["steps"] = fs_all.relax.steps;
  j["free"]["max_residual"] = measured.empty() ? nlohmann::json(nullptr) : nlohmann::json(free_max);
  if (measured.empty()) {  // nothing to measure
    j["exact"] = nullptr;
    j["estimators"] = nlohmann::json::array();
    j["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return j;
  }
  FreeState<double> fs;
  fs.x = fs_all.x(Eigen::all, measured);
  fs.y = fs_all.y(Eigen::all, measured);
  fs.drive = fs_all.drive(Eigen::all, measured);
  fs.u = fs_all.u(Eigen::all, measured);
  const Index B = static_cast<Index>(measured.size());

  // ---- exact references
  // The adjoint and tangent-linear iterations (and BPTT) follow the dynamics: damped like the map
  // (map_step). A fixed point that another solver found may be unstable for them: an eigenvalue of
  // D J_G below −1 makes the plain iteration diverge although the flow settles there. In converged
  // mode an iteration that misses --tol is therefore retried with its damping halved, up to dt/8
  // (a damped eigenvalue is 1 − dt (1 − λ)); at a saddle (an eigenvalue above 1) no damping
  // converges, and the iterative references are reported as not converged.
  double iter_dt = map_step(converged);
  IterationConfig iter;
  IterationResult<double> delta_it, vstar_it;
  bool iterations_converged = true;
  for (int attempt = 0;; ++attempt) {
    iter = o.T2 > 0 ? IterationConfig{o.T2, 0, iter_dt} : IterationConfig{o.max_steps, o.tol, iter_dt};
    delta_it = rbp_adjoint<double>(model, theta, fs.u, fs.y, iter);
    vstar_it = exact_response<double>(model, theta, fs.drive, fs.u, fs.y, iter);
    iterations_converged = o.T2 > 0 || (delta_it.last_update <= o.tol && vstar_it.last_update <= o.tol);
    if (iterations_converged || attempt == 3) break;
    iter_dt /= 2;
  }
  // Converged mode: BPTT runs as many steps as the adjoint took (below); refuse before it rather
  // than end in std::bad_alloc.
  if (o.T2 == 0 && iterations_converged) {
    const double values = static_cast<double>(delta_it.steps + 1) * static_cast<double>(net.neurons) * static_cast<double>(B);
    const std::string what = "truncated BPTT's trajectory over the adjoint's " + std::to_string(delta_it.steps) +
                             " steps × " + std::to_string(net.neurons) + " neurons × --batch";
    check_size(values, kMaxTrajectoryValues, "--batch", what);
    // Its length is known only now: checked against the machine (with all that is resident) before
    // it is unrolled.
    check_memory({{what, "--batch", 8 * values}}, 0);
  }
  nlohmann::json exact;
  // The references: dense solves (small networks) or GMRES to --tol when the phases converged; in
  // a truncated run the iterations themselves (T2 of them, or to --tol after T1 free steps).
  Mat<double> delta = delta_it.v, vstar = vstar_it.v;
  bool references_converged = iterations_converged;
  if (!truncated && dense) {
    delta = rbp_dense<double>(model, theta, fs.u, fs.y);
    vstar = exact_response_dense<double>(model, theta, fs.u, fs.y);
    references_converged = true;
  } else if (!truncated) {
    const IterationConfig kc{o.max_steps, o.tol};
    const IterationResult<double> dk = rbp_krylov<double>(model, theta, fs.u, fs.y, kc);
    const IterationResult<double> vk = exact_response_krylov<double>(model, theta, fs.u, fs.y, kc);
    delta = dk.v;
    vstar = vk.v;
    references_converged = dk.last_update <= o.tol && vk.last_update <= o.tol;
    exact["gmres_products"] = {{"rbp", dk.steps}, {"response", vk.steps}};
    exact["gmres_residual"] = std::max(dk.last_update, vk.last_update);
    exact["gmres_budget"] = o.max_steps;
  }
  exact["reference"] = truncated ? "iterations" : dense ? "dense" : "gmres";
  exact["references_converged"] = references_converged;
  const Vec<double> g_rbp = parameter_gradient<double>(model, theta, fs, delta);
  const Vec<double> g_vstar = parameter_gradient<double>(model, theta, fs, vstar);

  exact["cos_vstar_delta"] = per_layer(net, vstar, delta, true);
  exact["rel_err_vstar_delta"] = per_layer(net, vstar, delta, false);
  exact["grad_cos_vstar_rbp"] = cosine(g_vstar, g_rbp);
  exact["rbp_iterations"] = delta_it.steps;
  exact["response_iterations"] = vstar_it.steps;
  exact["iteration_dt"] = iter_dt;
  exact["iteration_residual"] = std::max(delta_it.last_update, vstar_it.last_update);  // null when not finite
  exact["iterations_converged"] = iterations_converged;
  if (!truncated) {  // the iterations against the references
    const std::string ref = dense ? "dense" : "gmres";
    exact["rbp_iter_vs_" + ref + "_rel_err"] = (delta_it.v - delta).norm() / delta.norm();
    exact["vstar_iter_vs_" + ref + "_rel_err"] = (vstar_it.v - vstar).norm() / vstar.norm();
  }
  // Central finite differences of the batch-mean loss along random unit directions, each loss
  // at the fixed point re-relaxed to --tol.
  // The directions are drawn in order, then relaxed in parallel (one direction per thread).
  {
    Rng rng(o.seed, Stream::probes, 1);
    Mat<double> dirs(net.n_params, o.fd_directions);
    for (Index i = 0; i < dirs.size(); ++i) dirs.data()[i] = rng.normal();
    dirs.colwise().normalize();
    Vec<double> fd(o.fd_directions), an = dirs.transpose() * g_rbp;
    std::vector<long> unsettled(static_cast<std::size_t>(o.fd_directions), 0);
    RelaxConfig fd_cfg = converged;
    fd_cfg.tol = std::min(o.tol, 1e-13);
    fd_cfg.report_tol = fd_cfg.tol;
    fd_cfg.progress = progress.phase("finite differences");
    parallel_items(o.fd_directions, [&](long d) {
      long& u = unsettled[static_cast<std::size_t>(d)];
      fd[d] = (batch_loss(model, theta + o.fd_step * dirs.col(d), fs.x, fs.y, fd_cfg, u) -
               batch_loss(model, theta - o.fd_step * dirs.col(d), fs.x, fs.y, fd_cfg, u)) / (2 * o.fd_step);
    });
    // Relaxations at θ ± step that did not reach the tolerance: their losses are not those of
    // fixed points, so no finite difference is reported then.
    const long fd_unsettled = std::accumulate(unsettled.begin(), unsettled.end(), 0L);
    exact["rbp_fd_rel_err"] = fd_unsettled == 0 ? nlohmann::json((fd - an).norm() / an.norm()) : nlohmann::json(nullptr);
    exact["fd_directions"] = o.fd_directions;
    exact["fd_not_settled"] = fd_unsettled;
    if (fd_unsettled > 0)
      std::fprintf(stderr,
                   "hepsim gradcheck: %ld relaxations at θ ± --fd-step did not settle: rbp_fd_rel_err is not "
                   "reported (a smaller --fd-step or a larger --max-steps)\n",
                   fd_unsettled);
  }
  // Truncated BPTT over as many (equally damped) steps as the adjoint took (or --T2); not when the
  // adjoint itself did not converge (BPTT would unroll the same divergence).
  if (iterations_converged) {
    const long bptt_steps = o.T2 > 0 ? o.T2 : delta_it.steps;
    const BpttResult<double> bptt =
        truncated_bptt<double>(model, theta, fs.x, fs.drive, fs.u, fs.y, bptt_steps, iter_dt);
    exact["bptt_vs_rbp_rel_err"] = (bptt.grad - g_rbp).norm() / g_rbp.norm();
    exact["bptt_steps"] = bptt_steps;
  } else {
    exact["bptt_vs_rbp_rel_err"] = nullptr;
    exact["bptt_steps"] = nullptr;
  }

  // ---- estimators, one (N, |β|) per thread
  std::vector<std::pair<int, double>> settings;
  for (int N : parse_list<int>(o.N_list, "--N"))
    for (double beta : parse_list<double>(o.beta_list, "--beta")) settings.emplace_back(N, beta);
  std::vector<nlohmann::json> results(settings.size());
  parallel_items(static_cast<long>(settings.size()), [&](long i) {
    {
      const auto [N, beta] = settings[static_cast<std::size_t>(i)];
      nlohmann::json& e = results[static_cast<std::size_t>(i)];
      e["algo"] = o.algo;
      e["N"] = N;
      e["beta"] = beta;
      Mat<double> v;
      if (o.algo == "online") {
        OnlineConfig oc;
        oc.N = N;
        oc.beta = beta;
        oc.periods = o.periods;
        oc.phase = nudged_cfg;
        oc.phase.noise.key = static_cast<std::uint64_t>(i) << 32;
        std::ostringstream label;
        label << "online (N=" << N << ", |beta|=" << beta << ")";
        oc.phase.progress = progress.phase(label.str());
        const OnlineResult<double> on = online_estimate<double>(model, theta, fs.x, fs.y, oc);
        v = on.v;
        const nlohmann::json st = status_json(on.free.relax.status);
        for (const char* k : {"diverged", "cycling", "stalled", "max_steps"}) e[k] = st[k];
        e["periods"] = o.periods;
        e["T2"] = o.T2;
        e["relaxations"] = o.periods * N;  // phase points
        e["max_residual"] = nullptr;       // the state never rests: a phase point's residual is its lag
        // How far the trajectory's time average is from the converged free state, and the first
        // harmonic's imaginary part (zero for an exactly demodulated real v): lag and noise.
        e["free_state_err"] = on.n_diverged < B ? nlohmann::json((on.free.u - fs.u).cwiseAbs().maxCoeff()) : nlohmann::json(nullptr);
        e["imag_rel"] = on.imag.norm() / vstar.norm();
        if (on.curvature.size()) e["curvature_rel"] = on.curvature.norm() / vstar.norm();
      } else if (N == 0) {
        v = vstar_it.v;  // the exact response by the tangent-linear iteration (one relaxation-free estimate)
        for (const char* k : {"diverged", "cycling", "stalled", "max_steps"}) e[k] = 0;
        e["relaxations"] = 0;
        e["max_residual"] = nullptr;
      } else {
        EstimatorConfig cfg;
        cfg.N = N;
        cfg.beta = beta;
        cfg.nudged = nudged_cfg;
        cfg.nudged.noise.key = static_cast<std::uint64_t>(i) << 32;
        std::ostringstream label;
        label << "nudged phases (N=" << N << ", |beta|=" << beta << ")";
        cfg.nudged.progress = progress.phase(label.str());
        const EstimateResult<double> est = ep_estimate<double>(model, theta, fs, cfg);
        v = est.v;
        // Per sample the worst status of its nudged phases; diverged and cycling samples have a
        // zero estimate (they count in the metrics as such).
        const nlohmann::json st = status_json(est.status);
        for (const char* k : {"diverged", "cycling", "stalled", "max_steps"}) e[k] = st[k];
        e["relaxations"] = est.relaxations;
        // Over the samples that did not diverge or cycle; with none left there is no residual
        // (null, not the 0.0 that would read as "converged exactly").
        e["max_residual"] = est.n_diverged + est.n_cycling < B ? nlohmann::json(est.max_residual) : nlohmann::json(nullptr);
        if (est.curvature.size()) e["curvature_rel"] = est.curvature.norm() / vstar.norm();
      }
      e["rel_err_vs_vstar"] = per_layer(net, v, vstar, false);
      e["cos_vs_vstar"] = per_layer(net, v, vstar, true);
      e["cos_vs_delta"] = per_layer(net, v, delta, true);
      e["grad_cos_vs_rbp"] = cosine(parameter_gradient<double>(model, theta, fs, v), g_rbp);
    }
  });
  nlohmann::json estimators = results;

  j["exact"] = exact;
  j["estimators"] = estimators;
  j["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return j;
}

// The JSON (printed first) reports what did not settle; a run in which little was measured must
// not exit with success. Fewer than half the samples settled in the free phase: exit 2 naming
// --dt/--solver (check_settled; with some left out, one line on stderr lists them). An estimator
// whose every measured sample diverged measured nothing (the nudge |β| is too large for the
// network). Estimators with only some samples diverged are legitimate measurements at large β:
// their counts stand.
void check_outcome(const nlohmann::json& j, const std::vector<RelaxStatus>& free_status, bool free_truncated,
                   double noise) {
  check_settled("gradcheck", free_status, "the free phase", "are left out of every metric", free_truncated);
  const long measured = j.at("measured").get<long>();
  std::string dead;
  for (const auto& e : j.at("estimators"))
    if (e.at("diverged").get<long>() + e.at("cycling").get<long>() == measured)
      dead += (dead.empty() ? "" : ", ") + std::string("N=") + e.at("N").dump() + " |beta|=" + e.at("beta").dump();
  if (!dead.empty() && noise > 0)
    throw InputError("--noise", "every one of the " + std::to_string(measured) +
                                    " measured samples diverged or cycled in the noisy phases (" + dead +
                                    "): lower --noise (or |beta|)");
  if (!dead.empty())
    throw InputError("--beta", "every one of the " + std::to_string(measured) +
                                   " measured samples diverged or cycled in the nudged phases (" + dead +
                                   "): use a smaller |beta| (or --dt 0.5 if they cycled)");
  // References that did not converge are none: nothing was measured against an exact reference.
  const auto& ex = j.at("exact");
  if (ex.is_null()) return;
  const std::string why = "the adjoint and tangent-linear iterations do not converge at the states found, even damped "
                          "to dt " + ex.at("iteration_dt").dump() + " (an unstable fixed point, such as a saddle that "
                          "Anderson can find)";
  const auto number = [](const nlohmann::json& v) { return v.is_null() ? std::string("not finite") : v.dump(); };
  if (!ex.at("references_converged").get<bool>()) {
    if (ex.at("reference") == "iterations") {  // --T1 with converged nudged phases: the iterations are the references
      const auto& r = ex.at("iteration_residual");
      const std::string what = "the adjoint and tangent-linear iterations, the references of a run with --T1, ";
      if (!r.is_null() && r.get<double>() <= 1)  // still going down: the budget ended them
        throw InputError("--max-steps", what + "did not reach --tol within --max-steps (last update " + r.dump() + ")");
      throw InputError("--T1", what + "diverge at the states after T1 steps (last update " + number(r) +
                                   "): without --T1 the references are dense or GMRES solves at converged fixed points");
    }
    const auto& r = ex.at("gmres_residual");
    const auto& products = ex.at("gmres_products");
    const bool out_of_budget = std::max(products.at("rbp").get<long>(), products.at("response").get<long>()) >=
                               ex.at("gmres_budget").get<long>();
    if (out_of_budget)
      throw InputError("--max-steps", "GMRES did not reach --tol within --max-steps products at the fixed points "
                                      "found (residual " + number(r) + "): the references are not exact");
    throw InputError("--tol", "GMRES stagnated above --tol at the fixed points found (residual " + number(r) +
                                  "): the references are not exact");
  }
  if (ex.at("iterations_converged").get<bool>()) return;
  std::fprintf(stderr, "hepsim gradcheck: %s; the %s solves remain the references, the iterative ones and BPTT are not "
               "measured\n", why.c_str(), ex.at("reference") == "gmres" ? "GMRES" : "dense");
}

}  // namespace

void register_gradcheck(CLI::App& app) {
  auto opt = std::make_shared<GradcheckOptions>();
  CLI::App* cmd = app.add_subcommand("gradcheck", "Compare every gradient estimator with the exact references (double)");
  cmd->add_option("--arch", opt->arch, "Architecture: mlp_2-256, loop_mnist, cnn, cnn_small or a JSON file")->capture_default_str();
  add_real(cmd, "--angle", opt->angle, "Initial feedback/forward angle (degrees, 0 .. 180)");
  cmd->add_option("--seed", opt->seed_text, "Seed of the weights, the random batch and the FD directions (0 .. 2^63 − 1)")
      ->capture_default_str();
  add_integer(cmd, "--batch", opt->batch, 1, kMaxBatch, "Samples in the batch (less for large networks or N)");
  cmd->add_option("--dataset", opt->dataset, "fmnist, mnist, cifar10, …, or random")->capture_default_str();
  cmd->add_option("--data-dir", opt->data_dir, "Dataset directory");
  cmd->add_option("--N", opt->N_list, "Comma-separated numbers of contour points, each 0 .. 64 (0 = exact response)")
      ->capture_default_str();
  cmd->add_option("--beta", opt->beta_list, "Comma-separated nudge radii |beta|")->capture_default_str();
  cmd->add_option("--algo", opt->algo, "hep (nudged phases restarted from the free state) or online (oscillating: "
                                       "the phase points of --N carried through --periods periods of --T2 steps each)")
      ->capture_default_str();
  add_integer(cmd, "--periods", opt->periods, 2, 1000000, "Online hEP: periods of the rotation (the first is discarded)");
  add_real(cmd, "--noise", opt->noise, "State noise σ of the estimators' relaxations (needs --T2; map or rk4)");
  add_integer(cmd, "--T1", opt->T1, 0, 1000000000, "Free-phase steps (0: relax to --tol)");
  add_integer(cmd, "--T2", opt->T2, 0, 1000000000, "Nudged-phase steps and iterations (0: to --tol)");
  add_real(cmd, "--tol", opt->tol, "Residual at which a converged phase stops");
  add_integer(cmd, "--max-steps", opt->max_steps, 1, 1000000000, "Step budget of a converged phase");
  cmd->add_option("--solver", opt->solver, "map, rk4, dopri5 or anderson")->capture_default_str();
  cmd->add_option("--reference", opt->reference,
                  "Exact references of converged runs: dense (solves, networks of at most 4096 neurons), gmres "
                  "(matrix-free, to --tol within --max-steps products) or auto (dense where it may, else gmres)")
      ->capture_default_str();
  add_stall_window(cmd, opt->stall_window);
  add_real(cmd, "--dt", opt->dt, "Time step: map damping (1 = the paper's map), rk4 step, dopri5 first step (0: the solver's default)");
  add_integer(cmd, "--fd-directions", opt->fd_directions, 1, kMaxFdDirections, "Random directions of the finite-difference check");
  add_real(cmd, "--fd-step", opt->fd_step, "Finite-difference step");
  cmd->add_option("--activation", opt->activation, "sigmoid or dsilu (default: dsilu for cnn and cnn_small, else sigmoid)");
  add_integer(cmd, "--input-size", opt->input_size, 1, kMaxInputSize, "Input size of --dataset random");
  add_integer(cmd, "--classes", opt->classes, kMinClasses, kMaxClasses, "Classes of --dataset random");
  add_integer(cmd, "--threads", opt->threads, 0, kMaxThreads, "Threads (0 = all cores)");
  cmd->callback([cmd, opt] {
    opt->seed = parse_seed(opt->seed_text);
    if (cmd->count("--activation") == 0) opt->activation = default_activation(opt->arch);  // dsilu for the CNNs
    const GradcheckOptions& o = *opt;
    require_angle(o.angle, "--angle");
    if (o.dataset != "random")
      for (const char* flag : {"--input-size", "--classes"})
        if (cmd->count(flag) > 0)
          throw InputError(flag, "is for --dataset random only (" + o.dataset + " sets the inputs and classes)");
    if (!(o.tol > 0) || !std::isfinite(o.tol)) throw InputError("--tol", "must be a finite positive number");
    (void)parse_solver(o.solver);
    if (o.reference != "auto" && o.reference != "dense" && o.reference != "gmres")
      throw InputError("--reference", "must be auto, dense or gmres (got '" + o.reference + "')");
    if (cmd->count("--reference") > 0 && (o.T1 > 0 || o.T2 > 0))
      throw InputError("--reference", "applies to converged runs: with --T1 or --T2 the iterations are the references");
    require_stall_window(o.stall_window);
    if (!(o.dt >= 0) || !std::isfinite(o.dt)) throw InputError("--dt", "must be a finite number ≥ 0 (0: the solver's default)");
    // Beyond 0.1 a central difference measures the loss's curvature, not its gradient; below
    // 1e-12 θ ± step rounds to θ (|θ| ~ 1) and the difference is rounding only.
    if (!(o.fd_step >= 1e-12) || !(o.fd_step <= 0.1)) throw InputError("--fd-step", "must be in [1e-12, 0.1]");
    (void)parse_list<int>(o.N_list, "--N", 0, kMaxN);  // each within 0 .. kMaxN, checked as it is read
    if (o.algo != "hep" && o.algo != "online") throw InputError("--algo", "must be hep or online (got '" + o.algo + "')");
    if (o.algo == "online") {
      if (o.T2 == 0) throw InputError("--T2", "online hEP needs the steps of each phase point (--T2 > 0)");
      for (int N : parse_list<int>(o.N_list, "--N"))
        if (N < 2) throw InputError("--N", "online hEP needs at least 2 phase points per period (got " + std::to_string(N) + ")");
    } else if (cmd->count("--periods") > 0) {
      throw InputError("--periods", "only applies with --algo online");
    }
    if (!(o.noise >= 0)) throw InputError("--noise", "must be ≥ 0");
    if (o.noise > 0 && o.T2 == 0)
      throw InputError("--noise", "noisy phases never settle to --tol: give their steps with --T2");
    if (o.noise > 0 && o.solver != "map" && o.solver != "rk4")
      throw InputError("--noise", "needs a fixed-step solver (map or rk4, which take Euler–Maruyama steps), not " + o.solver);
    for (double b : parse_list<double>(o.beta_list, "--beta"))
      if (!(b > 0) || !std::isfinite(b)) throw InputError("--beta", "each |beta| must be a finite positive number");
    set_threads(o.threads);
    // The threads take independent pieces (finite-difference directions, estimators); Eigen's own
    // GEMM threads on these narrow batches were slower than one thread (measured 29 s against
    // 15 s on issue 11's setting).
    Eigen::setNbThreads(1);
    std::vector<RelaxStatus> free_status;
    const nlohmann::json j = run_gradcheck(o, free_status);
    print_json(j);  // the counts are useful even when samples diverged
    check_outcome(j, free_status, o.T1 > 0, o.noise);
  });
}

}  // namespace hepsim::tools
