/* SPDX-License-Identifier: MIT */
/*
 * Learned prefetch (README, "Snapshots and lazy restore"): a restored
 * region records the order in which its application first touched the
 * image's pages, a snapshot of it stores that order beside its image
 * (IMAGE.order), and the next restore prefetches those pages first.
 *
 *   records_order        restore lazily, touch pages in a known scattered
 *                        order (one of them arriving with an earlier
 *                        fault's readahead: seen through the page tables),
 *                        snapshot: IMAGE.order lists exactly that order
 *   prefetches_order_first  restore that image with prefetch under a limit
 *                        that leaves room for the learned pages alone: they
 *                        and only they come in (mincore), counted in
 *                        image_learned_reads; then every byte is right
 *   bad_orders           a damaged, oversized, cut or other image's
 *                        IMAGE.order is ignored with a warning in pagerd's
 *                        log; the restore prefetches in address order and
 *                        is byte-identical
 *   without_order        a restored region nobody touched, and a fresh
 *                        one, snapshot without IMAGE.order (an old one at
 *                        the path is removed) and restore byte-identical
 *
 * The prefetch is observed through counters and the page cache
 * (mincore), never through timing.
 */
#include <setjmp.h> /* cmocka.h needs these four first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <pager.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "image.h"

#define MiB (1ULL << 20)
#define LEN (16 * MiB)
/* pagerd's restore prefetch leaves this much room under a limit for
 * faults (snapshot.c, PREFETCH_SPARE). */
#define SPARE 1024

static size_t ps;
static char dir[48];
static char logpath[96];

/* The touch order: scattered, each page outside the readahead (64 pages
 * on from a fault) of the ones before it, except 3001, which comes in
 * with 3000's read and is seen only in the page tables. */
static const uint64_t touch[] = { 3000, 3001, 200, 1700, 900, 2500, 50, 3900, 1200 };
#define NTOUCH (sizeof(touch) / sizeof(touch[0]))

struct ctx {
	struct test_pagerd d;
	char swap[128];
};

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof(*c));
	const char *args[6];
	int saved, log;

	assert_non_null(c);
	snprintf(c->swap, sizeof(c->swap), "%s/swap", dir);
	args[0] = "--swap";
	args[1] = c->swap;
	args[2] = "--swap-size";
	args[3] = "256M";
	args[4] = NULL;
	/* pagerd's log into a file of ours, to find its warnings in. */
	log = open(logpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(log >= 0);
	saved = dup(2);
	assert_true(saved >= 0);
	assert_int_equal(dup2(log, 2), 2);
	assert_int_equal(test_pagerd_start(&c->d, args), 0);
	assert_int_equal(dup2(saved, 2), 2);
	close(saved);
	close(log);
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;

	assert_int_equal(test_pagerd_stop(&c->d), 0);
	unlink(c->swap);
	free(c);
	return 0;
}

static uint64_t word(uint64_t seed, uint64_t page, size_t i)
{
	return seed ^ (page << 20) ^ i ^ 0x9e3779b97f4a7c15ull;
}

static void files_unlink(const char *path)
{
	static const char *const ext[] = { "", ".meta", ".crc", ".order" };
	char f[256];

	for (size_t i = 0; i < 4; i++) {
		snprintf(f, sizeof(f), "%s%s", path, ext[i]);
		unlink(f);
	}
}

static void path_of(char *buf, size_t n, const char *name)
{
	if ((size_t)snprintf(buf, n, "%s/%s", dir, name) >= n)
		fail();
}

static void sidecar(char *buf, size_t n, const char *path, const char *ext)
{
	if ((size_t)snprintf(buf, n, "%s%s", path, ext) >= n)
		fail();
}

/* A fresh region, every page data, snapshot to path. */
static void take(struct ctx *c, const char *path, uint64_t seed)
{
	struct pager *p = test_connect(c->d.sock);
	struct pager_region *r;
	uint64_t *m;

	assert_int_equal(pager_region_create(p, LEN, NULL, &r), 0);
	m = pager_region_addr(r);
	for (size_t i = 0; i < LEN / 8; i++)
		m[i] = word(seed, i / (ps / 8), i % (ps / 8));
	assert_int_equal(pager_region_snapshot(r, path, NULL), 0);
	pager_close(p);
}

