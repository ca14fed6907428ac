#pragma once
// hepsim's Python module (tools/python): NumPy arrays in and out, and the native calls.
//
// Layout: hepsim's matrices are column-major with one column per sample (features x samples);
// NumPy users put samples along the first axis. A C-contiguous (samples, features) array is that
// column-major matrix byte for byte, so inputs are mapped without a copy and results are handed
// to NumPy without one (the array owns the Eigen matrix through a capsule). Only an input in
// another layout (a transposed or strided view) is copied once.
// Types are never converted silently: an array of another dtype or shape than the call needs is
// refused with a ValueError naming the argument (a float64 batch for float32 parameters would be
// a different computation, an int array a different input).
#include <pybind11/complex.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <complex>
#include <optional>
#include <csignal>
#include <string>
#include <type_traits>
#include <utility>

#include "sim/sim.hpp"

namespace hepsim::python {

namespace py = pybind11;

// Raised as ValueError (InputError's translation) naming the argument.
[[noreturn]] void refuse(const std::string& argument, const std::string& message);

// "float32", "int64", … of an array.
std::string dtype_name(const py::array& a);

template <class S>
bool has_dtype(const py::handle& a) {
  return py::isinstance<py::array_t<S>>(a);
}

template <class S>
const char* dtype_of() {
  if constexpr (std::is_same_v<S, float>) return "float32";
  else if constexpr (std::is_same_v<S, double>) return "float64";
  else if constexpr (std::is_same_v<S, std::complex<float>>) return "complex64";
  else return "complex128";
}

// An input matrix: a (samples, features) array (any trailing shape whose product is `features`,
// e.g. images (N, C, H, W)) seen as the features x samples column-major matrix. `samples` ≥ 0
// requires that many rows. Holds the array (or its one contiguous copy) alive.
template <class S>
struct Samples {
  py::array keep;
  Eigen::Map<const Mat<S>> map{nullptr, 0, 0};
  Index count() const { return map.cols(); }
};
template <class S>
Samples<S> samples_in(const py::handle& obj, Index features, const std::string& name, Index samples = -1) {
  if (!py::isinstance<py::array>(obj)) refuse(name, "must be a NumPy array of dtype " + std::string(dtype_of<S>()));
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (!has_dtype<S>(a))
    refuse(name, "has dtype " + dtype_name(a) + "; this call needs " + dtype_of<S>() +
                     " (the parameters' precision; convert it with .astype)");
  if (a.ndim() < 2) refuse(name, "must have samples along its first axis: shape (samples, " + std::to_string(features) + ")");
  Index width = 1;
  for (py::ssize_t d = 1; d < a.ndim(); ++d) width *= static_cast<Index>(a.shape(d));
  const Index n = static_cast<Index>(a.shape(0));
  if (n == 0) refuse(name, "has no samples");
  auto shape_text = [&] {
    std::string t = "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) t += (d ? ", " : "") + std::to_string(a.shape(d));
    return t + (a.ndim() == 1 ? ",)" : ")");
  };
  if (width != features)
    refuse(name, "has shape " + shape_text() + ": each sample must have " + std::to_string(features) + " values, not " +
                     std::to_string(width));
  if (samples >= 0 && n != samples)
    refuse(name, "has " + std::to_string(n) + " samples; the other arrays of this call have " + std::to_string(samples));
  if (!(a.flags() & py::array::c_style)) a = py::array_t<S, py::array::c_style | py::array::forcecast>(a);
  Samples<S> s;
  s.keep = a;
  new (&s.map) Eigen::Map<const Mat<S>>(static_cast<const S*>(a.data()), features, n);
  return s;
}

// A result matrix (features x samples) as a (samples, features) array owning it: no copy.
template <class S>
py::array samples_out(Mat<S>&& m) {
  auto* owned = new Mat<S>(std::move(m));
  py::capsule base(owned, [](void* p) { delete static_cast<Mat<S>*>(p); });
  const auto rows = static_cast<py::ssize_t>(owned->rows()), cols = static_cast<py::ssize_t>(owned->cols());
  return py::array(py::dtype::of<S>(), {cols, rows},
                   {rows * static_cast<py::ssize_t>(sizeof(S)), static_cast<py::ssize_t>(sizeof(S))}, owned->data(),
                   base);
}

// A vector as a 1-D array owning it (the parameters θ: a later call that gets this array back
// uses the vector in place, see Theta).
constexpr const char* kVectorCapsule = "hepsim.vector";
template <class S>
py::array vector_out(Vec<S>&& v) {
  auto* owned = new Vec<S>(std::move(v));
  py::capsule base(owned, kVectorCapsule, [](PyObject* cap) {
    delete static_cast<Vec<S>*>(PyCapsule_GetPointer(cap, kVectorCapsule));
  });
  return py::array(py::dtype::of<S>(), {static_cast<py::ssize_t>(owned->size())}, {static_cast<py::ssize_t>(sizeof(S))},
                   owned->data(), base);
}
template <class S>
py::array vector_out(const std::vector<S>& v) {
  return vector_out(Vec<S>(Eigen::Map<const Vec<S>>(v.data(), static_cast<Index>(v.size()))));
}

// The parameters θ of a network with `n` of them, as the library takes them (const Vec<R>&): the
// vector itself when the array is one this module made (model.init), else one copy.
template <class R>
class Theta {
 public:
  Theta(const py::handle& obj, Index n) {
    if (!has_dtype<R>(obj)) refuse("theta", std::string("must be a NumPy array of dtype ") + dtype_of<R>());
    py::array a = py::reinterpret_borrow<py::array>(obj);
    if (a.ndim() != 1 || static_cast<Index>(a.shape(0)) != n)
      refuse("theta", "must be a 1-D array of the network's " + std::to_string(n) + " parameters");
    const py::handle base = a.base();
    const char* capsule = base && PyCapsule_CheckExact(base.ptr()) ? PyCapsule_GetName(base.ptr()) : nullptr;
    if (capsule && std::string(capsule) == kVectorCapsule && a.strides(0) == static_cast<py::ssize_t>(sizeof(R))) {
      auto* v = static_cast<Vec<R>*>(PyCapsule_GetPointer(base.ptr(), kVectorCapsule));
      if (v && v->size() == n && static_cast<const void*>(v->data()) == a.data()) {
        ref_ = v;
        keep_ = a;
        return;
      }
    }
    const auto c = py::array_t<R, py::array::c_style | py::array::forcecast>(a);
    copy_ = Eigen::Map<const Vec<R>>(c.data(), n);
    ref_ = &copy_;
  }
  Theta(const Theta&) = delete;  // ref_ may point into this object
  Theta& operator=(const Theta&) = delete;
  const Vec<R>& operator*() const { return *ref_; }

