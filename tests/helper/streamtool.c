/*
 * streamtool - the stream module's hidden test helper (git's test-tool):
 * drives stream.c's parser and writer from shell tests and by hand.
 *
 *   streamtool dump FILE        records, blocks, sections and counters
 *   streamtool digest FILE      per block: pages present, zero, and a hash
 *                               of the newest copy of every page; a total
 *   streamtool regen [--switchover keep|drop|add] IN OUT
 *                               parse IN, keep the newest copy of every
 *                               page, write OUT with the stream writer
 *                               (each page once, in block/offset order)
 *   streamtool bench [--mib N] [--chunk BYTES] [--rounds N] [--touch]
 *                               parser throughput on a synthetic stream of
 *                               N MiB of PAGE records (default 1024); the
 *                               sink reads one byte of each page, or with
 *                               --touch sums every word of it
 *
 * FILE or IN may be "-" for stdin.  Exit 0, or 1 with a message on stderr.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stream.h"
#include "streamgen.h"
#include "util.h"

#define PAGE STREAM_PAGE_SIZE

enum { P_ABSENT = 0, P_ZERO, P_DATA };

/* The newest copy of every page, per block. */
struct ram {
	struct stream_block *blocks;
	size_t nblocks;
	uint32_t sid;
	uint8_t **state;	/* per block, per page: P_* */
	uint8_t **data;		/* per block: used_length bytes (lazy zero) */
	struct buf config;
	char machine[256];
	struct buf tail;
	int dump;		/* print records as they come */
	uint64_t sec_records;
	int sec_type;
};

static const char *
type_name(int t)
{
	return t == 1 ? "START" : t == 2 ? "PART" : t == 3 ? "END" : "?";
}

static void
dump_section_end(struct ram *r)
{
	if (r->dump && r->sec_type != 0)
		printf("section %s records=%" PRIu64 "\n",
		    type_name(r->sec_type), r->sec_records);
	r->sec_type = 0;
}

static int
on_config(void *opaque, const uint8_t *raw, size_t len, const char *machine,
    struct err *e)
{
	struct ram *r = opaque;

	buf_add(&r->config, raw, len);
	snprintf(r->machine, sizeof(r->machine), "%s", machine);
	if (r->dump)
		printf("config machine=%s bytes=%zu\n", machine, len);
	return 0;
}

static int
on_blocks(void *opaque, const struct stream_block *b, size_t n, uint32_t sid,
    struct err *e)
{
	struct ram *r = opaque;
	size_t i;

	r->blocks = xcalloc(n, sizeof(*b));
	memcpy(r->blocks, b, n * sizeof(*b));
	r->nblocks = n;
	r->sid = sid;
	r->state = xcalloc(n, sizeof(*r->state));
	r->data = xcalloc(n, sizeof(*r->data));
	for (i = 0; i < n; i++) {
		r->state[i] = xcalloc(b[i].used_length / PAGE, 1);
		r->data[i] = xcalloc(1, b[i].used_length);
		if (r->dump) {
			printf("block %zu %s used_length=0x%" PRIx64, i,
			    b[i].name, b[i].used_length);
			if (b[i].has_mr_addr)
				printf(" mr_addr=0x%" PRIx64, b[i].mr_addr);
			printf("\n");
		}
	}
	if (r->dump)
		printf("blocks %zu ram_section_id=%" PRIu32 "\n", n, sid);
	return 0;
}

static int
on_page(void *opaque, uint32_t block, uint64_t offset, const uint8_t *data,
    struct err *e)
{
	struct ram *r = opaque;
	uint64_t pg = offset / PAGE;

	if (data != NULL) {
		memcpy(r->data[block] + offset, data, PAGE);
		r->state[block][pg] = P_DATA;
	} else {
		memset(r->data[block] + offset, 0, PAGE);
		r->state[block][pg] = P_ZERO;
	}
	r->sec_records++;
	return 0;
}

static int
on_section(void *opaque, int type, struct err *e)
{
	struct ram *r = opaque;

	dump_section_end(r);
	r->sec_type = type;
	r->sec_records = 0;
	return 0;
}

static int
on_switchover(void *opaque, struct err *e)
{
	struct ram *r = opaque;

	dump_section_end(r);
	if (r->dump)
		printf("command 11 SWITCHOVER_START\n");
	return 0;
}

