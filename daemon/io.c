/* SPDX-License-Identifier: MIT */
/*
 * The asynchronous I/O engine (io.h): one io_uring, one eventfd, queues.
 *
 * A request owns at most one SQE at a time.  At most `depth` requests (the
 * SQ size) own one, and at most one cancellation is in flight per orphan,
 * which keeps the CQ (twice the SQ) from ever overflowing and means an SQE
 * can always be had for a request let in; the others wait in their
 * queue's FIFO and are let in, queue by queue in turn, as completions free
 * places.  SQEs are prepared at once but submitted together, once per loop
 * iteration, by a deferred event (or at once when the SQ fills).
 *
 * Timeouts are deadlines on one list, kept in order (a queue's requests
 * share its timeout, so a new one almost always goes at the tail), and one
 * timer on the loop armed for the first.
 */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "io.h"
#include "log.h"

/* A failed io_uring_submit() is retried after this long. */
#define IO_SUBMIT_RETRY_US 1000
/* Noisy log lines: at most a few per interval, then a count. */
#define IO_LOG_INTERVAL_MS 10000
#define IO_LOG_BURST 5

struct io_req {
	struct io_req *next, *prev;   /* the queue's FIFO, or its in-ring list */
	struct io_req *tnext, *tprev; /* the deadline list */
	struct io_queue *q;           /* NULL: an orphan whose queue closed */
	enum io_op op;
	uint8_t *buf;
	size_t len, done_bytes;
	uint64_t off;
	unsigned retries;
	uint64_t deadline_ms;
	bool in_ring;                 /* owns an SQE, or is in the kernel */
	bool timed;                   /* on the deadline list */
	bool orphan;                  /* called back already: the engine's */
	bool untrusted;               /* counted in io_engine.untrusted */
	io_done_fn done;
	void *arg;
};

struct io_list {
	struct io_req *head, *tail;
};

struct io_queue {
	struct io_engine *e;
	struct io_queue *next, *prev; /* the engine's queues */
	int fd;
	char *label;
	unsigned depth, in_ring, queued, orphans;
	size_t align;
	uint32_t timeout_ms;
	struct io_list waiting;       /* FIFO of requests without a place */
	struct io_list ring;          /* requests with one */
	bool closing;
	struct io_queue_stats st;
};

struct io_engine {
	struct event_base *base;
	struct io_uring ring;
	bool ring_ok;
	int efd;
	bool efd_edge;                /* efd_ev edge-triggered: never read */
	struct event *efd_ev;
	struct event *submit_ev;      /* deferred submission, also the retry timer */
	bool submit_armed;
	struct event *timer_ev;       /* the first deadline */
	unsigned depth, in_ring, untrusted, orphans;
	struct io_queue *queues, *rr; /* rr: who is let in first next time */
	struct io_req *dl_head, *dl_tail;
	struct io_list queueless;     /* orphans whose queue closed */
	uint64_t log_start_ms;
	unsigned log_n;
	uint64_t log_suppressed;
};

/*
 * Orphans still in the kernel when their engine closes: the ring's teardown
 * finishes them asynchronously and may still write their buffers, so they
 * are never freed.  Kept reachable here, for the rest of the process, so
 * that what the kernel owns is not mistaken for a leak.
 */
static struct io_list io_left_to_kernel;

static uint64_t io_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* True if a warning may be logged now (a few per interval, then a count). */
static bool io_log_allowed(struct io_engine *e)
{
	uint64_t now = io_mono_ms();

	if (!e->log_start_ms || now - e->log_start_ms >= IO_LOG_INTERVAL_MS) {
		if (e->log_suppressed)
			log_warn("io: %" PRIu64 " similar messages suppressed",
				 e->log_suppressed);
		e->log_start_ms = now;
		e->log_n = 0;
		e->log_suppressed = 0;
	}
	if (e->log_n < IO_LOG_BURST) {
		e->log_n++;
		return true;
	}
	e->log_suppressed++;
	return false;
}

/* ---- lists -------------------------------------------------------------- */

static void io_list_push_tail(struct io_list *l, struct io_req *r)
{
	r->next = NULL;
	r->prev = l->tail;
	if (l->tail)
		l->tail->next = r;
	else
		l->head = r;
	l->tail = r;
}

