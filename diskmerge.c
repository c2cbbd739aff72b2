/*
 * diskmerge.c - the merges delete and prune --disks do (diskmerge.h): a
 * graph of images from the manifests, the VM and qcow2 headers; a plan for
 * one disk of a deleted checkpoint; the step done live (QMP block jobs) or
 * offline (qemu-img) under the store's merge journal; the kept manifests
 * brought up to date after it.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "diskfile.h"
#include "diskmerge.h"
#include "manifest.h"
#include "proc.h"
#include "qmp.h"
#include "sig.h"
#include "store.h"
#include "util.h"
#include "vm.h"

#include "banned.h"

#define CHAIN_MAX 256
#define SIBLINGS_MAX 4096
#define JOB_ID "snapctl-merge"
#define JOB_POLL_MS 200
#define CANCEL_WAIT_MS 30000

struct im {
	char *path;		/* as first named */
	dev_t dev;
	ino_t ino;
	char fmt[8];
	char *backing;		/* resolved, or NULL */
	long below;		/* index of the backing image, or -1 */
	int named;		/* a manifest or the VM names it */
	int file_of;		/* some manifest's "file" */
	uint64_t alloc;		/* bytes allocated on disk */
};

struct graph {
	struct im *v;
	size_t n;
	struct blockinfo *bi;	/* the VM's disks (o->q), or NULL */
	long *vtop;		/* per VM disk: its active image, or -1 */
	size_t nbi;
	pid_t vm_pid;		/* QEMU at -s, or 0 */
};

static long
g_find(const struct graph *g, const struct stat *st)
{
	size_t i;

	for (i = 0; i < g->n; i++)
		if (g->v[i].dev == st->st_dev && g->v[i].ino == st->st_ino)
			return (long)i;
	return -1;
}

static long
g_lookup(const struct graph *g, const char *path)
{
	struct stat st;

	if (path == NULL || path[0] != '/' || stat(path, &st) < 0)
		return -1;
	return g_find(g, &st);
}

/* Add path (an existing regular file) and its backing chain. */
static long
g_add(struct graph *g, const char *path, int named)
{
	struct diskfile df;
	struct stat st;
	struct im *m;
	long i, top = -1, prev = -1;
	int depth;
	char *p = xstrdup(path);

	for (depth = 0; p != NULL && depth < CHAIN_MAX; depth++) {
		if (p[0] != '/' || stat(p, &st) < 0 || !S_ISREG(st.st_mode))
			break;
		i = g_find(g, &st);
		if (i < 0) {
			g->v = xreallocarray(g->v, g->n + 1, sizeof(*g->v));
			m = &g->v[g->n];
			memset(m, 0, sizeof(*m));
			m->path = xstrdup(p);
			m->dev = st.st_dev;
			m->ino = st.st_ino;
			m->below = -1;
			m->alloc = (uint64_t)st.st_blocks * 512;
			snprintf(m->fmt, sizeof(m->fmt), "raw");
			if (diskfile_probe(p, &df, NULL) == 0) {
				snprintf(m->fmt, sizeof(m->fmt), "%s",
				    df.format);
				if (df.backing != NULL &&
				    df.backing[0] == '/')
					m->backing = xstrdup(df.backing);
				diskfile_release(&df);
			}
			i = (long)g->n++;
		} else if (depth > 0) {
			if (prev >= 0 && prev != i)
				g->v[prev].below = i;
			break;
		}
		if (depth == 0) {
			top = i;
			g->v[i].named |= named;
		}
		if (prev >= 0 && prev != i)
			g->v[prev].below = i;
		prev = i;
		free(p);
		p = g->v[i].backing ? xstrdup(g->v[i].backing) : NULL;
	}
	free(p);
	return top;
}

/* Every absolute path a disk entry names, and its chain. */
static void
g_add_manifest(struct graph *g, const json_t *m)
{
	const json_t *d, *v;
	const char *k;
	size_t j;
	long n;

	json_array_foreach(json_object_get(m, MF_DISKS), j, d) {
		json_object_foreach((json_t *)d, k, v) {
			if (!json_is_string(v) || json_string_value(v)[0] != '/')
				continue;
			n = g_add(g, json_string_value(v), 1);
			if (n >= 0 && strcmp(k, MF_DISK_FILE) == 0)
				g->v[n].file_of = 1;
		}
	}
}

/*
 * The qcow2 images beside the known ones and in the store's restore
 * directory (restore_dir, or NULL): an overlay no manifest names (a layer
 * revert kept, a user's own, a restored VM's) means its backing file is
 * still needed.
 */
static void
g_add_siblings(struct graph *g, const char *restore_dir)
{
	char **dirs = NULL, *dir, *p;
	struct dirent *de;
	size_t nd = 0, i, k, seen, n0 = g->n;
	struct diskfile df;
	DIR *d;

	for (i = 0; i < n0; i++) {
		dir = path_dirname(g->v[i].path);
		for (k = 0; k < nd && strcmp(dirs[k], dir) != 0; k++)
			;
		if (k < nd) {
			free(dir);
			continue;
		}
		dirs = xreallocarray(dirs, nd + 1, sizeof(*dirs));
		dirs[nd++] = dir;
	}
	if (restore_dir != NULL) {
		dirs = xreallocarray(dirs, nd + 1, sizeof(*dirs));
		dirs[nd++] = xstrdup(restore_dir);
	}
	for (k = 0; k < nd; k++) {
		if ((d = opendir(dirs[k])) == NULL)
			continue;
		seen = 0;
		while ((de = readdir(d)) != NULL && seen++ < SIBLINGS_MAX) {
			if (de->d_name[0] == '.')
				continue;
			p = xasprintf("%s/%s", dirs[k], de->d_name);
			if (g_lookup(g, p) < 0 && diskfile_probe(p, &df,
			    NULL) == 0) {
				if (df.backing != NULL)
					g_add(g, p, 0);
				diskfile_release(&df);
			}
			free(p);
		}
		closedir(d);
	}
	for (k = 0; k < nd; k++)
		free(dirs[k]);
	free(dirs);
}

static void
g_free(struct graph *g)
{
	size_t i;

	for (i = 0; i < g->n; i++) {
		free(g->v[i].path);
		free(g->v[i].backing);
	}
	free(g->v);
	if (g->bi != NULL)
		vm_disks_free(g->bi, g->nbi);
	free(g->vtop);
	memset(g, 0, sizeof(*g));
}

