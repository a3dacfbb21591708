#include "devices/virtio/fs.hpp"

#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>

#include "vmm/error.hpp"

namespace ember::virtio {

using namespace fs;

namespace {

UniqueFd make_eventfd() {
  UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!fd) throw system_error("virtio-fs: eventfd");
  return fd;
}

void drain(int fd) {
  uint64_t value;
  while (::read(fd, &value, sizeof(value)) > 0) {
  }
}

// The host address of a ring Queue::activate() already checked lies in guest memory.
uint64_t ring_address(const GuestMemory& memory, uint64_t guest_address, uint64_t length) {
  const auto view = memory.slice(guest_address, length);
  if (!view) throw Error("virtio-fs: ring at " + std::to_string(guest_address) + " not in memory");
  return reinterpret_cast<uint64_t>(view->data());
}

}  // namespace

void fs::check_tag(std::string_view tag) {
  if (tag.empty()) throw Error("virtio-fs: the tag is empty");
  if (tag.size() > kTagSize)
    throw Error("virtio-fs: tag '" + std::string(tag) + "' is " + std::to_string(tag.size()) +
                " bytes (at most " + std::to_string(kTagSize) + ")");
  if (tag.find('\0') != std::string_view::npos) throw Error("virtio-fs: the tag contains a NUL");
}

VirtioFs::VirtioFs(std::unique_ptr<vhost_user::Frontend> backend, std::string tag)
    : backend_(std::move(backend)), tag_(std::move(tag)) {
  check_tag(tag_);
  if (!backend_) throw Error("virtio-fs '" + tag_ + "': no backend");
  backend_->initialize();
  if ((backend_->backend_features() & kFeatureVersion1) == 0)
    throw Error("virtio-fs '" + tag_ + "': the backend does not offer VIRTIO_F_VERSION_1");
  if (backend_->queue_limit() != 0 && backend_->queue_limit() < kQueueCount)
    throw Error("virtio-fs '" + tag_ + "': the backend serves " +
                std::to_string(backend_->queue_limit()) + " queues, " +
                std::to_string(kQueueCount) + " needed");
  features_ = backend_->backend_features() & kPassedFeatures;
}

VirtioFs::~VirtioFs() {
  // No GET_VRING_BASE: nothing will use the rings again, and closing the connection is what
  // tells virtiofsd to stop (ember kills it first when it shuts down; see VirtioDevices).
  std::lock_guard lock(mutex());
  unwatch();
  vrings_.clear();
}

void VirtioFs::read_config(uint64_t offset, std::span<uint8_t> data) const {
  std::array<uint8_t, kConfigSize> config{};
  std::copy(tag_.begin(), tag_.end(), config.begin() + kConfigTag);
  for (size_t i = 0; i < 4; ++i)
    config[kConfigNumRequestQueues + i] = static_cast<uint8_t>(kRequestQueues >> (8 * i));
  for (size_t i = 0; i < data.size(); ++i) {
    const uint64_t at = offset + i;
    data[i] = at >= offset && at < config.size() ? config[at] : 0;
  }
}

bool VirtioFs::activate(const GuestMemory& memory, std::span<Queue> queues, uint64_t features,
                        Interrupts& interrupts, EventLoop& loop) {
  if (!backend_->connected()) {
    spdlog::warn("virtio-fs '{}': the backend is gone; the device cannot start", tag_);
    return false;
  }
  interrupts_ = &interrupts;
  loop_ = &loop;
  needs_reset_ = false;
  try {
    start_backend(memory, queues, features);
    watch(loop);
  } catch (const Error& error) {
    spdlog::error("virtio-fs '{}': {}", tag_, error.what());
    reset();
    return false;
  }
  // Buffers the driver made available before DRIVER_OK had no one to kick.
  for (uint16_t index = 0; index < queues.size(); ++index) process_queue(index);
  return true;
}

