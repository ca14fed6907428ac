// The homeostatic loss of SPEC 4: Hutchinson estimator vs ½‖H−Hᵀ‖²/n, the gradients (exact and
// Hutchinson) against finite differences and against each other, symmetric weights, loop_mnist
// (weight decay), the training-loop object, and gradient descent on the penalty alone.
#include <doctest/doctest.h>

#include <limits>

#include "../reference.hpp"
#include "helpers.hpp"

using namespace hepsim;
using namespace hepsim::testing;

namespace {

template <class R>
Probes<R> drawn_probes(Index neurons, Index count, std::uint64_t seed, std::uint64_t step = 0) {
  Probes<R> p(neurons, count);
  Rng rng(seed, Stream::probes, step);
  p.draw(rng);
  return p;
}

}  // namespace

TEST_CASE("Hutchinson: the mean over many draws lies within 3 standard errors of ½‖H−Hᵀ‖²/n") {
  const TinyReference ref = load_tiny_reference();
  const Network ab = all_blocks_net(), mlp = make_model("mlp_2-256").net;
  struct Case {
    std::string name;
    const Network* net;
    Vec<double> theta;
    Index probes;
  };
  const std::vector<Case> cases = {{"tiny", &ref.model.net, ref.theta, 20000},
                                   {"all_blocks", &ab, random_theta<double>(ab, 5), 20000},
                                   {"mlp_2-256", &mlp, init_params<double>(mlp, 3, 90.0), 4000}};
  for (const Case& c : cases) {
    CAPTURE(c.name);
    const double exact = homeo_exact(*c.net, c.theta);
    const double dense = 0.5 * (dense_jacobian(*c.net, c.theta) - dense_jacobian(*c.net, c.theta).transpose())
                                   .squaredNorm() / static_cast<double>(c.net->neurons);
    CHECK(exact == doctest::Approx(dense).epsilon(1e-12));  // block sums vs dense: rounding only
    Probes<double> p = drawn_probes<double>(c.net->neurons, c.probes, 17);
    const Estimate est = homeo_hutchinson(*c.net, c.theta, p);
    CHECK(est.probes == c.probes);
    CHECK(est.std_error > 0);
    // The estimate is a mean of i.i.d. per-probe values: normal by the CLT at these counts; the
    // brief's 3 standard errors (two-sided p = 0.003; fixed seed, so deterministic).
    CHECK(std::abs(est.value - exact) < 3 * est.std_error);
  }
}

TEST_CASE("homeostatic gradients match central finite differences (double, relative error < 1e-6)") {
  const TinyReference ref = load_tiny_reference();
  const Network ab = all_blocks_net();
  const std::vector<std::pair<const Network*, Vec<double>>> cases = {{&ref.model.net, ref.theta},
                                                                     {&ab, random_theta<double>(ab, 9)}};
  for (const auto& [net, theta] : cases) {
    CAPTURE(net->name);
    const Vec<double> mask = recurrent_mask(*net);
    // Exact mode, λ = 1.7; the result is *added* to what the vector holds.
    const double lambda = 1.7;
    Vec<double> start = Vec<double>::LinSpaced(net->n_params, -1, 1), grad = start;
    add_homeo_exact_gradient<double>(*net, theta, lambda, grad);
    const Vec<double> fd = lambda * central_differences(theta, [&](const Vec<double>& th) {
                             return homeo_exact(*net, th);
                           });
    CHECK(rel_err(Vec<double>(grad - start), fd) < 1e-6);
    // Zero outside the recurrent kernels (biases, input kernels, readout): exactly untouched.
    CHECK((grad - start).cwiseProduct(Vec<double>::Ones(net->n_params) - mask).cwiseAbs().maxCoeff() == 0.0);

    // Hutchinson with fixed probes: its gradient is the exact gradient of the estimate.
    Probes<double> p = drawn_probes<double>(net->neurons, 6, 23);
    grad = start;
    (void)homeo_hutchinson<double>(*net, theta, p, lambda, &grad);
    const Vec<double> fdh = lambda * central_differences(theta, [&](const Vec<double>& th) {
                              return homeo_hutchinson<double>(*net, th, p).value;
                            });
    CHECK(rel_err(Vec<double>(grad - start), fdh) < 1e-6);
    CHECK((grad - start).cwiseProduct(Vec<double>::Ones(net->n_params) - mask).cwiseAbs().maxCoeff() == 0.0);
  }
}

