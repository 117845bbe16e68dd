/* SPDX-License-Identifier: MIT */
/*
 * pagerd's core objects and how the subsystems call each other.  In this
 * order a file calls only files after it (README, "How the pieces fit"):
 *
 *   main.c    signals, the listening socket, the event loop
 *   fdstore_adopt.c  a restarted pagerd takes its clients back from
 *             systemd's fd store
 *   client.c  one connection: protocol requests, checking what a client
 *             sends, tearing a client down; its socket, uffd and retry
 *             callbacks
 *   metrics.c the Prometheus endpoint (metrics.h); notify.c sd_notify:
 *             readiness, status, watchdog (notify.h)
 *   fdstore.c systemd's fd store: what pagerd keeps there (fdstore.h)
 *   stats.c   what metrics, notify and pagerctl report (stats.h)
 *   evict.c   eviction: zero, clean and dirty victims, write-back, punch;
 *             retries the faults that waited for room
 *   fault.c   the userfaultfd: reading faults and events, resolving them
 *   snapshot.c copy-on-write snapshots to an image; lazy restore from one,
 *             its learned prefetch
 *   swapin.c  bringing pages back from swap, readahead, poisoning lost ones
 *   region.c  one region: its constructor, pagerd's mapping of the memfd,
 *             its client's table of regions
 *   agent.c   libpager's agent thread: drops PTEs to sample references
 *   page.c    page states and every count kept from them, through named
 *             transitions, which keep the snapshot rule; the invariant
 *             checker (page.h)
 *   limits.c  resident accounting against global, client and region
 *             limits; the eviction timer
 *   tier.c    the compressed pool as the limits see it: its pages in a
 *             limit, spilling it under one (tier.h)
 *   clock.c   the Clock hand: which resident page to evict next
 *   uffd.c    the UFFDIO_* ioctls on a client's uffd, and only those (uffd.h)
 *   conn.c    marks a lower layer leaves on a client (drop it, send its
 *             deferred reply) for client.c's socket callback
 *   swap.c    the swap store: slots, CRC32C, on a store (store.h)
 *   pool.c    the compressed pool swap.c keeps in front of its store (pool.h)
 *   store_file.c the store interface's file backend, on io.c;
 *             store_rbd.c its Ceph RBD backend, on librbd
 *   io.c      the asynchronous I/O engine: one io_uring for every disk
 *   learn.c   what a restored application touched first, and the
 *             IMAGE.order codec (learn.h)
 *   config.c  settings: pagerd.conf, options, reload (config.h)
 *   log.c     the log, and the monotonic clock (log.h)
 *   lock.c    the daemon lock, the loop's and the fault threads' (lock.h)
 *
 * Everything runs in one libevent loop, and in the fault threads
 * (fault.c), each holding the daemon lock (lock.h) while it touches
 * anything: one at a time, as on one thread.  Only page.c writes
 * a page's state (below) or the resident, swapped, writeback, reading and
 * image_pending counts of regions, clients and the daemon.
 */
#ifndef PAGERD_H
#define PAGERD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <linux/userfaultfd.h>

#include "config.h"
#include "counters.h"
#include "proto.h"

struct event_base;
struct event;
struct metrics;
struct notify;

/* Counted per region and for the whole daemon (the same struct): the
 * list is common/counters.h.  A DAEMON counter stays 0 in a region. */
struct counters {
#define X(name, ...) uint64_t name;
	PAGER_COUNTERS(X)
#undef X
};

/* Adds n to a counter of region r and of the whole daemon. */
#define counter_add(r, name, n) do {				\
		uint64_t counter_n_ = (n);			\
		(r)->stats.name += counter_n_;			\
		(r)->client->d->stats.name += counter_n_;	\
	} while (0)

struct region;
struct image_wait;
struct swap;
struct page_watch;
struct io_engine;
/* Each subsystem's state of a region, private to its file. */
struct fault_streams;
struct readahead;
struct agent_fences;

