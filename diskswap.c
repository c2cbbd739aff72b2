/*
 * diskswap.c - the disk swap (diskswap.h): link the VM's path P to the
 * checkpoint's state F, make the overlay O backed by F, let QEMU cut onto
 * it, rename O over P; and recover's half, which finishes or undoes it.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "diskfile.h"
#include "diskswap.h"
#include "sig.h"
#include "util.h"
#include "vm.h"

#include "banned.h"

#define CL 65536u		/* the overlay's cluster size */
#define HDR_BACKING 128		/* where its backing name starts */

/* 1 if a and b name the same inode (both exist, a not followed). */
static int
same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	return lstat(a, &sa) == 0 && stat(b, &sb) == 0 &&
	    sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* "<dir>/X" for "<dir>/.X.snapctl-NAME" when that exists, else NULL. */
static char *
vm_path_of(const char *t)
{
	const char *base = path_base(t), *q;
	struct stat st;
	char *dir, *p;

	if (base[0] != '.')
		return NULL;
	dir = path_dirname(t);
	/* The first ".snapctl-" that leaves the name of a file. */
	for (q = base + 1; (q = strstr(q, DISKSWAP_TMP_INFIX)) != NULL; q++) {
		if (q == base + 1 || q[strlen(DISKSWAP_TMP_INFIX)] == '\0')
			continue;
		p = xasprintf("%s/%.*s", dir, (int)(q - base - 1), base + 1);
		if (lstat(p, &st) == 0 && S_ISREG(st.st_mode)) {
			free(dir);
			return p;
		}
		free(p);
	}
	free(dir);
	return NULL;
}

char *
diskswap_vm_path(const char *qemu_file, int *pending)
{
	struct stat st;
	char *p = vm_path_of(qemu_file);

	*pending = 0;
	if (p == NULL)
		return xstrdup(qemu_file);
	if (lstat(qemu_file, &st) == 0 && !same_file(qemu_file, p))
		*pending = 1;
	return p;
}

/* 1 if the qcow2 image at path names its backing file by a relative name. */
static int
backing_relative(const char *path)
{
	uint8_t h[20], c = '/';
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return 0;
	if (pread_full(fd, h, sizeof(h), 0) == (ssize_t)sizeof(h) &&
	    get_be32(h) == 0x514649fb && get_be64(h + 8) != 0 &&
	    get_be32(h + 16) != 0 && pread_full(fd, &c, 1,
	    (off_t)get_be64(h + 8)) != 1)
		c = '/';
	close(fd);
	return c != '/';
}

int
diskswap_plan(struct diskswap *s, const char *p, const char *qemu_file,
    const char *layer, const char *ckpt, uint64_t size, struct err *e)
{
	struct stat st;
	char *dir, *ldir;
	int same_dir;

	memset(s, 0, sizeof(*s));
	dir = path_dirname(p);
	ldir = path_dirname(layer);
	same_dir = strcmp(dir, ldir) == 0;
	s->path = xstrdup(p);
	s->layer = xstrdup(layer);
	s->backing = xstrdup(same_dir ? path_base(layer) : layer);
	s->tmp = xasprintf("%s/.%s%s%s", dir, path_base(p), DISKSWAP_TMP_INFIX,
	    ckpt);
	/* QEMU's name of the active image, when it is not P and gone:
	 * linked for the cut (an earlier swap keeps it as a link of P). */
	if (strcmp(qemu_file, p) != 0 && lstat(qemu_file, &st) < 0)
		s->qname = xstrdup(qemu_file);
	s->size = size;
	free(dir);
	free(ldir);
	if (lstat(p, &st) < 0)
		return err_sys(e, ERR_FAIL, "cannot look at '%s'", p);
	if (!S_ISREG(st.st_mode))
		return err_set(e, ERR_FAIL, "'%s' is %s: snapctl keeps the VM's "
		    "path as its current disk by renaming a new overlay over "
		    "it; point the VM at the image file itself, or --exclude "
		    "the disk", p, S_ISLNK(st.st_mode) ? "a symbolic link" :
		    "not a regular file");
	if (lstat(s->layer, &st) == 0)
		return err_set(e, ERR_FAIL, "'%s' already exists", s->layer);
	if (lstat(s->tmp, &st) == 0)
		return err_set(e, ERR_FAIL, "'%s' already exists", s->tmp);
	if (size == 0)
		return err_set(e, ERR_FAIL, "QEMU did not say the virtual "
		    "size of '%s'", p);
	if (!same_dir) {
		struct stat sp, sd;
		char *ld = path_dirname(layer);
		int other = stat(p, &sp) == 0 && stat(ld, &sd) == 0 &&
		    sp.st_dev != sd.st_dev;

		if (other)
			err_set(e, ERR_FAIL, "--overlay-dir '%s' is on another "
			    "filesystem than '%s': the checkpoint's state is a "
			    "hard link of it", ld, p);
		free(ld);
		if (other)
			return -1;
	}
	/* F keeps A's header: a relative backing name would name another
	 * file from another directory. */
	if (!same_dir && backing_relative(p))
		return err_set(e, ERR_FAIL, "'%s' names its backing file by a "
		    "relative name: its checkpoint state cannot go to another "
		    "directory (leave out --overlay-dir)", p);
	return 0;
}