TEST_CASE("a self-loop's exact gradient is 2(K − Kᵀ)/n, not 2K/n") {
  const Network net = all_blocks_net();
  const Vec<double> theta = random_theta<double>(net, 4);
  Vec<double> grad = Vec<double>::Zero(net.n_params);
  add_homeo_exact_gradient<double>(net, theta, 1.0, grad);
  const int hh = 1, outh = 6, hg = 2, gh = 3;
  REQUIRE(net.edges[hh].name == "h-h");
  const auto K = kernel(net, theta, hh);
  const double n = static_cast<double>(net.neurons);
  CHECK(rel_err(kernel(net, grad, hh), Mat<double>(2 * (K - K.transpose()) / n)) < 1e-15);
  // An unpaired edge decays like weight decay; a pair is pulled towards transposes of each other.
  CHECK(rel_err(kernel(net, grad, outh), Mat<double>(2 * kernel(net, theta, outh) / n)) < 1e-15);
  CHECK(rel_err(kernel(net, grad, hg),
                Mat<double>(2 * (kernel(net, theta, hg) - kernel(net, theta, gh).transpose()) / n)) < 1e-15);
  // A symmetric self-loop contributes nothing.
  Vec<double> th2 = theta;
  auto K2 = kernel(net, th2, hh);
  const Mat<double> sym = 0.5 * (K2 + K2.transpose());
  K2 = sym;
  const JacobianNorms a = exact_norms(net, theta), b = exact_norms(net, th2);
  CHECK(b.a2 == doctest::Approx(a.a2 - 0.25 * (K - K.transpose()).squaredNorm()).epsilon(1e-12));
}

TEST_CASE("the Hutchinson gradient's mean over many draws converges to the exact gradient") {
  const Network net = all_blocks_net();
  const Vec<double> theta = random_theta<double>(net, 12);
  Vec<double> exact = Vec<double>::Zero(net.n_params);
  add_homeo_exact_gradient<double>(net, theta, 1.0, exact);
  // K independent batches of P probes: the batch gradients are i.i.d., so their mean has the
  // per-coordinate standard error sd/√K.
  constexpr int K = 400;
  constexpr Index P = 25;
  Probes<double> p(net.neurons, P);
  Vec<double> sum = Vec<double>::Zero(net.n_params), sum2 = sum, g(net.n_params);
  for (int k = 0; k < K; ++k) {
    Rng rng(31, Stream::probes, static_cast<std::uint64_t>(k));
    p.draw(rng);
    g.setZero();
    (void)homeo_hutchinson<double>(net, theta, p, 1.0, &g);
    sum += g;
    sum2 += g.cwiseProduct(g);
  }
  const Vec<double> mean = sum / K;
  const Vec<double> se = ((sum2 / K - mean.cwiseProduct(mean)) * (double(K) / (K - 1)) / K).cwiseSqrt();
  const Vec<double> mask = recurrent_mask(net);
  Index coords = 0, outside = 0;
  double chi2 = 0;
  for (Index i = 0; i < net.n_params; ++i) {
    if (mask[i] == 0) {
      CHECK(mean[i] == 0.0);
      continue;
    }
    ++coords;
    const double z = (mean[i] - exact[i]) / se[i];
    chi2 += z * z;
    // 5 standard errors per coordinate: p ≈ 6e-7 each, ≈ 1e-4 for all ~160 coordinates together.
    outside += std::abs(z) > 5;
  }
  CHECK(outside == 0);
  // Jointly: E Σz² = coords (one per coordinate) whatever the correlations; the correlations (all
  // coordinates come from the same probes) widen its spread beyond χ²'s: over 20 seeds
  // Σz²/coords measured 1.0 ± 0.16. Bound 2 ≈ 6 of those standard deviations; a bias of the size
  // of the noise would double it.
  CHECK(chi2 < 2.0 * static_cast<double>(coords));
  // And the mean is close in norm: relative error ~ sqrt(Σ se²)/‖exact‖.
  CHECK(rel_err(mean, exact) < 3 * se.norm() / exact.norm());
}

