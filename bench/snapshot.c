/* SPDX-License-Identifier: MIT */
/*
 * snapshot: what a live snapshot (pager_region_snapshot_start/poll) costs
 * the application and how fast it writes its image, against the disk's own
 * sequential write bandwidth measured in the same run.
 *
 *   (a) pause     How long writers are blocked when a snapshot starts, per
 *                 GiB resident, for a region of SIZE/4 and one of SIZE
 *                 (256 MiB and 1 GiB by default), fully resident, no limit.
 *                 Two measures: pause_ns as pagerd reports it (the
 *                 write-protect call), and, independently, the longest gap
 *                 between consecutive writes of a writer thread cycling
 *                 over 256 pages spread across the region, counting the
 *                 gaps that began while pager_region_snapshot_start() was
 *                 in progress (a writer that hits a protected page waits
 *                 until pagerd has finished protecting and copied that
 *                 page).  Target: at most 10 ms per GiB.
 *   (b) throughput  Image bytes per second for a SIZE region fully
 *                 resident, no writers, from the start call until poll
 *                 says done (image complete and synced), against writing
 *                 SIZE bytes to a file in the same directory in 1 MiB
 *                 writes with O_DIRECT (or buffered, --disk buffered), then
 *                 fsync.  Disk and snapshot trials alternate.  Target: the
 *                 snapshot at 70% of the disk or better.
 *   (c) writers   Two threads each storing 8 bytes to random pages of a
 *                 SIZE region in a loop: writes per second before the
 *                 snapshot, during it (start call to done) and after it,
 *                 and the longest stall in each.  During the snapshot the
 *                 first write to each page waits for pagerd to copy it.
 *
 * Every trial uses a fresh region filled in full (no zero pages, every
 * word non-zero), so that no trial starts with pages a previous snapshot
 * left write-protected.  After each snapshot the image's size and sidecar
 * are checked and sampled pages compared with the fill pattern: a wrong
 * image fails the benchmark.  Missing a target does not.
 *
 * Files go in DIR (default /var/tmp, which takes O_DIRECT where /tmp may
 * be tmpfs) and are removed on every exit path.  A private pagerd with no
 * memory limit serves the regions ($PAGER_MEMORY_LIMIT and $PAGER_SWAP are
 * ignored).
 *
 *   snapshot [--quick] [-s SIZE] [-r RUNS] [-d DIR] [--disk direct|buffered] [--json]
 *
 * Exit status: 0 success, 1 failure (wrong image, a call failing), 2 usage,
 * 77 snapshots not supported by this libpager, pagerd or kernel, 128+N on
 * signal N.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pager.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

/*
 * The snapshot calls are declared in pager.h but a libpager without them
 * may be the one linked or loaded.  Weak references link either way; the
 * address is NULL until a libpager that has them is loaded, and the
 * benchmark then exits 77 saying so.
 */
#pragma weak pager_region_snapshot_start
#pragma weak pager_region_snapshot_poll

#define DEFAULT_SIZE      "1G"
#define QUICK_SIZE        "256M"
#define DEFAULT_RUNS      3
#define QUICK_RUNS        1
#define MAX_RUNS          50
#define DEFAULT_DIR       "/var/tmp"
#define SPREAD_PAGES      256        /* the pause writer's pages */
#define RAND_WRITERS      2
#define WARM_MS           100        /* writers run before anything is measured */
#define BASE_MS           1000       /* (c): before and after windows */
#define QUICK_BASE_MS     300
#define POLL_US           2000       /* snapshot progress polls */
#define STALL_S           120        /* no progress this long: give up */
#define DISK_CHUNK        (1u << 20)
#define SAMPLE_PAGES      256        /* image pages compared per snapshot */
#define PAUSE_TARGET_MS   10.0       /* per GiB */
#define TPUT_TARGET       0.70
#define FILL_SEED         0xa4093822299f31d0ULL
#define GIB               (1024.0 * 1024.0 * 1024.0)

/* Where a trial is; a writer charges each gap to the phase it began in. */
enum phase { PH_WARM, PH_BEFORE, PH_START, PH_COPY, PH_AFTER, NR_PHASES };

enum wmode { W_SPREAD, W_RANDOM };

/* One trial's region and the state its writers share. */
struct trial {
	struct pager_region *region;
	uint64_t *mem;
	size_t npages, words, page_size;
	size_t spread[SPREAD_PAGES];
	size_t nspread;
	int phase;              /* enum phase; atomic */
	int stop;               /* atomic */
};

struct writer {
	pthread_t tid;
	struct trial *t;
	enum wmode mode;
	uint64_t seed;
	bool created;
	uint64_t writes;        /* atomic: main samples it */
	uint64_t max_gap[NR_PHASES];  /* ns; read after the join */
};