/* "-blockdev" key=value options: the value of key, or NULL.  Allocated. */
static char *
kv_value(const char *opts, const char *key)
{
	size_t n = strlen(key);
	const char *p = opts, *q;
	struct buf b = BUF_INIT;
	int match;

	for (;;) {
		match = strncmp(p, key, n) == 0 && p[n] == '=';
		/* To the option's end: a ',' not doubled (",," is a comma). */
		for (q = match ? p + n + 1 : p; *q != '\0'; q++) {
			if (*q == ',' && q[1] == ',') {
				if (match)
					buf_addf(&b, ",");
				q++;
				continue;
			}
			if (*q == ',')
				break;
			if (match)
				buf_addf(&b, "%c", *q);
		}
		if (match)
			return b.data != NULL ? (char *)b.data : xstrdup("");
		if (*q == '\0')
			return NULL;
		p = q + 1;
	}
}

/* One -blockdev's driver, node-name, backing (set: 1), file (a node name,
 * or the filename of a nested file object). */
struct bdopt {
	char *driver, *node, *file_node, *filename;
	int backing;
};

static void
bdopt_parse(const char *v, struct bdopt *o)
{
	json_t *j, *f;
	char *x;

	memset(o, 0, sizeof(*o));
	if (v[0] == '{') {
		if ((j = json_loads(v, 0, NULL)) == NULL)
			return;
		if (json_str(j, "driver") != NULL)
			o->driver = xstrdup(json_str(j, "driver"));
		if (json_str(j, "node-name") != NULL)
			o->node = xstrdup(json_str(j, "node-name"));
		if (json_str(j, "filename") != NULL)
			o->filename = xstrdup(json_str(j, "filename"));
		o->backing = json_object_get(j, "backing") != NULL;
		f = json_object_get(j, "file");
		if (json_is_string(f))
			o->file_node = xstrdup(json_string_value(f));
		else if (json_str(f, "filename") != NULL)
			o->filename = xstrdup(json_str(f, "filename"));
		json_decref(j);
		return;
	}
	o->driver = kv_value(v, "driver");
	o->node = kv_value(v, "node-name");
	o->file_node = kv_value(v, "file");
	if ((o->filename = kv_value(v, "file.filename")) == NULL)
		o->filename = kv_value(v, "filename");
	x = kv_value(v, "backing");
	o->backing = x != NULL;
	free(x);
}

static void
bdopt_release(struct bdopt *o)
{
	free(o->driver);
	free(o->node);
	free(o->file_node);
	free(o->filename);
}

int
diskswap_cmdline_check(const json_t *argv, const char *p, const char *device,
    struct err *e)
{
	size_t n = json_array_size(argv), i, k;
	const char *a, *v;
	struct bdopt o, fo;
	int bad = 0;

