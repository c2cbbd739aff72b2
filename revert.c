/*
 * revert.c - revert_run() (revert.h): check every disk of the checkpoint,
 * then put a fresh overlay on its state at the VM's own path, keeping
 * the disk it replaces as a named layer.
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
#include "revert.h"
#include "sig.h"
#include "store.h"
#include "util.h"

#include "banned.h"

#define CHAIN_MAX 256

struct rdisk {
	const char *device;	/* borrowed from the manifest */
	const char *path;	/* P */
	const char *state;	/* S */
	char *backing;		/* T's backing name */
	char *tmp;		/* T */
	char *keep;		/* K, or NULL: old P goes (discard) */
	char *note;		/* why old P stays under discard */
	uint64_t vsize;
	int exists;		/* P exists */
	int already;		/* P is an untouched overlay on S */
};

static int
same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	return lstat(a, &sa) == 0 && lstat(b, &sb) == 0 &&
	    sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static void
test_hold(const char *step)
{
	sig_test_hold("SNAPCTL_TEST_HOLD_REVERT", step);
}

/* A process (not this one) holding the file st open: its pid, or 0. */
static long
holder(const struct stat *want, char comm[64])
{
	struct dirent *pe, *fe;
	struct stat st;
	char path[300], self[32];
	DIR *pd, *fdd;
	long found = 0;
	ssize_t n;
	int dfd, fd;

	if ((pd = opendir("/proc")) == NULL)
		return 0;
	snprintf(self, sizeof(self), "%ld", (long)getpid());
	while (found == 0 && (pe = readdir(pd)) != NULL) {
		if (pe->d_name[0] < '1' || pe->d_name[0] > '9' ||
		    strspn(pe->d_name, "0123456789") != strlen(pe->d_name) ||
		    strcmp(pe->d_name, self) == 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%s/fd", pe->d_name);
		if ((dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
			continue;
		if ((fdd = fdopendir(dfd)) == NULL) {
			close(dfd);
			continue;
		}
		while ((fe = readdir(fdd)) != NULL)
			if (fe->d_name[0] != '.' &&
			    fstatat(dfd, fe->d_name, &st, 0) == 0 &&
			    st.st_dev == want->st_dev &&
			    st.st_ino == want->st_ino) {
				found = strtol(pe->d_name, NULL, 10);
				break;
			}
		closedir(fdd);
	}
	closedir(pd);
	snprintf(comm, 64, "?");
	if (found != 0) {
		snprintf(path, sizeof(path), "/proc/%ld/comm", found);
		if ((fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0) {
			n = read(fd, comm, 63);
			close(fd);
			if (n > 0) {
				comm[n] = '\0';
				comm[strcspn(comm, "\n")] = '\0';
			}
		}
	}
	return found;
}

/* S is what the checkpoint recorded, and its chain is whole. */
static int
check_state(const json_t *d, struct rdisk *rd, struct err *e)
{
	const json_t *dev = json_object_get(d, "file_dev");
	const json_t *ino = json_object_get(d, "file_ino");
	struct diskfile df;
	struct stat st;
	uint8_t h[32];
	char *cur;
	int i, fd, rc = -1;

	if (diskfile_check(d, e) < 0)
		return -1;
	if (stat(rd->state, &st) < 0)
		return err_sys(e, ERR_MISMATCH, "disk '%s': cannot look at "
		    "'%s'", rd->device, rd->state);
	if (json_is_integer(dev) && json_is_integer(ino) &&
	    ((uint64_t)json_integer_value(dev) != (uint64_t)st.st_dev ||
	    (uint64_t)json_integer_value(ino) != (uint64_t)st.st_ino))
		return err_set(e, ERR_MISMATCH, "disk '%s': '%s' is not the "
		    "file the checkpoint made (another device or inode): it "
		    "was replaced", rd->device, rd->state);
	fd = open(rd->state, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || pread_full(fd, h, sizeof(h), 0) != (ssize_t)sizeof(h) ||
	    get_be32(h) != 0x514649fb) {
		if (fd >= 0)
			close(fd);
		return err_set(e, ERR_MISMATCH, "disk '%s': '%s' is not a "
		    "qcow2 image", rd->device, rd->state);
	}
	close(fd);
	rd->vsize = get_be64(h + 24);
	cur = xstrdup(rd->state);
	for (i = 0; i < CHAIN_MAX; i++) {
		if (diskfile_probe(cur, &df, e) < 0) {
			err_clear(e);
			err_set(e, ERR_MISMATCH, "disk '%s': '%s', in the "
			    "backing chain of '%s', is missing or unreadable: "
			    "the chain is not as the checkpoint recorded",
			    rd->device, cur, rd->state);
			goto out;
		}
		free(cur);
		cur = df.backing != NULL ? xstrdup(df.backing) : NULL;
		diskfile_release(&df);
		if (cur == NULL) {
			rc = 0;
			goto out;
		}
	}
	err_set(e, ERR_MISMATCH, "disk '%s': the backing chain of '%s' is "
	    "longer than %d files", rd->device, rd->state, CHAIN_MAX);
out:
	free(cur);
	return rc;
}

/*
 * 1 if snapctl made the image at p: its header is diskswap's and its
 * backing file is a checkpoint's state of the same path p.
 */
static int
made_by_us(const char *p, const json_t *all)
{
	const json_t *m, *d;
	char *b = diskswap_overlay_ours(p), *dir, *full;
	size_t i, j;
	int ours = 0;

	if (b == NULL)
		return 0;
	dir = path_dirname(p);
	full = b[0] == '/' ? xstrdup(b) : xasprintf("%s/%s", dir, b);
	json_array_foreach(all, i, m)
		json_array_foreach(json_object_get(m, "disks"), j, d)
			if (json_str(d, "vm_path") != NULL &&
			    json_str(d, "file") != NULL &&
			    strcmp(json_str(d, "vm_path"), p) == 0 &&
			    diskfile_same(json_str(d, "file"), full))
				ours = 1;
	free(full);
	free(dir);
	free(b);
	return ours;
}

/* K: a pre-revert name that is a link of P already, else the first free. */
static char *
keep_name(const char *p, const char *name)
{
	char *stem = diskfile_stem(p), *dir = path_dirname(p), *c;
	char *first = NULL;
	struct stat st;
	int i;

	for (i = 1; i < 1000; i++) {
		c = i == 1 ? xasprintf("%s/%s.pre-revert-%s.qcow2", dir, stem,
		    name) : xasprintf("%s/%s.pre-revert-%s-%d.qcow2", dir,
		    stem, name, i);
		if (lstat(c, &st) < 0) {
			if (first == NULL)
				first = c;
			else
				free(c);
			break;
		}
		if (same_file(c, p)) {
			free(first);
			first = c;
			break;
		}
		free(c);
	}
	free(stem);
	free(dir);
	return first;
}

/* Every check of one disk; fills rd. */
static int
plan_disk(const struct revert_opts *o, const json_t *d, const json_t *all,
    struct rdisk *rd, struct err *e)
{
	struct stat st;
	char comm[64], *pdir, *sdir;
	long pid;

	rd->device = json_str(d, "device") ? json_str(d, "device") : "?";
	rd->path = json_str(d, "vm_path");
	rd->state = json_str(d, "file");
	if (rd->path == NULL || rd->state == NULL)
		return err_set(e, ERR_FAIL, "disk '%s': checkpoint '%s' does "
		    "not record the VM's own path of it (taken before the disk "
		    "swap): restore it instead", rd->device, o->name);
	if (check_state(d, rd, e) < 0)
		return -1;
	pdir = path_dirname(rd->path);
	sdir = path_dirname(rd->state);
	rd->backing = xstrdup(strcmp(pdir, sdir) == 0 ? path_base(rd->state) :
	    rd->state);
	rd->tmp = xasprintf("%s/.%s.revert-%s", pdir, path_base(rd->path),
	    o->name);
	free(pdir);
	free(sdir);
	if (lstat(rd->path, &st) == 0) {
		if (!S_ISREG(st.st_mode))
			return err_set(e, ERR_FAIL, "disk '%s': '%s' is not a "
			    "regular file: revert renames a new overlay over "
			    "it", rd->device, rd->path);
		rd->exists = 1;
		if ((pid = holder(&st, comm)) != 0)
			return err_set(e, ERR_MISMATCH, "disk '%s': '%s' is "
			    "open by process %ld (%s): stop the VM first",
			    rd->device, rd->path, pid, comm);
	} else if (errno != ENOENT)
		return err_sys(e, ERR_FAIL, "disk '%s': cannot look at '%s'",
		    rd->device, rd->path);
	if (lstat(rd->tmp, &st) == 0 && (!S_ISREG(st.st_mode) ||
	    !diskswap_overlay_pristine(rd->tmp, rd->backing)))
		return err_set(e, ERR_FAIL, "disk '%s': '%s' exists and is not "
		    "an untouched overlay of snapctl's: move it away",
		    rd->device, rd->tmp);
	rd->already = rd->exists && diskswap_overlay_pristine(rd->path,
	    rd->backing);
	if (rd->already || !rd->exists)
		return 0;
	if (o->discard && made_by_us(rd->path, all))
		return 0;
	if (o->discard)
		rd->note = xasprintf("kept: snapctl did not make '%s'",
		    rd->path);
	rd->keep = keep_name(rd->path, o->name);
	if (rd->keep == NULL)
		return err_set(e, ERR_FAIL, "disk '%s': no free name for the "
		    "pre-revert layer of '%s'", rd->device, rd->path);
	return 0;
}

/* Step 0: QEMU's hidden names of P (".<P's name>.snapctl-*" links). */
static void
drop_qemu_names(const char *p)
{
	char *dir = path_dirname(p), *pfx, *f;
	struct dirent *de;
	size_t n;
	DIR *d;

	pfx = xasprintf(".%s%s", path_base(p), DISKSWAP_TMP_INFIX);
	n = strlen(pfx);
	if ((d = opendir(dir)) != NULL) {
		while ((de = readdir(d)) != NULL) {
			if (strncmp(de->d_name, pfx, n) != 0)
				continue;
			f = xasprintf("%s/%s", dir, de->d_name);
			if (same_file(f, p))
				unlink(f);
			free(f);
		}
		closedir(d);
	}
	free(pfx);
	free(dir);
}

/* Steps 0 to 3 of one disk. */
static int
revert_disk(struct rdisk *rd, struct err *e)
{
	struct stat st;

	if (rd->already)
		return 0;
	if (rd->exists)
		drop_qemu_names(rd->path);
	if (lstat(rd->tmp, &st) == 0 && unlink(rd->tmp) < 0)
		return err_sys(e, ERR_FAIL, "disk '%s': cannot remove '%s'",
		    rd->device, rd->tmp);
	if (diskswap_overlay_write(rd->tmp, rd->backing, rd->vsize, e) < 0 ||
	    fsync_parent_dir(rd->path, e) < 0)
		goto fail;
	test_hold("written");
	if (rd->exists && rd->keep != NULL) {
		if (!same_file(rd->keep, rd->path) &&
		    link(rd->path, rd->keep) < 0) {
			err_sys(e, ERR_FAIL, "cannot link '%s' to '%s'",
			    rd->path, rd->keep);
			goto fail;
		}
		(void)chmod(rd->keep, 0600);
		if (fsync_parent_dir(rd->path, e) < 0)
			goto fail;
	}
	test_hold("linked");
	if (rename(rd->tmp, rd->path) < 0) {
		err_sys(e, ERR_FAIL, "cannot rename '%s' to '%s'", rd->tmp,
		    rd->path);
		goto fail;
	}
	if (fsync_parent_dir(rd->path, e) < 0)
		goto fail;
	test_hold("renamed");
	return 0;
fail:
	err_prefix(e, "disk '%s': ", rd->device);
	return -1;
}

static json_t *
report(const struct revert_opts *o, const struct rdisk *rd, size_t n)
{
	json_t *disks = json_array();
	size_t i;

	for (i = 0; i < n; i++)
		json_array_append_new(disks, json_pack("{s:s, s:s, s:s, s:s, "
		    "s:s?, s:b, s:b, s:s?}", "device", rd[i].device, "path",
		    rd[i].path, "state", rd[i].state, "backing",
		    rd[i].backing, "kept", rd[i].keep, "discarded",
		    rd[i].exists && !rd[i].already && rd[i].keep == NULL,
		    "already", rd[i].already, "note", rd[i].note));
	return json_pack("{s:s, s:b, s:o}", "name", o->name, "dry_run",
	    o->dry_run, "disks", disks);
}

int
revert_run(const struct revert_opts *o, json_t **out, struct err *e)
{
	struct store *st = NULL;
	json_t *m = NULL, *all = NULL, *note;
	struct rdisk *rd = NULL;
	const json_t *d;
	size_t i, n = 0;
	int rc = -1;

	*out = NULL;
	if (store_name_check(o->name, e) < 0)
		return -1;
	if ((st = store_open(o->store, 0, e)) == NULL)
		return -1;
	if (!o->dry_run && store_lock(st, o->lock_wait_ms, e) < 0)
		goto out;
	if ((m = store_manifest_read(st, o->name, e)) == NULL)
		goto out;
	note = store_note_read(st, e);
	if (note != NULL || err_isset(e)) {
		json_decref(note);
		if (!err_isset(e))
			err_set(e, ERR_FAIL, "store '%s' has a recovery note "
			    "(an interrupted checkpoint): run 'snapctl -d %s "
			    "recover' first", store_path(st), store_path(st));
		goto out;
	}
	if ((all = store_list(st, NULL, e)) == NULL)
		goto out;
	n = json_array_size(json_object_get(m, "disks"));
	if (n == 0) {
		err_set(e, ERR_FAIL, "checkpoint '%s' holds no disk", o->name);
		goto out;
	}
	rd = xcalloc(n, sizeof(*rd));
	json_array_foreach(json_object_get(m, "disks"), i, d)
		if (plan_disk(o, d, all, &rd[i], e) < 0)
			goto out;
	if (sig_interrupted(e))
		goto out;
	if (!o->dry_run) {
		for (i = 0; i < n; i++)
			if (revert_disk(&rd[i], e) < 0)
				goto out;
		/* Best effort: without it the parent is the newest. */
		for (i = 0; i < n; i++)
			(void)store_revert_write(st, rd[i].path, o->name, NULL);
	}
	*out = report(o, rd, n);
	rc = 0;
out:
	for (i = 0; rd != NULL && i < n; i++) {
		free(rd[i].backing);
		free(rd[i].tmp);
		free(rd[i].keep);
		free(rd[i].note);
	}
	free(rd);
	json_decref(all);
	json_decref(m);
	store_close(st);
	return rc;
}
