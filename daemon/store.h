/* SPDX-License-Identifier: MIT */
/*
 * A store: a device pagerd reads and writes pages on, asynchronously,
 * whatever it is.  The swap (swap.c: slots, CRC32C, tags) and snapshot
 * images (snapshot.c) sit on this interface and know nothing of what is
 * behind it, so that another backend — a Ceph RBD image through librbd's
 * asynchronous API, whose completions come through an eventfd of its own
 * the loop watches — plugs in without touching swap, fault, eviction or
 * snapshot code: it provides a constructor and a struct store_ops.
 *
 * The first backend, store_file_open() (store_file.c), is a file or block
 * device descriptor driven by pagerd's io_uring engine (io.h).
 *
 * The contract every backend keeps:
 *
 *   - Everything runs on the loop's thread.  No call blocks on the device
 *     (only store_close() of a trusted store waits for what is in flight).
 *   - read, write, discard and flush return 0, and then call `done`
 *     exactly once, later, from the loop (never from inside the call); or
 *     they return -errno and never call it: -EINVAL (len 0, an offset or
 *     length not a multiple of the store's align), -ESHUTDOWN (closing),
 *     -ENOMEM.
 *   - done's res: 0 when every byte was transferred; otherwise -errno:
 *       -EIO        the device failed, or ended early (a file that shrank;
 *                   a short transfer is continued, never reported short);
 *       -ETIMEDOUT  the store has a timeout and the device did not answer
 *                   in time (the request may still be in the device);
 *       -ECANCELED  the store was closed first;
 *       or another errno of the device (-ENOSPC, -EROFS, -ENOTCONN, ...).
 *     After a failed read the buffer's content is undefined.
 *   - Buffers.  A read's or write's buffer must stay valid until done
 *     runs.  On a store with a timeout (an untrusted device: a client's
 *     image), done with -ETIMEDOUT or -ECANCELED hands the buffer to the
 *     store, which free()s it once the device lets go of it (maybe never):
 *     such buffers must come from malloc() or its aligned variants, and
 *     the caller must forget them.  On a store without a timeout, the
 *     buffer is the caller's again when done runs, whatever res says.
 *   - A store without a timeout is trusted: store_close() waits for its
 *     requests in the device (their done get the real result) and cancels
 *     those not started (-ECANCELED).  A store with one is not: close
 *     gives up on everything at once (-ECANCELED), and no stalled device
 *     holds pagerd.
 */
#ifndef PAGERD_STORE_H
#define PAGERD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "image.h"

struct io_engine;
struct store;

typedef void (*store_done_fn)(void *arg, int res);

struct store_stats {
	uint32_t in_flight;  /* requests in the device */
	uint32_t queued;     /* requests waiting to go to it */
	uint64_t timed_out;  /* requests that timed out */
	uint32_t abandoned;  /* ... still in the device, given up on */
};

struct store_ops {
	int (*read)(struct store *st, uint64_t off, void *buf, size_t len,
		    store_done_fn done, void *arg);
	int (*write)(struct store *st, uint64_t off, const void *buf, size_t len,
		     store_done_fn done, void *arg);
	/* The range reads as zeros afterwards, and may free its space. */
	int (*discard)(struct store *st, uint64_t off, uint64_t len,
		       store_done_fn done, void *arg);
	/* Everything written before (done called with 0) is durable. */
	int (*flush)(struct store *st, store_done_fn done, void *arg);
	/* Requests whose done has not run yet. */
	unsigned (*pending)(const struct store *st);
	void (*get_stats)(const struct store *st, struct store_stats *ret);
	void (*close)(struct store *st);
};

struct store {
	const struct store_ops *ops;
	const char *label;   /* for the log */
	size_t align;        /* offsets and lengths are multiples of it */
	uint32_t timeout_ms; /* 0: trusted, no timeout */
	/* done always hands the buffer back, whatever res (store_rbd.c):
	 * the caller frees it even after -ETIMEDOUT or -ECANCELED. */
	bool gives_back;
	/* Reads worth keeping in flight at once to stream the device: a
	 * store whose every read is a network round trip (RBD) states more
	 * than a disk needs; 0: the caller's own default. */
	unsigned read_depth;
};

/* Whether a buffer whose request ended with res is the caller's to free
 * (else the store frees it: see "Buffers" above). */
static inline bool store_buffer_back(const struct store *st, int res)
{
	return st->gives_back || !st->timeout_ms || (res != -ETIMEDOUT && res != -ECANCELED);
}

static inline int store_read(struct store *st, uint64_t off, void *buf, size_t len,
			     store_done_fn done, void *arg)
{
	return st->ops->read(st, off, buf, len, done, arg);
}

