// The batched conv engine (sim/conv/conv_map.hpp) computes the same relaxation as the reference
// per-edge path: float and complex<float> states, free and nudged (real and complex β), dsilu
// and sigmoid, pooled and unpooled conv pairs, "valid" convolutions, dense edges beside them and
// batches that span several GEMM chunks; it also matches the double-precision reference, and
// per-sample stopping and divergence behave as in the reference path.
#include <doctest/doctest.h>

#include <complex>

#include "../common.hpp"
#include "sim/conv/conv_map.hpp"
#include "sim/sim.hpp"

using namespace hepsim;
using namespace hepsim::testing;
using CF = std::complex<float>;

namespace {

// The paper's CNN topology in miniature: 16x16 → c1 4x8x8 → c2 6x4x4 → out 5x1x1 ("valid" 4 → 2,
// pooled to 1), forward convs with biases and bias-free feedback convs of the same shapes.
Model paper_like() {
  Model m;
  m.net = compile(parse_architecture(R"({"name": "paper_like", "layers": [
      {"name": "c1", "shape": [4, 8, 8]}, {"name": "c2", "shape": [6, 4, 4]}, {"name": "out", "shape": [5, 1, 1]}],
    "edges": [{"pre": "in", "post": "c1", "type": "conv"},
              {"pre": "c1", "post": "c2", "type": "conv"}, {"pre": "c2", "post": "c1", "type": "conv_feedback"},
              {"pre": "c2", "post": "out", "type": "conv", "padding": "valid"},
              {"pre": "out", "post": "c2", "type": "conv_feedback"}]})",
                                     "paper_like", 2 * 16 * 16, 3, MapShape{2, 16, 16}));
  m.activation = Activation::dsilu;
  return m;
}

// An unpooled conv pair (a ↔ b, 4x4 maps, 5x5 kernels), an unpooled "valid" pair (b ↔ c, 4x4 →
// 2x2), a pooled valid conv to a 1x1 `out`, and a dense loop out ↔ h beside the convolutions.
Model mixed() {
  Model m;
  m.net = compile(parse_architecture(R"({"name": "mixed", "layers": [
      {"name": "a", "shape": [3, 4, 4]}, {"name": "b", "shape": [5, 4, 4]}, {"name": "out", "shape": [4, 1, 1]},
      {"name": "h", "size": 7}, {"name": "c", "shape": [2, 2, 2]}],
    "edges": [{"pre": "in", "post": "a", "type": "conv"},
              {"pre": "a", "post": "b", "type": "conv", "kernel": 5, "pool": "none"},
              {"pre": "b", "post": "a", "type": "conv_feedback"},
              {"pre": "b", "post": "c", "type": "conv", "padding": "valid", "pool": "none"},
              {"pre": "c", "post": "b", "type": "conv_feedback"},
              {"pre": "b", "post": "out", "type": "conv", "padding": "valid"},
              {"pre": "out", "post": "h"}, {"pre": "h", "post": "out", "type": "dense_nobias"}]})",
                                     "mixed", 8 * 8, 4, MapShape{1, 8, 8}));
  m.activation = Activation::dsilu;
  return m;
}

struct Problem {
  Vec<float> theta;
  Mat<float> y, drive;
};
Problem problem(const Network& net, double angle, Index B) {
  Problem p;
  p.theta = init_params<float>(net, 3, angle);
  for (const ParamBlock& b : net.blocks)
    if (b.bias) p.theta.segment(b.offset, b.size()).setConstant(0.1f);  // the drive's bias terms
  const RandomBatch batch = random_batch(net, B, 11);
  p.y = batch.y.cast<float>();
  p.drive.resize(net.neurons, B);
  input_drive<float>(net, p.theta, batch.x.cast<float>(), p.drive);
  return p;
}

template <class S>
std::pair<Mat<S>, RelaxResult> run(const Model& m, const Problem& p, const Vec<S>& beta, const Mat<S>& start,
                                   bool engine, long steps, double tol = 0) {
  Field<S> f(m, p.theta, p.drive, p.y, beta);
  Mat<S> u = start;
  RelaxConfig cfg;
  cfg.max_steps = steps;
  cfg.fused = engine;
  cfg.tol = tol;
  const RelaxResult r = relax(f, u, cfg);
  return {u, r};
}

}  // namespace

