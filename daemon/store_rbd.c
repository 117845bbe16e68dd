/* SPDX-License-Identifier: MIT */
/*
 * The Ceph RBD backend of the store interface (store.h): one RBD image,
 * driven through librbd's asynchronous API.
 *
 * Completions come back the way the loop wants them: the image is told to
 * signal an eventfd of ours (rbd_set_image_notification(EVENT_TYPE_EVENTFD))
 * and keep finished completions in a queue; the libevent loop watches the
 * eventfd and collects them with rbd_poll_io_events().  So done callbacks
 * run on the loop's thread, as the store contract says, and no librbd
 * thread ever touches pagerd's state.
 *
 * A cluster is never trusted to answer: every request has a deadline
 * (timeout_ms from the moment it is accepted).  One that misses it calls
 * back with -ETIMEDOUT at once and is abandoned: librbd keeps it until the
 * cluster answers or librados gives up (rados_osd_op_timeout, set to the
 * same figure).  That is why every request goes through a bounce buffer of
 * the store's own: an abandoned read may still be written into, and a
 * caller's buffer (a swap write's pages, a region's memory) must be the
 * caller's again as soon as done runs, whatever happened.  The copy costs
 * far less than the round trip to an OSD.  An abandoned request keeps its
 * place in the store's depth, so a stalled cluster holds at most `depth`
 * requests and their buffers.
 *
 * Blocking calls (connecting, opening or creating an image) are only made
 * by store_rbd_open(), which pagerd calls at start-up, before its loop
 * serves anyone.
 */
#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <pthread.h>
#include <rados/librados.h>
#include <rbd/librbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "store.h"

#define RBD_DEFAULT_TIMEOUT_MS 30000
#define RBD_POLL_BATCH 32

/* ---- the process's one cluster connection ----------------------------------- */

/* One librados client per process, as every librados user has: it holds
 * the monitor session and the OSD connections every image shares.  It
 * connects at the first store_rbd_open(). */
static struct {
	struct event_base *base;
	char *conf, *id, *keyring;
	uint32_t timeout_ms;
	rados_t cluster;
	bool connected;
	/* Images closed in the background (rbd_aio_close) not yet gone:
	 * shutdown waits for them before it ends the client. */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned closing;
} client = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

int store_rbd_setup(struct event_base *base, const struct store_rbd_client *c)
{
	if (!base || !c)
		return -EINVAL;
	free(client.conf);
	free(client.id);
	free(client.keyring);
	client.base = base;
	client.conf = strdup(c->conf && *c->conf ? c->conf : "/etc/ceph/ceph.conf");
	client.id = strdup(c->id && *c->id ? c->id : "admin");
	client.keyring = c->keyring && *c->keyring ? strdup(c->keyring) : NULL;
	client.timeout_ms = c->timeout_ms ? c->timeout_ms : RBD_DEFAULT_TIMEOUT_MS;
	if (!client.conf || !client.id || (c->keyring && *c->keyring && !client.keyring))
		return -ENOMEM;
	return 0;
}

static int conf_set(const char *key, const char *val)
{
	int e = rados_conf_set(client.cluster, key, val);

	if (e < 0)
		log_err("ceph: cannot set %s = %s: %s", key, val, strerror(-e));
	return e;
}

/* Connects the client, bounded by the timeout: a cluster that is down
 * fails pagerd's start in that time, never hangs it. */
static int client_connect(void)
{
	char secs[32];
	const char *id = client.id;
	int e;

	if (client.connected)
		return 0;
	if (!client.base)
		return -ENOTCONN;
	/* "client.admin" and "admin" both name the admin. */
	if (!strncmp(id, "client.", 7))
		id += 7;
	e = rados_create(&client.cluster, id);
	if (e < 0) {
		log_err("ceph: cannot make a client %s: %s", client.id, strerror(-e));
		return e;
	}
	e = rados_conf_read_file(client.cluster, client.conf);
	if (e < 0) {
		log_err("ceph: cannot read %s: %s", client.conf, strerror(-e));
		goto fail;
	}
	snprintf(secs, sizeof(secs), "%" PRIu32, (client.timeout_ms + 999) / 1000);
	/* Bounds on every wait of librados itself, so that an abandoned
	 * request ends some day and a dead cluster fails the connect; no
	 * librbd cache: a write that completed is in the cluster, and
	 * reads come from it (the swap's CRC32C checks what came back). */
	if ((client.keyring && (e = conf_set("keyring", client.keyring)) < 0) ||
	    (e = conf_set("client_mount_timeout", secs)) < 0 ||
	    (e = conf_set("rados_mon_op_timeout", secs)) < 0 ||
	    (e = conf_set("rados_osd_op_timeout", secs)) < 0 ||
	    (e = conf_set("rbd_cache", "false")) < 0)
		goto fail;
	e = rados_connect(client.cluster);
	if (e < 0) {
		log_err("ceph: cannot connect to the cluster of %s as client.%s: %s",
			client.conf, id, strerror(-e));
		goto fail;
	}
	client.connected = true;
	log_info("ceph: connected to the cluster of %s as client.%s", client.conf, id);
	return 0;
fail:
	rados_shutdown(client.cluster);
	return e;
}

