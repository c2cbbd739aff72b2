/*
 * diskswap.c - the disk swap (diskswap.h): link the VM's path P to the
 * checkpoint's layer L, make the overlay T backed by L's relative name, let
 * QEMU cut onto it, rename T over P; and recover's half, which finishes or
 * undoes it.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "diskswap.h"
#include "sig.h"
#include "util.h"
#include "vm.h"

#include "banned.h"

static const char *
base_of(const char *p)
{
	const char *b = strrchr(p, '/');

	return b != NULL ? b + 1 : p;
}

/* 1 if a and b name the same inode (both exist). */
static int
same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	return lstat(a, &sa) == 0 && stat(b, &sb) == 0 &&
	    sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* "<dir>/X" for "<dir>/.X.snapctl-NAME", else NULL. */
static char *
vm_path_of(const char *t)
{
	const char *base = base_of(t), *infix = NULL, *q;
	char *dir, *p;

	if (base[0] != '.')
		return NULL;
	for (q = base + 1; (q = strstr(q, DISKSWAP_TMP_INFIX)) != NULL; q++)
		infix = q;
	if (infix == NULL || infix == base + 1 ||
	    infix[strlen(DISKSWAP_TMP_INFIX)] == '\0')
		return NULL;
	dir = path_dirname(t);
	p = xasprintf("%s/%.*s", dir, (int)(infix - base - 1), base + 1);
	free(dir);
	return p;
}

static int
is_tmp(const char *t)
{
	char *p = vm_path_of(t);

	free(p);
	return p != NULL;
}

char *
diskswap_vm_path(const char *qemu_file, int *pending)
{
	struct stat st;
	char *p = vm_path_of(qemu_file);

	if (pending != NULL)
		*pending = 0;
	if (p == NULL)
		return xstrdup(qemu_file);
	if (lstat(qemu_file, &st) == 0 && !same_file(qemu_file, p) &&
	    pending != NULL)
		*pending = 1;
	return p;
}

/* "disk" from "/vm/disk.qcow2": the layers are "disk.<ckpt>.qcow2". */
static char *
stem_of(const char *p)
{
	const char *base = base_of(p), *dot = strrchr(base, '.');

	if (dot == NULL || dot == base)
		return xstrdup(base);
	return xstrndup(base, (size_t)(dot - base));
}

int
diskswap_plan(struct diskswap *s, const char *p, const char *qemu_file,
    const char *ckpt, struct err *e)
{
	struct stat st;
	char *dir, *stem;

	memset(s, 0, sizeof(*s));
	dir = path_dirname(p);
	stem = stem_of(p);
	s->path = xstrdup(p);
	s->rel = xasprintf("%s.%s.qcow2", stem, ckpt);
	s->layer = xasprintf("%s/%s", dir, s->rel);
	s->tmp = xasprintf("%s/.%s%s%s", dir, base_of(p), DISKSWAP_TMP_INFIX,
	    ckpt);
	if (strcmp(qemu_file, p) != 0)
		s->prev = xstrdup(qemu_file);
	free(dir);
	free(stem);
	if (lstat(s->layer, &st) == 0)
		return err_set(e, ERR_FAIL, "layer '%s' already exists",
		    s->layer);
	if (lstat(s->tmp, &st) == 0)
		return err_set(e, ERR_FAIL, "'%s' already exists", s->tmp);
	return 0;
}

void
diskswap_release(struct diskswap *s)
{
	free(s->path);
	free(s->layer);
	free(s->tmp);
	free(s->rel);
	free(s->prev);
	memset(s, 0, sizeof(*s));
}

/* Test only: SNAPCTL_TEST_HOLD_SWAP=STEP:MS sleeps at STEP (checkpoint.h). */
static void
test_hold(const char *step)
{
	const char *v = getenv("SNAPCTL_TEST_HOLD_SWAP"), *colon;
	uint64_t ms, end;

	if (v == NULL || (colon = strchr(v, ':')) == NULL ||
	    strncmp(v, step, (size_t)(colon - v)) != 0 ||
	    strlen(step) != (size_t)(colon - v) ||
	    parse_u64(colon + 1, 0, 600000, &ms, NULL) < 0)
		return;
	end = now_mono_ms() + ms;
	while (now_mono_ms() < end && sig_caught() == 0)
		poll(NULL, 0, 20);
}

