#include "sim/conv/conv2d.hpp"

#include <complex>
#include <stdexcept>

namespace hepsim {
namespace {

void check(const ConvGeometry& g, Index x_rows, Index y_rows, Index x_cols, Index y_cols) {
  const MapShape o = g.out();
  if (g.k < 1 || g.k % 2 == 0 || g.pad < 0 || o.h < 1 || o.w < 1 || g.in.c < 1 || g.out_channels < 1)
    throw std::invalid_argument("conv2d: the kernel size must be odd and the output map non-empty");
  if (x_rows != g.in.size() || y_rows != o.size() || x_cols != y_cols)
    throw std::invalid_argument("conv2d: matrix shapes do not match the geometry");
}

// Pᵀ of one sample: row p = (oy, ox) of the output, column (ci·k + ky)·k + kx.
template <class S>
void im2col(const ConvGeometry& g, const S* x, Mat<S>& pt) {
  const MapShape o = g.out();
  pt.resize(o.h * o.w, g.taps());
  for (Index ci = 0; ci < g.in.c; ++ci)
    for (Index ky = 0; ky < g.k; ++ky)
      for (Index kx = 0; kx < g.k; ++kx) {
        S* col = pt.col((ci * g.k + ky) * g.k + kx).data();
        for (Index oy = 0; oy < o.h; ++oy) {
          const Index iy = oy + ky - g.pad;
          S* row = col + oy * o.w;
          if (iy < 0 || iy >= g.in.h) {
            for (Index ox = 0; ox < o.w; ++ox) row[ox] = S(0);
            continue;
          }
          const S* src = x + (ci * g.in.h + iy) * g.in.w;
          for (Index ox = 0; ox < o.w; ++ox) {
            const Index ix = ox + kx - g.pad;
            row[ox] = ix >= 0 && ix < g.in.w ? src[ix] : S(0);
          }
        }
      }
}

// x += col2im(gpt): the transpose of im2col.
template <class S>
void col2im_add(const ConvGeometry& g, const Mat<S>& gpt, S* x) {
  const MapShape o = g.out();
  for (Index ci = 0; ci < g.in.c; ++ci)
    for (Index ky = 0; ky < g.k; ++ky)
      for (Index kx = 0; kx < g.k; ++kx) {
        const S* col = gpt.col((ci * g.k + ky) * g.k + kx).data();
        for (Index oy = 0; oy < o.h; ++oy) {
          const Index iy = oy + ky - g.pad;
          if (iy < 0 || iy >= g.in.h) continue;
          S* dst = x + (ci * g.in.h + iy) * g.in.w;
          const S* row = col + oy * o.w;
          for (Index ox = 0; ox < o.w; ++ox) {
            const Index ix = ox + kx - g.pad;
            if (ix >= 0 && ix < g.in.w) dst[ix] += row[ox];
          }
        }
      }
}

}  // namespace

template <class S>
void conv_forward(const ConvGeometry& g, const CMatRef<RealOf<S>>& K, const CMatRef<S>& x, MatRef<S> y,
                  ConvWork<S>& work) {
  check(g, x.rows(), y.rows(), x.cols(), y.cols());
  if (K.rows() != g.out_channels || K.cols() != g.taps())
    throw std::invalid_argument("conv2d: the kernel is not C_out x C_in·k·k");
  const MapShape o = g.out();
  for (Index b = 0; b < x.cols(); ++b) {
    im2col(g, x.col(b).data(), work.patches);
    Eigen::Map<Mat<S>> yb(y.col(b).data(), o.h * o.w, o.c);
    yb.noalias() = work.patches * K.transpose();
  }
}

template <class S>
void conv_input_vjp(const ConvGeometry& g, const CMatRef<RealOf<S>>& K, const CMatRef<S>& gy, MatRef<S> gx,
                    ConvWork<S>& work) {
  check(g, gx.rows(), gy.rows(), gx.cols(), gy.cols());
  if (K.rows() != g.out_channels || K.cols() != g.taps())
    throw std::invalid_argument("conv2d: the kernel is not C_out x C_in·k·k");
  const MapShape o = g.out();
  for (Index b = 0; b < gy.cols(); ++b) {
    const Eigen::Map<const Mat<S>> gb(gy.col(b).data(), o.h * o.w, o.c);
    work.grad.noalias() = gb * K;
    col2im_add(g, work.grad, gx.col(b).data());
  }
}

template <class S>
void conv_kernel_vjp(const ConvGeometry& g, const CMatRef<S>& x, const CMatRef<S>& gy, MatRef<S> gK,
                     ConvWork<S>& work) {
  check(g, x.rows(), gy.rows(), x.cols(), gy.cols());
  if (gK.rows() != g.out_channels || gK.cols() != g.taps())
    throw std::invalid_argument("conv2d: the kernel gradient is not C_out x C_in·k·k");
  const MapShape o = g.out();
  for (Index b = 0; b < x.cols(); ++b) {
    im2col(g, x.col(b).data(), work.patches);
    const Eigen::Map<const Mat<S>> gb(gy.col(b).data(), o.h * o.w, o.c);
    gK.noalias() += gb.transpose() * work.patches;  // non-conjugating transpose
  }
}

#define HEPSIM_CONV(S)                                                                                          \
  template void conv_forward<S>(const ConvGeometry&, const CMatRef<RealOf<S>>&, const CMatRef<S>&, MatRef<S>,   \
                                ConvWork<S>&);                                                                  \
  template void conv_input_vjp<S>(const ConvGeometry&, const CMatRef<RealOf<S>>&, const CMatRef<S>&, MatRef<S>, \
                                  ConvWork<S>&);                                                                \
  template void conv_kernel_vjp<S>(const ConvGeometry&, const CMatRef<S>&, const CMatRef<S>&, MatRef<S>, ConvWork<S>&);
HEPSIM_CONV(float)
HEPSIM_CONV(double)
HEPSIM_CONV(std::complex<float>)
HEPSIM_CONV(std::complex<double>)
#undef HEPSIM_CONV

}  // namespace hepsim
