/* SPDX-License-Identifier: MIT */
/*
 * restore_learn: cold start from a snapshot image, with the page cache
 * dropped before every restore, three ways:
 *
 *   (a) lazy      PAGER_REGION_NO_PREFETCH: pages come only as touched
 *   (b) prefetch  the address-order background prefetch (an image without
 *                 a learned order)
 *   (c) learned   the same image content with its IMAGE.order: the pages
 *                 the previous restore touched first are read first
 *
 * The workload: a working set of about WS_PERCENT of the region's pages,
 * made of runs of 1-16 pages (a heap's objects are rarely single pages)
 * at pseudo-random places, touched in a fixed pseudo-random order of the
 * runs (a page's first word is read and checked); once all of it has been
 * touched, the application can start its useful work.  Measured from
 * the restore call:
 *
 *   cold start   until the whole working set has been touched once
 *   full         until every page of the image is in (image_pending 0:
 *                (b) and (c) only)
 *
 * Before the runs, the order is learned as a user would: the image is
 * restored lazily, the workload runs, and the region is snapshotted to a
 * second image (same content, plus IMAGE.order).  The modes take turns in
 * each run (the machine's load drifts); per-run figures and the medians
 * are printed.  A wrong word fails the benchmark.
 *
 * The page cache is dropped with /proc/sys/vm/drop_caches (root); without
 * it the figures are of a warm cache, and the benchmark says so.
 * Files go in DIR (default /var/tmp) and are removed on exit.
 *
 *   restore_learn [--quick] [-s SIZE] [-r RUNS] [-d DIR]
 *                 [--rbd POOL --socket SOCK]
 *
 * --rbd: the images are rbd:POOL/restore_learn-PID and ...-learned in the
 * cluster of the pagerd at SOCK (started with --ceph-conf); CEPH_CONF, if
 * set, lets the benchmark remove them at the end (rbd rm, rados rm).  No
 * page cache to drop then: every read goes to an OSD.
 *
 * Exit status: 0 success, 1 failure, 2 usage, 77 not supported here.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pager.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

#define DEFAULT_SIZE "1G"
#define QUICK_SIZE   "128M"
#define DEFAULT_RUNS 5
#define QUICK_RUNS   1
#define MAX_RUNS     50
#define WS_PERCENT   12
#define RUN_MAX      16
#define SEED         0x5eed1ea4ull

enum mode { M_LAZY, M_PREFETCH, M_LEARNED, NR_MODES };
static const char *const mode_name[NR_MODES] = { "lazy", "prefetch", "learned" };

struct bench {
	size_t ps, size, npages;
	unsigned runs;
	const char *dir, *pool, *sock;
	struct pager *pager;
	char img[PATH_MAX], learned[PATH_MAX];
	uint64_t *ws;            /* the working set's pages, in touch order */
	size_t nws;
	bool dropped;            /* the page cache could be dropped */
	/* results, ms */
	double cold[NR_MODES][MAX_RUNS], full[NR_MODES][MAX_RUNS];
	uint64_t reads_at_cold[NR_MODES][MAX_RUNS], learned_reads[NR_MODES][MAX_RUNS];
};

static uint64_t word(size_t page)
{
	return SEED ^ (page * 0x9e3779b97f4a7c15ull) ^ 1;
}

static double ms_since(uint64_t t0)
{
	return (double)(now_ns() - t0) / 1e6;
}

static void unlink_image(const char *path)
{
	static const char *const ext[] = { "", ".meta", ".crc", ".order" };
	char f[PATH_MAX + 8];

	if (!strncmp(path, "rbd:", 4)) {
		const char *conf = getenv("CEPH_CONF"), *name = strchr(path + 4, '/') + 1;
		char cmd[3 * PATH_MAX];

		if (!conf)
			return;
		snprintf(cmd, sizeof(cmd), "rbd -c %s rm %s >/dev/null 2>&1; for o in pagerd_crc "
			 "pagerd_order; do rados -c %s -p %.*s rm $o.%s 2>/dev/null; done; true",
			 conf, path + 4, conf, (int)(name - 1 - (path + 4)), path + 4, name);
		if (system(cmd) != 0)
			fprintf(stderr, "restore_learn: removing %s failed\n", path);
		return;
	}

	for (size_t i = 0; i < 4; i++) {
		snprintf(f, sizeof(f), "%s%s", path, ext[i]);
		unlink(f);
	}
}

static void drop_caches(struct bench *b)
{
	int fd;

	sync();
	fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
	b->dropped = fd >= 0 && write(fd, "3\n", 2) == 2;
	if (fd >= 0)
		close(fd);
}

/* The working set: runs of 1..RUN_MAX pages at random places until
 * WS_PERCENT of the pages, then the runs shuffled. */
