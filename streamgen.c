/*
 * streamgen.c - the generator side of QEMU's migration stream (streamgen.h):
 * a buffered writer that rebuilds a precopy stream in QEMU's own shape, its
 * postcopy variant for a lazy restore, and the parser of the return path
 * the destination sends back.  Format: ../shared/docs/qemu-migration-stream.md.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "streamfmt.h"
#include "streamgen.h"
#include "util.h"

/* The writer: a PART section per this many page records, as QEMU yields. */
#define WRITER_PART_RECORDS	32768u
#define WRITER_BUF		(1u << 20)

struct stream_writer {
	stream_write_fn write;
	void *opaque;
	uint8_t *buf;		/* WRITER_BUF bytes */
	size_t len;
	uint64_t bytes;		/* handed to write() */
	int begun;
	int finished;
	int failed;

	struct stream_block *blocks;
	size_t nblocks;
	uint8_t *name_len;	/* strlen of each block name */
	uint32_t sid;
	int in_part;
	uint32_t part_records;
	int64_t last_block;	/* block of the last page record, -1: none */
	int postcopy;		/* stream_writer_set_postcopy() was called */
	int packaged;		/* the postcopy device package was sent */
};

struct stream_writer *
stream_writer_new(stream_write_fn write, void *opaque)
{
	struct stream_writer *w = xcalloc(1, sizeof(*w));

	w->write = write;
	w->opaque = opaque;
	w->buf = xmalloc(WRITER_BUF);
	w->last_block = -1;
	return w;
}

void
stream_writer_free(struct stream_writer *w)
{
	if (w == NULL)
		return;
	free(w->buf);
	free(w->blocks);
	free(w->name_len);
	free(w);
}

uint64_t
stream_writer_bytes(const struct stream_writer *w)
{
	return w->bytes;
}

static int
w_flush(struct stream_writer *w, struct err *e)
{
	if (w->len == 0)
		return 0;
	if (w->write(w->opaque, w->buf, w->len, e) < 0) {
		w->failed = 1;
		if (!err_isset(e))
			err_set(e, ERR_FAIL, "cannot write the migration "
			    "stream");
		return -1;
	}
	w->bytes += w->len;
	w->len = 0;
	return 0;
}

/* Room for n more bytes in the buffer (n <= WRITER_BUF). */
static int
w_room(struct stream_writer *w, size_t n, struct err *e)
{
	if (WRITER_BUF - w->len >= n)
		return 0;
	return w_flush(w, e);
}

static void
w_u8(struct stream_writer *w, uint8_t v)
{
	w->buf[w->len++] = v;
}

static void
w_be16(struct stream_writer *w, uint16_t v)
{
	put_be16(w->buf + w->len, v);
	w->len += 2;
}

static void
w_be32(struct stream_writer *w, uint32_t v)
{
	put_be32(w->buf + w->len, v);
	w->len += 4;
}

static void
w_be64(struct stream_writer *w, uint64_t v)
{
	put_be64(w->buf + w->len, v);
	w->len += 8;
}

static void
w_bytes(struct stream_writer *w, const void *p, size_t n)
{
	memcpy(w->buf + w->len, p, n);
	w->len += n;
}

/* Large data: through the buffer in pieces. */
static int
w_big(struct stream_writer *w, const uint8_t *p, size_t n, struct err *e)
{
	size_t k;

	while (n > 0) {
		if (w->len == WRITER_BUF && w_flush(w, e) < 0)
			return -1;
		k = WRITER_BUF - w->len;
		if (k > n)
			k = n;
		w_bytes(w, p, k);
		p += k;
		n -= k;
	}
	return 0;
}

/* EOS and footer: 13 bytes. */
static void
w_section_end(struct stream_writer *w)
{
	w_be64(w, RAM_FLAG_EOS);
	w_u8(w, VM_SECTION_FOOTER);
	w_be32(w, w->sid);
}

/* A COMMAND header; len bytes of payload follow. */
static void
w_command(struct stream_writer *w, enum mig_cmd cmd, uint16_t len)
{
	w_u8(w, VM_COMMAND);
	w_be16(w, cmd);
	w_be16(w, len);
}

