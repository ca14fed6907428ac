#pragma once
// Data parallelism (issue 14): the processes that train one run together, and the reproducible
// sums the training loop needs from them.
//
// A global batch of B columns is split into C = min(ranks × threads, B) contiguous chunks (chunk c:
// columns ⌊Bc/C⌋ … ⌊B(c+1)/C⌋ − 1); rank r relaxes chunks r·t … r·t + t − 1 with its t threads.
// The chunks' gradients are summed in one fixed pairwise order of the chunk index (at strides
// s = 1, 2, 4, …: chunk i adds chunk i + s for every i that is a multiple of 2s), whatever the
// ranks and threads that computed them: `mpirun -np R … --threads t` gives the same bits as one
// process with --threads R·t. Across ranks the sum is a reduce-scatter (every rank sums one
// segment of the parameters over all chunks, in that order) and an all-gather: 2P(R−1)/R values
// per rank and step when t is a power of two (the rank's own chunks are one subtree, summed
// locally first), (t+1)P(R−1)/R otherwise.
//
// One process is a team of one (solo_team(); no MPI); the MPI team is ep/parallel/mpi_team.hpp.
#include <algorithm>
#include <cstddef>
#include <vector>

#include "sim/types.hpp"

namespace hepsim {

class Team {
 public:
  virtual ~Team() = default;
  virtual int rank() const { return 0; }
  virtual int size() const { return 1; }
  // recv (size() × bytes): every rank's `bytes` bytes of `send`, in rank order.
  virtual void allgather(const void* send, std::size_t bytes, void* recv) const;
  // recv: every rank's block (counts[r] bytes, r's own is `send`), concatenated in rank order.
  virtual void allgatherv(const void* send, void* recv, const std::vector<std::size_t>& counts) const;
  // Sends send_counts[q] bytes (consecutive in `send`) to rank q and receives recv_counts[r]
  // bytes from rank r (consecutive in `recv`, in rank order).
  virtual void alltoallv(const void* send, const std::vector<std::size_t>& send_counts, void* recv,
                         const std::vector<std::size_t>& recv_counts) const;
  // Ends every rank's process at once with `code` (a failure one rank cannot share).
  [[noreturn]] virtual void abort(int code) const;
};

const Team& solo_team();

// The chunks of a global batch of `columns` columns on `team` with `threads` threads per rank.
struct ChunkLayout {
  int chunks = 1;     // C
  int per_rank = 1;   // t
  int first = 0;      // this rank's first chunk
  int count = 1;      // this rank's chunks (0 when C ≤ r·t)
  // The first column of `chunk` (chunks past the last begin at the end: a rank without chunks).
  Index begin(Index columns, int chunk) const { return columns * std::min(chunk, chunks) / chunks; }
  // Chunks [r·t, r·t + t) ∩ [0, C) of rank r.
  int count_of(int rank) const;
};
ChunkLayout chunk_layout(const Team& team, int threads, Index columns);

// out = the sum of all ranks' chunk vectors in the pairwise order above. `local[j]` is this
// rank's chunk layout.first + j (j < layout.count; all of one size P); it is used as scratch.
// `threads` split the local work by parameter range.
template <class R>
void sum_chunks(const Team& team, const ChunkLayout& layout, std::vector<Vec<R>>& local, Vec<R>& out, int threads);

// The pairwise sum in place over positions 0 … n−1 of `at` (at(i) a vector segment), starting at
// stride `stride` (positions not multiple of it hold nothing): the result is at(0).
template <class Seg>
void pairwise_sum(int n, int stride, Seg&& at) {
  for (int s = stride; s < n; s *= 2)
    for (int i = 0; i + s < n; i += 2 * s) at(i) += at(i + s);
}

}  // namespace hepsim
