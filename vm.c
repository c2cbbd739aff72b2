/*
 * vm.c - the monitor commands snapctl runs against a VM (vm.h), each sent
 * and its reply parsed here once: query-status, stop, cont,
 * query-migrate, migrate_cancel, query-block and the overlay transaction.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "util.h"
#include "vm.h"

#include "banned.h"

#define CANCEL_NUDGE_MS 3000	/* then migrate-continue if held */
#define CANCEL_POLL_MS 50
#define CANCEL_RENUDGE_MS 1000	/* migrate-continue again while cancelling */
#define CHAIN_MAX 256		/* deeper than any chain QEMU would open */

/* ---- run state ---------------------------------------------------------- */

static const struct {
	const char *name;
	enum vm_runstate state;
} runstates[] = {
	{ "running", VM_RS_RUNNING },
	{ "paused", VM_RS_PAUSED },
	{ "postmigrate", VM_RS_POSTMIGRATE },
	{ "finish-migrate", VM_RS_FINISH_MIGRATE },
	{ "inmigrate", VM_RS_INMIGRATE },
};

int
vm_status(struct qmp *q, struct vm_status *st, struct err *e)
{
	json_t *r;
	const char *s;
	size_t i;

	memset(st, 0, sizeof(*st));
	if ((r = qmp_call(q, "query-status", NULL, e)) == NULL)
		return -1;
	st->running = json_is_true(json_object_get(r, "running"));
	if ((s = json_str(r, "status")) != NULL) {
		snprintf(st->status, sizeof(st->status), "%s", s);
		st->state = VM_RS_OTHER;
		for (i = 0; i < sizeof(runstates) / sizeof(runstates[0]); i++)
			if (strcmp(s, runstates[i].name) == 0)
				st->state = runstates[i].state;
	}
	json_decref(r);
	return 0;
}

int
vm_stopped(const struct vm_status *st)
{
	return st->state == VM_RS_PAUSED || st->state == VM_RS_POSTMIGRATE ||
	    st->state == VM_RS_FINISH_MIGRATE;
}

int
vm_stop(struct qmp *q, struct err *e)
{
	return qmp_do(q, "stop", NULL, e);
}

int
vm_resume(struct qmp *q, struct err *e)
{
	uint64_t start = now_mono_ms();
	struct vm_status st;
	struct err le;
	json_t *r;
	int finishing, again = 1;

	for (;;) {
		le = (struct err)ERR_INIT;
		r = qmp_execute(q, "cont", NULL, &le);
		if (r != NULL) {
			json_decref(r);
			return 0;
		}
		if (le.qmp_class[0] == '\0' ||
		    now_mono_ms() - start > VM_CONT_RETRY_MS)
			return err_propagate(e, &le, "cont");
		finishing = vm_status(q, &st, NULL) == 0 &&
		    st.state == VM_RS_FINISH_MIGRATE;
		/* It may have left finish-migrate since cont failed: once
		 * more then. */
		if (!finishing && !again--)
			return err_propagate(e, &le, "cont");
		if (finishing)
			poll(NULL, 0, 1);
	}
}

/* ---- migration ---------------------------------------------------------- */

static uint64_t
json_u64(const json_t *obj, const char *key)
{
	return (uint64_t)json_integer_value(json_object_get(obj, key));
}

int
vm_migration_query(struct qmp *q, struct vm_migration *m, struct err *e)
{
	json_t *r, *ram;
	json_int_t psize;
	const char *s;

	memset(m, 0, sizeof(*m));
	m->downtime_ms = -1;
	if ((r = qmp_call(q, "query-migrate", NULL, e)) == NULL)
		return -1;
	if ((s = json_str(r, "status")) != NULL)
		snprintf(m->status, sizeof(m->status), "%s", s);
	if ((s = json_str(r, "error-desc")) != NULL)
		snprintf(m->error_desc, sizeof(m->error_desc), "%s", s);
	if (json_is_integer(json_object_get(r, "downtime")))
		m->downtime_ms = json_integer_value(json_object_get(r,
		    "downtime"));
	ram = json_object_get(r, "ram");
	if (json_is_object(ram)) {
		m->has_ram = 1;
		m->ram_total = json_u64(ram, "total");
		m->ram_remaining = json_u64(ram, "remaining");
		m->ram_transferred = json_u64(ram, "transferred");
		m->dirty_syncs = json_u64(ram, "dirty-sync-count");
		psize = json_integer_value(json_object_get(ram, "page-size"));
		if (psize <= 0)
			psize = 4096;
		m->dirty_rate = json_u64(ram, "dirty-pages-rate") *
		    (uint64_t)psize;
	}
	json_decref(r);
	return 0;
}

