/* SPDX-License-Identifier: MIT */
/*
 * Copy-on-write snapshots of a live region, and lazy restore from an image
 * (DESIGN.md §6).
 *
 * Snapshot.  Write protection over the whole region makes the instant of
 * the snapshot: from then on no write reaches a page without a fault we
 * see first.  Protecting a GiB takes the kernel tens of milliseconds (a
 * walk of every PTE), and writers must not wait that long, so it takes two
 * steps.  First a thread protects the whole region while the loop goes on
 * serving faults as if no snapshot ran: a write to a page already passed
 * is un-protected at once and lands before the instant, and every page the
 * loop makes writable meanwhile is noted.  Then, on the loop, the noted
 * pages (the few that writers touched during the walk) are protected again:
 * the end of that is the instant, and its length the pause.  The cut is
 * consistent: a write that waits on a protected page has not happened, so
 * nothing written later can be in the image without it.
 *
 * Every page that held data at that instant (resident, in
 * swap, or still in the image the region was restored from) is marked
 * pending; a copier working in the background, a batch per loop turn,
 * writes each pending page to the image at its offset: from pagerd's
 * mapping for a resident page, through the swap store (io_uring, CRC
 * checked) for a swapped one.  A write fault on a pending page copies that
 * page first, then lets the write through.  Pages that were empty stay
 * holes.
 *
 * The rule that makes the image one cut: a pending page keeps its content
 * of the instant until it is copied.  Every path that is about to empty a
 * page (a discard, a zero eviction, the client's own punch found out),
 * free the swap slot that holds its data, or let a write reach it (an
 * un-protect, a zero-fill or a writable install) is a transition of page.c,
 * which calls page_before_change() first (the region's watch), which copies each pending page from wherever its data is — from
 * memory into a bounce buffer, from the restore image, or, for data only
 * in a swap slot, by taking the slot over until the copier has read it —
 * or records it as a hole if it reads as zero.  A write-protect fault is
 * just one of those paths.  Eviction otherwise needs no special case: an
 * evicted page is still the same data, now in its slot.
 *
 * The image fd comes from the client (it opened the file, with its own
 * rights), which also syncs the image and writes the sidecar once we say
 * the copy is complete: a snapshot cut short leaves no sidecar, and so
 * never looks complete.
 *
 * Restore.  A region created for an image gets the image fd; its pages
 * with data (SEEK_DATA) are marked PG_IMAGE and read from the image on
 * their first fault — holes are plain empty pages, zero-filled with no
 * I/O — and, unless the client asked otherwise, prefetched in the
 * background within the region's limits.
 */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <liburing.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fdstore.h"
#include "log.h"
#include "page.h"
#include "pagerd.h"
#include "swap.h"

/* Pages copied from memory per loop turn; slot reads in flight at most. */
#define SNAP_BATCH 4096
/* Most pages one write of resident pages covers, and how many such
 * bounce buffers may be in flight (SNAP_RUN pages each). */
#define SNAP_RUN 256
#define SNAP_BUFS 8
/* One-page buffers for copies before a write, after the run buffers. */
#define SNAP_COW_BUFS 240
#define SNAP_READS_MAX 16
#define SNAP_READ_PAGES 64
/* Restore prefetch: pages read per loop turn, and room it leaves. */
#define PREFETCH_BATCH 256
#define PREFETCH_SPARE 1024
/* Restore readahead on sequential faults, pages. */
#define RESTORE_AROUND 64

/* Swap slots the snapshot took over from pages that changed before it read
 * them (page_before_change()): [page, page+n) in [slot, slot+n). */
struct held_run {
	uint64_t page, slot;
	uint32_t n;
};

struct snapshot {
	struct region *r;     /* NULL once the region is gone */
	struct daemon *d;
	struct client *waiter; /* for the start's reply, until the instant */
	/* Step one: the protecting thread, with its own dup of the uffd. */
	bool protecting;
	pthread_t protector;
	int protect_uffd, protect_efd, protect_err;
	uint64_t protect_addr, protect_len, protect_ns;
	struct event *protect_ev;
	uint64_t *reprotect;  /* bit per page: made writable during step one */
	int fd;
	uint64_t *pending;    /* bit per page: still to be copied */
	uint64_t total, done, cursor;
	/* Held slots: each page counts as done once read and written; the
	 * runs before held_next have their reads in flight. */
	struct held_run *held;
	size_t nheld, held_next, held_cap;
	uint64_t lost;        /* pages the client punched before we copied them */
	uint64_t pause_ns;
	int status;
	bool finished;
	unsigned reads;       /* reads and writes in flight (they hold a reference) */
	struct event *ev;
	/* Image writes go through their own small io_uring, from bounce
	 * buffers: the data is captured (memcpy) when a run is copied, so
	 * the page may change while the write is in flight, and the loop
	 * never waits for the disk. */
	struct io_uring ring;
	bool ring_ok;
	int efd;
	struct event *efd_ev;
	uint8_t *buf[SNAP_BUFS + SNAP_COW_BUFS];
	unsigned buf_refs[SNAP_BUFS + SNAP_COW_BUFS];
};

struct snap_read {
	struct snapshot *s;
	uint64_t page, slot;
	uint32_t n;
	bool held;            /* slots of s->held: ours to free */
	uint8_t *buf;
};

static bool bit(const uint64_t *m, uint64_t i)
{
	return (m[i / 64] >> (i % 64)) & 1;
}

static void bit_clr(uint64_t *m, uint64_t i)
{
	m[i / 64] &= ~(1ull << (i % 64));
}

static void bit_set(uint64_t *m, uint64_t i)
{
	m[i / 64] |= 1ull << (i % 64);
}

/* Pages the loop made writable (mapped without write protection, or
 * un-protected) while a snapshot's write-protection pass runs. */
