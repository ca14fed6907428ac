// make_batch (normalisation, one-hot, flip / crop augmentation), shuffled_indices, defaults.
#include <algorithm>
#include <set>

#include "datasets/dataset.hpp"
#include "helpers.hpp"

using namespace hepsim;
using namespace hepsim::test;

namespace {

// n images of C x H x W with pixel(i, k) values and labels i % classes.
Dataset synthetic(Index n, int c, int h, int w, int classes) {
  Dataset d;
  d.name = "synthetic";
  d.n = n;
  d.channels = c;
  d.height = h;
  d.width = w;
  d.classes = classes;
  d.images = pixels(static_cast<std::size_t>(n), static_cast<std::size_t>(c * h * w));
  for (Index i = 0; i < n; ++i) d.labels.push_back(static_cast<std::int32_t>(i % classes));
  return d;
}

}  // namespace

TEST_CASE_TEMPLATE("make_batch: CIFAR normalisation of known pixels and one-hot labels", R, float, double) {
  const Dataset d = synthetic(4, 3, 2, 2, 10);
  const Normalization norm = default_normalization(DatasetKind::cifar10);
  const Index idx[2] = {3, 1};
  Mat<R> x(12, 2), y(10, 2);
  make_batch<R>(d, idx, 2, norm, Augmentation{}, nullptr, x, y);
  for (Index j = 0; j < 2; ++j)
    for (int c = 0; c < 3; ++c)
      for (int k = 0; k < 4; ++k) {
        const std::uint8_t p = pixel(static_cast<std::size_t>(idx[j]), static_cast<std::size_t>(c * 4 + k));
        // The documented formula, evaluated in double and rounded once to R.
        const double want = (p / 255.0 - static_cast<double>(norm.mean[c])) / (1.5 * static_cast<double>(norm.std[c]));
        CHECK(x(c * 4 + k, j) == static_cast<R>(want));
      }
  // A hand-evaluated pixel: image 3, channel 0, pixel 0 = 3*37+1 = 112:
  // (112/255 - 0.4914) / (1.5 * 0.2023) = -0.17197 (to 5 digits).
  CHECK(pixel(3, 0) == 112);
  CHECK(static_cast<double>(x(0, 0)) == doctest::Approx(-0.17197).epsilon(1e-4));
  // One-hot: labels 3 % 10 = 3 and 1.
  for (int k = 0; k < 10; ++k) {
    CHECK(y(k, 0) == R(k == 3 ? 1 : 0));
    CHECK(y(k, 1) == R(k == 1 ? 1 : 0));
  }
}

TEST_CASE("make_batch: (F)MNIST normalisation is x/255") {
  const Dataset d = synthetic(2, 1, 3, 3, 10);
  const Index idx[1] = {1};
  Mat<double> x(9, 1), y(10, 1);
  make_batch<double>(d, idx, 1, default_normalization(DatasetKind::fmnist), default_augmentation(DatasetKind::fmnist),
                     nullptr, x, y);
  for (int k = 0; k < 9; ++k) CHECK(x(k, 0) == pixel(1, static_cast<std::size_t>(k)) / 255.0);
  CHECK(y(1, 0) == 1.0);
}