 private:
  py::array keep_;
  Vec<R> copy_;
  const Vec<R>* ref_ = nullptr;
};

// Whether θ is float64 (true) or float32 (false); anything else is refused.
bool theta_is_double(const py::handle& theta);

// f(R{}) with R = θ's precision (a generic lambda taking `auto r`, using R = decltype(r)).
template <class F>
py::object by_precision(const py::handle& theta, F&& f) {
  if (theta_is_double(theta)) return f(double{});
  return f(float{});
}

// For the duration of a call into the library: the GIL released (other Python threads run) and,
// for a call from the main thread while Python's own SIGINT handler is in place (not SIG_IGN or a
// user's handler), Ctrl-C turned into hepsim's interrupt flag (sim/interrupt.hpp), which the
// relaxations and the estimators' iterations poll; the interrupt becomes KeyboardInterrupt. Calls
// nested in it (a library call from train's on_epoch) and calls from other threads keep that
// handler; a Ctrl-C interrupts every hepsim call running at the time.
class NativeCall {
 public:
  NativeCall();  // with the GIL held
  ~NativeCall();
  NativeCall(const NativeCall&) = delete;
  NativeCall& operator=(const NativeCall&) = delete;
  // Throws Interrupted when Ctrl-C arrived during the call (after it returned normally).
  void finish() const;

 private:
  bool installed_ = false;
  std::optional<py::gil_scoped_release> release_;
};
// Records the interpreter's main thread (at import).
void note_main_thread();

// An InputError of the library that names a CLI flag ("--weight-bits: …") named as the keyword
// argument of the Python call ("weight_bits: …").
[[noreturn]] void rethrow_as_keyword(const InputError& e);

// Runs a library call f() inside a NativeCall (GIL released, interruptible) and returns its
// result; the flags its errors name become keywords (the subcommands keep the CLI's flags).
template <class F>
auto native(F&& f) {
  NativeCall call;
  try {
    if constexpr (std::is_void_v<decltype(f())>) {
      f();
      call.finish();
    } else {
      auto r = f();
      call.finish();
      return r;
    }
  } catch (const InputError& e) {
    rethrow_as_keyword(e);
  }
}

// Statuses as a list of their names ("converged", "max_steps", …).
py::list status_list(const std::vector<RelaxStatus>& status);

}  // namespace hepsim::python
