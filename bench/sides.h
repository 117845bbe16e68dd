/* SPDX-License-Identifier: MIT */
/*
 * The two sides of a benchmark against kernel swap, as bench/swap sets
 * them up, for the benchmarks that run that way (bench/swap, bench/scale):
 *
 *   kernel  anonymous memory of processes in a cgroup v1 memory cgroup
 *           (below ours in /sys/fs/cgroup/memory) with the limit, swapping
 *           to a swap file made, mkswap'd and swapon'd at a high priority
 *           in the benchmark's work directory;
 *   pagerd  a pagerd started here on a socket of its own (socket
 *           activation, as tests/harness.c does), its swap file in the same
 *           work directory, so both sides swap to the same file system.
 *
 * Names follow bench/swap's, "pagerd-bench.PID.XXXXXX" for the work
 * directory and "pagerd-bench-PID-N" for cgroups, so that either program
 * takes down what a killed run of the other left (bench_cleanup_stale()).
 *
 * Like bench.h, static inline: each benchmark is one translation unit.
 */
#ifndef PAGER_BENCH_SIDES_H
#define PAGER_BENCH_SIDES_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/swap.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

#define BENCH_SWAP_PRIORITY 100  /* above any default (negative) swap area */

/* Set by bench_on_signal(), the handler for SIGINT, SIGTERM, SIGHUP and
 * SIGPIPE. */
static volatile sig_atomic_t bench_got_signal;

static inline void bench_on_signal(int sig)
{
	bench_got_signal = sig;
}

/* True once SIGINT, SIGTERM, SIGHUP or SIGPIPE arrived (they are blocked
 * outside the parent's waits, so also look at the pending ones; a write to
 * a closed stdout, as in `swap | head`, leaves SIGPIPE pending). */
static inline bool bench_interrupted(void)
{
	sigset_t p;

	if (bench_got_signal)
		return true;
	if (sigpending(&p) == 0) {
		if (sigismember(&p, SIGINT))
			bench_got_signal = SIGINT;
		else if (sigismember(&p, SIGTERM))
			bench_got_signal = SIGTERM;
		else if (sigismember(&p, SIGHUP))
			bench_got_signal = SIGHUP;
		else if (sigismember(&p, SIGPIPE))
			bench_got_signal = SIGPIPE;
	}
	return bench_got_signal != 0;
}

static inline double bench_mib(int64_t bytes)
{
	return (double)bytes / (1024.0 * 1024.0);
}

/* Picks the multiplier that scatters the hot set: odd-ish, coprime with
 * npages, near the golden ratio of it so that hot pages are spread out. */
static inline uint64_t bench_pick_hot_mult(size_t npages)
{
	uint64_t m = (uint64_t)((double)npages * 0.6180339887) | 1;

	if (npages <= 1)
		return 1;
	for (;; m++) {
		uint64_t a = m, c = npages;

		while (c) {
			uint64_t t = a % c;

			a = c;
			c = t;
		}
		if (a == 1)
			return m;
	}
}

/* "VmSwap:   1234 kB" from /proc/self/status, in bytes; -1 if absent. */
static inline int64_t bench_proc_status_kb(const char *key)
{
	char line[256];
	size_t klen = strlen(key);
	int64_t v = -1;
	FILE *f = fopen("/proc/self/status", "re");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, klen) && line[klen] == ':') {
			v = strtoll(line + klen + 1, NULL, 10) * 1024;
			break;
		}
	fclose(f);
	return v;
}

/* s as a JSON string, quoted, on stdout. */
static inline void bench_json_string(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", (unsigned char)*s);
		else
			putchar(*s);
	}
	putchar('"');
}

/* What the kernel side needs, and what must be taken down. */
struct kside {
	const char *prog;                /* for messages */
	sigset_t oldmask;                /* signals as they were at the start */
	char workdir[PATH_MAX];          /* swap files and sockets go here */
	char kswap[PATH_MAX + 16];       /* the kernel's swap file */
	bool kswap_created, kswap_on;
	char cg_base[PATH_MAX];          /* where the kernel side's cgroups go */
	char cg[PATH_MAX + 64];          /* the current one */
	bool cg_made;
	unsigned cg_seq;
	char other_swaps[256];           /* other active swap areas, said */
	char unavail[256];               /* empty: the kernel side can run */
};

