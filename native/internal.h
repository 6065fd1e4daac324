/* internal.h - structures shared by the data-plane C files.  Python never
 * sees these; it only holds opaque pointers (see vnic.h). */
#ifndef VNIC_INTERNAL_H
#define VNIC_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/uio.h>
#include "vnic.h"

#define VNIC_MAX_QP        8
#define VNIC_MAX_QUEUES    (2 * VNIC_MAX_QP)
#define VNIC_MAX_VECTORS   (VNIC_MAX_QUEUES + 1)
#define VNIC_MAX_REGIONS   256
#define VNIC_NO_VECTOR     0xffff
#define VNIC_NET_HDR_LEN   12          /* virtio_net_hdr_mrg_rxbuf, VERSION_1 */
#define VNIC_MAX_FRAME     65535       /* largest frame a backend hands us */
#define VNIC_MAX_SEGS      1024        /* guest memory pieces in one chain */
#define VNIC_MAX_INDIRECT  1024        /* descriptors in one indirect table */
#define VNIC_BATCH         64          /* chains handled before notifying */

/* virtio feature bits the data plane cares about */
#define VIRTIO_F_INDIRECT_DESC   28
#define VIRTIO_F_EVENT_IDX       29
#define VIRTIO_NET_F_MRG_RXBUF   15

#define VRING_DESC_F_NEXT      1
#define VRING_DESC_F_WRITE     2
#define VRING_DESC_F_INDIRECT  4
#define VRING_AVAIL_F_NO_INTERRUPT 1

/* ---- guest memory ------------------------------------------------------ */
struct mem_region {
    uint64_t iova;
    uint64_t len;
    uint8_t *host;         /* NULL: reached through DMA_READ/DMA_WRITE messages */
    bool writable;
};

struct vnic_mem {
    int count;
    struct mem_region region[VNIC_MAX_REGIONS];   /* sorted by iova */
    struct vnic_chan *chan;                        /* for message regions */
};

/* One piece of guest memory in a descriptor chain. */
struct seg {
    uint64_t iova;
    uint8_t *host;         /* NULL for message-based memory */
    uint32_t len;
};

/* Translate the longest prefix of [iova, iova+len) that lies in one region.
 * Returns its length (0: not mapped or not writable when write is set). */
uint64_t mem_piece(struct vnic_mem *mem, uint64_t iova, uint64_t len, bool write, uint8_t **host);
int mem_copy_from(struct vnic_mem *mem, uint64_t iova, void *dst, uint64_t len);
int mem_copy_to(struct vnic_mem *mem, uint64_t iova, const void *src, uint64_t len);
/* A host pointer covering the whole range, or NULL (unmapped or message). */
void *mem_direct(struct vnic_mem *mem, uint64_t iova, uint64_t len, bool write);

/* ---- channel DMA (message fallback) -------------------------------------- */
int chan_dma_read(struct vnic_chan *ch, uint64_t iova, void *dst, uint64_t len);
int chan_dma_write(struct vnic_chan *ch, uint64_t iova, const void *src, uint64_t len);

/* ---- split virtqueue ------------------------------------------------------ */
struct vring_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

struct vq {
    struct vnic_dev *dev;
    int index;
    uint16_t size;
    uint64_t desc_addr, avail_addr, used_addr;
    /* Direct pointers when the rings sit in mapped memory, else NULL and
     * every ring access goes through mem_copy_*. */
    struct vring_desc *desc;
    uint16_t *avail;       /* flags, idx, ring[size], used_event */
    uint16_t *used;        /* flags, idx, then ring of {u32 id, u32 len}, avail_event */
    bool configured;
    bool enabled;
    uint16_t last_avail;   /* next avail entry the device will read */
    uint16_t used_idx;     /* shadow of used->idx */
    uint16_t signalled_used;
    bool signalled_valid;
    uint16_t vector;
    int kick_fd;           /* eventfd the driver's doorbell writes */
};

/* A descriptor chain popped from the avail ring. */
struct chain {
    uint16_t head;
    int nout, nin;                  /* readable pieces first, then writable */
    uint64_t out_len, in_len;
    struct seg seg[VNIC_MAX_SEGS];
};

int vq_map(struct vq *vq);
bool vq_has_avail(struct vq *vq, uint16_t *count);
/* Pop the next chain; 1 popped, 0 ring empty, <0 -enum vnic_error. */
int vq_pop(struct vq *vq, struct chain *c);
/* Peek/consume for RX: pop without committing, then commit n chains. */
void vq_push_used(struct vq *vq, uint16_t head, uint32_t len, uint16_t offset);
void vq_publish_used(struct vq *vq, uint16_t count);
/* After draining: ask for the next kick (EVENT_IDX avail_event or flags),
 * then re-check for buffers added meanwhile. */
bool vq_enable_notify(struct vq *vq);
void vq_disable_notify(struct vq *vq);
bool vq_should_interrupt(struct vq *vq);
void vq_rewind(struct vq *vq, uint16_t n);

/* ---- device ------------------------------------------------------------- */
struct irq_vector {
    int fd;
    bool masked;
    bool pending;
};

struct qpair {
    struct vnic_dev *dev;
    int index;
    struct vq rx, tx;
    pthread_t thread;
    bool thread_started;
    int stop_fd;                 /* eventfd: wake the worker to stop */
    uint8_t *rx_frame;           /* one frame read from the backend */
    uint32_t rx_frame_len;       /* 0: none pending */
    uint8_t *tx_bounce;          /* gather buffer for message-based memory */
    struct chain *chain;         /* scratch chain (large, so on the heap) */
    bool backend_paused;         /* RX: no guest buffers, backend not polled */
};

struct vnic_dev {
    int nqp;
    struct qpair qp[VNIC_MAX_QP];
    struct vnic_mem mem;
    uint64_t features;
    bool event_idx, mrg_rxbuf, indirect;
    int backend_kind;
    int backend_fd;
    pthread_mutex_t irq_lock;
    struct irq_vector vec[VNIC_MAX_VECTORS];
    uint16_t config_vector;
    atomic_uchar isr;
    atomic_int error;
    atomic_bool stopping;
    bool running;
    struct vnic_queue_stats stats[VNIC_MAX_QP];
};

void dev_fail(struct vnic_dev *dev, int reason, struct vnic_queue_stats *st);
void dev_notify_queue(struct vnic_dev *dev, struct vq *vq, uint64_t *counter);

/* per-direction processing, run on the worker thread */
int tx_process(struct qpair *qp);        /* >0: more work pending */
int rx_process(struct qpair *qp);        /* >0: more work pending */
void *worker_main(void *arg);

#endif
