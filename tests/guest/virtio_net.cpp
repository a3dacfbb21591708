#include "virtio_net.hpp"

#include "base.hpp"
#include "checks.hpp"
#include "cmdline.hpp"
#include "print.hpp"
#include "timing.hpp"

namespace guest::virtio {
namespace {

// Feature bits (§5.1.3): only MAC and STATUS; no offloads, no MRG_RXBUF (so every receive buffer holds a
// whole frame: §5.1.6.3.1).
constexpr uint64_t kFeatureMac = uint64_t{1} << 5;
constexpr uint64_t kFeatureStatus = uint64_t{1} << 16;
constexpr uint32_t kConfigMac = 0;
constexpr uint32_t kConfigStatus = 6;
constexpr uint16_t kStatusLinkUp = 1;
constexpr uint16_t kReceiveQueue = 0;   // receiveq1 (§5.1.2)
constexpr uint16_t kTransmitQueue = 1;  // transmitq1
constexpr uint32_t kHeaderSize = 12;    // struct virtio_net_hdr with num_buffers (VERSION_1, §5.1.6)
constexpr uint32_t kMaxFrame = 1514;    // Ethernet without FCS
constexpr uint32_t kBufferSize = kHeaderSize + 1526;  // 1526: a frame with a VLAN tag and slack
constexpr uint16_t kRxBuffers = 256;
constexpr uint16_t kTxBuffers = 128;

// Ethernet, ARP (RFC 826), IPv4 (RFC 791), ICMP (RFC 792), UDP (RFC 768).
constexpr uint16_t kEtherTypeIpv4 = 0x0800;
constexpr uint16_t kEtherTypeArp = 0x0806;
constexpr uint32_t kEthernetHeader = 14;
constexpr uint16_t kArpRequest = 1;
constexpr uint16_t kArpReply = 2;
constexpr uint32_t kArpSize = 28;
constexpr uint8_t kProtocolIcmp = 1;
constexpr uint8_t kProtocolUdp = 17;
constexpr uint32_t kIpHeader = 20;
constexpr uint32_t kUdpHeader = 8;
constexpr uint8_t kIcmpEchoReply = 0;
constexpr uint8_t kIcmpEchoRequest = 8;
constexpr uint8_t kTtl = 64;

constexpr uint16_t kPortDone = 7777;
constexpr uint16_t kPortTxTarget = 7778;
constexpr uint16_t kPortRxCount = 7779;
constexpr uint16_t kPortSource = 7000;
constexpr uint32_t kPayload = 1400;
constexpr uint64_t kDefaultServeMs = 10000;
constexpr uint64_t kArpTimeoutMs = 3000;
constexpr uint64_t kArpRetryMs = 500;
constexpr uint64_t kTxTimeoutMs = 5000;
constexpr uint32_t kKickBatch = 16;

uint16_t load16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
uint32_t load32(const uint8_t* p) { return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3]; }
void store16(uint8_t* p, uint16_t v) {
    p[0] = static_cast<uint8_t>(v >> 8);
    p[1] = static_cast<uint8_t>(v);
}
void store32(uint8_t* p, uint32_t v) {
    store16(p, static_cast<uint16_t>(v >> 16));
    store16(p + 2, static_cast<uint16_t>(v));
}

// RFC 1071 ones'-complement sum.
uint32_t sum_words(const uint8_t* data, uint32_t length, uint32_t sum = 0) {
    for (uint32_t i = 0; i + 1 < length; i += 2) sum += load16(data + i);
    if (length & 1) sum += uint32_t{data[length - 1]} << 8;
    return sum;
}
uint16_t fold(uint32_t sum) {
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<uint16_t>(~sum);
}

struct Stats {
    uint64_t frames = 0, arp_replies = 0, icmp_replies = 0, ignored = 0;
    uint64_t udp_datagrams = 0, udp_bytes = 0, udp_bad = 0;
    uint64_t tx_datagrams = 0, tx_bytes = 0, tx_frames = 0;
    bool done = false;
};

class Nic {
public:
    Nic(Device& d, Virtqueue& rx, Virtqueue& tx) : d_(d), rx_(rx), tx_(tx) {}

