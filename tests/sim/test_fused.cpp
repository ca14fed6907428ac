// The fused map engine (sim/fused_map.hpp) computes the same relaxation as the per-edge path:
// float and complex<float> states, free and nudged (real and complex β), sigmoid and dsilu,
// architectures with grouped layers, gathered (non-contiguous) inputs and a layer without
// recurrent input; divergence is detected and contained the same way.
#include <doctest/doctest.h>

#include <complex>

#include "../common.hpp"
#include "sim/sim.hpp"

using namespace hepsim;
using namespace hepsim::testing;
using CF = std::complex<float>;

namespace {

// h1 has no recurrent input (k = 0); h2 reads {h1, out} and out reads {h1, h3}: both gathered.
Model gather_model() {
  const std::string json = R"({"name": "gather", "layers": [{"name": "h1", "size": 8}, {"name": "h2", "size": 6},
      {"name": "h3", "size": 5}, {"name": "out", "size": "classes"}],
    "edges": [{"pre": "in", "post": "h1"}, {"pre": "h1", "post": "h2"}, {"pre": "out", "post": "h2", "type": "dense_nobias"},
              {"pre": "h2", "post": "h3"}, {"pre": "h3", "post": "out"}, {"pre": "h1", "post": "out", "type": "dense_nobias"}]})";
  Model m;
  m.net = compile(parse_architecture(json, "gather", 12, 4));
  return m;
}

// Float parameters (seed, angle), a random batch of B samples and its input drive.
struct Problem {
  Vec<float> theta;
  Mat<float> x, y, drive;
};
Problem problem(const Network& net, std::uint64_t seed, double angle, Index B, std::uint64_t batch_seed) {
  Problem p;
  p.theta = init_params<float>(net, seed, angle);
  const RandomBatch batch = random_batch(net, B, batch_seed);
  p.x = batch.x.cast<float>();
  p.y = batch.y.cast<float>();
  p.drive.resize(net.neurons, B);
  input_drive<float>(net, p.theta, p.x, p.drive);
  return p;
}

template <class S>
struct Run {
  Mat<S> u;
  RelaxResult r;
};

template <class S>
Run<S> run(const Model& m, const Vec<float>& theta, const Mat<float>& drive, const Mat<float>& y, const Vec<S>& beta,
           const Mat<S>& start, bool fused, long steps, double threshold = 1e6) {
  Field<S> f(m, theta, drive, y, beta);
  Run<S> out{start, {}};
  RelaxConfig cfg;
  cfg.max_steps = steps;
  cfg.fused = fused;
  cfg.diverge_threshold = threshold;
  out.r = relax(f, out.u, cfg);
  return out;
}

}  // namespace

TEST_CASE("fused map = per-edge map, float and complex<float>, real and complex nudges") {
  struct Case {
    Model model;
    const char* name;
  };
  std::vector<Case> cases;
  cases.push_back({make_model("mlp_2-256"), "mlp_2-256"});
  cases.push_back({make_model("loop_mnist"), "loop_mnist"});
  cases.push_back({gather_model(), "gather"});
  // Batch sizes around the register blocks (at most 13 real / 12 complex columns, split into
  // blocks of nearly equal width): one column, one full block, just above (two blocks), the
  // training chunk (25 = 13 + 12), 27 = 3 x 9, and 50 = 13 + 13 + 12 + 12.
  for (Case& c : cases) {
    for (Activation act : {Activation::sigmoid, Activation::dsilu})
    for (Index B : {1, 12, 13, 14, 25, 27, 50}) {
      if (c.name != std::string("mlp_2-256") && B != 13) continue;  // widths once, on the big network
      CAPTURE(c.name);
      CAPTURE(std::string(to_string(act)));
      CAPTURE(B);
      c.model.activation = act;
      const Network& net = c.model.net;
      const Problem pr = problem(net, 4, 60.0, B, 21);
      const Vec<float>& theta = pr.theta;
      const Mat<float>& drive = pr.drive;
      const Mat<float>& y = pr.y;
      // Free phase, then a real nudge from its end state.
      const Vec<float> zero = Vec<float>::Zero(B);
      const Mat<float> u0 = Mat<float>::Zero(net.neurons, B);
      const auto a = run<float>(c.model, theta, drive, y, zero, u0, true, 60);
      const auto b = run<float>(c.model, theta, drive, y, zero, u0, false, 60);
      // Different summation orders in float (eps 6e-8) over K ≤ 266 terms of size ≤ 1, through 60
      // contracting steps: 1e-5 absolute on O(1) states is ample and far below any real bug.
      CHECK((a.u - b.u).cwiseAbs().maxCoeff() < 1e-5);
      CHECK(a.r.steps == b.r.steps);
      CHECK(a.r.field_evals == b.r.field_evals);
      CHECK((a.r.residual - b.r.residual).cwiseAbs().maxCoeff() < 1e-5);
      Vec<float> beta(B);
      for (Index j = 0; j < B; ++j) beta[j] = 0.3f * (j % 2 ? 1.f : -1.f);
      const auto na = run<float>(c.model, theta, drive, y, beta, b.u, true, 20);
      const auto nb = run<float>(c.model, theta, drive, y, beta, b.u, false, 20);
      CHECK((na.u - nb.u).cwiseAbs().maxCoeff() < 1e-5);
      CHECK((na.u - b.u).cwiseAbs().maxCoeff() > 1e-3);  // the nudge did something
      if (act == Activation::sigmoid) {
        Vec<CF> cb(B);
        for (Index j = 0; j < B; ++j) cb[j] = std::polar(0.2f, static_cast<float>(2 * M_PI * (j + 1) / 7));
        const Mat<CF> start = b.u.cast<CF>();
        const auto ca = run<CF>(c.model, theta, drive, y, cb, start, true, 20);
        const auto cc = run<CF>(c.model, theta, drive, y, cb, start, false, 20);
        CHECK((ca.u - cc.u).cwiseAbs().maxCoeff() < 1e-5);
        CHECK(ca.u.imag().cwiseAbs().maxCoeff() > 1e-3);
        CHECK((ca.r.residual - cc.r.residual).cwiseAbs().maxCoeff() < 1e-5);
      }
    }
  }
}

