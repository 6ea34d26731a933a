// CXen: the only C in SwiftXen. It exposes the Xen ABI headers and the libxen-dev libraries to Swift.
// All logic lives in Swift; this header holds includes and, where a macro or variadic call needs one,
// a static inline helper.
#ifndef SWIFTXEN_CXEN_SHIM_H
#define SWIFTXEN_CXEN_SHIM_H

// xenctrl.h first: it defines __XEN_TOOLS__, which the public headers below rely on.
#include <xenctrl.h>
#include <xenstore.h>
#include <xengnttab.h>
#include <xenevtchn.h>
// libxenvchan.h brings xen/io/libxenvchan.h (the shared page), which has no include guard: include it once.
#include <libxenvchan.h>

#include <xen/io/xs_wire.h>
#include <xen/io/ring.h>
#include <xen/io/blkif.h>
#include <xen/io/netif.h>
#include <xen/io/console.h>
#include <xen/io/xenbus.h>
#include <xen/grant_table.h>

#include <stddef.h>
#include <stdint.h>

// MARK: - Macros Swift cannot import

/// `MASK_XENSTORE_IDX` from xs_wire.h.
static inline uint32_t cxen_mask_xenstore_idx(uint32_t idx) { return MASK_XENSTORE_IDX(idx); }

/// `__CONST_RING_SIZE(blkif, PAGE_SIZE)` from ring.h: request slots in a blkif ring of `pages` pages.
static inline uint32_t cxen_blkif_ring_size(uint32_t pages) {
    return (uint32_t)__RING_SIZE((struct blkif_sring *)0, 4096u * pages);
}

// offsetof is a macro: the layout tests compare Swift's codec offsets with these.
static inline size_t cxen_blkif_request_id_offset(void) { return offsetof(struct blkif_request, id); }
static inline size_t cxen_blkif_request_sector_offset(void) { return offsetof(struct blkif_request, sector_number); }
static inline size_t cxen_blkif_request_seg_offset(void) { return offsetof(struct blkif_request, seg); }
static inline size_t cxen_blkif_request_indirect_id_offset(void) { return offsetof(struct blkif_request_indirect, id); }
static inline size_t cxen_blkif_request_indirect_sector_offset(void) {
    return offsetof(struct blkif_request_indirect, sector_number);
}
static inline size_t cxen_blkif_request_indirect_handle_offset(void) {
    return offsetof(struct blkif_request_indirect, handle);
}
static inline size_t cxen_blkif_request_indirect_grefs_offset(void) {
    return offsetof(struct blkif_request_indirect, indirect_grefs);
}
static inline size_t cxen_blkif_request_discard_nr_sectors_offset(void) {
    return offsetof(struct blkif_request_discard, nr_sectors);
}
static inline size_t cxen_blkif_response_status_offset(void) { return offsetof(struct blkif_response, status); }
static inline size_t cxen_blkif_sring_ring_offset(void) { return offsetof(struct blkif_sring, ring); }

/// `__RING_SIZE` of the netif tx and rx rings of `pages` pages.
static inline uint32_t cxen_netif_tx_ring_size(uint32_t pages) {
    return (uint32_t)__RING_SIZE((struct netif_tx_sring *)0, 4096u * pages);
}
static inline uint32_t cxen_netif_rx_ring_size(uint32_t pages) {
    return (uint32_t)__RING_SIZE((struct netif_rx_sring *)0, 4096u * pages);
}
static inline size_t cxen_netif_tx_request_offset_offset(void) { return offsetof(struct netif_tx_request, offset); }
static inline size_t cxen_netif_tx_request_flags_offset(void) { return offsetof(struct netif_tx_request, flags); }
static inline size_t cxen_netif_tx_request_id_offset(void) { return offsetof(struct netif_tx_request, id); }
static inline size_t cxen_netif_tx_request_size_offset(void) { return offsetof(struct netif_tx_request, size); }
static inline size_t cxen_netif_tx_response_status_offset(void) { return offsetof(struct netif_tx_response, status); }
static inline size_t cxen_netif_rx_request_gref_offset(void) { return offsetof(struct netif_rx_request, gref); }
static inline size_t cxen_netif_rx_response_offset_offset(void) { return offsetof(struct netif_rx_response, offset); }
static inline size_t cxen_netif_rx_response_flags_offset(void) { return offsetof(struct netif_rx_response, flags); }
static inline size_t cxen_netif_rx_response_status_offset(void) { return offsetof(struct netif_rx_response, status); }
static inline size_t cxen_netif_extra_gso_size_offset(void) { return offsetof(struct netif_extra_info, u.gso.size); }
static inline size_t cxen_netif_extra_gso_type_offset(void) { return offsetof(struct netif_extra_info, u.gso.type); }
static inline size_t cxen_netif_extra_gso_features_offset(void) {
    return offsetof(struct netif_extra_info, u.gso.features);
}
static inline size_t cxen_netif_extra_mcast_addr_offset(void) { return offsetof(struct netif_extra_info, u.mcast.addr); }
static inline size_t cxen_netif_extra_hash_value_offset(void) { return offsetof(struct netif_extra_info, u.hash.value); }
static inline size_t cxen_netif_tx_sring_ring_offset(void) { return offsetof(struct netif_tx_sring, ring); }
static inline size_t cxen_netif_tx_entry_size(void) { return sizeof(union netif_tx_sring_entry); }
static inline size_t cxen_netif_rx_entry_size(void) { return sizeof(union netif_rx_sring_entry); }

