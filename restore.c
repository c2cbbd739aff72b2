/*
 * restore.c - a checkpoint back into a QEMU started with -incoming defer:
 * checks (offline, then read-only QMP queries), overlays, the stream over a
 * file descriptor, resume.  Also starting that QEMU for --exec.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "diskfile.h"
#include "export.h"
#include "launch.h"
#include "lazy.h"
#include "proc.h"
#include "relaunch.h"
#include "restore.h"
#include "restoredir.h"
#include "save.h"
#include "sig.h"
#include "store.h"
#include "stream.h"
#include "util.h"
#include "vm.h"

#include "banned.h"

#define RESTORE_FDNAME "snapctl-restore"
#define POLL_MS 5

/* A checkpoint disk and where it goes. */
struct rs_disk {
	const json_t *m;	/* the manifest entry (borrowed) */
	const char *device;
	const char *file;
	struct blockinfo *vm;
	char *overlay;
	char node[48];		/* the overlay's node name */
};

struct rs {
	const struct restore_opts *o;
	const char *sock;	/* o->socket, or start's own in dir */
	char *dir;		/* --start: QEMU's directory */
	char *sock_own;
	char **start_argv;	/* --start: the command line */
	char *const *exec_argv;	/* o->exec_argv or start_argv */
	char *log;		/* QEMU's log, when snapctl started it */
	json_t *manifest;
	struct img_reader *img;
	char *img_path;
	struct qmp *q;
	struct blockinfo *vd;	/* the VM's disks */
	size_t nvd;
	unsigned char *vd_used;	/* matched by a checkpoint disk */
	struct rs_disk *disks;
	size_t ndisks;
	struct vm_overlay *cut;	/* the overlays, one per disk */
	struct restoredir_slot *slots;	/* their records, one per disk */
	json_t *swept;		/* restore overlays the sweep removed */
	char machine[256];
	char qemu[32];
	struct proc *proc;	/* QEMU started by --exec (it may have exited) */
	int touched;		/* QEMU was changed */
	int cut_unsure;		/* no answer to the cut: QEMU may yet take
				 * (and make) the overlays */
	int deferring;		/* QEMU cannot go back: signals wait */
	int loaded;		/* QEMU has the whole checkpoint */
	int guest_ran;
	int may_run;		/* lazy: QEMU may start the guest on its own
				 * (autostart), unseen if it dies at once */
	uint64_t stream_bytes;
	struct lazy *lazy;	/* the lazy restore's sender, while it runs */
	int lazy_fd;
	uint64_t lazy_requests, lazy_pages_on_request;
	uint64_t t0, t_checked, t_loaded, t_complete;
	pthread_t verify_thread;
	int verifying;
	int verify_rc;
	struct err verify_err;
};

static int
cancelled(void *opaque)
{
	return sig_caught() != 0;
}

/* ---- offline checks ----------------------------------------------------- */

static int
load_checkpoint(struct rs *s, struct err *e)
{
	const struct restore_opts *o = s->o;
	struct store *st = NULL;
	const json_t *mem, *d;
	const char *path;
	size_t i;
	int rc = -1;

	if (store_name_check(o->name, e) < 0)
		return -1;
	st = store_open(o->store, 0, e);
	if (st == NULL)
		return -1;
	s->manifest = store_manifest_read(st, o->name, e);
	if (s->manifest == NULL)
		goto out;
	mem = json_object_get(s->manifest, "memory");
	if (!json_is_object(mem)) {
		err_set(e, ERR_FAIL, "checkpoint '%s' is disk-only: it holds "
		    "no memory to restore (boot a VM on its disk files, see "
		    "snapctl info %s)", o->name, o->name);
		goto out;
	}
	path = json_str(mem, "path");
	if (path == NULL || *path == '\0' || strchr(path, '/') != NULL ||
	    path[0] == '.') {
		err_set(e, ERR_FAIL, "checkpoint '%s': its manifest names no "
		    "valid memory image", o->name);
		goto out;
	}
	s->img_path = xasprintf("%s/%s/%s", store_path(st), o->name, path);
	s->img = img_open(s->img_path, e);
	if (s->img == NULL) {
		err_prefix(e, "checkpoint '%s': memory image: ", o->name);
		goto out;
	}
	s->ndisks = json_array_size(json_object_get(s->manifest, "disks"));
	s->disks = xcalloc(s->ndisks ? s->ndisks : 1, sizeof(*s->disks));
	json_array_foreach(json_object_get(s->manifest, "disks"), i, d) {
		s->disks[i].m = d;
		s->disks[i].device = json_str(d, "device");
		s->disks[i].file = json_str(d, "file");
		if (s->disks[i].device == NULL || s->disks[i].file == NULL) {
			err_set(e, ERR_FAIL, "checkpoint '%s': disk %zu of its "
			    "manifest has no device or file", o->name, i);
			goto out;
		}
		if (diskfile_check(d, e) < 0) {
			err_prefix(e, "checkpoint '%s': ", o->name);
			goto out;
		}
	}
	rc = 0;
out:
	store_close(st);
	return rc;
}

/*
 * Every frame of the memory image is checked (its CRC, or with an image
 * made before frame CRCs, decoded) by a thread of its own, itself
 * spreading the work over the CPUs, while QEMU is started and asked its
 * questions; it is joined before QEMU is touched.
 */
static void *
verify_main(void *arg)
{
	struct rs *s = arg;

	/* At the speed of reading the file: decoding every frame here
	 * costs as much again as the load itself. */
	s->verify_rc = img_check_frames(s->img, s->img_path, 0,
	    &s->verify_err);
	return NULL;
}

static int
verify_start(struct rs *s, struct err *e)
{
	if (thread_start(&s->verify_thread, verify_main, s, "the image check",
	    e) < 0)
		return -1;
	s->verifying = 1;
	return 0;
}

/* Join the check; its failure is the one reported: the image is bad. */
static int
verify_join(struct rs *s, struct err *e)
{
	if (!s->verifying)
		return 0;
	pthread_join(s->verify_thread, NULL);
	s->verifying = 0;
	if (s->verify_rc == 0)
		return 0;
	err_prefix(&s->verify_err, "checkpoint '%s': memory image: ",
	    s->o->name);
	err_clear(e);
	err_propagate(e, &s->verify_err, NULL);
	return -1;
}

