#pragma once
// Relaxation to a fixed point u* = M(u*) (SPEC 2.5).
//   map:    u ← M(u)                              (the paper's discrete dynamics)
//   rk4:    du/dt = M(u) − u, fixed-step classical Runge–Kutta (Boost.Odeint), step dt
//   dopri5: the same ODE, adaptive Dormand–Prince 5(4) with error control (rtol, atol)
//   anderson: the map accelerated by Anderson mixing (type II, memory m, per column): with
//           g_k = M(u_k) − u_k and the last m differences ΔU, ΔG of states and residuals,
//           γ = argmin ‖g_k − ΔG γ‖₂ and u_{k+1} = u_k + g_k − (ΔU + ΔG) γ. Same fixed points as
//           the map, reached in far fewer steps; with a fixed budget the state after T steps is
//           not the map's.
// Runs `max_steps` steps; with tol > 0 each column stops (its state is held) as soon as its
// residual ‖F(u)‖∞ ≤ tol (F(u) = M(u) − u), and the phase ends when every column has stopped —
// with the fused engine, stopped columns cost nothing. Per column it reports the final
// residual and a status:
//   converged — residual ≤ tol (or ≤ report_tol when running a fixed budget, tol = 0);
//   max_steps — the budget ran out first;
//   diverged  — a non-finite value, or |u| or the residual above diverge_threshold, or a final
//               residual more than growth_factor times the initial one (and than report_tol):
//               the relaxation ran away from equilibrium. A diverged column is set to zero
//               and frozen so that it cannot poison the others (trap 6); callers count it and
//               decide (skip or abort).
// Residual convention: for the map, the size of the last update ‖u_T − u_{T−1}‖∞ = ‖F(u_{T−1})‖∞;
// for the ODE solvers, ‖du/dt‖∞ at the final state.
#include <array>
#include <string>
#include <vector>

#include "sim/field.hpp"

namespace hepsim {

enum class Solver { map, rk4, dopri5, anderson };
Solver parse_solver(const std::string& name, const std::string& where = "--solver");
const char* to_string(Solver s);

enum class RelaxStatus : unsigned char { converged, max_steps, diverged };

struct RelaxConfig {
  Solver solver = Solver::map;
  long max_steps = 150;             // map iterations / ODE steps (accepted steps for dopri5); ≥ 1
  double tol = 0;                   // stop each column at ‖F(u)‖∞ ≤ tol; 0 = run the whole budget
  double report_tol = 1e-3;         // with tol = 0: a column counts as converged below this residual
  double dt = 0.5;                  // rk4 step, and dopri5's first trial step (time units, τ = 1)
  double rtol = 1e-6, atol = 1e-8;  // dopri5 local error control (relative, absolute)
  double diverge_threshold = 1e6;   // |u| or residual above this, or non-finite: diverged
  bool fused = true;                // map solver in float: the fused engine (sim/fused_map.hpp) when it applies
  int anderson_m = 5;               // anderson: memory (number of past differences, 1..16)
  double growth_factor = 100;       // final residual > this × max(initial, report_tol): diverged (0: off).
                                    // A phase started away from equilibrium (a truncated free
                                    // phase) may end above its initial residual without diverging;
                                    // two orders of magnitude are a run-away.
};

struct RelaxResult {
  long steps = 0;                    // steps performed (map iterations, ODE accepted steps)
  long rejected = 0;                 // dopri5 rejected trial steps
  long field_evals = 0;              // evaluations of M
  double t = 0;                      // ODE time reached (map: number of iterations)
  Vec<double> residual;              // per column, final ‖F(u)‖∞
  std::vector<RelaxStatus> status;   // per column
  std::vector<long> col_steps;       // per column: step count at which its residual first fell to
                                     // ≤ tol (report_tol when tol = 0); `steps` if it never did

  Index count(RelaxStatus s) const;
  Index converged() const { return count(RelaxStatus::converged); }
  Index diverged() const { return count(RelaxStatus::diverged); }
  double max_residual() const;       // over columns that did not diverge (0 if none)
  double mean_col_steps() const;
};

// Relaxes u (neurons x cols; in: start, out: end) under `field`.
template <class S>
[[nodiscard]] RelaxResult relax(Field<S>& field, Mat<S>& u, const RelaxConfig& cfg);

// The GEMM shapes (rows, inner dimension) of one map step of the fused engine: one per group of
// layers sharing their inputs (mlp_2-256: 266 x 256 and 256 x 266). For benchmarks.
std::vector<std::array<Index, 2>> map_gemm_shapes(const Network& net);

// Per-column ‖M(u) − u‖∞ at u (one field evaluation; frozen columns give 0).
template <class S>
Vec<double> residual(Field<S>& field, const Mat<S>& u);

}  // namespace hepsim
