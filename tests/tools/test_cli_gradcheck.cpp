// `hepsim gradcheck` end to end: the acceptance settings (symmetric and independent
// feedback on mlp_2-256, and loop_mnist), plus bad input.
#include <doctest/doctest.h>

#include <filesystem>

#include "cli_helpers.hpp"

using namespace hepsim::test;

namespace {

// Real Fashion-MNIST when the Debian package is installed (tools/test.sh installs it), else a
// random batch: the properties checked hold for any input.
std::string data_flags() {
  return std::filesystem::exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz") ? "--dataset fmnist"
                                                                                                 : "--dataset random";
}

double total(const nlohmann::json& e, const char* key) { return e[key]["total"].get<double>(); }

// The exactness of a symmetric network's references and estimators (the estimators issue): v* = δ,
// the RBP gradient = finite differences, BPTT → RBP, and each estimator's error falling with N.
void check_exact_symmetric(const nlohmann::json& j, std::size_t estimators) {
  CHECK(total(j["exact"], "cos_vstar_delta") > 0.99999);
  CHECK(j["exact"]["reference"] == "dense");  // mlp_2-256's 522 neurons: dense solves (auto)
  CHECK(j["exact"]["references_converged"] == true);
  CHECK(j["exact"]["rbp_fd_rel_err"].get<double>() < 1e-5);
  CHECK(j["exact"]["bptt_vs_rbp_rel_err"].get<double>() < 1e-6);
  const auto& est = j["estimators"];
  REQUIRE(est.size() == estimators);
  for (std::size_t i = 1; i < est.size(); ++i)
    CHECK(total(est[i], "rel_err_vs_vstar") < total(est[i - 1], "rel_err_vs_vstar"));
}

}  // namespace

TEST_CASE("hepsim gradcheck: symmetric mlp_2-256, estimators converge to v* = delta with N") {
  TempDir tmp;
  const RunResult r =
      run_hepsim("gradcheck --arch mlp_2-256 --angle 0 --N 1,2,4,6 --beta 0.05 --batch 8 " + data_flags(), tmp);
  REQUIRE(r.code == 0);
  const auto j = r.json();
  CHECK(j["mode"] == "converged");
  CHECK(j["free"]["converged"] == 8);
  // Measured (real data, batch 16): 5.6e-2, 6.1e-3, 7.0e-5, 5.2e-6; an independent NumPy check
  // of this setting gives about 6e-2, 4e-3, 7e-5, 4e-6.
  check_exact_symmetric(j, 4);
  const auto& est = j["estimators"];
  CHECK(total(est[2], "rel_err_vs_vstar") < 3e-4);
  for (const auto& e : est) CHECK(e["diverged"] == 0);
}

TEST_CASE("hepsim gradcheck: independent feedback shows the asymmetry bias, not a finite-nudge bias") {
  TempDir tmp;
  for (const char* arch : {"mlp_2-256", "loop_mnist"}) {
    CAPTURE(arch);
    const RunResult r = run_hepsim(std::string("gradcheck --arch ") + arch +
                                       " --angle 90 --N 1,2,4,6 --beta 0.05 --batch 8 " + data_flags(),
                                   tmp);
    REQUIRE(r.code == 0);
    const auto j = r.json();
    const auto& c = j["exact"]["cos_vstar_delta"];
    CHECK(c["total"].get<double>() < 0.6);
    // Hidden layers: the EP response is nearly orthogonal to backprop's error signal (measured
    // 0.05 / 0.10 for mlp_2-256, 0.01 / 0.01 for loop_mnist).
    CHECK(std::abs(c["l1"].get<double>()) < 0.3);
    CHECK(std::abs(c["l2"].get<double>()) < 0.3);
    CHECK(j["exact"]["rbp_fd_rel_err"].get<double>() < 1e-5);
    const auto& est = j["estimators"];
    CHECK(total(est[2], "rel_err_vs_vstar") < 1e-4);  // N = 4 removes the finite-nudge bias …
    CHECK(total(est[3], "rel_err_vs_vstar") < total(est[0], "rel_err_vs_vstar"));
    CHECK(total(est[3], "cos_vs_delta") < 0.6);  // … but not the asymmetry bias
  }
}

