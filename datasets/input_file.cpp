#include "datasets/input_file.hpp"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <new>
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

// gzip (RFC 1952) goes through zlib's inflate directly, not its gz* file API, for two reasons.
// gzread cannot tell a complete stream from one cut inside its 8-byte trailer (CRC-32, length):
// when one large read fills the caller's buffer, inflate has already swallowed the partial trailer
// waiting for the rest, and the next gzread sees end of file and returns 0 with no error, so the
// CRC-32 is never checked. And gzread silently ignores non-gzip bytes after a member. Here the
// content may end only right after inflate returned Z_STREAM_END, which it does after verifying
// the trailer, and whatever follows a member must be another member.
struct InputFile::Gzip {
  z_stream z{};
  // 256 KiB: few read() calls on the 26 MB training file; inflate writes straight into the
  // caller's buffer, so the content is never copied twice.
  std::vector<unsigned char> in = std::vector<unsigned char>(std::size_t{1} << 18);
  std::uint64_t file_read = 0;  // compressed bytes read from the file so far
  bool eof = false;             // the file has no byte left to read into `in`
  bool member_end = false;      // inflate reached a member's end and verified its trailer
  bool truncated = false;       // the file ended inside a member (its data or its trailer)

  Gzip() {
    // 15 + 16: a 32 KiB window (deflate's maximum) inside a gzip wrapper; a zlib or raw deflate
    // stream is a corrupt header here, not something to guess at.
    if (inflateInit2(&z, 15 + 16) != Z_OK) throw std::bad_alloc();
  }
  ~Gzip() { inflateEnd(&z); }
  Gzip(const Gzip&) = delete;
  Gzip& operator=(const Gzip&) = delete;
};

InputFile::InputFile(std::string path, Mode mode) : path_(std::move(path)) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path_, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) fail("cannot access: " + ec.message());  // a symlink loop, …
  if (!fs::exists(st)) fail("file not found");
  if (fs::is_directory(st)) fail("is a directory, not a file");
  // A FIFO, a device or a socket has no size and may never end: the loaders read files.
  if (!fs::is_regular_file(st)) fail("not a regular file");
  size_ = fs::file_size(path_, ec);
  if (ec) fail("cannot determine the file size: " + ec.message());

  // Owned here until the constructor cannot throw any more (the destructor would not run).
  const auto close = [](std::FILE* f) { std::fclose(f); };
  std::unique_ptr<std::FILE, decltype(close)> file(std::fopen(path_.c_str(), "rb"), close);
  if (file == nullptr) fail(std::string("cannot open: ") + std::strerror(errno));
  if (mode == Mode::maybe_gzip) {
    // The gzip magic decides, as in gzip(1) and zlib's gzopen: an IDX file starts with 00 00.
    unsigned char magic[2] = {0, 0};
    if (std::fread(magic, 1, 2, file.get()) == 2 && magic[0] == 0x1f && magic[1] == 0x8b)
      gz_ = std::make_unique<Gzip>();
    if (std::fseek(file.get(), 0, SEEK_SET) != 0) fail(std::string("cannot read: ") + std::strerror(errno));
  }
  file_ = file.release();
}

InputFile::~InputFile() { std::fclose(file_); }

std::uint64_t InputFile::max_content_size() const {
  // 1032:1 is deflate's maximum ratio (258-byte matches coded in 2 bits); the gzip header and
  // trailer only lower the bound, so this is an upper limit with no false alarms.
  return compressed() ? size_ * 1032 : size_;
}

std::size_t InputFile::read_some(void* dst, std::size_t n) {
  auto* out = static_cast<unsigned char*>(dst);
  std::size_t got = 0;
  if (gz_ != nullptr) {
    got = inflate_some(out, n);
  } else {
    while (got < n) {
      const std::size_t r = std::fread(out + got, 1, n - got, file_);
      if (r == 0) {
        if (std::ferror(file_)) fail(std::string("read error: ") + std::strerror(errno));
        break;
      }
      got += r;
    }
  }
  pos_ += got;
  return got;
}

