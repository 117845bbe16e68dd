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
 * mapping for a resident page, through the swap store (CRC checked) for a
 * swapped one, from the restore image (CRC checked) for one whose data of
 * the instant is there (from_image).  A write fault on a pending page
 * copies that page first, then lets the write through.  Pages that were
 * empty stay holes.
 *
 * All image I/O goes through the I/O engine (io.h) on a store (store.h)
 * with the image timeout: a client's file may be on FUSE or NFS and never
 * answer, and that must fail this snapshot or restore alone.  Writes go
 * from bounce buffers of their own (a write the file never answers keeps
 * its buffer with the engine).  As they are written, the CRC32C of every
 * page goes into the IMAGE.crc table (common/image.h) the client handed
 * us as a memfd; restore checks every page it reads against it.
 *
 * The rule that makes the image one cut: a pending page keeps its content
 * of the instant until it is copied.  Every path that is about to empty a
 * page (a discard, a zero eviction, the client's own punch found out),
 * free the swap slot that holds its data, or let a write reach it (an
 * un-protect, a zero-fill or a writable install) is a transition of page.c,
 * which calls page_before_change() first (the region's watch), which copies
 * each pending page from wherever its data is — from memory into a bounce
 * buffer or, for data only in a swap slot, by taking the slot over until
 * the copier has read it — or records it as a hole if it reads as zero; a
 * page whose data is in the restore image needs nothing (the image does
 * not change, and IMAGE.crc catches one that did).  A write-protect fault is
 * just one of those paths.  Eviction otherwise needs no special case: an
 * evicted page is still the same data, now in its slot.
 *
 * The image fd comes from the client (it opened and sized the file, with
 * its own rights), which also syncs the image and writes the sidecars once
 * we say the copy is complete: a snapshot cut short leaves no sidecar, and
 * so never looks complete.
 *
 * Restore.  A region created for an image gets the image fd and its
 * IMAGE.crc table; its pages with data (SEEK_DATA, or data by the table)
 * are marked PG_IMAGE and read from the image on their first fault —
 * asynchronously: the faulting thread waits in the kernel until the
 * completion installs and wakes — checked against the table (a mismatch
 * is poisoned), and, unless the client asked otherwise, prefetched in the
 * background within the region's limits.  Holes are plain empty pages,
 * zero-filled with no I/O.
 *
 * Learned prefetch (learn.h).  A restore records the order in which the
 * application first touched the image's pages; a later snapshot of the
 * region stores that order beside its image (IMAGE.order), and a restore
 * handed such an order prefetches those pages first, in coalesced runs,
 * before the prefetch in address order goes on.
 */
#include <endian.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crc32c.h"
#include "image.h"
#include "io.h"
#include "learn.h"
#include "log.h"
#include "page.h"
#include "pagerd.h"
#include "store.h"
#include "swap.h"
#include "uffd.h"

/* Pages copied from memory per loop turn; slot reads in flight at most. */
#define SNAP_BATCH 4096
/* Most pages one write of resident pages covers. */
#define SNAP_RUN 256
/* Bytes captured in bounce buffers and not yet on disk: the background
 * copier waits above SNAP_COPIER_BYTES (or half the capture budget,
 * snapshot_capture_limit, if less: the writers keep the other half), at
 * the disk's pace.  A write fault that would capture a page past the
 * budget waits, parked, until the disk has taken enough
 * (snapshot_write_must_wait()): writers go at the disk's pace too. */
#define SNAP_COPIER_BYTES (8u << 20)
#define SNAP_READS_MAX 16
#define SNAP_READ_PAGES 64
/* Image requests in the kernel at once (a queue of the I/O engine). */
#define SNAP_IMAGE_DEPTH 16
/* Restore prefetch: pages per read, and room it leaves. */
#define PREFETCH_BATCH 256
#define PREFETCH_SPARE 1024
/* Restore readahead on sequential faults, pages. */
#define RESTORE_AROUND 64
/* Restore reads in flight per region (faults and prefetch); of those, the
 * prefetch in address order takes at most PREFETCH_READS reads' worth of
 * pages (PREFETCH_BATCH each), and either prefetch at most LEARN_READS
 * reads (small scattered reads want depth), so that a fault always finds
 * a read free. */
#define RESTORE_READS_MAX 16
#define PREFETCH_READS 4
#define LEARN_READS 12
/* ... each times the restore's scale: an image's store that states a
 * deeper read_depth (store.h: RBD, a round trip a read) gets that many
 * times more reads in flight, in the same proportions. */
/* Learned prefetch: the next LEARN_WINDOW pages of the order are looked at
 * for neighbours of the first; pages of the order at most LEARN_GAP apart
 * are read in one run with the image pages between them (a 64 KiB read
 * costs a disk about what a 4 KiB one does), at most LEARN_RUN pages. */
#define LEARN_WINDOW 64
#define LEARN_GAP 16
#define LEARN_RUN 64

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
	/* The image, through the I/O engine with the image timeout: the
	 * loop never waits for a client's file, and a file that stops
	 * answering fails this snapshot alone (-ETIMEDOUT). */
	struct store *img;
	int fd;               /* the image (the store's), or -1 */
	/* IMAGE.crc being filled (image.h), the client's memfd. */
	uint8_t *crc_map;
	size_t crc_len;
	uint64_t *from_image; /* bit per page: its data of the instant is in the
			       * restore image (PG_IMAGE then), copied from there */
	uint64_t *pending;    /* bit per page: still to be copied */
	/* IMAGE.order to fill at the end (image.h), the client's memfd. */
	uint8_t *order_map;
	size_t order_len;
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
	/* Image writes go from bounce buffers: the data is captured (memcpy)
	 * when a run is copied, so the page may change while the write is in
	 * flight.  Bytes of them not yet written: */
	size_t bounce;
	bool throttle_logged; /* said that writers wait for the disk */
	struct event *ev;
	/* An RBD image (rbd:...), which pagerd opens and commits itself:
	 * its name, and the job (store.h) that opens or commits it. */
	char *rbd;
	struct store_rbd_job *job;
	bool preparing;       /* the image is being opened: no instant yet */
	bool committing;      /* copied; the image's keys being written */
};

/* One image write in flight, from its own bounce buffer. */
struct snap_write {
	struct snapshot *s;
	uint8_t *buf;
	size_t len;
	bool back;            /* the store gives the buffer back on a timeout */
};

/*
 * A region restored from an image: the image through the I/O engine (with
 * the image timeout), the table of CRC32Cs every page read is checked
 * against, and the reads in flight.
 */
struct restore_read;
struct restore {
	struct region *r;          /* NULL once the region is gone */
	struct store *img;
	const uint32_t *crc;       /* entries of IMAGE.crc, or NULL: unchecked */
	void *crc_map;
	size_t crc_len;
	int crc_fd;                /* kept for the fd store */
	uint32_t hole_crc;
	int failed;                /* the image timed out: no more reads */
	struct restore_read *reads;
	unsigned nreads;
	unsigned scale;            /* RESTORE_READS_MAX etc. times this */
	char *rbd;                 /* a named image's name (rbd:...), or NULL */
	struct store_rbd_job *job; /* ... being opened again (adopted): img
				    * is NULL and faults wait meanwhile */
	uint64_t reading;          /* pages those reads cover */
	uint64_t prefetch_next;
	int image_fd;              /* the image: the region's until it goes */
	bool prefetch;             /* read it all in the background */
	struct event *prefetch_ev; /* ... by this timer, or NULL */
	struct learn *rec;         /* what the application touches first */
	uint64_t *order;           /* the learned order: prefetched first */
	size_t norder, order_next; /* ... pages before order_next are done */
};

struct restore_read {
	struct restore_read *next;
	struct restore *rs;
	uint64_t page, n;
	uint64_t fault_page;       /* a thread waits on it, or UINT64_MAX */
	bool learned;              /* the learned prefetch's */
	uint8_t *buf;
	bool back;                 /* the store gives the buffer back on a timeout */
};

struct snap_read {
	struct snapshot *s;
	uint64_t page, slot;
	uint32_t n;
	bool held;            /* slots of s->held: ours to free */
	uint8_t *buf;
};

/* The CRC32C of an all-zero page: what IMAGE.crc says for a hole. */
static uint32_t zero_page_crc(size_t ps)
{
	static const uint8_t zeros[4096];
	uint32_t crc = 0;

	for (size_t off = 0; off < ps; off += sizeof(zeros))
		crc = crc32c(crc, zeros, ps - off < sizeof(zeros) ? ps - off : sizeof(zeros));
	return crc;
}

/* The capture budget: bytes captured and not yet written past which a
 * write fault that needs a capture waits (snapshot_write_must_wait()). */
static size_t capture_limit(const struct snapshot *s)
{
	return (size_t)s->d->cfg.snapshot_capture_limit;
}

/* The background copier's share of it: it never takes the writers' half. */
static size_t copier_limit(const struct snapshot *s)
{
	size_t half = capture_limit(s) / 2;

	return half < SNAP_COPIER_BYTES ? half : SNAP_COPIER_BYTES;
}

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

/*
 * Write faults parked for the capture budget (snapshot_write_must_wait())
 * are tried again at the next turn of the loop: the budget may have room
 * now, or their pages need no capture any more (copied, discarded, the
 * snapshot ended).  One that still must wait parks again.
 */
static void wake_writers(struct snapshot *s)
{
	if (s->r && s->r->client->nparked_for[PARK_SNAPSHOT])
		client_retry_faults(s->r->client);
}

bool snapshot_write_must_wait(struct region *r, uint64_t page)
{
	struct snapshot *s = r->snap;
	pgstate_t b = r->state[page];

	/* Only a page whose data of the instant is in memory, and still to
	 * be copied, is captured by a write (page_before_change()). */
	if (!s || s->finished || !s->pending || !bit(s->pending, page) ||
	    bit(s->from_image, page) || pg_state(b) != PAGE_RESIDENT ||
	    (b & PG_READING) || s->bounce < capture_limit(s))
		return false;
	if (!s->throttle_logged) {
		s->throttle_logged = true;
		log_info("region %" PRIu64 ": snapshot: writers wait for the image's disk (%zu KiB captured, not yet written)",
			 r->id, s->bounce >> 10);
	}
	return true;
}

static void protect_join(struct snapshot *s);
static void snap_commit(struct snapshot *s);
static int snap_protect(struct snapshot *s, struct client *requester);

static void snap_free(struct snapshot *s)
{
	store_rbd_job_cancel(s->job);
	free(s->rbd);
	protect_join(s);
	free(s->reprotect);
	/* Nothing of ours is in flight (reads is 0): what a stalled file
	 * still holds is the engine's now. */
	store_close(s->img);
	if (s->fd >= 0)
		close(s->fd);
	if (s->crc_map)
		munmap(s->crc_map, s->crc_len);
	if (s->order_map)
		munmap(s->order_map, s->order_len);
	if (s->ev)
		event_free(s->ev);
	free(s->from_image);
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

/*
 * The learned order of the region, for the IMAGE.order the client handed
 * us: what its restore recorded (or the order it was restored with, when
 * it recorded nothing), bound to the IMAGE.crc just completed.  Left all
 * zero (no order) when there is none: a region never restored, or one
 * whose application touched nothing yet.
 */
static void store_order(struct snapshot *s)
{
	const struct image_crc_hdr *h = (const struct image_crc_hdr *)s->crc_map;
	uint64_t *order;
	size_t n;
	int64_t len;

	if (restore_order_recorded(s->r, &order, &n) < 0 || !n)
		return;
	if (n > IMAGE_ORDER_MAX)
		n = IMAGE_ORDER_MAX;
	len = learn_order_encode(s->order_map, order, n, s->r->npages,
				 (uint32_t)s->d->page_size,
				 h ? le32toh(h->table_crc) : 0);
	if (len > 0)
		log_info("region %" PRIu64 ": snapshot: its learned order holds %zu pages",
			 s->r->id, n);
	free(order);
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
	if (status == 0 && s->crc_map) {
		/* The table is complete: its header vouches for it. */
		struct image_crc_hdr *h = (struct image_crc_hdr *)s->crc_map;
		uint64_t pages = (s->crc_len - IMAGE_CRC_ENTRIES_OFF) / 4;

		memset(h, 0, IMAGE_CRC_ENTRIES_OFF);
		memcpy(h->magic, IMAGE_CRC_MAGIC, sizeof(h->magic));
		h->version = htole32(IMAGE_CRC_VERSION);
		h->page_size = htole32((uint32_t)s->d->page_size);
		h->pages = htole64(pages);
		h->hole_crc = htole32(zero_page_crc(s->d->page_size));
		h->table_crc = htole32(crc32c(0, s->crc_map + IMAGE_CRC_ENTRIES_OFF,
					      pages * 4));
		h->hdr_crc = htole32(crc32c(0, h, offsetof(struct image_crc_hdr, hdr_crc)));
	}
	if (status == 0 && s->order_map && s->r)
		store_order(s);
	/* Nothing is captured any more: writes waiting for room go on. */
	wake_writers(s);
}

static void snap_kick(struct snapshot *s);

/* An RBD image's commit is over: the snapshot ends as it says. */
static void snap_committed(void *arg, int res, struct store_rbd_image *img)
{
	struct snapshot *s = arg;

	(void)img;
	s->job = NULL;
	s->committing = false;
	if (res < 0)
		s->status = res;
	if (s->r)
		log_info("region %" PRIu64 ": snapshot in %s: %s", s->r->id, s->rbd,
			 res ? strerror(-res) : "committed");
}

/*
 * Every page of an RBD image is written (nothing in flight): flush, the
 * checksum table, the metadata and "complete" last, off the loop (store.h).
 * A file image's client does this part itself.
 */
static void snap_commit(struct snapshot *s)
{
	struct image_meta m = {
		.format = 2, .size = s->r->len, .page_size = (uint32_t)s->d->page_size,
		.data_pages = s->total, .created = (uint64_t)time(NULL),
	};
	const struct image_crc_hdr *h = (const struct image_crc_hdr *)s->crc_map;
	struct store *img = s->img;
	uint8_t *order_buf = NULL;
	int64_t order_len = 0;
	uint64_t *order;
	size_t n;
	int e;

	snprintf(m.name, sizeof(m.name), "%s", s->r->name);
	/* Its learned order goes beside it (pagerd_order.IMAGE), bound to
	 * the table as a file's IMAGE.order is.  Without memory for it only
	 * the order is lost. */
	if (restore_order_recorded(s->r, &order, &n) == 0 && n) {
		if (n > IMAGE_ORDER_MAX)
			n = IMAGE_ORDER_MAX;
		order_buf = malloc(image_order_size(n));
		if (order_buf)
			order_len = learn_order_encode(order_buf, order, n, s->r->npages,
						       (uint32_t)s->d->page_size,
						       h ? le32toh(h->table_crc) : 0);
		if (order_len > 0)
			log_info("region %" PRIu64 ": snapshot: its learned order holds %zu "
				 "pages", s->r->id, n);
		free(order);
	}
	s->img = NULL; /* the commit takes it */
	s->committing = true;
	e = store_rbd_image_commit(img, s->crc_map, s->crc_len, order_buf,
				   order_len > 0 ? (size_t)order_len : 0, &m, snap_committed, s,
				   &s->job);
	free(order_buf);
	if (e < 0) {
		s->job = NULL;
		s->committing = false;
		s->status = e;
		log_err("region %" PRIu64 ": snapshot in %s: cannot commit: %s", s->r->id,
			s->rbd, strerror(-e));
	}
}

static void on_image_written(void *arg, int res)
{
	struct snap_write *w = arg;
	struct snapshot *s = w->s;

	s->reads--;
	s->bounce -= w->len;
	if (s->bounce < capture_limit(s))
		wake_writers(s);
	/* A write the file never answered: its buffer is the engine's
	 * (an RBD store's never is: it wrote from a copy). */
	if (w->back || (res != -ETIMEDOUT && res != -ECANCELED))
		free(w->buf);
	free(w);
	if (res < 0 && !s->finished) {
		if (s->r)
			log_err("region %" PRIu64 ": snapshot: writing the image: %s",
				s->r->id, strerror(-res));
		snap_finish(s, res);
	}
	if (!s->r) {
		if (!s->reads)
			snap_free(s); /* the region went; we were the last */
		return;
	}
	snap_kick(s);
}

/* Records the CRC32C of the n pages at buf as those of image pages
 * [page, page+n) in the IMAGE.crc table. */
static void record_crcs(struct snapshot *s, uint64_t page, const uint8_t *buf,
			uint64_t n)
{
	size_t ps = s->d->page_size;
	uint32_t *t = (uint32_t *)(s->crc_map + IMAGE_CRC_ENTRIES_OFF);

	for (uint64_t i = 0; i < n; i++)
		t[page + i] = htole32(crc32c(0, buf + i * ps, ps));
}

/* Writes the n data pages at buf (a bounce buffer of ours, given to the
 * write) to image pages [page, page+n).  0 or -errno (buf then freed). */
static int image_put(struct snapshot *s, uint64_t page, uint8_t *buf, uint64_t n)
{
	size_t ps = s->d->page_size, len = n * ps;
	struct snap_write *w = malloc(sizeof(*w));
	int e;

	if (!w) {
		free(buf);
		return -ENOMEM;
	}
	*w = (struct snap_write){ .s = s, .buf = buf, .len = len,
				  .back = store_buffer_back(s->img, -ETIMEDOUT) };
	record_crcs(s, page, buf, n);
	e = store_write(s->img, page * ps, buf, len, on_image_written, w);
	if (e < 0) {
		free(buf);
		free(w);
		return e;
	}
	s->reads++;
	s->bounce += len;
	return 0;
}

/*
 * Captures the n pages at src for image pages [page, page+n): each stretch
 * of non-zero pages is copied into a bounce buffer and written (zero pages
 * stay holes; the image starts as one hole of the region's size).  With
 * `must` false (the background copier) it declines, returning 0, while
 * its share of the budget is on its way to the disk; with must (a page
 * about to change, or one the copier read) it always captures: the write
 * faults that would take the budget past its limit wait before they get
 * here (snapshot_write_must_wait()), and every other caller captures each
 * page at most once.  Returns 1 when captured, 0 (declined), or -errno.
 */
static int queue_pages(struct snapshot *s, uint64_t page, const uint8_t *src,
		       uint64_t n, bool must)
{
	size_t ps = s->d->page_size;

	if (!must && s->bounce >= copier_limit(s))
		return 0;
	for (uint64_t i = 0; i < n;) {
		uint64_t j = i;
		uint8_t *buf;
		int e;

		while (j < n && !page_is_zero(src + j * ps, ps))
			j++;
		if (j > i) {
			buf = aligned_alloc(ps, (j - i) * ps);
			if (!buf)
				return -ENOMEM;
			memcpy(buf, src + i * ps, (j - i) * ps);
			e = image_put(s, page + i, buf, j - i);
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
	return queue_pages(s, page, s->r->map + page * s->d->page_size, n, false);
}

/* Pages read from swap or from the restore image.  0 or -errno. */
static int write_read_pages(struct snapshot *s, uint64_t page, const uint8_t *src,
			    uint64_t n)
{
	int e = queue_pages(s, page, src, n, true);

	return e < 0 ? e : 0;
}

static void mark_copied(struct snapshot *s, uint64_t page, uint64_t n)
{
	bool any = false;

	for (uint64_t i = page; i < page + n; i++) {
		if (bit(s->pending, i)) {
			bit_clr(s->pending, i);
			s->done++;
			any = true;
		}
	}
	if (any)
		wake_writers(s); /* a write may wait on one of them */
}

/*
 * Copies the pending resident pages [page, page+n) from pagerd's mapping,
 * where each holds its content of the instant (it has been protected
 * since).  The data is captured in bounce buffers and the disk writes
 * follow (all-zero pages stay holes).  The pages are done afterwards.
 * 0 or -errno.
 */
static int save_memory(struct snapshot *s, uint64_t page, uint64_t n)
{
	int e = queue_pages(s, page, s->r->map + page * s->d->page_size, n, true);

	if (e < 0)
		return e;
	mark_copied(s, page, n);
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
	wake_writers(s); /* a write may wait on it */
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

/*
 * The snapshot rule, for every path that changes pages (page.c calls it
 * through the region's watch): a page a running snapshot has still to copy
 * keeps its content of the instant until it is copied.  Called before
 * [first, first+n) lose what `what` says (page.h: CHANGE_*); each pending
 * page whose data of the instant is in what goes is copied first (from
 * memory, or by the snapshot taking its swap slot over until read) or
 * recorded as a hole if it is zero, and is no longer pending (data in the
 * restore image stays there: the copier reads it later).  Pages whose data
 * is elsewhere stay pending.  A failure fails the snapshot, never the
 * change.
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
		if (bit(s->from_image, p)) {
			/* Its data of the instant is in the restore image,
			 * which no change here touches: the copier reads it
			 * from there. */
			p++;
			continue;
		}
		pgstate_t b = r->state[p];

		/* Where the page's data of the instant is, and whether that
		 * is what the change takes away. */
		switch (pg_state(b)) {
		case PAGE_RESIDENT:
			if ((b & PG_GONE) && page_gone(r, p)) {
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
				       !bit(s->from_image, p + k) &&
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
			/* (A PG_IMAGE page is from_image: passed above.) */
			mark_copied(s, p, 1); /* zero: a hole */
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

/*
 * What page.c must not make writable: a pending page whose data of the
 * instant is in memory.  A pending page restored from an image keeps its
 * instant data there (from_image), whatever happens to its memory since,
 * and the copier reads it from the image: it may be emptied, refilled and
 * written meanwhile.
 */
static bool memory_pending(const struct region *r, uint64_t page)
{
	return snapshot_pending(r, page) && !bit(r->snap->from_image, page);
}

/* How page.c tells a running snapshot of changes (page.h). */
static const struct page_watch snapshot_watch = {
	.before_change = page_before_change,
	.made_writable = snapshot_note_writable,
	.pending = memory_pending,
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
		    snapshot_pending(s->r, p) && !bit(s->from_image, p) &&
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

static int restore_check(struct region *r, uint64_t page, const uint8_t *buf);

/* A read of the restore image for the snapshot: pages [page, page+n). */
struct snap_iread {
	struct snapshot *s;
	uint64_t page;
	uint32_t n;
	uint8_t *buf;
	bool back;            /* the store gives the buffer back on a timeout */
};

static void snap_image_read_done(void *arg, int res)
{
	struct snap_iread *rd = arg;
	struct snapshot *s = rd->s;
	size_t ps = s->d->page_size;
	int e = res;

	s->reads--;
	if (s->r && !s->finished) {
		for (uint32_t i = 0; i < rd->n && !e; i++)
			if (restore_check(s->r, rd->page + i, rd->buf + i * ps) < 0)
				e = -EIO; /* never copy wrong data */
		if (!e)
			e = write_read_pages(s, rd->page, rd->buf, rd->n);
		if (!e) {
			mark_copied(s, rd->page, rd->n);
		} else {
			log_err("region %" PRIu64 ": snapshot: reading pages %" PRIu64 "+%" PRIu32
				" from the image it was restored from: %s", s->r->id, rd->page,
				rd->n, strerror(-e));
			snap_finish(s, e);
		}
	}
	/* A read the file never answered: its buffer is the engine's. */
	if (rd->back || (res != -ETIMEDOUT && res != -ECANCELED))
		free(rd->buf);
	free(rd);
	if (!s->r) {
		if (!s->reads)
			snap_free(s);
		return;
	}
	snap_kick(s);
}

/* Starts a read of the restore image's pages [page, page+n) for the copy.
 * 0 or -errno. */
static int read_image(struct snapshot *s, uint64_t page, uint32_t n)
{
	struct restore *rs = s->r->restore;
	size_t ps = s->d->page_size;
	struct snap_iread *rd;
	int e;

	if (!rs || !rs->img)
		return -EIO;
	if (rs->failed)
		return rs->failed;
	rd = calloc(1, sizeof(*rd));
	if (!rd)
		return -ENOMEM;
	*rd = (struct snap_iread){ .s = s, .page = page, .n = n,
				   .buf = aligned_alloc(ps, n * ps),
				   .back = store_buffer_back(rs->img, -ETIMEDOUT) };
	e = rd->buf ? store_read(rs->img, page * ps, rd->buf, n * ps,
				 snap_image_read_done, rd) : -ENOMEM;
	if (e < 0) {
		free(rd->buf);
		free(rd);
		return e;
	}
	s->reads++;
	return 0;
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
		if (bit(s->from_image, p)) {
			/* Its data of the instant is in the restore image. */
			uint32_t n = 1;
			int e;

			if (s->reads >= SNAP_READS_MAX) {
				deferred = true;
				budget = 0;
				continue;
			}
			while (n < SNAP_READ_PAGES && p + n < r->npages &&
			       bit(s->pending, p + n) && bit(s->from_image, p + n))
				n++;
			e = read_image(s, p, n);
			if (e < 0) {
				snap_finish(s, e);
				return;
			}
			deferred = true; /* done when the read completes */
			budget = budget > n ? budget - n : 0;
			p += n;
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
			if ((b & PG_GONE) && page_gone(r, p)) {
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
			 * zero pages left out (holes); no more than the
			 * copier's share of the budget has room for. */
			uint64_t n = 1, most = SNAP_RUN, room = 0;

			if (s->bounce < copier_limit(s))
				room = (copier_limit(s) - s->bounce) / s->d->page_size;
			if (room < most)
				most = room ? room : 1;
			while (n < most && p + n < r->npages &&
			       bit(s->pending, p + n) && !bit(s->from_image, p + n) &&
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
			       bit(s->pending, p + n) && !bit(s->from_image, p + n) &&
			       pg_state(r->state[p + n]) == PAGE_SWAPPED &&
			       region_slot(r, p + n) == region_slot(r, p) + n)
				n++;
			e = read_slots(s, p, (uint64_t)region_slot(r, p), n, false);
			deferred = true; /* done when the read completes */
			budget = budget > n ? budget - n : 0;
			p += n;
			break;
		}
		case PAGE_EMPTY:
			/* Evicted as zero or discarded since: a hole.  (A
			 * PG_IMAGE page is from_image: done above.) */
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
			if (s->rbd)
				snap_commit(s);
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

/* A request waiting for a named image to be opened off the loop
 * (IMAGE_INFO, or SET_IMAGE of an RBD image): whose deferred reply. */
struct image_wait {
	struct client *c;
	uint64_t region_id;        /* SET_IMAGE's, or 0: IMAGE_INFO */
	bool prefetch;
	struct store_rbd_job *job;
	char image[PROTO_IMAGE_NAME_MAX];
};

void snapshot_waiter_gone(struct client *c)
{
	if (c->waiting_on)
		c->waiting_on->waiter = NULL;
	c->waiting_on = NULL;
	if (c->waiting_image) {
		store_rbd_job_cancel(c->waiting_image->job);
		free(c->waiting_image);
		c->waiting_image = NULL;
	}
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
		if (b & PG_IMAGE)
			bit_set(s->from_image, p);
	}
	log_info("region %" PRIu64 ": snapshot started: %" PRIu64 " pages to copy; region write-protected in %" PRIu64 " us, writers paused %" PRIu64 " us",
		 r->id, s->total, s->protect_ns / 1000, s->pause_ns / 1000);
	region_changed(r);
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

/* Checks and maps the IMAGE.crc table a snapshot fills: a memfd of its
 * size, sealed against resizing and not against writes.  0 or -errno. */
static int map_crc_table(struct snapshot *s, int crc_fd, uint64_t npages)
{
	int seals = fcntl(crc_fd, F_GET_SEALS);
	const int need = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
	uint32_t hole = zero_page_crc(s->d->page_size), *t;
	struct stat st;

	if (seals < 0 || (seals & need) != need ||
	    (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) || fstat(crc_fd, &st) < 0)
		return -EBADF;
	if ((uint64_t)st.st_size != image_crc_size(npages))
		return -EINVAL;
	s->crc_len = (size_t)st.st_size;
	s->crc_map = mmap(NULL, s->crc_len, PROT_READ | PROT_WRITE, MAP_SHARED, crc_fd, 0);
	if (s->crc_map == MAP_FAILED) {
		s->crc_map = NULL;
		return -errno;
	}
	/* Every page a hole until it is written: holes are never written. */
	t = (uint32_t *)(s->crc_map + IMAGE_CRC_ENTRIES_OFF);
	for (uint64_t p = 0; p < npages; p++)
		t[p] = htole32(hole);
	return 0;
}

/* A snapshot of r with what every kind needs (its page sets and timer);
 * NULL if out of memory. */
static struct snapshot *snap_new(struct region *r)
{
	struct daemon *d = r->client->d;
	size_t words = (r->npages + 63) / 64;
	struct snapshot *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->d = d;
	s->r = r;
	s->fd = -1;
	s->pending = calloc(words, sizeof(uint64_t));
	s->from_image = calloc(words, sizeof(uint64_t));
	s->reprotect = calloc(words, sizeof(uint64_t));
	s->ev = evtimer_new(d->base, on_snap, s);
	if (!s->pending || !s->from_image || !s->reprotect || !s->ev) {
		snap_free(s);
		return NULL;
	}
	return s;
}

int snapshot_start(struct client *requester, struct region *r, int fd, int crc_fd)
{
	struct daemon *d = r->client->d;
	struct snapshot *s;
	struct statx stx;
	bool direct;
	int fl, e;

	/* Cached attributes (AT_STATX_DONT_SYNC): a FUSE or NFS file must
	 * not hold the loop even here.  libpager sized the file. */
	fl = fcntl(fd, F_GETFL);
	if (statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_TYPE | STATX_SIZE,
		  &stx) < 0 || !S_ISREG(stx.stx_mode) || fl < 0 ||
	    (fl & O_ACCMODE) == O_RDONLY || (fl & O_APPEND))
		return -EBADF;
	if (stx.stx_size != r->len)
		return -EINVAL;
	if (r->snap && (!r->snap->finished || r->snap->committing))
		return -EBUSY;
	if (!(r->client->uffd_features & UFFD_FEATURE_WP_HUGETLBFS_SHMEM))
		return -EOPNOTSUPP;
	for (uint64_t p = 0; p < r->npages; p++)
		if (pg_state(r->state[p]) == PAGE_POISONED)
			return -EIO; /* the region already lost data */
	/* Straight to the disk where the filesystem allows: the copy then
	 * runs at the disk's pace without filling the page cache (all our
	 * buffers and offsets are page-aligned). */
	direct = fcntl(fd, F_SETFL, fl | O_DIRECT) == 0;
	if (!direct)
		log_debug("region %" PRIu64 ": image without O_DIRECT: %m", r->id);
	s = snap_new(r);
	if (!s)
		return -ENOMEM;
	e = map_crc_table(s, crc_fd, r->npages);
	if (e < 0) {
		snap_free(s);
		return e;
	}
	{
		char label[64];

		snprintf(label, sizeof(label), "region %" PRIu64 " snapshot image", r->id);
		e = store_file_open(&s->img, d->io, fd, &(struct store_file_opts){
			.label = label, .depth = SNAP_IMAGE_DEPTH,
			.align = direct ? d->page_size : 1,
			.timeout_ms = d->cfg.image_timeout_ms,
		});
	}
	if (e < 0) {
		snap_free(s);
		return e;
	}
	/* From here on fd is ours (the caller's on failure). */
	s->fd = fd;
	e = snap_protect(s, requester);
	if (e < 0) {
		s->fd = -1; /* the caller's */
		snap_free(s);
		return e;
	}
	close(crc_fd); /* its mapping is all we need */
	return REQUEST_DEFERRED;
}

/*
 * Step one starts: the protecting thread, on a dup of the uffd (the
 * client's may close while it runs); s becomes r's snapshot, replacing a
 * finished one.  0, or -ENOMEM with nothing started (s is the caller's).
 */
static int snap_protect(struct snapshot *s, struct client *requester)
{
	struct region *r = s->r;
	struct daemon *d = s->d;

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
		s->protect_ev = NULL;
		return -ENOMEM;
	}
	s->protecting = true;
	if (r->snap && r->snap != s) {
		/* The last one, finished; if writes of it are still out
		 * (they come back within the image timeout), they free it. */
		r->snap->r = NULL;
		if (!r->snap->reads)
			snap_free(r->snap);
	}
	r->snap = s;
	r->watch = &snapshot_watch;
	if (requester) {
		s->waiter = requester;
		requester->waiting_on = s;
	}
	return 0;
}

/* A snapshot's RBD image is open (or not): step one starts. */
static void snap_rbd_opened(void *arg, int res, struct store_rbd_image *img)
{
	struct snapshot *s = arg;
	struct region *r = s->r;
	struct client *waiter = s->waiter;

	s->job = NULL;
	s->preparing = false;
	if (res == 0) {
		s->img = img->st;
		/* The waiter's link moves to the thread's start. */
		s->waiter = NULL;
		if (waiter)
			waiter->waiting_on = NULL;
		res = snap_protect(s, waiter);
		if (res == 0)
			return;
		s->waiter = waiter;
		if (waiter)
			waiter->waiting_on = s;
	} else {
		log_warn("region %" PRIu64 ": snapshot into %s: %s", r->id, s->rbd,
			 strerror(-res));
	}
	reply_to_waiter(s, res);
	r->snap = NULL;
	snap_free(s);
}

int snapshot_start_rbd(struct client *requester, struct region *r, const char *image)
{
	struct daemon *d = r->client->d;
	uint32_t hole = zero_page_crc(d->page_size), *t;
	struct snapshot *s;
	int e;

	if (r->snap && !r->snap->finished)
		return -EBUSY;
	if (r->snap && (r->snap->committing || r->snap->reads))
		return -EBUSY; /* the last one's image is not let go yet */
	if (!(r->client->uffd_features & UFFD_FEATURE_WP_HUGETLBFS_SHMEM))
		return -EOPNOTSUPP;
	for (uint64_t p = 0; p < r->npages; p++)
		if (pg_state(r->state[p]) == PAGE_POISONED)
			return -EIO;
	s = snap_new(r);
	if (!s)
		return -ENOMEM;
	s->rbd = strdup(image);
	/* IMAGE.crc in memory of our own: pagerd writes it to the cluster. */
	s->crc_len = (size_t)image_crc_size(r->npages);
	s->crc_map = mmap(NULL, s->crc_len, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (s->crc_map == MAP_FAILED)
		s->crc_map = NULL;
	if (!s->rbd || !s->crc_map) {
		snap_free(s);
		return -ENOMEM;
	}
	t = (uint32_t *)(s->crc_map + IMAGE_CRC_ENTRIES_OFF);
	for (uint64_t p = 0; p < r->npages; p++)
		t[p] = htole32(hole);
	e = store_rbd_image_open(image, &(struct store_rbd_job_opts){
		.mode = STORE_RBD_SNAPSHOT, .size = r->len, .depth = SNAP_IMAGE_DEPTH,
		.align = d->page_size,
	}, snap_rbd_opened, s, &s->job);
	if (e < 0) {
		s->job = NULL;
		snap_free(s);
		return e;
	}
	s->preparing = true;
	if (r->snap) {
		r->snap->r = NULL;
		snap_free(r->snap);
	}
	/* r's snapshot already (a second one is refused), with nothing
	 * pending until its instant. */
	r->snap = s;
	s->waiter = requester;
	requester->waiting_on = s;
	log_info("region %" PRIu64 ": snapshot into %s: opening the image", r->id, image);
	return REQUEST_DEFERRED;
}

int snapshot_keep_order(struct region *r, int order_fd)
{
	struct snapshot *s = r->snap;
	const int need = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
	int seals = fcntl(order_fd, F_GET_SEALS);
	size_t len = image_order_size(IMAGE_ORDER_MAX);
	struct stat st;
	void *map;

	if (!s || s->finished || s->order_map)
		return -EINVAL;
	if (seals < 0 || (seals & need) != need ||
	    (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) || fstat(order_fd, &st) < 0)
		return -EBADF;
	if ((uint64_t)st.st_size != len)
		return -EINVAL;
	map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, order_fd, 0);
	if (map == MAP_FAILED)
		return -errno;
	s->order_map = map;
	s->order_len = len;
	close(order_fd);
	return 0;
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
	ret->done = s->finished && !s->reads && !s->committing && !s->preparing;
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
	if (s && s->preparing)
		reply_to_waiter(s, -ESHUTDOWN); /* its image still opening */
	/* An RBD image still committing may or may not end complete: the
	 * successor cannot tell, so it reports a failure. */
	if (s && s->committing)
		s->status = -ESHUTDOWN;
	if (s && !s->finished)
		snap_finish(s, -ESHUTDOWN);
}

void snapshot_drain(struct region *r)
{
	struct snapshot *s = r->snap;

	/* What is left in flight are image reads and writes (the swap store
	 * ran its reads' completions when it closed): wait for them, within
	 * the image timeout. */
	while (s && s->reads) {
		if (io_engine_wait(s->d->io) < 0) {
			s->status = -ESHUTDOWN; /* cannot tell: not whole */
			return;
		}
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
	s->finished = true;
	s->status = status;
	s->total = total;
	s->done = done;
	s->pause_ns = pause_ns;
	r->snap = s;
}

static void restore_gone(struct region *r);

void snapshot_region_gone(struct region *r)
{
	struct snapshot *s = r->snap;

	if (s) {
		r->snap = NULL;
		s->r = NULL;
		protect_join(s);
		reply_to_waiter(s, -ECANCELED);
		snap_finish(s, -ECANCELED);
		if (!s->reads)
			snap_free(s);
	}
	restore_gone(r);
}

/* ---- restore ------------------------------------------------------------ */

/*
 * Whether a page read from the image is what the snapshot wrote: 0, or
 * -EBADMSG (its CRC32C is not the table's: the image was rewritten in
 * place, a hole got data, data was punched).  An image without a table
 * (format 1) is not checked.
 */
static int restore_check(struct region *r, uint64_t page, const uint8_t *buf)
{
	const struct restore *rs = r->restore;
	size_t ps = r->client->d->page_size;

	if (!rs || !rs->crc)
		return 0;
	return crc32c(0, buf, ps) == le32toh(rs->crc[page]) ? 0 : -EBADMSG;
}

/* The page's data cannot be had: never zeros in its place. */
static void restore_poison(struct region *r, uint64_t page)
{
	if (r->state[page] != (PAGE_EMPTY | PG_IMAGE))
		return;
	page_poisoned(r, page);
	counter_add(r, poisoned, 1);
	/* Not in a fault: if an event is unread, wake whoever waits; they
	 * fault again and find the page poisoned. */
	if (uffd_poison(r, page) == -EAGAIN)
		uffd_wake(r->client, r->addr + page * r->client->d->page_size,
			  r->client->d->page_size);
}

/* Whether a read in flight covers page. */
static bool restore_reading(const struct restore *rs, uint64_t page)
{
	for (const struct restore_read *rd = rs->reads; rd; rd = rd->next)
		if (page >= rd->page && page < rd->page + rd->n)
			return true;
	return false;
}

/* How many PG_IMAGE pages from `page` on, not being read, at most max. */
static uint64_t image_run(const struct region *r, uint64_t page, uint64_t max)
{
	uint64_t n = 0;

	while (n < max && page + n < r->npages &&
	       r->state[page + n] == (PAGE_EMPTY | PG_IMAGE) &&
	       !restore_reading(r->restore, page + n))
		n++;
	return n;
}

static void restore_kick_prefetch(struct region *r);
static void restore_start_prefetch(struct region *r);
static void restore_learn_finish(struct region *r);

/* Pages the table says held data, not PG_IMAGE yet, become PG_IMAGE: a
 * file image's data punched since (read as zeros, they fail their check,
 * never restored as zeros), every data page of an RBD image (whose holes
 * only the table tells). */
static void restore_table_pages(struct region *r)
{
	for (uint64_t p = 0; r->restore->crc && p < r->npages; p++) {
		if (!(r->state[p] & PG_IMAGE) &&
		    le32toh(r->restore->crc[p]) != r->restore->hole_crc)
			page_in_image(r, p);
	}
}

/*
 * Installs the pages [page, page+n) read into buf: those still PG_IMAGE
 * (not discarded or installed meanwhile) and matching their CRC32C go into
 * the page cache (only complete, checked data goes there: the kernel maps
 * it on the client's next access), resident and dirty (no swap copy),
 * protected if a snapshot still needs them; a mismatching page is
 * poisoned.  Returns the pages installed.
 */
static uint64_t restore_install(struct region *r, uint64_t page, uint64_t n,
				const uint8_t *buf)
{
	size_t ps = r->client->d->page_size;
	uint64_t bad = 0, installed = 0;

	for (uint64_t i = 0; i < n;) {
		uint64_t k = 0;
		bool wp = false;
		int64_t done;

		if (r->state[page + i] != (PAGE_EMPTY | PG_IMAGE)) {
			i++;
			continue;
		}
		if (restore_check(r, page + i, buf + i * ps) < 0) {
			bad++;
			log_warn_rl(r->client->id, "region %" PRIu64 ": page %" PRIu64
				    " of its image fails its CRC32C check (the image changed "
				    "since the snapshot): poisoned", r->id, page + i);
			restore_poison(r, page + i);
			i++;
			continue;
		}
		while (i + k < n && r->state[page + i + k] == (PAGE_EMPTY | PG_IMAGE) &&
		       (k == 0 || restore_check(r, page + i + k, buf + (i + k) * ps) == 0))
			k++;
		for (uint64_t p = page + i; p < page + i + k; p++)
			wp |= snapshot_pending(r, p);
		done = region_install(r, page + i, k, buf + i * ps, wp);
		if (done < 0 || (uint64_t)done < k) {
			log_err("region %" PRIu64 ": installing pages %" PRIu64 "+%" PRIu64
				" from its image: %s", r->id, page + i, k,
				strerror(done < 0 ? (int)-done : EIO));
			/* The first pages went in; the rest stay in the image. */
			if (done > 0) {
				page_image_read(r, page + i, (uint64_t)done);
				counter_add(r, image_reads, (uint64_t)done);
				installed += (uint64_t)done;
			}
			return installed;
		}
		page_image_read(r, page + i, k);
		counter_add(r, image_reads, k);
		installed += k;
		i += k;
	}
	(void)bad;
	return installed;
}

static void restore_read_done(void *arg, int res)
{
	struct restore_read *rd = arg, **pp;
	struct restore *rs = rd->rs;
	struct region *r = rs->r;

	for (pp = &rs->reads; *pp != rd; pp = &(*pp)->next)
		;
	*pp = rd->next;
	rs->nreads--;
	rs->reading -= rd->n;
	if (r && res == 0) {
		uint64_t got = restore_install(r, rd->page, rd->n, rd->buf);

		if (rd->learned)
			counter_add(r, image_learned_reads, got);
		learn_read(rs->rec, rd->page, rd->n, rd->learned);
		if (!r->image_pending)
			restore_learn_finish(r);
	} else if (r) {
		log_err_rl(r->client->id, "region %" PRIu64 ": reading pages %" PRIu64 "+%" PRIu64
			   " from its image: %s%s", r->id, rd->page, rd->n, strerror(-res),
			   res == -ETIMEDOUT ? "; the image no longer answers: its pages "
			   "not yet read are lost (SIGBUS on access)" : "");
		if (res == -ETIMEDOUT)
			rs->failed = res;
		if (rd->fault_page != UINT64_MAX)
			restore_poison(r, rd->fault_page);
	}
	if (r) {
		struct client *c = r->client;
		size_t ps = c->d->page_size;

		if (rd->fault_page != UINT64_MAX &&
		    pg_state(r->state[rd->fault_page]) == PAGE_RESIDENT)
			page_referenced(r, rd->fault_page);
		/* Every thread that faulted on one of these pages meanwhile
		 * waits on it: mapped now, or faulting again (and then
		 * poisoned, or read again). */
		uffd_wake(c, r->addr + rd->page * ps, rd->n * ps);
		if (limits_pressure(r))
			evict_kick(c->d);
		restore_kick_prefetch(r);
	}
	/* A read the file never answered: its buffer is the engine's. */
	if (rd->back || (res != -ETIMEDOUT && res != -ECANCELED))
		free(rd->buf);
	free(rd);
}

/* Starts a read of the image's pages [page, page+n) (PG_IMAGE, none being
 * read), for a thread waiting on fault_page (or UINT64_MAX), or for the
 * learned prefetch.  0 or -errno. */
static int restore_start(struct region *r, uint64_t page, uint64_t n,
			 uint64_t fault_page, bool learned)
{
	struct restore *rs = r->restore;
	size_t ps = r->client->d->page_size;
	struct restore_read *rd = calloc(1, sizeof(*rd));
	int e;

	if (!rd)
		return -ENOMEM;
	*rd = (struct restore_read){ .rs = rs, .page = page, .n = n,
				     .fault_page = fault_page, .learned = learned,
				     .buf = aligned_alloc(ps, n * ps),
				     .back = store_buffer_back(rs->img, -ETIMEDOUT) };
	e = rd->buf ? store_read(rs->img, page * ps, rd->buf, n * ps,
				 restore_read_done, rd) : -ENOMEM;
	if (e < 0) {
		free(rd->buf);
		free(rd);
		return e;
	}
	rd->next = rs->reads;
	rs->reads = rd;
	rs->nreads++;
	rs->reading += n;
	return 0;
}

/* Room for pages being read too: they will be resident. */
static uint64_t restore_room(struct region *r)
{
	uint64_t room = limits_room(r), reading = r->restore->reading;

	return room > reading ? room - reading : 0;
}

int restore_fault(struct client *c, struct region *r, uint64_t page)
{
	struct restore *rs = r->restore;
	uint64_t room, n;
	int e;

	/* The application waits on it: first in the order it learns (a
	 * fault parked and retried is one page, counted once). */
	if (rs)
		learn_fault(rs->rec, page);
	if (!rs || rs->failed) {
		/* The image stopped answering: its data cannot be had. */
		restore_poison(r, page);
		return 0;
	}
	if (rs->job)
		/* Waits in the kernel until the image is open again
		 * (restore_reopened() wakes the region), not parked: a
		 * parked fault would be retried at every turn meanwhile. */
		return 0;
	if (restore_reading(rs, page))
		return 0; /* the read in flight wakes it */
	room = restore_room(r);
	if (room == 0 || rs->nreads >= RESTORE_READS_MAX * rs->scale)
		return -ENOSPC; /* the caller parks the fault */
	/* A little readahead: images are read mostly in order. */
	n = image_run(r, page, RESTORE_AROUND < room ? RESTORE_AROUND : room);
	e = restore_start(r, page, n ? n : 1, page, false);
	if (e < 0) {
		log_err("region %" PRIu64 ": reading page %" PRIu64 " from its image: %s",
			r->id, page, strerror(-e));
		restore_poison(r, page);
	}
	(void)c;
	return 0;
}

static int cmp_page(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * The learned prefetch: the pages of the learned order, the first listed
 * first, each read in a run with its neighbours in the order (the next
 * LEARN_WINDOW pages of it) that lie at most LEARN_GAP apart, with the
 * image pages between them; up to LEARN_READS reads in flight, within the
 * room the limits leave (PREFETCH_SPARE of it stays for faults: the
 * prefetch never makes eviction take the application's pages).  Holes
 * and pages already in (or being read) end a run: they are never read.
 * Returns true while pages of the order are still to be read.
 */
static bool prefetch_learned(struct region *r)
{
	struct restore *rs = r->restore;
	uint64_t win[LEARN_WINDOW];

	while (rs->order_next < rs->norder) {
		uint64_t room = restore_room(r), head, lo, hi;
		size_t nw = 0, at;

		if (rs->failed || rs->nreads >= LEARN_READS * rs->scale || room <= PREFETCH_SPARE)
			return true;
		room -= PREFETCH_SPARE;
		/* Pages of the order that came in (or are coming) meanwhile
		 * are done. */
		if (!image_run(r, rs->order[rs->order_next], 1)) {
			rs->order_next++;
			continue;
		}
		head = rs->order[rs->order_next];
		for (size_t i = rs->order_next; i < rs->norder && nw < LEARN_WINDOW; i++)
			if (image_run(r, rs->order[i], 1))
				win[nw++] = rs->order[i];
		qsort(win, nw, sizeof(win[0]), cmp_page);
		for (at = 0; win[at] != head; at++)
			;
		lo = hi = head;
		/* Grow the run to the neighbours, nearer ones first: down,
		 * then up, while the pages between are all still in the
		 * image and it fits. */
		for (size_t k = at; k > 0; k--) {
			uint64_t p = win[k - 1];

			if (lo - p > LEARN_GAP || hi - p + 1 > LEARN_RUN || hi - p + 1 > room ||
			    image_run(r, p, lo - p) != lo - p)
				break;
			lo = p;
		}
		for (size_t k = at + 1; k < nw; k++) {
			uint64_t p = win[k];

			if (p - hi > LEARN_GAP || p - lo + 1 > LEARN_RUN || p - lo + 1 > room ||
			    image_run(r, hi + 1, p - hi) != p - hi)
				break;
			hi = p;
		}
		if (restore_start(r, lo, hi - lo + 1, UINT64_MAX, true) < 0)
			return true; /* no memory now: a completion tries again */
		rs->order_next++;
	}
	return false;
}

/*
 * The address-order prefetch's run from `page` (in the image, not being
 * read), at most max pages.  After a learned prefetch the pages it read
 * are scattered through the rest, and runs stopped at each would be
 * short: a run then also spans pages of the image already read (reading
 * them again costs the disk less than another request, and
 * restore_install() installs only pages still in the image), never a
 * hole (the IMAGE.crc table says which pages hold data) or a page being
 * read.  It ends on a page still in the image.
 */
static uint64_t prefetch_run(const struct region *r, uint64_t page, uint64_t max)
{
	const struct restore *rs = r->restore;
	uint64_t n = 0, end = 0;

	if (!rs->norder || !rs->crc)
		return image_run(r, page, max);
	for (; n < max && page + n < r->npages; n++) {
		uint64_t p = page + n;

		if (restore_reading(rs, p))
			break;
		if (r->state[p] == (PAGE_EMPTY | PG_IMAGE))
			end = n + 1;
		else if ((r->state[p] & PG_IMAGE) || le32toh(rs->crc[p]) == rs->hole_crc)
			break;
	}
	return end;
}

static void on_prefetch(evutil_socket_t fd, short what, void *arg)
{
	struct region *r = arg;
	struct restore *rs = r->restore;
	uint64_t p = rs->prefetch_next;

	(void)fd;
	(void)what;
	/* The learned order first; the rest in address order after it. */
	if (prefetch_learned(r))
		return;
	/* PREFETCH_READS full reads in flight at most; more, shorter ones
	 * where holes (or pages the learned prefetch took) cut the runs. */
	while (!rs->failed && r->image_pending > rs->reading &&
	       rs->nreads < LEARN_READS * rs->scale &&
	       rs->reading < PREFETCH_READS * rs->scale * PREFETCH_BATCH) {
		uint64_t room = restore_room(r), n;

		if (room <= PREFETCH_SPARE)
			return; /* faults need the room more; try no further */
		while (p < r->npages && !image_run(r, p, 1))
			p++;
		if (p >= r->npages) {
			p = 0; /* from the start: pages may have been skipped */
			break;
		}
		n = prefetch_run(r, p, PREFETCH_BATCH < room - PREFETCH_SPARE ?
				       PREFETCH_BATCH : room - PREFETCH_SPARE);
		if (restore_start(r, p, n, UINT64_MAX, false) < 0)
			break;
		p += n;
	}
	rs->prefetch_next = p;
}

/* A read completed: the prefetch goes on, if it runs. */
static void restore_kick_prefetch(struct region *r)
{
	static const struct timeval now = { 0, 0 };

	if (r->restore->prefetch_ev && r->image_pending && !r->restore->failed)
		evtimer_add(r->restore->prefetch_ev, &now);
}

/*
 * Checks the IMAGE.crc table in crc_fd (sealed against every change: it is
 * trusted once checked) for an image of r's pages and maps it.  0 or
 * -EINVAL with the reason logged.
 */
static int restore_load_table(struct restore *rs, struct region *r, int crc_fd)
{
	size_t ps = r->client->d->page_size, len = image_crc_size(r->npages);
	const int need = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
	int seals = fcntl(crc_fd, F_GET_SEALS);
	const struct image_crc_hdr *h;
	const char *why = NULL;
	struct stat st;
	void *map;

	if (seals < 0 || (seals & need) != need || fstat(crc_fd, &st) < 0 ||
	    (uint64_t)st.st_size != len) {
		log_warn("region %" PRIu64 ": the image's checksum table is not a sealed "
			 "memfd of %zu bytes", r->id, len);
		return -EINVAL;
	}
	map = mmap(NULL, len, PROT_READ, MAP_SHARED, crc_fd, 0);
	if (map == MAP_FAILED)
		return -errno;
	h = map;
	if (memcmp(h->magic, IMAGE_CRC_MAGIC, sizeof(h->magic)) ||
	    le32toh(h->version) != IMAGE_CRC_VERSION ||
	    le32toh(h->hdr_crc) != crc32c(0, h, offsetof(struct image_crc_hdr, hdr_crc)))
		why = "not a checksum table, or a damaged header";
	else if (le32toh(h->page_size) != ps || le64toh(h->pages) != r->npages ||
		 le32toh(h->hole_crc) != zero_page_crc(ps))
		why = "made for another page size or image size";
	else if (le32toh(h->table_crc) != crc32c(0, (const uint8_t *)map + IMAGE_CRC_ENTRIES_OFF,
						  r->npages * 4))
		why = "its entries are damaged";
	if (why) {
		log_warn("region %" PRIu64 ": the image's checksum table is refused: %s",
			 r->id, why);
		munmap(map, len);
		return -EINVAL;
	}
	rs->crc_map = map;
	rs->crc_len = len;
	rs->crc = (const uint32_t *)((const uint8_t *)map + IMAGE_CRC_ENTRIES_OFF);
	rs->hole_crc = zero_page_crc(ps);
	return 0;
}

static void restore_free(struct restore *rs)
{
	store_rbd_job_cancel(rs->job);
	free(rs->rbd);
	learn_free(rs->rec);
	free(rs->order);
	if (rs->prefetch_ev)
		event_free(rs->prefetch_ev);
	if (rs->image_fd >= 0)
		close(rs->image_fd);
	if (rs->crc_map)
		munmap(rs->crc_map, rs->crc_len);
	if (rs->crc_fd >= 0)
		close(rs->crc_fd);
	free(rs);
}

/* Sets up r->restore on fd and crc_fd (taken, -1: none).  0 or -errno;
 * crc_fd is closed on failure, and fd is still the caller's, unless `keep`:
 * then a restore that cannot read its image (failed) keeps fd all the same,
 * for the fd store (an adopted region's). */
static int restore_new(struct region *r, int fd, int crc_fd, bool prefetch,
		       bool keep, struct store *img)
{
	struct daemon *d = r->client->d;
	struct restore *rs = calloc(1, sizeof(*rs));
	char label[64];
	int e;

	if (!rs) {
		if (crc_fd >= 0)
			close(crc_fd);
		if (keep)
			close(fd);
		store_close(img);
		return -ENOMEM;
	}
	rs->r = r;
	rs->img = img;
	rs->crc_fd = crc_fd;
	rs->image_fd = fd;
	rs->prefetch = prefetch;
	/* Without memory for it nothing is learned: only an order is lost. */
	rs->rec = learn_new(r->npages);
	e = crc_fd >= 0 ? restore_load_table(rs, r, crc_fd) : 0;
	if (e == 0 && !rs->img && fd >= 0) {
		snprintf(label, sizeof(label), "region %" PRIu64 " restore image", r->id);
		e = store_file_open(&rs->img, d->io, fd, &(struct store_file_opts){
			.label = label, .depth = RESTORE_READS_MAX, .align = 1,
			.timeout_ms = d->cfg.image_timeout_ms,
		});
	}
	rs->scale = rs->img && rs->img->read_depth > RESTORE_READS_MAX ?
		    rs->img->read_depth / RESTORE_READS_MAX : 1;
	if (e < 0 && !keep) {
		rs->image_fd = -1; /* the caller's */
		store_close(rs->img); /* a named image's: taken */
		restore_free(rs);
		return e;
	}
	if (e < 0) {
		/* Nothing is read from it: its pages are poisoned as faulted. */
		if (rs->crc_map)
			munmap(rs->crc_map, rs->crc_len);
		if (rs->crc_fd >= 0)
			close(rs->crc_fd);
		rs->crc_map = NULL;
		rs->crc = NULL;
		rs->crc_fd = -1;
		rs->failed = e;
	} else if (!rs->crc) {
		log_warn("region %" PRIu64 ": its image has no checksum table (made before "
			 "pagerd kept one): its pages are restored unchecked", r->id);
	}
	r->restore = rs;
	return e;
}

static void restore_gone(struct region *r)
{
	struct restore *rs = r->restore;

	if (!rs)
		return;
	r->restore = NULL;
	rs->r = NULL;
	/* Every read calls back now (-ECANCELED: what the file still holds
	 * is the engine's). */
	if (rs->img)
		store_close(rs->img);
	restore_free(rs);
}

int restore_crc_fd(const struct region *r)
{
	return r->restore ? r->restore->crc_fd : -1;
}

int restore_image_fd(const struct region *r)
{
	return r->restore ? r->restore->image_fd : -1;
}

bool restore_prefetching(const struct region *r)
{
	return r->restore && r->restore->prefetch;
}

/* The application's page tables: its pagemap, and where r starts in it. */
static int region_pagemap(const struct region *r, uint64_t *ret_base)
{
	*ret_base = r->addr / r->client->d->page_size;
	return r->client->pagemap;
}

/* The whole image is in: what the application touched by now is its cold
 * start, and the recording ends (learn_build() with finish). */
static void restore_learn_finish(struct region *r)
{
	struct restore *rs = r->restore;
	uint64_t base, *order;
	size_t n;
	int pm;

	if (!rs || !learn_recording(rs->rec))
		return;
	pm = region_pagemap(r, &base);
	if (learn_build(rs->rec, pm, base, true, &order, &n) == 0) {
		log_info("region %" PRIu64 ": restore complete; the application touched %zu "
			 "of its pages first (its learned order)", r->id, n);
		free(order);
	}
}

int restore_order_recorded(struct region *r, uint64_t **ret, size_t *ret_n)
{
	struct restore *rs = r->restore;
	uint64_t base;
	int pm, e;

	*ret = NULL;
	*ret_n = 0;
	if (!rs)
		return 0;
	pm = region_pagemap(r, &base);
	e = learn_build(rs->rec, pm, base, false, ret, ret_n);
	if (e < 0 || *ret_n || !rs->norder)
		return e;
	/* Nothing seen (no page table to read, nothing touched yet): the
	 * order it was restored with is still the best guess. */
	*ret = malloc(rs->norder * sizeof(**ret));
	if (!*ret)
		return -ENOMEM;
	memcpy(*ret, rs->order, rs->norder * sizeof(**ret));
	*ret_n = rs->norder;
	return 0;
}

int restore_set_order(struct region *r, uint64_t *order, size_t n)
{
	struct restore *rs = r->restore;

	for (size_t i = 0; i < n; i++) {
		if (order[i] >= r->npages) {
			free(order);
			return -EINVAL;
		}
	}
	if (!rs) {
		free(order);
		return -ENOENT;
	}
	free(rs->order);
	rs->order = order;
	rs->norder = n;
	rs->order_next = 0;
	if (n)
		log_info("region %" PRIu64 ": %s %zu pages of its learned order first", r->id,
			 rs->prefetch ? "prefetching" : "not prefetching (asked not to)", n);
	restore_kick_prefetch(r);
	return 0;
}

/* An IMAGE.order of len bytes at buf (NULL: none; why: why it is
 * unusable, or NULL) checked against r's image and given to its prefetch,
 * or ignored with the reason logged: it only steers the order of reads. */
static void restore_take_order(struct region *r, const void *buf, size_t len,
			       const char *why)
{
	const struct image_crc_hdr *h;
	uint64_t *order = NULL;
	size_t n = 0;
	int e;

	if (!r->restore || (!buf && !why))
		return;
	if (!why) {
		h = (const struct image_crc_hdr *)r->restore->crc_map;
		e = learn_order_decode(buf, len, r->npages, (uint32_t)r->client->d->page_size,
				       h ? le32toh(h->table_crc) : 0, &order, &n, &why);
		if (e == -ENOMEM)
			why = "no memory for it";
	}
	if (why) {
		log_warn("region %" PRIu64 ": its image's learned order (IMAGE.order) is "
			 "ignored: %s; restoring without it", r->id, why);
		return;
	}
	if (n)
		restore_set_order(r, order, n);
	else
		free(order);
}

void restore_load_order(struct region *r, int order_fd)
{
	const char *why = NULL;
	struct stat st;
	int seals = fcntl(order_fd, F_GET_SEALS);
	const int need = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
	void *map = MAP_FAILED;

	if (!r->restore)
		return;
	if (seals < 0 || (seals & need) != need || fstat(order_fd, &st) < 0) {
		why = "not handed as a sealed memfd";
	} else if (st.st_size < IMAGE_ORDER_ENTRIES_OFF) {
		why = "shorter than its header (cut short)";
	} else if ((uint64_t)st.st_size > image_order_size(IMAGE_ORDER_MAX)) {
		why = "larger than the format allows";
	} else {
		map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, order_fd, 0);
		if (map == MAP_FAILED)
			why = "it cannot be mapped";
	}
	restore_take_order(r, map == MAP_FAILED ? NULL : map, why ? 0 : (size_t)st.st_size,
			   why);
	if (map != MAP_FAILED)
		munmap(map, (size_t)st.st_size);
}

int restore_attach(struct region *r, int fd, int crc_fd, bool prefetch)
{
	size_t ps = r->client->d->page_size;
	struct statx stx;
	off_t off = 0;
	int e;

	if (r->restore)
		return -EBUSY;
	if (r->resident || r->swapped)
		return -EBUSY; /* only a fresh region takes an image */
	if (statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_TYPE | STATX_SIZE,
		  &stx) < 0 || !S_ISREG(stx.stx_mode) || stx.stx_size != r->len)
		return -EINVAL;
	e = restore_new(r, fd, crc_fd, prefetch, false, NULL);
	if (e < 0)
		return e;
	/* Data extents become PG_IMAGE pages; holes stay plain empty.  So do
	 * pages the table says held data, holes now: read as zeros, they
	 * fail their check (never restored as zeros). */
	for (;;) {
		off_t data = lseek(fd, off, SEEK_DATA), hole;

		if (data < 0)
			break; /* ENXIO: no more data */
		hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0)
			hole = (off_t)stx.stx_size;
		for (uint64_t p = (uint64_t)data / ps;
		     p < r->npages && p * ps < (uint64_t)hole; p++) {
			if (!(r->state[p] & PG_IMAGE))
				page_in_image(r, p);
		}
		off = hole;
	}
	restore_table_pages(r);
	restore_start_prefetch(r);
	log_info("region %" PRIu64 ": restoring %" PRIu64 " pages from an image%s%s",
		 r->id, r->image_pending, prefetch ? ", prefetching" : "",
		 r->restore->crc ? ", each checked against its CRC32C" : "");
	return 0;
}

/*
 * A named image (rbd:...) opened and its table read (image_opened()):
 * the pages the table says held data are PG_IMAGE, the holes it says
 * stay plain empty pages, zero-filled with no read.  Takes st and crc_fd.
 */
static int restore_attach_store(struct region *r, struct store *st, int crc_fd,
				const void *order, size_t order_len, bool prefetch,
				const char *image)
{
	int e;

	if (r->restore || r->resident || r->swapped) {
		store_close(st);
		close(crc_fd);
		return -EBUSY; /* only a fresh region takes an image */
	}
	e = restore_new(r, -1, crc_fd, prefetch, false, st);
	if (e < 0)
		return e;
	/* For the fd store: a successor opens it again by this name.
	 * Without memory for it, a restart loses the restore's rest. */
	r->restore->rbd = strdup(image);
	restore_table_pages(r);
	restore_start_prefetch(r);
	log_info("region %" PRIu64 ": restoring %" PRIu64 " pages from %s%s, each checked "
		 "against its CRC32C", r->id, r->image_pending, image,
		 prefetch ? ", prefetching" : "");
	/* Its learned order, read beside it (pagerd_order.IMAGE). */
	restore_take_order(r, order, order_len, NULL);
	region_changed(r);
	return 0;
}

static void image_opened(void *arg, int res, struct store_rbd_image *img)
{
	struct image_wait *w = arg;
	struct client *c = w->c;
	struct proto_reply out;
	struct region *r;

	memset(&out, 0, sizeof(out));
	c->waiting_image = NULL;
	if (res == 0 && !w->region_id) {
		out.image = (struct proto_image_info){
			.size = img->meta.size, .data_pages = img->meta.data_pages,
			.created = img->meta.created, .page_size = img->meta.page_size,
			.format = img->meta.format,
		};
		memcpy(out.image.name, img->meta.name, sizeof(out.image.name));
		out.image.name[sizeof(out.image.name) - 1] = '\0';
	} else if (res == 0) {
		r = region_find_id(c, w->region_id);
		if (!r || img->meta.size != r->len) {
			store_close(img->st);
			close(img->crc_fd);
			res = r ? -EINVAL : -ENOENT;
		} else {
			res = restore_attach_store(r, img->st, img->crc_fd, img->order,
						   img->order_len, w->prefetch, w->image);
		}
	}
	if (img)
		free(img->order);
	free(w);
	client_reply_deferred(c, res, &out);
}

/* Opens `image` for c's deferred request.  REQUEST_DEFERRED or -errno. */
static int image_wait_start(struct client *c, uint64_t region_id, const char *image,
			    bool prefetch)
{
	struct daemon *d = c->d;
	struct image_wait *w;
	int e;

	if (c->waiting_image)
		return -EBUSY;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	*w = (struct image_wait){ .c = c, .region_id = region_id, .prefetch = prefetch };
	snprintf(w->image, sizeof(w->image), "%s", image);
	e = store_rbd_image_open(image, &(struct store_rbd_job_opts){
		.mode = region_id ? STORE_RBD_RESTORE : STORE_RBD_INFO,
		.page_size = (uint32_t)d->page_size, .depth = RESTORE_READS_MAX,
		.align = d->page_size,
	}, image_opened, w, &w->job);
	if (e < 0) {
		free(w);
		return e;
	}
	c->waiting_image = w;
	return REQUEST_DEFERRED;
}

int restore_attach_rbd(struct client *c, struct region *r, const char *image,
		       bool prefetch)
{
	if (r->restore || r->resident || r->swapped)
		return -EBUSY;
	return image_wait_start(c, r->id, image, prefetch);
}

int image_info_rbd(struct client *c, const char *image)
{
	return image_wait_start(c, 0, image, false);
}

static void restore_start_prefetch(struct region *r)
{
	struct restore *rs = r->restore;

	if (rs->prefetch && r->image_pending) {
		static const struct timeval now = { 0, 0 };

		rs->prefetch_ev = evtimer_new(r->client->d->base, on_prefetch, r);
		if (rs->prefetch_ev)
			evtimer_add(rs->prefetch_ev, &now);
	}
}

const char *restore_image_name(const struct region *r)
{
	return r->restore && !r->restore->failed ? r->restore->rbd : NULL;
}

/* An adopted region's image, opened again by name (restore_resume_rbd()). */
static void restore_reopened(void *arg, int res, struct store_rbd_image *img)
{
	struct region *r = arg;
	struct restore *rs = r->restore;
	struct stat st;
	void *map = MAP_FAILED;

	rs->job = NULL;
	/* The very snapshot the table was made for: the same table. */
	if (res == 0 && (img->meta.size != r->len || !rs->crc ||
			 fstat(img->crc_fd, &st) < 0 || (size_t)st.st_size != rs->crc_len ||
			 (map = mmap(NULL, rs->crc_len, PROT_READ, MAP_SHARED, img->crc_fd,
				     0)) == MAP_FAILED ||
			 memcmp(map, rs->crc_map, rs->crc_len))) {
		log_warn("region %" PRIu64 ": %s is not the snapshot it was restoring from "
			 "(another size or checksum table): its pages not read yet are lost",
			 r->id, rs->rbd);
		res = -ESTALE;
	}
	if (map != MAP_FAILED)
		munmap(map, rs->crc_len);
	if (img) {
		if (res < 0)
			store_close(img->st);
		close(img->crc_fd);
	}
	if (res < 0) {
		if (res != -ESTALE)
			log_warn("region %" PRIu64 ": %s cannot be opened again: %s: its pages "
				 "not read yet are lost", r->id, rs->rbd, strerror(-res));
		rs->failed = res;
	} else {
		rs->img = img->st;
		rs->scale = rs->img->read_depth > RESTORE_READS_MAX ?
			    rs->img->read_depth / RESTORE_READS_MAX : 1;
		log_info("region %" PRIu64 ": %s open again: restoring its %" PRIu64
			 " pages still in it", r->id, rs->rbd, r->image_pending);
		restore_start_prefetch(r);
		restore_take_order(r, img->order, img->order_len, NULL);
	}
	if (img)
		free(img->order);
	/* The faults that waited fault again: read, or poisoned. */
	uffd_wake(r->client, r->addr, r->len);
}

int restore_resume_rbd(struct region *r, const char *image, int crc_fd, bool prefetch)
{
	struct daemon *d = r->client->d;
	struct restore *rs;
	int e = restore_new(r, -1, crc_fd, prefetch, true, NULL);

	if (e < 0)
		return e;
	rs = r->restore;
	rs->rbd = strdup(image);
	if (!rs->crc || !rs->rbd) {
		/* No table to know the image by: nothing is read from it. */
		rs->failed = rs->rbd ? -EINVAL : -ENOMEM;
		return rs->failed;
	}
	e = store_rbd_image_open(image, &(struct store_rbd_job_opts){
		.mode = STORE_RBD_RESTORE, .page_size = (uint32_t)d->page_size,
		.depth = RESTORE_READS_MAX, .align = d->page_size,
	}, restore_reopened, r, &rs->job);
	if (e < 0) {
		rs->job = NULL;
		rs->failed = e;
		log_warn("region %" PRIu64 ": %s cannot be opened again: %s: its pages not "
			 "read yet are lost", r->id, image, strerror(-e));
		return e;
	}
	log_info("region %" PRIu64 ": opening %s again to restore its %" PRIu64
		 " pages still in it", r->id, image, r->image_pending);
	return 0;
}

int restore_resume(struct region *r, int fd, int crc_fd, bool prefetch)
{
	int e = restore_new(r, fd, crc_fd, prefetch, true, NULL);

	if (e < 0)
		return e;
	restore_start_prefetch(r);
	return 0;
}
