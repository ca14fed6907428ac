// Spectrum of a dense Jacobian and the whole analysis behind `hepsim jacobian`.
#include <Eigen/Eigenvalues>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <limits>

#include "jacobian/jacobian.hpp"

namespace hepsim {

Spectrum spectrum(const Mat<double>& J) {
  eigen_assert(J.rows() == J.cols());
  Spectrum sp;
  if (J.rows() == 0) return sp;
  // Eigenvalues only: the Henrici departure and the rightmost eigenvalue need no eigenvectors.
  Eigen::EigenSolver<Mat<double>> es(J, /*computeEigenvectors=*/false);
  sp.eigenvalues = es.eigenvalues();
  Index k = 0;
  for (Index i = 1; i < sp.eigenvalues.size(); ++i)
    if (sp.eigenvalues[i].real() > sp.eigenvalues[k].real()) k = i;
  sp.max_real = sp.eigenvalues[k];
  // Henrici: ‖J‖²_F = Σ|λ|² + ‖N‖²_F for the strictly upper part N of a Schur form. The
  // radicand is a difference of two O(‖J‖²) numbers, so it carries a rounding error of about
  // n·ε·‖J‖²: it is clamped at 0, and a normal J gives at most ~sqrt(n·ε) instead of 0.
  const double j2 = J.squaredNorm();
  const double l2 = sp.eigenvalues.squaredNorm();
  sp.henrici = j2 > 0 ? std::sqrt(std::max(0.0, j2 - l2) / j2) : 0.0;
  return sp;
}

namespace {

// The free fixed points of the samples x (β = 0) with the analysis' relaxation settings; their
// count and statuses are recorded in r.
RelaxResult free_states(const Model& model, const Vec<double>& theta, const Mat<double>& x, const AnalysisConfig& cfg,
                        Mat<double>& u, JacobianAnalysis& r) {
  const Network& net = model.net;
  const Index B = x.cols();
  Mat<double> drive(net.neurons, B);
  input_drive<double>(net, theta, x, drive);
  const Mat<double> y = Mat<double>::Zero(net.classes, B);  // unused: β = 0
  const Vec<double> beta = Vec<double>::Zero(B);
  Field<double> field(model, theta, drive, y, beta);
  u = Mat<double>::Zero(net.neurons, B);
  RelaxConfig rc;
  rc.solver = cfg.solver;
  rc.tol = cfg.tol;
  rc.max_steps = cfg.max_steps;
  rc.dt = cfg.dt;
  rc.stall_window = cfg.stall_window;
  rc.progress = cfg.progress;
  RelaxResult rr = relax(field, u, rc);
  r.samples = B;
  r.free_status = rr.status;
  return rr;
}

// Records the rightmost eigenvalue of one sample's linearised dynamics J_G D − I.
void add_dynamics(JacobianAnalysis& r, const std::complex<double>& z) {
  ++r.converged;
  r.unstable += z.real() > 0;
  if (!r.max_real_eig_dynamics || z.real() > r.max_real_eig_dynamics->real()) r.max_real_eig_dynamics = z;
}

// A conv network's H depends on the state: everything is measured at the samples' free states.
// Estimates always (Hutchinson at the states, the probes shared out over the samples); with
// n ≤ max_dense the dense H of each state (n JVPs), its norms averaged over the states, the
// spectrum of J = H − I at the first settled state, and every state's dynamics.
JacobianAnalysis analyse_conv(const Model& model, const Vec<double>& theta, const Mat<double>& x,
                              const AnalysisConfig& cfg) {
  const Network& net = model.net;
  const Index n = net.neurons;
  JacobianAnalysis r;
  r.neurons = n;
  r.weight_angle_deg = weight_angle_deg(net, theta);
  r.jac_sym = r.homeo_exact = std::nan("");
  r.jac_sym_estimate.value = r.jac_sym_estimate.std_error = std::nan("");
  r.homeo_estimate = r.jac_sym_estimate;
  const Index B = x.cols();
  if (B == 0) return r;
  Mat<double> u;
  const RelaxResult rr = free_states(model, theta, x, cfg, u, r);
  std::vector<Index> settled;
  for (Index j = 0; j < B; ++j)
    if (rr.status[static_cast<std::size_t>(j)] == RelaxStatus::converged) settled.push_back(j);
  const Index S = static_cast<Index>(settled.size());
  if (S == 0) return r;
  Mat<double> s(n, S), d(n, S);
  for (Index k = 0; k < S; ++k) {
    const Vec<double> uk = u.col(settled[static_cast<std::size_t>(k)]);
    activate<double>(model.activation, uk, s.col(k));
    activate_deriv<double>(model.activation, uk, d.col(k));
  }
  const Index draws = std::max<Index>(1, cfg.probes / S);
  const JacobianNorms est = norms_at_states<double>(net, theta, s, draws, cfg.seed);
  r.jac_sym_estimate.value = est.jac_sym();
  r.jac_sym_estimate.probes = draws * S;
  r.homeo_estimate = homeo_at_states<double>(net, theta, s, draws, false, cfg.seed, 0, 0, 1.0, nullptr);
  if (n > cfg.max_dense) return r;
  std::vector<Mat<double>> H(static_cast<std::size_t>(S));
  std::vector<std::complex<double>> rightmost(static_cast<std::size_t>(S));
  std::atomic<Index> done{0};
  std::exception_ptr error;  // an exception must not leave an OpenMP region
#pragma omp parallel for schedule(dynamic, 1)
  for (Index k = 0; k < S; ++k) try {
    const Mat<double> states = s.col(k).replicate(1, n);
    ConvCache<double> cache;
    linearize<double>(net, theta, states, cache);
    Mat<double>& h = H[static_cast<std::size_t>(k)];
    h = Mat<double>::Zero(n, n);
    add_jvp<double>(net, theta, states, cache, Mat<double>::Identity(n, n), h);
    Mat<double> Jd = h * d.col(k).asDiagonal();
    Jd.diagonal().array() -= 1.0;
    rightmost[static_cast<std::size_t>(k)] = spectrum(Jd).max_real;
    if (cfg.spectra_progress) cfg.spectra_progress(++done, S + 1);
  } catch (...) {
#pragma omp critical
    error = std::current_exception();
  }
  if (error) std::rethrow_exception(error);
  JacobianNorms exact;
  exact.neurons = n;
  for (Index k = 0; k < S; ++k) {
    const Mat<double>& h = H[static_cast<std::size_t>(k)];
    exact.s2 += ((0.5 * (h + h.transpose())) - Mat<double>::Identity(n, n)).squaredNorm() / static_cast<double>(S);
    exact.a2 += (0.5 * (h - h.transpose())).squaredNorm() / static_cast<double>(S);
    add_dynamics(r, rightmost[static_cast<std::size_t>(k)]);
  }
  r.jac_sym = exact.jac_sym();
  r.homeo_exact = exact.homeo();
  r.jac = spectrum(H[0] - Mat<double>::Identity(n, n));
  if (cfg.spectra_progress) cfg.spectra_progress(S + 1, S + 1);
  return r;
}

}  // namespace

JacobianAnalysis analyse_jacobian(const Model& model, const Vec<double>& theta, const Mat<double>& x,
                                  const AnalysisConfig& cfg) {
  if (model.net.has_conv()) return analyse_conv(model, theta, x, cfg);
  const Network& net = model.net;
  const Index n = net.neurons;
  JacobianAnalysis r;
  r.neurons = n;
  r.weight_angle_deg = weight_angle_deg(net, theta);

  const JacobianNorms norms = exact_norms(net, theta);
  r.jac_sym = norms.jac_sym();
  r.homeo_exact = norms.homeo();

  // Both estimates from the same probes (Y = HE, Z = HᵀE are computed once per call; cheap).
  Probes<double> probes(n, cfg.probes);
  Rng rng(cfg.seed, Stream::probes, 0);
  probes.draw(rng);
  r.jac_sym_estimate = jac_sym_estimate(net, theta, probes);
  r.homeo_estimate = homeo_hutchinson(net, theta, probes);

  if (n > cfg.max_dense) return r;
  const Mat<double> H = dense_jacobian(net, theta);
  const Index B = x.cols();
  const Index total = 1 + B;
  std::atomic<Index> done{0};
  if (cfg.spectra_progress) cfg.spectra_progress(0, total);
  r.jac = spectrum(H - Mat<double>::Identity(n, n));
  if (cfg.spectra_progress) cfg.spectra_progress(++done, total);

  // Dynamics: the rightmost eigenvalue of J_G D − I at each sample's free fixed point.
  if (B == 0) return r;
  Mat<double> u;
  const RelaxResult rr = free_states(model, theta, x, cfg, u, r);
  Mat<double> d(n, B);
  activate_deriv<double>(model.activation, u, d);
  std::vector<std::complex<double>> rightmost(static_cast<std::size_t>(B));
  std::vector<char> ok(static_cast<std::size_t>(B), 0);
  std::exception_ptr error;  // an exception must not leave an OpenMP region
  // One dense eigenproblem per sample, independent: one per thread.
#pragma omp parallel for schedule(dynamic, 1)
  for (Index j = 0; j < B; ++j) try {
    if (rr.status[static_cast<std::size_t>(j)] != RelaxStatus::converged) {
      if (cfg.spectra_progress) cfg.spectra_progress(++done, total);
      continue;
    }
    Mat<double> Jd = H * d.col(j).asDiagonal();
    Jd.diagonal().array() -= 1.0;
    rightmost[static_cast<std::size_t>(j)] = spectrum(Jd).max_real;
    ok[static_cast<std::size_t>(j)] = 1;
    if (cfg.spectra_progress) cfg.spectra_progress(++done, total);
  } catch (...) {
#pragma omp critical
    error = std::current_exception();
  }
  if (error) std::rethrow_exception(error);
  for (Index j = 0; j < B; ++j)
    if (ok[static_cast<std::size_t>(j)]) add_dynamics(r, rightmost[static_cast<std::size_t>(j)]);
  return r;
}

}  // namespace hepsim
