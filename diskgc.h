/*
 * diskgc.h - which disk files the deletion of checkpoints frees, for
 * "delete --disks" and "prune --disks", and which restore overlays the
 * sweep removes (restoredir.h).  A file goes only if snapctl made it (an
 * "overlay" of some manifest, a "file" with "file_made_by", a recorded
 * restore overlay), no remaining checkpoint names it, no file that stays
 * is backed by it (qcow2 headers, followed to a fixed point), no process
 * holds it open and the VM, when asked, does not use it.  Never prints.
 */
#ifndef SNAPCTL_DISKGC_H
#define SNAPCTL_DISKGC_H

#include <jansson.h>

#include "err.h"

struct qmp;

/*
 * The files a running VM uses: the "filename" of every inserted image of
 * query-block and of each one's backing-image chain (vm_disks_query()).
 * New reference (an array of strings), or NULL with e filled (the reason,
 * without the command's name: the caller adds it).
 */
json_t *diskgc_vm_files(struct qmp *q, struct err *e);

struct diskgc_opts {
	const json_t *all;	/* every manifest of the store (store_list()),
				 * those being deleted included */
	const json_t *gone;	/* names (strings) of the deleted ones */
	const json_t *vm_files;	/* diskgc_vm_files(), or NULL */
	int dry_run;		/* decide, remove nothing */
	const json_t *extra;	/* more candidates: images merges took out
				 * of their chains (diskmerge.h), each
				 * {"file", "dev", "ino"}: made by snapctl
				 * when dev and ino are its own; or NULL */
	/*
	 * Restore overlays (restoredir.h), or NULL: [{"file", "candidate",
	 * "dev", "ino"}].  Each one's chain pins what it backs onto; those
	 * with candidate true are candidates too, made by snapctl when
	 * their device and inode are dev and ino.
	 */
	const json_t *restores;
};
#define DISKGC_OPTS_INIT { NULL, NULL, NULL, 0, NULL, NULL }

/*
 * Consider every disk file ("file" and "overlay") the gone checkpoints
 * name and remove those that may go, overlays before the files that back
 * them.  Call it after the checkpoints were deleted (or instead, with
 * dry_run).  *report (new reference) gets one object per distinct file, in
 * manifest order: {"file": PATH, "removed": BOOL, "reasons": [STRING...]}
 * ("removed": would be, with dry_run; "reasons" says why it stays, empty
 * when it goes; "bytes": what it took on disk).  *unseen gets the number of processes whose open files
 * could not be inspected (no permission).  0, or -1 with e filled when a
 * file could not be removed (the report says which; it and its backing
 * chain were kept, the others were still done).
 */
int diskgc_run(const struct diskgc_opts *o, json_t **report, int *unseen,
    struct err *e);

#endif
