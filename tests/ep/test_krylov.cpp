// Matrix-free GMRES (ep/krylov.hpp) and the exact references built on it: it solves systems whose
// fixed-point iteration diverges, restarted or not, column by column; on a conv network its δ and
// v* equal the dense solves, also at a state the map does not contract to (where the adjoint
// iteration fails); and training's alignment metrics of such a network are measured (they were NaN
// when δ came from the adjoint iteration), leaving out only the probes whose solve failed.
#include <doctest/doctest.h>

#include <Eigen/LU>
#include <cmath>

#include "../common.hpp"
#include "ep/estimators.hpp"
#include "ep/krylov.hpp"
#include "ep/train.hpp"

using namespace hepsim;
using namespace hepsim::testing;

namespace {

Mat<double> gaussian(Index rows, Index cols, std::uint64_t seed) {
  Rng rng(seed, Stream::init, 5);
  Mat<double> a(rows, cols);
  for (Index j = 0; j < cols; ++j)
    for (Index i = 0; i < rows; ++i) a(i, j) = rng.normal();
  return a;
}

// θ with every parameter scaled by `gain`: strong enough couplings that the map no longer
// contracts at the states below.
Vec<double> strong_theta(const Model& m, double gain) { return gain * init_params<double>(m.net, 4, 60.0); }

}  // namespace

TEST_CASE("gmres: solves batched systems whose fixed-point iteration diverges, restarted or not") {
  const Index n = 30;
  // A = I − M with M's spectral radius about 2: x ← M x + b diverges; A is nonsingular.
  const Mat<double> M = gaussian(n, n, 1) * (2.0 / std::sqrt(static_cast<double>(n)));
  const Mat<double> A = Mat<double>::Identity(n, n) - M;
  Mat<double> b = gaussian(n, 3, 2);
  b.col(1).setZero();  // a column that is solved from the start
  const auto apply = [&](const Mat<double>& v, Mat<double>& out) { out = A * v; };
  const Mat<double> want = A.partialPivLu().solve(b);
  const KrylovResult<double> r = gmres<double>(apply, b, KrylovConfig{200, 1e-11, 40});
  CHECK(r.converged);
  CHECK(r.residual <= 1e-11);
  CHECK((r.x - want).norm() <= 1e-9 * want.norm());
  CHECK(r.x.col(1).norm() == 0);
  CHECK(r.products <= n + 2);  // full GMRES: at most n Arnoldi steps, and the final residual
  // The fixed-point iteration on the same system grows instead.
  Mat<double> x = Mat<double>::Zero(n, 3);
  for (int k = 0; k < 200; ++k) x = M * x + b;
  CHECK(!((A * x - b).cwiseAbs().maxCoeff() < 1));
  // Restarted every 5 steps, on a system with a dominant diagonal (GMRES(m) then converges).
  const Mat<double> A2 = 3 * Mat<double>::Identity(n, n) + gaussian(n, n, 3) / std::sqrt(static_cast<double>(n));
  const auto apply2 = [&](const Mat<double>& v, Mat<double>& out) { out = A2 * v; };
  const KrylovResult<double> r2 = gmres<double>(apply2, b, KrylovConfig{500, 1e-11, 5});
  CHECK(r2.converged);
  CHECK((r2.x - A2.partialPivLu().solve(b)).norm() <= 1e-9 * want.norm());
  CHECK(r2.products > 6);  // it did restart
  // A budget too small: not converged, and it says so; the budget counts every product.
  const KrylovResult<double> r3 = gmres<double>(apply, b, KrylovConfig{5, 1e-11, 40});
  CHECK(!r3.converged);
  CHECK(r3.residual > 1e-11);
  CHECK(r3.products == 5);
}

