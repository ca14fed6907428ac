#pragma once
// The training loop (SPEC 7) with callbacks. Per mini-batch:
//   1. free phase: T1 map steps from u = 0 (or to a tolerance) → u*
//   2. an error vector v by the algorithm: hep (N = 0 exact response, N = 1, 2, ≥ 3 holomorphic),
//      rbp (T2 adjoint iterations) or bp (truncated BPTT through T2 steps); online replaces 1 and 2
//      by one oscillating run (periods × N phase points of T2 steps) that yields u* and v
//   3. grad = (∂G/∂θ)ᵀ v / B + ∂ℓ/∂θ_r / B  (+ λ ∇L_h, the homeostatic gradient; SPEC 4, trap 5)
//   4. the optimizer subtracts grad (trap 2)
// The batch's columns are split into one contiguous chunk per thread (and MPI rank: ep/parallel/
// team.hpp); the chunks' gradients are summed in a fixed pairwise order, so a run is
// deterministic for a given number of chunks, whichever ranks and threads compute them (and equal
// across chunk counts up to float rounding). Random streams are keyed on (seed, stream, epoch, batch),
// so a resumed run repeats exactly the uninterrupted one.
// Once per epoch: evaluation on the test set (top-1, top-5, loss after T1 free steps) and, on a
// fixed probe batch in double precision, the alignment of the algorithm's error vector with the
// exact RBP δ per layer (mean and std over samples of the per-sample cosine), the cosine of the
// resulting parameter gradient with the RBP gradient (kernels and biases; the readout term is
// identical in both and left out), jac_sym, the homeostatic loss and the weight angle.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "datasets/dataset.hpp"
#include "ep/estimators.hpp"
#include "ep/optim.hpp"
#include "ep/parallel/team.hpp"
#include "jacobian/jacobian.hpp"

namespace hepsim {

// Probes per probe sample for the symmetry metrics of conv networks (their H depends on the
// state): 16 × 100 samples give the norms to about 4 % (a Gaussian quadratic form's relative
// std is about sqrt(2/1600) per sample average, more with uneven spectra).
inline constexpr Index kMetricDraws = 16;

enum class Algo { hep, rbp, bp, online };
Algo parse_algo(const std::string& name, const std::string& where = "--algo");
const char* to_string(Algo a);

enum class DivergencePolicy { skip, abort };
DivergencePolicy parse_divergence_policy(const std::string& name, const std::string& where = "--on-diverge");

struct TrainConfig {
  Algo algo = Algo::hep;
  int N = 2;                  // hep: 0 exact response, 1, 2, ≥ 3 holomorphic; online: phase points (≥ 2)
  long periods = 3;           // online: periods of the rotation, T2 steps per phase point (estimators.hpp)
  double beta = 0.05;         // |β|
  RelaxConfig free;           // the free phase (T1 = free.max_steps) and evaluation
  RelaxConfig nudged;         // each nudged phase (T2 = nudged.max_steps); also rbp/bp/N=0 steps
  double homeostasis = 0;     // λ (0: off)
  HomeoConfig homeo;          // draws per sample, mode (λ is taken from `homeostasis`)
  OptimizerConfig optimizer;
  long epochs = 1;
  long batch_size = 50;
  std::uint64_t seed = 0;     // streams: init, shuffle, augment, probes (separate)
  Index probe_size = 100;     // samples of the fixed alignment probe batch (from the test set)
  Index eval_chunk = 500;     // test samples relaxed together during evaluation
  DivergencePolicy on_diverge = DivergencePolicy::skip;
  int threads = 1;            // chunks per batch (≥ 1)
  bool warm_start = false;    // free phases start from the sample's previous free state (needs free.tol > 0)
  DeviceConfig device;        // mismatch and quantization of the substrate's weights (sim/analog);
                              // state noise, time constants and settle are in free/nudged
  Normalization norm;         // input normalisation
  Augmentation augment;       // train-time augmentation
  const Team* team = nullptr; // the processes training this run together (ep/parallel/team.hpp;
                              // nullptr: this one alone); each relaxes its chunks of every batch
};

// One line of the log (SPEC 9 names).
struct EpochRecord {
  long epoch = 0;
  double train_loss = 0, train_acc = 0;   // at the free state, over the epoch
  double test_loss = 0, test_acc = 0, test_top5 = 0;
  double seconds = 0;                     // wall time of the epoch (training + evaluation + metrics)
  double train_seconds = 0;
  double homeo_loss = 0;                  // ½‖H − Hᵀ‖²_F / n at the end of the epoch
  double jac_sym = 0;
  double weight_angle_deg = 0;
  double residual_log10 = 0;              // mean log10 of the finite free-phase residuals of the epoch
  double free_steps = 0;                  // mean free-phase steps per training sample (< T1 with --tol)
  long not_converged = 0;                 // training free phases above the report tolerance (any
                                          // status but converged: max_steps, cycling, stalled, diverged)
  long diverged = 0;                      // samples with a diverged relaxation (free or nudged)
  long cycling = 0, stalled = 0;          // training free phases ended as cycling / stalled (also in not_converged)
  long nudged_cycling = 0;                // samples (not diverged) with a cycling nudged phase: no
                                          // error vector (the readout's own term at the free state stays)
  double lr = 0;                          // learning rate at the end of the epoch
  double examples_per_s = 0;              // training throughput
  std::vector<double> cos_delta_mean, cos_delta_std;  // per layer (Network::layers order)
  double cos_grad_total = 0;
};

struct BatchProgress {
  long epoch = 0, batch = 0, batches = 0;
  long seen = 0;            // training samples so far in this epoch
  double loss_sum = 0;      // summed loss so far
  long correct = 0;
  double examples_per_s = 0;
};

// Where a run stands inside an epoch: the epoch in progress (1-based), its batches done, and the
// sums of its statistics so far. A mid-epoch checkpoint stores it beside θ and the optimizer's
// state; the data order, augmentation, probes and noise are keyed on (seed, epoch, batch, step),
// so a run resumed from it continues exactly as the uninterrupted run would.
struct EpochPosition {
  long epoch = 1, batch = 0;
  double train_seconds = 0;  // wall time of those batches
  long seen = 0;             // their samples
  double loss_sum = 0, log_residual = 0, free_steps = 0;
  long correct = 0, residual_samples = 0;
  long not_converged = 0, diverged = 0, free_diverged = 0, cycling = 0, stalled = 0, nudged_cycling = 0;
};

struct EvalResult {
  double loss = 0, top1 = 0, top5 = 0;
  long samples = 0;
  long not_converged = 0;  // free phases above the report tolerance (diverged ones included)
  long diverged = 0;       // free phases that diverged (their scores are of a frozen state)
};

template <class R>
class Trainer {
 public:
  Trainer(const Model& model, const TrainConfig& cfg, Vec<R> theta);

