/* vnic.h - the one interface between the Python control plane and the C
 * data plane.
 *
 * The part between the cdef markers is fed verbatim to cffi, so it holds
 * only plain declarations: no macros, no includes.  What only tests and
 * benchmarks call is in vnic_test.h.  Python calls these
 * functions per configuration change, never per packet; per-packet work
 * happens on the worker threads that vnic_dev_start() spawns.
 */
#ifndef VNIC_H
#define VNIC_H

#include <stdint.h>
#include <stddef.h>

/* cdef-begin */

/* ---- constants shared with Python (read from lib) ---------------------- */

/* virtio-net feature bits (virtio 1.2, 5.1.3 and 6): bit numbers, so
 * 1 << VNIC_F_X is the feature's mask. */
enum vnic_feature_bit {
    VNIC_F_CSUM = 0,               /* the device completes TX checksums */
    VNIC_F_GUEST_CSUM = 1,         /* the guest takes partial RX checksums */
    VNIC_F_CTRL_GUEST_OFFLOADS = 2,
    VNIC_F_MTU = 3,
    VNIC_F_MAC = 5,
    VNIC_F_GUEST_TSO4 = 7,
    VNIC_F_GUEST_TSO6 = 8,
    VNIC_F_GUEST_ECN = 9,
    VNIC_F_GUEST_UFO = 10,
    VNIC_F_HOST_TSO4 = 11,
    VNIC_F_HOST_TSO6 = 12,
    VNIC_F_HOST_ECN = 13,
    VNIC_F_HOST_UFO = 14,
    VNIC_F_MRG_RXBUF = 15,
    VNIC_F_STATUS = 16,
    VNIC_F_CTRL_VQ = 17,
    VNIC_F_CTRL_RX = 18,
    VNIC_F_CTRL_VLAN = 19,
    VNIC_F_CTRL_RX_EXTRA = 20,
    VNIC_F_GUEST_ANNOUNCE = 21,
    VNIC_F_MQ = 22,
    VNIC_F_CTRL_MAC_ADDR = 23,
    VNIC_F_RING_INDIRECT_DESC = 28,
    VNIC_F_RING_EVENT_IDX = 29,
    VNIC_F_VERSION_1 = 32,
    VNIC_F_ACCESS_PLATFORM = 33,
    VNIC_F_RING_PACKED = 34,       /* packed virtqueues (virtio 1.2, 2.8) */
    VNIC_F_GUEST_USO4 = 54,
    VNIC_F_GUEST_USO6 = 55,
    VNIC_F_HOST_USO = 56,
    VNIC_F_HASH_REPORT = 57,       /* RX headers carry the RSS hash (struct virtio_net_hdr_hash) */
    VNIC_F_GUEST_HDRLEN = 59,
    VNIC_F_RSS = 60,               /* receive queue picked by Toeplitz hash and table */
    VNIC_F_SPEED_DUPLEX = 63
};

/* The virtio-net header before every frame, both ways: struct
 * virtio_net_hdr_mrg_rxbuf (virtio 1.2, 5.1.6), little-endian fields.
 * With VERSION_1 it is always this long, num_buffers included. */
struct virtio_net_hdr {
    uint8_t flags;                 /* enum vnic_net_hdr_flag */
    uint8_t gso_type;              /* enum vnic_gso_type */
    uint16_t hdr_len;
    uint16_t gso_size;
    uint16_t csum_start;
    uint16_t csum_offset;
    uint16_t num_buffers;
};

/* With HASH_REPORT the header is struct virtio_net_hdr_v1_hash both ways:
 * the one above, then these (set on RX, ignored on TX). */
struct virtio_net_hdr_hash {
    uint32_t hash_value;           /* the Toeplitz hash of the frame's fields */
    uint16_t hash_report;          /* enum vnic_hash_report: which fields */
    uint16_t padding;
};

enum vnic_net_hdr_size {
    VNIC_NET_HDR_SIZE = 12,        /* sizeof(struct virtio_net_hdr) */
    VNIC_NET_HDR_HASH_SIZE = 20    /* ... followed by struct virtio_net_hdr_hash */
};

/* Receive-side scaling (virtio 1.2, 5.1.6.4.3): the hash types a driver
 * may ask for (VIRTIO_NET_HASH_TYPE_*), as bits of hash_types. */
enum vnic_hash_type {
    VNIC_HASH_IPV4 = 0x1,          /* source and destination address */
    VNIC_HASH_TCPV4 = 0x2,         /* ... and TCP ports */
    VNIC_HASH_UDPV4 = 0x4,
    VNIC_HASH_IPV6 = 0x8,
    VNIC_HASH_TCPV6 = 0x10,
    VNIC_HASH_UDPV6 = 0x20,
    VNIC_HASH_IP_EX = 0x40,        /* IPv6 extension header addresses: not supported */
    VNIC_HASH_TCP_EX = 0x80,
    VNIC_HASH_UDP_EX = 0x100,
    VNIC_HASH_SUPPORTED = 0x3f     /* supported_hash_types in config space */
};

/* hash_report in the RX header: what the hash was computed over. */
enum vnic_hash_report {
    VNIC_HASH_REPORT_NONE = 0,
    VNIC_HASH_REPORT_IPV4 = 1,
    VNIC_HASH_REPORT_TCPV4 = 2,
    VNIC_HASH_REPORT_UDPV4 = 3,
    VNIC_HASH_REPORT_IPV6 = 4,
    VNIC_HASH_REPORT_TCPV6 = 5,
    VNIC_HASH_REPORT_UDPV6 = 6
};

enum vnic_rss_limit {
    VNIC_RSS_KEY_SIZE = 40,        /* rss_max_key_size: the Toeplitz key's bytes */
    VNIC_RSS_TABLE_MAX = 128       /* rss_max_indirection_table_length */
};

