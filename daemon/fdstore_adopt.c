/* SPDX-License-Identifier: MIT */
/*
 * A restarted pagerd takes its clients back from systemd's fd store
 * (fdstore.h has the names and formats; fdstore.c the table of what
 * LISTEN_FDS brought).  The top of the daemon, beside main.c: it rebuilds
 * clients (client.c) and regions (region.c), settles their page states
 * (page.c) and resumes restores and snapshot records (snapshot.c), while
 * fdstore.c, which client.c tells of every change, calls none of them.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "fdstore.h"
#include "log.h"
#include "store.h"
#include "page.h"
#include "swap.h"
#include "uffd.h"

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
	fdstore_state_layout(h->npages, d->page_size, &state_off, &slot_off, &want);
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
	struct stored *image = fdstore_find(d, K_RIMAGE, mem->id);
	struct stored *crc = fdstore_find(d, K_RCRC, mem->id);
	struct stored *rbd = fdstore_find(d, K_RRBD, mem->id);
	char rbd_name[STORE_RBD_NAME_MAX * 3 + 8] = "";
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
		fdstore_refuse(d, state, why);
		fdstore_refuse(d, mem, "its state was refused: its pages cannot be vouched for");
		if (image)
			fdstore_refuse(d, image, "its region was refused");
		if (rbd)
			fdstore_refuse(d, rbd, "its region was refused");
		return -EINVAL;
	}
	if (region_memfd_check(c, mem->fd, h.len) < 0) {
		fdstore_refuse(d, mem, "not the sealed shmem memfd of the size its state says");
		fdstore_refuse(d, state, "its memfd was refused");
		if (image)
			fdstore_refuse(d, image, "its region was refused");
		if (rbd)
			fdstore_refuse(d, rbd, "its region was refused");
		return -EINVAL;
	}
	if (image) {
		struct stat st;

		if (fstat(image->fd, &st) < 0 || !S_ISREG(st.st_mode) ||
		    (uint64_t)st.st_size != h.len) {
			fdstore_refuse(d, image, "not a regular file of the region's size");
			image = NULL;
		}
	}

	/* An RBD image by its name (a sealed memfd of it, as stored), with
	 * its table: the successor opens it again. */
	if (rbd && !image) {
		struct store_rbd_name nm;
		ssize_t got = pread(rbd->fd, rbd_name, sizeof(rbd_name) - 1, 0);

		rbd_name[got > 0 ? got : 0] = '\0';
		if (got <= 0 || (size_t)got != strlen(rbd_name) + 1 || !crc ||
		    store_rbd_parse(rbd_name, &nm) < 0) {
			fdstore_refuse(d, rbd, "not an rbd:... name with its checksum table");
			rbd = NULL;
			rbd_name[0] = '\0';
		}
	} else if (rbd) {
		fdstore_refuse(d, rbd, "the region has an image file");
		rbd = NULL;
	}

	/* What the memfd holds, before the region exists: a region that
	 * exists is settled, or its slots would be freed unclaimed. */
	present = memfd_present(mem->fd, h.npages, ps);
	e = present ? 0 : -ENOMEM;
	if (e == 0)
		e = region_new(c, &(struct region_init){
				.id = h.region_id, .addr = h.addr, .len = h.len,
				.memory_limit = h.memory_limit, .name = h.name,
				.memfd = mem->fd, .state_fd = state->fd, .state_len = size,
				.state_off = h.state_off, .slot_off = h.slot_off,
			}, &r);
	if (e < 0) {
		free(present);
		fdstore_refuse(d, state, "cannot be mapped or overlaps another region");
		fdstore_refuse(d, mem, "cannot be mapped or overlaps another region");
		if (image)
			fdstore_refuse(d, image, "its region was refused");
		if (rbd)
			fdstore_refuse(d, rbd, "its region was refused");
		return e;
	}
	fdstore_take(mem);
	fdstore_take(state);
#define X(name) r->stats.name = h.stats.name;
	FDSTORE_COUNTERS(X)
