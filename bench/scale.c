/* SPDX-License-Identifier: MIT */
/*
 * scale: many client processes, each with several threads and a region of
 * its own, all under one memory budget; aggregate accesses per second of
 * pagerd against the kernel's swap, at 1, 2, 4, 8 and 16 clients.
 *
 * The same total budget on both sides:
 *
 *   kernel  every client process in one cgroup v1 memory cgroup limited to
 *           LIMIT, anonymous memory (THP off), swapping to a swap file in
 *           the work directory (bench/sides.h, as bench/swap does);
 *   pagerd  one pagerd serving every client, with the global limit
 *           (--memory-limit LIMIT) and no per-client or per-region limit,
 *           swapping to its own swap file in the same directory.
 *
 * The total data (default 1 GiB, above the limit) is split evenly among the
 * clients, so every point swaps the same amount; only the concurrency
 * changes.  Each client first writes its region (every page: its stamp, a
 * counter, pseudo-random filler, a check word), then the phases run:
 *
 *   rand-read  uniformly random pages of the client's region read
 *   skewed     90% of accesses to the client's share of a hot set (LIMIT/4
 *              in all, scattered over the region), 10% uniform; after an
 *              untimed pass over the hot set
 *   rand-rmw   random pages read, checked, and the counter in them
 *              incremented (not by default)
 *
 * A phase is a warm-up (half a round, not counted) and then ROUNDS rounds
 * of a fixed number of accesses, split evenly among the clients and their
 * threads; every thread of every client of the side starts at the same
 * instant, and the round's rate is its accesses over the time from that
 * start to the last thread's end.  The median round is reported.  A fixed
 * count rather than a fixed duration, because a duration would reward
 * unfair service: a client whose whole region stays resident makes
 * millions of hits a second while the others wait on misses, and the sum
 * would say nothing about the work every client needs done.  How unfair a
 * side was shows as when its first client finished, as a fraction of the
 * round.  Every read checks the page's stamp and check word; any mismatch
 * fails the benchmark.
 *
 * A kernel client killed by its cgroup's OOM killer (the kernel's reclaim
 * can give up under many concurrent faulting threads on a small budget)
 * is reported as such, and the point goes on with pagerd alone.
 *
 * The sides take turns, as in bench/swap (this VM's disk drifts over
 * minutes): for one client count both sides' clients exist at once, but
 * only one side runs a step (the write, a warm-up, a round) at a time, and
 * each step runs for both sides back to back, the order alternating from
 * step to step.
 *
 * Exit status: 0 success, 1 failure (wrong data, a client or pagerd
 * failing), 2 usage, 77 kernel baseline unavailable (the pager side still
 * ran), 128+N on signal N.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pager.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "sides.h"

#define PROG             "scale"
#define MAX_POINTS       8
#define MAX_CLIENTS      64
#define MAX_THREADS      32
#define MAX_ROUNDS       15
#define MAX_EXTRA_ARGS   16
#define DEFAULT_TOTAL    "1G"
#define DEFAULT_LIMIT    "256M"
#define DEFAULT_CLIENTS  "1,2,4,8,16"
#define DEFAULT_THREADS  4
#define DEFAULT_ROUNDS   3
#define QUICK_TOTAL      "256M"
#define QUICK_LIMIT      "64M"
#define QUICK_CLIENTS    "1,4,16"
#define DEFAULT_SWAP_DIR "/var/tmp"
#define HOT_PERCENT      90
#define START_SLACK_MS   50         /* from the command to the common start */
#define STAMP_MAGIC      0x7061676572642d73ULL  /* "pagerd-s" */
#define CHECK_SEED       0x452821e638d01377ULL
#define FILL_SEED        0xbe5466cf34e90c6cULL
#define SEED             0xc0ac29b7c97c50ddULL
#define STOP_TIMEOUT_MS  10000

enum phase { PH_RANDREAD, PH_SKEWED, PH_RMW, NR_PHASES };
/* Untimed jobs, after the phases in numbering. */
enum { JOB_WRITE = NR_PHASES, JOB_HOTPASS, JOB_STAT, JOB_EXIT };

static const char *const phase_name[NR_PHASES] = {
	[PH_RANDREAD] = "rand-read",
	[PH_SKEWED] = "skewed",
	[PH_RMW] = "rand-rmw",
};

enum side { SD_KERNEL, SD_PAGER, NR_SIDES };

static const char *const side_name[NR_SIDES] = {
	[SD_KERNEL] = "kernel",
	[SD_PAGER] = "pagerd",
};

/* Parent to client: run one job; a phase's round starts at start_ns
 * (CLOCK_MONOTONIC, the same in every process) and makes `accesses`
 * accesses, split among the client's threads. */
struct cmd {
	uint32_t job;
	uint32_t round;
	uint64_t start_ns;
	uint64_t accesses;
	uint64_t seed;
};

/* Client to parent: what one job did (or, for the first message, that the
 * client is set up: ok only). */
struct reply {
	int32_t ok;                     /* 0: the client failed (said on stderr) */
	uint64_t ops;
	uint64_t first_start, last_end; /* of its threads */
	int64_t misses;                 /* accesses that waited for a disk read, -1 unknown */
	uint64_t bad;                   /* pages that read wrong */
	uint64_t bad_page, bad_stamp, bad_check; /* the first of them */
	int64_t resident, swapped;      /* JOB_STAT: bytes now, -1 unknown */
};

/* One phase of one side at one client count. */
struct phase_result {
	bool ran;
	unsigned rounds;
	double rate[MAX_ROUNDS];        /* accesses per second, all clients */
	double first_done[MAX_ROUNDS];  /* when the fastest client was done, of the round */
	double median;
	uint64_t accesses;              /* over the timed rounds */
	int64_t misses;                 /* over the timed rounds, -1 unknown */
	int64_t resident, swapped;      /* bytes after the phase, all clients */
};

struct side_result {
	bool ran;
	bool oom;                       /* kernel: its cgroup's OOM killer struck */
	int64_t resident, swapped;      /* bytes after the write, all clients
					 * (pagerd: its regions' resident pages;
					 * kernel: the cgroup's usage, and swap) */
	int64_t peak;                   /* kernel: the cgroup's peak usage, -1 unknown */
	double write_s;                 /* the write's time */
	struct phase_result ph[NR_PHASES];
};

struct client {
	pid_t pid;
	int fd;                         /* our end of its socket pair, -1 none */
};

struct bench {
	struct kside ks;

	/* configuration */
	size_t page_size;
	uint64_t total, limit, hot_total;
	size_t total_pages;
	unsigned npoints;
	unsigned clients[MAX_POINTS];
	unsigned threads;
	unsigned phase_mask;
	unsigned rounds;
	uint64_t rand_accesses;         /* a rand-read or rand-rmw round, all clients */
	uint64_t skew_accesses;         /* a skewed round, all clients */
	bool json, quick, kernel_on, pager_on;
	const char *swap_dir;
	const char *pagerd;
	const char *extra_args[MAX_EXTRA_ARGS];
	unsigned nextra;
	char *env_args;                 /* $BENCH_PAGERD_ARGS, split in extra_args */
	uint64_t swap_size;

