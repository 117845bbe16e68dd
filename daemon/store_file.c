/* SPDX-License-Identifier: MIT */
/*
 * The file backend of the store interface (store.h): one io_uring queue
 * (io.h) on a descriptor.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "io.h"
#include "store.h"

struct store_file {
	struct store st;      /* first: a struct store * is a struct store_file * */
	struct io_queue *q;
	int fd;
	bool own_fd;
};

static bool sf_aligned(const struct store *st, uint64_t off, uint64_t len)
{
	return st->align <= 1 || (off % st->align == 0 && len % st->align == 0);
}

static int sf_read(struct store *st, uint64_t off, void *buf, size_t len,
		   store_done_fn done, void *arg)
{
	struct store_file *f = (struct store_file *)st;

	if (!len || !sf_aligned(st, off, len))
		return -EINVAL;
	return io_submit(f->q, IO_READ, buf, len, off, done, arg);
}

static int sf_write(struct store *st, uint64_t off, const void *buf, size_t len,
		    store_done_fn done, void *arg)
{
	struct store_file *f = (struct store_file *)st;

	if (!len || !sf_aligned(st, off, len))
		return -EINVAL;
	/* Only read, but the SQE wants a non-const pointer. */
	return io_submit(f->q, IO_WRITE, (void *)(uintptr_t)buf, len, off, done, arg);
}

static int sf_discard(struct store *st, uint64_t off, uint64_t len,
		      store_done_fn done, void *arg)
{
	struct store_file *f = (struct store_file *)st;

	if (!len || !sf_aligned(st, off, len))
		return -EINVAL;
	return io_submit(f->q, IO_DISCARD, NULL, len, off, done, arg);
}

static int sf_flush(struct store *st, store_done_fn done, void *arg)
{
	struct store_file *f = (struct store_file *)st;

	return io_submit(f->q, IO_FLUSH, NULL, 0, 0, done, arg);
}

static unsigned sf_pending(const struct store *st)
{
	const struct store_file *f = (const struct store_file *)st;

	return io_queue_pending(f->q);
}

static void sf_get_stats(const struct store *st, struct store_stats *ret)
{
	const struct store_file *f = (const struct store_file *)st;
	struct io_queue_stats qs;

	io_queue_get_stats(f->q, &qs);
	*ret = (struct store_stats){
		.in_flight = qs.in_flight - qs.orphans, .queued = qs.queued,
		.timed_out = qs.timed_out, .abandoned = qs.orphans,
	};
}

static void sf_close(struct store *st)
{
	struct store_file *f = (struct store_file *)st;

	io_queue_close(f->q);
	if (f->own_fd)
		close(f->fd);
	free(f);
}

static const struct store_ops file_ops = {
	.read = sf_read,
	.write = sf_write,
	.discard = sf_discard,
	.flush = sf_flush,
	.pending = sf_pending,
	.get_stats = sf_get_stats,
	.close = sf_close,
};

int store_file_open(struct store **ret, struct io_engine *io, int fd,
		    const struct store_file_opts *o)
{
	struct io_queue_opts qo;
	struct store_file *f;
	int e;

	if (!ret || !io || fd < 0 || !o)
		return -EINVAL;
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	qo = (struct io_queue_opts){
		.label = o->label, .depth = o->depth, .align = o->align,
		.timeout_ms = o->timeout_ms,
	};
	e = io_queue_open(&f->q, io, fd, &qo);
	if (e < 0) {
		free(f);
		return e;
	}
	f->fd = fd;
	f->own_fd = o->own_fd;
	f->st.ops = &file_ops;
	f->st.label = io_queue_label(f->q);
	f->st.align = o->align ? o->align : 1;
	f->st.timeout_ms = o->timeout_ms;
	*ret = &f->st;
	return 0;
}