#undef X
	handed = h.flags & FDSTORE_R_HANDED_OVER;
	/* From now on a crash is a crash again. */
	fdstore_hdr(r)->flags &= ~FDSTORE_R_HANDED_OVER;
	r->stored = STORED_MEM | STORED_STATE;

	settle(r, present, image != NULL || rbd != NULL, &n);
	free(present);
	page_adopted(r);
	r->stats.poisoned += n.lost;
	d->stats.poisoned += n.lost;
	if (image) {
		if (restore_resume(r, fdstore_take(image), crc ? fdstore_take(crc) : -1,
				   h.flags & FDSTORE_R_IMAGE_PREFETCH) < 0)
			log_warn("region %" PRIu64 ": its image's checksum table was refused: "
				 "its pages still in the image are lost", r->id);
		r->stored |= STORED_IMAGE | (crc ? STORED_CRC : 0);
	} else if (rbd) {
		close(fdstore_take(rbd));
		/* Its pages wait for the image (or are poisoned if it does
		 * not come back, or is not the same snapshot). */
		restore_resume_rbd(r, rbd_name, fdstore_take(crc),
				   h.flags & FDSTORE_R_IMAGE_PREFETCH);
		r->stored |= STORED_RBD | STORED_CRC;
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
	struct stored *state = fdstore_find(d, K_CSTATE, sock->id);
	struct stored *uffd = fdstore_find(d, K_CUFFD, sock->id);
	struct stored *agent = fdstore_find(d, K_CAGENT, sock->id);
	struct stored *pagemap = fdstore_find(d, K_CPAGEMAP, sock->id);
	struct fdstore_client_rec rec = { 0 };
	const char *why = NULL;
	struct client *c;
	int e;

	if (sd_is_socket(sock->fd, AF_UNIX, SOCK_SEQPACKET, 0) <= 0) {
		fdstore_refuse(d, sock, "not a connected SOCK_SEQPACKET Unix socket");
		return;
	}
	if (state && (why = read_client_rec(state->fd, sock->id, &rec))) {
		fdstore_refuse(d, state, why);
		state = NULL;
	}
	if (uffd && uffd_check(uffd->fd, &(uint64_t){ 0 }) < 0) {
		fdstore_refuse(d, uffd, "not a userfaultfd with the features pagerd needs");
		uffd = NULL;
	}
	if (agent && sd_is_socket(agent->fd, AF_UNIX, SOCK_SEQPACKET, 0) <= 0) {
		fdstore_refuse(d, agent, "not a SOCK_SEQPACKET socket");
		agent = NULL;
	}
	if (!state)
		/* Said hello if it gave a uffd; a control connection is not
		 * stored before a hand-over, which stores its state. */
		rec.flags = uffd ? FDSTORE_C_HELLO : 0;
	if ((rec.flags & FDSTORE_C_CONTROL) && uffd) {
		fdstore_refuse(d, uffd, "a control connection has no userfaultfd");
		uffd = NULL;
	}
	if ((rec.flags & FDSTORE_C_HELLO) && !(rec.flags & FDSTORE_C_CONTROL) && !uffd) {
		fdstore_refuse(d, sock, "a client that said hello without its userfaultfd");
		if (state)
			fdstore_refuse(d, state, "its connection was refused");
		if (agent)
			fdstore_refuse(d, agent, "its connection was refused");
		return;
	}
	e = client_add(d, sock->fd, sock->id, &c);
	if (e < 0) {
		fdstore_refuse(d, sock, e == -EACCES ? "the peer may no longer connect" :
				e == -EMFILE ? "max_clients reached" : strerror(-e));
		if (state)
			fdstore_refuse(d, state, "its connection was refused");
		if (uffd)
			fdstore_refuse(d, uffd, "its connection was refused");
		if (agent)
			fdstore_refuse(d, agent, "its connection was refused");
		if (pagemap)
			fdstore_refuse(d, pagemap, "its connection was refused");
		return;
	}
	fdstore_take(sock);
	c->stored = STORED_SOCK;
	if (state) {
		c->state_fd = fdstore_take(state);
		c->stored |= STORED_STATE;
	}
	c->hello_done = rec.flags & FDSTORE_C_HELLO;
	c->control = rec.flags & FDSTORE_C_CONTROL;
	c->kernel_faults = rec.flags & FDSTORE_C_KERNEL_FAULTS;
	c->memory_limit = rec.memory_limit;
	if (uffd) {
		e = client_attach_uffd(c, uffd->fd);
		if (e < 0) {
			fdstore_refuse(d, uffd, strerror(-e));
		} else {
			fdstore_take(uffd);
			c->stored |= STORED_UFFD;
		}
	}
	if (pagemap && !c->uffd_ev) {
		fdstore_refuse(d, pagemap, "its client has no userfaultfd");
	} else if (pagemap) {
		e = client_set_pagemap(c, pagemap->fd);
		if (e < 0) {
			fdstore_refuse(d, pagemap, e == -EINVAL ? "not the client's own pagemap" : strerror(-e));
		} else {
			fdstore_take(pagemap);
			c->stored |= STORED_PAGEMAP;
		}
	}
	if (agent) {
		c->stored |= STORED_AGENT;
		if (agent_attach(c, agent->fd) < 0) {
			c->stored &= ~STORED_AGENT;
			fdstore_refuse(d, agent, "cannot be watched");
		} else {
			fdstore_take(agent);
		}
	}

	for (size_t i = 0; i < d->fdstore->n; i++) {
		struct stored *mem = &d->fdstore->v[i];
		struct stored *rstate;
		struct fdstore_region_hdr h;

		if (mem->fd < 0 || mem->kind != K_RMEM)
			continue;
		rstate = fdstore_find(d, K_RSTATE, mem->id);
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
			fdstore_refuse(d, s, "not a name pagerd stores, nor its listening socket");
			break;
		case K_RMEM:
		case K_RSTATE:
		case K_RIMAGE:
		case K_RCRC:
		case K_RRBD:
			fdstore_refuse(d, s, "belongs to no adopted client (or its other half is missing)");
			break;
		case K_SWAP:
		case K_SWAPMETA:
		case K_CONFIG:
			fdstore_refuse(d, s, "not used");
			break;
		default:
			fdstore_refuse(d, s, "its client's connection is missing");
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
