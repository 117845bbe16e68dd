/* SPDX-License-Identifier: MIT */
/*
 * Regions as pagerd sees them: the client's memfd, checked and mapped here,
 * and one state byte per page.
 */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "lock.h"
#include "log.h"
#include "page.h"
#include "pagerd.h"
#include "pool.h"
#include "swap.h"
#include "tier.h"

#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif

/*
 * A region's backing must be a memfd on shmem (not hugetlbfs), of exactly
 * the declared size, sealed against shrinking and growing: otherwise the
 * client could truncate it under our mapping and our next access to it
 * would raise SIGBUS in pagerd.  It must not be sealed against writing:
 * pagerd punches evicted pages out of it and writes swapped-in ones in,
 * and a memfd refusing that would keep every page resident whatever the
 * limits.  (A new region must also be sealed against more seals:
 * region_create().)  Returns 0 or -errno (-EBADF, -EPERM, -EINVAL), with a
 * reason logged.
 */
int region_memfd_check(struct client *c, int fd, uint64_t len)
{
	char link[64], target[PATH_MAX];
	struct statfs sfs;
	struct stat st;
	ssize_t n;
	int seals;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, target, sizeof(target) - 1);
	if (n < 0)
		return -EBADF;
	target[n] = '\0';
	if (strncmp(target, "/memfd:", 7) != 0 || fstat(fd, &st) < 0 ||
	    !S_ISREG(st.st_mode) || fstatfs(fd, &sfs) < 0 ||
	    sfs.f_type != TMPFS_MAGIC) {
		log_warn_rl(c->id, "client %" PRIu64 ": region fd is not a shmem memfd (%s)",
			 c->id, target);
		return -EBADF;
	}
	seals = fcntl(fd, F_GET_SEALS);
	if (seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) !=
				 (F_SEAL_SHRINK | F_SEAL_GROW)) {
		log_warn_rl(c->id, "client %" PRIu64 ": region memfd is not sealed against resizing",
			 c->id);
		return -EPERM;
	}
	if (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) {
		log_warn_rl(c->id, "client %" PRIu64 ": region memfd is sealed against writing: pagerd could neither evict nor fill its pages",
			    c->id);
		return -EPERM;
	}
	if ((uint64_t)st.st_size != len) {
		log_warn_rl(c->id, "client %" PRIu64 ": region memfd is %lld bytes, declared %" PRIu64,
			 c->id, (long long)st.st_size, len);
		return -EINVAL;
	}
	return 0;
}

