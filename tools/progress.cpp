#include "tools/progress.hpp"

#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace hepsim::tools {

Progress::Progress(long epochs, bool quiet)
    : epochs_(epochs), quiet_(quiet), tty_(::isatty(STDERR_FILENO) != 0), last_(std::chrono::steady_clock::now()) {}

void Progress::batch(const BatchProgress& p) {
  if (quiet_) return;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_).count();
  const bool last_batch = p.batch == p.batches;
  // A terminal redraws ten times a second; a log gets a line every 30 s.
  if (!last_batch && since < (tty_ ? 0.1 : 30.0)) return;
  last_ = now;
  const double loss = p.loss_sum / static_cast<double>(std::max(1L, p.seen));
  const double acc = 100.0 * static_cast<double>(p.correct) / static_cast<double>(std::max(1L, p.seen));
  if (tty_) {
    constexpr int width = 30;
    const int done = static_cast<int>(width * p.batch / std::max(1L, p.batches));
    std::string bar(static_cast<std::size_t>(done), '=');
    if (done < width) bar += '>' + std::string(static_cast<std::size_t>(width - done - 1), ' ');
    std::fprintf(stderr, "\repoch %ld/%ld [%s] %ld/%ld  %.0f ex/s  loss %.4f  acc %.2f%%  ", p.epoch, epochs_,
                 bar.c_str(), p.batch, p.batches, p.examples_per_s, loss, acc);
    if (last_batch) std::fputc('\n', stderr);
  } else {
    std::fprintf(stderr, "epoch %ld/%ld batch %ld/%ld  %.0f ex/s  loss %.4f  acc %.2f%%\n", p.epoch, epochs_, p.batch,
                 p.batches, p.examples_per_s, loss, acc);
  }
  std::fflush(stderr);
}

void Progress::finish() {
  if (tty_ && !quiet_) std::fputc('\n', stderr);
}

void Progress::epoch(const EpochRecord& r) {
  if (quiet_) return;
  std::fprintf(stderr,
               "epoch %ld/%ld: train loss %.4f acc %.2f%% | test loss %.4f acc %.2f%% top5 %.2f%% | jac_sym %.4f "
               "angle %.2f° homeo %.4g | cos_grad %.4f | not converged %ld (cycling %ld, stalled %ld), diverged %ld, "
               "nudged cycling %ld | %.1f s\n",
               r.epoch, epochs_, r.train_loss, 100 * r.train_acc, r.test_loss, 100 * r.test_acc, 100 * r.test_top5,
               r.jac_sym, r.weight_angle_deg, r.homeo_loss, r.cos_grad_total, r.not_converged, r.cycling, r.stalled,
               r.diverged, r.nudged_cycling, r.seconds);
  std::fflush(stderr);
}

PhaseProgress::PhaseProgress(std::string command)
    : command_(std::move(command)), tty_(::isatty(STDERR_FILENO) != 0), start_(std::chrono::steady_clock::now()),
      last_(start_) {}

PhaseProgress::~PhaseProgress() {
  if (printed_ && tty_) std::fputc('\n', stderr);
}

std::function<void(const RelaxProgress&)> PhaseProgress::phase(std::string label) {
  return [this, label = std::move(label)](const RelaxProgress& p) { report(label, p); };
}

std::function<void(Index, Index)> PhaseProgress::count(std::string label) {
  return [this, label = std::move(label)](Index done, Index total) {
    const std::lock_guard<std::mutex> lock(mutex_);
    double elapsed = 0;
    if (!due(elapsed)) return;
    std::fprintf(stderr, "%s%s: %s: %ld of %ld done, %.0f s%s", tty_ ? "\r" : "", command_.c_str(), label.c_str(),
                 static_cast<long>(done), static_cast<long>(total), elapsed, tty_ ? "   " : "\n");
    std::fflush(stderr);
  };
}

bool PhaseProgress::due(double& elapsed) {
  const auto now = std::chrono::steady_clock::now();
  elapsed = std::chrono::duration<double>(now - start_).count();
  const double since = std::chrono::duration<double>(now - last_).count();
  if (elapsed < 3.0 || (printed_ && since < (tty_ ? 1.0 : 15.0))) return false;
  last_ = now;
  printed_ = true;
  return true;
}

void PhaseProgress::report(const std::string& label, const RelaxProgress& p) {
  const std::lock_guard<std::mutex> lock(mutex_);
  double elapsed = 0;
  if (!due(elapsed)) return;
  std::fprintf(stderr, "%s%s: %s: step %ld of %ld, %ld of %ld columns relaxing, max residual %.2e, %.0f s%s",
               tty_ ? "\r" : "", command_.c_str(), label.c_str(), p.steps, p.max_steps, static_cast<long>(p.live),
               static_cast<long>(p.cols), p.max_residual, elapsed, tty_ ? "   " : "\n");
  std::fflush(stderr);
}

}  // namespace hepsim::tools
