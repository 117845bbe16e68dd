/* SPDX-License-Identifier: MIT */
/*
 * Bringing pages back from swap (DESIGN.md §3, §5).
 *
 * The client's mapping is registered for MISSING and WP faults only, not
 * MINOR: a page in the page cache is mapped by the kernel on its own, so a
 * page the Clock hand unmapped to sample its reference costs the client an
 * ordinary kernel fault when used again, not a round trip through us.  The
 * price is a rule: only complete, verified data may ever enter the page
 * cache.  So a swap-in reads into a buffer of ours, checks each page's
 * CRC32C there, and only then installs it.  The faulting page goes in with
 * UFFDIO_COPY in write-protect mode (copied, mapped protected since it is
 * clean and its slot still holds a current copy, and its threads woken, in
 * one ioctl); pages read with it go in unmapped (region_install(): pwrite
 * into the memfd behind a write-protect marker, so the kernel maps them
 * protected), so that their first use shows in the page tables.  A page
 * faulted for a write, or predicted to be written soon (it left memory
 * dirty, in a region that rewrites such pages: page_swapin_writable()),
 * is mapped writable at once.  Faults on one page coalesce; faults on
 * different pages are separate reads in flight at once.
 *
 * Readahead: a swap-in just after the end of a stream's last one is
 * sequential.  Then the read covers a window of pages after the faulting
 * one, and a second window beyond it is read asynchronously; that one's
 * first page (the marker) is not installed but held in a buffer of its
 * stream, so that the application's arrival there takes a MISSING fault
 * that installs it at once and starts the next window while it works
 * through the current one.  Windows double up to READAHEAD_MAX.  Random
 * swap-ins read one page.
 *
 * A read that fails or whose CRC32C does not match poisons the page
 * (UFFDIO_POISON): the application gets SIGBUS there, never wrong data.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "page.h"
#include "pagerd.h"
#include "swap.h"
#include "uffd.h"

#define READAHEAD_MIN 8
#define READAHEAD_MAX 256 /* pages: 1 MiB */
#define SWAPIN_STREAMS 16

/* A sequential stream of swap-ins, for readahead. */
struct readahead_stream {
	uint64_t next;   /* the first page not yet read ahead */
	uint64_t marker; /* its fault asks for the next window */
	uint64_t window_start; /* pages from here to next were read ahead */
	uint32_t window;
	uint64_t used;
	uint8_t *held;   /* a marker's data, read but not installed, or NULL */
	uint64_t held_page; /* ... and its page (the stream may have moved on) */
};

/* A region's streams (region.ra): allocated at its first swap-in, as most
 * regions of a host with room never swap. */
struct readahead {
	struct readahead_stream s[SWAPIN_STREAMS];
	uint64_t clock;
};

static void swapin_done(void *arg, int res);
static void release_marker(struct region *r, struct readahead_stream *s,
			   bool install);
static int retry_pages(struct region *r, struct page_io *io);

static void poison_page(struct region *r, uint64_t page, const char *why)
{
	struct daemon *d = r->client->d;

	region_punch(r, page, 1);
	page_poisoned(r, page);
	r->stats.poisoned++;
	d->stats.poisoned++;
	/* Each loss is worth a line, but a failing disk loses thousands:
	 * ten lines a second at most, then how many were not shown. */
	static uint64_t window_ms, shown, held;
	uint64_t t = now_ms();

	if (t - window_ms >= 1000) {
		if (held)
			log_err("... and %" PRIu64 " more pages poisoned", held);
		window_ms = t;
		shown = held = 0;
	}
	if (shown++ < 10)
		log_err("region %" PRIu64 " page %" PRIu64 ": swap read %s: page poisoned (SIGBUS on access)",
			r->id, page, why);
	else
		held++;
	/* Not in a fault: if an event is unread, wake whoever waits; they
	 * fault again and the fault path poisons (and retries) for them. */
	if (uffd_poison(r, page) == -EAGAIN)
		uffd_wake(r->client, r->addr + page * d->page_size, d->page_size);
}

/* The pages from `page` on, up to `max`, that are in swap with no I/O and
 * whose slots follow each other: one read. */
static uint32_t slot_run(struct region *r, uint64_t page, uint64_t max)
{
	int64_t slot = region_slot(r, page);
	uint32_t n = 0;

	while (n < max && page + n < r->npages &&
	       pg_state(r->state[page + n]) == PAGE_SWAPPED &&
	       region_slot(r, page + n) == slot + n)
		n++;
	return n;
}

/* Starts one read of n pages from `page`.  Returns 0 or -errno (nothing
 * started). */