int region_link(struct client *c, struct region *r)
{
	size_t i = 0;

	if (c->nregions == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 8;
		struct region **v = realloc(c->regions, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		c->regions = v;
		c->cap = cap;
	}
	while (i < c->nregions && c->regions[i]->addr < r->addr)
		i++;
	/* Regions of one client never overlap: their addresses come from
	 * mmap in one address space.  A client claiming otherwise lies. */
	if ((i > 0 && c->regions[i - 1]->addr + c->regions[i - 1]->len > r->addr) ||
	    (i < c->nregions && r->addr + r->len > c->regions[i]->addr))
		return -EEXIST;
	memmove(&c->regions[i + 1], &c->regions[i],
		(c->nregions - i) * sizeof(*c->regions));
	c->regions[i] = r;
	c->nregions++;
	return 0;
}

/* The page states and slots: plain memory, or a mapping of the state memfd
 * the fd store made for them (fdstore_region_added()). */
static void region_free_state(struct region *r)
{
	if (r->state_map) {
		munmap(r->state_map, r->state_len);
		close(r->state_fd);
	} else {
		free(r->state);
		free(r->slot);
	}
}

int region_create(struct client *c, const struct proto_region_create *rc,
		  int memfd, struct region **ret)
{
	struct daemon *d = c->d;
	int e;

	if (rc->len % d->page_size || rc->addr % d->page_size) {
		log_warn_rl(c->id, "client %" PRIu64 ": region not page aligned", c->id);
		return -EINVAL;
	}
	if (rc->len > d->cfg.max_region_bytes) {
		log_warn_rl(c->id, "client %" PRIu64 ": region of %" PRIu64 " bytes over the %" PRIu64 " limit",
			 c->id, rc->len, d->cfg.max_region_bytes);
		return -EFBIG;
	}
	if (c->nregions >= d->cfg.max_regions) {
		log_warn_rl(c->id, "client %" PRIu64 ": region limit (%u) reached", c->id,
			 d->cfg.max_regions);
		return -ENOSPC;
	}
	e = region_memfd_check(c, memfd, rc->len);
	if (e < 0)
		return e;
	/* The seals are final: with F_SEAL_SEAL nothing can be added once
	 * pagerd relies on them (F_SEAL_FUTURE_WRITE would make every punch
	 * fail).  Regions adopted from a predecessor's fd store may predate
	 * this rule; a punch that fails on them drops their client. */
	if (!(fcntl(memfd, F_GET_SEALS) & F_SEAL_SEAL)) {
		log_warn_rl(c->id, "client %" PRIu64 ": region memfd lacks F_SEAL_SEAL: it could be sealed against writes later",
			    c->id);
		return -EPERM;
	}

	return region_new(c, &(struct region_init){
			.addr = rc->addr, .len = rc->len,
			.memory_limit = rc->memory_limit / d->page_size,
			.name = rc->name, .memfd = memfd, .state_fd = -1,
		}, ret);
}

int region_map_state(struct region *r, int fd, size_t len, uint64_t state_off,
		     uint64_t slot_off)
{
	void *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	if (map == MAP_FAILED)
		return -errno;
	r->state_fd = fd;
	r->state_map = map;
	r->state_len = len;
	r->state = (pgstate_t *)((char *)map + state_off);
	r->slot = (uint32_t *)((char *)map + slot_off);
	return 0;
}

/*
 * The one region constructor, for a new region (region_create()) and one
 * adopted from the fd store (fdstore_adopt.c): maps the memfd and the
 * page states (plain memory, or the memfd ri->state_fd holding them) and
 * links the region to its client.  Everything else is zero: no slots, no
 * snapshot, no image.  Returns 0, or -errno with nothing kept (the fds
 * stay the caller's): -ENOMEM, a failed mmap, -EEXIST (it overlaps a
 * region of c).
 */
int region_new(struct client *c, const struct region_init *ri, struct region **ret)
{
	struct daemon *d = c->d;
	struct region *r = calloc(1, sizeof(*r));
	int e;

	if (!r)
		return -ENOMEM;
	r->client = c;
	r->addr = ri->addr;
	r->len = ri->len;
	r->npages = ri->len / d->page_size;
	r->memory_limit = ri->memory_limit;
	r->memfd = ri->memfd;
	r->state_fd = -1;
	memcpy(r->name, ri->name, sizeof(r->name));
	r->name[sizeof(r->name) - 1] = '\0';
	r->map = mmap(NULL, r->len, PROT_READ | PROT_WRITE,
		      MAP_SHARED | MAP_NORESERVE, ri->memfd, 0);
	if (r->map == MAP_FAILED) {
		e = -errno;
	} else if (ri->state_fd >= 0) {
		e = region_map_state(r, ri->state_fd, ri->state_len, ri->state_off,
				     ri->slot_off);
	} else {
		/* (The fd store moves them into a memfd a successor maps.) */
		r->state = calloc(r->npages, sizeof(*r->state));
		e = r->state ? 0 : -ENOMEM;
	}
	if (e < 0) {
		log_warn_rl(c->id, "client %" PRIu64 ": cannot map region: %s", c->id,
			 strerror(-e));
		goto fail;
	}
	e = region_link(c, r);
	if (e < 0) {
		log_warn_rl(c->id, "client %" PRIu64 ": region at 0x%" PRIx64 " overlaps another",
			 c->id, r->addr);
		goto fail;
	}
	r->id = ri->id ? ri->id : ++d->next_region_id;
	*ret = r;
	return 0;
fail:
	if (r->map != MAP_FAILED)
		munmap(r->map, r->len);
	if (r->state_map)
		munmap(r->state_map, r->state_len);
	else
		free(r->state);
	free(r);
	return e;
}

static void region_remove(struct client *c, struct region *r)
{
	for (size_t i = 0; i < c->nregions; i++) {
		if (c->regions[i] == r) {
			memmove(&c->regions[i], &c->regions[i + 1],
				(c->nregions - i - 1) * sizeof(*c->regions));
			c->nregions--;
			return;
		}
	}
}

/* The client moved the whole region with mremap(2). */
void region_move(struct region *r, uint64_t to)
{
	struct client *c = r->client;
	uint64_t from = r->addr;

	region_remove(c, r);
	r->addr = to;
	/* Cannot fail: the slot we just freed is there, and the kernel
	 * moved the mapping to a free range. */
	if (region_link(c, r) < 0) {
		r->addr = from;
		region_link(c, r);
	}
	region_changed(r);
}

/*
 * The region's record (address, limit, snapshot) changed where no request
 * is being answered (a uffd event, a snapshot's instant): whoever keeps a
 * copy of it outside pagerd (the fd store, which set the hook at start)
 * hears at once, so that a successor never finds it stale.
 */
void region_changed(struct region *r)
{
	struct daemon *d = r->client->d;

	if (d->region_changed)
		d->region_changed(r);
}

/* Frees everything pagerd holds for the region, including the memfd and
 * its swap slots.  I/O in flight finishes on its own and frees what it
 * holds when it completes; write-backs still read pagerd's mapping until
 * then (the engine submits, resubmits and retries later), so they keep it
 * (page_io_detach_all()).
 * What the subsystems above keep of it (parked faults, a snapshot, the fd
 * store's names) is theirs to drop first: client.c does. */
void region_destroy(struct region *r)
{
	struct daemon *d = r->client->d;
	bool map_held;

	if (d->swap)
		swap_pool_forget_region(d->swap, r->id);
	map_held = page_io_detach_all(r);
	agent_region_gone(r);
	/* Handed over: the states and slots are the successor's. */
	for (uint64_t p = 0; p < r->npages && !d->handover; p++)
		if (r->slot && r->slot[p])
			region_drop_slot(r, p);
	page_region_gone(r);
	region_remove(r->client, r);
	/* Write-backs in flight read it still: the last one unmaps it. */
	if (!map_held)
		munmap(r->map, r->len);
	close(r->memfd);
	region_free_state(r);
	free(r);
	evict_kick(d); /* room for faults waiting on a limit */
}

int region_set_slot(struct region *r, uint64_t page, int64_t slot)
{
	if (slot >= (int64_t)UINT32_MAX)
		return -ERANGE;
	/* Fault injection (--test-hooks): as if the array's allocation
	 * failed, so that the callers' handling of it can be tested. */
	if (slot >= 0 && r->client->d->test_slot_fail == r->id)
		return -ENOMEM;
	if (!r->slot) {
		r->slot = calloc(r->npages, sizeof(*r->slot));
		if (!r->slot)
			return -ENOMEM;
	}
	r->slot[page] = slot < 0 ? 0 : (uint32_t)(slot + 1);
	return 0;
}

/*
 * The memfd's seals are checked when the region is made, but a client that
 * can still make a punch fail (an immutable or append-only attribute, a
 * region adopted without F_SEAL_SEAL) holds memory no limit can take: such
 * a failure is the client's doing, and drops it (client_misbehaved()).
 * The caller keeps the pages as they were: they are still in memory.
 */
int region_punch(struct region *r, uint64_t first, uint64_t n)
{
	size_t ps = r->client->d->page_size;
	int e;

	do
		e = fallocate(r->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      (off_t)(first * ps), (off_t)(n * ps)) < 0 ? -errno : 0;
	while (e == -EINTR);
	if (e < 0)
		client_misbehaved(r->client, "its memfd refuses hole punches", e);
	return e;
}

void region_fill_stats(struct region *r, struct proto_region_stats *out)
{
	const struct counters *st = &r->stats;
	struct pool_stats ps = { 0 };

	tier_sync_stats(r->client->d, r);
	if (r->client->d->swap)
		swap_pool_stats(r->client->d->swap, r->id, &ps);
	out->pool_pages = ps.pages;
	out->pool_bytes = ps.bytes;
	out->region_id = r->id;
	out->client_id = r->client->id;
	out->client_pid = r->client->cred.pid;
	out->pages = r->npages;
	out->resident = r->resident;
	out->swapped = r->swapped;
	out->zero = r->npages - r->resident - r->swapped;
	out->memory_limit = r->memory_limit * r->client->d->page_size;
#define X(name, scope, ...) COUNTER_IF_##scope(out->counters.name = st->name;)
	PAGER_COUNTERS(X)
#undef X
	out->image_pending = r->image_pending;
	memcpy(out->name, r->name, sizeof(out->name));
}

struct region *region_find(struct client *c, uint64_t addr)
{
	size_t lo = 0, hi = c->nregions;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		struct region *r = c->regions[mid];

		if (addr < r->addr)
			hi = mid;
		else if (addr >= r->addr + r->len)
			lo = mid + 1;
		else
			return r;
	}
	return NULL;
}

