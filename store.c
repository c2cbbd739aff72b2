/*
 * store.c - the checkpoint store (store.h): name rules, the per-store
 * flock, staging directories renamed into place once their manifest is
 * written, manifests, the parent lookup, and the recovery note.  Paths are
 * resolved against the store's directory fd with O_NOFOLLOW where it
 * matters, so a symlink planted in the store is never written through.
 */
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "manifest.h"
#include "sig.h"
#include "store.h"
#include "util.h"

#define PARTIAL_TAG ".partial-"

struct store {
	char *path;
	int dirfd;
	int lockfd;
};

int
store_name_check(const char *name, struct err *e)
{
	const unsigned char *p;
	size_t len;

	if (name == NULL || *name == '\0')
		return err_set(e, ERR_USAGE, "invalid checkpoint name '': "
		    "empty");
	len = strlen(name);
	if (len > STORE_NAME_MAX)
		return err_set(e, ERR_USAGE, "invalid checkpoint name '%.32s"
		    "...': longer than %d bytes", name, STORE_NAME_MAX);
	if (name[0] == '.')
		return err_set(e, ERR_USAGE, "invalid checkpoint name '%s': "
		    "starts with '.'", name);
	for (p = (const unsigned char *)name; *p != '\0'; p++) {
		if (*p == '/')
			return err_set(e, ERR_USAGE, "invalid checkpoint name "
			    "'%s': contains '/'", name);
		if (*p <= 0x20 || *p >= 0x7f)
			return err_set(e, ERR_USAGE, "invalid checkpoint name "
			    "'%s': only printable ASCII without spaces is "
			    "allowed", name);
	}
	return 0;
}

void
store_default_name(double t, char out[32])
{
	struct tm tm;
	time_t secs = (time_t)t;
	int ms = (int)((t - (double)secs) * 1000.0 + 0.5);
	char day[24];

	/* Milliseconds: two checkpoints in one second do not collide. */
	if (ms < 0)
		ms = 0;
	if (ms > 999)
		ms = 999;
	gmtime_r(&secs, &tm);
	strftime(day, sizeof(day), "%Y%m%dT%H%M%S", &tm);
	snprintf(out, 32, "%s.%03dZ", day, ms);
}

struct store *
store_open(const char *dir, int create, struct err *e)
{
	struct store *s = NULL;
	struct stat st;
	int fd = -1;

	if (dir == NULL || *dir == '\0') {
		err_set(e, ERR_USAGE, "no checkpoint store given");
		goto fail;
	}
	if (lstat(dir, &st) < 0) {
		if (errno != ENOENT || !create) {
			err_sys(e, ERR_FAIL, "cannot open store '%s'", dir);
			goto fail;
		}
		if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
			err_sys(e, ERR_FAIL, "cannot create store '%s'", dir);
			goto fail;
		}
		if (lstat(dir, &st) < 0) {
			err_sys(e, ERR_FAIL, "cannot open store '%s'", dir);
			goto fail;
		}
	}
	if (S_ISLNK(st.st_mode)) {
		err_set(e, ERR_FAIL, "store '%s' is a symbolic link: refused",
		    dir);
		goto fail;
	}
	if (!S_ISDIR(st.st_mode)) {
		err_set(e, ERR_FAIL, "store '%s' is not a directory", dir);
		goto fail;
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		err_sys(e, ERR_FAIL, "cannot open store '%s'", dir);
		goto fail;
	}
	/* Others who can write the store could swap its files: a store of
	 * ours is tightened to 0700, anyone else's refused, and so is a
	 * shared directory such as /tmp (sticky), never to be chmod'ed. */
	if ((st.st_mode & 022) != 0) {
		if (st.st_mode & S_ISVTX) {
			err_set(e, ERR_FAIL, "store '%s' is a shared directory "
			    "(sticky, writable by others): use a directory of "
			    "its own", dir);
			goto fail;
		}
		if (st.st_uid != geteuid()) {
			err_set(e, ERR_FAIL, "store '%s' can be written by "
			    "others and is not ours: refused", dir);
			goto fail;
		}
		if (fchmod(fd, 0700) < 0) {
			err_sys(e, ERR_FAIL, "cannot make store '%s' 0700",
			    dir);
			goto fail;
		}
	}
	s = xcalloc(1, sizeof(*s));
	s->path = xstrdup(dir);
	s->dirfd = fd;
	s->lockfd = -1;
	return s;
