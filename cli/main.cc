#include <iostream>

#include "cli/uwctl.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return uw::cli::Run(args, std::cout, std::cerr);
}
