/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for page states (daemon/page.c), without a kernel: the named
 * transitions keep the counts of the region, its client and the daemon
 * true through a page's life (zero-fill, write-back, swap-out, swap-in,
 * discard during I/O, re-dirtied write-back, restore, adoption); illegal
 * transitions are caught; the invariant checker finds states written
 * behind page.c's back, a swapped page without its slot, I/O flags with
 * no I/O in flight; and the snapshot rule is kept inside the transitions
 * (the watch is told first; making a page writable that the snapshot still
 * needs is caught).
 *
 * Built with the checker on, as in SANITIZE=1 builds of pagerd; a
 * violation, instead of aborting, fails through cmocka's mock_assert()
 * (expect_assert_failure() tests expect it).
 */
#include <setjmp.h> /* cmocka.h needs these four first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGERD_CHECK_INVARIANTS 1
#define PAGE_CHECK_ABORT(what) mock_assert(0, what, __FILE__, __LINE__)
#include "../daemon/page.c"
#include "../daemon/log.c"

/* ---- what page.c calls elsewhere in pagerd ------------------------------ */

int64_t uffd_zeropage(struct region *r, uint64_t page, uint64_t n)
{
	(void)r, (void)page;
	return (int64_t)n;
}

int uffd_writeprotect(struct region *r, uint64_t page, uint64_t n, bool wp)
{
	(void)r, (void)page, (void)n, (void)wp;
	return 0;
}

void client_misbehaved(struct client *c, const char *what, int err)
{
	(void)c, (void)what, (void)err;
}

/* The fixture has no swap store (d.swap is NULL): never called. */
void swap_free(struct swap *s, uint64_t first, uint32_t n)
{
	(void)s, (void)first, (void)n;
	fail();
}

/* ---- fixture: one daemon, one client, one region of N pages ------------- */

#define N 16

struct fix {
	struct daemon d;
	struct client c;
	struct region r, *rp;
	pgstate_t state[N];
	uint32_t slot[N];
	struct page_io io[4];
	/* The fake snapshot: pages still to copy, and what it was told. */
	bool pending[N];
	unsigned changes, last_what;
	bool saves; /* before_change() copies (clears pending) */
};

static struct fix *F;

/* Puts a page of data in the region's memfd (region_in_memory() finds
 * it there), as a write-back's read of pagerd's mapping would. */
static void memfd_fill(struct fix *f, uint64_t page)
{
	static const char one[4096] = { 1 };

	assert_int_equal(pwrite(f->r.memfd, one, sizeof(one), (off_t)(page * 4096)),
			 (ssize_t)sizeof(one));
}

static void fake_before_change(struct region *r, uint64_t first, uint64_t n,
			       unsigned what)
{
	(void)r;
	F->changes++;
	F->last_what = what;
	for (uint64_t p = first; p < first + n && F->saves; p++)
		F->pending[p] = false;
}

static bool fake_pending(const struct region *r, uint64_t page)
{
	(void)r;
	return F->pending[page];
}

static const struct page_watch fake_watch = {
	.before_change = fake_before_change,
	.pending = fake_pending,
};

static int setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->d.page_size = 4096;
	f->d.clients = &f->c;
	f->c.d = &f->d;
	f->c.regions = &f->rp;
	f->c.nregions = 1;
	f->rp = &f->r;
	f->r.client = &f->c;
	f->r.id = 1;
	f->r.npages = N;
	f->r.state = f->state;
	f->r.slot = f->slot;
	/* What the memfd holds is what region_in_memory() asks (SEEK_DATA):
	 * a real one, empty (all holes) to begin with. */
	f->r.memfd = memfd_create("test_page", MFD_CLOEXEC);
	assert_true(f->r.memfd >= 0);
	assert_int_equal(ftruncate(f->r.memfd, N * 4096), 0);
	F = f;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fix *f = *state;

	close(f->r.memfd);
	free(*state);
	return 0;
}

/* I/O in flight over [page, page+n), as evict.c and swapin.c link it. */
static struct page_io *io_on(struct fix *f, int i, bool write, uint64_t page,
			     uint32_t n)
{
	struct page_io *io = &f->io[i];

	*io = (struct page_io){ .r = &f->r, .d = &f->d, .write = write,
				.page = page, .npages = n, .next = f->r.ios };
	f->r.ios = io;
	return io;
}

