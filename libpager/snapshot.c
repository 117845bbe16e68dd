/* SPDX-License-Identifier: MIT */
/*
 * Snapshots and restore, the library's half: it opens and sizes the image
 * with the application's own rights and hands pagerd the descriptor
 * (pagerd never opens a path a client names, and does no synchronous I/O
 * on a file it is handed), with a memfd for the table of per-page CRC32Cs
 * pagerd fills as it writes (IMAGE.crc, common/image.h).  Once pagerd has
 * copied every page the library syncs the image, commits IMAGE.crc and
 * then the sidecar (common/image.c) that makes it a complete snapshot.  A
 * restore hands pagerd the image and IMAGE.crc, read into a sealed memfd.
 * The learned order (IMAGE.order) travels the same way: a memfd pagerd
 * fills at a snapshot's end, committed before IMAGE.meta; read into a
 * sealed memfd at restore, for pagerd to check and use (or ignore).
 *
 * A named image ("rbd:POOL[/NAMESPACE]/IMAGE", a Ceph RBD image) is the
 * other way round: the library holds no Ceph key, so it sends the name and
 * pagerd opens the image with its own identity, once it has checked that
 * this process's uid may name that pool and namespace.  pagerd then also
 * writes the metadata and the table, and commits the image itself.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "image.h"
#include "internal.h"

static bool is_named(const char *path)
{
	return !strncmp(path, "rbd:", 4);
}

/* A snapshot request about region id (0: none) and maybe a named image. */
static int call_p(struct pager *p, uint64_t id, const char *image, enum proto_type type,
		  const int *fds, unsigned nfds, uint32_t flags, struct proto_reply *reply)
{
	struct proto_msg msg = { 0 };
	int e;

	msg.body.snapshot.region_id = id;
	msg.body.snapshot.flags = flags;
	if (image) {
		if (strlen(image) >= sizeof(msg.body.snapshot.image))
			return -EINVAL;
		strcpy(msg.body.snapshot.image, image);
	}
	pthread_mutex_lock(&p->lock);
	e = pager_call_locked(p, &msg, type, fds, nfds, reply);
	pthread_mutex_unlock(&p->lock);
	return e;
}

static int call(struct pager_region *r, enum proto_type type, const int *fds,
		unsigned nfds, uint32_t flags, struct proto_reply *reply)
{
	return call_p(r->pager, r->id, NULL, type, fds, nfds, flags, reply);
}

PAGER_EXPORT int pager_region_snapshot_start(struct pager_region *r,
					     const char *path,
					     const struct pager_snapshot_opts *opts)
{
	struct proto_reply reply;
	int fd, crc_fd = -1, order_fd = -1, e;

	if (!r || !path || !*path || (opts && opts->sz < sizeof(size_t)))
		return -EINVAL;
	if (opts && opts->sz >= offsetof(struct pager_snapshot_opts, flags) + sizeof(uint32_t) &&
	    opts->flags)
		return -EINVAL;
	if (r->snap_fd >= 0 || r->snap_named)
		return -EBUSY;
	if (is_named(path)) {
		e = call_p(r->pager, r->id, path, PROTO_SNAPSHOT_START, NULL, 0, 0, &reply);
		if (e < 0)
			return e;
		r->snap_named = true;
		r->snap_finished = false;
		r->snap_status = 0;
		return 0;
	}
	/* An old sidecar must not vouch for the new, partial image. */
	e = image_meta_remove(path);
	if (e < 0)
		return e;
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	/* Sized here: a sparse file of the region's size, holes until
	 * pagerd writes the pages that hold data. */
	if (ftruncate(fd, (off_t)r->len) < 0)
		e = -errno;
	else
		e = image_crc_create(r->len / r->pager->page_size, &crc_fd);
	if (e == 0)
		e = image_order_create(&order_fd);
	if (e == 0)
		e = call(r, PROTO_SNAPSHOT_START, (int[]){ fd, crc_fd, order_fd }, 3,
			 PROTO_SNAPSHOT_ORDER, &reply);
	if (e < 0) {
		if (order_fd >= 0)
			close(order_fd);
		if (crc_fd >= 0)
			close(crc_fd);
		close(fd);
		unlink(path); /* refused: leave no empty image behind */
		return e;
	}
	free(r->snap_path);
	r->snap_path = strdup(path);
	if (!r->snap_path) {
		close(order_fd);
		close(crc_fd);
		close(fd);
		return -ENOMEM;
	}
	r->snap_fd = fd;
	r->snap_crc_fd = crc_fd;
	r->snap_order_fd = order_fd;
	r->snap_finished = false;
	r->snap_status = 0;
	return 0;
}