struct daemon {
	struct config cfg;
	struct event_base *base;
	int listen_fd;
	struct event *listen_ev;
	struct client *clients;
	unsigned nclients;
	uint64_t next_client_id;
	uint64_t next_region_id;
	size_t page_size;
	struct counters stats;
	uint64_t start_ms;
	struct notify *notify;   /* notify.c: systemd readiness, watchdog */
	struct metrics *metrics; /* metrics.c: Prometheus endpoint, or NULL */

	struct io_engine *io;       /* io.c: every read and write of a disk */
	struct swap *swap;          /* NULL: no swap, only zero pages evict */
	uint64_t resident;          /* pages, all clients (page.c) */
	uint64_t writeback;         /* of those, being written out */
	uint64_t reading;           /* swap-in reads in flight (pages) */
	struct event *evict_ev;     /* runs evict_run() soon */
	uint64_t evict_rr;          /* round-robin position over regions */
	bool over_limit;            /* limits.c: the global limit is let go */
	struct fdstore *fdstore;    /* fdstore.c: what LISTEN_FDS brought */
	/* Told when a region's record changes outside a request (a uffd
	 * event, a snapshot's instant): the fd store's copy (region.c). */
	void (*region_changed)(struct region *r);
	bool fdstore_on;            /* clients are put in systemd's fd store */
	bool handover;              /* exiting into the store: leave state alone */
	bool listen_activated;      /* the listening socket is systemd's */
	uint64_t overcommit_logged_ms;
	/* Write-back failing (evict.c): none starts while wb_retry_ev is
	 * pending, then one small write at a time, until one succeeds. */
	uint32_t wb_backoff_ms;     /* the pause; 0: write-back works */
	struct event *wb_retry_ev;  /* the pause: runs eviction at its end */
	uint64_t wb_logged_ms;      /* when that was last logged */
	uint64_t wb_unlogged;       /* failed writes not logged since */
	bool wb_said;               /* the log said write-back fails */
	uint64_t test_slot_fail;    /* --test-hooks: recording a slot of this
				     * region fails (region_set_slot) */
	/* --test-hooks (PROTO_INJECT_HOLD_RECONCILE): the next reconcile of
	 * region test_hold_reconcile waits, the lock let go, until region
	 * test_hold_until has a resident page (10 s at most). */
	uint64_t test_hold_reconcile, test_hold_until;
	unsigned ndead;             /* clients misbehaved, not yet torn down */
	/* fault.c: the threads that serve the clients' uffds, or NULL (the
	 * loop does). */
	struct fault_threads *fthreads;
};

/*
 * What pagerd knows of each page: one byte, a state in the low bits and
 * flags above.  With the slot array (region.slot) this is the whole truth
 * about where a page's data is.
 *
 *   EMPTY     no data anywhere: reads as zero (never touched, discarded,
 *             or evicted as all-zero)
 *   RESIDENT  in the page cache.  Clean when it has a swap slot whose copy
 *             is current (it is then write-protected in the client, so the
 *             first write tells us); dirty otherwise.
 *   SWAPPED   only in its swap slot (a hole in the memfd)
 *   POISONED  its swap copy was lost (I/O error, bad CRC): SIGBUS on access
 */
enum page_state {
	PAGE_EMPTY = 0,
	PAGE_RESIDENT = 1,
	PAGE_SWAPPED = 2,
	PAGE_POISONED = 3,
};
#define PG_STATE_MASK 0x003
#define PG_REF        0x004 /* referenced since the hand last passed */
#define PG_IO         0x008 /* write-back (or, with READING, swap-in) in flight */
#define PG_READING    0x010 /* swap-in in flight: nothing in the page cache yet */
#define PG_REDIRTY    0x020 /* written during write-back: abort the eviction */
#define PG_GONE       0x040 /* discarded during I/O: empty once it completes */
#define PG_WAITER     0x080 /* a thread faulted during swap-in: map it then */
#define PG_RA         0x100 /* read ahead, not yet used */
#define PG_RA_MARK    0x200 /* held back: its fault starts the next window */
#define PG_IMAGE      0x400 /* EMPTY, but its data is in the restore image */
#define PG_FRESH      0x800 /* swapped in on demand, not yet written */
/* Swapped (or back from swap): it last left memory dirty, written out.
 * Such a page is likely written again after its next swap-in (page.c's
 * write prediction); how it leaves memory next sets or clears this. */
