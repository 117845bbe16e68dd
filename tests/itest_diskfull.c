/* SPDX-License-Identifier: MIT */
/*
 * Integration tests for a swap that cannot take pages: a full filesystem,
 * writes that fail, slots that cannot be recorded.  The README's promise:
 * when nothing can be evicted, resident memory runs over the limit and no
 * data is lost; the application never hangs and pagerd does not spin.
 *
 *   sparse_swap_refused  a sparse swap file larger than its 64 MiB
 *                        filesystem is refused at start, with a line that
 *                        says how much fits; one that fits is allocated
 *                        whole (no hole left for a write-back to meet)
 *   new_swap_sized_to_disk  a new swap file without swap_size takes at
 *                        most half the free space (not a fixed 4 GiB)
 *   disk_fills           the swap file's blocks are taken from under it
 *                        and the filesystem filled (as on a filesystem
 *                        without fallocate, a thin device, a copy-on-write
 *                        one): a client writing 4x its limit finishes,
 *                        every byte reads back, pagerd does not spin, its
 *                        log stays short, status reports the retired slots
 *   write_eio            every swap write of the region fails with EIO
 *                        (injected): the same, then writes work again and
 *                        the region returns under its limit
 *   write_short          writes stop half-way, the rest ENOSPC: the same
 *   slot_record_fails    the writes succeed but their slots cannot be
 *                        recorded (region_set_slot fails): no page is
 *                        punched without its copy recorded, none is lost
 *
 * The small filesystem is a 64 MiB tmpfs (O_DIRECT since Linux 6.6), or an
 * ext2 image on a loop device where tmpfs lacks O_DIRECT, mounted in a
 * mount namespace of the test's own so that it goes when the test does.
 * Tests that need it skip, saying why, where nothing can be mounted.
 */
#include <setjmp.h> /* cmocka.h needs these four first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pager.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define MiB (1ULL << 20)
/* Region and limit: the client writes 4x what it may keep resident. */
#define LIMIT (16 * MiB)
#define REGION (4 * LIMIT)
/* A client that has not finished by then is stuck (the bug): fail. */
#define CLIENT_TIMEOUT_MS 120000
/* pagerd's log over a whole test: a few lines, not megabytes. */
#define LOG_MAX_BYTES (16 * 1024)
/* Idle after the client's work, pagerd may use this share of a CPU. */
#define IDLE_CPU_PERCENT 15

static size_t ps;
static char swap_dir[64];       /* O_DIRECT works here */
static char small_fs[64];       /* the 64 MiB filesystem, or "" */
static char small_fs_why[160];  /* why there is none */

struct ctx {
	struct test_pagerd d;
	bool running;
	char swap[128];
	char log[128];
	pid_t client;
	int to_client, from_client;
};

/* ---- pagerd, with its log in a file ------------------------------------ */

static int start_logged(struct ctx *c, const char *const *args)
{
	int saved = dup(2), lf, e;

	static int seq;

	if (*c->log && !getenv("ITEST_KEEP_LOGS"))
		unlink(c->log); /* a previous start's */
	snprintf(c->log, sizeof(c->log), "%s/pagerd-diskfull.%d.%d.log", swap_dir,
		 (int)getpid(), ++seq);
	lf = open(c->log, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
	assert_true(saved >= 0 && lf >= 0);
	fflush(stderr);
	dup2(lf, 2);
	e = test_pagerd_start(&c->d, args);
	dup2(saved, 2);
	close(saved);
	close(lf);
	if (e == 0)
		c->running = true;
	return e;
}

static off_t log_size(const struct ctx *c)
{
	struct stat st;

	return stat(c->log, &st) == 0 ? st.st_size : -1;
}

static bool log_has(const struct ctx *c, const char *what)
{
	char buf[LOG_MAX_BYTES * 4];
	FILE *f = fopen(c->log, "r");
	size_t n;

	if (!f)
		return false;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return strstr(buf, what) != NULL;
}

static void dump_log(const struct ctx *c)
{
	char line[512];
	FILE *f = fopen(c->log, "r");
	int n = 0;

	if (!f)
		return;
	while (fgets(line, sizeof(line), f) && n++ < 40)
		fprintf(stderr, "pagerd| %s", line);
	fclose(f);
}

/* utime + stime of a process, in clock ticks. */
static uint64_t cpu_ticks(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long ut = 0, st = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	assert_non_null(f);
	assert_non_null(fgets(buf, sizeof(buf), f));
	fclose(f);
	p = strrchr(buf, ')'); /* the name may hold spaces */
	assert_non_null(p);
	/* After ')': state(3) ... utime(14) stime(15). */
	assert_int_equal(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
				&ut, &st), 2);
	return ut + st;
}

