/* SPDX-License-Identifier: MIT */
/*
 * Test harness for integration tests: a real pagerd started from the build
 * ($PAGERD) on a socket the test owns, handed over by socket activation so
 * that the test can connect the moment the process exists, with no wait for
 * readiness; and raw protocol access for tests that play a hostile client.
 */
#ifndef PAGER_TEST_HARNESS_H
#define PAGER_TEST_HARNESS_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
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
/* Its two halves, for a caller that must do other work while it waits
 * (poll `s` for the reply). */
int test_raw_send(int s, struct proto_msg *msg, enum proto_type type,
		  size_t raw_len, const int *fds, unsigned nfds);
int test_raw_reply(int s, struct proto_reply *ret);

/* True if files in dir can be opened O_DIRECT (a swap file needs it). */
bool test_direct_io_works(const char *dir);
/* The first of /var/tmp, /tmp and . where O_DIRECT works, into buf:
 * where an itest puts its swap files.  -1: none. */
int test_pick_swap_dir(char *buf, size_t len);
/* Runs an itest's group: ITEST_FILTER (a cmocka filter) picks tests, and
 * SIGALRM after alarm_s ends a run whose fault pagerd never serves. */
#define test_run_group(tests, alarm_s) \
	(alarm(alarm_s), \
	 getenv("ITEST_FILTER") ? cmocka_set_test_filter(getenv("ITEST_FILTER")) : (void)0, \
	 cmocka_run_group_tests(tests, NULL, NULL))

#if defined(assert_int_equal) && defined(PAGER_H)
/* In an itest (cmocka and pager.h included first): a client of the pagerd
 * at sock, never a private one; the test fails if it cannot connect. */
static inline struct pager *test_connect(const char *sock)
{
	struct pager_opts o = { .sz = sizeof(o), .socket_path = sock,
				.flags = PAGER_OPEN_NO_PRIVATE };
	struct pager *p = NULL;

	assert_int_equal(pager_open(&p, &o), 0);
	return p;
}
#endif

/* Reading a page that may be poisoned.  test_on_sigbus is the SIGBUS
 * handler for the caller to install (sigaction) around its reads; it
 * counts into test_bus_seen and makes test_touch_bus() return true
 * instead of reading *w. */
extern volatile sig_atomic_t test_bus_seen;
void test_on_sigbus(int sig);
bool test_touch_bus(volatile uint64_t *w, uint64_t *ret);
/* The test hook (--test-hooks): injects kind at page of region id through
 * a control connection to sock.  0 or -errno. */
int test_inject(const char *sock, uint64_t id, uint64_t page, uint32_t kind);

/* What pagerd holds: open fds, and mappings of memfds. */
int test_count_fds(pid_t pid);
int test_count_memfd_maps(pid_t pid);

/*
 * systemd, as far as pagerd can tell: the test owns the listening socket
 * (pagerd.socket) and a NOTIFY_SOCKET, keeps every descriptor pagerd sends
 * with FDSTORE=1 under its FDNAME (and drops it on FDSTOREREMOVE=1, or when
 * it polls as hung up, as systemd does), and starts each new pagerd the way
 * systemd does: the socket and the stored descriptors from fd 3 on,
 * LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID of the new process,
 * NOTIFY_SOCKET.  pagerd's stderr is appended to `log`.
 *
 * Nothing here sleeps: every wait is a poll() on the notify socket, on
 * pagerd's pidfd or on a descriptor of the caller's, up to a deadline.
 * Calls return 0 (or what they say) or -errno, with a sentence in `err`;
 * what pagerd does wrong by the notify protocol (a name sd_notify(3)
 * forbids, a name stored twice, FDSTORE=1 with no descriptor) is -EPROTO.
 */
#define TEST_SD_STORE_MAX 512

struct test_sd_entry {
	char name[256];
	int fd;
};

struct test_sd {
	char dir[160];
	char sock[192];
	char notify[192];
	char log[192];
	int listen_fd;         /* pagerd.socket's */
	int notify_fd;
	struct test_sd_entry store[TEST_SD_STORE_MAX];
	size_t n;
	unsigned removes;      /* FDSTOREREMOVE=1 messages */
	char removed[4096];    /* their (latest) names, ' '-separated */
	bool ready;            /* READY=1 from the current pagerd */
	char status_text[512]; /* the last STATUS= */
	pid_t pid;             /* the current pagerd (-1: none yet) */
	int pidfd;
	int status;            /* its wait status, once it exited */
	bool exited;           /* reaped: by test_sd_pump(), nobody else */
	char err[2048];
};

/* A fresh directory `prefix`.XXXXXX holding the socket, the notify socket
 * and the log. */
int test_sd_init(struct test_sd *sd, const char *prefix);
/* Closes every descriptor the stand-in holds (the store too); in a forked
 * client, so that it does not pin pagerd's descriptors. */
void test_sd_close(struct test_sd *sd);
/* test_sd_close(), and the directory removed.  pagerd must be gone. */
void test_sd_free(struct test_sd *sd);
/* Starts pagerd with the listening socket and (if with_store) everything in
 * the store, `args` added to its command line (test_sd_spawn()), and waits
 * for READY=1.  -ECHILD: it exited first (sd->status); -ETIMEDOUT. */
int test_sd_start(struct test_sd *sd, bool with_store, const char *const *args,
		  int timeout_ms);
int test_sd_spawn(struct test_sd *sd, bool with_store, const char *const *args);
/* Signals pagerd and waits until it exited (sd->status). */
int test_sd_kill(struct test_sd *sd, int sig, int timeout_ms);
/*
 * Serves the notify socket and watches pagerd (reaping it when it exits)
 * until done(sd, arg) says so (1), `fd` (if >= 0) is readable (2) or
 * timeout_ms pass (0).  With neither, it serves for timeout_ms.
 */
int test_sd_pump(struct test_sd *sd, bool (*done)(struct test_sd *, void *), void *arg,
		 int fd, int timeout_ms);
/* Stored entries: by name; how many belong to clients (prefix "c":
 * c<ID>.*), regions ("r") or all (""); a listing (names, ' '-separated)
 * into buf. */
struct test_sd_entry *test_sd_find(struct test_sd *sd, const char *name);
size_t test_sd_count(const struct test_sd *sd, const char *prefix);
void test_sd_list(const struct test_sd *sd, char *buf, size_t len);
/* Puts fd into the store under name (a hostile store); takes fd. */
int test_sd_put(struct test_sd *sd, const char *name, int fd);
/* pagerd's log so far (its last MiB), in a static buffer. */
char *test_sd_log(const struct test_sd *sd);

#endif
