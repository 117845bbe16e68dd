/* SPDX-License-Identifier: MIT */
/*
 * Serving a client's userfaultfd: faults and the events that keep pagerd's
 * view of the client's address space true.
 *
 * Rules we follow (DESIGN.md §3):
 *  - EEXIST: the page is already there and nobody was woken: UFFDIO_WAKE.
 *  - EAGAIN with nothing done: an event (UNMAP/REMAP) is unread; the
 *    fault is parked, the uffd read again, and parked faults retried.
 *  - EAGAIN with some bytes done: those pages are mapped and woken; carry on.
 *  - ENOENT: the range is no longer registered (being destroyed); ESRCH: the
 *    process is gone.  Neither is an error for pagerd.
 *  - A thread interrupted by a signal faults again: duplicates are normal.
 */
#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "io.h"
#include "lock.h"
#include "log.h"
#include "page.h"
#include "pagerd.h"
#include "swap.h"
#include "uffd.h"

/* A sequential stream of first touches, for fault-around. */
struct fault_stream {
	uint64_t start;  /* first page of the stream's last fill */
	uint64_t next;   /* the page just after it */
	uint32_t window; /* pages to fill on the next hit */
	uint64_t used;   /* for LRU replacement */
};

#define FAULT_STREAMS 32

/* A region's streams (region.streams): allocated at its first fill, as
 * many regions never take a first-touch fault (restored, or adopted). */
struct fault_streams {
	struct fault_stream s[FAULT_STREAMS];
	uint64_t clock;
};

/*
 * Picks how many pages to zero-fill for a first touch at `page`.
 *
 * A round trip through pagerd costs 3.7–60 µs against 1.3 µs for a kernel
 * fault, so sequential first touches must be resolved many pages at a time.
 * Each region tracks a few streams; a fault at (or just past) the page
 * after a stream's last fill doubles that stream's window (up to the configured
 * maximum), any other fault starts a stream with a window of one page, so
 * random touches populate only what they touch.
 */
static uint64_t fault_around_window(struct region *r, uint64_t page,
				    unsigned max_window, struct fault_stream **ret)
{
	struct fault_streams *fs = r->streams;
	struct fault_stream *s, *victim;

	if (!fs) {
		/* Without memory for them, one page at a time: fault-around
		 * is a bonus. */
		fs = r->streams = calloc(1, sizeof(*fs));
		if (!fs) {
			*ret = NULL;
			return 1;
		}
	}
	victim = &fs->s[0];
	fs->clock++;
	for (int i = 0; i < FAULT_STREAMS; i++) {
		s = &fs->s[i];
		/* A hit: the page right after the last fill, or a little
		 * beyond it where the run stopped at pages already there. */
		if (s->window && page >= s->next &&
		    page - s->next <= (s->window < 16 ? 16 : s->window)) {
			s->window = s->window * 2 > max_window ? max_window
							       : s->window * 2;
			goto hit;
		}
		if (s->window && page >= s->start && page < s->next) {
			/* Caught up with a fill still in progress. */
			s->used = fs->clock;
			*ret = NULL;
			return 1;
		}
		if (s->used < victim->used)
			victim = s;
	}
	s = victim;
	s->window = 1;
hit:
	s->used = fs->clock;
	*ret = s;
	return s->window;
}

/* Returns the number of pages from `page` on, at most `want`, that pagerd
 * has never populated: fault-around stops at the first page with data. */
static uint64_t empty_run(struct region *r, uint64_t page, uint64_t want)
{
	uint64_t n = 0;

	while (n < want && page + n < r->npages &&
	       r->state[page + n] == PAGE_EMPTY)
		n++;
	return n;
}

/*
 * One UFFDIO_ZEROPAGE over [page, page+n) (page_zero_fill()).  Returns the
 * pages filled (and woken), 0 if the first page already existed (nothing
 * woken), or -errno.
 */
