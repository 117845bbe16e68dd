/* SPDX-License-Identifier: MIT */
/*
 * Integration tests of pagerd's Ceph RBD tier against a real single-node
 * cluster (tests/ceph_cluster.sh: one mon, one memstore OSD), brought up
 * by this binary and stopped by pid at its end.
 *
 *   osd_killed_mid_run  a client's pages are in an RBD swap when the OSD is
 *                       SIGKILLed: reading them back gives SIGBUS (the
 *                       swap-in timed out: the page is poisoned), never
 *                       wrong bytes; pagerd lives and keeps serving a
 *                       client that does not need the cluster, and its
 *                       status answers at once
 *
 *   snapshot_two_pagerds  pagerd A snapshots a region (random data, holes,
 *                       a writer running during the copy) into rbd:...;
 *                       pagerd B, another "host", restores it lazily:
 *                       byte-identical to the instant, fewer image reads
 *                       than pages while part is touched, holes never read
 *   access_granted_only a user with no grant gets -EACCES for every
 *                       request naming an image outside it (and the image
 *                       is never made); the same user in its granted pool
 *                       snapshots and restores; pagerctl (root) may
 *   bad_names           names that are not rbd:POOL[/NS]/IMAGE: -EINVAL
 *   pagerctl_snapshot   pagerctl snapshot ID rbd:...: restored intact
 *   locked_image        an image another client holds the exclusive lock
 *                       of: -EBUSY; free again: the snapshot works
 *   osd_killed_mid_restore  the OSD dies while a region is restored from
 *                       it: untouched pages give SIGBUS, never wrong
 *                       bytes; pagerd survives and answers
 *   full_cluster        the OSD is past the full ratio (set tiny): a
 *                       snapshot into the cluster fails in its timeout
 *                       and pagerd's log says the cluster is full
 *   learned_order       pagerd B restores an image and its application
 *                       touches scattered pages; B's snapshot of that
 *                       region stores the order in the cluster
 *                       (pagerd_order.IMAGE), and pagerd A's restore of it
 *                       prefetches exactly those pages first
 *                       (image_learned_reads); a later snapshot of a
 *                       region that learned nothing, with the same data
 *                       (so the same table), leaves no order behind
 *
 * Exit 77 (skip, saying why) when ceph-mon/ceph-osd are missing and cannot
 * be installed (make check installs them as root), or the cluster does not
 * come up.
 */
#include <setjmp.h> /* cmocka.h needs these four first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <pager.h>
#include <pthread.h>
#include <rados/librados.h>
#include <rbd/librbd.h>
#include <signal.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define MiB (1ULL << 20)

static size_t ps;
static char cluster[64], conf[96];

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static uint64_t word(uint64_t page, uint64_t i)
{
	return (page * 0x9E3779B97F4A7C15ULL) ^ (i * 0xC2B2AE3D27D4EB4FULL) ^ 0x5bd1e995;
}

static sigjmp_buf bus_jmp;

static void on_bus(int sig)
{
	(void)sig;
	siglongjmp(bus_jmp, 1);
}

/* 0: the page holds its pattern, 1: other bytes, 2: SIGBUS. */
static int read_page(const volatile uint64_t *pg, uint64_t page)
{
	if (sigsetjmp(bus_jmp, 1))
		return 2;
	for (size_t i = 0; i < ps / 8; i++)
		if (pg[i] != word(page, i))
			return 1;
	return 0;
}

/*
 * The client: fills a region 8x its limit (most of it goes to the RBD
 * swap), says so on `ready`, waits for the OSD to be killed (a byte on
 * `go`), then reads a sample of pages.  Exit code: 0 no wrong byte and at
 * least one SIGBUS; 1 a wrong byte; 2 no SIGBUS (nothing came from the
 * dead cluster: the test proves nothing); 3 setup.
 */
static int client_run(const char *sock, int ready, int go)
{
	struct pager_opts o = { .sz = sizeof(o), .socket_path = sock,
				.flags = PAGER_OPEN_NO_PRIVATE };
	struct pager_region_opts ro = { .sz = sizeof(ro), .memory_limit = 4 * MiB };
	struct sigaction sa = { .sa_handler = on_bus };
	uint64_t n = 32 * MiB / ps, wrong = 0, bus = 0, good = 0;
	struct pager_region *r;
	struct pager *p;
	char c = 0;

	if (pager_open(&p, &o) < 0 || pager_region_create(p, n * ps, &ro, &r) < 0)
		return 3;
	uint8_t *b = pager_region_addr(r);
	for (uint64_t pg = 0; pg < n; pg++)
		for (size_t i = 0; i < ps / 8; i++)
			((uint64_t *)(b + pg * ps))[i] = word(pg, i);
	if (write(ready, &c, 1) != 1 || read(go, &c, 1) != 1)
		return 3;
	sigaction(SIGBUS, &sa, NULL);
	/* The first pages went to swap first; 8 of them, spread out (each
	 * SIGBUS waits out the timeout). */
	for (uint64_t k = 0; k < 8; k++) {
		uint64_t pg = k * (n / 2 / 8);

		switch (read_page((const volatile uint64_t *)(b + pg * ps), pg)) {
		case 0: good++; break;
		case 1: wrong++; break;
		default: bus++; break;
		}
	}
	printf("client: %" PRIu64 " pages good, %" PRIu64 " SIGBUS, %" PRIu64 " wrong\n",
	       good, bus, wrong);
	fflush(stdout);
	return wrong ? 1 : bus ? 0 : 2;
}

