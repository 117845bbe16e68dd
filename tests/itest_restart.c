/* SPDX-License-Identifier: MIT */
/*
 * Restarts through systemd's file-descriptor store, with this test playing
 * systemd: it owns the listening socket (pagerd.socket) and a NOTIFY_SOCKET,
 * keeps every descriptor pagerd sends with FDSTORE=1 under its FDNAME (and
 * drops it on FDSTOREREMOVE=1), and starts each new pagerd the way systemd
 * does: the socket and the stored descriptors from fd 3 on, LISTEN_FDS,
 * LISTEN_FDNAMES and LISTEN_PID of the new process.
 *
 *   restart_keeps_every_byte   a client with a region six times pagerd's
 *        memory limit (most of it in swap), two writer and two reader
 *        threads, faults on through a graceful restart (SIGTERM) and a crash
 *        (SIGKILL); each new pagerd reports the same region, every byte is
 *        right at the end, and once the client destroys its region and exits
 *        the store holds nothing of it
 *   restart_named_swap         the same with a swap file pagerd opens by
 *        path: only its slot table travels through the store
 *   restart_with_pool          the same with the compressed pool on: pages
 *        in the pool survive the crashes (written through to the swap)
 *   hostile_store_is_refused   a store with a regular file as a client
 *        socket, a pipe as a userfaultfd, a truncated region state, a name
 *        with a control character, an unknown name and a swap table with no
 *        swap: each is refused with a log line and removed from the store,
 *        and pagerd serves the connection it could adopt and a new client
 *   fd_store_no_stores_nothing --fd-store=no under NOTIFY_SOCKET: nothing
 *        is stored
 *   bad_config_keeps_clients   a typo in pagerd.conf and a restart: the new
 *        pagerd serves on with its predecessor's settings and reports the
 *        errors (log, STATUS=, status reply) until a reload finds the file
 *        good; without clients a bad file still exits 2
 *
 * Nothing sleeps: every wait is a poll() on the notify socket, on pagerd's
 * pidfd or on the client's report pipe, with a deadline that fails the test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../daemon/fdstore.h"
#include "harness.h"
#include "pager.h"

#define WAIT_MS 60000

/* The client's region: six times the daemon's limit. */
#define LIMIT_BYTES (4u << 20)
#define REGION_PAGES 6144

/* ---- systemd, as far as pagerd can tell (tests/harness.c) ---------------- */

/* What a failed test leaves running is ended by teardown(). */
static struct test_sd *running_sd;
static pid_t running_client = -1;

static void fakesd_init(struct test_sd *sd)
{
	running_sd = sd;
	if (test_sd_init(sd, "/var/tmp/pagerd-restart") < 0)
		fail_msg("%s", sd->err);
}

static void fakesd_free(struct test_sd *sd)
{
	test_sd_free(sd);
	running_sd = NULL;
}

static void store_dump(struct test_sd *sd)
{
	static char list[TEST_SD_STORE_MAX * 260];

	test_sd_list(sd, list, sizeof(list));
	fprintf(stderr, "store (%zu): %s\n", sd->n, list);
}

/*
 * Serves the notify socket and watches pagerd until `done` says so, or
 * `fd` (if >= 0) is readable.  Fails the test after WAIT_MS, or when pagerd
 * breaks the notify protocol.
 */
static void fakesd_pump(struct test_sd *sd, bool (*done)(struct test_sd *, void *),
			void *arg, int fd, const char *what)
{
	int e = test_sd_pump(sd, done, arg, fd, WAIT_MS);

	if (e < 0)
		fail_msg("%s", sd->err);
	if (e == 0)
		fail_msg("timed out waiting for %s", what);
}

static bool is_ready(struct test_sd *sd, void *arg)
{
	(void)arg;
	if (sd->exited)
		fail_msg("pagerd exited before READY=1 (status %d); its log:\n%s", sd->status,
			 test_sd_log(sd));
	return sd->ready;
}

static bool has_exited(struct test_sd *sd, void *arg)
{
	(void)arg;
	return sd->exited;
}

/* Starts pagerd with the listening socket and (if with_store) everything
 * in the store, as systemd starts a service; fakesd_start() then waits for
 * READY=1. */
static void fakesd_spawn(struct test_sd *sd, bool with_store, const char *const *args)
{
	if (test_sd_spawn(sd, with_store, args) < 0)
		fail_msg("%s", sd->err);
}

static void fakesd_start(struct test_sd *sd, bool with_store, const char *const *args)
{
	fakesd_spawn(sd, with_store, args);
	fakesd_pump(sd, is_ready, NULL, -1, "READY=1");
}

/* Signals pagerd and waits for it to exit; returns its wait status. */
static int fakesd_kill(struct test_sd *sd, int sig)
{
	if (test_sd_kill(sd, sig, WAIT_MS) < 0)
		fail_msg("%s", sd->err);
	return sd->status;
}

/* SIGTERM: pagerd must exit 0 (an orderly hand-over, nothing leaked). */
static void fakesd_stop(struct test_sd *sd)
{
	int st = fakesd_kill(sd, SIGTERM);

	if (st != 0) {
		char *log = test_sd_log(sd);
		size_t len = strlen(log);

		fail_msg("pagerd exited with status %#x; the end of its log:\n%s", st,
			 len > 8000 ? log + len - 8000 : log);
	}
}

