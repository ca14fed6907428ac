// Relaxation (SPEC 2.5): the discrete map, RK4 and Dormand–Prince reach the same fixed point
// (real and complex β); complex arithmetic with real data reproduces the real computation;
// RK4 has order 4; divergence is detected, contained and counted.
#include <doctest/doctest.h>

#include <algorithm>
#include <complex>

#include "../common.hpp"
#include "sim/sim.hpp"

using namespace hepsim;
using namespace hepsim::testing;
using C = std::complex<double>;

namespace {

struct Setup {
  Model model;
  Vec<double> theta;
  RandomBatch batch;
  Mat<double> drive;
};

Setup setup(const std::string& arch, double angle, Index B, std::uint64_t seed) {
  Setup s{make_model(arch), {}, {}, {}};
  s.theta = init_params<double>(s.model.net, seed, angle);
  s.batch = random_batch(s.model.net, B, seed + 100);
  s.drive.resize(s.model.net.neurons, B);
  input_drive<double>(s.model.net, s.theta, s.batch.x, s.drive);
  return s;
}

template <class S>
Mat<S> relax_with(const Setup& s, const Vec<S>& beta, Solver solver, const Mat<S>& start, RelaxResult* out = nullptr) {
  Field<S> f(s.model, s.theta, s.drive, s.batch.y, beta);
  Mat<S> u = start;
  RelaxConfig cfg;
  cfg.solver = solver;
  cfg.max_steps = 200000;
  cfg.tol = 1e-11;
  const RelaxResult r = relax(f, u, cfg);
  CHECK(r.converged() == s.batch.x.cols());
  CHECK(r.diverged() == 0);
  if (out) *out = r;
  return u;
}

}  // namespace

TEST_CASE("map, RK4 and Dormand-Prince reach the same fixed point (real and complex beta)") {
  // Tolerance: every solver stops at a residual ‖M(u) − u‖∞ ≤ 1e-11; the distance to the fixed
  // point is at most residual / (1 − ρ) with ρ the map's contraction rate. ρ ≈ 0.98 for the
  // symmetric start (1585 map steps to 1e-10 measured), so 1e-11/0.02 = 5e-10; allow 2e-9.
  for (const char* arch : {"mlp_2-256", "loop_mnist"}) {
    for (double angle : {0.0, 90.0}) {
      CAPTURE(arch);
      CAPTURE(angle);
      const Setup s = setup(arch, angle, 3, 11);
      const Index n = s.model.net.neurons, B = 3;
      const Vec<double> free_beta = Vec<double>::Zero(B);
      const Mat<double> zero = Mat<double>::Zero(n, B);
      const Mat<double> u_map = relax_with<double>(s, free_beta, Solver::map, zero);
      const Mat<double> u_rk4 = relax_with<double>(s, free_beta, Solver::rk4, zero);
      const Mat<double> u_dp = relax_with<double>(s, free_beta, Solver::dopri5, zero);
      RelaxResult r_map, r_aa;
      (void)relax_with<double>(s, free_beta, Solver::map, zero, &r_map);
      const Mat<double> u_aa = relax_with<double>(s, free_beta, Solver::anderson, zero, &r_aa);
      CHECK((u_rk4 - u_map).cwiseAbs().maxCoeff() < 2e-9);
      CHECK((u_dp - u_map).cwiseAbs().maxCoeff() < 2e-9);
      CHECK((u_aa - u_map).cwiseAbs().maxCoeff() < 2e-9);
      // Anderson's point: where the map contracts slowly (the symmetric start needs over a
      // thousand map steps to 1e-11) it needs a small fraction of the field evaluations.
      CAPTURE(r_map.field_evals);
      CAPTURE(r_aa.field_evals);
      if (r_map.field_evals > 500) CHECK(r_aa.field_evals * 4 < r_map.field_evals);
      CHECK(r_aa.field_evals <= r_map.field_evals + 5);

      // Real nudge from the free fixed point.
      const Vec<double> rb = Vec<double>::Constant(B, 0.5);
      const Mat<double> n_map = relax_with<double>(s, rb, Solver::map, u_map);
      CHECK((relax_with<double>(s, rb, Solver::dopri5, u_map) - n_map).cwiseAbs().maxCoeff() < 2e-9);
      CHECK((relax_with<double>(s, rb, Solver::rk4, u_map) - n_map).cwiseAbs().maxCoeff() < 2e-9);
      CHECK((relax_with<double>(s, rb, Solver::anderson, u_map) - n_map).cwiseAbs().maxCoeff() < 2e-9);
      CHECK((n_map - u_map).cwiseAbs().maxCoeff() > 1e-3);  // the nudge moved the state

      // Complex nudges on a circle (the hEP contour points), stacked per column.
      Vec<C> cb(B);
      for (Index j = 0; j < B; ++j) cb[j] = std::polar(0.5, 2 * M_PI * static_cast<double>(j + 1) / 6);
      const Mat<C> start = u_map.cast<C>();
      const Mat<C> c_map = relax_with<C>(s, cb, Solver::map, start);
      CHECK((relax_with<C>(s, cb, Solver::rk4, start) - c_map).cwiseAbs().maxCoeff() < 2e-9);
      CHECK((relax_with<C>(s, cb, Solver::dopri5, start) - c_map).cwiseAbs().maxCoeff() < 2e-9);
      CHECK((relax_with<C>(s, cb, Solver::anderson, start) - c_map).cwiseAbs().maxCoeff() < 2e-9);
      CHECK(c_map.imag().cwiseAbs().maxCoeff() > 1e-3);  // genuinely complex
    }
  }
}

