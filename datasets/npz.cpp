// Downsampled ImageNet (Chrabaszcz, Loshchilov & Hutter 2017) in its npz distribution (SPEC 8).
// An npz file is a zip archive (PKWARE APPNOTE.TXT) of .npy arrays; the entries are stored or
// deflated. hepsim reads the central directory itself and inflates (zlib raw inflate) straight
// into the final uint8 image buffer, checking each entry's CRC-32: no temporary copy of the
// pixels, no float copy.
//   data.npy    uint8 (n, 3*S*S), planar RGB like CIFAR     labels.npy  integers 1..1000
//   mean.npy    train files only; not used
// npy format: "\x93NUMPY", version (major, minor), header length (uint16 in version 1, uint32 in
// 2 and 3, little-endian), then a Python dict literal {'descr': '<i8', 'fortran_order': False,
// 'shape': (n, 3072), } and the raw array in C order.
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string_view>

#include "datasets/dataset.hpp"
#include "datasets/input_file.hpp"

namespace hepsim {
namespace {

using detail::InputFile;
using detail::load_le;

constexpr std::uint32_t sig_local_header = 0x04034b50;
constexpr std::uint32_t sig_central_header = 0x02014b50;
constexpr std::uint32_t sig_end_of_directory = 0x06054b50;
constexpr std::uint32_t sig_zip64_locator = 0x07064b50;
constexpr std::uint16_t method_stored = 0;
constexpr std::uint16_t method_deflate = 8;

struct ZipEntry {
  std::string name;
  std::uint16_t flags = 0;
  std::uint16_t method = 0;
  std::uint32_t crc = 0;
  std::uint64_t compressed_size = 0;
  std::uint64_t size = 0;  // uncompressed
  std::uint64_t local_header_offset = 0;
};

// The central directory (APPNOTE 4.3.12) located through the end-of-central-directory record,
// which is the last thing in the file, followed only by a comment of at most 65535 bytes.
std::vector<ZipEntry> read_zip_directory(InputFile& f) {
  constexpr std::uint64_t end_record = 22, max_comment = 65535, zip64_locator = 20;
  if (f.size() < end_record) f.fail("not a zip archive (too short)");
  const std::uint64_t tail_size = std::min(f.size(), end_record + max_comment + zip64_locator);
  std::vector<std::uint8_t> tail(tail_size);
  f.seek(f.size() - tail_size);
  f.read_exact(tail.data(), tail_size, "the zip end record");
  // The end record is the last signature whose comment length reaches exactly the end of file.
  std::int64_t at = -1;
  for (auto i = static_cast<std::int64_t>(tail_size - end_record); i >= 0; --i) {
    const std::uint8_t* p = tail.data() + i;
    if (load_le<std::uint32_t>(p) == sig_end_of_directory &&
        static_cast<std::uint64_t>(i) + end_record + load_le<std::uint16_t>(p + 20) == tail_size) {
      at = i;
      break;
    }
  }
  if (at < 0) f.fail("no zip end-of-central-directory record (not a zip archive, or truncated)");
  const std::uint8_t* e = tail.data() + at;
  const std::uint16_t disk = load_le<std::uint16_t>(e + 4), directory_disk = load_le<std::uint16_t>(e + 6);
  const std::uint16_t entries_on_disk = load_le<std::uint16_t>(e + 8), entries = load_le<std::uint16_t>(e + 10);
  const std::uint32_t directory_size = load_le<std::uint32_t>(e + 12);
  const std::uint32_t directory_offset = load_le<std::uint32_t>(e + 16);
  const bool has_zip64_locator =
      at >= static_cast<std::int64_t>(zip64_locator) && load_le<std::uint32_t>(e - zip64_locator) == sig_zip64_locator;
  if (has_zip64_locator || entries == 0xFFFF || directory_size == 0xFFFFFFFF || directory_offset == 0xFFFFFFFF)
    f.fail("Zip64 archives are not supported");
  if (disk != 0 || directory_disk != 0 || entries_on_disk != entries) f.fail("multi-part zip archives are not supported");
  const std::uint64_t end_record_offset = f.size() - tail_size + static_cast<std::uint64_t>(at);
  if (std::uint64_t{directory_offset} + directory_size > end_record_offset)
    f.fail("corrupt zip archive: the central directory lies outside the file");

  std::vector<std::uint8_t> dir(directory_size);
  f.seek(directory_offset);
  f.read_exact(dir.data(), dir.size(), "the zip central directory");
  std::vector<ZipEntry> out;
  std::size_t p = 0;
  for (std::uint16_t k = 0; k < entries; ++k) {
    constexpr std::size_t fixed = 46;
    if (p + fixed > dir.size() || load_le<std::uint32_t>(dir.data() + p) != sig_central_header)
      f.fail("corrupt zip archive: bad central directory entry " + std::to_string(k));
    const std::uint8_t* c = dir.data() + p;
    const std::size_t name_len = load_le<std::uint16_t>(c + 28), extra_len = load_le<std::uint16_t>(c + 30),
                      comment_len = load_le<std::uint16_t>(c + 32);
    if (p + fixed + name_len + extra_len + comment_len > dir.size())
      f.fail("corrupt zip archive: central directory entry " + std::to_string(k) + " overruns the directory");
    ZipEntry z;
    z.name.assign(reinterpret_cast<const char*>(c + fixed), name_len);
    z.flags = load_le<std::uint16_t>(c + 8);
    z.method = load_le<std::uint16_t>(c + 10);
    z.crc = load_le<std::uint32_t>(c + 16);
    z.compressed_size = load_le<std::uint32_t>(c + 20);
    z.size = load_le<std::uint32_t>(c + 24);
    z.local_header_offset = load_le<std::uint32_t>(c + 42);
    if (z.compressed_size == 0xFFFFFFFF || z.size == 0xFFFFFFFF || z.local_header_offset == 0xFFFFFFFF)
      f.fail("entry '" + z.name + "' uses Zip64 extensions, which are not supported");
    out.push_back(std::move(z));
    p += fixed + name_len + extra_len + comment_len;
  }
  return out;
}

// Delivers the uncompressed bytes of one entry in order, keeping a running CRC-32. Only one
// reader may be active on a file at a time (they share its position).
class ZipEntryReader {
 public:
  ZipEntryReader(InputFile& f, ZipEntry e) : f_(f), e_(std::move(e)) {
    if (e_.flags & 1u) fail("is encrypted");
    if (e_.method != method_stored && e_.method != method_deflate)
      fail("uses compression method " + std::to_string(e_.method) + " (only stored and deflate are supported)");
    if (e_.method == method_stored && e_.compressed_size != e_.size)
      fail("corrupt zip directory: a stored entry with different compressed and uncompressed sizes");
    // Deflate never compresses better than 1032:1: a larger claim is a corrupt directory, and
    // rejecting it bounds what the caller allocates from the sizes read here.
    if (e_.method == method_deflate && e_.size > e_.compressed_size * 1032 + 258)
      fail("corrupt zip directory: implausible uncompressed size " + std::to_string(e_.size));
    constexpr std::size_t local_header = 30;
    std::uint8_t h[local_header];
    f_.seek(e_.local_header_offset);
    f_.read_exact(h, local_header, "a zip local header");
    if (load_le<std::uint32_t>(h) != sig_local_header) fail("corrupt zip archive: bad local header signature");
    // The local header's own sizes may be zero (data descriptor) or Zip64 placeholders: the
    // central directory's values are the authoritative ones.
    const std::uint64_t data_offset =
        e_.local_header_offset + local_header + load_le<std::uint16_t>(h + 26) + load_le<std::uint16_t>(h + 28);
    if (data_offset + e_.compressed_size > f_.size()) fail("truncated: the entry's data extend past the end of the file");
    f_.seek(data_offset);
    compressed_left_ = e_.compressed_size;
    if (e_.method == method_deflate) {
      if (inflateInit2(&z_, -MAX_WBITS) != Z_OK) throw std::bad_alloc();  // -15: raw deflate, no zlib header
      inflating_ = true;
      in_.resize(static_cast<std::size_t>(std::min<std::uint64_t>(compressed_left_, 1u << 18)));
    }
  }
  ~ZipEntryReader() {
    if (inflating_) inflateEnd(&z_);
  }
  ZipEntryReader(const ZipEntryReader&) = delete;
  ZipEntryReader& operator=(const ZipEntryReader&) = delete;

