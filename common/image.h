/* SPDX-License-Identifier: MIT */
/*
 * Snapshot images: the sidecars that say an image is complete and what its
 * pages held.
 *
 * An image is a raw sparse file: byte i of the file is byte i of the
 * region at the snapshot's instant, holes where the region held zeros or
 * had never been written — the layout VMMs use for guest memory, usable
 * as is by any tool.  Everything else lives beside it, in two files.
 *
 * IMAGE.crc, binary, little-endian: a 64-byte header (struct
 * image_crc_hdr) then one uint32 per page, the CRC32C (Castagnoli, as the
 * swap's) of that page's bytes in the image.  A hole's entry is the
 * CRC32C of an all-zero page (hole_crc in the header): holes and data
 * pages are told apart by it, since an all-zero page is never written as
 * data.  pagerd computes every entry from the bytes it writes, in its own
 * buffers, and checks each page it reads back on restore against it: a
 * page rewritten in place, a hole that now holds data, a data page
 * punched to a hole all fail and are poisoned (SIGBUS), never restored
 * wrong.  table_crc (of the entries) and hdr_crc (of the header's first
 * 36 bytes) catch a damaged table, which is refused as a whole.
 *
 * IMAGE.meta, a short text file of "key value" lines:
 *
 *   format pagerd-image 2   2: IMAGE.crc is part of the image; 1 (an
 *                           image made before checksums): no IMAGE.crc,
 *                           restored unchecked (pagerd logs a warning)
 *   size 402653184          bytes: the image's exact size
 *   page_size 4096
 *   pages 98304             size / page_size
 *   data_pages 51234        pages copied (the rest are holes)
 *   name guest              the region's name
 *   created 1795000000      seconds since the epoch
 *   complete yes
 *
 * IMAGE.order, optional, binary, little-endian: the learned order, the
 * pages the workload of the region touched first after it was restored
 * (struct image_order_hdr, then `count` uint64 page numbers, first touch
 * first, each page at most once).  It only steers which pages a restore
 * prefetches first; it never says what a page holds, so a damaged,
 * oversized or mismatched one (another image's: image_crc is the
 * table_crc of the IMAGE.crc it was written with, 0 for none) is ignored
 * with a warning and the image restores as if it had none.
 *
 * The sidecars are written last, each to NAME.tmp, synced and renamed:
 * the image synced first, then IMAGE.crc, then IMAGE.order (or an old one
 * removed), then IMAGE.meta.  IMAGE.meta is removed first when a new
 * snapshot to the same path starts: an image without a valid IMAGE.meta
 * never looks complete, and one whose meta says format 2 is refused
 * without a valid IMAGE.crc.
 *
 * Shared by libpager and pagerctl; never logs, never allocates beyond the
 * caller's buffers.
 */
#ifndef PAGER_IMAGE_H
#define PAGER_IMAGE_H

#include <stddef.h>
#include <stdint.h>

struct image_meta {
	uint32_t format;      /* 1 or 2 (see above); image_meta_commit() writes 2 */
	uint64_t size;
	uint32_t page_size;
	uint64_t data_pages;
	uint64_t created;
	char name[64];
};

/* "IMAGE.meta" for an image path; -ENAMETOOLONG if it does not fit. */
int image_meta_path(const char *image, char *buf, size_t n);

/* Removes IMAGE.meta (a new snapshot is starting).  0 or -errno; a missing
 * sidecar is fine. */
int image_meta_remove(const char *image);

/* Syncs the image (fd), then writes IMAGE.meta atomically and syncs its
 * directory.  Returns 0 or -errno. */
int image_meta_commit(const char *image, int image_fd, const struct image_meta *m);

/*
 * Reads IMAGE.meta and checks it against the image (open on fd): every key
 * known and present once, format and version right, complete, size equal
 * to the file's, a page multiple.  Returns 0 and fills *ret, or -ENOENT
 * (no sidecar: not a complete snapshot), -EINVAL (garbage, incomplete, or
 * not matching the image).
 */
int image_meta_load(const char *image, int image_fd, struct image_meta *ret);

/* ---- IMAGE.crc -------------------------------------------------------- */

#define IMAGE_CRC_MAGIC "pgrdcrc"   /* 8 bytes with its NUL */
#define IMAGE_CRC_VERSION 1
#define IMAGE_CRC_ENTRIES_OFF 64     /* the entries start here */

