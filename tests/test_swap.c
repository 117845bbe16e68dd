/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the swap store (daemon/swap.c) and CRC32C (daemon/crc32c.c):
 * the slot allocator against a reference model, CRC vectors for both
 * implementations, and real io_uring I/O on a real file in a directory that
 * supports O_DIRECT, driven by a real libevent loop until every callback ran
 * (no sleeps): round trips with more requests than the ring holds, injected
 * I/O errors and on-disk corruption, transfers cut short by the file's end, and closing with I/O in flight.
 * The engine's own continuation of short transfers and its retries are
 * tested in test_io.c.
 *
 * The modules are compiled in (they are daemon code, not in the common
 * objects unit tests link), which also lets a few tests look inside.
 * Exit code 77: skipped (no O_DIRECT-capable directory, or io_uring
 * unavailable), with the reason on the last line.
 */
#include <setjmp.h> /* cmocka.h needs these four first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "../daemon/crc32c.c"
#include "../daemon/io.c"
#include "../daemon/log.c"
#include "../daemon/pool.c"
#include "../daemon/store_file.c"
#include "../daemon/store_rbd.c"
#include "../daemon/swap.c"

#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif

#define PS 4096u
#define WATCHDOG_S 60

static char test_dir[PATH_MAX];

/* ---- fixture ------------------------------------------------------------ */

struct ctx {
	char path[PATH_MAX + 64];
	struct event_base *base;
	struct io_engine *io;
	struct swap *s;
	bool timed_out;
};

static unsigned path_seq;

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof(*c));

	if (!c)
		return -1;
	snprintf(c->path, sizeof(c->path), "%s/test_swap.%d.%u", test_dir,
		 (int)getpid(), path_seq++);
	unlink(c->path);
	c->base = event_base_new();
	if (!c->base || io_engine_open(&c->io, c->base) < 0)
		return -1;
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;

	swap_close(c->s);
	io_engine_close(c->io);
	event_base_free(c->base);
	unlink(c->path);
	free(c);
	return 0;
}

static struct swap *open_slots(struct ctx *c, uint64_t nslots)
{
	int r = swap_open(&c->s, c->io, c->path, nslots * PS, PS);

	assert_int_equal(r, 0);
	assert_non_null(c->s);
	return c->s;
}

static void *page_buf(size_t npages)
{
	void *p = mmap(NULL, npages * PS, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	assert_true(p != MAP_FAILED);
	return p;
}

/* Page content that differs for every (page, round) and covers all bytes. */
static void fill_page(unsigned char *p, uint64_t page, unsigned round)
{
	uint64_t x = page * 0x9E3779B97F4A7C15ull + round * 0xD1B54A32D192ED03ull + 1;

	for (size_t i = 0; i < PS; i += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(p + i, &x, 8);
	}
}

/* ---- waiting for callbacks ---------------------------------------------- */

struct waiter {
	unsigned pending;
	unsigned calls;
};

struct io {
	struct waiter *w;
	int res;
	bool called;
};

static void on_done(void *arg, int res)
{
	struct io *io = arg;

	assert_false(io->called); /* exactly one callback per request */
	io->called = true;
	io->res = res;
	io->w->pending--;
	io->w->calls++;
}

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
	struct ctx *c = arg;

	(void)fd;
	(void)what;
	c->timed_out = true;
	event_base_loopbreak(c->base);
}

/* Runs the loop until every request of w has called back. */
static void run_until_done(struct ctx *c, struct waiter *w)
{
	struct timeval tv = { WATCHDOG_S, 0 };
	struct event *wd = evtimer_new(c->base, on_watchdog, c);

	assert_non_null(wd);
	evtimer_add(wd, &tv);
	while (w->pending && !c->timed_out)
		assert_true(event_base_loop(c->base, EVLOOP_ONCE) >= 0);
	event_free(wd);
	assert_false(c->timed_out);
}

static int write_sync(struct ctx *c, uint64_t slot, const void *buf, uint32_t n,
		      uint64_t region, uint64_t page0)
{
	struct waiter w = { 0 };
	struct io io = { .w = &w };
	struct swap_tag *tags = calloc(n, sizeof(*tags));
	int r;

	assert_non_null(tags);
	for (uint32_t i = 0; i < n; i++)
		tags[i] = (struct swap_tag){ region, page0 + i, 1 };
	r = swap_write(c->s, slot, buf, n, tags, on_done, &io);
	free(tags);
	assert_int_equal(r, 0);
	w.pending = 1;
	run_until_done(c, &w);
	return io.res;
}

static int read_sync(struct ctx *c, uint64_t slot, void *buf, uint32_t n)
{
	struct waiter w = { 0 };
	struct io io = { .w = &w };

	assert_int_equal(swap_read(c->s, slot, buf, n, on_done, &io), 0);
	w.pending = 1;
	run_until_done(c, &w);
	return io.res;
}

/* ---- CRC32C --------------------------------------------------------------- */

struct crc_vector {
	const char *name;
	unsigned char data[32];
	size_t len;
	uint32_t crc;
};

/* "123456789" is the standard check value; the 32-byte ones are RFC 3720
 * (iSCSI) appendix B.4. */
