/*
 * restoredir.h - where restore puts the overlays it cuts on the disks of a
 * restored VM, the store's record of each, and the sweep that removes
 * those no process holds any more.  Never prints.
 *
 * Layout:
 *   STORE/.restores/                          0700, made on first use
 *   STORE/.restores/STEM.restore-TIME.qcow2   an overlay (0600; or in the
 *                                             directory --overlay-dir names;
 *                                             STEM: diskfile_stem() of the
 *                                             checkpoint's state file, "d0.c1"
 *                                             for d0.c1.qcow2)
 *   STORE/.restores/OVERLAY-NAME.json         its record: {"snapctl_restore":
 *                                             1, "overlay", "checkpoint",
 *                                             "device", "created", "owner":
 *                                             {"pid", "start"} while the
 *                                             restore runs, then "dev",
 *                                             "ino", and "swap":
 *                                             {"dev", "ino"} once a
 *                                             checkpoint of the restored
 *                                             VM swapped it); fsynced
 *
 * The record comes first (published with a rename that never replaces),
 * naming the restoring process as its owner; the overlay file next; once
 * QEMU has the overlay open (or the restore gives up on it) the record gets
 * the file's device and inode and loses its owner.  So at every instant an
 * overlay snapctl made is recorded, and an overlay QEMU has not opened yet
 * belongs to a live owner.
 *
 * The sweep (restoredir_collect() + diskgc_run() + restoredir_settle())
 * removes a recorded overlay when its owner is gone, it is the file its
 * record names (same device and inode; a record without them, from a
 * restore killed before QEMU opened the overlay, proves only files inside
 * STORE/.restores), no process holds it open, no checkpoint of the store
 * names it or has it in a backing chain, and no file that stays is backed
 * by it (diskgc.h).  A record whose overlay is gone, or is another file
 * now, is dropped; a file is never removed without a record.
 *
 * A checkpoint of a restored VM swaps the overlay's path as it swaps any
 * VM's disk (diskswap.h): the path stays the VM's current disk (a new
 * file the record learns before the cut: restoredir_follow_swap()), the
 * checkpoint's state goes beside it as STEM.NAME.qcow2 (its manifest
 * records and keeps it; names do not grow: the stem stays the state
 * file's), with the swap's hidden link .BASE.snapctl-NAME of the path.
 * The sweep keeps the path while a checkpoint names it as its VM's disk,
 * and removes the hidden links of a file it removes with it.
 */
#ifndef SNAPCTL_RESTOREDIR_H
#define SNAPCTL_RESTOREDIR_H

#include <jansson.h>

#include "err.h"

#define RESTOREDIR_NAME ".restores"

/* One overlay of a restore and its record; RESTOREDIR_SLOT_INIT. */
struct restoredir_slot {
	char *overlay;		/* absolute path */
	char *record;		/* STORE/.restores/NAME.json */
};
#define RESTOREDIR_SLOT_INIT { NULL, NULL }

/*
 * The directory for a restore's overlays, absolute: dir if given (it must
 * exist and be a directory), else STORE/.restores, made 0700 if missing
 * (a symlink or a non-directory there is refused; group and other access
 * is taken away).  The records always go to STORE/.restores, made the
 * same way.  Allocated, or NULL with e filled (ERR_FAIL).
 */
char *restoredir_dir(const char *store, const char *dir, struct err *e);

/*
 * Choose the name of the overlay to go on top of the image file of disk
 * device for checkpoint, in dir (restoredir_dir()): STEM.restore-STAMP
 * .qcow2 (STEM: diskfile_stem(file)), or with "-N" after STAMP when that
 * name is taken in dir or among the records; and publish its record
 * naming this process as the owner.  The overlay itself is not created.
 * 0 with slot filled, or -1 with e filled.
 */
int restoredir_reserve(const char *store, const char *dir, const char *file,
    const char *stamp, const char *checkpoint, const char *device,
    struct restoredir_slot *slot, struct err *e);

/*
 * The overlay exists and QEMU has it (or the restore leaves it to the
 * user): record its device and inode, drop the owner.  A missing overlay
 * drops the record.  0, or -1 with e filled (the record stays, with its
 * owner: the next sweep after this process proves the file by its place).
 */
int restoredir_commit(const struct restoredir_slot *slot, struct err *e);

/*
 * A checkpoint's disk swap (diskswap.h) is about to rename tmp, the new
 * overlay it made, over path: when path is a recorded restore overlay
 * (the record STORE/.restores/BASE.json of store, or of the .restores
 * directory path is in) whose device and inode are the file at path now,
 * the record learns tmp's as "swap": {"dev", "ino"}, fsynced, before the
 * cut.  Whichever way the swap ends, the record proves the file at path
 * (the sweep accepts either identity, and the next swap keeps the one
 * found there).  A record of another file, of a restore still running,
 * or none: nothing changes (the sweep then keeps the file, never removes
 * it).  0, or -1 with e filled when the record cannot be written.
 */
int restoredir_follow_swap(const char *store, const char *path,
    const char *tmp, struct err *e);

/* The overlay was removed or never made: remove its record.  Frees slot. */
void restoredir_drop(struct restoredir_slot *slot);

/* Free slot's names; the record stays. */
void restoredir_slot_release(struct restoredir_slot *slot);

/* What the sweep works on (restoredir_collect()). */
struct restoredir_gc {
	/*
	 * For diskgc_opts.restores: [{"file", "candidate", "dev", "ino"}],
	 * every recorded overlay that exists; candidate false for those
	 * decided here (their chains still pin what they back onto).
	 */
	json_t *files;
	json_t *records;	/* [{"file", "checkpoint", "record"}] */
	json_t *kept;		/* report entries decided here */
	json_t *dropped;	/* records to drop after the sweep */
};
#define RESTOREDIR_GC_INIT { NULL, NULL, NULL, NULL }

/*
 * Read the records of STORE/.restores.  A record whose owner process still
 * runs is kept ("a restore in progress (snapctl pid N)"); so is every
 * overlay when the store has unreadable manifests (bad, store_list()'s,
 * leaving out those named in gone: "checkpoint 'x' cannot be read").  A
 * record whose overlay is missing, or is another file than recorded, is
 * to be dropped (the file stays).  0 (also when there is no
 * STORE/.restores), or -1 with e filled when it cannot be read.
 */
int restoredir_collect(const char *store, const json_t *bad,
    const json_t *gone, struct restoredir_gc *g, struct err *e);

/*
 * After diskgc_run() with g->files: move the entries of the recorded
 * overlays out of *disks (its report) into *restores (new reference),
 * each with "checkpoint" added, followed by g->kept; unless dry_run, drop
 * the records of overlays removed and of those collect found gone.  With
 * only_gone non-NULL, kept entries appear only for overlays of the
 * checkpoints it names (removed ones always appear).
 */
void restoredir_settle(struct restoredir_gc *g, json_t *disks,
    json_t **restores, const json_t *only_gone, int dry_run);

void restoredir_gc_release(struct restoredir_gc *g);

/*
 * The whole sweep of store (no lock taken: removing is idempotent, and a
 * restore in progress is protected by its owner): every recorded overlay
 * that may go is removed (with dry_run: said).  *report (new reference):
 * [{"file", "checkpoint", "removed", "reasons", "bytes"}], as diskgc_run();
 * *unseen as diskgc_run().  0, or -1 with e filled.
 */
int restoredir_sweep(const char *store, int dry_run, json_t **report,
    int *unseen, struct err *e);

#endif
