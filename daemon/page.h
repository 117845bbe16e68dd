/* SPDX-License-Identifier: MIT */
/*
 * page.c: the one owner of page states (pagerd.h: enum page_state, PG_*)
 * and of every count kept from them: resident, swapped, being written out
 * (writeback) per region, client and daemon, image_pending per region, and
 * the daemon's swap-in reads in flight (reading).  Nothing else writes a
 * state byte or one of those counts: each change is one of the named
 * transitions below, and the counts follow from the states by
 * construction (one function applies every change, page.c's put()).
 *
 * The snapshot rule lives here too: a page a running snapshot has still to
 * copy keeps its content of the instant until it is copied.  Every
 * transition that empties a page, frees the slot that holds its data,
 * drops its claim on a restore image, or lets a write reach it calls the
 * region's watch (struct page_watch, set by snapshot.c) first, so no
 * caller can forget it.
 *
 * The Clock hand (clock.c) alone still flips PG_REF and PG_HOT_* in the
 * array it is handed: no count or invariant depends on those bits, and it
 * stays pure policy, unit-tested on an array of its own.
 *
 * Built with PAGERD_CHECK_INVARIANTS (SANITIZE=1 builds, tests/test_page.c),
 * each transition checks that it is legal from the page's state, and
 * page_check_daemon() (run by the loop after every turn) checks that the
 * counts match the states and that every page's flags and slot are
 * consistent; a violation is logged and aborts.  Otherwise the checks cost
 * nothing.
 */
#ifndef PAGERD_PAGE_H
#define PAGERD_PAGE_H

#include "pagerd.h"

/*
 * What a change takes from a page (the watch's `what`):
 */
#define CHANGE_MEMORY 0x1 /* the memfd's data: punched, or a write let in
			   * (un-protect, zero-fill, writable install) */
#define CHANGE_SLOT   0x2 /* the swap slot: freed */
#define CHANGE_IMAGE  0x4 /* the claim on the restore image (PG_IMAGE) */
#define CHANGE_GONE   0x8 /* the memfd lost its data already (the client
			   * punched it): only a clean page's slot has it */

/*
 * Who must hear of changes to a region's pages before they happen: a
 * running snapshot (snapshot.c).  A lower-layer interface: page.c calls
 * it, knowing nothing of snapshots.
 *
 *   before_change  [first, first+n) are about to lose what `what` says;
 *                  each page whose content of the instant goes with it is
 *                  saved first (or the snapshot fails; never the change)
 *   made_writable  [first, first+n) were made writable by pagerd
 *   pending        whether the page still has to be saved (the checker;
 *                  and the write prediction, which maps it protected)
 */
struct page_watch {
	void (*before_change)(struct region *r, uint64_t first, uint64_t n,
			      unsigned what);
	void (*made_writable)(struct region *r, uint64_t first, uint64_t n);
	bool (*pending)(const struct region *r, uint64_t page);
};

/* ---- faults ---------------------------------------------------------- */

/*
 * Zero-fills [page, page+n) (UFFDIO_ZEROPAGE, mapped writable): the pages
 * become resident and referenced; a page whose write-back is still in
 * flight keeps it (re-dirtied: the write-back will not punch it).  Returns
 * the pages filled from the first, 0 if the first page was there already
 * (it counts as resident now; nobody was woken), or -errno (uffd.h).
 */
int64_t page_zero_fill(struct region *r, uint64_t page, uint64_t n);
/* Un-protects [page, page+n): writes go straight in from now.  0 or -errno
 * (uffd.h). */
int page_unprotect(struct region *r, uint64_t page, uint64_t n);
/* Writes data into the memfd at [page, page+n) behind the client's back
 * (not mapped there; protected first if wp).  The states are the
 * caller's (page_swapin_installed(), page_image_read()).  Pages done, or
 * -errno. */
int64_t region_install(struct region *r, uint64_t page, uint64_t n,
		       const void *data, bool wp);
/*
 * A write fault on a resident page: it is dirty from now (its swap copy is
 * freed) and referenced; one under write-back is re-dirtied (the write-back
 * keeps it).  Returns whether it was a fresh swap-in (PG_FRESH).  The
 * caller un-protects it.
 */