#define PG_LEFT_DIRTY 0x4000
/*
 * Turns of the Clock hand a page proven hot (mapped again after the hand
 * dropped its mapping) is passed over before its mapping is dropped again:
 * each drop costs a TLB flush and the app a kernel fault, so a hot set is
 * sampled every PG_HOT_MAX + 1 turns instead of every turn.
 */
#define PG_HOT_SHIFT  12
#define PG_HOT_ONE    0x1000
#define PG_HOT_MASK   0x3000
#define PG_HOT_MAX    3

typedef uint16_t pgstate_t;

static inline enum page_state pg_state(pgstate_t b)
{
	return (enum page_state)(b & PG_STATE_MASK);
}

/* One write-back or swap-in in flight (evict.c, swapin.c). */
struct page_io {
	struct page_io *prev, *next; /* on region.ios */
	struct region *r;            /* NULL once the region is gone */
	struct daemon *d;
	bool write;
	bool readahead;
	uint64_t page;               /* first page */
	uint32_t npages;
	uint64_t slot;               /* first slot; the run is contiguous */
	uint64_t fault_page;         /* swap-in: the page a thread waits on */
	bool fault_write;            /* ... to write it: map it writable */
	uint8_t *buf;                /* swap-in: the data, until installed */
	struct map_hold *hold;       /* write-back of a region gone: its mapping */
};

struct region {
	struct client *client;
	uint64_t id;
	uint64_t addr;      /* in the client's address space */
	uint64_t len;
	uint64_t npages;
	int memfd;
	uint8_t *map;       /* pagerd's own mapping of the memfd */
	pgstate_t *state;   /* enum page_state and PG_* flags per page */
	uint32_t *slot;     /* swap slot + 1 per page, 0 = none (lazily) */
	uint64_t resident;
	uint64_t writeback;
	uint64_t swapped;
	uint64_t memory_limit; /* pages, 0 = none */
	bool over_limit;    /* limits.c: let go, nothing here can be evicted */
	uint64_t hand;      /* the Clock hand */
	/* agent.c's fences (drops in the agent's hands): made at the first
	 * drop, freed by agent_region_gone() (region_destroy()). */
	struct agent_fences *fences;
	bool ref_blind;     /* references misled the hand: ignore them once */
	struct counters stats;
	struct page_io *ios;
	/* swapin.c's readahead streams: made at the first swap-in, freed by
	 * swapin_region_gone(). */
	struct readahead *ra;
	/* Write prediction for read faults on swapped pages (page.c), per
	 * class of page (0: it last left memory clean, 1: dirty,
	 * PG_LEFT_DIRTY): of recent swap-ins mapped protected (decaying
	 * counts), how many were written while resident.  Where most are,
	 * swap-ins of the class are mapped writable at once (read-modify-
	 * write saves a write-protect round trip). */
	uint32_t rw_seen[2], rw_written[2], rw_seq;
	struct snapshot *snap;  /* the running (or last) snapshot, or NULL */
	/* Told of page changes before they happen (page.c; the snapshot). */
	const struct page_watch *watch;
	/* snapshot.c: restored from an image (its fd, its checksum table,
	 * the reads and prefetch), or NULL; freed as the region goes
	 * (snapshot_region_gone()). */
	struct restore *restore;
	uint64_t image_pending; /* pages still only in the image (PG_IMAGE) */
	char name[PROTO_NAME_MAX];
	/* fault.c's fault-around streams: made at the first fault that
	 * fills, freed by fault_region_gone(). */
	struct fault_streams *streams;
	/* With the fd store, state and slot live in this memfd (fdstore.c). */
	int state_fd;
	void *state_map;
	size_t state_len;
	unsigned stored;        /* STORED_* names in the fd store */
};

