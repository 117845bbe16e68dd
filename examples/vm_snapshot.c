/* SPDX-License-Identifier: MIT */
/*
 * vm_snapshot: a live snapshot of a VM-like workload, checked to be one
 * consistent cut, then restored lazily in a new process.
 *
 * "Guest memory" is one region (384 MiB by default, 3/4 of it used by the
 * guest, the last quarter never touched) under a memory limit (128 MiB by
 * default, so most of it is in swap), served by a private pagerd.  Four
 * "vCPU" threads boot (write each of their pages once) and then keep
 * rewriting random pages of their own.  Every write stamps all the words of
 * the page with (page << 32 | generation), the page's generation counting
 * up by one per write.  While they run, the main thread takes a snapshot
 * with pager_region_snapshot_start() and polls it to completion; the vCPUs
 * never stop.
 *
 * Why the image can be checked to be ONE cut.  The instant of the snapshot
 * (pagerd write-protects the whole region at once) lies somewhere inside
 * the pager_region_snapshot_start() call.  Each vCPU owns the pages
 * p % vcpus == id, so a page has one writer, and logs every write it
 * begins (the page's stamp) in a ring, numbered by a counter it publishes
 * before the page's first store.  Around the call the main thread reads
 * each vCPU's counter (a before, b after) and copies its writes [a-1, b)
 * from the ring: the instant falls inside that window for every vCPU.  In
 * the image, a cut of vCPU v after its write K means: its writes before K
 * are there entirely, write K may be there in part (the page it was
 * stamping at the instant, each word old or new), nothing after.  Every
 * page of v then allows an interval of K (from the window's history of
 * that page) and the image is a cut only if those intervals meet; pages
 * not written in the window must hold exactly the generation they had.
 * Also checked, as a plainer statement of the same: each page's generation
 * lies between its last completed write before the call and its last begun
 * write after it, and never-written pages read as zeros.
 *
 * Then the vCPUs stop, the image's checksum is computed, and the program
 * runs itself again in restore mode — a new process, a new private pagerd:
 * pager_region_restore() returns at once, pages are read from the image as
 * they are touched (image_reads is shown before and after reading half of
 * the region), and the checksum of the whole restored region must match.
 *
 *   vm_snapshot [-s SIZE] [-l LIMIT] [-o PATH] [-c VCPUS] [-w SECONDS] [--keep]
 *   vm_snapshot --restore PATH [--expect CHECKSUM] [-l LIMIT] [--prefetch]
 *
 * Exit status: 0 success, 1 wrong data or a call failed, 2 usage, 77 no
 * snapshot support in this libpager, pagerd or kernel.
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
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/*
 * The snapshot calls are declared in pager.h but a libpager without them
 * may be the one linked or loaded.  Weak references link either way; their
 * address is NULL until a libpager that has them is loaded, and the
 * program then exits 77 saying so.
 */
#pragma weak pager_region_snapshot_start
#pragma weak pager_region_snapshot_poll
#pragma weak pager_region_restore

extern char **environ;

#define DEFAULT_SIZE    "384M"
#define DEFAULT_LIMIT   "128M"
#define DEFAULT_PATH    "/var/tmp/vm_snapshot.img"
#define DEFAULT_VCPUS   4
#define MAX_VCPUS       64
#define DEFAULT_WARMUP  2
#define MAX_WARMUP      3600
#define USED_PERCENT    75          /* of guest memory the guest writes */
#define LOG_CAP         (1u << 18)  /* writes a vCPU's ring remembers */
#define POLL_MS         100
#define STALL_S         120         /* no progress this long: give up */
#define CHUNK           (1u << 20)  /* image bytes read at a time */
#define EXIT_SKIP       77

/* The stamp of generation g of page p in each of its words; zero for
 * generation 0, the never-written page. */
static uint64_t stamp(uint64_t p, uint32_t g)
{
	return g ? p << 32 | g : 0;
}

static uint32_t stamp_gen(uint64_t w)
{
	return (uint32_t)w;
}

static uint64_t stamp_page(uint64_t w)
{
	return w >> 32;
}

/* What one page of the image holds. */
enum page_kind {
	PK_WHOLE,       /* every word stamp(p, gen) (all zero: gen 0) */
	PK_TORN,        /* each word stamp(p, gen) or stamp(p, gen - 1), both seen */
	PK_GARBAGE,     /* anything else */
};

struct vcpu {
	pthread_t tid;
	struct vm *vm;
	unsigned id;
	bool created;
	uint64_t seed;
	uint64_t started;       /* writes begun (atomic: main reads it) */
	uint64_t *ring;         /* stamp of write k at [k % LOG_CAP] (atomic) */

	/* Main's copy at the snapshot: writes [first, first + nwin). */
	uint64_t a, b, first;
	uint64_t *window;
	size_t nwin;
	bool window_ok;         /* the ring still held all of it */
	uint64_t writes_at_start, writes_at_done;

	/* The check's verdict for this vCPU. */
	bool cut_found;
	uint64_t cut_lo, cut_hi;
};

/* Everything one run works with. */
struct vm {
	/* settings */
	size_t page_size, words, npages, used, size;
	uint64_t limit;
	const char *path;
	char meta[PATH_MAX + 8];
	unsigned nvcpus, warmup_s;
	bool keep, prefetch;
	const char *restore;    /* restore mode: the image */
	uint64_t expect;
	bool have_expect;

	struct pager *pager;
	struct pager_region *region;
	uint64_t *mem;
	/* Per page, written only by the page's vCPU: the generation of the
	 * last write begun (before its first store) and completed (after its
	 * last store). */
	uint32_t *gen_started, *gen_done;
	/* Read by main: gen_done before the call, gen_started after it. */
	uint32_t *gen_before, *gen_after;
	struct vcpu *vcpu;
	int stop, booted;       /* atomic */