/* One snapshot as the trial saw it. */
struct snap {
	uint64_t call_ns;       /* pager_region_snapshot_start() */
	uint64_t total_ns;      /* start call to poll saying done */
	uint64_t pause_ns;      /* pagerd's */
	uint64_t pages_total;
	uint64_t t_start, t_return, t_done;   /* now_ns() */
	uint64_t w_start, w_done;              /* writes by then, all writers */
};

/* (a), one region size. */
struct pause_result {
	size_t size;
	uint64_t resident;      /* pages, -1 unknown */
	double pause_ns[MAX_RUNS], stall_ns[MAX_RUNS], call_ns[MAX_RUNS];
	double pause_med, stall_med, call_med;
};

/* (c), one run. */
struct writers_result {
	double rate[NR_PHASES]; /* writes/s; PH_START holds start call + copy */
	uint64_t stall[NR_PHASES];
	uint64_t wp_faults;     /* during the snapshot, -1 unknown */
	double ratio;
};

/* Everything one run of the program works with. */
struct bench {
	/* configuration */
	size_t page_size;
	size_t size;
	unsigned runs;
	unsigned base_ms;
	bool json, quick, direct;
	const char *dir;

	/* set up here, taken down at the end */
	struct pager *pager;
	int32_t daemon_pid;
	char img[PATH_MAX], meta[PATH_MAX + 8], disk[PATH_MAX];
	void *disk_buf;
	bool disk_direct;       /* O_DIRECT was taken */

	/* results */
	struct pause_result pause[2];
	double disk_bps[MAX_RUNS], snap_bps[MAX_RUNS];
	double disk_med, snap_med;
	uint64_t image_bytes;
	struct writers_result wr[MAX_RUNS];
	struct writers_result wr_med;
};

static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
	got_signal = sig;
}

static double mib(double bytes)
{
	return bytes / (1024.0 * 1024.0);
}

static void sleep_us(uint64_t us)
{
	struct timespec ts = { (time_t)(us / 1000000), (long)(us % 1000000) * 1000 };

	nanosleep(&ts, NULL);
}

/* Word i of page p as the fill leaves it: never zero. */
static uint64_t fill_word(uint64_t p, size_t i)
{
	return (FILL_SEED ^ (p << 12 | i)) | 1ULL << 63;
}

/* ---------------------------------------------------------------------- */
/* Regions and writers                                                    */

/*
 * A fresh region of `size` bytes with every word of every page written,
 * in t.  Returns 0 or -errno, having said what failed.
 */
static int region_setup(struct bench *b, size_t size, struct trial *t)
{
	const struct pager_region_opts ro = { .sz = sizeof(ro), .name = "bench-snapshot" };
	int e;

	memset(t, 0, sizeof(*t));
	e = pager_region_create(b->pager, size, &ro, &t->region);
	if (e < 0) {
		fprintf(stderr, "snapshot: pager_region_create %zu bytes: %s\n", size,
			strerror(-e));
		return e;
	}
	t->mem = pager_region_addr(t->region);
	t->page_size = b->page_size;
	t->npages = pager_region_len(t->region) / b->page_size;
	t->words = b->page_size / sizeof(uint64_t);
	for (size_t p = 0; p < t->npages; p++) {
		uint64_t *w = t->mem + p * t->words;

		for (size_t i = 0; i < t->words; i++)
			w[i] = fill_word(p, i);
	}
	t->nspread = t->npages < SPREAD_PAGES ? t->npages : SPREAD_PAGES;
	for (size_t i = 0; i < t->nspread; i++)
		t->spread[i] = i * t->npages / t->nspread;
	return 0;
}

static void region_teardown(struct trial *t)
{
	int e = pager_region_destroy(t->region);

	if (e < 0)
		fprintf(stderr, "snapshot: pager_region_destroy: %s\n", strerror(-e));
	t->region = NULL;
}

static void set_phase(struct trial *t, enum phase ph)
{
	__atomic_store_n(&t->phase, (int)ph, __ATOMIC_RELEASE);
}

/*
 * A writer stores to word 0 of a page (the image check skips that word),
 * then reads the clock: the gap since its previous write is charged to the
 * phase that was current when that previous write was done, i.e. when the
 * gap began.
 */
static void *writer_main(void *arg)
{
	struct writer *w = arg;
	struct trial *t = w->t;
	volatile uint64_t *mem = t->mem;
	uint64_t prev = now_ns(), n = 0;
	int ph = __atomic_load_n(&t->phase, __ATOMIC_ACQUIRE);

	while (!__atomic_load_n(&t->stop, __ATOMIC_RELAXED)) {
		size_t p = w->mode == W_SPREAD ? t->spread[n % t->nspread] :
			   (size_t)(splitmix64(&w->seed) % t->npages);
		uint64_t now;

		mem[p * t->words] = n;
		now = now_ns();
		if (now - prev > w->max_gap[ph])
			w->max_gap[ph] = now - prev;
		prev = now;
		ph = __atomic_load_n(&t->phase, __ATOMIC_ACQUIRE);
		__atomic_store_n(&w->writes, ++n, __ATOMIC_RELAXED);
	}
	return NULL;
}