TEST_CASE("gmres: a non-finite column, a singular system and an unreachable tolerance end early, not converged") {
  const Index n = 20;
  const Mat<double> A = 3 * Mat<double>::Identity(n, n) + gaussian(n, n, 4) / std::sqrt(static_cast<double>(n));
  const auto apply = [&](const Mat<double>& v, Mat<double>& out) { out = A * v; };
  // A NaN in one right-hand side, anywhere in the column: that column is NaN, the others solved.
  for (Index row : {Index{0}, Index{7}}) {
    Mat<double> b = gaussian(n, 3, 5);
    b(row, 1) = std::nan("");
    const KrylovResult<double> r = gmres<double>(apply, b, KrylovConfig{1000, 1e-11, 40});
    CHECK(!r.converged);
    CHECK(r.residual == HUGE_VAL);
    CHECK(r.x.col(1).array().isNaN().all());
    REQUIRE(r.column_residual.size() == 3);  // per column: the NaN one's is +inf, the others' solved
    CHECK(r.column_residual(1) == HUGE_VAL);
    CHECK(r.column_residual(0) <= 1e-11);
    CHECK(r.column_residual(2) <= 1e-11);
    CHECK((A * r.x.col(0) - b.col(0)).cwiseAbs().maxCoeff() <= 1e-11);
    CHECK((A * r.x.col(2) - b.col(2)).cwiseAbs().maxCoeff() <= 1e-11);
    CHECK(r.products <= n + 2);
  }
  // Singular (b outside the range of A = 0): no cycle makes progress, given up after six.
  const auto zero = [](const Mat<double>& v, Mat<double>& out) { out = Mat<double>::Zero(v.rows(), v.cols()); };
  const KrylovResult<double> s = gmres<double>(zero, gaussian(n, 2, 6), KrylovConfig{1000, 1e-11, 40});
  CHECK(!s.converged);
  CHECK(s.products <= 12);
  // A cycle that leaves the ∞-norm of the residual where it was is progress when the 2-norm falls:
  // A = [[1, −1], [0, 1]], b = (1, 1), restarted after every step: ∞-norm 1 → 1, 2-norm √2 → 1.
  Mat<double> A2(2, 2);
  A2 << 1, -1, 0, 1;
  const auto apply2 = [&](const Mat<double>& v, Mat<double>& out) { out = A2 * v; };
  const KrylovResult<double> t = gmres<double>(apply2, Mat<double>::Ones(2, 1), KrylovConfig{100, 1e-12, 1});
  CHECK(t.converged);
  CHECK(t.residual <= 1e-12);
  // float cannot reach 1e-12 (rounding ~1e-7 of the right-hand side): it stops once a cycle
  // no longer lowers the residual, not at the end of the budget.
  const Mat<float> Af = A.cast<float>();
  const auto applyf = [&](const Mat<float>& v, Mat<float>& out) { out = Af * v; };
  const KrylovResult<float> f = gmres<float>(applyf, gaussian(n, 2, 7).cast<float>(), KrylovConfig{20000, 1e-12, 5});
  CHECK(!f.converged);
  CHECK(f.residual < 1e-5);
  CHECK(f.products < 500);
}

TEST_CASE("conv estimators by GMRES: δ and v* equal the dense solves, also where the adjoint iteration fails") {
  const Model m = tiny_cnn();
  const RandomBatch batch = random_batch(m.net, 3, 9);
  RelaxConfig settle;
  settle.max_steps = 200000;
  settle.tol = 1e-14;
  const Vec<double> theta = init_params<double>(m.net, 4, 60.0);
  const FreeState<double> fs = free_phase<double>(m, theta, batch.x, batch.y, settle);
  REQUIRE(fs.relax.converged() == 3);
  const IterationConfig it{2000, 1e-13};
  const IterationResult<double> d = rbp_krylov<double>(m, theta, fs.u, fs.y, it);
  const IterationResult<double> v = exact_response_krylov<double>(m, theta, fs.u, fs.y, it);
  CHECK(d.last_update <= 1e-13);
  CHECK(rel_err(d.v, rbp_dense<double>(m, theta, fs.u, fs.y)) < 1e-10);
  CHECK(rel_err(v.v, exact_response_dense<double>(m, theta, fs.u, fs.y)) < 1e-10);
  CHECK(d.steps <= m.net.neurons + 1);

  // Strong couplings and a free phase stopped after 5 steps: the adjoint iteration does not
  // converge there (its map has an eigenvalue of modulus ≥ 1), GMRES still gives the dense δ.
  const Vec<double> strong = strong_theta(m, 4.0);
  RelaxConfig short_phase;
  short_phase.max_steps = 5;
  const FreeState<double> at = free_phase<double>(m, strong, batch.x, batch.y, short_phase);
  const IterationResult<double> fixed_point = rbp_adjoint<double>(m, strong, at.u, at.y, {1000, 1e-10});
  REQUIRE(!(fixed_point.last_update <= 1e-10));
  const IterationResult<double> k = rbp_krylov<double>(m, strong, at.u, at.y, {2000, 1e-12});
  CHECK(k.last_update <= 1e-12);
  const Mat<double> dense = rbp_dense<double>(m, strong, at.u, at.y);
  CHECK(rel_err(k.v, dense) < 1e-9);
  CHECK(rel_err(exact_response_krylov<double>(m, strong, at.u, at.y, {2000, 1e-12}).v,
                exact_response_dense<double>(m, strong, at.u, at.y)) < 1e-9);
}

