#include "datasets/h5_io.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace hepsim::h5 {

void silence_errors() {
  static const bool silenced = [] { return H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr) >= 0; }();
  (void)silenced;
}

std::string read_string_attribute(hid_t obj, const char* name) {
  if (H5Aexists(obj, name) <= 0) return {};
  Id attr(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
  Id type(H5Aget_type(attr.get()), H5Tclose);
  if (!type.valid() || H5Tget_class(type.get()) != H5T_STRING) return {};
  if (H5Tis_variable_str(type.get()) > 0) {  // h5py's default for str values
    Id mem(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mem.get(), H5T_VARIABLE);
    H5Tset_cset(mem.get(), H5Tget_cset(type.get()));  // h5py writes UTF-8: no conversion to ASCII
    char* p = nullptr;
    if (H5Aread(attr.get(), mem.get(), &p) < 0 || p == nullptr) return {};
    std::string s(p);
    H5free_memory(p);
    return s;
  }
  // Fixed length, read in the file's own type (no conversion): a NULLPAD string (numpy's bytes)
  // converted to a C string of the same size lost its last character. Padding ends it.
  std::string s(H5Tget_size(type.get()), '\0');
  if (H5Aread(attr.get(), type.get(), s.data()) < 0) return {};
  s.resize(std::min(s.size(), s.find('\0')));
  if (H5Tget_strpad(type.get()) == H5T_STR_SPACEPAD) s.erase(s.find_last_not_of(' ') + 1);
  return s;
}

bool write_string_attribute(hid_t obj, const char* name, const std::string& value) {
  if (H5Aexists(obj, name) > 0 && H5Adelete(obj, name) < 0) return false;
  Id scalar(H5Screate(H5S_SCALAR), H5Sclose);
  Id type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), std::max<std::size_t>(value.size(), 1));
  Id attr(H5Acreate2(obj, name, type.get(), scalar.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  const std::string padded = value.empty() ? std::string(1, '\0') : value;
  return attr.valid() && H5Awrite(attr.get(), type.get(), padded.data()) >= 0;
}

namespace {

// The core driver's buffer, allocated and freed through these: at the file's close it is handed
// to MemoryFile (the complete, closed image) instead of being freed. The size of the file's
// buffer is tracked (it may grow while the file closes).
bool file_op(H5FD_file_image_op_t op) {
  return op == H5FD_FILE_IMAGE_OP_FILE_OPEN || op == H5FD_FILE_IMAGE_OP_FILE_RESIZE;
}
void* image_malloc(std::size_t size, H5FD_file_image_op_t op, void* udata) {
  void* p = std::malloc(size);
  if (p && file_op(op)) static_cast<MemoryFile::Image*>(udata)->size = size;
  return p;
}
void* image_memcpy(void* dest, const void* src, std::size_t size, H5FD_file_image_op_t, void*) {
  return std::memcpy(dest, src, size);
}
void* image_realloc(void* ptr, std::size_t size, H5FD_file_image_op_t op, void* udata) {
  void* p = std::realloc(ptr, size);
  if (p && file_op(op)) static_cast<MemoryFile::Image*>(udata)->size = size;
  return p;
}
herr_t image_free(void* ptr, H5FD_file_image_op_t op, void* udata) {
  auto* kept = static_cast<MemoryFile::Image*>(udata);
  if (op == H5FD_FILE_IMAGE_OP_FILE_CLOSE && kept->data == nullptr)
    kept->data = ptr;
  else
    std::free(ptr);
  return 0;
}
void* udata_copy(void* udata) { return udata; }
herr_t udata_free(void*) { return 0; }

// The end-of-file address of a version-2 superblock at offset 0 (8-byte offsets): the file's size.
std::size_t superblock_eof(const unsigned char* p, std::size_t capacity) {
  static constexpr unsigned char kSignature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
  if (capacity < 48 || std::memcmp(p, kSignature, 8) != 0 || p[8] != 2 || p[9] != 8) return 0;
  std::uint64_t eof = 0;
  for (int i = 7; i >= 0; --i) eof = eof << 8 | p[28 + i];  // little-endian
  return eof <= capacity ? static_cast<std::size_t>(eof) : 0;
}

// A file of the core driver whose buffer is handed to *kept at close.
hid_t create_in_memory(MemoryFile::Image* kept) {
  Id fcpl(H5Pcreate(H5P_FILE_CREATE), H5Pclose);
  Id fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  H5FD_file_image_callbacks_t callbacks{image_malloc, image_memcpy, image_realloc, image_free,
                                        udata_copy,   udata_free,   kept};
  // Superblock version 2 (HDF5 1.8 format): dense attributes, and no "open for writing" flag in it.
  if (!fcpl.valid() || !fapl.valid() || H5Pset_attr_phase_change(fcpl.get(), 0, 0) < 0 ||
      H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V18, H5F_LIBVER_V18) < 0 ||
      H5Pset_fapl_core(fapl.get(), std::size_t{1} << 20, 0) < 0 ||
      H5Pset_file_image_callbacks(fapl.get(), &callbacks) < 0)
    return H5I_INVALID_HID;
  return H5Fcreate("hepsim-memory-file", H5F_ACC_TRUNC, fcpl.get(), fapl.get());
}

}  // namespace