	for (i = 0; i + 1 < n && !bad; i++) {
		a = json_string_value(json_array_get(argv, i));
		v = json_string_value(json_array_get(argv, i + 1));
		if (a == NULL || v == NULL || strcmp(a, "-blockdev") != 0)
			continue;
		bdopt_parse(v, &o);
		if (o.driver != NULL && strcmp(o.driver, "qcow2") == 0 &&
		    o.backing) {
			if (o.filename != NULL)
				bad = diskfile_same(o.filename, p) ||
				    strcmp(o.filename, p) == 0;
			for (k = 0; k + 1 < n && !bad && o.file_node != NULL;
			    k++) {
				a = json_string_value(json_array_get(argv, k));
				v = json_string_value(json_array_get(argv,
				    k + 1));
				if (a == NULL || v == NULL ||
				    strcmp(a, "-blockdev") != 0)
					continue;
				bdopt_parse(v, &fo);
				if (fo.node != NULL && fo.filename != NULL &&
				    strcmp(fo.node, o.file_node) == 0)
					bad = diskfile_same(fo.filename, p) ||
					    strcmp(fo.filename, p) == 0;
				bdopt_release(&fo);
			}
		}
		bdopt_release(&o);
	}
	if (bad)
		return err_set(e, ERR_FAIL, "its -blockdev sets 'backing': "
		    "started again from that command line, QEMU would not "
		    "open the checkpoint's state below '%s'; drop 'backing' "
		    "from that -blockdev, or --exclude %s", p, device);
	return 0;
}

void
diskswap_release(struct diskswap *s)
{
	free(s->path);
	free(s->layer);
	free(s->tmp);
	free(s->backing);
	free(s->qname);
	memset(s, 0, sizeof(*s));
}

void
diskswap_test_hold(const char *step)
{
	sig_test_hold("SNAPCTL_TEST_HOLD_SWAP", step);
}

/* The L1 table of an image of size bytes: entries, clusters. */
static void
l1_geometry(uint64_t size, uint64_t *entries, uint64_t *clusters)
{
	uint64_t per = (uint64_t)CL * (CL / 8);	/* bytes one entry maps */

	*entries = (size + per - 1) / per;
	if (*entries == 0)
		*entries = 1;
	*clusters = (*entries * 8 + CL - 1) / CL;
}

int
diskswap_overlay_write(const char *path, const char *backing, uint64_t size,
    struct err *e)
{
	uint64_t l1_size, l1_clusters, nclusters, i;
	size_t blen = strlen(backing);
	uint8_t *c;
	int fd, rc = -1;

	l1_geometry(size, &l1_size, &l1_clusters);
	nclusters = 3 + l1_clusters;
	if (blen > 1023 || nclusters > CL / 2 || l1_size > UINT32_MAX)
		return err_set(e, ERR_FAIL, "cannot make '%s': disk too large "
		    "or backing name too long", path);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
	    0600);
	if (fd < 0)
		return err_sys(e, ERR_FAIL, "cannot create '%s'%s", path,
		    errno == EEXIST ? " (it exists already)" : "");
	c = xcalloc(1, CL);
	put_be32(c, 0x514649fb);		/* QFI\xfb */
	put_be32(c + 4, 3);
	put_be64(c + 8, HDR_BACKING);		/* backing_file_offset */
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
	memcpy(c + HDR_BACKING, backing, blen);
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
	err_sys(e, ERR_FAIL, "cannot write '%s'", path);
	unlink(path);
out:
	free(c);
	close(fd);
	return rc;
}

int
diskswap_overlay_pristine(const char *path, const char *backing)
{
	uint8_t h[HDR_BACKING + 1024], *l1 = NULL;
	uint64_t size, l1_entries, l1_clusters, i;
	size_t blen = strlen(backing);
	struct stat st;
	int fd, ok = 0;

	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return 0;
	if (fstat(fd, &st) < 0 || pread_full(fd, h, sizeof(h), 0) !=
	    (ssize_t)sizeof(h) || get_be32(h) != 0x514649fb ||
	    get_be64(h + 8) != HDR_BACKING || get_be32(h + 16) != blen ||
	    blen > 1023 || memcmp(h + HDR_BACKING, backing, blen) != 0)
		goto out;
	size = get_be64(h + 24);
	l1_geometry(size, &l1_entries, &l1_clusters);
	if (get_be64(h + 40) != 3 * (uint64_t)CL ||
	    get_be32(h + 36) != l1_entries ||
	    (uint64_t)st.st_size != (3 + l1_clusters) * CL)
		goto out;
	l1 = xmalloc(l1_entries * 8);
	if (pread_full(fd, l1, l1_entries * 8, 3 * (off_t)CL) !=
	    (ssize_t)(l1_entries * 8))
		goto out;
	for (i = 0; i < l1_entries; i++)
		if (get_be64(l1 + 8 * i) != 0)
			goto out;
	ok = 1;
out:
	free(l1);
	close(fd);
	return ok;
}

