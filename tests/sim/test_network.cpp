// Network description, parameter layout, SPEC 5 initialisation and the --angle mix.
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>

#include "sim/error.hpp"
#include "sim/network.hpp"

using namespace hepsim;

TEST_CASE("built-in mlp_2-256 has the SPEC layers, edges and reciprocal pairs") {
  const Network net = compile(load_architecture("mlp_2-256", 784, 10));
  REQUIRE(net.layers.size() == 3);
  CHECK(net.neurons == 256 + 256 + 10);
  CHECK(net.layers[static_cast<std::size_t>(net.out)].name == "out");
  REQUIRE(net.edges.size() == 5);
  CHECK(net.edges[0].name == "in-l1");
  CHECK(net.edges[0].pre == Network::kInput);
  CHECK(net.edges[2].name == "l2-l1");
  CHECK_FALSE(net.edges[2].bias);
  // K_in-l1 (256x784) + b, K_l1-l2 + b, K_l2-l1, K_l2-out (10x256) + b, K_out-l2, readout 10x10 + b
  CHECK(net.n_params == 256 * 784 + 256 + 256 * 256 + 256 + 256 * 256 + 10 * 256 + 10 + 256 * 10 + 100 + 10);
  const auto pairs = net.reciprocal_pairs();
  REQUIRE(pairs.size() == 2);
  CHECK(net.edges[static_cast<std::size_t>(pairs[0].second)].name == "l2-l1");  // feedback = bias-free
  CHECK(net.edges[static_cast<std::size_t>(pairs[1].second)].name == "out-l2");
}

TEST_CASE("built-in loop_mnist is a ring without reciprocal pairs") {
  const Network net = compile(load_architecture("loop_mnist", 784, 10));
  REQUIRE(net.edges.size() == 4);
  CHECK(net.edges[3].name == "out-l1");
  CHECK(net.reciprocal_pairs().empty());
  const Vec<double> th = init_params<double>(net, 1, 0.0);
  CHECK(std::isnan(weight_angle_deg(net, th)));
}

TEST_CASE("--angle 0 gives exactly transposed feedback weights, 90 keeps them independent") {
  const Network net = compile(load_architecture("mlp_2-256", 784, 10));
  const Vec<float> th0 = init_params<float>(net, 7, 0.0);
  for (const auto& [ff, fb] : net.reciprocal_pairs()) {
    const Mat<float> fwd_t = kernel(net, th0, ff).transpose();
    CHECK((kernel(net, th0, fb) - fwd_t).cwiseAbs().maxCoeff() == 0.0f);  // bit-exact
  }
  CHECK(weight_angle_deg(net, th0) < 1e-5);
  // Independent truncated normals: the angle is 90° ± O(1/sqrt(#weights)) = ±0.2° (1 / sqrt(68k) rad).
  const Vec<double> th90 = init_params<double>(net, 7, 90.0);
  CHECK(weight_angle_deg(net, th90) == doctest::Approx(90.0).epsilon(0.005));
  // In between, the weight angle grows with α. It is not α itself: the pairs' kernels have
  // different scales (K_l2-out has fan-in 256, K_out-l2 fan-in 10), so the mix is dominated by the
  // larger one (the reference's tiny network: mixed at 60°, weight angle 54.8°).
  double last = 0;
  for (double a : {15.0, 30.0, 60.0, 75.0}) {
    const double w = weight_angle_deg(net, init_params<double>(net, 7, a));
    CHECK(w > last);
    CHECK(w < 90.0);
    last = w;
  }
}

