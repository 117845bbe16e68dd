/* SPDX-License-Identifier: MIT */
#ifndef LIBPAGER_INTERNAL_H
#define LIBPAGER_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <sys/types.h>

#include "pager.h"
#include "proto.h"

#define PAGER_EXPORT __attribute__((visibility("default")))

struct pager_region {
	struct pager *pager;
	struct pager_region *prev, *next; /* on pager->regions */
	void *addr;
	size_t len;
	int memfd;
	uint64_t id;
	/* The snapshot this region is writing (snapshot.c): its image, kept
	 * to sync it and write the sidecar when pagerd is done. */
	int snap_fd;
	int snap_crc_fd;     /* the IMAGE.crc table pagerd fills */
	int snap_order_fd;   /* the IMAGE.order pagerd fills (or leaves empty) */
	char *snap_path;
	int snap_status;        /* set once finished */
	bool snap_finished;
	bool snap_named;        /* a named (rbd:) image: pagerd commits it */
};

struct pager {
	pthread_mutex_t lock;   /* one request in flight; guards regions, seq */
	int sock;
	int uffd;               /* our own copy: faults wait, never lie */
	uint32_t seq;
	uint32_t info_flags;    /* PAGER_INFO_* */
	uint64_t uffd_features;
	uint32_t daemon_version;
	pid_t daemon_pid;
	pid_t private_pid;      /* > 0 when we started the daemon */
	size_t page_size;
	struct pager_region *regions;
	int agent_sock;         /* our end of the agent channel, or -1 */
	pthread_t agent_thread;
	bool agent_running;
};

/* Starts the agent thread (agent.c); failure only costs reference
 * sampling, so pager_open() goes on without it. */
int pager_agent_start(struct pager *p);
void pager_agent_stop(struct pager *p);

/* Sends one request and waits for its reply; the caller holds p->lock.
 * Returns the reply's status (0 or -errno), or -errno of the transport. */
int pager_call_locked(struct pager *p, struct proto_msg *msg,
		      enum proto_type type, const int *fds, unsigned nfds,
		      struct proto_reply *ret_reply);
/* The same, also giving the pid of the process that sent the reply when
 * the socket has SO_PASSCRED (see proto_recv_cred()): the hello's. */
int pager_call_from(struct pager *p, struct proto_msg *msg, enum proto_type type,
		    const int *fds, unsigned nfds, struct proto_reply *ret_reply,
		    pid_t *ret_pid);

/* Opens a userfaultfd for this process and negotiates features: kernel-mode
 * faults where allowed, else user-mode only (reported in *ret_kernel). */
int pager_uffd_open(int *ret_fd, uint64_t *ret_features, bool *ret_kernel);

/* Starts a private pagerd connected over a socketpair. */
int pager_spawn_private(const struct pager_opts *opts, int *ret_sock,
			pid_t *ret_pid);

#endif
