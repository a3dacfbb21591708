#include "boot/pci_acpi.hpp"

#include "vmm/error.hpp"

namespace ember::boot {

namespace {

using aml::Bytes;

constexpr uint8_t kMcfgRevision = 1;
constexpr uint64_t kEcamBusSize = 1ull << 20;  // 32 devices x 8 functions x 4 KiB.
constexpr uint16_t kConfigPorts = 0xcf8;       // Mechanism #1, decoded by the bridge itself.
constexpr uint8_t kConfigPortCount = 8;

bool below_4g(uint64_t base, uint64_t size) {
  return size != 0 && base < (1ull << 32) && size <= (1ull << 32) - base;
}

}  // namespace

uint64_t pci_ecam_size(const PciAcpiConfig& config) {
  return (uint64_t{config.last_bus} + 1) * kEcamBusSize;
}

// MCFG (PCI Firmware 3.2 §4.1.2, Table 4-3): header, 8 reserved bytes, then per allocation the
// ECAM base (8), segment group (2), start bus (1), end bus (1) and 4 reserved bytes.
std::vector<std::byte> pci_mcfg_table(const PciAcpiConfig& config) {
  Bytes body;
  aml::append_u64(body, 0);  // Reserved.
  aml::append_u64(body, config.ecam_base);
  aml::append_u16(body, 0);  // Segment group 0.
  aml::append_u8(body, 0);   // Start bus.
  aml::append_u8(body, config.last_bus);
  aml::append_u32(body, 0);  // Reserved.
  return acpi_table("MCFG", kMcfgRevision, body);
}

aml::Bytes pci_host_bridge_device(const PciAcpiConfig& config) {
  using namespace aml;
  if (!below_4g(config.mmio_base, config.mmio_size))
    throw Error("pci acpi: the BAR window must be a non-empty range below 4 GiB");
  const auto mmio_end = static_cast<uint32_t>(config.mmio_base + config.mmio_size - 1);
  return device("PCI0", {
                            name("_HID", eisa_id("PNP0A08")),  // PCI Express root bridge,
                            name("_CID", eisa_id("PNP0A03")),  // compatible with a PCI root bridge.
                            name("_SEG", integer(0)),
                            name("_BBN", integer(0)),
                            name("_UID", integer(0)),
                            name("_CRS", resource_template({
                                             word_bus_number(0, config.last_bus),
                                             io(kConfigPorts, kConfigPorts, 1, kConfigPortCount),
                                             word_io(0x0000, kConfigPorts - 1),
                                             word_io(kConfigPorts + kConfigPortCount, 0xffff),
                                             dword_memory(static_cast<uint32_t>(config.mmio_base),
                                                          mmio_end, Cacheability::kNonCacheable),
                                         })),
                        });
}

aml::Bytes pci_ecam_reservation_device(const PciAcpiConfig& config) {
  using namespace aml;
  const uint64_t size = pci_ecam_size(config);
  if (!below_4g(config.ecam_base, size))
    throw Error("pci acpi: the ECAM window must lie below 4 GiB");
  return device("PRES",
                {
                    name("_HID", eisa_id("PNP0C02")),  // Motherboard resources.
                    name("_UID", string("PCI ECAM")),
                    name("_CRS", resource_template({
                                     memory32_fixed(true, static_cast<uint32_t>(config.ecam_base),
                                                    static_cast<uint32_t>(size)),
                                 })),
                });
}

void add_pci_to_acpi(AcpiConfig& acpi, const PciAcpiConfig& config) {
  acpi.extra_tables.push_back(pci_mcfg_table(config));
  acpi.extra_devices.push_back(pci_host_bridge_device(config));
  acpi.extra_devices.push_back(pci_ecam_reservation_device(config));
}

}  // namespace ember::boot