/* pagerd is done copying: sync and commit, or leave it incomplete. */
static int finish(struct pager_region *r, const struct proto_snapshot_status *st)
{
	int e = st->status;

	if (e == 0) {
		struct image_meta m = {
			.size = r->len,
			.page_size = (uint32_t)r->pager->page_size,
			.data_pages = st->pages_total,
			.created = (uint64_t)time(NULL),
		};

		/* The checksums before the sidecar that vouches for them. */
		e = image_crc_commit(r->snap_path, r->snap_crc_fd);
		/* The order only steers prefetch: one not written costs
		 * nothing but speed, and must not fail the snapshot. */
		if (e == 0 && image_order_commit(r->snap_path, r->snap_order_fd) < 0)
			image_order_remove(r->snap_path);
		if (e == 0)
			e = image_meta_commit(r->snap_path, r->snap_fd, &m);
	}
	close(r->snap_crc_fd);
	r->snap_crc_fd = -1;
	close(r->snap_order_fd);
	r->snap_order_fd = -1;
	close(r->snap_fd);
	r->snap_fd = -1;
	r->snap_finished = true;
	r->snap_status = e;
	return e;
}

PAGER_EXPORT int pager_region_snapshot_poll(struct pager_region *r,
					    struct pager_snapshot_progress *ret)
{
	struct pager_snapshot_progress out = { 0 };
	struct proto_reply reply;
	const struct proto_snapshot_status *st = &reply.snapshot;
	int e;

	if (!r || !ret || ret->sz < sizeof(size_t))
		return -EINVAL;
	if (r->snap_fd < 0 && !r->snap_finished && !r->snap_named)
		return -ENOENT; /* no snapshot was started */
	e = call(r, PROTO_SNAPSHOT_STATUS, NULL, 0, 0, &reply);
	if (e < 0)
		return e;
	out.sz = ret->sz < sizeof(out) ? ret->sz : sizeof(out);
	out.pages_total = st->pages_total;
	out.pages_done = st->pages_done;
	out.pause_ns = st->pause_ns;
	out.status = st->status;
	if (st->done && r->snap_fd >= 0)
		finish(r, st);
	if (st->done && r->snap_named) {
		/* pagerd committed it (or says why not). */
		r->snap_named = false;
		r->snap_finished = true;
		r->snap_status = st->status;
	}
	out.done = r->snap_finished;
	if (r->snap_finished)
		out.status = r->snap_status;
	memcpy(ret, &out, out.sz);
	return r->snap_finished ? 1 : 0;
}

PAGER_EXPORT int pager_region_snapshot(struct pager_region *r, const char *path,
				       const struct pager_snapshot_opts *opts)
{
	struct pager_snapshot_progress pr = { .sz = sizeof(pr) };
	long wait_us = 100;
	int e = pager_region_snapshot_start(r, path, opts);

	if (e < 0)
		return e;
	/* pagerd has no way to call us back on this connection: poll,
	 * backing off to 10 ms. */
	while ((e = pager_region_snapshot_poll(r, &pr)) == 0) {
		struct timespec ts = { 0, wait_us * 1000 };

		nanosleep(&ts, NULL);
		if (wait_us < 10000)
			wait_us *= 2;
	}
	return e < 0 ? e : pr.status;
}

