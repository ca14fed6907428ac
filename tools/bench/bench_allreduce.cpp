// The gradient sum of data-parallel training (ep/parallel/team.hpp: reduce-scatter + all-gather
// in one pairwise order) timed with a real message size, for the cost model of README's
// "Training on several machines". Run under mpirun:
//   mpirun -np 2 build/tools/bench/bench_allreduce --params 7000000 --repeats 20
// prints one JSON object (rank 0): ranks, params, bytes per rank and step, the median and minimum
// seconds per sum, and the effective bandwidth 2 (R − 1)/R · 4P / median.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "ep/parallel/mpi_team.hpp"

int main(int argc, char** argv) {
  long params = 7'000'000, repeats = 20;
  int threads = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const long value = std::atol(argv[i + 1]);
    if (flag == "--params" && value > 0) params = value;
    else if (flag == "--repeats" && value > 0) repeats = value;
    else if (flag == "--threads" && value > 0) threads = static_cast<int>(value);
    else {
      std::fprintf(stderr, "bench_allreduce: %s: expected --params P, --repeats N, --threads T (positive)\n", argv[i]);
      return 2;
    }
  }
  hepsim::MpiSession mpi;
  const hepsim::Team& team = mpi.team();
  const hepsim::ChunkLayout layout = hepsim::chunk_layout(team, threads, 1 << 20);
  std::vector<hepsim::Vec<float>> local(static_cast<std::size_t>(std::max(1, layout.count)),
                                        hepsim::Vec<float>::Constant(params, 1.0f));
  hepsim::Vec<float> out(params);
  std::vector<double> seconds;
  for (long r = 0; r < repeats + 2; ++r) {
    for (auto& v : local) v.setConstant(1.0f);
    int token = 0;
    std::vector<int> all(static_cast<std::size_t>(team.size()));
    if (team.size() > 1) team.allgather(&token, sizeof token, all.data());  // start together
    const auto t0 = std::chrono::steady_clock::now();
    hepsim::sum_chunks<float>(team, layout, local, out, threads);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r >= 2) seconds.push_back(s);  // two warm-up rounds
  }
  if (out[0] != static_cast<float>(layout.chunks)) {
    std::fprintf(stderr, "bench_allreduce: wrong sum %g (expected %d)\n", static_cast<double>(out[0]), layout.chunks);
    return 1;
  }
  std::sort(seconds.begin(), seconds.end());
  const double median = seconds[seconds.size() / 2];
  const double R = team.size();
  const double moved = 2 * (R - 1) / R * 4.0 * static_cast<double>(params);
  if (team.rank() == 0)
    std::printf("{\"ranks\":%d,\"threads\":%d,\"params\":%ld,\"bytes_per_rank\":%.0f,\"median_s\":%.6g,\"min_s\":%.6g,"
                "\"effective_GB_per_s\":%.4g}\n",
                team.size(), threads, params, moved, median, seconds.front(), R > 1 ? moved / median / 1e9 : 0.0);
  return 0;
}