static int read_run(struct region *r, uint64_t page, uint32_t n, bool readahead,
		    uint64_t fault_page)
{
	struct daemon *d = r->client->d;
	struct page_io *io = calloc(1, sizeof(*io));
	int e;

	if (!io)
		return -ENOMEM;
	io->d = d;
	io->page = page;
	io->npages = n;
	io->slot = (uint64_t)region_slot(r, page);
	io->readahead = readahead;
	io->fault_page = fault_page;
	if (posix_memalign((void **)&io->buf, d->page_size, n * d->page_size)) {
		free(io);
		return -ENOMEM;
	}
	e = swap_read(d->swap, io->slot, io->buf, n, swapin_done, io);
	if (e < 0) {
		free(io->buf);
		free(io);
		return e;
	}
	page_swapin_started(r, page, n);
	page_io_link(r, io);
	if (readahead) {
		r->stats.readahead += n;
		d->stats.readahead += n;
	}
	return 0;
}

/* Reads ahead the swapped pages of [from, to), as contiguous runs.  The
 * first page read becomes the stream's marker.  Returns the page after the
 * last one looked at. */
static uint64_t read_ahead(struct region *r, struct readahead_stream *s,
			   uint64_t from, uint64_t to)
{
	bool marked = false;
	uint64_t p = from;

	while (p < to && p < r->npages) {
		uint32_t n = slot_run(r, p, to - p);

		if (!n) {
			p++;
			continue;
		}
		if (read_run(r, p, n, true, UINT64_MAX) < 0)
			break;
		page_set_readahead(r, p, n);
		if (!marked) {
			/* A marker still held was passed by: it goes in. */
			release_marker(r, s, true);
			page_set_ra_mark(r, p);
			s->marker = p;
			marked = true;
		}
		p += n;
	}
	return p;
}

static struct readahead_stream *stream_for(struct region *r, uint64_t page,
					   bool *hit)
{
	struct readahead *ra = r->ra;
	struct readahead_stream *s, *victim;

	*hit = false;
	if (!ra) {
		/* Without memory for them, no readahead: one page a read. */
		ra = r->ra = calloc(1, sizeof(*ra));
		if (!ra)
			return NULL;
	}
	victim = &ra->s[0];
	ra->clock++;
	for (int i = 0; i < SWAPIN_STREAMS; i++) {
		s = &ra->s[i];
		if (s->used && page >= s->next - (s->next > 0) &&
		    page <= s->next + 1) {
			*hit = true;
			s->used = ra->clock;
			return s;
		}
		if (s->used < victim->used)
			victim = s;
	}
	release_marker(r, victim, true);
	memset(victim, 0, sizeof(*victim));
	victim->used = ra->clock;
	victim->next = page + 1;
	victim->marker = UINT64_MAX;
	return victim;
}

int swapin_fault(struct client *c, struct region *r, uint64_t page, bool write)
{
	struct daemon *d = c->d;
	bool hit;
	struct readahead_stream *s = stream_for(r, page, &hit);
	uint64_t room = limits_room(r), want = 1;
	uint32_t n;
	int e;

	if (!d->swap || region_slot(r, page) < 0) {
		poison_page(r, page, "impossible (no slot)");
		return 0;
	}
	if (hit) {
		s->window = s->window ? s->window * 2 : READAHEAD_MIN;
		if (s->window > READAHEAD_MAX)
			s->window = READAHEAD_MAX;
		/* This window now, the next in the background: within
		 * half the room left, eviction makes more. */
		want = s->window < room / 4 ? s->window : room / 4;
		if (!want)
			want = 1;
	}
	n = slot_run(r, page, want);
	e = read_run(r, page, n ? n : 1, false, page);
	if (e == 0)
		r->ios->fault_write = write; /* read_run put it first */
	if (e < 0) {
		log_warn_rl(r->client->id, "region %" PRIu64 " page %" PRIu64 ": cannot start swap-in: %s",
			 r->id, page, strerror(-e));
		if (e == -ENODATA || e == -EINVAL)
			poison_page(r, page, "impossible (slot holds no data)");
		else
			uffd_wake(c, r->addr + page * d->page_size, d->page_size);
		return 0;
	}
	page_referenced(r, page);
	if (n > 1)
		page_set_readahead(r, page + 1, n - 1);
	if (n > 1) {
		r->stats.readahead += n - 1;
		d->stats.readahead += n - 1;
	}
	if (!s)
		goto out;
	s->window_start = page;
	s->next = page + (n ? n : 1);
	if (hit && want > 1)
		s->next = read_ahead(r, s, s->next, s->next + want);
out:
	if (limits_pressure(r))
		evict_kick(d);
	return 0;
}