TEST_CASE("make_batch: flip mirrors each row, crop is a shifted copy with zero padding") {
  constexpr int C = 2, H = 5, W = 6;
  const Dataset d = synthetic(3, C, H, W, 10);
  const Normalization identity;  // x = pixel / 255, so the zero padding is exactly 0
  std::vector<Index> idx(60);
  for (std::size_t j = 0; j < idx.size(); ++j) idx[j] = static_cast<Index>(j % 3);
  const auto count = static_cast<Index>(idx.size());
  Mat<double> x(C * H * W, count), y(10, count);

  SUBCASE("flip only") {
    Rng rng(7, Stream::augment, 1), twin = rng;
    make_batch<double>(d, idx.data(), count, identity, {true, 0}, &rng, x, y);
    int flipped = 0;
    for (Index j = 0; j < count; ++j) {
      const bool flip = twin.uniform() < 0.5;  // the documented draw order
      flipped += flip;
      for (int c = 0; c < C; ++c)
        for (int r = 0; r < H; ++r)
          for (int q = 0; q < W; ++q) {
            const int src = flip ? W - 1 - q : q;
            REQUIRE(x((c * H + r) * W + q, j) * 255.0 ==
                    doctest::Approx(pixel(static_cast<std::size_t>(idx[j]), static_cast<std::size_t>((c * H + r) * W + src))));
          }
    }
    CHECK(flipped > 10);  // 60 fair coins: P(<= 10 heads) < 1e-6
    CHECK(flipped < 50);
  }
  SUBCASE("crop only, pad 2") {
    constexpr int pad = 2;
    Rng rng(11, Stream::augment, 3), twin = rng;
    make_batch<double>(d, idx.data(), count, identity, {false, pad}, &rng, x, y);
    std::set<std::pair<int, int>> offsets;
    for (Index j = 0; j < count; ++j) {
      const int dy = static_cast<int>(twin.below(2 * pad + 1)), dx = static_cast<int>(twin.below(2 * pad + 1));
      offsets.insert({dy, dx});
      for (int c = 0; c < C; ++c)
        for (int r = 0; r < H; ++r)
          for (int q = 0; q < W; ++q) {
            const int sr = r + dy - pad, sq = q + dx - pad;
            const bool inside = sr >= 0 && sr < H && sq >= 0 && sq < W;
            const double want =
                inside ? pixel(static_cast<std::size_t>(idx[j]), static_cast<std::size_t>((c * H + sr) * W + sq)) / 255.0
                       : 0.0;
            REQUIRE(x((c * H + r) * W + q, j) == want);
          }
    }
    CHECK(offsets.size() > 15);  // 60 draws over 25 offsets (expected about 23 distinct)
  }
  SUBCASE("flip and crop together, same rng stream gives the same batch") {
    Rng a(5, Stream::augment, 9), b(5, Stream::augment, 9);
    Mat<double> x2(C * H * W, count), y2(10, count);
    make_batch<double>(d, idx.data(), count, identity, {true, 1}, &a, x, y);
    make_batch<double>(d, idx.data(), count, identity, {true, 1}, &b, x2, y2);
    CHECK(x == x2);
    CHECK(y == y2);
  }
}

TEST_CASE("make_batch: padding is the raw value 0, normalised like any pixel") {
  const Dataset d = synthetic(1, 3, 4, 4, 10);
  const Normalization norm = default_normalization(DatasetKind::cifar10);
  const Index idx[1] = {0};
  Mat<float> x(48, 1), y(10, 1);
  // Find a seed whose first draws shift the crop down by the full pad (dy = 2 * pad): the first
  // output row then comes from padding.
  for (std::uint64_t seed = 0;; ++seed) {
    Rng probe(seed, Stream::augment);
    if (probe.below(5) != 4) continue;
    Rng rng(seed, Stream::augment);
    make_batch<float>(d, idx, 1, norm, {false, 2}, &rng, x, y);
    break;
  }
  // Output rows 2, 3 (of 4) are padding: r + dy - pad = r + 2 >= 4.
  for (int c = 0; c < 3; ++c)
    for (int q = 0; q < 4; ++q) {
      const float zero = static_cast<float>((0.0 - norm.mean[c]) / (1.5 * static_cast<double>(norm.std[c])));
      CHECK(x((c * 4 + 3) * 4 + q, 0) == zero);
      CHECK(x((c * 4 + 2) * 4 + q, 0) == zero);
    }
}

