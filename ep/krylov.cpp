// Batched, restarted, matrix-free GMRES. See ep/krylov.hpp.
#include "ep/krylov.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "sim/error.hpp"
#include "sim/interrupt.hpp"

namespace hepsim {
namespace {

// One column's least-squares problem of a cycle: the Hessenberg matrix reduced to R by Givens
// rotations, the rotated right-hand side g (|g(k)| is the residual's 2-norm after k steps).
struct ColumnLsq {
  Mat<double> H;
  Vec<double> g, cs, sn;
  int k = 0;           // Arnoldi steps taken into the solution
  bool active = false; // still extending its Krylov space this cycle

  explicit ColumnLsq(int m) : H(Mat<double>::Zero(m + 1, m)), g(Vec<double>::Zero(m + 1)), cs(m), sn(m) {}

  void start(double beta, bool live) {
    H.setZero();
    g.setZero();
    g(0) = beta;
    k = 0;
    active = live;
  }

  // Takes column j of the Hessenberg matrix (h(0..j+1)); returns false on a breakdown that ends the
  // column's cycle without this step (a zero pivot).
  bool add(int j, const double* h) {
    for (int i = 0; i <= j + 1; ++i) H(i, j) = h[i];
    for (int i = 0; i < j; ++i) {
      const double t = cs(i) * H(i, j) + sn(i) * H(i + 1, j);
      H(i + 1, j) = -sn(i) * H(i, j) + cs(i) * H(i + 1, j);
      H(i, j) = t;
    }
    const double r = std::hypot(H(j, j), H(j + 1, j));
    if (!(r > 0) || !std::isfinite(r)) return false;
    cs(j) = H(j, j) / r;
    sn(j) = H(j + 1, j) / r;
    H(j, j) = r;
    H(j + 1, j) = 0;
    g(j + 1) = -sn(j) * g(j);
    g(j) = cs(j) * g(j);
    k = j + 1;
    return true;
  }

