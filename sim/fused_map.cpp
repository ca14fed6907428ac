// The fused map engine (see fused_map.hpp).
// GCC 12 reports `__Y` "used uninitialized" inside its own avx512fintrin.h when Eigen's vectorised
// exp is inlined here (the intrinsics start from _mm512_undefined_ps by design): a false positive,
// silenced for this file, before any header is read.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "sim/fused_map.hpp"
#include "sim/panel_gemm.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>

#include <Eigen/Core>
#endif

namespace hepsim::detail {

LayerGroups layer_groups(const Network& net) {
  const std::size_t L = net.layers.size();
  LayerGroups g;
  std::vector<std::vector<int>> pres(L);
  for (const Edge& edge : net.edges)
    if (edge.pre != Network::kInput) pres[static_cast<std::size_t>(edge.post)].push_back(edge.pre);
  for (auto& p : pres) std::sort(p.begin(), p.end());
  // Groups in order of first appearance; the internal order lists each group's layers together.
  std::map<std::vector<int>, std::size_t> index;
  for (std::size_t l = 0; l < L; ++l) {
    auto [it, fresh] = index.emplace(pres[l], g.members.size());
    if (fresh) {
      g.members.emplace_back();
      g.inputs.push_back(pres[l]);
    }
    g.members[it->second].push_back(static_cast<int>(l));
  }
  g.layer_offset.assign(L, 0);
  Index off = 0;
  for (const auto& m : g.members)
    for (int l : m) {
      g.layer_offset[static_cast<std::size_t>(l)] = off;
      off += net.layers[static_cast<std::size_t>(l)].size;
    }
  return g;
}

}  // namespace hepsim::detail

namespace hepsim {

std::vector<std::array<Index, 2>> map_gemm_shapes(const Network& net) {
  using detail::layer_groups;
  using detail::LayerGroups;
  const LayerGroups g = layer_groups(net);
  std::vector<std::array<Index, 2>> shapes;
  for (std::size_t i = 0; i < g.members.size(); ++i) {
    Index rows = 0, k = 0;
    for (int l : g.members[i]) rows += net.layers[static_cast<std::size_t>(l)].size;
    for (int p : g.inputs[i]) k += net.layers[static_cast<std::size_t>(p)].size;
    if (k > 0) shapes.push_back({rows, k});
  }
  return shapes;
}

}  // namespace hepsim

