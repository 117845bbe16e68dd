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
 * Blocking calls (connecting, opening, creating, locking, sizing an
 * image, its metadata) are made by store_rbd_open(), which pagerd calls at
 * start-up before its loop serves anyone, and otherwise only on a job's
 * own thread (store_rbd_image_open(), _commit(): snapshot images), which
 * hands its result to the loop through an eventfd, or is given up on at
 * its deadline and cleans up after itself.
 */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <rados/librados.h>
#include <rbd/librbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "dlist.h"
#include "log.h"
#include "store.h"

#define RBD_DEFAULT_TIMEOUT_MS 30000
#define RBD_POLL_BATCH 32
/* Reads a restore keeps in flight on an image (store.read_depth): each is
 * a round trip to an OSD, which a disk's read-ahead does not hide, so
 * streaming an image wants several times a disk's depth. */
#define RBD_READ_DEPTH 64

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
	/* Image jobs (their threads) not ended yet, and how many of them
	 * the loop still waits for. */
	unsigned jobs, jobs_waited;
	/* Connecting happens on a job's thread too. */
	pthread_mutex_t connect_lock;
	/* The full check (full_check()): running, and when it last ran. */
	bool full_checking;
	uint64_t full_checked_ms;
} client = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER,
	     .connect_lock = PTHREAD_MUTEX_INITIALIZER };

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
 * fails pagerd's start in that time, never hangs it.  On the loop at
 * start-up, or on a job's thread. */
static int client_connect_locked(void);

static int client_connect(void)
{
	int e;

	pthread_mutex_lock(&client.connect_lock);
	e = client_connect_locked();
	pthread_mutex_unlock(&client.connect_lock);
	return e;
}

static int client_connect_locked(void)
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
		while ((client.closing || client.jobs) && idle)
			idle = pthread_cond_timedwait(&client.cond, &client.lock, &until) == 0;
		idle = !client.closing && !client.jobs;
		pthread_mutex_unlock(&client.lock);
		/* An image still closing (a stalled cluster) would be freed
		 * under librbd's feet: leave the client to the exit. */
		if (idle) {
			rados_shutdown(client.cluster);
		} else {
			/* The client's settings stay too: a job may still
			 * be connecting with them. */
			log_warn("ceph: images still closing after the timeout: not waiting for them");
			client.connected = false;
			client.base = NULL;
			return;
		}
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

DLIST_FUNCS(list, struct rbd_list, struct rbd_req)

static void req_free(struct rbd_req *r)
{
	free(r->bounce);
	free(r);
}

/* Arms the timer for the earliest deadline: each list is in order of
 * acceptance, and every request has the same timeout. */
