#pragma once
// The golden tiny network of ../shared/reference/tiny_network.json (float64, computed
// independently in NumPy): loads its architecture, parameters, batch and per-sample values into
// hepsim's types. Neuron order everywhere: l1, l2, out (the declared layer order).
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "common.hpp"
#include "sim/sim.hpp"

namespace hepsim::testing {

struct TinyReference {
  nlohmann::json j;
  Model model;
  Vec<double> theta;
  Mat<double> x, y;  // input_size x B, classes x B
  Index batch = 0;

  // A per-sample vector field (u_star, v_star, …) as a neurons x B matrix.
  Mat<double> samples(const std::string& key) const {
    Mat<double> m(model.net.neurons, batch);
    for (Index b = 0; b < batch; ++b)
      for (Index i = 0; i < model.net.neurons; ++i) m(i, b) = j["samples"][b][key][i].get<double>();
    return m;
  }
  Mat<double> estimate(const std::string& key) const {
    Mat<double> m(model.net.neurons, batch);
    for (Index b = 0; b < batch; ++b)
      for (Index i = 0; i < model.net.neurons; ++i) m(i, b) = j["samples"][b]["estimates"][key][i].get<double>();
    return m;
  }
  // A gradient dictionary of the JSON ("rbp_gradient", "ep_exact_gradient") in θ layout; the readout
  // part is taken from "readout_gradient" when `with_readout`.
  Vec<double> gradient(const std::string& key, bool with_readout) const {
    Vec<double> g = Vec<double>::Zero(model.net.n_params);
    fill(g, j[key]);
    if (with_readout) fill_readout(g, j["readout_gradient"]);
    return g;
  }

  void fill(Vec<double>& th, const nlohmann::json& params) const {
    const Network& net = model.net;
    for (std::size_t e = 0; e < net.edges.size(); ++e) {
      const Edge& ed = net.edges[e];
      const auto& p = params[ed.name];
      for (Index r = 0; r < ed.rows; ++r)
        for (Index c = 0; c < ed.cols; ++c) th[ed.k_offset + c * ed.rows + r] = p["K"][r][c].get<double>();
      if (ed.bias)
        for (Index r = 0; r < ed.rows; ++r) th[ed.b_offset + r] = p["b"][r].get<double>();
    }
  }
  void fill_readout(Vec<double>& th, const nlohmann::json& ro) const {
    const Network& net = model.net;
    const Index n_out = net.layers[static_cast<std::size_t>(net.out)].size;
    for (Index r = 0; r < net.classes; ++r) {
      for (Index c = 0; c < n_out; ++c) th[net.readout_w_offset + c * net.classes + r] = ro["W"][r][c].get<double>();
      th[net.readout_b_offset + r] = ro["b"][r].get<double>();
    }
  }
};

inline TinyReference load_tiny_reference() {
  TinyReference t;
  std::ifstream f(std::string(HEPSIM_REFERENCE_DIR) + "/tiny_network.json");
  if (!f) throw std::runtime_error("cannot open tiny_network.json under " HEPSIM_REFERENCE_DIR);
  f >> t.j;
  Architecture a;
  a.name = "tiny";
  a.input_size = t.j["input_size"].get<Index>();
  a.classes = t.j["classes"].get<Index>();
  for (const char* l : {"l1", "l2", "out"}) a.layers.push_back({l, t.j["sizes"][l].get<Index>()});
  for (const auto& e : t.j["edges"])
    a.edges.push_back({e["pre"].get<std::string>(), e["post"].get<std::string>(),
                       e["bias"].get<bool>() ? EdgeKind::dense : EdgeKind::dense_nobias});
  t.model.net = compile(a);
  t.model.activation = Activation::sigmoid;
  t.model.loss = Loss::cross_entropy;
  t.theta = Vec<double>::Zero(t.model.net.n_params);
  t.fill(t.theta, t.j["params"]);
  t.fill_readout(t.theta, t.j["readout"]);
  t.batch = static_cast<Index>(t.j["x"].size());
  t.x.resize(a.input_size, t.batch);
  t.y.resize(a.classes, t.batch);
  for (Index b = 0; b < t.batch; ++b) {
    for (Index i = 0; i < a.input_size; ++i) t.x(i, b) = t.j["x"][b][i].get<double>();
    for (Index c = 0; c < a.classes; ++c) t.y(c, b) = t.j["y"][b][c].get<double>();
  }
  return t;
}

}  // namespace hepsim::testing