static int
g_build(struct graph *g, const struct diskmerge_opts *o, const json_t *kept,
    const json_t *gone, struct err *e)
{
	const json_t *m;
	size_t i;
	uint64_t start;
	char *rdir;

	memset(g, 0, sizeof(*g));
	json_array_foreach(kept, i, m)
		g_add_manifest(g, m);
	json_array_foreach(gone, i, m)
		g_add_manifest(g, m);
	if (o->q != NULL) {
		if (vm_disks_query(o->q, &g->bi, &g->nbi, e) < 0)
			return -1;
		/* QEMU's names of older layers may be gone or name
		 * another file (diskswap.h): the VM's chain is its active
		 * image's, by the qcow2 headers. */
		g->vtop = xreallocarray(NULL, g->nbi ? g->nbi : 1,
		    sizeof(*g->vtop));
		for (i = 0; i < g->nbi; i++)
			g->vtop[i] = g->bi[i].file != NULL ?
			    g_add(g, g->bi[i].file, 1) : -1;
		if (vm_process(o->q, &g->vm_pid, &start) < 0)
			g->vm_pid = 0;
	}
	rdir = xasprintf("%s/.restores", store_path(o->store));
	g_add_siblings(g, rdir);
	free(rdir);
	return 0;
}

/* The images whose backing file is image i. */
static size_t
g_backers(const struct graph *g, long i, long *first, long *second)
{
	size_t j, n = 0;

	*first = *second = -1;
	for (j = 0; j < g->n; j++) {
		if (g->v[j].below != i)
			continue;
		if (n == 0)
			*first = (long)j;
		else if (n == 1)
			*second = (long)j;
		n++;
	}
	return n;
}

/* The depth of image i in VM disk d's chain (0: its active image), or -1. */
static long
g_depth(const struct graph *g, size_t d, long i)
{
	long k = g->vtop[d], depth;

	for (depth = 0; k >= 0 && depth < CHAIN_MAX; depth++) {
		if (k == i)
			return depth;
		k = g->v[k].below;
	}
	return -1;
}

/* The index of the VM's disk whose chain holds image i, or -1. */
static long
g_vm_disk(const struct graph *g, long i)
{
	size_t d;

	for (d = 0; d < g->nbi; d++)
		if (g_depth(g, d, i) >= 0)
			return (long)d;
	return -1;
}

static int
g_vm_active(const struct graph *g, long i)
{
	long d = g_vm_disk(g, i);

	return d >= 0 && g->vtop[d] == i;
}

