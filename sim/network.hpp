#pragma once
// Network description (SPEC 2.1, 5): named layers, directed edges pre -> post, and the flat
// parameter vector θ with the position of every kernel and bias in it.
//
//   G_post(s, x) = Σ_{edges pre->post} K_e s_pre + b_e          (s_in = x, the input)
//
// K_e is a (post x pre) column-major matrix ("K s_pre"), b_e optional (edge kind dense_nobias has
// none). The readout (SPEC 2.3) `logits = W_r s_out + b_r` has W_r (classes x |out|).
// Architectures are data: a JSON file or one of the built-ins `mlp_2-256`, `loop_mnist`.
// The input is the non-dynamical layer "in"; the state holds every other layer, stacked in the
// order the architecture declares them ("neuron order").
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sim/types.hpp"

namespace hepsim {

enum class EdgeKind {
  dense,         // K s_pre + b
  dense_nobias,  // K s_pre
};

struct LayerSpec {
  std::string name;
  Index size = 0;  // neurons (> 0)
};

struct EdgeSpec {
  std::string pre;   // a layer name or "in"
  std::string post;  // a layer name (never "in")
  EdgeKind kind = EdgeKind::dense;
};

struct Architecture {
  std::string name;
  std::vector<LayerSpec> layers;  // the state layers, in neuron order; must contain "out"
  std::vector<EdgeSpec> edges;
  Index input_size = 0;  // size of "in" (from the dataset)
  Index classes = 0;     // readout classes (from the dataset)
  std::string source = "--arch";  // where it came from (a file path), named by compile's errors
};

// Built-in architectures by name (SPEC 2.1). The MLP output layer `out` has `classes` neurons.
std::vector<std::string> builtin_architecture_names();
// `name_or_path` is a built-in name or a JSON file; bad names/files throw InputError naming them.
Architecture load_architecture(const std::string& name_or_path, Index input_size, Index classes);
// JSON text: {"name": s, "layers": [{"name": s, "size": n | "classes"}], "edges": [{"pre": s,
// "post": s, "type": "dense" | "dense_nobias"}]}; unknown keys are errors. `where` names the source.
Architecture parse_architecture(const std::string& json_text, const std::string& where, Index input_size,
                                Index classes);

struct Layer {
  std::string name;
  Index size = 0;
  Index offset = 0;  // first row of this layer in the state
};

struct Edge {
  std::string name;        // "pre-post"
  int pre = 0;             // layer index, or Network::kInput
  int post = 0;            // layer index
  bool bias = false;
  Index rows = 0, cols = 0;  // K is rows x cols = |post| x |pre|
  Index k_offset = 0;        // K in θ (column-major)
  Index b_offset = -1;       // b in θ, -1 without bias
  int partner = -1;          // the reciprocal edge post -> pre, if any
  bool feedback = false;     // true for the feedback half of a reciprocal pair (SPEC 5)
};

// A contiguous block of θ with a name ("l1-l2.K", "readout.b", …): learning-rate multipliers,
// checkpoints and logs address parameters by these names.
struct ParamBlock {
  std::string name;
  Index offset = 0, rows = 0, cols = 0;  // a rows x cols column-major matrix (cols = 1 for a bias)
  int edge = -1;                         // owning edge, -1 for the readout
  bool bias = false;                     // a bias vector (initialised to zero)
  Index size() const { return rows * cols; }
};

struct Network {
  static constexpr int kInput = -1;
  std::string name;
  std::vector<Layer> layers;
  std::vector<Edge> edges;
  std::vector<ParamBlock> blocks;
  Index input_size = 0, classes = 0;
  Index neurons = 0;  // state size: Σ layer sizes
  int out = -1;       // index of the layer named "out"
  Index readout_w_offset = 0, readout_b_offset = 0;
  Index n_params = 0;

  int layer_index(std::string_view layer_name) const;  // -1 when absent
  // Reciprocal pairs (forward edge, feedback edge), the feedback being the bias-free one
  // (or the later-declared one when both or neither have a bias).
  std::vector<std::pair<int, int>> reciprocal_pairs() const;
};

// The architecture of a compiled network as JSON in the format of parse_architecture (numeric
// layer sizes), e.g. for checkpoints: parse_architecture(to_json(net), …) compiles to `net` again.
std::string to_json(const Network& net);

// Validates the architecture: layer names that HDF5 and the checkpoint can store (1–64
// characters, no '/', no control character, not only dots, not "in"), unique layer and edge
// names, existing endpoints, an `out` layer reached from `in` by some path of edges, no duplicate
// edges, no edges into "in"; throws InputError naming `where` (default: arch.source).
Network compile(const Architecture& arch, const std::string& where = "");

// Views into θ (no copies).
template <class R>
Eigen::Map<const Mat<R>> kernel(const Network& net, const Vec<R>& theta, int e) {
  const Edge& ed = net.edges[static_cast<std::size_t>(e)];
  return {theta.data() + ed.k_offset, ed.rows, ed.cols};
}
template <class R>
Eigen::Map<Mat<R>> kernel(const Network& net, Vec<R>& theta, int e) {
  const Edge& ed = net.edges[static_cast<std::size_t>(e)];
  return {theta.data() + ed.k_offset, ed.rows, ed.cols};
}
template <class R>
Eigen::Map<const Mat<R>> readout_weights(const Network& net, const Vec<R>& theta) {
  return {theta.data() + net.readout_w_offset, net.classes, net.layers[static_cast<std::size_t>(net.out)].size};
}
template <class R>
Eigen::Map<const Vec<R>> readout_bias(const Network& net, const Vec<R>& theta) {
  return {theta.data() + net.readout_b_offset, net.classes};
}

// SPEC 5 initialisation: every kernel (and the readout) truncated normal on [-2, 2] scaled to
// variance 1/fan_in (fan_in = |pre|), biases zero; then the angle mix of `apply_angle`.
// Deterministic for a seed (stream "init"), independent of threads and platform.
template <class R>
Vec<R> init_params(const Network& net, std::uint64_t seed, double angle_deg);

// For each reciprocal pair: K_fb <- sin(α) K_fb + cos(α) K_ffᵀ. α = 0: exactly transposed.
template <class R>
void apply_angle(const Network& net, Vec<R>& theta, double angle_deg);

// arccos(Σ⟨K_ff, K_fbᵀ⟩ / sqrt(Σ‖K_ff‖² Σ‖K_fb‖²)) in degrees over all reciprocal pairs;
// NaN when the network has none (e.g. loop_mnist).
template <class R>
double weight_angle_deg(const Network& net, const Vec<R>& theta);

}  // namespace hepsim
