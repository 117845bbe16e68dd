/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of what a restarted pagerd makes of its predecessor's state
 * (daemon/fdstore.c) and of the swap slot table it inherits (swap.c):
 *
 *   test_settle_table      every combination a kill can leave behind (page
 *        state, I/O in flight, data in the memfd or not, a slot whose tag
 *        names the page or not) settles to the one safe answer: data that
 *        exists is served, data that cannot be vouched for is poisoned,
 *        never read as zeros
 *   test_swap_meta_adopt   the slot table is refused when it describes
 *        another swap (size, file) or is garbage, and adopted otherwise
 *
 * The integration test (itest_restart) covers the same with real kills;
 * this one reaches each crash window on purpose.
 */
#include <setjmp.h> /* cmocka.h needs these four first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../daemon/crc32c.c"
#include "../daemon/fdstore.c"
#include "../daemon/fdstore_adopt.c"
#include "../daemon/io.c"
#include "../daemon/log.c"
#include "../daemon/pool.c"
#include "../daemon/store_file.c"
#include "../daemon/store_rbd.c"
#include "../daemon/swap.c"

#define PS 4096
#define NSLOTS 64

/* ---- what fdstore.c calls elsewhere in pagerd --------------------------- */

int region_punch(struct region *r, uint64_t first, uint64_t n)
{
	return fallocate(r->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			 (off_t)(first * PS), (off_t)(n * PS)) < 0 ? -errno : 0;
}

int region_memfd_check(struct client *c, int fd, uint64_t len)
{
	(void)c, (void)fd, (void)len;
	return 0;
}

int region_new(struct client *c, const struct region_init *ri, struct region **ret)
{
	(void)c, (void)ri, (void)ret;
	return -ENOSYS;
}

int region_map_state(struct region *r, int fd, size_t len, uint64_t state_off,
		     uint64_t slot_off)
{
	(void)r, (void)fd, (void)len, (void)state_off, (void)slot_off;
	return -ENOSYS;
}

int client_add(struct daemon *d, int sock, uint64_t id, struct client **ret)
{
	(void)d, (void)sock, (void)id, (void)ret;
	return -ENOSYS;
}

int client_set_pagemap(struct client *c, int fd)
{
	(void)c;
	(void)fd;
	return -EINVAL;
}

void config_print(const struct config *cfg, FILE *f)
{
	(void)cfg;
	fputs("[pagerd]\n", f);
}

int client_attach_uffd(struct client *c, int fd)
{
	(void)c, (void)fd;
	return -ENOSYS;
}

int agent_attach(struct client *c, int fd)
{
	(void)c, (void)fd;
	return -ENOSYS;
}

int uffd_check(int fd, uint64_t *ret)
{
	(void)fd, (void)ret;
	return -EBADF;
}

void uffd_wake(struct client *c, uint64_t addr, uint64_t len)
{
	(void)c, (void)addr, (void)len;
}

/* page.c's adoption, as it is: the test checks what settle() decides. */
void page_adopt(struct region *r, uint64_t page, pgstate_t b)
{
	r->state[page] = b;
}

void page_adopted(struct region *r)
{
	(void)r;
}

void evict_kick(struct daemon *d)
{
	(void)d;
}

void client_reconcile(struct client *c)
{
	(void)c;
}

void snapshot_handover(struct region *r)
{
	(void)r;
}

void snapshot_drain(struct region *r)
{
	(void)r;
}

void snapshot_adopt(struct region *r, int status, uint64_t total, uint64_t done,
		    uint64_t pause_ns)
{
	(void)r, (void)status, (void)total, (void)done, (void)pause_ns;
}

void snapshot_status(struct region *r, struct proto_snapshot_status *ret)
{
	(void)r;
	memset(ret, 0, sizeof(*ret));
	ret->status = -ENOENT;
	ret->done = 1;
}

int restore_resume(struct region *r, int fd, int crc_fd, bool prefetch)
{
	(void)r, (void)fd, (void)crc_fd, (void)prefetch;
	return 0;
}

int restore_resume_rbd(struct region *r, const char *image, int crc_fd, bool prefetch)
{
	(void)r, (void)image, (void)crc_fd, (void)prefetch;
	return 0;
}

const char *restore_image_name(const struct region *r)
{
	(void)r;
	return NULL;
}

int restore_crc_fd(const struct region *r)
{
	(void)r;
	return -1;
}

int restore_image_fd(const struct region *r)
{
	(void)r;
	return -1;
}

