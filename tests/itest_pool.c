/* SPDX-License-Identifier: MIT */
/*
 * Integration tests for the compressed pool (pool_percent): a real pagerd
 * with a real swap file and real faulting clients, regions several times
 * their limit, every byte checked.
 *
 *   pool_hit_correct        compressible pages go to the pool and come back
 *                           from it, right, with no disk read for them;
 *                           resident + pool stays within the limit
 *   incompressible_bypasses random pages go to swap, never to the pool
 *   spill_and_read_back     a pool at its share spills its coldest pages to
 *                           swap; every page reads back right
 *   corrupt_entry_poisons   a pool entry corrupted in memory: SIGBUS on
 *                           exactly that page, every other byte intact
 *   zstd_and_reload         the zstd compressor, and the pool turned off
 *                           by a SIGHUP reload: its pages still read right
 *   clean_entries_leave_first  a pool holding dirty entries (only there)
 *                           and clean ones (on disk too) makes room by
 *                           dropping clean ones: no spill write
 *
 * Exit 77 (skip) where no directory takes an O_DIRECT swap file.
 */
#include <setjmp.h> /* cmocka.h needs these four first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pager.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define MiB (1ULL << 20)
#define ALARM_S 120

static size_t ps;
static char swap_dir[64];

struct ctx {
	struct test_pagerd d;
	char swap[128];
	char conf[128];
	bool running;
};

static void start(struct ctx *c, const char *percent, const char *compressor)
{
	const char *args[16];
	int n = 0;

	snprintf(c->swap, sizeof(c->swap), "%s/pool-swap.%d", swap_dir, (int)getpid());
	unlink(c->swap);
	args[n++] = "--swap";
	args[n++] = c->swap;
	args[n++] = "--swap-size";
	args[n++] = "256M";
	args[n++] = "--test-hooks";
	if (c->conf[0]) {
		args[n++] = "--config";
		args[n++] = c->conf;
	} else {
		args[n++] = "--pool-percent";
		args[n++] = percent;
		args[n++] = "--pool-compressor";
		args[n++] = compressor;
	}
	args[n] = NULL;
	assert_int_equal(test_pagerd_start(&c->d, args), 0);
	c->running = true;
}

static void stop(struct ctx *c)
{
	if (c->running)
		assert_int_equal(test_pagerd_stop(&c->d), 0);
	c->running = false;
	unlink(c->swap);
	if (c->conf[0])
		unlink(c->conf);
}

static struct pager_region *region(struct pager *p, uint64_t len, uint64_t limit)
{
	struct pager_region_opts o = { .sz = sizeof(o), .memory_limit = limit };
	struct pager_region *r;

	assert_int_equal(pager_region_create(p, len, &o, &r), 0);
	return r;
}

static struct pager_region_stats rstats(struct pager_region *r)
{
	struct pager_region_stats st = { .sz = sizeof(st) };

	assert_int_equal(pager_region_stats(r, &st), 0);
	return st;
}

/*
 * Page contents.  Compressible: the first eighth of the words say which
 * page and generation they are (distinct per page), the rest repeat a
 * short run of them — LZ4 takes such a page to a fraction of itself, yet
 * a page from elsewhere, a stale or a zero page fails the check.
 * Incompressible: every word from a generator seeded by page and gen.
 */
static uint64_t word(uint64_t page, uint64_t gen, uint64_t i, bool random)
{
	if (!random)
		i %= ps / 64;
	uint64_t x = (page << 24) ^ (gen << 12) ^ i ^ 0x9e3779b97f4a7c15ULL;

	if (random) {
		x ^= x >> 33;
		x *= 0xff51afd7ed558ccdULL;
		x ^= x >> 33;
		x *= 0xc4ceb9fe1a85ec53ULL;
		x ^= x >> 33;
	}
	return x;
}

static void fill(uint8_t *pg, uint64_t page, uint64_t gen, bool random)
{
	uint64_t *w = (uint64_t *)pg;

	for (size_t i = 0; i < ps / 8; i++)
		w[i] = word(page, gen, i, random);
}

/* Writes pages [0, n) of r, generation 1, compressible; returns r's base. */
static uint8_t *fill_region(struct pager_region *r, uint64_t n)
{
	uint8_t *b = pager_region_addr(r);

	for (uint64_t i = 0; i < n; i++)
		fill(b + i * ps, i, 1, false);
	return b;
}

