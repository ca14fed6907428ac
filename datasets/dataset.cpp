// Dataset kinds, their directory layouts and default preprocessing (SPEC 7, 8).
#include <array>
#include <filesystem>
#include <system_error>

#include "datasets/dataset.hpp"
#include "sim/error.hpp"
#include "sim/hash.hpp"

namespace hepsim {
namespace {

namespace fs = std::filesystem;

constexpr std::array<DatasetKind, 7> all_kinds = {DatasetKind::fmnist,     DatasetKind::mnist,      DatasetKind::cifar10,
                                                  DatasetKind::cifar100,   DatasetKind::imagenet32, DatasetKind::imagenet64,
                                                  DatasetKind::h5};

// True also for a path that exists but cannot be resolved (a symlink loop): the loader then
// names the reason instead of "not found".
bool path_exists(const fs::path& p) {
  std::error_code ec;
  return fs::exists(p, ec) || (ec && ec != std::errc::no_such_file_or_directory);
}

// The IDX file `name`, gzip-compressed (name.gz, as distributed) or not; when neither exists the
// error names the expected .gz file.
std::string idx_file(const fs::path& dir, const std::string& name) {
  const fs::path gz = dir / (name + ".gz"), plain = dir / name;
  if (path_exists(gz)) return gz.string();
  if (path_exists(plain)) return plain.string();
  throw InputError(gz.string(), "file not found (nor " + plain.string() + ")");
}

// `dir` itself, or its subfolder `sub` (the folder the official archive unpacks to) when only
// that one contains `probe`.
fs::path data_folder(const fs::path& dir, const char* sub, const char* probe) {
  if (!path_exists(dir / probe) && path_exists(dir / sub / probe)) return dir / sub;
  return dir;
}

Dataset load_split(DatasetKind kind, const std::string& dir_name, bool train, Index limit) {
  if (dir_name.empty())
    throw InputError("--data-dir", std::string("no default data directory for ") + to_string(kind) + "; give one");
  std::error_code ec;
  if (!fs::is_directory(dir_name, ec))
    throw InputError(dir_name, fs::exists(dir_name, ec) ? "is not a directory (--data-dir names the directory of the "
                                                          "dataset's files)"
                                                        : "data directory not found");
  const fs::path dir(dir_name);
  Dataset d;
  switch (kind) {
    case DatasetKind::fmnist:
    case DatasetKind::mnist: {
      const std::string prefix = train ? "train" : "t10k";
      const std::string images = idx_file(dir, prefix + "-images-idx3-ubyte");  // looked up first: reported first
      d = read_idx(images, idx_file(dir, prefix + "-labels-idx1-ubyte"), 10, limit);
      break;
    }
    case DatasetKind::cifar10: {
      const fs::path folder = data_folder(dir, "cifar-10-batches-bin", train ? "data_batch_1.bin" : "test_batch.bin");
      std::vector<std::string> paths;
      if (train)
        for (int b = 1; b <= 5; ++b) paths.push_back((folder / ("data_batch_" + std::to_string(b) + ".bin")).string());
      else
        paths.push_back((folder / "test_batch.bin").string());
      d = read_cifar(paths, 10, limit);
      break;
    }
    case DatasetKind::cifar100: {
      const char* file = train ? "train.bin" : "test.bin";
      d = read_cifar({(data_folder(dir, "cifar-100-binary", file) / file).string()}, 100, limit);
      break;
    }
    case DatasetKind::imagenet32:
    case DatasetKind::imagenet64: {
      std::vector<std::string> paths;
      if (train)
        for (int b = 1; b <= 10; ++b) paths.push_back((dir / ("train_data_batch_" + std::to_string(b) + ".npz")).string());
      else
        paths.push_back((dir / "val_data.npz").string());
      d = read_imagenet_npz(paths, kind == DatasetKind::imagenet32 ? 32 : 64, limit);
      break;
    }
    case DatasetKind::h5:
      d = read_h5_dataset((dir / (train ? "train.h5" : "test.h5")).string(), limit);
      break;
  }
  d.name = std::string(to_string(kind)) + (train ? "/train" : "/test");
  return d;
}

}  // namespace

std::uint64_t fingerprint(const Dataset& d) {
  std::uint64_t h = kHashSeed;
  for (const std::int64_t v : {static_cast<std::int64_t>(d.n), std::int64_t{d.channels}, std::int64_t{d.height},
                               std::int64_t{d.width}, std::int64_t{d.classes}})
    h = hash_mix(h, static_cast<std::uint64_t>(v));
  h = hash_bytes(d.labels.data(), d.labels.size() * sizeof(std::int32_t), h);
  return hash_bytes(d.images.data(), d.images.size(), h);
}

DatasetKind parse_dataset_kind(const std::string& name, const std::string& where) {
  for (const DatasetKind k : all_kinds)
    if (name == to_string(k)) return k;
  throw InputError(where, "unknown dataset '" + name +
                              "' (expected fmnist, mnist, cifar10, cifar100, imagenet32, imagenet64 or h5)");
}

const char* to_string(DatasetKind k) {
  switch (k) {
    case DatasetKind::fmnist: return "fmnist";
    case DatasetKind::mnist: return "mnist";
    case DatasetKind::cifar10: return "cifar10";
    case DatasetKind::cifar100: return "cifar100";
    case DatasetKind::imagenet32: return "imagenet32";
    case DatasetKind::imagenet64: return "imagenet64";
    case DatasetKind::h5: return "h5";
  }
  return "?";
}

std::string default_data_dir(DatasetKind k) {
  // Debian's dataset-fashion-mnist package, and an MNIST installed the same way (when absent, the
  // loader names the file it looked for there).
  if (k == DatasetKind::fmnist) return "/usr/share/datasets/fashion-mnist";
  if (k == DatasetKind::mnist) return "/usr/share/datasets/mnist";
  return "";
}

DatasetSplits load_dataset(DatasetKind kind, const std::string& dir, Index train_limit, Index test_limit) {
  DatasetSplits s{load_split(kind, dir, true, train_limit), load_split(kind, dir, false, test_limit)};
  // Only hepsim's own HDF5 files can disagree (two independently written files).
  const Dataset &a = s.train, &b = s.test;
  if (a.channels != b.channels || a.height != b.height || a.width != b.width || a.classes != b.classes) {
    const auto shape = [](const Dataset& d) {
      return std::to_string(d.channels) + "x" + std::to_string(d.height) + "x" + std::to_string(d.width) + " (" +
             std::to_string(d.classes) + " classes)";
    };
    throw InputError(dir, "train and test splits differ: train " + shape(a) + ", test " + shape(b));
  }
  return s;
}

Dataset load_test_split(DatasetKind kind, const std::string& dir, Index limit) {
  return load_split(kind, dir, false, limit);
}

Normalization default_normalization(DatasetKind k) {
  switch (k) {
    case DatasetKind::cifar10:
    case DatasetKind::cifar100: return {{0.4914f, 0.4822f, 0.4465f}, {0.2023f, 0.1994f, 0.2010f}, 1.5f};
    case DatasetKind::imagenet32:
    case DatasetKind::imagenet64: return {{0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}, 1.5f};
    case DatasetKind::fmnist:
    case DatasetKind::mnist:
    case DatasetKind::h5: break;
  }
  return {};  // x/255
}

Augmentation default_augmentation(DatasetKind k) {
  switch (k) {
    case DatasetKind::cifar10:
    case DatasetKind::cifar100:
    case DatasetKind::imagenet32: return {true, 2};  // 32 -> 36 zero-padded, random 32x32 crop
    case DatasetKind::imagenet64: return {true, 4};  // the same 1/8 margin at 64x64
    case DatasetKind::fmnist:
    case DatasetKind::mnist:
    case DatasetKind::h5: break;
  }
  return {};
}

void convert_dataset(DatasetKind kind, const std::string& dir, const std::string& out_dir) {
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw InputError(out_dir, "cannot create the output directory: " + ec.message());
  const DatasetSplits s = load_dataset(kind, dir);
  write_h5_dataset(s.train, (fs::path(out_dir) / "train.h5").string());
  write_h5_dataset(s.test, (fs::path(out_dir) / "test.h5").string());
}

}  // namespace hepsim
