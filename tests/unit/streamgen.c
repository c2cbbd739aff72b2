/*
 * Unit tests of streamgen.c: the writer byte for byte against what QEMU
 * sends, its PART sections and its postcopy variant checked by parsing
 * the result again, and the return-path parser.
 */
#include <string.h>

#include "stream.h"
#include "streamgen.h"
#include "util.h"
#include "tap.h"
#include "streamtest.h"

/* ---- the writer -------------------------------------------------------- */

/* The return path, as QEMU 7.2 and 10.0 send it to a lazy restore. */
static void
test_return_path(void)
{
	static const uint8_t req_id[] = { 0, 0, 0, 0, 0, 0x0c, 0, 0,
		0, 0, 0x10, 0, 6, 'p', 'c', '.', 'r', 'a', 'm' };
	static const uint8_t shut[] = { 0, 0, 0, 1 };
	struct stream_rp_msg m;
	struct err e = ERR_INIT;

	check(stream_rp_parse(STREAM_RP_REQ_PAGES_ID, req_id, sizeof(req_id),
	    &m, &e) == 0 && m.start == 0xc0000 && m.len == 4096 &&
	    strcmp(m.block, "pc.ram") == 0,
	    "REQ_PAGES_ID: offset, length and block");
	check(stream_rp_parse(STREAM_RP_REQ_PAGES, req_id, 12, &m, &e) == 0 &&
	    m.start == 0xc0000 && m.len == 4096 && m.block[0] == 0,
	    "REQ_PAGES: offset and length, no block");
	check(stream_rp_parse(STREAM_RP_SHUT, shut, 4, &m, &e) == 0 &&
	    m.value == 1, "SHUT carries its error value");
	check(stream_rp_parse(99, shut, 2, &m, &e) == 0 && m.type == 99,
	    "an unknown type parses to its type alone");
	err_clear(&e);
	check(stream_rp_parse(STREAM_RP_REQ_PAGES_ID, req_id, sizeof(req_id) -
	    1, &m, &e) < 0 && strcmp(e.msg, "malformed return-path message "
	    "3 (18 bytes)") == 0, "a block name cut short is refused: %s",
	    e.msg);
	err_clear(&e);
	check(stream_rp_parse(STREAM_RP_REQ_PAGES, req_id, 13, &m, &e) < 0 &&
	    stream_rp_parse(STREAM_RP_SHUT, shut, 3, &m, &e) < 0,
	    "wrong lengths are refused: %s", e.msg);
}