TEST_CASE("hepsim gradcheck: truncated mode and bad input") {
  TempDir tmp;
  const RunResult r = run_hepsim("gradcheck --arch loop_mnist --dataset random --batch 4 --T1 60 --T2 10 --N 0,2 "
                                 "--beta 0.1 --fd-directions 2",
                                 tmp);
  REQUIRE(r.code == 0);
  const auto j = r.json();
  CHECK(j["mode"] == "truncated");
  CHECK(j["exact"]["bptt_steps"] == 10);
  CHECK(j["estimators"][0]["rel_err_vs_vstar"]["total"].get<double>() == 0.0);  // N = 0 is the reference itself
  for (const std::string bad : {"--N 1,x", "--beta 0", "--beta -1", "--batch 0", "--tol nan", "--N -1"}) {
    CAPTURE(bad);
    const RunResult b = run_hepsim("gradcheck --arch loop_mnist --dataset random " + bad, tmp);
    CHECK(b.code == 2);
    CHECK(b.err_lines() == 1);
  }
  const std::string g = "gradcheck --dataset random ";
  const std::vector<BadInput> cases = {
      // The same N range as `hepsim train`.
      {g + "--N 100000000", "--N"},
      {g + "--N 1,65", "--N"},
      // Sizes of allocations: bounded, never std::bad_alloc.
      {g + "--classes 1000000", "--classes"},
      {g + "--classes 1", "--classes"},  // a one-class softmax has no gradient: all-null output
      {g + "--input-size 100000000", "--input-size"},
      {g + "--batch 100000000", "--batch"},
      {g + "--batch 100000", "--batch"},          // the random batch: 794 × 100,000 values
      {g + "--batch 20000 --N 64", "--batch"},    // 33 stacked contour points × 522 × 20,000
      {g + "--fd-directions 100000000000", "--fd-directions"},
      {g + "--T2 1000000000", "--T2"},            // truncated BPTT stores T2 + 1 states
      // CLI11 would wrap -1 to 2^64 − 1 and saturate 2^64: a seed other than the one asked for.
      {g + "--seed -1", "--seed"},
      {g + "--seed 18446744073709551616", "--seed"},
      {g + "--angle -720", "--angle"},
      {g + "--angle 1e300", "--angle"},
      {g + "--reference lu", "--reference"},
      {g + "--reference gmres --T2 5", "--reference"},
      // Dense solves of cnn_small's 14,464 neurons (14,464² doubles per sample and thread): refused.
      {"gradcheck --arch cnn_small --reference dense", "--reference"},
  };
  check_bad_input(cases, tmp);
}

TEST_CASE("hepsim gradcheck: an estimator whose every sample diverged fails with exit code 2 after its JSON") {
  TempDir tmp;
  const RunResult r =
      run_hepsim("gradcheck --arch loop_mnist --dataset random --batch 2 --fd-directions 1 --N 1 --beta 1e300,0.05", tmp);
  CAPTURE(r.err);
  CHECK(r.code == 2);
  CHECK(r.err_lines() == 1);
  CHECK(r.err.find("--beta") != std::string::npos);
  REQUIRE(!r.out.empty());  // the measurements are still printed
  const auto j = r.json();
  REQUIRE(j["estimators"].size() == 2);
  const auto& dead = j["estimators"][0];
  CHECK(dead["diverged"] == 2);
  CHECK(dead["max_residual"].is_null());  // no live sample: null, never 0.0
  const auto& live = j["estimators"][1];  // |β| = 0.05 still measures
  CHECK(live["diverged"] == 0);
  CHECK(live["max_residual"].get<double>() > 0);
  CHECK(j["free"]["diverged"] == 0);
}

