// IDX files (MNIST, Fashion-MNIST; SPEC 8), gzip-compressed or not: InputFile inflates gzip
// content and passes plain files through unchanged, so one code path reads both.
//   header: 0x00 0x00, type byte (0x08 = uint8), rank byte, then one big-endian uint32 per dim
//   images: magic 0x00000803, N x H x W bytes        labels: magic 0x00000801, N bytes
#include <algorithm>
#include <cstdio>
#include <stdexcept>

#include "datasets/dataset.hpp"
#include "datasets/input_file.hpp"

namespace hepsim {
namespace {

using detail::InputFile;

std::string hex(std::uint32_t v, int digits) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%0*X", digits, v);
  return buf;
}

// Reads and checks the header of an IDX file of uint8 elements and the given rank; returns the
// dimensions. `kind` names the expected content in the messages ("images", "labels").
std::vector<std::uint64_t> read_idx_header(InputFile& f, std::uint8_t rank, const char* kind) {
  std::uint8_t magic[4];
  f.read_exact(magic, 4, "the IDX header");
  const std::uint32_t expected = 0x0800u | rank;
  if (magic[0] != 0 || magic[1] != 0)
    f.fail("bad magic number " + hex(detail::load_be<std::uint32_t>(magic), 8) + ", expected " + hex(expected, 8) +
           " (IDX " + kind + ")");
  if (magic[2] != 0x08) f.fail("IDX element type " + hex(magic[2], 2) + " is not 0x08 (unsigned byte)");
  if (magic[3] != rank)
    f.fail("bad magic number " + hex(detail::load_be<std::uint32_t>(magic), 8) + ", expected " + hex(expected, 8) +
           " (IDX " + kind + " have " + std::to_string(rank) + " dimensions)");
  std::uint8_t raw[4 * 3];
  f.read_exact(raw, 4u * rank, "the IDX header");
  std::vector<std::uint64_t> dims(rank);
  for (std::size_t i = 0; i < rank; ++i) dims[i] = detail::load_be<std::uint32_t>(raw + 4 * i);
  return dims;
}

// A header claiming more data than the file can deliver is rejected before allocating: a plain
// file must hold exactly the claimed bytes after the header; a gzip file can at most inflate to
// the deflate bound (the exact check then happens while reading).
void check_claimed_size(const InputFile& f, std::uint64_t claimed, const std::string& description) {
  const std::uint64_t header = f.position();
  const std::uint64_t available = f.max_content_size() - std::min(f.max_content_size(), header);
  if (claimed > available)
    f.fail((f.compressed() ? "truncated or corrupt: header claims " : "truncated: header claims ") + description + " (" +
           std::to_string(claimed) + " bytes) but the file " +
           (f.compressed() ? "can inflate to at most " : "holds only ") + std::to_string(available) +
           " bytes after the header");
  if (!f.compressed() && claimed < available)
    f.fail(std::to_string(available - claimed) + " bytes of unexpected data after the " + description +
           " the header claims");
}

// After the last record: nothing may follow (for gzip, reaching the end verifies the trailer).
void check_at_end(InputFile& f, const std::string& description) {
  if (!f.at_end()) f.fail("unexpected data after the " + description + " the header claims");
}

}  // namespace

Dataset read_idx(const std::string& images_path, const std::string& labels_path, int classes, Index limit) {
  if (classes < 1 || classes > 256) throw std::invalid_argument("read_idx: classes must be in 1..256 (uint8 labels)");
  InputFile images(images_path, InputFile::Mode::maybe_gzip);
  InputFile labels(labels_path, InputFile::Mode::maybe_gzip);
  const std::vector<std::uint64_t> idims = read_idx_header(images, 3, "images");
  const std::vector<std::uint64_t> ldims = read_idx_header(labels, 1, "labels");
  const std::uint64_t n = idims[0], h = idims[1], w = idims[2], n_labels = ldims[0];
  if (n == 0) images.fail("contains no images");
  // Sides beyond 2^16 pixels are no image this simulator could use; the bound keeps H and W in int.
  constexpr std::uint64_t max_side = 1u << 16;
  if (h == 0 || w == 0 || h > max_side || w > max_side)
    images.fail("implausible image size " + std::to_string(h) + "x" + std::to_string(w) + " in the header");

  // Each file against its own header first (a corrupt header is the real problem), then the pair.
  const std::string image_desc = std::to_string(n) + " images of " + std::to_string(h) + "x" + std::to_string(w);
  const std::string label_desc = std::to_string(n_labels) + " labels";
  const std::uint64_t dim = h * w;
  check_claimed_size(images, detail::checked_product({n, h, w}, images_path, image_desc), image_desc);
  check_claimed_size(labels, n_labels, label_desc);
  if (n_labels != n)
    labels.fail("count mismatch: " + std::to_string(n_labels) + " labels but " + images_path + " has " +
                std::to_string(n) + " images");

  const std::uint64_t keep = limit > 0 ? std::min<std::uint64_t>(n, static_cast<std::uint64_t>(limit)) : n;
  Dataset d;
  d.name = images_path;
  d.n = static_cast<Index>(keep);
  d.channels = 1;
  d.height = static_cast<int>(h);
  d.width = static_cast<int>(w);
  d.classes = classes;
  d.images.resize(keep * dim);
  images.read_exact(d.images.data(), d.images.size(), "the image data", dim);
  if (keep == n) check_at_end(images, image_desc);

  std::vector<std::uint8_t> raw_labels(keep);
  labels.read_exact(raw_labels.data(), keep, "the label data", 1);
  if (keep == n) check_at_end(labels, label_desc);
  d.labels.resize(keep);
  for (std::uint64_t i = 0; i < keep; ++i) {
    if (raw_labels[i] >= classes)
      labels.fail("label " + std::to_string(raw_labels[i]) + " out of range 0.." + std::to_string(classes - 1),
                  static_cast<std::int64_t>(i));
    d.labels[i] = raw_labels[i];
  }
  return d;
}

}  // namespace hepsim