static void io_list_push_head(struct io_list *l, struct io_req *r)
{
	r->prev = NULL;
	r->next = l->head;
	if (l->head)
		l->head->prev = r;
	else
		l->tail = r;
	l->head = r;
}

static void io_list_remove(struct io_list *l, struct io_req *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		l->head = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else
		l->tail = r->prev;
	r->next = r->prev = NULL;
}

/* The deadline list, in order of deadline. */
static void io_dl_insert(struct io_engine *e, struct io_req *r)
{
	struct io_req *after = e->dl_tail;

	while (after && after->deadline_ms > r->deadline_ms)
		after = after->tprev;
	r->tprev = after;
	r->tnext = after ? after->tnext : e->dl_head;
	if (r->tnext)
		r->tnext->tprev = r;
	else
		e->dl_tail = r;
	if (after)
		after->tnext = r;
	else
		e->dl_head = r;
	r->timed = true;
}

static void io_dl_remove(struct io_engine *e, struct io_req *r)
{
	if (!r->timed)
		return;
	if (r->tprev)
		r->tprev->tnext = r->tnext;
	else
		e->dl_head = r->tnext;
	if (r->tnext)
		r->tnext->tprev = r->tprev;
	else
		e->dl_tail = r->tprev;
	r->tnext = r->tprev = NULL;
	r->timed = false;
}

static void io_arm_timer(struct io_engine *e)
{
	uint64_t now, wait;
	struct timeval tv;

	if (!e->dl_head) {
		evtimer_del(e->timer_ev);
		return;
	}
	now = io_mono_ms();
	wait = e->dl_head->deadline_ms > now ? e->dl_head->deadline_ms - now : 0;
	tv.tv_sec = (time_t)(wait / 1000);
	tv.tv_usec = (suseconds_t)(wait % 1000) * 1000;
	evtimer_add(e->timer_ev, &tv);
}

/* ---- submission --------------------------------------------------------- */

/*
 * Hands the prepared SQEs to the kernel.  On failure (-EAGAIN/-EBUSY: the
 * kernel is short of memory) the SQEs stay in the ring and the submission
 * is retried shortly: losing them would lose requests whose callers wait.
 */
static void io_submit_now(struct io_engine *e)
{
	int ret = 0;

	for (int tries = 0; io_uring_sq_ready(&e->ring) && tries < 4; tries++) {
		ret = io_uring_submit(&e->ring);
		if (ret < 0 && ret != -EINTR)
			break;
	}
	if (!io_uring_sq_ready(&e->ring))
		return;
	if (ret < 0 && io_log_allowed(e))
		log_warn("io: io_uring_submit: %s (retrying)", strerror(-ret));
	struct timeval tv = { 0, IO_SUBMIT_RETRY_US };
	event_add(e->submit_ev, &tv);
}

/* Submission at the end of this loop iteration, batching every request
 * queued by the callbacks that run before it. */
static void io_arm_submit(struct io_engine *e)
{
	if (e->submit_armed)
		return;
	e->submit_armed = true;
	event_active(e->submit_ev, EV_TIMEOUT, 0);
}

/* Prepares an SQE for what is left of r.  False, nothing changed, if no
 * SQE could be had even after submitting (not expected: see the top). */
static bool io_req_prep(struct io_engine *e, struct io_req *r)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&e->ring);
	int fd = r->q->fd;

	if (!sqe) {
		io_submit_now(e);
		sqe = io_uring_get_sqe(&e->ring);
		if (!sqe)
			return false;
	}
	switch (r->op) {
	case IO_READ:
		io_uring_prep_read(sqe, fd, r->buf + r->done_bytes,
				   (unsigned)(r->len - r->done_bytes), r->off + r->done_bytes);
		break;
	case IO_WRITE:
		io_uring_prep_write(sqe, fd, r->buf + r->done_bytes,
				    (unsigned)(r->len - r->done_bytes), r->off + r->done_bytes);
		break;
	case IO_FLUSH:
		io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
		break;
	case IO_DISCARD:
		io_uring_prep_fallocate(sqe, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					(off_t)r->off, (off_t)r->len);
		break;
	}
	io_uring_sqe_set_data(sqe, r);
	/* An untrusted file is never tried inline: io_uring_enter() would
	 * run it in our thread, and a FUSE file (whose requests may queue
	 * behind a full background queue) can block it there.  In an io-wq
	 * worker it blocks only that worker. */
	if (r->untrusted)
		sqe->flags |= IOSQE_ASYNC;
	if (!io_uring_sq_space_left(&e->ring))
		io_submit_now(e);
	else
		io_arm_submit(e);
	return true;
}

