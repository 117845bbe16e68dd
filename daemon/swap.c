/* SPDX-License-Identifier: MIT */
/*
 * The swap store: slot allocation, per-slot metadata (owner, CRC32C), and
 * reads and writes through a store (store.h) on the device: pagerd's
 * io_uring engine (io.h) for a file or block device, which batches
 * submissions, continues short transfers and retries -EAGAIN/-EINTR.
 * What this file adds to a read is the check of every page's CRC32C.
 */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "crc32c.h"
#include "log.h"
#include "io.h"
#include "pool.h"
#include "store.h"
#include "swap.h"

/* Free runs swap_alloc() looks at for one long enough before settling. */
#define SWAP_ALLOC_PROBES 32
/* Noisy log lines: at most `burst` per interval, then a count. */
#define SWAP_LOG_INTERVAL_MS 10000

enum swap_op { SWAP_OP_READ, SWAP_OP_WRITE };

struct swap_req {
	struct swap *s;
	enum swap_op op;
	uint64_t slot;
	uint32_t npages;
	unsigned char *buf;
	enum swap_fault inject;     /* a write's injected failure, for tests */
	swap_done_fn done;
	void *arg;
	/* With a pool: the device requests this one became (pages served by
	 * the pool need none), their first error, and the next request
	 * whose answer waits for the loop (none went to the device). */
	unsigned parts;
	int parts_res;
	struct swap_req *next_deferred;
};

/* A spill: pool entries [slot, slot + n) written to their slots. */
struct spill_req {
	struct swap *s;
	uint64_t slot;
	uint32_t n;
	unsigned char *buf;
};


struct swap_slot {
	uint64_t region;
	uint64_t page;
	uint32_t gen;
	uint32_t crc;
};

/*
 * The slot table in a memfd (swap_meta_share): this header, then at
 * SWAP_META_SLOTS_OFF one struct swap_slot per slot.  A successor checks
 * every field before it trusts a byte of the table.
 */
#define SWAP_META_MAGIC   0x6174656d70617773ull /* "swapmeta" */
#define SWAP_META_VERSION 1
#define SWAP_META_SLOTS_OFF 4096

struct swap_meta_hdr {
	uint64_t magic;
	uint32_t version;
	uint32_t hdr_size;    /* sizeof(struct swap_meta_hdr) */
	uint64_t file_size;   /* of the memfd */
	uint64_t nslots;
	uint32_t page_size;
	uint32_t slot_size;   /* sizeof(struct swap_slot) */
	uint64_t dev, ino;    /* of the swap file or device it describes */
};

struct ratelimit {
	bool started;
	uint64_t start_ms;
	unsigned n;
	uint64_t suppressed;
};

struct swap {
	char *path;
	int fd;
	size_t page_size;
	size_t dio_align;           /* file offset alignment O_DIRECT needs */
	uint64_t nslots;
	uint64_t *used_map;         /* slot allocated */
	uint64_t *data_map;         /* slot holds a completed write */
	uint64_t *busy_map;         /* a write to the slot is in flight */
	uint64_t *eio_map;          /* injected: next read fails with -EIO */
	uint64_t *bad_map;          /* a write to the slot failed */
	uint64_t *retired_map;      /* ... and it was freed: never used again */
	uint64_t *doomed_map;       /* freed while read: free when the reads end */
	uint16_t *readers;          /* reads in flight, per slot */
	uint64_t wfail_region;      /* injected: this region's writes fail */
	enum swap_fault wfail_kind;
	struct swap_slot *slots;    /* calloc'd, or in meta_map */
	uint64_t cursor;            /* next-fit */
	int meta_fd;                /* the memfd holding slots, or -1 */
	void *meta_map;
	size_t meta_len;

	struct io_engine *io;
	struct store *dev;          /* the device's I/O (store.h) */

	unsigned dispatching;       /* > 0 while completion callbacks run */
	bool close_requested;       /* swap_close() from a callback */
	bool closing;

	struct ratelimit full_rl, io_rl;
	struct swap_stats st;

	/* The compressed pool in front of the device (swap_pool_setup()),
	 * or NULL. */
	struct pool *pool;
	bool pool_on;               /* new pages go to the pool */
	struct event *pool_ev;      /* answers the deferred requests */
	struct swap_req *deferred, **deferred_tail;
	uint64_t *spill_map;        /* a spill write to the slot is in flight */
	unsigned spills_in_flight;
	void (*pool_kick)(void *arg);
	void *pool_kick_arg;
};

static void swap_destroy(struct swap *s);

/* ---- small helpers ------------------------------------------------------ */

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * True if a line may be logged now: `burst` lines per interval.  Opening a
 * new interval reports how many were held back in the last one.
 */
static bool log_allowed(struct swap *s, struct ratelimit *rl, unsigned burst)
{
	uint64_t now = mono_ms();

	if (!rl->started || now - rl->start_ms >= SWAP_LOG_INTERVAL_MS) {
		if (rl->suppressed)
			log_warn("swap %s: %" PRIu64 " similar messages suppressed",
				 s->path, rl->suppressed);
		rl->started = true;
		rl->start_ms = now;
		rl->n = 0;
		rl->suppressed = 0;
	}
	if (rl->n < burst) {
		rl->n++;
		return true;
	}
	rl->suppressed++;
	return false;
}

static inline bool bit_test(const uint64_t *m, uint64_t i)
{
	return (m[i / 64] >> (i % 64)) & 1;
}

static inline void bit_set(uint64_t *m, uint64_t i)
{
	m[i / 64] |= 1ull << (i % 64);
}

static inline void bit_clear(uint64_t *m, uint64_t i)
{
	m[i / 64] &= ~(1ull << (i % 64));
}

/* Sets bits [first, first + n) to `value`, a word at a time. */
static void bits_assign(uint64_t *m, uint64_t first, uint64_t n, bool value)
{
	while (n) {
		unsigned shift = first % 64;
		uint64_t k = 64 - shift < n ? 64 - shift : n;
		uint64_t mask = (k == 64 ? ~0ull : ((1ull << k) - 1)) << shift;

		if (value)
			m[first / 64] |= mask;
		else
			m[first / 64] &= ~mask;
		first += k;
		n -= k;
	}
}

/* The first index in [from, to) whose bit is `value`, or `to`.  Skips whole
 * words, so a full stretch of the bitmap costs one load per 64 slots. */
static uint64_t find_bit(const uint64_t *m, uint64_t from, uint64_t to, bool value)
{
	while (from < to) {
		uint64_t w = value ? m[from / 64] : ~m[from / 64];

		w &= ~0ull << (from % 64);
		if (w) {
			uint64_t i = (from & ~63ull) + (uint64_t)__builtin_ctzll(w);

			return i < to ? i : to;
		}
		from = (from & ~63ull) + 64;
	}
	return to;
}

/* ---- slot allocator ----------------------------------------------------- */

