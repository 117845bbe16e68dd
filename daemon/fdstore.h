/* SPDX-License-Identifier: MIT */
/*
 * systemd's file-descriptor store (DESIGN.md §8): pagerd hands systemd a
 * copy of every descriptor a client depends on, so that a restarted pagerd
 * gets its clients back instead of leaving their faults to wait forever.
 *
 * What goes into the store, one FDSTORE=1 message per descriptor, each with
 * a name the successor sorts them by (sd_notify(3): at most 255 characters,
 * no ':' and no control characters):
 *
 *   c<ID>.sock    a client's connection (requests sent while pagerd is
 *                 down wait in it for the successor)
 *   c<ID>.state   a memfd with what the client negotiated (struct
 *                 fdstore_client_rec)
 *   c<ID>.uffd    its userfaultfd
 *   c<ID>.agent   libpager's agent socket
 *   c<ID>.pagemap the client's /proc/PID/pagemap, when it sent it (pagerd
 *                 may not be allowed to open it again)
 *   r<ID>.mem     a region's memfd: every resident page is in it
 *   r<ID>.state   a memfd with the region's header (struct
 *                 fdstore_region_hdr), its page-state array and its slot
 *                 array.  pagerd works in this mapping itself (region.state
 *                 and region.slot point into it), so it is current at every
 *                 instant, even when pagerd is killed.
 *   r<ID>.image   the image a region is being restored from
 *   r<ID>.crc     its IMAGE.crc table (a sealed memfd), if it has one
 *   r<ID>.rbd     instead of r<ID>.image, for an RBD image: its rbd:...
 *                 name (a sealed memfd); the successor opens it again and
 *                 reads from it only if its table is r<ID>.crc
 *   swap          the swap file, when it is an unnamed one (a named one is
 *                 opened again by its path)
 *   swapmeta      the swap store's per-slot owner and CRC32C table (swap.c)
 *   config        the settings in effect, as a pagerd.conf (config_print())
 *
 * and FDSTOREREMOVE=1 for every name when its client or region goes, so
 * nothing stale piles up.
 *
 * A successor finds them among LISTEN_FDS, named by LISTEN_FDNAMES, beside
 * the listening socket of pagerd.socket.  It checks each one (type, size,
 * seals, header magic, version and size, ids) before it trusts it, refuses
 * (closes, logs, removes from the store) whatever fails, then rebuilds every
 * client: it sanitises the page states its predecessor left (a write-back
 * cut short is still in the memfd; a swap-in cut short is still in its
 * slot), claims each page's slot in the swap store (whose tag must name that
 * very page), and UFFDIO_WAKEs every registered range so the threads whose
 * fault messages died with the old daemon fault again.
 *
 * Only with NOTIFY_SOCKET set, fd_store = yes and not for a private daemon;
 * descriptors passed in are adopted whatever fd_store says.
 */
#ifndef PAGERD_FDSTORE_H
#define PAGERD_FDSTORE_H

#include <stdbool.h>
#include <stdint.h>

#include "pagerd.h"

#define FDSTORE_VERSION 1
#define FDSTORE_REGION_MAGIC 0x6e67657264726770ull /* "pgrdregn" */
#define FDSTORE_CLIENT_MAGIC 0x746e6c6364726770ull /* "pgrdclnt" */

/*
 * A region's counters in r<ID>.state, as version 1 of the store lays them
 * out (struct counters as it was then).  A successor must read what its
 * predecessor wrote, so this does not follow common/counters.h: a counter
 * missing here (image_reads, and any added since) starts at 0 after a
 * restart.  Adding one here changes the header: raise FDSTORE_VERSION.
 */
#define FDSTORE_COUNTERS(X) \
	X(faults_missing) X(faults_wp) X(pages_zero_filled) X(swap_ins) \
	X(swap_outs) X(evict_zero) X(evict_clean) X(evict_dirty) \
	X(evict_aborted) X(readahead) X(readahead_hits) X(poisoned)

