// Convolutional networks relax (SPEC 2.1, 2.5): the field of a tiny CNN is the sum of its edges'
// terms at the right layers (checked at the fixed point against the edge operators applied by
// hand), and the map, Anderson, RK4 and Dormand–Prince reach the same fixed point, for real and
// complex nudges.
#include <doctest/doctest.h>

#include <complex>

#include "../common.hpp"
#include "sim/sim.hpp"

using namespace hepsim;
using namespace hepsim::testing;
using C = std::complex<double>;

namespace {

struct Setup {
  Model model = tiny_cnn();
  Vec<double> theta;
  RandomBatch batch;
  Mat<double> drive;
};

Setup setup(double angle, std::uint64_t seed) {
  Setup s;
  s.theta = init_params<double>(s.model.net, seed, angle);
  // Nonzero biases, so that the drive's bias terms are exercised.
  for (const ParamBlock& b : s.model.net.blocks)
    if (b.bias) s.theta.segment(b.offset, b.size()).setConstant(0.1);
  s.batch = random_batch(s.model.net, 3, seed + 1);
  s.drive.resize(s.model.net.neurons, 3);
  input_drive<double>(s.model.net, s.theta, s.batch.x, s.drive);
  return s;
}

template <class S>
Mat<S> relax_with(const Setup& s, const Vec<S>& beta, Solver solver) {
  Field<S> f(s.model, s.theta, s.drive, s.batch.y, beta);
  Mat<S> u = Mat<S>::Zero(s.model.net.neurons, 3);
  RelaxConfig cfg;
  cfg.solver = solver;
  cfg.max_steps = 100000;
  cfg.tol = 1e-12;
  const RelaxResult r = relax(f, u, cfg);
  CHECK(r.converged() == 3);
  return u;
}

}  // namespace

TEST_CASE("conv network: the fixed point satisfies u = G(σ(u), x) built edge by edge") {
  const Setup s = setup(90.0, 5);
  const Network& net = s.model.net;
  const Mat<double> u = relax_with<double>(s, Vec<double>::Zero(3), Solver::map);
  Mat<double> sig(net.neurons, 3);
  activate<double>(Activation::dsilu, u, sig);
  const Layer &c1 = net.layers[0], &c2 = net.layers[1], &out = net.layers[2];
  Mat<double> g = Mat<double>::Zero(net.neurons, 3), z;
  ConvEdgeWork<double> work;
  auto K = [&](int e) { return Mat<double>(kernel(net, s.theta, e)); };
  auto b = [&](int e) {
    return Vec<double>(
        s.theta.segment(net.edges[static_cast<std::size_t>(e)].b_offset, net.edges[static_cast<std::size_t>(e)].rows));
  };
  // c1 = P(conv(x) + b) + feedback from c2;  c2 = P(conv(s_c1) + b) + W s_out;  out = W s_c2 + b
  Mat<double> t1 = Mat<double>::Zero(c1.size, 3), t2 = Mat<double>::Zero(c2.size, 3);
  conv_edge_apply<double>(net.edges[0].conv, K(0), b(0), s.batch.x, t1, z, work);
  conv_feedback_apply<double>(net.edges[2].conv, K(2), sig.middleRows(c1.offset, c1.size),
                              sig.middleRows(c2.offset, c2.size), t1, z, work);
  conv_edge_apply<double>(net.edges[1].conv, K(1), b(1), sig.middleRows(c1.offset, c1.size), t2, z, work);
  t2 += K(4) * sig.middleRows(out.offset, out.size);
  g.middleRows(c1.offset, c1.size) = t1;
  g.middleRows(c2.offset, c2.size) = t2;
  g.middleRows(out.offset, out.size) = (K(3) * sig.middleRows(c2.offset, c2.size)).colwise() + b(3);
  // The map stopped at ‖G − u‖∞ ≤ 1e-12; the bias moved through the pooling (P(v + c) = P(v) + c)
  // adds rounding of order 1e-16 per term.
  CHECK((g - u).cwiseAbs().maxCoeff() < 1e-11);
  CHECK(u.norm() > 1.0);  // a nontrivial fixed point
}

