/* SPDX-License-Identifier: MIT */
/*
 * pagerd's core objects and how the subsystems call each other.
 *
 *   main.c    signals, the listening socket, the event loop
 *   config.c  settings: pagerd.conf, options, reload (config.h)
 *   notify.c  sd_notify: readiness, status, watchdog (notify.h)
 *   metrics.c the Prometheus endpoint (metrics.h); stats.c what it reports
 *   client.c  one connection: protocol requests, checking what a client
 *             sends, tearing a client down
 *   region.c  one region: pagerd's mapping of the memfd, page states
 *   fault.c   the userfaultfd: reading faults and events, resolving them
 *
 * Everything runs on one thread, in one libevent loop.
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
#include "proto.h"

struct event_base;
struct event;
struct metrics;
struct notify;

struct counters {
	uint64_t faults_missing;
	uint64_t faults_minor;
	uint64_t faults_wp;
	uint64_t pages_zero_filled;
};

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
};

/* Page states pagerd keeps per page (one byte each). */
enum page_state {
	PAGE_EMPTY = 0,    /* never populated, or discarded: reads as zero */
	PAGE_RESIDENT = 1, /* in the page cache */
};

/* A sequential stream of first touches, for fault-around. */
struct fault_stream {
	uint64_t start;  /* first page of the stream's last fill */
	uint64_t next;   /* the page just after it */
	uint32_t window; /* pages to fill on the next hit */
	uint64_t used;   /* for LRU replacement */
};

#define FAULT_STREAMS 32

struct region {
	struct client *client;
	uint64_t id;
	uint64_t addr;      /* in the client's address space */
	uint64_t len;
	uint64_t npages;
	int memfd;
	uint8_t *map;       /* pagerd's own mapping of the memfd */
	uint8_t *state;     /* enum page_state per page */
	uint64_t resident;
	uint64_t memory_limit;
	char name[PROTO_NAME_MAX];
	/* Pages the client discarded with MADV_REMOVE/DONTNEED whose fate
	 * (freed, or only unmapped) is checked once the madvise is done. */
	uint64_t removed_lo, removed_hi;
	struct fault_stream streams[FAULT_STREAMS];
	uint64_t stream_clock;
};

/* A fault that could not be resolved yet because an event was unread. */
struct pending_fault {
	struct uffd_msg msg;
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
	bool dead;          /* torn down at the end of the current callback */
	uint64_t uffd_features;
	struct region **regions; /* sorted by addr */
	size_t nregions, cap;
	struct event *reconcile_ev; /* runs region_reconcile() soon */
	struct pending_fault *retry;
	size_t nretry, retry_cap;
};

/* client.c */
int client_accept(struct daemon *d, int sock);
void client_destroy(struct client *c);
void clients_destroy_all(struct daemon *d);

/* region.c */
int region_create(struct client *c, const struct proto_region_create *rc,
		  int memfd, struct region **ret);
void region_destroy(struct region *r);
void region_move(struct region *r, uint64_t to);
void region_note_removed(struct region *r, uint64_t first, uint64_t n);
void region_reconcile(struct region *r);
void client_reconcile(struct client *c);
struct region *region_find(struct client *c, uint64_t addr);
struct region *region_find_id(struct client *c, uint64_t id);
void region_set_state(struct region *r, uint64_t first, uint64_t n,
		      enum page_state st);

/* fault.c */
void fault_on_uffd(int fd, short what, void *arg);
/* Checks that fd is a userfaultfd and reads the features it was opened
 * with.  Returns 0, -EBADF (not a uffd), or -EOPNOTSUPP (features missing). */
int uffd_check(int fd, uint64_t *ret_features);

uint64_t now_ms(void);
uint64_t now_ns(void);

#endif
