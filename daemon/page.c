/* SPDX-License-Identifier: MIT */
/*
 * Page states and the counts kept from them: what pagerd knows of each page
 * of a region (pagerd.h: enum page_state, PG_*), and how many pages are
 * resident, swapped, being written out or read in, per region, client and
 * daemon.  Every change of a page's state goes through here.
 */
#include "page.h"

/*
 * Sets the state of pages (clearing their flags) and keeps the resident and
 * swapped counts of the region, its client and the daemon true: this is the
 * only place they change.
 */
void region_set_state(struct region *r, uint64_t first, uint64_t n,
		      enum page_state st)
{
	struct client *c = r->client;
	struct daemon *d = c->d;

	for (uint64_t p = first; p < first + n && p < r->npages; p++) {
		enum page_state old = pg_state(r->state[p]);

		if (r->state[p] & PG_IMAGE)
			r->image_pending--;
		r->state[p] = (pgstate_t)st;
		if (old == st)
			continue;
		if (old == PAGE_RESIDENT) {
			r->resident--;
			c->resident--;
			d->resident--;
		} else if (old == PAGE_SWAPPED) {
			r->swapped--;
		}
		if (st == PAGE_RESIDENT) {
			r->resident++;
			c->resident++;
			d->resident++;
		} else if (st == PAGE_SWAPPED) {
			r->swapped++;
		}
	}
}
