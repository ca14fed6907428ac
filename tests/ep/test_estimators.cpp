// Properties of the gradient estimators (SPEC 3): symmetric weights ⇒ v* = δ; RBP gradient =
// central finite differences of the loss; truncated BPTT → RBP; holomorphic EP's error shrinks
// like |β|^N; FFT = direct sum; float = double to float precision; divergence is contained.
#include <doctest/doctest.h>

#include <cmath>

#include "../common.hpp"
#include "ep/estimators.hpp"

using namespace hepsim;
using namespace hepsim::testing;

namespace {

RelaxConfig converged(double tol = 1e-14) {
  RelaxConfig cfg;
  cfg.max_steps = 200000;
  cfg.tol = tol;
  cfg.report_tol = 10 * tol;
  return cfg;
}

template <class R>
FreeState<R> setup_free(const Model& m, const Vec<R>& theta, Index B, std::uint64_t seed, const RelaxConfig& cfg) {
  const RandomBatch b = random_batch(m.net, B, seed);
  const Mat<R> x = b.x.cast<R>(), y = b.y.cast<R>();
  return free_phase<R>(m, theta, x, y, cfg);
}

double batch_loss(const Model& m, const Vec<double>& theta, const Mat<double>& x, const Mat<double>& y) {
  const FreeState<double> fs = free_phase<double>(m, theta, x, y, converged(1e-15));
  Mat<double> s(fs.u.rows(), fs.u.cols());
  activate<double>(m.activation, fs.u, s);
  const Layer& o = m.net.layers[static_cast<std::size_t>(m.net.out)];
  return loss_per_sample<double>(m.net, theta, m.loss, s.middleRows(o.offset, o.size), y).mean();
}

}  // namespace

TEST_CASE("symmetric feedback (angle 0): the EP response equals the RBP adjoint") {
  // Theory: J_G symmetric ⇒ (I − D J_G)⁻¹ D = D (I − J_G D)⁻¹ = [(I − D J_Gᵀ)⁻¹ D] exactly.
  // Dense solves in double: relative error ~ cond · 1e-16; cond(I − D J_G) ≲ 1e3 here: 1e-8 holds
  // with margin (the target).
  for (const char* arch : {"small", "mlp_2-256", "loop_mnist"}) {
    CAPTURE(arch);
    const Model m = std::string(arch) == "small" ? small_model(false) : make_model(arch);
    const Vec<double> theta = init_params<double>(m.net, 5, 0.0);
    const FreeState<double> fs = setup_free<double>(m, theta, 4, 8, converged(1e-12));
    const Mat<double> delta = rbp_dense<double>(m, theta, fs.u, fs.y);
    const Mat<double> vstar = exact_response_dense<double>(m, theta, fs.u, fs.y);
    if (std::string(arch) == "loop_mnist") {
      CHECK(rel_err(vstar, delta) > 1e-3);  // a ring has no symmetric partner: the bias remains
    } else {
      CHECK(rel_err(vstar, delta) < 1e-8);
    }
  }
}

TEST_CASE("iterations agree with the dense solves (adjoint and tangent-linear)") {
  const Model m = small_model();
  const Vec<double> theta = init_params<double>(m.net, 2, 90.0);
  const FreeState<double> fs = setup_free<double>(m, theta, 3, 1, converged());
  const IterationConfig it{100000, 1e-15};
  // Converged iterations stop at an update ≤ 1e-15; the error is that over (1 − ρ): ≤ 1e-12.
  CHECK(rel_err(rbp_adjoint<double>(m, theta, fs.u, fs.y, it).v, rbp_dense<double>(m, theta, fs.u, fs.y)) < 1e-12);
  CHECK(rel_err(exact_response<double>(m, theta, fs.drive, fs.u, fs.y, it).v,
                exact_response_dense<double>(m, theta, fs.u, fs.y)) < 1e-12);
}