/* ---- the client: a process with writer and reader threads -------------- */

struct work {
	uint8_t *base;
	size_t ps;
	_Atomic uint32_t gen[REGION_PAGES];  /* generation each page was last written with */
	atomic_bool stop;
	atomic_ulong errors;
	atomic_ulong passes[2];              /* of each writer */
	pthread_mutex_t lock;
	pthread_cond_t cond;
};

static uint64_t word_of(uint64_t page, uint32_t gen)
{
	return page << 32 | gen;
}

struct writer_arg {
	struct work *w;
	int idx;
};

/* Rewrites its half of the region, page by page, over and over. */
static void *writer(void *arg)
{
	struct writer_arg *a = arg;
	struct work *w = a->w;
	size_t half = REGION_PAGES / 2, words = w->ps / 8;

	while (!atomic_load(&w->stop)) {
		for (size_t p = a->idx * half; p < (a->idx + 1) * half && !atomic_load(&w->stop); p++) {
			uint64_t *page = (uint64_t *)(w->base + p * w->ps);
			uint32_t g = atomic_load(&w->gen[p]) + 1;

			for (size_t i = 0; i < words; i++)
				page[i] = word_of(p, g);
			atomic_store(&w->gen[p], g);
		}
		pthread_mutex_lock(&w->lock);
		atomic_fetch_add(&w->passes[a->idx], 1);
		pthread_cond_broadcast(&w->cond);
		pthread_mutex_unlock(&w->lock);
	}
	return NULL;
}

/* Reads pages at random: a page once written never reads as another's
 * data or as zeros. */
static void *reader(void *arg)
{
	struct work *w = arg;
	unsigned seed = (unsigned)(uintptr_t)&seed;
	size_t words = w->ps / 8;

	while (!atomic_load(&w->stop)) {
		size_t p = (size_t)rand_r(&seed) % REGION_PAGES;
		uint32_t g = atomic_load(&w->gen[p]);
		const volatile uint64_t *page = (const uint64_t *)(w->base + p * w->ps);
		uint64_t first = page[0], last = page[words - 1];

		if (g && ((first >> 32) != p || (last >> 32) != p ||
			  (uint32_t)first < g || (uint32_t)last < g))
			atomic_fetch_add(&w->errors, 1);
	}
	return NULL;
}

struct child {
	pid_t pid;
	int cmd;    /* to it */
	int report; /* from it */
};

struct report {
	char what;
	uint64_t errors;
	int64_t region_id;
	struct pager_region_stats st;
};

static void child_send(int fd, struct report *r)
{
	if (write(fd, r, sizeof(*r)) != (ssize_t)sizeof(*r))
		_exit(3);
}

static void client_main(const char *sock, const char *image, int cmd, int rep)
{
	struct pager_opts o = { .sz = sizeof(o), .socket_path = sock };
	struct pager_region_opts ro = { .sz = sizeof(ro), .name = "restart-test" };
	static struct work w;
	struct writer_arg wa[2] = { { &w, 0 }, { &w, 1 } };
	pthread_t t[4];
	struct pager_region *r;
	struct pager *p;
	bool running = true;
	char c;

	w.ps = (size_t)sysconf(_SC_PAGESIZE);
	pthread_mutex_init(&w.lock, NULL);
	pthread_cond_init(&w.cond, NULL);
	if (pager_open(&p, &o) < 0 ||
	    pager_region_create(p, REGION_PAGES * w.ps, &ro, &r) < 0)
		_exit(2);
	w.base = pager_region_addr(r);
	pthread_create(&t[0], NULL, writer, &wa[0]);
	pthread_create(&t[1], NULL, writer, &wa[1]);
	pthread_create(&t[2], NULL, reader, &w);
	pthread_create(&t[3], NULL, reader, &w);

	while (read(cmd, &c, 1) == 1) {
		struct report out = { .what = c };

		switch (c) {
		case 'p': { /* both writers finish one more whole pass */
			unsigned long want0 = atomic_load(&w.passes[0]) + 2,
				      want1 = atomic_load(&w.passes[1]) + 2;

			pthread_mutex_lock(&w.lock);
			while (atomic_load(&w.passes[0]) < want0 ||
			       atomic_load(&w.passes[1]) < want1)
				pthread_cond_wait(&w.cond, &w.lock);
			pthread_mutex_unlock(&w.lock);
			break;
		}
		case 's':
			out.st.sz = sizeof(out.st);
			if (pager_region_stats(r, &out.st) < 0)
				_exit(4);
			out.region_id = pager_region_id(r);
			break;
		case 'v': /* stop, then every byte */
			atomic_store(&w.stop, true);
			for (int i = 0; running && i < 4; i++)
				pthread_join(t[i], NULL);
			running = false;
			out.errors = atomic_load(&w.errors);
			for (size_t pg = 0; pg < REGION_PAGES; pg++) {
				const uint64_t *page = (const uint64_t *)(w.base + pg * w.ps);
				uint64_t want = word_of(pg, atomic_load(&w.gen[pg]));

				for (size_t i = 0; i < w.ps / 8; i++)
					if (page[i] != want) {
						out.errors++;
						break;
					}
			}
			break;
		case 'L': /* a region limit of its own */
			out.errors = (uint64_t)-pager_region_set_limit(r, 3u << 20);
			break;
		case 'S': /* start a snapshot */
			out.errors = (uint64_t)-pager_region_snapshot_start(r, image, NULL);
			break;
		case 'P': { /* its end: each poll is a round trip to pagerd */
			struct pager_snapshot_progress pr = { .sz = sizeof(pr) };
			int e;

			while ((e = pager_region_snapshot_poll(r, &pr)) == 0)
				;
			out.errors = (uint64_t)(e < 0 ? -e : -pr.status);
			break;
		}
		case 'd':
			if (pager_region_destroy(r) < 0)
				_exit(5);
			break;
		case 'q':
			pager_close(p);
			child_send(rep, &out);
			_exit(0);
		}
		child_send(rep, &out);
	}
	_exit(6);
}

