/* SPDX-License-Identifier: MIT */
/*
 * swap: a region larger than its memory limit, served by pagerd (eviction
 * with Clock or FIFO to its io_uring swap store) against the kernel's own
 * swap (anonymous memory in a memory cgroup with the same limit, swapping to
 * a swap file on the same file system), same workload, same run.
 *
 * Each configuration (backing x thread count) runs in a child process of
 * its own, so that the kernel side can be put in a memory cgroup and nothing
 * (page cache, swap slots, a daemon's state) carries over from one to the
 * next.  Within a child the phases run one after the other on the same
 * memory, so that every phase after the first starts, as an application
 * would, with most pages in swap:
 *
 *   seq-write  every page written in full (first touch, then eviction);
 *              each thread writes one contiguous chunk
 *   rand-read  uniformly random pages read
 *   rand-rmw   random pages read, checked, and a counter in them incremented
 *   seq-read   every page read, contiguous chunks per thread
 *   skewed     90% of accesses to a hot set smaller than the limit (scattered
 *              over the region), 10% uniform; measured after an untimed pass
 *              over the hot set
 *
 * Every page holds its index and a check word derived from it (the rest is
 * pseudo-random filler, so that neither side can skip I/O for zero pages or
 * compress them): every read checks both.  With --compress K the filler is
 * a random 1/K of the page repeated, so that a compressor takes the page to
 * about 1/K (generated, never zeros), and with --pool PERCENT a fourth
 * backing, "pool", runs: pagerd (Clock) with its compressed pool taking up
 * to PERCENT of the limit; --zswap turns the kernel's zswap on for the
 * kernel side (and off again at the end).  seq-read also adds up the
 * rand-rmw counters, which must come to the number of increments; it runs
 * after rand-rmw for that reason (a separate pass over a mostly swapped-out
 * region would cost as much as seq-read itself).  A wrong value is a
 * failure: the benchmark doubles as an integrity test of swap-out and
 * swap-in.
 *
 * The backings take turns step by step.  This VM's disk drifts by 30-50%
 * over minutes, so children run one after the other (a minute each) met
 * different disks, and the same code gave ratios from 1.1 to 1.9 run to
 * run.  So for each thread count all children (kernel, pager/clock,
 * pager/fifo) exist at once, each with its own pagerd, but only one runs
 * a step at a time: every pass, warm-up and round runs for each backing
 * back to back before any goes on to the next step (see serve_turns()).
 * The random phases run in rounds and report the median round; the
 * sequential ones are one pass each.  Times are from the first thread
 * starting to the last one finishing, per page or access.
 *
 * The kernel baseline needs root, the cgroup v1 memory controller and a
 * file system that takes swap files; without them the pager side still
 * runs and the program exits 77 at the end, saying why.
 *
 * Exit status: 0 success, 1 failure (wrong data, a side that could not run,
 * pagerd dying), 2 usage, 77 kernel baseline unavailable, 128+N on signal N.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pager.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/swap.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "sides.h"

/*
 * libpager declares pager_region_stats() but does not export it yet.  A weak
 * reference links either way: the address is NULL until a libpager that
 * has it is loaded, and the statistics are then shown as n/a.
 */
#pragma weak pager_region_stats

extern char **environ;

#define MAX_THREADS      64
#define MAX_THREAD_LIST  8
#define MAX_ROUNDS       15
#define MAX_EXTRA_ARGS   16
#define DEFAULT_SIZE     "1G"
#define DEFAULT_LIMIT    "256M"
#define QUICK_SIZE       "256M"
#define QUICK_LIMIT      "64M"
#define DEFAULT_THREADS  "1,8"
#define DEFAULT_ROUNDS   3
#define DEFAULT_SWAP_DIR "/var/tmp"
#define HOT_PERCENT      90
#define SEED             0x243f6a8885a308d3ULL
#define STAMP_MAGIC      0x7061676572642d62ULL  /* "pagerd-b" */
#define CHECK_SEED       0x13198a2e03707344ULL
#define FILL_SEED        0xa4093822299f31d0ULL
#define STOP_TIMEOUT_MS  10000

/* In the order they run. */
enum phase { PH_WRITE, PH_RANDREAD, PH_RMW, PH_SEQREAD, PH_SKEWED, NR_PHASES };
/* An untimed job the workers also do. */
enum { JOB_WARMUP = NR_PHASES };

static const struct {
	const char *name;
	double target;          /* pager/kernel ratio the issue asks for */
	bool random;            /* runs in rounds of random accesses */
	const char *unit;
} phase_info[NR_PHASES] = {
	[PH_WRITE] = { "seq-write", 1.0, false, "page" },
	[PH_RANDREAD] = { "rand-read", 1.1, true, "access" },
	[PH_RMW] = { "rand-rmw", 1.1, true, "access" },
	[PH_SEQREAD] = { "seq-read", 0.5, false, "page" },
	[PH_SKEWED] = { "skewed", 0.7, true, "access" },
};

static const char *job_name(int job)
{
	return job < NR_PHASES ? phase_info[job].name : "warm-up";
}

enum backing { BK_KERNEL, BK_CLOCK, BK_FIFO, BK_POOL, NR_BACKINGS };

static const char *const backing_name[NR_BACKINGS] = {
	[BK_KERNEL] = "kernel",
	[BK_CLOCK] = "clock",
	[BK_FIFO] = "fifo",
	[BK_POOL] = "pool",
};

/* One phase as one child measured it; sent to the parent over a pipe. */
struct phase_result {
	uint32_t ran;
	uint32_t rounds;
	double ns[MAX_ROUNDS];  /* per page or access, one per round */
	double median;
	uint64_t accesses;      /* over all rounds */
	int64_t misses;         /* accesses that waited for a swap-in, -1 unknown
				 * (the pool backing: for a disk read) */
	int64_t pool_hits;      /* the pool backing: swap-ins from the pool */
	int64_t soft_faults;    /* the process's minor faults, -1 unknown */
	/* pagerd's counters over the phase (-1: the kernel, or unknown):
	 * write-protect faults, and evictions without and with a write */
	int64_t wp_faults, evict_clean, evict_dirty;
};

struct child_result {
	int32_t ok;
	struct phase_result ph[NR_PHASES];
	int64_t resident_after_write;   /* bytes, -1 unknown */
	int64_t swapped_after_write;    /* bytes, -1 unknown */
	int64_t peak;                   /* bytes charged to the cgroup at most, -1 unknown */
	uint64_t elapsed_ns;
	int32_t daemon_pid;
	uint32_t stats_ok;
	struct pager_region_stats stats; /* at the end of the child */
};

/* A child's result as the parent keeps it. */
struct outcome {
	bool ran;               /* the child ran and reported */
	struct child_result res;
};

/*
 * What a child sends the parent (see serve_turns()): before each step,
 * MSG_STEP naming it, then it waits for a go byte; at the end, MSG_RESULT.
 * One message a packet on a SOCK_SEQPACKET pair, so that the parent reads
 * whole messages and can check their sizes.
 */
enum { MSG_STEP = 1, MSG_RESULT = 2 };

struct turn_msg {
	uint32_t kind;
	uint16_t job;           /* MSG_STEP: a phase or JOB_WARMUP */
	uint16_t round;         /* MSG_STEP: 0 for a pass */
	struct child_result res; /* MSG_RESULT only */
};

#define STEP_MSG_SIZE offsetof(struct turn_msg, res)

/* Where a backing's child is at the current thread count. */
enum side_state {
	SIDE_OFF,               /* not running */
	SIDE_BUSY,              /* setting up, or running the step it was given */
	SIDE_ASKED,             /* waiting for its turn for step `label` */
	SIDE_DONE,              /* reported and reaped */
};

/* One backing's child, and its own pagerd for a pager backing. */
struct side {
	enum side_state state;
	bool asked;             /* label holds the last step it asked for */
	unsigned label;
	pid_t child_pid, pagerd_pid;
	int fd;                 /* our end of the child's socket pair, -1 none */
	int pidfd;              /* pagerd's, -1 none */
	char pswap[PATH_MAX + 32];      /* pagerd's swap file */
	char sock[PATH_MAX + 32];
};

/* Everything one run of the program works with (the parent's state; a
 * child gets a copy). */
struct bench {
	/* configuration */
	size_t page_size;
	size_t npages;
	size_t size;
	uint64_t limit;
	uint64_t hot_bytes;
	size_t hot_pages;
	uint64_t swap_size;
	uint64_t rand_accesses;  /* rand-read and rand-rmw, over all rounds */
	uint64_t skew_accesses;  /* skewed, over all rounds */
	unsigned rounds;
	unsigned nthreads_list;
	unsigned threads[MAX_THREAD_LIST];
	unsigned phase_mask;
	unsigned compress;       /* filler: a random 1/compress of the page, repeated */
	unsigned pool_percent;   /* > 0: the pool backing runs, with this share */
	bool zswap;              /* the kernel side with zswap on */
	bool zswap_was_on, zswap_set;
	bool json, kernel_on, pager_on, quick;
	const char *swap_dir;
	const char *pagerd;
	const char *extra_args[MAX_EXTRA_ARGS];
	unsigned nextra;

	/* what the parent set up, and must take down: the work directory,
	 * the kernel's swap file and the current kernel child's cgroup
	 * (bench/sides.h; ks.unavail empty: the kernel baseline runs) */
	struct kside ks;
	struct side side[NR_BACKINGS];   /* at the current thread count */

	/* what the parent found out */
	bool has_policy, has_swap_size;
	char fifo_unavail[256];          /* empty: pagerd runs with --policy fifo */
	double disk_read_ns;             /* 4 KiB O_DIRECT read at depth 1, median; 0 unknown */
	bool failed;
	struct outcome out[MAX_THREAD_LIST][NR_BACKINGS];
};

static const char *plural(unsigned n)
{
	return n == 1 ? "" : "s";
}

/* ---------------------------------------------------------------------- */
/* Page contents                                                          */

static inline uint64_t stamp_word(size_t page)
{
	return STAMP_MAGIC ^ page;
}

static inline uint64_t check_word(size_t page)
{
	uint64_t s = CHECK_SEED ^ page;

	return splitmix64(&s);
}

/* Word 0 the stamp, word 1 the rand-rmw counter, the last word the check
 * word, the rest filler: random, or (compress K > 1) a random 1/K of the
 * page repeated. */
static unsigned fill_compress = 1;