  Vec<double> solution() const {
    return H.topLeftCorner(k, k).triangularView<Eigen::Upper>().solve(g.head(k));
  }
};

}  // namespace

template <class R>
KrylovResult<R> gmres(const std::function<void(const Mat<R>&, Mat<R>&)>& apply, const Mat<R>& b,
                      const KrylovConfig& cfg) {
  if (cfg.restart < 1 || cfg.max_products < 1 || !(cfg.tol > 0)) throw InputError("gmres", "invalid configuration");
  const Index n = b.rows(), B = b.cols();
  const int m = cfg.restart;
  KrylovResult<R> res;
  res.x = Mat<R>::Zero(n, B);
  res.column_residual.resize(B);
  Mat<R> r = b, W(n, B);
  std::vector<Mat<R>> V(static_cast<std::size_t>(m + 1), Mat<R>(n, B));
  std::vector<ColumnLsq> lsq(static_cast<std::size_t>(B), ColumnLsq(m));
  std::vector<double> h(static_cast<std::size_t>((m + 1) * B));
  // Per column: the 2-norms of its true residual at the restarts (GMRES minimises that norm, which
  // never rises; the ∞-norm may), and whether it is given up: not finite, or stagnating — the last
  // kStagnationCycles cycles together lowered the 2-norm by less than 1 % (restarted GMRES has
  // plateaus of a cycle or two; rounding at a tolerance below the precision's reach and singular
  // systems stay flat).
  constexpr std::size_t kStagnationCycles = 5;
  std::vector<std::vector<double>> norms(static_cast<std::size_t>(B));
  std::vector<char> dropped(static_cast<std::size_t>(B), 0);
  for (;;) {
    if (res.products > 0) {  // the true residual of the current x (the first cycle's is b)
      throw_if_interrupted();
      apply(res.x, W);
      ++res.products;
      r = b - W;
    }
    res.residual = 0;
    bool all_converged = true, any_live = false;
    for (Index c = 0; c < B; ++c) {
      const auto q = static_cast<std::size_t>(c);
      const bool finite = r.col(c).allFinite();
      const double ri = finite && n > 0 ? static_cast<double>(r.col(c).cwiseAbs().maxCoeff()) : finite ? 0.0 : HUGE_VAL;
      res.residual = std::max(res.residual, ri);
      res.column_residual(c) = ri;
      const bool converged = ri <= cfg.tol;
      const double r2 = finite ? static_cast<double>(r.col(c).norm()) : HUGE_VAL;
      std::vector<double>& hist = norms[q];
      if (!finite) {
        res.x.col(c).setConstant(std::numeric_limits<R>::quiet_NaN());
        dropped[q] = 1;
      } else if (!converged && !dropped[q]) {
        hist.push_back(r2);
        if (hist.size() > kStagnationCycles && !(r2 < 0.99 * hist[hist.size() - 1 - kStagnationCycles])) dropped[q] = 1;
      }
      all_converged = all_converged && converged;
      const bool live = !converged && !dropped[q];
      any_live = any_live || live;
      const double beta = live ? r2 : 0.0;
      lsq[q].start(beta, live);
      V[0].col(c) = live ? Vec<R>(r.col(c) / static_cast<R>(beta)) : Vec<R>::Zero(n);
    }
    res.converged = all_converged;
    // One product is kept for the final residual: max_products bounds them all.
    if (!any_live || res.products + 1 >= cfg.max_products) break;
    for (int j = 0; j < m && res.products + 1 < cfg.max_products; ++j) {
      if (std::none_of(lsq.begin(), lsq.end(), [](const ColumnLsq& l) { return l.active; })) break;
      throw_if_interrupted();
      apply(V[static_cast<std::size_t>(j)], W);
      ++res.products;
      for (int i = 0; i <= j; ++i) {  // modified Gram–Schmidt, every column at once
        const Mat<R>& Vi = V[static_cast<std::size_t>(i)];
        const auto dots = (Vi.cwiseProduct(W)).colwise().sum().eval();
        W -= Vi * dots.asDiagonal();
        for (Index c = 0; c < B; ++c) h[static_cast<std::size_t>(c * (m + 1) + i)] = static_cast<double>(dots(c));
      }
      Mat<R>& next = V[static_cast<std::size_t>(j + 1)];
      for (Index c = 0; c < B; ++c) {
        ColumnLsq& l = lsq[static_cast<std::size_t>(c)];
        const double hn = static_cast<double>(W.col(c).norm());
        double* hc = &h[static_cast<std::size_t>(c * (m + 1))];
        hc[j + 1] = hn;
        if (!l.active || !l.add(j, hc)) {
          l.active = false;
          next.col(c).setZero();
          continue;
        }
        // Converged in the 2-norm (which bounds the ∞-norm), or the space is invariant.
        if (std::abs(l.g(j + 1)) <= cfg.tol || !(hn > 0)) {
          l.active = false;
          next.col(c).setZero();
        } else {
          next.col(c) = W.col(c) / static_cast<R>(hn);
        }
      }
    }
    for (Index c = 0; c < B; ++c) {
      const ColumnLsq& l = lsq[static_cast<std::size_t>(c)];
      if (l.k == 0) continue;
      const Vec<double> y = l.solution();
      for (int i = 0; i < l.k; ++i) res.x.col(c) += static_cast<R>(y(i)) * V[static_cast<std::size_t>(i)].col(c);
    }
  }
  return res;
}

template KrylovResult<float> gmres<float>(const std::function<void(const Mat<float>&, Mat<float>&)>&,
                                          const Mat<float>&, const KrylovConfig&);
template KrylovResult<double> gmres<double>(const std::function<void(const Mat<double>&, Mat<double>&)>&,
                                            const Mat<double>&, const KrylovConfig&);

}  // namespace hepsim