static int writers_start(struct trial *t, struct writer *w, unsigned n, enum wmode mode)
{
	for (unsigned i = 0; i < n; i++) {
		int e;

		memset(&w[i], 0, sizeof(w[i]));
		w[i].t = t;
		w[i].mode = mode;
		w[i].seed = 0x243f6a8885a308d3ULL * (i + 1);
		e = pthread_create(&w[i].tid, NULL, writer_main, &w[i]);
		if (e) {
			fprintf(stderr, "snapshot: pthread_create: %s\n", strerror(e));
			return -e;
		}
		w[i].created = true;
	}
	return 0;
}

static void writers_stop(struct trial *t, struct writer *w, unsigned n)
{
	__atomic_store_n(&t->stop, 1, __ATOMIC_RELAXED);
	for (unsigned i = 0; i < n; i++) {
		if (w[i].created)
			pthread_join(w[i].tid, NULL);
		w[i].created = false;
	}
}

static uint64_t writes_now(struct writer *w, unsigned n)
{
	uint64_t s = 0;

	for (unsigned i = 0; i < n; i++)
		s += __atomic_load_n(&w[i].writes, __ATOMIC_RELAXED);
	return s;
}

/* Sleeps ms, in steps, unless a signal came; returns false if one did. */
static bool wait_ms(unsigned ms)
{
	for (unsigned i = 0; i < ms && !got_signal; i += 10)
		sleep_us(ms - i < 10 ? (ms - i) * 1000u : 10000u);
	return !got_signal;
}

/* ---------------------------------------------------------------------- */
/* Snapshots                                                              */

static void remove_image(struct bench *b)
{
	char crc[sizeof(b->img) + 8];

	unlink(b->img);
	unlink(b->meta);
	/* The checksum table libpager writes beside the image (IMAGE.crc). */
	snprintf(crc, sizeof(crc), "%s.crc", b->img);
	unlink(crc);
}

/*
 * The image just written must be the region's size, have its sidecar, and
 * hold the fill pattern (word 0 aside: writers store there) in sampled
 * pages.  Returns 0, or -EIO having said what is wrong.
 */
static int check_image(struct bench *b, const struct trial *t, uint64_t seed)
{
	uint64_t *buf = malloc(t->page_size);
	struct stat st;
	int fd = open(b->img, O_RDONLY | O_CLOEXEC), e = -EIO;

	if (fd < 0 || !buf) {
		fprintf(stderr, "snapshot: %s: %s\n", b->img,
			fd < 0 ? strerror(errno) : "out of memory");
		goto out;
	}
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size != t->npages * t->page_size) {
		fprintf(stderr, "snapshot: the image is %lld bytes, the region %zu\n",
			(long long)st.st_size, t->npages * t->page_size);
		goto out;
	}
	if (access(b->meta, F_OK) < 0) {
		fprintf(stderr, "snapshot: %s: %s, though the snapshot said done\n",
			b->meta, strerror(errno));
		goto out;
	}
	for (unsigned i = 0; i < SAMPLE_PAGES; i++) {
		uint64_t p = i == 0 ? 0 : i == 1 ? t->npages - 1 :
			     splitmix64(&seed) % t->npages;

		if (pread(fd, buf, t->page_size, (off_t)(p * t->page_size)) !=
		    (ssize_t)t->page_size) {
			fprintf(stderr, "snapshot: reading page %" PRIu64 " of the image: %s\n",
				p, strerror(errno));
			goto out;
		}
		for (size_t w = 1; w < t->words; w++) {
			if (buf[w] != fill_word(p, w)) {
				fprintf(stderr, "snapshot: image page %" PRIu64 " word %zu is "
					"0x%016" PRIx64 ", the region held 0x%016" PRIx64 "\n",
					p, w, buf[w], fill_word(p, w));
				goto out;
			}
		}
	}
	e = 0;
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	return e;
}

/*
 * Snapshots t's region to b->img, the writers (n of them) running or not,
 * moving t's phase START -> COPY -> AFTER, and fills *s.  Returns 0,
 * -EOPNOTSUPP/-ENOSYS (no snapshots here; not said), or -errno having said
 * what failed.  The image is left for the caller to check and remove.
 */
static int run_snapshot(struct bench *b, struct trial *t, struct writer *w, unsigned n,
			struct snap *s)
{
	struct pager_snapshot_opts so = { .sz = sizeof(so) };
	struct pager_snapshot_progress pr = { .sz = sizeof(pr) };
	uint64_t last_done = 0, last_change;
	int e;

