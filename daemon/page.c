/* SPDX-License-Identifier: MIT */
/*
 * Page states and the counts kept from them (page.h): every change of a
 * page's state byte goes through a named transition here, and every
 * transition through put(), which keeps the counts of the region, its
 * client and the daemon true.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"
#include "page.h"
#include "swap.h"
#include "uffd.h"

/* In check builds a violation aborts (tests/test_page.c catches it). */
#ifndef PAGE_CHECK_ABORT
#define PAGE_CHECK_ABORT(what) abort()
#endif

#ifdef PAGERD_CHECK_INVARIANTS
static void illegal(const struct region *r, uint64_t page, const char *what)
{
	log_err("page invariant: region %" PRIu64 " page %" PRIu64 " (state 0x%x): %s",
		r->id, page, page < r->npages ? r->state[page] : 0, what);
	PAGE_CHECK_ABORT(what);
}
/* A transition's precondition. */
#define REQUIRE(cond, r, page, what) \
	do { if (!(cond)) illegal(r, page, what); } while (0)
#else
#define REQUIRE(cond, r, page, what) ((void)0)
#endif

/* Being written to swap: counted in writeback (a swap-in is PG_IO too). */
static bool in_writeback(pgstate_t b)
{
	return (b & (PG_IO | PG_READING)) == PG_IO;
}

/*
 * The one place a state byte is written: the counts of the region, its
 * client and the daemon move with it.
 */
static void put(struct region *r, uint64_t page, pgstate_t nb)
{
	struct client *c = r->client;
	struct daemon *d = c->d;
	pgstate_t ob = r->state[page];
	int64_t res = (pg_state(nb) == PAGE_RESIDENT) - (pg_state(ob) == PAGE_RESIDENT);
	int64_t wb = in_writeback(nb) - in_writeback(ob);

	r->state[page] = nb;
	r->resident += (uint64_t)res;
	c->resident += (uint64_t)res;
	d->resident += (uint64_t)res;
	r->writeback += (uint64_t)wb;
	c->writeback += (uint64_t)wb;
	d->writeback += (uint64_t)wb;
	r->swapped += (uint64_t)(int64_t)((pg_state(nb) == PAGE_SWAPPED) -
					  (pg_state(ob) == PAGE_SWAPPED));
	r->image_pending += (uint64_t)(int64_t)(((nb & PG_IMAGE) != 0) - ((ob & PG_IMAGE) != 0));
}

static void before_change(struct region *r, uint64_t first, uint64_t n,
			  unsigned what)
{
	if (r->watch && r->watch->before_change)
		r->watch->before_change(r, first, n, what);
}

/*
 * After before_change(): no page pagerd is about to make writable may be
 * one the snapshot still has to copy, if its data is in memory (where the
 * write would land).
 */
static void check_not_pending(struct region *r, uint64_t first, uint64_t n,
			      bool in_memory_only)
{
#ifdef PAGERD_CHECK_INVARIANTS
	if (!r->watch || !r->watch->pending)
		return;
	for (uint64_t p = first; p < first + n && p < r->npages; p++) {
		pgstate_t b = r->state[p];

		if (in_memory_only && (pg_state(b) != PAGE_RESIDENT ||
				       (b & (PG_READING | PG_GONE))))
			continue;
		REQUIRE(!r->watch->pending(r, p), r, p,
			"made writable while a snapshot still has to copy it");
	}
#else
	(void)r, (void)first, (void)n, (void)in_memory_only;
#endif
}

static void made_writable(struct region *r, uint64_t first, uint64_t n)
{
	if (r->watch && r->watch->made_writable)
		r->watch->made_writable(r, first, n);
}

/* ---- faults ---------------------------------------------------------- */

