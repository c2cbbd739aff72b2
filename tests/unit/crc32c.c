/*
 * tests/unit/crc32c.c - CRC-32C: the check value, and the fast path
 * (SSE4.2, interleaved streams) equal to the byte table and to a bit-at-a-
 * time reference on buffers of every alignment and of lengths around the
 * stream sizes, and when chained.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "tap.h"

static uint64_t
rnd(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

/* The definition, one bit at a time. */
static uint32_t
crc_bits(uint32_t crc, const uint8_t *p, size_t len)
{
	int k;

	crc = ~crc;
	while (len--) {
		crc ^= *p++;
		for (k = 0; k < 8; k++)
			crc = crc & 1 ? (crc >> 1) ^ 0x82f63b78u : crc >> 1;
	}
	return ~crc;
}

int
main(void)
{
	static const size_t lens[] = {
		0, 1, 7, 8, 9, 15, 255, 256, 257, 767, 768, 769, 1000, 4096,
		8191, 8192, 24575, 24576, 24577, 24576 + 768, 49152 + 100,
		65536, 100003, 262144 + 13,
	};
	const size_t max = 262144 + 64;
	uint8_t *buf = xmalloc(max);
	uint64_t s = 42, t0, ns_fast, ns_table;
	uint32_t a, b, c, whole, part;
	size_t i, al, len, cut;
	int bad = 0, bad_bits = 0, bad_chain = 0;

	for (i = 0; i < max; i++)
		buf[i] = (uint8_t)rnd(&s);

	check(crc32c(0, "123456789", 9) == 0xe3069283u &&
	    crc32c_table(0, "123456789", 9) == 0xe3069283u &&
	    crc_bits(0, (const uint8_t *)"123456789", 9) == 0xe3069283u,
	    "check value of '123456789' is 0xE3069283 (fast, table, bits)");

	for (i = 0; i < ARRAY_SIZE(lens); i++) {
		for (al = 0; al < 16; al++) {
			len = lens[i];
			a = crc32c(0, buf + al, len);
			b = crc32c_table(0, buf + al, len);
			if (a != b) {
				if (!bad)
					note("length %zu at +%zu: 0x%08x vs "
					    "0x%08x", len, al, a, b);
				bad = 1;
			}
			if (al % 5 == 0 && len < 70000 &&
			    crc_bits(0, buf + al, len) != b)
				bad_bits = 1;
		}
	}
	/* Random odd lengths, alignments and starting values. */
	for (i = 0; i < 400; i++) {
		al = rnd(&s) % 64;
		len = (size_t)(rnd(&s) % (max - 64)) | 1;
		if (i % 2)
			len %= 3000;
		c = (uint32_t)rnd(&s);
		if (crc32c(c, buf + al, len) != crc32c_table(c, buf + al, len))
			bad = 1;
	}
	check(!bad, "the fast path equals the byte table at 16 alignments and "
	    "%zu fixed plus 400 random lengths", ARRAY_SIZE(lens));
	check(!bad_bits, "the byte table equals the bit-at-a-time definition");

	for (i = 0; i < 200; i++) {
		len = (size_t)(rnd(&s) % 100000);
		cut = len ? (size_t)(rnd(&s) % len) : 0;
		al = rnd(&s) % 8;
		whole = crc32c(0, buf + al, len);
		part = crc32c(crc32c(0, buf + al, cut), buf + al + cut,
		    len - cut);
		if (whole != part || whole != crc32c_table(crc32c_table(0,
		    buf + al, cut), buf + al + cut, len - cut))
			bad_chain = 1;
	}
	check(!bad_chain, "a CRC continued over a second buffer equals the "
	    "CRC of both");

	t0 = now_mono_ns();
	a = 0;
	for (i = 0; i < 64; i++)
		a = crc32c(a, buf, 262144);
	ns_fast = now_mono_ns() - t0;
	t0 = now_mono_ns();
	b = 0;
	for (i = 0; i < 8; i++)
		b = crc32c_table(b, buf, 262144);
	ns_table = (now_mono_ns() - t0) * 8;
	note("crc32c %.0f MB/s, table %.0f MB/s (this build)",
	    64 * 262144 / (ns_fast ? (double)ns_fast : 1) * 1e3,
	    64 * 262144 / (ns_table ? (double)ns_table : 1) * 1e3);
	free(buf);
	return tap_done();
}
