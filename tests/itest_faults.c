/* SPDX-License-Identifier: MIT */
/*
 * Integration tests of the fault paths: a real pagerd (tests/harness.c)
 * serving real clients that fault through libpager.
 *
 *   threads_same_and_distinct_pages  16 threads fault the same pages, then
 *                                    each its own, on a 64 MiB region
 *   (known bug) many_streams_fault_around  16 sequential streams at once
 *   two_clients_at_once              two processes served at the same time
 *   kernel_fault_read_into_region    read(2)/write(2) fault inside the kernel
 *   fault_around_adapts              sequential touches are batched, random
 *                                    ones populate only what they touch
 *   dontneed_keeps_data_remove_zeroes  MADV_DONTNEED -> no fault reaches
 *                                    pagerd, MADV_REMOVE
 *                                    -> zero fill
 *   mremap_whole_region_followed     the daemon follows UFFD_EVENT_REMAP
 *   private_daemon_default/_forced   no system daemon: libpager starts one
 *   many_streams_fault_around        16 sequential streams at once
 *   dontneed_keeps_resident_count    DONTNEED is not counted as a discard
 *   private_daemon_pid               pager_get_info names the private daemon
 *   activated_daemon_pid             ... and a socket-activated one: not
 *                                    the process that made the listening
 *                                    socket (here the test; under systemd,
 *                                    systemd: pid 1)
 *
 * A client SIGKILLed mid-fault is covered by itest_hostile.c, not here.
 *
 * Every test starts its own pagerd and ends by checking that the daemon
 * dropped every client and region and exits 0 on SIGTERM.  Nothing sleeps:
 * threads are joined, children waited for, and pagerd's status round trip
 * is the wait for anything the daemon does.  A fault pagerd never serves
 * blocks its thread for good, so each test has a watchdog: past a deadline
 * it says what the test was doing, kills what we started and fails the
 * binary, rather than hang until the runner's timeout.
 *
 * ITEST_FILTER=pattern runs only the tests whose names match.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "pager.h"

#define MiB (1024ul * 1024)
/* Seconds one test may take: each takes well under one here, under ASan
 * too; past this something waits on a fault nobody serves. */
#define TEST_DEADLINE_S 60
/* Exit code of a forked child whose test must be skipped. */
#define CHILD_SKIP TEST_SKIP

struct ctx {
	struct test_pagerd d;
	bool running;     /* d holds a pagerd we have not stopped */
	struct pager *p;
	size_t ps;
	pid_t kids[2];    /* forked clients still to be waited for */
	const char *phase; /* what the test is doing (atomic: the watchdog reads it) */
	pthread_t wd;
	pthread_mutex_t wd_lock;
	pthread_cond_t wd_cond;
	bool wd_done;
};

/* ---- helpers ------------------------------------------------------------ */

static void phase(struct ctx *c, const char *what)
{
	__atomic_store_n(&c->phase, what, __ATOMIC_RELEASE);
}

/*
 * Waits for the test to end, at most TEST_DEADLINE_S.  Past that a thread
 * (ours or a child's) is blocked in a fault that will not be served, and
 * nothing can free it safely: unregistering would wake it into memory we
 * unmap.  So say what was going on, kill what we started, and fail the
 * binary.
 */
static void *watchdog(void *arg)
{
	struct ctx *c = arg;
	struct timespec ts;
	bool done;
	int e = 0;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += TEST_DEADLINE_S;
	pthread_mutex_lock(&c->wd_lock);
	while (!c->wd_done && e != ETIMEDOUT)
		e = pthread_cond_timedwait(&c->wd_cond, &c->wd_lock, &ts);
	done = c->wd_done;
	pthread_mutex_unlock(&c->wd_lock);
	if (done)
		return NULL;
	fprintf(stderr, "FATAL: no progress in %d s while %s: a fault is not being served%s\n",
		TEST_DEADLINE_S, __atomic_load_n(&c->phase, __ATOMIC_ACQUIRE),
		c->running && !test_pagerd_alive(&c->d) ? " (pagerd died)" : "");
	for (int i = 0; i < 2; i++)
		if (c->kids[i] > 0)
			kill(c->kids[i], SIGKILL);
	if (c->running) {
		kill(c->d.pid, SIGKILL);
		unlink(c->d.sock);
		rmdir(c->d.dir);
	}
	_exit(1);
}

static int watchdog_start(struct ctx *c)
{
	pthread_condattr_t ca;

	c->wd_done = false;
	pthread_mutex_init(&c->wd_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->wd_cond, &ca);
	pthread_condattr_destroy(&ca);
	return -pthread_create(&c->wd, NULL, watchdog, c);
}

static void watchdog_stop(struct ctx *c)
{
	pthread_mutex_lock(&c->wd_lock);
	c->wd_done = true;
	pthread_cond_signal(&c->wd_cond);
	pthread_mutex_unlock(&c->wd_lock);
	pthread_join(c->wd, NULL);
	pthread_cond_destroy(&c->wd_cond);
	pthread_mutex_destroy(&c->wd_lock);
}

/*
 * fork() with no thread of ours running: the child then has the thread
 * list its sanitizer runtime believes it has (LeakSanitizer checks the
 * child's libpager at exit; a thread that exists only in the parent makes
 * it warn of false leaks).  The parent's watchdog starts again, from zero.
 */
static pid_t fork_quiet(struct ctx *c)
{
	pid_t pid;

	watchdog_stop(c);
	pid = fork();
	if (pid != 0)
		assert_int_equal(watchdog_start(c), 0);
	return pid;
}