/*
 * Not spinning: over a second of the test doing nothing, pagerd (whose
 * client is done and idle) uses a small share of a CPU.  This is no race:
 * an idle pagerd uses none whatever the machine's speed, and one that
 * retries failing writes in a loop (the bug: 80% of a CPU) uses a large
 * share of it however many others share the CPUs.
 */
static void assert_not_spinning(struct ctx *c)
{
	long hz = sysconf(_SC_CLK_TCK);
	struct timespec one = { 1, 0 };
	uint64_t t0 = cpu_ticks(c->d.pid), used;

	nanosleep(&one, NULL);
	used = cpu_ticks(c->d.pid) - t0;
	printf("pagerd used %" PRIu64 " of %ld ticks idle\n", used, hz);
	assert_true(used * 100 <= (uint64_t)hz * IDLE_CPU_PERCENT);
}

static void stop(struct ctx *c)
{
	if (c->running)
		assert_int_equal(test_pagerd_stop(&c->d), 0);
	c->running = false;
	if (*c->swap)
		unlink(c->swap);
	if (!getenv("ITEST_KEEP_LOGS"))
		unlink(c->log);
}

static int inject(struct ctx *c, uint64_t region, uint32_t kind)
{
	struct proto_msg m = { 0 };
	int s = test_control_connect(c->d.sock), e;

	assert_true(s >= 0);
	m.body.test_inject.region_id = region;
	m.body.test_inject.kind = kind;
	e = test_raw_call(s, &m, PROTO_TEST_INJECT, 0, NULL, 0, NULL);
	close(s);
	return e;
}

/* ---- the client: a child process ---------------------------------------- */

static uint64_t word(uint64_t page, uint64_t i)
{
	return (page << 24) ^ i ^ 0x9e3779b97f4a7c15ULL;
}

static sigjmp_buf bus_jmp;

static void on_sigbus(int sig)
{
	(void)sig;
	siglongjmp(bus_jmp, 1);
}

/* Pages of the region that do not read back right (SIGBUS counts). */
static uint64_t check_all(volatile uint64_t *b, uint64_t npages)
{
	volatile uint64_t bad = 0;

	for (volatile uint64_t p = 0; p < npages; p++) {
		if (sigsetjmp(bus_jmp, 1)) {
			bad++;
			continue;
		}
		for (size_t i = 0; i < ps / 8; i++)
			if (b[p * ps / 8 + i] != word(p, i)) {
				bad++;
				break;
			}
	}
	return bad;
}

static void send_u64(int fd, uint64_t v)
{
	if (write(fd, &v, sizeof(v)) != sizeof(v))
		_exit(9);
}

static bool recv_u64(int fd, uint64_t *v, int timeout_ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };

	if (poll(&pfd, 1, timeout_ms) != 1)
		return false;
	return read(fd, v, sizeof(*v)) == sizeof(*v);
}

/*
 * Creates a region of REGION bytes limited to LIMIT, says its id, waits
 * for a word (0: exit), writes every page and reads every page back,
 * says how many were wrong; then for each further word, checks again.
 */