enum vnic_net_hdr_flag {
    VNIC_HDR_F_NEEDS_CSUM = 1,     /* checksum at csum_start + csum_offset left partial */
    VNIC_HDR_F_DATA_VALID = 2      /* RX: the device verified the checksum */
};

enum vnic_gso_type {
    VNIC_GSO_NONE = 0,
    VNIC_GSO_TCPV4 = 1,
    VNIC_GSO_UDP = 3,              /* UFO: IP fragmentation of one datagram */
    VNIC_GSO_TCPV6 = 4,
    VNIC_GSO_UDP_L4 = 5,           /* USO: UDP segmentation */
    VNIC_GSO_ECN = 0x80            /* flag: the TCP super-frame carries CWR */
};

/* Why the TX engine dropped a frame; each reason has its own tx_drops_
 * counter.  vnic_tx_engine_run() returns one of them negated. */
enum vnic_tx_drop {
    VNIC_TX_SENT = 0,
    VNIC_TX_DROP_HEADERS = 1,      /* truncated, unparseable or unsupported headers */
    VNIC_TX_DROP_CSUM_RANGE = 2,   /* csum_start/csum_offset beyond the frame */
    VNIC_TX_DROP_GSO_SIZE = 3,     /* gso_size 0 or larger than the payload */
    VNIC_TX_DROP_GSO_TYPE = 4,     /* gso_type unknown or not matching the headers */
    VNIC_TX_DROP_UNNEGOTIATED = 5, /* an offload (or ECN) the driver did not negotiate */
    VNIC_TX_DROP_BACKEND = 6,      /* the backend refused the frame */
    VNIC_TX_DROP_COUNT = 7
};

/* vfio-user (QEMU docs/interop/vfio-user.rst): the message header, little-endian. */
struct vfio_user_header {
    uint16_t id;                   /* matches a reply to its request */
    uint16_t command;              /* enum vfio_user_command */
    uint32_t size;                 /* header included */
    uint32_t flags;                /* enum vfio_user_flag */
    uint32_t error;                /* errno, with VFIO_USER_F_ERROR */
};

enum vfio_user_command {
    VFIO_USER_VERSION = 1,
    VFIO_USER_DMA_MAP = 2,
    VFIO_USER_DMA_UNMAP = 3,
    VFIO_USER_DEVICE_GET_INFO = 4,
    VFIO_USER_DEVICE_GET_REGION_INFO = 5,
    VFIO_USER_DEVICE_GET_REGION_IO_FDS = 6,
    VFIO_USER_DEVICE_GET_IRQ_INFO = 7,
    VFIO_USER_DEVICE_SET_IRQS = 8,
    VFIO_USER_REGION_READ = 9,
    VFIO_USER_REGION_WRITE = 10,
    VFIO_USER_DMA_READ = 11,
    VFIO_USER_DMA_WRITE = 12,
    VFIO_USER_DEVICE_RESET = 13,
    VFIO_USER_DIRTY_PAGES = 14,
    VFIO_USER_REGION_WRITE_MULTI = 15
};

enum vfio_user_flag {
    VFIO_USER_F_REPLY = 0x1,       /* the message type: a reply (else a command) */
    VFIO_USER_F_NO_REPLY = 0x10,   /* the sender wants no reply */
    VFIO_USER_F_ERROR = 0x20       /* a reply that failed: error holds the errno */
};

enum vfio_user_limit {
    VFIO_USER_MAX_MSG_FDS = 16,    /* fds one message may carry */
    VFIO_USER_MAX_DATA_XFER = 0x100000,   /* 1 MiB: the most one read/write/DMA moves */
    VFIO_USER_MAX_MSG_SIZE = 0x101000     /* MAX_DATA_XFER + 4096 for the headers */
};

/* What vnic_chan_recv() returns instead of a message length. */
enum vnic_chan_status {
    VNIC_CHAN_CLOSED = -1,         /* the stream ended */
    VNIC_CHAN_TOO_BIG = -2,        /* message longer than the buffer (or than max_msg_size) */
    VNIC_CHAN_TOO_MANY_FDS = -3    /* message with more fds than accepted */
};

enum vnic_limit {
    VNIC_MAX_QUEUE_PAIRS = 16,     /* vnic_dev_new() accepts 1 to this many */
    VNIC_MAX_DMA_REGIONS = 256,    /* guest memory regions vnic_mem_add() keeps */
    VNIC_MAX_QUEUE_SIZE = 256,     /* queue size the device offers the driver */
    VNIC_MAX_RING_SIZE = 32768,    /* largest ring vnic_queue_setup() accepts */
    /* the largest frame a socket backend carries: a 64 KiB IP packet behind
     * an Ethernet header and a VLAN tag (65535 + 14 + 4); a stream length
     * beyond it is garbage */
    VNIC_SOCKET_FRAME_MAX = 65553,
    VNIC_NO_VECTOR = 0xffff        /* VIRTIO_MSI_NO_VECTOR: no interrupt */
};

/* Per queue-pair counters.  Python views the array of these as a numpy
 * structured array without copying; every field is a uint64_t and the names
 * follow Linux conventions. */
