/*
 * diskfile.c - probe disk image files (qcow2 header, size, mtime) and check
 * them against a checkpoint's manifest.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "diskfile.h"
#include "util.h"

#include "banned.h"

#define QCOW2_MAGIC 0x514649fbu	/* "QFI\xfb" */
#define QCOW2_HEADER_MIN 72
#define QCOW2_BACKING_MAX 1023	/* QEMU's own limit */

/* The backing name as resolved by QEMU: relative to the image's dir. */
static char *
resolve_backing(const char *image, const char *name)
{
	char *dir, *out;

	if (name[0] == '/' || strncmp(name, "json:", 5) == 0 ||
	    strchr(name, ':') != NULL)
		return xstrdup(name);
	dir = path_dirname(image);
	out = xasprintf("%s/%s", dir, name);
	free(dir);
	return out;
}

int
diskfile_probe(const char *path, struct diskfile *out, struct err *e)
{
	uint8_t h[QCOW2_HEADER_MIN];
	struct stat st;
	ssize_t n;
	uint64_t boff;
	uint32_t blen;
	char *name = NULL;
	int fd, rc = -1;

	memset(out, 0, sizeof(*out));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_sys(e, ERR_FAIL, "cannot open '%s'", path);
	if (fstat(fd, &st) < 0) {
		err_sys(e, ERR_FAIL, "cannot stat '%s'", path);
		goto out;
	}
	out->size = (uint64_t)st.st_size;
	out->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 +
	    st.st_mtim.tv_nsec;
	out->dev = st.st_dev;
	out->ino = st.st_ino;
	n = pread_full(fd, h, sizeof(h), 0);
	if (n < 0) {
		err_sys(e, ERR_FAIL, "cannot read '%s'", path);
		goto out;
	}
	if (n < 4 || get_be32(h) != QCOW2_MAGIC) {
		snprintf(out->format, sizeof(out->format), "raw");
		rc = 0;
		goto out;
	}
	snprintf(out->format, sizeof(out->format), "qcow2");
	if (n < QCOW2_HEADER_MIN) {
		err_set(e, ERR_FAIL, "'%s': qcow2 header cut short", path);
		goto out;
	}
	boff = get_be64(h + 8);
	blen = get_be32(h + 16);
	if (boff == 0 || blen == 0) {
		rc = 0;
		goto out;
	}
	if (blen > QCOW2_BACKING_MAX || boff > (uint64_t)st.st_size ||
	    blen > (uint64_t)st.st_size - boff) {
		err_set(e, ERR_FAIL, "'%s': qcow2 header names a backing file "
		    "outside the image", path);
		goto out;
	}
	name = xmalloc((size_t)blen + 1);
	n = pread_full(fd, name, blen, (off_t)boff);
	if (n != (ssize_t)blen) {
		err_sys(e, ERR_FAIL, "cannot read the backing name of '%s'",
		    path);
		goto out;
	}
	name[blen] = '\0';
	if (strlen(name) != blen) {
		err_set(e, ERR_FAIL, "'%s': NUL in its backing file name",
		    path);
		goto out;
	}
	out->backing = resolve_backing(path, name);
	rc = 0;
out:
	free(name);
	close(fd);
	if (rc < 0)
		diskfile_release(out);
	return rc;
}

void
diskfile_release(struct diskfile *d)
{
	free(d->backing);
	d->backing = NULL;
}