int swap_alloc(struct swap *s, uint32_t want, uint64_t *ret_first,
	       uint32_t *ret_got)
{
	uint64_t best = 0, best_len = 0;
	unsigned probes = 0;

	if (!want)
		return -EINVAL;
	if (s->st.used + s->st.bad >= s->nslots) {
		s->st.full++;
		if (log_allowed(s, &s->full_rl, 1))
			log_warn("swap %s is full (%" PRIu64 " slots of %zu bytes): "
				 "dirty pages stay resident until slots are freed",
				 s->path, s->nslots, s->page_size);
		return -ENOSPC;
	}

	/*
	 * From the cursor to the end, then from the start to the cursor.  A
	 * run never wraps: the last slot and slot 0 are not adjacent on disk.
	 * Some slot is free, so at least a run of 1 is found.
	 */
	for (int pass = 0; pass < 2 && best_len < want && probes < SWAP_ALLOC_PROBES;
	     pass++) {
		uint64_t p = pass ? 0 : s->cursor;
		uint64_t end = pass ? s->cursor : s->nslots;

		while (p < end) {
			uint64_t z = find_bit(s->used_map, p, end, false), e, lim;

			if (z == end)
				break;
			lim = s->nslots - z < want ? s->nslots : z + want;
			e = find_bit(s->used_map, z, lim, true);
			if (e - z > best_len) {
				best = z;
				best_len = e - z;
			}
			if (best_len == want || ++probes >= SWAP_ALLOC_PROBES)
				break;
			p = e;
		}
	}

	bits_assign(s->used_map, best, best_len, true);
	s->st.used += best_len;
	s->cursor = best + best_len == s->nslots ? 0 : best + best_len;
	*ret_first = best;
	*ret_got = (uint32_t)best_len;
	return 0;
}

/* Gives slot i back to the allocator (or retires it). */
static void slot_release(struct swap *s, uint64_t i)
{
	bit_clear(s->data_map, i);
	bit_clear(s->busy_map, i);
	bit_clear(s->eio_map, i);
	memset(&s->slots[i], 0, sizeof(s->slots[i]));
	s->st.used--;
	if (bit_test(s->bad_map, i)) {
		/* Its write failed (a full disk under a sparse file, a
		 * media error): it stays allocated to nobody, so that the
		 * allocator never hands it out again. */
		bit_set(s->retired_map, i);
		s->st.bad++;
		return;
	}
	bit_clear(s->used_map, i);
}

/*
 * A slot freed while a read of it is in flight (a page discarded during
 * its swap-in, a region destroyed, a snapshot done with a slot it held) is
 * doomed: free to its callers from now, but kept allocated, its data and
 * CRC32C intact, until the last read of it ends.  Handed out and rewritten
 * at once, it would make that read fail (-ESTALE) for every page of it,
 * the other pages' own slots included: they would be poisoned for nothing.
 */
void swap_free(struct swap *s, uint64_t first, uint32_t n)
{
	uint64_t already = 0;

	if (first >= s->nslots || n > s->nslots - first) {
		log_err("swap %s: freeing slots %" PRIu64 "+%" PRIu32
			" outside the swap (%" PRIu64 " slots)",
			s->path, first, n, s->nslots);
		return;
	}
	for (uint64_t i = first; i < first + n; i++) {
		if (!bit_test(s->used_map, i) || bit_test(s->retired_map, i) ||
		    bit_test(s->doomed_map, i)) {
			already++;
			continue;
		}
		if (s->pool)
			pool_drop(s->pool, i);
		/* A spill still writing there holds it like a read: no new
		 * write to the slot may race that one. */
		if (s->readers[i] || (s->spill_map && bit_test(s->spill_map, i)))
			bit_set(s->doomed_map, i);
		else
			slot_release(s, i);
	}
	if (already)
		log_err("swap %s: %" PRIu64 " of slots %" PRIu64 "+%" PRIu32
			" were already free", s->path, already, first, n);
}

/* ---- completion --------------------------------------------------------- */

/* Runs the callback and frees r; a callback may call swap_close(). */
static void req_finish(struct swap *s, struct swap_req *r, int res)
{
	swap_done_fn done = r->done;
	void *arg = r->arg;

	if (r->op == SWAP_OP_READ) {
		if (res == 0) {
			s->st.reads++;
			s->st.pages_read += r->npages;
		} else {
			s->st.read_errors++;
		}
	} else {
		/*
		 * Only slots still waiting for this write get data: one freed
		 * meanwhile (and maybe allocated again) must not look written.
		 */
		for (uint32_t i = 0; i < r->npages; i++) {
			if (!bit_test(s->busy_map, r->slot + i))
				continue;
			bit_clear(s->busy_map, r->slot + i);
			if (res == 0 && s->pool)
				pool_set_clean(s->pool, r->slot + i); /* (written through) */
			if (res == 0)
				bit_set(s->data_map, r->slot + i);
			else if (res != -ECANCELED)
				bit_set(s->bad_map, r->slot + i);
		}
		if (res == 0) {
			s->st.writes++;
			s->st.pages_written += r->npages;
		} else {
			s->st.write_errors++;
		}
	}
	if (res && res != -ECANCELED && res != -EBADMSG &&
	    log_allowed(s, &s->io_rl, 10))
		log_warn("swap %s: %s of slots %" PRIu64 "+%" PRIu32 " failed: %s",
			 s->path, r->op == SWAP_OP_READ ? "read" : "write",
			 r->slot, r->npages, strerror(-res));
	uint64_t slot = r->slot;
	uint32_t npages = r->npages;
	bool read = r->op == SWAP_OP_READ;

	free(r);
	s->dispatching++;
	done(arg, res);
	s->dispatching--;
	/* The read has ended (its callback too): slots freed under it go. */
	for (uint32_t i = 0; read && i < npages; i++)
		if (!--s->readers[slot + i] && bit_test(s->doomed_map, slot + i) &&
		    !(s->spill_map && bit_test(s->spill_map, slot + i))) {
			bit_clear(s->doomed_map, slot + i);
			slot_release(s, slot + i);
		}
}

/*
 * What a read that reached the device returns: -EIO if a fault was
 * injected on one of its slots (consuming it), the device's error, -ESTALE
 * if a slot lost its data meanwhile, -EBADMSG if a page fails its CRC.
 */
static int read_check(struct swap *s, struct swap_req *r, int res)
{
	bool injected = false, stale = false;
	uint32_t bad = 0;

	for (uint32_t i = 0; i < r->npages; i++)
		if (bit_test(s->eio_map, r->slot + i)) {
			bit_clear(s->eio_map, r->slot + i);
			injected = true;
		}
	if (injected)
		return -EIO;
	if (res)
		return res;
	for (uint32_t i = 0; i < r->npages; i++) {
		uint64_t slot = r->slot + i;
		const struct swap_slot *m = &s->slots[slot];
		uint32_t crc;

		if (!bit_test(s->data_map, slot)) {
			stale = true;
			continue;
		}
		crc = crc32c(0, r->buf + (size_t)i * s->page_size, s->page_size);
		if (crc == m->crc)
			continue;
		bad++;
		s->st.crc_errors++;
		if (log_allowed(s, &s->io_rl, 10))
			log_warn("swap %s: slot %" PRIu64 " (region %" PRIu64 " page %" PRIu64
				 " gen %" PRIu32 ") fails its CRC32C check: stored %08" PRIx32
				 ", read %08" PRIx32 "; the page will be poisoned",
				 s->path, slot, m->region, m->page, m->gen, m->crc, crc);
	}
	if (stale)
		return -ESTALE;
	return bad ? -EBADMSG : 0;
}

