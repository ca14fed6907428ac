// Activations (SPEC 2.2) against closed forms evaluated in long double, for real and complex
// arguments, and their derivatives against central differences along the real and the imaginary
// axis (which also checks holomorphy: the two agree only if the Cauchy–Riemann equations hold).
#include <doctest/doctest.h>

#include <cmath>
#include <complex>
#include <vector>

#include "sim/activation.hpp"

using namespace hepsim;
using LD = long double;
using CLD = std::complex<long double>;

namespace {

CLD sigmoid_ref(CLD z) { return LD(1) / (LD(1) + std::exp(LD(-4) * z + LD(2))); }
CLD dsilu_ref(CLD z) {
  const auto L = [](CLD w) { return LD(1) / (LD(1) + std::exp(-w)); };
  return LD(0.5) * z * L(z) + (LD(1) - LD(0.5) * z) * L(z - LD(2));
}
CLD ref(Activation a, CLD z) { return a == Activation::sigmoid ? sigmoid_ref(z) : dsilu_ref(z); }

// Sample points: moderate values plus saturating ones (|z| up to 40), away from the poles
// (sigmoid: 4z − 2 = iπ(2k+1)).
std::vector<CLD> points(bool complex_args) {
  std::vector<CLD> p;
  for (double re : {-40.0, -7.5, -2.0, -0.3, 0.0, 0.25, 0.5, 1.1, 2.0, 3.7, 12.0, 40.0})
    for (double im : complex_args ? std::vector<double>{-0.6, -0.1, 0.05, 0.3} : std::vector<double>{0.0})
      p.emplace_back(re, im);
  return p;
}

template <class S>
S to_s(CLD z) {
  if constexpr (is_complex_v<S>) return S(static_cast<RealOf<S>>(z.real()), static_cast<RealOf<S>>(z.imag()));
  else return static_cast<S>(z.real());
}
template <class S>
CLD to_ld(S s) {
  if constexpr (is_complex_v<S>) return CLD(s.real(), s.imag());
  else return CLD(s, 0);
}

}  // namespace

TEST_CASE_TEMPLATE("activation values match the closed form", S, float, double, std::complex<float>,
                   std::complex<double>) {
  // Tolerance: a few hundred ulps of the scalar type, absolute+relative. The formulas take
  // exp of an argument up to ~160 and divide once; float ulp 6e-8, double 1.1e-16.
  const double tol = std::is_same_v<RealOf<S>, float> ? 2e-6 : 1e-13;
  for (Activation a : {Activation::sigmoid, Activation::dsilu}) {
    for (CLD z : points(is_complex_v<S>)) {
      const CLD want = ref(a, z);
      const CLD got = to_ld(activate<S>(a, to_s<S>(z)));
      CAPTURE(std::string(to_string(a)));
      CAPTURE(static_cast<double>(z.real()));
      CAPTURE(static_cast<double>(z.imag()));
      CHECK(static_cast<double>(std::abs(got - want)) <= tol * (1 + static_cast<double>(std::abs(want))));
    }
  }
}

TEST_CASE_TEMPLATE("activation derivatives match central differences (holomorphic)", S, double,
                   std::complex<double>) {
  // Central difference error: h²|f'''|/6 + ε|f|/h. With h = 1e-5: ~1e-10 · |f'''| + 1e-11; the
  // sigmoid's third derivative is at most 4³·(1/8) ≈ 8, so 1e-8 (relative to 1 + |f'|) is safe.
  const double h = 1e-5, tol = 1e-8;
  for (Activation a : {Activation::sigmoid, Activation::dsilu}) {
    for (CLD z : points(is_complex_v<S>)) {
      const S zs = to_s<S>(z);
      const CLD d = to_ld(activate_deriv<S>(a, zs));
      const CLD fd_re = (ref(a, z + LD(h)) - ref(a, z - LD(h))) / LD(2 * h);
      CAPTURE(std::string(to_string(a)));
      CAPTURE(static_cast<double>(z.real()));
      CHECK(static_cast<double>(std::abs(d - fd_re)) <= tol * (1 + static_cast<double>(std::abs(d))));
      if constexpr (is_complex_v<S>) {
        const CLD ih(0, h);
        const CLD fd_im = (ref(a, z + ih) - ref(a, z - ih)) / (LD(2) * ih);
        CHECK(static_cast<double>(std::abs(d - fd_im)) <= tol * (1 + static_cast<double>(std::abs(d))));
      }
    }
  }
}

TEST_CASE_TEMPLATE("vectorised matrix activations equal the scalar ones", S, float, double, std::complex<float>,
                   std::complex<double>) {
  // The real matrix path uses Eigen's vectorised exp (a different polynomial than std::exp):
  // agreement to a few ulps is the claim.
  const double tol = std::is_same_v<RealOf<S>, float> ? 1e-6 : 1e-14;
  const auto pts = points(is_complex_v<S>);
  Mat<S> u(static_cast<Index>(pts.size()), 3);
  for (Index j = 0; j < 3; ++j)
    for (Index i = 0; i < u.rows(); ++i) u(i, j) = to_s<S>(pts[static_cast<std::size_t>(i)] * LD(1 + 0.1 * j));
  for (Activation a : {Activation::sigmoid, Activation::dsilu}) {
    Mat<S> s(u.rows(), u.cols()), d(u.rows(), u.cols());
    activate<S>(a, u, s);
    activate_deriv<S>(a, u, d);
    for (Index j = 0; j < u.cols(); ++j)
      for (Index i = 0; i < u.rows(); ++i) {
        CHECK(std::abs(s(i, j) - activate<S>(a, u(i, j))) <= tol * (1 + std::abs(s(i, j))));
        CHECK(std::abs(d(i, j) - activate_deriv<S>(a, u(i, j))) <= tol * (1 + std::abs(d(i, j))));
      }
  }
}

TEST_CASE("activations saturate without NaN far from the origin") {
  for (Activation a : {Activation::sigmoid, Activation::dsilu}) {
    for (double z : {-1e4, -300.0, 300.0, 1e4}) {
      CHECK(std::isfinite(activate<double>(a, z)));
      CHECK(std::isfinite(activate_deriv<double>(a, z)));
      CHECK(std::isfinite(activate<float>(a, static_cast<float>(z))));
      const auto c = activate<std::complex<double>>(a, {z, 0.5});
      CHECK(std::isfinite(c.real()));
      CHECK(std::isfinite(c.imag()));
    }
  }
  CHECK(activate<double>(Activation::sigmoid, -300.0) == doctest::Approx(0.0));
  CHECK(activate<double>(Activation::sigmoid, 300.0) == doctest::Approx(1.0));
  CHECK(activate<double>(Activation::sigmoid, 0.5) == doctest::Approx(0.5));
}

TEST_CASE("parse_activation rejects unknown names") {
  CHECK(parse_activation("sigmoid") == Activation::sigmoid);
  CHECK(parse_activation("dsilu") == Activation::dsilu);
  CHECK_THROWS_WITH(parse_activation("relu"), doctest::Contains("--activation"));
}
