/* SPDX-License-Identifier: MIT */
/*
 * pagerd's settings: one table (config.c) names each setting once, with its
 * key in /etc/pagerd/pagerd.conf, its command-line option, its type and
 * range, whether SIGHUP may change it, and its help line.  The file is
 * parsed with inih; the command line overrides the file, at start and at
 * every reload.
 *
 * Messages (errors, what a reload changed) go to a callback so that the
 * daemon can log them and the unit tests can read them.
 */
#ifndef PAGERD_CONFIG_H
#define PAGERD_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifndef PAGERD_CONFIG_FILE
#define PAGERD_CONFIG_FILE "/etc/pagerd/pagerd.conf"
#endif

/* Room for every setting's origin; config.c checks the table fits. */
#define CONFIG_MAX_SETTINGS 40

enum config_policy {
	CONFIG_POLICY_CLOCK = 0,
	CONFIG_POLICY_FIFO = 1,
};

/* fd_store: under systemd, hand clients to the fd store (fdstore.c). */
enum config_fd_store {
	CONFIG_FD_STORE_YES = 0,
	CONFIG_FD_STORE_NO = 1,
};

struct config_access;
struct config_cli;

struct config {
	/* Listening */
	char *socket_path;
	unsigned socket_mode;          /* chmod of a socket pagerd binds itself */
	char *socket_group;            /* "" = leave the group alone */
	int private_fd;                /* >= 0: serve one client on it, then exit */
	/* Memory, eviction and swap */
	uint64_t memory_limit;         /* bytes resident in all, 0 = none */
	uint64_t client_memory_limit;  /* bytes resident per client, 0 = none */
	unsigned high_watermark;       /* % of a limit where eviction starts */
	unsigned low_watermark;        /* % of a limit where it stops */
	int policy;                    /* enum config_policy */
	char *swap_path;               /* "" = no swap */
	uint64_t swap_size;            /* 0 = the existing file's or device's size */
	/* A Ceph cluster (swap_path = rbd:POOL/IMAGE) */
	char *ceph_conf;               /* its ceph.conf */
	char *ceph_id;                 /* pagerd's client name in it */
	char *ceph_keyring;            /* "" = the conf file's */
	unsigned ceph_timeout_ms;      /* a request to the cluster takes at most */
	char *rbd_allow;               /* grants "user:U POOL/NS, group:G POOL", "" = none */
	char *rbd_user_namespace;      /* POOL: uid N may name POOL's namespace uN */
	unsigned pool_percent;         /* compressed pool: its share of a limit, 0 = off */
	int pool_compressor;           /* enum pool_algo */
	/* What one client may do */
	uint64_t max_region_bytes;     /* largest region a client may create */
	unsigned max_regions;          /* per client */
	unsigned max_clients;
	unsigned max_user_clients;     /* per uid, but admins; 0 = max_clients */
	/* Fault handling */
	unsigned fault_around_max;     /* pages resolved for one sequential fault */
	unsigned fault_spin_us;        /* poll the uffd this long after a fault */
	unsigned fault_threads;        /* threads serving faults, 0 = the loop;
					* FAULT_THREADS_CPUS: one per online CPU */
	/* Snapshots */
	unsigned image_timeout_ms;     /* an image read or write takes at most */
	/* Who may connect, who may control */
	char *allowed_users;           /* comma list of names or uids, "" = all */
	char *allowed_groups;          /* comma list of names or gids, "" = all */
	char *admin_group;             /* may use the control channel too */
	/* Restarts */
	int fd_store;                  /* enum config_fd_store */
	/* Logs and metrics */
	int log_level;                 /* LOG_ERR .. LOG_DEBUG */
	char *metrics_address;         /* host:port for Prometheus, "" = off */

	/* Not settings: where they came from and what they resolve to. */
	char *config_path;             /* the file read (or looked for) */
	bool config_explicit;          /* --config given: the file must exist */
	bool check_only;               /* --check-config */
	bool test_hooks;               /* --test-hooks: accept fault injection */
	struct config_access *access;  /* resolved allowed_* and admin_group */
	struct config_cli *cli;        /* command-line settings, kept for reload */
	/* Errors in config_path at the last load or reload, which therefore
	 * is not in effect (0: the file is what runs), and what runs instead
	 * ("the previous pagerd's settings", ...): for STATUS= and pagerctl. */
	unsigned file_errors;
	const char *running_on;
	int set_at[CONFIG_MAX_SETTINGS]; /* 0 default, > 0 file line, -1 command line */
};

/* Where messages go: level is a syslog priority (LOG_ERR, LOG_NOTICE...). */
struct config_log {
	void (*fn)(void *ctx, int level, const char *msg);
	void *ctx;
};

