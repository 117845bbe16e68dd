/* SPDX-License-Identifier: MIT */
/*
 * Regions: a sealed memfd mapped MAP_SHARED here and registered on the
 * pager's userfaultfd, then handed to pagerd, which maps the same memfd and
 * serves every fault on our mapping.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"
#include "uffd_compat.h"

static void region_link(struct pager *p, struct pager_region *r)
{
	r->next = p->regions;
	if (p->regions)
		p->regions->prev = r;
	p->regions = r;
}

static void region_unlink(struct pager *p, struct pager_region *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		p->regions = r->next;
	if (r->next)
		r->next->prev = r->prev;
}

/* The uffd modes a region is registered with: MISSING for first touch and
 * swap-in, WP for dirty tracking and snapshots where the kernel has it for
 * shmem.  Not MINOR: a page in the page cache is mapped by the kernel on
 * its own (pagerd only ever puts complete data there), so a page whose
 * mapping pagerd dropped to sample its use comes back without a round
 * trip. */
static int region_register(struct pager *p, void *addr, size_t len)
{
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)addr, .len = len },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	uint64_t need = (1ULL << _UFFDIO_ZEROPAGE) | (1ULL << _UFFDIO_COPY) |
			(1ULL << _UFFDIO_WAKE);

	if (p->uffd_features & UFFD_FEATURE_WP_HUGETLBFS_SHMEM)
		reg.mode |= UFFDIO_REGISTER_MODE_WP;
	if (ioctl(p->uffd, UFFDIO_REGISTER, &reg) < 0)
		return -errno;
	if ((reg.ioctls & need) != need) {
		struct uffdio_range rng = reg.range;

		ioctl(p->uffd, UFFDIO_UNREGISTER, &rng);
		return -EOPNOTSUPP;
	}
	return 0;
}

static void region_unregister(struct pager *p, void *addr, size_t len)
{
	struct uffdio_range rng = { .start = (uintptr_t)addr, .len = len };

	/* Wakes any thread still waiting on the range; it re-faults as an
	 * ordinary shmem fault. */
	ioctl(p->uffd, UFFDIO_UNREGISTER, &rng);
}

PAGER_EXPORT int pager_region_create(struct pager *p, size_t len,
				     const struct pager_region_opts *opts,
				     struct pager_region **ret)
{
	struct pager_region_opts o = { 0 };
	struct proto_msg msg = { 0 };
	struct proto_region_create *rc = &msg.body.region_create;
	struct proto_reply reply;
	struct pager_region *r;
	const char *name;
	int e;

