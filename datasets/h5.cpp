// hepsim's own HDF5 dataset layout (SPEC 8):
//   /images   uint8, rank 4: (N, C, H, W), planar channels, rows top to bottom
//   /labels   integer (written as int32), rank 1: (N), values in [0, classes)
//   root attribute "classes" (int32 scalar), root attribute "name" (fixed-length string, e.g.
//   "cifar10/train": the split a file was converted from, which h5_source_kind reads back).
// Normalisation and augmentation are not stored: DatasetKind::h5 gets x/255 and none, and a
// caller wanting the source dataset's settings asks h5_source_kind(path).
// HDF5's automatic error printing is switched off; every failure becomes an InputError naming
// the file.
#include <hdf5.h>

#include <algorithm>
#include <stdexcept>

#include "datasets/dataset.hpp"
#include "datasets/h5_io.hpp"
#include "datasets/input_file.hpp"

namespace hepsim {
namespace {

using H5Id = h5::Id;
using h5::read_string_attribute;

// Opens an existing hepsim HDF5 file read-only; returns it with the file's size on disk.
H5Id open_h5(const std::string& path, std::uint64_t& file_size) {
  h5::silence_errors();
  file_size = detail::InputFile(path, detail::InputFile::Mode::raw).size();  // "file not found" etc.
  if (H5Fis_hdf5(path.c_str()) <= 0) throw InputError(path, "not an HDF5 file");
  H5Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!file.valid()) throw InputError(path, "cannot open the HDF5 file (truncated or corrupt)");
  return file;
}

// Opens a dataset that must exist, be of integer type and have the given rank; returns its
// dimensions through `dims`.
H5Id open_integer_dataset(hid_t file, const std::string& path, const char* name, int rank, hsize_t* dims) {
  const std::string where = std::string("/") + name;
  if (H5Lexists(file, name, H5P_DEFAULT) <= 0) throw InputError(path, "no dataset " + where);
  H5Id ds(H5Dopen2(file, name, H5P_DEFAULT), H5Dclose);
  if (!ds.valid()) throw InputError(path, where + " is not a dataset");
  // Data stored outside the file (a virtual dataset's sources, external raw files) reads as the
  // fill value where a source is missing or short: zeros that would pass for images.
  H5Id plist(H5Dget_create_plist(ds.get()), H5Pclose);
  if (plist.valid() && (H5Pget_layout(plist.get()) == H5D_VIRTUAL || H5Pget_external_count(plist.get()) > 0))
    throw InputError(path, where + " is stored outside the file (a virtual dataset or external raw storage): "
                                   "store its data in the file");
  H5Id type(H5Dget_type(ds.get()), H5Tclose);
  if (H5Tget_class(type.get()) != H5T_INTEGER) throw InputError(path, where + " is not of an integer type");
  H5Id space(H5Dget_space(ds.get()), H5Sclose);
  const int r = H5Sget_simple_extent_ndims(space.get());
  if (r != rank)
    throw InputError(path, where + " has rank " + std::to_string(r) + ", expected " + std::to_string(rank));
  H5Sget_simple_extent_dims(space.get(), dims, nullptr);
  return ds;
}

// Reads the leading `rows` entries of a dataset (the rest of each row is whole) into `out`.
void read_rows(hid_t ds, const std::string& path, const char* name, int rank, const hsize_t* dims, hsize_t rows,
               hid_t mem_type, void* out) {
  hsize_t start[4] = {0, 0, 0, 0}, count[4];
  std::copy(dims, dims + rank, count);
  count[0] = rows;
  H5Id file_space(H5Dget_space(ds), H5Sclose);
  H5Id mem_space(H5Screate_simple(rank, count, nullptr), H5Sclose);
  if (H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr, count, nullptr) < 0 ||
      H5Dread(ds, mem_type, mem_space.get(), file_space.get(), H5P_DEFAULT, out) < 0)
    throw InputError(path, std::string("cannot read /") + name + " (truncated or corrupt file)");
}

}  // namespace

