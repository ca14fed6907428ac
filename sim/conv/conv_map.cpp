// The batched convolutional map engine (see conv_map.hpp).
// GCC 12 reports `__Y` "used uninitialized" inside its own avx512fintrin.h when Eigen's vectorised
// exp/sin/cos are inlined (the intrinsics start from _mm512_undefined_ps by design): a false
// positive, silenced for this file before any header is read (as in sim/fused_map.cpp).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "sim/conv/conv_map.hpp"
#include "sim/conv/winograd.hpp"
#include "sim/panel_gemm.hpp"

#include <algorithm>
#include <cstdlib>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <tuple>
#include <vector>

namespace hepsim::detail {
namespace {

using Arr = Eigen::ArrayXf;
using AMap = Eigen::Map<Eigen::ArrayXf>;
using CAMap = Eigen::Map<const Eigen::ArrayXf>;

// A layer whose planar (C x H x W) and channels-last (H x W x C) orders coincide: unshaped, or 1 x 1.
bool flat(const Layer& l) { return !l.shaped() || l.shape.h * l.shape.w == 1; }

// One layer block: planar → channels-last (to_last) and back.
void to_last(const MapShape& m, const float* planar, float* last) {
  for (Index c = 0; c < m.c; ++c)
    for (Index p = 0; p < m.h * m.w; ++p) last[p * m.c + c] = planar[c * m.h * m.w + p];
}
void to_planar(const MapShape& m, const float* last, float* planar) {
  for (Index c = 0; c < m.c; ++c)
    for (Index p = 0; p < m.h * m.w; ++p) planar[c * m.h * m.w + p] = last[p * m.c + c];
}

// Patches of `slots` channels-last maps (g.in each, the s-th at src + s·stride) for geometry g:
// column (s, oy, ox) of P holds rows (ky·k + kx)·C + c, zero outside the map.
void im2col_last(const ConvGeometry& g, const float* src, Index stride, Index slots, float* P) {
  const MapShape o = g.out();
  const Index C = g.in.c, k = g.k, rows = k * k * C;
  for (Index s = 0; s < slots; ++s) {
    const float* x = src + s * stride;
    for (Index oy = 0; oy < o.h; ++oy)
      for (Index ox = 0; ox < o.w; ++ox) {
        float* col = P + ((s * o.h + oy) * o.w + ox) * rows;
        for (Index ky = 0; ky < k; ++ky) {
          const Index iy = oy + ky - g.pad;
          float* dst = col + ky * k * C;
          if (iy < 0 || iy >= g.in.h) {
            std::fill_n(dst, k * C, 0.f);
            continue;
          }
          const Index x0 = ox - g.pad;  // the taps kx = 0 … k − 1 read pixels x0 … x0 + k − 1 of row iy
          if (x0 >= 0 && x0 + k <= g.in.w) {
            std::copy_n(x + (iy * g.in.w + x0) * C, k * C, dst);  // contiguous in channels-last order
            continue;
          }
          for (Index kx = 0; kx < k; ++kx) {
            const Index ix = x0 + kx;
            if (ix >= 0 && ix < g.in.w)
              std::copy_n(x + (iy * g.in.w + ix) * C, C, dst + kx * C);
            else
              std::fill_n(dst + kx * C, C, 0.f);
          }
        }
      }
  }
}

// A forward conv edge's product rows in its group's GEMM, pooled into `post`.
struct Forward {
  int post = 0;
  Index row = 0, c = 0;
};
// A feedback edge up → a: its z = conv_B(s_a) rows (row −1 without pooling: none needed), and the
// transpose conv_Bᵀ added into layer a, either as a convolution (kernel Bt: C_a x k²·C_up,
// geometry gt) or, when the product map is smaller than layer a's (a "valid" convolution, where
// the convolution form would multiply mostly zeros), as the GEMM Bt (k²·C_a x C_up) g followed
// by col2im: only useful multiply-adds either way.
struct Backward {
  int up = 0;
  Index row = -1, c = 0;
  bool scatter = false;
  PackedMatrix Bt;
  ConvGeometry gt;
  std::optional<WinogradConv> wino;  // the transpose conv by F(2x2, 3x3) where it applies
};
// The convolutions that read layer `layer` with one geometry: one GEMM Z = W · patches.
struct Op {
  int layer = 0;
  ConvGeometry g;
  bool pool = true;
  PackedMatrix W;  // stacked kernels, rows of the forward and pooled-feedback members
  std::optional<WinogradConv> wino;  // the same product by F(2x2, 3x3) where it applies
  std::vector<Forward> fwd;
  std::vector<Backward> back;
  Index chunk = 1;  // samples (positions) per GEMM
};

// Columns (ky·k + kx)·C_in + ci of a kernel K (C_out x C_in·k·k, columns (ci·k + ky)·k + kx),
// written into rows r0 … r0 + C_out − 1 of W.
void pack_forward(const Eigen::Map<const Mat<float>>& K, Index cin, Index k, Mat<float>& W, Index r0) {
  for (Index ci = 0; ci < cin; ++ci)
    for (Index t = 0; t < k * k; ++t) W.block(r0, t * cin + ci, K.rows(), 1) = K.col(ci * k * k + t);
}
// x += col2im(cols) for `slots` channels-last maps (g.in each, the s-th at x + s·stride): the
// transpose of im2col_last (cols: k²·C x (slots · H_out·W_out), column (s, oy, ox)).
void col2im_last_add(const ConvGeometry& g, const float* cols, Index slots, float* x, Index stride) {
  const MapShape o = g.out();
  const Index C = g.in.c, k = g.k, rows = k * k * C;
  for (Index s = 0; s < slots; ++s)
    for (Index oy = 0; oy < o.h; ++oy)
      for (Index ox = 0; ox < o.w; ++ox) {
        const float* col = cols + ((s * o.h + oy) * o.w + ox) * rows;
        for (Index ky = 0; ky < k; ++ky) {
          const Index iy = oy + ky - g.pad;
          if (iy < 0 || iy >= g.in.h) continue;
          for (Index kx = 0; kx < k; ++kx) {
            const Index ix = ox + kx - g.pad;
            if (ix < 0 || ix >= g.in.w) continue;
            Eigen::Map<Eigen::ArrayXf>(x + s * stride + (iy * g.in.w + ix) * C, C) +=
                Eigen::Map<const Eigen::ArrayXf>(col + (ky * k + kx) * C, C);
          }
        }
      }
}

// The geometry of the transpose conv_Bᵀ of a 'same'-sized edge g (lower -> upper, c_up channels)
// as a convolution: of the product map into g's input channels, padding k − 1 − p.
ConvGeometry transpose_geometry(const ConvGeometry& g, Index c_up) {
  ConvGeometry gt;
  gt.in = g.out();
  gt.in.c = c_up;
  gt.out_channels = g.in.c;
  gt.k = g.k;
  gt.pad = g.k - 1 - g.pad;
  return gt;
}

// The transposed conv as a conv: Bt(ci, (ky·k + kx)·C_out + co) = B(co, ci, k−1−ky, k−1−kx).
Mat<float> pack_transpose(const Eigen::Map<const Mat<float>>& B, Index cin, Index k) {
  const Index cout = B.rows();
  Mat<float> Bt(cin, k * k * cout);
  for (Index ci = 0; ci < cin; ++ci)
    for (Index ky = 0; ky < k; ++ky)
      for (Index kx = 0; kx < k; ++kx)
        for (Index co = 0; co < cout; ++co)
          Bt(ci, (ky * k + kx) * cout + co) = B(co, (ci * k + (k - 1 - ky)) * k + (k - 1 - kx));
  return Bt;
}

// GEMM columns per chunk: big enough for the packed GEMM to run near its peak, small enough that a
// chunk's patches and products stay in L2.
constexpr Index kTargetColumns = 512;

}  // namespace

template <class S>
struct ConvMap<S>::Impl {
  static constexpr bool kComplex = is_complex_v<S>;
  static constexpr Index sp = kComplex ? 2 : 1;  // real columns ("slots") per sample
  const Field<S>& field;
  const Network& net;
  Index n = 0, cols = 0;
  bool damped = false;
  float dt = 1;
  Activation act = Activation::dsilu;
  std::vector<Op> ops;
  std::vector<int> dense;  // recurrent dense edges (flat layers)
  // States, n x (slots), channels-last: drive (by sample), u, u', s = σ(u), the cycle test's
  // snapshot; finals (planar, by sample) of the columns no longer computed.
  Mat<float> D, U, Un, Sx, Snap;
  Mat<S> F;
  std::vector<Index> pos_of, col_at;  // sample → position, position → sample
  Index active = 0;
  // Scratch: patches, products, pooled-feedback gradients, transposed-conv patches and products.
  Mat<float> P, Z, G, P2, T;
  Arr t[16];    // channel-vector temporaries
  Arr e[8];     // neuron-column temporaries (epilogue)
  // Readout (nudge) scratch.
  Mat<S> so, go, work;
  Mat<float> yn;
  Vec<S> bn;
  Vec<float> col;  // a planar column (load/store)

