/*
 * imghash.c - the hash of a chunk (imghash.h).  SHA-256 goes through
 * libcrypto's EVP interface with one fetched digest and one context per
 * hasher, so that hashing a chunk costs no lookup and no allocation.
 * Both are fed runs of consecutive pages, as long as the mask allows:
 * BLAKE3's SIMD code hashes up to 16 of its 1 KiB chunks at once, and page
 * by page it would hash 4.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "imghash.h"
#include "util.h"
#include "third_party/blake3/blake3.h"

struct img_hasher {
	enum img_hash_algo algo;
	EVP_MD *md;		/* SHA-256 */
	EVP_MD_CTX *ctx;
	blake3_hasher b3;
};

enum img_hash_algo
img_hash_algo_of(uint32_t flags)
{
	return (flags & IMG_F_BLAKE3) ? IMG_HASH_BLAKE3 : IMG_HASH_SHA256;
}

const char *
img_hash_name(enum img_hash_algo algo)
{
	return algo == IMG_HASH_BLAKE3 ? "blake3" : "sha256";
}

struct img_hasher *
img_hasher_new(enum img_hash_algo algo)
{
	struct img_hasher *h = calloc(1, sizeof(*h));

	if (h == NULL)
		return NULL;
	h->algo = algo;
	if (algo == IMG_HASH_BLAKE3)
		return h;
	h->md = EVP_MD_fetch(NULL, "SHA256", NULL);
	h->ctx = EVP_MD_CTX_new();
	if (h->md == NULL || h->ctx == NULL) {
		img_hasher_free(h);
		return NULL;
	}
	return h;
}

/* Start a chunk's hash: SHA-256 takes the mask first. */
static int
hash_begin(struct img_hasher *h, uint64_t datamask)
{
	uint8_t le[8];

	if (h->algo == IMG_HASH_BLAKE3) {
		blake3_hasher_init(&h->b3);
		return 0;
	}
	put_le64(le, datamask);
	return EVP_DigestInit_ex(h->ctx, h->md, NULL) == 1 &&
	    EVP_DigestUpdate(h->ctx, le, sizeof(le)) == 1 ? 0 : -1;
}

static int
hash_update(struct img_hasher *h, const void *p, size_t len)
{
	if (h->algo == IMG_HASH_BLAKE3) {
		blake3_hasher_update(&h->b3, p, len);
		return 0;
	}
	return EVP_DigestUpdate(h->ctx, p, len) == 1 ? 0 : -1;
}

/* Finish it: BLAKE3 takes the mask last.  On failure out is zeroed. */
static int
hash_end(struct img_hasher *h, uint64_t datamask, int ok,
    uint8_t out[IMG_HASH_SIZE])
{
	uint8_t le[8];
	unsigned int n = 0;

	if (ok && h->algo == IMG_HASH_BLAKE3) {
		put_le64(le, datamask);
		blake3_hasher_update(&h->b3, le, sizeof(le));
		blake3_hasher_finalize(&h->b3, out, IMG_HASH_SIZE);
		return 0;
	}
	if (ok && EVP_DigestFinal_ex(h->ctx, out, &n) == 1 &&
	    n == IMG_HASH_SIZE)
		return 0;
	memset(out, 0, IMG_HASH_SIZE);
	return -1;
}

int
img_hash_chunk(struct img_hasher *h, uint64_t datamask, const void *content,
    size_t len, uint8_t out[IMG_HASH_SIZE])
{
	int ok = hash_begin(h, datamask) == 0 &&
	    (len == 0 || hash_update(h, content, len) == 0);

	return hash_end(h, datamask, ok, out);
}

int
img_hash_pages(struct img_hasher *h, uint64_t datamask, const uint8_t *chunk,
    uint8_t out[IMG_HASH_SIZE])
{
	uint64_t m = datamask, rest;
	unsigned int first, run;
	int ok = hash_begin(h, datamask) == 0;

	/* Runs of consecutive pages, each in one update. */
	while (ok && m != 0) {
		first = (unsigned int)__builtin_ctzll(m);
		rest = ~(m >> first);	/* 0 bits: the run from first */
		run = rest == 0 ? 64 : (unsigned int)__builtin_ctzll(rest);
		ok = hash_update(h, chunk + (size_t)first * IMG_PAGE_SIZE,
		    (size_t)run * IMG_PAGE_SIZE) == 0;
		m = first + run >= 64 ? 0 : m & (~0ull << (first + run));
	}
	return hash_end(h, datamask, ok, out);
}

void
img_hasher_free(struct img_hasher *h)
{
	if (h == NULL)
		return;
	EVP_MD_CTX_free(h->ctx);
	EVP_MD_free(h->md);
	free(h);
}