TEST_CASE("conv engine = per-edge conv map, float and complex<float>, real and complex nudges") {
  for (const char* which : {"paper_like", "mixed"}) {
    for (Activation act : {Activation::dsilu, Activation::sigmoid})
      for (Index B : {1, 19}) {  // 19: several GEMM chunks with a remainder on every layer
        Model m = std::string(which) == "paper_like" ? paper_like() : mixed();
        m.activation = act;
        CAPTURE(which);
        CAPTURE(std::string(to_string(act)));
        CAPTURE(B);
        const Network& net = m.net;
        const Problem p = problem(net, 60.0, B);
        Field<float> probe(m, p.theta, p.drive, p.y, Vec<float>::Zero(B));
        RelaxConfig on;
        REQUIRE(detail::conv_map_applies(probe, on));
        const Vec<float> zero = Vec<float>::Zero(B);
        const Mat<float> u0 = Mat<float>::Zero(net.neurons, B);
        const auto [ua, ra] = run<float>(m, p, zero, u0, true, 40);
        const auto [ub, rb] = run<float>(m, p, zero, u0, false, 40);
        // Float (eps 6e-8) sums of at most 9·6 + 9·5 = 99 products of O(1) terms per step, in a
        // different order in the two paths: about sqrt(99)·6e-8 ≈ 6e-7 per step, not amplified by
        // the contracting steps; 1e-5 on O(1) states leaves a factor > 10 over that and is far
        // below what a wrong index or a missing term does (a missing kernel flip or col2im tap fails it).
        CHECK((ua - ub).cwiseAbs().maxCoeff() < 1e-5);
        CHECK(ua.cwiseAbs().maxCoeff() > 0.1);
        CHECK(ra.steps == rb.steps);
        CHECK((ra.residual - rb.residual).cwiseAbs().maxCoeff() < 1e-5);
        Vec<float> beta(B);
        for (Index j = 0; j < B; ++j) beta[j] = 0.5f * (j % 2 ? 1.f : -1.f);
        const auto [na, nra] = run<float>(m, p, beta, ub, true, 20);
        const auto [nb, nrb] = run<float>(m, p, beta, ub, false, 20);
        CHECK((na - nb).cwiseAbs().maxCoeff() < 1e-5);
        CHECK((na - ub).cwiseAbs().maxCoeff() > 1e-3);  // the nudge did something
        Vec<CF> cb(B);
        for (Index j = 0; j < B; ++j) cb[j] = std::polar(0.5f, static_cast<float>(2 * M_PI * (j + 1) / 7));
        const Mat<CF> start = ub.cast<CF>();
        const auto [ca, cra] = run<CF>(m, p, cb, start, true, 20);
        const auto [cc, crc] = run<CF>(m, p, cb, start, false, 20);
        CHECK((ca - cc).cwiseAbs().maxCoeff() < 1e-5);
        CHECK(ca.imag().cwiseAbs().maxCoeff() > 1e-3);
        CHECK((cra.residual - crc.residual).cwiseAbs().maxCoeff() < 1e-5);
      }
  }
}

TEST_CASE("conv engine: the float free phase reaches the double reference's fixed point") {
  const Model m = paper_like();
  const Index B = 5;
  const Problem p = problem(m.net, 30.0, B);
  const auto [u, r] = run<float>(m, p, Vec<float>::Zero(B), Mat<float>::Zero(m.net.neurons, B), true, 400, 1e-6);
  CHECK(r.converged() == B);
  const Vec<double> theta = p.theta.cast<double>();
  const Mat<double> drive = p.drive.cast<double>(), y = p.y.cast<double>();
  Field<double> f(m, theta, drive, y, Vec<double>::Zero(B));
  Mat<double> ud = Mat<double>::Zero(m.net.neurons, B);
  RelaxConfig cfg;
  cfg.max_steps = 2000;
  cfg.tol = 1e-12;
  REQUIRE(relax(f, ud, cfg).converged() == B);
  // At a residual of 1e-6 with a contraction rate ρ < 1, the distance to the fixed point is at
  // most 1e-6/(1 − ρ); float rounding adds ~1e-6. 1e-4 bounds both for ρ ≤ 0.98.
  CHECK((u.cast<double>() - ud).cwiseAbs().maxCoeff() < 1e-4);
}

TEST_CASE("conv engine: per-sample stopping holds each column, diverging complex columns are zeroed") {
  const Model m = paper_like();
  const Index B = 12;
  Problem p = problem(m.net, 90.0, B);
  p.theta *= 2.5f;  // slower, sample-dependent contraction: the columns settle at different steps
  const auto [u, r] = run<float>(m, p, Vec<float>::Zero(B), Mat<float>::Zero(m.net.neurons, B), true, 300, 1e-6);
  INFO(r.steps);
  REQUIRE(r.converged() == B);
  long lo = r.steps;
  for (long k : r.col_steps) lo = std::min(lo, k);
  CHECK(lo < r.steps);  // columns stopped at different steps
  for (Index j : {Index{0}, Index{5}, Index{11}}) {
    const auto [v, rv] = run<float>(m, p, Vec<float>::Zero(B), Mat<float>::Zero(m.net.neurons, B), true,
                                    r.col_steps[static_cast<std::size_t>(j)]);
    CHECK((v.col(j) - u.col(j)).cwiseAbs().maxCoeff() < 1e-6);
  }
  Vec<CF> beta = Vec<CF>::Constant(B, CF(0.05f, 0.02f));
  beta[3] = CF(0, 1e5f);
  beta[8] = CF(-1e5f, 1e5f);
  Field<CF> fa(m, p.theta, p.drive, p.y, beta), fb(m, p.theta, p.drive, p.y, beta);
  Mat<CF> a = u.cast<CF>(), b = a;
  RelaxConfig cfg;
  cfg.max_steps = 60;
  cfg.diverge_threshold = 1e3;
  const RelaxResult ra = relax(fa, a, cfg);
  cfg.fused = false;
  const RelaxResult rb = relax(fb, b, cfg);
  for (Index j = 0; j < B; ++j) CHECK(ra.status[static_cast<std::size_t>(j)] == rb.status[static_cast<std::size_t>(j)]);
  CHECK(ra.diverged() == 2);
  CHECK(a.allFinite());
  CHECK(a.col(3).cwiseAbs().maxCoeff() == 0.0f);
  CHECK((a.col(0) - b.col(0)).cwiseAbs().maxCoeff() < 1e-5);
}