fail:
	if (fd >= 0)
		close(fd);
	return NULL;
}

const char *
store_path(const struct store *s)
{
	return s->path;
}

int
store_lock(struct store *s, int wait_ms, struct err *e)
{
	struct timespec nap = { 0, 50 * 1000 * 1000 };
	uint64_t deadline;
	int fd;

	if (wait_ms < 0)
		wait_ms = 0;
	deadline = now_mono_ms() + (uint64_t)wait_ms;

	if (s->lockfd >= 0)
		return 0;
	fd = openat(s->dirfd, ".lock", O_RDWR | O_CREAT | O_NOFOLLOW |
	    O_CLOEXEC, 0600);
	if (fd < 0)
		return err_sys(e, ERR_FAIL, "cannot open '%s/.lock'", s->path);
	/* Polled, not a blocking flock(): the wait stays bounded and a
	 * signal (sig_catch()) ends it. */
	while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno == EINTR && !sig_caught())
			continue;
		if (errno == EWOULDBLOCK && now_mono_ms() < deadline &&
		    !sig_caught()) {
			nanosleep(&nap, NULL);
			continue;
		}
		if (errno != EWOULDBLOCK && errno != EINTR)
			err_sys(e, ERR_FAIL, "cannot lock '%s/.lock'",
			    s->path);
		else if (!sig_interrupted(e) && wait_ms > 0)
			err_set(e, ERR_LOCKED, "store '%s' is locked by another "
			    "snapctl (waited %.1f s)", s->path,
			    wait_ms / 1000.0);
		else if (!err_isset(e))
			err_set(e, ERR_LOCKED, "store '%s' is locked by another "
			    "snapctl", s->path);
		close(fd);
		return -1;
	}
	s->lockfd = fd;
	return 0;
}

/* PID of a staging name ".NAME.partial-PID", or 0 if it is not one. */
static pid_t
partial_pid(const char *ent)
{
	const char *tag;
	const char *why;
	uint64_t pid;

	if (ent[0] != '.')
		return 0;
	tag = strstr(ent, PARTIAL_TAG);
	if (tag == NULL)
		return 0;
	/* The last occurrence: the name itself may contain the tag. */
	while (strstr(tag + 1, PARTIAL_TAG) != NULL)
		tag = strstr(tag + 1, PARTIAL_TAG);
	if (parse_u64(tag + strlen(PARTIAL_TAG), 1, INT32_MAX, &pid,
	    &why) < 0)
		return 0;
	return (pid_t)pid;
}

/* Unlink everything in the directory open as dfd; depth limits recursion. */
static int
empty_dir(int dfd, int depth)
{
	struct dirent *de;
	struct stat st;
	DIR *d;
	int fd, rc = 0, saved = 0;

	fd = dup(dfd);
	if (fd < 0)
		return -1;
	d = fdopendir(fd);
	if (d == NULL) {
		close(fd);
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			int sub;

			if (depth <= 0) {
				rc = -1;
				saved = ENOTEMPTY;
				continue;
			}
			sub = openat(dfd, de->d_name, O_RDONLY | O_DIRECTORY |
			    O_NOFOLLOW | O_CLOEXEC);
			if (sub >= 0) {
				if (empty_dir(sub, depth - 1) < 0 && !saved) {
					rc = -1;
					saved = errno;
				}
				close(sub);
			}
			if (unlinkat(dfd, de->d_name, AT_REMOVEDIR) < 0 &&
			    !saved) {
				rc = -1;
				saved = errno;
			}
		} else if (unlinkat(dfd, de->d_name, 0) < 0 && !saved) {
			rc = -1;
			saved = errno;
		}
	}
	closedir(d);
	if (rc < 0)
		errno = saved;
	return rc;
}

