/*
 * lazy.h - the stream of a lazy restore: a memory image sent to a QEMU
 * that waits with -incoming and postcopy-ram on, the way QEMU's own
 * postcopy sends it, so the guest runs as soon as its device state is in.
 * The pages follow on two threads: one reads the pages the guest touched
 * and has not got yet off the return path (QEMU's page requests), the
 * other sends those pages' chunks first and every other page in (block,
 * offset) order.  Never prints.
 */
#ifndef SNAPCTL_LAZY_H
#define SNAPCTL_LAZY_H

#include <stdint.h>

#include "err.h"
#include "imgread.h"

struct lazy;

/*
 * Start sending r's stream on fd, a connected stream socket that QEMU
 * reads the stream from and writes its return path to (borrowed: the
 * caller closes it after lazy_free()).  r stays the caller's but only the
 * sending thread uses it until lazy_free().  SIGPIPE must be ignored.
 * NULL with e filled: ERR_FAIL when the image's device state cannot be
 * sent this way (no complete tail, larger than a postcopy package).
 */
struct lazy *lazy_start(struct img_reader *r, int fd, struct err *e);

/*
 * Where the sending is: 0 while it goes on, 1 once every page and the end
 * of the stream were handed to the socket, -1 when it failed, with e
 * filled (a failed write has sys_errno set: EPIPE once QEMU closed its
 * end; a bad chunk of the image is ERR_FAIL).
 */
int lazy_poll(struct lazy *l, struct err *e);

struct lazy_stats {
	uint64_t stream_bytes;	/* written to the socket */
	uint64_t pages;		/* page records sent, zero pages included */
	uint64_t requests;	/* page requests QEMU sent */
	uint64_t pages_on_request; /* sent first because of a request */
	int shut;		/* QEMU closed its return path with SHUT */
	uint32_t shut_error;	/* SHUT's value: non-zero when it failed */
};
void lazy_stats(struct lazy *l, struct lazy_stats *st);

/*
 * Stop the threads (shutting fd down: QEMU sees the stream end), wait
 * for them and free l.  Call it after lazy_poll() said 1 and QEMU said
 * the migration completed, or to give up.  NULL is fine.
 */
void lazy_free(struct lazy *l);

#endif
