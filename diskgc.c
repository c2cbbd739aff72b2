/*
 * diskgc.c - the disk files deleted checkpoints leave behind (diskgc.h).
 * Every file the store's manifests name, their backing chains, the VM's
 * files and the qcow2 images beside each candidate form one graph of
 * "backed by" edges; a candidate goes unless something pins it, and a file
 * that stays pins its backing file, until nothing changes.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "diskfile.h"
#include "diskgc.h"
#include "diskswap.h"
#include "util.h"
#include "vm.h"

#define CHAIN_MAX 256		/* deeper than any chain QEMU would open */
#define SIBLINGS_MAX 4096	/* directory entries looked at per directory */

struct node {
	char *path;		/* as first named */
	int exists;		/* stat() found it */
	int regular;		/* lstat(): a regular file, no symlink */
	dev_t dev;
	ino_t ino;
	char *backing;		/* from the qcow2 header, resolved */
	long below;		/* node of the backing file, or -1 */
	int candidate;		/* named by a gone checkpoint */
	int made;		/* snapctl made it */
	int going;		/* to be (or was) removed */
	int removed;
	uint64_t bytes;		/* allocated on disk */
	json_t *reasons;	/* why it stays (candidates only) */
};

struct gc {
	struct node *v;
	size_t n, cap;
	long *cand;		/* candidates in report order */
	size_t ncand;
};

/* A name QEMU opens as a plain file: no "proto:" or "json:" prefix. */
static int
plain_file(const char *p)
{
	size_t n;

	if (p == NULL || *p == '\0')
		return 0;
	n = strcspn(p, ":/");
	return p[n] != ':';
}

static long
node_find(const struct gc *g, const char *path, const struct stat *st)
{
	size_t i;

	for (i = 0; i < g->n; i++) {
		if (st != NULL && g->v[i].exists && g->v[i].dev == st->st_dev &&
		    g->v[i].ino == st->st_ino)
			return (long)i;
		if (st == NULL && !g->v[i].exists &&
		    strcmp(g->v[i].path, path) == 0)
			return (long)i;
	}
	return -1;
}

/* The node of path, added (and its header read) if new; *added says so. */
static long
node_get(struct gc *g, const char *path, int *added)
{
	struct diskfile df;
	struct stat st, lst;
	struct node *nd;
	int exists;
	long i;

	exists = stat(path, &st) == 0;
	i = node_find(g, path, exists ? &st : NULL);
	*added = i < 0;
	if (i >= 0)
		return i;
	if (g->n == g->cap) {
		g->cap = g->cap ? g->cap * 2 : 32;
		g->v = xreallocarray(g->v, g->cap, sizeof(*g->v));
	}
	nd = &g->v[g->n];
	memset(nd, 0, sizeof(*nd));
	nd->path = xstrdup(path);
	nd->below = -1;
	nd->reasons = json_array();
	if (exists) {
		nd->exists = 1;
		nd->dev = st.st_dev;
		nd->ino = st.st_ino;
		nd->bytes = (uint64_t)st.st_blocks * 512;
		nd->regular = lstat(path, &lst) == 0 && S_ISREG(lst.st_mode);
		if (S_ISREG(st.st_mode) && diskfile_probe(path, &df,
		    NULL) == 0) {
			if (plain_file(df.backing))
				nd->backing = xstrdup(df.backing);
			diskfile_release(&df);
		}
	}
	return (long)g->n++;
}

/* Add path and the files that back it; returns path's node. */
static long
add_chain(struct gc *g, const char *path)
{
	long top, i, b;
	int added, depth;

	if (!plain_file(path))
		return -1;
	top = i = node_get(g, path, &added);
	for (depth = 0; added && depth < CHAIN_MAX; depth++) {
		if (g->v[i].backing == NULL)
			break;
		b = node_get(g, g->v[i].backing, &added);
		/* A header that names itself (or a loop) is no chain. */
		if (b != i)
			g->v[i].below = b;
		i = b;
	}
	return top;
}