/* In a freshly forked child: signals as they were before the benchmark
 * touched them, and death with the parent, so that nothing outlives a
 * killed benchmark. */
static inline void bench_child_signals(const sigset_t *oldmask)
{
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	signal(SIGPIPE, SIG_DFL);
	sigprocmask(SIG_SETMASK, oldmask, NULL);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
}

/* Runs argv (from $PATH) and waits; output to ours, or to *out if out is
 * not NULL (at most outlen - 1 bytes kept, NUL-terminated).  Returns the
 * exit status, or -errno if it could not run. */
static inline int bench_run_command(const sigset_t *oldmask, char *const argv[],
				    char *out, size_t outlen)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	int pfd[2] = { -1, -1 }, st, e;
	size_t got = 0;
	pid_t pid;

	if (out && pipe2(pfd, O_CLOEXEC) < 0)
		return -errno;
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&attr);
	posix_spawnattr_setsigmask(&attr, oldmask);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
	if (out)
		posix_spawn_file_actions_adddup2(&fa, pfd[1], STDOUT_FILENO);
	e = posix_spawnp(&pid, argv[0], &fa, &attr, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	if (out) {
		close(pfd[1]);
		while (!e && got + 1 < outlen) {
			ssize_t n = read(pfd[0], out + got, outlen - 1 - got);

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			got += (size_t)n;
		}
		out[got] = 0;
		close(pfd[0]);
	}
	if (e)
		return -e;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static inline int bench_write_file(const char *dir, const char *file, const char *val)
{
	char path[PATH_MAX + 128];
	size_t n = strlen(val);
	int fd, e = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (write(fd, val, n) != (ssize_t)n)
		e = -errno;
	close(fd);
	return e;
}

/* A number from a cgroup file (the first one, or the one after "key "),
 * -1 if absent. */
static inline int64_t bench_cg_read(const char *cg, const char *file, const char *key)
{
	char path[PATH_MAX + 128], line[256];
	size_t klen = key ? strlen(key) : 0;
	int64_t v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", cg, file);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (!key) {
			v = strtoll(line, NULL, 10);
			break;
		}
		if (!strncmp(line, key, klen) && line[klen] == ' ') {
			v = strtoll(line + klen + 1, NULL, 10);
			break;
		}
	}
	fclose(f);
	return v;
}

/* Our memory cgroup (v1) directory, where the kernel side's cgroups go
 * below; the root of the hierarchy if that is not writable. */
static inline void bench_find_cgroup_base(struct kside *ks)
{
	static const char root[] = "/sys/fs/cgroup/memory";
	char line[PATH_MAX + 64];
	FILE *f = fopen("/proc/self/cgroup", "re");

	snprintf(ks->cg_base, sizeof(ks->cg_base), "%s", root);
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *ctl = strchr(line, ':'), *path;

		if (!ctl || !(path = strchr(ctl + 1, ':')))
			continue;
		*path++ = 0;
		path[strcspn(path, "\n")] = 0;
		/* "4:memory:/x" or a co-mounted "4:cpu,memory:/x" */
		for (char *save = NULL, *t = strtok_r(ctl + 1, ",", &save); t;
		     t = strtok_r(NULL, ",", &save)) {
			char dir[sizeof(ks->cg_base)];

			if (strcmp(t, "memory"))
				continue;
			if (snprintf(dir, sizeof(dir), "%s%s", root, path) < (int)sizeof(dir) &&
			    access(dir, W_OK) == 0)
				memcpy(ks->cg_base, dir, sizeof(dir));
		}
	}
	fclose(f);
}

/* A fresh cgroup, ks->cg, limited to limit bytes.  Returns 0 or -errno
 * with *why said. */
static inline int bench_cgroup_make(struct kside *ks, uint64_t limit, char *why,
				    size_t whylen)
{
	char val[32];
	int e;

	snprintf(ks->cg, sizeof(ks->cg), "%s/pagerd-bench-%d-%u", ks->cg_base,
		 (int)getpid(), ks->cg_seq++);
	if (mkdir(ks->cg, 0755) < 0) {
		e = -errno;
		snprintf(why, whylen, "cannot create memory cgroup %.160s: %s", ks->cg,
			 strerror(-e));
		return e;
	}
	ks->cg_made = true;
	snprintf(val, sizeof(val), "%" PRIu64, limit);
	e = bench_write_file(ks->cg, "memory.limit_in_bytes", val);
	if (e < 0) {
		snprintf(why, whylen, "cannot set %.160s/memory.limit_in_bytes: %s",
			 ks->cg, strerror(-e));
		return e;
	}
	/* The default, set in case the parent group has another. */
	(void)bench_write_file(ks->cg, "memory.swappiness", "60");
	return 0;
}