namespace hepsim::detail {

#if defined(__AVX512F__)

namespace {

constexpr int kBlock = 13;  // widest register block: 2 x 13 accumulators + 2 panel rows + 1 broadcast of the 32 zmm
// Columns are cut into blocks of nearly equal width (25 = 13 + 12, 50 = 13 + 13 + 12 + 12), never
// a narrow remainder: a block streams the whole panel whatever its width, so a 1-column block
// costs about as much panel traffic as a 13-column one.
// Complex states use even widths (Re, Im pairs), at most 12.

// A group of layers fed by the same layers: one packed matrix W_g (rows: the group's layers,
// contiguous in the internal order; columns: its input layers in internal order).
struct Group {
  Index post_begin = 0, rows = 0;
  std::vector<std::pair<Index, Index>> pre;  // internal (offset, size) of the input layers
  Index k = 0;
  bool contiguous = true;  // the inputs form one internal range starting at pre[0].first
  int panels = 0;
  Floats packed;           // panels x k x kPanel, zero-padded rows
};

enum class Epilogue { sigmoid, dsilu, complex_sigmoid };

inline float hmax(__m512 v) { return _mm512_reduce_max_ps(v); }

// σ(u) for 16 real lanes.
template <Epilogue E>
inline __m512 activate16(__m512 u) {
  using Eigen::internal::pexp;
  const __m512 one = _mm512_set1_ps(1.0f);
  if constexpr (E == Epilogue::sigmoid) {
    const __m512 e = pexp(_mm512_fnmadd_ps(_mm512_set1_ps(4.0f), u, _mm512_set1_ps(2.0f)));  // e^{2−4u}
    return _mm512_div_ps(one, _mm512_add_ps(one, e));
  } else {
    const __m512 half = _mm512_set1_ps(0.5f);
    const __m512 l0 = _mm512_div_ps(one, _mm512_add_ps(one, pexp(_mm512_sub_ps(_mm512_setzero_ps(), u))));
    const __m512 l2 = _mm512_div_ps(one, _mm512_add_ps(one, pexp(_mm512_sub_ps(_mm512_set1_ps(2.0f), u))));
    return _mm512_fmadd_ps(_mm512_mul_ps(half, u), l0, _mm512_mul_ps(_mm512_fnmadd_ps(half, u, one), l2));
  }
}

// σ(z) = 1/(1 + e^{w}), w = 2 − 4z, for 16 complex lanes given as (re, im); the branch on the sign
// of Re w keeps every exponential ≤ 1 (see fused_map.hpp's derivation in the comments below).
inline void complex_sigmoid16(__m512 re, __m512 im, __m512& s_re, __m512& s_im) {
  using Eigen::internal::pcos;
  using Eigen::internal::pexp;
  using Eigen::internal::psin;
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 a = _mm512_fnmadd_ps(_mm512_set1_ps(4.0f), re, _mm512_set1_ps(2.0f));  // Re w
  const __m512 b = _mm512_mul_ps(_mm512_set1_ps(-4.0f), im);                           // Im w
  const __m512 abs_a = _mm512_abs_ps(a);
  const __m512 F = pexp(_mm512_sub_ps(_mm512_setzero_ps(), abs_a));  // e^{−|Re w|}
  const __m512 x = _mm512_mul_ps(F, pcos(b)), y = _mm512_mul_ps(F, psin(b));
  const __m512 opx = _mm512_add_ps(one, x);
  const __m512 den = _mm512_fmadd_ps(opx, opx, _mm512_mul_ps(y, y));  // |1 + x + iy|²
  // Re w ≤ 0: e^w = x + iy, σ = (1 + x − iy)/den.  Re w > 0: e^{−w} = x − iy,
  // σ = e^{−w}/(1 + e^{−w}) = (x + x² + y² − iy)/den.
  const __mmask16 pos = _mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_GT_OQ);
  const __m512 num_pos = _mm512_fmadd_ps(x, x, _mm512_fmadd_ps(y, y, x));
  const __m512 num_re = _mm512_mask_blend_ps(pos, opx, num_pos);
  s_re = _mm512_div_ps(num_re, den);
  s_im = _mm512_div_ps(_mm512_sub_ps(_mm512_setzero_ps(), y), den);
}

// Where a kernel call writes: the drive D, the old and new states U, Un, the new activations Sn
// (all n x nc, column stride ld, at internal row `row`), the per-internal-column reductions r, a.
struct Out {
  const float* D;
  const float* U;
  float* Un;
  float* Sn;
  Index ld;
  float* r;
  float* a;
  bool damped;  // u' = u + dt (M(u) − u) instead of M(u)
  float dt;
  const float* snap;  // the cycle test's reference state, or nullptr: then dist is not computed
  float* dist;        // per internal column, ‖u' − snap‖∞ (modulus for complex)
  const char* watch;  // per internal column: compute dist
};

// C(32 x NC) = A_panel (32 x k) · B (k x NC, column stride ldb), then the epilogue on the valid
// rows (masks m0, m1 of the two halves).
template <int NC, Epilogue E>
inline void kernel(const float* a_panel, const float* b, Index ldb, Index k, const Out& o, Index row, Index col,
                   __mmask16 m0, __mmask16 m1) {
  __m512 acc0[NC], acc1[NC];
  panel_product<NC>(a_panel, b, ldb, k, acc0, acc1);
  const __m512 sign = _mm512_set1_ps(-0.0f);
  if constexpr (E != Epilogue::complex_sigmoid) {
    for (int j = 0; j < NC; ++j) {
      const Index off = (col + j) * o.ld + row;
      __m512 u[2] = {_mm512_add_ps(acc0[j], _mm512_maskz_loadu_ps(m0, o.D + off)),
                     _mm512_add_ps(acc1[j], _mm512_maskz_loadu_ps(m1, o.D + off + 16))};
      const __mmask16 m[2] = {m0, m1};
      // Lane-wise maxima over both halves, reduced once per column (max is exact in any order).
      __m512 rv = _mm512_setzero_ps(), av = rv, dv = rv;
      float r = o.r[col + j];
      for (int h = 0; h < 2; ++h) {
        if (!m[h]) continue;
        u[h] = _mm512_maskz_mov_ps(m[h], u[h]);
        const __m512 old = _mm512_maskz_loadu_ps(m[h], o.U + off + 16 * h);
        // The residual F(u) = M(u) − u, before any damping: the damped update dt F may be
        // absorbed by rounding (u' == u), which must not read as convergence.
        const __m512 f = _mm512_sub_ps(u[h], old);
        if (o.damped) u[h] = _mm512_fmadd_ps(_mm512_set1_ps(o.dt), f, old);
        // A NaN compares unordered with itself: report it as an infinite residual.
        if (_mm512_cmp_ps_mask(u[h], u[h], _CMP_UNORD_Q)) r = std::numeric_limits<float>::infinity();
        rv = _mm512_max_ps(rv, _mm512_andnot_ps(sign, f));
        av = _mm512_max_ps(av, _mm512_andnot_ps(sign, u[h]));
        if (o.snap && o.watch[col + j])
          dv = _mm512_max_ps(dv, _mm512_andnot_ps(sign, _mm512_sub_ps(u[h], _mm512_maskz_loadu_ps(m[h], o.snap + off + 16 * h))));
        _mm512_mask_storeu_ps(o.Un + off + 16 * h, m[h], u[h]);
        _mm512_mask_storeu_ps(o.Sn + off + 16 * h, m[h], activate16<E>(u[h]));
      }
      o.r[col + j] = std::max(r, hmax(rv));
      o.a[col + j] = std::max(o.a[col + j], hmax(av));
      if (o.snap) o.dist[col + j] = std::max(o.dist[col + j], hmax(dv));
    }
  } else {
    static_assert(NC % 2 == 0, "complex columns come in (Re, Im) pairs");
    for (int j = 0; j < NC; j += 2) {
      const Index re_off = (col + j) * o.ld + row, im_off = re_off + o.ld;
      const __m512 acc_re[2] = {acc0[j], acc1[j]}, acc_im[2] = {acc0[j + 1], acc1[j + 1]};
      const __mmask16 m[2] = {m0, m1};
      __m512 rv = _mm512_setzero_ps(), av = rv, dv = rv;  // squared moduli, reduced once per column
      float r = o.r[col + j];
      for (int h = 0; h < 2; ++h) {
        if (!m[h]) continue;
        __m512 ure = _mm512_maskz_mov_ps(m[h], _mm512_add_ps(acc_re[h], _mm512_maskz_loadu_ps(m[h], o.D + re_off + 16 * h)));
        __m512 uim = _mm512_maskz_mov_ps(m[h], _mm512_add_ps(acc_im[h], _mm512_maskz_loadu_ps(m[h], o.D + im_off + 16 * h)));
        const __m512 old_re = _mm512_maskz_loadu_ps(m[h], o.U + re_off + 16 * h);
        const __m512 old_im = _mm512_maskz_loadu_ps(m[h], o.U + im_off + 16 * h);
        const __m512 dre = _mm512_sub_ps(ure, old_re);  // F(u) = M(u) − u, before any damping
        const __m512 dim = _mm512_sub_ps(uim, old_im);
        if (o.damped) {
          const __m512 dtv = _mm512_set1_ps(o.dt);
          ure = _mm512_fmadd_ps(dtv, dre, old_re);
          uim = _mm512_fmadd_ps(dtv, dim, old_im);
        }
        const __m512 d2 = _mm512_fmadd_ps(dre, dre, _mm512_mul_ps(dim, dim));
        const __m512 u2 = _mm512_fmadd_ps(ure, ure, _mm512_mul_ps(uim, uim));
        if (_mm512_cmp_ps_mask(u2, u2, _CMP_UNORD_Q)) r = std::numeric_limits<float>::infinity();
        rv = _mm512_max_ps(rv, d2);
        av = _mm512_max_ps(av, u2);
        if (o.snap && o.watch[col + j]) {
          const __m512 sre = _mm512_sub_ps(ure, _mm512_maskz_loadu_ps(m[h], o.snap + re_off + 16 * h));
          const __m512 sim = _mm512_sub_ps(uim, _mm512_maskz_loadu_ps(m[h], o.snap + im_off + 16 * h));
          dv = _mm512_max_ps(dv, _mm512_fmadd_ps(sre, sre, _mm512_mul_ps(sim, sim)));
        }
        _mm512_mask_storeu_ps(o.Un + re_off + 16 * h, m[h], ure);
        _mm512_mask_storeu_ps(o.Un + im_off + 16 * h, m[h], uim);
        __m512 sre, sim;
        complex_sigmoid16(ure, uim, sre, sim);
        _mm512_mask_storeu_ps(o.Sn + re_off + 16 * h, m[h], sre);
        _mm512_mask_storeu_ps(o.Sn + im_off + 16 * h, m[h], sim);
      }
      o.r[col + j] = o.r[col + j + 1] = std::max(r, std::sqrt(hmax(rv)));
      o.a[col + j] = o.a[col + j + 1] = std::max(o.a[col + j], std::sqrt(hmax(av)));
      if (o.snap) o.dist[col + j] = o.dist[col + j + 1] = std::max(o.dist[col + j], std::sqrt(hmax(dv)));
    }
  }
}

template <Epilogue E, int NC = kBlock>
void run_block(const float* a_panel, const float* b, Index ldb, Index k, const Out& o, Index row, Index col, Index n,
               __mmask16 m0, __mmask16 m1) {
  if constexpr (NC > 0) {
    if constexpr (E == Epilogue::complex_sigmoid && NC % 2 == 1) {
      return run_block<E, NC - 1>(a_panel, b, ldb, k, o, row, col, n, m0, m1);
    } else {
      if (n == NC) return kernel<NC, E>(a_panel, b, ldb, k, o, row, col, m0, m1);
      if constexpr (E == Epilogue::complex_sigmoid) {
        if constexpr (NC > 2) return run_block<E, NC - 2>(a_panel, b, ldb, k, o, row, col, n, m0, m1);
      } else {
        return run_block<E, NC - 1>(a_panel, b, ldb, k, o, row, col, n, m0, m1);
      }
    }
  }
}

__mmask16 mask_for(Index rows) {
  if (rows >= 16) return 0xFFFF;
  if (rows <= 0) return 0;
  return static_cast<__mmask16>((1u << rows) - 1);
}

}  // namespace

