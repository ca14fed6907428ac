// hepsim's HDF5 layout: round trip, conversion from the original formats, malformed files
// (written here with the HDF5 C API).
#include <hdf5.h>

#include <array>
#include <filesystem>

#include "datasets/dataset.hpp"
#include "helpers.hpp"

using namespace hepsim;
using namespace hepsim::test;

namespace {

Dataset small_colour_dataset() {
  Dataset d;
  d.name = "cifar100/train";
  d.n = 3;
  d.channels = 3;
  d.height = 2;
  d.width = 4;
  d.classes = 100;
  d.images = pixels(3, 24);
  d.labels = {42, 0, 99};
  return d;
}

// Writes an HDF5 file with the given pieces; rank / type of /images and /labels are parameters
// so that each test breaks exactly one thing.
struct H5Spec {
  std::vector<hsize_t> image_dims = {3, 1, 2, 2};
  hid_t image_type = H5T_STD_U8LE;
  std::vector<hsize_t> label_dims = {3};
  std::vector<std::int64_t> labels = {0, 1, 2};
  bool write_labels = true;
  bool write_classes = true;
  std::int64_t classes = 10;
  hid_t int_type = H5T_STD_I32LE;  // of /labels and the attribute 'classes'
};

void write_h5(const std::string& path, const H5Spec& s) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  const hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  REQUIRE(file >= 0);
  hsize_t count = 1;
  for (const hsize_t d : s.image_dims) count *= d;
  const std::vector<std::int32_t> values(count, 1);  // converted to the dataset's type on write
  const hid_t space = H5Screate_simple(static_cast<int>(s.image_dims.size()), s.image_dims.data(), nullptr);
  const hid_t images = H5Dcreate2(file, "images", s.image_type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  REQUIRE(H5Dwrite(images, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()) >= 0);
  H5Dclose(images);
  H5Sclose(space);
  if (s.write_labels) {
    const hid_t lspace = H5Screate_simple(static_cast<int>(s.label_dims.size()), s.label_dims.data(), nullptr);
    const hid_t labels = H5Dcreate2(file, "labels", s.int_type, lspace, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    REQUIRE(H5Dwrite(labels, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, s.labels.data()) >= 0);
    H5Dclose(labels);
    H5Sclose(lspace);
  }
  if (s.write_classes) {
    const hid_t scalar = H5Screate(H5S_SCALAR);
    const hid_t attr = H5Acreate2(file, "classes", s.int_type, scalar, H5P_DEFAULT, H5P_DEFAULT);
    REQUIRE(H5Awrite(attr, H5T_NATIVE_INT64, &s.classes) >= 0);
    H5Aclose(attr);
    H5Sclose(scalar);
  }
  H5Fclose(file);
}

}  // namespace

TEST_CASE("write_h5_dataset / read_h5_dataset round trip, limit, source kind") {
  TempDir dir;
  const std::string path = dir.file("train.h5");
  const Dataset d = small_colour_dataset();
  write_h5_dataset(d, path);
  const Dataset r = read_h5_dataset(path);
  CHECK(r.name == "cifar100/train");
  CHECK(r.n == 3);
  CHECK(r.channels == 3);
  CHECK(r.height == 2);
  CHECK(r.width == 4);
  CHECK(r.classes == 100);
  CHECK(r.images == d.images);
  CHECK(r.labels == d.labels);
  CHECK(h5_source_kind(path) == DatasetKind::cifar100);

  const Dataset two = read_h5_dataset(path, 2);
  CHECK(two.n == 2);
  CHECK(two.labels == std::vector<std::int32_t>{42, 0});
  CHECK(std::equal(two.images.begin(), two.images.end(), d.images.begin()));
  CHECK(two.images.size() == 48u);

  write_h5(path, {});  // no "name" attribute
  CHECK(h5_source_kind(path) == DatasetKind::h5);
  CHECK(read_h5_dataset(path).name == path);
}

TEST_CASE("the source name is read as h5py and numpy write it: variable-length UTF-8 and exact-length NULLPAD") {
  TempDir dir;
  const std::string path = dir.file("train.h5");
  write_h5_dataset(small_colour_dataset(), path);  // 3 channels, named cifar100/train
  const auto rename = [&](bool variable, const std::string& value) {
    const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    REQUIRE(file >= 0);
    REQUIRE(H5Adelete(file, "name") >= 0);
    const hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, variable ? H5T_VARIABLE : value.size());
    if (variable) H5Tset_cset(type, H5T_CSET_UTF8);  // h5py's str
    else H5Tset_strpad(type, H5T_STR_NULLPAD);        // numpy's bytes_, no terminating NUL
    const hid_t scalar = H5Screate(H5S_SCALAR);
    const hid_t attr = H5Acreate2(file, "name", type, scalar, H5P_DEFAULT, H5P_DEFAULT);
    const char* p = value.c_str();
    REQUIRE(H5Awrite(attr, type, variable ? static_cast<const void*>(&p) : static_cast<const void*>(p)) >= 0);
    H5Aclose(attr);
    H5Sclose(scalar);
    H5Tclose(type);
    H5Fclose(file);
  };
  // Read as "" (variable length) or without its last character ("cifar10" became "cifar1"):
  // the source's normalisation and the channel check were skipped.
  rename(true, "cifar10/train");
  CHECK(h5_source_kind(path) == DatasetKind::cifar10);
  CHECK(read_h5_dataset(path).name == "cifar10/train");
  rename(false, "cifar10");
  CHECK(h5_source_kind(path) == DatasetKind::cifar10);
  rename(false, "mnist");  // 1 channel claimed, 3 stored
  check_input_error([&] { (void)h5_source_kind(path); }, path, "attribute 'name' says 'mnist' (1 channels)");
}