/* Why a fault could not be resolved yet (fault.c parks it). */
enum park_reason {
	PARK_EVENT, /* an event is unread (EAGAIN): retried after a uffd read */
	PARK_ROOM,  /* no room under a limit: retried after eviction */
	PARK_SNAPSHOT, /* a write a running snapshot would have to capture,
			* its capture budget full: retried as the image's
			* writes complete (snapshot_write_must_wait()) */
	PARK_REASONS
};

struct pending_fault {
	struct uffd_msg msg;
	enum park_reason why;
};

struct client {
	struct daemon *d;
	struct client *prev, *next;
	uint64_t id;
	int sock;
	struct event *sock_ev;
	int uffd;
	struct event *uffd_ev;
	struct ucred cred;
	bool hello_done;
	bool control;
	bool kernel_faults;
	bool dead;          /* misbehaved: torn down by its socket's callback,
			     * next (client_misbehaved()) */
	uint64_t uffd_features;
	struct region **regions; /* sorted by addr */
	size_t nregions, cap;
	struct event *retry_ev;     /* retries faults parked for an event soon */
	struct pending_fault *parked; /* faults not resolved yet, oldest first */
	size_t nparked, parked_cap;
	size_t nparked_for[PARK_REASONS];
	bool retrying_snapshot;     /* faults parked for PARK_SNAPSHOT retried:
				     * one parking again is not counted again */
	uint64_t resident;
	uint64_t writeback;
	uint64_t memory_limit;      /* pages, 0 = none */
	bool over_limit;            /* limits.c: let go, nothing here can be evicted */
	int agent;                  /* libpager's agent socket, or -1 */
	uint32_t agent_seq;         /* of the last drop request sent to it */
	int state_fd;               /* fd store: its c<ID>.state memfd, or -1 */
	int pagemap;                /* its /proc/PID/pagemap, or -1 */
	bool pagemap_passed;        /* ... the one it sent (PROTO_PAGEMAP) */
	bool pagemap_warned;        /* said that eviction cannot read it */
	int pidfd;                  /* private daemon: its process, or -1 */
	struct event *pidfd_ev;
	unsigned stored;            /* STORED_* names in the fd store */
	struct event *agent_ev;
	/* A request whose reply comes later (REQUEST_DEFERRED): nothing
	 * more is read from the socket until it is sent. */
	bool reply_deferred;
	uint32_t deferred_seq;
	struct snapshot *waiting_on; /* the snapshot that will send it */
	/* ... or a named image being opened for it, off the loop */
	struct image_wait *waiting_image;
};

/* What a request handler returns when it will reply later itself, through
 * client_reply_deferred(). */
#define REQUEST_DEFERRED 1

/* client.c */
int client_accept(struct daemon *d, int sock);
/* A connection with a given id (a new one, or one adopted from the fd
 * store).  Returns 0, -EACCES (peer not allowed), -EMFILE, -ENOMEM. */
int client_add(struct daemon *d, int sock, uint64_t id, struct client **ret);
/* Takes the client's userfaultfd: checks it and watches it.  0 or -errno
 * (the fd is then still the caller's). */
int client_attach_uffd(struct client *c, int fd);
/* Takes fd, the client's own /proc/PID/pagemap that it sent, in place of
 * the one pagerd opened, after checking that it is that.  0 or -errno (the
 * fd is then still the caller's). */
int client_set_pagemap(struct client *c, int fd);
void client_destroy(struct client *c);
void clients_destroy_all(struct daemon *d);

/* conn.c: what a lower layer tells a client's connection; client.c's
 * socket callback acts on the marks at the next turn of the loop. */
/* The client made its memfd refuse a punch or a write, or broke the
 * protocol (err): it is dropped at the next turn of the loop; until then
 * nothing uses it. */