struct image_crc_hdr {
	char magic[8];        /* IMAGE_CRC_MAGIC */
	uint32_t version;     /* IMAGE_CRC_VERSION */
	uint32_t page_size;
	uint64_t pages;       /* entries */
	uint32_t hole_crc;    /* CRC32C of an all-zero page: a hole's entry */
	uint32_t table_crc;   /* CRC32C of the pages * 4 bytes of entries */
	uint32_t flags;       /* 0 */
	uint32_t hdr_crc;     /* CRC32C of the 36 bytes before it */
} __attribute__((packed));

/* Bytes of IMAGE.crc for an image of `pages` pages. */
static inline uint64_t image_crc_size(uint64_t pages)
{
	return IMAGE_CRC_ENTRIES_OFF + pages * 4;
}

/* "IMAGE.crc"; -ENAMETOOLONG if it does not fit. */
int image_crc_path(const char *image, char *buf, size_t n);

/*
 * A snapshot's table, for pagerd to fill: a memfd of image_crc_size(pages)
 * bytes, sealed against resizing and further seals (pagerd writes it; it
 * checks the seals).  Returns 0 and sets *ret_fd, or -errno.
 */
int image_crc_create(uint64_t pages, int *ret_fd);

/* Writes the table pagerd filled (crc_fd) to IMAGE.crc atomically (tmp,
 * synced, renamed).  Call before image_meta_commit().  0 or -errno. */
int image_crc_commit(const char *image, int crc_fd);

/*
 * Reads IMAGE.crc into a new memfd sealed against every change, for
 * pagerd to check pages against (it checks the header and the table's
 * CRC itself).  Returns 0 and sets *ret_fd, -ENOENT (no IMAGE.crc),
 * -EINVAL (not the size an image of `pages` pages has), or -errno.
 */
int image_crc_load(const char *image, uint64_t pages, int *ret_fd);

/* ---- IMAGE.order ------------------------------------------------------ */

#define IMAGE_ORDER_MAGIC "pgrdord"   /* 8 bytes with its NUL */
#define IMAGE_ORDER_VERSION 1
#define IMAGE_ORDER_ENTRIES_OFF 64     /* the entries start here */
/* The most entries an IMAGE.order holds (1 GiB of 4 KiB pages; pagerd
 * records fewer, see its learn.h): bounds what either side reads. */
#define IMAGE_ORDER_MAX 262144u

struct image_order_hdr {
	char magic[8];        /* IMAGE_ORDER_MAGIC */
	uint32_t version;     /* IMAGE_ORDER_VERSION */
	uint32_t page_size;
	uint64_t pages;       /* of the image */
	uint64_t count;       /* entries, <= IMAGE_ORDER_MAX */
	uint32_t image_crc;   /* table_crc of the image's IMAGE.crc (0: none) */
	uint32_t table_crc;   /* CRC32C of the count * 8 bytes of entries */
	uint32_t flags;       /* 0 */
	uint32_t hdr_crc;     /* CRC32C of the 44 bytes before it */
} __attribute__((packed));

/* Bytes of an IMAGE.order of `count` entries. */
static inline uint64_t image_order_size(uint64_t count)
{
	return IMAGE_ORDER_ENTRIES_OFF + count * 8;
}

/* "IMAGE.order"; -ENAMETOOLONG if it does not fit. */
int image_order_path(const char *image, char *buf, size_t n);

/* Removes IMAGE.order; 0 or -errno (a missing one is fine). */
int image_order_remove(const char *image);

/*
 * A snapshot's learned order, for pagerd to fill: a memfd of
 * image_order_size(IMAGE_ORDER_MAX) bytes (sparse: pages are allocated as
 * written), sealed against resizing and further seals.  pagerd writes the
 * header and `count` entries at the snapshot's end, or leaves it all zero
 * (no order learned).  Returns 0 and sets *ret_fd, or -errno.
 */
int image_order_create(int *ret_fd);

/* Writes the order pagerd filled (order_fd) to IMAGE.order atomically
 * (tmp, synced, renamed), or removes an old IMAGE.order when pagerd left
 * none.  Call after image_crc_commit(), before image_meta_commit().
 * 0 or -errno. */
int image_order_commit(const char *image, int order_fd);

/*
 * Reads IMAGE.order into a new memfd sealed against every change, for
 * pagerd to check and use (it checks everything itself, and warns about
 * what it ignores: a file larger than the format allows is cut at
 * image_order_size(IMAGE_ORDER_MAX) + 1 bytes, which pagerd refuses).
 * Returns 0 and sets *ret_fd, -ENOENT (no IMAGE.order), or -errno.
 */
int image_order_load(const char *image, int *ret_fd);

#endif
