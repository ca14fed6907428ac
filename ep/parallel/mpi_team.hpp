#pragma once
// The MPI team (built when HEPSIM_MPI is on and MPI was found: HEPSIM_HAVE_MPI): one rank per
// process of `mpirun -np R hepsim train …`, over MPI_COMM_WORLD.
#include <memory>
#include <string>

#include "ep/parallel/team.hpp"

namespace hepsim {

// Whether this process was started by an MPI launcher (mpirun, srun): its environment says so.
bool launched_by_mpi();
// The number of processes the launcher started, as its environment says (1 when it does not).
long launched_ranks();
// This process's rank as the launcher's environment says (0 when it does not).
long launched_rank();

// Whether this build has MPI.
bool mpi_available();

// The world's team when launched_by_mpi() in a build with MPI (MPI initialised here, finalised by
// the destructor); otherwise a team of one (tools/cli.cpp refuses several launched ranks then).
class MpiSession {
 public:
  MpiSession();
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  // The team (solo_team() when not launched by MPI).
  const Team& team() const;
  bool active() const { return team_ != nullptr; }

 private:
  std::unique_ptr<Team> team_;
};

}  // namespace hepsim