static void client_start(struct child *cl, const char *sock, const char *image)
{
	int cmd[2], rep[2];

	assert_int_equal(pipe2(cmd, O_CLOEXEC), 0);
	assert_int_equal(pipe2(rep, O_CLOEXEC), 0);
	cl->pid = fork();
	assert_true(cl->pid >= 0);
	if (cl->pid == 0) {
		close(cmd[1]);
		close(rep[0]);
		client_main(sock, image, cmd[0], rep[1]);
	}
	running_client = cl->pid;
	close(cmd[0]);
	close(rep[1]);
	cl->cmd = cmd[1];
	cl->report = rep[0];
}

static void client_send(struct child *cl, char c)
{
	assert_int_equal(write(cl->cmd, &c, 1), 1);
}

/* Waits for the report on command c, serving the notify socket meanwhile
 * (pagerd may be storing or removing descriptors). */
static struct report client_wait(struct test_sd *sd, struct child *cl, char c)
{
	struct report r;

	fakesd_pump(sd, NULL, NULL, cl->report, "the client");
	if (read(cl->report, &r, sizeof(r)) != (ssize_t)sizeof(r)) {
		int st = 0;

		waitpid(cl->pid, &st, 0);
		fail_msg("the client died on '%c' (status 0x%x); pagerd log:\n%s", c, st,
			 test_sd_log(sd));
	}
	assert_int_equal(r.what, c);
	return r;
}

static struct report client_call(struct test_sd *sd, struct child *cl, char c)
{
	client_send(cl, c);
	return client_wait(sd, cl, c);
}

