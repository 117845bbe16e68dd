/* SPDX-License-Identifier: MIT */
/*
 * The request/reply transport to pagerd every call uses: one request, its
 * reply matched by sequence number and checked.  The bottom of libpager:
 * it calls nothing of the library's above it.
 */
#include <errno.h>
#include <unistd.h>

#include "internal.h"

int pager_call_from(struct pager *p, struct proto_msg *msg, enum proto_type type,
		    const int *fds, unsigned nfds, struct proto_reply *ret_reply,
		    pid_t *ret_pid)
{
	uint32_t seq = ++p->seq;
	size_t n = proto_finish(msg, type, seq);
	struct proto_msg reply;
	int rfds[PROTO_MAX_FDS];
	unsigned nrfds;
	ssize_t got;
	int r;

	r = proto_send(p->sock, msg, n, fds, nfds);
	if (r < 0)
		return r == -EPIPE ? -ECONNRESET : r;
	got = proto_recv_cred(p->sock, &reply, rfds, &nrfds, ret_pid);
	if (got == 0)
		return -ECONNRESET;
	if (got < 0)
		return (int)got;
	for (unsigned i = 0; i < nrfds; i++)
		close(rfds[i]);
	r = proto_validate(&reply, (size_t)got);
	if (r < 0)
		return r;
	if (reply.hdr.type != PROTO_REPLY || reply.hdr.seq != seq || nrfds)
		return -EBADMSG;
	if (ret_reply)
		*ret_reply = reply.body.reply;
	return reply.body.reply.status;
}

int pager_call_locked(struct pager *p, struct proto_msg *msg,
		      enum proto_type type, const int *fds, unsigned nfds,
		      struct proto_reply *ret_reply)
{
	return pager_call_from(p, msg, type, fds, nfds, ret_reply, NULL);
}