template <class S>
struct FusedMap<S>::Impl {
  static constexpr bool kComplex = is_complex_v<S>;
  const Field<S>& field;
  const Network& net;
  Index n = 0, cols = 0, nc = 0;  // neurons, public columns, internal (real) columns
  std::vector<Index> layer_offset;  // internal offset of each layer
  std::vector<Group> groups;
  Index out_offset = 0, out_size = 0;
  Epilogue epilogue = Epilogue::sigmoid;
  // State buffers, n x nc column-major: drive (+ nudge), u, u', s, s'; gather scratch. Samples
  // live in slots (w = 1 or 2 internal columns each); the active ones occupy slots 0 … active−1,
  // settled ones are kept in F (by sample) and no longer computed.
  static constexpr Index w = kComplex ? 2 : 1;
  Floats D, D0, U, Un, Sc, Sn, G, F, Snap;  // Snap: the cycle test's reference (active slots)
  std::vector<float> r, a, dist;
  std::vector<char> watching;  // per internal column (slot layout): the cycle test measures it
  std::vector<Index> slot_of, col_at;
  std::vector<char> settled;
  Index active = 0;
  bool damped = false;
  float dt = 1;
  // Readout scratch (classes x nc and n_out x nc).
  Mat<float> logits, d, ed;

  Impl(const Field<S>& f, double step) : field(f), net(f.model().net) {
    damped = step != 1;
    dt = static_cast<float>(step);
    n = net.neurons;
    cols = f.cols();
    nc = kComplex ? 2 * cols : cols;
    epilogue = kComplex ? Epilogue::complex_sigmoid
                        : f.model().activation == Activation::sigmoid ? Epilogue::sigmoid : Epilogue::dsilu;
    build_groups();
    const std::size_t size = static_cast<std::size_t>(n * nc);
    D.assign(size, 0.f);
    U.assign(size, 0.f);
    Un.assign(size, 0.f);
    Sc.assign(size, 0.f);
    Sn.assign(size, 0.f);
    F.assign(size, 0.f);
    Snap.assign(size, 0.f);
    r.assign(static_cast<std::size_t>(nc), 0.f);
    dist.assign(static_cast<std::size_t>(nc), 0.f);
    watching.assign(static_cast<std::size_t>(nc), 0);
    a.assign(static_cast<std::size_t>(nc), 0.f);
    active = cols;
    slot_of.resize(static_cast<std::size_t>(cols));
    col_at.resize(static_cast<std::size_t>(cols));
    for (Index j = 0; j < cols; ++j) slot_of[static_cast<std::size_t>(j)] = col_at[static_cast<std::size_t>(j)] = j;
    settled.assign(static_cast<std::size_t>(cols), 0);
    // The drive in the internal layout (imaginary columns zero).
    const auto& C = f.drive();
    for (std::size_t l = 0; l < net.layers.size(); ++l) {
      const Layer& L = net.layers[l];
      for (Index j = 0; j < cols; ++j)
        for (Index i = 0; i < L.size; ++i) D[idx(layer_offset[l] + i, kComplex ? 2 * j : j)] = C(L.offset + i, j);
    }
    D0 = D;
  }