/* ---- starting QEMU (--exec) --------------------------------------------- */

static int
start_qemu(struct rs *s, struct err *e)
{
	const struct restore_opts *o = s->o;
	char *const *exec_argv = s->exec_argv;
	char *const *a;
	char **argv, *qmp_arg, *esc, *log;
	size_t n = 0, i;

	for (a = exec_argv; *a != NULL; a++) {
		if (strcmp(*a, "-incoming") == 0 ||
		    strcmp(*a, "--incoming") == 0)
			return err_set(e, ERR_USAGE, "--exec: leave -incoming "
			    "out of QEMU's arguments, snapctl adds "
			    "'-incoming defer'");
		n++;
	}
	if (n == 0)
		return err_set(e, ERR_USAGE, "--exec needs a QEMU command "
		    "line after --");
	if (strncmp(s->sock, "tcp:", 4) == 0)
		return err_set(e, ERR_USAGE, "--exec needs -s to be a UNIX "
		    "socket path for the QMP monitor snapctl adds");
	esc = qemu_opt_escape(s->sock);
	qmp_arg = xasprintf("unix:%s,server=on,wait=off", esc);
	free(esc);
	argv = xcalloc(n + 6, sizeof(*argv));
	for (i = 0; i < n; i++)
		argv[i] = exec_argv[i];
	argv[n++] = (char *)"-incoming";
	argv[n++] = (char *)"defer";
	argv[n++] = (char *)"-S";
	argv[n++] = (char *)"-qmp";
	argv[n++] = qmp_arg;
	argv[n] = NULL;
	log = o->exec_log != NULL ? xstrdup(o->exec_log) : s->dir != NULL ?
	    xasprintf("%s/qemu.log", s->dir) : xasprintf("%s.log", s->sock);
	s->proc = proc_spawn(argv, log, "QEMU", e);
	free(s->log);
	s->log = log;
	free(argv);
	free(qmp_arg);
	return s->proc != NULL ? 0 : -1;
}

/* ---- the VM ------------------------------------------------------------- */

static int
connect_qemu(struct rs *s, struct err *e)
{
	struct qmp_config cfg = QMP_CONFIG_INIT;
	struct err le = ERR_INIT;
	uint64_t end;

	cfg.timeout_ms = s->o->qmp_timeout_ms > 0 ? s->o->qmp_timeout_ms :
	    QMP_DEFAULT_TIMEOUT_MS;
	cfg.trace = s->o->trace;
	cfg.trace_opaque = s->o->trace_opaque;
	cfg.cancelled = cancelled;
	if (s->proc == NULL) {
		cfg.connect_ms = s->o->connect_ms;
		s->q = qmp_open_with(s->sock, &cfg, e);
		return s->q != NULL ? 0 : -1;
	}
	/* Our QEMU: wait for its socket while it lives. */
	cfg.connect_ms = 0;
	end = now_mono_ms() + RESTORE_EXEC_CONNECT_S * 1000;
	for (;;) {
		err_clear(&le);
		s->q = qmp_open_with(s->sock, &cfg, &le);
		if (s->q != NULL)
			return 0;
		if (proc_alive(s->proc, e) < 0 || sig_interrupted(e))
			return -1;
		if (now_mono_ms() >= end) {
			err_prefix(&le, "QEMU started but its QMP socket did "
			    "not answer within %d s: ", RESTORE_EXEC_CONNECT_S);
			return err_propagate(e, &le, NULL);
		}
		usleep(50000);
	}
}

static int
check_waiting(struct rs *s, struct err *e)
{
	struct vm_status st;
	struct vm_migration m;

	if (vm_status(s->q, &st, e) < 0)
		return -1;
	if (st.state != VM_RS_INMIGRATE)
		return err_set(e, ERR_MISMATCH, "the QEMU at '%s' is not "
		    "waiting for a checkpoint (it is %s): start it with "
		    "-incoming defer", s->sock, st.status[0] != '\0' ?
		    st.status : "in an unknown state");
	if (vm_migration_query(s->q, &m, e) < 0)
		return -1;
	if (m.status[0] != '\0' && strcmp(m.status, "none") != 0)
		return err_set(e, ERR_MISMATCH, "the QEMU at '%s' already has "
		    "an incoming migration (%s)", s->sock, m.status);
	return 0;
}

static int
check_machine(struct rs *s, struct err *e)
{
	const struct img_meta *m = img_meta(s->img);
	json_t *r;
	const char *t;
	size_t n;
	int major, minor, micro;

	qmp_version(s->q, &major, &minor, &micro);
	snprintf(s->qemu, sizeof(s->qemu), "%d.%d.%d", major, minor, micro);
	r = qmp_call(s->q, "qom-get", json_pack("{s:s, s:s}", "path", "/machine",
	    "property", "type"), e);
	if (r == NULL)
		return -1;
	t = json_string_value(r);
	n = t != NULL ? strlen(t) : 0;
	if (n > 8 && strcmp(t + n - 8, "-machine") == 0)
		n -= 8;
	snprintf(s->machine, sizeof(s->machine), "%.*s", (int)n,
	    t != NULL ? t : "");
	json_decref(r);
	if (m->machine[0] != '\0' && strcmp(m->machine, s->machine) != 0)
		return err_set(e, ERR_MISMATCH, "wrong machine type: "
		    "checkpoint '%s' is of a '%s' machine, the QEMU at '%s' "
		    "runs '%s' (start it with -machine %s)", s->o->name,
		    m->machine, s->sock, s->machine, m->machine);
	return 0;
}

/* Parse a 0x number of "info ramblock". */
static int
hex_field(const char *tok, uint64_t *out)
{
	unsigned long long v;
	char *end;

	if (strncmp(tok, "0x", 2) != 0 || tok[2] == '\0')
		return -1;
	errno = 0;
	v = strtoull(tok + 2, &end, 16);
	if (*end != '\0' || errno != 0)
		return -1;
	*out = v;
	return 0;
}

