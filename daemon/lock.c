/* SPDX-License-Identifier: MIT */
/*
 * The daemon lock (lock.h).
 *
 * The loop's thread must not hold the lock while it sleeps, or no fault
 * thread could ever run; and it must hold it through every callback,
 * libevent's own bookkeeping of the events they add and remove included.
 * libevent 2.1 has no hook around its wait, so pagerd supplies
 * epoll_wait() itself: libevent's epoll backend calls it, with libevent's
 * own base lock released, and this one drops the daemon lock around the
 * kernel's wait when the calling thread is the loop holding it.  Every
 * other caller (the fault threads) waits with nothing held.  Lock order:
 * the daemon lock before libevent's, on every thread.
 */
#include <errno.h>
#include <event2/thread.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/time.h>
#include <time.h>

#include "lock.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
/* This thread is the loop, holding the lock outside its waits. */
static __thread bool loop_holds;
/* Acquisitions that found the lock taken, and their time waiting: written
 * by whoever then holds the lock (daemon_lock_waits()). */
static uint64_t waits, wait_ns;

static uint64_t mono_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Takes the lock; a wait for it is counted (a clock read only then). */
static void take(void)
{
	uint64_t t0;

	if (pthread_mutex_trylock(&lock) == 0)
		return;
	t0 = mono_ns();
	pthread_mutex_lock(&lock);
	waits++;
	wait_ns += mono_ns() - t0;
}

void daemon_lock(void)
{
	take();
}

void daemon_lock_waits(uint64_t *ret_waits, uint64_t *ret_wait_ns)
{
	*ret_waits = waits;
	*ret_wait_ns = wait_ns;
}

void daemon_unlock(void)
{
	pthread_mutex_unlock(&lock);
}

void daemon_lock_loop(bool on)
{
	if (on == loop_holds)
		return;
	if (on)
		take();
	else
		pthread_mutex_unlock(&lock);
	loop_holds = on;
}

bool daemon_lock_loop_pause(void)
{
	if (!loop_holds)
		return false;
	daemon_lock_loop(false);
	return true;
}

void daemon_lock_loop_resume(bool paused)
{
	if (paused)
		daemon_lock_loop(true);
}

int epoll_wait(int epfd, struct epoll_event *events, int max, int timeout)
{
	int r, e;

	if (!loop_holds)
		return epoll_pwait(epfd, events, max, timeout, NULL);
	pthread_mutex_unlock(&lock);
	r = epoll_pwait(epfd, events, max, timeout, NULL);
	e = errno;
	take();
	errno = e;
	return r;
}

/*
 * libevent's locks, for the loop's base that the fault threads add events
 * to: what its libevent_pthreads would set (evthread_pthread.c), here so
 * that pagerd needs no library more than the loop did.
 */
static pthread_mutexattr_t recursive;

static void *ev_lock_alloc(unsigned type)
{
	pthread_mutex_t *m = malloc(sizeof(*m));

	if (m && pthread_mutex_init(m, type & EVTHREAD_LOCKTYPE_RECURSIVE ?
					 &recursive : NULL)) {
		free(m);
		m = NULL;
	}
	return m;
}

static void ev_lock_free(void *m, unsigned type)
{
	(void)type;
	pthread_mutex_destroy(m);
	free(m);
}

static int ev_lock(unsigned mode, void *m)
{
	return mode & EVTHREAD_TRY ? pthread_mutex_trylock(m) : pthread_mutex_lock(m);
}

static int ev_unlock(unsigned mode, void *m)
{
	(void)mode;
	return pthread_mutex_unlock(m);
}

static unsigned long ev_thread_id(void)
{
	return (unsigned long)pthread_self();
}

static void *ev_cond_alloc(unsigned flags)
{
	pthread_cond_t *c = malloc(sizeof(*c));

	(void)flags;
	if (c && pthread_cond_init(c, NULL)) {
		free(c);
		c = NULL;
	}
	return c;
}

static void ev_cond_free(void *c)
{
	pthread_cond_destroy(c);
	free(c);
}

static int ev_cond_signal(void *c, int broadcast)
{
	return broadcast ? pthread_cond_broadcast(c) : pthread_cond_signal(c);
}

/* 0 when signalled, 1 on timeout, -1 on error (libevent's contract). */
static int ev_cond_wait(void *c, void *m, const struct timeval *tv)
{
	struct timespec until;
	int r;

	if (!tv)
		return pthread_cond_wait(c, m) ? -1 : 0;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += tv->tv_sec;
	until.tv_nsec += tv->tv_usec * 1000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	r = pthread_cond_timedwait(c, m, &until);
	return r == ETIMEDOUT ? 1 : r ? -1 : 0;
}

int daemon_lock_libevent(void)
{
	static const struct evthread_lock_callbacks locks = {
		EVTHREAD_LOCK_API_VERSION, EVTHREAD_LOCKTYPE_RECURSIVE,
		ev_lock_alloc, ev_lock_free, ev_lock, ev_unlock,
	};
	static const struct evthread_condition_callbacks conds = {
		EVTHREAD_CONDITION_API_VERSION,
		ev_cond_alloc, ev_cond_free, ev_cond_signal, ev_cond_wait,
	};

	if (pthread_mutexattr_init(&recursive) ||
	    pthread_mutexattr_settype(&recursive, PTHREAD_MUTEX_RECURSIVE))
		return -ENOMEM;
	evthread_set_id_callback(ev_thread_id);
	if (evthread_set_lock_callbacks(&locks) < 0 ||
	    evthread_set_condition_callbacks(&conds) < 0)
		return -EINVAL;
	return 0;
}
