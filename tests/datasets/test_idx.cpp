// IDX loader (MNIST / Fashion-MNIST): round trips on generated files, every validation error,
// and the real Fashion-MNIST files when the Debian package is installed.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <numeric>

#include "datasets/dataset.hpp"
#include "helpers.hpp"

using namespace hepsim;
using namespace hepsim::test;

namespace {

// 3 images of 2x3 pixels, labels 7, 0, 9.
const std::vector<std::uint8_t> kLabels = {7, 0, 9};
Bytes small_images() { return idx_file({3, 2, 3}, pixels(3, 6)); }
Bytes small_labels() { return idx_file({3}, kLabels); }

void check_small(const Dataset& d, Index n) {
  CHECK(d.n == n);
  CHECK(d.channels == 1);
  CHECK(d.height == 2);
  CHECK(d.width == 3);
  CHECK(d.classes == 10);
  CHECK(d.dim() == 6);
  REQUIRE(d.images.size() == static_cast<std::size_t>(n * 6));
  REQUIRE(d.labels.size() == static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) {
    CHECK(d.labels[i] == kLabels[i]);
    for (Index k = 0; k < 6; ++k) CHECK(d.image(i)[k] == pixel(i, k));
  }
}

}  // namespace

TEST_CASE("read_idx: raw and gzip files round trip, with and without a limit") {
  TempDir dir;
  write_file(dir.file("images"), small_images());
  write_file(dir.file("labels"), small_labels());
  write_gz(dir.file("images.gz"), small_images());
  write_gz(dir.file("labels.gz"), small_labels());
  SUBCASE("raw") { check_small(read_idx(dir.file("images"), dir.file("labels")), 3); }
  SUBCASE("gzip") { check_small(read_idx(dir.file("images.gz"), dir.file("labels.gz")), 3); }
  SUBCASE("mixed") { check_small(read_idx(dir.file("images.gz"), dir.file("labels")), 3); }
  SUBCASE("limit keeps the first images") {
    check_small(read_idx(dir.file("images"), dir.file("labels"), 10, 2), 2);
    check_small(read_idx(dir.file("images.gz"), dir.file("labels.gz"), 10, 2), 2);
    check_small(read_idx(dir.file("images.gz"), dir.file("labels.gz"), 10, 99), 3);
  }
}

TEST_CASE("load_dataset(fmnist): finds the .gz and the uncompressed names, names the splits") {
  TempDir dir;
  write_gz(dir.file("train-images-idx3-ubyte.gz"), small_images());
  write_gz(dir.file("train-labels-idx1-ubyte.gz"), small_labels());
  write_file(dir.file("t10k-images-idx3-ubyte"), idx_file({1, 2, 3}, pixels(1, 6)));
  write_file(dir.file("t10k-labels-idx1-ubyte"), idx_file({1}, {7}));
  const DatasetSplits s = load_dataset(DatasetKind::fmnist, dir.str());
  check_small(s.train, 3);
  check_small(s.test, 1);
  CHECK(s.train.name == "fmnist/train");
  CHECK(s.test.name == "fmnist/test");
  const Dataset t = load_test_split(DatasetKind::mnist, dir.str());
  CHECK(t.name == "mnist/test");
  check_small(t, 1);
}