struct vnic_queue_stats {
    uint64_t rx_packets;
    uint64_t rx_bytes;
    uint64_t rx_buffers_used;      /* descriptor chains consumed */
    uint64_t rx_no_buffer;         /* times a packet waited for guest buffers */
    uint64_t rx_drops_too_big;     /* packet larger than the posted chain */
    uint64_t rx_drops_backend;     /* backend read errors */
    uint64_t rx_drops_offload;     /* backend frame with an offload the guest lacks */
    uint64_t rx_gso_packets;       /* super-frames handed to the guest whole */
    uint64_t rx_csum_completed;    /* partial checksums finished for the guest */
    uint64_t rx_csum_valid;        /* TCP/UDP checksum verified: DATA_VALID set */
    uint64_t rx_csum_bad;          /* bad checksum: delivered unflagged, the guest drops it */
    uint64_t rx_coalesced_packets; /* super-frames the device built from segments */
    uint64_t rx_coalesced_segments;/* segments that went into them */
    uint64_t rx_coalesce_evictions;/* flows flushed early: the flow table was full */
    uint64_t rx_direct_packets;    /* frames the backend read straight into guest buffers */
    uint64_t rx_copied_bytes;      /* frame bytes the device itself copied on the way to the
                                    * guest (bounce buffer, coalescing, overflow, RSS hand-over
                                    * between pairs: into and out of the inbox): 0 when
                                    * every byte landed where the backend's read put it */
    uint64_t rx_interrupts;
    uint64_t rx_kicks;
    uint64_t tx_packets;
    uint64_t tx_bytes;
    uint64_t tx_drops_backend;     /* backend refused the frame */
    uint64_t tx_drops_malformed;   /* frame too short or too long to send */
    uint64_t tx_drops_headers;     /* offload asked on truncated/unsupported headers */
    uint64_t tx_drops_csum_range;  /* csum_start/csum_offset beyond the frame */
    uint64_t tx_drops_gso_size;    /* gso_size 0 or larger than the payload */
    uint64_t tx_drops_gso_type;    /* gso_type unknown or not matching the headers */
    uint64_t tx_drops_unnegotiated;/* offload flags the driver did not negotiate */
    uint64_t tx_csum_offloaded;    /* checksums completed by the device */
    uint64_t tx_tso_packets;       /* TCP super-frames segmented */
    uint64_t tx_tso_segments;
    uint64_t tx_ufo_packets;       /* UDP datagrams fragmented */
    uint64_t tx_ufo_fragments;
    uint64_t tx_uso_packets;       /* UDP super-frames segmented */
    uint64_t tx_uso_segments;
    uint64_t tx_passthrough_packets; /* offloaded frames handed to the backend whole */
    uint64_t tx_interrupts;
    uint64_t tx_kicks;
    uint64_t rx_filtered_mac;      /* refused by the guest's MAC / rx-mode filter */
    uint64_t rx_filtered_vlan;     /* refused by the guest's VLAN filter */
    uint64_t ctrl_commands;        /* control queue commands handled */
    uint64_t ctrl_errors;          /* ... answered VIRTIO_NET_ERR */
    uint64_t ctrl_interrupts;
    uint64_t chain_errors;         /* hostile descriptor chains (NEEDS_RESET) */
    uint64_t dma_errors;           /* guest address outside mapped memory, or a DMA
                                    * request the client failed or never answered */
    uint64_t mem_faults;           /* guest memory vanished under an access (SIGBUS) */
    uint64_t flow_evictions;       /* flows dropped from the full flow table for new ones */
    uint64_t flow_table_grows;     /* times the flow table doubled */
    uint64_t rx_drops_inactive;    /* frames held for, or steered to, a pair the driver
                                    * stopped using (MQ_VQ_PAIRS_SET) that no buffer took */
    uint64_t mq_pairs_changes;     /* MQ_VQ_PAIRS_SET commands applied (pair 0 only) */
    uint64_t rx_rss_steered;       /* frames read on this pair that RSS sent to another */
    uint64_t rx_rss_hashed;        /* frames whose hash was reported to the guest */
    uint64_t rx_rss_unhashable;    /* frames no enabled hash type covers: unclassified queue */
    uint64_t rx_rss_handoff_waits; /* times a frame for another pair waited: its ring was full */
    uint64_t capture_packets;      /* frames copied into the capture ring (vnic_capture_start) */
    uint64_t capture_drops;        /* frames the capture ring had no room for: the writer lagged */
    uint64_t fault_tx_drops;       /* frames to the backend dropped on purpose (vnic_faults_set) */
    uint64_t fault_tx_duplicates;  /* ... sent twice */
    uint64_t fault_tx_corruptions; /* ... sent with a payload byte changed after the checksums */
    uint64_t fault_rx_drops;       /* frames from the backend dropped on purpose */
    uint64_t fault_rx_duplicates;  /* ... delivered twice */
    uint64_t fault_rx_corruptions; /* ... delivered with a payload byte changed (never DATA_VALID) */
    uint64_t fault_rx_bad_csums;   /* ... delivered with a wrong checksum marked DATA_VALID */
    uint64_t fault_rx_starves;     /* times receiving was stopped on purpose (pair 0 only) */
    uint64_t fault_link_flaps;     /* times the link was taken down and up on purpose (pair 0 only) */
    uint64_t fault_tx_delayed;     /* frames to the backend held in the delay line */
    uint64_t fault_tx_reordered;   /* ... that skipped it, overtaking those held */
    uint64_t fault_tx_queue_drops; /* ... dropped: the delay line was full */
    uint64_t fault_rx_delayed;     /* frames from the backend held in the delay line */
    uint64_t fault_rx_reordered;   /* ... that skipped it */
    uint64_t fault_rx_queue_drops; /* ... dropped: the delay line was full */
    uint64_t backend_disconnects;  /* a socket backend's peer went away, or was sent away:
                                    * the link is down until it is back */
    uint64_t rx_drops_framing;     /* a stream peer's length prefix past the largest frame:
                                    * the connection was dropped (the peer reconnects) */
    uint64_t tx_backend_waits;     /* times TX stopped until a socket peer took what was sent */
};

