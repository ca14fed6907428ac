// Data-parallel training over MPI (issue 14): `mpirun -np R hepsim train … --threads t` is
// bit-identical to one process with --threads R·t (the same chunks, summed in one pairwise order);
// checkpoints do not depend on R; a SIGTERM to one rank stops every rank at the same step with a
// checkpoint from which the resumed run ends bit-identical; a SIGKILL to one rank ends the job with
// a non-zero exit and leaves the last checkpoint valid. The ranks are oversubscribed on this
// machine's cores, as root where CI runs as root. A build without MPI skips these (ctest reports
// the test "mpi: skipped" as skipped, tests/CMakeLists.txt).
#include <doctest/doctest.h>

#ifdef HEPSIM_HAVE_MPI

#include "run_helpers.hpp"

using namespace hepsim;
using namespace hepsim::test;
using hepsim::tools::TrainLog;

namespace {

std::string mpirun(int ranks) {
  // Root allowed (CI runs as root), more ranks than cores, and shared memory without the kernel's
  // cross-memory attach, which containers often forbid (it fails there with "Read -1, expected").
  return "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 "
         "OMPI_MCA_btl_vader_single_copy_mechanism=none mpirun -np " + std::to_string(ranks) + " ";
}

RunResult run_mpi(int ranks, const std::string& args, const TempDir& tmp) {
  return run_hepsim(args, tmp, mpirun(ranks));
}

std::size_t occurrences(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (std::size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// 600 samples in batches of 30 (20 steps an epoch), homeostasis, AdamW with a cosine schedule,
// augmentation: every part of a step that a layout could change.
std::string mpi_flags(const TempDir& data, const std::string& arch) {
  return "--dataset fmnist --data-dir " + data.str() + " --arch " + arch +
         " --N 2 --beta 0.1 --T1 40 --T2 8 --batch-size 30 --probe-size 10 --eval-chunk 40 --quiet --epochs 2"
         " --optimizer adamw --lr 0.003 --schedule cosine --homeostasis 0.5 --augment on";
}

}  // namespace

TEST_CASE("mpi: -np 2 --threads 1 is bit-identical to one process with --threads 2, -np 2 --threads 2 to --threads 4") {
  TempDir data, tmp;
  write_tiny_fmnist(data.str(), 600, 100, 71);
  const std::string f = mpi_flags(data, one_layer_arch(tmp, "a.json", 32));
  for (const auto& [ranks, threads] : std::vector<std::pair<int, int>>{{2, 1}, {2, 2}}) {
    CAPTURE(ranks);
    CAPTURE(threads);
    const std::string one = tmp.file("one" + std::to_string(threads)), many = tmp.file("many" + std::to_string(threads));
    const RunResult a = run_hepsim("train " + f + " --threads " + std::to_string(ranks * threads) + " --out " + one, tmp);
    REQUIRE_MESSAGE(a.code == 0, a.err);
    const RunResult b = run_mpi(ranks, "train " + f + " --threads " + std::to_string(threads) + " --out " + many, tmp);
    REQUIRE_MESSAGE(b.code == 0, b.err);
    CHECK(b.err.find("hepsim") == std::string::npos);  // --quiet: no progress from any rank
    CHECK(b.err.find("epoch") == std::string::npos);
    CHECK(b.json().at("test_acc") == a.json().at("test_acc"));
    check_identical(one, many);
  }
  // A layout of another chunk count is a different (equally valid) rounding: not identical.
  const RunResult c = run_hepsim("train " + f + " --threads 1 --out " + tmp.file("t1"), tmp);
  REQUIRE(c.code == 0);
  CHECK(tools::read_checkpoint(tmp.file("t1/checkpoint.h5")).theta != tools::read_checkpoint(tmp.file("one1/checkpoint.h5")).theta);
}

TEST_CASE("mpi: a conv network on 2 ranks is bit-identical to one process with 2 threads") {
  TempDir data, tmp;
  write_tiny_fmnist(data.str(), 120, 40, 72);
  const std::string conv = tmp.file("conv.json");
  std::ofstream(conv) << R"({"name": "c", "layers": [{"name": "c1", "shape": [3, 14, 14]}, {"name": "out", "size": "classes"}],
    "edges": [{"pre": "in", "post": "c1", "type": "conv"}, {"pre": "c1", "post": "out"},
              {"pre": "out", "post": "c1", "type": "dense_nobias"}]})";
  const std::string f = "--dataset fmnist --data-dir " + data.str() + " --arch " + conv +
                        " --activation dsilu --angle 30 --T1 15 --T2 5 --batch-size 20 --probe-size 4 --eval-chunk 15"
                        " --epochs 1 --quiet --homeostasis 0.5 --homeo-samples 4";
  REQUIRE(run_hepsim("train " + f + " --threads 2 --out " + tmp.file("one"), tmp).code == 0);
  const RunResult b = run_mpi(2, "train " + f + " --threads 1 --out " + tmp.file("many"), tmp);
  REQUIRE_MESSAGE(b.code == 0, b.err);
  check_identical(tmp.file("one"), tmp.file("many"));
  // A probe batch smaller than the chunks: the metrics' adjoints leave rank 1 without a chunk.
  REQUIRE(run_hepsim("train " + f + " --probe-size 1 --threads 4 --out " + tmp.file("one4"), tmp).code == 0);
  const RunResult c = run_mpi(2, "train " + f + " --probe-size 1 --threads 2 --out " + tmp.file("many4"), tmp);
  REQUIRE_MESSAGE(c.code == 0, c.err);
  check_identical(tmp.file("one4"), tmp.file("many4"));
}

