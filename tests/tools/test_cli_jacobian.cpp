// `hepsim jacobian` end to end (SPEC 9): the issue's two acceptance commands on mlp_2-256, the
// dynamics on a generated Fashion-MNIST-format dataset, and one-line errors with exit code 2.
#include <doctest/doctest.h>

#include <cmath>
#include <sstream>

#include "cli_helpers.hpp"

using namespace hepsim::test;

TEST_CASE("hepsim jacobian: independent feedback (angle 90), 2000 probes") {
  TempDir tmp;
  const RunResult r = run_hepsim("jacobian --arch mlp_2-256 --angle 90 --probes 2000", tmp);
  REQUIRE(r.code == 0);
  // Nothing on stderr but progress lines (on a loaded machine the command takes over 3 s and
  // reports where it stands): no warning, no error.
  std::istringstream lines(r.err);
  for (std::string line; std::getline(lines, line);) {
    CAPTURE(line);
    CHECK(line.rfind("jacobian: ", 0) == 0);
    CHECK(line.find("error") == std::string::npos);
  }
  const auto j = r.json();
  for (const char* key : {"neurons", "jac_sym", "jac_sym_estimate", "homeo_exact", "homeo_estimate",
                          "homeo_estimate_stderr", "max_real_eig", "weight_angle_deg", "max_real_eig_dynamics"}) {
    CAPTURE(key);
    REQUIRE(j.contains(key));
    CHECK(j[key].is_number());
  }
  CHECK(j["neurons"] == 522);
  const double exact = j["homeo_exact"].get<double>(), est = j["homeo_estimate"].get<double>();
  // The issue's acceptance bound. The estimate's relative standard error at 2000 probes is ≈ 0.4%
  // (reported in homeo_estimate_stderr), so 10% is 25 standard errors.
  CHECK(std::abs(est - exact) < 0.1 * exact);
  CHECK(std::abs(est - exact) < 4 * j["homeo_estimate_stderr"].get<double>());
  // Independent truncated normals: angle 90° ± 0.2° (see tests/sim/test_network.cpp); jac_sym of
  // J = H − I between the random value ½ and 1 (the −I is symmetric).
  CHECK(j["weight_angle_deg"].get<double>() == doctest::Approx(90).epsilon(0.005));
  CHECK(j["jac_sym"].get<double>() > 0.5);
  CHECK(j["jac_sym"].get<double>() < 0.8);
  CHECK(std::abs(j["jac_sym_estimate"].get<double>() - j["jac_sym"].get<double>()) < 0.01);
  CHECK(j["dynamics_converged"] == 8);                        // the default --samples 8, random inputs
  CHECK(j["max_real_eig_dynamics"].get<double>() < 0);       // a stable fixed point
  CHECK(j["henrici"].get<double>() > 0.1);                    // non-normal
}

TEST_CASE("hepsim jacobian: symmetric start (angle 0)") {
  TempDir tmp;
  const RunResult r = run_hepsim("jacobian --arch mlp_2-256 --angle 0 --probes 2000", tmp);
  REQUIRE(r.code == 0);
  const auto j = r.json();
  // --angle 0 gives bit-exactly transposed feedback: H = Hᵀ, so the exact loss is 0 up to rounding
  // (in fact exactly 0) and jac_sym is 1.
  CHECK(j["homeo_exact"].get<double>() < 1e-10);
  CHECK(j["jac_sym"].get<double>() > 0.999999);
  CHECK(j["jac_sym_estimate"].get<double>() > 0.999999);
  CHECK(std::abs(j["homeo_estimate"].get<double>()) < 1e-10);
  CHECK(j["weight_angle_deg"].get<double>() < 1e-6);
  CHECK(j["max_real_eig_imag"].get<double>() == 0.0);  // symmetric J: real spectrum
  CHECK(j["henrici"].get<double>() < 1e-6);            // normal: ≲ sqrt(nε) = 3e-7
  // A fixed point the map converged to has a map Jacobian of spectral radius ≤ 1, hence no
  // eigenvalue of the linearised dynamics J_G D − I with positive real part: none is unstable.
  CHECK(j["dynamics_converged"].get<long>() > 0);
  CHECK(j["dynamics_unstable"] == 0);
  CHECK(j["max_real_eig_dynamics"].get<double>() <= 0.0);
  // The same analysis at Anderson's fixed points runs and counts (it may find saddles: README).
  const RunResult a = run_hepsim("jacobian --arch mlp_2-256 --angle 0 --probes 100 --solver anderson", tmp);
  REQUIRE_MESSAGE(a.code == 0, a.err);
  CHECK(a.json()["dynamics_unstable"].get<long>() <= a.json()["dynamics_converged"].get<long>());
}

