/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the I/O engine (daemon/io.c) and the file store on it
 * (daemon/store_file.c), with a real io_uring and a real libevent loop run
 * until the callbacks came (no sleeps): round trips, a transfer the kernel
 * does in parts continued (a pipe fed in pieces), -EAGAIN retried and not
 * forever, a queue's depth and FIFO, a timeout on a file that never
 * answers (the callback at once, the buffer the engine's), closing an
 * untrusted queue with I/O in flight, flush and discard.
 *
 * The modules are compiled in, which lets a few tests feed completions by
 * hand.  Exit code 77: io_uring unavailable.
 */
#include <setjmp.h> /* cmocka.h needs these four first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../daemon/io.c"
#include "../daemon/log.c"
#include "../daemon/store_file.c"

struct ctx {
	struct event_base *base;
	struct io_engine *e;
	char path[64];
	int fd;
};

struct done {
	unsigned calls;
	int res;
};

static void on_done(void *arg, int res)
{
	struct done *d = arg;

	d->calls++;
	d->res = res;
}

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof(*c));

	if (!c)
		return -1;
	c->base = event_base_new();
	if (!c->base || io_engine_open(&c->e, c->base) < 0)
		return -1;
	snprintf(c->path, sizeof(c->path), "/tmp/test_io.%d", (int)getpid());
	c->fd = open(c->path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	*state = c;
	return c->fd < 0 ? -1 : 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;

	io_engine_close(c->e);
	event_base_free(c->base);
	close(c->fd);
	unlink(c->path);
	free(c);
	return 0;
}

/* Runs the loop until *calls reaches want (a watchdog fails the test). */
static void run_until(struct ctx *c, const unsigned *calls, unsigned want)
{
	for (int i = 0; i < 100000 && *calls < want; i++)
		assert_true(event_base_loop(c->base, EVLOOP_ONCE) >= 0);
	assert_int_equal(*calls, want);
}

static struct io_queue *queue(struct ctx *c, int fd, unsigned depth, uint32_t timeout_ms)
{
	struct io_queue_opts o = { .label = "test", .depth = depth, .align = 1,
				   .timeout_ms = timeout_ms };
	struct io_queue *q = NULL;

	assert_int_equal(io_queue_open(&q, c->e, fd, &o), 0);
	return q;
}

static void test_store_roundtrip(void **state)
{
	struct ctx *c = *state;
	struct store *st;
	char out[8192], in[8192];
	struct done w = { 0 }, r = { 0 }, f = { 0 }, d = { 0 };
	struct stat sb;

	assert_int_equal(store_file_open(&st, c->e, c->fd, &(struct store_file_opts){
		.label = "file", .depth = 4, .align = 4096 }), 0);
	for (size_t i = 0; i < sizeof(out); i++)
		out[i] = (char)(i * 7 + 1);
	assert_int_equal(store_write(st, 4096, out, 100, on_done, &w), -EINVAL); /* align */
	assert_int_equal(store_write(st, 4096, out, sizeof(out), on_done, &w), 0);
	assert_int_equal(w.calls, 0); /* never from inside the call */
	run_until(c, &w.calls, 1);
	assert_int_equal(w.res, 0);
	assert_int_equal(store_flush(st, on_done, &f), 0);
	run_until(c, &f.calls, 1);
	assert_int_equal(f.res, 0);
	assert_int_equal(store_read(st, 4096, in, sizeof(in), on_done, &r), 0);
	run_until(c, &r.calls, 1);
	assert_int_equal(r.res, 0);
	assert_memory_equal(in, out, sizeof(in));
	/* A discard makes a hole that reads as zeros. */
	assert_int_equal(store_discard(st, 4096, 4096, on_done, &d), 0);
	run_until(c, &d.calls, 1);
	assert_int_equal(d.res, 0);
	assert_int_equal(pread(c->fd, in, 4096, 4096), 4096);
	for (int i = 0; i < 4096; i++)
		assert_int_equal(in[i], 0);
	/* Past the end of the file: the file "shrank" under the read. */
	memset(&r, 0, sizeof(r));
	assert_int_equal(store_read(st, 1 << 20, in, 4096, on_done, &r), 0);
	run_until(c, &r.calls, 1);
	assert_int_equal(r.res, -EIO);
	assert_int_equal(fstat(c->fd, &sb), 0);
	store_close(st);
}

/* A read the kernel does in parts (a pipe fed half at a time) is
 * continued where it stopped, into the rest of the buffer. */
