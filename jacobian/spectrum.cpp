// Spectrum of a dense Jacobian and the whole analysis behind `hepsim jacobian`.
#include <Eigen/Eigenvalues>
#include <algorithm>
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

JacobianAnalysis analyse_jacobian(const Model& model, const Vec<double>& theta, const Mat<double>& x,
                                  const AnalysisConfig& cfg) {
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
  r.jac = spectrum(H - Mat<double>::Identity(n, n));

  // Dynamics: the rightmost eigenvalue of J_G D − I at each sample's free fixed point.
  const Index B = x.cols();
  r.samples = B;
  if (B == 0) return r;
  Mat<double> drive(n, B);
  input_drive<double>(net, theta, x, drive);
  const Mat<double> y = Mat<double>::Zero(net.classes, B);  // unused: β = 0
  const Vec<double> beta = Vec<double>::Zero(B);
  Field<double> field(model, theta, drive, y, beta);
  Mat<double> u = Mat<double>::Zero(n, B);
  RelaxConfig rc;
  rc.solver = cfg.solver;
  rc.tol = cfg.tol;
  rc.max_steps = cfg.max_steps;
  rc.dt = cfg.dt;
  rc.stall_window = cfg.stall_window;
  rc.progress = cfg.progress;
  const RelaxResult rr = relax(field, u, rc);
  r.free_status = rr.status;
  Mat<double> d(n, B);
  activate_deriv<double>(model.activation, u, d);
  std::vector<std::complex<double>> rightmost(static_cast<std::size_t>(B));
  std::vector<char> ok(static_cast<std::size_t>(B), 0);
  std::exception_ptr error;  // an exception must not leave an OpenMP region
  // One dense eigenproblem per sample, independent: one per thread.
#pragma omp parallel for schedule(dynamic, 1)
  for (Index j = 0; j < B; ++j) try {
    if (rr.status[static_cast<std::size_t>(j)] != RelaxStatus::converged) continue;
    Mat<double> Jd = H * d.col(j).asDiagonal();
    Jd.diagonal().array() -= 1.0;
    rightmost[static_cast<std::size_t>(j)] = spectrum(Jd).max_real;
    ok[static_cast<std::size_t>(j)] = 1;
  } catch (...) {
#pragma omp critical
    error = std::current_exception();
  }
  if (error) std::rethrow_exception(error);
  for (Index j = 0; j < B; ++j) {
    if (!ok[static_cast<std::size_t>(j)]) continue;
    ++r.converged;
    const auto& z = rightmost[static_cast<std::size_t>(j)];
    r.unstable += z.real() > 0;
    if (!r.max_real_eig_dynamics || z.real() > r.max_real_eig_dynamics->real()) r.max_real_eig_dynamics = z;
  }
  return r;
}

}  // namespace hepsim
