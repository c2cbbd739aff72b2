/*
 * layer.h - the disk layers of version-2 checkpoints (issue 11): the
 * checkpoint's state of each disk is a qcow2 file STORE/NAME/<disk>.qcow2,
 * either full or a delta whose backing file is ../BASE/<disk>.qcow2, the
 * layer of the same disk in checkpoint BASE.  The VM's own disk never
 * moves.  Design: /work/wt/ISSUE11-DESIGN.md until the man page has it.
 * Never prints.
 */
#ifndef SNAPCTL_LAYER_H
#define SNAPCTL_LAYER_H

#include <jansson.h>

#include "err.h"

/*
 * The layer file name for a disk named device: every byte outside
 * [A-Za-z0-9_-] becomes '_', then ".qcow2".  Callers make names unique
 * within one checkpoint (layer_name(dev, n): n > 1 appends "-n").
 * Allocated.
 */
char *layer_name(const char *device, int n);

/*
 * The image that holds checkpoint NAME's state of disk (one object of its
 * manifest's "disks"), to read or to back an overlay onto: for a version-2
 * disk (it has "layer") STORE_DIR/NAME/<layer>; for a version-1 disk its
 * "file".  Allocated, or NULL with e filled when the entry names neither.
 */
char *layer_state_path(const char *store_dir, const char *name,
    const json_t *disk, struct err *e);

#endif
