/*
 * Unit tests of stream.c: the parser against real QEMU 7.2 and 10.0 streams
 * (tests/data/streams/, zstd-compressed) and hand-built ones, checked
 * against a small independent reference walker; refusals, truncation, bit
 * flips, chunking; real streams rebuilt by the writer and parsed again.
 * The writer's own tests: streamgen.c; shared helpers: streamtest.h.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "stream.h"
#include "streamgen.h"
#include "util.h"
#include "tap.h"
#include "streamtest.h"

/* ---- fixtures ----------------------------------------------------------- */

static uint8_t *
load_zst(const char *name, size_t *len)
{
	const char *dir = getenv("SNAPCTL_TEST_DATA");
	char path[512];
	FILE *f;
	uint8_t *z, *out;
	long zlen;
	unsigned long long n;

	snprintf(path, sizeof(path), "%s/%s.zst",
	    dir != NULL ? dir : "tests/data/streams", name);
	f = fopen(path, "rb");
	if (f == NULL) {
		note("cannot open %s", path);
		return NULL;
	}
	fseek(f, 0, SEEK_END);
	zlen = ftell(f);
	fseek(f, 0, SEEK_SET);
	z = xmalloc((size_t)zlen);
	if (fread(z, 1, (size_t)zlen, f) != (size_t)zlen) {
		fclose(f);
		free(z);
		return NULL;
	}
	fclose(f);
	n = ZSTD_getFrameContentSize(z, (size_t)zlen);
	if (n == ZSTD_CONTENTSIZE_ERROR || n == ZSTD_CONTENTSIZE_UNKNOWN) {
		note("%s: no content size in the zstd frame", path);
		free(z);
		return NULL;
	}
	out = xmalloc(n);
	*len = ZSTD_decompress(out, n, z, (size_t)zlen);
	free(z);
	if (ZSTD_isError(*len) || *len != n) {
		note("%s: cannot decompress", path);
		free(out);
		return NULL;
	}
	return out;
}

/* ---- an independent reference walk (whole buffer, no streaming) --------- */

#define MAX_BOUNDS 4096

struct ref {
	int ok;
	char why[128];
	size_t config_len;
	char machine[256];
	int ignore_shared;
	size_t nblocks;
	char names[64][256];
	uint64_t used[64];
	uint64_t mr_addr[64];
	uint32_t ram_sid;
	uint64_t pages, zeros, sections;
	int saw_end, saw_switchover;
	uint64_t hash;		/* over the page sequence */
	size_t tail_off;
	size_t vmdesc_off;	/* 0: none */
	size_t bounds[MAX_BOUNDS];	/* top-level record offsets */
	size_t nbounds;
	uint8_t *covered[64];	/* pages seen per block */
};

static void
ref_bound(struct ref *r, size_t off)
{
	if (r->nbounds < MAX_BOUNDS)
		r->bounds[r->nbounds++] = off;
}

static void
ref_free(struct ref *r)
{
	size_t i;

	for (i = 0; i < 64; i++)
		free(r->covered[i]);
}

static void
ref_walk(const uint8_t *d, size_t len, struct ref *r)
{
	size_t p = 8, i, n;
	int last = -1;

	memset(r, 0, sizeof(*r));
	r->hash = FNV0;
	ref_bound(r, 0);
	ref_bound(r, 8);
	if (len < 8 || memcmp(d, "QEVM\0\0\0\3", 8) != 0 || d[p] != 7) {
		snprintf(r->why, sizeof(r->why), "header");
		return;
	}
	n = get_be32(d + p + 1);
	memcpy(r->machine, d + p + 5, n);
	p += 5 + n;
	while (d[p] == 5) {
		size_t nl = d[p + 1];
		const char *name = (const char *)d + p + 2;

		p += 2 + nl + 4;
		if (nl == 26 && memcmp(name, "configuration/capabilities",
		    26) == 0) {
			uint32_t c = get_be32(d + p);

			p += 4;
			while (c-- > 0) {
				if (d[p] == 15 && memcmp(d + p + 1,
				    "x-ignore-shared", 15) == 0)
					r->ignore_shared = 1;
				p += 1 + d[p];
			}
		} else if (nl == 18) {	/* configuration/uuid */
			p += 16;
		} else {
			snprintf(r->why, sizeof(r->why), "subsection");
			return;
		}
	}
	r->config_len = p - 8;
	for (;;) {
		uint8_t t = d[p];
		uint32_t sid;

		ref_bound(r, p);
		if (t == 8) {
			if (get_be16(d + p + 1) != 11) {
				snprintf(r->why, sizeof(r->why), "command");
				return;
			}
			r->saw_switchover = 1;
			p += 5;
			continue;
		}
		if (t == 4)
			break;
		if (t == 1) {
			sid = get_be32(d + p + 1);
			r->ram_sid = sid;
			p += 5 + 1 + d[p + 5] + 8;
		} else if (t == 2 || t == 3) {
			sid = get_be32(d + p + 1);
			p += 5;
			r->saw_end |= t == 3;
		} else {
			snprintf(r->why, sizeof(r->why), "type %u at %zu", t,
			    p);
			return;
		}
		r->sections++;
		for (;;) {
			uint64_t w = get_be64(d + p), addr = w & ~0xfffull;
			unsigned fl = (unsigned)(w & 0xfff);

			p += 8;
			if (fl == 0x10)
				break;
			if (fl == 4) {
				while (addr > 0) {
					i = r->nblocks++;
					n = d[p];
					memcpy(r->names[i], d + p + 1, n);
					p += 1 + n;
					r->used[i] = get_be64(d + p);
					p += 8;
					if (r->ignore_shared) {
						r->mr_addr[i] = get_be64(d + p);
						p += 8;
					}
					addr -= r->used[i];
					r->covered[i] = xcalloc(r->used[i] /
					    PAGE, 1);
				}
				continue;
			}
			if (!(fl & 0x20)) {
				n = d[p];
				for (i = 0; i < r->nblocks; i++)
					if (strlen(r->names[i]) == n &&
					    memcmp(r->names[i], d + p + 1,
					    n) == 0)
						last = (int)i;
				p += 1 + n;
			}
			r->covered[last][addr / PAGE] = 1;
			if ((fl & ~0x20u) == 2) {
				if (d[p] != 0) {
					snprintf(r->why, sizeof(r->why),
					    "fill");
					return;
				}
				r->zeros++;
				r->hash = hash_page(r->hash, (uint32_t)last,
				    addr, NULL);
				p += 1;
			} else {
				r->pages++;
				r->hash = hash_page(r->hash, (uint32_t)last,
				    addr, d + p);
				p += PAGE;
			}
		}
		if (d[p] != 0x7e || get_be32(d + p + 1) != sid) {
			snprintf(r->why, sizeof(r->why), "footer");
			return;
		}
		p += 5;
	}
	r->tail_off = p;
	/* The vmdesc: find the EOF + 06 + length reaching the end. */
	for (i = len - 6; i > p; i--) {
		if (d[i] == 6 && d[i - 1] == 0 &&
		    i + 5 + get_be32(d + i + 1) == len) {
			r->vmdesc_off = i;
			ref_bound(r, i - 1);
			ref_bound(r, i);
			break;
		}
	}
	ref_bound(r, len - 1);
	r->ok = 1;
}

