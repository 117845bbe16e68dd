/* SPDX-License-Identifier: MIT */
/*
 * Eviction (DESIGN.md §4): whenever a limit passes its high watermark,
 * victims chosen by the Clock hand leave memory until the low watermark:
 *
 *   all-zero page   punched, no I/O; it reads as zero again
 *   clean page      (a current swap copy) punched, no I/O
 *   dirty page      write-protected, written to a swap slot from pagerd's own
 *                   mapping, then punched.  A write during the write-back
 *                   un-protects at once (the application never waits for
 *                   I/O) and aborts this eviction: the page stays.
 *
 * Runs of neighbouring victims share one write-protect ioctl, one slot run
 * and one write.  Pages being written out still count as resident until
 * they are punched; the watermarks look past them so that eviction does not
 * pick more victims than needed.
 */
#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "page.h"
#include "pagerd.h"
#include "swap.h"
#include "uffd.h"
#include "tier.h"

/* Victims taken from one region in one go. */
#define EVICT_BATCH 512
/* Pages sampled (mapping dropped) per batch, at most. */
#define EVICT_SAMPLE 1024
/* Most pages being written at once: enough to keep the disk busy. */
#define EVICT_MAX_WRITEBACK 8192
/*
 * Write-back failing (a full disk, a device failing writes): the pause
 * before the next try, doubling from the first to the last while tries
 * fail; the pages one try writes; how often the log says so.
 */
#define WB_BACKOFF_MIN_MS 100
#define WB_BACKOFF_MAX_MS 10000
#define WB_PROBE_PAGES 16
#define WB_LOG_INTERVAL_MS 60000

static void on_evict(evutil_socket_t fd, short what, void *arg);

static void on_wb_retry(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	evict_kick(arg);
}

void evict_init(struct daemon *d)
{
	d->evict_ev = event_new(d->base, -1, 0, on_evict, d);
	d->wb_retry_ev = event_new(d->base, -1, 0, on_wb_retry, d);
}

static void writeback_done(void *arg, int res);

/*
 * Pages a new write-back may take now.  While write-back fails: none
 * during the pause, then one small write at a time until one succeeds —
 * not thousands of pages thrown at a disk that fails them (each failure
 * retires its slots), and no loop of writes failing as fast as they are
 * made.
 */
static uint32_t wb_allowance(const struct daemon *d)
{
	if (!d->wb_backoff_ms)
		return EVICT_BATCH;
	/* The timer is the pause: it kicks eviction when it ends. */
	if (evtimer_pending(d->wb_retry_ev, NULL) || d->writeback)
		return 0;
	return WB_PROBE_PAGES;
}

/*
 * A write-back of npages failed (res: -errno; or its slots could not be
 * recorded): those pages stay in memory, dirty.  Write-back pauses, for
 * longer each time a try after a pause fails again, and the log says so
 * once a minute at most.  Meanwhile eviction frees nothing of dirty
 * pages, so on_evict() lets resident memory exceed the limits, and the
 * faults waiting for room go on.
 */
static void wb_failed(struct daemon *d, uint64_t region, uint32_t npages, int res)
{
	uint64_t now = now_ms();
	struct timeval tv;

	d->stats.writeback_failed_pages += npages;
	if (!d->wb_logged_ms || now - d->wb_logged_ms >= WB_LOG_INTERVAL_MS) {
		char more[64] = "";

		if (d->wb_unlogged)
			snprintf(more, sizeof(more), ", %" PRIu64 " failed writes not logged",
				 d->wb_unlogged);
		log_warn("region %" PRIu64 ": writing %u pages to swap: %s; dirty pages "
			 "stay in memory, write-back pauses while it fails (%" PRIu64
			 " pages failed so far%s)", region, npages, strerror(-res),
			 d->stats.writeback_failed_pages, more);
		d->wb_logged_ms = now;
		d->wb_unlogged = 0;
		d->wb_said = true;
	} else {
		d->wb_unlogged++;
	}
	/* Writes made before the pause, failing during it: one failure. */
	if (d->wb_backoff_ms && evtimer_pending(d->wb_retry_ev, NULL))
		return;
	d->wb_backoff_ms = !d->wb_backoff_ms ? WB_BACKOFF_MIN_MS :
			   d->wb_backoff_ms >= WB_BACKOFF_MAX_MS / 2 ? WB_BACKOFF_MAX_MS :
			   d->wb_backoff_ms * 2;
	tv.tv_sec = d->wb_backoff_ms / 1000;
	tv.tv_usec = (d->wb_backoff_ms % 1000) * 1000;
	evtimer_add(d->wb_retry_ev, &tv);
}