void client_misbehaved(struct client *c, const char *what, int err);
/* Sends a reply on c's socket: 0 or -errno. */
int client_send_reply(struct client *c, uint32_t seq, struct proto_reply *body);
/* Sends the reply to c's deferred request and reads its socket again. */
void client_reply_deferred(struct client *c, int status, struct proto_reply *out);
/* Runs c's socket callback at the next turn, to look at c again. */
void client_wake(struct client *c);
/* Retries c's faults parked for a snapshot (PARK_SNAPSHOT) at the next
 * turn (client.c's retry callback: fault_serve()). */
void client_retry_faults(struct client *c);

/* region.c */
/* What a region is made of (region_new()). */
struct region_init {
	uint64_t id;           /* 0: the next free id */
	uint64_t addr, len;    /* in the client; len a multiple of the page */
	uint64_t memory_limit; /* pages, 0 = none */
	const char *name;      /* PROTO_NAME_MAX bytes */
	int memfd;             /* the region's data, mapped here */
	/* The page states and slots: plain memory (state_fd -1), or a
	 * mapping of state_len bytes of state_fd, with the states at
	 * state_off and the slots at slot_off (the fd store's layout). */
	int state_fd;
	size_t state_len;
	uint64_t state_off, slot_off;
};
int region_new(struct client *c, const struct region_init *ri, struct region **ret);
/* A region a client asks for: checked (sizes, limits, its memfd), then
 * made by region_new().  0 or -errno (memfd stays the caller's). */
int region_create(struct client *c, const struct proto_region_create *rc,
		  int memfd, struct region **ret);
/* Moves r's states and slots into a mapping of fd (len bytes, states at
 * state_off, slots at slot_off); the region unmaps and closes it when it
 * goes.  0 or -errno (nothing changed). */
int region_map_state(struct region *r, int fd, size_t len, uint64_t state_off,
		     uint64_t slot_off);
void region_destroy(struct region *r);
/* Checks a region's memfd (shmem, sealed, of len bytes); 0 or -errno. */
int region_memfd_check(struct client *c, int fd, uint64_t len);
/* Adds r to c's regions (sorted, never overlapping); 0 or -EEXIST. */
int region_link(struct client *c, struct region *r);
void region_move(struct region *r, uint64_t to);
/* The region's record changed (d->region_changed hears: the fd store). */
void region_changed(struct region *r);
/* Pages we count resident that the page cache no longer holds (the app
 * punched them: MADV_REMOVE) become empty. */
void region_reconcile(struct region *r);
void client_reconcile(struct client *c);
struct region *region_find(struct client *c, uint64_t addr);
struct region *region_find_id(struct client *c, uint64_t id);
/* The page's swap slot, or -1. */
static inline int64_t region_slot(const struct region *r, uint64_t page)
{
	return r->slot && r->slot[page] ? (int64_t)r->slot[page] - 1 : -1;
}
/* Records (slot >= 0) or forgets (-1) the page's slot; the first call
 * allocates the region's slot array.  Returns 0, -ENOMEM, -ERANGE (a slot
 * number the array cannot hold). */
int region_set_slot(struct region *r, uint64_t page, int64_t slot);
/* Punches [first, first+n) out of the memfd: the memory is freed and the
 * client's PTEs are zapped.  Returns 0 or -errno. */
int region_punch(struct region *r, uint64_t first, uint64_t n);
void region_fill_stats(struct region *r, struct proto_region_stats *ret);

/* fault.c */
/*
 * Reads c's uffd and serves what it holds: faults, events, and the faults
 * parked behind an event.  Returns 0, or -errno when c must be dropped (a
 * protocol violation: -EPROTO; its uffd failing): the caller (client.c)
 * tears it down.
 */
int fault_serve(struct client *c);
/* After an eviction round: retries every client's faults that waited for
 * room; one breaking the protocol drops its client (client_misbehaved()). */
void fault_retry_room(struct daemon *d);
/* Parks a fault until `why` passes (one queue, oldest first).  Returns 0 or
 * -ENOMEM. */
int fault_park(struct client *c, const struct uffd_msg *m, enum park_reason why);
/* Runs c's faults parked for `why` again, oldest first (one that cannot be
 * resolved yet parks again).  Returns false when c must be dropped. */