void store_rbd_shutdown(void)
{
	struct timespec until;
	bool idle = true;

	if (client.connected) {
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += (client.timeout_ms + 999) / 1000 + 1;
		pthread_mutex_lock(&client.lock);
		while (client.closing && idle)
			idle = pthread_cond_timedwait(&client.cond, &client.lock, &until) == 0;
		idle = !client.closing;
		pthread_mutex_unlock(&client.lock);
		/* An image still closing (a stalled cluster) would be freed
		 * under librbd's feet: leave the client to the exit. */
		if (idle)
			rados_shutdown(client.cluster);
		else
			log_warn("ceph: images still closing after the timeout: not waiting for them");
		client.connected = false;
	}
	free(client.conf);
	free(client.id);
	free(client.keyring);
	client.conf = client.id = client.keyring = NULL;
	client.base = NULL;
}

/* ---- names --------------------------------------------------------------- */

static bool name_ok(const char *s, size_t n)
{
	if (!n || n > STORE_RBD_NAME_MAX || s[0] == '.')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_' ||
		      s[i] == '.'))
			return false;
	return true;
}

bool store_rbd_is_path(const char *path)
{
	return path && !strncmp(path, "rbd:", 4);
}

int store_rbd_parse(const char *path, struct store_rbd_name *ret)
{
	const char *p, *s1, *s2;
	struct store_rbd_name n = { 0 };

	if (!store_rbd_is_path(path))
		return -EINVAL;
	p = path + 4;
	s1 = strchr(p, '/');
	if (!s1)
		return -EINVAL;
	s2 = strchr(s1 + 1, '/');
	if (s2 && strchr(s2 + 1, '/'))
		return -EINVAL;
	if (!name_ok(p, (size_t)(s1 - p)))
		return -EINVAL;
	memcpy(n.pool, p, (size_t)(s1 - p));
	if (s2) {
		if (!name_ok(s1 + 1, (size_t)(s2 - s1 - 1)) || !name_ok(s2 + 1, strlen(s2 + 1)))
			return -EINVAL;
		memcpy(n.ns, s1 + 1, (size_t)(s2 - s1 - 1));
		strcpy(n.image, s2 + 1);
	} else {
		if (!name_ok(s1 + 1, strlen(s1 + 1)))
			return -EINVAL;
		strcpy(n.image, s1 + 1);
	}
	*ret = n;
	return 0;
}

/* ---- the store --------------------------------------------------------------- */

enum rbd_op { RBD_OP_READ, RBD_OP_WRITE, RBD_OP_DISCARD, RBD_OP_FLUSH };

struct rbd_req {
	struct rbd_req *next, *prev;
	struct store_rbd *sr;
	enum rbd_op op;
	uint64_t off;
	size_t len;
	void *user;           /* the caller's buffer (a read's target) */
	void *bounce;         /* ours: what librbd reads into or writes from */
	store_done_fn done;
	void *arg;
	uint64_t deadline;    /* CLOCK_MONOTONIC ms */
	rbd_completion_t comp;
	bool abandoned;       /* done has run; librbd still has it */
};

struct rbd_list {
	struct rbd_req *head, *tail;
};

struct store_rbd {
	struct store st;      /* first: a struct store * is a struct store_rbd * */
	char *label;
	rados_ioctx_t ioctx;
	rbd_image_t image;
	int efd;
	struct event *efd_ev, *timer_ev;
	unsigned depth, in_flight, abandoned;
	struct rbd_list waiting;   /* accepted, not yet given to librbd */
	struct rbd_list flight;    /* given to librbd, in order of acceptance */
	uint64_t timed_out;
	uint64_t ident_pool, ident_image; /* store_rbd_identity() */
	bool closing;
	unsigned dispatching;      /* done callbacks running */
	bool free_after_dispatch;  /* closed from one of them */
};

