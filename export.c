/*
 * export.c - a memory image back into a migration stream: the header,
 * configuration and block list, every present page once in (block, offset)
 * order, END, and the device tail verbatim.  Frames are decoded ahead on
 * a few threads; the records are written on the caller's.
 */
#include <stdlib.h>
#include <time.h>

#include "export.h"
#include "sig.h"
#include "streamgen.h"
#include "util.h"

#include "banned.h"

#define EXPORT_HOLD_AT (1u << 20)

struct export_out {
	int fd;
	const char *what;
	int intr;		/* a signal stops the export */
	int hold_ms;		/* test only: pause once, after EXPORT_HOLD_AT */
	uint64_t written;
};

/* A sleep that a signal does not cut short. */
static void
hold(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0)
		;
}

static int
export_write(void *opaque, const void *data, size_t len, struct err *e)
{
	struct export_out *o = opaque;

	if (o->intr && sig_interrupted(e))
		return -1;
	if (write_full(o->fd, data, len) < 0)
		return err_sys(e, ERR_FAIL, "cannot write '%s'", o->what);
	if (o->hold_ms > 0 && o->written < EXPORT_HOLD_AT &&
	    o->written + len >= EXPORT_HOLD_AT)
		hold(o->hold_ms);
	o->written += len;
	return 0;
}

static int
export_page(void *opaque, uint32_t block, uint64_t offset,
    const uint8_t *data, struct err *e)
{
	return stream_writer_page(opaque, block, offset, data, e);
}

static int
export_run(struct img_reader *r, struct export_out *out, int nthreads,
    uint64_t *bytes, struct err *e)
{
	const struct img_meta *m = img_meta(r);
	struct stream_writer *w;
	uint8_t *tail = NULL;
	size_t tail_len = 0;
	int rc = -1;

	w = stream_writer_new(export_write, out);
	if (img_read_tail(r, &tail, &tail_len, e) < 0)
		goto out;
	if (stream_writer_begin(w, m->config, m->config_len, m->blocks,
	    m->nblocks, m->ram_section_id, e) < 0)
		goto out;
	if (img_foreach_page_parallel(r, nthreads, export_page, w, e) < 0)
		goto out;
	if (stream_writer_finish(w, (m->flags & IMG_F_SWITCHOVER_START) != 0,
	    tail, tail_len, e) < 0)
		goto out;
	*bytes = stream_writer_bytes(w);
	rc = 0;
out:
	free(tail);
	stream_writer_free(w);
	return rc;
}

int
img_export(struct img_reader *r, int fd, const char *what, uint64_t *bytes,
    struct err *e)
{
	return img_export_parallel(r, fd, what, 0, bytes, e);
}

int
img_export_parallel(struct img_reader *r, int fd, const char *what,
    int nthreads, uint64_t *bytes, struct err *e)
{
	struct export_out out = { fd, what, 1, 0, 0 };

	return export_run(r, &out, nthreads, bytes, e);
}

int
img_export_whole(struct img_reader *r, int fd, const char *what,
    int hold_ms, uint64_t *bytes, struct err *e)
{
	struct export_out out = { fd, what, 0, hold_ms, 0 };

	return export_run(r, &out, 0, bytes, e);
}
