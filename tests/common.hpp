#pragma once
// Shared helpers of the test suite: a random batch for a network, relative errors.
#include <cmath>
#include <complex>

#include "sim/sim.hpp"

namespace hepsim::testing {

struct RandomBatch {
  Mat<double> x;  // input_size x B, uniform on [0, 1) like normalised pixels
  Mat<double> y;  // classes x B, one-hot
};

inline RandomBatch random_batch(const Network& net, Index batch, std::uint64_t seed) {
  Rng rng(seed, Stream::data);
  RandomBatch b{Mat<double>(net.input_size, batch), Mat<double>::Zero(net.classes, batch)};
  for (Index i = 0; i < b.x.size(); ++i) b.x.data()[i] = rng.uniform();
  for (Index j = 0; j < batch; ++j) b.y(static_cast<Index>(rng.below(static_cast<std::uint64_t>(net.classes))), j) = 1;
  return b;
}

// Entries uniform in [−scale, scale] (the real parts) and [−imag·scale, imag·scale] (the imaginary
// parts, complex S only), from the stream "probes" of `seed`.
template <class S>
Mat<S> random_matrix(Index rows, Index cols, std::uint64_t seed, double scale = 1.0, double imag = 1.0) {
  Rng rng(seed, Stream::probes);
  Mat<S> m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) {
    const double re = scale * (2 * rng.uniform() - 1), im = imag * scale * (2 * rng.uniform() - 1);
    if constexpr (is_complex_v<S>)
      m(i) = S(static_cast<RealOf<S>>(re), static_cast<RealOf<S>>(im));
    else
      m(i) = static_cast<S>(re);
  }
  return m;
}

// A value as complex<long double>, for references evaluated in extended precision.
template <class S>
std::complex<long double> to_cld(S z) {
  if constexpr (is_complex_v<S>)
    return {static_cast<long double>(z.real()), static_cast<long double>(z.imag())};
  else
    return {static_cast<long double>(z), 0.0L};
}

template <class A, class B>
double rel_err(const A& est, const B& ref) {
  return static_cast<double>((est - ref).norm()) / static_cast<double>(ref.norm());
}

inline Model make_model(const std::string& arch, Index input = 784, Index classes = 10) {
  Model m;
  m.net = compile(load_architecture(arch, input, classes));
  return m;
}

}  // namespace hepsim::testing

namespace hepsim::testing {

// A small dense network for exact checks that need many relaxations: in(12) -> h1(16) <-> h2(12)
// <-> out(5), plus (with `ring`) a feedback edge out -> h1 that has no forward partner, so the
// network is not symmetric even at angle 0.
inline Model small_model(bool ring = true) {
  const std::string json = std::string(R"({"name": "small", "layers": [{"name": "h1", "size": 16}, {"name": "h2", "size": 12},
      {"name": "out", "size": "classes"}],
    "edges": [{"pre": "in", "post": "h1"}, {"pre": "h1", "post": "h2"}, {"pre": "h2", "post": "h1", "type": "dense_nobias"},
              {"pre": "h2", "post": "out"}, {"pre": "out", "post": "h2", "type": "dense_nobias"})") +
      (ring ? R"(, {"pre": "out", "post": "h1", "type": "dense_nobias"})" : "") + "]}";
  Model m;
  m.net = compile(parse_architecture(json, "small", 12, 5));
  return m;
}

// in(1) -> h(2) <-> out(2) with K_{out←h} = K_{h←out} = w I (an exactly symmetric pair), input
// weights 0 and biases c_h, c_out: two copies of the 2-neuron system
//   u_h ← c_h + w σ(u_out),   u_out ← c_out + w σ(u_h).
// With w = −3, c = (1.5, 1.4) the synchronous map from u = 0 alternates between (low, low) and
// (high, high) (amplitude ≈ 2.9), while the flow settles at (high, low) ≈ (1.499, −1.546), a
// fixed point whose map eigenvalues are ±0.027 (NumPy check of the same system).
inline Model pair_model() {
  const std::string json = R"({"name": "pair", "layers": [{"name": "h", "size": 2}, {"name": "out", "size": "classes"}],
    "edges": [{"pre": "in", "post": "h"}, {"pre": "h", "post": "out"}, {"pre": "out", "post": "h", "type": "dense_nobias"}]})";
  Model m;
  m.net = compile(parse_architecture(json, "pair", 1, 2));
  return m;
}

inline Vec<double> pair_theta(const Network& net, double w, double c_h, double c_out) {
  Vec<double> theta = Vec<double>::Zero(net.n_params);
  for (std::size_t e = 0; e < net.edges.size(); ++e) {
    const Edge& ed = net.edges[e];
    if (ed.pre != Network::kInput) kernel(net, theta, static_cast<int>(e)).setIdentity() *= w;
    if (ed.bias) theta.segment(ed.b_offset, ed.rows).setConstant(ed.pre == Network::kInput ? c_h : c_out);
  }
  Eigen::Map<Mat<double>>(theta.data() + net.readout_w_offset, net.classes, 2).setIdentity();
  return theta;
}

}  // namespace hepsim::testing

namespace hepsim::testing {

// A tiny CNN on 2x8x8 inputs (dsilu): c1[4x4x4] <-> c2[6x2x2] by a 3x3 'same' conv with 2x2
// softmax pooling and its conv_feedback partner, the input conv in -> c1, and c2 <-> out dense.
// At angle 0 every pair is exactly transposed, so its Jacobian is symmetric at every state.
inline Model tiny_cnn() {
  Model m;
  m.net = compile(parse_architecture(R"({"name": "tiny_cnn", "layers": [
      {"name": "c1", "shape": [4, 4, 4]}, {"name": "c2", "shape": [6, 2, 2]}, {"name": "out", "size": "classes"}],
    "edges": [{"pre": "in", "post": "c1", "type": "conv"},
              {"pre": "c1", "post": "c2", "type": "conv"},
              {"pre": "c2", "post": "c1", "type": "conv_feedback"},
              {"pre": "c2", "post": "out"}, {"pre": "out", "post": "c2", "type": "dense_nobias"}]})",
                                     "tiny_cnn", 128, 3, MapShape{2, 8, 8}));
  m.activation = Activation::dsilu;
  return m;
}

}  // namespace hepsim::testing