	/* the snapshot */
	uint64_t call_ns, pause_ns, copy_ns, pages_total;
	bool image_made;
	/* the check */
	uint32_t *img_gen;
	uint8_t *img_kind;
	uint64_t checksum;
};

static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
	got_signal = sig;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

static double mib(uint64_t bytes)
{
	return (double)bytes / (1024.0 * 1024.0);
}

static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* FNV-1a over 64-bit words: the image's and the restored region's
 * contents in the same order give the same value. */
static uint64_t checksum_words(uint64_t h, const uint64_t *w, size_t n)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ w[i]) * 0x100000001b3ULL;
	return h;
}

#define CHECKSUM_INIT 0xcbf29ce484222325ULL

/*
 * A size with an optional K, M, G or T suffix (powers of 1024).  The
 * tree's own parser (common/size.c) is not part of libpager, and an
 * example builds with nothing but `pkg-config --libs libpager`.
 */
static int parse_size(const char *s, uint64_t *ret)
{
	static const char units[] = "KMGT";
	unsigned long long v;
	unsigned shift = 0;
	char *end;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -ERANGE;
	if (*end) {
		const char *u = strchr(units, *end & ~0x20);

		if (!u || !*u || (end[1] && strcmp(end + 1, "B") && strcmp(end + 1, "iB")))
			return -EINVAL;
		shift = 10 * (unsigned)(u - units + 1);
	}
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*ret = (uint64_t)v << shift;
	return 0;
}

static bool stopped(struct vm *vm)
{
	return __atomic_load_n(&vm->stop, __ATOMIC_RELAXED) || got_signal;
}

/* Pages of vCPU id: id, id + vcpus, id + 2 * vcpus, ... below vm->used. */
static size_t vcpu_pages(const struct vm *vm, unsigned id)
{
	return (vm->used - id + vm->nvcpus - 1) / vm->nvcpus;
}

/*
 * One write of page p by its vCPU c: announce it (ring, gen_started, then
 * the counter), stamp every word, then record it done.  Every store is a
 * release store so that none of them becomes visible before the ones above
 * it: whatever the snapshot's instant catches of this write, main has seen
 * it announced if it read the counter after the instant, and a write it has
 * not seen announced left no trace in memory.
 */
static void vcpu_write(struct vcpu *c, size_t p)
{
	struct vm *vm = c->vm;
	uint32_t g = vm->gen_started[p] + 1;    /* only this thread writes it */
	uint64_t w = stamp(p, g), k = c->started;
	uint64_t *page = vm->mem + p * vm->words;

	__atomic_store_n(&c->ring[k % LOG_CAP], w, __ATOMIC_RELEASE);
	__atomic_store_n(&vm->gen_started[p], g, __ATOMIC_RELEASE);
	__atomic_store_n(&c->started, k + 1, __ATOMIC_RELEASE);
	for (size_t i = 0; i < vm->words; i++)
		__atomic_store_n(&page[i], w, __ATOMIC_RELEASE);
	__atomic_store_n(&vm->gen_done[p], g, __ATOMIC_RELEASE);
}

static void *vcpu_main(void *arg)
{
	struct vcpu *c = arg;
	struct vm *vm = c->vm;
	size_t n = vcpu_pages(vm, c->id);

	/* Boot: every page of ours once, in order. */
	for (size_t i = 0; i < n && !stopped(vm); i++)
		vcpu_write(c, c->id + i * vm->nvcpus);
	__atomic_add_fetch(&vm->booted, 1, __ATOMIC_RELEASE);
	while (!stopped(vm))
		vcpu_write(c, c->id + (size_t)(splitmix64(&c->seed) % n) * vm->nvcpus);
	return NULL;
}

static uint64_t vcpu_writes(struct vm *vm)
{
	uint64_t n = 0;

	for (unsigned i = 0; i < vm->nvcpus; i++)
		n += __atomic_load_n(&vm->vcpu[i].started, __ATOMIC_ACQUIRE);
	return n;
}

static int start_vcpus(struct vm *vm)
{
	for (unsigned i = 0; i < vm->nvcpus; i++) {
		struct vcpu *c = &vm->vcpu[i];
		int e;

		c->vm = vm;
		c->id = i;
		c->seed = 0x243f6a8885a308d3ULL * (i + 1);
		c->ring = calloc(LOG_CAP, sizeof(*c->ring));
		if (!c->ring) {
			fprintf(stderr, "vm_snapshot: out of memory\n");
			return -ENOMEM;
		}
		e = pthread_create(&c->tid, NULL, vcpu_main, c);
		if (e) {
			fprintf(stderr, "vm_snapshot: pthread_create: %s\n", strerror(e));
			return -e;
		}
		c->created = true;
	}
	return 0;
}

static void stop_vcpus(struct vm *vm)
{
	__atomic_store_n(&vm->stop, 1, __ATOMIC_RELAXED);
	for (unsigned i = 0; vm->vcpu && i < vm->nvcpus; i++) {
		if (vm->vcpu[i].created)
			pthread_join(vm->vcpu[i].tid, NULL);
		vm->vcpu[i].created = false;
	}
}

/*
 * Copies each vCPU's writes [a - 1, b) out of its ring (write a - 1 may
 * still have been under way when a was read), then checks that the ring
 * did not wrap over them meanwhile.  A vCPU whose window did not fit is
 * left out of the one-cut check (said later), not failed.
 */
static void copy_windows(struct vm *vm)
{
	for (unsigned i = 0; i < vm->nvcpus; i++) {
		struct vcpu *c = &vm->vcpu[i];
		uint64_t now;

		c->first = c->a ? c->a - 1 : 0;
		c->nwin = (size_t)(c->b - c->first);
		c->window_ok = false;
		if (c->nwin >= LOG_CAP)
			continue;
		c->window = malloc((c->nwin ? c->nwin : 1) * sizeof(*c->window));
		if (!c->window)
			continue;
		for (size_t k = 0; k < c->nwin; k++)
			c->window[k] = __atomic_load_n(&c->ring[(c->first + k) % LOG_CAP],
						       __ATOMIC_RELAXED);
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		now = __atomic_load_n(&c->started, __ATOMIC_RELAXED);
		/* Write `now` may be logging over slot first + LOG_CAP already. */
		c->window_ok = now - c->first < LOG_CAP;
	}
}