static const struct crc_vector *crc_vectors(size_t *n)
{
	static struct crc_vector v[6];

	memset(v, 0, sizeof(v));
	v[0] = (struct crc_vector){ "check", "123456789", 9, 0xE3069283 };
	v[1] = (struct crc_vector){ "zeros", { 0 }, 32, 0x8A9136AA };
	v[2].name = "ones";
	memset(v[2].data, 0xff, 32);
	v[2].len = 32;
	v[2].crc = 0x62A8AB43;
	v[3].name = "ascending";
	v[4].name = "descending";
	for (int i = 0; i < 32; i++) {
		v[3].data[i] = (unsigned char)i;
		v[4].data[i] = (unsigned char)(31 - i);
	}
	v[3].len = v[4].len = 32;
	v[3].crc = 0x46DD794E;
	v[4].crc = 0x113FDB5C;
	v[5] = (struct crc_vector){ "empty", { 0 }, 0, 0 };
	*n = 6;
	return v;
}

static void check_vectors(uint32_t (*fn)(uint32_t, const void *, size_t))
{
	size_t n;
	const struct crc_vector *v = crc_vectors(&n);

	for (size_t i = 0; i < n; i++) {
		uint32_t got = fn(0, v[i].data, v[i].len);

		if (got != v[i].crc)
			fail_msg("vector %s: got %08x, want %08x", v[i].name, got, v[i].crc);
		/* Incremental: split at every point. */
		for (size_t k = 0; k <= v[i].len; k++)
			assert_int_equal(fn(fn(0, v[i].data, k), v[i].data + k,
					    v[i].len - k), v[i].crc);
	}
}

static void test_crc_sw_vectors(void **state)
{
	(void)state;
	check_vectors(crc32c_sw);
	check_vectors(crc32c);
}

static void test_crc_hw_vectors(void **state)
{
	(void)state;
	if (!crc32c_hw_available())
		skip();
	check_vectors(crc32c_hw);
}

/* Both implementations agree on every length and misalignment. */
static void test_crc_hw_matches_sw(void **state)
{
	unsigned char buf[4096 + 64];

	(void)state;
	if (!crc32c_hw_available())
		skip();
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (unsigned char)(i * 131 + 7);
	for (size_t off = 0; off < 16; off++)
		for (size_t len = 0; len < 300; len++)
			assert_int_equal(crc32c_hw(0x12345678, buf + off, len),
					 crc32c_sw(0x12345678, buf + off, len));
	assert_int_equal(crc32c_hw(0, buf + 3, 4096), crc32c_sw(0, buf + 3, 4096));
}

/* ---- allocator ------------------------------------------------------------ */

static void alloc_expect(struct swap *s, uint32_t want, uint64_t first, uint32_t got)
{
	uint64_t f = ~0ull;
	uint32_t g = 0;

	assert_int_equal(swap_alloc(s, want, &f, &g), 0);
	assert_int_equal(f, first);
	assert_int_equal(g, got);
}

static void test_alloc_next_fit(void **state)
{
	struct ctx *c = *state;
	struct swap *s = open_slots(c, 64);
	struct swap_stats st;
	uint64_t f = 77;
	uint32_t g = 77;

	assert_int_equal(swap_alloc(s, 0, &f, &g), -EINVAL);
	alloc_expect(s, 8, 0, 8);
	alloc_expect(s, 8, 8, 8);
	swap_free(s, 0, 8);
	/* Next fit: the freed run is behind the cursor and waits its turn. */
	alloc_expect(s, 4, 16, 4);
	/* Best effort: the run ends at the last slot. */
	alloc_expect(s, 100, 20, 44);
	/* The cursor wrapped: now the freed run. */
	alloc_expect(s, 8, 0, 8);
	swap_get_stats(s, &st);
	assert_int_equal(st.total, 64);
	assert_int_equal(st.used, 64);

	assert_int_equal(swap_alloc(s, 1, &f, &g), -ENOSPC);
	assert_int_equal(swap_alloc(s, 1, &f, &g), -ENOSPC);
	assert_int_equal(f, 77); /* untouched on failure */
	assert_int_equal(g, 77);
	swap_get_stats(s, &st);
	assert_int_equal(st.full, 2);

	swap_free(s, 30, 1);
	alloc_expect(s, 5, 30, 1);
	/* A double free is logged and changes nothing. */
	swap_free(s, 40, 2);
	swap_free(s, 40, 2);
	swap_free(s, 60, 10); /* out of range: ignored */
	swap_get_stats(s, &st);
	assert_int_equal(st.used, 62);
}

/* With no run as long as asked, the longest of those seen is taken. */
static void test_alloc_best_effort(void **state)
{
	struct ctx *c = *state;
	struct swap *s = open_slots(c, 64);

	alloc_expect(s, 64, 0, 64);
	swap_free(s, 10, 1);
	swap_free(s, 12, 1);
	swap_free(s, 20, 5);
	swap_free(s, 40, 3);
	alloc_expect(s, 8, 20, 5);
	alloc_expect(s, 8, 40, 3);
	alloc_expect(s, 8, 10, 1);
	alloc_expect(s, 2, 12, 1);
}