MemoryFile::MemoryFile() : file_(create_in_memory(&image_), H5Fclose) {}

MemoryFile::~MemoryFile() {
  file_.close();
  std::free(image_.data);
}

std::vector<char> MemoryFile::finish() {
  if (!file_.valid() || file_.close() < 0 || image_.data == nullptr) return {};
  const auto* p = static_cast<const unsigned char*>(image_.data);
  const std::size_t size = superblock_eof(p, image_.size);
  std::vector<char> image(p, p + size);
  std::free(image_.data);
  image_.data = nullptr;
  return image;
}

bool write_int_attribute(hid_t obj, const char* name, std::int64_t value) {
  if (H5Aexists(obj, name) > 0 && H5Adelete(obj, name) < 0) return false;
  Id scalar(H5Screate(H5S_SCALAR), H5Sclose);
  Id attr(H5Acreate2(obj, name, H5T_STD_I64LE, scalar.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  return attr.valid() && H5Awrite(attr.get(), H5T_NATIVE_INT64, &value) >= 0;
}

std::int64_t read_int_attribute(hid_t obj, const char* name, std::int64_t fallback) {
  if (H5Aexists(obj, name) <= 0) return fallback;
  Id attr(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
  std::int64_t v = fallback;
  if (!attr.valid() || H5Aread(attr.get(), H5T_NATIVE_INT64, &v) < 0) return fallback;
  return v;
}

namespace {

bool write_raw(hid_t loc, const char* name, hid_t file_type, hid_t mem_type, const void* data, int rank,
               const hsize_t* dims) {
  Id space(H5Screate_simple(rank, dims, nullptr), H5Sclose);
  Id ds(H5Dcreate2(loc, name, file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
  if (!ds.valid()) return false;
  bool empty = false;
  for (int i = 0; i < rank; ++i) empty |= dims[i] == 0;
  return empty || H5Dwrite(ds.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0;
}

template <class T>
bool read_raw(hid_t loc, const char* name, hid_t mem_type, std::vector<T>& out) {
  if (H5Lexists(loc, name, H5P_DEFAULT) <= 0) return false;
  Id ds(H5Dopen2(loc, name, H5P_DEFAULT), H5Dclose);
  if (!ds.valid()) return false;
  Id space(H5Dget_space(ds.get()), H5Sclose);
  if (H5Sget_simple_extent_ndims(space.get()) != 1) return false;
  hsize_t n = 0;
  H5Sget_simple_extent_dims(space.get(), &n, nullptr);
  out.assign(n, T{});
  return n == 0 || H5Dread(ds.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) >= 0;
}

}  // namespace

bool write_vector(hid_t loc, const char* name, const std::vector<double>& v) {
  const hsize_t n = v.size();
  return write_raw(loc, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, v.data(), 1, &n);
}
bool write_vector(hid_t loc, const char* name, const std::vector<std::int64_t>& v) {
  const hsize_t n = v.size();
  return write_raw(loc, name, H5T_STD_I64LE, H5T_NATIVE_INT64, v.data(), 1, &n);
}
bool write_vector(hid_t loc, const char* name, const float* data, std::size_t n) {
  const hsize_t dims = n;
  return write_raw(loc, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, data, 1, &dims);
}
bool write_matrix(hid_t loc, const char* name, const float* col_major, std::size_t rows, std::size_t cols) {
  std::vector<float> row_major(rows * cols);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < cols; ++c) row_major[r * cols + c] = col_major[c * rows + r];
  const hsize_t dims[2] = {rows, cols};
  return write_raw(loc, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, row_major.data(), 2, dims);
}
bool read_vector(hid_t loc, const char* name, std::vector<double>& out) {
  return read_raw(loc, name, H5T_NATIVE_DOUBLE, out);
}
bool read_vector(hid_t loc, const char* name, std::vector<float>& out) {
  return read_raw(loc, name, H5T_NATIVE_FLOAT, out);
}

Id create_group(hid_t loc, const char* name) {
  Id lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  return Id(H5Gcreate2(loc, name, lcpl.get(), H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
}

}  // namespace hepsim::h5
