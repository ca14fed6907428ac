// The cost of a training run before it runs (ep/train.hpp): the memory it allocates, by part, and
// the floating-point operations of a step.
#include <algorithm>
#include <cmath>
#include <string>

#include "ep/krylov.hpp"
#include "ep/train.hpp"

namespace hepsim {

namespace {
// Bytes per parameter of a non-ideal device: its θ and the mismatch factors (double).
double device_bytes(const TrainConfig& cfg, double r) { return cfg.device.ideal() ? 0.0 : r + 8; }

// State-sized matrices per column of Anderson's history beyond a map's (its m past differences of
// states and residuals, and work); 0 for the other solvers.
double anderson_matrices(const RelaxConfig& cfg) {
  return cfg.solver == Solver::anderson ? 2.0 * cfg.anderson_m + 6 : 0.0;
}
// The stage buffers of the ODE steppers beyond a map's: RK4's four slopes and its trial state,
// Dormand–Prince's seven stages, trial state, error estimate and the controller's copies.
double stepper_matrices(const RelaxConfig& cfg) {
  return cfg.solver == Solver::rk4 ? 5.0 : cfg.solver == Solver::dopri5 ? 12.0 : 0.0;
}

// Each thread's evaluation chunk: its inputs twice (the batch and the free state's copy), targets
// and about 14 state-sized matrices of the free phase (and Anderson's history).
MemoryPart evaluation_part(const Network& net, const TrainConfig& cfg, Index test_n, std::size_t scalar,
                           const std::string& where) {
  const double n = static_cast<double>(net.neurons), r = static_cast<double>(scalar);
  const double dim = static_cast<double>(net.input_size), classes = static_cast<double>(net.classes);
  const double T = std::max(1, cfg.threads);
  const double E = static_cast<double>(std::min<Index>(cfg.eval_chunk, std::max<Index>(test_n, 1)));
  return {"evaluation (" + std::to_string(static_cast<long>(E)) + " test samples per chunk and thread)", where,
          (2 * dim + classes + (14 + anderson_matrices(cfg.free) + stepper_matrices(cfg.free)) * n) * E * r * T};
}
MemoryPart stacks_part(const TrainConfig& cfg) {  // each worker thread reserves a stack (8 MB by default)
  const double T = std::max(1, cfg.threads);
  return {"the stacks of " + std::to_string(static_cast<long>(T)) + " threads", "--threads", T * 8e6};
}
}  // namespace

std::vector<MemoryPart> eval_memory(const Network& net, const TrainConfig& cfg, Index test_n, std::size_t scalar,
                                    const std::string& checkpoint) {
  const double r = static_cast<double>(scalar), T = std::max(1, cfg.threads);
  // θ, its cast, the gradient and the optimizer's moments of the Trainer, and a margin for the
  // scores' temporaries (the checkpoint's own double vectors are already resident).
  std::vector<MemoryPart> parts = {
      {"the parameters (" + std::to_string(net.n_params) + ")", checkpoint,
       static_cast<double>(net.n_params) * (7 * r + device_bytes(cfg, r))},
      evaluation_part(net, cfg, test_n, scalar, "--threads"), stacks_part(cfg)};
  if (net.has_conv()) parts.push_back({"the convolutions' im2col buffers", "--threads", conv_work_bytes(net, r) * T});
  return parts;
}

std::vector<MemoryPart> train_memory(const Network& net, const TrainConfig& cfg, Index train_n, Index test_n,
                                     std::size_t scalar, bool run) {
  const double n = static_cast<double>(net.neurons), r = static_cast<double>(scalar);
  const double dim = static_cast<double>(net.input_size), classes = static_cast<double>(net.classes);
  const double T = std::max(1, cfg.threads);
  const double B = static_cast<double>(std::min<Index>(cfg.batch_size, std::max<Index>(train_n, 1)));
  const double Bc = std::ceil(B / T);  // columns per thread
  std::vector<MemoryPart> parts;
  // θ-sized vectors: θ, the gradient, the optimizer's moments and one gradient per thread in
  // the training precision; in double a resumed run's checkpoint (θ, m, v), and at the end of an
  // epoch the checkpoint written (θ, m, v, their in-memory HDF5 file and its copy) or the alignment
  // metrics' θ and gradients: fifteen (measured: 111 bytes per parameter for a new AdamW run, 134
  // for a resumed one, of 21M parameters). bench writes no checkpoint: its extra is the engines'
  // packed kernels and the initialisation's draw (four; 48 bytes per parameter measured).
  // Across MPI ranks the gradient sum's send and receive buffers hold this rank's chunk gradients
  // (one, or t without a power-of-two thread count) and the other ranks' segments (ep/parallel).
  const int ranks = cfg.team ? cfg.team->size() : 1;
  const int t = std::max(1, cfg.threads);
  const double mpi_vectors = ranks == 1 ? 0.0 : 2.0 * ((t & (t - 1)) == 0 ? 1 : t) + 1;
  std::size_t largest = 0;
  for (std::size_t i = 1; i < net.blocks.size(); ++i)
    if (net.blocks[i].size() > net.blocks[largest].size()) largest = i;
  const ParamBlock& big = net.blocks[largest];
  parts.push_back({"the parameters (" + std::to_string(net.n_params) + "; the largest block " + big.name + " is " +
                       std::to_string(big.rows) + " x " + std::to_string(big.cols) + ")",
                   big.name.rfind("readout", 0) == 0 ? "--dataset (its classes size the readout)" : "--arch",
                   static_cast<double>(net.n_params) *
                       (r * (4 + T + mpi_vectors) + (run ? 15 * 8 : 4 * 8) + device_bytes(cfg, r))});
  // One relaxation per thread: the batch (inputs twice: the batch and the free state's copy;
  // targets), about 14 state-sized matrices of the free phase (drive, u, σ(u), the fused engine's
  // buffers) and of each nudged phase, whose ⌊N/2⌋ + 1 contour points relax stacked, the complex
  // ones at twice the size.
  const double points = cfg.algo == Algo::hep && cfg.N > 0 ? cfg.N / 2 + 1 : 1;
  const double per_state = 14 + stepper_matrices(cfg.free);  // an ODE solver's stages too
  const double states = (2 * dim + classes + per_state * n) * Bc * r + per_state * n * Bc * points * 2 * r;
  parts.push_back({"the training relaxations (" + std::to_string(static_cast<long>(B)) + " samples per batch)",
                   "--batch-size", states * T});
  if (cfg.algo == Algo::bp)  // truncated BPTT keeps every unrolled state
    parts.push_back({"truncated BPTT's unrolled states", "--T2",
                     static_cast<double>(cfg.nudged.max_steps + 1) * n * Bc * r * T});
  parts.push_back(evaluation_part(net, cfg, test_n, scalar, "--eval-chunk"));
  const double P = static_cast<double>(std::min<Index>(cfg.probe_size, test_n));
  // rbp_dense's H and one LU, or GMRES's Krylov basis and work matrices (restart + 8 of the probe batch's size)
  const double dense = net.neurons <= 2048 && !net.has_conv() ? 2 * n * n * 8 : (KrylovConfig{}.restart + 8) * n * P * 8;
  // A conv network's metrics also probe H at the probe batch's states: kMetricDraws columns per
  // sample of states, probes, Hε, Hᵀε and the linearisation's pre-pool products (and a copy).
  const double z = conv_product_values(net);
  const double conv_metrics = net.has_conv() ? static_cast<double>(kMetricDraws) * P * (4 * n + 2 * z) * 8 : 0;
  parts.push_back({"the alignment metrics (" + std::to_string(static_cast<long>(P)) + " probe samples, double)",
                   "--probe-size", (dim + classes + per_state * n * points * 2) * P * 8 + dense + conv_metrics});
  if (cfg.algo == Algo::bp)  // the metrics' own truncated BPTT on the probe batch, in double
    parts.push_back({"truncated BPTT's unrolled states of the alignment metrics (" + std::to_string(static_cast<long>(P)) +
                         " probe samples x (T2 + 1) steps, double)",
                     "--probe-size", static_cast<double>(cfg.nudged.max_steps + 1) * n * P * 8});
  if (cfg.homeostasis > 0 && net.has_conv()) {
    // At each thread's free states: probe columns (draws, or the n basis vectors, per sample) of
    // the states, E, HE, HᵀE, their complex-step copies and the conv edges' pre-pool maps.
    const bool exact = cfg.homeo.mode == HomeoMode::exact;
    // (real: states, E, Y, Z, ℓ and the products; complex step: the complex states, their
    // temporaries, the weights a, the complex products and the parameter VJP's copies)
    const double m = static_cast<double>(cfg.homeo.probed(static_cast<Index>(B)));
    const double cols = (exact ? n : static_cast<double>(cfg.homeo.draws)) * (m < B ? 1 : Bc);  // one state at a time
    parts.push_back({"the homeostasis probes at the free states (" +
                         (exact ? std::string("every neuron") : std::to_string(cfg.homeo.draws) + " draws") +
                         " per sample)",
                     exact ? "--homeo-mode" : "--homeo-draws", cols * (18 * n + 5 * z) * r * T});
  } else if (cfg.homeostasis > 0 && cfg.homeo.mode == HomeoMode::hutchinson) {
    const double m = static_cast<double>(cfg.homeo.probed(static_cast<Index>(B)));
    parts.push_back({"the homeostasis probes (" + std::to_string(cfg.homeo.draws) + " draws per sample)",
                     "--homeo-draws", 4 * n * static_cast<double>(cfg.homeo.draws) * m * r});
  }
  if (cfg.free.solver == Solver::anderson)  // the training relaxations' and the metrics' (double)
    parts.push_back({"Anderson's history (m = " + std::to_string(cfg.free.anderson_m) + ")", "--anderson-m",
                     anderson_matrices(cfg.free) * n * (1 + points * 2) * (Bc * r * T + P * 8)});
  if (cfg.warm_start)
    parts.push_back({"the warm-start states (one per training sample)", "--warm-start",
                     n * static_cast<double>(train_n) * r});
  if (net.has_conv())  // per thread, the training relaxations (complex: 2 r) and the metrics (double)
    parts.push_back({"the convolutions' im2col buffers", "--arch", conv_work_bytes(net, 2 * r) * T + conv_work_bytes(net, 8)});
  parts.push_back(stacks_part(cfg));  // address space, counted by a limit
  return parts;
}

double train_step_flops(const Network& net, const TrainConfig& cfg, Index B) {
  double rec = 0, inp = 0;  // per column: recurrent and input GEMM flops of one evaluation
  for (const Edge& e : net.edges) (e.pre == Network::kInput ? inp : rec) += edge_flops(e);
  const double n_out = static_cast<double>(net.layers[static_cast<std::size_t>(net.out)].size);
  const double readout = 4.0 * static_cast<double>(net.classes) * n_out;  // logits and Wᵀ(p − y)
  const double T1 = static_cast<double>(cfg.free.max_steps), T2 = static_cast<double>(cfg.nudged.max_steps);
  double per_sample = inp + T1 * rec;  // the input projection and the free phase
  switch (cfg.algo) {
    case Algo::hep:
      if (cfg.N == 0) {
        per_sample += T2 * (2 * rec + readout);  // u and its tangent
      } else {
        const double real_points = cfg.N == 1 ? 1 : 1 + (cfg.N % 2 == 0);
        const double complex_points = cfg.N == 1 ? 0 : (cfg.N - 1) / 2;
        per_sample += T2 * (rec + readout) * (real_points + 2 * complex_points);
      }
      break;
    case Algo::rbp: per_sample += T2 * rec + readout; break;
    case Algo::bp: per_sample += T2 * rec + T2 * (2 * rec + inp) + readout; break;  // forward, backward, θ
    case Algo::online:  // no free phase: periods × N complex phase points of T2 steps
      per_sample += static_cast<double>(cfg.periods * cfg.N) * T2 * 2 * (rec + readout) - T1 * rec;
      break;
  }
  per_sample += inp + rec + readout;  // the parameter gradient's outer products and the readout
  double flops = per_sample * static_cast<double>(B);
  if (cfg.homeostasis > 0 && cfg.homeo.mode == HomeoMode::hutchinson)
    flops += 4 * rec * static_cast<double>(cfg.homeo.draws) *  // HE, HᵀE and two gradient GEMMs per edge
             static_cast<double>(cfg.homeo.probed(B));
  return flops;
}

}  // namespace hepsim