  Impl(const Field<S>& f, double step) : field(f), net(f.model().net) {
    damped = step != 1;
    dt = static_cast<float>(step);
    n = net.neurons;
    cols = f.cols();
    act = f.model().activation;
    build();
    const Index slots = cols * sp;
    U.setZero(n, slots);
    Un.setZero(n, slots);
    Sx.setZero(n, slots);
    Snap.setZero(n, slots);
    D.resize(n, cols);
    for (Index j = 0; j < cols; ++j) {
      col = f.drive().col(j);
      last(col.data(), D.col(j).data());
    }
    pos_of.resize(static_cast<std::size_t>(cols));
    col_at.resize(static_cast<std::size_t>(cols));
    for (Index j = 0; j < cols; ++j) pos_of[static_cast<std::size_t>(j)] = col_at[static_cast<std::size_t>(j)] = j;
    active = cols;
    Index maxc = 1;
    for (const Layer& l : net.layers) maxc = std::max(maxc, l.shaped() ? l.shape.c : Index(1));
    for (Arr& a : t) a.resize(maxc);
    for (Arr& a : e) a.resize(n);
    const Layer& o = net.layers[static_cast<std::size_t>(net.out)];
    so.resize(o.size, cols);
    go.resize(o.size, cols);
    yn.resize(f.y().rows(), cols);
    bn.resize(cols);
  }

