// Robustness: randomly mutated and truncated files must either load or throw InputError, never
// crash, hang or read out of bounds (run under -DHEPSIM_SANITIZE=ON to check the latter).
// HDF5 files are left out: a corrupt file's robustness is then the HDF5 library's own.
#include <functional>

#include "datasets/dataset.hpp"
#include "helpers.hpp"

using namespace hepsim;
using namespace hepsim::test;

namespace {

// Loads the mutated file; returns true when it loaded, false on InputError. Any other
// exception fails the test case.
bool loads(const std::function<void()>& load) {
  try {
    load();
    return true;
  } catch (const InputError&) {
    return false;
  }
}

// Mutations of `original` written to `path`: truncations at random lengths, then random byte
// flips (1..4 bytes). Returns how many mutants were rejected.
int fuzz(const Bytes& original, const std::string& path, const std::function<void()>& load, std::uint64_t seed,
         int rounds) {
  Rng rng(seed, Stream::data);
  int rejected = 0;
  for (int round = 0; round < rounds; ++round) {
    Bytes b = original;
    if (round % 3 == 0) {
      b.resize(rng.below(b.size()));
    } else {
      const int flips = 1 + static_cast<int>(rng.below(4));
      for (int k = 0; k < flips; ++k) b[rng.below(b.size())] ^= static_cast<std::uint8_t>(1 + rng.below(255));
    }
    write_file(path, b);
    CAPTURE(round);
    rejected += loads(load) ? 0 : 1;
  }
  return rejected;
}

}  // namespace

TEST_CASE("fuzz: mutated IDX, CIFAR and npz files give InputError or load") {
  TempDir dir;
  const std::string images = dir.file("images"), labels = dir.file("labels");
  const Bytes idx_images = idx_file({4, 5, 5}, pixels(4, 25)), idx_labels = idx_file({4}, {1, 2, 3, 4});
  write_file(labels, idx_labels);
  const auto load_idx = [&] { read_idx(images, labels); };
  CHECK(fuzz(idx_images, images, load_idx, 1, 300) > 100);

  write_gz(images, idx_images);
  const Bytes gz = read_file(images);
  CHECK(fuzz(gz, images, load_idx, 2, 300) > 100);
  write_file(images, idx_images);
  CHECK(fuzz(idx_labels, labels, load_idx, 3, 200) > 50);

  const std::string cifar = dir.file("cifar.bin");
  CHECK(fuzz(cifar_records({{1, 2}, {3, 4}}), cifar, [&] { read_cifar({cifar}, 100); }, 4, 200) > 50);

  const std::string npz = dir.file("batch.npz");
  const auto load_npz = [&] { read_imagenet_npz({npz}, 8); };
  const std::int64_t label = 17;
  for (const bool deflate : {false, true}) {
    CAPTURE(deflate);
    const Bytes zip = zip_archive({{"data.npy", npy("|u1", "(2, 192)", pixels(2, 192)), deflate},
                                   {"labels.npy", npy("<i8", "(2,)", int64_le({label, 1000})), deflate}});
    write_file(npz, zip);
    REQUIRE(loads(load_npz));
    CHECK(fuzz(zip, npz, load_npz, deflate ? 5 : 6, 400) > 200);
  }
}
