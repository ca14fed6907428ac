#pragma once
// Batched 2-D convolution (SPEC 2.1), stride 1, zero padding, one sample per column:
//   y[co, oy, ox] = Σ_{ci, ky, kx} K[co, ci, ky, kx] · x[ci, oy + ky − pad, ox + kx − pad]
// (x outside the map is 0; pad = (k − 1)/2 keeps H x W ("same"), pad = 0 shrinks it by k − 1
// ("valid")). Maps are planar C x H x W columns (sim/conv/pool.hpp). The kernel is a real
// C_out x (C_in·k·k) matrix whose column (ci·k + ky)·k + kx holds tap (ky, kx) of input channel ci,
// stored column-major in θ like a dense block.
//
// Computed per sample as one GEMM on the im2col patch matrix Pᵀ (H_out·W_out x C_in·k·k):
//   Y_b = Pᵀ_b Kᵀ            (the output map as H_out·W_out x C_out, i.e. planar C x H x W)
// with the transposes used by the feedback pathway and the parameter gradients:
//   input VJP   gX_b = col2im(G_b K)          (the holomorphic transpose conv_Kᵀ, no conjugation)
//   kernel VJP  gK  += Σ_b G_bᵀ Pᵀ_b
// This is the reference path (double-checked by tests); the batched fast engine builds on it.
#include "sim/conv/pool.hpp"

namespace hepsim {

struct ConvGeometry {
  MapShape in;             // C_in x H x W
  Index out_channels = 1;  // C_out
  Index k = 3;             // kernel size (odd)
  Index pad = 1;           // zero padding on each side: (k − 1)/2 "same", 0 "valid"

  MapShape out() const { return {out_channels, in.h + 2 * pad - k + 1, in.w + 2 * pad - k + 1}; }
  Index taps() const { return in.c * k * k; }  // kernel columns
};

// Scratch of the im2col path, sized on first use and reused (no allocation once sized).
template <class S>
struct ConvWork {
  Mat<S> patches;  // H_out·W_out x C_in·k·k
  Mat<S> grad;     // H_out·W_out x C_in·k·k (input VJP)
};

// y = conv_K(x) (overwritten): x in.size() x B, y out().size() x B.
template <class S>
void conv_forward(const ConvGeometry& g, const CMatRef<RealOf<S>>& K, const CMatRef<S>& x, MatRef<S> y,
                  ConvWork<S>& work);

// gx += conv_Kᵀ(gy): the holomorphic transpose of conv_forward in x (gy out().size() x B).
template <class S>
void conv_input_vjp(const ConvGeometry& g, const CMatRef<RealOf<S>>& K, const CMatRef<S>& gy, MatRef<S> gx,
                    ConvWork<S>& work);

// gK += ∂⟨gy, conv_K(x)⟩/∂K summed over the batch (C_out x C_in·k·k; bilinear product, no
// conjugation: for complex states the caller takes what its estimator needs).
template <class S>
void conv_kernel_vjp(const ConvGeometry& g, const CMatRef<S>& x, const CMatRef<S>& gy, MatRef<S> gK, ConvWork<S>& work);

}  // namespace hepsim