/* Many random rounds of allocations and (partial) frees against a model. */
static void test_alloc_random_model(void **state)
{
	enum { N = 1000, ROUNDS = 20000 }; /* N not a multiple of 64 */
	struct ctx *c = *state;
	struct swap *s = open_slots(c, N);
	struct run { uint64_t first; uint32_t n; } *runs = calloc(N, sizeof(*runs));
	bool *model = calloc(N, sizeof(bool));
	size_t nruns = 0;
	uint64_t used = 0;
	unsigned seed = 12345;

	assert_non_null(runs);
	assert_non_null(model);
	for (int round = 0; round < ROUNDS; round++) {
		if (nruns && (rand_r(&seed) % 100 < 45 || used == N)) {
			size_t i = (size_t)rand_r(&seed) % nruns;
			uint32_t k = 1 + (uint32_t)rand_r(&seed) % runs[i].n;

			swap_free(s, runs[i].first, k);
			for (uint32_t j = 0; j < k; j++)
				model[runs[i].first + j] = false;
			used -= k;
			runs[i].first += k;
			runs[i].n -= k;
			if (!runs[i].n)
				runs[i] = runs[--nruns];
		} else {
			uint32_t want = 1 + (uint32_t)rand_r(&seed) % 16, got = 0;
			uint64_t first = 0;
			int r = swap_alloc(s, want, &first, &got);

			if (used == N) {
				assert_int_equal(r, -ENOSPC);
				continue;
			}
			assert_int_equal(r, 0);
			assert_true(got >= 1 && got <= want);
			assert_true(first + got <= N);
			for (uint32_t j = 0; j < got; j++) {
				if (model[first + j])
					fail_msg("round %d: slot %llu allocated twice", round,
						 (unsigned long long)(first + j));
				model[first + j] = true;
			}
			used += got;
			runs[nruns++] = (struct run){ first, got };
		}
		assert_int_equal(s->st.used, used);
	}
	for (uint64_t i = 0; i < N; i++)
		assert_int_equal(bit_test(s->used_map, i), model[i]);
	free(runs);
	free(model);
}

/* ---- opening -------------------------------------------------------------- */

static void test_open_refuses(void **state)
{
	struct ctx *c = *state;
	struct swap *sentinel = (struct swap *)&c->path, *s = sentinel;
	char path[PATH_MAX + 64];
	struct stat st;
	int fd;

	/* Not a page multiple, too small, bad page sizes. */
	assert_int_equal(swap_open(&s, c->io, c->path, 64 * PS + 1, PS), -EINVAL);
	assert_int_equal(swap_open(&s, c->io, c->path, (SWAP_MIN_SLOTS - 1) * PS, PS),
			 -EINVAL);
	assert_int_equal(swap_open(&s, c->io, c->path, 64 * PS, 3000), -EINVAL);
	assert_int_equal(swap_open(&s, c->io, c->path, 64 * PS, 256), -EINVAL);
	/* No size and no file: refused, and no file left behind. */
	assert_int_equal(swap_open(&s, c->io, c->path, 0, PS), -EINVAL);
	assert_int_equal(stat(c->path, &st), -1);
	assert_int_equal(errno, ENOENT);
	/* A directory that does not exist. */
	snprintf(path, sizeof(path), "%s/no-such-dir/swap", test_dir);
	assert_int_equal(swap_open(&s, c->io, path, 64 * PS, PS), -ENOENT);
	/* A directory. */
	assert_int_equal(swap_open(&s, c->io, test_dir, 64 * PS, PS), -EISDIR);
	/* An existing file of an odd size, with size 0 ("use the file's"). */
	fd = open(c->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 20 * PS + 100), 0);
	assert_int_equal(swap_open(&s, c->io, c->path, 0, PS), -EINVAL);
	assert_ptr_equal(s, sentinel);
	/* ...but its size is used when it is a page multiple. */
	assert_int_equal(ftruncate(fd, 32 * PS), 0);
	close(fd);
	assert_int_equal(swap_open(&c->s, c->io, c->path, 0, PS), 0);
	assert_int_equal(c->s->nslots, 32);
	/* A second swap on the same file is refused. */
	assert_int_equal(swap_open(&s, c->io, c->path, 0, PS), -EBUSY);
	assert_ptr_equal(s, sentinel);
}

/* A missing file is created and allocated to the size asked for. */
static void test_open_creates(void **state)
{
	struct ctx *c = *state;
	struct stat st;

	open_slots(c, 100);
	assert_int_equal(stat(c->path, &st), 0);
	assert_int_equal(st.st_size, 100 * PS);
	assert_true((uint64_t)st.st_blocks * 512 >= 100 * PS); /* not sparse */
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(swap_page_size(c->s), PS);
}

/* ---- I/O ------------------------------------------------------------------ */

/* Calls that fail at once, and never call back. */
static void test_io_refuses(void **state)
{
	struct ctx *c = *state;
	struct swap *s = open_slots(c, 64);
	unsigned char *buf = page_buf(4);
	struct swap_tag tags[4] = { { 1, 0, 1 }, { 1, 1, 1 }, { 1, 2, 1 }, { 1, 3, 1 } };
	struct waiter w = { 0 };
	struct io io = { .w = &w };
	struct swap_tag tag;
	uint64_t f;
	uint32_t g, crc;

	alloc_expect(s, 4, 0, 4);
	assert_int_equal(swap_write(s, 4, buf, 1, tags, on_done, &io), -EINVAL);
	assert_int_equal(swap_write(s, 2, buf, 3, tags, on_done, &io), -EINVAL);
	assert_int_equal(swap_write(s, 0, buf + 1, 1, tags, on_done, &io), -EINVAL);
	assert_int_equal(swap_write(s, 0, buf, 0, tags, on_done, &io), -EINVAL);
	assert_int_equal(swap_write(s, 0, buf, 1, NULL, on_done, &io), -EINVAL);
	assert_int_equal(swap_write(s, 0, buf, 1, tags, NULL, &io), -EINVAL);
	assert_int_equal(swap_write(s, 64, buf, 1, tags, on_done, &io), -EINVAL);
	assert_int_equal(swap_write(s, UINT64_MAX, buf, 2, tags, on_done, &io), -EINVAL);
	assert_int_equal(swap_read(s, 0, buf, 1, on_done, &io), -ENODATA);
	assert_int_equal(swap_slot_tag(s, 0, &tag, &crc), -ENODATA);
	assert_int_equal(swap_slot_tag(s, 10, &tag, &crc), -ENOENT);
	assert_int_equal(swap_slot_tag(s, 64, &tag, &crc), -EINVAL);
	assert_int_equal(swap_verify(s, 0, buf), -ENODATA);
	assert_int_equal(w.calls, 0);

	/* Bigger than one request may be. */
	swap_free(s, 0, 4);
	assert_int_equal(swap_alloc(s, 64, &f, &g), 0);
	assert_int_equal(g, 64);
	munmap(buf, 4 * PS);
	{
		uint32_t n = SWAP_IO_MAX_BYTES / PS + 1;
		struct swap *big;
		char path[PATH_MAX + 128];
		unsigned char *b;

		snprintf(path, sizeof(path), "%s.big", c->path);
		assert_int_equal(swap_open(&big, c->io, path, (uint64_t)(n + 1) * PS, PS), 0);
		assert_int_equal(swap_alloc(big, n, &f, &g), 0);
		assert_int_equal(g, n);
		b = page_buf(n);
		assert_int_equal(swap_read(big, 0, b, n, on_done, &io), -EINVAL);
		munmap(b, (size_t)n * PS);
		swap_close(big);
		unlink(path);
	}
	assert_int_equal(w.calls, 0);
}

