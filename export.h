/*
 * export.h - regenerate a QEMU migration stream from a memory image, in
 * QEMU's own shape (see stream.h's writer): what "snapctl export" writes to
 * a file and what "snapctl restore" feeds QEMU.  Never prints.
 */
#ifndef SNAPCTL_EXPORT_H
#define SNAPCTL_EXPORT_H

#include <stdint.h>

#include "err.h"
#include "imgread.h"

/*
 * Write the stream of r to fd (blocking writes; SIGPIPE must be ignored).
 * what names the destination in messages ("cannot write 'what': ...").
 * Stops with ERR_INTR once sig_caught() says a signal came.  On success
 * *bytes is the stream's length.  0, or -1 with e filled (ERR_FAIL for a
 * bad chunk or a failed write, with sys_errno set for the latter).  Frames
 * are decoded ahead on up to 4 threads; the writes are the caller's.
 */
int img_export(struct img_reader *r, int fd, const char *what,
    uint64_t *bytes, struct err *e);

/*
 * The same with nthreads threads decoding, the caller one of them (see
 * img_foreach_page_parallel(): <= 0 the CPUs we may run on, at most 4; 1,
 * the caller alone); img_export() is this with 0.  The stream is the same
 * byte for byte whatever nthreads is.
 */
int img_export_parallel(struct img_reader *r, int fd, const char *what,
    int nthreads, uint64_t *bytes, struct err *e);

/*
 * img_export() for a reader that a stream cut short would harm: a signal
 * does not stop it (restore's stream to a QEMU, which cannot take another
 * once its load began).  hold_ms > 0 is for tests only: sleep that long,
 * once, after the stream's first MiB was written.
 */
int img_export_whole(struct img_reader *r, int fd, const char *what,
    int hold_ms, uint64_t *bytes, struct err *e);

#endif