static void io_done(struct fix *f, struct page_io *io)
{
	struct page_io **pp = &f->r.ios;

	while (*pp != io)
		pp = &(*pp)->next;
	*pp = io->next;
}

static void counts(struct fix *f, uint64_t resident, uint64_t swapped,
		   uint64_t writeback)
{
	assert_int_equal(f->r.resident, resident);
	assert_int_equal(f->c.resident, resident);
	assert_int_equal(f->d.resident, resident);
	assert_int_equal(f->r.swapped, swapped);
	assert_int_equal(f->r.writeback, writeback);
	assert_int_equal(f->c.writeback, writeback);
	assert_int_equal(f->d.writeback, writeback);
	assert_int_equal(page_check_daemon(&f->d), 0);
}

/* ---- legal lives ---------------------------------------------------------- */

static void zero_fill_makes_resident_referenced(void **state)
{
	struct fix *f = *state;

	assert_int_equal(page_zero_fill(&f->r, 2, 4), 4);
	for (int p = 2; p < 6; p++)
		assert_int_equal(f->state[p], PAGE_RESIDENT | PG_REF);
	counts(f, 4, 0, 0);
}

/* Zero-fill, write-back, swapped out, swapped in, installed: the counts
 * follow each step, and the checker agrees at each. */
static void evict_and_swap_in(void **state)
{
	struct fix *f = *state;
	struct page_io *io;

	page_zero_fill(&f->r, 0, 2);
	io = io_on(f, 0, true, 0, 2);
	page_writeback_started(&f->r, 0, 2);
	assert_int_equal(f->state[0], PAGE_RESIDENT | PG_IO); /* reference gone */
	counts(f, 2, 0, 2);
	io_done(f, io);
	f->slot[0] = 8; /* recorded: slots 7, 8 */
	f->slot[1] = 9;
	page_swapped_out(&f->r, 0, 2);
	counts(f, 0, 2, 0);

	io = io_on(f, 0, false, 0, 2);
	page_swapin_started(&f->r, 0, 2);
	assert_int_equal(f->d.reading, 2);
	page_add_waiter(&f->r, 0);
	counts(f, 2, 0, 0); /* resident (against the limits) while read */
	page_swapin_reads_ended(&f->d, 2);
	io_done(f, io);
	page_swapin_installed(&f->r, 0, 2);
	/* Written out when evicted: it says so (the write prediction). */
	assert_int_equal(f->state[0], PAGE_RESIDENT | PG_LEFT_DIRTY);
	assert_int_equal(f->d.reading, 0);
	counts(f, 2, 0, 0);
	/* Written: dirty, its copy freed. */
	assert_false(page_dirtied(&f->r, 0));
	assert_int_equal(f->slot[0], 0);
	assert_int_equal(f->slot[1], 9); /* clean still */
	counts(f, 2, 0, 0);
}

/* Discarded while written out: empty once the write ends, never before. */
static void discard_during_writeback(void **state)
{
	struct fix *f = *state;
	struct page_io *io;

	page_zero_fill(&f->r, 0, 3);
	io = io_on(f, 0, true, 0, 3);
	page_writeback_started(&f->r, 0, 3);
	page_discarded(&f->r, 1, 1);
	assert_int_equal(f->state[1], PAGE_RESIDENT | PG_IO | PG_GONE);
	counts(f, 3, 0, 3);
	/* A write during it: re-dirtied, the eviction aborts. */
	page_dirtied(&f->r, 2);
	assert_true(f->state[2] & PG_REDIRTY);
	io_done(f, io);
	for (int p = 0; p < 3; p++)
		page_writeback_ended(&f->r, (uint64_t)p);
	assert_int_equal(f->state[1], PAGE_EMPTY);
	assert_int_equal(f->state[2], PAGE_RESIDENT | PG_REF);
	counts(f, 2, 0, 0);
}

/*
 * Discarded while written out, and the write-back read pagerd's mapping
 * after the punch: that put a page back in the memfd, which the client
 * maps and writes without a fault.  The page is resident (dirty) then,
 * not empty: taken for a hole, a snapshot recorded zeros for data written
 * before its instant (issue 13's rare cut_stress failure).
 */
