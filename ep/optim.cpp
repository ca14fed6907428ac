#include "ep/optim.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "sim/error.hpp"

namespace hepsim {

OptimizerKind parse_optimizer(const std::string& name, const std::string& where) {
  if (name == "sgd") return OptimizerKind::sgd;
  if (name == "adamw") return OptimizerKind::adamw;
  throw InputError(where, "unknown optimizer '" + name + "' (expected sgd or adamw)");
}
Schedule parse_schedule(const std::string& name, const std::string& where) {
  if (name == "constant") return Schedule::constant;
  if (name == "cosine") return Schedule::cosine;
  throw InputError(where, "unknown schedule '" + name + "' (expected constant or cosine)");
}
const char* to_string(OptimizerKind k) { return k == OptimizerKind::sgd ? "sgd" : "adamw"; }
const char* to_string(Schedule s) { return s == Schedule::constant ? "constant" : "cosine"; }

namespace {

// Per-parameter factors from per-block multipliers; a block matches its own name, its edge's
// name (the part before '.') or "readout".
template <class R>
Vec<R> factors(const Network& net, const std::map<std::string, double>& mult, const std::string& what) {
  Vec<R> f = Vec<R>::Ones(net.n_params);
  std::map<std::string, std::string> set_by;  // block -> the key that set its multiplier
  for (const auto& [key, value] : mult) {
    if (!std::isfinite(value) || value < 0)
      throw InputError(what, "multiplier for '" + key + "' must be a finite number ≥ 0");
    bool matched = false;
    for (const ParamBlock& b : net.blocks) {
      const std::string edge = b.name.substr(0, b.name.find('.'));
      if (b.name == key || edge == key) {
        // An edge's key and its block's key would both apply: one multiplier per block.
        const auto [it, fresh] = set_by.emplace(b.name, key);
        if (!fresh)
          throw InputError(what, "'" + it->second + "' and '" + key + "' both set the multiplier of " + b.name +
                                     ": give one");
        f.segment(b.offset, b.size()).array() *= static_cast<R>(value);
        matched = true;
      }
    }
    if (!matched) throw InputError(what, "'" + key + "' names no parameter block of this network");
  }
  return f;
}

}  // namespace

template <class R>
Optimizer<R>::Optimizer(const Network& net, const OptimizerConfig& cfg)
    : cfg_(cfg),
      lr_factor_(factors<R>(net, cfg.lr_mult, cfg.lr_mult_source)),
      wd_factor_(factors<R>(net, cfg.wd_mult, cfg.wd_mult_source)),
      m_(Vec<R>::Zero(net.n_params)),
      v_(cfg.kind == OptimizerKind::adamw ? Vec<R>::Zero(net.n_params) : Vec<R>()) {
  // The weight decay alone must not diverge. SGD's coupled decay with momentum μ is the linear
  // recursion v ← μv − lr·wd·θ, θ ← θ + v: stable iff lr·wd < 2(1 + μ); AdamW's decoupled decay
  // θ ← (1 − lr·wd)θ iff lr·wd < 2. (A schedule only lowers lr.) Past that every parameter the
  // decay touches oscillates with growing amplitude, whatever the gradient does.
  if (cfg.wd <= 0) return;
  const double limit = cfg.kind == OptimizerKind::sgd ? 2 * (1 + cfg.momentum) : 2.0;
  for (const ParamBlock& b : net.blocks) {
    const double lf = static_cast<double>(lr_factor_[b.offset]), wf = static_cast<double>(wd_factor_[b.offset]);
    const double decay = cfg.lr * cfg.wd * lf * wf;
    if (decay < limit) continue;
    const std::string flag = wf != 1 ? cfg.wd_mult_source : lf != 1 ? cfg.lr_mult_source : "--wd";
    char msg[320];
    std::snprintf(msg, sizeof msg,
                  "lr × wd = %.3g for block %s is at least %.3g (%s): the weight decay alone makes the parameters "
                  "oscillate and grow; lower --wd or --lr",
                  decay, b.name.c_str(), limit,
                  cfg.kind == OptimizerKind::sgd ? "2(1 + momentum) for sgd" : "2 for adamw");
    throw InputError(flag, msg);
  }
}

template <class R>
double Optimizer<R>::lr_at(long k, long K) const {
  if (cfg_.schedule == Schedule::constant || K <= 0) return cfg_.lr;
  return cfg_.lr * 0.5 * (1 + std::cos(M_PI * static_cast<double>(std::min(k, K)) / static_cast<double>(K)));
}

template <class R>
void Optimizer<R>::step(Vec<R>& theta, const Vec<R>& g, long k, long K, int threads) {
  const R lr = static_cast<R>(lr_at(k, K));
  const R wd = static_cast<R>(cfg_.wd);
  const R mu = static_cast<R>(cfg_.momentum);
  ++steps_;
  const R b1 = static_cast<R>(cfg_.beta1), b2 = static_cast<R>(cfg_.beta2);
  const R c1 = R(1) / (R(1) - std::pow(b1, static_cast<R>(steps_)));
  const R c2 = R(1) / (R(1) - std::pow(b2, static_cast<R>(steps_)));
  const R eps = static_cast<R>(cfg_.eps);
  const bool sgd = cfg_.kind == OptimizerKind::sgd;
  // Element-wise updates: any split over threads gives bit-identical results.
  auto update = [&](Index first, Index count) {
    auto th = theta.segment(first, count).array();
    auto m = m_.segment(first, count).array();
    const auto gr = g.segment(first, count).array();
    const auto lf = lr_factor_.segment(first, count).array();
    const auto wf = wd_factor_.segment(first, count).array();
    if (sgd) {
      m = mu * m + gr + wd * wf * th;
      th -= lr * lf * m;
      return;
    }
    auto v = v_.segment(first, count).array();
    m = b1 * m + (R(1) - b1) * gr;
    v = b2 * v + (R(1) - b2) * gr.square();
    th -= lr * lf * ((m * c1) / ((v * c2).sqrt() + eps) + wd * wf * th);
  };
  // Chunk boundaries on multiples of 64 elements, so that every element takes the same
  // (vectorised or scalar) code path whatever the thread count.
  const Index n = theta.size();
  const int chunks = static_cast<int>(std::clamp<Index>(n / 65536, 1, std::max(1, threads)));
  auto bound = [&](int c) { return c == chunks ? n : std::min(n, (n * c / chunks) / 64 * 64); };
#pragma omp parallel for schedule(static, 1) num_threads(chunks) if (chunks > 1)
  for (int c = 0; c < chunks; ++c) update(bound(c), bound(c + 1) - bound(c));
}

template <class R>
std::pair<std::string, std::string> Optimizer<R>::blame(const Network& net, const Vec<R>& theta) const {
  Index i = 0;
  while (i < theta.size() && std::abs(static_cast<double>(theta[i])) <= kMaxParameter) ++i;  // false for NaN
  std::string block = "?";
  for (const ParamBlock& b : net.blocks)
    if (i >= b.offset && i < b.offset + b.size()) block = b.name;
  const double lf = i < theta.size() ? static_cast<double>(lr_factor_[i]) : 1;
  const double wf = i < theta.size() ? static_cast<double>(wd_factor_[i]) : 1;
  if (lf != 1) return {cfg_.lr_mult_source, block};
  if (cfg_.wd > 0 && wf != 1) return {cfg_.wd_mult_source, block};
  if (cfg_.wd > 0 && cfg_.lr * cfg_.wd >= 1) return {"--wd", block};  // the decay alone overshoots: |1 − lr wd| ≥ 1
  return {"--lr", block};
}

template class Optimizer<float>;
template class Optimizer<double>;

}  // namespace hepsim
