// Jacobian products, dense assembly, exact symmetry metrics (golden values), probe estimates of
// jac_sym, the spectrum and Henrici's departure from normality, and the whole analysis.
#include <doctest/doctest.h>

#include <limits>

#include "../reference.hpp"
#include "helpers.hpp"

using namespace hepsim;
using namespace hepsim::testing;

namespace {

// Dense S and A of J = H − I, formed entry by entry (the reference for the block formulas).
struct DenseNorms {
  double s2, a2;
};
DenseNorms dense_norms(const Mat<double>& H) {
  const Index n = H.rows();
  const Mat<double> J = H - Mat<double>::Identity(n, n);
  return {(0.5 * (J + J.transpose())).squaredNorm(), (0.5 * (J - J.transpose())).squaredNorm()};
}

}  // namespace

TEST_CASE_TEMPLATE("dense H agrees with the batched JVP and VJP products", R, float, double) {
  const Network net = all_blocks_net();
  const Vec<R> theta = random_theta<R>(net, 3);
  const Mat<R> H = dense_jacobian(net, theta);
  const Index n = net.neurons;
  CHECK(H.rows() == n);
  Mat<R> V(n, 7), out(n, 7), ref(n, 7);
  Rng rng(5, Stream::data);
  for (Index i = 0; i < V.size(); ++i) V.data()[i] = static_cast<R>(rng.normal());
  // Both sides sum the same products in a different order: each entry's rounding is at most
  // n·ε·Σ|K||v| (a dot product of length ≤ n), so a relative error below 4nε is ample.
  const double tol = 4.0 * static_cast<double>(n) * std::numeric_limits<R>::epsilon();
  jvp<R>(net, theta, V, out);
  ref.noalias() = H * V;
  CHECK(rel_err(out, ref) < tol);
  vjp<R>(net, theta, V, out);
  ref.noalias() = H.transpose() * V;
  CHECK(rel_err(out, ref) < tol);
  // Input kernels are not part of H: the (l, in) coupling never appears. The self-loop block h-h
  // is the kernel itself, and the unpaired out-h leaves the h-out block empty.
  const int hh = 1, outh = 6;
  CHECK(H.block(0, 0, 6, 6) == kernel(net, theta, hh));
  CHECK(H.block(0, 11, 6, 4) == kernel(net, theta, outh));
  CHECK(H.block(11, 0, 4, 6).cwiseAbs().maxCoeff() == R(0));
  // The map's Jacobian w.r.t. u: J_G D, column j scaled by d_j.
  Vec<R> d(n);
  for (Index i = 0; i < n; ++i) d[i] = static_cast<R>(rng.uniform());
  const Mat<R> JD = map_jacobian<R>(net, theta, d);
  CHECK(rel_err(JD, Mat<R>(H * d.asDiagonal())) < tol);
}

TEST_CASE("golden tiny network: jac_sym and homeo_exact") {
  const TinyReference ref = load_tiny_reference();
  const Network& net = ref.model.net;
  const double jac_sym_ref = ref.j["jac_sym"].get<double>();
  const double homeo_ref = ref.j["homeo_exact"].get<double>();
  // The README: every number reproduces to about 1e-10 (relative) in double.
  const JacobianNorms nb = exact_norms(net, ref.theta);
  CHECK(nb.jac_sym() == doctest::Approx(jac_sym_ref).epsilon(1e-10));
  CHECK(nb.homeo() == doctest::Approx(homeo_ref).epsilon(1e-10));
  CHECK(homeo_exact(net, ref.theta) == doctest::Approx(homeo_ref).epsilon(1e-10));
  // The same from the dense matrix.
  const Mat<double> H = dense_jacobian(net, ref.theta);
  const DenseNorms dn = dense_norms(H);
  CHECK(std::sqrt(dn.s2) / (std::sqrt(dn.s2) + std::sqrt(dn.a2)) == doctest::Approx(jac_sym_ref).epsilon(1e-10));
  CHECK(0.5 * (H - H.transpose()).squaredNorm() / 12.0 == doctest::Approx(homeo_ref).epsilon(1e-10));
  CHECK(weight_angle_deg(net, ref.theta) == doctest::Approx(ref.j["weight_angle_deg"].get<double>()).epsilon(1e-10));
}

TEST_CASE("block norms equal the dense norms with a self-loop and an unpaired edge") {
  const Network net = all_blocks_net();
  for (std::uint64_t seed : {1, 2, 3}) {
    const Vec<double> theta = random_theta<double>(net, seed);
    const JacobianNorms nb = exact_norms(net, theta);
    const DenseNorms dn = dense_norms(dense_jacobian(net, theta));
    // Sums of the same squares in another order: relative rounding ≲ n²ε ≈ 5e-14.
    CHECK(nb.s2 == doctest::Approx(dn.s2).epsilon(1e-12));
    CHECK(nb.a2 == doctest::Approx(dn.a2).epsilon(1e-12));
    CHECK(nb.neurons == 15);
  }
}

