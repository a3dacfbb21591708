#include "virtio_checks.hpp"

#include "checks.hpp"
#include "cmdline.hpp"
#include "hostile.hpp"
#include "pci.hpp"
#include "print.hpp"
#include "timing.hpp"
#include "virtio.hpp"
#include "virtio_bench.hpp"
#include "virtio_blk.hpp"
#include "virtio_console.hpp"
#include "virtio_fs.hpp"
#include "virtio_mmio.hpp"
#include "virtio_net.hpp"
#include "virtio_pci.hpp"
#include "virtio_rng.hpp"

namespace guest {
namespace {

constexpr uint32_t kMaxDevices = 16;
constexpr uint64_t kDefaultBlkSeed = 7;

virtio::Device devices[kMaxDevices];

}  // namespace

void run_virtio_checks(const BootInfo& boot, uint32_t bsp_apic_id) {
    Str which;
    if (!cmdline_value(boot.cmdline, "test.virtio", which)) return;
    uint64_t start = read_tsc();
    bool use_pci = which.equals("pci");
    if (!use_pci && !which.equals("mmio")) {
        check_fail("virtio", "test.virtio=%.*s: expected pci or mmio", static_cast<int>(which.size), which.data);
        return;
    }
    const char* check_name = use_pci ? "virtio_pci" : "virtio_mmio";
    if (!virtio::dma_init(boot)) {
        check_fail(check_name, "no 48 MiB of RAM after the image for DMA buffers");
        return;
    }
    virtio::set_interrupt_destination(bsp_apic_id);
    uint32_t count = 0;
    if (use_pci) {
        if (!pci::init(boot)) {
            check_fail(check_name, "no PCI configuration space (no MCFG, nothing at 0xcf8)");
            return;
        }
        count = virtio::discover_pci(devices, kMaxDevices);
    } else {
        count = virtio::discover_mmio(boot, devices, kMaxDevices);
    }
    if (count == 0) {
        check_fail(check_name, "no virtio devices found");
        return;
    }
    uint32_t per_type[5] = {};
    for (uint32_t i = 0; i < count; ++i) {
        if (devices[i].device_id < 5) ++per_type[devices[i].device_id];
    }
    check_ok(check_name, "devices=%u net=%u blk=%u console=%u rng=%u%s%s time_us=%lu", count,
             per_type[virtio::kDeviceNet], per_type[virtio::kDeviceBlock], per_type[virtio::kDeviceConsole],
             per_type[virtio::kDeviceEntropy], use_pci ? " config=" : "", use_pci ? pci::access_method() : "",
             elapsed_us(start));
    if (virtio::bench_requested(boot)) {  // test.bench=...: benchmarks instead of the device checks
        virtio::run_bench(boot, devices, count);
        return;
    }
    if (cmdline_flag(boot.cmdline, "test.hostile")) {  // attacks instead of the device checks (hostile.hpp)
        run_hostile(boot, devices, count, use_pci);
        return;
    }

    uint64_t seed = kDefaultBlkSeed;
    cmdline_number(boot.cmdline, "test.blk.seed", seed);
    const uint32_t order[] = {virtio::kDeviceEntropy, virtio::kDeviceBlock, virtio::kDeviceConsole, virtio::kDeviceNet,
                              virtio::kDeviceFs};
    uint32_t fs_devices = 0;
    for (uint32_t type : order) {
        uint32_t number = 0;
        for (uint32_t i = 0; i < count; ++i) {
            virtio::Device& d = devices[i];
            if (d.device_id != type) continue;
            if (type == virtio::kDeviceEntropy) virtio::check_rng(d, number);
            if (type == virtio::kDeviceBlock) virtio::check_blk(d, number, seed);
            if (type == virtio::kDeviceConsole) virtio::check_console(d, number, boot);
            if (type == virtio::kDeviceNet) virtio::check_net(d, number, boot);
            if (type == virtio::kDeviceFs) virtio::check_fs(d, fs_devices++, boot);
            ++number;
        }
    }
    if (fs_devices == 0 && virtio::fs_requested(boot)) check_fail("fs_tag", "test.fs.tag= given, no virtio-fs device");
    print("ember-test-guest: virtio checks took %lu us\n", elapsed_us(start));
}

}  // namespace guest