static int64_t zero_fill(struct client *c, struct region *r, uint64_t page,
			 uint64_t n)
{
	int64_t done = page_zero_fill(r, page, n);

	if (done > 0) {
		c->d->stats.pages_zero_filled += (uint64_t)done;
		r->stats.pages_zero_filled += (uint64_t)done;
	}
	return done;
}

/* Parks a fault until eviction made room (fault_retry_room()); kicks
 * eviction, unless write-back is in flight (its completion runs it). */
static int wait_for_room(struct client *c, const struct uffd_msg *m)
{
	int e = fault_park(c, m, PARK_ROOM);

	if (e < 0)
		return e;
	if (!c->d->writeback)
		evict_kick(c->d);
	return 0;
}

/*
 * Resolves a MISSING fault: zero-fills the faulting page and, for a
 * sequential stream, the never-populated pages of the window after it,
 * skipping pages that already hold data.  Returns 0, or -EAGAIN to retry
 * after the pending event is read.
 */
static int fault_missing(struct client *c, struct region *r, uint64_t page,
			 const struct uffd_msg *m)
{
	struct daemon *d = c->d;
	struct fault_stream *s;
	pgstate_t b = r->state[page];
	uint64_t want, end, n, p, room;
	int64_t done;

	d->stats.faults_missing++;
	r->stats.faults_missing++;
	if (b & PG_READING) {
		/* Being read in: its completion installs the page and wakes
		 * every thread waiting on it (a held readahead marker goes
		 * in now). */
		if (!swapin_take_marker(r, page))
			page_add_waiter(r, page);
		return 0;
	}
	switch (pg_state(b)) {
	case PAGE_SWAPPED:
		if (limits_room(r) == 0)
			return wait_for_room(c, m);
		return swapin_fault(c, r, page,
				    m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE);
	case PAGE_POISONED:
		return uffd_poison(r, page);
	case PAGE_RESIDENT:
		/*
		 * MISSING where we count the page resident.  The event may
		 * be stale: the kernel queues it after its page-cache lookup
		 * failed, and our install (and wake) can fall in between.
		 * The page is there then, with its data: wake the thread.
		 * Taking it for discarded would drop its slot and leave it
		 * EMPTY while in memory, where a punch across an inert gap
		 * would later lose it.  Only the page cache can tell.
		 */
		if (region_in_memory(r, page)) {
			uffd_wake(c, r->addr + page * d->page_size, d->page_size);
			return 0;
		}
		/* Really gone: the client discarded it (MADV_REMOVE) before
		 * we read the event.  A write-back in flight keeps nothing
		 * (and will keep what we fill now). */
		page_emptied(r, page);
		break;
	case PAGE_EMPTY:
		if (b & PG_IMAGE) {
			/* Restored region: the data is in the image. */
			int e = restore_fault(c, r, page);

			return e == -ENOSPC ? wait_for_room(c, m) : e;
		}
		break;
	}
	room = limits_room(r);
	if (room == 0)
		return wait_for_room(c, m);
	want = fault_around_window(r, page, d->cfg.fault_around_max, &s);
	if (want > room)
		want = room;
	end = page + want < r->npages ? page + want : r->npages;
	n = empty_run(r, page, end - page);
	/*
	 * The faulting page first, with a short head, so that the thread
	 * is woken and works through those pages while we fill the rest:
	 * with two CPUs, the app and pagerd overlap.
	 */
	if (n == 0)
		n = 1; /* we thought it populated; the kernel knows better */
	done = zero_fill(c, r, page, n > 32 ? 32 : n);
	if (done == 0) {
		uffd_wake(c, r->addr + page * d->page_size, d->page_size);
		done = 1;
	} else if (done < 0) {
		if (done == -EAGAIN)
			return -EAGAIN;
		/* The thread could never be served: nothing else would
		 * wake it.  (ENOENT, ESRCH: the range or process is gone.) */
		if (done != -ENOENT && done != -ESRCH)
			client_misbehaved(c, "zero-filling a page of its region", (int)done);
		return 0;
	}
	for (p = page + (uint64_t)done; p < end;) {
		if (r->state[p] != PAGE_EMPTY) {
			p++;
			continue;
		}
		done = zero_fill(c, r, p, empty_run(r, p, end - p));
		if (done < 0)
			break; /* fault-around is a bonus: stop quietly */
		p += done ? (uint64_t)done : 1;
	}
	if (s) {
		s->start = page;
		s->next = p;
	}
	if (limits_pressure(r))
		evict_kick(d);
	return 0;
}

