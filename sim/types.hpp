#pragma once
// Common numeric types. States are matrices with one column per sample (neurons x columns),
// column-major, so one relaxation step of a dense edge is one GEMM over the batch.
// Scalars S ∈ {float, double, std::complex<float>, std::complex<double>}; parameters are always
// real, of type RealOf<S>.
#include <Eigen/Core>
#include <complex>
#include <type_traits>

namespace hepsim {

using Index = Eigen::Index;

template <class S>
using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
template <class S>
using Vec = Eigen::Matrix<S, Eigen::Dynamic, 1>;
template <class S>
using RowVec = Eigen::Matrix<S, 1, Eigen::Dynamic>;

template <class S>
using RealOf = typename Eigen::NumTraits<S>::Real;

template <class S>
inline constexpr bool is_complex_v = Eigen::NumTraits<S>::IsComplex;

// Read-only and writable views used in function signatures (no copies for blocks and maps).
template <class S>
using MatRef = Eigen::Ref<Mat<S>>;
template <class S>
using CMatRef = Eigen::Ref<const Mat<S>>;
template <class S>
using VecRef = Eigen::Ref<Vec<S>>;
template <class S>
using CVecRef = Eigen::Ref<const Vec<S>>;

}  // namespace hepsim
