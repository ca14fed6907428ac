#pragma once
// hepsim/jacobian — the Jacobian of the network at its free fixed point: products, the dense
// matrix for small networks, symmetry metrics, spectrum, and the Jacobian-homeostasis loss with
// its parameter gradient. Implements SPEC.md section 4 (and reports the weight angle of section 5,
// which lives in sim/network.hpp).
//
// Symbols (SPEC notation -> code), n = Network::neurons, θ = the flat parameter vector:
//   H = ∂G/∂s at s = σ(u*), β = 0    the map with the activation bypassed. For dense networks the
//                                   block matrix whose (post, pre) block is K_e for every edge
//                                   e: pre -> post with pre ≠ in; state-independent.
//   H v, Hᵀ w                       jvp(), vjp(): sim's add_recurrent / add_recurrent_transpose,
//                                   one GEMM per edge over all columns (probes, samples).
//   J = H − I                       the Jacobian of the continuous-time field du/dt = G − u with
//                                   respect to s; S = (J + Jᵀ)/2, A = (J − Jᵀ)/2 = (H − Hᵀ)/2.
//   jac_sym = ‖S‖_F / (‖S‖_F + ‖A‖_F)   1 for symmetric H, about ½ for random H.
//   L_h = E_ε[‖Hε‖² − εᵀH²ε] / n = ½‖H − Hᵀ‖²_F / n = 2‖A‖²_F / n      (ε standard normal)
//   ∂L_h/∂H = 2(H − Hᵀ)/n,  restricted to each kernel's (post, pre) block:
//             2(K_e − K_rᵀ)/n for a reciprocal pair (e, r), 2K_e/n without a partner,
//             2(K_e − K_eᵀ)/n for a self-loop p -> p (its block is on the diagonal).
//   Hutchinson (one probe ε, fixed point and ε held constant):
//     ℓ(ε) = εᵀ(HᵀH − HH)ε = ‖Hε‖² − (Hᵀε)ᵀ(Hε),
//     ∂ℓ/∂H = 2(Hε)εᵀ − ε(Hε)ᵀ − (Hᵀε)εᵀ,
//   averaged over the probes and divided by n. With P probe columns E, Y = HE, Z = HᵀE, the
//   gradient of an edge's block is ((2Y − Z)_post E_preᵀ − E_post Y_preᵀ) / (P n): two GEMMs.
//   Writing J = H − I instead of H changes neither ℓ(ε) nor its gradient (εᵀ(H − Hᵀ)ε = 0), so
//   the paper's "Jacobian" and H give the same estimator.
//   Exact norms for dense networks need no n x n matrix: ‖A‖², ‖S‖² and ‖H − Hᵀ‖² are sums of
//   per-edge block norms (exact_norms), so `jac_sym` and `homeo_exact` are exact at any size;
//   only the spectrum forms H (n ≤ kMaxDenseNeurons).
//   Spectrum: eigenvalues of J (Eigen::EigenSolver, double), the one with the largest real part
//   (stability of the continuous system: all real parts < 0), and Henrici's departure from
//   normality sqrt(max(0, ‖J‖²_F − Σ|λ_i|²)) / ‖J‖_F (0 for normal J, e.g. symmetric H).
//   Dynamics: the Jacobian of the map w.r.t. u is J_G D with D = diag σ'(u*) (SPEC 3); the
//   continuous system's is J_G D − I, whose spectrum depends on the sample (analyse_jacobian).
//
// Gradients are *added*, scaled by a caller-supplied weight λ, into a θ-layout vector (zero
// contribution to biases, input kernels and the readout), so that the homeostatic gradient can be
// added to the task gradient before the optimizer step (SPEC 4, trap 5). Random probes come from
// Rng(seed, Stream::probes, step), keyed by the caller.
#include <algorithm>
#include <complex>
#include <cstdint>
#include <functional>
#include <optional>

#include "sim/sim.hpp"

