// Jacobian products, block norms, the Hutchinson estimators and the homeostatic gradients
// (see jacobian.hpp for the equations).
#include "jacobian/jacobian.hpp"

#include <cmath>

namespace hepsim {
namespace {

const Layer& layer(const Network& net, int l) { return net.layers[static_cast<std::size_t>(l)]; }

// Running mean and variance (Welford) of per-probe values, in double whatever R is.
struct Moments {
  Index n = 0;
  double mean = 0, m2 = 0;
  void add(double x) {
    ++n;
    const double d = x - mean;
    mean += d / static_cast<double>(n);
    m2 += d * (x - mean);
  }
  double variance() const { return n > 1 ? m2 / static_cast<double>(n - 1) : 0.0; }
  double std_error() const { return n > 0 ? std::sqrt(variance() / static_cast<double>(n)) : 0.0; }
};

}  // namespace

// ---- products and dense matrices ------------------------------------------------------------

template <class R>
void jvp(const Network& net, const Vec<R>& theta, const CMatRef<R>& v, MatRef<R> out) {
  require_dense(net, "the Jacobian analysis");
  eigen_assert(v.rows() == net.neurons && out.rows() == net.neurons && out.cols() == v.cols());
  out.setZero();
  add_recurrent<R>(net, theta, v, out);
}

template <class R>
void vjp(const Network& net, const Vec<R>& theta, const CMatRef<R>& w, MatRef<R> out) {
  require_dense(net, "the Jacobian analysis");
  eigen_assert(w.rows() == net.neurons && out.rows() == net.neurons && out.cols() == w.cols());
  out.setZero();
  add_recurrent_transpose<R>(net, theta, w, out);
}

template <class R>
Mat<R> dense_jacobian(const Network& net, const Vec<R>& theta) {
  require_dense(net, "the Jacobian analysis");
  Mat<R> H = Mat<R>::Zero(net.neurons, net.neurons);
  for (std::size_t e = 0; e < net.edges.size(); ++e) {
    const Edge& ed = net.edges[e];
    if (ed.pre == Network::kInput) continue;
    // No duplicate edges (compile() rejects them): each block has at most one kernel.
    H.block(layer(net, ed.post).offset, layer(net, ed.pre).offset, ed.rows, ed.cols) =
        kernel(net, theta, static_cast<int>(e));
  }
  return H;
}

template <class R>
Mat<R> map_jacobian(const Network& net, const Vec<R>& theta, const CVecRef<R>& d) {
  eigen_assert(d.size() == net.neurons);
  return dense_jacobian(net, theta) * d.asDiagonal();
}

// ---- exact symmetry metrics -----------------------------------------------------------------

double JacobianNorms::jac_sym() const {
  const double s = std::sqrt(s2), a = std::sqrt(a2);
  return s + a > 0 ? s / (s + a) : 1.0;
}

// Block by block, every (post, pre) block of S = (H + Hᵀ)/2 − I and A = (H − Hᵀ)/2 is visited
// once through the edge that owns it (or, for a block that is only the transpose of an edge's,
// through that edge, counted twice since ‖Mᵀ‖ = ‖M‖):
//   reciprocal pair (e, r), e: a -> b   block (b, a): ½(K_e ± K_rᵀ); block (a, b) via edge r
//   edge e without a partner            blocks (b, a) and (a, b): ½K_e and ±½K_eᵀ → 2·¼‖K_e‖²
//   self-loop a -> a                    block (a, a): ½(K ± Kᵀ) (− I in S)
//   layer without a self-loop           block (a, a) of S is −I: ‖·‖² = |a|
// The identity is kept inside its block (no ‖H‖² − 2 tr H + n cancellation).
template <class R>
JacobianNorms exact_norms(const Network& net, const Vec<R>& theta) {
  require_dense(net, "the Jacobian analysis");
  JacobianNorms r;
  r.neurons = net.neurons;
  std::vector<char> self_loop(net.layers.size(), 0);
  for (std::size_t e = 0; e < net.edges.size(); ++e) {
    const Edge& ed = net.edges[e];
    if (ed.pre == Network::kInput) continue;
    const Mat<double> K = kernel(net, theta, static_cast<int>(e)).template cast<double>();
    if (ed.pre == ed.post) {
      self_loop[static_cast<std::size_t>(ed.pre)] = 1;
      r.s2 += (0.5 * (K + K.transpose()) - Mat<double>::Identity(ed.rows, ed.cols)).squaredNorm();
      r.a2 += 0.25 * (K - K.transpose()).squaredNorm();
    } else if (ed.partner >= 0) {
      const auto Kr = kernel(net, theta, ed.partner).template cast<double>();
      r.s2 += 0.25 * (K + Kr.transpose()).squaredNorm();
      r.a2 += 0.25 * (K - Kr.transpose()).squaredNorm();
    } else {
      r.s2 += 0.5 * K.squaredNorm();
      r.a2 += 0.5 * K.squaredNorm();
    }
  }
  for (std::size_t l = 0; l < net.layers.size(); ++l)
    if (!self_loop[l]) r.s2 += static_cast<double>(net.layers[l].size);
  return r;
}

template <class R>
JacobianNorms norms_at_states(const Network& net, const Vec<R>& theta, const CMatRef<R>& s, Index draws,
                              std::uint64_t seed) {
  const Index n = net.neurons, B = s.cols(), P = B * draws;
  JacobianNorms r;
  r.neurons = n;
  if (P == 0) return r;
  Mat<R> states(n, P), E(n, P), Y = Mat<R>::Zero(n, P), Z = Mat<R>::Zero(n, P);
  for (Index d = 0; d < draws; ++d) states.middleCols(d * B, B) = s;
  Rng rng(seed, Stream::probes);
  rng.fill_normal(E.data(), static_cast<std::size_t>(E.size()));
  ConvCache<R> cache;
  linearize<R>(net, theta, states, cache);
  add_jvp<R>(net, theta, states, cache, E, Y);
  add_vjp<R>(net, theta, states, cache, E, Z);
  r.s2 = (R(0.5) * (Y + Z) - E).template cast<double>().squaredNorm() / static_cast<double>(P);
  r.a2 = (R(0.5) * (Y - Z)).template cast<double>().squaredNorm() / static_cast<double>(P);
  return r;
}

template <class R>
Estimate homeo_at_states(const Network& net, const Vec<R>& theta, const CMatRef<R>& s, Index draws, bool exact,
                         std::uint64_t seed, std::uint64_t step, Index first, R weight, Vec<R>* grad) {
  using C = std::complex<R>;
  const Index n = net.neurons, B = s.cols();
  const Index per = exact ? n : draws, P = B * per;  // probe columns: sample j's are j·per … (j+1)·per − 1
  Estimate est;
  est.probes = P;
  if (P == 0) return est;
  Mat<R> states(n, P), E = Mat<R>::Zero(n, P), Y = Mat<R>::Zero(n, P), Z = Mat<R>::Zero(n, P);
  for (Index j = 0; j < B; ++j) {
    states.middleCols(j * per, per).colwise() = s.col(j);
    if (exact) {
      E.middleCols(j * per, per).setIdentity();
    } else {
      Rng rng(seed, Stream::probes, step, static_cast<std::uint64_t>(first + j) + 1);
      rng.fill_normal(E.col(j * per).data(), static_cast<std::size_t>(n * per));
    }
  }
  ConvCache<R> cache;
  linearize<R>(net, theta, states, cache);
  add_jvp<R>(net, theta, states, cache, E, Y);
  add_vjp<R>(net, theta, states, cache, E, Z);
  // ℓ(ε) = ‖Hε‖² − (Hᵀε)ᵀ(Hε) per column; L_h at a state = mean over its probes / n (Hutchinson)
  // or the sum over the basis / n (exact).
  const Vec<double> ell = (Y.cwiseProduct(Y - Z)).colwise().sum().transpose().template cast<double>();
  const double scale = exact ? 1.0 / static_cast<double>(B * n) : 1.0 / static_cast<double>(P * n);
  est.value = ell.sum() * scale;
  if (!exact && P > 1) {
    const double mean = ell.mean();
    est.std_error = std::sqrt((ell.array() - mean).square().sum() / static_cast<double>(P - 1) / static_cast<double>(P)) /
                    static_cast<double>(n);
  }
  if (!grad) return est;
  // grad += weight · scale · Σ_columns [∂θ⟨2Y − Z, H ε⟩ − ∂θ⟨ε, H Y⟩]
  const R h0 = std::is_same_v<R, float> ? R(1e-6) : R(1e-20);
  Vec<C> g(net.n_params);
  const auto directional = [&](const Mat<R>& a, const Mat<R>& b, R sign) {
    const R bmax = b.cwiseAbs().maxCoeff();
    if (!(bmax > 0)) return;
    const R h = h0 / bmax;
    const Mat<C> sc = states.template cast<C>() + C(0, h) * b.template cast<C>();
    ConvCache<C> cc;
    linearize<C>(net, theta, sc, cc);
    g.setZero();
    add_param_vjp<C>(net, theta, Mat<C>(0, P), sc, cc, a.template cast<C>(), C(1), g, true);
    *grad += (sign * weight * static_cast<R>(scale) / h) * g.imag();
  };
  directional(R(2) * Y - Z, E, R(1));
  directional(E, Y, R(-1));
  return est;
}

template <class R>
double homeo_exact(const Network& net, const Vec<R>& theta) {
  return exact_norms(net, theta).homeo();
}

// ∂(½‖H − Hᵀ‖²/n)/∂H = 2(H − Hᵀ)/n, read off each edge's block (see the header).
template <class R>
void add_homeo_exact_gradient(const Network& net, const Vec<R>& theta, R weight, Vec<R>& grad) {
  require_dense(net, "homeostasis");
  eigen_assert(grad.size() == net.n_params && theta.size() == net.n_params);
  const R c = R(2) * weight / static_cast<R>(net.neurons);
  for (std::size_t e = 0; e < net.edges.size(); ++e) {
    const Edge& ed = net.edges[e];
    if (ed.pre == Network::kInput) continue;
    const auto K = kernel(net, theta, static_cast<int>(e));
    auto G = kernel(net, grad, static_cast<int>(e));
    if (ed.pre == ed.post)
      G += c * (K - K.transpose());
    else if (ed.partner >= 0)
      G += c * (K - kernel(net, theta, ed.partner).transpose());
    else
      G += c * K;
  }
}

// ---- random-probe estimates -----------------------------------------------------------------

template <class R>
Probes<R>::Probes(Index neurons, Index probes)
    : E_(Mat<R>::Zero(neurons, probes)), Y_(neurons, probes), Z_(neurons, probes), W_(neurons, probes) {}

template <class R>
void Probes<R>::draw(Rng& rng) {
  R* p = E_.data();
  rng.fill_normal(p, static_cast<std::size_t>(E_.size()));
}

template <class R>
void Probes<R>::apply(const Network& net, const Vec<R>& theta) {
  eigen_assert(E_.rows() == net.neurons);
  jvp<R>(net, theta, E_, Y_);
  vjp<R>(net, theta, E_, Z_);
}

template <class R>
Estimate homeo_hutchinson(const Network& net, const Vec<R>& theta, Probes<R>& probes, R weight, Vec<R>* grad) {
  require_dense(net, "homeostasis");
  probes.apply(net, theta);
  const Mat<R>& E = probes.E_;
  const Mat<R>& Y = probes.Y_;
  const Mat<R>& Z = probes.Z_;
  const Index P = E.cols();
  const double n = static_cast<double>(net.neurons);
  // ℓ_j = ‖Hε_j‖² − (Hᵀε_j)ᵀ(Hε_j) = (Y_j − Z_j)·Y_j.
  Moments m;
  for (Index j = 0; j < P; ++j) m.add(static_cast<double>((Y.col(j) - Z.col(j)).dot(Y.col(j))) / n);
  if (grad != nullptr && P > 0) {
    eigen_assert(grad->size() == net.n_params);
    // ∂ℓ/∂H = 2(Hε)εᵀ − ε(Hε)ᵀ − (Hᵀε)εᵀ = (2Y − Z)Eᵀ − E Yᵀ summed over the probe columns; each
    // edge takes its (post, pre) block: two GEMMs of inner dimension P (for a self-loop the
    // block is diagonal and the same formula holds: the block of H is K itself).
    Mat<R>& W = probes.W_;
    W.noalias() = R(2) * Y - Z;
    const R c = weight / (static_cast<R>(P) * static_cast<R>(net.neurons));
    for (std::size_t e = 0; e < net.edges.size(); ++e) {
      const Edge& ed = net.edges[e];
      if (ed.pre == Network::kInput) continue;
      const Layer& a = layer(net, ed.pre);
      const Layer& b = layer(net, ed.post);
      auto G = kernel(net, *grad, static_cast<int>(e));
      G.noalias() += (c * W.middleRows(b.offset, b.size)) * E.middleRows(a.offset, a.size).transpose();
      G.noalias() -= (c * E.middleRows(b.offset, b.size)) * Y.middleRows(a.offset, a.size).transpose();
    }
  }
  return {m.mean, m.std_error(), P};
}

template <class R>
Estimate jac_sym_estimate(const Network& net, const Vec<R>& theta, Probes<R>& probes) {
  require_dense(net, "the Jacobian analysis");
  probes.apply(net, theta);
  const Mat<R>& E = probes.E();
  const Mat<R>& Y = probes.Y();
  const Mat<R>& Z = probes.Z();
  const Index P = E.cols();
  // Per probe: s_j = ‖Sε_j‖², a_j = ‖Aε_j‖² (means ‖S‖², ‖A‖²), and their sample covariance.
  Moments ms, ma;
  double cov = 0;  // Σ (s_j − s̄)(a_j − ā), accumulated with the running means (Welford)
  for (Index j = 0; j < P; ++j) {
    const double s = static_cast<double>((R(0.5) * (Y.col(j) + Z.col(j)) - E.col(j)).squaredNorm());
    const double a = static_cast<double>((R(0.5) * (Y.col(j) - Z.col(j))).squaredNorm());
    const double ds = s - ms.mean;
    ms.add(s);
    ma.add(a);
    cov += ds * (a - ma.mean);
  }
  const double s2 = ms.mean, a2 = ma.mean;
  const double s = std::sqrt(s2), a = std::sqrt(a2);
  Estimate est{s + a > 0 ? s / (s + a) : 1.0, 0.0, P};
  if (P > 1 && s > 0 && a > 0) {
    // Delta method: f(s2, a2) = √s2 / (√s2 + √a2),
    //   ∂f/∂s2 = √a2 / (2√s2 (√s2 + √a2)²),  ∂f/∂a2 = −√s2 / (2√a2 (√s2 + √a2)²).
    const double d = (s + a) * (s + a);
    const double fs = a / (2 * s * d), fa = -s / (2 * a * d);
    const double vs = ms.variance(), va = ma.variance(), csa = cov / static_cast<double>(P - 1);
    const double var = fs * fs * vs + 2 * fs * fa * csa + fa * fa * va;
    est.std_error = std::sqrt(std::max(0.0, var) / static_cast<double>(P));
  }
  return est;
}

// ---- the training-loop entry point ----------------------------------------------------------

template <class R>
Homeostasis<R>::Homeostasis(const Network& net, const HomeoConfig& cfg, Index batch)
    : net_(net), cfg_(cfg), probes_(net.neurons, cfg.mode == HomeoMode::hutchinson ? cfg.draws * batch : 0) {
  eigen_assert(cfg.draws >= 1 && batch >= 1);
}

// The number of probes is fixed at draws × batch: H does not depend on the samples (dense
// networks), so a smaller last batch would change nothing but the noise level.
template <class R>
Estimate Homeostasis<R>::add_gradient(const Vec<R>& theta, std::uint64_t seed, std::uint64_t step, Vec<R>& grad) {
  const R lambda = static_cast<R>(cfg_.lambda);
  switch (cfg_.mode) {
    case HomeoMode::exact:
      add_homeo_exact_gradient<R>(net_, theta, lambda, grad);
      return {homeo_exact<R>(net_, theta), 0.0, 0};
    case HomeoMode::hutchinson: {
      Rng rng(seed, Stream::probes, step);
      probes_.draw(rng);
      return homeo_hutchinson<R>(net_, theta, probes_, lambda, &grad);
    }
  }
  return {};
}

#define HEPSIM_INSTANTIATE(R)                                                                              \
  template void jvp<R>(const Network&, const Vec<R>&, const CMatRef<R>&, MatRef<R>);                       \
  template void vjp<R>(const Network&, const Vec<R>&, const CMatRef<R>&, MatRef<R>);                       \
  template Mat<R> dense_jacobian<R>(const Network&, const Vec<R>&);                                        \
  template Mat<R> map_jacobian<R>(const Network&, const Vec<R>&, const CVecRef<R>&);                       \
  template JacobianNorms exact_norms<R>(const Network&, const Vec<R>&);                                    \
  template JacobianNorms norms_at_states<R>(const Network&, const Vec<R>&, const CMatRef<R>&, Index,          \
                                            std::uint64_t);                                                \
  template Estimate homeo_at_states<R>(const Network&, const Vec<R>&, const CMatRef<R>&, Index, bool,       \
                                       std::uint64_t, std::uint64_t, Index, R, Vec<R>*);                    \
  template double homeo_exact<R>(const Network&, const Vec<R>&);                                           \
  template void add_homeo_exact_gradient<R>(const Network&, const Vec<R>&, R, Vec<R>&);                    \
  template class Probes<R>;                                                                                \
  template Estimate homeo_hutchinson<R>(const Network&, const Vec<R>&, Probes<R>&, R, Vec<R>*);            \
  template Estimate jac_sym_estimate<R>(const Network&, const Vec<R>&, Probes<R>&);                        \
  template class Homeostasis<R>;
HEPSIM_INSTANTIATE(float)
HEPSIM_INSTANTIATE(double)
#undef HEPSIM_INSTANTIATE

}  // namespace hepsim
