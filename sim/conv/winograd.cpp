// Winograd F(2x2, 3x3) convolutions (see winograd.hpp).
#include "sim/conv/winograd.hpp"

#include <vector>

namespace hepsim::detail {

WinogradConv::WinogradConv(const Eigen::Ref<const Mat<float>>& W, const MapShape& in)
    : in_(in), cin_(in.c), cout_(W.rows()), zeros_(static_cast<std::size_t>(in.c), 0.f) {
  constexpr double G[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
  std::array<Mat<float>, 16> u;
  for (Mat<float>& m : u) m.resize(cout_, cin_);
  for (Index co = 0; co < cout_; ++co)
    for (Index ci = 0; ci < cin_; ++ci) {
      double gg[3][3], t[4][3];
      for (int ky = 0; ky < 3; ++ky)
        for (int kx = 0; kx < 3; ++kx) gg[ky][kx] = W(co, (ky * 3 + kx) * cin_ + ci);
      for (int i = 0; i < 4; ++i)
        for (int kx = 0; kx < 3; ++kx) t[i][kx] = G[i][0] * gg[0][kx] + G[i][1] * gg[1][kx] + G[i][2] * gg[2][kx];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j)
          u[static_cast<std::size_t>(i * 4 + j)](co, ci) =
              static_cast<float>(t[i][0] * G[j][0] + t[i][1] * G[j][1] + t[i][2] * G[j][2]);
    }
  for (std::size_t x = 0; x < 16; ++x) u_[x].pack(u[x]);
}

void WinogradConv::apply(const float* src, Index stride, Index slots, float* z, Index ldz, float* scratch) const {
  const Index H = in_.h, Wd = in_.w, bw = Wd / 2, nb = blocks(), tn = slots * nb;
  float* V = scratch;                   // 16 x (C_in x tn): V_ξ column b = block b's channels
  float* M = scratch + 16 * tn * cin_;  // 16 x (C_out x tn)
  // V = Bᵀ d B for every block and input channel.
  for (Index s = 0; s < slots; ++s)
    for (Index b = 0; b < nb; ++b) {
      const Index by = b / bw, bx = b % bw, col = s * nb + b;
      const float* p[16];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) {
          const Index y = 2 * by - 1 + i, x = 2 * bx - 1 + j;
          p[i * 4 + j] = y >= 0 && y < H && x >= 0 && x < Wd ? src + s * stride + (y * Wd + x) * cin_ : zeros_.data();
        }
      float* out = V + col * cin_;
      const Index plane = tn * cin_;
#pragma GCC ivdep
      for (Index c = 0; c < cin_; ++c) {
        float t[16];
        for (int j = 0; j < 4; ++j) {  // Bᵀ d: along the rows
          const float d0 = p[j][c], d1 = p[4 + j][c], d2 = p[8 + j][c], d3 = p[12 + j][c];
          t[j] = d0 - d2;
          t[4 + j] = d1 + d2;
          t[8 + j] = d2 - d1;
          t[12 + j] = d1 - d3;
        }
        for (int i = 0; i < 4; ++i) {  // (Bᵀ d) B: along the columns
          const float a0 = t[4 * i], a1 = t[4 * i + 1], a2 = t[4 * i + 2], a3 = t[4 * i + 3];
          out[(4 * i) * plane + c] = a0 - a2;
          out[(4 * i + 1) * plane + c] = a1 + a2;
          out[(4 * i + 2) * plane + c] = a2 - a1;
          out[(4 * i + 3) * plane + c] = a1 - a3;
        }
      }
    }
  // M_ξ = U_ξ V_ξ.
  for (std::size_t x = 0; x < 16; ++x)
    u_[x].multiply(V + static_cast<Index>(x) * tn * cin_, cin_, tn, M + static_cast<Index>(x) * tn * cout_, cout_);
  // Y = Aᵀ M A for every block and output channel.
  const Index plane = tn * cout_;
  for (Index s = 0; s < slots; ++s)
    for (Index b = 0; b < nb; ++b) {
      const Index by = b / bw, bx = b % bw, col = s * nb + b;
      const float* m = M + col * cout_;
      float* y00 = z + (s * H * Wd + (2 * by) * Wd + 2 * bx) * ldz;
      float* y01 = y00 + ldz;
      float* y10 = y00 + Wd * ldz;
      float* y11 = y10 + ldz;
#pragma GCC ivdep
      for (Index c = 0; c < cout_; ++c) {
        float r0[4], r1[4];
        for (int j = 0; j < 4; ++j) {  // Aᵀ m: along the rows
          const float m0 = m[j * plane + c], m1 = m[(4 + j) * plane + c], m2 = m[(8 + j) * plane + c],
                      m3 = m[(12 + j) * plane + c];
          r0[j] = m0 + m1 + m2;
          r1[j] = m1 - m2 - m3;
        }
        y00[c] = r0[0] + r0[1] + r0[2];
        y01[c] = r0[1] - r0[2] - r0[3];
        y10[c] = r1[0] + r1[1] + r1[2];
        y11[c] = r1[1] - r1[2] - r1[3];
      }
    }
}

}  // namespace hepsim::detail
