/* SPDX-License-Identifier: MIT */
/*
 * A libpager client for tests/itest_systemd.sh, run inside the container
 * against the system pagerd (the installed units, a real systemd).  Never
 * starts a private daemon: with no system pagerd it fails.
 *
 *   svc_client pid    prints daemon_pid=N (pager_get_info)
 *   svc_client hot    a region four times its limit, a hot set read between
 *                     random cold reads (as itest_swap clock_keeps_hot_set):
 *                     prints hot_swapins=N, the swap-ins beyond one per cold
 *                     read.  Clock, seeing references, keeps the hot set
 *                     (N near 0); blind, it does as FIFO does (N ~ 1,500+).
 *   svc_client hold   a 64 MiB region limited to 8 MiB, written in full, so
 *                     most of it is in swap; prints "ready swapped=N", then
 *                     obeys one command a line on stdin:
 *                       v  reads every byte back and asks for its stats:
 *                          "verified errors=N swapped=N daemon_pid=N"
 *                       w  writes every page again (a new generation)
 *                       q  closes the pager and exits 0
 *
 * Exit status: 0 done, 1 a pager call failed (the message says which).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pager.h"

#define MiB (1ull << 20)

static size_t ps;

static void die(const char *what, int e)
{
	fprintf(stderr, "svc_client: %s: %s\n", what, strerror(-e));
	exit(1);
}

static struct pager *open_pager(void)
{
	struct pager_opts o = { .sz = sizeof(o), .flags = PAGER_OPEN_NO_PRIVATE };
	struct pager *p;
	int e = pager_open(&p, &o);

	if (e < 0)
		die("pager_open", e);
	return p;
}

static struct pager_region *region(struct pager *p, uint64_t len, uint64_t limit)
{
	struct pager_region_opts o = { .sz = sizeof(o), .memory_limit = limit,
				       .name = "svc-client" };
	struct pager_region *r;
	int e = pager_region_create(p, len, &o, &r);

	if (e < 0)
		die("pager_region_create", e);
	return r;
}

static uint64_t word(uint64_t page, uint64_t gen, size_t i)
{
	return page << 24 ^ gen << 16 ^ i;
}

static void fill(uint8_t *b, uint64_t page, uint64_t gen)
{
	uint64_t *w = (uint64_t *)(b + page * ps);

	for (size_t i = 0; i < ps / 8; i++)
		w[i] = word(page, gen, i);
}

static int check(const uint8_t *b, uint64_t page, uint64_t gen)
{
	const uint64_t *w = (const uint64_t *)(b + page * ps);

	for (size_t i = 0; i < ps / 8; i++)
		if (w[i] != word(page, gen, i))
			return 0;
	return 1;
}

static pid_t daemon_pid(struct pager *p)
{
	struct pager_info info = { .sz = sizeof(info) };
	int e = pager_get_info(p, &info);

	if (e < 0)
		die("pager_get_info", e);
	return info.daemon_pid;
}

static struct pager_region_stats stats(struct pager_region *r)
{
	struct pager_region_stats st = { .sz = sizeof(st) };
	int e = pager_region_stats(r, &st);

	if (e < 0)
		die("pager_region_stats", e);
	return st;
}

static int cmd_pid(void)
{
	struct pager *p = open_pager();

	printf("daemon_pid=%d\n", (int)daemon_pid(p));
	pager_close(p);
	return 0;
}

static int cmd_hot(void)
{
	const uint64_t n = 32 * MiB / ps, hot_every = 16;
	uint64_t *order = malloc(n * sizeof(*order)), ncold = 0, hot = 0, bad = 0;
	struct pager *p = open_pager();
	struct pager_region *r = region(p, n * ps, 8 * MiB);
	uint8_t *b = pager_region_addr(r);
	struct pager_region_stats s0 = { 0 }, s1;
	unsigned seed = 7;

	if (!order)
		die("malloc", -ENOMEM);
	for (uint64_t i = 0; i < n; i++)
		fill(b, i, 1);
	for (uint64_t i = 0; i < n; i++)
		if (i % hot_every)
			order[ncold++] = i;
	for (int pass = 0; pass < 2; pass++) {
		for (uint64_t i = ncold - 1; i > 0; i--) {
			uint64_t j = (uint64_t)rand_r(&seed) % (i + 1), t = order[i];

			order[i] = order[j];
			order[j] = t;
		}
		if (pass == 1)
			s0 = stats(r);
		for (uint64_t i = 0; i < ncold; i++) {
			bad += !check(b, order[i], 1);
			if (i % 2 == 0) {
				uint64_t h = (hot++ % (n / hot_every)) * hot_every;

				bad += !check(b, h, 1);
			}
		}
	}
	s1 = stats(r);
	printf("hot_swapins=%" PRId64 " cold=%" PRIu64 " swapins=%" PRIu64 " errors=%" PRIu64 "\n",
	       (int64_t)(s1.swap_ins - s0.swap_ins) - (int64_t)ncold, ncold,
	       s1.swap_ins - s0.swap_ins, bad);
	pager_close(p);
	free(order);
	return bad ? 1 : 0;
}

static int cmd_hold(void)
{
	const uint64_t n = 64 * MiB / ps;
	struct pager *p = open_pager();
	struct pager_region *r = region(p, n * ps, 8 * MiB);
	uint8_t *b = pager_region_addr(r);
	uint64_t gen = 1;
	char line[16];

	for (uint64_t i = 0; i < n; i++)
		fill(b, i, gen);
	printf("ready swapped=%" PRIu64 "\n", stats(r).swapped);
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin)) {
		uint64_t bad = 0;

		switch (line[0]) {
		case 'v':
			for (uint64_t i = 0; i < n; i++)
				bad += !check(b, i, gen);
			printf("verified errors=%" PRIu64 " swapped=%" PRIu64 " daemon_pid=%d\n",
			       bad, stats(r).swapped, (int)daemon_pid(p));
			break;
		case 'w':
			gen++;
			for (uint64_t i = 0; i < n; i++)
				fill(b, i, gen);
			printf("written gen=%" PRIu64 "\n", gen);
			break;
		case 'q':
			pager_close(p);
			printf("closed\n");
			return 0;
		default:
			continue;
		}
		fflush(stdout);
	}
	pager_close(p);
	return 0;
}

int main(int argc, char **argv)
{
	ps = (size_t)sysconf(_SC_PAGESIZE);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 2 && strcmp(argv[1], "pid") == 0)
		return cmd_pid();
	if (argc == 2 && strcmp(argv[1], "hot") == 0)
		return cmd_hot();
	if (argc == 2 && strcmp(argv[1], "hold") == 0)
		return cmd_hold();
	fprintf(stderr, "usage: svc_client pid|hot|hold\n");
	return 2;
}