static void client_main(const char *sock, int in, int out)
{
	struct pager_opts o = { .sz = sizeof(o), .socket_path = sock,
				.flags = PAGER_OPEN_NO_PRIVATE };
	struct pager_region_opts ro = { .sz = sizeof(ro), .memory_limit = LIMIT };
	struct sigaction sa = { .sa_handler = on_sigbus };
	struct pager_region *r;
	struct pager *p;
	uint64_t go, n = REGION / ps;
	uint64_t *b;

	sigaction(SIGBUS, &sa, NULL);
	if (pager_open(&p, &o) < 0 || pager_region_create(p, REGION, &ro, &r) < 0)
		_exit(2);
	b = pager_region_addr(r);
	send_u64(out, (uint64_t)pager_region_id(r));
	if (!recv_u64(in, &go, -1) || !go)
		_exit(0);
	for (uint64_t pg = 0; pg < n; pg++)
		for (size_t i = 0; i < ps / 8; i++)
			b[pg * ps / 8 + i] = word(pg, i);
	send_u64(out, check_all(b, n));
	while (recv_u64(in, &go, -1) && go)
		send_u64(out, check_all(b, n));
	pager_close(p);
	_exit(0);
}

static uint64_t client_start(struct ctx *c)
{
	int down[2], up[2];
	uint64_t id;

	assert_int_equal(pipe2(down, O_CLOEXEC), 0);
	assert_int_equal(pipe2(up, O_CLOEXEC), 0);
	c->client = fork();
	assert_true(c->client >= 0);
	if (c->client == 0)
		client_main(c->d.sock, down[0], up[1]);
	close(down[0]);
	close(up[1]);
	c->to_client = down[1];
	c->from_client = up[0];
	assert_true(recv_u64(c->from_client, &id, CLIENT_TIMEOUT_MS));
	return id;
}

/* Asks the client to (write and) check its region; returns the bad pages,
 * or fails the test if the client is stuck or died. */
static uint64_t client_round(struct ctx *c)
{
	uint64_t bad;

	send_u64(c->to_client, 1);
	if (!recv_u64(c->from_client, &bad, CLIENT_TIMEOUT_MS)) {
		dump_log(c);
		fail_msg("the client is stuck or died (no answer in %d s)",
			 CLIENT_TIMEOUT_MS / 1000);
	}
	return bad;
}

static void client_finish(struct ctx *c)
{
	int ws;

	send_u64(c->to_client, 0);
	close(c->to_client);
	close(c->from_client);
	assert_int_equal(waitpid(c->client, &ws, 0), c->client);
	c->client = 0;
	assert_true(WIFEXITED(ws));
	assert_int_equal(WEXITSTATUS(ws), 0);
}

/* Polls pagerd's status until cond holds (each round trip is the wait:
 * pagerd answers after what it had queued); false after timeout_ms. */
static bool wait_status(struct ctx *c, bool (*cond)(const struct proto_reply *),
			int timeout_ms, struct proto_reply *ret)
{
	struct timespec t0, t, tick = { 0, 20 * 1000 * 1000 };

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		assert_int_equal(test_status(c->d.sock, ret), 0);
		if (cond(ret))
			return true;
		clock_gettime(CLOCK_MONOTONIC, &t);
		if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 > timeout_ms)
			return false;
		nanosleep(&tick, NULL);
	}
}

static bool back_under_limit(const struct proto_reply *s)
{
	return !s->swap_failing && s->resident_pages * ps <= LIMIT;
}

/* ---- sparse_swap_refused ------------------------------------------------ */

static bool need_small_fs(void)
{
	if (*small_fs)
		return true;
	printf("skipped: %s\n", small_fs_why);
	return false;
}

static void make_sparse(const char *path, uint64_t size)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	close(fd);
}