static uint64_t rbd_mono_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

static void list_push(struct rbd_list *l, struct rbd_req *r)
{
	r->next = NULL;
	r->prev = l->tail;
	if (l->tail)
		l->tail->next = r;
	else
		l->head = r;
	l->tail = r;
}

static void list_remove(struct rbd_list *l, struct rbd_req *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		l->head = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else
		l->tail = r->prev;
	r->next = r->prev = NULL;
}

static void req_free(struct rbd_req *r)
{
	free(r->bounce);
	free(r);
}

/* Arms the timer for the earliest deadline: each list is in order of
 * acceptance, and every request has the same timeout. */
static void arm_timer(struct store_rbd *sr)
{
	uint64_t first = UINT64_MAX, now = rbd_mono_ms();
	struct rbd_req *r;
	struct timeval tv;

	for (r = sr->flight.head; r && r->abandoned; r = r->next)
		;
	if (r)
		first = r->deadline;
	if (sr->waiting.head && sr->waiting.head->deadline < first)
		first = sr->waiting.head->deadline;
	if (first == UINT64_MAX) {
		evtimer_del(sr->timer_ev);
		return;
	}
	first = first > now ? first - now : 0;
	tv = (struct timeval){ .tv_sec = (time_t)(first / 1000),
			       .tv_usec = (suseconds_t)(first % 1000) * 1000 };
	evtimer_add(sr->timer_ev, &tv);
}

/* Calls r's done with res, counting the dispatch so that a close from
 * inside it leaves the store's memory alone until it returns. */
static void deliver(struct store_rbd *sr, struct rbd_req *r, int res)
{
	store_done_fn done = r->done;
	void *arg = r->arg;

	r->done = NULL;
	sr->dispatching++;
	done(arg, res);
	sr->dispatching--;
}

/* Gives r to librbd.  Returns 0 or the -errno librbd refused it with. */
static int req_start(struct store_rbd *sr, struct rbd_req *r)
{
	int e = rbd_aio_create_completion(r, NULL, &r->comp);

	if (e < 0)
		return e;
	switch (r->op) {
	case RBD_OP_READ:
		e = rbd_aio_read(sr->image, r->off, r->len, r->bounce, r->comp);
		break;
	case RBD_OP_WRITE:
		e = rbd_aio_write(sr->image, r->off, r->len, r->bounce, r->comp);
		break;
	case RBD_OP_DISCARD:
		e = rbd_aio_discard(sr->image, r->off, r->len, r->comp);
		break;
	case RBD_OP_FLUSH:
		e = rbd_aio_flush(sr->image, r->comp);
		break;
	}
	if (e < 0) {
		rbd_aio_release(r->comp);
		r->comp = NULL;
		return e;
	}
	sr->in_flight++;
	list_push(&sr->flight, r);
	return 0;
}

/* Starts waiting requests while there is room; one librbd refuses fails
 * with its error. */
static void refill(struct store_rbd *sr)
{
	while (!sr->closing && sr->waiting.head && sr->in_flight < sr->depth) {
		struct rbd_req *r = sr->waiting.head;
		int e;

		list_remove(&sr->waiting, r);
		e = req_start(sr, r);
		if (e < 0) {
			deliver(sr, r, e);
			req_free(r);
		}
	}
}

static void finish_close(struct store_rbd *sr);

/* After a dispatch from the loop: true if the store is closing, and then,
 * when it was closed from a done, its memory goes now. */
static bool closed_now(struct store_rbd *sr)
{
	if (!sr->closing)
		return false;
	if (sr->free_after_dispatch && !sr->dispatching) {
		sr->free_after_dispatch = false;
		finish_close(sr);
	}
	return true;
}

/* A completion librbd handed back. */
static void complete(struct store_rbd *sr, rbd_completion_t c)
{
	struct rbd_req *r = rbd_aio_get_arg(c);
	ssize_t v = rbd_aio_get_return_value(c);
	int res;

	rbd_aio_release(c);
	list_remove(&sr->flight, r);
	sr->in_flight--;
	if (r->abandoned) {
		sr->abandoned--;
		req_free(r);
		return;
	}
	if (v < 0)
		res = (int)v;
	else if (r->op == RBD_OP_READ && (size_t)v != r->len)
		res = -EIO; /* past the image's end: it shrank */
	else
		res = 0;
	if (res == 0 && r->op == RBD_OP_READ)
		memcpy(r->user, r->bounce, r->len);
	deliver(sr, r, res);
	req_free(r);
}

