// Convolutional networks from the command line (issue 12, in progress): relax and gradcheck take
// an architecture with shaped layers and conv edges on image data, gradcheck's exactness holds on
// it, train / resume / eval run it, homeostasis at the free states makes it more symmetric, and
// `hepsim jacobian` measures symmetry at the samples' free states.
#include <doctest/doctest.h>

#include <filesystem>

#include "cli_helpers.hpp"
#include "tools/run_files.hpp"

using namespace hepsim;
using namespace hepsim::test;

namespace {
// 1x28x28 Fashion-MNIST-shaped input: c1[4x14x14] <-> c2[8x7x7] (conv + conv_feedback), c2 <-> out.
std::string conv_arch(const TempDir& dir) {
  const std::string path = dir.file("cnn.json");
  std::ofstream(path)
      << R"({"name": "cnn_fm", "layers": [{"name": "c1", "shape": [4, 14, 14]}, {"name": "c2", "shape": [8, 7, 7]},
      {"name": "out", "size": "classes"}],
    "edges": [{"pre": "in", "post": "c1", "type": "conv"}, {"pre": "c1", "post": "c2", "type": "conv"},
              {"pre": "c2", "post": "c1", "type": "conv_feedback"}, {"pre": "c2", "post": "out"},
              {"pre": "out", "post": "c2", "type": "dense_nobias"}]})";
  return path;
}
}  // namespace