/* Device-wide error reasons, reported by vnic_dev_error(). */
enum vnic_error {
    VNIC_ERR_NONE = 0,
    VNIC_ERR_DESC_INDEX = 1,       /* next/head index beyond the ring */
    VNIC_ERR_DESC_LOOP = 2,        /* chain longer than the ring: a loop */
    VNIC_ERR_DESC_ZERO_LEN = 3,
    VNIC_ERR_DESC_DIRECTION = 4,   /* writable buffer in TX, readable after writable in RX */
    VNIC_ERR_DESC_INDIRECT = 5,    /* bad indirect table (size, nesting) */
    VNIC_ERR_DMA = 6,              /* address not in mapped guest memory */
    VNIC_ERR_AVAIL_IDX = 7,        /* driver claims more buffers than the ring holds */
    VNIC_ERR_RING_DMA = 8,         /* ring itself not in mapped guest memory */
    VNIC_ERR_MEM_FAULT = 9         /* guest memory vanished (the file behind a DMA_MAP
                                    * shrank: SIGBUS); see guard.c */
};

enum vnic_backend_kind {
    VNIC_BACKEND_NULL = 0,         /* TX discarded and counted, RX silent */
    VNIC_BACKEND_TAP = 1,          /* fd of a TAP opened with IFF_VNET_HDR, hdr size 12 */
    VNIC_BACKEND_STREAM = 2,       /* a connected stream socket, QEMU's -netdev stream framing
                                    * (4-byte big-endian length, frame); -1: not connected */
    VNIC_BACKEND_DGRAM = 3         /* a connected datagram socket, a frame per datagram
                                    * (QEMU's -netdev dgram) */
};

/* Where offloaded TX frames are segmented. */
enum vnic_tx_mode {
    VNIC_TX_SEGMENT = 0,           /* the device segments: the wire sees MTU-size frames */
    VNIC_TX_PASSTHROUGH = 1        /* super-frame and its header go to a TAP backend */
};

struct vnic_dev;
struct vnic_chan;

/* --- device lifetime --------------------------------------------------- */
/* A stopped device with 1..VNIC_MAX_QUEUE_PAIRS pairs and the null
 * backend; NULL for a count out of range or when memory, eventfds or
 * flow tables cannot be had. */
struct vnic_dev *vnic_dev_new(int queue_pairs);
/* Stop the workers and free everything (NULL is ignored). */
void vnic_dev_free(struct vnic_dev *dev);
/* Negotiated feature bits (enum vnic_feature_bit): the data plane reads
 * EVENT_IDX, MRG_RXBUF, INDIRECT_DESC from them.  0, or -EBUSY while
 * running. */
int vnic_dev_set_features(struct vnic_dev *dev, uint64_t features);
/* The backend (enum vnic_backend_kind) with its fds, which the caller
 * keeps open: one shared by every queue pair (nfds 1) or one per pair
 * (nfds = queue pairs; pair i reads and writes fds[i]).  0; -EINVAL while
 * running, for an unknown kind or another nfds (a socket backend: more
 * than one queue pair); -EBADF for a TAP or dgram fd < 0 (a stream's -1:
 * not connected, the link is the caller's to take down). */
int vnic_dev_set_backend(struct vnic_dev *dev, int kind, const int *fds, int nfds);
/* A datagram backend's far end, as a struct sockaddr of len bytes (the
 * socket stays unconnected, so that a peer bound later, or bound again,
 * is reached).  0; -EINVAL while running, without a dgram backend, or for
 * a len of 0 or beyond a struct sockaddr_storage. */
int vnic_dgram_set_remote(struct vnic_dev *dev, const uint8_t *addr, uint32_t len);
/* While the process still has privilege: set up what the backend's
 * steering will need (a TAP's BPF programs for each count of pairs in use
 * short of all), which could not be loaded once vnic gave up root.  0, or
 * the -errno of the first load that failed (steering then detaches queues
 * instead, as it does on a kernel that refuses programs). */
int vnic_dev_prepare_steering(struct vnic_dev *dev);
/* Queue pairs in use: 1 after reset, then what the driver set with
 * VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET (1 to vnic_dev_queue_pairs()). */
int vnic_dev_active_pairs(struct vnic_dev *dev);

/* How the backend keeps received frames on the pairs in use. */
enum vnic_steering {
    VNIC_STEER_NONE = 0,           /* one queue, or every queue in use: the kernel's flow hash */
    VNIC_STEER_PROGRAM = 1,        /* a TUNSETSTEERINGEBPF program over the pairs in use */
    VNIC_STEER_DETACH = 2          /* no program allowed: the queues given up are detached */
};
/* enum vnic_steering in force. */
int vnic_dev_steering(struct vnic_dev *dev);

/* Receive-side scaling as the driver configured it (RSS_CONFIG or
 * HASH_CONFIG on the control queue); all zero until it does. */
struct vnic_rss_state {
    uint32_t hash_types;           /* enum vnic_hash_type bits in force */
    int steering;                  /* 1: RSS_CONFIG picks queues; 0: hashes only reported */
    int report;                    /* 1: hashes go into the RX header (HASH_REPORT) */
    int table_len;                 /* indirection table entries (a power of two) */
    uint16_t unclassified_queue;   /* pair of frames no hash type covers */
    uint16_t table[128];           /* the pair each hash & (table_len - 1) picks */
    uint8_t key[40];
};
void vnic_dev_rss_state(struct vnic_dev *dev, struct vnic_rss_state *out);
/* Receive coalescing for guests with GUEST_TSO4/6 + GUEST_CSUM + MRG_RXBUF
 * (on by default).  Takes effect at the next batch. */
