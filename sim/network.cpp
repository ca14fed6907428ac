#include "sim/network.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "sim/error.hpp"
#include "sim/json_strict.hpp"
#include "sim/random.hpp"

namespace hepsim {
namespace {

Architecture mlp_2_256(Index input_size, Index classes) {
  Architecture a;
  a.name = "mlp_2-256";
  a.layers = {{"l1", 256}, {"l2", 256}, {"out", classes}};
  a.edges = {{"in", "l1", EdgeKind::dense},
             {"l1", "l2", EdgeKind::dense},
             {"l2", "l1", EdgeKind::dense_nobias},
             {"l2", "out", EdgeKind::dense},
             {"out", "l2", EdgeKind::dense_nobias}};
  a.input_size = input_size;
  a.classes = classes;
  return a;
}

Architecture loop_mnist(Index input_size, Index classes) {
  Architecture a;
  a.name = "loop_mnist";
  a.layers = {{"l1", 256}, {"l2", 256}, {"out", classes}};
  a.edges = {{"in", "l1", EdgeKind::dense},
             {"l1", "l2", EdgeKind::dense},
             {"l2", "out", EdgeKind::dense},
             {"out", "l1", EdgeKind::dense_nobias}};
  a.input_size = input_size;
  a.classes = classes;
  return a;
}

// The paper's CNN (SPEC 2.1) with channels c1..c4: 3x3 convolutions with 2x2 softmax pooling
// in -> conv1 -> conv2 -> conv3 ('same') -> out ('valid': 4x4 -> 2x2, pooled to 1x1), each with a
// conv_feedback partner except into out's input; 28x28 inputs are padded to 32x32 by the first
// convolution (3 zeros per side instead of 1).
Architecture cnn(const std::string& name, Index c1, Index c2, Index c3, Index c4, MapShape input, Index classes) {
  if (input.c <= 0 || !((input.h == 32 && input.w == 32) || (input.h == 28 && input.w == 28)))
    throw InputError("--arch", name + " takes 32x32 images (28x28 ones are zero-padded to 32x32); this dataset's are " +
                                   (input.c > 0 ? std::to_string(input.h) + "x" + std::to_string(input.w) : "flat"));
  Architecture a;
  a.name = name;
  a.layers = {{"conv1", c1 * 256, {c1, 16, 16}}, {"conv2", c2 * 64, {c2, 8, 8}}, {"conv3", c3 * 16, {c3, 4, 4}},
              {"out", c4, {c4, 1, 1}}};
  EdgeSpec in{"in", "conv1", EdgeKind::conv};
  in.pad = input.h == 28 ? 3 : 1;
  EdgeSpec valid{"conv3", "out", EdgeKind::conv};
  valid.same = false;
  a.edges = {in,
             {"conv1", "conv2", EdgeKind::conv},
             {"conv2", "conv1", EdgeKind::conv_feedback},
             {"conv2", "conv3", EdgeKind::conv},
             {"conv3", "conv2", EdgeKind::conv_feedback},
             valid};
  EdgeSpec fb{"out", "conv3", EdgeKind::conv_feedback};
  fb.same = false;
  fb.bias = false;
  a.edges.push_back(fb);
  for (EdgeSpec& e : a.edges)
    if (e.kind == EdgeKind::conv_feedback) e.bias = false;
  a.input_size = input.size();
  a.input_shape = input;
  a.classes = classes;
  return a;
}

void check_keys(const nlohmann::json& j, std::initializer_list<const char*> allowed, const std::string& where,
                const std::string& what) {
  for (const auto& [key, value] : j.items()) {
    (void)value;
    if (std::none_of(allowed.begin(), allowed.end(), [&](const char* k) { return key == k; }))
      throw InputError(where, "unknown key '" + key + "' in " + what);
  }
}

// Layer names become HDF5 object names (/alignment/cos_delta_mean/<layer>, /params/<pre>-<post>.K)
// and keys of --lr-mult: a path separator, a name of only dots, a NUL or a control character
// cannot be stored, and nobody needs a layer name of more than 64 bytes.
void check_layer_name(const std::string& name, const std::string& where) {
  constexpr std::size_t kMaxName = 64;
  // At most 80 characters of it in the message (InputError shows control characters as \xNN).
  const std::string shown = name.size() > 80 ? name.substr(0, 80) + "…" : name;
  auto bad = [&](const std::string& why) { throw InputError(where, "invalid layer name '" + shown + "': " + why); };
  if (name.empty()) bad("empty");
  if (name == "in") bad("'in' is the input");
  if (name.size() > kMaxName) bad("longer than " + std::to_string(kMaxName) + " bytes (UTF-8)");
  if (name.find_first_not_of('.') == std::string::npos) bad("only dots");
  for (std::size_t i = 0; i < name.size(); ++i) {
    const auto ch = static_cast<unsigned char>(name[i]);
    if (ch == '/') bad("'/' cannot be part of an HDF5 name");
    if (ch < 0x20 || ch == 0x7f) bad("control character");
    // C1 controls U+0080..U+009F are 0xC2 0x80..0x9F in UTF-8.
    const auto next = i + 1 < name.size() ? static_cast<unsigned char>(name[i + 1]) : 0;
    if (ch == 0xc2 && next >= 0x80 && next <= 0x9f) bad("control character");
  }
}

}  // namespace

std::vector<std::string> builtin_architecture_names() { return {"mlp_2-256", "loop_mnist", "cnn", "cnn_small"}; }

std::string default_activation(const std::string& name_or_path) {
  return name_or_path == "cnn" || name_or_path == "cnn_small" ? "dsilu" : "sigmoid";
}

// 16.7 million neurons in one layer: far beyond any dense layer that fits in memory with its edges.
constexpr long long kMaxLayerSize = 1LL << 24;

Architecture parse_architecture(const std::string& json_text, const std::string& where, Index input_size,
                                Index classes, MapShape input_shape) {
  const nlohmann::json j = parse_json_strict(json_text, where);  // syntax, 1e999, trailing text, repeated keys
  if (!j.is_object()) throw InputError(where, "an architecture must be a JSON object");
  if (j.contains("name") && !j["name"].is_string()) throw InputError(where, "'name' must be a string");
  check_keys(j, {"name", "layers", "edges"}, where, "architecture");
  Architecture a;
  a.input_size = input_size;
  a.input_shape = input_shape;
  a.classes = classes;
  a.source = where;
  a.name = j.value("name", std::string("custom"));
  if (a.name.size() > 256) throw InputError(where, "'name' is longer than 256 characters");
  if (!j.contains("layers") || !j["layers"].is_array()) throw InputError(where, "missing array 'layers'");
  if (!j.contains("edges") || !j["edges"].is_array()) throw InputError(where, "missing array 'edges'");
  for (const auto& l : j["layers"]) {
    if (!l.is_object()) throw InputError(where, "each layer must be an object {\"name\", \"size\" or \"shape\"}");
    check_keys(l, {"name", "size", "shape"}, where, "layer");
    if (!l.contains("name") || !l["name"].is_string()) throw InputError(where, "layer without a string 'name'");
    LayerSpec ls;
    ls.name = l["name"].get<std::string>();
    if (l.contains("size") == l.contains("shape"))
      throw InputError(where, "layer '" + ls.name + "' needs exactly one of 'size' and 'shape'");
    if (l.contains("shape")) {
      const auto& sh = l["shape"];
      long long dims[3] = {0, 0, 0};
      bool ok = sh.is_array() && sh.size() == 3;
      for (std::size_t i = 0; ok && i < 3; ++i) {
        ok = sh[i].is_number_integer() && sh[i].get<long long>() > 0 && sh[i].get<long long>() <= 65536;
        if (ok) dims[i] = sh[i].get<long long>();
      }
      if (!ok || dims[0] * dims[1] * dims[2] > kMaxLayerSize)
        throw InputError(where, "layer '" + ls.name + "': 'shape' must be [C, H, W], each from 1 to 65536, with at most " +
                                    std::to_string(kMaxLayerSize) + " neurons");
      ls.shape = {static_cast<Index>(dims[0]), static_cast<Index>(dims[1]), static_cast<Index>(dims[2])};
      ls.size = ls.shape.size();
      a.layers.push_back(ls);
      continue;
    }
    const auto& sz = l["size"];
    if (sz.is_string() && sz.get<std::string>() == "classes") {
      ls.size = classes;
    } else if (sz.is_number_integer() && sz.get<long long>() > 0 && sz.get<long long>() <= kMaxLayerSize) {
      ls.size = static_cast<Index>(sz.get<long long>());
    } else {
      throw InputError(where, "layer '" + ls.name + "': 'size' must be an integer from 1 to " +
                                  std::to_string(kMaxLayerSize) + " or \"classes\"");
    }
    a.layers.push_back(ls);
  }
  for (const auto& e : j["edges"]) {
    if (!e.is_object()) throw InputError(where, "each edge must be an object {\"pre\", \"post\", \"type\"}");
    if (!e.contains("pre") || !e["pre"].is_string() || !e.contains("post") || !e["post"].is_string())
      throw InputError(where, "edge without string 'pre' and 'post'");
    EdgeSpec es;
    es.pre = e["pre"].get<std::string>();
    es.post = e["post"].get<std::string>();
    const std::string name = "edge " + es.pre + "-" + es.post;
    if (e.contains("type") && !e["type"].is_string()) throw InputError(where, name + ": 'type' must be a string");
    const std::string type = e.value("type", std::string("dense"));
    if (type == "dense" || type == "dense_nobias") {
      check_keys(e, {"pre", "post", "type"}, where, name);
      es.kind = type == "dense" ? EdgeKind::dense : EdgeKind::dense_nobias;
    } else if (type == "conv" || type == "conv_feedback") {
      const bool forward = type == "conv";
      if (forward)
        check_keys(e, {"pre", "post", "type", "kernel", "padding", "pool", "bias"}, where, name);
      else
        check_keys(e, {"pre", "post", "type", "kernel", "padding", "pool"}, where, name + " (a conv_feedback edge has no bias)");
      es.kind = forward ? EdgeKind::conv : EdgeKind::conv_feedback;
      if (e.contains("kernel")) {
        if (!e["kernel"].is_number_integer() || e["kernel"].get<long long>() < 1 || e["kernel"].get<long long>() > 15 ||
            e["kernel"].get<long long>() % 2 == 0)
          throw InputError(where, name + ": 'kernel' must be an odd integer from 1 to 15");
        es.kernel = static_cast<Index>(e["kernel"].get<long long>());
      }
      if (e.contains("padding")) {
        const auto& pj = e["padding"];
        if (pj.is_number_integer() && pj.get<long long>() >= 0 && pj.get<long long>() <= 64) {
          es.pad = static_cast<Index>(pj.get<long long>());
        } else {
          const std::string pad = pj.is_string() ? pj.get<std::string>() : "";
          if (pad != "same" && pad != "valid")
            throw InputError(where, name + ": 'padding' must be \"same\", \"valid\" or zeros per side from 0 to 64");
          es.same = pad == "same";
        }
      }
      if (e.contains("pool")) {
        const std::string pool = e["pool"].is_string() ? e["pool"].get<std::string>() : "";
        if (pool != "softmax2" && pool != "none") throw InputError(where, name + ": 'pool' must be \"softmax2\" or \"none\"");
        es.pool = pool == "softmax2";
      }
      if (e.contains("bias")) {
        if (!e["bias"].is_boolean()) throw InputError(where, name + ": 'bias' must be true or false");
        es.bias = e["bias"].get<bool>();
      }
      if (!forward) {
        es.bias = false;
        es.names_kernel = e.contains("kernel");
        es.names_padding = e.contains("padding");
        es.names_pool = e.contains("pool");
      }
    } else {
      throw InputError(where, name + ": unknown type '" + type + "' (dense, dense_nobias, conv or conv_feedback)");
    }
    a.edges.push_back(es);
  }
  return a;
}

Architecture load_architecture(const std::string& name_or_path, Index input_size, Index classes,
                               MapShape input_shape) {
  if (name_or_path == "mlp_2-256") return mlp_2_256(input_size, classes);
  if (name_or_path == "loop_mnist") return loop_mnist(input_size, classes);
  if (name_or_path == "cnn") return cnn("cnn", 128, 256, 512, 512, input_shape, classes);
  if (name_or_path == "cnn_small") return cnn("cnn_small", 32, 64, 128, 128, input_shape, classes);
  // A .json path, or a pipe (process substitution, <(…)): read as a file; any other name is a typo.
  struct stat st {};
  const bool pipe = ::stat(name_or_path.c_str(), &st) == 0 && S_ISFIFO(st.st_mode);
  if (!pipe && (name_or_path.size() < 5 || name_or_path.substr(name_or_path.size() - 5) != ".json")) {
    std::string names;
    for (const auto& n : builtin_architecture_names()) names += (names.empty() ? "" : ", ") + n;
    throw InputError("--arch", "'" + name_or_path + "' is neither a built-in (" + names + ") nor a .json file");
  }
  return parse_architecture(read_small_input(name_or_path, "an architecture file"), name_or_path, input_size, classes,
                            input_shape);
}

std::string to_json(const Network& net) {
  nlohmann::json j;
  j["name"] = net.name;
  j["layers"] = nlohmann::json::array();
  for (const Layer& l : net.layers) {
    if (l.shaped())
      j["layers"].push_back({{"name", l.name}, {"shape", {l.shape.c, l.shape.h, l.shape.w}}});
    else
      j["layers"].push_back({{"name", l.name}, {"size", l.size}});
  }
  j["edges"] = nlohmann::json::array();
  for (const Edge& e : net.edges) {
    nlohmann::json ej = {
        {"pre", e.pre == Network::kInput ? std::string("in") : net.layers[static_cast<std::size_t>(e.pre)].name},
        {"post", net.layers[static_cast<std::size_t>(e.post)].name}};
    switch (e.kind) {
      case EdgeKind::dense:
      case EdgeKind::dense_nobias:
        ej["type"] = e.bias ? "dense" : "dense_nobias";
        break;
      case EdgeKind::conv:
      case EdgeKind::conv_feedback:
        ej["type"] = e.kind == EdgeKind::conv ? "conv" : "conv_feedback";
        ej["kernel"] = e.conv.conv.k;
        if (e.conv.conv.pad == (e.conv.conv.k - 1) / 2)
          ej["padding"] = "same";
        else if (e.conv.conv.pad == 0)
          ej["padding"] = "valid";
        else
          ej["padding"] = e.conv.conv.pad;
        ej["pool"] = e.conv.pool ? "softmax2" : "none";
        if (e.kind == EdgeKind::conv) ej["bias"] = e.bias;
        break;
    }
    j["edges"].push_back(ej);
  }
  return j.dump();
}

double edge_flops(const Edge& e) {
  const double gemm = 2.0 * static_cast<double>(e.rows) * static_cast<double>(e.cols);
  if (!e.is_conv()) return gemm;
  const MapShape o = e.conv.conv.out();
  const double conv = gemm * static_cast<double>(o.h * o.w);
  return e.kind == EdgeKind::conv_feedback ? 2 * conv : conv;
}

double conv_work_bytes(const Network& net, double scalar) {
  double bytes = 0;
  for (const Edge& e : net.edges)
    if (e.is_conv()) {
      const MapShape o = e.conv.conv.out();
      bytes += 2 * static_cast<double>(o.h * o.w) * static_cast<double>(e.conv.conv.taps()) * scalar;
    }
  return bytes;
}

double conv_product_values(const Network& net) {
  double values = 0;
  for (const Edge& e : net.edges)
    if (e.is_conv() && e.pre != Network::kInput) values += static_cast<double>(e.conv.conv.out().size());
  return values;
}

void require_dense(const Network& net, const std::string& what) {
  if (net.has_conv())
    throw InputError("--arch", net.name + " has convolutional edges: " + what +
                                   " supports dense networks only so far (convolutional networks relax: hepsim relax)");
}

bool Network::has_conv() const {
  return std::any_of(edges.begin(), edges.end(), [](const Edge& e) { return e.is_conv(); });
}

int Network::layer_index(std::string_view layer_name) const {
  for (std::size_t i = 0; i < layers.size(); ++i)
    if (layers[i].name == layer_name) return static_cast<int>(i);
  return -1;
}

std::vector<std::pair<int, int>> Network::reciprocal_pairs() const {
  std::vector<std::pair<int, int>> p;
  for (std::size_t i = 0; i < edges.size(); ++i)
    if (edges[i].feedback) p.emplace_back(edges[i].partner, static_cast<int>(i));
  return p;
}

Network compile(const Architecture& arch, const std::string& where_given) {
  const std::string& where = where_given.empty() ? arch.source : where_given;
  Network net;
  net.name = arch.name;
  if (arch.input_size <= 0) throw InputError(where, "input size must be positive");
  if (arch.classes <= 0) throw InputError(where, "number of classes must be positive");
  net.input_size = arch.input_size;
  net.classes = arch.classes;
  // Lookups by name and by (pre, post) go through maps: an architecture of 10^5 layers compiles in
  // well under a second (linear scans made it quadratic: minutes).
  std::map<std::string, int, std::less<>> layer_of;
  for (const auto& l : arch.layers) {
    check_layer_name(l.name, where);
    if (!layer_of.emplace(l.name, static_cast<int>(net.layers.size())).second)
      throw InputError(where, "duplicate layer '" + l.name + "'");
    if (l.size <= 0) throw InputError(where, "layer '" + l.name + "' must have a positive size");
    if (l.shape.c > 0 && l.shape.size() != l.size)
      throw InputError(where, "layer '" + l.name + "': its shape does not hold its size");
    net.layers.push_back({l.name, l.size, net.neurons, l.shape});
    net.neurons += l.size;
  }
  auto index_of = [&](const std::string& name) {
    const auto it = layer_of.find(name);
    return it == layer_of.end() ? -1 : it->second;
  };
  net.out = index_of("out");
  if (net.out < 0) throw InputError(where, "the architecture has no layer named 'out'");

  std::map<std::pair<int, int>, int> edge_of;  // (pre, post) -> edge index
  std::set<std::string> edge_names;
  // The conv edges of the specification by (pre, post) names: a feedback conv's partner.
  std::map<std::pair<std::string, std::string>, const EdgeSpec*> conv_spec;
  for (const EdgeSpec& f : arch.edges)
    if (f.kind == EdgeKind::conv) conv_spec.emplace(std::make_pair(f.pre, f.post), &f);
  Index off = 0;
  for (const auto& es : arch.edges) {
    Edge e;
    e.name = es.pre + "-" + es.post;
    e.pre = es.pre == "in" ? Network::kInput : index_of(es.pre);
    e.post = index_of(es.post);
    if (es.post == "in") throw InputError(where, "edge " + e.name + ": the input 'in' cannot receive edges");
    if (e.pre == -1 && es.pre != "in") throw InputError(where, "edge " + e.name + ": unknown layer '" + es.pre + "'");
    if (e.post < 0) throw InputError(where, "edge " + e.name + ": unknown layer '" + es.post + "'");
    if (!edge_of.emplace(std::make_pair(e.pre, e.post), static_cast<int>(net.edges.size())).second)
      throw InputError(where, "duplicate edge " + e.name);
    // Edges are named "pre-post" in the checkpoint and --lr-mult: layers "a-b", "c" and "a", "b-c"
    // would give two edges one name.
    if (!edge_names.insert(e.name).second)
      throw InputError(where, "two edges are both named '" + e.name + "' (a layer name containing '-' makes "
                                  "edge names ambiguous): rename a layer");
    e.kind = es.kind;
    e.bias = es.kind == EdgeKind::dense || (es.kind == EdgeKind::conv && es.bias);
    e.rows = net.layers[static_cast<std::size_t>(e.post)].size;
    e.cols = e.pre == Network::kInput ? net.input_size : net.layers[static_cast<std::size_t>(e.pre)].size;
    if (e.is_conv()) {
      // A feedback conv takes the kernel, padding and pooling it does not name from its partner.
      EdgeSpec own = es;
      const auto partner = conv_spec.find(std::make_pair(es.post, es.pre));
      if (es.kind == EdgeKind::conv_feedback && partner != conv_spec.end()) {
        const EdgeSpec& f = *partner->second;
        if (!es.names_kernel) own.kernel = f.kernel;
        if (!es.names_padding) {
          own.same = f.same;
          own.pad = f.pad;
        }
        if (!es.names_pool) own.pool = f.pool;
      }
      // The forward pathway lower -> upper: the edge itself, or (feedback) the reverse.
      const bool fb = e.kind == EdgeKind::conv_feedback;
      const MapShape pre_shape = e.pre == Network::kInput ? arch.input_shape : net.layers[static_cast<std::size_t>(e.pre)].shape;
      const MapShape post_shape = net.layers[static_cast<std::size_t>(e.post)].shape;
      const MapShape lower = fb ? post_shape : pre_shape, upper = fb ? pre_shape : post_shape;
      auto name_of = [&](bool pre_side) {
        return pre_side ? (e.pre == Network::kInput ? std::string("the input") : "layer '" + es.pre + "'")
                        : "layer '" + es.post + "'";
      };
      if (pre_shape.c <= 0)
        throw InputError(where, "edge " + e.name + ": a convolution needs a shaped pre layer (" + name_of(true) +
                                    (e.pre == Network::kInput ? " of this dataset is flat)" : " has a 'size', not a 'shape')"));
      if (post_shape.c <= 0)
        throw InputError(where, "edge " + e.name + ": a convolution needs a shaped post layer (" + name_of(false) +
                                    " has a 'size', not a 'shape')");
      if (fb && e.pre == Network::kInput) throw InputError(where, "edge " + e.name + ": the input cannot feed back");
      e.conv.conv = {lower, upper.c, own.kernel, own.pad >= 0 ? own.pad : own.same ? (own.kernel - 1) / 2 : 0};
      e.conv.pool = own.pool;
      const MapShape conv_out = e.conv.conv.out();
      auto str = [](const MapShape& m) {
        return std::to_string(m.c) + "x" + std::to_string(m.h) + "x" + std::to_string(m.w);
      };
      const std::string padding =
          own.pad >= 0 ? std::to_string(own.pad) + "-zero-padded" : std::string("'") + (own.same ? "same" : "valid") + "'";
      const std::string what = std::to_string(own.kernel) + "x" + std::to_string(own.kernel) + " " + padding +
                               " convolution" + (own.pool ? " with 2x2 pooling" : "");
      if (conv_out.h < 1 || conv_out.w < 1)
        throw InputError(where, "edge " + e.name + ": a " + what + " of " + str(lower) + " has no output");
      if (own.pool && (conv_out.h % 2 != 0 || conv_out.w % 2 != 0))
        throw InputError(where, "edge " + e.name + ": the " + what + " of " + str(lower) + " gives " + str(conv_out) +
                                    ", which 2x2 pooling cannot halve");
      if (!(e.conv.post() == upper))
        throw InputError(where, "edge " + e.name + ": a " + what + " of " + str(lower) + " gives " + str(e.conv.post()) +
                                    ", but " + (fb ? name_of(true) : name_of(false)) + " is " + str(upper));
      e.rows = upper.c;
      e.cols = e.conv.conv.taps();
    }
    e.k_offset = off;
    net.blocks.push_back({e.name + ".K", off, e.rows, e.cols, static_cast<int>(net.edges.size()), false});
    off += e.rows * e.cols;
    if (e.bias) {  // e.rows: one per post neuron (dense), one per output channel (conv)
      e.b_offset = off;
      net.blocks.push_back({e.name + ".b", off, e.rows, 1, static_cast<int>(net.edges.size()), true});
      off += e.rows;
    }
    net.edges.push_back(e);
  }
  // `out` must receive the input through some path, or the network computes nothing from it
  // (it would train at chance).
  {
    std::vector<std::vector<int>> next(net.layers.size());
    std::vector<int> frontier;
    std::vector<char> reached(net.layers.size(), 0);
    for (const Edge& e : net.edges) {
      if (e.pre != Network::kInput)
        next[static_cast<std::size_t>(e.pre)].push_back(e.post);
      else if (!reached[static_cast<std::size_t>(e.post)])
        reached[static_cast<std::size_t>(e.post)] = 1, frontier.push_back(e.post);
    }
    while (!frontier.empty()) {
      const int l = frontier.back();
      frontier.pop_back();
      for (const int m : next[static_cast<std::size_t>(l)])
        if (!reached[static_cast<std::size_t>(m)]) reached[static_cast<std::size_t>(m)] = 1, frontier.push_back(m);
    }
    if (!reached[static_cast<std::size_t>(net.out)])
      throw InputError(where, net.edges.empty() ? "the architecture has no edges"
                                                : "no path of edges leads from 'in' to 'out'");
  }
  // --lr-mult and --wd-mult keys name a block ("a-b.K") or an edge ("a-b"): a layer "b.K" would
  // make the edge "a-b.K" and the block "a-b.K" of edge "a-b" one key.
  {
    std::map<std::string_view, int> block_edge;
    for (const ParamBlock& b : net.blocks) block_edge.emplace(b.name, b.edge);
    for (const Edge& e : net.edges)
      if (const auto it = block_edge.find(e.name); it != block_edge.end())
        throw InputError(where, "the edge '" + e.name + "' has the name of a parameter block of edge '" +
                                    net.edges[static_cast<std::size_t>(it->second)].name + "': rename a layer");
  }
  const Index n_out = net.layers[static_cast<std::size_t>(net.out)].size;
  net.readout_w_offset = off;
  net.blocks.push_back({"readout.W", off, net.classes, n_out, -1, false});
  off += net.classes * n_out;
  net.readout_b_offset = off;
  net.blocks.push_back({"readout.b", off, net.classes, 1, -1, true});
  off += net.classes;
  net.n_params = off;

  // Reciprocal pairs: the feedback half is the bias-free edge, else the later-declared one; a
  // conv_feedback edge is the feedback half of its conv partner and needs one.
  for (std::size_t i = 0; i < net.edges.size(); ++i) {
    Edge& a = net.edges[i];
    if (a.pre == Network::kInput || a.pre == a.post) continue;
    const auto reverse = edge_of.find(std::make_pair(a.post, a.pre));
    if (reverse != edge_of.end() && static_cast<std::size_t>(reverse->second) > i) {
      const std::size_t k = static_cast<std::size_t>(reverse->second);
      Edge& b = net.edges[k];
      if (a.is_conv() != b.is_conv())
        throw InputError(where, "edges " + a.name + " and " + b.name + ": a convolution's reverse edge must be conv_feedback");
      a.partner = static_cast<int>(k);
      b.partner = static_cast<int>(i);
      if (a.is_conv()) {
        if (a.kind == b.kind)
          throw InputError(where, "edges " + a.name + " and " + b.name + ": a reciprocal pair of convolutions is one conv "
                                  "and one conv_feedback edge");
        Edge& fb = a.kind == EdgeKind::conv_feedback ? a : b;
        const Edge& ff = a.kind == EdgeKind::conv ? a : b;
        if (!(fb.conv.conv.k == ff.conv.conv.k && fb.conv.conv.pad == ff.conv.conv.pad && fb.conv.pool == ff.conv.pool))
          throw InputError(where, "edge " + fb.name + ": its kernel, padding and pooling must be those of its forward "
                                  "partner " + ff.name);
        fb.feedback = true;
      } else if (a.bias == b.bias) {
        b.feedback = true;
      } else {
        (a.bias ? b : a).feedback = true;
      }
    }
  }
  for (const Edge& e : net.edges)
    if (e.kind == EdgeKind::conv_feedback && e.partner < 0)
      throw InputError(where, "edge " + e.name + ": a conv_feedback edge needs a conv edge " +
                                  net.layers[static_cast<std::size_t>(e.post)].name + "-" +
                                  net.layers[static_cast<std::size_t>(e.pre)].name + " as its forward partner");
  return net;
}

template <class R>
Vec<R> init_params(const Network& net, std::uint64_t seed, double angle_deg) {
  Vec<R> theta = Vec<R>::Zero(net.n_params);
  // flax lecun_normal: a unit normal truncated to [-2, 2] has std 0.8796256610342398; dividing by
  // it gives variance exactly 1/fan_in.
  constexpr double kTruncStd = 0.87962566103423978;
  for (std::size_t bi = 0; bi < net.blocks.size(); ++bi) {
    const ParamBlock& b = net.blocks[bi];
    if (b.bias) continue;  // biases start at zero
    const double scale = std::sqrt(1.0 / static_cast<double>(b.cols)) / kTruncStd;
    Rng rng(seed, Stream::init, bi);
    for (Index i = 0; i < b.size(); ++i) theta[b.offset + i] = static_cast<R>(scale * rng.truncated_normal());
  }
  apply_angle(net, theta, angle_deg);
  return theta;
}

template <class R>
void apply_angle(const Network& net, Vec<R>& theta, double angle_deg) {
  const double a = angle_deg * M_PI / 180.0;
  // Exact values at the common angles so that α = 0 gives bit-exactly transposed weights.
  const R s = angle_deg == 0.0 ? R(0) : angle_deg == 90.0 ? R(1) : static_cast<R>(std::sin(a));
  const R c = angle_deg == 0.0 ? R(1) : angle_deg == 90.0 ? R(0) : static_cast<R>(std::cos(a));
  for (const auto& [ff, fb] : net.reciprocal_pairs()) {
    auto Kfb = kernel(net, theta, fb);
    const bool conv = net.edges[static_cast<std::size_t>(fb)].is_conv();  // same shape, no transpose
    const Mat<R> Kff = conv ? Mat<R>(kernel(net, std::as_const(theta), ff))
                            : Mat<R>(kernel(net, std::as_const(theta), ff).transpose());
    Kfb = s * Kfb + c * Kff;
  }
}

template <class R>
double weight_angle_deg(const Network& net, const Vec<R>& theta) {
  const auto pairs = net.reciprocal_pairs();
  if (pairs.empty()) return std::nan("");
  // The angle between a = (K_ff)_pairs and b = (K_fbᵀ)_pairs, as 2·asin(‖â − b̂‖/2): equal to
  // arccos(⟨a, b⟩/(‖a‖‖b‖)) but accurate near 0°, where arccos loses half the digits.
  double nff = 0, nfb = 0;
  for (const auto& [ff, fb] : pairs) {
    nff += kernel(net, theta, ff).template cast<double>().squaredNorm();
    nfb += kernel(net, theta, fb).template cast<double>().squaredNorm();
  }
  if (nff == 0 || nfb == 0) return std::nan("");
  const double sa = 1 / std::sqrt(nff), sb = 1 / std::sqrt(nfb);
  double d2 = 0;
  for (const auto& [ff, fb] : pairs) {
    const Mat<double> kff = kernel(net, theta, ff).template cast<double>();
    const Mat<double> kfb = kernel(net, theta, fb).template cast<double>();
    d2 += net.edges[static_cast<std::size_t>(fb)].is_conv() ? (sa * kff - sb * kfb).squaredNorm()
                                                            : (sa * kff - sb * kfb.transpose()).squaredNorm();
  }
  return 2 * std::asin(std::min(1.0, std::sqrt(d2) / 2)) * 180.0 / M_PI;
}

template Vec<float> init_params<float>(const Network&, std::uint64_t, double);
template Vec<double> init_params<double>(const Network&, std::uint64_t, double);
template void apply_angle<float>(const Network&, Vec<float>&, double);
template void apply_angle<double>(const Network&, Vec<double>&, double);
template double weight_angle_deg<float>(const Network&, const Vec<float>&);
template double weight_angle_deg<double>(const Network&, const Vec<double>&);

}  // namespace hepsim
