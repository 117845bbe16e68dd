/* SPDX-License-Identifier: MIT */
/*
 * The wire protocol between libpager (and pagerctl) and pagerd.
 *
 * Transport: a SOCK_SEQPACKET Unix socket, so every message arrives whole or
 * not at all.  Each message is a fixed header followed by a body whose size
 * is fixed per type; file descriptors travel as SCM_RIGHTS on the message
 * that needs them.  All integers are in host byte order (both ends share a
 * machine).  The header carries a magic and a version: a peer speaking
 * another version gets -EPROTONOSUPPORT, not a misread.
 *
 * Every request carries a sequence number; the reply echoes it together with
 * a status (0 or -errno).  Requests on one connection are answered in order.
 *
 * This module only encodes, decodes and validates; it never allocates and
 * never logs, so both the library and the daemon link it.
 */
#ifndef PAGER_PROTO_H
#define PAGER_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "counters.h"

#define PROTO_MAGIC   0x50475244u /* "PGRD" */
#define PROTO_VERSION 6u

/* The largest message either side sends or accepts. */
#define PROTO_MAX_MSG 1024u
/* The most file descriptors one message may carry (a snapshot's image, its
 * IMAGE.crc and its IMAGE.order). */
#define PROTO_MAX_FDS 3

enum proto_type {
	/* requests */
	PROTO_HELLO = 1,          /* first message; a client sends its uffd */
	PROTO_REGION_CREATE = 2,  /* carries the region's memfd */
	PROTO_REGION_DESTROY = 3,
	PROTO_STATUS = 4,         /* daemon-wide counters (pagerctl) */
	PROTO_AGENT_ATTACH = 5,   /* carries libpager's agent socket */
	PROTO_REGION_SET_LIMIT = 6,
	PROTO_REGION_DISCARD = 7,
	PROTO_REGION_STATS = 8,
	PROTO_REGION_INFO = 9,    /* control: the index-th region of all */
	PROTO_SET_LIMIT = 10,     /* control: global, client or region limit */
	PROTO_TEST_INJECT = 11,   /* only with pagerd --test-hooks */
	PROTO_SNAPSHOT_START = 12, /* carries the image fd and its IMAGE.crc memfd
				    * (and, PROTO_SNAPSHOT_ORDER, the
				    * IMAGE.order memfd to fill) */
	PROTO_SNAPSHOT_STATUS = 13,
	PROTO_REGION_SET_IMAGE = 14, /* carries the image to restore from (and
				      * its IMAGE.crc memfd, unless format 1;
				      * last, PROTO_IMAGE_ORDER, its IMAGE.order) */
	PROTO_PAGEMAP = 15,       /* carries the client's /proc/self/pagemap */
	PROTO_IMAGE_INFO = 16,    /* what a named (rbd:) image holds */
	PROTO_TYPE_MAX_REQUEST = PROTO_IMAGE_INFO,
	/* replies */
	PROTO_REPLY = 100,
	/* daemon to libpager's agent thread, on the agent socket */
	PROTO_AGENT_DROP = 120,
	/* ... and back, once a drop is done: its seq, no body */
	PROTO_AGENT_DONE = 121,
};

struct proto_hdr {
	uint32_t magic;
	uint16_t version;
	uint16_t type;
	uint32_t size;  /* of the whole message, header included */
	uint32_t seq;
} __attribute__((packed));

/* hello.flags */
#define PROTO_HELLO_CONTROL      (1u << 0) /* pagerctl: no uffd, no regions */
#define PROTO_HELLO_KERNEL_FAULTS (1u << 1) /* uffd opened without USER_MODE_ONLY */

struct proto_hello {
	uint32_t flags;
	uint32_t page_size;
	uint64_t uffd_features; /* what UFFDIO_API granted the client */
} __attribute__((packed));

/* region_create.flags: none yet, must be 0 */
#define PROTO_NAME_MAX 64

struct proto_region_create {
	uint64_t addr;      /* where the client mapped the memfd */
	uint64_t len;       /* bytes, a page multiple; the memfd's exact size */
	uint64_t memory_limit;
	uint32_t flags;
	char name[PROTO_NAME_MAX]; /* NUL-terminated, printable */
} __attribute__((packed));

struct proto_region_destroy {
	uint64_t region_id;
} __attribute__((packed));

struct proto_region_set_limit {
	uint64_t region_id;
	uint64_t limit;     /* bytes, 0 = none */
} __attribute__((packed));

struct proto_region_discard {
	uint64_t region_id;
	uint64_t offset;    /* bytes, page-aligned */
	uint64_t len;       /* bytes, page-aligned, > 0 */
} __attribute__((packed));

