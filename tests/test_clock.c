/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the Clock hand (daemon/clock.c): which pages it picks,
 * what it samples, budgets and wrap-around, FIFO mode, and a simulation of
 * the whole reference-sampling loop (the hand drops a page's mapping, the
 * next access to it is a fault that marks it referenced) showing that
 * Clock keeps a hot set that FIFO throws out.
 */
#include <setjmp.h> /* cmocka.h needs these four first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "../daemon/clock.c"

#define N 16

static size_t scan(pgstate_t *st, uint64_t n, uint64_t *hand, bool ref,
		   size_t want, uint64_t budget, uint64_t *v, uint64_t *smp,
		   size_t *nsmp)
{
	*nsmp = 0;
	return clock_scan(st, n, hand, ref, want, budget, v, smp, nsmp, N);
}

static void picks_unreferenced_resident_in_hand_order(void **state)
{
	pgstate_t st[N] = { 0 };
	uint64_t hand = 3, v[N], smp[N];
	size_t ns, got;

	(void)state;
	for (int i = 0; i < N; i++)
		st[i] = PAGE_RESIDENT;
	st[4] = PAGE_SWAPPED;
	st[5] = PAGE_RESIDENT | PG_IO;                /* being written */
	st[6] = PAGE_RESIDENT | PG_IO | PG_READING;   /* being read */
	st[7] = PAGE_EMPTY;
	st[8] = PAGE_POISONED;
	got = scan(st, N, &hand, true, 3, 100, v, smp, &ns);
	assert_int_equal(got, 3);
	assert_int_equal(v[0], 3);
	assert_int_equal(v[1], 9);
	assert_int_equal(v[2], 10);
	assert_int_equal(ns, 0);
	assert_int_equal(hand, 11); /* just past the last victim */
}

static void referenced_pages_get_a_second_chance(void **state)
{
	pgstate_t st[N];
	uint64_t hand = 0, v[N], smp[N];
	size_t ns, got;

	(void)state;
	for (int i = 0; i < N; i++)
		st[i] = PAGE_RESIDENT | PG_REF;
	st[10] = PAGE_RESIDENT; /* the only one unused for a turn */
	got = scan(st, N, &hand, true, 1, 100, v, smp, &ns);
	assert_int_equal(got, 1);
	assert_int_equal(v[0], 10);
	/* Pages 0..9 lost their reference and were sampled. */
	assert_int_equal(ns, 10);
	for (int i = 0; i < 10; i++) {
		assert_int_equal(smp[i], (uint64_t)i);
		assert_int_equal(st[i], PAGE_RESIDENT);
	}
	/* Next turn: 11..15 are sampled, then 0 is the victim. */
	got = scan(st, N, &hand, true, 1, 100, v, smp, &ns);
	assert_int_equal(got, 1);
	assert_int_equal(v[0], 0);
	assert_int_equal(ns, 5);
}

static void all_referenced_needs_two_turns(void **state)
{
	pgstate_t st[N];
	uint64_t hand = 5, v[N], smp[N];
	size_t ns, got;

	(void)state;
	for (int i = 0; i < N; i++)
		st[i] = PAGE_RESIDENT | PG_REF;
	/* One turn of budget clears references and finds nothing... */
	got = scan(st, N, &hand, true, 4, N, v, smp, &ns);
	assert_int_equal(got, 0);
	assert_int_equal(ns, N);
	assert_int_equal(hand, 5);
	/* ...the next finds victims from where it stopped. */
	got = scan(st, N, &hand, true, 2, N, v, smp, &ns);
	assert_int_equal(got, 2);
	assert_int_equal(v[0], 5);
	assert_int_equal(v[1], 6);
}

static void fifo_ignores_references(void **state)
{
	pgstate_t st[N];
	uint64_t hand = 14, v[N], smp[N];
	size_t ns, got;

	(void)state;
	for (int i = 0; i < N; i++)
		st[i] = PAGE_RESIDENT | PG_REF;
	got = scan(st, N, &hand, false, 4, 100, v, smp, &ns);
	assert_int_equal(got, 4);
	assert_int_equal(v[0], 14);
	assert_int_equal(v[1], 15);
	assert_int_equal(v[2], 0); /* wrapped */
	assert_int_equal(v[3], 1);
	assert_int_equal(ns, 0);
	assert_int_equal(st[14], PAGE_RESIDENT | PG_REF); /* untouched */
}

static void budget_and_empty_region(void **state)
{
	pgstate_t st[N] = { 0 };
	uint64_t hand = 0, v[N], smp[N];
	size_t ns;

	(void)state;
	/* Nothing resident: the budget bounds the walk. */
	assert_int_equal(scan(st, N, &hand, true, 4, 7, v, smp, &ns), 0);
	assert_int_equal(hand, 7);
	assert_int_equal(scan(st, 0, &hand, true, 4, 7, v, smp, &ns), 0);
	/* A hand past the end (the region shrank in a test) restarts. */
	st[0] = PAGE_RESIDENT;
	hand = 1000;
	assert_int_equal(scan(st, N, &hand, true, 1, N, v, smp, &ns), 1);
	assert_int_equal(v[0], 0);
	/* The sample list is bounded: the hand stops where it is full and
	 * leaves the references it could not sample (clearing one without
	 * dropping the mapping would lose it). */
	for (int i = 0; i < N; i++)
		st[i] = PAGE_RESIDENT | PG_REF;
	ns = 0;
	hand = 0;
	assert_int_equal(clock_scan(st, N, &hand, true, 1, N, v, smp, &ns, 3), 0);
	assert_int_equal(ns, 3);
	assert_int_equal(hand, 3);
	for (int i = 0; i < N; i++)
		assert_int_equal(st[i], i < 3 ? PAGE_RESIDENT : PAGE_RESIDENT | PG_REF);
}