	/* the current point */
	unsigned nclients;
	bool side_off[NR_SIDES];        /* dropped for the rest of the point */
	size_t client_pages;
	size_t hot_pages;               /* per client */
	uint64_t hot_mult;
	struct client cl[NR_SIDES][MAX_CLIENTS];
	pid_t pagerd_pid;
	int pidfd;
	char psock[PATH_MAX + 32], pswap[PATH_MAX + 32];

	/* results */
	struct side_result res[MAX_POINTS][NR_SIDES];
	bool failed;
};

static const char *job_name(unsigned job)
{
	return job < NR_PHASES ? phase_name[job] : job == JOB_WRITE ? "write" :
	       job == JOB_HOTPASS ? "hot-set pass" : job == JOB_STAT ? "stat" : "exit";
}

/* ---------------------------------------------------------------------- */
/* Page contents                                                          */

static inline uint64_t stamp_word(unsigned client, size_t page)
{
	return STAMP_MAGIC ^ ((uint64_t)client << 48) ^ page;
}

static inline uint64_t check_word(unsigned client, size_t page)
{
	uint64_t s = CHECK_SEED ^ ((uint64_t)client << 48) ^ page;

	return splitmix64(&s);
}

/* Word 0 the stamp, word 1 the rand-rmw counter, the last word the check
 * word, the rest random (so that neither side can skip I/O for zero pages
 * or compress them). */
static void fill_page(uint64_t *p, unsigned client, size_t page, size_t words)
{
	uint64_t s = FILL_SEED ^ ((uint64_t)client << 48) ^ page;

	p[0] = stamp_word(client, page);
	p[1] = 0;
	for (size_t w = 2; w < words - 1; w++)
		p[w] = splitmix64(&s);
	p[words - 1] = check_word(client, page);
}

/* ---------------------------------------------------------------------- */
/* A client process                                                       */

struct crun {
	const struct bench *b;
	enum side side;
	unsigned client;
	char *base;
	size_t words;
	struct pager *p;
	struct pager_region *region;
};

struct worker {
	pthread_t tid;
	struct gate *gate;
	const struct crun *r;
	const struct cmd *c;
	size_t first, count;            /* pages of a pass */
	uint64_t seed;
	uint64_t ops, start, end;
	uint64_t bad, bad_page, bad_stamp, bad_check;
};

static inline size_t hot_page(const struct crun *r, size_t j)
{
	return (size_t)(((unsigned __int128)j * r->b->hot_mult) % r->b->client_pages);
}

