/*
 * stream.h - parsing QEMU's precopy migration stream (7.2 and 10.0): a push
 * parser that turns the byte stream into configuration, RAM block list, page
 * records and the device-state tail.  Generating a stream, and the return
 * path of a postcopy one: streamgen.h.
 *
 * Spec: ../shared/docs/qemu-migration-stream.md.  Never prints, never exits.
 */
#ifndef SNAPCTL_STREAM_H
#define SNAPCTL_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define STREAM_PAGE_SIZE 4096u
#define STREAM_BLOCK_NAME_MAX 255	/* cstr8 */
#define STREAM_TAIL_MAX (64u << 20)	/* refuse larger device tails */

/* One RAMBlock of the MEM_SIZE record. */
struct stream_block {
	char name[STREAM_BLOCK_NAME_MAX + 1];	/* idstr, NUL-terminated */
	uint64_t used_length;			/* bytes, multiple of 4096 */
	int has_mr_addr;			/* x-ignore-shared extra present */
	uint64_t mr_addr;
};

/* What the parser learned about the whole stream. */
struct stream_stats {
	uint64_t bytes;		/* stream bytes consumed */
	uint64_t page_records;	/* PAGE records (incl. non-zero-fill ZERO) */
	uint64_t zero_records;	/* ZERO records */
	uint32_t sections;	/* ram START/PART/END sections seen */
	int saw_end;		/* a ram END section was seen */
	int saw_switchover;	/* COMMAND 11 (SWITCHOVER_START) was seen */
	int complete;		/* tail ended with EOF (+ vmdesc) */
};

/*
 * Where parsed records go.  Every callback may be NULL.  A callback returns 0
 * to go on or -1 (having filled e) to stop the parse: stream_parser_feed()
 * then returns -1 with that error.  Pointers passed in are borrowed and valid
 * only during the call.
 */
struct stream_sink {
	/* The configuration section, raw from its 0x07 byte, verbatim. */
	int (*config)(void *opaque, const uint8_t *raw, size_t len,
	    const char *machine, struct err *e);
	/* The MEM_SIZE block list from the ram START section. */
	int (*blocks)(void *opaque, const struct stream_block *blocks,
	    size_t nblocks, uint32_t ram_section_id, struct err *e);
	/*
	 * One page record: block is an index into the block list, offset is
	 * block-relative and page aligned, data is 4096 bytes or NULL for a
	 * zero page.  (A 7.2 ZERO record with a non-zero fill byte arrives as
	 * a data page filled with that byte.)
	 */
	int (*page)(void *opaque, uint32_t block, uint64_t offset,
	    const uint8_t *data, struct err *e);
	/* A ram section begins: type is 1 START, 2 PART or 3 END. */
	int (*section)(void *opaque, int type, struct err *e);
	/* COMMAND 11, SWITCHOVER_START. */
	int (*switchover)(void *opaque, struct err *e);
	/*
	 * The device-state tail, verbatim: from the first FULL section after
	 * the ram START to the end of the stream (EOF byte and vmdesc
	 * included).  Called once, from stream_parser_finish().
	 */
	int (*tail)(void *opaque, const uint8_t *data, size_t len,
	    struct err *e);
};

struct stream_parser;

/* A parser feeding sink (copied) with opaque.  Never NULL. */
struct stream_parser *stream_parser_new(const struct stream_sink *sink,
    void *opaque);

/*
 * Feed the next len bytes of the stream, in chunks of any size.  Returns 0,
 * or -1 with e filled: ERR_FAIL with a message naming what was found and its
 * byte offset ("unsupported migration command 1 (OPEN_RETURN_PATH) at
 * offset 37"), or whatever a sink callback set.  After -1 the parser is
 * dead: further calls fail again.
 */
int stream_parser_feed(struct stream_parser *p, const uint8_t *buf,
    size_t len, struct err *e);

/*
 * The stream has ended (EOF on the fd).  Checks it was complete — the device
 * tail was reached and ends with EOF (0x00) optionally followed by one
 * VMDESCRIPTION — then delivers the tail.  Returns 0, or -1 with e filled
 * ("stream truncated at offset N inside a ram PART section").
 */
int stream_parser_finish(struct stream_parser *p, struct err *e);

/* Counters so far (valid at any time). */
const struct stream_stats *stream_parser_stats(const struct stream_parser *p);

/* Frees p; NULL is fine. */
void stream_parser_free(struct stream_parser *p);

/*
 * The device sections of a device-state tail (as the parser hands it to
 * sink->tail): *devices_len is the tail's length without its final EOF
 * byte and VMDESCRIPTION.  0, or -1 with e filled (not a complete tail).
 */
int stream_tail_devices(const uint8_t *tail, size_t len, size_t *devices_len,
    struct err *e);

#endif
