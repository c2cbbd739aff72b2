/*
 * tests/unit/spool.c - the spool between the migration socket and the
 * parser: order kept through memory and the overflow file, the memory
 * bound kept (producer waits) with overflow forbidden, the file used and
 * given back with it allowed, abort, and a file that cannot be made; the
 * same through the zero-copy claim and peek sides.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spool.h"
#include "util.h"
#include "tap.h"


/* The byte at stream position i. */
static uint8_t
pattern(uint64_t i)
{
	return (uint8_t)((i * 2654435761u) >> 13);
}

struct producer {
	struct spool *s;
	uint64_t total;
	int allow_after;	/* allow overflow after this many puts, -1 never */
	int rc;
	struct err err;
	int claims;		/* produce_claims: claims made (atomic) */
};

static void *
produce(void *arg)
{
	struct producer *p = arg;
	uint8_t buf[70000];
	uint64_t pos = 0, seed = 7;
	size_t len, i;
	int puts = 0;

	while (pos < p->total) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		len = 1 + (size_t)((seed >> 33) % sizeof(buf));
		if (len > p->total - pos)
			len = (size_t)(p->total - pos);
		for (i = 0; i < len; i++)
			buf[i] = pattern(pos + i);
		if (puts++ == p->allow_after)
			spool_overflow(p->s, 1);
		if (spool_put(p->s, buf, len, &p->err) < 0) {
			p->rc = -1;
			break;
		}
		pos += len;
	}
	spool_end(p->s);
	return NULL;
}

/*
 * The zero-copy sides, as the reader and the parser use them: claims
 * filled in part (a read() returns what the socket has), some given back
 * empty; peeks released in part.
 */
static void *
produce_claims(void *arg)
{
	struct producer *p = arg;
	uint64_t pos = 0, seed = 11;
	uint8_t *dst;
	size_t cap, len, i;
	int claims = 0;

	while (pos < p->total) {
		if (claims++ == p->allow_after)
			spool_overflow(p->s, 1);
		if ((dst = spool_claim(p->s, &cap, &p->err)) == NULL) {
			p->rc = -1;
			break;
		}
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		len = (seed >> 33) % 5 == 0 ? 0 : 1 + (size_t)((seed >> 35) % cap);
		if (len > p->total - pos)
			len = (size_t)(p->total - pos);
		for (i = 0; i < len; i++)
			dst[i] = pattern(pos + i);
		if (spool_commit(p->s, len, &p->err) < 0) {
			p->rc = -1;
			break;
		}
		pos += len;
		__atomic_store_n(&p->claims, claims, __ATOMIC_RELEASE);
	}
	__atomic_store_n(&p->claims, 1 << 30, __ATOMIC_RELEASE);
	spool_end(p->s);
	return NULL;
}

static int
run_peeks(struct spool *s, uint64_t total, int allow_after, uint64_t *got_out)
{
	struct producer p = { s, total, allow_after, 0, ERR_INIT, 0 };
	const uint8_t *q;
	pthread_t t;
	uint64_t got = 0, seed = 5;
	ssize_t n, i, take;
	int ordered = 1, reads = 0;
	struct err e = ERR_INIT;

	pthread_create(&t, NULL, produce_claims, &p);
	/* With overflow: let the producer run ahead first, so that memory
	 * fills and the file must take the rest (it never waits then). */
	if (allow_after >= 0)
		while (__atomic_load_n(&p.claims, __ATOMIC_ACQUIRE) <
		    allow_after + 16)
			usleep(1000);
	while ((n = spool_peek(s, &q, &e)) > 0) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		take = seed % 3 == 0 ? 1 + (ssize_t)((seed >> 20) % (uint64_t)n) : n;
		for (i = 0; i < take; i++)
			if (q[i] != pattern(got + (uint64_t)i))
				ordered = 0;
		got += (uint64_t)take;
		spool_release(s, (size_t)take);
		if (++reads % 16 == 0)
			usleep(500);
	}
	pthread_join(t, NULL);
	*got_out = got;
	return ordered && n == 0 && p.rc == 0;
}

