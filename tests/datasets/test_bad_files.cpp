// The committed fixtures: every file in tests/data/bad must give the InputError listed for it in
// tests/data/bad_files.txt; the files in tests/data/good (one written by numpy) must load.
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "datasets/dataset.hpp"
#include "helpers.hpp"

using namespace hepsim;
using namespace hepsim::test;

namespace {

const std::string data_dir = HEPSIM_TEST_DATA_DIR;
const std::string good_images = data_dir + "/good/images-3x4x4.idx3";
const std::string good_labels = data_dir + "/good/labels-3.idx1";

struct Expectation {
  std::string loader, phrase;
};

std::map<std::string, Expectation> read_manifest() {
  std::ifstream in(data_dir + "/bad_files.txt");
  REQUIRE(in.good());
  std::map<std::string, Expectation> m;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream s(line);
    std::string file;
    Expectation e;
    s >> file >> e.loader >> std::ws;
    std::getline(s, e.phrase);
    REQUIRE_MESSAGE(!e.phrase.empty(), "manifest line without a phrase: " << line);
    m[file] = e;
  }
  return m;
}

void load_with(const std::string& loader, const std::string& path) {
  if (loader == "idx-images") read_idx(path, good_labels);
  else if (loader == "idx-labels") read_idx(good_images, path);
  else if (loader == "cifar10") read_cifar({path}, 10);
  else if (loader == "cifar100") read_cifar({path}, 100);
  else if (loader == "npz8") read_imagenet_npz({path}, 8);
  else if (loader == "h5") read_h5_dataset(path);
  else FAIL("unknown loader '" << loader << "' in bad_files.txt");
}

}  // namespace

TEST_CASE("tests/data/bad: every file gives the InputError listed in bad_files.txt") {
  const std::map<std::string, Expectation> manifest = read_manifest();
  std::size_t seen = 0;
  for (const auto& entry : std::filesystem::directory_iterator(data_dir + "/bad")) {
    const std::string name = entry.path().filename().string();
    CAPTURE(name);
    const auto it = manifest.find(name);
    REQUIRE_MESSAGE(it != manifest.end(), "no entry in bad_files.txt");
    check_input_error([&] { load_with(it->second.loader, entry.path().string()); }, entry.path().string(),
                      it->second.phrase);
    ++seen;
  }
  CHECK(seen == manifest.size());  // no manifest entry without its file
}

TEST_CASE("tests/data/good: IDX pair and an npz written by numpy.savez_compressed") {
  const Dataset d = read_idx(good_images, good_labels);
  CHECK(d.n == 3);
  CHECK(d.height == 4);
  CHECK(d.width == 4);
  CHECK(d.labels == std::vector<std::int32_t>{7, 0, 9});
  for (Index i = 0; i < 3; ++i)
    for (Index k = 0; k < 16; ++k) CHECK(d.image(i)[k] == pixel(static_cast<std::size_t>(i), static_cast<std::size_t>(k)));

  // numpy writes Zip64 extra fields in the local headers (force_zip64) and pads the npy header.
  const Dataset n = read_imagenet_npz({data_dir + "/good/imagenet8-numpy.npz"}, 8);
  CHECK(n.n == 2);
  CHECK(n.channels == 3);
  CHECK(n.height == 8);
  CHECK(n.labels == std::vector<std::int32_t>{0, 999});
  for (Index i = 0; i < 2; ++i)
    for (Index k = 0; k < 192; ++k) CHECK(n.image(i)[k] == pixel(static_cast<std::size_t>(i), static_cast<std::size_t>(k)));
}