  const Layer& layer(int l) const { return net.layers[static_cast<std::size_t>(l)]; }

  // A whole planar column → channels-last, and back.
  void last(const float* planar, float* out) const {
    for (const Layer& l : net.layers)
      if (flat(l))
        std::copy_n(planar + l.offset, l.size, out + l.offset);
      else
        to_last(l.shape, planar + l.offset, out + l.offset);
  }
  void planar(const float* in, float* out) const {
    for (const Layer& l : net.layers)
      if (flat(l))
        std::copy_n(in + l.offset, l.size, out + l.offset);
      else
        to_planar(l.shape, in + l.offset, out + l.offset);
  }

  void build() {
    const Vec<float>& theta = field.theta();
    std::map<std::tuple<int, Index, Index, bool>, std::size_t> index;
    struct Rows {
      int edge;
      bool feedback;
    };
    std::vector<std::vector<Rows>> members;
    for (std::size_t ei = 0; ei < net.edges.size(); ++ei) {
      const Edge& ed = net.edges[ei];
      if (ed.pre == Network::kInput) continue;  // constant: in the drive
      if (!ed.is_conv()) {
        dense.push_back(static_cast<int>(ei));
        continue;
      }
      const int a = ed.kind == EdgeKind::conv ? ed.pre : ed.post;  // the layer convolved
      const ConvGeometry& g = ed.conv.conv;
      auto [it, fresh] = index.emplace(std::make_tuple(a, g.k, g.pad, ed.conv.pool), ops.size());
      if (fresh) {
        Op op;
        op.layer = a;
        op.g = g;
        op.pool = ed.conv.pool;
        ops.push_back(std::move(op));
        members.emplace_back();
      }
      members[it->second].push_back({static_cast<int>(ei), ed.kind == EdgeKind::conv_feedback});
    }
    Index maxP = 0, maxZ = 0, maxG = 0, maxP2 = 0, maxT = 0;
    for (std::size_t oi = 0; oi < ops.size(); ++oi) {
      Op& op = ops[oi];
      Index rows = 0;
      for (const Rows& m : members[oi]) {
        const Edge& ed = net.edges[static_cast<std::size_t>(m.edge)];
        if (!m.feedback || op.pool) rows += ed.rows;
      }
      const Index cin = layer(op.layer).shape.c;
      Mat<float> W = Mat<float>::Zero(rows, op.g.k * op.g.k * cin);
      Index r = 0;
      for (const Rows& m : members[oi]) {
        const Edge& ed = net.edges[static_cast<std::size_t>(m.edge)];
        const auto K = kernel(net, theta, m.edge);
        if (!m.feedback) {
          pack_forward(K, cin, op.g.k, W, r);
          op.fwd.push_back({ed.post, r, ed.rows});
          r += ed.rows;
        } else {
          Backward b;
          b.up = ed.pre;
          b.c = ed.rows;
          if (op.pool) {
            pack_forward(K, cin, op.g.k, W, r);
            b.row = r;
            r += ed.rows;
          }
          const MapShape zo = ed.conv.conv.out(), la = layer(op.layer).shape;
          b.scatter = zo.h * zo.w < la.h * la.w;
          if (b.scatter) {
            Mat<float> packed(ed.rows, W.cols());
            pack_forward(K, cin, op.g.k, packed, 0);
            b.Bt.pack(packed.transpose());
            b.gt = op.g;
          } else {
            const Mat<float> Bt = pack_transpose(K, cin, op.g.k);
            b.Bt.pack(Bt);
            b.gt = transpose_geometry(op.g, ed.rows);
            if (WinogradConv::applies(b.gt)) b.wino.emplace(Bt, b.gt.in);
          }
          op.back.push_back(std::move(b));
        }
      }
      op.W.pack(W);
      if (rows > 0 && WinogradConv::applies(op.g)) op.wino.emplace(W, layer(op.layer).shape);
      ConvGeometry g = op.g;
      g.out_channels = std::max<Index>(1, rows);
      const Index pix = g.out().h * g.out().w;
      op.chunk = std::max<Index>(1, kTargetColumns / (pix * sp));
      const Index cc = op.chunk * sp * pix;  // GEMM columns of a full chunk
      maxP = std::max(maxP, op.wino ? op.wino->scratch_floats(op.chunk * sp) : op.W.cols() * cc);
      maxZ = std::max(maxZ, rows * cc);
      for (const Backward& b : op.back) {
        maxG = std::max(maxG, b.c * cc);
        if (b.scatter) {
          maxT = std::max(maxT, b.Bt.rows() * cc);
        } else {
          const Index tpix = b.gt.out().h * b.gt.out().w;
          maxP2 = std::max(maxP2, b.wino ? b.wino->scratch_floats(op.chunk * sp) : b.Bt.cols() * tpix * op.chunk * sp);
          maxT = std::max(maxT, cin * tpix * op.chunk * sp);
        }
      }
    }
    P.resize(maxP, 1);
    Z.resize(maxZ, 1);
    G.resize(maxG, 1);
    P2.resize(maxP2, 1);
    T.resize(maxT, 1);
  }

