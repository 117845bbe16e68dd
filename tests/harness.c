/* SPDX-License-Identifier: MIT */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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

int test_raw_call(int s, struct proto_msg *msg, enum proto_type type,
		  size_t raw_len, const int *fds, unsigned nfds,
		  struct proto_reply *ret)
{
	static uint32_t seq = 1000;
	struct proto_msg rep;
	int rfds[PROTO_MAX_FDS];
	unsigned nrfds;
	size_t n = raw_len ? raw_len : proto_finish(msg, type, ++seq);
	ssize_t got;
	int e = proto_send(s, msg, n, fds, nfds);

	if (e < 0)
		return e;
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
