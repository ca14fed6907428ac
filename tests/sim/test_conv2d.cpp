// Batched 2-D convolution (sim/conv/conv2d.hpp): the im2col + GEMM path against the definition
// evaluated with nested loops in long double ("same" and "valid" padding, kernel sizes 1, 3, 5,
// real and complex maps), the input VJP as the exact bilinear transpose, and the kernel VJP
// against unit kernels (the convolution is linear in K, so each entry of the gradient is the
// response to one tap).
#include <doctest/doctest.h>

#include <complex>

#include "../common.hpp"
#include "sim/conv/conv2d.hpp"

using namespace hepsim;
using namespace hepsim::testing;
using CLD = std::complex<long double>;

namespace {


// The definition, one output value.
template <class S>
CLD conv_ref(const ConvGeometry& g, const Mat<RealOf<S>>& K, const Mat<S>& x, Index b, Index co, Index oy, Index ox) {
  CLD sum = 0;
  for (Index ci = 0; ci < g.in.c; ++ci)
    for (Index ky = 0; ky < g.k; ++ky)
      for (Index kx = 0; kx < g.k; ++kx) {
        const Index iy = oy + ky - g.pad, ix = ox + kx - g.pad;
        if (iy < 0 || iy >= g.in.h || ix < 0 || ix >= g.in.w) continue;
        sum += static_cast<long double>(K(co, (ci * g.k + ky) * g.k + kx)) *
               to_cld(x((ci * g.in.h + iy) * g.in.w + ix, b));
      }
  return sum;
}

template <class S>
S bilinear(const Mat<S>& a, const Mat<S>& b) {
  return (a.array() * b.array()).sum();
}

const ConvGeometry kGeometries[] = {
    {{2, 5, 6}, 3, 3, 1},  // same, 3x3
    {{3, 4, 4}, 2, 3, 0},  // valid: 4x4 -> 2x2 (the paper's conv3-out)
    {{2, 6, 4}, 2, 5, 2},  // same, 5x5: taps beyond the border on both sides
    {{4, 3, 3}, 5, 1, 0},  // 1x1: a per-pixel dense layer
};

}  // namespace

TEST_CASE_TEMPLATE("conv2d: im2col + GEMM equals the definition", S, double, std::complex<double>) {
  std::uint64_t seed = 10;
  for (const ConvGeometry& g : kGeometries) {
    CAPTURE(g.k);
    CAPTURE(g.pad);
    const MapShape o = g.out();
    const Mat<double> K = random_matrix<double>(g.out_channels, g.taps(), ++seed);
    const Mat<S> x = random_matrix<S>(g.in.size(), 3, ++seed);
    Mat<S> y(o.size(), 3);
    ConvWork<S> work;
    conv_forward<S>(g, K, x, y, work);
    long double worst = 0;
    for (Index b = 0; b < 3; ++b)
      for (Index co = 0; co < o.c; ++co)
        for (Index oy = 0; oy < o.h; ++oy)
          for (Index ox = 0; ox < o.w; ++ox)
            worst = std::max(worst,
                             std::abs(to_cld(y((co * o.h + oy) * o.w + ox, b)) - conv_ref<S>(g, K, x, b, co, oy, ox)));
    // At most C_in·k² = 50 products of values of order 1, summed in double: ≤ 50 · 2⁻⁵² ≈ 1e-14.
    CHECK(worst < 1e-13L);
  }
}

TEST_CASE_TEMPLATE("conv2d: the input VJP is the bilinear transpose, the kernel VJP the response to each tap", S,
                   double, std::complex<double>) {
  std::uint64_t seed = 40;
  for (const ConvGeometry& g : kGeometries) {
    CAPTURE(g.k);
    const MapShape o = g.out();
    const Mat<double> K = random_matrix<double>(g.out_channels, g.taps(), ++seed);
    const Mat<S> x = random_matrix<S>(g.in.size(), 2, ++seed), gy = random_matrix<S>(o.size(), 2, ++seed);
    ConvWork<S> work;
    Mat<S> y(o.size(), 2);
    conv_forward<S>(g, K, x, y, work);
    // ⟨gy, conv_K x⟩ = ⟨conv_Kᵀ gy, x⟩; gx accumulates onto what it holds.
    Mat<S> gx = Mat<S>::Constant(g.in.size(), 2, S(0.5));
    conv_input_vjp<S>(g, K, gy, gx, work);
    gx.array() -= S(0.5);
    const S lhs = bilinear<S>(gy, y), rhs = bilinear<S>(gx, x);
    CHECK(std::abs(lhs - rhs) <= 1e-13 * (gy.norm() * y.norm() + gx.norm() * x.norm()));
    // gK(co, t) = ⟨gy, conv_{E(co,t)} x⟩ for the unit kernel E(co, t).
    Mat<S> gK = Mat<S>::Zero(g.out_channels, g.taps());
    conv_kernel_vjp<S>(g, x, gy, gK, work);
    double worst = 0;
    for (Index co = 0; co < g.out_channels; ++co)
      for (Index t = 0; t < g.taps(); t += 2) {
        Mat<double> E = Mat<double>::Zero(g.out_channels, g.taps());
        E(co, t) = 1;
        conv_forward<S>(g, E, x, y, work);
        worst = std::max(worst, std::abs(gK(co, t) - bilinear<S>(gy, y)));
      }
    CHECK(worst < 1e-12);
  }
}

TEST_CASE("conv2d: float agrees with double, bad geometries are refused") {
  const ConvGeometry g{{3, 6, 6}, 4, 3, 1};
  const Mat<double> K = random_matrix<double>(4, 27, 1), x = random_matrix<double>(g.in.size(), 2, 2);
  Mat<double> yd(g.out().size(), 2);
  Mat<float> yf(g.out().size(), 2);
  ConvWork<double> wd;
  ConvWork<float> wf;
  conv_forward<double>(g, K, x, yd, wd);
  conv_forward<float>(g, K.cast<float>(), x.cast<float>(), yf, wf);
  // 27-term sums of order-1 float products: relative error ≲ 27 · 2⁻²⁴ ≈ 2e-6 in the worst case.
  CHECK((yf.cast<double>() - yd).norm() <= 2e-6 * yd.norm());
  Mat<double> y2(g.out().size(), 2);
  CHECK_THROWS_AS(conv_forward<double>(ConvGeometry{{3, 6, 6}, 4, 2, 0}, Mat<double>(4, 12), x, y2, wd),
                  std::invalid_argument);  // an even kernel
  CHECK_THROWS_AS(conv_forward<double>(g, Mat<double>(4, 26), x, yd, wd), std::invalid_argument);
  CHECK_THROWS_AS(
      conv_forward<double>(ConvGeometry{{3, 2, 2}, 4, 5, 0}, Mat<double>(4, 75), Mat<double>(12, 1), y2, wd),
      std::invalid_argument);  // a valid 5x5 on a 2x2 map has no output
}