TEST_CASE_TEMPLATE("loss and gradient are zero for symmetric weights", R, float, double) {
  for (const char* arch : {"mlp_2-256", "small"}) {
    CAPTURE(arch);
    const Network net = std::string(arch) == "small" ? small_mlp() : make_model(arch).net;
    const Vec<R> theta = init_params<R>(net, 6, 0.0);  // α = 0: bit-exactly transposed feedback
    // Exact mode: K_fb − K_ffᵀ = 0 exactly, so loss and gradient are exactly zero.
    CHECK(homeo_exact<R>(net, theta) == 0.0);
    Vec<R> grad = Vec<R>::Zero(net.n_params);
    add_homeo_exact_gradient<R>(net, theta, R(1), grad);
    CHECK(grad.cwiseAbs().maxCoeff() == R(0));

    // Hutchinson: ℓ(ε) = (Hε − Hᵀε)·Hε; for symmetric H the two products differ by GEMM
    // rounding only, |ℓ| ≲ 2nε‖Hε‖², so the estimate is 0 to that level.
    Probes<R> p = drawn_probes<R>(net.neurons, 400, 2);
    grad.setZero();
    const Estimate est = homeo_hutchinson<R>(net, theta, p, R(1), &grad);
    const double scale = static_cast<double>(p.Y().squaredNorm()) / static_cast<double>(p.count() * net.neurons);
    CHECK(std::abs(est.value) <= 2.0 * static_cast<double>(net.neurons) * std::numeric_limits<R>::epsilon() * scale);
    // Its gradient for one set of probes is not zero: at symmetric H, ∂ℓ/∂H = Hεεᵀ − εεᵀH is
    // antisymmetric, so each pair gets equal and opposite kicks (g_fb = −g_ffᵀ) with zero mean
    // (E εεᵀ = I). Check the pairing, and the mean against its standard error below.
    for (const auto& [ff, fb] : net.reciprocal_pairs()) {
      const Mat<R> sum = kernel(net, grad, fb) + kernel(net, grad, ff).transpose();
      // Rounding of the two GEMMs relative to the kicks themselves: ≲ P·ε (sums over P probes).
      CHECK(static_cast<double>(sum.norm()) <=
            400.0 * std::numeric_limits<R>::epsilon() * static_cast<double>(kernel(net, grad, ff).norm()));
    }
  }
}

TEST_CASE("Hutchinson gradient at symmetric weights has zero mean") {
  const Network net = small_mlp();
  const Vec<double> theta = init_params<double>(net, 6, 0.0);
  constexpr int K = 200;
  Probes<double> p(net.neurons, 10);
  Vec<double> sum = Vec<double>::Zero(net.n_params), sum2 = sum, g(net.n_params);
  for (int k = 0; k < K; ++k) {
    Rng rng(8, Stream::probes, static_cast<std::uint64_t>(k));
    p.draw(rng);
    g.setZero();
    (void)homeo_hutchinson<double>(net, theta, p, 1.0, &g);
    sum += g;
    sum2 += g.cwiseProduct(g);
  }
  const Vec<double> mean = sum / K;
  const Vec<double> var = (sum2 / K - mean.cwiseProduct(mean)) * (double(K) / (K - 1));
  // E‖mean‖² = Σ var / K exactly when the mean is 0. The ratio's spread is that of a χ² with few
  // effective degrees of freedom (each pair's kicks are equal and opposite, all from the same 10
  // probes per batch): over 20 seeds it measured 1.0 ± 0.14. Bound 2 ≈ 7 standard deviations.
  CHECK(mean.squaredNorm() < 2.0 * var.sum() / K);
}