static int
sync_dir_of(const char *path, struct err *e)
{
	char *dir = path_dirname(path);
	int rc = fsync_dir(dir, e);

	free(dir);
	return rc;
}

/*
 * An empty qcow2 v3 image of size bytes at path (created 0600, O_EXCL)
 * whose backing file is backing (a qcow2): the header with a backing
 * format extension and the name, a refcount table, one refcount block, an
 * empty L1 table; 64 KiB clusters.  QEMU then opens it (mode "existing").
 */
#define CL 65536u
static int
qcow2_create(const char *path, const char *backing, uint64_t size,
    struct err *e)
{
	uint64_t l1_size, l1_clusters, nclusters, i;
	size_t blen = strlen(backing);
	uint8_t *c;
	int fd, rc = -1;

	l1_size = (size + (uint64_t)CL * (CL / 8) - 1) / ((uint64_t)CL *
	    (CL / 8));
	if (l1_size == 0)
		l1_size = 1;
	l1_clusters = (l1_size * 8 + CL - 1) / CL;
	nclusters = 3 + l1_clusters;
	if (blen > 1023 || nclusters > CL / 2 || 128 + blen > CL)
		return err_set(e, ERR_FAIL, "cannot make '%s': disk too large "
		    "or backing name too long", path);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
	    0600);
	if (fd < 0)
		return err_set(e, ERR_FAIL, "cannot create '%s': %s", path,
		    strerror(errno));
	c = xcalloc(1, CL);
	put_be32(c, 0x514649fb);		/* QFI\xfb */
	put_be32(c + 4, 3);
	put_be64(c + 8, 128);			/* backing_file_offset */
	put_be32(c + 16, (uint32_t)blen);
	put_be32(c + 20, 16);			/* cluster_bits */
	put_be64(c + 24, size);
	put_be32(c + 36, (uint32_t)l1_size);
	put_be64(c + 40, 3 * (uint64_t)CL);	/* l1_table_offset */
	put_be64(c + 48, CL);			/* refcount_table_offset */
	put_be32(c + 56, 1);			/* refcount_table_clusters */
	put_be32(c + 96, 4);			/* refcount_order: 16 bits */
	put_be32(c + 100, 104);			/* header_length */
	put_be32(c + 104, 0xe2792aca);		/* backing format */
	put_be32(c + 108, 5);
	memcpy(c + 112, "qcow2", 5);
	/* c + 120: the end of the extensions, zeros */
	memcpy(c + 128, backing, blen);
	if (pwrite_full(fd, c, CL, 0) < 0)
		goto fail;
	memset(c, 0, CL);
	put_be64(c, 2 * (uint64_t)CL);		/* the refcount block */
	if (pwrite_full(fd, c, CL, CL) < 0)
		goto fail;
	memset(c, 0, CL);
	for (i = 0; i < nclusters; i++)
		put_be16(c + 2 * i, 1);
	if (pwrite_full(fd, c, CL, 2 * (off_t)CL) < 0 ||
	    ftruncate(fd, (off_t)(nclusters * CL)) < 0 || fsync(fd) < 0)
		goto fail;
	rc = 0;
	goto out;
fail:
	/* ERR_FAIL even for ENOSPC: exit 6 means the store filled up. */
	err_set(e, ERR_FAIL, "cannot write '%s': %s", path, strerror(errno));
	unlink(path);
out:
	free(c);
	close(fd);
	return rc;
}

int
diskswap_link(struct diskswap *s, struct err *e)
{
	struct stat st;

	if (link(s->path, s->layer) < 0)
		return err_sys(e, ERR_FAIL, "cannot link '%s' to '%s'",
		    s->path, s->layer);
	s->linked = 1;
	/* The cut reopens the active layer by QEMU's name of it. */
	if (s->prev != NULL && lstat(s->prev, &st) < 0 &&
	    link(s->path, s->prev) < 0)
		return err_sys(e, ERR_FAIL, "cannot link '%s' to '%s'",
		    s->path, s->prev);
	if (qcow2_create(s->tmp, s->rel, s->size, e) < 0)
		return -1;
	s->created = 1;
	if (sync_dir_of(s->layer, e) < 0)
		return -1;
	test_hold("linked");
	return 0;
}

