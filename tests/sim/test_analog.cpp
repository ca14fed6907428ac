// Analog substrates (SPEC 6, sim/analog/substrate.hpp): the noisy relaxation's statistics and
// convergence, time constants, the settle budget, device mismatch and quantization.
#include <doctest/doctest.h>

#include <cmath>
#include <set>

#include "../common.hpp"
#include "sim/sim.hpp"

using namespace hepsim;
using namespace hepsim::testing;

namespace {

// `out` driven by the input only: M(u) = c (the drive), so the noisy dynamics around the fixed
// point c are linear: du = rate (c − u) dt + σ dW, an Ornstein–Uhlenbeck process.
Model input_only_model(Index input = 6, Index classes = 10) {
  Model m;
  m.net = compile(parse_architecture(R"({"name": "ou", "layers": [{"name": "out", "size": "classes"}],
                                         "edges": [{"pre": "in", "post": "out"}]})",
                                     "ou.json", input, classes));
  return m;
}

// A batch of B random samples for `model` with weights of `seed` at `angle`, its drive and a nudge
// `nudge` for every column.
struct Batch {
  Model model;
  Vec<double> theta;
  RandomBatch b;
  Mat<double> drive;
  Vec<double> beta;
  Batch(Model m, Index B, std::uint64_t seed, double angle, double nudge) : model(std::move(m)) {
    theta = init_params<double>(model.net, seed, angle);
    b = random_batch(model.net, B, seed);
    drive.resize(model.net.neurons, B);
    input_drive<double>(model.net, theta, b.x, drive);
    beta = Vec<double>::Constant(B, nudge);
  }
};

Batch linear_problem(Index B, std::uint64_t seed) { return Batch(input_only_model(), B, seed, 90, 0); }

RelaxConfig noisy(Solver solver, double dt, double sigma, long steps) {
  RelaxConfig cfg;
  cfg.solver = solver;
  cfg.dt = dt;
  cfg.max_steps = steps;
  cfg.noise.sigma = sigma;
  cfg.noise.seed = 7;
  cfg.noise.key = 3;
  return cfg;
}

}  // namespace

TEST_CASE("state noise: the stationary variance around a stable linear fixed point is the OU prediction") {
  // Euler–Maruyama on du = r (c − u) dt + σ dW: e_{k+1} = (1 − r h) e_k + σ √h ξ_k, whose stationary
  // variance is σ² h / (1 − (1 − r h)²) = σ² / (r (2 − r h)) → σ²/(2r) (the OU value) as h → 0.
  // 10 neurons x 2,000 columns = 20,000 independent samples after a burn-in that forgets u = 0
  // (|1 − r h|^steps < 1e-12): the sample variance's relative standard error is sqrt(2/20,000) =
  // 1 %, so 5 % is a 5-sigma band; the mean is within 5 standard errors of c.
  const double sigma = 0.1;
  struct Case {
    Solver solver;
    double dt, rate;
    long steps;
  };
  for (const Case c : {Case{Solver::map, 1.0, 1.0, 5}, Case{Solver::map, 0.5, 1.0, 60}, Case{Solver::rk4, 0.1, 1.0, 400},
                       Case{Solver::rk4, 0.25, 2.0, 80}}) {
    CAPTURE(to_string(c.solver));
    CAPTURE(c.dt);
    CAPTURE(c.rate);
    const Batch p = linear_problem(2000, 5);
    Field<double> f(p.model, p.theta, p.drive, p.b.y, p.beta);
    Mat<double> u = Mat<double>::Zero(p.model.net.neurons, 2000);
    RelaxConfig cfg = noisy(c.solver, c.dt, sigma, c.steps);
    if (c.rate != 1.0) cfg.rate.assign(static_cast<std::size_t>(p.model.net.neurons), c.rate);
    const RelaxResult r = relax(f, u, cfg);
    CHECK(r.steps == c.steps);
    CHECK(r.diverged() == 0);
    const Mat<double> e = u - p.drive;
    const double N = static_cast<double>(e.size());
    const double mean = e.mean(), var = (e.array() - mean).square().sum() / (N - 1);
    const double predicted = sigma * sigma / (c.rate * (2 - c.rate * c.dt));
    CHECK(std::abs(var / predicted - 1) < 0.05);
    CHECK(std::abs(mean) < 5 * std::sqrt(predicted / N));
  }
}