char *
diskswap_overlay_ours(const char *path)
{
	uint8_t h[HDR_BACKING + 1024];
	size_t blen;
	char *name = NULL;
	int fd;

	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	if (pread_full(fd, h, sizeof(h), 0) == (ssize_t)sizeof(h) &&
	    get_be32(h) == 0x514649fb && get_be32(h + 4) == 3 &&
	    get_be64(h + 8) == HDR_BACKING && get_be32(h + 20) == 16 &&
	    get_be32(h + 96) == 4 && get_be32(h + 100) == 104 &&
	    get_be32(h + 104) == 0xe2792aca && get_be32(h + 108) == 5 &&
	    memcmp(h + 112, "qcow2", 5) == 0 &&
	    (blen = get_be32(h + 16)) > 0 && blen <= 1023 &&
	    memchr(h + HDR_BACKING, '\0', blen) == NULL)
		name = xstrndup((const char *)h + HDR_BACKING, blen);
	close(fd);
	return name;
}

int
diskswap_prepare(struct diskswap *s, struct err *e)
{
	if (link(s->path, s->layer) < 0) {
		err_sys(e, ERR_FAIL, "cannot link '%s' to '%s'", s->path,
		    s->layer);
		return -1;
	}
	s->linked = 1;
	diskswap_test_hold("linked");
	/* The cut reopens the active image read-only by QEMU's name. */
	if (s->qname != NULL) {
		if (link(s->path, s->qname) < 0) {
			err_sys(e, ERR_FAIL, "cannot link '%s' to '%s'",
			    s->path, s->qname);
			goto fail;
		}
		s->qlinked = 1;
	}
	if (diskswap_overlay_write(s->tmp, s->backing, s->size, e) < 0)
		goto fail;
	s->created = 1;
	if (fsync_parent_dir(s->path, e) < 0)
		goto fail;
	return 0;
fail:
	diskswap_undo(s);
	return -1;
}

void
diskswap_undo(struct diskswap *s)
{
	struct stat st;

	if (s->created && !s->renamed && lstat(s->tmp, &st) == 0 &&
	    S_ISREG(st.st_mode) && !same_file(s->tmp, s->path))
		unlink(s->tmp);
	if (s->qlinked && same_file(s->qname, s->path))
		unlink(s->qname);
	if (s->linked && same_file(s->layer, s->path))
		unlink(s->layer);
	s->linked = s->qlinked = s->created = 0;
}

void
diskswap_drop_names(const char *path, const char *keep, const char *of)
{
	char *dir = path_dirname(path), *pfx, *f;
	struct dirent *de;
	size_t n;
	DIR *d;

	pfx = xasprintf(".%s%s", path_base(path), DISKSWAP_TMP_INFIX);
	n = strlen(pfx);
	if ((d = opendir(dir)) != NULL) {
		while ((de = readdir(d)) != NULL) {
			if (strncmp(de->d_name, pfx, n) != 0)
				continue;
			f = xasprintf("%s/%s", dir, de->d_name);
			if ((keep == NULL || strcmp(f, keep) != 0) &&
			    same_file(f, of))
				unlink(f);
			free(f);
		}
		closedir(d);
	}
	free(pfx);
	free(dir);
}

/*
 * P becomes O's inode while O keeps its name: link(O, X), rename(X, P).
 * QEMU reopens a node by the name it opened it under when the node's
 * mode changes (a -drive image, auto-read-only, at every migration's
 * end), so O must go on naming the VM's current disk.  Each step may be
 * done already (recover).  1 if P was switched here, 0 if it was before.
 */
static int
finish(const char *path, const char *tmp, const char *layer, struct err *e)
{
	struct stat st;
	char *x;
	int rc = 0;

	diskswap_test_hold("cut");
	if (lstat(tmp, &st) == 0 && !same_file(tmp, path)) {
		x = xasprintf("%s.new", tmp);
		if (lstat(x, &st) == 0 && !same_file(x, tmp))
			unlink(x);
		if (lstat(x, &st) < 0 && link(tmp, x) < 0) {
			err_sys(e, ERR_FAIL, "cannot link '%s' to '%s'", tmp, x);
			free(x);
			return -1;
		}
		if (rename(x, path) < 0) {
			err_sys(e, ERR_FAIL, "cannot rename '%s' to '%s'", x,
			    path);
			unlink(x);
			free(x);
			return -1;
		}
		free(x);
		rc = 1;
	}
	diskswap_test_hold("renamed");
	/* The temporary names of P's earlier swaps that name the state layer
	 * now: QEMU calls that layer by one of them (Q), read-only since
	 * the cut, or a QEMU that restarted left one behind. */
	diskswap_drop_names(path, tmp, layer);
	return rc;
}

