/* SPDX-License-Identifier: MIT */
/*
 * pagerctl: inspect and steer a running pagerd over its control channel.
 *
 *   pagerctl [--socket PATH] [--json] status
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "proto.h"
#include "pager.h"
#include "size.h"

struct ctl {
	int sock;
	uint32_t seq;
	bool json;
};

static int ctl_call(struct ctl *c, struct proto_msg *msg, enum proto_type type,
		    struct proto_reply *ret)
{
	struct proto_msg rep;
	int fds[PROTO_MAX_FDS];
	unsigned nfds;
	uint32_t seq = ++c->seq;
	size_t n = proto_finish(msg, type, seq);
	ssize_t got;
	int r = proto_send(c->sock, msg, n, NULL, 0);

	if (r < 0)
		return r;
	got = proto_recv(c->sock, &rep, fds, &nfds);
	for (unsigned i = 0; i < nfds; i++)
		close(fds[i]);
	if (got == 0)
		return -ECONNRESET;
	if (got < 0)
		return (int)got;
	r = proto_validate(&rep, (size_t)got);
	if (r < 0)
		return r;
	if (rep.hdr.type != PROTO_REPLY || rep.hdr.seq != seq)
		return -EBADMSG;
	*ret = rep.body.reply;
	return rep.body.reply.status;
}

static int ctl_connect(struct ctl *c, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct proto_msg msg = { 0 };
	struct proto_reply rep;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	c->sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (c->sock < 0)
		return -errno;
	if (connect(c->sock, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -errno;
	msg.body.hello.flags = PROTO_HELLO_CONTROL;
	msg.body.hello.page_size = (uint32_t)sysconf(_SC_PAGESIZE);
	return ctl_call(c, &msg, PROTO_HELLO, &rep);
}

static void human_bytes(uint64_t b, char *buf, size_t n)
{
	static const char *const u[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)b;
	int i = 0;

	while (v >= 1024 && i < 4)
		v /= 1024, i++;
	snprintf(buf, n, i ? "%.1f %s" : "%.0f %s", v, u[i]);
}

static int cmd_status(struct ctl *c)
{
	struct proto_msg msg = { 0 };
	struct proto_reply r;
	char mapped[32], resident[32];
	int e = ctl_call(c, &msg, PROTO_STATUS, &r);

	if (e < 0)
		return e;
	if (c->json) {
		printf("{\"pid\":%d,\"uptime_ms\":%" PRIu64 ",\"clients\":%" PRIu64
		       ",\"regions\":%" PRIu64 ",\"mapped_bytes\":%" PRIu64
		       ",\"resident_pages\":%" PRIu64 ",\"faults_missing\":%" PRIu64
		       ",\"faults_minor\":%" PRIu64 ",\"faults_wp\":%" PRIu64
		       ",\"pages_zero_filled\":%" PRIu64 "}\n",
		       r.pid, r.uptime_ms, r.clients, r.regions, r.mapped_bytes,
		       r.resident_pages, r.faults_missing, r.faults_minor,
		       r.faults_wp, r.pages_zero_filled);
		return 0;
	}
	human_bytes(r.mapped_bytes, mapped, sizeof(mapped));
	human_bytes(r.resident_pages * (uint64_t)sysconf(_SC_PAGESIZE), resident,
		    sizeof(resident));
	printf("pagerd pid %d, up %" PRIu64 ".%03" PRIu64 " s\n", r.pid,
	       r.uptime_ms / 1000, r.uptime_ms % 1000);
	printf("  clients            %" PRIu64 "\n", r.clients);
	printf("  regions            %" PRIu64 " (%s mapped)\n", r.regions, mapped);
	printf("  resident           %" PRIu64 " pages (%s)\n", r.resident_pages, resident);
	printf("  faults             %" PRIu64 " missing, %" PRIu64 " minor, %" PRIu64 " write-protect\n",
	       r.faults_missing, r.faults_minor, r.faults_wp);
	printf("  pages zero-filled  %" PRIu64 "\n", r.pages_zero_filled);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: pagerctl [--socket PATH] [--json] COMMAND\n"
		"\n"
		"Commands:\n"
		"  status    daemon-wide counters\n"
		"\n"
		"The socket is --socket, else $PAGER_SOCKET, else %s.\n",
		PAGER_SYSTEM_SOCKET);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct ctl c = { .sock = -1 };
	const char *path = getenv("PAGER_SOCKET");
	int o, e;

	if (!path || !*path)
		path = PAGER_SYSTEM_SOCKET;
	while ((o = getopt_long(argc, argv, "s:jh", opts, NULL)) != -1) {
		switch (o) {
		case 's': path = optarg; break;
		case 'j': c.json = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	e = ctl_connect(&c, path);
	if (e < 0) {
		fprintf(stderr, "pagerctl: cannot talk to pagerd at %s: %s\n", path,
			strerror(-e));
		return 1;
	}
	if (strcmp(argv[optind], "status") == 0) {
		e = cmd_status(&c);
	} else {
		fprintf(stderr, "pagerctl: unknown command '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	close(c.sock);
	if (e < 0) {
		fprintf(stderr, "pagerctl: %s: %s\n", argv[optind], strerror(-e));
		return 1;
	}
	return 0;
}