/* ---- real streams -------------------------------------------------------- */

struct fixture {
	const char *name;
	const char *machine;
	int bg;			/* background snapshot: no END */
	int switchover;
	int ign;
};

static const struct fixture fixtures[] = {
	{ "stream_72_pc-q35-7.2.bin", "pc-q35-7.2", 0, 0, 0 },
	{ "stream_10_pc-q35-10.0.bin", "pc-q35-10.0", 0, 1, 0 },
	{ "stream_10_q35_9.2.bin", "pc-q35-9.2", 0, 0, 0 },
	{ "stream_72_bg.bin", "pc-q35-7.2", 1, 0, 0 },
	{ "stream_10_bg.bin", "pc-q35-10.0", 1, 0, 0 },
	{ "stream_72_ign.bin", "pc-q35-7.2", 0, 0, 1 },
};

static int
all_covered(struct rec *r)
{
	size_t i;
	uint64_t pg;

	for (i = 0; i < r->nblocks; i++)
		for (pg = 0; pg < r->blocks[i].used_length / PAGE; pg++)
			if (!r->covered[i][pg])
				return 0;
	return 1;
}

static int
tail_end_ok(const uint8_t *t, size_t len)
{
	size_t v;
	uint32_t n;

	/* EOF + vmdesc, found from the end: 00 06 <len> { ... } */
	for (v = len - 2; v > 6; v--) {
		if (t[v] != 6 || t[v - 1] != 0)
			continue;
		n = get_be32(t + v + 1);
		if (v + 5 + n == len)
			return t[v + 5] == '{' && t[len - 1] == '}' &&
			    t[v - 6] == 0x7e;
	}
	return t[len - 1] == 0 && t[len - 6] == 0x7e;
}

static void
test_truncations(const char *name, const uint8_t *d, size_t len,
    const struct ref *ref)
{
	size_t cuts[MAX_BOUNDS + 600];
	size_t ncut = 0, i, bad = 0;
	char want[64];
	struct err e;
	struct rec r;

	/* Every record boundary the walk saw, and 1 byte either side. */
	for (i = 0; i < ref->nbounds; i++) {
		if (ref->bounds[i] > 0)
			cuts[ncut++] = ref->bounds[i] - 1;
		cuts[ncut++] = ref->bounds[i];
		cuts[ncut++] = ref->bounds[i] + 1;
	}
	for (i = 0; i < 200; i++)	/* random points anywhere */
		cuts[ncut++] = rnd() % len;
	for (i = 0; i < 60; i++)	/* and inside the tail */
		cuts[ncut++] = ref->tail_off + rnd() % (len - ref->tail_off);
	for (i = 0; i < ncut; i++) {
		size_t c = cuts[i];

		/*
		 * Cut right before the VMDESCRIPTION: a complete stream
		 * without one (the vmdesc is optional), so it must pass.
		 */
		if (c >= len || (ref->vmdesc_off != 0 && c == ref->vmdesc_off))
			continue;
		err_clear(&e);
		rec_init(&r);
		r.nohash = 1;
		snprintf(want, sizeof(want), "truncated at offset %zu ", c);
		if (c == 0)
			snprintf(want, sizeof(want), "empty migration stream");
		if (parse(d, c, (long)(c / 2 + 1), &r, NULL, &e) == 0 ||
		    strstr(e.msg, want) == NULL || r.tails != 0) {
			if (bad++ < 5)
				note("cut at %zu: %s", c, e.msg);
		}
		rec_release(&r);
	}
	check(bad == 0, "%s: cut at %zu points (every record boundary, "
	    "random, in the tail): finish fails naming the offset", name, ncut);
	if (ref->vmdesc_off != 0) {
		err_clear(&e);
		rec_init(&r);
		check(parse(d, ref->vmdesc_off, 0, &r, NULL, &e) == 0,
		    "%s: cut right before the optional VMDESCRIPTION is a "
		    "complete stream %s", name, e.msg);
		rec_release(&r);
	}
}

static void
test_bitflips(const char *name, const uint8_t *d, size_t len,
    const struct ref *ref, int n)
{
	uint8_t *m = xmalloc(len);
	int i, k, errors = 0, bad = 0;
	struct err e;
	struct rec r;
	size_t pos;

	for (i = 0; i < n; i++) {
		memcpy(m, d, len);
		for (k = 0; k < 1 + (int)(rnd() % 3); k++) {
			/* Half in the structure before the pages. */
			if (rnd() % 2)
				pos = rnd() % (ref->config_len + 8 + 600);
			else
				pos = rnd() % len;
			m[pos] ^= (uint8_t)(1u << (rnd() % 8));
		}
		err_clear(&e);
		rec_init(&r);
		r.nohash = 1;
		if (parse(m, len, i % 2 ? -70000 : 0, &r, NULL, &e) < 0) {
			errors++;
			/* A refusal is a format error with a one-line message. */
			if (e.kind != ERR_FAIL || e.msg[0] == '\0' ||
			    strchr(e.msg, '\n') != NULL) {
				if (bad++ < 5)
					note("flip %d: kind %d, bad message "
					    "'%s'", i, (int)e.kind, e.msg);
			}
		}
		rec_release(&r);
	}
	free(m);
	/* Half the flips land in the structure: some must be refused. */
	check(bad == 0 && errors > 0, "%s: %d random bit flips parse without "
	    "a crash, %d refused, each with a one-line message", name, n,
	    errors);
}

/* Rebuild the stream from the newest pages and parse it again. */

static int
regen(struct rec *r, int switchover, struct membuf *out, struct err *e)
{
	struct stream_writer *w = stream_writer_new(mem_write, out);
	size_t i;
	uint64_t pg;
	int rc = -1;

	if (stream_writer_begin(w, r->config.data, r->config.len, r->blocks,
	    r->nblocks, r->sid, e) < 0)
		goto out;
	for (i = 0; i < r->nblocks; i++)
		for (pg = 0; pg < r->blocks[i].used_length / PAGE; pg++)
			if (r->state[i][pg] != 0 && stream_writer_page(w,
			    (uint32_t)i, pg * PAGE, r->latest[i][pg], e) < 0)
				goto out;
	if (stream_writer_finish(w, switchover, r->tail.data, r->tail.len,
	    e) < 0)
		goto out;
	if (stream_writer_bytes(w) != out->b.len) {
		err_set(e, ERR_FAIL, "stream_writer_bytes %" PRIu64 " != %zu",
		    stream_writer_bytes(w), out->b.len);
		goto out;
	}
	rc = 0;
out:
	stream_writer_free(w);
	return rc;
}

static int
same_pages(struct rec *a, struct rec *b)
{
	size_t i;
	uint64_t pg;

	if (a->nblocks != b->nblocks)
		return 0;
	for (i = 0; i < a->nblocks; i++) {
		if (strcmp(a->blocks[i].name, b->blocks[i].name) != 0 ||
		    a->blocks[i].used_length != b->blocks[i].used_length ||
		    a->blocks[i].has_mr_addr != b->blocks[i].has_mr_addr ||
		    a->blocks[i].mr_addr != b->blocks[i].mr_addr)
			return 0;
		for (pg = 0; pg < a->blocks[i].used_length / PAGE; pg++) {
			if (a->state[i][pg] != b->state[i][pg])
				return 0;
			if (a->state[i][pg] == 2 && memcmp(a->latest[i][pg],
			    b->latest[i][pg], PAGE) != 0)
				return 0;
		}
	}
	return 1;
}

