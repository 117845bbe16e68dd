/* SPDX-License-Identifier: MIT */
/*
 * Integration tests for copy-on-write snapshots and lazy restore, against
 * a real pagerd with a real swap file and real writer threads.
 *
 *   consistent_resident    writers keep writing generation-stamped pages
 *                          through the snapshot; the image is one cut
 *   consistent_swapped     the same with most of the region in swap
 *   two_regions_at_once    two asynchronous snapshots in flight together
 *   client_dies_midway     the snapshotting process is killed: its image
 *                          never validates
 *   client_dies_at_start   the process is killed while pagerd starts its
 *                          snapshot (during or just after the
 *                          write-protection pass): pagerd serves on,
 *                          holding no more fds
 *   requester_leaves       a control connection asks for a snapshot and
 *                          closes before the answer (which comes only at
 *                          the instant): pagerd serves on, the region's
 *                          data is intact, the next snapshot works
 *   restore_lazy           snapshot, then restore in another process:
 *                          nothing is read until touched, every byte equal
 *   restore_prefetch       the background prefetch reads the whole image
 *   bad_images             truncated, wrong size, garbage or missing
 *                          sidecar: -EINVAL, and the region is not created
 *   discard_after_instant  a page discarded (then written) after the
 *                          instant is in the image as it was
 *   zero_page_evicted      a zero page resident at the instant, evicted
 *                          (punched), then written: a hole in the image
 *   no_swap_unprotect      no swap: eviction un-protects its victims
 *                          again; writes to every page left writable never
 *                          reach the image
 *   client_removes_page    MADV_REMOVE by the client, then a write: the
 *                          image holds the page or a hole, never the write
 *   restored_discard       a restored region, pages still in its image
 *                          discarded and written: the new image holds them
 *   lost_while_copying     a page lost (swap read error) after the instant,
 *                          before the copier came to it: the snapshot
 *                          ends, with -EIO, and leaves no fd behind
 *   lost_in_first_step     a page lost while the write-protection walk
 *                          runs: the start call fails with -EIO (never a
 *                          hole in the image where data was)
 *   image_rewritten        an image rewritten in place after its snapshot
 *                          (a data page changed, a hole given data, a data
 *                          page punched): exactly those pages SIGBUS on
 *                          restore, lazily and prefetched; every other byte
 *                          is intact (IMAGE.crc)
 *   stalled_image          the image on a FUSE file that stops answering:
 *                          the snapshot fails with -ETIMEDOUT, the restore
 *                          poisons what it cannot read (SIGBUS), and all
 *                          along another client faults and completes and
 *                          pagerd answers its status (root, FUSE)
 *   writers_throttled      writers outrun the image's disk (a FUSE file
 *                          whose writes wait) by far more than the
 *                          capture budget: their faults wait (counted),
 *                          another client is served meanwhile, and the
 *                          snapshot completes as one cut, never -ENOBUFS
 *                          (root, FUSE)
 *   throttled_released     writers parked for the capture budget are
 *                          let go when their client dies (pagerd serves
 *                          on) and when the snapshot fails (the image's
 *                          disk times out): they write on (root, FUSE)
 *   cut_stress             randomized: writers, discards, limit swings,
 *                          swap / none / full, restored regions, snapshots
 *                          back to back; each image exactly one cut
 *                          (SNAP_STRESS_RUNS, SNAP_STRESS_SEED; make soak)
 *   cut_oracle_gone        cut_stress's oracle alone (no pagerd): a discard
 *                          whose log entry later writes overwrote reads as
 *                          zeros, whole or under a torn write, in a cut
 *
 * The cut: just before pager_region_snapshot_start() we note every page's
 * generation (lo), just after it returns again (hi); the instant lies
 * between, so each image page must hold one generation in [lo, hi] — or,
 * for the at most one page per writer that was being written at that
 * instant, a prefix of generation g+1 over a suffix of g (the writer's
 * stores in order).  Anything else (a newer generation, a mix out of
 * order, a missing page) means the copy was not of one instant.
 */
#include <setjmp.h> /* cmocka.h needs these four first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pager.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "stallfs.c"

#define MiB (1ULL << 20)
#define WRITERS 3

static size_t ps;
static char dir[48];

struct ctx {
	struct test_pagerd d;
	char swap[128];
	bool running;
};

/* pagerd with a swap file of swap_size bytes, or none (NULL); with
 * hooks, PROTO_TEST_INJECT works (injected swap errors). */
static void start_swap_hooks(struct ctx *c, const char *swap_size, bool hooks)
{
	const char *args[8];
	int n = 0;

	if (hooks)
		args[n++] = "--test-hooks";

	snprintf(c->swap, sizeof(c->swap), "%s/swap", dir);
	unlink(c->swap);
	if (swap_size) {
		args[n++] = "--swap";
		args[n++] = c->swap;
		args[n++] = "--swap-size";
		args[n++] = swap_size;
	}
	args[n] = NULL;
	assert_int_equal(test_pagerd_start(&c->d, args), 0);
	c->running = true;
}

static void start_swap(struct ctx *c, const char *swap_size)
{
	start_swap_hooks(c, swap_size, false);
}

static void start(struct ctx *c)
{
	start_swap(c, "512M");
}

static void stop(struct ctx *c)
{
	if (c->running)
		assert_int_equal(test_pagerd_stop(&c->d), 0);
	c->running = false;
	unlink(c->swap);
}

static uint64_t word(uint64_t page, uint64_t gen, size_t i)
{
	return (page << 32) ^ (gen << 12) ^ i ^ 0x5bd1e995u;
}

/* Which generation in [from, to] a word of `page` holds, or UINT64_MAX. */
static uint64_t gen_of(uint64_t page, size_t i, uint64_t w, uint64_t from,
		       uint64_t to)
{
	for (uint64_t g = from; g <= to; g++)
		if (word(page, g, i) == w)
			return g;
	return UINT64_MAX;
}

/* ---- writers ------------------------------------------------------------ */

struct writers {
	uint8_t *base;
	uint64_t npages;
	uint64_t *gen;          /* per page: last generation completely written */
	volatile bool stop;
	pthread_t t[WRITERS];
	unsigned id[WRITERS];
	uint64_t writes;
};

struct warg {
	struct writers *w;
	unsigned id;
};

static struct warg wargs[WRITERS];

static void *writer_main(void *arg)
{
	struct warg *a = arg;
	struct writers *w = a->w;
	unsigned seed = 17 + a->id;

	while (!w->stop) {
		/* Each writer owns the pages p % WRITERS == id. */
		uint64_t p = ((uint64_t)rand_r(&seed) % (w->npages / WRITERS)) * WRITERS + a->id;
		uint64_t g = __atomic_load_n(&w->gen[p], __ATOMIC_RELAXED) + 1;
		uint64_t *pg = (uint64_t *)(w->base + p * ps);

		for (size_t i = 0; i < ps / 8; i++)
			pg[i] = word(p, g, i);
		__atomic_store_n(&w->gen[p], g, __ATOMIC_RELEASE);
		__atomic_fetch_add(&w->writes, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

/* Fills every page (generation 1), then starts the writers. */
static void writers_start(struct writers *w, uint8_t *base, uint64_t npages)
{
	w->base = base;
	w->npages = npages;
	w->gen = calloc(npages, sizeof(*w->gen));
	assert_non_null(w->gen);
	for (uint64_t p = 0; p < npages; p++) {
		for (size_t i = 0; i < ps / 8; i++)
			((uint64_t *)(base + p * ps))[i] = word(p, 1, i);
		w->gen[p] = 1;
	}
	w->stop = false;
	for (unsigned i = 0; i < WRITERS; i++) {
		wargs[i] = (struct warg){ w, i };
		assert_int_equal(pthread_create(&w->t[i], NULL, writer_main, &wargs[i]), 0);
	}
}

static void writers_stop(struct writers *w)
{
	w->stop = true;
	for (unsigned i = 0; i < WRITERS; i++)
		pthread_join(w->t[i], NULL);
}

/* Checks the image against [lo, hi]; returns the pages holding a write in
 * flight at the instant (torn, or whole but not yet published), fails the
 * test on anything inconsistent.  Callers allow one per writer. */
static unsigned check_cut(const char *path, uint64_t npages, const uint64_t *lo,
			  const uint64_t *hi)
{
	int fd = open(path, O_RDONLY);
	uint64_t *pg = malloc(ps);
	unsigned torn = 0;

	assert_true(fd >= 0);
	assert_non_null(pg);
	for (uint64_t p = 0; p < npages; p++) {
		assert_int_equal(pread(fd, pg, ps, (off_t)(p * ps)), (ssize_t)ps);
		uint64_t from = lo[p] ? lo[p] - 1 : 0, to = hi[p] + 1;
		uint64_t g0 = gen_of(p, 0, pg[0], from, to), gcur = g0;
		size_t split = 0;

		if (g0 == UINT64_MAX)
			fail_msg("page %llu: word 0 (%#llx) is no generation in [%llu, %llu]",
				 (unsigned long long)p, (unsigned long long)pg[0],
				 (unsigned long long)from, (unsigned long long)to);
		for (size_t i = 1; i < ps / 8; i++) {
			uint64_t g = gen_of(p, i, pg[i], from, gcur);

			if (g == gcur)
				continue;
			/* One step down, once: the writer had got this far. */
			if (g == UINT64_MAX || g + 1 != gcur || split)
				fail_msg("page %llu: word %zu out of order (%llu after %llu)",
					 (unsigned long long)p, i, (unsigned long long)g,
					 (unsigned long long)gcur);
			split = i;
			gcur = g;
		}
		/* Whole: one generation of the window.  Torn: g+1 over g, g+1
		 * being the write in flight at the instant.  That write may
		 * also be whole in memory yet unpublished (the writer stores
		 * gen[p] after its last word, and may be descheduled between
		 * the two past the hi[] reads): hi+1 whole counts as in
		 * flight too, and a writer has one write in flight at most. */
		if (gcur < lo[p] || g0 > hi[p] + 1)
			fail_msg("page %llu: generation %llu..%llu outside [%llu, %llu]",
				 (unsigned long long)p, (unsigned long long)gcur,
				 (unsigned long long)g0, (unsigned long long)lo[p],
				 (unsigned long long)hi[p]);
		torn += split != 0 || g0 == hi[p] + 1;
	}
	close(fd);
	free(pg);
	return torn;
}

static void snapshot_under_writes(struct ctx *c, uint64_t limit)
{
	const uint64_t n = 64 * MiB / ps;
	struct pager_region_opts ro = { .sz = sizeof(ro), .memory_limit = limit };
	struct pager_snapshot_progress pr = { .sz = sizeof(pr) };
	struct pager_region *r;
	struct writers w = { 0 };
	uint64_t *lo = malloc(n * 8), *hi = malloc(n * 8);
	char path[128];
	int e;

	start(c);
	struct pager *p = test_connect(c->d.sock);
	assert_int_equal(pager_region_create(p, n * ps, &ro, &r), 0);
	writers_start(&w, pager_region_addr(r), n);
	/* Let them write a while (and, with a limit, evict). */
	while (__atomic_load_n(&w.writes, __ATOMIC_RELAXED) < n / 2)
		sched_yield();
	snprintf(path, sizeof(path), "%s/cut.img", dir);
	for (uint64_t i = 0; i < n; i++)
		lo[i] = __atomic_load_n(&w.gen[i], __ATOMIC_ACQUIRE);
	assert_int_equal(pager_region_snapshot_start(r, path, NULL), 0);
	for (uint64_t i = 0; i < n; i++)
		hi[i] = __atomic_load_n(&w.gen[i], __ATOMIC_ACQUIRE);
	/* Writers go on while the copy runs. */
	while ((e = pager_region_snapshot_poll(r, &pr)) == 0)
		usleep(1000);
	assert_int_equal(e, 1);
	assert_int_equal(pr.status, 0);
	assert_int_equal(pr.pages_done, pr.pages_total);
	assert_int_equal(pr.pages_total, n);
	writers_stop(&w);
	struct pager_region_stats st = { .sz = sizeof(st) };
	assert_int_equal(pager_region_stats(r, &st), 0);
	unsigned torn = check_cut(path, n, lo, hi);
	print_message("%llu pages, pause %.3f ms, %llu writes, %u torn by an in-flight write, "
		      "%llu swapped at the end\n", (unsigned long long)n, pr.pause_ns / 1e6,
		      (unsigned long long)w.writes, torn, (unsigned long long)st.swapped);
	assert_true(torn <= WRITERS);
	if (limit)
		assert_true(st.swap_outs > 0);
	pager_close(p);
	char meta[300];
	snprintf(meta, sizeof(meta), "%s.meta", path);
	unlink(meta);
	unlink(path);
	free(w.gen);
	free(lo);
	free(hi);
	stop(c);
}

static void consistent_resident(void **state)
{
	snapshot_under_writes(*state, 0);
}

static void consistent_swapped(void **state)
{
	snapshot_under_writes(*state, 16 * MiB);
}

/* ---- two_regions_at_once ------------------------------------------------ */

static void fill_region(struct pager_region *r, uint64_t seed)
{
	uint64_t *m = pager_region_addr(r);
	size_t n = pager_region_len(r) / 8;

	for (size_t i = 0; i < n; i += 7) /* leave some pages holes */
		if ((i / (ps / 8)) % 3)
			m[i] = seed ^ i;
}

static void expect_image(const char *path, uint64_t seed, size_t len)
{
	int fd = open(path, O_RDONLY);
	uint64_t *buf = malloc(len);

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, buf, len, 0), (ssize_t)len);
	for (size_t i = 0; i < len / 8; i++)
		assert_int_equal(buf[i], (i % 7 == 0 && (i / (ps / 8)) % 3) ? (seed ^ i) : 0);
	free(buf);
	close(fd);
}

static void two_regions_at_once(void **state)
{
	struct ctx *c = *state;
	struct pager_region *r[2];
	struct pager_region_opts ro = { .sz = sizeof(ro), .memory_limit = 4 * MiB };
	char path[2][128];
	int done = 0;

	start(c);
	struct pager *p = test_connect(c->d.sock);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(pager_region_create(p, 24 * MiB, &ro, &r[i]), 0);
		fill_region(r[i], 0x1111ULL * (i + 1));
		snprintf(path[i], sizeof(path[i]), "%s/two%d.img", dir, i);
	}
	for (int i = 0; i < 2; i++)
		assert_int_equal(pager_region_snapshot_start(r[i], path[i], NULL), 0);
	/* One at a time per region. */
	assert_int_equal(pager_region_snapshot_start(r[0], path[0], NULL), -EBUSY);
	while (done != 3) {
		for (int i = 0; i < 2; i++) {
			struct pager_snapshot_progress pr = { .sz = sizeof(pr) };

			if (done & (1 << i))
				continue;
			int e = pager_region_snapshot_poll(r[i], &pr);
			assert_true(e >= 0);
			if (e == 1) {
				assert_int_equal(pr.status, 0);
				done |= 1 << i;
			}
		}
		usleep(500);
	}
	for (int i = 0; i < 2; i++) {
		char meta[300];

		expect_image(path[i], 0x1111ULL * (i + 1), 24 * MiB);
		snprintf(meta, sizeof(meta), "%s.meta", path[i]);
		assert_int_equal(access(meta, F_OK), 0);
		unlink(meta);
		unlink(path[i]);
	}
	pager_close(p);
	stop(c);
}