bool fault_unpark(struct client *c, enum park_reason why);
/* The region is going: its parked faults go (their threads were woken
 * when the client unregistered it; retried, they would fall outside every
 * region, which is a protocol violation). */
void fault_forget_parked(struct region *r);
/* The region is going: frees what fault.c keeps of it (its streams). */
void fault_region_gone(struct region *r);
/* Whether a fault of c is parked for `why` in r (NULL: anywhere). */
bool fault_parked_in(const struct client *c, enum park_reason why,
		     const struct region *r);
/*
 * Starts n fault threads (fault_threads; 0: none, the loop serves every
 * uffd), the calling thread holding the daemon lock as the loop
 * (daemon_lock_loop(true)).  0 or -errno (none run).
 */
int fault_threads_start(struct daemon *d, unsigned n);
/* Stops them, after the loop: no uffd is served any more, the reads they
 * have in flight complete; gives the lock back (daemon_lock_loop(false)).
 * Nothing to do without them. */
void fault_threads_stop(struct daemon *d);
/* c's uffd is served by the fault threads (0 or -errno), or no longer is
 * (before it closes).  Nothing to do without them. */
int fault_watch(struct client *c);
void fault_unwatch(struct client *c);

/* evict.c: how an eviction for one limit ended (evict.c's on_evict()
 * reschedules by it, limits_evicted() decides on it).  In this order, the
 * most hopeful first, for parts that took nothing. */
enum evict_status {
	EVICT_DONE,    /* took what was asked (or nothing was asked) */
	EVICT_MORE,    /* took some: more at the next turn of the loop */
	EVICT_BLOCKED, /* took nothing yet: an unread uffd event, the agent's
			* socket full, references that misled the hand; the
			* next turn goes on (by FIFO where references misled) */
	EVICT_FENCED,  /* took nothing yet: the hand waits for drops the agent
			* has not done; its answer (or FENCE_MS) lets it on */
	EVICT_IO,      /* took nothing yet: I/O in flight there (reads that
			* will be pages to take, write-back at its ceiling);
			* its completion runs eviction again */
	EVICT_STUCK,   /* took nothing, and nothing there can go: no swap, swap
			* full, write-back failing, pages that cannot be
			* write-protected */
};

/* limits.c */
/*
 * One limit as it stands: the region's (r), else the client's (c), else
 * the daemon's (both NULL).  Every reader of a limit goes through this:
 * faults for room, eviction for the excess, stats for over.
 */
struct limit_use {
	uint64_t limit;  /* pages, 0: none */
	uint64_t used;   /* resident pages */
	uint64_t room;   /* pages a fault may still make resident (UINT64_MAX:
			  * no limit; 1 at the limit while it is let go) */
	uint64_t excess; /* past the high watermark: pages to evict down to
			  * the low one (pages being written out count gone) */
	bool over;       /* let go: faults waited and nothing could be evicted */
};
void limits_get(struct daemon *d, struct client *c, struct region *r,
		struct limit_use *ret);
/* Pages that may still be made resident in r before a limit is hit. */
uint64_t limits_room(struct region *r);
/* Whether any limit over r is past its high watermark. */
bool limits_pressure(struct region *r);
/* Eviction for a limit (chosen as in limits_get()) ended with st, while
 * faults wait for room under it or not: lets the limit go, or takes it
 * back. */
void limits_evicted(struct daemon *d, struct client *c, struct region *r,
		    enum evict_status st, bool waiting);
/* Runs eviction at the next turn of the loop (evict_init() sets what runs). */
void evict_kick(struct daemon *d);
/* Limits were set or reloaded: none stays let go; eviction runs. */
void limits_changed(struct daemon *d);

/* clock.c: pure policy, no I/O (unit-tested on its own) */
/*
 * Advances *hand over state[0..npages) looking for up to `want` victims:
 * resident pages with no I/O in flight.  A referenced page loses its
 * reference and is skipped (and reported in ret_sample, if there is room,
 * so that its mapping can be dropped: its next use then faults and marks
 * it again).  With use_ref false (FIFO), references are ignored.  Looks at
 * most `budget` pages.  Returns the number of victims stored in ret_victims.
 */
