// The estimators of SPEC 3 on a convolutional network (tiny_cnn, double): with symmetric feedback
// the EP response equals RBP's δ, the iterations reach the dense solves (per-sample Jacobians),
// RBP's parameter gradient matches central differences of the loss at the re-relaxed fixed point,
// holomorphic EP's error falls like |β|^N, and truncated BPTT converges to RBP.
#include <doctest/doctest.h>

#include <cmath>

#include "../common.hpp"
#include "ep/estimators.hpp"

using namespace hepsim;
using namespace hepsim::testing;

namespace {

RelaxConfig converged(double tol) {
  RelaxConfig cfg;
  cfg.max_steps = 200000;
  cfg.tol = tol;
  cfg.report_tol = 10 * tol;
  return cfg;
}

struct Case {
  Model m = tiny_cnn();
  Vec<double> theta;
  RandomBatch batch;
  FreeState<double> fs;
};

Case make_case(double angle, std::uint64_t seed) {
  Case c;
  c.theta = init_params<double>(c.m.net, seed, angle);
  Rng rng(seed, Stream::init, 77);
  for (const ParamBlock& b : c.m.net.blocks)
    if (b.bias)
      for (Index i = 0; i < b.size(); ++i) c.theta[b.offset + i] = 0.1 * rng.normal();
  c.batch = random_batch(c.m.net, 3, seed + 1);
  c.fs = free_phase<double>(c.m, c.theta, c.batch.x, c.batch.y, converged(1e-15));
  REQUIRE(c.fs.relax.converged() == 3);
  return c;
}

double cosine(const Mat<double>& a, const Mat<double>& b) {
  return (a.array() * b.array()).sum() / (a.norm() * b.norm());
}

}  // namespace

TEST_CASE("conv estimators: symmetric feedback gives v* = δ, and EP's response has cosine > 0.99999 with δ") {
  const Case c = make_case(0.0, 3);
  const Mat<double> delta = rbp_dense<double>(c.m, c.theta, c.fs.u, c.fs.y);
  const Mat<double> vstar = exact_response_dense<double>(c.m, c.theta, c.fs.u, c.fs.y);
  // Symmetric J_G(s*) ⇒ the two dense solves agree to their conditioning (≲ 1e3 · 1e-16).
  CHECK(rel_err(vstar, delta) < 1e-10);
  EstimatorConfig cfg;
  cfg.N = 2;
  cfg.beta = 0.01;
  cfg.nudged = converged(1e-14);
  const auto est = ep_estimate<double>(c.m, c.theta, c.fs, cfg);
  REQUIRE(est.n_diverged == 0);
  CHECK(cosine(est.v, delta) > 0.99999);
  // Independent feedback kernels: the response is biased.
  const Case a = make_case(90.0, 3);
  CHECK(rel_err(exact_response_dense<double>(a.m, a.theta, a.fs.u, a.fs.y),
                rbp_dense<double>(a.m, a.theta, a.fs.u, a.fs.y)) > 1e-3);
}

TEST_CASE("conv estimators: iterations reach the dense solves, truncated BPTT converges to RBP") {
  const Case c = make_case(90.0, 5);
  const IterationConfig it{100000, 1e-15};
  const Mat<double> delta = rbp_dense<double>(c.m, c.theta, c.fs.u, c.fs.y);
  CHECK(rel_err(rbp_adjoint<double>(c.m, c.theta, c.fs.u, c.fs.y, it).v, delta) < 1e-12);
  CHECK(rel_err(exact_response<double>(c.m, c.theta, c.fs.drive, c.fs.u, c.fs.y, it).v,
                exact_response_dense<double>(c.m, c.theta, c.fs.u, c.fs.y)) < 1e-12);
  const Vec<double> g_rbp = parameter_gradient<double>(c.m, c.theta, c.fs, delta);
  double last = 1e300;
  for (long T : {2L, 5L, 10L, 20L, 40L}) {
    const BpttResult<double> b = truncated_bptt<double>(c.m, c.theta, c.fs.x, c.fs.drive, c.fs.u, c.fs.y, T);
    const double e = rel_err(b.grad, g_rbp);
    CAPTURE(T);
    CAPTURE(e);
    CHECK(e < last);
    last = e;
    CHECK(rel_err(b.error_sum, rbp_adjoint<double>(c.m, c.theta, c.fs.u, c.fs.y, IterationConfig{T, 0}).v) < 1e-12);
  }
  CHECK(last < 1e-6);
}

TEST_CASE("conv estimators: the RBP gradient matches central differences of the loss at the re-relaxed fixed point") {
  for (double angle : {0.0, 90.0}) {
    CAPTURE(angle);
    const Case c = make_case(angle, 7);
    const Mat<double> delta = rbp_dense<double>(c.m, c.theta, c.fs.u, c.fs.y);
    const Vec<double> g = parameter_gradient<double>(c.m, c.theta, c.fs, delta);
    auto loss = [&](const Vec<double>& th) {
      const FreeState<double> f = free_phase<double>(c.m, th, c.batch.x, c.batch.y, converged(1e-15));
      Mat<double> s(f.u.rows(), f.u.cols());
      activate<double>(c.m.activation, f.u, s);
      const Layer& o = c.m.net.layers[static_cast<std::size_t>(c.m.net.out)];
      return loss_per_sample<double>(c.m.net, th, c.m.loss, s.middleRows(o.offset, o.size), c.batch.y).mean();
    };
    Rng rng(11, Stream::probes);
    // One direction per parameter block (a wrong block cannot hide behind the others).
    for (const ParamBlock& b : c.m.net.blocks) {
      CAPTURE(b.name);
      Vec<double> dir = Vec<double>::Zero(c.m.net.n_params);
      for (Index i = 0; i < b.size(); ++i) dir[b.offset + i] = rng.normal();
      dir.normalize();
      // h = 1e-5: truncation ≈ 1e-11, re-relaxation to 1e-15 ≈ 1e-10, rounding ≈ 1e-11; the
      // directional derivatives are ≳ 1e-4 here: 1e-5 relative (with an absolute floor).
      const double h = 1e-5;
      const double fd = (loss(c.theta + h * dir) - loss(c.theta - h * dir)) / (2 * h);
      CHECK(std::abs(fd - g.dot(dir)) < 1e-5 * std::abs(fd) + 1e-9);
    }
  }
}

TEST_CASE("conv estimators: holomorphic EP's error against v* falls like |beta|^N") {
  const Case c = make_case(90.0, 9);
  const Mat<double> vstar = exact_response_dense<double>(c.m, c.theta, c.fs.u, c.fs.y);
  const std::vector<double> betas = {0.04, 0.02, 0.01};
  for (int N : {1, 2, 3}) {
    std::vector<double> err;
    for (double beta : betas) {
      EstimatorConfig cfg;
      cfg.N = N;
      cfg.beta = beta;
      cfg.nudged = converged(1e-15);
      const auto est = ep_estimate<double>(c.m, c.theta, c.fs, cfg);
      REQUIRE(est.n_diverged == 0);
      err.push_back(rel_err(est.v, vstar));
    }
    // Halving |β| divides the error by about 2^N (the next Taylor term shifts the slope by O(|β|)).
    const double slope = std::log(err[0] / err[2]) / std::log(betas[0] / betas[2]);
    CAPTURE(N);
    MESSAGE("N=" << N << " slope " << slope << " errors " << err[0] << " … " << err[2]);
    CHECK(std::abs(slope - N) < 0.3);
  }
}
