// The hepsim executable: see tools/cli.hpp.
#include "tools/cli.hpp"

int main(int argc, char** argv) { return hepsim::tools::run(argc, argv); }