static int
w_check(struct stream_writer *w, int want_begun, struct err *e)
{
	if (w->failed)
		return err_set(e, ERR_FAIL, "the stream writer failed earlier");
	if (w->finished)
		return err_set(e, ERR_FAIL, "the stream writer has finished");
	if (want_begun != w->begun)
		return err_set(e, ERR_FAIL, want_begun ? "the stream writer "
		    "has not begun" : "the stream writer has already begun");
	return 0;
}

int
stream_writer_begin(struct stream_writer *w, const uint8_t *config,
    size_t config_len, const struct stream_block *blocks, size_t nblocks,
    uint32_t ram_section_id, struct err *e)
{
	uint64_t total = 0;
	char en[ESC_MAX];
	size_t i, n;

	if (w_check(w, 0, e) < 0)
		return -1;
	if (config_len < 5 || config[0] != VM_CONFIGURATION)
		return err_set(e, ERR_FAIL, "the configuration section does "
		    "not start with 0x07");
	if (nblocks == 0 || nblocks > BLOCKS_MAX)
		return err_set(e, ERR_FAIL, "%zu ram blocks: need 1 to %u",
		    nblocks, BLOCKS_MAX);
	for (i = 0; i < nblocks; i++) {
		const struct stream_block *b = &blocks[i];

		n = strnlen(b->name, sizeof(b->name));
		if (n == 0 || n > STREAM_BLOCK_NAME_MAX)
			return err_set(e, ERR_FAIL, "ram block %zu has no "
			    "valid name", i);
		if (b->used_length == 0 ||
		    b->used_length % STREAM_PAGE_SIZE != 0)
			return err_set(e, ERR_FAIL, "ram block '%s' has "
			    "used_length 0x%" PRIx64 ", not a non-zero "
			    "multiple of 4096", stream_esc_str(en, b->name),
			    b->used_length);
		if (!b->has_mr_addr != !blocks[0].has_mr_addr)
			return err_set(e, ERR_FAIL, "ram block '%s': either "
			    "all blocks or none have an mr_addr",
			    stream_esc_str(en, b->name));
		for (n = 0; n < i; n++)
			if (strcmp(blocks[n].name, b->name) == 0)
				return err_set(e, ERR_FAIL, "ram block '%s' "
				    "is listed twice",
				    stream_esc_str(en, b->name));
		if (b->used_length > UINT64_MAX - total)
			return err_set(e, ERR_FAIL, "ram block lengths "
			    "overflow");
		total += b->used_length;
	}
	w->blocks = xreallocarray(NULL, nblocks, sizeof(*blocks));
	memcpy(w->blocks, blocks, nblocks * sizeof(*blocks));
	w->name_len = xmalloc(nblocks);
	for (i = 0; i < nblocks; i++)
		w->name_len[i] = (uint8_t)strlen(w->blocks[i].name);
	w->nblocks = nblocks;
	w->sid = ram_section_id;
	w->begun = 1;

	if (w_room(w, 8, e) < 0)
		return -1;
	w_be32(w, VM_FILE_MAGIC);
	w_be32(w, VM_FILE_VERSION);
	if (w_big(w, config, config_len, e) < 0)
		return -1;
	if (w->postcopy) {
		/* As QEMU's migration_thread() with postcopy-ram on. */
		if (w_room(w, 5 + 5 + 16, e) < 0)
			return -1;
		w_command(w, MIG_CMD_OPEN_RETURN_PATH, 0);
		w_command(w, MIG_CMD_POSTCOPY_ADVISE, 16);
		w_be64(w, STREAM_PAGE_SIZE);	/* host page-size summary */
		w_be64(w, STREAM_PAGE_SIZE);	/* target page size */
	}
	if (w_room(w, 1 + 4 + 1 + 3 + 4 + 4 + 8, e) < 0)
		return -1;
	w_u8(w, VM_SECTION_START);
	w_be32(w, w->sid);
	w_u8(w, (uint8_t)strlen(RAM_IDSTR));
	w_bytes(w, RAM_IDSTR, strlen(RAM_IDSTR));
	w_be32(w, RAM_INSTANCE);
	w_be32(w, RAM_VERSION);
	w_be64(w, total | RAM_FLAG_MEM_SIZE);
	for (i = 0; i < nblocks; i++) {
		if (w_room(w, 1 + 255 + 16, e) < 0)
			return -1;
		w_u8(w, w->name_len[i]);
		w_bytes(w, w->blocks[i].name, w->name_len[i]);
		w_be64(w, w->blocks[i].used_length);
		if (w->blocks[i].has_mr_addr)
			w_be64(w, w->blocks[i].mr_addr);
	}
	if (w_room(w, 13, e) < 0)
		return -1;
	w_section_end(w);
	return 0;
}