/*
 * The store's answer for r.  Injected write failures (tests) replace the
 * result the device gave: -EIO, or -ENOSPC as when the disk fills half-way
 * (the short transfer itself is the engine's, tested there).  A read is
 * checked page by page.
 */
static void swap_io_done(void *arg, int res)
{
	struct swap_req *r = arg;
	struct swap *s = r->s;

	if (r->inject == SWAP_FAULT_WRITE_EIO && res == 0)
		res = -EIO;
	else if (r->inject == SWAP_FAULT_WRITE_SHORT && res == 0)
		res = -ENOSPC;
	if (r->op == SWAP_OP_READ)
		res = read_check(s, r, res);
	req_finish(s, r, res);
	/* swap_close() from a callback: the last one out closes. */
	if (s->close_requested && !s->dispatching && !s->closing)
		swap_destroy(s);
}

/* ---- reads and writes --------------------------------------------------- */

static int check_io(const struct swap *s, uint64_t first, const void *buf,
		    uint32_t npages, swap_done_fn done)
{
	if (!buf || !done || !npages || first >= s->nslots ||
	    npages > s->nslots - first ||
	    (uint64_t)npages * s->page_size > SWAP_IO_MAX_BYTES ||
	    (uintptr_t)buf % s->page_size)
		return -EINVAL;
	if (find_bit(s->used_map, first, first + npages, false) != first + npages ||
	    find_bit(s->doomed_map, first, first + npages, true) != first + npages)
		return -EINVAL;
	return 0;
}

static struct swap_req *req_new(struct swap *s, enum swap_op op, uint64_t first,
				void *buf, uint32_t npages, swap_done_fn done, void *arg)
{
	struct swap_req *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->s = s;
	r->op = op;
	r->slot = first;
	r->npages = npages;
	r->buf = buf;
	r->done = done;
	r->arg = arg;
	return r;
}

/* The calling thread's own ring, for its reads of a swap file or device
 * (swap_local_reads()), or NULL: the engine's. */
static __thread struct io_local *local_reads;

void swap_local_reads(struct io_local *l)
{
	local_reads = l;
}

/* Hands r to the device; on failure r is freed and nothing calls back. */
static int req_submit(struct swap *s, struct swap_req *r)
{
	uint64_t off = r->slot * s->page_size;
	size_t len = (size_t)r->npages * s->page_size;
	int e;

	/* A fault thread reads the swap's own descriptor on its own ring
	 * (RBD has none: its reads stay the store's).  The completion comes
	 * back through the same swap_io_done(), on that thread, under the
	 * daemon lock. */
	if (r->op == SWAP_OP_READ && local_reads && s->fd >= 0 &&
	    io_local_read(local_reads, s->fd, r->buf, len, off, swap_io_done, r) == 0)
		return 0;
	e = r->op == SWAP_OP_READ ?
		store_read(s->dev, off, r->buf, len, swap_io_done, r) :
		store_write(s->dev, off, r->buf, len, swap_io_done, r);

	if (e < 0)
		free(r);
	return e;
}

/* One device request of a pooled request r has ended. */
static void part_done(void *arg, int res)
{
	struct swap_req *r = arg;

	if (res && !r->parts_res)
		r->parts_res = res;
	if (--r->parts == 0)
		swap_io_done(r, r->parts_res);
}

/* Answers every deferred request (from the loop). */
static void on_deferred(evutil_socket_t fd, short what, void *arg)
{
	struct swap *s = arg;
	struct swap_req *r;

	(void)fd;
	(void)what;
	/* Held, so that a swap_close() from a callback waits for the loop's
	 * end (swap_io_done() would otherwise free s under it). */
	s->dispatching++;
	while (!s->close_requested && (r = s->deferred)) {
		s->deferred = r->next_deferred;
		if (!s->deferred)
			s->deferred_tail = &s->deferred;
		swap_io_done(r, r->parts_res);
	}
	s->dispatching--;
	if (s->close_requested && !s->dispatching && !s->closing)
		swap_destroy(s);
}

/*
 * A fault thread's requests the pool answered (swap_local_answer()): run
 * on that thread before it lets go of the daemon lock, not handed to the
 * loop, whose wake-up (another thread, often on the other CPU) cost a
 * pool hit about as much as the disk read it saved.
 */
static __thread struct swap_req *local_deferred, **local_deferred_tail;

static void defer(struct swap *s, struct swap_req *r)
{
	r->next_deferred = NULL;
	if (local_reads) {
		if (!local_deferred)
			local_deferred_tail = &local_deferred;
		*local_deferred_tail = r;
		local_deferred_tail = &r->next_deferred;
		return;
	}
	*s->deferred_tail = r;
	s->deferred_tail = &r->next_deferred;
	event_active(s->pool_ev, EV_TIMEOUT, 1);
}

/* The end of a dispatch: a swap_close() from a callback is done now. */
static void dispatch_end(struct swap *s)
{
	if (s && !--s->dispatching && s->close_requested && !s->closing)
		swap_destroy(s);
}

void swap_local_answer(void)
{
	struct swap *held = NULL;
	struct swap_req *r;

	/* An answer may start another request the pool answers (a page
	 * read again on its own): it joins this list.  The swap is held
	 * while its requests are answered, as on_deferred() holds it. */
	while ((r = local_deferred)) {
		local_deferred = r->next_deferred;
		if (r->s != held) {
			dispatch_end(held);
			held = r->s;
			held->dispatching++;
		}
		swap_io_done(r, r->parts_res);
	}
	dispatch_end(held);
}

/*
 * r with the pool in front: pages pool[i] true are the pool's (in r->buf
 * already for a read; nothing to write for a write); the runs of the
 * others go to the device, each its own request.  With none, r is
 * answered from the loop (on a fault thread: by swap_local_answer()).  Returns 0, or -errno with r freed and no
 * callback: only when the first device request fails (later ones failing
 * to start answer r with their error).
 */
static int req_submit_parts(struct swap *s, struct swap_req *r, const bool *pooled)
{
	uint32_t i = 0;

	r->parts = 1; /* held while parts are submitted */
	while (i < r->npages) {
		uint32_t j;
		int e;

		if (pooled[i]) {
			i++;
			continue;
		}
		for (j = i + 1; j < r->npages && !pooled[j]; j++)
			;
		r->parts++;
		e = r->op == SWAP_OP_READ ?
			store_read(s->dev, (r->slot + i) * s->page_size,
				   r->buf + (size_t)i * s->page_size,
				   (size_t)(j - i) * s->page_size, part_done, r) :
			store_write(s->dev, (r->slot + i) * s->page_size,
				    r->buf + (size_t)i * s->page_size,
				    (size_t)(j - i) * s->page_size, part_done, r);
		if (e < 0) {
			r->parts--;
			if (r->parts == 1) {
				free(r);
				return e;
			}
			if (!r->parts_res)
				r->parts_res = e;
			break;
		}
		i = j;
	}
	if (--r->parts == 0)
		defer(s, r);
	return 0;
}

