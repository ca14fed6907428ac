#include "sim/network.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
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
// cannot be stored, and nobody needs a layer name of more than 64 characters.
void check_layer_name(const std::string& name, const std::string& where) {
  constexpr std::size_t kMaxName = 64;
  // At most 80 characters of it in the message (InputError shows control characters as \xNN).
  const std::string shown = name.size() > 80 ? name.substr(0, 80) + "…" : name;
  auto bad = [&](const std::string& why) { throw InputError(where, "invalid layer name '" + shown + "': " + why); };
  if (name.empty()) bad("empty");
  if (name == "in") bad("'in' is the input");
  if (name.size() > kMaxName) bad("longer than " + std::to_string(kMaxName) + " characters");
  if (name.find_first_not_of('.') == std::string::npos) bad("only dots");
  for (unsigned char ch : name) {
    if (ch == '/') bad("'/' cannot be part of an HDF5 name");
    if (ch < 0x20 || ch == 0x7f) bad("control character");
  }
}

}  // namespace

std::vector<std::string> builtin_architecture_names() { return {"mlp_2-256", "loop_mnist"}; }

// 16.7 million neurons in one layer: far beyond any dense layer that fits in memory with its edges.
constexpr long long kMaxLayerSize = 1LL << 24;

Architecture parse_architecture(const std::string& json_text, const std::string& where, Index input_size,
                                Index classes) {
  const nlohmann::json j = parse_json_strict(json_text, where);  // syntax, 1e999, trailing text, repeated keys
  if (!j.is_object()) throw InputError(where, "an architecture must be a JSON object");
  if (j.contains("name") && !j["name"].is_string()) throw InputError(where, "'name' must be a string");
  check_keys(j, {"name", "layers", "edges"}, where, "architecture");
  Architecture a;
  a.input_size = input_size;
  a.classes = classes;
  a.source = where;
  a.name = j.value("name", std::string("custom"));
  if (a.name.size() > 256) throw InputError(where, "'name' is longer than 256 characters");
  if (!j.contains("layers") || !j["layers"].is_array()) throw InputError(where, "missing array 'layers'");
  if (!j.contains("edges") || !j["edges"].is_array()) throw InputError(where, "missing array 'edges'");
  for (const auto& l : j["layers"]) {
    if (!l.is_object()) throw InputError(where, "each layer must be an object {\"name\", \"size\"}");
    check_keys(l, {"name", "size"}, where, "layer");
    if (!l.contains("name") || !l["name"].is_string()) throw InputError(where, "layer without a string 'name'");
    LayerSpec ls;
    ls.name = l["name"].get<std::string>();
    if (!l.contains("size")) throw InputError(where, "layer '" + ls.name + "' has no 'size'");
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
    check_keys(e, {"pre", "post", "type"}, where, "edge");
    if (!e.contains("pre") || !e["pre"].is_string() || !e.contains("post") || !e["post"].is_string())
      throw InputError(where, "edge without string 'pre' and 'post'");
    EdgeSpec es;
    es.pre = e["pre"].get<std::string>();
    es.post = e["post"].get<std::string>();
    if (e.contains("type") && !e["type"].is_string()) throw InputError(where, "edge 'type' must be a string");
    const std::string type = e.value("type", std::string("dense"));
    if (type == "dense") {
      es.kind = EdgeKind::dense;
    } else if (type == "dense_nobias") {
      es.kind = EdgeKind::dense_nobias;
    } else if (type == "conv" || type == "conv_feedback") {
      throw InputError(where, "edge " + es.pre + "-" + es.post + ": type '" + type +
                                  "' (convolutional networks) is not supported by this version; dense edges only");
    } else {
      throw InputError(where, "edge " + es.pre + "-" + es.post + ": unknown type '" + type + "'");
    }
    a.edges.push_back(es);
  }
  return a;
}

Architecture load_architecture(const std::string& name_or_path, Index input_size, Index classes) {
  if (name_or_path == "mlp_2-256") return mlp_2_256(input_size, classes);
  if (name_or_path == "loop_mnist") return loop_mnist(input_size, classes);
  if (name_or_path.size() < 5 || name_or_path.substr(name_or_path.size() - 5) != ".json") {
    std::string names;
    for (const auto& n : builtin_architecture_names()) names += (names.empty() ? "" : ", ") + n;
    throw InputError("--arch", "'" + name_or_path + "' is neither a built-in (" + names + ") nor a .json file");
  }
  return parse_architecture(read_small_input(name_or_path, "an architecture file"), name_or_path, input_size, classes);
}