int
stream_writer_page(struct stream_writer *w, uint32_t block, uint64_t offset,
    const uint8_t *data, struct err *e)
{
	uint64_t word;
	char en[ESC_MAX];
	int cont;

	if (w_check(w, 1, e) < 0)
		return -1;
	if (block >= w->nblocks)
		return err_set(e, ERR_FAIL, "page of ram block %" PRIu32 ": "
		    "there are only %zu", block, w->nblocks);
	if (offset % STREAM_PAGE_SIZE != 0 ||
	    offset >= w->blocks[block].used_length)
		return err_set(e, ERR_FAIL, "page offset 0x%" PRIx64 " is not "
		    "a page of ram block '%s' (used_length 0x%" PRIx64 ")",
		    offset, stream_esc_str(en, w->blocks[block].name),
		    w->blocks[block].used_length);
	/* PART header + record (word, name, page) + closing EOS/footer. */
	if (w_room(w, 5 + 8 + 1 + 255 + STREAM_PAGE_SIZE + 13, e) < 0)
		return -1;
	if (!w->in_part) {
		w_u8(w, VM_SECTION_PART);
		w_be32(w, w->sid);
		w->in_part = 1;
		w->part_records = 0;
	}
	cont = (int64_t)block == w->last_block;
	word = offset | (data != NULL ? RAM_FLAG_PAGE : RAM_FLAG_ZERO) |
	    (cont ? RAM_FLAG_CONTINUE : 0);
	w_be64(w, word);
	if (!cont) {
		w_u8(w, w->name_len[block]);
		w_bytes(w, w->blocks[block].name, w->name_len[block]);
		w->last_block = block;
	}
	if (data != NULL)
		w_bytes(w, data, STREAM_PAGE_SIZE);
	else
		w_u8(w, 0);
	if (++w->part_records == WRITER_PART_RECORDS) {
		w_section_end(w);
		w->in_part = 0;
	}
	return 0;
}

int
stream_writer_finish(struct stream_writer *w, int switchover_start,
    const uint8_t *tail, size_t tail_len, struct err *e)
{
	if (w_check(w, 1, e) < 0)
		return -1;
	if (tail_len == 0)
		return err_set(e, ERR_FAIL, "empty device-state tail");
	if (w_room(w, 13 + 5 + 5 + 13, e) < 0)
		return -1;
	if (w->in_part) {
		w_section_end(w);
		w->in_part = 0;
	}
	if (switchover_start)
		w_command(w, MIG_CMD_SWITCHOVER_START, 0);
	w_u8(w, VM_SECTION_END);
	w_be32(w, w->sid);
	w_section_end(w);
	if (w_big(w, tail, tail_len, e) < 0 || w_flush(w, e) < 0)
		return -1;
	w->finished = 1;
	return 0;
}

/* ---- the writer, postcopy ---------------------------------------------- */

void
stream_writer_set_postcopy(struct stream_writer *w)
{
	w->postcopy = 1;
}