TEST_CASE("convert_dataset: CIFAR-100 and IDX to HDF5 and back through load_dataset(h5)") {
  TempDir src, out;
  write_file(src.file("train.bin"), cifar_records({{3, 42}, {19, 99}}));
  write_file(src.file("test.bin"), cifar_records({{0, 7}}, 5));
  convert_dataset(DatasetKind::cifar100, src.str(), out.str() + "/converted");
  const DatasetSplits orig = load_dataset(DatasetKind::cifar100, src.str());
  const DatasetSplits h5 = load_dataset(DatasetKind::h5, out.str() + "/converted");
  CHECK(h5.train.images == orig.train.images);
  CHECK(h5.train.labels == orig.train.labels);
  CHECK(h5.test.images == orig.test.images);
  CHECK(h5.test.labels == std::vector<std::int32_t>{7});
  CHECK(h5.train.classes == 100);
  CHECK(h5.train.name == "h5/train");
  CHECK(h5_source_kind(out.str() + "/converted/train.h5") == DatasetKind::cifar100);

  write_file(src.file("train-images-idx3-ubyte"), idx_file({2, 3, 3}, pixels(2, 9)));
  write_file(src.file("train-labels-idx1-ubyte"), idx_file({2}, {4, 5}));
  write_file(src.file("t10k-images-idx3-ubyte"), idx_file({1, 3, 3}, pixels(1, 9)));
  write_file(src.file("t10k-labels-idx1-ubyte"), idx_file({1}, {6}));
  convert_dataset(DatasetKind::mnist, src.str(), out.str());
  const Dataset t = load_test_split(DatasetKind::h5, out.str());
  CHECK(t.channels == 1);
  CHECK(t.height == 3);
  CHECK(t.labels == std::vector<std::int32_t>{6});
  CHECK(h5_source_kind(out.file("test.h5")) == DatasetKind::mnist);
}

namespace {
// Replaces /images of an hepsim HDF5 file by a uint8 dataset of `dims` created with `dcpl`,
// written from `pixels` (nullptr: left unwritten).
void replace_images(const std::string& path, std::array<hsize_t, 4> dims, hid_t dcpl, const std::uint8_t* pixels) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  REQUIRE(H5Ldelete(file, "images", H5P_DEFAULT) >= 0);
  const hid_t space = H5Screate_simple(4, dims.data(), nullptr);
  const hid_t ds = H5Dcreate2(file, "images", H5T_STD_U8LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  REQUIRE(ds >= 0);
  if (pixels) REQUIRE(H5Dwrite(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, pixels) >= 0);
  H5Dclose(ds);
  H5Sclose(space);
  H5Fclose(file);
}
}  // namespace

