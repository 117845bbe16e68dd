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
 * Two threads ping-pong over a pair of eventfds, each sleeping in read():
 * pinned to one CPU (every wake-up local) and to two (every wake-up
 * crosses), with and without an idle gap before each round trip.  Prints
 * the median and 90th percentile of a round trip (two wake-ups).
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
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

struct pong {
	int ping, pong;   /* eventfds: to the partner, back */
	int cpu;
};

static int pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static void *partner(void *arg)
{
	struct pong *p = arg;
	uint64_t v;

	if (pin(p->cpu))
		return NULL;
	while (read(p->ping, &v, sizeof(v)) == sizeof(v) && v == 1)
		if (write(p->pong, &v, sizeof(v)) != sizeof(v))
			break;
	return NULL;
}

/* Round trips with the partner on `cpu` (we are on CPU 0), `gap_us` idle
 * before each.  Returns 0, or -errno. */
static int measure(int cpu, unsigned gap_us, unsigned rounds, double *med, double *p90)
{
	struct pong p = { .cpu = cpu };
	double *lat = calloc(rounds, sizeof(*lat));
	pthread_t t;
	uint64_t v = 1;
	int e = 0;

	p.ping = eventfd(0, EFD_CLOEXEC);
	p.pong = eventfd(0, EFD_CLOEXEC);
	if (!lat || p.ping < 0 || p.pong < 0 || pin(0)) {
		e = -ENOMEM;
		goto out;
	}
	if ((e = -pthread_create(&t, NULL, partner, &p)))
		goto out;
	for (unsigned i = 0; i < rounds && !e; i++) {
		if (gap_us)
			usleep(gap_us);
		uint64_t t0 = now_ns();

		if (write(p.ping, &v, sizeof(v)) != sizeof(v) ||
		    read(p.pong, &v, sizeof(v)) != sizeof(v))
			e = -EIO;
		lat[i] = (double)(now_ns() - t0) / 1000.0;
	}
	v = 2; /* the partner's signal to stop (eventfds add up: 1 is a ping) */
	if (write(p.ping, &v, sizeof(v)) != sizeof(v)) {
		e = -EIO;
		pthread_cancel(t); /* it sleeps in read(), a cancellation point */
	}
	pthread_join(t, NULL);
	qsort(lat, rounds, sizeof(*lat), cmp_double);
	*med = lat[rounds / 2];
	*p90 = lat[rounds * 9 / 10];
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
	printf("%-10s %12s %12s %12s\n", "idle gap", "CPUs", "median us", "p90 us");
	for (size_t g = 0; g < sizeof(gaps) / sizeof(gaps[0]); g++) {
		for (int cpu = 0; cpu <= 1; cpu++) {
			double med = 0, p90 = 0;
			int e = measure(cpu, gaps[g], rounds, &med, &p90);

			if (e) {
				fprintf(stderr, "wakeup: %s\n", strerror(-e));
				return 1;
			}
			printf("%7u us %12s %12.1f %12.1f\n", gaps[g],
			       cpu ? "0 and 1" : "0 only", med, p90);
		}
	}
	return 0;
}
