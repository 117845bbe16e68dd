/* SPDX-License-Identifier: MIT */
/*
 * Small descriptor helpers shared by pagerd, libpager, pagerctl and the
 * tests.  Header-only: each is a few lines, and every program links it
 * without another object in its list.
 */
#ifndef PAGER_FD_H
#define PAGER_FD_H

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>

/*
 * Sets or clears O_NONBLOCK on fd, keeping its other status flags.  The
 * flag belongs to the open file description: a descriptor received over
 * SCM_RIGHTS shares it with the sender's copy.  Returns 0 or -errno (the
 * flags are then unchanged).
 */
static inline int fd_nonblock(int fd, bool nonblock)
{
	int fl = fcntl(fd, F_GETFL);
	int want;

	if (fl < 0)
		return -errno;
	want = nonblock ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
	if (want != fl && fcntl(fd, F_SETFL, want) < 0)
		return -errno;
	return 0;
}

#endif /* PAGER_FD_H */