static bool client_alive(struct child *cl)
{
	siginfo_t si = { 0 };

	return waitid(P_PID, (id_t)cl->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
	       si.si_pid == 0;
}

static bool no_region_names(struct test_sd *sd, void *arg)
{
	(void)arg;
	return test_sd_count(sd, "r") == 0;
}

static bool no_client_names(struct test_sd *sd, void *arg)
{
	(void)arg;
	return test_sd_count(sd, "c") == 0;
}

/* ---- tests ------------------------------------------------------------- */

static void assert_stored(struct test_sd *sd, const char *name)
{
	if (!test_sd_find(sd, name)) {
		store_dump(sd);
		fail_msg("'%s' is not in the store", name);
	}
}

/*
 * The client runs through a graceful restart and `crashes` SIGKILLs; with
 * named_swap pagerd opens a swap file by path each time, else it makes an
 * unnamed one that travels through the store.
 */
static void restart_run(bool named_swap, int crashes, bool pool)
{
	static struct test_sd sd;
	static char swap_path[200], image[200];
	const char *args[] = { "--memory-limit", "4M", "--swap-size", "64M",
			       NULL, NULL, NULL, NULL, NULL, NULL, NULL };
	const char *rbd = getenv("ITEST_SWAP_RBD");
	int na = 4;
	struct child cl;
	struct report r;
	struct proto_reply st;
	int64_t id;

	fakesd_init(&sd);
	if (named_swap && rbd && *rbd) {
		/* The swap on an RBD image of the cluster of CEPH_CONF
		 * (tests/itest_rbd_swap.sh): its slot table must travel
		 * through the store as a file swap's does; the image is
		 * opened again by name. */
		snprintf(swap_path, sizeof(swap_path), "rbd:%s/restart-%d", rbd, (int)getpid());
		args[na++] = "--swap";
		args[na++] = swap_path;
		args[na++] = "--ceph-conf";
		args[na++] = getenv("CEPH_CONF");
	} else if (named_swap) {
		snprintf(swap_path, sizeof(swap_path), "%s/swap", sd.dir);
		args[na++] = "--swap";
		args[na++] = swap_path;
	}
	if (pool) {
		/* The client's pages (one word repeated) all compress. */
		args[na++] = "--pool-percent";
		args[na++] = "50";
	}
	fakesd_start(&sd, false, args);
	snprintf(image, sizeof(image), "%s/image", sd.dir);
	client_start(&cl, sd.sock, image);
	r = client_call(&sd, &cl, 'p');
	r = client_call(&sd, &cl, 's');
	id = r.region_id;
	assert_true(r.st.swapped > REGION_PAGES / 2);
	if (pool)
		assert_true(r.st.pool_pages > 0);

	/* Everything a successor needs is in the store. */
	char name[64];

	if (named_swap)
		assert_null(test_sd_find(&sd, "swap")); /* opened again by path */
	else
		assert_stored(&sd, "swap");
	assert_stored(&sd, "swapmeta");
	for (const char *const *s = (const char *const[]){ "sock", "state", "uffd", "agent",
							     "pagemap", NULL };
	     *s; s++) {
		snprintf(name, sizeof(name), "c1.%s", *s);
		assert_stored(&sd, name);
	}
	snprintf(name, sizeof(name), "r%lld.mem", (long long)id);
	assert_stored(&sd, name);
	snprintf(name, sizeof(name), "r%lld.state", (long long)id);
	assert_stored(&sd, name);

	/* Graceful: SIGTERM drains and hands over; the client only waits,
	 * and a request it sends meanwhile is answered by the successor.  A
	 * snapshot running then fails cleanly (ESHUTDOWN), unless it was
	 * quick enough to finish first. */
	r = client_call(&sd, &cl, 'L');
	assert_int_equal(r.errors, 0);
	r = client_call(&sd, &cl, 's');
	uint64_t swap_outs = r.st.swap_outs;

	assert_true(swap_outs > 0);
	r = client_call(&sd, &cl, 'S');
	assert_int_equal(r.errors, 0);
	fakesd_stop(&sd);
	assert_true(client_alive(&cl));
	client_send(&cl, 's');
	fakesd_start(&sd, true, args);
	assert_non_null(strstr(test_sd_log(&sd), "client 1 adopted"));
	r = client_wait(&sd, &cl, 's');
	assert_int_equal(r.region_id, id);
	/* Its limit and counters came along. */
	assert_int_equal(r.st.memory_limit, 3u << 20);
	assert_true(r.st.swap_outs >= swap_outs);
	r = client_call(&sd, &cl, 'P');
	printf("snapshot across the restart: %s\n", r.errors ? strerror((int)r.errors) : "complete");
	if (r.errors != 0 && r.errors != ESHUTDOWN)
		fail_msg("snapshot across a restart: %s", strerror((int)r.errors));
	r = client_call(&sd, &cl, 'p');
	r = client_call(&sd, &cl, 's');
	assert_int_equal(r.region_id, id);
	assert_true(r.st.swapped > 0);
	assert_int_equal(test_status(sd.sock, &st), 0);
	assert_int_equal(st.clients, 1);
	assert_int_equal(st.regions, 1);
	assert_int_equal(st.pid, sd.pid);

	/* Crashes: each successor settles what was in flight. */
	for (int i = 0; i < crashes; i++) {
		fakesd_kill(&sd, SIGKILL);
		assert_true(WIFSIGNALED(sd.status));
		client_send(&cl, 's');
		fakesd_start(&sd, true, args);
		r = client_wait(&sd, &cl, 's');
		assert_int_equal(r.region_id, id);
		r = client_call(&sd, &cl, i % 2 ? 'p' : 's');
	}
	assert_non_null(strstr(test_sd_log(&sd), "adopted after a crash"));
	r = client_call(&sd, &cl, 'p');
	r = client_call(&sd, &cl, 's');
	assert_int_equal(r.region_id, id);
	assert_true(r.st.swapped > 0);

	/* And once more, graceful, right after the crash. */
	fakesd_stop(&sd);
	fakesd_start(&sd, true, args);
	r = client_call(&sd, &cl, 'p');

	r = client_call(&sd, &cl, 'v');
	assert_int_equal(r.errors, 0);
	if (strstr(test_sd_log(&sd), "could not be vouched for"))
		fail_msg("pages were lost:\n%s", test_sd_log(&sd));

	/* Nothing stale stays in the store. */
	r = client_call(&sd, &cl, 'd');
	fakesd_pump(&sd, no_region_names, NULL, -1, "the region's names to leave the store");
	r = client_call(&sd, &cl, 'q');
	fakesd_pump(&sd, no_client_names, NULL, -1, "the client's names to leave the store");
	int cst;

	assert_int_equal(waitpid(cl.pid, &cst, 0), cl.pid);
	running_client = -1;
	assert_true(WIFEXITED(cst) && WEXITSTATUS(cst) == 0);
	if (sd.n != (named_swap ? 2u : 3u)) {
		store_dump(&sd);
		fail_msg("the store should hold only the swap (if unnamed), its table and the configuration");
	}
	fakesd_stop(&sd);
	/* What each successor found and waited for, for the test log. */
	char *all = test_sd_log(&sd);

	for (char *l = all, *eol; *l; l = eol ? eol + 1 : l + strlen(l)) {
		eol = strchr(l, '\n');
		if (eol)
			*eol = '\0';
		if (strstr(l, "adopted") || strstr(l, "waiting for the previous"))
			printf("%s\n", l);
	}
	close(cl.cmd);
	close(cl.report);
	fakesd_free(&sd);
}

static void restart_keeps_every_byte(void **state)
{
	(void)state;
	/* More crashes with RESTART_CRASHES=N. */
	restart_run(false, getenv("RESTART_CRASHES") ? atoi(getenv("RESTART_CRASHES")) : 3,
		    false);
}

static void restart_named_swap(void **state)
{
	(void)state;
	restart_run(true, 1, false);
}

/* The same with the compressed pool on: a crash loses the pool, so under
 * the fd store its pages are written through to the swap as well (before,
 * the successor found garbage in their slots and poisoned them). */
static void restart_with_pool(void **state)
{
	(void)state;
	restart_run(false, 2, true);
}

/*
 * The swap on RBD, and the configuration names another image (of the same
 * size) across a restart: the stored slot table describes the old image,
 * so the successor refuses it, loudly, and the client's pages that were
 * in swap are lost (poisoned), never read from the new image.  Needs the
 * cluster of tests/itest_rbd_swap.sh (ITEST_SWAP_RBD, CEPH_CONF).
 */
static void restart_rbd_other_image(void **state)
{
	static struct test_sd sd;
	static char swap_a[200], swap_b[200], image[200];
	const char *rbd = getenv("ITEST_SWAP_RBD");
	const char *args[] = { "--memory-limit", "4M", "--swap-size", "64M",
			       "--swap", swap_a, "--ceph-conf", getenv("CEPH_CONF"), NULL };
	struct child cl;
	struct report r;
	const char *log;
	int cst;

	(void)state;
	if (!rbd || !*rbd || !getenv("CEPH_CONF"))
		skip();
	snprintf(swap_a, sizeof(swap_a), "rbd:%s/restart-a-%d", rbd, (int)getpid());
	snprintf(swap_b, sizeof(swap_b), "rbd:%s/restart-b-%d", rbd, (int)getpid());
	fakesd_init(&sd);
	fakesd_start(&sd, false, args);
	snprintf(image, sizeof(image), "%s/image", sd.dir);
	client_start(&cl, sd.sock, image);
	r = client_call(&sd, &cl, 'p');
	r = client_call(&sd, &cl, 's');
	assert_true(r.st.swapped > REGION_PAGES / 2);
	assert_stored(&sd, "swapmeta");
	fakesd_stop(&sd);

	args[5] = swap_b;
	fakesd_start(&sd, true, args);
	log = test_sd_log(&sd);
	if (!strstr(log, "the stored slot table is refused: made for another swap file, "
			 "device or RBD image") ||
	    !strstr(log, "refusing 'swapmeta'"))
		fail_msg("the table of another image was not refused:\n%s", log);
	assert_non_null(strstr(log, "client 1 adopted"));

	kill(cl.pid, SIGKILL);
	assert_int_equal(waitpid(cl.pid, &cst, 0), cl.pid);
	running_client = -1;
	fakesd_stop(&sd);
	close(cl.cmd);
	close(cl.report);
	fakesd_free(&sd);
}

/*
 * A region restored from an RBD image (no prefetch, a few pages read)
 * through a graceful restart: the successor opens the image again by
 * name and every page still in it is read, byte-identical, never SIGBUS.
 */
#define RR_PAGES 512

static uint64_t rr_word(uint64_t page, size_t i)
{
	return page * 0x9E3779B97F4A7C15ull ^ i ^ 0x7272;
}

static sigjmp_buf rr_jmp;

static void rr_bus(int sig)
{
	(void)sig;
	siglongjmp(rr_jmp, 1);
}

/* The child: restores, reads 2 pages, says so, waits for the go, then
 * checks every page.  Exit 0 all right, 1 a wrong byte, 2 SIGBUS, 3 setup. */
static int rr_client(const char *sock, const char *image, int ready, int go)
{
	struct pager_opts o = { .sz = sizeof(o), .socket_path = sock,
				.flags = PAGER_OPEN_NO_PRIVATE };
	struct pager_region_opts ro = { .sz = sizeof(ro), .flags = PAGER_REGION_NO_PREFETCH };
	struct sigaction sa = { .sa_handler = rr_bus };
	size_t ps = (size_t)sysconf(_SC_PAGESIZE);
	struct pager_region *r;
	struct pager *p;
	const volatile uint64_t *m;
	char c = 0;

	if (pager_open(&p, &o) < 0 || pager_region_restore(p, image, &ro, &r) < 0)
		return 3;
	m = pager_region_addr(r);
	/* Two pages (each read with up to 63 after it): most stay. */
	for (uint64_t pg = 0; pg < RR_PAGES; pg += RR_PAGES / 2)
		if (m[pg * (ps / 8)] != rr_word(pg, 0))
			return 1;
	if (write(ready, &c, 1) != 1 || read(go, &c, 1) != 1)
		return 3;
	sigaction(SIGBUS, &sa, NULL);
	if (sigsetjmp(rr_jmp, 1))
		return 2;
	for (uint64_t pg = 0; pg < RR_PAGES; pg++)
		for (size_t i = 0; i < ps / 8; i++)
			if (m[pg * (ps / 8) + i] != rr_word(pg, i))
				return 1;
	pager_close(p);
	return 0;
}

static void restart_rbd_restore(void **state)
{
	static struct test_sd sd;
	static char image[200];
	const char *rbd = getenv("ITEST_SWAP_RBD");
	const char *args[] = { "--ceph-conf", getenv("CEPH_CONF"), NULL };
	struct pager_opts o = { .sz = sizeof(o), .flags = PAGER_OPEN_NO_PRIVATE };
	size_t ps = (size_t)sysconf(_SC_PAGESIZE);
	struct pager_region *r;
	struct pager *p;
	int ready[2], go[2], st;
	uint64_t *m;
	pid_t pid;
	char c = 'g';

	(void)state;
	if (!rbd || !*rbd || !getenv("CEPH_CONF"))
		skip();
	snprintf(image, sizeof(image), "rbd:%s/restart-restore-%d", rbd, (int)getpid());
	fakesd_init(&sd);
	fakesd_start(&sd, false, args);
	o.socket_path = sd.sock;
	assert_int_equal(pager_open(&p, &o), 0);
	assert_int_equal(pager_region_create(p, RR_PAGES * ps, NULL, &r), 0);
	m = pager_region_addr(r);
	for (uint64_t pg = 0; pg < RR_PAGES; pg++)
		for (size_t i = 0; i < ps / 8; i++)
			m[pg * (ps / 8) + i] = rr_word(pg, i);
	assert_int_equal(pager_region_snapshot(r, image, NULL), 0);
	pager_close(p);

	assert_int_equal(pipe(ready), 0);
	assert_int_equal(pipe(go), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(rr_client(sd.sock, image, ready[1], go[0]));
	running_client = pid;
	close(ready[1]);
	close(go[0]);
	fakesd_pump(&sd, NULL, NULL, ready[0], "the client's restore");
	if (read(ready[0], &c, 1) != 1)
		fail_msg("the client died before its restore; pagerd log:\n%s", test_sd_log(&sd));
	{
		static char list[TEST_SD_STORE_MAX * 260];

		test_sd_list(&sd, list, sizeof(list));
		if (!strstr(list, ".rbd"))
			fail_msg("no r<ID>.rbd in the store: %s", list);
	}
	fakesd_stop(&sd);
	fakesd_start(&sd, true, args);
	assert_int_equal(write(go[1], &c, 1), 1);
	fakesd_pump(&sd, NULL, NULL, ready[0], "the client's check");
	assert_int_equal(waitpid(pid, &st, 0), pid);
	running_client = -1;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail_msg("the client: status 0x%x (exit 1 a wrong byte, 2 SIGBUS); pagerd log:\n%s",
			 st, test_sd_log(&sd));
	if (!strstr(test_sd_log(&sd), "open again"))
		fail_msg("no reopening in the log:\n%s", test_sd_log(&sd));
	fakesd_stop(&sd);
	close(ready[0]);
	close(go[1]);
	fakesd_free(&sd);
	{
		char cmd[600];
		int rc_;

		snprintf(cmd, sizeof(cmd), "rbd -c %s rm %s >/dev/null 2>&1; rados -c %s -p %s rm "
			 "pagerd_crc.%s", getenv("CEPH_CONF"), image + 4, getenv("CEPH_CONF"), rbd,
			 strchr(image + 4, '/') + 1);
		rc_ = system(cmd);
		(void)rc_;
	}
}

/* A descriptor for the hostile store. */
static void put(struct test_sd *sd, const char *name, int fd)
{
	assert_true(fd >= 0);
	assert_int_equal(test_sd_put(sd, name, fd), 0);
}

static int sealed_memfd(const char *name, size_t size, const void *data, size_t len)
{
	int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	if (len)
		assert_int_equal(pwrite(fd, data, len, 0), (ssize_t)len);
	assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
	return fd;
}

/* Whether process pid holds a descriptor whose link contains `what`. */
static bool holds(pid_t pid, const char *what)
{
	char path[64], link[256];

	for (int fd = 0; fd < 4096; fd++) {
		ssize_t n;

		snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)pid, fd);
		n = readlink(path, link, sizeof(link) - 1);
		if (n <= 0)
			continue;
		link[n] = '\0';
		if (strstr(link, what))
			return true;
	}
	return false;
}