TEST_CASE("complex states with real beta reproduce the real computation") {
  const Setup s = setup("mlp_2-256", 90.0, 4, 5);
  const Index n = s.model.net.neurons, B = 4;
  for (Solver solver : {Solver::map, Solver::rk4, Solver::dopri5, Solver::anderson}) {
    CAPTURE(std::string(to_string(solver)));
    RelaxConfig cfg;
    cfg.solver = solver;
    cfg.max_steps = 40;  // a fixed budget: the two trajectories must agree step by step
    const Vec<double> beta = Vec<double>::Constant(B, 0.3);
    const Vec<C> cbeta = beta.cast<C>();
    Field<double> fr(s.model, s.theta, s.drive, s.batch.y, beta);
    Field<C> fc(s.model, s.theta, s.drive, s.batch.y, cbeta);
    Mat<double> ur = Mat<double>::Zero(n, B);
    Mat<C> uc = Mat<C>::Zero(n, B);
    const RelaxResult rr = relax(fr, ur, cfg);
    const RelaxResult rc = relax(fc, uc, cfg);
    CHECK(rr.steps == rc.steps);
    // Imaginary parts stay exactly zero: every operation maps (x, 0) to (y, 0).
    CHECK(uc.imag().cwiseAbs().maxCoeff() == 0.0);
    // Map and RK4: real parts agree to rounding: different summation orders in the real/complex GEMM kernels
    // and the overflow-safe complex logistic differ by a few ulps per step, and a contracting
    // map does not amplify them: 1e-13 absolute on O(1) states.
    // Dopri5 alone: its step-size controller may round a step differently (the complex error norm
    // takes |z| = sqrt(re² + 0²)), after which the two trajectories differ by local truncation
    // errors, bounded by the error tolerance (atol 1e-8 × the few steps of 40): 1e-9.
    // Anderson: the same few-ulp differences pass through its regularised 5 x 5 solves, whose
    // condition number can reach 1/(10 eps) ≈ 5e14 in principle; measured < 1e-13, 1e-10 allowed.
    const double tol = solver == Solver::dopri5 ? 1e-9 : solver == Solver::anderson ? 1e-10 : 1e-13;
    CHECK((uc.real() - ur).cwiseAbs().maxCoeff() < tol);
    CHECK((rr.residual - rc.residual).cwiseAbs().maxCoeff() < tol);
  }
}

TEST_CASE("RK4 converges with order 4 (halving dt divides the error by about 16)") {
  const Setup s = setup("mlp_2-256", 90.0, 2, 3);
  const Index n = s.model.net.neurons;
  const Vec<double> beta = Vec<double>::Constant(2, 0.5);
  Field<double> f(s.model, s.theta, s.drive, s.batch.y, beta);
  const double T = 2.0;
  auto integrate = [&](double dt) {
    Mat<double> u = Mat<double>::Zero(n, 2);
    RelaxConfig cfg;
    cfg.solver = Solver::rk4;
    cfg.dt = dt;
    cfg.max_steps = std::lround(T / dt);
    (void)relax(f, u, cfg);
    return u;
  };
  const Mat<double> ref = integrate(0.2 / 64);  // its own error is 64⁴ ≈ 1.7e7 times smaller than dt = 0.2's
  const double e1 = (integrate(0.2) - ref).cwiseAbs().maxCoeff();
  const double e2 = (integrate(0.1) - ref).cwiseAbs().maxCoeff();
  const double e3 = (integrate(0.05) - ref).cwiseAbs().maxCoeff();
  MESSAGE("RK4 errors at T=2: dt=0.2 " << e1 << ", 0.1 " << e2 << ", 0.05 " << e3);
  // Asymptotically e(dt)/e(dt/2) = 2⁴ = 16; the next term of the error expansion changes the
  // ratio by O(dt) relative, a few units at these dt.
  CHECK(e1 / e2 == doctest::Approx(16).epsilon(0.2));
  CHECK(e2 / e3 == doctest::Approx(16).epsilon(0.1));
  CHECK(e3 > 1e-13);  // still far above rounding, so the ratio measures truncation error
}