struct proto_region_ref {
	uint64_t region_id; /* REGION_STATS */
	uint64_t index;     /* REGION_INFO: 0.. until -ENOENT */
} __attribute__((packed));

enum proto_limit_scope {
	PROTO_LIMIT_GLOBAL = 0,
	PROTO_LIMIT_CLIENT = 1,
	PROTO_LIMIT_REGION = 2,
};

struct proto_set_limit {
	uint32_t scope;     /* enum proto_limit_scope */
	uint32_t pad;
	uint64_t id;        /* client or region id */
	uint64_t limit;     /* bytes, 0 = none */
} __attribute__((packed));

enum proto_inject {
	PROTO_INJECT_EIO = 1,     /* the page's next swap read fails */
	PROTO_INJECT_CORRUPT = 2, /* flip a byte of its slot on disk */
	/* The whole region's write-backs (page unused), until CLEAR: */
	PROTO_INJECT_WRITE_EIO = 3,   /* swap writes fail with EIO */
	PROTO_INJECT_WRITE_SHORT = 4, /* they stop half-way, then ENOSPC */
	PROTO_INJECT_SLOT_RECORD = 5, /* recording their slots fails (ENOMEM) */
	PROTO_INJECT_CLEAR = 6,       /* write-backs work again */
	/* The region's next stats walk (region_reconcile()) waits, the daemon
	 * lock let go, until region `page` (an id) has a resident page: */
	PROTO_INJECT_HOLD_RECONCILE = 7,
};

struct proto_test_inject {
	uint64_t region_id;
	uint64_t page;
	uint32_t kind;      /* enum proto_inject */
	uint32_t pad;
} __attribute__((packed));

/* "rbd:POOL/NAMESPACE/IMAGE" with each name at its longest, and its NUL. */
#define PROTO_IMAGE_NAME_MAX 304

/* SNAPSHOT_START, SNAPSHOT_STATUS, REGION_SET_IMAGE: a region of the
 * client's own, or any region for a control client (pagerctl).
 * IMAGE_INFO: region_id 0, an image named.
 *
 * An image is a file the client opened (its fds on the message, image
 * empty), or named in `image` (no fds): an "rbd:" image pagerd opens with
 * its own Ceph identity, after checking the client's uid against its
 * grants (rbd_allow). */
struct proto_snapshot {
	uint64_t region_id;
	uint32_t flags;     /* PROTO_IMAGE_* for SET_IMAGE, PROTO_SNAPSHOT_*
			     * for SNAPSHOT_START, else 0 */
	uint32_t pad;
	char image[PROTO_IMAGE_NAME_MAX]; /* NUL-terminated, printable, or "" */
} __attribute__((packed));

#define PROTO_IMAGE_NO_PREFETCH (1u << 0)
/* SET_IMAGE: the last fd is the image's IMAGE.order (sealed memfd). */
#define PROTO_IMAGE_ORDER       (1u << 1)
/* SNAPSHOT_START: a third fd, the IMAGE.order memfd to fill. */
#define PROTO_SNAPSHOT_ORDER    (1u << 0)

/* IMAGE_INFO's answer: a named image's metadata (common/image.h). */
struct proto_image_info {
	uint64_t size;
	uint64_t data_pages;
	uint64_t created;
	uint32_t page_size;
	uint32_t format;
	char name[64];
} __attribute__((packed));

struct proto_snapshot_status {
	uint64_t pages_total;
	uint64_t pages_done;
	uint64_t pause_ns;
	int32_t status;     /* 0 or -errno */
	uint32_t done;      /* 1 when finished (status says how) */
} __attribute__((packed));

#define PROTO_DROP_MAX 48
struct proto_agent_drop {
	uint32_t n;
	uint32_t pad;
	struct { uint64_t addr, len; } range[PROTO_DROP_MAX];
} __attribute__((packed));

/* Every counter of common/counters.h, in its order (STATUS). */
struct proto_counters {
#define X(name, ...) uint64_t name;
	PAGER_COUNTERS(X)
#undef X
} __attribute__((packed));

/* The REGION counters alone, in the same order (REGION_STATS, _INFO). */
struct proto_region_counters {
#define X(name, scope, ...) COUNTER_IF_##scope(uint64_t name;)
	PAGER_COUNTERS(X)
#undef X
} __attribute__((packed));

