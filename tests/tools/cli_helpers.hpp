#pragma once
// End-to-end helpers: a tiny learnable Fashion-MNIST-format dataset generated in a temp dir, and
// running the real `hepsim` binary capturing exit code, stdout and stderr.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "../datasets/helpers.hpp"
#include "sim/random.hpp"

namespace hepsim::test {

// n images of 28x28 in IDX format (gzip), 10 classes; class c has a bright bar at rows
// 2c+4 .. 2c+6, columns 6 .. 21, on a mostly black background with sparse faint noise (like
// Fashion-MNIST's statistics), so a network learns it within a few hundred samples.
inline void write_tiny_fmnist(const std::string& dir, std::uint32_t n_train, std::uint32_t n_test, std::uint64_t seed) {
  Rng rng(seed, Stream::data);
  auto make = [&](const std::string& prefix, std::uint32_t n) {
    Bytes img, lab;
    for (std::uint32_t i = 0; i < n; ++i) {
      const int c = static_cast<int>(i % 10);
      lab.push_back(static_cast<std::uint8_t>(c));
      for (int r = 0; r < 28; ++r)
        for (int k = 0; k < 28; ++k) {
          const bool bar = r >= 2 * c + 4 && r < 2 * c + 7 && k >= 6 && k < 22;
          const bool speck = rng.uniform() < 0.2;
          img.push_back(static_cast<std::uint8_t>(bar ? 150 + rng.below(100) : speck ? rng.below(60) : 0));
        }
    }
    write_gz(dir + "/" + prefix + "-images-idx3-ubyte.gz", idx_file({n, 28, 28}, img));
    write_gz(dir + "/" + prefix + "-labels-idx1-ubyte.gz", idx_file({n}, lab));
  };
  make("train", n_train);
  make("t10k", n_test);
}

struct RunResult {
  int code = -1;
  std::string out, err;
  nlohmann::json json() const { return nlohmann::json::parse(out); }
  int err_lines() const {
    int n = 0;
    for (char c : err) n += c == '\n';
    return n;
  }
  // The last line of stderr (a refusal's; progress lines of a slow phase may come before it).
  std::string last_err_line() const {
    const std::string e = !err.empty() && err.back() == '\n' ? err.substr(0, err.size() - 1) : err;
    const std::size_t nl = e.rfind('\n');
    return nl == std::string::npos ? e : e.substr(nl + 1);
  }
};

// `prefix` goes before the binary (an mpirun command line).
inline RunResult run_hepsim(const std::string& args, const TempDir& tmp, const std::string& prefix = "") {
  const std::string out = tmp.file("stdout.txt"), err = tmp.file("stderr.txt");
  const std::string cmd = prefix + std::string(HEPSIM_BINARY) + " " + args + " >" + out + " 2>" + err;
  const int status = std::system(cmd.c_str());
  RunResult r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  auto slurp = [](const std::string& p) {
    std::ifstream f(p);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
  };
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

// A command that must fail as bad input: exit code 2, exactly one line on stderr containing
// `needle` (the offending file or flag), nothing on stdout.
struct BadInput {
  std::string args, needle;
};
inline void check_bad_input(const std::vector<BadInput>& cases, const TempDir& tmp) {
  for (const BadInput& c : cases) {
    CAPTURE(c.args);
    const RunResult r = run_hepsim(c.args, tmp);
    CAPTURE(r.err);
    CHECK(r.code == 2);
    CHECK(r.err_lines() == 1);
    CHECK(r.err.find(c.needle) != std::string::npos);
    CHECK(r.out.empty());
  }
}

}  // namespace hepsim::test
