/* SPDX-License-Identifier: MIT */
/*
 * libpager — memory regions whose pages are managed by pagerd, a user-space
 * pager.
 *
 * Every call returns 0 (or a positive value where documented) on success and
 * a negative errno value on failure; errno itself is left alone.  The library
 * never prints, logs or exits.  Handles are opaque.  Options structs start
 * with `size_t sz`, set to sizeof(the struct) by the caller, so that later
 * versions can append fields without breaking the ABI; a NULL options pointer
 * means "all defaults".
 *
 * All calls are thread-safe: several threads may create and destroy regions
 * and fault on them at the same time.
 */
#ifndef PAGER_H
#define PAGER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PAGER_VERSION_MAJOR 0
#define PAGER_VERSION_MINOR 1

struct pager;
struct pager_region;

/*
 * Where pager_open() connects, first match wins:
 *   1. opts->socket_path
 *   2. $PAGER_SOCKET
 *   3. the system daemon's socket, /run/pagerd/pagerd.sock, if one listens
 *   4. a private pagerd started for this process (binary from $PAGERD, else
 *      next to the installed library, else $PATH), connected over a
 *      socketpair; it exits when the pager is closed or the process dies.
 */
#define PAGER_SYSTEM_SOCKET "/run/pagerd/pagerd.sock"

/* pager_opts.flags */
#define PAGER_OPEN_NO_PRIVATE   (1u << 0) /* fail instead of starting a private pagerd */
#define PAGER_OPEN_FORCE_PRIVATE (1u << 1) /* always start a private pagerd */

struct pager_opts {
	size_t sz;               /* sizeof(struct pager_opts) */
	const char *socket_path; /* NULL: see the order above */
	uint32_t flags;          /* PAGER_OPEN_* */
	/* Settings for a private pagerd only (a shared daemon has its own):
	 * 0 / NULL mean "from $PAGER_MEMORY_LIMIT / $PAGER_SWAP, else none". */
	uint64_t memory_limit;   /* bytes of resident memory for the daemon */
	const char *swap_path;   /* swap file for the daemon */
};

/* pager_info.flags */
#define PAGER_INFO_KERNEL_FAULTS (1u << 0) /* faults taken inside the kernel
					    * (read(2) into a region) are served;
					    * without it they fail with EFAULT */
#define PAGER_INFO_PRIVATE       (1u << 1) /* connected to a private pagerd */

struct pager_info {
	size_t sz;               /* sizeof(struct pager_info) */
	uint32_t flags;          /* PAGER_INFO_* */
	uint32_t daemon_version; /* protocol version the daemon speaks */
	int32_t daemon_pid;      /* the pagerd that answered (its pid here) */
	uint32_t page_size;
	uint64_t uffd_features;  /* UFFD_FEATURE_* bits in force */
};

int pager_open(struct pager **ret, const struct pager_opts *opts);
void pager_close(struct pager *p);
int pager_get_info(const struct pager *p, struct pager_info *info);

struct pager_region_opts {
	size_t sz;               /* sizeof(struct pager_region_opts) */
	const char *name;        /* shows in /proc/PID/maps and pagerctl; may be NULL */
	uint64_t memory_limit;   /* resident bytes for this region, 0 = none */
	uint32_t flags;          /* PAGER_REGION_* */
};

/* pager_region_opts.flags */
#define PAGER_REGION_NO_PREFETCH (1u << 0) /* restore: read image pages only
					    * when touched, none ahead */

/* len is rounded up to whole pages.  The memory reads as zeros until
 * written. */
int pager_region_create(struct pager *p, size_t len,
			const struct pager_region_opts *opts,
			struct pager_region **ret);
void *pager_region_addr(const struct pager_region *r);
size_t pager_region_len(const struct pager_region *r);
/* Returns the daemon's id for the region (> 0), as pagerctl shows it. */
int64_t pager_region_id(const struct pager_region *r);
/* Frees the region and everything the daemon holds for it.  NULL is fine. */
int pager_region_destroy(struct pager_region *r);

/*
 * Changes the region's resident limit at run time (bytes, rounded down to
 * pages; 0 = no region limit).  Lowering it below what is resident starts
 * eviction at once; the call does not wait for it.
 */
int pager_region_set_limit(struct pager_region *r, uint64_t bytes);

/*
 * Throws away the contents of [off, off + len) (page-aligned): the pages
 * read as zeros afterwards, and their memory and swap slots are freed.
 */
int pager_region_discard(struct pager_region *r, size_t off, size_t len);

/* What pagerd knows about one region (pager_region_stats()).  Counts are
 * pages unless named otherwise; counters are since the region was created. */
