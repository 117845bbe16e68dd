/* SPDX-License-Identifier: MIT */
/*
 * One client connection: the requests it may send, the checks every field
 * and descriptor passes before use, and the teardown that leaves nothing of
 * the client behind.
 */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>
#include <linux/magic.h>

#include "fd.h"
#include "fdstore.h"
#include "log.h"
#include "page.h"
#include "pagerd.h"
#include "stats.h"
#include "store.h"
#include "swap.h"
#include "uffd.h"

static void client_on_sock(int fd, short what, void *arg);

/* The client's uffd is readable; fault.c serves it.  A client that broke
 * the protocol there, or whose uffd failed, is dropped here. */
static void client_on_uffd(evutil_socket_t fd, short what, void *arg)
{
	struct client *c = arg;

	(void)fd;
	(void)what;
	if (fault_serve(c) < 0)
		client_destroy(c);
}

/* Faults parked behind an event are retried: the uffd is read again. */
static void client_on_retry(evutil_socket_t fd, short what, void *arg)
{
	client_on_uffd(fd, what, arg);
}

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

/*
 * Connections beyond max_clients kept for root, pagerd's own user and
 * admin_group, so that pagerctl gets in however many connections ordinary
 * users hold.
 */
#define CLIENT_ADMIN_RESERVE 16

int client_add(struct daemon *d, int sock, uint64_t id, struct client **ret)
{
	socklen_t len = sizeof(struct ucred);
	struct client *c;
	int e;

	if (!config_peer_allowed(&d->cfg, sock))
		return -EACCES;
	/* client_accept() keeps ordinary users under max_clients. */
	if (d->nclients >= d->cfg.max_clients + CLIENT_ADMIN_RESERVE) {
		log_warn_rl(0, "refusing a connection: %u clients already", d->nclients);
		return -EMFILE;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->d = d;
	c->id = id;
	c->sock = sock;
	c->uffd = -1;
	c->agent = -1;
	c->state_fd = -1;
	c->pagemap = -1;
	c->pidfd = -1;
	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &c->cred, &len) < 0) {
		free(c);
		return -errno;
	}
	e = fd_nonblock(sock, true);
	if (e < 0) {
		free(c);
		return e;
	}
	c->sock_ev = event_new(d->base, sock, EV_READ | EV_PERSIST,
			       client_on_sock, c);
	c->retry_ev = evtimer_new(d->base, client_on_retry, c);
	if (!c->sock_ev || !c->retry_ev ||
	    event_add(c->sock_ev, NULL) < 0) {
		if (c->sock_ev)
			event_free(c->sock_ev);
		if (c->retry_ev)
			event_free(c->retry_ev);
		free(c);
		return -ENOMEM;
	}
	c->next = d->clients;
	if (d->clients)
		d->clients->prev = c;
	d->clients = c;
	d->nclients++;
	*ret = c;
	return 0;
}

/*
 * Whether a new connection from `cred` may take a slot: nobody but the
 * admins (who may use pagerctl) past max_clients, and no ordinary user past
 * max_user_clients, so that neither a user's connections nor everyone's
 * can lock the administrator out.  Returns 0 or -EMFILE.
 */
static int client_slot_check(struct daemon *d, const struct ucred *cred)
{
	unsigned per_user = d->cfg.max_user_clients, mine = 0;

	if (config_cred_admin(&d->cfg, cred))
		return 0; /* client_add() holds them to the reserve */
	if (d->nclients >= d->cfg.max_clients) {
		log_warn_rl(LOG_KEY_UID(cred->uid), "refusing a connection from uid %d: %u clients already",
			    (int)cred->uid, d->nclients);
		return -EMFILE;
	}
	if (!per_user)
		return 0;
	for (struct client *o = d->clients; o; o = o->next)
		mine += o->cred.uid == cred->uid;
	if (mine >= per_user) {
		log_warn_rl(LOG_KEY_UID(cred->uid), "refusing a connection from uid %d: it has %u already (max_user_clients)",
			    (int)cred->uid, mine);
		return -EMFILE;
	}
	return 0;
}