    bool init(uint32_t ip, uint32_t peer, const char*& error) {
        ip_ = ip;
        peer_ip_ = peer;
        rx_buffers_ = static_cast<uint8_t*>(dma_alloc(uint64_t{kBufferSize} * kRxBuffers, 4096));
        tx_buffers_ = static_cast<uint8_t*>(dma_alloc(uint64_t{kBufferSize} * kTxBuffers, 4096));
        if (rx_buffers_ == nullptr || tx_buffers_ == nullptr) {
            error = "out of DMA memory";
            return false;
        }
        for (uint16_t i = 0; i < kTxBuffers; ++i) free_tx_[free_tx_count_++] = tx_buffers_ + uint64_t{i} * kBufferSize;
        uint16_t posted = 0;
        for (uint16_t i = 0; i < kRxBuffers && i < rx_.size; ++i) {
            uint8_t* buffer = rx_buffers_ + uint64_t{i} * kBufferSize;
            Buffer b{reinterpret_cast<uint64_t>(buffer), kBufferSize, true};
            if (submit(rx_, &b, 1, buffer)) ++posted;
        }
        if (posted == 0) {
            error = "no receive buffers posted";
            return false;
        }
        if (d_.features & kFeatureMac) {
            for (uint32_t i = 0; i < 6; ++i) mac_[i] = config8(d_, kConfigMac + i);
        } else {
            const uint8_t fallback[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
            memcpy(mac_, fallback, 6);
        }
        return true;
    }

    void start() { kick(rx_); }
    const uint8_t* mac() const { return mac_; }
    Stats& stats() { return stats_; }
    bool peer_known() const { return peer_known_; }
    uint16_t link_status() { return (d_.features & kFeatureStatus) ? config16(d_, kConfigStatus) : kStatusLinkUp; }

    // Handles every received frame that is pending; returns how many.
    uint32_t poll_rx() {
        uint32_t handled = 0;
        uint32_t length;
        void* cookie;
        while (pop_used(rx_, length, cookie)) {
            auto* buffer = static_cast<uint8_t*>(cookie);
            if (length > kHeaderSize) handle_frame(buffer + kHeaderSize, length - kHeaderSize);
            Buffer b{reinterpret_cast<uint64_t>(buffer), kBufferSize, true};
            submit(rx_, &b, 1, buffer);
            ++handled;
        }
        if (handled) kick(rx_);
        return handled;
    }

    // Takes back transmitted buffers.
    void poll_tx() {
        uint32_t length;
        void* cookie;
        while (pop_used(tx_, length, cookie)) free_tx_[free_tx_count_++] = static_cast<uint8_t*>(cookie);
    }

    // A transmit buffer's frame area (after the virtio header), waiting for one if all are in flight;
    // nullptr on timeout.
    uint8_t* tx_frame() {
        poll_tx();
        if (free_tx_count_ == 0) {
            kick(tx_);
            pending_kick_ = 0;
            uint32_t length;
            void* cookie;
            if (!next_used(tx_, kTxTimeoutMs, length, cookie)) return nullptr;
            free_tx_[free_tx_count_++] = static_cast<uint8_t*>(cookie);
        }
        uint8_t* buffer = free_tx_[--free_tx_count_];
        memset(buffer, 0, kHeaderSize);  // no offloads: flags 0, gso_type NONE (§5.1.6.2)
        return buffer + kHeaderSize;
    }

    void send(uint8_t* frame, uint32_t length, bool kick_now) {
        uint8_t* buffer = frame - kHeaderSize;
        Buffer b{reinterpret_cast<uint64_t>(buffer), kHeaderSize + length, false};
        submit(tx_, &b, 1, buffer);
        ++stats_.tx_frames;
        if (kick_now || ++pending_kick_ >= kKickBatch) {
            kick(tx_);
            pending_kick_ = 0;
        }
    }

    void flush_tx() {
        kick(tx_);
        pending_kick_ = 0;
    }

    bool tx_idle() {
        poll_tx();
        return free_tx_count_ == kTxBuffers;
    }

    bool send_arp(uint16_t operation, const uint8_t* target_mac, uint32_t target_ip) {
        uint8_t* f = tx_frame();
        if (f == nullptr) return false;
        static const uint8_t kBroadcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
        const uint8_t* destination = operation == kArpRequest ? kBroadcast : target_mac;
        ethernet(f, destination, kEtherTypeArp);
        uint8_t* a = f + kEthernetHeader;
        store16(a + 0, 1);  // Ethernet
        store16(a + 2, kEtherTypeIpv4);
        a[4] = 6;
        a[5] = 4;
        store16(a + 6, operation);
        memcpy(a + 8, mac_, 6);
        store32(a + 14, ip_);
        if (operation == kArpRequest) memset(a + 18, 0, 6);
        else memcpy(a + 18, target_mac, 6);
        store32(a + 24, target_ip);
        send(f, kEthernetHeader + kArpSize, true);
        return true;
    }

    // Sends one UDP datagram to the peer (its MAC must be known).
    bool send_udp(uint16_t destination_port, const uint8_t* payload, uint32_t length, bool kick_now) {
        uint8_t* f = tx_frame();
        if (f == nullptr) return false;
        ethernet(f, peer_mac_, kEtherTypeIpv4);
        uint8_t* ip = f + kEthernetHeader;
        ipv4(ip, kProtocolUdp, peer_ip_, kUdpHeader + length);
        uint8_t* udp = ip + kIpHeader;
        store16(udp + 0, kPortSource);
        store16(udp + 2, destination_port);
        store16(udp + 4, static_cast<uint16_t>(kUdpHeader + length));
        store16(udp + 6, 0);
        memcpy(udp + kUdpHeader, payload, length);
        // Pseudo-header: source, destination, protocol, UDP length (RFC 768).
        uint32_t sum = sum_words(ip + 12, 8);
        sum += kProtocolUdp + kUdpHeader + length;
        uint16_t checksum = fold(sum_words(udp, kUdpHeader + length, sum));
        store16(udp + 6, checksum == 0 ? 0xffff : checksum);
        send(f, kEthernetHeader + kIpHeader + kUdpHeader + length, kick_now);
        return true;
    }

private:
    void ethernet(uint8_t* f, const uint8_t* destination, uint16_t type) {
        memcpy(f, destination, 6);
        memcpy(f + 6, mac_, 6);
        store16(f + 12, type);
    }

    void ipv4(uint8_t* ip, uint8_t protocol, uint32_t destination, uint32_t payload_length) {
        ip[0] = 0x45;
        ip[1] = 0;
        store16(ip + 2, static_cast<uint16_t>(kIpHeader + payload_length));
        store16(ip + 4, ip_id_++);
        store16(ip + 6, 0x4000);  // don't fragment
        ip[8] = kTtl;
        ip[9] = protocol;
        store16(ip + 10, 0);
        store32(ip + 12, ip_);
        store32(ip + 16, destination);
        store16(ip + 10, fold(sum_words(ip, kIpHeader)));
    }

    void learn_peer(uint32_t ip, const uint8_t* mac) {
        if (ip != peer_ip_ || peer_known_) return;
        memcpy(peer_mac_, mac, 6);
        peer_known_ = true;
    }

    void handle_frame(const uint8_t* f, uint32_t length) {
        ++stats_.frames;
        if (length < kEthernetHeader) return;
        bool for_us = memcmp(f, mac_, 6) == 0 || (f[0] & 1);
        if (!for_us) return;
        uint16_t type = load16(f + 12);
        if (type == kEtherTypeArp && length >= kEthernetHeader + kArpSize) {
            handle_arp(f + kEthernetHeader);
        } else if (type == kEtherTypeIpv4 && length >= kEthernetHeader + kIpHeader) {
            handle_ipv4(f, f + kEthernetHeader, length - kEthernetHeader);
        } else {
            ++stats_.ignored;
        }
    }

    void handle_arp(const uint8_t* a) {
        if (load16(a) != 1 || load16(a + 2) != kEtherTypeIpv4 || a[4] != 6 || a[5] != 4) return;
        uint16_t operation = load16(a + 6);
        uint32_t sender_ip = load32(a + 14);
        learn_peer(sender_ip, a + 8);
        if (operation == kArpRequest && load32(a + 24) == ip_) {
            uint8_t sender_mac[6];
            memcpy(sender_mac, a + 8, 6);
            if (send_arp(kArpReply, sender_mac, sender_ip)) ++stats_.arp_replies;
        }
    }

    void handle_ipv4(const uint8_t* f, const uint8_t* ip, uint32_t length) {
        uint32_t header = (ip[0] & 0xf) * 4u;
        uint32_t total = load16(ip + 2);
        if ((ip[0] >> 4) != 4 || header < kIpHeader || total > length || total < header) return;
        if (load32(ip + 16) != ip_) return;
        if ((load16(ip + 6) & 0x3fff) != 0) return;  // fragments: not handled
        uint32_t source = load32(ip + 12);
        learn_peer(source, f + 6);
        const uint8_t* payload = ip + header;
        uint32_t payload_length = total - header;
        if (ip[9] == kProtocolIcmp && payload_length >= 8 && payload[0] == kIcmpEchoRequest) {
            reply_echo(f + 6, source, payload, payload_length);
        } else if (ip[9] == kProtocolUdp && payload_length >= kUdpHeader) {
            uint16_t port = load16(payload + 2);
            uint32_t udp_length = load16(payload + 4);
            if (udp_length < kUdpHeader || udp_length > payload_length) return;
            handle_udp(port, payload + kUdpHeader, udp_length - kUdpHeader);
        }
    }

    void reply_echo(const uint8_t* source_mac, uint32_t source, const uint8_t* icmp, uint32_t length) {
        if (length > kMaxFrame - kEthernetHeader - kIpHeader) return;
        uint8_t* f = tx_frame();
        if (f == nullptr) return;
        ethernet(f, source_mac, kEtherTypeIpv4);
        uint8_t* ip = f + kEthernetHeader;
        ipv4(ip, kProtocolIcmp, source, length);
        uint8_t* reply = ip + kIpHeader;
        memcpy(reply, icmp, length);
        reply[0] = kIcmpEchoReply;
        store16(reply + 2, 0);
        store16(reply + 2, fold(sum_words(reply, length)));
        send(f, kEthernetHeader + kIpHeader + length, true);
        ++stats_.icmp_replies;
    }

    void handle_udp(uint16_t port, const uint8_t* payload, uint32_t length) {
        if (port == kPortDone) {
            if (length >= 4 && memcmp(payload, "done", 4) == 0) stats_.done = true;
        } else if (port == kPortRxCount) {
            ++stats_.udp_datagrams;
            stats_.udp_bytes += length;
            for (uint32_t j = 1; j < length; ++j) {
                if (payload[j] != static_cast<uint8_t>(payload[0] + j)) {
                    ++stats_.udp_bad;
                    break;
                }
            }
        }
    }

    Device& d_;
    Virtqueue& rx_;
    Virtqueue& tx_;
    uint8_t mac_[6] = {};
    uint8_t peer_mac_[6] = {};
    bool peer_known_ = false;
    uint32_t ip_ = 0, peer_ip_ = 0;
    uint16_t ip_id_ = 1;
    uint8_t* rx_buffers_ = nullptr;
    uint8_t* tx_buffers_ = nullptr;
    uint8_t* free_tx_[kTxBuffers] = {};
    uint32_t free_tx_count_ = 0;
    uint32_t pending_kick_ = 0;
    Stats stats_;
};

// Answers ARP/ICMP and counts UDP until "done" or the deadline.
void serve(Nic& nic, Virtqueue& rx, uint64_t serve_ms) {
    Deadline deadline(serve_ms);
    while (!nic.stats().done && !deadline.expired()) {
        if (nic.poll_rx() == 0) {
            nic.poll_tx();
            wait_used(rx, 10);
        }
    }
    nic.poll_rx();
}

bool resolve_peer(Nic& nic, Virtqueue& rx, uint32_t peer) {
    Deadline deadline(kArpTimeoutMs);
    while (!nic.peer_known() && !deadline.expired()) {
        nic.send_arp(kArpRequest, nullptr, peer);
        Deadline retry(kArpRetryMs);
        while (!nic.peer_known() && !retry.expired()) {
            if (nic.poll_rx() == 0) wait_used(rx, 10);
        }
    }
    return nic.peer_known();
}

void transmit(Nic& nic, Virtqueue& rx, Virtqueue& tx, uint32_t peer, uint64_t megabytes) {
    uint64_t start = read_tsc();
    if (!resolve_peer(nic, rx, peer)) {
        check_fail("net_tx", "no ARP reply from the peer within %lu ms", kArpTimeoutMs);
        return;
    }
    uint64_t total = megabytes * 1024 * 1024;
    uint8_t payload[kPayload];
    uint64_t sent = 0;
    uint64_t k = 0;
    Stats& stats = nic.stats();
    while (sent < total) {
        uint32_t length = total - sent < kPayload ? static_cast<uint32_t>(total - sent) : kPayload;
        for (uint32_t j = 0; j < length; ++j) payload[j] = static_cast<uint8_t>(k + j);
        if (!nic.send_udp(kPortTxTarget, payload, length, false)) {
            check_fail("net_tx", "transmit queue stalled after %lu datagrams (%lu ms)", k, kTxTimeoutMs);
            return;
        }
        sent += length;
        ++k;
        if ((k & 63) == 0) nic.poll_rx();  // keep answering ARP while sending
    }
    nic.flush_tx();
    Deadline deadline(kTxTimeoutMs);
    while (!nic.tx_idle() && !deadline.expired()) wait_used(tx, 10);
    stats.tx_datagrams = k;
    stats.tx_bytes = sent;
    uint64_t time_us = elapsed_us(start);
    print("net_tx datagrams=%lu bytes=%lu\n", k, sent);
    if (!nic.tx_idle()) {
        check_fail("net_tx", "transmit buffers not returned within %lu ms", kTxTimeoutMs);
        return;
    }
    check_ok("net_tx", "datagrams=%lu bytes=%lu wait=%s irqs=%lu notifies=%lu time_us=%lu mbit_s=%lu", k, sent,
             wait_summary(tx), interrupts(tx), tx.notifies, time_us, time_us ? sent * 8 / time_us : 0);
}

}  // namespace

void check_net(Device& d, uint32_t number, const BootInfo& boot) {
    if (number > 0) {
        print("ember-test-guest: net%u skipped (only the first NIC is checked)\n", number);
        return;
    }
    uint64_t mark = dma_mark();
    uint32_t ip = 0x0a000202, peer = 0x0a000201;  // 10.0.2.2, 10.0.2.1
    Str text;
    if (cmdline_value(boot.cmdline, "test.net.ip", text) && !parse_ipv4(text, ip)) {
        check_fail("net", "bad test.net.ip");
        return;
    }
    if (cmdline_value(boot.cmdline, "test.net.peer", text) && !parse_ipv4(text, peer)) {
        check_fail("net", "bad test.net.peer");
        return;
    }
    uint64_t serve_ms = kDefaultServeMs, tx_mb = 0;
    cmdline_number(boot.cmdline, "test.net.serve_ms", serve_ms);
    cmdline_number(boot.cmdline, "test.net.tx_mb", tx_mb);

    const char* error = "";
    Virtqueue rx, tx;
    if (!begin(d, kFeatureMac | kFeatureStatus, error) || !queue_create(d, kReceiveQueue, kMaxQueueSize, 0, rx, error) ||
        !queue_create(d, kTransmitQueue, kMaxQueueSize, 0, tx, error)) {
        check_fail("net", "%s set-up: %s", transport_name(d), error);
        return;
    }
    Nic nic(d, rx, tx);
    if (!nic.init(ip, peer, error)) {
        check_fail("net", "%s", error);
        return;
    }
    driver_ok(d);
    nic.start();
    const uint8_t* m = nic.mac();
    print("ember-test-guest: net ready mac=%02x:%02x:%02x:%02x:%02x:%02x ip=%u.%u.%u.%u peer=%u.%u.%u.%u link=%u "
          "features=%lx rx_queue=%u tx_queue=%u serve_ms=%lu\n",
          m[0], m[1], m[2], m[3], m[4], m[5], ip >> 24, (ip >> 16) & 0xff, (ip >> 8) & 0xff, ip & 0xff, peer >> 24,
          (peer >> 16) & 0xff, (peer >> 8) & 0xff, peer & 0xff, nic.link_status(), d.features, rx.size, tx.size,
          serve_ms);
    uint64_t start = read_tsc();
    serve(nic, rx, serve_ms);
    Stats& s = nic.stats();
    check_ok("net", "frames=%lu arp_replies=%lu icmp_replies=%lu done=%u wait=%s irqs=%lu time_us=%lu", s.frames,
             s.arp_replies, s.icmp_replies, s.done ? 1 : 0, wait_summary(rx), interrupts(rx), elapsed_us(start));
    if (tx_mb > 0) transmit(nic, rx, tx, peer, tx_mb);
    nic.poll_rx();
    print("net_rx datagrams=%lu bytes=%lu bad=%lu\n", s.udp_datagrams, s.udp_bytes, s.udp_bad);
    if (s.udp_bad == 0) {
        check_ok("net_rx", "datagrams=%lu bytes=%lu bad=0", s.udp_datagrams, s.udp_bytes);
    } else {
        check_fail("net_rx", "datagrams=%lu bytes=%lu bad=%lu", s.udp_datagrams, s.udp_bytes, s.udp_bad);
    }
    reset(d);
    dma_release(mark);
}

}  // namespace guest::virtio
