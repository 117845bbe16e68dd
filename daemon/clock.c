/* SPDX-License-Identifier: MIT */
/*
 * The Clock hand: which resident pages to evict next.
 *
 * User space has no accessed bits, so references are sampled (DESIGN.md
 * §4): a page is referenced when it is populated, when it takes a
 * write-protect fault, and when the hand finds its PTE present in the
 * client (evict.c reads the client's page tables ahead of the hand).  When
 * the hand passes a referenced page it clears the reference and asks for
 * the page's mapping in the client to be dropped (the page cache keeps the
 * data): if the page is still in use, its next access maps it again (an
 * ordinary kernel fault, no round trip through pagerd) and it is found
 * referenced when the hand comes back.  A page the hand finds unreferenced
 * has not been used for a whole turn: it is the victim.
 *
 * Sampling is not free: each drop flushes the TLB of the CPUs that run the
 * client and costs the next access a kernel fault.  A page that proved
 * itself hot (used again after a drop) carries a count (PG_HOT_*) of turns
 * the hand passes it by untouched, so a hot set is sampled every few turns
 * rather than every turn; a page that went cold is found out that many
 * turns later.
 *
 * A referenced page is only cleared when it can be sampled: with the sample
 * list full the hand stops there, since clearing a reference without
 * dropping the mapping would lose it (the PTE stays, which proves nothing).
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
