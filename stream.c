/*
 * stream.c - parsing QEMU 7.2/10.0 precopy migration streams (stream.h): a
 * push parser that walks header, configuration, commands and "ram" sections
 * field by field and keeps the device-state tail verbatim.  The writer is
 * streamgen.c.  Format: ../shared/docs/qemu-migration-stream.md.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stream.h"
#include "streamfmt.h"
#include "util.h"

static const char *const mig_cmd_names[MIG_CMD_MAX] = {
	"INVALID", "OPEN_RETURN_PATH", "PING", "POSTCOPY_ADVISE",
	"POSTCOPY_LISTEN", "POSTCOPY_RUN", "POSTCOPY_RAM_DISCARD", "PACKAGED",
	"ENABLE_COLO", "POSTCOPY_RESUME", "RECV_BITMAP", "SWITCHOVER_START",
};

#define CFG_SUB_PREFIX		"configuration/"
#define CFG_MAX			65536u	/* refuse larger configurations */
#define MACHINE_MAX		255u
/* Footer ids before EOF must be below this (see tail_is_complete()). */
#define TAIL_SID_LIMIT		(1u << 24)


/* Parser states; each wants a fixed number of bytes (p->need). */
enum pstate {
	PS_HEADER,		/* 8: magic, version */
	PS_CFG_TYPE,		/* 1: 0x07 */
	PS_CFG_LEN,		/* 4: machine name length */
	PS_CFG_NAME,		/* n: machine name */
	PS_CFG_NEXT,		/* 1 (peeked): a subsection or the end */
	PS_SUB_NAMELEN,		/* 1 */
	PS_SUB_NAME,		/* n */
	PS_SUB_VERSION,		/* 4 */
	PS_SUB_PAGE_BITS,	/* 4 */
	PS_SUB_CAP_COUNT,	/* 4 */
	PS_SUB_CAP_LEN,		/* 1 */
	PS_SUB_CAP_NAME,	/* n */
	PS_SUB_UUID,		/* 16 */
	PS_TOP,			/* 1: record type */
	PS_CMD,			/* 4: be16 cmd, be16 len */
	PS_SEC_ID,		/* 4: START/FULL section id */
	PS_SEC_IDLEN,		/* 1 */
	PS_SEC_IDSTR,		/* n */
	PS_SEC_INSTVER,		/* 8: instance, version */
	PS_PART_ID,		/* 4: PART/END section id */
	PS_MS_NAMELEN,		/* 1: MEM_SIZE block name length */
	PS_MS_NAME,		/* n */
	PS_MS_LEN,		/* 8 or 16: used_length [, mr_addr] */
	PS_RAM_WORD,		/* 8: record word */
	PS_RAM_NAMELEN,		/* 1 */
	PS_RAM_NAME,		/* n */
	PS_RAM_FILL,		/* 1: ZERO fill byte */
	PS_RAM_DATA,		/* 4096: PAGE contents */
	PS_FOOTER,		/* 5: 0x7e, be32 section id */
	PS_TAIL,		/* everything to the end of the stream */
};

struct stream_parser {
	struct stream_sink sink;
	void *opaque;
	enum pstate st;
	size_t need;		/* bytes the state wants */
	int dead;		/* an error stopped the parse */
	int finished;
	struct err err;		/* why it is dead */
	struct stream_stats stats;

	uint64_t off;		/* bytes consumed */
	uint64_t rec_off;	/* first byte of the record being parsed */
	uint64_t sec_off;	/* first byte of the current section */
	uint8_t acc[STREAM_PAGE_SIZE];	/* one field split across feeds */
	size_t acc_len;

	struct buf config;	/* raw configuration section */
	char machine[MACHINE_MAX + 1];
	char sub_name[256];
	size_t sub_len;
	uint32_t caps_left;
	int ignore_shared;

	int sec_type;		/* type byte of the current section */
	uint32_t sec_id;
	int seen_ram_start;
	uint32_t ram_sid;
	int have_blocks;

	struct stream_block *blocks;
	size_t nblocks;
	size_t blocks_cap;
	uint64_t mem_left;	/* MEM_SIZE total not yet covered */

	uint64_t word;		/* current RAM record word */
	int64_t cur_block;	/* block of the last page record, -1: none */
	int fill_byte;		/* contents of fill_page, -1: none yet */
	uint8_t fill_page[STREAM_PAGE_SIZE];

	struct buf tail;
};

const char *
stream_esc(char out[ESC_MAX], const void *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const uint8_t *b = s;
	size_t i, o = 0;

	if (n > 255)
		n = 255;
	for (i = 0; i < n; i++) {
		if (b[i] >= 0x20 && b[i] < 0x7f && b[i] != '\\') {
			out[o++] = (char)b[i];
			continue;
		}
		out[o++] = '\\';
		out[o++] = 'x';
		out[o++] = hex[b[i] >> 4];
		out[o++] = hex[b[i] & 0xf];
	}
	out[o] = '\0';
	return out;
}