static void
test_fixture(const struct fixture *f)
{
	struct stream_stats st, st1, st2;
	struct rec r, r1, r2;
	struct membuf out = { BUF_INIT, -1 };
	struct ref ref;
	struct err e = ERR_INIT;
	uint8_t *d;
	size_t len, i, ncov = 0;
	int rc, mr = 0;

	d = load_zst(f->name, &len);
	if (!check(d != NULL, "%s: fixture loads", f->name))
		return;
	ref_walk(d, len, &ref);
	if (!check(ref.ok, "%s: reference walk (%s)", f->name, ref.why))
		goto out;

	rec_init(&r);
	r.keep = 1;
	rc = parse(d, len, 0, &r, &st, &e);
	check(rc == 0, "%s: parses (%s)", f->name, e.msg);
	note("%s: %zu bytes, machine %s, %zu blocks, %" PRIu64 " page + %"
	    PRIu64 " zero records, %" PRIu32 " sections, tail %zu bytes",
	    f->name, len, r.machine, r.nblocks, st.page_records,
	    st.zero_records, st.sections, r.tail.len);
	check(strcmp(r.machine, f->machine) == 0 && r.config.len ==
	    ref.config_len && memcmp(r.config.data, d + 8, ref.config_len) == 0,
	    "%s: configuration %s, %zu raw bytes verbatim", f->name,
	    f->machine, ref.config_len);
	check(r.nblocks == 10 && ref.nblocks == 10, "%s: 10 ram blocks",
	    f->name);
	for (i = 0; i < r.nblocks; i++) {
		if (strcmp(r.blocks[i].name, ref.names[i]) == 0 &&
		    r.blocks[i].used_length == ref.used[i])
			ncov++;
		mr += r.blocks[i].has_mr_addr &&
		    r.blocks[i].mr_addr == ref.mr_addr[i];
	}
	check(ncov == r.nblocks && r.sid == ref.ram_sid, "%s: block names, "
	    "lengths and ram section id %" PRIu32 " match the reference walk",
	    f->name, ref.ram_sid);
	if (f->ign)
		check(mr == 10, "%s: every block has its mr_addr", f->name);
	else
		check(mr == 0, "%s: no block has an mr_addr", f->name);
	check(st.page_records == ref.pages && st.zero_records == ref.zeros &&
	    r.pages == ref.pages && r.zeros == ref.zeros &&
	    r.hash == ref.hash && st.sections == ref.sections,
	    "%s: %" PRIu64 " page and %" PRIu64 " zero records, page sequence "
	    "checksum and %" PRIu64 " sections match the reference walk",
	    f->name, ref.pages, ref.zeros, ref.sections);
	check(st.page_records + st.zero_records >= 69906 &&
	    st.zero_records > 69000, "%s: at least 69,906 records, most of "
	    "them zero pages", f->name);
	check(all_covered(&r), "%s: every page of every block was sent",
	    f->name);
	check(r.tails == 1 && r.tail.len == len - ref.tail_off &&
	    memcmp(r.tail.data, d + ref.tail_off, r.tail.len) == 0 &&
	    r.tail.data[0] == 0x04 && tail_end_ok(r.tail.data, r.tail.len) &&
	    r.tail.len > 300000 && r.tail.len < 400000,
	    "%s: tail of %zu bytes verbatim from the first FULL, ends with EOF "
	    "and a VMDESCRIPTION", f->name, r.tail.len);
	check(st.bytes == len && st.complete, "%s: all %zu bytes consumed, "
	    "complete", f->name, len);
	check(st.saw_end == !f->bg && (r.sections[3] == 1) == !f->bg,
	    "%s: saw_end=%d", f->name, st.saw_end);
	check(st.saw_switchover == f->switchover &&
	    r.switchovers == f->switchover, "%s: saw_switchover=%d", f->name,
	    st.saw_switchover);

	/* Chunking: 1 byte at a time and random sizes give the same. */
	rec_init(&r1);
	err_clear(&e);
	rc = parse(d, len, 1, &r1, &st1, &e);
	check(rc == 0 && r1.hash == r.hash && r1.pages == r.pages &&
	    r1.zeros == r.zeros && r1.tail.len == r.tail.len &&
	    memcmp(r1.tail.data, r.tail.data, r.tail.len) == 0 &&
	    st1.bytes == st.bytes && st1.sections == st.sections &&
	    r1.config.len == r.config.len,
	    "%s: fed 1 byte at a time: same pages, tail, counters (%s)",
	    f->name, e.msg);
	rec_release(&r1);
	rec_init(&r1);
	err_clear(&e);
	rc = parse(d, len, -9000, &r1, &st1, &e);
	check(rc == 0 && r1.hash == r.hash && r1.tail.len == r.tail.len,
	    "%s: fed in random chunks of 1..9000 bytes: same result (%s)",
	    f->name, e.msg);
	rec_release(&r1);

	/* Round trip through the writer. */
	err_clear(&e);
	rc = regen(&r, f->switchover, &out, &e);
	rec_init(&r2);
	r2.keep = 1;
	if (rc == 0)
		rc = parse(out.b.data, out.b.len, -100000, &r2, &st2, &e);
	check(rc == 0 && same_pages(&r, &r2) && r2.sid == r.sid &&
	    r2.tail.len == r.tail.len &&
	    memcmp(r2.tail.data, r.tail.data, r.tail.len) == 0 &&
	    r2.config.len == r.config.len &&
	    memcmp(r2.config.data, r.config.data, r.config.len) == 0 &&
	    st2.saw_end && st2.saw_switchover == f->switchover &&
	    st2.page_records + st2.zero_records == 69906,
	    "%s: parse -> writer -> parse: same newest pages (%" PRIu64
	    " + %" PRIu64 "), blocks, tail, config (%zu bytes; %s)", f->name,
	    st2.page_records, st2.zero_records, out.b.len, e.msg);
	rec_release(&r2);
	buf_release(&out.b);

	test_truncations(f->name, d, len, &ref);
	test_bitflips(f->name, d, len, &ref, 80);
	rec_release(&r);
out:
	ref_free(&ref);
	free(d);
}

