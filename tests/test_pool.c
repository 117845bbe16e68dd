/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the compressed pool (daemon/pool.c), alone: no I/O.
 *
 *   roundtrip            both compressors give back the page put, byte for
 *                        byte; the entry is charged, and dropped uncharged
 *   incompressible       a random page is refused (-E2BIG), counted; after
 *                        a streak, only a sample of the region's pages is
 *                        tried, until one fits
 *   coldest_first        spills take the coldest entries, a page read is
 *                        hottest; a failed spill keeps the entry; region
 *                        filters; entries being spilled are not taken twice
 *   region_accounting    charges per region; a forgotten region goes with
 *                        its last entry
 *   corrupt              a flipped byte: pool_get() fails, never returns a
 *                        whole page of other data silently (the caller's
 *                        CRC is the last word)
 */
#include <setjmp.h> /* cmocka.h needs these four first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../daemon/pool.c"

#define PS 4096

/* Half random, half repeats of it: compresses about 2x. */
static void page_fill(unsigned char *pg, uint64_t seed, bool random)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 1;

	for (size_t i = 0; i < PS; i++) {
		if (!random && i >= PS / 2) {
			pg[i] = pg[i % 64];
			continue;
		}
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		pg[i] = (unsigned char)x;
	}
}

static void roundtrip(void **state)
{
	unsigned char in[PS], out[PS];
	struct pool *p;
	struct pool_stats st;

	(void)state;
	for (int algo = POOL_LZ4; algo <= POOL_ZSTD; algo++) {
		assert_int_equal(pool_new(&p, PS, 64, (enum pool_algo)algo), 0);
		page_fill(in, 7, false);
		assert_int_equal(pool_put(p, 3, 1, in), 0);
		assert_int_equal(pool_put(p, 3, 1, in), -EEXIST);
		assert_true(pool_has(p, 3));
		memset(out, 0, PS);
		assert_int_equal(pool_get(p, 3, out), 0);
		assert_memory_equal(in, out, PS);
		pool_get_stats(p, &st);
		assert_int_equal(st.pages, 1);
		assert_int_equal(st.stores, 1);
		assert_int_equal(st.hits, 1);
		assert_true(st.stored_bytes < PS * POOL_MAX_PERCENT / 100);
		assert_int_equal(st.bytes, st.stored_bytes + sizeof(struct pool_entry));
		assert_int_equal(pool_get(p, 4, out), -ENOENT);
		pool_drop(p, 3);
		pool_get_stats(p, &st);
		assert_int_equal(st.pages, 0);
		assert_int_equal(st.bytes, 0);
		assert_false(pool_has(p, 3));
		pool_free(p);
	}
}

static void incompressible(void **state)
{
	unsigned char in[PS];
	struct pool *p;
	struct pool_stats st;

	(void)state;
	assert_int_equal(pool_new(&p, PS, 8, POOL_LZ4), 0);
	page_fill(in, 9, true);
	assert_int_equal(pool_put(p, 0, 1, in), -E2BIG);
	assert_false(pool_has(p, 0));
	pool_get_stats(p, &st);
	assert_int_equal(st.rejects, 1);
	assert_int_equal(st.pages, 0);
	pool_region_stats(p, 1, &st);
	assert_int_equal(st.rejects, 1);
	/* A streak of them: the region's pages are mostly not tried any
	 * more, until a tried one fits, within POOL_REJECT_SAMPLE puts. */
	for (uint64_t s = 1; s < POOL_REJECT_STREAK; s++) {
		page_fill(in, s, true);
		assert_int_equal(pool_put(p, s % 8, 1, in), -E2BIG);
	}
	int stored = -1;

	for (int i = 0; i < POOL_REJECT_SAMPLE && stored < 0; i++) {
		page_fill(in, (uint64_t)i, false);
		if (pool_put(p, 0, 1, in) == 0)
			stored = i;
	}
	assert_true(stored >= 1); /* the first was not even tried */
	page_fill(in, 99, false);
	assert_int_equal(pool_put(p, 1, 1, in), 0); /* tried again at once */
	pool_free(p);
}

