// Runs ember-init's network set-up (guest/init/network.cpp) as a program, for guest_network_test.py to
// call inside a network namespace of its own:
//   guest_network_probe ROOT HOSTNAME INTERFACE MAC ADDRESS/PREFIX GATEWAY MTU [DNS...]
//   guest_network_probe --no-network ROOT HOSTNAME
// The first brings up lo, configures the interface and writes ROOT/etc/{resolv.conf,hosts}; the
// second only writes ROOT/etc/hosts. Prints "ok", or the error and exits 1.
#include <cstdio>
#include <exception>
#include <string>

#include "guest/init/network.hpp"

int main(int argc, char** argv) {
  try {
    if (argc == 4 && std::string(argv[1]) == "--no-network") {
      ember::init::write_resolver_files(argv[2], nullptr, argv[3]);
    } else if (argc >= 8) {
      ember::init::NetworkSpec spec;
      spec.interface_name = argv[3];
      spec.mac = argv[4];
      spec.address = argv[5];
      spec.gateway = argv[6];
      spec.mtu = static_cast<uint32_t>(std::stoul(argv[7]));
      for (int i = 8; i < argc; ++i) spec.dns.push_back(argv[i]);
      ember::init::bring_up_loopback();
      ember::init::configure_network(spec);
      ember::init::write_resolver_files(argv[1], &spec, argv[2]);
    } else {
      std::fprintf(stderr, "usage: guest_network_probe ROOT HOSTNAME INTERFACE MAC ADDRESS GATEWAY MTU [DNS...]\n"
                           "       guest_network_probe --no-network ROOT HOSTNAME\n");
      return 2;
    }
  } catch (const std::exception& error) {
    std::printf("%s\n", error.what());
    return 1;
  }
  std::printf("ok\n");
  return 0;
}
