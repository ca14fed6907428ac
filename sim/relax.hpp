#pragma once
// Relaxation to a fixed point u* = M(u*) (SPEC 2.5).
//   map:    u ← u + dt (M(u) − u)                 (dt = 1: the paper's discrete map u ← M(u);
//                                                  dt < 1: the damped map, same fixed points)
//   rk4:    du/dt = M(u) − u, fixed-step classical Runge–Kutta (Boost.Odeint), step dt
//   dopri5: the same ODE, adaptive Dormand–Prince 5(4) with error control (rtol, atol)
//   anderson: the (damped) map accelerated by Anderson mixing (type II, memory m, per column):
//           with g_k = M(u_k) − u_k and the last m differences ΔU, ΔG of states and residuals,
//           γ = argmin ‖g_k − ΔG γ‖₂ and u_{k+1} = u_k + dt g_k − (ΔU + dt ΔG) γ. Same fixed
//           points as the map, reached in far fewer steps; with a fixed budget the state after
//           T steps is not the map's.
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
//               decide (skip or abort);
//   cycling   — the state came back near a state of at most cycle_period steps earlier while its
//               residual stayed above the tolerance: a periodic orbit (the synchronous map of a
//               symmetric network falls into period-2 orbits that the ODE does not have);
//   stalled   — the smallest residual so far has not fallen by stall_factor within stall_window
//               time units while above the tolerance (a rounding floor above tol, a quasi-periodic
//               orbit, or convergence too slow to finish in any reasonable budget).
// With a tolerance (tol > 0), cycling and stalled columns are ended at once (their last state is
// held), so a phase that never settles costs a few windows of cycle_period steps (cycling) or one
// stall window (stalled), not the whole budget. With a fixed budget (tol = 0: training's T1, T2)
// every column runs the whole budget as it always did, and the tests only give it its status
// (kept unless it settles by the end). Both tests only look at a column whose residual is above
// the tolerance: with a fixed budget, and on any batch where no column is ended, every result is
// bit-identical with the tests on or off (tested). When some are ended, the others keep their
// fixed points but not always their exact steps: Dormand–Prince's adaptive step is shared by the
// batch, and the compaction of stopped columns (fused engine, Anderson) changes summation orders
// by rounding.
//
// Cycle test (per column, all solvers). Every cycle_period steps the state is saved (u_{k0}) and
// the columns whose residual did not halve since the previous save are watched (a column that
// converges faster costs nothing); for them, at each later step k ≤ k0 + cycle_period,
// d_k = ‖u_k − u_{k0}‖∞ and the excursion e_k = max_{k0<j<k} d_j (the fused engine measures d in
// its GEMM epilogue). A watched column is cycling when k − k0 ≥ 2, d_k ≤ ρ e_k with
// ρ = cycle_rtol · min(1, dt), and ρ e_k is resolvable, above 8 rounding units ε max(1, ‖u‖∞)
// (in float: orbits of amplitude above ~0.02 are seen as cycles; smaller ones end as stalled).
// Why cycle_rtol = 5e-5: a fixed point approached through an oscillating mode with per-step
// factor −(1 − η) also "returns" after 2 steps, with d/e ≈ η; its residual halves in ln 2/η
// steps, ln 2 · dt/η time units. With η ≤ 5e-5 min(1, dt) that is more than 13,000 time units,
// beyond the stall window of 5000: anything the cycle test ends, the stall test would have ended
// later, and slower-but-steady convergence (a halving per 5000 time units or faster) is never
// ended by either. Why a window of 5000: at the symmetric start, mlp_2-256 has free phases that
// pass a saddle-node "ghost" and sit on a residual plateau for 1000–2000 time units before
// converging (Fashion-MNIST test image 45, rk4 and the map); the window must not end those.
// Cost (README, bench_components RelaxStep): within the noise for converging phases, about 2 %
// per step when every column is watched.
//
// Residual convention: ‖F(u)‖∞ = ‖M(u) − u‖∞ at the state before the last step (for the map
// with dt = 1: the size of the last update ‖u_T − u_{T−1}‖∞; for the damped map F itself,
// computed before the update dt F, which rounding may absorb); for the ODE solvers, ‖du/dt‖∞ at
// the final state.
#include <array>
#include <functional>
#include <string>
#include <vector>

#include "sim/analog/substrate.hpp"
#include "sim/field.hpp"

