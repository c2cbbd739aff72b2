/*
 * diskswap.h - the disk swap of a checkpoint: the VM's own path P stays
 * its current disk.  Before the cut P is hard-linked to the checkpoint's
 * layer L ("<dir>/<stem>.<ckpt>.qcow2") and snapctl makes the new overlay,
 * an empty qcow2 at the temporary name T ("<dir>/.<base>.snapctl-<ckpt>",
 * 0600) whose backing file is L's relative name; QEMU cuts onto it (mode
 * "existing"); T is renamed over P, then linked again to it.  At every
 * step the chain that starts at P is valid and every backing name in it
 * names a file; recover finishes a swap QEMU cut, or undoes one it did not.
 *
 * Why T stays as a hidden link of P: QEMU keeps the name it opened a node
 * under, and reopens a node by that name when it changes its mode (the
 * next cut makes the active layer read-only).  So QEMU's name of the active
 * layer must name it: T does.  Once the next cut made that layer read-only
 * its T goes (never reused: it holds a checkpoint's name), so a later
 * read-write reopen of it fails instead of opening another file.  QEMU's
 * name of the base image the VM started with is P, which after the first
 * swap names the current disk: a read-write reopen of that read-only node
 * (block-commit into it) must first give it another file node.
 * Never prints.
 */
#ifndef SNAPCTL_DISKSWAP_H
#define SNAPCTL_DISKSWAP_H

#include <jansson.h>

#include "err.h"
#include "qmp.h"

#define DISKSWAP_TMP_INFIX ".snapctl-"

struct diskswap {
	char *path;		/* P, absolute */
	char *layer;		/* L, beside P */
	char *tmp;		/* T, beside P */
	char *rel;		/* L's name relative to P's directory */
	char *prev;		/* QEMU's name of the active layer when it is
				 * the T of an earlier swap, else NULL */
	const char *device;	/* the drive, or the new overlay's node */
	const char *node;	/* the new overlay's node name */
	uint64_t size;		/* the disk's virtual size */
	int linked;		/* L made by us */
	int created;		/* T made by us */
};

/*
 * The VM's own path for the file name QEMU reports as a disk's active
 * image: "<dir>/X" for "<dir>/.X.snapctl-NAME" (an earlier swap's T), else
 * a copy.  *pending (if not NULL) is set when that T exists and is not a
 * link of X: a swap not finished (see diskswap_recover()).
 */
char *diskswap_vm_path(const char *qemu_file, int *pending);

/*
 * Fill s (zeroed first) for the VM's path p, QEMU's name qemu_file of the
 * active image, checkpoint ckpt.  0, or -1 with e filled when L or T
 * exists already (named).
 */
int diskswap_plan(struct diskswap *s, const char *p, const char *qemu_file,
    const char *ckpt, struct err *e);
void diskswap_release(struct diskswap *s);

/* link(P, L), and P to prev if that is gone; T made; fsync of the
 * directory.  0, or -1 with e filled. */
int diskswap_link(struct diskswap *s, struct err *e);

/* Unlink T if we made it, L if we linked it and it is still P's inode (a
 * rollback: QEMU did not cut). */
void diskswap_unlink_layer(struct diskswap *s);

/*
 * After QEMU cut onto T: rename(T, P), link(P, T), unlink prev, fsync of
 * the directory.  0, or -1 with e filled (the step named).  Test hook:
 * SNAPCTL_TEST_HOLD_SWAP=STEP:MS (checkpoint.h) sleeps at a step.
 */
int diskswap_finish(struct diskswap *s, struct err *e);

/* The recovery note's entry for s: {path, layer, tmp, rel, prev, device,
 * node}.  New reference. */
json_t *diskswap_note(const struct diskswap *s);

/*
 * Recover the swap a note's entry describes: when QEMU's active layer is
 * the entry's node, finish it (the steps of diskswap_finish() not done);
 * else undo it (remove T, and L if it is a link of P).  Appends what it
 * did to actions.  0, or -1 with e filled.
 */
int diskswap_recover(struct qmp *q, const json_t *entry, json_t *actions,
    struct err *e);

#endif
