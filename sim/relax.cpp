#include "sim/relax.hpp"

#include <boost/numeric/odeint.hpp>
#include <boost/numeric/odeint/external/eigen/eigen.hpp>
#include <cmath>
#include <Eigen/LU>
#include <functional>
#include <limits>
#include <memory>
#include <numeric>

#include "sim/error.hpp"
#include "sim/conv/conv_map.hpp"
#include "sim/fused_map.hpp"
#include "sim/interrupt.hpp"
#include "sim/random.hpp"

// Trap (SPEC 2.5): odeint's Eigen infinity norm declares its result as the matrix scalar, which
// is complex for complex states, and the controlled steppers then do not compile (they compare
// the error norm with 1). A more specialised norm returns the real magnitude.
namespace boost::numeric::odeint {
template <typename T, int S1, int S2, int O, int M1, int M2>
struct vector_space_norm_inf<Eigen::Matrix<std::complex<T>, S1, S2, O, M1, M2>> {
  using result_type = T;
  result_type operator()(const Eigen::Matrix<std::complex<T>, S1, S2, O, M1, M2>& m) const {
    return m.cwiseAbs().maxCoeff();
  }
};

// Eigen 3.4 gives matrices begin()/end() (valid for vectors only), so odeint's copy takes them for
// ranges and calls boost::range::copy, which does not compile for a matrix: copy by assignment.
template <typename T, int S1, int S2, int O, int M1, int M2>
struct copy_impl<Eigen::Matrix<T, S1, S2, O, M1, M2>, Eigen::Matrix<T, S1, S2, O, M1, M2>> {
  static void copy(const Eigen::Matrix<T, S1, S2, O, M1, M2>& from, Eigen::Matrix<T, S1, S2, O, M1, M2>& to) {
    to = from;
  }
};
}  // namespace boost::numeric::odeint

namespace hepsim {
namespace odeint = boost::numeric::odeint;

Solver parse_solver(const std::string& name, const std::string& where) {
  if (name == "map") return Solver::map;
  if (name == "rk4") return Solver::rk4;
  if (name == "dopri5") return Solver::dopri5;
  if (name == "anderson") return Solver::anderson;
  throw InputError(where, "unknown solver '" + name + "' (expected map, rk4, dopri5 or anderson)");
}

const char* to_string(Solver s) {
  switch (s) {
    case Solver::map: return "map";
    case Solver::rk4: return "rk4";
    case Solver::dopri5: return "dopri5";
    case Solver::anderson: return "anderson";
  }
  return "?";
}

const char* to_string(RelaxStatus s) {
  switch (s) {
    case RelaxStatus::converged: return "converged";
    case RelaxStatus::max_steps: return "max_steps";
    case RelaxStatus::diverged: return "diverged";
    case RelaxStatus::cycling: return "cycling";
    case RelaxStatus::stalled: return "stalled";
  }
  return "?";
}

Index RelaxResult::count(RelaxStatus s) const {
  Index n = 0;
  for (auto x : status) n += x == s;
  return n;
}

std::vector<Index> RelaxResult::not_settled() const {
  std::vector<Index> out;
  for (std::size_t j = 0; j < status.size(); ++j)
    if (status[j] != RelaxStatus::converged) out.push_back(static_cast<Index>(j));
  return out;
}

double RelaxResult::mean_col_steps() const {
  double sum = 0;
  for (long k : col_steps) sum += static_cast<double>(k);
  return col_steps.empty() ? 0.0 : sum / static_cast<double>(col_steps.size());
}

double RelaxResult::max_residual() const {
  double m = 0;
  for (Index j = 0; j < residual.size(); ++j)
    if (status[static_cast<std::size_t>(j)] != RelaxStatus::diverged) m = std::max(m, residual[j]);
  return m;
}

namespace {

// Bookkeeping shared by every solver: per-column residuals, divergence detection (a diverged
// column is zeroed and frozen), the stopping test, the cycle and stall tests (relax.hpp) and
// progress reports. A solver calls, once per step (after it):
//   distance_due()  → whether to measure d_j = ‖u_j − snapshot_j‖∞ for this step;
//   update_norms()  → classify every live column;
//   snapshot_due()  → whether to save the current state as the cycle test's new reference
//                     (then snapshot_taken()).
// `update()` does all three for solvers whose state is a plain matrix.
template <class S>
class ColumnMonitor {
 public:
  ColumnMonitor(Field<S>& field, const RelaxConfig& cfg, RelaxResult& res)
      : field_(field), cfg_(cfg), res_(res) {
    const auto cols = static_cast<std::size_t>(field.cols());
    res_.residual = Vec<double>::Zero(field.cols());
    res_.status.assign(cols, RelaxStatus::max_steps);
    res_.col_steps.assign(cols, -1);
    thr_ = cfg.tol > 0 ? cfg.tol : cfg.report_tol;
    dt_ = cfg.step();
    first_residual_.assign(cols, -1.0);
    held_.assign(cols, 0);
    flag_.assign(cols, 0);
    excursion_.assign(cols, 0.0);
    watch_.assign(cols, 0);
    snap_r_.assign(cols, std::numeric_limits<double>::infinity());
    mark_r_.assign(cols, std::numeric_limits<double>::infinity());
    mark_t_.assign(cols, 0.0);
  }