static void sparse_swap_refused(void **state)
{
	struct ctx *c = *state;
	const char *args[] = { "--swap", c->swap, "--memory-limit", "64M", NULL };
	struct proto_reply st;
	struct stat sb;
	int ws;

	if (!need_small_fs())
		skip();
	snprintf(c->swap, sizeof(c->swap), "%s/swap", small_fs);
	make_sparse(c->swap, 256 * MiB);
	assert_int_equal(start_logged(c, args), 0);
	/* It exits at start (1: could not start), before serving anyone:
	 * the connection made meanwhile ends without an answer. */
	if (test_status(c->d.sock, &st) == 0) {
		dump_log(c);
		fail_msg("pagerd runs on a sparse swap file its filesystem cannot hold");
	}
	assert_int_equal(waitpid(c->d.pid, &ws, 0), c->d.pid);
	c->running = false;
	unlink(c->d.sock);
	rmdir(c->d.dir);
	if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 1)
		dump_log(c);
	assert_true(WIFEXITED(ws));
	assert_int_equal(WEXITSTATUS(ws), 1);
	/* ...saying why and what would fit. */
	if (!log_has(c, "set swap_size to at most"))
		dump_log(c);
	assert_true(log_has(c, "set swap_size to at most"));

	/* A sparse file that fits is allocated whole at start. */
	make_sparse(c->swap, 32 * MiB);
	assert_int_equal(start_logged(c, args), 0);
	assert_int_equal(test_status(c->d.sock, &st), 0);
	assert_int_equal(stat(c->swap, &sb), 0);
	assert_true((uint64_t)sb.st_blocks * 512 >= 32 * MiB);
	stop(c);
}

/* ---- new_swap_sized_to_disk -------------------------------------------- */

/* A new swap file without swap_size (the shipped configuration's first
 * start) takes no more than half the free space: on the 64 MiB filesystem,
 * 32 MiB at most, not 4 GiB (which it could not even allocate). */
static void new_swap_sized_to_disk(void **state)
{
	struct ctx *c = *state;
	const char *args[] = { "--swap", c->swap, "--memory-limit", "64M", NULL };
	struct proto_reply st;
	struct stat sb;

	if (!need_small_fs())
		skip();
	snprintf(c->swap, sizeof(c->swap), "%s/swap", small_fs);
	unlink(c->swap);
	assert_int_equal(start_logged(c, args), 0);
	if (test_status(c->d.sock, &st) != 0) {
		dump_log(c);
		fail_msg("pagerd could not make a swap file on a 64 MiB filesystem");
	}
	assert_int_equal(stat(c->swap, &sb), 0);
	printf("a new swap file of %lld bytes, %" PRIu64 " slots\n", (long long)sb.st_size,
	       st.swap_total);
	assert_true((uint64_t)sb.st_size <= 32 * MiB);
	assert_true(st.swap_total * ps == (uint64_t)sb.st_size);
	assert_true(st.swap_total >= 16);
	stop(c);
}

/* ---- the runs: a client writing 4x its limit against a failing swap ----- */

/*
 * The client writes and checks every page; pagerd must let it finish
 * over its limit, then not spin, and say what happened.  Returns the
 * status at the end.
 */
static void run_over_failing_swap(struct ctx *c, uint64_t region, uint32_t kind,
				  struct proto_reply *ret)
{
	if (kind)
		assert_int_equal(inject(c, region, kind), 0);
	assert_int_equal(client_round(c), 0);
	assert_int_equal(test_status(c->d.sock, ret), 0);
	printf("pagerd used %" PRIu64 " ticks of CPU (%ld a second) in all so far\n",
	       cpu_ticks(c->d.pid), sysconf(_SC_CLK_TCK));
	printf("resident %" PRIu64 " pages (limit %llu), swap used %" PRIu64
	       ", bad %" PRIu64 ", write-back failed %" PRIu64 " pages, failing %u, over limit %u\n",
	       ret->resident_pages, (unsigned long long)(LIMIT / ps), ret->swap_used,
	       ret->swap_bad, ret->counters.writeback_failed_pages, ret->swap_failing, ret->over_limit);
	/* It ran over its limit rather than hang, and says so. */
	assert_true(ret->resident_pages * ps > LIMIT);
	assert_true(ret->counters.writeback_failed_pages > 0);
	assert_int_equal(ret->counters.poisoned, 0);
	assert_not_spinning(c);
}

