// Convolutional networks from the command line (issue 12, in progress): relax and gradcheck take
// an architecture with shaped layers and conv edges on image data, gradcheck's exactness holds on
// it, train / resume / eval run it, homeostasis at the free states makes it more symmetric, and
// `hepsim jacobian` measures symmetry at the samples' free states.
#include <doctest/doctest.h>

#include "cli_helpers.hpp"

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
