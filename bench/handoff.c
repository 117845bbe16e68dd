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
 * With -t N, N threads read at once (N misses in flight, as N faulting
 * threads have), each handing its reads to the same servers: the time is
 * the round's wall time over all reads.  That is the floor for pagerd's
 * fault threads against the kernel at N application threads.  -t takes a
 * list (default 1,8, as bench/swap's thread counts).
 *
 *   handoff [-s SIZE_MIB] [-n READS] [-r ROUNDS] [-t THREADS,...] [-d DIR]
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
#define MAX_CLIENTS 64
#define PAGE 4096

enum mode { IN_THREAD, ONE_SERVER, PER_CPU, NR_MODES };

static const char *const mode_name[NR_MODES] = { "in-thread", "one server", "per-CPU" };

struct shared {
	int fd;               /* the file, O_DIRECT */
	uint64_t pages;
	int req[2];           /* pipe: a request is the asking thread's index
			       * (non-blocking read end, shared by servers) */
	int resp[MAX_CLIENTS]; /* eventfds: each thread's answers */
	unsigned clients;
	atomic_bool stop;
};

struct server {
	struct shared *sh;
	int cpu;              /* -1: not pinned */
	pthread_t tid;
	bool started;
};

/* Serves read requests until told to stop: epoll on the request pipe and
 * on its ring's completion eventfd, as pagerd's fault threads do. */
static void *server_main(void *arg)
{
	struct server *s = arg;
	struct shared *sh = s->sh;
	struct io_uring ring;
	struct epoll_event ev = { .events = EPOLLIN };
	uint64_t seed = 0x9e3779b97f4a7c15ull ^ (uint64_t)(s->cpu + 2);
	void *buf = NULL;
	int efd = -1, ep = -1;

	if ((s->cpu >= 0 && pin_to_cpu(s->cpu)) ||
	    io_uring_queue_init(MAX_CLIENTS, &ring, 0) < 0)
		return NULL;
	efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	ep = epoll_create1(EPOLL_CLOEXEC);
	/* A buffer per asking thread: each has one read in flight at most. */
	if (efd < 0 || ep < 0 || io_uring_register_eventfd(&ring, efd) < 0 ||
	    posix_memalign(&buf, PAGE, (size_t)PAGE * sh->clients))
		goto out;
	ev.data.u32 = 0;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, sh->req[0], &ev) < 0)
		goto out;
	ev.data.u32 = 1;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev) < 0)
		goto out;
	while (!atomic_load(&sh->stop)) {
		struct epoll_event got[2];
		int n = epoll_wait(ep, got, 2, 50);

		for (int i = 0; i < n; i++) {
			struct io_uring_cqe *cqe;
			uint32_t who[MAX_CLIENTS];
			uint64_t v;

			if (got[i].data.u32 == 0) {
				/* Whole records: pipe writes of 4 bytes are atomic. */
				ssize_t k = read(sh->req[0], who, sizeof(who));

				for (ssize_t j = 0; j < k / (ssize_t)sizeof(who[0]); j++) {
					struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

					io_uring_prep_read(sqe, sh->fd, (char *)buf + (size_t)who[j] * PAGE,
							   PAGE, (splitmix64(&seed) % sh->pages) * PAGE);
					io_uring_sqe_set_data64(sqe, who[j]);
				}
				if (k > 0)
					io_uring_submit(&ring);
				continue;
			}
			(void)!read(efd, &v, sizeof(v));
			while (io_uring_peek_cqe(&ring, &cqe) == 0) {
				uint64_t to = io_uring_cqe_get_data64(cqe);

				io_uring_cqe_seen(&ring, cqe);
				v = 1;
				(void)!write(sh->resp[to], &v, sizeof(v));
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

struct client {
	struct shared *sh;
	enum mode mode;
	unsigned no, reads;
	uint64_t seed;
	pthread_t tid;
	int err;
};

/* One thread's reads: in itself, or handed to the servers. */
static void *client_main(void *arg)
{
	struct client *c = arg;
	struct shared *sh = c->sh;
	void *buf = NULL;
	uint32_t me = c->no;
	uint64_t v;

	if (posix_memalign(&buf, PAGE, PAGE)) {
		c->err = -ENOMEM;
		return NULL;
	}
	for (unsigned i = 0; i < c->reads && !c->err; i++) {
		if (c->mode == IN_THREAD) {
			if (pread(sh->fd, buf, PAGE,
				  (off_t)((splitmix64(&c->seed) % sh->pages) * PAGE)) != PAGE)
				c->err = -EIO;
			continue;
		}
		if (write(sh->req[1], &me, sizeof(me)) != sizeof(me) ||
		    read(sh->resp[me], &v, sizeof(v)) != sizeof(v))
			c->err = -EIO;
	}
	free(buf);
	return NULL;
}

/* Time per read in µs (the round's wall time over every thread's reads)
 * with `mode`, or a negative errno. */
static double run(struct shared *sh, enum mode mode, unsigned reads, uint64_t *seed)
{
	struct server srv[2] = { { .sh = sh, .cpu = -1 }, { .sh = sh, .cpu = 1 } };
	int nsrv = mode == ONE_SERVER ? 1 : mode == PER_CPU ? 2 : 0;
	struct client cl[MAX_CLIENTS];
	unsigned started = 0;
	uint64_t t0;
	double us = -EIO;

	if (mode == PER_CPU)
		srv[0].cpu = 0;
	atomic_store(&sh->stop, false);
	for (int i = 0; i < nsrv; i++) {
		if (pthread_create(&srv[i].tid, NULL, server_main, &srv[i]))
			goto out;
		srv[i].started = true;
	}
	t0 = now_ns();
	for (; started < sh->clients; started++) {
		cl[started] = (struct client){ .sh = sh, .mode = mode, .no = started,
					       .reads = reads / sh->clients,
					       .seed = splitmix64(seed) };
		if (pthread_create(&cl[started].tid, NULL, client_main, &cl[started]))
			break;
	}
	bool ok = started == sh->clients;

	for (unsigned i = 0; i < started; i++) {
		pthread_join(cl[i].tid, NULL);
		ok &= !cl[i].err;
	}
	if (ok)
		us = (double)(now_ns() - t0) / 1000.0 /
		     (double)(reads / sh->clients * sh->clients);
out:
	atomic_store(&sh->stop, true);
	for (int i = 0; i < nsrv; i++)
		if (srv[i].started)
			pthread_join(srv[i].tid, NULL);
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

/* The rounds at sh->clients threads, printed.  0, or -1 on failure. */
static int run_rounds(struct shared *sh, unsigned mib, unsigned reads, unsigned rounds,
		      uint64_t *seed)
{
	double t[NR_MODES][MAX_ROUNDS];

	printf("handoff: random 4 KiB O_DIRECT reads of a %u MiB file, %u per mode and round, %u thread%s reading\n",
	       mib, reads, sh->clients, sh->clients == 1 ? "" : "s");
	for (unsigned r = 0; r < rounds; r++) {
		printf("round %u:", r);
		for (int m = 0; m < NR_MODES; m++) {
			t[m][r] = run(sh, (enum mode)m, reads, seed);
			if (t[m][r] < 0) {
				fprintf(stderr, "\nhandoff: %s: %s\n", mode_name[m],
					strerror((int)-t[m][r]));
				return -1;
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
	return 0;
}

int main(int argc, char **argv)
{
	struct shared sh = { .req = { -1, -1 } };
	unsigned nthreads[8] = { 1, 8 }, ncounts = 2, most = 0;
	const char *dir = "/var/tmp";
	unsigned mib = 1024, reads = 10000, rounds = 5;
	char path[4096];
	uint64_t seed = 12345;
	int opt, e;

	while ((opt = getopt(argc, argv, "s:n:r:t:d:h")) != -1) {
		switch (opt) {
		case 's': mib = (unsigned)atoi(optarg); break;
		case 'n': reads = (unsigned)atoi(optarg); break;
		case 'r': rounds = (unsigned)atoi(optarg); break;
		case 't':
			e = parse_uint_list(optarg, nthreads, 8, MAX_CLIENTS);
			if (e < 0) {
				fprintf(stderr, "handoff: -t: a list of 1..%d\n", MAX_CLIENTS);
				return 2;
			}
			ncounts = (unsigned)e;
			break;
		case 'd': dir = optarg; break;
		default:
			fprintf(stderr, "usage: handoff [-s SIZE_MIB] [-n READS] [-r ROUNDS] [-t THREADS,...] [-d DIR]\n");
			return opt == 'h' ? 0 : 2;
		}
	}
	for (unsigned i = 0; i < ncounts; i++)
		if (nthreads[i] > most)
			most = nthreads[i];
	if (!mib || !reads || !rounds || rounds > MAX_ROUNDS || reads < most) {
		fprintf(stderr, "handoff: sizes and counts must be positive, rounds at most %d, reads no fewer than threads\n",
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
	e = pipe2(sh.req, O_CLOEXEC) < 0 ? -errno : 0;
	if (!e && fcntl(sh.req[0], F_SETFL, O_NONBLOCK) < 0)
		e = -errno;
	for (unsigned i = 0; i < most && !e; i++)
		if ((sh.resp[i] = eventfd(0, EFD_CLOEXEC)) < 0)
			e = -errno;
	if (!e)
		e = fill(sh.fd, (uint64_t)mib << 20);
	if (e) {
		fprintf(stderr, "handoff: setting up: %s\n", strerror(-e));
		return 1;
	}
	for (unsigned c = 0; c < ncounts; c++) {
		sh.clients = nthreads[c];
		if (run_rounds(&sh, mib, reads, rounds, &seed) < 0)
			return 1;
	}
	close(sh.fd);
	close(sh.req[0]);
	close(sh.req[1]);
	for (unsigned i = 0; i < most; i++)
		close(sh.resp[i]);
	return 0;
}