static void coldest_first(void **state)
{
	unsigned char in[PS], out[PS];
	uint64_t slots[8];
	struct pool *p;
	struct pool_stats st;

	(void)state;
	assert_int_equal(pool_new(&p, PS, 16, POOL_LZ4), 0);
	for (uint64_t s = 0; s < 6; s++) {
		page_fill(in, s, false);
		/* Slots 0-2 region 1, 3-5 region 2. */
		assert_int_equal(pool_put(p, s, s < 3 ? 1 : 2, in), 0);
	}
	/* Slot 0 read: hottest now. */
	assert_int_equal(pool_get(p, 0, out), 0);
	assert_int_equal(pool_spill_start(p, 0, slots, 2), 2);
	assert_int_equal(slots[0], 1);
	assert_int_equal(slots[1], 2);
	assert_true(pool_spilling(p, 1));
	pool_get_stats(p, &st);
	assert_int_equal(st.spilling, 2);
	/* Not taken twice; region 1 has only slot 0 left to give. */
	assert_int_equal(pool_spill_start(p, 1, slots, 8), 1);
	assert_int_equal(slots[0], 0);
	/* A spill done: gone.  A spill failed: kept, not spilling. */
	pool_spilled(p, 1, true);
	pool_spilled(p, 2, false);
	assert_false(pool_has(p, 1));
	assert_true(pool_has(p, 2));
	assert_false(pool_spilling(p, 2));
	pool_get_stats(p, &st);
	assert_int_equal(st.spills, 1);
	assert_int_equal(st.spilling, 1);
	/* The copy for a spill counts no hit. */
	assert_int_equal(pool_copy(p, 2, out), 0);
	page_fill(in, 2, false);
	assert_memory_equal(in, out, PS);
	pool_get_stats(p, &st);
	assert_int_equal(st.hits, 1);
	/* Region 2: in order 3, 4, 5. */
	assert_int_equal(pool_spill_start(p, 2, slots, 8), 3);
	assert_int_equal(slots[0], 3);
	assert_int_equal(slots[2], 5);
	/* Dropping an entry being spilled uncharges it. */
	pool_drop(p, 4);
	pool_region_stats(p, 2, &st);
	assert_int_equal(st.pages, 2);
	assert_int_equal(st.spilling, 2);
	pool_free(p);
}

static void region_accounting(void **state)
{
	unsigned char in[PS];
	struct pool *p;
	struct pool_stats a, b, all;

	(void)state;
	assert_int_equal(pool_new(&p, PS, 16, POOL_LZ4), 0);
	for (uint64_t s = 0; s < 5; s++) {
		page_fill(in, s, false);
		assert_int_equal(pool_put(p, s, s % 2 ? 7 : 9, in), 0);
	}
	pool_region_stats(p, 7, &a);
	pool_region_stats(p, 9, &b);
	pool_get_stats(p, &all);
	assert_int_equal(a.pages, 2);
	assert_int_equal(b.pages, 3);
	assert_int_equal(a.bytes + b.bytes, all.bytes);
	/* Forgotten with entries left: its counts stay until the last goes. */
	pool_forget_region(p, 7);
	pool_region_stats(p, 7, &a);
	assert_int_equal(a.pages, 2);
	pool_drop(p, 1);
	pool_drop(p, 3);
	pool_region_stats(p, 7, &a);
	assert_int_equal(a.pages, 0);
	assert_int_equal(a.stores, 0); /* gone with its last entry */
	pool_region_stats(p, 12345, &a);
	assert_int_equal(a.bytes, 0);
	pool_free(p);
}

static void corrupt(void **state)
{
	unsigned char in[PS], out[PS];
	struct pool *p;
	struct pool_stats st;

	(void)state;
	for (int algo = POOL_LZ4; algo <= POOL_ZSTD; algo++) {
		assert_int_equal(pool_new(&p, PS, 4, (enum pool_algo)algo), 0);
		page_fill(in, 1, false);
		assert_int_equal(pool_put(p, 2, 1, in), 0);
		assert_int_equal(pool_corrupt(p, 2), 0);
		assert_int_equal(pool_corrupt(p, 3), -ENOENT);
		/* Either it does not decompress, or what comes out is not
		 * the page (the swap's CRC32C then rejects it). */
		if (pool_get(p, 2, out) == 0)
			assert_true(memcmp(in, out, PS) != 0);
		else {
			pool_get_stats(p, &st);
			assert_int_equal(st.corrupt, 1);
		}
		pool_free(p);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(roundtrip),
		cmocka_unit_test(incompressible),
		cmocka_unit_test(coldest_first),
		cmocka_unit_test(region_accounting),
		cmocka_unit_test(corrupt),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