/* ---- client_dies_midway ------------------------------------------------- */

static void client_dies_midway(void **state)
{
	struct ctx *c = *state;
	char path[128], meta[200];
	int pfd[2], ws;
	char ch;

	start(c);
	snprintf(path, sizeof(path), "%s/dead.img", dir);
	snprintf(meta, sizeof(meta), "%s.meta", path);
	/* A stale sidecar from an earlier snapshot to the same path must go. */
	assert_int_equal(close(open(meta, O_CREAT | O_WRONLY, 0600)), 0);
	assert_int_equal(pipe(pfd), 0);
	pid_t kid = fork();
	assert_true(kid >= 0);
	if (kid == 0) {
		struct pager_region_opts ro = { .sz = sizeof(ro), .memory_limit = 8 * MiB };
		struct pager *kp = test_connect(c->d.sock);
		struct pager_region *kr;

		if (pager_region_create(kp, 96 * MiB, &ro, &kr) < 0)
			_exit(2);
		fill_region(kr, 7);
		if (pager_region_snapshot_start(kr, path, NULL) < 0)
			_exit(3);
		(void)!write(pfd[1], "x", 1);
		for (;;)
			pause(); /* killed here, mid-copy */
	}
	close(pfd[1]);
	assert_int_equal(read(pfd[0], &ch, 1), 1);
	close(pfd[0]);
	kill(kid, SIGKILL);
	assert_int_equal(waitpid(kid, &ws, 0), kid);
	assert_int_equal(test_wait_clients(c->d.sock, 0, 10000), 0);
	/* No sidecar: the image does not restore. */
	assert_int_equal(access(meta, F_OK), -1);
	struct pager *p = test_connect(c->d.sock);
	struct pager_region *r;
	assert_int_equal(pager_region_restore(p, path, NULL, &r), -EINVAL);
	pager_close(p);
	unlink(path);
	stop(c);
}

/* pagerd's open fds once it has read the end of every connection closed
 * before this call: two round trips on a connection we keep open (the
 * second one's request reaches a later turn of pagerd's loop than any
 * end of stream that came before the first). */
static int settled_fds(struct ctx *c, int keep)
{
	struct proto_msg m;
	struct proto_reply rep;

	for (int i = 0; i < 2; i++) {
		memset(&m, 0, sizeof(m));
		assert_int_equal(test_raw_call(keep, &m, PROTO_STATUS, 0, NULL, 0, &rep), 0);
	}
	return test_count_fds(c->d.pid);
}

/*
 * pagerd's fds once they no longer change: a snapshot cut short by a kill
 * after its instant still has image writes in flight, and its ring and
 * eventfd go with the last completion, which no request of ours waits for.
 * Polls (bounded) until the count is `want`, or, with want < 0, until it
 * stops falling; a leak never settles to the count wanted.
 */
static int fds_when_settled(struct ctx *c, int keep, int want)
{
	int n = settled_fds(c, keep), quiet = 0;

	for (int i = 0; i < 5000 && n != want && (want >= 0 || quiet < 100); i++) {
		int m;

		usleep(1000);
		m = settled_fds(c, keep);
		quiet = m < n ? 0 : quiet + 1;
		n = m;
	}
	return n;
}

/* Killed once pagerd has its snapshot request: during the write-protection
 * pass (pagerd's thread holds a dup of the uffd, the reply is deferred) or
 * just after the instant; each time pagerd serves on, nothing resident,
 * no fd left over, no sidecar. */
static void client_dies_at_start(void **state)
{
	struct ctx *c = *state;
	char path[128], meta[200];
	struct proto_reply st;
	int fds0 = 0, in_first_step = 0;

	start(c);
	snprintf(path, sizeof(path), "%s/kill.img", dir);
	snprintf(meta, sizeof(meta), "%s.meta", path);
	int keep = test_control_connect(c->d.sock);

	assert_true(keep >= 0);
	fds0 = settled_fds(c, keep); /* the I/O engine's ring is open from the start */
	for (int round = 0; round < 5; round++) {
		int pfd[2], ws;
		uint64_t id;
		struct proto_msg m;
		struct proto_reply rep;

		assert_int_equal(pipe(pfd), 0);
		pid_t kid = fork();

		assert_true(kid >= 0);
		if (kid == 0) {
			struct pager *kp = test_connect(c->d.sock);
			struct pager_region *kr;

			if (pager_region_create(kp, 128 * MiB, NULL, &kr) < 0)
				_exit(2);
			fill_region(kr, 5);
			uint64_t kid_region = pager_region_id(kr);

			(void)!write(pfd[1], &kid_region, sizeof(kid_region));
			pager_region_snapshot_start(kr, path, NULL);
			for (;;)
				pause();
		}
		close(pfd[1]);
		assert_int_equal(read(pfd[0], &id, sizeof(id)), (ssize_t)sizeof(id));
		close(pfd[0]);
		/* Kill as soon as pagerd has the snapshot: in its first step
		 * (the start call has not returned) or just after. */
		int ctl = test_control_connect(c->d.sock);

		assert_true(ctl >= 0);
		for (;;) {
			memset(&m, 0, sizeof(m));
			m.body.snapshot.region_id = id;
			assert_int_equal(test_raw_call(ctl, &m, PROTO_SNAPSHOT_STATUS, 0,
						       NULL, 0, &rep), 0);
			if (rep.snapshot.status != -ENOENT)
				break;
			sched_yield();
		}
		kill(kid, SIGKILL);
		close(ctl);
		if (!rep.snapshot.pages_total)
			in_first_step++;
		assert_int_equal(waitpid(kid, &ws, 0), kid);
		assert_int_equal(test_wait_clients(c->d.sock, 0, 10000), 0);
		assert_int_equal(test_status(c->d.sock, &st), 0);
		assert_int_equal(st.resident_pages, 0);
		assert_int_equal(access(meta, F_OK), -1);
		/* After the first round the swap store's ring is open; the
		 * image goes once its last writes are back (from an io_uring
		 * worker: not at once). */
		if (round == 0)
			fds0 = fds_when_settled(c, keep, -1);
		assert_int_equal(fds_when_settled(c, keep, fds0), fds0);
	}
	close(keep);
	print_message("%d of 5 kills landed in the first step\n", in_first_step);
	unlink(path);
	stop(c);
}

static void requester_leaves(void **state)
{
	struct ctx *c = *state;
	const size_t len = 16 * MiB;
	char path[128], path2[128];
	struct proto_msg m;
	struct proto_reply st;

	start(c);
	snprintf(path, sizeof(path), "%s/left.img", dir);
	snprintf(path2, sizeof(path2), "%s/after.img", dir);
	struct pager *p = test_connect(c->d.sock);
	struct pager_region *r;

	assert_int_equal(pager_region_create(p, len, NULL, &r), 0);
	fill_region(r, 11);
	for (int round = 0; round < 3; round++) {
		int s = test_control_connect(c->d.sock);
		int img = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

		assert_true(s >= 0);
		assert_true(img >= 0);
		memset(&m, 0, sizeof(m));
		m.body.snapshot.region_id = pager_region_id(r);
		assert_int_equal(proto_send(s, &m, proto_finish(&m, PROTO_SNAPSHOT_START, 1),
					    &img, 1), 0);
		close(img);
		close(s); /* gone before the instant */
		/* pagerd serves on: a status over a new connection. */
		assert_int_equal(test_status(c->d.sock, &st), 0);
		/* The abandoned snapshot runs to its end (asked as pagerctl
		 * would: its status shows no pages yet before the instant,
		 * then done); then ours works. */
		int ctl = test_control_connect(c->d.sock);
		struct proto_reply rep;

		assert_true(ctl >= 0);
		do {
			memset(&m, 0, sizeof(m));
			m.body.snapshot.region_id = pager_region_id(r);
			assert_int_equal(test_raw_call(ctl, &m, PROTO_SNAPSHOT_STATUS, 0,
						       NULL, 0, &rep), 0);
			assert_int_equal(rep.status, 0);
			if (!rep.snapshot.done)
				sched_yield();
		} while (!rep.snapshot.done);
		close(ctl);
		assert_int_equal(pager_region_snapshot(r, path2, NULL), 0);
		expect_image(path2, 11, len);
	}
	assert_int_equal(pager_region_destroy(r), 0);
	pager_close(p);
	assert_int_equal(test_wait_clients(c->d.sock, 0, 10000), 0);
	unlink(path);
	unlink(path2);
	strcat(path2, ".meta");
	unlink(path2);
	stop(c);
}

