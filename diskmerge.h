/*
 * diskmerge.h - merge the disk layers of deleted checkpoints into their
 * neighbours (delete --disks, prune --disks), so a VM's backing chain stays
 * at most (kept checkpoints + 1) deep.  Reasons only in terms of manifests
 * and qcow2 headers (and the running VM's block graph), never file names.
 *
 * For each disk of a deleted checkpoint, S is its "file" (the frozen image
 * holding its state) and U the one image whose backing file is S:
 *   S has a backing file B:         stream S into U (U's backing becomes B)
 *   S is the bottom, U is frozen:   commit U into S (S takes U's state;
 *                                   manifests naming U now name S)
 *   S is the bottom, U is active:   stream S into U (U gets all of it)
 * Live (QMP block-stream / block-commit, the guest runs on) when the VM at
 * -s holds S, else offline (qemu-img, no shell).  Live, QEMU's chain is
 * mapped to the files by depth (its names after a disk swap are not the
 * files': diskswap.h); every job gets an explicit backing-file (the
 * relative name, as offline); the image QEMU knows by the VM's path is
 * never reopened (a commit into or through it becomes "stream S into U";
 * a stream into it is kept until the VM restarted); a gone name QEMU
 * reopens a node by for the job is linked to that node's file for the job
 * (the step's "links", removed after it, by recover too).  Every step is written to
 * the store's merge journal first (store_journal_write()); the kept
 * checkpoints' manifests are then updated, each atomically; a killed run is
 * finished by diskmerge_run() on the same journal.  S is kept (with a
 * reason) when an image no manifest and no VM names backs onto it, two
 * images do, or another process holds S or U open.  Never prints.
 */
#ifndef SNAPCTL_DISKMERGE_H
#define SNAPCTL_DISKMERGE_H

#include <stdint.h>

#include <jansson.h>

#include "err.h"

struct qmp;
struct store;

/* Called about every 200 ms of a live job, and once per offline step. */
typedef void (*diskmerge_progress_fn)(void *opaque, const char *from,
    const char *into, uint64_t done, uint64_t total);

struct diskmerge_opts {
	struct store *store;	/* locked */
	struct qmp *q;		/* the VM at -s, or NULL */
	diskmerge_progress_fn progress;	/* or NULL */
	void *opaque;
};
#define DISKMERGE_OPTS_INIT { NULL, NULL, NULL, NULL }

/*
 * A new journal for deleting the checkpoints whose manifests are gone_m
 * (borrowed array): {"gone": [...], "step": null, "left": []}.  New
 * reference.
 */
json_t *diskmerge_journal_new(const json_t *gone_m);

/*
 * Do the merges journal (a store_journal_read() or diskmerge_journal_new()
 * document, updated in place and in the store at every step) asks for:
 * first a step a killed run left, then every merge the deleted
 * checkpoints' disks allow, oldest first, until none is left.  The
 * manifests of the kept checkpoints (read from the store) are updated
 * after each.  *report (new reference) gets one object per disk
 * considered that was merged or kept: {"checkpoint", "device", "file",
 * "merged": BOOL, "how": "stream"|"commit", "live": BOOL, "from", "into",
 * "bytes", "seconds"} or {..., "merged": false, "reason": STRING}.  The
 * journal's "left" lists the images merges took out of chains, with the
 * device and inode that prove snapctl made them ({"file", "dev", "ino"};
 * dev null when nothing proves it): diskgc_run()'s "extra".  0, or -1 with
 * e filled (ERR_INTR after SIGINT: a live job was cancelled, the chain is
 * valid and the journal says what is left).
 */
int diskmerge_run(const struct diskmerge_opts *o, json_t *journal,
    json_t **report, struct err *e);

/*
 * Environment hooks for the tests: SNAPCTL_TEST_MERGE_HOLD_MS holds each
 * step that long after its job finished and before the manifests are
 * updated (saying "merge: holding" on stderr is the caller's business: the
 * hook writes that line itself, as the one exception); SNAPCTL_TEST_MERGE
 * _SPEED limits a live job to that many bytes/s.
 */
#define DISKMERGE_HOLD_ENV "SNAPCTL_TEST_MERGE_HOLD_MS"
#define DISKMERGE_SPEED_ENV "SNAPCTL_TEST_MERGE_SPEED"

#endif
