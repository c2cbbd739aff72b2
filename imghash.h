/*
 * imghash.h - the identity of a chunk in image version 2
 * (man/snapctl-image.5, "Chunk identity"): SHA-256, from libcrypto, of the
 * chunk's data mask (present and not zero, 8 bytes little-endian) and its
 * frame's content (the data pages packed in page order).  Two chunks share
 * a frame only when their hashes are equal.  Never prints, never exits.
 *
 * Threads: a hasher belongs to one thread; make one per thread.
 */
#ifndef SNAPCTL_IMGHASH_H
#define SNAPCTL_IMGHASH_H

#include <stddef.h>
#include <stdint.h>

#include "imgfmt.h"

struct img_hasher;

/* A hasher, or NULL when libcrypto has no SHA-256 (out of memory). */
struct img_hasher *img_hasher_new(void);

/*
 * out = SHA-256(le64(datamask) || content[0..len)), len being 4096 times
 * the pages of datamask.  0, or -1 when libcrypto failed (out zeroed).
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
