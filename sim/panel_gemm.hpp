#pragma once
// Internal to sim/: the register-blocked GEMM core shared by the fused dense engine
// (sim/fused_map.cpp) and the conv engine (sim/conv/conv_map.cpp). A real matrix A is packed once
// into panels of 32 rows (two AVX-512 registers), k-major: panel p holds A(32p + r, kk) at
// [(p·k + kk)·32 + r], rows past A's end zero. A block product C(32 x NC) = panel · B(k x NC)
// keeps its 2·NC accumulators in registers and broadcasts each element of B once; on the conv
// engine's shapes 104–110 GFLOP/s per core (about 93 % of the FMA peak), against 73–90 for Eigen's
// general GEMM, which repacks both operands on every call (bench_components: BM_ConvGemm).
#include <vector>

#include "sim/types.hpp"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace hepsim::detail {

constexpr int kPanel = 32;  // rows of a packed panel: two zmm registers
using Floats = std::vector<float, Eigen::aligned_allocator<float>>;

#if defined(__AVX512F__)
// acc0/acc1 (rows 0–15 / 16–31 of each of the NC columns) = panel (32 x k) · B (k x NC, column
// stride ldb).
template <int NC>
inline void panel_product(const float* a_panel, const float* b, Index ldb, Index k, __m512* acc0, __m512* acc1) {
  for (int j = 0; j < NC; ++j) acc0[j] = acc1[j] = _mm512_setzero_ps();
  const float* bj[NC];
  for (int j = 0; j < NC; ++j) bj[j] = b + j * ldb;
  for (Index kk = 0; kk < k; ++kk) {
    const __m512 a0 = _mm512_load_ps(a_panel + kk * kPanel);
    const __m512 a1 = _mm512_load_ps(a_panel + kk * kPanel + 16);
#pragma GCC unroll 13
    for (int j = 0; j < NC; ++j) {
      const __m512 bv = _mm512_set1_ps(bj[j][kk]);
      acc0[j] = _mm512_fmadd_ps(a0, bv, acc0[j]);
      acc1[j] = _mm512_fmadd_ps(a1, bv, acc1[j]);
    }
  }
}
#endif

// A real matrix packed for panel products (kept as it is where AVX-512 is missing: Eigen then).
class PackedMatrix {
 public:
  PackedMatrix() = default;
  explicit PackedMatrix(const Eigen::Ref<const Mat<float>>& a) { pack(a); }
  void pack(const Eigen::Ref<const Mat<float>>& a);
  Index rows() const { return rows_; }
  Index cols() const { return cols_; }
  // C (rows x n, column stride ldc) = A · B (B: cols x n, column stride ldb).
  void multiply(const float* b, Index ldb, Index n, float* c, Index ldc) const;

 private:
  Index rows_ = 0, cols_ = 0;
  Floats packed_;
#if !defined(__AVX512F__)
  Mat<float> plain_;
#endif
};

}  // namespace hepsim::detail
