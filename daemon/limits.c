/* SPDX-License-Identifier: MIT */
/*
 * Resident memory against the limits: the daemon's (--memory-limit), each
 * client's (--client-limit, or pagerctl set-limit), each region's
 * (pager_region_opts.memory_limit, pager_region_set_limit()).
 *
 * A limit is hard: a fault that would make a page resident past it waits
 * (fault.c parks it) until eviction frees room.  Before that, at the high
 * watermark (default 95% of a limit), background eviction starts and runs
 * down to the low watermark (default 90%), so that faults rarely wait.
 *
 * Where nothing can be evicted (no swap, swap full, every page dirty and
 * failing to write, pages that cannot be write-protected), waiting would
 * hang the application forever: pagerd lets that limit be exceeded
 * instead, one page a fault, says so in its log, and returns under the
 * limit as soon as eviction works again.  That is decided per limit, from
 * what eviction under that limit found (limits_evicted()): a region that
 * cannot evict lets its own limit go, never its neighbours'.  Data is
 * never dropped to stay under a limit.
 */
#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pagerd.h"
#include "swap.h"
#include "tier.h"

#define ROOM_UNLIMITED UINT64_MAX
/* How often the log says that a limit is let go, at most. */
#define LETGO_LOG_INTERVAL_MS 60000

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

/*
 * The one computation of a limit's room and excess.  The watermarks look
 * past pages being written out (they are as good as gone), so that
 * eviction does not take more victims than needed; the room does not
 * (they are still in memory).  A high watermark is below the limit, a low
 * one below the high: with a 1-page limit, eviction takes that page too.
 */
static void limit_fill(const struct daemon *d, uint64_t limit, uint64_t used,
		       uint64_t writeback, bool over, struct limit_use *ret)
{
	uint64_t high, low, staying = used - writeback;

	*ret = (struct limit_use){ .limit = limit, .used = used, .over = over };
	if (!limit) {
		ret->room = ROOM_UNLIMITED;
		return;
	}
	ret->room = used < limit ? limit - used : over ? 1 : 0;
	high = limit * d->cfg.high_watermark / 100;
	if (high >= limit)
		high = limit - 1;
	low = limit * d->cfg.low_watermark / 100;
	if (low >= high)
		low = high ? high - 1 : 0;
	ret->excess = staying > high ? staying - low : 0;
}

void limits_get(struct daemon *d, struct client *c, struct region *r,
		struct limit_use *ret)
{
	uint64_t pool, spilling;

	/* The compressed pool is memory too: its pages count, those being
	 * spilled as good as gone, like write-back (tier.h). */
	tier_pages(d, c, r, &pool, &spilling);
	if (r)
		limit_fill(d, r->memory_limit, r->resident + pool, r->writeback + spilling,
			   r->over_limit, ret);
	else if (c)
		limit_fill(d, client_limit(c), c->resident + pool, c->writeback + spilling,
			   c->over_limit, ret);
	else
		limit_fill(d, global_limit(d), d->resident + pool, d->writeback + spilling,
			   d->over_limit, ret);
}

uint64_t limits_room(struct region *r)
{
	struct client *c = r->client;
	struct limit_use lr, lc, lg;

	limits_get(c->d, NULL, r, &lr);
	limits_get(c->d, c, NULL, &lc);
	limits_get(c->d, NULL, NULL, &lg);
	if (lc.room < lr.room)
		lr.room = lc.room;
	return lg.room < lr.room ? lg.room : lr.room;
}

bool limits_pressure(struct region *r)
{
	struct client *c = r->client;
	struct limit_use lr, lc, lg;

	limits_get(c->d, NULL, r, &lr);
	limits_get(c->d, c, NULL, &lc);
	limits_get(c->d, NULL, NULL, &lg);
	return lr.excess || lc.excess || lg.excess;
}

/* Why eviction is stuck, for the log: the daemon-wide reasons first. */
static const char *stuck_why(struct daemon *d)
{
	struct swap_stats ss;

	if (!d->swap)
		return "no swap";
	if (d->wb_backoff_ms)
		return "swap writes failing";
	swap_get_stats(d->swap, &ss);
	if (ss.used + ss.bad >= ss.total)
		return "swap full";
	return "its pages cannot be written out";
}

/*
 * A limit is let go when faults wait for room under it (at the limit:
 * `waiting`, which evict.c asks fault.c) and eviction under it is stuck:
 * nothing there can go, and nothing in flight will change that.  Rounds
 * held up (blocked, fenced, I/O in flight) keep what was decided before.
 * A round that takes pages there, or finds the limit under its high
 * watermark, takes it back.
 */
void limits_evicted(struct daemon *d, struct client *c, struct region *r,
		    enum evict_status st, bool waiting)
{
	bool *over = r ? &r->over_limit : c ? &c->over_limit : &d->over_limit;
	struct limit_use lu;

	switch (st) {
	case EVICT_DONE:
	case EVICT_MORE:
		*over = false;
		return;
	case EVICT_BLOCKED:
	case EVICT_FENCED:
	case EVICT_IO:
		return;
	case EVICT_STUCK:
		break;
	}
	limits_get(d, c, r, &lu);
	if (*over || !lu.limit || lu.used < lu.limit || !waiting)
		return;
	*over = true;
	uint64_t now = now_ms();

	/* Once a minute at most: eviction that works now and then (clean
	 * pages go, dirty ones cannot) comes back here. */
	if (!d->overcommit_logged_ms ||
	    now - d->overcommit_logged_ms >= LETGO_LOG_INTERVAL_MS) {
		char what[48];

		d->overcommit_logged_ms = now;
		if (r)
			snprintf(what, sizeof(what), "region %" PRIu64, r->id);
		else if (c)
			snprintf(what, sizeof(what), "client %" PRIu64, c->id);
		else
			snprintf(what, sizeof(what), "global limit");
		log_warn("%s: nothing can be evicted (%s): letting resident memory exceed its limit",
			 what, stuck_why(d));
	}
}

/*
 * Runs eviction (evict.c's round, which evict_init() hooked on d->evict_ev)
 * at the next turn of the loop: a zero timer rather than event_active,
 * so that the loop polls the uffds and the io_uring between two rounds
 * (active events could otherwise starve them).  Here, beside
 * the room it is about, so that every layer that fills or frees memory
 * asks for a round without calling up into eviction.
 */
void evict_kick(struct daemon *d)
{
	static const struct timeval now = { 0, 0 };

	if (d->evict_ev && !event_pending(d->evict_ev, EV_TIMEOUT, NULL))
		evtimer_add(d->evict_ev, &now);
}

void limits_changed(struct daemon *d)
{
	d->over_limit = false;
	for (struct client *c = d->clients; c; c = c->next) {
		c->over_limit = false;
		for (size_t i = 0; i < c->nregions; i++)
			c->regions[i]->over_limit = false;
	}
	evict_kick(d);
}
