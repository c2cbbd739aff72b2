/*
 * restoredir.c - restore overlays (restoredir.h): the directory they go
 * to, their records in STORE/.restores, and the sweep that hands the
 * recorded ones to diskgc.c, which decides what may go and removes it.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "diskfile.h"
#include "diskgc.h"
#include "restoredir.h"
#include "store.h"
#include "util.h"

#define RECORD_SUFFIX ".json"
#define NAME_TRIES 99

/* path as an absolute, symlink-free name. */
static char *
abs_dir(const char *path, struct err *e)
{
	char buf[PATH_MAX];

	if (realpath(path, buf) == NULL) {
		err_sys(e, ERR_FAIL, "cannot open directory '%s'", path);
		return NULL;
	}
	return xstrdup(buf);
}

/* STORE/.restores, made 0700 if missing; absolute. */
static char *
records_dir(const char *store, struct err *e)
{
	struct stat st;
	char *s, *d;

	if ((s = abs_dir(store, e)) == NULL)
		return NULL;
	d = xasprintf("%s/%s", s, RESTOREDIR_NAME);
	free(s);
	if (mkdir(d, 0700) < 0 && errno != EEXIST) {
		err_sys(e, ERR_FAIL, "cannot create '%s'", d);
		goto fail;
	}
	if (lstat(d, &st) < 0) {
		err_sys(e, ERR_FAIL, "cannot open '%s'", d);
		goto fail;
	}
	if (!S_ISDIR(st.st_mode)) {
		err_set(e, ERR_FAIL, "'%s' is not a directory: refused", d);
		goto fail;
	}
	if ((st.st_mode & 077) != 0 && chmod(d, 0700) < 0) {
		err_sys(e, ERR_FAIL, "cannot make '%s' 0700", d);
		goto fail;
	}
	return d;
fail:
	free(d);
	return NULL;
}

char *
restoredir_dir(const char *store, const char *dir, struct err *e)
{
	struct stat st;
	char *rd;

	if ((rd = records_dir(store, e)) == NULL)
		return NULL;
	if (dir == NULL)
		return rd;
	free(rd);
	if (stat(dir, &st) < 0) {
		err_sys(e, ERR_FAIL, "--overlay-dir '%s'", dir);
		return NULL;
	}
	if (!S_ISDIR(st.st_mode)) {
		err_set(e, ERR_FAIL, "--overlay-dir '%s' is not a directory",
		    dir);
		return NULL;
	}
	return abs_dir(dir, e);
}

/*
 * Write j to path, fsynced, never over an existing file.  0; 1 if path
 * exists; -1 with e filled.
 */
static int
record_write(const char *path, const json_t *j, int replace, struct err *e)
{
	char *tmp = NULL, *text = NULL, *dir = NULL;
	int fd = -1, rc = -1;

	text = json_dumps(j, JSON_INDENT(2) | JSON_ENSURE_ASCII);
	if (text == NULL) {
		err_set(e, ERR_FAIL, "cannot encode '%s'", path);
		goto out;
	}
	tmp = xasprintf("%s.tmp-%ld", path, (long)getpid());
	(void)unlink(tmp);	/* ours, from a failed attempt */
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
	    0600);
	if (fd < 0) {
		err_sys(e, ERR_FAIL, "cannot create '%s'", tmp);
		goto out;
	}
	if (write_full(fd, text, strlen(text)) < 0 ||
	    write_full(fd, "\n", 1) < 0 || fsync(fd) < 0) {
		err_sys(e, ERR_FAIL, "cannot write '%s'", tmp);
		goto out;
	}
	close(fd);
	fd = -1;
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, replace ? 0 :
	    RENAME_NOREPLACE) < 0) {
		if (errno == EEXIST) {
			rc = 1;
			goto out;
		}
		err_sys(e, ERR_FAIL, "cannot rename '%s'", tmp);
		goto out;
	}
	free(tmp);
	tmp = NULL;
	dir = path_dirname(path);
	if (fsync_dir(dir, e) < 0)
		goto out;
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	if (tmp != NULL)
		(void)unlink(tmp);
	free(tmp);
	free(dir);
	free(text);
	return rc;
}