	if (!p || !ret || len == 0 || (opts && opts->sz < sizeof(size_t)))
		return -EINVAL;
	if (opts)
		memcpy(&o, opts, opts->sz < sizeof(o) ? opts->sz : sizeof(o));
	name = o.name ? o.name : "pager-region";
	if (strnlen(name, PROTO_NAME_MAX) >= PROTO_NAME_MAX)
		return -ENAMETOOLONG;
	if (len > SIZE_MAX - p->page_size)
		return -EINVAL;
	len = (len + p->page_size - 1) & ~(p->page_size - 1);

	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->pager = p;
	r->len = len;
	r->addr = MAP_FAILED;
	r->snap_fd = -1;
	r->snap_crc_fd = -1;
	r->snap_order_fd = -1;
	r->memfd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (r->memfd < 0)
		goto fail_errno;
	/* pagerd maps the memfd and refuses one that could still be
	 * resized, or be sealed against its punches and writes later:
	 * these seals, and F_SEAL_SEAL so that they are final. */
	if (ftruncate(r->memfd, (off_t)len) < 0 ||
	    fcntl(r->memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
		goto fail_errno;
	r->addr = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, r->memfd, 0);
	if (r->addr == MAP_FAILED)
		goto fail_errno;
	/* A forked child would inherit the mapping without the uffd
	 * registration and read holes where our data is swapped out. */
	if (madvise(r->addr, len, MADV_DONTFORK) < 0)
		goto fail_errno;
	e = region_register(p, r->addr, len);
	if (e < 0)
		goto fail;

	rc->addr = (uintptr_t)r->addr;
	rc->len = len;
	rc->memory_limit = o.memory_limit;
	strncpy(rc->name, name, sizeof(rc->name) - 1);
	pthread_mutex_lock(&p->lock);
	e = pager_call_locked(p, &msg, PROTO_REGION_CREATE, &r->memfd, 1, &reply);
	if (e == 0) {
		r->id = reply.region_id;
		region_link(p, r);
	}
	pthread_mutex_unlock(&p->lock);
	if (e < 0) {
		region_unregister(p, r->addr, len);
		goto fail;
	}
	*ret = r;
	return 0;

fail_errno:
	e = -errno;
fail:
	if (r->addr != MAP_FAILED)
		munmap(r->addr, len);
	if (r->memfd >= 0)
		close(r->memfd);
	free(r);
	return e;
}

PAGER_EXPORT void *pager_region_addr(const struct pager_region *r)
{
	return r ? r->addr : NULL;
}

PAGER_EXPORT size_t pager_region_len(const struct pager_region *r)
{
	return r ? r->len : 0;
}

PAGER_EXPORT int64_t pager_region_id(const struct pager_region *r)
{
	return r ? (int64_t)r->id : -EINVAL;
}

/*
 * Unregisters, tells the daemon (which unmaps and frees everything it holds
 * for the region), then unmaps here.  The region is gone whatever the daemon
 * answers; its error, if any, is returned.
 */
PAGER_EXPORT int pager_region_destroy(struct pager_region *r)
{
	struct proto_msg msg = { 0 };
	struct pager *p;
	int e;

	if (!r)
		return 0;
	p = r->pager;
	region_unregister(p, r->addr, r->len);
	msg.body.region_destroy.region_id = r->id;
	pthread_mutex_lock(&p->lock);
	e = pager_call_locked(p, &msg, PROTO_REGION_DESTROY, NULL, 0, NULL);
	region_unlink(p, r);
	pthread_mutex_unlock(&p->lock);
	munmap(r->addr, r->len);
	close(r->memfd);
	if (r->snap_fd >= 0)
		close(r->snap_fd); /* unfinished: no sidecar, never complete */
	if (r->snap_crc_fd >= 0)
		close(r->snap_crc_fd);
	if (r->snap_order_fd >= 0)
		close(r->snap_order_fd);
	free(r->snap_path);
	free(r);
	return e;
}

PAGER_EXPORT int pager_region_set_limit(struct pager_region *r, uint64_t bytes)
{
	struct proto_msg msg = { 0 };
	int e;

	if (!r)
		return -EINVAL;
	msg.body.region_set_limit.region_id = r->id;
	msg.body.region_set_limit.limit = bytes;
	pthread_mutex_lock(&r->pager->lock);
	e = pager_call_locked(r->pager, &msg, PROTO_REGION_SET_LIMIT, NULL, 0, NULL);
	pthread_mutex_unlock(&r->pager->lock);
	return e;
}

PAGER_EXPORT int pager_region_discard(struct pager_region *r, size_t off,
				      size_t len)
{
	struct proto_msg msg = { 0 };
	size_t ps;
	int e;

	if (!r)
		return -EINVAL;
	ps = r->pager->page_size;
	if (off % ps || len % ps || len == 0 || off > r->len || len > r->len - off)
		return -EINVAL;
	msg.body.region_discard.region_id = r->id;
	msg.body.region_discard.offset = off;
	msg.body.region_discard.len = len;
	pthread_mutex_lock(&r->pager->lock);
	e = pager_call_locked(r->pager, &msg, PROTO_REGION_DISCARD, NULL, 0, NULL);
	pthread_mutex_unlock(&r->pager->lock);
	return e;
}

/*
 * struct pager_region_stats as 0.2.0 shipped it: programs built then read
 * these fields where they were, so fields are only ever appended (and
 * faults_minor keeps its place, always 0).
 */
#define ABI_FIELD(f, k) \
	_Static_assert(offsetof(struct pager_region_stats, f) == \
		       offsetof(struct pager_region_stats, pages) + 8 * (k), \
		       "struct pager_region_stats: " #f " moved, the ABI breaks");
ABI_FIELD(pages, 0) ABI_FIELD(resident, 1) ABI_FIELD(swapped, 2) ABI_FIELD(zero, 3)
ABI_FIELD(memory_limit, 4) ABI_FIELD(faults_missing, 5) ABI_FIELD(faults_minor, 6)
ABI_FIELD(faults_wp, 7) ABI_FIELD(swap_ins, 8) ABI_FIELD(swap_outs, 9)
ABI_FIELD(evict_zero, 10) ABI_FIELD(evict_clean, 11) ABI_FIELD(evict_dirty, 12)
ABI_FIELD(evict_aborted, 13) ABI_FIELD(readahead, 14) ABI_FIELD(readahead_hits, 15)
ABI_FIELD(poisoned, 16) ABI_FIELD(image_reads, 17) ABI_FIELD(image_pending, 18)
ABI_FIELD(pages_zero_filled, 19)
#undef ABI_FIELD
_Static_assert(offsetof(struct pager_region_stats, sz) == 0,
	       "struct pager_region_stats: sz first, the ABI breaks");

PAGER_EXPORT int pager_region_stats(const struct pager_region *r,
				    struct pager_region_stats *ret)
{
	struct pager_region_stats out = { 0 };
	struct proto_msg msg = { 0 };
	struct proto_reply reply;
	const struct proto_region_stats *rs = &reply.region;
	int e;

	if (!r || !ret || ret->sz < sizeof(size_t))
		return -EINVAL;
	msg.body.region_ref.region_id = r->id;
	pthread_mutex_lock(&r->pager->lock);
	e = pager_call_locked(r->pager, &msg, PROTO_REGION_STATS, NULL, 0, &reply);
	pthread_mutex_unlock(&r->pager->lock);
	if (e < 0)
		return e;
	out.sz = ret->sz < sizeof(out) ? ret->sz : sizeof(out);
	out.pages = rs->pages;
	out.resident = rs->resident;
	out.swapped = rs->swapped;
	out.zero = rs->zero;
	out.memory_limit = rs->memory_limit;
	out.image_pending = rs->image_pending;
	out.pool_pages = rs->pool_pages;
	out.pool_bytes = rs->pool_bytes;
	/* By name: a REGION counter without its field in the public struct
	 * does not build.  faults_minor stays 0. */
#define X(name, scope, ...) COUNTER_IF_##scope(out.name = rs->counters.name;)
	PAGER_COUNTERS(X)
#undef X
	memcpy(ret, &out, out.sz);
	return 0;
}