  std::uint64_t remaining() const { return e_.size - delivered_; }

  void read_exact(void* dst, std::size_t n, std::string_view what) {
    if (n > remaining()) fail("ends inside " + std::string(what));
    auto* out = static_cast<unsigned char*>(dst);
    if (e_.method == method_stored) {
      f_.read_exact(out, n, what);
    } else {
      std::size_t done = 0;
      while (done < n) {
        if (stream_end_) fail("deflate stream ends inside " + std::string(what));
        if (z_.avail_in == 0) refill();
        const auto chunk = static_cast<uInt>(std::min<std::size_t>(n - done, 1u << 30));
        z_.next_out = out + done;
        z_.avail_out = chunk;
        const int r = inflate(&z_, Z_NO_FLUSH);
        done += chunk - z_.avail_out;
        check_inflate(r);
      }
    }
    crc_ = crc32_z(crc_, out, n);
    delivered_ += n;
  }

  // Called after the last byte: the deflate stream must end exactly there and the CRC-32 match.
  void finish() {
    if (remaining() != 0) fail(std::to_string(remaining()) + " bytes left after the array");
    while (e_.method == method_deflate && !stream_end_) {
      if (z_.avail_in == 0) refill();
      unsigned char extra = 0;
      z_.next_out = &extra;
      z_.avail_out = 1;
      const int r = inflate(&z_, Z_NO_FLUSH);
      if (z_.avail_out == 0) fail("inflates to more bytes than its declared size");
      check_inflate(r);
    }
    if (crc_ != e_.crc) fail("CRC-32 mismatch (corrupt archive)");
  }