namespace hepsim {

// Above this neuron count the dense H (and its spectrum) is not formed.
inline constexpr Index kMaxDenseNeurons = 4096;
// Exact homeostasis on a conv network probes every sample's state with all n basis vectors
// (an n x n block per sample): allowed up to this many neurons.
inline constexpr Index kMaxExactConvNeurons = 512;

// ---- products and dense matrices ------------------------------------------------------------

// out = H v (overwritten), batched over the columns of v (neurons x cols).
template <class R>
void jvp(const Network& net, const Vec<R>& theta, const CMatRef<R>& v, MatRef<R> out);
// out = Hᵀ w (overwritten).
template <class R>
void vjp(const Network& net, const Vec<R>& theta, const CMatRef<R>& w, MatRef<R> out);
// The dense H (neurons x neurons), assembled from the kernel blocks.
template <class R>
Mat<R> dense_jacobian(const Network& net, const Vec<R>& theta);
// The dense Jacobian of the map w.r.t. the pre-activations, J_G D = H diag(d), d = σ'(u*).
template <class R>
Mat<R> map_jacobian(const Network& net, const Vec<R>& theta, const CVecRef<R>& d);

// A mean over probes with its standard error (sample std / sqrt(P); 0 for exact values).
struct Estimate {
  double value = 0;
  double std_error = 0;
  Index probes = 0;
};

// ---- exact symmetry metrics (any size: block norms) -----------------------------------------

struct JacobianNorms {
  double s2 = 0;       // ‖S‖²_F, S = (J + Jᵀ)/2, J = H − I
  double a2 = 0;       // ‖A‖²_F, A = (J − Jᵀ)/2
  Index neurons = 0;   // n
  double jac_sym() const;     // ‖S‖ / (‖S‖ + ‖A‖)
  double homeo() const { return 2 * a2 / static_cast<double>(neurons); }  // ½‖H − Hᵀ‖²_F / n
};
template <class R>
JacobianNorms exact_norms(const Network& net, const Vec<R>& theta);

// The same norms for a network whose H depends on the state (convolutional edges), at the
// activated states s (one column per sample), averaged over the samples: Hutchinson estimates
// with `draws` standard-normal probes ε per sample (Rng(seed, Stream::probes)),
//   ‖S‖² ≈ mean ‖(Hε + Hᵀε)/2 − ε‖²,   ‖A‖² ≈ mean ‖(Hε − Hᵀε)/2‖²   (unbiased; exact 0 for A
// when H is symmetric at every state, e.g. B = K and transposed dense pairs).
template <class R>
JacobianNorms norms_at_states(const Network& net, const Vec<R>& theta, const CMatRef<R>& s, Index draws,
                              std::uint64_t seed);

// Homeostasis where H depends on the state (convolutional edges), at the activated free states s
// (one column per sample, held constant as in the paper; the columns are samples first … first +
// B − 1 of the step's batch). Per sample, `draws` standard-normal probes from Rng(seed,
// Stream::probes, step, sample + 1) — independent of how a batch is split over threads — or, with
// exact = true, the n basis vectors (the exact ½‖H − Hᵀ‖²_F at each state). Returns the mean over
// samples of the per-state L_h (its standard error over the probes), and with grad ≠ nullptr adds
// weight · ∂L̂/∂θ, exact for these probes: with Y = Hε, Z = Hᵀε held constant,
//   ∂ℓ(ε)/∂θ = ∂θ⟨2Y − Z, H(θ) ε⟩ − ∂θ⟨ε, H(θ) Y⟩,
// each a directional derivative of the parameter VJP, ∂θ⟨a, H b⟩ = d/dt ∂θ⟨a, G(s + t b; θ)⟩ (the
// pooling's second derivative enters through z = conv_K s), computed by a complex step,
// Im ∂θ⟨a, G(s + ihb; θ)⟩ / h, which has no subtraction and is exact to rounding for h² ≪ eps.
template <class R>
Estimate homeo_at_states(const Network& net, const Vec<R>& theta, const CMatRef<R>& s, Index draws, bool exact,
                         std::uint64_t seed, std::uint64_t step, Index first, R weight, Vec<R>* grad);

// L_h = ½‖H − Hᵀ‖²_F / n, and grad += weight · ∂L_h/∂θ (kernel blocks only).
template <class R>
double homeo_exact(const Network& net, const Vec<R>& theta);
template <class R>
void add_homeo_exact_gradient(const Network& net, const Vec<R>& theta, R weight, Vec<R>& grad);

// ---- random-probe estimates (any size) ------------------------------------------------------

template <class R>
class Probes;

// Hutchinson estimate of L_h from the current probes (computes Y, Z); with grad ≠ nullptr also
// grad += weight · ∂L̂_h/∂θ, the exact gradient of the estimate for these probes.
template <class R>
Estimate homeo_hutchinson(const Network& net, const Vec<R>& theta, Probes<R>& probes, R weight = R(1),
                          Vec<R>* grad = nullptr);

// Probe buffers for the estimators: E (neurons x P, the probes), Y = HE, Z = HᵀE and a scratch
// W = 2Y − Z. Keep one per training loop: evaluating allocates nothing.
template <class R>
class Probes {
 public:
  Probes(Index neurons, Index probes);
  Index count() const { return E_.cols(); }
  Index neurons() const { return E_.rows(); }
  // E ← independent standard normals from `rng` (column-major order).
  void draw(Rng& rng);
  // Explicit probes (tests): any values of the right shape.
  MatRef<R> probes() { return E_; }
  // Y = HE, Z = HᵀE for the current probes.
  void apply(const Network& net, const Vec<R>& theta);
  const Mat<R>& E() const { return E_; }
  const Mat<R>& Y() const { return Y_; }
  const Mat<R>& Z() const { return Z_; }