static inline int store_write(struct store *st, uint64_t off, const void *buf,
			      size_t len, store_done_fn done, void *arg)
{
	return st->ops->write(st, off, buf, len, done, arg);
}

static inline int store_discard(struct store *st, uint64_t off, uint64_t len,
				store_done_fn done, void *arg)
{
	return st->ops->discard(st, off, len, done, arg);
}

static inline int store_flush(struct store *st, store_done_fn done, void *arg)
{
	return st->ops->flush(st, done, arg);
}

static inline unsigned store_pending(const struct store *st)
{
	return st->ops->pending(st);
}

static inline void store_get_stats(const struct store *st, struct store_stats *ret)
{
	st->ops->get_stats(st, ret);
}

/* Every done of the store runs before it returns (see above).  Must not be
 * called from a done of a trusted store's own.  NULL is fine. */
static inline void store_close(struct store *st)
{
	if (st)
		st->ops->close(st);
}

/* ---- the file backend (store_file.c) -------------------------------------- */

struct store_file_opts {
	const char *label;
	unsigned depth;       /* requests in the kernel at once */
	size_t align;         /* the direct-I/O block, or 1 */
	uint32_t timeout_ms;  /* 0: trusted */
	bool own_fd;          /* close fd with the store */
};

/*
 * A store on fd, a regular file or block device already open (the caller
 * opened, sized, locked and checked it: that part is the device's, not the
 * I/O's).  Returns 0 and sets *ret, or -EINVAL (bad options), -ENOMEM;
 * fd is then still the caller's.
 */
int store_file_open(struct store **ret, struct io_engine *io, int fd,
		    const struct store_file_opts *o);

/* ---- the Ceph RBD backend (store_rbd.c) ----------------------------------- */

struct event_base;

/* Who pagerd is to the cluster: set once, before the first image. */
struct store_rbd_client {
	const char *conf;     /* NULL or "": /etc/ceph/ceph.conf */
	const char *id;       /* NULL or "": client.admin ("client." optional) */
	const char *keyring;  /* NULL or "": the conf file's */
	uint32_t timeout_ms;  /* every request's, and librados' own waits; 0: 30 s */
};

#define STORE_RBD_NAME_MAX 96

/* rbd:POOL/IMAGE or rbd:POOL/NAMESPACE/IMAGE. */
struct store_rbd_name {
	char pool[STORE_RBD_NAME_MAX + 1];
	char ns[STORE_RBD_NAME_MAX + 1];    /* "": the pool's default namespace */
	char image[STORE_RBD_NAME_MAX + 1];
};

struct store_rbd_opts {
	uint64_t create_size; /* 0: the image must exist; else create it this
			       * big if missing, grow it if smaller */
	unsigned depth;       /* requests in librbd at once; 0: 64 */
	size_t align;         /* offsets and lengths must be multiples; 0: 1 */
	uint32_t timeout_ms;  /* 0: the client's */
};

bool store_rbd_is_path(const char *path);
/* Returns 0, or -EINVAL: not of that form, or a name empty, over
 * STORE_RBD_NAME_MAX, starting with '.' or with a character other than
 * letters, digits, '.', '-', '_'. */
int store_rbd_parse(const char *path, struct store_rbd_name *ret);

/* Remembers the settings and the loop (the store's eventfd and timers go
 * on it); connects nothing yet.  Returns 0, -EINVAL, -ENOMEM. */
int store_rbd_setup(struct event_base *base, const struct store_rbd_client *c);

/*
 * Opens the image `path` (rbd:...), connecting the client first if this
 * is the first.  BLOCKS, up to the client's timeout (a monitor that does
 * not answer): for pagerd's start, before its loop serves anyone.  Sets
 * *ret and *ret_size (the image's size; may be NULL).  Returns 0 or
 * -errno with a reason logged: -EINVAL (not a valid name), -ENOENT (no
 * such pool or image), -ETIMEDOUT, -EACCES/-EPERM (the cluster refused
 * pagerd's identity), -ENOMEM, ...
 *
 * The store keeps the contract above with a timeout (timeout_ms is set),
 * with one difference that makes it easier to use: every request goes
 * through a buffer of the store's own, so the caller's buffer is the
 * caller's again when done runs, whatever res says (an abandoned request
 * keeps only the store's copy).  store_close() never blocks: the image is
 * closed in the background once librbd has let go of everything.
 */
int store_rbd_open(struct store **ret, const char *path, const struct store_rbd_opts *o,
		   uint64_t *ret_size);

/*
 * Which image st is, as two numbers that stand for a file's (st_dev,
 * st_ino) in swap.c's slot table: the same for the same image opened
 * again (by this pagerd or its successor), different for another image
 * (another pool, namespace, or one deleted and created again under the
 * name), and never a file's (bit 63 of *dev is set).  -EINVAL: st is not
 * an RBD store.
 */
