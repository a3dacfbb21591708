#include "vmm/cli.hpp"

int main(int argc, char** argv) { return ember::run_cli(argc, argv); }