TEST_CASE("training metrics of a conv network whose free phases do not settle are measured, with the dense δ") {
  const Model m = tiny_cnn();
  const Vec<double> strong = strong_theta(m, 4.0);
  Dataset data;
  data.n = 8;
  data.channels = 2;
  data.height = 8;
  data.width = 8;
  data.classes = 3;
  data.images.resize(8 * 128);
  for (std::size_t i = 0; i < data.images.size(); ++i) data.images[i] = static_cast<std::uint8_t>((i * 53) % 251);
  data.labels = {0, 1, 2, 0, 1, 2, 0, 1};
  TrainConfig cfg;
  cfg.N = 2;
  cfg.beta = 0.1;
  cfg.free.max_steps = 5;  // T1 = 5: the free phases stop far from a fixed point
  cfg.nudged.max_steps = 5;
  cfg.batch_size = 4;
  cfg.epochs = 1;
  cfg.probe_size = 3;
  cfg.threads = 1;
  cfg.optimizer.lr = 0;  // θ stays: the metrics below are those of `strong`
  Trainer<double> t(m, cfg, strong);
  std::vector<EpochRecord> recs;
  t.run(data, data, EpochPosition{}, {}, [&](const EpochRecord& r) { recs.push_back(r); });
  REQUIRE(recs.size() == 1);
  const EpochRecord& r = recs[0];
  // The same probe batch and free phase here: δ by the dense solve.
  Mat<double> x(data.dim(), 3), y(3, 3);
  const Index idx[] = {0, 1, 2};
  make_batch<double>(data, idx, 3, cfg.norm, Augmentation{}, nullptr, x, y);
  const FreeState<double> fs = free_phase<double>(m, strong, x, y, cfg.free);
  REQUIRE(!(rbp_adjoint<double>(m, strong, fs.u, fs.y, {1000, 1e-10}).last_update <= 1e-10));
  const Mat<double> delta = rbp_dense<double>(m, strong, fs.u, fs.y);
  const Mat<double> v = algorithm_error_vector<double>(m, strong, fs, cfg, nullptr, &cfg.nudged);
  const Index k = m.net.readout_w_offset;
  const Vec<double> g_rbp = parameter_gradient<double>(m, strong, fs, delta).head(k);
  const Vec<double> g_alg = parameter_gradient<double>(m, strong, fs, v).head(k);
  const double want = g_alg.dot(g_rbp) / (g_alg.norm() * g_rbp.norm());
  REQUIRE(std::isfinite(r.cos_grad_total));
  CHECK(r.cos_grad_total == doctest::Approx(want).epsilon(1e-8));
  for (double c : r.cos_delta_mean) CHECK(std::isfinite(c));
}

TEST_CASE("alignment metrics leave out a probe without δ: they equal the metrics of the other probes alone") {
  const Model m = tiny_cnn();
  const RandomBatch batch = random_batch(m.net, 3, 9);
  const Vec<double> theta = init_params<double>(m.net, 4, 60.0);  // asymmetric: the cosines are not 1
  RelaxConfig free;
  free.max_steps = 30;
  for (Algo algo : {Algo::hep, Algo::bp}) {
    const std::string name = to_string(algo);
    CAPTURE(name);
    TrainConfig cfg;
    cfg.algo = algo;
    cfg.N = 2;
    cfg.beta = 0.1;
    cfg.nudged.max_steps = algo == Algo::bp ? 2 : 10;  // a BPTT through 2 steps is still far from RBP's δ
    const auto metrics = [&](const Mat<double>& x, const Mat<double>& y, int drop) {
      const FreeState<double> fs = free_phase<double>(m, theta, x, y, free);
      Mat<double> delta = rbp_dense<double>(m, theta, fs.u, fs.y);
      if (drop >= 0) delta.col(drop).setConstant(std::nan(""));
      EpochRecord rec;
      alignment_metrics(m, theta, cfg, fs, algorithm_error_vector<double>(m, theta, fs, cfg), delta, rec);
      return rec;
    };
    const EpochRecord whole = metrics(batch.x, batch.y, -1), part = metrics(batch.x, batch.y, 1);
    const std::vector<Index> kept{0, 2};
    const EpochRecord alone = metrics(batch.x(Eigen::all, kept), batch.y(Eigen::all, kept), -1);
    REQUIRE(std::isfinite(part.cos_grad_total));
    CHECK(part.cos_grad_total == doctest::Approx(alone.cos_grad_total).epsilon(1e-12));
    CHECK(std::abs(part.cos_grad_total - whole.cos_grad_total) > 1e-6);  // the probe did count before
    int measured = 0;  // (layers the 2-step BPTT has not reached have no cosine in either)
    for (std::size_t l = 0; l < part.cos_delta_mean.size(); ++l) {
      CAPTURE(l);
      CHECK(std::isnan(part.cos_delta_mean[l]) == std::isnan(alone.cos_delta_mean[l]));
      if (std::isnan(alone.cos_delta_mean[l])) continue;
      ++measured;
      CHECK(part.cos_delta_mean[l] == doctest::Approx(alone.cos_delta_mean[l]).epsilon(1e-12));
      CHECK(part.cos_delta_std[l] == doctest::Approx(alone.cos_delta_std[l]).epsilon(1e-12));
    }
    CHECK(measured >= (algo == Algo::hep ? 3 : 2));  // c1, c2, out (the input layer has none)
  }
  // No probe with δ: nothing is measured.
  TrainConfig cfg;
  const FreeState<double> fs = free_phase<double>(m, theta, batch.x, batch.y, free);
  const Mat<double> none = Mat<double>::Constant(fs.u.rows(), 3, std::nan(""));
  EpochRecord rec;
  alignment_metrics(m, theta, cfg, fs, algorithm_error_vector<double>(m, theta, fs, cfg), none, rec);
  CHECK(std::isnan(rec.cos_grad_total));
  for (double c : rec.cos_delta_mean) CHECK(std::isnan(c));
}
