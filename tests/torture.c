/* SPDX-License-Identifier: MIT */
/*
 * torture: a randomized, seedable stress of one shared pagerd, with oracles.
 *
 * The parent starts pagerd (tests/harness.c: socket activation, a swap file,
 * tight global and client limits, --test-hooks) and forks client processes.
 * Each client opens the pager, creates regions with region limits and runs
 * threads that pick random operations until told to stop:
 *
 *   write     stamp a page with its next generation
 *   read      check a page against what was last written there
 *   rmw       both, in one go
 *   discard   pager_region_discard() of part of a chunk: it must read as zeros
 *   limit     swing the region's limit down (to one page at times), wait
 *             until pagerd's resident count is under it, swing it back
 *   snapshot  pager_region_snapshot_start() while the other threads write;
 *             the image must be one consistent cut (see check_image())
 *   restore   a checked image restored into a region; every page read is
 *             compared byte for byte with the image (lazily, when touched)
 *   recreate  destroy a region and create another
 *   inject    EIO or a corrupt slot (PROTO_TEST_INJECT) on a swapped page
 *
 * and the parent, between them:
 *
 *   kill      SIGKILL a client, start another (pagerd must free everything)
 *   stall     SIGSTOP pagerd for a few ms (every I/O and fault waits)
 *   restart   restart pagerd through the fd store while the clients fault:
 *             SIGTERM (a graceful hand-over) and, every third time,
 *             SIGKILL (a crash), each time a fresh pagerd adopting every
 *             client from the store (see "Restarts" below)
 *   fullswap  (a configuration) a swap smaller than the data: it fills up
 *   fulldisk  (a configuration, root) the swap file on a small tmpfs:
 *             pagerd allocates it whole at start, then, before any page is
 *             in it, its blocks are punched and the filesystem is filled
 *             but for a quarter of the swap (as a filesystem without
 *             fallocate, a thin device): most write-backs fail with ENOSPC.
 *             A restart removes the filler (the new pagerd allocates the
 *             file whole again): the disk is full until the first one
 *
 * Page contents.  Word i of page p of region incarnation u at generation g
 * (g >= 1) is (key(u, p) ^ i * C1) + g * C2 with C2 odd, so every word on
 * its own says which generation it holds (multiply by C2's inverse): a page
 * from another region or page, a stale page, a zero page, a torn page are
 * all told apart.  Generation 0 (and a discard) is all zeros; a restored
 * region's pages start as the image's bytes.
 *
 * Ownership.  A region is cut into chunks of CHUNK pages; chunk c belongs
 * to thread c % nthreads, which alone writes, reads, discards and injects
 * there, so the expected state of every page is exact without locks.  Whole
 * region operations (recreate, restore) take the region's lock for writing;
 * everything else takes it for reading.
 *
 * The snapshot oracle.  Every page keeps a ring of its last RING events
 * (write or discard): generation, and two stamps from one process-wide
 * counter, b taken before the first store and e after the last (a stamp
 * is the counter's value just after its increment).  Let S be the
 * counter's value at the snapshot's instant T.  An event whose stores all
 * came before T has b <= S; one whose stores all came after T has e > S.
 * So an image page equal to event j (and not j+1) needs b_j <= S < e_{j+1};
 * one torn between them (a prefix of j over a suffix of j-1, the writer's
 * stores in order) needs b_j <= S < e_j.  The instant lies within the start
 * call: s0 <= S < s1.  The image is one cut iff one S
 * satisfies every page at once.  This is sound (never fails a correct
 * image) and catches a write from after the instant, a write lost from
 * before it, and pages from different instants.
 *
 * Poison.  A read or write that raises SIGBUS is caught (sigsetjmp in the
 * thread) and is a failure unless that very page had an error injected.
 *
 * Limits.  A monitor thread per client samples pager_region_stats(): the
 * resident count must stay within limit + slack, except while a lowered
 * limit is being reached or while the swap is (or was, since the last
 * sample under the limit) full, when pagerd rightly runs over it (with
 * fullswap or fulldisk, where the swap fills and drains faster than it is
 * sampled, this oracle is off).  The
 * parent checks the global limit the same way through pagerd's status, and
 * pagerd's anonymous RSS against a bound.
 *
 * Restarts.  The parent plays systemd (tests/harness.c, test_sd_*): it
 * holds pagerd's listening socket and its fd store, and starts each pagerd
 * with the store in LISTEN_FDS (without `restart`, pagerd runs with
 * --fd-store=no under the same stand-in).  Every oracle holds across a
 * restart, with what the README promises and no more: a snapshot running
 * at a restart may fail with ESHUTDOWN (seen by its client: never a wrong
 * image), and a request a killed pagerd had read but not answered is lost,
 * its caller waiting for good; so before a SIGKILL the parent closes a gate
 * every client request passes (req_begin()) and waits until none is in
 * flight.  Faults are no requests: threads fault on through both kinds.
 * Control connections die with a killed pagerd: a client reconnects.
 *
 * At the end every client verifies every page it owns, destroys its regions
 * and exits; then pagerd (the last one) must have no clients, regions,
 * resident pages or swap slots left and hold as many fds as the first one
 * did before its first client, and the store must hold nothing of any
 * client or region.
 *
 * Environment (all optional):
 *   TORTURE_SEED      seed (default: from the clock); printed, with a replay line
 *   TORTURE_SECONDS   how long to run (600)
 *   TORTURE_OPS       comma-separated operation classes (default: all), or
 *                     "all,-snapshot" to take some away
 *   TORTURE_CLIENTS, TORTURE_THREADS, TORTURE_REGIONS (3, 3, 3)
 *   TORTURE_PAGES     largest region in pages (1024)
 *   TORTURE_MEMORY_LIMIT, TORTURE_CLIENT_LIMIT, TORTURE_SWAP_SIZE
 *                     (16M, 8M, 64M; with fullswap the swap is 4M)
 *   TORTURE_DIR       where swap and images go (/var/tmp)
 *   TORTURE_SWAP      another swap path, e.g. rbd:POOL/IMAGE with CEPH_CONF
 *                     naming the cluster (no inject: corruption needs a file)
 *   TORTURE_MAX_RSS   bound on pagerd's anonymous RSS (64M; none with SANITIZE=1)
 *   TORTURE_HANG      seconds without any progress that count as a hang (120)
 *   TORTURE_POOL      pagerd's pool_percent: the compressed pool on (0: off);
 *                     half the pages (by key) are then written compressible
 *                     (8 distinct words, repeated), the others not
 *   TORTURE_SNAPSHOT_CAPTURE  pagerd's snapshot_capture_limit (e.g. 64K:
 *                     snapshot writers wait whenever the images' disk,
 *                     TORTURE_DIR's, lags)
 *
 * With restart, the parent serves the notify socket whenever it waits (pagerd
 * blocks on a full one, and the kernel queues only net.unix.max_dgram_qlen
 * datagrams).
 *
 * Exit: 0 all oracles held, 1 a failure (the first is printed with the seed
 * and the replay command), 77 skipped (kernel or machine lacks a feature).
 * Thread interleavings are not reproducible; the seed fixes each thread's
 * sequence of operations, sizes and limits, so a failure replays as a rule,
 * and shrinking TORTURE_OPS narrows it down.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pager.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define RING 16          /* events kept per page */
#define CHUNK 16         /* pages per ownership chunk */
#define MAX_CLIENTS 16
#define MAX_THREADS 8
#define MAX_REGIONS 8
#define KEEP_IMAGES 2    /* checked images a client keeps to restore from */
#define NEVER UINT64_MAX

#define C1 0xd6e8feb86659fd93ULL
#define C2 0x9e3779b97f4a7c15ULL /* odd */

/* ---- operation classes --------------------------------------------------- */

enum op {
	OP_WRITE, OP_READ, OP_RMW, OP_DISCARD, OP_LIMIT, OP_SNAPSHOT,
	OP_RESTORE, OP_RECREATE, OP_INJECT,
	NTHREAD_OPS,
	OP_KILL = NTHREAD_OPS, OP_STALL, OP_RESTART, OP_FULLSWAP, OP_FULLDISK,
	NOPS
};

static const char *const op_name[NOPS] = {
	"write", "read", "rmw", "discard", "limit", "snapshot", "restore",
	"recreate", "inject", "kill", "stall", "restart", "fullswap", "fulldisk",
};
/* Relative weights of the thread operations. */
static const unsigned op_weight[NTHREAD_OPS] = {
	[OP_WRITE] = 400, [OP_READ] = 300, [OP_RMW] = 200, [OP_DISCARD] = 20,
	[OP_LIMIT] = 4, [OP_SNAPSHOT] = 3, [OP_RESTORE] = 2, [OP_RECREATE] = 2,
	[OP_INJECT] = 6,
};

/* ---- configuration ------------------------------------------------------- */

static struct {
	uint64_t seed;
	unsigned seconds, clients, threads, regions, max_pages, hang_s;
	uint64_t memory_limit, client_limit, swap_size, max_rss;
	unsigned pool;
	int fault_threads;   /* TORTURE_FAULT_THREADS: pagerd's --fault-threads (-1: its default) */
	uint64_t capture;   /* snapshot_capture_limit, 0: pagerd's default */
	bool ops[NOPS];
	char ops_str[256];
	char dir[128];
} cfg;

static size_t ps;
static uint64_t gen_inv; /* C2^-1 mod 2^64 */
static struct test_sd sd;      /* systemd, and the current pagerd */
static char work[160];   /* this run's directory: swap, images, pagerd.log */

/* ---- shared counters (MAP_SHARED, written by clients, read by parent) ---- */

struct cstats {
	_Atomic uint64_t ops[NOPS];
	_Atomic uint64_t bytes_verified, pages_verified;
	_Atomic uint64_t snapshots_checked, snapshots_eio, snapshots_shutdown;
	_Atomic uint64_t snap_pages_undecided;
	_Atomic uint64_t restores, restore_pages_checked;
	_Atomic uint64_t injected, sigbus;
	_Atomic uint64_t limit_samples, limit_waits;
	_Atomic uint64_t heartbeat;
	_Atomic int cur_op[MAX_THREADS];
	_Atomic int inflight;        /* requests sent, not yet answered */
};

struct shared {
	_Atomic int stop;
	_Atomic int failed;
	_Atomic uint64_t restarts;   /* twice per restart: odd while it runs */
	_Atomic int gate;            /* closed: no new request (req_begin) */
	struct cstats c[MAX_CLIENTS];
	struct cstats dead; /* what killed clients had done */
};
static struct shared *sh;

/* ---- small helpers --------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

struct rng { uint64_t s; };

static uint64_t rnd(struct rng *r)
{
	r->s += 0x9e3779b97f4a7c15ULL;
	return mix64(r->s);
}

static uint64_t rnd_below(struct rng *r, uint64_t n)
{
	return n ? rnd(r) % n : 0;
}

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int client_idx = -1; /* -1 in the parent */