int
diskswap_finish(struct diskswap *s, struct err *e)
{
	if (finish(s->path, s->tmp, s->layer, e) < 0)
		return -1;
	s->renamed = 1;
	s->qlinked = 0;
	return 0;
}

int
diskswap_sync(struct diskswap *s, struct err *e)
{
	return fsync_parent_dir(s->path, e);
}

json_t *
diskswap_note(const struct diskswap *s)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:s?, s:s}", "path", s->path,
	    "layer", s->layer, "tmp", s->tmp, "backing", s->backing,
	    "qname", s->qname, "node", s->node);
}

/* Undo from the note: O, Q (ours: the note names it only then) and F
 * while they are links of P. */
static void
undo_entry(const char *path, const char *layer, const char *tmp,
    const char *qname, json_t *actions)
{
	struct stat st;

	if (lstat(tmp, &st) == 0 && S_ISREG(st.st_mode) &&
	    !same_file(tmp, path) && unlink(tmp) == 0)
		json_array_append_new(actions, json_sprintf("removed '%s' (the "
		    "disks were not cut)", tmp));
	if (qname != NULL && lstat(qname, &st) == 0 && same_file(qname,
	    path) && unlink(qname) == 0)
		json_array_append_new(actions, json_sprintf("removed the link "
		    "'%s' of '%s'", qname, path));
	if (lstat(layer, &st) == 0 && same_file(layer, path) &&
	    st.st_nlink > 1 && unlink(layer) == 0)
		json_array_append_new(actions, json_sprintf("removed the link "
		    "'%s' of '%s' (the disks were not cut)", layer, path));
}

int
diskswap_recover(struct qmp *q, const json_t *entry, json_t *actions,
    struct err *e)
{
	const char *path = json_str(entry, "path");
	const char *layer = json_str(entry, "layer");
	const char *tmp = json_str(entry, "tmp");
	const char *backing = json_str(entry, "backing");
	const char *qname = json_str(entry, "qname");
	const char *node = json_str(entry, "node");
	struct blockinfo *bi = NULL;
	struct stat st;
	size_t i, n = 0;
	int cut = 0, rc;

	if (path == NULL || layer == NULL || tmp == NULL || backing == NULL ||
	    node == NULL)
		return err_set(e, ERR_FAIL, "the recovery note's disk swap "
		    "entry is incomplete");
	if (lstat(tmp, &st) < 0) {
		/* Never made (or undone): only links of P may be left. */
		undo_entry(path, layer, tmp, qname, actions);
		return 0;
	}
	if (!same_file(tmp, path)) {
		if (q != NULL) {
			if (vm_disks_query(q, &bi, &n, e) < 0)
				return -1;
			for (i = 0; i < n; i++)
				if (bi[i].node != NULL &&
				    strcmp(bi[i].node, node) == 0)
					cut = 1;
			vm_disks_free(bi, n);
		} else
			cut = !diskswap_overlay_pristine(tmp, backing);
		if (!cut && q != NULL && !diskswap_overlay_pristine(tmp, backing)) {
			/* Not this QEMU's: one that is gone wrote into it,
			 * and this one started on P without it.  Kept. */
			json_array_append_new(actions, json_sprintf("kept '%s': "
			    "it holds writes of a QEMU that is gone; the VM "
			    "runs on '%s' without them", tmp, path));
			return 0;
		}
		if (!cut) {
			undo_entry(path, layer, tmp, qname, actions);
			return 0;
		}
	}
	if ((rc = finish(path, tmp, layer, e)) < 0 ||
	    fsync_parent_dir(path, e) < 0)
		return -1;
	if (rc == 1)
		json_array_append_new(actions, json_sprintf("finished the disk "
		    "swap: '%s' is the current disk, '%s' the checkpoint's "
		    "state", path, layer));
	return 0;
}