static void osd_killed_mid_run(void **state)
{
	char swap[96], sock[128];
	const char *args[] = { "--swap", swap, "--swap-size", "256M", "--ceph-conf", conf,
			       "--ceph-timeout", "1000", NULL };
	struct test_pagerd d;
	struct proto_reply st;
	int ready[2], go[2], ws;
	pid_t kid;
	char c;

	(void)state;
	snprintf(swap, sizeof(swap), "rbd:rbd/kill-%d", (int)getpid());
	assert_int_equal(test_pagerd_start(&d, args), 0);
	snprintf(sock, sizeof(sock), "%s", d.sock);
	assert_int_equal(pipe(ready), 0);
	assert_int_equal(pipe(go), 0);
	kid = fork();
	assert_true(kid >= 0);
	if (kid == 0) {
		close(ready[0]);
		close(go[1]);
		fflush(stdout);
		_exit(client_run(sock, ready[1], go[0]));
	}
	close(ready[1]);
	close(go[0]);
	assert_int_equal(read(ready[0], &c, 1), 1);
	/* The crash: the OSD goes, with every page the swap holds. */
	assert_int_equal(sh("tests/ceph_cluster.sh kill-osd %s", cluster), 0);
	assert_int_equal(write(go[1], &c, 1), 1);

	/* Meanwhile pagerd serves everyone else: its status, and a client
	 * whose memory fits its limit. */
	assert_int_equal(test_status(d.sock, &st), 0);
	{
		struct pager *p = test_connect(d.sock);
		struct pager_region *r;
		uint64_t *w;

		assert_int_equal(pager_region_create(p, 64 * ps, NULL, &r), 0);
		w = pager_region_addr(r);
		for (uint64_t i = 0; i < 64 * ps / 8; i++)
			w[i] = i * 7;
		for (uint64_t i = 0; i < 64 * ps / 8; i++)
			assert_int_equal(w[i], i * 7);
		pager_close(p);
	}

	assert_int_equal(waitpid(kid, &ws, 0), kid);
	assert_true(WIFEXITED(ws));
	assert_int_equal(WEXITSTATUS(ws), 0);
	assert_true(test_pagerd_alive(&d));
	assert_int_equal(test_status(d.sock, &st), 0);
	assert_int_equal(test_pagerd_stop(&d), 0);
	close(ready[0]);
	close(go[1]);
}

/* ---- snapshots into RBD, restore from it --------------------------------- */

#define SNAP_PAGES 4096 /* 16 MiB of 4 KiB pages */

/* Page p's role in the region: a hole never written, a page written with
 * zeros (a hole in the image too), or data. */
static bool is_hole(uint64_t p)
{
	return p % 7 == 3 || p % 11 == 5;
}

static void fill_region(uint8_t *b, uint64_t pages, uint64_t seed)
{
	for (uint64_t p = 0; p < pages; p++) {
		uint64_t *w = (uint64_t *)(b + p * ps);

		if (p % 7 == 3)
			continue; /* discarded: empty */
		for (size_t i = 0; i < ps / 8; i++)
			w[i] = p % 11 == 5 ? 0 : word(p ^ seed, i);
	}
}

struct writer {
	uint8_t *b;
	uint64_t pages;
	volatile bool stop;
	uint64_t writes;
};

/* Writes over data pages and holes alike while the snapshot copies:
 * none of it may reach the image. */
static void *writer_run(void *arg)
{
	struct writer *w = arg;
	uint64_t x = 88172645463325252ull;

	while (!w->stop) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		uint64_t p = x % w->pages;

		((volatile uint64_t *)(w->b + p * ps))[x % (ps / 8)] = x | 1;
		w->writes++;
	}
	return NULL;
}

static struct pager *open_sock(const char *sock)
{
	struct pager_opts o = { .sz = sizeof(o), .socket_path = sock,
				.flags = PAGER_OPEN_NO_PRIVATE };
	struct pager *p = NULL;

	return pager_open(&p, &o) < 0 ? NULL : p;
}