TEST_CASE("hepsim jacobian: dynamics at generated images, and loop_mnist has no weight angle") {
  TempDir tmp;
  write_tiny_fmnist(tmp.str(), 5, 6, 4);
  const RunResult r = run_hepsim("jacobian --arch loop_mnist --dataset fmnist --data-dir " + tmp.str() +
                                     " --samples 3 --probes 200 --seed 2",
                                 tmp);
  REQUIRE(r.code == 0);
  const auto j = r.json();
  CHECK(j["dynamics_samples"] == 3);
  CHECK(j["dynamics_converged"] == 3);
  CHECK(j["free"]["converged"] == 3);
  CHECK(j["free"]["not_settled"]["count"] == 0);
  CHECK(j["weight_angle_deg"].is_null());  // no reciprocal pairs
  CHECK(j["max_real_eig_dynamics"].is_number());
  // Spectra are skipped above --max-dense; exact norms and estimates remain.
  const RunResult r2 = run_hepsim("jacobian --arch loop_mnist --probes 200 --max-dense 100 --samples 1", tmp);
  REQUIRE(r2.code == 0);
  const auto j2 = r2.json();
  CHECK(j2["max_real_eig"].is_null());
  CHECK(j2["max_real_eig_dynamics"].is_null());
  CHECK(j2["homeo_exact"].is_number());
  CHECK(j2["jac_sym_estimate"].is_number());
  // Free phases that do not settle: listed, and with fewer than half settled, exit code 2 after
  // the JSON, naming the flag (2 steps from zero cannot reach 1e-9).
  const RunResult r3 = run_hepsim("jacobian --arch loop_mnist --dataset fmnist --data-dir " + tmp.str() +
                                      " --samples 3 --probes 200 --max-steps 2",
                                  tmp);
  CAPTURE(r3.err);
  CHECK(r3.code == 2);
  CHECK(r3.err_lines() == 1);
  CHECK(r3.err.find("--max-steps") != std::string::npos);
  const auto j3 = r3.json();
  CHECK(j3["free"]["max_steps"] == 3);
  CHECK(j3["free"]["not_settled"]["samples"] == nlohmann::json::array({0, 1, 2}));
  CHECK(j3["dynamics_converged"] == 0);
}

TEST_CASE("hepsim jacobian: bad input gives one line naming the flag or file, exit code 2") {
  TempDir tmp;
  const std::vector<BadInput> cases = {
      {"jacobian --probes 1", "--probes"},
      {"jacobian --dt -1", "--dt"},
      {"jacobian --angle nan", "--angle"},
      {"jacobian --samples 0", "--samples"},
      {"jacobian --arch nope", "--arch"},
      {"jacobian --dataset fmnits", "--dataset"},
      {"jacobian --dataset fmnist --data-dir " + tmp.file("missing"), tmp.file("missing")},
      {"jacobian --tol -1", "--tol"},
      {"jacobian --solver euler", "--solver"},
      {"jacobian --bogus 1", "--bogus"},
      // Sizes of allocations: bounded in the flags' help, never std::bad_alloc.
      {"jacobian --probes 100000000000", "--probes"},
      {"jacobian --samples 100000000000", "--samples"},
      {"jacobian --max-dense 100000", "--max-dense"},
      // CLI11 would wrap -1 to 2^64 − 1 and saturate 2^64: a seed other than the one asked for.
      {"jacobian --seed -1", "--seed"},
      {"jacobian --seed 18446744073709551616", "--seed"},
      {"jacobian --angle -720", "--angle"},
      {"jacobian --angle 1e300", "--angle"},
  };
  check_bad_input(cases, tmp);
}

TEST_CASE("hepsim jacobian: dense spectra that take seconds report their progress on stderr") {
  // 7 eigenproblems of 1,610 neurons, about a second each on one core: after the first 3 s
  // (silent) each completed one is due a line; the eighth audit saw minutes of silence at 3,000.
  TempDir tmp;
  const std::string arch = tmp.file("d.json");
  std::ofstream(arch) << R"({"name": "d", "layers": [{"name": "h", "size": 1600}, {"name": "out", "size": "classes"}],
    "edges": [{"pre": "in", "post": "h"}, {"pre": "h", "post": "out"}, {"pre": "out", "post": "h", "type": "dense_nobias"}]})";
  const RunResult r = run_hepsim("jacobian --arch " + arch + " --samples 6 --probes 10 --threads 1", tmp);
  CAPTURE(r.err);
  REQUIRE(r.code == 0);
  CHECK(r.err.find("jacobian: dense spectra: ") != std::string::npos);
  CHECK(r.err.find(" of 7 done") != std::string::npos);
}
