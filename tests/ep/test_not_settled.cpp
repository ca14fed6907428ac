// Phases that do not settle in the estimators and in training (SPEC 2.5, issue 11): a sample
// whose nudged phase cycles has no estimate (its error vector is zero, counted apart from
// divergence); in training its free phase counts as not converged (and as cycling), and its
// nudged phase contributes nothing to the gradient but is counted.
#include <doctest/doctest.h>

#include "../common.hpp"
#include "ep/train.hpp"

using namespace hepsim;
using namespace hepsim::testing;

TEST_CASE("a cycling nudged phase leaves its sample without an estimate, counted as cycling") {
  const Model m = pair_model();  // the synchronous map of this pair has a period-2 orbit
  const Vec<double> theta = pair_theta(m.net, -3, 1.5, 1.4);
  const Index B = 4;
  const Mat<double> x = Mat<double>::Ones(1, B), y = Mat<double>::Identity(2, B);
  RelaxConfig free_cfg;
  free_cfg.max_steps = 150;  // training's T1, a fixed budget
  const FreeState<double> fs = free_phase<double>(m, theta, x, y, free_cfg);
  REQUIRE(fs.relax.count(RelaxStatus::cycling) == B);
  for (int N : {1, 2, 4}) {
    CAPTURE(N);
    EstimatorConfig cfg;
    cfg.N = N;
    cfg.beta = 0.05;
    cfg.nudged.max_steps = 20;  // training's T2: the orbit is seen within it
    const EstimateResult<double> est = ep_estimate<double>(m, theta, fs, cfg);
    CHECK(est.n_cycling == B);
    CHECK(est.n_diverged == 0);
    for (RelaxStatus s : est.status) CHECK(s == RelaxStatus::cycling);
    CHECK(est.v.cwiseAbs().maxCoeff() == 0.0);
  }
  // The damped map settles the same pair: every estimate exists.
  RelaxConfig damped = free_cfg;
  damped.dt = 0.5;
  const FreeState<double> fd = free_phase<double>(m, theta, x, y, damped);
  REQUIRE(fd.relax.converged() == B);
  EstimatorConfig cfg;
  cfg.N = 2;
  cfg.nudged = damped;
  cfg.nudged.max_steps = 60;
  const EstimateResult<double> est = ep_estimate<double>(m, theta, fd, cfg);
  CHECK(est.n_cycling == 0);
  CHECK(est.v.cwiseAbs().minCoeff() > 0);
}

TEST_CASE("training counts cycling free phases as not converged and drops samples whose nudged phase cycles") {
  const Model m = pair_model();
  const Index B = 4;
  const Mat<double> x = Mat<double>::Ones(1, B), y = Mat<double>::Identity(2, B);
  for (double dt : {1.0, 0.5}) {
    CAPTURE(dt);
    TrainConfig cfg;
    cfg.N = 2;
    cfg.free.max_steps = 150;
    cfg.free.dt = dt;
    cfg.nudged = cfg.free;
    cfg.nudged.max_steps = 20;
    cfg.batch_size = B;
    const Vec<double> theta0 = pair_theta(m.net, -3, 1.5, 1.4);
    Trainer<double> t(m, cfg, theta0);
    const auto st = t.step(x, y, 0, 1);
    const Index k = m.net.readout_w_offset;  // kernels and biases come first
    if (dt == 1.0) {
      CHECK(st.not_converged == B);
      CHECK(st.cycling == B);
      CHECK(st.nudged_cycling == B);
      CHECK(st.diverged == 0);
      // No sample contributed an error vector: only the readout (its direct gradient at the
      // valid free states) moved. (A sample whose free phase diverged moves nothing: test_cli_audits.)
      CHECK(t.theta().head(k) == theta0.head(k));
      CHECK(t.theta().tail(t.theta().size() - k) != theta0.tail(t.theta().size() - k));
    } else {  // the damped map settles: every sample contributes
      CHECK(st.cycling == 0);
      CHECK(st.nudged_cycling == 0);
      CHECK(t.theta().head(k) != theta0.head(k));
    }
  }
}