static uint64_t image_reads(struct pager_region *r)
{
	struct pager_region_stats st = { .sz = sizeof(st) };

	assert_int_equal(pager_region_stats(r, &st), 0);
	return st.image_reads;
}

static void snapshot_two_pagerds(void **state)
{
	const char *args[] = { "--ceph-conf", conf, NULL };
	struct test_pagerd a, b;
	struct pager *pa, *pb;
	struct pager_region *r, *rr;
	struct pager_region_opts ro = { .sz = sizeof(ro), .flags = PAGER_REGION_NO_PREFETCH };
	struct writer w = { .pages = SNAP_PAGES };
	char image[96];
	uint8_t *ref, *got;
	uint64_t data = 0, reads;
	pthread_t t;

	(void)state;
	snprintf(image, sizeof(image), "rbd:rbd/two-%d", (int)getpid());
	assert_int_equal(test_pagerd_start(&a, args), 0);
	assert_int_equal(test_pagerd_start(&b, args), 0);
	pa = open_sock(a.sock);
	pb = open_sock(b.sock);
	assert_non_null(pa);
	assert_non_null(pb);

	assert_int_equal(pager_region_create(pa, SNAP_PAGES * ps, NULL, &r), 0);
	w.b = pager_region_addr(r);
	/* An earlier snapshot to the same image with data in every page:
	 * where the region now has holes, the image must not keep it. */
	for (uint64_t p = 0; p < SNAP_PAGES; p++)
		for (size_t i = 0; i < ps / 8; i++)
			((uint64_t *)(w.b + p * ps))[i] = word(p, i) | 1;
	assert_int_equal(pager_region_snapshot(r, image, NULL), 0);
	for (uint64_t p = 3; p < SNAP_PAGES; p += 7)
		assert_int_equal(pager_region_discard(r, p * ps, ps), 0);
	fill_region(w.b, SNAP_PAGES, 1);
	ref = malloc(SNAP_PAGES * ps);
	assert_non_null(ref);
	memcpy(ref, w.b, SNAP_PAGES * ps);
	for (uint64_t p = 0; p < SNAP_PAGES; p++)
		data += !is_hole(p);

	/* The instant is when start returns: the writer starts after it. */
	assert_int_equal(pager_region_snapshot_start(r, image, NULL), 0);
	assert_int_equal(pthread_create(&t, NULL, writer_run, &w), 0);
	{
		struct pager_snapshot_progress pr = { .sz = sizeof(pr) };
		int e;

		while ((e = pager_region_snapshot_poll(r, &pr)) == 0)
			usleep(1000);
		assert_int_equal(e, 1);
		assert_int_equal(pr.status, 0);
	}
	w.stop = true;
	pthread_join(t, NULL);
	printf("snapshot: %" PRIu64 " writes during the copy\n", w.writes);
	assert_true(w.writes > 0);

	/* The raw image: byte i is byte i of the region at the instant. */
	assert_int_equal(sh("rbd -c %s export %s %s/export.raw >/dev/null 2>&1", conf,
			    image + 4, cluster), 0);
	{
		char path[128];
		FILE *f;

		snprintf(path, sizeof(path), "%s/export.raw", cluster);
		f = fopen(path, "r");
		assert_non_null(f);
		got = malloc(SNAP_PAGES * ps);
		assert_non_null(got);
		assert_int_equal(fread(got, 1, SNAP_PAGES * ps, f), SNAP_PAGES * ps);
		assert_int_equal(fgetc(f), EOF);
		fclose(f);
		unlink(path);
		assert_memory_equal(got, ref, SNAP_PAGES * ps);
		free(got);
	}

	/* Host B: lazy, no prefetch; a quarter touched first. */
	{
		int e = pager_region_restore(pb, image, &ro, &rr);

		if (e < 0)
			sh("rbd -c %s image-meta list %s", conf, image + 4);
		assert_int_equal(e, 0);
	}
	assert_int_equal(pager_region_len(rr), SNAP_PAGES * ps);
	got = pager_region_addr(rr);
	assert_int_equal(image_reads(rr), 0);
	assert_memory_equal(got, ref, SNAP_PAGES / 4 * ps);
	reads = image_reads(rr);
	printf("restore: %" PRIu64 " image reads after a quarter of %d pages\n", reads,
	       SNAP_PAGES);
	assert_true(reads > 0);
	assert_true(reads < data);
	assert_memory_equal(got, ref, SNAP_PAGES * ps);
	/* Every data page read once, no hole ever. */
	assert_int_equal(image_reads(rr), data);

	pager_close(pb);
	pager_close(pa);
	free(ref);
	assert_int_equal(test_pagerd_stop(&b), 0);
	assert_int_equal(test_pagerd_stop(&a), 0);
	sh("rbd -c %s rm %s >/dev/null 2>&1; rados -c %s -p rbd rm pagerd_crc.%s", conf,
	   image + 4, conf, strchr(image + 4, '/') + 1);
}

