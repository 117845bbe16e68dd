/* SPDX-License-Identifier: MIT */
/*
 * The swap store (DESIGN.md §5): one file or block device, opened O_DIRECT,
 * whose reads and writes go through a store (store.h) on pagerd's io_uring
 * engine (io.h): completions arrive through the engine's eventfd, watched
 * by the libevent loop, so the loop never blocks on I/O.  The swap is a
 * trusted store: no timeout, its requests run to their end.
 *
 * The device is cut into slots of one page each.  Slots are handed out in
 * contiguous runs (a bitmap with a next-fit cursor), so that consecutive
 * eviction victims are written with one I/O.  For every slot the store
 * keeps, in memory, who owns it (region id, page index, generation) and the
 * CRC32C of what was written; every read is checked against it, so a slot
 * whose data changed on disk is reported, never returned as good data.
 * Under systemd that table lives in a memfd a restarted pagerd inherits
 * (swap_meta_share(), swap_meta_adopt()).
 *
 * Everything runs on the thread of the engine's event loop;
 * nothing here is thread-safe.  All calls return 0 or -errno.
 */
#ifndef PAGERD_SWAP_H
#define PAGERD_SWAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct io_engine;
struct pool_stats;
struct swap;

/* Requests in the kernel at once; the rest wait in the engine's queue. */
#define SWAP_QUEUE_DEPTH 256
/* Requests an RBD swap has in librbd at once. */
#define SWAP_RBD_DEPTH 64
/* Smallest swap accepted, in slots. */
#define SWAP_MIN_SLOTS 16
/* Largest single read or write, in bytes. */
#define SWAP_IO_MAX_BYTES (64u << 20)

/* Who a slot's data belongs to; set by swap_write(). */
struct swap_tag {
	uint64_t region;   /* region id */
	uint64_t page;     /* page index within the region */
	uint32_t gen;      /* caller's generation of that page */
};

enum swap_fault {
	SWAP_FAULT_NONE,    /* clear a pending SWAP_FAULT_EIO */
	SWAP_FAULT_EIO,     /* the next read touching the slot fails with -EIO */
	SWAP_FAULT_CORRUPT, /* flip one byte of the slot on the device itself */
	/* swap_inject_writes(): */
	SWAP_FAULT_WRITE_EIO,   /* every write of a region fails with -EIO */
	SWAP_FAULT_WRITE_SHORT, /* ... as one stopped by a full disk: -ENOSPC */
};

struct swap_stats {
	uint64_t total;          /* slots */
	uint64_t used;           /* slots allocated */
	uint64_t reads;          /* read requests completed with 0 */
	uint64_t writes;         /* write requests completed with 0 */
	uint64_t pages_read;
	uint64_t pages_written;
	uint64_t read_errors;    /* read requests completed with an error */
	uint64_t write_errors;
	uint64_t crc_errors;     /* pages whose CRC32C did not match */
	uint64_t full;           /* swap_alloc() calls that found no free slot */
	uint64_t bad;            /* slots retired: a write to them failed */
	uint32_t in_flight;      /* requests owning an SQE */
	uint32_t queued;         /* requests waiting for one, in software */
};

/*
 * res is 0 or -errno.  Called from the event loop (or from swap_close()),
 * never from inside swap_read()/swap_write(): a request either fails at
 * once, with the error returned and no callback, or gets exactly one call.
 */
typedef void (*swap_done_fn)(void *arg, int res);