static int
on_tail(void *opaque, const uint8_t *data, size_t len, struct err *e)
{
	struct ram *r = opaque;

	buf_add(&r->tail, data, len);
	return 0;
}

static const struct stream_sink ram_sink = {
	on_config, on_blocks, on_page, on_section, on_switchover, on_tail,
};

static void
ram_release(struct ram *r)
{
	size_t i;

	for (i = 0; i < r->nblocks; i++) {
		free(r->state[i]);
		free(r->data[i]);
	}
	free(r->state);
	free(r->data);
	free(r->blocks);
	buf_release(&r->config);
	buf_release(&r->tail);
}

/* Parse a file (or stdin) into r; stats copied to st. */
static int
load(const char *path, struct ram *r, struct stream_stats *st, struct err *e)
{
	struct stream_parser *p = NULL;
	static uint8_t chunk[1 << 16];
	ssize_t n;
	int fd = -1, rc = -1;

	fd = strcmp(path, "-") == 0 ? 0 : open(path, O_RDONLY);
	if (fd < 0) {
		err_sys(e, ERR_FAIL, "cannot open '%s'", path);
		goto out;
	}
	p = stream_parser_new(&ram_sink, r);
	for (;;) {
		n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			err_sys(e, ERR_FAIL, "cannot read '%s'", path);
			goto out;
		}
		if (n == 0)
			break;
		if (stream_parser_feed(p, chunk, (size_t)n, e) < 0)
			goto out;
	}
	if (stream_parser_finish(p, e) < 0)
		goto out;
	dump_section_end(r);
	*st = *stream_parser_stats(p);
	rc = 0;
out:
	if (p != NULL && rc < 0)
		*st = *stream_parser_stats(p);
	stream_parser_free(p);
	if (fd > 0)
		close(fd);
	return rc;
}

static void
print_stats(const struct stream_stats *st, size_t tail)
{
	printf("stats bytes=%" PRIu64 " page_records=%" PRIu64
	    " zero_records=%" PRIu64 " sections=%" PRIu32 " saw_end=%d"
	    " saw_switchover=%d complete=%d tail=%zu\n", st->bytes,
	    st->page_records, st->zero_records, st->sections, st->saw_end,
	    st->saw_switchover, st->complete, tail);
}

static int
cmd_dump(const char *path, struct err *e)
{
	struct ram r = { 0 };
	struct stream_stats st;
	int rc;

	r.dump = 1;
	rc = load(path, &r, &st, e);
	if (rc == 0)
		print_stats(&st, r.tail.len);
	ram_release(&r);
	return rc;
}

