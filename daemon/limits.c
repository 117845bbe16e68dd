/* SPDX-License-Identifier: MIT */
/*
 * Resident memory against the limits: the daemon's (--memory-limit), each
 * client's (--client-limit, or pagerctl set-limit), each region's
 * (pager_region_opts.memory_limit, pager_region_set_limit()).
 *
 * A limit is hard: a fault that would make a page resident past it waits
 * here until eviction frees room.  Before that, at the high watermark
 * (default 95% of a limit), background eviction starts and runs down to the
 * low watermark (default 90%), so that faults rarely wait.
 *
 * Where nothing can be evicted (no swap, swap full, every page dirty and
 * failing to write), waiting would hang the application forever: pagerd
 * lets the limit be exceeded instead, says so in its log, and returns
 * under the limit as soon as eviction works again.  Data is never dropped
 * to stay under a limit.
 */
#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pagerd.h"

#define ROOM_UNLIMITED UINT64_MAX

static uint64_t room_under(uint64_t limit, uint64_t used)
{
	if (!limit)
		return ROOM_UNLIMITED;
	return used < limit ? limit - used : 0;
}

static uint64_t global_limit(const struct daemon *d)
{
	return d->cfg.memory_limit / d->page_size;
}

static uint64_t client_limit(const struct client *c)
{
	if (c->memory_limit)
		return c->memory_limit;
	return c->d->cfg.client_memory_limit / c->d->page_size;
}

uint64_t limits_room(struct region *r)
{
	struct client *c = r->client;
	struct daemon *d = c->d;
	uint64_t room = room_under(r->memory_limit, r->resident), x;

	x = room_under(client_limit(c), c->resident);
	if (x < room)
		room = x;
	x = room_under(global_limit(d), d->resident);
	if (x < room)
		room = x;
	if (room == 0 && d->overcommitted)
		return 1; /* nothing can be evicted: one page at a time */
	return room;
}

static bool over_high(const struct daemon *d, uint64_t limit, uint64_t used)
{
	uint64_t high;

	if (!limit)
		return false;
	high = limit * d->cfg.high_watermark / 100;
	return used > (high < limit ? high : limit - 1);
}

bool limits_pressure(struct region *r)
{
	struct client *c = r->client;
	struct daemon *d = c->d;

	return over_high(d, r->memory_limit, r->resident - r->writeback) ||
	       over_high(d, client_limit(c), c->resident - c->writeback) ||
	       over_high(d, global_limit(d), d->resident - d->writeback);
}

int limits_wait(struct client *c, const struct uffd_msg *m)
{
	if (c->nwaiting == c->waiting_cap) {
		size_t cap = c->waiting_cap ? c->waiting_cap * 2 : 16;
		struct pending_fault *v = realloc(c->waiting, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		c->waiting = v;
		c->waiting_cap = cap;
	}
	c->waiting[c->nwaiting++].msg = *m;
	/* With write-back in flight, its completion runs eviction again. */
	if (!c->d->writeback)
		evict_kick(c->d);
	return 0;
}

/*
 * Retries the faults that waited for room, in the order they came.  A
 * fault that still finds no room parks itself again (limits_wait).
 */
void limits_progress(struct daemon *d)
{
	for (struct client *c = d->clients, *next; c; c = next) {
		size_t n = c->nwaiting;
		struct pending_fault *v = c->waiting;

		next = c->next;
		if (!n || c->dead)
			continue;
		c->waiting = NULL;
		c->nwaiting = c->waiting_cap = 0;
		for (size_t i = 0; i < n; i++) {
			if (!fault_retry(c, &v[i].msg)) {
				free(v);
				log_warn("client %" PRIu64 ": dropped after a protocol violation",
					 c->id);
				client_destroy(c);
				goto next_client;
			}
		}
		free(v);
		/* A retry may have met an unread event: it is parked on the
		 * uffd's retry list, which only a uffd read would look at. */
		if (c->nretry) {
			static const struct timeval now = { 0, 0 };

			evtimer_add(c->retry_ev, &now);
		}
next_client:;
	}
}

void limits_client_gone(struct client *c)
{
	free(c->waiting);
	c->waiting = NULL;
	c->nwaiting = c->waiting_cap = 0;
}
