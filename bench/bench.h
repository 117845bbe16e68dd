/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the benchmarks in bench/.  Every benchmark is a single
 * translation unit linked only against libpager (the Makefile builds each
 * bench/NAME.c into build/bench/NAME), so the helpers are static inline
 * here rather than in a library of their own.
 */
#ifndef PAGER_BENCH_H
#define PAGER_BENCH_H

#include <errno.h>
#include <pager.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/*
 * parse_size()/parse_u64() are shared with pagerd and pagerctl but not
 * exported by libpager, and the bench programs link only libpager, so the
 * one implementation is compiled in here rather than copied.  (If the
 * bench link rule ever adds the common objects, include "size.h" instead.)
 */
#include "../common/size.c"

/* Exit status of a benchmark that cannot run here (it says why). */
#define BENCH_SKIP 77

static inline uint64_t ts_ns(const struct timespec *ts)
{
	return (uint64_t)ts->tv_sec * 1000000000u + (uint64_t)ts->tv_nsec;
}

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts_ns(&ts);
}

/* splitmix64: small, fast and good enough to pick and shuffle pages with. */
static inline uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/*
 * Holds the workers until all of them exist, then lets them go together, or
 * tells them to quit if one could not be created.  A pthread barrier cannot
 * do the latter: workers already waiting on it would wait forever.
 */
struct gate {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int state;              /* 0 wait, 1 go, -1 quit */
};

#define GATE_INIT { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 }

static inline void gate_set(struct gate *g, int state)
{
	pthread_mutex_lock(&g->lock);
	g->state = state;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
}

/* Waits for the go; returns 1 (go) or -1 (quit). */
static inline int gate_wait(struct gate *g)
{
	int state;

	pthread_mutex_lock(&g->lock);
	while (!(state = g->state))
		pthread_cond_wait(&g->cond, &g->lock);
	pthread_mutex_unlock(&g->lock);
	return state;
}

static inline void gate_destroy(struct gate *g)
{
	pthread_mutex_destroy(&g->lock);
	pthread_cond_destroy(&g->cond);
}

static inline int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Pins the calling thread to one CPU.  Returns 0 or an errno value. */
static inline int pin_to_cpu(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

/* The median of v[0..n-1], n >= 1; sorts v in place. */
static inline double median(double *v, unsigned n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/*
 * "1,4" into out[0..]: at most max_n entries, each 1..max_value.  Returns
 * the number of entries, or -EINVAL for an empty, zero or oversized entry
 * or too many of them (out is then partly written), -ENOMEM.
 */
static inline int parse_uint_list(const char *arg, unsigned *out, unsigned max_n,
				  unsigned max_value)
{
	char *copy = strdup(arg), *save = NULL, *tok;
	int n = 0, e = 0;

	if (!copy)
		return -ENOMEM;
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		uint64_t v;

		e = parse_u64(tok, &v);
		if (e < 0)
			break;
		if (v < 1 || v > max_value || (unsigned)n == max_n) {
			e = -EINVAL;
			break;
		}
		out[n++] = (unsigned)v;
	}
	free(copy);
	if (!e && !n)
		e = -EINVAL;
	return e < 0 ? e : n;
}

/* A pager on sock, retried for up to 6 s while a pagerd just started
 * comes up (it binds its socket once its swap is open); NULL if none. */
static inline struct pager *bench_connect_retry(const char *sock)
{
	struct pager_opts o = { .sz = sizeof(o), .socket_path = sock,
				.flags = PAGER_OPEN_NO_PRIVATE };
	struct pager *p = NULL;

	for (int i = 0; i < 300 && pager_open(&p, &o) < 0; i++)
		usleep(20000);
	return p;
}

/* The directory of the throwaway Ceph cluster an rbd benchmark started
 * (empty: none). */
static inline char *bench_cluster_dir(void)
{
	static char dir[64];

	return dir;
}

static inline void bench_cluster_stop(void)
{
	const char *cluster = bench_cluster_dir();
	char cmd[256];

	if (!cluster[0])
		return;
	snprintf(cmd, sizeof(cmd), "tests/ceph_cluster.sh stop %s; rm -rf %s", cluster, cluster);
	if (system(cmd) != 0)
		fprintf(stderr, "stopping the cluster failed\n");
}

/*
 * For an rbd benchmark without $CEPH_CONF: a single-node cluster (pool
 * rbd) started with tests/ceph_cluster.sh in a directory made from tmpl
 * ("/tmp/NAME.XXXXXX"), stopped at exit; its ceph.conf's path in conf.
 * Returns 0, BENCH_SKIP (said) if no cluster could be started here, or 1.
 */
static inline int bench_cluster_start(const char *prog, const char *tmpl, char *conf, size_t n)
{
	char *cluster = bench_cluster_dir(), cmd[256];

	snprintf(cluster, 64, "%s", tmpl);
	if (!mkdtemp(cluster))
		return 1;
	atexit(bench_cluster_stop);
	snprintf(cmd, sizeof(cmd), "tests/ceph_cluster.sh start %s rbd >/dev/null", cluster);
	if (system(cmd) != 0) {
		printf("%s: no Ceph cluster could be started here (ceph-mon, ceph-osd)\n", prog);
		return BENCH_SKIP;
	}
	snprintf(conf, n, "%s/ceph.conf", cluster);
	return 0;
}

#endif