const char *
stream_esc_str(char out[ESC_MAX], const char *s)
{
	return stream_esc(out, s, strnlen(s, 255));
}

/* Exactly the n bytes of q are str. */
static int
is_name(const uint8_t *q, size_t n, const char *str)
{
	return n == strlen(str) && memcmp(q, str, n) == 0;
}

static int __attribute__((format(printf, 2, 3)))
perr(struct stream_parser *p, const char *fmt, ...)
{
	char msg[ERR_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return err_set(&p->err, ERR_FAIL, "%s", msg);
}

/* A sink callback returned -1: keep its message, or say which failed. */
static int
sink_failed(struct stream_parser *p, const char *what)
{
	if (!err_isset(&p->err))
		err_set(&p->err, ERR_FAIL, "%s callback failed at offset %"
		    PRIu64, what, p->rec_off);
	return -1;
}

static const char *
sec_name(int type)
{
	switch (type) {
	case VM_SECTION_START:
		return "START";
	case VM_SECTION_PART:
		return "PART";
	case VM_SECTION_END:
		return "END";
	case VM_SECTION_FULL:
		return "FULL";
	}
	return "?";
}

struct stream_parser *
stream_parser_new(const struct stream_sink *sink, void *opaque)
{
	struct stream_parser *p = xcalloc(1, sizeof(*p));

	if (sink != NULL)
		p->sink = *sink;
	p->opaque = opaque;
	p->st = PS_HEADER;
	p->need = 8;
	p->cur_block = -1;
	p->fill_byte = -1;
	err_clear(&p->err);
	return p;
}

void
stream_parser_free(struct stream_parser *p)
{
	if (p == NULL)
		return;
	buf_release(&p->config);
	buf_release(&p->tail);
	free(p->blocks);
	free(p);
}

const struct stream_stats *
stream_parser_stats(const struct stream_parser *p)
{
	return &p->stats;
}

static void
go(struct stream_parser *p, enum pstate st, size_t need)
{
	p->st = st;
	p->need = need;
}

/*
 * The p->need bytes of the current field: straight from the caller's
 * buffer when they are all there (no copy), else gathered in p->acc across
 * feeds.  NULL when the input ran out first (all of it is then in acc).
 */
static const uint8_t *
take(struct stream_parser *p, const uint8_t **in, size_t *avail)
{
	const uint8_t *q;
	size_t k, n = p->need;

	if (p->acc_len == 0 && *avail >= n) {
		q = *in;
		*in += n;
		*avail -= n;
		p->off += n;
		return q;
	}
	k = n - p->acc_len;
	if (k > *avail)
		k = *avail;
	memcpy(p->acc + p->acc_len, *in, k);
	p->acc_len += k;
	*in += k;
	*avail -= k;
	p->off += k;
	if (p->acc_len < n)
		return NULL;
	p->acc_len = 0;
	return p->acc;
}

/* ---- configuration ---------------------------------------------------- */

static int
cfg_add(struct stream_parser *p, const uint8_t *q, size_t n)
{
	if (p->config.len + n > CFG_MAX)
		return perr(p, "configuration section larger than %u bytes at "
		    "offset %" PRIu64, CFG_MAX, p->rec_off);
	buf_add(&p->config, q, n);
	return 0;
}

static int
cfg_end(struct stream_parser *p)
{
	if (p->sink.config != NULL && p->sink.config(p->opaque,
	    p->config.data, p->config.len, p->machine, &p->err) < 0)
		return sink_failed(p, "configuration");
	go(p, PS_TOP, 1);
	return 0;
}

static int
cfg_subsection(struct stream_parser *p)
{
	const uint8_t *name = (const uint8_t *)p->sub_name;
	size_t n = p->sub_len;
	char e[ESC_MAX];

	if (is_name(name, n, CFG_SUB_PREFIX "target-page-bits"))
		go(p, PS_SUB_PAGE_BITS, 4);
	else if (is_name(name, n, CFG_SUB_PREFIX "capabilities"))
		go(p, PS_SUB_CAP_COUNT, 4);
	else if (is_name(name, n, CFG_SUB_PREFIX "uuid"))
		go(p, PS_SUB_UUID, 16);
	else
		return perr(p, "unknown configuration subsection '%s' at "
		    "offset %" PRIu64, stream_esc(e, name, n), p->rec_off);
	return 0;
}

static int
cfg_capability(struct stream_parser *p, const uint8_t *name, size_t n)
{
	char e[ESC_MAX];

	if (is_name(name, n, "x-ignore-shared")) {
		p->ignore_shared = 1;
	} else if (is_name(name, n, "mapped-ram")) {
		return perr(p, "capability 'mapped-ram' at offset %" PRIu64
		    ": mapped-ram streams cannot be captured", p->rec_off);
	} else {
		return perr(p, "unknown capability '%s' in the configuration "
		    "section at offset %" PRIu64, stream_esc(e, name, n),
		    p->rec_off);
	}
	return 0;
}

/* ---- top level and section headers ------------------------------------ */

static int
top_record(struct stream_parser *p, uint8_t type)
{
	switch (type) {
	case VM_SECTION_START:
		p->sec_type = type;
		p->sec_off = p->rec_off;
		go(p, PS_SEC_ID, 4);
		return 0;
	case VM_SECTION_PART:
	case VM_SECTION_END:
		p->sec_type = type;
		p->sec_off = p->rec_off;
		go(p, PS_PART_ID, 4);
		return 0;
	case VM_SECTION_FULL:
		if (p->seen_ram_start)
			break;
		/* Read its idstr to name it, then refuse. */
		p->sec_type = type;
		p->sec_off = p->rec_off;
		go(p, PS_SEC_ID, 4);
		return 0;
	case VM_EOF:
		if (p->seen_ram_start)
			break;	/* a tail without device sections */
		return perr(p, "EOF (0x00) at offset %" PRIu64 " before the "
		    "ram START section: the stream carries no RAM", p->rec_off);
	case VM_COMMAND:
		go(p, PS_CMD, 4);
		return 0;
	case VM_SUBSECTION:
		return perr(p, "subsection byte 0x05 at offset %" PRIu64
		    " outside the configuration section", p->rec_off);
	case VM_VMDESCRIPTION:
		return perr(p, "VMDESCRIPTION (0x06) at offset %" PRIu64
		    " before the device-state tail", p->rec_off);
	case VM_CONFIGURATION:
		return perr(p, "second configuration section at offset %"
		    PRIu64, p->rec_off);
	case VM_SECTION_FOOTER:
		return perr(p, "section footer (0x7e) at offset %" PRIu64
		    " outside a section", p->rec_off);
	default:
		return perr(p, "unknown record type 0x%02x at offset %" PRIu64,
		    type, p->rec_off);
	}
	/* The device-state tail begins with this byte. */
	buf_addc(&p->tail, type);
	go(p, PS_TAIL, 0);
	return 0;
}

static int
command(struct stream_parser *p, unsigned cmd, unsigned len)
{
	if (cmd == MIG_CMD_SWITCHOVER_START) {
		if (len != 0)
			return perr(p, "migration command 11 "
			    "(SWITCHOVER_START) at offset %" PRIu64 " has "
			    "length %u, expected 0",
			    p->rec_off, len);
		p->stats.saw_switchover = 1;
		if (p->sink.switchover != NULL &&
		    p->sink.switchover(p->opaque, &p->err) < 0)
			return sink_failed(p, "switchover");
		go(p, PS_TOP, 1);
		return 0;
	}
	if (cmd == MIG_CMD_INVALID || cmd >= MIG_CMD_MAX)
		return perr(p, "unknown migration command %u at offset %"
		    PRIu64, cmd, p->rec_off);
	return perr(p, "unsupported migration command %u (%s) at offset %"
	    PRIu64 ": %s", cmd, mig_cmd_names[cmd], p->rec_off,
	    cmd == MIG_CMD_ENABLE_COLO ? "COLO streams cannot be captured" :
	    "return path and postcopy streams cannot be captured");
}

/* START or FULL: refuse early what is not the "ram" START. */
static int
section_idstr(struct stream_parser *p, const uint8_t *q, size_t n)
{
	char e[ESC_MAX];

	if (p->sec_type == VM_SECTION_FULL)
		return perr(p, "device section '%s' (FULL) at offset %" PRIu64
		    " before the ram START section: early-setup device state "
		    "(e.g. virtio-mem) cannot be captured", stream_esc(e, q, n),
		    p->sec_off);
	if (!is_name(q, n, RAM_IDSTR))
		return perr(p, "unsupported iterable section '%s' (START) at "
		    "offset %" PRIu64 ": only 'ram' can be captured",
		    stream_esc(e, q, n), p->sec_off);
	if (p->seen_ram_start)
		return perr(p, "second ram START section at offset %" PRIu64,
		    p->sec_off);
	go(p, PS_SEC_INSTVER, 8);
	return 0;
}

static int
section_begin(struct stream_parser *p)
{
	p->stats.sections++;
	if (p->sink.section != NULL &&
	    p->sink.section(p->opaque, p->sec_type, &p->err) < 0)
		return sink_failed(p, "section");
	go(p, PS_RAM_WORD, 8);
	return 0;
}

static int
ram_start(struct stream_parser *p, uint32_t instance, uint32_t version)
{
	if (instance != RAM_INSTANCE)
		return perr(p, "ram START section at offset %" PRIu64 " has "
		    "instance %" PRIu32 ", expected 0", p->sec_off, instance);
	if (version != RAM_VERSION)
		return perr(p, "ram section version %" PRIu32 " at offset %"
		    PRIu64 " is not supported (need 4)", version, p->sec_off);
	p->seen_ram_start = 1;
	p->ram_sid = p->sec_id;
	return section_begin(p);
}

static int
ram_part(struct stream_parser *p, uint32_t sid)
{
	const char *name = sec_name(p->sec_type);

	if (!p->seen_ram_start)
		return perr(p, "%s section (id %" PRIu32 ") at offset %" PRIu64
		    " before the ram START section", name, sid, p->sec_off);
	if (sid != p->ram_sid)
		return perr(p, "%s section at offset %" PRIu64 " has id %"
		    PRIu32 ", not the ram section's id %" PRIu32, name,
		    p->sec_off, sid, p->ram_sid);
	if (p->stats.saw_end)
		return perr(p, "ram %s section at offset %" PRIu64 " after the "
		    "ram END section", name, p->sec_off);
	if (p->sec_type == VM_SECTION_END)
		p->stats.saw_end = 1;
	p->sec_id = sid;
	return section_begin(p);
}

/* ---- ram records ------------------------------------------------------ */

static int
mem_size_entry_name(struct stream_parser *p, const uint8_t *q, size_t n)
{
	struct stream_block *b;
	char e[ESC_MAX];
	size_t i;

	if (memchr(q, '\0', n) != NULL)
		return perr(p, "ram block name '%s' in the MEM_SIZE record at "
		    "offset %" PRIu64 " contains a NUL byte",
		    stream_esc(e, q, n), p->rec_off);
	if (p->nblocks >= BLOCKS_MAX)
		return perr(p, "more than %u ram blocks in the MEM_SIZE record "
		    "at offset %" PRIu64, BLOCKS_MAX, p->rec_off);
	if (p->nblocks == p->blocks_cap) {
		p->blocks_cap = p->blocks_cap ? 2 * p->blocks_cap : 16;
		p->blocks = xreallocarray(p->blocks, p->blocks_cap,
		    sizeof(*p->blocks));
	}
	b = &p->blocks[p->nblocks];
	memset(b, 0, sizeof(*b));
	memcpy(b->name, q, n);
	b->name[n] = '\0';
	for (i = 0; i < p->nblocks; i++)
		if (strcmp(p->blocks[i].name, b->name) == 0)
			return perr(p, "ram block '%s' listed twice in the "
			    "MEM_SIZE record at offset %" PRIu64,
			    stream_esc_str(e, b->name), p->rec_off);
	go(p, PS_MS_LEN, p->ignore_shared ? 16 : 8);
	return 0;
}

static int
mem_size_entry_len(struct stream_parser *p, const uint8_t *q)
{
	struct stream_block *b = &p->blocks[p->nblocks];
	char e[ESC_MAX];

	b->used_length = get_be64(q);
	if (p->ignore_shared) {
		b->has_mr_addr = 1;
		b->mr_addr = get_be64(q + 8);
	}
	if (b->used_length == 0 || b->used_length % STREAM_PAGE_SIZE != 0)
		return perr(p, "ram block '%s' in the MEM_SIZE record at "
		    "offset %" PRIu64 " has used_length 0x%" PRIx64 ", not a "
		    "non-zero multiple of 4096", stream_esc_str(e, b->name),
		    p->rec_off, b->used_length);
	if (b->used_length > p->mem_left)
		return perr(p, "ram block lengths in the MEM_SIZE record at "
		    "offset %" PRIu64 " exceed its total (block '%s', 0x%"
		    PRIx64 " bytes, 0x%" PRIx64 " left)", p->rec_off,
		    stream_esc_str(e, b->name), b->used_length, p->mem_left);
	p->mem_left -= b->used_length;
	p->nblocks++;
	if (p->mem_left > 0) {
		go(p, PS_MS_NAMELEN, 1);
		return 0;
	}
	p->have_blocks = 1;
	if (p->sink.blocks != NULL && p->sink.blocks(p->opaque, p->blocks,
	    p->nblocks, p->ram_sid, &p->err) < 0)
		return sink_failed(p, "blocks");
	go(p, PS_RAM_WORD, 8);
	return 0;
}

static int
ram_flags_refused(struct stream_parser *p, unsigned flags)
{
	const char *what, *why;

	switch (flags & ~RAM_FLAG_CONTINUE) {
	case RAM_FLAG_XBZRLE:
		what = "XBZRLE";
		why = "disable the xbzrle capability";
		break;
	case RAM_FLAG_COMPRESS_PAGE:
		what = "COMPRESS_PAGE";
		why = "disable the compress capability";
		break;
	case RAM_FLAG_MULTIFD_FLUSH:
		what = "MULTIFD_FLUSH";
		why = "disable the multifd capability";
		break;
	case RAM_FLAG_HOOK:
		what = "HOOK";
		why = "RDMA streams cannot be captured";
		break;
	default:
		return perr(p, "unknown combination of ram flags 0x%x at "
		    "offset %" PRIu64, flags, p->rec_off);
	}
	return perr(p, "unsupported ram record %s (flags 0x%x) at offset %"
	    PRIu64 ": %s", what, flags, p->rec_off, why);
}

/* The page's block is known: check the offset, then read its body. */
static int
page_body(struct stream_parser *p)
{
	const struct stream_block *b = &p->blocks[p->cur_block];
	uint64_t addr = p->word & ~RAM_FLAGS_MASK;
	char e[ESC_MAX];

	if (addr >= b->used_length)
		return perr(p, "page offset 0x%" PRIx64 " beyond ram block "
		    "'%s' (used_length 0x%" PRIx64 ") at offset %" PRIu64, addr,
		    stream_esc_str(e, b->name), b->used_length, p->rec_off);
	if ((p->word & RAM_FLAG_PAGE) != 0)
		go(p, PS_RAM_DATA, STREAM_PAGE_SIZE);
	else
		go(p, PS_RAM_FILL, 1);
	return 0;
}

static int
ram_word(struct stream_parser *p, uint64_t word)
{
	unsigned flags = (unsigned)(word & RAM_FLAGS_MASK);
	uint64_t addr = word & ~RAM_FLAGS_MASK;

	p->word = word;
	switch (flags & ~RAM_FLAG_CONTINUE) {
	case RAM_FLAG_ZERO:
	case RAM_FLAG_PAGE:
		if (!p->have_blocks)
			return perr(p, "page record at offset %" PRIu64
			    " before the MEM_SIZE block list", p->rec_off);
		if ((flags & RAM_FLAG_CONTINUE) == 0) {
			go(p, PS_RAM_NAMELEN, 1);
			return 0;
		}
		if (p->cur_block < 0)
			return perr(p, "CONTINUE page record at offset %" PRIu64
			    " with no previous block", p->rec_off);
		return page_body(p);
	case RAM_FLAG_MEM_SIZE:
		if (flags != RAM_FLAG_MEM_SIZE)
			break;
		if (p->sec_type != VM_SECTION_START)
			return perr(p, "MEM_SIZE record at offset %" PRIu64
			    " outside the ram START section", p->rec_off);
		if (p->have_blocks || p->nblocks > 0)
			return perr(p, "second MEM_SIZE record at offset %"
			    PRIu64, p->rec_off);
		p->mem_left = addr;
		if (addr == 0)
			return perr(p, "MEM_SIZE record at offset %" PRIu64
			    " with a total of 0 bytes", p->rec_off);
		go(p, PS_MS_NAMELEN, 1);
		return 0;
	case RAM_FLAG_EOS:
		if (flags != RAM_FLAG_EOS)
			break;
		if (addr != 0)
			return perr(p, "EOS record at offset %" PRIu64 " with "
			    "non-zero address 0x%" PRIx64, p->rec_off, addr);
		if (p->sec_type == VM_SECTION_START && !p->have_blocks)
			return perr(p, "ram START section at offset %" PRIu64
			    " has no MEM_SIZE block list", p->sec_off);
		go(p, PS_FOOTER, 5);
		return 0;
	}
	return ram_flags_refused(p, flags);
}

static int
ram_block_name(struct stream_parser *p, const uint8_t *q, size_t n)
{
	char e[ESC_MAX];
	size_t i;

	if (p->cur_block >= 0) {
		const char *c = p->blocks[p->cur_block].name;

		if (strlen(c) == n && memcmp(c, q, n) == 0)
			return page_body(p);
	}
	for (i = 0; i < p->nblocks; i++) {
		if (strlen(p->blocks[i].name) == n &&
		    memcmp(p->blocks[i].name, q, n) == 0) {
			p->cur_block = (int64_t)i;
			return page_body(p);
		}
	}
	return perr(p, "unknown ram block '%s' in the page record at offset "
	    "%" PRIu64, stream_esc(e, q, n), p->rec_off);
}

static int
ram_page(struct stream_parser *p, const uint8_t *data)
{
	uint64_t addr = p->word & ~RAM_FLAGS_MASK;

	if (data == NULL)
		p->stats.zero_records++;
	else
		p->stats.page_records++;
	if (p->sink.page != NULL && p->sink.page(p->opaque,
	    (uint32_t)p->cur_block, addr, data, &p->err) < 0)
		return sink_failed(p, "page");
	go(p, PS_RAM_WORD, 8);
	return 0;
}

static int
ram_fill(struct stream_parser *p, uint8_t c)
{
	/* 7.2 loads a non-zero fill byte as a page of that byte (memset). */
	if (c == 0)
		return ram_page(p, NULL);
	if (p->fill_byte != c) {
		memset(p->fill_page, c, sizeof(p->fill_page));
		p->fill_byte = c;
	}
	return ram_page(p, p->fill_page);
}

static int
footer(struct stream_parser *p, const uint8_t *q)
{
	uint32_t sid = get_be32(q + 1);

	if (q[0] != VM_SECTION_FOOTER)
		return perr(p, "missing section footer at offset %" PRIu64
		    " after the ram %s section at offset %" PRIu64 " (found "
		    "0x%02x)", p->rec_off, sec_name(p->sec_type), p->sec_off,
		    q[0]);
	if (sid != p->sec_id)
		return perr(p, "section footer at offset %" PRIu64 " has id %"
		    PRIu32 ", expected %" PRIu32, p->rec_off, sid, p->sec_id);
	go(p, PS_TOP, 1);
	return 0;
}

/* ---- the state machine ------------------------------------------------ */

static int
header(struct stream_parser *p, const uint8_t *q)
{
	uint32_t magic = get_be32(q), version = get_be32(q + 4);

	if (magic != VM_FILE_MAGIC)
		return perr(p, "not a QEMU migration stream: magic 0x%08" PRIx32
		    " at offset 0, expected 0x%08x (QEVM)", magic,
		    VM_FILE_MAGIC);
	if (version == VM_FILE_VERSION_COMPAT)
		return perr(p, "migration stream version 2 at offset 4 is "
		    "obsolete (SaveVM v2); only version 3 is supported");
	if (version != VM_FILE_VERSION)
		return perr(p, "unsupported migration stream version %" PRIu32
		    " at offset 4 (need 3)", version);
	go(p, PS_CFG_TYPE, 1);
	return 0;
}

/* States at which a record (or an entry of a list) begins. */
static int
record_starts(enum pstate st)
{
	switch (st) {
	case PS_HEADER:
	case PS_CFG_TYPE:
	case PS_CFG_NEXT:
	case PS_SUB_CAP_LEN:
	case PS_TOP:
	case PS_MS_NAMELEN:
	case PS_RAM_WORD:
	case PS_FOOTER:
		return 1;
	default:
		return 0;
	}
}

/* One step: consume the current state's bytes if they are there. */
static int
step(struct stream_parser *p, const uint8_t **in, size_t *avail)
{
	const uint8_t *q;
	uint32_t v;

	if (p->acc_len == 0 && record_starts(p->st))
		p->rec_off = p->off;
	/* Peek: at state boundaries acc is empty and *avail > 0. */
	if (p->st == PS_CFG_NEXT && **in != VM_SUBSECTION)
		return cfg_end(p);
	q = take(p, in, avail);
	if (q == NULL)
		return 0;

	switch (p->st) {
	case PS_HEADER:
		return header(p, q);
	case PS_CFG_TYPE:
		if (q[0] != VM_CONFIGURATION)
			return perr(p, "missing configuration section: found "
			    "0x%02x at offset %" PRIu64, q[0], p->rec_off);
		go(p, PS_CFG_LEN, 4);
		return cfg_add(p, q, 1);
	case PS_CFG_LEN:
		v = get_be32(q);
		if (v == 0 || v > MACHINE_MAX)
			return perr(p, "configuration section at offset %"
			    PRIu64 " has a machine type name of %" PRIu32
			    " bytes",
			    p->rec_off, v);
		go(p, PS_CFG_NAME, v);
		return cfg_add(p, q, 4);
	case PS_CFG_NAME:
		if (memchr(q, '\0', p->need) != NULL)
			return perr(p, "machine type name in the configuration "
			    "section at offset %" PRIu64 " contains a NUL byte",
			    p->rec_off);
		memcpy(p->machine, q, p->need);
		p->machine[p->need] = '\0';
		if (cfg_add(p, q, p->need) < 0)
			return -1;
		go(p, PS_CFG_NEXT, 1);
		return 0;
	case PS_CFG_NEXT:	/* the 0x05 of a subsection */
		go(p, PS_SUB_NAMELEN, 1);
		return cfg_add(p, q, 1);
	case PS_SUB_NAMELEN:
		if (cfg_add(p, q, 1) < 0)
			return -1;
		if (q[0] == 0)
			return perr(p, "configuration subsection with an empty "
			    "name at offset %" PRIu64, p->rec_off);
		go(p, PS_SUB_NAME, q[0]);
		return 0;
	case PS_SUB_NAME:
		memcpy(p->sub_name, q, p->need);
		p->sub_len = p->need;
		if (cfg_add(p, q, p->need) < 0)
			return -1;
		go(p, PS_SUB_VERSION, 4);
		return 0;
	case PS_SUB_VERSION:
		if (cfg_add(p, q, 4) < 0)
			return -1;
		v = get_be32(q);
		if (v != 1) {
			char e[ESC_MAX];

			return perr(p, "configuration subsection '%s' has "
			    "version %" PRIu32 " at offset %" PRIu64 ", "
			    "expected 1",
			    stream_esc(e, p->sub_name, p->sub_len), v,
			    p->rec_off);
		}
		return cfg_subsection(p);
	case PS_SUB_PAGE_BITS:
		if (cfg_add(p, q, 4) < 0)
			return -1;
		v = get_be32(q);
		if (v != 12)
			return perr(p, "target page bits %" PRIu32 " in the "
			    "configuration section at offset %" PRIu64 ": only "
			    "4096-byte pages are supported", v, p->rec_off);
		go(p, PS_CFG_NEXT, 1);
		return 0;
	case PS_SUB_CAP_COUNT:
		if (cfg_add(p, q, 4) < 0)
			return -1;
		p->caps_left = get_be32(q);
		go(p, p->caps_left ? PS_SUB_CAP_LEN : PS_CFG_NEXT, 1);
		return 0;
	case PS_SUB_CAP_LEN:
		if (cfg_add(p, q, 1) < 0)
			return -1;
		if (q[0] == 0)
			return cfg_capability(p, q, 0);
		go(p, PS_SUB_CAP_NAME, q[0]);
		return 0;
	case PS_SUB_CAP_NAME:
		if (cfg_add(p, q, p->need) < 0 ||
		    cfg_capability(p, q, p->need) < 0)
			return -1;
		go(p, --p->caps_left ? PS_SUB_CAP_LEN : PS_CFG_NEXT, 1);
		return 0;
	case PS_SUB_UUID:
		go(p, PS_CFG_NEXT, 1);
		return cfg_add(p, q, 16);
	case PS_TOP:
		return top_record(p, q[0]);
	case PS_CMD:
		return command(p, get_be16(q), get_be16(q + 2));
	case PS_SEC_ID:
		p->sec_id = get_be32(q);
		go(p, PS_SEC_IDLEN, 1);
		return 0;
	case PS_SEC_IDLEN:
		if (q[0] == 0)
			return section_idstr(p, q, 0);
		go(p, PS_SEC_IDSTR, q[0]);
		return 0;
	case PS_SEC_IDSTR:
		return section_idstr(p, q, p->need);
	case PS_SEC_INSTVER:
		return ram_start(p, get_be32(q), get_be32(q + 4));
	case PS_PART_ID:
		return ram_part(p, get_be32(q));
	case PS_MS_NAMELEN:
		if (q[0] == 0)
			return perr(p, "empty ram block name in the MEM_SIZE "
			    "record at offset %" PRIu64, p->rec_off);
		go(p, PS_MS_NAME, q[0]);
		return 0;
	case PS_MS_NAME:
		return mem_size_entry_name(p, q, p->need);
	case PS_MS_LEN:
		return mem_size_entry_len(p, q);
	case PS_RAM_WORD:
		return ram_word(p, get_be64(q));
	case PS_RAM_NAMELEN:
		if (q[0] == 0)
			return perr(p, "unknown ram block '' in the page "
			    "record at offset %" PRIu64, p->rec_off);
		go(p, PS_RAM_NAME, q[0]);
		return 0;
	case PS_RAM_NAME:
		return ram_block_name(p, q, p->need);
	case PS_RAM_FILL:
		return ram_fill(p, q[0]);
	case PS_RAM_DATA:
		return ram_page(p, q);
	case PS_FOOTER:
		return footer(p, q);
	case PS_TAIL:
		break;
	}
	return perr(p, "internal error: parser state %d", (int)p->st);
}

static int
fail(struct stream_parser *p, struct err *e)
{
	p->dead = 1;
	p->stats.bytes = p->off;
	if (!err_isset(&p->err))
		err_set(&p->err, ERR_FAIL, "migration stream parse failed at "
		    "offset %" PRIu64, p->off);
	if (e != NULL && !err_isset(e))
		*e = p->err;
	return -1;
}

static int
tail_add(struct stream_parser *p, const uint8_t *in, size_t len)
{
	if (len > STREAM_TAIL_MAX - p->tail.len)
		return perr(p, "device-state tail larger than %u bytes at "
		    "offset %" PRIu64, STREAM_TAIL_MAX,
		    p->off + (STREAM_TAIL_MAX - p->tail.len));
	buf_add(&p->tail, in, len);
	p->off += len;
	return 0;
}

int
stream_parser_feed(struct stream_parser *p, const uint8_t *buf, size_t len,
    struct err *e)
{
	const uint8_t *in = buf;
	size_t avail = len;

	if (p->dead)
		return fail(p, e);
	if (p->finished) {
		perr(p, "migration stream data after its end (offset %" PRIu64
		    ")", p->off);
		return fail(p, e);
	}
	while (avail > 0) {
		if (p->st == PS_TAIL) {
			if (tail_add(p, in, avail) < 0)
				return fail(p, e);
			break;
		}
		if (step(p, &in, &avail) < 0)
			return fail(p, e);
	}
	p->stats.bytes = p->off;
	return 0;
}

/*
 * Is the device-state tail complete?  FULL sections carry no length, so the
 * parser cannot walk them; it judges the tail by its last bytes instead.  A
 * complete tail ends
 *   (a) with the EOF byte right after a section footer: "... 7e <id> 00";
 *   (b) or with exactly one VMDESCRIPTION after that EOF:
 *       "... 7e <id> 00 06 <be32 N> <N bytes of JSON>", the JSON starting
 *       with '{' and ending with '}' (JSON text holds no 0x06 byte, and the
 *       length must reach the end exactly).
 * A tail that begins with EOF (no device sections at all) is "00" plus an
 * optional VMDESCRIPTION.  The footer's section id must be below 2^24:
 * ids are small counters (global_section_id in QEMU), and this makes a
 * stream cut inside device data that happens to end in "7e ?? ?? ?? ?? 00"
 * much less likely to pass.  It stays a heuristic: a cut that lands exactly
 * on such bytes is taken for complete, and QEMU's loader would then fail.
 */
static int
eof_after_footer(const uint8_t *t, size_t eof)
{
	if (eof == 0)
		return 1;	/* the tail began with EOF */
	return eof >= 5 && t[eof - 5] == VM_SECTION_FOOTER &&
	    get_be32(t + eof - 4) < TAIL_SID_LIMIT;
}

/* As tail_is_complete(); *eof receives the offset of the EOF byte. */
static int
tail_find_eof(const uint8_t *t, size_t len, size_t *eof)
{
	size_t i;
	uint32_t n;

	if (len == 0)
		return 0;
	if (t[len - 1] == VM_EOF && eof_after_footer(t, len - 1)) {
		*eof = len - 1;
		return 1;
	}
	if (len < 8 || t[len - 1] != '}')
		return 0;
	/* i: the 0x06 byte; t[i - 1] is EOF, t[i + 5] the '{'. */
	for (i = len - 7; i >= 1; i--) {
		if (t[i] != VM_VMDESCRIPTION || t[i - 1] != VM_EOF)
			continue;
		n = get_be32(t + i + 1);
		if ((uint64_t)i + 5 + n == len && t[i + 5] == '{' &&
		    eof_after_footer(t, i - 1)) {
			*eof = i - 1;
			return 1;
		}
	}
	return 0;
}

static int
tail_is_complete(const uint8_t *t, size_t len)
{
	size_t eof;

	return tail_find_eof(t, len, &eof);
}

int
stream_tail_devices(const uint8_t *tail, size_t len, size_t *devices_len,
    struct err *e)
{
	size_t eof;

	if (!tail_find_eof(tail, len, &eof))
		return err_set(e, ERR_FAIL, "the device-state tail does not "
		    "end with EOF and an optional VMDESCRIPTION");
	*devices_len = eof;
	return 0;
}

static const char *
where(const struct stream_parser *p)
{
	switch (p->st) {
	case PS_HEADER:
		return "inside the file header";
	case PS_CFG_TYPE:
		return "before the configuration section";
	case PS_CFG_LEN:
	case PS_CFG_NAME:
	case PS_CFG_NEXT:
	case PS_SUB_NAMELEN:
	case PS_SUB_NAME:
	case PS_SUB_VERSION:
	case PS_SUB_PAGE_BITS:
	case PS_SUB_CAP_COUNT:
	case PS_SUB_CAP_LEN:
	case PS_SUB_CAP_NAME:
	case PS_SUB_UUID:
		return "inside the configuration section";
	case PS_TOP:
		return p->seen_ram_start ? "before the device-state tail" :
		    "before the ram START section";
	case PS_CMD:
		return "inside a migration command";
	case PS_SEC_ID:
	case PS_SEC_IDLEN:
	case PS_SEC_IDSTR:
	case PS_SEC_INSTVER:
	case PS_PART_ID:
		return "inside a section header";
	case PS_MS_NAMELEN:
	case PS_MS_NAME:
	case PS_MS_LEN:
		return "inside the MEM_SIZE block list";
	case PS_RAM_WORD:
	case PS_RAM_NAMELEN:
	case PS_RAM_NAME:
	case PS_RAM_FILL:
	case PS_RAM_DATA:
	case PS_FOOTER:
		switch (p->sec_type) {
		case VM_SECTION_START:
			return "inside a ram START section";
		case VM_SECTION_PART:
			return "inside a ram PART section";
		default:
			return "inside a ram END section";
		}
	case PS_TAIL:
		return "inside the device-state tail (it does not end with EOF "
		    "and an optional VMDESCRIPTION)";
	}
	return "";
}

int
stream_parser_finish(struct stream_parser *p, struct err *e)
{
	if (p->dead)
		return fail(p, e);
	if (p->finished) {
		perr(p, "migration stream finished twice");
		return fail(p, e);
	}
	p->finished = 1;
	if (p->off == 0) {
		perr(p, "empty migration stream");
		return fail(p, e);
	}
	if (p->st != PS_TAIL || !tail_is_complete(p->tail.data, p->tail.len)) {
		perr(p, "stream truncated at offset %" PRIu64 " %s", p->off,
		    where(p));
		return fail(p, e);
	}
	p->stats.complete = 1;
	if (p->sink.tail != NULL && p->sink.tail(p->opaque, p->tail.data,
	    p->tail.len, &p->err) < 0) {
		p->rec_off = p->off - p->tail.len;
		sink_failed(p, "tail");
		return fail(p, e);
	}
	return 0;
}