/* Checks one page, counting (and remembering the first) mismatch. */
static inline void check_page(struct worker *w, size_t page)
{
	const struct crun *r = w->r;
	const volatile uint64_t *p =
		(const volatile uint64_t *)(r->base + page * r->b->page_size);
	uint64_t s = p[0], c = p[r->words - 1];

	if (s == stamp_word(r->client, page) && c == check_word(r->client, page))
		return;
	if (!w->bad++) {
		w->bad_page = page;
		w->bad_stamp = s;
		w->bad_check = c;
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	const struct crun *r = w->r;
	const struct cmd *c = w->c;
	size_t npages = r->b->client_pages, ps = r->b->page_size;
	uint64_t s = w->seed, n = 0;
	bool timed = c->job < NR_PHASES;
	uint64_t count = timed ? w->count : 0;

	if (gate_wait(w->gate) < 0)
		return NULL;
	if (timed) {
		struct timespec ts = {
			.tv_sec = (time_t)(c->start_ns / 1000000000u),
			.tv_nsec = (long)(c->start_ns % 1000000000u),
		};

		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
			;
	}
	w->start = now_ns();
	switch (c->job) {
	case JOB_WRITE:
		for (size_t i = w->first; i < w->first + w->count; i++)
			fill_page((uint64_t *)(r->base + i * ps), r->client, i, r->words);
		n = w->count;
		break;
	case JOB_HOTPASS:
		for (size_t j = w->first; j < w->first + w->count; j++)
			check_page(w, hot_page(r, j));
		n = w->count;
		break;
	case PH_RANDREAD:
		for (; n < count; n++)
			check_page(w, (size_t)(splitmix64(&s) % npages));
		break;
	case PH_SKEWED:
		for (; n < count; n++) {
			bool hot = splitmix64(&s) % 100 < HOT_PERCENT;
			uint64_t x = splitmix64(&s);

			check_page(w, hot ? hot_page(r, (size_t)(x % r->b->hot_pages)) :
					    (size_t)(x % npages));
		}
		break;
	case PH_RMW:
		for (; n < count; n++) {
			size_t page = (size_t)(splitmix64(&s) % npages);

			check_page(w, page);
			/* Several threads may pick the same page. */
			__atomic_fetch_add((uint64_t *)(r->base + page * ps) + 1, 1,
					   __ATOMIC_RELAXED);
		}
		break;
	}
	w->end = now_ns();
	w->ops = n;
	return NULL;
}

/* Accesses of this client that waited for a disk read so far, or -1: the
 * process's major faults (kernel), the region's swap-ins (pagerd). */
static int64_t misses_now(const struct crun *r)
{
	struct pager_region_stats st = { .sz = sizeof(st) };
	struct rusage ru;

	if (r->side == SD_KERNEL)
		return getrusage(RUSAGE_SELF, &ru) == 0 ? (int64_t)ru.ru_majflt : -1;
	if (pager_region_stats(r->region, &st) == 0)
		return (int64_t)(st.swap_ins - st.pool_hits);
	return -1;
}

/* Runs one job with b->threads threads and fills *rep. */
static void run_job(struct crun *r, const struct cmd *c, struct reply *rep)
{
	const struct bench *b = r->b;
	unsigned n = b->threads, created;
	struct worker w[MAX_THREADS];
	struct gate gate = GATE_INIT;
	uint64_t total = c->job == JOB_WRITE ? b->client_pages :
			 c->job == JOB_HOTPASS ? b->hot_pages : c->accesses;
	int64_t m0 = misses_now(r), m1;
	int e = 0;

	memset(w, 0, sizeof(w));
	for (created = 0; created < n; created++) {
		struct worker *t = &w[created];

		t->gate = &gate;
		t->r = r;
		t->c = c;
		t->first = (size_t)(total * created / n);
		t->count = (size_t)(total * (created + 1) / n) - t->first;
		t->seed = c->seed ^ ((uint64_t)r->client << 40) ^
			  ((uint64_t)(created + 1) * 0x9e3779b97f4a7c15ULL);
		e = pthread_create(&t->tid, NULL, worker_main, t);
		if (e) {
			fprintf(stderr, PROG ": starting thread %u: %s\n", created, strerror(e));
			break;
		}
	}
	gate_set(&gate, e ? -1 : 1);
	for (unsigned i = 0; i < created; i++)
		pthread_join(w[i].tid, NULL);
	gate_destroy(&gate);
	m1 = misses_now(r);
	rep->ok = !e;
	rep->misses = m0 >= 0 && m1 >= 0 ? m1 - m0 : -1;
	rep->first_start = UINT64_MAX;
	for (unsigned i = 0; i < created && !e; i++) {
		rep->ops += w[i].ops;
		if (w[i].start < rep->first_start)
			rep->first_start = w[i].start;
		if (w[i].end > rep->last_end)
			rep->last_end = w[i].end;
		if (w[i].bad && !rep->bad) {
			rep->bad_page = w[i].bad_page;
			rep->bad_stamp = w[i].bad_stamp;
			rep->bad_check = w[i].bad_check;
		}
		rep->bad += w[i].bad;
	}
}

/* What this client has in memory and in swap now (JOB_STAT, while every
 * client is idle, so that the parent's sum is of one instant). */
static void stat_job(struct crun *r, struct reply *rep)
{
	struct pager_region_stats st = { .sz = sizeof(st) };

	rep->ok = 1;
	rep->resident = rep->swapped = -1;
	if (r->side == SD_KERNEL) {
		rep->resident = bench_proc_status_kb("VmRSS");
		rep->swapped = bench_proc_status_kb("VmSwap");
	} else if (pager_region_stats(r->region, &st) == 0) {
		rep->resident = (int64_t)(st.resident * r->b->page_size);
		rep->swapped = (int64_t)(st.swapped * r->b->page_size);
	}
}

/* Sets up the client's memory: the kernel side joins the cgroup (pages
 * are charged to the cgroup of the process that first touches them) and
 * maps anonymous memory; the pager side makes a region on the pagerd, no
 * limit of its own (the global limit is the budget).  Returns 0 or -errno
 * (said). */
static int client_setup(struct crun *r)
{
	const struct bench *b = r->b;
	size_t size = b->client_pages * b->page_size;
	char name[32];
	int e;

	if (r->side == SD_KERNEL) {
		char pid[32];
		int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());

		e = bench_write_file(b->ks.cg, "cgroup.procs", pid);
		if (e < 0 || n <= 0) {
			fprintf(stderr, PROG ": joining %s: %s\n", b->ks.cg, strerror(-e));
			return e < 0 ? e : -EIO;
		}
		r->base = mmap(NULL, size, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (r->base == MAP_FAILED) {
			e = -errno;
			fprintf(stderr, PROG ": mmap %zu bytes: %s\n", size, strerror(-e));
			return e;
		}
		/* 4 KiB pages, as in a libpager region. */
		(void)madvise(r->base, size, MADV_NOHUGEPAGE);
		return 0;
	}

	const struct pager_opts popts = {
		.sz = sizeof(popts),
		.socket_path = b->psock,
		.flags = PAGER_OPEN_NO_PRIVATE,
	};
	struct pager_region_opts ropts = {
		.sz = sizeof(ropts),
		.name = name,
		.memory_limit = 0,
	};

	snprintf(name, sizeof(name), "scale-%u", r->client);
	e = pager_open(&r->p, &popts);
	if (e < 0) {
		fprintf(stderr, PROG ": pager_open %s: %s\n", popts.socket_path, strerror(-e));
		return e;
	}
	e = pager_region_create(r->p, size, &ropts, &r->region);
	if (e < 0) {
		fprintf(stderr, PROG ": pager_region_create %zu bytes: %s\n", size,
			strerror(-e));
		pager_close(r->p);
		r->p = NULL;
		return e;
	}
	r->base = pager_region_addr(r->region);
	return 0;
}

static int client_teardown(struct crun *r)
{
	int e = 0;

	if (r->side == SD_KERNEL) {
		if (r->base)
			munmap(r->base, r->b->client_pages * r->b->page_size);
		return 0;
	}
	if (r->region && (e = pager_region_destroy(r->region)) < 0)
		fprintf(stderr, PROG ": pager_region_destroy: %s\n", strerror(-e));
	if (r->p)
		pager_close(r->p);
	return e;
}

/* A client's whole life: sets up, says so, then runs the jobs the parent
 * sends until JOB_EXIT.  Never returns. */
static void client_main(const struct bench *b, enum side side, unsigned client, int fd)
{
	struct crun r = {
		.b = b,
		.side = side,
		.client = client,
		.words = b->page_size / sizeof(uint64_t),
	};
	struct reply rep = { 0 };
	struct cmd c;
	ssize_t n;

	rep.ok = client_setup(&r) == 0;
	if (send(fd, &rep, sizeof(rep), MSG_NOSIGNAL) != (ssize_t)sizeof(rep) || !rep.ok)
		_exit(1);
	for (;;) {
		while ((n = recv(fd, &c, sizeof(c), 0)) < 0 && errno == EINTR)
			;
		if (n != (ssize_t)sizeof(c))
			_exit(1);       /* the parent is gone */
		memset(&rep, 0, sizeof(rep));
		if (c.job == JOB_EXIT) {
			rep.ok = client_teardown(&r) == 0;
			if (send(fd, &rep, sizeof(rep), MSG_NOSIGNAL) != (ssize_t)sizeof(rep))
				_exit(1);
			_exit(rep.ok ? 0 : 1);
		}
		if (c.job == JOB_STAT)
			stat_job(&r, &rep);
		else
			run_job(&r, &c, &rep);
		if (send(fd, &rep, sizeof(rep), MSG_NOSIGNAL) != (ssize_t)sizeof(rep))
			_exit(1);
	}
}

/* ---------------------------------------------------------------------- */
/* The parent                                                             */

static int pagerd_start(struct bench *b)
{
	char limit[32], swap_size[32];
	const char *argv[32 + MAX_EXTRA_ARGS];
	int argc = 0;
	pid_t pid;

	snprintf(limit, sizeof(limit), "%" PRIu64, b->limit);
	snprintf(swap_size, sizeof(swap_size), "%" PRIu64, b->swap_size);
	argv[argc++] = b->pagerd;
	argv[argc++] = "--socket";
	argv[argc++] = b->psock;
	argv[argc++] = "--log-level";
	argv[argc++] = "warning";
	argv[argc++] = "--memory-limit";
	argv[argc++] = limit;
	argv[argc++] = "--swap";
	argv[argc++] = b->pswap;
	argv[argc++] = "--swap-size";
	argv[argc++] = swap_size;
	for (unsigned i = 0; i < b->nextra; i++)
		argv[argc++] = b->extra_args[i];
	argv[argc] = NULL;
	unlink(b->pswap);
	pid = bench_pagerd_spawn(&b->ks, b->psock, argv);
	if (pid < 0)
		return (int)pid;
	b->pagerd_pid = pid;
	/* Without pidfds (before Linux 5.3) a dead pagerd hangs its clients
	 * until the runner's timeout. */
	b->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (!b->json) {
		printf("  pagerd:");
		for (int i = 0; i < argc; i++)
			printf(" %s", argv[i]);
		printf("\n");
		fflush(stdout);
	}
	return 0;
}

/* In a freshly forked client: the parent's ends of the other clients'
 * socket pairs and the pidfd are not its to hold. */
static void close_inherited(const struct bench *b)
{
	for (int s = 0; s < NR_SIDES; s++)
		for (unsigned i = 0; i < MAX_CLIENTS; i++)
			if (b->cl[s][i].fd >= 0)
				close(b->cl[s][i].fd);
	if (b->pidfd >= 0)
		close(b->pidfd);
}

static int start_client(struct bench *b, enum side side, unsigned i)
{
	struct client *cl = &b->cl[side][i];
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		fprintf(stderr, PROG ": socketpair: %s\n", strerror(errno));
		return -EIO;
	}
	fflush(stdout);
	fflush(stderr);
	cl->pid = fork();
	if (cl->pid < 0) {
		fprintf(stderr, PROG ": fork: %s\n", strerror(errno));
		cl->pid = 0;
		close(sv[0]);
		close(sv[1]);
		return -EIO;
	}
	if (cl->pid == 0) {
		close(sv[0]);
		close_inherited(b);
		bench_child_signals(&b->ks.oldmask);
		client_main(b, side, i, sv[1]);
	}
	close(sv[1]);
	cl->fd = sv[0];
	return 0;
}