static void
test_postcopy(void)
{
	struct stream_stats st;
	struct err e = ERR_INIT;
	struct rec r;
	uint8_t *d;
	size_t len;

	d = load_zst("stream_72_postcopy.bin", &len);
	if (!check(d != NULL, "postcopy fixture loads"))
		return;
	rec_init(&r);
	check(parse(d, len, 0, &r, &st, &e) < 0 && strcmp(e.msg,
	    "unsupported migration command 1 (OPEN_RETURN_PATH) at offset 23: "
	    "return path and postcopy streams cannot be captured") == 0 &&
	    e.kind == ERR_FAIL && r.nblocks == 0,
	    "postcopy stream refused: %s", e.msg);
	rec_release(&r);
	/* The same, one byte at a time. */
	rec_init(&r);
	err_clear(&e);
	check(parse(d, len, 1, &r, &st, &e) < 0 &&
	    strstr(e.msg, "command 1 (OPEN_RETURN_PATH) at offset 23") &&
	    st.bytes <= 28, "postcopy stream refused fed byte by byte, "
	    "stops reading at the command");
	rec_release(&r);
	/* Without its first command, the next one is named. */
	memmove(d + 23, d + 28, len - 28);
	err_clear(&e);
	rec_init(&r);
	check(parse(d, len - 5, 0, &r, &st, &e) < 0 &&
	    strstr(e.msg, "command 2 (PING) at offset 23") != NULL,
	    "PING refused: %s", e.msg);
	rec_release(&r);
	memmove(d + 23, d + 32, len - 37);
	err_clear(&e);
	rec_init(&r);
	check(parse(d, len - 14, 0, &r, &st, &e) < 0 &&
	    strstr(e.msg, "command 3 (POSTCOPY_ADVISE) at offset 23") != NULL,
	    "POSTCOPY_ADVISE refused: %s", e.msg);
	rec_release(&r);
	free(d);
}

/* ---- hand-built streams ------------------------------------------------ */

static void
sy_header(struct synth *s, const char *machine)
{
	buf_add(&s->b, "QEVM\0\0\0\3", 8);
	buf_addc(&s->b, 7);
	buf_add_be32(&s->b, (uint32_t)strlen(machine));
	buf_addstr(&s->b, machine);
}

static void
sy_mem_size(struct synth *s, int mr)
{
	buf_add_be64(&s->b, (0x10000 + 0x2000 + 0x1000) | 4);
	sy_cstr(s, "pc.ram");
	buf_add_be64(&s->b, 0x10000);
	if (mr)
		buf_add_be64(&s->b, 0);
	sy_cstr(s, "pc.bios");
	buf_add_be64(&s->b, 0x2000);
	if (mr)
		buf_add_be64(&s->b, 0xfffc0000);
	sy_cstr(s, "/rom@etc/acpi/rsdp");
	buf_add_be64(&s->b, 0x1000);
	if (mr)
		buf_add_be64(&s->b, 0);
}

static void
sy_page(struct synth *s, const char *block, uint64_t off, int fill)
{
	uint8_t page[PAGE];

	buf_add_be64(&s->b, off | 8 | (block == NULL ? 0x20 : 0));
	if (block != NULL)
		sy_cstr(s, block);
	memset(page, fill, PAGE);
	put_be64(page, off);
	buf_add(&s->b, page, PAGE);
}

static void
sy_zero(struct synth *s, const char *block, uint64_t off, uint8_t fill)
{
	buf_add_be64(&s->b, off | 2 | (block == NULL ? 0x20 : 0));
	if (block != NULL)
		sy_cstr(s, block);
	buf_addc(&s->b, fill);
}

static const char SY_JSON[] = "{\"page_size\":4096,\"devices\":[]}";

static void
sy_tail(struct synth *s, int vmdesc)
{
	/* FULL "timer" 0 v2 with 9 payload bytes, footer, EOF. */
	buf_addc(&s->b, 4);
	buf_add_be32(&s->b, 0);
	sy_cstr(s, "timer");
	buf_add_be32(&s->b, 0);
	buf_add_be32(&s->b, 2);
	buf_add(&s->b, "\1\2\3\4\5\6\7\0\x7e", 9);
	buf_addc(&s->b, 0x7e);
	buf_add_be32(&s->b, 0);
	buf_addc(&s->b, 0);
	if (vmdesc) {
		buf_addc(&s->b, 6);
		buf_add_be32(&s->b, (uint32_t)strlen(SY_JSON));
		buf_addstr(&s->b, SY_JSON);
	}
}

/*
 * The redirtied-page stream: page pc.ram 0x3000 sent three times with
 * different contents, the 2nd and 3rd with CONTINUE as the first record of
 * a new section; a 7.2-style ZERO with fill 0x55; a page zeroed after
 * having had data.
 */
static void
sy_redirty(struct synth *s)
{
	s->sid = 2;
	sy_header(s, "pc-q35-7.2");
	sy_start(s, "ram", 0, 4);
	sy_mem_size(s, 0);
	sy_end_section(s);
	sy_section(s, 2);
	sy_page(s, "pc.ram", 0x3000, 0x11);
	sy_zero(s, NULL, 0x4000, 0);
	sy_page(s, "pc.bios", 0x1000, 0x77);
	sy_page(s, "pc.ram", 0x5000, 0x99);
	sy_end_section(s);
	sy_section(s, 2);
	sy_page(s, NULL, 0x3000, 0x22);		/* CONTINUE: pc.ram */
	sy_zero(s, "/rom@etc/acpi/rsdp", 0, 0x55);
	sy_end_section(s);
	sy_section(s, 3);
	sy_zero(s, NULL, 0, 0);			/* rsdp zeroed again */
	sy_page(s, "pc.ram", 0x3000, 0x33);
	sy_zero(s, NULL, 0x5000, 0);		/* had data, now zero */
	sy_end_section(s);
	sy_tail(s, 1);
}

static void
test_redirty(void)
{
	struct synth s = { BUF_INIT, 0 };
	struct stream_stats st, st1;
	struct err e = ERR_INIT;
	struct rec r, r1;
	int rc;

	sy_redirty(&s);
	rec_init(&r);
	r.keep = 1;
	rc = parse(s.b.data, s.b.len, 0, &r, &st, &e);
	check(rc == 0, "redirtied stream parses (%s)", e.msg);
	check(r.nblocks == 3 && r.state[0][3] == 2 &&
	    r.latest[0][3][100] == 0x33 && get_be64(r.latest[0][3]) == 0x3000,
	    "page sent 3 times, CONTINUE across sections: the last copy wins");
	check(r.state[2][0] == 1 && r.state[0][5] == 1 && r.state[0][4] == 1 &&
	    r.state[1][1] == 2 && r.latest[1][1][9] == 0x77,
	    "zeroed pages end zero, the bios page keeps its data");
	check(st.page_records == 6 && st.zero_records == 3 &&
	    st.sections == 4 && st.saw_end && !st.saw_switchover &&
	    st.complete, "counters: 6 page records (one a 0x55 fill), 3 zero "
	    "records, 4 sections");
	rec_release(&r);

	/* A ZERO record with fill 0x55 is a page of 0x55 (as 7.2 loads it). */
	rec_init(&r);
	r.keep = 1;
	buf_reset(&s.b);
	s.sid = 2;
	sy_header(&s, "pc-q35-7.2");
	sy_start(&s, "ram", 0, 4);
	sy_mem_size(&s, 0);
	sy_zero(&s, "/rom@etc/acpi/rsdp", 0, 0x55);
	sy_end_section(&s);
	sy_tail(&s, 0);
	rc = parse(s.b.data, s.b.len, 0, &r, &st, &e);
	check(rc == 0 && r.state[2][0] == 2 && r.latest[2][0][0] == 0x55 &&
	    r.latest[2][0][4095] == 0x55 && st.page_records == 1 &&
	    st.zero_records == 0 && !st.saw_end,
	    "ZERO with fill 0x55 in the START section: a page of 0x55; no "
	    "END section, tail without VMDESCRIPTION (%s)", e.msg);
	rec_release(&r);

	/* Every chunking of the redirtied stream gives the same. */
	buf_reset(&s.b);
	sy_redirty(&s);
	rec_init(&r);
	parse(s.b.data, s.b.len, 0, &r, &st, &e);
	rc = 0;
	for (long c = 1; c <= 4200 && rc == 0; c += c < 20 ? 1 : 97) {
		rec_init(&r1);
		if (parse(s.b.data, s.b.len, c, &r1, &st1, &e) < 0 ||
		    r1.hash != r.hash || r1.tail.len != r.tail.len ||
		    st1.bytes != st.bytes)
			rc = -1;
		rec_release(&r1);
	}
	check(rc == 0, "redirtied stream: every chunk size 1..4200 gives the "
	    "same page sequence");

	/* Truncation at every byte. */
	rc = 0;
	for (size_t c = 0; c < s.b.len; c++) {
		char want[64];

		rec_init(&r1);
		err_clear(&e);
		snprintf(want, sizeof(want), "truncated at offset %zu ", c);
		if (c == s.b.len - 5 - strlen(SY_JSON))
			continue;	/* EOF without the optional vmdesc */
		if (parse(s.b.data, c, (long)(c % 7 + 1), &r1, NULL, &e) == 0 ||
		    (c > 0 && strstr(e.msg, want) == NULL) ||
		    (c == 0 && strcmp(e.msg, "empty migration stream") != 0)) {
			if (rc++ < 3)
				note("cut at %zu: %s", c, e.msg);
		}
		rec_release(&r1);
	}
	check(rc == 0, "redirtied stream cut at each of its %zu bytes: "
	    "finish fails", s.b.len);
	rec_release(&r);
	buf_release(&s.b);
}