TEST_CASE("read_idx: every malformed file gives an InputError naming it") {
  TempDir dir;
  const std::string images = dir.file("images"), labels = dir.file("labels");
  write_file(images, small_images());
  write_file(labels, small_labels());
  const auto load = [&] { return read_idx(images, labels); };

  SUBCASE("bad magic") {
    Bytes b = small_images();
    b[0] = 0x12;
    write_file(images, b);
    check_input_error(load, images, "bad magic number 0x12000803");
  }
  SUBCASE("labels file where the images belong") {
    write_file(images, small_labels());
    check_input_error(load, images, "bad magic number 0x00000801, expected 0x00000803");
  }
  SUBCASE("wrong element type byte") {
    write_file(images, idx_file({3, 2, 3}, pixels(3, 6), 0x0D));
    check_input_error(load, images, "IDX element type 0x0D is not 0x08");
  }
  SUBCASE("truncated raw images file") {
    Bytes b = small_images();
    b.resize(b.size() - 4);
    write_file(images, b);
    check_input_error(load, images, "truncated: header claims 3 images of 2x3 (18 bytes) but the file holds only 14");
  }
  SUBCASE("trailing bytes after the last image") {
    Bytes b = small_images();
    b.push_back(0);
    write_file(images, b);
    check_input_error(load, images, "1 bytes of unexpected data");
  }
  SUBCASE("truncated gzip stream: the exact record is named") {
    // 200 images of 10x10 = 20000 bytes of incompressible-ish data, cut in the middle.
    const Bytes data = pixels(200, 100);
    write_gz(images, idx_file({200, 10, 10}, data));
    write_file(labels, idx_file({200}, Bytes(200, 1)));
    Bytes gz = read_file(images);
    gz.resize(gz.size() / 2);
    write_file(images, gz);
    check_input_error(load, images, "truncated gzip stream");
    try {
      load();
    } catch (const InputError& e) {
      CHECK(e.record() > 0);
      CHECK(e.record() < 200);
    }
  }
  SUBCASE("gzip stream cut inside its trailer") {
    write_gz(images, small_images());
    Bytes gz = read_file(images);
    gz.resize(gz.size() - 3);  // the 8-byte trailer holds CRC-32 and length
    write_file(images, gz);
    check_input_error(load, images, "truncated gzip stream");
  }
  SUBCASE("corrupt gzip data (CRC-32 mismatch)") {
    write_gz(images, small_images());
    Bytes gz = read_file(images);
    gz[gz.size() - 8] ^= 0xFF;  // first byte of the stored CRC-32
    write_file(images, gz);
    check_input_error(load, images, "corrupt gzip stream");
  }
  SUBCASE("header claiming a huge image count is rejected before allocating") {
    write_file(images, idx_file({0xFFFFFFFFu, 28, 28}, pixels(1, 784)));
    check_input_error(load, images, "truncated: header claims 4294967295 images of 28x28");
    write_gz(images, idx_file({0xFFFFFFFFu, 28, 28}, pixels(1, 784)));
    check_input_error(load, images, "truncated or corrupt: header claims 4294967295 images of 28x28");
  }
  SUBCASE("implausible image size") {
    write_file(images, idx_file({3, 0xFFFFFFFFu, 0xFFFFFFFFu}, {}));
    check_input_error(load, images, "implausible image size 4294967295x4294967295");
  }
  SUBCASE("label out of range, with its record") {
    write_file(labels, idx_file({3}, {7, 10, 9}));
    check_input_error(load, labels, "record 1: label 10 out of range 0..9");
  }
  SUBCASE("images / labels count mismatch") {
    write_file(labels, idx_file({2}, {7, 0}));
    check_input_error(load, labels, "count mismatch: 2 labels but " + images + " has 3 images");
  }
  SUBCASE("missing file") {
    std::filesystem::remove(labels);
    check_input_error(load, labels, "file not found");
  }
  SUBCASE("missing file in a data directory: the expected name is given") {
    TempDir empty;
    check_input_error([&] { load_test_split(DatasetKind::fmnist, empty.str()); },
                      empty.file("t10k-images-idx3-ubyte.gz"), "file not found (nor ");
  }
}

// The gzip trailer (CRC-32, then the length mod 2^32, 8 bytes) is the only integrity check a
// .gz file has; a file read to its end must have had it checked. Two sizes, because zlib's gzread
// took two paths: the small file is inflated through its internal buffer, which noticed a cut
// trailer; the large one (content > 2 x its 256 KiB buffer after the header) is inflated straight
// into the caller's buffer, which swallowed a partial trailer and then reported a clean end.
TEST_CASE("read_idx: a gzip file read to its end must end with its verified trailer") {
  TempDir dir;
  const std::string images = dir.file("images.gz"), labels = dir.file("labels.gz");
  const auto load = [&] { return read_idx(images, labels); };
  struct Size {
    const char* name;
    std::uint32_t n, side;
  };
  for (const Size size : {Size{"small", 3, 2}, Size{"large: 2000 x 28x28, 1.5 MB", 2000, 28}}) {
    const std::string name = size.name;
    CAPTURE(name);
    const std::size_t dim = std::size_t{size.side} * size.side;
    const Bytes image_file = idx_file({size.n, size.side, size.side}, pixels(size.n, dim));
    write_gz(images, image_file);
    write_gz(labels, idx_file({size.n}, Bytes(size.n, 3)));
    const Bytes gz = read_file(images);
    REQUIRE(gz.size() > 9);
    const auto check_loads = [&] {
      const Dataset d = load();
      REQUIRE(d.n == static_cast<Index>(size.n));
      CHECK(std::equal(d.images.begin(), d.images.end(), image_file.begin() + 16));
    };

    check_loads();
    // 1..8 bytes cut: inside the trailer; 9: also the last byte of the deflate data.
    for (const std::size_t cut : {1, 4, 8, 9}) {
      CAPTURE(cut);
      write_file(images, Bytes(gz.begin(), gz.end() - static_cast<std::ptrdiff_t>(cut)));
      check_input_error(load, images, "truncated gzip stream");
    }
    {
      Bytes b = gz;
      b[b.size() - 8] ^= 0x01;  // first byte of the stored CRC-32
      write_file(images, b);
      check_input_error(load, images, "corrupt gzip stream: incorrect data check");
      b = gz;
      b[b.size() - 1] ^= 0x01;  // last byte of the stored length
      write_file(images, b);
      check_input_error(load, images, "corrupt gzip stream: incorrect length check");
    }

    // Decision: members back to back are legal gzip (RFC 1952 2.2, what `cat a.gz b.gz` gives;
    // gzip -d reads them as one content), so the content may be split across members. Any other
    // bytes after a member are not gzip data and are rejected, like bytes after a plain file's
    // content (gzread ignored them silently); zero padding is no exception.
    {
      const std::string part = dir.file("part.gz");
      const auto middle = image_file.begin() + static_cast<std::ptrdiff_t>(image_file.size() / 2);
      write_gz(part, Bytes(image_file.begin(), middle));
      Bytes both = read_file(part);
      write_gz(part, Bytes(middle, image_file.end()));
      const Bytes second = read_file(part);
      both.insert(both.end(), second.begin(), second.end());
      write_file(images, both);
      check_loads();
      both.resize(both.size() - 4);  // the second member's trailer is checked as well
      write_file(images, both);
      check_input_error(load, images, "truncated gzip stream");
    }
    write_file(images, gz);
    const Bytes label_gz = read_file(labels);
    const std::string garbage = "garbage!";
    Bytes b = label_gz;
    b.insert(b.end(), garbage.begin(), garbage.end());
    write_file(labels, b);
    check_input_error(load, labels, "8 bytes of unexpected data after the end of the gzip stream");
    b = label_gz;
    b.push_back(0x1f);  // a lone first magic byte is no member either
    write_file(labels, b);
    check_input_error(load, labels, "1 bytes of unexpected data after the end of the gzip stream");
    b = label_gz;
    b.resize(b.size() + 512, 0);
    write_file(labels, b);
    check_input_error(load, labels, "512 bytes of unexpected data after the end of the gzip stream");
    b = label_gz;
    b.insert(b.end(), {0x1f, 0x8b, 0x08, 0x00});  // the start of a member, cut: truncated
    write_file(labels, b);
    check_input_error(load, labels, "truncated gzip stream");
  }
}