static void
proc_comm(const char *pid, char out[64])
{
	char path[300];
	ssize_t n;
	int fd;

	snprintf(out, 64, "?");
	snprintf(path, sizeof(path), "/proc/%s/comm", pid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
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

/*
 * "open by process N (comm)" for the first process other than this one and
 * than skip that holds one of images ids[0..n-1] open; NULL if none.
 */
static char *
held_open(const struct graph *g, const long *ids, size_t n, pid_t skip)
{
	struct dirent *pe, *fe;
	struct stat st;
	char path[300], comm[64], self[32], skipbuf[32];
	char *out = NULL;
	DIR *pd, *fdd;
	size_t c;
	int dfd;

	if ((pd = opendir("/proc")) == NULL)
		return NULL;
	snprintf(self, sizeof(self), "%ld", (long)getpid());
	snprintf(skipbuf, sizeof(skipbuf), "%ld", (long)skip);
	while (out == NULL && (pe = readdir(pd)) != NULL) {
		if (pe->d_name[0] < '1' || pe->d_name[0] > '9' ||
		    strspn(pe->d_name, "0123456789") != strlen(pe->d_name) ||
		    strcmp(pe->d_name, self) == 0 ||
		    strcmp(pe->d_name, skipbuf) == 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%s/fd", pe->d_name);
		if ((dfd = open(path, O_RDONLY | O_DIRECTORY |
		    O_CLOEXEC)) < 0)
			continue;
		if ((fdd = fdopendir(dfd)) == NULL) {
			close(dfd);
			continue;
		}
		while (out == NULL && (fe = readdir(fdd)) != NULL) {
			if (fe->d_name[0] == '.' ||
			    fstatat(dfd, fe->d_name, &st, 0) < 0 ||
			    !S_ISREG(st.st_mode))
				continue;
			for (c = 0; c < n; c++) {
				if (ids[c] < 0 || g->v[ids[c]].dev !=
				    st.st_dev || g->v[ids[c]].ino != st.st_ino)
					continue;
				proc_comm(pe->d_name, comm);
				out = c == 0 ? xasprintf("open by process %s "
				    "(%s)", pe->d_name, comm) : xasprintf("'%s' "
				    "is open by process %s (%s)",
				    g->v[ids[c]].path, pe->d_name, comm);
				break;
			}
		}
		closedir(fdd);
	}
	closedir(pd);
	return out;
}

/* ---- QEMU's view of a disk's chain ------------------------------------------ */

/*
 * QEMU's chain of a disk by depth (0: the active image): each format
 * node's name, its "file" child's name and the file name QEMU opened it
 * under (and reopens it by when its mode changes).  After a disk swap
 * that name may be gone (an earlier swap's temporary name) or name
 * another file (the VM's original image is known by the VM's path, which
 * names the active image now): diskswap.h.
 */
struct qnode {
	char *node;
	char *pnode;		/* its "file" child, or NULL */
	char *file;		/* the file child's file name, or NULL */
};

struct qchain {
	struct qnode *v;
	size_t n;
};

static void
qchain_free(struct qchain *c)
{
	size_t i;

	for (i = 0; i < c->n; i++) {
		free(c->v[i].node);
		free(c->v[i].pnode);
		free(c->v[i].file);
	}
	free(c->v);
	memset(c, 0, sizeof(*c));
}

static json_int_t
graph_child(const json_t *edges, json_int_t parent, const char *role)
{
	const json_t *v;
	size_t i;

	json_array_foreach(edges, i, v)
		if (json_integer_value(json_object_get(v, "parent")) ==
		    parent && json_str(v, "name") != NULL &&
		    strcmp(json_str(v, "name"), role) == 0)
			return json_integer_value(json_object_get(v, "child"));
	return -1;
}

static const char *
graph_name(const json_t *nodes, json_int_t id)
{
	const json_t *v;
	size_t i;

	json_array_foreach(nodes, i, v)
		if (json_integer_value(json_object_get(v, "id")) == id)
			return json_str(v, "name");
	return NULL;
}

static int
qchain_get(struct qmp *q, const char *root, struct qchain *c, struct err *e)
{
	json_t *g = NULL, *nb = NULL, *v;
	const json_t *nodes, *edges;
	const char *name, *pname;
	json_int_t id = -1, fid;
	size_t i;
	int rc = -1;

	memset(c, 0, sizeof(*c));
	if ((g = qmp_call(q, "x-debug-query-block-graph", NULL, e)) == NULL ||
	    (nb = qmp_call(q, "query-named-block-nodes", json_pack("{s:b}",
	    "flat", 1), e)) == NULL)
		goto out;
	nodes = json_object_get(g, "nodes");
	edges = json_object_get(g, "edges");
	json_array_foreach(nodes, i, v)
		if (json_str(v, "name") != NULL && strcmp(json_str(v, "name"),
		    root) == 0 && json_str(v, "type") != NULL &&
		    strcmp(json_str(v, "type"), "block-driver") == 0)
			id = json_integer_value(json_object_get(v, "id"));
	while (id >= 0 && c->n < CHAIN_MAX &&
	    (name = graph_name(nodes, id)) != NULL) {
		c->v = xreallocarray(c->v, c->n + 1, sizeof(*c->v));
		memset(&c->v[c->n], 0, sizeof(c->v[c->n]));
		c->v[c->n].node = xstrdup(name);
		fid = graph_child(edges, id, "file");
		if (fid >= 0 && (pname = graph_name(nodes, fid)) != NULL) {
			c->v[c->n].pnode = xstrdup(pname);
			json_array_foreach(nb, i, v)
				if (json_str(v, "node-name") != NULL &&
				    strcmp(json_str(v, "node-name"), pname) ==
				    0 && json_str(v, "file") != NULL &&
				    json_str(v, "file")[0] == '/')
					c->v[c->n].file = xstrdup(json_str(v,
					    "file"));
		}
		c->n++;
		id = graph_child(edges, id, "backing");
	}
	if (c->n == 0) {
		err_set(e, ERR_FAIL, "the VM has no node '%s'", root);
		goto out;
	}
	rc = 0;
out:
	json_decref(g);
	json_decref(nb);
	if (rc < 0)
		qchain_free(c);
	return rc;
}

/* How QEMU's name of a node relates to the image it is. */
enum qname { QNAME_OK, QNAME_GONE, QNAME_OTHER };

static enum qname
qname_of(const struct qnode *n, const struct im *im)
{
	struct stat st;

	if (n->file == NULL)
		return QNAME_OTHER;
	if (stat(n->file, &st) < 0)
		return errno == ENOENT ? QNAME_GONE : QNAME_OTHER;
	return st.st_dev == im->dev && st.st_ino == im->ino ? QNAME_OK :
	    QNAME_OTHER;
}

/*
 * The backing name to write into an image in dir for the image at path:
 * its base name when it is in dir (as the disk swap writes them), else
 * path.  New string.
 */
static char *
backing_name(const char *dir_of, const char *path)
{
	char *d1 = path_dirname(dir_of), *d2 = path_dirname(path);
	const char *slash = strrchr(path, '/');
	char *out;

	out = strcmp(d1, d2) == 0 && slash != NULL ? xstrdup(slash + 1) :
	    xstrdup(path);
	free(d1);
	free(d2);
	return out;
}

/* ---- the manifests ------------------------------------------------------- */

static int
same_file(const char *a, const struct im *b)
{
	struct stat st;

	return a != NULL && b != NULL && stat(a, &st) == 0 &&
	    st.st_dev == b->dev && st.st_ino == b->ino;
}

/* The dev and ino some manifest proves snapctl made path with, or 0. */
static int
proof_of(const json_t *kept, const json_t *gone, const char *path,
    json_int_t *dev, json_int_t *ino)
{
	const json_t *lists[2] = { kept, gone }, *m, *d;
	struct stat st;
	size_t l, i, j;

	if (path == NULL || lstat(path, &st) < 0 || !S_ISREG(st.st_mode))
		return 0;
	for (l = 0; l < 2; l++)
		json_array_foreach(lists[l], i, m)
			json_array_foreach(json_object_get(m, MF_DISKS), j, d) {
				const json_t *od = json_object_get(d,
				    "overlay_dev"), *oi = json_object_get(d,
				    "overlay_ino"), *fd = json_object_get(d,
				    "file_dev"), *fi = json_object_get(d,
				    "file_ino");

				if (json_is_integer(od) && json_is_integer(oi)
				    && (uint64_t)json_integer_value(od) ==
				    (uint64_t)st.st_dev &&
				    (uint64_t)json_integer_value(oi) ==
				    (uint64_t)st.st_ino)
					goto found;
				if (json_str(d, "file_made_by") != NULL &&
				    json_is_integer(fd) && json_is_integer(fi)
				    && (uint64_t)json_integer_value(fd) ==
				    (uint64_t)st.st_dev &&
				    (uint64_t)json_integer_value(fi) ==
				    (uint64_t)st.st_ino)
					goto found;
			}
	return 0;
found:
	*dev = (json_int_t)st.st_dev;
	*ino = (json_int_t)st.st_ino;
	return 1;
}

/* A disk entry's size, mtime_ns, format and backing, as the file is now. */
static void
refresh_entry(json_t *d)
{
	struct diskfile df;
	const char *f = json_str(d, MF_DISK_FILE);

	if (f == NULL || diskfile_probe(f, &df, NULL) < 0)
		return;
	json_object_set_new(d, "size", json_integer((json_int_t)df.size));
	json_object_set_new(d, "mtime_ns", json_integer(
	    (json_int_t)df.mtime_ns));
	json_object_set_new(d, MF_DISK_FORMAT, json_string(df.format));
	json_object_set_new(d, "backing", df.backing ?
	    json_string(df.backing) : json_null());
	diskfile_release(&df);
}

/*
 * After step st: in manifest m, an entry whose file is the merged-away
 * image names the one that took its state; an overlay that left the chain
 * names the image now above; every entry whose file the step touched is
 * refreshed.  1 if m changed.
 */
static int
update_manifest(json_t *m, const json_t *st, const struct im *touched,
    size_t ntouched, const json_t *kept, const json_t *gone, int refresh_only)
{
	const char *op = json_str(st, "op");
	const char *from = json_str(st, "from"), *into = json_str(st, "into");
	const char *ov_old = json_str(st, "overlay_old");
	const char *ov_new = json_str(st, "overlay_new");
	struct im fromim;
	json_int_t dev, ino;
	json_t *d;
	size_t j, t;
	int changed = 0;

	memset(&fromim, 0, sizeof(fromim));
	/* The merged-away image may be gone already: its recorded id. */
	fromim.dev = (dev_t)json_integer_value(json_object_get(st,
	    "from_dev"));
	fromim.ino = (ino_t)json_integer_value(json_object_get(st,
	    "from_ino"));
	json_array_foreach(json_object_get(m, MF_DISKS), j, d) {
		const char *f = json_str(d, MF_DISK_FILE);
		const char *ov = json_str(d, MF_DISK_OVERLAY);
		int hit = 0;

		if (!refresh_only && strcmp(op, "commit") == 0 && f != NULL &&
		    (strcmp(f, from) == 0 || same_file(f, &fromim))) {
			json_object_set_new(d, MF_DISK_FILE, json_string(into));
			if (proof_of(kept, gone, into, &dev, &ino)) {
				if (json_str(d, "file_made_by") == NULL)
					json_object_set_new(d, "file_made_by",
					    json_string(json_str(m, MF_NAME)));
				json_object_set_new(d, "file_dev",
				    json_integer(dev));
				json_object_set_new(d, "file_ino",
				    json_integer(ino));
			} else {
				json_object_set_new(d, "file_made_by",
				    json_null());
				json_object_set_new(d, "file_dev", json_null());
				json_object_set_new(d, "file_ino", json_null());
			}
			hit = 1;
		}
		if (!refresh_only && ov != NULL && ov_old != NULL &&
		    ov_new != NULL && strcmp(ov, ov_old) == 0) {
			json_object_set_new(d, MF_DISK_OVERLAY,
			    json_string(ov_new));
			/* Proof moves only with proof: else it proves
			 * nothing. */
			if (proof_of(kept, gone, ov_new, &dev, &ino)) {
				json_object_set_new(d, "overlay_dev",
				    json_integer(dev));
				json_object_set_new(d, "overlay_ino",
				    json_integer(ino));
			} else {
				json_object_set_new(d, "overlay_dev",
				    json_null());
				json_object_set_new(d, "overlay_ino",
				    json_null());
			}
			changed = 1;
		}
		f = json_str(d, MF_DISK_FILE);
		for (t = 0; t < ntouched; t++)
			hit |= same_file(f, &touched[t]);
		if (hit) {
			refresh_entry(d);
			changed = 1;
		}
	}
	return changed;
}

/* ---- one step -------------------------------------------------------------- */

static json_t *
load_kept(const struct diskmerge_opts *o, struct err *e)
{
	json_t *bad = NULL, *all;

	all = store_list(o->store, &bad, e);
	json_decref(bad);
	return all;
}

/*
 * The nodes of the image a live merge took out of the chain (the step's
 * "from_nodes", format node first).  Nodes the user made with -blockdev
 * are the monitor's and keep their file open until blockdev-del; an
 * implicit node ("#...") went with the chain.  A node still in use
 * refuses, which is fine.
 */
static void
release_nodes(struct qmp *q, const json_t *st)
{
	const json_t *v;
	size_t i;

	json_array_foreach(json_object_get(st, "from_nodes"), i, v)
		if (json_is_string(v) && json_string_value(v)[0] != '#')
			qmp_do(q, "blockdev-del", json_pack("{s:s}",
			    "node-name", json_string_value(v)), NULL);
}

/* Remove the step's temporary names ("links") that are still links of
 * the image they were made for; never an image's last name. */
static void
links_remove(const json_t *st)
{
	const json_t *l;
	struct stat sb;
	size_t i;

	json_array_foreach(json_object_get(st, "links"), i, l) {
		const char *n = json_str(l, "name");

		if (n == NULL || lstat(n, &sb) < 0 || !S_ISREG(sb.st_mode) ||
		    sb.st_nlink < 2 || (json_int_t)sb.st_dev !=
		    json_integer_value(json_object_get(l, "dev")) ||
		    (json_int_t)sb.st_ino != json_integer_value(
		    json_object_get(l, "ino")))
			continue;
		unlink(n);
	}
}

/* Make the step's temporary names, each a link of its image (checked by
 * device and inode first). */
static int
links_make(const json_t *st, struct err *e)
{
	const json_t *l;
	struct stat sb;
	size_t i;

	json_array_foreach(json_object_get(st, "links"), i, l) {
		const char *n = json_str(l, "name"), *f = json_str(l, "file");

		if (n == NULL || f == NULL)
			continue;
		if (stat(f, &sb) < 0 || (json_int_t)sb.st_dev !=
		    json_integer_value(json_object_get(l, "dev")) ||
		    (json_int_t)sb.st_ino != json_integer_value(
		    json_object_get(l, "ino"))) {
			err_set(e, ERR_FAIL, "'%s' changed during the merge",
			    f);
			return -1;
		}
		if (link(f, n) == 0)
			continue;
		if (errno != EEXIST) {
			err_sys(e, ERR_FAIL, "cannot link '%s' to '%s' for "
			    "QEMU", n, f);
			return -1;
		}
		/* A killed run's link, or a file QEMU must not open. */
		{
			struct stat nb;

			if (lstat(n, &nb) < 0 || !S_ISREG(nb.st_mode) ||
			    nb.st_dev != sb.st_dev || nb.st_ino != sb.st_ino) {
				err_set(e, ERR_FAIL, "'%s' exists and is not "
				    "'%s': QEMU would reopen it as that "
				    "image", n, f);
				return -1;
			}
		}
	}
	return 0;
}

/* 1 if job id is in query-block-jobs; *done and *len its progress. */
static int
job_running(struct qmp *q, uint64_t *done, uint64_t *len, struct err *e)
{
	json_t *r, *j;
	size_t i;
	int found = 0;

	if ((r = qmp_call(q, "query-block-jobs", NULL, e)) == NULL)
		return -1;
	json_array_foreach(r, i, j) {
		if (json_str(j, "device") == NULL ||
		    strcmp(json_str(j, "device"), JOB_ID) != 0)
			continue;
		found = 1;
		*done = (uint64_t)json_integer_value(json_object_get(j,
		    "offset"));
		*len = (uint64_t)json_integer_value(json_object_get(j, "len"));
	}
	json_decref(r);
	return found;
}

/* Wait for our job to end; SIGINT cancels it. */
static int
job_wait(const struct diskmerge_opts *o, const char *from, const char *into,
    struct err *e)
{
	json_t *match = json_pack("{s:s}", "device", JOB_ID);
	struct qmp_event *ev = NULL;
	struct err le = ERR_INIT;
	uint64_t done = 0, len = 0;
	int r, absent = 0, rc = -1;

	for (;;) {
		if (sig_caught()) {
			qmp_do(o->q, "block-job-cancel", json_pack("{s:s}",
			    "device", JOB_ID), NULL);
			ev = qmp_wait_event(o->q, "BLOCK_JOB_CANCELLED", match,
			    CANCEL_WAIT_MS, NULL);
			qmp_event_free(ev);
			ev = NULL;
			sig_interrupted(e);
			goto out;
		}
		err_clear(&le);
		ev = qmp_wait_event(o->q, "BLOCK_JOB_COMPLETED", match,
		    JOB_POLL_MS, &le);
		if (ev != NULL)
			break;
		if (le.kind != ERR_TIMEOUT) {
			err_prefix(&le, "during the merge of '%s' into "
			    "'%s': ", from, into);
			err_propagate(e, &le, NULL);
			goto out;
		}
		err_clear(&le);
		ev = qmp_wait_event(o->q, "BLOCK_JOB_CANCELLED", match, 0, &le);
		if (ev != NULL) {
			err_set(e, ERR_FAIL, "the merge of '%s' into '%s' was "
			    "cancelled in QEMU", from, into);
			goto out;
		}
		err_clear(&le);
		if ((r = job_running(o->q, &done, &len, &le)) < 0) {
			err_propagate(e, &le, NULL);
			goto out;
		}
		if (r == 1 && o->progress != NULL)
			o->progress(o->opaque, from, into, done, len);
		if (r == 0 && ++absent > 25) {
			err_set(e, ERR_FAIL, "the merge job of '%s' into '%s' "
			    "ended without an event", from, into);
			goto out;
		}
	}
	if (json_str(ev->data, "error") != NULL) {
		err_set(e, ERR_FAIL, "merging '%s' into '%s': %s", from, into,
		    json_str(ev->data, "error"));
		goto out;
	}
	if (o->progress != NULL)
		o->progress(o->opaque, from, into, 1, 1);
	rc = 0;
out:
	qmp_event_free(ev);
	json_decref(match);
	return rc;
}

static int
run_img(const struct diskmerge_opts *o, char *const argv[], struct err *e)
{
	char *log = xasprintf("%s/.merge-qemu-img.log", store_path(o->store));
	struct proc *p;
	int rc = -1;

	if ((p = proc_spawn(argv, log, "qemu-img", e)) == NULL)
		goto out;
	while (!proc_wait(p, JOB_POLL_MS)) {
		if (sig_caught()) {
			/* Killed midway, rebase and commit -d leave a valid
			 * chain. */
			proc_kill(p);
			sig_interrupted(e);
			goto out;
		}
	}
	if (!proc_succeeded(p)) {
		proc_alive(p, e);
		goto out;
	}
	unlink(log);
	rc = 0;
out:
	proc_free(p);
	free(log);
	return rc;
}

/* The backing of path, resolved, or NULL; *ok 0 when it cannot be read. */
static char *
backing_now(const char *path, int *ok)
{
	struct diskfile df;
	char *b;

	*ok = path != NULL && diskfile_probe(path, &df, NULL) == 0;
	if (!*ok)
		return NULL;
	b = df.backing;
	df.backing = NULL;
	diskfile_release(&df);
	return b;
}

static int
same_path(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0 || diskfile_same(a, b);
}

/* 1 when the chain shows step st done already. */
static int
step_done(const json_t *st)
{
	const char *op = json_str(st, "op");
	const char *S = json_str(st, "S"), *U = json_str(st, "U");
	const char *B = json_str(st, "B"), *W = json_str(st, "W");
	char *b;
	int ok, done;

	if (strcmp(op, "stream") == 0) {
		b = backing_now(U, &ok);
		done = ok && (B == NULL ? b == NULL : same_path(b, B));
	} else {
		if (W == NULL)
			return 0;
		b = backing_now(W, &ok);
		done = ok && same_path(b, S);
	}
	free(b);
	return done;
}

static int
step_live(const struct diskmerge_opts *o, const json_t *st, struct err *e)
{
	const char *op = json_str(st, "op");
	const char *S = json_str(st, "S"), *U = json_str(st, "U");
	const char *speed_s = getenv(DISKMERGE_SPEED_ENV);
	const char *bf = json_str(st, "backing_file");
	int stream = strcmp(op, "stream") == 0;
	uint64_t done, len;
	json_t *args;
	int r, rc = -1;

	if ((r = job_running(o->q, &done, &len, e)) < 0)
		return -1;
	if (r == 1) {		/* a killed run's job: wait for it */
		if (job_wait(o, stream ? S : U, stream ? U : S, e) < 0)
			goto out;
		release_nodes(o->q, st);
		rc = 0;
		goto out;
	}
	if (step_done(st)) {
		release_nodes(o->q, st);
		rc = 0;
		goto out;
	}
	if (json_str(st, "U_node") == NULL) {
		err_set(e, ERR_FAIL, "the merge journal's step has no node "
		    "names");
		return -1;
	}
	if (stream) {
		args = json_pack("{s:s, s:s}", "job-id", JOB_ID, "device",
		    json_str(st, "U_node"));
		if (json_str(st, "B_node") != NULL)
			json_object_set_new(args, "base-node",
			    json_string(json_str(st, "B_node")));
	} else
		args = json_pack("{s:s, s:s, s:s, s:s}", "job-id", JOB_ID,
		    "device", json_str(st, "root"), "top-node",
		    json_str(st, "U_node"), "base-node", json_str(st,
		    "S_node"));
	/* QEMU writes its node's file name otherwise: after a disk swap the
	 * VM's path or a temporary name (diskswap.h). */
	if (bf != NULL)
		json_object_set_new(args, "backing-file", json_string(bf));
	if (speed_s != NULL && *speed_s != '\0')
		json_object_set_new(args, "speed", json_integer(
		    strtoll(speed_s, NULL, 10)));
	if (links_make(st, e) < 0) {
		json_decref(args);
		goto out;
	}
	if (qmp_do(o->q, stream ? "block-stream" : "block-commit", args,
	    e) < 0)
		goto out;
	if (job_wait(o, stream ? S : U, stream ? U : S, e) < 0)
		goto out;
	release_nodes(o->q, st);
	rc = 0;
out:
	links_remove(st);
	return rc;
}

static int
step_offline(const struct diskmerge_opts *o, const json_t *st, struct err *e)
{
	const char *op = json_str(st, "op");
	const char *S = json_str(st, "S"), *U = json_str(st, "U");
	const char *B = json_str(st, "B"), *W = json_str(st, "W");
	const char *fB = json_str(st, "B_format");
	const char *fS = json_str(st, "S_format");
	char *argv[16], *bname = NULL;
	int n = 0, rc = -1;

	if (step_done(st))
		return 0;
	if (o->progress != NULL)
		o->progress(o->opaque, strcmp(op, "stream") == 0 ? S : U,
		    strcmp(op, "stream") == 0 ? U : S, 0, 1);
	if (strcmp(op, "stream") == 0) {
		/* Safe mode: U gets every cluster in which S differs from B. */
		argv[n++] = (char *)"qemu-img";
		argv[n++] = (char *)"rebase";
		argv[n++] = (char *)"-f";
		argv[n++] = (char *)"qcow2";
		/* Relative names as the disk swap writes them (qemu-img
		 * resolves them against U's directory). */
		bname = B != NULL ? backing_name(U, B) : NULL;
		argv[n++] = (char *)"-b";
		argv[n++] = bname != NULL ? bname : (char *)"";
		if (B != NULL) {
			argv[n++] = (char *)"-F";
			argv[n++] = (char *)(fB ? fB : "qcow2");
		}
		argv[n++] = (char *)U;
		argv[n] = NULL;
		if (run_img(o, argv, e) < 0)
			goto out;
	} else {
		/* -d: U stays whole, so the chain is valid all along. */
		argv[n++] = (char *)"qemu-img";
		argv[n++] = (char *)"commit";
		argv[n++] = (char *)"-d";
		argv[n++] = (char *)"-f";
		argv[n++] = (char *)"qcow2";
		argv[n++] = (char *)U;
		argv[n] = NULL;
		if (run_img(o, argv, e) < 0)
			goto out;
		if (W != NULL) {
			bname = backing_name(W, S);
			n = 0;
			argv[n++] = (char *)"qemu-img";
			argv[n++] = (char *)"rebase";
			argv[n++] = (char *)"-u";
			argv[n++] = (char *)"-f";
			argv[n++] = (char *)"qcow2";
			argv[n++] = (char *)"-b";
			argv[n++] = bname;
			argv[n++] = (char *)"-F";
			argv[n++] = (char *)(fS ? fS : "qcow2");
			argv[n++] = (char *)W;
			argv[n] = NULL;
			if (run_img(o, argv, e) < 0)
				goto out;
		}
	}
	if (o->progress != NULL)
		o->progress(o->opaque, strcmp(op, "stream") == 0 ? S : U,
		    strcmp(op, "stream") == 0 ? U : S, 1, 1);
	rc = 0;
out:
	free(bname);
	return rc;
}

static void
test_hold(void)
{
	const char *h = getenv(DISKMERGE_HOLD_ENV);
	struct timespec ts;
	long ms;

	if (h == NULL || *h == '\0')
		return;
	ms = strtol(h, NULL, 10);
	/* The one line a core file writes (diskmerge.h): a test hook. */
	if (write(STDERR_FILENO, "merge: holding\n", 15) < 0)
		return;
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR && !sig_caught())
		;
}

/* Bring the kept manifests and the journal's gone ones up to date. */
static int
step_update(const struct diskmerge_opts *o, json_t *journal, const json_t *st,
    int refresh_only, struct err *e)
{
	const char *keys[] = { "S", "U", "W" };
	json_t *kept = NULL, *m, *gone = json_object_get(journal, "gone");
	struct im touched[3];
	struct stat sb;
	size_t i, nt = 0;
	int rc = -1;

	for (i = 0; i < 3; i++) {
		const char *p = json_str(st, keys[i]);

		if (p != NULL && stat(p, &sb) == 0) {
			memset(&touched[nt], 0, sizeof(touched[nt]));
			touched[nt].dev = sb.st_dev;
			touched[nt].ino = sb.st_ino;
			nt++;
		}
	}
	if ((kept = load_kept(o, e)) == NULL)
		goto out;
	json_array_foreach(kept, i, m)
		if (update_manifest(m, st, touched, nt, kept, gone,
		    refresh_only) &&
		    store_manifest_replace(o->store, json_str(m, MF_NAME), m,
		    e) < 0)
			goto out;
	json_array_foreach(gone, i, m)
		update_manifest(m, st, touched, nt, kept, gone, refresh_only);
	rc = 0;
out:
	json_decref(kept);
	return rc;
}

static int
step_do(const struct diskmerge_opts *o, json_t *journal, json_t *st,
    struct err *e)
{
	int live = json_is_true(json_object_get(st, "live"));
	const json_t *left;

	if (live && o->q == NULL) {
		/* A killed run's live step, rerun without -s: QEMU may still
		 * be at it, or gone (then the chain is valid: go offline). */
		struct graph g;
		long ids[2];
		char *why;

		memset(&g, 0, sizeof(g));
		ids[0] = g_add(&g, json_str(st, "S"), 1);
		ids[1] = g_add(&g, json_str(st, "U"), 1);
		why = held_open(&g, ids, 2, 0);
		g_free(&g);
		if (why != NULL) {
			err_set(e, ERR_FAIL, "an interrupted live merge is "
			    "pending and %s: give the VM's socket (-s)", why);
			free(why);
			return -1;
		}
		live = 0;
		json_object_set_new(st, "live", json_false());
		links_remove(st);
	}
	if ((live ? step_live(o, st, e) : step_offline(o, st, e)) < 0) {
		/* Cancelled (SIGINT): the chain is valid, the images hold
		 * what they held, but a partly streamed U has a new size and
		 * mtime.  The journal keeps the rest for the next run. */
		if (e != NULL && e->kind == ERR_INTR &&
		    step_update(o, journal, st, 1, NULL) == 0) {
			json_object_set_new(journal, "step", json_null());
			store_journal_write(o->store, journal, NULL);
		}
		return -1;
	}
	test_hold();
	if (step_update(o, journal, st, 0, e) < 0)
		return -1;
	left = json_object_get(st, "left");
	if (json_is_object(left))
		json_array_append(json_object_get(journal, "left"),
		    (json_t *)left);
	json_object_set_new(journal, "step", json_null());
	return store_journal_write(o->store, journal, e);
}

/* ---- the plan ------------------------------------------------------------------ */

static int
named_file_by(const json_t *ms, const struct im *im)
{
	const json_t *m, *d;
	size_t i, j;

	json_array_foreach(ms, i, m)
		json_array_foreach(json_object_get(m, MF_DISKS), j, d)
			if (same_file(json_str(d, MF_DISK_FILE), im))
				return 1;
	return 0;
}

static void
need_name(json_t *links, const struct qnode *n, const struct im *im)
{
	if (qname_of(n, im) == QNAME_GONE)
		json_array_append_new(links, json_pack("{s:s, s:s, s:I, s:I}",
		    "name", n->file, "file", im->path, "dev",
		    (json_int_t)im->dev, "ino", (json_int_t)im->ino));
}

/*
 * The live part of a step on VM disk vd: QEMU's node names by depth, and
 * whether QEMU can reopen read-write the nodes the job writes (a stream
 * U, a commit S and the image W above U) by the names it knows them
 * under.  A name that is gone is linked to its image for the job
 * ("links"); a node whose name is another file now (the VM's original
 * image, known by the VM's path) is never reopened: a commit into it
 * becomes a stream of it into U.  Explicit backing names ("backing_file")
 * so QEMU never writes its node names into a header.  NULL with *why when
 * the merge cannot be live.
 */
static json_t *
plan_live(const struct graph *g, struct qmp *q, size_t vd, long s, long u,
    long b, long w, int *commit, char **why)
{
	const struct blockinfo *vb = &g->bi[vd];
	struct qchain qc;
	struct err le = ERR_INIT;
	json_t *out = NULL, *links;
	long len = 0, k, ds, du, dw, idx[CHAIN_MAX];
	struct stat top;
	enum qname nm;
	char *bf;

	memset(&qc, 0, sizeof(qc));
	if (qchain_get(q, vb->node ? vb->node : vb->device, &qc, &le) < 0) {
		*why = xasprintf("QEMU's chain cannot be read: %s", le.msg);
		err_clear(&le);
		return NULL;
	}
	for (k = g->vtop[vd]; k >= 0 && len < CHAIN_MAX; k = g->v[k].below)
		idx[len++] = k;
	if ((size_t)len != qc.n) {
		*why = xasprintf("the VM's chain is %zu deep, the files' "
		    "headers say %ld (changed behind snapctl's back?)", qc.n,
		    len);
		goto out;
	}
	if (stat(g->v[idx[0]].path, &top) < 0)
		memset(&top, 0, sizeof(top));
	for (k = 0; k < len; k++) {
		struct stat st;

		if (qname_of(&qc.v[k], &g->v[idx[k]]) != QNAME_OTHER)
			continue;
		/* The VM's original image, known by the VM's path. */
		if (qc.v[k].file != NULL && stat(qc.v[k].file, &st) == 0 &&
		    st.st_dev == top.st_dev && st.st_ino == top.st_ino)
			continue;
		*why = xasprintf("the VM knows '%s' as '%s', another file "
		    "(changed behind snapctl's back?)", g->v[idx[k]].path,
		    qc.v[k].file ? qc.v[k].file : "?");
		goto out;
	}
	ds = g_depth(g, vd, s);
	du = g_depth(g, vd, u);
	dw = w >= 0 ? g_depth(g, vd, w) : -1;
	if (ds < 0 || du < 0 || (w >= 0 && dw < 0)) {
		*why = xasprintf("'%s' is not in the VM's chain",
		    g->v[u].path);
		goto out;
	}
	if (*commit && (qname_of(&qc.v[ds], &g->v[s]) == QNAME_OTHER ||
	    (dw > 0 && qname_of(&qc.v[dw], &g->v[w]) == QNAME_OTHER)))
		*commit = 0;	/* never reopen it: stream it into U */
	links = json_array();
	out = json_pack("{s:s, s:o}", "U_node", qc.v[du].node, "links", links);
	if (*commit) {
		json_object_set_new(out, "S_node", json_string(qc.v[ds].node));
		need_name(links, &qc.v[ds], &g->v[s]);
		if (dw > 0)
			need_name(links, &qc.v[dw], &g->v[w]);
		if (w >= 0) {
			bf = backing_name(g->v[w].path, g->v[s].path);
			json_object_set_new(out, "backing_file",
			    json_string(bf));
			free(bf);
		}
		json_object_set_new(out, "from_nodes", json_pack("[s, s?]",
		    qc.v[du].node, qc.v[du].pnode));
	} else {
		nm = qname_of(&qc.v[du], &g->v[u]);
		if (du > 0 && nm == QNAME_OTHER) {
			*why = xasprintf("QEMU knows '%s' by the VM's path, "
			    "which names its current disk now, and would "
			    "reopen that: merged once the VM restarted",
			    g->v[u].path);
			json_decref(out);
			out = NULL;
			goto out;
		}
		if (du > 0)
			need_name(links, &qc.v[du], &g->v[u]);
		if (b >= 0) {
			json_object_set_new(out, "B_node",
			    json_string(qc.v[ds + 1].node));
			bf = backing_name(g->v[u].path, g->v[b].path);
			json_object_set_new(out, "backing_file",
			    json_string(bf));
			free(bf);
		}
		json_object_set_new(out, "from_nodes", json_pack("[s, s?]",
		    qc.v[ds].node, qc.v[ds].pnode));
	}
out:
	qchain_free(&qc);
	return out;
}

/*
 * The step for disk d of gone checkpoint c, or NULL with *why (allocated)
 * when it is kept, or NULL and no *why when there is nothing to merge.
 */
static json_t *
plan(const struct graph *g, struct qmp *q, const json_t *kept,
    const json_t *gone, const char *c, const json_t *d, char **why)
{
	const char *file = json_str(d, MF_DISK_FILE);
	long s, u, u2, w, w2, b, ids[3], vd = -1;
	const struct blockinfo *vb = NULL;
	json_int_t dev, ino;
	json_t *st, *live_args = NULL;
	int live, commit;
	size_t nb;

	*why = NULL;
	if ((s = g_lookup(g, file)) < 0)
		return NULL;
	if (named_file_by(kept, &g->v[s]))
		return NULL;
	nb = g_backers(g, s, &u, &u2);
	if (nb == 0)
		return NULL;
	if (nb > 1) {
		/* One no checkpoint knows (a user's overlay, a layer revert
		 * kept, a restored VM's) is the one worth naming. */
		if (!g->v[u2].named || !g->v[u].named)
			*why = xasprintf("the backing file of '%s', which no "
			    "checkpoint names%s", g->v[!g->v[u2].named ? u2 :
			    u].path, g->bi != NULL ? " and the VM does not "
			    "use" : "");
		else
			*why = xasprintf("the backing file of '%s' and '%s'",
			    g->v[u].path, g->v[u2].path);
		return NULL;
	}
	if (!g->v[u].named) {
		*why = xasprintf("the backing file of '%s', which no "
		    "checkpoint names%s", g->v[u].path, g->bi != NULL ?
		    " and the VM does not use" : "");
		return NULL;
	}
	if (strcmp(g->v[u].fmt, "qcow2") != 0) {
		*why = xasprintf("'%s' is no qcow2 image", g->v[u].path);
		return NULL;
	}
	b = g->v[s].below;
	if (g->v[s].backing != NULL && b < 0) {
		*why = xasprintf("its backing file '%s' cannot be read",
		    g->v[s].backing);
		return NULL;
	}
	live = g->bi != NULL && q != NULL && (vd = g_vm_disk(g, s)) >= 0;
	if (live)
		vb = &g->bi[vd];
	commit = b < 0 && g->v[u].file_of && !(live && g_vm_active(g, u));
	w = -1;
	if (commit) {
		nb = g_backers(g, u, &w, &w2);
		if (nb > 1) {
			*why = xasprintf("'%s' above it is the backing file "
			    "of '%s' and '%s'", g->v[u].path, g->v[w].path,
			    g->v[w2].path);
			return NULL;
		}
		if (w >= 0 && !g->v[w].named) {
			*why = xasprintf("'%s' above it is the backing file "
			    "of '%s', which no checkpoint names",
			    g->v[u].path, g->v[w].path);
			return NULL;
		}
	}
	if (live && (live_args = plan_live(g, q, (size_t)vd, s, u, b, w,
	    &commit, why)) == NULL)
		return NULL;
	if (!commit)
		w = -1;
	ids[0] = s;
	ids[1] = u;
	ids[2] = w;
	if ((*why = held_open(g, ids, 3, live ? g->vm_pid : 0)) != NULL) {
		json_decref(live_args);
		return NULL;
	}
	st = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s?, s:s?, s:s, s:s, "
	    "s:b, s:I}",
	    "op", commit ? "commit" : "stream", "checkpoint", c,
	    "device", json_str(d, MF_DISK_DEVICE) ? json_str(d,
	    MF_DISK_DEVICE) : "?",
	    "S", g->v[s].path, "U", g->v[u].path,
	    "B", b >= 0 ? g->v[b].path : NULL,
	    "W", w >= 0 ? g->v[w].path : NULL,
	    "S_format", g->v[s].fmt, "B_format", b >= 0 ? g->v[b].fmt : "qcow2",
	    "live", live, "bytes", (json_int_t)(commit ? g->v[u].alloc :
	    g->v[s].alloc));
	if (live && vb != NULL) {
		json_object_set_new(st, "root", json_string(vb->node ?
		    vb->node : vb->device));
		json_object_update(st, live_args);
		json_decref(live_args);
	}
	/* What is merged away, and what takes its place. */
	json_object_set_new(st, "from", json_string(commit ? g->v[u].path :
	    g->v[s].path));
	json_object_set_new(st, "into", json_string(commit ? g->v[s].path :
	    g->v[u].path));
	json_object_set_new(st, "from_dev", json_integer(commit ?
	    (json_int_t)g->v[u].dev : (json_int_t)g->v[s].dev));
	json_object_set_new(st, "from_ino", json_integer(commit ?
	    (json_int_t)g->v[u].ino : (json_int_t)g->v[s].ino));
	json_object_set_new(st, "overlay_old", json_string(commit ?
	    g->v[u].path : g->v[s].path));
	json_object_set_new(st, "overlay_new", commit ? (w >= 0 ?
	    json_string(g->v[w].path) : json_null()) :
	    json_string(g->v[u].path));
	if (commit) {
		/* U leaves the chain: the proof that snapctl made it goes
		 * with it, for diskgc. */
		if (proof_of(kept, gone, g->v[u].path, &dev, &ino))
			json_object_set_new(st, "left", json_pack("{s:s, s:I, "
			    "s:I}", "file", g->v[u].path, "dev", dev, "ino",
			    ino));
		else
			json_object_set_new(st, "left", json_pack("{s:s, s:n, "
			    "s:n}", "file", g->v[u].path, "dev", "ino"));
	}
	return st;
}

json_t *
diskmerge_journal_new(const json_t *gone_m)
{
	return json_pack("{s:O, s:n, s:[]}", "gone", gone_m, "step", "left");
}

/* The report's view of a done step. */
static json_t *
report_step(const json_t *st, double seconds, int recovered)
{
	const char *op = json_str(st, "op");

	return json_pack("{s:s, s:s, s:s, s:b, s:s, s:b, s:s, s:s, s:O, "
	    "s:f, s:b}", "checkpoint", json_str(st, "checkpoint"),
	    "device", json_str(st, "device"), "file", json_str(st, "S"),
	    "merged", 1, "how", op, "live", json_is_true(json_object_get(st,
	    "live")), "from", json_str(st, "from"), "into", json_str(st,
	    "into"), "bytes", json_object_get(st, "bytes"), "seconds", seconds,
	    "recovered", recovered);
}

static void
report_kept(json_t *kept_why, const char *c, const char *dev,
    const char *file, char *why)
{
	char *key = xasprintf("%s\n%s", c, dev);

	json_object_set_new(kept_why, key, json_pack("{s:s, s:s, s:s?, s:b, "
	    "s:s}", "checkpoint", c, "device", dev, "file", file, "merged", 0,
	    "reason", why));
	free(key);
	free(why);
}

int
diskmerge_run(const struct diskmerge_opts *o, json_t *journal,
    json_t **report, struct err *e)
{
	json_t *kept = NULL, *st, *why_map = json_object(), *v;
	json_t *gone = json_object_get(journal, "gone");
	const json_t *m, *d;
	struct graph g;
	const char *k;
	size_t i, j, pass;
	uint64_t t0;
	char *why;
	int did, rc = -1;

	memset(&g, 0, sizeof(g));
	*report = json_array();
	if (!json_is_array(json_object_get(journal, "left")))
		json_object_set_new(journal, "left", json_array());
	/* A killed run's step first. */
	st = json_object_get(journal, "step");
	if (json_is_object(st)) {
		json_incref(st);
		t0 = now_mono_ms();
		if (step_do(o, journal, st, e) < 0) {
			json_decref(st);
			goto out;
		}
		json_array_append_new(*report, report_step(st,
		    (double)(now_mono_ms() - t0) / 1000.0, 1));
		json_decref(st);
	}
	for (pass = 0, did = 1; did && pass < 64; pass++) {
		did = 0;
		json_object_clear(why_map);
		json_decref(kept);
		if ((kept = load_kept(o, e)) == NULL)
			goto out;
		g_free(&g);
		if (g_build(&g, o, kept, gone, e) < 0)
			goto out;
		json_array_foreach(gone, i, m) {
			json_array_foreach(json_object_get(m, MF_DISKS), j, d) {
				st = plan(&g, o->q, kept, gone, json_str(m,
				    MF_NAME),
				    d, &why);
				if (why != NULL)
					report_kept(why_map, json_str(m,
					    MF_NAME), json_str(d,
					    MF_DISK_DEVICE) ? json_str(d,
					    MF_DISK_DEVICE) : "?", json_str(d,
					    MF_DISK_FILE), why);
				if (st == NULL)
					continue;
				/* The journal first: a kill from here on is
				 * finished by the next run. */
				json_object_set(journal, "step", st);
				if (store_journal_write(o->store, journal,
				    e) < 0) {
					json_decref(st);
					goto out;
				}
				t0 = now_mono_ms();
				if (step_do(o, journal, st, e) < 0) {
					json_decref(st);
					goto out;
				}
				json_array_append_new(*report, report_step(st,
				    (double)(now_mono_ms() - t0) / 1000.0, 0));
				json_decref(st);
				did = 1;
				break;
			}
			if (did)
				break;
		}
	}
	json_object_foreach(why_map, k, v)
		json_array_append(*report, v);
	rc = 0;
out:
	g_free(&g);
	json_decref(kept);
	json_decref(why_map);
	return rc;
}