static void discard_during_writeback_refilled(void **state)
{
	struct fix *f = *state;
	struct page_io *io;

	page_zero_fill(&f->r, 0, 2);
	io = io_on(f, 0, true, 0, 2);
	page_writeback_started(&f->r, 0, 2);
	page_discarded(&f->r, 0, 2);
	memfd_fill(f, 1); /* the write-back's read put it back */
	assert_true(page_gone(&f->r, 0));
	io_done(f, io);
	page_writeback_ended(&f->r, 0);
	page_writeback_ended(&f->r, 1);
	assert_int_equal(f->state[0], PAGE_EMPTY);
	assert_int_equal(pg_state(f->state[1]), PAGE_RESIDENT);
	assert_false(f->state[1] & (PG_IO | PG_GONE | PG_REDIRTY));
	counts(f, 1, 0, 0);
	assert_int_equal(page_check_region(&f->r), 0);
}

/* Discarded while read in: the read's end leaves it empty, not swapped. */
static void discard_during_swapin(void **state)
{
	struct fix *f = *state;
	struct page_io *io;

	f->slot[4] = 1;
	page_adopt(&f->r, 4, PAGE_SWAPPED);
	page_adopted(&f->r);
	counts(f, 0, 1, 0);
	io = io_on(f, 0, false, 4, 1);
	page_swapin_started(&f->r, 4, 1);
	page_discarded(&f->r, 4, 1);
	assert_int_equal(f->slot[4], 0);
	counts(f, 1, 0, 0);
	page_swapin_reads_ended(&f->d, 1);
	io_done(f, io);
	page_swapin_abandoned(&f->r, 4);
	assert_int_equal(f->state[4], PAGE_EMPTY);
	counts(f, 0, 0, 0);
}

/* The client punched a page under write-back: empty, and the fill that
 * follows is kept (re-dirtied), not punched when the write-back ends. */
static void emptied_under_writeback_then_filled(void **state)
{
	struct fix *f = *state;
	struct page_io *io;

	page_zero_fill(&f->r, 0, 1);
	io = io_on(f, 0, true, 0, 1);
	page_writeback_started(&f->r, 0, 1);
	page_emptied(&f->r, 0);
	assert_int_equal(f->state[0], PAGE_EMPTY | PG_IO | PG_REDIRTY);
	counts(f, 0, 0, 1);
	assert_int_equal(page_zero_fill(&f->r, 0, 1), 1);
	assert_int_equal(f->state[0], PAGE_RESIDENT | PG_REF | PG_IO | PG_REDIRTY);
	io_done(f, io);
	page_writeback_ended(&f->r, 0);
	assert_int_equal(f->state[0], PAGE_RESIDENT | PG_REF);
	counts(f, 1, 0, 0);
}

static void restore_image_pages(void **state)
{
	struct fix *f = *state;

	page_in_image(&f->r, 0);
	page_in_image(&f->r, 1);
	assert_int_equal(f->r.image_pending, 2);
	page_image_read(&f->r, 0, 1);
	page_poisoned(&f->r, 1); /* the image could not be read */
	assert_int_equal(f->r.image_pending, 0);
	assert_int_equal(f->state[1], PAGE_POISONED);
	counts(f, 1, 0, 0);
}

static void zero_eviction_undone(void **state)
{
	struct fix *f = *state;

	page_zero_fill(&f->r, 0, 2);
	page_zero_evicted(&f->r, 0, 2);
	counts(f, 0, 0, 0);
	page_evict_undone(&f->r, 0, 2); /* the punch failed */
	counts(f, 2, 0, 0);
	page_region_gone(&f->r);
	assert_int_equal(f->c.resident, 0);
	assert_int_equal(f->d.resident, 0);
}

/* ---- illegal transitions and broken invariants ------------------------------ */

static void illegal_transitions_caught(void **state)
{
	struct fix *f = *state;

	/* Nothing to read: the page is not in swap. */
	expect_assert_failure(page_swapin_started(&f->r, 0, 1));
	page_zero_fill(&f->r, 1, 1);
	/* Swapped out with no slot holding its copy: it would be lost. */
	expect_assert_failure(page_swapped_out(&f->r, 1, 1));
	/* A write-back that never started cannot end. */
	expect_assert_failure(page_writeback_ended(&f->r, 1));
	/* Zero-filled over data. */
	expect_assert_failure(page_zero_fill(&f->r, 1, 1));
	/* A waiter on a page nobody reads. */
	expect_assert_failure(page_add_waiter(&f->r, 1));
}

