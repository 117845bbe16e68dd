/* SPDX-License-Identifier: MIT */
/*
 * systemd's file-descriptor store: what pagerd puts there (client.c tells
 * it of every change), and the table of what a restarted pagerd finds
 * there, which fdstore_adopt.c rebuilds its clients from.  See fdstore.h
 * for the names and the formats.
 *
 * Why page states live in memfds: a graceful hand-over could write them out
 * at SIGTERM, but a pagerd that is killed (SIGKILL, the OOM killer, a
 * watchdog timeout) writes nothing.  Working in a shared mapping that the
 * store also holds means the successor sees exactly the arrays the old
 * daemon last wrote.  It then only has to settle what was in flight, which
 * the memfd itself tells: a page is in the page cache or it is not
 * (SEEK_DATA), and a swap slot's owner and CRC32C are in the swap table.
 * The order of every state change in the other files is what makes this
 * sound: a slot is recorded only once its write completed, a page is
 * punched only after that, a slot is forgotten by the region before the
 * swap store frees it, and a page with a slot is always write-protected in
 * its client.
 */
#include "fdstore.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "swap.h"

static const char *const kind_suffix[] = {
	[K_CSOCK] = "sock", [K_CSTATE] = "state", [K_CUFFD] = "uffd",
	[K_CAGENT] = "agent", [K_CPAGEMAP] = "pagemap", [K_RMEM] = "mem", [K_RSTATE] = "state",
	[K_RIMAGE] = "image", [K_RCRC] = "crc", [K_RRBD] = "rbd",
};

/* ---- talking to the store ---------------------------------------------- */

static void notify_fail(struct daemon *d, const char *what, int e)
{
	if (d->fdstore && !d->fdstore->notify_failed)
		log_warn("fd store: %s: %s (a restart will lose the clients concerned)",
			 what, strerror(-e));
	if (d->fdstore)
		d->fdstore->notify_failed = true;
}

