/*
 * storepack.c - the store's packs (storepack.h): a deleted checkpoint's
 * image kept under its id while others name it, and the GC that recomputes
 * the references from the remaining images and frees what nothing names.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "imgfmt.h"
#include "imgread.h"
#include "manifest.h"
#include "sig.h"
#include "store.h"
#include "storepack.h"
#include "util.h"

#include "banned.h"

#define HEX_ID (2 * IMG_ID_SIZE)

/* What storepack needs of an image's header and metadata. */
struct head {
	uint8_t id[IMG_ID_SIZE];
	uint64_t file_size, data_off, data_size;
};

/* A file of STORE/.packs and the frames of it that images name. */
struct pack {
	char name[HEX_ID + 8];
	uint8_t id[IMG_ID_SIZE];
	int named;
	int live;		/* a remaining checkpoint's image has its id */
	int held;		/* open in another process: not punched */
	dev_t dev;
	ino_t ino;
	struct range { uint64_t off, len; } *r;
	size_t n, cap;
};

static int
nibble(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* 32 lowercase hex digits (what img_id_hex() writes) into id. */
static int
hex_id(const char *s, uint8_t id[IMG_ID_SIZE])
{
	size_t i;
	int hi, lo;

	for (i = 0; i < IMG_ID_SIZE; i++) {
		if ((hi = nibble(s[2 * i])) < 0 || (lo = nibble(s[2 * i + 1]))
		    < 0)
			return -1;
		id[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

/*
 * The header of a version 2 image on fd (the fields the reader checks
 * first: magic, header CRC, version, metadata right after the header).
 * 0; 1 for anything else (not an image, version 1, damaged, too short);
 * -1 when it cannot be read (errno set).
 */
static int
read_head(int fd, struct head *h)
{
	uint8_t b[IMG_HDR_SIZE + IMG_SKIP_SIZE + IMG_META_FIXED_V2];
	ssize_t got;

	if ((got = pread_full(fd, b, sizeof(b), 0)) < 0)
		return -1;
	if (got != (ssize_t)sizeof(b) ||
	    memcmp(b + IMG_HDR_MAGIC, IMG_MAGIC, IMG_MAGIC_LEN) != 0 ||
	    get_le32(b + IMG_HDR_CRC) != crc32c(0, b, IMG_HDR_CRC) ||
	    get_le32(b + IMG_HDR_VERSION) != IMG_VERSION_2 ||
	    get_le64(b + IMG_HDR_META_OFF) != IMG_HDR_SIZE)
		return 1;
	memcpy(h->id, b + IMG_HDR_SIZE + IMG_SKIP_SIZE + IMG_META_IMAGE_ID,
	    IMG_ID_SIZE);
	h->file_size = get_le64(b + IMG_HDR_FILE_SIZE);
	h->data_off = get_le64(b + IMG_HDR_DATA_OFF);
	h->data_size = get_le64(b + IMG_HDR_DATA_SIZE);
	if (h->data_off > h->file_size || h->data_size > h->file_size -
	    h->data_off)
		return 1;
	return 0;
}

/* STORE/NAME/<the manifest's memory file>, or NULL without one. */
static char *
image_path(const struct store *s, const char *name, const json_t *m)
{
	const json_t *mem;
	const char *file = MANIFEST_MEMORY_FILE;

	if (m != NULL) {
		mem = json_object_get(m, MF_MEMORY);
		if (!json_is_object(mem))
			return NULL;
		file = json_str(mem, MF_MEM_PATH);
		if (file == NULL || *file == '\0' || *file == '.' ||
		    strchr(file, '/') != NULL)
			return NULL;
	}
	return xasprintf("%s/%s/%s", store_path(s), name, file);
}

static int
packs_dir_make(const struct store *s, const char *dir, struct err *e)
{
	struct stat st;

	if (mkdir(dir, 0700) == 0)
		return fsync_dir(store_path(s), e);
	if (errno != EEXIST)
		return err_sys(e, ERR_FAIL, "cannot create '%s'", dir);
	if (lstat(dir, &st) < 0)
		return err_sys(e, ERR_FAIL, "cannot stat '%s'", dir);
	if (!S_ISDIR(st.st_mode))
		return err_set(e, ERR_FAIL, "'%s' is not a directory", dir);
	return 0;
}

int
storepack_keep(struct store *s, const char *name, const json_t *m,
    struct err *e)
{
	struct head h;
	struct stat a, b;
	char hex[HEX_ID + 1], *path, *dir = NULL, *dst = NULL, *tmp = NULL;
	int fd = -1, rc = -1, got;

	if ((path = image_path(s, name, m)) == NULL)
		return 0;
	/*
	 * Nothing (no file, a symbolic link, not a regular file, not an
	 * image of version 2): nothing another image can name.  Any other
	 * failure: what it would keep is unknown, so the checkpoint stays.
	 */
	if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
		if (errno == ENOENT || errno == ELOOP)
			rc = 0;
		else
			err_sys(e, ERR_FAIL, "cannot open '%s'", path);
		goto out;
	}
	if (fstat(fd, &a) < 0) {
		err_sys(e, ERR_FAIL, "cannot stat '%s'", path);
		goto out;
	}
	if (!S_ISREG(a.st_mode)) {
		rc = 0;
		goto out;
	}
	if ((got = read_head(fd, &h)) != 0) {
		if (got > 0)
			rc = 0;
		else
			err_sys(e, ERR_FAIL, "cannot read '%s'", path);
		goto out;
	}
	img_id_hex(h.id, hex);
	dir = xasprintf("%s/%s", store_path(s), STOREPACK_DIR);
	dst = xasprintf("%s/%s.img", dir, hex);
	if (packs_dir_make(s, dir, e) < 0)
		goto out;
	if (link(path, dst) < 0) {
		if (errno != EEXIST) {
			err_sys(e, ERR_FAIL, "cannot keep '%s' as '%s'", path,
			    dst);
			goto out;
		}
		/*
		 * A killed delete linked it, or another file with this id is
		 * there: a pack the GC may have punched by the references of
		 * another moment.  This image is whole: it takes the name.
		 */
		if (lstat(dst, &b) < 0 || a.st_dev != b.st_dev ||
		    a.st_ino != b.st_ino) {
			tmp = xasprintf("%s/.tmp-%s", dir, hex);
			if ((unlink(tmp) < 0 && errno != ENOENT) ||
			    link(path, tmp) < 0) {
				err_sys(e, ERR_FAIL, "cannot keep '%s' as '%s'",
				    path, tmp);
				goto out;
			}
			if (rename(tmp, dst) < 0) {
				err_sys(e, ERR_FAIL, "cannot keep '%s' as '%s'",
				    path, dst);
				unlink(tmp);
				goto out;
			}
		}
	}
	if (fsync_dir(dir, e) < 0)
		goto out;
	sig_test_hold(STOREPACK_HOLD_ENV, "linked");
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	free(path);
	free(dir);
	free(dst);
	free(tmp);
	return rc;
}

/* ---- GC ------------------------------------------------------------------ */

static void
packs_free(struct pack *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(p[i].r);
	free(p);
}

/*
 * The files STORE/.packs/<32 hex>.img (a stale .tmp-<hex> is removed).
 * 0, or -1 with e filled.
 */
static int
packs_list(const char *dir, struct pack **out, size_t *n, struct err *e)
{
	struct pack *p = NULL;
	struct dirent *de;
	size_t cap = 0;
	DIR *d;

	*out = NULL;
	*n = 0;
	if ((d = opendir(dir)) == NULL) {
		if (errno == ENOENT)
			return 0;
		return err_sys(e, ERR_FAIL, "cannot read '%s'", dir);
	}
	while ((de = readdir(d)) != NULL) {
		/* A storepack_keep() killed before its rename (under the lock
		 * we hold: none is running). */
		if (strncmp(de->d_name, ".tmp-", 5) == 0) {
			if (unlinkat(dirfd(d), de->d_name, 0) < 0 &&
			    errno != ENOENT) {
				err_sys(e, ERR_FAIL, "cannot remove '%s/%s'",
				    dir, de->d_name);
				closedir(d);
				free(p);
				return -1;
			}
			continue;
		}
		if (strlen(de->d_name) != HEX_ID + 4 ||
		    strcmp(de->d_name + HEX_ID, ".img") != 0)
			continue;
		if (*n == cap) {
			cap = cap ? 2 * cap : 16;
			p = xreallocarray(p, cap, sizeof(*p));
		}
		memset(&p[*n], 0, sizeof(p[*n]));
		if (hex_id(de->d_name, p[*n].id) < 0)
			continue;
		memcpy(p[*n].name, de->d_name, HEX_ID + 5);
		(*n)++;
	}
	closedir(d);
	*out = p;
	return 0;
}

static void
range_add(struct pack *p, uint64_t off, uint64_t len)
{
	if (p->n == p->cap) {
		p->cap = p->cap ? 2 * p->cap : 64;
		p->r = xreallocarray(p->r, p->cap, sizeof(*p->r));
	}
	p->r[p->n].off = off;
	p->r[p->n].len = len;
	p->n++;
}

/*
 * The frames image path names in the packs of p[0..n-1], and which pack
 * has the image's own id (a copied checkpoint: kept whole).
 */
static int
note_refs(const char *path, struct pack *p, size_t n, struct err *e)
{
	struct img_reader *r;
	struct img_pack_info pi;
	struct img_chunk_ref cr;
	const struct img_meta *m;
	int64_t *map = NULL;
	uint64_t ci, nc;
	uint32_t k;
	size_t j;

	if ((r = img_open(path, e)) == NULL)
		return -1;
	m = img_meta(r);
	/* A copy of this image under its id: whole, however it got there. */
	for (j = 0; j < n; j++)
		if (memcmp(p[j].id, m->id, IMG_ID_SIZE) == 0)
			p[j].named = p[j].live = 1;
	map = xcalloc(m->npacks + 1, sizeof(*map));
	for (k = 1; k <= m->npacks; k++) {
		map[k] = -1;
		img_pack_info(r, k, &pi);
		if (pi.refs == 0)
			continue;
		for (j = 0; j < n; j++)
			if (memcmp(p[j].id, pi.id, IMG_ID_SIZE) == 0) {
				map[k] = (int64_t)j;
				p[j].named = 1;
			}
	}
	nc = img_nchunks(r);
	for (ci = 0; ci < nc; ci++) {
		img_chunk_ref(r, ci, &cr);
		if (cr.pack != 0 && cr.pack <= m->npacks &&
		    map[cr.pack] >= 0 && cr.size > 0)
			range_add(&p[map[cr.pack]], cr.off, cr.size);
	}
	free(map);
	img_close(r);
	return 0;
}

/* Every image of the store that remains: its references. */
static int
collect_refs(struct store *s, struct pack *p, size_t n, struct err *e)
{
	json_t *all = NULL, *bad = NULL;
	const json_t *m;
	struct stat st;
	char *path;
	size_t i;
	int rc = -1;

	if ((all = store_list(s, &bad, e)) == NULL)
		return -1;
	json_array_foreach(all, i, m) {
		if ((path = image_path(s, json_str(m, MF_NAME), m)) == NULL)
			continue;
		rc = note_refs(path, p, n, e);
		free(path);
		if (rc < 0)
			goto out;
	}
	/* An unreadable manifest's image still names what it names. */
	json_array_foreach(bad, i, m) {
		path = image_path(s, json_str(m, "name"), NULL);
		rc = lstat(path, &st) == 0 ? note_refs(path, p, n, e) : 0;
		free(path);
		if (rc < 0)
			goto out;
	}
	rc = 0;
out:
	json_decref(all);
	json_decref(bad);
	return rc;
}

/*
 * Which packs another process holds open (a lazy restore or an export of
 * the deleted checkpoint reads frames no remaining image names): those
 * are not punched, and what they name is kept too (the holder may not
 * have opened those packs yet).  Processes we may not look at are not
 * seen.
 */
static void
mark_held(const char *dir, struct pack *p, size_t n)
{
	struct dirent *pe, *fe;
	struct stat st;
	char path[64], self[32];
	DIR *pd, *fdd;
	size_t i, want = 0;
	int dfd;

	/* By name under a dirfd: no path to truncate, however long dir. */
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	for (i = 0; i < n; i++) {
		if (dfd >= 0 && fstatat(dfd, p[i].name, &st,
		    AT_SYMLINK_NOFOLLOW) == 0) {
			p[i].dev = st.st_dev;
			p[i].ino = st.st_ino;
			want++;
		} else
			p[i].ino = 0;
	}
	if (dfd >= 0)
		close(dfd);
	if (want == 0 || (pd = opendir("/proc")) == NULL)
		return;
	snprintf(self, sizeof(self), "%ld", (long)getpid());
	while ((pe = readdir(pd)) != NULL) {
		if (pe->d_name[0] < '1' || pe->d_name[0] > '9' ||
		    strcmp(pe->d_name, self) == 0)
			continue;
		if (strlen(pe->d_name) > 20)
			continue;	/* not a pid */
		snprintf(path, sizeof(path), "/proc/%.20s/fd", pe->d_name);
		if ((dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
			continue;
		if ((fdd = fdopendir(dfd)) == NULL) {
			close(dfd);
			continue;
		}
		while ((fe = readdir(fdd)) != NULL) {
			if (fe->d_name[0] == '.' ||
			    fstatat(dfd, fe->d_name, &st, 0) < 0 ||
			    !S_ISREG(st.st_mode))
				continue;
			for (i = 0; i < n; i++)
				if (p[i].ino != 0 && p[i].dev == st.st_dev &&
				    p[i].ino == st.st_ino)
					p[i].held = 1;
		}
		closedir(fdd);
	}
	closedir(pd);
}

/* A held pack names frames as a remaining image does (one hop: a pack's
 * references never lead further).  0, or -1 with e filled. */
static int
held_refs(const char *dir, struct pack *p, size_t n, struct err *e)
{
	char *path;
	size_t i;
	int rc = 0;

	for (i = 0; i < n && rc == 0; i++) {
		if (!p[i].held)
			continue;
		path = xasprintf("%s/%s", dir, p[i].name);
		rc = note_refs(path, p, n, e);
		free(path);
	}
	return rc;
}

static int
range_cmp(const void *a, const void *b)
{
	const struct range *x = a, *y = b;

	return x->off < y->off ? -1 : x->off > y->off;
}

/*
 * Punch the data region of pack file path, all but the ranges images
 * name.  A file with other links (a checkpoint's own image too), or not
 * the image its name says, is left alone.  Adds what it punched to
 * *punched.  0, or -1 with e filled.
 */
static int
punch_pack(const char *path, struct pack *p, uint64_t *punched,
    struct err *e)
{
	struct head h;
	struct stat st;
	uint64_t at, end, lo;
	size_t i;
	int fd, rc = -1;

	fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return err_sys(e, ERR_FAIL, "cannot open '%s'", path);
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1 ||
	    read_head(fd, &h) != 0 || memcmp(h.id, p->id, IMG_ID_SIZE) != 0) {
		rc = 0;
		goto out;
	}
	qsort(p->r, p->n, sizeof(*p->r), range_cmp);
	at = h.data_off;
	end = h.data_off + h.data_size;
	for (i = 0; i <= p->n && at < end; i++) {
		lo = i < p->n ? p->r[i].off : end;
		if (lo > end)
			lo = end;
		if (lo > at) {
			if (fallocate(fd, FALLOC_FL_PUNCH_HOLE |
			    FALLOC_FL_KEEP_SIZE, (off_t)at, (off_t)(lo - at))
			    < 0) {
				/* A file system without holes: keep it all. */
				if (errno == EOPNOTSUPP || errno == ENOSYS)
					break;
				err_sys(e, ERR_FAIL, "cannot punch '%s'", path);
				goto out;
			}
			*punched += lo - at;
		}
		if (i < p->n && p->r[i].off + p->r[i].len > at)
			at = p->r[i].off + p->r[i].len;
	}
	rc = 0;
out:
	close(fd);
	return rc;
}

int
storepack_gc(struct store *s, json_t **report, struct err *e)
{
	struct err le = ERR_INIT;
	struct pack *p = NULL;
	json_t *removed = json_array();
	char *dir, *path;
	uint64_t punched = 0;
	size_t n = 0, i, kept = 0, held = 0;
	int rc = -1, unlinked = 0;

	*report = NULL;
	dir = xasprintf("%s/%s", store_path(s), STOREPACK_DIR);
	if (packs_list(dir, &p, &n, e) < 0)
		goto out;
	if (n > 0 && collect_refs(s, p, n, &le) < 0)
		goto skipped;
	sig_test_hold(STOREPACK_HOLD_ENV, "gc");
	mark_held(dir, p, n);
	if (held_refs(dir, p, n, &le) < 0)
		goto skipped;
	for (i = 0; i < n; i++) {
		path = xasprintf("%s/%s", dir, p[i].name);
		if (!p[i].named) {
			if (unlink(path) < 0 && errno != ENOENT) {
				err_sys(e, ERR_FAIL, "cannot remove '%s'", path);
				free(path);
				goto done;
			}
			unlinked = 1;
			json_array_append_new(removed, json_string(path));
		} else {
			kept++;
			if (p[i].held)
				held++;
			else if (p[i].live)
				;	/* a live image's id: never punched */
			else if (punch_pack(path, &p[i], &punched, e) < 0) {
				free(path);
				goto done;
			}
		}
		free(path);
	}
	if (unlinked && fsync_dir(dir, e) < 0)
		goto done;
	rc = 0;
done:
	*report = json_pack("{s:I, s:O, s:I, s:I}", "packs", (json_int_t)kept,
	    "removed", removed, "punched_bytes", (json_int_t)punched, "held",
	    (json_int_t)held);
	goto out;
skipped:
	/* What they name is unknown: nothing may go. */
	*report = json_pack("{s:i, s:O, s:i, s:s}", "packs", (int)n,
	    "removed", removed, "punched_bytes", 0, "skipped", le.msg);
	rc = 0;
out:
	packs_free(p, n);
	json_decref(removed);
	free(dir);
	return rc;
}

/* ---- sharing ------------------------------------------------------------- */

json_t *
storepack_sharing(const struct img_reader *r)
{
	const struct img_meta *m = img_meta(r);
	struct img_pack_info pi;
	struct img_chunk_ref cr;
	json_t *packs = json_array();
	uint64_t *bytes, ci, nc = img_nchunks(r);
	char hex[HEX_ID + 1];
	uint32_t k;

	bytes = xcalloc(m->npacks + 1, sizeof(*bytes));
	for (ci = 0; ci < nc; ci++) {
		img_chunk_ref(r, ci, &cr);
		if (cr.pack != 0 && cr.pack <= m->npacks)
			bytes[cr.pack] += cr.size;
	}
	for (k = 1; k <= m->npacks; k++) {
		img_pack_info(r, k, &pi);
		if (pi.refs == 0)
			continue;
		img_id_hex(pi.id, hex);
		json_array_append_new(packs, json_pack("{s:s, s:s, s:I, s:I}",
		    "hint", pi.hint, "id", hex, "chunks", (json_int_t)pi.refs,
		    "bytes", (json_int_t)bytes[k]));
	}
	free(bytes);
	/* Version 1: every frame is its own. */
	return json_pack("{s:I, s:I, s:I, s:o}",
	    "own_bytes", (json_int_t)(m->version >= IMG_VERSION_2 ?
	    m->own_bytes : m->data_bytes),
	    "shared_bytes", (json_int_t)m->shared_bytes,
	    "shared_chunks", (json_int_t)m->shared_chunks,
	    "packs", packs);
}