/*
 * A write to a write-protected page: a clean page becomes dirty (its swap
 * copy is stale: freed), a page being written out aborts its eviction.
 * Un-protect at once either way: the application never waits for I/O.
 */
static int fault_wp(struct client *c, struct region *r, uint64_t page,
		    const struct uffd_msg *m)
{
	pgstate_t b = r->state[page];
	int e;

	/* A running snapshot would capture the page first, and its captures
	 * wait for the disk already: the writer waits too, like the
	 * kernel's dirty throttling, instead of the snapshot failing.  The
	 * snapshot never needs this fault to progress; it retries it.
	 * (Without memory to park it, the write goes on over the budget.) */
	if (snapshot_write_must_wait(r, page) && fault_park(c, m, PARK_SNAPSHOT) == 0) {
		if (!c->retrying_snapshot)
			c->d->stats.snapshot_writes_parked++;
		return 0;
	}
	c->d->stats.faults_wp++;
	r->stats.faults_wp++;
	/* Dirty from now (a snapshot copies the old data first); a swap-in
	 * rewritten so soon counts for mapping the next ones writable. */
	if (pg_state(b) == PAGE_RESIDENT && !(b & PG_READING))
		page_dirtied(r, page);
	e = page_unprotect(r, page, 1);
	if (e == -EAGAIN)
		return -EAGAIN;
	if (e < 0 && e != -ENOENT && e != -ESRCH)
		log_warn_rl(c->id, "client %" PRIu64 ": un-protect: %s", c->id, strerror(-e));
	return 0;
}

/* Returns 0, -EAGAIN (park and retry), or -EFAULT (client misbehaves). */
static int handle_fault(struct client *c, const struct uffd_msg *m)
{
	uint64_t addr = m->arg.pagefault.address & ~((uint64_t)c->d->page_size - 1);
	struct region *r = region_find(c, addr);
	uint64_t page;

	if (!r) {
		/* libpager unregisters before it destroys, which also drops
		 * queued faults: a fault outside every region means the
		 * client registered memory it never declared. */
		log_warn("client %" PRIu64 ": fault at 0x%" PRIx64 " outside its regions",
			 c->id, addr);
		return -EFAULT;
	}
	page = (addr - r->addr) / c->d->page_size;
	if (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR) {
		/* libpager never registers MINOR: our pages are in the page
		 * cache only when complete, and the kernel maps them. */
		log_warn("client %" PRIu64 ": MINOR fault in region %" PRIu64 ", which it was not to register for",
			 c->id, r->id);
		return -EFAULT;
	}
	if (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)
		return fault_wp(c, r, page, m);
	return fault_missing(c, r, page, m);
}

static void handle_event(struct client *c, const struct uffd_msg *m)
{
	switch (m->event) {
	case UFFD_EVENT_REMAP: {
		struct region *r = region_find(c, m->arg.remap.from);

		if (r && r->addr == m->arg.remap.from && r->len == m->arg.remap.len) {
			/* The whole region moved: follow it. */
			region_move(r, m->arg.remap.to);
		} else if (r) {
			log_warn_rl(c->id, "client %" PRIu64 ": partial mremap of region %" PRIu64 " is not followed",
				 c->id, r->id);
		}
		break;
	}
	case UFFD_EVENT_UNMAP:
		/* The memfd keeps the data; the region goes when the client
		 * destroys it or exits. */
		break;
	default:
		log_debug("client %" PRIu64 ": uffd event %u ignored", c->id, m->event);
		break;
	}
}

