/*
 * streamdigest - what a migration stream ends with, independently of the
 * image code: parse a stream (file or stdin) with the stream parser, keep a
 * 64-bit hash of the newest copy of every page, and print one line per RAM
 * block plus a total:
 *
 *   block NAME BYTES present=N zero=N digest=HEX
 *   total present=N zero=N digest=HEX
 *
 * Two streams that end with the same memory print the same lines.  With
 * --ram FILE it also writes the final RAM, all blocks in order, absent pages
 * as zeros (for "zstd -1 of the final RAM" in the benchmarks); with
 * --tail FILE the device tail.
 */
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stream.h"
#include "util.h"

#define PAGE 4096u

struct digest {
	struct stream_block *blocks;
	size_t nblocks;
	uint64_t **hash;	/* per block, per page: 0 absent, 1 zero */
	uint64_t *base;		/* byte offset of each block in --ram */
	int ram_fd;
	int tail_fd;
};

static uint64_t
hash_page(const uint8_t *p)
{
	uint64_t h = 0xcbf29ce484222325ull, v;
	size_t i;

	for (i = 0; i < PAGE; i += 8) {
		memcpy(&v, p + i, 8);
		h = (h ^ v) * 0x100000001b3ull;
		h ^= h >> 29;
	}
	return h < 2 ? h + 2 : h;
}

static int
on_blocks(void *opaque, const struct stream_block *blocks, size_t n,
    uint32_t sid, struct err *e)
{
	struct digest *d = opaque;
	uint64_t off = 0;
	size_t i;

	d->blocks = xcalloc(n, sizeof(*blocks));
	memcpy(d->blocks, blocks, n * sizeof(*blocks));
	d->nblocks = n;
	d->hash = xcalloc(n, sizeof(*d->hash));
	d->base = xcalloc(n, sizeof(*d->base));
	for (i = 0; i < n; i++) {
		d->hash[i] = xcalloc(blocks[i].used_length / PAGE + 1,
		    sizeof(uint64_t));
		d->base[i] = off;
		off += blocks[i].used_length;
	}
	if (d->ram_fd >= 0 && ftruncate(d->ram_fd, (off_t)off) < 0)
		return err_sys(e, ERR_FAIL, "ftruncate");
	return 0;
}

static int
on_page(void *opaque, uint32_t block, uint64_t offset, const uint8_t *data,
    struct err *e)
{
	struct digest *d = opaque;
	static const uint8_t zero[PAGE];

	d->hash[block][offset / PAGE] = data ? hash_page(data) : 1;
	if (d->ram_fd >= 0 && pwrite_full(d->ram_fd, data ? data : zero, PAGE,
	    (off_t)(d->base[block] + offset)) < 0)
		return err_sys(e, ERR_FAIL, "write --ram");
	return 0;
}

static int
on_tail(void *opaque, const uint8_t *data, size_t len, struct err *e)
{
	struct digest *d = opaque;

	if (d->tail_fd >= 0 && write_full(d->tail_fd, data, len) < 0)
		return err_sys(e, ERR_FAIL, "write --tail");
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "ram", required_argument, NULL, 'r' },
		{ "tail", required_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 },
	};
	struct stream_sink sink = { 0 };
	struct digest d = { 0 };
	struct err e = ERR_INIT;
	struct stream_parser *p;
	uint64_t tp = 0, tz = 0, th = 0;
	uint8_t *buf;
	ssize_t n;
	size_t i, k;
	int ch, fd = STDIN_FILENO;

	d.ram_fd = d.tail_fd = -1;
	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		int *dst = ch == 'r' ? &d.ram_fd : &d.tail_fd;

		if (ch != 'r' && ch != 't')
			return 2;
		*dst = open(optarg, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (*dst < 0) {
			perror(optarg);
			return 1;
		}
	}
	if (optind < argc && strcmp(argv[optind], "-") != 0) {
		fd = open(argv[optind], O_RDONLY);
		if (fd < 0) {
			perror(argv[optind]);
			return 1;
		}
	}
	sink.blocks = on_blocks;
	sink.page = on_page;
	sink.tail = on_tail;
	p = stream_parser_new(&sink, &d);
	buf = xmalloc(1u << 20);
	while ((n = read(fd, buf, 1u << 20)) > 0)
		if (stream_parser_feed(p, buf, (size_t)n, &e) < 0)
			goto fail;
	if (n < 0) {
		perror("read");
		return 1;
	}
	if (stream_parser_finish(p, &e) < 0)
		goto fail;
	for (i = 0; i < d.nblocks; i++) {
		uint64_t present = 0, zero = 0, h = 0x84222325cbf29ce4ull;

		for (k = 0; k < d.blocks[i].used_length / PAGE; k++) {
			if (d.hash[i][k] == 0)
				continue;
			present++;
			zero += d.hash[i][k] == 1;
			h = (h ^ (d.hash[i][k] + k)) * 0x100000001b3ull;
		}
		printf("block %s %llu present=%llu zero=%llu digest=%016llx\n",
		    d.blocks[i].name,
		    (unsigned long long)d.blocks[i].used_length,
		    (unsigned long long)present, (unsigned long long)zero,
		    (unsigned long long)h);
		tp += present;
		tz += zero;
		th = (th ^ h) * 0x100000001b3ull;
	}
	printf("total present=%llu zero=%llu digest=%016llx\n",
	    (unsigned long long)tp, (unsigned long long)tz,
	    (unsigned long long)th);
	stream_parser_free(p);
	free(buf);
	return 0;
fail:
	fprintf(stderr, "streamdigest: %s\n", e.msg);
	return 1;
}
