// ember-init's network set-up (PID 1 in the guest): the loopback interface, the virtio-net interface
// the launch spec's "network" object names (by MAC), and the container's /etc/resolv.conf and
// /etc/hosts. Plain ioctls on an AF_INET socket, so it needs nothing beyond libc and Linux headers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ember::init {

// The launch spec's "network" object (guest/protocol/protocol.hpp).
struct NetworkSpec {
  std::string interface_name;  // What the interface is called once configured ("eth0").
  std::string mac;             // "52:54:00:12:34:56": picks the interface.
  std::string address;         // "a.b.c.d/prefix"
  std::string gateway;         // Default route via this; empty: no default route.
  uint32_t mtu = 1500;
  std::vector<std::string> dns;
};

// lo up with 127.0.0.1/8. Throws std::runtime_error naming what failed.
void bring_up_loopback();

// The interface whose MAC equals spec.mac (else the one named spec.interface_name): renamed to
// spec.interface_name if it is called otherwise, its MTU and address set, brought up, and a default
// route added via spec.gateway. Throws std::runtime_error naming the interface and what failed.
void configure_network(const NetworkSpec& spec);

// Writes <root>/etc/resolv.conf (spec's dns servers; left alone when spec is null) and <root>/etc/hosts
// (localhost for 127.0.0.1 and ::1, and the hostname for the guest's address, or for 127.0.1.1
// without a network). Each file is written beside its target and renamed over it, so a symlink
// there is replaced rather than followed. Throws std::runtime_error naming the file.
void write_resolver_files(const std::string& root, const NetworkSpec* spec, const std::string& hostname);

}  // namespace ember::init