static void failf(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void failf(const char *fmt, ...)
{
	char buf[4096];
	va_list ap;
	int n;

	n = snprintf(buf, sizeof(buf), "torture: FAIL (%s %d, seed %" PRIu64 "): ",
		     client_idx < 0 ? "parent" : "client", client_idx, cfg.seed);
	va_start(ap, fmt);
	vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s\n", buf);
	fflush(stderr);
	if (sh)
		atomic_store(&sh->failed, 1);
	if (client_idx >= 0)
		_exit(1);
	exit(1);
}

static uint64_t env_u64(const char *name, uint64_t def, bool size)
{
	const char *v = getenv(name);
	char *end;
	uint64_t x;

	if (!v || !*v)
		return def;
	errno = 0;
	x = strtoull(v, &end, 0);
	if (errno || end == v)
		failf("%s=%s: not a number", name, v);
	if (size && *end) {
		switch (*end) {
		case 'k': case 'K': x <<= 10; break;
		case 'm': case 'M': x <<= 20; break;
		case 'g': case 'G': x <<= 30; break;
		default: failf("%s=%s: bad suffix", name, v);
		}
	} else if (*end) {
		failf("%s=%s: not a number", name, v);
	}
	return x;
}

static void parse_ops(const char *s)
{
	char buf[256], *save = NULL;

	snprintf(buf, sizeof(buf), "%s", s);
	memset(cfg.ops, 0, sizeof(cfg.ops));
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		bool off = *t == '-';
		int i;

		if (off)
			t++;
		if (strcmp(t, "all") == 0) {
			for (i = 0; i < NOPS; i++)
				cfg.ops[i] = !off;
			continue;
		}
		for (i = 0; i < NOPS && strcmp(t, op_name[i]); i++)
			;
		if (i == NOPS)
			failf("TORTURE_OPS: unknown operation class '%s'", t);
		cfg.ops[i] = !off;
	}
	/* Verification runs whatever is chosen: a write must be read back. */
	cfg.ops[OP_READ] = true;
	cfg.ops_str[0] = 0;
	for (int i = 0; i < NOPS; i++)
		if (cfg.ops[i])
			snprintf(cfg.ops_str + strlen(cfg.ops_str),
				 sizeof(cfg.ops_str) - strlen(cfg.ops_str), "%s%s",
				 cfg.ops_str[0] ? "," : "", op_name[i]);
}

static void configure(void)
{
	const char *ops = getenv("TORTURE_OPS");

	ps = (size_t)sysconf(_SC_PAGESIZE);
	gen_inv = C2;
	for (int i = 0; i < 6; i++)
		gen_inv *= 2 - C2 * gen_inv;
	cfg.seed = env_u64("TORTURE_SEED", 0, false);
	if (!cfg.seed) {
		struct timespec t;

		clock_gettime(CLOCK_REALTIME, &t);
		cfg.seed = mix64((uint64_t)t.tv_nsec ^ ((uint64_t)t.tv_sec << 20) ^
				 (uint64_t)getpid()) % 1000000000 + 1;
	}
	cfg.seconds = (unsigned)env_u64("TORTURE_SECONDS", 600, false);
	cfg.clients = (unsigned)env_u64("TORTURE_CLIENTS", 3, false);
	cfg.threads = (unsigned)env_u64("TORTURE_THREADS", 3, false);
	cfg.regions = (unsigned)env_u64("TORTURE_REGIONS", 3, false);
	cfg.max_pages = (unsigned)env_u64("TORTURE_PAGES", 1024, false);
	cfg.hang_s = (unsigned)env_u64("TORTURE_HANG", 120, false);
	cfg.pool = (unsigned)env_u64("TORTURE_POOL", 0, false);
	cfg.fault_threads = getenv("TORTURE_FAULT_THREADS") ?
			    (int)env_u64("TORTURE_FAULT_THREADS", 0, false) : -1;
	cfg.capture = env_u64("TORTURE_SNAPSHOT_CAPTURE", 0, true);
	cfg.memory_limit = env_u64("TORTURE_MEMORY_LIMIT", 16 << 20, true);
	cfg.client_limit = env_u64("TORTURE_CLIENT_LIMIT", 8 << 20, true);
	/* A sanitized pagerd (make check SANITIZE=1 says so in $SANITIZE)
	 * grows with ASan's quarantine and the shadow of every client mapping
	 * it ever touched: no bound then (0), its peak is still reported. */
	cfg.max_rss = env_u64("TORTURE_MAX_RSS",
			      getenv("SANITIZE") && !strcmp(getenv("SANITIZE"), "1") ?
			      0 : 64 << 20, true);
	snprintf(cfg.dir, sizeof(cfg.dir), "%s",
		 getenv("TORTURE_DIR") ? getenv("TORTURE_DIR") : "/var/tmp");
	if (cfg.clients < 1 || cfg.clients > MAX_CLIENTS || cfg.threads < 1 ||
	    cfg.threads > MAX_THREADS || cfg.regions < 1 || cfg.regions > MAX_REGIONS)
		failf("TORTURE_CLIENTS 1..%d, TORTURE_THREADS 1..%d, TORTURE_REGIONS 1..%d",
		      MAX_CLIENTS, MAX_THREADS, MAX_REGIONS);
	if (cfg.max_pages < 2 * CHUNK * cfg.threads)
		cfg.max_pages = 2 * CHUNK * cfg.threads;
	parse_ops(ops && *ops ? ops : "all");
	cfg.swap_size = env_u64("TORTURE_SWAP_SIZE",
				cfg.ops[OP_FULLSWAP] ? 4 << 20 : 64 << 20, true);
}

/* ==== client side =========================================================== */

enum ev_kind { EV_BASE, EV_DATA, EV_ZERO };

struct ev {
	_Atomic uint64_t gen, b, e;
	_Atomic uint32_t kind;
};

struct pstate {
	_Atomic uint64_t started; /* events begun; the last one is the current */
	_Atomic uint8_t injected; /* an error was injected: it may be poisoned */
	_Atomic uint8_t poisoned; /* it raised SIGBUS */
	struct ev ring[RING];
};

/* A checked image: a restore source, and the base of the regions restored
 * from it. */
struct image {
	char path[192];
	int fd;
	uint64_t npages;
	_Atomic int refs;
};

struct rslot {
	pthread_rwlock_t lock;
	pthread_mutex_t snap_mu, limit_mu;
	struct pager_region *r;
	uint8_t *mem;
	uint64_t npages, uid;
	int64_t id;
	struct pstate *pg;
	struct image *base;          /* restored from, or NULL */
	_Atomic uint64_t limit;      /* pages, 0 = none */
	_Atomic uint64_t limit_epoch;
	_Atomic int limit_settled;
	_Atomic int ninjected;
	bool overcommit_ok;          /* monitor: over the limit while swap full */
};

static struct {
	struct pager *p;
	struct rslot reg[MAX_REGIONS];
	struct cstats *st;
	_Atomic uint64_t seq;        /* the stamps of the snapshot oracle */
	_Atomic uint64_t next_uid;
	pthread_mutex_t img_mu;
	struct image *keep[KEEP_IMAGES];
	_Atomic unsigned nimg;
	uint64_t uid;
} cl;

static uint64_t tick(void)
{
	return atomic_fetch_add(&cl.seq, 1) + 1;
}

/*
 * Every request to pagerd passes this gate (REQ()): before it kills pagerd
 * the parent closes it and waits until no request is in flight, because a
 * request the killed daemon had read but not answered is lost for good, as
 * documented.  Faults are no requests: they go on.  Never nested.
 */
static void req_begin(void)
{
	for (;;) {
		atomic_fetch_add(&cl.st->inflight, 1);
		if (!atomic_load(&sh->gate))
			return;
		atomic_fetch_sub(&cl.st->inflight, 1);
		while (atomic_load(&sh->gate))
			usleep(1000);
	}
}

static void req_end(void)
{
	atomic_fetch_sub(&cl.st->inflight, 1);
}

#define REQ(call) ({ req_begin(); __typeof__(call) req_r_ = (call); req_end(); req_r_; })

/* Whether pagerd was restarted (or was being restarted) since the restart
 * counter read r0. */
static bool restarted_since(uint64_t r0)
{
	return (r0 & 1) || atomic_load(&sh->restarts) != r0;
}

static uint64_t pkey(uint64_t ruid, uint64_t page)
{
	return mix64(ruid * 0x2545f4914f6cdd1dULL ^ (page + 1));
}

/* With the pool on, pages of even key repeat 8 words: they compress, and
 * every word still says its page and generation. */
static size_t word_index(uint64_t key, size_t i)
{
	return cfg.pool && !(key & 1) ? i % 8 : i;
}

static uint64_t wordv(uint64_t key, uint64_t gen, size_t i)
{
	return (key ^ (uint64_t)word_index(key, i) * C1) + gen * C2;
}

static uint64_t word_gen(uint64_t key, uint64_t w, size_t i)
{
	return (w - (key ^ (uint64_t)word_index(key, i) * C1)) * gen_inv;
}

/* ---- SIGBUS: caught per thread ---- */

/* volatile: the compiler must not drop the store before a memcpy it
 * believes reads no globals. */
static __thread sigjmp_buf *volatile bus_jmp;
static __thread int cur_op = -1;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	char m[256];
	int n;

	(void)sig; (void)uc;
	if (bus_jmp)
		siglongjmp(*bus_jmp, 1);
	/* Dying anyway: say where, as well as we can. */
	n = snprintf(m, sizeof(m), "torture: FAIL (client %d, seed %" PRIu64 "): SIGBUS "
		     "(code %d) at %p outside a checked access, in operation %s",
		     client_idx, cfg.seed, si->si_code, si->si_addr,
		     cur_op >= 0 ? op_name[cur_op] : "(none)");
	for (unsigned i = 0; i < cfg.regions; i++) {
		struct rslot *s = &cl.reg[i];
		uint8_t *a = si->si_addr;

		if (s->mem && a >= s->mem && a < s->mem + s->npages * ps)
			n += snprintf(m + n, sizeof(m) - (size_t)n, ", region %" PRId64 " page %zu",
				      s->id, (size_t)(a - s->mem) / ps);
	}
	m[n++] = '\n';
	if (write(2, m, (size_t)n) < 0) {}
	_exit(1);
}

/* Copies a page out; -EFAULT if it raised SIGBUS. */
static int read_page(const uint8_t *src, uint8_t *dst)
{
	sigjmp_buf jb;

	if (sigsetjmp(jb, 1)) {
		bus_jmp = NULL;
		return -EFAULT;
	}
	bus_jmp = &jb;
	memcpy(dst, src, ps);
	bus_jmp = NULL;
	return 0;
}

/* Stamps a page with generation gen, word after word, in order (the
 * snapshot oracle's torn pages rely on the order). */
static int write_page(uint8_t *dst, uint64_t key, uint64_t gen)
{
	sigjmp_buf jb;
	volatile uint64_t *w = (volatile uint64_t *)dst;

	if (sigsetjmp(jb, 1)) {
		bus_jmp = NULL;
		return -EFAULT;
	}
	bus_jmp = &jb;
	for (size_t i = 0; i < ps / 8; i++)
		w[i] = wordv(key, gen, i);
	bus_jmp = NULL;
	return 0;
}