  void load(const Mat<S>& u) {
    F = u;
    for (Index p = 0; p < active; ++p) {
      const Index j = col_at[static_cast<std::size_t>(p)];
      if constexpr (kComplex) {
        col = u.col(j).real();
        last(col.data(), U.col(2 * p).data());
        col = u.col(j).imag();
        last(col.data(), U.col(2 * p + 1).data());
      } else {
        last(u.col(j).data(), U.col(p).data());
      }
    }
    for (Index p = 0; p < active; ++p) activate(p, Sx);
  }

  void store(Mat<S>& u) const {
    u = F;
    Vec<float> re(n), im(n);
    for (Index p = 0; p < active; ++p) {
      const Index j = col_at[static_cast<std::size_t>(p)];
      if constexpr (kComplex) {
        planar(U.col(2 * p).data(), re.data());
        planar(U.col(2 * p + 1).data(), im.data());
        for (Index i = 0; i < n; ++i) u(i, j) = S(re(i), im(i));
      } else {
        planar(U.col(p).data(), u.col(j).data());
      }
    }
  }

  // σ of position p's state U into dst (same layout).
  void activate(Index p, Mat<float>& dst) { activate_from(p, U, dst); }
  void activate_from(Index p, const Mat<float>& src, Mat<float>& dst) {
    if constexpr (kComplex) {
      const CAMap zr(src.col(2 * p).data(), n), zi(src.col(2 * p + 1).data(), n);
      AMap sr(dst.col(2 * p).data(), n), si(dst.col(2 * p + 1).data(), n);
      if (act == Activation::sigmoid) {
        e[0] = 4.f * zr - 2.f;
        e[1] = 4.f * zi;
        logistic(e[0], e[1], sr, si);
      } else {
        logistic(zr, zi, e[2], e[3]);  // L(z)
        e[0] = zr - 2.f;
        logistic(e[0], zi, e[4], e[5]);  // L(z − 2)
        e[2] -= e[4];                    // L(z) − L(z − 2)
        e[3] -= e[5];
        // s = L(z − 2) + ½ z (L(z) − L(z − 2))
        sr = e[4] + 0.5f * (zr * e[2] - zi * e[3]);
        si = e[5] + 0.5f * (zr * e[3] + zi * e[2]);
      }
    } else {
      const CAMap z(src.col(p).data(), n);
      AMap s(dst.col(p).data(), n);
      if (act == Activation::sigmoid)
        s = ((2.f - 4.f * z).exp() + 1.f).inverse();
      else
        s = 0.5f * z * ((-z).exp() + 1.f).inverse() + (1.f - 0.5f * z) * ((2.f - z).exp() + 1.f).inverse();
    }
  }

  // L(w) = 1/(1 + e^{−w}) for complex w = wr + i wi (split), without overflow: with
  // F = e^{−|wr|}, c = F cos wi, s = F sin wi, den = (1 + c)² + s²:
  //   wr ≥ 0: L = (1 + c + i s)/den;   wr < 0: L = (c + c² + s² + i s)/den.
  template <class A, class B, class C, class D>
  void logistic(const A& wr, const B& wi, C&& lr, D&& li) {
    e[6] = (-wr.abs()).exp();
    e[7] = e[6] * wi.cos();  // c
    e[6] = e[6] * wi.sin();  // s
    li = (1.f + e[7]).square() + e[6].square();                                  // den (temporarily)
    lr = (wr >= 0.f).select(1.f + e[7], e[7] + e[7].square() + e[6].square()) / li;
    li = e[6] / li;
  }

  // ---- one step ----
  void step(double* r, double* a, double* d, const char* watch) {
    const Index ns = active * sp;
    for (Index p = 0; p < active; ++p) {
      Un.col(p * sp) = D.col(col_at[static_cast<std::size_t>(p)]);
      if constexpr (kComplex) Un.col(p * sp + 1).setZero();
    }
    for (Op& op : ops) run(op);
    const Vec<float>& theta = field.theta();
    for (int ei : dense) {
      const Edge& ed = net.edges[static_cast<std::size_t>(ei)];
      const Layer &pre = layer(ed.pre), &post = layer(ed.post);
      Un.block(post.offset, 0, post.size, ns).noalias() += kernel(net, theta, ei) * Sx.block(pre.offset, 0, pre.size, ns);
    }
    if (field.nudged()) nudge();
    for (Index p = 0; p < active; ++p) epilogue(p, r, a, d, watch);
    U.swap(Un);
  }