  bool cycle_test() const { return cfg_.cycle_period >= 2; }
  // Some column is watched in this window: the solver measures d for the watched ones.
  bool distance_due() const { return cycle_test() && snap_step_ >= 0 && res_.steps > snap_step_ && watching_ > 0; }
  const char* watch() const { return watch_.data(); }
  bool watched(Index j) const { return watch_[static_cast<std::size_t>(j)] != 0; }
  bool snapshot_due() const { return cycle_test() && (snap_step_ < 0 || res_.steps - snap_step_ >= cfg_.cycle_period); }
  // A new window: the cycle test watches the live columns above the tolerance whose residual did
  // not halve over the last window (a column converging faster costs nothing).
  void snapshot_taken() {
    snap_step_ = res_.steps;
    watching_ = 0;
    for (std::size_t c = 0; c < watch_.size(); ++c) {
      const double r = res_.residual[static_cast<Index>(c)];
      watch_[c] = live(static_cast<Index>(c)) && r > thr_ && r > 0.5 * snap_r_[c];
      watching_ += watch_[c];
      snap_r_[c] = r;
      excursion_[c] = 0;
    }
  }

  // Classifies each live column from its residual r[j], ‖u‖∞ a[j] and (when distance_due(), else
  // nullptr) its distance d[j] from the snapshot, at time t. Divergence: diverge(j) zeroes the
  // column wherever the state lives, and it is frozen. Convergence at tol > 0, cycling and stalls:
  // hold(j) keeps its current state from then on. Returns true when no column is still relaxing
  // and the phase may end (always at tol > 0; with tol = 0 only when every column has been ended
  // by the cycle, stall or divergence tests, so that a fixed budget runs in full otherwise).
  template <class F, class G>
  bool update_norms(const double* r_in, const double* a_in, const double* d_in, double t, F&& diverge, G&& hold) {
    bool all_done = true;
    const long since_snap = res_.steps - snap_step_;
    for (Index j = 0; j < static_cast<Index>(res_.status.size()); ++j) {
      const auto c = static_cast<std::size_t>(j);
      auto& st = res_.status[c];
      if (st == RelaxStatus::diverged || held_[c]) continue;
      const double r = r_in[j], a = a_in[j];
      // NaN fails every comparison: `!(r <= thr)` catches it as well as overflow.
      if (!(r <= cfg_.diverge_threshold) || !(a <= cfg_.diverge_threshold)) {
        st = RelaxStatus::diverged;
        res_.residual[j] = std::numeric_limits<double>::infinity();
        diverge(j);
        field_.freeze(j);
        continue;
      }
      res_.residual[j] = r;
      if (first_residual_[c] < 0) first_residual_[c] = r;
      auto& first = res_.col_steps[c];
      if (first < 0 && r <= thr_) first = res_.steps;
      if (r <= thr_) {  // at the tolerance: progress, whatever comes next (tol = 0 keeps going)
        mark_r_[c] = r;
        mark_t_[c] = t;
      }
      if (cfg_.tol > 0 && r <= cfg_.tol) {
        end_column(j, RelaxStatus::converged, hold);
        continue;
      }
      const double d = d_in && watch_[c] ? d_in[j] : -1.0;  // -1: not measured
      if (r > thr_ && !flag_[c]) {
        const RelaxStatus found = not_settling(c, r, a, d, since_snap, t);
        if (found != RelaxStatus::converged) {
          // With a tolerance the column ends here; with a fixed budget it runs on (its steps, and
          // so every result, are those without the tests) and keeps the status unless it settles.
          if (cfg_.tol > 0) {
            end_column(j, found, hold);
            continue;
          }
          flag_[c] = static_cast<char>(found);
        }
      }
      excursion_[c] = std::max(excursion_[c], d);
      all_done = false;
    }
    report_progress(t);
    // With tol = 0 no column is held, so "all done" means every column diverged: the rest of the
    // budget would change nothing.
    return all_done;
  }