static void print_progress(const struct pager_snapshot_progress *pr, size_t page_size,
			   uint64_t t0, bool tty, bool last)
{
	double s = (double)(now_ns() - t0) / 1e9;
	double pct = pr->pages_total ? 100.0 * (double)pr->pages_done /
				       (double)pr->pages_total : 100.0;

	printf("%ssnapshot: %6.1f%%  %" PRIu64 "/%" PRIu64 " pages  %.1f s  %.0f MiB/s%s",
	       tty ? "\r" : "", pct, pr->pages_done, pr->pages_total, s,
	       s > 0 ? mib(pr->pages_done * page_size) / s : 0.0,
	       tty && !last ? "   " : "\n");
	fflush(stdout);
}

/*
 * Takes the live snapshot and waits for it, recording the vCPUs' windows.
 * Returns 0, 1 (a call failed; said why) or EXIT_SKIP (no snapshots here).
 */
static int take_snapshot(struct vm *vm)
{
	struct pager_snapshot_opts so = { .sz = sizeof(so) };
	struct pager_snapshot_progress pr = { .sz = sizeof(pr) };
	bool tty = isatty(STDOUT_FILENO);
	uint64_t t0, t1, last_change, last_print = 0, last_done = 0;
	int e;

	for (unsigned i = 0; i < vm->nvcpus; i++)
		vm->vcpu[i].a = __atomic_load_n(&vm->vcpu[i].started, __ATOMIC_ACQUIRE);
	for (size_t p = 0; p < vm->npages; p++)
		vm->gen_before[p] = __atomic_load_n(&vm->gen_done[p], __ATOMIC_ACQUIRE);

	/* libpager creates the file before pagerd says yes or no. */
	vm->image_made = true;
	t0 = now_ns();
	e = pager_region_snapshot_start(vm->region, vm->path, &so);
	t1 = now_ns();

	for (size_t p = 0; p < vm->npages; p++)
		vm->gen_after[p] = __atomic_load_n(&vm->gen_started[p], __ATOMIC_ACQUIRE);
	for (unsigned i = 0; i < vm->nvcpus; i++)
		vm->vcpu[i].b = __atomic_load_n(&vm->vcpu[i].started, __ATOMIC_ACQUIRE);
	copy_windows(vm);

	if (e == -EOPNOTSUPP || e == -ENOSYS) {
		printf("vm_snapshot: snapshots not supported by this pagerd or kernel "
		       "(%s): uffd write-protect on shmem needs Linux 5.19\n", strerror(-e));
		return EXIT_SKIP;
	}
	if (e < 0) {
		fprintf(stderr, "vm_snapshot: pager_region_snapshot_start %s: %s\n",
			vm->path, strerror(-e));
		return 1;
	}
	vm->call_ns = t1 - t0;
	for (unsigned i = 0; i < vm->nvcpus; i++)
		vm->vcpu[i].writes_at_start = vm->vcpu[i].b;

	last_change = t1;
	for (;;) {
		uint64_t t;

		e = pager_region_snapshot_poll(vm->region, &pr);
		t = now_ns();
		if (e < 0) {
			fprintf(stderr, "%svm_snapshot: pager_region_snapshot_poll: %s\n",
				tty ? "\n" : "", strerror(-e));
			return 1;
		}
		if (e == 1)
			break;
		if (pr.pages_done != last_done) {
			last_done = pr.pages_done;
			last_change = t;
		}
		if (tty || t - last_print >= 1000000000u) {
			print_progress(&pr, vm->page_size, t0, tty, false);
			last_print = t;
		}
		if (got_signal)
			return 1;
		if (t - last_change > (uint64_t)STALL_S * 1000000000u) {
			fprintf(stderr, "%svm_snapshot: no progress for %d s (%" PRIu64 " of %"
				PRIu64 " pages copied, not done), giving up\n", tty ? "\n" : "",
				STALL_S, pr.pages_done, pr.pages_total);
			return 1;
		}
		sleep_ms(POLL_MS);
	}
	vm->copy_ns = now_ns() - t0;
	for (unsigned i = 0; i < vm->nvcpus; i++)
		vm->vcpu[i].writes_at_done = __atomic_load_n(&vm->vcpu[i].started,
							     __ATOMIC_ACQUIRE);
	print_progress(&pr, vm->page_size, t0, tty, true);
	if (pr.status < 0) {
		fprintf(stderr, "vm_snapshot: the snapshot failed: %s\n", strerror(-pr.status));
		return 1;
	}
	vm->pause_ns = pr.pause_ns;
	vm->pages_total = pr.pages_total;
	return 0;
}

/*
 * What page p of the image holds, from its words w: *ret_gen is the
 * generation of a whole page (0 for zeros), or the newer one of a torn
 * page.
 */
static enum page_kind decode_page(const uint64_t *w, size_t words, uint64_t p,
				  uint32_t *ret_gen)
{
	uint32_t g = 0;
	bool newer = false, older = false;

	for (size_t i = 0; i < words; i++) {
		if (w[i] && stamp_page(w[i]) != p)
			return PK_GARBAGE;
		if (stamp_gen(w[i]) > g)
			g = stamp_gen(w[i]);
	}
	for (size_t i = 0; i < words; i++) {
		if (w[i] == stamp(p, g))
			newer = true;
		else if (g && w[i] == stamp(p, g - 1))
			older = true;
		else
			return PK_GARBAGE;
	}
	*ret_gen = g;
	return newer && older ? PK_TORN : PK_WHOLE;
}

