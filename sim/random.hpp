#pragma once
// Random streams (STYLE.md, after Arbor): a generator is keyed on *what* it draws for — the run
// seed, a stream (init, shuffle, probes, noise, augmentation) and up to two integer keys such as
// (epoch, batch) — so results do not depend on the thread count or on the order of other draws.
// xoshiro256** seeded through splitmix64; normals by Box–Muller. Portable and bit-reproducible
// (std::normal_distribution is not specified across standard libraries).
#include <array>
#include <cmath>
#include <cstdint>

namespace hepsim {

enum class Stream : std::uint64_t { init = 1, shuffle = 2, probes = 3, noise = 4, augment = 5, data = 6, mismatch = 7 };

class Rng {
 public:
  Rng(std::uint64_t seed, Stream stream, std::uint64_t key1 = 0, std::uint64_t key2 = 0) {
    std::uint64_t x = seed ^ 0x9e3779b97f4a7c15ULL;
    x = mix(x + static_cast<std::uint64_t>(stream) * 0xbf58476d1ce4e5b9ULL);
    x = mix(x + key1 * 0x94d049bb133111ebULL + 0x632be59bd9b4e019ULL);
    x = mix(x + key2 * 0xd6e8feb86659fd93ULL + 0x2545f4914f6cdd1dULL);
    for (auto& w : s_) w = splitmix(x);
  }

  std::uint64_t next() {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  // Uniform on [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  // Uniform integer on [0, n) without modulo bias (Lemire's method would do; rejection is simple).
  std::uint64_t below(std::uint64_t n) {
    const std::uint64_t limit = ~std::uint64_t{0} - (~std::uint64_t{0} % n);
    std::uint64_t r;
    do r = next(); while (r >= limit);
    return r % n;
  }
  // Standard normal (Box–Muller, one value per call: the state stays four words).
  double normal() {
    double u1;
    do u1 = uniform(); while (u1 <= 0.0);
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  // n standard normals, both values of each Box–Muller pair used (half the draws of normal()).
  template <class T>
  void fill_normal(T* out, std::size_t n) {
    std::size_t i = 0;
    for (; i + 1 < n; i += 2) {
      double u1;
      do u1 = uniform(); while (u1 <= 0.0);
      const double rad = std::sqrt(-2.0 * std::log(u1)), ang = 6.283185307179586 * uniform();
      out[i] = static_cast<T>(rad * std::cos(ang));
      out[i + 1] = static_cast<T>(rad * std::sin(ang));
    }
    if (i < n) out[i] = static_cast<T>(normal());
  }
  // n standard normals by the ziggurat method (Marsaglia & Tsang 2000, 128 layers): one 64-bit
  // draw per value in 98.8 % of cases (the layer from the
  // low 7 bits, the value from the high 32, so the two are independent), exp/log only in the
  // rare edge and tail cases. For the state noise: Box–Muller's draws were 55 % of a noisy
  // training step, and the same steps ran 1.6x faster with these (README, Analog substrates).
  template <class T>
  void fill_normal_ziggurat(T* out, std::size_t n) {
    const Ziggurat& z = ziggurat();
    for (std::size_t i = 0; i < n; ++i) {
      std::uint64_t u = next();
      for (;;) {
        const auto iz = static_cast<int>(u & 127);
        const auto hz = static_cast<std::int32_t>(static_cast<std::uint32_t>(u >> 32));
        const double x = hz * z.w[iz];
        if (static_cast<std::uint32_t>(hz < 0 ? -static_cast<std::int64_t>(hz) : hz) < z.k[iz]) {
          out[i] = static_cast<T>(x);
          break;
        }
        if (iz == 0) {  // the tail beyond r, by Marsaglia's exponential method
          double a, b;
          do {
            a = -std::log(1.0 - uniform()) / Ziggurat::r;
            b = -std::log(1.0 - uniform());
          } while (b + b < a * a);
          out[i] = static_cast<T>(hz > 0 ? Ziggurat::r + a : -Ziggurat::r - a);
          break;
        }
        if (z.f[iz] + uniform() * (z.f[iz - 1] - z.f[iz]) < std::exp(-0.5 * x * x)) {  // the wedge
          out[i] = static_cast<T>(x);
          break;
        }
        u = next();
      }
    }
  }

  // Standard normal truncated to [-2, 2] (rejection; acceptance 95.4%).
  double truncated_normal() {
    for (;;) {
      const double z = normal();
      if (z >= -2.0 && z <= 2.0) return z;
    }
  }

  using State = std::array<std::uint64_t, 4>;
  State state() const { return s_; }
  void set_state(const State& s) { s_ = s; }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  static std::uint64_t mix(std::uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  static std::uint64_t splitmix(std::uint64_t& x) {
    x += 0x9e3779b97f4a7c15ULL;
    return mix(x);
  }
  State s_{};

  // The ziggurat's 128 layers: k (acceptance bounds on |hz|), w (scale of hz), f (the density at
  // each layer's edge), for a 32-bit signed hz.
  struct Ziggurat {
    static constexpr double r = 3.442619855899;  // the base layer's edge
    std::array<std::uint32_t, 128> k{};
    std::array<double, 128> w{}, f{};
    Ziggurat() {
      const double m = 2147483648.0, v = 9.91256303526217e-3;
      double d = r, t = r;
      const double q = v / std::exp(-0.5 * d * d);
      k[0] = static_cast<std::uint32_t>(d / q * m);
      k[1] = 0;
      w[0] = q / m;
      w[127] = d / m;
      f[0] = 1.0;
      f[127] = std::exp(-0.5 * d * d);
      for (int i = 126; i >= 1; --i) {
        d = std::sqrt(-2.0 * std::log(v / d + std::exp(-0.5 * d * d)));
        k[static_cast<std::size_t>(i + 1)] = static_cast<std::uint32_t>(d / t * m);
        t = d;
        f[static_cast<std::size_t>(i)] = std::exp(-0.5 * d * d);
        w[static_cast<std::size_t>(i)] = d / m;
      }
    }
  };
  static const Ziggurat& ziggurat() {
    static const Ziggurat z;
    return z;
  }
};

}  // namespace hepsim