  // The same from the matrices: `delta` (M(u) − u, or the last update) and the state `u`.
  bool update(Mat<S>& u, Mat<S>* delta_to_zero, const Mat<S>& delta, double t) {
    const auto cols = static_cast<std::size_t>(u.cols());
    r_.resize(cols);
    a_.resize(cols);
    for (Index j = 0; j < u.cols(); ++j) {
      double r = 0, a = 0;
      const S* d = delta.col(j).data();
      const S* x = u.col(j).data();
      for (Index i = 0; i < u.rows(); ++i) {
        r = std::max(r, static_cast<double>(std::abs(d[i])));
        a = std::max(a, static_cast<double>(std::abs(x[i])));
        if (std::isnan(static_cast<double>(std::abs(d[i])))) r = std::numeric_limits<double>::quiet_NaN();
      }
      r_[static_cast<std::size_t>(j)] = r;
      a_[static_cast<std::size_t>(j)] = a;
    }
    const bool measure = distance_due();
    if (measure) {
      d_.assign(cols, 0.0);
      for (Index j = 0; j < u.cols(); ++j)
        if (live(j) && watched(j)) d_[static_cast<std::size_t>(j)] = static_cast<double>((u.col(j) - snap_.col(j)).cwiseAbs().maxCoeff());
    }
    const bool done = update_norms(
        r_.data(), a_.data(), measure ? d_.data() : nullptr, t,
        [&](Index j) {
          u.col(j).setZero();
          if (delta_to_zero) delta_to_zero->col(j).setZero();
        },
        [&](Index j) {
          if (delta_to_zero) delta_to_zero->col(j).setZero();  // a held ODE column: du/dt = 0
        });
    if (snapshot_due()) {
      snap_ = u;  // same size after the first time: no allocation
      snapshot_taken();
    }
    return done;
  }

  // Neither diverged nor held (at tol, cycling, stalled).
  bool live(Index j) const {
    return res_.status[static_cast<std::size_t>(j)] != RelaxStatus::diverged && !held_[static_cast<std::size_t>(j)];
  }

  void finish(Mat<S>& u) {
    for (Index j = 0; j < res_.residual.size(); ++j) {
      const auto c = static_cast<std::size_t>(j);
      auto& st = res_.status[c];
      auto& first = res_.col_steps[c];
      if (st == RelaxStatus::cycling || st == RelaxStatus::stalled) continue;  // status and step set when ended
      // A fixed-budget column that cycled or stalled and did not settle by the end keeps that status.
      if (flag_[c] && st != RelaxStatus::diverged && res_.residual[j] > thr_) {
        st = static_cast<RelaxStatus>(flag_[c]);
        first = res_.steps;
        continue;
      }
      const double r0 = first_residual_[c];
      if (st != RelaxStatus::diverged && cfg_.growth_factor > 0 && r0 >= 0 &&
          res_.residual[j] > cfg_.growth_factor * std::max(r0, cfg_.report_tol)) {
        st = RelaxStatus::diverged;
        res_.residual[j] = std::numeric_limits<double>::infinity();
        u.col(j).setZero();
      }
      if (st != RelaxStatus::diverged) st = res_.residual[j] <= thr_ ? RelaxStatus::converged : RelaxStatus::max_steps;
      if (first < 0 || st != RelaxStatus::converged) first = res_.steps;
    }
  }

 private:
  // The cycle and stall tests of a live column above the tolerance (relax.hpp): cycling, stalled,
  // or converged for "neither".
  RelaxStatus not_settling(std::size_t c, double r, double a, double d, long since_snap, double t) {
    using R = RealOf<S>;
    // d is known to about one rounding unit of the state, ε max(1, ‖u‖∞): a ratio d/e below
    // the cycle ratio means something only when ratio · e is several such units (8), else a
    // converging state whose steps are near rounding would "return" exactly. The ratio is per
    // step and the stall window in time: with dt < 1 it shrinks with dt (relax.hpp).
    const double rtol = cfg_.cycle_rtol * std::min(1.0, dt_);
    const double resolvable = 8 * static_cast<double>(std::numeric_limits<R>::epsilon()) * std::max(1.0, a) / rtol;
    if (d >= 0 && since_snap >= 2 && excursion_[c] > resolvable && d <= rtol * excursion_[c]) return RelaxStatus::cycling;
    if (cfg_.stall_window > 0) {
      if (r <= cfg_.stall_factor * mark_r_[c] || !(mark_r_[c] < HUGE_VAL)) {
        mark_r_[c] = r;
        mark_t_[c] = t;
      } else if (t - mark_t_[c] >= cfg_.stall_window) {
        return RelaxStatus::stalled;
      }
    }
    return RelaxStatus::converged;
  }

  template <class G>
  void end_column(Index j, RelaxStatus st, G&& hold) {
    const auto c = static_cast<std::size_t>(j);
    res_.status[c] = st;
    held_[c] = 1;
    if (st != RelaxStatus::converged) res_.col_steps[c] = res_.steps;
    hold(j);
    field_.freeze(j);
  }

  void report_progress(double t) {
    throw_if_interrupted();  // a host's Ctrl-C (sim/interrupt.hpp): one relaxed atomic load per step
    if (!cfg_.progress || res_.steps % 256 != 0) return;
    RelaxProgress p;
    p.steps = res_.steps;
    p.max_steps = cfg_.max_steps;
    p.t = t;
    p.cols = static_cast<Index>(res_.status.size());
    for (Index j = 0; j < p.cols; ++j)
      if (live(j)) {
        ++p.live;
        p.max_residual = std::max(p.max_residual, res_.residual[j]);
      }
    cfg_.progress(p);
  }