bool page_dirtied(struct region *r, uint64_t page);
/* A resident page found punched by the client (MADV_REMOVE): empty. */
void page_emptied(struct region *r, uint64_t page);
/* A thread waits on a page being read in: the read's completion wakes it. */
void page_add_waiter(struct region *r, uint64_t page);
/* The page was used (its fault, its write, its PTE seen). */
void page_referenced(struct region *r, uint64_t page);
/* A page that came back after the hand dropped its mapping: hot. */
void page_hot(struct region *r, uint64_t page);

/* ---- swap-in (swapin.c) ------------------------------------------------ */

/* [page, page+n) (swapped) are being read from their slots: resident
 * (counted against the limits) and in flight. */
void page_swapin_started(struct region *r, uint64_t page, uint64_t n);
/* Reads of n pages ended (the region may be gone), or began again. */
void page_swapin_reads_ended(struct daemon *d, uint64_t n);
void page_swapin_reads_again(struct daemon *d, uint64_t n);
/* [page, page+n) are in the page cache now: no longer in flight. */
void page_swapin_installed(struct region *r, uint64_t page, uint64_t n);
/* The read of a page put nothing in memory: one discarded meanwhile is
 * empty; any other is swapped again (its slot still holds it). */
void page_swapin_abandoned(struct region *r, uint64_t page);
/* Its data was lost (a failed read, a bad CRC, an unreadable image): the
 * slot is freed, the page poisoned (SIGBUS).  The caller punches it. */
void page_poisoned(struct region *r, uint64_t page);
/* Readahead bookkeeping: read ahead and unused (RA), the stream's marker
 * (RA_MARK), a swap-in not yet written (FRESH). */
void page_set_readahead(struct region *r, uint64_t page, uint64_t n);
void page_set_ra_mark(struct region *r, uint64_t page);
void page_clear_ra_mark(struct region *r, uint64_t page);
/* The app reached the page: neither read-ahead-unused nor a marker now. */
void page_ra_reached(struct region *r, uint64_t page);
/* A read-ahead page was used: referenced now.  False if it was not one. */
bool page_ra_used(struct region *r, uint64_t page);
void page_set_fresh(struct region *r, uint64_t page);
/*
 * Whether a page being read in for a fault (a write fault if write) is to
 * be mapped writable at once, dirty, rather than protected and clean: a
 * write fault, or a read of a page predicted to be written soon (page.c:
 * by how it last left memory, PG_LEFT_DIRTY, and the region's record of
 * such pages).  Never a page a running snapshot still has to copy.  The
 * record learns from pages mapped protected: page_set_fresh() counts
 * them, page_dirtied() those written.
 */
bool page_swapin_writable(struct region *r, uint64_t page, bool write);

/* ---- eviction (evict.c) ------------------------------------------------ */

/* [page, page+n) (dirty, write-protected) are being written to swap. */
void page_writeback_started(struct region *r, uint64_t page, uint64_t n);
/* A write-back of the page ended without evicting it (failed, or written
 * during it): resident and dirty; one discarded meanwhile is empty. */
void page_writeback_ended(struct region *r, uint64_t page);
/* [page, page+n) live in their (recorded) slots now: swapped.  The caller
 * punches them next (page_evict_undone() if that fails). */
void page_swapped_out(struct region *r, uint64_t page, uint64_t n);
/* [page, page+n) read as zero: empty.  The caller punches them next. */
void page_zero_evicted(struct region *r, uint64_t page, uint64_t n);
/* The punch after page_swapped_out()/page_zero_evicted() failed: the data
 * is still in memory, the pages resident again (with any slots). */
void page_evict_undone(struct region *r, uint64_t page, uint64_t n);

/* ---- regions (region.c) ------------------------------------------------ */

/* The client discarded [first, first+n): empty, slots freed; pages with
 * I/O in flight become empty when it completes (PG_GONE).  The caller
 * punches the memfd.  Poisoned pages stay poisoned. */