struct region *region_find_id(struct client *c, uint64_t id)
{
	for (size_t i = 0; i < c->nregions; i++)
		if (c->regions[i]->id == id)
			return c->regions[i];
	return NULL;
}

/*
 * The app can punch pages out of its memfd behind our back (MADV_REMOVE on
 * its mapping).  pagerd does not ask for the REMOVE events that would say
 * so: the kernel raises one for every MADV_DONTNEED too, including each
 * reference sample the Clock hand asks libpager's agent for, and fails
 * every uffd ioctl of that client until the madvising thread runs again
 * (mmap_changing), which stalled fault service.  So a punched page is found
 * out later: at its next fault (MISSING where we count it resident, and the
 * memfd has no data there: it is zero-filled, as the app asked), or here,
 * by the holes of the memfd (SEEK_HOLE: a page the kernel swapped out is
 * data, not a hole), when stats are asked for.  Until then it counts as
 * resident, which errs on the side of the limit.
 *
 * The walk costs a syscall per hole, and a region mostly swapped out is
 * mostly holes: milliseconds per call, which any client can ask for as
 * often as it likes (its own region's stats; pagerctl's, every region's).
 * So it runs with the daemon lock let go (lock.h), the fault threads
 * serving every client meanwhile, and finds only where the holes are.
 * Each page in a hole that counts resident is then checked again under
 * the lock: a fault may have filled it since.
 */

