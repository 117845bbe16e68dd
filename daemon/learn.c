/* SPDX-License-Identifier: MIT */
/*
 * Learned prefetch: the recording of a restored region's first touches and
 * the IMAGE.order codec (learn.h).
 */
#include "learn.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crc32c.h"
#include "image.h"

enum learn_kind {
	EV_FAULT,   /* the application waited on the page */
	EV_READ,    /* a run read by a fault's readahead or the prefetch */
	EV_LEARNED, /* a run read by the learned prefetch */
};

struct learn_ev {
	uint64_t page;
	uint32_t n;
	uint32_t kind;
};

struct learn {
	uint64_t npages;
	struct learn_ev *ev;
	size_t nev, cap;
	bool full;          /* LEARN_PAGES_MAX events: no more */
	bool finished;      /* the order is final (order, norder) */
	uint64_t *order;
	size_t norder;
};

struct learn *learn_new(uint64_t npages)
{
	struct learn *l = calloc(1, sizeof(*l));

	if (l)
		l->npages = npages;
	return l;
}

void learn_free(struct learn *l)
{
	if (!l)
		return;
	free(l->ev);
	free(l->order);
	free(l);
}

bool learn_recording(const struct learn *l)
{
	return l && !l->full && !l->finished;
}

static void add(struct learn *l, uint64_t page, uint64_t n, enum learn_kind kind)
{
	if (!learn_recording(l) || n == 0 || page >= l->npages)
		return;
	if (n > l->npages - page)
		n = l->npages - page;
	if (l->nev == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 256;
		struct learn_ev *v;

		if (cap > LEARN_PAGES_MAX)
			cap = LEARN_PAGES_MAX;
		if (cap == l->cap) {
			l->full = true; /* what came first is what matters */
			return;
		}
		v = realloc(l->ev, cap * sizeof(*v));
		if (!v) {
			l->full = true;
			return;
		}
		l->ev = v;
		l->cap = cap;
	}
	while (n) {
		/* Runs longer than a u32 do not occur (reads are small),
		 * but stay correct. */
		uint32_t k = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;

		l->ev[l->nev++] = (struct learn_ev){ .page = page, .n = k, .kind = kind };
		page += k;
		n -= k;
		if (n && l->nev == l->cap)
			break;
	}
}

void learn_fault(struct learn *l, uint64_t page)
{
	add(l, page, 1, EV_FAULT);
}

void learn_read(struct learn *l, uint64_t page, uint64_t n, bool learned)
{
	add(l, page, n, learned ? EV_LEARNED : EV_READ);
}

/* Pages whose mapping is read from a pagemap at a time. */
#define PM_CHUNK 512

int learn_build(struct learn *l, int pagemap, uint64_t base, bool finish,
		uint64_t **ret, size_t *ret_n)
{
	uint64_t *seen, *out, pm[PM_CHUNK];
	size_t n = 0, max;

	*ret = NULL;
	*ret_n = 0;
	if (!l)
		return 0;
	if (l->finished) {
		if (!l->norder)
			return 0;
		out = malloc(l->norder * sizeof(*out));
		if (!out)
			return -ENOMEM;
		memcpy(out, l->order, l->norder * sizeof(*out));
		*ret = out;
		*ret_n = l->norder;
		return 0;
	}
	max = l->npages < LEARN_PAGES_MAX ? (size_t)l->npages : LEARN_PAGES_MAX;
	seen = calloc((l->npages + 63) / 64, sizeof(*seen));
	out = malloc((max ? max : 1) * sizeof(*out));
	if (!seen || !out) {
		free(seen);
		free(out);
		return -ENOMEM;
	}
	for (size_t i = 0; i < l->nev && n < max; i++) {
		const struct learn_ev *e = &l->ev[i];

		for (uint64_t off = 0; off < e->n && n < max; off += PM_CHUNK) {
			uint64_t k = e->n - off < PM_CHUNK ? e->n - off : PM_CHUNK;
			ssize_t got = 0;

			if (e->kind != EV_FAULT && pagemap >= 0) {
				got = pread(pagemap, pm, k * sizeof(pm[0]),
					    (off_t)((base + e->page + off) * sizeof(pm[0])));
				if (got < 0)
					got = 0; /* the process is going: what we have */
			}
			for (uint64_t j = 0; j < k && n < max; j++) {
				uint64_t p = e->page + off + j;
				bool touched;

				if (e->kind == EV_FAULT)
					touched = true;
				else if (pagemap >= 0)
					touched = (ssize_t)((j + 1) * sizeof(pm[0])) <= got &&
						  (pm[j] >> 63);
				else
					touched = e->kind == EV_LEARNED;
				if (!touched || ((seen[p / 64] >> (p % 64)) & 1))
					continue;
				seen[p / 64] |= 1ull << (p % 64);
				out[n++] = p;
			}
		}
	}
	free(seen);
	if (finish) {
		/* Only the order is kept: the events are done with. */
		free(l->ev);
		l->ev = NULL;
		l->nev = l->cap = 0;
		l->finished = true;
		if (n) {
			uint64_t *keep = malloc(n * sizeof(*keep));

			if (!keep) {
				free(out);
				return -ENOMEM;
			}
			memcpy(keep, out, n * sizeof(*keep));
			l->order = keep;
			l->norder = n;
		}
	}
	if (!n) {
		free(out);
		return 0;
	}
	*ret = out;
	*ret_n = n;
	return 0;
}

