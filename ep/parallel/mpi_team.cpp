#include "ep/parallel/mpi_team.hpp"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <stdexcept>
#include <vector>

#ifdef HEPSIM_HAVE_MPI
#include <mpi.h>
#endif

namespace hepsim {

bool launched_by_mpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "MPI_LOCALNRANKS"})
    if (std::getenv(var) != nullptr) return true;
  return false;
}

long launched_ranks() {
  long ranks = 1;
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS", "MPI_LOCALNRANKS"})
    if (const char* v = std::getenv(var)) ranks = std::max(ranks, std::atol(v));
  return ranks;
}

long launched_rank() {
  for (const char* var : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"})
    if (const char* v = std::getenv(var)) return std::atol(v);
  return 0;
}

#ifdef HEPSIM_HAVE_MPI

bool mpi_available() { return true; }

namespace {

int to_int(std::size_t n) {
  if (n > static_cast<std::size_t>(std::numeric_limits<int>::max()))
    throw std::runtime_error("the gradient sum's MPI buffers exceed 2 GB (each rank sends one gradient per chunk "
                             "when --threads is not a power of two: use a power of two)");
  return static_cast<int>(n);
}

std::vector<int> ints(const std::vector<std::size_t>& v) {
  std::vector<int> out;
  for (std::size_t x : v) out.push_back(to_int(x));
  return out;
}

// The offsets of consecutive blocks; MPI's are int: a buffer beyond 2 GB cannot be addressed.
std::vector<int> displacements(const std::vector<int>& counts) {
  std::vector<int> d(counts.size(), 0);
  long long at = 0;
  for (std::size_t i = 1; i < counts.size(); ++i) {
    at += counts[i - 1];
    d[i] = to_int(static_cast<std::size_t>(at));
  }
  return d;
}

void check(int rc, const char* what) {
  if (rc != MPI_SUCCESS) throw std::runtime_error(std::string("MPI ") + what + " failed");
}

class MpiTeam final : public Team {
 public:
  MpiTeam() {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void allgather(const void* send, std::size_t bytes, void* recv) const override {
    check(MPI_Allgather(send, to_int(bytes), MPI_BYTE, recv, to_int(bytes), MPI_BYTE, MPI_COMM_WORLD), "allgather");
  }
  void allgatherv(const void* send, void* recv, const std::vector<std::size_t>& counts) const override {
    const std::vector<int> c = ints(counts), d = displacements(c);
    check(MPI_Allgatherv(send, c[static_cast<std::size_t>(rank_)], MPI_BYTE, recv, c.data(), d.data(), MPI_BYTE,
                         MPI_COMM_WORLD),
          "allgatherv");
  }
  void alltoallv(const void* send, const std::vector<std::size_t>& send_counts, void* recv,
                 const std::vector<std::size_t>& recv_counts) const override {
    const std::vector<int> sc = ints(send_counts), rc = ints(recv_counts);
    const std::vector<int> sd = displacements(sc), rd = displacements(rc);
    check(MPI_Alltoallv(send, sc.data(), sd.data(), MPI_BYTE, recv, rc.data(), rd.data(), MPI_BYTE, MPI_COMM_WORLD),
          "alltoallv");
  }
  [[noreturn]] void abort(int code) const override {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
  }

 private:
  int rank_ = 0, size_ = 1;
};

}  // namespace

MpiSession::MpiSession() {
  if (!launched_by_mpi()) return;
  int provided = 0;
  // Only the main thread calls MPI (OpenMP threads compute between the collectives).
  if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
    throw std::runtime_error("MPI_Init_thread failed");
  team_ = std::make_unique<MpiTeam>();
}

MpiSession::~MpiSession() {
  if (team_) MPI_Finalize();
}

#else

bool mpi_available() { return false; }

MpiSession::MpiSession() {}
MpiSession::~MpiSession() = default;

#endif

const Team& MpiSession::team() const { return team_ ? *team_ : solo_team(); }

}  // namespace hepsim
