/*
 * tests/unit/restoredir.c - restore overlays' records: a name is taken
 * once (by a file or by a record), a record names its owner until it is
 * committed with the file's device and inode, and the sweep removes a
 * committed overlay no process holds, never one whose owner runs, never a
 * file without a record; a record follows a checkpoint's disk swap of its
 * path, and the sweep removes the swap's hidden link with the file.
 */
#include <sys/stat.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "restoredir.h"
#include "tap.h"

static char dir[] = "/tmp/snapctl-unit-restoredir.XXXXXX";

static void
touch(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);

	if (fd < 0)
		abort();
	close(fd);
}

static json_t *
load(const char *path)
{
	return json_load_file(path, 0, NULL);
}

/* The one entry of report about file, or NULL. */
static const json_t *
entry(const json_t *report, const char *file)
{
	const json_t *r;
	size_t i;

	json_array_foreach(report, i, r)
		if (strcmp(json_string_value(json_object_get(r, "file")),
		    file) == 0)
			return r;
	return NULL;
}

int
main(void)
{
	struct restoredir_slot a = RESTOREDIR_SLOT_INIT;
	struct restoredir_slot b = RESTOREDIR_SLOT_INIT;
	struct err e = ERR_INIT;
	char store[300], disk[300], want[400], planted[400], cmd[700];
	char tmp[600], state[400];
	char *rd, *bad;
	const json_t *r;
	struct stat st;
	json_t *j, *rep;
	int unseen;

	if (mkdtemp(dir) == NULL)
		abort();
	snprintf(store, sizeof(store), "%s/store", dir);
	/* Missing: the stem is the name's (diskfile_stem(), unit/diskfile). */
	snprintf(disk, sizeof(disk), "%s/d0.qcow2", dir);
	if (mkdir(store, 0700) < 0)
		abort();

	rd = restoredir_dir(store, NULL, &e);
	snprintf(want, sizeof(want), "%s/.restores", store);
	check(rd != NULL && strcmp(rd, want) == 0, "the default directory is "
	    "STORE/.restores: %s", rd ? rd : e.msg);
	check(stat(want, &st) == 0 && (st.st_mode & 0777) == 0700,
	    "... made 0700");
	err_clear(&e);
	snprintf(cmd, sizeof(cmd), "%s/none", dir);
	bad = restoredir_dir(store, cmd, &e);
	check(bad == NULL && e.kind == ERR_FAIL && strstr(e.msg,
	    "--overlay-dir") != NULL, "a missing --overlay-dir: %s", e.msg);

	/* Two reservations with one stamp: the record takes the name. */
	check(restoredir_reserve(store, rd, disk, "20261206T000000.000Z",
	    "c1", "vd0", &a, &e) == 0, "reserve");
	snprintf(want, sizeof(want), "%s/d0.restore-20261206T000000.000Z."
	    "qcow2", rd);
	check(strcmp(a.overlay, want) == 0, "... named after the stem: %s",
	    a.overlay);
	check(access(a.overlay, F_OK) < 0, "... the overlay is not made");
	j = load(a.record);
	check(j != NULL && json_integer_value(json_object_get(json_object_get(
	    j, "owner"), "pid")) == getpid() && strcmp(json_string_value(
	    json_object_get(j, "checkpoint")), "c1") == 0,
	    "... its record names this process as the owner, and c1");
	json_decref(j);
	check(stat(a.record, &st) == 0 && (st.st_mode & 0777) == 0600,
	    "... the record is 0600");
	check(restoredir_reserve(store, rd, disk, "20261206T000000.000Z",
	    "c1", "vd0", &b, &e) == 0, "reserve a second one, same stamp");
	check(strstr(b.overlay, "000Z-2.qcow2") != NULL, "... gets -2 (the "
	    "first one's record has the name): %s", b.overlay);

	/* Owners alive: the sweep keeps both. */
	touch(a.overlay);
	check(restoredir_sweep(store, 0, &rep, &unseen, &e) == 0 &&
	    (r = entry(rep, a.overlay)) != NULL && !json_is_true(
	    json_object_get(r, "removed")) && strstr(json_string_value(
	    json_array_get(json_object_get(r, "reasons"), 0)),
	    "a restore in progress") != NULL, "the sweep keeps an overlay "
	    "whose restore runs");
	json_decref(rep);
	check(access(a.overlay, F_OK) == 0, "... it is there");

	/* Committed: device and inode, no owner. */
	check(restoredir_commit(&a, &e) == 0, "commit");
	j = load(a.record);
	stat(a.overlay, &st);
	check(j != NULL && json_object_get(j, "owner") == NULL &&
	    (ino_t)json_integer_value(json_object_get(j, "ino")) == st.st_ino &&
	    (dev_t)json_integer_value(json_object_get(j, "dev")) == st.st_dev,
	    "... records device and inode and drops the owner");
	json_decref(j);
	/* Committed without a file: the record goes. */
	snprintf(want, sizeof(want), "%s", b.record);
	check(restoredir_commit(&b, &e) == 0 && access(want, F_OK) < 0,
	    "commit of an overlay never made drops its record");
	restoredir_slot_release(&b);

	snprintf(planted, sizeof(planted), "%s/d0.restore-20000101T000000."
	    "000Z.qcow2", rd);
	touch(planted);
	check(restoredir_sweep(store, 1, &rep, &unseen, &e) == 0 &&
	    (r = entry(rep, a.overlay)) != NULL && json_is_true(
	    json_object_get(r, "removed")) && access(a.overlay, F_OK) == 0,
	    "sweep --dry-run: would remove it, and does not");
	json_decref(rep);
	check(restoredir_sweep(store, 0, &rep, &unseen, &e) == 0 &&
	    (r = entry(rep, a.overlay)) != NULL && json_is_true(
	    json_object_get(r, "removed")) && access(a.overlay, F_OK) < 0 &&
	    access(a.record, F_OK) < 0, "the sweep removes a committed "
	    "overlay no process holds, and its record");
	check(json_array_size(rep) == 1 && access(planted, F_OK) == 0,
	    "... and nothing else: a file without a record stays");
	json_decref(rep);
	restoredir_slot_release(&a);

	/* A checkpoint's disk swap of a restored VM's overlay (diskswap.h):
	 * the record learns the new file before the cut, the sweep then
	 * proves it and removes its hidden link with it, never the state. */
	check(restoredir_reserve(store, rd, disk, "20261206T000002.000Z",
	    "c1", "vd0", &a, &e) == 0, "reserve for a swap");
	touch(a.overlay);
	check(restoredir_commit(&a, &e) == 0, "... commit");
	snprintf(tmp, sizeof(tmp), "%s/.%s.snapctl-p1", rd, strrchr(a.overlay,
	    '/') + 1);
	snprintf(state, sizeof(state), "%s/d0.p1.qcow2", rd);
	touch(tmp);
	check(restoredir_follow_swap(store, a.overlay, tmp, &e) == 0,
	    "follow the swap");
	j = load(a.record);
	stat(tmp, &st);
	check(j != NULL && (ino_t)json_integer_value(json_object_get(
	    json_object_get(j, "swap"), "ino")) == st.st_ino,
	    "... the record learns the new overlay's inode");
	stat(a.overlay, &st);
	check(j != NULL && (ino_t)json_integer_value(json_object_get(j,
	    "ino")) == st.st_ino, "... and keeps the one at the path now");
	json_decref(j);
	/* finish: the state keeps the old file, the path names the new. */
	snprintf(cmd, sizeof(cmd), "%s.new", tmp);
	check(link(a.overlay, state) == 0 && link(tmp, cmd) == 0 &&
	    rename(cmd, a.overlay) == 0, "... the swap done");
	check(restoredir_sweep(store, 0, &rep, &unseen, &e) == 0 &&
	    (r = entry(rep, a.overlay)) != NULL && json_is_true(
	    json_object_get(r, "removed")) && access(a.overlay, F_OK) < 0 &&
	    access(a.record, F_OK) < 0, "the sweep proves the swapped file "
	    "by the record and removes it");
	json_decref(rep);
	check(access(tmp, F_OK) < 0, "... with its hidden link");
	check(access(state, F_OK) == 0, "... never the state the record "
	    "proved before (a checkpoint's, its manifest keeps it)");
	restoredir_slot_release(&a);

	/* A record of another file than the one at the path: no follow. */
	check(restoredir_reserve(store, rd, disk, "20261206T000003.000Z",
	    "c1", "vd0", &a, &e) == 0, "reserve once more");
	touch(a.overlay);
	check(restoredir_commit(&a, &e) == 0, "... commit");
	snprintf(cmd, sizeof(cmd), "%s.other", a.overlay);
	touch(cmd);
	check(rename(cmd, a.overlay) == 0, "... another file put there");
	snprintf(tmp, sizeof(tmp), "%s/.%s.snapctl-p2", rd, strrchr(a.overlay,
	    '/') + 1);
	touch(tmp);
	check(restoredir_follow_swap(store, a.overlay, tmp, &e) == 0 &&
	    (j = load(a.record)) != NULL && json_object_get(j, "swap") ==
	    NULL, "following a swap of a file the record does not prove "
	    "changes nothing");
	json_decref(j);
	check(restoredir_sweep(store, 0, &rep, &unseen, &e) == 0 &&
	    (r = entry(rep, a.overlay)) != NULL && !json_is_true(
	    json_object_get(r, "removed")) && access(a.overlay, F_OK) == 0 &&
	    access(tmp, F_OK) == 0, "... and the sweep keeps that file");
	json_decref(rep);
	restoredir_slot_release(&a);

	/* drop: the record goes. */
	check(restoredir_reserve(store, rd, disk, "20261206T000001.000Z",
	    "c1", "vd0", &a, &e) == 0, "reserve again");
	snprintf(want, sizeof(want), "%s", a.record);
	restoredir_drop(&a);
	check(access(want, F_OK) < 0 && a.record == NULL, "drop removes the "
	    "record");

	free(rd);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		note("could not remove %s", dir);
	return tap_done();
}