/* ---- events ---- */

static struct ev *cur_ev(struct pstate *p)
{
	return &p->ring[(atomic_load(&p->started) - 1) % RING];
}

/* Begins an event (the owner only): recorded, then stamped b, then
 * published; returns it so that the caller stamps e when done. */
static struct ev *ev_begin(struct pstate *p, uint32_t kind)
{
	uint64_t n = atomic_load(&p->started);
	uint64_t gen = atomic_load(&p->ring[(n - 1) % RING].gen) + 1;
	struct ev *e = &p->ring[n % RING];

	atomic_store(&e->gen, gen);
	atomic_store(&e->kind, kind);
	atomic_store(&e->e, NEVER);
	atomic_store(&e->b, tick());
	atomic_store(&p->started, n + 1);
	return e;
}

static void ev_end(struct ev *e)
{
	atomic_store(&e->e, tick());
}

static void pages_init(struct rslot *s, uint32_t kind)
{
	for (uint64_t i = 0; i < s->npages; i++) {
		struct pstate *p = &s->pg[i];

		atomic_store(&p->started, 1);
		atomic_store(&p->injected, 0);
		atomic_store(&p->poisoned, 0);
		atomic_store(&p->ring[0].gen, 0);
		atomic_store(&p->ring[0].kind, kind);
		atomic_store(&p->ring[0].b, 0);
		atomic_store(&p->ring[0].e, 0);
	}
}

/* ---- content checks ---- */

static void image_put(struct image *im)
{
	if (im && atomic_fetch_sub(&im->refs, 1) == 1) {
		char meta[224];

		close(im->fd);
		snprintf(meta, sizeof(meta), "%s.meta", im->path);
		unlink(im->path);
		unlink(meta);
		free(im);
	}
}

static void base_page(const struct rslot *s, uint64_t page, uint8_t *buf)
{
	ssize_t n = pread(s->base->fd, buf, ps, (off_t)(page * ps));

	if (n < 0)
		failf("pread %s: %s", s->base->path, strerror(errno));
	if ((size_t)n < ps)
		memset(buf + n, 0, ps - (size_t)n);
}

/* Whether words [from, end) of buf are what event (gen, kind) wrote. */
static bool matches_from(const struct rslot *s, uint64_t page, const uint8_t *buf,
			 uint64_t gen, uint32_t kind, size_t from, uint8_t *scratch)
{
	const uint64_t *w = (const uint64_t *)buf;
	uint64_t key = pkey(s->uid, page);

	if (kind == EV_ZERO || (kind == EV_BASE && !s->base)) {
		for (size_t i = from; i < ps / 8; i++)
			if (w[i])
				return false;
		return true;
	}
	if (kind == EV_BASE) {
		base_page(s, page, scratch);
		return memcmp(buf + from * 8, scratch + from * 8, ps - from * 8) == 0;
	}
	for (size_t i = from; i < ps / 8; i++)
		if (w[i] != wordv(key, gen, i))
			return false;
	return true;
}

/* The first word of buf that is not event (gen, kind)'s. */
static size_t first_mismatch(const struct rslot *s, uint64_t page, const uint8_t *buf,
			     uint64_t gen, uint32_t kind, uint8_t *scratch)
{
	const uint64_t *w = (const uint64_t *)buf, *b = (const uint64_t *)scratch;
	uint64_t key = pkey(s->uid, page);
	size_t i;

	if (kind == EV_BASE && s->base)
		base_page(s, page, scratch);
	for (i = 0; i < ps / 8; i++) {
		uint64_t want = kind == EV_DATA ? wordv(key, gen, i) :
				kind == EV_BASE && s->base ? b[i] : 0;
		if (w[i] != want)
			break;
	}
	return i;
}

/* What a page that is not what it should be holds, in words. */
static void describe(const struct rslot *s, uint64_t page, const uint8_t *buf,
		     char *out, size_t len)
{
	const uint64_t *w = (const uint64_t *)buf;
	uint64_t key = pkey(s->uid, page), g0 = word_gen(key, w[0], 0);
	size_t zeros = 0, same = 0, n = ps / 8;

	for (size_t i = 0; i < n; i++) {
		zeros += !w[i];
		same += word_gen(key, w[i], i) == g0;
	}
	if (zeros == n)
		snprintf(out, len, "all zeros");
	else if (same == n)
		snprintf(out, len, "generation %" PRIu64 " (all words)", g0);
	else if (g0 < (1ULL << 40))
		snprintf(out, len, "word 0 of generation %" PRIu64 ", %zu of %zu words alike, %zu zero",
			 g0, same, n, zeros);
	else
		snprintf(out, len, "foreign data (word 0 %#" PRIx64 "), %zu zero words", w[0], zeros);
}

static const char *kind_name(uint32_t k)
{
	return k == EV_DATA ? "data" : k == EV_ZERO ? "discarded" : "initial";
}

/* ---- access by the owner ---- */

/* Reads page `page` of slot s and checks it against its current event.
 * Returns 0, or -EFAULT when it raised SIGBUS on a page with an injected
 * error (anything else is a failure). */
static int check_page(struct rslot *s, uint64_t page, uint8_t *buf, uint8_t *scratch,
		      const char *what)
{
	struct pstate *p = &s->pg[page];
	struct ev *e = cur_ev(p);
	uint64_t gen = atomic_load(&e->gen);
	uint32_t kind = atomic_load(&e->kind);

	if (atomic_load(&p->poisoned))
		return -EFAULT;
	if (read_page(s->mem + page * ps, buf) < 0) {
		atomic_fetch_add(&cl.st->sigbus, 1);
		if (!atomic_load(&p->injected))
			failf("%s: SIGBUS on region %" PRId64 " page %" PRIu64
			      " (generation %" PRIu64 ", %s), where no error was injected",
			      what, s->id, page, gen, kind_name(kind));
		atomic_store(&p->poisoned, 1);
		return -EFAULT;
	}
	if (!matches_from(s, page, buf, gen, kind, 0, scratch)) {
		char d[160];

		describe(s, page, buf, d, sizeof(d));
		failf("%s: region %" PRId64 " page %" PRIu64 " should hold %s generation %"
		      PRIu64 " but holds %s (first wrong word %zu)%s",
		      what, s->id, page, kind_name(kind), gen, d,
		      first_mismatch(s, page, buf, gen, kind, scratch),
		      atomic_load(&p->injected) ? " [error injected there]" : "");
	}
	atomic_fetch_add(&cl.st->bytes_verified, ps);
	atomic_fetch_add(&cl.st->pages_verified, 1);
	if (kind == EV_BASE && s->base)
		atomic_fetch_add(&cl.st->restore_pages_checked, 1);
	return 0;
}

static int write_next(struct rslot *s, uint64_t page)
{
	struct pstate *p = &s->pg[page];
	struct ev *e;

	if (atomic_load(&p->poisoned))
		return -EFAULT;
	e = ev_begin(p, EV_DATA);
	if (write_page(s->mem + page * ps, pkey(s->uid, page), atomic_load(&e->gen)) < 0) {
		atomic_fetch_add(&cl.st->sigbus, 1);
		if (!atomic_load(&p->injected))
			failf("write: SIGBUS on region %" PRId64 " page %" PRIu64
			      ", where no error was injected", s->id, page);
		/* Poisoned under the writer's feet: the page is lost as a
		 * whole, which is what injection may do. */
		atomic_store(&p->poisoned, 1);
		ev_end(e);
		return -EFAULT;
	}
	ev_end(e);
	return 0;
}

/* ---- regions ---- */

static uint64_t random_limit(struct rng *r, uint64_t npages)
{
	switch (rnd_below(r, 4)) {
	case 0: return 0;
	case 1: return npages / 2 + 1;
	default: return 16 + rnd_below(r, npages / 2 + 1);
	}
}

static void slot_setup(struct rslot *s, struct pager_region *r, struct image *base,
		       uint64_t limit)
{
	s->r = r;
	s->mem = pager_region_addr(r);
	s->npages = pager_region_len(r) / ps;
	s->id = pager_region_id(r);
	s->uid = atomic_fetch_add(&cl.next_uid, 1);
	s->pg = calloc(s->npages, sizeof(*s->pg));
	if (!s->pg)
		failf("out of memory");
	s->base = base;
	atomic_store(&s->limit, limit);
	atomic_fetch_add(&s->limit_epoch, 1);
	atomic_store(&s->limit_settled, 1);
	atomic_store(&s->ninjected, 0);
	s->overcommit_ok = false;
	pages_init(s, EV_BASE);
}

static void slot_create(struct rslot *s, struct rng *r)
{
	uint64_t npages = 2 * CHUNK * cfg.threads +
			  rnd_below(r, cfg.max_pages - 2 * CHUNK * cfg.threads + 1);
	uint64_t limit = random_limit(r, npages);
	struct pager_region_opts o = { .sz = sizeof(o), .name = "torture",
				       .memory_limit = limit * ps };
	struct pager_region *reg;
	int e = REQ(pager_region_create(cl.p, npages * ps, &o, &reg));

	if (e < 0)
		failf("pager_region_create(%" PRIu64 " pages): %s", npages, strerror(-e));
	slot_setup(s, reg, NULL, limit);
}

static void slot_drop(struct rslot *s)
{
	int e = REQ(pager_region_destroy(s->r));

	if (e < 0)
		failf("pager_region_destroy(%" PRId64 "): %s", s->id, strerror(-e));
	free(s->pg);
	s->pg = NULL;
	image_put(s->base);
	s->base = NULL;
	s->r = NULL;
}

/* ---- status from pagerd ---- */

static bool swap_nearly_full(const struct proto_reply *st)
{
	/* With a swap made to fill up (or fail), it fills and drains faster
	 * than anyone samples it: pagerd may rightly be over a limit at any
	 * time, and the limit oracles are off. */
	if (cfg.ops[OP_FULLSWAP] || cfg.ops[OP_FULLDISK])
		return true;
	/* Eviction needs free slots: a swap with little room left (or with
	 * no room at all for a run) lets pagerd run over its limits. */
	return st->swap_total && st->swap_used + 256 >= st->swap_total;
}

static int parent_status(struct proto_reply *st);

static int status_now(struct proto_reply *st)
{
	if (client_idx < 0)
		return parent_status(st);
	return REQ(test_status(sd.sock, st));
}

static uint64_t slack(uint64_t limit)
{
	return limit / 16 + 8;
}

/* ---- the thread operations ---- */

struct thr {
	int idx;
	struct rng rng;
	uint8_t *buf, *scratch;
	int ctl; /* control connection for injection */
	uint64_t ctl_restarts; /* sh->restarts when it was made */
};

static uint64_t owned_page(struct thr *t, const struct rslot *s)
{
	uint64_t nchunks = (s->npages + CHUNK - 1) / CHUNK;
	uint64_t mine = (nchunks - (uint64_t)t->idx + cfg.threads - 1) / cfg.threads;
	uint64_t c = (uint64_t)t->idx + rnd_below(&t->rng, mine) * cfg.threads;
	uint64_t p = c * CHUNK + rnd_below(&t->rng, CHUNK);

	return p < s->npages ? p : c * CHUNK; /* the last chunk may be short */
}