bool restore_prefetching(const struct region *r)
{
	(void)r;
	return false;
}

int sd_pid_notify_with_fds(pid_t pid, int unset, const char *state, const int *fds,
			   unsigned n)
{
	(void)pid, (void)unset, (void)state, (void)fds, (void)n;
	return 0;
}

int sd_notify(int unset, const char *state)
{
	(void)unset, (void)state;
	return 0;
}

int sd_listen_fds_with_names(int unset, char ***names)
{
	(void)unset, (void)names;
	return 0;
}

int sd_is_socket(int fd, int family, int type, int listening)
{
	(void)fd, (void)family, (void)type, (void)listening;
	return 0;
}

int sd_is_socket_unix(int fd, int type, int listening, const char *path, size_t len)
{
	(void)fd, (void)type, (void)listening, (void)path, (void)len;
	return 0;
}

/* ---- fixtures ------------------------------------------------------------ */

static char swap_file[256];

/* A swap whose table a predecessor shared, with `tags` (slot -> page of
 * region 1, or -1) written in it, then adopted by a new store. */
/* The swap's I/O engine, one per test's event base. */
static struct io_engine *test_io;

static struct io_engine *engine_for(struct event_base *base)
{
	if (!test_io)
		assert_int_equal(io_engine_open(&test_io, base), 0);
	return test_io;
}

static struct swap *inherited_swap(struct event_base *base, const int64_t *tags)
{
	struct swap *old, *s;
	int fd, copy;

	assert_int_equal(swap_open(&old, engine_for(base), swap_file, NSLOTS * PS, PS), 0);
	assert_int_equal(swap_meta_share(old, &fd), 0);
	for (int i = 0; i < NSLOTS; i++)
		if (tags[i] >= 0)
			old->slots[i] = (struct swap_slot){ .region = 1, .page = (uint64_t)tags[i],
							    .crc = 0x1234 };
	copy = dup(fd);
	swap_close(old);
	assert_int_equal(swap_open(&s, engine_for(base), swap_file, NSLOTS * PS, PS), 0);
	assert_int_equal(swap_meta_adopt(s, copy), 0);
	return s;
}

enum { NPAGES = 22 };

struct page_case {
	pgstate_t state;
	bool present;
	int64_t slot;          /* -1: none */
	enum page_state want;
	pgstate_t want_flags;
	bool want_slot;        /* keeps its slot */
	bool want_hole;        /* the memfd has no data there afterwards */
};

/*
 * The windows a SIGKILL can leave, page by page (slot N is tagged for page
 * N unless said otherwise).
 */