void page_discarded(struct region *r, uint64_t first, uint64_t n);
/*
 * Whether a page discarded during its write-back (PG_GONE) is still gone
 * from the memfd.  One found there again is resident and dirty from now
 * (PG_GONE becomes PG_REDIRTY: the write-back's completion keeps it), and
 * this returns false.  Every reader of PG_GONE asks this first.
 */
bool page_gone(struct region *r, uint64_t page);
/*
 * page_gone()'s rule for a page known by its state byte and whether the
 * memfd holds data there (in_memory), without changing it: fdstore.c's
 * adoption, which must not punch what a client wrote into a page its
 * predecessor's write-back put back.  Discarded (PG_GONE) and, under a
 * write-back (which reads pagerd's mapping), nothing in the memfd.
 */
static inline bool page_gone_with(pgstate_t b, bool in_memory)
{
	bool writeback = (b & (PG_IO | PG_READING)) == PG_IO;

	return (b & PG_GONE) && !(writeback && in_memory);
}
/* The region goes: its counts leave its client's and the daemon's. */
void page_region_gone(struct region *r);

/* ---- restore (snapshot.c) and adoption (fdstore.c) ---------------------- */

/* An empty page whose data is in the restore image. */
void page_in_image(struct region *r, uint64_t page);
/* [page, page+n) were read from the image and installed: resident. */
void page_image_read(struct region *r, uint64_t page, uint64_t n);
/* A predecessor's page settled to b (fdstore.c); the counts follow with
 * page_adopted() once every page of the region is. */
void page_adopt(struct region *r, uint64_t page, pgstate_t b);
void page_adopted(struct region *r);

/* ---- page-level helpers: slots, the memfd, I/O in flight --------------- */

/* Frees the page's swap slot, if it has one (the region forgets it first). */
void region_drop_slot(struct region *r, uint64_t page);
/* Whether the memfd holds data at page (the page cache, or the kernel's
 * own swap). */
bool region_in_memory(struct region *r, uint64_t page);
/* Whether len bytes (a multiple of 8, aligned) are all zero: such pages
 * are evicted without I/O and stay holes in snapshot images. */
bool page_is_zero(const void *page, size_t len);
/* I/O in flight on a region's list (region.ios), which the invariant
 * checker reads: unlink also forgets the region; detach_all unlinks
 * everything (the region is going: in-flight I/O no longer refers to it).
 *
 * A write-back reads pagerd's mapping of the memfd (r->map) for as long as
 * it is in flight: the engine may submit it, resubmit the rest of a short
 * write or retry it, and io_uring copies from it in a worker, all later.
 * Unmapped under it, the address may be mapped again at once for another
 * region, whose holes that read would fill with zero pages (a restored
 * page would read as zeros without a fault; a swapped one too).  So
 * detach_all hands the mapping to the write-backs still in flight when
 * there are any, and returns true: the caller must not unmap it then;
 * page_io_release() unmaps it when the last of them completes. */
void page_io_link(struct region *r, struct page_io *io);
void page_io_unlink(struct page_io *io);
bool page_io_detach_all(struct region *r);
/* A write-back of a region gone completed: lets go of its mapping.  Its
 * completion is where no store reads the mapping any more, a timed-out
 * write included: the swap's file store has no timeout (the engine calls
 * back once the kernel is done with the buffer, or for a request it never
 * started), and the RBD store, which has one, copies a write's data into
 * a buffer of its own when it accepts it (store.h).  A swap store on the
 * engine with a timeout would break this (and hand the engine a mapping
 * to free()): swap.c opens its file store without one. */
void page_io_release(struct page_io *io);

/* ---- the invariant checker ---------------------------------------------- */

/*
 * Checks every invariant of the region's pages (counts match the states,
 * a swapped page has a slot, a page with PG_IO has an I/O in flight that
 * covers it, ...), or of every region, client and the daemon.  Returns the
 * number of violations, each logged; built with PAGERD_CHECK_INVARIANTS,
 * page_check_daemon() aborts on one.
 */
unsigned page_check_region(const struct region *r);
unsigned page_check_daemon(const struct daemon *d);

#endif