TEST_CASE("conv networks: relax and gradcheck on images, exact estimators, refusals naming --arch") {
  TempDir data, tmp;
  write_tiny_fmnist(data.str(), 20, 20, 3);
  const std::string arch = conv_arch(tmp);
  const std::string d = " --dataset fmnist --data-dir " + data.str() + " --activation dsilu ";
  const RunResult relax = run_hepsim("relax --arch " + arch + d + "--samples 10 --solver dopri5", tmp);
  REQUIRE_MESSAGE(relax.code == 0, relax.err);
  CHECK(relax.json()["converged"] == 10);
  CHECK(relax.json()["compared_with_map"] == 10);
  CHECK(relax.json()["max_abs_diff_vs_map"].get<double>() < 1e-6);  // both stop at residual 1e-8
  const RunResult g = run_hepsim("gradcheck --arch " + arch + d + "--batch 4 --N 1,2,4 --beta 0.05 --angle 0", tmp);
  REQUIRE_MESSAGE(g.code == 0, g.err);
  const auto j = g.json();
  // The issue's exactness on a conv graph: RBP against finite differences, BPTT against RBP, and
  // at angle 0 (B = K) the exact response equals δ.
  CHECK(j["exact"]["rbp_fd_rel_err"].get<double>() < 1e-5);
  CHECK(j["exact"]["bptt_vs_rbp_rel_err"].get<double>() < 1e-6);
  CHECK(j["exact"]["rel_err_vstar_delta"]["total"].get<double>() < 1e-10);
  double last = 1;
  for (const auto& e : j["estimators"]) {  // N = 1, 2, 4 at β = 0.05: the error falls with N
    const double err = e["rel_err_vs_vstar"]["total"].get<double>();
    CHECK(err < last);
    last = err;
  }
  CHECK(last < 1e-6);
  // Training: the log's symmetry metrics are measured at the probe batch's free states.
  const std::string t = "train --arch " + arch + d + "--T1 20 --T2 6 --N 2 --beta 0.5 --batch-size 10 --probe-size 5 --quiet";
  const RunResult tr = run_hepsim(t + " --epochs 1 --out " + tmp.file("run"), tmp);
  REQUIRE_MESSAGE(tr.code == 0, tr.err);
  CHECK(tr.json()["jac_sym"].get<double>() > 0.5);  // independent feedback kernels: well below 1
  CHECK(tr.json()["jac_sym"].get<double>() < 0.95);
  const RunResult sym = run_hepsim(t + " --angle 0 --epochs 1 --out " + tmp.file("sym"), tmp);
  REQUIRE_MESSAGE(sym.code == 0, sym.err);
  CHECK(sym.json()["jac_sym"].get<double>() > 0.999);  // B = K, transposed dense pair: H symmetric
  const RunResult res = run_hepsim("train --resume " + tmp.file("run") + " --epochs 2", tmp);
  CHECK_MESSAGE(res.code == 0, res.err);
  const RunResult ev = run_hepsim("eval --checkpoint " + tmp.file("run/checkpoint.h5"), tmp);
  CHECK_MESSAGE(ev.code == 0, ev.err);
  // The built-in cnn_small on 28x28 images (padded to 32x32), dsilu by default.
  const RunResult small = run_hepsim("relax --arch cnn_small --dataset fmnist --data-dir " + data.str() + " --samples 2", tmp);
  CHECK_MESSAGE(small.code == 0, small.err);
  // Homeostasis at the free states: from a 60° start, λ = 5 pulls the feedback kernels towards
  // the forward ones (measured on this data: weight angle 42° against 82° without, homeo_loss
  // 0.12 against 0.34 after 3 epochs of 2,000 real images); here 30 steps on 20 random images.
  const std::string h = "train --arch " + arch + d +
                        "--T1 20 --T2 6 --N 2 --beta 0.5 --batch-size 2 --probe-size 10 --quiet --angle 60 --lr 0.02 "
                        "--epochs 3 --out ";
  const RunResult h0 = run_hepsim(h + tmp.file("h0") + " --homeostasis 0", tmp);
  const RunResult h5 = run_hepsim(h + tmp.file("h5") + " --homeostasis 5", tmp);
  REQUIRE_MESSAGE(h0.code == 0, h0.err);
  REQUIRE_MESSAGE(h5.code == 0, h5.err);
  CHECK(h5.json()["homeo_loss"].get<double>() < 0.8 * h0.json()["homeo_loss"].get<double>());
  CHECK(h5.json()["weight_angle_deg"].get<double>() < h0.json()["weight_angle_deg"].get<double>() - 2);
  const RunResult hx = run_hepsim(h + tmp.file("hx") + " --homeostasis 5 --homeo-mode exact", tmp);
  CHECK_MESSAGE(hx.code == 2, hx.err);  // 1,186 neurons: the basis probes are refused, naming the mode
  CHECK(hx.err.find("--homeo-mode") != std::string::npos);
  // hepsim jacobian at the samples' free states: at angle 0 H is symmetric at every state; at 60°
  // the Hutchinson estimate lies within 3 standard errors of the exact (dense, averaged) value,
  // and above --max-dense only the estimates are reported.
  const std::string jc = "jacobian --arch " + arch + d + "--samples 2 --probes 400 ";
  const RunResult j0 = run_hepsim(jc + "--angle 0", tmp);
  REQUIRE_MESSAGE(j0.code == 0, j0.err);
  CHECK(j0.json()["jac_sym"].get<double>() > 1 - 1e-12);
  CHECK(j0.json()["homeo_exact"].get<double>() < 1e-20);
  CHECK(j0.json()["dynamics_converged"] == 2);
  const RunResult j60 = run_hepsim(jc + "--angle 60", tmp);
  REQUIRE_MESSAGE(j60.code == 0, j60.err);
  const auto k = j60.json();
  CHECK(k["jac_sym"].get<double>() < 0.9);
  CHECK(std::abs(k["homeo_estimate"].get<double>() - k["homeo_exact"].get<double>()) <
        3 * k["homeo_estimate_stderr"].get<double>());
  CHECK(std::abs(k["jac_sym_estimate"].get<double>() - k["jac_sym"].get<double>()) < 0.02);
  const RunResult jd = run_hepsim(jc + "--angle 60 --max-dense 100", tmp);
  REQUIRE_MESSAGE(jd.code == 0, jd.err);
  CHECK(jd.json()["jac_sym"].is_null());
  CHECK(jd.json()["homeo_estimate"].get<double>() == k["homeo_estimate"].get<double>());
}

