// Cauchy contour coefficients of holomorphic EP (SPEC 3.2) by FFTW, and the direct sum that
// checks it. See ep/estimators.hpp.
#include <fftw3.h>

#include <cmath>
#include <map>
#include <mutex>
#include <stdexcept>

#include "ep/estimators.hpp"

namespace hepsim {
namespace {

// Batched complex-to-real DFTs of length N over E interleaved entries: input element k of entry
// e at in[k·E + e] (k = 0 … N/2, the Hermitian half), output m at out[m·E + e]. Plans are cached
// per (N, E): creating them is not thread-safe (FFTW's rule), executing them on new arrays is.
template <class R>
struct Fftw;
template <>
struct Fftw<double> {
  using Plan = fftw_plan;
  using Complex = fftw_complex;
  static Plan plan(int N, int E) {
    int n[1] = {N};
    return fftw_plan_many_dft_c2r(1, n, E, nullptr, nullptr, E, 1, nullptr, nullptr, E, 1,
                                  FFTW_ESTIMATE | FFTW_UNALIGNED | FFTW_DESTROY_INPUT);
  }
  static void execute(Plan p, std::complex<double>* in, double* out) {
    fftw_execute_dft_c2r(p, reinterpret_cast<Complex*>(in), out);
  }
  static void destroy(Plan p) { fftw_destroy_plan(p); }
  static void cleanup() { fftw_cleanup(); }
};
template <>
struct Fftw<float> {
  using Plan = fftwf_plan;
  using Complex = fftwf_complex;
  static Plan plan(int N, int E) {
    int n[1] = {N};
    return fftwf_plan_many_dft_c2r(1, n, E, nullptr, nullptr, E, 1, nullptr, nullptr, E, 1,
                                   FFTW_ESTIMATE | FFTW_UNALIGNED | FFTW_DESTROY_INPUT);
  }
  static void execute(Plan p, std::complex<float>* in, float* out) {
    fftwf_execute_dft_c2r(p, reinterpret_cast<Complex*>(in), out);
  }
  static void destroy(Plan p) { fftwf_destroy_plan(p); }
  static void cleanup() { fftwf_cleanup(); }
};

// The plans of one precision, released (with FFTW's own accumulated state) at exit.
template <class R>
struct PlanCache {
  std::mutex mutex;
  std::map<std::pair<int, Index>, typename Fftw<R>::Plan> plans;
  ~PlanCache() {
    for (auto& [key, p] : plans) Fftw<R>::destroy(p);
    Fftw<R>::cleanup();
  }
};

template <class R>
typename Fftw<R>::Plan cached_plan(int N, Index E) {
  static PlanCache<R> cache;
  auto& plans = cache.plans;
  std::lock_guard<std::mutex> lock(cache.mutex);
  auto it = plans.find({N, E});
  if (it != plans.end()) return it->second;
  if (E > std::numeric_limits<int>::max()) throw std::length_error("contour transform too large for FFTW");
  auto p = Fftw<R>::plan(N, static_cast<int>(E));
  if (!p) throw std::runtime_error("FFTW could not plan a length-" + std::to_string(N) + " transform");
  plans.emplace(std::make_pair(N, E), p);
  return p;
}

}  // namespace

std::vector<std::complex<double>> contour_points(int N, double beta) {
  std::vector<std::complex<double>> p;
  for (int k = 0; k <= N / 2; ++k) {
    // Exact values on the real axis (k = 0, N/2) keep those phases in real arithmetic.
    if (k == 0) p.emplace_back(beta, 0.0);
    else if (2 * k == N) p.emplace_back(-beta, 0.0);
    else p.push_back(std::polar(beta, 2 * M_PI * k / N));
  }
  return p;
}

template <class R>
std::vector<Mat<R>> contour_coefficients(const std::vector<Mat<std::complex<R>>>& samples, int N, double beta,
                                         bool fft) {
  using C = std::complex<R>;
  if (N < 2 || static_cast<int>(samples.size()) != N / 2 + 1)
    throw std::invalid_argument("contour_coefficients: need N >= 2 and N/2 + 1 samples");
  const Index rows = samples[0].rows(), cols = samples[0].cols(), E = rows * cols;
  std::vector<Mat<R>> c(static_cast<std::size_t>(N), Mat<R>(rows, cols));
  if (fft) {
    // Y_m = Σ_k X_k e^{+2πikm/N} with X_k = conj(a_k) (FFTW's backward c2r) equals the real
    // number Σ_k a_k e^{−2πikm/N} because a_{N−k} = conj(a_k).
    std::vector<C> in(static_cast<std::size_t>((N / 2 + 1) * E));
    for (int k = 0; k <= N / 2; ++k) {
      const C* a = samples[static_cast<std::size_t>(k)].data();
      C* dst = in.data() + k * E;
      for (Index e = 0; e < E; ++e) dst[e] = std::conj(a[e]);
      if (2 * k == N || k == 0)  // the real-axis samples must be real for a c2r input
        for (Index e = 0; e < E; ++e) dst[e] = C(dst[e].real(), 0);
    }
    std::vector<R> out(static_cast<std::size_t>(N * E));
    Fftw<R>::execute(cached_plan<R>(N, E), in.data(), out.data());
    for (int m = 0; m < N; ++m) {
      const R scale = static_cast<R>(1.0 / (N * std::pow(beta, m)));
      c[static_cast<std::size_t>(m)] = Eigen::Map<const Mat<R>>(out.data() + m * E, rows, cols) * scale;
    }
    return c;
  }
  for (int m = 0; m < N; ++m) {
    Mat<C> acc = Mat<C>::Zero(rows, cols);
    for (int k = 0; k < N; ++k) {
      const int kk = k <= N / 2 ? k : N - k;
      const Mat<C>& a = samples[static_cast<std::size_t>(kk)];
      const C w = std::polar(R(1), static_cast<R>(-2 * M_PI * k * m / N));
      if (k <= N / 2) acc += w * a;
      else acc += w * a.conjugate();
    }
    c[static_cast<std::size_t>(m)] = acc.real() * static_cast<R>(1.0 / (N * std::pow(beta, m)));
  }
  return c;
}

template std::vector<Mat<float>> contour_coefficients<float>(const std::vector<Mat<std::complex<float>>>&, int,
                                                             double, bool);
template std::vector<Mat<double>> contour_coefficients<double>(const std::vector<Mat<std::complex<double>>>&, int,
                                                               double, bool);

}  // namespace hepsim