/* Says how a client that stopped answering ended (reaps it). */
static void client_gone(struct bench *b, enum side side, unsigned i)
{
	struct client *cl = &b->cl[side][i];
	int st = 0;

	while (waitpid(cl->pid, &st, 0) < 0 && errno == EINTR)
		;
	cl->pid = 0;
	if (WIFSIGNALED(st))
		fprintf(stderr, PROG ": %s client %u of %u died of %s%s\n", side_name[side], i,
			b->nclients, strsignal(WTERMSIG(st)),
			side == SD_KERNEL && WTERMSIG(st) == SIGKILL ?
			" (out of memory in its cgroup?)" : "");
	else
		fprintf(stderr, PROG ": %s client %u of %u failed\n", side_name[side], i,
			b->nclients);
}

/*
 * Waits for one reply from every client of a side, into rep[].  Waits with
 * our signals unblocked (^C or a timeout's SIGTERM end the wait) and
 * watches pagerd (a client whose daemon died would wait on its next fault
 * for ever).  Returns 0, -EINTR, or -EIO (said).
 */
static int collect(struct bench *b, enum side side, struct reply *rep)
{
	unsigned n = b->nclients, left = n;
	bool got[MAX_CLIENTS] = { false };

	while (left) {
		struct pollfd pfd[MAX_CLIENTS + 1];
		unsigned who[MAX_CLIENTS], np = 0;

		if (bench_interrupted())
			return -EINTR;
		for (unsigned i = 0; i < n; i++)
			if (!got[i]) {
				pfd[np] = (struct pollfd){ .fd = b->cl[side][i].fd, .events = POLLIN };
				who[np++] = i;
			}
		if (side == SD_PAGER && b->pidfd >= 0)
			pfd[np++] = (struct pollfd){ .fd = b->pidfd, .events = POLLIN };
		if (ppoll(pfd, np, NULL, &b->ks.oldmask) < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, PROG ": poll: %s\n", strerror(errno));
			return -EIO;
		}
		for (unsigned k = 0; k < left; k++) {
			unsigned i = who[k];
			ssize_t r;

			if (!pfd[k].revents)
				continue;
			r = recv(b->cl[side][i].fd, &rep[i], sizeof(rep[i]), MSG_DONTWAIT);
			if (r < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (r != (ssize_t)sizeof(rep[i])) {
				client_gone(b, side, i);
				return -EIO;
			}
			if (!rep[i].ok) {
				fprintf(stderr, PROG ": %s client %u of %u failed\n",
					side_name[side], i, n);
				return -EIO;
			}
			got[i] = true;
		}
		if (side == SD_PAGER && b->pidfd >= 0 && pfd[np - 1].revents) {
			fprintf(stderr, PROG ": pagerd exited during the run (%u clients)\n", n);
			return -EIO;
		}
		left = 0;
		for (unsigned i = 0; i < n; i++)
			left += !got[i];
	}
	return 0;
}

/* What one step of a side did. */
struct step_out {
	double rate;            /* phases: accesses per second, all clients */
	double s;               /* from the start to the last thread's end */
	double first_done;      /* phases: when the first client was done, of s */
	uint64_t ops;
	int64_t misses;         /* -1 if a client could not tell */
};

/*
 * Runs one step on every client of a side and waits for all.  A phase's
 * round starts START_SLACK_MS (plus a little per client) from now, when
 * the commands have surely arrived, every client making accesses/nclients
 * accesses.  Fills *out (may be NULL).  Returns 0, -EINTR, -ENOMEM (the
 * kernel side's cgroup OOM-killed a client) or -EIO (said: a failure,
 * wrong data included).
 */
static int side_step(struct bench *b, enum side side, unsigned job, unsigned round,
		     uint64_t accesses, struct step_out *out, struct reply *rep)
{
	uint64_t start = now_ns() + (START_SLACK_MS + 2ull * b->nclients) * 1000000;
	struct cmd c = {
		.job = job,
		.round = round,
		.start_ns = start,
		.accesses = accesses / b->nclients,
		.seed = SEED ^ ((uint64_t)job << 56) ^ ((uint64_t)round << 48),
	};
	uint64_t ops = 0, first = UINT64_MAX, last = 0, first_done = UINT64_MAX;
	int64_t misses = 0;
	int e;

	memset(rep, 0, sizeof(*rep) * b->nclients);
	for (unsigned i = 0; i < b->nclients; i++)
		if (send(b->cl[side][i].fd, &c, sizeof(c), MSG_NOSIGNAL) != (ssize_t)sizeof(c)) {
			client_gone(b, side, i);
			return -EIO;
		}
	e = collect(b, side, rep);
	/* A kernel client killed by its cgroup's OOM killer is a result (the
	 * kernel could not run this point at this budget), not a failure. */
	if (e == -EIO && side == SD_KERNEL &&
	    bench_cg_read(b->ks.cg, "memory.oom_control", "oom_kill") > 0)
		return -ENOMEM;
	if (e < 0)
		return e;
	for (unsigned i = 0; i < b->nclients; i++) {
		if (rep[i].bad) {
			fprintf(stderr, PROG ": FAILURE: %s, %u clients, client %u, %s: %" PRIu64
				" page reads were wrong; first: page %" PRIu64 " reads stamp %#"
				PRIx64 " check %#" PRIx64 ", expected %#" PRIx64 " %#" PRIx64 "\n",
				side_name[side], b->nclients, i, job_name(job), rep[i].bad,
				rep[i].bad_page, rep[i].bad_stamp, rep[i].bad_check,
				stamp_word(i, (size_t)rep[i].bad_page),
				check_word(i, (size_t)rep[i].bad_page));
			e = -EIO;
		}
		ops += rep[i].ops;
		if (rep[i].first_start < first)
			first = rep[i].first_start;
		if (rep[i].last_end > last)
			last = rep[i].last_end;
		if (rep[i].last_end < first_done)
			first_done = rep[i].last_end;
		misses = misses >= 0 && rep[i].misses >= 0 ? misses + rep[i].misses : -1;
	}
	if (e < 0 || !out)
		return e;
	/* A round is timed from the common start: a client that started
	 * late (not scheduled in time) counts against its side. */
	if (job < NR_PHASES)
		first = start;
	*out = (struct step_out){
		.rate = last > first ? (double)ops * 1e9 / (double)(last - first) : 0,
		.s = last > first ? (double)(last - first) / 1e9 : 0,
		.first_done = last > first && first_done > first ?
			      (double)(first_done - first) / (double)(last - first) : 0,
		.ops = ops,
		.misses = misses,
	};
	return 0;
}

/* A side's memory now, all clients idle: pagerd, its regions' resident and
 * swapped pages; the kernel, the cgroup's charge (what its limit holds)
 * and the processes' swap.  -1 where unknown. */
static int side_stat(struct bench *b, enum side s, int64_t *resident, int64_t *swapped)
{
	struct reply rep[MAX_CLIENTS];
	int e = side_step(b, s, JOB_STAT, 0, 0, NULL, rep);

	*resident = *swapped = 0;
	for (unsigned i = 0; i < b->nclients && !e; i++) {
		*resident = *resident >= 0 && rep[i].resident >= 0 ?
			    *resident + rep[i].resident : -1;
		*swapped = *swapped >= 0 && rep[i].swapped >= 0 ? *swapped + rep[i].swapped : -1;
	}
	if (s == SD_KERNEL)
		*resident = bench_cg_read(b->ks.cg, "memory.usage_in_bytes", NULL);
	return e;
}

