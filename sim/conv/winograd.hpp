#pragma once
// Internal to sim/: 3x3 stride-1 convolutions with one zero of padding ("same") on even-sized
// channels-last maps by Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray 2016). Each 2x2
// block of outputs comes from the 4x4 block of inputs around it:
//   Y = Aᵀ [ Σ_ci (G g Gᵀ) ⊙ (Bᵀ d B) ] A,
// so the 36 multiply-adds per output block and channel pair of the direct convolution become 16:
// sixteen GEMMs U_ξ (C_out x C_in) · V_ξ (C_in x blocks), one per position ξ of the 4x4
// transformed block, on the packed-panel kernel of sim/panel_gemm.hpp. The transforms are adds
// (and halves) over whole channel vectors. In the softmax-pooled edges of the paper's CNN a 2x2
// output block is exactly one pooling window.
//
// Transforms (F(2x2, 3x3)):
//   Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1],  G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1],
//   Aᵀ = [1 1 1 0; 0 1 −1 −1].
#include <array>
#include <vector>

#include "sim/conv/conv2d.hpp"
#include "sim/panel_gemm.hpp"

namespace hepsim::detail {

class WinogradConv {
 public:
  WinogradConv() = default;
  // W: C_out x 9·C_in in im2col order (column (ky·3 + kx)·C_in + ci); `in`: the input map's shape.
  WinogradConv(const Eigen::Ref<const Mat<float>>& W, const MapShape& in);

  // Whether F(2x2, 3x3) computes geometry g: a 3x3 kernel, one zero of padding, even height and width.
  static bool applies(const ConvGeometry& g) {
    return g.k == 3 && g.pad == 1 && g.in.h % 2 == 0 && g.in.w % 2 == 0 && g.in.h > 0 && g.in.w > 0;
  }

  Index rows() const { return cout_; }
  // Floats of scratch that apply() needs for `slots` maps.
  Index scratch_floats(Index slots) const { return 16 * slots * blocks() * (cin_ + cout_); }

  // z = conv(src) for `slots` channels-last input maps (the s-th at src + s·stride): output pixel
  // q of map s (C_out values) at z + (s·H·W + q)·ldz, as the im2col GEMM writes it.
  void apply(const float* src, Index stride, Index slots, float* z, Index ldz, float* scratch) const;

 private:
  Index blocks() const { return (in_.h / 2) * (in_.w / 2); }

  MapShape in_{};
  Index cin_ = 0, cout_ = 0;
  std::array<PackedMatrix, 16> u_;  // U_ξ = (G g Gᵀ)_ξ for every (co, ci)
  std::vector<float> zeros_;         // C_in zeros: the padding's channel vector
};

}  // namespace hepsim::detail