 private:
  template <class T>
  friend Estimate homeo_hutchinson(const Network&, const Vec<T>&, Probes<T>&, T, Vec<T>*);
  Mat<R> E_, Y_, Z_, W_;
};

// jac_sym from the current probes: ‖S‖² ≈ mean ‖Sε‖², ‖A‖² ≈ mean ‖Aε‖², Sε = (Y + Z)/2 − ε,
// Aε = (Y − Z)/2; standard error by the delta method. Calls probes.apply.
template <class R>
Estimate jac_sym_estimate(const Network& net, const Vec<R>& theta, Probes<R>& probes);

// ---- the training-loop entry point ----------------------------------------------------------

enum class HomeoMode { hutchinson, exact };

struct HomeoConfig {
  HomeoMode mode = HomeoMode::hutchinson;
  Index draws = 5;      // Gaussian probes per batch sample (hutchinson; the paper's 5), ≥ 1
  double lambda = 1.0;  // coefficient λ (SPEC 4: 1.0 MLP, 0.1 loop, 15 CIFAR, 10 ImageNet32)
  Index samples = 0;    // batch samples (states) that carry probes, spread over the batch (0: all)
  // How many of a batch of `batch` samples carry probes.
  Index probed(Index batch) const { return samples > 0 ? std::min(samples, batch) : batch; }
};

// Owns the probe buffers for batches of up to `batch` samples (draws × batch probe columns).
template <class R>
class Homeostasis {
 public:
  Homeostasis(const Network& net, const HomeoConfig& cfg, Index batch);
  // L_h (without λ; the estimate and its standard error, or the exact value) and
  // grad += λ ∂L_h/∂θ. Probes are drawn from Rng(seed, Stream::probes, step).
  [[nodiscard]] Estimate add_gradient(const Vec<R>& theta, std::uint64_t seed, std::uint64_t step, Vec<R>& grad);
  const HomeoConfig& config() const { return cfg_; }

 private:
  const Network& net_;
  HomeoConfig cfg_;
  Probes<R> probes_;
};

// ---- spectrum -------------------------------------------------------------------------------

struct Spectrum {
  Vec<std::complex<double>> eigenvalues;
  std::complex<double> max_real{0, 0};  // the eigenvalue with the largest real part
  double henrici = 0;                   // sqrt(max(0, ‖J‖²_F − Σ|λ_i|²)) / ‖J‖_F (0 if J = 0)
};
Spectrum spectrum(const Mat<double>& J);

// ---- the whole analysis (hepsim jacobian) -----------------------------------------------------

struct AnalysisConfig {
  Index probes = 1000;         // probe columns of the estimates (≥ 2)
  std::uint64_t seed = 0;      // probes: Rng(seed, Stream::probes, 0)
  Index max_dense = kMaxDenseNeurons;  // spectra only up to this many neurons
  long max_steps = 10000;      // step budget of the free phase (dynamics)
  double tol = 1e-9;           // residual ‖M(u) − u‖∞ of the free phase (dynamics)
  Solver solver = Solver::map; // how the free fixed points are found (anderson may find unstable ones)
  double dt = 0;               // the solver's time step (RelaxConfig::dt; 0: its default)
  double stall_window = RelaxConfig{}.stall_window;  // RelaxConfig::stall_window
  std::function<void(const RelaxProgress&)> progress;  // RelaxConfig::progress of the free phase
  // Called with (done, total) as the dense spectra complete (from any thread): each can take a
  // minute at a few thousand neurons.
  std::function<void(Index, Index)> spectra_progress;
};

struct JacobianAnalysis {
  Index neurons = 0;
  double jac_sym = 0;                  // exact (block norms)
  Estimate jac_sym_estimate;
  double homeo_exact = 0;              // ½‖H − Hᵀ‖²_F / n
  Estimate homeo_estimate;             // Hutchinson
  std::optional<Spectrum> jac;         // spectrum of J = H − I (n ≤ max_dense)
  std::optional<std::complex<double>> max_real_eig_dynamics;  // max over converged samples of
                                       // the rightmost eigenvalue of J_G D − I (n ≤ max_dense)
  Index samples = 0, converged = 0;    // free phases relaxed / converged to tol
  std::vector<RelaxStatus> free_status;  // per sample: how its free phase ended
  Index unstable = 0;                  // converged fixed points whose rightmost eigenvalue has Re > 0
  double weight_angle_deg = 0;         // SPEC 5; NaN without reciprocal pairs
};

// x: inputs (input_size x samples; may have 0 columns: no dynamics).
JacobianAnalysis analyse_jacobian(const Model& model, const Vec<double>& theta, const Mat<double>& x,
                                  const AnalysisConfig& cfg);

}  // namespace hepsim