int swap_write(struct swap *s, uint64_t first_slot, const void *buf,
	       uint32_t npages, const struct swap_tag *tags, swap_done_fn done,
	       void *arg)
{
	struct swap_req *r;
	bool *pooled = NULL;
	uint32_t npooled = 0;
	int ret;

	if (s->closing || s->close_requested)
		return -ESHUTDOWN;
	ret = check_io(s, first_slot, buf, npages, done);
	if (ret)
		return ret;
	if (!tags)
		return -EINVAL;
	/* The buffer is only read, but the request keeps one pointer. */
	r = req_new(s, SWAP_OP_WRITE, first_slot, (void *)(uintptr_t)buf, npages,
		    done, arg);
	if (!r)
		return -ENOMEM;
	if (s->wfail_kind != SWAP_FAULT_NONE && tags[0].region == s->wfail_region)
		r->inject = s->wfail_kind;
	for (uint32_t i = 0; i < npages; i++) {
		struct swap_slot *m = &s->slots[first_slot + i];

		m->region = tags[i].region;
		m->page = tags[i].page;
		m->gen = tags[i].gen;
		m->crc = crc32c(0, r->buf + (size_t)i * s->page_size, s->page_size);
	}
	/* A write whose failure is injected goes to the device, where the
	 * failure is. */
	if (s->pool_on && r->inject == SWAP_FAULT_NONE) {
		pooled = calloc(npages, sizeof(*pooled));
		if (!pooled) {
			free(r);
			return -ENOMEM;
		}
		for (uint32_t i = 0; i < npages; i++) {
			pooled[i] = pool_put(s->pool, first_slot + i, tags[i].region,
					     r->buf + (size_t)i * s->page_size) == 0;
			npooled += pooled[i];
		}
	}
	/*
	 * Written through while a successor may adopt the slot table after a
	 * crash (the fd store has it): the pool dies with the process, the
	 * device does not.  The pool then only saves reads.
	 */
	if (s->meta_fd >= 0)
		npooled = 0;
	ret = npooled ? req_submit_parts(s, r, pooled) : req_submit(s, r);
	if (ret < 0) {
		for (uint32_t i = 0; i < npages && pooled; i++)
			if (pooled[i])
				pool_drop(s->pool, first_slot + i);
		free(pooled);
		return ret;
	}
	/* Until the write completes the slot holds nothing trustworthy; a
	 * pooled page's data is in the pool already (unless written through:
	 * it counts from the write's end then, as any). */
	for (uint32_t i = 0; i < npages; i++) {
		if (npooled && pooled[i]) {
			bit_set(s->data_map, first_slot + i);
			bit_clear(s->busy_map, first_slot + i);
		} else {
			bit_clear(s->data_map, first_slot + i);
			bit_set(s->busy_map, first_slot + i);
		}
	}
	free(pooled);
	return 0;
}

int swap_read(struct swap *s, uint64_t first_slot, void *buf, uint32_t npages,
	      swap_done_fn done, void *arg)
{
	struct swap_req *r;
	bool *pooled;
	uint32_t npooled = 0;
	int ret;

	if (s->closing || s->close_requested)
		return -ESHUTDOWN;
	ret = check_io(s, first_slot, buf, npages, done);
	if (ret)
		return ret;
	if (find_bit(s->data_map, first_slot, first_slot + npages, false) !=
	    first_slot + npages)
		return -ENODATA;
	for (uint32_t i = 0; i < npages; i++)
		if (s->readers[first_slot + i] == UINT16_MAX)
			return -EBUSY; /* not from pagerd: a few reads at most */
	r = req_new(s, SWAP_OP_READ, first_slot, buf, npages, done, arg);
	if (!r)
		return -ENOMEM;
	for (uint32_t i = 0; s->pool && i < npages && !npooled; i++)
		npooled = pool_has(s->pool, first_slot + i);
	if (!npooled) {
		ret = req_submit(s, r);
		goto submitted;
	}
	npooled = 0;
	pooled = calloc(npages, sizeof(*pooled));
	if (!pooled) {
		free(r);
		return -ENOMEM;
	}
	/*
	 * Pooled pages are decompressed now, into buf: read_check() checks
	 * their CRC32C with the rest.  One that does not decompress is left
	 * as it is, and fails that check.
	 */
	for (uint32_t i = 0; i < npages; i++) {
		int e = pool_get(s->pool, first_slot + i, r->buf + (size_t)i * s->page_size);

		pooled[i] = e != -ENOENT;
		/* A clean entry's page is on the device too: it leaves the
		 * pool now, so that memory never holds a page twice. */
		if (e == 0 && pool_clean(s->pool, first_slot + i))
			pool_drop(s->pool, first_slot + i);
		npooled += pooled[i];
	}
	ret = npooled ? req_submit_parts(s, r, pooled) : req_submit(s, r);
	free(pooled);
submitted:
	if (ret < 0)
		return ret;
	/* The slots stay allocated until the read ends (swap_free()). */
	for (uint32_t i = 0; i < npages; i++)
		s->readers[first_slot + i]++;
	return 0;
}

/* ---- the compressed pool: setup and spills ------------------------------- */

int swap_pool_setup(struct swap *s, struct event_base *base, bool on, int algo,
		    void (*kick)(void *arg), void *kick_arg)
{
	uint64_t words = (s->nslots + 63) / 64;
	int e;

	if (!s->pool) {
		if (!on)
			return 0;
		s->spill_map = calloc(words, sizeof(uint64_t));
		s->pool_ev = event_new(base, -1, 0, on_deferred, s);
		if (!s->spill_map || !s->pool_ev)
			return -ENOMEM;
		e = pool_new(&s->pool, s->page_size, s->nslots, (enum pool_algo)algo);
		if (e < 0)
			return e;
		s->deferred_tail = &s->deferred;
	}
	pool_set_algo(s->pool, (enum pool_algo)algo);
	s->pool_on = on;
	s->pool_kick = kick;
	s->pool_kick_arg = kick_arg;
	return 0;
}