namespace hepsim {

enum class Solver { map, rk4, dopri5, anderson };
Solver parse_solver(const std::string& name, const std::string& where = "--solver");
const char* to_string(Solver s);

enum class RelaxStatus : unsigned char { converged, max_steps, diverged, cycling, stalled };
const char* to_string(RelaxStatus s);

// Where a long phase stands (RelaxConfig::progress).
struct RelaxProgress {
  long steps = 0, max_steps = 0;  // steps done / budget
  double t = 0;                   // time reached (map: steps × dt)
  Index live = 0, cols = 0;       // columns still relaxing / all columns
  double max_residual = 0;        // over the live columns
};

struct RelaxConfig {
  Solver solver = Solver::map;
  long max_steps = 150;             // map iterations / ODE steps (accepted steps for dopri5); ≥ 1
  double tol = 0;                   // stop each column at ‖F(u)‖∞ ≤ tol; 0 = run the whole budget
  double report_tol = 1e-3;         // with tol = 0: a column counts as converged below this residual
  double dt = 0;                    // time step (τ = 1): the map's damping and Anderson's mixing
                                    // (0 → 1, the paper's map), rk4's step and dopri5's first trial
                                    // step (0 → 0.5); see step()
  double rtol = 1e-6, atol = 1e-8;  // dopri5 local error control (relative, absolute)
  double diverge_threshold = 1e6;   // |u| or residual above this, or non-finite: diverged
  bool fused = true;                // map solver in float: the fused engine (sim/fused_map.hpp) when it applies
  int anderson_m = 5;               // anderson: memory (number of past differences, 1..16)
  double growth_factor = 100;       // final residual > this × max(initial, report_tol): diverged (0: off).
                                    // A phase started away from equilibrium (a truncated free
                                    // phase) may end above its initial residual without diverging;
                                    // two orders of magnitude are a run-away.
  int cycle_period = 16;            // longest period (steps) the cycle test sees; 0: no cycle test
  double cycle_rtol = 5e-5;         // return distance / excursion below which a column cycles
  double stall_window = 5000;       // time units (map steps at dt = 1) without progress; 0: no stall test
  double stall_factor = 0.5;        // progress: the smallest residual fell below this × the last mark
  // Analog substrates (sim/analog/substrate.hpp). With noise (σ > 0) the map and rk4 take
  // Euler–Maruyama steps u ← u + dt (M(u) − u) + σ √dt ξ of the SDE du = (M(u) − u) dt + σ dW
  // (rk4 becomes that first-order scheme; dopri5 and anderson refuse noise), and the residual is
  // the drift's, ‖M(u) − u‖∞ before the noise is added. A non-empty `rate` (1/τ per neuron) gives
  // the ODE solvers (rk4, dopri5, and Euler–Maruyama) per-layer time constants, du/dt = rate ⊙
  // (M(u) − u): the same fixed points; the residual stays ‖M(u) − u‖∞. max_time > 0 ends a phase
  // at that time (map, anderson: steps × dt) if the step budget has not ended it before: a phase
  // not settled by then is used as it is and keeps the status max_steps.
  StateNoise noise;
  std::vector<double> rate;
  double max_time = 0;
  // Called about every 256 steps with where the phase stands (empty: never). Relaxations may run
  // on several threads at once: the callee must be thread-safe.
  std::function<void(const RelaxProgress&)> progress;

  // The effective time step: dt, or the solver's default when dt = 0.
  double step() const { return dt > 0 ? dt : (solver == Solver::map || solver == Solver::anderson) ? 1.0 : 0.5; }
};

struct RelaxResult {
  long steps = 0;                    // steps performed (map iterations, ODE accepted steps)
  long rejected = 0;                 // dopri5 rejected trial steps
  long field_evals = 0;              // evaluations of M
  double t = 0;                      // ODE time reached (map: number of iterations)
  Vec<double> residual;              // per column, final ‖F(u)‖∞
  std::vector<RelaxStatus> status;   // per column
  std::vector<long> col_steps;       // per column: step count at which its residual first fell to
                                     // ≤ tol (report_tol when tol = 0); the step at which it was
                                     // ended (cycling, stalled); else `steps`

  Index count(RelaxStatus s) const;
  Index converged() const { return count(RelaxStatus::converged); }
  Index diverged() const { return count(RelaxStatus::diverged); }
  // Columns that did not settle: every status but converged, in column order.
  std::vector<Index> not_settled() const;
  double max_residual() const;       // over columns that did not diverge (0 if none)
  double mean_col_steps() const;
};

// Relaxes u (neurons x cols; in: start, out: end) under `field`.
template <class S>
[[nodiscard]] RelaxResult relax(Field<S>& field, Mat<S>& u, const RelaxConfig& cfg);

// The GEMM shapes (rows, inner dimension) of one map step of the fused engine: one per group of
// layers sharing their inputs (mlp_2-256: 266 x 256 and 256 x 266). For benchmarks.
std::vector<std::array<Index, 2>> map_gemm_shapes(const Network& net);

// The FLOPs (2 per multiply-add) the float engine executes in one real map step of one image over
// the recurrent edges: edge_flops' count, except that the conv engine runs 3x3 'same'
// convolutions of even maps by Winograd F(2x2, 3x3) (16 multiply-adds per 2x2 block and channel
// pair instead of 36). For benchmarks: the efficiency of what runs against the FMA peak.
double engine_flops_per_image_step(const Network& net);

// Per-column ‖M(u) − u‖∞ at u (one field evaluation; frozen columns give 0).
template <class S>
Vec<double> residual(Field<S>& field, const Mat<S>& u);

}  // namespace hepsim