static bool check(const uint8_t *pg, uint64_t page, uint64_t gen, bool random)
{
	const uint64_t *w = (const uint64_t *)pg;

	for (size_t i = 0; i < ps / 8; i++)
		if (w[i] != word(page, gen, i, random))
			return false;
	return true;
}

/* Resident and pool memory of r, in bytes, against its limit: allowed
 * the same slack as itest_swap (pages being filled and punched at the
 * instant), plus the pool's rounding to pages. */
static void assert_within_limit(struct pager_region *r, uint64_t limit)
{
	struct pager_region_stats st = rstats(r);
	uint64_t used = st.resident * ps + st.pool_bytes;

	if (used > limit + limit / 16 + ps) {
		fprintf(stderr, "resident %" PRIu64 " pages + pool %" PRIu64
			" bytes = %" PRIu64 " over the limit %" PRIu64 "\n",
			st.resident, st.pool_bytes, used, limit);
		fail();
	}
}

/* ---- pool_hit_correct ---------------------------------------------------- */

static void pool_hit_correct(void **state)
{
	struct ctx *c = *state;
	const uint64_t n = 16 * MiB / ps, limit = 8 * MiB;

	start(c, "75", "lz4");
	struct pager *p = test_connect(c->d.sock);
	struct pager_region *r = region(p, n * ps, limit);
	uint8_t *b = pager_region_addr(r);
	struct pager_region_stats st;

	for (uint64_t i = 0; i < n; i++)
		fill(b + i * ps, i, 1, false);
	assert_within_limit(r, limit);
	st = rstats(r);
	/* 16 MiB at about 8x fits in the pool's 6 MiB: nothing spilled,
	 * nothing written to disk. */
	assert_true(st.pool_stores > 0);
	assert_true(st.pool_pages > 0);
	assert_int_equal(st.pool_rejects, 0);
	assert_true(st.pool_stored_bytes * 2 < st.pool_stores * ps);
	for (int round = 0; round < 2; round++) {
		for (uint64_t i = 0; i < n; i++)
			assert_true(check(b + i * ps, i, 1, false));
		assert_within_limit(r, limit);
	}
	st = rstats(r);
	assert_true(st.swap_ins > 0);
	assert_true(st.pool_hits > 0);
	/* Every swap-in came from the pool: the disk was never read. */
	assert_int_equal(st.pool_spills, 0);
	assert_true(st.pool_hits >= st.swap_ins);
	pager_close(p);
	stop(c);
}

/* ---- incompressible_bypasses --------------------------------------------- */

static void incompressible_bypasses(void **state)
{
	struct ctx *c = *state;
	const uint64_t n = 16 * MiB / ps, limit = 4 * MiB;

	start(c, "75", "lz4");
	struct pager *p = test_connect(c->d.sock);
	struct pager_region *r = region(p, n * ps, limit);
	uint8_t *b = pager_region_addr(r);
	struct pager_region_stats st;

	for (uint64_t i = 0; i < n; i++)
		fill(b + i * ps, i, 1, true);
	for (uint64_t i = 0; i < n; i++)
		assert_true(check(b + i * ps, i, 1, true));
	st = rstats(r);
	assert_true(st.swap_outs > 0);
	assert_true(st.pool_rejects >= st.swap_outs);
	assert_int_equal(st.pool_stores, 0);
	assert_int_equal(st.pool_pages, 0);
	assert_int_equal(st.pool_hits, 0);
	pager_close(p);
	stop(c);
}

/* ---- spill_and_read_back ------------------------------------------------- */

static void spill_and_read_back(void **state)
{
	struct ctx *c = *state;
	const uint64_t n = 64 * MiB / ps, limit = 2 * MiB;

	start(c, "50", "lz4");
	struct pager *p = test_connect(c->d.sock);
	struct pager_region *r = region(p, n * ps, limit);
	uint8_t *b = pager_region_addr(r);
	struct pager_region_stats st;

	for (uint64_t i = 0; i < n; i++) {
		fill(b + i * ps, i, 1, false);
		if (i % 1024 == 0)
			assert_within_limit(r, limit);
	}
	/* 64 MiB at about 8x is 8 MiB of pool: most of it went to disk. */
	for (uint64_t i = 0; i < n; i++)
		assert_true(check(b + i * ps, i, 1, false));
	/* Rewritten, so that the stale copies go, then read again. */
	for (uint64_t i = 0; i < n; i += 3)
		fill(b + i * ps, i, 2, false);
	for (uint64_t i = 0; i < n; i++)
		assert_true(check(b + i * ps, i, i % 3 ? 1 : 2, false));
	assert_within_limit(r, limit);
	st = rstats(r);
	assert_true(st.pool_spills > 0);
	assert_true(st.pool_hits > 0);
	assert_true(st.swap_ins > st.pool_hits); /* some came from disk */
	pager_close(p);
	stop(c);
}

