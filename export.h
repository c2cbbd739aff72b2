/*
 * export.h - regenerate a QEMU migration stream from a memory image, in
 * QEMU's own shape (see stream.h's writer): what "snapctl export" writes to
 * a file and what "snapctl restore" feeds QEMU.  Never prints.
 */
#ifndef SNAPCTL_EXPORT_H
#define SNAPCTL_EXPORT_H

#include <stdint.h>

#include "err.h"
#include "save.h"

/*
 * Write the stream of r to fd (blocking writes; SIGPIPE must be ignored).
 * what names the destination in messages ("cannot write 'what': ...").
 * Stops with ERR_INTR once sig_caught() says a signal came.  On success
 * *bytes is the stream's length.  0, or -1 with e filled (ERR_FAIL for a
 * bad chunk or a failed write, with sys_errno set for the latter).
 */
int img_export(struct img_reader *r, int fd, const char *what,
    uint64_t *bytes, struct err *e);

#endif