int64_t page_zero_fill(struct region *r, uint64_t page, uint64_t n)
{
	int64_t got;

	/* Mapped writable: a pending page (one emptied since the instant
	 * without being recorded) is a hole in the image first. */
	before_change(r, page, n, CHANGE_MEMORY);
	check_not_pending(r, page, n, false);
	got = uffd_zeropage(r, page, n);
	if (got == 0) {
		pgstate_t b = r->state[page];

		/* Resolved by a racing fault, or never really discarded. */
		REQUIRE(pg_state(b) == PAGE_EMPTY && !(b & PG_IMAGE), r, page,
			"zero-filled but not empty");
		put(r, page, (pgstate_t)(PAGE_RESIDENT | (b & (PG_IO | PG_REDIRTY))));
		return 0;
	}
	if (got < 0)
		return got;
	made_writable(r, page, (uint64_t)got);
	for (uint64_t p = page; p < page + (uint64_t)got; p++) {
		pgstate_t b = r->state[p];

		REQUIRE(pg_state(b) == PAGE_EMPTY && !(b & PG_IMAGE), r, p,
			"zero-filled but not empty");
		/* A write-back in flight (the page was emptied under it)
		 * stays, re-dirtied: it must not punch what we fill. */
		put(r, p, (pgstate_t)(PAGE_RESIDENT | PG_REF | (b & (PG_IO | PG_REDIRTY))));
	}
	return got;
}

int page_unprotect(struct region *r, uint64_t page, uint64_t n)
{
	int e;

	/* A write let in must not reach a page a snapshot still needs. */
	before_change(r, page, n, CHANGE_MEMORY);
	check_not_pending(r, page, n, true);
	e = uffd_writeprotect(r, page, n, false);
	if (e == 0)
		made_writable(r, page, n);
	return e;
}

/*
 * Puts data into the page cache at [page, page+n) without mapping it in the
 * client (its next access there is an ordinary kernel fault, no round trip
 * through us).  The kernel maps such a page by itself, so only complete
 * data may ever reach the page cache: pwrite() fills each page under its
 * lock, and a fault waits for that.  With wp, the range is write-protected
 * first (a marker where nothing is mapped), so that the kernel maps the
 * pages protected and a write to them comes to us: they are clean.
 * Returns the pages written from the first, or -errno.
 */
int64_t region_install(struct region *r, uint64_t page, uint64_t n,
		       const void *data, bool wp)
{
	size_t ps = r->client->d->page_size;
	ssize_t done;
	int e;

	if (wp && (e = uffd_writeprotect(r, page, n, true)) < 0)
		return e;
	if (!wp) {
		before_change(r, page, n, CHANGE_MEMORY);
		check_not_pending(r, page, n, false);
	}
	do
		done = pwrite(r->memfd, data, n * ps, (off_t)(page * ps));
	while (done < 0 && errno == EINTR);
	if (done < 0) {
		e = -errno;
		/* Short of memory is pagerd's (the page cache is charged
		 * to it); anything else is the client's memfd refusing
		 * writes (see region_punch()). */
		if (e != -ENOMEM)
			client_misbehaved(r->client, "its memfd refuses writes", e);
		return e;
	}
	if (!wp)
		made_writable(r, page, (uint64_t)done / ps);
	return done / (ssize_t)ps;
}

bool page_dirtied(struct region *r, uint64_t page)
{
	pgstate_t b = r->state[page];
	bool fresh = b & PG_FRESH;

	REQUIRE(pg_state(b) == PAGE_RESIDENT && !(b & PG_READING), r, page,
		"written but not resident");
	/* Snapshot running: the old data goes to the image first (before
	 * a clean page's slot goes). */
	before_change(r, page, 1, CHANGE_MEMORY);
	b = r->state[page];
	if (b & PG_IO)
		b |= PG_REDIRTY; /* the write-back must not punch it */
	else
		region_drop_slot(r, page);
	/* A swap-in mapped protected and written: its class's record
	 * counts it (page_swapin_writable()). */
	if (fresh)
		r->rw_written[(b & PG_LEFT_DIRTY) != 0]++;
	put(r, page, (pgstate_t)((b & ~PG_FRESH) | PG_REF));
	return fresh;
}

void page_emptied(struct region *r, uint64_t page)
{
	pgstate_t b = r->state[page];

	REQUIRE(pg_state(b) == PAGE_RESIDENT && !(b & PG_READING), r, page,
		"punched by the client but not resident");
	before_change(r, page, 1, CHANGE_GONE | CHANGE_SLOT);
	region_drop_slot(r, page);
	/* A write-back in flight keeps nothing (re-dirtied: it must not
	 * punch what a fault fills in next). */
	put(r, page, (pgstate_t)(PAGE_EMPTY | (b & PG_IO ? PG_IO | PG_REDIRTY : 0)));
}