int fault_park(struct client *c, const struct uffd_msg *m, enum park_reason why)
{
	if (c->nparked == c->parked_cap) {
		size_t cap = c->parked_cap ? c->parked_cap * 2 : 16;
		struct pending_fault *v = realloc(c->parked, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		c->parked = v;
		c->parked_cap = cap;
	}
	c->parked[c->nparked++] = (struct pending_fault){ .msg = *m, .why = why };
	c->nparked_for[why]++;
	return 0;
}

void fault_forget_parked(struct region *r)
{
	struct client *c = r->client;
	size_t kept = 0;

	for (size_t i = 0; i < c->nparked; i++) {
		uint64_t a = c->parked[i].msg.arg.pagefault.address;

		if (a >= r->addr && a - r->addr < r->len)
			c->nparked_for[c->parked[i].why]--;
		else
			c->parked[kept++] = c->parked[i];
	}
	c->nparked = kept;
}

void fault_region_gone(struct region *r)
{
	free(r->streams);
	r->streams = NULL;
}

bool fault_parked_in(const struct client *c, enum park_reason why,
		     const struct region *r)
{
	if (!r)
		return c->nparked_for[why] != 0;
	for (size_t i = 0; i < c->nparked && c->nparked_for[why]; i++) {
		uint64_t a = c->parked[i].msg.arg.pagefault.address;

		if (c->parked[i].why == why && a >= r->addr && a - r->addr < r->len)
			return true;
	}
	return false;
}

/* Returns false when the client must be dropped. */
static bool dispatch(struct client *c, const struct uffd_msg *m)
{
	int r;

	if (m->event != UFFD_EVENT_PAGEFAULT) {
		handle_event(c, m);
		return true;
	}
	r = handle_fault(c, m);
	if (r == -EAGAIN)
		return fault_park(c, m, PARK_EVENT) == 0;
	return r != -EFAULT;
}

/*
 * Takes c's faults parked for `why` off the queue (the others keep their
 * places) and dispatches them in order; those that cannot be resolved yet
 * park again, behind the others.
 */
bool fault_unpark(struct client *c, enum park_reason why)
{
	size_t n = c->nparked_for[why], k = 0, kept = 0;
	struct pending_fault *v;

	if (!n)
		return true;
	v = malloc(n * sizeof(*v));
	if (!v)
		return false;
	for (size_t i = 0; i < c->nparked; i++) {
		if (c->parked[i].why == why)
			v[k++] = c->parked[i];
		else
			c->parked[kept++] = c->parked[i];
	}
	c->nparked = kept;
	c->nparked_for[why] = 0;
	for (size_t i = 0; i < n; i++)
		if (!dispatch(c, &v[i].msg)) {
			free(v);
			return false;
		}
	free(v);
	return true;
}

/*
 * Retries the faults that waited for room, in the order they came, after
 * an eviction round (evict.c).  A fault that still finds no room parks
 * itself again.  A client whose retried fault breaks the protocol is
 * dropped (client_misbehaved(): its teardown is client.c's, at the next
 * turn of the loop).
 */
void fault_retry_room(struct daemon *d)
{
	for (struct client *c = d->clients; c; c = c->next) {
		if (!c->nparked_for[PARK_ROOM] || c->dead)
			continue;
		if (!fault_unpark(c, PARK_ROOM)) {
			client_misbehaved(c, "a protocol violation", -EPROTO);
			continue;
		}
		/* A retry may have met an unread event: it is parked for
		 * that, which only a uffd read would look at. */
		if (c->nparked_for[PARK_EVENT]) {
			static const struct timeval now = { 0, 0 };

			evtimer_add(c->retry_ev, &now);
		}
	}
}

int fault_serve(struct client *c)
{
	struct uffd_msg msgs[64];
	uint64_t spin_until = 0;
	unsigned yields = 0;
	int fd = c->uffd;

	if (c->dead)
		return 0; /* dropped at this turn of the loop */
	if (c->nparked_for[PARK_SNAPSHOT]) {
		/* Writes that waited for a snapshot's capture budget, before
		 * newer faults (one still without room parks again). */
		bool ok;

		c->retrying_snapshot = true;
		ok = fault_unpark(c, PARK_SNAPSHOT);
		c->retrying_snapshot = false;
		if (!ok)
			goto drop;
	}
	/* Fault threads: one batch a turn, so that the others get the next
	 * while this one serves it (and no polling under the lock). */
	int max_rounds = c->d->fthreads ? 1 : 64;

	for (int rounds = 0; rounds < max_rounds;) {
		ssize_t n = read(fd, msgs, sizeof(msgs));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN) {
				int e = -errno;

				log_warn("client %" PRIu64 ": reading uffd: %m", c->id);
				return e;
			}
			n = 0;
		}
		size_t k = (size_t)n / sizeof(msgs[0]);

		/* Events first in the order read, then faults parked
		 * behind an event that was unread when we tried them. */
		for (size_t i = 0; i < k; i++)
			if (!dispatch(c, &msgs[i]))
				goto drop;
		if (!fault_unpark(c, PARK_EVENT))
			goto drop;
		if (k == sizeof(msgs) / sizeof(msgs[0]) ||
		    (k && c->d->cfg.fault_spin_us && !c->d->fthreads)) {
			rounds++;
			spin_until = 0;
			continue;
		}
		/* Fewer than a full buffer: the queue was empty when read.
		 * epoll is level-triggered, so another read would only find
		 * EAGAIN (a syscall a fault) or a message it reports anyway. */
		if (k && !c->nparked_for[PARK_EVENT])
			return 0;
		/*
		 * Nothing queued.  Waking a thread that sleeps in the kernel
		 * costs tens of microseconds in a VM, so after serving
		 * faults, poll a little longer: the faulting thread's next
		 * fault usually comes within a few microseconds.  Only where
		 * another CPU runs the application.
		 */
		if (c->nparked_for[PARK_EVENT]) {
			/*
			 * Faults wait behind an event whose sender has not
			 * finished yet (mmap_changing stays raised until the
			 * thread that sent it, e.g. an munmap, runs again).  No further message may come to wake
			 * us.  That thread needs a moment of CPU: yield a
			 * few times, then fall back to a timer.
			 */
			static const struct timeval soon = { 0, 200 };

			if (++yields < 64) {
				sched_yield();
				continue;
			}
			evtimer_add(c->retry_ev, &soon);
			return 0;
		}
		if (!c->d->cfg.fault_spin_us || rounds == 0 || c->d->fthreads)
			return 0;
		uint64_t t = now_ns();
		if (!spin_until)
			spin_until = t + c->d->cfg.fault_spin_us * 1000ull;
		else if (t >= spin_until)
			return 0;
		__builtin_ia32_pause();
	}
	/* Out of rounds with faults still parked: no message may come to
	 * bring us back for them. */
	if (c->nparked_for[PARK_EVENT]) {
		static const struct timeval now = { 0, 0 };

		evtimer_add(c->retry_ev, &now);
	}
	return 0;