static void on_event(evutil_socket_t fd, short what, void *arg)
{
	struct store_rbd *sr = arg;
	rbd_completion_t comps[RBD_POLL_BATCH];
	uint64_t v;
	int n;

	(void)what;
	/* Read first: a completion that lands after the poll below signals
	 * the eventfd again, so none is left behind. */
	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_warn("rbd %s: reading the eventfd: %s", sr->label, strerror(errno));
	do {
		n = rbd_poll_io_events(sr->image, comps, RBD_POLL_BATCH);
		for (int i = 0; i < n; i++)
			complete(sr, comps[i]);
	} while (n == RBD_POLL_BATCH && !sr->closing);
	if (closed_now(sr))
		return;
	refill(sr);
	if (closed_now(sr))
		return;
	arm_timer(sr);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct store_rbd *sr = arg;
	uint64_t now = rbd_mono_ms();
	struct rbd_req *r, *next;

	(void)fd;
	(void)what;
	while ((r = sr->waiting.head) && r->deadline <= now && !sr->closing) {
		list_remove(&sr->waiting, r);
		sr->timed_out++;
		deliver(sr, r, -ETIMEDOUT);
		req_free(r);
	}
	for (r = sr->flight.head; r && !sr->closing; r = next) {
		next = r->next;
		if (r->abandoned)
			continue;
		if (r->deadline > now)
			break;
		/* librbd keeps it (and its bounce buffer) until the cluster
		 * or rados_osd_op_timeout ends it. */
		r->abandoned = true;
		sr->abandoned++;
		sr->timed_out++;
		log_limited(LOG_WARNING, "rbd-timeout", (uint64_t)(uintptr_t)sr,
			    "rbd %s: a request took more than %" PRIu32 " ms: failed",
			    sr->label, sr->st.timeout_ms);
		deliver(sr, r, -ETIMEDOUT);
	}
	if (closed_now(sr))
		return;
	arm_timer(sr);
}

static int submit(struct store_rbd *sr, enum rbd_op op, uint64_t off, void *user,
		  const void *src, size_t len, store_done_fn done, void *arg)
{
	struct rbd_req *r;

	if (sr->closing)
		return -ESHUTDOWN;
	if (!done)
		return -EINVAL;
	if (op != RBD_OP_FLUSH && (!len || (sr->st.align > 1 &&
					    (off % sr->st.align || len % sr->st.align))))
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	*r = (struct rbd_req){ .sr = sr, .op = op, .off = off, .len = len, .user = user,
			       .done = done, .arg = arg,
			       .deadline = rbd_mono_ms() + sr->st.timeout_ms };
	if (op == RBD_OP_READ || op == RBD_OP_WRITE) {
		r->bounce = malloc(len);
		if (!r->bounce) {
			free(r);
			return -ENOMEM;
		}
		if (op == RBD_OP_WRITE)
			memcpy(r->bounce, src, len);
	}
	list_push(&sr->waiting, r);
	/* Started from the loop, never here: done must not run inside
	 * this call, and librbd may refuse a request at once. */
	event_active(sr->efd_ev, EV_READ, 0);
	return 0;
}

static int sr_read(struct store *st, uint64_t off, void *buf, size_t len,
		   store_done_fn done, void *arg)
{
	return submit((struct store_rbd *)st, RBD_OP_READ, off, buf, NULL, len, done, arg);
}

static int sr_write(struct store *st, uint64_t off, const void *buf, size_t len,
		    store_done_fn done, void *arg)
{
	return submit((struct store_rbd *)st, RBD_OP_WRITE, off, NULL, buf, len, done, arg);
}

static int sr_discard(struct store *st, uint64_t off, uint64_t len,
		      store_done_fn done, void *arg)
{
	if (len > SIZE_MAX)
		return -EINVAL;
	return submit((struct store_rbd *)st, RBD_OP_DISCARD, off, NULL, NULL, (size_t)len,
		      done, arg);
}

static int sr_flush(struct store *st, store_done_fn done, void *arg)
{
	return submit((struct store_rbd *)st, RBD_OP_FLUSH, 0, NULL, NULL, 0, done, arg);
}

