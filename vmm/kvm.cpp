#include "vmm/kvm.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <sstream>

#include "vmm/error.hpp"
#include "vmm/kvm_abi.hpp"

namespace ember {

namespace {

constexpr int kKvmApiVersion = 12;  // Documentation/virt/kvm/api.rst §4.1

template <typename... Args>
int checked_ioctl(int fd, unsigned long request, const char* name, Args... args) {
  const int result = ::ioctl(fd, request, args...);
  if (result < 0) throw system_error(std::string("KVM ioctl ") + name);
  return result;
}

struct RequiredCapability {
  long capability;
  const char* name;
};
constexpr RequiredCapability kRequiredCapabilities[] = {
    {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"},
    {KVM_CAP_PIT2, "KVM_CAP_PIT2"},
    {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
    {KVM_CAP_IRQ_ROUTING, "KVM_CAP_IRQ_ROUTING"},
    {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"},
    {KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR"},
    {KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD"},
    {KVM_CAP_IRQFD, "KVM_CAP_IRQFD"},
};

// Guest-physical addresses KVM needs for its own use on Intel (below the IOAPIC, above guest RAM).
constexpr uint64_t kTssAddress = 0xfffbd000;
constexpr uint64_t kIdentityMapAddress = 0xfffbc000;

}  // namespace

Kvm::Kvm(const std::string& path) {
  fd_.reset(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd_) {
    const int error = errno;
    if (error == ENOENT)
      throw Error(path + ": no such device (is the kvm module loaded? is this a VM without nested "
                         "virtualization?)");
    if (error == EACCES || error == EPERM)
      throw Error(path + ": permission denied (run as root or join the kvm group)");
    throw system_error(path, error);
  }
  const int version = ::ioctl(fd_.get(), KVM_GET_API_VERSION, 0);
  if (version != kKvmApiVersion)
    throw Error(path + ": KVM API version " + std::to_string(version) + ", ember needs " +
                std::to_string(kKvmApiVersion));
  for (const auto& required : kRequiredCapabilities) {
    if (check_extension(required.capability) <= 0)
      throw Error(path + ": KVM lacks " + required.name);
  }
}

int Kvm::check_extension(long capability) const {
  return ::ioctl(fd_.get(), KVM_CHECK_EXTENSION, capability);
}

int Kvm::max_vcpus() const {
  const int max = check_extension(KVM_CAP_MAX_VCPUS);
  if (max > 0) return max;
  const int recommended = check_extension(KVM_CAP_NR_VCPUS);
  return recommended > 0 ? recommended : 4;  // api.rst: assume 4 when neither is reported.
}

size_t Kvm::vcpu_mmap_size() const {
  return static_cast<size_t>(
      checked_ioctl(fd_.get(), KVM_GET_VCPU_MMAP_SIZE, "KVM_GET_VCPU_MMAP_SIZE", 0));
}

std::vector<kvm_cpuid_entry2> Kvm::supported_cpuid() const {
  for (uint32_t capacity = 64; capacity <= 4096; capacity *= 2) {
    auto buffer = kvm_abi::pack(kvm_abi::CpuidHeader{capacity, 0},
                                std::span<const kvm_cpuid_entry2>(std::vector<kvm_cpuid_entry2>(capacity)));
    if (::ioctl(fd_.get(), kvm_abi::kGetSupportedCpuid, buffer.data()) == 0) {
      kvm_abi::CpuidHeader header;
      std::memcpy(&header, buffer.data(), sizeof(header));
      return kvm_abi::unpack<kvm_abi::CpuidHeader, kvm_cpuid_entry2>(buffer, header.nent);
    }
    if (errno != E2BIG) throw system_error("KVM ioctl KVM_GET_SUPPORTED_CPUID");
  }
  throw Error("KVM ioctl KVM_GET_SUPPORTED_CPUID: too many entries");
}

std::vector<uint32_t> Kvm::msr_index_list() const {
  kvm_abi::MsrListHeader probe{0};
  ::ioctl(fd_.get(), kvm_abi::kGetMsrIndexList, &probe);  // E2BIG, fills nmsrs.
  auto buffer = kvm_abi::pack(probe, std::span<const uint32_t>(std::vector<uint32_t>(probe.nmsrs)));
  checked_ioctl(fd_.get(), kvm_abi::kGetMsrIndexList, "KVM_GET_MSR_INDEX_LIST", buffer.data());
  return kvm_abi::unpack<kvm_abi::MsrListHeader, uint32_t>(buffer, probe.nmsrs);
}

Vm::Vm(const Kvm& kvm) : kvm_(kvm) {
  fd_.reset(checked_ioctl(kvm.fd(), KVM_CREATE_VM, "KVM_CREATE_VM", 0));
  checked_ioctl(fd_.get(), KVM_SET_TSS_ADDR, "KVM_SET_TSS_ADDR", kTssAddress);
  if (kvm.check_extension(KVM_CAP_SET_IDENTITY_MAP_ADDR) > 0) {
    uint64_t address = kIdentityMapAddress;
    checked_ioctl(fd_.get(), KVM_SET_IDENTITY_MAP_ADDR, "KVM_SET_IDENTITY_MAP_ADDR", &address);
  }
}

void Vm::set_user_memory_region(uint32_t slot, uint64_t guest_address, uint64_t size,
                                void* host) {
  kvm_userspace_memory_region region{};
  region.slot = slot;
  region.guest_phys_addr = guest_address;
  region.memory_size = size;
  region.userspace_addr = reinterpret_cast<uint64_t>(host);
  checked_ioctl(fd_.get(), KVM_SET_USER_MEMORY_REGION, "KVM_SET_USER_MEMORY_REGION", &region);
}

void Vm::create_irqchip_and_pit() {
  checked_ioctl(fd_.get(), KVM_CREATE_IRQCHIP, "KVM_CREATE_IRQCHIP", 0);
  kvm_pit_config pit{};
  pit.flags = KVM_PIT_SPEAKER_DUMMY;
  checked_ioctl(fd_.get(), KVM_CREATE_PIT2, "KVM_CREATE_PIT2", &pit);

  // A PC's routing: ISA IRQs 0-15 on the two 8259s (IRQ 2 is the cascade) and on IOAPIC pins
  // 0-23, except that GSI 0, where KVM's PIT fires, goes to IOAPIC pin 2, matching the MADT's
  // interrupt source override 0 -> 2 that Linux expects.
  constexpr uint32_t kIoapicPins = 24;
  std::lock_guard lock(routes_mutex_);
  auto add = [&](uint32_t gsi, uint32_t chip, uint32_t pin) {
    kvm_irq_routing_entry entry{};
    entry.gsi = gsi;
    entry.type = KVM_IRQ_ROUTING_IRQCHIP;
    entry.u.irqchip.irqchip = chip;
    entry.u.irqchip.pin = pin;
    routes_.push_back(entry);
  };
  for (uint32_t irq = 0; irq < 16; ++irq) {
    if (irq == 2) continue;
    add(irq, irq < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE, irq % 8);
  }
  for (uint32_t pin = 0; pin < kIoapicPins; ++pin) {
    if (pin == 0) {
      add(0, KVM_IRQCHIP_IOAPIC, 2);
    } else if (pin != 2) {
      add(pin, KVM_IRQCHIP_IOAPIC, pin);
    }
  }
  submit_routes();
}

void Vm::submit_routes() {
  auto buffer = kvm_abi::pack(kvm_abi::IrqRoutingHeader{static_cast<uint32_t>(routes_.size()), 0},
                              std::span<const kvm_irq_routing_entry>(routes_));
  checked_ioctl(fd_.get(), kvm_abi::kSetGsiRouting, "KVM_SET_GSI_ROUTING", buffer.data());
}

void Vm::set_msi_route(uint32_t gsi, uint64_t address, uint32_t data) {
  std::lock_guard lock(routes_mutex_);
  kvm_irq_routing_entry entry{};
  entry.gsi = gsi;
  entry.type = KVM_IRQ_ROUTING_MSI;
  entry.u.msi.address_lo = static_cast<uint32_t>(address);
  entry.u.msi.address_hi = static_cast<uint32_t>(address >> 32);
  entry.u.msi.data = data;
  auto existing = std::find_if(routes_.begin(), routes_.end(),
                               [&](const kvm_irq_routing_entry& route) { return route.gsi == gsi; });
  if (existing != routes_.end()) {
    *existing = entry;
  } else {
    routes_.push_back(entry);
  }
  submit_routes();
}

void Vm::add_irqfd(int eventfd, uint32_t gsi) {
  kvm_irqfd irqfd{};
  irqfd.fd = static_cast<uint32_t>(eventfd);
  irqfd.gsi = gsi;
  checked_ioctl(fd_.get(), KVM_IRQFD, "KVM_IRQFD", &irqfd);
}

namespace {
kvm_ioeventfd ioeventfd_request(int eventfd, uint64_t address, uint32_t length, bool pio,
                                std::optional<uint64_t> datamatch) {
  kvm_ioeventfd request{};
  request.fd = eventfd;
  request.addr = address;
  request.len = length;
  if (pio) request.flags |= KVM_IOEVENTFD_FLAG_PIO;
  if (datamatch) {
    request.flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
    request.datamatch = *datamatch;
  }
  return request;
}
}  // namespace

void Vm::add_ioeventfd(int eventfd, uint64_t address, uint32_t length, bool pio,
                       std::optional<uint64_t> datamatch) {
  auto request = ioeventfd_request(eventfd, address, length, pio, datamatch);
  checked_ioctl(fd_.get(), KVM_IOEVENTFD, "KVM_IOEVENTFD", &request);
}

void Vm::remove_ioeventfd(int eventfd, uint64_t address, uint32_t length, bool pio,
                          std::optional<uint64_t> datamatch) {
  auto request = ioeventfd_request(eventfd, address, length, pio, datamatch);
  request.flags |= KVM_IOEVENTFD_FLAG_DEASSIGN;
  checked_ioctl(fd_.get(), KVM_IOEVENTFD, "KVM_IOEVENTFD deassign", &request);
}

void Vm::set_irq_line(uint32_t gsi, bool level) {
  kvm_irq_level irq{};
  irq.irq = gsi;
  irq.level = level ? 1 : 0;
  checked_ioctl(fd_.get(), KVM_IRQ_LINE, "KVM_IRQ_LINE", &irq);
}

Vcpu::Vcpu(const Vm& vm, uint32_t index) : index_(index) {
  fd_.reset(checked_ioctl(vm.fd(), KVM_CREATE_VCPU, "KVM_CREATE_VCPU", index));
  run_size_ = vm.kvm().vcpu_mmap_size();
  void* mapping = ::mmap(nullptr, run_size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
  if (mapping == MAP_FAILED) throw system_error("mmap of vCPU " + std::to_string(index) + " state");
  run_ = static_cast<kvm_run*>(mapping);
}

Vcpu::~Vcpu() {
  if (run_ != nullptr) ::munmap(run_, run_size_);
}

kvm_regs Vcpu::regs() const {
  kvm_regs regs{};
  checked_ioctl(fd_.get(), KVM_GET_REGS, "KVM_GET_REGS", &regs);
  return regs;
}

void Vcpu::set_regs(const kvm_regs& regs) {
  checked_ioctl(fd_.get(), KVM_SET_REGS, "KVM_SET_REGS", &regs);
}

kvm_sregs Vcpu::sregs() const {
  kvm_sregs sregs{};
  checked_ioctl(fd_.get(), KVM_GET_SREGS, "KVM_GET_SREGS", &sregs);
  return sregs;
}

void Vcpu::set_sregs(const kvm_sregs& sregs) {
  checked_ioctl(fd_.get(), KVM_SET_SREGS, "KVM_SET_SREGS", &sregs);
}

void Vcpu::set_fpu(const kvm_fpu& fpu) {
  checked_ioctl(fd_.get(), KVM_SET_FPU, "KVM_SET_FPU", &fpu);
}

void Vcpu::set_cpuid(std::span<const kvm_cpuid_entry2> entries) {
  auto buffer =
      kvm_abi::pack(kvm_abi::CpuidHeader{static_cast<uint32_t>(entries.size()), 0}, entries);
  checked_ioctl(fd_.get(), kvm_abi::kSetCpuid2, "KVM_SET_CPUID2", buffer.data());
}

void Vcpu::set_msrs(std::span<const kvm_msr_entry> entries) {
  auto buffer =
      kvm_abi::pack(kvm_abi::MsrsHeader{static_cast<uint32_t>(entries.size()), 0}, entries);
  const int written = checked_ioctl(fd_.get(), kvm_abi::kSetMsrs, "KVM_SET_MSRS", buffer.data());
  if (static_cast<size_t>(written) != entries.size()) {
    std::ostringstream message;
    message << "KVM ioctl KVM_SET_MSRS: KVM refused MSR 0x" << std::hex
            << entries[static_cast<size_t>(written)].index;
    throw Error(message.str());
  }
}

kvm_lapic_state Vcpu::lapic() const {
  kvm_lapic_state state{};
  checked_ioctl(fd_.get(), KVM_GET_LAPIC, "KVM_GET_LAPIC", &state);
  return state;
}

void Vcpu::set_lapic(const kvm_lapic_state& state) {
  checked_ioctl(fd_.get(), KVM_SET_LAPIC, "KVM_SET_LAPIC", &state);
}

uint32_t Vcpu::tsc_khz() const {
  const int khz = ::ioctl(fd_.get(), KVM_GET_TSC_KHZ, 0);
  return khz > 0 ? static_cast<uint32_t>(khz) : 0;
}

bool Vcpu::translate(uint64_t linear, uint64_t& physical) const {
  kvm_translation translation{};
  translation.linear_address = linear;
  if (::ioctl(fd_.get(), KVM_TRANSLATE, &translation) != 0 || !translation.valid) return false;
  physical = translation.physical_address;
  return true;
}

}  // namespace ember