int
vm_migration_busy(const char *status)
{
	return status != NULL && *status != '\0' &&
	    strcmp(status, "none") != 0 &&
	    strcmp(status, "completed") != 0 &&
	    strcmp(status, "failed") != 0 &&
	    strcmp(status, "cancelled") != 0;
}

int
vm_migration_failed(const char *status)
{
	return status != NULL && (strcmp(status, "failed") == 0 ||
	    strcmp(status, "cancelled") == 0 ||
	    strcmp(status, "postcopy-paused") == 0);
}

/*
 * QEMU 7.2's migration_maybe_pause() drops the BQL before it moves the
 * migration from active to pre-switchover.  A migrate_cancel that runs in
 * that gap sets "cancelling", the thread's state change then fails and it
 * waits on pause_sem for a migrate-continue that never comes: the guest
 * stays in finish-migrate and every later migration is refused.  QEMU 10.0
 * changes the state before dropping the lock.  migrate-continue with
 * state "cancelling" posts that semaphore; when nothing waits on it the
 * next migration drains it before pausing, so it is harmless to send
 * whenever the cancel has not finished yet.
 */
static void
unstick_cancel(struct qmp *q, const char *status)
{
	json_decref(qmp_execute(q, "migrate-continue",
	    json_pack("{s:s}", "state", status), NULL));
}

int
vm_migration_cancel(struct qmp *q, int wait_ms, struct err *e)
{
	uint64_t start = now_mono_ms(), now, last_nudge = 0;
	struct vm_migration m;
	struct vm_status st;
	struct err le = ERR_INIT;
	json_t *r;
	int nudged = 0;

	/*
	 * Past migrate-continue ("device": the last pass and the device
	 * state) QEMU 7.2 can abort on a cancel (block.c
	 * bdrv_inactivate_recurse: "!(bs->open_flags & BDRV_O_INACTIVE)"),
	 * taking the guest with it.  That phase is short: let it end.
	 */
	for (;;) {
		if (vm_migration_query(q, &m, e) < 0)
			return -1;
		if (!vm_migration_busy(m.status))
			return 0;
		if (strcmp(m.status, "device") != 0 ||
		    now_mono_ms() - start > (uint64_t)wait_ms)
			break;
		poll(NULL, 0, CANCEL_POLL_MS);
	}
	r = qmp_execute(q, "migrate_cancel", NULL, &le);
	if (r == NULL && vm_status(q, &st, NULL) < 0)
		return err_propagate(e, &le, "migrate_cancel");
	json_decref(r);
	for (;;) {
		if (vm_migration_query(q, &m, e) < 0)
			return -1;
		if (!vm_migration_busy(m.status))
			return 0;
		now = now_mono_ms();
		if (strcmp(m.status, "cancelling") == 0 &&
		    (last_nudge == 0 || now - last_nudge >= CANCEL_RENUDGE_MS)) {
			last_nudge = now;
			unstick_cancel(q, "cancelling");
		}
		/* Never seen (cancel releases pre-switchover on 7.2 and 10.0),
		 * but if QEMU kept holding the guest, let it go on. */
		if (!nudged && strcmp(m.status, "pre-switchover") == 0 &&
		    now - start > CANCEL_NUDGE_MS) {
			nudged = 1;
			unstick_cancel(q, "pre-switchover");
		}
		if (now - start > (uint64_t)wait_ms)
			return err_set(e, ERR_TIMEOUT, "the migration was "
			    "still '%s' %d s after migrate_cancel", m.status,
			    wait_ms / 1000);
		poll(NULL, 0, CANCEL_POLL_MS);
	}
}

/* ---- disks -------------------------------------------------------------- */

static char *
dup_or_null(const char *s)
{
	return s != NULL ? xstrdup(s) : NULL;
}

char *
vm_qdev_id(const char *qdev)
{
	static const char pfx[] = "/machine/peripheral/";
	const char *p, *slash;

	if (qdev == NULL)
		return NULL;
	if (strncmp(qdev, pfx, sizeof(pfx) - 1) != 0)
		return xstrdup(qdev);
	p = qdev + sizeof(pfx) - 1;
	slash = strchr(p, '/');
	return slash != NULL ? xstrndup(p, (size_t)(slash - p)) : xstrdup(p);
}

/*
 * The file of an image QEMU names "json:{...}": QEMU does so for a qcow2
 * whose backing name is not its backing node's name (after a disk swap,
 * see diskswap.h), its own file in "file": {"driver": "file", "filename":
 * ...}.  Any other name: a copy.
 */
