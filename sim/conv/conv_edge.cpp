#include "sim/conv/conv_edge.hpp"

#include <complex>
#include <stdexcept>

namespace hepsim {
namespace {

// out = P(z) (or z without pooling)
template <class S>
void pool_apply(const ConvEdgeGeometry& g, const Mat<S>& z, Mat<S>& out) {
  out.resize(g.post().size(), z.cols());
  if (g.pool)
    softmax_pool<S>(g.conv.out(), z, out);
  else
    out = z;
}
// out = P'(z) d (conv-output-shaped d → post-shaped out)
template <class S>
void pool_jvp(const ConvEdgeGeometry& g, const Mat<S>& z, const Mat<S>& d, Mat<S>& out) {
  out.resize(g.post().size(), z.cols());
  if (g.pool)
    softmax_pool_jvp<S>(g.conv.out(), z, d, out);
  else
    out = d;
}
// out = P'(z)ᵀ v (post-shaped v → conv-output-shaped out)
template <class S>
void pool_vjp(const ConvEdgeGeometry& g, const Mat<S>& z, const CMatRef<S>& v, Mat<S>& out) {
  out.resize(g.conv.out().size(), z.cols());
  if (g.pool)
    softmax_pool_vjp<S>(g.conv.out(), z, v, out);
  else
    out = v;
}
// out = H(z; v) d (zero without pooling)
template <class S>
void pool_hvp(const ConvEdgeGeometry& g, const Mat<S>& z, const CMatRef<S>& v, const Mat<S>& d, Mat<S>& out) {
  out.resize(g.conv.out().size(), z.cols());
  if (g.pool)
    softmax_pool_hvp<S>(g.conv.out(), z, v, d, out);
  else
    out.setZero();
}

}  // namespace

template <class S>
void conv_edge_apply(const ConvEdgeGeometry& g, const CMatRef<RealOf<S>>& K, const CVecRef<RealOf<S>>& bias,
                     const CMatRef<S>& s_pre, MatRef<S> post, Mat<S>& z, ConvEdgeWork<S>& work) {
  const MapShape o = g.conv.out();
  z.resize(o.size(), s_pre.cols());
  conv_forward<S>(g.conv, K, s_pre, z, work.conv);
  if (bias.size() > 0) {
    if (bias.size() != o.c) throw std::invalid_argument("conv_edge_apply: one bias per output channel");
    for (Index c = 0; c < o.c; ++c) z.middleRows(c * o.h * o.w, o.h * o.w).array() += S(bias(c));
  }
  pool_apply(g, z, work.a);
  post += work.a;
}

template <class S>
void conv_edge_jvp(const ConvEdgeGeometry& g, const CMatRef<RealOf<S>>& K, const Mat<S>& z, const CMatRef<S>& d_pre,
                   MatRef<S> post, ConvEdgeWork<S>& work) {
  work.a.resize(g.conv.out().size(), d_pre.cols());
  conv_forward<S>(g.conv, K, d_pre, work.a, work.conv);
  pool_jvp(g, z, work.a, work.b);
  post += work.b;
}

template <class S>
void conv_edge_vjp(const ConvEdgeGeometry& g, const CMatRef<RealOf<S>>& K, const Mat<S>& z, const CMatRef<S>& g_post,
                   MatRef<S> pre, ConvEdgeWork<S>& work) {
  pool_vjp(g, z, g_post, work.a);
  conv_input_vjp<S>(g.conv, K, work.a, pre, work.conv);
}

template <class S>
void conv_edge_param_vjp(const ConvEdgeGeometry& g, const CMatRef<S>& s_pre, const Mat<S>& z, const CMatRef<S>& g_post,
                         MatRef<S> gK, VecRef<S> gb, ConvEdgeWork<S>& work) {
  pool_vjp(g, z, g_post, work.a);
  conv_kernel_vjp<S>(g.conv, s_pre, work.a, gK, work.conv);
  if (gb.size() > 0) {
    const MapShape o = g.conv.out();
    for (Index c = 0; c < o.c; ++c) gb(c) += work.a.middleRows(c * o.h * o.w, o.h * o.w).sum();
  }
}

template <class S>
void conv_feedback_apply(const ConvEdgeGeometry& g, const CMatRef<RealOf<S>>& B, const CMatRef<S>& s_low,
                         const CMatRef<S>& s_up, MatRef<S> lower, Mat<S>& z, ConvEdgeWork<S>& work) {
  z.resize(g.conv.out().size(), s_low.cols());
  conv_forward<S>(g.conv, B, s_low, z, work.conv);
  pool_vjp(g, z, s_up, work.a);
  conv_input_vjp<S>(g.conv, B, work.a, lower, work.conv);
}

template <class S>
void conv_feedback_jvp(const ConvEdgeGeometry& g, const CMatRef<RealOf<S>>& B, const Mat<S>& z, const CMatRef<S>& s_up,
                       const CMatRef<S>& d_low, const CMatRef<S>& d_up, MatRef<S> lower, ConvEdgeWork<S>& work) {
  work.b.resize(g.conv.out().size(), d_low.cols());
  conv_forward<S>(g.conv, B, d_low, work.b, work.conv);
  Mat<S>& h = work.a;
  pool_hvp(g, z, s_up, work.b, h);  // H(z; s_up) conv_B(d_low)
  pool_vjp(g, z, d_up, work.b);     // P'(z)ᵀ d_up (conv_B(d_low) is no longer needed)
  h += work.b;
  conv_input_vjp<S>(g.conv, B, h, lower, work.conv);
}

template <class S>
void conv_feedback_vjp(const ConvEdgeGeometry& g, const CMatRef<RealOf<S>>& B, const Mat<S>& z, const CMatRef<S>& s_up,
                       const CMatRef<S>& g_low, MatRef<S> low, MatRef<S> up, ConvEdgeWork<S>& work) {
  work.b.resize(g.conv.out().size(), g_low.cols());
  conv_forward<S>(g.conv, B, g_low, work.b, work.conv);  // c = conv_B(g_low)
  pool_jvp(g, z, work.b, work.c);
  up += work.c;  // P'(z) c
  pool_hvp(g, z, s_up, work.b, work.a);
  conv_input_vjp<S>(g.conv, B, work.a, low, work.conv);  // conv_Bᵀ H(z; s_up) c
}

template <class S>
void conv_feedback_param_vjp(const ConvEdgeGeometry& g, const CMatRef<RealOf<S>>& B, const CMatRef<S>& s_low,
                             const Mat<S>& z, const CMatRef<S>& s_up, const CMatRef<S>& g_low, MatRef<S> gB,
                             ConvEdgeWork<S>& work) {
  // ⟨g_low, f_low⟩ = ⟨s_up, P'(z) conv_B(g_low)⟩: B enters through conv_B(g_low) and through z.
  pool_vjp(g, z, s_up, work.a);
  conv_kernel_vjp<S>(g.conv, g_low, work.a, gB, work.conv);  // ∂/∂B of ⟨P'(z)ᵀ s_up, conv_B g_low⟩
  work.b.resize(g.conv.out().size(), g_low.cols());
  conv_forward<S>(g.conv, B, g_low, work.b, work.conv);
  pool_hvp(g, z, s_up, work.b, work.a);
  conv_kernel_vjp<S>(g.conv, s_low, work.a, gB, work.conv);  // through z = conv_B(s_low)
}

#define HEPSIM_CONV_EDGE(S)                                                                                            \
  template void conv_edge_apply<S>(const ConvEdgeGeometry&, const CMatRef<RealOf<S>>&, const CVecRef<RealOf<S>>&,      \
                                   const CMatRef<S>&, MatRef<S>, Mat<S>&, ConvEdgeWork<S>&);                           \
  template void conv_edge_jvp<S>(const ConvEdgeGeometry&, const CMatRef<RealOf<S>>&, const Mat<S>&, const CMatRef<S>&, \
                                 MatRef<S>, ConvEdgeWork<S>&);                                                         \
  template void conv_edge_vjp<S>(const ConvEdgeGeometry&, const CMatRef<RealOf<S>>&, const Mat<S>&, const CMatRef<S>&, \
                                 MatRef<S>, ConvEdgeWork<S>&);                                                         \
  template void conv_edge_param_vjp<S>(const ConvEdgeGeometry&, const CMatRef<S>&, const Mat<S>&, const CMatRef<S>&,   \
                                       MatRef<S>, VecRef<S>, ConvEdgeWork<S>&);                                        \
  template void conv_feedback_apply<S>(const ConvEdgeGeometry&, const CMatRef<RealOf<S>>&, const CMatRef<S>&,          \
                                       const CMatRef<S>&, MatRef<S>, Mat<S>&, ConvEdgeWork<S>&);                       \
  template void conv_feedback_jvp<S>(const ConvEdgeGeometry&, const CMatRef<RealOf<S>>&, const Mat<S>&,                \
                                     const CMatRef<S>&, const CMatRef<S>&, const CMatRef<S>&, MatRef<S>,               \
                                     ConvEdgeWork<S>&);                                                                \
  template void conv_feedback_vjp<S>(const ConvEdgeGeometry&, const CMatRef<RealOf<S>>&, const Mat<S>&,                \
                                     const CMatRef<S>&, const CMatRef<S>&, MatRef<S>, MatRef<S>, ConvEdgeWork<S>&);    \
  template void conv_feedback_param_vjp<S>(const ConvEdgeGeometry&, const CMatRef<RealOf<S>>&, const CMatRef<S>&,      \
                                           const Mat<S>&, const CMatRef<S>&, const CMatRef<S>&, MatRef<S>,             \
                                           ConvEdgeWork<S>&);
HEPSIM_CONV_EDGE(float)
HEPSIM_CONV_EDGE(double)
HEPSIM_CONV_EDGE(std::complex<float>)
HEPSIM_CONV_EDGE(std::complex<double>)
#undef HEPSIM_CONV_EDGE

}  // namespace hepsim