static int ctx_setup(void **state, bool daemon)
{
	struct ctx *c = calloc(1, sizeof(*c));

	if (!c)
		return -1;
	c->ps = (size_t)sysconf(_SC_PAGESIZE);
	c->phase = "starting";
	if (daemon && test_pagerd_start(&c->d, NULL) < 0) {
		free(c);
		return -1;
	}
	c->running = daemon;
	if (watchdog_start(c) < 0) {
		if (c->running)
			test_pagerd_stop(&c->d);
		free(c);
		return -1;
	}
	*state = c;
	return 0;
}

static int setup(void **state)
{
	return ctx_setup(state, true);
}

/* For tests that bring their own daemon (the private ones). */
static int setup_no_daemon(void **state)
{
	return ctx_setup(state, false);
}

/* Runs after a test passed, failed or skipped: whatever is still open. */
static int teardown(void **state)
{
	struct ctx *c = *state;

	phase(c, "tearing down");
	for (int i = 0; i < 2; i++)
		if (c->kids[i] > 0) {
			kill(c->kids[i], SIGKILL);
			waitpid(c->kids[i], NULL, 0);
		}
	pager_close(c->p);
	if (c->running)
		test_pagerd_stop(&c->d);
	watchdog_stop(c);
	free(c);
	return 0;
}

static void open_pager(struct ctx *c)
{
	struct pager_opts o = { .sz = sizeof(o), .socket_path = c->d.sock };

	phase(c, "opening the pager");
	assert_int_equal(pager_open(&c->p, &o), 0);
}

static struct proto_reply status(struct ctx *c)
{
	struct proto_reply st;

	assert_int_equal(test_status(c->d.sock, &st), 0);
	return st;
}

/*
 * The end of every test that ran a pagerd: our pager closed, the daemon
 * must hold no client, region or page any more and exit 0 on SIGTERM.
 */
static void finish(struct ctx *c)
{
	struct proto_reply st;

	phase(c, "closing the pager and stopping pagerd");
	pager_close(c->p);
	c->p = NULL;
	assert_int_equal(test_wait_clients(c->d.sock, 0, 10000), 0);
	st = status(c);
	assert_int_equal(st.regions, 0);
	assert_int_equal(st.mapped_bytes, 0);
	assert_int_equal(st.resident_pages, 0);
	c->running = false;
	assert_int_equal(test_pagerd_stop(&c->d), 0);
}

static uint8_t *region_new(struct ctx *c, size_t len, const char *name,
			   struct pager_region **ret)
{
	struct pager_region_opts o = { .sz = sizeof(o), .name = name };

	assert_int_equal(pager_region_create(c->p, len, &o, ret), 0);
	assert_non_null(pager_region_addr(*ret));
	assert_int_equal(pager_region_len(*ret), len);
	return pager_region_addr(*ret);
}

/* A word no two (writer, index) pairs share, never zero. */
static uint64_t pattern(uint64_t who, uint64_t idx)
{
	uint64_t x = (who + 1) * 0x9e3779b97f4a7c15ull ^
		     (idx + 1) * 0xc2b2ae3d27d4eb4full;

	return (x ^ (x >> 29)) | 1;
}

static void fill(void *mem, size_t len, uint64_t who, uint64_t idx)
{
	uint64_t *w = mem, base = pattern(who, idx);

	for (size_t i = 0; i < len / sizeof(*w); i++)
		w[i] = base + i;
}

static bool holds(const void *mem, size_t len, uint64_t who, uint64_t idx)
{
	const uint64_t *w = mem;
	uint64_t base = pattern(who, idx);

	for (size_t i = 0; i < len / sizeof(*w); i++)
		if (w[i] != base + i)
			return false;
	return true;
}

static bool is_zero(const void *mem, size_t len)
{
	const uint64_t *w = mem;

	for (size_t i = 0; i < len / sizeof(*w); i++)
		if (w[i])
			return false;
	return true;
}

/* For ranges that do not start on a word. */
static bool bytes_zero(const uint8_t *mem, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (mem[i])
			return false;
	return true;
}

/* Deterministic, so a failure reproduces. */
static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* ---- 1. many threads, same and different pages ---------------------------- */

#define NTHREADS 16

struct mt {
	uint8_t *base;
	size_t ps;
	size_t shared_pages;  /* [0, shared_pages): every thread, own slot */
	size_t own_pages;     /* then NTHREADS chunks of this many pages */
	pthread_barrier_t *bar;
	unsigned id;
	unsigned errors;      /* checks that failed, for the main thread */
	char first_error[128];
};

static void mt_error(struct mt *m, const char *what, size_t page)
{
	if (m->errors++ == 0)
		snprintf(m->first_error, sizeof(m->first_error),
			 "thread %u: %s at page %zu", m->id, what, page);
}

static uint8_t *mt_slot(struct mt *m, size_t page, unsigned who)
{
	return m->base + page * m->ps + who * (m->ps / NTHREADS);
}

static uint8_t *mt_own(struct mt *m, size_t i)
{
	return m->base + (m->shared_pages + m->id * m->own_pages + i) * m->ps;
}

static void *mt_main(void *arg)
{
	struct mt *m = arg;
	size_t slot = m->ps / NTHREADS;

	/* Same pages at once: all threads start together, even ones walking
	 * up, odd ones down, each first reading its slot (must be zero) and
	 * then writing it: 16 threads fault every page at the same time. */
	pthread_barrier_wait(m->bar);
	for (size_t i = 0; i < m->shared_pages; i++) {
		size_t page = m->id % 2 ? m->shared_pages - 1 - i : i;
		uint8_t *s = mt_slot(m, page, m->id);

		if (!is_zero(s, slot))
			mt_error(m, "shared page not zero before the write", page);
		fill(s, slot, m->id, page);
	}
	/* Different pages at once: each thread its own chunk. */
	pthread_barrier_wait(m->bar);
	for (size_t i = 0; i < m->own_pages; i++) {
		uint8_t *pg = mt_own(m, i);

		if (!is_zero(pg, m->ps))
			mt_error(m, "own page not zero before the write", i);
		fill(pg, m->ps, m->id, m->shared_pages + i);
	}
	/* Everyone has written: everything we wrote reads back. */
	pthread_barrier_wait(m->bar);
	for (size_t i = 0; i < m->shared_pages; i++)
		if (!holds(mt_slot(m, i, m->id), slot, m->id, i))
			mt_error(m, "own slot of a shared page changed", i);
	for (size_t i = 0; i < m->own_pages; i++)
		if (!holds(mt_own(m, i), m->ps, m->id, m->shared_pages + i))
			mt_error(m, "own page changed", i);
	return NULL;
}