/*
 * RAM blocks: every block of the image must exist in the VM with a length
 * QEMU accepts (the same, or within a resizable block's maximum).  QMP has
 * no query for them; HMP's "info ramblock" prints name, page size, offset,
 * used and total lengths, the same in 7.2 and 10.0.
 */
static int
check_ram(struct rs *s, struct err *e)
{
	const struct img_meta *m = img_meta(s->img);
	json_t *r;
	char *text, *line, *save = NULL, *tok[8], *save2;
	struct { char name[STREAM_BLOCK_NAME_MAX + 1]; uint64_t used, total;
	    int small; } *vb = NULL;
	size_t nvb = 0, i, j;
	int k, rc = -1;
	char a[32], b[32];

	r = qmp_call(s->q, "human-monitor-command", json_pack("{s:s}",
	    "command-line", "info ramblock"), e);
	if (r == NULL)
		return -1;
	text = xstrdup(json_string_value(r) ? json_string_value(r) : "");
	json_decref(r);
	for (line = strtok_r(text, "\r\n", &save); line != NULL;
	    line = strtok_r(NULL, "\r\n", &save)) {
		for (k = 0; k < 8; k++) {
			tok[k] = strtok_r(k == 0 ? line : NULL, " \t", &save2);
			if (tok[k] == NULL)
				break;
		}
		if (k < 6 || strcmp(tok[0], "Block") == 0)
			continue;
		vb = xreallocarray(vb, nvb + 1, sizeof(*vb));
		snprintf(vb[nvb].name, sizeof(vb[nvb].name), "%s", tok[0]);
		/* The page size is two words: "4 KiB", "2 MiB". */
		vb[nvb].small = strcmp(tok[1], "4") == 0 &&
		    strcmp(tok[2], "KiB") == 0;
		if (hex_field(tok[4], &vb[nvb].used) < 0 ||
		    hex_field(tok[5], &vb[nvb].total) < 0)
			continue;
		nvb++;
	}
	if (nvb == 0) {
		err_set(e, ERR_QEMU, "cannot read the VM's RAM blocks from "
		    "'info ramblock'");
		goto out;
	}
	for (i = 0; i < m->nblocks; i++) {
		const struct stream_block *sb = &m->blocks[i];

		for (j = 0; j < nvb; j++)
			if (strcmp(vb[j].name, sb->name) == 0)
				break;
		if (j == nvb) {
			err_set(e, ERR_MISMATCH, "the VM has no RAM block '%s' "
			    "that checkpoint '%s' holds: start QEMU with the "
			    "checkpoint's devices", sb->name, s->o->name);
			goto out;
		}
		if (s->o->lazy && !vb[j].small) {
			err_set(e, ERR_MISMATCH, "RAM block '%s' of the VM has "
			    "pages larger than 4 KiB, which a lazy restore "
			    "cannot place: restore without --lazy", sb->name);
			goto out;
		}
		if (sb->used_length == vb[j].used)
			continue;
		if (vb[j].used != vb[j].total && sb->used_length <=
		    vb[j].total)
			continue;	/* resizable: QEMU resizes it */
		format_bytes(sb->used_length, a);
		format_bytes(vb[j].used, b);
		if (strcmp(sb->name, "pc.ram") == 0)
			err_set(e, ERR_MISMATCH, "wrong RAM size: checkpoint "
			    "'%s' has %s of RAM, the VM %s (start it with -m "
			    "%lluM)", s->o->name, a, b,
			    (unsigned long long)(sb->used_length >> 20));
		else
			err_set(e, ERR_MISMATCH, "RAM block '%s' is %s in "
			    "checkpoint '%s' and %s in the VM", sb->name, a,
			    s->o->name, b);
		goto out;
	}
	/* Postcopy empties every RAM block; one the stream does not fill
	 * would stall the guest the first time it touched it. */
	for (j = 0; s->o->lazy && j < nvb; j++) {
		for (i = 0; i < m->nblocks; i++)
			if (strcmp(vb[j].name, m->blocks[i].name) == 0)
				break;
		if (i == m->nblocks) {
			err_set(e, ERR_MISMATCH, "the VM has a RAM block '%s' "
			    "that checkpoint '%s' does not hold, which a lazy "
			    "restore cannot fill: start QEMU with the "
			    "checkpoint's devices", vb[j].name, s->o->name);
			goto out;
		}
	}
	rc = 0;
out:
	free(vb);
	free(text);
	return rc;
}

static int
check_disks(struct rs *s, struct err *e)
{
	size_t i, j;

	if (vm_disks_query(s->q, &s->vd, &s->nvd, e) < 0)
		return -1;
	s->vd_used = xcalloc(s->nvd ? s->nvd : 1, 1);
	for (i = 0; i < s->ndisks; i++) {
		struct rs_disk *d = &s->disks[i];
		const char *node = json_str(d->m, "node");
		const char *fmt = json_str(d->m, "format");
		struct blockinfo *v = NULL;

		for (j = 0; j < s->nvd && v == NULL; j++)
			if (strcmp(s->vd[j].id, d->device) == 0 ||
			    strcmp(s->vd[j].device, d->device) == 0)
				v = &s->vd[j];
		for (j = 0; j < s->nvd && v == NULL && node != NULL; j++)
			if (s->vd[j].node && strcmp(s->vd[j].node, node) == 0)
				v = &s->vd[j];
		if (v == NULL)
			return err_set(e, ERR_MISMATCH, "wrong disks: the VM "
			    "has no disk '%s' (start it with '%s' as that "
			    "disk; see snapctl info %s)", d->device, d->file,
			    s->o->name);
		if (s->vd_used[v - s->vd])
			return err_set(e, ERR_MISMATCH, "wrong disks: the VM's "
			    "disk '%s' matches two disks of the checkpoint",
			    v->id);
		s->vd_used[v - s->vd] = 1;
		d->vm = v;
		if (s->o->keep_disks) {
			struct diskfile df;
			const char *p = json_str(d->m, "vm_path");
			int on_state;

			if (p == NULL || v->file == NULL ||
			    !diskfile_same(v->file, p))
				return err_set(e, ERR_MISMATCH, "wrong disk: the "
				    "VM opened '%s' as disk '%s', not its own "
				    "path '%s'", v->file ? v->file : "?",
				    d->device, p ? p : "?");
			if (diskfile_probe(p, &df, e) < 0)
				return -1;
			on_state = df.backing != NULL &&
			    diskfile_same(df.backing, d->file);
			diskfile_release(&df);
			if (!on_state)
				return err_set(e, ERR_MISMATCH, "wrong disk: "
				    "'%s' is not backed by '%s', checkpoint "
				    "'%s''s state of disk '%s' (snapctl revert "
				    "%s first)", p, d->file, s->o->name,
				    d->device, s->o->name);
			d->overlay = xstrdup(p);
		} else if (v->file == NULL || !diskfile_same(v->file, d->file))
			return err_set(e, ERR_MISMATCH, "wrong disk: the VM "
			    "opened '%s' as disk '%s', but checkpoint '%s' "
			    "holds that disk's state in '%s'",
			    v->file ? v->file : "?", d->device, s->o->name,
			    d->file);
		if (fmt != NULL && v->format != NULL && !s->o->keep_disks &&
		    strcmp(fmt, v->format) != 0)
			return err_set(e, ERR_MISMATCH, "wrong disk: the VM "
			    "opened '%s' as %s, the checkpoint recorded %s",
			    d->file, v->format, fmt);
		if (v->ro)
			return err_set(e, ERR_MISMATCH, "disk '%s' is "
			    "read-only in the VM: the restored guest could "
			    "not write it", d->device);
	}
	return 0;
}