struct pager_region_stats {
	size_t sz;               /* sizeof(struct pager_region_stats) */
	uint64_t pages;          /* the region's size in pages */
	uint64_t resident;       /* in memory */
	uint64_t swapped;        /* only in swap */
	uint64_t zero;           /* neither: never touched, or known to be zero */
	uint64_t memory_limit;   /* bytes, 0 = none */
	uint64_t faults_missing; /* first touch or swap-in */
	uint64_t faults_minor;   /* always 0: deprecated, kept for the ABI.  libpager
				  * never registers MINOR faults: the kernel maps a
				  * page in memory without asking pagerd (the
				  * process's minor faults: getrusage's ru_minflt) */
	uint64_t faults_wp;      /* writes to clean or protected pages */
	uint64_t swap_ins;       /* pages read back on demand */
	uint64_t swap_outs;      /* pages written to swap */
	uint64_t evict_zero;     /* evictions of all-zero pages: no I/O */
	uint64_t evict_clean;    /* evictions of pages with a valid swap copy: no I/O */
	uint64_t evict_dirty;    /* evictions that wrote the page first */
	uint64_t evict_aborted;  /* written to while being written out: kept */
	uint64_t readahead;      /* pages read ahead of a sequential stream */
	uint64_t readahead_hits; /* of those, pages the application then used */
	uint64_t poisoned;       /* pages lost to a failed or corrupt swap read */
	uint64_t image_reads;    /* pages read from the image of a restored region */
	uint64_t image_pending;  /* pages of that image not read yet */
	/* Added after 0.2.0: a program built before passes a smaller sz
	 * and gets the fields above, where they always were. */
	uint64_t pages_zero_filled; /* pages filled with zeros on first touch */
	/* Added with the compressed pool (pagerd's pool_percent). */
	uint64_t pool_stores;       /* evicted pages kept compressed in memory */
	uint64_t pool_stored_bytes; /* ... their compressed bytes (the ratio) */
	uint64_t pool_hits;         /* pages read back from the pool: no disk read */
	uint64_t pool_spills;       /* pool pages written to swap to make room */
	uint64_t pool_rejects;      /* pages that compressed too badly: to swap */
	uint64_t pool_pages;        /* in the pool now */
	uint64_t pool_bytes;        /* ... the memory they take (counted in limits) */
	/* Added with learned prefetch (IMAGE.order). */
	uint64_t image_learned_reads; /* of image_reads, pages prefetched first
				       * because the image's learned order
				       * listed them (or lay between them) */
};

int pager_region_stats(const struct pager_region *r,
		       struct pager_region_stats *ret);

/*
 * Snapshots (copy-on-write) and lazy restore.
 *
 * An image is a raw sparse file: byte i of the file is byte i of the region
 * at the instant of the snapshot, with holes where the region had never
 * been written (or was zero when evicted).  Beside it, PATH.meta (text)
 * says what it is; it is written last, atomically, and only when the image
 * is complete, so an image without a valid PATH.meta is not a snapshot.
 *
 * pager_region_snapshot() returns when the image is complete (and synced).
 * The region's threads may keep writing throughout: the image is the
 * region as it was at one instant between the start call's beginning and
 * its return (pagerd write-protects the region while writers run, then
 * pauses them only to protect again the pages they wrote meanwhile; a page
 * written after the instant is copied before the write goes on).
 *
 * PATH may instead name a Ceph RBD image, "rbd:POOL/IMAGE" or
 * "rbd:POOL/NAMESPACE/IMAGE", which pagerd opens with its own Ceph
 * identity: -EINVAL for a malformed name, -EACCES when pagerd's
 * configuration does not grant this process's user that pool and
 * namespace (rbd_allow), -EBUSY when another snapshot writes the image,
 * -ENOENT (no such pool, namespace or image to restore), -ETIMEDOUT (the
 * cluster did not answer within ceph_timeout).  The image is raw (byte i
 * is byte i of the region), its metadata and checksums beside it.
 */
struct pager_snapshot_opts {
	size_t sz;               /* sizeof(struct pager_snapshot_opts) */
	uint32_t flags;          /* none yet: 0 */
};

struct pager_snapshot_progress {
	size_t sz;               /* sizeof(struct pager_snapshot_progress) */
	uint64_t pages_total;    /* pages to copy (holes are not counted) */
	uint64_t pages_done;
	uint64_t pause_ns;       /* how long writers were held at the instant */
	int32_t status;          /* 0 while running or when done, else -errno */
	uint32_t done;           /* 1 once the image is complete (or failed) */
};

int pager_region_snapshot(struct pager_region *r, const char *path,
			  const struct pager_snapshot_opts *opts);
/* The asynchronous form: start, then poll (returns 1 when finished — the
 * image is then complete and synced, or status says why not — 0 while it
 * runs, or -errno).  One snapshot per region at a time (-EBUSY). */
int pager_region_snapshot_start(struct pager_region *r, const char *path,
				const struct pager_snapshot_opts *opts);
int pager_region_snapshot_poll(struct pager_region *r,
			       struct pager_snapshot_progress *ret);

/*
 * A new region of the image's size whose pages are read from the image on
 * first access (holes read as zeros, with no I/O), prefetched in the
 * background within the region's limits — the pages its PATH.order lists
 * (those the application touched first after the restore the image was
 * taken from) first; from then on an ordinary region.  pagerd records what
 * this region's application touches first, and a snapshot of it stores
 * that order in PATH.order.
 * -EINVAL: PATH.meta missing, not complete, or not matching the image
 * (truncated, wrong size, other page size).  The image must stay in place
 * while the region lives.
 */
int pager_region_restore(struct pager *p, const char *path,
			 const struct pager_region_opts *opts,
			 struct pager_region **ret);

#ifdef __cplusplus
}
#endif

#endif /* PAGER_H */