static void test_short_transfer_continued(void **state)
{
	struct ctx *c = *state;
	int p[2];
	char in[8192], out[8192];
	struct done r = { 0 };
	struct io_queue_stats qs;

	assert_int_equal(pipe(p), 0);
	struct io_queue *q = queue(c, p[0], 4, 0);

	for (size_t i = 0; i < sizeof(out); i++)
		out[i] = (char)(i ^ 0x5a);
	assert_int_equal(io_submit(q, IO_READ, in, sizeof(in), 0, on_done, &r), 0);
	assert_int_equal(write(p[1], out, 4096), 4096);
	/* The first half arrives: the request goes on for the rest. */
	while (io_queue_pending(q) && r.calls == 0) {
		io_queue_get_stats(q, &qs);
		if (qs.short_io)
			break;
		event_base_loop(c->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	}
	assert_int_equal(r.calls, 0);
	assert_int_equal(write(p[1], out + 4096, 4096), 4096);
	run_until(c, &r.calls, 1);
	assert_int_equal(r.res, 0);
	assert_memory_equal(in, out, sizeof(in));
	io_queue_get_stats(q, &qs);
	assert_int_equal(qs.short_io, 1);
	io_queue_close(q);
	close(p[0]);
	close(p[1]);
}

/* A request built as io_submit() builds one, holding a place in the ring
 * but with no SQE: its completions are fed in by hand. */
static struct io_req *fake_req(struct io_queue *q, void *buf, size_t len,
			       struct done *d)
{
	struct io_req *r = calloc(1, sizeof(*r));

	assert_non_null(r);
	*r = (struct io_req){ .q = q, .op = IO_READ, .buf = buf, .len = len,
			      .done = on_done, .arg = d };
	io_take_place(q, r);
	return r;
}

/* -EAGAIN and -EINTR are retried, a bounded number of times; a short
 * completion goes on from where it stopped: completions the kernel only
 * gives under pressure, fed in by hand. */
static void test_again_retried_bounded(void **state)
{
	struct ctx *c = *state;
	char out[8192], in[8192];
	struct done r = { 0 };
	struct io_req *req;

	for (size_t i = 0; i < sizeof(out); i++)
		out[i] = (char)(i * 3);
	assert_int_equal(pwrite(c->fd, out, sizeof(out), 0), (ssize_t)sizeof(out));
	struct io_queue *q = queue(c, c->fd, 4, 0);

	/* -EAGAIN: the whole request again, for real this time. */
	req = fake_req(q, in, sizeof(in), &r);
	io_req_complete(c->e, req, -EAGAIN);
	assert_int_equal(req->retries, 1);
	assert_int_equal(q->in_ring, 1);
	assert_int_equal(r.calls, 0);
	run_until(c, &r.calls, 1);
	assert_int_equal(r.res, 0);
	assert_memory_equal(in, out, sizeof(in));

	/* As if the kernel had done the first half only. */
	memset(in, 0, sizeof(in));
	memset(&r, 0, sizeof(r));
	req = fake_req(q, in, sizeof(in), &r);
	memcpy(in, out, 4096);
	io_req_complete(c->e, req, 4096);
	assert_int_equal(req->done_bytes, 4096);
	assert_int_equal(r.calls, 0);
	run_until(c, &r.calls, 1);
	assert_int_equal(r.res, 0);
	assert_memory_equal(in, out, sizeof(in));

	/* ...but not forever. */
	memset(&r, 0, sizeof(r));
	req = fake_req(q, in, sizeof(in), &r);
	req->retries = IO_MAX_RETRIES;
	io_req_complete(c->e, req, -EINTR);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.res, -EINTR);
	assert_int_equal(q->in_ring, 0);
	io_queue_close(q);
}

/* A queue holds at most depth requests in the ring; the others wait, and
 * go in order. */
static void test_depth_and_order(void **state)
{
	struct ctx *c = *state;
	int p[2];
	char in[3][16];
	struct done r[3] = { { 0 } };
	struct io_queue_stats qs;

	assert_int_equal(pipe(p), 0);
	struct io_queue *q = queue(c, p[0], 1, 0);

	for (int i = 0; i < 3; i++)
		assert_int_equal(io_submit(q, IO_READ, in[i], 16, 0, on_done, &r[i]), 0);
	io_queue_get_stats(q, &qs);
	assert_int_equal(qs.in_flight, 1);
	assert_int_equal(qs.queued, 2);
	assert_int_equal(write(p[1], "aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbbcccccccccccccccc", 48), 48);
	run_until(c, &r[2].calls, 1);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(r[i].res, 0);
		assert_int_equal(in[i][0], 'a' + i);
	}
	io_queue_close(q);
	close(p[0]);
	close(p[1]);
}