TEST_CASE("loop_mnist (no reciprocal pairs): the penalty is L2 weight decay on the recurrent kernels") {
  const Network net = make_model("loop_mnist").net;
  REQUIRE(net.reciprocal_pairs().empty());
  const Vec<double> theta = init_params<double>(net, 2, 90.0);
  const double n = static_cast<double>(net.neurons);
  // H − Hᵀ holds K_e and −K_eᵀ in disjoint blocks: ½‖H − Hᵀ‖² = Σ_e ‖K_e‖².
  double sum = 0;
  Vec<double> decay = Vec<double>::Zero(net.n_params);
  const double lambda = 0.1;  // the paper's loop coefficient
  for (std::size_t e = 0; e < net.edges.size(); ++e) {
    if (net.edges[e].pre == Network::kInput) continue;
    sum += kernel(net, theta, static_cast<int>(e)).squaredNorm();
    kernel(net, decay, static_cast<int>(e)) = 2 * lambda * kernel(net, theta, static_cast<int>(e)) / n;
  }
  // Same squares summed by the block formula: a few ε relative.
  CHECK(homeo_exact(net, theta) == doctest::Approx(sum / n).epsilon(1e-13));
  Vec<double> grad = Vec<double>::Zero(net.n_params);
  add_homeo_exact_gradient<double>(net, theta, lambda, grad);
  CHECK(rel_err(grad, decay) < 1e-15);
  // The Hutchinson estimate agrees (3 standard errors, as above).
  Probes<double> p = drawn_probes<double>(net.neurons, 3000, 4);
  const Estimate est = homeo_hutchinson(net, theta, p);
  CHECK(std::abs(est.value - sum / n) < 3 * est.std_error);
}

TEST_CASE_TEMPLATE("Homeostasis: exact and Hutchinson modes, keyed probes, λ, added gradient", R, float, double) {
  const Network net = small_mlp();
  const Vec<R> theta = init_params<R>(net, 1, 90.0);
  const Vec<R> start = Vec<R>::Constant(net.n_params, R(0.25));
  HomeoConfig cfg;
  cfg.lambda = 0.5;
  cfg.mode = HomeoMode::exact;
  Homeostasis<R> exact(net, cfg, 10);
  Vec<R> g1 = start;
  const Estimate e1 = exact.add_gradient(theta, 0, 0, g1);
  Vec<R> ref = start;
  add_homeo_exact_gradient<R>(net, theta, R(0.5), ref);
  CHECK(g1 == ref);
  CHECK(e1.value == homeo_exact<R>(net, theta));
  CHECK(e1.std_error == 0);

  cfg.mode = HomeoMode::hutchinson;
  Homeostasis<R> hutch(net, cfg, 10);  // 5 draws x 10 samples = 50 probes
  Vec<R> g2 = start, g3 = start, g4 = start;
  const Estimate e2 = hutch.add_gradient(theta, 7, 3, g2);
  const Estimate e3 = hutch.add_gradient(theta, 7, 3, g3);
  const Estimate e4 = hutch.add_gradient(theta, 7, 4, g4);
  CHECK(e2.probes == 50);
  CHECK(g2 == g3);  // the same (seed, step): the same probes, bit for bit
  CHECK(e2.value == e3.value);
  CHECK(e2.value != e4.value);
  // The same as drawing the probes by hand from Rng(seed, Stream::probes, step).
  Probes<R> p = drawn_probes<R>(net.neurons, 50, 7, 3);
  Vec<R> g5 = start;
  const Estimate e5 = homeo_hutchinson<R>(net, theta, p, R(0.5), &g5);
  CHECK(e5.value == e2.value);
  CHECK(g5 == g2);
}

