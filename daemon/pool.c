/* SPDX-License-Identifier: MIT */
/*
 * The compressed pool (pool.h): entries in a table by slot, on two LRU
 * lists (all entries, and their region's), charged to their region.
 */
#include <errno.h>
#include <lz4.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "pool.h"

/* zstd's fastest level: the pool is on the fault path. */
#define POOL_ZSTD_LEVEL 1
/*
 * A region whose last POOL_REJECT_STREAK pages all compressed too badly
 * holds incompressible data (encrypted, compressed, random): only one page
 * in POOL_REJECT_SAMPLE is tried from then on, until one fits, so that
 * such data pays a failed compression (microseconds a page, on pagerd's
 * one thread) on a sixteenth of its evictions, not on all.
 */
#define POOL_REJECT_STREAK 64
#define POOL_REJECT_SAMPLE 16
#define POOL_REGION_BUCKETS 256

struct pool_region;

struct pool_entry {
	struct pool_entry *prev, *next;   /* all entries, coldest first */
	struct pool_entry *rprev, *rnext; /* its region's, coldest first */
	struct pool_region *reg;
	uint64_t slot;
	uint32_t clen;                    /* compressed bytes */
	uint8_t algo;                     /* enum pool_algo */
	bool spilling;
	bool clean;                       /* the device holds the same (write-through) */
	unsigned char data[];
};

struct lru {
	struct pool_entry *head, *tail;   /* head: coldest */
};

struct pool_region {
	struct pool_region *next;         /* in its hash bucket */
	uint64_t id;
	bool gone;                        /* forgotten: freed with its last entry */
	uint32_t reject_streak;           /* puts refused in a row */
	uint32_t skipped;                 /* ... not even tried since the last try */
	struct lru lru[2];                /* [e->clean] */
	struct pool_stats st;
};

struct pool {
	size_t page_size;
	uint64_t nslots;
	enum pool_algo algo;
	struct pool_entry **by_slot;
	/*
	 * Dirty entries ([0]: their page is nowhere else) and clean ones
	 * ([1]: the device has it too), each list coldest first.  The pool
	 * gives back clean entries first: they leave with no write, at once,
	 * where a dirty one costs a write (its decompression, the disk's
	 * time beside the misses' reads) and frees its room only when that
	 * write ends, while faults may wait for it.
	 */
	struct lru lru[2];
	struct pool_region *buckets[POOL_REGION_BUCKETS];
	unsigned char *scratch;           /* a compressed page, before it is kept */
	ZSTD_CCtx *zc;
	ZSTD_DCtx *zd;
	struct pool_stats st;
};

static uint64_t charge(const struct pool_entry *e)
{
	return sizeof(*e) + e->clen;
}

/* ---- lists ---------------------------------------------------------------- */

static void lru_push(struct lru *l, struct pool_entry *e, bool region)
{
	struct pool_entry **prev = region ? &e->rprev : &e->prev;
	struct pool_entry **next = region ? &e->rnext : &e->next;

	*prev = l->tail;
	*next = NULL;
	if (l->tail) {
		if (region)
			l->tail->rnext = e;
		else
			l->tail->next = e;
	} else {
		l->head = e;
	}
	l->tail = e;
}

static void lru_del(struct lru *l, struct pool_entry *e, bool region)
{
	struct pool_entry *prev = region ? e->rprev : e->prev;
	struct pool_entry *next = region ? e->rnext : e->next;

	if (prev) {
		if (region)
			prev->rnext = next;
		else
			prev->next = next;
	} else {
		l->head = next;
	}
	if (next) {
		if (region)
			next->rprev = prev;
		else
			next->prev = prev;
	} else {
		l->tail = prev;
	}
}

/* Makes e the hottest entry, of all and of its region. */
static void touch(struct pool *p, struct pool_entry *e)
{
	lru_del(&p->lru[e->clean], e, false);
	lru_push(&p->lru[e->clean], e, false);
	lru_del(&e->reg->lru[e->clean], e, true);
	lru_push(&e->reg->lru[e->clean], e, true);
}

/* ---- regions ---------------------------------------------------------------- */

static struct pool_region **region_slot_of(const struct pool *p, uint64_t id)
{
	struct pool_region *const *b = &p->buckets[(id * 0x9e3779b97f4a7c15ull) >> 56];

	while (*b && (*b)->id != id)
		b = &(*b)->next;
	return (struct pool_region **)(uintptr_t)b;
}

static struct pool_region *region_get(struct pool *p, uint64_t id)
{
	struct pool_region **b = region_slot_of(p, id), *r = *b;

	if (r) {
		r->gone = false; /* (an id is never reused; a slip is harmless) */
		return r;
	}
	r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->id = id;
	*b = r;
	return r;
}

static void region_put(struct pool *p, struct pool_region *r)
{
	struct pool_region **b;

	if (!r->gone || r->st.pages)
		return;
	b = region_slot_of(p, r->id);
	*b = r->next;
	free(r);
}