/*
 * Reads the image once: decodes every page into vm->img_gen/img_kind and
 * computes vm->checksum.  Returns 0, or 1 having said what was wrong with
 * the file itself.
 */
static int read_image(struct vm *vm)
{
	size_t pages_per_chunk = CHUNK / vm->page_size;
	uint64_t *buf = malloc(CHUNK), h = CHECKSUM_INIT;
	struct stat st;
	int fd = open(vm->path, O_RDONLY | O_CLOEXEC), status = 1;

	if (fd < 0 || !buf) {
		fprintf(stderr, "vm_snapshot: %s: %s\n", vm->path,
			fd < 0 ? strerror(errno) : "out of memory");
		goto out;
	}
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size != vm->size) {
		fprintf(stderr, "vm_snapshot: %s is %lld bytes, the region %zu\n",
			vm->path, (long long)st.st_size, vm->size);
		goto out;
	}
	if (access(vm->meta, F_OK) < 0) {
		fprintf(stderr, "vm_snapshot: %s: %s (the image is not complete)\n",
			vm->meta, strerror(errno));
		goto out;
	}
	for (size_t p0 = 0; p0 < vm->npages; p0 += pages_per_chunk) {
		size_t n = vm->npages - p0 < pages_per_chunk ? vm->npages - p0 : pages_per_chunk;
		size_t len = n * vm->page_size, got = 0;

		while (got < len) {
			ssize_t r = pread(fd, (char *)buf + got, len - got,
					  (off_t)(p0 * vm->page_size + got));

			if (r <= 0) {
				fprintf(stderr, "vm_snapshot: reading %s: %s\n", vm->path,
					r < 0 ? strerror(errno) : "unexpected end of file");
				goto out;
			}
			got += (size_t)r;
		}
		h = checksum_words(h, buf, len / 8);
		for (size_t i = 0; i < n; i++)
			vm->img_kind[p0 + i] = (uint8_t)decode_page(buf + i * vm->words,
								    vm->words, p0 + i,
								    &vm->img_gen[p0 + i]);
	}
	vm->checksum = h;
	status = 0;
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	return status;
}

struct win_entry {
	uint64_t page;
	uint64_t k;             /* the vCPU's write number */
	uint32_t gen;
};

static int cmp_entry(const void *x, const void *y)
{
	const struct win_entry *a = x, *b = y;

	if (a->page != b->page)
		return a->page < b->page ? -1 : 1;
	return (a->k > b->k) - (a->k < b->k);
}

/*
 * The one-cut check for vCPU c: intersects, over the pages it wrote in its
 * window, the cut positions each page's image content allows.  Pages it
 * did not write in the window are checked (exactly the generation they
 * had) by the caller.  Marks written pages in touched[].  Returns true if
 * a cut exists (c->cut_lo..cut_hi), false with *ret_bad the first page
 * that made it impossible.
 */
static bool find_cut(struct vm *vm, struct vcpu *c, uint8_t *touched, uint64_t *ret_bad)
{
	struct win_entry *e = calloc(c->nwin ? c->nwin : 1, sizeof(*e));
	uint64_t lo = c->first, hi = c->b;
	bool ok = true;

	if (!e) {
		*ret_bad = UINT64_MAX;
		return false;
	}
	for (size_t k = 0; k < c->nwin; k++) {
		e[k].page = stamp_page(c->window[k]);
		e[k].gen = stamp_gen(c->window[k]);
		e[k].k = c->first + k;
	}
	qsort(e, c->nwin, sizeof(*e), cmp_entry);
	for (size_t i = 0; i < c->nwin;) {
		uint64_t p = e[i].page, plo = 1, phi = 0;  /* empty */
		uint32_t g = vm->img_gen[p];
		size_t j = i;

		while (j < c->nwin && e[j].page == p)
			j++;
		touched[p] = 1;
		if (vm->img_kind[p] == PK_WHOLE && g == e[i].gen - 1) {
			plo = c->first;
			phi = e[i].k;
		}
		for (size_t m = i; m < j; m++) {
			if (e[m].gen != g)
				continue;
			plo = e[m].k;
			/* Torn: caught in the middle of exactly this write. */
			phi = vm->img_kind[p] == PK_TORN ? e[m].k :
			      m + 1 < j ? e[m + 1].k : c->b;
		}
		if (plo > lo)
			lo = plo;
		if (phi < hi)
			hi = phi;
		if (lo > hi && ok) {
			*ret_bad = p;
			ok = false;
		}
		i = j;
	}
	c->cut_lo = lo;
	c->cut_hi = hi;
	free(e);
	return ok;
}

/*
 * Checks the image against what the vCPUs wrote (see the top of the file)
 * and prints what it found.  Returns 0 (one consistent cut), 1 (not).
 */
