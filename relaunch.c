/*
 * relaunch.c - rewrite a recorded QEMU command line so that it starts the
 * VM again on a checkpoint's disk state, beside the original if need be.
 * The rules are listed in relaunch.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launch.h"
#include "relaunch.h"
#include "util.h"
#include "vm.h"

#include "banned.h"

/* QEMU options that take no value (the rest take one). */
static const char *const flags[] = {
	"-S", "-s", "-daemonize", "-nodefaults", "-no-user-config",
	"-no-reboot", "-no-shutdown", "-enable-kvm", "-nographic",
	"-snapshot", "-usb", "-no-hpet", "-no-acpi", "-preconfig",
	"-only-migratable", "-full-screen", "-no-quit", "-alt-grab",
	"-ctrl-grab", "-no-fd-bootchk", "-win2k-hack", "-semihosting",
	"-old-param", "-enable-fips", "-xen-attach", "-curses", "-portrait",
	"-no-frame", "-sdl", "-enable-sync-profile", "-perfmap", "-jitdump",
	"-version", "-help", "-h", NULL,
};

/* Options of which a VM has one: an extra one replaces the recorded. */
static const char *const single[] = {
	"-m", "-smp", "-machine", "-cpu", "-accel", "-name", "-uuid",
	"-kernel", "-initrd", "-append", "-vnc", "-display", "-boot", "-rtc",
	"-k", NULL,
};

struct qarg {
	char *name;	/* "-drive"; NULL for a bare argument */
	char *val;	/* NULL for a flag */
	int drop;
};

struct cmd {
	struct qarg *a;
	size_t n;
};

static void
cmd_add(struct cmd *c, const char *name, const char *val)
{
	c->a = xreallocarray(c->a, c->n + 1, sizeof(*c->a));
	c->a[c->n].name = name != NULL ? xstrdup(name) : NULL;
	c->a[c->n].val = val != NULL ? xstrdup(val) : NULL;
	c->a[c->n].drop = 0;
	c->n++;
}

static void
cmd_release(struct cmd *c)
{
	size_t i;

	for (i = 0; i < c->n; i++) {
		free(c->a[i].name);
		free(c->a[i].val);
	}
	free(c->a);
}

/* argv (no argv[0]) into options. */
static void
cmd_parse(struct cmd *c, char *const *argv, size_t argc)
{
	char name[64];
	size_t i;

	for (i = 0; i < argc; i++) {
		const char *s = argv[i];

		if (s[0] != '-' || s[1] == '\0') {
			cmd_add(c, NULL, s);
			continue;
		}
		if (s[1] == '-')
			s++;
		snprintf(name, sizeof(name), "%s", strcmp(s, "-M") == 0 ?
		    "-machine" : s);
		if (str_in_set(name, flags) || i + 1 == argc)
			cmd_add(c, name, NULL);
		else
			cmd_add(c, name, argv[++i]);
	}
}

/* ---- QEMU's key=value,key=value option syntax (",," is a comma) -------- */

struct kv {
	char **k, **v;	/* k "" for an implicit first value */
	size_t n;
};

static void
kv_parse(struct kv *kv, const char *s)
{
	struct buf b = BUF_INIT;
	char *item, *eq;

	memset(kv, 0, sizeof(*kv));
	for (;;) {
		if (*s == ',' && s[1] == ',') {
			buf_addc(&b, ',');
			s += 2;
			continue;
		}
		if (*s != ',' && *s != '\0') {
			buf_addc(&b, (uint8_t)*s++);
			continue;
		}
		buf_addc(&b, '\0');
		item = (char *)b.data;
		kv->k = xreallocarray(kv->k, kv->n + 1, sizeof(char *));
		kv->v = xreallocarray(kv->v, kv->n + 1, sizeof(char *));
		/* An escaped '=' cannot be told apart here; QEMU's keys
		 * have none. */
		eq = strchr(item, '=');
		if (eq != NULL) {
			kv->k[kv->n] = xstrndup(item, (size_t)(eq - item));
			kv->v[kv->n] = xstrdup(eq + 1);
		} else {
			kv->k[kv->n] = xstrdup("");
			kv->v[kv->n] = xstrdup(item);
		}
		kv->n++;
		buf_reset(&b);
		if (*s == '\0')
			break;
		s++;
	}
	buf_release(&b);
}

static const char *
kv_get(const struct kv *kv, const char *key)
{
	size_t i;

	for (i = 0; i < kv->n; i++)
		if (strcmp(kv->k[i], key) == 0)
			return kv->v[i];
	return NULL;
}

