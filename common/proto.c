/* SPDX-License-Identifier: MIT */
#include "proto.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

size_t proto_body_size(uint16_t type)
{
	switch (type) {
	case PROTO_HELLO:          return sizeof(struct proto_hello);
	case PROTO_REGION_CREATE:  return sizeof(struct proto_region_create);
	case PROTO_REGION_DESTROY: return sizeof(struct proto_region_destroy);
	case PROTO_STATUS:         return 0;
	case PROTO_AGENT_ATTACH:   return 0;
	case PROTO_PAGEMAP:        return 0;
	case PROTO_REGION_SET_LIMIT: return sizeof(struct proto_region_set_limit);
	case PROTO_REGION_DISCARD: return sizeof(struct proto_region_discard);
	case PROTO_REGION_STATS:
	case PROTO_REGION_INFO:    return sizeof(struct proto_region_ref);
	case PROTO_SET_LIMIT:      return sizeof(struct proto_set_limit);
	case PROTO_TEST_INJECT:    return sizeof(struct proto_test_inject);
	case PROTO_SNAPSHOT_START:
	case PROTO_SNAPSHOT_STATUS:
	case PROTO_REGION_SET_IMAGE:
	case PROTO_IMAGE_INFO:     return sizeof(struct proto_snapshot);
	case PROTO_REPLY:          return sizeof(struct proto_reply);
	case PROTO_AGENT_DROP:     return sizeof(struct proto_agent_drop);
	default:                   return 0;
	}
}

static bool proto_type_known(uint16_t type)
{
	return (type >= PROTO_HELLO && type <= PROTO_TYPE_MAX_REQUEST) ||
	       type == PROTO_REPLY || type == PROTO_AGENT_DROP ||
	       type == PROTO_AGENT_DONE;
}

unsigned proto_fds_expected(uint16_t type)
{
	/* A hello carries the uffd, except from a control client: the
	 * daemon checks that case against the flags. */
	if (type == PROTO_SNAPSHOT_START || type == PROTO_REGION_SET_IMAGE)
		return 3; /* at most: the image, its IMAGE.crc and IMAGE.order */
	return type == PROTO_REGION_CREATE || type == PROTO_AGENT_ATTACH ||
	       type == PROTO_PAGEMAP ? 1 : 0;
}

const char *proto_type_name(uint16_t type)
{
	switch (type) {
	case PROTO_HELLO:          return "hello";
	case PROTO_REGION_CREATE:  return "region-create";
	case PROTO_REGION_DESTROY: return "region-destroy";
	case PROTO_STATUS:         return "status";
	case PROTO_AGENT_ATTACH:   return "agent-attach";
	case PROTO_REGION_SET_LIMIT: return "region-set-limit";
	case PROTO_REGION_DISCARD: return "region-discard";
	case PROTO_REGION_STATS:   return "region-stats";
	case PROTO_REGION_INFO:    return "region-info";
	case PROTO_SET_LIMIT:      return "set-limit";
	case PROTO_TEST_INJECT:    return "test-inject";
	case PROTO_SNAPSHOT_START: return "snapshot-start";
	case PROTO_SNAPSHOT_STATUS: return "snapshot-status";
	case PROTO_REGION_SET_IMAGE: return "region-set-image";
	case PROTO_PAGEMAP:        return "pagemap";
	case PROTO_IMAGE_INFO:     return "image-info";
	case PROTO_REPLY:          return "reply";
	case PROTO_AGENT_DROP:     return "agent-drop";
	case PROTO_AGENT_DONE:     return "agent-done";
	default:                   return "unknown";
	}
}

size_t proto_finish(struct proto_msg *msg, enum proto_type type, uint32_t seq)
{
	size_t n = sizeof(msg->hdr) + proto_body_size((uint16_t)type);

	msg->hdr.magic = PROTO_MAGIC;
	msg->hdr.version = PROTO_VERSION;
	msg->hdr.type = (uint16_t)type;
	msg->hdr.size = (uint32_t)n;
	msg->hdr.seq = seq;
	return n;
}

static int validate_name(const char *name, size_t max)
{
	size_t len = strnlen(name, max);

	if (len == max)
		return -EINVAL;
	for (size_t i = 0; i < len; i++)
		if (name[i] < 0x20 || name[i] > 0x7e)
			return -EINVAL;
	return 0;
}

