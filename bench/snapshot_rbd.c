/* SPDX-License-Identifier: MIT */
/*
 * snapshot_rbd: what a snapshot into a Ceph RBD image and a lazy restore
 * from it cost, against the same with a local image file: same pagerd,
 * same region, the backings taking turns.
 *
 * A region of SIZE (1 GiB; --quick 256 MiB), 7 pages in 8 holding data
 * and the 8th never written (a hole), is snapshotted (start to complete,
 * the image synced or committed), then dropped and restored on the same
 * pagerd, with prefetch:
 *
 *   snapshot   seconds and MiB/s of the region
 *   ready      pager_region_restore() returned (metadata, table read)
 *   first      the first page read after that (a cold start's first
 *              useful work)
 *   all        every page read and checked
 *
 * Every page is checked against the fill pattern and every hole must read
 * as zeros; image_reads must equal the data pages (holes never read).
 * The local image goes in /var/tmp (O_DIRECT there), dropped from the
 * page cache before each restore.  The cluster is $CEPH_CONF's if set
 * (pool rbd), else a single-node one brought up with tests/ceph_cluster.sh
 * (memstore: the OSD keeps the image in RAM on this host, so RBD's figures
 * are the network stack and Ceph's software, not a disk).
 *
 *   snapshot_rbd [--quick] [-r RUNS]
 *
 * Exit status: 0 success, 1 failure (wrong data, a call failing), 77 no
 * cluster here.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pager.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

#define MiB (1ULL << 20)

static size_t ps;
static uint64_t size;

static uint64_t pattern(uint64_t page, size_t k)
{
	return (page * 0x9e3779b97f4a7c15ULL) ^ (k * 0xC2B2AE3D27D4EB4FULL) ^ 1;
}

static bool hole(uint64_t page)
{
	return page % 8 == 7;
}

struct result {
	double snap_s, ready_ms, first_ms, all_s;
};

static void drop_local(const char *path)
{
	char side[256];

	unlink(path);
	snprintf(side, sizeof(side), "%s.meta", path);
	unlink(side);
	snprintf(side, sizeof(side), "%s.crc", path);
	unlink(side);
}

/* One snapshot and restore of a fresh region into target.  0 or 1. */
static int trial(struct pager *p, const char *target, bool local, struct result *ret)
{
	struct pager_region_opts ro = { .sz = sizeof(ro) };
	struct pager_region_stats st = { .sz = sizeof(st) };
	uint64_t n = size / ps, data = 0, bad = 0, t0;
	struct pager_region *r;
	uint8_t *b;
	int e;

	if ((e = pager_region_create(p, size, NULL, &r)) < 0) {
		fprintf(stderr, "region: %s\n", strerror(-e));
		return 1;
	}
	b = pager_region_addr(r);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t *w = (uint64_t *)(b + i * ps);

		if (hole(i))
			continue;
		data++;
		for (size_t k = 0; k < ps / 8; k++)
			w[k] = pattern(i, k);
	}
	t0 = now_ns();
	e = pager_region_snapshot(r, target, NULL);
	ret->snap_s = (now_ns() - t0) / 1e9;
	pager_region_destroy(r);
	if (e < 0) {
		fprintf(stderr, "snapshot into %s: %s\n", target, strerror(-e));
		return 1;
	}
	if (local) {
		int fd = open(target, O_RDONLY);

		/* A cold restore: nothing of the image in the page cache. */
		if (fd >= 0) {
			fdatasync(fd);
			posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
			close(fd);
		}
	}
	t0 = now_ns();
	if ((e = pager_region_restore(p, target, &ro, &r)) < 0) {
		fprintf(stderr, "restore from %s: %s\n", target, strerror(-e));
		return 1;
	}
	ret->ready_ms = (now_ns() - t0) / 1e6;
	b = pager_region_addr(r);
	bad += *(volatile uint64_t *)b != pattern(0, 0);
	ret->first_ms = (now_ns() - t0) / 1e6;
	for (uint64_t i = 0; i < n; i++) {
		const volatile uint64_t *w = (const volatile uint64_t *)(b + i * ps);

		for (size_t k = 0; k < ps / 8; k += 61)
			bad += w[k] != (hole(i) ? 0 : pattern(i, k));
	}
	ret->all_s = (now_ns() - t0) / 1e9;
	if (pager_region_stats(r, &st) < 0 || st.image_reads != data) {
		fprintf(stderr, "%s: %" PRIu64 " image reads for %" PRIu64 " data pages\n", target,
			st.image_reads, data);
		bad++;
	}
	pager_region_destroy(r);
	if (bad)
		fprintf(stderr, "%s: %" PRIu64 " WRONG words\n", target, bad);
	return bad ? 1 : 0;
}