/* Run a producer against a slow consumer; 1 if every byte came in order. */
static int
run(struct spool *s, uint64_t total, int allow_after, int slow,
    uint64_t *got_out)
{
	struct producer p = { s, total, allow_after, 0, ERR_INIT, 0 };
	pthread_t t;
	uint8_t buf[50000];
	uint64_t got = 0;
	ssize_t n, i;
	int ordered = 1, reads = 0;
	struct err e = ERR_INIT;

	pthread_create(&t, NULL, produce, &p);
	while ((n = spool_get(s, buf, sizeof(buf), &e)) > 0) {
		for (i = 0; i < n; i++)
			if (buf[i] != pattern(got + (uint64_t)i))
				ordered = 0;
		got += (uint64_t)n;
		if (slow && ++reads % 8 == 0)
			usleep(1000);
	}
	pthread_join(t, NULL);
	*got_out = got;
	return ordered && n == 0 && p.rc == 0;
}

int
main(void)
{
	char dir[] = "/tmp/unit-spool.XXXXXX";
	struct spool *s;
	uint64_t got;
	struct err e = ERR_INIT;

	if (mkdtemp(dir) == NULL) {
		printf("not ok 1 - cannot create a temporary directory\n");
		return 1;
	}

	s = spool_new(dir, 256 << 10, 64 << 20);
	check(run(s, 20 << 20, -1, 1, &got) && got == 20u << 20,
	    "overflow forbidden: 20 MiB through a 256 KiB spool, in order");
	check(spool_file_peak(s) == 0, "... and no file was used");
	spool_free(s);

	s = spool_new(dir, 256 << 10, 64 << 20);
	check(run(s, 20 << 20, 40, 1, &got) && got == 20u << 20,
	    "overflow allowed midway: 20 MiB in order through memory and file");
	check(spool_file_peak(s) > 256 << 10,
	    "... and the file took what memory could not (peak %llu)",
	    (unsigned long long)spool_file_peak(s));
	spool_free(s);

	s = spool_new(dir, 64 << 10, 1 << 20);
	check(run(s, 30 << 20, 0, 1, &got) && got == 30u << 20,
	    "a 1 MiB file bound: 30 MiB still in order (the producer waits)");
	check(spool_file_peak(s) <= 1 << 20, "... the file never held more "
	    "than 1 MiB (peak %llu)", (unsigned long long)spool_file_peak(s));
	spool_free(s);

	s = spool_new(dir, 3 << 20, 64 << 20);
	check(run_peeks(s, 40 << 20, -1, &got) && got == 40u << 20,
	    "claims filled in part, peeks released in part: 40 MiB in order");
	check(spool_file_peak(s) == 0, "... and no file was used");
	spool_free(s);

	s = spool_new(dir, 2 << 20, 64 << 20);
	check(run_peeks(s, 40 << 20, 0, &got) && got == 40u << 20,
	    "the same with overflow allowed, the consumer late: 40 MiB in "
	    "order through memory and file");
	check(spool_file_peak(s) > 0, "... the file took some (peak %llu)",
	    (unsigned long long)spool_file_peak(s));
	spool_free(s);

	s = spool_new(dir, 1 << 20, 1 << 20);
	spool_put(s, "abc", 3, &e);
	check(spool_pending(s) == 3, "pending counts what was put (%llu)",
	    (unsigned long long)spool_pending(s));
	spool_abort(s);
	check(spool_put(s, "d", 1, &e) < 0, "put after abort fails");
	{
		uint8_t b[4];

		check(spool_get(s, b, sizeof(b), &e) == 0,
		    "get after abort ends");
	}
	spool_free(s);

	s = spool_new("/nonexistent/dir", 16, 1 << 20);
	spool_overflow(s, 1);
	err_clear(&e);
	spool_put(s, "0123456789abcdef", 16, &e);
	check(spool_put(s, "x", 1, &e) < 0 && strstr(e.msg, "spool") != NULL,
	    "no directory for the file: put fails saying why (%s)", e.msg);
	spool_free(s);

	check(rmdir(dir) == 0, "the unlinked file left nothing behind");
	printf("1..%d\n", tap_n);
	return tap_failed ? 1 : 0;
}