static void checker_finds_state_written_behind_its_back(void **state)
{
	struct fix *f = *state;

	page_zero_fill(&f->r, 0, 2);
	assert_int_equal(page_check_region(&f->r), 0);
	f->state[5] = PAGE_RESIDENT; /* not through page.c: counts are off */
	assert_int_not_equal(page_check_region(&f->r), 0);
	expect_assert_failure(page_check_daemon(&f->d));
}

static void checker_finds_swapped_without_slot(void **state)
{
	struct fix *f = *state;

	f->slot[3] = 4;
	page_adopt(&f->r, 3, PAGE_SWAPPED);
	page_adopted(&f->r);
	assert_int_equal(page_check_daemon(&f->d), 0);
	f->slot[3] = 0; /* a slot freed behind the page's back */
	expect_assert_failure(page_check_daemon(&f->d));
}

static void checker_finds_io_flags_without_io(void **state)
{
	struct fix *f = *state;
	struct page_io *io;

	page_zero_fill(&f->r, 0, 2);
	io = io_on(f, 0, true, 0, 2);
	page_writeback_started(&f->r, 0, 2);
	assert_int_equal(page_check_daemon(&f->d), 0);
	io_done(f, io); /* its completion lost: PG_IO forever */
	expect_assert_failure(page_check_daemon(&f->d));
	/* And a write in flight over pages not marked. */
	io_on(f, 1, true, 8, 1);
	page_writeback_ended(&f->r, 0);
	page_writeback_ended(&f->r, 1);
	expect_assert_failure(page_check_daemon(&f->d));
}

/* ---- the snapshot rule, inside the transitions ------------------------------ */

static void watch_told_before_changes(void **state)
{
	struct fix *f = *state;

	f->r.watch = &fake_watch;
	f->saves = true;
	page_zero_fill(&f->r, 0, 2);
	assert_int_equal(f->changes, 1);
	assert_int_equal(f->last_what, CHANGE_MEMORY);
	f->pending[0] = f->pending[1] = true; /* the instant */
	page_zero_evicted(&f->r, 0, 1);
	assert_int_equal(f->last_what, CHANGE_MEMORY);
	assert_false(f->pending[0]);
	page_emptied(&f->r, 1);
	assert_int_equal(f->last_what, CHANGE_GONE | CHANGE_SLOT);
	f->pending[2] = true;
	page_discarded(&f->r, 2, 1);
	assert_int_equal(f->last_what, CHANGE_MEMORY | CHANGE_SLOT | CHANGE_IMAGE);
	assert_int_equal(f->changes, 4);
	counts(f, 0, 0, 0);
}

/* A watch that does not save the page: un-protecting it (or zero-filling
 * over it) would let a write reach data the image still needs. */
static void writable_while_pending_caught(void **state)
{
	struct fix *f = *state;

	f->r.watch = &fake_watch;
	page_zero_fill(&f->r, 0, 1);
	f->pending[0] = true;
	f->saves = false;
	expect_assert_failure(page_unprotect(&f->r, 0, 1));
	f->saves = true;
	assert_int_equal(page_unprotect(&f->r, 0, 1), 0);
	assert_false(f->pending[0]);
}

/* ---- write prediction ------------------------------------------------------- */

/* The page (resident, dirty) written to its slot and evicted. */
static void evict_dirty_page(struct fix *f, uint64_t page, uint32_t slot)
{
	struct page_io *io = io_on(f, 0, true, page, 1);

	page_writeback_started(&f->r, page, 1);
	io_done(f, io);
	f->slot[page] = slot + 1;
	page_swapped_out(&f->r, page, 1);
}

/* Read back for a read fault, installed as the prediction says: writable
 * (dirty from now) or protected (a fresh sample for the record). */
static bool swap_in_read(struct fix *f, uint64_t page)
{
	struct page_io *io = io_on(f, 1, false, page, 1);
	bool writable;

	page_swapin_started(&f->r, page, 1);
	page_swapin_reads_ended(&f->d, 1);
	io_done(f, io);
	writable = page_swapin_writable(&f->r, page, false);
	page_swapin_installed(&f->r, page, 1);
	if (writable)
		page_dirtied(&f->r, page);
	else
		page_set_fresh(&f->r, page);
	return writable;
}

