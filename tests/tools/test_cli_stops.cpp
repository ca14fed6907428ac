// Stopping and resuming inside an epoch (issue 14): --checkpoint-every writes mid-epoch
// checkpoints; SIGTERM or SIGINT finishes the step, writes one, logs the stop and exits with code
// 3; a second signal exits at once; a run killed after a mid-epoch checkpoint, or stopped by a
// signal, resumes from it and ends bit-identical to the uninterrupted run.
#include <doctest/doctest.h>
#include <hdf5.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <thread>

#include "cli_helpers.hpp"
#include "datasets/h5_io.hpp"
#include "hardening_helpers.hpp"
#include "run_helpers.hpp"
#include "tools/run_files.hpp"

using namespace hepsim;
using namespace hepsim::test;
using hepsim::tools::TrainLog;
namespace fs = std::filesystem;

namespace {

// 400 samples in batches of 10: 40 steps an epoch, about a second or two each epoch.
std::string stop_flags(const TempDir& data, const std::string& arch) {
  return "--dataset fmnist --data-dir " + data.str() + " --arch " + arch +
         " --N 2 --beta 0.1 --T1 60 --T2 10 --batch-size 10 --threads 2 --probe-size 10 --quiet --epochs 2"
         " --optimizer adamw --lr 0.003 --schedule cosine";
}

}  // namespace

TEST_CASE("stops: SIGTERM inside an epoch writes a checkpoint, logs the stop, exits 3 — the resumed run is bit-identical") {
  TempDir data, tmp;
  write_tiny_fmnist(data.str(), 400, 50, 61);
  const std::string arch = one_layer_arch(tmp, "a.json", 64);
  const std::string f = stop_flags(data, arch);
  const RunResult whole = run_hepsim("train " + f + " --out " + tmp.file("whole"), tmp);
  REQUIRE_MESSAGE(whole.code == 0, whole.err);

  const std::string run = tmp.file("stopped");
  const pid_t pid = spawn_hepsim("train " + f + " --checkpoint-every 3steps --out " + run, tmp);
  REQUIRE(wait_for_mid_epoch_checkpoint(run));
  REQUIRE(::kill(pid, SIGTERM) == 0);
  const int code = wait_code(pid);
  const std::string err = slurp(tmp.file("bg.err"));
  CAPTURE(err);
  REQUIRE(code == 3);
  CHECK(err.find("stopped by SIGTERM") != std::string::npos);
  CHECK(err.find("--resume " + run) != std::string::npos);
  const nlohmann::json out = nlohmann::json::parse(slurp(tmp.file("bg.out")));
  CHECK(out.at("stopped").at("signal") == "SIGTERM");
  const nlohmann::json stops = TrainLog::read_stops(run + "/log.h5");
  REQUIRE(stops.size() == 1);
  CHECK(stops[0].at("signal") == "SIGTERM");
  CHECK(stops[0].at("batches") == 40);
  CHECK(stops[0].at("batch") == out.at("stopped").at("batch"));
  // The checkpoint is where the run stopped (not the last periodic one).
  const tools::Checkpoint ck = tools::read_checkpoint(run + "/checkpoint.h5");
  if (ck.mid_epoch) {
    CHECK(ck.position.epoch == out.at("stopped").at("epoch").get<long>());
    CHECK(ck.position.batch == out.at("stopped").at("batch").get<long>());
  }
  // eval says where in training the parameters it scores stand: `epoch` epochs done and `batch`
  // batches of the next one.
  const RunResult e = run_hepsim("eval --checkpoint " + run + "/checkpoint.h5 --test-limit 10 --threads 1", tmp);
  REQUIRE_MESSAGE(e.code == 0, e.err);
  CHECK(e.json().at("epoch") == ck.epoch);
  CHECK(e.json().at("batch") == (ck.mid_epoch ? ck.position.batch : 0));

  const RunResult resumed = run_hepsim("train --resume " + run + " --quiet", tmp);
  REQUIRE_MESSAGE(resumed.code == 0, resumed.err);
  check_identical(tmp.file("whole"), run);
  CHECK(TrainLog::read_stops(run + "/log.h5").size() == 1);  // kept by the resumed run's log
}

TEST_CASE("stops: a run killed (SIGKILL) after a periodic mid-epoch checkpoint resumes from it, bit-identical") {
  TempDir data, tmp;
  write_tiny_fmnist(data.str(), 400, 50, 62);
  const std::string arch = one_layer_arch(tmp, "a.json", 64);
  const std::string f = stop_flags(data, arch) + " --homeostasis 0.5 --augment on";
  const RunResult whole = run_hepsim("train " + f + " --out " + tmp.file("whole"), tmp);
  REQUIRE_MESSAGE(whole.code == 0, whole.err);
  const std::string run = tmp.file("killed");
  const pid_t pid = spawn_hepsim("train " + f + " --checkpoint-every 7steps --out " + run, tmp);
  REQUIRE(wait_for_mid_epoch_checkpoint(run));
  REQUIRE(::kill(pid, SIGKILL) == 0);
  CHECK(wait_code(pid) == 128 + SIGKILL);
  const tools::Checkpoint ck = tools::read_checkpoint(run + "/checkpoint.h5");
  CHECK((ck.mid_epoch ? ck.position.batch % 7 == 0 : true));
  const RunResult resumed = run_hepsim("train --resume " + run + " --quiet", tmp);
  REQUIRE_MESSAGE(resumed.code == 0, resumed.err);
  check_identical(tmp.file("whole"), run);
  CHECK(TrainLog::read_stops(run + "/log.h5").empty());
}

