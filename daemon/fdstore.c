/* SPDX-License-Identifier: MIT */
/*
 * systemd's file-descriptor store: what pagerd puts there, and how a
 * restarted pagerd takes its clients back from it.  See fdstore.h for the
 * names and the formats.
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
#include "page.h"
#include "swap.h"

/* What a stored descriptor is, from its name. */
enum kind {
	K_OTHER,      /* not one of ours: the socket unit's, or a stray */
	K_SWAP,
	K_SWAPMETA,
	K_CONFIG,
	K_CSOCK,
	K_CSTATE,
	K_CUFFD,
	K_CAGENT,
	K_CPAGEMAP,
	K_RMEM,
	K_RSTATE,
	K_RIMAGE,
	K_RCRC,
};

struct stored {
	int fd;          /* -1 once taken or refused */
	enum kind kind;
	uint64_t id;
	char name[256];  /* printable: control characters shown as '?' */
	bool raw_ok;     /* the name as passed may be sent back in FDNAME= */
};

struct fdstore {
	struct stored *v;
	size_t n;
	bool notify_failed; /* logged once */
	int config_fd;      /* "config": the settings in effect, or -1 */
};

static const char *const kind_suffix[] = {
	[K_CSOCK] = "sock", [K_CSTATE] = "state", [K_CUFFD] = "uffd",
	[K_CAGENT] = "agent", [K_CPAGEMAP] = "pagemap", [K_RMEM] = "mem", [K_RSTATE] = "state",
	[K_RIMAGE] = "image", [K_RCRC] = "crc",
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
	for (enum kind k = K_CSOCK; k <= K_RCRC; k++) {
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
static void refuse(struct daemon *d, struct stored *s, const char *why)
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

static struct stored *find(struct daemon *d, enum kind k, uint64_t id)
{
	struct fdstore *fs = d->fdstore;

	for (size_t i = 0; fs && i < fs->n; i++)
		if (fs->v[i].fd >= 0 && fs->v[i].kind == k && fs->v[i].id == id)
			return &fs->v[i];
	return NULL;
}

/* Takes the descriptor out of the table: the caller owns it now. */
static int take(struct stored *s)
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
				refuse(d, s, "a second descriptor of that name");
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
			return take(s);
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
	struct stored *s = find(d, K_SWAP, 0);
	struct stat st;
	int fd;

	if (!s)
		return -1;
	if (*d->cfg.swap_path) {
		refuse(d, s, "swap_path is set: that swap is used");
		return -1;
	}
	if (fstat(s->fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_nlink != 0) {
		refuse(d, s, "not an unnamed regular file");
		return -1;
	}
	/* The stored description is never used for I/O or locked: each
	 * pagerd opens its own, so that the lock tells when a dead one's
	 * I/O is over. */
	fd = reopen(s->fd, O_RDWR | O_DIRECT);
	close(take(s));
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
	struct stored *meta = find(d, K_SWAPMETA, 0);
	bool meta_adopted = false;
	int fd;

	if (meta && !d->swap) {
		refuse(d, meta, "pagerd has no swap now: pages that were in swap are lost");
	} else if (meta) {
		meta_adopted = swap_meta_adopt(d->swap, meta->fd) == 0;
		if (meta_adopted)
			take(meta);
		else
			refuse(d, meta, "does not describe this swap: pages in swap cannot be vouched for");
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
static void state_layout(uint64_t npages, size_t ps, uint64_t *state_off,
			 uint64_t *slot_off, uint64_t *size)
{
	*state_off = round_page(sizeof(struct fdstore_region_hdr), ps);
	*slot_off = *state_off + round_page(npages * sizeof(pgstate_t), ps);
	*size = *slot_off + round_page(npages * sizeof(uint32_t), ps);
}

static struct fdstore_region_hdr *hdr_of(const struct region *r)
{
	return r->state_map;
}

static int state_map(struct region *r, int fd, size_t len)
{
	void *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	const struct fdstore_region_hdr *h = map;

	if (map == MAP_FAILED)
		return -errno;
	r->state_fd = fd;
	r->state_map = map;
	r->state_len = len;
	r->state = (pgstate_t *)((char *)map + h->state_off);
	r->slot = (uint32_t *)((char *)map + h->slot_off);
	return 0;
}

int fdstore_region_alloc(struct region *r)
{
	size_t ps = r->client->d->page_size;
	uint64_t state_off, slot_off, size;
	struct fdstore_region_hdr h = {
		.magic = FDSTORE_REGION_MAGIC, .version = FDSTORE_VERSION,
		.hdr_size = sizeof(h), .npages = r->npages, .page_size = (uint32_t)ps,
		.len = r->len,
	};
	int fd, e;

	state_layout(r->npages, ps, &state_off, &slot_off, &size);
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
	e = state_map(r, fd, size);
	if (e < 0)
		close(fd);
	return e;
}

void fdstore_region_free(struct region *r)
{
	munmap(r->state_map, r->state_len);
	close(r->state_fd);
	r->state_map = NULL;
	r->state_fd = -1;
	r->state = NULL;
	r->slot = NULL;
}

void fdstore_region_sync(struct region *r)
{
	struct fdstore_region_hdr *h = hdr_of(r);
	struct proto_snapshot_status ss;

	if (!h)
		return;
	h->region_id = r->id;
	h->client_id = r->client->id;
	h->addr = r->addr;
	h->memory_limit = r->memory_limit;
	h->flags = (h->flags & ~FDSTORE_R_IMAGE_PREFETCH) |
		   (r->image_prefetch ? FDSTORE_R_IMAGE_PREFETCH : 0);
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

void fdstore_region_added(struct region *r)
{
	struct daemon *d = r->client->d;

	fdstore_region_sync(r);
	if (!d->fdstore_on || !r->state_map)
		return;
	/* State first, memfd second: a successor that finds the memfd finds
	 * how to read it. */
	if (store_put(d, r->state_fd, "r%" PRIu64 ".state", r->id))
		r->stored |= STORED_STATE;
	if (store_put(d, r->memfd, "r%" PRIu64 ".mem", r->id))
		r->stored |= STORED_MEM;
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
	if (r->image_fd >= 0 && (r->stored & STORED_MEM) &&
	    store_put(r->client->d, r->image_fd, "r%" PRIu64 ".image", r->id))
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
	if (r->stored & STORED_STATE)
		store_remove(d, 'r', r->id, "state");
	r->stored = 0;
}

/* ---- adoption ---------------------------------------------------------- */

/* A memfd of ours: a regular shmem file with the seals we set. */
static const char *check_state_memfd(int fd, uint64_t *ret_size)
{
	struct stat st;
	int seals;

	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return "not a regular file";
	seals = fcntl(fd, F_GET_SEALS);
	if (seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW))
		return "not a sealed memfd";
	*ret_size = (uint64_t)st.st_size;
	return NULL;
}

/* Reads and checks c<ID>.state.  NULL or what is wrong. */
static const char *read_client_rec(int fd, uint64_t id, struct fdstore_client_rec *rec)
{
	uint64_t size;
	const char *why = check_state_memfd(fd, &size);

	if (why)
		return why;
	if (size != sizeof(*rec) || pread(fd, rec, sizeof(*rec), 0) != (ssize_t)sizeof(*rec))
		return "wrong size";
	if (rec->magic != FDSTORE_CLIENT_MAGIC || rec->version != FDSTORE_VERSION ||
	    rec->hdr_size != sizeof(*rec))
		return "bad magic, version or header size";
	if (rec->id != id)
		return "the record names another client";
	if (rec->flags & ~(FDSTORE_C_HELLO | FDSTORE_C_CONTROL | FDSTORE_C_KERNEL_FAULTS))
		return "unknown flags";
	return NULL;
}

/* Checks r<ID>.state's header against the memfd's size and the daemon. */
static const char *check_region_hdr(struct daemon *d, const struct fdstore_region_hdr *h,
				    uint64_t id, uint64_t size)
{
	uint64_t state_off, slot_off, want;

	if (h->magic != FDSTORE_REGION_MAGIC || h->version != FDSTORE_VERSION ||
	    h->hdr_size != sizeof(*h))
		return "bad magic, version or header size";
	if (h->region_id != id)
		return "the header names another region";
	if (h->page_size != d->page_size)
		return "made with another page size";
	if (!h->len || h->len % d->page_size || h->addr % d->page_size ||
	    h->npages != h->len / d->page_size || h->addr + h->len < h->addr)
		return "bad address or length";
	state_layout(h->npages, d->page_size, &state_off, &slot_off, &want);
	if (h->state_off != state_off || h->slot_off != slot_off || h->file_size != want)
		return "bad layout";
	if (size != want)
		return "truncated or grown (its size does not match its header)";
	if (h->snap_state > FDSTORE_SNAP_DONE || h->flags & ~(FDSTORE_R_IMAGE_PREFETCH |
							       FDSTORE_R_HANDED_OVER))
		return "bad snapshot record or flags";
	return NULL;
}

/* Pages of the memfd that hold data: bit p set.  NULL on error. */
static uint64_t *memfd_present(int fd, uint64_t npages, size_t ps)
{
	uint64_t *bits = calloc((npages + 63) / 64, sizeof(uint64_t));
	off_t end = (off_t)(npages * ps), off = 0;

	if (!bits)
		return NULL;
	while (off < end) {
		off_t data = lseek(fd, off, SEEK_DATA), hole;

		if (data < 0 || data >= end)
			break; /* ENXIO: no data after off */
		hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0 || hole > end)
			hole = end;
		for (uint64_t p = (uint64_t)data / ps; p * ps < (uint64_t)hole; p++)
			bits[p / 64] |= 1ull << (p % 64);
		off = hole;
	}
	return bits;
}

struct settle_counts {
	uint64_t resident, swapped, empty, poisoned, lost, punched, slots_dropped;
	uint64_t in_flight; /* pages whose write-back or swap-in was cut short */
};

/*
 * Makes the page states the predecessor left true again, page by page, from
 * what the memfd holds and what the swap table vouches for:
 *
 *   write-back in flight   the page is still in the memfd (it is punched
 *                          only after its slot is recorded and its state
 *                          is SWAPPED): resident, without the slot (it may
 *                          have been re-dirtied); discarded during it
 *                          (PG_GONE): empty if the memfd has nothing there,
 *                          resident if it has (page.h: page_gone_with())
 *   swap-in in flight      the slot still holds the page: swapped (the half
 *                          filled page-cache page is punched)
 *   resident, a hole       eviction marks a page swapped (or empty) before
 *                          it punches it (evict.c), so only the client can
 *                          have discarded it (MADV_REMOVE): empty
 *   swapped                only with a slot whose tag names this page;
 *                          otherwise the data cannot be vouched for and the
 *                          page is poisoned (SIGBUS), never served as zeros
 *   empty, data present    a zero-fill raced the kill: resident (dirty)
 *   image pages            read again from the image (punched if half read);
 *                          poisoned if the image did not come back
 *
 * Transient flags (PG_IO, PG_READING, PG_WAITER, PG_REDIRTY, PG_GONE, the
 * readahead marks) are cleared: nothing is in flight in the new daemon.
 */
static void settle(struct region *r, const uint64_t *present, bool have_image,
		   struct settle_counts *n)
{
	struct swap *sw = r->client->d->swap;

	for (uint64_t p = 0; p < r->npages; p++) {
		pgstate_t b = r->state[p];
		enum page_state st = pg_state(b);
		bool here = (present[p / 64] >> (p % 64)) & 1;
		bool punch = false;
		int64_t slot = r->slot[p] ? (int64_t)r->slot[p] - 1 : -1;
		bool valid = false;
		enum page_state to;
		pgstate_t keep = 0;

		n->in_flight += (b & PG_IO) != 0;
		if (slot >= 0) {
			valid = sw && swap_claim(sw, (uint64_t)slot, r->id, p) == 0;
			if (!valid)
				n->slots_dropped++;
		}
		if (st == PAGE_POISONED) {
			/* Its client holds a poison marker; no slot needed. */
			to = PAGE_POISONED;
			punch = here;
		} else if ((b & PG_IO) && (b & PG_READING)) {
			punch = here;
			if (b & PG_GONE)
				to = PAGE_EMPTY;
			else if (valid)
				to = PAGE_SWAPPED;
			else
				to = PAGE_POISONED;
		} else if (b & PG_IO) {
			/* Discarded under write-back, but in the memfd again:
			 * the write-back's read put a page back, which the
			 * client may have written since (page_gone()). */
			bool gone = page_gone_with(b, here);

			punch = here && gone;
			to = here && !gone ? PAGE_RESIDENT : PAGE_EMPTY;
		} else if (st == PAGE_RESIDENT) {
			to = here ? PAGE_RESIDENT : PAGE_EMPTY;
		} else if (st == PAGE_SWAPPED) {
			punch = here;
			to = valid ? PAGE_SWAPPED : PAGE_POISONED;
		} else if (b & PG_IMAGE) {
			punch = here;
			if (have_image) {
				to = PAGE_EMPTY;
				keep = PG_IMAGE;
			} else {
				to = PAGE_POISONED;
			}
		} else {
			to = here ? PAGE_RESIDENT : PAGE_EMPTY;
		}
		if (to == PAGE_RESIDENT && st == PAGE_RESIDENT)
			keep |= b & PG_REF;
		/* A swapped page needs its slot; a resident one keeps it (as
		 * its clean copy) only if it was resident and idle before,
		 * which means write-protected in the client since the copy
		 * was made. */
		if (valid && to != PAGE_SWAPPED &&
		    !(to == PAGE_RESIDENT && st == PAGE_RESIDENT && !(b & PG_IO))) {
			swap_free(sw, (uint64_t)slot, 1);
			valid = false;
		}
		if (!valid)
			r->slot[p] = 0;
		if (to == PAGE_POISONED && st != PAGE_POISONED)
			n->lost++;
		if (punch) {
			region_punch(r, p, 1);
			n->punched++;
		}
		page_adopt(r, p, (pgstate_t)(to | keep));
		switch (to) {
		case PAGE_RESIDENT: n->resident++; break;
		case PAGE_SWAPPED: n->swapped++; break;
		case PAGE_POISONED: n->poisoned++; break;
		default: n->empty++; break;
		}
	}
}

/*
 * Rebuilds one region of client c from r<ID>.mem and r<ID>.state (and
 * r<ID>.image).  Returns 0; on -errno everything passed in was refused.
 */
static int adopt_region(struct client *c, struct stored *mem, struct stored *state)
{
	struct daemon *d = c->d;
	size_t ps = d->page_size;
	struct fdstore_region_hdr h;
	struct settle_counts n = { 0 };
	struct stored *image = find(d, K_RIMAGE, mem->id);
	struct stored *crc = find(d, K_RCRC, mem->id);
	const char *why;
	uint64_t size, *present = NULL;
	struct region *r;
	bool handed;
	int e;

	why = check_state_memfd(state->fd, &size);
	if (!why && (size < sizeof(h) ||
		     pread(state->fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h)))
		why = "truncated (shorter than its header)";
	if (!why)
		why = check_region_hdr(d, &h, mem->id, size);
	if (!why && h.client_id != c->id)
		why = "the header names another client";
	if (!why && !c->uffd_ev)
		why = "its client has no userfaultfd";
	if (!why && c->nregions >= d->cfg.max_regions)
		why = "the client has max_regions regions already";
	if (why) {
		refuse(d, state, why);
		refuse(d, mem, "its state was refused: its pages cannot be vouched for");
		if (image)
			refuse(d, image, "its region was refused");
		return -EINVAL;
	}
	if (region_memfd_check(c, mem->fd, h.len) < 0) {
		refuse(d, mem, "not the sealed shmem memfd of the size its state says");
		refuse(d, state, "its memfd was refused");
		if (image)
			refuse(d, image, "its region was refused");
		return -EINVAL;
	}
	if (image) {
		struct stat st;

		if (fstat(image->fd, &st) < 0 || !S_ISREG(st.st_mode) ||
		    (uint64_t)st.st_size != h.len) {
			refuse(d, image, "not a regular file of the region's size");
			image = NULL;
		}
	}

	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->client = c;
	r->id = h.region_id;
	r->addr = h.addr;
	r->len = h.len;
	r->npages = h.npages;
	r->memory_limit = h.memory_limit;
	r->image_fd = -1;
	r->state_fd = -1;
	memcpy(r->name, h.name, sizeof(r->name));
	r->name[sizeof(r->name) - 1] = '\0';
#define X(name) r->stats.name = h.stats.name;
	FDSTORE_COUNTERS(X)
#undef X
	r->memfd = mem->fd;
	r->map = mmap(NULL, r->len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
		      mem->fd, 0);
	e = r->map == MAP_FAILED ? -errno : state_map(r, state->fd, size);
	if (e == 0)
		present = memfd_present(mem->fd, r->npages, ps);
	if (e == 0 && !present)
		e = -ENOMEM;
	if (e == 0 && (e = region_link(c, r)) < 0)
		log_warn("region %" PRIu64 ": overlaps another of client %" PRIu64, r->id, c->id);
	if (e < 0) {
		if (r->map != MAP_FAILED)
			munmap(r->map, r->len);
		if (r->state_map)
			munmap(r->state_map, r->state_len);
		free(present);
		free(r);
		refuse(d, state, "cannot be mapped or overlaps another region");
		refuse(d, mem, "cannot be mapped or overlaps another region");
		if (image)
			refuse(d, image, "its region was refused");
		return e;
	}
	take(mem);
	take(state);
	handed = h.flags & FDSTORE_R_HANDED_OVER;
	/* From now on a crash is a crash again. */
	hdr_of(r)->flags &= ~FDSTORE_R_HANDED_OVER;
	r->stored = STORED_MEM | STORED_STATE;

	settle(r, present, image != NULL, &n);
	free(present);
	page_adopted(r);
	r->stats.poisoned += n.lost;
	d->stats.poisoned += n.lost;
	if (image) {
		if (restore_resume(r, take(image), crc ? take(crc) : -1,
				   h.flags & FDSTORE_R_IMAGE_PREFETCH) < 0)
			log_warn("region %" PRIu64 ": its image's checksum table was refused: "
				 "its pages still in the image are lost", r->id);
		r->stored |= STORED_IMAGE | (crc ? STORED_CRC : 0);
	}
	if (h.snap_state != FDSTORE_SNAP_NONE)
		/* A snapshot the old daemon did not finish failed; the
		 * client's next poll hears so. */
		snapshot_adopt(r, h.snap_state == FDSTORE_SNAP_DONE ? h.snap_status : -ESHUTDOWN,
			       h.snap_total, h.snap_done, h.snap_pause_ns);
	fdstore_region_sync(r);

	log_info("region %" PRIu64 " '%s' of client %" PRIu64 " adopted%s: %" PRIu64
		 " pages resident, %" PRIu64 " in swap, %" PRIu64 " empty, %" PRIu64 " poisoned"
		 " (%" PRIu64 " were in flight)",
		 r->id, r->name, c->id, handed ? "" : " after a crash", n.resident, n.swapped,
		 n.empty, n.poisoned, n.in_flight);
	if (n.lost || n.slots_dropped)
		log_err("region %" PRIu64 ": %" PRIu64 " swap slots could not be vouched for; "
			"%" PRIu64 " pages whose data was lost are poisoned (SIGBUS on access)",
			r->id, n.slots_dropped, n.lost);
	return 0;
}

/* Rebuilds client `id` from c<ID>.sock and the rest of its names. */
static void adopt_client(struct daemon *d, struct stored *sock)
{
	struct stored *state = find(d, K_CSTATE, sock->id);
	struct stored *uffd = find(d, K_CUFFD, sock->id);
	struct stored *agent = find(d, K_CAGENT, sock->id);
	struct stored *pagemap = find(d, K_CPAGEMAP, sock->id);
	struct fdstore_client_rec rec = { 0 };
	const char *why = NULL;
	struct client *c;
	int e;

	if (sd_is_socket(sock->fd, AF_UNIX, SOCK_SEQPACKET, 0) <= 0) {
		refuse(d, sock, "not a connected SOCK_SEQPACKET Unix socket");
		return;
	}
	if (state && (why = read_client_rec(state->fd, sock->id, &rec))) {
		refuse(d, state, why);
		state = NULL;
	}
	if (uffd && uffd_check(uffd->fd, &(uint64_t){ 0 }) < 0) {
		refuse(d, uffd, "not a userfaultfd with the features pagerd needs");
		uffd = NULL;
	}
	if (agent && sd_is_socket(agent->fd, AF_UNIX, SOCK_SEQPACKET, 0) <= 0) {
		refuse(d, agent, "not a SOCK_SEQPACKET socket");
		agent = NULL;
	}
	if (!state)
		/* Said hello if it gave a uffd; a control connection is not
		 * stored before a hand-over, which stores its state. */
		rec.flags = uffd ? FDSTORE_C_HELLO : 0;
	if ((rec.flags & FDSTORE_C_CONTROL) && uffd) {
		refuse(d, uffd, "a control connection has no userfaultfd");
		uffd = NULL;
	}
	if ((rec.flags & FDSTORE_C_HELLO) && !(rec.flags & FDSTORE_C_CONTROL) && !uffd) {
		refuse(d, sock, "a client that said hello without its userfaultfd");
		if (state)
			refuse(d, state, "its connection was refused");
		if (agent)
			refuse(d, agent, "its connection was refused");
		return;
	}
	e = client_add(d, sock->fd, sock->id, &c);
	if (e < 0) {
		refuse(d, sock, e == -EACCES ? "the peer may no longer connect" :
				e == -EMFILE ? "max_clients reached" : strerror(-e));
		if (state)
			refuse(d, state, "its connection was refused");
		if (uffd)
			refuse(d, uffd, "its connection was refused");
		if (agent)
			refuse(d, agent, "its connection was refused");
		if (pagemap)
			refuse(d, pagemap, "its connection was refused");
		return;
	}
	take(sock);
	c->stored = STORED_SOCK;
	if (state) {
		c->state_fd = take(state);
		c->stored |= STORED_STATE;
	}
	c->hello_done = rec.flags & FDSTORE_C_HELLO;
	c->control = rec.flags & FDSTORE_C_CONTROL;
	c->kernel_faults = rec.flags & FDSTORE_C_KERNEL_FAULTS;
	c->memory_limit = rec.memory_limit;
	if (uffd) {
		e = client_attach_uffd(c, uffd->fd);
		if (e < 0) {
			refuse(d, uffd, strerror(-e));
		} else {
			take(uffd);
			c->stored |= STORED_UFFD;
		}
	}
	if (pagemap && !c->uffd_ev) {
		refuse(d, pagemap, "its client has no userfaultfd");
	} else if (pagemap) {
		e = client_set_pagemap(c, pagemap->fd);
		if (e < 0) {
			refuse(d, pagemap, e == -EINVAL ? "not the client's own pagemap" : strerror(-e));
		} else {
			take(pagemap);
			c->stored |= STORED_PAGEMAP;
		}
	}
	if (agent) {
		c->stored |= STORED_AGENT;
		if (agent_attach(c, agent->fd) < 0) {
			c->stored &= ~STORED_AGENT;
			refuse(d, agent, "cannot be watched");
		} else {
			take(agent);
		}
	}

	for (size_t i = 0; i < d->fdstore->n; i++) {
		struct stored *mem = &d->fdstore->v[i];
		struct stored *rstate;
		struct fdstore_region_hdr h;

		if (mem->fd < 0 || mem->kind != K_RMEM)
			continue;
		rstate = find(d, K_RSTATE, mem->id);
		/* Ours if the state says so; the others wait for theirs. */
		if (!rstate || pread(rstate->fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) ||
		    h.client_id != c->id)
			continue;
		adopt_region(c, mem, rstate);
	}
	fdstore_client_sync(c);
	log_info("client %" PRIu64 " adopted: pid %d uid %d, %zu region%s%s", c->id,
		 (int)c->cred.pid, (int)c->cred.uid, c->nregions, c->nregions == 1 ? "" : "s",
		 c->control ? " (control)" : "");
	/* Messages the old daemon read died with it: every thread waiting
	 * in a fault faults again, and this daemon answers. */
	for (size_t i = 0; i < c->nregions; i++)
		uffd_wake(c, c->regions[i]->addr, c->regions[i]->len);
}

void fdstore_adopt(struct daemon *d)
{
	struct fdstore *fs = d->fdstore;
	unsigned clients = 0;

	if (!fs || !fs->n)
		return;
	for (size_t i = 0; i < fs->n; i++) {
		if (fs->v[i].fd >= 0 && fs->v[i].kind == K_CSOCK) {
			unsigned before = d->nclients;

			adopt_client(d, &fs->v[i]);
			clients += d->nclients > before;
		}
	}
	if (d->swap)
		swap_forget_unclaimed(d->swap);
	/* Whatever is left belongs to nobody we know. */
	for (size_t i = 0; i < fs->n; i++) {
		struct stored *s = &fs->v[i];

		if (s->fd < 0)
			continue;
		switch (s->kind) {
		case K_OTHER:
			refuse(d, s, "not a name pagerd stores, nor its listening socket");
			break;
		case K_RMEM:
		case K_RSTATE:
		case K_RIMAGE:
		case K_RCRC:
			refuse(d, s, "belongs to no adopted client (or its other half is missing)");
			break;
		case K_SWAP:
		case K_SWAPMETA:
		case K_CONFIG:
			refuse(d, s, "not used");
			break;
		default:
			refuse(d, s, "its client's connection is missing");
			break;
		}
	}
	free(fs->v);
	fs->v = NULL;
	fs->n = 0;
	if (clients) {
		log_notice("fd store: %u client%s taken over from the previous pagerd",
			   clients, clients == 1 ? "" : "s");
		evict_kick(d);
	}
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
			if (hdr_of(r))
				hdr_of(r)->flags |= FDSTORE_R_HANDED_OVER;
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
	struct stored *s = find(d, K_CONFIG, 0);
	char *text = NULL;
	size_t len = 0;
	struct stat st;
	FILE *f;

	if (!fs || !d->fdstore_on)
		return;
	if (fs->config_fd < 0 && s) {
		if (fstat(s->fd, &st) == 0 && S_ISREG(st.st_mode) &&
		    fcntl(s->fd, F_GET_SEALS) >= 0)
			fs->config_fd = take(s);
		else
			refuse(d, s, "not a memfd");
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