static void fill_page(uint64_t *p, size_t page, size_t words)
{
	uint64_t s = FILL_SEED ^ page;
	size_t fresh = words / fill_compress;

	p[0] = stamp_word(page);
	p[1] = 0;
	for (size_t w = 2; w < words - 1; w++)
		p[w] = w < fresh ? splitmix64(&s) : p[2 + (w - 2) % (fresh > 2 ? fresh - 2 : 1)];
	p[words - 1] = check_word(page);
}

/* ---------------------------------------------------------------------- */
/* Workers (in a child)                                                    */

/* The memory one child works on. */
struct run {
	const struct bench *b;
	enum backing backing;
	unsigned nthreads;
	char *base;
	size_t words;           /* 64-bit words per page */
	uint64_t hot_mult;      /* hot page j is (j * hot_mult) % npages */
	struct pager_region *region;
	uint64_t rmw_total;
	int fd;                 /* to the parent: turns and the result */
	uint64_t turn_start;    /* when this child got its turn, 0 between */
	uint64_t busy_ns;       /* time in its own turns */
};

struct worker {
	pthread_t tid;
	struct gate *gate;
	const struct run *r;
	int job;
	size_t first, count;    /* pages (sequential jobs) or accesses (random) */
	uint64_t seed;
	struct timespec start, end;
	uint64_t rmw;           /* counters incremented */
	uint64_t sum;           /* counters seen (PH_SEQREAD) */
	bool bad;
	size_t bad_page;
	uint64_t bad_stamp, bad_check;
};

static inline size_t hot_page(const struct run *r, size_t j)
{
	return (size_t)(((unsigned __int128)j * r->hot_mult) % r->b->npages);
}

/* Checks one page; false (and the worker records it) if it is wrong. */
static inline bool check_page(struct worker *w, size_t page)
{
	const struct run *r = w->r;
	const volatile uint64_t *p =
		(const volatile uint64_t *)(r->base + page * r->b->page_size);
	uint64_t s = p[0], c = p[r->words - 1];

	if (s == stamp_word(page) && c == check_word(page))
		return true;
	w->bad = true;
	w->bad_page = page;
	w->bad_stamp = s;
	w->bad_check = c;
	return false;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	const struct run *r = w->r;
	size_t npages = r->b->npages, ps = r->b->page_size;
	size_t end = w->first + w->count;
	uint64_t s = w->seed;

	if (gate_wait(w->gate) < 0)
		return NULL;

	clock_gettime(CLOCK_MONOTONIC, &w->start);
	switch (w->job) {
	case PH_WRITE:
		for (size_t i = w->first; i < end; i++)
			fill_page((uint64_t *)(r->base + i * ps), i, r->words);
		break;
	case PH_SEQREAD:
		for (size_t i = w->first; i < end && check_page(w, i); i++)
			w->sum += ((volatile uint64_t *)(r->base + i * ps))[1];
		break;
	case JOB_WARMUP:
		for (size_t j = w->first; j < end && check_page(w, hot_page(r, j)); j++)
			;
		break;
	case PH_RANDREAD:
		for (size_t n = 0; n < w->count; n++)
			if (!check_page(w, (size_t)(splitmix64(&s) % npages)))
				break;
		break;
	case PH_SKEWED:
		for (size_t n = 0; n < w->count; n++) {
			bool hot = splitmix64(&s) % 100 < HOT_PERCENT;
			uint64_t x = splitmix64(&s);
			size_t page = hot ? hot_page(r, (size_t)(x % r->b->hot_pages)) :
					    (size_t)(x % npages);

			if (!check_page(w, page))
				break;
		}
		break;
	case PH_RMW:
		for (size_t n = 0; n < w->count; n++) {
			size_t page = (size_t)(splitmix64(&s) % npages);

			if (!check_page(w, page))
				break;
			/* Several threads may pick the same page. */
			__atomic_fetch_add((uint64_t *)(r->base + page * ps) + 1, 1,
					   __ATOMIC_RELAXED);
			w->rmw++;
		}
		break;
	}
	clock_gettime(CLOCK_MONOTONIC, &w->end);
	return NULL;
}

/*
 * Runs one job with r->nthreads threads: sequential jobs split the pages
 * [0, total) (the hot set for JOB_WARMUP) into one contiguous chunk per
 * thread; random jobs give each thread total/nthreads accesses and a seed
 * of its own.  Stores the time from the first thread starting to the last
 * one finishing in *ret_ns, and adds what the threads counted to *ret_rmw
 * and *ret_sum (either may be NULL).  Returns 0, -EIO on wrong data (said),
 * or -errno if threads could not be started (said).
 */
static int run_job(struct run *r, int job, uint64_t total, uint64_t seed,
		   uint64_t *ret_ns, uint64_t *ret_rmw, uint64_t *ret_sum)
{
	struct gate gate = GATE_INIT;
	unsigned n = r->nthreads, created;
	struct worker *w = calloc(n, sizeof(*w));
	bool sequential = job == PH_WRITE || job == PH_SEQREAD || job == JOB_WARMUP;
	uint64_t start = UINT64_MAX, end = 0;
	int e = 0;

	if (!w) {
		fprintf(stderr, "swap: out of memory\n");
		return -ENOMEM;
	}
	for (created = 0; created < n; created++) {
		struct worker *t = &w[created];
		uint64_t lo = total * created / n, hi = total * (created + 1) / n;

		t->gate = &gate;
		t->r = r;
		t->job = job;
		t->first = sequential ? (size_t)lo : 0;
		t->count = (size_t)(hi - lo);
		t->seed = seed ^ ((uint64_t)(created + 1) * 0x9e3779b97f4a7c15ULL);
		e = pthread_create(&t->tid, NULL, worker_main, t);
		if (e) {
			fprintf(stderr, "swap: starting thread %u: %s\n", created, strerror(e));
			e = -e;
			break;
		}
	}
	gate_set(&gate, e ? -1 : 1);
	for (unsigned i = 0; i < created; i++)
		pthread_join(w[i].tid, NULL);
	if (!e) {
		for (unsigned i = 0; i < n; i++) {
			uint64_t s = ts_ns(&w[i].start), f = ts_ns(&w[i].end);

			if (s < start)
				start = s;
			if (f > end)
				end = f;
			if (ret_rmw)
				*ret_rmw += w[i].rmw;
			if (ret_sum)
				*ret_sum += w[i].sum;
			if (w[i].bad && !e) {
				fprintf(stderr, "swap: FAILURE: %s, %s, %u thread%s: page %zu "
					"reads stamp %#" PRIx64 " check %#" PRIx64 ", "
					"expected %#" PRIx64 " %#" PRIx64 "\n",
					backing_name[r->backing], job_name(job),
					r->nthreads, plural(r->nthreads), w[i].bad_page, w[i].bad_stamp,
					w[i].bad_check, stamp_word(w[i].bad_page),
					check_word(w[i].bad_page));
				e = -EIO;
			}
		}
		*ret_ns = end - start;
	}
	free(w);
	gate_destroy(&gate);
	return e;
}

/* The time since this child got its turn goes to r->busy_ns. */
static void end_turn(struct run *r)
{
	if (r->turn_start)
		r->busy_ns += now_ns() - r->turn_start;
	r->turn_start = 0;
}

/*
 * Asks the parent for the turn to run one step (job, round), and waits for
 * it: only one child at a time touches memory or the disk, so that every
 * backing runs each step under the same disk (see serve_turns()).  The
 * child's previous step ends here.  Returns 0, or -EPIPE if the parent
 * does not answer (said).
 */
static int take_turn(struct run *r, int job, unsigned round)
{
	struct turn_msg m = { .kind = MSG_STEP, .job = (uint16_t)job,
			      .round = (uint16_t)round };
	ssize_t n = -1;
	char go;

	end_turn(r);
	if (send(r->fd, &m, STEP_MSG_SIZE, MSG_NOSIGNAL) == (ssize_t)STEP_MSG_SIZE)
		while ((n = recv(r->fd, &go, 1, 0)) < 0 && errno == EINTR)
			;
	if (n != 1) {
		fprintf(stderr, "swap: the %s child (%u thread%s): no turn for %s: %s\n",
			backing_name[r->backing], r->nthreads, plural(r->nthreads),
			job_name(job), n < 0 ? strerror(errno) : "the parent is gone");
		return -EPIPE;
	}
	r->turn_start = now_ns();
	return 0;
}

/* Accesses that had to wait for a swap-in so far, or -1 if unknown: for the
 * kernel, this process's major faults; for pagerd, its swap-in count. */
static int64_t misses_now(const struct run *r)
{
	if (r->backing == BK_KERNEL) {
		struct rusage ru;

		return getrusage(RUSAGE_SELF, &ru) == 0 ? (int64_t)ru.ru_majflt : -1;
	}
	if (pager_region_stats) {
		struct pager_region_stats st = { .sz = sizeof(st) };

		if (pager_region_stats(r->region, &st) == 0)
			return (int64_t)(st.swap_ins - st.pool_hits);
	}
	return -1;
}

/* Swap-ins the pool served so far (pagerd), or -1. */
static int64_t pool_hits_now(const struct run *r)
{
	struct pager_region_stats st = { .sz = sizeof(st) };

	if (r->backing == BK_KERNEL || !pager_region_stats ||
	    pager_region_stats(r->region, &st) < 0)
		return -1;
	return (int64_t)st.pool_hits;
}

/* pagerd's write-protect faults and clean and dirty evictions so far
 * (ret[0..2]), or -1 each for the kernel or if unknown. */
static void pager_counts_now(const struct run *r, int64_t ret[3])
{
	struct pager_region_stats st = { .sz = sizeof(st) };

	ret[0] = ret[1] = ret[2] = -1;
	if (r->backing == BK_KERNEL || !pager_region_stats ||
	    pager_region_stats(r->region, &st) < 0)
		return;
	ret[0] = (int64_t)st.faults_wp;
	ret[1] = (int64_t)st.evict_clean;
	ret[2] = (int64_t)st.evict_dirty;
}

static void pager_counts_end(const struct run *r, const int64_t at0[3],
			     struct phase_result *pr)
{
	int64_t at1[3];

	pager_counts_now(r, at1);
	pr->wp_faults = at0[0] >= 0 && at1[0] >= 0 ? at1[0] - at0[0] : -1;
	pr->evict_clean = at0[1] >= 0 && at1[1] >= 0 ? at1[1] - at0[1] : -1;
	pr->evict_dirty = at0[2] >= 0 && at1[2] >= 0 ? at1[2] - at0[2] : -1;
}

