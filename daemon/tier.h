/* SPDX-License-Identifier: MIT */
/*
 * The compressed tier in the daemon: the pool (pool.h, run by swap.c) as
 * the limits see it.  A limit is resident bytes, the pool included: the
 * pool pages of a region, client or the daemon (its bytes, rounded up to
 * pages) count with its resident pages, and eviction under a limit
 * spills the pool's coldest entries to swap when the pool holds more
 * than its share of that limit (pool_percent), or when there is nothing
 * else to take.
 */
#ifndef PAGERD_TIER_H
#define PAGERD_TIER_H

#include <stdint.h>

#include "pagerd.h"

/* Applies pool_percent and pool_compressor (at start, and on reload).
 * spilled(d) is called when a spill ends (room freed under a limit): the
 * caller above passes what schedules eviction, which this layer may not
 * call. */
void tier_configure(struct daemon *d, void (*spilled)(void *d));
/* Pool pages of the limit's scope (as limits_get() picks it), and of
 * those, pages being spilled (as good as gone, like write-back). */
void tier_pages(struct daemon *d, struct client *c, struct region *r,
		uint64_t *ret_pages, uint64_t *ret_spilling);
/* Eviction for a limit whose use is lu: spills what the pool should give
 * back of lu->excess; returns the pages whose spill started. */
uint64_t tier_shrink(struct daemon *d, struct client *c, struct region *r,
		     const struct limit_use *lu);
/* The pool's counts into r's counters (r NULL: the daemon's). */
void tier_sync_stats(struct daemon *d, struct region *r);

#endif
