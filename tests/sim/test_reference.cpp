// The golden tiny network (../shared/reference/tiny_network.json, computed independently in
// NumPy, float64): fixed points, activated states, nudge vectors, losses and the weight angle.
// Its README: "a correct implementation reproduces every number to about 1e-10 (relative)".
#include <doctest/doctest.h>

#include "../reference.hpp"

using namespace hepsim;
using namespace hepsim::testing;

TEST_CASE("tiny reference: free fixed point, activations, nudge vector, losses, weight angle") {
  const TinyReference ref = load_tiny_reference();
  const Network& net = ref.model.net;
  const Index B = ref.batch;
  Mat<double> drive(net.neurons, B);
  input_drive<double>(net, ref.theta, ref.x, drive);
  const Vec<double> beta = Vec<double>::Zero(B);
  Field<double> f(ref.model, ref.theta, drive, ref.y, beta);
  Mat<double> u = Mat<double>::Zero(net.neurons, B);
  RelaxConfig cfg;
  cfg.max_steps = 10000;
  cfg.tol = 1e-14;  // the reference relaxed to 1e-14
  const RelaxResult r = relax(f, u, cfg);
  REQUIRE(r.converged() == B);

  const Mat<double> u_star = ref.samples("u_star");
  CHECK(rel_err(u, u_star) < 1e-10);
  Mat<double> s(net.neurons, B);
  activate<double>(Activation::sigmoid, u, s);
  CHECK(rel_err(s, ref.samples("s_star")) < 1e-10);

  // e = ∂ℓ/∂s at s*: zero outside `out`.
  Mat<double> e = Mat<double>::Zero(net.neurons, B), work;
  const Layer& o = net.layers[static_cast<std::size_t>(net.out)];
  add_loss_gradient<double>(net, ref.theta, Loss::cross_entropy, s.middleRows(o.offset, o.size), ref.y,
                            Vec<double>::Ones(B), e.middleRows(o.offset, o.size), work);
  CHECK(rel_err(e, ref.samples("nudge_e")) < 1e-10);

  const Vec<double> l = loss_per_sample<double>(net, ref.theta, Loss::cross_entropy, s.middleRows(o.offset, o.size), ref.y);
  for (Index b = 0; b < B; ++b) CHECK(l[b] == doctest::Approx(ref.j["samples"][b]["loss"].get<double>()).epsilon(1e-10));
  CHECK(l.mean() == doctest::Approx(ref.j["batch_mean_loss"].get<double>()).epsilon(1e-10));
  CHECK(weight_angle_deg(net, ref.theta) == doctest::Approx(ref.j["weight_angle_deg"].get<double>()).epsilon(1e-10));

  // The same fixed point by the two ODE solvers (residual 1e-13 → distance ≤ 1e-13/(1−ρ)).
  for (Solver solver : {Solver::rk4, Solver::dopri5}) {
    Mat<double> v = Mat<double>::Zero(net.neurons, B);
    RelaxConfig c2 = cfg;
    c2.solver = solver;
    c2.tol = 1e-13;
    REQUIRE(relax(f, v, c2).converged() == B);
    CHECK(rel_err(v, u_star) < 1e-10);
  }
}
