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
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "pagerd.h"

static void client_on_sock(int fd, short what, void *arg);

static void client_on_reconcile(int fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	client_reconcile(arg);
}

int client_accept(struct daemon *d, int sock)
{
	socklen_t len = sizeof(struct ucred);
	struct client *c;

	if (!config_peer_allowed(&d->cfg, sock))
		return -EACCES;
	if (d->nclients >= d->cfg.max_clients) {
		log_warn("refusing a connection: %u clients already", d->nclients);
		return -EMFILE;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->d = d;
	c->id = ++d->next_client_id;
	c->sock = sock;
	c->uffd = -1;
	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &c->cred, &len) < 0) {
		free(c);
		return -errno;
	}
	fcntl(sock, F_SETFL, fcntl(sock, F_GETFL) | O_NONBLOCK);
	c->sock_ev = event_new(d->base, sock, EV_READ | EV_PERSIST,
			       client_on_sock, c);
	c->reconcile_ev = evtimer_new(d->base, client_on_reconcile, c);
	if (!c->sock_ev || !c->reconcile_ev || event_add(c->sock_ev, NULL) < 0) {
		if (c->sock_ev)
			event_free(c->sock_ev);
		if (c->reconcile_ev)
			event_free(c->reconcile_ev);
		free(c);
		return -ENOMEM;
	}
	c->next = d->clients;
	if (d->clients)
		d->clients->prev = c;
	d->clients = c;
	d->nclients++;
	log_info("client %" PRIu64 " connected: pid %d uid %d", c->id,
		 (int)c->cred.pid, (int)c->cred.uid);
	return 0;
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

	while (c->nregions)
		region_destroy(c->regions[c->nregions - 1]);
	free(c->regions);
	free(c->retry);
	if (c->uffd_ev)
		event_free(c->uffd_ev);
	if (c->uffd >= 0)
		close(c->uffd);
	event_free(c->sock_ev);
	event_free(c->reconcile_ev);
	close(c->sock);
	if (c->prev)
		c->prev->next = c->next;
	else
		d->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	d->nclients--;
	log_info("client %" PRIu64 " gone", c->id);
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

static int reply(struct client *c, uint32_t seq, struct proto_reply *body)
{
	struct proto_msg msg;
	size_t n;

	memset(&msg, 0, sizeof(msg));
	msg.body.reply = *body;
	n = proto_finish(&msg, PROTO_REPLY, seq);
	return proto_send(c->sock, &msg, n, NULL, 0);
}

static int do_hello(struct client *c, const struct proto_hello *h, int *fds,
		    unsigned nfds, struct proto_reply *out)
{
	struct daemon *d = c->d;
	int e;

	if (c->hello_done)
		return -EISCONN;
	if (h->page_size != d->page_size) {
		log_warn("client %" PRIu64 ": page size %u, ours %zu", c->id,
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
			log_warn("client %" PRIu64 ": uid %d may not control pagerd",
				 c->id, (int)c->cred.uid);
			return -EACCES;
		}
		c->control = true;
		c->hello_done = true;
		return 0;
	}
	if (nfds != 1) {
		log_warn("client %" PRIu64 ": hello without a userfaultfd", c->id);
		return -EBADF;
	}
	e = uffd_check(fds[0], &c->uffd_features);
	if (e < 0) {
		log_warn("client %" PRIu64 ": hello fd is %s", c->id,
			 e == -EBADF ? "not a userfaultfd"
				     : "a userfaultfd without the required features");
		return e;
	}
	fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
	c->uffd_ev = event_new(d->base, fds[0], EV_READ | EV_PERSIST,
			       fault_on_uffd, c);
	if (!c->uffd_ev || event_add(c->uffd_ev, NULL) < 0)
		return -ENOMEM;
	c->uffd = fds[0];
	fds[0] = -1;
	c->kernel_faults = h->flags & PROTO_HELLO_KERNEL_FAULTS;
	c->hello_done = true;
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
	region_destroy(r);
	return 0;
}

static void do_status(struct client *c, struct proto_reply *out)
{
	struct daemon *d = c->d;

	for (struct client *o = d->clients; o; o = o->next) {
		client_reconcile(o);
		out->clients += o->hello_done && !o->control;
		out->regions += o->nregions;
		for (size_t i = 0; i < o->nregions; i++) {
			out->mapped_bytes += o->regions[i]->len;
			out->resident_pages += o->regions[i]->resident;
		}
	}
	out->faults_missing = d->stats.faults_missing;
	out->faults_minor = d->stats.faults_minor;
	out->faults_wp = d->stats.faults_wp;
	out->pages_zero_filled = d->stats.pages_zero_filled;
	out->uptime_ms = now_ms() - d->start_ms;
	out->pid = (int32_t)getpid();
}

/* Runs one request; returns the status for the reply. */
static int handle_request(struct client *c, const struct proto_msg *m,
			  int *fds, unsigned nfds, struct proto_reply *out)
{
	uint16_t type = m->hdr.type;

	if (!c->hello_done && type != PROTO_HELLO)
		return -ENOTCONN;
	if (type != PROTO_HELLO && type != PROTO_REGION_CREATE && nfds)
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
			log_warn("client %" PRIu64 ": oversized message or too many fds refused",
				 c->id);
			status = -EMSGSIZE;
		} else if ((status = proto_validate(&msg, (size_t)n)) < 0) {
			log_warn("client %" PRIu64 ": bad message refused: %s", c->id,
				 strerror(-status));
		} else {
			status = handle_request(c, &msg, fds, nfds, &out);
			if (status < 0)
				log_warn("client %" PRIu64 ": %s refused: %s", c->id,
					 proto_type_name(msg.hdr.type), strerror(-status));
		}
		for (unsigned i = 0; i < nfds; i++)
			if (fds[i] >= 0)
				close(fds[i]);
		out.status = status;
		if (reply(c, seq, &out) < 0) {
			client_destroy(c);
			return;
		}
	}
}