/* A named image: pagerd reads its metadata for us (the region's size),
 * then opens it again for the region, checking it still matches. */
static int restore_named(struct pager *p, const char *image, struct pager_region_opts *o,
			 struct pager_region **ret)
{
	struct proto_reply info;
	struct pager_region *r;
	char name[sizeof(info.image.name)];
	int e = call_p(p, 0, image, PROTO_IMAGE_INFO, NULL, 0, 0, &info);

	if (e < 0)
		return e;
	if (info.image.page_size != p->page_size || !info.image.size ||
	    info.image.size % p->page_size)
		return -EINVAL;
	memcpy(name, info.image.name, sizeof(name));
	name[sizeof(name) - 1] = '\0';
	o->sz = sizeof(*o);
	if (!o->name && name[0] && strcmp(name, "-"))
		o->name = name;
	e = pager_region_create(p, info.image.size, o, &r);
	if (e < 0)
		return e;
	e = call_p(p, r->id, image, PROTO_REGION_SET_IMAGE, NULL, 0,
		   (o->flags & PAGER_REGION_NO_PREFETCH) ? PROTO_IMAGE_NO_PREFETCH : 0, NULL);
	if (e < 0) {
		pager_region_destroy(r);
		return e;
	}
	*ret = r;
	return 0;
}

PAGER_EXPORT int pager_region_restore(struct pager *p, const char *path,
				      const struct pager_region_opts *opts,
				      struct pager_region **ret)
{
	struct pager_region_opts o = { 0 };
	struct pager_region *r;
	struct image_meta m;
	int fd, crc_fd = -1, order_fd = -1, e;
	int fds[3];
	unsigned nfds = 0;
	uint32_t flags;

	if (!p || !path || !ret || (opts && opts->sz < sizeof(size_t)))
		return -EINVAL;
	if (opts)
		memcpy(&o, opts, opts->sz < sizeof(o) ? opts->sz : sizeof(o));
	if (is_named(path))
		return restore_named(p, path, &o, ret);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	e = image_meta_load(path, fd, &m);
	if (e == -ENOENT)
		e = -EINVAL; /* an image without its sidecar is not complete */
	if (e == 0 && m.page_size != p->page_size)
		e = -EINVAL;
	/* Format 2 images are checked page by page against IMAGE.crc, and
	 * refused without it; format 1 (made before it) go unchecked. */
	if (e == 0 && m.format >= 2) {
		e = image_crc_load(path, m.size / m.page_size, &crc_fd);
		if (e == -ENOENT)
			e = -EINVAL;
	}
	if (e < 0)
		goto out;
	o.sz = sizeof(o);
	if (!o.name && m.name[0] && strcmp(m.name, "-"))
		o.name = m.name;
	e = pager_region_create(p, m.size, &o, &r);
	if (e < 0)
		goto out;
	/* The learned order, if the image has one: pagerd checks it (and
	 * says why it ignores a bad one); it never decides what a page
	 * holds, so trouble reading it only costs its order. */
	if (image_order_load(path, &order_fd) < 0)
		order_fd = -1;
	flags = (o.flags & PAGER_REGION_NO_PREFETCH) ? PROTO_IMAGE_NO_PREFETCH : 0;
	fds[nfds++] = fd;
	if (crc_fd >= 0)
		fds[nfds++] = crc_fd;
	if (order_fd >= 0) {
		fds[nfds++] = order_fd;
		flags |= PROTO_IMAGE_ORDER;
	}
	e = call(r, PROTO_REGION_SET_IMAGE, fds, nfds, flags, NULL);
	if (e < 0) {
		pager_region_destroy(r);
		goto out;
	}
	*ret = r;
out:
	if (order_fd >= 0)
		close(order_fd);
	if (crc_fd >= 0)
		close(crc_fd);
	close(fd);
	return e;
}