/*
 * Opens (creating a missing regular file, mode 0600) the swap at `path`, its
 * I/O on the engine `io`.
 *
 * Regular file: `size` bytes (size 0: the existing file's size; a larger
 * file is used, not truncated) are allocated with fallocate, holes of an
 * existing sparse file included, so that a write-back never meets a full
 * disk.  Where that fails for lack of space the swap is refused (-ENOSPC,
 * the log says how much could be had); on a filesystem without fallocate
 * the file stays sparse, and is refused only if its holes are more than
 * the free space.  Block
 * device: size 0 means the whole device (rounded down to a page), otherwise
 * the first `size` bytes.  `size` must be a multiple of `page_size` and at
 * least SWAP_MIN_SLOTS pages; `page_size` a power of two from 512 to 2 MiB
 * and a multiple of the device's direct-I/O alignment.  The file is locked
 * (flock) so that two daemons never share one swap.
 *
 * Returns 0 and sets *ret, or -errno with *ret untouched and a reason
 * logged: -EINVAL (bad size or page size, not a file or block device, no
 * O_DIRECT on that filesystem), -ENOENT (no such directory), -EBUSY (in use
 * by another swap), -ENOSPC (the file cannot be allocated), -ENOMEM, ...  A file this call created is removed on failure.
 *
 * A path rbd:POOL/IMAGE (or rbd:POOL/NAMESPACE/IMAGE) is a Ceph RBD image
 * instead (store_rbd.c, after store_rbd_setup()): created `size` bytes big
 * if missing (size 0: it must exist), grown if smaller.  Its requests time
 * out (ceph_timeout): a slot whose write timed out is retired, a read that
 * timed out fails like a device error.  It has no descriptor (swap_fd()
 * is -1): the fd store cannot hand its slot table to a successor, and
 * SWAP_FAULT_CORRUPT is -EOPNOTSUPP.  Nothing locks the image: two
 * daemons must not name the same one.
 */
int swap_open(struct swap **ret, struct io_engine *io, const char *path,
	      uint64_t size, size_t page_size);

/*
 * Like swap_open(), on a descriptor already open (a successor's unnamed
 * swap file, from systemd's fd store): the whole file is the swap.  `label`
 * names it in the log.  O_DIRECT is set if missing.  On success the store
 * owns fd; on failure it is left to the caller.
 */
int swap_open_fd(struct swap **ret, struct io_engine *io, int fd,
		 const char *label, size_t page_size);

/* The swap's descriptor (to hand an unnamed swap file to the fd store). */
int swap_fd(const struct swap *s);

/*
 * The per-slot metadata (owner and CRC32C) in a memfd, so that a restarted
 * pagerd can check what its predecessor's pages claim (fdstore.c).
 *
 * swap_meta_share() moves the table into a new sealed memfd (once; later
 * calls return the same fd) and returns its descriptor, which the store
 * keeps and closes with the swap.
 *
 * swap_meta_adopt() maps a predecessor's table, after checking its header:
 * magic, version, sizes, and that it describes this very swap (device and
 * inode).  It must come before any slot is allocated.  Every slot stays
 * free until swap_claim() hands it to the page its tag names; once all
 * pages have claimed theirs, swap_forget_unclaimed() clears the tags of the
 * rest.  Returns 0 (the store owns fd), -EINVAL (refused, logged), -EBADF,
 * -EBUSY.
 *
 * swap_claim() returns 0, -EINVAL (out of range), -EEXIST (claimed
 * already), -ESTALE (the slot's tag names another page).
 */
int swap_meta_share(struct swap *s, int *ret_fd);
int swap_meta_adopt(struct swap *s, int fd);
int swap_claim(struct swap *s, uint64_t slot, uint64_t region, uint64_t page);
void swap_forget_unclaimed(struct swap *s);

/*
 * Drains and frees.  Requests already given to the kernel (in the ring, even
 * if not yet submitted) run to completion — short transfers are finished
 * too — and their callbacks get the real result; requests still waiting in
 * the software queue never start and their callbacks get -ECANCELED.  Those
 * callbacks run before swap_close() returns; swap_read()/swap_write() made
 * from them fail with -ESHUTDOWN.  It blocks until the device answers.
 *
 * May be called from a swap_done_fn: the store is then closed (as above)
 * when the completions being delivered have all been handled, and from then
 * on every call but swap_close() is a use after free.  NULL is fine.
 */
void swap_close(struct swap *s);