size_t clock_scan(pgstate_t *state, uint64_t npages, uint64_t *hand,
		  bool use_ref, size_t want, uint64_t budget,
		  uint64_t *ret_victims, uint64_t *ret_sample, size_t *nsample,
		  size_t sample_max);

/* evict.c */
void evict_init(struct daemon *d);

/* swapin.c */
/* Brings `page` (SWAPPED) back; returns 0, -EAGAIN (event unread). */
int swapin_fault(struct client *c, struct region *r, uint64_t page, bool write);
/* The app reached a stream's marker: counts the window's hits, reads on. */
void swapin_readahead_hit(struct region *r, uint64_t page);
/* A fault on a page being read: if it is a stream's held marker, installs
 * it (and starts the next window) and returns true. */
bool swapin_take_marker(struct region *r, uint64_t page);
/* The page is discarded: a marker held for it is dropped. */
void swapin_forget_marker(struct region *r, uint64_t page);
/* Installs (or, install false, drops) every held marker of r. */
void swapin_release_markers(struct region *r, bool install);
/* Eviction: up to max held markers go back to swap (their slots hold the
 * data).  Returns how many. */
uint64_t swapin_drop_markers(struct region *r, uint64_t max);
/* The region is going: drops its held markers (their slots still hold the
 * data) and what swapin.c keeps of it. */
void swapin_region_gone(struct region *r);
/* Test builds: every page being read but with no read in flight is a
 * marker whose data a stream holds, and the other way round.  Returns the
 * violations, each logged (page.c checks the rest of PG_READING). */
unsigned swapin_check_daemon(const struct daemon *d);

/* snapshot.c */
/* Starts a snapshot of r into fd (a regular file of the region's size,
 * open for writing) for `requester`, filling the IMAGE.crc table in crc_fd
 * (image.h: a memfd of its size, sealed against resizing, not writes):
 * returns REQUEST_DEFERRED (the reply follows at the instant; both fds are
 * the snapshot's), or -errno: -EBADF, -EINVAL (sizes), -EBUSY, -EIO, ... */
int snapshot_start(struct client *requester, struct region *r, int fd, int crc_fd);
/* The same into the RBD image `image` (rbd:POOL[/NS]/IMAGE, already
 * parsed and granted to the client): pagerd opens, creates, locks and
 * sizes it off the loop, writes the data through the image's store and
 * commits its metadata and checksum table itself.  REQUEST_DEFERRED (the
 * reply follows at the instant, or when the image cannot be had), or
 * -errno as snapshot_start(). */
int snapshot_start_rbd(struct client *requester, struct region *r, const char *image);
/* A fresh region of c is restored from the RBD image `image`, opened
 * read-only off the loop: REQUEST_DEFERRED (the reply follows once it is
 * attached, or -ENOENT/-EINVAL/-ETIMEDOUT/-EBUSY/... when it cannot be),
 * or -errno at once. */
int restore_attach_rbd(struct client *c, struct region *r, const char *image,
		       bool prefetch);
/* IMAGE_INFO: the metadata of the RBD image `image`, in the deferred
 * reply's image field.  REQUEST_DEFERRED or -errno. */
int image_info_rbd(struct client *c, const char *image);
/* The client waiting for a snapshot's start, or for a named image, is
 * gone. */
void snapshot_waiter_gone(struct client *c);
void snapshot_status(struct region *r, struct proto_snapshot_status *ret);
/* The region is going: a running snapshot fails, nothing stays behind. */
void snapshot_region_gone(struct region *r);
/* pagerd hands over to a successor: a snapshot not finished fails with
 * -ESHUTDOWN; snapshot_drain() then waits for its image writes in flight
 * (after the swap store has closed), so the header records how it ended. */
void snapshot_handover(struct region *r);
void snapshot_drain(struct region *r);
/* The successor's record of the last snapshot, for the client's poll. */
void snapshot_adopt(struct region *r, int status, uint64_t total,
		    uint64_t done, uint64_t pause_ns);