TEST_CASE("map residual convention and status with a fixed budget") {
  const Setup s = setup("loop_mnist", 90.0, 2, 9);
  const Vec<double> beta = Vec<double>::Zero(2);
  Field<double> f(s.model, s.theta, s.drive, s.batch.y, beta);
  Mat<double> u = Mat<double>::Zero(s.model.net.neurons, 2);
  RelaxConfig cfg;
  cfg.max_steps = 5;
  Mat<double> prev = u;
  for (int k = 0; k < 4; ++k) {
    Mat<double> next(u.rows(), u.cols());
    f.map(prev, next);
    prev = next;
  }
  const RelaxResult r = relax(f, u, cfg);
  CHECK(r.steps == 5);
  CHECK(r.field_evals == 5);
  // Reported residual = size of the last update ‖u_5 − u_4‖∞ per column.
  for (Index j = 0; j < 2; ++j) CHECK(r.residual[j] == doctest::Approx((u - prev).col(j).cwiseAbs().maxCoeff()));
  CHECK(r.count(RelaxStatus::max_steps) == 2);  // 5 steps from zero are far from 1e-3
}

TEST_CASE("diverging complex relaxations are detected, zeroed, frozen and counted") {
  const Setup s = setup("mlp_2-256", 90.0, 4, 2);
  const Index n = s.model.net.neurons;
  // Free fixed point first.
  Mat<double> u0 = Mat<double>::Zero(n, 4);
  {
    const Vec<double> z = Vec<double>::Zero(4);
    Field<double> f(s.model, s.theta, s.drive, s.batch.y, z);
    RelaxConfig cfg;
    cfg.max_steps = 500;
    cfg.tol = 1e-9;
    REQUIRE(relax(f, u0, cfg).converged() == 4);
  }
  // Columns 0, 2: moderate nudges; columns 1, 3: |β| = 1e4, which drives states across the
  // sigmoid's complex poles (4z − 2 = iπ(2k+1)) and out of any bounded region.
  Vec<C> beta(4);
  beta << C(0.05, 0.02), C(0, 1e4), C(-0.05, 0.02), C(-1e4, 1e4);
  Field<C> f(s.model, s.theta, s.drive, s.batch.y, beta);
  Mat<C> u = u0.cast<C>();
  RelaxConfig cfg;
  cfg.max_steps = 60;
  cfg.diverge_threshold = 1e3;
  const RelaxResult r = relax(f, u, cfg);
  CHECK(r.status[0] != RelaxStatus::diverged);
  CHECK(r.status[2] != RelaxStatus::diverged);
  CHECK(r.status[1] == RelaxStatus::diverged);
  CHECK(r.status[3] == RelaxStatus::diverged);
  CHECK(r.diverged() == 2);
  CHECK(u.allFinite());  // nothing non-finite escapes
  CHECK(u.col(1).cwiseAbs().maxCoeff() == 0.0);
  CHECK(std::isfinite(r.max_residual()));
  // The healthy columns are exactly what they would be without the diverging neighbours.
  Vec<C> b2(2);
  b2 << beta[0], beta[2];
  Mat<double> d2(n, 2), y2(s.batch.y.rows(), 2);
  d2 << s.drive.col(0), s.drive.col(2);
  y2 << s.batch.y.col(0), s.batch.y.col(2);
  Field<C> f2(s.model, s.theta, d2, y2, b2);
  Mat<C> u2(n, 2);
  u2 << u0.col(0).cast<C>(), u0.col(2).cast<C>();
  (void)relax(f2, u2, cfg);
  CHECK((u2.col(0) - u.col(0)).cwiseAbs().maxCoeff() < 1e-12);
  CHECK((u2.col(1) - u.col(2)).cwiseAbs().maxCoeff() < 1e-12);
}