static void snapshot_note_writable(struct region *r, uint64_t page, uint64_t n)
{
	struct snapshot *s = r->snap;

	if (!s || !s->protecting)
		return;
	for (uint64_t i = page; i < page + n && i < r->npages; i++)
		bit_set(s->reprotect, i);
}

bool snapshot_pending(const struct region *r, uint64_t page)
{
	const struct snapshot *s = r->snap;

	return s && !s->finished && bit(s->pending, page);
}

static void protect_join(struct snapshot *s);

static void snap_free(struct snapshot *s)
{
	protect_join(s);
	free(s->reprotect);
	if (s->efd_ev)
		event_free(s->efd_ev);
	if (s->ring_ok)
		io_uring_queue_exit(&s->ring);
	if (s->efd >= 0)
		close(s->efd);
	for (unsigned i = 0; i < SNAP_BUFS + SNAP_COW_BUFS; i++)
		free(s->buf[i]);
	if (s->ev)
		event_free(s->ev);
	if (s->fd >= 0)
		close(s->fd);
	free(s->pending);
	free(s->held);
	free(s);
}

/* Gives back held slots: not when handing over (a successor frees every
 * slot no page claims). */
static void free_held_slots(struct snapshot *s, uint64_t slot, uint32_t n)
{
	if (s->d->swap && !s->d->handover)
		swap_free(s->d->swap, slot, n);
}

/*
 * The snapshot no longer needs its protection: take it off the pages that
 * do not need it for themselves (dirty ones: no swap copy to keep true,
 * no write-back running), so their next write is not a fault.
 */
static void unprotect_dirty(struct region *r)
{
	for (uint64_t p = 0; p < r->npages;) {
		uint64_t n = 0;

		while (p + n < r->npages && pg_state(r->state[p + n]) == PAGE_RESIDENT &&
		       !(r->state[p + n] & PG_IO) && region_slot(r, p + n) < 0)
			n++;
		if (n) {
			if (page_unprotect(r, p, n) < 0)
				return; /* an event is unread: they fault once instead */
			p += n;
		} else {
			p++;
		}
	}
}

static void snap_finish(struct snapshot *s, int status)
{
	if (s->finished)
		return;
	s->finished = true;
	s->status = status;
	/* Held slots whose reads never started: nothing wants them now. */
	for (size_t i = s->held_next; i < s->nheld; i++)
		free_held_slots(s, s->held[i].slot, s->held[i].n);
	s->nheld = s->held_next = 0;
	if (s->r && s->lost)
		log_warn("region %" PRIu64 ": snapshot: %" PRIu64 " pages were punched by the client (MADV_REMOVE) before they were copied: holes in the image",
			 s->r->id, s->lost);
	if (s->r)
		unprotect_dirty(s->r);
	if (s->r)
		log_info("region %" PRIu64 ": snapshot %s: %" PRIu64 " of %" PRIu64 " pages copied",
			 s->r->id, status ? strerror(-status) : "complete",
			 s->done, s->total);
	/*
	 * Image writes a failing batch queued but did not submit yet (the
	 * copier returns at its first error): submitted now, while their fd
	 * is still open.  Each holds a reference (s->reads) that only its
	 * completion drops; left in the ring they never complete, the
	 * snapshot never reports done and is never freed (its ring and
	 * eventfd leak), and a later submit would write through an fd
	 * number that by then names another file.
	 */
	if (s->ring_ok)
		io_uring_submit(&s->ring);
	close(s->fd);
	s->fd = -1;
}

/* Writes n pages from buf to the image at page `page`; all-zero pages stay
 * holes (the image starts as one hole of the region's size).  0 or -errno. */
static int image_write(struct snapshot *s, uint64_t page, const void *buf,
		       uint64_t n)
{
	size_t ps = s->d->page_size, len = n * ps, off = 0;

	if (n == 1 && page_is_zero(buf, ps))
		return 0;

	while (off < len) {
		ssize_t w = pwrite(s->fd, (const uint8_t *)buf + off, len - off,
				   (off_t)(page * ps + off));

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		off += (size_t)w;
	}
	return 0;
}

static void snap_kick(struct snapshot *s);

/* Queues one write of len bytes at image offset off from bounce buffer b.
 * The completion (on_image_written) drops the buffer's reference. */
static int queue_write(struct snapshot *s, unsigned b, const uint8_t *from,
		       size_t len, uint64_t off)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);

	if (!sqe) {
		io_uring_submit(&s->ring);
		sqe = io_uring_get_sqe(&s->ring);
		if (!sqe)
			return -EBUSY;
	}
	io_uring_prep_write(sqe, s->fd, from, (unsigned)len, off);
	/* The buffer and the length, to check for short writes. */
	io_uring_sqe_set_data64(sqe, (uint64_t)b | ((uint64_t)len << 8));
	s->buf_refs[b]++;
	s->reads++;
	return 0;
}

/*
 * Copies n pages from src into a free bounce buffer and queues their
 * writes at image page `page` (one per stretch of non-zero pages: zero
 * pages stay holes).  Returns 1 when queued, 0 when no buffer is free (try
 * after a completion), or -errno.
 */
static int queue_pages(struct snapshot *s, uint64_t page, const uint8_t *src,
		       uint64_t n)
{
	size_t ps = s->d->page_size;
	unsigned b;

	for (b = 0; b < SNAP_BUFS && s->buf_refs[b]; b++)
		;
	if (b == SNAP_BUFS)
		return 0;
	if (!s->buf[b] && !(s->buf[b] = aligned_alloc(ps, SNAP_RUN * ps)))
		return -ENOMEM;
	memcpy(s->buf[b], src, n * ps);
	for (uint64_t i = 0; i < n;) {
		uint64_t j = i;

		while (j < n && !page_is_zero(s->buf[b] + j * ps, ps))
			j++;
		if (j > i) {
			int e = queue_write(s, b, s->buf[b] + i * ps, (j - i) * ps,
					    (page + i) * ps);

			if (e < 0)
				return e;
		}
		i = j + 1;
	}
	return 1;
}