/* ---- restore ------------------------------------------------------------ */

static void take(struct ctx *c, const char *path, size_t len, uint64_t seed)
{
	struct pager *p = test_connect(c->d.sock);
	struct pager_region *r;

	assert_int_equal(pager_region_create(p, len, NULL, &r), 0);
	fill_region(r, seed);
	assert_int_equal(pager_region_snapshot(r, path, NULL), 0);
	pager_close(p);
}

/* In a child, so that the restoring process shares nothing with the
 * snapshotting one. */
static int restore_child(const char *sock, const char *path, size_t len,
			 uint64_t seed, bool prefetch)
{
	struct pager_region_opts ro = { .sz = sizeof(ro),
					.flags = prefetch ? 0 : PAGER_REGION_NO_PREFETCH };
	struct pager_region_stats st = { .sz = sizeof(st) };
	struct pager *p;
	struct pager_region *r;
	uint64_t *m, data_pages = 0;

	struct pager_opts o = { .sz = sizeof(o), .socket_path = sock };
	if (pager_open(&p, &o) < 0 || pager_region_restore(p, path, &ro, &r) < 0)
		return 2;
	if ((size_t)pager_region_len(r) != len || pager_region_stats(r, &st) < 0)
		return 3;
	for (uint64_t pg = 0; pg < len / ps; pg++)
		data_pages += pg % 3 != 0;
	fprintf(stderr, "restore: %llu data pages, image_reads %llu, image_pending %llu\n",
		(unsigned long long)data_pages, (unsigned long long)st.image_reads,
		(unsigned long long)st.image_pending);
	if (prefetch) {
		/* Wait (bounded) for the prefetch to read it all. */
		for (int i = 0; i < 5000 && st.image_pending; i++) {
			usleep(1000);
			pager_region_stats(r, &st);
		}
		if (st.image_pending || st.image_reads != data_pages)
			return 4;
	} else {
		/* Lazy: nothing read, every data page pending. */
		if (st.image_reads != 0 || st.image_pending != data_pages)
			return 5;
	}
	m = pager_region_addr(r);
	/* Touch the first half: about half the data comes in. */
	for (size_t i = 0; i < len / 16; i += 7)
		if (m[i] != (((i / (ps / 8)) % 3) ? (seed ^ i) : 0))
			return 6;
	pager_region_stats(r, &st);
	if (!prefetch && (st.image_reads < data_pages / 2 - 64 ||
			  st.image_reads > data_pages / 2 + 128))
		return 7;
	for (size_t i = 0; i < len / 8; i++)
		if (m[i] != ((i % 7 == 0 && (i / (ps / 8)) % 3) ? (seed ^ i) : 0))
			return 8;
	pager_close(p);
	return 0;
}

static void restore_case(struct ctx *c, bool prefetch)
{
	char path[128], meta[200];
	const size_t len = 32 * MiB;
	int ws;

	start(c);
	snprintf(path, sizeof(path), "%s/rt.img", dir);
	take(c, path, len, 0xabcdef);
	pid_t kid = fork();
	assert_true(kid >= 0);
	if (kid == 0)
		_exit(restore_child(c->d.sock, path, len, 0xabcdef, prefetch));
	assert_int_equal(waitpid(kid, &ws, 0), kid);
	assert_true(WIFEXITED(ws));
	assert_int_equal(WEXITSTATUS(ws), 0);
	snprintf(meta, sizeof(meta), "%s.meta", path);
	unlink(meta);
	unlink(path);
	stop(c);
}

static void restore_lazy(void **state)
{
	restore_case(*state, false);
}

static void restore_prefetch(void **state)
{
	restore_case(*state, true);
}

/* ---- bad_images --------------------------------------------------------- */

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void bad_images(void **state)
{
	struct ctx *c = *state;
	char path[128], meta[200], good[1024];
	struct pager_region *r;
	FILE *f;
	size_t n;

	start(c);
	snprintf(path, sizeof(path), "%s/bad.img", dir);
	snprintf(meta, sizeof(meta), "%s.meta", path);
	take(c, path, 4 * MiB, 3);
	f = fopen(meta, "r");
	assert_non_null(f);
	n = fread(good, 1, sizeof(good) - 1, f);
	good[n] = '\0';
	fclose(f);

	struct pager *p = test_connect(c->d.sock);
	/* The good one restores. */
	assert_int_equal(pager_region_restore(p, path, NULL, &r), 0);
	pager_region_destroy(r);
	/* Truncated image. */
	assert_int_equal(truncate(path, 2 * MiB), 0);
	assert_int_equal(pager_region_restore(p, path, NULL, &r), -EINVAL);
	assert_int_equal(truncate(path, 4 * MiB), 0);
	/* Wrong size in the sidecar. */
	char *bad = strdup(good), *sz = strstr(bad, "size ");
	assert_non_null(sz);
	sz[5] = '9';
	write_file(meta, bad);
	assert_int_equal(pager_region_restore(p, path, NULL, &r), -EINVAL);
	free(bad);
	/* Garbage, an unfinished one, an empty one. */
	write_file(meta, "format pagerd-image 1\n\x01\x02garbage\n");
	assert_int_equal(pager_region_restore(p, path, NULL, &r), -EINVAL);
	bad = strdup(good);
	char *yes = strstr(bad, "complete yes");
	assert_non_null(yes);
	memcpy(yes + 9, "no\n", 4);
	write_file(meta, bad);
	assert_int_equal(pager_region_restore(p, path, NULL, &r), -EINVAL);
	free(bad);
	write_file(meta, "");
	assert_int_equal(pager_region_restore(p, path, NULL, &r), -EINVAL);
	/* No sidecar, no image. */
	unlink(meta);
	assert_int_equal(pager_region_restore(p, path, NULL, &r), -EINVAL);
	unlink(path);
	assert_int_equal(pager_region_restore(p, path, NULL, &r), -ENOENT);
	/* Nothing was left behind by the refusals. */
	struct proto_reply st;
	assert_int_equal(test_status(c->d.sock, &st), 0);
	assert_int_equal(st.regions, 0);
	pager_close(p);
	stop(c);
}

/* ---- the rule: a page still to be copied keeps its instant content ------ */

/* Every word of every page non-zero and unique to (page, word). */
static uint64_t fill_word(uint64_t page, size_t i)
{
	return (page * 0x9e3779b97f4a7c15ULL) ^ ((uint64_t)i << 48) ^ 0xf111ULL;
}

#define MARKER 0x4d41524b45522121ULL /* "MARKER!!": written after the instant */

static void fill_pages(uint8_t *base, uint64_t first, uint64_t n)
{
	for (uint64_t p = first; p < first + n; p++)
		for (size_t i = 0; i < ps / 8; i++)
			((uint64_t *)(base + p * ps))[i] = fill_word(p, i);
}

static void wait_snapshot(struct pager_region *r)
{
	struct pager_snapshot_progress pr = { .sz = sizeof(pr) };
	int e;

	while ((e = pager_region_snapshot_poll(r, &pr)) == 0)
		usleep(1000);
	assert_int_equal(e, 1);
	assert_int_equal(pr.status, 0);
	assert_int_equal(pr.pages_done, pr.pages_total);
}

/* Whether page p of the image at fd holds fill_word(p, *) (1), all zeros
 * (0), or anything else (-1, with its first word in *ret_first). */
static int image_page_kind(int fd, uint64_t p, uint64_t *ret_first)
{
	uint64_t *pg = malloc(ps);
	bool fill = true, zero = true;

	assert_non_null(pg);
	assert_int_equal(pread(fd, pg, ps, (off_t)(p * ps)), (ssize_t)ps);
	for (size_t i = 0; i < ps / 8; i++) {
		fill &= pg[i] == fill_word(p, i);
		zero &= pg[i] == 0;
	}
	*ret_first = pg[0];
	free(pg);
	return fill ? 1 : zero ? 0 : -1;
}

/* Pages [0, n) of the image: how many hold something other than their
 * fill (zero pages allowed where zero_ok says so), the first one named. */
static uint64_t image_off_fill(const char *path, uint64_t n, uint64_t zero_ok)
{
	int fd = open(path, O_RDONLY);
	uint64_t bad = 0, w;

	assert_true(fd >= 0);
	for (uint64_t p = 0; p < n; p++) {
		int k = image_page_kind(fd, p, &w);

		if (k == 1 || (k == 0 && p == zero_ok))
			continue;
		if (!bad++)
			print_message("image page %llu: %s (first word %#llx)\n",
				      (unsigned long long)p, k ? "not its content at the instant" : "a hole",
				      (unsigned long long)w);
	}
	close(fd);
	return bad;
}

static void image_unlink(const char *path)
{
	char meta[300];

	snprintf(meta, sizeof(meta), "%s.meta", path);
	unlink(meta);
	unlink(path);
}

/*
 * A discard after the instant does not change the image: the last page of
 * a full GiB (the copier reaches it last) is discarded just after the
 * start call returns, then written; the image holds the page as it was.
 */
static void discard_after_instant(void **state)
{
	struct ctx *c = *state;
	const uint64_t n = 1024 * MiB / ps;
	struct pager_region *r;
	char path[128];

	start(c);
	struct pager *p = test_connect(c->d.sock);
	assert_int_equal(pager_region_create(p, n * ps, NULL, &r), 0);
	uint8_t *base = pager_region_addr(r);
	fill_pages(base, 0, n);
	snprintf(path, sizeof(path), "%s/discard.img", dir);
	assert_int_equal(pager_region_snapshot_start(r, path, NULL), 0);
	assert_int_equal(pager_region_discard(r, (n - 1) * ps, ps), 0);
	*(volatile uint64_t *)(base + (n - 1) * ps) = MARKER;
	wait_snapshot(r);
	assert_int_equal(image_off_fill(path, n, UINT64_MAX), 0);
	pager_close(p);
	image_unlink(path);
	stop(c);
}

static bool page_in_core(void *addr)
{
	unsigned char v = 0;

	assert_int_equal(mincore(addr, ps, &v), 0);
	return v & 1;
}

/*
 * A zero page resident at the instant is still to be copied; evicted as
 * zero (punched), its next touch is a MISSING fault, which must not fill
 * it writable before the snapshot has recorded it (a hole).  Most of the
 * region is in swap, so the copier reaches the last page late.
 */
static void zero_page_evicted(void **state)
{
	struct ctx *c = *state;
	const uint64_t n = 64 * MiB / ps;
	struct pager_region_opts ro = { .sz = sizeof(ro), .memory_limit = 16 * MiB };
	struct pager_region_stats st = { .sz = sizeof(st) };
	struct pager_region *r;
	char path[128];
	int tries;

	start(c);
	struct pager *p = test_connect(c->d.sock);
	assert_int_equal(pager_region_create(p, n * ps, &ro, &r), 0);
	uint8_t *base = pager_region_addr(r), *last = base + (n - 1) * ps;
	fill_pages(base, 0, n - 1);
	/* The last page only read: resident, all zero.  Once eviction has
	 * settled under the limit, it stays resident. */
	for (tries = 0; tries < 10000; tries++) {
		assert_int_equal(*(volatile uint64_t *)last, 0);
		assert_int_equal(pager_region_stats(r, &st), 0);
		if (page_in_core(last) && st.resident * ps <= 16 * MiB * 95 / 100)
			break;
		usleep(1000);
	}
	assert_true(tries < 10000);
	snprintf(path, sizeof(path), "%s/zero.img", dir);
	assert_int_equal(pager_region_snapshot_start(r, path, NULL), 0);
	assert_int_equal(pager_region_set_limit(r, ps), 0);
	for (tries = 0; tries < 20000 && page_in_core(last); tries++)
		usleep(500);
	assert_false(page_in_core(last)); /* evicted as zero (punched) */
	*(volatile uint64_t *)last = MARKER;
	wait_snapshot(r);
	assert_int_equal(image_off_fill(path, n, n - 1), 0);
	pager_close(p);
	image_unlink(path);
	stop(c);
}