int64_t learn_order_encode(void *buf, const uint64_t *order, size_t n,
			   uint64_t pages, uint32_t page_size, uint32_t image_crc)
{
	struct image_order_hdr *h = buf;
	uint64_t *t = (uint64_t *)((uint8_t *)buf + IMAGE_ORDER_ENTRIES_OFF);

	if (n > IMAGE_ORDER_MAX)
		return -EINVAL;
	memset(buf, 0, IMAGE_ORDER_ENTRIES_OFF);
	for (size_t i = 0; i < n; i++)
		t[i] = htole64(order[i]);
	memcpy(h->magic, IMAGE_ORDER_MAGIC, sizeof(h->magic));
	h->version = htole32(IMAGE_ORDER_VERSION);
	h->page_size = htole32(page_size);
	h->pages = htole64(pages);
	h->count = htole64(n);
	h->image_crc = htole32(image_crc);
	h->table_crc = htole32(crc32c(0, t, n * 8));
	h->flags = 0;
	h->hdr_crc = htole32(crc32c(0, h, offsetof(struct image_order_hdr, hdr_crc)));
	return (int64_t)image_order_size(n);
}

int learn_order_decode(const void *buf, size_t len, uint64_t pages,
		       uint32_t page_size, uint32_t image_crc, uint64_t **ret,
		       size_t *ret_n, const char **ret_why)
{
	const struct image_order_hdr *h = buf;
	const uint8_t *t = (const uint8_t *)buf + IMAGE_ORDER_ENTRIES_OFF;
	uint64_t count = 0, *out, *seen;
	size_t n = 0;

	*ret = NULL;
	*ret_n = 0;
	*ret_why = NULL;
	if (len < IMAGE_ORDER_ENTRIES_OFF || memcmp(h->magic, IMAGE_ORDER_MAGIC, sizeof(h->magic)) ||
	    le32toh(h->version) != IMAGE_ORDER_VERSION ||
	    le32toh(h->hdr_crc) != crc32c(0, h, offsetof(struct image_order_hdr, hdr_crc)))
		*ret_why = "not a learned order, or a damaged header";
	else if ((count = le64toh(h->count)) > IMAGE_ORDER_MAX ||
		 len > image_order_size(IMAGE_ORDER_MAX))
		*ret_why = "larger than the format allows";
	else if (len != image_order_size(count))
		*ret_why = "its size is not what its header says";
	else if (le32toh(h->page_size) != page_size || le64toh(h->pages) != pages)
		*ret_why = "made for another page size or image size";
	else if (le32toh(h->image_crc) != image_crc)
		*ret_why = "made for another image (its checksum table differs)";
	else if (le32toh(h->table_crc) != crc32c(0, t, count * 8))
		*ret_why = "its entries are damaged";
	if (*ret_why)
		return -EINVAL;
	if (count == 0)
		return 0;
	out = malloc(count * sizeof(*out));
	seen = calloc((pages + 63) / 64, sizeof(*seen));
	if (!out || !seen) {
		free(out);
		free(seen);
		return -ENOMEM;
	}
	for (uint64_t i = 0; i < count; i++) {
		uint64_t p;

		memcpy(&p, t + i * 8, 8);
		p = le64toh(p);
		if (p >= pages) {
			*ret_why = "it lists a page beyond the image";
			free(out);
			free(seen);
			return -EINVAL;
		}
		if ((seen[p / 64] >> (p % 64)) & 1)
			continue;
		seen[p / 64] |= 1ull << (p % 64);
		out[n++] = p;
	}
	free(seen);
	*ret = out;
	*ret_n = n;
	return 0;
}