static bool owns(const struct thr *t, uint64_t page)
{
	return (page / CHUNK) % cfg.threads == (uint64_t)t->idx;
}

static void op_rw(struct thr *t, struct rslot *s, enum op op)
{
	uint64_t page = owned_page(t, s);

	if (op != OP_WRITE)
		check_page(s, page, t->buf, t->scratch, op_name[op]);
	if (op != OP_READ)
		write_next(s, page);
}

static void op_discard(struct thr *t, struct rslot *s)
{
	uint64_t page = owned_page(t, s), start = page - page % CHUNK, end, first, n;
	struct ev *evs[CHUNK];
	int e;

	/* Part of one chunk of this thread's (the last chunk may be short). */
	end = start + CHUNK < s->npages ? start + CHUNK : s->npages;
	first = start + rnd_below(&t->rng, end - start);
	n = 1 + rnd_below(&t->rng, end - first);
	for (uint64_t i = 0; i < n; i++)
		evs[i] = atomic_load(&s->pg[first + i].poisoned) ? NULL :
			 ev_begin(&s->pg[first + i], EV_ZERO);
	e = REQ(pager_region_discard(s->r, first * ps, n * ps));
	if (e < 0)
		failf("pager_region_discard(%" PRId64 ", page %" PRIu64 "+%" PRIu64 "): %s",
		      s->id, first, n, strerror(-e));
	for (uint64_t i = 0; i < n; i++)
		if (evs[i])
			ev_end(evs[i]);
	/* Read some back at once: zeros, not the old data. */
	for (uint64_t i = 0; i < n; i += 3)
		check_page(s, first + i, t->buf, t->scratch, "after discard");
}

static void limit_set(struct rslot *s, uint64_t pages)
{
	int e;

	atomic_store(&s->limit_settled, 0);
	atomic_fetch_add(&s->limit_epoch, 1);
	e = REQ(pager_region_set_limit(s->r, pages * ps));
	if (e < 0)
		failf("pager_region_set_limit(%" PRId64 ", %" PRIu64 " pages): %s",
		      s->id, pages, strerror(-e));
	atomic_store(&s->limit, pages);
}

/* Waits (an event: pagerd's resident count) until the region is within its
 * limit; a swap that fills meanwhile excuses it. */
static void limit_reach(struct rslot *s, uint64_t pages)
{
	double t0 = now_s();
	struct pager_region_stats rs = { .sz = sizeof(rs) };

	for (;;) {
		struct proto_reply st;
		int e = REQ(pager_region_stats(s->r, &rs));

		if (e < 0)
			failf("pager_region_stats(%" PRId64 "): %s", s->id, strerror(-e));
		if (!pages || rs.resident <= pages + slack(pages))
			break;
		if (status_now(&st) == 0 && swap_nearly_full(&st))
			break;
		if (atomic_load(&sh->stop) && now_s() - t0 > 5)
			break;
		if (now_s() - t0 > cfg.hang_s)
			failf("region %" PRId64 ": limit lowered to %" PRIu64
			      " pages, still %" PRIu64 " resident after %us",
			      s->id, pages, rs.resident, cfg.hang_s);
		usleep(2000);
	}
	atomic_fetch_add(&cl.st->limit_waits, 1);
	atomic_store(&s->limit_settled, 1);
}

static void op_limit(struct thr *t, struct rslot *s)
{
	uint64_t low, back;

	if (pthread_mutex_trylock(&s->limit_mu))
		return;
	low = rnd_below(&t->rng, 2) ? 1 : 1 + rnd_below(&t->rng, 32);
	back = random_limit(&t->rng, s->npages);
	limit_set(s, low);
	limit_reach(s, low);
	limit_set(s, back);
	/* Back to a limit below the low one (up to 32 pages, slack on top):
	 * that is a lowered limit too, held only once reached. */
	if (back && back < low + slack(low))
		limit_reach(s, back);
	atomic_store(&s->limit_settled, 1);
	pthread_mutex_unlock(&s->limit_mu);
}

static int inject(struct thr *t, int64_t region_id, uint64_t page, uint32_t kind)
{
	for (;;) {
		struct proto_msg m = { 0 };
		int e;

		if (t->ctl < 0) {
			t->ctl_restarts = atomic_load(&sh->restarts);
			t->ctl = REQ(test_control_connect(sd.sock));
			if (t->ctl < 0)
				failf("control connection: %s", strerror(-t->ctl));
		}
		m.body.test_inject.region_id = (uint64_t)region_id;
		m.body.test_inject.page = page;
		m.body.test_inject.kind = kind;
		e = REQ(test_raw_call(t->ctl, &m, PROTO_TEST_INJECT, 0, NULL, 0, NULL));
		/* A killed pagerd takes control connections with it (they are
		 * stored only at a graceful hand-over). */
		if ((e == -ECONNRESET || e == -EPIPE) && restarted_since(t->ctl_restarts)) {
			close(t->ctl);
			t->ctl = -1;
			continue;
		}
		return e;
	}
}

static void op_inject(struct thr *t, struct rslot *s)
{
	/* A page in swap, which not every page is: a few tries. */
	for (int k = 0; k < 16; k++) {
		uint64_t page = owned_page(t, s);
		struct pstate *p = &s->pg[page];
		uint32_t kind = rnd_below(&t->rng, 2) ? PROTO_INJECT_EIO : PROTO_INJECT_CORRUPT;
		int e;

		if (!owns(t, page) || atomic_load(&p->injected) ||
		    atomic_load(&cur_ev(p)->kind) != EV_DATA)
			continue;
		/* Marked first: a snapshot copying it may meet the error
		 * before this call returns. */
		atomic_fetch_add(&s->ninjected, 1);
		atomic_store(&p->injected, 1);
		e = inject(t, s->id, page, kind);
		if (e == 0) {
			atomic_fetch_add(&cl.st->injected, 1);
			return;
		}
		atomic_store(&p->injected, 0);
		atomic_fetch_sub(&s->ninjected, 1);
		if (e != -ENODATA)
			failf("inject region %" PRId64 " page %" PRIu64 ": %s",
			      s->id, page, strerror(-e));
	}
}

/* ---- the snapshot oracle ---- */

struct hev { uint64_t gen, b, e; uint32_t kind; };

struct hist {
	uint64_t first;    /* index of ev[0] */
	unsigned n;
	bool wrapped;      /* older events are gone */
	struct hev ev[RING];
};

/* Copies a page's events while its owner may be adding more: those the
 * owner may have overwritten meanwhile are dropped. */
static void hist_copy(struct pstate *p, struct hist *h)
{
	uint64_t s1 = atomic_load(&p->started), s2, lo = s1 > RING ? s1 - RING : 0;

	for (uint64_t i = lo; i < s1; i++) {
		struct ev *e = &p->ring[i % RING];
		struct hev *x = &h->ev[i - lo];

		x->gen = atomic_load(&e->gen);
		x->kind = atomic_load(&e->kind);
		x->b = atomic_load(&e->b);
		x->e = atomic_load(&e->e);
	}
	s2 = atomic_load(&p->started);
	/* The owner writing event s2 - 1 (and any before it since s1) reused
	 * the slots of events s2 - 1 - RING and older. */
	h->first = lo;
	h->n = (unsigned)(s1 - lo);
	if (s2 + 1 > RING + lo) {
		uint64_t drop = s2 + 1 - RING - lo;

		if (drop > h->n)
			drop = h->n;
		memmove(h->ev, h->ev + drop, (h->n - drop) * sizeof(h->ev[0]));
		h->first += drop;
		h->n -= (unsigned)drop;
	}
	h->wrapped = h->first > 0;
}

struct ival { uint64_t lo, hi; };
#define MAX_IV 64

static int iv_cmp(const void *x, const void *y)
{
	const struct ival *a = x, *b = y;

	return a->lo < b->lo ? -1 : a->lo > b->lo;
}

/*
 * feasible := feasible ∩ (union of a); returns how many are left.
 *
 * The result is kept sorted and merged: a page's candidates overlap (a
 * zero page matches both its first content and a later discard, over the
 * discard's stamps), and unmerged, each such page doubled the list, whose
 * cap then silently dropped its later (higher) intervals: images that are
 * one cut failed, with "the pages before it need s0..s0 (and more)".  If
 * more than MAX_IV disjoint intervals remain, the two closest are joined:
 * a looser bound, never a wrong one.
 */
static unsigned iv_intersect(struct ival *f, unsigned nf, const struct ival *a, unsigned na)
{
	struct ival out[MAX_IV * RING];
	unsigned n = 0, m = 0;

	for (unsigned i = 0; i < nf; i++)
		for (unsigned j = 0; j < na; j++) {
			uint64_t lo = f[i].lo > a[j].lo ? f[i].lo : a[j].lo;
			uint64_t hi = f[i].hi < a[j].hi ? f[i].hi : a[j].hi;

			if (lo <= hi)
				out[n++] = (struct ival){ lo, hi };
		}
	qsort(out, n, sizeof(out[0]), iv_cmp);
	for (unsigned i = 0; i < n; i++) {
		if (m && out[i].lo <= out[m - 1].hi + 1) {
			if (out[i].hi > out[m - 1].hi)
				out[m - 1].hi = out[i].hi;
		} else {
			out[m++] = out[i];
		}
	}
	while (m > MAX_IV) {
		unsigned k = 0;

		for (unsigned i = 1; i + 1 < m; i++)
			if (out[i + 1].lo - out[i].hi < out[k + 1].lo - out[k].hi)
				k = i;
		out[k].hi = out[k + 1].hi;
		memmove(out + k + 1, out + k + 2, (m - k - 2) * sizeof(out[0]));
		m--;
	}
	memcpy(f, out, m * sizeof(*f));
	return m;
}

/* The instants (stamps) for which image page `page` (in buf) could hold
 * what it holds, given its events h (see the top of the file): into a[],
 * returns how many intervals. */
static unsigned page_candidates(struct thr *t, struct rslot *s, uint64_t page,
				const uint8_t *buf, const struct hist *hp, struct ival *a)
{
	unsigned na = 0;

	for (unsigned j = 0; j < hp->n; j++) {
		const struct hev *x = &hp->ev[j];
		uint64_t next_e = j + 1 < hp->n ? hp->ev[j + 1].e : NEVER;
		size_t k;

		/* Its stores all before the instant, none of the next
		 * event's: b_j <= S < e_{j+1} (the next write may have begun
		 * before the instant and waited in a fault past it: only
		 * its end bounds S). */
		if (matches_from(s, page, buf, x->gen, x->kind, 0, t->scratch)) {
			a[na++] = (struct ival){ x->b, next_e - 1 };
			continue;
		}
		if (j == 0)
			continue;
		/* Torn: a prefix of x over a suffix of the one before. */
		k = first_mismatch(s, page, buf, x->gen, x->kind, t->scratch);
		if (k > 0 && matches_from(s, page, buf, hp->ev[j - 1].gen,
					  hp->ev[j - 1].kind, k, t->scratch))
			a[na++] = (struct ival){ x->b, x->e - 1 };
	}
	return na;
}