/* The client's process ended: whatever descriptors of its connection
 * still exist (passed to anyone, pagerd included), it is gone. */
static void client_on_exit(int fd, short what, void *arg)
{
	struct client *c = arg;

	(void)fd;
	(void)what;
	log_debug("client %" PRIu64 ": its process %d exited", c->id, (int)c->cred.pid);
	client_destroy(c);
}

/*
 * A private daemon watches its client's process as well as its socket: its
 * socketpair names the client in SO_PEERCRED, so the agent check cannot
 * tell the client's own end from another socket of the client's, and a
 * client that handed pagerd its own end would never be seen to leave.
 * (On a listening socket the client's end names pagerd or systemd as its
 * peer, which agent_attach() refuses.)
 */
static void client_watch_process(struct client *c)
{
	socklen_t len = sizeof(c->pidfd);

	if (getsockopt(c->sock, SOL_SOCKET, SO_PEERPIDFD, &c->pidfd, &len) < 0) {
		c->pidfd = -1;
		return;
	}
	c->pidfd_ev = event_new(c->d->base, c->pidfd, EV_READ, client_on_exit, c);
	if (!c->pidfd_ev || event_add(c->pidfd_ev, NULL) < 0) {
		if (c->pidfd_ev)
			event_free(c->pidfd_ev);
		c->pidfd_ev = NULL;
		close(c->pidfd);
		c->pidfd = -1;
	}
}

int client_accept(struct daemon *d, int sock)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	struct client *c;
	int e;

	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return -errno;
	e = client_slot_check(d, &cred);
	if (e < 0)
		return e;
	e = client_add(d, sock, d->next_client_id + 1, &c);
	if (e < 0)
		return e;
	if (d->cfg.private_fd >= 0)
		client_watch_process(c);
	d->next_client_id++;
	log_info_rl(LOG_KEY_UID(c->cred.uid), "client %" PRIu64 " connected: pid %d uid %d", c->id,
		 (int)c->cred.pid, (int)c->cred.uid);
	return 0;
}

/* The region goes: the subsystems that keep something of it drop it, top
 * down (the fd store's names, faults parked there, a running snapshot or
 * restore), then the region itself. */
static void client_drop_region(struct region *r)
{
	fdstore_region_gone(r);
	fault_forget_parked(r);
	fault_region_gone(r);
	swapin_region_gone(r);
	snapshot_region_gone(r);
	region_destroy(r);
}

/*
 * Drops everything pagerd holds for the client: its regions (mappings and
 * memfds), its uffd and its socket.  Threads of a live client still blocked
 * in a fault stay blocked (the client holds its own uffd copy): a fault
 * waits, it never reads a hole.
 */
void client_destroy(struct client *c)
{
	struct daemon *d = c->d;

	if (c->waiting_on || c->waiting_image)
		snapshot_waiter_gone(c);
	fdstore_client_gone(c);
	agent_detach(c);
	while (c->nregions)
		client_drop_region(c->regions[c->nregions - 1]);
	free(c->regions);
	free(c->parked);
	if (c->uffd_ev)
		event_free(c->uffd_ev);
	fault_unwatch(c); /* before its number can name another file */
	if (c->uffd >= 0)
		close(c->uffd);
	if (c->pagemap >= 0)
		close(c->pagemap);
	if (c->pidfd_ev)
		event_free(c->pidfd_ev);
	if (c->pidfd >= 0)
		close(c->pidfd);
	if (c->dead)
		d->ndead--;
	event_free(c->sock_ev);
	event_free(c->retry_ev);
	close(c->sock);
	if (c->prev)
		c->prev->next = c->next;
	else
		d->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	d->nclients--;
	if (d->handover) {
		log_debug("client %" PRIu64 " handed over", c->id);
	} else if (d->swap) {
		struct swap_stats ss;

		swap_get_stats(d->swap, &ss);
		log_info_rl(LOG_KEY_UID(c->cred.uid), "client %" PRIu64 " gone (swap: %" PRIu64 " slots used, %" PRIu64 " pages being written)",
			 c->id, ss.used, d->writeback);
	} else {
		log_info_rl(LOG_KEY_UID(c->cred.uid), "client %" PRIu64 " gone", c->id);
	}
	log_forget(c->id);
	free(c);
	/* A private daemon lives exactly as long as its one client. */
	if (d->cfg.private_fd >= 0)
		event_base_loopbreak(d->base);
}

