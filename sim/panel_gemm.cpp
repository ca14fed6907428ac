#include "sim/panel_gemm.hpp"

#include <algorithm>
#include <array>
#include <utility>

namespace hepsim::detail {

void PackedMatrix::pack(const Eigen::Ref<const Mat<float>>& a) {
  rows_ = a.rows();
  cols_ = a.cols();
#if defined(__AVX512F__)
  const Index panels = (rows_ + kPanel - 1) / kPanel;
  packed_.assign(static_cast<std::size_t>(panels * cols_ * kPanel), 0.f);
  for (Index c = 0; c < cols_; ++c)
    for (Index r = 0; r < rows_; ++r)
      packed_[static_cast<std::size_t>(((r / kPanel) * cols_ + c) * kPanel + r % kPanel)] = a(r, c);
#else
  plain_ = a;
#endif
}

#if defined(__AVX512F__)
namespace {

// C (+)= panel · B for one block of NC columns (Add: accumulate onto C, a later k-block).
template <int NC, bool Add>
void block(const float* a_panel, const float* b, Index ldb, Index k, float* c, Index ldc, __mmask16 m0,
           __mmask16 m1) {
  __m512 acc0[NC], acc1[NC];
  panel_product<NC>(a_panel, b, ldb, k, acc0, acc1);
  for (int j = 0; j < NC; ++j) {
    if constexpr (Add) {
      acc0[j] = _mm512_add_ps(acc0[j], _mm512_maskz_loadu_ps(m0, c + j * ldc));
      acc1[j] = _mm512_add_ps(acc1[j], _mm512_maskz_loadu_ps(m1, c + j * ldc + 16));
    }
    _mm512_mask_storeu_ps(c + j * ldc, m0, acc0[j]);
    _mm512_mask_storeu_ps(c + j * ldc + 16, m1, acc1[j]);
  }
}

using BlockFn = void (*)(const float*, const float*, Index, Index, float*, Index, __mmask16, __mmask16);
template <bool Add, int... W>
constexpr std::array<BlockFn, sizeof...(W)> blocks(std::integer_sequence<int, W...>) {
  return {&block<W + 1, Add>...};
}
constexpr int kWidest = 12;  // 2 x 12 accumulators + 2 panel rows + 1 broadcast of the 32 zmm
constexpr auto kStore = blocks<false>(std::make_integer_sequence<int, kWidest>{});
constexpr auto kAdd = blocks<true>(std::make_integer_sequence<int, kWidest>{});
// The inner dimension is cut into blocks of at most this many: a 32-row panel block (48 KB) and
// the B block of a column block (18 KB) stay in a core's L1/L2 while the whole B block of the
// product (k-block x n) stays in L2 across the panels.
constexpr Index kDepth = 384;

}  // namespace
#endif

void PackedMatrix::multiply(const float* b, Index ldb, Index n, float* c, Index ldc) const {
#if defined(__AVX512F__)
  const Index panels = (rows_ + kPanel - 1) / kPanel;
  // Columns in blocks of nearly equal width, never a narrow remainder (a block streams the whole
  // panel whatever its width).
  const Index nblocks = (n + kWidest - 1) / kWidest;
  const Index kblocks = (cols_ + kDepth - 1) / kDepth;
  for (Index kb = 0, k0 = 0; kb < kblocks; ++kb) {
    const Index kc = (cols_ - k0) / (kblocks - kb);  // the remaining depth shared evenly
    const auto& fns = kb == 0 ? kStore : kAdd;
    for (Index p = 0; p < panels; ++p) {
      const Index rows = std::min<Index>(kPanel, rows_ - p * kPanel);
      const auto m0 = static_cast<__mmask16>(rows >= 16 ? 0xFFFF : (1u << rows) - 1);
      const auto m1 = static_cast<__mmask16>(rows >= 32 ? 0xFFFF : rows > 16 ? (1u << (rows - 16)) - 1 : 0);
      const float* a = packed_.data() + (p * cols_ + k0) * kPanel;
      for (Index q = 0, j = 0; q < nblocks; ++q) {
        const Index w = (n - j) / (nblocks - q);  // the remaining columns shared evenly
        fns[static_cast<std::size_t>(w - 1)](a, b + j * ldb + k0, ldb, kc, c + j * ldc + p * kPanel, ldc, m0, m1);
        j += w;
      }
    }
    k0 += kc;
  }
#else
  Eigen::Map<Mat<float>, 0, Eigen::OuterStride<>> C(c, rows_, n, Eigen::OuterStride<>(ldc));
  C.noalias() = plain_ * Eigen::Map<const Mat<float>, 0, Eigen::OuterStride<>>(b, cols_, n, Eigen::OuterStride<>(ldb));
#endif
}

}  // namespace hepsim::detail