  std::size_t idx(Index row, Index col) const { return static_cast<std::size_t>(col * n + row); }

  void build_groups() {
    const std::size_t L = net.layers.size();
    const LayerGroups lg = layer_groups(net);
    layer_offset = lg.layer_offset;
    const auto& members = lg.members;
    const auto& pres = lg.inputs;
    out_offset = layer_offset[static_cast<std::size_t>(net.out)];
    out_size = net.layers[static_cast<std::size_t>(net.out)].size;
    const Vec<float>& theta = field.theta();
    for (std::size_t gi = 0; gi < members.size(); ++gi) {
      const std::vector<int>& m = members[gi];
      Group g;
      g.post_begin = layer_offset[static_cast<std::size_t>(m[0])];
      for (int l : m) g.rows += net.layers[static_cast<std::size_t>(l)].size;
      std::vector<int> in = pres[gi];
      std::sort(in.begin(), in.end(), [&](int x, int y) {
        return layer_offset[static_cast<std::size_t>(x)] < layer_offset[static_cast<std::size_t>(y)];
      });
      std::vector<Index> col_of_layer(L, -1);
      for (int p : in) {
        const Index size = net.layers[static_cast<std::size_t>(p)].size;
        col_of_layer[static_cast<std::size_t>(p)] = g.k;
        if (!g.pre.empty() && g.pre.back().first + g.pre.back().second != layer_offset[static_cast<std::size_t>(p)])
          g.contiguous = false;
        g.pre.emplace_back(layer_offset[static_cast<std::size_t>(p)], size);
        g.k += size;
      }
      g.panels = static_cast<int>((g.rows + kPanel - 1) / kPanel);
      g.packed.assign(static_cast<std::size_t>(g.panels) * static_cast<std::size_t>(g.k) * kPanel, 0.f);
      for (std::size_t ei = 0; ei < net.edges.size(); ++ei) {
        const Edge& edge = net.edges[ei];
        if (edge.pre == Network::kInput || std::find(m.begin(), m.end(), edge.post) == m.end()) continue;
        const auto K = kernel(net, theta, static_cast<int>(ei));
        const Index r0 = layer_offset[static_cast<std::size_t>(edge.post)] - g.post_begin;
        const Index c0 = col_of_layer[static_cast<std::size_t>(edge.pre)];
        for (Index c = 0; c < K.cols(); ++c)
          for (Index rr = 0; rr < K.rows(); ++rr) {
            const Index row = r0 + rr, panel = row / kPanel;
            g.packed[static_cast<std::size_t>((panel * g.k + c0 + c) * kPanel + row % kPanel)] = K(rr, c);
          }
      }
      groups.push_back(std::move(g));
    }
    Index gather = 0;
    for (const Group& g : groups)
      if (!g.contiguous) gather = std::max(gather, g.k);
    G.assign(static_cast<std::size_t>(gather * (kComplex ? 2 : 1) * field.cols()), 0.f);
  }

