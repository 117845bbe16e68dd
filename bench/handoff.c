/* SPDX-License-Identifier: MIT */
/*
 * handoff: what handing a read to another thread costs, against doing it in
 * the thread that needs the data.  The floor under any user-space pager.
 *
 * The kernel's swap-in reads in the faulting thread: it submits the read
 * and sleeps until the disk's interrupt wakes it.  A user-space pager hands
 * the miss to a server thread, which submits the read, is woken by its
 * completion, and wakes the faulting thread.  pagerd does more (a uffd
 * message, a CRC, UFFDIO_COPY), but the handoff itself, with its extra
 * wake-ups, is the part no pager design can avoid.
 *
 * Each round times random 4 KiB O_DIRECT reads of a file three ways, one
 * after the other so that the disk's drift falls on all alike:
 *
 *   in-thread     pread() in the timing thread (the kernel's swap-in)
 *   one server    an eventfd to a server thread, which reads with io_uring
 *                 and is woken by the completion's eventfd in epoll (how
 *                 pagerd is built), then answers over another eventfd
 *   per-CPU       one such server pinned to each CPU, all waiting on the
 *                 same request eventfd; the first awake takes it
 *
 * and prints the time per read and its ratio to in-thread; then medians.
 *
 *   handoff [-s SIZE_MIB] [-n READS] [-r ROUNDS] [-d DIR]
 *
 * Exit status: 0, 1 on failure, 2 usage, 77 if DIR refuses O_DIRECT.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "bench.h"

#define MAX_ROUNDS 32
#define PAGE 4096

enum mode { IN_THREAD, ONE_SERVER, PER_CPU, NR_MODES };

static const char *const mode_name[NR_MODES] = { "in-thread", "one server", "per-CPU" };

struct shared {
	int fd;               /* the file, O_DIRECT */
	uint64_t pages;
	int req, resp;        /* eventfds: requests (non-blocking), answers */
	atomic_bool stop;
};

struct server {
	struct shared *sh;
	int cpu;              /* -1: not pinned */
	pthread_t tid;
	bool started;
};

/* Serves read requests until told to stop: epoll on the request eventfd and
 * on its ring's completion eventfd, as pagerd's loop does. */
static void *server_main(void *arg)
{
	struct server *s = arg;
	struct shared *sh = s->sh;
	struct io_uring ring;
	struct epoll_event ev = { .events = EPOLLIN };
	uint64_t seed = 0x9e3779b97f4a7c15ull ^ (uint64_t)(s->cpu + 2);
	void *buf = NULL;
	int efd = -1, ep = -1;

	if ((s->cpu >= 0 && pin_to_cpu(s->cpu)) || io_uring_queue_init(8, &ring, 0) < 0)
		return NULL;
	efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (efd < 0 || ep < 0 || io_uring_register_eventfd(&ring, efd) < 0 ||
	    posix_memalign(&buf, PAGE, PAGE))
		goto out;
	ev.data.u32 = 0;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, sh->req, &ev) < 0)
		goto out;
	ev.data.u32 = 1;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev) < 0)
		goto out;
	while (!atomic_load(&sh->stop)) {
		struct epoll_event got[2];
		int n = epoll_wait(ep, got, 2, 50);

		for (int i = 0; i < n; i++) {
			struct io_uring_cqe *cqe;
			uint64_t v;

			if (got[i].data.u32 == 0) {
				if (read(sh->req, &v, sizeof(v)) != sizeof(v))
					continue; /* another server took it */
				struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

				io_uring_prep_read(sqe, sh->fd, buf, PAGE,
						   (splitmix64(&seed) % sh->pages) * PAGE);
				io_uring_submit(&ring);
				continue;
			}
			(void)!read(efd, &v, sizeof(v));
			while (io_uring_peek_cqe(&ring, &cqe) == 0) {
				io_uring_cqe_seen(&ring, cqe);
				v = 1;
				(void)!write(sh->resp, &v, sizeof(v));
			}
		}
	}
out:
	free(buf);
	if (ep >= 0)
		close(ep);
	if (efd >= 0)
		close(efd);
	io_uring_queue_exit(&ring);
	return NULL;
}

/* Time per read in µs with `mode`, or a negative errno. */
static double run(struct shared *sh, enum mode mode, unsigned reads, uint64_t *seed)
{
	struct server srv[2] = { { .sh = sh, .cpu = -1 }, { .sh = sh, .cpu = 1 } };
	int nsrv = mode == ONE_SERVER ? 1 : mode == PER_CPU ? 2 : 0;
	void *buf = NULL;
	uint64_t t0, v;
	double us = -EIO;

	if (mode == PER_CPU)
		srv[0].cpu = 0;
	if (posix_memalign(&buf, PAGE, PAGE))
		return -ENOMEM;
	atomic_store(&sh->stop, false);
	for (int i = 0; i < nsrv; i++) {
		if (pthread_create(&srv[i].tid, NULL, server_main, &srv[i]))
			goto out;
		srv[i].started = true;
	}
	t0 = now_ns();
	for (unsigned i = 0; i < reads; i++) {
		if (mode == IN_THREAD) {
			if (pread(sh->fd, buf, PAGE,
				  (off_t)((splitmix64(seed) % sh->pages) * PAGE)) != PAGE)
				goto out;
			continue;
		}
		v = 1;
		if (write(sh->req, &v, sizeof(v)) != sizeof(v) ||
		    read(sh->resp, &v, sizeof(v)) != sizeof(v))
			goto out;
	}
	us = (double)(now_ns() - t0) / 1000.0 / reads;
out:
	atomic_store(&sh->stop, true);
	for (int i = 0; i < nsrv; i++)
		if (srv[i].started)
			pthread_join(srv[i].tid, NULL);
	free(buf);
	return us;
}