static bool io_place_free(const struct io_queue *q)
{
	const struct io_engine *e = q->e;

	return q->in_ring < q->depth && e->in_ring < e->depth &&
	       (!q->timeout_ms || e->untrusted < IO_UNTRUSTED_MAX);
}

static void io_take_place(struct io_queue *q, struct io_req *r)
{
	r->in_ring = true;
	io_list_push_tail(&q->ring, r);
	q->in_ring++;
	q->e->in_ring++;
	if (q->timeout_ms)
		q->e->untrusted++;
}

static void io_give_place(struct io_queue *q, struct io_req *r)
{
	r->in_ring = false;
	io_list_remove(&q->ring, r);
	q->in_ring--;
	q->e->in_ring--;
	if (q->timeout_ms)
		q->e->untrusted--;
}

/* Gives r a place and an SQE, or leaves it waiting (at the head when it
 * is a continuation: it was in already). */
static void io_req_start(struct io_queue *q, struct io_req *r, bool again)
{
	if (io_place_free(q)) {
		io_take_place(q, r);
		if (io_req_prep(q->e, r))
			return;
		io_give_place(q, r);
	}
	if (again)
		io_list_push_head(&q->waiting, r);
	else
		io_list_push_tail(&q->waiting, r);
	q->queued++;
	io_arm_submit(q->e);
}

/* Lets waiting requests in, a queue at a time in turn. */
static void io_refill(struct io_engine *e)
{
	struct io_queue *start = e->rr ? e->rr : e->queues, *q = start;

	if (!q)
		return;
	do {
		while (q->waiting.head && io_place_free(q)) {
			struct io_req *r = q->waiting.head;

			io_list_remove(&q->waiting, r);
			q->queued--;
			io_take_place(q, r);
			if (!io_req_prep(e, r)) {
				io_give_place(q, r);
				io_list_push_head(&q->waiting, r);
				q->queued++;
				e->rr = q;
				return;
			}
		}
		q = q->next ? q->next : e->queues;
	} while (q != start);
	e->rr = start->next ? start->next : e->queues;
}

static void io_on_submit(evutil_socket_t fd, short what, void *arg)
{
	struct io_engine *e = arg;

	(void)fd;
	(void)what;
	e->submit_armed = false;
	io_refill(e);
	io_submit_now(e);
}

/* ---- completion --------------------------------------------------------- */

/*
 * The end of r for its caller: the callback runs, r is freed — unless r is
 * in the kernel still (a timeout or a close), when it stays as an orphan.
 * On a queue with a timeout, -ETIMEDOUT and -ECANCELED hand the buffer to
 * us.  Nothing of q is touched after the callback (it may close q).
 */
static void io_req_finish(struct io_queue *q, struct io_req *r, int res)
{
	struct io_engine *e = q->e;
	io_done_fn done = r->done;
	void *arg = r->arg;
	uint8_t *owned = NULL;

	io_dl_remove(e, r);
	if (res == 0) {
		q->st.completed++;
	} else {
		q->st.failed++;
		if (res != -ECANCELED && res != -ETIMEDOUT && io_log_allowed(e))
			log_warn("io %s: %s of %zu bytes at %" PRIu64 " failed: %s",
				 q->label, r->op == IO_READ ? "read" : r->op == IO_WRITE ?
				 "write" : r->op == IO_FLUSH ? "flush" : "discard",
				 r->len, r->off, strerror(-res));
	}
	if (r->in_ring) {
		r->orphan = true;
		q->orphans++;
		e->orphans++;
	} else {
		if (q->timeout_ms && (res == -ETIMEDOUT || res == -ECANCELED))
			owned = r->buf;
		free(r);
	}
	done(arg, res);
	free(owned);
}

/* Asks the kernel to cancel r (a best effort: I/O blocked in a filesystem
 * often cannot be; its CQE then comes when it comes). */
