// `hepsim bench` end to end on a generated dataset: a tiny run succeeds, and bad input gives one
// line naming the flag with exit code 2.
#include <doctest/doctest.h>

#include "cli_helpers.hpp"

using namespace hepsim::test;

namespace {

// The fewest steps bench allows; the GEMM peak still measures for 0.5 s.
const std::string kTiny = " --T1 5 --T2 2 --batches 2 --warmup 0 --repeats 1 --threads 1";

}  // namespace

TEST_CASE("hepsim bench: a tiny run on a generated dataset") {
  TempDir tmp;
  write_tiny_fmnist(tmp.str(), 20, 5, 3);
  const RunResult r = run_hepsim("bench --data-dir " + tmp.str() + " --batch-size 5" + kTiny, tmp);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto j = r.json();
  CHECK(j["batch_size"] == 5);
  CHECK(j["train_rates"].size() == 1);
  CHECK(j["train_median"].get<double>() > 0);
}

TEST_CASE("hepsim bench: bad input gives one line naming the flag, exit code 2") {
  TempDir tmp;
  write_tiny_fmnist(tmp.str(), 20, 5, 3);
  const std::string b = "bench --data-dir " + tmp.str();
  const std::vector<BadInput> cases = {
      // Fewer training samples than one batch: the step index divided by zero (SIGFPE).
      {b + " --batch-size 50" + kTiny, "--batch-size"},
      {b + " --batch-size 10 --train-limit 9" + kTiny, "--train-limit 9"},
      {b + " --batch-size 5 --angle -720" + kTiny, "--angle"},
      {b + " --batch-size 5 --seed -1" + kTiny, "--seed"},
  };
  check_bad_input(cases, tmp);
}