static int
remove_at(int parent, const char *name)
{
	int fd, rc;

	fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -1;
	rc = empty_dir(fd, 1);
	close(fd);
	if (unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		return -1;
	return rc;
}

int
store_clean_stale(struct store *s)
{
	struct dirent *de;
	DIR *d;
	pid_t pid;
	int fd, n = 0;

	fd = openat(s->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	d = fdopendir(fd);
	if (d == NULL) {
		close(fd);
		return 0;
	}
	while ((de = readdir(d)) != NULL) {
		pid = partial_pid(de->d_name);
		if (pid == 0 || pid == getpid())
			continue;
		/* EPERM: alive but someone else's. */
		if (kill(pid, 0) == 0 || errno != ESRCH)
			continue;
		if (remove_at(s->dirfd, de->d_name) == 0)
			n++;
	}
	closedir(d);
	return n;
}

/* fsync the store's directory: what was renamed or removed in it stays. */
static int
store_sync(const struct store *s, struct err *e)
{
	if (fsync(s->dirfd) < 0)
		return err_sys(e, ERR_FAIL, "cannot fsync directory '%s'",
		    s->path);
	return 0;
}

int
store_exists(const struct store *s, const char *name)
{
	struct stat st;

	return fstatat(s->dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

char *
store_stage_new(struct store *s, const char *name, struct err *e)
{
	char *base = NULL, *path = NULL;

	if (store_name_check(name, e) < 0)
		return NULL;
	if (store_exists(s, name)) {
		err_set(e, ERR_FAIL, "checkpoint '%s' already exists in '%s'",
		    name, s->path);
		return NULL;
	}
	base = xasprintf(".%s%s%ld", name, PARTIAL_TAG, (long)getpid());
	/* Ours from an earlier attempt in this process: start afresh. */
	remove_at(s->dirfd, base);
	if (mkdirat(s->dirfd, base, 0700) < 0) {
		err_sys(e, ERR_FAIL, "cannot create '%s/%s'", s->path, base);
		goto out;
	}
	path = xasprintf("%s/%s", s->path, base);
out:
	free(base);
	return path;
}

/* Write j to path atomically (0600). */
static int
write_json_atomic(const char *path, const json_t *j, struct err *e)
{
	struct atomic_file f = ATOMIC_FILE_INIT;
	char *text = NULL;
	int rc = -1;

	/* 9 digits: 250.736, not 250.73599999999999. */
	text = json_dumps(j, JSON_INDENT(2) | JSON_ENSURE_ASCII |
	    JSON_REAL_PRECISION(9));
	if (text == NULL) {
		err_set(e, ERR_FAIL, "cannot encode '%s'", path);
		goto out;
	}
	if (atomic_file_open(&f, path, 0600, e) < 0)
		goto out;
	if (write_full(f.fd, text, strlen(text)) < 0 ||
	    write_full(f.fd, "\n", 1) < 0) {
		err_sys(e, ERR_FAIL, "cannot write '%s'", f.tmp);
		goto out;
	}
	if (atomic_file_commit(&f, 0, e) < 0)
		goto out;
	rc = 0;
out:
	atomic_file_release(&f);
	free(text);
	return rc;
}

int
store_stage_commit(struct store *s, const char *stage, const char *name,
    const json_t *manifest, struct err *e)
{
	char *mpath = NULL;
	const char *base;
	int rc = -1;

	mpath = xasprintf("%s/%s", stage, MANIFEST_FILE);
	if (write_json_atomic(mpath, manifest, e) < 0)
		goto out;
	base = strrchr(stage, '/');
	base = base != NULL ? base + 1 : stage;
	if (renameat2(s->dirfd, base, s->dirfd, name, RENAME_NOREPLACE) < 0) {
		if (errno == EEXIST)
			err_set(e, ERR_FAIL, "checkpoint '%s' already exists in "
			    "'%s'", name, s->path);
		else
			err_sys(e, ERR_FAIL, "cannot rename '%s' to '%s/%s'",
			    stage, s->path, name);
		goto out;
	}
	if (store_sync(s, e) < 0)
		goto out;
	rc = 0;
out:
	free(mpath);
	return rc;
}

int
store_stage_remove(const char *stage)
{
	char *dir;
	const char *base;
	int pfd, rc;

	if (stage == NULL)
		return 0;
	dir = path_dirname(stage);
	base = strrchr(stage, '/');
	base = base != NULL ? base + 1 : stage;
	pfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(dir);
	if (pfd < 0)
		return -1;
	rc = remove_at(pfd, base);
	close(pfd);
	return rc;
}

/* Read a JSON object from name inside dirfd (no symlinks). */
static json_t *
read_json_at(int dirfd, const char *name, const char *shown, struct err *e)
{
	json_error_t jerr;
	json_t *j = NULL;
	FILE *f = NULL;
	int fd;

	fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		err_sys(e, ERR_FAIL, "cannot open '%s'", shown);
		return NULL;
	}
	f = fdopen(fd, "r");
	if (f == NULL) {
		err_sys(e, ERR_FAIL, "cannot open '%s'", shown);
		close(fd);
		return NULL;
	}
	j = json_loadf(f, 0, &jerr);
	fclose(f);
	if (j == NULL) {
		err_set(e, ERR_FAIL, "'%s': invalid JSON at line %d: %s",
		    shown, jerr.line, jerr.text);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		err_set(e, ERR_FAIL, "'%s': not a JSON object", shown);
		return NULL;
	}
	return j;
}

json_t *
store_manifest_read(const struct store *s, const char *name, struct err *e)
{
	char *rel = NULL, *shown = NULL;
	json_t *m = NULL;

	if (store_name_check(name, e) < 0)
		return NULL;
	rel = xasprintf("%s/%s", name, MANIFEST_FILE);
	shown = xasprintf("%s/%s", s->path, rel);
	if (!store_exists(s, name)) {
		err_set(e, ERR_FAIL, "no checkpoint '%s' in '%s'", name,
		    s->path);
		goto out;
	}
	m = read_json_at(s->dirfd, rel, shown, e);
	if (m != NULL && manifest_check(m, shown, name, e) < 0) {
		json_decref(m);
		m = NULL;
	}
out:
	free(rel);
	free(shown);
	return m;
}

struct listed {
	const char *created;
	const char *name;
	json_t *m;
};

static int
listed_cmp(const void *a, const void *b)
{
	const struct listed *x = a, *y = b;
	int c = strcmp(x->created, y->created);

	return c != 0 ? c : strcmp(x->name, y->name);
}

json_t *
store_list(const struct store *s, json_t **bad, struct err *e)
{
	struct err le = ERR_INIT;
	struct listed *v = NULL;
	struct dirent *de;
	struct stat st;
	size_t n = 0, cap = 0, i;
	json_t *out = NULL, *m;
	DIR *d = NULL;
	int fd;

	if (bad != NULL)
		*bad = json_array();
	fd = openat(s->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || (d = fdopendir(fd)) == NULL) {
		err_sys(e, ERR_FAIL, "cannot read store '%s'", s->path);
		if (fd >= 0)
			close(fd);
		goto out;
	}
	for (;;) {
		errno = 0;
		if ((de = readdir(d)) == NULL)
			break;
		if (de->d_name[0] == '.' ||
		    store_name_check(de->d_name, NULL) < 0 ||
		    fstatat(s->dirfd, de->d_name, &st,
		    AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
			continue;
		err_clear(&le);
		m = store_manifest_read(s, de->d_name, &le);
		if (m == NULL) {
			if (bad != NULL)
				json_array_append_new(*bad, json_pack("{s:s, "
				    "s:s}", "name", de->d_name, "error",
				    le.msg));
			continue;
		}
		/* The directory's name is the checkpoint's. */
		json_object_set_new(m, MF_NAME, json_string(de->d_name));
		if (!json_is_string(json_object_get(m, MF_CREATED)))
			json_object_set_new(m, MF_CREATED, json_string(""));
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			v = xreallocarray(v, cap, sizeof(*v));
		}
		v[n].m = m;
		v[n].name = json_str(m, MF_NAME);
		v[n].created = json_str(m, MF_CREATED);
		n++;
	}
	if (errno != 0) {
		err_sys(e, ERR_FAIL, "cannot read store '%s'", s->path);
		goto out;
	}
	if (n > 0)
		qsort(v, n, sizeof(*v), listed_cmp);
	out = json_array();
	for (i = 0; i < n; i++)
		json_array_append(out, v[i].m);
out:
	if (d != NULL)
		closedir(d);
	for (i = 0; i < n; i++)
		json_decref(v[i].m);
	free(v);
	if (out == NULL && bad != NULL) {
		json_decref(*bad);
		*bad = NULL;
	}
	return out;
}

int
store_remove_checkpoint(struct store *s, const char *name, struct err *e)
{
	struct stat st;
	int fd = -1, rc = -1;

	if (store_name_check(name, e) < 0)
		return -1;
	if (fstatat(s->dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return err_set(e, ERR_FAIL, "no checkpoint '%s' in "
			    "'%s'", name, s->path);
		return err_sys(e, ERR_FAIL, "cannot stat '%s/%s'", s->path,
		    name);
	}
	if (!S_ISDIR(st.st_mode))
		return err_set(e, ERR_FAIL, "'%s/%s' is not a checkpoint "
		    "directory: refused", s->path, name);
	fd = openat(s->dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC);
	if (fd < 0) {
		err_sys(e, ERR_FAIL, "cannot open '%s/%s'", s->path, name);
		goto out;
	}
	/* The manifest first, durably: what is left is no checkpoint. */
	if (unlinkat(fd, MANIFEST_FILE, 0) < 0 && errno != ENOENT) {
		err_sys(e, ERR_FAIL, "cannot remove '%s/%s/%s'", s->path,
		    name, MANIFEST_FILE);
		goto out;
	}
	if (fsync(fd) < 0) {
		err_sys(e, ERR_FAIL, "cannot fsync directory '%s/%s'",
		    s->path, name);
		goto out;
	}
	if (empty_dir(fd, 1) < 0) {
		err_sys(e, ERR_FAIL, "cannot empty '%s/%s'", s->path, name);
		goto out;
	}
	if (unlinkat(s->dirfd, name, AT_REMOVEDIR) < 0) {
		err_sys(e, ERR_FAIL, "cannot remove '%s/%s'", s->path, name);
		goto out;
	}
	if (store_sync(s, e) < 0)
		goto out;
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	return rc;
}

char *
store_find_parent(const struct store *s, const char *uuid,
    const char *vmname)
{
	struct dirent *de;
	char *best = NULL, *best_created = NULL;
	const char *created;
	json_t *m;
	DIR *d;
	int fd, better;

	fd = openat(s->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	d = fdopendir(fd);
	if (d == NULL) {
		close(fd);
		return NULL;
	}
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.' ||
		    store_name_check(de->d_name, NULL) < 0)
			continue;
		m = store_manifest_read(s, de->d_name, NULL);
		if (m == NULL)
			continue;
		created = json_str(m, MF_CREATED);
		if (created != NULL && manifest_vm_is(m, uuid, vmname)) {
			better = best == NULL ||
			    strcmp(created, best_created) > 0 ||
			    (strcmp(created, best_created) == 0 &&
			    strcmp(de->d_name, best) > 0);
			if (better) {
				free(best);
				free(best_created);
				best = xstrdup(de->d_name);
				best_created = xstrdup(created);
			}
		}
		json_decref(m);
	}
	closedir(d);
	free(best_created);
	return best;
}

/* A JSON file fname at the store's top: written atomically, read (NULL
 * without an error when it does not exist), removed with the store synced. */
static int
top_json_write(const struct store *s, const char *fname, const json_t *j,
    struct err *e)
{
	char *path = xasprintf("%s/%s", s->path, fname);
	int rc;

	rc = write_json_atomic(path, j, e);
	free(path);
	return rc;
}

static json_t *
top_json_read(const struct store *s, const char *fname, struct err *e)
{
	struct stat st;
	char *shown;
	json_t *j;

	if (fstatat(s->dirfd, fname, &st, AT_SYMLINK_NOFOLLOW) < 0 &&
	    errno == ENOENT)
		return NULL;
	shown = xasprintf("%s/%s", s->path, fname);
	j = read_json_at(s->dirfd, fname, shown, e);
	free(shown);
	return j;
}

static int
top_json_remove(const struct store *s, const char *fname, struct err *e)
{
	if (unlinkat(s->dirfd, fname, 0) < 0 && errno != ENOENT)
		return err_sys(e, ERR_FAIL, "cannot remove '%s/%s'", s->path,
		    fname);
	return store_sync(s, e);
}

int
store_note_write(const struct store *s, const json_t *note, struct err *e)
{
	return top_json_write(s, STORE_RECOVER_NOTE, note, e);
}

json_t *
store_note_read(const struct store *s, struct err *e)
{
	return top_json_read(s, STORE_RECOVER_NOTE, e);
}

int
store_note_remove(const struct store *s, struct err *e)
{
	return top_json_remove(s, STORE_RECOVER_NOTE, e);
}

int
store_manifest_replace(const struct store *s, const char *name,
    const json_t *m, struct err *e)
{
	char *path = xasprintf("%s/%s/%s", s->path, name, MANIFEST_FILE);
	int rc;

	rc = write_json_atomic(path, m, e);
	free(path);
	return rc;
}

int
store_journal_write(const struct store *s, const json_t *j, struct err *e)
{
	return top_json_write(s, STORE_MERGE_JOURNAL, j, e);
}

json_t *
store_journal_read(const struct store *s, struct err *e)
{
	return top_json_read(s, STORE_MERGE_JOURNAL, e);
}

int
store_journal_remove(const struct store *s, struct err *e)
{
	return top_json_remove(s, STORE_MERGE_JOURNAL, e);
}

#define LAST_PREFIX ".last-"
#define LAST_SUFFIX ".json"

/* The note's pid and start; -1 when it is not a readable note. */
static int
last_note(const struct store *s, const char *fname, json_t **out,
    pid_t *pid, uint64_t *start)
{
	json_t *j = read_json_at(s->dirfd, fname, fname, NULL);
	json_int_t p, st;

	if (j == NULL)
		return -1;
	p = json_integer_value(json_object_get(j, "pid"));
	st = json_integer_value(json_object_get(j, "start"));
	if (p <= 0 || st < 0 || json_str(j, "checkpoint") == NULL) {
		json_decref(j);
		return -1;
	}
	*pid = (pid_t)p;
	*start = (uint64_t)st;
	*out = j;
	return 0;
}

/* Remove the notes of processes that are gone (or whose pid was reused). */
static void
last_sweep(const struct store *s)
{
	struct dirent *de;
	uint64_t start, now;
	json_t *j;
	pid_t pid;
	DIR *d;
	int fd;

	fd = openat(s->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || (d = fdopendir(fd)) == NULL) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, LAST_PREFIX, strlen(LAST_PREFIX)) != 0)
			continue;
		if (last_note(s, de->d_name, &j, &pid, &start) < 0)
			continue;
		json_decref(j);
		if (proc_start_ticks(pid, &now) < 0 || now != start)
			unlinkat(s->dirfd, de->d_name, 0);
	}
	closedir(d);
}

int
store_last_write(const struct store *s, pid_t pid, uint64_t start,
    const char *checkpoint, struct err *e)
{
	char *path;
	json_t *j;
	int rc;

	last_sweep(s);
	j = json_pack("{s:I, s:I, s:s}", "pid", (json_int_t)pid, "start",
	    (json_int_t)start, "checkpoint", checkpoint);
	if (j == NULL)
		return err_set(e, ERR_FAIL, "cannot describe checkpoint '%s'",
		    checkpoint);
	path = xasprintf("%s/" LAST_PREFIX "%lld" LAST_SUFFIX, s->path,
	    (long long)pid);
	rc = write_json_atomic(path, j, e);
	free(path);
	json_decref(j);
	return rc;
}

char *
store_last_read(const struct store *s, pid_t pid, uint64_t start)
{
	char fname[64], *name = NULL;
	uint64_t st;
	json_t *j;
	pid_t p;

	snprintf(fname, sizeof(fname), LAST_PREFIX "%lld" LAST_SUFFIX,
	    (long long)pid);
	if (last_note(s, fname, &j, &p, &st) < 0)
		return NULL;
	if (p == pid && st == start &&
	    store_name_check(json_str(j, "checkpoint"), NULL) == 0 &&
	    store_exists(s, json_str(j, "checkpoint")))
		name = xstrdup(json_str(j, "checkpoint"));
	json_decref(j);
	return name;
}

#define REVERT_PREFIX ".revert-"

/* The note's file name for the file path names now; -1 if none. */
static int
revert_fname(const char *path, char out[96], dev_t *dev, ino_t *ino)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return -1;
	*dev = st.st_dev;
	*ino = st.st_ino;
	snprintf(out, 96, REVERT_PREFIX "%llu-%llu" LAST_SUFFIX,
	    (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
	return 0;
}

/* Remove the revert notes whose path names another file by now. */
static void
revert_sweep(const struct store *s)
{
	struct dirent *de;
	struct stat st;
	const char *p;
	json_t *j;
	DIR *d;
	int fd, stale;

	fd = openat(s->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || (d = fdopendir(fd)) == NULL) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, REVERT_PREFIX,
		    strlen(REVERT_PREFIX)) != 0)
			continue;
		j = read_json_at(s->dirfd, de->d_name, de->d_name, NULL);
		p = json_str(j, "path");
		stale = j == NULL || p == NULL || stat(p, &st) < 0 ||
		    (json_int_t)st.st_dev != json_integer_value(
		    json_object_get(j, "dev")) ||
		    (json_int_t)st.st_ino != json_integer_value(
		    json_object_get(j, "ino"));
		json_decref(j);
		if (stale)
			unlinkat(s->dirfd, de->d_name, 0);
	}
	closedir(d);
}

