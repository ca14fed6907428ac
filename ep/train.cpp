#include "ep/train.hpp"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <numeric>
#include <sstream>

#include "sim/error.hpp"

namespace hepsim {

Algo parse_algo(const std::string& name, const std::string& where) {
  if (name == "hep") return Algo::hep;
  if (name == "rbp") return Algo::rbp;
  if (name == "bp") return Algo::bp;
  if (name == "online") return Algo::online;
  throw InputError(where, "unknown algorithm '" + name + "' (expected hep, rbp, bp or online)");
}

const char* to_string(Algo a) {
  switch (a) {
    case Algo::hep: return "hep";
    case Algo::rbp: return "rbp";
    case Algo::bp: return "bp";
    case Algo::online: return "online";
  }
  return "?";
}

DivergencePolicy parse_divergence_policy(const std::string& name, const std::string& where) {
  if (name == "skip") return DivergencePolicy::skip;
  if (name == "abort") return DivergencePolicy::abort;
  throw InputError(where, "unknown policy '" + name + "' (expected skip or abort)");
}

namespace {

using Clock = std::chrono::steady_clock;

// State-noise keys of the relaxations outside training steps (training's are 2·step + phase).
constexpr std::uint64_t kEvaluationKey = 1ULL << 62, kMetricsKey = (1ULL << 62) + 2;

}  // namespace

// A free phase that diverges has no stable fixed point at its step (an ODE or damped step too
// large: --dt) or with these weights (grown by --lr); a nudged phase that diverges is pushed too
// hard (--beta); one that cycles follows the map's period-2 orbit.
std::pair<std::string, std::string> divergence_cause(const TrainConfig& cfg, long free, long nudged, long cycled,
                                                     bool moved) {
  if (free > 0 && free >= nudged && free >= cycled) {
    if (cfg.free.noise.on()) return {"--noise", "lower --noise or --dt (the noisy relaxation ran away)"};
    // Online hEP has no free phase: before any update its oscillating run diverges by the nudge.
    if (cfg.algo == Algo::online && !moved) return {"--beta", "lower --beta or --dt (the oscillating run diverged)"};
    // Weights that no step has changed yet: the device made them, not the learning rate.
    if (!moved && cfg.device.mismatch > 0)
      return {"--mismatch", "lower --mismatch (the device's weights have no stable fixed point)"};
    if (!moved && cfg.device.weight_bits > 0)
      return {"--weight-clip", "lower --weight-clip or raise --weight-bits (the quantized weights have no stable fixed point)"};
    const bool stepped = cfg.free.solver == Solver::rk4 || cfg.free.solver == Solver::dopri5 ||
                         (cfg.free.dt != 0 && cfg.free.dt != 1);
    if (stepped) return {"--dt", "lower --dt (the free phase's step)"};
    if (!moved) return {"--dt", "damp the map (--dt 0.5): the initial weights have no stable fixed point"};
    // The weights have no stable fixed point: grown by the learning rate (a block's multiplier
    // above 1 first, or the homeostatic penalty's gradient, which the same step applies).
    const auto top = std::max_element(cfg.optimizer.lr_mult.begin(), cfg.optimizer.lr_mult.end(),
                                      [](const auto& a, const auto& b) { return a.second < b.second; });
    if (top != cfg.optimizer.lr_mult.end() && top->second > 1) {
      std::ostringstream advice;
      advice << "lower the multiplier of " << top->first << " (" << top->second
             << ") or --lr (the free phase has no stable fixed point)";
      return {"--lr-mult", advice.str()};
    }
    if (cfg.homeostasis > 0)
      return {"--lr/--homeostasis", "lower --lr or --homeostasis (the free phase has no stable fixed point)"};
    return {"--lr", "lower --lr (the free phase has no stable fixed point)"};
  }
  if (nudged >= cycled) return {"--beta", "lower --beta"};
  return {"--dt", "damp the map (--dt 0.5) or use --solver dopri5"};
}

namespace {

// Class scores of a free state: the logits (cross-entropy) or the output activations (mse).
template <class R>
Mat<R> class_scores(const Model& model, const Vec<R>& theta, const Mat<R>& u) {
  const Layer& o = model.net.layers[static_cast<std::size_t>(model.net.out)];
  Mat<R> s(o.size, u.cols());
  activate<R>(model.activation, u.middleRows(o.offset, o.size), s);
  if (model.loss == Loss::mse) return s;
  Mat<R> logits(model.net.classes, u.cols());
  readout_logits<R>(model.net, theta, s, logits);
  return logits;
}

struct Scored {
  double loss = 0;
  long top1 = 0, top5 = 0;
};

// Summed loss and top-1 / top-5 hits of a free state against one-hot targets.
template <class R>
Scored score(const Model& model, const Vec<R>& theta, const Mat<R>& u, const Mat<R>& y) {
  const Layer& o = model.net.layers[static_cast<std::size_t>(model.net.out)];
  Mat<R> s_out(o.size, u.cols());
  activate<R>(model.activation, u.middleRows(o.offset, o.size), s_out);
  Scored sc;
  sc.loss = static_cast<double>(loss_per_sample<R>(model.net, theta, model.loss, s_out, y).sum());
  const Mat<R> scores = class_scores<R>(model, theta, u);
  for (Index j = 0; j < u.cols(); ++j) {
    Index label = 0;
    y.col(j).maxCoeff(&label);
    // The true class's rank under argmax's order: classes scoring higher, and ties broken
    // towards the lower index (as argmax does), rank before it. Counting only strictly higher
    // scores would let a constant output (all scores tied, e.g. zero weights) score 100 %.
    // A NaN score anywhere in the column is a miss.
    const R target = scores(label, j);
    if (!scores.col(j).allFinite()) continue;
    Index rank = 0;
    for (Index c = 0; c < scores.rows(); ++c) rank += scores(c, j) > target || (scores(c, j) == target && c < label);
    sc.top1 += rank == 0;
    sc.top5 += rank < 5;
  }
  return sc;
}

// The samples `cols` of a free state (their statistics are not carried: the estimators do not read them).
template <class R>
FreeState<R> select_columns(const FreeState<R>& fs, const std::vector<Index>& cols) {
  FreeState<R> sub;
  sub.x = fs.x(Eigen::all, cols);
  sub.y = fs.y(Eigen::all, cols);
  sub.drive = fs.drive(Eigen::all, cols);
  sub.u = fs.u(Eigen::all, cols);
  return sub;
}

// Runs body(j, chunk, first, count) for this rank's chunks (layout.first + j) of a batch of `n`
// columns, one thread each; an exception in any chunk is rethrown after the region (none may
// leave it).
template <class F>
void for_my_chunks(const ChunkLayout& layout, Index n, F&& body) {
  std::exception_ptr error;
#pragma omp parallel for schedule(static, 1) num_threads(std::max(1, layout.count))
  for (int j = 0; j < layout.count; ++j) {
    const int c = layout.first + j;
    const Index first = layout.begin(n, c), last = layout.begin(n, c + 1);
    try {
      body(j, c, first, last - first);
    } catch (...) {
#pragma omp critical(hepsim_for_chunks)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

// Every rank's `per_rank` items of `local` (padded with T{} for missing ones), in rank order.
template <class T>
std::vector<T> gather_items(const Team& team, std::vector<T> local, int per_rank) {
  local.resize(static_cast<std::size_t>(per_rank));
  std::vector<T> all(static_cast<std::size_t>(per_rank) * static_cast<std::size_t>(team.size()));
  team.allgather(local.data(), local.size() * sizeof(T), all.data());
  return all;
}

}  // namespace

namespace {
// The online estimator of a training configuration; `phase` (when given) replaces cfg.nudged.
OnlineConfig online_config(const TrainConfig& cfg, const RelaxConfig* phase) {
  OnlineConfig oc;
  oc.N = cfg.N;
  oc.beta = cfg.beta;
  oc.periods = cfg.periods;
  oc.phase = phase ? *phase : cfg.nudged;
  return oc;
}
}  // namespace

RelaxConfig keyed_noise(const RelaxConfig& cfg, std::uint64_t key, std::vector<std::uint64_t> columns) {
  RelaxConfig c = cfg;
  if (!cfg.noise.on()) return c;
  c.noise.key = key;
  c.noise.columns = std::move(columns);
  return c;
}

template <class R>
Mat<R> algorithm_error_vector(const Model& model, const Vec<R>& theta, const FreeState<R>& fs, const TrainConfig& cfg,
                              std::vector<RelaxStatus>* nudged_status, const RelaxConfig* nudged) {
  if (nudged_status) nudged_status->assign(static_cast<std::size_t>(fs.u.cols()), RelaxStatus::converged);
  switch (cfg.algo) {
    case Algo::online: {
      const OnlineResult<R> on = online_estimate<R>(model, theta, fs.x, fs.y, online_config(cfg, nudged));
      if (nudged_status) *nudged_status = on.free.relax.status;
      return on.v;
    }
    case Algo::rbp: return rbp_adjoint<R>(model, theta, fs.u, fs.y, iterations(cfg.nudged)).v;
    case Algo::bp:
      return truncated_bptt<R>(model, theta, fs.x, fs.drive, fs.u, fs.y, cfg.nudged.max_steps, map_step(cfg.nudged))
          .error_sum;
    case Algo::hep:
      if (cfg.N == 0) return exact_response<R>(model, theta, fs.drive, fs.u, fs.y, iterations(cfg.nudged)).v;
      EstimatorConfig ec;
      ec.N = cfg.N;
      ec.beta = cfg.beta;
      ec.nudged = nudged ? *nudged : cfg.nudged;
      EstimateResult<R> est = ep_estimate<R>(model, theta, fs, ec);
      if (nudged_status) *nudged_status = std::move(est.status);
      return std::move(est.v);
  }
  return {};
}

template <class R>
Trainer<R>::Trainer(const Model& model, const TrainConfig& cfg, Vec<R> theta)
    : model_(model),
      cfg_(cfg),
      theta_(std::move(theta)),
      device_(model.net, cfg.device),
      opt_(model.net, cfg.optimizer),
      grad_(model.net.n_params) {
  // A conv network's exact homeostasis probes every sample's state with the n basis vectors.
  if (model.net.has_conv() && cfg.homeostasis > 0 && cfg.homeo.mode == HomeoMode::exact &&
      model.net.neurons > kMaxExactConvNeurons)
    throw InputError("--homeo-mode", "exact homeostasis on a conv network probes each sample with all its " +
                                         std::to_string(model.net.neurons) + " neurons (at most " +
                                         std::to_string(kMaxExactConvNeurons) + "): use hutchinson");
  if (theta_.size() != model.net.n_params) throw std::invalid_argument("Trainer: θ has the wrong size");
}

template <class R>
const Vec<R>& Trainer<R>::device_theta() const {
  if (device_.ideal()) return theta_;
  device_.apply(theta_, theta_device_);
  return theta_device_;
}

template <class R>
void Trainer<R>::ensure_homeostasis(Index cols) {
  if (cfg_.homeostasis > 0 && !homeo_ && !model_.net.has_conv()) {  // conv: at the free states, in gradient()
    // Probe buffers for draws × (the first batch's columns): a nominal batch larger than the data
    // never materialises (before, --batch-size 1000000 on 200 samples allocated 15 GB of probes).
    HomeoConfig hc = cfg_.homeo;
    hc.lambda = cfg_.homeostasis;
    // H is the same at every state: homeo-samples only means fewer probes.
    homeo_ = std::make_unique<Homeostasis<R>>(model_.net, hc, hc.probed(std::min<Index>(cfg_.batch_size, cols)));
  }
}

template <class R>
typename Trainer<R>::StepStats Trainer<R>::step(const CMatRef<R>& x, const CMatRef<R>& y, long index, long total,
                                                const Index* samples) {
  const StepStats st = gradient(x, y, grad_, samples, index);
  ensure_homeostasis(x.cols());
  // Non-finite values are blamed on what produced them: the task gradient (the dynamics overflowed
  // the precision: the nudge or the step), the homeostasis term, or the optimizer's step.
  const std::string at = " at step " + std::to_string(index + 1);
  // After a first step, the weights that step made are the likely cause (RBP and BPTT have no
  // nudge to blame); at the first step, the nudge (EP) or the unrolled iterations (RBP, BPTT).
  // A conv network's homeostasis gradient is part of this gradient: after a first step with it,
  // the weights that the penalty's steps made are the likely cause.
  const bool conv_homeo = cfg_.homeostasis > 0 && model_.net.has_conv();
  const std::string cause = index > 0 && cfg_.algo != Algo::hep ? "--lr"
                            : index > 0 && conv_homeo           ? "--lr/--homeostasis"
                            : cfg_.algo != Algo::hep            ? "--T2"
                            : cfg_.free.solver == Solver::map   ? "--beta"
                                                                : "--dt/--beta";
  if (!grad_.allFinite() && conv_homeo && !st.task_nonfinite)
    throw InputError("--homeostasis", "the homeostasis gradient became non-finite" + at + "; lower λ");
  if (!grad_.allFinite())
    throw InputError(cause, "the gradient became non-finite" + at +
                                (cause.rfind("--lr", 0) == 0
                                     ? " (the weights of the previous steps make the relaxation overflow); lower " +
                                           std::string(cause == "--lr" ? "--lr" : "--lr or --homeostasis")
                                                 : " (the relaxation overflowed " +
                                                       (sizeof(R) == 4 ? std::string("float; --precision double may help")
                                                                       : std::string("double")) +
                                                       ")"));
  if (homeo_) {
    (void)homeo_->add_gradient(device_theta(), cfg_.seed, static_cast<std::uint64_t>(index), grad_);
    if (!grad_.allFinite())
      throw InputError("--homeostasis", "the homeostasis gradient became non-finite" + at + "; lower λ");
  }
  if (st.diverged + st.nudged_cycling > 0 && cfg_.on_diverge == DivergencePolicy::abort) {
    const auto [flag, advice] =
        divergence_cause(cfg_, st.free_diverged, st.diverged - st.free_diverged, st.nudged_cycling, moved_);
    throw InputError(flag, std::to_string(st.diverged) + " sample(s) diverged (" + std::to_string(st.free_diverged) +
                               " in the free phase) and " + std::to_string(st.nudged_cycling) +
                               " cycled in a nudged phase at step " + std::to_string(index + 1) + ": " + advice +
                               " (or --on-diverge skip)");
  }
  opt_.step(theta_, grad_, index, total, cfg_.threads);
  moved_ = moved_ || st.diverged + st.nudged_cycling < x.cols();  // some sample's gradient was applied
  if (!theta_.allFinite() || theta_.cwiseAbs().maxCoeff() > static_cast<R>(kMaxParameter)) {
    auto [flag, block] = opt_.blame(model_.net, theta_);
    if (flag == "--lr" && cfg_.homeostasis > 0) flag = "--lr/--homeostasis";  // the penalty's gradient is in the step
    throw InputError(flag, "the parameters of block " + block + " became non-finite or exceeded 1e15" + at +
                               "; lower it");
  }
  return st;
}

template <class R>
typename Trainer<R>::StepStats Trainer<R>::gradient(const CMatRef<R>& x, const CMatRef<R>& y, Vec<R>& grad,
                                                    const Index* samples, long index) const {
  const bool warm = cfg_.warm_start && samples != nullptr && warm_.size() > 0;
  const Index B = x.cols();
  // This rank's chunks of the batch (all of them in one process: one per thread).
  const ChunkLayout layout = chunk_layout(team(), cfg_.threads, B);
  const int chunks = std::max(1, layout.count);
  // One gradient buffer per chunk, allocated once: a fresh θ-sized vector per step costs page
  // faults and zeroing on every step. Chunk gradients carry the weight 1/B (a chunk's share).
  if (chunk_grads_.size() < static_cast<std::size_t>(chunks)) chunk_grads_.resize(static_cast<std::size_t>(chunks));
  for (int c = 0; c < chunks; ++c)
    if (chunk_grads_[static_cast<std::size_t>(c)].size() != grad.size()) chunk_grads_[static_cast<std::size_t>(c)].resize(grad.size());
  std::vector<StepStats> stats(static_cast<std::size_t>(layout.count));
  const Vec<R>& theta = device_theta();
  // State noise is keyed on the step, the phase and each sample's place in the batch.
  const auto step_key = [&](std::uint64_t phase) { return 2 * static_cast<std::uint64_t>(index) + phase; };
  const auto places = [](Index first, const std::vector<Index>& cols) {
    std::vector<std::uint64_t> keys(cols.size());
    for (std::size_t k = 0; k < cols.size(); ++k) keys[k] = static_cast<std::uint64_t>(first + cols[k]);
    return keys;
  };
  for_my_chunks(layout, B, [&](int c, int, Index first, Index count) {
    Mat<R> start;
    if (warm) {  // the samples of a batch are distinct: chunks touch disjoint columns of warm_
      start.resize(warm_.rows(), count);
      for (Index j = 0; j < count; ++j) start.col(j) = warm_.col(samples[first + j]);
    }
    std::vector<Index> all_cols(static_cast<std::size_t>(count));
    std::iota(all_cols.begin(), all_cols.end(), Index{0});
    // Online hEP: one oscillating run gives the free state and the error vector at once.
    const bool online = cfg_.algo == Algo::online;
    Mat<R> online_v;
    FreeState<R> fs;
    if (online) {
      const RelaxConfig phase = keyed_noise(cfg_.nudged, step_key(0), places(first, all_cols));
      OnlineResult<R> on = online_estimate<R>(model_, theta, x.middleCols(first, count), y.middleCols(first, count),
                                              online_config(cfg_, &phase));
      fs = std::move(on.free);
      online_v = std::move(on.v);
    } else {
      fs = free_phase<R>(model_, theta, x.middleCols(first, count), y.middleCols(first, count),
                         keyed_noise(cfg_.free, step_key(0), places(first, all_cols)), warm ? &start : nullptr);
    }
    if (warm)
      for (Index j = 0; j < count; ++j) warm_.col(samples[first + j]) = fs.u.col(j);
    StepStats& st = stats[static_cast<std::size_t>(c)];
    Vec<R>& g = chunk_grads_[static_cast<std::size_t>(c)];
    g.setZero();
    // A sample whose free phase diverged contributes nothing to the step: its frozen state feeds
    // no error vector, no readout term and no homeostasis (its columns are left out before any of
    // them is computed). One whose nudged phase diverged or cycled has a zero error vector (the
    // estimator drops it) but keeps the readout's own term at its valid free state.
    std::vector<Index> free_ok;
    for (Index j = 0; j < count; ++j)
      if (fs.relax.status[static_cast<std::size_t>(j)] != RelaxStatus::diverged) free_ok.push_back(j);
    const bool all = free_ok.size() == static_cast<std::size_t>(count);
    const FreeState<R> free_sub = all ? FreeState<R>{} : select_columns(fs, free_ok);
    const FreeState<R>& used = all ? fs : free_sub;
    std::vector<RelaxStatus> nudged(static_cast<std::size_t>(count), RelaxStatus::converged);
    if (!free_ok.empty() && cfg_.algo == Algo::bp) {
      const R share = static_cast<R>(free_ok.size()) / static_cast<R>(B);  // truncated_bptt's gradient is a mean
      g = truncated_bptt<R>(model_, theta, used.x, used.drive, used.u, used.y, cfg_.nudged.max_steps,
                            map_step(cfg_.nudged))
              .grad *
          share;
    } else if (!free_ok.empty()) {
      std::vector<RelaxStatus> nudged_used;
      const RelaxConfig nc = keyed_noise(cfg_.nudged, step_key(1), places(first, free_ok));
      const Mat<R> v = online ? Mat<R>(online_v(Eigen::all, free_ok))
                              : algorithm_error_vector<R>(model_, theta, used, cfg_, &nudged_used, &nc);
      if (online) nudged_used.assign(free_ok.size(), RelaxStatus::converged);  // its statuses are the free state's
      for (std::size_t k = 0; k < free_ok.size(); ++k) nudged[static_cast<std::size_t>(free_ok[k])] = nudged_used[k];
      add_parameter_gradient<R>(model_, theta, used, v, R(1) / static_cast<R>(B), g);
    }
    st.task_nonfinite = !g.allFinite();
    if (cfg_.homeostasis > 0 && model_.net.has_conv() && !free_ok.empty()) {
      // Homeostasis at the free states (held constant) of m of the batch's B samples: all, or
      // homeo-samples of them spread evenly over the batch (place i when ⌊m(i+1)/B⌋ > ⌊mi/B⌋), a
      // choice that does not depend on the threads; each weighs 1/m of the batch's mean. The probes
      // are keyed by the step and each sample's place in the batch.
      const Index m = cfg_.homeo.probed(B);
      const R w = static_cast<R>(cfg_.homeostasis) / static_cast<R>(m);
      const bool exact = cfg_.homeo.mode == HomeoMode::exact;
      if (m == B && all) {
        Mat<R> s(fs.u.rows(), count);
        activate<R>(model_.activation, fs.u, s);
        (void)homeo_at_states<R>(model_.net, theta, s, cfg_.homeo.draws, exact, cfg_.seed,
                                 static_cast<std::uint64_t>(index), first, w * static_cast<R>(count), &g);
      } else {
        Mat<R> s(fs.u.rows(), 1);
        for (const Index j : free_ok) {
          const Index i = first + j;
          if (m * (i + 1) / B == m * i / B) continue;
          activate<R>(model_.activation, fs.u.col(j), s);
          (void)homeo_at_states<R>(model_.net, theta, s, cfg_.homeo.draws, exact, cfg_.seed,
                                   static_cast<std::uint64_t>(index), i, w, &g);
        }
      }
    }
    const Scored sc = score<R>(model_, theta, fs.u, fs.y);
    st.loss = sc.loss;
    st.correct = sc.top1;
    for (Index j = 0; j < count; ++j) {
      const auto status = fs.relax.status[static_cast<std::size_t>(j)];
      if (std::isfinite(fs.relax.residual[j])) {  // a diverged sample's residual is counted in `diverged`
        st.log_residual += std::log10(std::max(fs.relax.residual[j], 1e-30));
        ++st.residual_samples;
      }
      // Steps this sample was computed: up to its stop at tol, or the whole budget with tol = 0.
      st.free_steps += static_cast<double>(cfg_.free.tol > 0 ? fs.relax.col_steps[static_cast<std::size_t>(j)]
                                                              : fs.relax.steps);
      st.not_converged += status != RelaxStatus::converged;
      st.cycling += status == RelaxStatus::cycling;
      st.stalled += status == RelaxStatus::stalled;
      // A sample counts once, whether its free phase or a nudged phase diverged (or both); a
      // sample whose nudged phase cycled has no error vector either.
      const RelaxStatus ns = nudged[static_cast<std::size_t>(j)];
      const bool div = status == RelaxStatus::diverged || ns == RelaxStatus::diverged;
      st.diverged += div;
      st.free_diverged += status == RelaxStatus::diverged;
      st.nudged_cycling += !div && ns == RelaxStatus::cycling;
    }
  });
  // grad = the sum of every rank's chunk gradients in the pairwise order of the chunks
  // (ep/parallel/team.hpp), the local work split over the same threads by parameter range.
  sum_chunks<R>(team(), layout, chunk_grads_, grad, cfg_.threads);
  // The statistics of every chunk, summed in chunk order.
  const std::vector<StepStats> all = gather_items(team(), std::move(stats), layout.per_rank);
  StepStats total;
  for (int c = 0; c < layout.chunks; ++c) {
    const StepStats& st = all[static_cast<std::size_t>(c)];
    total.loss += st.loss;
    total.correct += st.correct;
    total.log_residual += st.log_residual;
    total.residual_samples += st.residual_samples;
    total.free_steps += st.free_steps;
    total.not_converged += st.not_converged;
    total.diverged += st.diverged;
    total.free_diverged += st.free_diverged;
    total.cycling += st.cycling;
    total.stalled += st.stalled;
    total.nudged_cycling += st.nudged_cycling;
    total.task_nonfinite = total.task_nonfinite || st.task_nonfinite;
  }
  return total;
}

template <class R>
EvalResult Trainer<R>::evaluate(const Dataset& test) const {
  const Index n = test.n;
  const Index chunk = std::max<Index>(1, cfg_.eval_chunk);
  const Index pieces = (n + chunk - 1) / chunk;
  std::vector<Scored> scored(static_cast<std::size_t>(pieces));
  std::vector<long> not_conv(static_cast<std::size_t>(pieces), 0), div(static_cast<std::size_t>(pieces), 0);
  const Vec<R>& theta = device_theta();
  // Piece p is evaluated by rank p mod R.
  const Team& t = team();
  std::exception_ptr error;
#pragma omp parallel for schedule(dynamic, 1) num_threads(std::max(1, cfg_.threads))
  for (Index p = 0; p < pieces; ++p) {
    if (p % t.size() != t.rank()) continue;
    try {
      const Index first = p * chunk, count = std::min(chunk, n - first);
      std::vector<Index> idx(static_cast<std::size_t>(count));
      std::iota(idx.begin(), idx.end(), first);
      Mat<R> x(test.dim(), count), y(test.classes, count);
      make_batch<R>(test, idx.data(), count, cfg_.norm, Augmentation{}, nullptr, x, y);
      // State noise keyed on each test sample: every evaluation sees the same noise.
      const FreeState<R> fs = free_phase<R>(model_, theta, x, y,
                                            keyed_noise(cfg_.free, kEvaluationKey, {idx.begin(), idx.end()}));
      scored[static_cast<std::size_t>(p)] = score<R>(model_, theta, fs.u, fs.y);
      not_conv[static_cast<std::size_t>(p)] = count - fs.relax.converged();
      div[static_cast<std::size_t>(p)] = fs.relax.diverged();
    } catch (...) {
#pragma omp critical(hepsim_evaluate)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
  if (t.size() > 1) {  // every piece from the rank that evaluated it
    struct Piece {
      Scored s;
      long not_conv, div;
    };
    std::vector<Piece> mine(static_cast<std::size_t>(pieces));
    for (std::size_t p = 0; p < mine.size(); ++p) mine[p] = {scored[p], not_conv[p], div[p]};
    const std::vector<Piece> all = gather_items(t, std::move(mine), static_cast<int>(pieces));
    for (Index p = 0; p < pieces; ++p) {
      const Piece& q = all[static_cast<std::size_t>((p % t.size()) * pieces + p)];
      scored[static_cast<std::size_t>(p)] = q.s;
      not_conv[static_cast<std::size_t>(p)] = q.not_conv;
      div[static_cast<std::size_t>(p)] = q.div;
    }
  }
  EvalResult r;
  r.samples = n;
  for (Index p = 0; p < pieces; ++p) {
    r.loss += scored[static_cast<std::size_t>(p)].loss;
    r.top1 += static_cast<double>(scored[static_cast<std::size_t>(p)].top1);
    r.top5 += static_cast<double>(scored[static_cast<std::size_t>(p)].top5);
    r.not_converged += not_conv[static_cast<std::size_t>(p)];
    r.diverged += div[static_cast<std::size_t>(p)];
  }
  r.loss /= static_cast<double>(n);
  r.top1 /= static_cast<double>(n);
  r.top5 /= static_cast<double>(n);
  return r;
}

namespace {
// Eigen's own threads off for a scope: its multi-threaded products and solves round differently
// from its single-threaded ones, so the epoch metrics (whole-batch products outside the chunks)
// run single-threaded in every layout of threads and ranks and log the same bits.
struct SerialEigen {
  int saved = Eigen::nbThreads();
  SerialEigen() { Eigen::setNbThreads(1); }
  ~SerialEigen() { Eigen::setNbThreads(saved); }
  SerialEigen(const SerialEigen&) = delete;
  SerialEigen& operator=(const SerialEigen&) = delete;
};
}  // namespace

template <class R>
void Trainer<R>::epoch_metrics(const Dataset& test, EpochRecord& rec) const {
  const SerialEigen serial;
  const Network& net = model_.net;
  const Vec<R>& theta = device_theta();  // the substrate's weights and Jacobian
  rec.weight_angle_deg = weight_angle_deg(net, theta);
  if (!net.has_conv()) {  // H is state-independent: exact norms at any size
    const JacobianNorms norms = exact_norms<R>(net, theta);
    rec.jac_sym = norms.jac_sym();
    rec.homeo_loss = norms.homeo();
  } else {  // measured at the probe batch's free states (below)
    rec.jac_sym = rec.homeo_loss = std::nan("");
  }
  // Alignment on a fixed probe batch (the first probe_size test samples), in double precision.
  const Index P = std::min<Index>(cfg_.probe_size, test.n);
  rec.cos_delta_mean.assign(net.layers.size(), std::nan(""));
  rec.cos_delta_std.assign(net.layers.size(), std::nan(""));
  rec.cos_grad_total = std::nan("");
  if (P == 0) return;
  std::vector<Index> idx(static_cast<std::size_t>(P));
  std::iota(idx.begin(), idx.end(), Index{0});
  Mat<double> x(test.dim(), P), y(test.classes, P);
  make_batch<double>(test, idx.data(), P, cfg_.norm, Augmentation{}, nullptr, x, y);
  const Vec<double> th = theta.template cast<double>();
  std::vector<std::uint64_t> probe_keys(idx.begin(), idx.end());
  const FreeState<double> fs = free_phase<double>(model_, th, x, y, keyed_noise(cfg_.free, kMetricsKey, probe_keys));
  if (net.has_conv()) {
    Mat<double> s(fs.u.rows(), fs.u.cols());
    activate<double>(model_.activation, fs.u, s);
    const JacobianNorms norms = norms_at_states<double>(net, th, s, kMetricDraws, cfg_.seed);
    rec.jac_sym = norms.jac_sym();
    rec.homeo_loss = norms.homeo();
  }
  // The exact δ at this state: a dense solve for small networks, else GMRES to 1e-10 (a conv
  // network's H is per sample: its dense solves would cost n JVPs and an LU each). Both reach δ
  // where the adjoint iteration diverges: at free states the map does not contract to, e.g. a conv
  // network's after T1 steps (the iteration left every epoch's metrics of such a run NaN). A probe
  // whose solve misses 1e-10 (GMRES stagnating, or out of budget) gets no δ (a NaN column) and is
  // left out of the metrics rather than compared with an unconverged vector.
  Mat<double> delta;
  if (net.neurons <= 2048 && !net.has_conv()) {
    delta = rbp_dense<double>(model_, th, fs.u, fs.y);
  } else {
    // Columns are independent: one chunk per thread (a conv network's per-sample convolutions in
    // double are the slowest part of an epoch's metrics; inside the chunks Eigen runs sequentially).
    // With MPI each rank computes its chunks' columns (the chunks of a batch of P), then every
    // rank gathers all of them.
    const long steps = std::min<long>(20000, std::max<long>(1000, 20 * cfg_.free.max_steps));
    delta.resize(fs.u.rows(), P);
    const ChunkLayout layout = chunk_layout(team(), cfg_.threads, P);
    for_my_chunks(layout, P, [&](int, int, Index first, Index count) {
      IterationResult<double> it =
          rbp_krylov<double>(model_, th, fs.u.middleCols(first, count), fs.y.middleCols(first, count), {steps, 1e-10});
      for (Index c = 0; c < count; ++c)
        if (!(it.column_residual(c) <= 1e-10)) it.v.col(c).setConstant(std::nan(""));
      delta.middleCols(first, count) = it.v;
    });
    if (team().size() > 1) {
      std::vector<std::size_t> counts(static_cast<std::size_t>(team().size()));
      for (int r = 0; r < team().size(); ++r) {
        const int c0 = r * layout.per_rank, c1 = c0 + layout.count_of(r);
        counts[static_cast<std::size_t>(r)] =
            static_cast<std::size_t>((layout.begin(P, c1) - layout.begin(P, c0)) * delta.rows()) * sizeof(double);
      }
      const Index mine = layout.count > 0 ? layout.begin(P, layout.first) : P;
      const Mat<double> own = delta.middleCols(mine, layout.begin(P, layout.first + layout.count) - mine);
      team().allgatherv(own.data(), delta.data(), counts);
    }
  }
  const RelaxConfig nc = keyed_noise(cfg_.nudged, kMetricsKey + 1, probe_keys);
  const Mat<double> v = algorithm_error_vector<double>(model_, th, fs, cfg_, nullptr, &nc);
  alignment_metrics(model_, th, cfg_, fs, v, delta, rec);
}

void alignment_metrics(const Model& model, const Vec<double>& theta, const TrainConfig& cfg,
                       const FreeState<double>& fs, const Mat<double>& v, const Mat<double>& delta, EpochRecord& rec) {
  const Network& net = model.net;
  rec.cos_delta_mean.assign(net.layers.size(), std::nan(""));
  rec.cos_delta_std.assign(net.layers.size(), std::nan(""));
  rec.cos_grad_total = std::nan("");
  std::vector<Index> keep;
  for (Index b = 0; b < delta.cols(); ++b)
    if (delta.col(b).allFinite()) keep.push_back(b);
  if (keep.empty()) return;
  for (std::size_t l = 0; l < net.layers.size(); ++l) {
    const Layer& L = net.layers[l];
    std::vector<double> cs;
    for (Index b : keep) {
      const auto a = v.col(b).segment(L.offset, L.size);
      const auto d = delta.col(b).segment(L.offset, L.size);
      const double den = a.norm() * d.norm();
      if (den > 0) cs.push_back(a.dot(d) / den);
    }
    if (cs.empty()) continue;
    const double mean = std::accumulate(cs.begin(), cs.end(), 0.0) / static_cast<double>(cs.size());
    double var = 0;
    for (double c : cs) var += (c - mean) * (c - mean);
    rec.cos_delta_mean[l] = mean;
    rec.cos_delta_std[l] = std::sqrt(var / static_cast<double>(cs.size()));
  }
  // The probes kept (all of them, the usual case, without copies).
  const bool all = static_cast<Index>(keep.size()) == delta.cols();
  const FreeState<double> sub = all ? FreeState<double>{} : select_columns(fs, keep);
  const FreeState<double>& at = all ? fs : sub;
  const Mat<double> d = all ? Mat<double>() : Mat<double>(delta(Eigen::all, keep));
  const Mat<double> e = all ? Mat<double>() : Mat<double>(v(Eigen::all, keep));
  const CMatRef<double> dk = all ? CMatRef<double>(delta) : CMatRef<double>(d);
  const CMatRef<double> vk = all ? CMatRef<double>(v) : CMatRef<double>(e);
  const Index k = net.readout_w_offset;  // kernels and biases; the readout term is common to both
  const Vec<double> g_rbp = parameter_gradient<double>(model, theta, at, dk).head(k);
  const Vec<double> g_alg =
      cfg.algo == Algo::bp
          ? Vec<double>(truncated_bptt<double>(model, theta, at.x, at.drive, at.u, at.y, cfg.nudged.max_steps,
                                               map_step(cfg.nudged))
                            .grad.head(k))
          : Vec<double>(parameter_gradient<double>(model, theta, at, vk).head(k));
  rec.cos_grad_total = g_alg.dot(g_rbp) / (g_alg.norm() * g_rbp.norm());
}

template <class R>
bool Trainer<R>::run(const Dataset& train, const Dataset& test, const EpochPosition& from,
                     const std::function<void(const BatchProgress&)>& on_batch,
                     const std::function<void(const EpochRecord&)>& on_epoch,
                     const std::function<bool(const EpochPosition&)>& after_step) {
  const Index B = cfg_.batch_size;
  const long batches = static_cast<long>((train.n + B - 1) / B);
  const long total_steps = cfg_.epochs * batches;
  const Index cols = std::min<Index>(B, train.n);  // a batch larger than the set is the whole set
  Mat<R> x(train.dim(), cols), y(train.classes, cols);
  if (cfg_.warm_start && warm_.cols() != train.n) warm_ = Mat<R>::Zero(model_.net.neurons, train.n);
  ensure_homeostasis(cols);  // sized by the full batch, also when a resumed run starts at the last one
  for (long epoch = from.epoch; epoch <= cfg_.epochs; ++epoch) {
    // The epoch's sums so far (a resumed epoch's from its checkpoint); its wall time continues.
    EpochPosition pos;
    if (epoch == from.epoch) pos = from;
    pos.epoch = epoch;
    const auto t0 = Clock::now() - std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(pos.train_seconds));
    const std::vector<Index> perm = shuffled_indices(train.n, cfg_.seed, static_cast<std::uint64_t>(epoch));
    EpochRecord rec;
    rec.epoch = epoch;
    BatchProgress prog;
    prog.epoch = epoch;
    prog.batches = batches;
    for (long b = pos.batch; b < batches; ++b) {
      const Index first = b * B, count = std::min<Index>(B, train.n - first);
      Rng aug_rng(cfg_.seed, Stream::augment, static_cast<std::uint64_t>(epoch), static_cast<std::uint64_t>(b));
      auto xb = x.leftCols(count);
      auto yb = y.leftCols(count);
      make_batch<R>(train, perm.data() + first, count, cfg_.norm, cfg_.augment, &aug_rng, xb, yb);
      const StepStats st = step(xb, yb, (epoch - 1) * batches + b, total_steps, perm.data() + first);
      pos.batch = b + 1;
      pos.seen += count;
      pos.loss_sum += st.loss;
      pos.correct += st.correct;
      pos.log_residual += st.log_residual;
      pos.residual_samples += st.residual_samples;
      pos.free_steps += st.free_steps;
      pos.not_converged += st.not_converged;
      pos.diverged += st.diverged;
      pos.free_diverged += st.free_diverged;
      pos.cycling += st.cycling;
      pos.stalled += st.stalled;
      pos.nudged_cycling += st.nudged_cycling;
      pos.train_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      prog.batch = pos.batch;
      prog.seen = pos.seen;
      prog.loss_sum = pos.loss_sum;
      prog.correct = pos.correct;
      prog.examples_per_s = static_cast<double>(pos.seen) / pos.train_seconds;
      if (on_batch) on_batch(prog);
      if (after_step && after_step(pos)) return false;
    }
    rec.train_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    rec.examples_per_s = static_cast<double>(train.n) / rec.train_seconds;
    rec.train_loss = pos.loss_sum / static_cast<double>(train.n);
    rec.train_acc = static_cast<double>(pos.correct) / static_cast<double>(train.n);
    rec.residual_log10 = pos.residual_samples > 0 ? pos.log_residual / static_cast<double>(pos.residual_samples) : std::nan("");
    rec.free_steps = pos.free_steps / static_cast<double>(train.n);
    rec.not_converged = pos.not_converged;
    rec.diverged = pos.diverged;
    rec.cycling = pos.cycling;
    rec.stalled = pos.stalled;
    rec.nudged_cycling = pos.nudged_cycling;
    const long free_diverged = pos.free_diverged;
    rec.lr = opt_.lr_at(epoch * batches, total_steps);
    const EvalResult ev = evaluate(test);
    rec.test_loss = ev.loss;
    rec.test_acc = ev.top1;
    rec.test_top5 = ev.top5;
    epoch_metrics(test, rec);
    rec.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    on_epoch(rec);
    // Under the skip policy a diverged sample (or one whose nudged phase cycled) contributes
    // nothing; when none contributes the parameters no longer change and every further epoch
    // would repeat this one.
    if (rec.diverged + rec.nudged_cycling >= train.n) {
      const auto [flag, advice] =
          divergence_cause(cfg_, free_diverged, rec.diverged - free_diverged, rec.nudged_cycling, moved_);
      throw InputError(flag, "no sample contributed an error vector in epoch " + std::to_string(epoch) + " (" +
                                 std::to_string(rec.diverged) + " diverged, " + std::to_string(free_diverged) +
                                 " of them in the free phase; " + std::to_string(rec.nudged_cycling) +
                                 " cycled in a nudged phase): " + advice +
                                 " (the epochs so far are logged and checkpointed)");
    }
    // The test accuracy of mostly diverged (frozen) states is no accuracy (eval refuses it too).
    if (2 * ev.diverged > ev.samples) {
      const auto [flag, advice] = divergence_cause(cfg_, ev.diverged, 0, 0, moved_);
      throw InputError(flag, std::to_string(ev.diverged) + " of " + std::to_string(ev.samples) +
                                 " test samples diverged in epoch " + std::to_string(epoch) + ": " + advice +
                                 " (the epochs so far are logged and checkpointed)");
    }
    if (epoch < cfg_.epochs && after_step) {  // between epochs: a stop here resumes with the next one
      EpochPosition next;
      next.epoch = epoch + 1;
      if (after_step(next)) return false;
    }
  }
  return true;
}

template class Trainer<float>;
template class Trainer<double>;
template Mat<float> algorithm_error_vector<float>(const Model&, const Vec<float>&, const FreeState<float>&,
                                                  const TrainConfig&, std::vector<RelaxStatus>*, const RelaxConfig*);
template Mat<double> algorithm_error_vector<double>(const Model&, const Vec<double>&, const FreeState<double>&,
                                                    const TrainConfig&, std::vector<RelaxStatus>*, const RelaxConfig*);

}  // namespace hepsim