/* One region, for REGION_STATS and REGION_INFO. */
struct proto_region_stats {
	uint64_t region_id;
	uint64_t client_id;
	int32_t client_pid;
	uint32_t pad;
	uint64_t pages;
	uint64_t resident;
	uint64_t swapped;
	uint64_t zero;
	uint64_t memory_limit;
	uint64_t image_pending;
	char name[PROTO_NAME_MAX];
	struct proto_region_counters counters;
	uint64_t pool_pages;  /* in the compressed pool */
	uint64_t pool_bytes;  /* ... the memory they take */
} __attribute__((packed));

/* The reply to every request.  Fields a request does not use are zero. */
struct proto_reply {
	int32_t status;     /* 0 or -errno */
	uint32_t version;   /* hello: the daemon's protocol version */
	uint64_t region_id; /* region_create */
	/* status */
	uint64_t clients;
	uint64_t regions;
	uint64_t mapped_bytes;
	uint64_t resident_pages;
	uint64_t uptime_ms;
	int32_t pid;
	uint32_t config_errors;   /* in pagerd.conf, not in effect (0: none) */
	uint64_t memory_limit;    /* bytes, 0 = none */
	uint64_t swap_total;      /* slots */
	uint64_t swap_used;
	uint64_t swap_io_errors;  /* read/write/CRC errors */
	uint64_t swap_bad;        /* slots retired: a write to them failed */
	uint32_t over_limit;      /* 1: nothing could be evicted, limits let go */
	uint32_t swap_failing;    /* 1: swap writes fail, write-back paused */
	struct proto_counters counters;
	struct proto_region_stats region; /* REGION_STATS, REGION_INFO */
	struct proto_snapshot_status snapshot; /* SNAPSHOT_STATUS */
	uint64_t pool_pages;      /* status: in the compressed pool */
	uint64_t pool_bytes;      /* ... the memory they take */
	struct proto_image_info image; /* IMAGE_INFO */
} __attribute__((packed));

union proto_body {
	struct proto_hello hello;
	struct proto_region_create region_create;
	struct proto_region_destroy region_destroy;
	struct proto_region_set_limit region_set_limit;
	struct proto_region_discard region_discard;
	struct proto_region_ref region_ref;
	struct proto_set_limit set_limit;
	struct proto_test_inject test_inject;
	struct proto_snapshot snapshot;
	struct proto_reply reply;
	struct proto_agent_drop agent_drop;
};

struct proto_msg {
	struct proto_hdr hdr;
	union proto_body body;
} __attribute__((packed));

/*
 * Fills in a message of `type` whose body the caller has already written to
 * msg->body; returns the number of bytes to send.
 */
size_t proto_finish(struct proto_msg *msg, enum proto_type type, uint32_t seq);

/* The body size a type must have, or 0 for an unknown type. */
size_t proto_body_size(uint16_t type);

/* How many fds a message of this type must carry. */
unsigned proto_fds_expected(uint16_t type);

/*
 * Checks a received message of `n` bytes: magic, version, declared size
 * equal to `n` and to the type's size, and the body's fields (flags known,
 * names terminated, sizes sane).  Returns 0 or:
 *   -EBADMSG          truncated, bad magic, or size mismatch
 *   -EPROTONOSUPPORT  another protocol version
 *   -EOPNOTSUPP       unknown type
 *   -EINVAL           a field out of range
 */
int proto_validate(const void *buf, size_t n);

/*
 * Sends `n` bytes of `msg` with up to PROTO_MAX_FDS descriptors (fds may be
 * NULL when nfds is 0).  Returns 0 or -errno.  Retries EINTR.
 */
int proto_send(int sock, const struct proto_msg *msg, size_t n,
	       const int *fds, unsigned nfds);

/*
 * Receives one message into `msg`.  Received descriptors are stored in fds[]
 * (O_CLOEXEC) and counted in *nfds; on any error they are already closed.
 * Returns the message size (> 0), 0 at end of stream, or -errno:
 *   -EMSGSIZE  the message or its descriptors did not fit (all closed)
 *   -EAGAIN    non-blocking socket with nothing to read
 * The message is not validated: call proto_validate().
 */
ssize_t proto_recv(int sock, struct proto_msg *msg, int fds[PROTO_MAX_FDS],
		   unsigned *nfds);

/*
 * proto_recv(), and with SO_PASSCRED set on sock, the pid of the process
 * that sent the message as the kernel vouches for it (in the receiver's
 * pid namespace; 0 if it has none there) in *ret_pid.  *ret_pid is left
 * alone when the message carries no credentials.
 */
ssize_t proto_recv_cred(int sock, struct proto_msg *msg, int fds[PROTO_MAX_FDS],
			unsigned *nfds, pid_t *ret_pid);

/* A printable name for a message type, for logs. */
const char *proto_type_name(uint16_t type);

#endif /* PAGER_PROTO_H */