static void print(const char *label, const struct result *v)
{
	printf("%-6s snapshot %6.2f s (%6.1f MiB/s); restore: ready %7.2f ms, first page %7.2f ms, "
	       "all pages %6.2f s (%6.1f MiB/s)\n", label, v->snap_s,
	       (double)size / MiB / v->snap_s, v->ready_ms, v->first_ms, v->all_s,
	       (double)size / MiB / v->all_s);
}

int main(int argc, char **argv)
{
	char file[64], image[64], conf[128], cmd[512], dir[] = "/tmp/snaprbd.XXXXXX", sock[64];
	const char *c = getenv("CEPH_CONF");
	unsigned runs = 3;
	struct pager *p;
	int rc = 0;
	pid_t pid;

	ps = (size_t)sysconf(_SC_PAGESIZE);
	size = 1024 * MiB;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick")) {
			size = 256 * MiB;
			runs = 1;
		} else if (!strcmp(argv[i], "-r") && i + 1 < argc) {
			runs = (unsigned)atoi(argv[++i]);
		} else {
			fprintf(stderr, "usage: snapshot_rbd [--quick] [-r RUNS]\n");
			return 2;
		}
	}
	if (!c) {
		/* Room for a 1 GiB image and its table in the OSD's RAM. */
		setenv("CEPH_MEMSTORE_BYTES", "4294967296", 0);
		rc = bench_cluster_start("snapshot_rbd", "/tmp/snaprbd-ceph.XXXXXX", conf,
					 sizeof(conf));
		if (rc)
			return rc;
		c = conf;
	}
	if (!mkdtemp(dir))
		return 1;
	snprintf(sock, sizeof(sock), "%s/sock", dir);
	pid = fork();
	if (pid == 0) {
		const char *pagerd = getenv("PAGERD") ? getenv("PAGERD") : "build/pagerd";

		execl(pagerd, "pagerd", "--config", "/dev/null", "--socket", sock, "--log-level",
		      "warning", "--ceph-conf", c, (char *)NULL);
		_exit(127);
	}
	p = bench_connect_retry(sock);
	if (!p) {
		fprintf(stderr, "pagerd did not come up\n");
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return 1;
	}
	snprintf(file, sizeof(file), "/var/tmp/snaprbd-bench.%d", (int)getpid());
	snprintf(image, sizeof(image), "rbd:rbd/snaprbd-bench-%d", (int)getpid());
	printf("snapshot_rbd: %" PRIu64 " MiB region, 1 page in 8 a hole, %u run(s), the backings "
	       "taking turns\n", (uint64_t)(size / MiB), runs);
	for (unsigned i = 0; i < runs && !rc; i++) {
		struct result v;

		rc |= trial(p, file, true, &v);
		drop_local(file);
		if (!rc)
			print("local", &v);
		if (!rc)
			rc |= trial(p, image, false, &v);
		if (!rc)
			print("rbd", &v);
	}
	pager_close(p);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	unlink(sock);
	rmdir(dir);
	snprintf(cmd, sizeof(cmd), "rbd -c %s rm %s >/dev/null 2>&1; rados -c %s -p rbd rm "
		 "pagerd_crc.%s >/dev/null 2>&1", c, image + 4, c, strchr(image + 4, '/') + 1);
	if (system(cmd) != 0)
		fprintf(stderr, "removing %s failed\n", image);
	return rc;
}