void page_add_waiter(struct region *r, uint64_t page)
{
	REQUIRE(r->state[page] & PG_READING, r, page, "waiter on a page not being read");
	put(r, page, r->state[page] | PG_WAITER);
}

void page_referenced(struct region *r, uint64_t page)
{
	REQUIRE(pg_state(r->state[page]) == PAGE_RESIDENT, r, page,
		"referenced but not resident");
	put(r, page, r->state[page] | PG_REF);
}

void page_hot(struct region *r, uint64_t page)
{
	REQUIRE(pg_state(r->state[page]) == PAGE_RESIDENT, r, page, "hot but not resident");
	put(r, page, r->state[page] | PG_REF | PG_HOT_MASK);
}

/* ---- swap-in ----------------------------------------------------------- */

void page_swapin_started(struct region *r, uint64_t page, uint64_t n)
{
	for (uint64_t p = page; p < page + n; p++) {
		REQUIRE(pg_state(r->state[p]) == PAGE_SWAPPED && region_slot(r, p) >= 0,
			r, p, "swap-in of a page not in swap");
		/* Resident from now (counted against the limits), though
		 * nothing is in the page cache until the data is checked and
		 * installed.  How it left memory is kept for the prediction. */
		put(r, p, (pgstate_t)(PAGE_RESIDENT | PG_IO | PG_READING |
				      (r->state[p] & PG_LEFT_DIRTY)));
	}
	r->client->d->reading += n;
}

void page_swapin_reads_ended(struct daemon *d, uint64_t n)
{
	d->reading -= n;
}

void page_swapin_reads_again(struct daemon *d, uint64_t n)
{
	d->reading += n;
}

void page_swapin_installed(struct region *r, uint64_t page, uint64_t n)
{
	for (uint64_t p = page; p < page + n; p++) {
		pgstate_t b = r->state[p];

		REQUIRE((b & PG_READING) && !(b & PG_GONE), r, p,
			"installed but not being read (or discarded)");
		put(r, p, (pgstate_t)(b & ~(PG_IO | PG_READING | PG_WAITER)));
	}
}

void page_swapin_abandoned(struct region *r, uint64_t page)
{
	pgstate_t b = r->state[page];

	REQUIRE(b & PG_READING, r, page, "swap-in abandoned but none ran");
	if (b & PG_GONE) {
		put(r, page, PAGE_EMPTY);
	} else {
		REQUIRE(region_slot(r, page) >= 0, r, page,
			"back to swap without a slot");
		put(r, page, (pgstate_t)(PAGE_SWAPPED | (b & PG_LEFT_DIRTY)));
	}
}

void page_poisoned(struct region *r, uint64_t page)
{
	region_drop_slot(r, page);
	put(r, page, PAGE_POISONED);
}

void page_set_readahead(struct region *r, uint64_t page, uint64_t n)
{
	for (uint64_t p = page; p < page + n; p++) {
		REQUIRE(r->state[p] & PG_READING, r, p, "read ahead but not being read");
		put(r, p, r->state[p] | PG_RA);
	}
}

void page_set_ra_mark(struct region *r, uint64_t page)
{
	REQUIRE(r->state[page] & PG_READING, r, page, "marker but not being read");
	put(r, page, r->state[page] | PG_RA_MARK);
}

void page_clear_ra_mark(struct region *r, uint64_t page)
{
	put(r, page, (pgstate_t)(r->state[page] & ~PG_RA_MARK));
}

void page_ra_reached(struct region *r, uint64_t page)
{
	put(r, page, (pgstate_t)(r->state[page] & ~(PG_RA | PG_RA_MARK)));
}

bool page_ra_used(struct region *r, uint64_t page)
{
	pgstate_t b = r->state[page];

	if (!(b & PG_RA))
		return false;
	/* Used once: referenced, not hot (a stream uses each page once). */
	put(r, page, (pgstate_t)((b & ~PG_RA) | PG_REF));
	return true;
}

/* The write prediction's record (page_swapin_writable()). */
#define RW_DECAY 256       /* samples per class: past it, counts halve */
#define RW_TRUST 16        /* samples before the record decides */
#define RW_SAMPLE 8
#define RW_SAMPLE_SURE 32