static void spill_done(void *arg, int res)
{
	struct spill_req *q = arg;
	struct swap *s = q->s;

	for (uint32_t i = 0; i < q->n; i++) {
		uint64_t slot = q->slot + i;

		bit_clear(s->spill_map, slot);
		if (bit_test(s->doomed_map, slot)) {
			/* Freed while we wrote: it goes with its last user. */
			if (!s->readers[slot]) {
				bit_clear(s->doomed_map, slot);
				slot_release(s, slot);
			}
			continue;
		}
		pool_spilled(s->pool, slot, res == 0);
	}
	if (res == 0) {
		s->st.writes++;
		s->st.pages_written += q->n;
	} else {
		s->st.write_errors++;
		if (res != -ECANCELED && log_allowed(s, &s->io_rl, 10))
			log_warn("swap %s: spilling slots %" PRIu64 "+%" PRIu32
				 " from the pool failed: %s; they stay in the pool",
				 s->path, q->slot, q->n, strerror(-res));
	}
	s->spills_in_flight--;
	free(q->buf);
	free(q);
	if (s->pool_kick && !s->closing)
		s->pool_kick(s->pool_kick_arg);
}

static int cmp_slot(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Writes the pool's entries slots[0..n) (sorted, contiguous) to the device. */
static int spill_run(struct swap *s, const uint64_t *slots, uint32_t n)
{
	struct spill_req *q = calloc(1, sizeof(*q));
	int e = -ENOMEM;

	if (!q || posix_memalign((void **)&q->buf, s->page_size, (size_t)n * s->page_size))
		goto fail;
	q->s = s;
	q->slot = slots[0];
	q->n = n;
	for (uint32_t i = 0; i < n; i++)
		/* A bad entry is written as it decompressed: the slot's
		 * CRC32C rejects it at its read, as it would have here. */
		pool_copy(s->pool, slots[i], q->buf + (size_t)i * s->page_size);
	e = store_write(s->dev, slots[0] * s->page_size, q->buf, (size_t)n * s->page_size,
			spill_done, q);
	if (e < 0)
		goto fail;
	for (uint32_t i = 0; i < n; i++)
		bit_set(s->spill_map, slots[i]);
	s->spills_in_flight++;
	return 0;
fail:
	if (q)
		free(q->buf);
	free(q);
	for (uint32_t i = 0; i < n; i++)
		pool_spilled(s->pool, slots[i], false);
	return e;
}

/* Entries spilled per call at most; one sort, runs written together. */
#define SPILL_BATCH 256

uint64_t swap_pool_spill(struct swap *s, uint64_t region, uint64_t max)
{
	uint64_t slots[SPILL_BATCH], want, done = 0;

	if (!s->pool || s->closing || s->close_requested)
		return 0;
	/* Counted in the memory the entries take, as the limits count the
	 * pool: an entry is a fraction of a page, so freeing max pages takes
	 * more entries than max. */
	want = max * s->page_size;
	while (done < want) {
		uint64_t before = done, left = want - done;
		/* No entry takes more than a page: this many at least. */
		uint64_t ask = (left + s->page_size - 1) / s->page_size;
		size_t n = pool_spill_start(s->pool, region, slots,
					    ask < SPILL_BATCH ? ask : SPILL_BATCH);

		if (!n)
			break;
		/* Written through: the device has them (or will: those wait). */
		size_t k = 0;

		for (size_t i = 0; i < n; i++) {
			uint64_t c = pool_charge(s->pool, slots[i]);

			if (pool_clean(s->pool, slots[i])) {
				pool_spilled(s->pool, slots[i], true);
				done += c;
			} else if (bit_test(s->busy_map, slots[i])) {
				pool_spilled(s->pool, slots[i], false);
			} else {
				slots[k++] = slots[i];
			}
		}
		n = k;
		if (!n) {
			/* Every one is still being written: their writes'
			 * ends kick eviction again. */
			if (done == before)
				break;
			continue;
		}
		qsort(slots, n, sizeof(slots[0]), cmp_slot);
		for (size_t i = 0; i < n;) {
			size_t j = i + 1;
			uint64_t c = pool_charge(s->pool, slots[i]);

			while (j < n && slots[j] == slots[j - 1] + 1 &&
			       (j - i + 1) * s->page_size <= SWAP_IO_MAX_BYTES)
				c += pool_charge(s->pool, slots[j++]);
			if (spill_run(s, slots + i, (uint32_t)(j - i)) < 0)
				return done / s->page_size;
			done += c;
			i = j;
		}
	}
	return done / s->page_size;
}

void swap_pool_stats(const struct swap *s, uint64_t region, struct pool_stats *ret)
{
	if (!s->pool)
		memset(ret, 0, sizeof(*ret));
	else if (region)
		pool_region_stats(s->pool, region, ret);
	else
		pool_get_stats(s->pool, ret);
}

void swap_pool_cache(struct swap *s, uint64_t slot, const void *page)
{
	if (!s->pool_on || slot >= s->nslots || !bit_test(s->data_map, slot) ||
	    bit_test(s->doomed_map, slot) || pool_has(s->pool, slot))
		return;
	if (pool_put(s->pool, slot, s->slots[slot].region, page) == 0)
		pool_set_clean(s->pool, slot);
}

bool swap_pool_exclusive(const struct swap *s, uint64_t slot)
{
	return s->pool && pool_has(s->pool, slot) && !pool_clean(s->pool, slot);
}

void swap_pool_forget_region(struct swap *s, uint64_t region)
{
	if (s->pool)
		pool_forget_region(s->pool, region);
}

/*
 * A successor inherits the slot table, not the pool: every entry is
 * written to its slot first, synchronously (pagerd is handing over, its
 * loop stopped).  An entry that cannot be written is lost, and its slot's
 * read then fails its CRC32C: poisoned, never wrong.
 */
static void pool_flush_sync(struct swap *s)
{
	uint64_t slot;
	unsigned char *buf;
	uint64_t failed = 0;

	if (posix_memalign((void **)&buf, s->page_size, s->page_size))
		return;
	while (pool_spill_start(s->pool, 0, &slot, 1) == 1) {
		bool ok = pool_clean(s->pool, slot) ||
			  (pool_copy(s->pool, slot, buf) == 0 &&
			  pwrite(s->fd, buf, s->page_size,
				 (off_t)(slot * s->page_size)) == (ssize_t)s->page_size);

		failed += !ok;
		pool_spilled(s->pool, slot, true);
	}
	if (failed)
		log_err("swap %s: %" PRIu64 " pooled pages could not be written for the "
			"successor", s->path, failed);
	free(buf);
}

/* ---- metadata, stats, fault injection ----------------------------------- */

int swap_verify(const struct swap *s, uint64_t slot, const void *page)
{
	if (slot >= s->nslots || !page)
		return -EINVAL;
	if (!bit_test(s->data_map, slot))
		return -ENODATA;
	return crc32c(0, page, s->page_size) == s->slots[slot].crc ? 0 : -EBADMSG;
}

int swap_slot_tag(const struct swap *s, uint64_t slot, struct swap_tag *ret_tag,
		  uint32_t *ret_crc)
{
	const struct swap_slot *m;

	if (slot >= s->nslots || !ret_tag)
		return -EINVAL;
	if (!bit_test(s->used_map, slot) || bit_test(s->doomed_map, slot))
		return -ENOENT;
	if (!bit_test(s->data_map, slot))
		return -ENODATA;
	m = &s->slots[slot];
	ret_tag->region = m->region;
	ret_tag->page = m->page;
	ret_tag->gen = m->gen;
	if (ret_crc)
		*ret_crc = m->crc;
	return 0;
}

void swap_get_stats(const struct swap *s, struct swap_stats *ret)
{
	struct store_stats ds;

	store_get_stats(s->dev, &ds);
	*ret = s->st;
	ret->total = s->nslots;
	ret->in_flight = ds.in_flight;
	ret->queued = ds.queued;
}

size_t swap_page_size(const struct swap *s)
{
	return s->page_size;
}

/* Flips a byte of the slot on the device, through the same O_DIRECT fd and
 * an aligned bounce buffer, synchronously. */
static int corrupt_slot(struct swap *s, uint64_t slot)
{
	off_t off = (off_t)(slot * s->page_size);
	unsigned char *buf;
	ssize_t n;
	int r;

	r = posix_memalign((void **)&buf, s->page_size, s->page_size);
	if (r)
		return -r;
	n = pread(s->fd, buf, s->page_size, off);
	if (n != (ssize_t)s->page_size) {
		r = n < 0 ? -errno : -EIO;
		goto out;
	}
	buf[s->page_size / 2] ^= 0x5a;
	n = pwrite(s->fd, buf, s->page_size, off);
	if (n != (ssize_t)s->page_size)
		r = n < 0 ? -errno : -EIO;
out:
	free(buf);
	return r;
}

int swap_inject(struct swap *s, uint64_t slot, enum swap_fault kind)
{
	if (slot >= s->nslots)
		return -EINVAL;
	switch (kind) {
	case SWAP_FAULT_NONE:
		bit_clear(s->eio_map, slot);
		return 0;
	case SWAP_FAULT_EIO:
		bit_set(s->eio_map, slot);
		return 0;
	case SWAP_FAULT_CORRUPT:
		/* A pooled page's data is in the pool; otherwise through the
		 * file alone (an RBD swap has none). */
		if (s->pool && pool_has(s->pool, slot))
			return pool_corrupt(s->pool, slot);
		return s->fd >= 0 ? corrupt_slot(s, slot) : -EOPNOTSUPP;
	case SWAP_FAULT_WRITE_EIO:
	case SWAP_FAULT_WRITE_SHORT:
		break; /* swap_inject_writes() */
	}
	return -EINVAL;
}

int swap_inject_writes(struct swap *s, uint64_t region, enum swap_fault kind)
{
	if (kind != SWAP_FAULT_NONE && kind != SWAP_FAULT_WRITE_EIO &&
	    kind != SWAP_FAULT_WRITE_SHORT)
		return -EINVAL;
	s->wfail_region = region;
	s->wfail_kind = kind;
	return 0;
}

/* ---- open and close ----------------------------------------------------- */

/*
 * Allocates every block of [0, size) of a regular file, the holes of a
 * file that exists included: a sparse swap on a disk that fills would make
 * write-backs fail one by one, long after start, only as pages are on
 * their way out (and O_DIRECT writes then need no block allocation).  A
 * file that cannot have them is refused now, saying how much it could
 * have.  On a filesystem without fallocate the file stays sparse, and is
 * refused only if its holes are more than the free space; write-backs that
 * fail later all the same are handled (their slots retired, the pages kept
 * in memory).  Returns 0 or -errno with a reason logged; the file may be
 * left longer or with more blocks than it had.
 */
static int swap_preallocate(struct swap *s, const struct stat *st, uint64_t size)
{
	uint64_t have = (uint64_t)st->st_blocks * 512, holes, avail = UINT64_MAX;
	struct statvfs vfs;
	int r;

	if (fallocate(s->fd, 0, 0, (off_t)size) == 0)
		return 0;
	r = -errno;
	holes = size > have ? size - have : 0;
	if (fstatvfs(s->fd, &vfs) == 0)
		avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	if (r == -ENOSPC || (r == -EOPNOTSUPP && holes > avail)) {
		uint64_t most = have + (avail == UINT64_MAX ? 0 : avail);

		log_err("swap %s: %" PRIu64 " MiB of swap would need %" PRIu64 " MiB more of "
			"its filesystem, which has %" PRIu64 " MiB free: free space there or "
			"set swap_size to at most %" PRIu64 " MiB", s->path, size >> 20,
			holes >> 20, avail == UINT64_MAX ? 0 : avail >> 20, most >> 20);
		return -ENOSPC;
	}
	if (r != -EOPNOTSUPP) {
		log_err("swap %s: allocating %" PRIu64 " bytes: %s", s->path, size,
			strerror(-r));
		return r;
	}
	log_warn("swap %s: fallocate unsupported, the file stays sparse (%" PRIu64
		 " MiB of holes, %" PRIu64 " MiB free): if the disk fills, write-backs "
		 "fail and their pages stay in memory", s->path, holes >> 20, avail >> 20);
	if ((uint64_t)st->st_size < size && ftruncate(s->fd, (off_t)size) < 0)
		return -errno;
	return 0;
}

/*
 * Learns the device's size and the alignment O_DIRECT needs, and for a
 * regular file allocates its first `size` bytes.  Returns 0 with *size (0 in: the
 * size found) and s->dio_align set, or -errno with a reason logged; a file
 * may be left longer than it was (the caller removes one it created).
 */
static int swap_size_device(struct swap *s, uint64_t *size)
{
	struct stat st;

	if (fstat(s->fd, &st) < 0)
		return -errno;
	s->dio_align = 512;
	if (S_ISBLK(st.st_mode)) {
		uint64_t dev_size;
		int lbs;

		if (ioctl(s->fd, BLKGETSIZE64, &dev_size) < 0 ||
		    ioctl(s->fd, BLKSSZGET, &lbs) < 0)
			return -errno;
		s->dio_align = (size_t)lbs;
		if (!*size) {
			*size = dev_size - dev_size % s->page_size;
		} else if (*size > dev_size) {
			log_err("swap %s: %" PRIu64 " bytes asked for, the device has %" PRIu64,
				s->path, *size, dev_size);
			return -EINVAL;
		}
		return 0;
	}
	if (!S_ISREG(st.st_mode)) {
		log_err("swap %s: not a regular file or block device", s->path);
		return -EINVAL;
	}
#ifdef STATX_DIOALIGN
	struct statx stx;

	if (statx(s->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
	    (stx.stx_mask & STATX_DIOALIGN)) {
		if (!stx.stx_dio_offset_align) {
			log_err("swap %s: the filesystem does not support direct I/O",
				s->path);
			return -EINVAL;
		}
		s->dio_align = stx.stx_dio_offset_align;
		if (s->page_size % stx.stx_dio_mem_align) {
			log_err("swap %s: direct I/O needs %" PRIu32 "-byte aligned memory, "
				"more than the page size %zu", s->path,
				stx.stx_dio_mem_align, s->page_size);
			return -EINVAL;
		}
	}
#endif
	if (!*size) {
		*size = (uint64_t)st.st_size;
		if (!*size) {
			log_err("swap %s: no size given and the file is empty", s->path);
			return -EINVAL;
		}
	}
	return swap_preallocate(s, &st, *size);
}

static int check_size(const char *path, uint64_t size, size_t page_size)
{
	if (size % page_size) {
		log_err("swap %s: size %" PRIu64 " is not a multiple of the page size %zu",
			path, size, page_size);
		return -EINVAL;
	}
	if (size / page_size < SWAP_MIN_SLOTS) {
		log_err("swap %s: %" PRIu64 " bytes is too small: at least %u pages of %zu",
			path, size, SWAP_MIN_SLOTS, page_size);
		return -EINVAL;
	}
	return 0;
}

static int check_page_size(const char *path, size_t page_size)
{
	if (page_size < 512 || page_size > (2u << 20) || (page_size & (page_size - 1))) {
		log_err("swap %s: page size %zu is not a power of two from 512 to 2 MiB",
			path, page_size);
		return -EINVAL;
	}
	return 0;
}

static struct swap *swap_new(struct io_engine *io, const char *path,
			     size_t page_size)
{
	struct swap *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->fd = -1;
	s->meta_fd = -1;
	s->page_size = page_size;
	s->io = io;
	s->path = strdup(path);
	if (!s->path) {
		free(s);
		return NULL;
	}
	return s;
}

/*
 * Everything after the device is open: its size, the slot maps, the ring.
 * Returns 0 or -errno with a reason logged; s is then destroyed by the
 * caller.
 */
static int swap_setup_slots(struct swap *s, uint64_t size);

static int swap_setup(struct swap *s, uint64_t size)
{
	const char *path = s->path;
	size_t page_size = s->page_size;
	int r;

	if (flock(s->fd, LOCK_EX | LOCK_NB) < 0) {
		r = errno == EWOULDBLOCK ? -EBUSY : -errno;
		log_err("swap %s: %s", path, r == -EBUSY ?
			"in use by another swap (locked)" : strerror(-r));
		return r;
	}
	r = swap_size_device(s, &size);
	if (r)
		return r;
	r = check_size(path, size, page_size);
	if (r)
		return r;
	if (page_size % s->dio_align) {
		log_err("swap %s: page size %zu is not a multiple of the %zu-byte "
			"direct I/O block", path, page_size, s->dio_align);
		return -EINVAL;
	}

	r = swap_setup_slots(s, size);
	if (r)
		return r;

	/* pagerd's own disk: trusted, no timeout (a request runs to its
	 * end; closing waits for what is in flight). */
	r = store_file_open(&s->dev, s->io, s->fd, &(struct store_file_opts){
		.label = path, .depth = SWAP_QUEUE_DEPTH, .align = s->dio_align,
	});
	if (r < 0)
		return r;
	log_info("swap %s: %" PRIu64 " slots of %zu bytes", path, s->nslots, page_size);
	return 0;
}

/* The slot maps for a device of `size` bytes (checked). */
static int swap_setup_slots(struct swap *s, uint64_t size)
{
	uint64_t words;

	s->nslots = size / s->page_size;
	words = (s->nslots + 63) / 64;
	/* Large and zero: calloc gets them from mmap, so slots never used
	 * cost no memory. */
	s->used_map = calloc(words, sizeof(uint64_t));
	s->data_map = calloc(words, sizeof(uint64_t));
	s->eio_map = calloc(words, sizeof(uint64_t));
	s->busy_map = calloc(words, sizeof(uint64_t));
	s->bad_map = calloc(words, sizeof(uint64_t));
	s->retired_map = calloc(words, sizeof(uint64_t));
	s->doomed_map = calloc(words, sizeof(uint64_t));
	s->readers = calloc(s->nslots, sizeof(*s->readers));
	s->slots = calloc(s->nslots, sizeof(*s->slots));
	if (!s->used_map || !s->data_map || !s->eio_map || !s->busy_map ||
	    !s->bad_map || !s->retired_map || !s->doomed_map || !s->readers ||
	    !s->slots)
		return -ENOMEM;
	if (s->fd < 0)
		log_info("swap %s: %" PRIu64 " slots of %zu bytes", s->path, s->nslots,
			 s->page_size);
	return 0;
}

/*
 * The swap on a Ceph RBD image (store_rbd.c): created `size` bytes big if
 * missing; the same slots, CRC32C checks and poisoning as on a disk.
 */
static int swap_open_rbd(struct swap **ret, struct io_engine *io, const char *path,
			 uint64_t size, size_t page_size)
{
	struct swap *s = swap_new(io, path, page_size);
	int r;

	if (!s)
		return -ENOMEM;
	s->dio_align = 1;
	r = store_rbd_open(&s->dev, path, &(struct store_rbd_opts){
		.create_size = size, .depth = SWAP_RBD_DEPTH,
	}, &size);
	if (r == 0)
		r = check_size(path, size - size % page_size, page_size);
	if (r == 0)
		r = swap_setup_slots(s, size - size % page_size);
	if (r) {
		swap_destroy(s);
		return r;
	}
	*ret = s;
	return 0;
}

int swap_open(struct swap **ret, struct io_engine *io, const char *path,
	      uint64_t size, size_t page_size)
{
	struct swap *s;
	bool created = false;
	int r;

	if (!ret || !io || !path || !*path)
		return -EINVAL;
	if (check_page_size(path, page_size))
		return -EINVAL;
	/* Checked before the file is touched, and again once size 0 ("the
	 * file's or device's") has been resolved. */
	if (size && check_size(path, size, page_size))
		return -EINVAL;
	if (store_rbd_is_path(path))
		return swap_open_rbd(ret, io, path, size, page_size);
	s = swap_new(io, path, page_size);
	if (!s)
		return -ENOMEM;

	s->fd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
	if (s->fd < 0 && errno == ENOENT) {
		/* Created without O_DIRECT first: a filesystem that refuses
		 * O_DIRECT would otherwise leave an empty file behind. */
		int cfd = open(path, O_RDWR | O_CLOEXEC | O_CREAT | O_EXCL, 0600);

		if (cfd < 0) {
			r = -errno;
			log_err("swap %s: cannot create: %s", path, strerror(-r));
			goto fail;
		}
		close(cfd);
		created = true;
		s->fd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
	}
	if (s->fd < 0) {
		r = -errno;
		log_err("swap %s: cannot open%s: %s", path,
			r == -EINVAL ? " for direct I/O" : "", strerror(-r));
		goto fail;
	}
	r = swap_setup(s, size);
	if (r)
		goto fail;
	*ret = s;
	return 0;

fail:
	if (created)
		unlink(path);
	swap_destroy(s);
	return r;
}

int swap_open_fd(struct swap **ret, struct io_engine *io, int fd,
		 const char *label, size_t page_size)
{
	struct swap *s;
	int fl, r;

	if (!ret || !io || fd < 0 || !label)
		return -EINVAL;
	if (check_page_size(label, page_size))
		return -EINVAL;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || (fl & O_ACCMODE) != O_RDWR) {
		log_err("swap %s: not open for reading and writing", label);
		return -EBADF;
	}
	if (!(fl & O_DIRECT) && fcntl(fd, F_SETFL, fl | O_DIRECT) < 0) {
		r = -errno;
		log_err("swap %s: cannot use direct I/O: %s", label, strerror(-r));
		return r;
	}
	s = swap_new(io, label, page_size);
	if (!s)
		return -ENOMEM;
	s->fd = fd;
	r = swap_setup(s, 0);
	if (r) {
		s->fd = -1; /* the caller's still */
		swap_destroy(s);
		return r;
	}
	*ret = s;
	return 0;
}

int swap_fd(const struct swap *s)
{
	return s->fd;
}

/* ---- the slot table in a memfd, for a successor -------------------------- */

static size_t meta_size(const struct swap *s)
{
	size_t n = SWAP_META_SLOTS_OFF + s->nslots * sizeof(struct swap_slot);

	return (n + s->page_size - 1) & ~(s->page_size - 1);
}

/* Of the swap file or device, or of the RBD image: a table made for
 * another is refused (swap_meta_adopt). */
static int swap_identity(const struct swap *s, uint64_t *dev, uint64_t *ino)
{
	struct stat st;

	if (s->fd < 0 && s->dev)
		return store_rbd_identity(s->dev, dev, ino);
	if (fstat(s->fd, &st) < 0)
		return -errno;
	*dev = S_ISBLK(st.st_mode) ? (uint64_t)st.st_rdev : (uint64_t)st.st_dev;
	*ino = S_ISBLK(st.st_mode) ? 0 : (uint64_t)st.st_ino;
	return 0;
}
/* From now on the slot table lives in the shared memfd map (fd, len). */
static void meta_adopt(struct swap *s, int fd, void *map, size_t len)
{
	free(s->slots);
	s->slots = (struct swap_slot *)((char *)map + SWAP_META_SLOTS_OFF);
	s->meta_fd = fd;
	s->meta_map = map;
	s->meta_len = len;
}


int swap_meta_share(struct swap *s, int *ret_fd)
{
	struct swap_meta_hdr *h;
	size_t len = meta_size(s);
	void *map;
	int fd, r;

	if (s->meta_fd >= 0) {
		*ret_fd = s->meta_fd;
		return 0;
	}
	fd = memfd_create("pagerd-swap-meta", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)len) < 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		r = -errno;
		close(fd);
		return r;
	}
	h = map;
	*h = (struct swap_meta_hdr){
		.magic = SWAP_META_MAGIC, .version = SWAP_META_VERSION,
		.hdr_size = sizeof(*h), .file_size = len, .nslots = s->nslots,
		.page_size = (uint32_t)s->page_size,
		.slot_size = sizeof(struct swap_slot),
	};
	swap_identity(s, &h->dev, &h->ino);
	/* Only slots in use carry anything: a new table stays sparse. */
	for (uint64_t i = find_bit(s->used_map, 0, s->nslots, true); i < s->nslots;
	     i = find_bit(s->used_map, i + 1, s->nslots, true))
		((struct swap_slot *)((char *)map + SWAP_META_SLOTS_OFF))[i] = s->slots[i];
	meta_adopt(s, fd, map, len);
	*ret_fd = fd;
	return 0;
}

