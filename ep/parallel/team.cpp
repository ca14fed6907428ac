#include "ep/parallel/team.hpp"

#include <omp.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdexcept>

namespace hepsim {

void Team::allgather(const void* send, std::size_t bytes, void* recv) const {
  if (size() != 1) throw std::logic_error("Team::allgather: no collectives on a team of " + std::to_string(size()));
  if (bytes > 0) std::memcpy(recv, send, bytes);
}

void Team::allgatherv(const void* send, void* recv, const std::vector<std::size_t>& counts) const {
  allgather(send, counts.at(0), recv);
}

void Team::alltoallv(const void* send, const std::vector<std::size_t>& send_counts, void* recv,
                     const std::vector<std::size_t>&) const {
  allgather(send, send_counts.at(0), recv);
}

void Team::abort(int code) const { std::_Exit(code); }

const Team& solo_team() {
  static const Team solo;
  return solo;
}

int ChunkLayout::count_of(int rank) const {
  const long begin = static_cast<long>(rank) * per_rank;
  return static_cast<int>(std::max(0L, std::min<long>(per_rank, chunks - begin)));
}

ChunkLayout chunk_layout(const Team& team, int threads, Index columns) {
  ChunkLayout l;
  l.per_rank = std::max(1, threads);
  l.chunks = static_cast<int>(std::max<Index>(1, std::min<Index>(static_cast<Index>(l.per_rank) * team.size(), columns)));
  l.first = team.rank() * l.per_rank;
  l.count = l.count_of(team.rank());
  return l;
}

namespace {

// body(part, begin, length) over `parts` contiguous ranges of n on as many threads.
template <class F>
void parallel_ranges(Index n, int parts, F&& body) {
  parts = static_cast<int>(std::max<Index>(1, std::min<Index>(parts, n)));
  std::exception_ptr error;
#pragma omp parallel for schedule(static, 1) num_threads(parts)
  for (int p = 0; p < parts; ++p) {
    try {
      const Index b = n * p / parts, e = n * (p + 1) / parts;
      body(p, b, e - b);
    } catch (...) {
#pragma omp critical(hepsim_parallel_ranges)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

bool power_of_two(int t) { return t > 0 && (t & (t - 1)) == 0; }

}  // namespace

template <class R>
void sum_chunks(const Team& team, const ChunkLayout& layout, std::vector<Vec<R>>& local, Vec<R>& out, int threads) {
  const int R_ = team.size(), t = layout.per_rank, C = layout.chunks;
  const Index P = out.size();
  // A rank's own chunks form one subtree of the pairwise order when t is a power of two.
  const bool subtree = power_of_two(t);
  const auto items_of = [&](int rank) { return layout.count_of(rank) == 0 ? 0 : subtree ? 1 : layout.count_of(rank); };
  if (subtree && layout.count > 1)
    parallel_ranges(P, threads, [&](int, Index b, Index n) {
      pairwise_sum(layout.count, 1, [&](int i) { return local[static_cast<std::size_t>(i)].segment(b, n); });
    });
  if (R_ == 1) {
    if (subtree) {
      out = local[0];
    } else {
      parallel_ranges(P, threads, [&](int, Index b, Index n) {
        pairwise_sum(layout.count, 1, [&](int i) { return local[static_cast<std::size_t>(i)].segment(b, n); });
        out.segment(b, n) = local[0].segment(b, n);
      });
    }
    return;
  }
  // Reduce-scatter: rank q sums the segment [P q / R, P (q+1) / R) over every rank's items.
  const auto seg_begin = [&](int q) { return P * q / R_; };
  const auto seg_len = [&](int q) { return seg_begin(q + 1) - seg_begin(q); };
  const int mine = items_of(team.rank());
  std::vector<R> send;
  std::vector<std::size_t> send_counts(static_cast<std::size_t>(R_)), recv_counts(static_cast<std::size_t>(R_));
  send.reserve(static_cast<std::size_t>(P * mine));
  for (int q = 0; q < R_; ++q) {
    for (int j = 0; j < mine; ++j) {
      const Vec<R>& v = local[static_cast<std::size_t>(j)];
      send.insert(send.end(), v.data() + seg_begin(q), v.data() + seg_begin(q) + seg_len(q));
    }
    send_counts[static_cast<std::size_t>(q)] = static_cast<std::size_t>(mine * seg_len(q)) * sizeof(R);
  }
  const Index my_len = seg_len(team.rank());
  std::size_t total = 0;
  for (int r = 0; r < R_; ++r) {
    recv_counts[static_cast<std::size_t>(r)] = static_cast<std::size_t>(items_of(r) * my_len) * sizeof(R);
    total += static_cast<std::size_t>(items_of(r));
  }
  std::vector<R> recv(total * static_cast<std::size_t>(my_len));
  team.alltoallv(send.data(), send_counts, recv.data(), recv_counts);
  // Position of each received item in the chunk order: rank r's items at r·t (+ j without subtrees).
  std::vector<R*> at(static_cast<std::size_t>(C), nullptr);
  std::size_t k = 0;
  for (int r = 0; r < R_; ++r)
    for (int j = 0; j < items_of(r); ++j, ++k) at[static_cast<std::size_t>(r * t + j)] = recv.data() + k * static_cast<std::size_t>(my_len);
  Vec<R> segment(my_len);
  parallel_ranges(my_len, threads, [&](int, Index b, Index n) {
    pairwise_sum(C, subtree ? t : 1, [&](int i) { return Eigen::Map<Vec<R>>(at[static_cast<std::size_t>(i)] + b, n); });
    segment.segment(b, n) = Eigen::Map<const Vec<R>>(at[0] + b, n);
  });
  std::vector<std::size_t> counts(static_cast<std::size_t>(R_));
  for (int q = 0; q < R_; ++q) counts[static_cast<std::size_t>(q)] = static_cast<std::size_t>(seg_len(q)) * sizeof(R);
  team.allgatherv(segment.data(), out.data(), counts);
}

template void sum_chunks<float>(const Team&, const ChunkLayout&, std::vector<Vec<float>>&, Vec<float>&, int);
template void sum_chunks<double>(const Team&, const ChunkLayout&, std::vector<Vec<double>>&, Vec<double>&, int);

}  // namespace hepsim
