/* SPDX-License-Identifier: MIT */
/*
 * libpager's agent: a thread in the client that drops the client's own
 * mappings of pages when the Clock hand asks (MADV_DONTNEED on its shared
 * mapping: the page cache keeps the data).  The kernel maps such a page
 * again by itself at its next access (the mapping is not registered for
 * MINOR faults), and the PTE it makes is how the hand, reading the client's
 * page tables (/proc/PID/pagemap), learns that the page is still in use
 * (DESIGN.md §4, option a, without the round trip).  No other process can
 * drop those PTEs: process_madvise() refuses DONTNEED on another process.
 *
 * The agent answers each request once done (AGENT_DONE).  Until then the
 * hand must not read those pages' PTEs (they would look used): each batch
 * of drops is a fence the hand does not pass.  An agent that does not
 * answer holds the hand up for FENCE_MS at most.  A full socket refuses
 * the request, and the pages keep their references for the next turn.
 *
 * These drops raise no uffd event: libpager does not ask for REMOVE events
 * (see region_reconcile()), so the agent's madvise never holds up pagerd's
 * resolution of the client's faults.
 */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fd.h"
#include "log.h"
#include "pagerd.h"

/* How long the hand waits for an agent's answer before it reads the
 * references anyway (a late drop then makes a page look used: harmless). */
#define FENCE_MS 50

/* The agent went away (end of stream, a failed send): detached, and
 * client.c hears at the next turn (the fd store drops its copy). */
static void agent_lost(struct client *c)
{
	agent_detach(c);
	client_wake(c);
}

/* Drops sent to the agent and not yet done: the hand must not read the
 * references of pages sampled there (evict.c). */
#define DROP_FENCES 16
struct drop_fence {
	uint32_t seq;     /* the agent request's; done when the agent says */
	uint64_t page;    /* where the hand was when it sampled them */
	uint64_t sent_ms;
};

/* A region's fences (region.fences), a ring, oldest at head: allocated at
 * its first drop, as a client without an agent never sends one. */
struct agent_fences {
	struct drop_fence f[DROP_FENCES];
	unsigned head, n;
};

static bool seq_done(uint32_t seq, uint32_t done)
{
	return (int32_t)(seq - done) <= 0;
}

/* Lifts the fences of c's regions up to the agent's answer `done`. */
static void fences_done(struct client *c, uint32_t done)
{
	bool lifted = false;

	for (size_t i = 0; i < c->nregions; i++) {
		struct agent_fences *af = c->regions[i]->fences;

		while (af && af->n && seq_done(af->f[af->head].seq, done)) {
			af->head = (af->head + 1) % DROP_FENCES;
			af->n--;
			lifted = true;
		}
	}
	/* A round held up at these fences goes on: one is, where a limit
	 * over the region is past its high watermark. */
	for (size_t i = 0; lifted && i < c->nregions; i++)
		if (limits_pressure(c->regions[i])) {
			evict_kick(c->d);
			break;
		}
}

uint64_t agent_fence_room(struct region *r)
{
	struct agent_fences *af = r->fences;
	uint64_t t = now_ms();

	while (af && af->n && t - af->f[af->head].sent_ms >= FENCE_MS) {
		af->head = (af->head + 1) % DROP_FENCES;
		af->n--;
	}
	if (!af || !af->n || !r->npages)
		return UINT64_MAX;
	return (af->f[af->head].page + r->npages - r->hand % r->npages) % r->npages;
}

/* (agent_drop() made r->fences before sending.) */
static void fence_add(struct region *r, uint32_t seq, uint64_t page)
{
	struct agent_fences *af = r->fences;

	if (af->n == DROP_FENCES) { /* the oldest goes: a late answer */
		af->head = (af->head + 1) % DROP_FENCES;
		af->n--;
	}
	af->f[(af->head + af->n) % DROP_FENCES] =
		(struct drop_fence){ .seq = seq, .page = page, .sent_ms = now_ms() };
	af->n++;
}

void agent_region_gone(struct region *r)
{
	free(r->fences);
	r->fences = NULL;
}

/* The agent's answers; anything else it sends is ignored, and end of
 * stream detaches it. */
static void on_agent(evutil_socket_t fd, short what, void *arg)
{
	struct client *c = arg;
	struct proto_msg m;
	int fds[PROTO_MAX_FDS];
	unsigned nfds;

	(void)what;
	for (;;) {
		ssize_t n = proto_recv(fd, &m, fds, &nfds);

		for (unsigned i = 0; i < nfds; i++)
			close(fds[i]);
		if (n == -EAGAIN)
			break;
		if (n == 0 || (n < 0 && n != -EMSGSIZE && n != -EINTR)) {
			agent_lost(c);
			return;
		}
		if (n > 0 && proto_validate(&m, (size_t)n) == 0 &&
		    m.hdr.type == PROTO_AGENT_DONE)
			fences_done(c, m.hdr.seq);
	}
}