/* A file that never answers: the callback comes with -ETIMEDOUT when the
 * time is up, the engine keeps the request (and frees its buffer) until
 * the kernel lets go; a trusted queue beside it is served meanwhile. */
static void test_timeout(void **state)
{
	struct ctx *c = *state;
	int p[2];
	char *buf = malloc(64), ok[16];
	struct done r = { 0 }, t = { 0 };
	struct io_queue_stats qs;

	assert_int_equal(pipe(p), 0);
	struct io_queue *q = queue(c, p[0], 4, 50), *trusted = queue(c, c->fd, 4, 0);

	assert_int_equal(io_submit(q, IO_READ, buf, 64, 0, on_done, &r), 0);
	assert_int_equal(pwrite(c->fd, "0123456789abcdef", 16, 0), 16);
	assert_int_equal(io_submit(trusted, IO_READ, ok, 16, 0, on_done, &t), 0);
	run_until(c, &t.calls, 1);
	assert_int_equal(t.res, 0);
	assert_int_equal(r.calls, 0);
	run_until(c, &r.calls, 1);
	assert_int_equal(r.res, -ETIMEDOUT);
	io_queue_get_stats(q, &qs);
	assert_int_equal(qs.timed_out, 1);
	assert_int_equal(io_queue_pending(q), 0);
	/* A pipe read can be cancelled: the orphan goes (and buf with it). */
	for (int i = 0; i < 1000 && io_engine_orphans(c->e); i++)
		event_base_loop(c->base, EVLOOP_ONCE);
	assert_int_equal(io_engine_orphans(c->e), 0);
	io_queue_close(q);
	io_queue_close(trusted);
	close(p[0]);
	close(p[1]);
}

/* Closing an untrusted queue with a request in the kernel: its callback
 * at once (-ECANCELED), nothing waits; and one waiting for a place too. */
static void test_close_untrusted(void **state)
{
	struct ctx *c = *state;
	int p[2];
	struct done r[2] = { { 0 } };

	assert_int_equal(pipe(p), 0);
	struct io_queue *q = queue(c, p[0], 1, 60000);

	for (int i = 0; i < 2; i++)
		assert_int_equal(io_submit(q, IO_READ, malloc(32), 32, 0, on_done, &r[i]), 0);
	event_base_loop(c->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	io_queue_close(q);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(r[i].calls, 1);
		assert_int_equal(r[i].res, -ECANCELED);
	}
	/* The kernel lets go of the one it had once the pipe is gone. */
	close(p[1]);
	for (int i = 0; i < 1000 && io_engine_orphans(c->e); i++)
		event_base_loop(c->base, EVLOOP_ONCE);
	assert_int_equal(io_engine_orphans(c->e), 0);
	close(p[0]);
}

/* The engine closes while the kernel still holds a request of a closed
 * queue (a stalled device at shutdown): its buffer may still be written,
 * so it is kept, reachable, never freed; LeakSanitizer (SANITIZE=1) would
 * call it a leak if the engine dropped it, and end pagerd with status 1. */
static void test_close_engine_with_orphan(void **state)
{
	struct ctx *c = *state;
	int p[2];
	struct done r = { 0 };

	assert_int_equal(pipe(p), 0);
	struct io_queue *q = queue(c, p[0], 1, 60000);

	assert_int_equal(io_submit(q, IO_READ, malloc(4096), 4096, 0, on_done, &r), 0);
	event_base_loop(c->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	io_queue_close(q);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.res, -ECANCELED);
	/* The pipe stays open: a read the kernel could not cancel yet. */
	assert_int_equal(io_engine_orphans(c->e), 1);
	io_engine_close(c->e);
	c->e = NULL;
	close(p[0]);
	close(p[1]);
}

int main(void)
{
	struct io_uring ring;
	int r = io_uring_queue_init(4, &ring, 0);

	if (r < 0) {
		printf("skip: io_uring unavailable: %s\n", strerror(-r));
		return 77;
	}
	io_uring_queue_exit(&ring);
	log_set_level(LOG_ERR);
	alarm(60);

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_store_roundtrip),
		T(test_short_transfer_continued),
		T(test_again_retried_bounded),
		T(test_depth_and_order),
		T(test_timeout),
		T(test_close_untrusted),
		T(test_close_engine_with_orphan),
	};
#undef T
	return cmocka_run_group_tests(tests, NULL, NULL);
}