int swap_meta_adopt(struct swap *s, int fd)
{
	const struct swap_meta_hdr *h;
	size_t len = meta_size(s);
	uint64_t dev = 0, ino = 0;
	const char *why = NULL;
	struct stat st;
	void *map;

	if (s->meta_fd >= 0 || s->st.used)
		return -EBUSY;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		log_warn("swap %s: the stored slot table is not a regular file", s->path);
		return -EBADF;
	}
	if ((uint64_t)st.st_size != len) {
		log_warn("swap %s: the stored slot table is %lld bytes, %zu expected",
			 s->path, (long long)st.st_size, len);
		return -EINVAL;
	}
	map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		return -errno;
	h = map;
	swap_identity(s, &dev, &ino);
	if (h->magic != SWAP_META_MAGIC || h->version != SWAP_META_VERSION ||
	    h->hdr_size != sizeof(*h))
		why = "bad magic or version";
	else if (h->file_size != len || h->nslots != s->nslots ||
		 h->page_size != s->page_size || h->slot_size != sizeof(struct swap_slot))
		why = "made for a swap of another size";
	else if (h->dev != dev || h->ino != ino)
		why = "made for another swap file, device or RBD image";
	if (why) {
		log_warn("swap %s: the stored slot table is refused: %s", s->path, why);
		munmap(map, len);
		return -EINVAL;
	}
	meta_adopt(s, fd, map, len);
	return 0;
}

