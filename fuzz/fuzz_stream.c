/*
 * fuzz_stream - libFuzzer target for stream.c.  Feeds the input to a parser
 * whole, 1 byte at a time and in chunk sizes taken from the input, with a
 * sink that reads every byte it is given; then finishes.  All chunkings must
 * agree (same outcome, same message, same page checksum).  A stream that
 * parses is rebuilt with the writer (its pages in arrival order) and must
 * parse again to the same pages and tail.
 *
 * Seeds: fuzz/corpus/stream/, small streams cut from tests/data/streams/
 * (real header, configuration, MEM_SIZE and page records, a short tail).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "stream.h"
#include "streamgen.h"
#include "util.h"

#define KEEP_PAGES 64	/* pages kept for the rebuild */

struct seen {
	uint64_t sum;
	uint64_t pages;
	struct stream_block blocks[64];
	size_t nblocks;
	uint32_t sid;
	uint8_t *config;
	size_t config_len;
	uint8_t *tail;
	size_t tail_len;
	int switchover;
	struct {
		uint32_t block;
		uint64_t offset;
		int zero;
		uint8_t data[STREAM_PAGE_SIZE];
	} *keep;
	size_t nkeep;
	int truncated_keep;	/* more pages than KEEP_PAGES */
};

/* Reads every byte: words first, then the rest one by one. */
static uint64_t
mix(uint64_t h, const uint8_t *p, size_t n)
{
	uint64_t v;
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		memcpy(&v, p + i, 8);
		h = (h ^ v) * 0x100000001b3ull;
	}
	for (; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

static int
f_config(void *o, const uint8_t *raw, size_t len, const char *machine,
    struct err *e)
{
	struct seen *s = o;

	s->sum = mix(s->sum, raw, len);
	s->sum = mix(s->sum, (const uint8_t *)machine, strlen(machine));
	free(s->config);
	s->config = xmalloc(len);
	memcpy(s->config, raw, len);
	s->config_len = len;
	return 0;
}

static int
f_blocks(void *o, const struct stream_block *b, size_t n, uint32_t sid,
    struct err *e)
{
	struct seen *s = o;
	size_t i;

	for (i = 0; i < n; i++) {
		s->sum = mix(s->sum, (const uint8_t *)b[i].name,
		    strlen(b[i].name));
		s->sum = mix(s->sum, (const uint8_t *)&b[i].used_length, 8);
		if (b[i].used_length == 0 || b[i].used_length % 4096 != 0)
			abort();
	}
	if (n <= 64) {
		memcpy(s->blocks, b, n * sizeof(*b));
		s->nblocks = n;
	}
	s->sid = sid;
	return 0;
}

static int
f_page(void *o, uint32_t block, uint64_t offset, const uint8_t *data,
    struct err *e)
{
	struct seen *s = o;

	if (offset % STREAM_PAGE_SIZE != 0)
		abort();
	if (block < s->nblocks && offset >= s->blocks[block].used_length)
		abort();
	s->sum = mix(s->sum, (const uint8_t *)&offset, 8);
	if (data != NULL)
		s->sum = mix(s->sum, data, STREAM_PAGE_SIZE);
	s->pages++;
	if (s->keep != NULL) {
		if (s->nkeep == KEEP_PAGES) {
			s->truncated_keep = 1;
			return 0;
		}
		s->keep[s->nkeep].block = block;
		s->keep[s->nkeep].offset = offset;
		s->keep[s->nkeep].zero = data == NULL;
		if (data != NULL)
			memcpy(s->keep[s->nkeep].data, data, STREAM_PAGE_SIZE);
		s->nkeep++;
	}
	return 0;
}

static int
f_section(void *o, int type, struct err *e)
{
	struct seen *s = o;

	if (type < 1 || type > 3)
		abort();
	s->sum = s->sum * 31 + (uint64_t)type;
	return 0;
}

static int
f_switchover(void *o, struct err *e)
{
	struct seen *s = o;

	s->switchover = 1;
	s->sum = s->sum * 31 + 11;
	return 0;
}

static int
f_tail(void *o, const uint8_t *data, size_t len, struct err *e)
{
	struct seen *s = o;

	s->sum = mix(s->sum, data, len);
	free(s->tail);
	s->tail = xmalloc(len);
	memcpy(s->tail, data, len);
	s->tail_len = len;
	return 0;
}

static const struct stream_sink sink = {
	f_config, f_blocks, f_page, f_section, f_switchover, f_tail,
};

static void
seen_release(struct seen *s)
{
	free(s->config);
	free(s->tail);
	free(s->keep);
	memset(s, 0, sizeof(*s));
}

/* Parse in chunks of `chunk` bytes (0: whole).  0 or -1 with e. */
static int
run(const uint8_t *data, size_t size, size_t chunk, struct seen *s,
    struct err *e)
{
	struct stream_parser *p = stream_parser_new(&sink, s);
	size_t off = 0, n;
	int rc = -1;

	while (off < size) {
		n = chunk == 0 || chunk > size - off ? size - off : chunk;
		if (stream_parser_feed(p, data + off, n, e) < 0)
			goto out;
		off += n;
	}
	rc = stream_parser_finish(p, e);
out:
	if (stream_parser_stats(p)->bytes > size)
		abort();
	stream_parser_free(p);
	return rc;
}

static int
to_buf(void *opaque, const void *p, size_t len, struct err *e)
{
	buf_add(opaque, p, len);
	return 0;
}

/* Rebuild a parsed stream with the writer and parse it again. */
static void
rebuild(struct seen *s)
{
	struct stream_writer *w;
	struct buf out = BUF_INIT;
	struct seen again;
	struct err e = ERR_INIT;
	size_t i;

	if (s->truncated_keep || s->nblocks == 0 || s->nblocks > 64)
		return;
	w = stream_writer_new(to_buf, &out);
	if (stream_writer_begin(w, s->config, s->config_len, s->blocks,
	    s->nblocks, s->sid, &e) < 0)
		abort();
	for (i = 0; i < s->nkeep; i++)
		if (stream_writer_page(w, s->keep[i].block, s->keep[i].offset,
		    s->keep[i].zero ? NULL : s->keep[i].data, &e) < 0)
			abort();
	if (stream_writer_finish(w, s->switchover, s->tail, s->tail_len,
	    &e) < 0)
		abort();
	stream_writer_free(w);
	memset(&again, 0, sizeof(again));
	again.keep = xcalloc(KEEP_PAGES, sizeof(*again.keep));
	if (run(out.data, out.len, 0, &again, &e) < 0)
		abort();
	if (again.nkeep != s->nkeep || again.tail_len != s->tail_len ||
	    memcmp(again.tail, s->tail, s->tail_len) != 0 ||
	    again.config_len != s->config_len ||
	    memcmp(again.config, s->config, s->config_len) != 0)
		abort();
	for (i = 0; i < s->nkeep; i++)
		if (again.keep[i].block != s->keep[i].block ||
		    again.keep[i].offset != s->keep[i].offset ||
		    again.keep[i].zero != s->keep[i].zero ||
		    (!s->keep[i].zero && memcmp(again.keep[i].data,
		    s->keep[i].data, STREAM_PAGE_SIZE) != 0))
			abort();
	seen_release(&again);
	buf_release(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t chunks[4];
	struct seen ref, s;
	struct err e0 = ERR_INIT, e = ERR_INIT;
	int rc0, rc;
	size_t i;

	chunks[0] = 1;
	chunks[1] = 7;
	chunks[2] = size > 0 ? 1 + data[0] * 17u : 4099;
	chunks[3] = 4096 + 9;

	memset(&ref, 0, sizeof(ref));
	ref.keep = xcalloc(KEEP_PAGES, sizeof(*ref.keep));
	rc0 = run(data, size, 0, &ref, &e0);
	if (rc0 < 0 && (e0.msg[0] == '\0' || strchr(e0.msg, '\n') != NULL))
		abort();
	for (i = 0; i < 4; i++) {
		if (chunks[i] >= size && i > 0)
			continue;
		memset(&s, 0, sizeof(s));
		err_clear(&e);
		rc = run(data, size, chunks[i], &s, &e);
		if (rc != rc0 || s.sum != ref.sum || s.pages != ref.pages ||
		    strcmp(e.msg, e0.msg) != 0)
			abort();
		seen_release(&s);
	}
	if (rc0 == 0)
		rebuild(&ref);
	seen_release(&ref);
	return 0;
}