TEST_CASE("initialisation: truncated normal with variance 1/fan_in, zero biases, deterministic per seed") {
  const Network net = compile(load_architecture("mlp_2-256", 784, 10));
  const Vec<double> a = init_params<double>(net, 3, 90.0);
  const Vec<double> b = init_params<double>(net, 3, 90.0);
  const Vec<double> c = init_params<double>(net, 4, 90.0);
  CHECK((a - b).cwiseAbs().maxCoeff() == 0.0);
  CHECK((a - c).cwiseAbs().maxCoeff() > 0.0);
  for (const ParamBlock& blk : net.blocks) {
    const auto v = a.segment(blk.offset, blk.size());
    if (blk.bias) {
      CHECK(v.cwiseAbs().maxCoeff() == 0.0);
      continue;
    }
    const double var = v.squaredNorm() / static_cast<double>(v.size());
    const double want = 1.0 / static_cast<double>(blk.cols);
    // Relative standard error of a variance estimate from n samples of a (truncated) normal is
    // about sqrt(2/n); allow 5 of them.
    CAPTURE(blk.name);
    CHECK(std::abs(var / want - 1) < 5 * std::sqrt(2.0 / static_cast<double>(v.size())));
    // Truncation at two standard deviations of the untruncated normal: |w| ≤ 2 σ0 = 2 sqrt(want)/0.8796.
    CHECK(v.cwiseAbs().maxCoeff() <= 2 * std::sqrt(want) / 0.87962566103423978 + 1e-12);
  }
}

TEST_CASE("architecture JSON: parsed, and every malformed file rejected with its name") {
  const std::string good = R"({"name": "t", "layers": [{"name": "h", "size": 4}, {"name": "out", "size": "classes"}],
    "edges": [{"pre": "in", "post": "h", "type": "dense"}, {"pre": "h", "post": "out"},
              {"pre": "out", "post": "h", "type": "dense_nobias"}, {"pre": "h", "post": "h", "type": "dense_nobias"}]})";
  const Network net = compile(parse_architecture(good, "good.json", 6, 3));
  CHECK(net.neurons == 7);
  CHECK(net.edges.size() == 4);
  CHECK(net.reciprocal_pairs().size() == 1);  // the self-loop h-h is not a pair

  const std::vector<std::pair<std::string, std::string>> bad = {
      {R"({"layers": [], "edges": [], "extra": 1})", "unknown key 'extra'"},
      {R"({"layers": [{"name": "out", "size": 0}], "edges": []})", "size"},
      {R"({"layers": [{"name": "h", "size": 3}], "edges": []})", "no layer named 'out'"},
      {R"({"layers": [{"name": "out", "size": 3}], "edges": [{"pre": "in", "post": "out"}, {"pre": "in", "post": "out"}]})",
       "duplicate edge"},
      {R"({"layers": [{"name": "out", "size": 3}], "edges": [{"pre": "x", "post": "out"}]})", "unknown layer 'x'"},
      {R"({"layers": [{"name": "out", "size": 3}], "edges": [{"pre": "in", "post": "out", "type": "conv"}]})",
       "shaped pre layer (the input of this dataset is flat)"},
      {R"({"layers": [{"name": "out", "size": 3}], "edges": [{"pre": "out", "post": "in"}]})", "cannot receive"},
      {R"({"layers": [{"name": "out", "size": 3}, {"name": "out", "size": 2}], "edges": []})", "duplicate layer"},
      {R"({"layers": [ )", "invalid JSON"},
  };
  for (const auto& [text, msg] : bad) {
    CAPTURE(text);
    CHECK_THROWS_WITH_AS(compile(parse_architecture(text, "bad.json", 6, 3), "bad.json"),
                         doctest::Contains(msg.c_str()), InputError);
    CHECK_THROWS_WITH_AS(compile(parse_architecture(text, "bad.json", 6, 3), "bad.json"),
                         doctest::Contains("bad.json"), InputError);
  }
  CHECK_THROWS_WITH_AS(load_architecture("no_such_net", 6, 3), doctest::Contains("--arch"), InputError);
  CHECK_THROWS_WITH_AS(load_architecture("/nonexistent/dir/net.json", 6, 3),
                       doctest::Contains("/nonexistent/dir/net.json"), InputError);
}