TEST_CASE("jac_sym is 1 for symmetric weights") {
  for (const char* arch : {"mlp_2-256", "small"}) {
    CAPTURE(arch);
    const Network net = std::string(arch) == "small" ? small_mlp() : make_model(arch).net;
    const Vec<double> theta = init_params<double>(net, 4, 0.0);  // α = 0: bit-exactly transposed
    const JacobianNorms nb = exact_norms(net, theta);
    CHECK(nb.a2 == 0.0);
    CHECK(nb.jac_sym() == 1.0);
    Probes<double> probes(net.neurons, 50);
    Rng rng(1, Stream::probes, 0);
    probes.draw(rng);
    // HE and HᵀE of a symmetric H differ by GEMM rounding only: ‖Aε‖ ≲ nε‖Hε‖, so the estimate
    // is 1 − O(nε).
    CHECK(jac_sym_estimate(net, theta, probes).value > 1 - 1e-10);
  }
}

TEST_CASE("the probe estimate of jac_sym matches the exact value below 1000 neurons") {
  const TinyReference ref = load_tiny_reference();
  struct Case {
    std::string name;
    Network net;
    Vec<double> theta;
  };
  const Network mlp = make_model("mlp_2-256").net, loop = make_model("loop_mnist").net, ab = all_blocks_net();
  const std::vector<Case> cases = {{"tiny", ref.model.net, ref.theta},
                                   {"all_blocks", ab, random_theta<double>(ab, 7)},
                                   {"mlp_2-256 at 90", mlp, init_params<double>(mlp, 1, 90.0)},
                                   {"mlp_2-256 at 45", mlp, init_params<double>(mlp, 1, 45.0)},
                                   {"loop_mnist", loop, init_params<double>(loop, 1, 90.0)}};
  for (const Case& c : cases) {
    CAPTURE(c.name);
    REQUIRE(c.net.neurons < 1000);
    const double exact = exact_norms(c.net, c.theta).jac_sym();
    Probes<double> probes(c.net.neurons, 2000);
    Rng rng(11, Stream::probes, 0);
    probes.draw(rng);
    const Estimate est = jac_sym_estimate(c.net, c.theta, probes);
    CHECK(est.probes == 2000);
    // The delta-method standard error: the estimate is a smooth function of two means, its error
    // is asymptotically normal; 4 standard errors (two-sided p ≈ 6e-5 per case, fixed seed).
    CHECK(std::abs(est.value - exact) < 4 * est.std_error);
    // And in absolute terms: ‖Aε‖², ‖Sε‖² have relative std ≤ √2 per probe (Gaussian quadratic
    // forms), so with 2000 probes jac_sym is within a few 1e-3; stated tolerance 1%.
    CHECK(est.value == doctest::Approx(exact).epsilon(0.01));
    CHECK(est.std_error < 0.005);
  }
}

TEST_CASE("spectrum: rightmost eigenvalue and Henrici's departure from normality") {
  // Upper triangular: eigenvalues −1, −2; ‖J‖² = 5 + a², Σ|λ|² = 5 → Henrici = |a|/sqrt(5 + a²).
  Mat<double> J(2, 2);
  J << -1, 3, 0, -2;
  Spectrum sp = spectrum(J);
  CHECK(sp.max_real.real() == doctest::Approx(-1.0).epsilon(1e-14));
  CHECK(sp.max_real.imag() == 0.0);
  // Eigenvalues of a well-separated 2x2 are accurate to a few ε; the radicand to a few ε·‖J‖².
  CHECK(sp.henrici == doctest::Approx(3.0 / std::sqrt(14.0)).epsilon(1e-12));
  // A rotation-like block: complex pair 0.5 ± 2i beside −3; normal (orthogonal blocks).
  Mat<double> K = Mat<double>::Zero(3, 3);
  K << 0.5, -2, 0, 2, 0.5, 0, 0, 0, -3;
  sp = spectrum(K);
  CHECK(sp.max_real.real() == doctest::Approx(0.5).epsilon(1e-14));
  CHECK(std::abs(sp.max_real.imag()) == doctest::Approx(2.0).epsilon(1e-14));
  CHECK(sp.henrici < 1e-7);
}

TEST_CASE("Henrici departure is 0 for a symmetric (normal) J, positive for independent feedback") {
  const Network net = small_mlp();
  const Vec<double> sym = init_params<double>(net, 2, 0.0);
  const Index n = net.neurons;
  const Spectrum s0 = spectrum(dense_jacobian(net, sym) - Mat<double>::Identity(n, n));
  // The radicand ‖J‖² − Σ|λ|² of a normal J is rounding only, ≲ nε‖J‖² (n = 46: 1e-14 ‖J‖²),
  // so the departure is below sqrt(nε) ≈ 1e-7.
  CHECK(s0.henrici < 1e-6);
  // A symmetric J has real eigenvalues.
  CHECK(s0.eigenvalues.imag().cwiseAbs().maxCoeff() < 1e-12);
  const Vec<double> asym = init_params<double>(net, 2, 90.0);
  const Spectrum s90 = spectrum(dense_jacobian(net, asym) - Mat<double>::Identity(n, n));
  CHECK(s90.henrici > 0.1);
}