static void hostile_store_is_refused(void **state)
{
	static struct test_sd sd;
	struct fdstore_region_hdr h = { 0 };
	size_t ps = (size_t)sysconf(_SC_PAGESIZE);
	int sv[2], pfd[2], file;
	char path[200];
	struct proto_msg msg = { 0 };
	struct proto_reply rep;
	struct pager_opts o = { .sz = sizeof(o) };
	struct pager_region *r;
	struct pager *p;
	const char *log;

	(void)state;
	fakesd_init(&sd);
	snprintf(path, sizeof(path), "%s/not-a-socket", sd.dir);
	file = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	put(&sd, "c7.sock", file);                   /* wrong type */
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	put(&sd, "c8.sock", sv[0]);                  /* fine: adopted */
	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	put(&sd, "c8.uffd", pfd[0]);                 /* a pipe is no uffd */
	close(pfd[1]);
	/* A region of 256 pages whose state is cut to its first page. */
	h.magic = FDSTORE_REGION_MAGIC;
	h.version = FDSTORE_VERSION;
	h.hdr_size = sizeof(h);
	h.region_id = 9;
	h.client_id = 8;
	h.page_size = (uint32_t)ps;
	h.len = 256 * ps;
	h.npages = 256;
	h.addr = 0x10000000;
	h.state_off = ps;
	h.slot_off = 2 * ps;
	h.file_size = 3 * ps;
	put(&sd, "r9.mem", sealed_memfd("hostile-mem", 256 * ps, NULL, 0));
	put(&sd, "r9.state", sealed_memfd("hostile-state", ps, &h, sizeof(h)));
	put(&sd, "bad\001name", eventfd(0, EFD_CLOEXEC));
	put(&sd, "zz.unknown", eventfd(0, EFD_CLOEXEC));
	put(&sd, "swapmeta", sealed_memfd("hostile-swapmeta", ps, "garbage", 7));

	fakesd_start(&sd, true, NULL);
	log = test_sd_log(&sd);
	for (const char *const *n = (const char *const[]){ "c7.sock", "c8.uffd", "r9.state",
							   "r9.mem", "bad?name", "zz.unknown",
							   "swapmeta", NULL };
	     *n; n++) {
		char want[64];

		snprintf(want, sizeof(want), "refusing '%s'", *n);
		if (!strstr(log, want))
			fail_msg("no line with \"%s\" in:\n%s", want, log);
	}
	assert_non_null(strstr(log, "truncated"));
	/* Refused names leave the store (the control-character name was
	 * never a valid one to remove). */
	for (const char *const *n = (const char *const[]){ "c7.sock", "c8.uffd", "r9.state",
							   "r9.mem", "zz.unknown", "swapmeta",
							   NULL };
	     *n; n++)
		if (test_sd_find(&sd, *n))
			fail_msg("'%s' is still in the store (removed: %s)", *n, sd.removed);
	assert_false(holds(sd.pid, "hostile-state"));
	assert_false(holds(sd.pid, "hostile-mem"));
	assert_false(holds(sd.pid, "not-a-socket"));

	/* The connection it could adopt is served: c8 had said nothing yet. */
	msg.body.hello.flags = PROTO_HELLO_CONTROL;
	msg.body.hello.page_size = (uint32_t)ps;
	assert_int_equal(test_raw_call(sv[1], &msg, PROTO_HELLO, 0, NULL, 0, NULL), 0);
	memset(&msg, 0, sizeof(msg));
	assert_int_equal(test_raw_call(sv[1], &msg, PROTO_STATUS, 0, NULL, 0, &rep), 0);
	assert_int_equal(rep.pid, sd.pid);

	/* And a new client. */
	o.socket_path = sd.sock;
	assert_int_equal(pager_open(&p, &o), 0);
	assert_int_equal(pager_region_create(p, 64 * ps, NULL, &r), 0);
	memset(pager_region_addr(r), 0x5a, 64 * ps);
	for (size_t i = 0; i < 64 * ps; i++)
		if (((uint8_t *)pager_region_addr(r))[i] != 0x5a)
			fail_msg("byte %zu", i);
	pager_region_destroy(r);
	pager_close(p);
	/* The adopted connection goes: so does its name. */
	close(sv[1]);
	fakesd_pump(&sd, no_client_names, NULL, -1, "c8.sock to leave the store");
	fakesd_stop(&sd);
	fakesd_free(&sd);
}