/* The postcopy writer (restore --lazy) and stream_tail_devices(). */
static void
test_writer_postcopy(void)
{
	static const uint8_t config[] = {
		0x07, 0, 0, 0, 10, 'p', 'c', '-', 'q', '3', '5', '-', '7', '.',
		'2',
	};
	/* One FULL section's worth, EOF, and a VMDESCRIPTION. */
	static const uint8_t tail[] = { 0x04, 1, 2, 3, 0x7e, 0, 0, 0, 9, 0,
		0x06, 0, 0, 0, 2, '{', '}' };
	struct stream_block b[1] = { { "pc.ram", 0x2000, 0, 0 } };
	struct membuf out = { BUF_INIT, -1 };
	struct synth s = { BUF_INIT, 7 };
	struct stream_writer *w;
	struct err e = ERR_INIT;
	uint8_t page[PAGE];
	size_t dev = 0;
	int rc;

	rc = stream_tail_devices(tail, sizeof(tail), &dev, &e);
	check(rc == 0 && dev == 9, "the device sections of a tail end before "
	    "its EOF and VMDESCRIPTION (%zu bytes)", dev);
	check(stream_tail_devices(tail, 10, &dev, &e) == 0 && dev == 9,
	    "... and of a tail without VMDESCRIPTION");
	err_clear(&e);
	check(stream_tail_devices(tail, 8, &dev, &e) < 0 &&
	    strstr(e.msg, "does not end with EOF") != NULL,
	    "a tail cut short is refused: %s", e.msg);

	memset(page, 0xcd, sizeof(page));
	w = stream_writer_new(mem_write, &out);
	stream_writer_set_postcopy(w);
	rc = stream_writer_begin(w, config, sizeof(config), b, 1, 7, &e);
	rc |= stream_writer_package(w, tail, dev, &e);
	check(rc == 0 && out.b.len > 0, "the package is flushed at once");
	rc |= stream_writer_page(w, 0, 0x1000, page, &e);
	rc |= stream_writer_page(w, 0, 0, NULL, &e);
	rc |= stream_writer_finish_postcopy(w, &e);

	/* What QEMU's postcopy source sends, minus its PINGs. */
	buf_add(&s.b, "QEVM\0\0\0\3", 8);
	buf_add(&s.b, config, sizeof(config));
	buf_add(&s.b, "\x08\x00\x01\x00\x00", 5);	/* OPEN_RETURN_PATH */
	buf_add(&s.b, "\x08\x00\x03\x00\x10", 5);	/* POSTCOPY_ADVISE */
	buf_add_be64(&s.b, 4096);
	buf_add_be64(&s.b, 4096);
	sy_start(&s, "ram", 0, 4);
	buf_add_be64(&s.b, 0x2000 | 4);
	sy_cstr(&s, "pc.ram");
	buf_add_be64(&s.b, 0x2000);
	sy_end_section(&s);
	buf_add(&s.b, "\x08\x00\x06\x00\x19", 5);	/* RAM_DISCARD */
	buf_addc(&s.b, 0);
	sy_cstr(&s, "pc.ram");
	buf_addc(&s.b, 0);
	buf_add_be64(&s.b, 0);
	buf_add_be64(&s.b, 4096);
	buf_add(&s.b, "\x08\x00\x07\x00\x04", 5);	/* PACKAGED */
	buf_add_be32(&s.b, 5 + 9 + 5);
	buf_add(&s.b, "\x08\x00\x04\x00\x00", 5);	/* LISTEN */
	buf_add(&s.b, tail, 9);
	buf_add(&s.b, "\x08\x00\x05\x00\x00", 5);	/* RUN */
	sy_section(&s, 2);
	buf_add_be64(&s.b, 0x1000 | 8);
	sy_cstr(&s, "pc.ram");
	buf_add(&s.b, page, PAGE);
	buf_add_be64(&s.b, 0 | 2 | 0x20);
	buf_addc(&s.b, 0);
	sy_end_section(&s);
	sy_section(&s, 3);
	sy_end_section(&s);
	buf_addc(&s.b, 0);				/* EOF */
	check(rc == 0 && out.b.len == s.b.len &&
	    memcmp(out.b.data, s.b.data, s.b.len) == 0,
	    "postcopy writer output is QEMU's shape byte for byte (%zu "
	    "bytes): return path, ADVISE, START, one DISCARD, PACKAGED "
	    "(LISTEN, devices, RUN), PART, END, EOF", s.b.len);
	stream_writer_free(w);
	buf_release(&out.b);
	buf_release(&s.b);

	w = stream_writer_new(mem_write, &out);
	rc = stream_writer_begin(w, config, sizeof(config), b, 1, 7, &e);
	err_clear(&e);
	check(rc == 0 && stream_writer_package(w, tail, dev, &e) < 0 &&
	    strstr(e.msg, "not in postcopy mode") != NULL,
	    "a package without postcopy mode is refused: %s", e.msg);
	err_clear(&e);
	check(stream_writer_finish_postcopy(w, &e) < 0,
	    "a postcopy end without a package is refused: %s", e.msg);
	stream_writer_free(w);
	buf_release(&out.b);
}