void swapin_readahead_hit(struct region *r, uint64_t page)
{
	struct daemon *d = r->client->d;
	pgstate_t b = r->state[page];

	page_ra_reached(r, page);
	if (!(b & PG_RA_MARK) || !r->ra)
		return;
	for (int i = 0; i < SWAPIN_STREAMS; i++) {
		struct readahead_stream *s = &r->ra->s[i];
		uint64_t hits = 1;

		if (!s->used || s->marker != page)
			continue;
		/* The application walked through the window before the
		 * marker: every page of it was used. */
		for (uint64_t p = s->window_start; p < page && p < r->npages; p++)
			hits += page_ra_used(r, p);
		r->stats.readahead_hits += hits;
		d->stats.readahead_hits += hits;
		s->used = ++r->ra->clock;
		s->window_start = page;
		s->marker = UINT64_MAX;
		if (s->window < READAHEAD_MAX)
			s->window *= 2;
		uint64_t room = limits_room(r) / 4;

		if (room)
			s->next = read_ahead(r, s, s->next,
					     s->next + (s->window < room ? s->window : room));
		if (limits_pressure(r))
			evict_kick(d);
		return;
	}
}

/*
 * Installs the checked pages [page, page+n) from buf, write-protected, and
 * only then takes them out of their in-flight state (the state is in the fd
 * store: a successor that finds a page still in flight punches it and
 * reads its slot again, while one that found it resident but not in memory
 * would take it for discarded).  Then wakes whoever waits there.  Pages
 * that cannot be installed go back to swap (their slot is still good): the
 * woken threads fault again and read them again.
 */
static void install_run(struct region *r, uint64_t page, uint64_t n,
			const uint8_t *buf)
{
	struct daemon *d = r->client->d;
	size_t ps = d->page_size;
	int64_t done = region_install(r, page, n, buf, true);
	uint64_t in = done > 0 ? (uint64_t)done : 0;

	if (in < n) {
		log_warn("region %" PRIu64 ": installing swapped-in pages %" PRIu64 "+%" PRIu64 ": %s",
			 r->id, page + in, n - in,
			 done < 0 ? strerror((int)-done) : "short write");
		for (uint64_t p = page + in; p < page + n; p++)
			page_swapin_abandoned(r, p);
	}
	page_swapin_installed(r, page, in);
	uffd_wake(r->client, r->addr + page * ps, n * ps);
}

/* The stream whose marker `page` is, or NULL. */
static struct readahead_stream *marker_stream(struct region *r, uint64_t page)
{
	for (int i = 0; r->ra && i < SWAPIN_STREAMS; i++)
		if (r->ra->s[i].used && r->ra->s[i].marker == page)
			return &r->ra->s[i];
	return NULL;
}

/* The stream holding page's data, or NULL. */
static struct readahead_stream *holder(struct region *r, uint64_t page)
{
	for (int i = 0; r->ra && i < SWAPIN_STREAMS; i++)
		if (r->ra->s[i].held && r->ra->s[i].held_page == page)
			return &r->ra->s[i];
	return NULL;
}

/* Installs the page a stream holds (an unused readahead page from now on),
 * or with install false just forgets it.  Either way the page leaves its
 * in-flight state. */
static void release_marker(struct region *r, struct readahead_stream *s,
			   bool install)
{
	uint64_t p = s->held_page;

	if (!s->held)
		return;
	page_clear_ra_mark(r, p);
	if (install)
		install_run(r, p, 1, s->held);
	else
		page_swapin_abandoned(r, p); /* discarded (PG_GONE): empty */
	free(s->held);
	s->held = NULL;
	if (s->marker == p)
		s->marker = UINT64_MAX;
}

bool swapin_take_marker(struct region *r, uint64_t page)
{
	struct readahead_stream *s = holder(r, page);
	uint8_t *held;

	if (!s)
		return false;
	held = s->held;
	s->held = NULL;
	install_run(r, page, 1, held);
	free(held);
	/* Found the app here: counts the window's hits, starts the next. */
	swapin_readahead_hit(r, page);
	if (pg_state(r->state[page]) == PAGE_RESIDENT)
		page_referenced(r, page);
	return true;
}

void swapin_forget_marker(struct region *r, uint64_t page)
{
	struct readahead_stream *s = holder(r, page);

	if (s)
		release_marker(r, s, false);
}

void swapin_release_markers(struct region *r, bool install)
{
	for (int i = 0; r->ra && i < SWAPIN_STREAMS; i++)
		if (r->ra->s[i].held)
			release_marker(r, &r->ra->s[i], install);
}

