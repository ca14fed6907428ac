// Downsampled ImageNet npz loader on zip archives written by hand (stored and deflated entries).
#include <algorithm>

#include "datasets/dataset.hpp"
#include "helpers.hpp"

using namespace hepsim;
using namespace hepsim::test;

namespace {

void check_pixels(const Dataset& d, Index i, std::size_t source_image) {
  for (Index k = 0; k < d.dim(); ++k) REQUIRE(d.image(i)[k] == pixel(source_image, static_cast<std::size_t>(k)));
}

// Offsets inside the archives written by zip_archive: the first member's local header is at 0,
// its data follow the 30-byte header and the name; the end record is the last 22 bytes.
constexpr std::size_t first_data = 30 + 8;  // "data.npy"
std::size_t directory_offset(const Bytes& zip) {
  const std::size_t e = zip.size() - 22;
  return zip[e + 16] | zip[e + 17] << 8 | zip[e + 18] << 16 | static_cast<std::size_t>(zip[e + 19]) << 24;
}

Bytes single_npz(const Bytes& data_npy, const Bytes& labels_npy, bool deflate = false) {
  return zip_archive({{"data.npy", data_npy, deflate}, {"labels.npy", labels_npy, deflate}});
}

}  // namespace

TEST_CASE("read_imagenet_npz: stored and deflated archives, 1-based labels, limits") {
  TempDir dir;
  write_file(dir.file("stored.npz"), imagenet_npz({1, 1000}, 32, false, 0));
  write_file(dir.file("deflated.npz"), imagenet_npz({500}, 32, true, 2));
  const std::vector<std::string> paths = {dir.file("stored.npz"), dir.file("deflated.npz")};
  const Dataset d = read_imagenet_npz(paths, 32);
  CHECK(d.n == 3);
  CHECK(d.channels == 3);
  CHECK(d.height == 32);
  CHECK(d.width == 32);
  CHECK(d.classes == 1000);
  CHECK(d.labels == std::vector<std::int32_t>{0, 999, 499});
  for (Index i = 0; i < 3; ++i) check_pixels(d, i, static_cast<std::size_t>(i));

  const Dataset two = read_imagenet_npz(paths, 32, 2);
  CHECK(two.n == 2);
  CHECK(two.labels == std::vector<std::int32_t>{0, 999});
  CHECK(two.images.size() == 2u * 3072);
  const Dataset one = read_imagenet_npz({dir.file("deflated.npz")}, 32, 1);
  CHECK(one.labels == std::vector<std::int32_t>{499});
  check_pixels(one, 0, 2);
}

TEST_CASE("read_imagenet_npz: label dtypes and a 4-D data shape") {
  TempDir dir;
  const std::string path = dir.file("b.npz");
  const Bytes data = pixels(2, 3 * 8 * 8);
  struct Case {
    const char* descr;
    Bytes labels;
  };
  const Case cases[] = {
      {"<i4", {7, 0, 0, 0, 0xE8, 0x03, 0, 0}},                   // 7, 1000
      {"<u2", {7, 0, 0xE8, 0x03}},                               // 7, 1000
      {">i8", {0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 3, 0xE8}},  // big-endian 7, 1000
      {"|u1", {7, 200}},                                         // 7, 200
  };
  for (const Case& c : cases) {
    CAPTURE(c.descr);
    write_file(path, single_npz(npy("|u1", "(2, 3, 8, 8)", data), npy(c.descr, "(2,)", c.labels), true));
    const Dataset d = read_imagenet_npz({path}, 8);
    CHECK(d.labels[0] == 6);
    CHECK(d.labels[1] == (std::string(c.descr) == "|u1" ? 199 : 999));
    check_pixels(d, 1, 1);
  }
}