int
diskfile_same(const char *a, const char *b)
{
	struct stat sa, sb;

	if (a == NULL || b == NULL || stat(a, &sa) < 0 || stat(b, &sb) < 0)
		return 0;
	return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Backing names agree: the same file, or the same string. */
static int
backing_agrees(const char *recorded, const char *found)
{
	if (recorded == NULL || found == NULL)
		return recorded == found;
	return strcmp(recorded, found) == 0 || diskfile_same(recorded, found);
}

int
diskfile_check(const json_t *disk, struct err *e)
{
	const char *dev = json_string_value(json_object_get(disk, "device"));
	const char *file = json_string_value(json_object_get(disk, "file"));
	const char *fmt = json_string_value(json_object_get(disk, "format"));
	const char *bk = json_string_value(json_object_get(disk, "backing"));
	const json_t *size = json_object_get(disk, "size");
	const json_t *mtime = json_object_get(disk, "mtime_ns");
	struct diskfile d;
	int rc = -1;

	if (dev == NULL)
		dev = "?";
	if (file == NULL)
		return err_set(e, ERR_FAIL, "disk '%s': the manifest names "
		    "no file", dev);
	if (diskfile_probe(file, &d, e) < 0) {
		if (e != NULL && e->sys_errno == ENOENT) {
			err_clear(e);
			return err_set(e, ERR_MISMATCH, "disk '%s': '%s' is "
			    "missing", dev, file);
		}
		err_prefix(e, "disk '%s': ", dev);
		return -1;
	}
	if (fmt != NULL && (strcmp(fmt, "qcow2") == 0 ||
	    strcmp(fmt, "raw") == 0) && strcmp(fmt, d.format) != 0) {
		err_set(e, ERR_MISMATCH, "disk '%s': '%s' is %s, the "
		    "checkpoint recorded %s", dev, file, d.format, fmt);
		goto out;
	}
	if (strcmp(d.format, "qcow2") == 0 && !backing_agrees(bk, d.backing)) {
		err_set(e, ERR_MISMATCH, "disk '%s': '%s' is backed by %s%s%s, "
		    "the checkpoint recorded %s%s%s", dev, file,
		    d.backing ? "'" : "", d.backing ? d.backing : "nothing",
		    d.backing ? "'" : "", bk ? "'" : "", bk ? bk : "none",
		    bk ? "'" : "");
		goto out;
	}
	if (json_is_integer(size) &&
	    (uint64_t)json_integer_value(size) != d.size) {
		err_set(e, ERR_MISMATCH, "disk '%s': '%s' changed since the "
		    "checkpoint (size %llu, was %llu)", dev, file,
		    (unsigned long long)d.size,
		    (unsigned long long)json_integer_value(size));
		goto out;
	}
	if (json_is_integer(mtime) && json_integer_value(mtime) !=
	    d.mtime_ns) {
		err_set(e, ERR_MISMATCH, "disk '%s': '%s' changed since the "
		    "checkpoint (modified after it was taken)", dev, file);
		goto out;
	}
	rc = 0;
out:
	diskfile_release(&d);
	return rc;
}

/* "disk" from "/vm/disk.qcow2". */
static char *
name_stem(const char *path)
{
	const char *base = strrchr(path, '/'), *dot;

	base = base != NULL ? base + 1 : path;
	dot = strrchr(base, '.');
	if (dot == NULL || dot == base)
		return xstrdup(base);
	return xstrndup(base, (size_t)(dot - base));
}

/* 1 if path's base name is "STEM." followed by something. */
static int
extends_stem(const char *path, const char *stem)
{
	const char *base = strrchr(path, '/');
	size_t n = strlen(stem);

	base = base != NULL ? base + 1 : path;
	return n > 0 && strncmp(base, stem, n) == 0 && base[n] == '.' &&
	    base[n + 1] != '\0';
}

char *
diskfile_stem(const char *path)
{
	char *chain[DISKFILE_STEM_DEPTH], *stem;
	struct diskfile d;
	size_t n = 0, i;

	chain[n++] = xstrdup(path);
	while (n < DISKFILE_STEM_DEPTH &&
	    diskfile_probe(chain[n - 1], &d, NULL) == 0) {
		if (d.backing == NULL || strchr(d.backing, ':') != NULL) {
			diskfile_release(&d);
			break;
		}
		chain[n++] = d.backing;
		d.backing = NULL;
		diskfile_release(&d);
	}
	stem = name_stem(chain[n - 1]);
	for (i = n - 1; i-- > 0;)
		if (!extends_stem(chain[i], stem)) {
			free(stem);
			stem = name_stem(chain[i]);
		}
	for (i = 0; i < n; i++)
		free(chain[i]);
	return stem;
}
