/* SPDX-License-Identifier: MIT */
/*
 * The Clock hand: which resident pages to evict next.
 *
 * User space has no accessed bits, so references are sampled (DESIGN.md
 * §4): a page is referenced when it is populated and whenever it takes a
 * fault (a MINOR fault after its mapping was dropped, or a write-protect
 * fault).  When the hand passes a referenced page it clears the reference
 * and asks for the page's mapping in the client to be dropped (the page
 * cache keeps the data): if the page is still in use, its next access
 * faults and marks it again before the hand comes back.  A page the hand
 * finds unreferenced has not been used for a whole turn: it is the victim.
 *
 * Sampling is not free: the app pays a uffd round trip for the MINOR fault
 * that follows every drop.  A page that proved itself hot that way carries a
 * count (PG_HOT_*) of turns the hand passes it by untouched, so a hot set
 * costs a fault every few turns rather than every turn; a page that went
 * cold is found out that many turns later.
 *
 * A referenced page is only cleared when it can be sampled: with the sample
 * list full the hand stops there, since clearing a reference without
 * dropping the mapping would lose it (the next access would not fault).
 *
 * Pure policy over the state array: no I/O, no daemon, unit-tested alone.
 */
#include "pagerd.h"

static bool evictable(pgstate_t b)
{
	return pg_state(b) == PAGE_RESIDENT && !(b & PG_IO);
}

size_t clock_scan(pgstate_t *state, uint64_t npages, uint64_t *hand,
		  bool use_ref, size_t want, uint64_t budget,
		  uint64_t *ret_victims, uint64_t *ret_sample, size_t *nsample,
		  size_t sample_max)
{
	uint64_t h = *hand < npages ? *hand : 0;
	size_t got = 0;

	if (npages == 0)
		return 0;
	for (uint64_t looked = 0; looked < budget && got < want; looked++) {
		pgstate_t b = state[h];

		if (evictable(b)) {
			if (use_ref && (b & PG_HOT_MASK)) {
				state[h] = (pgstate_t)(b - PG_HOT_ONE);
			} else if (use_ref && (b & PG_REF)) {
				if (*nsample == sample_max)
					break;
				state[h] = (pgstate_t)(b & ~PG_REF);
				ret_sample[(*nsample)++] = h;
			} else {
				ret_victims[got++] = h;
			}
		}
		if (++h == npages)
			h = 0;
	}
	*hand = h;
	return got;
}