static void page_events(const struct hist *hp, char *evs, size_t len)
{
	evs[0] = 0;
	for (unsigned j = 0; j < hp->n; j++)
		snprintf(evs + strlen(evs), len - strlen(evs),
			 " [%s g%" PRIu64 " %" PRIu64 "..%" PRIu64 "]",
			 kind_name(hp->ev[j].kind), hp->ev[j].gen,
			 hp->ev[j].b, hp->ev[j].e);
}

/*
 * Checks that the image at `path` is one cut of slot s between stamps s0
 * and s1 (see the top of the file), given each page's events as copied
 * right after s1.
 */
static void check_image(struct thr *t, struct rslot *s, const char *path,
			uint64_t s0, uint64_t s1, struct hist *h)
{
	struct ival feas[MAX_IV] = { { s0, s1 - 1 } };
	unsigned nf = 1;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat sb;

	if (fd < 0)
		failf("snapshot image %s: %s", path, strerror(errno));
	if (fstat(fd, &sb) < 0 || (uint64_t)sb.st_size != s->npages * ps)
		failf("snapshot image %s: %lld bytes, region has %" PRIu64,
		      path, (long long)sb.st_size, s->npages * ps);
	for (uint64_t page = 0; page < s->npages; page++) {
		struct hist *hp = &h[page];
		struct ival a[RING];
		unsigned na;
		ssize_t got = pread(fd, t->buf, ps, (off_t)(page * ps));

		if (got != (ssize_t)ps)
			failf("snapshot image %s: short read at page %" PRIu64, path, page);
		na = page_candidates(t, s, page, t->buf, hp, a);
		if (!na) {
			char d[160];

			/* Lost events could explain it, unless the oldest
			 * kept one was over before the snapshot began. */
			if (hp->wrapped && hp->n && hp->ev[0].e > s0) {
				atomic_fetch_add(&cl.st->snap_pages_undecided, 1);
				continue;
			}
			describe(s, page, t->buf, d, sizeof(d));
			failf("snapshot of region %" PRId64 " (%s): page %" PRIu64 " holds %s, "
			      "which none of its writes around the instant wrote (last: %s "
			      "generation %" PRIu64 ", stamps %" PRIu64 "..%" PRIu64
			      "; snapshot start %" PRIu64 "..%" PRIu64 ")",
			      s->id, path, page, d,
			      hp->n ? kind_name(hp->ev[hp->n - 1].kind) : "?",
			      hp->n ? hp->ev[hp->n - 1].gen : 0,
			      hp->n ? hp->ev[hp->n - 1].b : 0,
			      hp->n ? hp->ev[hp->n - 1].e : 0, s0, s1);
		}
		struct ival before = feas[0];
		unsigned nbefore = nf;

		nf = iv_intersect(feas, nf, a, na);
		if (!nf) {
			char d[160], evs[512], evs2[2048] = "";

			describe(s, page, t->buf, d, sizeof(d));
			page_events(hp, evs, sizeof(evs));
			/* The other side: the earlier pages that, in turn,
			 * ruled out the instants this one allows (up to 3
			 * named, the last the one that left none). */
			struct ival g[MAX_IV];
			unsigned ng = na, named = 0;

			memcpy(g, a, na * sizeof(a[0]));
			for (uint64_t q = 0; q < page && ng; q++) {
				struct ival b[RING], f[MAX_IV];
				unsigned nb, nn;
				char dq[160], eq[512];

				if (pread(fd, t->buf, ps, (off_t)(q * ps)) != (ssize_t)ps)
					break;
				nb = page_candidates(t, s, q, t->buf, &h[q], b);
				if (!nb)
					continue;
				memcpy(f, g, ng * sizeof(g[0]));
				nn = iv_intersect(f, ng, b, nb);
				if (nn == ng && (!nn || (f[0].lo == g[0].lo && f[nn - 1].hi == g[ng - 1].hi)))
					continue;
				describe(s, q, t->buf, dq, sizeof(dq));
				page_events(&h[q], eq, sizeof(eq));
				if (!nn || named < 2) {
					snprintf(evs2 + strlen(evs2), sizeof(evs2) - strlen(evs2),
						 "; page %" PRIu64 " holds %s (%s)", q, dq, eq);
					named++;
				}
				memcpy(g, f, nn * sizeof(f[0]));
				ng = nn;
			}
			failf("snapshot of region %" PRId64 " (%s) is no single cut: page %"
			      PRIu64 " holds %s, possible only with the instant in %"
			      PRIu64 "..%" PRIu64 ", but the pages before it need %"
			      PRIu64 "..%" PRIu64 "%s (snapshot start %" PRIu64 "..%" PRIu64
			      "); its events:%s; ruled out by%s",
			      s->id, path, page, d, a[0].lo, a[na - 1].hi,
			      before.lo, before.hi, nbefore > 1 ? " (and more)" : "",
			      s0, s1, evs, evs2);
		}
	}
	close(fd);
}

static void keep_image(const char *path, uint64_t npages)
{
	struct image *im = calloc(1, sizeof(*im)), *old;

	if (!im)
		failf("out of memory");
	snprintf(im->path, sizeof(im->path), "%s", path);
	im->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (im->fd < 0)
		failf("open %s: %s", path, strerror(errno));
	im->npages = npages;
	atomic_store(&im->refs, 1);
	pthread_mutex_lock(&cl.img_mu);
	old = cl.keep[0];
	memmove(cl.keep, cl.keep + 1, (KEEP_IMAGES - 1) * sizeof(cl.keep[0]));
	cl.keep[KEEP_IMAGES - 1] = im;
	pthread_mutex_unlock(&cl.img_mu);
	image_put(old);
}

static void remove_image(const char *path)
{
	char meta[224];

	snprintf(meta, sizeof(meta), "%s.meta", path);
	unlink(path);
	unlink(meta);
}

static void op_snapshot(struct thr *t, struct rslot *s)
{
	char path[192];
	struct pager_snapshot_progress pr = { .sz = sizeof(pr) };
	struct hist *h;
	uint64_t s0, s1, r0;
	double t0;
	int e;

	if (pthread_mutex_trylock(&s->snap_mu))
		return;
	r0 = atomic_load(&sh->restarts);
	snprintf(path, sizeof(path), "%s/img.%" PRIu64 ".%u", work, cl.uid,
		 atomic_fetch_add(&cl.nimg, 1));
	h = malloc(s->npages * sizeof(*h));
	if (!h)
		failf("out of memory");
	s0 = tick();
	e = REQ(pager_region_snapshot_start(s->r, path, NULL));
	s1 = tick();
	if (e < 0) {
		if (e == -EIO && atomic_load(&s->ninjected)) {
			atomic_fetch_add(&cl.st->snapshots_eio, 1);
			goto out;
		}
		/* A restart ends a running snapshot, and says so. */
		if (e == -ESHUTDOWN && restarted_since(r0)) {
			atomic_fetch_add(&cl.st->snapshots_shutdown, 1);
			goto out;
		}
		failf("pager_region_snapshot_start(%" PRId64 "): %s", s->id, strerror(-e));
	}
	for (uint64_t p = 0; p < s->npages; p++)
		hist_copy(&s->pg[p], &h[p]);
	t0 = now_s();
	while ((e = REQ(pager_region_snapshot_poll(s->r, &pr))) == 0) {
		if (now_s() - t0 > cfg.hang_s)
			failf("snapshot of region %" PRId64 ": %" PRIu64 " of %" PRIu64
			      " pages after %us", s->id, pr.pages_done, pr.pages_total, cfg.hang_s);
		usleep(2000);
	}
	if (e == -ESHUTDOWN && restarted_since(r0)) {
		atomic_fetch_add(&cl.st->snapshots_shutdown, 1);
		goto out;
	}
	if (e < 0)
		failf("pager_region_snapshot_poll(%" PRId64 "): %s", s->id, strerror(-e));
	if (pr.status < 0) {
		if (pr.status == -EIO && atomic_load(&s->ninjected)) {
			atomic_fetch_add(&cl.st->snapshots_eio, 1);
			goto out;
		}
		if (pr.status == -ESHUTDOWN && restarted_since(r0)) {
			atomic_fetch_add(&cl.st->snapshots_shutdown, 1);
			goto out;
		}
		failf("snapshot of region %" PRId64 " failed: %s", s->id, strerror(-pr.status));
	}
	check_image(t, s, path, s0, s1, h);
	atomic_fetch_add(&cl.st->snapshots_checked, 1);
	if (cfg.ops[OP_RESTORE]) {
		keep_image(path, s->npages);
		path[0] = 0;
	}
out:
	if (path[0])
		remove_image(path);
	free(h);
	pthread_mutex_unlock(&s->snap_mu);
}

static struct image *pick_image(struct thr *t)
{
	struct image *im;

	pthread_mutex_lock(&cl.img_mu);
	im = cl.keep[rnd_below(&t->rng, KEEP_IMAGES)];
	if (im)
		atomic_fetch_add(&im->refs, 1);
	pthread_mutex_unlock(&cl.img_mu);
	return im;
}

/* Whole-region operations: the slot's lock is held for writing. */
static void op_replace(struct thr *t, struct rslot *s, enum op op)
{
	struct image *im = NULL;

	if (op == OP_RESTORE && !(im = pick_image(t)))
		return;
	slot_drop(s);
	if (op == OP_RECREATE) {
		slot_create(s, &t->rng);
		return;
	}
	uint64_t limit = random_limit(&t->rng, im->npages);
	struct pager_region_opts o = { .sz = sizeof(o), .name = "torture-restored",
				       .memory_limit = limit * ps,
				       .flags = rnd_below(&t->rng, 2) ? PAGER_REGION_NO_PREFETCH : 0 };
	struct pager_region *r;
	int e = REQ(pager_region_restore(cl.p, im->path, &o, &r));

	if (e < 0)
		failf("pager_region_restore(%s): %s", im->path, strerror(-e));
	if (pager_region_len(r) != im->npages * ps)
		failf("restored %s: %zu bytes, image has %" PRIu64, im->path,
		      pager_region_len(r), im->npages * ps);
	slot_setup(s, r, im, limit);
	atomic_fetch_add(&cl.st->restores, 1);
}

static enum op pick_op(struct thr *t)
{
	unsigned total = 0, x;

	for (int i = 0; i < NTHREAD_OPS; i++)
		total += cfg.ops[i] ? op_weight[i] : 0;
	x = (unsigned)rnd_below(&t->rng, total);
	for (int i = 0; i < NTHREAD_OPS; i++) {
		if (!cfg.ops[i])
			continue;
		if (x < op_weight[i])
			return (enum op)i;
		x -= op_weight[i];
	}
	return OP_READ;
}

/* Every page this thread owns, read and checked. */
static void verify_all(struct thr *t, struct rslot *s)
{
	for (uint64_t p = 0; p < s->npages; p++)
		if (owns(t, p))
			check_page(s, p, t->buf, t->scratch, "final check");
}