/*
 * Fills *cfg from the defaults, the configuration file and the command
 * line, in that order of precedence (last wins).  The file is --config's
 * (it must exist) or PAGERD_CONFIG_FILE (skipped when missing, and not read
 * at all by a private daemon, whose settings come from libpager).
 *
 * Returns 0 to run, 1 when the command line asked for something that is
 * done (--help, --version: printed to stdout), or -EINVAL after reporting
 * every error through `log`, naming FILE:LINE or the option and the
 * setting.  On every return *cfg owns memory: release it with config_free().
 */
int config_load(struct config *cfg, int argc, char **argv,
		const struct config_log *log);
void config_free(struct config *cfg);

/*
 * When the file has errors but pagerd must run anyway (it has clients to
 * take over from the fd store, which exiting would strand): fills *cfg from
 * the defaults, the file `from` in place of the configuration file (a
 * predecessor's settings, as config_print() wrote them), and the command
 * line.  `from` NULL: defaults and command line.  cfg->config_path stays
 * the configuration file, which SIGHUP reads again.  Returns 0 or -EINVAL
 * (messages reported through `log`); *cfg owns memory either way.
 */
int config_load_fallback(struct config *cfg, int argc, char **argv, const char *from,
			 const struct config_log *log);

/*
 * SIGHUP: reads the file again, re-applies the command line on top, and
 * applies every setting that changed and may change at run time (limits,
 * watermarks, log level, access lists, per-client limits, fault-around).
 * Each change is reported at LOG_NOTICE; each change that cannot be applied
 * while pagerd runs (socket, swap, policy, metrics address) at LOG_WARNING,
 * and the running value stays.  A file with errors changes nothing (and
 * sets file_errors; a good one clears it).
 * Returns the number of settings changed, or -EINVAL.
 */
int config_reload(struct config *cfg, const struct config_log *log);

/*
 * The size of a swap file pagerd makes without swap_size (a new file, or
 * the unnamed one of a daemon with a limit and no swap_path): the
 * machine's memory `ram`, but no more than half the free space `fs_free`
 * of the file's filesystem, nor CONFIG_SWAP_DEFAULT_MAX; whole pages.  The
 * file is allocated at once, so a fixed size would take 4 GiB of a small
 * disk, or fill it.  0 when not even that half is free (no swap is made).
 */
#define CONFIG_SWAP_DEFAULT_MAX (4ULL << 30)
uint64_t config_default_swap_size(uint64_t ram, uint64_t fs_free, size_t page_size);

/* Writes the effective configuration as a pagerd.conf, each value with
 * where it came from. */
void config_print(const struct config *cfg, FILE *f);

/* The --help text, generated from the table. */
void config_usage(FILE *f);

/*
 * May this peer connect at all?  Root, pagerd's own uid, and everyone when
 * allowed_users and allowed_groups are both empty; else a uid in
 * allowed_users, or a peer whose gid or whose uid's groups (getgrouplist)
 * meet allowed_groups.  Refusals are logged.  config_peer_allowed() reads
 * SO_PEERCRED from `sock`.
 */
bool config_peer_allowed(const struct config *cfg, int sock);
bool config_cred_allowed(const struct config *cfg, const struct ucred *cred);
/* May this peer use the control channel?  Root, pagerd's own uid, or a
 * member of admin_group. */
bool config_cred_admin(const struct config *cfg, const struct ucred *cred);

/*
 * May this peer name RBD images in pool/ns ("" = the pool's default
 * namespace)?  pagerd opens them with its own Ceph identity, so this is
 * the only check between a client and every image pagerd can reach: 0 for
 * root and pagerd's own uid; for uid N, namespace "uN" of
 * rbd_user_namespace; and what rbd_allow grants the uid, its gid or its
 * user's groups (getgrouplist; may block on NSS: once a request, never on
 * the fault path).  Otherwise -EACCES; -EINVAL for no pool.  Call it with
 * the peer's SO_PEERCRED before anything is opened.
 */
int config_rbd_allowed(const struct config *cfg, const struct ucred *cred,
		       const char *pool, const char *ns);

/* A group name or number to a gid; 0 or -ENOENT. */
int config_group_id(const char *name, gid_t *ret);

/* "PORT", ":PORT", "HOST:PORT" or "[IPV6]:PORT" (HOST defaults to
 * 127.0.0.1: metrics stay on loopback unless a host is named).  Returns 0
 * or -EINVAL. */
int config_parse_address(const char *s, char *ret_host, size_t hostlen,
			 unsigned *ret_port);

/* fault_threads = cpus (the default): one thread per online CPU. */
#define FAULT_THREADS_CPUS UINT32_MAX

#endif