static char *
image_file(const char *name)
{
	json_t *j, *f;
	char *out = NULL;

	if (strncmp(name, "json:", 5) != 0)
		return xstrdup(name);
	j = json_loads(name + 5, 0, NULL);
	f = json_object_get(j, "file");
	if (json_str(f, "driver") != NULL &&
	    strcmp(json_str(f, "driver"), "file") == 0 &&
	    json_str(f, "filename") != NULL)
		out = xstrdup(json_str(f, "filename"));
	json_decref(j);
	return out != NULL ? out : xstrdup(name);
}

/*
 * The file name of node's "file" child, from QEMU's block graph
 * (x-debug-query-block-graph, 4.0 on) and that child's plain name
 * (query-named-block-nodes): for an image whose own "json:{...}" name
 * QEMU cut short at PATH_MAX (a deep chain of swapped layers).  NULL when
 * QEMU will not say.
 */
static char *
node_file(struct qmp *q, const char *node)
{
	json_t *g, *nodes, *v, *nb = NULL;
	const char *child = NULL;
	json_int_t id = -1, cid = -1;
	char *out = NULL;
	size_t i;

	g = qmp_execute(q, "x-debug-query-block-graph", NULL, NULL);
	nodes = json_object_get(g, "nodes");
	json_array_foreach(nodes, i, v)
		if (json_str(v, "name") != NULL &&
		    strcmp(json_str(v, "name"), node) == 0 &&
		    json_str(v, "type") != NULL &&
		    strcmp(json_str(v, "type"), "block-driver") == 0)
			id = json_integer_value(json_object_get(v, "id"));
	json_array_foreach(json_object_get(g, "edges"), i, v)
		if (json_integer_value(json_object_get(v, "parent")) == id &&
		    json_str(v, "name") != NULL &&
		    strcmp(json_str(v, "name"), "file") == 0)
			cid = json_integer_value(json_object_get(v, "child"));
	json_array_foreach(nodes, i, v)
		if (cid >= 0 && json_integer_value(json_object_get(v, "id")) ==
		    cid)
			child = json_str(v, "name");
	if (child != NULL)
		nb = qmp_execute(q, "query-named-block-nodes",
		    json_pack("{s:b}", "flat", 1), NULL);
	json_array_foreach(nb, i, v)
		if (json_str(v, "node-name") != NULL &&
		    strcmp(json_str(v, "node-name"), child) == 0 &&
		    json_str(v, "file") != NULL &&
		    json_str(v, "file")[0] == '/')
			out = xstrdup(json_str(v, "file"));
	json_decref(nb);
	json_decref(g);
	return out;
}

static void
disk_chain(struct blockinfo *b, const json_t *img)
{
	int depth;

	for (depth = 0; json_is_object(img) && depth < CHAIN_MAX; depth++) {
		if (json_str(img, "filename") != NULL) {
			b->chain = xreallocarray(b->chain, b->nchain + 1,
			    sizeof(*b->chain));
			b->chain[b->nchain++] = image_file(json_str(img,
			    "filename"));
		}
		img = json_object_get(img, "backing-image");
	}
}

int
vm_disks_query(struct qmp *q, struct blockinfo **out, size_t *n,
    struct err *e)
{
	struct blockinfo *v = NULL, *b;
	json_t *r, *dev, *ins, *img;
	const char *device, *qdev, *node, *file, *fmt, *bk;
	size_t i, nv = 0;

	*out = NULL;
	*n = 0;
	if ((r = qmp_call(q, "query-block", NULL, e)) == NULL)
		return -1;
	if (!json_is_array(r)) {
		json_decref(r);
		return err_set(e, ERR_QEMU, "query-block: unexpected reply");
	}
	json_array_foreach(r, i, dev) {
		ins = json_object_get(dev, "inserted");
		if (!json_is_object(ins))
			continue;
		device = json_str(dev, "device");
		qdev = json_str(dev, "qdev");
		node = json_str(ins, "node-name");
		img = json_object_get(ins, "image");
		file = json_str(img, "filename");
		if (file == NULL)
			file = json_str(ins, "file");
		fmt = json_str(img, "format");
		if (fmt == NULL)
			fmt = json_str(ins, "drv");
		bk = json_str(img, "full-backing-filename");
		if (bk == NULL)
			bk = json_str(img, "backing-filename");
		v = xreallocarray(v, nv + 1, sizeof(*v));
		b = &v[nv++];
		memset(b, 0, sizeof(*b));
		b->device = xstrdup(device != NULL ? device : "");
		b->qdev = dup_or_null(qdev);
		b->node = dup_or_null(node);
		b->file = file != NULL ? image_file(file) : NULL;
		if (b->file != NULL && strncmp(b->file, "json:", 5) == 0 &&
		    node != NULL) {
			char *nf = node_file(q, node);

			if (nf != NULL) {
				free(b->file);
				b->file = nf;
			}
		}
		b->format = dup_or_null(fmt);
		b->backing = dup_or_null(bk);
		b->ro = json_is_true(json_object_get(ins, "ro"));
		if (json_is_integer(json_object_get(img, "virtual-size")))
			b->size = (uint64_t)json_integer_value(
			    json_object_get(img, "virtual-size"));
		b->id = *b->device != '\0' ? xstrdup(b->device) :
		    qdev != NULL ? vm_qdev_id(qdev) :
		    xstrdup(node != NULL ? node : "?");
		disk_chain(b, img);
	}
	json_decref(r);
	*out = v;
	*n = nv;
	return 0;
}

