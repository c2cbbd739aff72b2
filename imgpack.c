/*
 * imgpack.c - the default finder of an image's packs: beside the image,
 * as a store checkpoint's sibling, or in the store's .packs directory
 * (DESIGN13 D5); a candidate wins when its id and size match.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imgpack.h"
#include "imgread.h"
#include "imgread_int.h"
#include "util.h"

#include "banned.h"

int
img_pack_matches(int fd, const uint8_t id[IMG_ID_SIZE], uint64_t file_size)
{
	uint8_t h[IMG_HDR_SIZE + IMG_SKIP_SIZE + IMG_META_FIXED_V2];
	struct stat st;

	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size != file_size || file_size < sizeof(h))
		return 0;
	if (pread_full(fd, h, sizeof(h), 0) != (ssize_t)sizeof(h))
		return 0;
	if (get_le32(h + IMG_HDR_SKIP_MAGIC) != IMG_SKIP_HDR ||
	    memcmp(h + IMG_HDR_MAGIC, IMG_MAGIC, IMG_MAGIC_LEN) != 0 ||
	    get_le32(h + IMG_HDR_CRC) != crc32c(0, h, IMG_HDR_CRC) ||
	    get_le32(h + IMG_HDR_VERSION) != IMG_VERSION_2 ||
	    get_le64(h + IMG_HDR_META_OFF) != IMG_HDR_SIZE)
		return 0;
	return memcmp(h + IMG_HDR_SIZE + IMG_SKIP_SIZE + IMG_META_IMAGE_ID, id,
	    IMG_ID_SIZE) == 0;
}

int
img_pack_find_beside(void *opaque, const char *image_path,
    const uint8_t id[IMG_ID_SIZE], uint64_t file_size, const char *hint,
    struct err *e)
{
	char *dir = path_dirname(image_path), *up = path_dirname(dir);
	char *cand[3] = { NULL, NULL, NULL };
	char hex[2 * IMG_ID_SIZE + 1];
	int fd = -1, k, saw = 0;

	(void)opaque;
	img_id_hex(id, hex);
	/* An empty hint names no file: only .packs can hold it. */
	if (hint[0] != '\0') {
		cand[0] = xasprintf("%s/%s", dir, hint);
		cand[1] = xasprintf("%s/%s/memory.img", up, hint);
	}
	cand[2] = xasprintf("%s/.packs/%s.img", up, hex);
	for (k = 0; k < 3; k++) {
		if (cand[k] == NULL)
			continue;
		fd = open(cand[k], O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			continue;
		saw = 1;
		if (img_pack_matches(fd, id, file_size))
			break;
		close(fd);
		fd = -1;
	}
	if (fd < 0)
		err_set(e, ERR_FAIL, "pack '%s' (image %s) not found: %s", hint,
		    hex, saw ? "no file there has its id and size" :
		    "no such file beside the image, as a checkpoint or in "
		    ".packs");
	for (k = 0; k < 3; k++)
		free(cand[k]);
	free(up);
	free(dir);
	return fd;
}