/* Fills the file with data, so that reads go to the disk. */
static int fill(int fd, uint64_t bytes)
{
	const size_t chunk = 1 << 20;
	void *buf = NULL;
	int e = 0;

	if (posix_memalign(&buf, PAGE, chunk))
		return -ENOMEM;
	for (uint64_t off = 0; off < bytes && !e; off += chunk) {
		memset(buf, (int)(off >> 20), chunk);
		if (pwrite(fd, buf, chunk, (off_t)off) != (ssize_t)chunk)
			e = errno ? -errno : -EIO;
	}
	free(buf);
	return e;
}

int main(int argc, char **argv)
{
	struct shared sh = { .req = -1, .resp = -1 };
	const char *dir = "/var/tmp";
	unsigned mib = 1024, reads = 10000, rounds = 5;
	double t[NR_MODES][MAX_ROUNDS];
	char path[4096];
	uint64_t seed = 12345;
	int opt, e;

	while ((opt = getopt(argc, argv, "s:n:r:d:h")) != -1) {
		switch (opt) {
		case 's': mib = (unsigned)atoi(optarg); break;
		case 'n': reads = (unsigned)atoi(optarg); break;
		case 'r': rounds = (unsigned)atoi(optarg); break;
		case 'd': dir = optarg; break;
		default:
			fprintf(stderr, "usage: handoff [-s SIZE_MIB] [-n READS] [-r ROUNDS] [-d DIR]\n");
			return opt == 'h' ? 0 : 2;
		}
	}
	if (!mib || !reads || !rounds || rounds > MAX_ROUNDS) {
		fprintf(stderr, "handoff: sizes and counts must be positive, rounds at most %d\n",
			MAX_ROUNDS);
		return 2;
	}
	if (sysconf(_SC_NPROCESSORS_ONLN) < 2) {
		printf("handoff: one CPU online, per-CPU servers need two: skipped\n");
		return BENCH_SKIP;
	}
	snprintf(path, sizeof(path), "%s/pagerd-handoff.XXXXXX", dir);
	int tmp = mkstemp(path);

	if (tmp < 0) {
		fprintf(stderr, "handoff: creating a file in %s: %s\n", dir, strerror(errno));
		return 1;
	}
	sh.fd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
	unlink(path); /* gone with the last descriptor, whatever happens */
	close(tmp);
	if (sh.fd < 0) {
		printf("handoff: %s refuses O_DIRECT (%s): skipped\n", dir, strerror(errno));
		return BENCH_SKIP;
	}
	sh.pages = (uint64_t)mib * (1 << 20) / PAGE;
	sh.req = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	sh.resp = eventfd(0, EFD_CLOEXEC);
	e = sh.req < 0 || sh.resp < 0 ? -errno : fill(sh.fd, (uint64_t)mib << 20);
	if (e) {
		fprintf(stderr, "handoff: setting up: %s\n", strerror(-e));
		return 1;
	}
	printf("handoff: random 4 KiB O_DIRECT reads of a %u MiB file, %u per mode and round\n",
	       mib, reads);
	for (unsigned r = 0; r < rounds; r++) {
		printf("round %u:", r);
		for (int m = 0; m < NR_MODES; m++) {
			t[m][r] = run(&sh, (enum mode)m, reads, &seed);
			if (t[m][r] < 0) {
				fprintf(stderr, "\nhandoff: %s: %s\n", mode_name[m],
					strerror((int)-t[m][r]));
				return 1;
			}
			printf("  %s %.1f us", mode_name[m], t[m][r]);
			if (m != IN_THREAD)
				printf(" (%.2f)", t[m][r] / t[IN_THREAD][r]);
		}
		printf("\n");
		fflush(stdout);
	}
	double ratio[NR_MODES][MAX_ROUNDS];

	printf("median over %u rounds, time per read against in-thread:", rounds);
	for (int m = ONE_SERVER; m < NR_MODES; m++) {
		for (unsigned r = 0; r < rounds; r++)
			ratio[m][r] = t[m][r] / t[IN_THREAD][r];
		printf("  %s %.2f", mode_name[m], median(ratio[m], rounds));
	}
	printf("\n");
	close(sh.fd);
	close(sh.req);
	close(sh.resp);
	return 0;
}
