/* SPDX-License-Identifier: MIT */
/*
 * first_touch: the cost of touching never-used memory through libpager,
 * against the kernel's own anonymous memory.
 *
 * Every trial maps a fresh region and writes one byte to each page of it,
 * so each page takes exactly one first-touch fault: an in-kernel zero-fill
 * fault for the anonymous mapping, a userfaultfd round trip to pagerd (or
 * less, where pagerd resolves several pages per fault) for the libpager
 * region.  Pages are touched in sequential or random order by 1..N threads:
 *
 *   sequential  each thread touches one contiguous chunk of the pages;
 *   random      one shuffled permutation of all the pages, generated before
 *               any timing, is cut into one contiguous slice per thread.
 *
 * Kernel and pager trials alternate (kernel, pager, kernel, pager, ...) so
 * that the noise of a shared VM falls on both, and the table reports the
 * median time per page of each and their ratio.  Setting up and tearing down
 * a region (mmap/munmap, pager_region_create/destroy) and starting the
 * threads are not timed: only the span from the first thread starting to
 * touch until the last one finishing is.
 *
 *   first_touch [-s SIZE] [-r RUNS] [-t THREADS,...] [--json]
 *
 * Exit status: 0 success, 1 failure (including pager_open failing), 2 usage.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <getopt.h>
#include <pager.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define MAX_THREADS     256
#define MAX_RUNS        1000
#define DEFAULT_SIZE    "1G"
#define DEFAULT_RUNS    3
#define DEFAULT_THREADS "1,4"
#define PERM_SEED       0x9e3779b97f4a7c15ULL /* fixed: every run shuffles alike */

enum pattern { PATTERN_SEQUENTIAL, PATTERN_RANDOM, NR_PATTERNS };
enum backing { BACKING_KERNEL, BACKING_PAGER, NR_BACKINGS };

static const char *const pattern_name[NR_PATTERNS] = {
	[PATTERN_SEQUENTIAL] = "sequential",
	[PATTERN_RANDOM] = "random",
};

static const char *const backing_name[NR_BACKINGS] = {
	[BACKING_KERNEL] = "kernel",
	[BACKING_PAGER] = "pager",
};

/* Everything one run of the program works with. */
struct bench {
	size_t page_size;
	size_t npages;
	size_t size;            /* npages * page_size */
	unsigned runs;          /* trials per configuration and backing */
	unsigned nthreads_list;
	unsigned threads[MAX_THREADS];
	bool json;
	size_t *perm;           /* random order: a permutation of 0..npages-1 */
	struct pager *pager;
};

/* The medians of one (pattern, threads) configuration. */
struct result {
	enum pattern pattern;
	unsigned threads;
	double *ns_per_page[NR_BACKINGS];  /* one per trial, bench.runs long */
	double median[NR_BACKINGS];
};

struct worker {
	pthread_t tid;
	struct gate *gate;
	volatile char *base;    /* volatile: every store is a real touch */
	size_t page_size;
	const size_t *order;    /* NULL: pages first.. in address order */
	size_t first;           /* first page, or first index into order */
	size_t count;
	struct timespec start, end;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: first_touch [-s SIZE] [-r RUNS] [-t THREADS,...] [--json]\n"
		"  -s, --size SIZE       region size, K/M/G/T suffixes (default %s)\n"
		"  -r, --runs N          trials per configuration (default %d)\n"
		"  -t, --threads LIST    comma-separated thread counts (default %s)\n"
		"      --json            print the results as JSON instead of a table\n"
		"  -h, --help            this text\n",
		DEFAULT_SIZE, DEFAULT_RUNS, DEFAULT_THREADS);
}

/*
 * Fisher-Yates shuffle of 0..n-1.  The modulo bias is below n / 2^64, far
 * under anything a timing could show.  Returns NULL if out of memory.
 */
static size_t *make_permutation(size_t n, uint64_t seed)
{
	size_t *perm = malloc(n * sizeof(*perm));

	if (!perm)
		return NULL;
	for (size_t i = 0; i < n; i++)
		perm[i] = i;
	for (size_t i = n - 1; i > 0; i--) {
		size_t j = (size_t)(splitmix64(&seed) % (i + 1));
		size_t t = perm[i];

		perm[i] = perm[j];
		perm[j] = t;
	}
	return perm;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	volatile char *base = w->base;
	size_t ps = w->page_size;
	size_t end = w->first + w->count;

	if (gate_wait(w->gate) < 0)
		return NULL;

	clock_gettime(CLOCK_MONOTONIC, &w->start);
	if (w->order) {
		for (size_t i = w->first; i < end; i++)
			base[w->order[i] * ps] = 1;
	} else {
		for (size_t i = w->first; i < end; i++)
			base[i * ps] = 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &w->end);
	return NULL;
}