  // The convolutions of one op over chunks of the active samples.
  void run(Op& op) {
    const Index cin = layer(op.layer).shape.c;
    const Index off_a = layer(op.layer).offset, size_a = layer(op.layer).size;
    const MapShape zo = op.g.out();  // spatial size of the products (its channel count is unused)
    const Index pix = zo.h * zo.w;
    for (Index p0 = 0; p0 < active; p0 += op.chunk) {
      const Index np = std::min(op.chunk, active - p0), s0 = p0 * sp, slots = np * sp;
      const Index cc = slots * pix;
      const Index rows = op.W.rows();
      Eigen::Map<Mat<float>> Zm(Z.data(), rows, cc);
      if (op.wino) {
        op.wino->apply(Sx.col(s0).data() + off_a, n, slots, Zm.data(), rows, P.data());
      } else if (rows > 0) {
        im2col_last(op.g, Sx.col(s0).data() + off_a, n, slots, P.data());
        op.W.multiply(P.data(), op.W.cols(), cc, Zm.data(), rows);
      }
      for (const Forward& f : op.fwd) {
        const Layer& post = layer(f.post);
        for (Index s = 0; s < slots; s += sp)
          if (op.pool)
            pool_forward(zo, f.c, Zm.data() + f.row + s * pix * rows, rows, Un.col(s0 + s).data() + post.offset,
                         Un.col(s0 + s + sp - 1).data() + post.offset, rows * pix);
          else
            for (Index q = 0; q < pix; ++q)
              for (Index h = 0; h < sp; ++h)
                AMap(Un.col(s0 + s + h).data() + post.offset + q * f.c, f.c) +=
                    CAMap(Zm.data() + f.row + ((s + h) * pix + q) * rows, f.c);
      }
      for (Backward& b : op.back) {
        const Layer& up = layer(b.up);
        const float* gsrc;
        Index gstride;
        if (op.pool) {
          for (Index s = 0; s < slots; s += sp)
            pool_vjp(zo, b.c, Zm.data() + b.row + s * pix * rows, rows, rows * pix, Sx.col(s0 + s).data() + up.offset,
                     Sx.col(s0 + s + sp - 1).data() + up.offset, G.data() + s * pix * b.c, pix * b.c);
          gsrc = G.data();
          gstride = pix * b.c;
        } else if (b.scatter) {  // the GEMM below reads g as one matrix: gather s_up's slots
          for (Index s = 0; s < slots; ++s)
            std::copy_n(Sx.col(s0 + s).data() + up.offset, pix * b.c, G.data() + s * pix * b.c);
          gsrc = G.data();
          gstride = pix * b.c;
        } else {
          gsrc = Sx.col(s0).data() + up.offset;
          gstride = n;
        }
        if (b.scatter) {  // Bt g, then col2im into layer a
          Eigen::Map<Mat<float>> Tm(T.data(), b.Bt.rows(), cc);
          b.Bt.multiply(gsrc, b.c, cc, Tm.data(), b.Bt.rows());
          col2im_last_add(b.gt, T.data(), slots, Un.col(s0).data() + off_a, n);
          continue;
        }
        const MapShape to = b.gt.out();
        const Index tcols = slots * to.h * to.w;
        Eigen::Map<Mat<float>> Tm(T.data(), cin, tcols);
        if (b.wino) {
          b.wino->apply(gsrc, gstride, slots, Tm.data(), cin, P2.data());
        } else {
          im2col_last(b.gt, gsrc, gstride, slots, P2.data());
          b.Bt.multiply(P2.data(), b.Bt.cols(), tcols, Tm.data(), cin);
        }
        for (Index s = 0; s < slots; ++s)
          Un.col(s0 + s).segment(off_a, size_a) += Eigen::Map<const Vec<float>>(T.data() + s * size_a, size_a);
      }
    }
  }