struct fdstore_counters {
	uint64_t faults_missing;
	uint64_t faults_minor;     /* never counted: 0 */
	uint64_t faults_wp;
	uint64_t pages_zero_filled;
	uint64_t swap_ins;
	uint64_t swap_outs;
	uint64_t evict_zero;
	uint64_t evict_clean;
	uint64_t evict_dirty;
	uint64_t evict_aborted;
	uint64_t readahead;
	uint64_t readahead_hits;
	uint64_t poisoned;
};

/* At offset 0 of r<ID>.state; the state array at state_off (uint16 a
 * page), the slot array at slot_off (uint32 a page: slot + 1, 0 = none). */
struct fdstore_region_hdr {
	uint64_t magic;
	uint32_t version;
	uint32_t hdr_size;         /* sizeof(struct fdstore_region_hdr) */
	uint64_t file_size;        /* of the memfd, sealed */
	uint64_t npages;
	uint32_t page_size;
	uint32_t flags;            /* FDSTORE_R_* */
	uint64_t region_id;
	uint64_t client_id;
	uint64_t addr;             /* in the client */
	uint64_t len;
	uint64_t memory_limit;     /* pages, 0 = none */
	uint64_t state_off;
	uint64_t slot_off;
	int32_t snap_status;       /* of the last snapshot, when snap_state is DONE */
	uint32_t snap_state;       /* FDSTORE_SNAP_* */
	uint64_t snap_total, snap_done, snap_pause_ns;
	struct fdstore_counters stats; /* as of the last hand-over */
	char name[PROTO_NAME_MAX];
};

/* What version 1 wrote, and a successor checks (hdr_size). */
_Static_assert(sizeof(struct fdstore_region_hdr) == 296,
	       "the fd store's region header changed: raise FDSTORE_VERSION");

#define FDSTORE_R_IMAGE_PREFETCH 0x1 /* prefetch from r<ID>.image */
#define FDSTORE_R_HANDED_OVER    0x2 /* a graceful hand-over wrote this */

enum {
	FDSTORE_SNAP_NONE = 0,
	FDSTORE_SNAP_RUNNING = 1, /* a successor reports it failed */
	FDSTORE_SNAP_DONE = 2,
};

/* c<ID>.state */
struct fdstore_client_rec {
	uint64_t magic;
	uint32_t version;
	uint32_t hdr_size;         /* sizeof(struct fdstore_client_rec) */
	uint64_t id;
	uint32_t flags;            /* FDSTORE_C_* */
	uint32_t reserved;
	uint64_t memory_limit;     /* pages, 0 = the configured default */
};

#define FDSTORE_C_HELLO         0x1
#define FDSTORE_C_CONTROL       0x2
#define FDSTORE_C_KERNEL_FAULTS 0x4

/* Bits of client.stored and region.stored: which names are in the store. */
#define STORED_SOCK   0x1
#define STORED_STATE  0x2
#define STORED_UFFD   0x4
#define STORED_AGENT  0x8
#define STORED_MEM    0x10
#define STORED_IMAGE  0x20
#define STORED_PAGEMAP 0x40
#define STORED_CRC    0x80
#define STORED_RBD    0x100

/*
 * The table of what LISTEN_FDS brought: fdstore_open() fills it, adoption
 * (fdstore_adopt.c) takes from it what it rebuilds and refuses the rest.
 */
/* What a stored descriptor is, from its name. */
enum kind {
	K_OTHER,      /* not one of ours: the socket unit's, or a stray */
	K_SWAP,
	K_SWAPMETA,
	K_CONFIG,
	K_CSOCK,
	K_CSTATE,
	K_CUFFD,
	K_CAGENT,
	K_CPAGEMAP,
	K_RMEM,
	K_RSTATE,
	K_RIMAGE,
	K_RCRC,
	K_RRBD,       /* r<ID>.rbd: the rbd:... name of the image it restores */
};

