/*
 * imghash.h - the identity of a chunk in image version 2
 * (man/snapctl-image.5, "Chunk identity"): a 32-byte hash of the chunk's
 * data mask (present and not zero, 8 bytes little-endian) and its frame's
 * content (the data pages packed in page order).  Two chunks share a frame
 * only when their hashes, of the same algorithm, are equal.
 *
 * Two algorithms: BLAKE3, which snapctl writes (the BLAKE3 team's C code,
 * third_party/blake3), of the content then the mask; and SHA-256, from
 * libcrypto, of the mask then the content, which images written before
 * flag 0x10 hold.  Never prints, never exits.
 *
 * Threads: a hasher belongs to one thread; make one per thread.
 */
#ifndef SNAPCTL_IMGHASH_H
#define SNAPCTL_IMGHASH_H

#include <stddef.h>
#include <stdint.h>

#include "imgfmt.h"

enum img_hash_algo {
	IMG_HASH_SHA256,	/* version 2 without IMG_F_BLAKE3 */
	IMG_HASH_BLAKE3,	/* version 2 with IMG_F_BLAKE3 */
};

/* The algorithm of an image with these header flags (version 2). */
enum img_hash_algo img_hash_algo_of(uint32_t flags);

/* "sha256" or "blake3", for info and errors. */
const char *img_hash_name(enum img_hash_algo algo);

struct img_hasher;

/* A hasher, or NULL when out of memory (or libcrypto has no SHA-256). */
struct img_hasher *img_hasher_new(enum img_hash_algo algo);

/*
 * out = the hash of a packed chunk: content[0..len) holds the pages of
 * datamask in order, len being 4096 times their number.
 * SHA-256(le64(datamask) || content), or BLAKE3(content || le64(datamask)).
 * 0, or -1 when libcrypto failed (out zeroed).
 */
int img_hash_chunk(struct img_hasher *h, uint64_t datamask,
    const void *content, size_t len, uint8_t out[IMG_HASH_SIZE]);

/*
 * The same hash of a chunk not packed: chunk holds page i at i * 4096, and
 * the pages of datamask are hashed in order (no copy).  0 or -1.
 */
int img_hash_pages(struct img_hasher *h, uint64_t datamask,
    const uint8_t *chunk, uint8_t out[IMG_HASH_SIZE]);

/* NULL is fine. */
void img_hasher_free(struct img_hasher *h);

#endif