	memset(s, 0, sizeof(*s));
	s->w_start = writes_now(w, n);
	set_phase(t, PH_START);
	s->t_start = now_ns();
	e = pager_region_snapshot_start(t->region, b->img, &so);
	s->t_return = now_ns();
	set_phase(t, PH_COPY);
	if (e == -EOPNOTSUPP || e == -ENOSYS)
		return e;
	if (e < 0) {
		fprintf(stderr, "snapshot: pager_region_snapshot_start %s: %s\n", b->img,
			strerror(-e));
		return e;
	}
	last_change = s->t_return;
	while ((e = pager_region_snapshot_poll(t->region, &pr)) == 0) {
		uint64_t now = now_ns();

		if (pr.pages_done != last_done) {
			last_done = pr.pages_done;
			last_change = now;
		}
		if (got_signal)
			return -EINTR;
		if (now - last_change > (uint64_t)STALL_S * 1000000000u) {
			fprintf(stderr, "snapshot: no progress for %d s (%" PRIu64 " of %" PRIu64
				" pages copied, not done)\n", STALL_S, pr.pages_done,
				pr.pages_total);
			return -ETIMEDOUT;
		}
		sleep_us(POLL_US);
	}
	s->t_done = now_ns();
	set_phase(t, PH_AFTER);
	s->w_done = writes_now(w, n);
	if (e < 0) {
		fprintf(stderr, "snapshot: pager_region_snapshot_poll: %s\n", strerror(-e));
		return e;
	}
	if (pr.status < 0) {
		fprintf(stderr, "snapshot: the snapshot failed: %s\n", strerror(-pr.status));
		return pr.status;
	}
	s->call_ns = s->t_return - s->t_start;
	s->total_ns = s->t_done - s->t_start;
	s->pause_ns = pr.pause_ns;
	s->pages_total = pr.pages_total;
	return 0;
}

static void say_unsupported(int e)
{
	printf("snapshot: snapshots not supported by this pagerd or kernel (%s): "
	       "uffd write-protect on shmem needs Linux 5.19\n", strerror(-e));
}

static int64_t resident_pages(const struct trial *t)
{
	struct pager_region_stats st = { .sz = sizeof(st) };

	return pager_region_stats(t->region, &st) == 0 ? (int64_t)st.resident : -1;
}

static int64_t wp_faults(const struct trial *t)
{
	struct pager_region_stats st = { .sz = sizeof(st) };

	return pager_region_stats(t->region, &st) == 0 ? (int64_t)st.faults_wp : -1;
}

/* ---------------------------------------------------------------------- */
/* (a) pause                                                              */

/*
 * One pause trial on a fresh region of `size`: a writer cycling over pages
 * spread across it, a snapshot, the writer's longest stall that began
 * during the start call.  Returns 0 or -errno (said, except -EOPNOTSUPP).
 */
static int pause_trial(struct bench *b, size_t size, unsigned run, struct pause_result *res)
{
	struct trial t;
	struct writer w;
	struct snap s = { 0 };
	int e;

	e = region_setup(b, size, &t);
	if (e < 0)
		return e;
	res->size = t.npages * t.page_size;
	if (run == 0)
		res->resident = (uint64_t)resident_pages(&t);
	e = writers_start(&t, &w, 1, W_SPREAD);
	if (e == 0 && !wait_ms(WARM_MS))
		e = -EINTR;
	if (e == 0)
		e = run_snapshot(b, &t, &w, 1, &s);
	writers_stop(&t, &w, 1);
	if (e == 0)
		e = check_image(b, &t, run + 1);
	remove_image(b);
	region_teardown(&t);
	if (e < 0)
		return e;
	res->pause_ns[run] = (double)s.pause_ns;
	res->stall_ns[run] = (double)w.max_gap[PH_START];
	res->call_ns[run] = (double)s.call_ns;
	return 0;
}

static double per_gib(double ns, size_t size)
{
	return ns / 1e6 / ((double)size / GIB);
}

static int run_pause(struct bench *b)
{
	size_t sizes[2] = { b->size / 4, b->size };

	if (!b->json) {
		printf("\n(a) pause: writers blocked when a snapshot starts, fully resident, "
		       "no limit; one writer cycling over %d pages spread across the region; "
		       "median of %u\n", SPREAD_PAGES, b->runs);
		printf("%8s  %8s  %9s  %7s  %12s  %7s  %9s  %s\n", "size", "resident",
		       "pause ms", "ms/GiB", "writer stall", "ms/GiB", "start() ms",
		       "target <= 10 ms/GiB (pause, stall)");
		fflush(stdout);
	}
	for (int i = 0; i < 2; i++) {
		struct pause_result *r = &b->pause[i];
		double v[MAX_RUNS];

		for (unsigned run = 0; run < b->runs; run++) {
			int e = pause_trial(b, sizes[i], run, r);

			if (e < 0)
				return e;
		}
		memcpy(v, r->pause_ns, b->runs * sizeof(double));
		r->pause_med = median(v, b->runs);
		memcpy(v, r->stall_ns, b->runs * sizeof(double));
		r->stall_med = median(v, b->runs);
		memcpy(v, r->call_ns, b->runs * sizeof(double));
		r->call_med = median(v, b->runs);
		if (!b->json) {
			double pg = per_gib(r->pause_med, r->size), sg = per_gib(r->stall_med, r->size);

			printf("%4.0f MiB  ", mib((double)r->size));
			if (r->resident != UINT64_MAX)
				printf("%4.0f MiB  ", mib((double)(r->resident * b->page_size)));
			else
				printf("%8s  ", "n/a");
			printf("%9.2f  %7.2f  %12.2f  %7.2f  %9.2f  %s, %s\n",
			       r->pause_med / 1e6, pg, r->stall_med / 1e6, sg, r->call_med / 1e6,
			       pg <= PAUSE_TARGET_MS ? "ok" : "MISSED",
			       sg <= PAUSE_TARGET_MS ? "ok" : "MISSED");
			fflush(stdout);
		}
	}
	return 0;
}

