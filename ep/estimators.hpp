#pragma once
// hepsim/ep — gradient estimators (SPEC 3). All quantities at the free fixed point u* (β = 0):
//   D = diag σ'(u*),  J_G = ∂G/∂s,  g_s = ∂ℓ/∂s (nonzero on `out`)
//
//   RBP adjoint (exact backprop):  δ  = (I − D J_Gᵀ)⁻¹ D g_s,   iteration δ ← D J_Gᵀ δ + D g_s
//   exact EP response ("N = 0"):   v* = dσ(u*_β)/dβ|₀ = (I − D J_G)⁻¹ D g_s,
//                                  tangent-linear iteration through the T2-step nudged map
//   truncated BPTT:                backprop through the last T2 map steps from u*
//   EP estimators of v* from nudged phases a(β) = σ(u_T2(β)), each restarted from u* (trap 3):
//     N = 1  (a(β) − σ(u*)) / β
//     N = 2  (a(β) − a(−β)) / (2β)
//     N ≥ 3  holomorphic EP, β_k = |β| e^{2πik/N}:  v_N = (1/N) Σ_k a(β_k) / β_k
//            (the trapezoidal rule for (1/2πi)∮ a(β) β⁻² dβ; bias O(|β|^N)). Computed as a DFT
//            over the contour (FFTW), which yields every Taylor coefficient
//            c_m = (1/N) Σ_k a(β_k) β_k^{−m} ≈ a^{(m)}(0)/m! at once; c_1 is the estimate, c_2 the
//            curvature (a bias indicator). Parameters are real, so a(β̄) = conj a(β): only the
//            ⌈(N+1)/2⌉ points with 0 ≤ arg β ≤ π are relaxed, the real ones (±|β|) in real
//            arithmetic, and all points of a batch relax stacked side by side in the same GEMMs.
//   Parameter gradient from an error vector v (activated coordinates; trap 1):
//     grad θ = (∂G(σ(u*), x)/∂θ)ᵀ v / B + ∂ℓ/∂θ_r / B; dense edge: ∂K = v_post s_preᵀ, ∂b = v_post.
//   Gradient descent subtracts it; the nudge is added (trap 2).
#include <complex>
#include <memory>
#include <vector>

#include "sim/sim.hpp"