/* The process's minor faults so far (page-table misses the kernel served
 * alone, such as re-mapping a page the Clock hand sampled), or -1. */
static int64_t soft_faults_now(void)
{
	struct rusage ru;

	return getrusage(RUSAGE_SELF, &ru) == 0 ? (int64_t)ru.ru_minflt : -1;
}

/* One random phase in b->rounds rounds of total/rounds accesses each, each
 * round a turn of its own; returns 0 or -errno (said). */
static int run_rounds(struct run *r, enum phase ph, uint64_t total,
		      struct phase_result *pr)
{
	unsigned rounds = r->b->rounds;
	uint64_t per = total / rounds ? total / rounds : 1;
	int64_t m0 = misses_now(r), m1, f0 = soft_faults_now(), c0[3];
	int64_t h0 = pool_hits_now(r);
	double sorted[MAX_ROUNDS];

	pager_counts_now(r, c0);

	for (unsigned i = 0; i < rounds; i++) {
		uint64_t ns = 0;
		int e = take_turn(r, ph, i);

		if (e < 0)
			return e;
		e = run_job(r, ph, per, SEED ^ ((uint64_t)ph << 56) ^ ((uint64_t)i << 48),
			    &ns, &r->rmw_total, NULL);
		if (e < 0)
			return e;
		pr->ns[i] = (double)ns / (double)per;
	}
	m1 = misses_now(r);
	pr->ran = 1;
	pr->rounds = rounds;
	pr->accesses = per * rounds;
	pr->misses = m0 >= 0 && m1 >= 0 ? m1 - m0 : -1;
	pr->pool_hits = h0 >= 0 ? pool_hits_now(r) - h0 : -1;
	pr->soft_faults = f0 >= 0 ? soft_faults_now() - f0 : -1;
	pager_counts_end(r, c0, pr);
	memcpy(sorted, pr->ns, rounds * sizeof(double));
	pr->median = median(sorted, rounds);
	return 0;
}

/* One sequential pass over every page, in one turn, adding the counters in
 * them to *ret_sum (may be NULL); returns 0 or -errno (said). */
static int run_pass(struct run *r, enum phase ph, struct phase_result *pr,
		    uint64_t *ret_sum)
{
	int64_t m0 = misses_now(r), m1, f0 = soft_faults_now(), c0[3];
	int64_t h0 = pool_hits_now(r);
	uint64_t ns = 0;
	int e;

	pager_counts_now(r, c0);
	e = take_turn(r, ph, 0);

	if (e < 0)
		return e;
	e = run_job(r, ph, r->b->npages, 0, &ns, NULL, ret_sum);
	if (e < 0)
		return e;
	m1 = misses_now(r);
	pr->ran = 1;
	pr->rounds = 1;
	pr->ns[0] = pr->median = (double)ns / (double)r->b->npages;
	pr->accesses = r->b->npages;
	pr->misses = m0 >= 0 && m1 >= 0 ? m1 - m0 : -1;
	pr->pool_hits = h0 >= 0 ? pool_hits_now(r) - h0 : -1;
	pr->soft_faults = f0 >= 0 ? soft_faults_now() - f0 : -1;
	pager_counts_end(r, c0, pr);
	return 0;
}

/* How much of the pager region is in memory (page cache), from mincore. */
static int64_t region_resident(const struct run *r)
{
	size_t n = r->b->npages;
	unsigned char *vec = malloc(n);
	int64_t res = 0;

	if (!vec)
		return -1;
	if (mincore(r->base, r->b->size, vec) < 0) {
		free(vec);
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		res += vec[i] & 1;
	free(vec);
	return res * (int64_t)r->b->page_size;
}

/*
 * The phases, in order, on memory the caller set up; fills *res.  The
 * write always runs (every later phase reads what it wrote), timed or not,
 * and so does the read pass after rand-rmw that checks its counters.  Each
 * pass, the warm-up and each round is a step that waits for its turn.
 * Returns 0, or -errno having said what went wrong (-EIO: wrong data).
 */
static int run_workload(struct run *r, unsigned mask, struct child_result *res)
{
	const struct bench *b = r->b;
	struct phase_result scratch = { 0 };
	uint64_t ns = 0, sum = 0;
	int e;

	e = run_pass(r, PH_WRITE, mask & (1u << PH_WRITE) ? &res->ph[PH_WRITE] : &scratch,
		     NULL);
	if (e < 0)
		return e;
	if (r->backing == BK_KERNEL) {
		res->resident_after_write = bench_proc_status_kb("VmRSS");
		res->swapped_after_write = bench_proc_status_kb("VmSwap");
	} else {
		struct pager_region_stats st = { .sz = sizeof(st) };

		res->resident_after_write = region_resident(r);
		res->swapped_after_write = -1;
		if (pager_region_stats && pager_region_stats(r->region, &st) == 0)
			res->swapped_after_write = (int64_t)(st.swapped * b->page_size);
	}

	if (mask & (1u << PH_RANDREAD)) {
		e = run_rounds(r, PH_RANDREAD, b->rand_accesses, &res->ph[PH_RANDREAD]);
		if (e < 0)
			return e;
	}
	if (mask & (1u << PH_RMW)) {
		r->rmw_total = 0;
		e = run_rounds(r, PH_RMW, b->rand_accesses, &res->ph[PH_RMW]);
		if (e < 0)
			return e;
	}
	if (mask & ((1u << PH_SEQREAD) | (1u << PH_RMW))) {
		e = run_pass(r, PH_SEQREAD, mask & (1u << PH_SEQREAD) ?
			     &res->ph[PH_SEQREAD] : &scratch, &sum);
		if (e < 0)
			return e;
		/* Every increment must have landed, in its page. */
		if (sum != r->rmw_total) {
			fprintf(stderr, "swap: FAILURE: %s, %u thread%s: the rand-rmw counters "
				"add up to %" PRIu64 ", expected %" PRIu64 "\n",
				backing_name[r->backing], r->nthreads, plural(r->nthreads),
				sum, r->rmw_total);
			return -EIO;
		}
	}
	if (mask & (1u << PH_SKEWED)) {
		/* Untimed: bring the hot set in, so that the rounds measure
		 * the steady state rather than the first fetch of it. */
		e = take_turn(r, JOB_WARMUP, 0);
		if (e < 0)
			return e;
		e = run_job(r, JOB_WARMUP, b->hot_pages, 0, &ns, NULL, NULL);
		if (e < 0)
			return e;
		e = run_rounds(r, PH_SKEWED, b->skew_accesses, &res->ph[PH_SKEWED]);
		if (e < 0)
			return e;
	}
	return 0;
}

/* The kernel child: joins the cgroup, then maps and touches its memory
 * (pages are charged to the cgroup of the process that first touches
 * them).  Returns 0 or -errno (said). */
static int kernel_child(const struct bench *b, struct run *r, unsigned mask,
			struct child_result *res)
{
	char path[PATH_MAX + 128], pid[32];
	int fd, n, e;

	snprintf(path, sizeof(path), "%s/cgroup.procs", b->ks.cg);
	n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, pid, (size_t)n) != n) {
		e = -errno;
		fprintf(stderr, "swap: joining %s: %s\n", b->ks.cg, strerror(-e));
		if (fd >= 0)
			close(fd);
		return e;
	}
	close(fd);

	r->base = mmap(NULL, b->size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (r->base == MAP_FAILED) {
		e = -errno;
		fprintf(stderr, "swap: mmap %zu bytes: %s\n", b->size, strerror(-e));
		return e;
	}
	/* Every page a 4 KiB page, as in a libpager region (EINVAL without
	 * CONFIG_TRANSPARENT_HUGEPAGE: then there are none anyway). */
	(void)madvise(r->base, b->size, MADV_NOHUGEPAGE);
	e = run_workload(r, mask, res);
	res->peak = bench_cg_read(b->ks.cg, "memory.max_usage_in_bytes", NULL);
	munmap(r->base, b->size);
	return e;
}

/* The pager child: a region on the pagerd the parent started for this
 * backing.  Returns 0 or -errno (said). */
static int pager_child(const struct bench *b, struct run *r, unsigned mask,
		       struct child_result *res)
{
	const struct pager_opts popts = {
		.sz = sizeof(popts),
		.socket_path = b->side[r->backing].sock,
		.flags = PAGER_OPEN_NO_PRIVATE,
	};
	const struct pager_region_opts ropts = {
		.sz = sizeof(ropts),
		.name = "swap-bench",
		.memory_limit = b->limit,
	};
	struct pager_info info = { .sz = sizeof(info) };
	struct pager *p = NULL;
	int e, d;

	e = pager_open(&p, &popts);
	if (e < 0) {
		fprintf(stderr, "swap: pager_open %s: %s\n", popts.socket_path, strerror(-e));
		return e;
	}
	if (pager_get_info(p, &info) == 0)
		res->daemon_pid = info.daemon_pid;
	e = pager_region_create(p, b->size, &ropts, &r->region);
	if (e < 0) {
		fprintf(stderr, "swap: pager_region_create %zu bytes, limit %" PRIu64 ": %s\n",
			b->size, b->limit, strerror(-e));
		pager_close(p);
		return e;
	}
	r->base = pager_region_addr(r->region);
	e = run_workload(r, mask, res);
	res->stats.sz = sizeof(res->stats);
	if (pager_region_stats && pager_region_stats(r->region, &res->stats) == 0)
		res->stats_ok = 1;
	d = pager_region_destroy(r->region);
	if (d < 0) {
		fprintf(stderr, "swap: pager_region_destroy: %s\n", strerror(-d));
		if (!e)
			e = d;
	}
	pager_close(p);
	return e;
}

/* A child's whole life: runs one configuration, taking its turns from the
 * parent over fd, and sends its result there (elapsed_ns: the time it held
 * the turn).  Never returns. */
static void child_main(const struct bench *b, enum backing k, unsigned nthreads,
		       unsigned mask, int fd)
{
	struct turn_msg m = {
		.kind = MSG_RESULT,
		.res = {
			.resident_after_write = -1,
			.swapped_after_write = -1,
			.peak = -1,
		},
	};
	struct run r = {
		.b = b,
		.backing = k,
		.nthreads = nthreads,
		.words = b->page_size / sizeof(uint64_t),
		.hot_mult = bench_pick_hot_mult(b->npages),
		.fd = fd,
	};
	int e;

	e = k == BK_KERNEL ? kernel_child(b, &r, mask, &m.res) :
			     pager_child(b, &r, mask, &m.res);
	/* Its teardown (munmap, region destroy) was part of its last turn. */
	end_turn(&r);
	m.res.ok = e == 0;
	m.res.elapsed_ns = r.busy_ns;
	if (send(fd, &m, sizeof(m), MSG_NOSIGNAL) != (ssize_t)sizeof(m))
		_exit(1);
	_exit(e == 0 ? 0 : 1);
}