static int check_image(struct vm *vm)
{
	uint64_t garbage = 0, torn = 0, out_of_bounds = 0, holes_bad = 0, moved = 0;
	uint64_t first_bad = UINT64_MAX, holes = 0;
	uint8_t *touched = calloc(vm->npages, 1);
	unsigned windows = 0, cuts = 0;
	bool all_windows = true;

	if (!touched) {
		fprintf(stderr, "vm_snapshot: out of memory\n");
		return 1;
	}
	for (size_t p = 0; p < vm->npages; p++) {
		uint32_t g = vm->img_gen[p];
		uint32_t oldest = vm->img_kind[p] == PK_TORN ? g - 1 : g;
		bool bad = true;

		if (vm->img_kind[p] == PK_GARBAGE)
			garbage++;
		else if (p >= vm->used && g)
			holes_bad++;
		else if (p < vm->used && (oldest < vm->gen_before[p] || g > vm->gen_after[p]))
			out_of_bounds++;
		else
			bad = false;
		holes += p >= vm->used && !bad;
		torn += vm->img_kind[p] == PK_TORN;
		if (bad && first_bad == UINT64_MAX)
			first_bad = p;
	}

	for (unsigned i = 0; i < vm->nvcpus; i++) {
		struct vcpu *c = &vm->vcpu[i];
		uint64_t bad;

		if (!c->window_ok) {
			all_windows = false;
			continue;
		}
		windows++;
		c->cut_found = find_cut(vm, c, touched, &bad);
		if (c->cut_found)
			cuts++;
		else if (first_bad == UINT64_MAX)
			first_bad = bad;
	}
	/* Pages of a checked vCPU that it did not write in the window. */
	for (size_t p = 0; p < vm->used; p++) {
		const struct vcpu *c = &vm->vcpu[p % vm->nvcpus];

		if (!c->window_ok || touched[p] || vm->img_kind[p] == PK_GARBAGE)
			continue;
		if (vm->img_kind[p] != PK_WHOLE || vm->img_gen[p] != vm->gen_before[p]) {
			moved++;
			if (first_bad == UINT64_MAX)
				first_bad = p;
		}
	}
	free(touched);

	printf("check: every word of a page holds (page, generation): %s; "
	       "%" PRIu64 " page%s caught mid-write by the instant (at most one a vCPU)\n",
	       garbage ? "NO" : "yes", torn, torn == 1 ? "" : "s");
	if (garbage)
		printf("  %" PRIu64 " pages hold something else\n", garbage);
	printf("check: each used page's generation between its last write done before "
	       "snapshot_start and its last begun when it returned: %s\n",
	       out_of_bounds ? "NO" : "yes");
	if (out_of_bounds)
		printf("  %" PRIu64 " pages outside those bounds\n", out_of_bounds);
	printf("check: never-written pages read as zeros: %s (%" PRIu64 " of %zu)\n",
	       holes_bad ? "NO" : "yes", holes, vm->npages - vm->used);
	printf("check: one cut (each vCPU's writes up to one point, none after): %s\n",
	       windows == cuts && !moved ? (all_windows ? "yes" : "yes, for the vCPUs checked")
					 : "NO");
	for (unsigned i = 0; i < vm->nvcpus; i++) {
		const struct vcpu *c = &vm->vcpu[i];

		if (!c->window_ok)
			printf("  vCPU %u: %zu writes in the window, more than its ring keeps "
			       "(%u): not checked\n", i, c->nwin, LOG_CAP);
		else if (c->cut_found)
			printf("  vCPU %u: cut at its write %" PRIu64 "%s (window %" PRIu64
			       "..%" PRIu64 ", %zu writes)\n", i, c->cut_lo,
			       c->cut_hi > c->cut_lo ? " or a few later" : "",
			       c->first, c->b, c->nwin);
		else
			printf("  vCPU %u: no single cut explains its pages\n", i);
	}
	if (moved)
		printf("  %" PRIu64 " pages not written in the window differ from their "
		       "generation before it\n", moved);
	if (first_bad != UINT64_MAX)
		printf("  first wrong page: %" PRIu64 " (image generation %" PRIu32
		       ", before %" PRIu32 ", after %" PRIu32 ")\n", first_bad,
		       first_bad < vm->npages ? vm->img_gen[first_bad] : 0,
		       first_bad < vm->npages ? vm->gen_before[first_bad] : 0,
		       first_bad < vm->npages ? vm->gen_after[first_bad] : 0);
	return garbage || out_of_bounds || holes_bad || moved || cuts != windows;
}

/* Bytes of the file that hold data, by SEEK_DATA/SEEK_HOLE; -1 unknown. */
static int64_t data_bytes(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int64_t n = 0;
	off_t off = 0;

	if (fd < 0)
		return -1;
	for (;;) {
		off_t d = lseek(fd, off, SEEK_DATA), h;

		if (d < 0) {
			if (errno != ENXIO)
				n = -1;
			break;
		}
		h = lseek(fd, d, SEEK_HOLE);
		if (h < 0) {
			n = -1;
			break;
		}
		n += h - d;
		off = h;
	}
	close(fd);
	return n;
}

/*
 * Runs this program again as `vm_snapshot --restore PATH --expect SUM`:
 * a new process with its own pagerd.  Returns its exit status (0, 1, 77),
 * or 1 if it could not run.
 */
static int run_restore(struct vm *vm)
{
	char self[PATH_MAX], sum[32], limit[32];
	char *argv[] = { self, (char *)"--restore", (char *)vm->path,
			 (char *)"--expect", sum, (char *)"-l", limit, NULL, NULL };
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	pid_t pid;
	int st, e;

	if (n <= 0) {
		fprintf(stderr, "vm_snapshot: readlink /proc/self/exe: %s\n", strerror(errno));
		return 1;
	}
	self[n] = 0;
	snprintf(sum, sizeof(sum), "0x%016" PRIx64, vm->checksum);
	snprintf(limit, sizeof(limit), "%" PRIu64, vm->limit);
	if (vm->prefetch)
		argv[7] = (char *)"--prefetch";
	printf("\nrestore: running %s --restore %s --expect %s -l %s%s\n", self,
	       vm->path, sum, limit, vm->prefetch ? " --prefetch" : "");
	fflush(stdout);
	e = posix_spawn(&pid, self, NULL, NULL, argv, environ);
	if (e) {
		fprintf(stderr, "vm_snapshot: posix_spawn %s: %s\n", self, strerror(e));
		return 1;
	}
	while (waitpid(pid, &st, 0) < 0) {
		if (errno != EINTR) {
			fprintf(stderr, "vm_snapshot: waitpid: %s\n", strerror(errno));
			return 1;
		}
	}
	if (WIFEXITED(st))
		return WEXITSTATUS(st) == EXIT_SKIP ? EXIT_SKIP : WEXITSTATUS(st) ? 1 : 0;
	fprintf(stderr, "vm_snapshot: the restore process died of %s\n",
		strsignal(WTERMSIG(st)));
	return 1;
}