/* Every byte of the region is the image's of seed. */
static void expect_bytes(struct pager_region *r, uint64_t seed)
{
	const uint64_t *m = pager_region_addr(r);

	for (size_t i = 0; i < LEN / 8; i++)
		if (m[i] != word(seed, i / (ps / 8), i % (ps / 8)))
			fail_msg("word %zu (page %zu) differs", i, i / (ps / 8));
}

/* Restores path lazily, touches `touch` in its order, snapshots to out. */
static void learn(struct ctx *c, const char *path, uint64_t seed, const char *out)
{
	struct pager_region_opts ro = { .sz = sizeof(ro), .flags = PAGER_REGION_NO_PREFETCH };
	struct pager *p = test_connect(c->d.sock);
	struct pager_region *r;
	const volatile uint64_t *m;

	assert_int_equal(pager_region_restore(p, path, &ro, &r), 0);
	m = pager_region_addr(r);
	for (size_t k = 0; k < NTOUCH; k++)
		assert_true(m[touch[k] * (ps / 8) + 3] == word(seed, touch[k], 3));
	assert_int_equal(pager_region_snapshot(r, out, NULL), 0);
	pager_close(p);
}

/* Reads path's IMAGE.order: its header, and its entries into order. */
static size_t read_order(const char *path, struct image_order_hdr *h, uint64_t *order,
			 size_t max)
{
	char f[256];
	int fd;
	size_t n;

	sidecar(f, sizeof(f), path, ".order");
	fd = open(f, O_RDONLY);
	if (fd < 0)
		fail_msg("%s: %s", f, strerror(errno));
	assert_int_equal(pread(fd, h, sizeof(*h), 0), (ssize_t)sizeof(*h));
	n = (size_t)le64toh(h->count);
	assert_true(n <= max);
	assert_int_equal(pread(fd, order, n * 8, IMAGE_ORDER_ENTRIES_OFF), (ssize_t)(n * 8));
	for (size_t i = 0; i < n; i++)
		order[i] = le64toh(order[i]);
	close(fd);
	return n;
}

static uint32_t crc_table_crc(const char *path)
{
	struct image_crc_hdr h;
	char f[256];
	int fd;

	sidecar(f, sizeof(f), path, ".crc");
	fd = open(f, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &h, sizeof(h), 0), (ssize_t)sizeof(h));
	close(fd);
	return le32toh(h.table_crc);
}

static void records_order(void **state)
{
	struct ctx *c = *state;
	char a[128], b[128];
	struct image_order_hdr h;
	uint64_t order[64];
	size_t n;

	path_of(a, sizeof(a), "a.img");
	path_of(b, sizeof(b), "b.img");
	take(c, a, 1);
	/* A fresh region learned nothing: no IMAGE.order. */
	sidecar(b, sizeof(b), a, ".order");
	assert_int_equal(access(b, F_OK), -1);
	path_of(b, sizeof(b), "b.img");
	learn(c, a, 1, b);
	n = read_order(b, &h, order, 64);
	assert_memory_equal(h.magic, IMAGE_ORDER_MAGIC, 8);
	assert_int_equal(le32toh(h.version), IMAGE_ORDER_VERSION);
	assert_int_equal(le32toh(h.page_size), ps);
	assert_int_equal(le64toh(h.pages), LEN / ps);
	/* Bound to its own image's checksum table. */
	assert_int_equal(le32toh(h.image_crc), crc_table_crc(b));
	for (size_t i = 0; i < n; i++)
		fprintf(stderr, "order[%zu] = %llu\n", i, (unsigned long long)order[i]);
	assert_int_equal(n, NTOUCH);
	for (size_t i = 0; i < NTOUCH; i++)
		assert_int_equal(order[i], touch[i]);
	files_unlink(a);
	files_unlink(b);
}

/* The pages of r in the page cache (mincore), in `in`. */
static void resident(struct pager_region *r, unsigned char *in)
{
	assert_int_equal(mincore(pager_region_addr(r), LEN, in), 0);
}