int
restoredir_reserve(const char *store, const char *dir, const char *file,
    const char *stamp, const char *checkpoint, const char *device,
    struct restoredir_slot *slot, struct err *e)
{
	struct stat st;
	char created[32], *rd = NULL, *stem = NULL, *name = NULL;
	char *ov = NULL, *rec = NULL;
	uint64_t start = 0;
	json_t *j = NULL;
	int i, w, rc = -1;

	if ((rd = records_dir(store, e)) == NULL)
		goto out;
	stem = diskfile_stem(file);
	format_utc(now_real(), created);
	(void)proc_start_ticks(getpid(), &start);
	for (i = 1; i <= NAME_TRIES; i++) {
		free(name);
		free(ov);
		free(rec);
		name = i == 1 ? xasprintf("%s.restore-%s.qcow2", stem, stamp) :
		    xasprintf("%s.restore-%s-%d.qcow2", stem, stamp, i);
		ov = xasprintf("%s/%s", dir, name);
		rec = xasprintf("%s/%s" RECORD_SUFFIX, rd, name);
		if (lstat(ov, &st) == 0 || errno != ENOENT)
			continue;
		json_decref(j);
		j = json_pack("{s:i, s:s, s:s, s:s, s:s, s:{s:I, s:I}}",
		    "snapctl_restore", 1, "overlay", ov, "checkpoint",
		    checkpoint, "device", device, "created", created, "owner",
		    "pid", (json_int_t)getpid(), "start", (json_int_t)start);
		if ((w = record_write(rec, j, 0, e)) < 0)
			goto out;
		if (w == 0)
			break;
	}
	if (i > NAME_TRIES) {
		err_set(e, ERR_FAIL, "cannot find a free name for the overlay "
		    "of disk '%s' in '%s'", device, dir);
		goto out;
	}
	slot->overlay = ov;
	slot->record = rec;
	ov = rec = NULL;
	rc = 0;
out:
	json_decref(j);
	free(rd);
	free(stem);
	free(name);
	free(ov);
	free(rec);
	return rc;
}

/* Read a record: a JSON object with "overlay", never through a symlink. */
static json_t *
record_read(const char *path)
{
	json_error_t jerr;
	json_t *j;
	FILE *f;
	int fd;

	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	if ((f = fdopen(fd, "r")) == NULL) {
		close(fd);
		return NULL;
	}
	j = json_loadf(f, 0, &jerr);
	fclose(f);
	if (j != NULL && (!json_is_object(j) || json_str(j, "overlay") ==
	    NULL || json_str(j, "overlay")[0] != '/')) {
		json_decref(j);
		j = NULL;
	}
	return j;
}

int
restoredir_commit(const struct restoredir_slot *slot, struct err *e)
{
	struct stat st;
	json_t *j;
	int rc = -1;

	if (slot->record == NULL)
		return 0;
	if ((j = record_read(slot->record)) == NULL)
		return err_set(e, ERR_FAIL, "cannot read '%s'", slot->record);
	if (lstat(slot->overlay, &st) < 0 || !S_ISREG(st.st_mode)) {
		(void)unlink(slot->record);
		rc = 0;
		goto out;
	}
	json_object_del(j, "owner");
	json_object_set_new(j, "dev", json_integer((json_int_t)st.st_dev));
	json_object_set_new(j, "ino", json_integer((json_int_t)st.st_ino));
	rc = record_write(slot->record, j, 1, e) < 0 ? -1 : 0;
out:
	json_decref(j);
	return rc;
}

void
restoredir_drop(struct restoredir_slot *slot)
{
	if (slot->record != NULL)
		(void)unlink(slot->record);
	restoredir_slot_release(slot);
}