static int make_ws(struct bench *b)
{
	uint64_t seed = SEED, target = b->npages * WS_PERCENT / 100;
	uint8_t *taken = calloc(b->npages, 1);
	uint64_t (*runs)[2] = calloc(target + 1, sizeof(*runs));
	size_t nruns = 0;

	b->ws = calloc(target + RUN_MAX, sizeof(*b->ws));
	if (!taken || !runs || !b->ws) {
		free(taken);
		free(runs);
		return -ENOMEM;
	}
	while (b->nws < target) {
		uint64_t len = 1 + splitmix64(&seed) % RUN_MAX;
		uint64_t at = splitmix64(&seed) % (b->npages - len);
		bool free_run = true;

		for (uint64_t i = 0; i < len; i++)
			free_run &= !taken[at + i];
		if (!free_run)
			continue;
		memset(taken + at, 1, len);
		runs[nruns][0] = at;
		runs[nruns][1] = len;
		nruns++;
		b->nws += len;
	}
	for (size_t i = nruns; i > 1; i--) {
		size_t j = splitmix64(&seed) % i;
		uint64_t t0 = runs[i - 1][0], t1 = runs[i - 1][1];

		runs[i - 1][0] = runs[j][0];
		runs[i - 1][1] = runs[j][1];
		runs[j][0] = t0;
		runs[j][1] = t1;
	}
	b->nws = 0;
	for (size_t i = 0; i < nruns; i++)
		for (uint64_t k = 0; k < runs[i][1]; k++)
			b->ws[b->nws++] = runs[i][0] + k;
	free(taken);
	free(runs);
	return 0;
}

/* Touches the working set in its order; 0, or 1 on a wrong word. */
static int workload(struct bench *b, struct pager_region *r)
{
	const volatile uint64_t *m = pager_region_addr(r);
	size_t per = b->ps / 8;

	for (size_t i = 0; i < b->nws; i++) {
		if (m[b->ws[i] * per] != word(b->ws[i])) {
			fprintf(stderr, "restore_learn: page %" PRIu64 " holds a wrong word\n",
				b->ws[i]);
			return 1;
		}
	}
	return 0;
}

static int make_images(struct bench *b)
{
	struct pager_region_opts ro = { .sz = sizeof(ro), .flags = PAGER_REGION_NO_PREFETCH };
	struct pager_region *r;
	uint64_t *m;
	int e;

	e = pager_region_create(b->pager, b->size, NULL, &r);
	if (e < 0)
		goto fail;
	m = pager_region_addr(r);
	for (size_t p = 0; p < b->npages; p++)
		for (size_t i = 0; i < b->ps / 8; i++)
			m[p * (b->ps / 8) + i] = word(p) + i;
	e = pager_region_snapshot(r, b->img, NULL);
	pager_region_destroy(r);
	if (e < 0)
		goto fail;
	/* Learning it, as a user would: restore, run, snapshot. */
	drop_caches(b);
	e = pager_region_restore(b->pager, b->img, &ro, &r);
	if (e < 0)
		goto fail;
	if (workload(b, r)) {
		pager_region_destroy(r);
		return 1;
	}
	e = pager_region_snapshot(r, b->learned, NULL);
	pager_region_destroy(r);
	if (e < 0)
		goto fail;
	return 0;
fail:
	fprintf(stderr, "restore_learn: making the images: %s\n", strerror(-e));
	return 1;
}