/* ---------------------------------------------------------------------- */
/* The parent: what it sets up and takes down                             */

/* The directory all swap files go in (the same file system for all). */
static int make_workdir(struct bench *b)
{
	int e = bench_make_workdir(&b->ks, b->swap_dir);

	if (e < 0)
		return e;
	/* Each pager backing's pagerd runs beside the others: a swap file
	 * and a socket each. */
	for (int k = 0; k < NR_BACKINGS; k++) {
		if (k == BK_KERNEL)
			continue;
		snprintf(b->side[k].pswap, sizeof(b->side[k].pswap), "%s/%s.swap",
			 b->ks.workdir, backing_name[k]);
		snprintf(b->side[k].sock, sizeof(b->side[k].sock), "%s/%s.sock",
			 b->ks.workdir, backing_name[k]);
	}
	return 0;
}

/* Which of the options under development pagerd takes, from its --help. */
static int probe_pagerd(struct bench *b)
{
	char *argv[] = { (char *)b->pagerd, (char *)"--help", NULL };
	static char help[16384];
	int e = bench_run_command(&b->ks.oldmask, argv, help, sizeof(help));

	if (e) {
		fprintf(stderr, "swap: %s --help: %s\n", b->pagerd,
			e < 0 ? strerror(-e) : "failed");
		return e < 0 ? e : -EINVAL;
	}
	b->has_policy = strstr(help, "--policy") != NULL;
	b->has_swap_size = strstr(help, "--swap-size") != NULL;
	if (!b->has_policy)
		snprintf(b->fifo_unavail, sizeof(b->fifo_unavail),
			 "pagerd has no --policy");
	return 0;
}

/*
 * Starts the pagerd of one pager backing with a fresh swap file of its
 * own, on a socket of its own bound here and passed by socket activation
 * (as tests/harness.c does) so the child can connect at once.  Returns 0
 * or -errno (said).
 */
static int pagerd_start(struct bench *b, enum backing k)
{
	struct side *sd = &b->side[k];
	char limit[32], swap_size[32];
	const char *argv[32 + MAX_EXTRA_ARGS];
	int argc = 0, e;

	snprintf(limit, sizeof(limit), "%" PRIu64, b->limit);
	snprintf(swap_size, sizeof(swap_size), "%" PRIu64, b->swap_size);
	argv[argc++] = b->pagerd;
	argv[argc++] = "--socket";
	argv[argc++] = sd->sock;
	argv[argc++] = "--log-level";
	argv[argc++] = "warning";
	argv[argc++] = "--memory-limit";
	argv[argc++] = limit;
	argv[argc++] = "--swap";
	argv[argc++] = sd->pswap;
	if (b->has_swap_size) {
		argv[argc++] = "--swap-size";
		argv[argc++] = swap_size;
	}
	if (b->has_policy) {
		argv[argc++] = "--policy";
		argv[argc++] = k == BK_FIFO ? "fifo" : "clock";
	}
	if (k == BK_POOL) {
		static char pct[16];

		snprintf(pct, sizeof(pct), "%u", b->pool_percent);
		argv[argc++] = "--pool-percent";
		argv[argc++] = pct;
	}
	for (unsigned i = 0; i < b->nextra; i++)
		argv[argc++] = b->extra_args[i];
	argv[argc] = NULL;

	unlink(sd->pswap);
	/* Without --swap-size, the file must exist already. */
	if (!b->has_swap_size && (e = bench_make_file(sd->pswap, b->swap_size)) < 0) {
		fprintf(stderr, "swap: cannot allocate %s: %s\n", sd->pswap, strerror(-e));
		return e;
	}
	sd->pagerd_pid = bench_pagerd_spawn(&b->ks, sd->sock, argv);
	if (sd->pagerd_pid < 0) {
		e = sd->pagerd_pid;
		sd->pagerd_pid = 0;
		return e;
	}
	if (!b->json) {
		printf("  pagerd:");
		for (int i = 0; i < argc; i++)
			printf(" %s", argv[i]);
		printf("\n");
		fflush(stdout);
	}
	return 0;
}

/* Stops backing k's pagerd: SIGTERM, then SIGKILL after STOP_TIMEOUT_MS.
 * Returns 0 if it exited in order (or was not running), else -1 having
 * said how it ended. */
static int pagerd_stop(struct bench *b, enum backing k)
{
	struct side *sd = &b->side[k];
	int st, rc = 0;

	if (sd->pidfd >= 0)
		close(sd->pidfd);
	sd->pidfd = -1;
	if (!sd->pagerd_pid)
		return 0;
	kill(sd->pagerd_pid, SIGTERM);
	st = bench_wait_timeout(sd->pagerd_pid, STOP_TIMEOUT_MS);
	if (st == -ETIMEDOUT) {
		fprintf(stderr, "swap: the %s pagerd did not exit %d s after SIGTERM: "
			"killing it\n", backing_name[k], STOP_TIMEOUT_MS / 1000);
		kill(sd->pagerd_pid, SIGKILL);
		st = bench_wait_timeout(sd->pagerd_pid, STOP_TIMEOUT_MS);
		rc = -1;
	} else if (st >= 0 && WIFSIGNALED(st)) {
		fprintf(stderr, "swap: the %s pagerd died of %s\n", backing_name[k],
			strsignal(WTERMSIG(st)));
		rc = -1;
	} else if (st >= 0 && WEXITSTATUS(st)) {
		fprintf(stderr, "swap: the %s pagerd exited with status %d\n",
			backing_name[k], WEXITSTATUS(st));
		rc = -1;
	}
	sd->pagerd_pid = 0;
	unlink(sd->pswap);
	unlink(sd->sock);
	return rc;
}

/*
 * Takes down what start_side() set up at a thread count, in the order that
 * keeps each step cheap: the children first (the kernel child must be gone
 * before its cgroup can go, and before swapoff, which would otherwise read
 * its pages back in), then the pagerds, then the cgroup.  Returns 0, or -1
 * if a pagerd did not exit in order (said).
 */
static int stop_sides(struct bench *b)
{
	int rc = 0;

	for (int k = 0; k < NR_BACKINGS; k++) {
		struct side *sd = &b->side[k];

		if (sd->child_pid > 0) {
			kill(sd->child_pid, SIGKILL);
			while (waitpid(sd->child_pid, NULL, 0) < 0 && errno == EINTR)
				;
			sd->child_pid = 0;
		}
		if (sd->fd >= 0)
			close(sd->fd);
		sd->fd = -1;
	}
	for (int k = 0; k < NR_BACKINGS; k++) {
		if (pagerd_stop(b, (enum backing)k) < 0)
			rc = -1;
		b->side[k].state = SIDE_OFF;
	}
	bench_cgroup_remove(&b->ks);
	return rc;
}

/* Everything the parent set up, taken down (see stop_sides() for the
 * order). */
#define ZSWAP_ENABLED "/sys/module/zswap/parameters/enabled"

/* Turns the kernel's zswap on (and remembers how it was) or back to how it
 * was.  Returns 0 or -errno (said). */
static int zswap_set(struct bench *b, bool on)
{
	char was = 'N';
	int fd = open(ZSWAP_ENABLED, O_RDWR | O_CLOEXEC), e = 0;

	if (fd < 0 || (on && read(fd, &was, 1) != 1)) {
		e = -errno;
		fprintf(stderr, "swap: %s: %s\n", ZSWAP_ENABLED, strerror(errno));
	} else {
		if (on)
			b->zswap_was_on = was == 'Y' || was == '1';
		if (pwrite(fd, on || b->zswap_was_on ? "Y" : "N", 1, 0) != 1) {
			e = -errno;
			fprintf(stderr, "swap: writing %s: %s\n", ZSWAP_ENABLED, strerror(errno));
		} else {
			b->zswap_set = on;
		}
	}
	if (fd >= 0)
		close(fd);
	return e;
}

static void teardown(struct bench *b)
{
	stop_sides(b);
	if (b->zswap_set)
		zswap_set(b, false);
	/* The pagerds' files first: bench_kernel_teardown() removes the
	 * work directory. */
	for (int k = 0; k < NR_BACKINGS && b->ks.workdir[0]; k++) {
		if (k == BK_KERNEL)
			continue;
		unlink(b->side[k].pswap);
		unlink(b->side[k].sock);
	}
	bench_kernel_teardown(&b->ks);
}

/* Whether backing k runs (at every thread count). */
static bool backing_runs(const struct bench *b, enum backing k)
{
	switch (k) {
	case BK_KERNEL:
		return b->kernel_on && !b->ks.unavail[0];
	case BK_CLOCK:
		return b->pager_on;
	case BK_FIFO:
		return b->pager_on && !b->fifo_unavail[0] &&
		       (b->phase_mask & (1u << PH_SKEWED));
	case BK_POOL:
		return b->pager_on && b->pool_percent;
	default:
		return false;
	}
}

/* In a freshly forked bench child: the parent's ends of the other
 * children's socket pairs and its pidfds are not the child's to hold (a
 * child holding a sibling's pair would keep it from seeing the parent
 * go). */
static void close_inherited(const struct bench *b)
{
	for (int k = 0; k < NR_BACKINGS; k++) {
		if (b->side[k].fd >= 0)
			close(b->side[k].fd);
		if (b->side[k].pidfd >= 0)
			close(b->side[k].pidfd);
	}
}

/*
 * Starts backing k's side for one thread count: its cgroup (kernel) or its
 * own pagerd, then its child, which sets up its memory and asks for its
 * first turn.  Returns 0 or -EIO (said); stop_sides() takes down whatever
 * it started.
 */