void vnic_dev_set_rx_coalesce(struct vnic_dev *dev, int on);
/* How received frames reach the guest's buffers: read straight into them
 * where the backend and the device's state allow (DIRECT, the default), or
 * always read into a bounce buffer and copied from there (BOUNCE: the
 * path before one-copy receive, to compare or to rule it out).  Takes
 * effect at the next batch. */
enum vnic_rx_copy { VNIC_RX_COPY_DIRECT = 0, VNIC_RX_COPY_BOUNCE = 1 };
void vnic_dev_set_rx_copy(struct vnic_dev *dev, int mode);
/* enum vnic_tx_mode.  Takes effect at once.  0, -EINVAL for an unknown
 * mode, -ENOTSUP for passthrough on a backend that cannot (only the TAP
 * can). */
int vnic_dev_set_tx_mode(struct vnic_dev *dev, int mode);
/* Start the worker threads (DRIVER_OK).  0 (also if running), -EFAULT
 * when an enabled ring is outside guest memory (the device is failed
 * with VNIC_ERR_RING_DMA), or the -errno of the backend's offload
 * setting, epoll_create1/epoll_ctl or pthread_create; then nothing runs. */
int vnic_dev_start(struct vnic_dev *dev);
/* Stop and join the workers; queue state is kept (for quiescing).  A
 * worker waiting for a DMA_READ/DMA_WRITE reply gets 200 ms to receive it;
 * then the request fails and the device with it (VNIC_ERR_DMA). */
void vnic_dev_stop(struct vnic_dev *dev);
/* Forget all queue state (device reset); stops the workers first, failing
 * any outstanding DMA request at once. */
void vnic_dev_reset(struct vnic_dev *dev);
int vnic_dev_running(struct vnic_dev *dev);
/* Sticky error (enum vnic_error) that put the device in NEEDS_RESET. */
int vnic_dev_error(struct vnic_dev *dev);
/* Read and clear the ISR (bit 0 queue, bit 1 config). */
uint8_t vnic_dev_read_isr(struct vnic_dev *dev);
/* The counters, one struct per pair (vnic_dev_queue_pairs of them). */
struct vnic_queue_stats *vnic_dev_stats(struct vnic_dev *dev);
int vnic_dev_queue_pairs(struct vnic_dev *dev);

/* The receive filter as the driver programmed it (control queue). */
struct vnic_filter_state {
    int promisc, allmulti, alluni, nomulti, nouni, nobcast;
    uint8_t mac[6];
    int unicast_entries, multicast_entries;
    int unicast_overflow, multicast_overflow;
    int vlans;                     /* VLAN IDs in the filter */
    uint64_t guest_offloads;
    int announce_pending;
    int ctrl_last_error;           /* class << 8 | command last answered ERR, or -1 */
};

/* The MAC address in config space and the filter (restored at reset). */
void vnic_dev_set_mac(struct vnic_dev *dev, const uint8_t *mac);
/* The MAC in force: the driver may change it (CTRL_MAC_ADDR). */
void vnic_dev_get_mac(struct vnic_dev *dev, uint8_t *mac);
void vnic_dev_filter_state(struct vnic_dev *dev, struct vnic_filter_state *out);
/* Ask the guest to announce itself (GUEST_ANNOUNCE): status bit + config interrupt. */
void vnic_dev_announce(struct vnic_dev *dev);
int vnic_dev_announce_pending(struct vnic_dev *dev);

/* --- guest memory (DMA table) ------------------------------------------ */
/* host == NULL registers a region reached only through DMA_READ/DMA_WRITE
 * messages on the channel (slow fallback).  Workers must be stopped. */
/* 0, -EINVAL for an empty or wrapping range, -ENOSPC beyond
 * VNIC_MAX_DMA_REGIONS regions, -EEXIST when it overlaps one. */
int vnic_mem_add(struct vnic_dev *dev, uint64_t iova, uint64_t len, void *host, int writable);
/* Remove the region added with exactly this iova and len: 0 or -ENOENT. */
int vnic_mem_remove(struct vnic_dev *dev, uint64_t iova, uint64_t len);
void vnic_mem_clear(struct vnic_dev *dev);
int vnic_mem_count(struct vnic_dev *dev);
/* Copy between guest memory and a host buffer with full bounds checking,
 * for the control plane (control queue, tests).  0, -EFAULT for an
 * unmapped (or, writing, read-only) address, -EIO when a message-based
 * transfer failed. */
int vnic_mem_read(struct vnic_dev *dev, uint64_t iova, void *dst, uint64_t len);
int vnic_mem_write(struct vnic_dev *dev, uint64_t iova, const void *src, uint64_t len);

/* --- virtqueues (index 2*i is RX of pair i, 2*i+1 is TX, 2*pairs control) - */
/* Each returns 0, or -EINVAL for a queue index out of range; setup and
 * enable also while running, setup for a size of 0 or beyond
 * VNIC_MAX_RING_SIZE or (split rings: without VIRTIO_F_RING_PACKED in the
 * features set) not a power of two, enable for a queue never set up. */
int vnic_queue_setup(struct vnic_dev *dev, int q, uint16_t size,
                     uint64_t desc, uint64_t avail, uint64_t used);
int vnic_queue_set_vector(struct vnic_dev *dev, int q, uint16_t vector);
int vnic_queue_enable(struct vnic_dev *dev, int q, int enabled);
/* A kick that reached Python (slow path); the channel's fast path writes
 * the same eventfd without Python.  0, -EINVAL, or the write's -errno. */
int vnic_queue_kick(struct vnic_dev *dev, int q);
/* The queue's kick eventfd (owned by the device), or -EINVAL. */
int vnic_queue_kick_fd(struct vnic_dev *dev, int q);

