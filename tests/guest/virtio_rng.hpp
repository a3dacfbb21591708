// virtio entropy device (virtio 1.2 §5.4): one request queue of device-writable buffers.
#pragma once

#include "virtio.hpp"

namespace guest::virtio {

// Reads 64 bytes twice; CHECK rng ok when both are non-zero and differ.
void check_rng(Device& device, uint32_t number);

}  // namespace guest::virtio
