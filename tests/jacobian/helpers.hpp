#pragma once
// Small networks for the Jacobian tests.
#include "../common.hpp"
#include "jacobian/jacobian.hpp"

namespace hepsim::testing {

// Every kind of recurrent block in 15 neurons: a reciprocal pair (h-g, g-h), a second pair
// (g-out, out-g), a self-loop h-h (its block sits on the diagonal of H) and an unpaired edge
// out-h (its transpose block h-out is empty), plus input kernels and biases that the
// homeostatic gradient must leave alone.
inline Network all_blocks_net() {
  Architecture a;
  a.name = "all_blocks";
  a.input_size = 3;
  a.classes = 3;
  a.layers = {{"h", 6}, {"g", 5}, {"out", 4}};
  a.edges = {{"in", "h", EdgeKind::dense},        {"h", "h", EdgeKind::dense_nobias},
             {"h", "g", EdgeKind::dense},         {"g", "h", EdgeKind::dense_nobias},
             {"g", "out", EdgeKind::dense},       {"out", "g", EdgeKind::dense_nobias},
             {"out", "h", EdgeKind::dense_nobias}};
  return compile(a);
}

// A small MLP like mlp_2-256 (pairs only): 20-16-10.
inline Network small_mlp() {
  Architecture a;
  a.name = "small_mlp";
  a.input_size = 12;
  a.classes = 10;
  a.layers = {{"l1", 20}, {"l2", 16}, {"out", 10}};
  a.edges = {{"in", "l1", EdgeKind::dense},
             {"l1", "l2", EdgeKind::dense},
             {"l2", "l1", EdgeKind::dense_nobias},
             {"l2", "out", EdgeKind::dense},
             {"out", "l2", EdgeKind::dense_nobias}};
  return compile(a);
}

// Random parameters everywhere (biases too, so that a stray bias gradient would show).
template <class R>
Vec<R> random_theta(const Network& net, std::uint64_t seed) {
  Vec<R> th = init_params<R>(net, seed, 90.0);
  Rng rng(seed, Stream::data, 99);
  for (const ParamBlock& b : net.blocks)
    if (b.bias)
      for (Index i = 0; i < b.size(); ++i) th[b.offset + i] = static_cast<R>(0.1 * rng.normal());
  return th;
}

// θ-layout mask: 1 on the recurrent kernels (the only blocks with a homeostatic gradient).
inline Vec<double> recurrent_mask(const Network& net) {
  Vec<double> m = Vec<double>::Zero(net.n_params);
  for (const Edge& e : net.edges)
    if (e.pre != Network::kInput) m.segment(e.k_offset, e.rows * e.cols).setOnes();
  return m;
}

// Central differences of f at θ along every coordinate, step h. For a dense network f is a
// quadratic in θ (both the exact loss and the Hutchinson estimate for fixed probes), so the
// truncation error is exactly zero and only rounding remains: ≈ ε|f|/h per coordinate, 1e-13
// with the default h = 1e-2. A conv network's is not: there h ~ 1e-5 balances the O(h²)
// truncation against the rounding.
template <class F>
Vec<double> central_differences(const Vec<double>& theta, F f, double h = 1e-2) {
  Vec<double> g(theta.size()), th = theta;
  for (Index i = 0; i < theta.size(); ++i) {
    th[i] = theta[i] + h;
    const double fp = f(th);
    th[i] = theta[i] - h;
    const double fm = f(th);
    th[i] = theta[i];
    g[i] = (fp - fm) / (2 * h);
  }
  return g;
}

}  // namespace hepsim::testing