/*
 * Allocates a contiguous run of up to `want` slots: the first free run from
 * the next-fit cursor if it is long enough, otherwise the longest of the
 * next few runs looked at (never fewer than 1 slot).  Returns 0 with
 * *ret_first and *ret_got set, -ENOSPC when every slot is used or retired
 * (logged the first time, then at most every few seconds), -EINVAL when
 * want is 0.
 */
int swap_alloc(struct swap *s, uint32_t want, uint64_t *ret_first,
	       uint32_t *ret_got);

/* Frees slots and forgets their tags.  A slot whose last write failed is
 * retired instead: never allocated again (counted in swap_stats.bad).
 * A slot with a read in flight is free to the caller at once (reading or
 * writing it fails with -EINVAL, freeing it again is logged) but is handed
 * out again only when its last read has ended: that read gets its data.
 * Freeing a free or out-of-range slot is a bug in the caller: it is logged
 * and that slot left alone. */
void swap_free(struct swap *s, uint64_t first, uint32_t n);

/*
 * Writes npages pages from buf (aligned to the page size) to the allocated
 * slots first_slot...  tags[i] (one per page) and the CRC32C of page i,
 * computed now, become the slot's metadata; the slot counts as holding data
 * once the write completes with 0.  buf must stay mapped and unchanged until
 * `done` runs: if it changes in between, the CRC no longer matches what
 * reached the disk and a later read of that slot gives -EBADMSG (safe, but
 * the slot is wasted: free it).  A write that fails marks its slots bad:
 * the caller frees them as usual, and swap_free() retires them.
 *
 * Returns 0 (done will run exactly once) or, with no callback, -EINVAL
 * (unallocated slot, misaligned buf, npages 0 or over SWAP_IO_MAX_BYTES),
 * -ESHUTDOWN (closing), -ENOMEM.
 */
int swap_write(struct swap *s, uint64_t first_slot, const void *buf,
	       uint32_t npages, const struct swap_tag *tags, swap_done_fn done,
	       void *arg);

/*
 * Reads npages slots into buf (aligned to the page size) and checks each
 * page's CRC32C.  done gets:
 *   0          every page arrived and matches its CRC;
 *   -EBADMSG   at least one page does not match: the data there is wrong.
 *              The caller must poison such a page (UFFDIO_POISON), never
 *              map it; swap_verify() tells which pages of buf are good;
 *   -EIO       the device failed or came up short (the file shrank): the
 *              whole of buf is undefined — or another -errno from the device;
 *   -ESTALE    a slot was rewritten while the read was in flight (a
 *              slot freed meanwhile is not: swap_free() waits for it).
 * Returns 0 or, with no callback, -EINVAL (slot not allocated, misaligned
 * buf, npages 0 or too big), -ENODATA (a slot holds no completed write),
 * -ESHUTDOWN, -ENOMEM, -EBUSY (65535 reads of one slot in flight).
 */
int swap_read(struct swap *s, uint64_t first_slot, void *buf, uint32_t npages,
	      swap_done_fn done, void *arg);

/*
 * The calling thread's reads of a swap file or device go to l, a ring of
 * its own (NULL: the engine, as the loop's do): a fault thread's
 * (fault.c).  Their callbacks run when that thread reaps l and calls them
 * (io_local_reap()), under the daemon lock (lock.h) like everything here.
 */
struct io_local;
void swap_local_reads(struct io_local *l);
/*
 * On such a thread, reads the compressed pool served whole are answered
 * by this call (their callbacks run in it), which the thread makes before
 * it lets go of the daemon lock: no other thread is woken for them.
 */
void swap_local_answer(void);

/* 0 if `page` (one page) matches the CRC32C stored for `slot`, -EBADMSG if
 * not, -ENODATA if the slot holds no completed write, -EINVAL if out of
 * range. */
int swap_verify(const struct swap *s, uint64_t slot, const void *page);

