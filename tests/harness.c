/* SPDX-License-Identifier: MIT */
#include "harness.h"

#include <setjmp.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int unix_addr(const char *path, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa->sun_path))
		return -ENAMETOOLONG;
	strcpy(sa->sun_path, path);
	return 0;
}

int test_pagerd_start(struct test_pagerd *d, const char *const *args)
{
	return test_pagerd_start_as(d, args, (uid_t)-1);
}

int test_pagerd_start_as(struct test_pagerd *d, const char *const *args, uid_t uid)
{
	const char *bin = getenv("PAGERD");
	struct sockaddr_un sa;
	char *argv[32];
	int s, argc = 0;

	if (!bin)
		bin = "build/pagerd";
	snprintf(d->dir, sizeof(d->dir), "/tmp/pagerd-test.XXXXXX");
	if (!mkdtemp(d->dir))
		return -errno;
	snprintf(d->sock, sizeof(d->sock), "%s/pagerd.sock", d->dir);
	if (unix_addr(d->sock, &sa) < 0)
		return -ENAMETOOLONG;
	s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(s, 64) < 0) {
		int e = -errno;
		close(s);
		return e;
	}
	argv[argc++] = (char *)bin;
	/* Hermetic: not the host's /etc/pagerd/pagerd.conf. */
	argv[argc++] = (char *)"--config";
	argv[argc++] = (char *)"/dev/null";
	argv[argc++] = (char *)"--socket";
	argv[argc++] = d->sock;
	for (int i = 0; args && args[i] && argc < 30; i++)
		argv[argc++] = (char *)args[i];
	argv[argc] = NULL;

	d->pid = fork();
	if (d->pid < 0) {
		close(s);
		return -errno;
	}
	if (d->pid == 0) {
		char pid[32];

		/* systemd's socket activation protocol: fd 3, LISTEN_PID. */
		if (s == 3)
			fcntl(3, F_SETFD, 0); /* dup2(3, 3) would keep CLOEXEC */
		else if (dup2(s, 3) < 0)
			_exit(127);
		if (uid != (uid_t)-1) {
			struct passwd *pw = getpwuid(uid);

			if (!pw || setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 ||
			    setuid(uid) < 0)
				_exit(126);
		}
		/* A test that fails skips its stop: the daemon must not
		 * outlive the test binary (it would hold its output pipe
		 * open).  Set after setuid(), which clears it. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		snprintf(pid, sizeof(pid), "%d", (int)getpid());
		setenv("LISTEN_FDS", "1", 1);
		setenv("LISTEN_PID", pid, 1);
		execv(bin, argv);
		_exit(127);
	}
	close(s);
	return 0;
}

int test_pagerd_stop(struct test_pagerd *d)
{
	int st;

	kill(d->pid, SIGTERM);
	while (waitpid(d->pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	unlink(d->sock);
	rmdir(d->dir);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

bool test_pagerd_alive(struct test_pagerd *d)
{
	siginfo_t si = { 0 };

	return waitid(P_PID, (id_t)d->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
	       si.si_pid == 0;
}

int test_raw_connect(const char *sock)
{
	struct sockaddr_un sa;
	int s;

	if (unix_addr(sock, &sa) < 0)
		return -ENAMETOOLONG;
	s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = -errno;
		close(s);
		return e;
	}
	return s;
}

int test_raw_send(int s, struct proto_msg *msg, enum proto_type type,
		  size_t raw_len, const int *fds, unsigned nfds)
{
	static _Atomic uint32_t seq = 1000;
	size_t n = raw_len ? raw_len : proto_finish(msg, type, ++seq);

	return proto_send(s, msg, n, fds, nfds);
}

int test_raw_reply(int s, struct proto_reply *ret)
{
	struct proto_msg rep;
	int rfds[PROTO_MAX_FDS];
	unsigned nrfds;
	ssize_t got;
	int e;

	got = proto_recv(s, &rep, rfds, &nrfds);
	for (unsigned i = 0; i < nrfds; i++)
		close(rfds[i]);
	if (got == 0)
		return -ECONNRESET;
	if (got < 0)
		return (int)got;
	e = proto_validate(&rep, (size_t)got);
	if (e < 0)
		return e;
	if (rep.hdr.type != PROTO_REPLY)
		return -EBADMSG;
	if (ret)
		*ret = rep.body.reply;
	return rep.body.reply.status;
}

int test_raw_call(int s, struct proto_msg *msg, enum proto_type type,
		  size_t raw_len, const int *fds, unsigned nfds,
		  struct proto_reply *ret)
{
	int e = test_raw_send(s, msg, type, raw_len, fds, nfds);

	return e < 0 ? e : test_raw_reply(s, ret);
}

int test_control_connect(const char *sock)
{
	struct proto_msg msg = { 0 };
	int s = test_raw_connect(sock), e;

	if (s < 0)
		return s;
	msg.body.hello.flags = PROTO_HELLO_CONTROL;
	msg.body.hello.page_size = (uint32_t)sysconf(_SC_PAGESIZE);
	e = test_raw_call(s, &msg, PROTO_HELLO, 0, NULL, 0, NULL);
	if (e < 0) {
		close(s);
		return e;
	}
	return s;
}

int test_status(const char *sock, struct proto_reply *ret)
{
	struct proto_msg msg = { 0 };
	int s = test_control_connect(sock), e;

	if (s < 0)
		return s;
	e = test_raw_call(s, &msg, PROTO_STATUS, 0, NULL, 0, ret);
	close(s);
	return e;
}

static long elapsed_ms(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

int test_wait_clients(const char *sock, unsigned n, int timeout_ms)
{
	struct timespec t0;
	struct proto_reply st;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		if (test_status(sock, &st) == 0 && st.clients == n)
			return 0;
		/* Each status round trip is itself the wait: pagerd answers
		 * only after handling what was queued before it. */
	} while (elapsed_ms(&t0) < timeout_ms);
	return -ETIMEDOUT;
}