void page_set_fresh(struct region *r, uint64_t page)
{
	pgstate_t b = r->state[page];
	unsigned k = (b & PG_LEFT_DIRTY) != 0;

	REQUIRE(pg_state(b) == PAGE_RESIDENT, r, page, "fresh but not resident");
	/* One more sample of its class; the record decays, so that it
	 * follows a change of use within a few hundred swap-ins. */
	if (++r->rw_seen[k] > RW_DECAY) {
		r->rw_seen[k] /= 2;
		r->rw_written[k] /= 2;
	}
	put(r, page, b | PG_FRESH);
}

/*
 * Write prediction.  A page swapped in for a read is mapped protected, so
 * that it stays clean (its slot current) and can be dropped without a
 * write if it is not written; but if it is written, that costs a
 * write-protect fault, a second round trip.  Pages are told apart by how
 * they last left memory (PG_LEFT_DIRTY): one written during its last stay
 * is likely written during the next.  Each region keeps, per class, a
 * record of the swap-ins it mapped protected and of those then written;
 * a class mostly written is mapped writable.  A class with no record yet
 * follows the pages' own past: writable if they left dirty.
 *
 * Mapped writable, a page tells nothing of its use, so one in SAMPLE (one
 * in SAMPLE_SURE where almost all are written) is still mapped protected,
 * to keep the record current.
 */
bool page_swapin_writable(struct region *r, uint64_t page, bool write)
{
	pgstate_t b = r->state[page];
	unsigned k = (b & PG_LEFT_DIRTY) != 0;
	uint32_t seen = r->rw_seen[k], written = r->rw_written[k], every;

	REQUIRE(b & PG_READING, r, page, "write prediction for a page not being read");
	/* A page a snapshot still has to copy goes in protected: its first
	 * write then copies it, in the write's fault (page_dirtied()), not
	 * before anybody asked. */
	if (r->watch && r->watch->pending && r->watch->pending(r, page))
		return false;
	if (write)
		return true;
	if (seen < RW_TRUST)
		every = k ? RW_SAMPLE : 0;
	else if ((uint64_t)written * 8 >= (uint64_t)seen * 7)
		every = RW_SAMPLE_SURE;
	else if ((uint64_t)written * 4 > (uint64_t)seen * 3)
		every = RW_SAMPLE;
	else
		every = 0;
	return every && ++r->rw_seq % every != 0;
}

/* ---- eviction ---------------------------------------------------------- */

void page_writeback_started(struct region *r, uint64_t page, uint64_t n)
{
	for (uint64_t p = page; p < page + n; p++) {
		pgstate_t b = r->state[p];

		REQUIRE(pg_state(b) == PAGE_RESIDENT && !(b & PG_IO), r, p,
			"write-back of a page not resident or busy");
		put(r, p, (pgstate_t)((b & ~PG_REF) | PG_IO));
	}
}

void page_writeback_ended(struct region *r, uint64_t page)
{
	pgstate_t b = r->state[page];

	REQUIRE(in_writeback(b), r, page, "write-back ended but none ran");
	if ((b & PG_GONE) && page_gone(r, page))
		put(r, page, PAGE_EMPTY);
	else
		put(r, page, (pgstate_t)(r->state[page] & ~(PG_IO | PG_REDIRTY)));
}

void page_swapped_out(struct region *r, uint64_t page, uint64_t n)
{
	for (uint64_t p = page; p < page + n; p++) {
		pgstate_t b = r->state[p];

		REQUIRE(pg_state(b) == PAGE_RESIDENT && region_slot(r, p) >= 0 &&
			!(b & (PG_READING | PG_REDIRTY | PG_GONE)), r, p,
			"swapped out without a current copy in a slot");
		/* Written out just now (its write-back ends here): it left
		 * dirty.  A clean page goes without I/O. */
		put(r, p, (pgstate_t)(PAGE_SWAPPED | (b & PG_IO ? PG_LEFT_DIRTY : 0)));
	}
}

void page_zero_evicted(struct region *r, uint64_t page, uint64_t n)
{
	/* A snapshot that still needs them records holes. */
	before_change(r, page, n, CHANGE_MEMORY);
	for (uint64_t p = page; p < page + n; p++) {
		REQUIRE(pg_state(r->state[p]) == PAGE_RESIDENT && !(r->state[p] & PG_IO),
			r, p, "evicted as zero but not resident or busy");
		put(r, p, PAGE_EMPTY);
	}
}