/* The recorded summary's devices; a signal is said the one way. */
static int
check_devices(struct rs *s, struct err *e)
{
	if (launch_compare(s->q, json_object_get(s->manifest, MF_SUMMARY),
	    s->o->name, e) == 0)
		return 0;
	if (sig_caught()) {
		err_clear(e);
		sig_interrupted(e);
	}
	return -1;
}

/* ---- changing QEMU ------------------------------------------------------ */

static int
add_overlays(struct rs *s, struct err *e)
{
	char stamp[32], *dir;
	size_t i;

	if (s->ndisks == 0)
		return 0;
	/* STORE/.restores unless --overlay-dir; each overlay recorded
	 * there before it exists (restoredir.h). */
	if ((dir = restoredir_dir(s->o->store, s->o->overlay_dir, e)) == NULL)
		return -1;
	store_default_name(now_real(), stamp);
	s->cut = xcalloc(s->ndisks, sizeof(*s->cut));
	s->slots = xcalloc(s->ndisks, sizeof(*s->slots));
	for (i = 0; i < s->ndisks; i++) {
		struct rs_disk *d = &s->disks[i];

		if (restoredir_reserve(s->o->store, dir, d->file, stamp,
		    s->o->name, d->device, &s->slots[i], e) < 0) {
			free(dir);
			return -1;
		}
		d->overlay = xstrdup(s->slots[i].overlay);
		snprintf(d->node, sizeof(d->node), "snapctl-restore-%zu", i);
		s->cut[i].device = d->vm->device;
		s->cut[i].node = d->vm->node;
		s->cut[i].file = d->overlay;
		s->cut[i].node_name = d->node;
	}
	free(dir);
	s->touched = 1;
	if (vm_overlays_cut(s->q, s->cut, s->ndisks, e) == 0)
		return 0;
	/* Still marked created: QEMU did not say it rolled back (vm.h). */
	for (i = 0; i < s->ndisks; i++)
		if (s->cut[i].created)
			s->cut_unsure = 1;
	return -1;
}

/* The records of the overlays: dropped with them, or committed. */
static void
records_settle(struct rs *s, int drop)
{
	size_t i;

	for (i = 0; s->slots != NULL && i < s->ndisks; i++) {
		if (drop)
			restoredir_drop(&s->slots[i]);
		else if (s->slots[i].record != NULL) {
			/* Best effort: a record left with this process as its
			 * owner still proves a file in STORE/.restores. */
			(void)restoredir_commit(&s->slots[i], NULL);
			restoredir_slot_release(&s->slots[i]);
		}
	}
}

static void
remove_overlays(struct rs *s)
{
	if (s->cut != NULL)
		vm_overlays_remove(s->cut, s->ndisks);
	records_settle(s, 1);
}

/*
 * A QEMU not ours may still act on a cut it never answered, and make an
 * overlay after any unlink here: the overlays and their records stay as
 * they are, the records naming this process, so the sweep decides once
 * it is gone (restoredir.h).
 */
static void
leave_overlays(struct rs *s)
{
	size_t i;

	for (i = 0; s->slots != NULL && i < s->ndisks; i++)
		restoredir_slot_release(&s->slots[i]);
}

/*
 * After a restore: its records committed, then the sweep of every restore
 * overlay no process holds (restoredir_sweep()); best effort, what it
 * removed goes into the report.
 */
static void
sweep(struct rs *s)
{
	json_t *rep = NULL, *r;
	size_t i;
	int unseen;

	records_settle(s, 0);
	s->swept = json_array();
	(void)restoredir_sweep(s->o->store, 0, &rep, &unseen, NULL);
	json_array_foreach(rep, i, r)
		if (json_is_true(json_object_get(r, "removed")))
			json_array_append_new(s->swept, json_pack("{s:s?, s:s?}",
			    "file", json_str(r, "file"), "checkpoint",
			    json_str(r, "checkpoint")));
	json_decref(rep);
}

/* Add to e's message (cut at ERR_MSG_MAX); e may be NULL. */
static void __attribute__((format(printf, 2, 3)))
msg_append(struct err *e, const char *fmt, ...)
{
	va_list ap;
	size_t n;

	if (e == NULL)
		return;
	n = strlen(e->msg);
	va_start(ap, fmt);
	vsnprintf(e->msg + n, sizeof(e->msg) - n, fmt, ap);
	va_end(ap);
}

/*
 * "; the guest ran on overlay 'a'" (or "overlays 'a', 'b'") after e's
 * message: overlays that stay must be named, they are the user's now.
 */
