#include "sim/activation.hpp"

#include <cmath>

#include "sim/error.hpp"

namespace hepsim {
namespace {

// Logistic L(w) = 1 / (1 + e^{-w}) for complex w without overflow: |e^{∓w}| ≤ 1 on each branch.
template <class C>
C logistic_c(C w) {
  using R = typename C::value_type;
  if (w.real() >= R(0)) return R(1) / (R(1) + std::exp(-w));
  const C e = std::exp(w);
  return e / (R(1) + e);
}

template <class S>
S logistic(S w) {
  if constexpr (is_complex_v<S>) {
    return logistic_c(w);
  } else {
    return S(1) / (S(1) + std::exp(-w));
  }
}

}  // namespace

Activation parse_activation(const std::string& name, const std::string& where) {
  if (name == "sigmoid") return Activation::sigmoid;
  if (name == "dsilu") return Activation::dsilu;
  throw InputError(where, "unknown activation '" + name + "' (expected sigmoid or dsilu)");
}

const char* to_string(Activation a) { return a == Activation::sigmoid ? "sigmoid" : "dsilu"; }

template <class S>
S activate(Activation a, S z) {
  using R = RealOf<S>;
  if (a == Activation::sigmoid) return logistic<S>(R(4) * z - R(2));
  return R(0.5) * z * logistic<S>(z) + (R(1) - R(0.5) * z) * logistic<S>(z - R(2));
}

template <class S>
S activate_deriv(Activation a, S z) {
  using R = RealOf<S>;
  if (a == Activation::sigmoid) {
    const S s = logistic<S>(R(4) * z - R(2));
    return R(4) * s * (R(1) - s);
  }
  const S l0 = logistic<S>(z), l2 = logistic<S>(z - R(2));
  return R(0.5) * l0 + R(0.5) * z * l0 * (R(1) - l0) - R(0.5) * l2 + (R(1) - R(0.5) * z) * l2 * (R(1) - l2);
}

template <class S>
void activate(Activation a, const CMatRef<S>& u, MatRef<S> s) {
  using R = RealOf<S>;
  if constexpr (is_complex_v<S>) {
    for (Index j = 0; j < u.cols(); ++j)
      for (Index i = 0; i < u.rows(); ++i) s(i, j) = activate<S>(a, u(i, j));
  } else {
    const auto z = u.array();
    if (a == Activation::sigmoid) {
      s.array() = ((R(2) - R(4) * z).exp() + R(1)).inverse();
    } else {
      s.array() = R(0.5) * z * ((-z).exp() + R(1)).inverse() +
                  (R(1) - R(0.5) * z) * ((R(2) - z).exp() + R(1)).inverse();
    }
  }
}

template <class S>
void activate_deriv(Activation a, const CMatRef<S>& u, MatRef<S> d) {
  using R = RealOf<S>;
  if constexpr (is_complex_v<S>) {
    for (Index j = 0; j < u.cols(); ++j)
      for (Index i = 0; i < u.rows(); ++i) d(i, j) = activate_deriv<S>(a, u(i, j));
  } else {
    const auto z = u.array();
    if (a == Activation::sigmoid) {
      d.array() = ((R(2) - R(4) * z).exp() + R(1)).inverse();  // σ, then 4σ(1-σ) in place
      d.array() = R(4) * d.array() * (R(1) - d.array());
    } else {
      for (Index j = 0; j < u.cols(); ++j)
        for (Index i = 0; i < u.rows(); ++i) d(i, j) = activate_deriv<S>(a, u(i, j));
    }
  }
}

#define HEPSIM_INSTANTIATE(S)                                             \
  template S activate<S>(Activation, S);                                  \
  template S activate_deriv<S>(Activation, S);                            \
  template void activate<S>(Activation, const CMatRef<S>&, MatRef<S>);    \
  template void activate_deriv<S>(Activation, const CMatRef<S>&, MatRef<S>);
HEPSIM_INSTANTIATE(float)
HEPSIM_INSTANTIATE(double)
HEPSIM_INSTANTIATE(std::complex<float>)
HEPSIM_INSTANTIATE(std::complex<double>)
#undef HEPSIM_INSTANTIATE

}  // namespace hepsim
