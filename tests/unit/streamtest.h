/*
 * tests/unit/streamtest.h - helpers of the two stream unit programs
 * (stream.c, the parser; streamgen.c, the writer): a sink recording what
 * the parser says and parse(), page hashes, an in-memory write target,
 * pieces of hand-built streams.  Included by the one .c file of each.
 */
#ifndef SNAPCTL_TESTS_STREAMTEST_H
#define SNAPCTL_TESTS_STREAMTEST_H

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stream.h"
#include "util.h"
#include "tap.h"

#define PAGE STREAM_PAGE_SIZE


static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t
rnd(void)
{
	uint64_t x = rng_state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return rng_state = x;
}

static uint64_t
fnv(uint64_t h, const void *p, size_t n)
{
	const uint8_t *b = p;
	size_t i;

	for (i = 0; i < n; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	return h;
}

#define FNV0 0xcbf29ce484222325ull

/* Hash of one page callback, chained over the sequence. */
static uint64_t
hash_page(uint64_t h, uint32_t block, uint64_t offset, const uint8_t *data)
{
	uint8_t z = data == NULL;

	h = fnv(h, &block, sizeof(block));
	h = fnv(h, &offset, sizeof(offset));
	h = fnv(h, &z, 1);
	if (data != NULL)
		h = fnv(h, data, PAGE);
	return h;
}

/* ---- a sink that records what the parser says --------------------------- */

struct rec {
	struct buf config;
	char machine[256];
	struct stream_block blocks[64];
	size_t nblocks;
	uint32_t sid;
	uint64_t hash;
	uint64_t pages, zeros;
	uint8_t *covered[64];
	uint8_t **latest[64];	/* newest data per page, NULL: zero/absent */
	uint8_t *state[64];	/* 0 absent, 1 zero, 2 data */
	int keep;		/* fill latest/state */
	int nohash;		/* skip the checksum (speed) */
	struct buf tail;
	int tails;
	int switchovers;
	int sections[4];
	int fail_page_at;	/* make the page callback fail at this page */
};

static void
rec_init(struct rec *r)
{
	memset(r, 0, sizeof(*r));
	r->hash = FNV0;
	r->fail_page_at = -1;
}

static void
rec_release(struct rec *r)
{
	size_t i, j;

	for (i = 0; i < 64; i++) {
		free(r->covered[i]);
		if (r->latest[i] != NULL)
			for (j = 0; j < r->blocks[i].used_length / PAGE; j++)
				free(r->latest[i][j]);
		free(r->latest[i]);
		free(r->state[i]);
	}
	buf_release(&r->config);
	buf_release(&r->tail);
}

static int
s_config(void *o, const uint8_t *raw, size_t len, const char *machine,
    struct err *e)
{
	struct rec *r = o;

	buf_add(&r->config, raw, len);
	snprintf(r->machine, sizeof(r->machine), "%s", machine);
	return 0;
}

static int
s_blocks(void *o, const struct stream_block *b, size_t n, uint32_t sid,
    struct err *e)
{
	struct rec *r = o;
	size_t i;

	if (n > 64)
		return err_set(e, ERR_FAIL, "too many blocks for the test");
	memcpy(r->blocks, b, n * sizeof(*b));
	r->nblocks = n;
	r->sid = sid;
	for (i = 0; i < n; i++) {
		r->covered[i] = xcalloc(b[i].used_length / PAGE, 1);
		if (r->keep) {
			r->latest[i] = xcalloc(b[i].used_length / PAGE,
			    sizeof(uint8_t *));
			r->state[i] = xcalloc(b[i].used_length / PAGE, 1);
		}
	}
	return 0;
}

static int
s_page(void *o, uint32_t block, uint64_t offset, const uint8_t *data,
    struct err *e)
{
	struct rec *r = o;
	uint64_t pg = offset / PAGE;

	if (r->fail_page_at >= 0 &&
	    r->pages + r->zeros == (uint64_t)r->fail_page_at)
		return err_set(e, ERR_NOSPC, "test sink: disk full");
	if (block >= r->nblocks || offset % PAGE != 0 ||
	    offset >= r->blocks[block].used_length)
		return err_set(e, ERR_FAIL, "test sink: bad page %u/%" PRIu64,
		    block, offset);
	if (!r->nohash)
		r->hash = hash_page(r->hash, block, offset, data);
	r->covered[block][pg] = 1;
	if (data != NULL)
		r->pages++;
	else
		r->zeros++;
	if (r->keep) {
		free(r->latest[block][pg]);
		r->latest[block][pg] = NULL;
		if (data != NULL) {
			r->latest[block][pg] = xmalloc(PAGE);
			memcpy(r->latest[block][pg], data, PAGE);
		}
		r->state[block][pg] = data != NULL ? 2 : 1;
	}
	return 0;
}

static int
s_section(void *o, int type, struct err *e)
{
	struct rec *r = o;

	if (type >= 1 && type <= 3)
		r->sections[type]++;
	return 0;
}

static int
s_switchover(void *o, struct err *e)
{
	((struct rec *)o)->switchovers++;
	return 0;
}

static int
s_tail(void *o, const uint8_t *data, size_t len, struct err *e)
{
	struct rec *r = o;

	buf_add(&r->tail, data, len);
	r->tails++;
	return 0;
}

static const struct stream_sink rec_sink = {
	s_config, s_blocks, s_page, s_section, s_switchover, s_tail,
};

/*
 * Parse d[0..len) fed in chunks: chunk 0 means all at once, a negative
 * chunk random sizes up to -chunk.  Returns 0 or -1 with e filled.
 */
static int
parse(const uint8_t *d, size_t len, long chunk, struct rec *r,
    struct stream_stats *st, struct err *e)
{
	struct stream_parser *p = stream_parser_new(&rec_sink, r);
	size_t off = 0, n;
	int rc = -1;

	while (off < len) {
		if (chunk == 0)
			n = len;
		else if (chunk > 0)
			n = (size_t)chunk;
		else
			n = 1 + rnd() % (uint64_t)(-chunk);
		if (n > len - off)
			n = len - off;
		if (stream_parser_feed(p, d + off, n, e) < 0)
			goto out;
		off += n;
	}
	if (stream_parser_finish(p, e) < 0)
		goto out;
	rc = 0;
out:
	if (st != NULL)
		*st = *stream_parser_stats(p);
	stream_parser_free(p);
	return rc;
}

/* ---- an in-memory write target ----------------------------------------- */

struct membuf {
	struct buf b;
	int fail_after;		/* write calls before failing, -1 never */
};

static int
mem_write(void *opaque, const void *p, size_t len, struct err *e)
{
	struct membuf *m = opaque;

	if (m->fail_after == 0)
		return err_set(e, ERR_NOSPC, "test write: no space");
	if (m->fail_after > 0)
		m->fail_after--;
	buf_add(&m->b, p, len);
	return 0;
}

/* ---- pieces of hand-built streams -------------------------------------- */

/* A small stream: 3 blocks, a few pages, PARTs, END, a tiny tail. */
struct synth {
	struct buf b;
	uint32_t sid;
};

static void
sy_cstr(struct synth *s, const char *str)
{
	buf_addc(&s->b, (uint8_t)strlen(str));
	buf_addstr(&s->b, str);
}

static void
sy_start(struct synth *s, const char *idstr, uint32_t inst, uint32_t ver)
{
	buf_addc(&s->b, 1);
	buf_add_be32(&s->b, s->sid);
	sy_cstr(s, idstr);
	buf_add_be32(&s->b, inst);
	buf_add_be32(&s->b, ver);
}

static void
sy_end_section(struct synth *s)
{
	buf_add_be64(&s->b, 0x10);
	buf_addc(&s->b, 0x7e);
	buf_add_be32(&s->b, s->sid);
}

static void
sy_section(struct synth *s, int type)
{
	buf_addc(&s->b, (uint8_t)type);
	buf_add_be32(&s->b, s->sid);
}

#endif