/* Waits (bounded) until r has read `want` pages from its image. */
static void wait_reads(struct pager_region *r, uint64_t want, struct pager_region_stats *st)
{
	st->sz = sizeof(*st);
	for (int i = 0; i < 20000; i++) {
		assert_int_equal(pager_region_stats(r, st), 0);
		if (st->image_reads >= want)
			return;
		usleep(500);
	}
	fail_msg("image_reads %llu, want %llu", (unsigned long long)st->image_reads,
		 (unsigned long long)want);
}

/*
 * Restores path with prefetch under a limit that leaves room for NTOUCH
 * pages past the prefetch's spare: returns, in `in`, the pages that came
 * in, and the stats; then lifts the limit and checks every byte.
 */
static void restore_limited(struct ctx *c, const char *path, uint64_t seed,
			    unsigned char *in, struct pager_region_stats *st)
{
	struct pager_region_opts ro = { .sz = sizeof(ro),
					.memory_limit = (SPARE + NTOUCH) * ps };
	struct pager *p = test_connect(c->d.sock);
	struct pager_region *r;

	assert_int_equal(pager_region_restore(p, path, &ro, &r), 0);
	wait_reads(r, NTOUCH, st);
	resident(r, in);
	assert_int_equal(pager_region_stats(r, st), 0);
	assert_int_equal(pager_region_set_limit(r, 0), 0);
	expect_bytes(r, seed);
	pager_close(p);
}

static void prefetches_order_first(void **state)
{
	struct ctx *c = *state;
	char a[128], b[128];
	unsigned char in[LEN / 4096];
	struct pager_region_stats st;
	size_t n = 0;

	path_of(a, sizeof(a), "a.img");
	path_of(b, sizeof(b), "b.img");
	take(c, a, 2);
	learn(c, a, 2, b);
	restore_limited(c, b, 2, in, &st);
	fprintf(stderr, "image_reads %llu, image_learned_reads %llu\n",
		(unsigned long long)st.image_reads, (unsigned long long)st.image_learned_reads);
	/* The learned pages, and nothing else, came in first. */
	assert_int_equal(st.image_reads, NTOUCH);
	assert_int_equal(st.image_learned_reads, NTOUCH);
	for (size_t pg = 0; pg < LEN / ps; pg++) {
		bool want = false;

		for (size_t k = 0; k < NTOUCH; k++)
			want |= touch[k] == pg;
		if ((in[pg] & 1) != want)
			fail_msg("page %zu %s in memory", pg, want ? "not" : "unexpectedly");
		n += in[pg] & 1;
	}
	assert_int_equal(n, NTOUCH);
	files_unlink(a);
	files_unlink(b);
}

/* pagerd's log holds `what`. */
static bool logged(const char *what)
{
	static char buf[1 << 20];
	int fd = open(logpath, O_RDONLY);
	ssize_t n;

	assert_true(fd >= 0);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	return strstr(buf, what) != NULL;
}

/* Restores b with prefetch under the limit: an ignored order, so the
 * prefetch goes in address order and the first NTOUCH pages come in. */
static void expect_ignored(struct ctx *c, const char *b, uint64_t seed, const char *why)
{
	unsigned char in[LEN / 4096];
	struct pager_region_stats st;
	char msg[160];

	restore_limited(c, b, seed, in, &st);
	assert_int_equal(st.image_learned_reads, 0);
	for (size_t pg = 0; pg < NTOUCH; pg++)
		assert_true(in[pg] & 1);
	snprintf(msg, sizeof(msg), "(IMAGE.order) is ignored: %s", why);
	if (!logged(msg))
		fail_msg("pagerd did not log \"%s\"", msg);
}

static void copy_file(const char *from, const char *to, size_t cut, const void *extra,
		      size_t nextra)
{
	static char buf[1 << 21];
	int in = open(from, O_RDONLY), out;
	ssize_t n;

	assert_true(in >= 0);
	n = read(in, buf, sizeof(buf));
	assert_true(n > 0);
	close(in);
	if (cut && (size_t)n > cut)
		n = (ssize_t)cut;
	out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(out >= 0);
	assert_int_equal(write(out, buf, (size_t)n), n);
	if (nextra)
		assert_int_equal(write(out, extra, nextra), (ssize_t)nextra);
	close(out);
}

