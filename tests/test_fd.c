/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the descriptor helpers (common/fd.h): fd_nonblock() sets
 * and clears O_NONBLOCK alone, keeps the other status flags, is shared by
 * a dup (one open file description), and reports a bad fd as -EBADF.
 */
#include <setjmp.h> /* cmocka.h needs these four first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "fd.h"

static int flags(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	assert_true(fl >= 0);
	return fl;
}

static void test_set_and_clear(void **state)
{
	int p[2];

	(void)state;
	assert_int_equal(pipe(p), 0);
	assert_false(flags(p[0]) & O_NONBLOCK);
	assert_int_equal(fd_nonblock(p[0], true), 0);
	assert_true(flags(p[0]) & O_NONBLOCK);
	/* Twice is fine, and it really does not block now. */
	assert_int_equal(fd_nonblock(p[0], true), 0);
	{
		char c;

		assert_int_equal(read(p[0], &c, 1), -1);
		assert_int_equal(errno, EAGAIN);
	}
	assert_int_equal(fd_nonblock(p[0], false), 0);
	assert_false(flags(p[0]) & O_NONBLOCK);
	assert_false(flags(p[1]) & O_NONBLOCK); /* the other end: untouched */
	close(p[0]);
	close(p[1]);
}

/* The other status flags stay: the tests' old F_SETFL, O_NONBLOCK wiped
 * them (here O_APPEND, which would have made writes land elsewhere). */
static void test_keeps_other_flags(void **state)
{
	char path[] = "/tmp/test_fd.XXXXXX";
	int fd = mkstemp(path), dup_fd;

	(void)state;
	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(fcntl(fd, F_SETFL, O_APPEND), 0);
	assert_int_equal(fd_nonblock(fd, true), 0);
	assert_int_equal(flags(fd) & (O_APPEND | O_NONBLOCK), O_APPEND | O_NONBLOCK);
	/* One open file description: a dup (or an fd passed over
	 * SCM_RIGHTS) sees the change. */
	dup_fd = dup(fd);
	assert_true(dup_fd >= 0);
	assert_true(flags(dup_fd) & O_NONBLOCK);
	assert_int_equal(fd_nonblock(dup_fd, false), 0);
	assert_int_equal(flags(fd) & (O_APPEND | O_NONBLOCK), O_APPEND);
	close(dup_fd);
	close(fd);
}

static void test_bad_fd(void **state)
{
	int p[2];

	(void)state;
	assert_int_equal(fd_nonblock(-1, true), -EBADF);
	assert_int_equal(pipe(p), 0);
	close(p[0]);
	close(p[1]);
	assert_int_equal(fd_nonblock(p[0], false), -EBADF);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_set_and_clear),
		cmocka_unit_test(test_keeps_other_flags),
		cmocka_unit_test(test_bad_fd),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