TEST_CASE("fused map: diverging complex columns are zeroed, frozen and counted as in the per-edge path") {
  const Model m = make_model("mlp_2-256");
  const Index B = 4;
  const Problem pr = problem(m.net, 2, 90.0, B, 3);
  const Vec<float>& theta = pr.theta;
  const Mat<float>& drive = pr.drive;
  const Mat<float>& y = pr.y;
  Vec<CF> beta(B);
  beta << CF(0.05f, 0.02f), CF(0, 1e4f), CF(-0.05f, 0.02f), CF(-1e4f, 1e4f);
  const Mat<CF> start = Mat<CF>::Zero(m.net.neurons, B);
  const auto a = run<CF>(m, theta, drive, y, beta, start, true, 60, 1e3);
  const auto b = run<CF>(m, theta, drive, y, beta, start, false, 60, 1e3);
  for (Index j = 0; j < B; ++j) CHECK(a.r.status[static_cast<std::size_t>(j)] == b.r.status[static_cast<std::size_t>(j)]);
  CHECK(a.r.diverged() == 2);
  CHECK(a.u.allFinite());
  CHECK(a.u.col(1).cwiseAbs().maxCoeff() == 0.0f);
  CHECK((a.u.col(0) - b.u.col(0)).cwiseAbs().maxCoeff() < 1e-5);
}

TEST_CASE("per-sample tolerance: each column stops at its own step, held at the state it had then") {
  const Model m = make_model("mlp_2-256");
  const Index B = 30;
  const Problem pr = problem(m.net, 6, 90.0, B, 8);
  const Vec<float>& theta = pr.theta;
  const Mat<float>& drive = pr.drive;
  const Mat<float>& y = pr.y;
  const Vec<float> zero = Vec<float>::Zero(B);
  for (bool fused : {true, false}) {
    CAPTURE(fused);
    Field<float> f(m, theta, drive, y, zero);
    Mat<float> u = Mat<float>::Zero(m.net.neurons, B);
    RelaxConfig cfg;
    cfg.max_steps = 300;
    cfg.tol = 1e-4;
    cfg.fused = fused;
    const RelaxResult r = relax(f, u, cfg);
    CHECK(r.converged() == B);
    CHECK(r.max_residual() <= 1e-4);
    long lo = r.steps, hi = 0;
    for (long k : r.col_steps) {
      lo = std::min(lo, k);
      hi = std::max(hi, k);
    }
    CHECK(hi == r.steps);  // the phase ended when the last column stopped
    CHECK(lo < hi);        // and the columns stopped at different steps
    // A column is held at the state of the step where it stopped: the fixed-step relaxation with
    // exactly that many steps gives the same column (to float rounding between the engines).
    for (Index j : {Index{0}, Index{7}, Index{19}}) {
      Mat<float> v = Mat<float>::Zero(m.net.neurons, B);
      RelaxConfig fixed;
      fixed.max_steps = r.col_steps[static_cast<std::size_t>(j)];
      fixed.fused = fused;
      (void)relax(f, v, fixed);
      CHECK((v.col(j) - u.col(j)).cwiseAbs().maxCoeff() < 1e-6);
    }
  }
}
