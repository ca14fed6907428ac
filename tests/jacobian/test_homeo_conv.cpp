// Homeostasis on a convolutional network (jacobian.hpp: homeo_at_states): H depends on the state,
// the loss is taken at the free states held constant, and its gradient (a complex step through the
// parameter VJP) matches central finite differences; the exact mode is ½‖H − Hᵀ‖²_F / n of the
// dense H at each state; a symmetric pairing (B = K, transposed dense pair) has zero loss and
// gradient; the probes depend on the sample's index in the batch only, not on how it is split.
#include <doctest/doctest.h>

#include "helpers.hpp"

using namespace hepsim;
using namespace hepsim::testing;

namespace {

struct ConvCase {
  Model model = tiny_cnn();
  Vec<double> theta;
  Mat<double> s;  // activated states, 3 samples
};

ConvCase conv_case(double angle) {
  ConvCase c;
  c.theta = random_theta<double>(c.model.net, 5);
  apply_angle<double>(c.model.net, c.theta, angle);
  const Network& net = c.model.net;
  const RandomBatch batch = random_batch(net, 3, 8);
  Mat<double> drive(net.neurons, 3), u = Mat<double>::Zero(net.neurons, 3);
  input_drive<double>(net, c.theta, batch.x, drive);
  Field<double> f(c.model, c.theta, drive, batch.y, Vec<double>::Zero(3));
  RelaxConfig cfg;
  cfg.max_steps = 2000;
  cfg.tol = 1e-12;
  REQUIRE(relax(f, u, cfg).converged() == 3);
  c.s.resize(net.neurons, 3);
  activate<double>(c.model.activation, u, c.s);
  return c;
}

// The dense H at state column j, one JVP per basis vector.
Mat<double> dense_h(const Network& net, const Vec<double>& theta, const Mat<double>& s, Index j) {
  const Index n = net.neurons;
  const Mat<double> states = s.col(j).replicate(1, n);
  ConvCache<double> cache;
  linearize<double>(net, theta, states, cache);
  Mat<double> H = Mat<double>::Zero(n, n);
  add_jvp<double>(net, theta, states, cache, Mat<double>::Identity(n, n), H);
  return H;
}

}  // namespace

TEST_CASE("conv homeostasis: the gradient at fixed states and probes matches central differences (double)") {
  const ConvCase c = conv_case(60.0);
  const Network& net = c.model.net;
  const Vec<double> mask = recurrent_mask(net);
  for (bool exact : {false, true}) {
    CAPTURE(exact);
    const double lambda = 1.3;
    const Vec<double> start = Vec<double>::LinSpaced(net.n_params, -1, 1);
    Vec<double> grad = start;
    const Estimate est = homeo_at_states<double>(net, c.theta, c.s, 4, exact, 11, 2, 0, lambda, &grad);
    CHECK(est.value > 1e-3);  // asymmetric at 60°
    const Vec<double> fd = lambda * central_differences(c.theta, [&](const Vec<double>& th) {
                             return homeo_at_states<double>(net, th, c.s, 4, exact, 11, 2, 0, 1.0, nullptr).value;
                           }, 1e-5);
    // The complex step is exact to rounding; central differences carry O(step²) truncation and
    // rounding of ~1e-10 relative: the brief's 1e-6 leaves room for both and none for a missing
    // second-order term of the pooling (which changes the gradient at the 1e-2 level).
    CHECK(rel_err(Vec<double>(grad - start), fd) < 1e-6);
    // Biases, input kernels and the readout do not change H: exactly untouched.
    CHECK((grad - start).cwiseProduct(Vec<double>::Ones(net.n_params) - mask).cwiseAbs().maxCoeff() == 0.0);
  }
}

TEST_CASE("conv homeostasis: the exact mode is ½‖H − Hᵀ‖²_F / n of the dense H, averaged over the states") {
  const ConvCase c = conv_case(60.0);
  const Network& net = c.model.net;
  double want = 0;
  for (Index j = 0; j < 3; ++j) {
    const Mat<double> H = dense_h(net, c.theta, c.s, j);
    want += 0.5 * (H - H.transpose()).squaredNorm() / static_cast<double>(net.neurons) / 3;
  }
  const Estimate exact = homeo_at_states<double>(net, c.theta, c.s, 0, true, 0, 0, 0, 1.0, nullptr);
  CHECK(exact.value == doctest::Approx(want).epsilon(1e-12));
  // Hutchinson with many probes lies within 3 standard errors of it (fixed seed: deterministic).
  const Estimate hut = homeo_at_states<double>(net, c.theta, c.s, 400, false, 3, 0, 0, 1.0, nullptr);
  CHECK(hut.std_error > 0);
  CHECK(std::abs(hut.value - want) < 3 * hut.std_error);
}

TEST_CASE("conv homeostasis: zero loss and gradient for B = K and a transposed dense pair, and split-independent probes") {
  const ConvCase c = conv_case(0.0);
  const Network& net = c.model.net;
  // Each probe's ℓ(ε) = εᵀ(HᵀH − HH)ε vanishes at symmetric H; its gradient for one probe does not
  // (only its mean), so the zero gradient is checked in the exact mode (the basis as probes).
  const Estimate est = homeo_at_states<double>(net, c.theta, c.s, 3, false, 1, 0, 0, 1.0, nullptr);
  CHECK(std::abs(est.value) < 1e-12);
  Vec<double> grad = Vec<double>::Zero(net.n_params);
  const Estimate ex = homeo_at_states<double>(net, c.theta, c.s, 0, true, 1, 0, 0, 1.0, &grad);
  CHECK(std::abs(ex.value) < 1e-12);
  CHECK(grad.cwiseAbs().maxCoeff() < 1e-10);
  // Samples 1 and 2 evaluated alone (first = 1) give what they contribute to the whole batch.
  const ConvCase a = conv_case(60.0);
  const Estimate all = homeo_at_states<double>(net, a.theta, a.s, 3, false, 1, 4, 0, 1.0, nullptr);
  const Estimate head = homeo_at_states<double>(net, a.theta, a.s.leftCols(1), 3, false, 1, 4, 0, 1.0, nullptr);
  const Estimate tail = homeo_at_states<double>(net, a.theta, a.s.rightCols(2), 3, false, 1, 4, 1, 1.0, nullptr);
  CHECK(all.value == doctest::Approx((head.value + 2 * tail.value) / 3).epsilon(1e-12));
}