int test_count_fds(pid_t pid)
{
	char path[64];
	struct dirent *e;
	DIR *dir;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	dir = opendir(path);
	if (!dir)
		return -errno;
	while ((e = readdir(dir)))
		if (e->d_name[0] != '.')
			n++;
	closedir(dir);
	return n;
}

int test_count_memfd_maps(pid_t pid)
{
	char path[64], line[512];
	FILE *f;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, "/memfd:"))
			n++;
	fclose(f);
	return n;
}

/* ---- systemd, as far as pagerd can tell ---------------------------------- */

static int sd_fail(struct test_sd *sd, int e, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int sd_fail(struct test_sd *sd, int e, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(sd->err, sizeof(sd->err), fmt, ap);
	va_end(ap);
	return e;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int test_sd_init(struct test_sd *sd, const char *prefix)
{
	struct sockaddr_un sa;

	memset(sd, 0, sizeof(*sd));
	sd->listen_fd = sd->notify_fd = sd->pidfd = -1;
	sd->pid = -1;
	if ((size_t)snprintf(sd->dir, sizeof(sd->dir), "%s.XXXXXX", prefix) >= sizeof(sd->dir)) {
		sd->dir[0] = '\0';
		return sd_fail(sd, -ENAMETOOLONG, "%s: too long", prefix);
	}
	if (!mkdtemp(sd->dir)) {
		int e = sd_fail(sd, -errno, "mkdtemp %s: %m", sd->dir);

		sd->dir[0] = '\0'; /* nothing to remove */
		return e;
	}
	snprintf(sd->sock, sizeof(sd->sock), "%s/pagerd.sock", sd->dir);
	snprintf(sd->notify, sizeof(sd->notify), "%s/notify", sd->dir);
	snprintf(sd->log, sizeof(sd->log), "%s/pagerd.log", sd->dir);
	if (unix_addr(sd->sock, &sa) < 0)
		return sd_fail(sd, -ENAMETOOLONG, "%s: too long for a socket", sd->sock);
	sd->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (sd->listen_fd < 0 || bind(sd->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(sd->listen_fd, 64) < 0)
		return sd_fail(sd, -errno, "%s: %m", sd->sock);
	if (unix_addr(sd->notify, &sa) < 0)
		return sd_fail(sd, -ENAMETOOLONG, "%s: too long for a socket", sd->notify);
	sd->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (sd->notify_fd < 0 || bind(sd->notify_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return sd_fail(sd, -errno, "%s: %m", sd->notify);
	return 0;
}

void test_sd_close(struct test_sd *sd)
{
	for (size_t i = 0; i < sd->n; i++)
		close(sd->store[i].fd);
	sd->n = 0;
	if (sd->listen_fd >= 0)
		close(sd->listen_fd);
	if (sd->notify_fd >= 0)
		close(sd->notify_fd);
	if (sd->pidfd >= 0)
		close(sd->pidfd);
	sd->listen_fd = sd->notify_fd = sd->pidfd = -1;
}

void test_sd_free(struct test_sd *sd)
{
	char cmd[200];

	test_sd_close(sd);
	if (!sd->dir[0])
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", sd->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", sd->dir);
}

struct test_sd_entry *test_sd_find(struct test_sd *sd, const char *name)
{
	for (size_t i = 0; i < sd->n; i++)
		if (strcmp(sd->store[i].name, name) == 0)
			return &sd->store[i];
	return NULL;
}

size_t test_sd_count(const struct test_sd *sd, const char *prefix)
{
	size_t k = 0, n = strlen(prefix);

	for (size_t i = 0; i < sd->n; i++)
		k += strncmp(sd->store[i].name, prefix, n) == 0 &&
		     (!n || (sd->store[i].name[n] >= '0' && sd->store[i].name[n] <= '9'));
	return k;
}

void test_sd_list(const struct test_sd *sd, char *buf, size_t len)
{
	size_t at = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < sd->n && at < len; i++)
		at += (size_t)snprintf(buf + at, len - at, "%s%s", i ? " " : "",
				       sd->store[i].name);
}

int test_sd_put(struct test_sd *sd, const char *name, int fd)
{
	if (fd < 0)
		return sd_fail(sd, -EBADF, "no descriptor for '%s'", name);
	if (sd->n == TEST_SD_STORE_MAX) {
		close(fd);
		return sd_fail(sd, -ENOSPC, "the store is full (%d)", TEST_SD_STORE_MAX);
	}
	snprintf(sd->store[sd->n].name, sizeof(sd->store[sd->n].name), "%s", name);
	sd->store[sd->n++].fd = fd;
	return 0;
}

/* One datagram from pagerd, handled as systemd would
 * (service_notify_message()): 1 handled, 0 none waiting, or -errno. */
static int sd_recv_one(struct test_sd *sd)
{
	char buf[4096], cbuf[CMSG_SPACE(sizeof(int) * 16)];
	struct iovec iov = { buf, sizeof(buf) - 1 };
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = cbuf, .msg_controllen = sizeof(cbuf),
	};
	int fds[16], nfds = 0, e = 0;
	char name[256] = "stored";
	bool store = false, remove = false;
	ssize_t n = recvmsg(sd->notify_fd, &mh, MSG_CMSG_CLOEXEC);

	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? 0 :
		       sd_fail(sd, -errno, "recvmsg on the notify socket: %m");
	buf[n] = '\0';
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));

			memcpy(fds + nfds, CMSG_DATA(c), (size_t)k * sizeof(int));
			nfds += k;
		}
	}
	if (mh.msg_flags & MSG_CTRUNC) {
		e = sd_fail(sd, -EPROTO, "more descriptors in one message than systemd takes");
		goto drop;
	}
	for (char *l = buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		size_t len = strcspn(l, "\n");

		if (strncmp(l, "FDSTORE=1", len) == 0 && len == 9)
			store = true;
		else if (strncmp(l, "FDSTOREREMOVE=1", len) == 0 && len == 15)
			remove = true;
		else if (strncmp(l, "READY=1", len) == 0 && len == 7)
			sd->ready = true;
		else if (strncmp(l, "STATUS=", 7) == 0)
			snprintf(sd->status_text, sizeof(sd->status_text), "%.*s", (int)(len - 7),
				 l + 7);
		else if (strncmp(l, "FDNAME=", 7) == 0) {
			if (len - 7 >= sizeof(name)) {
				e = sd_fail(sd, -EPROTO, "FDNAME of %zu characters", len - 7);
				goto drop;
			}
			memcpy(name, l + 7, len - 7);
			name[len - 7] = '\0';
		}
	}
	/* sd_notify(3): at most 255 characters, no ':' or control ones. */
	for (const char *p = name; *p; p++)
		if (*p == ':' || (unsigned char)*p < 0x20 || *p == 0x7f) {
			e = sd_fail(sd, -EPROTO, "FDNAME '%s' is not a valid name", name);
			goto drop;
		}
	if (store) {
		if (nfds == 0) {
			e = sd_fail(sd, -EPROTO, "FDSTORE=1 for '%s' with no descriptor", name);
			goto drop;
		}
		for (int i = 0; i < nfds; i++) {
			if (test_sd_find(sd, name)) {
				char list[2048];

				test_sd_list(sd, list, sizeof(list));
				e = sd_fail(sd, -EPROTO, "'%s' stored twice (never removed, or "
					    "stored again); store (%zu): %s", name, sd->n, list);
				for (; i < nfds; i++)
					close(fds[i]);
				return e;
			}
			e = test_sd_put(sd, name, fds[i]);
			if (e < 0) {
				for (i++; i < nfds; i++)
					close(fds[i]);
				return e;
			}
		}
		return 1;
	}
	if (remove) {
		sd->removes++;
		/* The latest names: a long run starts the list over. */
		if (strlen(sd->removed) + strlen(name) + 2 > sizeof(sd->removed))
			sd->removed[0] = '\0';
		strcat(sd->removed, name);
		strcat(sd->removed, " ");
		for (size_t i = 0; i < sd->n;) {
			if (strcmp(sd->store[i].name, name) == 0) {
				close(sd->store[i].fd);
				sd->store[i] = sd->store[--sd->n];
			} else {
				i++;
			}
		}
	}
	e = 1;