/* A write-back succeeded: write-back works (again). */
static void wb_worked(struct daemon *d)
{
	if (!d->wb_backoff_ms)
		return;
	d->wb_backoff_ms = 0;
	if (d->wb_said)
		log_notice("swap writes work again (%" PRIu64 " pages failed so far)",
			   d->stats.writeback_failed_pages);
	d->wb_said = false;
}

/*
 * Writes the dirty pages [page, page+n) (already write-protected) to swap,
 * as few writes as the slot allocator allows.  Returns the pages for which
 * a write is in flight; the others (no swap, swap full, errors) are
 * un-protected again and stay.
 */
static uint64_t writeback_run(struct region *r, uint64_t page, uint64_t n)
{
	struct daemon *d = r->client->d;
	size_t ps = d->page_size;
	uint64_t started = 0;

	/* The slot array now, not when the writes complete: a page whose
	 * copy cannot be recorded must not be punched (writeback_done). */
	if (!r->slot && region_set_slot(r, page, -1) < 0) {
		page_unprotect(r, page, n);
		return 0;
	}
	while (n) {
		uint64_t first;
		uint32_t got;
		struct page_io *io;
		struct swap_tag tags[EVICT_BATCH];
		uint32_t allow = wb_allowance(d);
		uint32_t want = n > allow ? allow : (uint32_t)n;
		int e = !want ? -EAGAIN :
			d->swap ? swap_alloc(d->swap, want, &first, &got) : -ENOSPC;

		if (e < 0)
			break;
		io = calloc(1, sizeof(*io));
		if (!io) {
			swap_free(d->swap, first, got);
			break;
		}
		for (uint32_t i = 0; i < got; i++)
			tags[i] = (struct swap_tag){ .region = r->id, .page = page + i };
		io->d = d;
		io->write = true;
		io->page = page;
		io->npages = got;
		io->slot = first;
		e = swap_write(d->swap, first, r->map + page * ps, got, tags,
			       writeback_done, io);
		if (e < 0) {
			swap_free(d->swap, first, got);
			free(io);
			break;
		}
		page_io_link(r, io);
		page_writeback_started(r, page, got);
		started += got;
		page += got;
		n -= got;
	}
	if (n)
		page_unprotect(r, page, n);
	return started;
}

/*
 * Punches [page, page+n) that now live in their slots (or are zero).  The
 * state changes first: a successor that finds a swapped page still in the
 * memfd punches it (fdstore.c), while a resident page found punched can
 * then only be one the client discarded.
 */
static void punch_run(struct region *r, uint64_t page, uint64_t n,
		      enum page_state to)
{
	int e;

	if (to == PAGE_EMPTY)
		page_zero_evicted(r, page, n);
	else
		page_swapped_out(r, page, n);
	e = region_punch(r, page, n);
	if (e < 0) {
		/* The data is still in memory, and correct: only the
		 * eviction failed, and its client is being dropped for
		 * it (region_punch()).  Keep the pages (and any slots). */
		page_evict_undone(r, page, n);
	}
}

