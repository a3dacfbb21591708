#include "vmm/msi_routes.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "vmm/error.hpp"

namespace ember {

namespace {
// KVM allows GSIs up to KVM_MAX_IRQ_ROUTES (4096) on x86.
constexpr uint32_t kLastGsi = 4095;
}  // namespace

void KvmMsiRoutes::configure(uint32_t requester, uint16_t vector, uint64_t address, uint32_t data,
                             bool masked) {
  (void)masked;  // The transport only triggers unmasked vectors; the route may be set up ahead.
  std::lock_guard lock(mutex_);
  auto& route = routes_[uint64_t{requester} << 16 | vector];
  try {
    if (!route.eventfd) {
      if (next_gsi_ > kLastGsi) {
        spdlog::error("MSI-X: out of GSIs for requester {:#x} vector {}", requester, vector);
        return;
      }
      route.eventfd.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      if (!route.eventfd) throw system_error("eventfd for an MSI-X vector");
      route.gsi = next_gsi_++;
      vm_.set_msi_route(route.gsi, address, data);
      vm_.add_irqfd(route.eventfd.get(), route.gsi);
    } else if (!route.programmed || route.address != address || route.data != data) {
      // KVM_SET_GSI_ROUTING rewrites the whole table: only when the message really changed.
      vm_.set_msi_route(route.gsi, address, data);
    }
    route.address = address;
    route.data = data;
    route.programmed = true;
  } catch (const Error& error) {
    // A guest-programmed vector KVM refuses: the device's interrupts go nowhere, the VMM goes on.
    spdlog::error("MSI-X vector {} of requester {:#x}: {}", vector, requester, error.what());
  }
}

void KvmMsiRoutes::trigger(uint32_t requester, uint16_t vector) {
  int fd = -1;
  {
    std::lock_guard lock(mutex_);
    auto route = routes_.find(uint64_t{requester} << 16 | vector);
    if (route == routes_.end() || !route->second.programmed) return;
    fd = route->second.eventfd.get();
  }
  const uint64_t one = 1;
  [[maybe_unused]] auto written = ::write(fd, &one, sizeof(one));
}

}  // namespace ember
