#pragma once
// Activations (SPEC 2.2). Holomorphic: each accepts complex arguments (they have complex poles,
// so complex fixed points exist only for moderate |β|).
//   sigmoid(z) = 1 / (1 + exp(-4z + 2))                       σ'(z) = 4 σ(z) (1 - σ(z))
//   dsilu(z)   = ½ z L(z) + (1 - ½ z) L(z - 2),   L(w) = 1 / (1 + exp(-w))
//   dsilu'(z)  = ½ L(z) + ½ z L(z)(1 - L(z)) - ½ L(z - 2) + (1 - ½ z) L(z - 2)(1 - L(z - 2))
// Real arguments use vectorised Eigen array expressions (IEEE overflow of exp gives the right
// limits 0 and 1); complex ones use the overflow-safe branch L(w) = e^{w} / (1 + e^{w}) for Re w < 0.
#include <string>

#include "sim/types.hpp"

namespace hepsim {

enum class Activation { sigmoid, dsilu };

// "sigmoid" | "dsilu"; anything else throws InputError naming `where`.
Activation parse_activation(const std::string& name, const std::string& where = "--activation");
const char* to_string(Activation a);

template <class S>
S activate(Activation a, S z);
template <class S>
S activate_deriv(Activation a, S z);

// s = σ(u), elementwise (s and u may alias).
template <class S>
void activate(Activation a, const CMatRef<S>& u, MatRef<S> s);
// d = σ'(u), elementwise.
template <class S>
void activate_deriv(Activation a, const CMatRef<S>& u, MatRef<S> d);

}  // namespace hepsim