static void *thread_main(void *arg)
{
	struct thr *t = arg;

	while (!atomic_load(&sh->stop)) {
		enum op op = pick_op(t);
		struct rslot *s = &cl.reg[rnd_below(&t->rng, cfg.regions)];
		bool whole = op == OP_RESTORE || op == OP_RECREATE;

		atomic_store(&cl.st->cur_op[t->idx], op);
		cur_op = op;
		if (whole)
			pthread_rwlock_wrlock(&s->lock);
		else
			pthread_rwlock_rdlock(&s->lock);
		switch (op) {
		case OP_WRITE: case OP_READ: case OP_RMW: op_rw(t, s, op); break;
		case OP_DISCARD: op_discard(t, s); break;
		case OP_LIMIT: op_limit(t, s); break;
		case OP_SNAPSHOT: op_snapshot(t, s); break;
		case OP_RESTORE: case OP_RECREATE: op_replace(t, s, op); break;
		case OP_INJECT: op_inject(t, s); break;
		default: break;
		}
		pthread_rwlock_unlock(&s->lock);
		atomic_fetch_add(&cl.st->ops[op], 1);
		atomic_fetch_add(&cl.st->heartbeat, 1);
	}
	atomic_store(&cl.st->cur_op[t->idx], -1);
	return NULL;
}

/* Samples every region's resident count against its limit. */
static void *monitor_main(void *arg)
{
	(void)arg;
	while (!atomic_load(&sh->stop)) {
		struct proto_reply st;
		bool full;

		if (status_now(&st) < 0) {
			usleep(10000);
			continue;
		}
		full = swap_nearly_full(&st);
		for (unsigned i = 0; i < cfg.regions; i++) {
			struct rslot *s = &cl.reg[i];
			struct pager_region_stats rs = { .sz = sizeof(rs) };
			uint64_t ep, lim;
			bool settled;

			if (pthread_rwlock_tryrdlock(&s->lock))
				continue;
			ep = atomic_load(&s->limit_epoch);
			settled = atomic_load(&s->limit_settled);
			lim = atomic_load(&s->limit);
			if (REQ(pager_region_stats(s->r, &rs)) < 0)
				failf("pager_region_stats(%" PRId64 ") failed", s->id);
			if (full)
				s->overcommit_ok = true;
			if (lim && rs.resident <= lim + slack(lim))
				s->overcommit_ok = false;
			if (lim && settled && ep == atomic_load(&s->limit_epoch) &&
			    atomic_load(&s->limit_settled) && !s->overcommit_ok &&
			    rs.resident > lim + slack(lim))
				failf("region %" PRId64 ": %" PRIu64 " pages resident, limit %"
				      PRIu64 " (+%" PRIu64 " slack), swap %" PRIu64 "/%" PRIu64,
				      s->id, rs.resident, lim, slack(lim), st.swap_used,
				      st.swap_total);
			atomic_fetch_add(&cl.st->limit_samples, 1);
			pthread_rwlock_unlock(&s->lock);
		}
		usleep(20000);
	}
	return NULL;
}

static void client_main(int idx, uint64_t uid, uint64_t seed)
{
	struct pager_opts o = { .sz = sizeof(o), .socket_path = sd.sock,
				.flags = PAGER_OPEN_NO_PRIVATE };
	struct sigaction sa = { .sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO | SA_NODEFER };
	struct thr th[MAX_THREADS];
	pthread_t tid[MAX_THREADS], mon;
	struct rng r = { mix64(seed) };
	int e;

	client_idx = idx;
	/* Not ours to hold: pagerd's descriptors in the store. */
	test_sd_close(&sd);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	alarm(cfg.seconds + 2 * cfg.hang_s + 60);
	sigaction(SIGBUS, &sa, NULL);
	cl.st = &sh->c[idx];
	cl.uid = uid;
	atomic_store(&cl.next_uid, uid << 16);
	pthread_mutex_init(&cl.img_mu, NULL);
	e = REQ(pager_open(&cl.p, &o));
	if (e < 0)
		failf("pager_open(%s): %s", sd.sock, strerror(-e));
	for (unsigned i = 0; i < cfg.regions; i++) {
		pthread_rwlock_init(&cl.reg[i].lock, NULL);
		pthread_mutex_init(&cl.reg[i].snap_mu, NULL);
		pthread_mutex_init(&cl.reg[i].limit_mu, NULL);
		slot_create(&cl.reg[i], &r);
	}
	for (unsigned i = 0; i < cfg.threads; i++) {
		th[i] = (struct thr){ .idx = (int)i, .rng = { mix64(seed ^ (i + 1) * C1) },
				      .ctl = -1 };
		th[i].buf = aligned_alloc(ps, ps);
		th[i].scratch = aligned_alloc(ps, ps);
		if (!th[i].buf || !th[i].scratch)
			failf("out of memory");
		if ((e = pthread_create(&tid[i], NULL, thread_main, &th[i])))
			failf("pthread_create: %s", strerror(e));
	}
	if ((e = pthread_create(&mon, NULL, monitor_main, NULL)))
		failf("pthread_create: %s", strerror(e));
	for (unsigned i = 0; i < cfg.threads; i++)
		pthread_join(tid[i], NULL);
	pthread_join(mon, NULL);
	/* Everything, once more, by its owner's rules (no one writes now). */
	for (unsigned i = 0; i < cfg.regions; i++)
		for (unsigned k = 0; k < cfg.threads; k++)
			verify_all(&th[k], &cl.reg[i]);
	for (unsigned i = 0; i < cfg.regions; i++)
		slot_drop(&cl.reg[i]);
	for (int i = 0; i < KEEP_IMAGES; i++)
		image_put(cl.keep[i]);
	pager_close(cl.p);
	_exit(0);
}

/* ==== parent ================================================================== */

struct child {
	pid_t pid;
	uint64_t uid;
};

static struct child kids[MAX_CLIENTS];
static uint64_t next_client_uid = 1;
static uint64_t kills, stalls, restarts, crashes;

static void spawn(int idx)
{
	uint64_t uid = next_client_uid++;
	pid_t pid;

	memset(&sh->c[idx], 0, sizeof(sh->c[idx]));
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		failf("fork: %s", strerror(errno));
	if (pid == 0)
		client_main(idx, uid, mix64(cfg.seed ^ uid * C2));
	kids[idx] = (struct child){ pid, uid };
}

static void add_stats(struct cstats *to, const struct cstats *from)
{
	for (int i = 0; i < NOPS; i++)
		to->ops[i] += from->ops[i];
	to->bytes_verified += from->bytes_verified;
	to->pages_verified += from->pages_verified;
	to->snapshots_checked += from->snapshots_checked;
	to->snapshots_eio += from->snapshots_eio;
	to->snapshots_shutdown += from->snapshots_shutdown;
	to->snap_pages_undecided += from->snap_pages_undecided;
	to->restores += from->restores;
	to->restore_pages_checked += from->restore_pages_checked;
	to->injected += from->injected;
	to->sigbus += from->sigbus;
	to->limit_samples += from->limit_samples;
	to->limit_waits += from->limit_waits;
}

static uint64_t heartbeat(void)
{
	uint64_t n = 0;

	for (unsigned i = 0; i < cfg.clients; i++)
		n += atomic_load(&sh->c[i].heartbeat);
	return n;
}

/* pagerd's anonymous resident memory (its own, not the clients' memfds). */
static uint64_t pagerd_rss_anon(void)
{
	char path[64], line[256];
	uint64_t kb = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)sd.pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "RssAnon: %" SCNu64, &kb) == 1)
			break;
	fclose(f);
	return kb << 10;
}

static char pagerd_log[200];
static const char *self = "build/tests/torture";
static char swapfs[200]; /* fulldisk: the small filesystem, mounted */

static void dump_pagerd_log(void)
{
	char cmd[260];

	fprintf(stderr, "---- last lines of %s ----\n", pagerd_log);
	fflush(stderr);
	snprintf(cmd, sizeof(cmd), "tail -n 30 '%s' >&2", pagerd_log);
	if (system(cmd)) {}
}

static void replay_line(void)
{
	fprintf(stderr, "torture: replay with: TORTURE_SEED=%" PRIu64 " TORTURE_SECONDS=%u "
		"TORTURE_OPS=%s TORTURE_CLIENTS=%u TORTURE_THREADS=%u TORTURE_REGIONS=%u "
		"TORTURE_PAGES=%u TORTURE_POOL=%u TORTURE_SNAPSHOT_CAPTURE=%" PRIu64 " PAGERD=%s %s\n",
		cfg.seed, cfg.seconds, cfg.ops_str, cfg.clients, cfg.threads, cfg.regions,
		cfg.max_pages, cfg.pool, cfg.capture,
		getenv("PAGERD") ? getenv("PAGERD") : "build/pagerd", self);
}

static void kill_all(void)
{
	for (unsigned i = 0; i < cfg.clients; i++)
		if (kids[i].pid > 0) {
			kill(kids[i].pid, SIGKILL);
			waitpid(kids[i].pid, NULL, 0);
			kids[i].pid = 0;
		}
	if (sd.pid > 0 && !sd.exited) {
		kill(sd.pid, SIGCONT);
		kill(sd.pid, SIGKILL);
		waitpid(sd.pid, NULL, 0);
		sd.exited = true;
	}
}

static void cleanup_files(void)
{
	char cmd[200];

	if (swapfs[0] && umount2(swapfs, MNT_DETACH) == 0)
		swapfs[0] = 0;
	test_sd_close(&sd);
	if (work[0] && !getenv("TORTURE_KEEP")) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", work);
		if (system(cmd)) {}
	}
}

static void parent_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void parent_fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "torture: FAIL (seed %" PRIu64 "): ", cfg.seed);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	atomic_store(&sh->stop, 1);
	kill_all();
	dump_pagerd_log();
	replay_line();
	cleanup_files();
	exit(1);
}

static void on_alarm(int sig)
{
	static const char m[] = "torture: FAIL: overall timeout (a hang)\n";

	(void)sig;
	if (write(2, m, sizeof(m) - 1) < 0) {}
	for (unsigned i = 0; i < cfg.clients; i++)
		if (kids[i].pid > 0)
			kill(kids[i].pid, SIGKILL);
	if (sd.pid > 0)
		kill(sd.pid, SIGKILL);
	_exit(1);
}

/* Reaps clients that exited; a client that died without being killed by
 * us is a failure (its message is on stderr already).  pagerd is reaped by
 * the stand-in (test_sd_pump()): an exit we did not ask for is a failure. */