/* The resident pages [page, page+n), from pagerd's mapping. */
static int copy_run(struct snapshot *s, uint64_t page, uint64_t n)
{
	return queue_pages(s, page, s->r->map + page * s->d->page_size, n);
}

/* Pages read from swap: queued like resident ones, or written here when
 * every buffer is in flight.  0 or -errno. */
static int write_read_pages(struct snapshot *s, uint64_t page, const uint8_t *src,
			    uint64_t n)
{
	int e = queue_pages(s, page, src, n);

	if (e > 0) {
		io_uring_submit(&s->ring);
		return 0;
	}
	return e < 0 ? e : image_write(s, page, src, n);
}

/* Accounts for one image write that completed. */
static void image_written(struct snapshot *s, struct io_uring_cqe *cqe)
{
	uint64_t data = io_uring_cqe_get_data64(cqe);
	unsigned b = (unsigned)(data & 0xff);
	int res = cqe->res;

	io_uring_cqe_seen(&s->ring, cqe);
	s->buf_refs[b]--;
	s->reads--;
	if (res < 0 || (uint64_t)res != data >> 8)
		snap_finish(s, res < 0 ? res : -EIO);
}

static void on_image_written(evutil_socket_t fd, short what, void *arg)
{
	struct snapshot *s = arg;
	struct io_uring_cqe *cqe;
	uint64_t v;

	(void)what;
	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_debug("snapshot eventfd: %m");
	while (io_uring_peek_cqe(&s->ring, &cqe) == 0)
		image_written(s, cqe);
	if (!s->r) {
		if (!s->reads)
			snap_free(s); /* the region went; we were the last */
		return;
	}
	snap_kick(s);
}

static void mark_copied(struct snapshot *s, uint64_t page, uint64_t n)
{
	for (uint64_t i = page; i < page + n; i++) {
		if (bit(s->pending, i)) {
			bit_clr(s->pending, i);
			s->done++;
		}
	}
}

/* Reads n pages of a restore image into buf.  0 or -errno. */
static int image_read(int fd, uint64_t off, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t k = pread(fd, (uint8_t *)buf + got, len - got, (off_t)(off + got));

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return k < 0 ? -errno : -EIO;
		got += (size_t)k;
	}
	return 0;
}

/*
 * Copies the pending resident pages [page, page+n) from pagerd's mapping,
 * where each holds its content of the instant (it has been protected
 * since).  The data is captured in bounce buffers and the disk writes
 * follow (all-zero pages stay holes); with every buffer in flight, a page
 * is written here.  The pages are done afterwards.  0 or -errno.
 */
static int save_memory(struct snapshot *s, uint64_t page, uint64_t n)
{
	size_t ps = s->d->page_size;
	const uint8_t *src = s->r->map + page * ps;
	int e = 0;

	/* A run: one buffer of the copier's, if one is free. */
	if (n > 1 && (e = queue_pages(s, page, src, n)) != 0) {
		if (e < 0)
			return e;
		io_uring_submit(&s->ring);
		mark_copied(s, page, n);
		return 0;
	}
	for (uint64_t i = 0; i < n; i++, src += ps) {
		unsigned b;

		if (page_is_zero(src, ps)) {
			mark_copied(s, page + i, 1); /* a hole */
			continue;
		}
		for (b = SNAP_BUFS; b < SNAP_BUFS + SNAP_COW_BUFS && s->buf_refs[b]; b++)
			;
		if (b < SNAP_BUFS + SNAP_COW_BUFS &&
		    (s->buf[b] || (s->buf[b] = aligned_alloc(ps, ps)))) {
			memcpy(s->buf[b], src, ps);
			e = queue_write(s, b, s->buf[b], ps, (page + i) * ps);
		} else {
			e = image_write(s, page + i, src, 1);
		}
		if (e < 0)
			return e;
		mark_copied(s, page + i, 1);
	}
	io_uring_submit(&s->ring);
	return 0;
}

/*
 * A pending page whose data is only in its swap slot (swapped, or being
 * swapped in), and that slot is about to be freed: the snapshot takes the
 * slot over (the page no longer names it) and frees it once the copier
 * has read it.  The page is no longer pending: it may change.
 */
static int hold_slot(struct snapshot *s, uint64_t page)
{
	struct region *r = s->r;
	int64_t slot = region_slot(r, page);
	struct held_run *h = s->nheld > s->held_next ? &s->held[s->nheld - 1] : NULL;

	if (slot < 0)
		return -EIO; /* a swapped page without its data: never a hole */
	r->slot[page] = 0;
	bit_clr(s->pending, page);
	if (h && h->page + h->n == page && h->slot + h->n == (uint64_t)slot &&
	    h->n < SNAP_READ_PAGES) {
		h->n++;
		return 0;
	}
	if (s->nheld == s->held_cap) {
		size_t cap = s->held_cap ? s->held_cap * 2 : 16;
		struct held_run *v = realloc(s->held, cap * sizeof(*v));

		if (!v) {
			r->slot[page] = (uint32_t)slot + 1; /* back to the page */
			bit_set(s->pending, page);
			return -ENOMEM;
		}
		s->held = v;
		s->held_cap = cap;
	}
	s->held[s->nheld++] = (struct held_run){ .page = page, .slot = (uint64_t)slot, .n = 1 };
	return 0;
}

/* The pending restored pages [page, page+n) (PG_IMAGE), from the image
 * they were restored from.  0 or -errno. */
