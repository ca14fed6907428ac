#pragma once
// Internal to sim/: the fused engine behind relax() for the discrete map in single precision
// (float states, and complex<float> states for complex nudges), used whenever it applies
// (RelaxConfig::fused, an x86-64 build with AVX-512, the sigmoid activation — or dsilu for real
// states). It computes exactly the map of field.hpp, M(u) = C + Σ K s_pre + β e(s_out) (or the
// damped step u + dt (M(u) − u)), but
//   - layers whose inputs come from the same layers form a group, and the group's kernels are
//     packed once per relaxation into one matrix W_g (rows: the group's layers, columns: its
//     inputs), so a step is one GEMM per group (mlp_2-256: [l1; out] ← W s_l2, l2 ← W [s_l1; s_out]);
//   - the GEMM is an AVX-512 register-blocked kernel on the pre-packed W_g whose epilogue adds the
//     drive (and the nudge), stores u' and s' = σ(u'), and reduces each column's residual
//     ‖u' − u‖∞ and ‖u'‖∞, so a step is one pass over the state;
//   - complex states are stored split, each sample as a pair of real columns (Re, Im): real
//     weights act on both with the same GEMM.
// The summation order differs from the per-edge path, so results agree to float rounding
// (tests/sim/test_fused.cpp). Columns are independent, as in the generic path.
#include <array>
#include <functional>
#include <memory>
#include <vector>

#include "sim/field.hpp"
#include "sim/relax.hpp"

namespace hepsim::detail {

// Layers grouped by the set of layers feeding them (edges from `in` excluded), in order of first
// appearance; the internal neuron order lists each group's layers together.
struct LayerGroups {
  std::vector<std::vector<int>> members;  // layer indices of each group
  std::vector<std::vector<int>> inputs;   // the (sorted) input layers of each group
  std::vector<Index> layer_offset;        // internal offset of each layer
};
LayerGroups layer_groups(const Network& net);

// True when the fused engine can run this relaxation.
template <class S>
bool fused_map_applies(const Field<S>& field, const RelaxConfig& cfg);

// The fused state of one relaxation: load(u), step() as often as needed, store(u).
template <class S>
class FusedMap {
 public:
  // dt: the map's damping (1: the plain map u ← M(u)).
  FusedMap(const Field<S>& field, double dt);
  ~FusedMap();
  FusedMap(const FusedMap&) = delete;
  FusedMap& operator=(const FusedMap&) = delete;

  void load(const Mat<S>& u);
  // One map step u ← u + dt (M(u) − u); r[j] = ‖M(u_old) − u_old‖∞ (before the damping, whose
  // update may round away), a[j] = ‖u_new‖∞ and, when d is given, d[j] = ‖u_new − snapshot_j‖∞ for the columns with
  // watch[j] ≠ 0 (moduli for complex states), for every column still computed, all in the
  // GEMM's epilogue.
  void step(double* r, double* a, double* d = nullptr, const char* watch = nullptr);
  // Saves the current state as the cycle test's reference (relax.hpp).
  void snapshot();
  // Sets a column to zero and keeps it there (a diverged sample).
  void freeze(Index col);
  // Keeps a column's current state as final and stops computing it (a converged sample): the
  // active columns are compacted, so later steps cost only what is still relaxing.
  void settle(Index col);
  void store(Mat<S>& u) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hepsim::detail
