#pragma once
// hepsim's Python module: the pieces each binding file registers (module.cpp assembles them).
//   hepsim.train/eval/relax/jacobian/gradcheck/bench   the subcommands (commands.cpp)
//   hepsim.sim       Model, parameters, relaxation                     (bind_sim.cpp)
//   hepsim.ep        free states, RBP, exact response, EP/hEP, BPTT   (bind_ep.cpp)
//   hepsim.jac       Jacobian metrics, homeostasis, spectrum          (bind_jacobian.cpp)
//   hepsim.datasets  the datasets as uint8 images, batches as the CLI feeds them (bind_datasets.cpp)
#include <string>

#include "tools/python/arrays.hpp"

namespace hepsim::python {

// A network with its physics (sim/field.hpp Model), as Python holds it.
struct PyModel {
  Model model;
  const Network& net() const { return model.net; }
};

// The relaxation settings every relaxing call takes as keyword arguments (with `prefix`), read
// from and removed from `kwargs`, validated (ValueError naming the keyword): solver, max_steps
// (default `default_steps`), tol, dt, report_tol, rtol, atol, anderson_m, stall_window,
// cycle_period, and the analog substrate's noise (σ of du = (M(u) − u) dt + σ dW), noise_seed,
// noise_key, tau ({layer: τ}, per-layer time constants of the ODE solvers) and max_time.
RelaxConfig relax_config(py::dict& kwargs, const std::string& prefix, long default_steps, const Network& net);
// An integer argument within [lo, hi] (ValueError naming it: not an integer, a bool, out of range).
long long integer_arg(const py::handle& value, const std::string& name, long long lo, long long hi);
// ValueError naming `model` when the network has convolutional edges (`what` assumes a
// state-independent Jacobian; `instead`: what a conv network uses).
void require_dense_model(const PyModel& model, const std::string& what, const std::string& instead);
// ValueError naming the first keyword left in `kwargs` (unknown to the call).
void no_more_kwargs(const py::dict& kwargs, const std::string& function);

// The one-hot targets of a batch, or zeros when `y` is None (classes x B).
template <class R>
Samples<R> targets_in(const py::handle& y, const Network& net, Index samples, Mat<R>& zeros);

void bind_commands(py::module_& m);
void bind_sim(py::module_& m);
void bind_ep(py::module_& m);
void bind_jacobian(py::module_& m);
void bind_datasets(py::module_& m);

}  // namespace hepsim::python