void write_h5_dataset(const Dataset& d, const std::string& path) {
  if (d.images.size() != static_cast<std::size_t>(d.n * d.dim()) || d.labels.size() != static_cast<std::size_t>(d.n))
    throw std::invalid_argument("write_h5_dataset: images/labels sizes do not match n and the image shape");
  h5::silence_errors();
  const auto check = [&](bool ok, const char* what) {
    if (!ok) throw InputError(path, std::string("cannot write the HDF5 file (") + what + ")");
  };
  H5Id file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
  check(file.valid(), "create");

  const hsize_t image_dims[4] = {static_cast<hsize_t>(d.n), static_cast<hsize_t>(d.channels),
                                 static_cast<hsize_t>(d.height), static_cast<hsize_t>(d.width)};
  H5Id image_space(H5Screate_simple(4, image_dims, nullptr), H5Sclose);
  H5Id images(H5Dcreate2(file.get(), "images", H5T_STD_U8LE, image_space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
              H5Dclose);
  check(images.valid(), "/images");
  check(d.n == 0 || H5Dwrite(images.get(), H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, d.images.data()) >= 0,
        "/images");

  const hsize_t label_dims[1] = {static_cast<hsize_t>(d.n)};
  H5Id label_space(H5Screate_simple(1, label_dims, nullptr), H5Sclose);
  H5Id labels(H5Dcreate2(file.get(), "labels", H5T_STD_I32LE, label_space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
              H5Dclose);
  check(labels.valid(), "/labels");
  check(d.n == 0 || H5Dwrite(labels.get(), H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, d.labels.data()) >= 0,
        "/labels");

  H5Id scalar(H5Screate(H5S_SCALAR), H5Sclose);
  H5Id classes(H5Acreate2(file.get(), "classes", H5T_STD_I32LE, scalar.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  const std::int32_t c = d.classes;
  check(classes.valid() && H5Awrite(classes.get(), H5T_NATIVE_INT32, &c) >= 0, "attribute classes");

  check(h5::write_string_attribute(file.get(), "name", d.name), "attribute name");
  check(H5Fflush(file.get(), H5F_SCOPE_GLOBAL) >= 0, "flush");
}

Dataset read_h5_dataset(const std::string& path, Index limit) {
  std::uint64_t file_size = 0;
  H5Id file = open_h5(path, file_size);

  hsize_t idims[4] = {0, 0, 0, 0};
  H5Id images = open_integer_dataset(file.get(), path, "images", 4, idims);
  {
    H5Id type(H5Dget_type(images.get()), H5Tclose);
    if (H5Tget_size(type.get()) != 1 || H5Tget_sign(type.get()) != H5T_SGN_NONE)
      throw InputError(path, "/images must be uint8");
  }
  const hsize_t n = idims[0];
  if (n == 0) throw InputError(path, "contains no images");
  constexpr hsize_t max_side = 1u << 16;  // as for IDX: keeps C, H, W in int
  if (idims[1] == 0 || idims[2] == 0 || idims[3] == 0 || idims[1] > max_side || idims[2] > max_side ||
      idims[3] > max_side)
    throw InputError(path, "/images has an implausible image shape " + std::to_string(idims[1]) + "x" +
                               std::to_string(idims[2]) + "x" + std::to_string(idims[3]));
  const std::uint64_t bytes = detail::checked_product({n, idims[1], idims[2], idims[3]}, path, "/images");
  // A dataspace can declare more than was ever written (HDF5 then returns fill values); more
  // than even a compressed file could hold is a corrupt or hostile file: refuse to allocate it.
  if (bytes > file_size * 1032) throw InputError(path, "/images declares more data than the file can hold");

  hsize_t ldims[1] = {0};
  H5Id labels = open_integer_dataset(file.get(), path, "labels", 1, ldims);
  if (ldims[0] != n)
    throw InputError(path, "count mismatch: /labels has " + std::to_string(ldims[0]) + " entries but /images has " +
                               std::to_string(n) + " images");

  if (H5Aexists(file.get(), "classes") <= 0) throw InputError(path, "missing root attribute 'classes'");
  // Read as 64-bit integers: HDF5's conversion to a narrower type clamps (2^40 would read as
  // 2147483647 and be reported as that).
  std::int64_t classes = 0;
  {
    H5Id attr(H5Aopen(file.get(), "classes", H5P_DEFAULT), H5Aclose);
    H5Id type(H5Aget_type(attr.get()), H5Tclose);
    H5Id space(H5Aget_space(attr.get()), H5Sclose);
    if (H5Tget_class(type.get()) != H5T_INTEGER || H5Sget_simple_extent_npoints(space.get()) != 1 ||
        H5Aread(attr.get(), H5T_NATIVE_INT64, &classes) < 0)
      throw InputError(path, "attribute 'classes' must be one integer");
  }
  // The bound keeps a corrupt value from sizing a gigantic one-hot matrix downstream; a softmax
  // over one class has no gradient (the model could learn nothing).
  constexpr std::int64_t max_classes = 1 << 16;
  if (classes < 2 || classes > max_classes)
    throw InputError(path, "attribute 'classes' is " + std::to_string(classes) + ", must be in 2.." +
                               std::to_string(max_classes));

  const hsize_t keep = limit > 0 ? std::min<hsize_t>(n, static_cast<hsize_t>(limit)) : n;
  Dataset d;
  d.name = read_string_attribute(file.get(), "name");
  if (d.name.empty()) d.name = path;
  d.n = static_cast<Index>(keep);
  d.channels = static_cast<int>(idims[1]);
  d.height = static_cast<int>(idims[2]);
  d.width = static_cast<int>(idims[3]);
  d.classes = static_cast<int>(classes);
  d.images.resize(keep * static_cast<std::size_t>(d.dim()));
  d.labels.resize(keep);
  read_rows(images.get(), path, "images", 4, idims, keep, H5T_NATIVE_UINT8, d.images.data());
  {
    std::vector<std::int64_t> wide(keep);  // as 'classes': a narrower read would clamp what is reported
    read_rows(labels.get(), path, "labels", 1, ldims, keep, H5T_NATIVE_INT64, wide.data());
    for (hsize_t i = 0; i < keep; ++i) {
      if (wide[i] < 0 || wide[i] >= classes)
        throw InputError(path, "label " + std::to_string(wide[i]) + " out of range 0.." + std::to_string(classes - 1),
                         static_cast<std::int64_t>(i));
      d.labels[i] = static_cast<std::int32_t>(wide[i]);
    }
  }
  return d;
}

DatasetKind h5_source_kind(const std::string& path) {
  std::uint64_t file_size = 0;
  H5Id file = open_h5(path, file_size);
  const std::string name = read_string_attribute(file.get(), "name");
  const std::string prefix = name.substr(0, name.find('/'));
  for (const DatasetKind k : {DatasetKind::fmnist, DatasetKind::mnist, DatasetKind::cifar10, DatasetKind::cifar100,
                              DatasetKind::imagenet32, DatasetKind::imagenet64}) {
    if (prefix != to_string(k)) continue;
    // The source's normalisation has one entry per channel of that source: a file whose name
    // claims another source than its images' channel count would be normalised wrongly.
    const int expected = k == DatasetKind::fmnist || k == DatasetKind::mnist ? 1 : 3;
    hsize_t dims[4] = {0, 0, 0, 0};
    H5Id images = open_integer_dataset(file.get(), path, "images", 4, dims);
    if (static_cast<int>(dims[1]) != expected)
      throw InputError(path, "attribute 'name' says '" + name + "' (" + std::to_string(expected) +
                                 " channels) but /images has " + std::to_string(dims[1]) + " channels");
    return k;
  }
  return DatasetKind::h5;
}

}  // namespace hepsim