/* ---------------------------------------------------------------------- */
/* (b) throughput                                                         */

/*
 * Writes b->size bytes to b->disk in 1 MiB writes (O_DIRECT unless that is
 * refused or --disk buffered), fsyncs, removes it.  Stores bytes/s.
 * Returns 0 or -errno, having said what failed.
 */
static int disk_trial(struct bench *b, double *ret_bps)
{
	int flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC;
	int fd = -1, e = 0;
	uint64_t t0, t1;

	if (b->direct) {
		fd = open(b->disk, flags | O_DIRECT, 0600);
		b->disk_direct = fd >= 0;
	}
	if (fd < 0 && (!b->direct || errno == EINVAL))
		fd = open(b->disk, flags, 0600);
	if (fd < 0) {
		e = -errno;
		fprintf(stderr, "snapshot: %s: %s\n", b->disk, strerror(-e));
		return e;
	}
	t0 = now_ns();
	for (size_t off = 0; off < b->size && !e; off += DISK_CHUNK) {
		size_t len = b->size - off < DISK_CHUNK ? b->size - off : DISK_CHUNK;
		ssize_t n;

		/* Every chunk different: nothing below may skip or dedupe it. */
		*(uint64_t *)b->disk_buf = off;
		n = pwrite(fd, b->disk_buf, len, (off_t)off);
		if (n != (ssize_t)len)
			e = n < 0 ? -errno : -EIO;
	}
	if (!e && fsync(fd) < 0)
		e = -errno;
	t1 = now_ns();
	close(fd);
	unlink(b->disk);
	if (e < 0) {
		fprintf(stderr, "snapshot: writing %s: %s\n", b->disk, strerror(-e));
		return e;
	}
	*ret_bps = (double)b->size * 1e9 / (double)(t1 - t0);
	return 0;
}

/* One throughput trial: a fresh region, no writers.  Stores image bytes/s. */
static int tput_trial(struct bench *b, unsigned run, double *ret_bps)
{
	struct trial t;
	struct snap s = { 0 };
	int e = region_setup(b, b->size, &t);

	if (e < 0)
		return e;
	e = run_snapshot(b, &t, NULL, 0, &s);
	if (e == 0)
		e = check_image(b, &t, 100 + run);
	remove_image(b);
	region_teardown(&t);
	if (e < 0)
		return e;
	b->image_bytes = s.pages_total * b->page_size;
	*ret_bps = (double)b->image_bytes * 1e9 / (double)s.total_ns;
	return 0;
}

static int run_tput(struct bench *b)
{
	double v[MAX_RUNS];

	for (unsigned run = 0; run < b->runs; run++) {
		int e = disk_trial(b, &b->disk_bps[run]);

		if (e == 0)
			e = tput_trial(b, run, &b->snap_bps[run]);
		if (e < 0)
			return e;
	}
	memcpy(v, b->disk_bps, b->runs * sizeof(double));
	b->disk_med = median(v, b->runs);
	memcpy(v, b->snap_bps, b->runs * sizeof(double));
	b->snap_med = median(v, b->runs);
	if (!b->json) {
		double ratio = b->snap_med / b->disk_med;

		printf("\n(b) throughput: %.0f MiB region fully resident, no writers; disk and "
		       "snapshot alternating, median of %u\n", mib((double)b->size), b->runs);
		printf("%-58s  %8.1f MiB/s\n", b->disk_direct ?
		       "disk: 1 MiB writes with O_DIRECT, then fsync" :
		       "disk: 1 MiB buffered writes, then fsync", mib(b->disk_med));
		printf("%-58s  %8.1f MiB/s  (%.0f MiB image)\n",
		       "snapshot: start call to poll done (image synced)", mib(b->snap_med),
		       mib((double)b->image_bytes));
		printf("%-58s  %8.2f        target >= %.2f %s\n", "ratio snapshot/disk",
		       ratio, TPUT_TARGET, ratio >= TPUT_TARGET ? "ok" : "MISSED");
		fflush(stdout);
	}
	return 0;
}

/* ---------------------------------------------------------------------- */
/* (c) writers                                                            */