TEST_CASE("mpi: a checkpoint of 2 ranks resumes in one process, and one of 1 process on 2 ranks, continuing exactly") {
  TempDir data, tmp;
  write_tiny_fmnist(data.str(), 600, 100, 73);
  // A constant learning rate: a cosine schedule's horizon would change with --epochs.
  const std::string f = mpi_flags(data, one_layer_arch(tmp, "a.json", 32)) + " --schedule constant";
  REQUIRE(run_hepsim("train " + f + " --threads 2 --out " + tmp.file("whole"), tmp).code == 0);
  // Epoch 1 on 2 ranks, epoch 2 in one process; and the other way round.
  const RunResult a = run_mpi(2, "train " + f + " --threads 1 --epochs 1 --out " + tmp.file("r21"), tmp);
  REQUIRE_MESSAGE(a.code == 0, a.err);
  const RunResult a2 = run_hepsim("train --resume " + tmp.file("r21") + " --epochs 2 --threads 2 --quiet", tmp);
  REQUIRE_MESSAGE(a2.code == 0, a2.err);
  check_identical(tmp.file("whole"), tmp.file("r21"));
  REQUIRE(run_hepsim("train " + f + " --threads 2 --epochs 1 --out " + tmp.file("r12"), tmp).code == 0);
  const RunResult b2 = run_mpi(2, "train --resume " + tmp.file("r12") + " --epochs 2 --threads 1 --quiet", tmp);
  REQUIRE_MESSAGE(b2.code == 0, b2.err);
  check_identical(tmp.file("whole"), tmp.file("r12"));
}

TEST_CASE("mpi: SIGTERM to one rank inside an epoch stops every rank with a checkpoint and exit 3, the resumed run is bit-identical") {
  TempDir data, tmp;
  write_tiny_fmnist(data.str(), 1200, 100, 74);
  const std::string f = mpi_flags(data, one_layer_arch(tmp, "a.json", 64)) + " --T1 80";
  REQUIRE(run_hepsim("train " + f + " --threads 2 --out " + tmp.file("whole"), tmp).code == 0);
  const std::string run = tmp.file("stopped");
  const pid_t pid = spawn_hepsim("train " + f + " --threads 1 --checkpoint-every 2steps --out " + run, tmp, mpirun(2));
  REQUIRE(wait_for_mid_epoch_checkpoint(run));
  // The rank of the highest process id: rank 1 or 0, either must stop both.
  const int found = std::system(("pkill -TERM -n -f '[t]ools/hepsim train .*" + run + "'").c_str());
  REQUIRE(found == 0);
  const int code = wait_code(pid);
  const std::string err = slurp(tmp.file("bg.err"));
  CAPTURE(err);
  CHECK(code == 3);
  CHECK(occurrences(err, "stopped by SIGTERM") == 1);
  const nlohmann::json stops = TrainLog::read_stops(run + "/log.h5");
  REQUIRE(stops.size() == 1);
  const RunResult resumed = run_mpi(2, "train --resume " + run + " --threads 1 --quiet", tmp);
  REQUIRE_MESSAGE(resumed.code == 0, resumed.err);
  check_identical(tmp.file("whole"), run);
}