/* ---- corrupt_entry_poisons ----------------------------------------------- */

static void corrupt_entry_poisons(void **state)
{
	struct ctx *c = *state;
	const uint64_t n = 8 * MiB / ps, limit = 4 * MiB;
	struct sigaction sa = { .sa_handler = test_on_sigbus }, old;
	uint64_t bad = UINT64_MAX, v;
	struct proto_reply before, after;

	start(c, "75", "lz4");
	struct pager *p = test_connect(c->d.sock);
	struct pager_region *r = region(p, n * ps, limit);
	uint8_t *b = pager_region_addr(r);
	struct pager_info info = { .sz = sizeof(info) };

	assert_int_equal(pager_get_info(p, &info), 0);
	if (!(info.uffd_features & (1ULL << 14) /* UFFD_FEATURE_POISON */)) {
		pager_close(p);
		stop(c);
		skip();
	}
	for (uint64_t i = 0; i < n; i++)
		fill(b + i * ps, i, 5, false);
	/* Nothing was spilled: every page out of memory is in the pool. */
	assert_int_equal(rstats(r).pool_spills, 0);
	assert_true(rstats(r).pool_pages > 0);
	assert_int_equal(test_status(c->d.sock, &before), 0);
	for (uint64_t i = 10; i < n && bad == UINT64_MAX; i += 7)
		if (test_inject(c->d.sock, (uint64_t)pager_region_id(r), i, 2 /* SWAP_FAULT_CORRUPT */) == 0)
			bad = i;
	assert_true(bad != UINT64_MAX);
	sigaction(SIGBUS, &sa, &old);
	for (int round = 0; round < 2; round++) {
		test_bus_seen = 0;
		assert_true(test_touch_bus((uint64_t *)(b + bad * ps), &v));
		assert_int_equal(test_bus_seen, 1);
	}
	for (uint64_t i = 0; i < n; i++) {
		if (i == bad)
			continue;
		assert_false(test_touch_bus((uint64_t *)(b + i * ps), &v));
		assert_true(check(b + i * ps, i, 5, false));
	}
	sigaction(SIGBUS, &old, NULL);
	assert_int_equal(rstats(r).poisoned, 1);
	/* The pool's copy was the bad one (nothing was ever spilled), and
	 * its check is counted with the swap's. */
	assert_int_equal(rstats(r).pool_spills, 0);
	assert_int_equal(test_status(c->d.sock, &after), 0);
	assert_true(after.swap_io_errors > before.swap_io_errors);
	pager_close(p);
	stop(c);
}

/* ---- zstd_and_reload ----------------------------------------------------- */

static void zstd_and_reload(void **state)
{
	struct ctx *c = *state;
	const uint64_t n = 16 * MiB / ps, limit = 4 * MiB;
	struct pager_region_stats st;
	FILE *f;

	snprintf(c->conf, sizeof(c->conf), "%s/pool-conf.%d", swap_dir, (int)getpid());
	f = fopen(c->conf, "w");
	assert_non_null(f);
	fprintf(f, "pool_percent = 75\npool_compressor = zstd\n");
	fclose(f);
	start(c, NULL, NULL);
	struct pager *p = test_connect(c->d.sock);
	struct pager_region *r = region(p, n * ps, limit);
	uint8_t *b = fill_region(r, n);

	st = rstats(r);
	assert_true(st.pool_stores > 0);
	uint64_t stores = st.pool_stores;

	/* Off at run time: what is in the pool still reads right, and is
	 * spilled as eviction needs room; new pages go to swap. */
	f = fopen(c->conf, "w");
	assert_non_null(f);
	fprintf(f, "pool_percent = 0\n");
	fclose(f);
	assert_int_equal(kill(c->d.pid, SIGHUP), 0);
	/* The signal reaches pagerd before the status request is sent: it
	 * has reloaded by the time that is answered. */
	{
		struct proto_reply s;

		assert_int_equal(test_status(c->d.sock, &s), 0);
		assert_int_equal(test_status(c->d.sock, &s), 0);
	}
	for (uint64_t i = 0; i < n; i++)
		fill(b + i * ps, i, 2, false);
	for (uint64_t i = 0; i < n; i++)
		assert_true(check(b + i * ps, i, 2, false));
	st = rstats(r);
	assert_true(st.swap_outs > 0);
	assert_true(st.pool_stores - stores < n / 4);
	assert_within_limit(r, limit);
	pager_close(p);
	stop(c);
}