static void
test_writer_bytes(void)
{
	static const uint8_t config[] = {
		0x07, 0, 0, 0, 10, 'p', 'c', '-', 'q', '3', '5', '-', '7', '.',
		'2',
	};
	static const uint8_t tail[] = { 0x04, 1, 2, 3, 0x7e, 0, 0, 0, 9, 0 };
	struct stream_block b[2] = {
		{ "pc.ram", 0x4000, 1, 0 },
		{ "pc.bios", 0x1000, 1, 0xfffc0000 },
	};
	struct membuf out = { BUF_INIT, -1 };
	struct synth s = { BUF_INIT, 7 };
	struct stream_writer *w;
	struct err e = ERR_INIT;
	uint8_t page[PAGE];
	int rc;

	memset(page, 0xab, sizeof(page));
	w = stream_writer_new(mem_write, &out);
	rc = stream_writer_begin(w, config, sizeof(config), b, 2, 7, &e);
	rc |= stream_writer_page(w, 0, 0x1000, page, &e);
	rc |= stream_writer_page(w, 0, 0x3000, NULL, &e);
	rc |= stream_writer_page(w, 1, 0, page, &e);
	rc |= stream_writer_page(w, 0, 0, NULL, &e);
	check(rc == 0 && out.b.len == 0, "writer buffers its output");
	rc |= stream_writer_finish(w, 1, tail, sizeof(tail), &e);

	/* What QEMU would have sent. */
	buf_add(&s.b, "QEVM\0\0\0\3", 8);
	buf_add(&s.b, config, sizeof(config));
	sy_start(&s, "ram", 0, 4);
	buf_add_be64(&s.b, 0x5000 | 4);
	sy_cstr(&s, "pc.ram");
	buf_add_be64(&s.b, 0x4000);
	buf_add_be64(&s.b, 0);
	sy_cstr(&s, "pc.bios");
	buf_add_be64(&s.b, 0x1000);
	buf_add_be64(&s.b, 0xfffc0000);
	sy_end_section(&s);
	sy_section(&s, 2);
	buf_add_be64(&s.b, 0x1000 | 8);
	sy_cstr(&s, "pc.ram");
	buf_add(&s.b, page, PAGE);
	buf_add_be64(&s.b, 0x3000 | 2 | 0x20);
	buf_addc(&s.b, 0);
	buf_add_be64(&s.b, 0 | 8);
	sy_cstr(&s, "pc.bios");
	buf_add(&s.b, page, PAGE);
	buf_add_be64(&s.b, 0 | 2);
	sy_cstr(&s, "pc.ram");
	buf_addc(&s.b, 0);
	sy_end_section(&s);
	buf_add(&s.b, "\x08\x00\x0b\x00\x00", 5);
	sy_section(&s, 3);
	sy_end_section(&s);
	buf_add(&s.b, tail, sizeof(tail));
	check(rc == 0 && out.b.len == s.b.len &&
	    memcmp(out.b.data, s.b.data, s.b.len) == 0 &&
	    stream_writer_bytes(w) == s.b.len,
	    "writer output is QEMU's shape byte for byte (%zu bytes): header, "
	    "config, START+MEM_SIZE with mr_addr, PART with CONTINUE, "
	    "COMMAND 11, END, tail", s.b.len);
	err_clear(&e);
	check(stream_writer_page(w, 0, 0, NULL, &e) < 0 &&
	    stream_writer_finish(w, 0, tail, sizeof(tail), &e) < 0,
	    "writer refuses pages after finish: %s", e.msg);
	stream_writer_free(w);
	buf_release(&out.b);
	buf_release(&s.b);

	/* Misuse. */
	w = stream_writer_new(mem_write, &out);
	err_clear(&e);
	check(stream_writer_page(w, 0, 0, NULL, &e) < 0,
	    "page before begin refused: %s", e.msg);
	err_clear(&e);
	b[1].has_mr_addr = 0;
	check(stream_writer_begin(w, config, sizeof(config), b, 2, 7, &e) < 0,
	    "blocks with and without mr_addr refused: %s", e.msg);
	b[0].has_mr_addr = 0;
	err_clear(&e);
	check(stream_writer_begin(w, tail, sizeof(tail), b, 2, 7, &e) < 0,
	    "a configuration not starting with 0x07 refused: %s", e.msg);
	b[1].used_length = 0x1800;
	err_clear(&e);
	check(stream_writer_begin(w, config, sizeof(config), b, 2, 7, &e) < 0,
	    "a block length not a page multiple refused: %s", e.msg);
	b[1].used_length = 0x1000;
	memcpy(b[1].name, "pc.ram", 7);
	err_clear(&e);
	check(stream_writer_begin(w, config, sizeof(config), b, 2, 7, &e) < 0,
	    "a block listed twice refused: %s", e.msg);
	memcpy(b[1].name, "pc.bios", 8);
	err_clear(&e);
	rc = stream_writer_begin(w, config, sizeof(config), b, 2, 7, &e);
	check(rc == 0 && stream_writer_begin(w, config, sizeof(config), b, 2,
	    7, &e) < 0,
	    "begin twice refused: %s", e.msg);
	err_clear(&e);
	check(stream_writer_page(w, 2, 0, NULL, &e) < 0, "block index out of "
	    "range refused: %s", e.msg);
	err_clear(&e);
	check(stream_writer_page(w, 0, 0x800, NULL, &e) < 0 &&
	    stream_writer_page(w, 1, 0x1000, NULL, &e) < 0, "unaligned or "
	    "out-of-block offset refused: %s", e.msg);
	stream_writer_free(w);
	stream_writer_free(NULL);
	buf_release(&out.b);

	/* A failing write: reported, and the writer stays dead. */
	out.fail_after = 0;
	w = stream_writer_new(mem_write, &out);
	err_clear(&e);
	rc = stream_writer_begin(w, config, sizeof(config), b, 2, 7, &e);
	rc |= stream_writer_finish(w, 0, tail, sizeof(tail), &e);
	check(rc != 0 && e.kind == ERR_NOSPC && strcmp(e.msg,
	    "test write: no space") == 0, "a write error is passed on: %s",
	    e.msg);
	err_clear(&e);
	check(stream_writer_finish(w, 0, tail, sizeof(tail), &e) < 0 &&
	    strstr(e.msg, "failed earlier") != NULL, "and the writer stays "
	    "dead: %s", e.msg);
	stream_writer_free(w);
	buf_release(&out.b);
}