void page_evict_undone(struct region *r, uint64_t page, uint64_t n)
{
	for (uint64_t p = page; p < page + n; p++) {
		REQUIRE(pg_state(r->state[p]) == PAGE_SWAPPED ||
			r->state[p] == PAGE_EMPTY, r, p, "eviction undone but none ran");
		put(r, p, (pgstate_t)(PAGE_RESIDENT | (r->state[p] & PG_LEFT_DIRTY)));
	}
}

/* ---- regions ----------------------------------------------------------- */

void page_discarded(struct region *r, uint64_t first, uint64_t n)
{
	/* A running snapshot gets the pages as they were first: a discard
	 * after its instant does not change its image. */
	before_change(r, first, n, CHANGE_MEMORY | CHANGE_SLOT | CHANGE_IMAGE);
	for (uint64_t p = first; p < first + n && p < r->npages; p++) {
		pgstate_t b = r->state[p];

		/* The client's page table keeps a poison marker that no
		 * punch removes: the page stays poisoned (SIGBUS). */
		if (pg_state(b) == PAGE_POISONED)
			continue;
		/* With I/O in flight the completion finds GONE and leaves
		 * the page empty (a swap-in also finds its slot freed). */
		region_drop_slot(r, p);
		put(r, p, b & PG_IO ? b | PG_GONE : PAGE_EMPTY);
	}
}

/*
 * The write-back reads pagerd's mapping of the memfd asynchronously (the
 * I/O engine may start or resume it after the discard's punch): a read
 * there after the punch puts a zero page back in the memfd.  The client
 * then maps that page on its next access and may write to it with no
 * fault telling us (nothing is missing).  Taken for empty, the page would
 * hold the client's data while pagerd counts it a hole: a snapshot would
 * record zeros for it, and a later punch could drop it.  So a discarded
 * page under write-back is gone only while the memfd has nothing there.
 */
bool page_gone(struct region *r, uint64_t page)
{
	pgstate_t b = r->state[page];

	if (!(b & PG_GONE))
		return false;
	/* (A swap-in reads into a buffer of its own, not the mapping.) */
	if (page_gone_with(b, in_writeback(b) && region_in_memory(r, page)))
		return true;
	put(r, page, (pgstate_t)((b & ~PG_GONE) | PG_REDIRTY | PG_REF));
	return false;
}

void page_region_gone(struct region *r)
{
	struct client *c = r->client;
	struct daemon *d = c->d;

	c->resident -= r->resident;
	d->resident -= r->resident;
	c->writeback -= r->writeback;
	d->writeback -= r->writeback;
	r->resident = r->writeback = r->swapped = r->image_pending = 0;
}

/* ---- restore and adoption ---------------------------------------------- */

void page_in_image(struct region *r, uint64_t page)
{
	REQUIRE(pg_state(r->state[page]) == PAGE_EMPTY, r, page, "restored over data");
	put(r, page, r->state[page] | PG_IMAGE);
}

void page_image_read(struct region *r, uint64_t page, uint64_t n)
{
	for (uint64_t p = page; p < page + n; p++) {
		REQUIRE(r->state[p] == (PAGE_EMPTY | PG_IMAGE), r, p,
			"read from the image but not in it");
		put(r, p, PAGE_RESIDENT);
	}
}

void page_adopt(struct region *r, uint64_t page, pgstate_t b)
{
	/* Counted as a whole by page_adopted(): the predecessor's counts
	 * are not ours. */
	r->state[page] = b;
}

void page_adopted(struct region *r)
{
	struct client *c = r->client;
	struct daemon *d = c->d;

	r->resident = r->swapped = r->writeback = r->image_pending = 0;
	for (uint64_t p = 0; p < r->npages; p++) {
		pgstate_t b = r->state[p];

		r->resident += pg_state(b) == PAGE_RESIDENT;
		r->swapped += pg_state(b) == PAGE_SWAPPED;
		r->writeback += in_writeback(b);
		r->image_pending += (b & PG_IMAGE) != 0;
	}
	c->resident += r->resident;
	d->resident += r->resident;
	c->writeback += r->writeback;
	d->writeback += r->writeback;
}

/* ---- page-level helpers: slots, the memfd, I/O in flight --------------- */

