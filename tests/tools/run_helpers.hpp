#pragma once
// Helpers of the tests that stop, kill and resume runs (test_cli_stops.cpp, test_cli_mpi.cpp):
// a run started in the background, its exit code, a checkpoint's attribute, and the comparison
// of two runs' results bit for bit.
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
#include "tools/run_files.hpp"

namespace hepsim::test {


// `prefix hepsim args` started in the background (prefix: "" or an mpirun command line), as its
// own process: signals reach it, not a shell.
inline pid_t spawn_hepsim(const std::string& args, const TempDir& tmp, const std::string& prefix = "") {
  const std::string cmd = "exec " + prefix + std::string(HEPSIM_BINARY) + " " + args + " >" + tmp.file("bg.out") + " 2>" +
                          tmp.file("bg.err");
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

inline int wait_code(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

inline std::string attribute(const std::string& file, const char* name) {
  h5::Id f(H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  return f.valid() ? h5::read_string_attribute(f.get(), name) : std::string();
}

// Waits (up to five minutes: two oversubscribed ranks beside other tests on a loaded machine took
// more than one) until the run's checkpoint is a mid-epoch one.
inline bool wait_for_mid_epoch_checkpoint(const std::string& run) {
  for (int i = 0; i < 30000; ++i) {
    if (std::filesystem::exists(run + "/checkpoint.h5") && !attribute(run + "/checkpoint.h5", "position").empty()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// What must be identical between two runs: the parameters, the optimizer's state, and every
// logged number but the wall times.
inline void check_identical(const std::string& a, const std::string& b) {
  const tools::Checkpoint ca = tools::read_checkpoint(a + "/checkpoint.h5");
  const tools::Checkpoint cb = tools::read_checkpoint(b + "/checkpoint.h5");
  CHECK(ca.epoch == cb.epoch);
  CHECK_FALSE(cb.mid_epoch);
  CHECK(ca.optimizer_steps == cb.optimizer_steps);
  CHECK(ca.theta == cb.theta);
  CHECK(ca.m == cb.m);
  CHECK(ca.v == cb.v);
  const auto ra = tools::TrainLog::read_records(a + "/log.h5", 1000), rb = tools::TrainLog::read_records(b + "/log.h5", 1000);
  REQUIRE(ra.size() == rb.size());
  const auto same = [](double x, double y) { return x == y || (std::isnan(x) && std::isnan(y)); };
  for (std::size_t i = 0; i < ra.size(); ++i) {
    CAPTURE(i);
    for (const auto field : {&EpochRecord::train_loss, &EpochRecord::train_acc, &EpochRecord::test_loss,
                             &EpochRecord::test_acc, &EpochRecord::test_top5, &EpochRecord::free_steps,
                             &EpochRecord::residual_log10, &EpochRecord::cos_grad_total, &EpochRecord::lr,
                             &EpochRecord::jac_sym, &EpochRecord::homeo_loss, &EpochRecord::weight_angle_deg}) {
      CAPTURE(ra[i].*field);
      CAPTURE(rb[i].*field);
      CHECK(same(ra[i].*field, rb[i].*field));
    }
    CHECK(ra[i].not_converged == rb[i].not_converged);
    CHECK(ra[i].diverged == rb[i].diverged);
    REQUIRE(ra[i].cos_delta_mean.size() == rb[i].cos_delta_mean.size());
    for (std::size_t l = 0; l < ra[i].cos_delta_mean.size(); ++l) {
      CHECK(same(ra[i].cos_delta_mean[l], rb[i].cos_delta_mean[l]));
      CHECK(same(ra[i].cos_delta_std[l], rb[i].cos_delta_std[l]));
    }
  }
}

}  // namespace hepsim::test