/* The parser's message for stream s, fed whole then finished. */
static const char *
msg_for(struct synth *s, struct err *e)
{
	struct rec r;

	err_clear(e);
	rec_init(&r);
	if (parse(s->b.data, s->b.len, 0, &r, NULL, e) == 0)
		err_set(e, ERR_NONE, "(accepted)");
	rec_release(&r);
	return e->msg;
}

static void
expect_msg(struct synth *s, const char *want, const char *what)
{
	struct err e;
	const char *m = msg_for(s, &e);
	int accepted = strcmp(want, "(accepted)") == 0;

	if (!check(strcmp(m, want) == 0 && (accepted || e.kind == ERR_FAIL),
	    "%s: %s", what, m))
		note("expected: %s", want);
}

/* Header, config and the START with MEM_SIZE + EOS + footer. */
static void
sy_prologue(struct synth *s)
{
	buf_reset(&s->b);
	s->sid = 2;
	sy_header(s, "pc-q35-7.2");
	sy_start(s, "ram", 0, 4);
	sy_mem_size(s, 0);
	sy_end_section(s);
}

static void
test_refusals(void)
{
	struct synth s = { BUF_INIT, 2 };
	static const char *const cmds[] = {
		"INVALID", "OPEN_RETURN_PATH", "PING", "POSTCOPY_ADVISE",
		"POSTCOPY_LISTEN", "POSTCOPY_RUN", "POSTCOPY_RAM_DISCARD",
		"PACKAGED", "ENABLE_COLO", "POSTCOPY_RESUME", "RECV_BITMAP",
	};
	char want[256];
	size_t pre, at;
	unsigned c;

	sy_header(&s, "pc-q35-7.2");
	s.b.data[7] = 2;
	expect_msg(&s, "migration stream version 2 at offset 4 is obsolete "
	    "(SaveVM v2); only version 3 is supported", "version 2");
	s.b.data[7] = 4;
	expect_msg(&s, "unsupported migration stream version 4 at offset 4 "
	    "(need 3)", "version 4");
	s.b.data[7] = 3;
	s.b.data[0] = 'X';
	expect_msg(&s, "not a QEMU migration stream: magic 0x5845564d at "
	    "offset 0, expected 0x5145564d (QEVM)", "bad magic");

	buf_reset(&s.b);
	buf_add(&s.b, "QEVM\0\0\0\3", 8);
	sy_start(&s, "ram", 0, 4);
	expect_msg(&s, "missing configuration section: found 0x01 at offset 8",
	    "no configuration section");

	/* Capabilities. */
	buf_reset(&s.b);
	sy_header(&s, "pc-q35-10.0");
	buf_addc(&s.b, 5);
	sy_cstr(&s, "configuration/capabilities");
	buf_add_be32(&s.b, 1);
	buf_add_be32(&s.b, 1);
	at = s.b.len;
	sy_cstr(&s, "mapped-ram");
	sy_start(&s, "ram", 0, 4);
	snprintf(want, sizeof(want), "capability 'mapped-ram' at offset %zu: "
	    "mapped-ram streams cannot be captured", at);
	expect_msg(&s, want, "mapped-ram refused");
	buf_reset(&s.b);
	sy_header(&s, "pc-q35-10.0");
	buf_addc(&s.b, 5);
	sy_cstr(&s, "configuration/capabilities");
	buf_add_be32(&s.b, 1);
	buf_add_be32(&s.b, 1);
	sy_cstr(&s, "x-frobnicate");
	snprintf(want, sizeof(want), "unknown capability 'x-frobnicate' in the "
	    "configuration section at offset %zu", at);
	expect_msg(&s, want, "unknown capability");
	buf_reset(&s.b);
	sy_header(&s, "pc-q35-10.0");
	at = s.b.len;
	buf_addc(&s.b, 5);
	sy_cstr(&s, "configuration/frob");
	buf_add_be32(&s.b, 1);
	snprintf(want, sizeof(want), "unknown configuration subsection "
	    "'configuration/frob' at offset %zu", at);
	expect_msg(&s, want, "unknown configuration subsection");

	/* Sections other than ram. */
	buf_reset(&s.b);
	sy_header(&s, "pc-q35-10.0");
	at = s.b.len;
	buf_addc(&s.b, 4);
	buf_add_be32(&s.b, 1);
	sy_cstr(&s, "0000:00:04.0/virtio-mem");
	buf_add_be32(&s.b, 0);
	buf_add_be32(&s.b, 1);
	snprintf(want, sizeof(want), "device section '0000:00:04.0/virtio-mem' "
	    "(FULL) at offset %zu before the ram START section: early-setup "
	    "device state (e.g. virtio-mem) cannot be captured", at);
	expect_msg(&s, want, "FULL section before the ram START");
	buf_reset(&s.b);
	sy_header(&s, "pc-q35-7.2");
	at = s.b.len;
	s.sid = 5;
	sy_start(&s, "block", 0, 1);
	snprintf(want, sizeof(want), "unsupported iterable section 'block' "
	    "(START) at offset %zu: only 'ram' can be captured", at);
	expect_msg(&s, want, "block migration START refused");
	sy_prologue(&s);
	at = s.b.len;
	s.sid = 7;
	sy_start(&s, "dirty-bitmap", 0, 1);
	snprintf(want, sizeof(want), "unsupported iterable section "
	    "'dirty-bitmap' (START) at offset %zu: only 'ram' can be captured",
	    at);
	expect_msg(&s, want, "dirty-bitmap START after ram refused");
	buf_reset(&s.b);
	sy_header(&s, "pc-q35-7.2");
	at = s.b.len;
	sy_start(&s, "ram", 0, 5);
	snprintf(want, sizeof(want), "ram section version 5 at offset %zu is "
	    "not supported (need 4)", at);
	expect_msg(&s, want, "ram version 5");
	buf_reset(&s.b);
	sy_header(&s, "pc-q35-7.2");
	sy_start(&s, "ram", 1, 4);
	snprintf(want, sizeof(want), "ram START section at offset %zu has "
	    "instance 1, expected 0", at);
	expect_msg(&s, want, "ram instance 1");

	/* Commands. */
	at = 23;	/* right after "pc-q35-7.2" */
	for (c = 0; c <= 12; c++) {
		if (c == 11)
			continue;
		buf_reset(&s.b);
		sy_header(&s, "pc-q35-7.2");
		buf_addc(&s.b, 8);
		buf_add_be16(&s.b, (uint16_t)c);
		buf_add_be16(&s.b, 0);
		if (c == 0 || c == 12)
			snprintf(want, sizeof(want), "unknown migration "
			    "command %u at offset %zu", c, at);
		else
			snprintf(want, sizeof(want), "unsupported migration "
			    "command %u (%s) at offset %zu: %s", c, cmds[c], at,
			    c == 8 ? "COLO streams cannot be captured" :
			    "return path and postcopy streams cannot be "
			    "captured");
		expect_msg(&s, want, "command refused");
	}
	buf_reset(&s.b);
	sy_header(&s, "pc-q35-10.0");
	at = s.b.len;
	buf_addc(&s.b, 8);
	buf_add_be16(&s.b, 11);
	buf_add_be16(&s.b, 4);
	snprintf(want, sizeof(want), "migration command 11 (SWITCHOVER_START) "
	    "at offset %zu has length 4, expected 0", at);
	expect_msg(&s, want, "SWITCHOVER_START with a payload");

	/* RAM records. */
	{
		static const struct {
			unsigned flags;
			const char *msg;
		} fl[] = {
			{ 0x40, "unsupported ram record XBZRLE (flags 0x40) at "
			    "offset %zu: disable the xbzrle capability" },
			{ 0x60, "unsupported ram record XBZRLE (flags 0x60) at "
			    "offset %zu: disable the xbzrle capability" },
			{ 0x100, "unsupported ram record COMPRESS_PAGE (flags "
			    "0x100) at offset %zu: disable the compress "
			    "capability" },
			{ 0x200, "unsupported ram record MULTIFD_FLUSH (flags "
			    "0x200) at offset %zu: disable the multifd "
			    "capability" },
			{ 0x80, "unsupported ram record HOOK (flags 0x80) at "
			    "offset %zu: RDMA streams cannot be captured" },
			{ 0x1, "unknown combination of ram flags 0x1 at offset "
			    "%zu" },
			{ 0xa, "unknown combination of ram flags 0xa at offset "
			    "%zu" },
			{ 0x30, "unknown combination of ram flags 0x30 at "
			    "offset %zu" },
			{ 0x24, "unknown combination of ram flags 0x24 at "
			    "offset %zu" },
			{ 0x800, "unknown combination of ram flags 0x800 at "
			    "offset %zu" },
			{ 0x0, "unknown combination of ram flags 0x0 at offset "
			    "%zu" },
		};
		size_t i;

		for (i = 0; i < ARRAY_SIZE(fl); i++) {
			sy_prologue(&s);
			sy_section(&s, 2);
			at = s.b.len;
			buf_add_be64(&s.b, 0x5000 | fl[i].flags);
			sy_cstr(&s, "pc.ram");
			buf_add(&s.b, "\1\0\0", 3);
			snprintf(want, sizeof(want), fl[i].msg, at);
			expect_msg(&s, want, "ram flags refused");
		}
	}
	sy_prologue(&s);
	sy_section(&s, 2);
	at = s.b.len;
	sy_zero(&s, NULL, 0x1000, 0);
	snprintf(want, sizeof(want), "CONTINUE page record at offset %zu with "
	    "no previous block", at);
	expect_msg(&s, want, "CONTINUE with no previous block");
	sy_prologue(&s);
	sy_section(&s, 3);
	sy_zero(&s, "pc.ram", 0x1000, 0);
	at = s.b.len;
	sy_zero(&s, "vga.vram", 0x1000, 0);
	snprintf(want, sizeof(want), "unknown ram block 'vga.vram' in the page "
	    "record at offset %zu", at);
	expect_msg(&s, want, "unknown block name");
	sy_prologue(&s);
	sy_section(&s, 2);
	at = s.b.len;
	sy_page(&s, "pc.bios", 0x2000, 1);
	snprintf(want, sizeof(want), "page offset 0x2000 beyond ram block "
	    "'pc.bios' (used_length 0x2000) at offset %zu", at);
	expect_msg(&s, want, "offset beyond the block");
	sy_prologue(&s);
	sy_section(&s, 2);
	sy_page(&s, "pc.bios", 0x1000, 1);
	at = s.b.len;
	sy_zero(&s, NULL, 0xfffff000, 0);
	snprintf(want, sizeof(want), "page offset 0xfffff000 beyond ram block "
	    "'pc.bios' (used_length 0x2000) at offset %zu", at);
	expect_msg(&s, want, "CONTINUE offset beyond the block");

	/* MEM_SIZE. */
	buf_reset(&s.b);
	s.sid = 2;
	sy_header(&s, "pc-q35-7.2");
	sy_start(&s, "ram", 0, 4);
	pre = s.b.len;
	buf_add_be64(&s.b, 0x11000 | 4);
	sy_cstr(&s, "pc.ram");
	buf_add_be64(&s.b, 0x10000);
	at = s.b.len;
	sy_cstr(&s, "pc.bios");
	buf_add_be64(&s.b, 0x2000);
	snprintf(want, sizeof(want), "ram block lengths in the MEM_SIZE "
	    "record at offset %zu exceed its total (block 'pc.bios', 0x2000 "
	    "bytes, 0x1000 left)", at);
	expect_msg(&s, want, "MEM_SIZE lengths exceed the total");
	s.b.len = at;
	sy_cstr(&s, "pc.ram");
	buf_add_be64(&s.b, 0x1000);
	snprintf(want, sizeof(want), "ram block 'pc.ram' listed twice in the "
	    "MEM_SIZE record at offset %zu", at);
	expect_msg(&s, want, "MEM_SIZE block listed twice");
	s.b.len = at;
	sy_cstr(&s, "pc.bios");
	buf_add_be64(&s.b, 0x1800);
	snprintf(want, sizeof(want), "ram block 'pc.bios' in the MEM_SIZE "
	    "record at offset %zu has used_length 0x1800, not a non-zero "
	    "multiple of 4096", at);
	expect_msg(&s, want, "MEM_SIZE length not page aligned");
	s.b.len = pre;
	buf_add_be64(&s.b, 0x10);
	buf_addc(&s.b, 0x7e);
	buf_add_be32(&s.b, 2);
	snprintf(want, sizeof(want), "ram START section at offset %zu has no "
	    "MEM_SIZE block list", pre - 17);
	expect_msg(&s, want, "START without MEM_SIZE");
	s.b.len = pre;
	buf_add_be64(&s.b, 0x1000 | 4);
	sy_cstr(&s, "pc.ram");
	buf_add_be64(&s.b, 0x1000);
	at = s.b.len;
	buf_add_be64(&s.b, 0x1000 | 4);
	snprintf(want, sizeof(want), "second MEM_SIZE record at offset %zu",
	    at);
	expect_msg(&s, want, "second MEM_SIZE");
	sy_prologue(&s);
	sy_section(&s, 2);
	at = s.b.len;
	buf_add_be64(&s.b, 0x1000 | 4);
	snprintf(want, sizeof(want), "MEM_SIZE record at offset %zu outside "
	    "the ram START section", at);
	expect_msg(&s, want, "MEM_SIZE in a PART");
	buf_reset(&s.b);
	sy_header(&s, "pc-q35-7.2");
	sy_start(&s, "ram", 0, 4);
	at = s.b.len;
	sy_zero(&s, "pc.ram", 0, 0);
	snprintf(want, sizeof(want), "page record at offset %zu before the "
	    "MEM_SIZE block list", at);
	expect_msg(&s, want, "page before MEM_SIZE");

	/* Names with odd bytes: messages stay one line; NUL is refused. */
	sy_prologue(&s);
	sy_section(&s, 2);
	at = s.b.len;
	sy_zero(&s, "pc.ram\n\x01\\", 0, 0);
	snprintf(want, sizeof(want), "unknown ram block 'pc.ram\\x0a\\x01"
	    "\\x5c' in the page record at offset %zu", at);
	expect_msg(&s, want, "control bytes in a name are escaped");
	buf_reset(&s.b);
	sy_header(&s, "pc-q35-7.2");
	sy_start(&s, "ram", 0, 4);
	buf_add_be64(&s.b, 0x1000 | 4);
	at = s.b.len;
	buf_add(&s.b, "\x08pc.ram\0x", 9);
	buf_add_be64(&s.b, 0x1000);
	snprintf(want, sizeof(want), "ram block name 'pc.ram\\x00x' in the "
	    "MEM_SIZE record at offset %zu contains a NUL byte", at);
	expect_msg(&s, want, "NUL in a block name");
	buf_reset(&s.b);
	sy_header(&s, "pc-q35-7.2");
	s.b.data[15] = 0;
	expect_msg(&s, "machine type name in the configuration section at "
	    "offset 8 contains a NUL byte", "NUL in the machine type");

	/* Sections and footers. */
	sy_prologue(&s);
	at = s.b.len;
	s.sid = 3;
	sy_section(&s, 2);
	snprintf(want, sizeof(want), "PART section at offset %zu has id 3, "
	    "not the ram section's id 2", at);
	expect_msg(&s, want, "PART with another section id");
	buf_reset(&s.b);
	sy_header(&s, "pc-q35-7.2");
	at = s.b.len;
	sy_section(&s, 3);
	snprintf(want, sizeof(want), "END section (id 3) at offset %zu before "
	    "the ram START section", at);
	expect_msg(&s, want, "END before START");
	sy_prologue(&s);
	sy_section(&s, 3);
	sy_end_section(&s);
	at = s.b.len;
	sy_section(&s, 2);
	snprintf(want, sizeof(want), "ram PART section at offset %zu after the "
	    "ram END section", at);
	expect_msg(&s, want, "PART after END");
	sy_prologue(&s);
	sy_section(&s, 2);
	at = s.b.len;
	sy_zero(&s, "pc.ram", 0, 0);
	buf_add_be64(&s.b, 0x10);
	buf_addc(&s.b, 0x7e);
	buf_add_be32(&s.b, 9);
	snprintf(want, sizeof(want), "section footer at offset %zu has id 9, "
	    "expected 2", at + 24);
	expect_msg(&s, want, "footer with the wrong id");
	s.b.len -= 5;
	buf_addc(&s.b, 0x02);
	buf_add_be32(&s.b, 2);
	snprintf(want, sizeof(want), "missing section footer at offset %zu "
	    "after the ram PART section at offset %zu (found 0x02)", at + 24,
	    at - 5);
	expect_msg(&s, want, "footer missing");
	sy_prologue(&s);
	sy_section(&s, 2);
	at = s.b.len;
	buf_add_be64(&s.b, 0x1010);
	snprintf(want, sizeof(want), "EOS record at offset %zu with non-zero "
	    "address 0x1000", at);
	expect_msg(&s, want, "EOS with an address");

	/* Unknown top-level bytes. */
	{
		static const struct {
			uint8_t b;
			const char *msg;
		} top[] = {
			{ 0x05, "subsection byte 0x05 at offset %zu outside "
			    "the configuration section" },
			{ 0x06, "VMDESCRIPTION (0x06) at offset %zu before the "
			    "device-state tail" },
			{ 0x07, "second configuration section at offset %zu" },
			{ 0x7e, "section footer (0x7e) at offset %zu outside a "
			    "section" },
			{ 0x09, "unknown record type 0x09 at offset %zu" },
			{ 0xff, "unknown record type 0xff at offset %zu" },
		};
		size_t i;

		for (i = 0; i < ARRAY_SIZE(top); i++) {
			sy_prologue(&s);
			at = s.b.len;
			buf_addc(&s.b, top[i].b);
			snprintf(want, sizeof(want), top[i].msg, at);
			expect_msg(&s, want, "unknown top-level byte");
		}
	}
	buf_reset(&s.b);
	sy_header(&s, "pc-q35-7.2");
	at = s.b.len;
	buf_addc(&s.b, 0);
	snprintf(want, sizeof(want), "EOF (0x00) at offset %zu before the ram "
	    "START section: the stream carries no RAM", at);
	expect_msg(&s, want, "EOF before any RAM");

	/* Tail ends. */
	sy_prologue(&s);
	sy_tail(&s, 1);
	expect_msg(&s, "(accepted)", "tail with EOF and VMDESCRIPTION") ;
	pre = s.b.len;
	buf_addc(&s.b, 0);
	snprintf(want, sizeof(want), "stream truncated at offset %zu inside "
	    "the device-state tail (it does not end with EOF and an optional "
	    "VMDESCRIPTION)", pre + 1);
	expect_msg(&s, want, "a byte after the VMDESCRIPTION");
	s.b.len = pre;
	s.b.data[pre - strlen(SY_JSON) - 1] = 0x12;
	snprintf(want, sizeof(want), "stream truncated at offset %zu inside "
	    "the device-state tail (it does not end with EOF and an optional "
	    "VMDESCRIPTION)", pre);
	expect_msg(&s, want, "VMDESCRIPTION length off by a few");
	sy_prologue(&s);
	sy_tail(&s, 1);
	s.b.data[s.b.len - 1] = ']';
	expect_msg(&s, want, "VMDESCRIPTION not ending in '}'");
	sy_prologue(&s);
	sy_tail(&s, 0);
	buf_addc(&s.b, 0);
	snprintf(want, sizeof(want), "stream truncated at offset %zu inside "
	    "the device-state tail (it does not end with EOF and an optional "
	    "VMDESCRIPTION)", s.b.len);
	expect_msg(&s, want, "two EOF bytes");
	sy_prologue(&s);
	buf_addc(&s.b, 0);
	expect_msg(&s, "(accepted)", "EOF right after the ram sections (no "
	    "devices)");
	buf_addc(&s.b, 6);
	buf_add_be32(&s.b, 2);
	buf_add(&s.b, "{}", 2);
	expect_msg(&s, "(accepted)", "EOF and VMDESCRIPTION without devices");
	sy_prologue(&s);
	sy_tail(&s, 0);
	s.b.data[s.b.len - 5] = 0x01;	/* footer id 0x01000000 */
	snprintf(want, sizeof(want), "stream truncated at offset %zu inside "
	    "the device-state tail (it does not end with EOF and an optional "
	    "VMDESCRIPTION)", s.b.len);
	expect_msg(&s, want, "footer id before EOF above 2^24");
	buf_release(&s.b);
}

