/* SPDX-License-Identifier: MIT */
/*
 * The connection to pagerd: finding a daemon (or starting a private one),
 * and the hello handshake that hands over our userfaultfd.  The
 * request/reply transport every call uses is call.c's, below this file and
 * the region and agent code alike.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

extern char **environ;

#ifndef PAGERD_INSTALL_PATH
#define PAGERD_INSTALL_PATH "/usr/local/sbin/pagerd"
#endif

static int connect_unix(const char *path, int *ret_sock)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int s, r;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		close(s);
		return r;
	}
	*ret_sock = s;
	return 0;
}

/* The pagerd binary for a private daemon: $PAGERD, else beside this library
 * (the build tree) or in the sbin/ of the prefix it was installed to, else
 * the configured install path, else whatever $PATH finds. */
static void find_pagerd(char *buf, size_t size)
{
	const char *env = getenv("PAGERD");
	Dl_info dl;

	if (env && *env) {
		snprintf(buf, size, "%s", env);
		return;
	}
	if (dladdr((void *)pager_open, &dl) && dl.dli_fname) {
		char lib[PATH_MAX];

		if (realpath(dl.dli_fname, lib)) {
			const char *dir = dirname(lib);
			static const char *const rel[] = {
				"pagerd", "../sbin/pagerd", "../../sbin/pagerd",
			};
			for (size_t i = 0; i < sizeof(rel) / sizeof(rel[0]); i++) {
				snprintf(buf, size, "%s/%s", dir, rel[i]);
				if (access(buf, X_OK) == 0)
					return;
			}
		}
	}
	if (access(PAGERD_INSTALL_PATH, X_OK) == 0) {
		snprintf(buf, size, "%s", PAGERD_INSTALL_PATH);
		return;
	}
	snprintf(buf, size, "pagerd");
}

int pager_spawn_private(const struct pager_opts *opts, int *ret_sock,
			pid_t *ret_pid)
{
	char bin[PATH_MAX], limit[32] = "", *argv[16];
	const char *swap = NULL, *env;
	posix_spawn_file_actions_t fa;
	int sv[2], r, argc = 0;
	uint64_t mem;
	pid_t pid;

	mem = opts->memory_limit;
	swap = opts->swap_path;
	if (!mem && (env = getenv("PAGER_MEMORY_LIMIT")) && *env)
		snprintf(limit, sizeof(limit), "%s", env);
	else if (mem)
		snprintf(limit, sizeof(limit), "%" PRIu64, mem);
	if (!swap && (env = getenv("PAGER_SWAP")) && *env)
		swap = env;

	find_pagerd(bin, sizeof(bin));
	argv[argc++] = bin;
	argv[argc++] = (char *)"--private-fd=3";
	if (limit[0]) {
		argv[argc++] = (char *)"--memory-limit";
		argv[argc++] = limit;
	}
	if (swap) {
		argv[argc++] = (char *)"--swap";
		argv[argc++] = (char *)swap;
	}
	argv[argc] = NULL;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	r = posix_spawn_file_actions_init(&fa);
	if (r == 0)
		r = posix_spawn_file_actions_adddup2(&fa, sv[1], 3);
	if (r == 0) {
		/* posix_spawnp searches $PATH only for a bare name. */
		r = posix_spawnp(&pid, bin, &fa, NULL, argv, environ);
	}
	posix_spawn_file_actions_destroy(&fa);
	close(sv[1]);
	if (r != 0) {
		close(sv[0]);
		return -r;
	}
	*ret_sock = sv[0];
	*ret_pid = pid;
	return 0;
}

static int pager_connect(struct pager *p, const struct pager_opts *opts)
{
	uint32_t flags = opts->flags;
	const char *path = opts->socket_path;
	int r;

	if (!(flags & PAGER_OPEN_FORCE_PRIVATE)) {
		if (!path || !*path)
			path = getenv("PAGER_SOCKET");
		if (path && *path)
			return connect_unix(path, &p->sock);
		r = connect_unix(PAGER_SYSTEM_SOCKET, &p->sock);
		if (r == 0 || (r != -ENOENT && r != -ECONNREFUSED))
			return r;
		if (flags & PAGER_OPEN_NO_PRIVATE)
			return -ENOENT;
	}
	r = pager_spawn_private(opts, &p->sock, &p->private_pid);
	if (r == 0)
		p->info_flags |= PAGER_INFO_PRIVATE;
	return r;
}

