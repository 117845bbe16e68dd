/* SPDX-License-Identifier: MIT */
/*
 * The compressed tier as the limits see it (tier.h).
 */
#include "tier.h"

#include "log.h"
#include "pool.h"
#include "swap.h"

static uint64_t to_pages(const struct daemon *d, uint64_t bytes)
{
	return (bytes + d->page_size - 1) / d->page_size;
}

void tier_configure(struct daemon *d, void (*spilled)(void *d))
{
	if (!d->swap)
		return;
	if (swap_pool_setup(d->swap, d->base, d->cfg.pool_percent > 0,
			    d->cfg.pool_compressor, spilled, d) < 0)
		log_warn("compressed pool: out of memory, evicted pages go to swap");
}

void tier_pages(struct daemon *d, struct client *c, struct region *r,
		uint64_t *ret_pages, uint64_t *ret_spilling)
{
	struct pool_stats ps;
	uint64_t bytes = 0, spilling = 0;

	*ret_pages = *ret_spilling = 0;
	if (!d->swap)
		return;
	if (r || !c) {
		swap_pool_stats(d->swap, r ? r->id : 0, &ps);
		bytes = ps.bytes;
		spilling = ps.spilling_bytes;
	} else {
		for (size_t i = 0; i < c->nregions; i++) {
			swap_pool_stats(d->swap, c->regions[i]->id, &ps);
			bytes += ps.bytes;
			spilling += ps.spilling_bytes;
		}
	}
	*ret_pages = to_pages(d, bytes);
	*ret_spilling = spilling / d->page_size;
}

/* Spills entries of r (NULL: of anyone) that take up to n pages of
 * memory (more entries than n: each is a fraction of a page). */
static uint64_t spill(struct daemon *d, struct region *r, uint64_t n)
{
	return n ? swap_pool_spill(d->swap, r ? r->id : 0, n) : 0;
}

uint64_t tier_shrink(struct daemon *d, struct client *c, struct region *r,
		     const struct limit_use *lu)
{
	uint64_t pool, spilling, staying, share, want, resident, writeback, got = 0;

	if (!d->swap || !lu->excess || !lu->limit)
		return 0;
	tier_pages(d, c, r, &pool, &spilling);
	staying = pool - (spilling < pool ? spilling : pool);
	if (!staying)
		return 0;
	resident = r ? r->resident : c ? c->resident : d->resident;
	writeback = r ? r->writeback : c ? c->writeback : d->writeback;
	share = lu->limit * d->cfg.pool_percent / 100;
	/* Past its share the pool gives back first; with nothing else in
	 * memory to take (or the pool off), all it has. */
	want = staying > share ? staying - share : 0;
	if (resident <= writeback || !d->cfg.pool_percent)
		want = staying;
	if (want > lu->excess)
		want = lu->excess;
	if (r || !c)
		return spill(d, r, want);
	for (size_t i = 0; i < c->nregions && got < want; i++)
		got += spill(d, c->regions[i], want - got);
	return got;
}

void tier_sync_stats(struct daemon *d, struct region *r)
{
	struct counters *st = r ? &r->stats : &d->stats;
	struct pool_stats ps;

	if (!d->swap)
		return;
	swap_pool_stats(d->swap, r ? r->id : 0, &ps);
	st->pool_stores = ps.stores;
	st->pool_stored_bytes = ps.stored_bytes;
	st->pool_hits = ps.hits;
	st->pool_spills = ps.spills;
	st->pool_rejects = ps.rejects;
}