TEST_CASE("cnn_small trains from the command line on CIFAR-10, CIFAR-100 and ImageNet 32x32 files in their formats") {
  TempDir tmp;
  namespace fs = std::filesystem;
  // 80 training images in the first training file (the others, which the loaders require, hold
  // 4 each) and 20 test images per dataset, in the official layouts.
  std::vector<Bytes> labels10, labels100;
  for (std::uint8_t i = 0; i < 100; ++i) {
    labels10.push_back({static_cast<std::uint8_t>(i % 10)});
    labels100.push_back({static_cast<std::uint8_t>(i % 20), static_cast<std::uint8_t>(i % 100)});
  }
  const auto head = [](const std::vector<Bytes>& v, std::size_t a, std::size_t b) {
    return std::vector<Bytes>(v.begin() + static_cast<long>(a), v.begin() + static_cast<long>(b));
  };
  fs::create_directories(tmp.file("c10/cifar-10-batches-bin"));
  write_file(tmp.file("c10/cifar-10-batches-bin/data_batch_1.bin"), cifar_records(head(labels10, 0, 80)));
  write_file(tmp.file("c10/cifar-10-batches-bin/test_batch.bin"), cifar_records(head(labels10, 80, 100), 80));
  for (int b = 2; b <= 5; ++b)
    write_file(tmp.file("c10/cifar-10-batches-bin/data_batch_" + std::to_string(b) + ".bin"),
               cifar_records(head(labels10, 0, 4)));
  fs::create_directories(tmp.file("c100/cifar-100-binary"));
  write_file(tmp.file("c100/cifar-100-binary/train.bin"), cifar_records(head(labels100, 0, 80)));
  write_file(tmp.file("c100/cifar-100-binary/test.bin"), cifar_records(head(labels100, 80, 100), 80));
  std::vector<std::int64_t> in_labels;
  for (std::int64_t i = 0; i < 100; ++i) in_labels.push_back(1 + (i * 37) % 1000);
  fs::create_directories(tmp.file("in32"));
  write_file(tmp.file("in32/train_data_batch_1.npz"),
             imagenet_npz(std::vector<std::int64_t>(in_labels.begin(), in_labels.begin() + 80), 32, true));
  for (int b = 2; b <= 10; ++b)
    write_file(tmp.file("in32/train_data_batch_" + std::to_string(b) + ".npz"),
               imagenet_npz(std::vector<std::int64_t>(in_labels.begin(), in_labels.begin() + 4), 32, false));
  write_file(tmp.file("in32/val_data.npz"),
             imagenet_npz(std::vector<std::int64_t>(in_labels.begin() + 80, in_labels.end()), 32, true, 80));
  const std::string t = "train --arch cnn_small --epochs 1 --train-limit 64 --T1 8 --T2 3 --N 2 --beta 0.5 "
                        "--batch-size 16 --probe-size 4 --quiet ";
  for (const auto& [dataset, dir] : {std::pair<std::string, std::string>{"cifar10", "c10"}, {"cifar100", "c100"},
                                     {"imagenet32", "in32"}}) {
    CAPTURE(dataset);
    const RunResult r = run_hepsim(t + "--dataset " + dataset + " --data-dir " + tmp.file(dir) + " --out " +
                                       tmp.file("run_" + dataset),
                                   tmp);
    REQUIRE_MESSAGE(r.code == 0, r.err);
    const auto j = r.json();
    CHECK(j["epochs"] == 1);
    CHECK(j["test_top5"].get<double>() >= j["test_acc"].get<double>());
    const auto recs = tools::TrainLog::read_records(tmp.file("run_" + dataset + "/log.h5"), 10);
    CHECK(recs.size() == 1);
  }
  // A truncated training file (half a record at the end of what is read) names the file.
  Bytes cut = cifar_records(head(labels10, 0, 80));
  cut.resize(cut.size() - 1500);
  write_file(tmp.file("c10/cifar-10-batches-bin/data_batch_1.bin"), cut);
  check_bad_input({{t + "--dataset cifar10 --train-limit 80 --data-dir " + tmp.file("c10") + " --out " + tmp.file("bad"),
                    "data_batch_1.bin"}},
                  tmp);
}