/*
 * Many pages in more requests than the ring holds, written and read back
 * with different splits; tags and CRCs kept per slot.
 */
static void test_roundtrip(void **state)
{
	enum { NP = 4096 };
	struct ctx *c = *state;
	struct swap *s = open_slots(c, 2 * NP);
	unsigned char *src = page_buf(NP), *dst = page_buf(NP);
	struct io *ios = calloc(NP, sizeof(*ios));
	struct swap_tag *tags = calloc(NP, sizeof(*tags));
	struct waiter w = { 0 };
	struct swap_stats st;
	unsigned seed = 99, nreq = 0;
	uint64_t page = 0;

	assert_non_null(ios);
	assert_non_null(tags);
	for (uint64_t i = 0; i < NP; i++) {
		fill_page(src + i * PS, i, 1);
		tags[i] = (struct swap_tag){ 42, i, (uint32_t)i * 3 };
	}
	while (page < NP) {
		uint32_t want = 1 + (uint32_t)rand_r(&seed) % 16, got;
		uint64_t first;

		if (want > NP - page)
			want = (uint32_t)(NP - page);
		assert_int_equal(swap_alloc(s, want, &first, &got), 0);
		/* Fresh swap, next fit: runs follow each other. */
		assert_int_equal(first, page);
		assert_int_equal(got, want);
		ios[nreq].w = &w;
		assert_int_equal(swap_write(s, first, src + page * PS, got, tags + page,
					    on_done, &ios[nreq]), 0);
		nreq++;
		page += got;
	}
	assert_true(nreq > SWAP_QUEUE_DEPTH);
	swap_get_stats(s, &st);
	assert_int_equal(st.in_flight, SWAP_QUEUE_DEPTH);
	assert_int_equal(st.queued, nreq - SWAP_QUEUE_DEPTH);
	w.pending = nreq;
	run_until_done(c, &w);
	for (unsigned i = 0; i < nreq; i++)
		assert_int_equal(ios[i].res, 0);
	for (uint64_t i = 0; i < NP; i++) {
		struct swap_tag t;
		uint32_t crc;

		assert_int_equal(swap_slot_tag(s, i, &t, &crc), 0);
		assert_int_equal(t.region, 42);
		assert_int_equal(t.page, i);
		assert_int_equal(t.gen, (uint32_t)i * 3);
		assert_int_equal(crc, crc32c(0, src + i * PS, PS));
	}

	/* Read back: single pages and runs of up to 32 crossing the write
	 * boundaries. */
	memset(&w, 0, sizeof(w));
	memset(ios, 0, NP * sizeof(*ios));
	nreq = 0;
	for (page = 0; page < NP;) {
		uint32_t n = rand_r(&seed) % 2 ? 1 : 1 + (uint32_t)rand_r(&seed) % 32;

		if (n > NP - page)
			n = (uint32_t)(NP - page);
		ios[nreq].w = &w;
		assert_int_equal(swap_read(s, page, dst + page * PS, n, on_done,
					   &ios[nreq]), 0);
		nreq++;
		page += n;
	}
	w.pending = nreq;
	run_until_done(c, &w);
	for (unsigned i = 0; i < nreq; i++)
		assert_int_equal(ios[i].res, 0);
	assert_memory_equal(src, dst, (size_t)NP * PS);
	swap_get_stats(s, &st);
	assert_int_equal(st.pages_written, NP);
	assert_int_equal(st.pages_read, NP);
	assert_int_equal(st.read_errors + st.write_errors + st.crc_errors, 0);
	assert_int_equal(st.in_flight + st.queued, 0);

	free(ios);
	free(tags);
	munmap(src, (size_t)NP * PS);
	munmap(dst, (size_t)NP * PS);
}