TEST_CASE("make_batch: misuse is reported") {
  const Dataset d = synthetic(2, 1, 2, 2, 3);
  const Index idx[1] = {0}, bad[1] = {2};
  Mat<float> x(4, 1), y(3, 1), wrong(5, 1);
  CHECK_THROWS_AS(make_batch<float>(d, idx, 1, {}, {true, 0}, nullptr, x, y), std::invalid_argument);
  CHECK_THROWS_AS(make_batch<float>(d, idx, 1, {}, {}, nullptr, wrong, y), std::invalid_argument);
  CHECK_THROWS_AS(make_batch<float>(d, bad, 1, {}, {}, nullptr, x, y), std::out_of_range);
  CHECK_THROWS_AS(make_batch<float>(d, idx, 1, default_normalization(DatasetKind::cifar10), {}, nullptr, x, y),
                  std::invalid_argument);  // 3 channel means for a 1-channel image
}

TEST_CASE("shuffled_indices: a seeded permutation, different per epoch") {
  const std::vector<Index> a = shuffled_indices(1000, 42, 0);
  std::vector<Index> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (Index i = 0; i < 1000; ++i) REQUIRE(sorted[i] == i);
  CHECK(a == shuffled_indices(1000, 42, 0));
  CHECK(a != shuffled_indices(1000, 42, 1));
  CHECK(a != shuffled_indices(1000, 43, 0));
  // Fisher–Yates with Rng(seed, Stream::shuffle, epoch), replayed by hand for n = 4.
  Rng rng(42, Stream::shuffle, 5);
  std::vector<Index> want = {0, 1, 2, 3};
  for (Index i = 3; i > 0; --i) std::swap(want[i], want[rng.below(static_cast<std::uint64_t>(i + 1))]);
  CHECK(shuffled_indices(4, 42, 5) == want);
  CHECK(shuffled_indices(0, 1, 0).empty());
  CHECK(shuffled_indices(1, 1, 0) == std::vector<Index>{0});
}

TEST_CASE("dataset kinds, default normalisation and augmentation") {
  for (const char* name : {"fmnist", "mnist", "cifar10", "cifar100", "imagenet32", "imagenet64", "h5"})
    CHECK(std::string(to_string(parse_dataset_kind(name))) == name);
  check_input_error([] { parse_dataset_kind("cifar"); }, "--dataset", "unknown dataset 'cifar'");
  check_input_error([] { parse_dataset_kind("x", "config key dataset"); }, "config key dataset", "unknown dataset");

  const Normalization f = default_normalization(DatasetKind::fmnist);
  CHECK(f.mean.empty());
  CHECK(f.std.empty());
  CHECK(f.scale == 1.0f);
  const Normalization c = default_normalization(DatasetKind::cifar100);
  CHECK(c.mean == std::vector<float>{0.4914f, 0.4822f, 0.4465f});
  CHECK(c.std == std::vector<float>{0.2023f, 0.1994f, 0.2010f});
  CHECK(c.scale == 1.5f);
  const Normalization i = default_normalization(DatasetKind::imagenet64);
  CHECK(i.mean == std::vector<float>{0.485f, 0.456f, 0.406f});
  CHECK(i.std == std::vector<float>{0.229f, 0.224f, 0.225f});
  CHECK(i.scale == 1.5f);
  CHECK(default_normalization(DatasetKind::h5).mean.empty());

  CHECK_FALSE(default_augmentation(DatasetKind::mnist).flip);
  CHECK(default_augmentation(DatasetKind::mnist).pad == 0);
  CHECK(default_augmentation(DatasetKind::cifar10).flip);
  CHECK(default_augmentation(DatasetKind::cifar10).pad == 2);
  CHECK(default_augmentation(DatasetKind::imagenet32).pad == 2);
  CHECK(default_augmentation(DatasetKind::imagenet64).pad == 4);

  CHECK(default_data_dir(DatasetKind::fmnist) == "/usr/share/datasets/fashion-mnist");
  CHECK(default_data_dir(DatasetKind::cifar10).empty());
  check_input_error([] { load_dataset(DatasetKind::cifar10, ""); }, "--data-dir", "no default data directory for cifar10");
  check_input_error([] { load_dataset(DatasetKind::cifar10, "/nonexistent/hepsim"); }, "/nonexistent/hepsim",
                    "data directory not found");
}