static void
kv_release(struct kv *kv)
{
	size_t i;

	for (i = 0; i < kv->n; i++) {
		free(kv->k[i]);
		free(kv->v[i]);
	}
	free(kv->k);
	free(kv->v);
}

static void
kv_esc(struct buf *b, const char *s)
{
	for (; *s != '\0'; s++) {
		if (*s == ',')
			buf_addc(b, ',');
		buf_addc(b, (uint8_t)*s);
	}
}

/* Key key (or any key starting "key." when prefix) is skipped. */
static int
kv_skip(const char *k, const char *const *skip)
{
	size_t n;

	for (; *skip != NULL; skip++) {
		n = strlen(*skip);
		if (strcmp(k, *skip) == 0 ||
		    (strncmp(k, *skip, n) == 0 && k[n] == '.'))
			return 1;
	}
	return 0;
}

/* kv back to text, without the keys of skip (and their "key." members). */
static void
kv_write(struct buf *b, const struct kv *kv, const char *const *skip)
{
	size_t i;

	for (i = 0; i < kv->n; i++) {
		if (skip != NULL && kv_skip(kv->k[i], skip))
			continue;
		if (b->len > 0)
			buf_addc(b, ',');
		if (kv->k[i][0] != '\0') {
			buf_addstr(b, kv->k[i]);
			buf_addc(b, '=');
		}
		kv_esc(b, kv->v[i]);
	}
}

static char *
buf_take(struct buf *b)
{
	char *s = xstrndup(b->data != NULL ? (const char *)b->data : "",
	    b->len);

	buf_release(b);
	return s;
}

/* The id= of an option value (node-name= for -blockdev, JSON or not). */
static char *
opt_id(const char *name, const char *val)
{
	const char *key = strcmp(name, "-blockdev") == 0 ? "node-name" : "id";
	json_t *j;
	struct kv kv;
	char *id = NULL;

	if (val == NULL)
		return NULL;
	if (val[0] == '{') {
		j = json_loads(val, 0, NULL);
		if (json_str(j, key) != NULL)
			id = xstrdup(json_str(j, key));
		json_decref(j);
		return id;
	}
	kv_parse(&kv, val);
	if (kv_get(&kv, key) != NULL)
		id = xstrdup(kv_get(&kv, key));
	kv_release(&kv);
	return id;
}

/* ---- disks --------------------------------------------------------------- */

/* The recorded option holding drive or node name "want". */
static struct qarg *
find_opt(struct cmd *c, const char *name, const char *want)
{
	char *id;
	size_t i;
	int virtio = 0, hit;

	for (i = 0; i < c->n; i++) {
		struct qarg *a = &c->a[i];

		if (a->drop || a->name == NULL || a->val == NULL ||
		    strcmp(a->name, name) != 0)
			continue;
		id = opt_id(name, a->val);
		hit = id != NULL && strcmp(id, want) == 0;
		if (id == NULL && strcmp(name, "-drive") == 0) {
			/* if=virtio without id= is "virtioN". */
			struct kv kv;
			char implicit[32];

			kv_parse(&kv, a->val);
			if (kv_get(&kv, "if") != NULL &&
			    strcmp(kv_get(&kv, "if"), "virtio") == 0) {
				snprintf(implicit, sizeof(implicit),
				    "virtio%d", virtio++);
				hit = strcmp(implicit, want) == 0;
			}
			kv_release(&kv);
		}
		free(id);
		if (hit)
			return a;
	}
	return NULL;
}

/* The drive= of the -device with id qid, or NULL. */
static char *
device_drive(struct cmd *c, const char *qid)
{
	struct qarg *a = find_opt(c, "-device", qid);
	struct kv kv;
	char *drive = NULL;

	if (a == NULL)
		return NULL;
	kv_parse(&kv, a->val);
	if (kv_get(&kv, "drive") != NULL)
		drive = xstrdup(kv_get(&kv, "drive"));
	kv_release(&kv);
	return drive;
}

static void
rewrite_drive(struct qarg *a, const char *file, const char *fmt, int nolock)
{
	static const char *const skip[] = { "file", "format", "driver", NULL };
	struct buf b = BUF_INIT;
	struct kv kv;

	kv_parse(&kv, a->val);
	kv_write(&b, &kv, skip);
	buf_addstr(&b, b.len > 0 ? ",file=" : "file=");
	kv_esc(&b, file);
	buf_addf(&b, ",format=%s", fmt);
	if (nolock)
		buf_addstr(&b, ",file.locking=off");
	kv_release(&kv);
	free(a->val);
	a->val = buf_take(&b);
}