int
stream_writer_package(struct stream_writer *w, const uint8_t *devices,
    size_t len, struct err *e)
{
	if (w_check(w, 1, e) < 0)
		return -1;
	if (!w->postcopy || w->packaged)
		return err_set(e, ERR_FAIL, "the stream writer %s",
		    w->postcopy ? "has sent its package already" :
		    "is not in postcopy mode");
	if (len > STREAM_PACKAGE_MAX - 10)
		return err_set(e, ERR_FAIL, "the device state is %zu bytes, "
		    "more than a postcopy package holds (%u)", len,
		    STREAM_PACKAGE_MAX - 10);
	if (w_room(w, 13 + 5 + 3 + 255 + 16 + 5 + 4 + 5, e) < 0)
		return -1;
	if (w->in_part) {
		w_section_end(w);
		w->in_part = 0;
	}
	/*
	 * One POSTCOPY_RAM_DISCARD first, of a page ADVISE emptied already,
	 * as QEMU's source always sends some.  A LISTEN straight after
	 * ADVISE takes a path (loadvm_postcopy_handle_listen() calling
	 * postcopy_ram_prepare_discard()) that sets the state back from
	 * LISTENING to DISCARD, in 7.2 and 10.0: the listen thread then
	 * loads pages as precopy would, writing guest memory, and hangs on
	 * its own userfault.
	 */
	w_command(w, MIG_CMD_POSTCOPY_RAM_DISCARD, (uint16_t)(3 +
	    w->name_len[0] + 16));
	w_u8(w, 0);			/* version */
	w_u8(w, w->name_len[0]);
	w_bytes(w, w->blocks[0].name, w->name_len[0]);
	w_u8(w, 0);
	w_be64(w, 0);			/* start */
	w_be64(w, STREAM_PAGE_SIZE);	/* length */
	/* As QEMU's postcopy_start(): LISTEN, the devices, RUN. */
	w_command(w, MIG_CMD_PACKAGED, 4);
	w_be32(w, (uint32_t)(5 + len + 5));
	w_command(w, MIG_CMD_POSTCOPY_LISTEN, 0);
	if (w_big(w, devices, len, e) < 0 || w_room(w, 5, e) < 0)
		return -1;
	w_command(w, MIG_CMD_POSTCOPY_RUN, 0);
	w->packaged = 1;
	/* The destination's postcopy page state starts anew. */
	w->last_block = -1;
	return w_flush(w, e);
}

int
stream_writer_flush(struct stream_writer *w, struct err *e)
{
	if (w_check(w, 1, e) < 0)
		return -1;
	return w_flush(w, e);
}

int
stream_writer_finish_postcopy(struct stream_writer *w, struct err *e)
{
	if (w_check(w, 1, e) < 0)
		return -1;
	if (!w->packaged)
		return err_set(e, ERR_FAIL, "the stream writer has sent no "
		    "postcopy package");
	if (w_room(w, 13 + 5 + 13 + 1, e) < 0)
		return -1;
	if (w->in_part) {
		w_section_end(w);
		w->in_part = 0;
	}
	/* As qemu_savevm_state_complete_postcopy(). */
	w_u8(w, VM_SECTION_END);
	w_be32(w, w->sid);
	w_section_end(w);
	w_u8(w, VM_EOF);
	if (w_flush(w, e) < 0)
		return -1;
	w->finished = 1;
	return 0;
}

/* ---- the return path --------------------------------------------------- */

int
stream_rp_parse(uint16_t type, const uint8_t *p, size_t len,
    struct stream_rp_msg *m, struct err *e)
{
	memset(m, 0, sizeof(*m));
	m->type = type;
	switch (type) {
	case STREAM_RP_SHUT:
	case STREAM_RP_PONG:
		if (len != 4)
			break;
		m->value = get_be32(p);
		return 0;
	case STREAM_RP_REQ_PAGES_ID:
		/* QEMU's migrate_send_rp_message_req_pages(). */
		if (len < 13 || p[12] == 0 || len != 13 + (size_t)p[12] ||
		    memchr(p + 13, 0, p[12]) != NULL)
			break;
		memcpy(m->block, p + 13, p[12]);
		m->block[p[12]] = 0;
		/* FALLTHROUGH */
	case STREAM_RP_REQ_PAGES:
		if (type == STREAM_RP_REQ_PAGES && len != 12)
			break;
		m->start = get_be64(p);
		m->len = get_be32(p + 8);
		return 0;
	default:
		return 0;
	}
	return err_set(e, ERR_FAIL, "malformed return-path message %u (%zu "
	    "bytes)", type, len);
}