static void io_req_cancel(struct io_engine *e, struct io_req *r)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&e->ring);

	if (!sqe) {
		io_submit_now(e);
		sqe = io_uring_get_sqe(&e->ring);
		if (!sqe)
			return;
	}
	io_uring_prep_cancel(sqe, r, 0);
	io_uring_sqe_set_data(sqe, NULL);
	io_arm_submit(e);
}

/*
 * One CQE for r.  Short transfers are continued from where they stopped;
 * -EAGAIN and -EINTR are retried a bounded number of times; anything else
 * ends the request.
 */
static void io_req_complete(struct io_engine *e, struct io_req *r, int res)
{
	struct io_queue *q = r->q;

	if (r->orphan) {
		/* Timed out or closed long ago: the kernel let go at last. */
		if (q) {
			io_give_place(q, r);
			q->orphans--;
		} else {
			io_list_remove(&e->queueless, r);
			r->in_ring = false;
			e->in_ring--;
			if (r->untrusted)
				e->untrusted--;
		}
		e->orphans--;
		free(r->buf);
		free(r);
		return;
	}
	io_give_place(q, r);
	if (res == -EAGAIN || res == -EINTR) {
		if (++r->retries <= IO_MAX_RETRIES) {
			q->st.retried++;
			io_req_start(q, r, true);
			return;
		}
	} else if (res > 0 && (r->op == IO_READ || r->op == IO_WRITE)) {
		r->done_bytes += (size_t)res;
		if (r->done_bytes >= r->len) {
			res = 0;
		} else if (q->align <= 1 || r->done_bytes % q->align == 0) {
			q->st.short_io++;
			io_req_start(q, r, true);
			return;
		} else {
			/* O_DIRECT cannot continue from an unaligned offset:
			 * the file ended there (someone shrank it). */
			res = -EIO;
		}
	} else if (res == 0 && (r->op == IO_READ || r->op == IO_WRITE)) {
		res = -EIO; /* end of file: the file shrank under us */
	} else if (res > 0) {
		res = 0;
	}
	io_req_finish(q, r, res);
}

/* Runs every completion the ring holds. */
static void io_reap(struct io_engine *e)
{
	struct io_uring_cqe *cqe;

	while (io_uring_peek_cqe(&e->ring, &cqe) == 0) {
		struct io_req *r = io_uring_cqe_get_data(cqe);
		int res = cqe->res;

		io_uring_cqe_seen(&e->ring, cqe);
		if (r) /* else a cancellation's own result */
			io_req_complete(e, r, res);
	}
}

/* r's time is up: it calls back with -ETIMEDOUT now; if the kernel has
 * it, it stays ours until the kernel lets go. */
static void io_req_expire(struct io_engine *e, struct io_req *r)
{
	struct io_queue *q = r->q;

	io_dl_remove(e, r);
	q->st.timed_out++;
	if (io_log_allowed(e))
		log_warn("io %s: %s of %zu bytes at %" PRIu64 " timed out after %" PRIu32
			 " ms%s", q->label, r->op == IO_READ ? "read" : r->op == IO_WRITE ?
			 "write" : r->op == IO_FLUSH ? "flush" : "discard", r->len, r->off,
			 q->timeout_ms, r->in_ring ? "; it stays with the kernel" : "");
	if (r->in_ring) {
		io_req_cancel(e, r);
	} else {
		io_list_remove(&q->waiting, r);
		q->queued--;
	}
	io_req_finish(q, r, -ETIMEDOUT);
}

static void io_run_timeouts(struct io_engine *e)
{
	uint64_t now = io_mono_ms();

	while (e->dl_head && e->dl_head->deadline_ms <= now)
		io_req_expire(e, e->dl_head);
}

static void io_on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct io_engine *e = arg;

	(void)fd;
	(void)what;
	io_run_timeouts(e);
	io_refill(e);
	io_arm_timer(e);
}