int store_rbd_identity(const struct store *st, uint64_t *dev, uint64_t *ino);

/* ---- snapshot images on RBD (store_rbd.c) ----------------------------------
 *
 * A snapshot image on RBD is raw (byte i of the image is byte i of the
 * region at the instant; discarded, so reading zeros, where the region
 * held none), with IMAGE.meta's keys (common/image.h) as the image's own
 * metadata "pagerd.KEY" and IMAGE.crc as the RADOS object
 * "pagerd_crc.IMAGE" in the same pool and namespace.  "pagerd.complete"
 * is removed first when a snapshot starts and set last, once the data is
 * flushed and the table and the other keys are in.
 *
 * Opening, creating, locking, sizing and committing such an image are
 * blocking librbd calls: a job runs them on a thread of its own, and
 * calls done on the loop when they are over, or with -ETIMEDOUT when they
 * are not within the timeout (the thread then cleans up alone whenever
 * the cluster lets it go).  So a stalled cluster fails that request only.
 */
struct store_rbd_job;

enum store_rbd_mode {
	STORE_RBD_INFO,      /* read-only: the metadata alone, closed again */
	STORE_RBD_RESTORE,   /* read-only: metadata, table, the image open */
	STORE_RBD_SNAPSHOT,  /* created if missing, locked against any other
			      * writer (-EBUSY), "complete" removed, sized to
			      * `size` and discarded whole, open */
};

struct store_rbd_job_opts {
	enum store_rbd_mode mode;
	uint64_t size;        /* SNAPSHOT: the region's size */
	uint32_t page_size;   /* INFO, RESTORE: the image must have it */
	unsigned depth;       /* the store's, as store_rbd_opts */
	size_t align;
	uint32_t timeout_ms;  /* the job's and the store's; 0: the client's */
};

struct store_rbd_image {
	struct store *st;       /* RESTORE, SNAPSHOT: the caller's to close */
	struct image_meta meta; /* INFO, RESTORE: read and checked */
	int crc_fd;             /* RESTORE: IMAGE.crc in a memfd sealed against
				 * every change (the caller's to close), else -1 */
	void *order;            /* RESTORE: IMAGE.order as stored (unchecked:
				 * the caller decodes it; malloc, the caller's
				 * to free), or NULL: none */
	size_t order_len;
};

/* res 0: *img is filled and its st and crc_fd are the callee's; else
 * -errno and img is NULL. */
typedef void (*store_rbd_job_fn)(void *arg, int res, struct store_rbd_image *img);

/*
 * Starts a job on the image `path` (rbd:...).  Returns 0 and sets *ret
 * (until done runs, for store_rbd_job_cancel()), or -EINVAL (not a valid
 * name), -EAGAIN (too many jobs waiting for the cluster), -ENOMEM.  done
 * gets, besides the cluster's own errors: -ENOENT (no such pool,
 * namespace or image), -EINVAL (INFO/RESTORE: not a complete pagerd
 * snapshot, or made for another page size), -EBUSY (SNAPSHOT: another
 * writer holds the image's lock), -ETIMEDOUT.
 */
int store_rbd_image_open(const char *path, const struct store_rbd_job_opts *o,
			 store_rbd_job_fn done, void *arg, struct store_rbd_job **ret);

/*
 * Commits a snapshot written to st (opened SNAPSHOT, nothing pending):
 * flushes it, writes the table (crc_len bytes at crc, copied), the learned
 * order (order_len bytes of IMAGE.order at order, copied; 0: none) and m's
 * keys, then "complete", and closes the image (which lets its lock go).
 * st is taken whatever happens.  done's img is NULL.  0 or -errno
 * (-EBUSY: requests still pending; st is then closed).
 */
int store_rbd_image_commit(struct store *st, const void *crc, size_t crc_len,
			   const void *order, size_t order_len,
			   const struct image_meta *m, store_rbd_job_fn done, void *arg,
			   struct store_rbd_job **ret);

/* The caller no longer wants the job's result: done is never called. */
void store_rbd_job_cancel(struct store_rbd_job *j);

/* "pagerd_crc.IMAGE": the RADOS object holding an image's IMAGE.crc. */
#define STORE_RBD_CRC_PREFIX "pagerd_crc."
/* "pagerd_order.IMAGE": its IMAGE.order (the learned prefetch order),
 * bound to the table as a file's is; removed when a snapshot starts. */
#define STORE_RBD_ORDER_PREFIX "pagerd_order."

/* Waits (up to the timeout) for images still closing, then ends the
 * client.  For pagerd's exit. */
void store_rbd_shutdown(void);

#endif
