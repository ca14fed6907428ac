#pragma once
// Progress on stderr. Progress: a training run, a live bar when stderr is a terminal (epoch,
// batch, examples/s, running loss and accuracy), plain periodic lines otherwise (logs, CI).
// PhaseProgress: the relaxations of relax, gradcheck and jacobian, silent for the first seconds
// of a command, then where the current phase stands.
#include <chrono>
#include <functional>
#include <mutex>
#include <string>

#include "ep/train.hpp"

namespace hepsim::tools {

class Progress {
 public:
  explicit Progress(long epochs, bool quiet = false);
  void batch(const BatchProgress& p);
  void epoch(const EpochRecord& r);
  // Ends a bar left inside an epoch (a run stopped there), so that what follows starts a line.
  void finish();

 private:
  long epochs_;
  bool quiet_, tty_;
  std::chrono::steady_clock::time_point last_;
};

class PhaseProgress {
 public:
  // command: the subcommand's name ("gradcheck"), the prefix of every line.
  explicit PhaseProgress(std::string command);
  ~PhaseProgress();  // ends a line redrawn in place
  PhaseProgress(const PhaseProgress&) = delete;
  PhaseProgress& operator=(const PhaseProgress&) = delete;

  // A RelaxConfig::progress callback for the phase `label` ("free phase"). Thread-safe; it must
  // not outlive this object. Reports nothing during the command's first 3 s, then at most once a
  // second on a terminal (one line, redrawn) and once every 15 s otherwise.
  std::function<void(const RelaxProgress&)> phase(std::string label);
  // A (done, total) callback for work counted in items ("dense spectra"), under the same rules.
  std::function<void(Index, Index)> count(std::string label);

 private:
  void report(const std::string& label, const RelaxProgress& p);
  // Whether a line is due (silent for the first 3 s, then at most once a second on a terminal and
  // every 15 s otherwise); marks it printed. `elapsed`: seconds since the command started. Under mutex_.
  bool due(double& elapsed);

  std::string command_;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_;
  bool printed_ = false;
  std::mutex mutex_;
};

}  // namespace hepsim::tools
