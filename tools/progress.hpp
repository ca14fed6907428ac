#pragma once
// Progress of a training run on stderr: a live bar when stderr is a terminal (epoch, batch,
// examples/s, running loss and accuracy), plain periodic lines otherwise (logs, CI).
#include <chrono>
#include <string>

#include "ep/train.hpp"

namespace hepsim::tools {

class Progress {
 public:
  explicit Progress(long epochs, bool quiet = false);
  void batch(const BatchProgress& p);
  void epoch(const EpochRecord& r);

 private:
  long epochs_;
  bool quiet_, tty_;
  std::chrono::steady_clock::time_point last_;
};

}  // namespace hepsim::tools