static int start_side(struct bench *b, enum backing k, unsigned nthreads)
{
	struct side *sd = &b->side[k];
	unsigned mask = b->phase_mask;
	char why[256];
	int sv[2];

	/* FIFO is only compared on the skewed mix.  Skipping the phases in
	 * between does not favour either policy: the mix faults in several
	 * limits' worth of pages, so its median round is in a steady state
	 * that does not remember them. */
	if (k == BK_FIFO)
		mask &= (1u << PH_WRITE) | (1u << PH_SKEWED);
	sd->asked = false;
	if (k == BK_KERNEL && bench_cgroup_make(&b->ks, b->limit, why, sizeof(why)) < 0) {
		fprintf(stderr, "swap: %s\n", why);
		return -EIO;
	}
	if (k != BK_KERNEL) {
		if (pagerd_start(b, k) < 0)
			return -EIO;
		/* Without pidfds (before Linux 5.3) a dead pagerd hangs its
		 * child until the runner's timeout. */
		sd->pidfd = (int)syscall(SYS_pidfd_open, sd->pagerd_pid, 0);
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		fprintf(stderr, "swap: socketpair: %s\n", strerror(errno));
		return -EIO;
	}
	fflush(stdout);
	fflush(stderr);
	sd->child_pid = fork();
	if (sd->child_pid < 0) {
		fprintf(stderr, "swap: fork: %s\n", strerror(errno));
		sd->child_pid = 0;
		close(sv[0]);
		close(sv[1]);
		return -EIO;
	}
	if (sd->child_pid == 0) {
		close(sv[0]);
		close_inherited(b);
		bench_child_signals(&b->ks.oldmask);
		child_main(b, k, nthreads, mask, sv[1]);
	}
	close(sv[1]);
	sd->fd = sv[0];
	sd->state = SIDE_BUSY;
	return 0;
}

/* Reaps backing k's child, which is gone or going, and says how it ended.
 * Returns -EIO. */
static int child_gone(struct bench *b, enum backing k, unsigned nthreads)
{
	struct side *sd = &b->side[k];
	int st = 0;

	while (waitpid(sd->child_pid, &st, 0) < 0 && errno == EINTR)
		;
	sd->child_pid = 0;
	sd->state = SIDE_DONE;
	if (WIFSIGNALED(st))
		fprintf(stderr, "swap: the %s child (%u thread%s) died of %s%s\n",
			backing_name[k], nthreads, plural(nthreads), strsignal(WTERMSIG(st)),
			k == BK_KERNEL && WTERMSIG(st) == SIGKILL ?
			" (out of memory in its cgroup?)" : "");
	else
		fprintf(stderr, "swap: the %s child (%u thread%s) failed\n",
			backing_name[k], nthreads, plural(nthreads));
	return -EIO;
}

/*
 * Takes one message from backing k's child, which had the turn (or was
 * setting up): a request for its next step, checked (a known job, a round
 * in range, after its last step), or its result, kept in *o, after which
 * the child is reaped.  Returns 0, or -EIO if the child died, failed or
 * sent something malformed (said).
 */
static int receive(struct bench *b, enum backing k, unsigned nthreads,
		   struct outcome *o)
{
	struct side *sd = &b->side[k];
	struct turn_msg m = { 0 };
	ssize_t n = recv(sd->fd, &m, sizeof(m), MSG_DONTWAIT | MSG_TRUNC);
	int st;

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n <= 0)
		return child_gone(b, k, nthreads);
	if (sd->state != SIDE_BUSY)
		goto malformed;
	if (m.kind == MSG_STEP && n == (ssize_t)STEP_MSG_SIZE) {
		bool random = m.job < NR_PHASES && phase_info[m.job].random;
		unsigned stage, label;

		if (m.job > JOB_WARMUP || m.round >= (random ? b->rounds : 1))
			goto malformed;
		/* The warm-up comes before the skewed rounds. */
		stage = m.job == JOB_WARMUP ? PH_SKEWED :
			m.job == PH_SKEWED ? PH_SKEWED + 1 : m.job;
		label = stage * MAX_ROUNDS + m.round;
		if (sd->asked && label <= sd->label)
			goto malformed;
		sd->asked = true;
		sd->label = label;
		sd->state = SIDE_ASKED;
		return 0;
	}
	if (m.kind != MSG_RESULT || n != (ssize_t)sizeof(m))
		goto malformed;
	o->res = m.res;
	while (waitpid(sd->child_pid, &st, 0) < 0 && errno == EINTR)
		;
	sd->child_pid = 0;
	sd->state = SIDE_DONE;
	if (!WIFEXITED(st) || WEXITSTATUS(st) || !o->res.ok) {
		fprintf(stderr, "swap: the %s child (%u thread%s) failed\n",
			backing_name[k], nthreads, plural(nthreads));
		return -EIO;
	}
	o->ran = true;
	return 0;
malformed:
	fprintf(stderr, "swap: the %s child (%u thread%s) sent a malformed message "
		"(kind %" PRIu32 ", %zd bytes)\n", backing_name[k], nthreads,
		plural(nthreads), m.kind, n);
	return -EIO;
}

/*
 * Gives the turn to the child whose step comes first among those waiting;
 * *cur is the label of the step under way, *backward the order its
 * backings take it in.  Returns 0, or -EIO if the child is gone (said).
 */
static int grant_turn(struct bench *b, unsigned nthreads, unsigned *cur,
		      bool *backward)
{
	unsigned min = UINT_MAX;
	int pick = -1;

	for (int k = 0; k < NR_BACKINGS; k++)
		if (b->side[k].state == SIDE_ASKED && b->side[k].label < min)
			min = b->side[k].label;
	if (min == UINT_MAX)
		return 0;
	if (min != *cur) {
		if (*cur != UINT_MAX)
			*backward = !*backward;
		*cur = min;
	}
	for (int i = 0; i < NR_BACKINGS && pick < 0; i++) {
		int k = *backward ? NR_BACKINGS - 1 - i : i;

		if (b->side[k].state == SIDE_ASKED && b->side[k].label == min)
			pick = k;
	}
	b->side[pick].state = SIDE_BUSY;
	if (send(b->side[pick].fd, "g", 1, MSG_NOSIGNAL) == 1)
		return 0;
	if (errno == EPIPE || errno == ECONNRESET)
		return child_gone(b, (enum backing)pick, nthreads);
	fprintf(stderr, "swap: giving the %s child (%u thread%s) its turn: %s\n",
		backing_name[pick], nthreads, plural(nthreads), strerror(errno));
	return -EIO;
}

/*
 * Runs the children of thread count ti (started by start_side()) to the
 * end, taking turns, and keeps their results in b->out[ti].
 *
 * Why turns: this VM's disk drifts by 30-50% over minutes, so backings run
 * one after the other (a minute each) met different disks and the ratios
 * moved from 1.1 to 1.9 run to run.  Here every child exists at once, but
 * a turn goes out only when none is working: then each live child waits
 * with a request naming its next step, and the smallest step label goes
 * first.  So each step (a pass, the warm-up, a round) runs for every
 * backing back to back before any backing goes on; the FIFO child, which
 * skips the phases in between, waits at its warm-up until the others get
 * there, and its skewed rounds alternate with theirs.  The backings of one
 * step take it in their order, reversed at each new step, so that a drift
 * within a step does not always favour the same one.
 *
 * Waits with our signals unblocked, so that ^C or a timeout's SIGTERM ends
 * the wait, and watches each pager child's own pagerd (pidfd): a child
 * whose daemon died would wait on its next fault for ever.  Returns 0 once
 * every child reported; -EINTR once a signal arrived; -EIO if a child
 * failed or a pagerd exited (said).  Leaves children still running to
 * stop_sides().
 */
static int serve_turns(struct bench *b, unsigned ti)
{
	unsigned nthreads = b->threads[ti], cur = UINT_MAX;
	bool backward = false;

	for (;;) {
		struct pollfd pfd[2 * NR_BACKINGS];
		int who[2 * NR_BACKINGS], nmsg = 0, n;
		bool busy = false, live = false;

		if (bench_interrupted())
			return -EINTR;
		for (int k = 0; k < NR_BACKINGS; k++) {
			busy |= b->side[k].state == SIDE_BUSY;
			live |= b->side[k].state == SIDE_BUSY || b->side[k].state == SIDE_ASKED;
		}
		if (!live)
			return 0;
		if (!busy && grant_turn(b, nthreads, &cur, &backward) < 0)
			return -EIO;

		/* The children's ends first, then the pagerds. */
		for (int k = 0; k < NR_BACKINGS; k++)
			if (b->side[k].state == SIDE_BUSY || b->side[k].state == SIDE_ASKED) {
				pfd[nmsg] = (struct pollfd){ .fd = b->side[k].fd, .events = POLLIN };
				who[nmsg++] = k;
			}
		n = nmsg;
		for (int i = 0; i < nmsg; i++)
			if (b->side[who[i]].pidfd >= 0) {
				pfd[n] = (struct pollfd){ .fd = b->side[who[i]].pidfd,
							  .events = POLLIN };
				who[n++] = who[i];
			}
		if (ppoll(pfd, (nfds_t)n, NULL, &b->ks.oldmask) < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "swap: poll: %s\n", strerror(errno));
			return -EIO;
		}
		/* A message before its pagerd's exit: the result may be on its
		 * way. */
		for (int i = 0; i < nmsg; i++)
			if (pfd[i].revents &&
			    receive(b, (enum backing)who[i], nthreads, &b->out[ti][who[i]]) < 0)
				return -EIO;
		for (int i = nmsg; i < n; i++)
			if (pfd[i].revents && b->side[who[i]].state != SIDE_DONE) {
				fprintf(stderr, "swap: pagerd exited during the %s run (%u thread%s): "
					"stopping it\n", backing_name[who[i]], nthreads,
					plural(nthreads));
				return -EIO;
			}
	}
}

/*
 * One thread count: every running backing's child at once, taking turns
 * step by step (see serve_turns()), then all taken down.  Returns 0;
 * -EINTR if a signal ended it; -EIO if a child or pagerd failed (said),
 * which fails the benchmark.
 */
static int run_threads(struct bench *b, unsigned ti)
{
	int e = 0;

	for (int k = 0; k < NR_BACKINGS && !e; k++)
		if (backing_runs(b, (enum backing)k))
			e = start_side(b, (enum backing)k, b->threads[ti]);
	if (!e)
		e = serve_turns(b, ti);
	if (stop_sides(b) < 0 && !e)
		e = -EIO;
	return e;
}

/* ---------------------------------------------------------------------- */
/* Output                                                                  */

static const struct phase_result *phase_of(const struct outcome *o, enum phase ph)
{
	return o->ran && o->res.ph[ph].ran ? &o->res.ph[ph] : NULL;
}

/* Whether pagerd kept to the limit after the write (a little over it is
 * watermark slack).  Until it evicts, its times are not swap times and the
 * ratios say nothing about the targets. */
