// Online (oscillating) holomorphic EP (SPEC 3.3, ep/online.cpp): on a symmetric network without
// noise its error vector approaches the exact response v* as the phase points settle (T2) and
// more periods are averaged; with T2 long enough it is holomorphic EP's estimate.
#include <doctest/doctest.h>

#include "../common.hpp"
#include "ep/estimators.hpp"

using namespace hepsim;
using namespace hepsim::testing;

namespace {

double cosine(const Mat<double>& a, const Mat<double>& b) {
  double c = 0;
  for (Index j = 0; j < a.cols(); ++j) c += a.col(j).dot(b.col(j)) / (a.col(j).norm() * b.col(j).norm());
  return c / static_cast<double>(a.cols());
}

}  // namespace

TEST_CASE("online hEP: the estimate's cosine with v* rises towards 1 with T2 and periods (symmetric, noise-free)") {
  const Model m = make_model("mlp_2-256");
  const Vec<double> theta = init_params<double>(m.net, 6, 0);  // angle 0: v* is the gradient's δ
  const RandomBatch b = random_batch(m.net, 4, 6);
  RelaxConfig fc;
  fc.max_steps = 20000;
  fc.tol = 1e-12;
  const FreeState<double> fs = free_phase<double>(m, theta, b.x, b.y, fc);
  REQUIRE(fs.relax.converged() == 4);
  const Mat<double> v_star = exact_response_dense<double>(m, theta, fs.u, fs.y);
  struct Setting {
    long T2, periods;
  };
  std::vector<double> cosines;
  for (const Setting st : {Setting{2, 2}, Setting{5, 3}, Setting{20, 3}, Setting{60, 4}, Setting{200, 4}}) {
    OnlineConfig oc;
    oc.N = 4;
    oc.beta = 0.1;
    oc.periods = st.periods;
    oc.phase.max_steps = st.T2;
    const OnlineResult<double> r = online_estimate<double>(m, theta, b.x, b.y, oc);
    CHECK(r.n_diverged == 0);
    CHECK(r.steps == st.periods * 4 * st.T2);
    cosines.push_back(cosine(r.v, v_star));
    MESSAGE("T2 " << st.T2 << " periods " << st.periods << ": cos(v, v*) " << cosines.back() << ", |u* − u| "
                  << (r.free.u - fs.u).cwiseAbs().maxCoeff());
  }
  for (std::size_t k = 1; k < cosines.size(); ++k) CHECK(cosines[k] > cosines[k - 1]);
  CHECK(cosines.back() > 0.999);
}
