#pragma once
// The MPI team (built when HEPSIM_MPI is on and MPI was found: HEPSIM_HAVE_MPI): one rank per
// process of `mpirun -np R hepsim train …`, over MPI_COMM_WORLD.
#include <memory>
#include <string>

#include "ep/parallel/team.hpp"

namespace hepsim {

// Whether this process was started by an MPI launcher (mpirun, srun): its environment says so.
bool launched_by_mpi();

// Whether this build has MPI.
bool mpi_available();

// The world's team when launched_by_mpi() (MPI initialised here, finalised by the destructor);
// nullptr otherwise. Throws std::runtime_error when launched by MPI in a build without it.
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
