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
#include <pthread.h>
#include <sys/epoll.h>

#include "lock.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
/* This thread is the loop, holding the lock outside its waits. */
static __thread bool loop_holds;

void daemon_lock(void)
{
	pthread_mutex_lock(&lock);
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
		pthread_mutex_lock(&lock);
	else
		pthread_mutex_unlock(&lock);
	loop_holds = on;
}

int epoll_wait(int epfd, struct epoll_event *events, int max, int timeout)
{
	int r, e;

	if (!loop_holds)
		return epoll_pwait(epfd, events, max, timeout, NULL);
	pthread_mutex_unlock(&lock);
	r = epoll_pwait(epfd, events, max, timeout, NULL);
	e = errno;
	pthread_mutex_lock(&lock);
	errno = e;
	return r;
}
