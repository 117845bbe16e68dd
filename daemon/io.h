/* SPDX-License-Identifier: MIT */
/*
 * pagerd's one asynchronous I/O engine: one io_uring, whose completions
 * wake the libevent loop through one eventfd, for every read and write
 * pagerd does on a file or block device — the swap and snapshot images
 * alike — so that the loop never waits for a disk.
 *
 * Requests go through queues.  A queue is one descriptor with its own
 * depth (requests it may have in the ring at once), its own FIFO of
 * requests waiting for a place, its alignment (what O_DIRECT needs to
 * continue a short transfer) and its timeout.  The engine:
 *
 *   - prepares an SQE at once and submits them together, once per turn
 *     of the loop (or at once when the SQ fills): a burst costs one
 *     io_uring_enter;
 *   - continues a short transfer from where it stopped (a read or write
 *     the kernel did in part), and fails one that stopped at an offset
 *     the queue's alignment cannot continue from (-EIO: the file shrank);
 *     a transfer of 0 bytes is the end of the file, also -EIO;
 *   - retries -EAGAIN and -EINTR up to IO_MAX_RETRIES times;
 *   - enforces a queue's timeout from the moment a request is accepted,
 *     time spent waiting for a place included (a timer on the loop, not
 *     IORING_OP_LINK_TIMEOUT, which only starts once the SQE is issued);
 *   - calls each request's callback exactly once, from the loop (never
 *     from inside the call that queued it).
 *
 * Trusted and untrusted devices.  A queue without a timeout (the swap:
 * pagerd's own disk) is trusted: its requests run to their end, and
 * closing it waits for those in the kernel.  A queue with a timeout (an
 * image a client handed us: a FUSE file, an NFS file may never answer) is
 * not: a request that does not finish in time calls back with -ETIMEDOUT
 * at once, the kernel is asked to cancel it, and the engine keeps it (an
 * orphan) until the kernel lets go, however long that takes.  Its buffer
 * goes with it: on a queue with a timeout, a callback with -ETIMEDOUT or
 * -ECANCELED hands the request's buffer to the engine, which free()s it
 * once the kernel no longer uses it (so such buffers must come from
 * malloc(), aligned_alloc() or posix_memalign()).  Orphans keep their
 * place in the ring and in their queue's depth, so a stalled device can
 * never take more than its depth; every untrusted queue together may take
 * at most IO_UNTRUSTED_MAX places, so the swap always has its own.  Their
 * requests always go to an io-wq worker (IOSQE_ASYNC), never run inline
 * in io_uring_enter(), where a FUSE file could block the loop itself.
 *
 * Everything runs on the loop's thread; nothing here is thread-safe.  All
 * calls return 0 or -errno.
 */
#ifndef PAGERD_IO_H
#define PAGERD_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct io_engine;
struct io_queue;

/* SQ size; the CQ is twice that, so it cannot overflow (see io.c). */
#define IO_RING_ENTRIES 512
/* Places in the ring all queues with a timeout may hold together: each may
 * be a request a stalled file keeps, and an io-wq worker it blocks. */
#define IO_UNTRUSTED_MAX 64
/* io-wq workers for regular files and block devices (the kernel's default
 * is 4 per CPU): the untrusted requests' and as many again. */
#define IO_BOUNDED_WORKERS (2 * IO_UNTRUSTED_MAX)
/* Times one request may come back -EAGAIN/-EINTR before that is its result. */
#define IO_MAX_RETRIES 16

enum io_op {
	IO_READ,
	IO_WRITE,
	IO_FLUSH,   /* fdatasync */
	IO_DISCARD, /* punch a hole (fallocate PUNCH_HOLE|KEEP_SIZE) */
};

/* res: 0 (every byte transferred) or -errno.  See above for who owns the
 * buffer afterwards. */
typedef void (*io_done_fn)(void *arg, int res);

struct io_queue_opts {
	const char *label;   /* names the device in the log */
	unsigned depth;      /* requests in the ring at once, at least 1 */
	size_t align;        /* a short transfer continues only from a
			      * multiple of this (O_DIRECT); 0 or 1: any */
	uint32_t timeout_ms; /* 0: none (a trusted device) */
};

struct io_queue_stats {
	uint64_t completed;  /* requests that ended with 0 */
	uint64_t failed;     /* ... with an error (timeouts included) */
	uint64_t timed_out;
	uint64_t short_io;   /* continuations of short transfers */
	uint64_t retried;    /* -EAGAIN/-EINTR retries */
	uint32_t in_flight;  /* requests holding a place in the ring, orphans included */
	uint32_t queued;     /* waiting for one */
	uint32_t orphans;    /* timed out, still in the kernel */
};