TEST_CASE("read_h5_dataset: malformed files give an InputError naming the file") {
  TempDir dir;
  const std::string path = dir.file("test.h5");
  const auto load = [&] { return read_h5_dataset(path); };
  SUBCASE("wrong rank") {
    H5Spec s;
    s.image_dims = {3, 4};
    write_h5(path, s);
    check_input_error(load, path, "/images has rank 2, expected 4");
  }
  SUBCASE("images not uint8") {
    H5Spec s;
    s.image_type = H5T_STD_I32LE;
    write_h5(path, s);
    check_input_error(load, path, "/images must be uint8");
    s.image_type = H5T_IEEE_F32LE;
    write_h5(path, s);
    check_input_error(load, path, "/images is not of an integer type");
  }
  SUBCASE("missing dataset") {
    H5Spec s;
    s.write_labels = false;
    write_h5(path, s);
    check_input_error(load, path, "no dataset /labels");
  }
  SUBCASE("missing classes attribute") {
    H5Spec s;
    s.write_classes = false;
    write_h5(path, s);
    check_input_error(load, path, "missing root attribute 'classes'");
  }
  SUBCASE("count mismatch") {
    H5Spec s;
    s.label_dims = {2};
    s.labels = {0, 1};
    write_h5(path, s);
    check_input_error(load, path, "count mismatch: /labels has 2 entries but /images has 3 images");
  }
  SUBCASE("label out of range") {
    H5Spec s;
    s.labels = {0, 10, 2};
    write_h5(path, s);
    check_input_error(load, path, "record 1: label 10 out of range 0..9");
  }
  SUBCASE("64-bit labels and classes are reported as written, not clamped to 2^31 - 1") {
    H5Spec s;
    s.int_type = H5T_STD_I64LE;
    s.classes = std::int64_t{1} << 40;
    write_h5(path, s);
    check_input_error(load, path, "attribute 'classes' is 1099511627776, must be in 2..65536");
    s.classes = 10;
    s.labels = {0, std::int64_t{1} << 40, 2};
    write_h5(path, s);
    check_input_error(load, path, "record 1: label 1099511627776 out of range 0..9");
  }
  SUBCASE("a huge declared dataspace") {
    H5Spec s;
    s.image_dims = {3, 1, 2, 2};
    write_h5(path, s);
    // Rewrite with an unwritten (fill-value) dataset of 3 x 3 x 60000 x 60000.
    replace_images(path, {3, 3, 60000, 60000}, H5P_DEFAULT, nullptr);
    check_input_error(load, path, "/images declares more data than the file can hold");
  }
  SUBCASE("images stored outside the file (external raw storage, cut short) are refused, not read as zeros") {
    H5Spec s;
    s.image_dims = {3, 1, 2, 2};
    write_h5(path, s);
    const hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    REQUIRE(H5Pset_external(dcpl, dir.file("raw.bin").c_str(), 0, 12) >= 0);
    const std::vector<std::uint8_t> pixels(12, 200);
    replace_images(path, {3, 1, 2, 2}, dcpl, pixels.data());
    H5Pclose(dcpl);
    std::filesystem::resize_file(dir.file("raw.bin"), 4);  // the last two images would read as zeros
    check_input_error(load, path, "/images is stored outside the file");
  }
  SUBCASE("not an HDF5 file, missing file") {
    write_file(path, Bytes(64, 'x'));
    check_input_error(load, path, "not an HDF5 file");
    check_input_error([&] { read_h5_dataset(dir.file("absent.h5")); }, dir.file("absent.h5"), "file not found");
  }
  SUBCASE("train and test files disagree") {
    write_h5(dir.file("train.h5"), {});
    write_h5_dataset(small_colour_dataset(), path);
    check_input_error([&] { load_dataset(DatasetKind::h5, dir.str()); }, dir.str(),
                      "train and test splits differ: train 1x2x2 (10 classes), test 3x2x4 (100 classes)");
  }
}
