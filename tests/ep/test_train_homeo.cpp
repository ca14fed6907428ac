// Homeostasis in a training step of a conv network (ep/train.cpp, SPEC 4): the penalty's gradient
// is taken at the free states of the batch, and with homeo-samples m < B at m of them spread
// evenly over the batch (places 1 and 3 of 4 for m = 2), each weighing 1/m; the choice and the
// probes do not depend on the number of threads, and m = B is the default bit for bit.
#include <doctest/doctest.h>

#include "../common.hpp"
#include "ep/train.hpp"

using namespace hepsim;
using namespace hepsim::testing;

namespace {

TrainConfig homeo_config(double lambda, Index samples, int threads) {
  TrainConfig cfg;
  cfg.N = 2;
  cfg.beta = 0.1;
  cfg.free.max_steps = 2000;
  cfg.free.tol = 1e-12;
  cfg.nudged = cfg.free;
  cfg.batch_size = 4;
  cfg.threads = threads;
  cfg.homeostasis = lambda;
  cfg.homeo.draws = 3;
  cfg.homeo.samples = samples;
  cfg.optimizer.lr = 1;  // θ ← θ − grad: the step is the gradient
  cfg.optimizer.momentum = 0;
  return cfg;
}

Vec<double> stepped(const Model& m, const Vec<double>& theta0, const RandomBatch& b, const TrainConfig& cfg) {
  Trainer<double> t(m, cfg, theta0);
  (void)t.step(b.x, b.y, 7, 10);
  return t.theta();
}

}  // namespace

TEST_CASE("conv homeostasis in training: homeo-samples takes m states spread over the batch, independent of threads") {
  const Model m = tiny_cnn();
  const Network& net = m.net;
  const Vec<double> theta0 = init_params<double>(net, 3, 60.0);
  const RandomBatch b = random_batch(net, 4, 11);
  const double lambda = 0.5;
  // The penalty's part of the step: the step with λ minus the step without it.
  const Vec<double> plain = stepped(m, theta0, b, homeo_config(0, 0, 1));
  const Vec<double> two = stepped(m, theta0, b, homeo_config(lambda, 2, 1));
  const Vec<double> got = plain - two;
  // Expected: λ/2 times the per-state gradient at places 1 and 3 (probes keyed by step 7 and place).
  const TrainConfig cfg = homeo_config(lambda, 2, 1);
  const FreeState<double> fs = free_phase<double>(m, theta0, b.x, b.y, cfg.free);
  REQUIRE(fs.relax.converged() == 4);
  Mat<double> s(net.neurons, 4);
  activate<double>(m.activation, fs.u, s);
  Vec<double> want = Vec<double>::Zero(net.n_params);
  for (Index i : {1, 3})
    (void)homeo_at_states<double>(net, theta0, s.col(i), 3, false, cfg.seed, 7, i, lambda / 2, &want);
  REQUIRE(want.norm() > 1e-6);  // angle 60°: H is not symmetric, the penalty pulls
  CHECK((got - want).norm() <= 1e-9 * want.norm());
  // Places 0 and 2 give another gradient: the choice is not "the first m".
  Vec<double> other = Vec<double>::Zero(net.n_params);
  for (Index i : {0, 1})
    (void)homeo_at_states<double>(net, theta0, s.col(i), 3, false, cfg.seed, 7, i, lambda / 2, &other);
  CHECK((got - other).norm() > 1e-3 * want.norm());
  // Two threads choose the same states and probes.
  const Vec<double> two_threads = stepped(m, theta0, b, homeo_config(lambda, 2, 2));
  CHECK((two_threads - two).norm() <= 1e-12 * two.norm());
  // m = B is the default (every state), bit for bit.
  CHECK(stepped(m, theta0, b, homeo_config(lambda, 4, 2)) == stepped(m, theta0, b, homeo_config(lambda, 0, 2)));
}