static void
add_reason(struct node *nd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
add_reason(struct node *nd, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	size_t i;
	json_t *r;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	json_array_foreach(nd->reasons, i, r)
		if (strcmp(json_string_value(r), buf) == 0)
			return;
	json_array_append_new(nd->reasons, json_string(buf));
}

static int
in_list(const json_t *names, const char *name)
{
	const json_t *v;
	size_t i;

	json_array_foreach(names, i, v)
		if (name != NULL && json_is_string(v) &&
		    strcmp(json_string_value(v), name) == 0)
			return 1;
	return 0;
}

/* The node a manifest names, if it is in the graph (no new nodes). */
static long
lookup(const struct gc *g, const char *path)
{
	struct stat st;

	if (!plain_file(path))
		return -1;
	return node_find(g, path, stat(path, &st) == 0 ? &st : NULL);
}

/*
 * 1 if the manifest's disk entry d recorded nd's device and inode when
 * snapctl made it: a path alone proves nothing (an edited manifest, a file
 * put there since), so an entry without them proves nothing either.
 */
static int
proven(const struct node *nd, const json_t *d, const char *dev_key,
    const char *ino_key)
{
	const json_t *dev = json_object_get(d, dev_key);
	const json_t *ino = json_object_get(d, ino_key);

	return nd->exists && json_is_integer(dev) && json_is_integer(ino) &&
	    (uint64_t)json_integer_value(dev) == (uint64_t)nd->dev &&
	    (uint64_t)json_integer_value(ino) == (uint64_t)nd->ino;
}

/* Candidates, in manifest order, and what snapctl made. */
static void
collect(struct gc *g, const struct diskgc_opts *o)
{
	static const char *const keys[] = { "file", "overlay", "backing" };
	const json_t *m, *d;
	size_t i, j, k, c;
	long n;

	json_array_foreach(o->all, i, m)
		json_array_foreach(json_object_get(m, "disks"), j, d)
			for (k = 0; k < ARRAY_SIZE(keys); k++)
				add_chain(g, json_str(d, keys[k]));
	json_array_foreach(o->vm_files, i, d)
		add_chain(g, json_string_value(d));

	json_array_foreach(o->all, i, m) {
		json_array_foreach(json_object_get(m, "disks"), j, d) {
			if ((n = lookup(g, json_str(d, "overlay"))) >= 0 &&
			    proven(&g->v[n], d, "overlay_dev", "overlay_ino"))
				g->v[n].made = 1;
			if (json_str(d, "file_made_by") != NULL &&
			    (n = lookup(g, json_str(d, "file"))) >= 0 &&
			    proven(&g->v[n], d, "file_dev", "file_ino"))
				g->v[n].made = 1;
		}
		if (!in_list(o->gone, json_str(m, "name")))
			continue;
		json_array_foreach(json_object_get(m, "disks"), j, d) {
			for (k = 0; k < 2; k++) {
				n = lookup(g, json_str(d, keys[k]));
				if (n < 0 || g->v[n].candidate)
					continue;
				g->v[n].candidate = 1;
				g->cand = xreallocarray(g->cand, g->ncand + 1,
				    sizeof(*g->cand));
				g->cand[g->ncand++] = n;
			}
		}
	}
	json_array_foreach(o->extra, i, d) {
		n = add_chain(g, json_str(d, "file"));
		if (n < 0)
			continue;
		if (proven(&g->v[n], d, "dev", "ino"))
			g->v[n].made = 1;
		if (g->v[n].candidate)
			continue;
		g->v[n].candidate = 1;
		g->cand = xreallocarray(g->cand, g->ncand + 1,
		    sizeof(*g->cand));
		g->cand[g->ncand++] = n;
	}
	json_array_foreach(o->restores, i, d) {
		n = add_chain(g, json_str(d, "file"));
		if (n < 0 || !json_is_true(json_object_get(d, "candidate")))
			continue;
		if (proven(&g->v[n], d, "dev", "ino"))
			g->v[n].made = 1;
		if (g->v[n].candidate)
			continue;
		g->v[n].candidate = 1;
		g->cand = xreallocarray(g->cand, g->ncand + 1,
		    sizeof(*g->cand));
		g->cand[g->ncand++] = n;
	}
	for (c = 0; c < g->ncand; c++)
		g->v[g->cand[c]].going = 1;
}

/*
 * The qcow2 images beside each candidate whose chain reaches it: a restore
 * target's overlay, a copy someone made.  No manifest names them.
 */
static void
add_siblings(struct gc *g)
{
	struct diskfile df;
	struct dirent *de;
	char **dirs = NULL, *dir, *p;
	size_t ndirs = 0, i, c, seen;
	DIR *d;

	for (c = 0; c < g->ncand; c++) {
		if (!g->v[g->cand[c]].exists)
			continue;
		dir = path_dirname(g->v[g->cand[c]].path);
		for (i = 0; i < ndirs; i++)
			if (strcmp(dirs[i], dir) == 0)
				break;
		if (i < ndirs) {
			free(dir);
			continue;
		}
		dirs = xreallocarray(dirs, ndirs + 1, sizeof(*dirs));
		dirs[ndirs++] = dir;
	}
	for (i = 0; i < ndirs; i++) {
		d = opendir(dirs[i]);
		if (d == NULL)
			continue;
		seen = 0;
		while ((de = readdir(d)) != NULL && seen++ < SIBLINGS_MAX) {
			if (strcmp(de->d_name, ".") == 0 ||
			    strcmp(de->d_name, "..") == 0)
				continue;
			p = xasprintf("%s/%s", dirs[i], de->d_name);
			if (lookup(g, p) < 0 && diskfile_probe(p, &df,
			    NULL) == 0) {
				if (df.backing != NULL)
					add_chain(g, p);
				diskfile_release(&df);
			}
			free(p);
		}
		closedir(d);
	}
	for (i = 0; i < ndirs; i++)
		free(dirs[i]);
	free(dirs);
}

/* Reasons that do not depend on what else goes. */
static void
pin_static(struct gc *g, const struct diskgc_opts *o)
{
	const json_t *m, *d, *f;
	const char *name;
	size_t i, j;
	long n;

	for (i = 0; i < g->ncand; i++) {
		struct node *nd = &g->v[g->cand[i]];

		if (!nd->exists)
			add_reason(nd, "does not exist");
		else if (!nd->made)
			add_reason(nd, "not created by snapctl");
		else if (!nd->regular)
			add_reason(nd, "not a regular file");
	}
	json_array_foreach(o->all, i, m) {
		name = json_str(m, "name");
		if (in_list(o->gone, name))
			continue;
		json_array_foreach(json_object_get(m, "disks"), j, d) {
			if ((n = lookup(g, json_str(d, "file"))) >= 0 &&
			    g->v[n].candidate)
				add_reason(&g->v[n], "the disk of checkpoint "
				    "'%s'", name);
			if ((n = lookup(g, json_str(d, "overlay"))) >= 0 &&
			    g->v[n].candidate)
				add_reason(&g->v[n], json_str(d, "vm_path") ?
				    "the VM's own disk in checkpoint '%s'" :
				    "the overlay of checkpoint '%s'", name);
			if ((n = lookup(g, json_str(d, "backing"))) >= 0 &&
			    g->v[n].candidate)
				add_reason(&g->v[n], "a backing file of "
				    "checkpoint '%s'", name);
		}
	}
	json_array_foreach(o->vm_files, i, f)
		if ((n = lookup(g, json_string_value(f))) >= 0 &&
		    g->v[n].candidate)
			add_reason(&g->v[n], "in use by the VM (-s)");
}

static void
proc_comm(const char *pid, char out[64])
{
	char path[300];
	ssize_t n;
	int fd;

	snprintf(out, 64, "?");
	snprintf(path, sizeof(path), "/proc/%s/comm", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	n = read(fd, out, 63);
	close(fd);
	if (n <= 0) {
		snprintf(out, 64, "?");
		return;
	}
	out[n] = '\0';
	out[strcspn(out, "\n")] = '\0';
}

/* Pin the candidates some process holds open; count the unseen ones. */
static void
pin_open(struct gc *g, int *unseen)
{
	struct dirent *pe, *fe;
	struct stat st;
	char path[300], comm[64], self[32];
	DIR *pd, *fdd;
	size_t c;
	int dfd;

	*unseen = 0;
	pd = opendir("/proc");
	if (pd == NULL)
		return;
	snprintf(self, sizeof(self), "%ld", (long)getpid());
	while ((pe = readdir(pd)) != NULL) {
		if (pe->d_name[0] < '1' || pe->d_name[0] > '9' ||
		    strspn(pe->d_name, "0123456789") != strlen(pe->d_name) ||
		    strcmp(pe->d_name, self) == 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%s/fd", pe->d_name);
		dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0) {
			if (errno == EACCES || errno == EPERM)
				(*unseen)++;
			continue;
		}
		fdd = fdopendir(dfd);
		if (fdd == NULL) {
			close(dfd);
			continue;
		}
		comm[0] = '\0';
		while ((fe = readdir(fdd)) != NULL) {
			if (fe->d_name[0] == '.' ||
			    fstatat(dfd, fe->d_name, &st, 0) < 0 ||
			    !S_ISREG(st.st_mode))
				continue;
			for (c = 0; c < g->ncand; c++) {
				struct node *nd = &g->v[g->cand[c]];

				if (!nd->exists || nd->dev != st.st_dev ||
				    nd->ino != st.st_ino)
					continue;
				if (comm[0] == '\0')
					proc_comm(pe->d_name, comm);
				add_reason(nd, "open by process %s (%s)",
				    pe->d_name, comm);
			}
		}
		closedir(fdd);
	}
	closedir(pd);
}

/* A file that stays keeps the file that backs it, to a fixed point. */
static void
pin_chains(struct gc *g)
{
	size_t i, c;
	int changed = 1;
	long b;

	for (c = 0; c < g->ncand; c++) {
		struct node *nd = &g->v[g->cand[c]];

		nd->going = json_array_size(nd->reasons) == 0;
	}
	while (changed) {
		changed = 0;
		for (i = 0; i < g->n; i++) {
			b = g->v[i].below;
			if (g->v[i].going || !g->v[i].exists || b < 0 ||
			    !g->v[b].going)
				continue;
			g->v[b].going = 0;
			changed = 1;
		}
	}
	/* Every file that stays on a candidate says so. */
	for (i = 0; i < g->n; i++) {
		b = g->v[i].below;
		if (!g->v[i].going && g->v[i].exists && b >= 0 &&
		    g->v[b].candidate)
			add_reason(&g->v[b], "the backing file of '%s'",
			    g->v[i].path);
	}
}

/* Remove the going files, each before the file that backs it. */
static int
remove_going(struct gc *g, struct err *e)
{
	size_t i, c;
	int progress = 1, rc = 0;
	long b;

	while (progress) {
		progress = 0;
		for (c = 0; c < g->ncand; c++) {
			long n = g->cand[c];
			struct node *nd = &g->v[n];

			if (!nd->going || nd->removed)
				continue;
			for (i = 0; i < g->n; i++)
				if (g->v[i].below == n && g->v[i].going &&
				    !g->v[i].removed)
					break;
			if (i < g->n)
				continue;	/* its overlay goes first */
			progress = 1;
			/* A file that was a VM's path (a restore overlay a
			 * checkpoint swapped) may have hidden links of the
			 * swap (diskswap.h): they go with it, first. */
			diskswap_drop_names(nd->path, NULL, nd->path);
			/* Gone already: another sweep was first. */
			if (unlink(nd->path) == 0 || errno == ENOENT) {
				nd->removed = 1;
				continue;
			}
			err_sys(e, ERR_FAIL, "cannot remove '%s'", nd->path);
			add_reason(nd, "cannot remove it: %s", strerror(errno));
			rc = -1;
			/* It stays, and so does what backs it. */
			nd->going = 0;
			for (b = nd->below; b >= 0 && g->v[b].going &&
			    !g->v[b].removed; b = g->v[b].below) {
				add_reason(&g->v[b], "the backing file of "
				    "'%s'", g->v[n].path);
				g->v[b].going = 0;
				n = b;
			}
		}
	}
	return rc;
}

json_t *
diskgc_vm_files(struct qmp *q, struct err *e)
{
	static const char pfx[] = "query-block: ";
	struct err le = ERR_INIT;
	struct blockinfo *d;
	json_t *out;
	size_t i, k, n;

	if (vm_disks_query(q, &d, &n, &le) < 0) {
		/* Our caller names the command itself. */
		if (strncmp(le.msg, pfx, sizeof(pfx) - 1) == 0)
			memmove(le.msg, le.msg + sizeof(pfx) - 1,
			    strlen(le.msg) - (sizeof(pfx) - 1) + 1);
		err_propagate(e, &le, NULL);
		return NULL;
	}
	out = json_array();
	for (i = 0; i < n; i++)
		for (k = 0; k < d[i].nchain; k++)
			json_array_append_new(out, json_string(d[i].chain[k]));
	vm_disks_free(d, n);
	return out;
}

int
diskgc_run(const struct diskgc_opts *o, json_t **report, int *unseen,
    struct err *e)
{
	struct gc g = { NULL, 0, 0, NULL, 0 };
	struct node *nd;
	size_t i;
	int rc = 0;

	*report = json_array();
	*unseen = 0;
	collect(&g, o);
	add_siblings(&g);
	pin_static(&g, o);
	pin_open(&g, unseen);
	pin_chains(&g);
	if (!o->dry_run)
		rc = remove_going(&g, e);
	for (i = 0; i < g.ncand; i++) {
		nd = &g.v[g.cand[i]];
		if (!o->dry_run && nd->going && !nd->removed) {
			add_reason(nd, "in a loop of backing files");
			nd->going = 0;
		}
	}
	for (i = 0; i < g.ncand; i++) {
		nd = &g.v[g.cand[i]];
		json_array_append_new(*report, json_pack("{s:s, s:b, s:O, "
		    "s:I}", "file", nd->path,
		    "removed", o->dry_run ? nd->going : nd->removed,
		    "reasons", nd->reasons, "bytes", (json_int_t)nd->bytes));
	}
	for (i = 0; i < g.n; i++) {
		free(g.v[i].path);
		free(g.v[i].backing);
		json_decref(g.v[i].reasons);
	}
	free(g.v);
	free(g.cand);
	return rc;
}