  // out += P(z) over the 2x2 windows of one sample's conv-output map zo (C channels at z, pixel
  // stride ldz; the imaginary part, for complex states, im_off further), out channels-last.
  void pool_forward(const MapShape& zo, Index C, const float* z, Index ldz, float* out_re, float* out_im,
                    Index im_off) {
    const Index pw = zo.w / 2, ph = zo.h / 2;
    for (Index i = 0; i < ph; ++i)
      for (Index j = 0; j < pw; ++j) {
        const Index px[4] = {2 * i * zo.w + 2 * j, 2 * i * zo.w + 2 * j + 1, (2 * i + 1) * zo.w + 2 * j,
                             (2 * i + 1) * zo.w + 2 * j + 1};
        const CAMap v0(z + px[0] * ldz, C), v1(z + px[1] * ldz, C), v2(z + px[2] * ldz, C), v3(z + px[3] * ldz, C);
        AMap ore(out_re + (i * pw + j) * C, C);
        auto m = t[0].head(C);
        m = v0.max(v1).max(v2.max(v3));
        if constexpr (!kComplex) {
          (void)out_im;
          (void)im_off;
          auto e0 = t[1].head(C), e1 = t[2].head(C), e2 = t[3].head(C), e3 = t[4].head(C);
          e0 = (v0 - m).exp();
          e1 = (v1 - m).exp();
          e2 = (v2 - m).exp();
          e3 = (v3 - m).exp();
          ore += (v0 * e0 + v1 * e1 + v2 * e2 + v3 * e3) / (e0 + e1 + e2 + e3);
        } else {
          const CAMap w0(z + im_off + px[0] * ldz, C), w1(z + im_off + px[1] * ldz, C),
              w2(z + im_off + px[2] * ldz, C), w3(z + im_off + px[3] * ldz, C);
          AMap oim(out_im + (i * pw + j) * C, C);
          auto sr = t[9].head(C), si = t[10].head(C), nr = t[11].head(C), ni = t[12].head(C);
          sr.setZero();
          si.setZero();
          nr.setZero();
          ni.setZero();
          const CAMap* vr[4] = {&v0, &v1, &v2, &v3};
          const CAMap* vi[4] = {&w0, &w1, &w2, &w3};
          auto mag = t[1].head(C), er = t[2].head(C), ei = t[3].head(C);
          for (int k = 0; k < 4; ++k) {
            mag = (*vr[k] - m).exp();
            er = mag * vi[k]->cos();
            ei = mag * vi[k]->sin();
            sr += er;
            si += ei;
            nr += *vr[k] * er - *vi[k] * ei;
            ni += *vr[k] * ei + *vi[k] * er;
          }
          mag = sr.square() + si.square();
          ore += (nr * sr + ni * si) / mag;
          oim += (ni * sr - nr * si) / mag;
        }
      }
  }

  // g = P'(z)ᵀ s_up: over each 2x2 window, g_k = w_k (1 + v_k − P) s_up[q] (holomorphic for
  // complex states), written to out (channels-last conv-output map; the imaginary part out_im
  // further for complex states).
  void pool_vjp(const MapShape& zo, Index C, const float* z, Index ldz, Index z_im, const float* up_re,
                const float* up_im, float* out, Index out_im) {
    const Index pw = zo.w / 2, ph = zo.h / 2;
    for (Index i = 0; i < ph; ++i)
      for (Index j = 0; j < pw; ++j) {
        const Index q = i * pw + j;
        const Index px[4] = {2 * i * zo.w + 2 * j, 2 * i * zo.w + 2 * j + 1, (2 * i + 1) * zo.w + 2 * j,
                             (2 * i + 1) * zo.w + 2 * j + 1};
        const CAMap v0(z + px[0] * ldz, C), v1(z + px[1] * ldz, C), v2(z + px[2] * ldz, C), v3(z + px[3] * ldz, C);
        const CAMap* vr[4] = {&v0, &v1, &v2, &v3};
        const CAMap gr(up_re + q * C, C);
        auto m = t[0].head(C);
        m = v0.max(v1).max(v2.max(v3));
        if constexpr (!kComplex) {
          (void)up_im;
          (void)z_im;
          (void)out_im;
          auto e0 = t[1].head(C), e1 = t[2].head(C), e2 = t[3].head(C), e3 = t[4].head(C), pp = t[5].head(C),
               inv = t[6].head(C);
          e0 = (v0 - m).exp();
          e1 = (v1 - m).exp();
          e2 = (v2 - m).exp();
          e3 = (v3 - m).exp();
          inv = (e0 + e1 + e2 + e3).inverse();
          pp = (v0 * e0 + v1 * e1 + v2 * e2 + v3 * e3) * inv;
          inv *= gr;
          decltype(e0)* es[4] = {&e0, &e1, &e2, &e3};
          for (int k = 0; k < 4; ++k) AMap(out + px[k] * C, C) = *es[k] * inv * (1.f + *vr[k] - pp);
        } else {
          const CAMap w0(z + z_im + px[0] * ldz, C), w1(z + z_im + px[1] * ldz, C), w2(z + z_im + px[2] * ldz, C),
              w3(z + z_im + px[3] * ldz, C);
          const CAMap* vi[4] = {&w0, &w1, &w2, &w3};
          const CAMap gi(up_im + q * C, C);
          // e_k (er, ei: t[1 + k], t[5 + k]), their sum (sr, si) and Σ v_k e_k (nr, ni)
          auto sr = t[9].head(C), si = t[10].head(C), nr = t[11].head(C), ni = t[12].head(C);
          sr.setZero();
          si.setZero();
          nr.setZero();
          ni.setZero();
          for (int k = 0; k < 4; ++k) {
            auto er = t[1 + k].head(C), ei = t[5 + k].head(C);
            er = (*vr[k] - m).exp();
            ei = er * vi[k]->sin();
            er = er * vi[k]->cos();
            sr += er;
            si += ei;
            nr += *vr[k] * er - *vi[k] * ei;
            ni += *vr[k] * ei + *vi[k] * er;
          }
          // c = g / sum (complex), P = (nr + i ni) / sum
          auto den = t[13].head(C), cr = t[14].head(C), ci = t[15].head(C), pr = t[0].head(C);
          den = (sr.square() + si.square()).inverse();
          cr = (gr * sr + gi * si) * den;
          ci = (gi * sr - gr * si) * den;
          pr = (nr * sr + ni * si) * den;  // m is no longer needed: t[0] reused
          ni = (ni * sr - nr * si) * den;  // Im P
          for (int k = 0; k < 4; ++k) {
            auto er = t[1 + k].head(C), ei = t[5 + k].head(C);
            // a = 1 + v_k − P; out = e_k · a · c
            auto ar = sr, ai = si;  // sums are no longer needed
            ar = 1.f + *vr[k] - pr;
            ai = *vi[k] - ni;
            auto br = nr;  // b = e_k · a
            br = er * ar - ei * ai;
            ei = er * ai + ei * ar;
            AMap(out + px[k] * C, C) = br * cr - ei * ci;
            AMap(out + out_im + px[k] * C, C) = br * ci + ei * cr;
          }
        }
      }
  }

