/* SPDX-License-Identifier: MIT */
/*
 * swapin_rbd: what a swap-in costs from a Ceph RBD swap against a local
 * swap file, same pagerd, same workload.
 *
 * For each backing a pagerd of its own runs with --swap FILE (in
 * /var/tmp) or --swap rbd:rbd/IMAGE, a 64 MiB region under an 8 MiB limit
 * is filled (most of it goes to swap), then:
 *
 *   random   every page once, in a shuffled order, one thread (queue
 *            depth 1): the median and 99th percentile of the accesses
 *            that were swap-ins (the page not in memory just before,
 *            mincore)
 *   seq      every page in order: pagerd reads ahead, in large reads;
 *            MiB/s
 *
 * Every page is checked (its index and a check word).  The cluster is
 * $CEPH_CONF's if set (pool rbd), else a single-node one brought up with
 * tests/ceph_cluster.sh (run from the top of the tree, as make bench
 * does).  Exit status: 0 success, 1 failure, 77 no cluster here.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <inttypes.h>
#include <pager.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

#define MiB (1ULL << 20)
#define REGION (64 * MiB)

static size_t ps;

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static pid_t start_pagerd(const char *sock, const char *swap, const char *conf)
{
	pid_t pid = fork();

	if (pid == 0) {
		const char *pagerd = getenv("PAGERD") ? getenv("PAGERD") : "build/pagerd";

		if (conf)
			execl(pagerd, "pagerd", "--config", "/dev/null", "--socket", sock,
			      "--swap", swap, "--swap-size", "256M", "--memory-limit", "8M",
			      "--log-level", "warning", "--ceph-conf", conf, (char *)NULL);
		else
			execl(pagerd, "pagerd", "--config", "/dev/null", "--socket", sock,
			      "--swap", swap, "--swap-size", "256M", "--memory-limit", "8M",
			      "--log-level", "warning", (char *)NULL);
		_exit(127);
	}
	return pid;
}

/* Returns 0, or 1 on a failure (said). */
static int run(const char *label, const char *swap, const char *conf)
{
	char dir[] = "/tmp/swapin.XXXXXX", sock[64];
	struct pager_region_opts ro = { .sz = sizeof(ro) };
	uint64_t n = REGION / ps, *lat, seed = 42, t0, bad = 0, misses = 0;
	struct pager_region *r;
	struct pager *p;
	size_t *perm;
	pid_t pid;
	uint8_t *b;

	if (!mkdtemp(dir))
		return 1;
	snprintf(sock, sizeof(sock), "%s/sock", dir);
	pid = start_pagerd(sock, swap, conf);
	p = bench_connect_retry(sock);
	if (!p || pager_region_create(p, REGION, &ro, &r) < 0) {
		fprintf(stderr, "%s: pagerd did not come up\n", label);
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return 1;
	}
	b = pager_region_addr(r);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t *w = (uint64_t *)(b + i * ps);

		for (size_t k = 0; k < ps / 8; k++)
			w[k] = i * 0x9e3779b97f4a7c15ULL + k;
	}
	perm = malloc(n * sizeof(*perm));
	lat = malloc(n * sizeof(*lat));
	for (uint64_t i = 0; i < n; i++)
		perm[i] = i;
	for (uint64_t i = n - 1; i > 0; i--) {
		uint64_t j = splitmix64(&seed) % (i + 1);
		size_t t = perm[i];

		perm[i] = perm[j];
		perm[j] = t;
	}
	for (uint64_t i = 0; i < n; i++) {
		volatile uint64_t *w = (volatile uint64_t *)(b + perm[i] * ps);
		unsigned char in = 1;
		uint64_t s;

		/* Only the accesses that are swap-ins count: the page is
		 * not in the region's memfd (mincore) before it. */
		if (mincore((void *)w, ps, &in) < 0)
			in = 1;
		s = now_ns();
		bad += w[0] != perm[i] * 0x9e3779b97f4a7c15ULL;
		if (!(in & 1))
			lat[misses++] = now_ns() - s;
	}
	if (!misses) {
		fprintf(stderr, "%s: no swap-in happened\n", label);
		return 1;
	}
	qsort(lat, misses, sizeof(*lat), cmp_u64);
	/* Every page again, in order: read ahead in large reads. */
	t0 = now_ns();
	for (uint64_t i = 0; i < n; i++) {
		const uint64_t *w = (const uint64_t *)(b + i * ps);

		bad += w[ps / 8 - 1] != i * 0x9e3779b97f4a7c15ULL + ps / 8 - 1;
	}
	t0 = now_ns() - t0;
	printf("%-6s random swap-in (%5" PRIu64 " of %" PRIu64 " accesses): median %7.1f us, "
	       "p99 %8.1f us; seq read %7.1f MiB/s%s\n", label, misses, n,
	       lat[misses / 2] / 1e3, lat[misses * 99 / 100] / 1e3,
	       (double)REGION / MiB / (t0 / 1e9), bad ? "  WRONG DATA" : "");
	free(perm);
	free(lat);
	pager_close(p);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	rmdir(dir);
	return bad ? 1 : 0;
}

int main(void)
{
	char file[64], image[64], conf[128];
	const char *c = getenv("CEPH_CONF");
	int rc = 0;

	ps = (size_t)sysconf(_SC_PAGESIZE);
	if (!c) {
		rc = bench_cluster_start("swapin_rbd", "/tmp/swapin-ceph.XXXXXX", conf,
					 sizeof(conf));
		if (rc)
			return rc;
		c = conf;
	}
	snprintf(file, sizeof(file), "/var/tmp/swapin-bench.%d", (int)getpid());
	snprintf(image, sizeof(image), "rbd:rbd/swapin-bench-%d", (int)getpid());
	printf("swapin_rbd: 64 MiB region, 8 MiB limit, 4 KiB pages, one thread\n");
	rc |= run("local", file, NULL);
	unlink(file);
	rc |= run("rbd", image, c);
	return rc;
}
