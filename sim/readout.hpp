#pragma once
// Readout and loss (SPEC 2.3). logits = W_r s_out + b_r (W_r: classes x |out|).
//   cross-entropy: ℓ = -Σ_c y_c log softmax(logits)_c,   ∂ℓ/∂s_out = W_rᵀ (softmax(logits) - y)
//   mse:           ℓ = ½ ‖s_out - y‖²,                     ∂ℓ/∂s_out = s_out - y  (|out| = classes)
// Summed over the batch inside the dynamics (trap 4). For complex states everything is the
// holomorphic extension: softmax is shifted by the (real part of the) column maximum, a real
// constant, so it stays holomorphic; transposes are non-conjugating.
#include <string>

#include "sim/network.hpp"

namespace hepsim {

enum class Loss { cross_entropy, mse };

Loss parse_loss(const std::string& name, const std::string& where = "--loss");  // "xent" | "mse"
const char* to_string(Loss l);

// Checks that the loss fits the network (mse needs |out| = classes); InputError otherwise.
void check_loss(const Network& net, Loss loss, const std::string& where = "--loss");

// logits = W_r s_out + b_r for every column.
template <class S>
void readout_logits(const Network& net, const Vec<RealOf<S>>& theta, const CMatRef<S>& s_out, MatRef<S> logits);

// Column-wise softmax in place (shifted by the real part of each column's maximum).
template <class S>
void softmax_columns(MatRef<S> logits);

// g_out += ∂ℓ/∂s_out · diag(scale): the nudge β e with one β per column (scale = β), or the plain
// loss gradient g_s (scale = 1). `work` is a classes x cols scratch matrix (no allocation when sized).
template <class S>
void add_loss_gradient(const Network& net, const Vec<RealOf<S>>& theta, Loss loss, const CMatRef<S>& s_out,
                       const CMatRef<RealOf<S>>& y, const CVecRef<S>& scale, MatRef<S> g_out, Mat<S>& work);

// Per-column loss ℓ_j (real states).
template <class R>
Vec<R> loss_per_sample(const Network& net, const Vec<R>& theta, Loss loss, const CMatRef<R>& s_out,
                       const CMatRef<R>& y);

// Adds the direct readout gradient Σ_j ∂ℓ_j/∂(W_r, b_r) · weight into grad (θ layout); zero for mse.
template <class R>
void add_readout_gradient(const Network& net, const Vec<R>& theta, Loss loss, const CMatRef<R>& s_out,
                          const CMatRef<R>& y, R weight, Vec<R>& grad);

}  // namespace hepsim