static unsigned sr_pending(const struct store *st)
{
	const struct store_rbd *sr = (const struct store_rbd *)st;
	unsigned n = sr->in_flight - sr->abandoned;

	for (const struct rbd_req *r = sr->waiting.head; r; r = r->next)
		n++;
	return n;
}

static void sr_get_stats(const struct store *st, struct store_stats *ret)
{
	const struct store_rbd *sr = (const struct store_rbd *)st;
	unsigned queued = 0;

	for (const struct rbd_req *r = sr->waiting.head; r; r = r->next)
		queued++;
	*ret = (struct store_stats){
		.in_flight = sr->in_flight - sr->abandoned, .queued = queued,
		.timed_out = sr->timed_out, .abandoned = sr->abandoned,
	};
}

/* Runs on a librbd thread once the image is closed: librbd has finished
 * with every request, abandoned ones included, and their buffers. */
static void on_closed(rbd_completion_t c, void *arg)
{
	struct store_rbd *sr = arg;
	struct rbd_req *r;

	rbd_aio_release(c);
	while ((r = sr->flight.head)) {
		list_remove(&sr->flight, r);
		if (r->comp)
			rbd_aio_release(r->comp);
		req_free(r);
	}
	rados_ioctx_destroy(sr->ioctx);
	close(sr->efd);
	free(sr->label);
	free(sr);
	pthread_mutex_lock(&client.lock);
	client.closing--;
	pthread_cond_broadcast(&client.cond);
	pthread_mutex_unlock(&client.lock);
}

/* Everything the loop had to do is done: hand the image to librbd to
 * close in the background, so that a stalled cluster does not hold the
 * loop. */
static void finish_close(struct store_rbd *sr)
{
	rbd_completion_t c;

	event_free(sr->efd_ev);
	event_free(sr->timer_ev);
	sr->efd_ev = sr->timer_ev = NULL;
	pthread_mutex_lock(&client.lock);
	client.closing++;
	pthread_mutex_unlock(&client.lock);
	if (rbd_aio_create_completion(sr, on_closed, &c) < 0 ||
	    rbd_aio_close(sr->image, c) < 0) {
		/* Cannot happen but for memory: close in the foreground. */
		rbd_close(sr->image);
		rbd_aio_create_completion(sr, NULL, &c);
		on_closed(c, sr);
	}
}

/* Every done runs before it returns: requests in librbd with -ECANCELED
 * (they are abandoned, their buffers freed when the image is closed), the
 * waiting ones too.  Never blocks on the cluster. */
static void sr_close(struct store *st)
{
	struct store_rbd *sr = (struct store_rbd *)st;
	struct rbd_req *r;

	if (sr->closing)
		return;
	sr->closing = true;
	while ((r = sr->waiting.head)) {
		list_remove(&sr->waiting, r);
		deliver(sr, r, -ECANCELED);
		req_free(r);
	}
	for (r = sr->flight.head; r; r = r->next)
		if (!r->abandoned) {
			r->abandoned = true;
			sr->abandoned++;
			deliver(sr, r, -ECANCELED);
		}
	if (sr->dispatching)
		sr->free_after_dispatch = true;
	else
		finish_close(sr);
}

static const struct store_ops rbd_ops = {
	.read = sr_read,
	.write = sr_write,
	.discard = sr_discard,
	.flush = sr_flush,
	.pending = sr_pending,
	.get_stats = sr_get_stats,
	.close = sr_close,
};

/*
 * What store_rbd_identity() says: the pool's id and a hash of the
 * namespace and the image's id.  An image's id is fixed at its creation
 * and never reused, so a renamed image is still the same one, and an
 * image deleted and created again under the same name is another.
 */
static int identify(struct store_rbd *sr, const char *path, const char *ns)
{
	char id[128];
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a, 64 bits */
	int64_t pool = rados_ioctx_get_id(sr->ioctx);
	int e = rbd_get_id(sr->image, id, sizeof(id));

	if (e < 0 || pool < 0) {
		log_err("rbd %s: cannot read the image's id: %s", path,
			strerror(e < 0 ? -e : EIO));
		return e < 0 ? e : -EIO;
	}
	for (const char *p = ns; ; p++) {
		h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
		if (!*p)
			break;
	}
	for (const char *p = id; *p; p++)
		h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
	/* Bit 63 set: no file's st_dev (a swap file's identity) has it. */
	sr->ident_pool = (1ull << 63) | (uint64_t)pool;
	sr->ident_image = h;
	return 0;
}