drop:
	for (int i = 0; i < nfds; i++)
		close(fds[i]); /* fds without FDSTORE=1: systemd closes them */
	return e;
}

/*
 * systemd drops a stored descriptor that reports POLLHUP or POLLERR (a
 * connection whose peer closed; a userfaultfd that is not O_NONBLOCK polls
 * as an error).  So do we.
 */
static void sd_sweep(struct test_sd *sd)
{
	for (size_t i = 0; i < sd->n;) {
		struct pollfd p = { .fd = sd->store[i].fd };

		if (poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR))) {
			close(sd->store[i].fd);
			sd->store[i] = sd->store[--sd->n];
		} else {
			i++;
		}
	}
}

/* Everything pagerd sent so far, handled. */
static int sd_drain(struct test_sd *sd)
{
	struct pollfd p = { .fd = sd->notify_fd, .events = POLLIN };
	int e;

	while (poll(&p, 1, 0) == 1)
		if ((e = sd_recv_one(sd)) <= 0)
			return e;
	return 0;
}

int test_sd_pump(struct test_sd *sd, bool (*done)(struct test_sd *, void *), void *arg,
		 int fd, int timeout_ms)
{
	long long deadline = now_ms() + timeout_ms;
	int e;

	for (;;) {
		struct pollfd p[3] = {
			{ .fd = sd->notify_fd, .events = POLLIN },
			{ .fd = sd->exited ? -1 : sd->pidfd, .events = POLLIN },
			{ .fd = fd, .events = POLLIN },
		};
		int left = (int)(deadline - now_ms());

		/* Everything pagerd sent is handled before we decide. */
		if ((e = sd_drain(sd)) < 0)
			return e;
		sd_sweep(sd);
		if (done && done(sd, arg))
			return 1;
		if (left <= 0)
			return 0;
		if (poll(p, 3, left) < 0 && errno != EINTR)
			return sd_fail(sd, -errno, "poll: %m");
		if (p[1].revents) {
			if (waitpid(sd->pid, &sd->status, 0) != sd->pid)
				return sd_fail(sd, -ECHILD, "waitpid(pagerd %d): %m", (int)sd->pid);
			sd->exited = true;
			close(sd->pidfd);
			sd->pidfd = -1;
			if ((e = sd_drain(sd)) < 0)
				return e;
		}
		if (fd >= 0 && p[2].revents)
			return 2;
	}
}