static void
name_overlays(struct rs *s, struct err *e, const char *what)
{
	struct buf b = BUF_INIT;
	size_t i;

	if (e == NULL || s->cut == NULL || s->ndisks == 0)
		return;
	for (i = 0; i < s->ndisks; i++)
		buf_addf(&b, "%s'%s'", i > 0 ? ", " : "", s->disks[i].overlay);
	buf_addc(&b, '\0');
	msg_append(e, "; %s overlay%s %s", what, s->ndisks > 1 ? "s" : "",
	    (const char *)b.data);
	buf_release(&b);
}

/*
 * QEMU's own reason in its log: the last error line it printed that is
 * not the generic "load of migration failed" (QEMU 7.2 prints "Unknown
 * savevm section or instance 'X'" before it), without the program name.
 * 1 if found.
 */
static int
log_reason(const char *log, char *out, size_t n)
{
	char buf[8192], *line, *save = NULL, *p;
	ssize_t len;
	off_t size;
	int fd, found = 0;

	if (log == NULL || (fd = open(log, O_RDONLY | O_CLOEXEC)) < 0)
		return 0;
	size = lseek(fd, 0, SEEK_END);
	len = pread_full(fd, buf, sizeof(buf) - 1, size > (off_t)sizeof(buf) -
	    1 ? size - (off_t)sizeof(buf) + 1 : 0);
	close(fd);
	if (len <= 0)
		return 0;
	buf[len] = '\0';
	for (line = strtok_r(buf, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save)) {
		if (strstr(line, "load of migration failed") != NULL ||
		    strstr(line, "warning:") != NULL ||
		    (strncmp(line, "qemu", 4) != 0 && strstr(line, "/qemu") ==
		    NULL))
			continue;
		p = strstr(line, ": ");
		if (p == NULL)
			continue;
		for (p += 2; *p == ' '; p++)
			;
		snprintf(out, n, "%s", p);
		found = 1;
	}
	for (p = out; found && *p != '\0'; p++)
		if ((unsigned char)*p < 0x20)
			*p = ' ';
	return found;
}

/*
 * "WHAT: QEMU refused the checkpoint: REASON", QEMU's own reason from
 * its log when snapctl started it, else desc (query-migrate's).
 */
static void
refused(struct rs *s, struct err *e, const char *what, const char *desc)
{
	char reason[512];
	int i;

	/* QEMU 10 reports the failure before it prints its reason. */
	for (i = 0; s->log != NULL && i < 20 && !log_reason(s->log, reason,
	    sizeof(reason)); i++)
		usleep(50000);
	if (s->log != NULL && log_reason(s->log, reason, sizeof(reason)))
		err_set(e, ERR_FAIL, "%s: QEMU refused the checkpoint: %s "
		    "(log: '%s')", what, reason, s->log);
	else
		err_set(e, ERR_FAIL, "%s: QEMU refused the checkpoint: %s",
		    what, desc);
}

/*
 * Why the load failed: QEMU 9.1 on stays up and query-migrate says why;
 * QEMU 7.2 exits.  When snapctl started it, its log has QEMU's own reason
 * (the device that differs), which comes first.
 */
static void
load_error(struct rs *s, struct err *e, const char *what)
{
	struct err le = ERR_INIT;
	struct vm_migration m;
	char reason[512];
	int i;

	for (i = 0; i < 50; i++) {
		if (s->proc != NULL && proc_alive(s->proc, e) < 0) {
			if (log_reason(s->log, reason, sizeof(reason))) {
				err_clear(e);
				err_set(e, ERR_FAIL, "%s: QEMU refused the "
				    "checkpoint: %s (log: '%s')", what, reason,
				    s->log);
			} else {
				err_prefix(e, "%s: ", what);
			}
			return;
		}
		if (qmp_usable(s->q)) {
			err_clear(&le);
			if (vm_migration_query(s->q, &m, &le) == 0 &&
			    m.error_desc[0] != '\0') {
				refused(s, e, what, m.error_desc);
				return;
			}
		} else if (proc_pid(s->proc) <= 0) {
			break;
		}
		usleep(20000);
	}
	if (!qmp_usable(s->q))
		err_set(e, ERR_QEMU, "%s: QEMU exited while loading the "
		    "checkpoint (see its output)", what);
	else
		err_set(e, ERR_FAIL, "%s: QEMU stopped reading the "
		    "checkpoint's stream", what);
}

/*
 * A socket for the stream, handed to QEMU, and migrate-incoming on it.
 * Eager: "stop" first, which on a waiting QEMU only turns autostart off
 * (a QEMU started without -S would run the guest the moment the load
 * ends): the guest stays paused until resume() or, after a deferred
 * signal, for good.
 */
static int
incoming(struct rs *s, int sv[2], struct err *e)
{
	struct err le = ERR_INIT;
	json_t *args, *r;
	/* A lazy restore keeps the socket short: a page QEMU asks for
	 * queues behind at most this much bulk. */
	int sndbuf = s->o->lazy ? 256 << 10 : 4 << 20, major, minor, micro;

	if (!s->o->lazy && vm_stop(s->q, e) < 0)
		return -1;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return err_sys(e, ERR_FAIL, "socketpair");
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	r = qmp_execute_fd(s->q, "getfd", json_pack("{s:s}", "fdname",
	    RESTORE_FDNAME), sv[1], &le);
	if (r == NULL)
		return err_propagate(e, &le, "getfd");
	json_decref(r);
	close(sv[1]);
	sv[1] = -1;
	args = json_pack("{s:s}", "uri", "fd:" RESTORE_FDNAME);
	/* QEMU 9.1 on can stay up after a failed load and say why. */
	qmp_version(s->q, &major, &minor, &micro);
	if (major > 9 || (major == 9 && minor >= 1))
		json_object_set_new(args, "exit-on-error", json_false());
	if (qmp_do(s->q, "migrate-incoming", args, e) < 0)
		return -1;
	if (!s->o->lazy || s->o->paused)
		return 0;
	/* Lazy: "cont" right away, as QEMU starts the guest itself the
	 * moment it has its device state (autostart). */
	return vm_resume(s->q, e);
}

/*
 * postcopy-ram on the waiting QEMU, first of all changes: a QEMU without
 * userfaultfd refuses it, and nothing else has changed yet.
 */