/*
 * A held marker's slot still holds its data (a swap-in leaves the slot
 * until the page is written), so dropping the buffer evicts it at no cost:
 * SWAPPED again, as if never read.  Its stream forgets the marker and the
 * application's fault there is an ordinary swap-in.
 */
uint64_t swapin_drop_markers(struct region *r, uint64_t max)
{
	uint64_t n = 0;

	for (int i = 0; r->ra && i < SWAPIN_STREAMS && n < max; i++) {
		struct readahead_stream *s = &r->ra->s[i];
		uint64_t p = s->held_page;

		if (!s->held || region_slot(r, p) < 0)
			continue;
		release_marker(r, s, false); /* back to SWAPPED (page.c) */
		n++;
	}
	return n;
}

void swapin_region_gone(struct region *r)
{
	/* Held markers: their slots still hold the data (region_destroy()
	 * frees the slots). */
	for (int i = 0; r->ra && i < SWAPIN_STREAMS; i++)
		free(r->ra->s[i].held);
	free(r->ra);
	r->ra = NULL;
}

/* Whether an I/O of the region's list reads page. */
static bool read_in_flight(const struct region *r, uint64_t page)
{
	for (const struct page_io *io = r->ios; io; io = io->next)
		if (!io->write && page >= io->page && page - io->page < io->npages)
			return true;
	return false;
}

static unsigned check_markers(const struct region *r)
{
	unsigned bad = 0;

	for (uint64_t p = 0; p < r->npages; p++) {
		pgstate_t b = r->state[p];
		bool held = false;

		if ((b & (PG_READING | PG_RA_MARK)) != (PG_READING | PG_RA_MARK))
			continue;
		for (int i = 0; r->ra && i < SWAPIN_STREAMS; i++)
			held |= r->ra->s[i].held && r->ra->s[i].held_page == p;
		if (!held && !read_in_flight(r, p)) {
			log_err("readahead invariant: region %" PRIu64 " page %" PRIu64
				": a marker being read, no read in flight nor data held",
				r->id, p);
			bad++;
		}
	}
	for (int i = 0; r->ra && i < SWAPIN_STREAMS; i++) {
		const struct readahead_stream *s = &r->ra->s[i];

		if (s->held && (s->held_page >= r->npages ||
				!(r->state[s->held_page] & PG_READING))) {
			log_err("readahead invariant: region %" PRIu64 " page %" PRIu64
				": data held for a page not being read", r->id, s->held_page);
			bad++;
		}
	}
	return bad;
}

unsigned swapin_check_daemon(const struct daemon *d)
{
	unsigned bad = 0;

	for (const struct client *c = d->clients; c; c = c->next)
		for (size_t i = 0; i < c->nregions; i++)
			bad += check_markers(c->regions[i]);
	return bad;
}

/* Re-reads each page of a failed run separately, reusing the run's page
 * states.  Returns 0 when every page has a read in flight again. */
static int retry_pages(struct region *r, struct page_io *io)
{
	struct daemon *d = io->d;

	/* Peels pages off the front of the run; what is left of it (if a
	 * read cannot start) fails as a whole. */
	while (io->npages) {
		struct page_io *one;

		if (r->state[io->page] & PG_GONE) {
			/* Discarded meanwhile, its slot freed: nothing to
			 * read again (a read of it would fail the rest). */
			page_swapin_abandoned(r, io->page);
			uffd_wake(r->client, r->addr + io->page * d->page_size,
				  d->page_size);
			io->page++;
			io->slot++;
			io->npages--;
			continue;
		}
		one = calloc(1, sizeof(*one));
		if (!one)
			return -ENOMEM;
		*one = *io;
		one->npages = 1;
		if (posix_memalign((void **)&one->buf, d->page_size, d->page_size)) {
			free(one);
			return -ENOMEM;
		}
		if (swap_read(d->swap, one->slot, one->buf, 1, swapin_done, one) < 0) {
			free(one->buf);
			free(one);
			return -EIO;
		}
		page_io_link(r, one);
		page_swapin_reads_again(d, 1);
		io->page++;
		io->slot++;
		io->npages--;
	}
	page_io_unlink(io);
	free(io->buf);
	free(io);
	return 0;
}