/* SQEs are prepared at once but submitted in one go by the loop. */
static void test_batched_submission(void **state)
{
	struct ctx *c = *state;
	struct swap *s = open_slots(c, 64);
	unsigned char *buf = page_buf(10);
	struct swap_tag tag = { 1, 2, 3 };
	struct waiter w = { 0 };
	struct io ios[10];
	uint64_t f;
	uint32_t g;

	memset(ios, 0, sizeof(ios));
	assert_int_equal(swap_alloc(s, 10, &f, &g), 0);
	for (int i = 0; i < 10; i++) {
		fill_page(buf + i * PS, (uint64_t)i, 2);
		ios[i].w = &w;
		assert_int_equal(swap_write(s, f + (uint64_t)i, buf + i * PS, 1, &tag,
					    on_done, &ios[i]), 0);
	}
	assert_int_equal(io_uring_sq_ready(&c->io->ring), 10); /* none submitted */
	assert_true(c->io->submit_armed);
	w.pending = 10;
	run_until_done(c, &w);
	assert_int_equal(io_uring_sq_ready(&c->io->ring), 0);
	for (int i = 0; i < 10; i++)
		assert_int_equal(ios[i].res, 0);
	munmap(buf, 10 * PS);
}

static void test_inject_eio(void **state)
{
	struct ctx *c = *state;
	struct swap *s = open_slots(c, 64);
	unsigned char *src = page_buf(8), *dst = page_buf(8);
	struct swap_stats st;
	uint64_t f;
	uint32_t g;

	for (int i = 0; i < 8; i++)
		fill_page(src + i * PS, (uint64_t)i, 3);
	assert_int_equal(swap_alloc(s, 8, &f, &g), 0);
	assert_int_equal(write_sync(c, 0, src, 8, 1, 0), 0);

	assert_int_equal(swap_inject(s, 5, SWAP_FAULT_EIO), 0);
	assert_int_equal(read_sync(c, 0, dst, 4), 0);      /* not touching 5 */
	assert_int_equal(read_sync(c, 4, dst + 4 * PS, 4), -EIO);
	assert_int_equal(read_sync(c, 6, dst + 6 * PS, 2), 0);
	/* One shot: the next read of slot 5 works. */
	assert_int_equal(read_sync(c, 5, dst + 5 * PS, 1), 0);
	assert_int_equal(read_sync(c, 4, dst + 4 * PS, 4), 0);
	assert_memory_equal(src, dst, 8 * PS);
	/* SWAP_FAULT_NONE withdraws an injection. */
	assert_int_equal(swap_inject(s, 2, SWAP_FAULT_EIO), 0);
	assert_int_equal(swap_inject(s, 2, SWAP_FAULT_NONE), 0);
	assert_int_equal(read_sync(c, 2, dst, 1), 0);
	assert_int_equal(swap_inject(s, 64, SWAP_FAULT_EIO), -EINVAL);
	swap_get_stats(s, &st);
	assert_int_equal(st.read_errors, 1);
	munmap(src, 8 * PS);
	munmap(dst, 8 * PS);
}

/*
 * A write that fails (injected: -EIO; or stopping half-way, the rest
 * -ENOSPC) leaves its slots without data, and freeing them retires them:
 * the allocator never hands them out again, and once only retired slots
 * are left the swap is full.  Another region's writes are not touched.
 */
static void test_failed_write_retires(void **state)
{
	struct ctx *c = *state;
	struct swap *s = open_slots(c, 16);
	unsigned char *src = page_buf(16), *dst = page_buf(1);
	struct swap_stats st;
	uint64_t f;
	uint32_t g;

	for (int i = 0; i < 16; i++)
		fill_page(src + i * PS, (uint64_t)i, 7);
	assert_int_equal(swap_inject_writes(s, 9, SWAP_FAULT_WRITE_EIO), 0);
	assert_int_equal(swap_alloc(s, 4, &f, &g), 0);
	assert_true(f == 0 && g == 4);
	assert_int_equal(write_sync(c, 0, src, 4, 9, 0), -EIO);
	assert_int_equal(swap_read(s, 0, dst, 1, on_done, NULL), -ENODATA);
	assert_int_equal(swap_inject_writes(s, 9, SWAP_FAULT_WRITE_SHORT), 0);
	assert_int_equal(swap_alloc(s, 4, &f, &g), 0);
	assert_true(f == 4 && g == 4);
	assert_int_equal(write_sync(c, 4, src, 4, 9, 0), -ENOSPC);
	/* Region 8 writes on. */
	assert_int_equal(swap_alloc(s, 4, &f, &g), 0);
	assert_int_equal(write_sync(c, f, src, 4, 8, 0), 0);
	swap_free(s, 0, 8);
	swap_get_stats(s, &st);
	assert_int_equal(st.bad, 8);
	assert_int_equal(st.used, 4);
	assert_int_equal(st.write_errors, 2);
	/* Freeing a retired slot again is the caller's bug: refused. */
	swap_free(s, 0, 1);
	swap_get_stats(s, &st);
	assert_int_equal(st.bad, 8);
	/* Only the 4 good free slots are ever handed out, then "full". */
	assert_int_equal(swap_inject_writes(s, 0, SWAP_FAULT_NONE), 0);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(swap_alloc(s, 16, &f, &g), 0);
		assert_true(f >= 8 && f + g <= 16);
		assert_int_equal(write_sync(c, f, src, g, 9, 0), 0);
		i += (int)g - 1;
	}
	assert_int_equal(swap_alloc(s, 1, &f, &g), -ENOSPC);
	swap_get_stats(s, &st);
	assert_int_equal(st.used + st.bad, 16);
	munmap(src, 16 * PS);
	munmap(dst, PS);
}

/* A sparse file is allocated whole at open, not only grown: its holes
 * would otherwise fail write-backs on a full disk. */
static void test_sparse_file_allocated(void **state)
{
	struct ctx *c = *state;
	struct stat sb;
	int fd = open(c->path, O_RDWR | O_CREAT | O_EXCL, 0600);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 64 * PS), 0);
	close(fd);
	assert_int_equal(swap_open(&c->s, c->io, c->path, 0, PS), 0);
	assert_int_equal(stat(c->path, &sb), 0);
	assert_int_equal(sb.st_size, 64 * PS);
	assert_true((uint64_t)sb.st_blocks * 512 >= 64 * PS);
}

