/*
 * diskfile.h - what snapctl can tell about a disk image file without QEMU:
 * its format (qcow2 or raw, from the magic), the backing file its qcow2
 * header names, its size and modification time; and whether a checkpoint's
 * disk file is still what the manifest recorded.  Never prints.
 */
#ifndef SNAPCTL_DISKFILE_H
#define SNAPCTL_DISKFILE_H

#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "err.h"

struct diskfile {
	char format[8];		/* "qcow2" or "raw" */
	char *backing;		/* as the header names it, resolved against
				 * the image's directory; NULL if none */
	uint64_t size;
	int64_t mtime_ns;
	dev_t dev;
	ino_t ino;
};

/*
 * Look at the file at path (symlinks followed: disks may be links).  0, or
 * -1 with e filled (ERR_FAIL: missing, unreadable, a broken qcow2 header).
 * Free with diskfile_release().
 */
int diskfile_probe(const char *path, struct diskfile *out, struct err *e);
void diskfile_release(struct diskfile *d);

/* 1 if a and b name the same file (device and inode), else 0. */
int diskfile_same(const char *a, const char *b);

/*
 * Check one entry of a manifest's "disks": its "file" exists, has the
 * recorded "format" (qcow2 and raw are told apart; other formats are not
 * checked) and "backing", and its "size" and "mtime_ns" are unchanged
 * since the checkpoint.  0, or -1 with e filled: ERR_MISMATCH with "disk
 * 'vd0': '/x/d0.qcow2' changed since the checkpoint (...)" and the like,
 * ERR_FAIL when the entry is malformed or the file cannot be read.
 */
int diskfile_check(const json_t *disk, struct err *e);

/*
 * The stem for a file snapctl puts on top of the image at path (an overlay
 * "STEM.NAME.qcow2", a restore's "STEM.restore-TIME.qcow2"): walking path's
 * backing chain (qcow2 headers, at most DISKFILE_STEM_DEPTH files) from the
 * bottom, the stem of the lowest image whose name every image above it
 * extends as "STEM.<more>".  So d0.qcow2 <- d0.c1.qcow2 <-
 * d0.restore-T.qcow2 gives "d0" whichever store made them, and names never
 * grow; an image that does not extend the one below it ("vm1.qcow2" on
 * "debian.qcow2") starts its own stem.  A chain that cannot be read ends
 * where it cannot: at worst path's own name up to its last '.'.
 * Allocated.
 */
#define DISKFILE_STEM_DEPTH 256
char *diskfile_stem(const char *path);

#endif