TEST_CASE("state noise: a column's noise depends on its key, not on the columns it relaxes with — zero noise changes nothing") {
  const Batch p = linear_problem(6, 9);
  const Index n = p.model.net.neurons;
  RelaxConfig cfg = noisy(Solver::map, 0.5, 0.05, 30);
  cfg.noise.columns = {10, 11, 12, 13, 14, 15};
  Field<double> f(p.model, p.theta, p.drive, p.b.y, p.beta);
  Mat<double> u = Mat<double>::Zero(n, 6);
  (void)relax(f, u, cfg);
  // Columns 2..3 alone, with their keys: the same states bit for bit.
  const Mat<double> d2 = p.drive.middleCols(2, 2), y2 = p.b.y.middleCols(2, 2);
  const Vec<double> b2 = Vec<double>::Zero(2);
  Field<double> f2(p.model, p.theta, d2, y2, b2);
  Mat<double> u2 = Mat<double>::Zero(n, 2);
  RelaxConfig cfg2 = cfg;
  cfg2.noise.columns = {12, 13};
  (void)relax(f2, u2, cfg2);
  CHECK(u2 == u.middleCols(2, 2));
  // Another key, other noise.
  cfg2.noise.key = 4;
  Mat<double> u3 = Mat<double>::Zero(n, 2);
  (void)relax(f2, u3, cfg2);
  CHECK(u3 != u2);
  // σ = 0 is the deterministic damped map exactly (the noise's fields set or not).
  RelaxConfig quiet = cfg;
  quiet.noise.sigma = 0;
  RelaxConfig plain;
  plain.solver = Solver::map;
  plain.dt = 0.5;
  plain.max_steps = 30;
  Mat<double> a = Mat<double>::Zero(n, 6), b = a;
  (void)relax(f, a, quiet);
  (void)relax(f, b, plain);
  CHECK(a == b);
}