TEST_CASE("parse_solver names the flag on bad input") {
  CHECK(parse_solver("dopri5") == Solver::dopri5);
  CHECK(parse_solver("anderson") == Solver::anderson);
  CHECK_THROWS_WITH(parse_solver("euler"), doctest::Contains("--solver"));
}

TEST_CASE("Anderson: columns stop at their own step, and compacting the working set keeps every column's fixed point") {
  // 16 columns (the working set is compacted when half of them have stopped, from 8 columns up):
  // each column must end at the map's fixed point (within 2e-9, as above) with its own residual
  // ≤ tol, and columns must stop at different steps (else compaction was not exercised).
  for (double angle : {0.0, 90.0}) {
    CAPTURE(angle);
    const Setup s = setup("mlp_2-256", angle, 16, 23);
    const Index n = s.model.net.neurons, B = 16;
    const Vec<double> beta = Vec<double>::Constant(B, 0.2);
    const Mat<double> zero = Mat<double>::Zero(n, B);
    RelaxResult r;
    const Mat<double> u_map = relax_with<double>(s, beta, Solver::map, zero);
    const Mat<double> u_aa = relax_with<double>(s, beta, Solver::anderson, zero, &r);
    CHECK((u_aa - u_map).cwiseAbs().maxCoeff() < 2e-9);
    CHECK(r.max_residual() <= 1e-11);
    const auto [lo, hi] = std::minmax_element(r.col_steps.begin(), r.col_steps.end());
    CHECK(*hi == r.steps);
    // Compaction happened (twice: at 8 and at 4 live columns) only if at least 12 columns stopped
    // before the last step.
    CHECK(std::count_if(r.col_steps.begin(), r.col_steps.end(), [&](long k) { return k < r.steps; }) >= 12);
    CHECK(*lo < *hi);
    CHECK(r.field_evals == r.steps);  // one evaluation per step, whatever field computed it
    Field<double> f(s.model, s.theta, s.drive, s.batch.y, beta);
    CHECK(residual(f, u_aa).maxCoeff() < 1e-10);  // the held states are equilibria, not transients
  }
}

TEST_CASE("Anderson keeps a truncated complex relaxation holomorphic in beta (Cauchy-Riemann)") {
  // hEP's contour integral needs the state after T steps to be a holomorphic function of β. With
  // bilinear (non-conjugated) products each Anderson step is the analytic continuation of the real
  // one, so f(β) = u_T(β) satisfies ∂f/∂(Re β) = −i ∂f/∂(Im β). Central differences with h = 1e-5
  // in double: truncation ~h² × (third derivative) ≈ 1e-10, rounding ~1e-16/h ≈ 1e-11; a Hermitian
  // least squares breaks the identity at O(1). The map is checked as the reference.
  const Setup s = setup("mlp_2-256", 90.0, 2, 31);
  const Index n = s.model.net.neurons, B = 2;
  const Vec<double> zero = Vec<double>::Zero(B);
  const Mat<C> start = relax_with<double>(s, zero, Solver::map, Mat<double>::Zero(n, B)).cast<C>();
  for (Solver solver : {Solver::map, Solver::anderson}) {
    CAPTURE(std::string(to_string(solver)));
    auto f = [&](C beta) {
      const Vec<C> b = Vec<C>::Constant(B, beta);
      Field<C> field(s.model, s.theta, s.drive, s.batch.y, b);
      Mat<C> u = start;
      RelaxConfig cfg;
      cfg.solver = solver;
      cfg.max_steps = 12;  // truncated: far from the nudged fixed point
      (void)relax(field, u, cfg);
      return u;
    };
    const C b0 = std::polar(0.4, M_PI / 3);
    const double h = 1e-5;
    const Mat<C> d_re = (f(b0 + h) - f(b0 - h)) / (2 * h);
    const Mat<C> d_im = (f(b0 + C(0, h)) - f(b0 - C(0, h))) / (2 * h);
    const Mat<C> cr = d_re + C(0, 1) * d_im;  // zero for a holomorphic function
    CAPTURE(cr.cwiseAbs().maxCoeff());
    CHECK(d_re.cwiseAbs().maxCoeff() > 1e-2);  // the state does depend on β
    CHECK(cr.cwiseAbs().maxCoeff() < 1e-6 * d_re.cwiseAbs().maxCoeff());
  }
}

