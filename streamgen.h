/*
 * streamgen.h - generating QEMU's migration stream (7.2 and 10.0): a writer
 * that builds a stream a stock QEMU accepts through "migrate-incoming", its
 * postcopy variant for a lazy restore, and the parser of the return path
 * QEMU's destination sends back to such a postcopy source.
 *
 * Spec: ../shared/docs/qemu-migration-stream.md.  Never prints, never exits.
 */
#ifndef SNAPCTL_STREAMGEN_H
#define SNAPCTL_STREAMGEN_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "stream.h"

/*
 * The writer: builds a stream in QEMU's own shape.  Output goes through
 * write(), which returns 0 or -1 with e filled; the writer buffers.
 *
 *   stream_writer_begin   header, configuration (verbatim), START "ram"
 *                         with the MEM_SIZE list, EOS, footer
 *   stream_writer_page    any number of pages, in any order; PART
 *                         sections are opened and closed as needed
 *   stream_writer_finish  closes the PART, [COMMAND 11], END with EOS,
 *                         then the device tail verbatim; flushes
 */
typedef int (*stream_write_fn)(void *opaque, const void *buf, size_t len,
    struct err *e);

struct stream_writer;

/* A writer handing its bytes to write(opaque, ...).  Never NULL. */
struct stream_writer *stream_writer_new(stream_write_fn write, void *opaque);
/* Frees w (NULL is fine); does not flush. */
void stream_writer_free(struct stream_writer *w);
int stream_writer_begin(struct stream_writer *w, const uint8_t *config,
    size_t config_len, const struct stream_block *blocks, size_t nblocks,
    uint32_t ram_section_id, struct err *e);
int stream_writer_page(struct stream_writer *w, uint32_t block,
    uint64_t offset, const uint8_t *data, struct err *e);
int stream_writer_finish(struct stream_writer *w, int switchover_start,
    const uint8_t *tail, size_t tail_len, struct err *e);
/* Bytes handed to write() so far. */
uint64_t stream_writer_bytes(const struct stream_writer *w);

/*
 * Postcopy, for a lazy restore (QEMU's postcopy_start() in the source's
 * place; the destination needs postcopy-ram on, and the fd must carry
 * the return path back):
 *
 *   stream_writer_set_postcopy     before begin: begin then also sends
 *                                  OPEN_RETURN_PATH and POSTCOPY_ADVISE
 *                                  (4 KiB host and target pages)
 *   stream_writer_package          the device sections (a tail without
 *                                  its EOF and VMDESCRIPTION, see
 *                                  stream_tail_devices) in one PACKAGED
 *                                  command with LISTEN before and RUN
 *                                  after them; flushes.  Once QEMU has
 *                                  read it, the guest may run
 *   stream_writer_page             then every page exactly once, zero
 *                                  pages too (data NULL): QEMU places
 *                                  each with userfaultfd, and a page never
 *                                  sent would stall the guest for ever
 *   stream_writer_flush            hand what is buffered to write()
 *   stream_writer_finish_postcopy  END with EOS, then EOF; flushes
 */
#define STREAM_PACKAGE_MAX	(1u << 24)	/* QEMU's limit on PACKAGED */
void stream_writer_set_postcopy(struct stream_writer *w);
int stream_writer_package(struct stream_writer *w, const uint8_t *devices,
    size_t len, struct err *e);
int stream_writer_flush(struct stream_writer *w, struct err *e);
int stream_writer_finish_postcopy(struct stream_writer *w, struct err *e);

/*
 * The return path, from QEMU's destination back to its source (a lazy
 * restore reads it): messages of be16 type, be16 length, then that many
 * bytes of payload (enum mig_rp_message_type, migration.c).
 */
enum stream_rp_type {
	STREAM_RP_SHUT = 1,		/* be32 error: no more messages */
	STREAM_RP_PONG = 2,		/* be32: the PING's value */
	STREAM_RP_REQ_PAGES_ID = 3,	/* be64 start, be32 len, cstr8 block */
	STREAM_RP_REQ_PAGES = 4,	/* be64 start, be32 len: last block */
};
#define STREAM_RP_HEADER	4

struct stream_rp_msg {
	uint16_t type;
	uint32_t value;		/* SHUT, PONG */
	uint64_t start;		/* REQ_PAGES(_ID): byte offset in the block */
	uint32_t len;		/* bytes asked for */
	char block[STREAM_BLOCK_NAME_MAX + 1];	/* REQ_PAGES_ID, else "" */
};

/*
 * Parse the payload (len bytes) of a return-path message of this type
 * into *m.  Types this does not know parse to their type alone.  0, or -1
 * with e filled for a known type with a malformed payload ("malformed
 * return-path message 3 (12 bytes)").
 */
int stream_rp_parse(uint16_t type, const uint8_t *payload, size_t len,
    struct stream_rp_msg *m, struct err *e);

#endif