static const struct page_case cases[NPAGES] = {
	/* resident, dirty */
	[0] = { PAGE_RESIDENT, true, -1, PAGE_RESIDENT, 0, false, false },
	/* resident, clean: its copy stays valid (it is write-protected) */
	[1] = { PAGE_RESIDENT | PG_REF, true, 1, PAGE_RESIDENT, PG_REF, true, false },
	/* a clean page the client discarded (MADV_REMOVE), not yet
	 * reconciled: eviction marks a page SWAPPED before it punches */
	[2] = { PAGE_RESIDENT, false, 2, PAGE_EMPTY, 0, false, true },
	/* the client discarded it (MADV_REMOVE), not yet reconciled */
	[3] = { PAGE_RESIDENT, false, -1, PAGE_EMPTY, 0, false, true },
	/* write-back in flight: still in the memfd */
	[4] = { PAGE_RESIDENT | PG_IO, true, -1, PAGE_RESIDENT, 0, false, false },
	/* write-back done, slot recorded, not punched: keep the memory, drop
	 * the copy (it may have been re-dirtied) */
	[5] = { PAGE_RESIDENT | PG_IO | PG_REDIRTY, true, 5, PAGE_RESIDENT, 0, false, false },
	/* discarded by the client during its write-back */
	[6] = { PAGE_RESIDENT | PG_IO, false, 6, PAGE_EMPTY, 0, false, true },
	/* swap-in in flight: the half-filled page goes, the slot stays */
	[7] = { PAGE_RESIDENT | PG_IO | PG_READING | PG_WAITER, true, 7, PAGE_SWAPPED, 0, true,
		true },
	/* swap-in of a page discarded meanwhile */
	[8] = { PAGE_RESIDENT | PG_IO | PG_READING | PG_GONE, true, -1, PAGE_EMPTY, 0, false,
		true },
	/* in swap */
	[9] = { PAGE_SWAPPED, false, 9, PAGE_SWAPPED, 0, true, true },
	/* in swap, but the slot's tag names another page: lost, poisoned */
	[10] = { PAGE_SWAPPED, false, 30, PAGE_POISONED, 0, false, true },
	/* in swap, still in the memfd: marked SWAPPED, not yet punched (or a
	 * read not yet started) */
	[11] = { PAGE_SWAPPED, true, 11, PAGE_SWAPPED, 0, true, true },
	/* zero-filled just before the kill, the state not yet RESIDENT */
	[12] = { PAGE_EMPTY, true, -1, PAGE_RESIDENT, 0, false, false },
	/* never touched */
	[13] = { PAGE_EMPTY, false, -1, PAGE_EMPTY, 0, false, true },
	/* still in an image that did not come back: poisoned, never zeros */
	[14] = { PAGE_EMPTY | PG_IMAGE, false, -1, PAGE_POISONED, 0, false, true },
	/* poisoned stays poisoned */
	[15] = { PAGE_POISONED, false, -1, PAGE_POISONED, 0, false, true },
	/* transient flags go, the reference stays */
	[16] = { PAGE_RESIDENT | PG_REF | PG_RA | PG_RA_MARK | PG_FRESH, true, -1, PAGE_RESIDENT,
		 PG_REF, false, false },
	/* a slot outside the swap */
	[17] = { PAGE_SWAPPED, false, NSLOTS + 5, PAGE_POISONED, 0, false, true },
	/* a second page claiming slot 9 (taken by page 9) */
	[18] = { PAGE_SWAPPED, false, 9, PAGE_POISONED, 0, false, true },
	/* a page with a stray slot and nothing else */
	[19] = { PAGE_EMPTY, false, 19, PAGE_EMPTY, 0, false, true },
	/* discarded during its write-back, nothing in the memfd: empty */
	[20] = { PAGE_RESIDENT | PG_IO | PG_GONE, false, -1, PAGE_EMPTY, 0, false, true },
	/* discarded during its write-back, whose read of pagerd's mapping
	 * put a page back that the client then wrote: its data, kept */
	[21] = { PAGE_RESIDENT | PG_IO | PG_GONE, true, -1, PAGE_RESIDENT, 0, false, false },
};

static void test_settle_table(void **state)
{
	struct event_base *base = event_base_new();
	struct daemon d = { .page_size = PS };
	struct client c = { .d = &d };
	struct region r = { .client = &c, .id = 1, .npages = NPAGES, .len = NPAGES * PS };
	struct settle_counts n = { 0 };
	int64_t tags[NSLOTS];
	uint64_t *present, used = 0;
	struct swap_stats ss;
	char page[PS];

	(void)state;
	for (int i = 0; i < NSLOTS; i++)
		tags[i] = i < NPAGES ? i : -1;
	tags[30] = 3; /* slot 30 belongs to page 3, not 10 */
	d.swap = inherited_swap(base, tags);
	r.memfd = memfd_create("settle", MFD_CLOEXEC);
	assert_true(r.memfd >= 0);
	assert_int_equal(ftruncate(r.memfd, NPAGES * PS), 0);
	r.state = calloc(NPAGES, sizeof(*r.state));
	r.slot = calloc(NPAGES, sizeof(*r.slot));
	for (int p = 0; p < NPAGES; p++) {
		r.state[p] = cases[p].state;
		r.slot[p] = cases[p].slot < 0 ? 0 : (uint32_t)cases[p].slot + 1;
		if (cases[p].present) {
			memset(page, 'a' + p, PS);
			assert_int_equal(pwrite(r.memfd, page, PS, (off_t)p * PS), PS);
		}
	}
	present = memfd_present(r.memfd, NPAGES, PS);
	assert_non_null(present);

	settle(&r, present, false, &n);

	for (int p = 0; p < NPAGES; p++) {
		const struct page_case *k = &cases[p];
		off_t data = lseek(r.memfd, (off_t)p * PS, SEEK_DATA);
		bool hole = data < 0 || data >= (off_t)(p + 1) * PS;

		if (pg_state(r.state[p]) != k->want || (r.state[p] & ~PG_STATE_MASK) != k->want_flags)
			fail_msg("page %d: state %#x, want %#x", p, r.state[p], k->want | k->want_flags);
		if ((r.slot[p] != 0) != k->want_slot)
			fail_msg("page %d: slot %u, want %s", p, r.slot[p], k->want_slot ? "its slot" : "none");
		if (hole != k->want_hole)
			fail_msg("page %d: %s in the memfd", p, hole ? "a hole" : "data");
		if (k->present && !hole) {
			/* Kept data is the data that was there. */
			assert_int_equal(pread(r.memfd, page, PS, (off_t)p * PS), PS);
			assert_int_equal(page[0], 'a' + p);
		}
		used += r.slot[p] != 0;
	}
	/* Exactly the slots kept are in use; the rest are free again. */
	swap_get_stats(d.swap, &ss);
	assert_int_equal(ss.used, used);
	assert_int_equal(n.lost, 4); /* pages 10, 14, 17, 18 */
	assert_int_equal(n.in_flight, 7);
	swap_forget_unclaimed(d.swap);
	assert_int_equal(d.swap->slots[30].region, 0);
	assert_int_equal(d.swap->slots[9].page, 9);
	assert_int_equal(d.swap->slots[2].region, 0); /* freed: discarded */

	free(present);
	free(r.state);
	free(r.slot);
	close(r.memfd);
	swap_close(d.swap);
	io_engine_close(test_io);
	test_io = NULL;
	event_base_free(base);
}