static int
lazy_prepare(struct rs *s, struct err *e)
{
	if (qmp_do(s->q, "migrate-set-capabilities", json_pack("{s:[{s:s, "
	    "s:b}]}", "capabilities", "capability", "postcopy-ram", "state",
	    1), e) < 0) {
		err_prefix(e, "restore --lazy: ");
		return -1;
	}
	return 0;
}

/* A failed sender of the stream: QEMU's reason when it closed it. */
static void
stream_error(struct rs *s, struct err *le, struct err *e)
{
	if (le->kind != ERR_INTR && le->sys_errno == EPIPE)
		load_error(s, e, "restore");
	else
		err_propagate(e, le, NULL);
}

/*
 * Wait until QEMU has what the guest needs to run: the whole stream
 * (eager) or the device state (lazy).  Then it leaves "inmigrate" for
 * running (autostart) or paused; RESUME says the first at once.
 */
static int
wait_loaded(struct rs *s, uint64_t deadline, int timeout_s, struct err *e)
{
	struct err le = ERR_INIT;
	struct qmp_event *ev;
	struct vm_status st;
	struct vm_migration m;
	int rc = -1;

	for (;;) {
		if (s->lazy == NULL && !s->deferring && sig_interrupted(e))
			goto out;
		err_clear(&le);
		ev = qmp_wait_event(s->q, "RESUME", NULL, POLL_MS, &le);
		if (ev != NULL) {
			qmp_event_free(ev);
			s->guest_ran = 1;
			break;
		}
		if (le.kind != ERR_TIMEOUT) {
			load_error(s, e, "restore");
			goto out;
		}
		err_clear(&le);
		if (s->lazy != NULL && lazy_poll(s->lazy, &le) < 0) {
			stream_error(s, &le, e);
			goto out;
		}
		if (vm_status(s->q, &st, &le) < 0) {
			load_error(s, e, "restore");
			goto out;
		}
		if (st.state != VM_RS_UNKNOWN && st.state != VM_RS_INMIGRATE) {
			s->guest_ran = st.running;
			break;
		}
		if (vm_migration_query(s->q, &m, &le) < 0) {
			load_error(s, e, "restore");
			goto out;
		}
		/* postcopy-paused counts: 10.0's answer to a stream that
		 * broke in postcopy. */
		if (vm_migration_failed(m.status)) {
			refused(s, e, "restore", m.error_desc[0] != '\0' ?
			    m.error_desc : m.status);
			goto out;
		}
		if (now_mono_ms() >= deadline) {
			err_set(e, ERR_TIMEOUT, "restore: QEMU did not finish "
			    "loading within %d s", timeout_s);
			goto out;
		}
	}
	rc = 0;
out:
	return rc;
}

/*
 * Feed the stream: all of it, or (lazy) start the threads that do.  Then
 * wait until the guest can run.
 */
static int
load(struct rs *s, struct err *e)
{
	struct err le = ERR_INIT;
	uint64_t deadline;
	int sv[2] = { -1, -1 };
	int rc = -1, timeout_s;

	if (incoming(s, sv, e) < 0)
		goto out;
	if (s->o->lazy) {
		s->lazy = lazy_start(s->img, sv[0], e);
		if (s->lazy == NULL)
			goto out;
		s->lazy_fd = sv[0];	/* closed after lazy_free() */
		sv[0] = -1;
		s->may_run = 1;
		/*
		 * From here QEMU may start the guest on its own at any time
		 * (autostart), on memory that only snapctl can complete: a
		 * signal no longer stops the restore.
		 */
		qmp_set_cancel(s->q, NULL, NULL);
	} else {
		/* Once QEMU reads it, a stream cut short makes 7.2 exit and
		 * leaves 10.0 unable to take another: all of it goes. */
		if ((s->deferring ? img_export_whole(s->img, sv[0],
		    "the stream to QEMU", s->o->test_hold_ms, &s->stream_bytes,
		    &le) : img_export(s->img, sv[0], "the stream to QEMU",
		    &s->stream_bytes, &le)) < 0) {
			stream_error(s, &le, e);
			goto out;
		}
		close(sv[0]);
		sv[0] = -1;
	}
	timeout_s = s->o->timeout_s > 0 ? s->o->timeout_s :
	    RESTORE_DEFAULT_TIMEOUT_S;
	deadline = now_mono_ms() + (uint64_t)timeout_s * 1000;
	if (wait_loaded(s, deadline, timeout_s, e) < 0)
		goto out;
	rc = 0;
out:
	if (sv[0] >= 0)
		close(sv[0]);
	if (sv[1] >= 0)
		close(sv[1]);
	return rc;
}

/*
 * A lazy restore after the guest can run: every page must reach QEMU, or
 * the guest stalls on the first one missing.  So a signal no longer
 * stops snapctl here; the pages go on until QEMU says it has them all.
 */
static int
lazy_complete(struct rs *s, struct err *e)
{
	struct err le = ERR_INIT;
	struct lazy_stats st;
	struct vm_migration m;
	uint64_t deadline;
	int timeout_s, sent = 0, rc = -1;

	timeout_s = s->o->timeout_s > 0 ? s->o->timeout_s :
	    RESTORE_DEFAULT_TIMEOUT_S;
	deadline = now_mono_ms() + (uint64_t)timeout_s * 1000;
	for (;;) {
		if (!sent) {
			err_clear(&le);
			switch (lazy_poll(s->lazy, &le)) {
			case -1:
				stream_error(s, &le, e);
				goto out;
			case 1:
				sent = 1;
				break;
			}
		}
		if (vm_migration_query(s->q, &m, e) < 0) {
			if (!qmp_usable(s->q)) {
				err_clear(e);
				err_set(e, ERR_QEMU, "restore: QEMU went away "
				    "after the guest ran, before it had all the "
				    "guest's memory");
			}
			goto out;
		}
		if (sent && strcmp(m.status, "completed") == 0)
			break;
		if (vm_migration_failed(m.status)) {
			err_set(e, ERR_FAIL, "restore: the guest ran but QEMU "
			    "failed to take in its memory (%s): %s", m.status,
			    m.error_desc[0] != '\0' ? m.error_desc :
			    "restore the checkpoint again");
			goto out;
		}
		if (now_mono_ms() >= deadline) {
			err_set(e, ERR_TIMEOUT, "restore: QEMU did not take in "
			    "the guest's memory within %d s", timeout_s);
			goto out;
		}
		usleep(POLL_MS * 1000);
	}
	rc = 0;
out:
	lazy_stats(s->lazy, &st);
	s->stream_bytes = st.stream_bytes;
	s->lazy_requests = st.requests;
	s->lazy_pages_on_request = st.pages_on_request;
	lazy_free(s->lazy);
	s->lazy = NULL;
	close(s->lazy_fd);
	s->lazy_fd = -1;
	return rc;
}