/* A byte flipped on disk is caught by the CRC, on that page only. */
static void test_inject_corrupt(void **state)
{
	struct ctx *c = *state;
	struct swap *s = open_slots(c, 64);
	unsigned char *src = page_buf(4), *dst = page_buf(4), disk[PS];
	struct swap_stats st;
	uint64_t f;
	uint32_t g;
	int fd;

	for (int i = 0; i < 4; i++)
		fill_page(src + i * PS, (uint64_t)i, 4);
	assert_int_equal(swap_alloc(s, 4, &f, &g), 0);
	assert_int_equal(write_sync(c, 0, src, 4, 9, 100), 0);
	assert_int_equal(swap_inject(s, 2, SWAP_FAULT_CORRUPT), 0);

	/* The device really holds different bytes now. */
	fd = open(c->path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, disk, PS, 2 * PS), PS);
	close(fd);
	assert_true(memcmp(disk, src + 2 * PS, PS) != 0);

	assert_int_equal(read_sync(c, 0, dst, 4), -EBADMSG);
	assert_int_equal(swap_verify(s, 0, dst), 0);
	assert_int_equal(swap_verify(s, 1, dst + PS), 0);
	assert_int_equal(swap_verify(s, 2, dst + 2 * PS), -EBADMSG);
	assert_int_equal(swap_verify(s, 3, dst + 3 * PS), 0);
	assert_memory_equal(dst + 3 * PS, src + 3 * PS, PS);
	assert_int_equal(read_sync(c, 1, dst, 1), 0);
	assert_int_equal(read_sync(c, 2, dst, 1), -EBADMSG);
	swap_get_stats(s, &st);
	assert_int_equal(st.crc_errors, 2);
	/* Rewriting the slot heals it. */
	assert_int_equal(write_sync(c, 2, src + 2 * PS, 1, 9, 102), 0);
	assert_int_equal(read_sync(c, 2, dst, 1), 0);
	assert_memory_equal(dst, src + 2 * PS, PS);
	munmap(src, 4 * PS);
	munmap(dst, 4 * PS);
}

/* A file that shrank under the swap: reads end short and fail with -EIO,
 * whether the end falls on an O_DIRECT block boundary or not. */
static void test_short_read_eof(void **state)
{
	enum { N = 32 };
	struct ctx *c = *state;
	struct swap *s = open_slots(c, N);
	unsigned char *src = page_buf(3), *dst = page_buf(3);
	uint64_t f;
	uint32_t g;

	for (int i = 0; i < 3; i++)
		fill_page(src + i * PS, (uint64_t)i, 5);
	assert_int_equal(swap_alloc(s, N, &f, &g), 0);
	assert_int_equal(write_sync(c, N - 3, src, 3, 1, 0), 0);
	/* Ends after two pages: one short read, then end of file. */
	assert_int_equal(truncate(c->path, (N - 1) * PS), 0);
	assert_int_equal(read_sync(c, N - 3, dst, 3), -EIO);
	/* Ends 100 bytes short of a page: not a block boundary. */
	assert_int_equal(truncate(c->path, (N - 2) * PS - 100), 0);
	assert_int_equal(read_sync(c, N - 3, dst, 3), -EIO);
	/* Nothing left. */
	assert_int_equal(truncate(c->path, (N - 3) * PS), 0);
	assert_int_equal(read_sync(c, N - 3, dst, 3), -EIO);
	munmap(src, 3 * PS);
	munmap(dst, 3 * PS);
}

/* A slot rewritten while a read of it is in flight: -ESTALE, never the
 * data of either write. */
static void test_stale_read(void **state)
{
	struct ctx *c = *state;
	struct swap *s = open_slots(c, 64);
	unsigned char *buf = page_buf(2);
	struct swap_tag tag = { 1, 0, 2 };
	struct waiter w = { 0 };
	struct io io = { .w = &w }, wio = { .w = &w };
	uint64_t f;
	uint32_t g;

	fill_page(buf, 0, 7);
	assert_int_equal(swap_alloc(s, 1, &f, &g), 0);
	assert_int_equal(write_sync(c, f, buf, 1, 1, 0), 0);
	assert_int_equal(swap_read(s, f, buf, 1, on_done, &io), 0);
	fill_page(buf + PS, 0, 8);
	assert_int_equal(swap_write(s, f, buf + PS, 1, &tag, on_done, &wio), 0);
	w.pending = 2;
	run_until_done(c, &w);
	assert_int_equal(io.res, -ESTALE);
	assert_int_equal(wio.res, 0);
	munmap(buf, 2 * PS);
}

/*
 * A slot freed while a read of it is in flight (a page discarded during a
 * swap-in of several): the read still gets every page, its neighbours'
 * included, and the slot is handed out again only once the read has
 * ended.  Given out at once, it failed the whole read with -ESTALE and the
 * swap-in poisoned the pages beside the discarded one (torture seed 7).
 */
