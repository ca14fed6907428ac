// `hepsim train` on an analog substrate (issue 13): the keys noise, mismatch, weight-bits,
// weight-clip, tau and settle — bad values end with exit code 2 naming the flag or file: key; a
// run records them in its log and checkpoint, the device cannot change on resume, and phases cut
// short by settle are counted as not converged.
#include <doctest/doctest.h>

#include <filesystem>

#include "cli_helpers.hpp"
#include "datasets/h5_io.hpp"
#include "hardening_helpers.hpp"
#include "sim/hash.hpp"
#include "tools/run_files.hpp"

using namespace hepsim;
using namespace hepsim::test;
using hepsim::tools::TrainLog;
namespace fs = std::filesystem;

TEST_CASE("analog keys: bad values are one line, exit 2, naming the flag") {
  TempDir data, tmp;
  write_tiny_fmnist(data.str(), 20, 10, 31);
  const std::string arch = small_arch(tmp);
  const std::string t = "train " + flags(data, arch) + " --epochs 1 --out " + tmp.file("r");
  const std::string cfg = tmp.file("bad.json");
  std::ofstream(cfg) << R"({"noise": -0.1})";
  check_bad_input({{t + " --noise -0.1", "--noise:"},
                   {t + " --noise nan", "--noise:"},
                   {t + " --mismatch -0.05", "--mismatch:"},
                   {t + " --weight-bits 17", "--weight-bits:"},
                   {t + " --weight-bits -1", "--weight-bits:"},
                   {t + " --weight-bits 4", "--weight-clip: must be > 0 with weight-bits"},
                   {t + " --weight-bits 4 --weight-clip -1", "--weight-clip:"},
                   {t + " --weight-clip 0.5", "--weight-clip: only applies with weight-bits"},
                   {t + " --solver rk4 --tau h9=1", "--tau: unknown layer 'h9'"},
                   {t + " --solver rk4 --tau h=0", "--tau:"},
                   {t + " --solver rk4 --tau h=-2", "--tau:"},
                   {t + " --tau h=2", "--tau: time constants apply to the ODE solvers"},
                   {t + " --noise 0.04 --solver dopri5", "--noise: needs a fixed-step solver"},
                   {t + " --noise 0.04 --solver anderson", "--noise: needs a fixed-step solver"},
                   {t + " --noise 0.04 --tol 1e-4", "--tol: per-sample stopping"},
                   {t + " --solver rk4 --dt 0.5 --settle 0.1", "--settle: is shorter than one step"},
                   {"train " + flags(data, arch) + " --config " + cfg + " --epochs 1 --out " + tmp.file("r"),
                    cfg + ": noise"}},
                  tmp);
  CHECK_FALSE(fs::exists(tmp.file("r")));
}

TEST_CASE("analog keys: a noisy run on a quantized, mismatched device records its substrate — the device is fixed on resume") {
  TempDir data, tmp;
  write_tiny_fmnist(data.str(), 40, 20, 32);
  const std::string arch = small_arch(tmp);
  const std::string run = tmp.file("run");
  const RunResult r = run_hepsim("train " + flags(data, arch) +
                                     " --epochs 1 --noise 0.04 --mismatch 0.05 --weight-bits 6 --weight-clip 0.3"
                                     " --solver rk4 --dt 0.5 --tau h=2 --out " + run,
                                 tmp);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const nlohmann::json c = TrainLog::read_config(run + "/log.h5");
  CHECK(c.at("noise") == 0.04);
  CHECK(c.at("mismatch") == 0.05);
  CHECK(c.at("weight-bits") == 6);
  CHECK(c.at("tau") == nlohmann::json{{"h", 2.0}});
  const std::vector<EpochRecord> recs = TrainLog::read_records(run + "/log.h5", 10);
  REQUIRE(recs.size() == 1);
  CHECK(std::isfinite(recs[0].test_loss));
  // Every noisy free phase stays above the report tolerance (the noise keeps the residual near σ):
  // all 40 are counted as not converged, none as diverged.
  CHECK(recs[0].not_converged == 40);
  CHECK(recs[0].diverged == 0);
  check_bad_input({{"train --resume " + run + " --epochs 2 --mismatch 0.1", "--mismatch: cannot change when resuming"},
                   {"train --resume " + run + " --epochs 2 --weight-bits 4", "--weight-bits: cannot change when resuming"}},
                  tmp);
  // The noise may change (a training hyper-parameter).
  const RunResult r2 = run_hepsim("train --resume " + run + " --epochs 2 --noise 0.02 --quiet", tmp);
  CHECK_MESSAGE(r2.code == 0, r2.err);
  CHECK(TrainLog::read_config(run + "/log.h5").at("noise") == 0.02);
}