static int
resume(struct rs *s, struct err *e)
{
	if (s->o->paused) {
		/* Without -S QEMU starts the guest itself after the load. */
		if (s->guest_ran && vm_stop(s->q, e) < 0)
			return -1;
		return 0;
	}
	if (!s->guest_ran && vm_resume(s->q, e) < 0)
		return -1;
	s->guest_ran = 1;
	return 0;
}

/* ---- the report --------------------------------------------------------- */

static json_t *
report(struct rs *s)
{
	const struct img_meta *m = img_meta(s->img);
	json_t *disks = json_array();
	size_t i;
	uint64_t t1 = now_mono_ms();
	const char *status = s->o->dry_run ? "checked" : s->o->paused ?
	    "paused" : "running";

	json_t *rep, *mem, *tim;

	for (i = 0; i < s->ndisks; i++)
		json_array_append_new(disks, json_pack("{s:s, s:s, s:s?}",
		    "device", s->disks[i].device, "file", s->disks[i].file,
		    "overlay", s->disks[i].overlay));
	rep = json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:s, s:o, "
	    "s:{s:I, s:I}, s:{s:f, s:f, s:f}}",
	    "name", s->o->name, "socket", s->sock, "qemu", s->qemu,
	    "machine", s->machine,
	    "pid", proc_pid(s->proc) > 0 ? json_integer(proc_pid(s->proc)) :
	    json_null(),
	    "status", status, "mode", s->o->lazy ? "lazy" : "eager",
	    "disks", disks,
	    "memory", "stream_bytes", (json_int_t)s->stream_bytes,
	    "pages", (json_int_t)m->pages,
	    "timings",
	    "check_s", (double)(s->t_checked - s->t0) / 1000.0,
	    "load_s", s->t_loaded ? (double)(s->t_loaded - s->t_checked) /
	    1000.0 : 0.0,
	    "total_s", (double)(t1 - s->t0) / 1000.0);
	if (s->swept != NULL)
		json_object_set(rep, "swept", s->swept);
	if (s->dir != NULL)
		json_object_set_new(rep, "dir", json_string(s->dir));
	if (s->log != NULL)
		json_object_set_new(rep, "log", json_string(s->log));
	if (s->o->lazy && s->t_complete) {
		/* The guest ran after load_s; its memory was all in after
		 * memory_s.  The requests are the pages it asked for. */
		mem = json_object_get(rep, "memory");
		tim = json_object_get(rep, "timings");
		json_object_set_new(mem, "requests",
		    json_integer((json_int_t)s->lazy_requests));
		json_object_set_new(mem, "pages_on_request",
		    json_integer((json_int_t)s->lazy_pages_on_request));
		json_object_set_new(tim, "memory_s", json_real((double)
		    (s->t_complete - s->t_checked) / 1000.0));
	}
	return rep;
}

/* ---- the whole restore -------------------------------------------------- */

/* Test only: a pause before the cut, which a signal ends. */
static void
test_hold(int ms)
{
	uint64_t end = now_mono_ms() + (uint64_t)(ms > 0 ? ms : 0);

	while (now_mono_ms() < end && !sig_caught())
		usleep(10000);
}

static void
rs_free(struct rs *s)
{
	size_t i;

	lazy_free(s->lazy);
	if (s->lazy_fd >= 0)
		close(s->lazy_fd);
	vm_disks_free(s->vd, s->nvd);
	free(s->vd_used);
	for (i = 0; i < s->ndisks; i++)
		free(s->disks[i].overlay);
	free(s->disks);
	free(s->cut);
	/* Reserved but never cut: no overlay, no record. */
	records_settle(s, 1);
	free(s->slots);
	json_decref(s->swept);
	qmp_close(s->q);
	img_close(s->img);
	free(s->img_path);
	proc_free(s->proc);
	json_decref(s->manifest);
	relaunch_free(s->start_argv);
	free(s->sock_own);
	free(s->dir);
	free(s->log);
}

/*
 * Note in the store that this QEMU process now holds the checkpoint, so
 * its next checkpoint names it as the parent.  Best effort: without the
 * note the parent is the newest checkpoint of the same VM.
 */
static void
remember(const struct rs *s)
{
	struct store *st;
	uint64_t start;
	pid_t pid;

	if (vm_process(s->q, &pid, &start) < 0)
		return;
	st = store_open(s->o->store, 0, NULL);
	if (st == NULL)
		return;
	store_last_write(st, pid, start, s->o->name, NULL);
	store_close(st);
}

/* Remove directory dir made by start_prepare() and the files in it. */
static void
remove_dir(const char *dir)
{
	struct dirent *de;
	DIR *d;
	int fd;

	if ((d = opendir(dir)) == NULL)
		return;
	fd = dirfd(d);
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 &&
		    strcmp(de->d_name, "..") != 0)
			(void)unlinkat(fd, de->d_name, 0);
	closedir(d);
	(void)rmdir(dir);
}

/*
 * --start: QEMU's own directory (0700, new), its socket there unless -s
 * named a new one, and the recorded command line rewritten for it.
 */