void
restoredir_slot_release(struct restoredir_slot *slot)
{
	free(slot->overlay);
	free(slot->record);
	slot->overlay = slot->record = NULL;
}

/* 1 if id ({"dev", "ino"}) is st's file. */
static int
same_id(const json_t *id, const struct stat *st)
{
	const json_t *dev = json_object_get(id, "dev");
	const json_t *ino = json_object_get(id, "ino");

	return json_is_integer(dev) && json_is_integer(ino) &&
	    (uint64_t)json_integer_value(dev) == (uint64_t)st->st_dev &&
	    (uint64_t)json_integer_value(ino) == (uint64_t)st->st_ino;
}

/* Follow one record (restoredir_follow_swap()): 1 if it was path's. */
static int
follow_one(const char *rec, const char *path, const char *tmp,
    struct err *e)
{
	struct stat cur, nst;
	json_t *j;
	int rc = 0;

	if ((j = record_read(rec)) == NULL)
		return 0;
	if (strcmp(json_str(j, "overlay"), path) != 0 ||
	    json_object_get(j, "owner") != NULL ||
	    lstat(path, &cur) < 0 || !S_ISREG(cur.st_mode) ||
	    lstat(tmp, &nst) < 0 || !S_ISREG(nst.st_mode))
		goto out;
	/* Only a record that proves the file at path now may vouch for
	 * the file that replaces it. */
	if (!same_id(j, &cur) && !same_id(json_object_get(j, "swap"), &cur))
		goto out;
	json_object_set_new(j, "dev", json_integer((json_int_t)cur.st_dev));
	json_object_set_new(j, "ino", json_integer((json_int_t)cur.st_ino));
	json_object_set_new(j, "swap", json_pack("{s:I, s:I}", "dev",
	    (json_int_t)nst.st_dev, "ino", (json_int_t)nst.st_ino));
	rc = record_write(rec, j, 1, e) < 0 ? -1 : 1;
out:
	json_decref(j);
	return rc;
}

int
restoredir_follow_swap(const char *store, const char *path,
    const char *tmp, struct err *e)
{
	char *s = NULL, *dir = path_dirname(path), *rec[2] = { NULL, NULL };
	const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	const char *dbase = strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir;
	size_t i;
	int rc = 0;

	if (store != NULL && (s = abs_dir(store, NULL)) != NULL)
		rec[0] = xasprintf("%s/%s/%s" RECORD_SUFFIX, s,
		    RESTOREDIR_NAME, base);
	/* An overlay in some store's .restores: that store's record. */
	if (strcmp(dbase, RESTOREDIR_NAME) == 0)
		rec[1] = xasprintf("%s/%s" RECORD_SUFFIX, dir, base);
	if (rec[0] != NULL && rec[1] != NULL && strcmp(rec[0], rec[1]) == 0) {
		free(rec[1]);
		rec[1] = NULL;
	}
	for (i = 0; i < 2 && rc == 0; i++)
		if (rec[i] != NULL)
			rc = follow_one(rec[i], path, tmp, e);
	free(rec[0]);
	free(rec[1]);
	free(dir);
	free(s);
	return rc < 0 ? -1 : 0;
}

/* ---- the sweep ------------------------------------------------------------ */

static void
kept(struct restoredir_gc *g, const char *file, const char *checkpoint,
    const char *why)
{
	json_array_append_new(g->kept, json_pack("{s:s, s:s?, s:b, s:[s]}",
	    "file", file, "checkpoint", checkpoint, "removed", 0, "reasons",
	    why));
}

/* 1 while the record's owner (a restoring snapctl) still runs. */
static int
owner_alive(const json_t *j, pid_t *pid)
{
	const json_t *o = json_object_get(j, "owner");
	uint64_t now;
	json_int_t p, st;

	if (!json_is_object(o))
		return 0;
	p = json_integer_value(json_object_get(o, "pid"));
	st = json_integer_value(json_object_get(o, "start"));
	*pid = (pid_t)p;
	return p > 0 && proc_start_ticks((pid_t)p, &now) == 0 &&
	    now == (uint64_t)st;
}