/*
 * Touches every page of [base, base + b->size) once, in the given pattern,
 * with nthreads threads, and stores in *ret_ns the time from the earliest
 * thread starting to the latest one finishing; a thread that is scheduled
 * late therefore counts against the trial, as it would in an application.
 * Returns 0, or -errno if a thread could not be created (*ret_ns untouched;
 * the threads already started are stopped and joined, no page touched).
 */
static int touch_region(const struct bench *b, void *base, enum pattern pattern,
			unsigned nthreads, uint64_t *ret_ns)
{
	struct gate gate = GATE_INIT;
	struct worker *w = calloc(nthreads, sizeof(*w));
	uint64_t start = UINT64_MAX, end = 0;
	unsigned created;
	int e = 0;

	if (!w)
		return -ENOMEM;
	for (created = 0; created < nthreads; created++) {
		struct worker *t = &w[created];
		/* Even split: slice i is [n*i/T, n*(i+1)/T). */
		size_t lo = b->npages * created / nthreads;
		size_t hi = b->npages * (created + 1) / nthreads;

		t->gate = &gate;
		t->base = base;
		t->page_size = b->page_size;
		t->order = pattern == PATTERN_RANDOM ? b->perm : NULL;
		t->first = lo;
		t->count = hi - lo;
		e = pthread_create(&t->tid, NULL, worker_main, t);
		if (e) {
			e = -e;
			break;
		}
	}
	gate_set(&gate, e ? -1 : 1);
	for (unsigned i = 0; i < created; i++)
		pthread_join(w[i].tid, NULL);

	if (!e) {
		for (unsigned i = 0; i < nthreads; i++) {
			uint64_t s = ts_ns(&w[i].start), f = ts_ns(&w[i].end);

			if (s < start)
				start = s;
			if (f > end)
				end = f;
		}
		*ret_ns = end - start;
	}
	free(w);
	gate_destroy(&gate);
	return e;
}

/*
 * One kernel trial: fresh private anonymous memory, touched, unmapped.
 * Transparent huge pages are refused for the mapping so that every page is
 * a 4 KiB first-touch fault whatever the host's THP setting, as it is in a
 * libpager region; with THP one fault would fill 512 pages and the baseline
 * would measure something else.  Returns 0 or -errno, having said what
 * failed.
 */