TEST_CASE("state noise: Euler–Maruyama converges strongly on a linear SDE (order at least 1/2)") {
  // du = (c − u) dt + σ dW from u = 0 to T = 1 by relax's Euler–Maruyama steps of size h. The
  // reference integrates the SAME Brownian paths: the test regenerates each column's increments
  // from relax's keyed generator (Rng(seed, noise, key, column), n ziggurat normals per step, σ √h ξ) and
  // refines each by Brownian bridges to steps of 2^-14, where it takes exact OU transitions of
  // the linear drift (e^{-δ}) with the fine increments (error O(2^-14) ≪ the errors measured).
  // Root-mean-square errors over 10 x 400 paths at h = 1/8 … 1/64: the fitted order must be at
  // least 1/2 (the strong order of Euler–Maruyama); with additive noise it is in fact 1.
  const double sigma = 0.5;
  const Index B = 400;
  const Batch p = linear_problem(B, 21);
  const Index n = p.model.net.neurons;
  const int fine_levels = 14;
  std::vector<double> hs, errs;
  for (int level = 3; level <= 6; ++level) {
    const long steps = 1L << level;
    const double h = 1.0 / static_cast<double>(steps);
    RelaxConfig cfg = noisy(Solver::rk4, h, sigma, steps);
    Field<double> f(p.model, p.theta, p.drive, p.b.y, p.beta);
    Mat<double> u = Mat<double>::Zero(n, B);
    (void)relax(f, u, cfg);
    const int refine = fine_levels - level;  // halvings of each coarse step
    const long sub = 1L << refine;
    const double hf = h / static_cast<double>(sub), decay = std::exp(-hf);
    Rng bridge(99, Stream::probes, static_cast<std::uint64_t>(level));
    double sq = 0;
    std::vector<double> xi(static_cast<std::size_t>(n)), w(static_cast<std::size_t>(sub) + 1);
    Mat<double> ref = Mat<double>::Zero(n, B);
    for (Index j = 0; j < B; ++j) {
      Rng rng(cfg.noise.seed, Stream::noise, cfg.noise.key, static_cast<std::uint64_t>(j));
      for (long k = 0; k < steps; ++k) {
        rng.fill_normal_ziggurat(xi.data(), xi.size());
        for (Index i = 0; i < n; ++i) {
          // The Brownian path over this step, pinned at 0 and the coarse increment √h ξ.
          w[0] = 0;
          w[static_cast<std::size_t>(sub)] = std::sqrt(h) * xi[static_cast<std::size_t>(i)];
          for (long span = sub; span > 1; span /= 2)
            for (long a = 0; a < sub; a += span) {
              const long mid = a + span / 2;
              const double dtm = static_cast<double>(span) * hf;
              w[static_cast<std::size_t>(mid)] = 0.5 * (w[static_cast<std::size_t>(a)] + w[static_cast<std::size_t>(a + span)]) +
                                                 std::sqrt(dtm / 4) * bridge.normal();
            }
          double e = ref(i, j) - p.drive(i, j);
          for (long m = 0; m < sub; ++m)
            e = decay * e + sigma * (w[static_cast<std::size_t>(m + 1)] - w[static_cast<std::size_t>(m)]);
          ref(i, j) = p.drive(i, j) + e;
        }
      }
    }
    sq = (u - ref).squaredNorm() / static_cast<double>(u.size());
    hs.push_back(h);
    errs.push_back(std::sqrt(sq));
  }
  // Least-squares slope of log err against log h.
  double mx = 0, my = 0;
  for (std::size_t k = 0; k < hs.size(); ++k) {
    mx += std::log(hs[k]) / static_cast<double>(hs.size());
    my += std::log(errs[k]) / static_cast<double>(hs.size());
  }
  double sxy = 0, sxx = 0;
  for (std::size_t k = 0; k < hs.size(); ++k) {
    sxy += (std::log(hs[k]) - mx) * (std::log(errs[k]) - my);
    sxx += (std::log(hs[k]) - mx) * (std::log(hs[k]) - mx);
  }
  const double order = sxy / sxx;
  CAPTURE(errs[0]);
  CAPTURE(errs.back());
  MESSAGE("Euler-Maruyama strong order " << order << ", rms errors " << errs[0] << " (h = 1/8) .. " << errs.back() << " (h = 1/64)");
  CHECK(order >= 0.5);
  CHECK(order <= 1.3);
  for (std::size_t k = 1; k < errs.size(); ++k) CHECK(errs[k] < errs[k - 1]);
}

TEST_CASE("time constants leave the fixed points unchanged, change the transients — the map refuses them") {
  const Batch p(make_model("mlp_2-256"), 3, 4, 60, 0.3);
  const Model& model = p.model;
  const Vec<double>& theta = p.theta;
  const Mat<double>& drive = p.drive;
  const Vec<double>& beta = p.beta;
  const RandomBatch& b = p.b;
  const std::vector<double> rate =
      time_constant_rates(model.net, {{"l1", 0.5}, {"out", 3.0}}, "--tau");
  CHECK(rate[0] == 2.0);                                                   // l1: 1/0.5
  CHECK(rate[static_cast<std::size_t>(model.net.layers[1].offset)] == 1.0);  // l2 not named
  for (Solver solver : {Solver::rk4, Solver::dopri5}) {
    CAPTURE(to_string(solver));
    Mat<double> fixed[2], early[2];
    for (int with = 0; with < 2; ++with) {
      Field<double> f(model, theta, drive, b.y, beta);
      RelaxConfig cfg;
      cfg.solver = solver;
      cfg.dt = 0.2;
      cfg.max_steps = 200000;
      cfg.tol = 1e-11;
      if (with) cfg.rate = rate;
      fixed[with] = Mat<double>::Zero(model.net.neurons, 3);
      const RelaxResult r = relax(f, fixed[with], cfg);
      CHECK(r.converged() == 3);
      cfg.tol = 0;
      cfg.max_steps = 5;
      early[with] = Mat<double>::Zero(model.net.neurons, 3);
      (void)relax(f, early[with], cfg);
    }
    // Both stop at a residual of 1e-11; the map contracts, so the states agree to ~1e-9.
    CHECK((fixed[0] - fixed[1]).cwiseAbs().maxCoeff() < 1e-8);
    CHECK((early[0] - early[1]).cwiseAbs().maxCoeff() > 1e-3);
  }
  Field<double> f(model, theta, drive, b.y, beta);
  Mat<double> u = Mat<double>::Zero(model.net.neurons, 3);
  RelaxConfig cfg;
  cfg.rate = rate;
  CHECK_THROWS_WITH_AS((void)relax(f, u, cfg), doctest::Contains("--tau"), InputError);
  CHECK_THROWS_WITH_AS((void)time_constant_rates(model.net, {{"l9", 1.0}}, "--tau"), doctest::Contains("unknown layer 'l9'"),
                       InputError);
  CHECK_THROWS_AS((void)time_constant_rates(model.net, {{"l1", 0.0}}, "--tau"), InputError);
  CHECK_THROWS_AS((void)time_constant_rates(model.net, {{"l1", 1.0}, {"l1", 2.0}}, "--tau"), InputError);
  cfg = RelaxConfig{};
  cfg.solver = Solver::dopri5;
  cfg.noise.sigma = 0.1;
  CHECK_THROWS_WITH_AS((void)relax(f, u, cfg), doctest::Contains("--solver"), InputError);
}