struct stored {
	int fd;          /* -1 once taken or refused */
	enum kind kind;
	uint64_t id;
	char name[256];  /* printable: control characters shown as '?' */
	bool raw_ok;     /* the name as passed may be sent back in FDNAME= */
};

struct fdstore {
	struct stored *v;
	size_t n;
	bool notify_failed; /* logged once */
	int config_fd;      /* "config": the settings in effect, or -1 */
};

/* A region's header in r<ID>.state, or NULL (not stored). */
static inline struct fdstore_region_hdr *fdstore_hdr(const struct region *r)
{
	return r->state_map;
}

/* The stored descriptor of kind k for id (0 for the daemon's), or NULL. */
struct stored *fdstore_find(struct daemon *d, enum kind k, uint64_t id);
/* Takes the descriptor out of the table (s may be NULL: -1): the caller
 * owns it now. */
int fdstore_take(struct stored *s);
/* Closes a descriptor pagerd will not use, says why, and takes its name
 * out of the store. */
void fdstore_refuse(struct daemon *d, struct stored *s, const char *why);
/* The layout of r<ID>.state for npages: header page, states, slots. */
void fdstore_state_layout(uint64_t npages, size_t ps, uint64_t *state_off,
			  uint64_t *slot_off, uint64_t *size);

/*
 * At start: decides whether pagerd stores (d->fdstore_on) and sorts what
 * LISTEN_FDS brought by name.  Bad descriptors are refused (logged, closed,
 * removed from the store) here or when adopted; nothing passed in can make
 * pagerd fail to start.  Returns 0 or -ENOMEM.
 */
int fdstore_open(struct daemon *d);
/* The listening socket among them (the caller owns it), or -1. */
int fdstore_take_listener(struct daemon *d);
/* A stored unnamed swap file, opened again and locked once the previous
 * pagerd's I/O on it is over (the caller owns it), or -1. */
int fdstore_take_swap(struct daemon *d);
/* With a predecessor: waits until its I/O on the swap at path is over. */
void fdstore_swap_wait_path(struct daemon *d, const char *path);
/* The swap is open (or there is none): adopts the stored slot table, or
 * shares a new one and stores it (and the swap itself if `unnamed` and not
 * `adopted` from the store). */
void fdstore_swap_opened(struct daemon *d, bool unnamed, bool adopted);
/* Rebuilds every stored client and wakes their threads; refuses what is
 * left over.  Call once the swap is open. */
void fdstore_adopt(struct daemon *d);
void fdstore_close(struct daemon *d);

/*
 * Before the configuration is loaded: whether LISTEN_FDS brings clients to
 * take over (*ret_clients), and the stored configuration's descriptor, or
 * -1.  Leaves LISTEN_FDS for fdstore_open().
 */
int fdstore_peek(bool *ret_clients);
/* Puts the settings in effect in the store (at start, after a reload). */
void fdstore_config_sync(struct daemon *d);

/* Hooks: what the store must hold, or no longer hold. */
void fdstore_client_hello(struct client *c);
void fdstore_client_sync(struct client *c);
void fdstore_client_agent(struct client *c, bool attached);
void fdstore_client_pagemap(struct client *c);
void fdstore_client_gone(struct client *c);
/* A new region: with the store on, its states move into a memfd (0 or
 * -errno: the region cannot be kept), then it is stored. */
int fdstore_region_added(struct region *r);
void fdstore_region_sync(struct region *r);
void fdstore_region_image(struct region *r);
void fdstore_region_gone(struct region *r);

/*
 * SIGTERM: everything in flight is settled (running snapshots fail with
 * -ESHUTDOWN, swap I/O drains, removed pages are reconciled), headers get
 * their counters, connections not stored yet are stored, and d->handover
 * makes the teardown that follows leave the shared state and the store
 * alone.  A no-op unless pagerd stores.
 */
void fdstore_handover(struct daemon *d);

#endif