/* The tag and CRC32C (ret_crc may be NULL) of a slot's last completed write.
 * Returns 0, -ENODATA (allocated but no completed write), -ENOENT (free),
 * -EINVAL (out of range); the outputs are untouched on error. */
int swap_slot_tag(const struct swap *s, uint64_t slot, struct swap_tag *ret_tag,
		  uint32_t *ret_crc);

void swap_get_stats(const struct swap *s, struct swap_stats *ret);
size_t swap_page_size(const struct swap *s);

/*
 * Fault injection, for tests.  SWAP_FAULT_CORRUPT flips a byte of a pooled
 * slot's compressed data in the pool; of another, reads the slot from the
 * device, flips one byte and writes it back, synchronously and outside the
 * ring, so only the CRC check can notice; do not use it on a slot with I/O
 * in flight.  Returns 0, -EINVAL (slot out of range or unknown kind), or the
 * -errno of that read or write.
 */
int swap_inject(struct swap *s, uint64_t slot, enum swap_fault kind);

/*
 * Fault injection, for tests: from now on every write whose first page is
 * tagged with `region` completes with an error (SWAP_FAULT_WRITE_EIO: -EIO;
 * SWAP_FAULT_WRITE_SHORT: -ENOSPC, as a write a full disk stopped
 * half-way), although the device did the write.  One region at a time;
 * SWAP_FAULT_NONE stops it.  Returns 0 or -EINVAL (another kind).
 */
int swap_inject_writes(struct swap *s, uint64_t region, enum swap_fault kind);

/*
 * The compressed pool in front of the device (pool.h).  With it on, a
 * page swap_write() is given that compresses well is kept in the pool
 * instead of written (its slot still allocated: the place it spills to),
 * and swap_read() serves such pages from the pool: decompressed and
 * checked against the slot's CRC32C like a page read from the device,
 * the callback from the loop as always.  A request all of whose pages are
 * pooled never reaches the device; pages that compress badly, and writes
 * whose failure is injected, go there as before.  Off, new pages go to the
 * device and the entries there stay until spilled or freed.
 *
 * swap_pool_setup() turns it on or off and sets the compressor (enum
 * pool_algo); the pool is made at the first call with on.  kick(kick_arg)
 * runs when a spill completes (eviction waits for the room it makes).
 * Returns 0 or -ENOMEM (the swap is then without a pool).
 *
 * swap_pool_spill() makes up to max pages of memory free in the pool:
 * it takes the coldest entries of region (0: of every region), clean ones
 * first, until what they take adds up to max pages (an entry takes about
 * a page / the compression ratio); a clean one leaves at once, a dirty one
 * is written to its slot and leaves when its write is done (a failed one
 * stays).  Returns the pages of memory so freed or being freed, rounded
 * down.
 *
 * swap_pool_stats(): the pool's counts, of region (0: in all); zeros
 * without a pool.  swap_pool_forget_region(): the region is gone.
 *
 * A swap whose slot table a successor may inherit (swap_meta_share(): the
 * fd store) writes pooled pages through to the device as well, since a
 * crash loses the pool but not the table; their entries then leave the
 * pool without I/O.  swap_close() of such a swap writes whatever entry is
 * not on the device yet, synchronously.
 */
int swap_pool_setup(struct swap *s, struct event_base *base, bool on, int algo,
		    void (*kick)(void *arg), void *kick_arg);
uint64_t swap_pool_spill(struct swap *s, uint64_t region, uint64_t max);
void swap_pool_stats(const struct swap *s, uint64_t region, struct pool_stats *ret);
void swap_pool_forget_region(struct swap *s, uint64_t region);
/* A clean page leaves memory and its slot holds the same data: kept in
 * the pool too, as a clean entry (a later miss reads no disk; when the
 * pool needs room, it goes without a write). */
void swap_pool_cache(struct swap *s, uint64_t slot, const void *page);
/* Whether slot's only copy is in the pool (not written through). */
bool swap_pool_exclusive(const struct swap *s, uint64_t slot);

#endif