/* --- interrupts (MSI-X vectors) ---------------------------------------- */
/* Whether a client's fd may signal a vector: 0 when it is an eventfd
 * (made non-blocking, so that a worker's write never waits), -EINVAL for
 * any other kind of fd (a full pipe would block the worker), or the
 * -errno of fcntl. */
int vnic_irq_check_fd(int fd);
/* The vector's eventfd (the device takes it and closes the one before;
 * -1 for none), its mask.  A vector fired while masked or without an fd
 * (or whose eventfd write failed) fires when it can.  0, -EINVAL for a
 * vector out of range, or vnic_irq_check_fd's error (fd not taken). */
int vnic_irq_set_fd(struct vnic_dev *dev, int vector, int fd);
int vnic_irq_set_masked(struct vnic_dev *dev, int vector, int masked);
void vnic_irq_set_config_vector(struct vnic_dev *dev, uint16_t vector);
/* Fire a vector now (SET_IRQS trigger with DATA_NONE); one out of range
 * (VNIC_NO_VECTOR) is ignored. */
void vnic_irq_trigger(struct vnic_dev *dev, int vector);
/* Raise the configuration-change interrupt (link change, NEEDS_RESET). */
void vnic_irq_config_changed(struct vnic_dev *dev);

/* --- the vfio-user channel --------------------------------------------- */
/* The channel owns the socket.  Its reader thread answers doorbell writes
 * itself (no Python per kick), completes replies to DMA_READ/DMA_WRITE that
 * the data plane sent, and queues every other message for Python. */
/* NULL when memory is short or the reader thread cannot start (fd is
 * then still the caller's). */
struct vnic_chan *vnic_chan_new(int fd, uint32_t max_msg_size);
/* Close the socket, join the reader, free.  The dev link is dropped first. */
void vnic_chan_free(struct vnic_chan *ch);
/* Block for the next message for Python.  Copies header+payload into buf
 * and received fds into fds.  Returns the message length, or an enum
 * vnic_chan_status: VNIC_CHAN_CLOSED when the stream ended,
 * VNIC_CHAN_TOO_BIG when the message was longer than bufsize or
 * max_msg_size, or carried more than maxfds fds, VNIC_CHAN_TOO_MANY_FDS
 * when it carried more than VFIO_USER_MAX_MSG_FDS (the kernel dropped the
 * excess).  For both the message is dropped and its fds closed, but its
 * header is copied into buf for an error reply. */
int vnic_chan_recv(struct vnic_chan *ch, uint8_t *buf, uint32_t bufsize,
                   int *fds, int maxfds, int *nfds);
/* Send one whole message (header included) with optional fds.  0,
 * -EINVAL for more than VFIO_USER_MAX_MSG_FDS fds, -EPIPE when the peer
 * went away mid-message, or sendmsg's -errno. */
int vnic_chan_send(struct vnic_chan *ch, const uint8_t *buf, uint32_t len,
                   const int *fds, int nfds);
/* Route doorbell writes: region index, offset of the notify area, bytes
 * between queue doorbells, number of queues.  dev may be NULL to disable. */
void vnic_chan_set_notify(struct vnic_chan *ch, struct vnic_dev *dev, uint32_t region,
                          uint64_t offset, uint32_t multiplier, uint32_t nqueues);
/* Let dev reach message-based guest memory through this channel. */
void vnic_chan_attach_dma(struct vnic_chan *ch, struct vnic_dev *dev);
/* Shut the socket down: the reader ends, vnic_chan_recv returns
 * VNIC_CHAN_CLOSED. */
void vnic_chan_shutdown(struct vnic_chan *ch);
/* Doorbells answered by the reader thread without Python. */
uint64_t vnic_chan_fast_kicks(struct vnic_chan *ch);

/* --- sandbox (sandbox.c) ------------------------------------------------- */
/* Empty the calling thread's capability bounding set, which threads it
 * creates later inherit: call once the last program that needs root has
 * run (a program executed after this gets no capabilities) and before the
 * serving threads start.  0, or -EPERM if a capability stayed (no
 * CAP_SETPCAP). */
int vnic_sandbox_drop_bounding(void);
/* Give up root for uid/gid (both non-zero): no supplementary groups, every
 * capability and the bounding set dropped, no_new_privs set; checked
 * afterwards (setuid(0) must fail).  0, -EINVAL for uid or gid 0, the
 * -errno of setgroups/setresgid/setresuid/prctl, or -EPERM if privilege
 * remains.  Call with no other thread that could still need root. */
int vnic_sandbox_drop(unsigned uid, unsigned gid);
/* Confine every thread of the process to the system calls a serving device
 * makes; any other fails with EPERM.  0, or the -errno of libseccomp
 * (-ENOMEM, or the kernel's refusal). */
int vnic_sandbox_seccomp(void);

/* --- backends ---------------------------------------------------------- */
/* Open (creating if needed) TAP ifname with IFF_NO_PI|IFF_VNET_HDR and a
 * 12-byte vnet header; gro adds IFF_NAPI, so that what the device writes
 * passes the host's GRO; multi_queue adds IFF_MULTI_QUEUE: each call then
 * opens one more queue of the same TAP (which must have been created
 * multiqueue).  Returns the fd or -errno. */
int vnic_tap_open(const char *ifname, char *actual_name, int actual_len, int gro, int multi_queue);

/* --- per-flow statistics ------------------------------------------------ */
/* Each queue pair keeps a table of the flows its worker saw, keyed by
 * direction and 5-tuple.  It starts small, doubles between batches as flows
 * come, up to a bound; at the bound a new flow replaces the least recently
 * seen of a small sample (flow_evictions).  Non-IP frames make one flow per
 * ethertype and direction; IP fragments are keyed without ports (only the
 * first fragment carries them). */
