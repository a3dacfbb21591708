// `ember run --net tap`: the host side of the guest's network. A tap of its own ("emb-<hint>"),
// persistent until this object is destroyed, holding the host end of a /30 picked from
// 172.30.0.0/16 that nothing on the host (no address, no route in any table) overlaps; the guest gets
// the other usable address and a default route via the host's. Two embers in one network namespace
// never pick the same /30: each holds an abstract unix socket named after its subnet while it runs
// (per network namespace, released by the kernel if ember dies). Forwarding or NAT beyond the host
// is not set up here.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "vmm/machine_config.hpp"
#include "vmm/unique_fd.hpp"

namespace ember {

struct RunNetwork {
  RunNetwork() = default;
  RunNetwork(const RunNetwork&) = delete;
  RunNetwork& operator=(const RunNetwork&) = delete;
  ~RunNetwork();  // Deletes the tap (its address and route go with it).

  std::string tap_name;
  std::array<uint8_t, 6> guest_mac{};
  std::string host_address;   // "172.30.N.1"
  std::string guest_address;  // "172.30.N.2/30"
  std::string guest_ip;       // "172.30.N.2"
  uint32_t mtu = 1500;

  // The launch spec's "network" object: {"interface": "eth0", "mac", "address": guest_address,
  // "gateway": host_address, "mtu", "dns"}; dns from the host's /etc/resolv.conf (guest_dns_servers).
  nlohmann::json spec() const;
  NetConfig net_config() const;  // For MachineConfig::nets: the tap and the guest's MAC.

  int tap_index = 0;  // The tap's ifindex (0: none created yet).
  UniqueFd claim;     // The abstract socket that reserves the subnet.
};

// Picks a free /30, creates the tap (name from name_hint, else ember's pid; at most 15 bytes),
// gives it host_address/30 and brings it up. Throws Error (one line): no CAP_NET_ADMIN, no free
// subnet, or the netlink request that failed.
std::unique_ptr<RunNetwork> create_run_network(const std::string& name_hint);

// The IPv4 nameservers of a resolv.conf text that are not loopback (a host's local resolver such as
// 127.0.0.53 is unreachable from the guest); `fallback` alone when there are none.
std::vector<std::string> guest_dns_servers(const std::string& resolv_conf, const std::string& fallback);

}  // namespace ember