/* ---- learned order on RBD ------------------------------------------------ */

#define LO_PAGES 2048
#define LO_TOUCH 16

/* Touched out of address order, 128 pages apart: a fault's read-around
 * (64 pages) never brings the next one, and no two make one learned run. */
static uint64_t lo_touch(size_t k)
{
	return (uint64_t)((k * 7) % LO_TOUCH) * 128 + 5;
}

static void lo_fill(uint8_t *b)
{
	for (uint64_t p = 0; p < LO_PAGES; p++)
		for (size_t i = 0; i < ps / 8; i++)
			((uint64_t *)(b + p * ps))[i] = word(p, i);
}

/* Restores image on p with prefetch, waits (bounded) until every page is
 * in, checks every byte; returns the pages the learned prefetch read. */
static uint64_t lo_restore_all(struct pager *p, const char *image)
{
	struct pager_region_stats st = { .sz = sizeof(st) };
	struct pager_region *r;
	int i;

	assert_int_equal(pager_region_restore(p, image, NULL, &r), 0);
	for (i = 0; i < 60000; i++) {
		assert_int_equal(pager_region_stats(r, &st), 0);
		if (st.image_reads >= LO_PAGES)
			break;
		usleep(1000);
	}
	printf("restore of %s: image_reads %" PRIu64 ", image_learned_reads %" PRIu64 "\n",
	       image, st.image_reads, st.image_learned_reads);
	assert_int_equal(st.image_reads, LO_PAGES);
	for (uint64_t pg = 0; pg < LO_PAGES; pg++)
		assert_int_equal(read_page((const volatile uint64_t *)
					   ((uint8_t *)pager_region_addr(r) + pg * ps), pg), 0);
	assert_int_equal(pager_region_destroy(r), 0);
	return st.image_learned_reads;
}

static void learned_order(void **state)
{
	const char *args[] = { "--ceph-conf", conf, NULL };
	struct pager_region_opts ro = { .sz = sizeof(ro), .flags = PAGER_REGION_NO_PREFETCH };
	struct test_pagerd a, b;
	struct pager *pa, *pb;
	struct pager_region *r, *rr;
	char x[96], y[96];
	uint8_t *got;

	(void)state;
	snprintf(x, sizeof(x), "rbd:rbd/lo-x-%d", (int)getpid());
	snprintf(y, sizeof(y), "rbd:rbd/lo-y-%d", (int)getpid());
	assert_int_equal(test_pagerd_start(&a, args), 0);
	assert_int_equal(test_pagerd_start(&b, args), 0);
	pa = open_sock(a.sock);
	pb = open_sock(b.sock);
	assert_non_null(pa);
	assert_non_null(pb);

	/* A: the first image, taken from a fresh region (no order). */
	assert_int_equal(pager_region_create(pa, LO_PAGES * ps, NULL, &r), 0);
	lo_fill(pager_region_addr(r));
	assert_int_equal(pager_region_snapshot(r, x, NULL), 0);

	/* B: a cold start that touches LO_TOUCH scattered pages, then a
	 * snapshot of it: the order goes into the cluster with it. */
	assert_int_equal(pager_region_restore(pb, x, &ro, &rr), 0);
	got = pager_region_addr(rr);
	for (size_t k = 0; k < LO_TOUCH; k++) {
		uint64_t pg = lo_touch(k);

		assert_int_equal(read_page((const volatile uint64_t *)(got + pg * ps), pg), 0);
	}
	assert_int_equal(pager_region_snapshot(rr, y, NULL), 0);
	assert_int_equal(sh("rados -c %s -p rbd stat pagerd_order.%s >/dev/null", conf,
			    strchr(y + 4, '/') + 1), 0);

	/* A, another pagerd: those pages, and only they, come in first. */
	assert_int_equal(lo_restore_all(pa, y), LO_TOUCH);

	/* A snapshot of a region that learned nothing, same data (the same
	 * table): the old order must not steer its restores. */
	assert_int_equal(pager_region_snapshot(r, y, NULL), 0);
	assert_int_equal(lo_restore_all(pb, y), 0);

	pager_close(pb);
	pager_close(pa);
	assert_int_equal(test_pagerd_stop(&b), 0);
	assert_int_equal(test_pagerd_stop(&a), 0);
	sh("for i in %s %s; do rbd -c %s rm rbd/$i >/dev/null 2>&1; rados -c %s -p rbd rm "
	   "pagerd_crc.$i; rados -c %s -p rbd rm pagerd_order.$i; done 2>/dev/null",
	   strchr(x + 4, '/') + 1, strchr(y + 4, '/') + 1, conf, conf, conf);
}

/* ---- a full cluster -------------------------------------------------------- */

/* Waits (bounded) until `ceph osd dump` does (full) or does not show the
 * rbd pool full. */
