#pragma once
// Internal to datasets/: reading bytes from input files, with every failure turned into an
// InputError naming the file. The one place for "read exactly n bytes or report truncation",
// for byte-order decoding and for overflow-checked size arithmetic, so that every loader reports
// the same problem in the same words. zlib stays in input_file.cpp (its inflate state hides
// behind a pointer to a type defined there).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "sim/error.hpp"

namespace hepsim::detail {

// Unsigned integers of `bytes` (at most 8) bytes stored most significant byte first (IDX
// headers, '>' npy arrays) or least significant byte first (zip records, '<' npy arrays).
inline std::uint64_t load_be(const std::uint8_t* p, std::size_t bytes) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < bytes; ++i) v = (v << 8) | p[i];
  return v;
}
inline std::uint64_t load_le(const std::uint8_t* p, std::size_t bytes) {
  std::uint64_t v = 0;
  for (std::size_t i = bytes; i-- > 0;) v = (v << 8) | p[i];
  return v;
}
template <class T>
T load_be(const std::uint8_t* p) {
  return static_cast<T>(load_be(p, sizeof(T)));
}
template <class T>
T load_le(const std::uint8_t* p) {
  return static_cast<T>(load_le(p, sizeof(T)));
}

// The product of sizes read from a header; throws InputError(path, "<what> ... too large") when
// it does not fit in 62 bits, so that a corrupt header cannot wrap around into a small size.
std::uint64_t checked_product(const std::vector<std::uint64_t>& factors, const std::string& path,
                              std::string_view what);

class InputFile {
 public:
  // raw: plain bytes, random access (seek). maybe_gzip: gzip-compressed when the file starts
  // with the gzip magic bytes 1F 8B, else plain; gzip content is sequential only.
  enum class Mode { raw, maybe_gzip };

  // Throws InputError "file not found" / "is a directory" / "cannot open: <reason>".
  InputFile(std::string path, Mode mode);
  ~InputFile();
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  const std::string& path() const { return path_; }
  std::uint64_t size() const { return size_; }  // bytes on disk
  bool compressed() const { return gz_ != nullptr; }  // a gzip stream (maybe_gzip mode only)
  std::uint64_t position() const { return pos_; }  // content bytes consumed so far
  // Largest number of content bytes the file can deliver: its size, or for gzip the deflate
  // bound (deflate never compresses better than 1032:1), so a header claiming more is corrupt
  // and is rejected before anything is allocated.
  std::uint64_t max_content_size() const;

  // Reads up to n bytes; fewer only at the end of the content. Throws on a corrupt gzip stream.
  std::size_t read_some(void* dst, std::size_t n);
  // Reads exactly n bytes or throws "truncated: file ends inside <what>". When the bytes are
  // consecutive records of record_size bytes numbered from first_record, the error names the
  // record in which the file ends.
  void read_exact(void* dst, std::size_t n, std::string_view what, std::size_t record_size = 0,
                  std::int64_t first_record = 0);
  // True when no content byte is left. For gzip this reads to the end of the file, and throws
  // unless the gzip member ended with its trailer (CRC-32 and length, both verified) and only
  // further complete gzip members (legal, as from `cat a.gz b.gz`) follow it.
  bool at_end();
  // Not for gzip content: moves to a byte offset in the file.
  void seek(std::uint64_t offset);

  [[noreturn]] void fail(const std::string& message, std::int64_t record = -1) const {
    throw InputError(path_, message, record);
  }

 private:
  std::string path_;
  std::uint64_t size_ = 0;
  std::uint64_t pos_ = 0;
  std::FILE* file_ = nullptr;
  struct Gzip;  // zlib's inflate state and the compressed input buffer (input_file.cpp)
  std::unique_ptr<Gzip> gz_;

  std::size_t inflate_some(unsigned char* dst, std::size_t n);
  void refill();
};

}  // namespace hepsim::detail
