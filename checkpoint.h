/*
 * checkpoint.h - a consistent live external checkpoint of a QEMU VM: guest
 * memory received as a live migration stream over a file descriptor handed
 * to QEMU and compacted into a memory image, every writable disk cut by one
 * QMP transaction of blockdev-snapshot-sync while QEMU holds the guest at
 * pre-switchover, so memory and disks describe the same instant; then the
 * guest runs again.  Or, in background mode, QEMU's background-snapshot:
 * memory as at the start, the disks cut at that instant.  Also the
 * recovery of a guest a killed snapctl left paused.  Never prints, never exits: progress goes through a callback.
 */
#ifndef SNAPCTL_CHECKPOINT_H
#define SNAPCTL_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "err.h"
#include "qmp.h"

#define CKPT_DEFAULT_BANDWIDTH (64ull << 30)	/* bytes/s: "unlimited" */
#define CKPT_MIG_FDNAME "snapctl-mig"

enum ckpt_on_timeout {
	CKPT_TIMEOUT_STOP,	/* stop the guest so the capture finishes */
	CKPT_TIMEOUT_ABORT,	/* cancel: ERR_TIMEOUT, guest as before */
};

/* A progress report, about every half second during the capture. */
struct ckpt_progress {
	const char *phase;	/* "live", "background", "switchover",
				 * "saving" */
	double elapsed_s;
	uint64_t received;	/* stream bytes read from QEMU */
	uint64_t rate;		/* of those, bytes/s lately */
	uint64_t ram_total;	/* guest RAM, bytes (QEMU's count) */
	uint64_t remaining;	/* bytes QEMU still has to send this pass */
	uint64_t dirty_rate;	/* bytes/s the guest dirties (0: unknown) */
	int pass;		/* dirty-bitmap sync count */
	double eta_s;		/* < 0 when unknown */
	int forced;		/* --timeout stopped the guest */
	/*
	 * Phase "base", once before the capture: which image the new one
	 * shares unchanged chunks with, or why it is a full image (one
	 * line, e.g. "incremental on parent 'c1'").
	 */
	const char *note;
};
typedef void (*ckpt_progress_fn)(void *opaque, const struct ckpt_progress *p);

struct ckpt_opts {
	const char *socket;	/* QMP address */
	const char *store;	/* store directory (created 0700) */
	const char *name;	/* NULL: the UTC time, 20261123T081500Z */
	int disk_only;		/* disks only, no memory */
	int pause;		/* guest stopped for the whole capture */
	/*
	 * QEMU's background-snapshot: the image is memory at the start, the
	 * disks are cut at that instant (guest stopped just for that); each
	 * page is sent about once.  A guest not running is captured as with
	 * pause.  Excludes pause and disk_only (ERR_USAGE).
	 */
	int background;
	int quiesce;		/* disk-only: fsfreeze through the agent */
	const char *agent;	/* guest agent socket (quiesce) */
	const char *overlay_dir;	/* NULL: beside each active image */
	const char *const *exclude;	/* devices left alone */
	size_t nexclude;
	int64_t downtime_ms;	/* < 0: QEMU's downtime-limit stays */
	uint64_t bandwidth;	/* max-bandwidth; 0: CKPT_DEFAULT_BANDWIDTH */
	int timeout_s;		/* 0: no deadline */
	enum ckpt_on_timeout on_timeout;
	int level;		/* zstd level, 0: the image's default */
	int threads;		/* compression threads, 0: online CPUs */
	int qmp_timeout_ms;	/* QMP reply timeout, 0: qmp.h's default */
	/*
	 * Test only (SNAPCTL_TEST_HOLD_SWITCHOVER_MS): sleep this long at
	 * pre-switchover, with the guest stopped, before cutting the disks,
	 * so a test can signal or kill snapctl there.
	 */
	int hold_switchover_ms;
	/* Test only (SNAPCTL_TEST_HOLD_COMMIT_MS): the same before the
	 * image's commit, the guest running again. */
	int hold_commit_ms;
	ckpt_progress_fn progress;	/* may be NULL */
	void *progress_opaque;
	qmp_trace_fn trace;	/* may be NULL */
	void *trace_opaque;
	int lock_wait_ms;	/* wait for the store's lock (store_lock()) */
	int dry_run;		/* discovery only: see ckpt_run() */
};
#define CKPT_OPTS_INIT { NULL, NULL, NULL, 0, 0, 0, 0, NULL, NULL, NULL, 0, \
	-1, 0, 0, CKPT_TIMEOUT_STOP, 0, 0, 0, 0, 0, NULL, NULL, NULL, NULL, 0, 0 }

/*
 * Take a checkpoint into STORE/NAME.  On success returns 0 and *manifest
 * (new reference) is what was written to STORE/NAME/manifest.json.
 *
 * On failure returns -1 with e filled, and the guest was put back: running
 * if it ran before, filesystems thawed, every migration capability and
 * parameter changed restored, no STORE/NAME and no staging directory left.
 * The kinds: ERR_FAIL (QEMU refused something: the migration, the
 * transaction...), ERR_USAGE, ERR_QEMU (QEMU went away), ERR_LOCKED (the
 * store is busy), ERR_NOSPC (the store filled up), ERR_TIMEOUT (--timeout
 * with CKPT_TIMEOUT_ABORT), ERR_INTR (SIGINT/SIGTERM/SIGHUP, see sig.h,
 * which the caller installs; once the disks are cut, a signal no longer
 * stops the run: it completes, and sig_caught() tells the caller), ERR_ATTENTION (the guest could not be
 * resumed or the capabilities not restored: e says to run snapctl
 * recover, and STORE/.recover.json is kept for it).
 *
 * If the failure comes after the disks were cut (say the image cannot be
 * committed for lack of space), the new overlays stay: QEMU writes the
 * guest's disks into them, so removing them would lose data.  e names
 * them; the old images are unchanged, and the overlays can be merged back
 * with block-commit if wanted.
 *
 * With o->dry_run, only discovery: nothing is changed in QEMU, the store
 * is neither created nor locked, and *manifest is the plan instead:
 * {dry_run: true, name, store, mode, vm: {name, uuid}, parent,
 * disks: [{device, file, format, overlay}], skipped: [{device, file, why}],
 * ram_bytes, room_needed, store_free} (the last three 0 / null when they
 * do not apply or are unknown).
 */
int ckpt_run(const struct ckpt_opts *o, json_t **manifest, struct err *e);

struct ckpt_recover_opts {
	const char *socket;	/* NULL: the one in the recovery note */
	const char *store;	/* NULL: no note; restore the minimum */
	const char *agent;	/* NULL: the note's, if any */
	int qmp_timeout_ms;
	qmp_trace_fn trace;
	void *trace_opaque;
	int lock_wait_ms;	/* wait for the store's lock (store_lock()) */
};
#define CKPT_RECOVER_OPTS_INIT { NULL, NULL, NULL, 0, NULL, NULL, 0 }

/*
 * Bring back a guest a killed snapctl left behind: cancel a migration that
 * is pending (also one held at pre-switchover), thaw filesystems, restore
 * the capabilities and parameters recorded in STORE/.recover.json (without
 * a store: turn pause-before-switchover off), resume the guest, remove
 * stale staging directories and the note.  Idempotent.  Returns 0 when the
 * guest runs (or, per the note, was not running before and is left so);
 * *report (new reference) says what was done.  -1 with e filled otherwise
 * (ERR_ATTENTION when the guest stays stopped).
 */
int ckpt_recover(const struct ckpt_recover_opts *o, json_t **report,
    struct err *e);

#endif