void region_drop_slot(struct region *r, uint64_t page)
{
	struct swap *sw = r->client->d->swap;
	int64_t slot = region_slot(r, page);

	if (slot < 0)
		return;
	/* The region forgets the slot before the store frees it: a
	 * successor never finds a page naming a slot that is free. */
	r->slot[page] = 0;
	if (sw)
		swap_free(sw, (uint64_t)slot, 1);
}

bool page_is_zero(const void *page, size_t len)
{
	const uint64_t *w = page;

	for (size_t i = 0; i < len / sizeof(*w); i++)
		if (w[i])
			return false;
	return true;
}

/*
 * Whether the memfd holds data at `page`: a page in the page cache, or one
 * the kernel's own swap took (shmem pages can be swapped out behind our
 * back where a system swap is on, e.g. by DAMON's pageout; mincore would
 * call those absent, SEEK_DATA calls them data).
 */
bool region_in_memory(struct region *r, uint64_t page)
{
	off_t at = (off_t)(page * r->client->d->page_size);

	return lseek(r->memfd, at, SEEK_DATA) == at;
}

void page_io_link(struct region *r, struct page_io *io)
{
	io->r = r;
	io->prev = NULL;
	io->next = r->ios;
	if (r->ios)
		r->ios->prev = io;
	r->ios = io;
}

void page_io_unlink(struct page_io *io)
{
	struct region *r = io->r;

	if (!r)
		return;
	if (io->prev)
		io->prev->next = io->next;
	else
		r->ios = io->next;
	if (io->next)
		io->next->prev = io->prev;
	io->r = NULL;
}

/* A gone region's mapping, kept while write-backs still read it. */
struct map_hold {
	void *map;
	size_t len;
	unsigned refs;
};

bool page_io_detach_all(struct region *r)
{
	struct map_hold *h = NULL;
	unsigned writes = 0;

	for (struct page_io *io = r->ios; io; io = io->next)
		writes += io->write;
	if (writes) {
		h = malloc(sizeof(*h));
		/* Without one, the mapping stays for good: better some
		 * address space lost than zeros in another region. */
		if (h)
			*h = (struct map_hold){ .map = r->map, .len = r->len, .refs = writes };
	}
	while (r->ios) {
		struct page_io *io = r->ios;

		/* A write-back's slots are not the region's yet: the
		 * completion frees them.  A swap-in's are freed with the
		 * region's (the read then ends -ESTALE); it reads into a
		 * buffer of its own. */
		if (io->write)
			io->hold = h;
		page_io_unlink(io);
	}
	return writes != 0;
}

void page_io_release(struct page_io *io)
{
	struct map_hold *h = io->hold;

	io->hold = NULL;
	if (h && --h->refs == 0) {
		munmap(h->map, h->len);
		free(h);
	}
}

/* ---- the invariant checker --------------------------------------------- */

#define CHECK(cond, what)						\
	do {									\
		if (!(cond)) {							\
			bad++;							\
			log_err("page invariant: region %" PRIu64 " page %" PRIu64 \
				" (state 0x%x): %s", r->id, p, b, what);	\
		}								\
	} while (0)

/* Marks in cover[] (1 written out, 2 read in) the pages
 * the region's I/O in flight covers; counts the pages read into *reads.
 * One buffer, grown and kept: a check runs after every event, and under
 * ASan a buffer freed each time would sit in its quarantine (pagerd's RSS,
 * which the torture harness bounds, would grow with it). */
static uint8_t *io_cover(const struct region *r, uint64_t *reads)
{
	static uint8_t *cover;
	static uint64_t cap;

	if (r->npages > cap) {
		uint8_t *v = realloc(cover, r->npages);

		if (!v)
			return NULL;
		cover = v;
		cap = r->npages;
	}
	if (cover)
		memset(cover, 0, r->npages);
	else
		return NULL;
	for (const struct page_io *io = r->ios; io; io = io->next) {
		for (uint64_t p = io->page; p < io->page + io->npages && p < r->npages; p++)
			cover[p] |= io->write ? 1 : 2;
		if (!io->write)
			*reads += io->npages;
	}
	return cover;
}

