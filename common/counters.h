/* SPDX-License-Identifier: MIT */
/*
 * pagerd's event counters, defined once.
 *
 * Every place a counter shows up is generated from PAGER_COUNTERS below:
 * pagerd's struct counters (per region and for the daemon), the wire
 * layout (struct proto_counters, struct proto_region_counters), the copies
 * between them, the Prometheus rows (metrics.c), pagerctl's text and JSON,
 * and libpager's copy into struct pager_region_stats.  Adding a counter is
 * one line here, the code that counts it (counter_add() in pagerd.h), and,
 * for a REGION counter, its field appended to struct pager_region_stats in
 * include/pager.h (the build fails until it is there).  It changes the
 * wire layout: raise PROTO_VERSION (test_proto's sizes say so).
 *
 * X(name, scope, unit, metric, kind, help)
 *   name    the field everywhere, and pagerctl's JSON key
 *   scope   REGION: counted per region and for the daemon (whose count
 *           keeps what regions since gone counted); DAEMON: daemon-wide only
 *   unit    what one count is, for pagerctl's text
 *   metric  the Prometheus family (a counter)
 *   kind    NULL, or the value of the family's kind="" label; the rows of
 *           one family share a HELP line (PAGER_COUNTER_FAMILIES)
 *   help    what it counts: the HELP line of a family without kinds
 *
 * Order is the wire order and, for REGION counters, the order of their
 * fields in struct pager_region_stats: append only.
 *
 * State counts (resident, swapped, writeback, image_pending ...) are not
 * counters: they go up and down with page states and are reported beside
 * these by hand.  The swap store's own error counts (swap_io_errors) are
 * the swap store's, reported with its size and use.
 */
#ifndef PAGER_COUNTERS_H
#define PAGER_COUNTERS_H

#define PAGER_COUNTERS(X) \
	X(faults_missing, REGION, "faults", "pagerd_faults_total", "missing", \
	  "Missing faults pagerd served: first touches, swap-ins, restores.") \
	X(faults_wp, REGION, "faults", "pagerd_faults_total", "wp", \
	  "Write-protect faults: writes to clean pages, or to pages under write-back or a snapshot.") \
	X(swap_ins, REGION, "pages", "pagerd_swap_ins_total", NULL, \
	  "Pages read back from swap on demand or ahead.") \
	X(swap_outs, REGION, "pages", "pagerd_swap_outs_total", NULL, \
	  "Pages written to swap and evicted.") \
	X(evict_zero, REGION, "pages", "pagerd_evictions_total", "zero", \
	  "Evictions of all-zero pages: no I/O.") \
	X(evict_clean, REGION, "pages", "pagerd_evictions_total", "clean", \
	  "Evictions of pages whose swap copy is current: no I/O.") \
	X(evict_dirty, REGION, "pages", "pagerd_evictions_total", "dirty", \
	  "Evictions that wrote the page to swap first.") \
	X(evict_aborted, REGION, "pages", "pagerd_evictions_aborted_total", NULL, \
	  "Evictions aborted because the page was written during write-back.") \
	X(readahead, REGION, "pages", "pagerd_readahead_pages_total", NULL, \
	  "Pages read ahead of sequential swap-ins.") \
	X(readahead_hits, REGION, "pages", "pagerd_readahead_hits_total", NULL, \
	  "Read-ahead pages the application then used.") \
	X(poisoned, REGION, "pages", "pagerd_poisoned_pages_total", NULL, \
	  "Pages lost to a failed or corrupt swap read (SIGBUS on access).") \
	X(image_reads, REGION, "pages", "pagerd_image_reads_total", NULL, \
	  "Pages read from the images of restored regions.") \
	X(pages_zero_filled, REGION, "pages", "pagerd_pages_zero_filled_total", NULL, \
	  "Pages filled with zeros on first touch.") \
	X(writeback_failed_pages, DAEMON, "pages", "pagerd_writeback_failed_pages_total", NULL, \
	  "Pages whose write to swap failed (they stayed in memory).") \
	X(pool_stores, REGION, "pages", "pagerd_pool_stores_total", NULL, \
	  "Evicted pages kept compressed in the pool instead of written to swap.") \
	X(pool_stored_bytes, REGION, "bytes", "pagerd_pool_stored_bytes_total", NULL, \
	  "Compressed bytes of the pages kept in the pool (pool_stores pages: the ratio).") \
	X(pool_hits, REGION, "pages", "pagerd_pool_hits_total", NULL, \
	  "Pages read back from the compressed pool: no disk read.") \
	X(pool_spills, REGION, "pages", "pagerd_pool_spills_total", NULL, \
	  "Pool entries written to swap to make room (the coldest first).") \
	X(pool_rejects, REGION, "pages", "pagerd_pool_rejects_total", NULL, \
	  "Pages that compressed too badly for the pool: written to swap.") \
	X(image_learned_reads, REGION, "pages", "pagerd_image_learned_reads_total", NULL, \
	  "Pages read from restore images ahead of demand in their learned order (IMAGE.order).") \
	X(snapshot_writes_parked, DAEMON, "faults", "pagerd_snapshot_writes_parked_total", NULL, \
	  "Writes that waited for a snapshot's image disk: its capture budget (snapshot_capture_limit) was full.")

/* The HELP line of each family whose rows have a kind. */
#define PAGER_COUNTER_FAMILIES(F) \
	F("pagerd_faults_total", \
	  "Page faults pagerd served, by kind: missing (first touch, swap-in, restore), " \
	  "wp (a write to a clean page, or to one under write-back or a snapshot).") \
	F("pagerd_evictions_total", \
	  "Pages evicted, by kind: zero (no I/O), clean (no I/O), dirty (written first).")

/*
 * COUNTER_IF_##scope(...): the arguments for a REGION counter, nothing for
 * a DAEMON one.  In an X:  COUNTER_IF_##scope(out->name = in->name;)
 */
#define COUNTER_IF_REGION(...) __VA_ARGS__
#define COUNTER_IF_DAEMON(...)
/* COUNTER_CHOOSE_##scope(for_region, for_daemon): one of two expressions
 * (parenthesize one that has a comma). */
#define COUNTER_CHOOSE_REGION(r, d) r
#define COUNTER_CHOOSE_DAEMON(r, d) d

enum counter_scope {
	COUNTER_SCOPE_REGION,
	COUNTER_SCOPE_DAEMON,
};
#define COUNTER_SCOPE(scope) COUNTER_SCOPE_##scope

#endif /* PAGER_COUNTERS_H */