static bool side_runs(const struct bench *b, enum side s)
{
	if (b->side_off[s])
		return false;
	return s == SD_KERNEL ? b->kernel_on && !b->ks.unavail[0] : b->pager_on;
}

/* After a step: an OOM kill on the kernel side (-ENOMEM) takes the kernel
 * out of the rest of the point, said, and is not an error. */
static int kernel_oom(struct bench *b, unsigned pi, int e)
{
	if (e != -ENOMEM)
		return e;
	fprintf(stderr, PROG ": %u clients: the kernel's memory cgroup OOM-killed a "
		"client; no kernel numbers from here at this point\n", b->nclients);
	if (!b->json)
		printf("  kernel: OOM-killed by its memory cgroup (see the kernel log)\n");
	b->res[pi][SD_KERNEL].oom = true;
	b->side_off[SD_KERNEL] = true;
	for (unsigned i = 0; i < MAX_CLIENTS; i++) {
		struct client *cl = &b->cl[SD_KERNEL][i];

		if (cl->pid > 0) {
			kill(cl->pid, SIGKILL);
			while (waitpid(cl->pid, NULL, 0) < 0 && errno == EINTR)
				;
		}
		cl->pid = 0;
		if (cl->fd >= 0)
			close(cl->fd);
		cl->fd = -1;
	}
	return 0;
}

/* Stops a point's clients (politely if ask, so the pager clients destroy
 * their regions), then pagerd and the cgroup.  Returns 0 or -1 (said). */
static int stop_point(struct bench *b, bool ask)
{
	struct reply rep[MAX_CLIENTS];
	int rc = 0;

	for (int s = 0; s < NR_SIDES; s++) {
		if (ask && b->cl[s][0].fd >= 0 &&
		    side_step(b, (enum side)s, JOB_EXIT, 0, 0, NULL, rep) < 0)
			rc = -1;
		for (unsigned i = 0; i < MAX_CLIENTS; i++) {
			struct client *cl = &b->cl[s][i];

			if (cl->pid > 0) {
				int st;

				if (!ask)
					kill(cl->pid, SIGKILL);
				while (waitpid(cl->pid, &st, 0) < 0 && errno == EINTR)
					;
				if (ask && (!WIFEXITED(st) || WEXITSTATUS(st)))
					rc = -1;
			}
			cl->pid = 0;
			if (cl->fd >= 0)
				close(cl->fd);
			cl->fd = -1;
		}
	}
	if (b->pidfd >= 0)
		close(b->pidfd);
	b->pidfd = -1;
	if (b->pagerd_pid > 0 && bench_pagerd_stop(&b->ks, b->pagerd_pid, STOP_TIMEOUT_MS) < 0)
		rc = -1;
	b->pagerd_pid = 0;
	unlink(b->pswap);
	unlink(b->psock);
	bench_cgroup_remove(&b->ks);
	return rc;
}

/* One client count: both sides set up, then every step for both sides in
 * turn.  Returns 0, -EINTR or -EIO (said). */
static int run_point(struct bench *b, unsigned pi)
{
	struct reply rep[MAX_CLIENTS];
	unsigned step = 0;
	char why[256];
	int e = 0;

	b->nclients = b->clients[pi];
	memset(b->side_off, 0, sizeof(b->side_off));
	b->client_pages = b->total_pages / b->nclients;
	b->hot_pages = (size_t)(b->hot_total / b->page_size / b->nclients);
	if (b->hot_pages < 1)
		b->hot_pages = 1;
	b->hot_mult = bench_pick_hot_mult(b->client_pages);
	if (!b->json) {
		printf("\n%u client%s x %u threads, %.1f MiB each, hot set %.1f MiB each\n",
		       b->nclients, b->nclients == 1 ? "" : "s", b->threads,
		       bench_mib((int64_t)(b->client_pages * b->page_size)),
		       bench_mib((int64_t)(b->hot_pages * b->page_size)));
		fflush(stdout);
	}

	if (side_runs(b, SD_KERNEL) && bench_cgroup_make(&b->ks, b->limit, why, sizeof(why)) < 0) {
		fprintf(stderr, PROG ": %s\n", why);
		return -EIO;
	}
	if (side_runs(b, SD_PAGER) && pagerd_start(b) < 0)
		return -EIO;
	for (int s = 0; s < NR_SIDES && !e; s++)
		for (unsigned i = 0; i < b->nclients && side_runs(b, (enum side)s) && !e; i++)
			e = start_client(b, (enum side)s, i);
	/* Each client says it is set up. */
	for (int s = 0; s < NR_SIDES && !e; s++)
		if (side_runs(b, (enum side)s))
			e = collect(b, (enum side)s, rep);
	if (e)
		return e;

	/* The write: both sides in turn. */
	for (int k = 0; k < NR_SIDES && !e; k++) {
		enum side s = (enum side)(step % 2 ? NR_SIDES - 1 - k : k);
		struct side_result *sr = &b->res[pi][s];
		struct step_out o = { 0 };

		if (!side_runs(b, s))
			continue;
		e = side_step(b, s, JOB_WRITE, 0, 0, &o, rep);
		sr->write_s = o.s;
		if (!e)
			e = side_stat(b, s, &sr->resident, &sr->swapped);
		if (e || !side_runs(b, s)) {
			e = kernel_oom(b, pi, e);
			continue;
		}
		sr->peak = s == SD_KERNEL ?
			   bench_cg_read(b->ks.cg, "memory.max_usage_in_bytes", NULL) : -1;
		sr->ran = true;
	}
	step++;

	for (int ph = 0; ph < NR_PHASES && !e; ph++) {
		if (!(b->phase_mask & (1u << ph)))
			continue;
		/* Untimed: bring the hot set in first. */
		for (int k = 0; k < NR_SIDES && !e && ph == PH_SKEWED; k++) {
			enum side s = (enum side)(step % 2 ? NR_SIDES - 1 - k : k);

			if (side_runs(b, s))
				e = kernel_oom(b, pi, side_step(b, s, JOB_HOTPASS, 0, 0,
								NULL, rep));
		}
		step++;
		/* Round 0 is the warm-up, not counted. */
		for (unsigned round = 0; round <= b->rounds && !e; round++, step++) {
			for (int k = 0; k < NR_SIDES && !e; k++) {
				enum side s = (enum side)(step % 2 ? NR_SIDES - 1 - k : k);
				struct phase_result *pr = &b->res[pi][s].ph[ph];
				uint64_t n = ph == PH_SKEWED ? b->skew_accesses : b->rand_accesses;
				struct step_out o;

				if (!side_runs(b, s))
					continue;
				/* The warm-up: half a round. */
				e = side_step(b, s, (unsigned)ph, round, round ? n : n / 2, &o, rep);
				if (e || !round) {
					e = kernel_oom(b, pi, e);
					continue;
				}
				if (round == 1)
					pr->misses = 0;
				pr->first_done[pr->rounds] = o.first_done;
				pr->rate[pr->rounds++] = o.rate;
				pr->accesses += o.ops;
				pr->misses = pr->misses >= 0 && o.misses >= 0 ?
					     pr->misses + o.misses : -1;
			}
		}
		for (int s = 0; s < NR_SIDES && !e; s++) {
			struct phase_result *pr = &b->res[pi][s].ph[ph];
			double sorted[MAX_ROUNDS];

			/* A side dropped in this phase has no result for it. */
			if (!pr->rounds || b->side_off[s])
				continue;
			memcpy(sorted, pr->rate, pr->rounds * sizeof(double));
			pr->median = median(sorted, pr->rounds);
			pr->ran = true;
			e = kernel_oom(b, pi, side_stat(b, (enum side)s, &pr->resident,
							&pr->swapped));
		}
	}
	return e;
}