  // s = σ(u) for the whole state (after load).
  void activate_all() {
    for (Index c = 0; c < nc; c += (kComplex ? 2 : 1))
      for (Index i = 0; i < n; ++i) {
        if constexpr (kComplex) {
          const S s = activate<S>(Activation::sigmoid, S(U[idx(i, c)], U[idx(i, c + 1)]));
          Sc[idx(i, c)] = s.real();
          Sc[idx(i, c + 1)] = s.imag();
        } else {
          Sc[idx(i, c)] = activate<float>(field.model().activation, U[idx(i, c)]);
        }
      }
  }

  // D's rows of `out` = drive + β e(s_out) for the current activations.
  void nudge() {
    const Model& model = field.model();
    const auto& y = field.y();
    const auto& beta = field.beta();
    using Strided = Eigen::Map<Mat<float>, 0, Eigen::OuterStride<>>;
    using CStrided = Eigen::Map<const Mat<float>, 0, Eigen::OuterStride<>>;
    const Index nca = active * w;  // the active internal columns
    CStrided s_out(Sc.data() + out_offset, out_size, nca, Eigen::OuterStride<>(n));
    Strided d_out(D.data() + out_offset, out_size, nca, Eigen::OuterStride<>(n));
    CStrided d0_out(D0.data() + out_offset, out_size, nca, Eigen::OuterStride<>(n));
    const Index classes = net.classes;
    d.resize(model.loss == Loss::mse ? out_size : classes, nca);
    if (model.loss == Loss::mse) {
      d = s_out;
    } else {
      const auto W = readout_weights(net, field.theta());
      logits.noalias() = W * s_out;  // real weights on (Re, Im) columns alike
      const auto b = readout_bias(net, field.theta());
      for (Index j = 0; j < active; ++j) {
        if constexpr (kComplex) {
          const Index re = 2 * j, im = re + 1;
          float m = -std::numeric_limits<float>::infinity();
          for (Index c = 0; c < classes; ++c) m = std::max(m, logits(c, re) + b[c]);
          std::complex<float> sum = 0;
          for (Index c = 0; c < classes; ++c) {
            const std::complex<float> p = std::exp(std::complex<float>(logits(c, re) + b[c] - m, logits(c, im)));
            d(c, re) = p.real();
            d(c, im) = p.imag();
            sum += p;
          }
          for (Index c = 0; c < classes; ++c) {
            const std::complex<float> p = std::complex<float>(d(c, re), d(c, im)) / sum;
            d(c, re) = p.real();
            d(c, im) = p.imag();
          }
        } else {
          auto col = d.col(j);
          col = logits.col(j) + b;
          const float m = col.maxCoeff();
          col = (col.array() - m).exp();
          col /= col.sum();
        }
      }
    }
    // d ← (d − y) β per sample (complex multiplication for complex β); slot j holds sample col_at[j].
    for (Index j = 0; j < active; ++j) {
      const Index sample = col_at[static_cast<std::size_t>(j)];
      if constexpr (kComplex) {
        const std::complex<float> bj = beta[sample];
        for (Index c = 0; c < d.rows(); ++c) {
          const std::complex<float> v = std::complex<float>(d(c, 2 * j) - y(c, sample), d(c, 2 * j + 1)) * bj;
          d(c, 2 * j) = v.real();
          d(c, 2 * j + 1) = v.imag();
        }
      } else {
        d.col(j) = (d.col(j) - y.col(sample)) * beta[sample];
      }
    }
    if (model.loss == Loss::mse) {
      d_out = d0_out + d;
    } else {
      ed.noalias() = readout_weights(net, field.theta()).transpose() * d;
      d_out = d0_out + ed;
    }
  }