void clients_destroy_all(struct daemon *d)
{
	while (d->clients)
		client_destroy(d->clients);
}

static int do_hello(struct client *c, const struct proto_hello *h, int *fds,
		    unsigned nfds, struct proto_reply *out)
{
	struct daemon *d = c->d;
	int e;

	if (c->hello_done)
		return -EISCONN;
	if (h->page_size != d->page_size) {
		log_warn_rl(c->id, "client %" PRIu64 ": page size %u, ours %zu", c->id,
			 h->page_size, d->page_size);
		return -EINVAL;
	}
	out->version = PROTO_VERSION;
	if (h->flags & PROTO_HELLO_CONTROL) {
		if (nfds != 0)
			return -EINVAL;
		/* The control channel is for root, the daemon's owner and
		 * admin_group. */
		if (!config_cred_admin(&d->cfg, &c->cred)) {
			log_warn_rl(c->id, "client %" PRIu64 ": uid %d may not control pagerd",
				 c->id, (int)c->cred.uid);
			return -EACCES;
		}
		c->control = true;
		c->hello_done = true;
		fdstore_client_hello(c);
		return 0;
	}
	if (nfds != 1) {
		log_warn_rl(c->id, "client %" PRIu64 ": hello without a userfaultfd", c->id);
		return -EBADF;
	}
	e = client_attach_uffd(c, fds[0]);
	if (e < 0) {
		log_warn_rl(c->id, "client %" PRIu64 ": hello fd is %s", c->id,
			 e == -EBADF ? "not a userfaultfd"
				     : "a userfaultfd without the required features");
		return e;
	}
	fds[0] = -1;
	c->kernel_faults = h->flags & PROTO_HELLO_KERNEL_FAULTS;
	c->hello_done = true;
	fdstore_client_hello(c);
	return 0;
}

/* Whether the peer that connected still runs: then the pid SO_PEERCRED
 * gave is still its own (its pidfd tells, where the kernel has one). */
static bool peer_alive(struct client *c)
{
	int pidfd = -1;
	socklen_t len = sizeof(pidfd);
	bool alive = true;

	if (getsockopt(c->sock, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) < 0)
		return true;
	struct pollfd pfd = { .fd = pidfd, .events = POLLIN };

	if (poll(&pfd, 1, 0) != 0)
		alive = false;
	close(pidfd);
	return alive;
}

/*
 * Opens the client's /proc/PID/pagemap: whether a page is mapped in the
 * client (its PTE present) is the Clock hand's reference information
 * (evict.c).  Reading another process's page tables needs the rights to
 * trace it (same user, or root), which pagerd under its unit (User=pagerd)
 * does not have over anybody else: libpager then sends the one it opened
 * itself (PROTO_PAGEMAP, client_set_pagemap()), and an older libpager's
 * pages are evicted with the references pagerd sees itself (near FIFO).
 * The pid is the socket peer's; the peer, still running after the open,
 * shows that the pid was not reused meanwhile.
 */
static void client_open_pagemap(struct client *c)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)c->cred.pid);
	c->pagemap = open(path, O_RDONLY | O_CLOEXEC);
	if (c->pagemap >= 0 && !peer_alive(c)) {
		close(c->pagemap);
		c->pagemap = -1;
		errno = ESRCH;
	}
	if (c->pagemap < 0)
		log_debug("client %" PRIu64 ": cannot open %s: %m (it may send its own)",
			  c->id, path);
}