static void
test_writer_parts(void)
{
	static const uint8_t config[] = {
		0x07, 0, 0, 0, 11, 'p', 'c', '-', 'q', '3', '5', '-', '1', '0',
		'.', '0',
	};
	static const uint8_t tail[] = { 0x04, 1, 2, 3, 0x7e, 0, 0, 0, 9, 0 };
	struct stream_block b = { "pc.ram", 100000ull * PAGE, 0, 0 };
	struct membuf out = { BUF_INIT, -1 };
	struct stream_writer *w;
	struct stream_stats st;
	struct err e = ERR_INIT;
	struct rec r;
	uint64_t pg, h = FNV0;
	uint8_t page[PAGE];
	int rc = 0;

	w = stream_writer_new(mem_write, &out);
	rc |= stream_writer_begin(w, config, sizeof(config), &b, 1, 3, &e);
	for (pg = 0; pg < 70000 && rc == 0; pg++) {
		memset(page, (int)pg, PAGE);
		rc |= stream_writer_page(w, 0, (pg * 7919 % 100000) * PAGE,
		    pg % 3 ? page : NULL, &e);
		h = hash_page(h, 0, (pg * 7919 % 100000) * PAGE,
		    pg % 3 ? page : NULL);
	}
	rc |= stream_writer_finish(w, 0, tail, sizeof(tail), &e);
	stream_writer_free(w);
	rec_init(&r);
	if (rc == 0)
		rc = parse(out.b.data, out.b.len, -300000, &r, &st, &e);
	check(rc == 0 && r.hash == h && st.sections == 1 + 3 + 1 &&
	    r.sections[2] == 3 && st.saw_end && !st.saw_switchover,
	    "70,000 pages in any order: 3 PART sections of at most 32768 "
	    "records, same page sequence after parsing (%s)", e.msg);
	rec_release(&r);
	buf_release(&out.b);
}

int
main(void)
{
	test_writer_bytes();
	test_writer_postcopy();
	test_return_path();
	test_writer_parts();
	return tap_done();
}