static void fd_store_no_stores_nothing(void **state)
{
	static const char *const args[] = { "--fd-store", "no", NULL };
	struct pager_opts o = { .sz = sizeof(o) };
	struct pager_region *r;
	struct pager *p;
	static struct test_sd sd;

	(void)state;
	fakesd_init(&sd);
	fakesd_start(&sd, false, args);
	o.socket_path = sd.sock;
	assert_int_equal(pager_open(&p, &o), 0);
	assert_int_equal(pager_region_create(p, 1 << 20, NULL, &r), 0);
	memset(pager_region_addr(r), 1, 1 << 20);
	fakesd_stop(&sd);
	assert_int_equal(sd.n, 0);
	assert_int_equal(sd.removes, 0);
	pager_close(p);
	fakesd_free(&sd);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "we");

	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

/*
 * A typo in pagerd.conf, then a restart (systemctl restart): the new pagerd
 * has a client to take over, so it must not exit (systemd would empty the
 * store and strand the client's faults forever).  It runs with the
 * settings its predecessor ran with (the limit here, not the default of
 * none), and says what is wrong in its log, in STATUS= and in the status
 * reply.  A reload of the fixed file takes it; a reload of a broken one
 * changes nothing.  With no client to take over, a bad file still ends
 * pagerd with status 2.
 */
