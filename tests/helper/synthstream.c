/*
 * synthstream - write a synthetic QEMU 7.2-shaped migration stream to stdout
 * for the scale benchmark: a q35-like block list with RAM of --ram-mib, every
 * page sent --passes times (each pass rewrites every page with new
 * contents), a mix of zero, compressible and random pages, then a small
 * device tail.  Uses snapctl's own stream writer, so the result is a stream
 * QEMU's loader would parse the same way.
 *
 *   synthstream [--ram-mib N] [--passes N] [--seed N] [--zero PCT]
 *               [--random PCT] [--final-ram FILE]
 *
 * --final-ram writes the final guest RAM of the main block (the last pass)
 * as a flat file, so a benchmark can compress it with zstd -1.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stream.h"
#include "streamgen.h"
#include "util.h"

#define PAGE 4096u
#define POOL_PAGES 16384u	/* 64 MiB of distinct compressible pages */

static uint64_t
xorshift(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static uint64_t
mix(uint64_t a, uint64_t b)
{
	uint64_t s = a * 0x9e3779b97f4a7c15ull ^ (b + 0x632be59bd9b4e019ull);

	s ^= s >> 31;
	s *= 0xbf58476d1ce4e5b9ull;
	s ^= s >> 29;
	return s ? s : 1;
}

/* Text-like pages: words from a small vocabulary, so zstd gets ~3:1. */
static void
fill_text(uint8_t *p, uint64_t seed)
{
	static const char *const words[] = {
		"the ", "guest ", "kernel ", "page ", "cache ", "memory ",
		"dirty ", "buffer ", "inode ", "block ", "socket ", "thread ",
		"0x7f3a", "ffff", "\n", "\t", "struct ", "{ ", "} ", "= ",
		"return ", "NULL", "error ", "status ", "json ", "value ",
	};
	size_t n = 0, w;
	uint64_t s = seed;

	while (n < PAGE) {
		w = xorshift(&s) % ARRAY_SIZE(words);
		size_t len = strlen(words[w]);
		if (len > PAGE - n)
			len = PAGE - n;
		memcpy(p + n, words[w], len);
		n += len;
		if ((xorshift(&s) & 15) == 0 && n + 8 <= PAGE) {
			uint64_t v = xorshift(&s);
			memcpy(p + n, &v, 8);
			n += 8;
		}
	}
}

struct out {
	int fd;
};

static int
out_write(void *opaque, const void *buf, size_t len, struct err *e)
{
	struct out *o = opaque;

	if (write_full(o->fd, buf, len) < 0)
		return err_sys(e, ERR_FAIL, "write");
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "ram-mib", required_argument, NULL, 'r' },
		{ "passes", required_argument, NULL, 'p' },
		{ "seed", required_argument, NULL, 's' },
		{ "zero", required_argument, NULL, 'z' },
		{ "random", required_argument, NULL, 'R' },
		{ "final-ram", required_argument, NULL, 'f' },
		{ NULL, 0, NULL, 0 },
	};
	static const char config[] = "\x07\x00\x00\x00\x0apc-q35-7.2";
	uint64_t ram_mib = 1024, passes = 3, seed = 1, zero_pct = 30;
	uint64_t random_pct = 20, npages, pass, i, r, sel;
	struct stream_block blocks[3];
	struct stream_writer *w;
	struct err e = ERR_INIT;
	struct out o = { STDOUT_FILENO };
	uint8_t *pool, *page, tail[64];
	const char *final_path = NULL, *why;
	int ch, final_fd = -1;

	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		uint64_t *dst = ch == 'r' ? &ram_mib : ch == 'p' ? &passes :
		    ch == 's' ? &seed : ch == 'z' ? &zero_pct :
		    ch == 'R' ? &random_pct : NULL;
		if (ch == 'f') {
			final_path = optarg;
			continue;
		}
		if (dst == NULL || parse_u64(optarg, 0, UINT64_MAX / 2, dst,
		    &why) < 0) {
			fprintf(stderr, "synthstream: bad option\n");
			return 2;
		}
	}
	if (isatty(STDOUT_FILENO)) {
		fprintf(stderr, "synthstream: stdout is a terminal\n");
		return 2;
	}
	if (final_path != NULL) {
		final_fd = open(final_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (final_fd < 0) {
			perror(final_path);
			return 1;
		}
	}

	memset(blocks, 0, sizeof(blocks));
	snprintf(blocks[0].name, sizeof(blocks[0].name), "pc.ram");
	blocks[0].used_length = ram_mib << 20;
	snprintf(blocks[1].name, sizeof(blocks[1].name),
	    "0000:00:01.0/vga.vram");
	blocks[1].used_length = 16u << 20;
	snprintf(blocks[2].name, sizeof(blocks[2].name), "pc.bios");
	blocks[2].used_length = 256u << 10;
	npages = blocks[0].used_length / PAGE;

	pool = xmalloc((size_t)POOL_PAGES * PAGE);
	for (i = 0; i < POOL_PAGES; i++)
		fill_text(pool + i * PAGE, mix(seed, i));
	page = xmalloc(PAGE);

	w = stream_writer_new(out_write, &o);
	if (stream_writer_begin(w, (const uint8_t *)config, sizeof(config) - 1,
	    blocks, 3, 2, &e) < 0)
		goto fail;
	for (pass = 0; pass < passes; pass++) {
		uint64_t rs = mix(seed, 1000 + pass);

		for (i = 0; i < npages; i++) {
			r = mix(i, pass + seed) % 100;
			if (r < zero_pct) {
				if (stream_writer_page(w, 0, i * PAGE, NULL,
				    &e) < 0)
					goto fail;
				if (pass + 1 == passes && final_fd >= 0) {
					memset(page, 0, PAGE);
					if (write_full(final_fd, page, PAGE) < 0)
						goto fail_final;
				}
				continue;
			}
			if (r < zero_pct + random_pct) {
				uint64_t *q = (uint64_t *)page;
				size_t k;

				for (k = 0; k < PAGE / 8; k++)
					q[k] = xorshift(&rs);
			} else {
				sel = mix(i * 31 + pass, seed) % POOL_PAGES;
				memcpy(page, pool + sel * PAGE, PAGE);
				/* Make each copy distinct, as real pages are. */
				memcpy(page, &i, sizeof(i));
				memcpy(page + 8, &pass, sizeof(pass));
			}
			if (stream_writer_page(w, 0, i * PAGE, page, &e) < 0)
				goto fail;
			if (pass + 1 == passes && final_fd >= 0 &&
			    write_full(final_fd, page, PAGE) < 0)
				goto fail_final;
		}
		/* The small blocks: sent once, in the first pass. */
		if (pass == 0) {
			for (i = 0; i < blocks[1].used_length / PAGE; i++)
				if (stream_writer_page(w, 1, i * PAGE, NULL,
				    &e) < 0)
					goto fail;
			fill_text(page, seed);
			for (i = 0; i < blocks[2].used_length / PAGE; i++)
				if (stream_writer_page(w, 2, i * PAGE, page,
				    &e) < 0)
					goto fail;
		}
	}
	/* A minimal device tail: one FULL-looking section, EOF, no vmdesc. */
	memset(tail, 0, sizeof(tail));
	tail[0] = 0x04;
	put_be32(tail + 1, 3);
	tail[5] = 5;
	memcpy(tail + 6, "timer", 5);
	put_be32(tail + 11, 0);
	put_be32(tail + 15, 2);
	/* 16 bytes of payload, footer, EOF */
	tail[35] = 0x7e;
	put_be32(tail + 36, 3);
	tail[40] = 0x00;
	if (stream_writer_finish(w, 0, tail, 41, &e) < 0)
		goto fail;
	stream_writer_free(w);
	free(pool);
	free(page);
	if (final_fd >= 0 && close(final_fd) < 0)
		goto fail_final;
	return 0;
fail_final:
	perror(final_path);
	return 1;
fail:
	fprintf(stderr, "synthstream: %s\n", e.msg);
	return 1;
}
