/*
 * vm.h - typed VM operations over QMP: each monitor command snapctl runs
 * against a VM is wrapped here once and its reply parsed in one place (run
 * state, migration status, disks, the overlay cut).  Never prints.
 *
 * Unless said otherwise a failure fills e as qmp_call() does: "CMD: " +
 * the reason, QEMU's error class kept, an error already in e kept.
 */
#ifndef SNAPCTL_VM_H
#define SNAPCTL_VM_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "qmp.h"

/* ---- run state (query-status, stop, cont) ------------------------------- */

enum vm_runstate {
	VM_RS_UNKNOWN = 0,	/* QEMU named none */
	VM_RS_OTHER,		/* one of the states below none of ours */
	VM_RS_RUNNING,
	VM_RS_PAUSED,
	VM_RS_POSTMIGRATE,
	VM_RS_FINISH_MIGRATE,
	VM_RS_INMIGRATE,
};

struct vm_status {
	enum vm_runstate state;
	int running;		/* QEMU's "running" */
	char status[32];	/* QEMU's name of the state; "" if none */
};

/* query-status into *st.  0, or -1 with e filled (*st then zeroed). */
int vm_status(struct qmp *q, struct vm_status *st, struct err *e);

/*
 * 1 when st is a stop that cont ends, one snapctl may have caused: paused
 * (stop), postmigrate or finish-migrate (an outgoing migration's end).
 */
int vm_stopped(const struct vm_status *st);

/* stop.  0, or -1 with e filled ("stop: ..."). */
int vm_stop(struct qmp *q, struct err *e);

/*
 * cont.  The MIGRATION "completed" event comes before the source leaves
 * finish-migrate for postmigrate, and until then cont fails: while
 * query-status says finish-migrate, cont is retried (up to
 * VM_CONT_RETRY_MS).  0, or -1 with e filled ("cont: ...").
 */
#define VM_CONT_RETRY_MS 10000
int vm_resume(struct qmp *q, struct err *e);

/* ---- migration (query-migrate, migrate_cancel) -------------------------- */

struct vm_migration {
	char status[32];	/* "none", "active", ...; "" if none */
	int has_ram;		/* the ram members below are QEMU's */
	uint64_t ram_total;
	uint64_t ram_remaining;
	uint64_t ram_transferred;
	uint64_t dirty_rate;	/* bytes/s: dirty-pages-rate x page-size */
	uint64_t dirty_syncs;	/* dirty-sync-count */
	int64_t downtime_ms;	/* -1 if QEMU did not say */
	char error_desc[512];	/* "" if none */
};

/* query-migrate into *m.  0, or -1 with e filled (*m then empty). */
int vm_migration_query(struct qmp *q, struct vm_migration *m,
    struct err *e);

/* 1 for a status of a migration under way (not none, completed, failed,
 * cancelled; NULL or "": 0). */
int vm_migration_busy(const char *status);

/* 1 for failed, cancelled and postcopy-paused (NULL: 0). */
int vm_migration_failed(const char *status);

/*
 * migrate_cancel, then wait up to wait_ms for the migration to leave the
 * busy states.  One in "device" (past migrate-continue) is first left to
 * end within wait_ms, as QEMU 7.2 can abort on a cancel there; one that
 * is over by then is not cancelled.  A migration still holding the guest
 * at pre-switchover after a few seconds is released with
 * migrate-continue, and one left "cancelling" is nudged with
 * migrate-continue {"state": "cancelling"} every second (QEMU 7.2 can
 * otherwise hang there for good with the guest in finish-migrate: see
 * vm.c).  0 once it is over; -1
 * with e filled when QEMU went away (ERR_QEMU) or wait_ms passed
 * (ERR_TIMEOUT).  An error reply to migrate_cancel itself is not one: the
 * wait tells.  VM_CANCEL_WAIT_MS is the wait snapctl uses.
 */
#define VM_CANCEL_WAIT_MS 15000
int vm_migration_cancel(struct qmp *q, int wait_ms, struct err *e);

/* ---- disks (query-block) ------------------------------------------------ */

/*
 * A VM's disk as query-block describes it, named the way snapctl names
 * disks in manifests: the drive's device name when it has one (-drive),
 * else the id of the device it is attached to (-blockdev + -device
 * id=vd0), else its node name.
 */
struct blockinfo {
	char *id;		/* the name above */
	char *device;		/* "" for -blockdev + -device */
	char *qdev;		/* "/machine/peripheral/vd0/virtio-backend" or NULL */
	char *node;		/* the active layer's node name, or NULL */
	char *file;		/* its image file, or NULL ("json:{...}":
				 * its "file" child's name, a plain file) */
	char *format;		/* "qcow2", "raw", ... or NULL */
	char *backing;		/* its backing file (full name), or NULL */
	int ro;
	uint64_t size;		/* its virtual size, 0 if not said */
	char **chain;		/* "filename" of the image and of each image
				   of its backing-image chain */
	size_t nchain;
};

/* "vd0" from "/machine/peripheral/vd0/virtio-backend"; else a copy. */
char *vm_qdev_id(const char *qdev);

/*
 * The VM's drives with a medium inserted (empty drives are skipped), in
 * query-block's order.  0 with *out (free with vm_disks_free) and *n, or
 * -1 with e filled ("query-block: ...").
 */
int vm_disks_query(struct qmp *q, struct blockinfo **out, size_t *n,
    struct err *e);
void vm_disks_free(struct blockinfo *b, size_t n);

/* ---- the overlay cut (transaction of blockdev-snapshot-sync) ------------ */

/* One disk to cut: its active layer gets a new overlay on top. */
struct vm_overlay {
	const char *device;	/* the drive's device name; NULL or "": */
	const char *node;	/* else the active layer's node name */
	const char *file;	/* the new overlay, an absolute path */
	const char *node_name;	/* the overlay's node name */
	const char *format;	/* NULL: "qcow2" */
	int existing;		/* the caller made the image (QEMU's mode
				 * "existing"): never made nor removed here */
	int created;		/* out: the file may be ours (see below) */
};

/*
 * Put a new overlay on top of each disk in one transaction: all disks or
 * none.  An "existing" overlay is opened as it is (its backing name
 * stays); each other file is made 0600 first (O_EXCL, O_NOFOLLOW: an existing
 * file or symlink is "cannot create the overlay 'FILE': it exists
 * already") when QEMU runs as this user; QEMU creates the image in it
 * (else creates the file itself, and would overwrite one: the caller makes
 * sure none exists).  0: every overlay is active, each created set.  -1
 * with e filled ("transaction: ..."): after an error reply QEMU rolled
 * back and the files it made are removed here (created 0); after a
 * timeout or a disconnect they may exist and be in use, so created stays
 * 1 and the caller decides (vm_overlays_remove()).
 */
int vm_overlays_cut(struct qmp *q, struct vm_overlay *v, size_t n,
    struct err *e);

/* Unlink each overlay created by vm_overlays_cut() (regular files only)
 * and clear created. */
void vm_overlays_remove(struct vm_overlay *v, size_t n);

/* ---- the QEMU process ---------------------------------------------------- */

/*
 * The QEMU process at the other end of q (SO_PEERCRED) and when it started
 * (proc_start_ticks): together they name that process for good.  0, or -1
 * when they cannot be known (a TCP monitor, another PID namespace).
 */
int vm_process(const struct qmp *q, pid_t *pid, uint64_t *start);

#endif