static void io_on_eventfd(evutil_socket_t fd, short what, void *arg)
{
	struct io_engine *e = arg;
	uint64_t v;

	(void)what;
	/* Edge-triggered, every completion the kernel signals is a new
	 * event, whatever the counter holds (it saturates, never fails):
	 * no read, one syscall less a wake-up.  Level-triggered, reset the
	 * counter before reaping: a CQE posted after this read signals the
	 * eventfd again, so none is left behind. */
	if (!e->efd_edge && read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_warn("io: reading the eventfd: %s", strerror(errno));
	io_reap(e);
	io_refill(e);
	io_submit_now(e);
	io_arm_timer(e);
}

/* Waits (the loop not running) for a completion or the next deadline,
 * then runs what came.  Returns 0 or -errno from the wait. */
static int io_wait_some(struct io_engine *e)
{
	struct io_uring_cqe *cqe;
	struct __kernel_timespec ts;
	int ret;

	io_refill(e);
	io_uring_submit(&e->ring);
	if (e->dl_head) {
		uint64_t now = io_mono_ms(), wait = e->dl_head->deadline_ms > now ?
						 e->dl_head->deadline_ms - now : 0;

		ts.tv_sec = (long long)(wait / 1000);
		ts.tv_nsec = (long long)(wait % 1000) * 1000000;
		ret = io_uring_wait_cqe_timeout(&e->ring, &cqe, &ts);
	} else {
		ret = io_uring_wait_cqe(&e->ring, &cqe);
	}
	if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
		return ret;
	io_reap(e);
	io_run_timeouts(e);
	return 0;
}

/* ---- queues ------------------------------------------------------------- */

int io_queue_open(struct io_queue **ret, struct io_engine *e, int fd,
		  const struct io_queue_opts *o)
{
	struct io_queue *q;

	if (!o || !o->depth || (o->timeout_ms && o->depth > IO_UNTRUSTED_MAX))
		return -EINVAL;
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->label = strdup(o->label ? o->label : "?");
	if (!q->label) {
		free(q);
		return -ENOMEM;
	}
	q->e = e;
	q->fd = fd;
	q->depth = o->depth;
	q->align = o->align;
	q->timeout_ms = o->timeout_ms;
	q->next = e->queues;
	if (e->queues)
		e->queues->prev = q;
	e->queues = q;
	*ret = q;
	return 0;
}

void io_queue_close(struct io_queue *q)
{
	struct io_engine *e;
	struct io_req *r;

	if (!q || q->closing)
		return;
	e = q->e;
	q->closing = true;
	while ((r = q->waiting.head)) {
		io_list_remove(&q->waiting, r);
		q->queued--;
		io_req_finish(q, r, -ECANCELED);
	}
	if (q->timeout_ms) {
		/* Nobody waits for an untrusted device: what it has not
		 * answered is given up now, and stays with the kernel. */
		for (r = q->ring.head; r; r = r->next) {
			if (r->orphan)
				continue;
			io_req_cancel(e, r);
			io_req_finish(q, r, -ECANCELED);
		}
	} else {
		while (q->in_ring > q->orphans) {
			int ret = io_wait_some(e);

			if (ret < 0) {
				/* Their buffers may still be written to:
				 * leaking the requests is the safe side. */
				log_err("io %s: waiting for %u requests: %s; abandoning them",
					q->label, q->in_ring, strerror(-ret));
				for (r = q->ring.head; r; r = r->next)
					if (!r->orphan) {
						r->buf = NULL; /* the caller's: never freed */
						io_req_finish(q, r, -ECANCELED);
					}
				break;
			}
		}
	}
	/* What is left are orphans: they outlive their queue. */
	while ((r = q->ring.head)) {
		io_list_remove(&q->ring, r);
		r->q = NULL;
		io_dl_remove(e, r);
		io_list_push_tail(&e->queueless, r);
	}
	if (q->prev)
		q->prev->next = q->next;
	else
		e->queues = q->next;
	if (q->next)
		q->next->prev = q->prev;
	if (e->rr == q)
		e->rr = NULL;
	free(q->label);
	free(q);
	io_arm_timer(e);
}

int io_submit(struct io_queue *q, enum io_op op, void *buf, size_t len,
	      uint64_t off, io_done_fn done, void *arg)
{
	struct io_engine *e = q->e;
	struct io_req *r;

	if (q->closing)
		return -ESHUTDOWN;
	if (!done || ((op == IO_READ || op == IO_WRITE) &&
		      (!buf || !len || len > (1u << 31))))
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->q = q;
	r->op = op;
	r->buf = buf;
	r->len = len;
	r->off = off;
	r->done = done;
	r->arg = arg;
	r->untrusted = q->timeout_ms != 0;
	if (q->timeout_ms) {
		r->deadline_ms = io_mono_ms() + q->timeout_ms;
		io_dl_insert(e, r);
		if (e->dl_head == r)
			io_arm_timer(e);
	}
	if (q->waiting.head) {
		/* Behind those already waiting. */
		io_list_push_tail(&q->waiting, r);
		q->queued++;
		io_arm_submit(e);
	} else {
		io_req_start(q, r, false);
	}
	return 0;
}

int io_engine_wait(struct io_engine *e)
{
	return io_wait_some(e);
}

unsigned io_queue_pending(const struct io_queue *q)
{
	return q->queued + q->in_ring - q->orphans;
}

void io_queue_get_stats(const struct io_queue *q, struct io_queue_stats *ret)
{
	*ret = q->st;
	ret->in_flight = q->in_ring;
	ret->queued = q->queued;
	ret->orphans = q->orphans;
}

const char *io_queue_label(const struct io_queue *q)
{
	return q->label;
}

/* ---- the engine --------------------------------------------------------- */

int io_engine_open(struct io_engine **ret, struct event_base *base)
{
	struct io_engine *e = calloc(1, sizeof(*e));
	int r;

	if (!e)
		return -ENOMEM;
	e->base = base;
	e->efd = -1;
	r = io_uring_queue_init(IO_RING_ENTRIES, &e->ring, 0);
	if (r < 0) {
		log_err("io: io_uring_queue_init: %s", strerror(-r));
		free(e);
		return r;
	}
	e->ring_ok = true;
	e->depth = e->ring.sq.ring_entries < IO_RING_ENTRIES ?
		   e->ring.sq.ring_entries : IO_RING_ENTRIES;
	{
		/* Stalled files hold io-wq workers (at most IO_UNTRUSTED_MAX,
		 * one per request): leave as many again for the swap's
		 * requests that the kernel punts to a worker. */
		unsigned workers[2] = { IO_BOUNDED_WORKERS, 0 };

		r = io_uring_register_iowq_max_workers(&e->ring, workers);
		if (r < 0)
			log_debug("io: io_uring_register_iowq_max_workers: %s", strerror(-r));
	}
	e->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (e->efd < 0) {
		r = -errno;
		goto fail;
	}
	r = io_uring_register_eventfd(&e->ring, e->efd);
	if (r < 0) {
		log_err("io: io_uring_register_eventfd: %s", strerror(-r));
		goto fail;
	}
	e->efd_edge = event_base_get_features(base) & EV_FEATURE_ET;
	e->efd_ev = event_new(base, e->efd,
			      EV_READ | EV_PERSIST | (e->efd_edge ? EV_ET : 0),
			      io_on_eventfd, e);
	e->submit_ev = event_new(base, -1, 0, io_on_submit, e);
	e->timer_ev = evtimer_new(base, io_on_timer, e);
	r = -ENOMEM;
	if (!e->efd_ev || !e->submit_ev || !e->timer_ev || event_add(e->efd_ev, NULL) < 0)
		goto fail;
	*ret = e;
	return 0;
fail:
	io_engine_close(e);
	return r;
}

unsigned io_engine_orphans(const struct io_engine *e)
{
	return e->orphans;
}

void io_engine_close(struct io_engine *e)
{
	if (!e)
		return;
	while (e->queues) {
		/* An untrusted queue may be left to its last callbacks (a
		 * snapshot whose region went, waiting for its file). */
		if (!e->queues->timeout_ms)
			log_err("io %s: still open as the engine closes", e->queues->label);
		io_queue_close(e->queues);
	}
	if (e->orphans)
		log_warn("io: %u requests never came back from the kernel; their "
			 "buffers are left to it", e->orphans);
	/* Closing the ring cancels what it can; the kernel finishes the rest
	 * on its own.  Orphans (and their buffers) are left allocated. */
	if (e->ring_ok)
		io_uring_queue_exit(&e->ring);
	while (e->queueless.head) {
		struct io_req *r = e->queueless.head;

		io_list_remove(&e->queueless, r);
		io_list_push_tail(&io_left_to_kernel, r);
	}
	if (e->efd_ev)
		event_free(e->efd_ev);
	if (e->submit_ev)
		event_free(e->submit_ev);
	if (e->timer_ev)
		event_free(e->timer_ev);
	if (e->efd >= 0)
		close(e->efd);
	free(e);
}

/* ---- a thread's own ring (io_local_*) ------------------------------------ */

struct io_local_req {
	int fd;
	uint8_t *buf;
	size_t len;
	uint64_t off;
	io_done_fn done;
	void *arg;
};

struct io_local {
	struct io_uring ring;
	int efd;
	unsigned entries;
	unsigned pending;     /* prepared or in flight */
	unsigned unsubmitted; /* prepared */
};

int io_local_open(struct io_local **ret, unsigned entries)
{
	struct io_local *l = calloc(1, sizeof(*l));
	int r;

	if (!l)
		return -ENOMEM;
	/* The CQ (twice the SQ) cannot overflow: at most `entries` reads. */
	r = io_uring_queue_init(entries, &l->ring, 0);
	if (r < 0) {
		free(l);
		return r;
	}
	l->entries = entries;
	l->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (l->efd < 0 || (r = io_uring_register_eventfd(&l->ring, l->efd)) < 0) {
		r = l->efd < 0 ? -errno : r;
		if (l->efd >= 0)
			close(l->efd);
		io_uring_queue_exit(&l->ring);
		free(l);
		return r;
	}
	*ret = l;
	return 0;
}

void io_local_close(struct io_local *l)
{
	if (!l)
		return;
	io_uring_queue_exit(&l->ring);
	close(l->efd);
	free(l);
}

int io_local_fd(const struct io_local *l)
{
	return l->efd;
}

int io_local_read(struct io_local *l, int fd, void *buf, size_t len,
		  uint64_t off, io_done_fn done, void *arg)
{
	struct io_local_req *q;
	struct io_uring_sqe *sqe;

	if (!len || len > (1u << 31) || !done)
		return -EINVAL;
	if (l->pending >= l->entries)
		return -EBUSY;
	q = malloc(sizeof(*q));
	if (!q)
		return -ENOMEM;
	sqe = io_uring_get_sqe(&l->ring);
	if (!sqe) {
		free(q);
		return -EBUSY;
	}
	*q = (struct io_local_req){ fd, buf, len, off, done, arg };
	io_uring_prep_read(sqe, fd, buf, (unsigned)len, off);
	io_uring_sqe_set_data(sqe, q);
	l->pending++;
	l->unsubmitted++;
	return 0;
}

int io_local_submit(struct io_local *l)
{
	int r;

	if (!l->unsubmitted)
		return 0;
	do
		r = io_uring_submit(&l->ring);
	while (r == -EINTR);
	if (r < 0)
		return r;
	l->unsubmitted -= (unsigned)r < l->unsubmitted ? (unsigned)r : l->unsubmitted;
	return 0;
}

unsigned io_local_pending(const struct io_local *l)
{
	return l->pending;
}

/* Finishes a read the ring did in part, or retries one it refused for
 * now, on this thread.  0 or -errno. */
static int io_local_finish(struct io_local_req *q, size_t done)
{
	unsigned tries = 0;

	while (done < q->len) {
		ssize_t n = pread(q->fd, q->buf + done, q->len - done,
				  (off_t)(q->off + done));

		if (n < 0 && (errno == EINTR || errno == EAGAIN) &&
		    ++tries < IO_MAX_RETRIES)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO; /* past the end: the file shrank */
		done += (size_t)n;
	}
	return 0;
}

size_t io_local_reap(struct io_local *l, struct io_local_done *ret, size_t max)
{
	struct io_uring_cqe *cqe;
	uint64_t v;
	size_t n = 0;

	if (read(l->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_warn("io: reading a fault thread's eventfd: %s", strerror(errno));
	while (n < max && io_uring_peek_cqe(&l->ring, &cqe) == 0) {
		struct io_local_req *q = io_uring_cqe_get_data(cqe);
		int res = cqe->res;

		io_uring_cqe_seen(&l->ring, cqe);
		if (res >= 0 && (size_t)res < q->len)
			res = io_local_finish(q, (size_t)res);
		else if (res == -EAGAIN || res == -EINTR)
			res = io_local_finish(q, 0);
		else if (res > 0)
			res = 0;
		ret[n++] = (struct io_local_done){ q->done, q->arg, res };
		free(q);
		l->pending--;
	}
	return n;
}