void VirtioFs::start_backend(const GuestMemory& memory, std::span<Queue> queues,
                             uint64_t features) {
  if (queues.size() != kQueueCount)
    throw Error("virtio-fs: " + std::to_string(queues.size()) + " queues given");
  backend_->set_features(features);
  backend_->set_mem_table(memory);
  for (uint16_t index = 0; index < queues.size(); ++index) {
    const Queue& queue = queues[index];
    if (!queue.active()) continue;  // Not enabled by the driver: the backend never sees it.
    Vring vring{index, make_eventfd(), make_eventfd(), make_eventfd()};
    const uint64_t size = queue.size();
    const vhost_user::VringAddress address{
        .index = index,
        .flags = 0,
        .descriptor = ring_address(memory, queue.descriptor_table(), 16 * size),
        .used = ring_address(memory, queue.used_ring(), 6 + 8 * size),
        .available = ring_address(memory, queue.available_ring(), 6 + 2 * size),
        .log = 0};
    backend_->set_vring_num(index, queue.size());
    backend_->set_vring_base(index, 0);  // A freshly activated queue starts at index 0.
    backend_->set_vring_addr(address);
    backend_->set_vring_kick(index, vring.kick.get());
    backend_->set_vring_call(index, vring.call.get());
    backend_->set_vring_err(index, vring.error.get());
    vrings_.push_back(std::move(vring));
  }
  // With protocol features negotiated the rings start disabled (vhost-user.rst, "Ring states").
  if ((backend_->backend_features() & vhost_user::kFeatureProtocolFeatures) != 0)
    for (const Vring& vring : vrings_) backend_->set_vring_enable(vring.index, true);
}

void VirtioFs::watch(EventLoop& loop) {
  for (const Vring& vring : vrings_) {
    const uint16_t index = vring.index;
    loop.add(vring.call.get(), EPOLLIN, [this, index](uint32_t) {
      std::lock_guard lock(mutex());
      // Looked up again: the device may have been reset since the loop picked this handler.
      const auto found = std::find_if(vrings_.begin(), vrings_.end(),
                                      [index](const Vring& v) { return v.index == index; });
      if (found == vrings_.end()) return;
      drain(found->call.get());
      interrupts_->queue_used(index);
    });
    loop.add(vring.error.get(), EPOLLIN, [this, index](uint32_t) {
      std::lock_guard lock(mutex());
      const auto found = std::find_if(vrings_.begin(), vrings_.end(),
                                      [index](const Vring& v) { return v.index == index; });
      if (found == vrings_.end()) return;
      drain(found->error.get());
      backend_failed("the backend reported an error on queue " + std::to_string(index));
    });
  }
  // Only hang-ups: the socket carries nothing unasked, and replies are read synchronously.
  loop.add(backend_->socket_fd(), EPOLLRDHUP, [this](uint32_t) {
    std::lock_guard lock(mutex());
    if (socket_watched_) backend_failed("the backend closed the connection");
  });
  socket_watched_ = true;
}

void VirtioFs::unwatch() {
  if (loop_ == nullptr) return;
  for (const Vring& vring : vrings_) {
    loop_->remove(vring.call.get());
    loop_->remove(vring.error.get());
  }
  if (socket_watched_) loop_->remove(backend_->socket_fd());
  socket_watched_ = false;
}

void VirtioFs::process_queue(uint16_t queue) {
  if (loop_ == nullptr || needs_reset_) return;
  for (const Vring& vring : vrings_) {
    if (vring.index != queue) continue;
    const uint64_t one = 1;
    [[maybe_unused]] auto written = ::write(vring.kick.get(), &one, sizeof(one));
  }
}

void VirtioFs::backend_failed(const std::string& why) {
  if (needs_reset_) return;
  needs_reset_ = true;
  spdlog::warn("virtio-fs '{}': {}; device needs reset", tag_, why);
  if (socket_watched_) loop_->remove(backend_->socket_fd());
  socket_watched_ = false;
  backend_->disconnect();  // A backend that failed once is not trusted with the rings again.
  interrupts_->config_changed();
}

void VirtioFs::stop_backend() {
  const bool enabled = (backend_->backend_features() & vhost_user::kFeatureProtocolFeatures) != 0;
  for (const Vring& vring : vrings_) {
    if (!backend_->connected()) return;
    try {
      if (enabled) backend_->set_vring_enable(vring.index, false);
      backend_->get_vring_base(vring.index);
    } catch (const Error& error) {
      spdlog::warn("virtio-fs '{}': stopping queue {}: {}", tag_, vring.index, error.what());
    }
  }
}

void VirtioFs::reset() {
  unwatch();
  stop_backend();
  vrings_.clear();
  interrupts_ = nullptr;
  loop_ = nullptr;
  needs_reset_ = false;
}

}  // namespace ember::virtio
