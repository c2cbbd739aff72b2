/*
 * imgpack.h - finding an image version 2's packs (man/snapctl-image.5,
 * "Packs"): the default finder img_pack_find_beside() is declared in
 * imgread.h; this is the test other finders (the store's) share.
 * Never prints, never exits.
 */
#ifndef SNAPCTL_IMGPACK_H
#define SNAPCTL_IMGPACK_H

#include <stdint.h>

#include "imgfmt.h"

/*
 * 1 when fd is a regular file of file_size bytes whose header says
 * version 2 and whose metadata says image id; else 0.  A quick look (the
 * header's magic, version and CRC, and the id), not the reader's checks.
 */
int img_pack_matches(int fd, const uint8_t id[IMG_ID_SIZE],
    uint64_t file_size);

#endif