/*
 * No swap: eviction write-protects its victims, finds it cannot write them
 * and un-protects them again.  Pages still to be copied must not come out
 * of it writable: every page mapped without write protection (pagemap bit
 * 57 clear) gets a marker while the snapshot runs, and none may land in
 * the image.
 */
static void no_swap_unprotect(void **state)
{
	struct ctx *c = *state;
	const uint64_t n = 1024 * MiB / ps;
	struct pager_region *r;
	char path[128];
	uint64_t *pm = malloc(n * 8), marked = 0, passes = 0;
	struct pager_snapshot_progress pr = { .sz = sizeof(pr) };
	int pmfd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC), e;

	assert_non_null(pm);
	assert_true(pmfd >= 0);
	start_swap(c, NULL);
	struct pager *p = test_connect(c->d.sock);
	assert_int_equal(pager_region_create(p, n * ps, NULL, &r), 0);
	uint8_t *base = pager_region_addr(r);
	fill_pages(base, 0, n);
	snprintf(path, sizeof(path), "%s/noswap.img", dir);
	assert_int_equal(pager_region_snapshot_start(r, path, NULL), 0);
	assert_int_equal(pager_region_set_limit(r, n * ps / 2), 0);
	while ((e = pager_region_snapshot_poll(r, &pr)) == 0) {
		ssize_t got = pread(pmfd, pm, n * 8, (off_t)((uintptr_t)base / ps * 8));

		assert_int_equal(got, (ssize_t)(n * 8));
		for (uint64_t i = 0; i < n; i++) {
			uint64_t *w = (uint64_t *)(base + i * ps);

			/* present, not uffd-write-protected, not marked yet */
			if ((pm[i] >> 63) && !((pm[i] >> 57) & 1) && *w != MARKER) {
				*(volatile uint64_t *)w = MARKER;
				marked++;
			}
		}
		passes++;
	}
	assert_int_equal(e, 1);
	assert_int_equal(pr.status, 0);
	print_message("%llu pages written while the snapshot ran (%llu passes)\n",
		      (unsigned long long)marked, (unsigned long long)passes);
	assert_int_equal(image_off_fill(path, n, UINT64_MAX), 0);
	pager_close(p);
	close(pmfd);
	free(pm);
	image_unlink(path);
	stop(c);
}

/*
 * The client punches a page itself (MADV_REMOVE: pagerd hears of it only
 * at the next fault) and writes it again.  pagerd cannot tell whether the
 * punch came before the instant, so the image may hold the page's content
 * or a hole, but never the write that followed.
 */
static void client_removes_page(void **state)
{
	struct ctx *c = *state;
	const uint64_t n = 256 * MiB / ps;
	struct pager_region *r;
	char path[128];

	start(c);
	struct pager *p = test_connect(c->d.sock);
	assert_int_equal(pager_region_create(p, n * ps, NULL, &r), 0);
	uint8_t *base = pager_region_addr(r), *last = base + (n - 1) * ps;
	fill_pages(base, 0, n);
	snprintf(path, sizeof(path), "%s/removed.img", dir);
	assert_int_equal(pager_region_snapshot_start(r, path, NULL), 0);
	assert_int_equal(madvise(last, ps, MADV_REMOVE), 0);
	*(volatile uint64_t *)last = MARKER;
	wait_snapshot(r);
	assert_int_equal(image_off_fill(path, n, n - 1), 0);
	pager_close(p);
	image_unlink(path);
	stop(c);
}

/*
 * A region restored from an image (its pages still in the image, PG_IMAGE)
 * snapshotted again under a limit: pages discarded and written after the
 * instant, before the copier came to them, are in the new image as they
 * were.
 */
static void restored_discard(void **state)
{
	struct ctx *c = *state;
	const uint64_t n = 64 * MiB / ps;
	struct pager_region_opts ro = { .sz = sizeof(ro), .memory_limit = 8 * MiB,
					.flags = PAGER_REGION_NO_PREFETCH };
	struct pager_region *r;
	char path[128], path2[128];

	start(c);
	struct pager *p = test_connect(c->d.sock);
	assert_int_equal(pager_region_create(p, n * ps, NULL, &r), 0);
	fill_pages(pager_region_addr(r), 0, n);
	snprintf(path, sizeof(path), "%s/first.img", dir);
	snprintf(path2, sizeof(path2), "%s/second.img", dir);
	assert_int_equal(pager_region_snapshot(r, path, NULL), 0);
	assert_int_equal(pager_region_destroy(r), 0);

	assert_int_equal(pager_region_restore(p, path, &ro, &r), 0);
	uint8_t *base = pager_region_addr(r);
	/* Some pages in, the rest still only in the image. */
	for (uint64_t i = 0; i < n / 4; i++)
		assert_int_equal(((volatile uint64_t *)(base + i * ps))[1], fill_word(i, 1));
	assert_int_equal(pager_region_snapshot_start(r, path2, NULL), 0);
	/* The last quarter: still in the image, and the copier's last. */
	assert_int_equal(pager_region_discard(r, n / 4 * 3 * ps, n / 4 * ps), 0);
	for (uint64_t i = n / 4 * 3; i < n; i += 7)
		*(volatile uint64_t *)(base + i * ps) = MARKER;
	wait_snapshot(r);
	assert_int_equal(image_off_fill(path2, n, UINT64_MAX), 0);
	assert_int_equal(pager_region_destroy(r), 0);
	pager_close(p);
	image_unlink(path);
	image_unlink(path2);
	stop(c);
}

/* ---- a page lost while a snapshot runs ---------------------------------- */

/* One jump buffer and handler for every test here that expects SIGBUS
 * (one thread at a time reads a page that may raise it). */
static sigjmp_buf bus_jmp;
static volatile sig_atomic_t bus_seen;

static void on_sigbus(int sig)
{
	(void)sig;
	bus_seen++;
	siglongjmp(bus_jmp, 1);
}

/* Reads the first word of a page; true if that raised SIGBUS (one thread
 * at a time: one jump buffer). */
static bool read_bus(const uint8_t *pg)
{
	struct sigaction sa = { .sa_handler = on_sigbus }, old;
	volatile bool bus = false;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, &old);
	if (sigsetjmp(bus_jmp, 1))
		bus = true;
	else
		(void)*(volatile const uint64_t *)pg;
	sigaction(SIGBUS, &old, NULL);
	return bus;
}

/* The page's next swap read fails (PROTO_TEST_INJECT, --test-hooks):
 * 0, or -ENODATA when the page is not in swap. */
static int inject_eio(struct ctx *c, struct pager_region *r, uint64_t page)
{
	struct proto_msg m = { 0 };
	int s = test_control_connect(c->d.sock), e;

	assert_true(s >= 0);
	m.body.test_inject.region_id = (uint64_t)pager_region_id(r);
	m.body.test_inject.page = page;
	m.body.test_inject.kind = PROTO_INJECT_EIO;
	e = test_raw_call(s, &m, PROTO_TEST_INJECT, 0, NULL, 0, NULL);
	close(s);
	return e;
}

/* Polls until the snapshot has ended, whatever its status.  One that
 * never ends fails the test (after a minute: the end is the event). */
static void wait_snapshot_end(struct pager_region *r, struct pager_snapshot_progress *pr)
{
	int e = 0;

	for (int i = 0; i < 60000 && (e = pager_region_snapshot_poll(r, pr)) == 0; i++)
		usleep(1000);
	if (e == 0)
		fail_msg("the snapshot never ended (%llu of %llu pages, status %d)",
			 (unsigned long long)pr->pages_done,
			 (unsigned long long)pr->pages_total, pr->status);
	assert_int_equal(e, 1);
}

/*
 * A page in swap whose slot then fails (an injected EIO) is read by the
 * client just after the instant: lost (SIGBUS) before the copier comes to
 * it.  The snapshot must end with -EIO (never a hole where the data was).
 * The copier meets the lost page right after queueing the image writes of
 * the resident pages before it, in the same batch: those writes must still
 * go out, or the snapshot holds references that never drop — it never
 * ends, and its ring and eventfd stay open after the region is gone.
 */
static void lost_while_copying(void **state)
{
	struct ctx *c = *state;
	const uint64_t n = 64 * MiB / ps, before = 512;
	struct pager_region_opts ro = { .sz = sizeof(ro), .memory_limit = 16 * MiB };
	struct pager_snapshot_progress pr = { .sz = sizeof(pr) };
	struct pager_region *r;
	char path[128];
	uint64_t x;
	int keep, fds0;

	start_swap_hooks(c, "512M", true);
	keep = test_control_connect(c->d.sock);
	assert_true(keep >= 0);
	struct pager *p = test_connect(c->d.sock);
	assert_int_equal(pager_region_create(p, n * ps, &ro, &r), 0);
	uint8_t *base = pager_region_addr(r);
	/* Written from the end: the last pages are the oldest, evicted
	 * first.  The copier reaches the last ones last. */
	for (uint64_t i = n; i-- > 0;)
		fill_pages(base, i, 1);
	for (x = n - 1; x > n / 2 && inject_eio(c, r, x) != 0; x--)
		;
	assert_true(x > n / 2);
	/* The pages just before it back in memory (one by one, downwards:
	 * no readahead takes the lost page in with them). */
	assert_int_equal(pager_region_set_limit(r, 0), 0);
	for (uint64_t i = x - 1; i >= x - before; i--)
		assert_int_equal(((volatile uint64_t *)(base + i * ps))[1], fill_word(i, 1));
	fds0 = settled_fds(c, keep);
	snprintf(path, sizeof(path), "%s/lost.img", dir);
	assert_int_equal(pager_region_snapshot_start(r, path, NULL), 0);
	assert_true(read_bus(base + x * ps));
	wait_snapshot_end(r, &pr);
	assert_int_equal(pr.status, -EIO);
	assert_int_equal(pager_region_destroy(r), 0);
	/* Less the region's memfd; nothing of the snapshot's. */
	assert_int_equal(settled_fds(c, keep), fds0 - 1);
	close(keep);
	pager_close(p);
	image_unlink(path);
	stop(c);
}

struct toucher {
	struct ctx *c;
	uint64_t region_id;
	const uint8_t *page;
	bool bus;
};

/* Reads the page as soon as pagerd runs the snapshot's first step. */
static void *touch_in_first_step(void *arg)
{
	struct toucher *t = arg;
	int ctl = test_control_connect(t->c->d.sock);
	struct proto_msg m;
	struct proto_reply rep;

	assert_true(ctl >= 0);
	do {
		memset(&m, 0, sizeof(m));
		m.body.snapshot.region_id = t->region_id;
		if (test_raw_call(ctl, &m, PROTO_SNAPSHOT_STATUS, 0, NULL, 0, &rep) < 0)
			break;
	} while (rep.snapshot.status == -ENOENT);
	t->bus = read_bus(t->page);
	close(ctl);
	return NULL;
}

