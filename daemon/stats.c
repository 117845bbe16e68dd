/* SPDX-License-Identifier: MIT */
#include "stats.h"

#include <string.h>

#include "lock.h"
#include "log.h"
#include "pool.h"
#include "swap.h"
#include "tier.h"

void stats_snapshot(struct daemon *d, bool reconcile, struct stats_snapshot *ret)
{
	memset(ret, 0, sizeof(*ret));
	struct limit_use lu;

	limits_get(d, NULL, NULL, &lu);
	ret->over_limit = lu.over;
	for (struct client *c = d->clients; c; c = c->next) {
		if (reconcile)
			client_reconcile(c);
		ret->clients += c->hello_done && !c->control;
		ret->regions += c->nregions;
		limits_get(d, c, NULL, &lu);
		ret->over_limit |= lu.over;
		for (size_t i = 0; i < c->nregions; i++) {
			ret->mapped_bytes += c->regions[i]->len;
			ret->resident_pages += c->regions[i]->resident;
			limits_get(d, NULL, c->regions[i], &lu);
			ret->over_limit |= lu.over;
		}
	}
	tier_sync_stats(d, NULL);
	ret->counters = d->stats;
	ret->resident_bytes = ret->resident_pages * d->page_size;
	ret->memory_limit = d->cfg.memory_limit;
	ret->uptime_ms = now_ms() - d->start_ms;
	ret->writeback_pages = d->writeback;
	ret->swap_failing = d->wb_backoff_ms != 0;
	daemon_lock_waits(&ret->lock_waits, &ret->lock_wait_ns);
	if (d->swap) {
		struct swap_stats ss;

		swap_get_stats(d->swap, &ss);
		ret->swap_total = ss.total;
		ret->swap_used = ss.used;
		ret->swap_bad = ss.bad;
		ret->swap_io_errors = ss.read_errors + ss.write_errors + ss.crc_errors;
		struct pool_stats ps;

		swap_pool_stats(d->swap, 0, &ps);
		ret->pool_pages = ps.pages;
		ret->pool_bytes = ps.bytes;
	}
}
