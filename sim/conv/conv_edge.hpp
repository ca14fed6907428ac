#pragma once
// The convolutional edges of SPEC 2.1 as operators on batched states (one sample per column),
// with every derivative the relaxation, the Jacobian analysis and the estimators need.
//
// Forward edge lower → upper (kernel K: C_up x C_low·k·k, bias b per output channel):
//   f_up(s_low) = P(z),   z = conv_K(s_low) + b
//   ∂f_up/∂s_low · d = P'(z) conv_K(d)          its transpose: conv_Kᵀ(P'(z)ᵀ g)
// Feedback edge upper → lower (its own bias-free kernel B, of the forward kernel's shape):
//   f_low(s_low, s_up) = ∇_{s_low} Φ,   Φ = ⟨P(conv_B s_low), s_up⟩,   z = conv_B(s_low)
//                      = conv_Bᵀ(P'(z)ᵀ s_up)
//   ∂f_low/∂s_up = conv_Bᵀ P'(z)ᵀ               ∂f_low/∂s_low = conv_Bᵀ H(z; s_up) conv_B
// where H(z; g) = Σ_q g_q ∇²P_q(z) (symmetric). With B = K the pair is the gradient of one scalar
// Φ + ⟨b, s_up⟩ in (s_low, s_up) — a per-channel bias passes through the pooling, P(v + c) =
// P(v) + c — so the network's Jacobian is symmetric (SPEC 2.1: "exactly the transpose of the
// forward pathway"). P is the 2x2 softmax pooling (sim/conv/pool.hpp) or, with
// pool = false, the identity (P' = I, H = 0). All products are holomorphic (no conjugation).
// Contributions are accumulated (+=) into their targets; `z` is the pre-pool map of the last
// `apply`, kept by the caller for the derivatives at the same state.
#include "sim/conv/conv2d.hpp"

namespace hepsim {

struct ConvEdgeGeometry {
  ConvGeometry conv;
  bool pool = true;  // 2x2 softmax pooling after the convolution

  MapShape pre() const { return conv.in; }
  MapShape post() const { return pool ? pooled(conv.out()) : conv.out(); }
};

// Scratch, sized on first use and reused.
template <class S>
struct ConvEdgeWork {
  ConvWork<S> conv;
  Mat<S> a, b, c;  // temporaries (conv-output- or post-shaped)
};

// ---- forward edge ----
// post += P(z), z = conv_K(s_pre) + bias (bias: C_up values, or empty for none); z is stored.
template <class S>
void conv_edge_apply(const ConvEdgeGeometry& g, const CMatRef<RealOf<S>>& K, const CVecRef<RealOf<S>>& bias,
                     const CMatRef<S>& s_pre, MatRef<S> post, Mat<S>& z, ConvEdgeWork<S>& work);
// post += P'(z) conv_K(d_pre)
template <class S>
void conv_edge_jvp(const ConvEdgeGeometry& g, const CMatRef<RealOf<S>>& K, const Mat<S>& z, const CMatRef<S>& d_pre,
                   MatRef<S> post, ConvEdgeWork<S>& work);
// pre += conv_Kᵀ(P'(z)ᵀ g_post)
template <class S>
void conv_edge_vjp(const ConvEdgeGeometry& g, const CMatRef<RealOf<S>>& K, const Mat<S>& z, const CMatRef<S>& g_post,
                   MatRef<S> pre, ConvEdgeWork<S>& work);
// gK += ∂⟨g_post, P(z)⟩/∂K, gb += ∂⟨g_post, P(z)⟩/∂b (gb may be empty: no bias)
template <class S>
void conv_edge_param_vjp(const ConvEdgeGeometry& g, const CMatRef<S>& s_pre, const Mat<S>& z, const CMatRef<S>& g_post,
                         MatRef<S> gK, VecRef<S> gb, ConvEdgeWork<S>& work);

// ---- feedback edge (upper → lower; g describes the forward partner lower → upper) ----
// lower += conv_Bᵀ(P'(z)ᵀ s_up), z = conv_B(s_low) is stored.
template <class S>
void conv_feedback_apply(const ConvEdgeGeometry& g, const CMatRef<RealOf<S>>& B, const CMatRef<S>& s_low,
                         const CMatRef<S>& s_up, MatRef<S> lower, Mat<S>& z, ConvEdgeWork<S>& work);
// lower += conv_Bᵀ(P'(z)ᵀ d_up + H(z; s_up) conv_B(d_low))
template <class S>
void conv_feedback_jvp(const ConvEdgeGeometry& g, const CMatRef<RealOf<S>>& B, const Mat<S>& z, const CMatRef<S>& s_up,
                       const CMatRef<S>& d_low, const CMatRef<S>& d_up, MatRef<S> lower, ConvEdgeWork<S>& work);
// The transpose: low += conv_Bᵀ H(z; s_up) conv_B(g_low), up += P'(z) conv_B(g_low)
template <class S>
void conv_feedback_vjp(const ConvEdgeGeometry& g, const CMatRef<RealOf<S>>& B, const Mat<S>& z, const CMatRef<S>& s_up,
                       const CMatRef<S>& g_low, MatRef<S> low, MatRef<S> up, ConvEdgeWork<S>& work);
// gB += ∂⟨g_low, conv_Bᵀ(P'(conv_B s_low)ᵀ s_up)⟩/∂B
template <class S>
void conv_feedback_param_vjp(const ConvEdgeGeometry& g, const CMatRef<RealOf<S>>& B, const CMatRef<S>& s_low,
                             const Mat<S>& z, const CMatRef<S>& s_up, const CMatRef<S>& g_low, MatRef<S> gB,
                             ConvEdgeWork<S>& work);

}  // namespace hepsim