static int open_pager(struct vm *vm)
{
	struct pager_opts o = {
		.sz = sizeof(o),
		.flags = PAGER_OPEN_FORCE_PRIVATE,
		.memory_limit = vm->limit,
	};
	int e = pager_open(&vm->pager, &o);

	if (e < 0) {
		fprintf(stderr, "vm_snapshot: pager_open: %s (is $PAGERD a pagerd binary?)\n",
			strerror(-e));
		return 1;
	}
	return 0;
}

static void print_stats(const char *when, struct pager_region *r)
{
	struct pager_region_stats st = { .sz = sizeof(st) };
	int e = pager_region_stats(r, &st);

	if (e < 0)
		printf("restore: %-34s stats: %s\n", when, strerror(-e));
	else
		printf("restore: %-34s image pages read %8" PRIu64 ", not yet %8" PRIu64
		       ", resident %8" PRIu64 "\n", when, st.image_reads, st.image_pending,
		       st.resident);
}

/* Pages of the restored region that differ from the image: said on a
 * mismatch, to tell a few wrong pages from everything wrong. */
static void count_differences(struct vm *vm)
{
	int fd = open(vm->restore, O_RDONLY | O_CLOEXEC);
	char *buf = malloc(vm->page_size);
	uint64_t diff = 0, first = UINT64_MAX;

	if (fd < 0 || !buf) {
		if (fd >= 0)
			close(fd);
		free(buf);
		return;
	}
	for (size_t p = 0; p < vm->npages; p++) {
		if (pread(fd, buf, vm->page_size, (off_t)(p * vm->page_size)) !=
		    (ssize_t)vm->page_size)
			break;
		if (memcmp(buf, (char *)vm->mem + p * vm->page_size, vm->page_size)) {
			diff++;
			if (first == UINT64_MAX)
				first = p;
		}
	}
	printf("restore: %" PRIu64 " of %zu pages differ from the image (first: %" PRIu64 ")\n",
	       diff, vm->npages, first);
	close(fd);
	free(buf);
}

/*
 * Restore mode: a region from the image, read in full (half, statistics,
 * the other half), its checksum against --expect.  Returns the exit status.
 */
static int restore_main(struct vm *vm)
{
	struct pager_region_opts ro = { .sz = sizeof(ro), .name = "vm-restored" };
	const char *prefetch_note = "this libpager's default prefetch";
	uint64_t h = CHECKSUM_INIT, t0, t1, t2, t3;
	size_t half;
	int e, status = 1;

	if (open_pager(vm))
		return 1;
#ifdef PAGER_REGION_NO_PREFETCH
	/* Without background prefetch, image_reads shows laziness plainly:
	 * only what is touched (and read ahead of a sequential stream) is read. */
	if (!vm->prefetch)
		ro.flags |= PAGER_REGION_NO_PREFETCH;
	prefetch_note = vm->prefetch ? "background prefetch on" : "no background prefetch";
#endif
	t0 = now_ns();
	e = pager_region_restore(vm->pager, vm->restore, &ro, &vm->region);
	t1 = now_ns();
	if (e == -EOPNOTSUPP || e == -ENOSYS) {
		printf("vm_snapshot: restore not supported by this pagerd: %s\n", strerror(-e));
		status = EXIT_SKIP;
		goto out;
	}
	if (e < 0) {
		fprintf(stderr, "vm_snapshot: pager_region_restore %s: %s\n", vm->restore,
			strerror(-e));
		goto out;
	}
	vm->mem = pager_region_addr(vm->region);
	vm->size = pager_region_len(vm->region);
	vm->npages = vm->size / vm->page_size;
	half = vm->npages / 2 * vm->page_size;
	printf("restore: pager_region_restore: %.0f MiB region in %.2f ms, %s\n",
	       mib(vm->size), (double)(t1 - t0) / 1e6, prefetch_note);
	print_stats("right after restore:", vm->region);
	h = checksum_words(h, vm->mem, half / 8);
	t2 = now_ns();
	print_stats("after reading the first half:", vm->region);
	h = checksum_words(h, vm->mem + half / 8, (vm->size - half) / 8);
	t3 = now_ns();
	print_stats("after reading all of it:", vm->region);
	printf("restore: read %.0f MiB in %.2f s (first half %.2f s)\n", mib(vm->size),
	       (double)(t3 - t1) / 1e9, (double)(t2 - t1) / 1e9);
	if (!vm->have_expect) {
		printf("restore: checksum 0x%016" PRIx64 "\n", h);
		status = 0;
	} else if (h == vm->expect) {
		printf("restore: checksum 0x%016" PRIx64 " OK: the restored region is the image\n", h);
		status = 0;
	} else {
		printf("restore: checksum 0x%016" PRIx64 " MISMATCH, expected 0x%016" PRIx64 "\n",
		       h, vm->expect);
		count_differences(vm);
	}
out:
	pager_region_destroy(vm->region);
	pager_close(vm->pager);
	return status;
}

/*
 * Snapshot mode, start to end.  Returns the exit status.
 */