static int writers_trial(struct bench *b, struct writers_result *res)
{
	struct writer w[RAND_WRITERS];
	struct trial t;
	struct snap s = { 0 };
	uint64_t t0, t1, t2, c0, c1, c2;
	int64_t wp0 = -1, wp1 = -1;
	int e = region_setup(b, b->size, &t);

	if (e < 0)
		return e;
	memset(res, 0, sizeof(*res));
	e = writers_start(&t, w, RAND_WRITERS, W_RANDOM);
	if (e == 0 && !wait_ms(WARM_MS))
		e = -EINTR;
	set_phase(&t, PH_BEFORE);
	t0 = now_ns();
	c0 = writes_now(w, RAND_WRITERS);
	if (e == 0 && !wait_ms(b->base_ms))
		e = -EINTR;
	if (e == 0) {
		wp0 = wp_faults(&t);
		e = run_snapshot(b, &t, w, RAND_WRITERS, &s);
		wp1 = wp_faults(&t);
	}
	t1 = now_ns();
	c1 = writes_now(w, RAND_WRITERS);
	if (e == 0 && !wait_ms(b->base_ms))
		e = -EINTR;
	t2 = now_ns();
	c2 = writes_now(w, RAND_WRITERS);
	writers_stop(&t, w, RAND_WRITERS);
	if (e == 0)
		e = check_image(b, &t, 200);
	remove_image(b);
	region_teardown(&t);
	if (e < 0)
		return e;

	res->rate[PH_BEFORE] = (double)(s.w_start - c0) * 1e9 / (double)(s.t_start - t0);
	res->rate[PH_START] = (double)(s.w_done - s.w_start) * 1e9 / (double)s.total_ns;
	/* After: from done, the writes between t1 (just after done) and t2. */
	res->rate[PH_AFTER] = (double)(c2 - c1) * 1e9 / (double)(t2 - t1);
	for (unsigned i = 0; i < RAND_WRITERS; i++) {
		uint64_t during = w[i].max_gap[PH_START] > w[i].max_gap[PH_COPY] ?
				  w[i].max_gap[PH_START] : w[i].max_gap[PH_COPY];

		if (w[i].max_gap[PH_BEFORE] > res->stall[PH_BEFORE])
			res->stall[PH_BEFORE] = w[i].max_gap[PH_BEFORE];
		if (during > res->stall[PH_START])
			res->stall[PH_START] = during;
		if (w[i].max_gap[PH_AFTER] > res->stall[PH_AFTER])
			res->stall[PH_AFTER] = w[i].max_gap[PH_AFTER];
	}
	res->wp_faults = wp0 >= 0 && wp1 >= 0 ? (uint64_t)(wp1 - wp0) : UINT64_MAX;
	res->ratio = res->rate[PH_BEFORE] > 0 ? res->rate[PH_START] / res->rate[PH_BEFORE] : 0;
	return 0;
}

static int run_writers(struct bench *b)
{
	double v[MAX_RUNS], m;
	unsigned mid = 0;

	for (unsigned run = 0; run < b->runs; run++) {
		int e = writers_trial(b, &b->wr[run]);

		if (e < 0)
			return e;
	}
	/* The run whose ratio is nearest the median, reported whole. */
	for (unsigned run = 0; run < b->runs; run++)
		v[run] = b->wr[run].ratio;
	m = median(v, b->runs);
	for (unsigned run = 1; run < b->runs; run++)
		if (fabs(b->wr[run].ratio - m) < fabs(b->wr[mid].ratio - m))
			mid = run;
	b->wr_med = b->wr[mid];
	if (!b->json) {
		const struct writers_result *r = &b->wr_med;
		static const struct { enum phase ph; const char *name; } rows[] = {
			{ PH_BEFORE, "before" }, { PH_START, "during" }, { PH_AFTER, "after" },
		};

		printf("\n(c) writers: %d threads storing 8 bytes to random pages of %.0f MiB; "
		       "the run with the median ratio of %u\n", RAND_WRITERS,
		       mib((double)b->size), b->runs);
		printf("%-8s  %14s  %16s\n", "snapshot", "writes/s", "longest stall ms");
		for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
			printf("%-8s  %14.0f  %16.2f\n", rows[i].name, r->rate[rows[i].ph],
			       (double)r->stall[rows[i].ph] / 1e6);
		printf("ratio during/before %.4f", r->ratio);
		if (r->wp_faults != UINT64_MAX)
			printf("  (%" PRIu64 " write-protect faults during the snapshot)", r->wp_faults);
		printf("\n");
		fflush(stdout);
	}
	return 0;
}

/* ---------------------------------------------------------------------- */
/* Output                                                                 */

static void json_runs(const char *name, const double *v, unsigned n)
{
	printf("\"%s\": [", name);
	for (unsigned i = 0; i < n; i++)
		printf("%s%.0f", i ? ", " : "", v[i]);
	printf("]");
}