static void bad_config_keeps_clients(void **state)
{
	static struct test_sd sd;
	static char conf[200], swap[200];
	const char *args[] = { "--config", conf, NULL };
	const char *good_fmt = "memory_limit = 4M\nswap_path = %s\nswap_size = 64M\n";
	char text[512];
	struct proto_reply st;
	struct child cl;
	struct report r;

	(void)state;
	fakesd_init(&sd);
	snprintf(conf, sizeof(conf), "%s/pagerd.conf", sd.dir);
	snprintf(swap, sizeof(swap), "%s/swap", sd.dir);
	snprintf(text, sizeof(text), good_fmt, swap);
	write_file(conf, text);
	fakesd_start(&sd, false, args);
	assert_stored(&sd, "config");
	client_start(&cl, sd.sock, NULL);
	r = client_call(&sd, &cl, 'p');
	r = client_call(&sd, &cl, 's');
	assert_true(r.st.swapped > REGION_PAGES / 2);

	/* The typo, and the restart. */
	snprintf(text, sizeof(text), good_fmt, swap);
	strcat(text, "memroy_limit = 1G\n");
	write_file(conf, text);
	fakesd_stop(&sd);
	fakesd_start(&sd, true, args);
	if (!strstr(test_sd_log(&sd), "memroy_limit") ||
	    !strstr(test_sd_log(&sd), "running with the previous pagerd's settings"))
		fail_msg("the log does not say what is wrong and what runs:\n%s", test_sd_log(&sd));
	if (!strstr(sd.status_text, "1 error in"))
		fail_msg("STATUS=%s", sd.status_text);
	assert_int_equal(test_status(sd.sock, &st), 0);
	assert_int_equal(st.config_errors, 1);
	assert_int_equal(st.memory_limit, 4u << 20);
	assert_int_equal(st.clients, 1);
	r = client_call(&sd, &cl, 'p');
	r = client_call(&sd, &cl, 's');
	assert_true(r.st.swapped > REGION_PAGES / 2);

	/* Another restart on the same bad file: the settings still come from
	 * the store (this pagerd put them there again). */
	fakesd_stop(&sd);
	fakesd_start(&sd, true, args);
	assert_int_equal(test_status(sd.sock, &st), 0);
	assert_int_equal(st.config_errors, 1);
	assert_int_equal(st.memory_limit, 4u << 20);

	/* Fixed, with a new limit: a reload takes it and the errors go. */
	snprintf(text, sizeof(text), "memory_limit = 5M\nswap_path = %s\nswap_size = 64M\n", swap);
	write_file(conf, text);
	sd.ready = false;
	assert_int_equal(kill(sd.pid, SIGHUP), 0);
	fakesd_pump(&sd, is_ready, NULL, -1, "READY=1 after the reload");
	assert_int_equal(test_status(sd.sock, &st), 0);
	assert_int_equal(st.config_errors, 0);
	assert_int_equal(st.memory_limit, 5u << 20);
	if (strstr(sd.status_text, "error"))
		fail_msg("STATUS=%s", sd.status_text);

	/* A reload of a broken file changes nothing, and says so. */
	write_file(conf, "memory_limit = lots\n");
	sd.ready = false;
	assert_int_equal(kill(sd.pid, SIGHUP), 0);
	fakesd_pump(&sd, is_ready, NULL, -1, "READY=1 after the failed reload");
	assert_int_equal(test_status(sd.sock, &st), 0);
	assert_int_equal(st.config_errors, 1);
	assert_int_equal(st.memory_limit, 5u << 20);
	if (!strstr(sd.status_text, "running with the settings in effect before"))
		fail_msg("STATUS=%s", sd.status_text);

	r = client_call(&sd, &cl, 'v');
	assert_int_equal(r.errors, 0);
	r = client_call(&sd, &cl, 'q');
	fakesd_pump(&sd, no_client_names, NULL, -1, "the client's names to leave the store");
	int cst;

	assert_int_equal(waitpid(cl.pid, &cst, 0), cl.pid);
	running_client = -1;
	assert_true(WIFEXITED(cst) && WEXITSTATUS(cst) == 0);
	close(cl.cmd);
	close(cl.report);

	/* Nobody to strand: a bad file is a configuration error (exit 2). */
	fakesd_stop(&sd);
	fakesd_spawn(&sd, true, args);
	fakesd_pump(&sd, has_exited, NULL, -1, "pagerd to exit");
	assert_true(WIFEXITED(sd.status));
	assert_int_equal(WEXITSTATUS(sd.status), 2);
	fakesd_free(&sd);
}