/* Holes found by the walk: [first, first+n) pages. */
struct hole {
	uint64_t first, n;
};

/* The memfd's holes over [0, end), or NULL (none, or no memory: the stats
 * stay as they were, erring on the side of the limit). */
static struct hole *find_holes(int memfd, off_t end, size_t ps, size_t *ret_n)
{
	struct hole *h = NULL;
	size_t n = 0, cap = 0;
	off_t hole, data;

	for (off_t pos = 0; pos < end; pos = data) {
		hole = lseek(memfd, pos, SEEK_HOLE);
		if (hole < 0 || hole >= end)
			break;
		data = lseek(memfd, hole, SEEK_DATA);
		if (data < 0 || data > end)
			data = end; /* ENXIO: a hole to the end */
		if (n == cap) {
			size_t more = cap ? cap * 2 : 64;
			struct hole *g = reallocarray(h, more, sizeof(*h));

			if (!g)
				break;
			h = g;
			cap = more;
		}
		h[n++] = (struct hole){ (uint64_t)hole / ps,
					(uint64_t)(data - hole) / ps };
	}
	*ret_n = n;
	return h;
}

/* Test builds (PROTO_INJECT_HOLD_RECONCILE): the walk waits, the lock let
 * go, until another region has a resident page: the test's proof that
 * faults are served meanwhile. */
static void test_hold(struct region *r, bool paused)
{
	struct daemon *d = r->client->d;
	uint64_t until = d->test_hold_until;
	bool there = false;

	if (!paused || !d->test_hold_reconcile || d->test_hold_reconcile != r->id)
		return;
	d->test_hold_reconcile = 0;
	log_info("test hook: the stats walk of region %" PRIu64 " waits for region %" PRIu64,
		 r->id, until);
	daemon_lock_loop_resume(true);
	for (int ms = 0; ms < 10000 && !there; ms++) {
		for (struct client *c = d->clients; c && !there; c = c->next) {
			struct region *o = region_find_id(c, until);

			there = o && o->resident;
		}
		if (!there) {
			daemon_lock_loop_pause();
			usleep(1000);
			daemon_lock_loop_resume(true);
		}
	}
	if (!there)
		log_warn("test hook: region %" PRIu64 " got no page in 10 s: faults were not served",
			 until);
	daemon_lock_loop_pause();
}

void region_reconcile(struct region *r)
{
	size_t ps = r->client->d->page_size, nholes = 0;
	struct hole *holes;
	bool paused;

	if (!r->resident)
		return;
	paused = daemon_lock_loop_pause();
	holes = find_holes(r->memfd, (off_t)(r->npages * ps), ps, &nholes);
	test_hold(r, paused);
	daemon_lock_loop_resume(paused);
	for (size_t i = 0; i < nholes; i++)
		for (uint64_t p = holes[i].first; p < holes[i].first + holes[i].n; p++) {
			pgstate_t b = r->state[p];

			/* Only a resident page can have been discarded by
			 * the client; a swapped page's hole is ours, and
			 * pages with I/O in flight settle when it
			 * completes.  One filled since the walk is data. */
			if (pg_state(b) != PAGE_RESIDENT || (b & PG_IO) ||
			    region_in_memory(r, p))
				continue;
			page_emptied(r, p);
		}
	free(holes);
}

void client_reconcile(struct client *c)
{
	for (size_t i = 0; i < c->nregions; i++)
		region_reconcile(c->regions[i]);
}