static void
test_tail_limit(void)
{
	struct synth s = { BUF_INIT, 2 };
	struct stream_parser *p;
	struct err e = ERR_INIT;
	uint8_t *junk;
	size_t pre;
	int rc;

	sy_prologue(&s);
	pre = s.b.len;
	sy_tail(&s, 0);
	p = stream_parser_new(NULL, NULL);
	rc = stream_parser_feed(p, s.b.data, s.b.len, &e);
	junk = xcalloc(1, 1 << 20);
	while (rc == 0 && stream_parser_stats(p)->bytes < pre +
	    STREAM_TAIL_MAX + (2 << 20))
		rc = stream_parser_feed(p, junk, 1 << 20, &e);
	check(rc < 0 && strstr(e.msg, "device-state tail larger than 67108864 "
	    "bytes at offset") != NULL, "a tail over STREAM_TAIL_MAX is "
	    "refused: %s", e.msg);
	free(junk);
	stream_parser_free(p);
	buf_release(&s.b);
}

static int
s_page_fail(void *o, uint32_t block, uint64_t offset, const uint8_t *data,
    struct err *e)
{
	return -1;	/* without a message */
}

static void
test_lifecycle(void)
{
	struct synth s = { BUF_INIT, 2 };
	struct stream_sink sink = rec_sink;
	struct stream_parser *p;
	struct err e = ERR_INIT, e2 = ERR_INIT;
	struct rec r;
	int rc;

	sy_redirty(&s);
	rec_init(&r);
	r.fail_page_at = 2;
	p = stream_parser_new(&rec_sink, &r);
	rc = stream_parser_feed(p, s.b.data, s.b.len, &e);
	check(rc < 0 && e.kind == ERR_NOSPC &&
	    strcmp(e.msg, "test sink: disk full") == 0,
	    "a sink error stops the parse with its kind and message");
	rc = stream_parser_feed(p, s.b.data, 1, &e2);
	check(rc < 0 && strcmp(e2.msg, e.msg) == 0 &&
	    stream_parser_finish(p, NULL) < 0, "after an error, feed and "
	    "finish fail again with the same message");
	stream_parser_free(p);
	rec_release(&r);

	sink.page = s_page_fail;
	p = stream_parser_new(&sink, &r);
	rec_init(&r);
	err_clear(&e);
	rc = stream_parser_feed(p, s.b.data, s.b.len, &e);
	check(rc < 0 && strstr(e.msg, "page callback failed at offset") !=
	    NULL, "a sink failing without a message gets one: %s", e.msg);
	stream_parser_free(p);
	rec_release(&r);

	p = stream_parser_new(NULL, NULL);
	err_clear(&e);
	rc = stream_parser_feed(p, s.b.data, s.b.len, &e);
	check(rc == 0 && stream_parser_finish(p, &e) == 0 &&
	    stream_parser_stats(p)->complete, "a NULL sink is fine");
	err_clear(&e);
	check(stream_parser_feed(p, s.b.data, 1, &e) < 0 &&
	    strstr(e.msg, "after its end") != NULL, "feed after finish "
	    "fails: %s", e.msg);
	stream_parser_free(p);
	stream_parser_free(NULL);

	p = stream_parser_new(NULL, NULL);
	err_clear(&e);
	check(stream_parser_feed(p, s.b.data, 0, &e) == 0 &&
	    stream_parser_finish(p, &e) < 0 &&
	    strcmp(e.msg, "empty migration stream") == 0,
	    "an empty stream fails at finish: %s", e.msg);
	stream_parser_free(p);
	buf_release(&s.b);
}

