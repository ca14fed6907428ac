#include "datasets/input_file.hpp"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

namespace hepsim::detail {

std::uint64_t checked_product(const std::vector<std::uint64_t>& factors, const std::string& path,
                              std::string_view what) {
  constexpr std::uint64_t limit = std::uint64_t{1} << 62;
  std::uint64_t p = 1;
  for (const std::uint64_t f : factors) {
    if (f != 0 && p > limit / f) throw InputError(path, std::string(what) + " is implausibly large (corrupt header?)");
    p *= f;
  }
  return p;
}

InputFile::InputFile(std::string path, Mode mode) : path_(std::move(path)) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path_, ec);
  if (!fs::exists(st)) fail("file not found");
  if (fs::is_directory(st)) fail("is a directory, not a file");
  size_ = fs::file_size(path_, ec);
  if (ec) fail("cannot determine the file size: " + ec.message());

  if (mode == Mode::raw) {
    raw_ = std::fopen(path_.c_str(), "rb");
  } else {
    gz_ = gzopen(path_.c_str(), "rb");
    // A larger buffer than zlib's 8 KiB default: fewer read() calls on the 26 MB training files.
    if (gz_ != nullptr) gzbuffer(gz_, 1u << 18);
  }
  if (raw_ == nullptr && gz_ == nullptr) fail(std::string("cannot open: ") + std::strerror(errno));
}

InputFile::~InputFile() {
  if (raw_ != nullptr) std::fclose(raw_);
  if (gz_ != nullptr) gzclose(gz_);
}

bool InputFile::compressed() const { return gz_ != nullptr && gzdirect(gz_) == 0; }

std::uint64_t InputFile::max_content_size() const {
  // 1032:1 is deflate's maximum ratio (258-byte matches coded in 2 bits); the gzip header and
  // trailer only lower the bound, so this is an upper limit with no false alarms.
  return compressed() ? size_ * 1032 : size_;
}

std::size_t InputFile::read_some(void* dst, std::size_t n) {
  auto* out = static_cast<unsigned char*>(dst);
  std::size_t got = 0;
  while (got < n) {
    std::size_t r = 0;
    if (raw_ != nullptr) {
      r = std::fread(out + got, 1, n - got, raw_);
      if (r == 0 && std::ferror(raw_)) fail(std::string("read error: ") + std::strerror(errno));
    } else {
      // gzread takes an unsigned length and returns an int: read in chunks below INT_MAX.
      const auto chunk = static_cast<unsigned>(std::min<std::size_t>(n - got, 1u << 30));
      const int k = gzread(gz_, out + got, chunk);
      if (k < 0) {
        int errnum = 0;
        // zlib formats its message as "<path>: <what>"; the path is already in ours.
        std::string msg = gzerror(gz_, &errnum);
        if (msg.rfind(path_ + ": ", 0) == 0) msg.erase(0, path_.size() + 2);
        fail("corrupt gzip stream: " + msg);
      }
      r = static_cast<std::size_t>(k);
    }
    if (r == 0) break;
    got += r;
  }
  pos_ += got;
  return got;
}

void InputFile::read_exact(void* dst, std::size_t n, std::string_view what, std::size_t record_size,
                           std::int64_t first_record) {
  const std::size_t got = read_some(dst, n);
  if (got == n) return;
  int errnum = Z_OK;
  if (gz_ != nullptr) gzerror(gz_, &errnum);
  // zlib reports a gzip stream that stops before its end as Z_BUF_ERROR ("unexpected end of file").
  const char* kind = errnum == Z_BUF_ERROR ? "truncated gzip stream" : "truncated";
  fail(std::string(kind) + ": file ends inside " + std::string(what) + " (" + std::to_string(got) + " of " +
           std::to_string(n) + " bytes)",
       record_size > 0 ? first_record + static_cast<std::int64_t>(got / record_size) : -1);
}

bool InputFile::at_end() {
  if (raw_ != nullptr) return pos_ >= size_;
  unsigned char byte = 0;
  if (read_some(&byte, 1) == 1) return false;
  int errnum = Z_OK;
  gzerror(gz_, &errnum);
  if (errnum == Z_BUF_ERROR) fail("truncated gzip stream: unexpected end of file");
  return true;
}

void InputFile::seek(std::uint64_t offset) {
  if (raw_ == nullptr || offset > size_ || fseeko(raw_, static_cast<off_t>(offset), SEEK_SET) != 0)
    fail("cannot seek to byte " + std::to_string(offset));
  pos_ = offset;
}

}  // namespace hepsim::detail