static void reap(bool stopping)
{
	int st;

	if (sd.exited)
		parent_fail("pagerd exited (%s %d)", WIFEXITED(sd.status) ? "status" : "signal",
			    WIFEXITED(sd.status) ? WEXITSTATUS(sd.status) : WTERMSIG(sd.status));
	for (unsigned i = 0; i < cfg.clients; i++) {
		if (kids[i].pid <= 0 || waitpid(kids[i].pid, &st, WNOHANG) != kids[i].pid)
			continue;
		kids[i].pid = 0;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			parent_fail("client %u exited (%s %d)", i,
				    WIFEXITED(st) ? "status" : "signal",
				    WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
		if (!stopping)
			parent_fail("client %u exited before the end", i);
		add_stats(&sh->dead, &sh->c[i]);
		memset(&sh->c[i], 0, sizeof(sh->c[i]));
	}
}

static void check_global(struct proto_reply *st, bool *over_ok, uint64_t *peak_rss)
{
	uint64_t lim = cfg.memory_limit / ps, rss = pagerd_rss_anon();

	if (rss > *peak_rss)
		*peak_rss = rss;
	if (cfg.max_rss && rss > cfg.max_rss)
		parent_fail("pagerd's anonymous RSS is %" PRIu64 " KiB, over %" PRIu64 " KiB",
			    rss >> 10, cfg.max_rss >> 10);
	if (swap_nearly_full(st))
		*over_ok = true;
	if (st->resident_pages <= lim + slack(lim))
		*over_ok = false;
	if (!*over_ok && st->resident_pages > lim + slack(lim))
		parent_fail("pagerd holds %" PRIu64 " resident pages, global limit %" PRIu64
			    " (+%" PRIu64 "), swap %" PRIu64 "/%" PRIu64, st->resident_pages,
			    lim, slack(lim), st->swap_used, st->swap_total);
}

/* Serves the notify socket for ms milliseconds (the parent's wait). */
static void serve(int ms)
{
	if (test_sd_pump(&sd, NULL, NULL, -1, ms) < 0)
		parent_fail("%s", sd.err);
}

static bool sd_gone(struct test_sd *sd_, void *arg)
{
	(void)arg;
	return sd_->exited;
}

/* A request of the parent's, answered while it serves the notify socket:
 * pagerd blocks on a full notify socket, and would wait for us while we
 * wait for it. */
static int parent_call(int s, struct proto_msg *m, enum proto_type type,
		       struct proto_reply *ret)
{
	int e = test_raw_send(s, m, type, 0, NULL, 0);

	if (e < 0)
		return e;
	e = test_sd_pump(&sd, sd_gone, NULL, s, (int)cfg.hang_s * 1000);
	if (e < 0)
		parent_fail("%s", sd.err);
	if (e == 0)
		parent_fail("pagerd did not answer within %u s", cfg.hang_s);
	return e == 1 ? -ESRCH : test_raw_reply(s, ret);
}

static int parent_status(struct proto_reply *st)
{
	struct proto_msg m = { 0 };
	int s = test_raw_connect(sd.sock), e;

	if (s < 0)
		return s;
	m.body.hello.flags = PROTO_HELLO_CONTROL;
	m.body.hello.page_size = (uint32_t)ps;
	e = parent_call(s, &m, PROTO_HELLO, NULL);
	if (e == 0) {
		memset(&m, 0, sizeof(m));
		e = parent_call(s, &m, PROTO_STATUS, st);
	}
	close(s);
	return e;
}

/* What pagerd's fds are, for a failure message: "3:socket 4:/var/..." with
 * inode numbers left out. */
static void fd_list(char *buf, size_t len)
{
	size_t at = 0;

	buf[0] = '\0';
	for (int fd = 0; fd < 1024 && at < len; fd++) {
		char path[64], link[256];
		ssize_t n;

		snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)sd.pid, fd);
		n = readlink(path, link, sizeof(link) - 1);
		if (n <= 0)
			continue;
		link[n] = '\0';
		link[strcspn(link, "[")] = '\0';
		at += (size_t)snprintf(buf + at, len - at, " %d:%s", fd, link);
	}
}

static char base_fd_list[2048];

/* Waits until pagerd has nothing left of any client. */
static void check_clean(int base_fds)
{
	char now_fds[2048];

	struct proto_reply st = { 0 };
	int fds = -1;
	double t0 = now_s();
	char list[1024] = "";

	for (;;) {
		if (status_now(&st) < 0)
			parent_fail("pagerd's status failed at the end");
		fds = test_count_fds(sd.pid);
		/* With the store: nothing in it of any client or region. */
		test_sd_list(&sd, list, sizeof(list));
		if (st.clients == 0 && st.regions == 0 && st.swap_used == 0 &&
		    st.resident_pages == 0 && fds == base_fds &&
		    test_sd_count(&sd, "c") == 0 && test_sd_count(&sd, "r") == 0)
			return;
		if (now_s() - t0 > 60)
			break;
		serve(10);
	}
	fd_list(now_fds, sizeof(now_fds));
	parent_fail("after every client left pagerd still has %" PRIu64 " clients, %" PRIu64
		    " regions, %" PRIu64 " resident pages, %" PRIu64 " swap slots, %d fds (%d before)"
		    "; fd store: %s\nfds before:%s\nfds now:   %s", st.clients, st.regions,
		    st.resident_pages, st.swap_used, fds, base_fds,
		    list, base_fd_list, now_fds);
}

/* pagerd's command line, the same for each one. */
static char swap[256], mem[32], cli[32], swsz[32], poolpct[16], capture[32], fthreads[16];
static const char *args[24];

/*
 * fulldisk: the swap file's blocks are taken from under pagerd while no
 * page is in it yet, and the filesystem is filled but for a quarter of the
 * swap: write-backs meet a full disk.  Nothing is in swap before the first
 * client starts, which is after this.
 */
static char swapfs_filler[240];

static void fill_swapfs(void)
{
	static char buf[1 << 16];
	struct statvfs vfs;
	uint64_t avail;
	int fd = open(swap, O_RDWR | O_CLOEXEC);

	if (fd < 0 || fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
				(off_t)cfg.swap_size) < 0)
		failf("fulldisk: punching %s: %s", swap, strerror(errno));
	close(fd);
	if (statvfs(swapfs, &vfs) < 0)
		failf("fulldisk: statvfs %s: %s", swapfs, strerror(errno));
	avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	snprintf(swapfs_filler, sizeof(swapfs_filler), "%s/filler", swapfs);
	fd = open(swapfs_filler, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		failf("fulldisk: %s: %s", swapfs_filler, strerror(errno));
	memset(buf, 0x5a, sizeof(buf));
	for (uint64_t left = avail > cfg.swap_size / 4 ? avail - cfg.swap_size / 4 : 0; left;) {
		size_t n = left < sizeof(buf) ? left : sizeof(buf);

		if (write(fd, buf, n) != (ssize_t)n)
			failf("fulldisk: filling %s: %s", swapfs, strerror(errno));
		left -= n;
	}
	close(fd);
}