TEST_CASE("conv network: map, Anderson, RK4 and Dormand-Prince reach the same fixed point") {
  for (double angle : {0.0, 90.0}) {
    CAPTURE(angle);
    const Setup s = setup(angle, 7);
    // Each solver stops at a residual ≤ 1e-12; with the map's contraction rate ρ ≲ 0.5 here the
    // distance to the fixed point is ≤ 1e-12 / (1 − ρ): 1e-10 leaves a wide margin.
    const Mat<double> ref = relax_with<double>(s, Vec<double>::Zero(3), Solver::map);
    for (Solver solver : {Solver::anderson, Solver::rk4, Solver::dopri5}) {
      CAPTURE(to_string(solver));
      CHECK((relax_with<double>(s, Vec<double>::Zero(3), solver) - ref).cwiseAbs().maxCoeff() < 1e-10);
    }
    // Complex nudges (hEP contour points): the map and Dormand–Prince agree too.
    const Vec<C> beta = (Vec<C>(3) << C(0.1, 0.0), C(0.0, 0.2), C(-0.05, 0.05)).finished();
    const Mat<C> um = relax_with<C>(s, beta, Solver::map), ud = relax_with<C>(s, beta, Solver::dopri5);
    CHECK((um - ud).cwiseAbs().maxCoeff() < 1e-10);
    CHECK((um - ref.cast<C>()).cwiseAbs().maxCoeff() > 1e-4);  // the nudge moved the state
  }
}

namespace {
template <class S>
S bilinear(const Mat<S>& a, const Mat<S>& b) {
  return (a.array() * b.array()).sum();
}
}  // namespace

TEST_CASE_TEMPLATE("conv network: the linearisation of G (JVP, VJP, parameter VJP) is exact", S, double,
                   std::complex<double>) {
  const Setup st = setup(90.0, 9);
  const Network& net = st.model.net;
  const Index n = net.neurons, B = 3;
  const Mat<S> s = random_matrix<S>(n, B, 1), v = random_matrix<S>(n, B, 2), w = random_matrix<S>(n, B, 3);
  auto G = [&](const Mat<S>& state) {
    Mat<S> g = Mat<S>::Zero(n, B);
    add_recurrent<S>(net, st.theta, state, g);
    return g;
  };
  ConvCache<S> cache;
  linearize<S>(net, st.theta, s, cache);
  Mat<S> jv = Mat<S>::Zero(n, B), jtw = Mat<S>::Zero(n, B);
  add_jvp<S>(net, st.theta, s, cache, v, jv);
  add_vjp<S>(net, st.theta, s, cache, w, jtw);
  // Central differences (ε = 1e-5: truncation and rounding both ≈ 1e-10 relative).
  const double eps = 1e-5;
  const Mat<S> fd = (G(s + S(eps) * v) - G(s - S(eps) * v)) / S(2 * eps);
  CHECK((jv - fd).norm() < 1e-7 * fd.norm());
  CHECK(std::abs(bilinear<S>(w, jv) - bilinear<S>(jtw, v)) < 1e-12 * w.norm() * jv.norm());
  // At angle 0 every pair is exactly transposed (B = K, K_fb = K_ffᵀ): J_G(s) is symmetric.
  const Setup sym = setup(0.0, 9);
  ConvCache<S> c0;
  linearize<S>(net, sym.theta, s, c0);
  Mat<S> jv0 = Mat<S>::Zero(n, B), jw0 = Mat<S>::Zero(n, B);
  add_jvp<S>(net, sym.theta, s, c0, v, jv0);
  add_jvp<S>(net, sym.theta, s, c0, w, jw0);
  CHECK(std::abs(bilinear<S>(w, jv0) - bilinear<S>(v, jw0)) < 1e-12 * w.norm() * jv0.norm());
}

TEST_CASE("conv network: the parameter VJP is the gradient of ⟨v, C(θ) + G(s, θ)⟩, biases and input conv included") {
  const Setup st = setup(90.0, 13);
  const Network& net = st.model.net;
  const Index n = net.neurons, B = 3;
  const Mat<double> s = random_matrix<double>(n, B, 4), v = random_matrix<double>(n, B, 5);
  auto phi = [&](const Vec<double>& theta) {
    Mat<double> g(n, B);
    input_drive<double>(net, theta, st.batch.x, g);
    add_recurrent<double>(net, theta, s, g);
    return bilinear<double>(v, g);
  };
  ConvCache<double> cache;
  linearize<double>(net, st.theta, s, cache);
  Vec<double> grad = Vec<double>::Zero(net.n_params);
  add_param_vjp<double>(net, st.theta, st.batch.x, s, cache, v, 0.5, grad);
  grad *= 2.0;  // the weight scales the gradient
  // Each block on its own: a wrong block would hide in a global directional derivative.
  for (const ParamBlock& b : net.blocks) {
    if (b.edge < 0) continue;  // the readout is not part of G
    CAPTURE(b.name);
    Vec<double> dir = Vec<double>::Zero(net.n_params);
    dir.segment(b.offset, b.size()) = random_matrix<double>(b.size(), 1, 100 + static_cast<std::uint64_t>(b.offset));
    const double eps = 1e-5;
    const double fd = (phi(st.theta + eps * dir) - phi(st.theta - eps * dir)) / (2 * eps);
    CHECK(std::abs(grad.dot(dir) - fd) < 1e-7 * std::max(1.0, std::abs(fd)));
  }
}