TEST_CASE("the RBP gradient matches central finite differences of the loss at the re-relaxed fixed point") {
  const Model m = small_model();
  for (double angle : {0.0, 90.0}) {
    CAPTURE(angle);
    Vec<double> theta = init_params<double>(m.net, 3, angle);
    // Non-zero biases so that their gradients are exercised too.
    Rng rng(4, Stream::init, 99);
    for (const ParamBlock& b : m.net.blocks)
      if (b.bias)
        for (Index i = 0; i < b.size(); ++i) theta[b.offset + i] = 0.1 * rng.normal();
    const RandomBatch batch = random_batch(m.net, 5, 6);
    const FreeState<double> fs = free_phase<double>(m, theta, batch.x, batch.y, converged(1e-15));
    const Mat<double> delta = rbp_dense<double>(m, theta, fs.u, fs.y);
    const Vec<double> g = parameter_gradient<double>(m, theta, fs, delta);
    for (int d = 0; d < 3; ++d) {
      Vec<double> dir(m.net.n_params);
      for (Index i = 0; i < dir.size(); ++i) dir[i] = rng.normal();
      dir.normalize();
      // h = 1e-5: truncation h²·|L'''|/6 ≈ 1e-11; fixed points re-relaxed to 1e-15 contribute
      // ≈ 1e-15/h = 1e-10; rounding of L ≈ 1e-16/h. Relative to |∇L·dir| ≈ 1e-2: ≤ 1e-7.
      const double h = 1e-5;
      const double fd = (batch_loss(m, theta + h * dir, batch.x, batch.y) -
                         batch_loss(m, theta - h * dir, batch.x, batch.y)) / (2 * h);
      const double an = g.dot(dir);
      CAPTURE(fd);
      CAPTURE(an);
      CHECK(std::abs(fd - an) / std::abs(an) < 1e-6);
    }
  }
}

TEST_CASE("truncated BPTT converges to RBP as T2 grows, and equals truncated RBP at a fixed point") {
  const Model m = small_model();
  const Vec<double> theta = init_params<double>(m.net, 9, 90.0);
  const FreeState<double> fs = setup_free<double>(m, theta, 4, 2, converged(1e-15));
  const Mat<double> delta = rbp_dense<double>(m, theta, fs.u, fs.y);
  const Vec<double> g_rbp = parameter_gradient<double>(m, theta, fs, delta);
  double last = 1e300;
  for (long T : {2L, 5L, 10L, 20L, 40L, 80L}) {
    const BpttResult<double> b = truncated_bptt<double>(m, theta, fs.x, fs.drive, fs.u, fs.y, T);
    const double e = rel_err(b.grad, g_rbp);
    CAPTURE(T);
    CAPTURE(e);
    CHECK(e < last);
    last = e;
    // At the fixed point every unrolled step sees the same state: Σ_t a_t is the T-step adjoint.
    const auto d = rbp_adjoint<double>(m, theta, fs.u, fs.y, IterationConfig{T, 0});
    CHECK(rel_err(b.error_sum, d.v) < 1e-12);
  }
  // The adjoint's contraction ρ^T: 80 steps bring the gap below 1e-8 for this network (ρ ≈ 0.6).
  CHECK(last < 1e-8);
}