/* FDSTORE=1 for one descriptor.  Returns true if sent. */
static bool store_put(struct daemon *d, int fd, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static bool store_put(struct daemon *d, int fd, const char *fmt, ...)
{
	char name[256], msg[300];
	va_list ap;
	int e;

	if (!d->fdstore_on)
		return false;
	va_start(ap, fmt);
	vsnprintf(name, sizeof(name), fmt, ap);
	va_end(ap);
	snprintf(msg, sizeof(msg), "FDSTORE=1\nFDNAME=%s", name);
	e = sd_pid_notify_with_fds(0, 0, msg, &fd, 1);
	if (e <= 0) {
		notify_fail(d, "storing a descriptor", e ? e : -ENOTCONN);
		return false;
	}
	log_debug("fd store: + %s", name);
	return true;
}

static void store_remove_name(struct daemon *d, const char *name)
{
	char msg[300];
	int e;

	if (!getenv("NOTIFY_SOCKET") || d->cfg.private_fd >= 0)
		return;
	snprintf(msg, sizeof(msg), "FDSTOREREMOVE=1\nFDNAME=%s", name);
	e = sd_notify(0, msg);
	if (e < 0)
		notify_fail(d, "removing a descriptor", e);
	log_debug("fd store: - %s", name);
}

static void store_remove(struct daemon *d, char prefix, uint64_t id, const char *suffix)
{
	char name[64];

	snprintf(name, sizeof(name), "%c%" PRIu64 ".%s", prefix, id, suffix);
	store_remove_name(d, name);
}

/* ---- what LISTEN_FDS brought -------------------------------------------- */

/* "c<ID>.<suffix>" or "r<ID>.<suffix>", ID canonical decimal > 0. */
static enum kind parse_name(const char *name, uint64_t *ret_id)
{
	const char *p = name + 1, *dot;
	char *end;
	uint64_t id;

	if (strcmp(name, "swap") == 0)
		return K_SWAP;
	if (strcmp(name, "swapmeta") == 0)
		return K_SWAPMETA;
	if (strcmp(name, "config") == 0)
		return K_CONFIG;
	if ((name[0] != 'c' && name[0] != 'r') || *p < '1' || *p > '9')
		return K_OTHER;
	dot = strchr(p, '.');
	if (!dot || dot - p > 19)
		return K_OTHER;
	errno = 0;
	id = strtoull(p, &end, 10);
	if (errno || end != dot || !id)
		return K_OTHER;
	for (enum kind k = K_CSOCK; k <= K_RRBD; k++) {
		bool client = k <= K_CPAGEMAP;

		if ((name[0] == 'c') == client && strcmp(dot + 1, kind_suffix[k]) == 0) {
			*ret_id = id;
			return k;
		}
	}
	return K_OTHER;
}

/*
 * Closes a descriptor we will not use, says why, and takes its name out of
 * the store (unless another descriptor of that name was kept: removal goes
 * by name).
 */
void fdstore_refuse(struct daemon *d, struct stored *s, const char *why)
{
	log_warn("fd store: refusing '%s' (fd %d): %s", s->name, s->fd, why);
	close(s->fd);
	s->fd = -1;
	if (!s->raw_ok)
		return;
	for (size_t i = 0; i < d->fdstore->n; i++) {
		const struct stored *o = &d->fdstore->v[i];

		if (o != s && o->fd >= 0 && strcmp(o->name, s->name) == 0)
			return;
	}
	store_remove_name(d, s->name);
}

struct stored *fdstore_find(struct daemon *d, enum kind k, uint64_t id)
{
	struct fdstore *fs = d->fdstore;

	for (size_t i = 0; fs && i < fs->n; i++)
		if (fs->v[i].fd >= 0 && fs->v[i].kind == k && fs->v[i].id == id)
			return &fs->v[i];
	return NULL;
}

/* Takes the descriptor out of the table: the caller owns it now. */
int fdstore_take(struct stored *s)
{
	int fd = s ? s->fd : -1;

	if (s)
		s->fd = -1;
	return fd;
}

int fdstore_open(struct daemon *d)
{
	struct fdstore *fs;
	char **names = NULL;
	int n;

	d->fdstore_on = d->cfg.private_fd < 0 && getenv("NOTIFY_SOCKET") &&
			d->cfg.fd_store == CONFIG_FD_STORE_YES;
	fs = calloc(1, sizeof(*fs));
	if (!fs)
		return -ENOMEM;
	fs->config_fd = -1;
	d->fdstore = fs;
	/* A region's header follows its record where no request is being
	 * answered (a uffd event, a snapshot's instant). */
	d->region_changed = fdstore_region_sync;
	if (d->cfg.private_fd >= 0)
		return 0;
	n = sd_listen_fds_with_names(1, &names);
	if (n < 0) {
		log_warn("fd store: LISTEN_FDS: %s", strerror(-n));
		return 0;
	}
	if (n == 0) {
		free(names);
		return 0;
	}
	fs->v = calloc((size_t)n, sizeof(*fs->v));
	fs->n = fs->v ? (size_t)n : 0;
	for (int i = 0; i < n; i++) {
		if (!fs->v) {
			close(SD_LISTEN_FDS_START + i);
			continue;
		}
		struct stored *s = &fs->v[i];
		const char *raw = names && names[i] ? names[i] : "unknown";
		size_t j;

		s->fd = SD_LISTEN_FDS_START + i;
		fcntl(s->fd, F_SETFD, FD_CLOEXEC);
		for (j = 0; raw[j] && j < sizeof(s->name) - 1; j++)
			s->name[j] = (unsigned char)raw[j] < 0x20 || raw[j] == 0x7f ? '?' : raw[j];
		s->name[j] = '\0';
		s->raw_ok = strcmp(s->name, raw) == 0 && strlen(raw) < 256;
		s->kind = parse_name(s->name, &s->id);
	}
	for (int i = 0; names && names[i]; i++)
		free(names[i]);
	free(names);
	if (!fs->v)
		return -ENOMEM;

	/* Ids of the successor's new clients and regions must not meet
	 * those of the adopted ones, or of names still in the store. */
	for (size_t i = 0; i < fs->n; i++) {
		struct stored *s = &fs->v[i];

		if (s->kind >= K_CSOCK && s->kind <= K_CPAGEMAP && s->id > d->next_client_id)
			d->next_client_id = s->id;
		if (s->kind >= K_RMEM && s->id > d->next_region_id)
			d->next_region_id = s->id;
		/* The same name twice: systemd would pass both; we keep the
		 * first. */
		for (size_t j = 0; j < i; j++)
			if (fs->v[j].fd >= 0 && s->kind != K_OTHER &&
			    strcmp(fs->v[j].name, s->name) == 0) {
				fdstore_refuse(d, s, "a second descriptor of that name");
				break;
			}
	}
	log_info("LISTEN_FDS: %zu descriptor%s passed", fs->n, fs->n == 1 ? "" : "s");
	return 0;
}

int fdstore_take_listener(struct daemon *d)
{
	struct fdstore *fs = d->fdstore;

	for (size_t i = 0; fs && i < fs->n; i++) {
		struct stored *s = &fs->v[i];

		if (s->fd < 0 || s->kind != K_OTHER)
			continue;
		if (sd_is_socket_unix(s->fd, SOCK_SEQPACKET, 1, NULL, 0) > 0)
			return fdstore_take(s);
	}
	return -1;
}

/* Whether a predecessor handed anything over. */
static bool predecessor(const struct daemon *d)
{
	for (size_t i = 0; d->fdstore && i < d->fdstore->n; i++)
		if (d->fdstore->v[i].kind != K_OTHER)
			return true;
	return false;
}

/*
 * A predecessor that was killed keeps its swap open, and locked, until the
 * kernel has finished the I/O it had in flight: io_uring requests outlive
 * their process.  A write of its landing after ours would corrupt a slot we
 * reuse, so we take the lock (on an open file description of our own)
 * before we start, waiting for it if need be.  Returns 0 with fd locked, or
 * -EBUSY after SWAP_WAIT_MS.
 */
#define SWAP_WAIT_MS 20000

static int swap_wait(const char *what, int fd)
{
	struct timespec tick = { 0, 10 * 1000 * 1000 };

	for (unsigned ms = 0; flock(fd, LOCK_EX | LOCK_NB) < 0; ms += 10) {
		if (errno != EWOULDBLOCK)
			return -errno;
		if (ms == 0)
			log_notice("swap %s: waiting for the previous pagerd's I/O to finish", what);
		if (ms >= SWAP_WAIT_MS) {
			log_err("swap %s: still locked after %u s", what, SWAP_WAIT_MS / 1000);
			return -EBUSY;
		}
		nanosleep(&tick, NULL);
	}
	return 0;
}

void fdstore_swap_wait_path(struct daemon *d, const char *path)
{
	int fd;

	if (!predecessor(d))
		return;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return; /* swap_open() says what is wrong */
	/* Released at close: swap_open() then locks its own at once. */
	swap_wait(path, fd);
	close(fd);
}

/* An open file description of fd's file, of our own. */
static int reopen(int fd, int flags)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	return open(path, flags | O_CLOEXEC);
}