static void swapin_done(void *arg, int res)
{
	struct page_io *io = arg;
	struct region *r = io->r;
	struct daemon *d = io->d;
	size_t ps = d->page_size;
	uint64_t run = 0;

	page_swapin_reads_ended(d, io->npages);
	if (!r) {
		free(io->buf);
		free(io);
		return;
	}
	if (res < 0 && res != -EBADMSG && res != -ESTALE && res != -ECANCELED &&
	    res != -ESHUTDOWN && io->npages > 1) {
		/* A multi-page read failed: one bad slot must not take its
		 * neighbours with it.  Read each page on its own. */
		if (retry_pages(r, io) == 0)
			return;
	}
	page_io_unlink(io);

	/* Good pages go in as runs; anything else ends a run first, so that
	 * pages are settled in order. */
	for (uint32_t i = 0; i <= io->npages; i++) {
		uint64_t p = io->page + i;
		pgstate_t b = i < io->npages ? r->state[p] : 0;
		const uint8_t *data = io->buf + (size_t)i * ps;
		bool good = i < io->npages && !(b & PG_GONE) &&
			    (res == 0 || (res == -EBADMSG &&
			     swap_verify(d->swap, io->slot + i, data) == 0));
		struct readahead_stream *hold = NULL;
		bool writable = false;

		if (good && (b & PG_RA_MARK) && !(b & PG_WAITER))
			hold = marker_stream(r, p);
		/* A page whose only copy was in the compressed pool leaves
		 * it (zswap's exclusive load): mapped writable, dirty, its
		 * slot and pool entry freed, so that the pool holds no copy
		 * of a page in memory; evicted again, it is compressed
		 * again, with no disk I/O. */
		if (good && p == io->fault_page)
			writable = page_swapin_writable(r, p, io->fault_write ||
					swap_pool_exclusive(d->swap, io->slot + i));
		if (good) {
			r->stats.swap_ins++;
			d->stats.swap_ins++;
		}
		bool fault_here = good && p == io->fault_page && !writable;

		if (good && !writable && !fault_here && !(hold && !hold->held)) {
			run++;
			continue;
		}
		if (run) {
			install_run(r, p - run, run, data - run * ps);
			for (uint64_t q = p - run; q < p; q++) {
				if (pg_state(r->state[q]) != PAGE_RESIDENT)
					continue;
				if (q == io->fault_page)
					page_set_fresh(r, q); /* a WP fault counts a rewrite */
				if (r->state[q] & PG_RA_MARK)
					swapin_readahead_hit(r, q); /* the app is here already */
			}
			run = 0;
		}
		if (i == io->npages)
			break;
		if (fault_here) {
			/* The page a thread waits on: copied, mapped protected
			 * and its waiters woken in one ioctl (the kernel fault
			 * after a wake costs the thread more than the copy).
			 * Mapping it is no false reference: it is in use. */
			if (uffd_copy(r, p, 1, data) <= 0)
				install_run(r, p, 1, data);
			else
				page_swapin_installed(r, p, 1);
			if (pg_state(r->state[p]) == PAGE_RESIDENT)
				page_set_fresh(r, p); /* a WP fault counts a rewrite */
			if (r->state[p] & PG_RA_MARK)
				swapin_readahead_hit(r, p);
			continue;
		}
		if (writable) {
			/* A write fault, or a page predicted to be written
			 * soon (read-modify-write, page_swapin_writable()):
			 * map it writable at once (dirty from now, its copy
			 * stale) rather than take a write-protect fault right
			 * after.  Not while a snapshot still needs the page. */
			/* In protected first, out of flight, then writable:
			 * a successor finds either the page in flight (and
			 * reads its slot again) or resident and dirty, never a
			 * write it would lose. */
			if (uffd_copy(r, p, 1, data) <= 0) {
				install_run(r, p, 1, data); /* stays clean */
				continue;
			}
			page_swapin_installed(r, p, 1);
			page_dirtied(r, p); /* its slot is stale from now */
			page_unprotect(r, p, 1);
			continue;
		}
		if (hold) {
			/* The marker, untouched yet: held for its fault. */
			hold->held = malloc(ps);
			if (hold->held) {
				memcpy(hold->held, data, ps);
				hold->held_page = p;
				continue;
			}
			page_clear_ra_mark(r, p);
			install_run(r, p, 1, data);
			continue;
		}
		if ((b & PG_GONE) || res == -ECANCELED || res == -ESHUTDOWN) {
			/* Discarded while we read: empty now (nothing of ours
			 * reached the page cache); or the read was cut short:
			 * swapped still. */
			page_swapin_abandoned(r, p);
			uffd_wake(r->client, r->addr + p * ps, ps);
		} else {
			poison_page(r, p, res == -EBADMSG ? "failed its CRC32C check" :
					  strerror(-res));
		}
	}
	free(io->buf);
	free(io);
	if (limits_pressure(r))
		evict_kick(d);
}