TEST_CASE("compile refuses what later stages cannot store or use, naming the architecture file") {
  // Each would have been accepted, then failed after an epoch (HDF5 names, a checkpoint with two
  // blocks of one name) or trained at chance (no path from the input to the output).
  auto arch = [](const std::string& layers, const std::string& edges) {
    return R"({"layers": [)" + layers + R"(], "edges": [)" + edges + "]}";
  };
  auto with_hidden = [&](const std::string& name) {
    return arch(R"({"name": )" + name + R"(, "size": 2}, {"name": "out", "size": 3})",
                R"({"pre": "in", "post": )" + name + R"(}, {"pre": )" + name + R"(, "post": "out"})");
  };
  const std::vector<std::pair<std::string, std::string>> bad = {
      {with_hidden(R"("a/b")"), "'/'"},
      {with_hidden(R"(".")"), "only dots"},
      {with_hidden(R"("..")"), "only dots"},
      {with_hidden(R"("a\u0000b")"), "control character"},
      {with_hidden(R"("tab\there")"), "control character"},
      {with_hidden(R"("next\u0085line")"), "control character"},  // C1: 0xC2 0x85 in UTF-8
      {with_hidden("\"" + std::string(65, 'x') + "\""), "longer than 64"},
      // Layers "a-b", "a", "b-c", "c": the edges a-b → c and a → b-c are both named "a-b-c".
      {arch(R"({"name": "a-b", "size": 2}, {"name": "a", "size": 2}, {"name": "b-c", "size": 2}, {"name": "c", "size": 2},
               {"name": "out", "size": 3})",
            R"({"pre": "in", "post": "a-b"}, {"pre": "in", "post": "a"}, {"pre": "a-b", "post": "c"},
               {"pre": "a", "post": "b-c"}, {"pre": "c", "post": "out"})"),
       "both named 'a-b-c'"},
      {arch(R"({"name": "h", "size": 2}, {"name": "out", "size": 3})", R"({"pre": "in", "post": "h"})"),
       "no path of edges leads from 'in' to 'out'"},
      {arch(R"({"name": "h", "size": 2}, {"name": "out", "size": 3})",
            R"({"pre": "in", "post": "h"}, {"pre": "out", "post": "h"})"),
       "no path"},
      {arch(R"({"name": "out", "size": 3})", ""), "no edges"},
      // One JSON value, each key once (nlohmann would keep the last silently).
      {arch(R"({"name": "out", "size": 3})", R"({"pre": "in", "post": "out"})") + R"( {"layers": []})", "invalid JSON"},
      {R"({"layers": [{"name": "out", "size": 3, "size": 4}], "edges": [{"pre": "in", "post": "out"}]})",
       "key 'size' appears twice"},
  };
  for (const auto& [text, msg] : bad) {
    CAPTURE(text);
    CHECK_THROWS_WITH_AS(compile(parse_architecture(text, "net.json", 6, 3)), doctest::Contains(msg.c_str()), InputError);
    CHECK_THROWS_WITH_AS(compile(parse_architecture(text, "net.json", 6, 3)), doctest::Contains("net.json"), InputError);
  }
  // The ring and names that HDF5 takes (dots inside, '+', unicode) compile.
  CHECK_NOTHROW(compile(parse_architecture(with_hidden(R"("h.1+é")"), "net.json", 6, 3)));
  CHECK_NOTHROW(compile(load_architecture("loop_mnist", 6, 3)));
}

TEST_CASE("to_json round-trips a compiled network") {
  for (const char* arch : {"mlp_2-256", "loop_mnist"}) {
    const Network a = compile(load_architecture(arch, 784, 10));
    const Network b = compile(parse_architecture(to_json(a), "roundtrip", 784, 10));
    CHECK(b.name == a.name);
    CHECK(b.n_params == a.n_params);
    REQUIRE(b.edges.size() == a.edges.size());
    for (std::size_t e = 0; e < a.edges.size(); ++e) {
      CHECK(b.edges[e].name == a.edges[e].name);
      CHECK(b.edges[e].bias == a.edges[e].bias);
      CHECK(b.edges[e].k_offset == a.edges[e].k_offset);
      CHECK(b.edges[e].feedback == a.edges[e].feedback);
    }
  }
}

// ---- Convolutional architectures (issue 12) ----

namespace {
// A tiny CNN on 2x8x8 inputs: c1[4x4x4] <-> c2[6x2x2] -> out[3] dense.
const char* kTinyCnn = R"({"name": "tiny_cnn", "layers": [
    {"name": "c1", "shape": [4, 4, 4]}, {"name": "c2", "shape": [6, 2, 2]}, {"name": "out", "size": "classes"}],
  "edges": [{"pre": "in", "post": "c1", "type": "conv"},
            {"pre": "c1", "post": "c2", "type": "conv", "kernel": 3, "padding": "same", "pool": "softmax2"},
            {"pre": "c2", "post": "c1", "type": "conv_feedback"},
            {"pre": "c2", "post": "out"}, {"pre": "out", "post": "c2", "type": "dense_nobias"}]})";
}  // namespace