  void step(double* r_out, double* a_out, double* d_out, const char* watch) {
    if (field.nudged()) nudge();
    const Index nca = active * w;
    std::fill(r.begin(), r.end(), 0.f);
    std::fill(a.begin(), a.end(), 0.f);
    if (d_out) {
      std::fill(dist.begin(), dist.end(), 0.f);
      for (Index slot = 0; slot < active; ++slot)
        std::fill_n(watching.begin() + slot * w, w, watch ? watch[col_at[static_cast<std::size_t>(slot)]] : 1);
    }
    const Out o{D.data(), U.data(), Un.data(), Sn.data(), n, r.data(), a.data(), damped, dt,
                d_out ? Snap.data() : nullptr, dist.data(), watching.data()};
    // Balanced register blocks over the active samples (units of w internal columns).
    const Index max_units = kBlock / w;
    const Index nblocks = (active + max_units - 1) / max_units;
    const Index unit_base = nblocks > 0 ? active / nblocks : 0, unit_extra = nblocks > 0 ? active % nblocks : 0;
    for (const Group& g : groups) {
      const float* b = Sc.data() + (g.pre.empty() ? 0 : g.pre[0].first);
      Index ldb = n;
      if (!g.contiguous) {
        for (Index c = 0; c < nca; ++c) {
          Index k0 = 0;
          for (const auto& [off, size] : g.pre) {
            std::copy_n(Sc.data() + idx(off, c), size, G.data() + c * g.k + k0);
            k0 += size;
          }
        }
        b = G.data();
        ldb = g.k;
      }
      for (int p = 0; p < g.panels; ++p) {
        const Index row = g.post_begin + p * kPanel, valid = std::min<Index>(kPanel, g.rows - p * kPanel);
        const __mmask16 m0 = mask_for(valid), m1 = mask_for(valid - 16);
        const float* a_panel = g.packed.data() + static_cast<std::size_t>(p) * static_cast<std::size_t>(g.k) * kPanel;
        for (Index blk = 0, c = 0; blk < nblocks; ++blk) {
          const Index width = w * (unit_base + (blk < unit_extra ? 1 : 0));
          switch (epilogue) {
            case Epilogue::sigmoid:
              run_block<Epilogue::sigmoid>(a_panel, b + c * ldb, ldb, g.k, o, row, c, width, m0, m1);
              break;
            case Epilogue::dsilu:
              run_block<Epilogue::dsilu>(a_panel, b + c * ldb, ldb, g.k, o, row, c, width, m0, m1);
              break;
            case Epilogue::complex_sigmoid:
              run_block<Epilogue::complex_sigmoid>(a_panel, b + c * ldb, ldb, g.k, o, row, c, width, m0, m1);
              break;
          }
          c += width;
        }
      }
    }
    // Only the active slots were computed; U and U' trade places (settled samples live in F).
    U.swap(Un);
    Sc.swap(Sn);
    for (Index slot = 0; slot < active; ++slot) {
      const Index j = col_at[static_cast<std::size_t>(slot)];
      r_out[j] = r[static_cast<std::size_t>(slot * w)];
      a_out[j] = a[static_cast<std::size_t>(slot * w)];
      if (d_out) d_out[j] = dist[static_cast<std::size_t>(slot * w)];
    }
  }

