#pragma once
// Shared helpers of the test suite: a random batch for a network, relative errors.
#include <cmath>

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