int
store_revert_write(const struct store *s, const char *path,
    const char *checkpoint, struct err *e)
{
	char fname[96], *full;
	dev_t dev;
	ino_t ino;
	json_t *j;
	int rc;

	revert_sweep(s);
	if (revert_fname(path, fname, &dev, &ino) < 0)
		return err_sys(e, ERR_FAIL, "cannot look at '%s'", path);
	j = json_pack("{s:s, s:I, s:I, s:s}", "path", path, "dev",
	    (json_int_t)dev, "ino", (json_int_t)ino, "checkpoint", checkpoint);
	if (j == NULL)
		return err_set(e, ERR_FAIL, "cannot describe checkpoint '%s'",
		    checkpoint);
	full = xasprintf("%s/%s", s->path, fname);
	rc = write_json_atomic(full, j, e);
	free(full);
	json_decref(j);
	return rc;
}

char *
store_revert_read(const struct store *s, const char *path)
{
	char fname[96], *name = NULL;
	dev_t dev;
	ino_t ino;
	json_t *j;
	const char *c;

	if (revert_fname(path, fname, &dev, &ino) < 0)
		return NULL;
	j = read_json_at(s->dirfd, fname, fname, NULL);
	c = json_str(j, "checkpoint");
	if (c != NULL && json_str(j, "path") != NULL &&
	    strcmp(json_str(j, "path"), path) == 0 &&
	    json_integer_value(json_object_get(j, "ino")) ==
	    (json_int_t)ino && store_name_check(c, NULL) == 0 &&
	    store_exists(s, c))
		name = xstrdup(c);
	json_decref(j);
	return name;
}

void
store_close(struct store *s)
{
	if (s == NULL)
		return;
	if (s->lockfd >= 0)
		close(s->lockfd);
	if (s->dirfd >= 0)
		close(s->dirfd);
	free(s->path);
	free(s);
}
