// Softmax pooling (SPEC 2.4): values against the closed form in long double (also for windows
// whose exponentials overflow without the max shift), the Jacobian-vector product against central
// differences along real and complex directions (holomorphy), the vector-Jacobian product as its
// exact (non-conjugating) transpose, and float against double.
#include <doctest/doctest.h>

#include <cmath>
#include <complex>

#include "../common.hpp"
#include "sim/conv/pool.hpp"

using namespace hepsim;
using namespace hepsim::testing;
using LD = long double;
using CLD = std::complex<long double>;

namespace {


// P of one window by the definition, unshifted, in long double.
CLD pool_ref(const CLD v[4]) {
  CLD num = 0, den = 0;
  for (int k = 0; k < 4; ++k) {
    num += v[k] * std::exp(v[k]);
    den += std::exp(v[k]);
  }
  return num / den;
}

template <class S>
double dot_rel_err(const Mat<S>& a, const Mat<S>& b, const Mat<S>& c, const Mat<S>& d) {
  // |⟨a, b⟩ − ⟨c, d⟩| / (‖a‖‖b‖ + ‖c‖‖d‖) with the bilinear (non-conjugating) product.
  const S x = (a.array() * b.array()).sum(), y = (c.array() * d.array()).sum();
  return std::abs(x - y) / (a.norm() * b.norm() + c.norm() * d.norm());
}

}  // namespace

TEST_CASE_TEMPLATE("softmax pooling: values of the closed form, stable where exp overflows", S, double,
                   std::complex<double>) {
  const MapShape in{3, 4, 6};
  CHECK(pooled(in) == MapShape{3, 2, 3});
  Mat<S> v = random_matrix<S>(in.size(), 2, 1, 1.0, 0.3);
  Mat<S> p(pooled(in).size(), 2);
  softmax_pool<S>(in, v, p);
  for (Index b = 0; b < 2; ++b)
    for (Index ch = 0; ch < in.c; ++ch)
      for (Index i = 0; i < 2; ++i)
        for (Index j = 0; j < 3; ++j) {
          const Index at = ch * 24 + 2 * i * 6 + 2 * j;
          const CLD w[4] = {to_cld(v(at, b)), to_cld(v(at + 1, b)), to_cld(v(at + 6, b)), to_cld(v(at + 7, b))};
          // Sums of four terms of order 1: a few ulps of double.
          CHECK(std::abs(to_cld(p((ch * 2 + i) * 3 + j, b)) - pool_ref(w)) < 1e-14L);
        }
  // e^1000 overflows double; shifted by the window's maximum P stays exact:
  // P(1000, 999, 0, 0) = (1000 + 999 e^{-1}) / (1 + e^{-1}) up to e^{-999}.
  Mat<S> big = Mat<S>::Zero(in.size(), 1);
  big(0, 0) = S(1000);
  big(1, 0) = S(999);
  Mat<S> pb(pooled(in).size(), 1);
  softmax_pool<S>(in, big, pb);
  const double e1 = std::exp(-1.0);
  CHECK(std::abs(pb(0, 0) - S((1000 + 999 * e1) / (1 + e1))) < 1e-12 * 1000);
  CHECK(std::abs(pb(1, 0)) == 0.0);  // an all-zero window pools to 0
  // An equal window pools to its value (the weights are 1/4 each).
  Mat<S> flat = Mat<S>::Constant(in.size(), 1, S(0.75));
  softmax_pool<S>(in, flat, pb);
  CHECK(((pb.array() - S(0.75)).abs() < 1e-15).all());
}