  [[noreturn]] void fail(const std::string& message) const { f_.fail("entry '" + e_.name + "': " + message); }

 private:
  void refill() {
    if (compressed_left_ == 0) fail("truncated: the compressed data end before the entry is complete");
    const auto k = static_cast<std::size_t>(std::min<std::uint64_t>(in_.size(), compressed_left_));
    f_.read_exact(in_.data(), k, "compressed zip data");
    compressed_left_ -= k;
    z_.next_in = in_.data();
    z_.avail_in = static_cast<uInt>(k);
  }
  void check_inflate(int r) {
    if (r == Z_STREAM_END) {
      stream_end_ = true;
    } else if (r == Z_MEM_ERROR) {
      throw std::bad_alloc();
    } else if (r != Z_OK && !(r == Z_BUF_ERROR && z_.avail_in == 0)) {
      // Z_BUF_ERROR with input left would mean no progress is possible: treat it as corruption.
      fail(std::string("corrupt deflate data: ") + (z_.msg != nullptr ? z_.msg : "inflate error " + std::to_string(r)));
    }
  }

  InputFile& f_;
  ZipEntry e_;
  z_stream z_{};
  bool inflating_ = false;
  bool stream_end_ = false;
  std::vector<unsigned char> in_;
  std::uint64_t compressed_left_ = 0;
  std::uint64_t delivered_ = 0;
  uLong crc_ = crc32_z(0, nullptr, 0);
};

struct NpyArray {
  char kind = 0;      // numpy dtype kind: 'u' unsigned, 'i' signed, 'f' float, ...
  int itemsize = 0;   // bytes per element
  bool big_endian = false;
  bool fortran_order = false;
  std::vector<std::uint64_t> shape;
};

// A cursor over the npy header, a Python dict literal of strings, booleans and int tuples.
class DictCursor {
 public:
  explicit DictCursor(std::string_view s) : s_(s) {}
  bool eat(char c) {
    skip_space();
    if (i_ < s_.size() && s_[i_] == c) return ++i_, true;
    return false;
  }
  bool word(std::string_view w) {
    skip_space();
    if (s_.substr(i_, w.size()) != w) return false;
    i_ += w.size();
    return true;
  }
  bool quoted(std::string& out) {
    skip_space();
    if (i_ >= s_.size() || (s_[i_] != '\'' && s_[i_] != '"')) return false;
    const std::size_t end = s_.find(s_[i_], i_ + 1);
    if (end == std::string_view::npos) return false;
    out.assign(s_.substr(i_ + 1, end - i_ - 1));
    i_ = end + 1;
    return true;
  }
  bool integer(std::uint64_t& v) {
    skip_space();
    const std::size_t start = i_;
    v = 0;
    for (; i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9'; ++i_) {
      if (v > (std::uint64_t{1} << 60)) return false;
      v = v * 10 + static_cast<std::uint64_t>(s_[i_] - '0');
    }
    if (i_ < s_.size() && s_[i_] == 'L') ++i_;  // Python 2 wrote long integers as 128116L
    return i_ > start;
  }

