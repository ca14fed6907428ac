// Exact references (RBP adjoint, exact response, dense solves, truncated BPTT), parameter
// gradients and the EP / holomorphic EP estimators. See ep/estimators.hpp for the equations.
#include "ep/estimators.hpp"

#include <Eigen/LU>

#include "ep/krylov.hpp"
#include "jacobian/jacobian.hpp"
#include <stdexcept>

namespace hepsim {
namespace {

template <class R>
const Layer& out_layer(const Network& net) {
  return net.layers[static_cast<std::size_t>(net.out)];
}

// Column-replicates m `copies` times: [m m … m].
template <class M>
auto replicate_cols(const M& m, Index copies) {
  return m.replicate(1, copies).eval();
}

// ∞-norm of a matrix (0 for an empty one).
template <class M>
double inf_norm(const M& m) {
  return m.size() == 0 ? 0.0 : static_cast<double>(m.cwiseAbs().maxCoeff());
}

// J_G at the activated state of one sample, as a dense matrix (small networks): the kernels of a
// dense network, column by column JVPs of a conv network.
template <class R>
Mat<R> jacobian_at(const Network& net, const Vec<R>& theta, const Vec<R>& s) {
  if (!net.has_conv()) return dense_jacobian<R>(net, theta);
  const Index n = net.neurons;
  const Mat<R> S = s.replicate(1, n);
  ConvCache<R> cache;
  linearize<R>(net, theta, S, cache);
  Mat<R> H = Mat<R>::Zero(n, n);
  add_jvp<R>(net, theta, S, cache, Mat<R>::Identity(n, n), H);
  return H;
}

// Per column b: solves (I − D_b M) v_b = D_b g_b, with M = J_G or J_Gᵀ at the sample's state
// (small networks).
template <class R>
Mat<R> dense_solve(const Model& model, const Vec<R>& theta, const CMatRef<R>& u_star, const CMatRef<R>& y,
                   bool transposed) {
  const bool per_sample = model.net.has_conv();  // a conv network's Jacobian depends on the state
  Mat<R> D(u_star.rows(), u_star.cols()), S(u_star.rows(), u_star.cols());
  activate_deriv<R>(model.activation, u_star, D);
  activate<R>(model.activation, u_star, S);
  Mat<R> H = per_sample ? Mat<R>() : dense_jacobian<R>(model.net, theta);
  const Mat<R> g = loss_gradient_s<R>(model, theta, u_star, y);
  Mat<R> v(u_star.rows(), u_star.cols());
  const Mat<R> I = Mat<R>::Identity(model.net.neurons, model.net.neurons);
  for (Index b = 0; b < u_star.cols(); ++b) {
    throw_if_interrupted();
    if (per_sample) H = jacobian_at<R>(model.net, theta, S.col(b));
    const Mat<R> A = transposed ? Mat<R>(I - D.col(b).asDiagonal() * H.transpose()) : Mat<R>(I - D.col(b).asDiagonal() * H);
    v.col(b) = A.partialPivLu().solve(D.col(b).cwiseProduct(g.col(b)));
  }
  return v;
}

// The linearisation of the map at the states u (neurons x B) for the adjoint problems: D = σ'(u),
// s = σ(u), the conv edges' cache for VJPs and JVPs at s, and the right-hand side D g_s.
template <class R>
struct StateLinearization {
  Mat<R> D, s, Dg;
  ConvCache<R> cache;
  StateLinearization(const Model& model, const Vec<R>& theta, const CMatRef<R>& u, const CMatRef<R>& y)
      : D(u.rows(), u.cols()), s(u.rows(), u.cols()) {
    activate_deriv<R>(model.activation, u, D);
    activate<R>(model.activation, u, s);
    linearize<R>(model.net, theta, s, cache);
    Dg = D.cwiseProduct(loss_gradient_s<R>(model, theta, u, y));
  }
};

// Severity of a status for EstimateResult::status (higher is worse).
int severity(RelaxStatus s) {
  switch (s) {
    case RelaxStatus::converged: return 0;
    case RelaxStatus::max_steps: return 1;
    case RelaxStatus::stalled: return 2;
    case RelaxStatus::cycling: return 3;
    case RelaxStatus::diverged: return 4;
  }
  return 4;
}

}  // namespace

double map_step(const RelaxConfig& cfg) {
  return cfg.solver == Solver::map || cfg.solver == Solver::anderson ? cfg.step() : 1.0;
}

IterationConfig iterations(const RelaxConfig& cfg) { return IterationConfig{cfg.max_steps, cfg.tol, map_step(cfg)}; }

template <class R>
FreeState<R> free_phase(const Model& model, const Vec<R>& theta, const CMatRef<R>& x, const CMatRef<R>& y,
                        const RelaxConfig& cfg, const Mat<R>* start) {
  FreeState<R> fs;
  fs.x = x;
  fs.y = y;
  fs.drive.resize(model.net.neurons, x.cols());
  input_drive<R>(model.net, theta, fs.x, fs.drive);
  if (start) {
    eigen_assert(start->rows() == model.net.neurons && start->cols() == x.cols());
    fs.u = *start;
  } else {
    fs.u = Mat<R>::Zero(model.net.neurons, x.cols());
  }
  const Vec<R> zero = Vec<R>::Zero(x.cols());
  Field<R> field(model, theta, fs.drive, fs.y, zero);
  fs.relax = relax(field, fs.u, cfg);
  return fs;
}

template <class R>
Mat<R> loss_gradient_s(const Model& model, const Vec<R>& theta, const CMatRef<R>& u, const CMatRef<R>& y) {
  const Network& net = model.net;
  Mat<R> s(u.rows(), u.cols()), work;
  activate<R>(model.activation, u, s);
  Mat<R> g = Mat<R>::Zero(u.rows(), u.cols());
  const Layer& o = out_layer<R>(net);
  add_loss_gradient<R>(net, theta, model.loss, s.middleRows(o.offset, o.size), y, Vec<R>::Ones(u.cols()),
                       g.middleRows(o.offset, o.size), work);
  return g;
}

template <class R>
IterationResult<R> rbp_adjoint(const Model& model, const Vec<R>& theta, const CMatRef<R>& u_star,
                               const CMatRef<R>& y, const IterationConfig& cfg) {
  const Network& net = model.net;
  StateLinearization<R> lin(model, theta, u_star, y);  // (the cache is scratch space for the products)
  IterationResult<R> res;
  res.v = Mat<R>::Zero(u_star.rows(), u_star.cols());
  Mat<R> t(u_star.rows(), u_star.cols()), next(u_star.rows(), u_star.cols());
  const bool damped = cfg.dt != 1;
  const R h = static_cast<R>(cfg.dt);
  for (long k = 0; k < cfg.steps; ++k) {
    throw_if_interrupted();  // a host's Ctrl-C (sim/interrupt.hpp)
    t.setZero();
    add_vjp<R>(net, theta, lin.s, lin.cache, res.v, t);
    next = lin.D.cwiseProduct(t) + lin.Dg;
    res.last_update = inf_norm(next - res.v);  // ‖A v + b − v‖∞, before damping (its update may round away)
    if (damped) next = res.v + h * (next - res.v);
    res.v.swap(next);
    ++res.steps;
    if (cfg.tol > 0 && res.last_update <= cfg.tol) break;
  }
  return res;
}

template <class R>
IterationResult<R> exact_response(const Model& model, const Vec<R>& theta, const CMatRef<R>& drive,
                                  const CMatRef<R>& u_start, const CMatRef<R>& y, const IterationConfig& cfg) {
  const Network& net = model.net;
  const Layer& o = out_layer<R>(net);
  const Index n = u_start.rows(), B = u_start.cols();
  ConvCache<R> cache;
  Mat<R> u = u_start, du = Mat<R>::Zero(n, B);
  Mat<R> s(n, B), d(n, B), un(n, B), dun(n, B), work;
  const Vec<R> ones = Vec<R>::Ones(B);
  IterationResult<R> res;
  const bool damped = cfg.dt != 1;
  const R h = static_cast<R>(cfg.dt);
  for (long k = 0; k < cfg.steps; ++k) {
    throw_if_interrupted();  // a host's Ctrl-C (sim/interrupt.hpp)
    activate<R>(model.activation, u, s);
    activate_deriv<R>(model.activation, u, d);
    // u' = M₀(u) = C + G(s);   ú' = J_G(s) (σ'(u) ⊙ ú) + e(s)  (d(βe)/dβ at β = 0 is e)
    un = drive;
    add_recurrent<R>(net, theta, s, un, &cache);
    d = d.cwiseProduct(du);
    dun.setZero();
    linearize<R>(net, theta, s, cache);
    add_jvp<R>(net, theta, s, cache, d, dun);
    add_loss_gradient<R>(net, theta, model.loss, s.middleRows(o.offset, o.size), y, ones,
                         dun.middleRows(o.offset, o.size), work);
    res.last_update = std::max(inf_norm(un - u), inf_norm(dun - du));  // before damping, as above
    if (damped) {
      un = u + h * (un - u);
      dun = du + h * (dun - du);
    }
    u.swap(un);
    du.swap(dun);
    ++res.steps;
    if (cfg.tol > 0 && res.last_update <= cfg.tol) break;
  }
  activate_deriv<R>(model.activation, u, d);
  res.v = d.cwiseProduct(du);
  return res;
}

namespace {
// Per column: solves (I − D M) v = D g_s by GMRES, with M = J_Gᵀ (transposed) or J_G at the state.
template <class R>
IterationResult<R> krylov_solve(const Model& model, const Vec<R>& theta, const CMatRef<R>& u_star, const CMatRef<R>& y,
                                const IterationConfig& cfg, bool transposed) {
  const Network& net = model.net;
  StateLinearization<R> lin(model, theta, u_star, y);  // (the cache is scratch space for the products)
  Mat<R> t(u_star.rows(), u_star.cols());
  const auto apply = [&](const Mat<R>& v, Mat<R>& out) {  // (I − D M) v, M = J_Gᵀ or J_G
    t.setZero();
    if (transposed)
      add_vjp<R>(net, theta, lin.s, lin.cache, v, t);
    else
      add_jvp<R>(net, theta, lin.s, lin.cache, v, t);
    out = v - lin.D.cwiseProduct(t);
  };
  KrylovResult<R> k = gmres<R>(apply, lin.Dg, KrylovConfig{cfg.steps, cfg.tol});
  IterationResult<R> res;
  res.v = std::move(k.x);
  res.steps = k.products;
  res.last_update = k.residual;
  res.column_residual = std::move(k.column_residual);
  return res;
}
}  // namespace

template <class R>
IterationResult<R> rbp_krylov(const Model& model, const Vec<R>& theta, const CMatRef<R>& u_star, const CMatRef<R>& y,
                              const IterationConfig& cfg) {
  return krylov_solve<R>(model, theta, u_star, y, cfg, true);
}

template <class R>
IterationResult<R> exact_response_krylov(const Model& model, const Vec<R>& theta, const CMatRef<R>& u_star,
                                         const CMatRef<R>& y, const IterationConfig& cfg) {
  return krylov_solve<R>(model, theta, u_star, y, cfg, false);
}

template <class R>
Mat<R> rbp_dense(const Model& model, const Vec<R>& theta, const CMatRef<R>& u_star, const CMatRef<R>& y) {
  return dense_solve<R>(model, theta, u_star, y, true);
}

template <class R>
Mat<R> exact_response_dense(const Model& model, const Vec<R>& theta, const CMatRef<R>& u_star, const CMatRef<R>& y) {
  return dense_solve<R>(model, theta, u_star, y, false);
}

template <class R>
void add_parameter_gradient(const Model& model, const Vec<R>& theta, const FreeState<R>& fs, const CMatRef<R>& v,
                            R weight, Vec<R>& grad) {
  const Network& net = model.net;
  Mat<R> s(fs.u.rows(), fs.u.cols());
  activate<R>(model.activation, fs.u, s);
  ConvCache<R> cache;
  linearize<R>(net, theta, s, cache);
  add_param_vjp<R>(net, theta, fs.x, s, cache, v, weight, grad);
  const Layer& o = out_layer<R>(net);
  add_readout_gradient<R>(net, theta, model.loss, s.middleRows(o.offset, o.size), fs.y, weight, grad);
}

template <class R>
Vec<R> parameter_gradient(const Model& model, const Vec<R>& theta, const FreeState<R>& fs, const CMatRef<R>& v) {
  Vec<R> grad = Vec<R>::Zero(model.net.n_params);
  add_parameter_gradient<R>(model, theta, fs, v, R(1) / static_cast<R>(fs.u.cols()), grad);
  return grad;
}

template <class R>
BpttResult<R> truncated_bptt(const Model& model, const Vec<R>& theta, const CMatRef<R>& x, const CMatRef<R>& drive,
                             const CMatRef<R>& u_start, const CMatRef<R>& y, long steps, double dt) {
  const Network& net = model.net;
  const bool damped = dt != 1;
  ConvCache<R> cache;
  const R h = static_cast<R>(dt);
  const Index n = u_start.rows(), B = u_start.cols();
  std::vector<Mat<R>> traj(static_cast<std::size_t>(steps + 1));
  traj[0] = u_start;
  Mat<R> s(n, B), d(n, B), t(n, B);
  for (long k = 0; k < steps; ++k) {
    throw_if_interrupted();  // a host's Ctrl-C (sim/interrupt.hpp)
    activate<R>(model.activation, traj[static_cast<std::size_t>(k)], s);
    Mat<R>& next = traj[static_cast<std::size_t>(k + 1)];
    next = drive;
    add_recurrent<R>(net, theta, s, next, &cache);
    if (damped) next = traj[static_cast<std::size_t>(k)] + h * (next - traj[static_cast<std::size_t>(k)]);
  }
  BpttResult<R> res;
  res.grad = Vec<R>::Zero(net.n_params);
  res.error_sum = Mat<R>::Zero(n, B);
  const R w = R(1) / static_cast<R>(B);
  const Mat<R>& uT = traj.back();
  activate<R>(model.activation, uT, s);
  activate_deriv<R>(model.activation, uT, d);
  const Layer& o = out_layer<R>(net);
  add_readout_gradient<R>(net, theta, model.loss, s.middleRows(o.offset, o.size), y, w, res.grad);
  Mat<R> a = d.cwiseProduct(loss_gradient_s<R>(model, theta, uT, y));  // ∂ℓ/∂u_T
  for (long k = steps - 1; k >= 0; --k) {
    throw_if_interrupted();  // a host's Ctrl-C (sim/interrupt.hpp)
    const Mat<R>& uk = traj[static_cast<std::size_t>(k)];
    activate<R>(model.activation, uk, s);
    activate_deriv<R>(model.activation, uk, d);
    t.setZero();
    linearize<R>(net, theta, s, cache);
    add_vjp<R>(net, theta, s, cache, a, t);
    if (!damped) {
      add_param_vjp<R>(net, theta, x, s, cache, a, w, res.grad);  // u_{k+1} = G(σ(u_k), x; θ)
      res.error_sum += a;
      a = d.cwiseProduct(t);  // ∂ℓ/∂u_k = σ'(u_k) ⊙ J_Gᵀ ∂ℓ/∂u_{k+1}
    } else {
      // u_{k+1} = u_k + dt (G(σ(u_k), x; θ) − u_k): ∂u_{k+1}/∂θ = dt ∂G/∂θ and
      // ∂ℓ/∂u_k = (1 − dt) ∂ℓ/∂u_{k+1} + dt σ'(u_k) ⊙ J_Gᵀ ∂ℓ/∂u_{k+1}.
      add_param_vjp<R>(net, theta, x, s, cache, a, w * h, res.grad);
      res.error_sum += h * a;
      a = (R(1) - h) * a + h * d.cwiseProduct(t);
    }
  }
  return res;
}

namespace {
// The nudged phases of P contour points relax stacked, column p·B + j for point ks[p] of sample j:
// with state noise each such column draws its own noise, keyed on its sample's key and the point.
RelaxConfig stacked(const RelaxConfig& cfg, const std::vector<int>& ks, Index B) {
  RelaxConfig c = cfg;
  if (!cfg.noise.on()) return c;
  c.noise.columns.resize(ks.size() * static_cast<std::size_t>(B));
  for (std::size_t p = 0; p < ks.size(); ++p)
    for (Index j = 0; j < B; ++j)
      c.noise.columns[p * static_cast<std::size_t>(B) + static_cast<std::size_t>(j)] =
          cfg.noise.column_key(static_cast<std::size_t>(j)) * 128 + static_cast<std::uint64_t>(ks[p]) + 1;
  return c;
}
}  // namespace

template <class R>
EstimateResult<R> ep_estimate(const Model& model, const Vec<R>& theta, const FreeState<R>& fs,
                              const EstimatorConfig& cfg) {
  using C = std::complex<R>;
  if (cfg.N < 1) throw std::invalid_argument("ep_estimate: N must be >= 1 (N = 0 is exact_response)");
  if (!(cfg.beta > 0)) throw std::invalid_argument("ep_estimate: |beta| must be > 0");
  const Network& net = model.net;
  const Index n = net.neurons, B = fs.u.cols();
  EstimateResult<R> res;
  res.status.assign(static_cast<std::size_t>(B), RelaxStatus::converged);
  Mat<R> s_star(n, B);
  activate<R>(model.activation, fs.u, s_star);

  auto note = [&](const RelaxResult& r, Index copies) {
    res.steps += r.steps;
    for (Index j = 0; j < copies * B; ++j) {
      const RelaxStatus st = r.status[static_cast<std::size_t>(j)];
      RelaxStatus& worst = res.status[static_cast<std::size_t>(j % B)];
      if (severity(st) > severity(worst)) worst = st;
      // A cycling phase's residual is the orbit's amplitude, not a distance to equilibrium.
      if (st != RelaxStatus::diverged && st != RelaxStatus::cycling) res.max_residual = std::max(res.max_residual, r.residual[j]);
    }
  };

  // The real points: β (and −β when N is even), stacked as [β·1_B | −β·1_B].
  const std::vector<std::complex<double>> pts = cfg.N == 1 ? std::vector<std::complex<double>>{{cfg.beta, 0}}
                                                            : contour_points(cfg.N, cfg.beta);
  std::vector<int> real_k, cplx_k;
  for (int k = 0; k < static_cast<int>(pts.size()); ++k) (pts[static_cast<std::size_t>(k)].imag() == 0 ? real_k : cplx_k).push_back(k);
  res.relaxations = static_cast<long>(pts.size());

  std::vector<Mat<C>> samples(pts.size());
  {
    const Index P = static_cast<Index>(real_k.size());
    const Mat<R> drive = replicate_cols(fs.drive, P), y = replicate_cols(fs.y, P);
    Vec<R> beta(P * B);
    for (Index p = 0; p < P; ++p) beta.segment(p * B, B).setConstant(static_cast<R>(pts[static_cast<std::size_t>(real_k[static_cast<std::size_t>(p)])].real()));
    Mat<R> u = replicate_cols(fs.u, P);
    Field<R> field(model, theta, drive, y, beta);
    note(relax(field, u, stacked(cfg.nudged, real_k, B)), P);
    Mat<R> a(n, P * B);
    activate<R>(model.activation, u, a);
    if (cfg.N == 1) {
      // Classic EP subtracts the free state (trap 3).
      res.v = (a - s_star) / static_cast<R>(cfg.beta);
    } else {
      for (Index p = 0; p < P; ++p) samples[static_cast<std::size_t>(real_k[static_cast<std::size_t>(p)])] = a.middleCols(p * B, B).template cast<C>();
    }
  }
  if (!cplx_k.empty()) {
    const Index P = static_cast<Index>(cplx_k.size());
    const Mat<R> drive = replicate_cols(fs.drive, P), y = replicate_cols(fs.y, P);
    Vec<C> beta(P * B);
    for (Index p = 0; p < P; ++p) {
      const auto b = pts[static_cast<std::size_t>(cplx_k[static_cast<std::size_t>(p)])];
      beta.segment(p * B, B).setConstant(C(static_cast<R>(b.real()), static_cast<R>(b.imag())));
    }
    Mat<C> u = replicate_cols(fs.u, P).template cast<C>();
    Field<C> field(model, theta, drive, y, beta);
    note(relax(field, u, stacked(cfg.nudged, cplx_k, B)), P);
    Mat<C> a(n, P * B);
    activate<C>(model.activation, u, a);
    for (Index p = 0; p < P; ++p) samples[static_cast<std::size_t>(cplx_k[static_cast<std::size_t>(p)])] = a.middleCols(p * B, B);
  }
  if (cfg.N >= 2) {
    std::vector<Mat<R>> c = contour_coefficients<R>(samples, cfg.N, cfg.beta);
    res.v = c[1];
    if (cfg.N >= 3) res.curvature = c[2];
    if (cfg.keep_coefficients) res.coefficients = std::move(c);
  }
  for (Index b = 0; b < B; ++b) {
    const RelaxStatus st = res.status[static_cast<std::size_t>(b)];
    if (st != RelaxStatus::diverged && st != RelaxStatus::cycling) continue;
    ++(st == RelaxStatus::diverged ? res.n_diverged : res.n_cycling);
    res.v.col(b).setZero();
    if (res.curvature.size()) res.curvature.col(b).setZero();
    for (auto& cm : res.coefficients) cm.col(b).setZero();
  }
  return res;
}

#define HEPSIM_INSTANTIATE(R)                                                                                    \
  template FreeState<R> free_phase<R>(const Model&, const Vec<R>&, const CMatRef<R>&, const CMatRef<R>&,          \
                                      const RelaxConfig&, const Mat<R>*);                                                       \
  template Mat<R> loss_gradient_s<R>(const Model&, const Vec<R>&, const CMatRef<R>&, const CMatRef<R>&);          \
  template IterationResult<R> rbp_adjoint<R>(const Model&, const Vec<R>&, const CMatRef<R>&, const CMatRef<R>&,   \
                                             const IterationConfig&);                                            \
  template IterationResult<R> exact_response<R>(const Model&, const Vec<R>&, const CMatRef<R>&, const CMatRef<R>&, \
                                                const CMatRef<R>&, const IterationConfig&);                      \
  template IterationResult<R> rbp_krylov<R>(const Model&, const Vec<R>&, const CMatRef<R>&, const CMatRef<R>&,     \
                                            const IterationConfig&);                                             \
  template IterationResult<R> exact_response_krylov<R>(const Model&, const Vec<R>&, const CMatRef<R>&,             \
                                                       const CMatRef<R>&, const IterationConfig&);               \
  template Mat<R> rbp_dense<R>(const Model&, const Vec<R>&, const CMatRef<R>&, const CMatRef<R>&);                \
  template Mat<R> exact_response_dense<R>(const Model&, const Vec<R>&, const CMatRef<R>&, const CMatRef<R>&);     \
  template BpttResult<R> truncated_bptt<R>(const Model&, const Vec<R>&, const CMatRef<R>&, const CMatRef<R>&,     \
                                           const CMatRef<R>&, const CMatRef<R>&, long, double);                       \
  template Vec<R> parameter_gradient<R>(const Model&, const Vec<R>&, const FreeState<R>&, const CMatRef<R>&);     \
  template void add_parameter_gradient<R>(const Model&, const Vec<R>&, const FreeState<R>&, const CMatRef<R>&, R,  \
                                          Vec<R>&);                                                              \
  template EstimateResult<R> ep_estimate<R>(const Model&, const Vec<R>&, const FreeState<R>&,                     \
                                            const EstimatorConfig&);
HEPSIM_INSTANTIATE(float)
HEPSIM_INSTANTIATE(double)
#undef HEPSIM_INSTANTIATE

}  // namespace hepsim