TEST_CASE("analyse_jacobian on the golden tiny network") {
  const TinyReference ref = load_tiny_reference();
  AnalysisConfig cfg;
  cfg.probes = 500;
  cfg.tol = 1e-12;
  const JacobianAnalysis a = analyse_jacobian(ref.model, ref.theta, ref.x, cfg);
  CHECK(a.neurons == 12);
  CHECK(a.jac_sym == doctest::Approx(ref.j["jac_sym"].get<double>()).epsilon(1e-10));
  CHECK(a.homeo_exact == doctest::Approx(ref.j["homeo_exact"].get<double>()).epsilon(1e-10));
  CHECK(a.weight_angle_deg == doctest::Approx(ref.j["weight_angle_deg"].get<double>()).epsilon(1e-10));
  CHECK(a.homeo_estimate.probes == 500);
  // Fixed seed; 4 standard errors (p ≈ 6e-5).
  CHECK(std::abs(a.homeo_estimate.value - a.homeo_exact) < 4 * a.homeo_estimate.std_error);
  CHECK(std::abs(a.jac_sym_estimate.value - a.jac_sym) < 4 * a.jac_sym_estimate.std_error);
  REQUIRE(a.jac.has_value());
  CHECK(a.jac->eigenvalues.size() == 12);
  // Dynamics: the reference's fixed points u* (relaxed to 1e-14) give J_G D − I directly.
  CHECK(a.samples == ref.batch);
  CHECK(a.converged == ref.batch);
  const Mat<double> u_star = ref.samples("u_star");
  Mat<double> d(12, ref.batch);
  activate_deriv<double>(Activation::sigmoid, u_star, d);
  double best = -1e300;
  for (Index j = 0; j < ref.batch; ++j) {
    Mat<double> Jd = map_jacobian<double>(ref.model.net, ref.theta, d.col(j));
    Jd.diagonal().array() -= 1.0;
    best = std::max(best, spectrum(Jd).max_real.real());
  }
  REQUIRE(a.max_real_eig_dynamics.has_value());
  // u* agrees to ~1e-12 (tol 1e-12 / (1 − ρ)); eigenvalues are Lipschitz in D here (distinct).
  CHECK(a.max_real_eig_dynamics->real() == doctest::Approx(best).epsilon(1e-9));
  CHECK(best < 0);  // the continuous system is stable at these fixed points

  // Above max_dense the spectra are skipped; the exact norms and estimates remain.
  cfg.max_dense = 11;
  const JacobianAnalysis b = analyse_jacobian(ref.model, ref.theta, ref.x, cfg);
  CHECK_FALSE(b.jac.has_value());
  CHECK_FALSE(b.max_real_eig_dynamics.has_value());
  CHECK(b.jac_sym == a.jac_sym);
  CHECK(b.homeo_estimate.value == a.homeo_estimate.value);  // same probes
}

TEST_CASE("symmetry norms at states: unbiased against the exact per-sample norms, zero asymmetry for B = K") {
  // tiny_cnn: H depends on the state; its dense H per sample comes from JVPs on the identity.
  const Model m = tiny_cnn();
  const Network& net = m.net;
  const Index n = net.neurons, B = 3;
  const Mat<double> s = random_matrix<double>(n, B, 21);
  for (double angle : {0.0, 90.0}) {
    CAPTURE(angle);
    const Vec<double> theta = init_params<double>(net, 4, angle);
    double s2 = 0, a2 = 0;
    for (Index b = 0; b < B; ++b) {
      const Mat<double> S = s.col(b).replicate(1, n);
      ConvCache<double> cache;
      linearize<double>(net, theta, S, cache);
      Mat<double> H = Mat<double>::Zero(n, n);
      add_jvp<double>(net, theta, S, cache, Mat<double>::Identity(n, n), H);
      const DenseNorms d = dense_norms(H);
      s2 += d.s2 / B;
      a2 += d.a2 / B;
    }
    const JacobianNorms est = norms_at_states<double>(net, theta, s, 400, 9);
    // 1200 Gaussian probes: a quadratic form's estimate has relative std sqrt(2‖M⁴‖/‖M²‖²/P) ≤
    // sqrt(2/1200) · (spread) ≈ 4 %; 15 % is 3.5 sd even for an uneven spectrum.
    CHECK(est.s2 == doctest::Approx(s2).epsilon(0.15));
    if (angle == 0.0) {
      CHECK(a2 < 1e-20);  // every pair exactly transposed: H symmetric at every state
      CHECK(est.a2 < 1e-20);
      CHECK(est.jac_sym() > 0.999999);
    } else {
      CHECK(est.a2 == doctest::Approx(a2).epsilon(0.15));
    }
  }
}