/* rmdir fails with EBUSY while the last task's exit is still being
 * accounted: retry for up to a second. */
static inline void bench_cgroup_remove(struct kside *ks)
{
	if (!ks->cg_made)
		return;
	for (int i = 0; rmdir(ks->cg) < 0 && errno == EBUSY && i < 100; i++)
		usleep(10000);
	if (access(ks->cg, F_OK) == 0)
		fprintf(stderr, "%s: could not remove cgroup %s: %s\n", ks->prog, ks->cg,
			strerror(errno));
	ks->cg_made = false;
}

/* Allocates a file of size bytes (no holes: swapon refuses them). */
static inline int bench_make_file(const char *path, uint64_t size)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600), e;

	if (fd < 0)
		return -errno;
	e = posix_fallocate(fd, 0, (off_t)size);
	close(fd);
	if (e)
		unlink(path);
	return -e;
}

/* Pid in a name "...pagerd-bench.PID..." or "pagerd-bench-PID-..." of a
 * process that is gone; 0 if the owner lives (or it is ours). */
static inline pid_t bench_dead_owner(const char *name)
{
	const char *p = strstr(name, "pagerd-bench");
	long pid;

	if (!p)
		return 0;
	p += strlen("pagerd-bench");
	if (*p != '.' && *p != '-')
		return 0;
	pid = strtol(p + 1, NULL, 10);
	if (pid <= 0 || pid == getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
		return 0;
	return (pid_t)pid;
}

/* Empties and removes a dead benchmark's work directory: its swap files,
 * sockets and probe files. */
static inline void bench_remove_stale_workdir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	while (d && (de = readdir(d))) {
		size_t n = strlen(de->d_name);

		if ((n > 5 && !strcmp(de->d_name + n - 5, ".swap")) ||
		    (n > 5 && !strcmp(de->d_name + n - 5, ".sock")) ||
		    (n > 6 && !strcmp(de->d_name + n - 6, ".probe")))
			unlinkat(dirfd(d), de->d_name, 0);
	}
	if (d)
		closedir(d);
	rmdir(dir);
}

/*
 * A benchmark killed with SIGKILL cannot clean up: its swap file stays
 * active and its cgroup stays.  Takes down those of dead owners (and only
 * those: another benchmark may be running).
 */
static inline void bench_cleanup_stale(const struct kside *ks)
{
	char line[PATH_MAX + 128];
	FILE *f = fopen("/proc/swaps", "re");
	DIR *d;
	struct dirent *de;

	while (f && fgets(line, sizeof(line), f)) {
		char *sp = strpbrk(line, " \t"), *slash, dir[sizeof(line)];

		if (line[0] != '/' || !sp)
			continue;
		*sp = 0;
		if (!strstr(line, "/pagerd-bench.") || !bench_dead_owner(line))
			continue;
		fprintf(stderr, "%s: removing the stale swap file %s\n", ks->prog, line);
		if (swapoff(line) < 0)
			fprintf(stderr, "%s: swapoff %s: %s\n", ks->prog, line, strerror(errno));
		unlink(line);
		snprintf(dir, sizeof(dir), "%s", line);
		if ((slash = strrchr(dir, '/'))) {
			*slash = 0;
			slash = strrchr(dir, '/');
			if (slash && !strncmp(slash, "/pagerd-bench.", 14))
				bench_remove_stale_workdir(dir);
		}
	}
	if (f)
		fclose(f);
	d = opendir(ks->cg_base);
	while (d && (de = readdir(d))) {
		char path[PATH_MAX + 300];

		if (strncmp(de->d_name, "pagerd-bench-", 13) || !bench_dead_owner(de->d_name))
			continue;
		snprintf(path, sizeof(path), "%s/%s", ks->cg_base, de->d_name);
		if (rmdir(path) == 0)
			fprintf(stderr, "%s: removed the stale cgroup %s\n", ks->prog, path);
	}
	if (d)
		closedir(d);
}

