/* SPDX-License-Identifier: MIT */
/*
 * The demo `make demo` runs: an application that uses four times the
 * memory it may keep resident.  Its data lives in a libpager region served
 * by a private pagerd with a memory limit; pagerd evicts to its swap file
 * and brings pages back on demand.  The demo writes every page, reads them
 * back in order, then at random, rewrites some, takes a live snapshot,
 * verifies every byte, and prints what happened — pagerd's own counts of
 * what it evicted and read back, and how resident memory stayed under the
 * limit (measured with mincore, not taken from pagerd).
 *
 *   demo [SIZE_MIB [LIMIT_MIB]]          default: 1024 MiB under 256 MiB
 */
#include <pager.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static size_t ps;

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

/* Pages of [addr, addr+len) in memory now (the page cache of the memfd). */
static size_t resident(void *addr, size_t len)
{
	static unsigned char *vec;
	size_t n = len / ps, k = 0;

	if (!vec)
		vec = malloc(n);
	if (!vec || mincore(addr, len, vec) < 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		k += vec[i] & 1;
	return k;
}

static uint64_t stamp(size_t page, unsigned gen)
{
	return (uint64_t)page * 2654435761u + gen;
}

static void report(struct pager_region *r, const char *what, double t, size_t n,
		   size_t peak)
{
	struct pager_region_stats st = { .sz = sizeof(st) };

	pager_region_stats(r, &st);
	printf("  %-22s %7.2f s %7.1f us/page  resident %4zu MiB (peak %4zu)  in swap %4llu MiB\n",
	       what, t, t * 1e6 / (double)n, resident(pager_region_addr(r), pager_region_len(r)) * ps >> 20,
	       peak * ps >> 20, (unsigned long long)(st.swapped * ps >> 20));
}

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 0) : 1024;
	size_t limit_mib = argc > 2 ? strtoul(argv[2], NULL, 0) : mib / 4;
	struct pager_info info = { .sz = sizeof(info) };
	struct pager_opts o = { .sz = sizeof(o) };
	struct pager_region_opts ro = { .sz = sizeof(ro), .name = "demo" };
	struct pager_region_stats st = { .sz = sizeof(st) };
	struct pager_snapshot_progress pr = { .sz = sizeof(pr) };
	struct pager_region *r;
	struct pager *p;
	size_t len, npages, peak = 0, bad = 0;
	unsigned *gen;
	uint64_t *m, x = 88172645463325252ull;
	char img[64];
	double t;
	int e;

	ps = (size_t)sysconf(_SC_PAGESIZE);
	len = mib << 20;
	npages = len / ps;
	o.memory_limit = (uint64_t)limit_mib << 20;
	gen = calloc(npages, sizeof(*gen));
	if (!gen || !mib || !limit_mib)
		die("arguments", -22);

	printf("demo: %zu MiB of data, allowed %zu MiB resident\n", mib, limit_mib);
	if ((e = pager_open(&p, &o)) < 0)
		die("pager_open", e);
	pager_get_info(p, &info);
	printf("demo: served by pagerd pid %d (%s daemon, its own swap file), kernel-mode faults %s\n",
	       info.daemon_pid, info.flags & PAGER_INFO_PRIVATE ? "private" : "shared",
	       info.flags & PAGER_INFO_KERNEL_FAULTS ? "trapped" : "NOT trapped");
	if ((e = pager_region_create(p, len, &ro, &r)) < 0)
		die("pager_region_create", e);
	m = pager_region_addr(r);

	t = now();
	for (size_t i = 0; i < npages; i++) {
		m[i * ps / 8] = stamp(i, 0);
		m[i * ps / 8 + ps / 16] = ~stamp(i, 0);
		if (!(i % 4096)) {
			size_t k = resident(m, len);
			peak = k > peak ? k : peak;
		}
	}
	report(r, "write every page", now() - t, npages, peak);

	t = now();
	for (size_t i = 0; i < npages; i++)
		bad += m[i * ps / 8] != stamp(i, gen[i]);
	report(r, "read back in order", now() - t, npages, peak);

	t = now();
	for (size_t k = 0; k < npages / 16; k++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		size_t i = (size_t)(x % npages);
		bad += m[i * ps / 8] != stamp(i, gen[i]);
	}
	report(r, "read at random", now() - t, npages / 16, peak);

	t = now();
	for (size_t k = 0; k < npages / 16; k++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		size_t i = (size_t)(x % npages);
		bad += m[i * ps / 8] != stamp(i, gen[i]);
		m[i * ps / 8] = stamp(i, ++gen[i]);
	}
	report(r, "rewrite at random", now() - t, npages / 16, peak);

	snprintf(img, sizeof(img), "/var/tmp/pagerd-demo.%d.img", (int)getpid());
	t = now();
	e = pager_region_snapshot(r, img, NULL);
	if (e == 0)
		pager_region_snapshot_poll(r, &pr);
	printf("  %-22s %7.2f s  %llu pages copied, writers paused %.2f ms%s\n", "snapshot",
	       now() - t, (unsigned long long)pr.pages_total, (double)pr.pause_ns / 1e6,
	       e ? " (failed)" : "");
	unlink(img);
	strcat(img, ".meta");
	unlink(img);

	for (size_t i = 0; i < npages; i++) {
		bad += m[i * ps / 8] != stamp(i, gen[i]);
		bad += m[i * ps / 8 + ps / 16] != ~stamp(i, 0);
	}
	pager_region_stats(r, &st);
	printf("demo: pagerd wrote %llu pages to swap and read %llu back (%llu ahead of use, %llu of those used);\n"
	       "      evicted %llu dirty, %llu clean (no I/O), %llu zero pages; %llu faults\n",
	       (unsigned long long)st.swap_outs, (unsigned long long)st.swap_ins,
	       (unsigned long long)st.readahead, (unsigned long long)st.readahead_hits,
	       (unsigned long long)st.evict_dirty, (unsigned long long)st.evict_clean,
	       (unsigned long long)st.evict_zero,
	       (unsigned long long)(st.faults_missing + st.faults_wp));
	printf("demo: resident memory peaked at %zu MiB of a %zu MiB limit\n", peak * ps >> 20,
	       limit_mib);
	printf("demo: verified every page: %s\n", bad ? "CORRUPT" : "all correct");
	pager_region_destroy(r);
	pager_close(p);
	free(gen);
	return bad || e ? 1 : 0;
}