static bool pager_evicted(const struct bench *b, const struct outcome *o)
{
	return o->ran && o->res.resident_after_write >= 0 &&
	       o->res.resident_after_write <= (int64_t)(b->limit + b->limit / 8);
}

static void print_sanity(const struct bench *b, enum backing k, unsigned nthreads,
			 const struct outcome *o)
{
	const struct child_result *r = &o->res;

	printf("  %s, %u thread%s: %.1f s in its own turns; after seq-write ",
	       backing_name[k], nthreads, plural(nthreads), (double)r->elapsed_ns / 1e9);
	if (k == BK_KERNEL) {
		printf("RSS %.0f MiB, swap %.0f MiB; cgroup peak %.0f MiB (limit %.0f MiB)\n",
		       bench_mib(r->resident_after_write), bench_mib(r->swapped_after_write),
		       bench_mib(r->peak), bench_mib((int64_t)b->limit));
		if (r->swapped_after_write <= 0)
			printf("  WARNING: the kernel did not swap: the baseline is not "
			       "measuring swap\n");
		else if (r->peak > (int64_t)b->limit)
			printf("  WARNING: the cgroup went over its limit\n");
	} else {
		printf("resident %.0f MiB (limit %.0f MiB)", bench_mib(r->resident_after_write),
		       bench_mib((int64_t)b->limit));
		if (r->swapped_after_write >= 0)
			printf(", swapped %.0f MiB", bench_mib(r->swapped_after_write));
		printf("\n");
		if (k == BK_POOL && r->stats_ok && r->stats.sz >= sizeof(r->stats))
			printf("  pool at the end: %.0f MiB holding %" PRIu64 " pages (%.0f MiB, "
			       "stored at %.2fx), %" PRIu64 " hits, %" PRIu64 " spilled, %" PRIu64
			       " too big\n", bench_mib((int64_t)r->stats.pool_bytes),
			       r->stats.pool_pages,
			       bench_mib((int64_t)(r->stats.pool_pages * b->page_size)),
			       r->stats.pool_stored_bytes ? (double)r->stats.pool_stores *
			       (double)b->page_size / (double)r->stats.pool_stored_bytes : 0.0,
			       r->stats.pool_hits, r->stats.pool_spills, r->stats.pool_rejects);
		if (!pager_evicted(b, o))
			printf("  NOTE: pagerd did not keep to the limit (no eviction yet?): "
			       "its numbers are not swap numbers\n");
	}
	fflush(stdout);
}

static void print_misses(const struct phase_result *p)
{
	if (p && p->misses >= 0 && p->accesses)
		printf("  %6.3f", (double)p->misses / (double)p->accesses);
	else
		printf("  %6s", "n/a");
}

/*
 * One thread count: kernel and pager (Clock) time per page or access, the
 * ratio against the issue's target, and how many accesses waited for a
 * swap-in (kernel: major faults; pagerd: its swap-in count) so that one can
 * see that swap really happened on both sides.
 */
static void print_table(const struct bench *b, unsigned ti)
{
	const struct outcome *ko = &b->out[ti][BK_KERNEL], *po = &b->out[ti][BK_CLOCK];
	bool evicted = pager_evicted(b, po);

	printf("\n%u thread%s          kernel      pager  pager/             "
	       "misses/access\n", b->threads[ti], b->threads[ti] == 1 ? " " : "s");
	printf("%-12s   ns/access  ns/access  kernel  target       kernel   pager\n",
	       "phase");
	for (int ph = 0; ph < NR_PHASES; ph++) {
		const struct phase_result *k = phase_of(ko, ph), *p = phase_of(po, ph);

		if (!(b->phase_mask & (1u << ph)))
			continue;
		printf("%-12s", phase_info[ph].name);
		if (k)
			printf("  %10.0f", k->median);
		else
			printf("  %10s", "n/a");
		if (p)
			printf("  %9.0f", p->median);
		else
			printf("  %9s", "n/a");
		if (k && p && k->median > 0) {
			double ratio = p->median / k->median;

			printf("  %6.2f  <= %.1f %-6s", ratio, phase_info[ph].target,
			       !evicted ? "-" :
			       ratio <= phase_info[ph].target ? "ok" : "MISSED");
		} else {
			printf("  %6s  <= %.1f %-6s", "n/a", phase_info[ph].target, "");
		}
		print_misses(k);
		print_misses(p);
		printf("\n");
	}
	if (po->ran && !evicted)
		printf("(-: pagerd did not keep to the limit, so the ratio is not a "
		       "swap ratio)\n");
	/* What write prediction trades: write-protect faults (a round trip
	 * each) against evictions that must write (clean ones need none). */
	printf("%-12s  pagerd: wp faults/access  evictions  clean share\n", "phase");
	for (int ph = 0; ph < NR_PHASES; ph++) {
		const struct phase_result *p = phase_of(po, ph);
		int64_t ev;

		if (!(b->phase_mask & (1u << ph)) || !p || p->wp_faults < 0 || !p->accesses)
			continue;
		ev = p->evict_clean + p->evict_dirty;
		printf("%-12s  %24.3f  %9" PRId64 "  %11.3f\n", phase_info[ph].name,
		       (double)p->wp_faults / (double)p->accesses, ev,
		       ev > 0 ? (double)p->evict_clean / (double)ev : 0.0);
	}
	fflush(stdout);
}

/*
 * The compressed pool against the kernel and against pagerd without it, at
 * one thread count: time per access, the ratios, and per access the misses
 * that read the disk and (pool) the swap-ins the pool served.
 */
static void print_ns(const struct phase_result *p, int width)
{
	if (p)
		printf("  %*.0f", width, p->median);
	else
		printf("  %*s", width, "n/a");
}

static void print_pool_table(const struct bench *b, unsigned ti)
{
	const struct outcome *ko = &b->out[ti][BK_KERNEL], *co = &b->out[ti][BK_CLOCK],
			     *po = &b->out[ti][BK_POOL];

	printf("\n%u thread%s, data compressing ~%ux, pool up to %u%% of the limit\n",
	       b->threads[ti], plural(b->threads[ti]), b->compress, b->pool_percent);
	printf("%-12s  kernel ns    off ns   pool ns  pool/kernel  pool/off   "
	       "disk misses/access: kernel     off    pool   pool hits/access\n", "phase");
	for (int ph = 0; ph < NR_PHASES; ph++) {
		const struct phase_result *k = phase_of(ko, ph), *c = phase_of(co, ph),
					  *p = phase_of(po, ph);

		if (!(b->phase_mask & (1u << ph)))
			continue;
		printf("%-12s", phase_info[ph].name);
		print_ns(k, 9);
		print_ns(c, 8);
		print_ns(p, 8);
		if (k && p && k->median > 0)
			printf("  %11.2f", p->median / k->median);
		else
			printf("  %11s", "n/a");
		if (c && p && c->median > 0)
			printf("  %8.2f", p->median / c->median);
		else
			printf("  %8s", "n/a");
		printf("                    ");
		print_misses(k);
		print_misses(c);
		print_misses(p);
		if (p && p->pool_hits >= 0 && p->accesses)
			printf("   %6.3f", (double)p->pool_hits / (double)p->accesses);
		printf("\n");
	}
	fflush(stdout);
}

/*
 * The disk's own cost of a miss: the median time of a 4 KiB O_DIRECT read
 * at a random offset, one at a time, from a 256 MiB file in the swap
 * directory.  Sets b->disk_read_ns, or leaves it 0 (said) if it cannot.
 */
static void probe_disk(struct bench *b)
{
	enum { PROBE_BYTES = 256 << 20, CHUNK = 1 << 20, READS = 2001 };
	char path[PATH_MAX + 16];
	double t[READS];
	void *buf = NULL;
	unsigned seed = 1;
	int fd;

	snprintf(path, sizeof(path), "%s/disk.probe", b->ks.workdir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_DIRECT | O_CLOEXEC, 0600);
	if (fd < 0 || posix_memalign(&buf, CHUNK, CHUNK) != 0)
		goto out;
	memset(buf, 0x5a, CHUNK);
	for (off_t off = 0; off < PROBE_BYTES; off += CHUNK)
		if (pwrite(fd, buf, CHUNK, off) != CHUNK)
			goto out;
	if (fsync(fd) < 0)
		goto out;
	for (int i = 0; i < READS; i++) {
		off_t off = (off_t)(rand_r(&seed) % (PROBE_BYTES / 4096)) * 4096;
		int64_t t0 = now_ns();

		if (pread(fd, buf, 4096, off) != 4096)
			goto out;
		t[i] = (double)(now_ns() - t0);
	}
	qsort(t, READS, sizeof(t[0]), cmp_double);
	b->disk_read_ns = t[READS / 2];
out:
	if (!b->disk_read_ns)
		fprintf(stderr, "swap: cannot time the disk's reads in %s: %s\n",
			b->ks.workdir, strerror(errno));
	if (fd >= 0)
		close(fd);
	unlink(path);
	free(buf);
}

