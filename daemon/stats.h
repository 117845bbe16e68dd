/* SPDX-License-Identifier: MIT */
/*
 * One picture of the daemon's state for everything that reports it: the
 * Prometheus endpoint (metrics.c), systemd's STATUS= line (notify.c), and
 * the control channel's status and stats replies.
 */
#ifndef PAGERD_STATS_H
#define PAGERD_STATS_H

#include <stdint.h>

#include "pagerd.h"

struct stats_snapshot {
	struct counters counters;  /* a copy of d->stats */
	uint64_t clients;          /* applications (control connections not counted) */
	uint64_t regions;
	uint64_t mapped_bytes;     /* sum of region lengths */
	uint64_t resident_pages;
	uint64_t resident_bytes;
	uint64_t memory_limit;     /* bytes, 0 = none */
	uint64_t uptime_ms;
	uint64_t swap_total;       /* slots (pages), 0 = no swap */
	uint64_t swap_used;
	uint64_t swap_io_errors;   /* failed reads and writes, bad CRCs */
	uint64_t writeback_pages;  /* being written out now */
	uint64_t swap_bad;         /* slots retired after a failed write */
	uint64_t over_limit;       /* 1: nothing could be evicted, limits let go */
	uint64_t swap_failing;     /* 1: swap writes fail, write-back paused */
	uint64_t pool_pages;       /* in the compressed pool */
	uint64_t pool_bytes;       /* ... the memory they take */
	uint64_t lock_waits;       /* the daemon lock found taken (lock.h) */
	uint64_t lock_wait_ns;     /* ... and the time waited for it */
};

/* Walks the clients (reconciling pending discards first, so that resident
 * counts are true) and fills *ret. */
/* With `reconcile`, first checks every region's resident pages against the
 * page cache (client_reconcile(): a walk of every page, for requests made
 * by hand, not for every metrics scrape). */
void stats_snapshot(struct daemon *d, bool reconcile, struct stats_snapshot *ret);

#endif