drop:
	log_warn("client %" PRIu64 ": dropped after a protocol violation", c->id);
	return -EPROTO;
}

/* ---- fault threads ------------------------------------------------------ */

/*
 * With fault_threads > 0, the clients' uffds are not the loop's: each
 * thread below waits on every one of them (EPOLLEXCLUSIVE: a fault wakes
 * one waiting thread, not all), and serves what it reads itself, on the
 * CPU it runs on, with the code the loop runs (fault_serve()), under the
 * daemon lock (lock.h).  A swap-in it starts reads on the thread's own
 * ring (swap_local_reads()), submitted once the lock is let go, and its
 * completion (the CRC check, UFFDIO_COPY, the waiters' wake-up) runs on
 * that thread too.  So a miss no longer wakes the loop's thread at all,
 * and misses of several threads of one client are served on several CPUs
 * at once.  What a fault cannot finish (no room: eviction; an unread
 * event) parks as before, for the loop.
 */

/* epoll tokens of a thread's own descriptors; any other is a client id. */
#define TOKEN_STOP UINT64_MAX
#define TOKEN_RING (UINT64_MAX - 1)
/* Reads one thread may have in flight: as deep as eight threads faulting. */
#define THREAD_RING 64

struct fault_thread {
	struct daemon *d;
	pthread_t tid;
	bool started;
	unsigned no;        /* for the log */
	int epfd;
	int stopfd;
	struct io_local *ring;
};