static void assert_log_short(struct ctx *c)
{
	off_t n = log_size(c);

	printf("pagerd logged %lld bytes\n", (long long)n);
	if (n > (off_t)LOG_MAX_BYTES)
		dump_log(c);
	assert_true(n >= 0 && n <= (off_t)LOG_MAX_BYTES);
}

/* Writes (no fallocate: ext2 has none) a file of `bytes`. */
static void fill_file(const char *path, uint64_t bytes)
{
	static char buf[1 << 20];
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	memset(buf, 0x5a, sizeof(buf));
	while (bytes) {
		size_t n = bytes < sizeof(buf) ? bytes : sizeof(buf);

		assert_int_equal(write(fd, buf, n), (ssize_t)n);
		bytes -= n;
	}
	close(fd);
}

static void disk_fills(void **state)
{
	struct ctx *c = *state;
	const char *args[] = { "--swap", c->swap, "--swap-size", "48M", "--test-hooks", NULL };
	struct proto_reply st;
	struct statvfs vfs;
	char filler[128];
	uint64_t id, avail;
	int fd;

	if (!need_small_fs())
		skip();
	snprintf(c->swap, sizeof(c->swap), "%s/swap", small_fs);
	unlink(c->swap);
	assert_int_equal(start_logged(c, args), 0);
	assert_int_equal(test_status(c->d.sock, &st), 0); /* swap is open */
	id = client_start(c);
	/* Nothing is in swap yet: its blocks go, and the disk fills up to
	 * 8 MiB, so that most write-backs meet a full disk. */
	fd = open(c->swap, O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
				   48 * MiB), 0);
	close(fd);
	snprintf(filler, sizeof(filler), "%s/filler", small_fs);
	assert_int_equal(statvfs(small_fs, &vfs), 0);
	avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	assert_true(avail > 16 * MiB);
	fill_file(filler, avail - 8 * MiB);

	run_over_failing_swap(c, id, 0, &st);
	/* The slots the disk could not back are retired, not retried. */
	assert_true(st.swap_bad > 0);
	client_finish(c);
	assert_log_short(c);
	stop(c);
	unlink(filler);
}

static void injected(struct ctx *c, uint32_t kind, bool bad_slots)
{
	const char *args[] = { "--swap", c->swap, "--swap-size", "256M", "--test-hooks", NULL };
	struct proto_reply st;
	uint64_t id;

	snprintf(c->swap, sizeof(c->swap), "%s/swap.%d", swap_dir, (int)getpid());
	unlink(c->swap);
	assert_int_equal(start_logged(c, args), 0);
	id = client_start(c);
	run_over_failing_swap(c, id, kind, &st);
	assert_true(st.swap_failing);
	if (bad_slots)
		assert_true(st.swap_bad > 0);
	else
		assert_int_equal(st.swap_bad, 0);
	/* Writes work again: the region goes back under its limit, and
	 * every byte is still right, now partly from swap. */
	assert_int_equal(inject(c, id, PROTO_INJECT_CLEAR), 0);
	if (!wait_status(c, back_under_limit, CLIENT_TIMEOUT_MS, &st)) {
		dump_log(c);
		fail_msg("not back under the limit: resident %" PRIu64 ", failing %u",
			 st.resident_pages, st.swap_failing);
	}
	assert_true(st.swap_used > 0);
	assert_int_equal(client_round(c), 0);
	client_finish(c);
	assert_log_short(c);
	stop(c);
}