/*
 * Hands pagerd our page tables: whether a page of ours is mapped is how its
 * Clock hand sees references.  pagerd cannot always open our
 * /proc/PID/pagemap itself (the kernel lets only a process that may trace
 * us: under its unit pagerd runs as user pagerd); a pagemap we opened stays
 * readable by whoever we pass it to.  Without it (no /proc, an older pagerd
 * that answers -EOPNOTSUPP) eviction has less to go by but works.
 */
static void pager_send_pagemap(struct pager *p)
{
	struct proto_msg msg = { 0 };
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return;
	(void)pager_call_locked(p, &msg, PROTO_PAGEMAP, &fd, 1, NULL);
	close(fd);
}

static void pager_free(struct pager *p)
{
	pager_agent_stop(p);
	if (p->sock >= 0)
		close(p->sock);
	if (p->uffd >= 0)
		close(p->uffd);
	if (p->private_pid > 0) {
		/* Our end closed: the daemon sees end of stream and exits. */
		while (waitpid(p->private_pid, NULL, 0) < 0 && errno == EINTR)
			;
	}
	pthread_mutex_destroy(&p->lock);
	free(p);
}

PAGER_EXPORT int pager_open(struct pager **ret, const struct pager_opts *opts)
{
	struct proto_msg msg = { 0 };
	struct proto_reply reply;
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	struct pager *p;
	pid_t sender = 0;
	bool kernel, passcred;
	int r;

	struct pager_opts o = { 0 };

	if (!ret || (opts && opts->sz < sizeof(size_t)))
		return -EINVAL;
	/* Read only as much of the caller's struct as it says it has. */
	if (opts)
		memcpy(&o, opts, opts->sz < sizeof(o) ? opts->sz : sizeof(o));
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	pthread_mutex_init(&p->lock, NULL);
	p->sock = p->uffd = p->agent_sock = -1;
	p->page_size = (size_t)sysconf(_SC_PAGESIZE);

	r = pager_uffd_open(&p->uffd, &p->uffd_features, &kernel);
	if (r < 0)
		goto fail;
	if (kernel)
		p->info_flags |= PAGER_INFO_KERNEL_FAULTS;
	r = pager_connect(p, &o);
	if (r < 0)
		goto fail;
	/*
	 * Who pagerd is: the process that answers our hello, as the kernel
	 * names it (SCM_CREDENTIALS, in our pid namespace).  SO_PEERCRED
	 * would name whoever made the listening socket (systemd, under
	 * socket activation) or the socketpair (us).  SO_PEERCRED remains
	 * for a kernel that does not pass credentials.
	 */
	if (p->private_pid > 0)
		p->daemon_pid = p->private_pid;
	else if (getsockopt(p->sock, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0)
		p->daemon_pid = cred.pid;
	passcred = setsockopt(p->sock, SOL_SOCKET, SO_PASSCRED, &(int){ 1 }, sizeof(int)) == 0;

	msg.body.hello.flags = kernel ? PROTO_HELLO_KERNEL_FAULTS : 0;
	msg.body.hello.page_size = (uint32_t)p->page_size;
	msg.body.hello.uffd_features = p->uffd_features;
	r = pager_call_from(p, &msg, PROTO_HELLO, &p->uffd, 1, &reply, &sender);
	if (passcred)
		setsockopt(p->sock, SOL_SOCKET, SO_PASSCRED, &(int){ 0 }, sizeof(int));
	if (r < 0)
		goto fail;
	if (sender > 0)
		p->daemon_pid = sender;
	p->daemon_version = reply.version;
	pager_send_pagemap(p);
	/* Without the agent, eviction has no reference information for our
	 * pages (it degrades to FIFO) but everything works. */
	(void)pager_agent_start(p);
	*ret = p;
	return 0;
fail:
	pager_free(p);
	return r;
}

PAGER_EXPORT void pager_close(struct pager *p)
{
	if (!p)
		return;
	pager_agent_stop(p);
	while (p->regions)
		pager_region_destroy(p->regions);
	pager_free(p);
}

PAGER_EXPORT int pager_get_info(const struct pager *p, struct pager_info *info)
{
	struct pager_info out = { 0 };

	if (!p || !info || info->sz < sizeof(size_t))
		return -EINVAL;
	out.sz = info->sz < sizeof(out) ? info->sz : sizeof(out);
	out.flags = p->info_flags;
	out.daemon_version = p->daemon_version;
	out.daemon_pid = p->daemon_pid;
	out.page_size = (uint32_t)p->page_size;
	out.uffd_features = p->uffd_features;
	memcpy(info, &out, out.sz);
	return 0;
}