/*
 * Whether fd can be the agent's socket: one end of a connected AF_UNIX
 * SEQPACKET pair whose other end is in the client's own process (libpager
 * makes it with socketpair(), which names its maker as the peer of both
 * ends).  That rules out what would tie the client's life to a descriptor
 * pagerd holds: the client's end of its own connection, or of any other
 * connection to pagerd, names pagerd (or systemd, whose socket it is) as
 * its peer, so pagerd would keep it open and never see the client leave.
 * A listening socket, an unconnected one, and pagerd's own end of the
 * connection are refused too.  Returns 0, -EBADF (not such a socket),
 * -ENOTCONN (not connected, or listening) or -EPERM (its peer is not the
 * client's process).
 */
static int agent_check(struct client *c, int fd)
{
	int v = 0;
	socklen_t len = sizeof(v);
	struct sockaddr_storage sa;
	struct ucred peer;
	struct stat a, own;

	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &len) < 0 || v != AF_UNIX ||
	    getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len) < 0 || v != SOCK_SEQPACKET) {
		log_warn_rl(c->id, "client %" PRIu64 ": agent fd is not an AF_UNIX SOCK_SEQPACKET socket",
			    c->id);
		return -EBADF;
	}
	len = sizeof(v);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) < 0 || v) {
		log_warn_rl(c->id, "client %" PRIu64 ": agent socket is a listening socket", c->id);
		return -ENOTCONN;
	}
	len = sizeof(sa);
	if (getpeername(fd, (struct sockaddr *)&sa, &len) < 0) {
		log_warn_rl(c->id, "client %" PRIu64 ": agent socket is not connected", c->id);
		return -ENOTCONN;
	}
	len = sizeof(peer);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &len) < 0 ||
	    peer.pid != c->cred.pid || peer.uid != c->cred.uid) {
		log_warn_rl(c->id, "client %" PRIu64 ": agent socket's peer is pid %d, not the client's %d (its own connection?)",
			    c->id, (int)peer.pid, (int)c->cred.pid);
		return -EPERM;
	}
	if (fstat(fd, &a) < 0 || fstat(c->sock, &own) < 0 ||
	    (a.st_dev == own.st_dev && a.st_ino == own.st_ino)) {
		log_warn_rl(c->id, "client %" PRIu64 ": agent socket is pagerd's end of its connection",
			    c->id);
		return -EPERM;
	}
	return 0;
}

int agent_attach(struct client *c, int fd)
{
	int e;

	if (c->agent >= 0)
		return -EISCONN;
	e = agent_check(c, fd);
	if (e == 0)
		e = fd_nonblock(fd, true);
	if (e < 0)
		return e;
	c->agent_ev = event_new(c->d->base, fd, EV_READ | EV_PERSIST, on_agent, c);
	if (!c->agent_ev || event_add(c->agent_ev, NULL) < 0) {
		if (c->agent_ev)
			event_free(c->agent_ev);
		c->agent_ev = NULL;
		return -ENOMEM;
	}
	c->agent = fd;
	return 0;
}

void agent_detach(struct client *c)
{
	if (c->agent_ev)
		event_free(c->agent_ev);
	c->agent_ev = NULL;
	if (c->agent >= 0)
		close(c->agent);
	c->agent = -1;
}

static bool agent_send(struct client *c, struct proto_msg *m)
{
	size_t n = proto_finish(m, PROTO_AGENT_DROP, c->agent_seq + 1);

	int e = proto_send(c->agent, m, n, NULL, 0);

	if (e != 0 && e != -EAGAIN && e != -ENOBUFS)
		agent_lost(c);
	if (e == 0)
		c->agent_seq++;
	memset(&m->body.agent_drop, 0, sizeof(m->body.agent_drop));
	return e == 0;
}

size_t agent_drop(struct region *r, const uint64_t *pages, size_t n)
{
	struct client *c = r->client;
	size_t ps = c->d->page_size, sent = 0;
	struct proto_msg m;
	struct proto_agent_drop *ad = &m.body.agent_drop;

	/* No agent (a client without one): nothing can be sampled, and the
	 * hand degrades to a second chance; count the pages as handled. */
	if (c->agent < 0)
		return n;
	/* A drop without its fence would let the hand read references the
	 * agent has not dropped yet: without memory for fences, none is
	 * sent (as when the socket is full). */
	if (!r->fences && !(r->fences = calloc(1, sizeof(*r->fences))))
		return 0;
	memset(&m, 0, sizeof(m));
	for (size_t i = 0; i < n;) {
		size_t j = i + 1;

		while (j < n && pages[j] == pages[j - 1] + 1)
			j++;
		if (ad->n == PROTO_DROP_MAX) {
			if (!agent_send(c, &m))
				return c->agent < 0 ? n : sent;
			fence_add(r, c->agent_seq, pages[sent]);
			sent = i;
		}
		ad->range[ad->n].addr = r->addr + pages[i] * ps;
		ad->range[ad->n].len = (j - i) * ps;
		ad->n++;
		i = j;
	}
	if (ad->n) {
		if (!agent_send(c, &m))
			return c->agent < 0 ? n : sent;
		fence_add(r, c->agent_seq, pages[sent]);
	}
	return n;
}
