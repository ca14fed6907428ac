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

// The relaxation settings every relaxing call takes as keyword arguments (RelaxConfig).
struct RelaxArgs {
  std::string solver = "map";
  long max_steps = 150;
  double tol = 0, dt = 0, report_tol = 1e-3, rtol = 1e-6, atol = 1e-8;
  int anderson_m = 5;
  double stall_window = RelaxConfig{}.stall_window;
  int cycle_period = RelaxConfig{}.cycle_period;
  // The validated RelaxConfig (ValueError naming the keyword otherwise).
  RelaxConfig config(const std::string& prefix = "") const;
};
// Registers RelaxArgs' keywords (with `prefix`, e.g. "nudged_") on a pybind11 function's
// argument list is not possible generically: the functions take **kwargs and read them here,
// refusing unknown keywords. `kwargs` keys consumed are removed.
RelaxArgs relax_args(py::dict& kwargs, const std::string& prefix, long default_steps);
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