/* An adopted region restoring from an image: PG_IMAGE pages (counted in
 * image_pending) come from fd, checked against the IMAGE.crc table in
 * crc_fd (-1: an image without one), prefetched if asked.  Takes both
 * fds; returns 0 or -errno (a bad table: its pages cannot be vouched for;
 * fd is the region's all the same). */
int restore_resume(struct region *r, int fd, int crc_fd, bool prefetch);
/* The same for an image named rbd:..., opened again by name (read-only,
 * off the loop): faults on its pages wait until it is, and it must be
 * the image the table in crc_fd was made for, else they are poisoned.
 * Takes crc_fd; 0 or -errno. */
int restore_resume_rbd(struct region *r, const char *image, int crc_fd, bool prefetch);
/* The rbd:... name a region is restored from, for the fd store, or NULL. */
const char *restore_image_name(const struct region *r);
/* The table a restore checks against, for the fd store, or -1. */
int restore_crc_fd(const struct region *r);
/* The image a region is restored from, for the fd store, or -1; whether
 * it is prefetched. */
int restore_image_fd(const struct region *r);
bool restore_prefetching(const struct region *r);
/* True if the page must reach the image before it may change. */
bool snapshot_pending(const struct region *r, uint64_t page);
/* Whether a write to the page must wait (the fault parks, PARK_SNAPSHOT):
 * a running snapshot would have to capture its data of the instant, and
 * the pages captured and not yet written fill snapshot_capture_limit.
 * The snapshot retries such faults as room comes (client_retry_faults()):
 * as its writes complete, pages stop being pending, or it ends. */
bool snapshot_write_must_wait(struct region *r, uint64_t page);
/* A fresh region takes the image fd (a regular file of its size) and its
 * IMAGE.crc table crc_fd (a memfd sealed against every change, or -1 for
 * an image made before tables: restored unchecked, with a warning).
 * Returns 0 (both fds are the region's) or -errno: -EBUSY, -EINVAL (sizes,
 * a bad table). */
int restore_attach(struct region *r, int fd, int crc_fd, bool prefetch);
/* A fault on a page still in the image: reads it (and a few after it). */
int restore_fault(struct client *c, struct region *r, uint64_t page);
/*
 * Learned prefetch, whatever the image's backend: a restoring region takes
 * `order` (malloc'd, n pages, first wanted first) and, unless asked not to
 * prefetch, reads those pages first (learn.h).  Takes order.  0, -ENOENT
 * (not restoring), -EINVAL (a page out of range).
 */
int restore_set_order(struct region *r, uint64_t *order, size_t n);
/* The same from an IMAGE.order in a sealed memfd (order_fd, the caller's):
 * checked against the image; a bad one is logged and ignored. */
void restore_load_order(struct region *r, int order_fd);
/* What r's restore learned (or the order it was given, if it learned
 * nothing): a new array in *ret (NULL, 0: none).  0 or -ENOMEM. */
int restore_order_recorded(struct region *r, uint64_t **ret, size_t *ret_n);
/* A snapshot just started on r fills the IMAGE.order memfd order_fd (of
 * image_order_size(IMAGE_ORDER_MAX) bytes, sealed against resizing, not
 * writes) at its end.  0 (order_fd is taken) or -errno. */
int snapshot_keep_order(struct region *r, int order_fd);

/* agent.c */
int agent_attach(struct client *c, int fd);
void agent_detach(struct client *c);
/* Asks the client's agent to drop the mappings of pages (sorted); returns
 * how many of them (a prefix) it was asked to drop: the agent's socket may
 * be full. */
size_t agent_drop(struct region *r, const uint64_t *pages, size_t n);
/* Pages the hand may pass from where it is before it reaches drops still
 * in the agent's hands (UINT64_MAX: none). */
uint64_t agent_fence_room(struct region *r);
/* The region is going: frees what agent.c keeps of it (its fences). */
void agent_region_gone(struct region *r);

#endif