TEST_CASE("analog keys: settle cuts every phase at its physical time and counts the free ones as not converged") {
  TempDir data, tmp;
  write_tiny_fmnist(data.str(), 40, 20, 33);
  const std::string arch = small_arch(tmp);
  for (const std::string settle : {"0", "2"}) {
    CAPTURE(settle);
    const std::string run = tmp.file("s" + settle);
    const RunResult r = run_hepsim("train " + flags(data, arch) + " --epochs 1 --solver rk4 --dt 0.5 --T1 400 --report-tol 1e-6"
                                   " --settle " + settle + " --out " + run,
                                   tmp);
    REQUIRE_MESSAGE(r.code == 0, r.err);
    const std::vector<EpochRecord> recs = TrainLog::read_records(run + "/log.h5", 10);
    REQUIRE(recs.size() == 1);
    if (settle == "0") {  // T1 = 400 steps of 0.5: every phase reaches 1e-6
      CHECK(recs[0].not_converged == 0);
    } else {  // 2 time units (4 steps) from u = 0: none does
      CHECK(recs[0].not_converged == 40);
      CHECK(recs[0].free_steps == doctest::Approx(4));
    }
  }
}

TEST_CASE("gradcheck --algo online and --noise: entries carry their algorithm — noise hurts classic EP far more than hEP") {
  TempDir tmp;
  const std::string g = "gradcheck --dataset random --angle 0 --batch 6 --fd-directions 1 --threads 1 --seed 6";
  // Online hEP with settled phase points (T2 = 200, 4 periods, N = 4, |β| = 0.1): the README's
  // setting where its cosine with v* exceeds 0.999 (measured 0.999999).
  const RunResult on = run_hepsim(g + " --algo online --N 4 --beta 0.1 --T2 200 --periods 4", tmp);
  REQUIRE_MESSAGE(on.code == 0, on.err);
  const nlohmann::json e = nlohmann::json::parse(on.out).at("estimators").at(0);
  CHECK(e.at("algo") == "online");
  CHECK(e.at("periods") == 4);
  CHECK(e.at("relaxations") == 16);
  CHECK(e.at("cos_vs_vstar").at("total").get<double>() > 0.999);
  CHECK(e.at("imag_rel").get<double>() < 1e-2);  // measured 1e-3: the phase points lag little
  // State noise σ = 0.04 in the estimators' phases (T2 = 40): classic EP with β = 0.1 divides the
  // noise by β and loses the direction; holomorphic EP N = 10, |β| = 0.4 keeps it (the 2022 paper's
  // finding).
  const RunResult noisy = run_hepsim(g + " --N 1,10 --beta 0.1,0.4 --T2 40 --noise 0.04", tmp);
  REQUIRE_MESSAGE(noisy.code == 0, noisy.err);
  const nlohmann::json est = nlohmann::json::parse(noisy.out).at("estimators");  // N-major: (1, 0.1) … (10, 0.4)
  REQUIRE(est.size() == 4);
  for (const auto& x : est) CHECK(x.at("algo") == "hep");
  CHECK(est.at(0).at("N") == 1);
  CHECK(est.at(3).at("N") == 10);
  const double classic = est.at(0).at("cos_vs_vstar").at("total").get<double>();
  const double hep = est.at(3).at("cos_vs_vstar").at("total").get<double>();
  MESSAGE("with noise 0.04: classic EP (beta 0.1) cos " << classic << ", hEP N 10 |beta| 0.4 cos " << hep);
  CHECK(classic < 0.5);
  CHECK(hep > 0.9);
  check_bad_input({{g + " --algo online --N 4", "--T2: online hEP needs"},
                   {g + " --algo online --N 1 --T2 5", "--N: online hEP needs at least 2"},
                   {g + " --algo bogus", "--algo:"},
                   {g + " --periods 3", "--periods: only applies with --algo online"},
                   {g + " --algo online --N 4 --T2 5 --periods 1", "--periods:"},
                   {g + " --noise 0.1", "--noise: noisy phases never settle"},
                   {g + " --noise -1 --T2 5", "--noise:"},
                   {g + " --noise 0.1 --T2 5 --solver dopri5", "--noise: needs a fixed-step solver"}},
                  tmp);
}