void
diskswap_unlink_layer(struct diskswap *s)
{
	struct stat a, b;

	if (s->created)
		unlink(s->tmp);
	if (s->linked && lstat(s->layer, &a) == 0 && stat(s->path, &b) == 0 &&
	    a.st_dev == b.st_dev && a.st_ino == b.st_ino)
		unlink(s->layer);
	s->linked = s->created = 0;
}

/*
 * rename, link back, drop prev: recover redoes what a killed run did not
 * do (each step may be done already).
 */
static int
finish(const char *path, const char *tmp, const char *prev, struct err *e)
{
	struct stat st;

	test_hold("cut");
	if (lstat(tmp, &st) < 0 || !same_file(tmp, path)) {
		if (lstat(tmp, &st) == 0 && rename(tmp, path) < 0)
			return err_sys(e, ERR_FAIL, "cannot rename '%s' to "
			    "'%s'", tmp, path);
		test_hold("renamed");
		/* QEMU's name of the new layer names it again. */
		if (link(path, tmp) < 0)
			return err_sys(e, ERR_FAIL, "cannot link '%s' to '%s'",
			    path, tmp);
	}
	/* The old layer is read-only now: its QEMU name may go. */
	if (prev != NULL && strcmp(prev, path) != 0 && is_tmp(prev) &&
	    lstat(prev, &st) == 0 && S_ISREG(st.st_mode))
		unlink(prev);
	return sync_dir_of(path, e);
}

int
diskswap_finish(struct diskswap *s, struct err *e)
{
	return finish(s->path, s->tmp, s->prev, e);
}

json_t *
diskswap_note(const struct diskswap *s)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:s?, s:s, s:s}", "path",
	    s->path, "layer", s->layer, "tmp", s->tmp, "rel", s->rel,
	    "prev", s->prev, "device", s->device, "node", s->node);
}

int
diskswap_recover(struct qmp *q, const json_t *entry, json_t *actions,
    struct err *e)
{
	const char *path = json_str(entry, "path");
	const char *layer = json_str(entry, "layer");
	const char *tmp = json_str(entry, "tmp");
	const char *rel = json_str(entry, "rel");
	const char *prev = json_str(entry, "prev");
	const char *device = json_str(entry, "device");
	const char *node = json_str(entry, "node");
	struct blockinfo *bi = NULL;
	struct stat st, a, b;
	size_t i, n = 0;
	int cut = 0;

	if (path == NULL || layer == NULL || tmp == NULL || rel == NULL ||
	    device == NULL || node == NULL || strchr(rel, '/') != NULL)
		return err_set(e, ERR_FAIL, "the recovery note's disk swap "
		    "entry is incomplete");
	if (vm_disks_query(q, &bi, &n, e) < 0)
		return -1;
	for (i = 0; i < n; i++)
		if (bi[i].node != NULL && strcmp(bi[i].node, node) == 0)
			cut = 1;
	vm_disks_free(bi, n);
	if (cut) {
		if (lstat(tmp, &st) == 0 && same_file(tmp, path) &&
		    (prev == NULL || lstat(prev, &st) < 0))
			return 0;	/* done */
		if (finish(path, tmp, prev, e) < 0)
			return -1;
		json_array_append_new(actions, json_sprintf("finished the disk "
		    "swap: '%s' is the current disk, '%s' the checkpoint's "
		    "layer", path, layer));
		return 0;
	}
	/* QEMU never cut (its transaction is all or nothing): undo. */
	if (lstat(tmp, &st) == 0 && S_ISREG(st.st_mode) &&
	    !same_file(tmp, path) && unlink(tmp) == 0)
		json_array_append_new(actions, json_sprintf("removed '%s'",
		    tmp));
	if (lstat(layer, &a) == 0 && stat(path, &b) == 0 &&
	    a.st_dev == b.st_dev && a.st_ino == b.st_ino && a.st_nlink > 1 &&
	    unlink(layer) == 0)
		json_array_append_new(actions, json_sprintf("removed the link "
		    "'%s' of '%s' (the disks were not cut)", layer, path));
	return 0;
}