int proto_validate(const void *buf, size_t n)
{
	struct proto_msg msg;

	if (n < sizeof(struct proto_hdr) || n > sizeof(msg))
		return -EBADMSG;
	memset(&msg, 0, sizeof(msg));
	memcpy(&msg, buf, n);
	if (msg.hdr.magic != PROTO_MAGIC)
		return -EBADMSG;
	if (msg.hdr.version != PROTO_VERSION)
		return -EPROTONOSUPPORT;
	if (msg.hdr.size != n)
		return -EBADMSG;
	if (!proto_type_known(msg.hdr.type))
		return -EOPNOTSUPP;
	if (n != sizeof(msg.hdr) + proto_body_size(msg.hdr.type))
		return -EBADMSG;

	switch (msg.hdr.type) {
	case PROTO_HELLO: {
		const struct proto_hello *h = &msg.body.hello;

		if (h->flags & ~(PROTO_HELLO_CONTROL | PROTO_HELLO_KERNEL_FAULTS))
			return -EINVAL;
		if (h->page_size == 0 || (h->page_size & (h->page_size - 1)))
			return -EINVAL;
		break;
	}
	case PROTO_REGION_CREATE: {
		const struct proto_region_create *rc = &msg.body.region_create;

		if (rc->flags != 0 || rc->len == 0 || rc->addr == 0)
			return -EINVAL;
		if (rc->addr + rc->len < rc->addr)
			return -EINVAL;
		return validate_name(rc->name, sizeof(rc->name));
	}
	case PROTO_REGION_DESTROY:
		if (msg.body.region_destroy.region_id == 0)
			return -EINVAL;
		break;
	case PROTO_REGION_SET_LIMIT:
		if (msg.body.region_set_limit.region_id == 0)
			return -EINVAL;
		break;
	case PROTO_REGION_DISCARD: {
		const struct proto_region_discard *rd = &msg.body.region_discard;

		if (rd->region_id == 0 || rd->len == 0 ||
		    rd->offset + rd->len < rd->offset)
			return -EINVAL;
		break;
	}
	case PROTO_REGION_STATS:
		if (msg.body.region_ref.region_id == 0)
			return -EINVAL;
		break;
	case PROTO_SET_LIMIT:
		if (msg.body.set_limit.scope > PROTO_LIMIT_REGION ||
		    msg.body.set_limit.pad != 0 ||
		    (msg.body.set_limit.scope != PROTO_LIMIT_GLOBAL &&
		     msg.body.set_limit.id == 0))
			return -EINVAL;
		break;
	case PROTO_TEST_INJECT:
		if (msg.body.test_inject.region_id == 0 ||
		    msg.body.test_inject.kind < PROTO_INJECT_EIO ||
		    msg.body.test_inject.kind > PROTO_INJECT_HOLD_RECONCILE)
			return -EINVAL;
		break;
	case PROTO_SNAPSHOT_START:
	case PROTO_SNAPSHOT_STATUS:
	case PROTO_REGION_SET_IMAGE: {
		const struct proto_snapshot *sn = &msg.body.snapshot;

		if (sn->region_id == 0 || sn->pad != 0)
			return -EINVAL;
		if (sn->flags & ~(msg.hdr.type == PROTO_REGION_SET_IMAGE ?
				  PROTO_IMAGE_NO_PREFETCH | PROTO_IMAGE_ORDER :
				  msg.hdr.type == PROTO_SNAPSHOT_START ?
				  PROTO_SNAPSHOT_ORDER : 0u))
			return -EINVAL;
		if (msg.hdr.type == PROTO_SNAPSHOT_STATUS && sn->image[0])
			return -EINVAL;
		return validate_name(sn->image, sizeof(sn->image));
	}
	case PROTO_IMAGE_INFO: {
		const struct proto_snapshot *sn = &msg.body.snapshot;

		if (sn->region_id != 0 || sn->pad != 0 || sn->flags != 0 || !sn->image[0])
			return -EINVAL;
		return validate_name(sn->image, sizeof(sn->image));
	}
	case PROTO_AGENT_DROP:
		if (msg.body.agent_drop.n > PROTO_DROP_MAX)
			return -EINVAL;
		break;
	case PROTO_REPLY: {
		int32_t st = msg.body.reply.status;

		if (st > 0 || st < -4095)
			return -EINVAL;
		break;
	}
	default:
		break;
	}
	return 0;
}

int proto_send(int sock, const struct proto_msg *msg, size_t n,
	       const int *fds, unsigned nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * PROTO_MAX_FDS)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = (void *)msg, .iov_len = n };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t r;

	if (nfds > PROTO_MAX_FDS || n > sizeof(*msg))
		return -EINVAL;
	if (nfds) {
		struct cmsghdr *c;

		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	do
		r = sendmsg(sock, &mh, MSG_NOSIGNAL);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	return (size_t)r == n ? 0 : -EMSGSIZE;
}

static void close_rights(struct msghdr *mh)
{
	for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			close(fd);
		}
	}
}

ssize_t proto_recv(int sock, struct proto_msg *msg, int fds[PROTO_MAX_FDS],
		   unsigned *nfds)
{
	return proto_recv_cred(sock, msg, fds, nfds, NULL);
}

ssize_t proto_recv_cred(int sock, struct proto_msg *msg, int fds[PROTO_MAX_FDS],
			unsigned *nfds, pid_t *ret_pid)
{
	/* Room for more descriptors than we accept, so that a peer sending
	 * too many is seen (and all of them closed) rather than truncated
	 * into silently leaked fds. */
	union {
		char buf[CMSG_SPACE(sizeof(int) * 16) + CMSG_SPACE(sizeof(struct ucred))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = msg, .iov_len = sizeof(*msg) };
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf),
	};
	struct cmsghdr *rights = NULL;
	ssize_t r;
	unsigned got = 0;

	*nfds = 0;
	do
		r = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | MSG_TRUNC);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	if (r == 0) {
		/* End of stream, or an empty message: either way the caller
		 * sees "peer gone" and must not be handed fds to leak. */
		close_rights(&mh);
		return 0;
	}
	if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || (size_t)r > sizeof(*msg)) {
		close_rights(&mh);
		return -EMSGSIZE;
	}
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			got += (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			rights = c;
		} else if (ret_pid && c->cmsg_level == SOL_SOCKET &&
			   c->cmsg_type == SCM_CREDENTIALS &&
			   c->cmsg_len >= CMSG_LEN(sizeof(struct ucred))) {
			struct ucred uc;

			memcpy(&uc, CMSG_DATA(c), sizeof(uc));
			*ret_pid = uc.pid;
		}
	}
	if (got > PROTO_MAX_FDS) {
		close_rights(&mh);
		return -EMSGSIZE;
	}
	if (got) {
		/* Not necessarily the first header: SO_PASSCRED puts
		 * SCM_CREDENTIALS ahead of it. */
		memcpy(fds, CMSG_DATA(rights), sizeof(int) * got);
		*nfds = got;
	}
	return r;
}