void
vm_disks_free(struct blockinfo *b, size_t n)
{
	size_t i, k;

	for (i = 0; i < n; i++) {
		free(b[i].id);
		free(b[i].device);
		free(b[i].qdev);
		free(b[i].node);
		free(b[i].file);
		free(b[i].format);
		free(b[i].backing);
		for (k = 0; k < b[i].nchain; k++)
			free(b[i].chain[k]);
		free(b[i].chain);
	}
	free(b);
}

/* ---- the overlay cut ---------------------------------------------------- */

/*
 * Overlays hold guest data, so each file is made here first, empty and
 * 0600, with O_EXCL and O_NOFOLLOW (never over a file, never through a
 * symlink); QEMU's image creation then opens and truncates it and keeps
 * its mode instead of making it 0644 under its own umask.  Only when QEMU
 * runs as this user: a file of ours might be one it cannot open, and then
 * QEMU makes it as before.
 */
static int
overlays_precreate(const struct qmp *q, struct vm_overlay *v, size_t n,
    struct err *e)
{
	uid_t uid;
	size_t i;
	int fd;

	if (qmp_peer_cred(q, NULL, &uid) < 0 || uid != geteuid())
		return 0;
	for (i = 0; i < n; i++) {
		if (v[i].existing)
			continue;
		fd = open(v[i].file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
		    O_CLOEXEC, 0600);
		if (fd < 0) {
			err_set(e, ERR_FAIL, "cannot create the overlay '%s': %s",
			    v[i].file, errno == EEXIST ?
			    "it exists already" : strerror(errno));
			vm_overlays_remove(v, i);
			return -1;
		}
		close(fd);
		v[i].created = 1;
	}
	return 0;
}

int
vm_overlays_cut(struct qmp *q, struct vm_overlay *v, size_t n,
    struct err *e)
{
	struct err le = ERR_INIT;
	json_t *actions;
	int dev;
	size_t i;

	if (n == 0)
		return 0;
	if (overlays_precreate(q, v, n, e) < 0)
		return -1;
	actions = json_array();
	for (i = 0; i < n; i++) {
		dev = v[i].device != NULL && *v[i].device != '\0';
		json_array_append_new(actions, json_pack("{s:s, s:{s:s, s:s, "
		    "s:s, s:s, s:s}}", "type", "blockdev-snapshot-sync",
		    "data", dev ? "device" : "node-name",
		    dev ? v[i].device : v[i].node,
		    "snapshot-file", v[i].file,
		    "snapshot-node-name", v[i].node_name,
		    "format", v[i].format != NULL ? v[i].format : "qcow2",
		    "mode", v[i].existing ? "existing" : "absolute-paths"));
		v[i].created = !v[i].existing;	/* QEMU may make them all */
	}
	if (qmp_do(q, "transaction", json_pack("{s:o}", "actions", actions),
	    &le) == 0)
		return 0;
	/* Only an error reply says QEMU rolled back; after a timeout or a
	 * disconnect the overlays may be in use. */
	if (le.qmp_class[0] != '\0')
		vm_overlays_remove(v, n);
	return err_propagate(e, &le, NULL);
}

void
vm_overlays_remove(struct vm_overlay *v, size_t n)
{
	struct stat st;
	size_t i;

	for (i = 0; i < n; i++) {
		if (v[i].created && v[i].file != NULL &&
		    lstat(v[i].file, &st) == 0 && S_ISREG(st.st_mode))
			unlink(v[i].file);
		v[i].created = 0;
	}
}

/* ---- the QEMU process ---------------------------------------------------- */

int
vm_process(const struct qmp *q, pid_t *pid, uint64_t *start)
{
	if (qmp_peer_pid(q, pid) < 0)
		return -1;
	return proc_start_ticks(*pid, start);
}