static void writeback_done(void *arg, int res)
{
	struct page_io *io = arg;
	struct daemon *d = io->d;
	struct region *r = io->r;
	uint64_t run = 0;
	uint32_t unrecorded = 0;
	int unrecorded_err = 0;

	if (!r) {
		/* The region went while we wrote: the slots were never its,
		 * and its mapping was kept for us until now. */
		if (d->swap)
			swap_free(d->swap, io->slot, io->npages);
		page_io_release(io);
		free(io);
		return;
	}
	page_io_unlink(io);
	for (uint32_t i = 0; i <= io->npages; i++) {
		uint64_t p = io->page + i;
		pgstate_t b = i < io->npages ? r->state[p] : 0;
		bool keep = i == io->npages || res < 0 ||
			    (b & (PG_REDIRTY | PG_GONE));

		if (!keep) {
			int e;

			/* Written and untouched since: it lives in the
			 * slot now that the slot is recorded.  Punched
			 * below with its neighbours. */
			region_drop_slot(r, p); /* none expected: never leak one */
			e = region_set_slot(r, p, (int64_t)(io->slot + i));
			if (e == 0) {
				run++;
				continue;
			}
			/* A copy nobody knows of: punched, the page would
			 * be lost.  It stays, dirty; its slot is freed. */
			unrecorded++;
			unrecorded_err = e;
		}
		if (run) {
			punch_run(r, p - run, run, PAGE_SWAPPED);
			r->stats.swap_outs += run;
			r->stats.evict_dirty += run;
			d->stats.swap_outs += run;
			d->stats.evict_dirty += run;
			/* A failed punch left them resident: keep the copy
			 * then, they are clean. */
			run = 0;
		}
		if (i == io->npages)
			break;
		if (d->swap)
			swap_free(d->swap, io->slot + i, 1);
		/* Kept: still resident and dirty (or discarded: empty). */
		page_writeback_ended(r, p);
		if ((b & PG_REDIRTY) && !(b & PG_GONE)) {
			r->stats.evict_aborted++;
			d->stats.evict_aborted++;
		}
	}
	if (res < 0)
		wb_failed(d, r->id, io->npages, res);
	else if (unrecorded)
		wb_failed(d, r->id, unrecorded, unrecorded_err);
	else
		wb_worked(d);
	free(io);
	evict_kick(d);
}

/*
 * Victims with a gap of at most this many pages between them are protected
 * and punched in one call when nothing in the gap is in memory: every call
 * flushes the TLB of each CPU that runs the client (an interrupt, costly in
 * a VM), and the victims of random access come one page at a time.
 */
#define EVICT_GAP_MAX 64

/* Whether [a, b) holds nothing a write protection or a punch could touch:
 * no page in memory (a hole, or data in a slot or an image), no I/O. */
static bool inert_gap(const struct region *r, uint64_t a, uint64_t b)
{
	if (b - a > EVICT_GAP_MAX)
		return false;
	for (uint64_t p = a; p < b; p++) {
		pgstate_t s = r->state[p];

		if ((pg_state(s) != PAGE_SWAPPED && pg_state(s) != PAGE_EMPTY) ||
		    (s & (PG_IO | PG_READING)))
			return false;
	}
	return true;
}

/* The more hopeful of two reasons for taking nothing (enum evict_status
 * lists them most hopeful first). */
static void idle_because(enum evict_status *idle, enum evict_status why)
{
	if (why < *idle)
		*idle = why;
}

/* Dirty victims v[0..n) (one group), write-protected: zero pages are
 * punched, the others written out.  Returns the pages on their way; the
 * write-back's ceiling reached is noted in *idle. */
static uint64_t evict_dirty(struct region *r, const uint64_t *v, size_t n,
			    enum evict_status *idle)
{
	struct daemon *d = r->client->d;
	size_t ps = d->page_size;
	uint64_t freed = 0;

	/* From here no write reaches these pages without a fault we handle
	 * after this: zero pages can go. */
	for (size_t i = 0; i < n;) {
		bool zero = page_is_zero(r->map + v[i] * ps, ps);
		size_t j = i + 1;

		while (j < n && v[j] == v[j - 1] + 1 &&
		       page_is_zero(r->map + v[j] * ps, ps) == zero)
			j++;
		if (zero) {
			punch_run(r, v[i], j - i, PAGE_EMPTY);
			r->stats.evict_zero += j - i;
			d->stats.evict_zero += j - i;
			freed += j - i;
		} else if (d->writeback < EVICT_MAX_WRITEBACK) {
			freed += writeback_run(r, v[i], j - i);
		} else {
			/* Completions bring us back. */
			idle_because(idle, EVICT_IO);
			page_unprotect(r, v[i], j - i);
		}
		i = j;
	}
	return freed;
}