TEST_CASE("train --algo online: runs and logs its algorithm — bad settings exit 2") {
  TempDir data, tmp;
  write_tiny_fmnist(data.str(), 20, 10, 34);
  const std::string arch = small_arch(tmp);
  const std::string t = "train " + flags(data, arch) + " --epochs 1 --algo online";
  check_bad_input({{t + " --N 1 --out " + tmp.file("a"), "--N: online hEP needs at least 2"},
                   {t + " --periods 1 --out " + tmp.file("a"), "--periods:"},
                   {t + " --tol 1e-3 --warm-start on --out " + tmp.file("a"), "--warm-start: online hEP has no free phase"}},
                  tmp);
  const RunResult r = run_hepsim(t + " --N 4 --beta 0.4 --periods 3 --noise 0.02 --out " + tmp.file("run"), tmp);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const nlohmann::json c = TrainLog::read_config(tmp.file("run/log.h5"));
  CHECK(c.at("algo") == "online");
  CHECK(c.at("periods") == 3);
  const std::vector<EpochRecord> recs = TrainLog::read_records(tmp.file("run/log.h5"), 10);
  REQUIRE(recs.size() == 1);
  CHECK(std::isfinite(recs[0].cos_grad_total));
}

TEST_CASE("analog keys: a run-away is blamed on the analog flag that caused it (eighteenth audit)") {
  TempDir data, tmp;
  write_tiny_fmnist(data.str(), 20, 10, 35);
  const std::string arch = small_arch(tmp);
  int runs = 0;  // a run that ends at its epoch's end keeps its directory: one each
  const auto t = [&] {
    std::string dir = tmp.file("r");
    dir += std::to_string(runs++);
    return "train " + flags(data, arch) + " --epochs 1 --out " + dir;
  };
  // Before any update the learning rate cannot be the cause (they named --lr); online hEP has no
  // free phase (it named --lr for a huge nudge); time constants far from 1 are refused (1e100 was
  // 0 in float and every dopri5 phase "diverged").
  check_bad_input({{t() + " --mismatch 1e10", "--mismatch:"},
                   {t() + " --weight-bits 2 --weight-clip 1e10", "--weight-clip:"},
                   {t() + " --algo online --N 3 --beta 1e10", "--beta:"},
                   {t() + " --solver dopri5 --tau out=1e100", "--tau: the time constant of 'out' must be between 1e-6 and 1e6"},
                   {t() + " --solver rk4 --tau h=1e-7", "--tau:"}},
                  tmp);
  // gradcheck prints its JSON first, then names the noise (it named --beta).
  const RunResult g = run_hepsim("gradcheck --dataset random --arch " + arch +
                                     " --threads 1 --batch 4 --fd-directions 1 --T2 5 --noise 1e10 --N 2 --beta 0.05",
                                 tmp);
  CHECK(g.code == 2);
  CHECK_MESSAGE(g.err.rfind("--noise: every one of the 4 measured samples", 0) == 0, g.err);
}

TEST_CASE("online hEP: once the weights moved, a run-away is the learning rate's, and noise is named first (nineteenth audit)") {
  TempDir data, tmp;
  write_tiny_fmnist(data.str(), 60, 20, 36);
  const std::string t = "train --dataset fmnist --data-dir " + data.str() + " --arch " + small_arch(tmp) +
                        " --threads 1 --epochs 2 --T1 10 --T2 4 --batch-size 10 --quiet --algo online --N 4";
  check_bad_input({{t + " --beta 0.4 --lr 1e12 --out " + tmp.file("a"), "--lr: "},
                   {t + " --beta 0.1 --noise 1e7 --out " + tmp.file("b"), "--noise: "}},
                  tmp);
}

TEST_CASE("analog keys: off by default, and then training is bit for bit what it was before them") {
  // θ after one epoch of a small run, hashed: the value was measured with the binary of the commit
  // before the analog substrates (f0884c1) on this machine type (AVX-512, the fused engine). A
  // later change that alters training's numbers on purpose updates it; an analog option that leaks
  // into the ideal path (noise 0 taking the Euler–Maruyama path, an ideal device copying θ through
  // a quantizer) changes it.
  TempDir data, tmp;
  write_tiny_fmnist(data.str(), 40, 20, 37);
  const std::string arch = small_arch(tmp);
  const std::string base = "train " + flags(data, arch) + " --epochs 1 --angle 30 --homeostasis 1";
  std::uint64_t hashes[2];
  int k = 0;
  for (const std::string extra : {"", " --noise 0 --mismatch 0 --weight-bits 0 --weight-clip 0 --tau {} --settle 0"}) {
    const std::string out = tmp.file(k == 0 ? "default" : "explicit");
    const RunResult r = run_hepsim(base + extra + " --out " + out, tmp);
    REQUIRE_MESSAGE(r.code == 0, r.err);
    const hepsim::tools::Checkpoint ck = hepsim::tools::read_checkpoint(out + "/checkpoint.h5");
    hashes[k] = hash_bytes(ck.theta.data(), static_cast<std::size_t>(ck.theta.size()) * sizeof(double));
    ++k;
  }
  CAPTURE(hashes[0]);
  CHECK(hashes[0] == hashes[1]);
  CHECK(hashes[0] == 12094867735474298559ULL);
}