/* The directory every swap file and socket goes in (one file system for
 * both sides).  Returns 0 or -errno (said). */
static inline int bench_make_workdir(struct kside *ks, const char *swap_dir)
{
	snprintf(ks->workdir, sizeof(ks->workdir), "%s/pagerd-bench.%d.XXXXXX",
		 swap_dir, (int)getpid());
	if (!mkdtemp(ks->workdir)) {
		int e = -errno;

		fprintf(stderr, "%s: cannot create a directory in %s: %s\n", ks->prog,
			swap_dir, strerror(-e));
		ks->workdir[0] = 0;
		return e;
	}
	snprintf(ks->kswap, sizeof(ks->kswap), "%s/kernel.swap", ks->workdir);
	return 0;
}

/*
 * What the kernel side needs: root, the v1 memory controller (a limited
 * cgroup is made and removed to see), and a swap file of swap_size bytes,
 * created, formatted and switched on here.  Returns true if it can run;
 * otherwise ks->unavail says why (bench_kernel_teardown() takes down
 * whatever was set up).
 */
static inline bool bench_kernel_setup(struct kside *ks, uint64_t limit, uint64_t swap_size)
{
	char *mkswap[] = { (char *)"mkswap", (char *)"-q", ks->kswap, NULL };
	char why[sizeof(ks->unavail)];
	char line[PATH_MAX + 128];
	FILE *f;
	int e;

	if (geteuid() != 0) {
		snprintf(ks->unavail, sizeof(ks->unavail),
			 "not root (swapon and memory cgroups need it)");
		return false;
	}
	if (access("/sys/fs/cgroup/memory/memory.limit_in_bytes", F_OK) < 0) {
		snprintf(ks->unavail, sizeof(ks->unavail),
			 "no cgroup v1 memory controller at /sys/fs/cgroup/memory");
		return false;
	}
	e = bench_cgroup_make(ks, limit, why, sizeof(why));
	bench_cgroup_remove(ks);
	if (e < 0) {
		snprintf(ks->unavail, sizeof(ks->unavail), "%s", why);
		return false;
	}
	e = bench_make_file(ks->kswap, swap_size);
	if (e < 0) {
		snprintf(ks->unavail, sizeof(ks->unavail),
			 "cannot allocate a %" PRIu64 " MiB swap file %.160s: %s",
			 swap_size >> 20, ks->kswap, strerror(-e));
		return false;
	}
	ks->kswap_created = true;
	e = bench_run_command(&ks->oldmask, mkswap, NULL, 0);
	if (e) {
		snprintf(ks->unavail, sizeof(ks->unavail), "mkswap %.160s: %s", ks->kswap,
			 e < 0 ? strerror(-e) : "failed (exit status above)");
		return false;
	}
	if (swapon(ks->kswap, SWAP_FLAG_PREFER |
		   ((BENCH_SWAP_PRIORITY << SWAP_FLAG_PRIO_SHIFT) & SWAP_FLAG_PRIO_MASK)) < 0) {
		snprintf(ks->unavail, sizeof(ks->unavail), "swapon %.160s: %s", ks->kswap,
			 strerror(errno));
		return false;
	}
	ks->kswap_on = true;

	/* Anyone else's swap area would share the kernel side's traffic. */
	f = fopen("/proc/swaps", "re");
	while (f && fgets(line, sizeof(line), f)) {
		size_t n = strcspn(line, " \t");

		if (line[0] != '/' || (n == strlen(ks->kswap) && !strncmp(line, ks->kswap, n)))
			continue;
		line[n] = 0;
		snprintf(ks->other_swaps + strlen(ks->other_swaps),
			 sizeof(ks->other_swaps) - strlen(ks->other_swaps), " %s", line);
	}
	if (f)
		fclose(f);
	return true;
}

/* Takes down the swap file and the work directory (the caller removed
 * what it put there, and every kernel-side process is gone: swapoff would
 * otherwise read their pages back in). */
static inline void bench_kernel_teardown(struct kside *ks)
{
	bench_cgroup_remove(ks);
	if (ks->kswap_on && swapoff(ks->kswap) < 0)
		fprintf(stderr, "%s: swapoff %s: %s\n", ks->prog, ks->kswap, strerror(errno));
	ks->kswap_on = false;
	if (ks->kswap_created)
		unlink(ks->kswap);
	ks->kswap_created = false;
	if (ks->workdir[0] && rmdir(ks->workdir) < 0)
		fprintf(stderr, "%s: rmdir %s: %s\n", ks->prog, ks->workdir, strerror(errno));
	ks->workdir[0] = 0;
}