/* ---- entries ------------------------------------------------------------- */

int pool_new(struct pool **ret, size_t page_size, uint64_t nslots,
	     enum pool_algo algo)
{
	struct pool *p;

	if (!ret || !page_size || !nslots || page_size > UINT32_MAX)
		return -EINVAL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->page_size = page_size;
	p->nslots = nslots;
	p->algo = algo;
	/* Large and zero: from mmap, so slots never pooled cost nothing. */
	p->by_slot = calloc(nslots, sizeof(*p->by_slot));
	p->scratch = malloc(ZSTD_compressBound(page_size) > (size_t)LZ4_compressBound((int)page_size) ?
			    ZSTD_compressBound(page_size) : (size_t)LZ4_compressBound((int)page_size));
	p->zc = ZSTD_createCCtx();
	p->zd = ZSTD_createDCtx();
	if (!p->by_slot || !p->scratch || !p->zc || !p->zd) {
		pool_free(p);
		return -ENOMEM;
	}
	*ret = p;
	return 0;
}

void pool_set_algo(struct pool *p, enum pool_algo algo)
{
	p->algo = algo;
}

static void entry_remove(struct pool *p, struct pool_entry *e)
{
	struct pool_region *r = e->reg;
	uint64_t c = charge(e);

	lru_del(&p->lru[e->clean], e, false);
	lru_del(&r->lru[e->clean], e, true);
	p->by_slot[e->slot] = NULL;
	p->st.pages--;
	p->st.bytes -= c;
	r->st.pages--;
	r->st.bytes -= c;
	if (e->spilling) {
		p->st.spilling--;
		p->st.spilling_bytes -= c;
		r->st.spilling--;
		r->st.spilling_bytes -= c;
	}
	free(e);
	region_put(p, r);
}

void pool_free(struct pool *p)
{
	if (!p)
		return;
	for (int k = 0; k < 2; k++)
		while (p->lru[k].head)
			entry_remove(p, p->lru[k].head);
	for (size_t i = 0; i < POOL_REGION_BUCKETS; i++)
		while (p->buckets[i]) {
			struct pool_region *r = p->buckets[i];

			p->buckets[i] = r->next;
			free(r);
		}
	ZSTD_freeCCtx(p->zc);
	ZSTD_freeDCtx(p->zd);
	free(p->scratch);
	free(p->by_slot);
	free(p);
}

/* Compresses page into p->scratch; returns its length, or 0 if it does not
 * fit in `cap` bytes. */
static size_t compress(struct pool *p, const void *page, size_t cap)
{
	if (p->algo == POOL_ZSTD) {
		size_t n = ZSTD_compressCCtx(p->zc, p->scratch, cap, page, p->page_size,
					     POOL_ZSTD_LEVEL);

		return ZSTD_isError(n) ? 0 : n;
	}
	return (size_t)LZ4_compress_default(page, (char *)p->scratch,
					    (int)p->page_size, (int)cap);
}

int pool_put(struct pool *p, uint64_t slot, uint64_t region, const void *page)
{
	size_t cap = p->page_size * POOL_MAX_PERCENT / 100, n;
	struct pool_region *r;
	struct pool_entry *e;

	if (slot >= p->nslots || !page)
		return -EINVAL;
	if (p->by_slot[slot])
		return -EEXIST;
	r = region_get(p, region);
	if (!r)
		return -ENOMEM;
	n = 0;
	if (r->reject_streak < POOL_REJECT_STREAK || ++r->skipped >= POOL_REJECT_SAMPLE) {
		r->skipped = 0;
		n = compress(p, page, cap);
	}
	if (!n) {
		if (r->reject_streak < UINT32_MAX)
			r->reject_streak++;
		p->st.rejects++;
		r->st.rejects++;
		region_put(p, r);
		return -E2BIG;
	}
	r->reject_streak = 0;
	e = malloc(sizeof(*e) + n);
	if (!e) {
		region_put(p, r);
		return -ENOMEM;
	}
	*e = (struct pool_entry){ .reg = r, .slot = slot, .clen = (uint32_t)n,
				  .algo = (uint8_t)p->algo };
	memcpy(e->data, p->scratch, n);
	lru_push(&p->lru[0], e, false);
	lru_push(&r->lru[0], e, true);
	p->by_slot[slot] = e;
	p->st.pages++;
	p->st.bytes += charge(e);
	p->st.stores++;
	p->st.stored_bytes += n;
	r->st.pages++;
	r->st.bytes += charge(e);
	r->st.stores++;
	r->st.stored_bytes += n;
	return 0;
}