TEST_CASE("conv architectures: shapes, kernel blocks, pairs, the angle without transpose, and JSON round trip") {
  const Network net = compile(parse_architecture(kTinyCnn, "cnn.json", 128, 3, MapShape{2, 8, 8}));
  CHECK(net.has_conv());
  REQUIRE(net.layers.size() == 3);
  CHECK(net.layers[0].shape == MapShape{4, 4, 4});
  CHECK(net.layers[0].size == 64);
  CHECK(net.neurons == 64 + 24 + 3);
  const Edge& in_c1 = net.edges[0];
  CHECK(in_c1.kind == EdgeKind::conv);
  CHECK(in_c1.rows == 4);
  CHECK(in_c1.cols == 2 * 9);       // C_out x C_in·k·k
  CHECK(in_c1.conv.post() == MapShape{4, 4, 4});
  const Edge& fb = net.edges[2];
  CHECK(fb.kind == EdgeKind::conv_feedback);
  CHECK(!fb.bias);
  CHECK(fb.rows == 6);              // the forward partner's kernel shape: C_c2 x C_c1·9
  CHECK(fb.cols == 4 * 9);
  CHECK(fb.feedback);
  CHECK(fb.partner == 1);
  CHECK(net.reciprocal_pairs() == std::vector<std::pair<int, int>>{{1, 2}, {3, 4}});
  // Blocks: conv biases are one per output channel.
  const auto block = [&](const std::string& name) {
    for (const ParamBlock& b : net.blocks)
      if (b.name == name) return b;
    FAIL("no block " << name);
    return ParamBlock{};
  };
  CHECK(block("in-c1.b").rows == 4);
  CHECK(block("c1-c2.K").size() == 6 * 36);
  // Angle 0: the feedback kernel equals the forward one (no transpose); 90: independent.
  const Vec<double> t0 = init_params<double>(net, 3, 0.0);
  CHECK((kernel(net, t0, 2) - kernel(net, t0, 1)).norm() == 0.0);
  CHECK(weight_angle_deg(net, t0) == doctest::Approx(0.0).epsilon(1e-12));
  const Vec<double> t90 = init_params<double>(net, 3, 90.0);
  CHECK(weight_angle_deg(net, t90) > 60.0);
  // Initialisation: variance 1/fan_in with fan_in = C_in·k·k.
  const Vec<double> big = init_params<double>(compile(parse_architecture(
      R"({"layers": [{"name": "c", "shape": [64, 8, 8]}, {"name": "out", "size": 3}],
          "edges": [{"pre": "in", "post": "c", "type": "conv", "pool": "none"}, {"pre": "c", "post": "out"}]})",
      "v.json", 3 * 64, 3, MapShape{3, 8, 8})), 1, 90.0);
  const Eigen::Map<const Vec<double>> k(big.data(), 64 * 27);
  CHECK(k.squaredNorm() / static_cast<double>(k.size()) == doctest::Approx(1.0 / 27).epsilon(0.05));
  // A conv_feedback edge that names no kernel, padding or pooling takes its partner's.
  const Network inherit = compile(parse_architecture(
      R"({"layers": [{"name": "c1", "shape": [4, 8, 8]}, {"name": "c2", "shape": [6, 8, 8]}, {"name": "out", "size": 3}],
          "edges": [{"pre": "in", "post": "c1", "type": "conv", "pool": "none"},
                    {"pre": "c1", "post": "c2", "type": "conv", "kernel": 5, "pool": "none"},
                    {"pre": "c2", "post": "c1", "type": "conv_feedback"}, {"pre": "c2", "post": "out"}]})",
      "inherit.json", 128, 3, MapShape{2, 8, 8}));
  CHECK(inherit.edges[2].conv.conv.k == 5);
  CHECK(!inherit.edges[2].conv.pool);
  // Each option it does not name is its partner's (naming the pooling keeps the partner's kernel).
  const Network some = compile(parse_architecture(
      R"({"layers": [{"name": "c1", "shape": [4, 8, 8]}, {"name": "c2", "shape": [6, 4, 4]}, {"name": "out", "size": 3}],
          "edges": [{"pre": "in", "post": "c1", "type": "conv", "pool": "none"},
                    {"pre": "c1", "post": "c2", "type": "conv", "kernel": 5},
                    {"pre": "c2", "post": "c1", "type": "conv_feedback", "pool": "softmax2"}, {"pre": "c2", "post": "out"}]})",
      "some.json", 128, 3, MapShape{2, 8, 8}));
  CHECK(some.edges[2].conv.conv.k == 5);
  // The JSON of the compiled network compiles to the same network.
  const Network again = compile(parse_architecture(to_json(net), "ck.h5", 128, 3, MapShape{2, 8, 8}));
  CHECK(to_json(again) == to_json(net));
  CHECK(again.n_params == net.n_params);
}

