// CIFAR-10 / CIFAR-100 binary loader on generated files.
#include "datasets/dataset.hpp"
#include "helpers.hpp"

using namespace hepsim;
using namespace hepsim::test;

namespace {

void check_pixels(const Dataset& d, Index i, std::size_t source_image) {
  for (std::size_t k = 0; k < 3072; ++k) REQUIRE(d.image(i)[k] == pixel(source_image, k));
}

}  // namespace

TEST_CASE("read_cifar: CIFAR-10 records across files, planar pixels kept, limit") {
  TempDir dir;
  write_file(dir.file("a.bin"), cifar_records({{3}, {9}}, 0));
  write_file(dir.file("b.bin"), cifar_records({{0}}, 2));
  const Dataset d = read_cifar({dir.file("a.bin"), dir.file("b.bin")}, 10);
  CHECK(d.n == 3);
  CHECK(d.channels == 3);
  CHECK(d.height == 32);
  CHECK(d.width == 32);
  CHECK(d.classes == 10);
  CHECK(d.labels == std::vector<std::int32_t>{3, 9, 0});
  for (Index i = 0; i < 3; ++i) check_pixels(d, i, static_cast<std::size_t>(i));

  const Dataset two = read_cifar({dir.file("a.bin"), dir.file("b.bin")}, 10, 2);
  CHECK(two.n == 2);
  CHECK(two.labels == std::vector<std::int32_t>{3, 9});
  CHECK(two.images.size() == 2u * 3072);
}

TEST_CASE("read_cifar: CIFAR-100 keeps the fine label (the second byte)") {
  TempDir dir;
  write_file(dir.file("train.bin"), cifar_records({{3, 42}, {19, 99}, {0, 0}}));
  const Dataset d = read_cifar({dir.file("train.bin")}, 100);
  CHECK(d.n == 3);
  CHECK(d.classes == 100);
  CHECK(d.labels == std::vector<std::int32_t>{42, 99, 0});
  for (Index i = 0; i < 3; ++i) check_pixels(d, i, static_cast<std::size_t>(i));
}

TEST_CASE("load_dataset(cifar10 / cifar100): official file names, parent folder accepted") {
  TempDir dir;
  const std::string sub = dir.str() + "/cifar-10-batches-bin/";
  for (int b = 1; b <= 5; ++b)
    write_file(sub + "data_batch_" + std::to_string(b) + ".bin",
               cifar_records({{static_cast<std::uint8_t>(b)}}, static_cast<std::size_t>(b)));
  write_file(sub + "test_batch.bin", cifar_records({{7}, {8}}, 10));
  const DatasetSplits s = load_dataset(DatasetKind::cifar10, dir.str(), 0, 1);
  CHECK(s.train.n == 5);
  CHECK(s.train.labels == std::vector<std::int32_t>{1, 2, 3, 4, 5});
  check_pixels(s.train, 4, 5);
  CHECK(s.test.n == 1);
  CHECK(s.test.labels == std::vector<std::int32_t>{7});
  CHECK(s.train.name == "cifar10/train");
  // The folder itself works as well.
  CHECK(load_test_split(DatasetKind::cifar10, sub).n == 2);

  write_file(dir.file("c100/train.bin"), cifar_records({{1, 2}}));
  write_file(dir.file("c100/test.bin"), cifar_records({{3, 4}, {5, 6}}));
  const DatasetSplits c = load_dataset(DatasetKind::cifar100, dir.file("c100"));
  CHECK(c.train.labels == std::vector<std::int32_t>{2});
  CHECK(c.test.labels == std::vector<std::int32_t>{4, 6});
}

TEST_CASE("read_cifar: malformed files give an InputError naming the file") {
  TempDir dir;
  const std::string path = dir.file("data_batch_1.bin");
  SUBCASE("size not a multiple of the record") {
    Bytes b = cifar_records({{1}, {2}});
    b.resize(b.size() - 1);
    write_file(path, b);
    check_input_error([&] { read_cifar({path}, 10); }, path,
                      "size 6145 bytes is not a multiple of the 3073-byte CIFAR-10 record");
    // A CIFAR-10 file read as CIFAR-100 does not fit the 3074-byte record either.
    write_file(path, cifar_records({{1}, {2}}));
    check_input_error([&] { read_cifar({path}, 100); }, path, "not a multiple of the 3074-byte CIFAR-100 record");
  }
  SUBCASE("empty file") {
    write_file(path, {});
    check_input_error([&] { read_cifar({path}, 10); }, path, "empty file");
  }
  SUBCASE("CIFAR-10 label out of range") {
    write_file(path, cifar_records({{1}, {10}}));
    check_input_error([&] { read_cifar({path}, 10); }, path, "record 1: label 10 out of range 0..9");
  }
  SUBCASE("CIFAR-100 fine and coarse labels out of range") {
    write_file(path, cifar_records({{1, 2}, {19, 100}}));
    check_input_error([&] { read_cifar({path}, 100); }, path, "record 1: fine label 100 out of range 0..99");
    write_file(path, cifar_records({{20, 2}}));
    check_input_error([&] { read_cifar({path}, 100); }, path, "record 0: coarse label 20 out of range 0..19");
  }
  SUBCASE("missing batch file is named") {
    for (int b = 1; b <= 5; ++b)
      if (b != 3) write_file(dir.file("data_batch_" + std::to_string(b) + ".bin"), cifar_records({{1}}));
    write_file(dir.file("test_batch.bin"), cifar_records({{1}}));
    check_input_error([&] { load_dataset(DatasetKind::cifar10, dir.str()); }, dir.file("data_batch_3.bin"),
                      "file not found");
  }
}