static int decompress(struct pool *p, const struct pool_entry *e, void *page)
{
	if (e->algo == POOL_ZSTD) {
		size_t n = ZSTD_decompressDCtx(p->zd, page, p->page_size, e->data, e->clen);

		return !ZSTD_isError(n) && n == p->page_size ? 0 : -EBADMSG;
	}
	return LZ4_decompress_safe((const char *)e->data, page, (int)e->clen,
				   (int)p->page_size) == (int)p->page_size ? 0 : -EBADMSG;
}

int pool_get(struct pool *p, uint64_t slot, void *page)
{
	struct pool_entry *e = slot < p->nslots ? p->by_slot[slot] : NULL;
	int r;

	if (!e)
		return -ENOENT;
	r = decompress(p, e, page);
	if (r) {
		p->st.corrupt++;
		e->reg->st.corrupt++;
		return r;
	}
	p->st.hits++;
	e->reg->st.hits++;
	if (!e->spilling)
		touch(p, e);
	return 0;
}

int pool_copy(struct pool *p, uint64_t slot, void *page)
{
	struct pool_entry *e = slot < p->nslots ? p->by_slot[slot] : NULL;

	return e ? decompress(p, e, page) : -ENOENT;
}

bool pool_has(const struct pool *p, uint64_t slot)
{
	return slot < p->nslots && p->by_slot[slot];
}

void pool_drop(struct pool *p, uint64_t slot)
{
	if (pool_has(p, slot))
		entry_remove(p, p->by_slot[slot]);
}

size_t pool_spill_start(struct pool *p, uint64_t region, uint64_t *ret_slots,
			size_t max)
{
	struct pool_region *r = NULL;
	size_t n = 0;

	if (region) {
		r = *region_slot_of(p, region);
		if (!r)
			return 0;
	}
	/* Clean entries first, then dirty ones.  Entries taken go to the
	 * hot end of their list, out of the next call's way; those passed
	 * again here are skipped. */
	for (int k = 1; k >= 0 && n < max; k--) {
		struct pool_entry *e = r ? r->lru[k].head : p->lru[k].head;

		while (e && n < max) {
			struct pool_entry *next = r ? e->rnext : e->next;
			uint64_t c = charge(e);

			if (e->spilling) {
				e = next;
				continue;
			}
			e->spilling = true;
			p->st.spilling++;
			p->st.spilling_bytes += c;
			e->reg->st.spilling++;
			e->reg->st.spilling_bytes += c;
			touch(p, e);
			ret_slots[n++] = e->slot;
			e = next;
		}
	}
	return n;
}

void pool_spilled(struct pool *p, uint64_t slot, bool ok)
{
	struct pool_entry *e = slot < p->nslots ? p->by_slot[slot] : NULL;
	uint64_t c;

	if (!e || !e->spilling)
		return;
	if (ok) {
		/* A clean entry leaves with no write: not a spill. */
		if (!e->clean) {
			p->st.spills++;
			e->reg->st.spills++;
		} else {
			p->st.drops++;
			e->reg->st.drops++;
		}
		entry_remove(p, e);
		return;
	}
	c = charge(e);
	e->spilling = false;
	p->st.spilling--;
	p->st.spilling_bytes -= c;
	e->reg->st.spilling--;
	e->reg->st.spilling_bytes -= c;
	touch(p, e);
}

void pool_set_clean(struct pool *p, uint64_t slot)
{
	struct pool_entry *e = slot < p->nslots ? p->by_slot[slot] : NULL;

	if (!e || e->clean)
		return;
	/* To the clean lists, as their hottest. */
	lru_del(&p->lru[0], e, false);
	lru_del(&e->reg->lru[0], e, true);
	e->clean = true;
	lru_push(&p->lru[1], e, false);
	lru_push(&e->reg->lru[1], e, true);
}

uint64_t pool_charge(const struct pool *p, uint64_t slot)
{
	return pool_has(p, slot) ? charge(p->by_slot[slot]) : 0;
}

bool pool_clean(const struct pool *p, uint64_t slot)
{
	return pool_has(p, slot) && p->by_slot[slot]->clean;
}

bool pool_spilling(const struct pool *p, uint64_t slot)
{
	return pool_has(p, slot) && p->by_slot[slot]->spilling;
}

void pool_region_stats(const struct pool *p, uint64_t region, struct pool_stats *ret)
{
	const struct pool_region *r = *region_slot_of(p, region);

	if (r)
		*ret = r->st;
	else
		memset(ret, 0, sizeof(*ret));
}

void pool_get_stats(const struct pool *p, struct pool_stats *ret)
{
	*ret = p->st;
}

void pool_forget_region(struct pool *p, uint64_t region)
{
	struct pool_region *r = *region_slot_of(p, region);

	if (!r)
		return;
	r->gone = true;
	region_put(p, r);
}

int pool_corrupt(struct pool *p, uint64_t slot)
{
	struct pool_entry *e = slot < p->nslots ? p->by_slot[slot] : NULL;

	if (!e)
		return -ENOENT;
	e->data[e->clen / 2] ^= 0x5a;
	return 0;
}