TEST_CASE("conv architectures: bad shapes and pairs are refused naming the file and the edge") {
  const std::string layers = R"("layers": [{"name": "c1", "shape": [4, 4, 4]}, {"name": "c2", "shape": [6, 2, 2]},
                                           {"name": "d", "size": 5}, {"name": "out", "size": 3}])";
  auto arch = [&](const std::string& edges) {
    return "{" + layers + R"(, "edges": [{"pre": "c2", "post": "out"}, )" + edges + "]}";
  };
  const std::vector<std::pair<std::string, std::string>> bad = {
      // 2x8x8 same 3x3 pooled gives 4x4x4; valid gives 6x6 -> 3x3
      {arch(R"({"pre": "in", "post": "c1", "type": "conv", "padding": "valid"}, {"pre": "c1", "post": "c2", "type": "conv"})"),
       "edge in-c1: a 3x3 'valid' convolution with 2x2 pooling of 2x8x8 gives 4x3x3, but layer 'c1' is 4x4x4"},
      {arch(R"({"pre": "in", "post": "c1", "type": "conv", "pool": "none"}, {"pre": "c1", "post": "c2", "type": "conv"})"),
       "gives 4x8x8, but layer 'c1' is 4x4x4"},
      {arch(R"({"pre": "in", "post": "c1", "type": "conv", "kernel": 4})"), "edge in-c1: 'kernel' must be an odd integer"},
      {arch(R"({"pre": "in", "post": "c1", "type": "conv"}, {"pre": "c1", "post": "d", "type": "conv"})"),
       "edge c1-d: a convolution needs a shaped post layer"},
      {arch(R"({"pre": "in", "post": "c1", "type": "conv"}, {"pre": "c2", "post": "c1", "type": "conv_feedback"}, {"pre": "c1", "post": "c2"})"),
       "a convolution's reverse edge must be conv_feedback"},
      {arch(R"({"pre": "in", "post": "c1", "type": "conv"}, {"pre": "c1", "post": "c2", "type": "conv"}, {"pre": "c2", "post": "c1", "type": "conv_feedback", "kernel": 1, "padding": "same"})"),
       "edge c2-c1"},
      {arch(R"({"pre": "in", "post": "c1", "type": "conv"}, {"pre": "c1", "post": "out"}, {"pre": "c2", "post": "c1", "type": "conv_feedback"})"),
       "edge c2-c1: a conv_feedback edge needs a conv edge c1-c2"},
      {arch(R"({"pre": "in", "post": "c1", "type": "conv"}, {"pre": "c1", "post": "c2", "type": "conv"}, {"pre": "c2", "post": "c1", "type": "conv_feedback", "bias": true})"),
       "unknown key 'bias' in edge c2-c1 (a conv_feedback edge has no bias)"},
      {arch(R"({"pre": "in", "post": "c1", "type": "conv", "padding": "full"})"), "'padding' must be"},
      {arch(R"({"pre": "in", "post": "c1", "type": "conv", "pool": "max"})"), "'pool' must be"},
      {R"({"layers": [{"name": "c", "shape": [4, 0, 4]}, {"name": "out", "size": 3}], "edges": []})", "'shape' must be [C, H, W]"},
      {R"({"layers": [{"name": "c", "shape": [4, 4, 4], "size": 64}, {"name": "out", "size": 3}], "edges": []})",
       "exactly one of 'size' and 'shape'"},
  };
  for (const auto& [text, msg] : bad) {
    CAPTURE(text);
    CHECK_THROWS_WITH_AS(compile(parse_architecture(text, "cnn.json", 128, 3, MapShape{2, 8, 8})),
                         doctest::Contains(msg.c_str()), InputError);
    CHECK_THROWS_WITH_AS(compile(parse_architecture(text, "cnn.json", 128, 3, MapShape{2, 8, 8})),
                         doctest::Contains("cnn.json"), InputError);
  }
}

