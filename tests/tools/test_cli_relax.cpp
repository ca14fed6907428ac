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
    for (const char* st : {"max_steps", "cycling", "stalled"}) CHECK(j[st] == 0);
    CHECK(j["not_settled"]["count"] == 0);
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
      // CLI11 would wrap -1 to 2^64 − 1 and saturate 2^64: a seed other than the one asked for.
      {"relax --dataset fmnist --data-dir " + tmp.str() + " --samples 3 --seed -1", "--seed"},
      {"relax --dataset fmnist --data-dir " + tmp.str() + " --samples 3 --seed 18446744073709551616", "--seed"},
      {"relax --dataset fmnist --data-dir " + tmp.str() + " --samples 3 --angle -720", "--angle"},
      {"relax --dataset fmnist --data-dir " + tmp.str() + " --samples 3 --angle 1e300", "--angle"},
      {"relax --dataset fmnist --data-dir " + tmp.str() + " --samples 3 --dt -0.5", "--dt"},
      {"relax --dataset fmnist --data-dir " + tmp.str() + " --samples 3 --dt inf", "--dt"},
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

TEST_CASE("hepsim relax: diverged samples are reported in the JSON, then one line naming the flag, exit code 2") {
  TempDir tmp;
  write_tiny_fmnist(tmp.str(), 5, 5, 2);
  struct Diverging {
    std::string flags, needle;
    bool nudged;  // the divergence is in the nudged phase (the free phase converged)
  };
  // rk4 with dt = 100 (its real stability interval is dt·|λ| ≤ 2.79, and the flow u' = M(u) − u
  // has eigenvalues near −1) and dopri5 with a first step of 1e300 blow up in the first step; a
  // nudge of 1e300 drives the output layer past the divergence threshold at once.
  for (const Diverging& c : {Diverging{"--solver rk4 --dt 100", "--dt", false},
                             Diverging{"--solver dopri5 --dt 1e300", "--dt", false},
                             Diverging{"--beta 1e300", "--beta", true}}) {
    CAPTURE(c.flags);
    const RunResult r = run_hepsim("relax --dataset fmnist --data-dir " + tmp.str() + " --samples 2 " + c.flags, tmp);
    CAPTURE(r.err);
    CHECK(r.code == 2);
    CHECK(r.err_lines() == 1);
    CHECK(r.err.find(c.needle) != std::string::npos);
    CHECK(r.err.find("2 of 2 samples diverged") != std::string::npos);
    REQUIRE(!r.out.empty());  // the counts are still printed
    const auto j = r.json();
    CHECK(j["diverged"] == 2);
    CHECK(j["converged"] == 0);
    // No sample is left to have a residual: null, never 0.0 ("converged exactly").
    CHECK(j["max_residual"].is_null());
    CHECK(j["mean_residual"].is_null());
    if (c.nudged) CHECK(j["free"]["converged"] == 2);
  }
}

TEST_CASE("hepsim relax: samples that do not settle are listed and fewer than half settled is exit code 2") {
  TempDir tmp;
  write_tiny_fmnist(tmp.str(), 5, 6, 2);
  // 3 steps from zero cannot reach 1e-8: every sample runs out of budget.
  const RunResult r = run_hepsim("relax --dataset fmnist --data-dir " + tmp.str() + " --samples 6 --max-steps 3", tmp);
  CAPTURE(r.err);
  CHECK(r.code == 2);
  CHECK(r.err_lines() == 1);
  CHECK(r.err.find("--max-steps") != std::string::npos);
  REQUIRE(!r.out.empty());
  const auto j = r.json();
  CHECK(j["max_steps"] == 6);
  CHECK(j["not_settled"]["samples"] == nlohmann::json::array({0, 1, 2, 3, 4, 5}));
  // Float cannot reach 1e-12: every sample stalls at its rounding floor, long before the budget.
  const RunResult f = run_hepsim("relax --dataset fmnist --data-dir " + tmp.str() +
                                     " --samples 6 --precision float --tol 1e-12 --max-steps 100000",
                                 tmp);
  CHECK(f.code == 2);
  CHECK(f.err.rfind("--tol/--stall-window:", 0) == 0);  // all stalled: the tolerance or the window
  const auto k = f.json();
  CHECK(k["stalled"].get<long>() + k["cycling"].get<long>() == 6);
  CHECK(k["mean_steps"].get<double>() < 10000);  // the floor within a few hundred steps, then one stall window (5000)
}

TEST_CASE("hepsim --help and --version succeed") {
  TempDir tmp;
  CHECK(run_hepsim("--version", tmp).code == 0);
  CHECK(run_hepsim("--version", tmp).out.find("hepsim") != std::string::npos);
  CHECK(run_hepsim("--help", tmp).code == 0);
  CHECK(run_hepsim("relax --help", tmp).out.find("--solver") != std::string::npos);
}
