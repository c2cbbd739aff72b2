/*
 * imghash.c - the hash of a chunk (imghash.h).  SHA-256 goes through
 * libcrypto's EVP interface with one fetched digest and one context per
 * hasher, so that hashing a chunk costs no lookup and no allocation.
 * BLAKE3 is fed runs of consecutive pages, as long as the mask allows:
 * its SIMD code hashes up to 16 of its 1 KiB chunks at once, and page by
 * page it would hash 4.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "imghash.h"
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

static void
le64_put(uint8_t le[8], uint64_t v)
{
	int i;

	for (i = 0; i < 8; i++)
		le[i] = (uint8_t)(v >> (8 * i));
}

static int
sha_begin(struct img_hasher *h, uint64_t datamask)
{
	uint8_t le[8];

	le64_put(le, datamask);
	return EVP_DigestInit_ex(h->ctx, h->md, NULL) == 1 &&
	    EVP_DigestUpdate(h->ctx, le, sizeof(le)) == 1 ? 0 : -1;
}

static int
sha_end(struct img_hasher *h, uint8_t out[IMG_HASH_SIZE])
{
	unsigned int n = 0;

	return EVP_DigestFinal_ex(h->ctx, out, &n) == 1 &&
	    n == IMG_HASH_SIZE ? 0 : -1;
}

static void
b3_end(struct img_hasher *h, uint64_t datamask, uint8_t out[IMG_HASH_SIZE])
{
	uint8_t le[8];

	le64_put(le, datamask);
	blake3_hasher_update(&h->b3, le, sizeof(le));
	blake3_hasher_finalize(&h->b3, out, IMG_HASH_SIZE);
}

int
img_hash_chunk(struct img_hasher *h, uint64_t datamask, const void *content,
    size_t len, uint8_t out[IMG_HASH_SIZE])
{
	if (h->algo == IMG_HASH_BLAKE3) {
		blake3_hasher_init(&h->b3);
		if (len > 0)
			blake3_hasher_update(&h->b3, content, len);
		b3_end(h, datamask, out);
		return 0;
	}
	if (sha_begin(h, datamask) < 0 ||
	    (len > 0 && EVP_DigestUpdate(h->ctx, content, len) != 1) ||
	    sha_end(h, out) < 0) {
		memset(out, 0, IMG_HASH_SIZE);
		return -1;
	}
	return 0;
}

int
img_hash_pages(struct img_hasher *h, uint64_t datamask, const uint8_t *chunk,
    uint8_t out[IMG_HASH_SIZE])
{
	uint64_t m = datamask, rest;
	unsigned int first, run;
	int ok;

	if (h->algo == IMG_HASH_BLAKE3) {
		blake3_hasher_init(&h->b3);
		while (m != 0) {
			first = (unsigned int)__builtin_ctzll(m);
			rest = ~(m >> first);	/* 0 bits: the run from first */
			run = rest == 0 ? 64 : (unsigned int)__builtin_ctzll(rest);
			blake3_hasher_update(&h->b3, chunk + (size_t)first *
			    IMG_PAGE_SIZE, (size_t)run * IMG_PAGE_SIZE);
			m = first + run >= 64 ? 0 : m & (~0ull << (first + run));
		}
		b3_end(h, datamask, out);
		return 0;
	}
	ok = sha_begin(h, datamask) == 0;
	for (; ok && m != 0; m &= m - 1)
		ok = EVP_DigestUpdate(h->ctx, chunk + (size_t)__builtin_ctzll(m) *
		    IMG_PAGE_SIZE, IMG_PAGE_SIZE) == 1;
	if (!ok || sha_end(h, out) < 0) {
		memset(out, 0, IMG_HASH_SIZE);
		return -1;
	}
	return 0;
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