/* One record: decide what collect() can, hand the rest to diskgc. */
static void
collect_one(struct restoredir_gc *g, const char *rd, const char *fname,
    const char *unreadable)
{
	char *rec = xasprintf("%s/%s", rd, fname), *dir = NULL, why[300];
	const char *ov, *ck;
	struct stat st;
	json_int_t dev, ino;
	int proven;
	json_t *j;
	pid_t pid = 0;

	if ((j = record_read(rec)) == NULL) {
		kept(g, rec, NULL, "an unreadable record");
		goto out;
	}
	ov = json_str(j, "overlay");
	ck = json_str(j, "checkpoint");
	/* Before a look at the file: once its owner is gone, QEMU has it. */
	if (owner_alive(j, &pid)) {
		snprintf(why, sizeof(why), "a restore in progress (snapctl pid "
		    "%ld)", (long)pid);
		kept(g, ov, ck, why);
		goto out;
	}
	if (lstat(ov, &st) < 0 || !S_ISREG(st.st_mode)) {
		json_array_append_new(g->dropped, json_string(rec));
		goto out;
	}
	dev = json_integer_value(json_object_get(j, "dev"));
	ino = json_integer_value(json_object_get(j, "ino"));
	proven = json_is_integer(json_object_get(j, "ino"));
	/* A checkpoint's disk swap renamed its new overlay over the path
	 * (restoredir_follow_swap()): that file is snapctl's too. */
	if (proven && same_id(json_object_get(j, "swap"), &st)) {
		dev = (json_int_t)st.st_dev;
		ino = (json_int_t)st.st_ino;
	}
	if (proven && ((uint64_t)dev != (uint64_t)st.st_dev ||
	    (uint64_t)ino != (uint64_t)st.st_ino)) {
		/* Another file under that name now: not ours. */
		json_array_append_new(g->dropped, json_string(rec));
		kept(g, ov, ck, "not created by snapctl (another file than "
		    "recorded)");
		goto out;
	}
	dir = path_dirname(ov);
	if (!proven && strcmp(dir, rd) != 0) {
		/* Killed before it recorded the inode: only snapctl's own
		 * directory vouches for the file. */
		json_array_append_new(g->dropped, json_string(rec));
		kept(g, ov, ck, "snapctl cannot prove it made it (its restore "
		    "was killed)");
		goto out;
	}
	json_array_append_new(g->records, json_pack("{s:s, s:s?, s:s}",
	    "file", ov, "checkpoint", ck, "record", rec));
	if (unreadable != NULL) {
		snprintf(why, sizeof(why), "checkpoint '%s' cannot be read, "
		    "and may name it", unreadable);
		json_array_append_new(g->files, json_pack("{s:s, s:b}",
		    "file", ov, "candidate", 0));
		kept(g, ov, ck, why);
		goto out;
	}
	json_array_append_new(g->files, json_pack("{s:s, s:b, s:I, s:I}",
	    "file", ov, "candidate", 1,
	    "dev", proven ? dev : (json_int_t)st.st_dev,
	    "ino", proven ? ino : (json_int_t)st.st_ino));
out:
	json_decref(j);
	free(dir);
	free(rec);
}

static int
in_names(const json_t *names, const char *name)
{
	const json_t *v;
	size_t i;

	json_array_foreach(names, i, v)
		if (name != NULL && json_is_string(v) &&
		    strcmp(json_string_value(v), name) == 0)
			return 1;
	return 0;
}

int
restoredir_collect(const char *store, const json_t *bad, const json_t *gone,
    struct restoredir_gc *g, struct err *e)
{
	const char *unreadable = NULL;
	struct dirent *de;
	const json_t *b;
	char *s = NULL, *rd = NULL;
	size_t n, i;
	DIR *d = NULL;
	int rc = -1;

