/* SPDX-License-Identifier: MIT */
/*
 * Snapshot images: the sidecar that says an image is complete.
 *
 * An image is a raw sparse file: byte i of the file is byte i of the
 * region at the snapshot's instant, holes where the region held zeros or
 * had never been written — the layout VMMs use for guest memory, usable
 * as is by any tool.  Everything else lives beside it in IMAGE.meta, a
 * short text file of "key value" lines:
 *
 *   format pagerd-image 1
 *   size 402653184          bytes: the image's exact size
 *   page_size 4096
 *   pages 98304             size / page_size
 *   data_pages 51234        pages copied (the rest are holes)
 *   name guest              the region's name
 *   created 1795000000      seconds since the epoch
 *   complete yes
 *
 * The sidecar is written last (to IMAGE.meta.tmp, synced, renamed), after
 * the image itself is synced, and removed first when a new snapshot to the
 * same path starts: an image without a valid sidecar never looks complete.
 *
 * Shared by libpager and pagerctl; never logs, never allocates beyond the
 * caller's buffers.
 */
#ifndef PAGER_IMAGE_H
#define PAGER_IMAGE_H

#include <stddef.h>
#include <stdint.h>

struct image_meta {
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

#endif
