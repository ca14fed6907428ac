// `hepsim relax` end to end (SPEC 9): JSON output on a generated dataset, and one-line errors
// with exit code 2 for bad input.
#include <doctest/doctest.h>

#include "cli_helpers.hpp"

using namespace hepsim::test;

TEST_CASE("hepsim relax: dopri5 and rk4 reach the map's fixed points on a generated dataset") {
  TempDir tmp;
  write_tiny_fmnist(tmp.str(), 20, 30, 1);
  for (const char* solver : {"dopri5", "rk4", "map"}) {
    CAPTURE(solver);
    const RunResult r = run_hepsim(std::string("relax --dataset fmnist --data-dir ") + tmp.str() +
                                       " --samples 30 --batch-size 16 --solver " + solver + " --seed 3",
                                   tmp);
    REQUIRE(r.code == 0);
    const auto j = r.json();
    CHECK(j["solver"] == solver);
    CHECK(j["samples"] == 30);
    CHECK(j["converged"] == 30);
    CHECK(j["diverged"] == 0);
    // Residual tol 1e-8 (default) and contraction ρ < 0.99 at angle 90: ≤ 1e-6.
    CHECK(j["max_abs_diff_vs_map"].get<double>() < 1e-6);
    CHECK(j["mean_residual"].get<double>() <= 1e-8);
    CHECK(j["mean_steps"].get<double>() > 1);
  }
  // A nudged second phase.
  const RunResult r = run_hepsim("relax --dataset fmnist --data-dir " + tmp.str() +
                                     " --samples 10 --solver dopri5 --beta 0.5 --precision float --tol 1e-5",
                                 tmp);
  REQUIRE(r.code == 0);
  const auto j = r.json();
  CHECK(j["converged"] == 10);
  CHECK(j["free"]["converged"] == 10);
  CHECK(j["max_abs_diff_vs_map"].get<double>() < 1e-3);
}

TEST_CASE("hepsim relax: bad input gives one line naming the file or flag, exit code 2") {
  TempDir tmp;
  write_tiny_fmnist(tmp.str(), 5, 5, 2);
  const std::vector<BadInput> cases = {
      {"relax --dataset fmnist --data-dir " + tmp.file("missing") + " --samples 3", tmp.file("missing")},
      {"relax --dataset fmnist --data-dir " + tmp.str() + " --samples 3 --beta nan", "--beta"},
      {"relax --dataset fmnist --data-dir " + tmp.str() + " --samples 3 --solver euler", "--solver"},
      {"relax --dataset fmnist --data-dir " + tmp.str() + " --samples 3 --arch nope", "--arch"},
      {"relax --dataset fmnist --data-dir " + tmp.str() + " --samples 99", "--samples"},
      {"relax --dataset fmnist --data-dir " + tmp.str() + " --samples 0", "--samples"},
      {"relax --dataset fmnits --data-dir " + tmp.str() + " --samples 3", "--dataset"},
      {"relax --dataset fmnist --data-dir " + tmp.str() + " --samples 3 --bogus 1", "--bogus"},
      {"relax --dataset fmnist --data-dir " + tmp.str() + " --samples 3 --arch " + tmp.file("none.json"),
       tmp.file("none.json")},
      {"frobnicate", "frobnicate"},
  };
  check_bad_input(cases, tmp);
  // A corrupt data file is named.
  write_file(tmp.file("t10k-labels-idx1-ubyte.gz"), Bytes{1, 2, 3});
  std::filesystem::remove(tmp.file("t10k-labels-idx1-ubyte.gz"));
  write_file(tmp.file("t10k-labels-idx1-ubyte"), Bytes{0, 0, 8, 1, 0, 0, 0, 5, 1, 2, 3});  // truncated
  const RunResult r = run_hepsim("relax --dataset fmnist --data-dir " + tmp.str() + " --samples 3", tmp);
  CHECK(r.code == 2);
  CHECK(r.err_lines() == 1);
  CHECK(r.err.find("t10k-labels-idx1-ubyte") != std::string::npos);
}

TEST_CASE("hepsim --help and --version succeed") {
  TempDir tmp;
  CHECK(run_hepsim("--version", tmp).code == 0);
  CHECK(run_hepsim("--version", tmp).out.find("hepsim") != std::string::npos);
  CHECK(run_hepsim("--help", tmp).code == 0);
  CHECK(run_hepsim("relax --help", tmp).out.find("--solver") != std::string::npos);
}
