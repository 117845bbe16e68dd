/* SPDX-License-Identifier: MIT */
/*
 * uffd.c: the userfaultfd ioctls on a client's uffd, and nothing else.
 *
 * These are the raw operations: none of them knows page states or the
 * snapshot rule.  Whatever makes a page writable or replaces its content
 * goes through page.c (page_unprotect(), region_install()),
 * which keeps the rule and the states; the rest of pagerd calls these only
 * for what changes neither (write-protecting, copying in protected,
 * waking, poisoning).
 *
 * Errors are -errno as the kernel gave them: -EAGAIN (an event is unread,
 * nothing was done), -ENOENT (the range is no longer registered), -ESRCH
 * (the process is gone), -EEXIST (the page is there already).
 */
#ifndef PAGERD_UFFD_H
#define PAGERD_UFFD_H

#include <stdbool.h>
#include <stdint.h>

struct client;
struct region;

/* Checks that fd is a userfaultfd and reads the features it was opened
 * with.  Returns 0, -EBADF (not a uffd), or -EOPNOTSUPP (features missing). */
int uffd_check(int fd, uint64_t *ret_features);
/* Wakes the threads waiting in [addr, addr+len); errors are only logged. */
void uffd_wake(struct client *c, uint64_t addr, uint64_t len);
/* UFFDIO_WRITEPROTECT of [page, page+n): protects (wp) or un-protects.
 * Un-protecting lets writes in: only page.c does that (page_unprotect()). */
int uffd_writeprotect(struct region *r, uint64_t page, uint64_t n, bool wp);
/* The same on any uffd (the snapshot's protecting thread has its own dup),
 * protecting [addr, addr+len).  0 or -errno. */
int uffd_writeprotect_range(int uffd, uint64_t addr, uint64_t len);
/* UFFDIO_COPY src to [page, page+n) (absent from the page cache), mapped
 * write-protected (a write then faults: page_unprotect() lets it in); wakes
 * the threads waiting there.  Returns pages done (from the first) or
 * -errno. */
int64_t uffd_copy(struct region *r, uint64_t page, uint64_t n,
		  const void *src);
/* UFFDIO_ZEROPAGE over [page, page+n), mapped writable, waking its threads.
 * Returns the pages filled from the first (a partial fill stops at a page
 * that exists, or at an event), 0 if the first page exists already
 * (nobody woken), or -errno.  Only page.c calls it (page_zero_fill()). */
int64_t uffd_zeropage(struct region *r, uint64_t page, uint64_t n);
/* Marks the page poisoned in the client (SIGBUS on access; UFFDIO_POISON).
 * Returns 0, or -EAGAIN (an event is unread: try again).  Without
 * UFFD_FEATURE_POISON the thread is left waiting: never wrong data. */
int uffd_poison(struct region *r, uint64_t page);

#endif