static int snapshot_main(struct vm *vm)
{
	struct pager_region_opts ro = { .sz = sizeof(ro), .name = "vm-guest" };
	uint64_t t0, w0, w1, writes_during = 0, holes_bytes;
	int64_t data;
	int e, status = 1, bad;

	if (open_pager(vm))
		return 1;
	e = pager_region_create(vm->pager, vm->size, &ro, &vm->region);
	if (e < 0) {
		fprintf(stderr, "vm_snapshot: pager_region_create %zu bytes: %s\n",
			vm->size, strerror(-e));
		goto out;
	}
	vm->mem = pager_region_addr(vm->region);
	vm->gen_started = calloc(vm->npages, sizeof(uint32_t));
	vm->gen_done = calloc(vm->npages, sizeof(uint32_t));
	vm->gen_before = calloc(vm->npages, sizeof(uint32_t));
	vm->gen_after = calloc(vm->npages, sizeof(uint32_t));
	vm->img_gen = calloc(vm->npages, sizeof(uint32_t));
	vm->img_kind = calloc(vm->npages, 1);
	vm->vcpu = calloc(vm->nvcpus, sizeof(*vm->vcpu));
	if (!vm->gen_started || !vm->gen_done || !vm->gen_before || !vm->gen_after ||
	    !vm->img_gen || !vm->img_kind || !vm->vcpu) {
		fprintf(stderr, "vm_snapshot: out of memory\n");
		goto out;
	}

	printf("vm_snapshot: %.0f MiB guest memory (%.0f MiB used, the rest never "
	       "written), %u vCPUs, ", mib(vm->size), mib(vm->used * vm->page_size),
	       vm->nvcpus);
	if (vm->limit)
		printf("memory limit %.0f MiB (private pagerd)\n", mib(vm->limit));
	else
		printf("no memory limit (private pagerd)\n");
	fflush(stdout);

	t0 = now_ns();
	if (start_vcpus(vm) < 0)
		goto out;
	while (__atomic_load_n(&vm->booted, __ATOMIC_ACQUIRE) < (int)vm->nvcpus && !got_signal)
		sleep_ms(10);
	if (got_signal)
		goto out;
	printf("vcpus: booted (every used page written once) in %.2f s\n",
	       (double)(now_ns() - t0) / 1e9);
	w0 = vcpu_writes(vm);
	t0 = now_ns();
	for (unsigned i = 0; i < vm->warmup_s * 10 && !got_signal; i++)
		sleep_ms(100);
	if (got_signal)
		goto out;
	w1 = vcpu_writes(vm);
	printf("vcpus: running, %.0f page writes/s; taking a live snapshot to %s\n",
	       (double)(w1 - w0) * 1e9 / (double)(now_ns() - t0), vm->path);
	fflush(stdout);

	status = take_snapshot(vm);
	stop_vcpus(vm);
	if (status)
		goto out;
	for (unsigned i = 0; i < vm->nvcpus; i++)
		writes_during += vm->vcpu[i].writes_at_done - vm->vcpu[i].writes_at_start;

	status = 1;
	if (read_image(vm))
		goto out;
	bad = check_image(vm);
	data = data_bytes(vm->path);
	holes_bytes = data >= 0 ? vm->size - (uint64_t)data : 0;

	printf("\nsummary:\n");
	printf("  snapshot: region write-protected in %.2f ms (pager_region_snapshot_start "
	       "took %.2f ms); the vCPUs went on and wrote %" PRIu64 " pages meanwhile\n",
	       (double)vm->pause_ns / 1e6, (double)vm->call_ns / 1e6, writes_during);
	printf("  image: %" PRIu64 " pages copied (%.0f MiB) in %.2f s, %.0f MiB/s; ",
	       vm->pages_total, mib(vm->pages_total * vm->page_size),
	       (double)vm->copy_ns / 1e9,
	       mib(vm->pages_total * vm->page_size) * 1e9 / (double)vm->copy_ns);
	if (data >= 0)
		printf("%.0f MiB of the file are holes\n", mib(holes_bytes));
	else
		printf("holes unknown (no SEEK_DATA here)\n");
	if (vm->pages_total != vm->used)
		printf("  note: the vCPUs had written %zu pages, pagerd copied %" PRIu64
		       " (pages it filled around faults count, zeros too)\n",
		       vm->used, vm->pages_total);
	printf("  image: %s, checksum 0x%016" PRIx64 "\n",
	       bad ? "NOT one consistent cut" : "one consistent cut", vm->checksum);
	if (bad)
		goto out;

	/* The restore gets the memory: this pager and its daemon go first. */
	pager_region_destroy(vm->region);
	vm->region = NULL;
	pager_close(vm->pager);
	vm->pager = NULL;
	status = run_restore(vm);
	printf("\nvm_snapshot: %s\n", status == 0 ? "snapshot consistent, restore checksum OK" :
	       status == EXIT_SKIP ? "restore skipped" : "restore FAILED");
out:
	stop_vcpus(vm);
	pager_region_destroy(vm->region);
	pager_close(vm->pager);
	if (vm->image_made && !vm->keep) {
		unlink(vm->path);
		unlink(vm->meta);
	} else if (vm->image_made) {
		printf("vm_snapshot: kept %s (and %s); restore it with:\n  %s --restore %s\n",
		       vm->path, vm->meta, "vm_snapshot", vm->path);
	}
	if (got_signal) {
		fprintf(stderr, "vm_snapshot: interrupted by %s\n", strsignal(got_signal));
		status = 128 + got_signal;
	}
	for (unsigned i = 0; vm->vcpu && i < vm->nvcpus; i++) {
		free(vm->vcpu[i].ring);
		free(vm->vcpu[i].window);
	}
	free(vm->vcpu);
	free(vm->gen_started);
	free(vm->gen_done);
	free(vm->gen_before);
	free(vm->gen_after);
	free(vm->img_gen);
	free(vm->img_kind);
	return status;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: vm_snapshot [-s SIZE] [-l LIMIT] [-o PATH] [-c VCPUS] [-w SECONDS] [--keep]\n"
		"       vm_snapshot --restore PATH [--expect CHECKSUM] [-l LIMIT] [--prefetch]\n"
		"  -s, --size SIZE       guest memory, K/M/G suffixes (default %s)\n"
		"  -l, --limit LIMIT     the private pagerd's memory limit, 0 for none\n"
		"                        (default %s)\n"
		"  -o, --output PATH     the image (default %s; replaced), and PATH.meta\n"
		"  -c, --vcpus N         writer threads (default %d)\n"
		"  -w, --warmup SECONDS  vCPUs run this long before the snapshot (default %d)\n"
		"  -k, --keep            keep the image instead of removing it at exit\n"
		"      --restore PATH    restore mode: the image's region, read in full\n"
		"      --expect SUM      restore mode: the checksum it must have\n"
		"      --prefetch        restore mode: let pagerd prefetch in the background\n"
		"  -h, --help            this text\n",
		DEFAULT_SIZE, DEFAULT_LIMIT, DEFAULT_PATH, DEFAULT_VCPUS, DEFAULT_WARMUP);
}