  // Runs from `from` (the first batch of epoch start+1, or a mid-epoch checkpoint's position) to
  // the end of epoch cfg.epochs. on_batch may be empty; on_epoch is called after every epoch (log,
  // checkpoint). after_step, when given, is called after every training step with the position
  // reached (a mid-epoch checkpoint); when it returns true the run stops there and run returns
  // false (true when every epoch is done).
  bool run(const Dataset& train, const Dataset& test, const EpochPosition& from,
           const std::function<void(const BatchProgress&)>& on_batch,
           const std::function<void(const EpochRecord&)>& on_epoch,
           const std::function<bool(const EpochPosition&)>& after_step = {});

  EvalResult evaluate(const Dataset& test) const;

  // Statistics of one training step (sums over the batch's samples).
  struct StepStats {
    double loss = 0;
    long correct = 0;
    double log_residual = 0;     // Σ log10 of the finite free-phase residuals
    long residual_samples = 0;   // how many there are
    double free_steps = 0;  // sum over samples of the step at which each free phase stopped
    long not_converged = 0, diverged = 0, cycling = 0, stalled = 0, nudged_cycling = 0;
    long free_diverged = 0;  // of `diverged`: those whose free phase diverged
    bool task_nonfinite = false;  // the task gradient (before a conv network's homeostasis) was not finite
  };
  // One training step on a batch (x: input_size x B, y: classes x B): gradient, homeostasis,
  // optimizer update. `index` / `total` are the global step and the run's step count (the
  // probes' key and the schedule). Throws InputError on divergence with policy abort or on
  // non-finite parameters.
  // With cfg.warm_start and `samples` (the training-set index of each column), each free phase
  // starts from that sample's free state of its previous visit (zero on the first).
  StepStats step(const CMatRef<R>& x, const CMatRef<R>& y, long index, long total, const Index* samples = nullptr);

  // The parameters the dynamics see: the device's (sim/analog/substrate.hpp: quantized, with
  // mismatch) made from the nominal θ, or θ itself on an ideal substrate. Relaxations, error
  // vectors, gradients, homeostasis, evaluation and the epoch metrics all use these; the optimizer
  // updates the nominal θ (its full-precision shadow weights).
  const Vec<R>& device_theta() const;

  Vec<R>& theta() { return theta_; }
  const Vec<R>& theta() const { return theta_; }
  Optimizer<R>& optimizer() { return opt_; }
  // Whether a step has applied some sample's gradient (a resumed run: its checkpoint's weights).
  bool moved() const { return moved_; }
  void set_moved() { moved_ = true; }
  const Model& model() const { return model_; }
  const TrainConfig& config() const { return cfg_; }
  const Team& team() const { return cfg_.team ? *cfg_.team : solo_team(); }