/*
 * A page lost during the first step (the write-protection walk): its
 * swap-in fails while the walk runs.  A region with a lost page refuses a
 * snapshot (-EIO), and so must the instant: the image would otherwise
 * hold a hole, zeros, where the region had data at the instant.  (If the
 * read comes only after the instant, the copier fails the snapshot.)
 */
static void lost_in_first_step(void **state)
{
	struct ctx *c = *state;
	const uint64_t n = 512 * MiB / ps, early = 4096;
	struct pager_region_opts ro = { .sz = sizeof(ro), .memory_limit = 4 * MiB };
	struct pager_snapshot_progress pr = { .sz = sizeof(pr) };
	unsigned hits = 0;

	start_swap_hooks(c, "512M", true);
	struct pager *p = test_connect(c->d.sock);
	for (int round = 0; round < 3; round++) {
		struct pager_region *r;
		char path[128];
		uint64_t x;
		pthread_t t;
		int e;

		assert_int_equal(pager_region_create(p, n * ps, &ro, &r), 0);
		uint8_t *base = pager_region_addr(r);
		/* The first pages go to swap; then the limit goes and the
		 * rest is filled: a large resident region (a long walk). */
		fill_pages(base, 0, early);
		for (x = 0; x < early && inject_eio(c, r, x) != 0; x++)
			;
		assert_true(x < early);
		assert_int_equal(pager_region_set_limit(r, 0), 0);
		fill_pages(base, early, n - early);
		struct toucher to = { .c = c, .region_id = (uint64_t)pager_region_id(r),
				      .page = base + x * ps };

		snprintf(path, sizeof(path), "%s/lost%d.img", dir, round);
		assert_int_equal(pthread_create(&t, NULL, touch_in_first_step, &to), 0);
		e = pager_region_snapshot_start(r, path, NULL);
		assert_int_equal(pthread_join(t, NULL), 0);
		if (e == 0) {
			/* Read after the instant: lost then, or the copier met
			 * the slot's error first (and the read found the page
			 * whole); either way the snapshot fails. */
			wait_snapshot_end(r, &pr);
			assert_int_equal(pr.status, -EIO);
		} else {
			assert_int_equal(e, -EIO);
			assert_true(to.bus);
			hits++;
		}
		assert_int_equal(pager_region_destroy(r), 0);
		image_unlink(path);
	}
	print_message("%u of 3 pages lost before the instant (start refused)\n", hits);
	pager_close(p);
	stop(c);
}

/* ---- cut_stress --------------------------------------------------------- */

/*
 * Randomized: writer threads stamp pages of their own part of a region with
 * generations and discard ranges of it, snapshots run back to back, a
 * thread swings the region's limit (down to one page and back), pagerd has
 * swap, none, or one too small to hold much (full), and some runs snapshot
 * a region restored from the last image of the run before.
 *
 * The oracle.  A global counter `seq` orders events: a writer takes B from
 * it before the first store of a write (or before a discard call) and E
 * after the last store (after the call returns); the main thread takes S0
 * before pager_region_snapshot_start() and S1 after it returns.  Let c be
 * the counter's value at the snapshot's instant T: a value taken before T
 * is below c, one taken after is c or more.  Then each image page bounds c:
 *   - whole generation g (stores of g before T, none of g+1):
 *     B(g) < c <= E(g+1);
 *   - torn, g over g-1 (T in the middle of write g's stores, which go in
 *     order): B(g) < c <= E(g);
 * and S0 < c <= S1.  The image is one cut iff all these intervals meet.
 * Each writer logs (B, E, kind) per page and generation in a ring; an entry
 * that is gone (overwritten) or not yet finished only loosens a bound.
 */
#define SW 3            /* writer threads */
#define RING 128        /* log entries per page */
#define STRESS_SNAPS 3  /* snapshots per run */

enum { K_DATA = 1, K_ZERO = 2 };

struct logent {
	uint64_t gen, b, e, kind;
};

struct stress {
	struct pager_region *r;
	uint8_t *base;
	uint64_t npages, salt;
	const uint8_t *init;    /* a restored region's first content, or NULL */
	uint64_t *gen;          /* per page: last generation finished */
	struct logent *log;     /* npages * RING */
	uint64_t seq;
	volatile bool stop;
	uint64_t writes, discards, swings;
	unsigned seed;
};

struct sarg {
	struct stress *st;
	unsigned id;
};

static uint64_t smix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static uint64_t sword(const struct stress *st, uint64_t page, size_t i, uint64_t g)
{
	return smix(st->salt ^ (page << 16) ^ i) ^ g;
}

static uint64_t seq_take(struct stress *st)
{
	return __atomic_fetch_add(&st->seq, 1, __ATOMIC_SEQ_CST);
}