static int one(struct bench *b, enum mode mode, unsigned run)
{
	struct pager_region_opts ro = { .sz = sizeof(ro),
					.flags = mode == M_LAZY ? PAGER_REGION_NO_PREFETCH : 0 };
	struct pager_region_stats st = { .sz = sizeof(st) };
	struct pager_region *r;
	uint64_t t0;
	int e;

	drop_caches(b);
	t0 = now_ns();
	e = pager_region_restore(b->pager, mode == M_LEARNED ? b->learned : b->img, &ro, &r);
	if (e < 0) {
		fprintf(stderr, "restore_learn: restore: %s\n", strerror(-e));
		return 1;
	}
	if (workload(b, r)) {
		pager_region_destroy(r);
		return 1;
	}
	b->cold[mode][run] = ms_since(t0);
	pager_region_stats(r, &st);
	b->reads_at_cold[mode][run] = st.image_reads;
	b->full[mode][run] = 0;
	if (mode != M_LAZY) {
		/* Not faster: every stats call has pagerd walk the region's
		 * memfd for pages the application punched (region_reconcile()),
		 * which takes milliseconds once the learned prefetch has left
		 * its pages scattered, and polling at 0.5 ms tripled the time
		 * measured. */
		while (pager_region_stats(r, &st) == 0 && st.image_pending)
			usleep(10000);
		b->full[mode][run] = ms_since(t0);
	}
	b->learned_reads[mode][run] = st.image_learned_reads;
	pager_region_destroy(r);
	printf("  run %u %-8s  cold start %8.1f ms  (%6" PRIu64 " pages read by then)",
	       run + 1, mode_name[mode], b->cold[mode][run], b->reads_at_cold[mode][run]);
	if (mode != M_LAZY)
		printf("  full restore %8.1f ms", b->full[mode][run]);
	if (mode == M_LEARNED)
		printf("  learned %" PRIu64, b->learned_reads[mode][run]);
	printf("\n");
	fflush(stdout);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: restore_learn [--quick] [-s SIZE] [-r RUNS] [-d DIR]\n"
		   "  -s SIZE   the image (default %s; --quick %s)\n"
		   "  -r RUNS   runs of the three modes (default %d; --quick %d)\n"
		   "  -d DIR    where the images go (default /var/tmp)\n"
		   "  --rbd POOL --socket SOCK  the images in POOL, through the pagerd at SOCK\n",
		DEFAULT_SIZE, QUICK_SIZE, DEFAULT_RUNS, QUICK_RUNS);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "quick", no_argument, NULL, 'q' },
		{ "size", required_argument, NULL, 's' },
		{ "runs", required_argument, NULL, 'r' },
		{ "dir", required_argument, NULL, 'd' },
		{ "rbd", required_argument, NULL, 'R' },
		{ "socket", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	static struct bench bb;
	struct bench *b = &bb;
	struct pager_opts o = { .sz = sizeof(o), .flags = PAGER_OPEN_FORCE_PRIVATE };
	const char *size_arg = NULL;
	bool quick = false;
	uint64_t v;
	int c, rc = 0, runs = 0;

	b->dir = "/var/tmp";
	while ((c = getopt_long(argc, argv, "qs:r:d:h", opts, NULL)) != -1) {
		switch (c) {
		case 'q': quick = true; break;
		case 's': size_arg = optarg; break;
		case 'r':
			if (parse_u64(optarg, &v) < 0 || v < 1 || v > MAX_RUNS) {
				usage(stderr);
				return 2;
			}
			runs = (int)v;
			break;
		case 'd': b->dir = optarg; break;
		case 'R': b->pool = optarg; break;
		case 'S': b->sock = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	b->ps = (size_t)sysconf(_SC_PAGESIZE);
	if (parse_size(size_arg ? size_arg : quick ? QUICK_SIZE : DEFAULT_SIZE, &v) < 0 ||
	    v < 64 * b->ps) {
		usage(stderr);
		return 2;
	}
	b->size = (size_t)(v / b->ps * b->ps);
	b->npages = b->size / b->ps;
	b->runs = runs ? (unsigned)runs : quick ? QUICK_RUNS : DEFAULT_RUNS;
	if (b->pool && !b->sock) {
		usage(stderr);
		return 2;
	}
	if (b->pool) {
		snprintf(b->img, sizeof(b->img), "rbd:%s/restore_learn-%d", b->pool, (int)getpid());
		snprintf(b->learned, sizeof(b->learned), "rbd:%s/restore_learn-%d-learned",
			 b->pool, (int)getpid());
	} else {
		snprintf(b->img, sizeof(b->img), "%s/restore_learn.%d.img", b->dir, (int)getpid());
		snprintf(b->learned, sizeof(b->learned), "%s/restore_learn.%d.learned.img",
			 b->dir, (int)getpid());
	}
	if (b->sock) {
		o.socket_path = b->sock;
		o.flags = PAGER_OPEN_NO_PRIVATE;
	}
	unsetenv("PAGER_MEMORY_LIMIT");
	unsetenv("PAGER_SWAP");
	if ((rc = pager_open(&b->pager, &o)) < 0) {
		fprintf(stderr, "restore_learn: pager_open: %s\n", strerror(-rc));
		return 1;
	}
	if (make_ws(b) < 0) {
		fprintf(stderr, "restore_learn: out of memory\n");
		pager_close(b->pager);
		return 1;
	}
	printf("restore_learn: %zu MiB image, working set %zu pages (%d%%, runs of 1-%d pages "
	       "in a pseudo-random order), %u runs\n", b->size >> 20, b->nws, WS_PERCENT,
	       RUN_MAX, b->runs);
	rc = make_images(b);
	if (!rc && !b->dropped)
		printf("restore_learn: the page cache could not be dropped (not root?): "
		       "warm-cache figures\n");
	for (unsigned run = 0; !rc && run < b->runs; run++)
		for (unsigned k = 0; !rc && k < NR_MODES; k++)
			rc = one(b, (enum mode)((k + run) % NR_MODES), run);
	if (!rc) {
		double med[NR_MODES], fmed[NR_MODES];

		for (unsigned m = 0; m < NR_MODES; m++) {
			med[m] = median(b->cold[m], b->runs);
			fmed[m] = median(b->full[m], b->runs);
		}
		printf("median cold start: lazy %.1f ms, prefetch %.1f ms, learned %.1f ms "
		       "(learned %.1fx faster than prefetch, %.1fx than lazy)\n",
		       med[M_LAZY], med[M_PREFETCH], med[M_LEARNED],
		       med[M_PREFETCH] / med[M_LEARNED], med[M_LAZY] / med[M_LEARNED]);
		printf("median full restore: prefetch %.1f ms, learned %.1f ms\n",
		       fmed[M_PREFETCH], fmed[M_LEARNED]);
	}
	unlink_image(b->img);
	unlink_image(b->learned);
	free(b->ws);
	pager_close(b->pager);
	return rc;
}
