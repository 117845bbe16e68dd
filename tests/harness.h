/* SPDX-License-Identifier: MIT */
/*
 * Test harness for integration tests: a real pagerd started from the build
 * ($PAGERD) on a socket the test owns, handed over by socket activation so
 * that the test can connect the moment the process exists, with no wait for
 * readiness; and raw protocol access for tests that play a hostile client.
 */
#ifndef PAGER_TEST_HARNESS_H
#define PAGER_TEST_HARNESS_H

#include <stdbool.h>
#include <sys/types.h>

#include "proto.h"

struct test_pagerd {
	pid_t pid;
	char dir[64];
	char sock[128];
};

/* Exit code a test binary uses to say "skipped" (automake convention). */
#define TEST_SKIP 77

/* Starts pagerd with `args` (NULL-terminated, may be NULL) added to its
 * command line.  Returns 0 or -errno. */
int test_pagerd_start(struct test_pagerd *d, const char *const *args);
/* The same, pagerd running as user `uid` (its primary group, no others), as
 * its unit runs it as user pagerd.  Needs root. */
int test_pagerd_start_as(struct test_pagerd *d, const char *const *args, uid_t uid);
/* SIGTERM, then waits; returns pagerd's exit status (0 = orderly), or -1 if
 * it died of a signal. */
int test_pagerd_stop(struct test_pagerd *d);
/* True while pagerd has not exited (it is not reaped). */
bool test_pagerd_alive(struct test_pagerd *d);

/* A control connection; returns the socket or -errno. */
int test_control_connect(const char *sock);
/* pagerd's STATUS reply over a fresh control connection. */
int test_status(const char *sock, struct proto_reply *ret);
/* Polls pagerd's status until the number of (non-control) clients is `n`
 * or `timeout_ms` passes; returns 0 or -ETIMEDOUT. */
int test_wait_clients(const char *sock, unsigned n, int timeout_ms);

/* A raw client: connect, then send any message and read the reply.
 * test_raw_call fills the header (proto_finish) unless `raw_len` is
 * non-zero, in which case exactly raw_len bytes of msg go out as given. */
int test_raw_connect(const char *sock);
int test_raw_call(int s, struct proto_msg *msg, enum proto_type type,
		  size_t raw_len, const int *fds, unsigned nfds,
		  struct proto_reply *ret);

/* What pagerd holds: open fds, and mappings of memfds. */
int test_count_fds(pid_t pid);
int test_count_memfd_maps(pid_t pid);

#endif
