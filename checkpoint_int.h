/*
 * checkpoint_int.h - private to the checkpoint's files (checkpoint.c: the
 * run, its state and its cleanup; ckplan.c: discovery and the plan of
 * changes; ckcapture.c: the memory capture): the state of one run.
 */
#ifndef SNAPCTL_CHECKPOINT_INT_H
#define SNAPCTL_CHECKPOINT_INT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "checkpoint.h"
#include "diskswap.h"
#include "err.h"
#include "qmp.h"
#include "save.h"

struct ingest;
struct store;

struct disk {
	char *device;		/* the device name, or the qdev id */
	char *qdev;
	char *node;		/* root node of the device: the active image */
	char *drive;		/* the drive's device name, or NULL: node */
	char *file;		/* the VM's own path P of the active image */
	char *format;
	char *backing;		/* its backing file, or NULL */
	char *overlay;		/* the VM's current disk after the cut: P */
	char *overlay_node;
	struct diskswap sw;	/* the swap: the state goes to sw.layer,
				 * QEMU cuts onto sw.tmp (diskswap.h) */
};

/*
 * The phase of the run; ckpt_state_set() checks each step against the
 * table in checkpoint.c.  Any phase but DONE may go to FAILED.
 *
 *   live, pause:  START -> PREPARED -> LIVE -> SWITCHOVER -> CUT ->
 *                 COMPLETED -> CAPTURED -> SETTLED -> DONE
 *   background:   START -> PREPARED -> CUTTING -> BG_SETUP [-> BG_LIVE] ->
 *                 COMPLETED -> CAPTURED -> SETTLED -> DONE
 *   disk-only:    START -> PREPARED -> CUTTING -> CAPTURED -> SETTLED -> DONE
 */
enum ckpt_state {
	CKPT_S_START,		/* store, discovery, note: QEMU untouched */
	CKPT_S_PREPARED,	/* changing QEMU: settle() undoes from here */
	CKPT_S_CUTTING,		/* disk-only, background: the cut outside a
				 * migration (guest frozen/stopped if asked) */
	CKPT_S_LIVE,		/* migrate accepted, the guest runs (or is
				 * held by --pause or --timeout) */
	CKPT_S_SWITCHOVER,	/* QEMU holds the guest at pre-switchover */
	CKPT_S_CUT,		/* disks cut, migrate-continue: the last pass */
	CKPT_S_BG_SETUP,	/* background: migrate accepted, the guest
				 * stopped until QEMU's setup is over */
	CKPT_S_BG_LIVE,		/* background: the guest runs again */
	CKPT_S_COMPLETED,	/* QEMU is done, the guest resumed; waiting
				 * for the stream's end */
	CKPT_S_CAPTURED,	/* stream ended (or disks cut): commit */
	CKPT_S_SETTLED,		/* the guest and QEMU's settings put back */
	CKPT_S_DONE,		/* in the store */
	CKPT_S_FAILED,		/* settled as far as possible */
};

enum ckpt_mode {
	CKPT_MODE_LIVE,
	CKPT_MODE_PAUSE,	/* also background on a guest not running */
	CKPT_MODE_BACKGROUND,
	CKPT_MODE_DISK_ONLY,
};

/* What QEMU said of the migration (MIGRATION events): only ever grows. */
enum ckpt_mig {
	CKPT_MIG_NONE,		/* nothing that matters yet */
	CKPT_MIG_PRE_SWITCHOVER,
	CKPT_MIG_COMPLETED,
	CKPT_MIG_CANCELLED,
	CKPT_MIG_FAILED,
};

struct ckpt {
	const struct ckpt_opts *o;
	enum ckpt_state state;
	enum ckpt_mode mode;
	struct qmp *q;
	struct qmp *agent;
	struct store *store;
	char *name;
	char *stage;
	char *socket_abs;
	char *parent;		/* newest checkpoint of this VM, or NULL */
	json_t *parent_m;	/* its manifest */
	char created[32];
	uint64_t t0;		/* monotonic ms at the start */

	/* the VM */
	char qemu_version[32];
	char *vm_name;
	char *uuid;
	char *machine;
	char runstate[32];
	int was_running;
	struct disk *disks;
	size_t ndisks;
	json_t *skipped;	/* [{device, file, why}]: disks left alone */

	/* what we changed, so what settle() must undo */
	json_t *caps_set;	/* [{capability,state}] we set */
	json_t *caps_restore;	/* the same capabilities, original states */
	json_t *params_set;
	json_t *params_restore;
	int caps_applied;
	int params_applied;
	int note_written;
	int stopped_by_us;	/* the guest: cont it */
	int frozen;		/* its filesystems: thaw them */
	int fd_registered;	/* getfd done, migrate not yet: closefd */
	int disks_cut;		/* the overlays are in use: kept */
	int swaps_prepared;
	int cut_unknown;	/* QEMU may have cut, or a swap is unfinished:
				 * for recover */	/* diskswap_prepare() done on every disk */
	uint64_t freeze_ms;

	/* the migration */
	int sv[2];
	uint64_t ram_bytes;	/* the guest's RAM, a bound on the stream */
	enum ckpt_mig mig;
	uint64_t bg_recheck;	/* monotonic ms of the runstate recheck */
	int forced;		/* --timeout stopped the guest */
	int passes;
	double stop_ts;		/* QEMU's timestamps of STOP and RESUME */
	double resume_ts;
	uint64_t stop_mono;	/* fallback when events are missed */
	uint64_t resume_mono;
	int64_t qemu_downtime;
	struct ingest *ing;	/* the stream into the image */
	struct img_reader *base;/* the parent's image the new one shares
				 * frames with (save.h), or NULL: full */
	struct img_stats img;

	/* progress */
	uint64_t last_progress;
	uint64_t last_bytes;
};

/* The phase becomes to; asserts that the step is one the table allows. */
void ckpt_state_set(struct ckpt *c, enum ckpt_state to);

/*
 * ckplan.c: query QEMU (name, uuid, machine, runstate, disks, migration
 * capabilities and parameters), pick the disks and name their overlays,
 * plan the changes (c->caps_set/restore, c->params_set/restore).  The
 * mode becomes pause for background on a guest not running.  0, or -1
 * with e filled (a migration already running, an overlay that exists, an
 * unknown --exclude...); nothing is changed in QEMU either way.
 */
int ckpt_discover(struct ckpt *c, struct err *e);
void ckpt_disk_free(struct disk *d);

/*
 * ckcapture.c: start the migration into the memory image and drive it to
 * the stream's end: cut the disks at pre-switchover (or, background,
 * before migrate), resume the guest at completion, apply --timeout.
 * 0 in CKPT_S_CAPTURED; -1 with e filled, the state where it failed, for
 * settle() to undo.
 */
int ckpt_capture(struct ckpt *c, struct err *e);
/* The guest's RAM in bytes (1 GiB when QEMU will not say). */
uint64_t ckpt_guest_ram(struct ckpt *c);
/* Note a QMP event (MIGRATION, MIGRATION_PASS, STOP, RESUME) in c. */
void ckpt_handle_event(struct ckpt *c, const struct qmp_event *ev);

/* checkpoint.c, for the capture. */
int ckpt_note_write(struct ckpt *c, struct err *e);	/* the recovery note */
int ckpt_cut_disks(struct ckpt *c, struct err *e);	/* the transaction */
int ckpt_resume_guest(struct ckpt *c, struct err *e);	/* cont */
void ckpt_hold(int ms);		/* test hook: sleep, a signal ends it */

#endif
