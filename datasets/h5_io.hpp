#pragma once
// Internal (not part of the public API): small RAII and I/O helpers over the HDF5 C API, shared by
// the .cpp files that read or write HDF5 — datasets/h5.cpp (hepsim's image layout) and the tools'
// log and checkpoint writers. Include only from .cpp files (it pulls in hdf5.h).
#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

namespace hepsim::h5 {

// Owns an HDF5 identifier and closes it with the matching H5?close function.
class Id {
 public:
  Id(hid_t id, herr_t (*closer)(hid_t)) : id_(id), close_(closer) {}
  ~Id() {
    if (id_ >= 0) close_(id_);
  }
  Id(Id&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = -1; }
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;
  Id& operator=(Id&&) = delete;
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  // Closes now and reports the result (a file's close writes what is still buffered).
  herr_t close() {
    const herr_t r = id_ >= 0 ? close_(id_) : 0;
    id_ = -1;
    return r;
  }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

// HDF5 prints its error stack on stderr by default; hepsim reports errors itself (one line).
void silence_errors();

// A fixed-length string attribute; "" when absent or of another type.
std::string read_string_attribute(hid_t obj, const char* name);
// Writes (creates or replaces) a fixed-length string attribute. Returns false on failure.
bool write_string_attribute(hid_t obj, const char* name, const std::string& value);
// Scalar int64 attributes; read returns `fallback` when absent.
bool write_int_attribute(hid_t obj, const char* name, std::int64_t value);
std::int64_t read_int_attribute(hid_t obj, const char* name, std::int64_t fallback);

// 1-D datasets (created; the file must not already hold `name`). false on failure.
bool write_vector(hid_t loc, const char* name, const std::vector<double>& v);
bool write_vector(hid_t loc, const char* name, const std::vector<std::int64_t>& v);
bool write_vector(hid_t loc, const char* name, const float* data, std::size_t n);
// A rank-2 float dataset (rows, cols) from a column-major matrix (stored row-major, as h5py shows it).
bool write_matrix(hid_t loc, const char* name, const float* col_major, std::size_t rows, std::size_t cols);
// Reads a whole 1-D numeric dataset converted to double / float; false when absent or not 1-D.
bool read_vector(hid_t loc, const char* name, std::vector<double>& out);
bool read_vector(hid_t loc, const char* name, std::vector<float>& out);

// Creates a group (intermediate groups included). Invalid id on failure.
Id create_group(hid_t loc, const char* name);

// A new HDF5 file built in memory (core driver, no backing store), whose root-group attributes
// are stored densely: a compact attribute cannot exceed 64 KB, which a large architecture's JSON
// or a long configuration can (HDF5 1.8 file format; h5py reads it). Nothing reaches the disk
// until the caller writes the image `finish` returns: a full disk then fails in one plain write,
// never inside HDF5 (which cannot close a file whose flush failed, and crashes at exit on it).
class MemoryFile {
 public:
  MemoryFile();
  ~MemoryFile();
  MemoryFile(const MemoryFile&) = delete;
  MemoryFile& operator=(const MemoryFile&) = delete;
  bool valid() const { return file_.valid(); }
  hid_t get() const { return file_.get(); }
  // Closes the file (every object in it must be closed) and returns its complete image; empty
  // on failure.
  std::vector<char> finish();

  struct Image {
    void* data = nullptr;   // the driver's buffer, kept at close
    std::size_t size = 0;   // its allocated size
  };

 private:
  Image image_;  // declared before file_
  Id file_;
};

}  // namespace hepsim::h5