static int kernel_trial(const struct bench *b, enum pattern pattern,
			unsigned nthreads, uint64_t *ret_ns)
{
	void *mem = mmap(NULL, b->size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int e;

	if (mem == MAP_FAILED) {
		e = -errno;
		fprintf(stderr, "first_touch: mmap %zu bytes: %s\n", b->size, strerror(-e));
		return e;
	}
	/* EINVAL without CONFIG_TRANSPARENT_HUGEPAGE: then there are none. */
	(void)madvise(mem, b->size, MADV_NOHUGEPAGE);
	e = touch_region(b, mem, pattern, nthreads, ret_ns);
	if (e < 0)
		fprintf(stderr, "first_touch: starting threads: %s\n", strerror(-e));
	munmap(mem, b->size);
	return e;
}

/* One pager trial: a fresh libpager region, touched, destroyed.  Returns 0
 * or -errno, having said what failed. */
static int pager_trial(const struct bench *b, enum pattern pattern,
		       unsigned nthreads, uint64_t *ret_ns)
{
	const struct pager_region_opts opts = {
		.sz = sizeof(opts),
		.name = "first_touch",
		.memory_limit = 0,
	};
	struct pager_region *r;
	int e, d;

	e = pager_region_create(b->pager, b->size, &opts, &r);
	if (e < 0) {
		fprintf(stderr, "first_touch: pager_region_create %zu bytes: %s\n",
			b->size, strerror(-e));
		return e;
	}
	if (pager_region_len(r) < b->size) {
		fprintf(stderr, "first_touch: pager_region_len %zu < %zu requested\n",
			pager_region_len(r), b->size);
		pager_region_destroy(r);
		return -EINVAL;
	}
	e = touch_region(b, pager_region_addr(r), pattern, nthreads, ret_ns);
	if (e < 0)
		fprintf(stderr, "first_touch: starting threads: %s\n", strerror(-e));
	d = pager_region_destroy(r);
	if (d < 0) {
		fprintf(stderr, "first_touch: pager_region_destroy: %s\n", strerror(-d));
		if (!e)
			e = d;
	}
	return e;
}

/*
 * Runs the trials of one configuration, kernel and pager alternating, and
 * fills res->median; res->ns_per_page keeps the trials in run order.
 * Returns 0 or -errno, having said what failed.
 */
static int run_config(const struct bench *b, struct result *res)
{
	double *sorted = malloc(b->runs * sizeof(*sorted));

	if (!sorted) {
		fprintf(stderr, "first_touch: out of memory\n");
		return -ENOMEM;
	}
	for (unsigned run = 0; run < b->runs; run++) {
		for (int k = 0; k < NR_BACKINGS; k++) {
			uint64_t ns = 0;
			int e = k == BACKING_KERNEL ?
				kernel_trial(b, res->pattern, res->threads, &ns) :
				pager_trial(b, res->pattern, res->threads, &ns);

			if (e < 0) {
				free(sorted);
				return e;
			}
			res->ns_per_page[k][run] = (double)ns / (double)b->npages;
		}
	}
	for (int k = 0; k < NR_BACKINGS; k++) {
		memcpy(sorted, res->ns_per_page[k], b->runs * sizeof(*sorted));
		res->median[k] = median(sorted, b->runs);
	}
	free(sorted);
	return 0;
}

static double ratio(const struct result *res)
{
	return res->median[BACKING_KERNEL] > 0 ?
		res->median[BACKING_PAGER] / res->median[BACKING_KERNEL] : 0;
}

static void print_header(const struct bench *b)
{
	struct pager_info info = { .sz = sizeof(info) };

	printf("first_touch: %zu MiB region (%zu pages of %zu B), %u run%s per "
	       "configuration, median ns/page\n",
	       b->size >> 20, b->npages, b->page_size, b->runs, b->runs == 1 ? "" : "s");
	if (pager_get_info(b->pager, &info) == 0)
		printf("pager: %s pagerd, pid %d\n",
		       info.flags & PAGER_INFO_PRIVATE ? "private" : "shared",
		       (int)info.daemon_pid);
	printf("%-10s  %7s  %14s  %13s  %7s\n",
	       "pattern", "threads", "kernel ns/page", "pager ns/page", "ratio");
	fflush(stdout);
}

static void print_row(const struct result *res)
{
	printf("%-10s  %7u  %14.1f  %13.1f  %7.2f\n",
	       pattern_name[res->pattern], res->threads,
	       res->median[BACKING_KERNEL], res->median[BACKING_PAGER], ratio(res));
	fflush(stdout);
}

static void print_json(const struct bench *b, const struct result *res, size_t nres)
{
	printf("{\n  \"benchmark\": \"first_touch\",\n");
	printf("  \"size\": %zu,\n  \"page_size\": %zu,\n  \"pages\": %zu,\n"
	       "  \"runs\": %u,\n  \"unit\": \"ns/page\",\n  \"results\": [\n",
	       b->size, b->page_size, b->npages, b->runs);
	for (size_t i = 0; i < nres; i++) {
		const struct result *r = &res[i];

		printf("    {\"pattern\": \"%s\", \"threads\": %u",
		       pattern_name[r->pattern], r->threads);
		for (int k = 0; k < NR_BACKINGS; k++)
			printf(", \"%s\": %.1f", backing_name[k], r->median[k]);
		printf(", \"ratio\": %.3f", ratio(r));
		for (int k = 0; k < NR_BACKINGS; k++) {
			printf(", \"%s_runs\": [", backing_name[k]);
			for (unsigned run = 0; run < b->runs; run++)
				printf("%s%.1f", run ? ", " : "", r->ns_per_page[k][run]);
			printf("]");
		}
		printf("}%s\n", i + 1 < nres ? "," : "");
	}
	printf("  ]\n}\n");
}

/* "1,4" into b->threads; -EINVAL for an empty, zero or oversized entry. */
static int parse_thread_list(struct bench *b, const char *arg)
{
	int n = parse_uint_list(arg, b->threads, MAX_THREADS, MAX_THREADS);

	if (n < 0)
		return n;
	b->nthreads_list = (unsigned)n;
	return 0;
}

/* Fills *b from the command line.  Returns 0, or 2 (the exit status for a
 * usage error) having said why, or -1 after --help. */
static int parse_args(struct bench *b, int argc, char **argv)
{
	enum { OPT_JSON = 0x100 };
	static const struct option longopts[] = {
		{ "size", required_argument, NULL, 's' },
		{ "runs", required_argument, NULL, 'r' },
		{ "threads", required_argument, NULL, 't' },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *size_arg = DEFAULT_SIZE;
	uint64_t size, runs = DEFAULT_RUNS;
	long ps = sysconf(_SC_PAGESIZE);
	int c;

	if (parse_thread_list(b, DEFAULT_THREADS) < 0)
		return 2;
	while ((c = getopt_long(argc, argv, "s:r:t:h", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			size_arg = optarg;
			break;
		case 'r':
			if (parse_u64(optarg, &runs) < 0 || runs < 1 || runs > MAX_RUNS) {
				fprintf(stderr, "first_touch: -r: expected 1..%d, got '%s'\n",
					MAX_RUNS, optarg);
				return 2;
			}
			break;
		case 't':
			if (parse_thread_list(b, optarg) < 0) {
				fprintf(stderr, "first_touch: -t: expected thread counts "
					"1..%d separated by commas, got '%s'\n",
					MAX_THREADS, optarg);
				return 2;
			}
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
		fprintf(stderr, "first_touch: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}

	b->page_size = ps > 0 ? (size_t)ps : 4096;
	if (parse_size(size_arg, &size) < 0 || size == 0 ||
	    size > SIZE_MAX - b->page_size) {
		fprintf(stderr, "first_touch: -s: expected a size such as 256M or 1G, "
			"got '%s'\n", size_arg);
		return 2;
	}
	b->npages = ((size_t)size + b->page_size - 1) / b->page_size;
	b->size = b->npages * b->page_size;
	b->runs = (unsigned)runs;
	for (unsigned i = 0; i < b->nthreads_list; i++) {
		if (b->threads[i] > b->npages) {
			fprintf(stderr, "first_touch: %u threads but only %zu pages\n",
				b->threads[i], b->npages);
			return 2;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct bench b = { .runs = DEFAULT_RUNS };
	struct result *res = NULL;
	size_t nres = 0;
	int status = 1, e;

	e = parse_args(&b, argc, argv);
	if (e)
		return e < 0 ? 0 : e;

	/* Generated once, before any timing, and shared by every random trial. */
	b.perm = make_permutation(b.npages, PERM_SEED);
	if (!b.perm) {
		fprintf(stderr, "first_touch: no memory for a %zu-page permutation\n",
			b.npages);
		return 1;
	}

	e = pager_open(&b.pager, NULL);
	if (e < 0) {
		fprintf(stderr, "first_touch: pager_open: %s "
			"(is pagerd running, or $PAGERD set to a pagerd binary?)\n",
			strerror(-e));
		goto out;
	}

	res = calloc((size_t)NR_PATTERNS * b.nthreads_list, sizeof(*res));
	if (!res)
		goto nomem;
	if (!b.json)
		print_header(&b);
	for (int pat = 0; pat < NR_PATTERNS; pat++) {
		for (unsigned i = 0; i < b.nthreads_list; i++) {
			struct result *r = &res[nres++];

			r->pattern = (enum pattern)pat;
			r->threads = b.threads[i];
			for (int k = 0; k < NR_BACKINGS; k++) {
				r->ns_per_page[k] = calloc(b.runs, sizeof(double));
				if (!r->ns_per_page[k])
					goto nomem;
			}
			e = run_config(&b, r);
			if (e < 0)
				goto out;
			if (!b.json)
				print_row(r);
		}
	}
	if (b.json)
		print_json(&b, res, nres);
	status = 0;
	goto out;

nomem:
	fprintf(stderr, "first_touch: out of memory\n");
out:
	for (size_t i = 0; i < nres; i++)
		for (int k = 0; k < NR_BACKINGS; k++)
			free(res[i].ns_per_page[k]);
	free(res);
	pager_close(b.pager);
	free(b.perm);
	return status;
}