TEST_CASE_TEMPLATE("softmax pooling: JVP against central differences, VJP its exact transpose", S, double,
                   std::complex<double>) {
  const MapShape in{3, 4, 6};
  const MapShape out = pooled(in);
  const Mat<S> v = random_matrix<S>(in.size(), 2, 2, 1.0, 0.3);
  Mat<S> dv = random_matrix<S>(in.size(), 2, 3, 1.0, 0.3);
  if constexpr (is_complex_v<S>) dv *= S(0.3, 0.9);  // a complex direction: checks holomorphy
  Mat<S> jvp(out.size(), 2), plus(out.size(), 2), minus(out.size(), 2);
  softmax_pool_jvp<S>(in, v, dv, jvp);
  // Central differences: truncation ε² P‴/6 ≈ 1e-10, rounding ε_mach / ε ≈ 1e-11 (ε = 1e-5).
  const double eps = 1e-5;
  softmax_pool<S>(in, v + S(eps) * dv, plus);
  softmax_pool<S>(in, v - S(eps) * dv, minus);
  const Mat<S> fd = (plus - minus) / S(2 * eps);
  CHECK((jvp - fd).norm() <= 1e-8 * fd.norm());
  // ⟨g, J dv⟩ = ⟨Jᵀ g, dv⟩ in the bilinear product: to rounding.
  const Mat<S> g = random_matrix<S>(out.size(), 2, 4, 1.0, 0.3);
  Mat<S> vjp(in.size(), 2);
  softmax_pool_vjp<S>(in, v, g, vjp);
  CHECK(dot_rel_err<S>(g, jvp, vjp, dv) < 1e-14);
  // Each input value belongs to exactly one window: the VJP of a one-hot g is that window's
  // gradient and zero elsewhere.
  Mat<S> one = Mat<S>::Zero(out.size(), 2);
  one(4, 1) = S(1);
  softmax_pool_vjp<S>(in, v, one, vjp);
  CHECK((vjp.col(0).array() == S(0)).all());
  CHECK((vjp.col(1).array() != S(0)).count() == 4);
}

TEST_CASE("softmax pooling: float agrees with double to float rounding") {
  const MapShape in{2, 6, 4};
  const Mat<double> v = random_matrix<double>(in.size(), 3, 5, 1.0, 0.3),
                    g = random_matrix<double>(pooled(in).size(), 3, 6, 1.0, 0.3);
  Mat<double> pd(pooled(in).size(), 3), vd(in.size(), 3);
  Mat<float> pf(pooled(in).size(), 3), vf(in.size(), 3);
  softmax_pool<double>(in, v, pd);
  softmax_pool<float>(in, v.cast<float>(), pf);
  softmax_pool_vjp<double>(in, v, g, vd);
  softmax_pool_vjp<float>(in, v.cast<float>(), g.cast<float>(), vf);
  // A handful of float operations on values of order 1: relative error a few 1e-7.
  CHECK((pf.cast<double>() - pd).norm() <= 1e-6 * pd.norm());
  CHECK((vf.cast<double>() - vd).norm() <= 1e-6 * vd.norm());
}

TEST_CASE("softmax pooling: odd maps and mismatched matrices are refused") {
  Mat<double> v(3 * 5 * 4, 1), p(3 * 2 * 2, 1);
  CHECK_THROWS_AS(softmax_pool<double>(MapShape{3, 5, 4}, v, p), std::invalid_argument);
  Mat<double> w(3 * 4 * 4, 2), q(3 * 2 * 2, 1);
  CHECK_THROWS_AS(softmax_pool<double>(MapShape{3, 4, 4}, w, q), std::invalid_argument);
}

TEST_CASE_TEMPLATE("softmax pooling: the Hessian-vector product differentiates the VJP, and is symmetric", S, double,
                   std::complex<double>) {
  const MapShape in{2, 4, 4};
  const Mat<S> v = random_matrix<S>(in.size(), 2, 7, 1.0, 0.3), g = random_matrix<S>(pooled(in).size(), 2, 8, 1.0, 0.3);
  Mat<S> dv = random_matrix<S>(in.size(), 2, 9, 1.0, 0.3), dw = random_matrix<S>(in.size(), 2, 10, 1.0, 0.3);
  if constexpr (is_complex_v<S>) dv *= S(0.6, -0.8);
  Mat<S> hvp(in.size(), 2), plus(in.size(), 2), minus(in.size(), 2);
  softmax_pool_hvp<S>(in, v, g, dv, hvp);
  // d/dε [J_P(v + ε dv)ᵀ g] by central differences (same error budget as the JVP test).
  const double eps = 1e-5;
  softmax_pool_vjp<S>(in, v + S(eps) * dv, g, plus);
  softmax_pool_vjp<S>(in, v - S(eps) * dv, g, minus);
  const Mat<S> fd = (plus - minus) / S(2 * eps);
  CHECK((hvp - fd).norm() <= 1e-8 * fd.norm());
  // Σ_q g_q ∇²P_q is a symmetric matrix: ⟨dw, H dv⟩ = ⟨dv, H dw⟩.
  Mat<S> hw(in.size(), 2);
  softmax_pool_hvp<S>(in, v, g, dw, hw);
  CHECK(dot_rel_err<S>(dw, hvp, dv, hw) < 1e-14);
}
