#include "sim/field.hpp"

#include <stdexcept>

namespace hepsim {

namespace {
// Calls f(e, edge, pre layer, post layer, K) for every edge whose pre is a state layer (not "in").
template <class R, class F>
void for_recurrent_edges(const Network& net, const Vec<R>& theta, F&& f) {
  for (std::size_t e = 0; e < net.edges.size(); ++e) {
    const Edge& ed = net.edges[e];
    if (ed.pre == Network::kInput) continue;
    f(e, ed, net.layers[static_cast<std::size_t>(ed.pre)], net.layers[static_cast<std::size_t>(ed.post)],
      kernel(net, theta, static_cast<int>(e)));
  }
}

template <class S>
void size_cache(const Network& net, ConvCache<S>& cache) {
  if (cache.z.size() != net.edges.size()) {
    cache.z.resize(net.edges.size());
    cache.work.resize(net.edges.size());
  }
}
}  // namespace

template <class R>
void input_drive(const Network& net, const Vec<R>& theta, const CMatRef<R>& x, MatRef<R> C) {
  C.setZero();
  for (std::size_t e = 0; e < net.edges.size(); ++e) {
    const Edge& ed = net.edges[e];
    const Layer& post = net.layers[static_cast<std::size_t>(ed.post)];
    auto Cp = C.middleRows(post.offset, post.size);
    const Eigen::Map<const Vec<R>> bias(theta.data() + (ed.bias ? ed.b_offset : 0), ed.bias ? ed.rows : 0);
    if (!ed.is_conv()) {
      if (ed.pre == Network::kInput) Cp.noalias() += kernel(net, theta, static_cast<int>(e)) * x;
      if (ed.bias) Cp.colwise() += bias;
    } else if (ed.pre == Network::kInput) {  // constant during a relaxation: P(conv_K x + b)
      Mat<R> z;
      ConvEdgeWork<R> work;
      conv_edge_apply<R>(ed.conv, kernel(net, theta, static_cast<int>(e)), bias, x, Cp, z, work);
    } else if (ed.bias) {  // P(conv_K s + b) = P(conv_K s) + b: the bias joins the drive
      const Index area = post.shape.h * post.shape.w;
      for (Index c = 0; c < post.shape.c; ++c) Cp.middleRows(c * area, area).array() += bias(c);
    }
  }
}

template <class S>
void add_recurrent(const Network& net, const Vec<RealOf<S>>& theta, const CMatRef<S>& s, MatRef<S> g,
                   ConvCache<S>* cache) {
  ConvCache<S> local;
  if (cache == nullptr) cache = &local;
  if (net.has_conv()) size_cache(net, *cache);
  using R = RealOf<S>;
  for_recurrent_edges(net, theta, [&](std::size_t e, const Edge& ed, const Layer& pre, const Layer& post,
                                      const auto& K) {
    switch (ed.kind) {
      case EdgeKind::dense:
      case EdgeKind::dense_nobias:
        g.middleRows(post.offset, post.size).noalias() += K * s.middleRows(pre.offset, pre.size);
        break;
      case EdgeKind::conv:  // the bias is in the drive
        conv_edge_apply<S>(ed.conv, K, Eigen::Map<const Vec<R>>(nullptr, 0), s.middleRows(pre.offset, pre.size),
                           g.middleRows(post.offset, post.size), cache->z[e], cache->work[e]);
        break;
      case EdgeKind::conv_feedback:  // pre is the upper layer, post the lower one
        conv_feedback_apply<S>(ed.conv, K, s.middleRows(post.offset, post.size), s.middleRows(pre.offset, pre.size),
                               g.middleRows(post.offset, post.size), cache->z[e], cache->work[e]);
        break;
    }
  });
}

template <class S>
void linearize(const Network& net, const Vec<RealOf<S>>& theta, const CMatRef<S>& s, ConvCache<S>& cache) {
  if (!net.has_conv()) return;
  size_cache(net, cache);
  for (std::size_t e = 0; e < net.edges.size(); ++e) {
    const Edge& ed = net.edges[e];
    if (!ed.is_conv() || ed.pre == Network::kInput) continue;
    // z = conv_K(s_pre) (forward) or conv_B(s_lower) (feedback: the lower layer is its post)
    const Layer& src = net.layers[static_cast<std::size_t>(ed.kind == EdgeKind::conv ? ed.pre : ed.post)];
    Mat<S>& z = cache.z[e];
    z.resize(ed.conv.conv.out().size(), s.cols());
    conv_forward<S>(ed.conv.conv, kernel(net, theta, static_cast<int>(e)), s.middleRows(src.offset, src.size), z,
                    cache.work[e].conv);
  }
}

template <class S>
void add_jvp(const Network& net, const Vec<RealOf<S>>& theta, const CMatRef<S>& s, ConvCache<S>& cache,
             const CMatRef<S>& v, MatRef<S> g) {
  for_recurrent_edges(net, theta, [&](std::size_t e, const Edge& ed, const Layer& pre, const Layer& post,
                                      const auto& K) {
    switch (ed.kind) {
      case EdgeKind::dense:
      case EdgeKind::dense_nobias:
        g.middleRows(post.offset, post.size).noalias() += K * v.middleRows(pre.offset, pre.size);
        break;
      case EdgeKind::conv:
        conv_edge_jvp<S>(ed.conv, K, cache.z[e], v.middleRows(pre.offset, pre.size), g.middleRows(post.offset, post.size),
                         cache.work[e]);
        break;
      case EdgeKind::conv_feedback:
        conv_feedback_jvp<S>(ed.conv, K, cache.z[e], s.middleRows(pre.offset, pre.size),
                             v.middleRows(post.offset, post.size), v.middleRows(pre.offset, pre.size),
                             g.middleRows(post.offset, post.size), cache.work[e]);
        break;
    }
  });
}

template <class S>
void add_vjp(const Network& net, const Vec<RealOf<S>>& theta, const CMatRef<S>& s, ConvCache<S>& cache,
             const CMatRef<S>& w, MatRef<S> g) {
  for_recurrent_edges(net, theta, [&](std::size_t e, const Edge& ed, const Layer& pre, const Layer& post,
                                      const auto& K) {
    switch (ed.kind) {
      case EdgeKind::dense:
      case EdgeKind::dense_nobias:
        g.middleRows(pre.offset, pre.size).noalias() += K.transpose() * w.middleRows(post.offset, post.size);
        break;
      case EdgeKind::conv:
        conv_edge_vjp<S>(ed.conv, K, cache.z[e], w.middleRows(post.offset, post.size), g.middleRows(pre.offset, pre.size),
                         cache.work[e]);
        break;
      case EdgeKind::conv_feedback:  // the term lives on post (lower) and depends on post and pre (upper)
        conv_feedback_vjp<S>(ed.conv, K, cache.z[e], s.middleRows(pre.offset, pre.size),
                             w.middleRows(post.offset, post.size), g.middleRows(post.offset, post.size),
                             g.middleRows(pre.offset, pre.size), cache.work[e]);
        break;
    }
  });
}

template <class S>
void add_param_vjp(const Network& net, const Vec<RealOf<S>>& theta, const CMatRef<S>& x, const CMatRef<S>& s,
                   ConvCache<S>& cache, const CMatRef<S>& v, S weight, Vec<S>& grad, bool recurrent_only) {
  using R = RealOf<S>;
  for (std::size_t e = 0; e < net.edges.size(); ++e) {
    const Edge& ed = net.edges[e];
    if (recurrent_only && ed.pre == Network::kInput) continue;
    const Layer& post = net.layers[static_cast<std::size_t>(ed.post)];
    const auto v_post = v.middleRows(post.offset, post.size);
    const bool from_input = ed.pre == Network::kInput;
    const auto pre_state = [&]() -> CMatRef<S> {
      if (from_input) return x;
      const Layer& pre = net.layers[static_cast<std::size_t>(ed.pre)];
      return s.middleRows(pre.offset, pre.size);
    };
    Eigen::Map<Mat<S>> gK(grad.data() + ed.k_offset, ed.rows, ed.cols);
    Eigen::Map<Vec<S>> gb(grad.data() + (ed.bias ? ed.b_offset : 0), ed.bias ? ed.rows : 0);
    const auto K = kernel(net, theta, static_cast<int>(e));
    switch (ed.kind) {
      case EdgeKind::dense:
      case EdgeKind::dense_nobias:
        gK.noalias() += weight * v_post * pre_state().transpose();
        if (ed.bias) gb += weight * v_post.rowwise().sum();
        break;
      case EdgeKind::conv: {
        size_cache(net, cache);
        if (from_input) {  // its z (at x) is not part of the linearisation at s
          Mat<S> scratch = Mat<S>::Zero(post.size, x.cols());
          conv_edge_apply<S>(ed.conv, K, Eigen::Map<const Vec<R>>(nullptr, 0), x, scratch, cache.z[e], cache.work[e]);
        }
        // P' does not see the bias (P(v + c) = P(v) + c), so z without it serves.
        conv_edge_param_vjp<S>(ed.conv, pre_state(), cache.z[e], Mat<S>(weight * v_post), gK, gb, cache.work[e]);
        break;
      }
      case EdgeKind::conv_feedback: {
        const Layer& up = net.layers[static_cast<std::size_t>(ed.pre)];
        conv_feedback_param_vjp<S>(ed.conv, K, s.middleRows(post.offset, post.size), cache.z[e],
                                   s.middleRows(up.offset, up.size), Mat<S>(weight * v_post), gK, cache.work[e]);
        break;
      }
    }
  }
}

template <class S>
void add_recurrent_transpose(const Network& net, const Vec<RealOf<S>>& theta, const CMatRef<S>& w, MatRef<S> g) {
  if (net.has_conv())
    throw std::invalid_argument("add_recurrent_transpose: a conv network's Jacobian depends on the state");
  ConvCache<S> none;  // a dense network's Jacobian needs no state
  add_vjp<S>(net, theta, w, none, w, g);
}

template <class S>
Field<S>::Field(const Model& model, const Vec<R>& theta, const CMatRef<R>& drive, const CMatRef<R>& y,
                const CVecRef<S>& beta)
    : model_(model), theta_(theta), drive_(drive), y_(y), beta_(beta) {
  eigen_assert(drive.rows() == model.net.neurons);
  eigen_assert(y.cols() == drive.cols() && beta.size() == drive.cols());
  nudged_ = (beta.array() != S(0)).any();
  s_.resize(drive.rows(), drive.cols());
  work_.resize(model.net.classes, drive.cols());
}

template <class S>
void Field<S>::map(const Mat<S>& u, Mat<S>& out) {
  const Network& net = model_.net;
  activate<S>(model_.activation, u, s_);
  out = drive_.template cast<S>();
  add_recurrent<S>(net, theta_, s_, out, &conv_);
  if (nudged_) {
    const Layer& o = net.layers[static_cast<std::size_t>(net.out)];
    add_loss_gradient<S>(net, theta_, model_.loss, s_.middleRows(o.offset, o.size), y_, beta_,
                         out.middleRows(o.offset, o.size), work_);
  }
  if (any_frozen_)
    for (Index j = 0; j < u.cols(); ++j)
      if (frozen_[static_cast<std::size_t>(j)]) out.col(j) = u.col(j);
  ++evals_;
}

template <class S>
void Field<S>::operator()(const Mat<S>& u, Mat<S>& dudt, R /*t*/) {
  map(u, dudt);
  dudt -= u;  // frozen columns: M(u) = u, so du/dt = 0 exactly
}

template <class S>
void Field<S>::freeze(Index col) {
  if (frozen_.empty()) frozen_.assign(static_cast<std::size_t>(cols()), 0);
  frozen_[static_cast<std::size_t>(col)] = 1;
  any_frozen_ = true;
}

template <class S>
void Field<S>::unfreeze_all() {
  frozen_.clear();
  any_frozen_ = false;
}

template void input_drive<float>(const Network&, const Vec<float>&, const CMatRef<float>&, MatRef<float>);
template void input_drive<double>(const Network&, const Vec<double>&, const CMatRef<double>&, MatRef<double>);
#define HEPSIM_INSTANTIATE(S)                                                                            \
  template void add_recurrent<S>(const Network&, const Vec<RealOf<S>>&, const CMatRef<S>&, MatRef<S>,     \
                                 ConvCache<S>*);                                                         \
  template void add_recurrent_transpose<S>(const Network&, const Vec<RealOf<S>>&, const CMatRef<S>&,     \
                                           MatRef<S>);                                                   \
  template void add_param_vjp<S>(const Network&, const Vec<RealOf<S>>&, const CMatRef<S>&, const CMatRef<S>&,   \
                                 ConvCache<S>&, const CMatRef<S>&, S, Vec<S>&, bool);                     \
  template void linearize<S>(const Network&, const Vec<RealOf<S>>&, const CMatRef<S>&, ConvCache<S>&);    \
  template void add_jvp<S>(const Network&, const Vec<RealOf<S>>&, const CMatRef<S>&, ConvCache<S>&,         \
                           const CMatRef<S>&, MatRef<S>);                                                   \
  template void add_vjp<S>(const Network&, const Vec<RealOf<S>>&, const CMatRef<S>&, ConvCache<S>&,         \
                           const CMatRef<S>&, MatRef<S>);                                                   \
  template class Field<S>;
HEPSIM_INSTANTIATE(float)
HEPSIM_INSTANTIATE(double)
HEPSIM_INSTANTIATE(std::complex<float>)
HEPSIM_INSTANTIATE(std::complex<double>)
#undef HEPSIM_INSTANTIATE

}  // namespace hepsim