/* ---------------------------------------------------------------------- */
/* Output                                                                  */

static void print_misses(const struct phase_result *p)
{
	if (p->ran && p->misses >= 0 && p->accesses)
		printf("  %6.3f", (double)p->misses / (double)p->accesses);
	else
		printf("  %6s", "n/a");
}

static void print_rate(const struct phase_result *p)
{
	if (p->ran)
		printf("  %12.0f", p->median);
	else
		printf("  %12s", "n/a");
}

/* Evidence that both sides kept to the budget and swapped: memory after
 * the write and after each phase, all clients idle. */
static void print_point(const struct bench *b, unsigned pi)
{
	const struct side_result *k = &b->res[pi][SD_KERNEL], *p = &b->res[pi][SD_PAGER];
	int64_t slack = (int64_t)(b->limit + b->limit / 8);

	if (k->ran) {
		printf("  kernel: write %.1f s; cgroup charge / swap after it %.0f / %.0f MiB",
		       k->write_s, bench_mib(k->resident), bench_mib(k->swapped));
		for (int ph = 0; ph < NR_PHASES; ph++)
			if (k->ph[ph].ran)
				printf(", after %s %.0f / %.0f", phase_name[ph],
				       bench_mib(k->ph[ph].resident), bench_mib(k->ph[ph].swapped));
		printf("; peak %.0f MiB%s\n", bench_mib(k->peak),
		       k->swapped <= 0 ? "  WARNING: no swap" : "");
	}
	if (p->ran) {
		bool over = p->resident > slack;

		printf("  pagerd: write %.1f s; resident / swapped after it %.0f / %.0f MiB",
		       p->write_s, bench_mib(p->resident), bench_mib(p->swapped));
		for (int ph = 0; ph < NR_PHASES; ph++)
			if (p->ph[ph].ran) {
				printf(", after %s %.0f / %.0f", phase_name[ph],
				       bench_mib(p->ph[ph].resident), bench_mib(p->ph[ph].swapped));
				over |= p->ph[ph].resident > slack;
			}
		printf("%s\n", over ? "  NOTE: above the budget" : "");
	}
	fflush(stdout);
}

static void print_done(const struct phase_result *p)
{
	double v[MAX_ROUNDS];

	if (p->ran) {
		memcpy(v, p->first_done, p->rounds * sizeof(double));
		printf("  %6.2f", median(v, p->rounds));
	} else {
		printf("  %6s", "n/a");
	}
}

static void print_table(const struct bench *b)
{
	printf("\naccesses per second, all clients (median of %u round%s; a round: %" PRIu64
	       " accesses, skewed %" PRIu64 ", split evenly among the clients)\n",
	       b->rounds, b->rounds == 1 ? "" : "s", b->rand_accesses, b->skew_accesses);
	printf("%-10s %-10s  %12s  %12s  %13s    misses/access: kernel  pagerd"
	       "   first client done: kernel  pagerd\n",
	       "clients", "phase", "kernel", "pagerd", "pagerd/kernel");
	for (unsigned pi = 0; pi < b->npoints; pi++) {
		for (int ph = 0; ph < NR_PHASES; ph++) {
			const struct phase_result *k = &b->res[pi][SD_KERNEL].ph[ph],
						  *p = &b->res[pi][SD_PAGER].ph[ph];
			char label[32];

			if (!(b->phase_mask & (1u << ph)) || (!k->ran && !p->ran))
				continue;
			snprintf(label, sizeof(label), "%u x %u", b->clients[pi], b->threads);
			printf("%-10s %-10s", label, phase_name[ph]);
			if (!k->ran && b->res[pi][SD_KERNEL].oom)
				printf("  %12s", "OOM-killed");
			else
				print_rate(k);
			print_rate(p);
			if (k->ran && p->ran && k->median > 0)
				printf("  %8.2f %-4s", p->median / k->median,
				       p->median >= k->median ? "ok" : "LOST");
			else
				printf("  %13s", "n/a");
			printf("                 ");
			print_misses(k);
			print_misses(p);
			printf("                      ");
			print_done(k);
			print_done(p);
			printf("\n");
		}
	}
	printf("(target: pagerd/kernel >= 1 at every point.  misses: kernel major faults, "
	       "pagerd swap-ins.  first client done: when the fastest client finished its "
	       "share, as a fraction of the round; 1.00 is even service)\n");
	fflush(stdout);
}

static void json_phase(const struct phase_result *p)
{
	if (!p->ran) {
		printf("null");
		return;
	}
	printf("{\"median\": %.1f, \"rounds\": [", p->median);
	for (unsigned i = 0; i < p->rounds; i++)
		printf("%s%.1f", i ? ", " : "", p->rate[i]);
	printf("], \"first_client_done\": [");
	for (unsigned i = 0; i < p->rounds; i++)
		printf("%s%.3f", i ? ", " : "", p->first_done[i]);
	printf("], \"resident_after\": %" PRId64 ", \"swapped_after\": %" PRId64,
	       p->resident, p->swapped);
	printf(", \"accesses\": %" PRIu64 ", \"misses\": ", p->accesses);
	if (p->misses >= 0)
		printf("%" PRId64 "}", p->misses);
	else
		printf("null}");
}

static void print_json(const struct bench *b)
{
	printf("{\n  \"benchmark\": \"scale\",\n  \"total\": %" PRIu64 ",\n  \"limit\": %"
	       PRIu64 ",\n  \"hot\": %" PRIu64 ",\n  \"threads_per_client\": %u,\n"
	       "  \"round_accesses\": %" PRIu64 ",\n  \"skewed_round_accesses\": %" PRIu64
	       ",\n  \"rounds\": %u,\n", b->total, b->limit, b->hot_total, b->threads,
	       b->rand_accesses, b->skew_accesses, b->rounds);
	printf("  \"unit\": \"accesses per second, all clients\",\n");
	printf("  \"pagerd_limits\": \"global only\",\n  \"pagerd_args\": [");
	for (unsigned i = 0; i < b->nextra; i++) {
		printf("%s", i ? ", " : "");
		bench_json_string(b->extra_args[i]);
	}
	printf("],\n  \"kernel_unavailable\": ");
	if (b->ks.unavail[0])
		bench_json_string(b->ks.unavail);
	else
		printf("null");
	printf(",\n  \"results\": [\n");
	for (unsigned pi = 0; pi < b->npoints; pi++) {
		bool first = true;

		printf("    {\"clients\": %u", b->clients[pi]);
		for (int s = 0; s < NR_SIDES; s++) {
			const struct side_result *sr = &b->res[pi][s];

			printf(",\n     \"%s\": ", side_name[s]);
			if (!sr->ran) {
				printf(sr->oom ? "{\"oom_killed\": true}" : "null");
				continue;
			}
			printf("{\"oom_killed\": %s, ", sr->oom ? "true" : "false");
			printf("\"resident_after_write\": %" PRId64 ", \"swapped_after_write\": %"
			       PRId64 ", \"peak\": %" PRId64 ", \"write_s\": %.2f", sr->resident,
			       sr->swapped, sr->peak, sr->write_s);
			for (int ph = 0; ph < NR_PHASES; ph++) {
				printf(", \"%s\": ", phase_name[ph]);
				json_phase(&sr->ph[ph]);
			}
			printf("}");
		}
		printf(",\n     \"ratios\": {");
		for (int ph = 0; ph < NR_PHASES; ph++) {
			const struct phase_result *k = &b->res[pi][SD_KERNEL].ph[ph],
						  *p = &b->res[pi][SD_PAGER].ph[ph];

			if (!k->ran || !p->ran || k->median <= 0)
				continue;
			printf("%s\"%s\": %.3f", first ? "" : ", ", phase_name[ph],
			       p->median / k->median);
			first = false;
		}
		printf("}}%s\n", pi + 1 < b->npoints ? "," : "");
	}
	printf("  ]\n}\n");
}

