#pragma once
// Test helpers for datasets/: a self-deleting temporary directory and writers for tiny files in
// the exact on-disk formats (IDX, gzip, CIFAR records, zip/npz with stored or deflated entries).
#include <doctest/doctest.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "sim/error.hpp"

namespace hepsim::test {

using Bytes = std::vector<std::uint8_t>;

class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = std::filesystem::temp_directory_path() /
            ("hepsim-datasets-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

inline void write_file(const std::string& path, const Bytes& b) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  REQUIRE(out.good());
}

inline Bytes read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

inline void write_gz(const std::string& path, const Bytes& b) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, b.data(), static_cast<unsigned>(b.size())) == static_cast<int>(b.size()));
  REQUIRE(gzclose(f) == Z_OK);
}

inline void put_be32(Bytes& b, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<std::uint8_t>(v >> s));
}
inline void put_le(Bytes& b, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) b.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

// An IDX file of uint8 elements: 00 00 08 <rank>, big-endian dims, data.
inline Bytes idx_file(const std::vector<std::uint32_t>& dims, const Bytes& data, std::uint8_t type = 0x08) {
  Bytes b = {0, 0, type, static_cast<std::uint8_t>(dims.size())};
  for (const std::uint32_t d : dims) put_be32(b, d);
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

// Pixel k of image i in the generated data sets: distinct across images and positions.
inline std::uint8_t pixel(std::size_t i, std::size_t k) { return static_cast<std::uint8_t>(i * 37 + k * 3 + 1); }

inline Bytes pixels(std::size_t n, std::size_t dim) {
  Bytes b;
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t k = 0; k < dim; ++k) b.push_back(pixel(i, k));
  return b;
}

// CIFAR records: label byte(s) then 3072 pixels; CIFAR-100 gives {coarse, fine}.
inline Bytes cifar_records(const std::vector<Bytes>& label_bytes, std::size_t first_image = 0) {
  Bytes b;
  for (std::size_t r = 0; r < label_bytes.size(); ++r) {
    b.insert(b.end(), label_bytes[r].begin(), label_bytes[r].end());
    for (std::size_t k = 0; k < 3072; ++k) b.push_back(pixel(first_image + r, k));
  }
  return b;
}

// A Python tuple literal: (2, 3072) or (2,). Built by appending: GCC 12 reports a false
// -Wrestrict positive for `"(" + std::to_string(...)` at -O3.
inline std::string tuple(std::initializer_list<std::size_t> v) {
  std::string s = "(";
  std::size_t i = 0;
  for (const std::size_t x : v) {
    if (i++ > 0) s += ", ";
    s += std::to_string(x);
  }
  s += v.size() == 1 ? ",)" : ")";
  return s;
}

// An .npy array (format version 1.0): magic, header dict padded to a multiple of 64, raw data.
inline Bytes npy(const std::string& descr, const std::string& shape, const Bytes& data, bool fortran = false) {
  std::string header = "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") +
                       ", 'shape': " + shape + ", }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  Bytes b = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
  put_le(b, header.size(), 2);
  b.insert(b.end(), header.begin(), header.end());
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

struct ZipMember {
  std::string name;
  Bytes data;
  bool deflate = false;
};

// A zip archive written by hand: local header + data per member, central directory, end record.
// Deflated members use zlib raw deflate (windowBits -15), as zip requires.
inline Bytes zip_archive(const std::vector<ZipMember>& members) {
  Bytes out, directory;
  for (const ZipMember& m : members) {
    const auto crc = static_cast<std::uint32_t>(crc32_z(0, m.data.data(), m.data.size()));
    Bytes body = m.data;
    if (m.deflate) {
      z_stream z{};
      REQUIRE(deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) == Z_OK);
      body.resize(deflateBound(&z, m.data.size()));
      z.next_in = const_cast<Bytef*>(m.data.data());
      z.avail_in = static_cast<uInt>(m.data.size());
      z.next_out = body.data();
      z.avail_out = static_cast<uInt>(body.size());
      REQUIRE(deflate(&z, Z_FINISH) == Z_STREAM_END);
      body.resize(z.total_out);
      deflateEnd(&z);
    }
    const auto offset = static_cast<std::uint32_t>(out.size());
    const std::uint16_t method = m.deflate ? 8 : 0;
    put_le(out, 0x04034b50, 4);
    put_le(out, 20, 2);  // version needed
    put_le(out, 0, 2);   // flags
    put_le(out, method, 2);
    put_le(out, 0, 4);  // time, date
    put_le(out, crc, 4);
    put_le(out, body.size(), 4);
    put_le(out, m.data.size(), 4);
    put_le(out, m.name.size(), 2);
    put_le(out, 0, 2);  // extra length
    out.insert(out.end(), m.name.begin(), m.name.end());
    out.insert(out.end(), body.begin(), body.end());

    put_le(directory, 0x02014b50, 4);
    put_le(directory, 20, 2);  // version made by
    put_le(directory, 20, 2);  // version needed
    put_le(directory, 0, 2);
    put_le(directory, method, 2);
    put_le(directory, 0, 4);
    put_le(directory, crc, 4);
    put_le(directory, body.size(), 4);
    put_le(directory, m.data.size(), 4);
    put_le(directory, m.name.size(), 2);
    put_le(directory, 0, 2);   // extra
    put_le(directory, 0, 2);   // comment
    put_le(directory, 0, 2);   // disk
    put_le(directory, 0, 2);   // internal attributes
    put_le(directory, 0, 4);   // external attributes
    put_le(directory, offset, 4);
    directory.insert(directory.end(), m.name.begin(), m.name.end());
  }
  const auto directory_offset = static_cast<std::uint32_t>(out.size());
  out.insert(out.end(), directory.begin(), directory.end());
  put_le(out, 0x06054b50, 4);
  put_le(out, 0, 2);
  put_le(out, 0, 2);
  put_le(out, members.size(), 2);
  put_le(out, members.size(), 2);
  put_le(out, directory.size(), 4);
  put_le(out, directory_offset, 4);
  put_le(out, 0, 2);  // comment length
  return out;
}

inline Bytes int64_le(const std::vector<std::int64_t>& v) {
  Bytes b;
  for (const std::int64_t x : v) put_le(b, static_cast<std::uint64_t>(x), 8);
  return b;
}

// A downsampled-ImageNet batch as distributed: data (n, 3*side*side) uint8, labels int64 (1-based).
inline Bytes imagenet_npz(const std::vector<std::int64_t>& labels, int side, bool deflate, std::size_t first_image = 0) {
  const std::size_t n = labels.size(), dim = 3u * side * side;
  Bytes data;
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t k = 0; k < dim; ++k) data.push_back(pixel(first_image + i, k));
  return zip_archive({{"data.npy", npy("|u1", tuple({n, dim}), data), deflate},
                      {"labels.npy", npy("<i8", tuple({n}), int64_le(labels)), deflate},
                      {"mean.npy", npy("<f8", "(3,)", Bytes(24, 0)), deflate}});
}

// Runs f and checks it throws an InputError whose message names `where` and contains `phrase`.
template <class F>
void check_input_error(F&& f, const std::string& where, const std::string& phrase) {
  try {
    f();
    FAIL_CHECK("no InputError thrown; expected one naming " << where << " with '" << phrase << "'");
  } catch (const InputError& e) {
    const std::string message = e.what();
    INFO("message: " << message);
    CHECK(message.find(where) != std::string::npos);
    CHECK(message.find(phrase) != std::string::npos);
  }
}

}  // namespace hepsim::test