void InputFile::refill() {
  Gzip& g = *gz_;
  // Unconsumed bytes move to the front: the check for a following member needs two at once.
  if (g.z.avail_in > 0) std::memmove(g.in.data(), g.z.next_in, g.z.avail_in);
  const std::size_t want = g.in.size() - g.z.avail_in;
  const std::size_t r = std::fread(g.in.data() + g.z.avail_in, 1, want, file_);
  if (r < want) {
    if (std::ferror(file_)) fail(std::string("read error: ") + std::strerror(errno));
    g.eof = true;
  }
  g.file_read += r;
  g.z.next_in = g.in.data();
  g.z.avail_in += static_cast<uInt>(r);
}

std::size_t InputFile::inflate_some(unsigned char* out, std::size_t n) {
  Gzip& g = *gz_;
  std::size_t got = 0;
  while (got < n) {
    if (g.member_end) {
      while (g.z.avail_in < 2 && !g.eof) refill();
      if (g.z.avail_in == 0) break;  // the file ends right after a verified trailer: the clean end
      // Members back to back are legal gzip (RFC 1952 2.2; `cat a.gz b.gz`, read by gzip -d as
      // one content). Any other bytes are not gzip data: rejected, as after a plain file, not
      // skipped as gzread and gzip -d (with a warning) do; that includes zero padding.
      if (g.z.avail_in < 2 || g.z.next_in[0] != 0x1f || g.z.next_in[1] != 0x8b)
        fail(std::to_string(size_ - (g.file_read - g.z.avail_in)) +
             " bytes of unexpected data after the end of the gzip stream");
      if (inflateReset(&g.z) != Z_OK) fail("corrupt gzip stream: cannot restart inflate");
      g.member_end = false;
    }
    if (g.z.avail_in == 0 && !g.eof) refill();
    // avail_out is 32 bits: inflate in chunks below 2^32.
    const auto chunk = static_cast<uInt>(std::min<std::size_t>(n - got, std::size_t{1} << 30));
    g.z.next_out = out + got;
    g.z.avail_out = chunk;
    const int r = inflate(&g.z, Z_NO_FLUSH);
    got += chunk - g.z.avail_out;
    if (r == Z_STREAM_END) {
      g.member_end = true;
      continue;
    }
    if (r == Z_MEM_ERROR) throw std::bad_alloc();
    if (r != Z_OK && r != Z_BUF_ERROR)
      fail(std::string("corrupt gzip stream: ") + (g.z.msg != nullptr ? g.z.msg : "inflate error " + std::to_string(r)));
    // inflate stopped for want of output room or of input. With room left, no input left and the
    // file at its end, the member can never end: the file was cut inside it. (With no room left,
    // the caller got all it asked for; the next call decides.)
    if (g.z.avail_out != 0 && g.z.avail_in == 0 && g.eof) {
      g.truncated = true;
      break;
    }
  }
  return got;
}

void InputFile::read_exact(void* dst, std::size_t n, std::string_view what, std::size_t record_size,
                           std::int64_t first_record) {
  const std::size_t got = read_some(dst, n);
  if (got == n) return;
  // A complete gzip stream that holds too few bytes is plainly "truncated", like a plain file.
  const char* kind = gz_ != nullptr && gz_->truncated ? "truncated gzip stream" : "truncated";
  fail(std::string(kind) + ": file ends inside " + std::string(what) + " (" + std::to_string(got) + " of " +
           std::to_string(n) + " bytes)",
       record_size > 0 ? first_record + static_cast<std::int64_t>(got / record_size) : -1);
}

bool InputFile::at_end() {
  if (gz_ == nullptr) return pos_ >= size_;
  unsigned char byte = 0;
  if (read_some(&byte, 1) == 1) return false;
  if (gz_->truncated) fail("truncated gzip stream: the file ends before the gzip trailer (CRC-32, length) is complete");
  return true;
}

void InputFile::seek(std::uint64_t offset) {
  if (gz_ != nullptr || offset > size_ || fseeko(file_, static_cast<off_t>(offset), SEEK_SET) != 0)
    fail("cannot seek to byte " + std::to_string(offset));
  pos_ = offset;
}

}  // namespace hepsim::detail
