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
#include <inttypes.h>
#include <pager.h>
#include <signal.h>
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

static struct pager *connect_to(const char *sock)
{
	struct pager_opts o = { .sz = sizeof(o), .socket_path = sock,
				.flags = PAGER_OPEN_NO_PRIVATE };
	struct pager *p;

	assert_int_equal(pager_open(&p, &o), 0);
	return p;
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
		struct pager *p = connect_to(d.sock);
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
	atexit(stop_cluster);
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