static void write_eio(void **state)
{
	injected(*state, PROTO_INJECT_WRITE_EIO, true);
}

static void write_short(void **state)
{
	injected(*state, PROTO_INJECT_WRITE_SHORT, true);
}

static void slot_record_fails(void **state)
{
	injected(*state, PROTO_INJECT_SLOT_RECORD, false);
}

/* ---- main -------------------------------------------------------------- */

static int setup(void **state)
{
	*state = calloc(1, sizeof(struct ctx));
	return *state ? 0 : -1;
}

static int teardown(void **state)
{
	struct ctx *c = *state;

	if (c->client > 0) {
		kill(c->client, SIGKILL);
		waitpid(c->client, NULL, 0);
	}
	if (c->running) {
		kill(c->d.pid, SIGKILL);
		waitpid(c->d.pid, NULL, 0);
	}
	if (*c->swap)
		unlink(c->swap);
	if (*c->log && !getenv("ITEST_KEEP_LOGS"))
		unlink(c->log);
	free(c);
	return 0;
}

/*
 * A 64 MiB filesystem that takes O_DIRECT, in a mount namespace of ours
 * (pagerd, our child, sees it; nobody else does, and it goes with us): a
 * tmpfs, else an ext2 image on a loop device.
 */
static void mount_small_fs(void)
{
	char dir[64], cmd[512];

	if (unshare(CLONE_NEWNS) < 0 ||
	    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
		snprintf(small_fs_why, sizeof(small_fs_why),
			 "cannot make a mount namespace (%s): needs root", strerror(errno));
		return;
	}
	snprintf(dir, sizeof(dir), "/tmp/pagerd-smallfs.XXXXXX");
	if (!mkdtemp(dir)) {
		snprintf(small_fs_why, sizeof(small_fs_why), "mkdtemp: %s", strerror(errno));
		return;
	}
	if (mount("pagerd-test", dir, "tmpfs", 0, "size=64M,mode=0700") == 0) {
		if (test_direct_io_works(dir)) {
			snprintf(small_fs, sizeof(small_fs), "%s", dir);
			return;
		}
		umount(dir);
	}
	snprintf(cmd, sizeof(cmd),
		 "img=%s.img; truncate -s 64M $img && mkfs.ext2 -q -F $img >/dev/null 2>&1 && "
		 "mount -o loop $img %s 2>/dev/null; rc=$?; rm -f $img; exit $rc", dir, dir);
	if (system(cmd) == 0 && test_direct_io_works(dir)) {
		snprintf(small_fs, sizeof(small_fs), "%s", dir);
		return;
	}
	rmdir(dir);
	snprintf(small_fs_why, sizeof(small_fs_why),
		 "no 64 MiB filesystem with O_DIRECT could be mounted (tmpfs lacks it "
		 "before Linux 6.6; no loop device or mkfs.ext2 for an ext2 image)");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(sparse_swap_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(new_swap_sized_to_disk, setup, teardown),
		cmocka_unit_test_setup_teardown(disk_fills, setup, teardown),
		cmocka_unit_test_setup_teardown(write_eio, setup, teardown),
		cmocka_unit_test_setup_teardown(write_short, setup, teardown),
		cmocka_unit_test_setup_teardown(slot_record_fails, setup, teardown),
	};

	ps = (size_t)sysconf(_SC_PAGESIZE);
	setvbuf(stdout, NULL, _IOLBF, 0);
	/* The swap lives on a real disk: O_DIRECT must work in the directory. */
	if (test_pick_swap_dir(swap_dir, sizeof(swap_dir)) < 0) {
		printf("no directory here supports O_DIRECT for a swap file\n");
		return TEST_SKIP;
	}
	mount_small_fs();
	/* A fault never served would hang us: fail instead. */
	int rc = test_run_group(tests, 600);

	if (*small_fs) {
		umount2(small_fs, MNT_DETACH);
		rmdir(small_fs);
	}
	return rc;
}