static int save_image(struct snapshot *s, uint64_t page, uint64_t n)
{
	size_t ps = s->d->page_size;
	uint8_t *buf = aligned_alloc(ps, n * ps);
	int e = buf ? image_read(s->r->image_fd, page * ps, buf, n * ps) : -ENOMEM;

	for (uint64_t i = 0; i < n && !e; i++)
		e = image_write(s, page + i, buf + i * ps, 1); /* zero: a hole */
	free(buf);
	if (!e)
		mark_copied(s, page, n);
	return e;
}

/*
 * The snapshot rule, for every path that changes pages (page.c calls it
 * through the region's watch): a page a running snapshot has still to copy
 * keeps its content of the instant until it is copied.  Called before
 * [first, first+n) lose what `what` says (page.h: CHANGE_*); each pending
 * page whose data of the instant is in what goes is copied first (from
 * memory, from the restore image, or by the snapshot taking its swap slot
 * over until read) or recorded as a hole if it is zero, and is no longer
 * pending.  Pages whose data is elsewhere stay pending.  A failure fails
 * the snapshot, never the change.
 */
static void page_before_change(struct region *r, uint64_t first, uint64_t n,
			       unsigned what)
{
	struct snapshot *s = r->snap;
	uint64_t end = first + n < r->npages ? first + n : r->npages;
	size_t held = s ? s->nheld : 0;

	if (!s || s->finished || !s->pending)
		return;
	for (uint64_t p = first; p < end;) {
		uint64_t k = 1;
		int e = 0;

		if (!bit(s->pending, p)) {
			p++;
			continue;
		}
		pgstate_t b = r->state[p];

		/* Where the page's data of the instant is, and whether that
		 * is what the change takes away. */
		switch (pg_state(b)) {
		case PAGE_RESIDENT:
			if (b & PG_GONE) {
				/* Discarded before the instant, I/O still in
				 * flight: zero, and nothing in the memfd (to
				 * read it would put a page there). */
				mark_copied(s, p, 1);
			} else if (b & PG_READING) {
				/* Only in its slot until the read installs it
				 * (write-protected, since it is pending). */
				if (what & CHANGE_SLOT)
					e = hold_slot(s, p);
			} else if (!(what & CHANGE_GONE)) {
				if (!(what & CHANGE_MEMORY))
					break;
				while (p + k < end && k < SNAP_RUN && bit(s->pending, p + k) &&
				       pg_state(r->state[p + k]) == PAGE_RESIDENT &&
				       !(r->state[p + k] & (PG_READING | PG_GONE)))
					k++;
				e = save_memory(s, p, k);
			} else if (region_slot(r, p) >= 0 && !(b & PG_IO)) {
				/* Punched by the client, but clean: its slot
				 * holds the same data. */
				if (what & CHANGE_SLOT)
					e = hold_slot(s, p);
			} else {
				/* Punched by the client before we copied it:
				 * whether before or after the instant, nobody
				 * can tell now.  A hole, as it reads now. */
				s->lost++;
				mark_copied(s, p, 1);
			}
			break;
		case PAGE_SWAPPED:
			if (what & CHANGE_SLOT)
				e = hold_slot(s, p);
			break;
		case PAGE_EMPTY:
			if (!(b & PG_IMAGE)) {
				mark_copied(s, p, 1); /* zero: a hole */
			} else if (what & CHANGE_IMAGE) {
				while (p + k < end && k < SNAP_RUN && bit(s->pending, p + k) &&
				       r->state[p + k] == (PAGE_EMPTY | PG_IMAGE))
					k++;
				e = save_image(s, p, k);
			}
			break;
		case PAGE_POISONED:
			break; /* lost already: the copier fails the snapshot */
		}
		if (e < 0) {
			log_err("region %" PRIu64 ": snapshot: saving page %" PRIu64 " before it changes: %s",
				r->id, p, strerror(-e));
			snap_finish(s, e);
			return;
		}
		p += k;
	}
	if (s->nheld != held)
		snap_kick(s);
}

/* How page.c tells a running snapshot of changes (page.h). */
static const struct page_watch snapshot_watch = {
	.before_change = page_before_change,
	.made_writable = snapshot_note_writable,
	.pending = snapshot_pending,
};

static void snap_read_done(void *arg, int res);

/* Starts a read of the slots [slot, slot+n) for the pages [page, page+n):
 * the pages' own (swapped) or, with held, slots the snapshot holds.
 * Returns 0 or -errno. */
static int read_slots(struct snapshot *s, uint64_t page, uint64_t slot,
		      uint32_t n, bool held)
{
	size_t ps = s->d->page_size;
	struct snap_read *rd = calloc(1, sizeof(*rd));
	int e;

	if (!rd)
		return -ENOMEM;
	rd->buf = aligned_alloc(ps, n * ps);
	if (!rd->buf) {
		free(rd);
		return -ENOMEM;
	}
	rd->s = s;
	rd->page = page;
	rd->n = n;
	rd->slot = slot;
	rd->held = held;
	e = swap_read(s->d->swap, rd->slot, rd->buf, n, snap_read_done, rd);
	if (e < 0) {
		free(rd->buf);
		free(rd);
		return e;
	}
	s->reads++;
	return 0;
}

/* Starts the reads of held slots, as many as may be in flight. */
static int read_held(struct snapshot *s)
{
	while (s->held_next < s->nheld && s->reads < SNAP_READS_MAX) {
		struct held_run *h = &s->held[s->held_next];
		int e = read_slots(s, h->page, h->slot, h->n, true);

		if (e < 0)
			return e;
		s->held_next++;
	}
	if (s->held_next == s->nheld)
		s->nheld = s->held_next = 0;
	return 0;
}