int store_rbd_identity(const struct store *st, uint64_t *dev, uint64_t *ino)
{
	const struct store_rbd *sr = (const struct store_rbd *)st;

	if (!st || st->ops != &rbd_ops)
		return -EINVAL;
	*dev = sr->ident_pool;
	*ino = sr->ident_image;
	return 0;
}

int store_rbd_open(struct store **ret, const char *path, const struct store_rbd_opts *o,
		   uint64_t *ret_size)
{
	struct store_rbd_name n;
	struct store_rbd *sr;
	uint64_t size = 0;
	int e, order = 0;

	if (!ret || !o)
		return -EINVAL;
	e = store_rbd_parse(path, &n);
	if (e < 0) {
		log_err("%s: not rbd:POOL/IMAGE or rbd:POOL/NAMESPACE/IMAGE (names of "
			"letters, digits, '.', '-', '_')", path);
		return e;
	}
	e = client_connect();
	if (e < 0)
		return e;
	sr = calloc(1, sizeof(*sr));
	if (!sr)
		return -ENOMEM;
	sr->efd = -1;
	sr->label = strdup(path);
	if (!sr->label) {
		e = -ENOMEM;
		goto fail_free;
	}
	e = rados_ioctx_create(client.cluster, n.pool, &sr->ioctx);
	if (e < 0) {
		log_err("rbd %s: no pool %s: %s", path, n.pool, strerror(-e));
		goto fail_free;
	}
	rados_ioctx_set_namespace(sr->ioctx, n.ns);
	e = rbd_open(sr->ioctx, n.image, &sr->image, NULL);
	if (e == -ENOENT && o->create_size) {
		/* Layering alone: no exclusive-lock dance with other
		 * clients, nothing to break when pagerd dies. */
		e = rbd_create2(sr->ioctx, n.image, o->create_size, RBD_FEATURE_LAYERING,
				&order);
		if (e < 0 && e != -EEXIST) {
			log_err("rbd %s: cannot create: %s", path, strerror(-e));
			goto fail_ioctx;
		}
		e = rbd_open(sr->ioctx, n.image, &sr->image, NULL);
	}
	if (e < 0) {
		log_err("rbd %s: cannot open: %s", path, strerror(-e));
		goto fail_ioctx;
	}
	e = rbd_get_size(sr->image, &size);
	if (e == 0 && o->create_size && size < o->create_size) {
		e = rbd_resize(sr->image, o->create_size);
		size = o->create_size;
	}
	if (e < 0) {
		log_err("rbd %s: cannot size: %s", path, strerror(-e));
		goto fail_image;
	}
	e = identify(sr, path, n.ns);
	if (e < 0)
		goto fail_image;
	sr->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (sr->efd < 0) {
		e = -errno;
		goto fail_image;
	}
	e = rbd_set_image_notification(sr->image, sr->efd, EVENT_TYPE_EVENTFD);
	if (e < 0) {
		log_err("rbd %s: cannot have completions through an eventfd: %s", path,
			strerror(-e));
		goto fail_image;
	}
	sr->efd_ev = event_new(client.base, sr->efd, EV_READ | EV_PERSIST, on_event, sr);
	sr->timer_ev = evtimer_new(client.base, on_timer, sr);
	if (!sr->efd_ev || !sr->timer_ev || event_add(sr->efd_ev, NULL) < 0) {
		e = -ENOMEM;
		goto fail_events;
	}
	sr->depth = o->depth ? o->depth : 64;
	sr->st.ops = &rbd_ops;
	sr->st.label = sr->label;
	sr->st.align = o->align ? o->align : 1;
	sr->st.timeout_ms = o->timeout_ms ? o->timeout_ms : client.timeout_ms;
	log_info("rbd %s: %" PRIu64 " bytes", path, size);
	if (ret_size)
		*ret_size = size;
	*ret = &sr->st;
	return 0;

fail_events:
	if (sr->efd_ev)
		event_free(sr->efd_ev);
	if (sr->timer_ev)
		event_free(sr->timer_ev);
fail_image:
	rbd_close(sr->image);
	if (sr->efd >= 0)
		close(sr->efd);
fail_ioctx:
	rados_ioctx_destroy(sr->ioctx);
fail_free:
	free(sr->label);
	free(sr);
	return e;
}