TEST_CASE("hepsim gradcheck: a free phase that cycles is named and left out, the rest meets every exactness check") {
  // Issue 11's setting: on the first 16 Fashion-MNIST test images, mlp_2-256 at angle 0 and seed 3,
  // sample 7's free phase falls into a period-2 orbit of the map (residual ≈ 1 for ever).
  if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")) {
    MESSAGE("Fashion-MNIST not installed (Debian package dataset-fashion-mnist): skipped");
    return;
  }
  TempDir tmp;
  const std::string cmd = "gradcheck --arch mlp_2-256 --angle 0 --seed 3 --dataset fmnist --N 1,2,4,6 --beta 0.05";
  const RunResult r = run_hepsim(cmd, tmp);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto j = r.json();
  CHECK(j["batch"] == 16);
  CHECK(j["measured"] == 15);
  CHECK(j["free"]["cycling"] == 1);
  CHECK(j["free"]["not_settled"]["count"] == 1);
  CHECK(j["free"]["not_settled"]["samples"] == nlohmann::json::array({7}));
  CHECK(j["free"]["not_settled"]["status"] == nlohmann::json::array({"cycling"}));
  CHECK(j["free"]["max_residual"].get<double>() <= 1e-12);  // over the measured samples
  check_exact_symmetric(j, 4);  // the exactness of the estimators issue, on the other 15
  // It said so on stderr, in one line naming the sample and the remedies.
  CHECK(r.err.find("7 (cycling)") != std::string::npos);
  CHECK(r.err.find("--dt") != std::string::npos);
  // Anderson finds saddles here (unstable for the flow): the linear iterations converge at no
  // damping, so the iterative references and BPTT are not measured, the dense solves still are,
  // and one line says so.
  const RunResult a = run_hepsim("gradcheck --arch mlp_2-256 --angle 0 --seed 3 --dataset fmnist --batch 8 --N 1 "
                                 "--beta 0.05 --solver anderson --max-steps 2000 --fd-directions 1",
                                 tmp);
  REQUIRE_MESSAGE(a.code == 0, a.err);
  const auto aj = a.json();
  CHECK(aj["exact"]["iterations_converged"] == false);
  CHECK(aj["exact"]["iteration_dt"] == 0.125);  // halved three times
  CHECK(aj["exact"]["bptt_vs_rbp_rel_err"].is_null());
  CHECK(aj["exact"]["rbp_fd_rel_err"].get<double>() < 1e-5);  // the dense δ is still exact
  CHECK(a.err.find("do not converge") != std::string::npos);
  // GMRES references (those of networks above 4,096 neurons) are exact there too.
  const RunResult kr = run_hepsim("gradcheck --arch mlp_2-256 --angle 0 --seed 3 --dataset fmnist --batch 8 --N 1 "
                                  "--beta 0.05 --solver anderson --max-steps 2000 --fd-directions 1 --reference gmres",
                                  tmp);
  REQUIRE_MESSAGE(kr.code == 0, kr.err);
  const auto kj = kr.json();
  CHECK(kj["exact"]["reference"] == "gmres");
  CHECK(kj["exact"]["references_converged"] == true);
  CHECK(kj["exact"]["iterations_converged"] == false);
  CHECK(kj["exact"]["gmres_residual"].get<double>() <= 1e-12);
  CHECK(kj["exact"]["rbp_fd_rel_err"].get<double>() < 1e-5);
  CHECK(kj["exact"]["rbp_iter_vs_gmres_rel_err"].get<double>() > 1);  // the iteration is far off
  CHECK(kr.err.find("the GMRES solves remain the references") != std::string::npos);
  // With --T1 the iterations are the references: missing --tol there ends the run naming --T1.
  const RunResult t1 = run_hepsim("gradcheck --arch mlp_2-256 --angle 0 --seed 3 --dataset fmnist --batch 8 --N 1 "
                                  "--beta 0.05 --solver anderson --max-steps 2000 --fd-directions 1 --T1 2000",
                                  tmp);
  CAPTURE(t1.err);
  CHECK(t1.code == 2);
  CHECK(t1.last_err_line().rfind("--T1: ", 0) == 0);  // (progress lines may precede it on a loaded machine)
  CHECK(t1.json()["exact"]["reference"] == "iterations");
  CHECK(t1.json()["exact"]["references_converged"] == false);
  // The damped map settles all 16 at the same exactness.
  const RunResult d = run_hepsim(cmd + " --dt 0.5", tmp);
  REQUIRE_MESSAGE(d.code == 0, d.err);
  const auto k = d.json();
  CHECK(k["measured"] == 16);
  CHECK(k["free"]["not_settled"]["count"] == 0);
  check_exact_symmetric(k, 4);
}

TEST_CASE("hepsim gradcheck: fewer than half settled ends with exit code 2 after the JSON, naming the flag") {
  TempDir tmp;
  const RunResult r = run_hepsim("gradcheck --arch loop_mnist --dataset random --batch 4 --max-steps 5", tmp);
  CAPTURE(r.err);
  CHECK(r.code == 2);
  CHECK(r.err_lines() == 1);
  CHECK(r.err.find("--max-steps") != std::string::npos);
  CHECK(r.err.find("0 of 4 samples settled") != std::string::npos);
  REQUIRE(!r.out.empty());
  const auto j = r.json();
  CHECK(j["measured"] == 0);
  CHECK(j["free"]["max_steps"] == 4);
  CHECK(j["free"]["not_settled"]["samples"] == nlohmann::json::array({0, 1, 2, 3}));
  CHECK(j["exact"].is_null());
  // --T2 alone: the free phase still relaxes to --tol, so running out of --max-steps there is
  // not settling (only --T1 makes a budget the point).
  const RunResult t2 = run_hepsim("gradcheck --arch loop_mnist --dataset random --batch 4 --T2 10 --max-steps 5", tmp);
  CHECK(t2.code == 2);
  CHECK(t2.err.find("--max-steps") != std::string::npos);
  CHECK(t2.json()["measured"] == 0);
  for (const std::string bad : {"--dt -1", "--dt nan", "--solver euler"}) {
    CAPTURE(bad);
    const RunResult b = run_hepsim("gradcheck --arch loop_mnist --dataset random " + bad, tmp);
    CHECK(b.code == 2);
    CHECK(b.err_lines() == 1);
    CHECK(b.err.find(bad.substr(0, bad.find(' '))) != std::string::npos);
  }
}