static void snap_kick(struct snapshot *s)
{
	if (!s->r)
		return;
	static const struct timeval now = { 0, 0 };

	if (!s->finished || s->reads)
		evtimer_add(s->ev, &now);
}

/* Held slots read: every page goes to the image (or the snapshot fails),
 * then the slots are freed. */
static void held_read_done(struct snapshot *s, struct snap_read *rd, int res)
{
	size_t ps = s->d->page_size;
	int e = res == -EBADMSG ? 0 : res;

	for (uint32_t i = 0; i < rd->n && !e; i++)
		if (res == -EBADMSG && swap_verify(s->d->swap, rd->slot + i, rd->buf + i * ps) < 0)
			e = -EIO; /* never copy wrong data */
	if (!e)
		e = write_read_pages(s, rd->page, rd->buf, rd->n);
	free_held_slots(s, rd->slot, rd->n);
	if (e < 0) {
		log_err("region %" PRIu64 ": snapshot: reading pages %" PRIu64 "+%" PRIu32 " from swap: %s",
			s->r->id, rd->page, rd->n, strerror(-e));
		snap_finish(s, e);
		return;
	}
	s->done += rd->n;
}

static void snap_read_done(void *arg, int res)
{
	struct snap_read *rd = arg;
	struct snapshot *s = rd->s;
	size_t ps = s->d->page_size;

	s->reads--;
	if (rd->held) {
		if (s->r && !s->finished)
			held_read_done(s, rd, res); /* frees the slots */
		else
			free_held_slots(s, rd->slot, rd->n);
	}
	if (!s->r) {
		/* The region went: we held the last reference. */
		if (!s->reads)
			snap_free(s);
		goto out;
	}
	if (rd->held) {
		snap_kick(s);
		goto out;
	}
	/* Runs of pages still wanted, verified, written together. */
	uint32_t run = 0;

	for (uint32_t i = 0; i <= rd->n && !s->finished; i++) {
		uint64_t p = rd->page + i;
		bool take = false;

		if (i < rd->n && res != -ESTALE &&
		    snapshot_pending(s->r, p) &&
		    region_slot(s->r, p) == (int64_t)(rd->slot + i)) {
			/* (Else copied meanwhile — a write fault swapped it
			 * in and copied it first — or its slot went: the
			 * copier looks again.) */
			if (res < 0 && res != -EBADMSG) {
				snap_finish(s, res);
				break;
			}
			if (swap_verify(s->d->swap, rd->slot + i, rd->buf + i * ps) < 0) {
				snap_finish(s, -EIO); /* never copy wrong data */
				break;
			}
			take = true;
		}
		if (take) {
			run++;
			continue;
		}
		if (run) {
			uint64_t first = p - run;
			int e = write_read_pages(s, first, rd->buf + (first - rd->page) * ps, run);

			if (e < 0) {
				snap_finish(s, e);
				break;
			}
			mark_copied(s, first, run);
			run = 0;
		}
	}
	snap_kick(s);
out:
	free(rd->buf);
	free(rd);
}

/*
 * One batch of the background copy.  Pages being read in from swap are
 * left for a later pass; when a pass finds nothing left, the snapshot is
 * complete.
 */
static void on_snap(evutil_socket_t fd, short what, void *arg)
{
	struct snapshot *s = arg;
	struct region *r = s->r;
	size_t ps = s->d->page_size;
	uint64_t budget = SNAP_BATCH;
	bool deferred = false, buffers_busy = false;

	(void)fd;
	(void)what;
	if (!r || s->finished)
		return;
	/* A readahead marker held back for its fault would be deferred
	 * forever: put it in now. */
	swapin_release_markers(r, true);
	if (read_held(s) < 0) {
		snap_finish(s, -EIO);
		return;
	}
	uint64_t p = s->cursor;

	while (p < r->npages && budget) {
		if (!bit(s->pending, p)) {
			/* Skip whole clear words fast. */
			if (!(p % 64) && !s->pending[p / 64]) {
				p += 64;
				continue;
			}
			p++;
			continue;
		}
		pgstate_t b = r->state[p];
		int e = 0;

		switch (pg_state(b)) {
		case PAGE_RESIDENT:
			if (b & PG_READING) {
				deferred = true; /* its slot is still good: next pass */
				p++;
				continue;
			}
			if (b & PG_GONE) {
				/* Discarded before the instant, write-back still
				 * in flight: a hole.  Reading pagerd's mapping
				 * there would put a page in the memfd that the
				 * region would then count as empty. */
				mark_copied(s, p, 1);
				budget--;
				p++;
				break;
			}
		{
			/* Neighbours resident too: one write for the run, its
			 * zero pages left out (holes). */
			uint64_t n = 1;

			while (n < SNAP_RUN && p + n < r->npages &&
			       bit(s->pending, p + n) &&
			       pg_state(r->state[p + n]) == PAGE_RESIDENT &&
			       !(r->state[p + n] & (PG_READING | PG_GONE)))
				n++;
			e = copy_run(s, p, n);
			if (e == 0) {
				/* Every buffer in flight: a completion
				 * brings us back. */
				buffers_busy = true;
				budget = 0;
				break;
			}
			if (e > 0) {
				mark_copied(s, p, n);
				e = 0;
			}
			budget = budget > n ? budget - n : 0;
			p += n;
			break;
		}
		case PAGE_SWAPPED: {
			uint32_t n = 1;

			if (s->reads >= SNAP_READS_MAX) {
				deferred = true;
				budget = 0;
				break;
			}
			while (n < SNAP_READ_PAGES && p + n < r->npages &&
			       bit(s->pending, p + n) &&
			       r->state[p + n] == PAGE_SWAPPED &&
			       region_slot(r, p + n) == region_slot(r, p) + n)
				n++;
			e = read_slots(s, p, (uint64_t)region_slot(r, p), n, false);
			deferred = true; /* done when the read completes */
			budget = budget > n ? budget - n : 0;
			p += n;
			break;
		}
		case PAGE_EMPTY:
			if (b & PG_IMAGE) {
				uint8_t *buf = aligned_alloc(ps, ps);

				e = buf ? image_read(r->image_fd, p * ps, buf, ps) : -ENOMEM;
				if (!e)
					e = image_write(s, p, buf, 1);
				free(buf);
			}
			/* Otherwise evicted as zero or discarded since: a hole. */
			if (!e)
				mark_copied(s, p, 1);
			budget--;
			p++;
			break;
		case PAGE_POISONED:
			e = -EIO;
			break;
		}
		if (e < 0) {
			snap_finish(s, e);
			return;
		}
	}
	if (s->ring_ok)
		io_uring_submit(&s->ring);
	s->cursor = p;
	if (buffers_busy)
		return;
	if (s->cursor >= r->npages) {
		/* A pass ended.  Reads in flight call us back; pages being
		 * swapped in are looked at again shortly. */
		static const struct timeval later = { 0, 1000 }, now = { 0, 0 };

		s->cursor = 0;
		if (s->reads)
			return;
		if (s->done == s->total) {
			snap_finish(s, 0);
			return;
		}
		evtimer_add(s->ev, deferred ? &later : &now);
		return;
	}
	snap_kick(s);
}