static void bad_orders(void **state)
{
	struct ctx *c = *state;
	char a[128], b[128], x[128], y[128], ob[256], ox[256], keep[256];
	static char big[1 << 21];
	int fd;

	path_of(a, sizeof(a), "a.img");
	path_of(b, sizeof(b), "b.img");
	path_of(x, sizeof(x), "x.img");
	path_of(y, sizeof(y), "y.img");
	take(c, a, 3);
	learn(c, a, 3, b);
	/* Another image of the same size, with an order of its own. */
	take(c, x, 4);
	learn(c, x, 4, y);
	sidecar(ob, sizeof(ob), b, ".order");
	sidecar(keep, sizeof(keep), b, ".order.good");
	copy_file(ob, keep, 0, NULL, 0);

	/* An entry damaged. */
	fd = open(ob, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "\x01", 1, IMAGE_ORDER_ENTRIES_OFF + 8), 1);
	close(fd);
	expect_ignored(c, b, 3, "its entries are damaged");

	/* Cut inside its header. */
	copy_file(keep, ob, 20, NULL, 0);
	expect_ignored(c, b, 3, "shorter than its header");

	/* Longer than its header says. */
	copy_file(keep, ob, 0, "\0\0\0\0\0\0\0\0", 8);
	expect_ignored(c, b, 3, "its size is not what its header says");

	/* Larger than the format allows (libpager reads a byte past it). */
	copy_file(keep, ob, 0, big, sizeof(big));
	expect_ignored(c, b, 3, "larger than the format allows");

	/* The order of another image (its checksum table is not b's). */
	sidecar(ox, sizeof(ox), y, ".order");
	copy_file(ox, ob, 0, NULL, 0);
	expect_ignored(c, b, 3, "made for another image");

	unlink(keep);
	files_unlink(a);
	files_unlink(b);
	files_unlink(x);
	files_unlink(y);
}

static void without_order(void **state)
{
	struct ctx *c = *state;
	char a[128], d[128], od[256];
	struct pager *p;
	struct pager_region *r;
	int fd;

	path_of(a, sizeof(a), "a.img");
	path_of(d, sizeof(d), "d.img");
	take(c, a, 5);
	/* An old IMAGE.order at the path the snapshot goes to. */
	sidecar(od, sizeof(od), d, ".order");
	fd = open(od, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "stale", 5), 5);
	close(fd);
	/* Restored, touched by nobody, snapshot at once. */
	p = test_connect(c->d.sock);
	assert_int_equal(pager_region_restore(p, a, &(struct pager_region_opts){
		.sz = sizeof(struct pager_region_opts), .flags = PAGER_REGION_NO_PREFETCH }, &r), 0);
	assert_int_equal(pager_region_snapshot(r, d, NULL), 0);
	pager_close(p);
	assert_int_equal(access(od, F_OK), -1);
	/* It restores, byte-identical. */
	p = test_connect(c->d.sock);
	assert_int_equal(pager_region_restore(p, d, NULL, &r), 0);
	expect_bytes(r, 5);
	pager_close(p);
	files_unlink(a);
	files_unlink(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(records_order, setup, teardown),
		cmocka_unit_test_setup_teardown(prefetches_order_first, setup, teardown),
		cmocka_unit_test_setup_teardown(bad_orders, setup, teardown),
		cmocka_unit_test_setup_teardown(without_order, setup, teardown),
	};
	int rc;

	ps = (size_t)sysconf(_SC_PAGESIZE);
	if (ps != 4096) {
		printf("the test's page arithmetic wants 4 KiB pages\n");
		return TEST_SKIP;
	}
	/* Images on a real disk (SEEK_DATA). */
	snprintf(dir, sizeof(dir), "/var/tmp/pagerd-learn.XXXXXX");
	if (!mkdtemp(dir)) {
		printf("cannot make a directory in /var/tmp\n");
		return TEST_SKIP;
	}
	snprintf(logpath, sizeof(logpath), "%s/pagerd.log", dir);
	rc = test_run_group(tests, 240);
	if (rc)
		fprintf(stderr, "pagerd's log: %s (kept)\n", logpath);
	else {
		unlink(logpath);
		rmdir(dir);
	}
	return rc ? 1 : 0;
}