TEST_CASE("float and double Hutchinson gradients agree for the same probes") {
  const Network net = make_model("mlp_2-256").net;
  const Vec<double> td = init_params<double>(net, 5, 90.0);
  const Vec<float> tf = td.cast<float>();
  Probes<double> pd = drawn_probes<double>(net.neurons, 250, 3);
  Probes<float> pf(net.neurons, 250);
  pf.probes() = pd.E().cast<float>();
  Vec<double> gd = Vec<double>::Zero(net.n_params);
  Vec<float> gf = Vec<float>::Zero(net.n_params);
  const Estimate ed = homeo_hutchinson<double>(net, td, pd, 1.0, &gd);
  const Estimate ef = homeo_hutchinson<float>(net, tf, pf, 1.0f, &gf);
  // Float GEMMs with inner dimension ≤ 522 (products) and 250 (gradient): relative rounding
  // ≲ 500·ε_f ≈ 6e-5 in the worst case, typically √500·ε_f ≈ 3e-6.
  CHECK(ef.value == doctest::Approx(ed.value).epsilon(1e-4));
  CHECK(rel_err(gf.cast<double>(), gd) < 1e-4);
}

TEST_CASE("gradient descent on the homeostatic loss alone drives the weight angle to 0 and jac_sym to 1") {
  // The training path: float, Hutchinson, 5 draws x batch 10, λ = 1, plain gradient descent.
  const Network net = small_mlp();
  const Vec<float> theta0 = init_params<float>(net, 21, 90.0);
  const double angle0 = weight_angle_deg(net, theta0), sym0 = exact_norms(net, theta0).jac_sym();
  const double loss0 = homeo_exact(net, theta0);
  CHECK(angle0 > 80);
  CHECK(sym0 < 0.7);
  HomeoConfig cfg;
  Homeostasis<float> homeo(net, cfg, 10);
  // In expectation a step of size η multiplies every K_fb − K_ffᵀ by 1 − 4η/n (n = 46). The
  // single-draw gradient is not zero at symmetric weights (see above): with a constant η the
  // asymmetry settles at a noise floor ∝ √η (≈ 8° for η = 2). A Robbins–Monro schedule
  // η_t = 2/(1 + t/50) keeps the contraction (Σ 4η_t/n ≈ 30 over 2000 steps) and lowers the floor
  // like √η_t (measured: 88° → 5° after 100 steps → 1.4° after 2000; jac_sym 0.62 → 0.9925).
  Vec<float> theta = theta0, grad(net.n_params);
  double angle100 = 0;
  for (int step = 0; step < 2000; ++step) {
    const float lr = 2.0f / (1.0f + static_cast<float>(step) / 50.0f);
    grad.setZero();
    (void)homeo.add_gradient(theta, 99, static_cast<std::uint64_t>(step), grad);
    theta -= lr * grad;
    if (step == 99) angle100 = weight_angle_deg(net, theta);
  }
  const double angle = weight_angle_deg(net, theta), sym = exact_norms(net, theta).jac_sym();
  MESSAGE("Hutchinson: angle " << angle0 << " -> " << angle100 << " (100 steps) -> " << angle << ", jac_sym " << sym0
                               << " -> " << sym << ", loss " << loss0 << " -> " << homeo_exact(net, theta));
  CHECK(angle100 < 20);
  CHECK(angle < 3);
  CHECK(angle < angle100);
  // jac_sym = 1/(1 + ‖A‖/‖S‖) ≈ 1 − ‖A‖/‖S‖ is more sensitive than the angle: at the floor
  // ‖A‖/‖S‖ ≈ 1%; the bound 0.985 leaves a margin of about half the floor.
  CHECK(sym > 0.985);
  CHECK(homeo_exact(net, theta) < 1e-3 * loss0);

  // The exact gradient has no floor: the asymmetry decays geometrically (factor 0.83 per step),
  // 200 steps give 0.83^200 ≈ 1e-16 of it: float rounding (angle ~ √ε_f rad ≈ 0.03° at most).
  cfg.mode = HomeoMode::exact;
  Homeostasis<float> exact(net, cfg, 10);
  theta = theta0;
  for (int step = 0; step < 200; ++step) {
    grad.setZero();
    (void)exact.add_gradient(theta, 0, 0, grad);
    theta -= 2.0f * grad;
  }
  CHECK(weight_angle_deg(net, theta) < 0.05);
  CHECK(exact_norms(net, theta).jac_sym() > 0.999999);
}