static void print_skewed(const struct bench *b)
{
	printf("\nskewed mix: %d%% of accesses to a %.0f MiB hot set, the rest uniform; "
	       "Clock must beat FIFO\n", HOT_PERCENT, bench_mib((int64_t)b->hot_bytes));
	if (b->fifo_unavail[0])
		printf("(FIFO: n/a, %s)\n", b->fifo_unavail);
	printf("threads   kernel ns   clock ns    fifo ns  clock/fifo   "
	       "misses/access: kernel   clock    fifo   soft faults/access: "
	       "kernel   clock    fifo\n");
	for (unsigned ti = 0; ti < b->nthreads_list; ti++) {
		const struct phase_result *p[NR_BACKINGS];

		for (int k = 0; k < NR_BACKINGS; k++)
			p[k] = phase_of(&b->out[ti][k], PH_SKEWED);
		printf("%7u", b->threads[ti]);
		for (int k = 0; k < NR_BACKINGS; k++) {
			if (p[k])
				printf("  %9.0f", p[k]->median);
			else
				printf("  %9s", "n/a");
		}
		if (p[BK_CLOCK] && p[BK_FIFO] && p[BK_FIFO]->median > 0) {
			double ratio = p[BK_CLOCK]->median / p[BK_FIFO]->median;
			bool evicted = pager_evicted(b, &b->out[ti][BK_CLOCK]) &&
				       pager_evicted(b, &b->out[ti][BK_FIFO]);

			printf("  %6.2f %-4s         ", ratio,
			       !evicted ? "-" : ratio < 1 ? "ok" : "LOST");
		} else {
			printf("  %6s              ", "n/a");
		}
		for (int k = 0; k < NR_BACKINGS; k++)
			print_misses(p[k]);
		printf("                    ");
		for (int k = 0; k < NR_BACKINGS; k++) {
			if (p[k] && p[k]->soft_faults >= 0 && p[k]->accesses)
				printf("  %6.3f", (double)p[k]->soft_faults /
						   (double)p[k]->accesses);
			else
				printf("  %6s", "n/a");
		}
		printf("\n");
	}
	/*
	 * What the 0.7 target asks at one thread.  No policy holding `limit`
	 * of `size` can miss less than the cold share of accesses times the
	 * share of the region it cannot hold; a miss costs at least one read
	 * at depth 1.  So pagerd's time per access is at least floor below.
	 */
	const struct phase_result *k1 = NULL;

	for (unsigned ti = 0; ti < b->nthreads_list; ti++)
		if (b->threads[ti] == 1)
			k1 = phase_of(&b->out[ti][BK_KERNEL], PH_SKEWED);
	if (b->disk_read_ns > 0 && k1 && k1->median > 0) {
		double min_miss = (100 - HOT_PERCENT) / 100.0 *
				  (1 - (double)b->limit / (double)b->size);
		double floor_ns = min_miss * b->disk_read_ns;

		printf("floor at 1 thread: this disk's 4 KiB read at depth 1 takes %.0f us "
		       "(median); no policy misses less than %.3f per access, so no pager "
		       "can do better than %.0f ns per access, %.2f of the kernel's %.0f\n",
		       b->disk_read_ns / 1000, min_miss, floor_ns, floor_ns / k1->median,
		       k1->median);
	}
	fflush(stdout);
}

static void json_phase(const struct phase_result *p)
{
	if (!p) {
		printf("null");
		return;
	}
	printf("{\"median\": %.1f, \"rounds\": [", p->median);
	for (unsigned i = 0; i < p->rounds; i++)
		printf("%s%.1f", i ? ", " : "", p->ns[i]);
	printf("], \"accesses\": %" PRIu64 ", \"soft_faults\": %" PRId64
	       ", \"misses\": ", p->accesses, p->soft_faults);
	if (p->misses >= 0)
		printf("%" PRId64, p->misses);
	else
		printf("null");
	if (p->wp_faults >= 0)
		printf(", \"wp_faults\": %" PRId64 ", \"evict_clean\": %" PRId64
		       ", \"evict_dirty\": %" PRId64, p->wp_faults, p->evict_clean,
		       p->evict_dirty);
	printf("}");
}

static void print_json(const struct bench *b)
{
	printf("{\n  \"benchmark\": \"swap\",\n  \"size\": %zu,\n  \"limit\": %" PRIu64
	       ",\n  \"hot\": %" PRIu64 ",\n  \"page_size\": %zu,\n  \"rounds\": %u,\n",
	       b->size, b->limit, b->hot_bytes, b->page_size, b->rounds);
	printf("  \"unit\": \"ns per page or access\",\n");
	printf("  \"kernel_unavailable\": ");
	if (b->ks.unavail[0])
		bench_json_string(b->ks.unavail);
	else
		printf("null");
	printf(",\n  \"fifo_unavailable\": ");
	if (b->fifo_unavail[0])
		bench_json_string(b->fifo_unavail);
	else
		printf("null");
	printf(",\n");
	printf("  \"results\": [\n");
	for (unsigned ti = 0; ti < b->nthreads_list; ti++) {
		bool first = true;

		printf("    {\"threads\": %u", b->threads[ti]);
		for (int k = 0; k < NR_BACKINGS; k++) {
			const struct outcome *o = &b->out[ti][k];

			printf(",\n     \"%s\": ", backing_name[k]);
			if (!o->ran) {
				printf("null");
				continue;
			}
			printf("{\"resident_after_write\": %" PRId64 ", "
			       "\"swapped_after_write\": %" PRId64 ", \"peak\": %" PRId64,
			       o->res.resident_after_write, o->res.swapped_after_write,
			       o->res.peak);
			if (k != BK_KERNEL)
				printf(", \"kept_to_limit\": %s",
				       pager_evicted(b, o) ? "true" : "false");
			for (int ph = 0; ph < NR_PHASES; ph++) {
				printf(", \"%s\": ", phase_info[ph].name);
				json_phase(phase_of(o, ph));
			}
			printf("}");
		}
		printf(",\n     \"ratios\": {");
		for (int ph = 0; ph < NR_PHASES; ph++) {
			const struct phase_result *k = phase_of(&b->out[ti][BK_KERNEL], ph);
			const struct phase_result *p = phase_of(&b->out[ti][BK_CLOCK], ph);

			if (!k || !p || k->median <= 0)
				continue;
			printf("%s\"%s\": %.3f", first ? "" : ", ", phase_info[ph].name,
			       p->median / k->median);
			first = false;
		}
		printf("}}%s\n", ti + 1 < b->nthreads_list ? "," : "");
	}
	printf("  ]\n}\n");
}

/* ---------------------------------------------------------------------- */
/* Command line                                                           */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: swap [--quick] [-s SIZE] [-l LIMIT] [-t THREADS,...] [--phases LIST]\n"
		"            [--kernel-only | --pager-only] [--json] [more options]\n"
		"  -s, --size SIZE        region size (default %s; --quick %s)\n"
		"  -l, --limit SIZE       memory limit: pagerd's, the region's and the\n"
		"                         kernel cgroup's (default %s; --quick %s)\n"
		"  -t, --threads LIST     comma-separated thread counts (default %s)\n"
		"      --quick            the small configuration, for development\n"
		"      --phases LIST      of seq-write,rand-read,rand-rmw,seq-read,skewed\n"
		"                         (default all; the write runs untimed if left out)\n"
		"      --hot SIZE         hot set of the skewed mix (default limit/4)\n"
		"  -n, --accesses N       rand-read and rand-rmw accesses (default pages/4)\n"
		"      --skew-accesses N  skewed-mix accesses (default pages*8)\n"
		"  -r, --rounds N         rounds of the random phases, median shown (default %d)\n"
		"      --kernel-only      only the kernel baseline\n"
		"      --pager-only       only pagerd\n"
		"      --swap-dir DIR     where both swap files go (default %s)\n"
		"      --pagerd-arg ARG   add ARG to pagerd's command line (repeatable)\n"
		"      --json             print the results as JSON instead of tables\n"
		"      --compress K       page filler a random 1/K repeated: compresses\n"
		"                         about K times (default 1: incompressible)\n"
		"      --pool PERCENT     also run pagerd with its compressed pool taking\n"
		"                         up to PERCENT of the limit (backing \"pool\")\n"
		"      --zswap            the kernel side with zswap on (restored after)\n"
		"  -h, --help             this text\n"
		"pagerd is $PAGERD, else the pagerd beside this program's build directory.\n",
		DEFAULT_SIZE, QUICK_SIZE, DEFAULT_LIMIT, QUICK_LIMIT, DEFAULT_THREADS,
		DEFAULT_ROUNDS, DEFAULT_SWAP_DIR);
}

static int parse_phases(const char *arg, unsigned *ret)
{
	char *copy = strdup(arg), *save = NULL, *tok;
	unsigned mask = 0;
	int e = 0;

	if (!copy)
		return -ENOMEM;
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		int ph;

		for (ph = 0; ph < NR_PHASES; ph++)
			if (!strcmp(tok, phase_info[ph].name))
				break;
		if (ph == NR_PHASES) {
			e = -EINVAL;
			break;
		}
		mask |= 1u << ph;
	}
	free(copy);
	if (!e && !mask)
		e = -EINVAL;
	if (!e)
		*ret = mask;
	return e;
}

/* Fills *b from the command line.  Returns 0, or 2 (the exit status for a
 * usage error) having said why, or -1 after --help. */
