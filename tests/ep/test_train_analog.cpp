// Training on an analog substrate (ep/train.cpp with sim/analog): the dynamics see the device's
// weights, the optimizer moves the nominal (shadow) ones; state noise is keyed per sample, so a
// noisy step does not depend on the threads.
#include <doctest/doctest.h>

#include <set>

#include "../common.hpp"
#include "ep/train.hpp"

using namespace hepsim;
using namespace hepsim::testing;

namespace {

TrainConfig small_config(int threads) {
  TrainConfig cfg;
  cfg.N = 4;
  cfg.beta = 0.4;
  cfg.free.max_steps = 40;
  cfg.nudged = cfg.free;
  cfg.nudged.max_steps = 15;
  cfg.batch_size = 6;
  cfg.threads = threads;
  cfg.optimizer.lr = 0.05;
  cfg.probe_size = 0;
  return cfg;
}

}  // namespace

TEST_CASE("quantized weights: the dynamics see at most 2^b levels while the shadow weights move") {
  const Model m = make_model("mlp_2-256");
  const Vec<double> theta0 = init_params<double>(m.net, 5, 45);
  const RandomBatch b = random_batch(m.net, 6, 5);
  TrainConfig cfg = small_config(1);
  cfg.device.weight_bits = 3;
  cfg.device.weight_clip = 0.15;
  Trainer<double> t(m, cfg, theta0);
  const Vec<double> q0 = t.device_theta();
  for (long k = 0; k < 3; ++k) (void)t.step(b.x, b.y, k, 3);
  const Index sub = m.net.readout_w_offset;
  // The nominal weights moved by small steps (far below a level's spacing of 0.3/7 ≈ 0.043) …
  const double moved = (t.theta() - theta0).head(sub).cwiseAbs().maxCoeff();
  CHECK(moved > 0);
  // … and the device still has at most 8 levels.
  const Vec<double> q = t.device_theta();
  std::set<double> levels(q.data(), q.data() + sub);
  CHECK(levels.size() <= 8);
  // Some weights crossed a level boundary: the device follows the shadow weights.
  CHECK((q - q0).head(sub).cwiseAbs().maxCoeff() > 0);
  // The gradient is the device's: the step differs from the same step on the nominal weights.
  Trainer<double> ideal(m, small_config(1), theta0);
  (void)ideal.step(b.x, b.y, 0, 3);
  Trainer<double> quant(m, cfg, theta0);
  (void)quant.step(b.x, b.y, 0, 3);
  CHECK((ideal.theta() - quant.theta()).norm() > 1e-6);
}

TEST_CASE("state noise in training: keyed per sample (independent of threads), and it changes the step") {
  const Model m = make_model("mlp_2-256");
  const Vec<double> theta0 = init_params<double>(m.net, 8, 30);
  const RandomBatch b = random_batch(m.net, 6, 8);
  auto noisy = [](int threads) {
    TrainConfig cfg = small_config(threads);
    for (RelaxConfig* rc : {&cfg.free, &cfg.nudged}) {
      rc->noise.sigma = 0.04;
      rc->noise.seed = 3;
    }
    return cfg;
  };
  Trainer<double> one(m, noisy(1), theta0), two(m, noisy(2), theta0), plain(m, small_config(1), theta0);
  (void)one.step(b.x, b.y, 4, 10);
  (void)two.step(b.x, b.y, 4, 10);
  (void)plain.step(b.x, b.y, 4, 10);
  const double step = (one.theta() - theta0).norm();
  // The same noise per sample on 1 or 2 threads: equal up to the rounding of the chunk sums.
  CHECK((one.theta() - two.theta()).norm() <= 1e-12 * step);
  CHECK((one.theta() - plain.theta()).norm() > 1e-3 * step);
  // Another step index draws other noise.
  Trainer<double> later(m, noisy(1), theta0);
  (void)later.step(b.x, b.y, 5, 10);
  CHECK((later.theta() - one.theta()).norm() > 1e-6 * step);
  // Evaluation of a noisy network is repeatable (the same noise per test sample).
  Dataset test;
  test.n = 6;
  test.height = 28;
  test.width = 28;
  test.channels = 1;
  test.classes = 10;
  test.images.resize(6 * 784);
  for (std::size_t i = 0; i < test.images.size(); ++i) test.images[i] = static_cast<std::uint8_t>((i * 37) % 251);
  test.labels = {0, 1, 2, 3, 4, 5};
  CHECK(one.evaluate(test).loss == one.evaluate(test).loss);
}

TEST_CASE("online hEP in training: with settled phase points its step is holomorphic EP's") {
  const Model m = make_model("mlp_2-256");
  const Vec<double> theta0 = init_params<double>(m.net, 6, 0);
  const RandomBatch b = random_batch(m.net, 4, 6);
  auto config = [](Algo algo) {
    TrainConfig cfg;
    cfg.algo = algo;
    cfg.N = 4;
    cfg.beta = 0.1;
    cfg.periods = 4;
    cfg.free.max_steps = 20000;
    cfg.free.tol = 1e-12;
    cfg.nudged.max_steps = 200;
    cfg.batch_size = 4;
    cfg.probe_size = 0;
    cfg.optimizer.lr = 1;  // θ ← θ − grad: the step is the gradient
    cfg.optimizer.momentum = 0;
    return cfg;
  };
  Trainer<double> online(m, config(Algo::online), theta0), hep(m, config(Algo::hep), theta0);
  const auto st = online.step(b.x, b.y, 0, 1);
  (void)hep.step(b.x, b.y, 0, 1);
  CHECK(st.diverged == 0);
  const Vec<double> a = online.theta() - theta0, h = hep.theta() - theta0;
  CHECK(a.dot(h) / (a.norm() * h.norm()) > 0.9999);
}