static bool sd_ready_or_exited(struct test_sd *sd, void *arg)
{
	(void)arg;
	return sd->ready || sd->exited;
}

static bool sd_exited(struct test_sd *sd, void *arg)
{
	(void)arg;
	return sd->exited;
}

int test_sd_spawn(struct test_sd *sd, bool with_store, const char *const *args)
{
	const char *bin = getenv("PAGERD") ? getenv("PAGERD") : "build/pagerd";
	size_t nfds = 1 + (with_store ? sd->n : 0);
	int src[TEST_SD_STORE_MAX + 1], e;
	static char names[TEST_SD_STORE_MAX * 260];
	char *argv[40];
	int argc = 0;

	if (sd->pid > 0 && !sd->exited)
		return sd_fail(sd, -EBUSY, "pagerd %d still runs", (int)sd->pid);
	src[0] = sd->listen_fd;
	snprintf(names, sizeof(names), "pagerd.socket");
	for (size_t i = 0; with_store && i < sd->n; i++) {
		src[1 + i] = sd->store[i].fd;
		strcat(names, ":");
		strcat(names, sd->store[i].name);
	}
	argv[argc++] = (char *)bin;
	argv[argc++] = (char *)"--config";
	argv[argc++] = (char *)"/dev/null";
	argv[argc++] = (char *)"--socket";
	argv[argc++] = sd->sock;
	for (int i = 0; args && args[i] && argc < 39; i++)
		argv[argc++] = (char *)args[i];
	argv[argc] = NULL;

	sd->ready = false;
	sd->exited = false;
	sd->pid = fork();
	if (sd->pid < 0)
		return sd_fail(sd, -errno, "fork: %m");
	if (sd->pid == 0) {
		char num[32];
		int high[TEST_SD_STORE_MAX + 1];
		int log = open(sd->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

		if (log < 0 || dup2(log, 2) < 0)
			_exit(127);
		/* A test that dies (a timeout) takes its pagerd along. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		/* Out of the way first: sources may sit where targets go. */
		for (size_t i = 0; i < nfds; i++)
			if ((high[i] = fcntl(src[i], F_DUPFD_CLOEXEC, 1000)) < 0)
				_exit(127);
		for (size_t i = 0; i < nfds; i++)
			if (dup2(high[i], 3 + (int)i) < 0)
				_exit(127);
		/* Nothing else, as systemd gives a service: what the test
		 * inherited (or a previous pagerd got) must not count as
		 * pagerd's. */
		close_range(3 + (unsigned)nfds, ~0U, 0);
		snprintf(num, sizeof(num), "%zu", nfds);
		setenv("LISTEN_FDS", num, 1);
		setenv("LISTEN_FDNAMES", names, 1);
		snprintf(num, sizeof(num), "%d", (int)getpid());
		setenv("LISTEN_PID", num, 1);
		setenv("NOTIFY_SOCKET", sd->notify, 1);
		setenv("PAGERD_SWAP_DIR", sd->dir, 1);
		execv(bin, argv);
		_exit(127);
	}
	sd->pidfd = (int)syscall(SYS_pidfd_open, sd->pid, 0);
	if (sd->pidfd < 0) {
		e = -errno;
		kill(sd->pid, SIGKILL);
		waitpid(sd->pid, &sd->status, 0);
		sd->exited = true;
		return sd_fail(sd, e, "pidfd_open: %s", strerror(-e));
	}
	return 0;
}

int test_sd_start(struct test_sd *sd, bool with_store, const char *const *args,
		  int timeout_ms)
{
	int e = test_sd_spawn(sd, with_store, args);

	if (e < 0)
		return e;
	e = test_sd_pump(sd, sd_ready_or_exited, NULL, -1, timeout_ms);
	if (e < 0)
		return e;
	if (e == 0)
		return sd_fail(sd, -ETIMEDOUT, "no READY=1 from pagerd %d in %d ms",
			       (int)sd->pid, timeout_ms);
	if (!sd->ready)
		return sd_fail(sd, -ECHILD, "pagerd exited before READY=1 (status %d)",
			       sd->status);
	return 0;
}

int test_sd_kill(struct test_sd *sd, int sig, int timeout_ms)
{
	int e;

	if (sd->pid <= 0 || sd->exited)
		return sd_fail(sd, -ESRCH, "no pagerd to signal");
	if (kill(sd->pid, sig) < 0)
		return sd_fail(sd, -errno, "kill(%d, %d): %m", (int)sd->pid, sig);
	e = test_sd_pump(sd, sd_exited, NULL, -1, timeout_ms);
	if (e < 0)
		return e;
	if (e == 0)
		return sd_fail(sd, -ETIMEDOUT, "pagerd %d did not exit within %d ms of "
			       "signal %d", (int)sd->pid, timeout_ms, sig);
	return 0;
}

char *test_sd_log(const struct test_sd *sd)
{
	static char buf[1 << 20];
	int fd = open(sd->log, O_RDONLY | O_CLOEXEC);
	off_t size = fd >= 0 ? lseek(fd, 0, SEEK_END) : 0;
	size_t len = 0;
	ssize_t n;

	if (size > (off_t)sizeof(buf) - 1)
		lseek(fd, size - (off_t)sizeof(buf) + 1, SEEK_SET);
	else if (fd >= 0)
		lseek(fd, 0, SEEK_SET);
	while (fd >= 0 && len < sizeof(buf) - 1 &&
	       (n = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
		len += (size_t)n;
	if (fd >= 0)
		close(fd);
	buf[len] = '\0';
	return buf;
}

bool test_direct_io_works(const char *dir)
{
	char f[200];
	int fd;

	snprintf(f, sizeof(f), "%s/pagerd-itest.%d", dir, (int)getpid());
	fd = open(f, O_RDWR | O_CREAT | O_EXCL | O_DIRECT | O_CLOEXEC, 0600);
	if (fd < 0)
		return false;
	close(fd);
	unlink(f);
	return true;
}

int test_pick_swap_dir(char *buf, size_t len)
{
	static const char *const dirs[] = { "/var/tmp", "/tmp", "." };

	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
		if (test_direct_io_works(dirs[i])) {
			snprintf(buf, len, "%s", dirs[i]);
			return 0;
		}
	return -1;
}

static sigjmp_buf test_bus_jmp;
volatile sig_atomic_t test_bus_seen;

void test_on_sigbus(int sig)
{
	(void)sig;
	test_bus_seen++;
	siglongjmp(test_bus_jmp, 1);
}

bool test_touch_bus(volatile uint64_t *w, uint64_t *ret)
{
	if (sigsetjmp(test_bus_jmp, 1))
		return true;
	*ret = w[0];
	return false;
}

int test_inject(const char *sock, uint64_t id, uint64_t page, uint32_t kind)
{
	struct proto_msg m = { 0 };
	int s = test_control_connect(sock), e;

	if (s < 0)
		return s;
	m.body.test_inject.region_id = id;
	m.body.test_inject.page = page;
	m.body.test_inject.kind = kind;
	e = test_raw_call(s, &m, PROTO_TEST_INJECT, 0, NULL, 0, NULL);
	close(s);
	return e;
}
