#pragma once
// Optimizers and learning-rate schedules (SPEC 7). They act on the flat parameter vector θ and
// *subtract* the gradient (trap 2: the EP estimate is used directly as the gradient).
//   sgd:    t ← μ t + (g + wd θ);  θ ← θ − lr t            (momentum, coupled weight decay;
//                                                             optax chain(add_decayed_weights, sgd))
//   adamw:  m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²;  m̂ = m/(1−β1^k), v̂ = v/(1−β2^k)
//           θ ← θ − lr (m̂ / (√v̂ + ε) + wd θ)              (decoupled weight decay)
//   schedule: constant, or cosine per step to 0: lr_k = lr · ½ (1 + cos(π k / K)).
// Per-parameter-block multipliers of the learning rate and of the weight decay (the paper's CNN
// uses x25 … x5 and 2x weight decay on the readout) are keyed by block name ("l1-l2.K") or by
// edge name ("l1-l2", both K and b) or "readout".
#include <map>
#include <string>
#include <utility>

#include "sim/network.hpp"

namespace hepsim {

enum class OptimizerKind { sgd, adamw };
enum class Schedule { constant, cosine };
OptimizerKind parse_optimizer(const std::string& name, const std::string& where = "--optimizer");
Schedule parse_schedule(const std::string& name, const std::string& where = "--schedule");
const char* to_string(OptimizerKind k);
const char* to_string(Schedule s);

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::sgd;
  double lr = 0.01;         // base learning rate
  double momentum = 0.9;    // sgd momentum μ
  double wd = 0;            // weight decay (coupled for sgd, decoupled for adamw)
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // adamw
  Schedule schedule = Schedule::constant;
  std::map<std::string, double> lr_mult;  // per block / edge / "readout" learning-rate factor
  std::map<std::string, double> wd_mult;  // per block / edge / "readout" weight-decay factor
  // Where the multipliers came from, for error messages ("--lr-mult", "run.json: lr-mult").
  std::string lr_mult_source = "lr-mult", wd_mult_source = "wd-mult";
};

// No parameter of a working network comes near this magnitude (every unit it feeds saturates);
// beyond it training has blown up even where the precision still holds the number (double).
inline constexpr double kMaxParameter = 1e15;

// Optimizer state, sized like θ. Keys of lr_mult/wd_mult that match no block are InputErrors.
template <class R>
class Optimizer {
 public:
  Optimizer(const Network& net, const OptimizerConfig& cfg);
  // One step with gradient g at step index k of K total steps (for the schedule), the element-wise
  // update split over `threads` threads (bit-identical for any split).
  void step(Vec<R>& theta, const Vec<R>& g, long k, long K, int threads = 1);
  double lr_at(long k, long K) const;
  // When θ became non-finite (or beyond kMaxParameter) after a step with a finite gradient: the
  // setting to blame for the first such parameter (its block's learning-rate or weight-decay multiplier, the weight
  // decay, or the learning rate: a flag or "file: key") and that parameter's block.
  std::pair<std::string, std::string> blame(const Network& net, const Vec<R>& theta) const;

  // State for checkpoints: the moments and the step counter.
  Vec<R>& m() { return m_; }
  Vec<R>& v() { return v_; }
  long& steps() { return steps_; }
  const OptimizerConfig& config() const { return cfg_; }

 private:
  OptimizerConfig cfg_;
  Vec<R> lr_factor_, wd_factor_;  // per parameter
  Vec<R> m_, v_;
  long steps_ = 0;
};

}  // namespace hepsim