/*
 * What can be checked of a pagemap a client sends: that it is a file of
 * procfs whose path, as pagerd's /proc/self/fd shows it, is
 * /proc/<the peer's pid>/pagemap, and that the peer still runs (so the pid
 * is its own).  The kernel checked, when the client opened it, that it may
 * read those page tables; reads go to the address space of the process
 * that opened it.  pagerd only reads whether the client's own region pages
 * are mapped there; a client lying about it only misleads the eviction of
 * its own pages, which it could as well by touching them.  A client in
 * another pid namespace (or with another /proc) does not match and keeps
 * the pagemap pagerd opened itself, if any.
 */
int client_set_pagemap(struct client *c, int fd)
{
	char path[64], want[64], link[64];
	struct statfs sfs;
	struct stat st;
	ssize_t n;

	if (fstatfs(fd, &sfs) < 0 || sfs.f_type != PROC_SUPER_MAGIC ||
	    fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return -EBADF;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	snprintf(want, sizeof(want), "/proc/%d/pagemap", (int)c->cred.pid);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return -errno;
	link[n] = '\0';
	if (strcmp(link, want) != 0) {
		log_debug("client %" PRIu64 ": sent %s, not its own %s", c->id, link, want);
		return -EINVAL;
	}
	if (!peer_alive(c))
		return -ESRCH;
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	if (c->pagemap >= 0)
		close(c->pagemap);
	c->pagemap = fd;
	c->pagemap_passed = true;
	log_debug("client %" PRIu64 ": reads its page tables through the pagemap it sent",
		  c->id);
	return 0;
}

int client_attach_uffd(struct client *c, int fd)
{
	int e = uffd_check(fd, &c->uffd_features);

	/* A blocking uffd would stall the loop in read(). */
	if (e == 0)
		e = fd_nonblock(fd, true);
	if (e < 0)
		return e;
	/* With fault threads, they serve it (fault_watch()); the event
	 * stays, unadded, for the retries of faults parked behind an event. */
	c->uffd_ev = event_new(c->d->base, fd, EV_READ | EV_PERSIST, client_on_uffd, c);
	if (!c->uffd_ev)
		return -ENOMEM;
	c->uffd = fd;
	e = c->d->fthreads ? fault_watch(c) : event_add(c->uffd_ev, NULL) < 0 ? -ENOMEM : 0;
	if (e < 0) {
		event_free(c->uffd_ev);
		c->uffd_ev = NULL;
		c->uffd = -1;
		return e;
	}
	client_open_pagemap(c);
	return 0;
}

static int do_region_create(struct client *c,
			    const struct proto_region_create *rc, int *fds,
			    unsigned nfds, struct proto_reply *out)
{
	struct region *r;
	int e;

	if (c->control || nfds != 1)
		return -EBADF;
	e = region_create(c, rc, fds[0], &r);
	if (e < 0)
		return e;
	fds[0] = -1; /* the region owns it now */
	/* In the fd store, its states move into a memfd a successor maps. */
	e = fdstore_region_added(r);
	if (e < 0) {
		log_warn_rl(c->id, "client %" PRIu64 ": region state memfd: %s", c->id, strerror(-e));
		region_destroy(r);
		return -ENOMEM;
	}
	out->region_id = r->id;
	log_debug("client %" PRIu64 ": region %" PRIu64 " '%s' %" PRIu64 " bytes",
		  c->id, r->id, r->name, r->len);
	return 0;
}

static int do_region_destroy(struct client *c, uint64_t id)
{
	struct region *r = region_find_id(c, id);

	if (!r)
		return -ENOENT;
	client_drop_region(r);
	return 0;
}

static int do_region_set_limit(struct client *c, uint64_t id, uint64_t bytes)
{
	struct region *r = region_find_id(c, id);

	if (!r)
		return -ENOENT;
	r->memory_limit = bytes / c->d->page_size;
	fdstore_region_sync(r);
	if (limits_pressure(r))
		evict_kick(c->d);
	return 0;
}

/*
 * The application threw [first, first+n) away (pager_region_discard): the
 * pages read as zeros from now on.  Pages with I/O in flight are dropped
 * when it completes (their state says so).  Returns 0 or -errno.
 */
static int discard(struct region *r, uint64_t first, uint64_t n)
{
	int e;

	/* The states first (a running snapshot gets the pages as they were
	 * before they change), then the memory: a punch that fails drops
	 * the client (region_punch()), so its states no longer matter. */
	page_discarded(r, first, n);
	for (uint64_t p = first; p < first + n; p++)
		if (r->state[p] & PG_READING)
			swapin_forget_marker(r, p); /* a marker's data, held */
	e = region_punch(r, first, n);
	if (e < 0)
		return e;
	evict_kick(r->client->d);
	return 0;
}

static int do_region_discard(struct client *c,
			     const struct proto_region_discard *rd)
{
	struct region *r = region_find_id(c, rd->region_id);
	size_t ps = c->d->page_size;

	if (!r)
		return -ENOENT;
	if (rd->offset % ps || rd->len % ps || rd->offset > r->len ||
	    rd->len > r->len - rd->offset)
		return -EINVAL;
	return discard(r, rd->offset / ps, rd->len / ps);
}

static int do_region_stats(struct client *c, uint64_t id,
			   struct proto_reply *out)
{
	struct region *r = region_find_id(c, id);

	if (!r)
		return -ENOENT;
	region_reconcile(r);
	region_fill_stats(r, &out->region);
	return 0;
}

/* The index-th region of all clients, for pagerctl. */
static int do_region_info(struct client *c, uint64_t index,
			  struct proto_reply *out)
{
	for (struct client *o = c->d->clients; o; o = o->next) {
		if (index < o->nregions) {
			region_reconcile(o->regions[index]);
			region_fill_stats(o->regions[index], &out->region);
			return 0;
		}
		index -= o->nregions;
	}
	return -ENOENT;
}

static struct client *client_find(struct daemon *d, uint64_t id)
{
	for (struct client *o = d->clients; o; o = o->next)
		if (o->id == id)
			return o;
	return NULL;
}

static int do_set_limit(struct client *c, const struct proto_set_limit *sl)
{
	struct daemon *d = c->d;
	uint64_t pages = sl->limit / d->page_size;

	switch (sl->scope) {
	case PROTO_LIMIT_GLOBAL:
		d->cfg.memory_limit = pages * d->page_size;
		log_info("memory limit set to %" PRIu64 " bytes", d->cfg.memory_limit);
		break;
	case PROTO_LIMIT_CLIENT: {
		struct client *o = client_find(d, sl->id);

		if (!o || o->control)
			return -ENOENT;
		o->memory_limit = pages;
		fdstore_client_sync(o);
		log_info("client %" PRIu64 ": memory limit set to %" PRIu64 " bytes",
			 o->id, sl->limit);
		break;
	}
	case PROTO_LIMIT_REGION:
		for (struct client *o = d->clients; o; o = o->next) {
			struct region *r = region_find_id(o, sl->id);

			if (r) {
				r->memory_limit = pages;
				fdstore_region_sync(r);
				log_info("region %" PRIu64 ": memory limit set to %" PRIu64 " bytes",
					 r->id, sl->limit);
				goto done;
			}
		}
		return -ENOENT;
	default:
		return -EINVAL;
	}
done:
	limits_changed(d);
	return 0;
}

/* A client's own region, or for the control channel anybody's. */
static struct region *region_for(struct client *c, uint64_t id)
{
	struct region *r = NULL;

	if (!c->control)
		return region_find_id(c, id);
	for (struct client *o = c->d->clients; o && !r; o = o->next)
		r = region_find_id(o, id);
	return r;
}

/*
 * An image a client names (rbd:...): pagerd opens it with its own Ceph
 * identity, so the name must be valid and its pool and namespace granted
 * to the client's uid as the kernel vouches for it (SO_PEERCRED; a
 * control client's too).  0, -EINVAL or -EACCES, with the reason logged.
 */
static int image_name_check(struct client *c, const char *image)
{
	struct store_rbd_name n;
	int e;

	if (store_rbd_parse(image, &n) < 0) {
		log_warn_rl(c->id, "client %" PRIu64 ": image \"%s\" is not rbd:POOL/IMAGE or "
			    "rbd:POOL/NAMESPACE/IMAGE (names of letters, digits, '.', '-', '_', "
			    "at most %d each, not starting with '.'; no '@' snapshots)",
			    c->id, image, STORE_RBD_NAME_MAX);
		return -EINVAL;
	}
	e = config_rbd_allowed(&c->d->cfg, &c->cred, n.pool, n.ns);
	if (e < 0)
		log_warn_rl(c->id, "client %" PRIu64 ": uid %d may not name RBD images in pool %s%s%s "
			    "(rbd_allow, rbd_user_namespace)", c->id, (int)c->cred.uid, n.pool,
			    n.ns[0] ? " namespace " : "", n.ns);
	return e;
}

static int do_snapshot(struct client *c, const struct proto_msg *m, int *fds,
		       unsigned nfds, struct proto_reply *out)
{
	const char *image = m->body.snapshot.image;
	struct region *r;
	int e;

	if (m->hdr.type == PROTO_IMAGE_INFO) {
		if (nfds)
			return -EBADF;
		e = image_name_check(c, image);
		return e < 0 ? e : image_info_rbd(c, image);
	}
	r = region_for(c, m->body.snapshot.region_id);
	if (!r)
		return -ENOENT;
	if (image[0] && m->hdr.type != PROTO_SNAPSHOT_STATUS) {
		/* Named: no descriptors, checked before anything is opened. */
		if (nfds)
			return -EBADF;
		if (m->hdr.type == PROTO_REGION_SET_IMAGE && c->control)
			return -EBADF;
		e = image_name_check(c, image);
		if (e < 0)
			return e;
		if (m->hdr.type == PROTO_SNAPSHOT_START)
			return snapshot_start_rbd(c, r, image);
		return restore_attach_rbd(c, r, image,
					  !(m->body.snapshot.flags & PROTO_IMAGE_NO_PREFETCH));
	}
	switch (m->hdr.type) {
	case PROTO_SNAPSHOT_START:
		/* The image and the IMAGE.crc table to fill (and the
		 * IMAGE.order to fill). */
		if (nfds != ((m->body.snapshot.flags & PROTO_SNAPSHOT_ORDER) ? 3u : 2u))
			return -EBADF;
		e = snapshot_start(c, r, fds[0], fds[1]);
		if (e == REQUEST_DEFERRED) {
			fds[0] = fds[1] = -1; /* the snapshot owns them */
			if (nfds == 3) {
				int k = snapshot_keep_order(r, fds[2]);

				if (k == 0)
					fds[2] = -1;
				else
					log_warn("region %" PRIu64 ": snapshot: the learned order's memfd "
						 "is refused (%s): the image gets none", r->id,
						 strerror(-k));
			}
			fdstore_region_sync(r); /* a successor reports it failed */
		}
		return e;
	case PROTO_SNAPSHOT_STATUS:
		snapshot_status(r, &out->snapshot);
		return 0;
	default: /* PROTO_REGION_SET_IMAGE */
		/* The image, and its IMAGE.crc table unless it is an image
		 * made before tables; last, with PROTO_IMAGE_ORDER, its
		 * IMAGE.order. */
	{
		unsigned order = (m->body.snapshot.flags & PROTO_IMAGE_ORDER) ? 1 : 0;

		if (nfds < 1 + order || nfds > 2 + order || c->control)
			return -EBADF;
		e = restore_attach(r, fds[0], nfds - order > 1 ? fds[1] : -1,
				   !(m->body.snapshot.flags & PROTO_IMAGE_NO_PREFETCH));
		if (e == 0) {
			fds[0] = -1;
			fdstore_region_image(r);
			if (order)
				restore_load_order(r, fds[nfds - 1]);
		}
		if (nfds - order > 1)
			fds[1] = -1; /* taken (closed on failure) */
		return e;
	}
	}
}

/* Fault injection into a region's swap slot, for tests (--test-hooks). */
static int do_test_inject(struct client *c, const struct proto_test_inject *ti)
{
	struct region *r = NULL;
	int64_t slot;

	if (!c->d->cfg.test_hooks)
		return -EPERM;
	for (struct client *o = c->d->clients; o && !r; o = o->next)
		r = region_find_id(o, ti->region_id);
	if (r && ti->kind == PROTO_INJECT_HOLD_RECONCILE) {
		c->d->test_hold_reconcile = r->id;
		c->d->test_hold_until = ti->page; /* a region id here */
		return 0;
	}
	if (!r || ti->page >= r->npages)
		return -ENOENT;
	switch (ti->kind) {
	case PROTO_INJECT_WRITE_EIO:
	case PROTO_INJECT_WRITE_SHORT:
		if (!c->d->swap)
			return -ENODATA;
		return swap_inject_writes(c->d->swap, r->id,
					  ti->kind == PROTO_INJECT_WRITE_EIO ?
					  SWAP_FAULT_WRITE_EIO : SWAP_FAULT_WRITE_SHORT);
	case PROTO_INJECT_SLOT_RECORD:
		c->d->test_slot_fail = r->id;
		return 0;
	case PROTO_INJECT_CLEAR:
		if (c->d->test_slot_fail == r->id)
			c->d->test_slot_fail = 0;
		return c->d->swap ? swap_inject_writes(c->d->swap, 0, SWAP_FAULT_NONE) : 0;
	}
	slot = region_slot(r, ti->page);
	if (slot < 0 || !c->d->swap || pg_state(r->state[ti->page]) != PAGE_SWAPPED)
		return -ENODATA;
	return swap_inject(c->d->swap, (uint64_t)slot,
			   ti->kind == PROTO_INJECT_EIO ? SWAP_FAULT_EIO
							: SWAP_FAULT_CORRUPT);
}

static void do_status(struct client *c, struct proto_reply *out)
{
	struct stats_snapshot s;
	const struct counters *st = &s.counters;

	stats_snapshot(c->d, true, &s);
	out->clients = s.clients;
	out->regions = s.regions;
	out->mapped_bytes = s.mapped_bytes;
	out->resident_pages = s.resident_pages;
	out->uptime_ms = s.uptime_ms;
	out->pid = (int32_t)getpid();
	out->config_errors = c->d->cfg.file_errors;
	out->memory_limit = s.memory_limit;
#define X(name, ...) out->counters.name = st->name;
	PAGER_COUNTERS(X)
#undef X
	out->swap_total = s.swap_total;
	out->swap_used = s.swap_used;
	out->swap_io_errors = s.swap_io_errors;
	out->swap_bad = s.swap_bad;
	out->over_limit = (uint32_t)s.over_limit;
	out->swap_failing = (uint32_t)s.swap_failing;
	out->pool_pages = s.pool_pages;
	out->pool_bytes = s.pool_bytes;
}

/* Runs one request; returns the status for the reply. */
static int handle_request(struct client *c, const struct proto_msg *m,
			  int *fds, unsigned nfds, struct proto_reply *out)
{
	uint16_t type = m->hdr.type;

	if (!c->hello_done && type != PROTO_HELLO)
		return -ENOTCONN;
	if (nfds && proto_fds_expected(type) == 0 && type != PROTO_HELLO)
		return -EBADF;
	switch (type) {
	case PROTO_HELLO:
		return do_hello(c, &m->body.hello, fds, nfds, out);
	case PROTO_REGION_CREATE:
		return do_region_create(c, &m->body.region_create, fds, nfds, out);
	case PROTO_REGION_DESTROY:
		return c->control ? -EBADF
				  : do_region_destroy(c, m->body.region_destroy.region_id);
	case PROTO_STATUS:
		if (!c->control)
			return -EACCES;
		do_status(c, out);
		return 0;
	case PROTO_AGENT_ATTACH:
		if (c->control || nfds != 1)
			return -EBADF;
		{
			int e = agent_attach(c, fds[0]);

			if (e < 0)
				return e;
		}
		fds[0] = -1;
		fdstore_client_agent(c, true);
		return 0;
	case PROTO_PAGEMAP:
		if (c->control || nfds != 1)
			return -EBADF;
		if (c->pagemap_passed)
			return -EISCONN;
		{
			int e = client_set_pagemap(c, fds[0]);

			if (e < 0)
				return e;
		}
		fds[0] = -1;
		fdstore_client_pagemap(c);
		return 0;
	case PROTO_REGION_SET_LIMIT:
		return c->control ? -EBADF
				  : do_region_set_limit(c, m->body.region_set_limit.region_id,
							m->body.region_set_limit.limit);
	case PROTO_REGION_DISCARD:
		return c->control ? -EBADF : do_region_discard(c, &m->body.region_discard);
	case PROTO_REGION_STATS:
		return c->control ? -EBADF
				  : do_region_stats(c, m->body.region_ref.region_id, out);
	case PROTO_REGION_INFO:
		if (!c->control)
			return -EACCES;
		return do_region_info(c, m->body.region_ref.index, out);
	case PROTO_SET_LIMIT:
		if (!c->control)
			return -EACCES;
		return do_set_limit(c, &m->body.set_limit);
	case PROTO_TEST_INJECT:
		return c->control ? do_test_inject(c, &m->body.test_inject) : -EACCES;
	case PROTO_SNAPSHOT_START:
	case PROTO_SNAPSHOT_STATUS:
	case PROTO_REGION_SET_IMAGE:
	case PROTO_IMAGE_INFO:
		return do_snapshot(c, m, fds, nfds, out);
	default:
		return -EOPNOTSUPP; /* replies sent to us */
	}
}

static void client_on_sock(int fd, short what, void *arg)
{
	struct client *c = arg;
	struct proto_msg msg;
	int fds[PROTO_MAX_FDS];
	unsigned nfds;
	ssize_t n;

	(void)what;
	for (int budget = 0; budget < 32; budget++) {
		struct proto_reply out = { 0 };
		uint32_t seq = 0;
		int status;

		/* Dropped (client_misbehaved()), maybe by its last request:
		 * nothing more of it is served. */
		if (c->dead) {
			client_destroy(c);
			return;
		}
		/* Its agent went away by itself (agent.c): the store drops it. */
		if (c->agent < 0 && (c->stored & STORED_AGENT))
			fdstore_client_agent(c, false);
		/* (Woken for that while a request waits for its reply: the
		 * next one waits in the socket until it is sent.) */
		if (c->reply_deferred)
			return;

		n = proto_recv(fd, &msg, fds, &nfds);
		if (n == -EAGAIN)
			return;
		if (n == 0) {
			client_destroy(c);
			return;
		}
		if (n >= (ssize_t)sizeof(struct proto_hdr))
			seq = msg.hdr.seq;
		if (n < 0) {
			if (n != -EMSGSIZE) {
				log_warn("client %" PRIu64 ": %s", c->id, strerror((int)-n));
				client_destroy(c);
				return;
			}
			log_warn_rl(c->id, "client %" PRIu64 ": oversized message or too many fds refused",
				 c->id);
			status = -EMSGSIZE;
		} else if ((status = proto_validate(&msg, (size_t)n)) < 0) {
			log_warn_rl(c->id, "client %" PRIu64 ": bad message refused: %s", c->id,
				 strerror(-status));
		} else {
			status = handle_request(c, &msg, fds, nfds, &out);
			/* The end of pagerctl's region walk is no error. */
			if (status < 0 && !(status == -ENOENT &&
					    msg.hdr.type == PROTO_REGION_INFO))
				log_warn_rl(c->id, "client %" PRIu64 ": %s refused: %s", c->id,
					 proto_type_name(msg.hdr.type), strerror(-status));
		}
		for (unsigned i = 0; i < nfds; i++)
			if (fds[i] >= 0)
				close(fds[i]);
		if (status == REQUEST_DEFERRED) {
			/* Answered later; until then the next request waits
			 * in the socket. */
			c->reply_deferred = true;
			c->deferred_seq = seq;
			event_del(c->sock_ev);
			return;
		}
		out.status = status;
		if (client_send_reply(c, seq, &out) < 0) {
			client_destroy(c);
			return;
		}
	}
}
