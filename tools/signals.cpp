#include "tools/signals.hpp"

#include "sim/interrupt.hpp"

#include <unistd.h>

#include <csignal>

namespace hepsim::tools {
namespace {

volatile std::sig_atomic_t g_received = 0;
volatile std::sig_atomic_t g_hosted = 0;

extern "C" void on_stop_signal(int signal) {
  if (g_received != 0) {  // the second: at once (async-signal-safe)
    if (!g_hosted) ::_exit(128 + signal);
    request_interrupt();
    return;
  }
  g_received = signal;
}

struct sigaction g_previous[2];
constexpr int kSignals[2] = {SIGTERM, SIGINT};

}  // namespace

StopSignals::StopSignals(bool hosted) {
  g_received = 0;
  g_hosted = hosted ? 1 : 0;
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // reads and writes in progress complete
  for (int i = 0; i < 2; ++i) sigaction(kSignals[i], &action, &g_previous[i]);
}

StopSignals::~StopSignals() {
  for (int i = 0; i < 2; ++i) sigaction(kSignals[i], &g_previous[i], nullptr);
}

int StopSignals::received() { return g_received; }

std::string StopSignals::name(int signal) {
  return signal == SIGTERM ? "SIGTERM" : signal == SIGINT ? "SIGINT" : "signal " + std::to_string(signal);
}

}  // namespace hepsim::tools