static uint64_t
hash_bytes(uint64_t h, const uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

static int
cmd_digest(const char *path, struct err *e)
{
	struct ram r = { 0 };
	struct stream_stats st;
	uint64_t total = 0xcbf29ce484222325ull, h, pg, np;
	uint64_t tp = 0, tz = 0, present, zero;
	size_t i;
	int rc;

	rc = load(path, &r, &st, e);
	for (i = 0; rc == 0 && i < r.nblocks; i++) {
		h = 0xcbf29ce484222325ull;
		present = zero = 0;
		np = r.blocks[i].used_length / PAGE;
		for (pg = 0; pg < np; pg++) {
			uint8_t s = r.state[i][pg];

			if (s == P_ABSENT)
				continue;
			present++;
			zero += s == P_ZERO;
			h = hash_bytes(h, (const uint8_t *)&pg, sizeof(pg));
			h = hash_bytes(h, r.data[i] + pg * PAGE, PAGE);
		}
		printf("block %s 0x%" PRIx64 " present=%" PRIu64 " zero=%"
		    PRIu64 " digest=%016" PRIx64 "\n", r.blocks[i].name,
		    r.blocks[i].used_length, present, zero, h);
		total = hash_bytes(total, (const uint8_t *)&h, sizeof(h));
		tp += present;
		tz += zero;
	}
	if (rc == 0)
		printf("total present=%" PRIu64 " zero=%" PRIu64 " digest=%016"
		    PRIx64 "\n", tp, tz, total);
	ram_release(&r);
	return rc;
}

static int
write_fd(void *opaque, const void *buf, size_t len, struct err *e)
{
	int fd = *(int *)opaque;

	if (write_full(fd, buf, len) < 0)
		return err_sys(e, ERR_FAIL, "cannot write the stream");
	return 0;
}

static int
cmd_regen(const char *in, const char *outpath, const char *sw, struct err *e)
{
	struct ram r = { 0 };
	struct stream_stats st;
	struct stream_writer *w = NULL;
	uint64_t pg, np;
	size_t i;
	int fd = -1, rc = -1, swo;

	if (load(in, &r, &st, e) < 0)
		goto out;
	if (strcmp(sw, "keep") == 0)
		swo = st.saw_switchover;
	else if (strcmp(sw, "add") == 0)
		swo = 1;
	else if (strcmp(sw, "drop") == 0)
		swo = 0;
	else {
		err_set(e, ERR_USAGE, "--switchover: keep, drop or add");
		goto out;
	}
	fd = strcmp(outpath, "-") == 0 ? 1 :
	    open(outpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		err_sys(e, ERR_FAIL, "cannot create '%s'", outpath);
		goto out;
	}
	w = stream_writer_new(write_fd, &fd);
	if (stream_writer_begin(w, r.config.data, r.config.len, r.blocks,
	    r.nblocks, r.sid, e) < 0)
		goto out;
	for (i = 0; i < r.nblocks; i++) {
		np = r.blocks[i].used_length / PAGE;
		for (pg = 0; pg < np; pg++) {
			uint8_t s = r.state[i][pg];

			if (s == P_ABSENT)
				continue;
			if (stream_writer_page(w, (uint32_t)i, pg * PAGE,
			    s == P_DATA ? r.data[i] + pg * PAGE : NULL, e) < 0)
				goto out;
		}
	}
	if (stream_writer_finish(w, swo, r.tail.data, r.tail.len, e) < 0)
		goto out;
	rc = 0;
out:
	stream_writer_free(w);
	if (fd > 1 && close(fd) < 0 && rc == 0)
		rc = err_sys(e, ERR_FAIL, "cannot close '%s'", outpath);
	ram_release(&r);
	return rc;
}

static int
on_page_light(void *opaque, uint32_t block, uint64_t offset,
    const uint8_t *data, struct err *e)
{
	uint64_t *sum = opaque;

	/* Touch a word of every page, as a real sink would read it. */
	*sum += offset + (data != NULL ? data[offset % 4093] : 0);
	return 0;
}

static int
on_page_touch(void *opaque, uint32_t block, uint64_t offset,
    const uint8_t *data, struct err *e)
{
	uint64_t *sum = opaque, v, s = 0;
	size_t i;

	if (data == NULL)
		return 0;
	for (i = 0; i < PAGE; i += 8) {
		memcpy(&v, data + i, 8);
		s += v;
	}
	*sum += s;
	return 0;
}

static int
write_buf(void *opaque, const void *p, size_t len, struct err *e)
{
	buf_add(opaque, p, len);
	return 0;
}

static int
cmd_bench(uint64_t mib, size_t chunk, unsigned rounds, int touch,
    struct err *e)
{
	static const uint8_t config[] = {
		0x07, 0, 0, 0, 10, 'p', 'c', '-', 'q', '3', '5', '-', '7',
		'.', '2',
	};
	static const uint8_t tail[] = {
		0x04, 0, 0, 0, 9, 1, 'x', 0, 0, 0, 0, 0, 0, 0, 1,
		0x7e, 0, 0, 0, 9, 0x00,
	};
	struct stream_block b = { "pc.ram", 0, 0, 0 };
	struct stream_sink sink = { 0 };
	struct stream_writer *w;
	struct stream_parser *p = NULL;
	struct buf s = BUF_INIT;
	uint8_t page[PAGE];
	uint64_t pg, sum = 0, t0, ns, best = UINT64_MAX;
	uint64_t seed = 88172645463325252ull;
	size_t i, off, n;
	unsigned k;
	int rc = -1;

	b.used_length = mib << 20;
	w = stream_writer_new(write_buf, &s);
	if (stream_writer_begin(w, config, sizeof(config), &b, 1, 2, e) < 0)
		goto out;
	for (pg = 0; pg < b.used_length / PAGE; pg++) {
		for (i = 0; i < PAGE; i += 8) {
			seed ^= seed << 13;
			seed ^= seed >> 7;
			seed ^= seed << 17;
			memcpy(page + i, &seed, 8);
		}
		if (stream_writer_page(w, 0, pg * PAGE, page, e) < 0)
			goto out;
	}
	if (stream_writer_finish(w, 0, tail, sizeof(tail), e) < 0)
		goto out;
	sink.page = touch ? on_page_touch : on_page_light;
	for (k = 0; k < rounds; k++) {
		p = stream_parser_new(&sink, &sum);
		t0 = now_mono_ns();
		for (off = 0; off < s.len; off += n) {
			n = s.len - off < chunk ? s.len - off : chunk;
			if (stream_parser_feed(p, s.data + off, n, e) < 0)
				goto out;
		}
		if (stream_parser_finish(p, e) < 0)
			goto out;
		ns = now_mono_ns() - t0;
		if (ns < best)
			best = ns;
		stream_parser_free(p);
		p = NULL;
	}
	printf("bench stream=%zu bytes chunk=%zu rounds=%u sink=%s best=%.3f "
	    "ms throughput=%.0f MB/s (sum %" PRIx64 ")\n", s.len, chunk,
	    rounds, touch ? "touch" : "light", best / 1e6,
	    s.len / (best / 1e9) / 1e6, sum);
	rc = 0;
out:
	stream_parser_free(p);
	stream_writer_free(w);
	buf_release(&s);
	return rc;
}

static void
usage(void)
{
	fprintf(stderr, "usage: streamtool dump FILE\n"
	    "       streamtool digest FILE\n"
	    "       streamtool regen [--switchover keep|drop|add] IN OUT\n"
	    "       streamtool bench [--mib N] [--chunk BYTES] [--rounds N] "
	    "[--touch]\n");
	exit(2);
}

static uint64_t
num(const char *s, uint64_t min, uint64_t max)
{
	uint64_t v;
	const char *why;

	if (parse_u64(s, min, max, &v, &why) < 0) {
		fprintf(stderr, "streamtool: invalid number '%s': %s\n", s,
		    why);
		exit(2);
	}
	return v;
}

int
main(int argc, char **argv)
{
	struct err e = ERR_INIT;
	int rc = -1, i;

	if (argc < 2)
		usage();
	if (strcmp(argv[1], "dump") == 0 && argc == 3) {
		rc = cmd_dump(argv[2], &e);
	} else if (strcmp(argv[1], "digest") == 0 && argc == 3) {
		rc = cmd_digest(argv[2], &e);
	} else if (strcmp(argv[1], "regen") == 0) {
		const char *sw = "keep";

		i = 2;
		if (argc > 3 && strcmp(argv[2], "--switchover") == 0) {
			sw = argv[3];
			i = 4;
		}
		if (argc - i != 2)
			usage();
		rc = cmd_regen(argv[i], argv[i + 1], sw, &e);
	} else if (strcmp(argv[1], "bench") == 0) {
		uint64_t mib = 1024, chunk = 1 << 20, rounds = 3;
		int touch = 0;

		for (i = 2; i < argc; i += 2) {
			if (strcmp(argv[i], "--touch") == 0) {
				touch = 1;
				i--;
			} else if (i + 1 == argc) {
				usage();
			} else if (strcmp(argv[i], "--mib") == 0)
				mib = num(argv[i + 1], 1, 1 << 16);
			else if (strcmp(argv[i], "--chunk") == 0)
				chunk = num(argv[i + 1], 1, 1 << 30);
			else if (strcmp(argv[i], "--rounds") == 0)
				rounds = num(argv[i + 1], 1, 1000);
			else
				usage();
		}
		rc = cmd_bench(mib, (size_t)chunk, (unsigned)rounds, touch,
		    &e);
	} else {
		usage();
	}
	if (fflush(stdout) != 0 && rc == 0)
		rc = err_sys(&e, ERR_FAIL, "cannot write to stdout");
	if (rc < 0) {
		fprintf(stderr, "streamtool: %s\n", e.msg);
		return 1;
	}
	return 0;
}
