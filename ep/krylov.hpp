#pragma once
// hepsim/ep — restarted GMRES for a batch of independent linear systems A x_b = b_b (one per
// column), matrix-free: the operator is applied to all columns at once (one VJP or JVP of the
// network per iteration, like one step of the fixed-point iterations), the Arnoldi processes, Givens
// rotations and small least-squares problems are per column. Unlike the iteration x ← (I − A) x + b,
// which needs the spectral radius of I − A below 1, full GMRES solves any nonsingular system within
// n iterations; restarted every `restart` iterations it usually converges far sooner, also at states
// the map does not contract to, but it can stagnate. A column that is not finite, or whose
// residual's 2-norm five cycles together did not lower by 1 % (stagnation, rounding at a tolerance
// below the precision's reach, a singular system), is given up and reported as not converged rather
// than run to the end of the budget. Saad & Schultz (1986); modified Gram–Schmidt orthogonalisation.
#include <functional>

#include "sim/types.hpp"

namespace hepsim {

struct KrylovConfig {
  long max_products = 20000;  // operator applications (all columns together) at most, the final residual's included
  double tol = 1e-10;         // per column: stop when ‖b − A x‖∞ ≤ tol (the true residual, checked at restarts)
  int restart = 40;           // Krylov dimension per cycle (memory: restart + 1 matrices of the batch's size)
};

template <class R>
struct KrylovResult {
  Mat<R> x;                 // the solutions (from x = 0)
  long products = 0;        // operator applications
  double residual = 0;      // max over columns of ‖b − A x‖∞ at the end (+inf for a non-finite column, whose x is NaN)
  Vec<double> column_residual;  // each column's ‖b − A x‖∞ at the end (+inf where not finite)
  bool converged = false;   // every column reached tol
};

// apply(V, AV) writes A V (every column) into AV, which has V's size.
template <class R>
KrylovResult<R> gmres(const std::function<void(const Mat<R>&, Mat<R>&)>& apply, const Mat<R>& b,
                      const KrylovConfig& cfg);

}  // namespace hepsim
