/* SPDX-License-Identifier: MIT */
/*
 * The compressed pool: pages evicted to swap, kept compressed in memory
 * (LZ4, or zstd) under their swap slot, so that a miss on them costs a
 * decompression instead of a disk read.  What the kernel's zswap is to
 * its swap.
 *
 * This file holds the data and its bookkeeping only, and does no I/O: the
 * swap store (swap.c) puts pages here in place of writing them, serves
 * reads from here, and writes the coldest entries to their slots on the
 * device (spills) when the pool must shrink.  An entry is keyed by its
 * slot: the page state machine is unchanged (a pooled page is SWAPPED,
 * with a slot, whose data happens to be here).
 *
 * Every entry is charged to the region its slot's tag names, so that the
 * limits (which count resident pages and the pool together) see what
 * each region, client and the daemon hold here.  Bytes charged are the
 * compressed size plus the entry's header: what the pool really costs.
 *
 * Everything runs on the loop's thread; nothing is thread-safe.
 */
#ifndef PAGERD_POOL_H
#define PAGERD_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pool;

enum pool_algo {
	POOL_LZ4 = 0,
	POOL_ZSTD = 1,
};

/*
 * A page is kept only if it compresses to at most this share of a page
 * (percent): a page barely smaller than itself would cost nearly a page
 * of memory and a decompression, for a disk read saved; it goes to swap
 * as it would without a pool.
 */
#define POOL_MAX_PERCENT 75

/* What the pool holds and has done; per region (pool_region_stats) or in
 * all (pool_get_stats). */
struct pool_stats {
	uint64_t pages;         /* entries now */
	uint64_t bytes;         /* charged now: compressed data + headers */
	uint64_t spilling;      /* entries being written to the device */
	uint64_t spilling_bytes;
	uint64_t stores;        /* pages compressed into the pool */
	uint64_t stored_bytes;  /* ... their compressed size */
	uint64_t rejects;       /* pages that compressed too badly: to swap */
	uint64_t hits;          /* pages read from the pool */
	uint64_t spills;        /* entries written to the device and dropped */
	uint64_t drops;         /* clean entries dropped to make room: no write */
	uint64_t corrupt;       /* entries that failed to decompress */
};

/* An empty pool for pages of page_size under slots [0, nslots).  Returns
 * 0, -EINVAL, -ENOMEM. */
int pool_new(struct pool **ret, size_t page_size, uint64_t nslots,
	     enum pool_algo algo);
/* Frees every entry.  NULL is fine. */
void pool_free(struct pool *p);
/* The compressor for pages put from now on (entries keep theirs). */
void pool_set_algo(struct pool *p, enum pool_algo algo);

/*
 * Compresses page into the pool under slot, charged to region.  Returns
 * 0 (kept), -E2BIG (compresses to more than POOL_MAX_PERCENT: not kept,
 * counted as a reject), -EEXIST (slot has an entry), -EINVAL, -ENOMEM.
 */
int pool_put(struct pool *p, uint64_t slot, uint64_t region, const void *page);
/*
 * Decompresses slot's entry into page (page_size bytes) and marks it
 * used.  Returns 0, -ENOENT (no entry), -EBADMSG (the entry does not
 * decompress to a whole page: page is then undefined, and the caller's
 * CRC check rejects it).
 */
int pool_get(struct pool *p, uint64_t slot, void *page);
/* The same for a spill: no hit counted, the entry not made hotter. */
int pool_copy(struct pool *p, uint64_t slot, void *page);
bool pool_has(const struct pool *p, uint64_t slot);
/* Drops slot's entry, if any. */
void pool_drop(struct pool *p, uint64_t slot);

/*
 * Up to max of the coldest entries not being spilled, of region (0: of
 * any), clean ones (pool_set_clean()) first, marked as being spilled,
 * their slots stored in ret_slots.
 * Returns how many.  pool_spilled() ends each: ok, the entry goes (its
 * data is on the device); not ok, it stays, as the hottest.
 */
size_t pool_spill_start(struct pool *p, uint64_t region, uint64_t *ret_slots,
			size_t max);
void pool_spilled(struct pool *p, uint64_t slot, bool ok);
/* The memory slot's entry takes (what the limits count), 0 without one. */
uint64_t pool_charge(const struct pool *p, uint64_t slot);
bool pool_spilling(const struct pool *p, uint64_t slot);
/* The device holds the entry's data too (written through): it can leave
 * the pool without a write. */
void pool_set_clean(struct pool *p, uint64_t slot);
bool pool_clean(const struct pool *p, uint64_t slot);

/* The region's entries, or zeros for a region with none. */
void pool_region_stats(const struct pool *p, uint64_t region,
		       struct pool_stats *ret);
void pool_get_stats(const struct pool *p, struct pool_stats *ret);
/* The region is gone: its counts go with its last entry. */
void pool_forget_region(struct pool *p, uint64_t region);

/* For tests: flips a byte of slot's compressed data.  0 or -ENOENT. */
int pool_corrupt(struct pool *p, uint64_t slot);

#endif
