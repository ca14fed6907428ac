// Mini-batches (SPEC 7): uint8 images -> normalised columns, labels -> one-hot columns, with the
// training augmentation of the reference (torchvision RandomHorizontalFlip + RandomCrop(padding)).
#include <numeric>
#include <stdexcept>
#include <utility>

#include "datasets/dataset.hpp"

namespace hepsim {

template <class R>
void make_batch(const Dataset& d, const Index* idx, Index count, const Normalization& norm, const Augmentation& aug,
                Rng* rng, MatRef<R> x, MatRef<R> y) {
  const int channels = d.channels, height = d.height, width = d.width;
  if (x.rows() != d.dim() || x.cols() != count || y.rows() != d.classes || y.cols() != count)
    throw std::invalid_argument("make_batch: x must be dim x count and y classes x count");
  const auto per_channel = [&](const std::vector<float>& v) { return v.empty() || std::ssize(v) == channels; };
  if (!per_channel(norm.mean) || !per_channel(norm.std))
    throw std::invalid_argument("make_batch: normalisation mean/std must have one entry per channel");
  const bool augment = aug.flip || aug.pad > 0;
  if (augment && rng == nullptr) throw std::invalid_argument("make_batch: augmentation needs an Rng");

  // One 256-entry table per channel: value(p) = (p/255 - mean[c]) / (scale * std[c]), evaluated
  // in double and rounded once to R, so every pixel costs a lookup and no division.
  std::vector<R> table(static_cast<std::size_t>(channels) * 256);
  for (int c = 0; c < channels; ++c) {
    const double mean = norm.mean.empty() ? 0.0 : norm.mean[c];
    const double sd = norm.std.empty() ? 1.0 : norm.std[c];
    for (int p = 0; p < 256; ++p)
      table[c * 256 + p] = static_cast<R>((p / 255.0 - mean) / (static_cast<double>(norm.scale) * sd));
  }

  y.setZero();
  const int pad = aug.pad;
  for (Index j = 0; j < count; ++j) {
    const Index i = idx[j];
    if (i < 0 || i >= d.n) throw std::out_of_range("make_batch: sample index out of range");
    y(d.labels[i], j) = R(1);
    // Draws per sample, in this order: flip (if enabled), then the crop's row and column offsets
    // (if pad > 0), each uniform on 0..2*pad like torchvision's RandomCrop. dy = dx = pad is the
    // unshifted image.
    bool flip = false;
    int dy = pad, dx = pad;
    if (aug.flip) flip = rng->uniform() < 0.5;
    if (pad > 0) {
      dy = static_cast<int>(rng->below(static_cast<std::uint64_t>(2 * pad + 1)));
      dx = static_cast<int>(rng->below(static_cast<std::uint64_t>(2 * pad + 1)));
    }
    // Output pixel (r, q) is pixel (r + dy - pad, q + dx - pad) of the (flipped) image, and the
    // zero padding outside it is the raw value 0, normalised like any other pixel (torchvision
    // pads the raw image before Normalize), i.e. (0 - mean[c]) / (scale * std[c]), not 0.
    const std::uint8_t* img = d.image(i);
    R* out = &x(0, j);
    for (int c = 0; c < channels; ++c) {
      const R* t = table.data() + c * 256;
      for (int r = 0; r < height; ++r) {
        R* row = out + (static_cast<Index>(c) * height + r) * width;
        const int sr = r + dy - pad;
        if (sr < 0 || sr >= height) {
          std::fill(row, row + width, t[0]);
          continue;
        }
        const std::uint8_t* src = img + (static_cast<Index>(c) * height + sr) * width;
        for (int q = 0; q < width; ++q) {
          const int sq = q + dx - pad;  // column in the flipped image
          row[q] = sq < 0 || sq >= width ? t[0] : t[src[flip ? width - 1 - sq : sq]];
        }
      }
    }
  }
}

template void make_batch<float>(const Dataset&, const Index*, Index, const Normalization&, const Augmentation&, Rng*,
                                MatRef<float>, MatRef<float>);
template void make_batch<double>(const Dataset&, const Index*, Index, const Normalization&, const Augmentation&, Rng*,
                                 MatRef<double>, MatRef<double>);

std::vector<Index> shuffled_indices(Index n, std::uint64_t seed, std::uint64_t epoch) {
  std::vector<Index> p(static_cast<std::size_t>(n));
  std::iota(p.begin(), p.end(), Index{0});
  Rng rng(seed, Stream::shuffle, epoch);
  for (Index i = n - 1; i > 0; --i)
    std::swap(p[i], p[static_cast<Index>(rng.below(static_cast<std::uint64_t>(i + 1)))]);
  return p;
}

}  // namespace hepsim