  // Un rows of `out` += β e(s_out) for the active samples.
  void nudge() {
    const Model& model = field.model();
    const Layer& o = layer(net.out);
    for (Index p = 0; p < active; ++p) {
      const Index j = col_at[static_cast<std::size_t>(p)];
      if constexpr (kComplex) {
        so.col(p).real() = Sx.col(2 * p).segment(o.offset, o.size);
        so.col(p).imag() = Sx.col(2 * p + 1).segment(o.offset, o.size);
      } else {
        so.col(p) = Sx.col(p).segment(o.offset, o.size);
      }
      yn.col(p) = field.y().col(j);
      bn(p) = field.beta()(j);
    }
    auto g = go.leftCols(active);
    g.setZero();
    add_loss_gradient<S>(net, field.theta(), model.loss, so.leftCols(active), yn.leftCols(active), bn.head(active), g,
                         work);
    for (Index p = 0; p < active; ++p) {
      if constexpr (kComplex) {
        Un.col(2 * p).segment(o.offset, o.size) += g.col(p).real();
        Un.col(2 * p + 1).segment(o.offset, o.size) += g.col(p).imag();
      } else {
        Un.col(p).segment(o.offset, o.size) += g.col(p);
      }
    }
  }

  // Residual, damping, norms and σ of position p (Un holds M(u)).
  void epilogue(Index p, double* r, double* a, double* d, const char* watch) {
    const Index j = col_at[static_cast<std::size_t>(p)];
    constexpr float inf = std::numeric_limits<float>::infinity();
    if constexpr (kComplex) {
      AMap ur(Un.col(2 * p).data(), n), ui(Un.col(2 * p + 1).data(), n);
      const CAMap vr(U.col(2 * p).data(), n), vi(U.col(2 * p + 1).data(), n);
      e[0] = ur - vr;
      e[1] = ui - vi;
      const bool nan = e[0].hasNaN() || e[1].hasNaN();
      r[j] = nan ? inf : std::sqrt(static_cast<double>((e[0].square() + e[1].square()).maxCoeff()));
      if (damped) {
        ur = vr + dt * e[0];
        ui = vi + dt * e[1];
      }
      a[j] = nan ? inf : std::sqrt(static_cast<double>((ur.square() + ui.square()).maxCoeff()));
      if (d && watch[j])
        d[j] = std::sqrt(static_cast<double>(
            ((ur - CAMap(Snap.col(2 * p).data(), n)).square() + (ui - CAMap(Snap.col(2 * p + 1).data(), n)).square())
                .maxCoeff()));
    } else {
      AMap u(Un.col(p).data(), n);
      const CAMap v(U.col(p).data(), n);
      e[0] = u - v;
      const bool nan = e[0].hasNaN();
      r[j] = nan ? inf : static_cast<double>(e[0].abs().maxCoeff());
      if (damped) u = v + dt * e[0];
      a[j] = nan ? inf : static_cast<double>(u.abs().maxCoeff());
      if (d && watch[j]) d[j] = static_cast<double>((u - CAMap(Snap.col(p).data(), n)).abs().maxCoeff());
    }
    activate_from(p, Un, Sx);
  }

  void snapshot() { Snap.leftCols(active * sp) = U.leftCols(active * sp); }