TEST_CASE("settle: a phase ends at its physical time — one not converged by then is counted") {
  const Batch p(make_model("mlp_2-256"), 4, 2, 0, 0);
  const Model& model = p.model;
  const Vec<double>& theta = p.theta;
  const Mat<double>& drive = p.drive;
  const Vec<double>& beta = p.beta;
  const RandomBatch& b = p.b;
  for (Solver solver : {Solver::map, Solver::rk4, Solver::dopri5, Solver::anderson}) {
    CAPTURE(to_string(solver));
    for (double T : {3.0, 4000.0}) {
      Field<double> f(model, theta, drive, b.y, beta);
      Mat<double> u = Mat<double>::Zero(model.net.neurons, 4);
      RelaxConfig cfg;
      cfg.solver = solver;
      cfg.dt = solver == Solver::map || solver == Solver::anderson ? 0.5 : 0.25;
      cfg.max_steps = 100000;
      cfg.tol = 1e-9;
      cfg.max_time = T;
      const RelaxResult r = relax(f, u, cfg);
      CAPTURE(T);
      if (T == 3.0) {  // far too short: every phase is used as it is and counted as not converged
        CHECK(r.t == doctest::Approx(3.0).epsilon(1e-12));
        CHECK(r.count(RelaxStatus::max_steps) == 4);
        if (solver != Solver::dopri5) CHECK(r.steps == static_cast<long>(3.0 / cfg.dt));
      } else {  // ample: the tolerance ends every phase first
        CHECK(r.converged() == 4);
        CHECK(r.t < T);
      }
    }
  }
}