/* ---------------------------------------------------------------------- */
/* Command line                                                           */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: scale [--quick] [-s TOTAL] [-l LIMIT] [-c CLIENTS,...] [-t THREADS]\n"
		"             [--phases LIST] [-d MS] [-r N] [--json] [more options]\n"
		"  -s, --size SIZE        data of all clients together, split evenly\n"
		"                         (default %s; --quick %s)\n"
		"  -l, --limit SIZE       the budget: the kernel cgroup's limit and pagerd's\n"
		"                         global --memory-limit (default %s; --quick %s)\n"
		"  -c, --clients LIST     client counts (default %s; --quick %s)\n"
		"  -t, --threads N        threads per client (default %d)\n"
		"      --phases LIST      of rand-read,skewed,rand-rmw (default rand-read,skewed)\n"
		"      --hot SIZE         hot set of the skewed mix, all clients (default limit/4)\n"
		"  -n, --accesses N       accesses in a rand-read or rand-rmw round, all\n"
		"                         clients together (default pages/4)\n"
		"      --skew-accesses N  the same for a skewed round (default pages*2)\n"
		"  -r, --rounds N         rounds per phase after a half-round warm-up,\n"
		"                         median shown (default %d)\n"
		"      --kernel-only      only the kernel\n"
		"      --pager-only       only pagerd\n"
		"      --swap-dir DIR     where both swap files go (default %s)\n"
		"      --pagerd-arg ARG   add ARG to pagerd's command line (repeatable;\n"
		"                         $BENCH_PAGERD_ARGS adds words too)\n"
		"      --json             print the results as JSON instead of tables\n"
		"      --quick            the small configuration, as make bench runs it\n"
		"  -h, --help             this text\n"
		"pagerd is $PAGERD, else the pagerd beside this program's build directory.\n",
		DEFAULT_TOTAL, QUICK_TOTAL, DEFAULT_LIMIT, QUICK_LIMIT, DEFAULT_CLIENTS,
		QUICK_CLIENTS, DEFAULT_THREADS, DEFAULT_ROUNDS, DEFAULT_SWAP_DIR);
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
			if (!strcmp(tok, phase_name[ph]))
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

static int add_extra(struct bench *b, const char *arg)
{
	if (b->nextra == MAX_EXTRA_ARGS) {
		fprintf(stderr, PROG ": at most %d pagerd arguments\n", MAX_EXTRA_ARGS);
		return -1;
	}
	b->extra_args[b->nextra++] = arg;
	return 0;
}

/* Fills *b from the command line.  Returns 0, or 2 (the exit status for a
 * usage error) having said why, or -1 after --help. */