static void print_json(const struct bench *b)
{
	const struct writers_result *w = &b->wr_med;

	printf("{\n  \"benchmark\": \"snapshot\",\n  \"size\": %zu,\n  \"page_size\": %zu,\n"
	       "  \"runs\": %u,\n", b->size, b->page_size, b->runs);
	printf("  \"pause\": {\"target_ms_per_gib\": %.1f, \"results\": [\n", PAUSE_TARGET_MS);
	for (int i = 0; i < 2; i++) {
		const struct pause_result *r = &b->pause[i];

		printf("    {\"size\": %zu, \"resident_pages\": ", r->size);
		if (r->resident != UINT64_MAX)
			printf("%" PRIu64, r->resident);
		else
			printf("null");
		printf(", \"pause_ns\": %.0f, \"pause_ms_per_gib\": %.3f, \"stall_ns\": %.0f, "
		       "\"stall_ms_per_gib\": %.3f, \"start_call_ns\": %.0f, ",
		       r->pause_med, per_gib(r->pause_med, r->size), r->stall_med,
		       per_gib(r->stall_med, r->size), r->call_med);
		json_runs("pause_runs", r->pause_ns, b->runs);
		printf(", ");
		json_runs("stall_runs", r->stall_ns, b->runs);
		printf("}%s\n", i == 0 ? "," : "");
	}
	printf("  ]},\n");
	printf("  \"throughput\": {\"image_bytes\": %" PRIu64 ", \"disk_mode\": \"%s\", "
	       "\"disk_bytes_per_s\": %.0f, \"snapshot_bytes_per_s\": %.0f, \"ratio\": %.3f, "
	       "\"target\": %.2f, ", b->image_bytes, b->disk_direct ? "O_DIRECT+fsync" :
	       "buffered+fsync", b->disk_med, b->snap_med, b->snap_med / b->disk_med,
	       TPUT_TARGET);
	json_runs("disk_runs", b->disk_bps, b->runs);
	printf(", ");
	json_runs("snapshot_runs", b->snap_bps, b->runs);
	printf("},\n");
	printf("  \"writers\": {\"threads\": %d, \"before_per_s\": %.0f, \"during_per_s\": %.0f, "
	       "\"after_per_s\": %.0f, \"ratio\": %.4f, \"stall_ns\": {\"before\": %" PRIu64
	       ", \"during\": %" PRIu64 ", \"after\": %" PRIu64 "}, \"wp_faults\": ",
	       RAND_WRITERS, w->rate[PH_BEFORE], w->rate[PH_START], w->rate[PH_AFTER],
	       w->ratio, w->stall[PH_BEFORE], w->stall[PH_START], w->stall[PH_AFTER]);
	if (w->wp_faults != UINT64_MAX)
		printf("%" PRIu64 "}\n}\n", w->wp_faults);
	else
		printf("null}\n}\n");
}

/* ---------------------------------------------------------------------- */
/* Command line and setup                                                 */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: snapshot [--quick] [-s SIZE] [-r RUNS] [-d DIR] [--disk direct|buffered]\n"
		"                [--json]\n"
		"  -s, --size SIZE    the large region; the pause also runs at SIZE/4\n"
		"                     (default %s; --quick %s)\n"
		"  -r, --runs N       trials of each measurement (default %d; --quick %d)\n"
		"  -d, --dir DIR      where images and the disk baseline's file go (default %s)\n"
		"      --disk MODE    the baseline's writes: direct (O_DIRECT, default) or\n"
		"                     buffered; fsync at the end either way\n"
		"      --quick        the small configuration, for development\n"
		"      --json         print the results as JSON instead of tables\n"
		"  -h, --help         this text\n",
		DEFAULT_SIZE, QUICK_SIZE, DEFAULT_RUNS, QUICK_RUNS, DEFAULT_DIR);
}

/* Fills *b from the command line.  Returns 0, or 2 (the exit status for a
 * usage error) having said why, or -1 after --help. */
