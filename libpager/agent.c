/* SPDX-License-Identifier: MIT */
/*
 * The agent: a thread that drops this process's mappings of region pages
 * when pagerd's Clock hand asks, so that their next use faults and tells
 * pagerd they are in use (no other process may do this for us).  The page
 * cache keeps the data: MADV_DONTNEED on a MAP_SHARED mapping only zaps
 * page-table entries.
 *
 * Everything pagerd asks is checked against our own regions first: a
 * confused or hostile daemon cannot make us drop anything else.  Each
 * request is answered, once done, with an AGENT_DONE of its seq: the hand
 * reads our page tables for references, and must not read those of pages
 * whose mappings are still to be dropped.
 *
 * A request's ranges go to the kernel in one process_madvise() call on our
 * own pidfd (the kernel allows any advice on oneself since 6.13): one
 * mmap_lock and, on recent kernels, one TLB flush for all of them.  Each flush
 * interrupts every CPU that runs one of our threads, which is costly in a
 * VM; a madvise() per range is the fallback.
 */
#include <errno.h>
#include <string.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "internal.h"

/* Whether [addr, addr+len) lies within one of our regions; p->lock held. */
static bool in_region(struct pager *p, uint64_t addr, uint64_t len)
{
	for (struct pager_region *r = p->regions; r; r = r->next) {
		uint64_t a = (uintptr_t)r->addr;

		if (addr >= a && len <= r->len && addr - a <= r->len - len)
			return true;
	}
	return false;
}

/* Drops the mappings of n ranges, all in our regions. */
static void drop_ranges(int pidfd, const struct iovec *iov, size_t n)
{
	if (pidfd >= 0 && n > 1) {
		size_t want = 0;

		for (size_t i = 0; i < n; i++)
			want += iov[i].iov_len;
		if (syscall(SYS_process_madvise, pidfd, iov, n, MADV_DONTNEED, 0) ==
		    (long)want)
			return;
	}
	for (size_t i = 0; i < n; i++)
		madvise(iov[i].iov_base, iov[i].iov_len, MADV_DONTNEED);
}

static void *agent_main(void *arg)
{
	struct pager *p = arg;
	struct proto_msg m;
	struct iovec iov[PROTO_DROP_MAX];
	int fds[PROTO_MAX_FDS];
	unsigned nfds;
	int pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);

	for (;;) {
		ssize_t n = proto_recv(p->agent_sock, &m, fds, &nfds);

		for (unsigned i = 0; i < nfds; i++)
			close(fds[i]);
		if (n == 0 || (n < 0 && n != -EINTR && n != -EMSGSIZE))
			break;
		if (n < 0 || proto_validate(&m, (size_t)n) < 0 ||
		    m.hdr.type != PROTO_AGENT_DROP)
			continue;
		const struct proto_agent_drop *ad = &m.body.agent_drop;

		/* Under the lock, so that no region is unmapped (and its
		 * range reused) between the check and the madvise. */
		size_t nr = 0;

		pthread_mutex_lock(&p->lock);
		for (uint32_t i = 0; i < ad->n && i < PROTO_DROP_MAX; i++) {
			uint64_t a = ad->range[i].addr, l = ad->range[i].len;

			if (l && !(a % p->page_size) && !(l % p->page_size) &&
			    in_region(p, a, l))
				iov[nr++] = (struct iovec){ (void *)(uintptr_t)a, l };
		}
		drop_ranges(pidfd, iov, nr);
		pthread_mutex_unlock(&p->lock);
		struct proto_msg done = { 0 };
		size_t len = proto_finish(&done, PROTO_AGENT_DONE, m.hdr.seq);

		/* Lost if it cannot go: pagerd stops waiting after a while. */
		(void)proto_send(p->agent_sock, &done, len, NULL, 0);
	}
	if (pidfd >= 0)
		close(pidfd);
	return NULL;
}

int pager_agent_start(struct pager *p)
{
	struct proto_msg msg = { 0 };
	sigset_t all, old;
	int sv[2], e;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	e = pager_call_locked(p, &msg, PROTO_AGENT_ATTACH, &sv[1], 1, NULL);
	close(sv[1]);
	if (e < 0) {
		close(sv[0]);
		return e;
	}
	p->agent_sock = sv[0];
	/* The thread takes no signals: they belong to the application. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	e = -pthread_create(&p->agent_thread, NULL, agent_main, p);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (e < 0) {
		close(p->agent_sock);
		p->agent_sock = -1;
		return e;
	}
	p->agent_running = true;
	return 0;
}

void pager_agent_stop(struct pager *p)
{
	if (p->agent_running) {
		/* Wakes the thread's recv with end of stream. */
		shutdown(p->agent_sock, SHUT_RDWR);
		pthread_join(p->agent_thread, NULL);
		p->agent_running = false;
	}
	if (p->agent_sock >= 0)
		close(p->agent_sock);
	p->agent_sock = -1;
}
