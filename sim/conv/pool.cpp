#include "sim/conv/pool.hpp"

#include <algorithm>
#include <cmath>
#include <complex>
#include <stdexcept>

namespace hepsim {
namespace {

template <class S>
RealOf<S> real_part(S z) {
  if constexpr (is_complex_v<S>)
    return z.real();
  else
    return z;
}

// The four values of window (i, j) of channel ch of one column, their softmax weights and P.
template <class S>
struct Window {
  S v[4], w[4], p;

  Window(const S* col, const MapShape& in, Index ch, Index i, Index j) {
    const S* base = col + ch * in.h * in.w + 2 * i * in.w + 2 * j;
    v[0] = base[0];
    v[1] = base[1];
    v[2] = base[in.w];
    v[3] = base[in.w + 1];
    RealOf<S> m = real_part(v[0]);
    for (int k = 1; k < 4; ++k) m = std::max(m, real_part(v[k]));
    S sum(0);
    for (int k = 0; k < 4; ++k) sum += (w[k] = std::exp(v[k] - S(m)));
    p = S(0);
    for (int k = 0; k < 4; ++k) {
      w[k] /= sum;
      p += v[k] * w[k];
    }
  }
  // ∂P/∂v_k
  S deriv(int k) const { return w[k] * (S(1) + v[k] - p); }
};

void check(const MapShape& in, Index rows, Index pooled_rows, Index cols_a, Index cols_b) {
  if (in.h % 2 != 0 || in.w % 2 != 0 || in.c < 1 || in.h < 2 || in.w < 2)
    throw std::invalid_argument("softmax_pool: the map's height and width must be even and positive");
  if (rows != in.size() || pooled_rows != pooled(in).size() || cols_a != cols_b)
    throw std::invalid_argument("softmax_pool: matrix shapes do not match the map shape");
}

// Runs f(window, pooled index, input offset of the window's top-left value) over every window.
template <class S, class F>
void for_windows(const MapShape& in, const S* col, F&& f) {
  const Index ph = in.h / 2, pw = in.w / 2;
  for (Index ch = 0; ch < in.c; ++ch)
    for (Index i = 0; i < ph; ++i)
      for (Index j = 0; j < pw; ++j) {
        const Window<S> win(col, in, ch, i, j);
        f(win, (ch * ph + i) * pw + j, ch * in.h * in.w + 2 * i * in.w + 2 * j);
      }
}

}  // namespace

MapShape pooled(const MapShape& in) { return {in.c, in.h / 2, in.w / 2}; }

template <class S>
void softmax_pool(const MapShape& in, const CMatRef<S>& v, MatRef<S> out) {
  check(in, v.rows(), out.rows(), v.cols(), out.cols());
  for (Index b = 0; b < v.cols(); ++b) {
    S* o = out.col(b).data();
    for_windows<S>(in, v.col(b).data(), [&](const Window<S>& win, Index q, Index) { o[q] = win.p; });
  }
}

template <class S>
void softmax_pool_jvp(const MapShape& in, const CMatRef<S>& v, const CMatRef<S>& dv, MatRef<S> out) {
  check(in, v.rows(), out.rows(), v.cols(), out.cols());
  check(in, dv.rows(), out.rows(), dv.cols(), out.cols());
  for (Index b = 0; b < v.cols(); ++b) {
    const S* d = dv.col(b).data();
    S* o = out.col(b).data();
    for_windows<S>(in, v.col(b).data(), [&](const Window<S>& win, Index q, Index at) {
      o[q] = win.deriv(0) * d[at] + win.deriv(1) * d[at + 1] + win.deriv(2) * d[at + in.w] +
             win.deriv(3) * d[at + in.w + 1];
    });
  }
}

template <class S>
void softmax_pool_vjp(const MapShape& in, const CMatRef<S>& v, const CMatRef<S>& g, MatRef<S> out) {
  check(in, v.rows(), g.rows(), v.cols(), g.cols());
  check(in, out.rows(), g.rows(), out.cols(), g.cols());
  for (Index b = 0; b < v.cols(); ++b) {
    const S* gc = g.col(b).data();
    S* o = out.col(b).data();
    for_windows<S>(in, v.col(b).data(), [&](const Window<S>& win, Index q, Index at) {
      o[at] = win.deriv(0) * gc[q];
      o[at + 1] = win.deriv(1) * gc[q];
      o[at + in.w] = win.deriv(2) * gc[q];
      o[at + in.w + 1] = win.deriv(3) * gc[q];
    });
  }
}

template <class S>
void softmax_pool_hvp(const MapShape& in, const CMatRef<S>& v, const CMatRef<S>& g, const CMatRef<S>& dv,
                      MatRef<S> out) {
  check(in, v.rows(), g.rows(), v.cols(), g.cols());
  check(in, dv.rows(), g.rows(), dv.cols(), g.cols());
  check(in, out.rows(), g.rows(), out.cols(), g.cols());
  for (Index b = 0; b < v.cols(); ++b) {
    const S* gc = g.col(b).data();
    const S* d = dv.col(b).data();
    S* o = out.col(b).data();
    for_windows<S>(in, v.col(b).data(), [&](const Window<S>& win, Index q, Index at) {
      const Index idx[4] = {at, at + 1, at + in.w, at + in.w + 1};
      S wdv(0), ddv(0);  // Σ_l w_l dv_l and Σ_l (∂P/∂v_l) dv_l
      for (int l = 0; l < 4; ++l) {
        wdv += win.w[l] * d[idx[l]];
        ddv += win.deriv(l) * d[idx[l]];
      }
      for (int k = 0; k < 4; ++k) {
        const S a = S(1) + win.v[k] - win.p;
        o[idx[k]] = gc[q] * win.w[k] * ((a + S(1)) * d[idx[k]] - a * wdv - ddv);
      }
    });
  }
}

#define HEPSIM_POOL(S)                                                                                        \
  template void softmax_pool<S>(const MapShape&, const CMatRef<S>&, MatRef<S>);                               \
  template void softmax_pool_jvp<S>(const MapShape&, const CMatRef<S>&, const CMatRef<S>&, MatRef<S>);        \
  template void softmax_pool_vjp<S>(const MapShape&, const CMatRef<S>&, const CMatRef<S>&, MatRef<S>);        \
  template void softmax_pool_hvp<S>(const MapShape&, const CMatRef<S>&, const CMatRef<S>&, const CMatRef<S>&, \
                                    MatRef<S>);
HEPSIM_POOL(float)
HEPSIM_POOL(double)
HEPSIM_POOL(std::complex<float>)
HEPSIM_POOL(std::complex<double>)
#undef HEPSIM_POOL

}  // namespace hepsim