static void wait_pool_full(bool full)
{
	for (int i = 0; i < 600; i++) {
		/* "full" itself, not "nearfull" or "backfillfull". */
		int rc = sh("timeout 30 ceph -c %s osd dump 2>/dev/null | grep -qE \"^pool .*'rbd'"
			    ".*flags ([a-z_]+,)*full([, ]|$)\"", conf);

		if ((rc == 0) == full)
			return;
		usleep(100000);
	}
	fail_msg("the pool did not become %s", full ? "full" : "writable");
}

/* `ceph -c CONF osd ARGS`, tried again a few times: the CLI sometimes
 * fails to get the monitor's command descriptions (EPERM) right after
 * another client's. */
static int ceph_osd(const char *args)
{
	for (int i = 0; i < 10; i++) {
		if (sh("timeout 30 ceph -c %s osd %s >/dev/null 2>&1", conf, args) == 0)
			return 0;
		usleep(200000);
	}
	return -1;
}

static void full_cluster(void **state)
{
	const char *args[] = { "--ceph-conf", conf, "--ceph-timeout", "2000", NULL };
	char log[96], image[64], buf[1 << 16];
	struct test_pagerd a;
	struct pager *pa;
	struct pager_region *r;
	int fd, saved;
	ssize_t n;

	(void)state;
	/* Some data in the OSD, then ratios below what it holds. */
	assert_int_equal(sh("timeout 30 rados -c %s -p rbd put fill-%d /etc/services", conf,
			    (int)getpid()), 0);
	assert_int_equal(ceph_osd("set-nearfull-ratio 0.00001"), 0);
	assert_int_equal(ceph_osd("set-backfillfull-ratio 0.00002"), 0);
	assert_int_equal(ceph_osd("set-full-ratio 0.00003"), 0);
	wait_pool_full(true);

	snprintf(log, sizeof(log), "%s/full.log", cluster);
	fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	saved = dup(2);
	dup2(fd, 2);
	assert_int_equal(test_pagerd_start(&a, args), 0);
	dup2(saved, 2);
	close(saved);
	close(fd);
	pa = open_sock(a.sock);
	assert_non_null(pa);
	assert_int_equal(pager_region_create(pa, 64 * ps, NULL, &r), 0);
	memset(pager_region_addr(r), 0x5a, 64 * ps);
	snprintf(image, sizeof(image), "rbd:rbd/full-%d", (int)getpid());
	assert_int_equal(pager_region_snapshot(r, image, NULL), -ETIMEDOUT);
	pager_close(pa);
	assert_int_equal(test_pagerd_stop(&a), 0);

	fd = open(log, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	printf("%s", buf);
	assert_non_null(strstr(buf, "the cluster is full"));

	assert_int_equal(ceph_osd("set-full-ratio 0.95"), 0);
	assert_int_equal(ceph_osd("set-backfillfull-ratio 0.90"), 0);
	assert_int_equal(ceph_osd("set-nearfull-ratio 0.85"), 0);
	wait_pool_full(false);
	sh("rbd -c %s rm %s >/dev/null 2>&1; rados -c %s -p rbd rm fill-%d", conf, image + 4,
	   conf, (int)getpid());
}

/* What a child as uid 65534 gets: exit code = which step failed (0 all
 * as expected). */
static int nobody_run(const char *sock, const char *denied, const char *granted)
{
	struct pager_region *r, *rr;
	struct pager *p;
	uint64_t *m;

	if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
		return 10;
	p = open_sock(sock);
	if (!p || pager_region_create(p, 64 * ps, NULL, &r) < 0)
		return 11;
	m = pager_region_addr(r);
	for (uint64_t i = 0; i < 64 * ps / 8; i++)
		m[i] = i * 3 + 1;
	if (pager_region_snapshot(r, denied, NULL) != -EACCES)
		return 12;
	if (pager_region_restore(p, denied, NULL, &rr) != -EACCES)
		return 13;
	if (pager_region_snapshot(r, granted, NULL) != 0)
		return 14;
	if (pager_region_restore(p, granted, NULL, &rr) != 0)
		return 15;
	m = pager_region_addr(rr);
	for (uint64_t i = 0; i < 64 * ps / 8; i++)
		if (m[i] != i * 3 + 1)
			return 16;
	pager_close(p);
	return 0;
}

static void access_granted_only(void **state)
{
	const char *args[] = { "--ceph-conf", conf, "--rbd-allow", "user:nobody rbd/granted",
			       NULL };
	char denied[96], granted[96];
	struct test_pagerd d;
	int ws;
	pid_t kid;

	(void)state;
	if (geteuid() != 0)
		skip(); /* needs another user */
	assert_int_equal(sh("rbd -c %s namespace create rbd/granted 2>/dev/null; "
			    "rbd -c %s namespace create rbd/other 2>/dev/null; "
			    "rbd -c %s namespace ls rbd | grep -q granted", conf, conf, conf), 0);
	/* Another user's namespace, and the pool's default one. */
	snprintf(denied, sizeof(denied), "rbd:rbd/other/acl-%d", (int)getpid());
	snprintf(granted, sizeof(granted), "rbd:rbd/granted/acl-%d", (int)getpid());
	assert_int_equal(test_pagerd_start(&d, args), 0);
	assert_int_equal(chmod(d.dir, 0711), 0);
	assert_int_equal(chmod(d.sock, 0666), 0);
	fflush(NULL);
	kid = fork();
	assert_true(kid >= 0);
	if (kid == 0)
		_exit(nobody_run(d.sock, denied, granted));
	assert_int_equal(waitpid(kid, &ws, 0), kid);
	assert_true(WIFEXITED(ws));
	assert_int_equal(WEXITSTATUS(ws), 0);
	/* The refused name never reached the cluster. */
	assert_int_not_equal(sh("rbd -c %s ls rbd/other | grep -q acl-%d", conf, (int)getpid()), 0);
	assert_int_equal(sh("rbd -c %s ls rbd/granted | grep -q acl-%d", conf, (int)getpid()), 0);
	/* The default namespace is not granted either. */
	fflush(NULL);
	kid = fork();
	assert_true(kid >= 0);
	if (kid == 0)
		_exit(nobody_run(d.sock, "rbd:rbd/acl-default", granted));
	assert_int_equal(waitpid(kid, &ws, 0), kid);
	assert_true(WIFEXITED(ws));
	assert_int_equal(WEXITSTATUS(ws), 0);
	assert_true(test_pagerd_alive(&d));
	assert_int_equal(test_pagerd_stop(&d), 0);
}

/* pagerctl (a control client, root here) snapshots any client's region
 * into the cluster; pagerd writes and commits the image; a bad name is
 * refused with pagerctl's exit code 1. */
static void pagerctl_snapshot(void **state)
{
	const char *args[] = { "--ceph-conf", conf, NULL };
	const char *ctl = getenv("PAGERCTL") ? getenv("PAGERCTL") : "build/pagerctl";
	struct pager_region *r, *rr;
	struct test_pagerd d;
	struct pager *p;
	char image[64];
	uint64_t *m;

	(void)state;
	snprintf(image, sizeof(image), "rbd:rbd/ctl-%d", (int)getpid());
	assert_int_equal(test_pagerd_start(&d, args), 0);
	p = open_sock(d.sock);
	assert_non_null(p);
	assert_int_equal(pager_region_create(p, 256 * ps, NULL, &r), 0);
	m = pager_region_addr(r);
	for (uint64_t i = 0; i < 128 * ps / 8; i++)
		m[i] = i ^ 0xabcdef;
	assert_int_equal(sh("%s --socket %s snapshot %" PRId64 " %s", ctl, d.sock,
			    pager_region_id(r), image), 0);
	assert_int_equal(sh("%s --socket %s snapshot %" PRId64 " rbd:rbd/bad@snap 2>/dev/null",
			    ctl, d.sock, pager_region_id(r)), 1);
	assert_int_equal(pager_region_restore(p, image, NULL, &rr), 0);
	m = pager_region_addr(rr);
	for (uint64_t i = 0; i < 256 * ps / 8; i++)
		assert_int_equal(m[i], i < 128 * ps / 8 ? (i ^ 0xabcdef) : 0);
	pager_close(p);
	assert_int_equal(test_pagerd_stop(&d), 0);
}

static char long_name[128]; /* an image name of 97 characters */

static void bad_names(void **state)
{
	static const char *const bad[] = {
		"rbd:", "rbd:rbd", "rbd:rbd/", "rbd:/img", "rbd:rbd//img", "rbd:rbd/img@snap",
		"rbd:rbd/a/b/c", "rbd:.rbd/img", "rbd:rbd/.img", "rbd:rbd/im g", "rbd:rbd/im\\g",
		"rbd:rbd/../img", "rbd:rbd/img\n", long_name,
	};
	const char *args[] = { "--ceph-conf", conf, NULL };
	struct test_pagerd d;
	struct pager_region *r, *rr;
	struct pager *p;

	(void)state;
	snprintf(long_name, sizeof(long_name), "rbd:rbd/%097d", 7);
	assert_int_equal(strlen(long_name), 8 + 97);
	assert_int_equal(test_pagerd_start(&d, args), 0);
	p = open_sock(d.sock);
	assert_non_null(p);
	assert_int_equal(pager_region_create(p, 16 * ps, NULL, &r), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(pager_region_snapshot(r, bad[i], NULL), -EINVAL);
		assert_int_equal(pager_region_restore(p, bad[i], NULL, &rr), -EINVAL);
	}
	/* A well-formed name of nothing: no such image. */
	assert_int_equal(pager_region_restore(p, "rbd:rbd/no-such-image", NULL, &rr), -ENOENT);
	pager_close(p);
	assert_int_equal(test_pagerd_stop(&d), 0);
}

static void locked_image(void **state)
{
	const char *args[] = { "--ceph-conf", conf, NULL };
	char image[64];
	struct test_pagerd d;
	struct pager_region *r;
	struct pager *p;
	rados_t cl;
	rados_ioctx_t io;
	rbd_image_t im;
	int order = 0;

	(void)state;
	snprintf(image, sizeof(image), "lock-%d", (int)getpid());
	/* Another writer: this process, holding the image's lock. */
	assert_int_equal(rados_create(&cl, "admin"), 0);
	assert_int_equal(rados_conf_read_file(cl, conf), 0);
	assert_int_equal(rados_connect(cl), 0);
	assert_int_equal(rados_ioctx_create(cl, "rbd", &io), 0);
	assert_int_equal(rbd_create2(io, image, 64 * ps, RBD_FEATURE_LAYERING |
				     RBD_FEATURE_EXCLUSIVE_LOCK, &order), 0);
	assert_int_equal(rbd_open(io, image, &im, NULL), 0);
	assert_int_equal(rbd_lock_acquire(im, RBD_LOCK_MODE_EXCLUSIVE), 0);

	assert_int_equal(test_pagerd_start(&d, args), 0);
	p = open_sock(d.sock);
	assert_non_null(p);
	assert_int_equal(pager_region_create(p, 64 * ps, NULL, &r), 0);
	memset(pager_region_addr(r), 0x5a, 64 * ps);
	{
		char name[96];

		snprintf(name, sizeof(name), "rbd:rbd/%s", image);
		assert_int_equal(pager_region_snapshot(r, name, NULL), -EBUSY);
		assert_int_equal(rbd_lock_release(im), 0);
		assert_int_equal(rbd_close(im), 0);
		assert_int_equal(pager_region_snapshot(r, name, NULL), 0);
	}
	pager_close(p);
	assert_int_equal(test_pagerd_stop(&d), 0);
	rbd_remove(io, image);
	rados_ioctx_destroy(io);
	rados_shutdown(cl);
}

/* Restores from the cluster, with the OSD killed after the first pages:
 * the rest SIGBUS, never wrong bytes.  Exit 0 as expected, 1 wrong
 * bytes, 2 no SIGBUS, 3 setup. */
static int restore_kill_run(const char *sock, const char *image, int ready, int go)
{
	struct pager_region_opts ro = { .sz = sizeof(ro), .flags = PAGER_REGION_NO_PREFETCH };
	struct sigaction sa = { .sa_handler = on_bus };
	uint64_t wrong = 0, bus = 0, good = 0;
	struct pager_region *r;
	struct pager *p = open_sock(sock);
	uint8_t *b;
	char c = 0;

	if (!p || pager_region_restore(p, image, &ro, &r) < 0)
		return 3;
	b = pager_region_addr(r);
	/* Page 0 before the crash. */
	if (read_page((const volatile uint64_t *)b, 0) != 0)
		return 1;
	if (write(ready, &c, 1) != 1 || read(go, &c, 1) != 1)
		return 3;
	sigaction(SIGBUS, &sa, NULL);
	for (uint64_t k = 1; k < 8; k++) {
		uint64_t pg = k * 500;

		switch (read_page((const volatile uint64_t *)(b + pg * ps), pg)) {
		case 0: good++; break;
		case 1: wrong++; break;
		default: bus++; break;
		}
	}
	printf("restore client: %" PRIu64 " pages good, %" PRIu64 " SIGBUS, %" PRIu64 " wrong\n",
	       good, bus, wrong);
	fflush(stdout);
	return wrong ? 1 : bus ? 0 : 2;
}

static int start_cluster(void);
static void stop_cluster(void);

static int restart_cluster(void)
{
	stop_cluster();
	return start_cluster();
}

static void osd_killed_mid_restore(void **state)
{
	const char *args[] = { "--ceph-conf", conf, "--ceph-timeout", "1000", NULL };
	struct test_pagerd a, b;
	struct proto_reply st;
	struct pager_region *r;
	struct pager *p;
	char image[64];
	int ready[2], go[2], ws;
	pid_t kid;
	char c;

	(void)state;
	snprintf(image, sizeof(image), "rbd:rbd/kr-%d", (int)getpid());
	assert_int_equal(test_pagerd_start(&a, args), 0);
	assert_int_equal(test_pagerd_start(&b, args), 0);
	p = open_sock(a.sock);
	assert_non_null(p);
	assert_int_equal(pager_region_create(p, 4096 * ps, NULL, &r), 0);
	{
		uint8_t *m = pager_region_addr(r);

		for (uint64_t pg = 0; pg < 4096; pg++)
			for (size_t i = 0; i < ps / 8; i++)
				((uint64_t *)(m + pg * ps))[i] = word(pg, i);
	}
	assert_int_equal(pager_region_snapshot(r, image, NULL), 0);
	pager_close(p);

	assert_int_equal(pipe(ready), 0);
	assert_int_equal(pipe(go), 0);
	fflush(NULL);
	kid = fork();
	assert_true(kid >= 0);
	if (kid == 0) {
		close(ready[0]);
		close(go[1]);
		_exit(restore_kill_run(b.sock, image, ready[1], go[0]));
	}
	close(ready[1]);
	close(go[0]);
	assert_int_equal(read(ready[0], &c, 1), 1);
	assert_int_equal(sh("tests/ceph_cluster.sh kill-osd %s", cluster), 0);
	assert_int_equal(write(go[1], &c, 1), 1);
	/* B answers meanwhile. */
	assert_int_equal(test_status(b.sock, &st), 0);
	assert_int_equal(waitpid(kid, &ws, 0), kid);
	assert_true(WIFEXITED(ws));
	assert_int_equal(WEXITSTATUS(ws), 0);
	/* A new restore while the cluster is down fails (in its timeout),
	 * and pagerd goes on. */
	p = open_sock(b.sock);
	assert_non_null(p);
	{
		struct pager_region *rr;
		int e = pager_region_restore(p, image, NULL, &rr);

		printf("restore with the OSD down: %s\n", strerror(-e));
		assert_true(e < 0);
	}
	pager_close(p);
	assert_true(test_pagerd_alive(&b));
	assert_int_equal(test_status(b.sock, &st), 0);
	assert_int_equal(test_pagerd_stop(&b), 0);
	assert_int_equal(test_pagerd_stop(&a), 0);
	close(ready[0]);
	close(go[1]);
}

/* A memstore OSD comes back empty: a new cluster for the next test,
 * whatever the last one did. */
static int restart_teardown(void **state)
{
	(void)state;
	return restart_cluster();
}

static void stop_cluster(void)
{
	if (cluster[0]) {
		sh("tests/ceph_cluster.sh stop %s; rm -rf %s", cluster, cluster);
		cluster[0] = 0;
	}
}

/* Brings the cluster up; returns 0, or TEST_SKIP having said why. */
static int start_cluster(void)
{
	int rc;

	if (sh("tests/ceph_cluster.sh check") != 0) {
		const char *f = getenv("DEPS_FLAGS");

		if (!f || !strstr(f, "--install")) {
			printf("skipped: ceph-mon and ceph-osd are not installed (Debian: "
			       "ceph-mon ceph-osd; make check installs them as root)\n");
			return TEST_SKIP;
		}
		if (sh("scripts/deps.sh --install --only cmd:ceph-mon:ceph-mon "
		       "cmd:ceph-osd:ceph-osd cmd:rados:ceph-common cmd:uuidgen:uuid-runtime") != 0) {
			printf("skipped: ceph-mon and ceph-osd could not be installed\n");
			return TEST_SKIP;
		}
	}
	snprintf(cluster, sizeof(cluster), "/tmp/pagerd-ceph.XXXXXX");
	if (!mkdtemp(cluster)) {
		cluster[0] = 0;
		printf("skipped: mkdtemp: %s\n", strerror(errno));
		return TEST_SKIP;
	}
	snprintf(conf, sizeof(conf), "%s/ceph.conf", cluster);
	static bool registered;

	if (!registered)
		atexit(stop_cluster);
	registered = true;
	rc = sh("tests/ceph_cluster.sh start %s rbd >/dev/null 2>%s/start.err", cluster, cluster);
	if (rc != 0) {
		sh("tail -n 20 %s/*.log; cat %s/start.err", cluster, cluster);
		printf("skipped: the test cluster did not come up (ceph_cluster.sh exit %d)\n", rc);
		return TEST_SKIP;
	}
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(snapshot_two_pagerds),
		cmocka_unit_test(learned_order),
		cmocka_unit_test(access_granted_only),
		cmocka_unit_test(bad_names),
		cmocka_unit_test(pagerctl_snapshot),
		cmocka_unit_test(locked_image),
		/* Before the OSD kills: the cluster must be up. */
		cmocka_unit_test(full_cluster),
		cmocka_unit_test_teardown(osd_killed_mid_restore, restart_teardown),
		cmocka_unit_test(osd_killed_mid_run),
	};
	int rc;

	ps = (size_t)sysconf(_SC_PAGESIZE);
	rc = start_cluster();
	if (rc)
		return rc;
	rc = test_run_group(tests, 600);
	stop_cluster();
	return rc;
}
