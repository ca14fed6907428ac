#pragma once
// hepsim/sim — reproducible matrix products across machines. Eigen sizes the blocks of its
// matrix products from the cache sizes it detects, and the blocking decides the order of the sums:
// the same run rounded differently on two machines of the same instruction set with other caches
// (θ after one epoch of a small run differed in its hash). Fixing the sizes Eigen assumes makes a
// build's results the same on every machine it runs on. Every entry point calls this first: the
// CLI, the Python module and the test suite.
namespace hepsim {

void fix_product_blocking();

}  // namespace hepsim