/* After a failure: no pagerd or client of ours is left behind. */
static int teardown(void **state)
{
	(void)state;
	if (running_client > 0) {
		kill(running_client, SIGKILL);
		waitpid(running_client, NULL, 0);
		running_client = -1;
	}
	if (running_sd) {
		if (!running_sd->exited && running_sd->pid > 0) {
			kill(running_sd->pid, SIGKILL);
			waitpid(running_sd->pid, NULL, 0);
			running_sd->exited = true;
		}
		fakesd_free(running_sd);
	}
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(restart_keeps_every_byte, teardown),
		cmocka_unit_test_teardown(restart_named_swap, teardown),
		cmocka_unit_test_teardown(restart_rbd_other_image, teardown),
		cmocka_unit_test_teardown(restart_rbd_restore, teardown),
		cmocka_unit_test_teardown(restart_with_pool, teardown),
		cmocka_unit_test_teardown(hostile_store_is_refused, teardown),
		cmocka_unit_test_teardown(fd_store_no_stores_nothing, teardown),
		cmocka_unit_test_teardown(bad_config_keeps_clients, teardown),
	};

	if (access("/dev/userfaultfd", R_OK | W_OK) != 0 && geteuid() != 0) {
		printf("needs userfaultfd\n");
		return TEST_SKIP;
	}
	/* ITEST_FILTER=restart_named_swap runs the matching tests only. */
	if (getenv("ITEST_FILTER"))
		cmocka_set_test_filter(getenv("ITEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
