// The convolutional edges (sim/conv/conv_edge.hpp): every derivative against central differences
// (real and complex states; complex directions check holomorphy), each VJP as the bilinear
// transpose of its JVP, the feedback term as the gradient of Φ = ⟨P(conv_B s_low), s_up⟩, and the
// property the CNN's EP rests on: with B = K the Jacobian of the pair is symmetric (also with a
// forward bias: P(v + c) = P(v) + c for a constant c over a window, so the bias only adds ⟨b, s_up⟩
// to Φ), and with B ≠ K it is not.
#include <doctest/doctest.h>

#include <complex>

#include "../common.hpp"
#include "sim/conv/conv_edge.hpp"

using namespace hepsim;
using namespace hepsim::testing;

namespace {

template <class S>
S dot(const Mat<S>& a, const Mat<S>& b) {
  return (a.array() * b.array()).sum();
}

// Central differences: truncation ε² f‴/6 and rounding ε_mach/ε, both ≈ 1e-10 at ε = 1e-5 for
// these order-1 maps; 1e-7 relative leaves room for the conv sums' growth.
constexpr double kEps = 1e-5, kFdTol = 1e-7;

// (f(+ε) − f(−ε)) / 2ε for f(h) evaluated at a signed step h (a scalar or a matrix).
template <class S, class F>
auto central(F&& f) {
  using T = decltype(f(kEps));
  return T((f(kEps) - f(-kEps)) / S(2 * kEps));
}

const ConvEdgeGeometry kEdges[] = {
    {{{2, 4, 4}, 3, 3, 1}, true},   // same 3x3, pooled: 2x4x4 -> 3x2x2
    {{{3, 4, 4}, 2, 3, 0}, true},   // valid 3x3, pooled: 3x4x4 -> 2x1x1 (the paper's conv3-out)
    {{{2, 4, 6}, 2, 3, 1}, false},  // no pooling
};

template <class S>
struct Pair {
  ConvEdgeGeometry g;
  Mat<double> K, B;
  Vec<double> b;
  Mat<S> s_low, s_up;
  ConvEdgeWork<S> work;
  Mat<S> z;

  Pair(const ConvEdgeGeometry& geom, std::uint64_t seed) : g(geom) {
    K = random_matrix<double>(g.conv.out_channels, g.conv.taps(), seed, 0.5, 0.3);
    B = random_matrix<double>(g.conv.out_channels, g.conv.taps(), seed + 1, 0.5, 0.3);
    b = random_matrix<double>(g.conv.out_channels, 1, seed + 2, 0.5, 0.3);
    s_low = random_matrix<S>(g.pre().size(), 2, seed + 3, 1.0, 0.3);
    s_up = random_matrix<S>(g.post().size(), 2, seed + 4, 1.0, 0.3);
  }
  Mat<S> forward(const Mat<double>& k, const Vec<double>& bias, const Mat<S>& low) {
    Mat<S> out = Mat<S>::Zero(g.post().size(), low.cols());
    conv_edge_apply<S>(g, k, bias, low, out, z, work);
    return out;
  }
  Mat<S> feedback(const Mat<double>& kb, const Mat<S>& low, const Mat<S>& up) {
    Mat<S> out = Mat<S>::Zero(g.pre().size(), low.cols());
    conv_feedback_apply<S>(g, kb, low, up, out, z, work);
    return out;
  }
};

template <class S>
double rel(const Mat<S>& a, const Mat<S>& b) {
  return (a - b).norm() / std::max(b.norm(), 1e-300);
}

}  // namespace