/* Step one, on its own thread: write-protect the whole region. */
static void *protect_region(void *arg)
{
	struct snapshot *s = arg;
	uint64_t t0 = now_ns(), one = 1;
	int e = 0;

	/* Behind the application's threads (and our loop) for the CPU: a
	 * writer the walk preempted would wait as if paused. */
	setpriority(PRIO_PROCESS, (id_t)gettid(), 19);
	for (int tries = 0; (e = uffd_writeprotect_range(s->protect_uffd, s->protect_addr,
							 s->protect_len)) < 0; tries++) {
		/* EAGAIN: an event's sender is finishing (nothing was done) */
		if (e != -EAGAIN || tries == 1000)
			break;
		e = 0;
		sched_yield();
	}
	s->protect_err = e;
	s->protect_ns = now_ns() - t0;
	/* Cannot fail: an eventfd far below its maximum. */
	ssize_t w_ = write(s->protect_efd, &one, sizeof(one));

	(void)w_;
	return NULL;
}

/* Waits for the protecting thread, if one runs, and frees what it used. */
static void protect_join(struct snapshot *s)
{
	if (!s->protecting)
		return;
	pthread_join(s->protector, NULL);
	s->protecting = false;
	if (s->protect_ev)
		event_free(s->protect_ev);
	s->protect_ev = NULL;
	close(s->protect_efd);
	close(s->protect_uffd);
}

static void reply_to_waiter(struct snapshot *s, int status)
{
	struct proto_reply out;
	struct client *c = s->waiter;

	if (!c)
		return;
	s->waiter = NULL;
	memset(&out, 0, sizeof(out));
	if (s->r && s->r->snap == s)
		snapshot_status(s->r, &out.snapshot);
	client_reply_deferred(c, status, &out);
}

void snapshot_waiter_gone(struct client *c)
{
	if (c->waiting_on)
		c->waiting_on->waiter = NULL;
	c->waiting_on = NULL;
}

/* Write-protects the pages noted in s->reprotect.  0 or -errno. */
static int protect_noted(struct snapshot *s)
{
	struct region *r = s->r;

	for (uint64_t w = 0; w < (r->npages + 63) / 64; w++) {
		while (s->reprotect[w]) {
			uint64_t p = w * 64 + (uint64_t)__builtin_ctzll(s->reprotect[w]), n = 0;
			int e;

			while (p + n < r->npages && bit(s->reprotect, p + n)) {
				bit_clr(s->reprotect, p + n);
				n++;
			}
			for (int tries = 0; (e = uffd_writeprotect(r, p, n, true)) == -EAGAIN &&
					    tries < 1000; tries++)
				sched_yield();
			if (e < 0 && e != -ENOENT)
				return e;
		}
	}
	return 0;
}

/*
 * Step two, on the loop: the instant.  Nothing else runs on the loop
 * meanwhile, so no page becomes writable behind us.
 */
static void snapshot_instant(struct snapshot *s)
{
	struct region *r = s->r;
	uint64_t t0 = now_ns();
	int e = s->protect_err;

	if (e == 0)
		e = protect_noted(s);
	s->pause_ns = now_ns() - t0;
	free(s->reprotect);
	s->reprotect = NULL;
	/*
	 * A page lost during step one (a swap-in failed while the walk ran)
	 * has no data of the instant to copy: snapshot_start() refuses a
	 * region in that state, and so must the instant, or the image would
	 * hold a hole (zeros) where the region held data.
	 */
	for (uint64_t p = 0; p < r->npages && e == 0; p++)
		if (pg_state(r->state[p]) == PAGE_POISONED)
			e = -EIO;
	if (e < 0) {
		reply_to_waiter(s, e);
		r->snap = NULL;
		snap_free(s);
		/* Nothing needs the protection now: dirty pages lose it. */
		unprotect_dirty(r);
		return;
	}
	for (uint64_t p = 0; p < r->npages; p++) {
		pgstate_t b = r->state[p];

		if (pg_state(b) == PAGE_RESIDENT || pg_state(b) == PAGE_SWAPPED ||
		    (b & PG_IMAGE)) {
			s->pending[p / 64] |= 1ull << (p % 64);
			s->total++;
		}
	}
	log_info("region %" PRIu64 ": snapshot started: %" PRIu64 " pages to copy; region write-protected in %" PRIu64 " us, writers paused %" PRIu64 " us",
		 r->id, s->total, s->protect_ns / 1000, s->pause_ns / 1000);
	fdstore_region_sync(r);
	reply_to_waiter(s, 0);
	snap_kick(s);
}

