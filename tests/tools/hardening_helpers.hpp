#pragma once
// Helpers of the hardening tests (test_cli_hardening.cpp, test_cli_audits.cpp): a small network,
// its flags, HDF5 splits, a small conv run, a shell.
#include <doctest/doctest.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <unistd.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "cli_helpers.hpp"
#include "datasets/dataset.hpp"

namespace hepsim::test {


// One hidden layer h of `size` neurons with feedback from out, in dir/file.
inline std::string one_layer_arch(const TempDir& dir, const std::string& file, long size) {
  const std::string path = dir.file(file);
  std::ofstream(path) << R"({"name": "one", "layers": [{"name": "h", "size": )" << size
                      << R"(}, {"name": "out", "size": "classes"}],
    "edges": [{"pre": "in", "post": "h"}, {"pre": "h", "post": "out"}, {"pre": "out", "post": "h", "type": "dense_nobias"}]})";
  return path;
}

// A 16-neuron network: every run below takes a second or two.
inline std::string small_arch(const TempDir& dir) { return one_layer_arch(dir, "small.json", 16); }

// Mounts a tmpfs of `bytes` at mnt (a full disk on demand); false, with a message, where that
// needs privileges the test does not have.
inline bool mount_tmpfs(const std::string& mnt, long bytes) {
  std::filesystem::create_directories(mnt);
  const std::string size = "size=" + std::to_string(bytes);
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, size.c_str()) == 0) return true;
  MESSAGE("cannot mount a tmpfs here (needs root): skipped");
  return false;
}

inline std::string flags(const TempDir& data, const std::string& arch) {
  return "--dataset fmnist --data-dir " + data.str() + " --arch " + arch +
         " --N 2 --beta 0.1 --T1 30 --T2 8 --batch-size 20 --threads 2 --probe-size 10 --quiet";
}

inline std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// DIR/train.h5 and DIR/test.h5 in hepsim's HDF5 layout: one image per label (`channels` x side x
// side, single-channel 4x4 by default) each, named "<source>/train" and "<source>/test", with
// `classes` classes and these labels.
inline void write_h5_splits(const std::string& dir, const std::string& source, std::int32_t classes,
                     const std::vector<std::int32_t>& labels, Index channels = 1, Index side = 4) {
  Dataset d;
  d.n = static_cast<Index>(labels.size());
  d.channels = channels;
  d.height = d.width = side;
  d.classes = classes;
  d.images.assign(static_cast<std::size_t>(d.n * d.dim()), 7);
  d.labels = labels;
  std::filesystem::create_directories(dir);
  for (const char* split : {"train", "test"}) {
    d.name = source + "/" + split;
    write_h5_dataset(d, dir + "/" + split + ".h5");
  }
}

// One epoch of a one-layer conv network (c1: channels x 14 x 14 from 28 x 28 Fashion-MNIST-format
// data) into `out`.
inline void train_small_conv(const TempDir& data, const TempDir& tmp, int channels, const std::string& out) {
  const std::string conv = tmp.file("conv.json");
  std::ofstream(conv) << R"({"name": "c", "layers": [{"name": "c1", "shape": [)" << channels
                      << R"(, 14, 14]}, {"name": "out", "size": "classes"}],
    "edges": [{"pre": "in", "post": "c1", "type": "conv"}, {"pre": "c1", "post": "out"},
              {"pre": "out", "post": "c1", "type": "dense_nobias"}]})";
  REQUIRE(run_hepsim("train --dataset fmnist --data-dir " + data.str() + " --arch " + conv +
                         " --activation dsilu --T1 10 --T2 4 --batch-size 20 --probe-size 2 --epochs 1 --quiet --out " + out,
                     tmp)
              .code == 0);
}

// Runs a shell command line (not through run_hepsim: a working directory or a limit in front).
inline int shell(const std::string& cmd) {
  const int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Runs hepsim under a memory budget (HEPSIM_MEMORY_LIMIT = `limit` bytes) and measures its peak
// resident memory: a run the budget allows must stay within it, else the estimate was short.
struct Measured {
  int code = -1;
  double peak_bytes = 0;
  std::string err;
};
inline Measured run_hepsim_within(const std::string& args, long limit, const TempDir& tmp) {
  const std::string cmd = "HEPSIM_MEMORY_LIMIT=" + std::to_string(limit) + " exec " + std::string(HEPSIM_BINARY) + " " +
                          args + " >" + tmp.file("stdout.txt") + " 2>" + tmp.file("stderr.txt");
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  struct rusage ru {};
  ::wait4(pid, &status, 0, &ru);
  Measured m;
  m.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  m.peak_bytes = static_cast<double>(ru.ru_maxrss) * 1024;
  m.err = slurp(tmp.file("stderr.txt"));
  return m;
}
// The budget holds: refused with the estimate, or run within it.
inline void check_within(const std::string& args, long limit, const TempDir& tmp) {
  CAPTURE(args);
  const Measured m = run_hepsim_within(args, limit, tmp);
  CAPTURE(m.err);
  CAPTURE(m.peak_bytes);
  if (m.code == 2)
    CHECK(m.err.find("the run needs about") != std::string::npos);
  else
    CHECK((m.code == 0 && m.peak_bytes <= static_cast<double>(limit)));
}

}  // namespace hepsim::test