TEST_CASE("device: quantized weights take at most 2^b values on [-w, w] — mismatch is seeded, per copy, and off at c = 0") {
  Model model = make_model("mlp_2-256");
  const Vec<double> theta = init_params<double>(model.net, 3, 0);  // angle 0: K_fb = K_ffᵀ exactly
  const Index sub = model.net.readout_w_offset;
  for (int bits : {1, 2, 3, 6}) {
    CAPTURE(bits);
    DeviceConfig dc;
    dc.weight_bits = bits;
    dc.weight_clip = 0.1;
    const Device dev(model.net, dc);
    Vec<double> d;
    dev.apply(theta, d);
    std::set<double> levels(d.data(), d.data() + sub);
    CHECK(levels.size() <= (std::size_t{1} << bits));
    CHECK(*levels.begin() >= -0.1);
    CHECK(*levels.rbegin() <= 0.1);
    CHECK(d.tail(model.net.n_params - sub) == theta.tail(model.net.n_params - sub));  // the readout is digital
    // Nearest level: within half a level spacing of the clipped value.
    const double spacing = 0.2 / (std::ldexp(1.0, bits) - 1);
    CHECK((d.head(sub) - theta.head(sub).cwiseMax(-0.1).cwiseMin(0.1)).cwiseAbs().maxCoeff() <= 0.5 * spacing + 1e-15);
  }
  DeviceConfig dc;
  dc.mismatch = 0.1;
  dc.seed = 11;
  Vec<double> a, b, c;
  Device(model.net, dc).apply(theta, a);
  Device(model.net, dc).apply(theta, b);
  CHECK(a == b);  // reproducible from the seed
  dc.seed = 12;
  Device(model.net, dc).apply(theta, c);
  CHECK(a != c);
  // The forward and feedback copies of a pair deviate independently: K_fb ≠ K_ffᵀ on the device.
  const auto [ff, fb] = model.net.reciprocal_pairs().front();
  const Mat<double> kff = kernel(model.net, a, ff), kfb = kernel(model.net, a, fb);
  CHECK((kfb - kff.transpose()).cwiseAbs().maxCoeff() > 1e-3);
  // About c in relative spread: the std of device/nominal − 1 over the substrate's weights.
  double sq = 0;
  long count = 0;
  for (Index i = 0; i < sub; ++i)
    if (theta[i] != 0) {  // the biases are zero: nothing to deviate from
      sq += std::pow(a[i] / theta[i] - 1, 2);
      ++count;
    }
  const double sd = std::sqrt(sq / static_cast<double>(count));
  CHECK(sd == doctest::Approx(0.1).epsilon(0.02));
  dc.mismatch = 0;
  const Device ideal(model.net, dc);
  CHECK(ideal.ideal());
  ideal.apply(theta, c);
  CHECK(c == theta);
  dc.weight_bits = 17;
  CHECK_THROWS_WITH_AS(Device(model.net, dc), doctest::Contains("--weight-bits"), InputError);
  dc.weight_bits = 4;
  CHECK_THROWS_WITH_AS(Device(model.net, dc), doctest::Contains("--weight-clip"), InputError);
  dc.weight_bits = 0;
  dc.mismatch = -0.1;
  CHECK_THROWS_WITH_AS(Device(model.net, dc), doctest::Contains("--mismatch"), InputError);
}

TEST_CASE("the ziggurat's normals: moments and tails of the standard normal") {
  // 2^21 draws: the sample mean's standard error is 7e-4, the variance's 1e-3, the fourth
  // moment's 6.8e-3 (its variance is 96/N); 6 standard errors are allowed. Tails: P(|x| > 2) =
  // 0.0455 and P(|x| > 3.5) = 4.65e-4 (beyond the base layer's edge r = 3.44: the tail method),
  // each within 6 binomial standard errors.
  const std::size_t N = std::size_t{1} << 21;
  std::vector<double> x(N);
  Rng rng(5, Stream::noise, 1, 2);
  rng.fill_normal_ziggurat(x.data(), N);
  double m1 = 0, m2 = 0, m4 = 0, t2 = 0, t35 = 0;
  for (double v : x) {
    m1 += v;
    m2 += v * v;
    m4 += v * v * v * v;
    t2 += std::abs(v) > 2;
    t35 += std::abs(v) > 3.5;
  }
  const double n = static_cast<double>(N);
  m1 /= n, m2 /= n, m4 /= n, t2 /= n, t35 /= n;
  CHECK(std::abs(m1) < 6 * 7e-4);
  CHECK(std::abs(m2 - 1) < 6 * 1e-3);
  CHECK(std::abs(m4 - 3) < 6 * 6.8e-3);
  CHECK(std::abs(t2 - 0.0455) < 6 * std::sqrt(0.0455 / n));
  CHECK(std::abs(t35 - 4.65e-4) < 6 * std::sqrt(4.65e-4 / n));
  // Reproducible from the key.
  std::vector<double> y(16), z(16);
  Rng(5, Stream::noise, 1, 2).fill_normal_ziggurat(y.data(), 16);
  CHECK(std::equal(y.begin(), y.end(), x.begin()));
  Rng(5, Stream::noise, 1, 3).fill_normal_ziggurat(z.data(), 16);
  CHECK(y != z);
}