struct fault_threads {
	unsigned n;
	struct fault_thread t[];
};

/* The client with this id, or NULL: gone since its uffd woke us. */
static struct client *client_by_id(struct daemon *d, uint64_t id)
{
	for (struct client *c = d->clients; c; c = c->next)
		if (c->id == id)
			return c;
	return NULL;
}

/* Test builds: a thread's turn, like each of the loop's, must leave every
 * page invariant true (main.c checks after the loop's). */
static void thread_turn_checked(struct fault_thread *t)
{
#ifdef PAGERD_CHECK_INVARIANTS
	page_check_daemon(t->d);
	if (swapin_check_daemon(t->d))
		abort();
#else
	(void)t;
#endif
}

static void thread_serve(struct fault_thread *t, uint64_t id)
{
	struct client *c;

	daemon_lock();
	c = client_by_id(t->d, id);
	if (c && c->dead && c->uffd >= 0)
		/* Level-triggered: until client.c tears it down, its queue
		 * would wake us again and again. */
		epoll_ctl(t->epfd, EPOLL_CTL_DEL, c->uffd, NULL);
	else if (c && c->uffd >= 0 && fault_serve(c) < 0)
		client_misbehaved(c, "its userfaultfd failed, or it broke the protocol",
				  -EPROTO);
	swap_local_answer();
	thread_turn_checked(t);
	daemon_unlock();
}

static void thread_reap(struct fault_thread *t)
{
	struct io_local_done done[THREAD_RING];
	size_t n;

	do {
		n = io_local_reap(t->ring, done, THREAD_RING);
		if (!n)
			break;
		daemon_lock();
		for (size_t i = 0; i < n; i++)
			done[i].done(done[i].arg, done[i].res);
		swap_local_answer();
		thread_turn_checked(t);
		daemon_unlock();
	} while (n == THREAD_RING);
}

static void *thread_main(void *arg)
{
	struct fault_thread *t = arg;
	bool stopping = false;

	/* Not pinned: on a host whose CPUs other processes share, a thread
	 * pinned to a busy CPU made its faults wait for it while the other
	 * CPU idled (one rand-read round at 4.4 times the kernel's time).
	 * The scheduler puts a woken thread where it can run. */
	swap_local_reads(t->ring);
	for (;;) {
		struct epoll_event ev[16];
		int n = epoll_wait(t->epfd, ev, 16, -1);

		if (n < 0 && errno != EINTR) {
			log_err("fault thread %u: epoll_wait: %m", t->no);
			stopping = true;
		}
		for (int i = 0; i < n; i++) {
			if (ev[i].data.u64 == TOKEN_STOP) {
				/* Level-triggered: from now the thread waits
				 * for its ring alone. */
				epoll_ctl(t->epfd, EPOLL_CTL_DEL, t->stopfd, NULL);
				stopping = true;
			}
			else if (ev[i].data.u64 == TOKEN_RING)
				thread_reap(t);
			else if (!stopping)
				thread_serve(t, ev[i].data.u64);
		}
		if (io_local_submit(t->ring) < 0)
			log_warn_rl(0, "fault thread %u: submitting reads: %m", t->no);
		/* Its reads in flight are completed before it goes: their
		 * pages are in flight until then. */
		if (stopping && !io_local_pending(t->ring))
			break;
	}
	swap_local_reads(NULL);
	return NULL;
}

static void thread_free(struct fault_thread *t)
{
	if (t->epfd >= 0)
		close(t->epfd);
	if (t->stopfd >= 0)
		close(t->stopfd);
	io_local_close(t->ring);
}

