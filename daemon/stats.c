/* SPDX-License-Identifier: MIT */
#include "stats.h"

#include <string.h>

#include "swap.h"

void stats_snapshot(struct daemon *d, bool reconcile, struct stats_snapshot *ret)
{
	memset(ret, 0, sizeof(*ret));
	for (struct client *c = d->clients; c; c = c->next) {
		if (reconcile)
			client_reconcile(c);
		ret->clients += c->hello_done && !c->control;
		ret->regions += c->nregions;
		for (size_t i = 0; i < c->nregions; i++) {
			ret->mapped_bytes += c->regions[i]->len;
			ret->resident_pages += c->regions[i]->resident;
		}
	}
	ret->counters = d->stats;
	ret->resident_bytes = ret->resident_pages * d->page_size;
	ret->memory_limit = d->cfg.memory_limit;
	ret->uptime_ms = now_ms() - d->start_ms;
	ret->writeback_pages = d->writeback;
	ret->over_limit = d->overcommitted;
	ret->swap_failing = d->wb_backoff_ms != 0;
	if (d->swap) {
		struct swap_stats ss;

		swap_get_stats(d->swap, &ss);
		ret->swap_total = ss.total;
		ret->swap_used = ss.used;
		ret->swap_bad = ss.bad;
		ret->swap_io_errors = ss.read_errors + ss.write_errors + ss.crc_errors;
	}
}