 private:
  // grad = the algorithm's gradient of the batch (assigned, not accumulated); for conv networks
  // with homeostasis also λ ∂L_h/∂θ at the batch's free states (probes keyed by `index`).
  StepStats gradient(const CMatRef<R>& x, const CMatRef<R>& y, Vec<R>& grad, const Index* samples, long index) const;
  void epoch_metrics(const Dataset& test, EpochRecord& rec) const;
  // Creates a dense network's homeostasis (its probes sized by a batch of `cols` columns) once.
  void ensure_homeostasis(Index cols);

  const Model& model_;
  TrainConfig cfg_;
  Vec<R> theta_;
  Device device_;
  mutable Vec<R> theta_device_;  // device_theta()'s buffer
  bool moved_ = false;           // moved()
  Optimizer<R> opt_;
  std::unique_ptr<Homeostasis<R>> homeo_;  // when cfg.homeostasis > 0, created by the first step
  Vec<R> grad_;
  mutable std::vector<Vec<R>> chunk_grads_;  // per-thread gradient buffers of `gradient`, kept between steps
  mutable Mat<R> warm_;  // with cfg.warm_start: the last free state of every training sample (neurons x n)
};

// The flag to blame, with advice, for samples whose relaxations diverged (`free` of them in the
// free phase, `nudged` only in a nudged phase) or whose nudged phase cycled (`cycled`): the most
// frequent cause.
// `moved`: whether any training step has changed the weights yet (if not, the learning rate is
// not the cause: the initialisation, the device or the step is).
std::pair<std::string, std::string> divergence_cause(const TrainConfig& cfg, long free, long nudged, long cycled,
                                                     bool moved = true);

// An upper bound of the memory a run of `cfg` allocates (bytes), by part, computed before any of
// it is: the parameter-sized vectors, each thread's relaxations, evaluation, the alignment
// metrics, homeostasis probes, warm-start states. `where` names what sets the part (a flag).
// `scalar`: sizeof the training precision. The dataset (uint8, loaded before) is not included.
struct MemoryPart {
  std::string what, where;
  double bytes = 0;
};
// `run`: false for `bench`, which writes no checkpoint and computes no metrics (their double
// θ-sized vectors are not counted).
std::vector<MemoryPart> train_memory(const Network& net, const TrainConfig& cfg, Index train_n, Index test_n,
                                     std::size_t scalar, bool run = true);
// What an evaluation alone (hepsim eval) allocates: the parameter-sized vectors of the Trainer
// that evaluates (named `checkpoint`), each thread's evaluation chunk (named --threads), the
// convolutions' buffers and the threads' stacks. Nothing of training's metrics or probes.
std::vector<MemoryPart> eval_memory(const Network& net, const TrainConfig& cfg, Index test_n, std::size_t scalar,
                                    const std::string& checkpoint);

// Floating-point operations of one training step on a batch of B samples (GEMMs only, 2mkn each;
// a real kernel on complex states counts twice): the free phase, the nudged phases or
// iterations of the algorithm, the input projection and the parameter gradient.
double train_step_flops(const Network& net, const TrainConfig& cfg, Index B);

// The error vector of the configured algorithm at a free state (hep, rbp; for bp the BPTT
// error sum), used in training and for the alignment metrics. `nudged_status`, when given,
// receives per sample the worst status of its nudged phases (EstimateResult::status; converged
// for the algorithms without nudged phases): diverged or cycling ones have a zero column.
// `nudged`, when given, replaces cfg.nudged (e.g. the same phases with their state noise keyed).
template <class R>
Mat<R> algorithm_error_vector(const Model& model, const Vec<R>& theta, const FreeState<R>& fs, const TrainConfig& cfg,
                              std::vector<RelaxStatus>* nudged_status = nullptr, const RelaxConfig* nudged = nullptr);

// The alignment columns of an epoch's record from the probe batch's free state `fs` (double), the
// algorithm's error vectors `v` and RBP's δ at it (neurons x P): per layer the mean and sd over the
// probes of cos(v, δ), and the cosine of the whole parameter gradients with RBP's (kernels and
// biases; truncated BPTT's gradient for bp). Probes whose δ column is not finite (its solve failed)
// are left out; with none left, or a layer no nudge reached, the columns stay NaN.
void alignment_metrics(const Model& model, const Vec<double>& theta, const TrainConfig& cfg,
                       const FreeState<double>& fs, const Mat<double>& v, const Mat<double>& delta, EpochRecord& rec);

// A relaxation's configuration with its state noise keyed (a copy only when there is noise):
// `key` names the relaxation (step and phase), `columns` each column's sample.
RelaxConfig keyed_noise(const RelaxConfig& cfg, std::uint64_t key, std::vector<std::uint64_t> columns);

}  // namespace hepsim
