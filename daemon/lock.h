/* SPDX-License-Identifier: MIT */
/*
 * The daemon lock: with fault threads (fault.c, fault_threads > 0), every
 * piece of pagerd's state — page states, counts, limits, the swap store's
 * slots, the I/O engine, every client and region — belongs to whoever
 * holds it.  The loop's thread holds it from daemon_lock_loop(true) on,
 * dropping it only while it waits for events (epoll_wait(), below); a
 * fault thread takes it for each batch of a uffd's messages and each
 * batch of its reads' completions, and does nothing but wait and read a
 * disk without it.  So each of the loop's callbacks, and each of a fault
 * thread's turns, runs alone, as everything did on one thread: the code
 * below the lock needs no locking of its own.
 *
 * Without fault threads nobody takes it: the loop runs as before.
 */
#ifndef PAGERD_LOCK_H
#define PAGERD_LOCK_H

#include <stdbool.h>

void daemon_lock(void);
void daemon_unlock(void);
/* The calling thread (the loop's) takes the lock and keeps it, except
 * inside epoll_wait() (on), or gives it back for good (off). */
void daemon_lock_loop(bool on);

/* Makes libevent lock its bases (the fault threads add events to the
 * loop's): before the base is made.  0 or -errno. */
int daemon_lock_libevent(void);

#endif
