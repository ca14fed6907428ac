// hepsim.datasets: the datasets hepsim reads (datasets/dataset.hpp) as NumPy arrays — uint8 images
// (N, C, H, W) and int32 labels, validated like the CLI's — and batches normalised exactly as the
// CLI feeds them to the network (SPEC 7).
#include "datasets/dataset.hpp"
#include "tools/cli.hpp"
#include "tools/python/module.hpp"

namespace hepsim::python {
namespace {

py::tuple to_arrays(Dataset&& d) {
  auto* images = new std::vector<std::uint8_t>(std::move(d.images));
  auto* labels = new std::vector<std::int32_t>(std::move(d.labels));
  const py::capsule keep_i(images, [](void* p) { delete static_cast<std::vector<std::uint8_t>*>(p); });
  const py::capsule keep_l(labels, [](void* p) { delete static_cast<std::vector<std::int32_t>*>(p); });
  const auto n = static_cast<py::ssize_t>(d.n), c = static_cast<py::ssize_t>(d.channels),
             h = static_cast<py::ssize_t>(d.height), w = static_cast<py::ssize_t>(d.width);
  py::array img(py::dtype::of<std::uint8_t>(), {n, c, h, w}, {c * h * w, h * w, w, py::ssize_t{1}}, images->data(), keep_i);
  py::array lab(py::dtype::of<std::int32_t>(), {n}, {py::ssize_t{4}}, labels->data(), keep_l);
  return py::make_tuple(img, lab);
}

}  // namespace

void bind_datasets(py::module_& m) {
  m.def(
      "load",
      [](const std::string& name, const std::string& split, const py::object& data_dir, Index limit) {
        const DatasetKind kind = parse_dataset_kind(name, "name");
        if (split != "train" && split != "test") refuse("split", "must be 'train' or 'test'");
        if (limit < 0) refuse("limit", "must be ≥ 0 (0: all)");
        const std::string dir = data_dir.is_none() ? default_data_dir(kind) : py::str(data_dir).cast<std::string>();
        if (dir.empty()) refuse("data_dir", std::string("is required for dataset ") + to_string(kind));
        Dataset d = native([&] {
          return split == "test" ? load_test_split(kind, dir, limit) : load_dataset(kind, dir, limit, 1).train;
        });
        return to_arrays(std::move(d));
      },
      py::arg("name"), py::arg("split") = "test", py::arg("data_dir") = py::none(), py::arg("limit") = 0,
      "Loads a split of a dataset ('fmnist', 'mnist', 'cifar10', 'cifar100', 'imagenet32', 'imagenet64', 'h5')\n"
      "from data_dir (default: its standard place; Fashion-MNIST from Debian's dataset-fashion-mnist), the first\n"
      "`limit` images when limit > 0. Returns (images uint8 (N, C, H, W), labels int32 (N,)).");
  m.def(
      "batch",
      [](const py::array& images, const py::array& labels, const std::string& dataset, Index classes,
         const std::string& dtype) {
        const DatasetKind kind = parse_dataset_kind(dataset, "dataset");
        if (!has_dtype<std::uint8_t>(images) || images.ndim() != 4)
          refuse("images", "must be uint8 images (N, C, H, W), as hepsim.datasets.load returns them");
        if (!has_dtype<std::int32_t>(labels) && !has_dtype<std::int64_t>(labels))
          refuse("labels", "must be integer labels (int32 or int64)");
        if (labels.ndim() != 1 || labels.shape(0) != images.shape(0)) refuse("labels", "must hold one label per image");
        if (classes <= 0) refuse("classes", "must be positive");
        Dataset d;
        d.n = static_cast<Index>(images.shape(0));
        d.channels = static_cast<int>(images.shape(1));
        d.height = static_cast<int>(images.shape(2));
        d.width = static_cast<int>(images.shape(3));
        d.classes = static_cast<int>(classes);
        const auto img = py::array_t<std::uint8_t, py::array::c_style | py::array::forcecast>(images);
        d.images.assign(img.data(), img.data() + img.size());
        const auto lab = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>(labels);
        for (py::ssize_t i = 0; i < lab.size(); ++i) {
          if (lab.data()[i] < 0 || lab.data()[i] >= classes)
            refuse("labels", "label " + std::to_string(lab.data()[i]) + " of image " + std::to_string(i) + " is not in [0, " +
                                 std::to_string(classes) + ")");
          d.labels.push_back(static_cast<std::int32_t>(lab.data()[i]));
        }
        std::vector<Index> idx(static_cast<std::size_t>(d.n));
        for (Index i = 0; i < d.n; ++i) idx[static_cast<std::size_t>(i)] = i;
        const Normalization norm = default_normalization(kind);
        const auto make = [&](auto r) {
          using R = decltype(r);
          Mat<R> x(d.dim(), d.n), y(classes, d.n);
          native([&] { make_batch<R>(d, idx.data(), d.n, norm, Augmentation{}, nullptr, x, y); });
          return py::make_tuple(samples_out(std::move(x)), samples_out(std::move(y)));
        };
        if (dtype == "float64") return make(double{});
        if (dtype == "float32") return make(float{});
        refuse("dtype", "must be 'float32' or 'float64'");
      },
      py::arg("images"), py::arg("labels"), py::arg("dataset"), py::arg("classes"), py::arg("dtype") = "float64",
      "The network's inputs and targets for images and labels, normalised as the CLI does for `dataset` (no\n"
      "augmentation): (x (N, C·H·W), y one-hot (N, classes)) of dtype float32 or float64.");
  m.def("names", [] { return std::vector<std::string>{"fmnist", "mnist", "cifar10", "cifar100", "imagenet32", "imagenet64", "h5"}; },
        "The dataset names load() takes.");
}

}  // namespace hepsim::python