/* A resident page set clean (its copy in slot current) or, slot -1,
 * dirty, behind the transitions' back: so that the test can send one page
 * round and round. */
static void reset_resident(struct fix *f, uint64_t page, int64_t slot)
{
	f->slot[page] = (uint32_t)(slot + 1);
	page_adopt(&f->r, page, PAGE_RESIDENT);
}

/*
 * How a page left memory goes with it through swap: one written out on
 * eviction comes back (for a read) writable, its copy freed; one dropped
 * clean comes back protected, its copy kept.  Neither pays a round trip
 * for what it is likely to do next.
 */
static void left_dirty_comes_back_writable(void **state)
{
	struct fix *f = *state;

	page_adopt(&f->r, 0, PAGE_RESIDENT); /* dirty: no copy */
	f->slot[1] = 12;
	page_adopt(&f->r, 1, PAGE_RESIDENT); /* clean: slot 11 */
	page_adopted(&f->r);
	evict_dirty_page(f, 0, 10);
	page_swapped_out(&f->r, 1, 1);
	assert_int_equal(f->state[0], PAGE_SWAPPED | PG_LEFT_DIRTY);
	assert_int_equal(f->state[1], PAGE_SWAPPED);
	counts(f, 0, 2, 0);

	assert_true(swap_in_read(f, 0));
	assert_int_equal(f->slot[0], 0); /* dirty: its copy is stale */
	assert_false(f->state[0] & PG_FRESH);
	assert_false(swap_in_read(f, 1));
	assert_int_equal(f->slot[1], 12); /* clean: dropped without a write */
	assert_true(f->state[1] & PG_FRESH);
	counts(f, 2, 0, 0);
	/* Unwritten, page 1 leaves clean again; page 0 leaves dirty. */
	page_swapped_out(&f->r, 1, 1);
	evict_dirty_page(f, 0, 10);
	assert_int_equal(f->state[0], PAGE_SWAPPED | PG_LEFT_DIRTY);
	assert_int_equal(f->state[1], PAGE_SWAPPED);
	counts(f, 0, 2, 0);
	/* A write fault maps either writable. */
	page_swapin_started(&f->r, 1, 1);
	assert_true(page_swapin_writable(&f->r, 1, true));
}

/*
 * Once a class has RW_TRUST samples, the region's record decides, not the
 * pages' past: pages that left clean but are written after each swap-in
 * come back writable (all but one in RW_SAMPLE_SURE, kept protected to
 * watch for a change); pages that left dirty but are only read come back
 * protected.
 */
static void prediction_follows_the_record(void **state)
{
	struct fix *f = *state;
	unsigned writable = 0, reads;

	reset_resident(f, 3, 3);
	page_adopt(&f->r, 5, PAGE_RESIDENT);
	page_adopted(&f->r);
	for (int i = 0; i < RW_TRUST; i++) {
		page_swapped_out(&f->r, 3, 1);
		assert_false(swap_in_read(f, 3)); /* left clean, no record yet */
		assert_true(page_dirtied(&f->r, 3)); /* ... and written */
		reset_resident(f, 3, 3);
	}
	assert_int_equal(f->r.rw_seen[0], RW_TRUST);
	assert_int_equal(f->r.rw_written[0], RW_TRUST);
	for (int i = 0; i < 2 * RW_SAMPLE_SURE; i++) {
		page_swapped_out(&f->r, 3, 1);
		if (swap_in_read(f, 3))
			writable++;
		else
			page_dirtied(&f->r, 3); /* the sample is written too */
		reset_resident(f, 3, 3);
	}
	assert_int_equal(writable, 2 * RW_SAMPLE_SURE - 2);

	/* Left dirty, never written: the prior maps them writable until
	 * the samples (one in RW_SAMPLE) make a record that says not. */
	for (reads = 0; f->r.rw_seen[1] < RW_TRUST; reads++) {
		evict_dirty_page(f, 5, 5);
		swap_in_read(f, 5);
		reset_resident(f, 5, -1); /* unwritten: dirty only for the test */
		assert_true(reads < 1000);
	}
	assert_int_equal(f->r.rw_written[1], 0);
	assert_true(reads <= RW_TRUST * RW_SAMPLE);
	for (int i = 0; i < 2 * RW_SAMPLE; i++) {
		evict_dirty_page(f, 5, 5);
		assert_false(swap_in_read(f, 5));
		reset_resident(f, 5, -1);
	}
	assert_int_equal(page_check_daemon(&f->d), 0);
}

