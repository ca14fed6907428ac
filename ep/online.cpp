// Online (oscillating) holomorphic EP (SPEC 3.3): estimators.hpp, OnlineConfig.
#include <algorithm>
#include <cmath>
#include <complex>
#include <limits>
#include <stdexcept>

#include "ep/estimators.hpp"

namespace hepsim {

template <class R>
OnlineResult<R> online_estimate(const Model& model, const Vec<R>& theta, const CMatRef<R>& x, const CMatRef<R>& y,
                                const OnlineConfig& cfg) {
  using C = std::complex<R>;
  if (cfg.N < 2) throw std::invalid_argument("online_estimate: N must be >= 2");
  if (!(cfg.beta > 0)) throw std::invalid_argument("online_estimate: |beta| must be > 0");
  if (cfg.periods < 2) throw std::invalid_argument("online_estimate: periods must be >= 2 (the first is discarded)");
  const Network& net = model.net;
  const Index n = net.neurons, B = x.cols();
  OnlineResult<R> res;
  FreeState<R>& fs = res.free;
  fs.x = x;
  fs.y = y;
  fs.drive.resize(n, B);
  input_drive<R>(net, theta, fs.x, fs.drive);

  RelaxConfig phase = cfg.phase;
  phase.tol = 0;  // a phase point lasts its T2 steps, settled or not
  phase.progress = nullptr;  // reported here for the whole run (a phase point may be short)
  const long total_steps = cfg.periods * cfg.N * cfg.phase.max_steps;
  long reported = 0;
  const std::uint64_t key0 = phase.noise.key;
  Mat<C> u = Mat<C>::Zero(n, B), s(n, B);
  Mat<C> sum_u = Mat<C>::Zero(n, B), first = sum_u, second = sum_u;  // harmonics 0 (of u), 1 and 2 (of σ(u))
  Vec<C> beta(B);
  std::vector<char> dead(static_cast<std::size_t>(B), 0);
  fs.relax.status.assign(static_cast<std::size_t>(B), RelaxStatus::converged);
  fs.relax.residual = Vec<double>::Zero(B);
  long samples = 0;
  const double two_pi = 6.283185307179586;
  for (long p = 0; p < cfg.periods; ++p) {
    for (int k = 0; k < cfg.N; ++k) {
      const double angle = two_pi * k / cfg.N;
      beta.setConstant(C(static_cast<R>(cfg.beta * std::cos(angle)), static_cast<R>(cfg.beta * std::sin(angle))));
      Field<C> field(model, theta, fs.drive, fs.y, beta);
      // Each phase point its own noise; the golden-ratio stride keeps these keys apart from the
      // small keys of other relaxations (a training step's are 2 × step + phase).
      phase.noise.key = key0 + static_cast<std::uint64_t>(p * cfg.N + k + 1) * 0x9e3779b97f4a7c15ULL;
      const RelaxResult r = relax(field, u, phase);
      fs.relax.steps += r.steps;
      fs.relax.field_evals += r.field_evals;
      fs.relax.t += r.t;
      for (Index j = 0; j < B; ++j) {
        const RelaxStatus st = r.status[static_cast<std::size_t>(j)];
        if (st == RelaxStatus::diverged) dead[static_cast<std::size_t>(j)] = 1;
        fs.relax.status[static_cast<std::size_t>(j)] = dead[static_cast<std::size_t>(j)] ? RelaxStatus::diverged : st;
        fs.relax.residual[j] = r.residual[j];
      }
      if (cfg.phase.progress && fs.relax.steps - reported >= 256) {
        reported = fs.relax.steps;
        RelaxProgress pr;
        pr.steps = fs.relax.steps;
        pr.max_steps = total_steps;
        pr.t = fs.relax.t;
        pr.cols = B;
        for (Index j = 0; j < B; ++j)
          if (!dead[static_cast<std::size_t>(j)]) {
            ++pr.live;
            pr.max_residual = std::max(pr.max_residual, r.residual[j]);
          }
        cfg.phase.progress(pr);
      }
      if (p == 0) continue;  // the settling transient
      activate<C>(model.activation, u, s);
      const C w1 = std::polar(R(1), static_cast<R>(-angle)), w2 = w1 * w1;
      sum_u += u;
      first += w1 * s;
      second += w2 * s;
      ++samples;
    }
  }
  res.steps = fs.relax.steps;
  fs.relax.col_steps.assign(static_cast<std::size_t>(B), fs.relax.steps);
  const R K = static_cast<R>(samples);
  fs.u = (sum_u / K).real();
  res.v = (first / (K * static_cast<R>(cfg.beta))).real();
  res.imag = (first / (K * static_cast<R>(cfg.beta))).imag();
  if (cfg.N >= 3) res.curvature = (second / (K * static_cast<R>(cfg.beta * cfg.beta))).real();
  for (Index j = 0; j < B; ++j) {
    if (!dead[static_cast<std::size_t>(j)]) continue;
    ++res.n_diverged;
    fs.u.col(j).setZero();
    res.v.col(j).setZero();
    res.imag.col(j).setZero();
    if (res.curvature.size()) res.curvature.col(j).setZero();
    fs.relax.residual[j] = std::numeric_limits<double>::infinity();
  }
  return res;
}

template OnlineResult<float> online_estimate<float>(const Model&, const Vec<float>&, const CMatRef<float>&,
                                                    const CMatRef<float>&, const OnlineConfig&);
template OnlineResult<double> online_estimate<double>(const Model&, const Vec<double>&, const CMatRef<double>&,
                                                      const CMatRef<double>&, const OnlineConfig&);

}  // namespace hepsim
