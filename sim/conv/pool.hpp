#pragma once
// Softmax pooling (SPEC 2.4), the nonlinearity after every forward convolution of the CNN.
// Over each 2x2 window (stride 2, per channel) of a C x H x W map:
//   P(v) = Σ_i v_i w_i,   w_i = e^{v_i} / Σ_j e^{v_j}            (temperature 1)
//   ∂P/∂v_k = w_k (1 + v_k − P)
//   ∂²P/∂v_k∂v_l = w_k [δ_kl (2 + v_k − P) − w_l (1 + v_k − P) − w_l (1 + v_l − P)]   (symmetric)
// Holomorphic: the same formulas hold for complex v (no conjugation anywhere). The real part of
// the window maximum is subtracted inside the exponentials (a mathematical no-op) so that no
// exponential overflows. This is the reference path: one window at a time. A column of a state matrix is one sample's
// map in planar C x H x W order, row-major within a channel (the datasets' image layout); H and W are even.
#include "sim/types.hpp"

namespace hepsim {

// The shape of one sample's feature map: channels x height x width.
struct MapShape {
  Index c = 1, h = 1, w = 1;
  Index size() const { return c * h * w; }
  bool operator==(const MapShape&) const = default;
};

// The pooled shape C x H/2 x W/2 (H and W must be even).
MapShape pooled(const MapShape& in);

// out (pooled(in).size() x B) = P(v) for each column of v (in.size() x B).
template <class S>
void softmax_pool(const MapShape& in, const CMatRef<S>& v, MatRef<S> out);

// Jacobian-vector product at v: out = J_P(v) dv (pooled x B); dv has v's shape.
template <class S>
void softmax_pool_jvp(const MapShape& in, const CMatRef<S>& v, const CMatRef<S>& dv, MatRef<S> out);

// Vector-Jacobian product at v: out = J_P(v)ᵀ g (in.size() x B), the holomorphic
// (non-conjugating) transpose; g has the pooled shape. out is overwritten, not accumulated.
template <class S>
void softmax_pool_vjp(const MapShape& in, const CMatRef<S>& v, const CMatRef<S>& g, MatRef<S> out);

// Hessian-vector product contracted with g: out = Σ_q g_q ∇²P_q(v) dv (in.size() x B), the
// derivative of the VJP J_P(v)ᵀ g along dv (the feedback convolution's dependence on its own
// layer). Overwritten, not accumulated.
template <class S>
void softmax_pool_hvp(const MapShape& in, const CMatRef<S>& v, const CMatRef<S>& g, const CMatRef<S>& dv,
                      MatRef<S> out);

}  // namespace hepsim
