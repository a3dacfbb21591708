// The operations each virtio transport provides to virtio.cpp (virtio_pci.cpp: §4.1, virtio_mmio.cpp: §4.2).
#pragma once

#include "virtio.hpp"

namespace guest::virtio {

namespace pci_transport {
void reset(Device& device);
uint8_t status(Device& device);
void set_status(Device& device, uint8_t status);
uint64_t device_features(Device& device);
void set_driver_features(Device& device, uint64_t features);
uint8_t config_generation(Device& device);
uint16_t queue_max(Device& device, uint16_t index);
// Programs size, ring addresses and an MSI-X vector (when one is free), then enables the queue.
bool queue_setup(Device& device, Virtqueue& queue, const char*& error);
void notify(Virtqueue& queue);
}  // namespace pci_transport

namespace mmio_transport {
void reset(Device& device);
uint8_t status(Device& device);
void set_status(Device& device, uint8_t status);
uint64_t device_features(Device& device);
void set_driver_features(Device& device, uint64_t features);
uint8_t config_generation(Device& device);
uint16_t queue_max(Device& device, uint16_t index);
bool queue_setup(Device& device, Virtqueue& queue, const char*& error);
void notify(Virtqueue& queue);
// Reads InterruptStatus and writes it to InterruptACK (§4.2.2); returns the status.
uint32_t acknowledge(Device& device);
}  // namespace mmio_transport

}  // namespace guest::virtio