namespace hepsim {

// The data of one batch at the free fixed point.
template <class R>
struct FreeState {
  Mat<R> x;       // input_size x B
  Mat<R> y;       // classes x B (one-hot)
  Mat<R> drive;   // neurons x B: C = Σ K_in x + biases
  Mat<R> u;       // neurons x B: the free state u* (or u_T1)
  RelaxResult relax;  // statistics of the free phase
};

// Computes the drive and relaxes the free phase from u = 0, or from `start` (neurons x B) when given.
template <class R>
FreeState<R> free_phase(const Model& model, const Vec<R>& theta, const CMatRef<R>& x, const CMatRef<R>& y,
                        const RelaxConfig& cfg, const Mat<R>* start = nullptr);

// g_s = ∂ℓ/∂s at the state u (zero outside `out`), neurons x B.
template <class R>
Mat<R> loss_gradient_s(const Model& model, const Vec<R>& theta, const CMatRef<R>& u, const CMatRef<R>& y);

// How a linear fixed-point iteration v ← A v + b (adjoint, tangent-linear) is run: `steps`
// iterations, or until ‖A v + b − v‖∞ ≤ tol per column (tol > 0; steps is then the budget). With
// dt ≠ 1 each iteration is damped like the map, v ← v + dt (A v + b − v): the same limit, and it
// converges wherever the damped map does (a map step's eigenvalue λ becomes 1 − dt (1 − λ)).
struct IterationConfig {
  long steps = 20;
  double tol = 0;
  double dt = 1;
};

// The iterations that follow a relaxation configuration: its budget and tolerance, and the
// damping of the (damped) map or of Anderson's mixing; ODE solvers leave the iterations undamped.
IterationConfig iterations(const RelaxConfig& cfg);
// The damping of the discrete dynamics behind a relaxation (truncated BPTT unrolls these steps).
double map_step(const RelaxConfig& cfg);

template <class R>
struct IterationResult {
  Mat<R> v;          // neurons x B
  long steps = 0;    // iterations performed
  double last_update = 0;  // ∞-norm of the last update (GMRES: of the final residual, max over columns)
  Vec<double> column_residual;  // GMRES only: each column's final residual ∞-norm (+inf where not finite)
};

// RBP adjoint δ by the iteration δ ← D J_Gᵀ δ + D g_s from δ = 0 (T2 iterations = truncated RBP).
template <class R>
IterationResult<R> rbp_adjoint(const Model& model, const Vec<R>& theta, const CMatRef<R>& u_star,
                               const CMatRef<R>& y, const IterationConfig& cfg);

// Exact EP response by forward-mode differentiation of the nudged map w.r.t. β at β = 0, along
// the β = 0 trajectory from u_start (= u* when converged): u ← M₀(u), ú ← J_G D(u) ú + e(σ(u))
// (damped: u ← u + dt (M₀(u) − u), ú ← ú + dt (J_G D(u) ú + e − ú)), result σ'(u_T) ú_T. Equals
// v* when u_start is a fixed point and the iteration has converged.
template <class R>
IterationResult<R> exact_response(const Model& model, const Vec<R>& theta, const CMatRef<R>& drive,
                                  const CMatRef<R>& u_start, const CMatRef<R>& y, const IterationConfig& cfg);

// δ and v* by matrix-free GMRES (ep/krylov.hpp) on (I − D J_Gᵀ) δ = D g_s and (I − D J_G) v = D g_s:
// one VJP (JVP) per iteration as in the iterations above, cfg.steps the budget of products (the
// final residual's included) and cfg.tol (> 0) the ∞-norm residual to reach (cfg.dt is not used:
// the solution is the same). They usually converge also where the iterations diverge, e.g. at a
// state the map does not contract to (a free phase stopped after T1 steps); `last_update` is the
// final residual ‖D g_s − A v‖∞ (above tol when GMRES stagnated or ran out of budget).
template <class R>
IterationResult<R> rbp_krylov(const Model& model, const Vec<R>& theta, const CMatRef<R>& u_star, const CMatRef<R>& y,
                              const IterationConfig& cfg);
template <class R>
IterationResult<R> exact_response_krylov(const Model& model, const Vec<R>& theta, const CMatRef<R>& u_star,
                                         const CMatRef<R>& y, const IterationConfig& cfg);

// δ and v* by dense linear solves (small networks: neurons ≲ 4000). Per column:
// (I − D J_Gᵀ) δ = D g_s and (I − D J_G) v = D g_s.
template <class R>
Mat<R> rbp_dense(const Model& model, const Vec<R>& theta, const CMatRef<R>& u_star, const CMatRef<R>& y);
template <class R>
Mat<R> exact_response_dense(const Model& model, const Vec<R>& theta, const CMatRef<R>& u_star, const CMatRef<R>& y);

// Truncated BPTT: loss at σ(u_T) after T map steps (β = 0) from u_start (held constant),
// backpropagated through the T steps; with dt ≠ 1 the steps are the damped map's,
// u_{k+1} = u_k + dt (M₀(u_k) − u_k). Returns the parameter gradient (θ layout, divided by B,
// readout included) and Σ_t dt a_t, the error vector summed over the unrolled steps (equal to
// the T-step truncated, equally damped, RBP δ when u_start is a fixed point).
template <class R>
struct BpttResult {
  Vec<R> grad;
  Mat<R> error_sum;
};
template <class R>
BpttResult<R> truncated_bptt(const Model& model, const Vec<R>& theta, const CMatRef<R>& x, const CMatRef<R>& drive,
                             const CMatRef<R>& u_start, const CMatRef<R>& y, long steps, double dt = 1);

// The full gradient of SPEC 3.1 from an error vector: (∂G/∂θ)ᵀ v / B + ∂ℓ/∂θ_r / B.
template <class R>
Vec<R> parameter_gradient(const Model& model, const Vec<R>& theta, const FreeState<R>& fs, const CMatRef<R>& v);
// The same, times `weight` (B·weight replaces the 1/B), added to `grad` (no allocation of θ's size).
template <class R>
void add_parameter_gradient(const Model& model, const Vec<R>& theta, const FreeState<R>& fs, const CMatRef<R>& v,
                            R weight, Vec<R>& grad);

// ---- EP estimators -----------------------------------------------------------------------------

struct EstimatorConfig {
  int N = 2;             // 1 classic, 2 symmetric, ≥ 3 holomorphic (N = 0 is exact_response)
  double beta = 0.05;    // |β| > 0
  RelaxConfig nudged;    // each nudged phase (T2 = nudged.max_steps), restarted from u*
  bool keep_coefficients = false;  // fill EstimateResult::coefficients (all c_m)
};

template <class R>
struct EstimateResult {
  Mat<R> v;                        // neurons x B: the estimate of v* (zero for a diverged sample)
  Mat<R> curvature;                // c_2 (N ≥ 3; empty otherwise)
  std::vector<Mat<R>> coefficients;  // c_0 … c_{N−1} when requested (N ≥ 2)
  // Per sample, the worst status of its nudged phases (diverged > cycling > stalled > max_steps >
  // converged). A sample with a diverged or cycling phase has no estimate: its v column (and its
  // coefficients) are zero, and it is counted once, in n_diverged or else in n_cycling.
  std::vector<RelaxStatus> status;
  Index n_diverged = 0, n_cycling = 0;
  long relaxations = 0;            // nudged phases relaxed per sample (⌈(N+1)/2⌉, or 1 for N = 1)
  double max_residual = 0;         // over all nudged phases of live samples
  long steps = 0;                  // total nudged steps (sum over the stacked relaxations)
};

// The contour points actually relaxed for N ≥ 2: k = 0 … ⌊N/2⌋, β_k = |β| e^{2πik/N}.
std::vector<std::complex<double>> contour_points(int N, double beta);

// Runs the nudged phases from fs.u and returns the estimate of v*.
template <class R>
EstimateResult<R> ep_estimate(const Model& model, const Vec<R>& theta, const FreeState<R>& fs,
                              const EstimatorConfig& cfg);

// ---- Online (oscillating) holomorphic EP (SPEC 3.3) ------------------------------------------
// No separate phases: from u = 0 the network runs `periods` periods while β rotates through the N
// phase points β_k = |β| e^{2πik/N} of each period, T2 steps (of cfg.phase: map, rk4, dopri5 or
// anderson, with its noise and time constants) at each, the state carried from one point to the
// next (complex states throughout). The first period is the settling transient; over the others
// the trajectory, sampled at the end of each phase point, is demodulated: its time average is the
// free state u*, its first Fourier coefficient (1/(K|β|)) Σ σ(u) e^{−2πik/N} the error vector v
// (K samples), the second the curvature c_2 (N ≥ 3). With T2 long enough for every phase point to
// settle this is holomorphic EP's estimate (its bias O(|β|^N)); shorter T2 lag the rotation.
// The single-bin sums of the discrete Fourier transform are accumulated as the network runs (the
// transform of the whole recorded trajectory would hold n·B·N·periods states).
struct OnlineConfig {
  int N = 4;             // phase points per period (≥ 2)
  double beta = 0.1;     // |β| > 0
  long periods = 3;      // ≥ 2 (the first is discarded)
  RelaxConfig phase;     // each phase point: phase.max_steps = T2 (tol ignored: fixed steps); its noise
                         // key is offset by the point's index in the run
};

template <class R>
struct OnlineResult {
  FreeState<R> free;          // x, y, drive, u = the averaged free state; free.relax: per sample the
                              // worst status over its phase points, steps and time summed
  Mat<R> v;                   // the error vector (zero for a diverged sample)
  Mat<R> curvature;           // c_2 (N ≥ 3; empty otherwise)
  Mat<R> imag;                // the imaginary part of the first coefficient (zero for an exact
                              // estimate of a real v: a lag and noise indicator)
  Index n_diverged = 0;
  long steps = 0;             // steps per sample: periods · N · T2
};

template <class R>
OnlineResult<R> online_estimate(const Model& model, const Vec<R>& theta, const CMatRef<R>& x, const CMatRef<R>& y,
                                const OnlineConfig& cfg);

// Taylor coefficients from the half-contour samples: samples[k] (k = 0 … ⌊N/2⌋) hold a(β_k) for
// every (neuron, sample) entry (equal sizes). Returns c_0 … c_{N−1}, each of that size:
// c_m = |β|^{−m} (1/N) Σ_{k=0}^{N−1} a_k e^{−2πikm/N}, with a_{N−k} = conj a_k.
// `fft` selects FFTW (a batched complex-to-real transform) or the direct O(N²) sum.
template <class R>
std::vector<Mat<R>> contour_coefficients(const std::vector<Mat<std::complex<R>>>& samples, int N, double beta,
                                         bool fft = true);

}  // namespace hepsim