  void snapshot() { std::copy_n(U.data(), static_cast<std::size_t>(active * w * n), Snap.data()); }

  // Keeps sample j's current state as its final one and stops computing it: the last active slot
  // moves into its place.
  void settle(Index j) {
    if (settled[static_cast<std::size_t>(j)]) return;
    const Index s = slot_of[static_cast<std::size_t>(j)], last = active - 1;
    std::copy_n(U.data() + s * w * n, w * n, F.data() + j * w * n);
    if (s != last) {
      for (Floats* buf : {&U, &Sc, &D, &D0, &Snap}) std::copy_n(buf->data() + last * w * n, w * n, buf->data() + s * w * n);
      const Index moved = col_at[static_cast<std::size_t>(last)];
      col_at[static_cast<std::size_t>(s)] = moved;
      slot_of[static_cast<std::size_t>(moved)] = s;
    }
    settled[static_cast<std::size_t>(j)] = 1;
    --active;
  }
};

template <class S>
FusedMap<S>::FusedMap(const Field<S>& field, double dt) : impl_(std::make_unique<Impl>(field, dt)) {}
template <class S>
FusedMap<S>::~FusedMap() = default;

template <class S>
void FusedMap<S>::load(const Mat<S>& u) {
  Impl& m = *impl_;
  for (std::size_t l = 0; l < m.net.layers.size(); ++l) {
    const Layer& L = m.net.layers[l];
    for (Index j = 0; j < m.cols; ++j)
      for (Index i = 0; i < L.size; ++i) {
        const S v = u(L.offset + i, j);
        if constexpr (Impl::kComplex) {
          m.U[m.idx(m.layer_offset[l] + i, 2 * j)] = v.real();
          m.U[m.idx(m.layer_offset[l] + i, 2 * j + 1)] = v.imag();
        } else {
          m.U[m.idx(m.layer_offset[l] + i, j)] = v;
        }
      }
  }
  m.activate_all();
}

