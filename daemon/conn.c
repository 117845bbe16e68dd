/* SPDX-License-Identifier: MIT */
/*
 * What a lower layer tells a client's connection, without calling up into
 * client.c: the client is to be dropped, or its agent went away (a mark
 * on the client, and its socket's event activated: client.c's callback
 * acts on it at the next turn of the loop, before it reads anything more
 * from the client; the callers may be walking clients or regions, where
 * tearing a client down under them is not safe); and the reply to its
 * deferred request, sent at once.
 */
#include <errno.h>
#include <event2/event.h>
#include <inttypes.h>
#include <string.h>
#include <sys/socket.h>

#include "log.h"
#include "pagerd.h"

/*
 * The client broke something pagerd relies on in a way only it can: its
 * memfd refuses a hole punch or a write (seals, file attributes), so its
 * pages could neither leave memory nor come back; or a fault it sent
 * breaks the protocol.  Its neighbours must not pay for it (evicted in its
 * stead, or spun on): it is dropped.  Meanwhile eviction and fault service
 * pass it by (c->dead).
 */
void client_misbehaved(struct client *c, const char *what, int err)
{
	if (c->dead)
		return;
	c->dead = true;
	c->d->ndead++;
	log_warn_rl(LOG_KEY_UID(c->cred.uid), "client %" PRIu64 " (pid %d uid %d) dropped: %s: %s",
		    c->id, (int)c->cred.pid, (int)c->cred.uid, what, strerror(-err));
	event_active(c->sock_ev, EV_READ, 0);
}

int client_send_reply(struct client *c, uint32_t seq, struct proto_reply *body)
{
	struct proto_msg msg;
	size_t n;

	memset(&msg, 0, sizeof(msg));
	msg.body.reply = *body;
	n = proto_finish(&msg, PROTO_REPLY, seq);
	return proto_send(c->sock, &msg, n, NULL, 0);
}

/*
 * The reply to c's deferred request (REQUEST_DEFERRED) is sent at once,
 * even from a snapshot ended by a hand-over after the loop has stopped;
 * then the socket is read again at the next turn.  A reply that cannot be
 * sent leaves the socket at end of stream: its callback tears c down.
 */
void client_reply_deferred(struct client *c, int status, struct proto_reply *out)
{
	if (!c->reply_deferred)
		return;
	c->reply_deferred = false;
	c->waiting_on = NULL;
	c->waiting_image = NULL;
	out->status = status;
	if (status < 0)
		log_warn_rl(c->id, "client %" PRIu64 ": deferred request failed: %s", c->id,
			 strerror(-status));
	if (client_send_reply(c, c->deferred_seq, out) < 0) {
		shutdown(c->sock, SHUT_RDWR);
		event_active(c->sock_ev, EV_READ, 0);
		return;
	}
	if (event_add(c->sock_ev, NULL) == 0)
		event_active(c->sock_ev, EV_READ, 0);
}

/* Something client.c's socket callback looks at changed (the agent went
 * away by itself): it runs at the next turn. */
void client_wake(struct client *c)
{
	event_active(c->sock_ev, EV_READ, 0);
}

/* Faults parked for a snapshot's capture budget may go on: the retry
 * callback (fault_serve()) runs them at the next turn.  A timer, not a
 * call up: the snapshot may be inside a page transition. */
void client_retry_faults(struct client *c)
{
	static const struct timeval now = { 0, 0 };

	evtimer_add(c->retry_ev, &now);
}