  // Removes sample j from the active positions (its final value is already in F).
  void remove(Index j) {
    const Index p = pos_of[static_cast<std::size_t>(j)];
    const Index last = active - 1;
    if (p != last) {
      for (Index h = 0; h < sp; ++h) {
        U.col(p * sp + h) = U.col(last * sp + h);
        Sx.col(p * sp + h) = Sx.col(last * sp + h);
        Snap.col(p * sp + h) = Snap.col(last * sp + h);
      }
      const Index moved = col_at[static_cast<std::size_t>(last)];
      col_at[static_cast<std::size_t>(p)] = moved;
      pos_of[static_cast<std::size_t>(moved)] = p;
    }
    pos_of[static_cast<std::size_t>(j)] = -1;
    --active;
  }

  void freeze(Index j) {
    if (pos_of[static_cast<std::size_t>(j)] < 0) return;
    F.col(j).setZero();
    remove(j);
  }

  void settle(Index j) {
    const Index p = pos_of[static_cast<std::size_t>(j)];
    if (p < 0) return;
    Vec<float> re(n), im(n);
    if constexpr (kComplex) {
      planar(U.col(2 * p).data(), re.data());
      planar(U.col(2 * p + 1).data(), im.data());
      for (Index i = 0; i < n; ++i) F(i, j) = S(re(i), im(i));
    } else {
      planar(U.col(p).data(), re.data());
      F.col(j) = re;
    }
    remove(j);
  }
};

template <class S>
bool conv_map_applies(const Field<S>& field, const RelaxConfig& cfg) {
  const Network& net = field.model().net;
  if (!cfg.fused || cfg.solver != Solver::map || !net.has_conv()) return false;
  if (!flat(net.layers[static_cast<std::size_t>(net.out)])) return false;
  for (const Edge& ed : net.edges)
    if (ed.pre != Network::kInput && !ed.is_conv() &&
        (!flat(net.layers[static_cast<std::size_t>(ed.pre)]) || !flat(net.layers[static_cast<std::size_t>(ed.post)])))
      return false;
  const Activation act = field.model().activation;
  return act == Activation::sigmoid || act == Activation::dsilu;
}

template <class S>
ConvMap<S>::ConvMap(const Field<S>& field, double dt) : impl_(std::make_unique<Impl>(field, dt)) {}
template <class S>
ConvMap<S>::~ConvMap() = default;
template <class S>
void ConvMap<S>::load(const Mat<S>& u) {
  impl_->load(u);
}
template <class S>
void ConvMap<S>::step(double* r, double* a, double* d, const char* watch) {
  impl_->step(r, a, d, watch);
}
template <class S>
void ConvMap<S>::snapshot() {
  impl_->snapshot();
}
template <class S>
void ConvMap<S>::freeze(Index col) {
  impl_->freeze(col);
}
template <class S>
void ConvMap<S>::settle(Index col) {
  impl_->settle(col);
}
template <class S>
void ConvMap<S>::store(Mat<S>& u) const {
  impl_->store(u);
}

template class ConvMap<float>;
template class ConvMap<std::complex<float>>;
template bool conv_map_applies<float>(const Field<float>&, const RelaxConfig&);
template bool conv_map_applies<std::complex<float>>(const Field<std::complex<float>>&, const RelaxConfig&);

}  // namespace hepsim::detail

namespace hepsim {

double engine_flops_per_image_step(const Network& net) {
  // 2 FLOPs per multiply-add of one convolution of geometry g into `cout` channels, as the engine
  // runs it: by F(2x2, 3x3) where that applies (16 per 2x2 block and channel pair), else directly.
  auto conv = [](const ConvGeometry& g, Index cout) {
    if (detail::WinogradConv::applies(g))
      return 2.0 * 16 * static_cast<double>((g.in.h / 2) * (g.in.w / 2) * cout * g.in.c);
    const MapShape o = g.out();
    return 2.0 * static_cast<double>(g.k * g.k * g.in.c * cout * o.h * o.w);
  };
  double f = 0;
  for (const Edge& e : net.edges) {
    if (e.pre == Network::kInput) continue;  // constant during a relaxation: in the drive
    if (!e.is_conv()) {
      f += edge_flops(e);
      continue;
    }
    const ConvGeometry& g = e.conv.conv;  // lower -> upper (a feedback edge's forward partner's)
    if (e.kind == EdgeKind::conv || e.conv.pool) f += conv(g, e.rows);
    if (e.kind != EdgeKind::conv_feedback) continue;
    const MapShape zo = g.out();
    if (zo.h * zo.w < g.in.h * g.in.w) {  // a 'valid' edge: Bᵀ g and col2im
      f += 2.0 * static_cast<double>(g.k * g.k * g.in.c * e.rows * zo.h * zo.w);
    } else {
      f += conv(detail::transpose_geometry(g, e.rows), g.in.c);
    }
  }
  return f;
}

}  // namespace hepsim
