/* SPDX-License-Identifier: MIT */
/*
 * Learned prefetch for restores: recording which pages a restored
 * workload touched first, and the IMAGE.order format that carries that
 * order to the next restore (common/image.h).
 *
 * Nothing here knows where an image lives: a recording turns into a plain
 * array of page numbers (learn_build()), and an order arrives as one
 * (learn_order_decode()) for snapshot.c's prefetch.  A file image moves
 * it in IMAGE.order through libpager; another backend stores the same
 * array, encoded by learn_order_encode(), wherever it keeps its metadata.
 *
 * What is recorded, in the order it happens:
 *   - a fault on a page still in the image (the application waited on
 *     it): the page, always;
 *   - a read of the image that completed (a fault's read with its
 *     readahead, or the prefetch's): its run of pages.  Of those, only
 *     the pages the application then touched count, and pagerd cannot
 *     see that as it happens (a page in the page cache is mapped by the
 *     kernel without a fault), so learn_build() asks the client's page
 *     tables (/proc/PID/pagemap) which of them are mapped, once, when the
 *     restore is complete or a snapshot wants the order.  Such a page takes
 *     the place of its read in the order: the first touch of a page that
 *     arrived ahead of need was no later than that.  Without a pagemap,
 *     the runs a learned prefetch read count whole (they were the
 *     working set last time), the others not at all.
 * A page counts once, at its first place.  At most LEARN_PAGES_MAX events
 * are kept (16 bytes each) and an order holds at most LEARN_PAGES_MAX
 * pages: past that the recording stops, keeping what came first.
 *
 * No I/O but pread() of a pagemap (a page-table walk, no disk); never
 * blocks on a client's file.
 */
#ifndef PAGERD_LEARN_H
#define PAGERD_LEARN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Pages an order holds, and events a recording keeps, at most: 256 MiB of
 * working set with 4 KiB pages, in at most 1 MiB of events. */
#define LEARN_PAGES_MAX 65536u

struct learn;

/* A recording for a region of npages pages, or NULL (no memory: nothing is
 * recorded, which only costs prefetch order). */
struct learn *learn_new(uint64_t npages);
void learn_free(struct learn *l);

/* The application faulted on `page`, still in the image. */
void learn_fault(struct learn *l, uint64_t page);
/* A read of the image installed [page, page+n); `learned` if the learned
 * prefetch read it. */
void learn_read(struct learn *l, uint64_t page, uint64_t n, bool learned);
/* Whether the recording still takes events (not full, not finished). */
bool learn_recording(const struct learn *l);

/*
 * The order recorded so far: a new array (malloc) of *ret_n distinct pages,
 * first touch first; *ret NULL when nothing was recorded.  pagemap is the
 * client's /proc/PID/pagemap (or -1: none) and base the page number of the
 * region's first page in it.  With `finish` the recording ends here: the
 * order is kept and every later call returns it (the restore completed;
 * what the application touches after that is no longer its cold start).
 * Returns 0 or -ENOMEM.
 */
int learn_build(struct learn *l, int pagemap, uint64_t base, bool finish,
		uint64_t **ret, size_t *ret_n);

/*
 * IMAGE.order (common/image.h): encodes n pages into buf, of at least
 * image_order_size(n) bytes, for an image of `pages` pages of page_size
 * bytes whose IMAGE.crc has table_crc image_crc (0: none).  Returns the
 * bytes written, or -EINVAL (n > IMAGE_ORDER_MAX).
 */
int64_t learn_order_encode(void *buf, const uint64_t *order, size_t n,
			   uint64_t pages, uint32_t page_size, uint32_t image_crc);

/*
 * Checks an IMAGE.order of len bytes at buf against the image (pages of
 * page_size, IMAGE.crc table_crc image_crc) and returns its pages in a new
 * array (malloc): 0, or -EINVAL with *ret_why saying what is wrong
 * (damaged, oversized, another image's, a page out of range), -ENOMEM.
 * A page listed twice is kept once, at its first place.
 */
int learn_order_decode(const void *buf, size_t len, uint64_t pages,
		       uint32_t page_size, uint32_t image_crc, uint64_t **ret,
		       size_t *ret_n, const char **ret_why);

#endif