 private:
  void skip_space() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n')) ++i_;
  }
  std::string_view s_;
  std::size_t i_ = 0;
};

// '<i8', '|u1', '>u2', ...: byte order (optional), kind, item size.
bool parse_descr(const std::string& d, NpyArray& a) {
  std::size_t k = 0;
  if (k < d.size() && (d[k] == '<' || d[k] == '>' || d[k] == '|' || d[k] == '=')) a.big_endian = d[k++] == '>';
  if (k + 2 != d.size()) return false;
  a.kind = d[k];
  a.itemsize = d[k + 1] - '0';
  return a.itemsize == 1 || a.itemsize == 2 || a.itemsize == 4 || a.itemsize == 8;
}

bool parse_npy_dict(std::string_view text, NpyArray& a) {
  DictCursor c(text);
  if (!c.eat('{')) return false;
  bool descr = false, order = false, shape = false;
  while (!c.eat('}')) {
    std::string key;
    if (!c.quoted(key) || !c.eat(':')) return false;
    if (key == "descr") {
      std::string d;
      if (!c.quoted(d) || !parse_descr(d, a)) return false;
      descr = true;
    } else if (key == "fortran_order") {
      if (c.word("True")) a.fortran_order = true;
      else if (c.word("False")) a.fortran_order = false;
      else return false;
      order = true;
    } else if (key == "shape") {
      if (!c.eat('(')) return false;
      a.shape.clear();
      while (!c.eat(')')) {
        std::uint64_t v = 0;
        if (!c.integer(v)) return false;
        a.shape.push_back(v);
        if (!c.eat(',')) {
          if (!c.eat(')')) return false;
          break;
        }
      }
      shape = true;
    } else {
      return false;
    }
    if (!c.eat(',')) {
      if (!c.eat('}')) return false;
      break;
    }
  }
  return descr && order && shape;
}

// Reads the npy header at the start of an entry and checks that the entry holds exactly the
// array it describes (which also bounds every allocation by the zip directory's sizes).
NpyArray read_npy_header(ZipEntryReader& r, const std::string& path) {
  std::uint8_t pre[12];
  r.read_exact(pre, 10, "the npy header");
  if (std::memcmp(pre, "\x93NUMPY", 6) != 0) r.fail("not an npy array (bad magic)");
  std::uint64_t header_len = 0;
  if (pre[6] == 1) {
    header_len = load_le<std::uint16_t>(pre + 8);
  } else if (pre[6] == 2 || pre[6] == 3) {
    r.read_exact(pre + 10, 2, "the npy header");
    header_len = load_le<std::uint32_t>(pre + 8);
  } else {
    r.fail("unsupported npy format version " + std::to_string(pre[6]));
  }
  if (header_len > r.remaining() || header_len > (1u << 20)) r.fail("truncated or implausible npy header");
  std::string text(header_len, '\0');
  r.read_exact(text.data(), text.size(), "the npy header");
  NpyArray a;
  if (!parse_npy_dict(text, a)) r.fail("malformed npy header " + text.substr(0, 120));
  if (a.fortran_order) r.fail("fortran_order arrays are not supported");
  std::vector<std::uint64_t> factors = a.shape;
  factors.push_back(static_cast<std::uint64_t>(a.itemsize));
  const std::uint64_t bytes = detail::checked_product(factors, path, "the npy array size");
  if (bytes != r.remaining())
    r.fail("the npy array needs " + std::to_string(bytes) + " bytes but the entry holds " +
           std::to_string(r.remaining()));
  return a;
}

std::string shape_string(const std::vector<std::uint64_t>& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + ")";
}

// One npz batch: its zip directory and the validated headers of `data` and `labels`. The
// constructor only reads headers; read() then appends the first `take` images and labels.
class ImagenetBatch {
 public:
  ImagenetBatch(const std::string& path, int side) : file_(path, InputFile::Mode::raw), side_(side) {
    const std::vector<ZipEntry> entries = read_zip_directory(file_);
    data_ = find(entries, "data.npy");
    labels_ = find(entries, "labels.npy");
    const std::uint64_t dim = 3ull * static_cast<std::uint64_t>(side) * static_cast<std::uint64_t>(side);
    {
      ZipEntryReader r(file_, data_);
      const NpyArray a = read_npy_header(r, path);
      if (a.kind != 'u' || a.itemsize != 1) r.fail("data must be uint8 ('|u1')");
      std::uint64_t per_image = 1;
      for (std::size_t i = 1; i < a.shape.size(); ++i) per_image *= a.shape[i];  // bounded by the entry size
      if (a.shape.size() < 2 || per_image != dim)
        r.fail("data shape " + shape_string(a.shape) + " does not hold " + std::to_string(side) + "x" +
               std::to_string(side) + " RGB images (" + std::to_string(dim) + " bytes each)");
      n_ = a.shape[0];
    }
    {
      ZipEntryReader r(file_, labels_);
      labels_array_ = read_npy_header(r, path);
      if (labels_array_.kind != 'i' && labels_array_.kind != 'u') r.fail("labels must be integers");
      if (labels_array_.shape.size() != 1)
        r.fail("labels shape " + shape_string(labels_array_.shape) + " is not one-dimensional");
      if (labels_array_.shape[0] != n_)
        r.fail("count mismatch: " + std::to_string(labels_array_.shape[0]) + " labels but " + std::to_string(n_) +
               " images in data.npy");
    }
  }