TEST_CASE("load_dataset(imagenet32 / imagenet64): official file names") {
  TempDir dir;
  for (int b = 1; b <= 10; ++b)
    write_file(dir.file("train_data_batch_" + std::to_string(b) + ".npz"),
               imagenet_npz({b}, 32, b % 2 == 0, static_cast<std::size_t>(b)));
  write_file(dir.file("val_data.npz"), imagenet_npz({3, 4}, 32, false, 20));
  const DatasetSplits s = load_dataset(DatasetKind::imagenet32, dir.str(), 0, 1);
  CHECK(s.train.n == 10);
  CHECK(s.train.labels == std::vector<std::int32_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  check_pixels(s.train, 9, 10);
  CHECK(s.test.n == 1);
  CHECK(s.test.labels == std::vector<std::int32_t>{2});
  CHECK(s.test.name == "imagenet32/test");
  // A 32x32 file is not a 64x64 one.
  check_input_error([&] { load_test_split(DatasetKind::imagenet64, dir.str()); }, dir.file("val_data.npz"),
                    "data shape (2, 3072) does not hold 64x64 RGB images");

  TempDir big;
  write_file(big.file("val_data.npz"), imagenet_npz({1000}, 64, true));
  const Dataset v = load_test_split(DatasetKind::imagenet64, big.str());
  CHECK(v.height == 64);
  CHECK(v.labels == std::vector<std::int32_t>{999});
  check_pixels(v, 0, 0);
  check_input_error([&] { load_dataset(DatasetKind::imagenet64, big.str()); }, big.file("train_data_batch_1.npz"),
                    "file not found");
}

TEST_CASE("read_imagenet_npz: malformed archives give an InputError naming the file") {
  TempDir dir;
  const std::string path = dir.file("val_data.npz");
  const auto load = [&] { return read_imagenet_npz({path}, 32); };
  const Bytes data1 = npy("|u1", "(1, 3072)", pixels(1, 3072));
  const Bytes label1 = npy("<i8", "(1,)", int64_le({1}));

  SUBCASE("label 0 and label 1001 (the file's labels are 1-based)") {
    write_file(path, imagenet_npz({5, 0}, 32, true));
    check_input_error(load, path, "record 1: label 0 out of range 1..1000");
    write_file(path, imagenet_npz({1001}, 32, false));
    check_input_error(load, path, "record 0: label 1001 out of range 1..1000");
    write_file(path, imagenet_npz({-3}, 32, false));
    check_input_error(load, path, "label -3 out of range");
  }
  SUBCASE("an entry given twice (numpy reads the last, hepsim read the first): ambiguous, refused") {
    write_file(path, zip_archive({{"data.npy", data1, false},
                                  {"labels.npy", label1, false},
                                  {"labels.npy", npy("<i8", "(1,)", int64_le({1000})), false}}));
    check_input_error(load, path, "holds 'labels.npy' twice");
  }
  SUBCASE("bad CRC-32: corrupted stored pixels") {
    Bytes zip = imagenet_npz({1}, 32, false);
    zip[first_data + 200] ^= 0x01;
    write_file(path, zip);
    check_input_error(load, path, "entry 'data.npy': CRC-32 mismatch");
  }
  SUBCASE("bad CRC-32 in the directory of a deflated entry") {
    Bytes zip = imagenet_npz({1}, 32, true);
    zip[directory_offset(zip) + 16] ^= 0x01;
    write_file(path, zip);
    check_input_error(load, path, "entry 'data.npy': CRC-32 mismatch");
  }
  SUBCASE("corrupt deflate data") {
    Bytes zip = imagenet_npz({1}, 32, true);
    zip[first_data] = 0xFF;  // BFINAL = 1, BTYPE = 11: a reserved block type
    write_file(path, zip);
    check_input_error(load, path, "entry 'data.npy': corrupt deflate data: invalid block type");
  }
  SUBCASE("data shape does not match 3x32x32") {
    write_file(path, single_npz(npy("|u1", "(1, 3000)", Bytes(3000, 1)), label1));
    check_input_error(load, path, "data shape (1, 3000) does not hold 32x32 RGB images (3072 bytes each)");
  }
  SUBCASE("npy header disagrees with the entry size") {
    write_file(path, single_npz(npy("|u1", "(2, 3072)", pixels(1, 3072)), label1));
    check_input_error(load, path, "the npy array needs 6144 bytes but the entry holds 3072");
  }
  SUBCASE("data and labels counts differ") {
    write_file(path, single_npz(data1, npy("<i8", "(2,)", int64_le({1, 2}))));
    check_input_error(load, path, "count mismatch: 2 labels but 1 images");
  }
  SUBCASE("data not uint8, labels not integers, Fortran order") {
    write_file(path, single_npz(npy("<i2", "(1, 1536)", pixels(1, 3072)), label1));
    check_input_error(load, path, "data must be uint8");
    write_file(path, single_npz(data1, npy("<f8", "(1,)", Bytes(8, 0))));
    check_input_error(load, path, "labels must be integers");
    write_file(path, single_npz(npy("|u1", "(1, 3072)", pixels(1, 3072), true), label1));
    check_input_error(load, path, "fortran_order arrays are not supported");
  }
  SUBCASE("missing labels array") {
    write_file(path, zip_archive({{"data.npy", data1, false}}));
    check_input_error(load, path, "no 'labels.npy' array in the archive");
  }
  SUBCASE("not an npy array") {
    write_file(path, single_npz(Bytes(100, 'x'), label1));
    check_input_error(load, path, "entry 'data.npy': not an npy array");
  }
  SUBCASE("malformed npy header") {
    Bytes bad = npy("|u1", "(1, 3072)", pixels(1, 3072));
    const std::string key = "'shape'";
    std::copy(key.begin(), key.end(), std::find(bad.begin(), bad.end(), '('));  // a string where the tuple was
    write_file(path, single_npz(bad, label1));
    check_input_error(load, path, "malformed npy header");
  }
  SUBCASE("not a zip archive, truncated archive") {
    write_file(path, Bytes(100, 'x'));
    check_input_error(load, path, "no zip end-of-central-directory record");
    Bytes zip = imagenet_npz({1}, 32, true);
    zip.resize(zip.size() / 2);
    write_file(path, zip);
    check_input_error(load, path, "not a zip archive, or truncated");
  }
  SUBCASE("Zip64 archives are refused with a clear message") {
    Bytes zip = imagenet_npz({1}, 32, false);
    zip[zip.size() - 22 + 10] = 0xFF;  // total entries 0xFFFF: the value lives in a Zip64 record
    zip[zip.size() - 22 + 11] = 0xFF;
    write_file(path, zip);
    check_input_error(load, path, "Zip64 archives are not supported");
  }
  SUBCASE("unsupported compression method") {
    Bytes zip = imagenet_npz({1}, 32, false);
    zip[8] = 12;                               // local header: bzip2
    zip[directory_offset(zip) + 10] = 12;      // central directory: bzip2
    write_file(path, zip);
    check_input_error(load, path, "entry 'data.npy': uses compression method 12");
  }
  SUBCASE("missing file") { check_input_error(load, path, "file not found"); }
}
