/*
 * blockinfo.h - a VM's disks as QEMU's query-block describes them, each
 * named the way snapctl names disks in manifests: the drive's device name
 * when it has one (-drive), else the id of the device it is attached to
 * (-blockdev + -device id=vd0), else its node name.  Never prints.
 */
#ifndef SNAPCTL_BLOCKINFO_H
#define SNAPCTL_BLOCKINFO_H

#include <stddef.h>

#include "err.h"
#include "qmp.h"

struct blockinfo {
	char *id;		/* the name above */
	char *device;		/* "" for -blockdev + -device */
	char *qdev;		/* "/machine/peripheral/vd0/virtio-backend" or NULL */
	char *node;		/* the active layer's node name, or NULL */
	char *file;		/* its image file, or NULL */
	char *format;		/* "qcow2", "raw", ... or NULL */
	char *backing;		/* its backing file (full name), or NULL */
	int ro;
};

/* "vd0" from "/machine/peripheral/vd0/virtio-backend"; else a copy. */
char *blockinfo_qdev_id(const char *qdev);

/*
 * The VM's drives with a medium inserted (empty drives are skipped), in
 * query-block's order.  0 with *out (free with blockinfo_free) and *n, or
 * -1 with e filled ("query-block: ...").
 */
int blockinfo_query(struct qmp *q, struct blockinfo **out, size_t *n,
    struct err *e);
void blockinfo_free(struct blockinfo *b, size_t n);

#endif