TEST_CASE("mpi: SIGKILL to one rank ends the job non-zero naming it, the last checkpoint is valid and resumes") {
  TempDir data, tmp;
  write_tiny_fmnist(data.str(), 1200, 100, 75);
  const std::string f = mpi_flags(data, one_layer_arch(tmp, "a.json", 64)) + " --T1 80";
  REQUIRE(run_hepsim("train " + f + " --threads 2 --out " + tmp.file("whole"), tmp).code == 0);
  const std::string run = tmp.file("killed");
  const pid_t pid = spawn_hepsim("train " + f + " --threads 1 --checkpoint-every 3steps --out " + run, tmp, mpirun(2));
  REQUIRE(wait_for_mid_epoch_checkpoint(run));
  REQUIRE(std::system(("pkill -KILL -n -f '[t]ools/hepsim train .*" + run + "'").c_str()) == 0);
  const int code = wait_code(pid);
  const std::string err = slurp(tmp.file("bg.err"));
  CAPTURE(err);
  CHECK(code != 0);
  CHECK(err.find("exited on signal 9") != std::string::npos);  // mpirun names the rank
  const tools::Checkpoint ck = tools::read_checkpoint(run + "/checkpoint.h5");
  CHECK((ck.mid_epoch ? ck.position.batch % 3 == 0 : ck.epoch >= 1));
  const RunResult resumed = run_hepsim("train --resume " + run + " --threads 2 --quiet", tmp);
  REQUIRE_MESSAGE(resumed.code == 0, resumed.err);
  check_identical(tmp.file("whole"), run);
}

TEST_CASE("mpi: refusals are printed once, by the rank that found them, and every rank exits 2") {
  TempDir data, tmp;
  write_tiny_fmnist(data.str(), 60, 20, 76);
  const std::string arch = small_arch(tmp);
  const RunResult a = run_mpi(2, "train " + flags(data, arch) + " --tol 1e-4 --warm-start on --out " + tmp.file("w"), tmp);
  CHECK(a.code == 2);
  CHECK(occurrences(a.err, "--warm-start: is not available with more than one MPI rank") == 1);
  CHECK(a.out.empty());
  const RunResult b = run_mpi(2, "relax --arch " + arch + " --samples 2", tmp);
  CHECK(b.code == 2);
  CHECK(occurrences(b.err, "mpirun: only hepsim train runs on several ranks") == 1);
  const RunResult c = run_mpi(2, "train " + flags(data, arch) + " --lr nan --out " + tmp.file("n"), tmp);
  CHECK(c.code == 2);
  CHECK(occurrences(c.err, "--lr") == 1);
  CHECK_FALSE(std::filesystem::exists(tmp.file("w")));
  // Ranks that run different commands (mpirun's MPMD form): refused before the first step.
  const std::string t = std::string(HEPSIM_BINARY) + " train " + flags(data, arch) + " --epochs 1 --out " + tmp.file("d");
  const std::string err = tmp.file("mpmd.err");
  const int status = std::system((mpirun(1) + t + " --threads 1 : -np 1 " + t + " --threads 2 >/dev/null 2>" + err).c_str());
  CHECK(WEXITSTATUS(status) == 2);
  CHECK(occurrences(slurp(err), "mpirun: rank 1 has another configuration, thread count or dataset than rank 0") == 1);
  CHECK_FALSE(std::filesystem::exists(tmp.file("d")));
}

#endif  // HEPSIM_HAVE_MPI