static int
start_prepare(struct rs *s, struct err *e)
{
	const struct restore_opts *o = s->o;
	const char *base = getenv("XDG_RUNTIME_DIR");
	struct stat st;
	char *tmpl;

	if (o->socket != NULL && strncmp(o->socket, "tcp:", 4) == 0)
		return err_set(e, ERR_USAGE, "--start needs -s to be a UNIX "
		    "socket path for the QMP monitor snapctl adds");
	if (o->socket != NULL && lstat(o->socket, &st) == 0)
		return err_set(e, ERR_USAGE, "--start: '%s' exists: give -s a "
		    "new path, or leave -s out for one of snapctl's",
		    o->socket);
	if (base == NULL || *base == '\0' || access(base, W_OK) < 0)
		base = getenv("TMPDIR");
	if (base == NULL || *base == '\0')
		base = "/tmp";
	tmpl = xasprintf("%s/snapctl-%s.XXXXXX", base, o->name);
	if (mkdtemp(tmpl) == NULL) {
		err_sys(e, ERR_FAIL, "cannot create a directory '%s'", tmpl);
		free(tmpl);
		return -1;
	}
	s->dir = tmpl;
	if (o->socket == NULL) {
		s->sock_own = xasprintf("%s/qmp.sock", s->dir);
		s->sock = s->sock_own;
	}
	s->start_argv = relaunch_argv_flags(s->manifest, o->name, s->dir,
	    o->start_extra, o->keep_disks ? RELAUNCH_KEEP_DISKS : 0, e);
	if (s->start_argv == NULL)
		return -1;
	s->exec_argv = s->start_argv;
	return 0;
}

int
restore_run(const struct restore_opts *o, json_t **out, struct err *e)
{
	struct rs s;
	struct stat st;
	int rc = -1;

	memset(&s, 0, sizeof(s));
	s.o = o;
	s.sock = o->socket;
	s.exec_argv = o->exec_argv;
	s.lazy_fd = -1;
	s.t0 = now_mono_ms();
	*out = NULL;
	if ((o->exec_argv != NULL || o->start) && o->dry_run)
		return err_set(e, ERR_USAGE, "--dry-run and --%s exclude "
		    "each other", o->start ? "start" : "exec");
	if (o->exec_argv != NULL && o->start)
		return err_set(e, ERR_USAGE, "--start and --exec exclude each "
		    "other");
	if (o->keep_disks && !o->start)
		return err_set(e, ERR_USAGE, "keeping the disks needs --start");

	/* Before QEMU: the checkpoint itself. */
	if (load_checkpoint(&s, e) < 0 || sig_interrupted(e) ||
	    verify_start(&s, e) < 0)
		goto out;
	if (o->start && start_prepare(&s, e) < 0)
		goto out;
	if (s.exec_argv != NULL && start_qemu(&s, e) < 0)
		goto out;
	if (connect_qemu(&s, e) < 0)
		goto out;
	/* Read-only questions; QEMU is not touched until they pass. */
	/* The devices last: the RAM and disk checks say better what to
	 * change for the memory and disks they also cover. */
	if (check_waiting(&s, e) < 0 || check_machine(&s, e) < 0 ||
	    check_ram(&s, e) < 0 || check_disks(&s, e) < 0 ||
	    check_devices(&s, e) < 0)
		goto out;
	if (verify_join(&s, e) < 0)
		goto out;
	s.t_checked = now_mono_ms();
	if (o->dry_run) {
		*out = report(&s);
		rc = 0;
		goto out;
	}
	test_hold(o->test_hold_ms);
	if (sig_interrupted(e) || (o->lazy && lazy_prepare(&s, e) < 0) ||
	    sig_interrupted(e))
		goto out;
	/*
	 * From the cut on QEMU cannot wait as it did: a signal waits until
	 * the checkpoint is loaded (eager: then the guest stays paused) or,
	 * lazy, until the restore is done.  Except for a QEMU of ours,
	 * which a failure kills anyway.
	 */
	if (s.proc == NULL) {
		s.deferring = 1;
		qmp_set_cancel(s.q, NULL, NULL);
	}
	if ((!o->keep_disks && add_overlays(&s, e) < 0) || load(&s, e) < 0)
		goto out;
	s.loaded = 1;
	s.t_loaded = now_mono_ms();
	remember(&s);
	if (!o->lazy && s.deferring && sig_caught()) {
		sig_interrupted(e);
		msg_append(e, ": QEMU had begun loading the checkpoint, so it "
		    "went on");
		if (s.guest_ran)	/* autostart off: never, but be sure */
			vm_stop(s.q, NULL);
		goto out;
	}
	if (resume(&s, e) < 0)
		goto out;
	if (o->lazy && lazy_complete(&s, e) < 0)
		goto out;
	s.t_complete = now_mono_ms();
	sweep(&s);
	*out = report(&s);
	rc = 0;
out:
	if (s.verifying && verify_join(&s, e) < 0 && !s.touched)
		rc = -1;	/* a bad image outranks the VM's mismatch */
	/*
	 * The QEMU snapctl started goes first, and is waited for: until it
	 * has exited it may still be making an overlay for a cut this
	 * process stopped waiting on (a signal), and a file made after
	 * remove_overlays() would stay without its record, for ever.
	 */
	if (rc < 0 && s.proc != NULL) {
		qmp_close(s.q);
		s.q = NULL;
		proc_kill(s.proc);
		if (lstat(s.sock, &st) == 0 && S_ISSOCK(st.st_mode))
			unlink(s.sock);
	}
	if (rc < 0 && s.touched) {
		/* Kept: what the guest wrote, or the disks of a QEMU that
		 * holds the loaded checkpoint (and stays). */
		if (s.guest_ran)
			name_overlays(&s, e, "the guest ran on");
		else if (s.may_run && s.proc == NULL && !qmp_usable(s.q))
			/* QEMU died before its RESUME reached us: the
			 * guest may have run and written. */
			name_overlays(&s, e, "the guest may have run on");
		else if (s.loaded && s.proc == NULL)
			name_overlays(&s, e, "the guest is paused on");
		else if (s.cut_unsure && s.proc == NULL) {
			name_overlays(&s, e, "left for the sweep, as QEMU may "
			    "yet open");
			leave_overlays(&s);
		} else
			remove_overlays(&s);
	}
	/* Kept overlays are recorded, for the sweep once QEMU is gone. */
	if (s.touched)
		records_settle(&s, 0);
	if (rc < 0) {
		/* --start's directory goes, unless the message points
		 * into it (QEMU's log). */
		if (s.dir != NULL && (e == NULL || strstr(e->msg, s.dir) ==
		    NULL))
			remove_dir(s.dir);
	}
	rs_free(&s);
	return rc;
}
