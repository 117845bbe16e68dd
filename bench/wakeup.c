/* SPDX-License-Identifier: MIT */
/*
 * wakeup: what it costs this machine to wake a sleeping thread, on the
 * waker's CPU and on another one.
 *
 * Not a pagerd benchmark but the number that bounds one.  A swap-in by the
 * kernel wakes one thread (the disk's interrupt wakes the faulting thread);
 * a swap-in by pagerd wakes pagerd when the thread faults, pagerd again when
 * the read completes, and then the thread.  Where wake-ups cross CPUs and a
 * cross-CPU wake-up is dear (a VM: an inter-processor interrupt and a halted
 * virtual CPU the host must run again), that difference, not pagerd's own
 * work, is most of what a random swap-in costs over the kernel's.
 *
 * A thread on CPU 0 pings a partner over an eventfd and sleeps until it
 * answers: the partner on CPU 0 too (every wake-up local), on CPU 1 (every
 * wake-up crosses), and one partner on each CPU, both sleeping in poll() on
 * the same eventfd, the first awake answering (what a fault reader per CPU
 * would give pagerd: the faulting CPU's reader usually wins).  With and
 * without an idle gap before each round trip.  Prints the median and 90th
 * percentile of a round trip (two wake-ups) and how many pings CPU 0's
 * partner answered.
 *
 *   wakeup [-n ROUNDS]
 *
 * Exit status: 0, 1 on failure, 2 usage, 77 with a single CPU (skipped).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

struct pong {
	int ping, pong;   /* eventfds: to the partners (non-blocking), back */
};

struct partner {
	struct pong *p;
	int cpu;
	pthread_t tid;
	unsigned served;  /* pings this partner answered */
};

/* Sleeps in poll() on the ping eventfd, as pagerd sleeps on a uffd; with
 * partners on several CPUs, all wake and the first to read answers. */
static void *partner_main(void *arg)
{
	struct partner *t = arg;
	struct pollfd pfd = { .fd = t->p->ping, .events = POLLIN };
	uint64_t v;

	if (pin_to_cpu(t->cpu))
		return NULL;
	for (;;) {
		if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
			return NULL;
		if (read(t->p->ping, &v, sizeof(v)) != sizeof(v))
			continue; /* another partner took it */
		if (v != 1) {
			/* Stop, and pass it on to the other partner. */
			(void)!write(t->p->ping, &v, sizeof(v));
			return NULL;
		}
		t->served++;
		if (write(t->p->pong, &v, sizeof(v)) != sizeof(v))
			return NULL;
	}
}

/* Round trips from CPU 0 to partners on CPUs [first, last], `gap_us` idle
 * before each.  Returns 0, or -errno. */
static int measure(int first, int last, unsigned gap_us, unsigned rounds,
		   double *med, double *p90, unsigned *served_here)
{
	struct pong p = { .ping = -1, .pong = -1 };
	struct partner t[2] = { { 0 } };
	double *lat = calloc(rounds, sizeof(*lat));
	int n = 0, e = 0;
	uint64_t v = 1;

	p.ping = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	p.pong = eventfd(0, EFD_CLOEXEC);
	if (!lat || p.ping < 0 || p.pong < 0 || pin_to_cpu(0)) {
		e = -ENOMEM;
		goto out;
	}
	for (int cpu = first; cpu <= last && !e; cpu++, n++) {
		t[n].p = &p;
		t[n].cpu = cpu;
		e = -pthread_create(&t[n].tid, NULL, partner_main, &t[n]);
	}
	if (e)
		n--;
	for (unsigned i = 0; i < rounds && !e; i++) {
		if (gap_us)
			usleep(gap_us);
		uint64_t t0 = now_ns();

		v = 1;
		if (write(p.ping, &v, sizeof(v)) != sizeof(v) ||
		    read(p.pong, &v, sizeof(v)) != sizeof(v))
			e = -EIO;
		lat[i] = (double)(now_ns() - t0) / 1000.0;
	}
	v = 2; /* the partners' signal to stop (eventfds add up: 1 is a ping) */
	if (n && write(p.ping, &v, sizeof(v)) != sizeof(v)) {
		e = -EIO;
		for (int i = 0; i < n; i++)
			pthread_cancel(t[i].tid); /* poll() is a cancellation point */
	}
	*served_here = 0;
	for (int i = 0; i < n; i++) {
		pthread_join(t[i].tid, NULL);
		if (t[i].cpu == 0)
			*served_here = t[i].served;
	}
	if (!e) {
		qsort(lat, rounds, sizeof(*lat), cmp_double);
		*med = lat[rounds / 2];
		*p90 = lat[rounds * 9 / 10];
	}
out:
	free(lat);
	if (p.ping >= 0)
		close(p.ping);
	if (p.pong >= 0)
		close(p.pong);
	return e;
}

int main(int argc, char **argv)
{
	unsigned rounds = 5000;
	static const unsigned gaps[] = { 0, 100 };
	int opt;

	while ((opt = getopt(argc, argv, "n:h")) != -1) {
		if (opt == 'n' && atoi(optarg) > 0) {
			rounds = (unsigned)atoi(optarg);
		} else {
			fprintf(stderr, "usage: wakeup [-n ROUNDS]\n");
			return opt == 'h' ? 0 : 2;
		}
	}
	if (sysconf(_SC_NPROCESSORS_ONLN) < 2) {
		printf("wakeup: one CPU online, nothing crosses CPUs: skipped\n");
		return BENCH_SKIP;
	}
	printf("wakeup: eventfd round trip between two threads (two wake-ups), %u rounds\n",
	       rounds);
	printf("%-10s %-22s %10s %10s %14s\n", "idle gap", "partner on CPU",
	       "median us", "p90 us", "served on CPU 0");
	for (size_t g = 0; g < sizeof(gaps) / sizeof(gaps[0]); g++) {
		static const struct { int first, last; const char *name; } how[] = {
			{ 0, 0, "0 (same)" },
			{ 1, 1, "1 (across)" },
			{ 0, 1, "0 and 1 (one each)" },
		};

		for (size_t h = 0; h < sizeof(how) / sizeof(how[0]); h++) {
			double med = 0, p90 = 0;
			unsigned here = 0;
			int e = measure(how[h].first, how[h].last, gaps[g], rounds,
					&med, &p90, &here);

			if (e) {
				fprintf(stderr, "wakeup: %s\n", strerror(-e));
				return 1;
			}
			printf("%7u us %-22s %10.1f %10.1f %13.0f%%\n", gaps[g], how[h].name,
			       med, p90, 100.0 * here / rounds);
		}
	}
	return 0;
}