TEST_CASE("damped iterations and damped truncated BPTT (dt = 0.5): the same limits, and the exact unrolled gradient") {
  const Model m = small_model();
  const Vec<double> theta = init_params<double>(m.net, 9, 90.0);
  const FreeState<double> fs = setup_free<double>(m, theta, 4, 2, converged(1e-15));
  const double dt = 0.5;
  // Converged damped iterations reach the dense solves: they stop at ‖Av + b − v‖ ≤ 1e-15, the
  // damped contraction is ≤ 1 − dt (1 − ρ) ≈ 0.8 for this network (ρ ≈ 0.6): error ≤ 1e-14.
  const IterationConfig it{100000, 1e-15, dt};
  const auto delta_it = rbp_adjoint<double>(m, theta, fs.u, fs.y, it);
  CHECK(rel_err(delta_it.v, rbp_dense<double>(m, theta, fs.u, fs.y)) < 1e-12);
  CHECK(rel_err(exact_response<double>(m, theta, fs.drive, fs.u, fs.y, it).v,
                exact_response_dense<double>(m, theta, fs.u, fs.y)) < 1e-12);
  CHECK(delta_it.steps > rbp_adjoint<double>(m, theta, fs.u, fs.y, IterationConfig{100000, 1e-15}).steps);
  for (long T : {3L, 12L}) {
    CAPTURE(T);
    const BpttResult<double> b = truncated_bptt<double>(m, theta, fs.x, fs.drive, fs.u, fs.y, T, dt);
    // At the fixed point: Σ_t dt a_t is the T-step damped adjoint, and the gradient is that
    // error vector's parameter gradient (every unrolled step sees s*).
    CHECK(rel_err(b.error_sum, rbp_adjoint<double>(m, theta, fs.u, fs.y, IterationConfig{T, 0, dt}).v) < 1e-12);
    CHECK(rel_err(b.grad, parameter_gradient<double>(m, theta, fs, b.error_sum)) < 1e-12);
    // Away from a fixed point the backward pass is checked against central differences of the
    // loss after T damped map steps from a fixed start u0 (the free state after 2 steps).
    RelaxConfig two;
    two.max_steps = 2;
    const FreeState<double> f2 = free_phase<double>(m, theta, fs.x, fs.y, two);
    const BpttResult<double> g = truncated_bptt<double>(m, theta, fs.x, f2.drive, f2.u, fs.y, T, dt);
    auto unrolled_loss = [&](const Vec<double>& th) {
      RelaxConfig cfg;
      cfg.max_steps = T;
      cfg.dt = dt;
      cfg.cycle_period = 0;
      cfg.stall_window = 0;
      const FreeState<double> f = free_phase<double>(m, th, fs.x, fs.y, cfg, &f2.u);
      Mat<double> s(f.u.rows(), f.u.cols());
      activate<double>(m.activation, f.u, s);
      const Layer& o = m.net.layers[static_cast<std::size_t>(m.net.out)];
      return loss_per_sample<double>(m.net, th, m.loss, s.middleRows(o.offset, o.size), fs.y).mean();
    };
    Rng rng(5, Stream::probes, static_cast<std::uint64_t>(T));
    for (int d = 0; d < 3; ++d) {
      Vec<double> dir(m.net.n_params);
      for (Index i = 0; i < dir.size(); ++i) dir[i] = rng.normal();
      dir.normalize();
      // h = 1e-5: truncation h² |L'''|/6 ≈ 1e-11 and rounding 1e-16/h ≈ 1e-11 against |∇L·dir|
      // ≈ 1e-2: ≤ 1e-8 relative; 1e-6 leaves room.
      const double h = 1e-5;
      const double fd = (unrolled_loss(theta + h * dir) - unrolled_loss(theta - h * dir)) / (2 * h);
      CHECK(std::abs(fd - g.grad.dot(dir)) / std::abs(fd) < 1e-6);
    }
  }
}

TEST_CASE("holomorphic EP: the error against v* shrinks like |beta|^N (log-log slope)") {
  const Model m = small_model();
  const Vec<double> theta = init_params<double>(m.net, 1, 90.0);
  const FreeState<double> fs = setup_free<double>(m, theta, 3, 3, converged(1e-15));
  const Mat<double> vstar = exact_response_dense<double>(m, theta, fs.u, fs.y);
  // |β| well inside the radius of convergence of a(β) (≈ 0.3 for this network: at |β| = 0.4 the
  // classic estimate is off by 120%), so that the leading error term dominates.
  const std::vector<double> betas = {0.02, 0.01, 0.005, 0.0025};
  for (int N : {1, 2, 3, 4}) {
    std::vector<double> lx, ly;
    for (double beta : betas) {
      EstimatorConfig cfg;
      cfg.N = N;
      cfg.beta = beta;
      cfg.nudged = converged(1e-15);
      const auto est = ep_estimate<double>(m, theta, fs, cfg);
      REQUIRE(est.n_diverged == 0);
      lx.push_back(std::log(beta));
      ly.push_back(std::log(rel_err(est.v, vstar)));
    }
    // Least-squares slope of log(error) against log|β|; theory: N (the first aliased Taylor
    // coefficient is c_{N+1}|β|^N). The next term changes the local slope by O(|β|): ±0.3.
    const double mx = (lx[0] + lx[1] + lx[2] + lx[3]) / 4, my = (ly[0] + ly[1] + ly[2] + ly[3]) / 4;
    double sxy = 0, sxx = 0;
    for (int i = 0; i < 4; ++i) {
      sxy += (lx[static_cast<std::size_t>(i)] - mx) * (ly[static_cast<std::size_t>(i)] - my);
      sxx += (lx[static_cast<std::size_t>(i)] - mx) * (lx[static_cast<std::size_t>(i)] - mx);
    }
    const double slope = sxy / sxx;
    CAPTURE(N);
    MESSAGE("N=" << N << " slope " << slope << " errors " << std::exp(ly[0]) << " … " << std::exp(ly[3]));
    CHECK(std::abs(slope - N) < 0.3);
  }
}