  std::uint64_t size() const { return n_; }

  // Appends the first `take` images and labels (labels converted from 1..1000 to 0..999). The
  // CRC-32 of an entry can only be checked when the whole entry is read (take == size()).
  void read(Dataset& d, std::uint64_t take) {
    const std::uint64_t dim = 3ull * static_cast<std::uint64_t>(side_) * static_cast<std::uint64_t>(side_);
    {
      ZipEntryReader r(file_, data_);
      read_npy_header(r, file_.path());
      const std::size_t old = d.images.size();
      d.images.resize(old + take * dim);
      r.read_exact(d.images.data() + old, take * dim, "the image data");
      if (take == n_) r.finish();
    }
    ZipEntryReader r(file_, labels_);
    read_npy_header(r, file_.path());
    const auto size = static_cast<std::size_t>(labels_array_.itemsize);
    constexpr std::uint64_t chunk = 1u << 16;
    std::vector<std::uint8_t> buf(chunk * size);
    for (std::uint64_t first = 0; first < take; first += chunk) {
      const std::uint64_t count = std::min(chunk, take - first);
      r.read_exact(buf.data(), count * size, "the label data");
      for (std::uint64_t i = 0; i < count; ++i) {
        const std::int64_t label = decode_label(buf.data() + i * size);
        if (label < 1 || label > 1000)
          file_.fail("label " + std::to_string(label) + " out of range 1..1000", static_cast<std::int64_t>(first + i));
        d.labels.push_back(static_cast<std::int32_t>(label - 1));
      }
    }
    if (take == n_) r.finish();
  }

 private:
  // The one entry of that name: a second one is ambiguous (numpy reads the last, a zip tool may
  // read either), so the archive is refused rather than read as one of two datasets.
  ZipEntry find(const std::vector<ZipEntry>& entries, const std::string& name) const {
    const ZipEntry* found = nullptr;
    for (const ZipEntry& e : entries)
      if (e.name == name) {
        if (found) file_.fail("the archive holds '" + name + "' twice");
        found = &e;
      }
    if (!found) file_.fail("no '" + name + "' array in the archive");
    return *found;
  }
  std::int64_t decode_label(const std::uint8_t* p) const {
    const auto size = static_cast<std::size_t>(labels_array_.itemsize);
    std::uint64_t v = labels_array_.big_endian ? detail::load_be(p, size) : load_le(p, size);
    // Sign-extend narrower signed integers.
    if (labels_array_.kind == 'i' && size < 8 && (v >> (8 * size - 1)) != 0) v |= ~std::uint64_t{0} << (8 * size);
    // An unsigned 64-bit value above INT64_MAX becomes negative: rejected as out of range.
    return static_cast<std::int64_t>(v);
  }

  InputFile file_;
  int side_;
  ZipEntry data_, labels_;
  NpyArray labels_array_;
  std::uint64_t n_ = 0;
};

}  // namespace

Dataset read_imagenet_npz(const std::vector<std::string>& paths, int side, Index limit) {
  if (side <= 0) throw std::invalid_argument("read_imagenet_npz: side must be positive");
  if (paths.empty()) throw std::invalid_argument("read_imagenet_npz: no files given");
  // Pass 1 reads only the headers (every file that will be used, so a bad file fails fast) and
  // counts the images, so that the pixel buffer is allocated once.
  std::vector<std::unique_ptr<ImagenetBatch>> batches;
  std::uint64_t total = 0;
  const auto wanted = static_cast<std::uint64_t>(limit);
  for (const std::string& path : paths) {
    if (limit > 0 && total >= wanted) break;
    batches.push_back(std::make_unique<ImagenetBatch>(path, side));
    total += batches.back()->size();
  }
  if (total == 0) throw InputError(paths.front(), "contains no images");
  const std::uint64_t keep = limit > 0 ? std::min(total, wanted) : total;

  Dataset d;
  d.name = paths.front();
  d.n = static_cast<Index>(keep);
  d.channels = 3;
  d.height = side;
  d.width = side;
  d.classes = 1000;
  d.images.reserve(keep * d.dim());
  d.labels.reserve(keep);
  for (auto& b : batches) {
    const std::uint64_t take = std::min(b->size(), keep - d.labels.size());
    b->read(d, take);
  }
  return d;
}

}  // namespace hepsim
