// Winograd F(2x2, 3x3) convolutions (sim/conv/winograd.hpp) against the definition evaluated with
// nested loops in double: channel counts below, at and above the GEMM's 32-row panels, maps from
// 2x2 to 16x16 (square and not), several slots with a sample stride larger than a map, and an
// output column stride larger than C_out (as the engine's stacked GEMMs write it).
#include <doctest/doctest.h>

#include <random>
#include <vector>

#include "sim/conv/winograd.hpp"

using namespace hepsim;
using namespace hepsim::detail;

TEST_CASE("Winograd F(2x2,3x3) equals the 'same' 3x3 convolution of channels-last maps") {
  struct Case {
    Index cin, cout, h, w, slots, pad_stride, ldz_extra;
  };
  const Case cases[] = {{1, 1, 2, 2, 1, 0, 0},    {3, 5, 4, 6, 2, 7, 3},   {32, 64, 16, 16, 3, 0, 0},
                        {64, 33, 8, 8, 2, 5, 11}, {17, 128, 4, 4, 1, 0, 0}};
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  for (const Case& c : cases) {
    CAPTURE(c.cin);
    CAPTURE(c.cout);
    CAPTURE(c.h);
    CAPTURE(c.w);
    const ConvGeometry g{{c.cin, c.h, c.w}, c.cout, 3, 1};
    REQUIRE(WinogradConv::applies(g));
    Mat<float> W(c.cout, 9 * c.cin);  // column (ky·3 + kx)·C_in + ci
    for (Index i = 0; i < W.size(); ++i) W.data()[i] = normal(rng);
    const Index map = c.h * c.w * c.cin, stride = map + c.pad_stride, ldz = c.cout + c.ldz_extra;
    std::vector<float> x(static_cast<std::size_t>(stride * c.slots));
    for (float& v : x) v = normal(rng);
    const WinogradConv wc(W, g.in);
    std::vector<float> scratch(static_cast<std::size_t>(wc.scratch_floats(c.slots)));
    std::vector<float> z(static_cast<std::size_t>(c.slots * c.h * c.w * ldz), -7.f);
    wc.apply(x.data(), stride, c.slots, z.data(), ldz, scratch.data());
    double worst = 0, scale = 0;
    for (Index s = 0; s < c.slots; ++s)
      for (Index oy = 0; oy < c.h; ++oy)
        for (Index ox = 0; ox < c.w; ++ox)
          for (Index co = 0; co < c.cout; ++co) {
            double ref = 0;
            for (Index ky = 0; ky < 3; ++ky)
              for (Index kx = 0; kx < 3; ++kx) {
                const Index iy = oy + ky - 1, ix = ox + kx - 1;
                if (iy < 0 || iy >= c.h || ix < 0 || ix >= c.w) continue;
                for (Index ci = 0; ci < c.cin; ++ci)
                  ref += static_cast<double>(W(co, (ky * 3 + kx) * c.cin + ci)) *
                         static_cast<double>(x[static_cast<std::size_t>(s * stride + (iy * c.w + ix) * c.cin + ci)]);
              }
            const double got = z[static_cast<std::size_t>((s * c.h * c.w + oy * c.w + ox) * ldz + co)];
            worst = std::max(worst, std::abs(got - ref));
            scale = std::max(scale, std::abs(ref));
          }
    // float rounding of sums over 9·C_in products (and the transforms' adds): a few 1e-7 of the
    // largest output per accumulated term; 1e-5 relative is far above that and far below any
    // wrong tap, sign or padding (each is an O(1) relative error).
    CHECK(worst <= 1e-5 * scale);
    // Outside C_out the columns are untouched (the engine stacks several edges' rows there).
    for (Index q = 0; q < c.slots * c.h * c.w; ++q)
      for (Index r = c.cout; r < ldz; ++r) CHECK(z[static_cast<std::size_t>(q * ldz + r)] == -7.f);
  }
  CHECK_FALSE(WinogradConv::applies(ConvGeometry{{4, 5, 6}, 2, 3, 1}));  // odd height
  CHECK_FALSE(WinogradConv::applies(ConvGeometry{{4, 6, 6}, 2, 3, 0}));  // 'valid'
  CHECK_FALSE(WinogradConv::applies(ConvGeometry{{4, 6, 6}, 2, 5, 2}));  // 5x5
}