/*
 * Evicts the victims of one region (sorted by page): clean pages are
 * punched, dirty ones write-protected and checked for zero (punched) or
 * written out.  Victims of a kind go in groups (see EVICT_GAP_MAX).
 * Returns the pages that left or are on their way; why others could not
 * go yet is noted in *idle.
 */
static uint64_t evict_victims(struct region *r, uint64_t *v, size_t n,
			      enum evict_status *idle)
{
	struct daemon *d = r->client->d;
	uint64_t freed = 0;
	int e;

	for (size_t i = 0; i < n;) {
		size_t j = i + 1;
		bool clean = region_slot(r, v[i]) >= 0;

		while (j < n && (region_slot(r, v[j]) >= 0) == clean &&
		       (v[j] == v[j - 1] + 1 || inert_gap(r, v[j - 1] + 1, v[j])))
			j++;
		uint64_t first = v[i], span = v[j - 1] + 1 - first;

		if (clean) {
			/* Write-protected since their copy was made: no
			 * write can have slipped in.  Swapped before the
			 * punch, as in punch_run().  The compressed pool
			 * keeps a copy (tier.h). */
			for (size_t k = i; k < j; k++) {
				if (d->swap)
					swap_pool_cache(d->swap, (uint64_t)region_slot(r, v[k]),
							r->map + v[k] * d->page_size);
				page_swapped_out(r, v[k], 1);
			}
			e = region_punch(r, first, span);
			if (e < 0) {
				/* Still in memory, and correct: keep them
				 * (the client is being dropped for it). */
				for (size_t k = i; k < j; k++)
					page_evict_undone(r, v[k], 1);
			} else {
				r->stats.evict_clean += j - i;
				d->stats.evict_clean += j - i;
				freed += j - i;
			}
		} else if ((e = uffd_writeprotect(r, first, span, true)) == -EAGAIN) {
			/* An event is unread: try again once the loop has
			 * read it. */
			idle_because(idle, EVICT_BLOCKED);
		} else if (e < 0) {
			/* (The client unmapped them: they stay.) */
			log_debug("region %" PRIu64 ": write-protecting %" PRIu64 "+%" PRIu64 ": %s",
				  r->id, first, span, strerror(-e));
		} else {
			freed += evict_dirty(r, v + i, j - i, idle);
		}
		i = j;
	}
	return freed;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Pages whose references are read from the client's page tables at a
 * time: 8 KiB of /proc/PID/pagemap. */
#define REF_CHUNK 1024

/*
 * The Clock hand's reference information: a page whose PTE is present in
 * the client has been used since the hand last passed (and dropped its
 * mapping), or since it was put in unmapped.  Reads the client's pagemap
 * for [from, from+n) and marks those pages referenced.  One that comes
 * back after a drop is hot (PG_HOT_*); a read-ahead page's first use is a
 * readahead hit, and proves nothing more (a stream uses each page once).
 */
static void refresh_refs(struct region *r, uint64_t from, uint64_t n)
{
	struct daemon *d = r->client->d;
	uint64_t pm[REF_CHUNK];
	ssize_t got;

	if (r->client->pagemap < 0 || n == 0)
		return;
	got = pread(r->client->pagemap, pm, n * sizeof(pm[0]),
		    (off_t)((r->addr / d->page_size + from) * sizeof(pm[0])));
	for (ssize_t i = 0; i < got / (ssize_t)sizeof(pm[0]); i++) {
		uint64_t p = from + (uint64_t)i;
		pgstate_t b = r->state[p];

		if (!(pm[i] >> 63) || pg_state(b) != PAGE_RESIDENT ||
		    (b & (PG_REF | PG_READING)))
			continue;
		if (page_ra_used(r, p)) {
			r->stats.readahead_hits++;
			d->stats.readahead_hits++;
		} else {
			page_hot(r, p);
		}
	}
}

/* The status of an eviction that took `got` of `want`; idle: why, if it
 * took nothing. */
static enum evict_status evict_result(uint64_t got, uint64_t want,
				      enum evict_status idle)
{
	if (got >= want)
		return EVICT_DONE;
	return got ? EVICT_MORE : idle;
}

/* Takes up to `want` pages out of r; adds those that left (or are being
 * written out) to *freed.  Returns how it ended. */
static enum evict_status evict_region(struct region *r, uint64_t want,
				      uint64_t *freed)
{
	struct daemon *d = r->client->d;
	static uint64_t victims[EVICT_BATCH], sample[EVICT_SAMPLE];
	bool clock = d->cfg.policy == CONFIG_POLICY_CLOCK && !r->ref_blind;
	/* PTEs tell references only where an agent drops them. */
	bool refs = clock && r->client->agent >= 0 && r->client->pagemap >= 0;
	size_t nsample = 0, nv = 0;
	uint64_t budget = r->npages * 2, looked = 0, got = 0, asked = want;
	bool agent_full = false;
	enum evict_status idle = EVICT_STUCK;

	if (clock && r->client->agent >= 0 && r->client->pagemap < 0 &&
	    !r->client->pagemap_warned) {
		r->client->pagemap_warned = true;
		log_info("client %" PRIu64 ": cannot read its page tables (pid %d): eviction of its pages has less to go by",
			 r->client->id, (int)r->client->cred.pid);
	}
	if (want > EVICT_BATCH)
		want = EVICT_BATCH;
	if (r->client->dead)
		return EVICT_BLOCKED; /* going at this turn, with its pages */
	if (!(r->client->uffd_features & UFFD_FEATURE_WP_HUGETLBFS_SHMEM))
		return EVICT_STUCK; /* no write-protect on shmem: no safe eviction */
	/*
	 * The hand moves a chunk at a time, reading the references of the
	 * chunk ahead first, and sends the chunk's drops after it.  It goes
	 * on within the budget, unless the agent's socket is full (then the
	 * pages keep their references, and so may we find no victim).
	 */
	while (nv < want && looked < budget) {
		uint64_t chunk = budget - looked, h0 = r->hand, moved;

		if (chunk > REF_CHUNK)
			chunk = REF_CHUNK;
		if (chunk > r->npages)
			chunk = r->npages;
		if (h0 >= r->npages)
			h0 = r->hand = 0;
		if (refs) {
			/* Not past pages whose drops the agent has not done. */
			uint64_t room = agent_fence_room(r);

			if (room < chunk) {
				idle_because(&idle, EVICT_FENCED);
				if (!room)
					break;
				chunk = room;
			}
		}
		if (refs) {
			uint64_t tail = r->npages - h0 < chunk ? r->npages - h0 : chunk;

			refresh_refs(r, h0, tail);
			refresh_refs(r, 0, chunk - tail);
		}
		nv += clock_scan(r->state, r->npages, &r->hand, clock, want - nv,
				 chunk, victims + nv, sample, &nsample, EVICT_SAMPLE);
		moved = (r->hand + r->npages - h0) % r->npages;
		looked += moved ? moved : chunk;
		if (nsample) {
			/* Sent before the hand can come round to them again. */
			size_t sent = agent_drop(r, sample, nsample);

			for (size_t i = sent; i < nsample; i++)
				page_referenced(r, sample[i]);
			if (sent < nsample) {
				agent_full = true;
				break;
			}
			nsample = 0;
		}
	}
	/*
	 * Two turns and every page still referenced: references cannot be
	 * trusted here (a client whose agent does not drop keeps every PTE).
	 * The next turn goes by FIFO, so that no client holds its pages
	 * past a limit that way.
	 */
	r->ref_blind = !nv && clock && (looked >= budget || agent_full);
	/*
	 * So does a turn after one that found nothing because the agent
	 * takes no more drops (stopped, hung, or far behind: its socket is
	 * full).  References only steer which page goes; the limit holds
	 * whatever the agent does.  That turn runs at once: this one found
	 * nothing, but is no sign that nothing can be evicted.
	 */
	if (r->ref_blind)
		idle_because(&idle, EVICT_BLOCKED);
	if (nv) {
		qsort(victims, nv, sizeof(victims[0]), cmp_u64);
		/* A hand that went round more than once found some pages
		 * twice. */
		size_t k = 1;
		for (size_t i = 1; i < nv; i++)
			if (victims[i] != victims[k - 1])
				victims[k++] = victims[i];
		got = evict_victims(r, victims, k, &idle);
	} else if (idle == EVICT_STUCK) {
		/*
		 * A whole turn found no page to take.  Readahead markers held
		 * for the application's fault count resident and are no
		 * victims (their I/O state): held in a region at a 1-page
		 * limit, they were all it had, and its faults waited for good.
		 * Their slots still hold the data: they go back to swap.
		 */
		got = swapin_drop_markers(r, want);
	}
	/* Reads in flight become pages to take; write-backs, room. */
	if (!got && r->ios)
		idle_because(&idle, EVICT_IO);
	*freed += got;
	/* (Against what was asked, not the batch: more batches to come.) */
	return evict_result(got, asked, idle);
}

/* Pages region r can give now (write-backs in flight are leaving). */
static uint64_t evictable(const struct region *r)
{
	return r->resident > r->writeback ? r->resident - r->writeback : 0;
}

/* The client the walk over everyone starts from: one further each turn,
 * so no client's place in the list makes it pay first every time. */
static struct client *walk_start(struct daemon *d)
{
	struct client *o = d->clients;

