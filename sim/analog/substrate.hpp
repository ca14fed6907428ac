#pragma once
// Analog-substrate non-idealities (SPEC 6): what a physical network does differently from the
// ideal equations of sim/field.hpp. Each is off by default, and then nothing changes.
//
//   state noise σ      the relaxation becomes the SDE du = (M(u) − u) dt + σ dW (relax.hpp:
//                      Euler–Maruyama, u ← u + dt (M(u) − u) + σ √dt ξ; with dt = 1 the paper's
//                      map plus σ ξ). ξ is real standard normal: complex states (the contour
//                      points of holomorphic EP) get it on their real part. Drawn per column from
//                      a generator keyed on (seed, "noise", key, column key), so a sample's noise
//                      does not depend on the batch it relaxes with or on the threads.
//   time constants τ   per layer: du_l/dt = (M(u) − u)_l / τ_l for the ODE solvers (same fixed
//                      points, other transients).
//   settle T           a budget in physical time per phase (relax.hpp, RelaxConfig::max_time).
//   mismatch c         fixed device variability: the dynamics see θ_dev = θ ⊙ (1 + c ξ), ξ standard
//                      normal drawn once per run (seed, stream "mismatch"), one per parameter, so
//                      the forward and feedback copies of a reciprocal pair and every bias deviate
//                      independently.
//   weight-bits b,     the dynamics see each parameter quantized to the 2^b uniform levels
//   weight-clip w      −w + k·2w/(2^b − 1), k = 0 … 2^b − 1 (nearest level; values beyond ±w clip).
//
// Device parameters: θ_dev = Q(θ) ⊙ (1 + c ξ) — the substrate is programmed with the quantized
// nominal values and its devices deviate from them. Only the network's edges (kernels and biases)
// live on the substrate; the readout W_r, b_r that computes the loss and the nudge is digital and
// exact. Learning reads its gradient off the device's dynamics (∂G/∂θ_dev, what a physical circuit
// measures locally) and applies it to the full-precision nominal θ, the optimizer's shadow
// weights (the straight-through rule for the quantizer; mismatch is unknown to the learner).
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "sim/network.hpp"

namespace hepsim {

// Gaussian state noise of one relaxation (RelaxConfig::noise).
struct StateNoise {
  double sigma = 0;                    // σ ≥ 0 (0: off)
  std::uint64_t seed = 0;              // the run's seed
  std::uint64_t key = 0;               // which relaxation (step, phase, …)
  std::vector<std::uint64_t> columns;  // per column, its sample's key (empty: the column index)
  bool on() const { return sigma > 0; }
  std::uint64_t column_key(std::size_t j) const { return columns.empty() ? j : columns[j]; }
};

// The fixed device of a run: quantization and mismatch of the substrate's parameters.
struct DeviceConfig {
  double mismatch = 0;    // c ≥ 0
  int weight_bits = 0;    // b in 1 … 16; 0: full precision
  double weight_clip = 0; // w > 0 (needed with weight_bits)
  std::uint64_t seed = 0; // the run's seed (stream "mismatch")
  bool ideal() const { return mismatch == 0 && weight_bits == 0; }
};

class Device {
 public:
  Device() = default;
  // Draws the mismatch factors for `net` (nothing when c = 0). Bad values throw InputError naming
  // --mismatch, --weight-bits or --weight-clip.
  Device(const Network& net, const DeviceConfig& cfg);
  bool ideal() const { return cfg_.ideal(); }
  const DeviceConfig& config() const { return cfg_; }
  // device = Q(nominal) ⊙ (1 + c ξ) on the substrate's parameters, = nominal on the readout.
  template <class R>
  void apply(const Vec<R>& nominal, Vec<R>& device) const;
  // The level of one value (exposed for tests).
  double quantize(double w) const;

 private:
  DeviceConfig cfg_;
  Index substrate_end_ = 0;  // θ[0, substrate_end_) are the edges' kernels and biases
  Vec<double> factor_;       // 1 + c ξ per substrate parameter (empty when c = 0)
};

// Per-layer time constants τ as the rate 1/τ of every neuron (Network neuron order; layers not
// named keep τ = 1). No entries: an empty result (no time constants). An unknown layer, one named
// twice, or τ ≤ 0 or non-finite is an InputError naming `where`.
std::vector<double> time_constant_rates(const Network& net, const std::vector<std::pair<std::string, double>>& tau,
                                        const std::string& where);

}  // namespace hepsim