static void on_protected(evutil_socket_t fd, short what, void *arg)
{
	struct snapshot *s = arg;
	uint64_t v;

	(void)what;
	if (read(fd, &v, sizeof(v)) < 0 && errno == EAGAIN)
		return;
	protect_join(s);
	snapshot_instant(s);
}

int snapshot_start(struct client *requester, struct region *r, int fd)
{
	struct daemon *d = r->client->d;
	size_t words = (r->npages + 63) / 64;
	struct snapshot *s;
	struct stat st;
	int fl;

	fl = fcntl(fd, F_GETFL);
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || fl < 0 ||
	    (fl & O_ACCMODE) == O_RDONLY || (fl & O_APPEND))
		return -EBADF;
	if (r->snap && !r->snap->finished)
		return -EBUSY;
	if (!(r->client->uffd_features & UFFD_FEATURE_WP_HUGETLBFS_SHMEM))
		return -EOPNOTSUPP;
	for (uint64_t p = 0; p < r->npages; p++)
		if (pg_state(r->state[p]) == PAGE_POISONED)
			return -EIO; /* the region already lost data */
	if (ftruncate(fd, (off_t)r->len) < 0)
		return -errno;
	/* Straight to the disk where the filesystem allows: the copy then
	 * runs at the disk's pace without filling the page cache (all our
	 * buffers and offsets are page-aligned). */
	if (fcntl(fd, F_SETFL, fl | O_DIRECT) < 0)
		log_debug("region %" PRIu64 ": image without O_DIRECT: %m", r->id);
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->d = d;
	s->r = r;
	s->fd = fd;
	s->efd = -1;
	s->pending = calloc(words, sizeof(uint64_t));
	s->reprotect = calloc(words, sizeof(uint64_t));
	s->ev = evtimer_new(d->base, on_snap, s);
	if (s->pending && s->ev && io_uring_queue_init(64, &s->ring, 0) == 0) {
		s->ring_ok = true;
		s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (s->efd >= 0 && io_uring_register_eventfd(&s->ring, s->efd) == 0)
			s->efd_ev = event_new(d->base, s->efd, EV_READ | EV_PERSIST,
					      on_image_written, s);
	}
	if (!s->pending || !s->reprotect || !s->ev || !s->efd_ev ||
	    event_add(s->efd_ev, NULL) < 0) {
		s->fd = -1;
		snap_free(s);
		return -ENOMEM;
	}
	/* Step one on a thread of its own (a dup of the uffd: the client's
	 * may close while it runs). */
	s->protect_addr = r->addr;
	s->protect_len = r->len;
	s->protect_uffd = fcntl(r->client->uffd, F_DUPFD_CLOEXEC, 0);
	s->protect_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->protect_uffd >= 0 && s->protect_efd >= 0)
		s->protect_ev = event_new(d->base, s->protect_efd, EV_READ,
					  on_protected, s);
	if (!s->protect_ev || event_add(s->protect_ev, NULL) < 0 ||
	    pthread_create(&s->protector, NULL, protect_region, s) != 0) {
		if (s->protect_ev)
			event_free(s->protect_ev);
		if (s->protect_uffd >= 0)
			close(s->protect_uffd);
		if (s->protect_efd >= 0)
			close(s->protect_efd);
		s->fd = -1;
		snap_free(s);
		return -ENOMEM;
	}
	s->protecting = true;
	if (r->snap)
		snap_free(r->snap);
	r->snap = s;
	r->watch = &snapshot_watch;
	s->waiter = requester;
	requester->waiting_on = s;
	fdstore_region_sync(r); /* a successor reports it failed */
	return REQUEST_DEFERRED;
}

void snapshot_status(struct region *r, struct proto_snapshot_status *ret)
{
	const struct snapshot *s = r->snap;

	memset(ret, 0, sizeof(*ret));
	if (!s) {
		ret->status = -ENOENT;
		ret->done = 1;
		return;
	}
	ret->pages_total = s->total;
	ret->pages_done = s->done;
	ret->pause_ns = s->pause_ns;
	ret->status = s->status;
	ret->done = s->finished && !s->reads;
}

void snapshot_handover(struct region *r)
{
	struct snapshot *s = r->snap;

	/* Not finished: the successor cannot finish it (the copy's progress
	 * is ours), so it fails; one that finished is reported as it ended
	 * once its last image writes are in (snapshot_drain()). */
	if (s && s->protecting) {
		/* Before its instant: the start request fails. */
		protect_join(s);
		reply_to_waiter(s, -ESHUTDOWN);
	}
	if (s && !s->finished)
		snap_finish(s, -ESHUTDOWN);
}

void snapshot_drain(struct region *r)
{
	struct snapshot *s = r->snap;
	struct io_uring_cqe *cqe;

	/* What is left in flight are image writes (the swap store ran its
	 * reads' completions when it closed): wait for them. */
	while (s && s->ring_ok && s->reads) {
		io_uring_submit(&s->ring);
		if (io_uring_wait_cqe(&s->ring, &cqe) < 0) {
			s->status = -ESHUTDOWN; /* cannot tell: not whole */
			return;
		}
		image_written(s, cqe);
	}
}

void snapshot_adopt(struct region *r, int status, uint64_t total,
		    uint64_t done, uint64_t pause_ns)
{
	struct snapshot *s = calloc(1, sizeof(*s));

	if (!s)
		return; /* the client's poll then says -ENOENT: still a failure */
	s->d = r->client->d;
	s->r = r;
	s->fd = -1;
	s->efd = -1;
	s->finished = true;
	s->status = status;
	s->total = total;
	s->done = done;
	s->pause_ns = pause_ns;
	r->snap = s;
}