	for (uint64_t n = d->nclients ? d->evict_rr % d->nclients : 0; n && o; n--)
		o = o->next;
	return o ? o : d->clients;
}

/*
 * Evicts `want` pages from the regions of one client (c) or of everyone
 * (c NULL); adds what left to *freed.  Each region gives a share in
 * proportion to the pages it holds, so every region under the limit
 * loses the same part of its pages and its own Clock picks which: a
 * limit over many clients takes from all of them, not from the first
 * ones in the list every turn (those lost even their hot pages while the
 * rest kept whole regions).  Returns how it ended (for nothing taken:
 * the most hopeful region's).
 */
static enum evict_status evict_from(struct daemon *d, struct client *c,
				    uint64_t want, uint64_t *freed)
{
	uint64_t took = 0;
	bool progress = true;
	enum evict_status idle = EVICT_STUCK;

	while (took < want && progress && !d->ndead) {
		struct client *first = c ? c : walk_start(d);
		uint64_t held = 0, left = want - took;

		progress = false;
		for (struct client *o = d->clients; o; o = o->next)
			for (size_t k = 0; k < o->nregions; k++)
				if (!c || o == c)
					held += evictable(o->regions[k]);
		/* Every client once, from `first` round to the one before it. */
		for (struct client *o = first; o && took < want && !d->ndead;) {
			for (size_t k = 0; k < o->nregions && took < want && !d->ndead; k++) {
				struct region *r = o->regions[(d->evict_rr + k) % o->nregions];
				uint64_t got = 0, share;

				if (!r->resident)
					continue;
				if (!evictable(r)) {
					idle_because(&idle, EVICT_IO);
					continue;
				}
				/* Rounded up: every holding region gives at least one. */
				share = (uint64_t)(((unsigned __int128)left * evictable(r) +
						    held - 1) / held);
				if (share > want - took)
					share = want - took;
				idle_because(&idle, evict_region(r, share, &got));
				took += got;
				progress |= got > 0;
			}
			if (c)
				break;
			o = o->next ? o->next : d->clients;
			if (o == first)
				break;
		}
		d->evict_rr++;
	}
	*freed += took;
	return evict_result(took, want, idle);
}

/* Eviction for one limit: up to its excess, unless write-back is at its
 * ceiling (its completions run eviction again). */
static enum evict_status evict_limit(struct daemon *d, struct client *c,
				     struct region *r, uint64_t *freed)
{
	struct limit_use lu;
	uint64_t spilled;

