/*
 * diskswap.h - the disk swap of a checkpoint: the VM's own path P stays
 * its current disk, the checkpoint's state goes to a file F snapctl names.
 *
 *   before:  P (inode A, the VM writes it) -> A's backing chain
 *   after:   P (inode C, new, the VM writes it) -> F (inode A) -> ...
 *
 * Steps, each leaving a valid chain on disk (every backing name names a
 * file that exists):
 *   prepare (guest running): link(P, F); link(P, Q) when QEMU names the
 *     active image Q, an earlier swap's temporary name (see below); make
 *     O, the temporary name ".<base of P>.snapctl-<checkpoint>" beside P:
 *     an empty qcow2 (0600, O_EXCL|O_NOFOLLOW, written by snapctl) whose
 *     backing file is F; fsync O and the directory.
 *   cut (guest held): blockdev-snapshot-sync mode "existing" onto O.
 *   finish: link(O, O.new), rename(O.new, P): P names the new overlay and
 *     so does O still; the temporary names of earlier swaps that now name
 *     the state F (Q among them) go; fsync the directory.
 * undo (the cut did not happen) removes O, Q (if linked here) and F, only
 * while they are links of P's inode.
 *
 * Why O stays and why Q: QEMU keeps the name it opened a node under and
 * reopens a node's file by that name when its mode changes: the cut makes
 * the old active image read-only that way, and a -drive image
 * (auto-read-only) is reopened at every migration's end and start.  So O,
 * QEMU's name of the VM's active image, is kept as a hidden link of P for
 * as long as that QEMU runs; the next checkpoint's cut reopens it
 * read-only by that name (Q), then it goes.  A QEMU that restarted opens
 * P; the O it left is removed by the next checkpoint.  Hazard left for
 * whoever reopens older nodes read-write (block commit into them): QEMU's
 * name of the VM's original image is P, which after the first swap names
 * the current disk, and QEMU's names of older layers are gone.
 * Never prints.
 */
#ifndef SNAPCTL_DISKSWAP_H
#define SNAPCTL_DISKSWAP_H

#include <stdint.h>

#include <jansson.h>

#include "err.h"
#include "qmp.h"

#define DISKSWAP_TMP_INFIX ".snapctl-"

struct diskswap {
	char *path;		/* P, absolute */
	char *layer;		/* F, the checkpoint's state */
	char *tmp;		/* O, beside P */
	char *backing;		/* O's backing name: F relative to P's
				 * directory when it is there, else F */
	char *qname;		/* QEMU's name of the active image when it is
				 * an earlier swap's O that is gone: linked
				 * to P for the cut; else NULL */
	const char *node;	/* the new overlay's node name */
	uint64_t size;		/* the disk's virtual size */
	int linked;		/* F made by us */
	int qlinked;		/* qname made by us */
	int created;		/* O made by us */
	int renamed;		/* O is P now */
};

/*
 * The VM's own path for the name QEMU gives a disk's active image:
 * "<dir>/X" for "<dir>/.X.snapctl-NAME" (an earlier swap's O) when
 * "<dir>/X" exists, else a copy.  *pending is set when that O exists as a
 * file of its own (not a link of X): a swap not finished, for recover.
 */
char *diskswap_vm_path(const char *qemu_file, int *pending);

/*
 * Fill s (zeroed first) to swap the VM's path p into layer (absolute),
 * qemu_file QEMU's name of the active image, ckpt the checkpoint's name,
 * size the disk's virtual size.  0, or -1 with e filled (ERR_FAIL): F or
 * O exists already, F elsewhere than beside P while P's image names its
 * backing file by a relative name.
 */
int diskswap_plan(struct diskswap *s, const char *p, const char *qemu_file,
    const char *layer, const char *ckpt, uint64_t size, struct err *e);
void diskswap_release(struct diskswap *s);

/*
 * The VM's command line argv (the launch record's, borrowed; NULL: not
 * known) must not give the qcow2 image at p a "backing" of its own
 * ("backing": null or a node): started again from it, QEMU would not open
 * the states below p.  0, or -1 with e filled (ERR_FAIL) saying so and
 * naming device for --exclude.
 */
int diskswap_cmdline_check(const json_t *argv, const char *p,
    const char *device, struct err *e);

/*
 * The overlay snapctl writes itself: an empty qcow2 v3 image of size
 * bytes at path (0600, O_EXCL, O_NOFOLLOW; fsynced) backed by the qcow2
 * image named backing (as given: relative names are resolved against
 * path's directory): the header with a backing format extension and the
 * name, a refcount table, one refcount block, an empty L1 table; 64 KiB
 * clusters, 16-bit refcounts.  0, or -1 with e filled (ERR_FAIL), nothing
 * left at path.
 */
int diskswap_overlay_write(const char *path, const char *backing,
    uint64_t size, struct err *e);

/* 1 if the image at path is still as diskswap_overlay_write() made it
 * with backing name backing: nothing written into it since. */
int diskswap_overlay_pristine(const char *path, const char *backing);

/*
 * The backing name (as written) when the image at path has the header
 * diskswap_overlay_write() writes (written into since or not: a swap's
 * overlay, a revert's), else NULL.  QEMU's own qcow2 images have another
 * header length.  Allocated.
 */
char *diskswap_overlay_ours(const char *path);

/* The prepare steps above.  0, or -1 with e filled and what was done undone. */
int diskswap_prepare(struct diskswap *s, struct err *e);

/* Undo a swap whose cut did not happen: remove O, and Q and F while they
 * are links of P. */
void diskswap_undo(struct diskswap *s);

/*
 * After the cut: link(O, O.new), rename(O.new, P), drop the earlier
 * temporary names of F.  No fsync: diskswap_sync() (the guest is usually
 * held meanwhile).  0, or -1 with e filled (the step named).  Test hook: SNAPCTL_TEST_HOLD_SWAP=STEP:MS sleeps at STEP
 * ("linked", "prepared" before the cut, "cut" after it, "renamed").
 */
int diskswap_finish(struct diskswap *s, struct err *e);
int diskswap_sync(struct diskswap *s, struct err *e);

/*
 * Remove P's temporary names "<dir of P>/.<base of P>.snapctl-*" that are
 * links of the file at of (same device and inode), except keep (NULL:
 * none).  For finish (the earlier swaps' names of the state
 * layer) and for whoever removes a file that was a VM's path (diskgc.c):
 * a link of a file that goes goes with it.
 */
void diskswap_drop_names(const char *path, const char *keep, const char *of);

/* Test hook (see diskswap_finish()). */
void diskswap_test_hold(const char *step);

/* The recovery note's entry for s.  New reference. */
json_t *diskswap_note(const struct diskswap *s);

/*
 * Recover the swap a note's entry describes.  With q (QEMU answers): when
 * QEMU's active image of the disk is the entry's node, the cut happened:
 * finish; else undo, but an O that holds writes (a QEMU that is gone cut
 * onto it, and the VM restarted without it) is kept and said so.  Without q (QEMU is gone): undo while O is as snapctl
 * wrote it (the guest never wrote into it), else finish (O holds writes:
 * P must lead to them).  Appends what it did to actions.  0, or -1 with e
 * filled.
 */
int diskswap_recover(struct qmp *q, const json_t *entry, json_t *actions,
    struct err *e);

#endif