static int thread_init(struct daemon *d, struct fault_thread *t, unsigned no)
{
	struct epoll_event ev = { .events = EPOLLIN };
	int e;

	t->d = d;
	t->no = no;
	t->epfd = epoll_create1(EPOLL_CLOEXEC);
	t->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (t->epfd < 0 || t->stopfd < 0)
		return -errno;
	e = io_local_open(&t->ring, THREAD_RING);
	if (e < 0)
		return e;
	ev.data.u64 = TOKEN_STOP;
	if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->stopfd, &ev) < 0)
		return -errno;
	ev.data.u64 = TOKEN_RING;
	if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, io_local_fd(t->ring), &ev) < 0)
		return -errno;
	return 0;
}

int fault_threads_start(struct daemon *d, unsigned n)
{
	struct fault_threads *ft;
	sigset_t all, old;
	int e = 0;

	if (!n)
		return 0;
	ft = calloc(1, sizeof(*ft) + n * sizeof(ft->t[0]));
	if (!ft)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++)
		ft->t[i].epfd = ft->t[i].stopfd = -1;
	for (unsigned i = 0; i < n && !e; i++)
		e = thread_init(d, &ft->t[i], i);
	if (e < 0) {
		log_err("fault threads: %s", strerror(-e));
		for (unsigned i = 0; i < n; i++)
			thread_free(&ft->t[i]);
		free(ft);
		return e;
	}
	ft->n = n;
	d->fthreads = ft;
	/* Signals are the loop's (libevent's handlers). */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	for (unsigned i = 0; i < n; i++) {
		e = -pthread_create(&ft->t[i].tid, NULL, thread_main, &ft->t[i]);
		if (e < 0)
			break;
		ft->t[i].started = true;
		/* In ps, top and /proc/PID/task/N/comm (itest_swap counts
		 * them), named before pagerd says it is ready. */
		pthread_setname_np(ft->t[i].tid, "pagerd-fault");
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (e < 0) {
		log_err("fault threads: %s", strerror(-e));
		fault_threads_stop(d);
		return e;
	}
	log_info("%u fault threads", n);
	return 0;
}

void fault_threads_stop(struct daemon *d)
{
	struct fault_threads *ft = d->fthreads;
	uint64_t one = 1;

	if (!ft)
		return;
	/* No client's faults are served from now (a successor will, or
	 * client_destroy() wakes them); the reads in flight are completed. */
	for (struct client *c = d->clients; c; c = c->next)
		fault_unwatch(c);
	for (unsigned i = 0; i < ft->n; i++)
		if (ft->t[i].started && write(ft->t[i].stopfd, &one, sizeof(one)) < 0)
			log_err("fault threads: stopping: %m");
	/* They complete their reads under the lock. */
	daemon_lock_loop(false);
	for (unsigned i = 0; i < ft->n; i++)
		if (ft->t[i].started)
			pthread_join(ft->t[i].tid, NULL);
	for (unsigned i = 0; i < ft->n; i++)
		thread_free(&ft->t[i]);
	free(ft);
	d->fthreads = NULL;
}

int fault_watch(struct client *c)
{
	struct fault_threads *ft = c->d->fthreads;
	struct epoll_event ev = { .events = EPOLLIN | EPOLLEXCLUSIVE,
				  .data.u64 = c->id };

	for (unsigned i = 0; ft && i < ft->n; i++)
		if (epoll_ctl(ft->t[i].epfd, EPOLL_CTL_ADD, c->uffd, &ev) < 0) {
			int e = -errno;

			while (i--)
				epoll_ctl(ft->t[i].epfd, EPOLL_CTL_DEL, c->uffd, NULL);
			return e;
		}
	return 0;
}

void fault_unwatch(struct client *c)
{
	struct fault_threads *ft = c->d->fthreads;

	for (unsigned i = 0; ft && c->uffd >= 0 && i < ft->n; i++)
		epoll_ctl(ft->t[i].epfd, EPOLL_CTL_DEL, c->uffd, NULL);
}