  Field<S>& field_;
  const RelaxConfig& cfg_;
  RelaxResult& res_;
  double thr_ = 0;
  double dt_ = 1;                       // the solver's time step (cfg.step())
  std::vector<double> first_residual_;  // the residual at the first check (-1: none yet)
  std::vector<double> r_, a_, d_;       // per-column scratch of update()
  std::vector<char> held_;              // columns ended and held (tol, cycling, stalled)
  std::vector<char> flag_;              // fixed budget: the status a column cycled or stalled with (0: none)
  // Cycle test: the step of the last snapshot (-1: none), the snapshot (update() only), each
  // column's excursion from it, whether it is watched in this window and its residual at the
  // snapshot.
  long snap_step_ = -1;
  Mat<S> snap_;
  std::vector<double> excursion_;
  std::vector<char> watch_;
  long watching_ = 0;
  std::vector<double> snap_r_;
  // Stall test: the last residual mark (a fall by stall_factor sets a new one) and its time.
  std::vector<double> mark_r_, mark_t_;
};

// The map on one of the single-precision engines (FusedMap, ConvMap: one interface).
template <class S, class Engine>
void relax_engine(Engine& engine, Field<S>& field, Mat<S>& u, const RelaxConfig& cfg, RelaxResult& res,
                  ColumnMonitor<S>& mon) {
  const double dt = cfg.step();
  engine.load(u);
  std::vector<double> r(static_cast<std::size_t>(u.cols())), a(r.size()), d(r.size());
  for (long k = 0; k < cfg.max_steps; ++k) {
    ++res.steps;
    const bool measure = mon.distance_due();  // for the state after this step
    engine.step(r.data(), a.data(), measure ? d.data() : nullptr, mon.watch());
    const bool done = mon.update_norms(r.data(), a.data(), measure ? d.data() : nullptr,
                                       static_cast<double>(res.steps) * dt, [&](Index j) { engine.freeze(j); },
                                       [&](Index j) { engine.settle(j); });
    if (done) break;
    if (mon.snapshot_due()) {
      engine.snapshot();
      mon.snapshot_taken();
    }
  }
  engine.store(u);
  field.count_evaluations(res.steps);
  res.t = static_cast<double>(res.steps) * dt;
}

template <class S>
void relax_map(Field<S>& field, Mat<S>& u, const RelaxConfig& cfg, RelaxResult& res, ColumnMonitor<S>& mon) {
  const double dt = cfg.step();
  if constexpr (std::is_same_v<RealOf<S>, float>) {
    if (detail::fused_map_applies(field, cfg)) {
      detail::FusedMap<S> engine(field, dt);
      relax_engine(engine, field, u, cfg, res, mon);
      return;
    }
    if (detail::conv_map_applies(field, cfg)) {
      detail::ConvMap<S> engine(field, dt);
      relax_engine(engine, field, u, cfg, res, mon);
      return;
    }
  }
  Mat<S> next(u.rows(), u.cols());
  const bool damped = dt != 1;
  const auto h = static_cast<RealOf<S>>(dt);
  for (long k = 0; k < cfg.max_steps; ++k) {
    field.map(u, next);
    if (damped) {
      next -= u;           // F(u_old) = M(u_old) − u_old
      u += h * next;       // u_new = u_old + dt F(u_old)
    } else {
      u.swap(next);        // u = M(u_old), next = u_old
      next = u - next;     // the update u_new − u_old = F(u_old)
    }
    ++res.steps;
    if (mon.update(u, nullptr, next, static_cast<double>(res.steps) * dt)) break;
  }
  res.t = static_cast<double>(res.steps) * dt;
}

// The time constants as a vector of the state's scalar (empty without them).
template <class S>
Vec<S> rates(const RelaxConfig& cfg) {
  Vec<S> r(static_cast<Index>(cfg.rate.size()));
  for (Index i = 0; i < r.size(); ++i) r[i] = static_cast<S>(cfg.rate[static_cast<std::size_t>(i)]);
  return r;
}

// The ODE system with per-neuron rates 1/τ: du/dt = rate ⊙ (M(u) − u).
template <class S>
struct RateSystem {
  Field<S>& field;
  const Vec<S>& rate;
  void operator()(const Mat<S>& u, Mat<S>& dudt, RealOf<S> t) {
    field(u, dudt, t);
    if (rate.size()) dudt.array().colwise() *= rate.array();
  }
};

// Euler–Maruyama steps of du = rate ⊙ (M(u) − u) dt + σ dW (RelaxConfig::noise): the damped map
// plus noise. Each column draws from its own generator, keyed on its sample, so its noise does not
// depend on the columns it relaxes with; frozen columns draw nothing.
template <class S>
void relax_euler_maruyama(Field<S>& field, Mat<S>& u, const RelaxConfig& cfg, RelaxResult& res,
                          ColumnMonitor<S>& mon) {
  using R = RealOf<S>;
  const double dt = cfg.step();
  const auto h = static_cast<R>(dt);
  const auto amp = static_cast<R>(cfg.noise.sigma * std::sqrt(dt));
  const Index n = u.rows(), cols = u.cols();
  std::vector<Rng> rng;
  rng.reserve(static_cast<std::size_t>(cols));
  for (Index j = 0; j < cols; ++j)
    rng.emplace_back(cfg.noise.seed, Stream::noise, cfg.noise.key, cfg.noise.column_key(static_cast<std::size_t>(j)));
  const Vec<S> rate = rates<S>(cfg);
  Mat<S> f(n, cols);
  Vec<R> xi(n);
  for (long k = 0; k < cfg.max_steps; ++k) {
    field.map(u, f);
    f -= u;  // the drift F(u) = M(u) − u (zero in frozen columns)
    if (rate.size())
      u.array() += h * (f.array().colwise() * rate.array());
    else
      u += h * f;
    for (Index j = 0; j < cols; ++j) {
      if (field.frozen(j)) continue;
      rng[static_cast<std::size_t>(j)].fill_normal_ziggurat(xi.data(), static_cast<std::size_t>(n));
      if constexpr (is_complex_v<S>)
        u.col(j).real() += amp * xi;
      else
        u.col(j) += amp * xi;
    }
    ++res.steps;
    if (mon.update(u, nullptr, f, static_cast<double>(res.steps) * dt)) break;
  }
  res.t = static_cast<double>(res.steps) * dt;
}

template <class S>
void relax_rk4(Field<S>& field, Mat<S>& u, const RelaxConfig& cfg, RelaxResult& res, ColumnMonitor<S>& mon) {
  using R = RealOf<S>;
  odeint::runge_kutta4<Mat<S>, R, Mat<S>, R, odeint::vector_space_algebra> stepper;
  Mat<S> dudt(u.rows(), u.cols());
  R t = 0;
  const R dt = static_cast<R>(cfg.step());
  const Vec<S> rate = rates<S>(cfg);
  RateSystem<S> sys{field, rate};
  for (;;) {
    field(u, dudt, t);  // derivative at the current state: residual, then reused by the step
    if (mon.update(u, &dudt, dudt, static_cast<double>(t)) || res.steps >= cfg.max_steps) break;
    if (rate.size()) dudt.array().colwise() *= rate.array();
    stepper.do_step(std::ref(sys), u, dudt, t, dt);
    t += dt;
    ++res.steps;
  }
  res.t = static_cast<double>(t);
}

template <class S>
void relax_dopri5(Field<S>& field, Mat<S>& u, const RelaxConfig& cfg, RelaxResult& res, ColumnMonitor<S>& mon) {
  using R = RealOf<S>;
  using Stepper = odeint::runge_kutta_dopri5<Mat<S>, R, Mat<S>, R, odeint::vector_space_algebra>;
  // Near the fixed point the step size sits at the stability limit and the controller lets the
  // local error reach its tolerance: the residual cannot fall below the error tolerance. To reach
  // a residual tol, the error tolerances are capped at tol/10.
  const double cap = cfg.tol > 0 ? 0.1 * cfg.tol : std::numeric_limits<double>::infinity();
  auto ctrl = odeint::make_controlled<Stepper>(static_cast<R>(std::min(cfg.atol, cap)),
                                               static_cast<R>(std::min(cfg.rtol, cap)));
  Mat<S> dudt(u.rows(), u.cols()), drift;
  const R dt0 = static_cast<R>(cfg.step());
  R t = 0, dt = dt0;
  const Vec<S> rate = rates<S>(cfg);
  RateSystem<S> sys{field, rate};
  field(u, dudt, t);
  if (mon.update(u, &dudt, dudt, 0.0)) return;
  if (rate.size()) dudt.array().colwise() *= rate.array();
  // Rejections shrink dt by at most 5x each; this bound only stops a pathological loop.
  const long max_attempts = 20 * cfg.max_steps + 1000;
  const auto T = static_cast<R>(cfg.max_time);
  for (long attempt = 0; attempt < max_attempts && res.steps < cfg.max_steps; ++attempt) {
    if (T > 0) {  // settle: the last step ends exactly at T
      if (t >= T * (1 - 8 * std::numeric_limits<R>::epsilon())) break;
      dt = std::min(dt, T - t);
    }
    const auto r = ctrl.try_step(std::ref(sys), u, dudt, t, dt);  // FSAL: updates u, dudt, t, dt
    if (!std::isfinite(static_cast<double>(dt)) || dt <= R(0)) dt = dt0;
    if (r == odeint::fail) {
      ++res.rejected;
      continue;
    }
    ++res.steps;
    if (rate.size()) {  // the monitor sees the drift M(u) − u; held columns are zeroed in dudt
      drift = dudt.array().colwise() / rate.array();
      if (mon.update(u, &dudt, drift, static_cast<double>(t))) break;
    } else if (mon.update(u, &dudt, dudt, static_cast<double>(t))) {
      break;
    }
  }
  res.t = static_cast<double>(t);
}

// Anderson acceleration of the map (type II, "AA(m)"; Walker & Ni 2011), per column. The last m
// differences live in circular buffers shared by all columns; each column keeps the Gram matrix
// ΔGᵀΔG of the buffer slots, updated by one row when a slot is rewritten (m dot products per
// column and step, plus m for the right-hand side ΔGᵀg). For complex states the products are
// bilinear (not conjugated) and the small system is solved by LU: each step is then the analytic
// continuation of the real iteration, so the state after T steps stays holomorphic in β, as
// holomorphic EP's contour integral requires (the Hermitian least squares would not be). The
// normal equations are formed in double precision with a Tikhonov term of relative size 10ε of
// the state's precision (the products of float states carry relative noise ~1e-7; its scale |G_aa|
// is the only non-holomorphic ingredient, at that level). A column whose residual jumps 100x above
// its best restarts its history; a column whose solve fails takes the plain map step, and so does
// every column on the last step (whose residual is the one reported). With dt ≠ 1 the plain step
// is the damped one, u + dt g, and the correction uses ΔU + dt ΔG (Anderson's mixing parameter).
template <class S>
void relax_anderson(Field<S>& field, Mat<S>& u, const RelaxConfig& cfg, RelaxResult& res,
                    ColumnMonitor<S>& mon) {
  using R = RealOf<S>;
  using C = std::conditional_t<is_complex_v<S>, std::complex<double>, double>;
  constexpr int kMaxM = 16;
  using Small = Eigen::Matrix<C, Eigen::Dynamic, Eigen::Dynamic, 0, kMaxM, kMaxM>;
  using SmallVec = Eigen::Matrix<C, Eigen::Dynamic, 1, 0, kMaxM, 1>;
  using SlotGram = Eigen::Matrix<C, kMaxM, kMaxM>;
  const int m = cfg.anderson_m;
  if (m < 1 || m > kMaxM) throw InputError("anderson", "memory must be between 1 and 16");
  const Index n = u.rows(), cols = u.cols();
  const double dt = cfg.step();
  const bool damped = dt != 1;
  const auto mix = static_cast<RealOf<S>>(dt);
  // The working set: columns still relaxing, compacted (with their own Field on gathered
  // drive/targets/nudges) whenever half of them have stopped, so that stopped columns cost nothing.
  std::vector<Index> idx(static_cast<std::size_t>(cols));  // working position -> column of u
  std::iota(idx.begin(), idx.end(), Index{0});
  std::vector<Index> pos(idx);                             // column of u -> working position
  Field<S>* f = &field;
  std::unique_ptr<Field<S>> compact_field;
  Mat<R> drive_c, y_c;
  Vec<S> beta_c;
  Mat<S> uw = u, fu(n, cols), g(n, cols), u_prev(n, cols), g_prev(n, cols), snap(n, cols);
  std::vector<Mat<S>> dU(static_cast<std::size_t>(m), Mat<S>(n, cols)), dG(dU);
  std::vector<SlotGram> gram(static_cast<std::size_t>(cols), SlotGram::Zero());
  std::vector<int> hist(static_cast<std::size_t>(cols), 0);  // usable history per working column
  std::vector<double> best(static_cast<std::size_t>(cols), std::numeric_limits<double>::infinity());
  std::vector<double> r_all(static_cast<std::size_t>(cols), 0.0), a_all(r_all), d_all(r_all);
  std::vector<char> held(static_cast<std::size_t>(cols), 0);  // final state written to u
  int head = 0, filled = 0;  // next slot of the circular buffers; slots written so far (≤ m)
  auto slot = [&](int a) { return ((head - 1 - a) % m + m) % m; };  // a-th most recent slot
  Small G(m, m);
  SmallVec rhs(m), gamma(m);
  Eigen::PartialPivLU<Small> lu(m);
  long compact_evals = 0;  // evaluations of compact fields already replaced
  const double rel_reg = 10 * static_cast<double>(std::numeric_limits<R>::epsilon());
  for (long k = 0; k < cfg.max_steps; ++k) {
    const Index w = uw.cols();
    f->map(uw, fu);
    g = fu - uw;
    ++res.steps;
    for (Index p = 0; p < w; ++p) {
      const auto j = static_cast<std::size_t>(idx[static_cast<std::size_t>(p)]);
      r_all[j] = static_cast<double>(g.col(p).cwiseAbs().maxCoeff());
      a_all[j] = static_cast<double>(fu.col(p).cwiseAbs().maxCoeff());
      if (!g.col(p).allFinite()) r_all[j] = std::numeric_limits<double>::quiet_NaN();
    }
    const bool measure = mon.distance_due();  // the cycle test on the iterates u_k
    if (measure)
      for (Index p = 0; p < w; ++p) {
        const Index j = idx[static_cast<std::size_t>(p)];
        if (mon.watched(j))
          d_all[static_cast<std::size_t>(j)] = static_cast<double>((uw.col(p) - snap.col(p)).cwiseAbs().maxCoeff());
      }
    const bool done = mon.update_norms(
        r_all.data(), a_all.data(), measure ? d_all.data() : nullptr, static_cast<double>(res.steps) * dt,
        [&](Index j) { fu.col(pos[static_cast<std::size_t>(j)]).setZero(); }, [](Index) {});
    if (mon.snapshot_due()) {
      snap = uw;
      mon.snapshot_taken();
    }
    if (k > 0) {
      dU[static_cast<std::size_t>(head)] = uw - u_prev;
      dG[static_cast<std::size_t>(head)] = g - g_prev;
      head = (head + 1) % m;
      filled = std::min(filled + 1, m);
    }
    u_prev = uw;
    g_prev = g;
    Index live = 0;
    for (Index p = 0; p < w; ++p) {
      const Index j = idx[static_cast<std::size_t>(p)];
      if (damped && mon.live(j))
        uw.col(p) += mix * g.col(p);  // the damped map step; Anderson corrects it below
      else
        uw.col(p) = fu.col(p);  // the plain map step (and a stopped column's final state)
      if (!mon.live(j)) {      // stopped at tol, or diverged (then fu was zeroed): held from now on
        if (!held[static_cast<std::size_t>(j)]) u.col(j) = fu.col(p);
        held[static_cast<std::size_t>(j)] = 1;
        continue;
      }
      ++live;
      SlotGram& gs = gram[static_cast<std::size_t>(p)];
      if (k > 0) {  // the row of the slot just written
        const int s0 = slot(0);
        const auto d0 = dG[static_cast<std::size_t>(s0)].col(p);
        for (int a = 0; a < filled; ++a) {
          const int sa = slot(a);
          const C v = static_cast<C>(dG[static_cast<std::size_t>(sa)].col(p).cwiseProduct(d0).sum());  // bilinear
          gs(sa, s0) = v;
          gs(s0, sa) = v;
        }
      }
      auto& h = hist[static_cast<std::size_t>(p)];
      const double r = res.residual[j];
      auto& b = best[static_cast<std::size_t>(p)];
      if (r > 100 * b) {  // restart: the stored differences no longer describe the map here
        h = 0;
        b = r;
      } else {
        b = std::min(b, r);
      }
      const int used = std::min(h, filled);
      h = std::min(h + 1, m);
      if (used == 0 || k + 1 == cfg.max_steps) continue;
      for (int a = 0; a < used; ++a) {
        rhs[a] = static_cast<C>(dG[static_cast<std::size_t>(slot(a))].col(p).cwiseProduct(g.col(p)).sum());
        for (int c = 0; c < used; ++c) G(a, c) = gs(slot(a), slot(c));
      }
      auto Gu = G.topLeftCorner(used, used);
      double diag = 0;
      for (int a = 0; a < used; ++a) diag = std::max(diag, std::abs(Gu(a, a)));
      if (!(diag > 0)) continue;
      for (int a = 0; a < used; ++a) Gu(a, a) += rel_reg * diag;
      lu.compute(Gu);
      gamma.head(used) = lu.solve(rhs.head(used));
      if (!gamma.head(used).allFinite()) continue;
      for (int a = 0; a < used; ++a) {
        const S ga = static_cast<S>(gamma[a]);
        const auto sa = static_cast<std::size_t>(slot(a));
        if (damped)
          uw.col(p).noalias() -= ga * (dU[sa].col(p) + mix * dG[sa].col(p));
        else
          uw.col(p).noalias() -= ga * (dU[sa].col(p) + dG[sa].col(p));
      }
    }
    if (done || live == 0) break;
    if (2 * live <= w && w >= 8) {  // compact the working set to its live columns
      Index q = 0;
      for (Index p = 0; p < w; ++p) {
        const Index j = idx[static_cast<std::size_t>(p)];
        if (!mon.live(j)) continue;
        idx[static_cast<std::size_t>(q)] = j;
        pos[static_cast<std::size_t>(j)] = q;
        if (q != p) {
          uw.col(q) = uw.col(p);
          snap.col(q) = snap.col(p);
          u_prev.col(q) = u_prev.col(p);
          g_prev.col(q) = g_prev.col(p);
          for (int a = 0; a < m; ++a) {
            dU[static_cast<std::size_t>(a)].col(q) = dU[static_cast<std::size_t>(a)].col(p);
            dG[static_cast<std::size_t>(a)].col(q) = dG[static_cast<std::size_t>(a)].col(p);
          }
          gram[static_cast<std::size_t>(q)] = gram[static_cast<std::size_t>(p)];
          hist[static_cast<std::size_t>(q)] = hist[static_cast<std::size_t>(p)];
          best[static_cast<std::size_t>(q)] = best[static_cast<std::size_t>(p)];
        }
        ++q;
      }
      idx.resize(static_cast<std::size_t>(q));
      Mat<R> dc(n, q), yc(field.y().rows(), q);
      Vec<S> bc(q);
      for (Index p = 0; p < q; ++p) {
        dc.col(p) = field.drive().col(idx[static_cast<std::size_t>(p)]);
        yc.col(p) = field.y().col(idx[static_cast<std::size_t>(p)]);
        bc[p] = field.beta()[idx[static_cast<std::size_t>(p)]];
      }
      drive_c.swap(dc);
      y_c.swap(yc);
      beta_c.swap(bc);
      if (compact_field) compact_evals += compact_field->evaluations();
      compact_field = std::make_unique<Field<S>>(field.model(), field.theta(), drive_c, y_c, beta_c);
      f = compact_field.get();
      for (Mat<S>* x : {&uw, &u_prev, &g_prev, &snap}) x->conservativeResize(n, q);
      for (int a = 0; a < m; ++a) {
        dU[static_cast<std::size_t>(a)].conservativeResize(n, q);
        dG[static_cast<std::size_t>(a)].conservativeResize(n, q);
      }
      fu.resize(n, q);
      g.resize(n, q);
    }
  }
  for (Index p = 0; p < uw.cols(); ++p) {
    const Index j = idx[static_cast<std::size_t>(p)];
    if (mon.live(j)) u.col(j) = uw.col(p);
  }
  field.count_evaluations(compact_evals + (compact_field ? compact_field->evaluations() : 0));
  res.t = static_cast<double>(res.steps) * dt;
}

}  // namespace

template <class S>
RelaxResult relax(Field<S>& field, Mat<S>& u, const RelaxConfig& cfg) {
  eigen_assert(u.rows() == field.rows() && u.cols() == field.cols());
  const bool fixed_step = cfg.solver == Solver::map || cfg.solver == Solver::rk4;
  if (cfg.noise.on() && !fixed_step)
    throw InputError("--solver", std::string("state noise needs a fixed-step solver (map or rk4, which take "
                                             "Euler–Maruyama steps), not ") + to_string(cfg.solver));
  if (!cfg.rate.empty() && (cfg.solver == Solver::map || cfg.solver == Solver::anderson))
    throw InputError("--tau", std::string("time constants apply to the ODE solvers (rk4, dopri5), not to the ") +
                                  to_string(cfg.solver));
  if (!cfg.rate.empty() && static_cast<Index>(cfg.rate.size()) != u.rows())
    throw std::invalid_argument("relax: one rate per neuron");
  // settle: a fixed-step solver's time budget is a step budget (at least one step).
  RelaxConfig budgeted;
  const RelaxConfig* c = &cfg;
  if (cfg.max_time > 0 && cfg.solver != Solver::dopri5) {
    const double steps = std::max(1.0, std::floor(cfg.max_time / cfg.step() * (1 + 1e-12)));
    if (steps < static_cast<double>(cfg.max_steps)) {
      budgeted = cfg;
      budgeted.max_steps = static_cast<long>(steps);
      c = &budgeted;
    }
  }
  RelaxResult res;
  ColumnMonitor<S> mon(field, *c, res);
  field.unfreeze_all();
  const long evals0 = field.evaluations();
  if (c->noise.on()) {
    relax_euler_maruyama(field, u, *c, res, mon);
  } else {
    switch (c->solver) {
      case Solver::map: relax_map(field, u, *c, res, mon); break;
      case Solver::rk4: relax_rk4(field, u, *c, res, mon); break;
      case Solver::dopri5: relax_dopri5(field, u, *c, res, mon); break;
      case Solver::anderson: relax_anderson(field, u, *c, res, mon); break;
    }
  }
  mon.finish(u);
  res.field_evals = field.evaluations() - evals0;
  return res;
}

template <class S>
Vec<double> residual(Field<S>& field, const Mat<S>& u) {
  Mat<S> out(u.rows(), u.cols());
  field.map(u, out);
  out -= u;
  Vec<double> r(u.cols());
  for (Index j = 0; j < u.cols(); ++j) r[j] = static_cast<double>(out.col(j).cwiseAbs().maxCoeff());
  return r;
}

#define HEPSIM_INSTANTIATE(S)                                                 \
  template RelaxResult relax<S>(Field<S>&, Mat<S>&, const RelaxConfig&);       \
  template Vec<double> residual<S>(Field<S>&, const Mat<S>&);
HEPSIM_INSTANTIATE(float)
HEPSIM_INSTANTIATE(double)
HEPSIM_INSTANTIATE(std::complex<float>)
HEPSIM_INSTANTIATE(std::complex<double>)
#undef HEPSIM_INSTANTIATE

}  // namespace hepsim