static int parse_args(struct bench *b, int argc, char **argv)
{
	enum {
		OPT_JSON = 0x100, OPT_QUICK, OPT_PHASES, OPT_HOT, OPT_KERNEL_ONLY,
		OPT_PAGER_ONLY, OPT_SWAP_DIR, OPT_PAGERD_ARG, OPT_SKEW,
	};
	static const struct option longopts[] = {
		{ "size", required_argument, NULL, 's' },
		{ "limit", required_argument, NULL, 'l' },
		{ "clients", required_argument, NULL, 'c' },
		{ "threads", required_argument, NULL, 't' },
		{ "accesses", required_argument, NULL, 'n' },
		{ "skew-accesses", required_argument, NULL, OPT_SKEW },
		{ "rounds", required_argument, NULL, 'r' },
		{ "quick", no_argument, NULL, OPT_QUICK },
		{ "phases", required_argument, NULL, OPT_PHASES },
		{ "hot", required_argument, NULL, OPT_HOT },
		{ "kernel-only", no_argument, NULL, OPT_KERNEL_ONLY },
		{ "pager-only", no_argument, NULL, OPT_PAGER_ONLY },
		{ "swap-dir", required_argument, NULL, OPT_SWAP_DIR },
		{ "pagerd-arg", required_argument, NULL, OPT_PAGERD_ARG },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *size_arg = NULL, *limit_arg = NULL, *hot_arg = NULL, *clients_arg = NULL;
	uint64_t v, threads = DEFAULT_THREADS, rounds = DEFAULT_ROUNDS, rand_acc = 0, skew_acc = 0;
	long ps = sysconf(_SC_PAGESIZE);
	const char *env;
	int c, n;

	b->phase_mask = (1u << PH_RANDREAD) | (1u << PH_SKEWED);
	b->kernel_on = b->pager_on = true;
	b->swap_dir = DEFAULT_SWAP_DIR;
	while ((c = getopt_long(argc, argv, "s:l:c:t:n:r:h", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			size_arg = optarg;
			break;
		case 'l':
			limit_arg = optarg;
			break;
		case 'c':
			clients_arg = optarg;
			break;
		case 't':
			if (parse_u64(optarg, &threads) < 0 || threads < 1 || threads > MAX_THREADS) {
				fprintf(stderr, PROG ": -t: expected 1..%d, got '%s'\n", MAX_THREADS,
					optarg);
				return 2;
			}
			break;
		case 'n':
		case OPT_SKEW:
			if (parse_u64(optarg, &v) < 0 || v < 1) {
				fprintf(stderr, PROG ": expected a positive count, got '%s'\n",
					optarg);
				return 2;
			}
			*(c == 'n' ? &rand_acc : &skew_acc) = v;
			break;
		case 'r':
			if (parse_u64(optarg, &rounds) < 0 || rounds < 1 || rounds > MAX_ROUNDS) {
				fprintf(stderr, PROG ": -r: expected 1..%d, got '%s'\n", MAX_ROUNDS,
					optarg);
				return 2;
			}
			break;
		case OPT_QUICK:
			b->quick = true;
			break;
		case OPT_PHASES:
			if (parse_phases(optarg, &b->phase_mask) < 0) {
				fprintf(stderr, PROG ": --phases: expected names among "
					"rand-read,skewed,rand-rmw, got '%s'\n", optarg);
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
			if (add_extra(b, optarg) < 0)
				return 2;
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
		fprintf(stderr, PROG ": unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (!b->kernel_on && !b->pager_on) {
		fprintf(stderr, PROG ": --kernel-only and --pager-only together leave nothing\n");
		return 2;
	}
	/* Settings for pagerd from the environment (e.g. from make bench),
	 * after those of the command line. */
	env = getenv("BENCH_PAGERD_ARGS");
	if (env && *env) {
		char *save = NULL;

		b->env_args = strdup(env);
		if (!b->env_args)
			return 2;
		for (char *t = strtok_r(b->env_args, " \t", &save); t;
		     t = strtok_r(NULL, " \t", &save))
			if (add_extra(b, t) < 0)
				return 2;
	}

	b->page_size = ps > 0 ? (size_t)ps : 4096;
	n = parse_uint_list(clients_arg ? clients_arg : b->quick ? QUICK_CLIENTS :
			    DEFAULT_CLIENTS, b->clients, MAX_POINTS, MAX_CLIENTS);
	if (n < 0) {
		fprintf(stderr, PROG ": -c: expected up to %d client counts 1..%d separated "
			"by commas, got '%s'\n", MAX_POINTS, MAX_CLIENTS, clients_arg);
		return 2;
	}
	b->npoints = (unsigned)n;
	if (!size_arg)
		size_arg = b->quick ? QUICK_TOTAL : DEFAULT_TOTAL;
	if (!limit_arg)
		limit_arg = b->quick ? QUICK_LIMIT : DEFAULT_LIMIT;
	if (parse_size(size_arg, &b->total) < 0 || b->total > (1ULL << 40)) {
		fprintf(stderr, PROG ": -s: expected a size up to 1T, got '%s'\n", size_arg);
		return 2;
	}
	b->total_pages = (size_t)(b->total / b->page_size);
	for (unsigned i = 0; i < b->npoints; i++)
		if (b->total_pages / b->clients[i] < 16) {
			fprintf(stderr, PROG ": -s: %s is less than 16 pages for each of %u "
				"clients\n", size_arg, b->clients[i]);
			return 2;
		}
	b->total = (uint64_t)b->total_pages * b->page_size;
	if (parse_size(limit_arg, &b->limit) < 0 || b->limit < 16 * b->page_size ||
	    b->limit >= b->total) {
		fprintf(stderr, PROG ": -l: expected a limit below the total size, got '%s'\n",
			limit_arg);
		return 2;
	}
	b->limit -= b->limit % b->page_size;
	b->hot_total = b->limit / 4;
	if (hot_arg && (parse_size(hot_arg, &b->hot_total) < 0 ||
			b->hot_total < b->page_size || b->hot_total >= b->total)) {
		fprintf(stderr, PROG ": --hot: expected a size below the total, got '%s'\n",
			hot_arg);
		return 2;
	}
	b->threads = (unsigned)threads;
	b->rounds = (unsigned)rounds;
	b->rand_accesses = rand_acc ? rand_acc : b->total_pages / 4;
	b->skew_accesses = skew_acc ? skew_acc : (uint64_t)b->total_pages * 2;
	/* At least one access per thread of the warm-up's half round. */
	for (unsigned i = 0; i < b->npoints; i++) {
		uint64_t min = 2ull * b->clients[i] * b->threads;

		if (b->rand_accesses < min)
			b->rand_accesses = min;
		if (b->skew_accesses < min)
			b->skew_accesses = min;
	}
	/* Room for every page and some: swap areas lose a page to the header. */
	b->swap_size = b->total + b->total / 2;
	b->pagerd = bench_find_pagerd();
	if (strlen(b->swap_dir) > 64) {
		fprintf(stderr, PROG ": --swap-dir: keep it under 64 characters "
			"(a socket goes in it)\n");
		return 2;
	}
	return 0;
}

static void print_header(const struct bench *b)
{
	printf(PROG ": %.0f MiB of data split among the clients, %u threads each, "
	       "budget %.0f MiB, hot set %.0f MiB in all; %u rounds of %" PRIu64
	       " accesses (skewed %" PRIu64 ") after a half-round warm-up, median shown\n",
	       bench_mib((int64_t)b->total), b->threads, bench_mib((int64_t)b->limit),
	       bench_mib((int64_t)b->hot_total), b->rounds, b->rand_accesses, b->skew_accesses);
	if (b->kernel_on && !b->ks.unavail[0])
		printf("kernel: every client in one memory cgroup %s/pagerd-bench-* limited "
		       "to the budget, swap file %s (%.0f MiB, priority %d), THP off\n",
		       b->ks.cg_base, b->ks.kswap, bench_mib((int64_t)b->swap_size),
		       BENCH_SWAP_PRIORITY);
	if (b->ks.other_swaps[0])
		printf("NOTE: other swap areas are active and may take kernel swap:%s\n",
		       b->ks.other_swaps);
	if (b->kernel_on && b->ks.unavail[0])
		printf("kernel baseline unavailable: %s\n", b->ks.unavail);
	if (b->pager_on)
		printf("pagerd: %s, one for all clients, the budget as its global limit "
		       "(no per-client or per-region limit), its swap file beside the "
		       "kernel's\n", b->pagerd);
	if (side_runs(b, SD_KERNEL) && side_runs(b, SD_PAGER))
		printf("the sides take turns step by step (the write, each warm-up and "
		       "round), in alternating order\n");
	fflush(stdout);
}

int main(int argc, char **argv)
{
	static struct bench b;
	struct sigaction sa = { .sa_handler = bench_on_signal };
	sigset_t block;
	int status, e;

	b.ks.prog = PROG;
	b.pidfd = -1;
	for (int s = 0; s < NR_SIDES; s++)
		for (unsigned i = 0; i < MAX_CLIENTS; i++)
			b.cl[s][i].fd = -1;
	e = parse_args(&b, argc, argv);
	if (e)
		return e < 0 ? 0 : e;

	/* The handlers only set a flag; the signals stay blocked except while
	 * the parent waits for its clients, so that it always cleans up. */
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGHUP);
	sigaddset(&block, SIGPIPE);
	sigprocmask(SIG_BLOCK, &block, &b.ks.oldmask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGPIPE, &sa, NULL);

	bench_find_cgroup_base(&b.ks);
	if (geteuid() == 0)
		bench_cleanup_stale(&b.ks);
	if (bench_make_workdir(&b.ks, b.swap_dir) < 0)
		return 1;
	snprintf(b.psock, sizeof(b.psock), "%s/pagerd.sock", b.ks.workdir);
	snprintf(b.pswap, sizeof(b.pswap), "%s/pagerd.swap", b.ks.workdir);
	if (b.kernel_on)
		bench_kernel_setup(&b.ks, b.limit, b.swap_size);
	if (!b.json)
		print_header(&b);
	if (!b.pager_on && b.ks.unavail[0])
		goto out;

	for (unsigned pi = 0; pi < b.npoints && !b.failed; pi++) {
		e = run_point(&b, pi);
		if (stop_point(&b, e == 0) < 0 && !e)
			e = -EIO;
		if (e == -EINTR || bench_interrupted())
			goto out;
		if (e < 0)
			b.failed = true;
		else if (!b.json)
			print_point(&b, pi);
	}
	if (!b.failed) {
		if (b.json)
			print_json(&b);
		else
			print_table(&b);
	}
out:
	stop_point(&b, false);
	bench_kernel_teardown(&b.ks);
	free(b.env_args);
	if (bench_interrupted()) {
		fprintf(stderr, PROG ": interrupted by %s; cleaned up\n",
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