static void arm_timer(struct store_rbd *sr)
{
	uint64_t first = UINT64_MAX, now = now_ms();
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

/*
 * Why writes stall, said plainly.  A full cluster (an OSD past the full
 * ratio, or a pool past its quota, both flags in the OSD map) does not
 * fail a librbd write: librados holds it until there is room (asking the
 * OSD to try anyway would write past the ratio that protects the
 * cluster), so all pagerd sees is its own timeout.  On one, this asks the
 * monitor for the cluster's health, on a thread (a blocking mon command,
 * at most one at once and one a minute), and logs the full flags if
 * there are any.  A -ENOSPC or -EDQUOT librados does return is logged as
 * such where it comes (full_said()).
 */
static void *full_check_thread(void *arg)
{
	const char *cmd[] = { "{\"prefix\": \"health\", \"detail\": \"detail\"}" };
	char *out = NULL, *st = NULL, *label = arg;
	size_t outlen = 0, stlen = 0;
	int e = rados_mon_command(client.cluster, cmd, 1, "", 0, &out, &outlen, &st, &stlen);

	if (e == 0 && out) {
		char *text = strndup(out, outlen), *line, *save = NULL;

		/* "HEALTH_ERR ...; 1 full osd(s); 1 pool(s) full" then a
		 * line per check: the full ones are OSD_FULL, POOL_FULL. */
		for (line = text ? strtok_r(text, "\n", &save) : NULL; line;
		     line = strtok_r(NULL, "\n", &save)) {
			if (strstr(line, "OSD_FULL") || strstr(line, "POOL_FULL") ||
			    strstr(line, "OSDMAP_FLAGS") || strstr(line, "is full") ||
			    strstr(line, "running out of quota")) {
				while (*line == ' ')
					line++;
				log_err("rbd %s: the cluster is full: %s (its writes wait for room, "
					"and fail after ceph_timeout)", label, line);
			}
		}
		free(text);
	}
	rados_buffer_free(out);
	rados_buffer_free(st);
	free(label);
	pthread_mutex_lock(&client.lock);
	client.full_checking = false;
	client.jobs--;
	pthread_cond_broadcast(&client.cond);
	pthread_mutex_unlock(&client.lock);
	return NULL;
}


/* A request to label timed out: see whether the cluster is full. */
static void full_check(const char *label)
{
	uint64_t now = now_ms();
	pthread_attr_t at;
	pthread_t t;
	char *l;
	bool go;

	pthread_mutex_lock(&client.lock);
	go = client.connected && !client.full_checking &&
	     (!client.full_checked_ms || now - client.full_checked_ms >= 60000);
	if (go) {
		client.full_checking = true;
		client.full_checked_ms = now;
		client.jobs++; /* shutdown waits for it */
	}
	pthread_mutex_unlock(&client.lock);
	if (!go)
		return;
	l = strdup(label);
	if (l && pthread_attr_init(&at) == 0) {
		pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
		go = pthread_create(&t, &at, full_check_thread, l) == 0;
		pthread_attr_destroy(&at);
	} else {
		go = false;
	}
	if (!go) {
		free(l);
		pthread_mutex_lock(&client.lock);
		client.full_checking = false;
		client.jobs--;
		pthread_cond_broadcast(&client.cond);
		pthread_mutex_unlock(&client.lock);
	}
}

/* What librados says when it does say the cluster is full. */
static void full_said(const char *label, int res)
{
	if (res == -ENOSPC || res == -EDQUOT)
		log_limited(LOG_ERR, "rbd-full", 0, "rbd %s: the cluster is full (%s): %s",
			    label, res == -EDQUOT ? "the pool's quota" : "an OSD or the pool",
			    strerror(-res));
}

/* Calls r's done with res, counting the dispatch so that a close from
 * inside it leaves the store's memory alone until it returns. */
static void deliver(struct store_rbd *sr, struct rbd_req *r, int res)
{
	store_done_fn done = r->done;
	void *arg = r->arg;

	r->done = NULL;
	full_said(sr->label, res);
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
	list_push_tail(&sr->flight, r);
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
	uint64_t now = now_ms();
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
		full_check(sr->label);
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
			       .deadline = now_ms() + sr->st.timeout_ms };
	if (op == RBD_OP_READ || op == RBD_OP_WRITE) {
		r->bounce = malloc(len);
		if (!r->bounce) {
			free(r);
			return -ENOMEM;
		}
		if (op == RBD_OP_WRITE)
			memcpy(r->bounce, src, len);
	}
	list_push_tail(&sr->waiting, r);
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

/* Hands the image to librbd to close in the background, so that a
 * stalled cluster does not hold the loop; on_closed() frees sr. */
static void close_in_background(struct store_rbd *sr)
{
	rbd_completion_t c;

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

/* Everything the loop had to do is done: close in the background. */
static void finish_close(struct store_rbd *sr)
{
	event_free(sr->efd_ev);
	event_free(sr->timer_ev);
	sr->efd_ev = sr->timer_ev = NULL;
	close_in_background(sr);
}

/* An image opened by a job whose store never got its events (or lost
 * them): closed in the background too. */
static void close_unarmed(struct store_rbd *sr)
{
	sr->closing = true;
	close_in_background(sr);
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

/* The store's events on the loop, and its settings: the last step of
 * opening, on the loop's thread.  0 or -ENOMEM (sr untouched). */
static int store_arm(struct store_rbd *sr, unsigned depth, size_t align, uint32_t timeout_ms)
{
	sr->efd_ev = event_new(client.base, sr->efd, EV_READ | EV_PERSIST, on_event, sr);
	sr->timer_ev = evtimer_new(client.base, on_timer, sr);
	if (!sr->efd_ev || !sr->timer_ev || event_add(sr->efd_ev, NULL) < 0) {
		if (sr->efd_ev)
			event_free(sr->efd_ev);
		if (sr->timer_ev)
			event_free(sr->timer_ev);
		sr->efd_ev = sr->timer_ev = NULL;
		return -ENOMEM;
	}
	sr->depth = depth ? depth : 64;
	sr->st.ops = &rbd_ops;
	sr->st.label = sr->label;
	sr->st.align = align ? align : 1;
	sr->st.timeout_ms = timeout_ms ? timeout_ms : client.timeout_ms;
	sr->st.gives_back = true; /* every request has a bounce buffer of ours */
	sr->st.read_depth = sr->depth < RBD_READ_DEPTH ? sr->depth : RBD_READ_DEPTH;
	return 0;
}

/* Frees what image_open() made, blocking on the cluster for the image's
 * close: only where blocking is allowed (start-up, a job's thread). */
static void image_free(struct store_rbd *sr)
{
	if (sr->image)
		rbd_close(sr->image);
	if (sr->efd >= 0)
		close(sr->efd);
	if (sr->ioctx)
		rados_ioctx_destroy(sr->ioctx);
	free(sr->label);
	free(sr);
}

/* The eventfd librbd signals completions on.  0 or -errno. */
static int image_notify(struct store_rbd *sr, const char *path)
{
	int e;

	sr->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (sr->efd < 0)
		return -errno;
	e = rbd_set_image_notification(sr->image, sr->efd, EVENT_TYPE_EVENTFD);
	if (e < 0)
		log_err("rbd %s: cannot have completions through an eventfd: %s", path,
			strerror(-e));
	return e;
}

/* Connects, and makes an sr with the pool's ioctx in the name's
 * namespace (no image yet).  Blocks.  0 or -errno, logged. */
static int image_prepare(const char *path, struct store_rbd_name *n, struct store_rbd **ret)
{
	struct store_rbd *sr;
	int e;

	e = store_rbd_parse(path, n);
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
		free(sr);
		return -ENOMEM;
	}
	e = rados_ioctx_create(client.cluster, n->pool, &sr->ioctx);
	if (e < 0) {
		log_err("rbd %s: no pool %s: %s", path, n->pool, strerror(-e));
		sr->ioctx = NULL;
		image_free(sr);
		return e;
	}
	rados_ioctx_set_namespace(sr->ioctx, n->ns);
	*ret = sr;
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
	e = image_prepare(path, &n, &sr);
	if (e < 0)
		return e;
	e = rbd_open(sr->ioctx, n.image, &sr->image, NULL);
	if (e == -ENOENT && o->create_size) {
		/* Layering alone: no exclusive-lock dance with other
		 * clients, nothing to break when pagerd dies. */
		e = rbd_create2(sr->ioctx, n.image, o->create_size, RBD_FEATURE_LAYERING,
				&order);
		if (e < 0 && e != -EEXIST) {
			log_err("rbd %s: cannot create: %s", path, strerror(-e));
			goto fail;
		}
		e = rbd_open(sr->ioctx, n.image, &sr->image, NULL);
	}
	if (e < 0) {
		log_err("rbd %s: cannot open: %s", path, strerror(-e));
		sr->image = NULL;
		goto fail;
	}
	e = rbd_get_size(sr->image, &size);
	if (e == 0 && o->create_size && size < o->create_size) {
		e = rbd_resize(sr->image, o->create_size);
		size = o->create_size;
	}
	if (e < 0) {
		log_err("rbd %s: cannot size: %s", path, strerror(-e));
		goto fail;
	}
	e = identify(sr, path, n.ns);
	if (e == 0)
		e = image_notify(sr, path);
	if (e == 0)
		e = store_arm(sr, o->depth, o->align, o->timeout_ms);
	if (e < 0)
		goto fail;
	log_info("rbd %s: %" PRIu64 " bytes", path, size);
	if (ret_size)
		*ret_size = size;
	*ret = &sr->st;
	return 0;
fail:
	image_free(sr);
	return e;
}

/* ---- snapshot images: jobs off the loop ------------------------------------ */

/* Jobs whose threads may run at once: beyond, a request fails with
 * -EAGAIN rather than pile threads up on a stalled cluster. */
#define RBD_JOBS_MAX 32
/* The table is written and read in pieces well under osd_max_write_size. */
#define RBD_CRC_CHUNK (4u << 20)
#define META_PREFIX "pagerd."

enum job_kind { JOB_OPEN, JOB_COMMIT };

struct store_rbd_job {
	enum job_kind kind;
	struct store_rbd_job_opts o;
	char *path;
	store_rbd_job_fn done;
	void *arg;
	/* The loop's side: signalled by the thread, or the deadline. */
	int efd;
	struct event *efd_ev, *timer_ev;
	/* Under client.lock: */
	bool finished;        /* the thread's work is over, results below */
	bool abandoned;       /* the loop gave up: the thread frees it all */
	/* Results (JOB_OPEN), or the store to commit (JOB_COMMIT). */
	int res;
	struct store_rbd *sr;
	struct store_rbd_image img;
	/* JOB_COMMIT: */
	void *crc;
	size_t crc_len;
	void *order;          /* IMAGE.order, or NULL */
	size_t order_len;
	struct image_meta meta;
};

static void job_free(struct store_rbd_job *j)
{
	if (j->sr)
		image_free(j->sr);
	if (j->img.crc_fd >= 0)
		close(j->img.crc_fd);
	if (j->efd >= 0)
		close(j->efd);
	free(j->img.order);
	free(j->order);
	free(j->crc);
	free(j->path);
	free(j);
}

static int meta_get(rbd_image_t im, const char *key, char *buf, size_t n)
{
	char k[64];
	size_t len = n;
	int e;

	snprintf(k, sizeof(k), META_PREFIX "%s", key);
	memset(buf, 0, n);
	/* (librbd sets len only when the value does not fit: -ERANGE.) */
	e = rbd_metadata_get(im, k, buf, &len);
	if (e == -ERANGE)
		return -EINVAL;
	if (e < 0)
		return e;
	if (!memchr(buf, '\0', n))
		return -EINVAL;
	return 0;
}

static int meta_u64(rbd_image_t im, const char *key, uint64_t *ret)
{
	char buf[32], *end;
	int e = meta_get(im, key, buf, sizeof(buf));

	if (e < 0)
		return e;
	errno = 0;
	*ret = strtoull(buf, &end, 10);
	if (errno || end == buf || *end || buf[0] == '-')
		return -EINVAL;
	return 0;
}

/*
 * Reads and checks a snapshot image's keys, as image_meta_load() does a
 * file's IMAGE.meta: complete, format 2, the image's exact size, a page
 * multiple.  0, or -EINVAL with the reason logged.
 */
static int meta_load(struct store_rbd *sr, const char *path, struct image_meta *ret)
{
	struct image_meta m = { .format = 2 };
	uint64_t size = 0, pages = 0, ps = 0;
	char buf[96];
	const char *why = NULL;
	int e;

	e = meta_get(sr->image, "complete", buf, sizeof(buf));
	if (e < 0 && e != -ENOENT && e != -EINVAL) {
		log_warn("rbd %s: reading its metadata: %s", path, strerror(-e));
		return e;
	}
	if (e < 0 || strcmp(buf, "yes"))
		why = "not a complete pagerd snapshot (no " META_PREFIX "complete)";
	else if (meta_get(sr->image, "format", buf, sizeof(buf)) < 0 ||
		 strcmp(buf, "pagerd-image 2"))
		why = "not of format pagerd-image 2";
	else if (meta_u64(sr->image, "size", &m.size) < 0 ||
		 meta_u64(sr->image, "page_size", &ps) < 0 ||
		 meta_u64(sr->image, "pages", &pages) < 0 ||
		 meta_u64(sr->image, "data_pages", &m.data_pages) < 0 ||
		 meta_u64(sr->image, "created", &m.created) < 0 ||
		 meta_get(sr->image, "name", m.name, sizeof(m.name)) < 0)
		why = "a key missing or malformed";
	else if ((e = rbd_get_size(sr->image, &size)) < 0)
		return e;
	else if (!ps || ps > UINT32_MAX || (ps & (ps - 1)) || m.size % ps ||
		 pages != m.size / ps || m.size != size || m.data_pages > pages || !m.size)
		why = "its sizes do not match the image";
	if (why) {
		log_warn("rbd %s: %s", path, why);
		return -EINVAL;
	}
	m.page_size = (uint32_t)ps;
	*ret = m;
	return 0;
}

static void crc_oid(char *buf, size_t n, const struct store_rbd_name *nm)
{
	snprintf(buf, n, STORE_RBD_CRC_PREFIX "%s", nm->image);
}

static void order_oid(char *buf, size_t n, const struct store_rbd_name *nm)
{
	snprintf(buf, n, STORE_RBD_ORDER_PREFIX "%s", nm->image);
}

/*
 * Reads the image's learned order (pagerd_order.IMAGE) as stored, into
 * j->img.order: the restore checks it (against the table, as a file's
 * IMAGE.order) and ignores it if it is wrong, so a missing, oversized or
 * unreadable one only costs the order, never the restore.
 */
static void order_load(struct store_rbd_job *j, struct store_rbd *sr,
		       const struct store_rbd_name *nm)
{
	char oid[STORE_RBD_NAME_MAX + 16];
	uint64_t size = 0;
	time_t mtime;
	char *buf;
	int e, got;

	order_oid(oid, sizeof(oid), nm);
	e = rados_stat(sr->ioctx, oid, &size, &mtime);
	if (e == -ENOENT)
		return;
	if (e == 0 && (size < IMAGE_ORDER_ENTRIES_OFF ||
		       size > image_order_size(IMAGE_ORDER_MAX)))
		e = -EFBIG;
	buf = e == 0 ? malloc((size_t)size) : NULL;
	if (e == 0 && !buf)
		e = -ENOMEM;
	/* At most 2 MiB: one read. */
	got = e == 0 ? rados_read(sr->ioctx, oid, buf, (size_t)size, 0) : 0;
	if (e == 0 && got != (int)size)
		e = got < 0 ? got : -EIO;
	if (e < 0) {
		log_warn("rbd %s: its learned order (%s) cannot be read: %s; restoring "
			 "without it", j->path, oid, strerror(-e));
		free(buf);
		return;
	}
	j->img.order = buf;
	j->img.order_len = (size_t)size;
}

/* Reads the image's table into a memfd sealed against every change.
 * 0 or -errno (-EINVAL: not the size a table of `pages` has). */
static int crc_load(struct store_rbd *sr, const struct store_rbd_name *nm, uint64_t pages,
		    int *ret_fd)
{
	char oid[STORE_RBD_NAME_MAX + 16];
	uint64_t size = 0, want = image_crc_size(pages);
	time_t mtime;
	char *buf;
	int fd, e;

	crc_oid(oid, sizeof(oid), nm);
	e = rados_stat(sr->ioctx, oid, &size, &mtime);
	if (e < 0)
		return e == -ENOENT ? -EINVAL : e;
	if (size != want)
		return -EINVAL;
	buf = malloc(RBD_CRC_CHUNK);
	fd = memfd_create("pagerd-image-crc", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (!buf || fd < 0) {
		e = fd < 0 ? -errno : -ENOMEM;
		goto out;
	}
	for (uint64_t off = 0; off < want;) {
		size_t len = want - off < RBD_CRC_CHUNK ? (size_t)(want - off) : RBD_CRC_CHUNK;
		int got = rados_read(sr->ioctx, oid, buf, len, off);

		if (got <= 0) {
			e = got < 0 ? got : -EIO;
			goto out;
		}
		if (write(fd, buf, (size_t)got) != got) {
			e = -EIO;
			goto out;
		}
		off += (uint64_t)got;
	}
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0) {
		e = -errno;
		goto out;
	}
	*ret_fd = fd;
	fd = -1;
	e = 0;
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	return e;
}

/* A snapshot's image: created if missing, locked, marked incomplete,
 * sized and emptied.  Blocks.  0 or -errno, logged. */
static int open_for_snapshot(struct store_rbd_job *j, const struct store_rbd_name *n)
{
	struct store_rbd *sr = j->sr;
	uint64_t size = 0, features = 0;
	int e, order = 0;

	e = rbd_open(sr->ioctx, n->image, &sr->image, NULL);
	if (e == -ENOENT) {
		/* The exclusive lock is what keeps a second writer out. */
		e = rbd_create2(sr->ioctx, n->image, j->o.size,
				RBD_FEATURE_LAYERING | RBD_FEATURE_EXCLUSIVE_LOCK, &order);
		if (e < 0 && e != -EEXIST) {
			log_err("rbd %s: cannot create: %s", j->path, strerror(-e));
			return e;
		}
		e = rbd_open(sr->ioctx, n->image, &sr->image, NULL);
	}
	if (e < 0) {
		sr->image = NULL;
		log_err("rbd %s: cannot open: %s", j->path, strerror(-e));
		return e;
	}
	e = rbd_get_features(sr->image, &features);
	if (e == 0 && !(features & RBD_FEATURE_EXCLUSIVE_LOCK))
		e = rbd_update_features(sr->image, RBD_FEATURE_EXCLUSIVE_LOCK, 1);
	if (e < 0) {
		log_err("rbd %s: cannot have an exclusive lock on it: %s", j->path, strerror(-e));
		return e;
	}
	/* Held until the image is closed: the owner refuses to hand it
	 * over (-EROFS here), so a second snapshot to the image fails
	 * instead of interleaving its writes with ours.  A dead owner's
	 * lock is broken by librbd once its watch expires. */
	e = rbd_lock_acquire(sr->image, RBD_LOCK_MODE_EXCLUSIVE);
	if (e == -EROFS || e == -EBUSY) {
		log_warn("rbd %s: another client is writing a snapshot to it", j->path);
		return -EBUSY;
	}
	if (e < 0) {
		log_err("rbd %s: cannot lock: %s", j->path, strerror(-e));
		return e;
	}
	e = rbd_metadata_remove(sr->image, META_PREFIX "complete");
	if (e < 0 && e != -ENOENT) {
		log_err("rbd %s: cannot mark incomplete: %s", j->path, strerror(-e));
		return e;
	}
	/* An older snapshot's order would steer this one's restores (it is
	 * bound to the table, but a table can come out the same). */
	{
		char oid[STORE_RBD_NAME_MAX + 16];

		order_oid(oid, sizeof(oid), n);
		e = rados_remove(sr->ioctx, oid);
		if (e < 0 && e != -ENOENT) {
			log_err("rbd %s: cannot remove its old learned order: %s", j->path,
				strerror(-e));
			return e;
		}
	}
	e = rbd_get_size(sr->image, &size);
	if (e == 0 && size != j->o.size)
		e = rbd_resize(sr->image, j->o.size);
	/* Holes must read as zeros: what an earlier snapshot left goes
	 * (in pieces: librbd's discard returns its length as an int). */
	for (uint64_t off = 0; e == 0 && off < j->o.size;) {
		uint64_t len = j->o.size - off < (1ull << 30) ? j->o.size - off : 1ull << 30;
		int d = rbd_discard(sr->image, off, len);

		e = d < 0 ? d : 0;
		off += len;
	}
	if (e < 0) {
		log_err("rbd %s: cannot size and empty: %s", j->path, strerror(-e));
		return e;
	}
	return identify(sr, j->path, n->ns);
}

static int open_for_reading(struct store_rbd_job *j, const struct store_rbd_name *n)
{
	struct store_rbd *sr = j->sr;
	int e = rbd_open_read_only(sr->ioctx, n->image, &sr->image, NULL);

	if (e < 0) {
		sr->image = NULL;
		log_warn("rbd %s: cannot open: %s", j->path, strerror(-e));
		return e;
	}
	e = meta_load(sr, j->path, &j->img.meta);
	if (e == 0 && j->o.page_size && j->img.meta.page_size != j->o.page_size) {
		log_warn("rbd %s: made with pages of %" PRIu32 " bytes, not %" PRIu32,
			 j->path, j->img.meta.page_size, j->o.page_size);
		e = -EINVAL;
	}
	if (e == 0 && j->o.mode == STORE_RBD_RESTORE) {
		e = crc_load(sr, n, j->img.meta.size / j->img.meta.page_size, &j->img.crc_fd);
		if (e < 0)
			log_warn("rbd %s: its checksum table (%s%s) cannot be read: %s",
				 j->path, STORE_RBD_CRC_PREFIX, n->image, strerror(-e));
	}
	if (e == 0 && j->o.mode == STORE_RBD_RESTORE)
		order_load(j, sr, n);
	return e;
}

static int job_open(struct store_rbd_job *j)
{
	struct store_rbd_name n;
	int e = image_prepare(j->path, &n, &j->sr);

	if (e < 0) {
		j->sr = NULL;
		return e;
	}
	e = j->o.mode == STORE_RBD_SNAPSHOT ? open_for_snapshot(j, &n)
					    : open_for_reading(j, &n);
	if (e == 0 && j->o.mode != STORE_RBD_INFO)
		e = image_notify(j->sr, j->path);
	if (e < 0 || j->o.mode == STORE_RBD_INFO) {
		image_free(j->sr);
		j->sr = NULL;
	}
	return e;
}

static int meta_set(rbd_image_t im, const char *key, const char *val)
{
	char k[64];

	snprintf(k, sizeof(k), META_PREFIX "%s", key);
	return rbd_metadata_set(im, k, val);
}

/* Flush, the table, the keys, "complete" last; then the image closes
 * (its lock goes with it).  0 or -errno, logged. */
static int job_commit(struct store_rbd_job *j)
{
	struct store_rbd *sr = j->sr;
	const struct image_meta *m = &j->meta;
	struct store_rbd_name n;
	char oid[STORE_RBD_NAME_MAX + 16], v[5][32];
	const char *what = "flushing";
	int e;

	if (store_rbd_parse(j->path, &n) < 0)
		return -EINVAL;
	crc_oid(oid, sizeof(oid), &n);
	e = rbd_flush(sr->image);
	what = "writing its checksum table";
	for (size_t off = 0; e == 0 && off < j->crc_len;) {
		size_t len = j->crc_len - off < RBD_CRC_CHUNK ? j->crc_len - off : RBD_CRC_CHUNK;

		e = off ? rados_write(sr->ioctx, oid, (char *)j->crc + off, len, off)
			: rados_write_full(sr->ioctx, oid, j->crc, len);
		off += len;
	}
	/* The order after its table (it names the table's CRC), before
	 * "complete"; at most 2 MiB: one write. */
	if (e == 0 && j->order_len) {
		what = "writing its learned order";
		order_oid(oid, sizeof(oid), &n);
		e = rados_write_full(sr->ioctx, oid, j->order, j->order_len);
	}
	snprintf(v[0], sizeof(v[0]), "%" PRIu64, m->size);
	snprintf(v[1], sizeof(v[1]), "%" PRIu32, m->page_size);
	snprintf(v[2], sizeof(v[2]), "%" PRIu64, m->size / m->page_size);
	snprintf(v[3], sizeof(v[3]), "%" PRIu64, m->data_pages);
	snprintf(v[4], sizeof(v[4]), "%" PRIu64, m->created);
	if (e == 0)
		what = "writing its metadata";
	if (e == 0 && (e = meta_set(sr->image, "format", "pagerd-image 2")) == 0 &&
	    (e = meta_set(sr->image, "size", v[0])) == 0 &&
	    (e = meta_set(sr->image, "page_size", v[1])) == 0 &&
	    (e = meta_set(sr->image, "pages", v[2])) == 0 &&
	    (e = meta_set(sr->image, "data_pages", v[3])) == 0 &&
	    (e = meta_set(sr->image, "created", v[4])) == 0 &&
	    (e = meta_set(sr->image, "name", m->name[0] ? m->name : "-")) == 0)
		e = meta_set(sr->image, "complete", "yes");
	if (e < 0)
		log_err("rbd %s: committing the snapshot: %s: %s", j->path, what, strerror(-e));
	/* Closed here, on this thread: the lock goes once all is in. */
	image_free(sr);
	j->sr = NULL;
	return e;
}

static void *job_thread(void *arg)
{
	struct store_rbd_job *j = arg;
	int res = j->kind == JOB_OPEN ? job_open(j) : job_commit(j);
	uint64_t one = 1;
	bool abandoned;

	pthread_mutex_lock(&client.lock);
	j->res = res;
	j->finished = true;
	abandoned = j->abandoned;
	if (!abandoned) {
		/* Cannot fail: an eventfd far below its maximum. */
		ssize_t w_ = write(j->efd, &one, sizeof(one));

		(void)w_;
	}
	pthread_mutex_unlock(&client.lock);
	if (abandoned)
		job_free(j);
	pthread_mutex_lock(&client.lock);
	client.jobs--;
	pthread_cond_broadcast(&client.cond);
	pthread_mutex_unlock(&client.lock);
	return NULL;
}

/* The loop lets go of j: its events, and j itself if the thread is over
 * (else the thread frees it).  Returns whether the thread was over. */
static bool job_release(struct store_rbd_job *j)
{
	bool finished;

	event_free(j->efd_ev);
	event_free(j->timer_ev);
	j->efd_ev = j->timer_ev = NULL;
	pthread_mutex_lock(&client.lock);
	finished = j->finished;
	if (!finished)
		j->abandoned = true;
	client.jobs_waited--;
	pthread_mutex_unlock(&client.lock);
	return finished;
}

/* On the loop: the thread is over, or the deadline passed. */
static void job_event(evutil_socket_t fd, short what, void *arg)
{
	struct store_rbd_job *j = arg;
	store_rbd_job_fn done = j->done;
	void *darg = j->arg;
	int res;

	(void)fd;
	(void)what;
	if (!job_release(j)) {
		log_warn("rbd %s: the cluster did not answer within %" PRIu32 " ms", j->path,
			 j->o.timeout_ms);
		full_check(j->path);
		done(darg, -ETIMEDOUT, NULL);
		return;
	}
	res = j->res;
	full_said(j->path, res);
	if (res == -ETIMEDOUT) /* librados' own op timeout */
		full_check(j->path);
	if (res == 0 && j->sr) {
		/* A restore's image takes the reads it states it wants. */
		unsigned depth = j->o.mode == STORE_RBD_RESTORE && j->o.depth < RBD_READ_DEPTH ?
				 RBD_READ_DEPTH : j->o.depth;

		res = store_arm(j->sr, depth, j->o.align, j->o.timeout_ms);
		if (res == 0) {
			j->img.st = &j->sr->st;
			j->sr = NULL;
		}
	}
	if (res == 0) {
		struct store_rbd_image img = j->img;

		j->img.crc_fd = -1; /* the caller's now */
		j->img.order = NULL;
		done(darg, 0, &img);
	} else {
		done(darg, res, NULL);
	}
	/* A store that could not be armed: closed without blocking. */
	if (j->sr) {
		close_unarmed(j->sr);
		j->sr = NULL;
	}
	job_free(j);
}

static int job_start(struct store_rbd_job *j, struct store_rbd_job **ret)
{
	struct timeval tv = { .tv_sec = j->o.timeout_ms / 1000,
			      .tv_usec = (suseconds_t)(j->o.timeout_ms % 1000) * 1000 };
	pthread_attr_t at;
	pthread_t t;
	bool room;
	int e;

	pthread_mutex_lock(&client.lock);
	room = client.jobs < RBD_JOBS_MAX;
	if (room) {
		client.jobs++;
		client.jobs_waited++;
	}
	pthread_mutex_unlock(&client.lock);
	if (!room) {
		log_warn("rbd %s: %u requests already wait for the cluster", j->path, RBD_JOBS_MAX);
		if (j->sr) {
			close_unarmed(j->sr);
			j->sr = NULL;
		}
		job_free(j);
		return -EAGAIN;
	}
	j->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (j->efd >= 0) {
		j->efd_ev = event_new(client.base, j->efd, EV_READ, job_event, j);
		j->timer_ev = evtimer_new(client.base, job_event, j);
	}
	e = j->efd_ev && j->timer_ev && event_add(j->efd_ev, NULL) == 0 &&
	    evtimer_add(j->timer_ev, &tv) == 0 ? 0 : -ENOMEM;
	if (e == 0 && pthread_attr_init(&at) == 0) {
		pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
		e = -pthread_create(&t, &at, job_thread, j);
		pthread_attr_destroy(&at);
	} else {
		e = -ENOMEM;
	}
	if (e < 0) {
		if (j->efd_ev)
			event_free(j->efd_ev);
		if (j->timer_ev)
			event_free(j->timer_ev);
		pthread_mutex_lock(&client.lock);
		client.jobs--;
		client.jobs_waited--;
		pthread_mutex_unlock(&client.lock);
		if (j->sr) {
			close_unarmed(j->sr); /* a commit's image */
			j->sr = NULL;
		}
		job_free(j);
		return e;
	}
	if (ret)
		*ret = j;
	return 0;
}

static struct store_rbd_job *job_new(enum job_kind kind, const char *path,
				     const struct store_rbd_job_opts *o,
				     store_rbd_job_fn done, void *arg)
{
	struct store_rbd_job *j = calloc(1, sizeof(*j));

	if (!j)
		return NULL;
	j->kind = kind;
	j->efd = -1;
	j->img.crc_fd = -1;
	j->done = done;
	j->arg = arg;
	if (o)
		j->o = *o;
	if (!j->o.timeout_ms)
		j->o.timeout_ms = client.timeout_ms;
	j->path = strdup(path);
	if (!j->path) {
		free(j);
		return NULL;
	}
	return j;
}

int store_rbd_image_open(const char *path, const struct store_rbd_job_opts *o,
			 store_rbd_job_fn done, void *arg, struct store_rbd_job **ret)
{
	struct store_rbd_name n;
	struct store_rbd_job *j;

	if (!o || !done || store_rbd_parse(path, &n) < 0 ||
	    (o->mode == STORE_RBD_SNAPSHOT && !o->size))
		return -EINVAL;
	if (!client.base)
		return -ENOTCONN;
	j = job_new(JOB_OPEN, path, o, done, arg);
	if (!j)
		return -ENOMEM;
	return job_start(j, ret);
}

int store_rbd_image_commit(struct store *st, const void *crc, size_t crc_len,
			   const void *order, size_t order_len,
			   const struct image_meta *m, store_rbd_job_fn done, void *arg,
			   struct store_rbd_job **ret)
{
	struct store_rbd *sr = (struct store_rbd *)st;
	struct store_rbd_job *j;

	if (!st || st->ops != &rbd_ops || !m || !done)
		return -EINVAL;
	if (sr->closing || sr->in_flight || sr->waiting.head || sr->dispatching) {
		store_close(st);
		return -EBUSY;
	}
	j = job_new(JOB_COMMIT, sr->label, &(struct store_rbd_job_opts){
		.timeout_ms = st->timeout_ms }, done, arg);
	if (j) {
		j->crc = malloc(crc_len ? crc_len : 1);
		j->order = order_len ? malloc(order_len) : NULL;
		if (!j->crc || (order_len && !j->order)) {
			job_free(j);
			j = NULL;
		}
	}
	if (!j) {
		store_close(st);
		return -ENOMEM;
	}
	memcpy(j->crc, crc, crc_len);
	j->crc_len = crc_len;
	if (order_len)
		memcpy(j->order, order, order_len);
	j->order_len = order_len;
	j->meta = *m;
	/* The store leaves the loop: the job's thread has the image now
	 * (nothing is in flight, so nothing of librbd calls us back). */
	sr->closing = true;
	event_free(sr->efd_ev);
	event_free(sr->timer_ev);
	sr->efd_ev = sr->timer_ev = NULL;
	j->sr = sr;
	return job_start(j, ret);
}

void store_rbd_job_cancel(struct store_rbd_job *j)
{
	if (!j || !job_release(j))
		return; /* the thread frees it */
	if (j->sr) {
		/* Opened meanwhile, not wanted. */
		close_unarmed(j->sr);
		j->sr = NULL;
	}
	job_free(j);
}
