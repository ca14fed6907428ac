#pragma once
// Internal to sim/: the batched engine behind relax() for the discrete map of convolutional
// networks in single precision (float states, and complex<float> states for complex nudges),
// used whenever it applies (RelaxConfig::fused, the map solver, a network with conv edges whose
// dense edges and `out` layer read the same in either map layout — unshaped or 1 x 1 maps). It
// computes exactly the map of field.hpp, M(u) = C + Σ_e f_e(s) + β e(s_out) (or the damped step
// u + dt (M(u) − u)), but
//   - every shaped layer is stored channels-last (H x W x C, a pixel's channels contiguous), so
//     a convolution of a chunk of samples is one im2col copy of whole channel vectors and one
//     GEMM on a kernel packed once per relaxation;
//   - the convolutions that read the same layer with the same geometry run as ONE GEMM with their
//     kernels stacked: a layer's forward conv K and the feedback conv B of the edge coming down
//     into it both convolve s_lower, so [K; B] s_lower is one product (as the PyTorch peer does);
//   - the feedback pathway's transpose conv_Bᵀ is computed as the convolution with the kernel
//     transposed in its channels and flipped in space, padding k − 1 − p: a GEMM again, no
//     scatter;
//   - softmax pooling, its VJP (the feedback's P'(z)ᵀ s_upper), the activation, the damping and
//     each column's residual norms run on whole channel vectors (Eigen's vectorised exp, sin, cos);
//   - complex states are stored split, each sample as a pair of real columns (Re, Im): the real
//     kernels act on both in the same GEMM;
//   - settled samples leave the active set, so later steps cost only what still relaxes.
// The summation order differs from the reference path, so results agree to float rounding
// (tests/sim/test_conv_map.cpp). Single-threaded: callers split batches over threads.
#include <memory>

#include "sim/field.hpp"
#include "sim/relax.hpp"

namespace hepsim::detail {

// True when the conv engine can run this relaxation.
template <class S>
bool conv_map_applies(const Field<S>& field, const RelaxConfig& cfg);

// The conv engine's state of one relaxation; the interface of FusedMap (sim/fused_map.hpp).
template <class S>
class ConvMap {
 public:
  ConvMap(const Field<S>& field, double dt);
  ~ConvMap();
  ConvMap(const ConvMap&) = delete;
  ConvMap& operator=(const ConvMap&) = delete;

  void load(const Mat<S>& u);
  // One map step; r[j] = ‖M(u_old) − u_old‖∞, a[j] = ‖u_new‖∞ and, when d is given,
  // d[j] = ‖u_new − snapshot_j‖∞ for the columns with watch[j] ≠ 0 (moduli for complex states),
  // for every column still computed.
  void step(double* r, double* a, double* d = nullptr, const char* watch = nullptr);
  void snapshot();
  void freeze(Index col);  // zero, and no longer computed
  void settle(Index col);  // final as it is, and no longer computed
  void store(Mat<S>& u) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hepsim::detail