TEST_CASE("built-in CNNs: the paper's shapes, a quarter of the channels for cnn_small, 28x28 inputs padded to 32x32") {
  const Network net = compile(load_architecture("cnn", 3 * 32 * 32, 10, MapShape{3, 32, 32}));
  REQUIRE(net.layers.size() == 4);
  CHECK(net.layers[0].shape == MapShape{128, 16, 16});
  CHECK(net.layers[1].shape == MapShape{256, 8, 8});
  CHECK(net.layers[2].shape == MapShape{512, 4, 4});
  CHECK(net.layers[3].shape == MapShape{512, 1, 1});
  CHECK(net.reciprocal_pairs().size() == 3);  // conv1<->conv2, conv2<->conv3, conv3<->out
  CHECK(net.edges.size() == 7);
  // Kernels: 3x3, C_out x C_in·9; conv3-out is 'valid' (4x4 -> 2x2, pooled to 1x1).
  CHECK(net.edges[0].rows == 128);
  CHECK(net.edges[0].cols == 27);
  CHECK(net.edges[5].conv.conv.pad == 0);
  CHECK(default_activation("cnn") == "dsilu");
  CHECK(default_activation("mlp_2-256") == "sigmoid");
  const Network small = compile(load_architecture("cnn_small", 784, 10, MapShape{1, 28, 28}));
  CHECK(small.layers[0].shape == MapShape{32, 16, 16});
  CHECK(small.layers[3].shape == MapShape{128, 1, 1});
  CHECK(small.edges[0].conv.conv.pad == 3);  // 28 + 2·3 − 3 + 1 = 32, pooled to 16
  // The JSON of a compiled built-in (what a checkpoint stores) compiles to the same network.
  CHECK(to_json(compile(parse_architecture(to_json(small), "ck", 784, 10, MapShape{1, 28, 28}))) == to_json(small));
  CHECK_THROWS_WITH_AS(load_architecture("cnn", 3 * 64 * 64, 1000, MapShape{3, 64, 64}),
                       doctest::Contains("--arch: cnn takes 32x32 images"), InputError);
}

TEST_CASE("an architecture of 10^5 layers and 2·10^5 edges reads and compiles in linear time") {
  // A chain in -> l0 -> … -> out with a feedback edge per step, listed last layer first (the order
  // that made the reachability pass take one sweep per layer). nlohmann's parser callback and the
  // linear name lookups made this take minutes (80k edges: 30 s; 200k: over 120 s); now about a
  // second. The bound is a hang guard, 30x above what it takes, not a speed target.
  constexpr int n = 100000;
  std::string json = R"({"name": "chain", "layers": [)";
  for (int i = 0; i < n; ++i) json += R"({"name": "l)" + std::to_string(i) + R"(", "size": 1},)";
  json += R"({"name": "out", "size": "classes"}], "edges": [)";
  json += R"({"pre": "l)" + std::to_string(n - 1) + R"(", "post": "out"},)";
  for (int i = n - 2; i >= 0; --i)
    json += R"({"pre": "l)" + std::to_string(i) + R"(", "post": "l)" + std::to_string(i + 1) + R"("},)";
  json += R"({"pre": "in", "post": "l0"})";
  for (int i = 0; i + 1 < n; ++i)
    json += R"(, {"pre": "l)" + std::to_string(i + 1) + R"(", "post": "l)" + std::to_string(i) +
            R"(", "type": "dense_nobias"})";
  json += "]}";
  const auto t0 = std::chrono::steady_clock::now();
  const Network net = compile(parse_architecture(json, "chain.json", 4, 3));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(seconds < 30);
  CHECK(net.edges.size() == static_cast<std::size_t>(2 * n));
  CHECK(net.reciprocal_pairs().size() == static_cast<std::size_t>(n - 1));
  CHECK(net.edges.back().feedback);
  CHECK(net.edges.back().partner == 1);  // l99999-l99998 pairs with the forward l99998-l99999, listed second
}