static void test_free_during_read(void **state)
{
	struct ctx *c = *state;
	struct swap *s = open_slots(c, 16);
	unsigned char *src = page_buf(3), *dst = page_buf(3);
	struct waiter w = { 0 };
	struct io io = { .w = &w }, io2 = { .w = &w };
	struct swap_stats st;
	int during;
	struct swap_tag t;
	uint64_t f;
	uint32_t g;

	for (unsigned i = 0; i < 3; i++)
		fill_page(src + i * PS, i, 9);
	alloc_expect(s, 16, 0, 16); /* every slot: a free one is this one */
	assert_int_equal(write_sync(c, 2, src, 3, 4, 0), 0);

	/* Freed under the read: gone for the callers at once... */
	assert_int_equal(swap_read(s, 2, dst, 3, on_done, &io), 0);
	swap_free(s, 3, 1);
	assert_int_equal(swap_read(s, 3, src, 1, on_done, &io), -EINVAL);
	assert_int_equal(swap_slot_tag(s, 3, &t, NULL), -ENOENT);
	/* ... but not handed out while the read may still need it. */
	during = swap_alloc(s, 1, &f, &g);
	w.pending = 1;
	run_until_done(c, &w);
	assert_int_equal(io.res, 0);
	assert_memory_equal(dst, src, 3 * PS);
	assert_int_equal(during, -ENOSPC);
	/* The read ended: the slot is free now, and only once. */
	swap_get_stats(s, &st);
	assert_int_equal(st.used, 15);
	alloc_expect(s, 1, 3, 1);
	assert_int_equal(swap_alloc(s, 1, &f, &g), -ENOSPC);

	/* Two reads over it: free when the last one ends. */
	assert_int_equal(write_sync(c, 3, src + PS, 1, 4, 1), 0);
	io = (struct io){ .w = &w };
	assert_int_equal(swap_read(s, 2, dst, 2, on_done, &io), 0);
	assert_int_equal(swap_read(s, 3, dst + 2 * PS, 1, on_done, &io2), 0);
	swap_free(s, 3, 1);
	w.pending = 2;
	run_until_done(c, &w);
	assert_int_equal(io.res, 0);
	assert_int_equal(io2.res, 0);
	assert_memory_equal(dst + PS, src + PS, PS);
	assert_memory_equal(dst + 2 * PS, src + PS, PS);
	alloc_expect(s, 1, 3, 1);
	munmap(src, 3 * PS);
	munmap(dst, 3 * PS);
}

/* A slot freed while a write to it is in flight does not look written
 * when the write completes, even if it was allocated again meanwhile. */
static void test_free_during_write(void **state)
{
	struct ctx *c = *state;
	struct swap *s = open_slots(c, 64);
	unsigned char *buf = page_buf(2);
	struct swap_tag tags[2] = { { 5, 0, 1 }, { 5, 1, 1 } }, t;
	struct waiter w = { 0 };
	struct io io = { .w = &w };

	fill_page(buf, 0, 8);
	fill_page(buf + PS, 1, 8);
	alloc_expect(s, 64, 0, 64);
	assert_int_equal(swap_write(s, 10, buf, 2, tags, on_done, &io), 0);
	swap_free(s, 11, 1);
	alloc_expect(s, 1, 11, 1);
	w.pending = 1;
	run_until_done(c, &w);
	assert_int_equal(io.res, 0);
	assert_int_equal(swap_slot_tag(s, 10, &t, NULL), 0);
	assert_int_equal(t.page, 0);
	assert_int_equal(swap_slot_tag(s, 11, &t, NULL), -ENODATA);
	assert_int_equal(swap_read(s, 11, buf, 1, on_done, &io), -ENODATA);
	munmap(buf, 2 * PS);
}

/* Closing with requests in the ring and in the software queue: each calls
 * back once, the first with their real result, the others -ECANCELED. */
static void test_close_in_flight(void **state)
{
	enum { N = 600 };
	struct ctx *c = *state;
	struct swap *s = open_slots(c, N);
	unsigned char *buf = page_buf(N);
	struct io *ios = calloc(N, sizeof(*ios));
	struct swap_tag tag = { 1, 1, 1 };
	struct waiter w = { 0 };
	unsigned ok = 0, cancelled = 0;
	uint64_t f;
	uint32_t g;

	assert_non_null(ios);
	assert_int_equal(swap_alloc(s, N, &f, &g), 0);
	for (unsigned i = 0; i < N; i++) {
		ios[i].w = &w;
		assert_int_equal(swap_write(s, i, buf + (size_t)i * PS, 1, &tag, on_done,
					    &ios[i]), 0);
	}
	w.pending = N;
	swap_close(s);
	c->s = NULL;
	assert_int_equal(w.calls, N);
	for (unsigned i = 0; i < N; i++) {
		assert_true(ios[i].called);
		if (ios[i].res == 0)
			ok++;
		else if (ios[i].res == -ECANCELED)
			cancelled++;
	}
	assert_int_equal(ok, SWAP_QUEUE_DEPTH);
	assert_int_equal(cancelled, N - SWAP_QUEUE_DEPTH);
	free(ios);
	munmap(buf, (size_t)N * PS);
}

struct close_cb {
	struct ctx *c;
	struct waiter *w;
	unsigned calls;
	int late_write;
};

static void on_done_close(void *arg, int res)
{
	struct close_cb *cc = arg;
	struct swap_tag tag = { 0 };
	static unsigned char page[PS] __attribute__((aligned(PS)));

	assert_int_equal(res, 0);
	if (cc->calls++ == 0) {
		swap_close(cc->c->s);
		swap_close(cc->c->s); /* twice: still once */
	} else {
		/* Closed but not yet freed: new I/O is refused. */
		cc->late_write = swap_write(cc->c->s, 0, page, 1, &tag, on_done, NULL);
	}
	cc->w->pending--;
}