TEST_CASE("contour coefficients: FFTW and the direct sum agree, they recover a polynomial's Taylor coefficients") {
  using C = std::complex<double>;
  for (int N : {2, 3, 4, 5, 6, 8}) {
    CAPTURE(N);
    const double beta = 0.3;
    // a(β) = Σ_m t_m β^m with real coefficient matrices t_m (degree < N: no aliasing).
    Rng rng(N, Stream::data);
    std::vector<Mat<double>> t(static_cast<std::size_t>(N));
    for (auto& tm : t) {
      tm.resize(3, 2);
      for (Index i = 0; i < tm.size(); ++i) tm.data()[i] = rng.normal();
    }
    std::vector<Mat<C>> samples;
    for (const auto& bk : contour_points(N, beta)) {
      Mat<C> a = Mat<C>::Zero(3, 2);
      for (int mm = 0; mm < N; ++mm) a += t[static_cast<std::size_t>(mm)].cast<C>() * std::pow(bk, mm);
      samples.push_back(a);
    }
    const auto fft = contour_coefficients<double>(samples, N, beta, true);
    const auto direct = contour_coefficients<double>(samples, N, beta, false);
    for (int mm = 0; mm < N; ++mm) {
      // Both are exact for a polynomial of degree < N, up to rounding amplified by β^{-m}
      // (0.3^{-7} ≈ 5e3): 1e-11 relative.
      CHECK(rel_err(fft[static_cast<std::size_t>(mm)], direct[static_cast<std::size_t>(mm)]) < 1e-11);
      CHECK(rel_err(fft[static_cast<std::size_t>(mm)], t[static_cast<std::size_t>(mm)]) < 1e-11);
    }
  }
}

TEST_CASE("complex<float> and complex<double> estimates agree to float precision") {
  const Model m = small_model();
  const Vec<double> theta = init_params<double>(m.net, 12, 90.0);
  const Vec<float> theta_f = theta.cast<float>();
  RelaxConfig fixed;
  fixed.max_steps = 200;  // a fixed budget, as in training
  const FreeState<double> fd = setup_free<double>(m, theta, 4, 5, fixed);
  const FreeState<float> ff = setup_free<float>(m, theta_f, 4, 5, fixed);
  for (int N : {2, 4, 6}) {
    EstimatorConfig cfg;
    cfg.N = N;
    // |β| = 0.1: every contour point converges (at 0.5 the complex phases of this network do not
    // settle, residual ≈ 0.3, and float and double then follow different non-converged paths).
    cfg.beta = 0.1;
    cfg.nudged.max_steps = 100;
    const auto ed = ep_estimate<double>(m, theta, fd, cfg);
    const auto ef = ep_estimate<float>(m, theta_f, ff, cfg);
    REQUIRE(ed.max_residual < 1e-6);
    // Float states carry ≈ 2.4e-7 absolute error (the float residual floor, measured); divided
    // by |β| = 0.1 that is 2.4e-6 in v, relative to |v| ≈ 2: ≈ 1e-6 (measured 6e-7). Allow 1e-5;
    // the curvature c_2 divides by |β|² once more: allow 1e-4.
    CAPTURE(N);
    CHECK(rel_err(ef.v.cast<double>(), ed.v) < 1e-5);
    if (N >= 3) CHECK(rel_err(ef.curvature.cast<double>(), ed.curvature) < 1e-4);
  }
}

TEST_CASE("diverging contour points are counted and their samples zeroed, never NaN") {
  const Model m = small_model();
  const Vec<double> theta = init_params<double>(m.net, 3, 90.0);
  const FreeState<double> fs = setup_free<double>(m, theta, 6, 4, converged(1e-12));
  EstimatorConfig cfg;
  cfg.N = 4;
  cfg.beta = 1e4;  // far beyond the sigmoid's poles: complex phases blow up
  cfg.nudged.max_steps = 50;
  cfg.nudged.diverge_threshold = 1e3;
  const auto est = ep_estimate<double>(m, theta, fs, cfg);
  CHECK(est.n_diverged > 0);
  CHECK(est.v.allFinite());
  CHECK(est.curvature.allFinite());
  for (Index b = 0; b < 6; ++b)
    if (est.status[static_cast<std::size_t>(b)] == RelaxStatus::diverged) CHECK(est.v.col(b).cwiseAbs().maxCoeff() == 0.0);
  // A moderate |β| on the same batch diverges nowhere.
  cfg.beta = 0.1;
  CHECK(ep_estimate<double>(m, theta, fs, cfg).n_diverged == 0);
}
