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
 * One exception: region_reconcile() (region.c) walks a memfd's holes, a
 * syscall per hole and milliseconds on a fragmented region, with the
 * loop's lock let go (daemon_lock_loop_pause()): that walk reads nothing
 * the lock covers, and the fault threads go on serving every client's
 * faults meanwhile.  What it found is applied under the lock again, each
 * page checked afresh.  Only the loop creates or frees clients and
 * regions, so the region walked stays.
 *
 * Without fault threads nobody takes it: the loop runs as before.
 */
#ifndef PAGERD_LOCK_H
#define PAGERD_LOCK_H

#include <stdbool.h>
#include <stdint.h>

void daemon_lock(void);
void daemon_unlock(void);
/* The calling thread (the loop's) takes the lock and keeps it, except
 * inside epoll_wait() (on), or gives it back for good (off). */
void daemon_lock_loop(bool on);
/* The loop's thread lets the lock go for a while, if it holds it: returns
 * whether it did; daemon_lock_loop_resume(true) takes it back. */
bool daemon_lock_loop_pause(void);
void daemon_lock_loop_resume(bool paused);

/* How often a thread found the lock taken, and how long such threads
 * waited in all (ns): the metrics' pagerd_lock_waits_total and
 * pagerd_lock_wait_seconds_total.  With the lock held. */
void daemon_lock_waits(uint64_t *ret_waits, uint64_t *ret_wait_ns);

/* Makes libevent lock its bases (the fault threads add events to the
 * loop's): before the base is made.  0 or -errno. */
int daemon_lock_libevent(void);

#endif
