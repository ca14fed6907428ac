// Estimators against the golden tiny network (tests/data/reference/tiny_network.json, float64,
// computed independently): δ (RBP), v* (exact response), the N-point estimates for
// N ∈ {1,2,3,4,6} and |β| ∈ {0.05, 0.5}, and the parameter gradients. Its README: "a correct
// implementation reproduces every number to about 1e-10 (relative) in double precision".
#include <doctest/doctest.h>

#include "../reference.hpp"
#include "ep/estimators.hpp"

using namespace hepsim;
using namespace hepsim::testing;

namespace {

FreeState<double> reference_free_state(const TinyReference& ref) {
  RelaxConfig cfg;
  cfg.max_steps = 20000;
  cfg.tol = 1e-15;
  cfg.report_tol = 1e-13;
  FreeState<double> fs = free_phase<double>(ref.model, ref.theta, ref.x, ref.y, cfg);
  REQUIRE(fs.relax.max_residual() < 1e-13);
  return fs;
}

// The gradient blocks of the edges (no readout) and of the readout alone.
Vec<double> edges_part(const Network& net, const Vec<double>& g) { return g.head(net.readout_w_offset); }
Vec<double> readout_part(const Network& net, const Vec<double>& g) { return g.tail(net.n_params - net.readout_w_offset); }

}  // namespace

TEST_CASE("tiny reference: RBP adjoint and exact response, by iteration and by dense solve") {
  const TinyReference ref = load_tiny_reference();
  const FreeState<double> fs = reference_free_state(ref);
  const Mat<double> delta_ref = ref.samples("delta_rbp"), vstar_ref = ref.samples("v_star");
  CHECK(rel_err(rbp_dense<double>(ref.model, ref.theta, fs.u, fs.y), delta_ref) < 1e-10);
  CHECK(rel_err(exact_response_dense<double>(ref.model, ref.theta, fs.u, fs.y), vstar_ref) < 1e-10);
  const IterationConfig it{100000, 1e-15};
  const auto d = rbp_adjoint<double>(ref.model, ref.theta, fs.u, fs.y, it);
  CHECK(d.last_update <= 1e-15);
  CHECK(rel_err(d.v, delta_ref) < 1e-10);
  const auto v = exact_response<double>(ref.model, ref.theta, fs.drive, fs.u, fs.y, it);
  CHECK(rel_err(v.v, vstar_ref) < 1e-10);
  // At 60° mixing the asymmetry bias is visible: v* ≠ δ.
  CHECK(rel_err(vstar_ref, delta_ref) > 1e-2);
}

TEST_CASE("tiny reference: N-point estimators with converged nudged phases") {
  const TinyReference ref = load_tiny_reference();
  const FreeState<double> fs = reference_free_state(ref);
  for (double beta : {0.05, 0.5}) {
    for (int N : {1, 2, 3, 4, 6}) {
      EstimatorConfig cfg;
      cfg.N = N;
      cfg.beta = beta;
      cfg.nudged.max_steps = 20000;
      cfg.nudged.tol = 1e-15;
      cfg.nudged.report_tol = 1e-13;
      const EstimateResult<double> est = ep_estimate<double>(ref.model, ref.theta, fs, cfg);
      const std::string key = "N=" + std::to_string(N) + ",beta=" + (beta == 0.05 ? "0.05" : "0.5");
      CAPTURE(key);
      CHECK(est.n_diverged == 0);
      CHECK(est.relaxations == (N == 1 ? 1 : N / 2 + 1));
      // Residual 1e-13 on a(β) becomes ≈ 1e-13/|β| in the estimate: relative ≤ 1e-10 for |v| ~ 0.1.
      CHECK(rel_err(est.v, ref.estimate(key)) < 1e-10);
    }
  }
}

TEST_CASE("tiny reference: parameter gradients from delta and v*, and the readout gradient") {
  const TinyReference ref = load_tiny_reference();
  const Network& net = ref.model.net;
  const FreeState<double> fs = reference_free_state(ref);
  const Vec<double> g_rbp = parameter_gradient<double>(ref.model, ref.theta, fs, ref.samples("delta_rbp"));
  const Vec<double> g_ep = parameter_gradient<double>(ref.model, ref.theta, fs, ref.samples("v_star"));
  const Vec<double> want_rbp = ref.gradient("rbp_gradient", true);
  const Vec<double> want_ep = ref.gradient("ep_exact_gradient", true);
  CHECK(rel_err(edges_part(net, g_rbp), edges_part(net, want_rbp)) < 1e-10);
  CHECK(rel_err(edges_part(net, g_ep), edges_part(net, want_ep)) < 1e-10);
  CHECK(rel_err(readout_part(net, g_rbp), readout_part(net, want_rbp)) < 1e-10);
  CHECK(rel_err(readout_part(net, g_ep), readout_part(net, want_rbp)) < 1e-10);  // same readout term
}