/* ---- throughput -------------------------------------------------------- */

static int
s_page_touch(void *o, uint32_t block, uint64_t offset, const uint8_t *data,
    struct err *e)
{
	*(uint64_t *)o += data != NULL ? data[offset % 4096] : 1;
	return 0;
}

static void
test_throughput(void)
{
	static const uint8_t config[] = {
		0x07, 0, 0, 0, 10, 'p', 'c', '-', 'q', '3', '5', '-', '7', '.',
		'2',
	};
	static const uint8_t tail[] = { 0x04, 1, 2, 3, 0x7e, 0, 0, 0, 9, 0 };
	struct stream_block b = { "pc.ram", 64ull << 20, 0, 0 };
	struct stream_sink sink = { 0 };
	struct membuf out = { BUF_INIT, -1 };
	struct stream_writer *w;
	struct stream_parser *p;
	struct err e = ERR_INIT;
	uint8_t page[PAGE];
	uint64_t pg, sum = 0, t0, ns;
	int rc = 0;

	memset(page, 0x5a, sizeof(page));
	w = stream_writer_new(mem_write, &out);
	rc |= stream_writer_begin(w, config, sizeof(config), &b, 1, 2, &e);
	for (pg = 0; pg < b.used_length / PAGE; pg++)
		rc |= stream_writer_page(w, 0, pg * PAGE, page, &e);
	rc |= stream_writer_finish(w, 0, tail, sizeof(tail), &e);
	stream_writer_free(w);
	sink.page = s_page_touch;
	p = stream_parser_new(&sink, &sum);
	t0 = now_mono_ns();
	for (size_t off = 0; rc == 0 && off < out.b.len; off += 1 << 20)
		rc = stream_parser_feed(p, out.b.data + off,
		    out.b.len - off < (1u << 20) ? out.b.len - off : 1 << 20,
		    &e);
	rc |= stream_parser_finish(p, &e);
	ns = now_mono_ns() - t0;
	stream_parser_free(p);
	check(rc == 0 && sum == 0x5aull * (b.used_length / PAGE),
	    "64 MiB of PAGE records parsed in 1 MiB chunks: %.0f MB/s under "
	    "the sanitizers (see streamtool bench for the real figure)",
	    out.b.len / (ns / 1e9) / 1e6);
	buf_release(&out.b);
}

int
main(void)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(fixtures); i++)
		test_fixture(&fixtures[i]);
	test_postcopy();
	test_redirty();
	test_refusals();
	test_tail_limit();
	test_lifecycle();
	test_throughput();
	return tap_done();
}
