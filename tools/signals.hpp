#pragma once
// Stopping a training run from outside (a cluster's wall-clock limit sends SIGTERM, then SIGKILL;
// Ctrl-C sends SIGINT). While a StopSignals object lives, the first SIGTERM or SIGINT only records
// the signal: the run finishes its current step, writes a mid-epoch checkpoint and ends with
// kExitStopped. A second one ends the process at once (exit code 128 + the signal), without
// touching the files: each is replaced atomically, so the last checkpoint stays valid.
#include <stdexcept>
#include <string>

namespace hepsim::tools {

// The exit code of a run that stopped on a signal after writing its checkpoint (resumable).
constexpr int kExitStopped = 3;

class StopSignals {
 public:
  // Installs the handlers. `hosted`: the run is a call of a host program (the Python module,
  // tools::run_command) that must survive: a second signal raises hepsim's interrupt flag
  // (sim/interrupt.hpp: the step in progress ends by an exception, the files stay as they were)
  // instead of ending the process.
  explicit StopSignals(bool hosted = false);
  ~StopSignals();  // restores the previous ones
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // The signal received (SIGTERM or SIGINT), or 0.
  static int received();
  // "SIGTERM", "SIGINT".
  static std::string name(int signal);
};

// Thrown when a run stopped on a signal with its state saved: the CLI prints the message and
// exits with kExitStopped.
class RunStopped : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace hepsim::tools