void snapshot_region_gone(struct region *r)
{
	struct snapshot *s = r->snap;

	if (!s)
		return;
	r->snap = NULL;
	s->r = NULL;
	protect_join(s);
	reply_to_waiter(s, -ECANCELED);
	snap_finish(s, -ECANCELED);
	if (!s->reads)
		snap_free(s);
}

/* ---- restore ------------------------------------------------------------ */

/* Reads the image's pages [page, page+n) (all PG_IMAGE) into a buffer and
 * installs them in the page cache (only complete data may go there: the
 * kernel maps it on the client's next access).  They are resident and
 * dirty afterwards (no swap copy); protected if a snapshot still needs
 * them. */
static int restore_read(struct region *r, uint64_t page, uint64_t n)
{
	size_t ps = r->client->d->page_size;
	bool wp = false;
	int64_t done;
	uint8_t *buf = malloc(n * ps);
	int e = buf ? image_read(r->image_fd, page * ps, buf, n * ps) : -ENOMEM;

	if (e < 0) {
		log_err("region %" PRIu64 ": reading pages %" PRIu64 "+%" PRIu64 " from its image: %s",
			r->id, page, n, strerror(-e));
		free(buf);
		return e;
	}
	for (uint64_t p = page; p < page + n; p++)
		wp |= snapshot_pending(r, p);
	done = region_install(r, page, n, buf, wp);
	free(buf);
	if (done < 0 || (uint64_t)done < n) {
		e = done < 0 ? (int)done : -EIO;
		log_err("region %" PRIu64 ": installing pages %" PRIu64 "+%" PRIu64 " from its image: %s",
			r->id, page, n, strerror(-e));
		if (done > 0) {
			/* The first pages went in; the rest stay in the image. */
			page_image_read(r, page, (uint64_t)done);
			counter_add(r, image_reads, (uint64_t)done);
			return 0;
		}
		return e;
	}
	page_image_read(r, page, n);
	counter_add(r, image_reads, n);
	return 0;
}

/* How many PG_IMAGE pages from `page` on, at most max. */
static uint64_t image_run(const struct region *r, uint64_t page, uint64_t max)
{
	uint64_t n = 0;

	while (n < max && page + n < r->npages &&
	       r->state[page + n] == (PAGE_EMPTY | PG_IMAGE))
		n++;
	return n;
}

int restore_fault(struct client *c, struct region *r, uint64_t page)
{
	uint64_t room = limits_room(r), n;

	if (room == 0)
		return -ENOSPC; /* the caller parks the fault */
	/* A little readahead: images are read mostly in order. */
	n = image_run(r, page, RESTORE_AROUND < room ? RESTORE_AROUND : room);
	if (restore_read(r, page, n ? n : 1) < 0) {
		/* The data cannot be had: never zeros in its place. */
		page_poisoned(r, page);
		r->stats.poisoned++;
		c->d->stats.poisoned++;
		return uffd_poison(r, page);
	}
	page_referenced(r, page);
	uffd_wake(c, r->addr + page * c->d->page_size, c->d->page_size);
	if (limits_pressure(r))
		evict_kick(c->d);
	return 0;
}

static void on_prefetch(evutil_socket_t fd, short what, void *arg)
{
	struct region *r = arg;
	uint64_t budget = PREFETCH_BATCH;
	static const struct timeval soon = { 0, 1000 };

	(void)fd;
	(void)what;
	for (uint64_t p = 0; p < r->npages && budget && r->image_pending; p++) {
		uint64_t room = limits_room(r), n;

		if (room <= PREFETCH_SPARE)
			return; /* faults need the room more; try no further */
		n = image_run(r, p, budget < room - PREFETCH_SPARE ? budget
								 : room - PREFETCH_SPARE);
		if (!n)
			continue;
		if (restore_read(r, p, n) < 0)
			return;
		budget -= n;
		p += n - 1;
	}
	if (r->image_pending)
		evtimer_add(r->prefetch_ev, &soon);
}

int restore_attach(struct region *r, int fd, bool prefetch)
{
	size_t ps = r->client->d->page_size;
	struct stat st;
	off_t off = 0;

	if (r->image_fd >= 0)
		return -EBUSY;
	if (r->resident || r->swapped)
		return -EBUSY; /* only a fresh region takes an image */
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size != r->len)
		return -EINVAL;
	/* Data extents become PG_IMAGE pages; holes stay plain empty. */
	for (;;) {
		off_t data = lseek(fd, off, SEEK_DATA), hole;

		if (data < 0)
			break; /* ENXIO: no more data */
		hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0)
			hole = st.st_size;
		for (uint64_t p = (uint64_t)data / ps;
		     p < r->npages && p * ps < (uint64_t)hole; p++) {
			if (!(r->state[p] & PG_IMAGE))
				page_in_image(r, p);
		}
		off = hole;
	}
	restore_resume(r, fd, prefetch);
	fdstore_region_image(r);
	log_info("region %" PRIu64 ": restoring %" PRIu64 " pages from an image%s",
		 r->id, r->image_pending, prefetch ? ", prefetching" : "");
	return 0;
}

void restore_resume(struct region *r, int fd, bool prefetch)
{
	r->image_fd = fd;
	r->image_prefetch = prefetch;
	if (prefetch && r->image_pending) {
		static const struct timeval now = { 0, 0 };

		r->prefetch_ev = evtimer_new(r->client->d->base, on_prefetch, r);
		if (r->prefetch_ev)
			evtimer_add(r->prefetch_ev, &now);
	}
}