TEST_CASE_TEMPLATE("conv edge: forward JVP, VJP and parameter gradients against central differences", S, double,
                   std::complex<double>) {
  std::uint64_t seed = 100;
  for (const ConvEdgeGeometry& geom : kEdges) {
    CAPTURE(geom.pool);
    CAPTURE(geom.conv.pad);
    Pair<S> p(geom, seed += 10);
    Mat<S> d = random_matrix<S>(geom.pre().size(), 2, seed + 5, 1.0, 0.3);
    if constexpr (is_complex_v<S>) d *= S(0.8, 0.6);
    // JVP at s_low.
    (void)p.forward(p.K, p.b, p.s_low);
    const Mat<S> z = p.z;
    Mat<S> jvp = Mat<S>::Zero(geom.post().size(), 2);
    conv_edge_jvp<S>(geom, p.K, z, d, jvp, p.work);
    const Mat<S> fd = central<S>([&](double h) { return p.forward(p.K, p.b, p.s_low + S(h) * d); });
    CHECK(rel<S>(jvp, fd) < kFdTol);
    // VJP: ⟨g, J d⟩ = ⟨Jᵀ g, d⟩.
    const Mat<S> gpost = random_matrix<S>(geom.post().size(), 2, seed + 6, 1.0, 0.3);
    Mat<S> vjp = Mat<S>::Zero(geom.pre().size(), 2);
    conv_edge_vjp<S>(geom, p.K, z, gpost, vjp, p.work);
    // Two bilinear sums of a few hundred order-1 terms, each formed by different products: the
    // difference is rounding, ≲ 100 ε_mach relative to ‖g‖‖Jd‖.
    CHECK(std::abs(dot<S>(gpost, jvp) - dot<S>(vjp, d)) < 1e-13 * gpost.norm() * jvp.norm());
    // Parameters: ⟨gK, dK⟩ + ⟨gb, db⟩ = d/dε ⟨g, f(K + ε dK, b + ε db)⟩.
    Mat<S> gK = Mat<S>::Zero(p.K.rows(), p.K.cols());
    Vec<S> gb = Vec<S>::Zero(p.b.size());
    conv_edge_param_vjp<S>(geom, p.s_low, z, gpost, gK, gb, p.work);
    const Mat<double> dK = random_matrix<double>(p.K.rows(), p.K.cols(), seed + 7, 1.0, 0.3);
    const Vec<double> db = random_matrix<double>(p.b.size(), 1, seed + 8, 1.0, 0.3);
    const S analytic = (gK.array() * dK.cast<S>().array()).sum() + (gb.array() * db.cast<S>().array()).sum();
    const S numeric =
        central<S>([&](double h) { return dot<S>(gpost, p.forward(p.K + h * dK, p.b + h * db, p.s_low)); });
    CHECK(std::abs(analytic - numeric) < kFdTol * std::abs(numeric));
  }
}

TEST_CASE_TEMPLATE("conv edge: the feedback term is ∇Φ, and its JVP, VJP and kernel gradient are exact", S, double,
                   std::complex<double>) {
  std::uint64_t seed = 300;
  for (const ConvEdgeGeometry& geom : kEdges) {
    CAPTURE(geom.pool);
    CAPTURE(geom.conv.pad);
    Pair<S> p(geom, seed += 10);
    const Vec<double> none(0);
    auto phi = [&](const Mat<S>& low) { return dot<S>(p.forward(p.B, none, low), p.s_up); };
    Mat<S> dl = random_matrix<S>(geom.pre().size(), 2, seed + 5, 1.0, 0.3),
           du = random_matrix<S>(geom.post().size(), 2, seed + 6, 1.0, 0.3);
    if constexpr (is_complex_v<S>) dl *= S(0.6, -0.8);
    const Mat<S> f = p.feedback(p.B, p.s_low, p.s_up);
    const Mat<S> z = p.z;
    // f = ∇_{s_low} Φ: ⟨f, d⟩ = dΦ/dε.
    const S dphi = central<S>([&](double h) { return phi(p.s_low + S(h) * dl); });
    CHECK(std::abs(dot<S>(f, dl) - dphi) < kFdTol * std::abs(dphi));
    // JVP in both arguments.
    Mat<S> jvp = Mat<S>::Zero(geom.pre().size(), 2);
    conv_feedback_jvp<S>(geom, p.B, z, p.s_up, dl, du, jvp, p.work);
    const Mat<S> fd = central<S>([&](double h) { return p.feedback(p.B, p.s_low + S(h) * dl, p.s_up + S(h) * du); });
    CHECK(rel<S>(jvp, fd) < kFdTol);
    // VJP: ⟨g, J (dl, du)⟩ = ⟨Jᵀ_low g, dl⟩ + ⟨Jᵀ_up g, du⟩.
    const Mat<S> g = random_matrix<S>(geom.pre().size(), 2, seed + 7, 1.0, 0.3);
    Mat<S> vl = Mat<S>::Zero(geom.pre().size(), 2), vu = Mat<S>::Zero(geom.post().size(), 2);
    conv_feedback_vjp<S>(geom, p.B, z, p.s_up, g, vl, vu, p.work);
    CHECK(std::abs(dot<S>(g, jvp) - dot<S>(vl, dl) - dot<S>(vu, du)) < 1e-12 * g.norm() * jvp.norm());
    // The kernel gradient of ⟨g, f⟩.
    Mat<S> gB = Mat<S>::Zero(p.B.rows(), p.B.cols());
    conv_feedback_param_vjp<S>(geom, p.B, p.s_low, z, p.s_up, g, gB, p.work);
    const Mat<double> dB = random_matrix<double>(p.B.rows(), p.B.cols(), seed + 8, 1.0, 0.3);
    const S analytic = (gB.array() * dB.cast<S>().array()).sum();
    const S numeric = central<S>([&](double h) { return dot<S>(g, p.feedback(p.B + h * dB, p.s_low, p.s_up)); });
    CHECK(std::abs(analytic - numeric) < kFdTol * std::abs(numeric));
  }
}