	g->files = json_array();
	g->records = json_array();
	g->kept = json_array();
	g->dropped = json_array();
	json_array_foreach(bad, i, b)
		if (unreadable == NULL && !in_names(gone, json_str(b, "name")))
			unreadable = json_str(b, "name");
	if ((s = abs_dir(store, e)) == NULL)
		goto out;
	rd = xasprintf("%s/%s", s, RESTOREDIR_NAME);
	if ((d = opendir(rd)) == NULL) {
		if (errno == ENOENT)
			rc = 0;
		else
			err_sys(e, ERR_FAIL, "cannot read '%s'", rd);
		goto out;
	}
	while ((de = readdir(d)) != NULL) {
		n = strlen(de->d_name);
		if (de->d_name[0] == '.' || n <= strlen(RECORD_SUFFIX) ||
		    strcmp(de->d_name + n - strlen(RECORD_SUFFIX),
		    RECORD_SUFFIX) != 0)
			continue;
		collect_one(g, rd, de->d_name, unreadable);
	}
	rc = 0;
out:
	if (d != NULL)
		closedir(d);
	free(rd);
	free(s);
	return rc;
}

void
restoredir_settle(struct restoredir_gc *g, json_t *disks, json_t **restores,
    const json_t *only_gone, int dry_run)
{
	const json_t *r = NULL, *k;
	json_t *d;
	size_t i, j;

	*restores = json_array();
	for (i = 0; disks != NULL && i < json_array_size(disks);) {
		d = json_array_get(disks, i);
		json_array_foreach(g->records, j, r)
			if (strcmp(json_str(r, "file"), json_str(d, "file")) == 0)
				break;
		if (j == json_array_size(g->records)) {
			i++;
			continue;
		}
		json_object_set_new(d, "checkpoint", json_string(json_str(r,
		    "checkpoint")));
		if (json_is_true(json_object_get(d, "removed")) && !dry_run)
			(void)unlink(json_str(r, "record"));
		if (json_is_true(json_object_get(d, "removed")) ||
		    only_gone == NULL || in_names(only_gone, json_str(r,
		    "checkpoint")))
			json_array_append(*restores, d);
		json_array_remove(disks, i);
	}
	json_array_foreach(g->kept, i, k)
		if (only_gone == NULL || in_names(only_gone, json_str(k,
		    "checkpoint")))
			json_array_append(*restores, (json_t *)k);
	json_array_foreach(g->dropped, i, k)
		if (!dry_run)
			(void)unlink(json_string_value(k));
}

void
restoredir_gc_release(struct restoredir_gc *g)
{
	json_decref(g->files);
	json_decref(g->records);
	json_decref(g->kept);
	json_decref(g->dropped);
	g->files = g->records = g->kept = g->dropped = NULL;
}

int
restoredir_sweep(const char *store, int dry_run, json_t **report,
    int *unseen, struct err *e)
{
	struct restoredir_gc g = RESTOREDIR_GC_INIT;
	struct diskgc_opts go = DISKGC_OPTS_INIT;
	struct store *st = NULL;
	json_t *all = NULL, *bad = NULL, *none = json_array(), *disks = NULL;
	int rc = -1;

	*report = NULL;
	*unseen = 0;
	if ((st = store_open(store, 0, e)) == NULL)
		goto out;
	if ((all = store_list(st, &bad, e)) == NULL)
		goto out;
	if (restoredir_collect(store, bad, none, &g, e) < 0)
		goto out;
	go.all = all;
	go.gone = none;
	go.restores = g.files;
	go.dry_run = dry_run;
	rc = json_array_size(g.files) > 0 ? diskgc_run(&go, &disks, unseen,
	    e) : 0;
	restoredir_settle(&g, disks, report, NULL, dry_run);
out:
	restoredir_gc_release(&g);
	json_decref(disks);
	json_decref(all);
	json_decref(bad);
	json_decref(none);
	store_close(st);
	return rc;
}