static void threads_same_and_distinct_pages(void **state)
{
	struct ctx *c = *state;
	const size_t len = 64 * MiB, npages = len / c->ps;
	struct mt m[NTHREADS];
	pthread_t t[NTHREADS];
	pthread_barrier_t bar;
	struct pager_region *r;
	struct proto_reply s0, s1;
	uint8_t *base;

	open_pager(c);
	base = region_new(c, len, "itest-threads", &r);
	s0 = status(c);
	phase(c, "16 threads faulting the same and their own pages");
	assert_int_equal(pthread_barrier_init(&bar, NULL, NTHREADS), 0);
	for (unsigned i = 0; i < NTHREADS; i++) {
		m[i] = (struct mt){
			.base = base, .ps = c->ps, .shared_pages = npages / 4,
			.own_pages = (npages - npages / 4) / NTHREADS,
			.bar = &bar, .id = i,
		};
		assert_int_equal(pthread_create(&t[i], NULL, mt_main, &m[i]), 0);
	}
	for (unsigned i = 0; i < NTHREADS; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	pthread_barrier_destroy(&bar);
	for (unsigned i = 0; i < NTHREADS; i++)
		if (m[i].errors)
			fail_msg("%u errors, first: %s", m[i].errors, m[i].first_error);

	/* No thread wrote over another's slot of a shared page. */
	for (size_t pg = 0; pg < m[0].shared_pages; pg++)
		for (unsigned w = 0; w < NTHREADS; w++)
			if (!holds(mt_slot(&m[0], pg, w), c->ps / NTHREADS, w, pg))
				fail_msg("shared page %zu: slot of thread %u is wrong", pg, w);

	s1 = status(c);
	assert_true(s1.counters.faults_missing > s0.counters.faults_missing);
	/* Every page was touched, so every page was zero-filled by pagerd
	 * (there is no other way in), each once: resident counts pages. */
	assert_true(s1.counters.pages_zero_filled - s0.counters.pages_zero_filled >= npages);
	assert_int_equal(s1.resident_pages, npages);
	assert_int_equal(s1.regions, 1);
	print_message("%zu pages in %llu missing faults\n", npages,
		      (unsigned long long)(s1.counters.faults_missing - s0.counters.faults_missing));
	/* The region says the same through libpager (the region's counters
	 * are since it was created: all of it). */
	{
		struct pager_region_stats st = { .sz = sizeof(st) };

		assert_int_equal(pager_region_stats(r, &st), 0);
		assert_int_equal(st.pages_zero_filled,
				 s1.counters.pages_zero_filled - s0.counters.pages_zero_filled);
		assert_int_equal(st.faults_missing,
				 s1.counters.faults_missing - s0.counters.faults_missing);
		assert_int_equal(st.faults_minor, 0);
	}

	assert_int_equal(pager_region_destroy(r), 0);
	finish(c);
}

/*
 * Fault-around must keep working when many threads each stream through
 * their own part of one region.
 *
 * KNOWN BUG (performance): daemon/pagerd.h FAULT_STREAMS is 8 per region,
 * replaced LRU, so 16 threads streaming at once keep evicting each other's
 * stream before its next fault and every fault fills one page: 16 threads
 * take ~one fault per page (about 10,700 for 16,384 pages here) where 8
 * threads take ~280.  Fix: key streams by faulting thread
 * (UFFD_FEATURE_THREAD_ID, already requested: uffd_msg.arg.pagefault.feat.ptid)
 * or keep many more streams per region.
 */
struct stream_arg {
	uint8_t *base;
	size_t ps, first, n;
	pthread_barrier_t *bar;
	size_t bad; /* first page that failed, or SIZE_MAX */
};

static void *stream_main(void *arg)
{
	struct stream_arg *a = arg;

	a->bad = SIZE_MAX;
	pthread_barrier_wait(a->bar);
	for (size_t i = a->first; i < a->first + a->n; i++) {
		uint64_t *w = (uint64_t *)(a->base + i * a->ps);

		if (*w != 0 && a->bad == SIZE_MAX)
			a->bad = i;
		*w = pattern(3, i);
	}
	return NULL;
}

static void many_streams_fault_around(void **state)
{
	struct ctx *c = *state;
	const size_t len = 64 * MiB, npages = len / c->ps;
	struct stream_arg a[NTHREADS];
	pthread_t t[NTHREADS];
	pthread_barrier_t bar;
	struct pager_region *r;
	struct proto_reply s0, s1;
	uint8_t *base;

	open_pager(c);
	base = region_new(c, len, "itest-streams", &r);
	s0 = status(c);
	phase(c, "16 threads streaming through their own pages");
	assert_int_equal(pthread_barrier_init(&bar, NULL, NTHREADS), 0);
	for (unsigned i = 0; i < NTHREADS; i++) {
		a[i] = (struct stream_arg){ .base = base, .ps = c->ps, .bar = &bar,
					    .first = i * (npages / NTHREADS),
					    .n = npages / NTHREADS };
		assert_int_equal(pthread_create(&t[i], NULL, stream_main, &a[i]), 0);
	}
	for (unsigned i = 0; i < NTHREADS; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	pthread_barrier_destroy(&bar);
	s1 = status(c);
	for (unsigned i = 0; i < NTHREADS; i++)
		if (a[i].bad != SIZE_MAX)
			fail_msg("thread %u: page %zu not zero on first touch", i, a[i].bad);
	for (size_t i = 0; i < npages; i++)
		if (*(uint64_t *)(base + i * c->ps) != pattern(3, i))
			fail_msg("page %zu lost its data", i);
	print_message("%d streams: %zu pages in %llu missing faults\n", NTHREADS,
		      npages, (unsigned long long)(s1.counters.faults_missing - s0.counters.faults_missing));
	assert_true(s1.counters.faults_missing - s0.counters.faults_missing < npages / 16);
	assert_int_equal(pager_region_destroy(r), 0);
	finish(c);
}

/* ---- 2. two clients at once ---------------------------------------------- */

/* A child's whole life as a client; returns its exit code (0 = ok). */
static int client_child(const char *sock, unsigned who, size_t len,
			int ready_fd, int release_fd)
{
	struct pager_opts o = { .sz = sizeof(o), .socket_path = sock };
	size_t ps = (size_t)sysconf(_SC_PAGESIZE);
	struct pager_region *r;
	struct pager *p;
	uint8_t *base;
	char b = 1;
	int e, rc = 0;

	e = pager_open(&p, &o);
	if (e < 0) {
		fprintf(stderr, "child %u: pager_open: %s\n", who, strerror(-e));
		return 2;
	}
	e = pager_region_create(p, len, NULL, &r);
	if (e < 0) {
		fprintf(stderr, "child %u: pager_region_create: %s\n", who, strerror(-e));
		pager_close(p);
		return 3;
	}
	/* Connected: tell the parent, and let go of the pipe so that the
	 * parent sees end of file if the other child dies early. */
	if (write(ready_fd, &b, 1) != 1)
		rc = 4;
	close(ready_fd);
	base = pager_region_addr(r);
	for (size_t i = 0; i < len / ps && !rc; i++) {
		if (!is_zero(base + i * ps, ps)) {
			fprintf(stderr, "child %u: page %zu not zero\n", who, i);
			rc = 5;
		}
		fill(base + i * ps, ps, who, i);
	}
	for (size_t i = 0; i < len / ps && !rc; i++)
		if (!holds(base + i * ps, ps, who, i)) {
			fprintf(stderr, "child %u: page %zu lost its data\n", who, i);
			rc = 6;
		}
	/* Stay connected until the parent has seen both of us. */
	while (read(release_fd, &b, 1) < 0 && errno == EINTR)
		;
	e = pager_region_destroy(r);
	if (e < 0 && !rc) {
		fprintf(stderr, "child %u: pager_region_destroy: %s\n", who, strerror(-e));
		rc = 7;
	}
	pager_close(p);
	return rc;
}

static void two_clients_at_once(void **state)
{
	struct ctx *c = *state;
	const size_t len = 32 * MiB;
	int ready[2], release[2], st;
	struct proto_reply s0, s1;
	pid_t kid[2];
	char buf[2];
	size_t got = 0;

	s0 = status(c);
	assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
	assert_int_equal(pipe2(release, O_CLOEXEC), 0);
	phase(c, "two clients faulting");
	for (unsigned i = 0; i < 2; i++) {
		kid[i] = c->kids[i] = fork_quiet(c);
		assert_true(kid[i] >= 0);
		if (kid[i] == 0) {
			close(ready[0]);
			close(release[1]);
			/* exit(), not _exit(): under ASan the leak check
			 * runs on the child's libpager too. */
			exit(client_child(c->d.sock, 100 + i, len, ready[1], release[0]));
		}
	}
	close(ready[1]);
	close(release[0]);
	while (got < 2) {
		ssize_t n = read(ready[0], buf, 2 - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break; /* a child died before connecting */
		got += (size_t)n;
	}
	close(ready[0]);
	/* Both connected: pagerd serves them at the same time. */
	int peak = got == 2 ? test_wait_clients(c->d.sock, 2, 10000) : -ECHILD;
	if (peak == 0) {
		s1 = status(c);
		assert_int_equal(s1.regions, 2);
		assert_int_equal(s1.mapped_bytes, 2 * len);
	}
	close(release[1]); /* end of file: the children finish */
	for (unsigned i = 0; i < 2; i++) {
		assert_int_equal(waitpid(kid[i], &st, 0), kid[i]);
		c->kids[i] = 0;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			fail_msg("client %u: %s %d", i,
				 WIFEXITED(st) ? "exit" : "signal",
				 WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
	}
	assert_int_equal(got, 2);
	assert_int_equal(peak, 0);

	s1 = status(c);
	assert_true(s1.counters.faults_missing > s0.counters.faults_missing);
	assert_true(s1.counters.pages_zero_filled - s0.counters.pages_zero_filled >= 2 * (len / c->ps));
	finish(c); /* clients back to 0, regions gone, orderly exit */
}

/* ---- 3. faults taken inside the kernel ------------------------------------- */

static void kernel_fault_read_into_region(void **state)
{
	struct ctx *c = *state;
	const size_t ps = c->ps, len = 16 * ps, n = 2 * ps;
	struct pager_info info = { .sz = sizeof(info) };
	char path[] = "/tmp/itest_faults.XXXXXX";
	struct pager_region *r;
	struct proto_reply s0, s1;
	uint8_t *base, *dst, *want, *back;
	int fd;

	open_pager(c);
	assert_int_equal(pager_get_info(c->p, &info), 0);
	if (!(info.flags & PAGER_INFO_KERNEL_FAULTS)) {
		print_message("the uffd is user-mode only (no /dev/userfaultfd access, "
			      "CAP_SYS_PTRACE or vm.unprivileged_userfaultfd): "
			      "faults inside the kernel are not served\n");
		skip();
	}
	base = region_new(c, len, "itest-kfault", &r);
	phase(c, "preparing a file to read from");
	fd = mkostemp(path, O_CLOEXEC);
	assert_true(fd >= 0);
	unlink(path);
	want = malloc(n);
	back = calloc(1, ps);
	assert_non_null(want);
	assert_non_null(back);
	fill(want, n, 7, 0);
	assert_int_equal(pwrite(fd, want, n, 0), (ssize_t)n);

	/* copy_to_user into pages never touched: MISSING faults taken in
	 * the kernel, which must wait for pagerd rather than fail with
	 * EFAULT.  From 100 bytes into page 4 to 100 bytes into page 6:
	 * three untouched pages, no page boundary at either end. */
	dst = base + 4 * ps + 100;
	s0 = status(c);
	phase(c, "read(2) into untouched region pages");
	assert_int_equal(pread(fd, dst, n, 0), (ssize_t)n);
	s1 = status(c);
	assert_memory_equal(dst, want, n);
	assert_true(bytes_zero(base + 4 * ps, 100));      /* before the read */
	assert_true(bytes_zero(dst + n, ps - 100));       /* after it */
	assert_true(s1.counters.faults_missing > s0.counters.faults_missing);

	/* copy_from_user out of an untouched page: a read fault in the
	 * kernel; the file gets the zeros the page holds. */
	phase(c, "write(2) from an untouched region page");
	assert_int_equal(pwrite(fd, base + 10 * ps, ps, (off_t)n), (ssize_t)ps);
	assert_int_equal(pread(fd, back, ps, (off_t)n), (ssize_t)ps);
	assert_true(is_zero(back, ps));
	assert_true(status(c).counters.faults_missing > s1.counters.faults_missing);

	free(want);
	free(back);
	close(fd);
	assert_int_equal(pager_region_destroy(r), 0);
	finish(c);
}

/* ---- 4. adaptive fault-around ------------------------------------------------ */

static void fault_around_adapts(void **state)
{
	struct ctx *c = *state;
	const size_t ps = c->ps, nseq = 16384, k = 2000;
	const size_t rlen = 1024 * MiB, rpages = rlen / ps;
	struct pager_region *seq, *rnd;
	struct proto_reply s0, s1, s2, s3;
	uint8_t *base, *seen;
	size_t *order, n = 0;
	uint64_t seed = 0x2545f4914f6cdd1dull;

	open_pager(c);

	/* Sequential first touches: the window grows, faults are few. */
	base = region_new(c, nseq * ps, "itest-seq", &seq);
	s0 = status(c);
	phase(c, "sequential first touches");
	for (size_t i = 0; i < nseq; i++) {
		uint64_t *w = (uint64_t *)(base + i * ps);

		if (*w != 0)
			fail_msg("sequential page %zu not zero", i);
		*w = pattern(1, i);
	}
	s1 = status(c);
	for (size_t i = 0; i < nseq; i++)
		if (*(uint64_t *)(base + i * ps) != pattern(1, i))
			fail_msg("sequential page %zu lost its data", i);
	print_message("sequential: %zu pages in %llu missing faults\n", nseq,
		      (unsigned long long)(s1.counters.faults_missing - s0.counters.faults_missing));
	assert_true(s1.counters.faults_missing > s0.counters.faults_missing);
	assert_true(s1.counters.faults_missing - s0.counters.faults_missing < nseq / 16);
	assert_int_equal(s1.resident_pages - s0.resident_pages, nseq);

	/* Random distinct pages of a fresh 1 GiB region: the window never
	 * grows, so memory follows what was touched. */
	base = region_new(c, rlen, "itest-random", &rnd);
	seen = calloc(rpages, 1);
	order = calloc(k, sizeof(*order));
	assert_non_null(seen);
	assert_non_null(order);
	while (n < k) {
		size_t pg = (size_t)(xorshift(&seed) % rpages);

		if (!seen[pg]) {
			seen[pg] = 1;
			order[n++] = pg;
		}
	}
	s2 = status(c);
	phase(c, "random first touches");
	for (size_t i = 0; i < k; i++) {
		uint8_t *pg = base + order[i] * ps;

		if (!is_zero(pg, ps))
			fail_msg("random page %zu not zero", order[i]);
		*(uint64_t *)pg = pattern(2, order[i]);
	}
	s3 = status(c);
	for (size_t i = 0; i < k; i++)
		if (*(uint64_t *)(base + order[i] * ps) != pattern(2, order[i]))
			fail_msg("random page %zu lost its data", order[i]);
	print_message("random: %zu pages, %llu resident, %llu missing faults\n", k,
		      (unsigned long long)(s3.resident_pages - s2.resident_pages),
		      (unsigned long long)(s3.counters.faults_missing - s2.counters.faults_missing));
	assert_true(s3.resident_pages - s2.resident_pages >= k);
	assert_true(s3.resident_pages - s2.resident_pages <= 2 * k + 64);

	free(seen);
	free(order);
	assert_int_equal(pager_region_destroy(rnd), 0);
	assert_int_equal(pager_region_destroy(seq), 0);
	finish(c);
}

/* ---- 5. MADV_DONTNEED and MADV_REMOVE ------------------------------------------ */

static void write_pages(uint8_t *base, size_t ps, size_t first, size_t n,
			uint64_t who)
{
	for (size_t i = first; i < first + n; i++)
		fill(base + i * ps, ps, who, i);
}

/* Returns the first page in [first, first+n) that does not hold who's
 * pattern, or first+n. */
static size_t check_pages(const uint8_t *base, size_t ps, size_t first,
			  size_t n, uint64_t who)
{
	for (size_t i = first; i < first + n; i++)
		if (!holds(base + i * ps, ps, who, i))
			return i;
	return first + n;
}

static size_t check_zero_pages(const uint8_t *base, size_t ps, size_t first,
			       size_t n)
{
	for (size_t i = first; i < first + n; i++)
		if (!is_zero(base + i * ps, ps))
			return i;
	return first + n;
}

static void dontneed_keeps_data_remove_zeroes(void **state)
{
	struct ctx *c = *state;
	const size_t ps = c->ps, npages = 1024;
	struct pager_region *r;
	struct proto_reply s0, s1, s2, s3, s4;
	uint8_t *base;

	open_pager(c);
	base = region_new(c, npages * ps, "itest-madvise", &r);
	phase(c, "touching pages before and after MADV_DONTNEED");

	/* DONTNEED drops our PTEs; the page cache keeps the data, and the
	 * kernel maps it again by itself: pagerd hears of no fault (this
	 * is what makes the Clock hand's reference samples cheap). */
	write_pages(base, ps, 0, 64, 3);
	assert_int_equal(check_pages(base, ps, 0, 64, 3), 64);
	s0 = status(c);
	assert_int_equal(madvise(base, 64 * ps, MADV_DONTNEED), 0);
	assert_int_equal(check_pages(base, ps, 0, 64, 3), 64);
	s1 = status(c);
	print_message("DONTNEED of 64 pages: %llu faults reached pagerd\n",
		      (unsigned long long)(s1.counters.faults_missing - s0.counters.faults_missing +
					   s1.counters.faults_wp - s0.counters.faults_wp));
	assert_int_equal(s1.counters.faults_wp, s0.counters.faults_wp);
	assert_int_equal(s1.counters.faults_missing, s0.counters.faults_missing);
	assert_int_equal(s1.counters.pages_zero_filled, s0.counters.pages_zero_filled);
	assert_int_equal(s1.resident_pages, s0.resident_pages);

	/* REMOVE punches the pages out of the memfd: they read as zeros
	 * again, filled by pagerd, and the neighbours keep their data. */
	phase(c, "touching pages before and after MADV_REMOVE");
	write_pages(base, ps, 500, 100, 4);
	s2 = status(c);
	assert_int_equal(madvise(base + 512 * ps, 64 * ps, MADV_REMOVE), 0);
	s3 = status(c);
	assert_int_equal(s3.resident_pages, s2.resident_pages - 64);
	assert_int_equal(check_zero_pages(base, ps, 512, 64), 512 + 64);
	s4 = status(c);
	assert_true(s4.counters.faults_missing > s3.counters.faults_missing);
	assert_true(s4.counters.pages_zero_filled - s3.counters.pages_zero_filled >= 64);
	assert_int_equal(check_pages(base, ps, 500, 12, 4), 512);
	assert_int_equal(check_pages(base, ps, 576, 24, 4), 600);
	assert_int_equal(check_pages(base, ps, 0, 64, 3), 64);
	/* And the removed range takes new data. */
	write_pages(base, ps, 512, 64, 5);
	assert_int_equal(check_pages(base, ps, 512, 64, 5), 512 + 64);

	assert_int_equal(pager_region_destroy(r), 0);
	finish(c);
}

/*
 * After MADV_DONTNEED the pages are still in the memfd's page cache, so
 * they are still resident; pagerd counts them out.
 *
 * (pagerd asks for no REMOVE events, so DONTNEED, as done by libpager's
 * agent for every reference sample, never reaches it.)
 */
static void dontneed_keeps_resident_count(void **state)
{
	struct ctx *c = *state;
	const size_t ps = c->ps, npages = 64;
	struct pager_region *r;
	struct proto_reply s0, s1;
	uint8_t *base;

	open_pager(c);
	base = region_new(c, npages * ps, "itest-dontneed", &r);
	phase(c, "touching pages before and after MADV_DONTNEED");
	write_pages(base, ps, 0, npages, 6);
	s0 = status(c);
	assert_int_equal(s0.resident_pages, npages);
	assert_int_equal(madvise(base, npages * ps, MADV_DONTNEED), 0);
	s1 = status(c);
	assert_int_equal(s1.resident_pages, npages);
	assert_int_equal(check_pages(base, ps, 0, npages, 6), npages);
	assert_int_equal(pager_region_destroy(r), 0);
	finish(c);
}

/* ---- 6. mremap of a whole region ---------------------------------------------- */

/*
 * Pages first, first+stride, ... (n of them).  A wide stride keeps them
 * apart for fault-around (which also counts a fault a little past a
 * stream's end as sequential), so that each is a first touch of its own.
 */
struct strided {
	size_t first, stride, n;
	uint64_t who;
};

/* Returns the first page of s that does not hold its pattern (or, with
 * zero, is not zero), or SIZE_MAX. */
static size_t check_strided(const uint8_t *base, size_t ps,
			    const struct strided *s, bool zero)
{
	for (size_t i = 0; i < s->n; i++) {
		size_t pg = s->first + i * s->stride;

		if (zero ? !is_zero(base + pg * ps, ps)
			 : !holds(base + pg * ps, ps, s->who, pg))
			return pg;
	}
	return SIZE_MAX;
}

/* Writes the pages of s, which must read as zeros first.  Returns the
 * first page that did not, or SIZE_MAX. */
static size_t first_touch_strided(uint8_t *base, size_t ps,
				  const struct strided *s)
{
	size_t pg = check_strided(base, ps, s, true);

	if (pg != SIZE_MAX)
		return pg;
	for (size_t i = 0; i < s->n; i++) {
		pg = s->first + i * s->stride;
		fill(base + pg * ps, ps, s->who, pg);
	}
	return check_strided(base, ps, s, false);
}

static void mremap_whole_region_followed(void **state)
{
	struct ctx *c = *state;
	const size_t ps = c->ps, npages = 1024, len = npages * ps;
	const struct strided head = { 0, 1, 4, 8 }, there = { 256, 64, 12, 9 },
			     back = { 288, 64, 11, 10 };
	struct pager_region *r;
	struct proto_reply s0, s1, s2;
	uint8_t *old, *resv, *moved;

	open_pager(c);
	old = region_new(c, len, "itest-mremap", &r);
	phase(c, "first touches before mremap");
	write_pages(old, ps, head.first, head.n, head.who);
	s0 = status(c);

	resv = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		    -1, 0);
	assert_true(resv != MAP_FAILED);
	moved = mremap(old, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, resv);
	assert_ptr_equal(moved, resv);
	/* Hold the old range, or the next mmap (say, a thread stack) could
	 * land there and our move back would unmap it. */
	assert_ptr_equal(mmap(old, len, PROT_NONE,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE |
				      MAP_FIXED_NOREPLACE, -1, 0), old);

	/* At the new address: the old data is there, and first touches of
	 * untouched pages are served there. */
	phase(c, "first touches after mremap");
	assert_int_equal(check_strided(moved, ps, &head, false), SIZE_MAX);
	assert_int_equal(first_touch_strided(moved, ps, &there), SIZE_MAX);
	s1 = status(c);
	/* Served by pagerd at the new address, not by dropping us for a
	 * "stray" fault (our faults would then wait forever). */
	assert_int_equal(s1.clients, 1);
	assert_true(s1.counters.faults_missing > s0.counters.faults_missing);
	assert_true(s1.resident_pages - s0.resident_pages >= there.n);

	/* And back where libpager has it, so that destroy finds it. */
	assert_ptr_equal(mremap(moved, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, old), old);
	phase(c, "first touches after mremap back");
	assert_int_equal(check_strided(old, ps, &head, false), SIZE_MAX);
	assert_int_equal(check_strided(old, ps, &there, false), SIZE_MAX);
	assert_int_equal(first_touch_strided(old, ps, &back), SIZE_MAX);
	s2 = status(c);
	assert_int_equal(s2.clients, 1);
	assert_true(s2.counters.faults_missing > s1.counters.faults_missing);
	assert_true(s2.resident_pages - s1.resident_pages >= back.n);

	assert_int_equal(pager_region_destroy(r), 0);
	finish(c);
}

/* ---- 7. the private daemon ------------------------------------------------------ */

/* The one child process of ours, or -1 if there is not exactly one. */
static pid_t only_child(void)
{
	char path[64], buf[256];
	long pid = -1;
	ssize_t n;
	int fd, count = 0;

	snprintf(path, sizeof(path), "/proc/self/task/%d/children", (int)getpid());
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	for (char *s = buf, *end; *s; s = end) {
		long v = strtol(s, &end, 10);

		if (end == s)
			break;
		pid = v;
		count++;
	}
	return count == 1 ? (pid_t)pid : -1;
}

static bool system_daemon_listens(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	bool ok;

	if (s < 0)
		return false;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", PAGER_SYSTEM_SOCKET);
	ok = connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(s);
	return ok;
}

#define PRIV_FORCE     (1u << 0) /* PAGER_OPEN_FORCE_PRIVATE */
#define PRIV_CHECK_PID (1u << 1) /* pager_get_info names the daemon */

/* A child's whole life with a private daemon; returns its exit code. */
static int private_child(unsigned how)
{
	struct pager_opts o = { .sz = sizeof(o), .flags = PAGER_OPEN_FORCE_PRIVATE };
	struct pager_info info = { .sz = sizeof(info) };
	const size_t len = 8 * MiB, ps = (size_t)sysconf(_SC_PAGESIZE);
	struct pager_region *r;
	struct pager *p;
	uint8_t *base;
	pid_t daemon;
	int e, rc = 0;

	unsetenv("PAGER_SOCKET");
	if (!getenv("PAGERD") || !*getenv("PAGERD"))
		setenv("PAGERD", "build/pagerd", 1);
	if (!(how & PRIV_FORCE) && system_daemon_listens()) {
		fprintf(stderr, "a system pagerd listens on %s: pager_open(NULL) would use it\n",
			PAGER_SYSTEM_SOCKET);
		return CHILD_SKIP;
	}
	e = pager_open(&p, how & PRIV_FORCE ? &o : NULL);
	if (e < 0) {
		fprintf(stderr, "pager_open: %s\n", strerror(-e));
		return 2;
	}
	daemon = only_child();
	e = pager_get_info(p, &info);
	if (e < 0 || !(info.flags & PAGER_INFO_PRIVATE) || info.daemon_pid <= 0) {
		fprintf(stderr, "pager_get_info: %d, flags %#x, daemon pid %d\n", e,
			info.flags, (int)info.daemon_pid);
		rc = 3;
	}
	if (daemon <= 0) {
		fprintf(stderr, "no private pagerd among our children\n");
		rc = 4;
	}
	if ((how & PRIV_CHECK_PID) && info.daemon_pid != daemon) {
		fprintf(stderr, "pager_get_info says daemon pid %d, the daemon is %d (we are %d)\n",
			(int)info.daemon_pid, (int)daemon, (int)getpid());
		rc = 5;
	}
	e = pager_region_create(p, len, NULL, &r);
	if (e < 0) {
		fprintf(stderr, "pager_region_create: %s\n", strerror(-e));
		pager_close(p);
		return 6;
	}
	base = pager_region_addr(r);
	if (check_zero_pages(base, ps, 0, len / ps) != len / ps) {
		fprintf(stderr, "region not zero on first touch\n");
		rc = 7;
	}
	write_pages(base, ps, 0, len / ps, 11);
	if (check_pages(base, ps, 0, len / ps, 11) != len / ps) {
		fprintf(stderr, "region lost its data\n");
		rc = 8;
	}
	/* Closing with the region still there: pager_close destroys it,
	 * then the daemon sees end of stream, exits, and is reaped. */
	pager_close(p);
	if (daemon > 0 && (kill(daemon, 0) == 0 || errno != ESRCH)) {
		fprintf(stderr, "private pagerd %d still exists after pager_close\n",
			(int)daemon);
		rc = 9;
	}
	if ((how & PRIV_CHECK_PID) && info.daemon_pid > 0 &&
	    (kill(info.daemon_pid, 0) == 0 || errno != ESRCH)) {
		fprintf(stderr, "pid %d from pager_get_info still exists after pager_close\n",
			(int)info.daemon_pid);
		rc = 10;
	}
	return rc;
}

static void run_private(struct ctx *c, unsigned how)
{
	pid_t kid;
	int st;

	/* A child, so that its environment, its private pagerd and the
	 * reaping of it are its own. */
	phase(c, "a child faulting on its private pagerd");
	kid = c->kids[0] = fork_quiet(c);
	assert_true(kid >= 0);
	if (kid == 0)
		exit(private_child(how));
	assert_int_equal(waitpid(kid, &st, 0), kid);
	c->kids[0] = 0;
	if (WIFEXITED(st) && WEXITSTATUS(st) == CHILD_SKIP) {
		print_message("a system pagerd listens on %s\n", PAGER_SYSTEM_SOCKET);
		skip();
	}
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail_msg("child: %s %d", WIFEXITED(st) ? "exit" : "signal",
			 WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

static void private_daemon_default(void **state)
{
	run_private(*state, 0);
}

static void private_daemon_forced(void **state)
{
	run_private(*state, PRIV_FORCE);
}

/*
 * pager_get_info().daemon_pid must name the private daemon.
 *
 * KNOWN BUG: libpager/pager.c pager_open() takes daemon_pid from
 * SO_PEERCRED, which on a socketpair(2) names the process that created the
 * pair (us), not the pagerd we spawned.  Fix: after getsockopt, when
 * p->private_pid > 0, set p->daemon_pid = p->private_pid.
 */
static void private_daemon_pid(void **state)
{
	run_private(*state, PRIV_FORCE | PRIV_CHECK_PID);
}

/*
 * The harness starts pagerd as systemd does: the test binds the listening
 * socket and passes it (LISTEN_FDS), so SO_PEERCRED of a connection names
 * the test, as it names pid 1 under pagerd.socket.  pager_get_info() must
 * name the pagerd that serves us.
 */
static void activated_daemon_pid(void **state)
{
	struct ctx *c = *state;
	struct pager_info info = { .sz = sizeof(info) };

	open_pager(c);
	assert_int_equal(pager_get_info(c->p, &info), 0);
	if (info.daemon_pid != c->d.pid)
		fail_msg("daemon_pid %d: pagerd is %d (the socket's maker, us: %d)",
			 (int)info.daemon_pid, (int)c->d.pid, (int)getpid());
	assert_false(info.flags & PAGER_INFO_PRIVATE);
	finish(c);
}

/*
 * Keeps fd 3 taken for the life of the binary.
 *
 * HARNESS BUG (tests/harness.c, test_pagerd_start): the listening socket is
 * created SOCK_CLOEXEC and moved to fd 3 with dup2(); when socket() itself
 * returned 3 (the lowest free fd in a process with only 0-2 open, as here)
 * dup2(3, 3) is a no-op that leaves FD_CLOEXEC set, execv() closes the
 * socket, and pagerd starts with nothing to listen on (connect gets
 * ECONNREFUSED).  Fix: in the child, `if (s == 3) fcntl(3, F_SETFD, 0);
 * else if (dup2(s, 3) < 0) _exit(127);`.  This work-around is harmless
 * once that is fixed.
 */
static void hold_fd3(void)
{
	int fd;

	if (fcntl(3, F_GETFD) >= 0)
		return;
	fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (fd >= 0 && fd != 3) {
		dup3(fd, 3, O_CLOEXEC);
		close(fd);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(threads_same_and_distinct_pages, setup, teardown),
		cmocka_unit_test_setup_teardown(many_streams_fault_around, setup, teardown),
		cmocka_unit_test_setup_teardown(two_clients_at_once, setup, teardown),
		cmocka_unit_test_setup_teardown(kernel_fault_read_into_region, setup, teardown),
		cmocka_unit_test_setup_teardown(fault_around_adapts, setup, teardown),
		cmocka_unit_test_setup_teardown(dontneed_keeps_data_remove_zeroes, setup, teardown),
		cmocka_unit_test_setup_teardown(dontneed_keeps_resident_count, setup, teardown),
		cmocka_unit_test_setup_teardown(mremap_whole_region_followed, setup, teardown),
		cmocka_unit_test_setup_teardown(private_daemon_default, setup_no_daemon, teardown),
		cmocka_unit_test_setup_teardown(private_daemon_forced, setup_no_daemon, teardown),
		cmocka_unit_test_setup_teardown(private_daemon_pid, setup_no_daemon, teardown),
		cmocka_unit_test_setup_teardown(activated_daemon_pid, setup, teardown),
	};

	hold_fd3();
	/* ITEST_FILTER=mremap* runs the matching tests only. */
	if (getenv("ITEST_FILTER"))
		cmocka_set_test_filter(getenv("ITEST_FILTER"));
	return cmocka_run_group_tests_name("itest_faults", tests, NULL, NULL);
}