TEST_CASE("stops: a second signal ends the run at once and leaves the last checkpoint valid") {
  TempDir data, tmp;
  write_tiny_fmnist(data.str(), 400, 50, 63);
  const std::string arch = one_layer_arch(tmp, "a.json", 256);
  // Steps of about a second: both signals arrive within one (the second 0.1 s after the first:
  // two of the same kind sent at once would merge into one pending signal).
  const std::string run = tmp.file("twice");
  const pid_t pid = spawn_hepsim("train " + stop_flags(data, arch) + " --T1 30000 --tol 0 --threads 1"
                                 " --checkpoint-every 1steps --out " + run, tmp);
  REQUIRE(wait_for_mid_epoch_checkpoint(run));
  REQUIRE(::kill(pid, SIGINT) == 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  REQUIRE(::kill(pid, SIGINT) == 0);
  CHECK(wait_code(pid) == 128 + SIGINT);
  const tools::Checkpoint ck = tools::read_checkpoint(run + "/checkpoint.h5");
  CHECK(ck.mid_epoch);
  CHECK(TrainLog::read_stops(run + "/log.h5").empty());  // no stop was logged: it did not stop cleanly
}

TEST_CASE("stops: bad --checkpoint-every values and corrupt positions are one line, exit 2") {
  TempDir data, tmp;
  write_tiny_fmnist(data.str(), 40, 10, 64);
  const std::string arch = small_arch(tmp);
  const std::string t = "train " + flags(data, arch) + " --epochs 1 --out " + tmp.file("r");
  check_bad_input({{t + " --checkpoint-every 10", "--checkpoint-every:"},
                   {t + " --checkpoint-every 5x", "--checkpoint-every:"},
                   {t + " --checkpoint-every -3m", "--checkpoint-every:"},
                   {t + " --checkpoint-every 0steps", "--checkpoint-every:"},
                   {t + " --checkpoint-every 1.5steps", "--checkpoint-every:"},
                   {t + " --checkpoint-every nanm", "--checkpoint-every:"},
                   {t + " --checkpoint-every 1e300h", "--checkpoint-every:"},
                   {t + " --checkpoint-every m", "--checkpoint-every:"}},
                  tmp);
  // A mid-epoch checkpoint whose position does not follow its epoch or fit the run's batches.
  const std::string run = tmp.file("c");
  REQUIRE(run_hepsim("train " + flags(data, arch) + " --epochs 2 --out " + run, tmp).code == 0);
  const auto set_position = [&](const std::string& text) {
    const hid_t file = H5Fopen((run + "/checkpoint.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    REQUIRE(file >= 0);
    if (H5Aexists(file, "position") > 0) H5Adelete(file, "position");
    REQUIRE(h5::write_string_attribute(file, "position", text));
    H5Fclose(file);
  };
  const std::string ok_but =
      R"("correct":1,"cycling":0,"diverged":0,"free_diverged":0,"free_steps":30.0,"log_residual":-5.0,)"
      R"("loss_sum":2.0,"not_converged":0,"nudged_cycling":0,"residual_samples":1,"stalled":0,"train_seconds":0.1)";
  const std::string ck = run + "/checkpoint.h5";
  for (const auto& [position, needle] : std::vector<std::pair<std::string, std::string>>{
           {"{not json", "mid-epoch position is not valid"},
           {R"({"epoch":5,"batch":1,"seen":20,)" + ok_but + "}", "does not follow its epoch 2"},
           {R"({"epoch":3,"batch":-1,"seen":20,)" + ok_but + "}", "mid-epoch position is not valid"},
           {R"({"epoch":3,"batch":1,"seen":20,"correct":"x",)" + ok_but.substr(12) + "}", "not valid"},
           {R"({"epoch":3,"batch":9,"seen":180,)" + ok_but + "}", "is not a place in the run's 2 batches of 20"},
           {R"({"epoch":3,"batch":1,"seen":7,)" + ok_but + "}", "is not a place in the run's 2 batches"}}) {
    CAPTURE(position);
    set_position(position);
    const RunResult r = run_hepsim("train --resume " + run + " --epochs 3 --quiet", tmp);
    CAPTURE(r.err);
    CHECK(r.code == 2);
    CHECK(r.err_lines() == 1);
    CHECK(r.err.find(ck) != std::string::npos);
    CHECK(r.err.find(needle) != std::string::npos);
  }
  // A non-finite sum (a diverged sample's score) is stored as "nan"/"inf" and resumes; other strings are corrupt.
  std::string nan_sum = ok_but;
  nan_sum.replace(nan_sum.find(R"("loss_sum":2.0)"), 14, R"("loss_sum":"nan")");
  set_position(R"({"epoch":3,"batch":1,"seen":20,)" + nan_sum.replace(nan_sum.find(R"("log_residual":-5.0)"), 19,
                                                                      R"("log_residual":"-inf")") + "}");
  const RunResult nan_run = run_hepsim("train --resume " + run + " --epochs 3 --quiet", tmp);
  CHECK_MESSAGE(nan_run.code == 0, nan_run.err);
  const auto recs = TrainLog::read_records(run + "/log.h5", 10);
  REQUIRE(recs.size() == 3);
  CHECK(std::isnan(recs[2].train_loss));
}