// The audit's reproduction on the real file: the 10000 test images with the last 4 bytes cut.
TEST_CASE("read_idx: the real Fashion-MNIST test images cut inside the gzip trailer") {
  const std::string dir = default_data_dir(DatasetKind::fmnist);
  if (!std::filesystem::exists(dir + "/t10k-images-idx3-ubyte.gz")) {
    MESSAGE("Fashion-MNIST not installed in " << dir << " (Debian package dataset-fashion-mnist): skipped");
    return;
  }
  TempDir cut;
  const std::string images = cut.file("t10k-images-idx3-ubyte.gz");
  Bytes gz = read_file(dir + "/t10k-images-idx3-ubyte.gz");
  gz.resize(gz.size() - 4);
  write_file(images, gz);
  std::filesystem::copy_file(dir + "/t10k-labels-idx1-ubyte.gz", cut.file("t10k-labels-idx1-ubyte.gz"));
  check_input_error([&] { load_test_split(DatasetKind::fmnist, cut.str()); }, images, "truncated gzip stream");
}

TEST_CASE("read_idx: the real Fashion-MNIST files") {
  const std::string dir = default_data_dir(DatasetKind::fmnist);
  if (!std::filesystem::exists(dir + "/train-images-idx3-ubyte.gz")) {
    MESSAGE("Fashion-MNIST not installed in " << dir << " (Debian package dataset-fashion-mnist): skipped");
    return;
  }
  const auto start = std::chrono::steady_clock::now();
  const DatasetSplits s = load_dataset(DatasetKind::fmnist, dir);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  MESSAGE("loading Fashion-MNIST (train + test) took " << seconds << " s");
  // Loose bound (about 0.3 s measured): only catches a pathological slowdown on a shared host.
  CHECK(seconds < 5.0);

  // Expected values computed independently with Python's gzip + numpy.
  const struct {
    const Dataset& d;
    Index n;
    int per_class;
    std::vector<int> first_labels;
    std::uint64_t first_image_sum, pixel_sum;
  } cases[] = {{s.train, 60000, 6000, {9, 0, 0, 3, 0, 2, 7, 2, 5, 5}, 76247, 3431114169ull},
               {s.test, 10000, 1000, {9, 2, 1, 1, 6, 1, 4, 6, 5, 7}, 33456, 573469082ull}};
  for (const auto& c : cases) {
    CHECK(c.d.n == c.n);
    CHECK(c.d.channels == 1);
    CHECK(c.d.height == 28);
    CHECK(c.d.width == 28);
    CHECK(c.d.classes == 10);
    std::vector<int> count(10, 0);
    for (const std::int32_t l : c.d.labels) {
      REQUIRE(l >= 0);
      REQUIRE(l < 10);
      ++count[l];
    }
    for (int k = 0; k < 10; ++k) CHECK(count[k] == c.per_class);
    for (int i = 0; i < 10; ++i) CHECK(c.d.labels[i] == c.first_labels[i]);
    CHECK(std::accumulate(c.d.image(0), c.d.image(1), std::uint64_t{0}) == c.first_image_sum);
    CHECK(std::accumulate(c.d.images.begin(), c.d.images.end(), std::uint64_t{0}) == c.pixel_sum);
  }
  CHECK(s.train.image(0)[14 * 28 + 14] == 217);

  const Dataset limited = load_test_split(DatasetKind::fmnist, dir, 100);
  CHECK(limited.n == 100);
  CHECK(std::equal(limited.images.begin(), limited.images.end(), s.test.images.begin()));
}
