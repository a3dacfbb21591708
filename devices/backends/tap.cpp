#include "devices/backends/tap.hpp"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <utility>

#include "vmm/error.hpp"

namespace ember {
namespace {

Error tap_error(const std::string& name, const std::string& what, int error_number = errno) {
  return system_error("tap " + (name.empty() ? std::string("(new)") : name) + ": " + what,
                      error_number);
}

ifreq interface_request(const std::string& name) {
  ifreq request{};
  std::memcpy(request.ifr_name, name.data(), name.size());  // Length checked by the caller.
  return request;
}

}  // namespace

Tap::Tap(const std::string& name) : name_(name) {
  if (name.size() >= IFNAMSIZ)
    throw Error("tap " + name + ": name longer than " + std::to_string(IFNAMSIZ - 1) + " bytes");
  fd_.reset(::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
  if (!fd_) throw tap_error(name, "cannot open /dev/net/tun");

  unsigned features = 0;
  if (::ioctl(fd_.get(), TUNGETFEATURES, &features) == 0 && !(features & IFF_VNET_HDR))
    throw Error("tap " + name + ": the kernel's tun driver lacks IFF_VNET_HDR");

  ifreq request = interface_request(name.empty() ? std::string("tap%d") : name);
  request.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  if (::ioctl(fd_.get(), TUNSETIFF, &request) != 0) throw tap_error(name, "TUNSETIFF");
  name_.assign(request.ifr_name, ::strnlen(request.ifr_name, IFNAMSIZ));

  int header_bytes = static_cast<int>(kVnetHeaderBytes);
  if (::ioctl(fd_.get(), TUNSETVNETHDRSZ, &header_bytes) != 0)
    throw tap_error(name_, "TUNSETVNETHDRSZ");
  set_offload(0);
}

std::unique_ptr<Tap> Tap::from_fd(UniqueFd fd, std::string name) {
  if (!fd) throw Error("tap " + name + ": invalid fd");
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) != 0)
    throw tap_error(name, "cannot make the fd non-blocking");
  return std::unique_ptr<Tap>(new Tap(std::move(fd), std::move(name), false));
}

void Tap::set_offload(unsigned flags) {
  if (is_tap_ && ::ioctl(fd_.get(), TUNSETOFFLOAD, static_cast<unsigned long>(flags)) != 0)
    throw tap_error(name_, "TUNSETOFFLOAD " + std::to_string(flags));
  offload_ = flags;
}

void Tap::set_up() {
  if (!is_tap_) return;
  UniqueFd control(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!control) throw tap_error(name_, "socket for SIOCSIFFLAGS");
  ifreq request = interface_request(name_);
  if (::ioctl(control.get(), SIOCGIFFLAGS, &request) != 0) throw tap_error(name_, "SIOCGIFFLAGS");
  request.ifr_flags = static_cast<short>(request.ifr_flags | IFF_UP);
  if (::ioctl(control.get(), SIOCSIFFLAGS, &request) != 0) throw tap_error(name_, "SIOCSIFFLAGS");
}

ssize_t Tap::read(std::span<std::byte> frame) {
  for (;;) {
    const ssize_t count = ::read(fd_.get(), frame.data(), frame.size());
    if (count >= 0) return count;
    if (errno != EINTR) return -errno;
  }
}

ssize_t Tap::writev(std::span<const iovec> buffers) {
  if (buffers.size() > IOV_MAX) return -EMSGSIZE;
  for (;;) {
    const ssize_t count = ::writev(fd_.get(), buffers.data(), static_cast<int>(buffers.size()));
    if (count >= 0) return count;
    if (errno != EINTR) return -errno;
  }
}

}  // namespace ember