/* Seqlock-style: gen goes to 0 while the entry is rewritten. */
static void log_begin(struct stress *st, uint64_t page, uint64_t g, uint64_t kind,
		      uint64_t b)
{
	struct logent *e = &st->log[page * RING + g % RING];

	__atomic_store_n(&e->gen, 0, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	__atomic_store_n(&e->b, b, __ATOMIC_RELAXED);
	__atomic_store_n(&e->e, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&e->kind, kind, __ATOMIC_RELAXED);
	__atomic_store_n(&e->gen, g, __ATOMIC_RELEASE);
}

static void log_end(struct stress *st, uint64_t page, uint64_t g, uint64_t e)
{
	__atomic_store_n(&st->log[page * RING + g % RING].e, e, __ATOMIC_RELEASE);
	__atomic_store_n(&st->gen[page], g, __ATOMIC_RELEASE);
}

/* Reads generation g's entry of page: 1 if it is there (ret filled), 0
 * if g has not begun, -1 if the ring has moved past it (or is rewriting
 * that entry). */
static int log_get(struct stress *st, uint64_t page, uint64_t g, struct logent *ret)
{
	struct logent *e = &st->log[page * RING + g % RING];
	uint64_t g1 = __atomic_load_n(&e->gen, __ATOMIC_ACQUIRE);

	ret->b = __atomic_load_n(&e->b, __ATOMIC_RELAXED);
	ret->e = __atomic_load_n(&e->e, __ATOMIC_RELAXED);
	ret->kind = __atomic_load_n(&e->kind, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	if (g1 == g && __atomic_load_n(&e->gen, __ATOMIC_RELAXED) == g)
		return 1;
	return g1 && g1 < g ? 0 : (g1 == 0 && g < RING ? 0 : -1);
}

/* cmocka's checks are for the main thread only: a helper thread that
 * fails says so and stops; the main thread fails the test. */
static int stress_err;

static void thread_check(int e, const char *what)
{
	if (e < 0) {
		if (!__atomic_exchange_n(&stress_err, e, __ATOMIC_SEQ_CST))
			fprintf(stderr, "cut_stress: %s: %s\n", what, strerror(-e));
		pthread_exit(NULL);
	}
}

static void *stress_writer(void *arg)
{
	struct sarg *a = arg;
	struct stress *st = a->st;
	uint64_t lo = st->npages * a->id / SW, hi = st->npages * (a->id + 1) / SW;
	unsigned seed = st->seed * 31 + a->id;

	while (!st->stop) {
		uint64_t p = lo + (uint64_t)rand_r(&seed) % (hi - lo);

		if (rand_r(&seed) % 64 == 0) {
			/* Discard a few of our pages: a zero generation each. */
			uint64_t n = 1 + (uint64_t)rand_r(&seed) % 8, b;

			if (p + n > hi)
				n = hi - p;
			b = seq_take(st);
			for (uint64_t q = p; q < p + n; q++)
				log_begin(st, q, st->gen[q] + 1, K_ZERO, b);
			thread_check(pager_region_discard(st->r, p * ps, n * ps), "discard");
			b = seq_take(st);
			for (uint64_t q = p; q < p + n; q++)
				log_end(st, q, st->gen[q] + 1, b);
			__atomic_fetch_add(&st->discards, 1, __ATOMIC_RELAXED);
			continue;
		}
		uint64_t g = st->gen[p] + 1;
		volatile uint64_t *pg = (volatile uint64_t *)(st->base + p * ps);

		log_begin(st, p, g, K_DATA, seq_take(st));
		for (size_t i = 0; i < ps / 8; i++)
			pg[i] = sword(st, p, i, g);
		log_end(st, p, g, seq_take(st));
		__atomic_fetch_add(&st->writes, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

/* Swings the region's limit: down to one page, up past the region. */
static void *stress_swinger(void *arg)
{
	struct stress *st = arg;
	const uint64_t lim[] = { ps, ps, 16 * ps, 256 * ps, st->npages * ps / 4,
				 st->npages * ps / 2, st->npages * ps * 2 };
	unsigned seed = st->seed * 7 + 1;

	while (!st->stop) {
		thread_check(pager_region_set_limit(st->r,
			     lim[(unsigned)rand_r(&seed) % (sizeof(lim) / sizeof(lim[0]))]),
			     "set_limit");
		__atomic_fetch_add(&st->swings, 1, __ATOMIC_RELAXED);
		usleep(500 + (unsigned)rand_r(&seed) % 3000); /* pacing only */
	}
	return NULL;
}

/* One snapshot's record: the window and the bounds it was taken in. */
struct taken {
	char path[160];
	uint64_t *lo, *hi;      /* per page: generation finished before S0, after S1 */
	uint64_t s0, s1;
};

/* What generation g of page p holds: K_DATA, K_ZERO, 3 for a restored
 * region's first content; 0 if the log no longer says, -1 if g has not
 * begun. */
static int kind_of(struct stress *st, uint64_t p, uint64_t g, struct logent *ret)
{
	int k;

	if (g == 0) {
		ret->b = 0;
		ret->e = 0;
		return st->init ? 3 : K_ZERO;
	}
	k = log_get(st, p, g, ret);
	return k > 0 ? (int)ret->kind : k == 0 ? -1 : 0;
}

static bool word_is(struct stress *st, uint64_t p, size_t i, uint64_t w,
		    int kind, uint64_t g)
{
	switch (kind) {
	case K_DATA: return w == sword(st, p, i, g);
	case K_ZERO: return w == 0;
	case 3: return w == ((const uint64_t *)(st->init + p * ps))[i];
	default: return false;
	}
}

/* Whether the words of page pg from word i on are all zero. */
static bool zeros_from(const uint64_t *pg, size_t i)
{
	while (i < ps / 8 && pg[i] == 0)
		i++;
	return i == ps / 8;
}

/*
 * Checks one image against the log (see above).  Fails the test if it is
 * no cut; returns the pages whose bounds the log could no longer give.
 */
static uint64_t check_one_cut(struct stress *st, const struct taken *t)
{
	const uint64_t inf = UINT64_MAX;
	int fd = open(t->path, O_RDONLY);
	uint64_t *pg = malloc(ps), L = t->s0, U = t->s1, loose = 0;
	uint64_t Lpage = UINT64_MAX, Upage = UINT64_MAX;

	assert_true(fd >= 0);
	assert_non_null(pg);
	for (uint64_t p = 0; p < st->npages; p++) {
		uint64_t lower = inf, upper = 0; /* hull of the candidates */
		bool any = false;

		assert_int_equal(pread(fd, pg, ps, (off_t)(p * ps)), (ssize_t)ps);
		for (uint64_t g = t->lo[p]; g <= t->hi[p] + 1; g++) {
			struct logent eg, en;
			int kg = kind_of(st, p, g, &eg), kp;
			size_t i = 0;

			if (kg < 0)
				break; /* not begun: neither are later ones */
			if (kg == 0) {
				/* Gone from the log (overwritten: RING later
				 * entries of this page since): a write or a
				 * discard, unbounded.  Zeros are a discard's
				 * (no write stores zeros). */
				kg = zeros_from(pg, 0) ? K_ZERO : K_DATA;
				eg.b = 0;
				eg.e = 0;
				loose++;
			}
			while (i < ps / 8 && word_is(st, p, i, pg[i], kg, g))
				i++;
			if (i == ps / 8) {
				/* Whole g: B(g) < c <= E(g+1). */
				bool next = log_get(st, p, g + 1, &en) > 0 && en.e;

				lower = eg.b < lower ? eg.b : lower;
				upper = next ? (en.e > upper ? en.e : upper) : inf;
				any = true;
				continue;
			}
			/* Torn: g's stores in order over g-1. */
			if (kg != K_DATA || i == 0 || g == 0)
				continue;
			kp = kind_of(st, p, g - 1, &en);
			if (kp <= 0) {
				/* Gone: written over data or over a discard. */
				kp = zeros_from(pg, i) ? K_ZERO : K_DATA;
				loose++;
			}
			size_t j = i;
			while (j < ps / 8 && word_is(st, p, j, pg[j], kp, g - 1))
				j++;
			if (j == ps / 8) {
				lower = eg.b < lower ? eg.b : lower;
				upper = eg.e ? (eg.e > upper ? eg.e : upper) : inf;
				any = true;
			}
		}
		if (!any)
			fail_msg("%s page %llu: no generation in [%llu, %llu] fits (words %#llx %#llx ... %#llx)",
				 t->path, (unsigned long long)p, (unsigned long long)t->lo[p],
				 (unsigned long long)t->hi[p] + 1, (unsigned long long)pg[0],
				 (unsigned long long)pg[1], (unsigned long long)pg[ps / 8 - 1]);
		if (lower != inf && lower > L) {
			L = lower;
			Lpage = p;
		}
		if (upper < U) {
			U = upper;
			Upage = p;
		}
	}
	if (L >= U && Upage == UINT64_MAX)
		fail_msg("%s is no cut: page %llu holds a write (or discard) begun at seq %llu, "
			 "after the start call returned (seq %llu..%llu)",
			 t->path, (unsigned long long)Lpage, (unsigned long long)L,
			 (unsigned long long)t->s0, (unsigned long long)t->s1);
	if (L >= U)
		fail_msg("%s is no cut: page %llu holds a write (or discard) begun at seq %llu, "
			 "page %llu one overwritten by seq %llu (start call %llu..%llu)",
			 t->path, (unsigned long long)Lpage, (unsigned long long)L,
			 (unsigned long long)Upage, (unsigned long long)U,
			 (unsigned long long)t->s0, (unsigned long long)t->s1);
	close(fd);
	free(pg);
	return loose;
}

static void taken_free(struct taken *t)
{
	free(t->lo);
	free(t->hi);
	t->lo = t->hi = NULL;
}

/* One run; returns the pages checked loosely.  prev: the image of the run
 * before (restored from if restore), replaced by this run's last. */
static uint64_t stress_run(struct ctx *c, unsigned run, unsigned seed, int swap,
			   bool restore, char *prev)
{
	static const char *swaps[] = { "512M", NULL, "1M" };
	const uint64_t n = 16 * MiB / ps;
	struct stress st = { .npages = n, .seed = seed, .seq = 1 };
	struct pager_region_opts ro = { .sz = sizeof(ro), .memory_limit = 4 * MiB };
	struct taken t[STRESS_SNAPS];
	struct sarg a[SW];
	pthread_t w[SW], sw;
	uint8_t *init = NULL;
	uint64_t loose = 0;

	memset(t, 0, sizeof(t));
	start_swap(c, swaps[swap]);
	struct pager *p = test_connect(c->d.sock);
	if (restore) {
		int fd = open(prev, O_RDONLY);

		init = malloc(n * ps);
		assert_non_null(init);
		assert_true(fd >= 0);
		assert_int_equal(pread(fd, init, n * ps, 0), (ssize_t)(n * ps));
		close(fd);
		ro.flags = seed & 1 ? PAGER_REGION_NO_PREFETCH : 0;
		assert_int_equal(pager_region_restore(p, prev, &ro, &st.r), 0);
		assert_int_equal(pager_region_set_limit(st.r, ro.memory_limit), 0);
	} else {
		assert_int_equal(pager_region_create(p, n * ps, &ro, &st.r), 0);
	}
	st.init = init;
	st.base = pager_region_addr(st.r);
	st.salt = smix(seed ^ ((uint64_t)run << 32));
	st.gen = calloc(n, sizeof(*st.gen));
	st.log = calloc(n * RING, sizeof(*st.log));
	assert_non_null(st.gen);
	assert_non_null(st.log);
	for (unsigned i = 0; i < SW; i++) {
		a[i] = (struct sarg){ &st, i };
		assert_int_equal(pthread_create(&w[i], NULL, stress_writer, &a[i]), 0);
	}
	assert_int_equal(pthread_create(&sw, NULL, stress_swinger, &st), 0);
	/* Some writing first (an event, not a time). */
	while (__atomic_load_n(&st.writes, __ATOMIC_RELAXED) < n / 4)
		sched_yield();
	for (int k = 0; k < STRESS_SNAPS; k++) {
		struct pager_snapshot_progress pr = { .sz = sizeof(pr) };
		int e, polls = 0;

		snprintf(t[k].path, sizeof(t[k].path), "%s/stress%u.%d.img", dir, run, k);
		t[k].lo = malloc(n * 8);
		t[k].hi = malloc(n * 8);
		assert_non_null(t[k].lo);
		assert_non_null(t[k].hi);
		for (uint64_t i = 0; i < n; i++)
			t[k].lo[i] = __atomic_load_n(&st.gen[i], __ATOMIC_ACQUIRE);
		t[k].s0 = seq_take(&st);
		assert_int_equal(pager_region_snapshot_start(st.r, t[k].path, NULL), 0);
		t[k].s1 = seq_take(&st);
		for (uint64_t i = 0; i < n; i++)
			t[k].hi[i] = __atomic_load_n(&st.gen[i], __ATOMIC_ACQUIRE);
		/* The one before is checked while this one runs. */
		if (k) {
			loose += check_one_cut(&st, &t[k - 1]);
			image_unlink(t[k - 1].path);
			taken_free(&t[k - 1]);
		}
		while ((e = pager_region_snapshot_poll(st.r, &pr)) == 0) {
			assert_true(++polls < 120000); /* two minutes */
			assert_int_equal(__atomic_load_n(&stress_err, __ATOMIC_SEQ_CST), 0);
			usleep(1000);
		}
		assert_int_equal(e, 1);
		if (pr.status != 0)
			fail_msg("run %u snapshot %d: status %d", run, k, pr.status);
		assert_int_equal(pr.pages_done, pr.pages_total);
	}
	loose += check_one_cut(&st, &t[STRESS_SNAPS - 1]);
	st.stop = true;
	for (unsigned i = 0; i < SW; i++)
		pthread_join(w[i], NULL);
	pthread_join(sw, NULL);
	assert_int_equal(stress_err, 0);
	assert_int_equal(pager_region_destroy(st.r), 0);
	pager_close(p);
	stop(c);
	print_message("run %u (%s swap%s): %d snapshots one cut each; %llu writes, %llu discards, "
		      "%llu limit swings, %llu pages bounded loosely\n", run,
		      swaps[swap] ? (swap == 2 ? "full" : "with") : "no",
		      restore ? ", restored region" : "", STRESS_SNAPS,
		      (unsigned long long)st.writes, (unsigned long long)st.discards,
		      (unsigned long long)st.swings, (unsigned long long)loose);
	/* This run's last image is the next one's to restore from. */
	if (*prev)
		image_unlink(prev);
	strcpy(prev, t[STRESS_SNAPS - 1].path);
	taken_free(&t[STRESS_SNAPS - 1]);
	free(init);
	free(st.gen);
	free(st.log);
	return loose;
}

static void cut_stress(void **state)
{
	struct ctx *c = *state;
	const char *env = getenv("SNAP_STRESS_RUNS"), *senv = getenv("SNAP_STRESS_SEED");
	unsigned runs = env ? (unsigned)atoi(env) : 24;
	unsigned seed = senv ? (unsigned)atoi(senv) : (unsigned)getpid() ^ (unsigned)time(NULL);
	char prev[160] = "";
	uint64_t loose = 0;

	print_message("cut_stress: %u runs, seed %u (SNAP_STRESS_SEED to repeat)\n", runs, seed);
	for (unsigned run = 0; run < runs; run++)
		loose += stress_run(c, run, seed + run, (int)(run % 3),
				    run % 4 == 3 && *prev, prev);
	if (*prev)
		image_unlink(prev);
	print_message("cut_stress: %u runs, %u snapshots, every one a cut (%llu page bounds loose)\n",
		      runs, runs * STRESS_SNAPS, (unsigned long long)loose);
}

/*
 * The oracle of cut_stress alone, on a log and an image made up here.  A
 * page's generation before the start call may be a discard whose log
 * entry is gone by the time the image is checked: RING later writes of
 * the page overwrote it, which a slow snapshot allows (one of a restored
 * region without swap reads its pages back from the first image).  The
 * image then rightly holds zeros there, whole, or under a write torn by
 * the instant.  The oracle tried a gone generation as data only, and
 * failed such a cut: 'no generation in [1, 2] fits (words 0 0 ... 0)',
 * make soak's rare failure, taken for a page pagerd lost.
 */
static void cut_oracle_gone(void **state)
{
	const uint64_t n = 2;
	struct stress st = { .npages = n, .salt = 0x5eed };
	struct taken t = { .s0 = 4, .s1 = 5 };
	uint64_t *img = calloc(n, ps);
	int fd;

	(void)state;
	st.gen = calloc(n, sizeof(*st.gen));
	st.log = calloc(n * RING, sizeof(*st.log));
	t.lo = calloc(n, sizeof(*t.lo));
	t.hi = calloc(n, sizeof(*t.hi));
	assert_true(img && st.gen && st.log && t.lo && t.hi);
	for (uint64_t p = 0; p < n; p++) {
		/* Generation 1: a discard, finished before the start call. */
		log_begin(&st, p, 1, K_ZERO, 1);
		log_end(&st, p, 1, 2);
		/* Page 1's generation 2: a write begun before the start call
		 * and still running after it (torn by the instant); page 0's,
		 * one after it. */
		log_begin(&st, p, 2, K_DATA, p ? 3 : 10);
		log_end(&st, p, 2, p ? 8 : 11);
		/* Then writes enough to overwrite generation 1's entry. */
		for (uint64_t g = 3; g <= RING + 1; g++) {
			log_begin(&st, p, g, K_DATA, 10 + 2 * g);
			log_end(&st, p, g, 11 + 2 * g);
		}
		t.lo[p] = t.hi[p] = 1;
	}
	/* Page 0: the discard's zeros.  Page 1: generation 2's first half
	 * over them. */
	for (size_t i = 0; i < ps / 16; i++)
		img[ps / 8 + i] = sword(&st, 1, i, 2);
	snprintf(t.path, sizeof(t.path), "%s/oracle.img", dir);
	fd = open(t.path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, img, n * ps, 0), (ssize_t)(n * ps));
	close(fd);

	/* One cut (the instant at 4), bounded loosely where the log says
	 * nothing more. */
	assert_true(check_one_cut(&st, &t) > 0);

	unlink(t.path);
	taken_free(&t);
	free(st.gen);
	free(st.log);
	free(img);
}

/* ---- image_rewritten, stalled_image -------------------------------------- */

/* (bus_jmp and on_sigbus: above, with read_bus.) */

/* Reads one word; returns true if it raised SIGBUS. */
static bool touch_bus(volatile uint64_t *w, uint64_t *ret)
{
	if (sigsetjmp(bus_jmp, 1))
		return true;
	*ret = *w;
	return false;
}

static bool uffd_poison_available(const char *sock)
{
	struct pager_opts o = { .sz = sizeof(o), .socket_path = sock,
				.flags = PAGER_OPEN_NO_PRIVATE };
	struct pager_info info = { .sz = sizeof(info) };
	struct pager *p;
	bool ok;

	if (pager_open(&p, &o) < 0)
		return false;
	ok = pager_get_info(p, &info) == 0 &&
	     (info.uffd_features & (1ULL << 14) /* UFFD_FEATURE_POISON */);
	pager_close(p);
	return ok;
}

/*
 * In a child: restores `path` and reads every page.  Returns 0 if exactly
 * the pages in bad[] raise SIGBUS (each time) and every other word is what
 * fill_region(seed) wrote, with stats counting them poisoned.
 */
static int rewritten_child(const char *sock, const char *path, size_t len,
			   uint64_t seed, const uint64_t *bad, unsigned nbad,
			   bool prefetch)
{
	struct pager_region_opts ro = { .sz = sizeof(ro),
					.flags = prefetch ? 0 : PAGER_REGION_NO_PREFETCH };
	struct pager_region_stats st = { .sz = sizeof(st) };
	struct sigaction sa = { .sa_handler = on_sigbus };
	struct pager_opts o = { .sz = sizeof(o), .socket_path = sock,
				.flags = PAGER_OPEN_NO_PRIVATE };
	struct pager *p;
	struct pager_region *r;
	uint64_t *m, v;

	if (pager_open(&p, &o) < 0 || pager_region_restore(p, path, &ro, &r) < 0)
		return 2;
	if (prefetch) {
		for (int i = 0; i < 10000 && pager_region_stats(r, &st) == 0 &&
				st.image_pending; i++)
			usleep(1000);
		if (st.image_pending)
			return 3;
	}
	m = pager_region_addr(r);
	sigaction(SIGBUS, &sa, NULL);
	for (uint64_t pg = 0; pg < len / ps; pg++) {
		bool want_bus = false;

		for (unsigned k = 0; k < nbad; k++)
			want_bus |= bad[k] == pg;
		for (int round = 0; round < (want_bus ? 2 : 1); round++) {
			bool bus = touch_bus(&m[pg * (ps / 8)], &v);

			if (bus != want_bus) {
				fprintf(stderr, "page %llu: %s\n", (unsigned long long)pg,
					bus ? "SIGBUS" : "no SIGBUS, the rewritten data");
				return 4;
			}
		}
		if (want_bus)
			continue;
		for (size_t i = pg * (ps / 8); i < (pg + 1) * (ps / 8); i++)
			if (m[i] != ((i % 7 == 0 && (i / (ps / 8)) % 3) ? (seed ^ i) : 0)) {
				fprintf(stderr, "page %llu: wrong data\n", (unsigned long long)pg);
				return 5;
			}
	}
	if (pager_region_stats(r, &st) < 0 || st.poisoned != nbad)
		return 6;
	pager_close(p);
	return 0;
}

static void run_child_expect0(pid_t kid)
{
	int ws;

	assert_true(kid >= 0);
	assert_int_equal(waitpid(kid, &ws, 0), kid);
	assert_true(WIFEXITED(ws));
	assert_int_equal(WEXITSTATUS(ws), 0);
}

static void image_files_unlink(const char *path)
{
	char f[256];

	unlink(path);
	snprintf(f, sizeof(f), "%s.meta", path);
	unlink(f);
	snprintf(f, sizeof(f), "%s.crc", path);
	unlink(f);
}

static void image_rewritten(void **state)
{
	struct ctx *c = *state;
	const size_t len = 4 * MiB;
	const uint64_t seed = 0x1234abcd;
	/* A data page changed, a hole given data, a data page punched. */
	const uint64_t bad[] = { 1, 3, 4 };
	char path[128];
	uint8_t page[65536];
	int fd;

	start(c);
	if (!uffd_poison_available(c->d.sock)) {
		stop(c);
		skip(); /* no UFFD_FEATURE_POISON: no SIGBUS to deliver */
	}
	snprintf(path, sizeof(path), "%s/rw.img", dir);
	take(c, path, len, seed);
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, page, ps, 1 * ps), (ssize_t)ps);
	page[8] ^= 0x40;
	assert_int_equal(pwrite(fd, page, ps, 1 * ps), (ssize_t)ps);
	memset(page, 0x5a, ps);
	assert_int_equal(pwrite(fd, page, ps, 3 * ps), (ssize_t)ps);
	assert_int_equal(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				   (off_t)(4 * ps), (off_t)ps), 0);
	close(fd);
	for (int prefetch = 0; prefetch < 2; prefetch++) {
		pid_t kid = fork();

		if (kid == 0)
			_exit(rewritten_child(c->d.sock, path, len, seed, bad, 3, prefetch));
		run_child_expect0(kid);
	}
	image_files_unlink(path);
	stop(c);
}

/* Another client's whole life: a region written and read back. */
static void other_client_works(struct ctx *c)
{
	struct pager *p = test_connect(c->d.sock);
	struct pager_region *r;
	struct proto_reply st;
	uint64_t *m;
	size_t n = 8 * MiB / 8;

	assert_int_equal(pager_region_create(p, 8 * MiB, NULL, &r), 0);
	m = pager_region_addr(r);
	for (size_t i = 0; i < n; i += 64)
		m[i] = i ^ 0x77;
	for (size_t i = 0; i < n; i += 64)
		assert_int_equal(m[i], i ^ 0x77);
	assert_int_equal(pager_region_destroy(r), 0);
	pager_close(p);
	assert_int_equal(test_status(c->d.sock, &st), 0);
}

static void copy_file(const char *from, const char *to)
{
	int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	char buf[65536];
	ssize_t k;

	assert_true(in >= 0 && out >= 0);
	while ((k = read(in, buf, sizeof(buf))) > 0)
		assert_int_equal(write(out, buf, (size_t)k), k);
	assert_int_equal(k, 0);
	close(in);
	close(out);
}

/* The stallfs mounted, for the teardown of a test that fails with its
 * file held: pagerd cannot exit before the file answers. */
static struct stallfs *stallfs_up;

static void stop_stallfs(struct stallfs *f)
{
	stallfs_unmount(f);
	for (unsigned i = 0; i < STALLFS_NAMES; i++)
		unlink(f->back[i]);
	stallfs_up = NULL;
}

/*
 * pagerd with args, and a stallfs at DIR/fuse whose "img" (its path in
 * path) is backed by an empty file.  Skips without root or FUSE.
 */
static struct stallfs *start_on_stallfs(struct ctx *c, const char *const *args,
					char *path, size_t path_len)
{
	static struct stallfs fs;
	struct stallfs *f = &fs;
	char mnt[160], back[256];
	int e;

	if (geteuid() != 0)
		skip();
	snprintf(c->swap, sizeof(c->swap), "%s/swap", dir);
	unlink(c->swap);
	assert_int_equal(test_pagerd_start(&c->d, args), 0);
	c->running = true;
	snprintf(mnt, sizeof(mnt), "%s/fuse", dir);
	e = stallfs_mount(f, mnt, dir);
	if (e < 0) {
		print_message("no FUSE here (%s): skipped\n", strerror(-e));
		stop(c);
		skip();
	}
	stallfs_up = f;
	snprintf(path, path_len, "%s/img", mnt);
	snprintf(back, sizeof(back), "%s/back_img", dir);
	close(open(back, O_RDWR | O_CREAT | O_TRUNC, 0644));
	return f;
}

/* Waits (bounded) until the FUSE file holds more than `n` requests. */
static void wait_stalled(struct stallfs *f, unsigned n)
{
	for (int i = 0; i < 30000 && stallfs_stalled(f) <= n; i++)
		usleep(1000);
	assert_true(stallfs_stalled(f) > n);
}

static void stalled_image(void **state)
{
	struct ctx *c = *state;
	const size_t len = 16 * MiB;
	const uint64_t seed = 0x5eed;
	char path[200], good[160], back[256], f_[256];
	const char *args[] = { "--swap", c->swap, "--swap-size", "512M",
			       "--image-timeout", "2000", NULL };
	struct pager_snapshot_progress pr = { .sz = sizeof(pr) };
	struct stallfs *f;
	int e, ws;

	f = start_on_stallfs(c, args, path, sizeof(path));

	/* A snapshot into a file that stops answering. */
	struct pager *p = test_connect(c->d.sock);
	struct pager_region *r;
	uint64_t *m;

	assert_int_equal(pager_region_create(p, len, NULL, &r), 0);
	fill_region(r, seed);
	stallfs_set_stall(f, true);
	assert_int_equal(pager_region_snapshot_start(r, path, NULL), 0);
	wait_stalled(f, 0);
	/* pagerd holds I/O the file never answers: everyone else is served. */
	other_client_works(c);
	/* The snapshot fails, once the image timeout has passed. */
	for (int i = 0; i < 60000 && (e = pager_region_snapshot_poll(r, &pr)) == 0; i++)
		usleep(1000);
	assert_int_equal(e, 1);
	assert_int_equal(pr.status, -ETIMEDOUT);
	snprintf(f_, sizeof(f_), "%s.meta", path);
	assert_int_equal(access(f_, F_OK), -1); /* never looks complete */
	m = pager_region_addr(r);
	for (size_t i = 0; i < len / 8; i += 7)
		assert_int_equal(m[i], ((i / (ps / 8)) % 3) ? (seed ^ i) : 0);
	other_client_works(c);
	pager_close(p);
	stallfs_release(f);

	/* A restore from a file that stops answering. */
	snprintf(good, sizeof(good), "%s/good.img", dir);
	take(c, good, len, seed);
	snprintf(back, sizeof(back), "%s/back_img", dir);
	copy_file(good, back);
	snprintf(f_, sizeof(f_), "%s.meta", good);
	snprintf(back, sizeof(back), "%s/back_img.meta", dir);
	copy_file(f_, back);
	snprintf(f_, sizeof(f_), "%s.crc", good);
	snprintf(back, sizeof(back), "%s/back_img.crc", dir);
	copy_file(f_, back);
	unsigned before = stallfs_stalled(f);

	stallfs_set_stall(f, true);
	pid_t kid = fork();

	assert_true(kid >= 0);
	if (kid == 0) {
		struct pager_region_opts ro = { .sz = sizeof(ro),
						.flags = PAGER_REGION_NO_PREFETCH };
		struct sigaction sa = { .sa_handler = on_sigbus };
		struct pager_opts o = { .sz = sizeof(o), .socket_path = c->d.sock,
					.flags = PAGER_OPEN_NO_PRIVATE };
		struct pager *kp;
		struct pager_region *kr;
		uint64_t v;

		if (pager_open(&kp, &o) < 0 || pager_region_restore(kp, path, &ro, &kr) < 0)
			_exit(2);
		sigaction(SIGBUS, &sa, NULL);
		m = pager_region_addr(kr);
		/* Its read times out: SIGBUS, never zeros; the next page
		 * too, at once (the image no longer answers). */
		if (!touch_bus(&m[1 * ps / 8], &v))
			_exit(3);
		if (!touch_bus(&m[2 * ps / 8], &v))
			_exit(4);
		pager_close(kp);
		_exit(0);
	}
	wait_stalled(f, before);
	other_client_works(c);
	assert_int_equal(waitpid(kid, &ws, 0), kid);
	assert_true(WIFEXITED(ws));
	assert_int_equal(WEXITSTATUS(ws), 0);
	other_client_works(c);
	stop_stallfs(f);
	image_files_unlink(good);
	stop(c);
}

/* ---- writers_throttled ---------------------------------------------------- */

/*
 * A snapshot whose writers outrun its disk by far more than the capture
 * budget (snapshot_capture_limit, 256 KiB here; 16 MiB of pages written):
 * the image is a FUSE file whose writes wait until the test lets the disk
 * go.  With the budget full, the writers' faults wait (counted) while
 * pagerd serves everyone else; then the disk moves, the writers go on at
 * its pace, and the image is one cut.  A pagerd that instead fails the
 * snapshot with -ENOBUFS fails here.
 */
static void writers_throttled(void **state)
{
	struct ctx *c = *state;
	const uint64_t n = 16 * MiB / ps;
	const char *args[] = { "--snapshot-capture-limit", "256K",
			       /* The disk is held as long as the test needs. */
			       "--image-timeout", "600000", NULL };
	struct pager_snapshot_progress pr = { .sz = sizeof(pr) };
	uint64_t *lo = malloc(n * 8), *hi = malloc(n * 8), parked = 0, writes;
	struct pager_region *r;
	struct proto_reply st;
	struct writers w = { 0 };
	struct stallfs *f;
	char path[200];
	int e = 0;

	assert_non_null(lo);
	assert_non_null(hi);
	f = start_on_stallfs(c, args, path, sizeof(path));

	struct pager *p = test_connect(c->d.sock);
	assert_int_equal(pager_region_create(p, n * ps, NULL, &r), 0);
	writers_start(&w, pager_region_addr(r), n);
	while (__atomic_load_n(&w.writes, __ATOMIC_RELAXED) < n / 2)
		sched_yield();
	stallfs_hold(f, true);
	for (uint64_t i = 0; i < n; i++)
		lo[i] = __atomic_load_n(&w.gen[i], __ATOMIC_ACQUIRE);
	assert_int_equal(pager_region_snapshot_start(r, path, NULL), 0);
	for (uint64_t i = 0; i < n; i++)
		hi[i] = __atomic_load_n(&w.gen[i], __ATOMIC_ACQUIRE);
	/* The disk takes nothing: the writers fill the budget, then wait
	 * (or, without throttling, the snapshot fails). */
	for (int i = 0; i < 60000; i++) {
		assert_int_equal(test_status(c->d.sock, &st), 0);
		parked = st.counters.snapshot_writes_parked;
		if (parked || (e = pager_region_snapshot_poll(r, &pr)) != 0 || pr.status)
			break;
		usleep(2000);
	}
	if (e == 1 || pr.status)
		fail_msg("the snapshot failed while its disk was held: %s", strerror(-pr.status));
	assert_int_equal(e, 0);
	assert_true(parked > 0);
	assert_true(stallfs_held(f) > 0);
	writes = __atomic_load_n(&w.writes, __ATOMIC_RELAXED);
	print_message("disk held: %llu writer faults parked, %u image requests waiting, %llu writes so far\n",
		      (unsigned long long)parked, stallfs_held(f), (unsigned long long)writes);
	/* The writers wait, not pagerd: another client is served. */
	other_client_works(c);
	/* The disk moves: the writers go on at its pace, the copy ends. */
	stallfs_hold(f, false);
	for (int i = 0; i < 120000 && (e = pager_region_snapshot_poll(r, &pr)) == 0; i++)
		usleep(1000);
	assert_int_equal(e, 1);
	if (pr.status)
		fail_msg("snapshot: %s", strerror(-pr.status));
	assert_int_equal(pr.pages_done, pr.pages_total);
	assert_int_equal(pr.pages_total, n);
	writers_stop(&w);
	assert_int_equal(test_status(c->d.sock, &st), 0);
	print_message("%llu writes in all, %llu writer faults parked\n",
		      (unsigned long long)w.writes,
		      (unsigned long long)st.counters.snapshot_writes_parked);
	assert_true(__atomic_load_n(&w.writes, __ATOMIC_RELAXED) > writes);
	/* One cut, read back through the FUSE file. */
	assert_true(check_cut(path, n, lo, hi) <= WRITERS);
	pager_close(p);
	stop_stallfs(f);
	free(w.gen);
	free(lo);
	free(hi);
	stop(c);
}

/* Polls (bounded) until pagerd has parked more than `than` writes. */
static uint64_t wait_parked(struct ctx *c, uint64_t than)
{
	struct proto_reply st;

	for (int i = 0; i < 30000; i++) {
		assert_int_equal(test_status(c->d.sock, &st), 0);
		if (st.counters.snapshot_writes_parked > than)
			return st.counters.snapshot_writes_parked;
		usleep(2000);
	}
	fail_msg("no write was parked");
	return 0;
}

/*
 * Writers parked for the capture budget must never be stranded, nor hold
 * pagerd: a client that dies with its writers parked leaves pagerd
 * serving everyone else; a snapshot that fails (its disk held past the
 * image timeout) lets its writers go on.
 */
static void throttled_released(void **state)
{
	struct ctx *c = *state;
	const uint64_t n = 16 * MiB / ps;
	const char *args[] = { "--snapshot-capture-limit", "256K",
			       "--image-timeout", "5000", NULL };
	struct pager_snapshot_progress pr = { .sz = sizeof(pr) };
	struct pager_region *r;
	struct writers w = { 0 };
	struct stallfs *f;
	char path[200];
	uint64_t parked, writes;
	int e = 0, ws;

	f = start_on_stallfs(c, args, path, sizeof(path));

	/* A client dies with its writers parked. */
	stallfs_hold(f, true);
	pid_t kid = fork();
	assert_true(kid >= 0);
	if (kid == 0) {
		struct pager_opts o = { .sz = sizeof(o), .socket_path = c->d.sock,
					.flags = PAGER_OPEN_NO_PRIVATE };
		struct pager *kp;
		struct pager_region *kr;
		struct writers kw = { 0 };

		if (pager_open(&kp, &o) < 0 || pager_region_create(kp, n * ps, NULL, &kr) < 0)
			_exit(2);
		writers_start(&kw, pager_region_addr(kr), n);
		if (pager_region_snapshot_start(kr, path, NULL) < 0)
			_exit(3);
		for (;;)
			pause(); /* killed here, its writers parked */
	}
	parked = wait_parked(c, 0);
	kill(kid, SIGKILL);
	assert_int_equal(waitpid(kid, &ws, 0), kid);
	assert_int_equal(test_wait_clients(c->d.sock, 0, 10000), 0);
	other_client_works(c);
	stallfs_hold(f, false);
	/* The dead client's image writes still in the kernel (some queued
	 * behind FUSE's background limit, not yet seen by the server) go
	 * through before the disk is held again: the next snapshot's
	 * ftruncate() of the image would wait behind them for good.  A
	 * truncate waits for them. */
	assert_int_equal(truncate(path, 0), 0);

	/* A snapshot fails with its writers parked: they go on. */
	struct pager *p = test_connect(c->d.sock);
	assert_int_equal(pager_region_create(p, n * ps, NULL, &r), 0);
	writers_start(&w, pager_region_addr(r), n);
	stallfs_hold(f, true);
	assert_int_equal(pager_region_snapshot_start(r, path, NULL), 0);
	parked = wait_parked(c, parked);
	for (int i = 0; i < 60000 && (e = pager_region_snapshot_poll(r, &pr)) == 0; i++)
		usleep(1000);
	assert_int_equal(e, 1);
	assert_int_equal(pr.status, -ETIMEDOUT);
	writes = __atomic_load_n(&w.writes, __ATOMIC_RELAXED);
	for (int i = 0; i < 30000 && __atomic_load_n(&w.writes, __ATOMIC_RELAXED) < writes + n;
	     i++)
		usleep(1000);
	print_message("%llu writes parked in all; after the snapshot failed, %llu more writes\n",
		      (unsigned long long)parked,
		      (unsigned long long)(__atomic_load_n(&w.writes, __ATOMIC_RELAXED) - writes));
	assert_true(__atomic_load_n(&w.writes, __ATOMIC_RELAXED) >= writes + n);
	writers_stop(&w);
	other_client_works(c);
	pager_close(p);
	stop_stallfs(f);
	free(w.gen);
	stop(c);
}

/* ---- main --------------------------------------------------------------- */

static int setup(void **state)
{
	*state = calloc(1, sizeof(struct ctx));
	return *state ? 0 : -1;
}

static int teardown(void **state)
{
	struct ctx *c = *state;

	if (stallfs_up)
		stop_stallfs(stallfs_up);
	if (c->running) {
		kill(c->d.pid, SIGKILL);
		waitpid(c->d.pid, NULL, 0);
		unlink(c->swap);
	}
	free(c);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(consistent_resident, setup, teardown),
		cmocka_unit_test_setup_teardown(consistent_swapped, setup, teardown),
		cmocka_unit_test_setup_teardown(two_regions_at_once, setup, teardown),
		cmocka_unit_test_setup_teardown(client_dies_midway, setup, teardown),
		cmocka_unit_test_setup_teardown(client_dies_at_start, setup, teardown),
		cmocka_unit_test_setup_teardown(requester_leaves, setup, teardown),
		cmocka_unit_test_setup_teardown(restore_lazy, setup, teardown),
		cmocka_unit_test_setup_teardown(restore_prefetch, setup, teardown),
		cmocka_unit_test_setup_teardown(bad_images, setup, teardown),
		cmocka_unit_test_setup_teardown(discard_after_instant, setup, teardown),
		cmocka_unit_test_setup_teardown(zero_page_evicted, setup, teardown),
		cmocka_unit_test_setup_teardown(no_swap_unprotect, setup, teardown),
		cmocka_unit_test_setup_teardown(client_removes_page, setup, teardown),
		cmocka_unit_test_setup_teardown(restored_discard, setup, teardown),
		cmocka_unit_test_setup_teardown(lost_while_copying, setup, teardown),
		cmocka_unit_test_setup_teardown(lost_in_first_step, setup, teardown),
		cmocka_unit_test_setup_teardown(image_rewritten, setup, teardown),
		cmocka_unit_test_setup_teardown(stalled_image, setup, teardown),
		cmocka_unit_test_setup_teardown(writers_throttled, setup, teardown),
		cmocka_unit_test_setup_teardown(throttled_released, setup, teardown),
		cmocka_unit_test_setup_teardown(cut_stress, setup, teardown),
		cmocka_unit_test(cut_oracle_gone),
	};
	int rc;

	ps = (size_t)sysconf(_SC_PAGESIZE);
	/* Images and swap on a real disk (O_DIRECT, SEEK_DATA). */
	snprintf(dir, sizeof(dir), "/var/tmp/pagerd-snap.XXXXXX");
	if (!mkdtemp(dir)) {
		printf("cannot make a directory in /var/tmp\n");
		return TEST_SKIP;
	}
	/* The whole group: 1-2 minutes alone, over 5 under ASan on a loaded
	 * machine (it has 22 tests); run.sh's 600 s timeout is the backstop.
	 * A long stress (make soak) gets its time. */
	rc = test_run_group(tests, getenv("SNAP_STRESS_RUNS") ? 540 + 20 * (unsigned)atoi(getenv("SNAP_STRESS_RUNS")) : 540);
	/* Whatever a failed test left behind goes too: a FUSE mount whose
	 * server died with the failed test first. */
	char mnt[80];

	snprintf(mnt, sizeof(mnt), "%s/fuse", dir);
	umount2(mnt, MNT_DETACH);
	rmdir(mnt);
	DIR *dd = opendir(dir);
	for (struct dirent *de; dd && (de = readdir(dd));) {
		char f[320];

		if (de->d_name[0] == '.')
			continue;
		snprintf(f, sizeof(f), "%s/%s", dir, de->d_name);
		unlink(f);
	}
	if (dd)
		closedir(dd);
	rmdir(dir);
	return rc;
}