int swap_claim(struct swap *s, uint64_t slot, uint64_t region, uint64_t page)
{
	const struct swap_slot *m;

	if (slot >= s->nslots)
		return -EINVAL;
	if (bit_test(s->used_map, slot))
		return -EEXIST;
	m = &s->slots[slot];
	if (m->region != region || m->page != page)
		return -ESTALE;
	bit_set(s->used_map, slot);
	bit_set(s->data_map, slot);
	s->st.used++;
	return 0;
}

void swap_forget_unclaimed(struct swap *s)
{
	/* Reads of a sparse table cost nothing; only written tags are
	 * cleared, so the table stays as sparse as it was. */
	for (uint64_t i = 0; i < s->nslots; i++)
		if (!bit_test(s->used_map, i) && (s->slots[i].region || s->slots[i].crc))
			memset(&s->slots[i], 0, sizeof(s->slots[i]));
}

/*
 * Drains (see swap_close() in swap.h) and frees everything, including a
 * store swap_open() only half built.
 */
static void swap_destroy(struct swap *s)
{
	s->closing = true;
	/* Runs every callback: in flight, the real result; queued,
	 * -ECANCELED. */
	store_close(s->dev);
	/* Requests the pool answered: their answer. */
	while (s->deferred) {
		struct swap_req *r = s->deferred;

		s->deferred = r->next_deferred;
		swap_io_done(r, r->parts_res);
	}
	if (s->pool && s->meta_map && s->fd >= 0)
		pool_flush_sync(s);
	pool_free(s->pool);
	if (s->pool_ev)
		event_free(s->pool_ev);
	free(s->spill_map);
	if (s->fd >= 0)
		close(s->fd);
	if (s->meta_map) {
		munmap(s->meta_map, s->meta_len);
		close(s->meta_fd);
	} else {
		free(s->slots);
	}
	free(s->used_map);
	free(s->data_map);
	free(s->eio_map);
	free(s->bad_map);
	free(s->retired_map);
	free(s->doomed_map);
	free(s->readers);
	free(s->busy_map);
	free(s->path);
	free(s);
}

void swap_close(struct swap *s)
{
	if (!s || s->closing || s->close_requested)
		return;
	if (s->dispatching) {
		s->close_requested = true;
		return;
	}
	swap_destroy(s);
}