TEST_CASE_TEMPLATE("conv edge: with B = K the pair's Jacobian is symmetric, with B ≠ K it is not", S, double,
                   std::complex<double>) {
  std::uint64_t seed = 500;
  for (const ConvEdgeGeometry& geom : kEdges) {
    CAPTURE(geom.pool);
    Pair<S> p(geom, seed += 10);
    // J (c_low, c_up) = (∂f_low/∂s_low c_low + ∂f_low/∂s_up c_up, ∂f_up/∂s_low c_low)
    auto apply_j = [&](const Mat<double>& fb, const Vec<double>& bias, const Mat<S>& cl, const Mat<S>& cu, Mat<S>& jl,
                       Mat<S>& ju) {
      Mat<S> zf, zb;
      Mat<S> tmp_up = Mat<S>::Zero(geom.post().size(), 2), tmp_low = Mat<S>::Zero(geom.pre().size(), 2);
      conv_edge_apply<S>(geom, p.K, bias, p.s_low, tmp_up, zf, p.work);
      conv_feedback_apply<S>(geom, fb, p.s_low, p.s_up, tmp_low, zb, p.work);
      jl = Mat<S>::Zero(geom.pre().size(), 2);
      ju = Mat<S>::Zero(geom.post().size(), 2);
      conv_feedback_jvp<S>(geom, fb, zb, p.s_up, cl, cu, jl, p.work);
      conv_edge_jvp<S>(geom, p.K, zf, cl, ju, p.work);
    };
    const Mat<S> al = random_matrix<S>(geom.pre().size(), 2, seed + 1, 1.0, 0.3),
                 au = random_matrix<S>(geom.post().size(), 2, seed + 2, 1.0, 0.3);
    const Mat<S> cl = random_matrix<S>(geom.pre().size(), 2, seed + 3, 1.0, 0.3),
                 cu = random_matrix<S>(geom.post().size(), 2, seed + 4, 1.0, 0.3);
    auto asymmetry = [&](const Mat<double>& fb, const Vec<double>& bias) {
      Mat<S> jal, jau, jcl, jcu;
      apply_j(fb, bias, cl, cu, jcl, jcu);
      apply_j(fb, bias, al, au, jal, jau);
      const S a_jc = dot<S>(al, jcl) + dot<S>(au, jcu), c_ja = dot<S>(cl, jal) + dot<S>(cu, jau);
      return std::abs(a_jc - c_ja) / (std::abs(a_jc) + std::abs(c_ja));
    };
    CHECK(asymmetry(p.K, Vec<double>::Zero(p.b.size())) < 1e-13);  // rounding only
    CHECK(asymmetry(p.K, p.b) < 1e-13);
    CHECK(asymmetry(p.B, p.b) > 1e-3);  // independent feedback kernels
  }
}