/* Drop the -blockdev named child, if the recorded line has it. */
static void
drop_node(struct cmd *c, const char *child)
{
	struct qarg *a = find_opt(c, "-blockdev", child);

	if (a != NULL)
		a->drop = 1;
}

static void
rewrite_blockdev(struct cmd *c, struct qarg *a, const char *file,
    const char *fmt, int nolock)
{
	static const char *const skip[] = { "file", "driver", "backing",
	    NULL };
	struct buf b = BUF_INIT;
	json_t *j, *child;
	struct kv kv;
	char *text;

	if (a->val[0] == '{' && (j = json_loads(a->val, 0, NULL)) != NULL) {
		if (json_is_string(json_object_get(j, "file")))
			drop_node(c, json_string_value(json_object_get(j,
			    "file")));
		json_object_del(j, "backing");
		json_object_set_new(j, "driver", json_string(fmt));
		child = json_pack("{s:s, s:s}", "driver", "file", "filename",
		    file);
		if (nolock)
			json_object_set_new(child, "locking",
			    json_string("off"));
		json_object_set_new(j, "file", child);
		text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
		json_decref(j);
		free(a->val);
		a->val = text != NULL ? text : xstrdup("{}");
		return;
	}
	kv_parse(&kv, a->val);
	if (kv_get(&kv, "file") != NULL)
		drop_node(c, kv_get(&kv, "file"));
	buf_addf(&b, "driver=%s", fmt);
	kv_write(&b, &kv, skip);
	buf_addstr(&b, ",file.driver=file,file.filename=");
	kv_esc(&b, file);
	if (nolock)
		buf_addstr(&b, ",file.locking=off");
	kv_release(&kv);
	free(a->val);
	a->val = buf_take(&b);
}

static int
rewrite_disks(struct cmd *c, const json_t *m, const char *name, int nolock,
    struct err *e)
{
	const json_t *d;
	const char *dev, *file, *fmt;
	char *qid, *drive;
	struct qarg *a;
	size_t i;

	json_array_foreach(json_object_get(m, "disks"), i, d) {
		dev = json_str(d, "device");
		file = json_str(d, "file");
		fmt = json_str(d, "format") ? json_str(d, "format") : "raw";
		if (dev == NULL || file == NULL)
			continue;
		qid = json_str(d, "qdev") ? vm_qdev_id(json_str(d, "qdev")) :
		    xstrdup(dev);
		drive = device_drive(c, qid);
		if (drive == NULL)
			drive = xstrdup(dev);
		if ((a = find_opt(c, "-drive", drive)) != NULL) {
			rewrite_drive(a, file, fmt, nolock);
		} else if ((a = find_opt(c, "-blockdev", drive)) != NULL) {
			rewrite_blockdev(c, a, file, fmt, nolock);
		} else {
			err_set(e, ERR_FAIL, "checkpoint '%s': cannot find disk "
			    "'%s' in the recorded command line: restore it with "
			    "--exec -- QEMU ARGS...", name, *dev ? dev : qid);
			free(drive);
			free(qid);
			return -1;
		}
		free(drive);
		free(qid);
	}
	return 0;
}

/* ---- the second instance's own files ----------------------------------- */

static void
rewrite_side(struct cmd *c, const char *dir)
{
	static const char *const drop[] = { "-daemonize", "-pidfile", "-qmp",
	    "-qmp-pretty", "-monitor", "-mon", "-D", "-spice", NULL };
	static const char *const serial_to_file[] = { "file:", "unix:",
	    "tcp:", "telnet:", "udp:", "pipe:", "pty", NULL };
	const char *const *p;
	struct buf b = BUF_INIT;
	struct kv kv;
	const char *backend, *id;
	size_t i;
	int nserial = 0;

	for (i = 0; i < c->n; i++) {
		struct qarg *a = &c->a[i];

		if (a->drop || a->name == NULL)
			continue;
		if (str_in_set(a->name, drop)) {
			a->drop = 1;
		} else if (strcmp(a->name, "-vnc") == 0 && a->val != NULL) {
			free(a->val);
			a->val = xstrdup("none");
		} else if (strcmp(a->name, "-serial") == 0 && a->val != NULL) {
			for (p = serial_to_file; *p != NULL; p++)
				if (strncmp(a->val, *p, strlen(*p)) == 0)
					break;
			if (*p != NULL) {
				free(a->val);
				a->val = xasprintf("file:%s/serial%d.log", dir,
				    nserial);
			}
			nserial++;
		} else if (strcmp(a->name, "-chardev") == 0 &&
		    a->val != NULL) {
			kv_parse(&kv, a->val);
			backend = kv_get(&kv, "") ? kv_get(&kv, "") :
			    kv_get(&kv, "backend");
			id = kv_get(&kv, "id");
			if (backend != NULL && id != NULL &&
			    (strcmp(backend, "socket") == 0 ||
			    strcmp(backend, "udp") == 0 ||
			    strcmp(backend, "pipe") == 0)) {
				buf_addstr(&b, "null,id=");
				kv_esc(&b, id);
			} else if (backend != NULL && id != NULL &&
			    strcmp(backend, "file") == 0) {
				static const char *const skip[] = { "path",
				    NULL };

				kv_write(&b, &kv, skip);
				buf_addf(&b, ",path=%s/chardev-", dir);
				kv_esc(&b, id);
				buf_addstr(&b, ".log");
			}
			if (b.len > 0) {
				free(a->val);
				a->val = buf_take(&b);
			}
			kv_release(&kv);
		}
	}
}

