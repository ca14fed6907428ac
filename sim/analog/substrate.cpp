#include "sim/analog/substrate.hpp"

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>

#include "sim/error.hpp"
#include "sim/random.hpp"

namespace hepsim {

Device::Device(const Network& net, const DeviceConfig& cfg) : cfg_(cfg) {
  if (!(cfg.mismatch >= 0) || !std::isfinite(cfg.mismatch)) throw InputError("--mismatch", "must be a finite number ≥ 0");
  if (cfg.weight_bits < 0 || cfg.weight_bits > 16)
    throw InputError("--weight-bits", "must be between 1 and 16 (0: full precision)");
  if (cfg.weight_bits > 0 && !(cfg.weight_clip > 0 && std::isfinite(cfg.weight_clip)))
    throw InputError("--weight-clip", "must be a finite number > 0 with --weight-bits (the levels span [-w, w])");
  if (cfg.weight_bits == 0 && cfg.weight_clip != 0)
    throw InputError("--weight-clip", "only applies with --weight-bits (full-precision weights are not clipped)");
  substrate_end_ = net.readout_w_offset;  // the readout follows every edge's kernel and bias in θ
  if (cfg.mismatch > 0) {
    factor_.resize(substrate_end_);
    Rng rng(cfg.seed, Stream::mismatch);
    rng.fill_normal(factor_.data(), static_cast<std::size_t>(substrate_end_));
    factor_ = (1.0 + cfg.mismatch * factor_.array()).matrix();
  }
}

double Device::quantize(double w) const {
  if (cfg_.weight_bits == 0) return w;
  const double levels = std::ldexp(1.0, cfg_.weight_bits) - 1;  // intervals between the 2^b levels
  const double W = cfg_.weight_clip;
  const double k = std::round((std::clamp(w, -W, W) + W) / (2 * W) * levels);
  return -W + k * (2 * W / levels);
}

template <class R>
void Device::apply(const Vec<R>& nominal, Vec<R>& device) const {
  device = nominal;
  if (ideal()) return;
  for (Index i = 0; i < substrate_end_; ++i) {
    double w = quantize(static_cast<double>(nominal[i]));
    if (factor_.size()) w *= factor_[i];
    device[i] = static_cast<R>(w);
  }
}

std::vector<double> time_constant_rates(const Network& net, const std::vector<std::pair<std::string, double>>& tau,
                                        const std::string& where) {
  if (tau.empty()) return {};
  std::vector<double> rate(static_cast<std::size_t>(net.neurons), 1.0);
  std::set<std::string> seen;
  for (const auto& [name, t] : tau) {
    const int l = net.layer_index(name);
    if (l < 0) {
      std::ostringstream layers;
      for (std::size_t i = 0; i < net.layers.size(); ++i) layers << (i ? ", " : "") << net.layers[i].name;
      throw InputError(where, "unknown layer '" + name + "' (the state layers are " + layers.str() + ")");
    }
    if (!seen.insert(name).second) throw InputError(where, "layer '" + name + "' is given twice");
    // Beyond six orders of magnitude from the unit time constant a rate is not representable in
    // single precision next to the others (1/1e100 is 0 in float) and no step size serves both.
    if (!(t >= 1e-6 && t <= 1e6))
      throw InputError(where, "the time constant of '" + name + "' must be between 1e-6 and 1e6 (the unit is the map's step)");
    const Layer& L = net.layers[static_cast<std::size_t>(l)];
    for (Index i = 0; i < L.size; ++i) rate[static_cast<std::size_t>(L.offset + i)] = 1.0 / t;
  }
  return rate;
}

template void Device::apply<float>(const Vec<float>&, Vec<float>&) const;
template void Device::apply<double>(const Vec<double>&, Vec<double>&) const;

}  // namespace hepsim
