/*
 * revert.h - make a stopped VM's own disk paths hold a checkpoint's disk
 * state, so that its unchanged command line starts the reverted VM.
 * Never prints.
 *
 * For each disk of checkpoint NAME (its "vm_path" P, its state "file" S):
 *
 *   before:  P (inode A: the disk the VM last wrote) -> ... -> S -> ...
 *   after:   P (inode C, new, 0600, empty) -> S
 *            STEM.pre-revert-NAME.qcow2 (inode A, kept) -> ...
 *
 * Checks first, for every disk, before anything changes: S is the file
 * the checkpoint recorded (format, backing, size, mtime; device and inode
 * when the manifest has them) and every file of its backing chain exists;
 * P is a regular file (or missing) and no process holds it open
 * (/proc/PID/fd, device and inode); the store has no recovery note (an
 * interrupted checkpoint: recover first); a leftover temporary name T
 * (below) is an untouched overlay of snapctl's.
 *
 * Steps per disk, each leaving P either the old disk or the new overlay:
 *   0. remove the hidden names ".<P's name>.snapctl-*" that are links of
 *      P (QEMU's names of the current disk: that QEMU is gone);
 *   1. write T = ".<P's name>.revert-NAME" beside P: an empty qcow2
 *      (diskswap_overlay_write(): 0600, O_EXCL|O_NOFOLLOW, fsynced)
 *      backed by S's name relative to P's directory (absolute when S is
 *      elsewhere); fsync the directory;
 *   2. unless discarded: link(P, K), K = "STEM.pre-revert-NAME.qcow2"
 *      beside P (STEM diskfile_stem(P), so names never compound; "-2",
 *      "-3"... when taken); fsync the directory;
 *   3. rename(T, P); fsync the directory.
 * With discard, old P goes with step 3 (its last name) only when snapctl
 * made it: its header is one diskswap_overlay_write() writes and its
 * backing file is a checkpoint's state of the same P.  Else it is kept as
 * K and the report says why.
 *
 * Every step is idempotent, so a run killed anywhere is finished by
 * running revert again: a disk whose P already is an untouched overlay on
 * S is left as it is ("already"); a K that is a link of P is reused; a T
 * left untouched is written again.  A killed run that reverted some disks
 * and not others leaves each disk a valid chain.
 *
 * Then, for each P, store_revert_write(): the next checkpoint of a VM
 * started on P names NAME as its parent.
 */
#ifndef SNAPCTL_REVERT_H
#define SNAPCTL_REVERT_H

#include <jansson.h>

#include "err.h"

struct revert_opts {
	const char *store;
	const char *name;
	int discard;		/* no pre-revert layer for a disk snapctl made */
	int dry_run;		/* every check, nothing changed */
	int lock_wait_ms;	/* store_lock() */
};
#define REVERT_OPTS_INIT { NULL, NULL, 0, 0, 0 }

/*
 * Revert to checkpoint o->name.  0 with *report (new reference):
 * {name, dry_run, disks: [{device, path, state, backing (T's backing
 * name), kept (K's path, or null), discarded (bool), already (bool),
 * note (why old P was kept under --discard, or null)}]}.
 * -1 with e filled, nothing changed: ERR_USAGE (bad name), ERR_FAIL (no
 * such checkpoint, a manifest without vm_path, a recovery note, P not a
 * regular file, a T that is not snapctl's), ERR_MISMATCH (a state file
 * changed, missing or replaced, a broken chain below it, P open by a
 * process: "disk 'vd0': '/vm/d0.qcow2' is open by process 123
 * (qemu-system-x86): stop the VM first"), ERR_LOCKED.  A failure midway
 * (a write, a rename) names the step; what was done stays valid and a
 * new run finishes it.
 * Test hook: SNAPCTL_TEST_HOLD_REVERT=STEP:MS sleeps at STEP ("written"
 * after step 1, "linked" after 2, "renamed" after 3) of each disk.
 */
int revert_run(const struct revert_opts *o, json_t **report, struct err *e);

#endif