static inline size_t cxen_xencons_in_cons_offset(void) { return offsetof(struct xencons_interface, in_cons); }
static inline size_t cxen_xencons_in_prod_offset(void) { return offsetof(struct xencons_interface, in_prod); }
static inline size_t cxen_xencons_out_cons_offset(void) { return offsetof(struct xencons_interface, out_cons); }
static inline size_t cxen_xencons_out_prod_offset(void) { return offsetof(struct xencons_interface, out_prod); }
static inline size_t cxen_xencons_out_offset(void) { return offsetof(struct xencons_interface, out); }
static inline size_t cxen_xencons_in_offset(void) { return offsetof(struct xencons_interface, in); }
static inline size_t cxen_xencons_in_size(void) { return sizeof(((struct xencons_interface *)0)->in); }
static inline size_t cxen_xencons_out_size(void) { return sizeof(((struct xencons_interface *)0)->out); }
static inline size_t cxen_xencons_size(void) { return sizeof(struct xencons_interface); }
/// Offset of `connection` (Xen 4.21+), or -1 when the installed console.h predates it (4.17 has none).
static inline long cxen_xencons_connection_offset(void) {
#ifdef XENCONSOLE_CONNECTED
    return (long)offsetof(struct xencons_interface, connection);
#else
    return -1;
#endif
}
/// `XENCONSOLE_DISCONNECTED` when console.h has it, else the value Xen 4.21 gave it (1).
static inline uint8_t cxen_xencons_disconnected(void) {
#ifdef XENCONSOLE_DISCONNECTED
    return XENCONSOLE_DISCONNECTED;
#else
    return 1;
#endif
}

static inline size_t cxen_xenstore_req_cons_offset(void) {
    return offsetof(struct xenstore_domain_interface, req_cons);
}
static inline size_t cxen_xenstore_rsp_prod_offset(void) {
    return offsetof(struct xenstore_domain_interface, rsp_prod);
}
static inline size_t cxen_xenstore_connection_offset(void) {
    return offsetof(struct xenstore_domain_interface, connection);
}

// MARK: - vchan (libxenvchan.h): the Vchan layout tests compare VchanLayout with these.
static inline size_t cxen_vchan_left_offset(void) { return offsetof(struct vchan_interface, left); }
static inline size_t cxen_vchan_right_offset(void) { return offsetof(struct vchan_interface, right); }
static inline size_t cxen_vchan_ring_cons_offset(void) { return offsetof(struct ring_shared, cons); }
static inline size_t cxen_vchan_ring_prod_offset(void) { return offsetof(struct ring_shared, prod); }
static inline size_t cxen_vchan_left_order_offset(void) { return offsetof(struct vchan_interface, left_order); }
static inline size_t cxen_vchan_right_order_offset(void) { return offsetof(struct vchan_interface, right_order); }
static inline size_t cxen_vchan_cli_live_offset(void) { return offsetof(struct vchan_interface, cli_live); }
static inline size_t cxen_vchan_srv_live_offset(void) { return offsetof(struct vchan_interface, srv_live); }
static inline size_t cxen_vchan_cli_notify_offset(void) { return offsetof(struct vchan_interface, cli_notify); }
static inline size_t cxen_vchan_srv_notify_offset(void) { return offsetof(struct vchan_interface, srv_notify); }
static inline size_t cxen_vchan_grants_offset(void) { return offsetof(struct vchan_interface, grants); }
static inline size_t cxen_vchan_interface_size(void) { return sizeof(struct vchan_interface); }

// MARK: - TAP devices (NetBack's bridge to the backend domain's network)
#include <linux/if_tun.h>
#include <linux/virtio_net.h>
#include <net/if.h>
#include <netpacket/packet.h>
#include <net/ethernet.h>
#include <string.h>
#include <sys/ioctl.h>

/// `ioctl(fd, TUNSETIFF, &ifr)` (ioctl is variadic): attaches `fd` to the TAP/TUN interface `name` (empty: the
/// kernel picks one) with `flags` (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`); the chosen name is copied to `out`
/// (IFNAMSIZ bytes). Returns ioctl's result.
static inline int cxen_tun_set_iff(int fd, const char *name, short flags, char *out) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    ifr.ifr_flags = flags;
    int rc = ioctl(fd, TUNSETIFF, &ifr);
    if (rc == 0) memcpy(out, ifr.ifr_name, IFNAMSIZ);
    return rc;
}

/// `ioctl(fd, TUNSETOFFLOAD, flags)`: the offloads (`TUN_F_*`) the reader of the TAP device accepts.
static inline int cxen_tun_set_offload(int fd, unsigned int flags) { return ioctl(fd, TUNSETOFFLOAD, flags); }

/// Sets or clears `IFF_UP` on interface `name` through `socket` (any AF_INET/AF_PACKET socket): ioctl is
/// variadic. Returns ioctl's result.
static inline int cxen_set_link_up(int socket, const char *name, int up) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(socket, SIOCGIFFLAGS, &ifr) != 0) return -1;
    if (up) ifr.ifr_flags |= IFF_UP; else ifr.ifr_flags &= ~IFF_UP;
    return ioctl(socket, SIOCSIFFLAGS, &ifr);
}

// MARK: - Pseudo-terminals
// The console pty sink needs the XSI pty calls, which glibc declares only under _XOPEN_SOURCE (not set for
// Swift's Glibc module). Compatible redeclarations of the libc prototypes make them visible.
int posix_openpt(int flags);
int grantpt(int fd);
int unlockpt(int fd);
int ptsname_r(int fd, char *buf, size_t buflen);

#endif