static void test_swap_meta_adopt(void **state)
{
	struct event_base *base = event_base_new();
	struct swap *s, *other;
	int fd, copy, bad, pfd[2];
	char other_file[300];

	(void)state;
	/* A table shared by one swap ... */
	assert_int_equal(swap_open(&s, engine_for(base), swap_file, NSLOTS * PS, PS), 0);
	assert_int_equal(swap_meta_share(s, &fd), 0);
	copy = dup(fd);
	swap_close(s);

	/* ... is refused by a swap of another size ... */
	assert_int_equal(swap_open(&s, engine_for(base), swap_file, (NSLOTS / 2) * PS, PS), 0);
	assert_int_equal(swap_meta_adopt(s, copy), -EINVAL);
	swap_close(s);

	/* ... and by another file of the same size ... */
	snprintf(other_file, sizeof(other_file), "%s.other", swap_file);
	assert_int_equal(swap_open(&other, engine_for(base), other_file, NSLOTS * PS, PS), 0);
	assert_int_equal(swap_meta_adopt(other, copy), -EINVAL);
	swap_close(other);
	unlink(other_file);

	/* ... garbage and a wrong type are refused ... */
	assert_int_equal(swap_open(&s, engine_for(base), swap_file, NSLOTS * PS, PS), 0);
	bad = memfd_create("garbage", MFD_CLOEXEC);
	assert_int_equal(ftruncate(bad, (off_t)meta_size(s)), 0);
	assert_int_equal(pwrite(bad, "garbage", 7, 0), 7);
	assert_int_equal(swap_meta_adopt(s, bad), -EINVAL);
	close(bad);
	assert_int_equal(pipe(pfd), 0);
	assert_int_equal(swap_meta_adopt(s, pfd[0]), -EBADF);
	close(pfd[0]);
	close(pfd[1]);

	/* ... and the same swap takes it. */
	assert_int_equal(swap_meta_adopt(s, copy), 0);
	assert_int_equal(swap_meta_adopt(s, copy), -EBUSY); /* once */
	swap_close(s);
	io_engine_close(test_io);
	test_io = NULL;
	event_base_free(base);
}

int main(void)
{
	const char *dirs[] = { getenv("TMPDIR"), "/var/tmp", "." };
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_settle_table),
		cmocka_unit_test(test_swap_meta_adopt),
	};
	struct io_uring ring;
	int r, fd = -1;

	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]) && fd < 0; i++) {
		if (!dirs[i])
			continue;
		snprintf(swap_file, sizeof(swap_file), "%s/test_fdstore.XXXXXX", dirs[i]);
		fd = mkstemp(swap_file);
		if (fd >= 0) {
			close(fd);
			fd = open(swap_file, O_RDWR | O_DIRECT);
			if (fd < 0)
				unlink(swap_file);
		}
	}
	if (fd < 0) {
		printf("skip: no directory (TMPDIR, /var/tmp, .) supports O_DIRECT\n");
		return 77;
	}
	close(fd);
	r = io_uring_queue_init(4, &ring, 0);
	if (r < 0) {
		unlink(swap_file);
		printf("skip: io_uring unavailable: %s\n", strerror(-r));
		return 77;
	}
	io_uring_queue_exit(&ring);
	log_set_level(LOG_CRIT);
	r = cmocka_run_group_tests(tests, NULL, NULL);
	unlink(swap_file);
	return r;
}
