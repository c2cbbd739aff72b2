/*
 * imghash.c - SHA-256 of a chunk (imghash.h), through libcrypto's EVP
 * interface with one fetched digest and one context per hasher, so that
 * hashing a chunk costs no lookup and no allocation.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "imghash.h"

struct img_hasher {
	EVP_MD *md;
	EVP_MD_CTX *ctx;
};

struct img_hasher *
img_hasher_new(void)
{
	struct img_hasher *h = calloc(1, sizeof(*h));

	if (h == NULL)
		return NULL;
	h->md = EVP_MD_fetch(NULL, "SHA256", NULL);
	h->ctx = EVP_MD_CTX_new();
	if (h->md == NULL || h->ctx == NULL) {
		img_hasher_free(h);
		return NULL;
	}
	return h;
}

int
img_hash_chunk(struct img_hasher *h, uint64_t datamask, const void *content,
    size_t len, uint8_t out[IMG_HASH_SIZE])
{
	uint8_t le[8];
	unsigned int n = 0;
	int i;

	for (i = 0; i < 8; i++)
		le[i] = (uint8_t)(datamask >> (8 * i));
	if (EVP_DigestInit_ex(h->ctx, h->md, NULL) != 1 ||
	    EVP_DigestUpdate(h->ctx, le, sizeof(le)) != 1 ||
	    (len > 0 && EVP_DigestUpdate(h->ctx, content, len) != 1) ||
	    EVP_DigestFinal_ex(h->ctx, out, &n) != 1 || n != IMG_HASH_SIZE) {
		memset(out, 0, IMG_HASH_SIZE);
		return -1;
	}
	return 0;
}

int
img_hash_pages(struct img_hasher *h, uint64_t datamask, const uint8_t *chunk,
    uint8_t out[IMG_HASH_SIZE])
{
	uint8_t le[8];
	unsigned int n = 0;
	uint64_t m;
	int i, ok;

	for (i = 0; i < 8; i++)
		le[i] = (uint8_t)(datamask >> (8 * i));
	ok = EVP_DigestInit_ex(h->ctx, h->md, NULL) == 1 &&
	    EVP_DigestUpdate(h->ctx, le, sizeof(le)) == 1;
	for (m = datamask; ok && m != 0; m &= m - 1)
		ok = EVP_DigestUpdate(h->ctx, chunk + (size_t)__builtin_ctzll(m) *
		    IMG_PAGE_SIZE, IMG_PAGE_SIZE) == 1;
	if (!ok || EVP_DigestFinal_ex(h->ctx, out, &n) != 1 ||
	    n != IMG_HASH_SIZE) {
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