	limits_get(d, c, r, &lu);
	if (!lu.excess)
		return EVICT_DONE;
	/* The compressed pool gives back its part first: the spills'
	 * completions run eviction again. */
	spilled = tier_shrink(d, c, r, &lu);
	if (spilled >= lu.excess)
		return EVICT_IO;
	lu.excess -= spilled;
	/* (A client's limit takes its clean and zero pages still.) */
	if (!c || r) {
		if (d->writeback >= EVICT_MAX_WRITEBACK)
			return EVICT_IO;
	}
	return r ? evict_region(r, lu.excess, freed) : evict_from(d, c, lu.excess, freed);
}

/* Whether faults wait for room under the limit of r, else c, else the
 * daemon's (limits_evicted() lets a stuck limit go only then). */
static bool faults_wait(struct daemon *d, struct client *c, struct region *r)
{
	bool waiting = false;

	if (r || c)
		return fault_parked_in(r ? r->client : c, PARK_ROOM, r);
	for (struct client *o = d->clients; o && !waiting; o = o->next)
		waiting = o->nparked_for[PARK_ROOM] != 0;
	return waiting;
}

static void evicted(struct daemon *d, struct client *c, struct region *r,
		    enum evict_status st)
{
	limits_evicted(d, c, r, st, st == EVICT_STUCK && faults_wait(d, c, r));
}

/*
 * One round of eviction, as Valkey's performEvictions(): every limit past
 * its high watermark — each region's, each client's, the daemon's — sheds
 * pages down to its low watermark, and learns how that ended
 * (limits_evicted(): a limit under which nothing can be evicted while
 * faults wait for room is let go, that limit alone).  Then the faults
 * waiting for room are retried.  The round reschedules itself by the
 * statuses:
 *
 *   MORE, BLOCKED   at the next turn of the loop (after the loop has
 *                   served other events, faults among them)
 *   FENCED          in 2 ms, for an agent that never answers (its answer
 *                   kicks eviction sooner)
 *   DONE, IO, STUCK not: a write-back's or swap-in's completion, a fault
 *                   past a high watermark, a freed slot, a new limit, the
 *                   end of a write-back pause kick it
 */
static void on_evict(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	enum evict_status st;
	uint64_t freed = 0;
	bool again = false, fenced = false;

	(void)fd;
	(void)what;
	/*
	 * A client being dropped (its memfd refused a punch) still counts its
	 * pages: evicting others to make up for them is what it must not
	 * achieve.  Its teardown runs first at the next turn; so does this
	 * round then.
	 */
	if (d->ndead) {
		evict_kick(d);
		return;
	}
	for (struct client *c = d->clients; c && !d->ndead; c = c->next) {
		for (size_t i = 0; i < c->nregions && !d->ndead; i++) {
			st = evict_limit(d, c, c->regions[i], &freed);
			evicted(d, c, c->regions[i], st);
			again |= st == EVICT_MORE || st == EVICT_BLOCKED;
			fenced |= st == EVICT_FENCED;
		}
		if (d->ndead)
			break;
		st = evict_limit(d, c, NULL, &freed);
		evicted(d, c, NULL, st);
		again |= st == EVICT_MORE || st == EVICT_BLOCKED;
		fenced |= st == EVICT_FENCED;
	}
	if (!d->ndead) {
		st = evict_limit(d, NULL, NULL, &freed);
		evicted(d, NULL, NULL, st);
		again |= st == EVICT_MORE || st == EVICT_BLOCKED;
		fenced |= st == EVICT_FENCED;
	}
	if (d->ndead) {
		evict_kick(d);
		return;
	}
	if (!freed && (again || fenced))
		log_debug("evict: nothing freed yet (resident %" PRIu64 ", writeback %" PRIu64
			  ", reading %" PRIu64 ")%s", d->resident, d->writeback, d->reading,
			  fenced ? ", waiting for the agent" : "");
	fault_retry_room(d);
	if (again) {
		evict_kick(d);
	} else if (fenced) {
		/* The agent's answer kicks us; this is for one that never
		 * comes (agent_fence_room() stops waiting for it). */
		static const struct timeval soon = { 0, 2000 };

		evtimer_add(d->evict_ev, &soon);
	}
}