template <class S>
void FusedMap<S>::step(double* r, double* a, double* d, const char* watch) {
  impl_->step(r, a, d, watch);
}

template <class S>
void FusedMap<S>::snapshot() {
  impl_->snapshot();
}

template <class S>
void FusedMap<S>::freeze(Index col) {
  Impl& m = *impl_;
  if (m.settled[static_cast<std::size_t>(col)]) return;
  std::fill_n(m.U.data() + m.slot_of[static_cast<std::size_t>(col)] * Impl::w * m.n, Impl::w * m.n, 0.f);
  m.settle(col);
}

template <class S>
void FusedMap<S>::settle(Index col) {
  impl_->settle(col);
}

template <class S>
void FusedMap<S>::store(Mat<S>& u) const {
  const Impl& m = *impl_;
  for (Index j = 0; j < m.cols; ++j) {
    // A settled sample's state is in F at its own index, an active one's in U at its slot.
    const bool done = m.settled[static_cast<std::size_t>(j)] != 0;
    const float* src = done ? m.F.data() + j * Impl::w * m.n : m.U.data() + m.slot_of[static_cast<std::size_t>(j)] * Impl::w * m.n;
    for (std::size_t l = 0; l < m.net.layers.size(); ++l) {
      const Layer& L = m.net.layers[l];
      for (Index i = 0; i < L.size; ++i) {
        const Index row = m.layer_offset[l] + i;
        if constexpr (Impl::kComplex)
          u(L.offset + i, j) = S(src[row], src[m.n + row]);
        else
          u(L.offset + i, j) = src[row];
      }
    }
  }
}

template <class S>
bool fused_map_applies(const Field<S>& field, const RelaxConfig& cfg) {
  if (!cfg.fused || cfg.solver != Solver::map || field.model().net.has_conv()) return false;
  const Activation act = field.model().activation;
  return is_complex_v<S> ? act == Activation::sigmoid : (act == Activation::sigmoid || act == Activation::dsilu);
}

template class FusedMap<float>;
template class FusedMap<std::complex<float>>;
template bool fused_map_applies<float>(const Field<float>&, const RelaxConfig&);
template bool fused_map_applies<std::complex<float>>(const Field<std::complex<float>>&, const RelaxConfig&);

#else  // no AVX-512: the generic path runs everything

template <class S>
struct FusedMap<S>::Impl {};
template <class S>
FusedMap<S>::FusedMap(const Field<S>&, double) {}
template <class S>
FusedMap<S>::~FusedMap() = default;
template <class S>
void FusedMap<S>::load(const Mat<S>&) {}
template <class S>
void FusedMap<S>::step(double*, double*, double*, const char*) {}
template <class S>
void FusedMap<S>::snapshot() {}
template <class S>
void FusedMap<S>::freeze(Index) {}
template <class S>
void FusedMap<S>::settle(Index) {}
template <class S>
void FusedMap<S>::store(Mat<S>&) const {}
template <class S>
bool fused_map_applies(const Field<S>&, const RelaxConfig&) {
  return false;
}
template class FusedMap<float>;
template class FusedMap<std::complex<float>>;
template bool fused_map_applies<float>(const Field<float>&, const RelaxConfig&);
template bool fused_map_applies<std::complex<float>>(const Field<std::complex<float>>&, const RelaxConfig&);

#endif

}  // namespace hepsim::detail
