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

#endif