static void start_pagerd(void)
{
	char pre[200];
	int n = 0, e;

	snprintf(swap, sizeof(swap), "%s/swap", work);
	if (getenv("TORTURE_SWAP")) {
		/* Another swap, such as rbd:POOL/IMAGE (tests/itest_rbd_swap.sh),
		 * with the cluster of CEPH_CONF. */
		snprintf(swap, sizeof(swap), "%s", getenv("TORTURE_SWAP"));
		if (getenv("CEPH_CONF")) {
			args[n++] = "--ceph-conf";
			args[n++] = getenv("CEPH_CONF");
		}
	} else if (cfg.ops[OP_FULLDISK]) {
		char opt[64];

		/* Room for the swap file and a little more: pagerd refuses a
		 * swap its filesystem cannot hold (see fill_swapfs()). */
		snprintf(swapfs, sizeof(swapfs), "%s/fs", work);
		snprintf(opt, sizeof(opt), "size=%" PRIu64 "k", cfg.swap_size / 1024 + 1024);
		if (mkdir(swapfs, 0700) < 0 || mount("tmpfs", swapfs, "tmpfs", 0, opt) < 0) {
			printf("torture: fulldisk needs to mount a tmpfs (%s): left out\n",
			       strerror(errno));
			swapfs[0] = 0;
			cfg.ops[OP_FULLDISK] = false;
		} else {
			int fd;

			/* A file that exists already, sparse (truncate -s), as
			 * an administrator may give it. */
			snprintf(swap, sizeof(swap), "%s/swap", swapfs);
			fd = open(swap, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
			if (fd < 0 || ftruncate(fd, (off_t)cfg.swap_size) < 0)
				failf("%s: %s", swap, strerror(errno));
			close(fd);
		}
	}
	snprintf(mem, sizeof(mem), "%" PRIu64, cfg.memory_limit);
	snprintf(cli, sizeof(cli), "%" PRIu64, cfg.client_limit);
	snprintf(swsz, sizeof(swsz), "%" PRIu64, cfg.swap_size);
	args[n++] = "--swap";
	args[n++] = swap;
	args[n++] = "--swap-size";
	args[n++] = swsz;
	args[n++] = "--memory-limit";
	args[n++] = mem;
	args[n++] = "--client-limit";
	args[n++] = cli;
	args[n++] = "--test-hooks";
	args[n++] = "--log-level";
	args[n++] = "notice";
	if (cfg.pool) {
		snprintf(poolpct, sizeof(poolpct), "%u", cfg.pool);
		args[n++] = "--pool-percent";
		args[n++] = poolpct;
	}
	if (cfg.fault_threads >= 0) {
		/* More threads than CPUs: more interleavings of their turns. */
		snprintf(fthreads, sizeof(fthreads), "%d", cfg.fault_threads);
		args[n++] = "--fault-threads";
		args[n++] = fthreads;
	}
	if (cfg.capture) {
		snprintf(capture, sizeof(capture), "%" PRIu64, cfg.capture);
		args[n++] = "--snapshot-capture-limit";
		args[n++] = capture;
	}
	/* The store only where it is used: a failure that goes away with
	 * all,-restart is then the store's or the restart's. */
	if (!cfg.ops[OP_RESTART]) {
		args[n++] = "--fd-store";
		args[n++] = "no";
	}
	args[n] = NULL;
	/* pagerd's log (every pagerd's) goes to a file, shown when something
	 * fails. */
	snprintf(pre, sizeof(pre), "%s/sd", work);
	if (test_sd_init(&sd, pre) < 0)
		failf("the systemd stand-in: %s", sd.err);
	snprintf(pagerd_log, sizeof(pagerd_log), "%s", sd.log);
	e = test_sd_start(&sd, false, args, (int)cfg.hang_s * 1000);
	if (e < 0)
		parent_fail("starting pagerd: %s", sd.err);
	if (swapfs[0])
		fill_swapfs();
}

/*
 * A restart through the fd store: SIGTERM (pagerd hands over and must exit
 * 0) or, with crash, SIGKILL once no request is in flight (see req_begin());
 * then a new pagerd started with the store, which must adopt and come up.
 */
static void restart_pagerd(bool crash)
{
	double t0 = now_s();
	int e;

	atomic_fetch_add(&sh->restarts, 1); /* odd: restarting */
	if (crash) {
		atomic_store(&sh->gate, 1);
		for (;;) {
			int n = 0;

			for (unsigned i = 0; i < cfg.clients; i++)
				if (kids[i].pid > 0)
					n += atomic_load(&sh->c[i].inflight);
			if (!n)
				break;
			if (now_s() - t0 > cfg.hang_s)
				parent_fail("%d requests still in flight after %u s", n, cfg.hang_s);
			serve(1);
		}
	}
	e = test_sd_kill(&sd, crash ? SIGKILL : SIGTERM, (int)cfg.hang_s * 1000);
	if (e < 0)
		parent_fail("%s", sd.err);
	if (!crash && (!WIFEXITED(sd.status) || WEXITSTATUS(sd.status) != 0))
		parent_fail("pagerd's hand-over (SIGTERM) ended with %s %d",
			    WIFEXITED(sd.status) ? "status" : "signal",
			    WIFEXITED(sd.status) ? WEXITSTATUS(sd.status) : WTERMSIG(sd.status));
	/* The new pagerd allocates its swap file whole, or refuses it. */
	if (swapfs_filler[0])
		unlink(swapfs_filler);
	e = test_sd_start(&sd, true, args, (int)cfg.hang_s * 1000);
	if (e < 0)
		parent_fail("restarting pagerd from the store (%zu fds): %s", sd.n, sd.err);
	atomic_fetch_add(&sh->restarts, 1);
	atomic_store(&sh->gate, 0);
	restarts++;
	crashes += crash;
}

static void report(double secs, uint64_t peak_rss, const struct proto_reply *ps_)
{
	struct cstats t = { 0 };
	uint64_t total = 0;

	add_stats(&t, &sh->dead);
	for (unsigned i = 0; i < cfg.clients; i++)
		add_stats(&t, &sh->c[i]);
	for (int i = 0; i < NTHREAD_OPS; i++)
		total += t.ops[i];
	printf("torture: seed %" PRIu64 ", %.0f s, ops %s\n", cfg.seed, secs, cfg.ops_str);
	printf("  operations      %" PRIu64 " (", total);
	for (int i = 0, first = 1; i < NTHREAD_OPS; i++)
		if (t.ops[i]) {
			printf("%s%s %" PRIu64, first ? "" : ", ", op_name[i], t.ops[i]);
			first = 0;
		}
	printf(")\n");
	printf("  verified        %" PRIu64 " pages, %.1f MiB\n", t.pages_verified,
	       (double)t.bytes_verified / (1 << 20));
	printf("  snapshots       %" PRIu64 " checked one cut, %" PRIu64 " refused with EIO"
	       " (injected errors), %" PRIu64 " pages undecided\n",
	       t.snapshots_checked, t.snapshots_eio, t.snap_pages_undecided);
	printf("  restores        %" PRIu64 ", %" PRIu64 " restored pages checked\n",
	       t.restores, t.restore_pages_checked);
	printf("  faults          %" PRIu64 " injected, %" PRIu64 " SIGBUS (all on injected pages),"
	       " %" PRIu64 " pagerd stalls\n", t.injected, t.sigbus, stalls);
	printf("  kills           %" PRIu64 " clients SIGKILLed and replaced\n", kills);
	printf("  restarts        %" PRIu64 " of pagerd through the fd store (%" PRIu64
	       " SIGKILL, the rest SIGTERM), %" PRIu64 " snapshots ended by one (ESHUTDOWN)\n",
	       restarts, crashes, t.snapshots_shutdown);
	printf("  limits          %" PRIu64 " region samples, %" PRIu64 " limit swings reached\n",
	       t.limit_samples, t.limit_waits);
	printf("  pagerd          peak anonymous RSS %" PRIu64 " KiB; swap-outs %" PRIu64
	       ", swap-ins %" PRIu64 ", evictions %" PRIu64 " zero / %" PRIu64 " clean / %"
	       PRIu64 " dirty / %" PRIu64 " aborted, %" PRIu64 " poisoned, %" PRIu64
	       " swap I/O errors\n", peak_rss >> 10, ps_->counters.swap_outs,
	       ps_->counters.swap_ins, ps_->counters.evict_zero, ps_->counters.evict_clean,
	       ps_->counters.evict_dirty, ps_->counters.evict_aborted,
	       ps_->counters.poisoned, ps_->swap_io_errors);
	if (cfg.pool)
		printf("  pool            %" PRIu64 " pages stored, %" PRIu64 " hits, %" PRIu64
		       " spilled, %" PRIu64 " too big (the last pagerd's)\n",
		       ps_->counters.pool_stores, ps_->counters.pool_hits,
		       ps_->counters.pool_spills, ps_->counters.pool_rejects);
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_alarm };
	struct proto_reply st;
	struct rng r, rr;
	double t0, deadline, next_kill, next_stall, next_restart, last_beat_t;
	uint64_t last_beat = 0, peak_rss = 0;
	bool over_ok = false;
	int base_fds, e;

	(void)argc;
	self = argv[0];
	setvbuf(stdout, NULL, _IOLBF, 0);
	configure();
	r.s = mix64(cfg.seed ^ 0x5eed);
	rr.s = mix64(cfg.seed ^ 0x7e57a27); /* restarts: r's draws stay as they were */
	printf("torture: seed %" PRIu64 ", %u s, %u clients x %u threads x %u regions, ops %s\n",
	       cfg.seed, cfg.seconds, cfg.clients, cfg.threads, cfg.regions, cfg.ops_str);
	replay_line();
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		failf("mmap: %s", strerror(errno));
	snprintf(work, sizeof(work), "%s/torture.XXXXXX", cfg.dir);
	if (!mkdtemp(work))
		failf("mkdtemp %s: %s", work, strerror(errno));
	sigaction(SIGALRM, &sa, NULL);
	alarm(cfg.seconds + 3 * cfg.hang_s + 120);
	start_pagerd();
	if ((e = status_now(&st)) < 0)
		parent_fail("pagerd does not answer: %s", strerror(-e));
	if (st.swap_total == 0) {
		printf("SKIP: pagerd runs without swap (O_DIRECT refused in %s?)\n", cfg.dir);
		kill_all();
		cleanup_files();
		return TEST_SKIP;
	}
	base_fds = test_count_fds(sd.pid);
	fd_list(base_fd_list, sizeof(base_fd_list));
	{
		/* Snapshots and eviction need write-protect on shmem. */
		struct pager *p;
		struct pager_info info = { .sz = sizeof(info) };
		struct pager_opts o = { .sz = sizeof(o), .socket_path = sd.sock,
					.flags = PAGER_OPEN_NO_PRIVATE };
		pid_t pid = fork();
		int wst;

		if (pid == 0) {
			test_sd_close(&sd);
			if (pager_open(&p, &o) < 0 || pager_get_info(p, &info) < 0)
				_exit(2);
			_exit(info.uffd_features & (1ULL << 14) /* POISON */ ? 0 : 3);
		}
		while (waitpid(pid, &wst, WNOHANG) != pid)
			serve(5);
		if (!WIFEXITED(wst) || WEXITSTATUS(wst) == 2)
			parent_fail("a probe client could not connect");
		if (WEXITSTATUS(wst) == 3 && cfg.ops[OP_INJECT]) {
			printf("torture: the kernel lacks UFFD_FEATURE_POISON: no injection\n");
			cfg.ops[OP_INJECT] = false;
		}
		for (double w0 = now_s(); status_now(&st) == 0 && st.clients; serve(10))
			if (now_s() - w0 > cfg.hang_s)
				parent_fail("the probe client is still there after %u s", cfg.hang_s);
	}

	t0 = now_s();
	deadline = t0 + cfg.seconds;
	for (unsigned i = 0; i < cfg.clients; i++)
		spawn((int)i);
	next_kill = t0 + 2 + (double)rnd_below(&r, 8000) / 1000;
	next_stall = t0 + (double)rnd_below(&r, 2000) / 1000;
	next_restart = t0 + 1 + (double)rnd_below(&rr, 6000) / 1000;
	last_beat_t = t0;
	while (now_s() < deadline) {
		double t;

		serve(50);
		reap(false);
		if (status_now(&st) < 0)
			parent_fail("pagerd's status failed");
		check_global(&st, &over_ok, &peak_rss);
		t = now_s();
		if (heartbeat() != last_beat) {
			last_beat = heartbeat();
			last_beat_t = t;
		} else if (t - last_beat_t > cfg.hang_s) {
			char ops[256] = "";

			for (unsigned i = 0; i < cfg.clients; i++)
				for (unsigned k = 0; k < cfg.threads; k++) {
					int o = atomic_load(&sh->c[i].cur_op[k]);
					snprintf(ops + strlen(ops), sizeof(ops) - strlen(ops), " %u.%u:%s",
						 i, k, o >= 0 && o < NOPS ? op_name[o] : "-");
				}
			parent_fail("no client made progress for %u s (a hang); threads in:%s",
				    cfg.hang_s, ops);
		}
		if (cfg.ops[OP_KILL] && t >= next_kill) {
			int i = (int)rnd_below(&r, cfg.clients);

			kill(kids[i].pid, SIGKILL);
			waitpid(kids[i].pid, NULL, 0);
			add_stats(&sh->dead, &sh->c[i]);
			kids[i].pid = 0;
			kills++;
			spawn(i);
			next_kill = t + 2 + (double)rnd_below(&r, 8000) / 1000;
		}
		if (cfg.ops[OP_STALL] && t >= next_stall) {
			kill(sd.pid, SIGSTOP);
			usleep((useconds_t)(1000 + rnd_below(&r, 50000)));
			kill(sd.pid, SIGCONT);
			stalls++;
			next_stall = t + (double)rnd_below(&r, 2000) / 1000;
		}
		if (cfg.ops[OP_RESTART] && t >= next_restart) {
			/* Every third a crash: a short run has one too. */
			restart_pagerd(restarts % 3 == 2);
			next_restart = now_s() + 2 + (double)rnd_below(&rr, 8000) / 1000;
		}
	}
	atomic_store(&sh->stop, 1);
	for (;;) {
		bool any = false;

		reap(true);
		for (unsigned i = 0; i < cfg.clients; i++)
			any |= kids[i].pid > 0;
		if (!any)
			break;
		if (now_s() - deadline > cfg.hang_s + 60)
			parent_fail("clients did not finish within %u s of the end", cfg.hang_s + 60);
		serve(20);
	}
	if (status_now(&st) < 0)
		parent_fail("pagerd's status failed");
	check_clean(base_fds);
	reap(true);
	/* No successor may have found a page it could not vouch for. */
	if (strstr(test_sd_log(&sd), "could not be vouched for"))
		parent_fail("a restarted pagerd lost pages (\"could not be vouched for\" in %s)",
			    sd.log);
	if (test_sd_kill(&sd, SIGTERM, (int)cfg.hang_s * 1000) < 0)
		parent_fail("%s", sd.err);
	if (!WIFEXITED(sd.status) || WEXITSTATUS(sd.status) != 0)
		parent_fail("pagerd's orderly exit ended with %s %d",
			    WIFEXITED(sd.status) ? "status" : "signal",
			    WIFEXITED(sd.status) ? WEXITSTATUS(sd.status) : WTERMSIG(sd.status));
	report(now_s() - t0, peak_rss, &st);
	cleanup_files();
	printf("torture: PASS\n");
	return 0;
}
