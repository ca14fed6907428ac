#pragma once
// Network description (SPEC 2.1, 5): named layers, directed edges pre -> post, and the flat
// parameter vector θ with the position of every kernel and bias in it.
//
//   G_post(s, x) = Σ_{edges pre->post} K_e s_pre + b_e          (s_in = x, the input)
//
// K_e is a (post x pre) column-major matrix ("K s_pre"), b_e optional (edge kind dense_nobias has
// none). The readout (SPEC 2.3) `logits = W_r s_out + b_r` has W_r (classes x |out|).
// Layers may have a shape C x H x W (planar, as the datasets' images); convolutional edges
// (sim/conv/conv_edge.hpp) join shaped layers: `conv` adds P(conv_K(s_pre) + b) (K: C_post x
// C_pre·k·k, b one per output channel), `conv_feedback` adds to its lower layer the VJP of its
// forward partner's pathway with its own kernel B of the same shape. A dense edge from a shaped
// layer reads it flattened.
// Architectures are data: a JSON file or one of the built-ins `mlp_2-256`, `loop_mnist`.
// The input is the non-dynamical layer "in"; the state holds every other layer, stacked in the
// order the architecture declares them ("neuron order").
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sim/conv/conv_edge.hpp"
#include "sim/types.hpp"

namespace hepsim {

enum class EdgeKind {
  dense,          // K s_pre + b
  dense_nobias,   // K s_pre
  conv,           // P(conv_K(s_pre) + b), b unless `bias` is false
  conv_feedback,  // conv_Bᵀ(P'(conv_B s_post)ᵀ s_pre): the partner of a conv edge post -> pre
};

struct LayerSpec {
  std::string name;
  Index size = 0;   // neurons (> 0); C·H·W for a shaped layer
  MapShape shape{0, 0, 0};  // C x H x W, or {0, 0, 0} for an unshaped (dense) layer
};

struct EdgeSpec {
  std::string pre;   // a layer name or "in"
  std::string post;  // a layer name (never "in")
  EdgeKind kind = EdgeKind::dense;
  // Convolutions only:
  Index kernel = 3;     // odd kernel size k (k x k taps)
  bool same = true;     // padding "same" ((k − 1)/2 zeros: H x W kept) or "valid" (none)
  Index pad = -1;       // explicit zeros on each side (≥ 0; JSON "padding": n), overriding `same`
  bool pool = true;     // 2x2 softmax pooling ("softmax2") or none
  bool bias = true;     // conv: a bias per output channel (conv_feedback never has one)
  // conv_feedback: the options it names; the others are its forward partner's.
  bool names_kernel = true, names_padding = true, names_pool = true;
};

struct Architecture {
  std::string name;
  std::vector<LayerSpec> layers;  // the state layers, in neuron order; must contain "out"
  std::vector<EdgeSpec> edges;
  Index input_size = 0;  // size of "in" (from the dataset)
  MapShape input_shape{0, 0, 0};  // C x H x W of "in" for convolutions ({0, 0, 0}: unshaped)
  Index classes = 0;     // readout classes (from the dataset)
  std::string source = "--arch";  // where it came from (a file path), named by compile's errors
};

// Built-in architectures by name (SPEC 2.1). The MLP output layer `out` has `classes` neurons.
// `cnn` is the paper's CNN (32x32 inputs, 128/256/512/512 channels) and `cnn_small` the same
// topology with a quarter of the channels; both take the input's channel count from the data and
// read 28x28 images as zero-padded to 32x32 (their input convolution pads 3 instead of 1).
std::vector<std::string> builtin_architecture_names();
// The activation a built-in is meant for (SPEC 2.2: dsilu for the CNNs, sigmoid otherwise).
std::string default_activation(const std::string& name_or_path);
// `name_or_path` is a built-in name or a JSON file; bad names/files throw InputError naming them.
Architecture load_architecture(const std::string& name_or_path, Index input_size, Index classes,
                               MapShape input_shape = {0, 0, 0});
// JSON text: {"name": s, "layers": [{"name": s, "size": n | "classes"} | {"name": s, "shape":
// [C, H, W]}], "edges": [{"pre": s, "post": s, "type": "dense" | "dense_nobias" | "conv" |
// "conv_feedback", and for convolutions "kernel": k, "padding": "same" | "valid", "pool":
// "softmax2" | "none", "bias": true | false (conv only)}]}; unknown keys are errors. `where` names
// the source. `input_shape` is the shape of "in" (convolutions need it; {0,0,0}: flat input).
Architecture parse_architecture(const std::string& json_text, const std::string& where, Index input_size,
                                Index classes, MapShape input_shape = {0, 0, 0});

struct Layer {
  std::string name;
  Index size = 0;
  Index offset = 0;  // first row of this layer in the state
  MapShape shape{0, 0, 0};  // C x H x W; {0, 0, 0} when unshaped
  bool shaped() const { return shape.c > 0; }
};

struct Edge {
  std::string name;        // "pre-post"
  int pre = 0;             // layer index, or Network::kInput
  int post = 0;            // layer index
  bool bias = false;
  EdgeKind kind = EdgeKind::dense;
  // K is rows x cols = |post| x |pre| (dense) or C_upper x C_lower·k·k (conv, conv_feedback: the
  // forward pathway's kernel shape); a conv bias has one value per output channel.
  Index rows = 0, cols = 0;
  ConvEdgeGeometry conv;     // conv: pre -> post; conv_feedback: its forward partner's (post -> pre)
  bool is_conv() const { return kind == EdgeKind::conv || kind == EdgeKind::conv_feedback; }
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
  bool has_conv() const;                               // any conv or conv_feedback edge
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
// edges, no edges into "in"; convolutions between shaped layers whose kernel, padding and pooling
// produce the post layer's shape, an odd kernel, and a conv_feedback edge only beside a forward
// conv partner of the same kernel, padding and pooling; throws InputError naming `where`
// (default: arch.source) and the edge.
Network compile(const Architecture& arch, const std::string& where = "");

// Multiply-adds × 2 of one evaluation of an edge's term for one sample: 2·|post|·|pre| for a
// dense edge, 2·C_out·C_in·k²·H_out·W_out for a convolution (its pooling is not counted), twice
// that for a conv_feedback edge (the convolution and its transpose).
double edge_flops(const Edge& e);

// Bytes of the convolutions' im2col buffers (patches and their gradient, H_out·W_out x C_in·k²
// each, per conv edge) of one relaxing thread, for scalars of `scalar` bytes.
double conv_work_bytes(const Network& net, double scalar);

// Values of the recurrent convolutions' pre-pool products of one sample (Σ over conv and
// conv_feedback edges not from the input of C_out·H_out·W_out): what a linearisation caches per
// column (ConvCache::z), for memory estimates.
double conv_product_values(const Network& net);

// Throws InputError naming --arch when `net` has convolutional edges: `what` assumes a
// state-independent Jacobian (the dense H, its block norms, the dense homeostasis), which a conv
// network does not have; its state-dependent counterparts take the states (field.hpp's
// linearize/add_jvp/add_vjp, jacobian.hpp's *_at_states).
void require_dense(const Network& net, const std::string& what);

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
// Convolutional pairs mix without the transpose (K_fb <- sin(α) K_fb + cos(α) K_ff: the
// feedback pathway already is the forward one's transpose when B = K).
template <class R>
void apply_angle(const Network& net, Vec<R>& theta, double angle_deg);

// arccos(Σ⟨K_ff, K_fbᵀ⟩ / sqrt(Σ‖K_ff‖² Σ‖K_fb‖²)) in degrees over all reciprocal pairs
// (⟨K_ff, K_fb⟩ for convolutional pairs); NaN when the network has none (e.g. loop_mnist).
template <class R>
double weight_angle_deg(const Network& net, const Vec<R>& theta);

}  // namespace hepsim
