#pragma once
// The vector field of the network (SPEC 2.1, 2.5).
//
//   G(s, x)_post = Σ_{edges pre->post} K_e s_pre + b_e,     s = σ(u),  s_in = x
//   map:   M(u) = G(σ(u), x) + β e(σ(u))        (e = ∂ℓ/∂s_out on `out`, zero elsewhere)
//   ODE:   du/dt = M(u) − u                     (time constant 1; same fixed points)
//   residual F(u) = M(u) − u
//
// Split for speed: the input part C = Σ_{in->post} K x + Σ_e b_e is constant during a
// relaxation and computed once (`input_drive`); the recurrent part Σ K s_pre (`add_recurrent`)
// is one GEMM per edge over all columns. β has one value per column, so several nudges (the
// contour points of holomorphic EP) relax stacked side by side in the same GEMMs.
#include <vector>

#include "sim/activation.hpp"
#include "sim/network.hpp"
#include "sim/readout.hpp"

namespace hepsim {

// The "physics" of a network: its graph plus the activation and the loss that nudges it.
struct Model {
  Network net;
  Activation activation = Activation::sigmoid;
  Loss loss = Loss::cross_entropy;
};

// C = Σ_{edges in->post} K_e x + Σ_e b_e  (neurons x cols). x: input_size x cols. A conv edge
// from the input adds P(conv_K x + b); a recurrent conv edge's bias is constant too: the
// pooling commutes with a per-channel shift, P(v + c) = P(v) + c.
template <class R>
void input_drive(const Network& net, const Vec<R>& theta, const CMatRef<R>& x, MatRef<R> C);

// Scratch of the convolutional edges: their pre-pool maps z at the last state (one per edge,
// empty for dense edges) and work buffers, sized on first use and reused.
template <class S>
struct ConvCache {
  std::vector<Mat<S>> z;
  std::vector<ConvEdgeWork<S>> work;
};

// g += Σ_{edges pre≠in} (the edge's term at s): K_e s_pre for dense edges, P(conv_K s_pre) for
// conv edges, conv_Bᵀ(P'(conv_B s_post)ᵀ s_pre) for conv_feedback edges. For dense networks this
// is also the Jacobian-vector product J_G s (state-independent); a conv network's G is nonlinear
// in s. `cache` holds the conv edges' scratch (a temporary one when null).
template <class S>
void add_recurrent(const Network& net, const Vec<RealOf<S>>& theta, const CMatRef<S>& s, MatRef<S> g,
                   ConvCache<S>* cache = nullptr);

// ---- The linearisation of G at an activated state s (every network) ----
// J_G(s) is K_e for dense edges; for conv edges it depends on s through the pre-pool maps z,
// which `linearize` computes into `cache` (the calls below then use them: same s).
//   add_jvp:        g += J_G(s) v
//   add_vjp:        g += J_G(s)ᵀ w            (non-conjugating transpose: holomorphic)
//   add_param_vjp:  grad += weight · ∂⟨v, G(s, x; θ)⟩/∂θ   (every kernel and bias, or only the
//                   recurrent edges' with recurrent_only; for complex s, v the holomorphic
//                   extension, grad complex: a complex step s + ihb gives ∂θ⟨v, J_G b⟩ as Im/h)
template <class S>
void linearize(const Network& net, const Vec<RealOf<S>>& theta, const CMatRef<S>& s, ConvCache<S>& cache);
template <class S>
void add_jvp(const Network& net, const Vec<RealOf<S>>& theta, const CMatRef<S>& s, ConvCache<S>& cache,
             const CMatRef<S>& v, MatRef<S> g);
template <class S>
void add_vjp(const Network& net, const Vec<RealOf<S>>& theta, const CMatRef<S>& s, ConvCache<S>& cache,
             const CMatRef<S>& w, MatRef<S> g);
template <class S>
void add_param_vjp(const Network& net, const Vec<RealOf<S>>& theta, const CMatRef<S>& x, const CMatRef<S>& s,
                   ConvCache<S>& cache, const CMatRef<S>& v, S weight, Vec<S>& grad, bool recurrent_only = false);

// g += J_Gᵀ w, i.e. g_pre += K_eᵀ w_post (non-conjugating transpose: holomorphic). Dense
// networks only (a conv network's Jacobian depends on the state: add_vjp).
template <class S>
void add_recurrent_transpose(const Network& net, const Vec<RealOf<S>>& theta, const CMatRef<S>& w, MatRef<S> g);

// Evaluates M(u) for a fixed batch problem. Holds references to its inputs (they must outlive it)
// and owns its scratch buffers, so repeated evaluations allocate nothing.
template <class S>
class Field {
 public:
  using R = RealOf<S>;
  // drive: C (neurons x cols); y: targets (classes x cols); beta: one nudge per column.
  Field(const Model& model, const Vec<R>& theta, const CMatRef<R>& drive, const CMatRef<R>& y,
        const CVecRef<S>& beta);

  Index cols() const { return drive_.cols(); }
  Index rows() const { return drive_.rows(); }

  // out = M(u) (out must not alias u). Columns listed as frozen get out = u.
  void map(const Mat<S>& u, Mat<S>& out);
  // Odeint system: dudt = M(u) − u; frozen columns get 0.
  void operator()(const Mat<S>& u, Mat<S>& dudt, R /*t*/);

  Index evaluations() const { return evals_; }
  // Freeze a column (a diverged sample): it no longer moves. Cleared by `unfreeze_all`.
  void freeze(Index col);
  void unfreeze_all();
  bool frozen(Index col) const { return !frozen_.empty() && frozen_[static_cast<std::size_t>(col)]; }

  const Model& model() const { return model_; }
  const Vec<R>& theta() const { return theta_; }
  const CMatRef<R>& drive() const { return drive_; }
  const CMatRef<R>& y() const { return y_; }
  const CVecRef<S>& beta() const { return beta_; }
  bool nudged() const { return nudged_; }
  // Evaluations performed outside map() by an equivalent engine (the fused map).
  void count_evaluations(Index n) { evals_ += n; }

 private:
  const Model& model_;
  const Vec<R>& theta_;
  CMatRef<R> drive_;
  CMatRef<R> y_;
  CVecRef<S> beta_;
  bool nudged_ = false;
  Mat<S> s_;      // σ(u)
  Mat<S> work_;   // classes x cols (readout)
  ConvCache<S> conv_;
  std::vector<char> frozen_;
  bool any_frozen_ = false;
  Index evals_ = 0;
};

}  // namespace hepsim