/* Recorded options an extra one replaces. */
static void
replace_with(struct cmd *c, const char *name, const char *val)
{
	char *id = opt_id(name, val), *rid;
	size_t i;

	for (i = 0; i < c->n; i++) {
		struct qarg *a = &c->a[i];

		if (a->drop || a->name == NULL || strcmp(a->name, name) != 0)
			continue;
		if (str_in_set(name, single)) {
			a->drop = 1;
			continue;
		}
		if (id == NULL)
			continue;
		rid = opt_id(name, a->val);
		if (rid != NULL && strcmp(rid, id) == 0)
			a->drop = 1;
		free(rid);
	}
	free(id);
}

char **
relaunch_argv(const json_t *m, const char *name, const char *dir,
    char *const *extra, struct err *e)
{
	return relaunch_argv_flags(m, name, dir, extra, 0, e);
}

char **
relaunch_argv_flags(const json_t *m, const char *name, const char *dir,
    char *const *extra, unsigned how, struct err *e)
{
	static const char *const gone[] = { "-incoming", "-S", "-loadvm",
	    NULL };
	const json_t *l = json_object_get(m, MF_LAUNCH), *v;
	struct cmd c = { NULL, 0 }, x = { NULL, 0 };
	char **rec = NULL, **argv = NULL;
	size_t i, n = 0, k;

	if (!json_is_true(json_object_get(l, "readable"))) {
		err_set(e, ERR_FAIL, "checkpoint '%s' has no record of how its "
		    "VM was started (%s): restore it with --exec -- QEMU "
		    "ARGS...", name, json_str(l, "reason") ? json_str(l,
		    "reason") : "made by a snapctl that did not record it");
		return NULL;
	}
	v = json_object_get(l, "argv");
	rec = xcalloc(json_array_size(v) + 1, sizeof(*rec));
	for (i = 0; i < json_array_size(v); i++)
		rec[i] = (char *)json_string_value(json_array_get(v, i));
	cmd_parse(&c, rec + 1, json_array_size(v) - 1);
	for (i = 0; i < c.n; i++)
		if (c.a[i].name != NULL && str_in_set(c.a[i].name, gone))
			c.a[i].drop = 1;
	if (!(how & RELAUNCH_KEEP_DISKS) &&
	    rewrite_disks(&c, m, name, dir != NULL, e) < 0)
		goto out;
	if (dir != NULL)
		rewrite_side(&c, dir);
	for (k = 0; extra != NULL && extra[k] != NULL; k++)
		;
	cmd_parse(&x, extra, k);
	for (i = 0; i < x.n; i++)
		if (x.a[i].name != NULL)
			replace_with(&c, x.a[i].name, x.a[i].val);
	argv = xcalloc(1 + 2 * (c.n + x.n) + 3, sizeof(*argv));
	argv[n++] = xstrdup(json_str(l, "exe"));
	for (k = 0; k < 2; k++) {
		struct cmd *w = k == 0 ? &c : &x;

		for (i = 0; i < w->n; i++) {
			if (w->a[i].drop)
				continue;
			if (w->a[i].name != NULL)
				argv[n++] = xstrdup(w->a[i].name);
			if (w->a[i].val != NULL)
				argv[n++] = xstrdup(w->a[i].val);
		}
	}
	if (dir == NULL) {
		argv[n++] = xstrdup("-incoming");
		argv[n++] = xstrdup("defer");
	}
	argv[n] = NULL;
out:
	free(rec);
	cmd_release(&c);
	cmd_release(&x);
	return argv;
}

void
relaunch_free(char **argv)
{
	size_t i;

	for (i = 0; argv != NULL && argv[i] != NULL; i++)
		free(argv[i]);
	free(argv);
}