/* swap_close() from a completion callback closes once they have all run. */
static void test_close_from_callback(void **state)
{
	struct ctx *c = *state;
	struct swap *s = open_slots(c, 64);
	unsigned char *buf = page_buf(8);
	struct swap_tag tags[8] = { { 0 } };
	struct waiter w = { 0 };
	struct close_cb cc = { .c = c, .w = &w };
	uint64_t f;
	uint32_t g;

	assert_int_equal(swap_alloc(s, 8, &f, &g), 0);
	for (int i = 0; i < 8; i++)
		assert_int_equal(swap_write(s, (uint64_t)i, buf + i * PS, 1, tags,
					    on_done_close, &cc), 0);
	w.pending = 8;
	run_until_done(c, &w);
	assert_int_equal(cc.calls, 8);
	assert_int_equal(cc.late_write, -ESHUTDOWN);
	c->s = NULL; /* freed by the loop */
	munmap(buf, 8 * PS);
}

/* ---- main ----------------------------------------------------------------- */

/* A directory where O_DIRECT works (not tmpfs on older kernels). */
static bool dir_ok(const char *dir)
{
	char path[PATH_MAX + 64];
	struct statfs sfs;
	void *buf;
	bool ok;
	int fd;

	if (!dir || !*dir || statfs(dir, &sfs) < 0 || sfs.f_type == TMPFS_MAGIC)
		return false;
	snprintf(path, sizeof(path), "%s/test_swap.probe.%d", dir, (int)getpid());
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_DIRECT | O_CLOEXEC, 0600);
	unlink(path);
	if (fd < 0)
		return false;
	if (posix_memalign(&buf, PS, PS)) {
		close(fd);
		return false;
	}
	memset(buf, 0, PS);
	ok = pwrite(fd, buf, PS, 0) == PS;
	free(buf);
	close(fd);
	return ok && realpath(dir, test_dir);
}

/* ---- the compressed pool ------------------------------------------------ */

static void on_kick(void *arg)
{
	(*(unsigned *)arg)++;
}

/*
 * Asked to free n pages of memory, the pool frees n pages, however many
 * entries that takes: the limits count the pool in the memory its entries
 * take, and an entry of a page that compresses 2x takes about half a
 * page.  (Counted in entries, the request freed about half: eviction then
 * waited for the spills and came back for the rest.)
 */
static void test_pool_spill_frees_pages(void **state)
{
	struct ctx *c = *state;
	struct swap *s = open_slots(c, 256);
	unsigned char *buf = page_buf(64);
	struct pool_stats before, after;
	struct timeval tv = { WATCHDOG_S, 0 };
	struct event *wd = evtimer_new(c->base, on_watchdog, c);
	unsigned kicks = 0;
	uint64_t first, freed;
	uint32_t got;

	assert_non_null(wd);
	assert_int_equal(swap_pool_setup(s, c->base, true, POOL_LZ4, on_kick, &kicks), 0);
	/* Half of each page random, half a copy of it: about 2x. */
	for (size_t i = 0; i < 64; i++) {
		fill_page(buf + i * PS, i, 0);
		memcpy(buf + i * PS + PS / 2, buf + i * PS, PS / 2);
	}
	assert_int_equal(swap_alloc(s, 64, &first, &got), 0);
	assert_int_equal(got, 64);
	assert_int_equal(write_sync(c, first, buf, 64, 1, 0), 0);
	swap_pool_stats(s, 1, &before);
	assert_int_equal(before.pages, 64);
	assert_true(before.bytes < 64 * PS * 3 / 4);

	freed = swap_pool_spill(s, 1, 8);
	evtimer_add(wd, &tv);
	do {
		swap_pool_stats(s, 1, &after);
		if (after.spilling)
			assert_true(event_base_loop(c->base, EVLOOP_ONCE) >= 0);
	} while (after.spilling && !c->timed_out);
	event_free(wd);
	assert_false(c->timed_out);
	assert_true(freed >= 8);
	assert_true(before.bytes - after.bytes >= 8 * PS);
	/* More entries than pages went. */
	assert_true(before.pages - after.pages > 8);
	assert_true(kicks > 0);
	munmap(buf, 64 * PS);
}

int main(void)
{
	const char *dirs[] = { getenv("TMPDIR"), "/var/tmp", ".", "/tmp" };
	struct io_uring ring;
	bool found = false;
	int r;

	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]) && !found; i++)
		found = dir_ok(dirs[i]);
	if (!found) {
		printf("skip: no directory (TMPDIR, /var/tmp, ., /tmp) supports O_DIRECT\n");
		return 77;
	}
	r = io_uring_queue_init(4, &ring, 0);
	if (r < 0) {
		printf("skip: io_uring unavailable: %s\n", strerror(-r));
		return 77;
	}
	io_uring_queue_exit(&ring);
	log_set_level(LOG_WARNING);

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc_sw_vectors),
		cmocka_unit_test(test_crc_hw_vectors),
		cmocka_unit_test(test_crc_hw_matches_sw),
		T(test_alloc_next_fit),
		T(test_alloc_best_effort),
		T(test_alloc_random_model),
		T(test_open_refuses),
		T(test_open_creates),
		T(test_io_refuses),
		T(test_roundtrip),
		T(test_batched_submission),
		T(test_inject_eio),
		T(test_inject_corrupt),
		T(test_failed_write_retires),
		T(test_sparse_file_allocated),
		T(test_short_read_eof),
		T(test_stale_read),
		T(test_free_during_read),
		T(test_free_during_write),
		T(test_close_in_flight),
		T(test_close_from_callback),
		T(test_pool_spill_frees_pages),
	};
#undef T
	return cmocka_run_group_tests(tests, NULL, NULL);
}