static unsigned check_region(const struct region *r, uint64_t *reads)
{
	uint64_t resident = 0, swapped = 0, writeback = 0, image = 0;
	uint8_t *cover = io_cover(r, reads);
	unsigned bad = 0;

	for (uint64_t p = 0; p < r->npages; p++) {
		pgstate_t b = r->state[p];
		enum page_state st = pg_state(b);
		bool slot = region_slot(r, p) >= 0;

		resident += st == PAGE_RESIDENT;
		swapped += st == PAGE_SWAPPED;
		writeback += in_writeback(b);
		image += (b & PG_IMAGE) != 0;
		CHECK(st != PAGE_SWAPPED || (slot && !(b & (PG_IO | PG_IMAGE))),
		      "swapped without a slot, or busy");
		CHECK(!(b & PG_READING) || (st == PAGE_RESIDENT && (b & PG_IO)),
		      "read in but not resident and in flight");
		CHECK(!(b & PG_WAITER) || (b & PG_READING),
		      "a waiter but no read");
		CHECK(!(b & (PG_GONE | PG_REDIRTY)) || (b & PG_IO),
		      "discarded or re-dirtied with no I/O");
		CHECK(!(b & PG_IMAGE) || st == PAGE_EMPTY,
		      "in the image but not empty");
		CHECK(st != PAGE_POISONED || (!slot && !(b & (PG_IO | PG_READING))),
		      "poisoned with a slot or I/O");
		CHECK(st != PAGE_EMPTY || !slot, "empty with a slot");
		CHECK(!(b & PG_LEFT_DIRTY) || st == PAGE_SWAPPED || st == PAGE_RESIDENT,
		      "how it left memory, but it has no data");
		if (cover) {
			/* A page with PG_IO has an I/O in flight over it (or,
			 * a readahead marker read, its data held for its
			 * fault: swapin_check_daemon() checks those), and
			 * the other way round. */
			CHECK(!in_writeback(b) || (cover[p] & 1),
			      "written out, no write in flight");
			CHECK(!(b & PG_READING) || (cover[p] & 2) || (b & PG_RA_MARK),
			      "being read, no read in flight nor a marker held");
			CHECK(!(cover[p] & 1) || in_writeback(b),
			      "a write in flight over a page not written out");
			CHECK(!(cover[p] & 2) || (b & PG_READING),
			      "a read in flight over a page not being read");
		}
	}
	if (resident != r->resident || swapped != r->swapped ||
	    writeback != r->writeback || image != r->image_pending) {
		bad++;
		log_err("page invariant: region %" PRIu64 " counts %" PRIu64 "/%" PRIu64 "/%"
			PRIu64 "/%" PRIu64 " (resident/swapped/writeback/image), its states %"
			PRIu64 "/%" PRIu64 "/%" PRIu64 "/%" PRIu64, r->id, r->resident,
			r->swapped, r->writeback, r->image_pending, resident, swapped,
			writeback, image);
	}
	return bad;
}

unsigned page_check_region(const struct region *r)
{
	uint64_t reads = 0;

	return check_region(r, &reads);
}

unsigned page_check_daemon(const struct daemon *d)
{
	uint64_t resident = 0, writeback = 0, reads = 0;
	unsigned bad = 0;

	for (const struct client *c = d->clients; c; c = c->next) {
		uint64_t cres = 0, cwb = 0;

		for (size_t i = 0; i < c->nregions; i++) {
			const struct region *r = c->regions[i];

			bad += check_region(r, &reads);
			cres += r->resident;
			cwb += r->writeback;
		}
		if (cres != c->resident || cwb != c->writeback) {
			bad++;
			log_err("page invariant: client %" PRIu64 " counts %" PRIu64 " resident, %"
				PRIu64 " writeback; its regions %" PRIu64 ", %" PRIu64,
				c->id, c->resident, c->writeback, cres, cwb);
		}
		resident += c->resident;
		writeback += c->writeback;
	}
	/* Reads of regions that went are still counted until they end. */
	if (resident != d->resident || writeback != d->writeback || reads > d->reading) {
		bad++;
		log_err("page invariant: daemon counts %" PRIu64 " resident, %" PRIu64
			" writeback, %" PRIu64 " reading; its clients %" PRIu64 ", %" PRIu64
			", reads on regions %" PRIu64, d->resident, d->writeback, d->reading,
			resident, writeback, reads);
	}
#ifdef PAGERD_CHECK_INVARIANTS
	if (bad)
		PAGE_CHECK_ABORT("page invariants broken");
#endif
	return bad;
}
