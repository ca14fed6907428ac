// CIFAR-10 / CIFAR-100 binary version (SPEC 8): fixed-size records, no header.
//   CIFAR-10:  label byte (0..9), 3072 pixel bytes (1024 R, 1024 G, 1024 B, each 32x32 row-major)
//   CIFAR-100: coarse label byte (0..19), fine label byte (0..99), 3072 pixel bytes; the fine
//              label is the target (SPEC 11.7: the coarse byte comes first).
// The record count is the file size over the record size (the official files hold 10000 each).
#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "datasets/dataset.hpp"
#include "datasets/input_file.hpp"

namespace hepsim {

Dataset read_cifar(const std::vector<std::string>& paths, int classes, Index limit) {
  if (classes != 10 && classes != 100) throw std::invalid_argument("read_cifar: classes must be 10 or 100");
  using detail::InputFile;
  constexpr std::size_t pixels = 3 * 32 * 32;
  const std::size_t label_bytes = classes == 10 ? 1 : 2;
  const std::size_t record = label_bytes + pixels;
  const char* format = classes == 10 ? "CIFAR-10" : "CIFAR-100";

  // Open and size-check every file first: a missing or mis-sized file is reported before any
  // reading, and the total tells how much to allocate.
  std::vector<std::unique_ptr<InputFile>> files;
  std::uint64_t total = 0;
  for (const std::string& path : paths) {
    auto f = std::make_unique<InputFile>(path, InputFile::Mode::raw);
    if (f->size() == 0) f->fail("empty file");
    if (f->size() % record != 0)
      f->fail("size " + std::to_string(f->size()) + " bytes is not a multiple of the " + std::to_string(record) +
              "-byte " + format + " record (truncated or not a " + format + " file)");
    total += f->size() / record;
    files.push_back(std::move(f));
  }
  if (total == 0) throw std::invalid_argument("read_cifar: no files given");

  const std::uint64_t keep = limit > 0 ? std::min<std::uint64_t>(total, static_cast<std::uint64_t>(limit)) : total;
  Dataset d;
  d.name = paths.front();
  d.n = static_cast<Index>(keep);
  d.channels = 3;
  d.height = 32;
  d.width = 32;
  d.classes = classes;
  d.images.resize(keep * pixels);
  d.labels.resize(keep);

  constexpr std::uint64_t chunk_records = 1024;
  std::vector<std::uint8_t> buf(chunk_records * record);
  std::uint64_t out = 0;  // images stored so far
  for (auto& f : files) {
    const std::uint64_t in_file = std::min(f->size() / record, keep - out);
    for (std::uint64_t first = 0; first < in_file; first += chunk_records) {
      const std::uint64_t count = std::min(chunk_records, in_file - first);
      f->read_exact(buf.data(), count * record, "the record data", record, static_cast<std::int64_t>(first));
      for (std::uint64_t r = 0; r < count; ++r) {
        const std::uint8_t* rec = buf.data() + r * record;
        const auto at = static_cast<std::int64_t>(first + r);
        if (classes == 100 && rec[0] >= 20)
          f->fail("coarse label " + std::to_string(rec[0]) + " out of range 0..19", at);
        const std::uint8_t label = rec[label_bytes - 1];
        if (label >= classes)
          f->fail(std::string(classes == 100 ? "fine label " : "label ") + std::to_string(label) + " out of range 0.." +
                      std::to_string(classes - 1),
                  at);
        d.labels[out] = label;
        std::memcpy(d.images.data() + out * pixels, rec + label_bytes, pixels);
        ++out;
      }
    }
    if (out == keep) break;
  }
  return d;
}

}  // namespace hepsim