/*
 * Starts pagerd (argv[0] its path, argv NULL-terminated) on a socket bound
 * at sock here and passed by socket activation, so that clients can
 * connect at once.  Returns its pid, or -errno (said).
 */
static inline pid_t bench_pagerd_spawn(const struct kside *ks, const char *sock,
				       const char *const argv[])
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	pid_t pid;
	int s, e;

	if (strlen(sock) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "%s: socket path too long: %s\n", ks->prog, sock);
		return -ENAMETOOLONG;
	}
	unlink(sock);
	strcpy(sa.sun_path, sock);
	s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0 || bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(s, 64) < 0) {
		e = -errno;
		fprintf(stderr, "%s: listening on %s: %s\n", ks->prog, sock, strerror(-e));
		if (s >= 0)
			close(s);
		return e;
	}
	pid = fork();
	if (pid < 0) {
		e = -errno;
		close(s);
		fprintf(stderr, "%s: fork: %s\n", ks->prog, strerror(-e));
		return e;
	}
	if (pid == 0) {
		char p[32];

		bench_child_signals(&ks->oldmask);
		/* systemd's socket activation protocol: fd 3, LISTEN_PID. */
		if (s == 3)
			fcntl(3, F_SETFD, 0);
		else if (dup2(s, 3) < 0)
			_exit(127);
		snprintf(p, sizeof(p), "%d", (int)getpid());
		setenv("LISTEN_FDS", "1", 1);
		setenv("LISTEN_PID", p, 1);
		execv(argv[0], (char *const *)argv);
		fprintf(stderr, "%s: exec %s: %s\n", ks->prog, argv[0], strerror(errno));
		_exit(127);
	}
	close(s);
	return pid;
}

/* Waits up to timeout_ms for pid; returns its wait status, or -ETIMEDOUT. */
static inline int bench_wait_timeout(pid_t pid, int timeout_ms)
{
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000;
	int st;

	for (;;) {
		pid_t w = waitpid(pid, &st, WNOHANG);

		if (w == pid)
			return st;
		if (w < 0 && errno != EINTR)
			return -errno;
		if (now_ns() > deadline)
			return -ETIMEDOUT;
		usleep(5000);
	}
}

/* Stops a pagerd: SIGTERM, then SIGKILL after timeout_ms.  Returns 0 if
 * it exited in order, else -1 having said how it ended. */
static inline int bench_pagerd_stop(const struct kside *ks, pid_t pid, int timeout_ms)
{
	int st, rc = 0;

	if (pid <= 0)
		return 0;
	kill(pid, SIGTERM);
	st = bench_wait_timeout(pid, timeout_ms);
	if (st == -ETIMEDOUT) {
		fprintf(stderr, "%s: pagerd did not exit %d s after SIGTERM: killing it\n",
			ks->prog, timeout_ms / 1000);
		kill(pid, SIGKILL);
		bench_wait_timeout(pid, timeout_ms);
		rc = -1;
	} else if (st >= 0 && WIFSIGNALED(st)) {
		fprintf(stderr, "%s: pagerd died of %s\n", ks->prog, strsignal(WTERMSIG(st)));
		rc = -1;
	} else if (st >= 0 && WEXITSTATUS(st)) {
		fprintf(stderr, "%s: pagerd exited with status %d\n", ks->prog,
			WEXITSTATUS(st));
		rc = -1;
	}
	return rc;
}

/* $PAGERD, else build/pagerd next to build/bench/PROGRAM. */
static inline const char *bench_find_pagerd(void)
{
	static char path[PATH_MAX];
	const char *env = getenv("PAGERD");
	ssize_t n;
	char *slash;

	if (env && *env)
		return env;
	n = readlink("/proc/self/exe", path, sizeof(path) - 16);
	if (n <= 0)
		return "pagerd";
	path[n] = 0;
	if ((slash = strrchr(path, '/')))
		*slash = 0;
	if ((slash = strrchr(path, '/')))
		strcpy(slash, "/pagerd");
	return path;
}

#endif