enum vnic_flow_direction {
    VNIC_FLOW_TX = 0,              /* guest to backend */
    VNIC_FLOW_RX = 1               /* backend to guest */
};

/* The offloads a flow's frames used, OR-ed over them.  TX bits name what
 * the guest left to the device; with PASSTHROUGH the TAP did that work. */
enum vnic_flow_offload {
    VNIC_FLOW_CSUM = 0x1,          /* TX: checksum completed (NEEDS_CSUM) */
    VNIC_FLOW_TSO = 0x2,           /* TX: TCP super-frame segmented */
    VNIC_FLOW_USO = 0x4,           /* TX: UDP super-frame segmented */
    VNIC_FLOW_UFO = 0x8,           /* TX: UDP datagram fragmented */
    VNIC_FLOW_PASSTHROUGH = 0x10,  /* TX: handed whole to the TAP, header and all */
    VNIC_FLOW_GSO = 0x100,         /* RX: backend super-frame delivered whole */
    VNIC_FLOW_COALESCED = 0x200,   /* RX: super-frame the device built from segments */
    VNIC_FLOW_CSUM_VALID = 0x400,  /* RX: checksum verified, DATA_VALID set */
    VNIC_FLOW_CSUM_COMPLETED = 0x800 /* RX: partial checksum finished for the guest */
};

enum vnic_flow_table_limits {
    VNIC_FLOW_TABLE_DEFAULT = 4096,   /* bound of each pair's table unless set */
    VNIC_FLOW_TABLE_LIMIT = 1048576   /* largest bound accepted: ~90 MB per pair */
};

/* One flow as vnic_flows_snapshot() reports it.  packets and bytes count
 * what the device put on the wire (TX: a TSO super-frame counts its
 * segments) or into the guest (RX: a coalesced super-frame counts once),
 * as tx_packets/tx_bytes and rx_packets/rx_bytes do. */
struct vnic_flow_record {
    uint8_t src_addr[16];          /* IPv6, or IPv4 mapped (::ffff:a.b.c.d); 0 for non-IP */
    uint8_t dst_addr[16];
    uint16_t src_port;             /* TCP/UDP ports, host order; 0 for other protocols */
    uint16_t dst_port;
    uint16_t ethertype;            /* 0x0800, 0x86dd, or the non-IP type (0 for 802.3 lengths) */
    uint8_t ip_version;            /* 4, 6, or 0 for non-IP */
    uint8_t protocol;              /* IP protocol number */
    uint8_t direction;             /* enum vnic_flow_direction */
    uint8_t queue_pair;
    uint16_t reserved;
    uint32_t offloads;             /* enum vnic_flow_offload bits */
    uint64_t packets;
    uint64_t bytes;
    uint64_t first_seen_ns;        /* CLOCK_MONOTONIC, at the batch that saw it */
    uint64_t last_seen_ns;
};

struct vnic_flow_table_info {
    uint64_t entries;              /* flows held, all pairs */
    uint64_t capacity;             /* entries allocated, all pairs */
    uint64_t max_entries;          /* the bound of each pair's table (0: off) */
    uint64_t evictions;            /* sum of flow_evictions */
    uint64_t grows;                /* sum of flow_table_grows */
};

/* Bound of each pair's table (VNIC_FLOW_TABLE_DEFAULT unless set, at most
 * VNIC_FLOW_TABLE_LIMIT; 0 turns flow statistics off).  Before start, or
 * while running: each worker takes it at its next batch, and this waits
 * for that.  A bound below the flows held empties the table.  0, -EINVAL
 * beyond VNIC_FLOW_TABLE_LIMIT, -ETIMEDOUT when a worker did not take it
 * within a second, or the -errno of waking one (it takes it at its next
 * batch all the same).  Not concurrently with vnic_dev_start/stop. */
int vnic_dev_set_flow_table_max(struct vnic_dev *dev, uint32_t max_entries);
/* Copy up to max live flows into out; returns how many there were (more
 * than max: call again with room for them).  Safe while the workers run:
 * a flow being replaced at that moment may be missing from the copy. */
int vnic_flows_snapshot(struct vnic_dev *dev, struct vnic_flow_record *out, int max);
void vnic_flows_info(struct vnic_dev *dev, struct vnic_flow_table_info *out);
/* Forget every flow (device counters keep counting).  While the workers
 * run, each empties its own table at its next batch; this waits for that.
 * 0, -ETIMEDOUT or a wake's -errno, as vnic_dev_set_flow_table_max.  Not
 * concurrently with vnic_dev_start/stop. */
int vnic_flows_clear(struct vnic_dev *dev);

/* --- packet capture (capture.c: the workers' side, pcapng.c: the writer) -- */
/* Where a capture looks.  WIRE: frames as they leave the device for the
 * backend (after segmentation) and as they come from it (before
 * coalescing and filtering).  GUEST: what the guest handed over and what it
 * was given (super-frames), each with its virtio-net header in a comment. */
enum vnic_capture_what {
    VNIC_CAPTURE_WIRE = 0,
    VNIC_CAPTURE_GUEST = 1
};

enum vnic_capture_direction {
    VNIC_CAPTURE_RX = 1,           /* toward the guest: pcapng "inbound" */
    VNIC_CAPTURE_TX = 2,           /* from the guest: pcapng "outbound" */
    VNIC_CAPTURE_BOTH = 3
};

enum vnic_capture_limit {
    VNIC_CAPTURE_SNAPLEN_MAX = 262144,     /* bytes kept of a frame, at most (tcpdump's) */
    VNIC_CAPTURE_RING_MIN = 65536,         /* each pair's ring, bytes: at least */
    VNIC_CAPTURE_RING_MAX = 268435456,     /* ... and at most */
    VNIC_CAPTURE_RING_DEFAULT = 4194304,
    VNIC_CAPTURE_NAME_MAX = 64             /* interface name and description, with the NUL */
};

