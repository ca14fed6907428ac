#pragma once
// hepsim/datasets — datasets in their original file formats (SPEC 7, 8). Pixels stay uint8 in
// memory (ImageNet 32x32 is 3.7 GiB as uint8); batches are normalised to floating point on the
// fly. ALL validation of input files lives here: a bad file throws InputError naming the file,
// the record when it applies, and what is wrong.
//
//   fmnist / mnist   IDX (gzip or raw): train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz],
//                    t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]
//   cifar10          data_batch_{1..5}.bin, test_batch.bin   (label byte + 3072 planar RGB bytes)
//   cifar100         train.bin, test.bin                     (coarse, fine label bytes + 3072 bytes)
//   imagenet32/64    train_data_batch_{1..10}.npz, val_data.npz (labels 1..1000 in the file)
//   h5               train.h5, test.h5 in hepsim's own layout (/images uint8 N x C x H x W, /labels)
#include <cstdint>
#include <string>
#include <vector>

#include "sim/random.hpp"
#include "sim/types.hpp"

namespace hepsim {

enum class DatasetKind { fmnist, mnist, cifar10, cifar100, imagenet32, imagenet64, h5 };

struct Dataset {
  std::string name;                  // e.g. "fmnist/train"
  Index n = 0;                       // number of images
  int channels = 0, height = 0, width = 0;
  int classes = 0;
  std::vector<std::uint8_t> images;  // n * dim() bytes; image i at i * dim(), planar C x H x W, row-major
  std::vector<std::int32_t> labels;  // n labels in [0, classes)
  Index dim() const { return static_cast<Index>(channels) * height * width; }
  const std::uint8_t* image(Index i) const { return images.data() + i * dim(); }
};

struct DatasetSplits {
  Dataset train, test;
};

// A 64-bit hash of a dataset's shape, labels and pixels (FNV-1a over 8-byte words): two loads
// of the same files agree, different data disagree (checks that a resumed run sees its data).
std::uint64_t fingerprint(const Dataset& d);

// "fmnist" | "mnist" | "cifar10" | "cifar100" | "imagenet32" | "imagenet64" | "h5".
DatasetKind parse_dataset_kind(const std::string& name, const std::string& where = "--dataset");
const char* to_string(DatasetKind k);
// The directory used when --data-dir is not given ("" when there is no standard place).
std::string default_data_dir(DatasetKind k);

// Loads both splits from `dir`. train_limit / test_limit > 0 keep only the first so many images
// (the files are still validated as far as they are read). Throws InputError.
DatasetSplits load_dataset(DatasetKind kind, const std::string& dir, Index train_limit = 0, Index test_limit = 0);
// Loads only the test split (evaluation, relax).
Dataset load_test_split(DatasetKind kind, const std::string& dir, Index limit = 0);

// IDX pair (images magic 0x00000803 N x H x W, labels magic 0x00000801 N), gzip or raw.
Dataset read_idx(const std::string& images_path, const std::string& labels_path, int classes = 10, Index limit = 0);
// CIFAR binary files, concatenated in order. classes 10: CIFAR-10 records (label byte + 3072
// pixels); classes 100: CIFAR-100 records (coarse byte, fine byte + 3072 pixels; the fine label
// is kept). The record count of each file is its size over the record size.
Dataset read_cifar(const std::vector<std::string>& paths, int classes, Index limit = 0);
// Downsampled ImageNet npz files (zip of data.npy uint8 (n, 3*side*side), labels.npy 1..1000),
// concatenated in order; labels become 0..999. side: 32 or 64.
Dataset read_imagenet_npz(const std::vector<std::string>& paths, int side, Index limit = 0);

// Per-channel input normalisation (SPEC 7): x = (pixel/255 − mean[c]) / (scale · std[c]).
struct Normalization {
  std::vector<float> mean;  // per channel (empty: 0)
  std::vector<float> std;   // per channel (empty: 1)
  float scale = 1.0f;       // 1.5 for CIFAR / ImageNet, 1 for (F)MNIST (x/255)
};
Normalization default_normalization(DatasetKind k);

// Training augmentation (SPEC 7): random horizontal flip and random crop of the zero-padded image.
struct Augmentation {
  bool flip = false;
  int pad = 0;  // crop an H x W window from the image zero-padded by `pad` on each side (2: 32 -> 36)
};
Augmentation default_augmentation(DatasetKind k);  // none for (F)MNIST; flip + pad 2 for 32x32 colour

// Fills x (dim x count) with normalised images and y (classes x count) with one-hot labels for
// the samples idx[0..count). With augmentation, draws from `rng` (one stream per batch).
template <class R>
void make_batch(const Dataset& d, const Index* idx, Index count, const Normalization& norm,
                const Augmentation& aug, Rng* rng, MatRef<R> x, MatRef<R> y);

// A seeded permutation of 0..n-1 (Fisher–Yates with Rng(seed, Stream::shuffle, epoch)).
std::vector<Index> shuffled_indices(Index n, std::uint64_t seed, std::uint64_t epoch);

// hepsim's HDF5 layout: /images uint8 (N, C, H, W), /labels int32 (N), attribute "classes".
void write_h5_dataset(const Dataset& d, const std::string& path);
Dataset read_h5_dataset(const std::string& path, Index limit = 0);
// The kind a file written by convert_dataset came from (its "name" attribute, e.g.
// "cifar10/train"), so --dataset h5 can use that kind's normalisation and augmentation;
// DatasetKind::h5 when the file does not say.
DatasetKind h5_source_kind(const std::string& path);
// Loads both splits of `kind` from `dir` and writes out_dir/train.h5 and out_dir/test.h5
// (out_dir is created if needed).
void convert_dataset(DatasetKind kind, const std::string& dir, const std::string& out_dir);

}  // namespace hepsim