/*
 * Sets up the ring and watches its eventfd on base.  Returns 0 and sets
 * *ret, or -errno (from io_uring_queue_init: -ENOMEM, -EPERM, ...; with
 * the reason logged).
 */
int io_engine_open(struct io_engine **ret, struct event_base *base);

/*
 * Frees the engine.  Every queue must be closed.  Orphans still in the
 * kernel are abandoned with their buffers (leaked, never freed: the
 * kernel may still write into them); the count is logged.  NULL is fine.
 */
void io_engine_close(struct io_engine *e);

/* Orphans the engine holds, for tests and status. */
unsigned io_engine_orphans(const struct io_engine *e);

/*
 * A queue on fd (not owned: close it after io_queue_close()).  Returns 0
 * and sets *ret, -EINVAL (depth 0, a timeout on a queue deeper than
 * IO_UNTRUSTED_MAX), -ENOMEM.
 */
int io_queue_open(struct io_queue **ret, struct io_engine *e, int fd,
		  const struct io_queue_opts *o);

/*
 * Closes a queue.  Requests waiting for a place never start: they call
 * back with -ECANCELED.  Requests in the kernel: on a trusted queue, waits
 * for them (their callbacks get the real result; this blocks until the
 * device answers); on a queue with a timeout, they call back with
 * -ECANCELED at once and become orphans.  Every callback runs before it
 * returns; a request queued from one of them fails with -ESHUTDOWN.
 * Must not be called from a callback of the same queue.  NULL is fine.
 */
void io_queue_close(struct io_queue *q);

/*
 * Queues one request: IO_READ/IO_WRITE of len bytes at off from/to buf
 * (which must stay valid until the callback, and beyond it as said above
 * for a queue with a timeout); IO_FLUSH (buf, len, off ignored);
 * IO_DISCARD of [off, off+len).  Returns 0 (done will run exactly once)
 * or, with no callback, -EINVAL (no done, len 0 or over 2 GiB for a read
 * or write), -ESHUTDOWN (the queue is closing), -ENOMEM.
 */
int io_submit(struct io_queue *q, enum io_op op, void *buf, size_t len,
	      uint64_t off, io_done_fn done, void *arg);

/*
 * Runs the loop's part of the engine once without the loop (pagerd handing
 * over to a successor, the loop stopped): waits for a completion or the
 * next deadline and runs every callback due.  Returns 0 or the -errno of
 * the wait.  A caller waiting for its requests loops on its own count of
 * callbacks (a callback may close the queue): with a timeout, that ends
 * within it.
 */
int io_engine_wait(struct io_engine *e);

/* Requests of q whose callbacks have not run yet. */
unsigned io_queue_pending(const struct io_queue *q);

void io_queue_get_stats(const struct io_queue *q, struct io_queue_stats *ret);
const char *io_queue_label(const struct io_queue *q);

/*
 * A thread's own small ring, beside the engine (pagerd's fault threads:
 * fault.c).  The thread prepares reads with io_local_read() (no syscall:
 * under the daemon lock, while it serves a fault), submits them with
 * io_local_submit() once it has let go of the lock, and reaps them with
 * io_local_reap() when io_local_fd() (an eventfd the ring signals) is
 * readable.  Only reads of a trusted descriptor (the swap: no timeout), and
 * only from the thread that owns the ring.  A short read is finished, and
 * -EAGAIN/-EINTR retried, with pread() in io_local_reap(): rare, and that
 * thread's alone to wait for.
 */
struct io_local;
struct io_local_done {
	io_done_fn done;
	void *arg;
	int res;     /* 0 (every byte read) or -errno */
};
/* A ring of `entries` places (at most that many reads in flight). */
int io_local_open(struct io_local **ret, unsigned entries);
/* Every read must have been reaped.  NULL is fine. */
void io_local_close(struct io_local *l);
int io_local_fd(const struct io_local *l);
/* Prepares a read of len bytes at off of fd into buf; done(arg, res) is
 * for the caller to run with what io_local_reap() returns.  0, or -EBUSY
 * (the ring is full: read another way), -EINVAL. */
int io_local_read(struct io_local *l, int fd, void *buf, size_t len,
		  uint64_t off, io_done_fn done, void *arg);
/* Submits what was prepared.  0 or -errno (what is prepared stays). */
int io_local_submit(struct io_local *l);
/* Reads prepared or in flight, not reaped yet. */
unsigned io_local_pending(const struct io_local *l);
/* Takes up to max finished reads into ret (clearing the eventfd first,
 * so a completion after it signals again).  Returns how many. */
size_t io_local_reap(struct io_local *l, struct io_local_done *ret, size_t max);

#endif