int fdstore_take_swap(struct daemon *d)
{
	struct stored *s = fdstore_find(d, K_SWAP, 0);
	struct stat st;
	int fd;

	if (!s)
		return -1;
	if (*d->cfg.swap_path) {
		fdstore_refuse(d, s, "swap_path is set: that swap is used");
		return -1;
	}
	if (fstat(s->fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_nlink != 0) {
		fdstore_refuse(d, s, "not an unnamed regular file");
		return -1;
	}
	/* The stored description is never used for I/O or locked: each
	 * pagerd opens its own, so that the lock tells when a dead one's
	 * I/O is over. */
	fd = reopen(s->fd, O_RDWR | O_DIRECT);
	close(fdstore_take(s));
	if (fd < 0) {
		log_err("swap from the fd store: cannot open it again: %m");
		return -1;
	}
	if (swap_wait("(unnamed, from the fd store)", fd) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

void fdstore_swap_opened(struct daemon *d, bool unnamed, bool adopted)
{
	struct stored *meta = fdstore_find(d, K_SWAPMETA, 0);
	bool meta_adopted = false;
	int fd;

	if (meta && !d->swap) {
		fdstore_refuse(d, meta, "pagerd has no swap now: pages that were in swap are lost");
	} else if (meta) {
		meta_adopted = swap_meta_adopt(d->swap, meta->fd) == 0;
		if (meta_adopted)
			fdstore_take(meta);
		else
			fdstore_refuse(d, meta, "does not describe this swap: pages in swap cannot be vouched for");
	}
	if (!d->swap || !d->fdstore_on)
		return;
	if (swap_meta_share(d->swap, &fd) < 0) {
		log_warn("fd store: cannot share the swap slot table: a restart will not find pages in swap");
		return;
	}
	if (!meta_adopted) /* a new table: not in the store yet */
		store_put(d, fd, "swapmeta");
	if (unnamed && !adopted) {
		/* A description of its own (see fdstore_take_swap()). */
		fd = reopen(swap_fd(d->swap), O_RDWR);
		if (fd < 0)
			log_warn("swap: cannot open it again for the fd store: %m");
		else
			store_put(d, fd, "swap");
		if (fd >= 0)
			close(fd);
	}
}

/* ---- region state in a memfd -------------------------------------------- */

static size_t round_page(size_t n, size_t ps)
{
	return (n + ps - 1) & ~(ps - 1);
}

/* The layout of r<ID>.state for npages: header page, states, slots. */
void fdstore_state_layout(uint64_t npages, size_t ps, uint64_t *state_off,
			  uint64_t *slot_off, uint64_t *size)
{
	*state_off = round_page(sizeof(struct fdstore_region_hdr), ps);
	*slot_off = *state_off + round_page(npages * sizeof(pgstate_t), ps);
	*size = *slot_off + round_page(npages * sizeof(uint32_t), ps);
}

static int fdstore_region_alloc(struct region *r)
{
	size_t ps = r->client->d->page_size;
	uint64_t state_off, slot_off, size;
	struct fdstore_region_hdr h = {
		.magic = FDSTORE_REGION_MAGIC, .version = FDSTORE_VERSION,
		.hdr_size = sizeof(h), .npages = r->npages, .page_size = (uint32_t)ps,
		.len = r->len,
	};
	int fd, e;

	fdstore_state_layout(r->npages, ps, &state_off, &slot_off, &size);
	h.state_off = state_off;
	h.slot_off = slot_off;
	h.file_size = size;
	fd = memfd_create("pagerd-region-state", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	/* Sealed: a successor can trust the size it sees. */
	if (ftruncate(fd, (off_t)size) < 0 ||
	    pwrite(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
		e = -errno;
		close(fd);
		return e;
	}
	e = region_map_state(r, fd, size, state_off, slot_off);
	if (e < 0)
		close(fd);
	return e;
}

/*
 * A region restored from an RBD image has no descriptor to keep: its
 * table (what the successor knows the image by) and then its name, in a
 * sealed memfd, so that a successor opens it again (restore_resume_rbd()).
 */
static void store_rbd_name(struct region *r)
{
	struct daemon *d = r->client->d;
	const char *name = restore_image_name(r);
	int crc = restore_crc_fd(r), fd;
	size_t len;

	if (!name || crc < 0 || (r->stored & STORED_RBD) || !(r->stored & STORED_MEM))
		return;
	if (!(r->stored & STORED_CRC)) {
		if (!store_put(d, crc, "r%" PRIu64 ".crc", r->id))
			return;
		r->stored |= STORED_CRC;
	}
	len = strlen(name) + 1;
	fd = memfd_create("pagerd-rbd-name", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd >= 0 && write(fd, name, len) == (ssize_t)len &&
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) == 0 &&
	    store_put(d, fd, "r%" PRIu64 ".rbd", r->id))
		r->stored |= STORED_RBD;
	if (fd >= 0)
		close(fd);
}

void fdstore_region_sync(struct region *r)
{
	struct fdstore_region_hdr *h = fdstore_hdr(r);
	struct proto_snapshot_status ss;

	if (!h)
		return;
	h->region_id = r->id;
	h->client_id = r->client->id;
	h->addr = r->addr;
	h->memory_limit = r->memory_limit;
	h->flags = (h->flags & ~FDSTORE_R_IMAGE_PREFETCH) |
		   (restore_prefetching(r) ? FDSTORE_R_IMAGE_PREFETCH : 0);
	memcpy(h->name, r->name, sizeof(h->name));
	snapshot_status(r, &ss);
	if (ss.status == -ENOENT && ss.done && !ss.pages_total) {
		h->snap_state = FDSTORE_SNAP_NONE;
	} else {
		h->snap_state = ss.done ? FDSTORE_SNAP_DONE : FDSTORE_SNAP_RUNNING;
		h->snap_status = ss.status;
		h->snap_total = ss.pages_total;
		h->snap_done = ss.pages_done;
		h->snap_pause_ns = ss.pause_ns;
	}
#define X(name) h->stats.name = r->stats.name;
	FDSTORE_COUNTERS(X)
#undef X
	store_rbd_name(r);
}

/* ---- hooks ------------------------------------------------------------- */

void fdstore_client_sync(struct client *c)
{
	struct fdstore_client_rec rec = {
		.magic = FDSTORE_CLIENT_MAGIC, .version = FDSTORE_VERSION,
		.hdr_size = sizeof(rec), .id = c->id,
		.flags = (c->hello_done ? FDSTORE_C_HELLO : 0) |
			 (c->control ? FDSTORE_C_CONTROL : 0) |
			 (c->kernel_faults ? FDSTORE_C_KERNEL_FAULTS : 0),
		.memory_limit = c->memory_limit,
	};

	if (c->state_fd >= 0 &&
	    pwrite(c->state_fd, &rec, sizeof(rec), 0) != (ssize_t)sizeof(rec))
		log_warn("client %" PRIu64 ": writing its state for the fd store: %m", c->id);
}

/* The connection, its state record and (once said hello) its uffd. */
static void client_store(struct client *c)
{
	struct daemon *d = c->d;

	if (!d->fdstore_on)
		return;
	if (c->state_fd < 0) {
		c->state_fd = memfd_create("pagerd-client-state", MFD_CLOEXEC | MFD_ALLOW_SEALING);
		if (c->state_fd < 0 ||
		    ftruncate(c->state_fd, (off_t)sizeof(struct fdstore_client_rec)) < 0 ||
		    fcntl(c->state_fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
			log_warn("client %" PRIu64 ": no state memfd for the fd store: %m", c->id);
			if (c->state_fd >= 0)
				close(c->state_fd);
			c->state_fd = -1;
			return;
		}
	}
	fdstore_client_sync(c);
	/* State first: a successor finding the socket finds the state. */
	if (!(c->stored & STORED_STATE) && store_put(d, c->state_fd, "c%" PRIu64 ".state", c->id))
		c->stored |= STORED_STATE;
	if (!(c->stored & STORED_SOCK) && store_put(d, c->sock, "c%" PRIu64 ".sock", c->id))
		c->stored |= STORED_SOCK;
	/* The uffd is O_NONBLOCK by now (client_attach_uffd()): systemd
	 * polls what it stores and drops a descriptor that reports an error,
	 * which a blocking userfaultfd always does. */
	if (c->uffd >= 0 && !(c->stored & STORED_UFFD) &&
	    store_put(d, c->uffd, "c%" PRIu64 ".uffd", c->id))
		c->stored |= STORED_UFFD;
	if (c->agent >= 0 && !(c->stored & STORED_AGENT) &&
	    store_put(d, c->agent, "c%" PRIu64 ".agent", c->id))
		c->stored |= STORED_AGENT;
	fdstore_client_pagemap(c);
}

/* Only the one the client sent: one pagerd opened, the next opens too. */
void fdstore_client_pagemap(struct client *c)
{
	if (c->pagemap_passed && (c->stored & STORED_SOCK) && !(c->stored & STORED_PAGEMAP) &&
	    store_put(c->d, c->pagemap, "c%" PRIu64 ".pagemap", c->id))
		c->stored |= STORED_PAGEMAP;
}

/*
 * Control connections (pagerctl) are not stored as they come: they are
 * short, and storing each would cost systemd two messages a command.  A
 * graceful hand-over stores whatever connection is open.
 */
void fdstore_client_hello(struct client *c)
{
	if (!c->control)
		client_store(c);
}

void fdstore_client_agent(struct client *c, bool attached)
{
	struct daemon *d = c->d;

	if (attached) {
		if (c->stored & STORED_AGENT)
			return; /* adopted: in the store already */
		if (c->stored & STORED_SOCK && store_put(d, c->agent, "c%" PRIu64 ".agent", c->id))
			c->stored |= STORED_AGENT;
		return;
	}
	if ((c->stored & STORED_AGENT) && !d->handover) {
		store_remove(d, 'c', c->id, "agent");
		c->stored &= ~STORED_AGENT;
	}
}

void fdstore_client_gone(struct client *c)
{
	struct daemon *d = c->d;

	if (!d->handover) {
		if (c->stored & STORED_SOCK)
			store_remove(d, 'c', c->id, "sock");
		if (c->stored & STORED_UFFD)
			store_remove(d, 'c', c->id, "uffd");
		if (c->stored & STORED_AGENT)
			store_remove(d, 'c', c->id, "agent");
		if (c->stored & STORED_PAGEMAP)
			store_remove(d, 'c', c->id, "pagemap");
		if (c->stored & STORED_STATE)
			store_remove(d, 'c', c->id, "state");
	}
	c->stored = 0;
	if (c->state_fd >= 0)
		close(c->state_fd);
	c->state_fd = -1;
}

int fdstore_region_added(struct region *r)
{
	struct daemon *d = r->client->d;

	if (d->fdstore_on) {
		/* A new region's states and slots (all zero, slots not yet
		 * allocated) move into a memfd a successor can map. */
		pgstate_t *state = r->state;
		uint32_t *slot = r->slot;
		int e = fdstore_region_alloc(r);

		if (e < 0)
			return e;
		free(state);
		free(slot);
	}
	fdstore_region_sync(r);
	if (!d->fdstore_on || !r->state_map)
		return 0;
	/* State first, memfd second: a successor that finds the memfd finds
	 * how to read it. */
	if (store_put(d, r->state_fd, "r%" PRIu64 ".state", r->id))
		r->stored |= STORED_STATE;
	if (store_put(d, r->memfd, "r%" PRIu64 ".mem", r->id))
		r->stored |= STORED_MEM;
	return 0;
}

void fdstore_region_image(struct region *r)
{
	int crc = restore_crc_fd(r);

	fdstore_region_sync(r);
	/* The table first: a successor that finds the image without one
	 * restores it unchecked, as an image made before tables. */
	if (crc >= 0 && (r->stored & STORED_MEM) &&
	    store_put(r->client->d, crc, "r%" PRIu64 ".crc", r->id))
		r->stored |= STORED_CRC;
	if (restore_image_fd(r) >= 0 && (r->stored & STORED_MEM) &&
	    store_put(r->client->d, restore_image_fd(r), "r%" PRIu64 ".image", r->id))
		r->stored |= STORED_IMAGE;
}

void fdstore_region_gone(struct region *r)
{
	struct daemon *d = r->client->d;

	if (d->handover)
		return;
	/* The memfd first: a successor never finds a region without its
	 * state. */
	if (r->stored & STORED_MEM)
		store_remove(d, 'r', r->id, "mem");
	if (r->stored & STORED_IMAGE)
		store_remove(d, 'r', r->id, "image");
	if (r->stored & STORED_CRC)
		store_remove(d, 'r', r->id, "crc");
	if (r->stored & STORED_RBD)
		store_remove(d, 'r', r->id, "rbd");
	if (r->stored & STORED_STATE)
		store_remove(d, 'r', r->id, "state");
	r->stored = 0;
}

void fdstore_handover(struct daemon *d)
{
	unsigned nc = 0, nr = 0;

	if (!d->fdstore_on)
		return;
	/* Settle what a successor could only guess: removed pages,
	 * snapshots, I/O in flight.  swap_close() runs every completion. */
	for (struct client *c = d->clients; c; c = c->next) {
		client_reconcile(c);
		for (size_t i = 0; i < c->nregions; i++)
			snapshot_handover(c->regions[i]);
	}
	swap_close(d->swap);
	d->swap = NULL;
	for (struct client *c = d->clients; c; c = c->next) {
		client_store(c);
		for (size_t i = 0; i < c->nregions; i++) {
			struct region *r = c->regions[i];

			snapshot_drain(r);
			fdstore_region_sync(r);
			if (fdstore_hdr(r))
				fdstore_hdr(r)->flags |= FDSTORE_R_HANDED_OVER;
			nr++;
		}
		nc++;
	}
	d->handover = true;
	log_notice("handing %u connection%s with %u region%s over to the fd store",
		   nc, nc == 1 ? "" : "s", nr, nr == 1 ? "" : "s");
}

int fdstore_peek(bool *ret_clients)
{
	char **names = NULL;
	int n = sd_listen_fds_with_names(0, &names), config = -1;

	*ret_clients = false;
	for (int i = 0; n > 0 && names && i < n && names[i]; i++) {
		uint64_t id;
		enum kind k = parse_name(names[i], &id);

		if (k == K_CSOCK)
			*ret_clients = true;
		else if (k == K_CONFIG && config < 0)
			config = SD_LISTEN_FDS_START + i;
	}
	for (int i = 0; names && names[i]; i++)
		free(names[i]);
	free(names);
	return config;
}

/*
 * The settings in effect, as a pagerd.conf, in a memfd of the store: a
 * successor that finds errors in the file runs with these rather than
 * strand the clients it takes over (main.c).  One memfd for the life of
 * the store, rewritten in place: the store holds the same file.
 */
void fdstore_config_sync(struct daemon *d)
{
	struct fdstore *fs = d->fdstore;
	struct stored *s = fdstore_find(d, K_CONFIG, 0);
	char *text = NULL;
	size_t len = 0;
	struct stat st;
	FILE *f;

	if (!fs || !d->fdstore_on)
		return;
	if (fs->config_fd < 0 && s) {
		if (fstat(s->fd, &st) == 0 && S_ISREG(st.st_mode) &&
		    fcntl(s->fd, F_GET_SEALS) >= 0)
			fs->config_fd = fdstore_take(s);
		else
			fdstore_refuse(d, s, "not a memfd");
	}
	if (fs->config_fd < 0) {
		fs->config_fd = memfd_create("pagerd-config", MFD_CLOEXEC | MFD_ALLOW_SEALING);
		if (fs->config_fd < 0) {
			log_warn("fd store: no memfd for the configuration: %m");
			return;
		}
		if (!store_put(d, fs->config_fd, "config")) {
			close(fs->config_fd);
			fs->config_fd = -1;
			return;
		}
	}
	f = open_memstream(&text, &len);
	if (!f)
		return;
	config_print(&d->cfg, f);
	if (fclose(f) != 0 || ftruncate(fs->config_fd, 0) < 0 ||
	    pwrite(fs->config_fd, text, len, 0) != (ssize_t)len)
		log_warn("fd store: writing the configuration: %m");
	free(text);
}

void fdstore_close(struct daemon *d)
{
	struct fdstore *fs = d->fdstore;

	if (!fs)
		return;
	if (fs->config_fd >= 0)
		close(fs->config_fd);
	for (size_t i = 0; i < fs->n; i++)
		if (fs->v[i].fd >= 0)
			close(fs->v[i].fd);
	free(fs->v);
	free(fs);
	d->fdstore = NULL;
}