static int parse_args(struct bench *b, int argc, char **argv)
{
	enum { OPT_JSON = 0x100, OPT_QUICK, OPT_DISK };
	static const struct option longopts[] = {
		{ "size", required_argument, NULL, 's' },
		{ "runs", required_argument, NULL, 'r' },
		{ "dir", required_argument, NULL, 'd' },
		{ "disk", required_argument, NULL, OPT_DISK },
		{ "quick", no_argument, NULL, OPT_QUICK },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *size_arg = NULL;
	uint64_t size, runs = 0;
	long ps = sysconf(_SC_PAGESIZE);
	struct stat st;
	int c;

	b->dir = DEFAULT_DIR;
	b->direct = true;
	while ((c = getopt_long(argc, argv, "s:r:d:h", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			size_arg = optarg;
			break;
		case 'r':
			if (parse_u64(optarg, &runs) < 0 || runs < 1 || runs > MAX_RUNS) {
				fprintf(stderr, "snapshot: -r: expected 1..%d, got '%s'\n",
					MAX_RUNS, optarg);
				return 2;
			}
			break;
		case 'd':
			b->dir = optarg;
			break;
		case OPT_DISK:
			if (!strcmp(optarg, "direct") || !strcmp(optarg, "buffered")) {
				b->direct = !strcmp(optarg, "direct");
				break;
			}
			fprintf(stderr, "snapshot: --disk: expected direct or buffered, got '%s'\n",
				optarg);
			return 2;
		case OPT_QUICK:
			b->quick = true;
			break;
		case OPT_JSON:
			b->json = true;
			break;
		case 'h':
			usage(stdout);
			return -1;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "snapshot: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}

	b->page_size = ps > 0 ? (size_t)ps : 4096;
	if (!size_arg)
		size_arg = b->quick ? QUICK_SIZE : DEFAULT_SIZE;
	/* SIZE/4 must still be a few MiB; and the disk file is written in
	 * whole 1 MiB chunks (O_DIRECT wants aligned lengths). */
	if (parse_size(size_arg, &size) < 0 || size < (16u << 20) || size > (1ULL << 40) ||
	    size % DISK_CHUNK) {
		fprintf(stderr, "snapshot: -s: expected a size from 16M to 1T in whole MiB, "
			"got '%s'\n", size_arg);
		return 2;
	}
	b->size = (size_t)size;
	b->runs = runs ? (unsigned)runs : b->quick ? QUICK_RUNS : DEFAULT_RUNS;
	b->base_ms = b->quick ? QUICK_BASE_MS : BASE_MS;
	if (stat(b->dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "snapshot: -d: %s is not a directory\n", b->dir);
		return 2;
	}
	if (snprintf(b->img, sizeof(b->img), "%s/pagerd-bench-snapshot.%d.img", b->dir,
		     (int)getpid()) >= (int)sizeof(b->img) ||
	    snprintf(b->disk, sizeof(b->disk), "%s/pagerd-bench-snapshot.%d.disk", b->dir,
		     (int)getpid()) >= (int)sizeof(b->disk)) {
		fprintf(stderr, "snapshot: -d: path too long\n");
		return 2;
	}
	snprintf(b->meta, sizeof(b->meta), "%s.meta", b->img);
	return 0;
}

/* A private pagerd with no limit, and the disk baseline's buffer.  Returns
 * 0 or 1 having said what failed. */
static int setup(struct bench *b)
{
	struct pager_opts o = { .sz = sizeof(o), .flags = PAGER_OPEN_FORCE_PRIVATE };
	struct pager_info info = { .sz = sizeof(info) };
	uint64_t seed = FILL_SEED;
	int e;

	/* "Fully resident, no limit": a private daemon would take these. */
	unsetenv("PAGER_MEMORY_LIMIT");
	unsetenv("PAGER_SWAP");
	e = pager_open(&b->pager, &o);
	if (e < 0) {
		fprintf(stderr, "snapshot: pager_open: %s (is $PAGERD a pagerd binary?)\n",
			strerror(-e));
		return 1;
	}
	if (pager_get_info(b->pager, &info) == 0)
		b->daemon_pid = info.daemon_pid;
	e = posix_memalign(&b->disk_buf, 4096, DISK_CHUNK);
	if (e) {
		fprintf(stderr, "snapshot: out of memory\n");
		return 1;
	}
	for (size_t i = 0; i < DISK_CHUNK / 8; i++)
		((uint64_t *)b->disk_buf)[i] = splitmix64(&seed);
	return 0;
}

int main(int argc, char **argv)
{
	struct bench b = { 0 };
	struct sigaction sa = { .sa_handler = on_signal };
	int status = 1, e;

	e = parse_args(&b, argc, argv);
	if (e)
		return e < 0 ? 0 : e;
	if (!pager_region_snapshot_start || !pager_region_snapshot_poll) {
		printf("snapshot: snapshot support not in this libpager\n");
		return BENCH_SKIP;
	}
	/* The handlers only set a flag; the loops look at it and clean up. */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);

	if (setup(&b))
		goto out;
	if (!b.json) {
		printf("snapshot: %.0f MiB region, %u run%s; private pagerd pid %d, no memory "
		       "limit; files in %s\n", mib((double)b.size), b.runs,
		       b.runs == 1 ? "" : "s", (int)b.daemon_pid, b.dir);
		fflush(stdout);
	}
	e = run_pause(&b);
	if (e == 0)
		e = run_tput(&b);
	if (e == 0)
		e = run_writers(&b);
	if (e == -EOPNOTSUPP || e == -ENOSYS) {
		say_unsupported(e);
		status = BENCH_SKIP;
	} else if (e == 0) {
		if (b.json)
			print_json(&b);
		status = 0;
	}
out:
	pager_close(b.pager);
	remove_image(&b);
	unlink(b.disk);
	free(b.disk_buf);
	if (got_signal) {
		fprintf(stderr, "snapshot: interrupted by %s; cleaned up\n", strsignal(got_signal));
		return 128 + got_signal;
	}
	fflush(stdout);
	return status;
}