/* Fills *vm from the command line.  Returns 0, or 2 (the exit status for a
 * usage error) having said why, or -1 after --help. */
static int parse_args(struct vm *vm, int argc, char **argv)
{
	enum { OPT_RESTORE = 0x100, OPT_EXPECT, OPT_PREFETCH };
	static const struct option longopts[] = {
		{ "size", required_argument, NULL, 's' },
		{ "limit", required_argument, NULL, 'l' },
		{ "output", required_argument, NULL, 'o' },
		{ "vcpus", required_argument, NULL, 'c' },
		{ "warmup", required_argument, NULL, 'w' },
		{ "keep", no_argument, NULL, 'k' },
		{ "restore", required_argument, NULL, OPT_RESTORE },
		{ "expect", required_argument, NULL, OPT_EXPECT },
		{ "prefetch", no_argument, NULL, OPT_PREFETCH },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *size_arg = DEFAULT_SIZE, *limit_arg = DEFAULT_LIMIT;
	bool snapshot_opt = false;
	uint64_t size, v;
	char *end;
	int c;

	vm->path = DEFAULT_PATH;
	vm->nvcpus = DEFAULT_VCPUS;
	vm->warmup_s = DEFAULT_WARMUP;
	while ((c = getopt_long(argc, argv, "s:l:o:c:w:kh", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			size_arg = optarg;
			snapshot_opt = true;
			break;
		case 'l':
			limit_arg = optarg;
			break;
		case 'o':
			vm->path = optarg;
			snapshot_opt = true;
			break;
		case 'c':
			errno = 0;
			v = strtoull(optarg, &end, 10);
			if (errno || *end || optarg[0] < '0' || optarg[0] > '9' ||
			    v < 1 || v > MAX_VCPUS) {
				fprintf(stderr, "vm_snapshot: -c: expected 1..%d, got '%s'\n",
					MAX_VCPUS, optarg);
				return 2;
			}
			vm->nvcpus = (unsigned)v;
			snapshot_opt = true;
			break;
		case 'w':
			errno = 0;
			v = strtoull(optarg, &end, 10);
			if (errno || *end || optarg[0] < '0' || optarg[0] > '9' || v > MAX_WARMUP) {
				fprintf(stderr, "vm_snapshot: -w: expected 0..%d seconds, got '%s'\n",
					MAX_WARMUP, optarg);
				return 2;
			}
			vm->warmup_s = (unsigned)v;
			snapshot_opt = true;
			break;
		case 'k':
			vm->keep = true;
			snapshot_opt = true;
			break;
		case OPT_RESTORE:
			vm->restore = optarg;
			break;
		case OPT_EXPECT:
			errno = 0;
			vm->expect = strtoull(optarg, &end, 0);
			if (errno || *end || !*optarg || *optarg == '-') {
				fprintf(stderr, "vm_snapshot: --expect: expected a number such "
					"as 0x1234abcd, got '%s'\n", optarg);
				return 2;
			}
			vm->have_expect = true;
			break;
		case OPT_PREFETCH:
			vm->prefetch = true;
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
		fprintf(stderr, "vm_snapshot: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (vm->restore && snapshot_opt) {
		fprintf(stderr, "vm_snapshot: --restore takes only -l, --expect and --prefetch\n");
		return 2;
	}
	if (!vm->restore && vm->have_expect) {
		fprintf(stderr, "vm_snapshot: --expect goes with --restore\n");
		return 2;
	}
	if (parse_size(limit_arg, &vm->limit) < 0) {
		fprintf(stderr, "vm_snapshot: -l: expected a size such as 128M, or 0, got '%s'\n",
			limit_arg);
		return 2;
	}
	if (vm->restore)
		return 0;

	if (!*vm->path || strlen(vm->path) >= PATH_MAX) {
		fprintf(stderr, "vm_snapshot: -o: expected a path\n");
		return 2;
	}
	snprintf(vm->meta, sizeof(vm->meta), "%s.meta", vm->path);
	/* 16 MiB at least: a few pages a vCPU make a poor VM; 1 TiB at most
	 * keeps page numbers and the per-page arrays sane. */
	if (parse_size(size_arg, &size) < 0 || size < (16u << 20) || size > (1ULL << 40)) {
		fprintf(stderr, "vm_snapshot: -s: expected a size from 16M to 1T, got '%s'\n",
			size_arg);
		return 2;
	}
	vm->size = (size_t)size;
	return 0;
}

int main(int argc, char **argv)
{
	struct vm vm = { 0 };
	struct sigaction sa = { .sa_handler = on_signal };
	int e = parse_args(&vm, argc, argv);
	long ps;

	if (e)
		return e < 0 ? 0 : e;
	if (!pager_region_snapshot_start || !pager_region_snapshot_poll ||
	    !pager_region_restore) {
		printf("vm_snapshot: snapshot support not in this libpager\n");
		return EXIT_SKIP;
	}
	/* The handlers only set a flag: the loops look at it and clean up. */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);

	ps = sysconf(_SC_PAGESIZE);
	vm.page_size = ps > 0 ? (size_t)ps : 4096;
	if (vm.restore)
		return restore_main(&vm);

	vm.size = (vm.size + vm.page_size - 1) / vm.page_size * vm.page_size;
	vm.npages = vm.size / vm.page_size;
	vm.words = vm.page_size / sizeof(uint64_t);
	vm.used = vm.npages * USED_PERCENT / 100;
	return snapshot_main(&vm);
}