/* ---- clean_entries_leave_first ------------------------------------------- */

/*
 * Pages written once fill the pool with dirty entries (their only copy)
 * and spill the oldest to disk.  Those, read back from disk, are clean
 * (their slot holds them); evicted again they are cached in the pool as
 * clean entries.  The pool at its share then makes room by dropping
 * those, with no write, rather than by writing out its coldest entries,
 * the dirty ones of the first pass: before, every page read here cost a
 * spill write of one of those.
 */
static void clean_entries_leave_first(void **state)
{
	struct ctx *c = *state;
	const uint64_t n = 64 * MiB / ps, limit = 4 * MiB, reread = 16 * MiB / ps;
	struct pager_region_stats st;

	start(c, "50", "lz4");
	struct pager *p = test_connect(c->d.sock);
	struct pager_region *r = region(p, n * ps, limit);
	uint8_t *b = fill_region(r, n);

	st = rstats(r);
	fprintf(stderr, "written %" PRIu64 " pages: %" PRIu64 " stores, %" PRIu64
		" spill writes, pool %" PRIu64 " pages, %" PRIu64 " resident\n",
		n, st.pool_stores, st.pool_spills, st.pool_pages, st.resident);
	/* The first pages were spilled: they are on disk. */
	assert_true(st.pool_spills > reread);
	uint64_t spills = st.pool_spills, hits = st.pool_hits, pool = st.pool_pages;

	for (uint64_t i = 0; i < reread; i++)
		assert_true(check(b + i * ps, i, 1, false));
	assert_within_limit(r, limit);
	st = rstats(r);
	fprintf(stderr, "re-read %" PRIu64 " pages: %" PRIu64 " pool hits, %" PRIu64
		" spill writes, %" PRIu64 " stores; pool %" PRIu64 " -> %" PRIu64 " pages\n",
		reread, st.pool_hits - hits, st.pool_spills - spills, st.pool_stores,
		pool, st.pool_pages);
	/* They came from disk, went back through the pool clean, and left
	 * it clean.  Dirty entries were written only until the first clean
	 * ones were there to drop: the first pass's last pages, resident
	 * and dirty (about 400), went into the pool first.  Before, each
	 * page read here cost a write (4,324 for 4,096 pages read). */
	assert_true(st.pool_hits - hits < reread / 8);
	assert_true(st.pool_spills - spills < reread / 4);
	for (uint64_t i = 0; i < n; i++)
		assert_true(check(b + i * ps, i, 1, false));
	assert_within_limit(r, limit);
	pager_close(p);
	stop(c);
}

/* ---- main ------------------------------------------------------------------ */

static int setup(void **state)
{
	*state = calloc(1, sizeof(struct ctx));
	return *state ? 0 : -1;
}

static int teardown(void **state)
{
	struct ctx *c = *state;

	if (c->running) {
		kill(c->d.pid, SIGKILL);
		waitpid(c->d.pid, NULL, 0);
		unlink(c->swap);
	}
	if (c->conf[0])
		unlink(c->conf);
	free(c);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(pool_hit_correct, setup, teardown),
		cmocka_unit_test_setup_teardown(incompressible_bypasses, setup, teardown),
		cmocka_unit_test_setup_teardown(spill_and_read_back, setup, teardown),
		cmocka_unit_test_setup_teardown(corrupt_entry_poisons, setup, teardown),
		cmocka_unit_test_setup_teardown(zstd_and_reload, setup, teardown),
		cmocka_unit_test_setup_teardown(clean_entries_leave_first, setup, teardown),
	};

	ps = (size_t)sysconf(_SC_PAGESIZE);
	if (getenv("ITEST_FILTER"))
		cmocka_set_test_filter(getenv("ITEST_FILTER"));
	/* The swap lives on a real disk: O_DIRECT must work in the directory. */
	if (test_pick_swap_dir(swap_dir, sizeof(swap_dir)) < 0) {
		printf("no directory here supports O_DIRECT for a swap file\n");
		return TEST_SKIP;
	}
	return test_run_group(tests, ALARM_S * 3);
}