static int parse_args(struct bench *b, int argc, char **argv)
{
	enum {
		OPT_JSON = 0x100, OPT_QUICK, OPT_PHASES, OPT_HOT, OPT_SKEW,
		OPT_KERNEL_ONLY, OPT_PAGER_ONLY, OPT_SWAP_DIR, OPT_PAGERD_ARG,
		OPT_COMPRESS, OPT_POOL, OPT_ZSWAP,
	};
	static const struct option longopts[] = {
		{ "size", required_argument, NULL, 's' },
		{ "limit", required_argument, NULL, 'l' },
		{ "threads", required_argument, NULL, 't' },
		{ "accesses", required_argument, NULL, 'n' },
		{ "rounds", required_argument, NULL, 'r' },
		{ "quick", no_argument, NULL, OPT_QUICK },
		{ "phases", required_argument, NULL, OPT_PHASES },
		{ "hot", required_argument, NULL, OPT_HOT },
		{ "skew-accesses", required_argument, NULL, OPT_SKEW },
		{ "kernel-only", no_argument, NULL, OPT_KERNEL_ONLY },
		{ "pager-only", no_argument, NULL, OPT_PAGER_ONLY },
		{ "swap-dir", required_argument, NULL, OPT_SWAP_DIR },
		{ "pagerd-arg", required_argument, NULL, OPT_PAGERD_ARG },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "compress", required_argument, NULL, OPT_COMPRESS },
		{ "pool", required_argument, NULL, OPT_POOL },
		{ "zswap", no_argument, NULL, OPT_ZSWAP },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *size_arg = NULL, *limit_arg = NULL, *hot_arg = NULL;
	uint64_t size, v, rand_acc = 0, skew_acc = 0, rounds = DEFAULT_ROUNDS;
	long ps = sysconf(_SC_PAGESIZE);
	int c, n;

	n = parse_uint_list(DEFAULT_THREADS, b->threads, MAX_THREAD_LIST, MAX_THREADS);
	b->nthreads_list = n > 0 ? (unsigned)n : 0;
	b->phase_mask = (1u << NR_PHASES) - 1;
	b->kernel_on = b->pager_on = true;
	b->swap_dir = DEFAULT_SWAP_DIR;
	while ((c = getopt_long(argc, argv, "s:l:t:n:r:h", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			size_arg = optarg;
			break;
		case 'l':
			limit_arg = optarg;
			break;
		case 't':
			n = parse_uint_list(optarg, b->threads, MAX_THREAD_LIST, MAX_THREADS);
			if (n < 0) {
				fprintf(stderr, "swap: -t: expected up to %d thread counts "
					"1..%d separated by commas, got '%s'\n",
					MAX_THREAD_LIST, MAX_THREADS, optarg);
				return 2;
			}
			b->nthreads_list = (unsigned)n;
			break;
		case 'n':
		case OPT_SKEW:
			if (parse_u64(optarg, &v) < 0 || v < 1) {
				fprintf(stderr, "swap: expected a positive count, got '%s'\n",
					optarg);
				return 2;
			}
			*(c == 'n' ? &rand_acc : &skew_acc) = v;
			break;
		case 'r':
			if (parse_u64(optarg, &rounds) < 0 || rounds < 1 || rounds > MAX_ROUNDS) {
				fprintf(stderr, "swap: -r: expected 1..%d, got '%s'\n",
					MAX_ROUNDS, optarg);
				return 2;
			}
			break;
		case OPT_QUICK:
			b->quick = true;
			break;
		case OPT_PHASES:
			if (parse_phases(optarg, &b->phase_mask) < 0) {
				fprintf(stderr, "swap: --phases: expected names among "
					"seq-write,rand-read,rand-rmw,seq-read,skewed, got '%s'\n",
					optarg);
				return 2;
			}
			break;
		case OPT_HOT:
			hot_arg = optarg;
			break;
		case OPT_KERNEL_ONLY:
			b->pager_on = false;
			break;
		case OPT_PAGER_ONLY:
			b->kernel_on = false;
			break;
		case OPT_SWAP_DIR:
			b->swap_dir = optarg;
			break;
		case OPT_PAGERD_ARG:
			if (b->nextra == MAX_EXTRA_ARGS) {
				fprintf(stderr, "swap: at most %d --pagerd-arg\n", MAX_EXTRA_ARGS);
				return 2;
			}
			b->extra_args[b->nextra++] = optarg;
			break;
		case OPT_JSON:
			b->json = true;
			break;
		case OPT_COMPRESS:
			if (parse_u64(optarg, &v) < 0 || v < 1 || v > 64) {
				fprintf(stderr, "swap: --compress takes 1 (incompressible) to 64\n");
				return 2;
			}
			b->compress = (unsigned)v;
			break;
		case OPT_POOL:
			if (parse_u64(optarg, &v) < 0 || v < 1 || v > 90) {
				fprintf(stderr, "swap: --pool takes a percentage, 1 to 90\n");
				return 2;
			}
			b->pool_percent = (unsigned)v;
			break;
		case OPT_ZSWAP:
			b->zswap = true;
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
		fprintf(stderr, "swap: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (!b->kernel_on && !b->pager_on) {
		fprintf(stderr, "swap: --kernel-only and --pager-only together leave nothing\n");
		return 2;
	}

	b->page_size = ps > 0 ? (size_t)ps : 4096;
	if (!size_arg)
		size_arg = b->quick ? QUICK_SIZE : DEFAULT_SIZE;
	if (!limit_arg)
		limit_arg = b->quick ? QUICK_LIMIT : DEFAULT_LIMIT;
	if (parse_size(size_arg, &size) < 0 || size < 16 * b->page_size ||
	    size > (1ULL << 40)) {
		fprintf(stderr, "swap: -s: expected a size from 16 pages to 1T, got '%s'\n",
			size_arg);
		return 2;
	}
	b->npages = (size_t)((size + b->page_size - 1) / b->page_size);
	b->size = b->npages * b->page_size;
	if (parse_size(limit_arg, &b->limit) < 0 || b->limit < 4 * b->page_size ||
	    b->limit >= b->size) {
		fprintf(stderr, "swap: -l: expected a limit below the region size, got '%s'\n",
			limit_arg);
		return 2;
	}
	b->limit -= b->limit % b->page_size;
	b->hot_bytes = b->limit / 4;
	if (hot_arg && (parse_size(hot_arg, &b->hot_bytes) < 0 || b->hot_bytes < b->page_size ||
			b->hot_bytes >= b->size)) {
		fprintf(stderr, "swap: --hot: expected a size below the region's, got '%s'\n",
			hot_arg);
		return 2;
	}
	b->hot_pages = (size_t)(b->hot_bytes / b->page_size);
	b->hot_bytes = (uint64_t)b->hot_pages * b->page_size;
	b->rounds = (unsigned)rounds;
	b->rand_accesses = rand_acc ? rand_acc : b->npages / 4;
	/* Enough for FIFO to cycle the hot set out several times: it goes
	 * once per limit's worth of faults, and only the uniform tenth of the
	 * accesses fault in anything new. */
	b->skew_accesses = skew_acc ? skew_acc : (uint64_t)b->npages * 8;
	if (b->rand_accesses < b->rounds)
		b->rand_accesses = b->rounds;
	if (b->skew_accesses < b->rounds)
		b->skew_accesses = b->rounds;
	/* Room for every page and some: swap areas lose a page to the header. */
	b->swap_size = b->size + b->size / 2;
	b->pagerd = bench_find_pagerd();
	if (strlen(b->swap_dir) > 64) {
		fprintf(stderr, "swap: --swap-dir: keep it under 64 characters "
			"(a socket goes in it)\n");
		return 2;
	}
	return 0;
}

static void print_header(const struct bench *b)
{
	const char *runs[NR_BACKINGS];
	int n = 0;

	printf("swap: %.0f MiB region, %.0f MiB limit, hot set %.0f MiB; random phases: "
	       "%u rounds (median), %" PRIu64 " accesses (skewed %" PRIu64 ")\n",
	       bench_mib((int64_t)b->size), bench_mib((int64_t)b->limit),
	       bench_mib((int64_t)b->hot_bytes),
	       b->rounds, b->rand_accesses, b->skew_accesses);
	printf("swap files in %s\n", b->ks.workdir);
	printf("page contents: %s; kernel zswap %s\n",
	       b->compress > 1 ? "a random part repeated (compresses about K times, K below)" :
	       "random (incompressible)", b->zswap ? "ON (its pool is not held within the "
	       "cgroup v1 limit: the kernel side has more memory than the limit)" : "off");
	if (b->compress > 1)
		printf("compressibility K = %u\n", b->compress);
	if (b->kernel_on && !b->ks.unavail[0])
		printf("kernel: MAP_PRIVATE|MAP_ANONYMOUS, THP off, in memory cgroup %s/"
		       "pagerd-bench-*, swap file %s (%.0f MiB, priority %d)\n",
		       b->ks.cg_base, b->ks.kswap, bench_mib((int64_t)b->swap_size),
		       BENCH_SWAP_PRIORITY);
	if (b->ks.other_swaps[0])
		printf("NOTE: other swap areas are active and may take kernel swap:%s\n",
		       b->ks.other_swaps);
	if (b->kernel_on && b->ks.unavail[0])
		printf("kernel baseline unavailable: %s\n", b->ks.unavail);
	if (b->pager_on)
		printf("pager: %s%s%s\n", b->pagerd,
		       b->has_policy ? "" : " (no --policy: default policy, FIFO n/a)",
		       b->has_swap_size ? "" : " (no --swap-size: swap file made here)");
	for (int k = 0; k < NR_BACKINGS; k++)
		if (backing_runs(b, (enum backing)k))
			runs[n++] = backing_name[k];
	if (n)
		printf("turns: ");
	for (int i = 0; i < n; i++)
		printf("%s%s", i == 0 ? "" : i + 1 < n ? ", " : " and ", runs[i]);
	if (n > 1)
		printf(" take turns step by step (each pass, warm-up and round, one at a "
		       "time, in alternating order), so that all meet the disk alike "
		       "(it drifts over minutes)\n");
	else if (n)
		printf(" alone: no other backing to take turns with\n");
	fflush(stdout);
}

int main(int argc, char **argv)
{
	struct bench b = { 0 };
	struct sigaction sa = { .sa_handler = bench_on_signal };
	sigset_t block;
	int status, e;

	for (int k = 0; k < NR_BACKINGS; k++)
		b.side[k].fd = b.side[k].pidfd = -1;
	e = parse_args(&b, argc, argv);
	if (e)
		return e < 0 ? 0 : e;
	if (!b.compress)
		b.compress = 1;
	fill_compress = b.compress;

	/* The handlers only set a flag; the signals stay blocked except while
	 * the parent waits for a child, so that it always gets to clean up. */
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGHUP);
	sigaddset(&block, SIGPIPE);
	sigprocmask(SIG_BLOCK, &block, &b.ks.oldmask);
	b.ks.prog = "swap";
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGPIPE, &sa, NULL);

	bench_find_cgroup_base(&b.ks);
	if (geteuid() == 0)
		bench_cleanup_stale(&b.ks);
	if (make_workdir(&b) < 0)
		return 1;
	if (b.kernel_on)
		bench_kernel_setup(&b.ks, b.limit, b.swap_size);
	if (b.kernel_on && b.zswap && zswap_set(&b, true) < 0)
		b.zswap = false;
	if (b.phase_mask & (1u << PH_SKEWED))
		probe_disk(&b);
	if (b.pager_on && probe_pagerd(&b) < 0) {
		b.failed = true;
		goto out;
	}
	if (!b.json)
		print_header(&b);
	if (!b.pager_on && b.ks.unavail[0])
		goto out;

	for (unsigned ti = 0; ti < b.nthreads_list && !b.failed; ti++) {
		e = run_threads(&b, ti);
		if (e == -EINTR || bench_interrupted())
			goto out;
		if (e < 0)
			b.failed = true;
		for (int k = 0; k < NR_BACKINGS && !b.json; k++)
			if (b.out[ti][k].ran)
				print_sanity(&b, (enum backing)k, b.threads[ti], &b.out[ti][k]);
		if (!b.json && !b.failed)
			print_table(&b, ti);
		if (!b.json && !b.failed && backing_runs(&b, BK_POOL))
			print_pool_table(&b, ti);
	}
	if (!b.failed) {
		if (b.json)
			print_json(&b);
		else if (b.phase_mask & (1u << PH_SKEWED) && b.pager_on)
			print_skewed(&b);
	}
out:
	teardown(&b);
	if (bench_interrupted()) {
		fprintf(stderr, "swap: interrupted by %s; cleaned up\n",
			strsignal(bench_got_signal));
		return 128 + bench_got_signal;
	}
	if (b.failed)
		status = 1;
	else if (b.kernel_on && b.ks.unavail[0]) {
		printf("kernel baseline unavailable: %s\n", b.ks.unavail);
		status = BENCH_SKIP;
	} else
		status = 0;
	fflush(stdout);
	return status;
}