/* A page a running snapshot still has to copy comes back protected, even
 * for a write fault: the write's own fault copies it first. */
static void pending_page_comes_back_protected(void **state)
{
	struct fix *f = *state;

	page_adopt(&f->r, 0, PAGE_RESIDENT);
	page_adopted(&f->r);
	evict_dirty_page(f, 0, 0);
	f->r.watch = &fake_watch;
	f->pending[0] = true;
	page_swapin_started(&f->r, 0, 1);
	assert_false(page_swapin_writable(&f->r, 0, false));
	assert_false(page_swapin_writable(&f->r, 0, true));
	f->pending[0] = false;
	assert_true(page_swapin_writable(&f->r, 0, false));
}

static void checker_finds_left_dirty_without_data(void **state)
{
	struct fix *f = *state;

	f->state[6] = PAGE_EMPTY | PG_LEFT_DIRTY;
	assert_int_not_equal(page_check_region(&f->r), 0);
}

/*
 * A region goes while a write-back of its pages is in flight: the I/O
 * engine (a queued submission, the rest of a short write, a retry, an
 * io-wq worker) reads pagerd's mapping of it later.  Unmapped at once, the
 * address is free for the next region's mapping, often the same size; the
 * late read then faults zero pages into that region's memfd, and a page
 * of it still in its restore image (PG_IMAGE: a hole) reads as zeros in
 * the client without a fault (torture seeds 101, 102).  The mapping stays
 * until the last write-back completes.
 */
static void mapping_outlives_writeback_of_gone_region(void **state)
{
	struct fix *f = *state;
	size_t len = N * 4096;
	int other = memfd_create("next-region", MFD_CLOEXEC);
	uint8_t buf[4096], *map, *again;

	memfd_fill(f, 3);
	map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, f->r.memfd, 0);
	assert_true(map != MAP_FAILED);
	f->r.map = map;
	f->r.len = len;
	assert_true(other >= 0);
	assert_int_equal(ftruncate(other, (off_t)len), 0);
	struct page_io *wb = io_on(f, 0, true, 3, 1);
	struct page_io *wb2 = io_on(f, 1, true, 9, 1);
	struct page_io *rd = io_on(f, 2, false, 5, 1);

	/* The region goes as region_destroy() lets it. */
	if (!page_io_detach_all(&f->r))
		munmap(map, len);
	assert_null(f->r.ios);
	assert_null(wb->r);
	/* The next region asks for the same addresses. */
	again = mmap(map, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED_NOREPLACE,
		     other, 0);
	/* The write-back's late read of its page. */
	memcpy(buf, map + 3 * 4096, sizeof(buf));
	assert_int_equal(buf[0], 1);
	/* The next region's memfd is untouched: all holes still. */
	assert_int_equal(lseek(other, 0, SEEK_DATA), -1);
	assert_true(again == MAP_FAILED);
	/* The read (its own buffer) held nothing; the last write-back
	 * completed lets the mapping go. */
	page_io_release(rd);
	page_io_release(wb);
	assert_int_equal(msync(map, 4096, MS_ASYNC), 0);
	page_io_release(wb2);
	assert_int_equal(msync(map, 4096, MS_ASYNC), -1);
	close(other);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(t) cmocka_unit_test_setup_teardown(t, setup, teardown)
		T(zero_fill_makes_resident_referenced),
		T(evict_and_swap_in),
		T(discard_during_writeback),
		T(discard_during_writeback_refilled),
		T(discard_during_swapin),
		T(emptied_under_writeback_then_filled),
		T(restore_image_pages),
		T(zero_eviction_undone),
		T(illegal_transitions_caught),
		T(checker_finds_state_written_behind_its_back),
		T(checker_finds_swapped_without_slot),
		T(checker_finds_io_flags_without_io),
		T(watch_told_before_changes),
		T(writable_while_pending_caught),
		T(left_dirty_comes_back_writable),
		T(prediction_follows_the_record),
		T(pending_page_comes_back_protected),
		T(checker_finds_left_dirty_without_data),
		T(mapping_outlives_writeback_of_gone_region),
	};

	log_set_level(LOG_ERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
