#include "sim/readout.hpp"

#include <cmath>

#include "sim/error.hpp"

namespace hepsim {

Loss parse_loss(const std::string& name, const std::string& where) {
  if (name == "xent" || name == "cross_entropy") return Loss::cross_entropy;
  if (name == "mse") return Loss::mse;
  throw InputError(where, "unknown loss '" + name + "' (expected xent or mse)");
}

const char* to_string(Loss l) { return l == Loss::cross_entropy ? "xent" : "mse"; }

void check_loss(const Network& net, Loss loss, const std::string& where) {
  if (loss == Loss::mse && net.layers[static_cast<std::size_t>(net.out)].size != net.classes)
    throw InputError(where, "mse needs the 'out' layer to have one neuron per class (" +
                                std::to_string(net.classes) + ")");
}

template <class S>
void readout_logits(const Network& net, const Vec<RealOf<S>>& theta, const CMatRef<S>& s_out, MatRef<S> logits) {
  const auto W = readout_weights(net, theta);
  const auto b = readout_bias(net, theta);
  logits.noalias() = W * s_out;
  logits.colwise() += b.template cast<S>();
}

template <class S>
void softmax_columns(MatRef<S> logits) {
  for (Index j = 0; j < logits.cols(); ++j) {
    auto c = logits.col(j);
    RealOf<S> m = std::real(c(0));
    for (Index i = 1; i < c.size(); ++i) m = std::max(m, RealOf<S>(std::real(c(i))));
    c.array() = (c.array() - S(m)).exp();
    c /= c.sum();
  }
}

template <class S>
void add_loss_gradient(const Network& net, const Vec<RealOf<S>>& theta, Loss loss, const CMatRef<S>& s_out,
                       const CMatRef<RealOf<S>>& y, const CVecRef<S>& scale, MatRef<S> g_out, Mat<S>& work) {
  if (loss == Loss::mse) {
    g_out += (s_out - y.template cast<S>()) * scale.asDiagonal();
    return;
  }
  work.resize(net.classes, s_out.cols());
  readout_logits<S>(net, theta, s_out, work);
  softmax_columns<S>(work);
  work -= y.template cast<S>();
  work = work * scale.asDiagonal();
  // Non-conjugating transpose of the real W_r: the holomorphic gradient.
  g_out.noalias() += readout_weights(net, theta).transpose() * work;
}

template <class R>
Vec<R> loss_per_sample(const Network& net, const Vec<R>& theta, Loss loss, const CMatRef<R>& s_out,
                       const CMatRef<R>& y) {
  if (loss == Loss::mse) return (R(0.5) * (s_out - y).colwise().squaredNorm()).transpose();
  Mat<R> logits(net.classes, s_out.cols());
  readout_logits<R>(net, theta, s_out, logits);
  Vec<R> l(s_out.cols());
  for (Index j = 0; j < logits.cols(); ++j) {
    const R m = logits.col(j).maxCoeff();
    const R lse = m + std::log((logits.col(j).array() - m).exp().sum());
    l[j] = -(y.col(j).array() * (logits.col(j).array() - lse)).sum();
  }
  return l;
}

template <class R>
void add_readout_gradient(const Network& net, const Vec<R>& theta, Loss loss, const CMatRef<R>& s_out,
                          const CMatRef<R>& y, R weight, Vec<R>& grad) {
  if (loss == Loss::mse) return;  // the readout does not enter an mse loss
  Mat<R> d(net.classes, s_out.cols());
  readout_logits<R>(net, theta, s_out, d);
  softmax_columns<R>(d);
  d -= y;
  Eigen::Map<Mat<R>> gW(grad.data() + net.readout_w_offset, net.classes, s_out.rows());
  Eigen::Map<Vec<R>> gb(grad.data() + net.readout_b_offset, net.classes);
  gW.noalias() += weight * d * s_out.transpose();
  gb += weight * d.rowwise().sum();
}

#define HEPSIM_INSTANTIATE(S)                                                                              \
  template void readout_logits<S>(const Network&, const Vec<RealOf<S>>&, const CMatRef<S>&, MatRef<S>);    \
  template void softmax_columns<S>(MatRef<S>);                                                             \
  template void add_loss_gradient<S>(const Network&, const Vec<RealOf<S>>&, Loss, const CMatRef<S>&,       \
                                     const CMatRef<RealOf<S>>&, const CVecRef<S>&, MatRef<S>, Mat<S>&);
HEPSIM_INSTANTIATE(float)
HEPSIM_INSTANTIATE(double)
HEPSIM_INSTANTIATE(std::complex<float>)
HEPSIM_INSTANTIATE(std::complex<double>)
#undef HEPSIM_INSTANTIATE
template Vec<float> loss_per_sample<float>(const Network&, const Vec<float>&, Loss, const CMatRef<float>&,
                                           const CMatRef<float>&);
template Vec<double> loss_per_sample<double>(const Network&, const Vec<double>&, Loss, const CMatRef<double>&,
                                             const CMatRef<double>&);
template void add_readout_gradient<float>(const Network&, const Vec<float>&, Loss, const CMatRef<float>&,
                                          const CMatRef<float>&, float, Vec<float>&);
template void add_readout_gradient<double>(const Network&, const Vec<double>&, Loss, const CMatRef<double>&,
                                           const CMatRef<double>&, double, Vec<double>&);

}  // namespace hepsim
