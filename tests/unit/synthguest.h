/*
 * tests/unit/synthguest.h - a small synthetic guest for the image writer's
 * unit tests (share.c, storepack.c): NCHUNK chunks of pc.ram and two of
 * vga, a seed per page (0: a zero page) whose content fill() makes, some
 * pages random, some text-like; guest_touch() changes a few pages of a
 * chunk; send_page() feeds one page to a writer, guest_writer() and
 * guest_writer_end() start and finish one, one_pass() the whole guest
 * once into an image.  tpath() names a file in the including test's
 * tmpdir.
 */
#ifndef SNAPCTL_TEST_SYNTHGUEST_H
#define SNAPCTL_TEST_SYNTHGUEST_H

#include <stdint.h>
#include <string.h>

#include "save.h"
#include "util.h"

#define PAGE	IMG_PAGE_SIZE
#define CPAGES	IMG_CHUNK_PAGES
#define NCHUNK	24		/* chunks of pc.ram */
#define NPAGES	(NCHUNK * CPAGES + 2 * CPAGES)	/* and 2 of vga */

static char *tmpdir;
/* img_opts.slide_max of the writers guest_writer() makes (0: default). */
static uint64_t writer_slide_max;

static inline char *
tpath(const char *name)
{
	return xasprintf("%s/%s", tmpdir, name);
}

static inline uint64_t
rnd(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

/* A guest: per page a seed, 0 for a zero page. */
struct guest {
	uint64_t seed[NPAGES];
	uint64_t vga_len;	/* used length of block 1 */
};

static inline void
fill(uint8_t *p, uint64_t seed)
{
	uint64_t s = seed * 0x9e3779b97f4a7c15ull | 1, v;
	size_t n;

	if (seed % 3 == 0) {
		for (n = 0; n < PAGE; n += 8) {
			v = rnd(&s);
			memcpy(p + n, &v, 8);
		}
		return;
	}
	memset(p, (int)(seed % 251) + 1, PAGE);
	for (n = 0; n < PAGE; n += 512) {
		v = rnd(&s);
		memcpy(p + n, &v, 8);
	}
}

static inline void
guest_init(struct guest *g, uint64_t seed)
{
	uint64_t s = seed | 1;
	size_t i;

	g->vga_len = 2 * CPAGES * PAGE;
	for (i = 0; i < NPAGES; i++)
		g->seed[i] = rnd(&s) % 5 == 0 ? 0 : rnd(&s) | 1;
	/* A chunk of zero pages only: no frame, nothing to share. */
	for (i = 5 * CPAGES; i < 6 * CPAGES; i++)
		g->seed[i] = 0;
}

/* Change some pages of chunk ci. */
static inline void
guest_touch(struct guest *g, unsigned ci, uint64_t seed)
{
	uint64_t s = seed | 1;
	size_t i;

	for (i = 0; i < 3; i++)
		g->seed[ci * CPAGES + rnd(&s) % CPAGES] = rnd(&s) | 1;
}

static const uint8_t config_bytes[] __attribute__((unused)) = {
	0x07, 0, 0, 0, 0, 13, 'c', 'o', 'n', 'f', 'i', 'g', 'u', 'r', 'a', 't',
	'i', 'o', 'n', 0, 0, 0, 0, 0, 0, 0, 0, 10, 'p', 'c', '-', 'q', '3', '5',
	'-', '7', '.', '2',
};

static inline int
send_page(struct img_writer *w, const struct guest *g, size_t pg,
    uint64_t seed, struct err *e)
{
	uint8_t buf[PAGE];
	uint32_t b = pg < NCHUNK * CPAGES ? 0 : 1;
	uint64_t off = (pg - (b ? NCHUNK * CPAGES : 0)) * PAGE;

	if (b == 1 && off >= g->vga_len)
		return 0;	/* a smaller vga block */
	if (seed == 0)
		return img_writer_sink()->page(w, b, off, NULL, e);
	fill(buf, seed);
	return img_writer_sink()->page(w, b, off, buf, e);
}

/*
 * A writer for g's block table at path (base and hint as img_opts says,
 * threads, a cache of cache_chunks chunks), its configuration, blocks and
 * a ram START section fed.  NULL with e filled.
 */
static inline struct img_writer *
guest_writer(const struct guest *g, const char *path, struct img_reader *base,
    const char *hint, int threads, unsigned cache_chunks, struct err *e)
{
	const struct stream_sink *sink = img_writer_sink();
	struct img_opts o = IMG_OPTS_INIT;
	struct stream_block blocks[2];
	struct img_writer *w;

	err_clear(e);
	o.threads = threads;
	o.cache_bytes = (size_t)cache_chunks * IMG_CHUNK_BYTES;
	o.base = base;
	o.base_hint = hint;
	o.slide_max = writer_slide_max;
	memset(blocks, 0, sizeof(blocks));
	snprintf(blocks[0].name, sizeof(blocks[0].name), "pc.ram");
	blocks[0].used_length = NCHUNK * IMG_CHUNK_BYTES;
	snprintf(blocks[1].name, sizeof(blocks[1].name), "vga.vram");
	blocks[1].used_length = g->vga_len;
	if ((w = img_writer_new(path, &o, e)) == NULL)
		return NULL;
	if (sink->config(w, config_bytes, sizeof(config_bytes),
	    "pc-q35-7.2", e) < 0 || sink->blocks(w, blocks, 2, 2, e) < 0 ||
	    sink->section(w, 1, e) < 0) {
		img_writer_free(w);
		return NULL;
	}
	return w;
}

/* The ram END section, a device tail of len bytes of fill, the commit
 * (filling st).  0, or -1 with e filled. */
static inline int
guest_writer_end(struct img_writer *w, size_t len, int fill,
    struct img_stats *st, struct err *e)
{
	const struct stream_sink *sink = img_writer_sink();
	uint8_t tail[2000];

	memset(tail, fill, len);
	if (sink->section(w, 3, e) < 0 || sink->tail(w, tail, len, e) < 0)
		return -1;
	return img_writer_commit(w, st, e);
}

/* g in one pass, each page once, at path: no frame is ever replaced. */
static inline int
one_pass(const struct guest *g, const char *path, struct img_reader *base,
    const char *hint, struct img_stats *st, struct err *e)
{
	struct img_writer *w;
	size_t pg;
	int rc = -1;

	if ((w = guest_writer(g, path, base, hint, 2, 2, e)) == NULL)
		return -1;
	for (pg = 0; pg < NPAGES; pg++)
		if (send_page(w, g, pg, g->seed[pg], e) < 0)
			goto out;
	rc = guest_writer_end(w, 100, 0x33, st, e);
out:
	img_writer_free(w);
	return rc;
}

#endif
