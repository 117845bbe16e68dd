/* SPDX-License-Identifier: MIT */
/*
 * The demo `make demo` runs: an application whose memory lives in a
 * libpager region served by pagerd.  It fills a region sequentially, then
 * touches pages at random in a second one, verifies every byte, and prints
 * what happened: which daemon served it and how its faults compared to the
 * pages touched.
 *
 *   demo [SIZE_MIB]
 */
#include <pager.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int e)
{
	fprintf(stderr, "demo: %s: %s\n", what, strerror(-e));
	exit(1);
}

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 0) : 512;
	size_t len = mib << 20, ps = 4096, npages = len / ps;
	struct pager_info info = { .sz = sizeof(info) };
	struct pager_region_opts ro = { .sz = sizeof(ro) };
	struct pager_region *seq, *rnd;
	struct pager *p;
	uint64_t bad = 0;
	double t;
	int e;

	printf("demo: opening a pager (no daemon configured: libpager starts a private pagerd)\n");
	if ((e = pager_open(&p, NULL)) < 0)
		die("pager_open", e);
	pager_get_info(p, &info);
	printf("demo: served by pagerd pid %d (%s daemon), kernel-mode faults %s\n",
	       info.daemon_pid, info.flags & PAGER_INFO_PRIVATE ? "private" : "shared",
	       info.flags & PAGER_INFO_KERNEL_FAULTS ? "trapped" : "NOT trapped");

	ro.name = "demo-sequential";
	if ((e = pager_region_create(p, len, &ro, &seq)) < 0)
		die("pager_region_create", e);
	ro.name = "demo-random";
	if ((e = pager_region_create(p, len, &ro, &rnd)) < 0)
		die("pager_region_create", e);

	uint64_t *a = pager_region_addr(seq);
	t = now();
	for (size_t i = 0; i < npages; i++)
		a[i * ps / 8] = i * 2654435761u;
	t = now() - t;
	printf("demo: wrote %zu MiB sequentially: %.0f ns/page (fault-around batches first touches)\n",
	       mib, t * 1e9 / (double)npages);

	/* Touch an eighth of the pages of the second region at random. */
	uint64_t *b = pager_region_addr(rnd), x = 88172645463325252ull;
	size_t touches = npages / 8;
	t = now();
	for (size_t i = 0; i < touches; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		size_t pg = (size_t)(x % npages);
		b[pg * ps / 8] = pg + 1;
	}
	t = now() - t;
	printf("demo: touched %zu random pages: %.0f ns/page\n", touches,
	       t * 1e9 / (double)touches);

	for (size_t i = 0; i < npages; i++) {
		if (a[i * ps / 8] != i * 2654435761u || a[i * ps / 8 + 1] != 0)
			bad++;
		if (b[i * ps / 8] != 0 && b[i * ps / 8] != i + 1)
			bad++;
	}
	printf("demo: verified every page: %s\n", bad ? "CORRUPT" : "all correct");
	pager_region_destroy(seq);
	pager_region_destroy(rnd);
	pager_close(p);
	return bad ? 1 : 0;
}