/* A page proven hot is passed over PG_HOT_MAX turns, untouched and not
 * sampled, then sampled like any referenced page. */
static void hot_pages_are_sampled_every_few_turns(void **state)
{
	pgstate_t st[2] = { PAGE_RESIDENT | PG_REF | PG_HOT_MASK, PAGE_RESIDENT };
	uint64_t hand = 0, v[N], smp[N];
	size_t ns;

	(void)state;
	for (int turn = 0; turn < PG_HOT_MAX; turn++) {
		st[1] = PAGE_RESIDENT;
		assert_int_equal(scan(st, 2, &hand, true, 1, 2, v, smp, &ns), 1);
		assert_int_equal(v[0], 1);
		assert_int_equal(ns, 0);
		assert_int_equal(st[0] & PG_REF, PG_REF);
		assert_int_equal((st[0] & PG_HOT_MASK) >> PG_HOT_SHIFT,
				 PG_HOT_MAX - 1 - turn);
	}
	/* Count spent: sampled (mapping dropped), then a victim if unused. */
	st[1] = PAGE_RESIDENT | PG_REF;
	assert_int_equal(scan(st, 2, &hand, true, 1, 2, v, smp, &ns), 0);
	assert_int_equal(ns, 2);
	assert_int_equal(scan(st, 2, &hand, true, 1, 2, v, smp, &ns), 1);
	assert_int_equal(v[0], 0);
	/* FIFO ignores the count as it ignores references. */
	st[0] = PAGE_RESIDENT | PG_REF | PG_HOT_MASK;
	hand = 0;
	assert_int_equal(scan(st, 2, &hand, false, 1, 2, v, smp, &ns), 1);
	assert_int_equal(v[0], 0);
}

/*
 * The loop pagerd runs, in miniature: `cache` pages may be resident.  An
 * access to a page that is not resident is a miss: the hand picks a victim
 * and the page comes in referenced.  An access to a resident page whose
 * mapping the hand dropped maps it again, which the hand reads (evict.c):
 * it marks the page again, and hot.  An access to a mapped page tells us
 * nothing (no accessed bits).
 */
static double hit_rate(bool use_ref, unsigned npages, unsigned cache,
		       unsigned hot, unsigned accesses)
{
	pgstate_t *st = calloc(npages, sizeof(*st));
	bool *mapped = calloc(npages, sizeof(*mapped));
	uint64_t hand = 0, v[1], smp[64];
	unsigned resident = 0, hits = 0, seed = 42;

	assert_non_null(st);
	assert_non_null(mapped);
	for (unsigned a = 0; a < accesses; a++) {
		unsigned r = (unsigned)rand_r(&seed);
		/* 90% of accesses to the hot set, spread over the region. */
		unsigned page = (r % 10) ? (r / 10 % hot) * (npages / hot)
					 : r / 10 % npages;

		if (pg_state(st[page]) == PAGE_RESIDENT) {
			hits++;
			if (!mapped[page]) {
				st[page] |= PG_REF | PG_HOT_MASK;
				mapped[page] = true;
			}
			continue;
		}
		if (resident == cache) {
			size_t ns = 0;

			while (clock_scan(st, npages, &hand, use_ref, 1, 2ull * npages,
					  v, smp, &ns, 64) == 0)
				ns = 0;
			for (size_t i = 0; i < ns; i++)
				mapped[smp[i]] = false;
			st[v[0]] = PAGE_SWAPPED;
			mapped[v[0]] = false;
			resident--;
		}
		st[page] = PAGE_RESIDENT | PG_REF;
		mapped[page] = true;
		resident++;
	}
	free(st);
	free(mapped);
	return (double)hits / accesses;
}

static void clock_beats_fifo_on_a_skewed_mix(void **state)
{
	/* 4096 pages, room for 1024, a hot set of 512. */
	double clock = hit_rate(true, 4096, 1024, 512, 200000);
	double fifo = hit_rate(false, 4096, 1024, 512, 200000);

	(void)state;
	print_message("hit rate: clock %.3f, fifo %.3f\n", clock, fifo);
	/* Clock keeps the hot set: about every hot access hits (0.9 of the
	 * accesses, plus cold ones that land on resident pages)... */
	assert_true(clock > 0.9);
	/* ...and misses (each one a disk read) are far fewer than FIFO's,
	 * which keeps evicting hot pages and reading them back. */
	assert_true(1 - fifo > 1.3 * (1 - clock));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(picks_unreferenced_resident_in_hand_order),
		cmocka_unit_test(referenced_pages_get_a_second_chance),
		cmocka_unit_test(all_referenced_needs_two_turns),
		cmocka_unit_test(fifo_ignores_references),
		cmocka_unit_test(budget_and_empty_region),
		cmocka_unit_test(hot_pages_are_sampled_every_few_turns),
		cmocka_unit_test(clock_beats_fifo_on_a_skewed_mix),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
