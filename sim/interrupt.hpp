#pragma once
// A cooperative interrupt for long computations run from a host program (the Python module's
// Ctrl-C): a process-wide flag that a signal handler may set (async-signal-safe) and that every
// relaxation polls once per step (sim/relax.cpp), as do the estimators' iterations and dense
// solves (ep/estimators.cpp). When it is set, the poll throws
// Interrupted, which unwinds the computation (OpenMP regions rethrow it after they end); the host
// clears the flag before its next call. The command-line tool never sets it: its runs stop on
// signals through tools/signals.hpp instead (with a checkpoint).
#include <stdexcept>

namespace hepsim {

class Interrupted : public std::runtime_error {
 public:
  Interrupted() : std::runtime_error("interrupted") {}
};

// Sets the flag (async-signal-safe: a lock-free atomic store).
void request_interrupt() noexcept;
void clear_interrupt() noexcept;
bool interrupt_requested() noexcept;
// Throws Interrupted when the flag is set.
inline void throw_if_interrupted() {
  if (interrupt_requested()) throw Interrupted();
}

}  // namespace hepsim