std::string to_json(const Network& net) {
  nlohmann::json j;
  j["name"] = net.name;
  j["layers"] = nlohmann::json::array();
  for (const Layer& l : net.layers) j["layers"].push_back({{"name", l.name}, {"size", l.size}});
  j["edges"] = nlohmann::json::array();
  for (const Edge& e : net.edges)
    j["edges"].push_back({{"pre", e.pre == Network::kInput ? std::string("in") : net.layers[static_cast<std::size_t>(e.pre)].name},
                          {"post", net.layers[static_cast<std::size_t>(e.post)].name},
                          {"type", e.bias ? "dense" : "dense_nobias"}});
  return j.dump();
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
  std::set<std::string> seen;
  for (const auto& l : arch.layers) {
    check_layer_name(l.name, where);
    if (!seen.insert(l.name).second) throw InputError(where, "duplicate layer '" + l.name + "'");
    if (l.size <= 0) throw InputError(where, "layer '" + l.name + "' must have a positive size");
    net.layers.push_back({l.name, l.size, net.neurons});
    net.neurons += l.size;
  }
  net.out = net.layer_index("out");
  if (net.out < 0) throw InputError(where, "the architecture has no layer named 'out'");

  std::set<std::pair<int, int>> edge_set;
  std::set<std::string> edge_names;
  Index off = 0;
  for (const auto& es : arch.edges) {
    Edge e;
    e.name = es.pre + "-" + es.post;
    e.pre = es.pre == "in" ? Network::kInput : net.layer_index(es.pre);
    e.post = net.layer_index(es.post);
    if (es.post == "in") throw InputError(where, "edge " + e.name + ": the input 'in' cannot receive edges");
    if (e.pre == -1 && es.pre != "in") throw InputError(where, "edge " + e.name + ": unknown layer '" + es.pre + "'");
    if (e.post < 0) throw InputError(where, "edge " + e.name + ": unknown layer '" + es.post + "'");
    if (!edge_set.insert({e.pre, e.post}).second) throw InputError(where, "duplicate edge " + e.name);
    // Edges are named "pre-post" in the checkpoint and --lr-mult: layers "a-b", "c" and "a", "b-c"
    // would give two edges one name.
    if (!edge_names.insert(e.name).second)
      throw InputError(where, "two edges are both named '" + e.name + "' (a layer name containing '-' makes "
                                  "edge names ambiguous): rename a layer");
    e.bias = es.kind == EdgeKind::dense;
    e.rows = net.layers[static_cast<std::size_t>(e.post)].size;
    e.cols = e.pre == Network::kInput ? net.input_size : net.layers[static_cast<std::size_t>(e.pre)].size;
    e.k_offset = off;
    net.blocks.push_back({e.name + ".K", off, e.rows, e.cols, static_cast<int>(net.edges.size()), false});
    off += e.rows * e.cols;
    if (e.bias) {
      e.b_offset = off;
      net.blocks.push_back({e.name + ".b", off, e.rows, 1, static_cast<int>(net.edges.size()), true});
      off += e.rows;
    }
    net.edges.push_back(e);
  }
  // `out` must receive the input through some path, or the network computes nothing from it
  // (it would train at chance).
  {
    std::vector<char> reached(net.layers.size(), 0);
    bool grew = true;
    while (grew) {
      grew = false;
      for (const Edge& e : net.edges)
        if ((e.pre == Network::kInput || reached[static_cast<std::size_t>(e.pre)]) &&
            !reached[static_cast<std::size_t>(e.post)])
          reached[static_cast<std::size_t>(e.post)] = grew = true;
    }
    if (!reached[static_cast<std::size_t>(net.out)])
      throw InputError(where, net.edges.empty() ? "the architecture has no edges"
                                                : "no path of edges leads from 'in' to 'out'");
  }
  // --lr-mult and --wd-mult keys name a block ("a-b.K") or an edge ("a-b"): a layer "b.K" would
  // make the edge "a-b.K" and the block "a-b.K" of edge "a-b" one key.
  for (const Edge& e : net.edges)
    for (const ParamBlock& b : net.blocks)
      if (b.name == e.name)
        throw InputError(where, "the edge '" + e.name + "' has the name of a parameter block of edge '" +
                                    net.edges[static_cast<std::size_t>(b.edge)].name + "': rename a layer");
  const Index n_out = net.layers[static_cast<std::size_t>(net.out)].size;
  net.readout_w_offset = off;
  net.blocks.push_back({"readout.W", off, net.classes, n_out, -1, false});
  off += net.classes * n_out;
  net.readout_b_offset = off;
  net.blocks.push_back({"readout.b", off, net.classes, 1, -1, true});
  off += net.classes;
  net.n_params = off;

  // Reciprocal pairs: the feedback half is the bias-free edge, else the later-declared one.
  for (std::size_t i = 0; i < net.edges.size(); ++i) {
    Edge& a = net.edges[i];
    if (a.pre == Network::kInput || a.pre == a.post) continue;
    for (std::size_t k = i + 1; k < net.edges.size(); ++k) {
      Edge& b = net.edges[k];
      if (b.pre == a.post && b.post == a.pre) {
        a.partner = static_cast<int>(k);
        b.partner = static_cast<int>(i);
        if (a.bias == b.bias)
          b.feedback = true;
        else
          (a.bias ? b : a).feedback = true;
      }
    }
  }
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
    const Mat<R> Kff_t = kernel(net, std::as_const(theta), ff).transpose();
    Kfb = s * Kfb + c * Kff_t;
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
  for (const auto& [ff, fb] : pairs)
    d2 += (sa * kernel(net, theta, ff).template cast<double>() -
           sb * kernel(net, theta, fb).template cast<double>().transpose())
              .squaredNorm();
  return 2 * std::asin(std::min(1.0, std::sqrt(d2) / 2)) * 180.0 / M_PI;
}

template Vec<float> init_params<float>(const Network&, std::uint64_t, double);
template Vec<double> init_params<double>(const Network&, std::uint64_t, double);
template void apply_angle<float>(const Network&, Vec<float>&, double);
template void apply_angle<double>(const Network&, Vec<double>&, double);
template double weight_angle_deg<float>(const Network&, const Vec<float>&);
template double weight_angle_deg<double>(const Network&, const Vec<double>&);

}  // namespace hepsim