struct vnic_capture_config {
    int fd;                        /* where the pcapng file goes; the caller closes it after stop */
    uint32_t snaplen;              /* 1..VNIC_CAPTURE_SNAPLEN_MAX */
    uint32_t directions;           /* enum vnic_capture_direction bits, not 0 */
    uint32_t what;                 /* enum vnic_capture_what */
    uint32_t ring_bytes;           /* each pair's ring; rounded up to a power of two */
    char ifname[VNIC_CAPTURE_NAME_MAX];   /* the interface block's name (may be empty) */
};

struct vnic_capture_status {
    uint32_t running;              /* 1 while a capture is on */
    int32_t write_errno;           /* the file's first write error (0: none); frames after it are lost */
    uint64_t packets_written;      /* enhanced packet blocks in the file */
    uint64_t bytes_written;        /* bytes of the file, blocks and all */
    uint64_t write_drops;          /* frames taken from the rings but not written (write_errno) */
};

/* Would vnic_capture_start() take cfg (its fd aside)?  0, or -EINVAL for
 * a value out of range or a ring that cannot hold two frames of snaplen
 * bytes. */
int vnic_capture_check(const struct vnic_capture_config *cfg);
/* Start capturing into cfg->fd: the file's section and interface blocks
 * are written before this returns, then a writer thread drains the
 * pairs' rings.  The workers copy at most snaplen bytes of each frame into
 * their pair's ring, never waiting: a full ring counts capture_drops.
 * Safe while the workers run.  0, -EBUSY if a capture is on, -EBADF for a
 * negative fd, -EINVAL as vnic_capture_check(), -ENOMEM, -errno of writing the first blocks or of
 * starting the thread (nothing is left running on error). */
int vnic_capture_start(struct vnic_dev *dev, const struct vnic_capture_config *cfg);
/* Stop the capture: the workers stop copying, the writer writes what the
 * rings hold and ends; out (if not NULL) gets the final status.  0, or
 * -ENOENT if no capture was on. */
int vnic_capture_stop(struct vnic_dev *dev, struct vnic_capture_status *out);
/* The capture's status now (all zero when none is on). */
void vnic_capture_status(struct vnic_dev *dev, struct vnic_capture_status *out);

/* --- fault injection (faults.c) ---------------------------------------- */
/* What goes wrong on one pair's one direction, between the device and the
 * backend, in parts per million of frames.  Decisions come from a
 * generator seeded per pair and direction, so the same seed, faults and
 * traffic give the same decisions.  TX faults apply to each wire frame
 * (the segments of a super-frame one by one) in segment mode; corruption
 * changes one payload byte after the checksums were computed, so the peer
 * must catch it.  RX faults apply to each frame read from the backend;
 * corruption first completes a partial checksum and skips super-frames
 * (whose checksum nobody would verify), and bad_csum (RX only) writes a
 * wrong TCP/UDP checksum yet tells the guest DATA_VALID: a lying NIC.
 * A delay, its jitter and a rate hold frames in a delay line per pair and
 * direction (2 MiB; a frame that finds it full is dropped and counted as
 * fault_*_queue_drops), in order; reorder lets frames skip the delay, so
 * they overtake those held. */
enum vnic_fault_limit {
    VNIC_FAULT_PPM_MAX = 1000000,
    VNIC_FAULT_DELAY_US_MAX = 10000000,    /* delay and jitter: 10 s at most */
    VNIC_FAULT_RATE_KBPS_MAX = 100000000   /* 100 Gbit/s */
};

struct vnic_faults {
    uint32_t drop_ppm;
    uint32_t duplicate_ppm;
    uint32_t corrupt_ppm;
    uint32_t bad_csum_ppm;         /* RX only */
    uint32_t reorder_ppm;          /* frames that skip the delay and overtake (needs delay_us) */
    uint32_t delay_us;             /* frames held this long ... */
    uint32_t jitter_us;            /* ... give or take up to this (order kept) */
    uint32_t rate_kbps;            /* the link's rate, 0: unlimited */
    uint64_t seed;
};

/* Put f in force on pair (-1: every pair) for the directions (enum
 * vnic_capture_direction bits: RX, TX or both); all zero clears.  Safe
 * while the workers run (each takes it at its next frame).  0, or -EINVAL
 * for a pair out of range, no or unknown direction bits, a rate above
 * VNIC_FAULT_PPM_MAX, a delay or jitter above VNIC_FAULT_DELAY_US_MAX, a
 * rate above VNIC_FAULT_RATE_KBPS_MAX, reorder without a delay, or
 * bad_csum_ppm on TX. */
int vnic_faults_set(struct vnic_dev *dev, int pair, uint32_t directions, const struct vnic_faults *f);
/* Stop (on != 0) or resume receiving: while stopped no worker reads the
 * backend, so frames wait there (a TAP's own queue drops what overflows
 * it, counted by the kernel as the TAP's TX drops).  Resuming wakes the
 * workers.  Counted in pair 0's fault_rx_starves when it stops.  0, or
 * the -errno of waking a worker. */
int vnic_faults_rx_starve(struct vnic_dev *dev, int on);
/* The control plane flapped the link on purpose: count it (pair 0's
 * fault_link_flaps). */
void vnic_faults_count_flap(struct vnic_dev *dev);
/* The faults in force on pair for one direction (VNIC_CAPTURE_RX or _TX).
 * 0, or -EINVAL for a pair or direction out of range. */
int vnic_faults_get(struct vnic_dev *dev, int pair, uint32_t direction, struct vnic_faults *out);

/* cdef-end */

#endif
