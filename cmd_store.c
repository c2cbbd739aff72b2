/*
 * cmd_store.c - the commands that work on the checkpoints of a store:
 * list, info and verify (of a checkpoint NAME, or of an image file, as
 * cmd_image.c does), delete and prune.  The work is store.c's and
 * diskgc.c's; this file parses, dispatches and prints.
 */
#include <sys/stat.h>

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "diskfile.h"
#include "diskgc.h"
#include "qmp.h"
#include "save.h"
#include "snapctl.h"
#include "store.h"
#include "util.h"

enum {
	OPT_JSON = 256, OPT_DISKS, OPT_DRY_RUN, OPT_KEEP,
};

/*
 * Options anywhere among the arguments ("delete c1 --disks"), as git's
 * parse-options: positional words go to pos[] in order, "--" ends the
 * options.  Long options only, so a word never continues a cluster.
 * Returns the option, -1 at the end, '?' with e filled.
 */
struct args {
	char **pos;
	int npos;
};

static int
next_opt(int argc, char **argv, const struct option *longopts,
    struct args *a, struct err *e)
{
	int ch, argi;

	if (a->pos == NULL)
		a->pos = xcalloc((size_t)argc + 1, sizeof(*a->pos));
	for (;;) {
		if (optind < argc && strcmp(argv[optind], "--") == 0) {
			for (optind++; optind < argc; optind++)
				a->pos[a->npos++] = argv[optind];
			return -1;
		}
		ch = cmd_getopt(argc, argv, "", longopts, &argi, e);
		if (ch != -1)
			return ch;
		if (argi >= argc)
			return -1;
		a->pos[a->npos++] = argv[argi];
		optind = argi + 1;
	}
}

static void
args_release(struct args *a)
{
	free(a->pos);
	a->pos = NULL;
}

static void
bytes_short(uint64_t n, char out[32])
{
	char *sp;

	format_bytes(n, out);
	sp = strchr(out, ' ');
	if (sp != NULL)
		memmove(sp, sp + 1, strlen(sp));
}

static struct store *
open_store(struct err *e)
{
	if (options.dir == NULL) {
		err_set(e, ERR_USAGE, "no checkpoint store: use -d or "
		    "SNAPCTL_DIR");
		return NULL;
	}
	return store_open(options.dir, 0, e);
}

static void
warn_bad(const json_t *bad)
{
	const json_t *b;
	size_t i;

	json_array_foreach(bad, i, b)
		warnx_("skipped '%s': %s", json_str(b, "name"), json_str(b, "error"));
}

/* ---- list ---------------------------------------------------------------- */

static json_t *
list_entry(const json_t *m)
{
	const json_t *mem = json_object_get(m, "memory");
	const json_t *d;
	json_t *disks = json_array();
	size_t i;

	json_array_foreach(json_object_get(m, "disks"), i, d)
		if (json_str(d, "device") != NULL)
			json_array_append_new(disks,
			    json_string(json_str(d, "device")));
	return json_pack("{s:s?, s:s?, s:s?, s:O?, s:s?, s:O?, s:o}",
	    "name", json_str(m, "name"),
	    "created", json_str(m, "created"),
	    "parent", json_str(m, "parent"),
	    "vm", json_object_get(m, "vm"),
	    "mode", json_str(m, "mode"),
	    "memory_bytes", json_object_get(mem, "bytes_on_disk"),
	    "disks", disks);
}

int
cmd_list(int argc, char **argv, struct err *e)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, OPT_JSON },
		{ NULL, 0, NULL, 0 },
	};
	struct args a = { NULL, 0 };
	struct store *s = NULL;
	json_t *all = NULL, *bad = NULL, *out = NULL, *m, *d;
	size_t i, j;
	int ch, w = 4, wp = 6, rc = -1;
	char mem[32];

	while ((ch = next_opt(argc, argv, longopts, &a, e)) != -1) {
		if (ch != OPT_JSON)
			goto out;
		options.json = 1;
	}
	if (cmd_check_args(cmd_find("list"), a.npos, e) < 0)
		goto out;
	if ((s = open_store(e)) == NULL)
		goto out;
	if ((all = store_list(s, &bad, e)) == NULL)
		goto out;
	warn_bad(bad);
	if (options.json) {
		out = json_array();
		json_array_foreach(all, i, m)
			json_array_append_new(out, list_entry(m));
		print_json(out);
		rc = 0;
		goto out;
	}
	json_array_foreach(all, i, m) {
		if ((int)strlen(json_str(m, "name")) > w)
			w = (int)strlen(json_str(m, "name"));
		if (json_str(m, "parent") != NULL &&
		    (int)strlen(json_str(m, "parent")) > wp)
			wp = (int)strlen(json_str(m, "parent"));
	}
	json_array_foreach(all, i, m) {
		const json_t *b = json_object_get(json_object_get(m,
		    "memory"), "bytes_on_disk");

		if (json_is_integer(b))
			bytes_short((uint64_t)json_integer_value(b), mem);
		else
			snprintf(mem, sizeof(mem), "-");
		printf("%-*s  %-20s  %-*s  %9s  ", w, json_str(m, "name"),
		    json_str(m, "created"), wp, json_str(m, "parent") ?
		    json_str(m, "parent") : "-", mem);
		if (json_array_size(json_object_get(m, "disks")) == 0)
			fputs("-", stdout);
		json_array_foreach(json_object_get(m, "disks"), j, d)
			printf("%s%s", j ? "," : "", json_str(d, "device") ?
			    json_str(d, "device") : "?");
		fputc('\n', stdout);
	}
	rc = 0;
out:
	args_release(&a);
	json_decref(out);
	json_decref(all);
	json_decref(bad);
	store_close(s);
	return rc;
}

/* ---- info and verify: NAME or IMAGE -------------------------------------- */

/*
 * What the argument of info and verify names.  With '/', an image file.
 * Else, with a store given and STORE/arg present, that checkpoint: *sp and
 * *mp are set (the caller frees them).  Else an image file of that name,
 * if one exists.  0 with *mp NULL for an image; -1 with e filled.
 */
static int
resolve(const char *arg, struct store **sp, json_t **mp, struct err *e)
{
	struct store *s = NULL;
	struct stat st;

	*sp = NULL;
	*mp = NULL;
	if (strchr(arg, '/') != NULL)
		return 0;
	if (options.dir != NULL && store_name_check(arg, NULL) == 0 &&
	    (s = store_open(options.dir, 0, NULL)) != NULL &&
	    store_exists(s, arg)) {
		*mp = store_manifest_read(s, arg, e);
		if (*mp == NULL) {
			store_close(s);
			return -1;
		}
		*sp = s;
		return 0;
	}
	store_close(s);
	if (stat(arg, &st) == 0)
		return 0;
	if (options.dir != NULL)
		return err_set(e, ERR_FAIL, "no checkpoint '%s' in '%s' and no "
		    "image file '%s'", arg, options.dir, arg);
	return err_set(e, ERR_FAIL, "no image file '%s' (give -d to look for "
	    "a checkpoint '%s')", arg, arg);
}

/* Run an image command on path alone, as "snapctl CMD PATH" would. */
static int
image_command(int (*fn)(int, char **, struct err *), const char *cmd,
    const char *path, struct err *e)
{
	char *av[3];

	av[0] = (char *)cmd;
	av[1] = (char *)path;
	av[2] = NULL;
	optind = 1;
	return fn(2, av, e);
}

/* The word in single quotes for a POSIX shell. */
static void
print_quoted(const char *s)
{
	fputc('\'', stdout);
	for (; *s != '\0'; s++) {
		if (*s == '\'')
			fputs("'\\''", stdout);
		else
			fputc(*s, stdout);
	}
	fputc('\'', stdout);
}

static void
print_blockdev(json_t *j)
{
	char *text = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII);

	fputs("-blockdev ", stdout);
	print_quoted(text != NULL ? text : "{}");
	free(text);
	json_decref(j);
}

static void
info_text(const json_t *m)
{
	const json_t *vm = json_object_get(m, "vm");
	const json_t *mem = json_object_get(m, "memory");
	const json_t *t = json_object_get(m, "timings");
	const json_t *d, *v;
	const char *node, *file, *fmt, *machine;
	char a[32], b[32], c[32];
	size_t i;

	printf("checkpoint: %s\n", json_str(m, "name"));
	printf("created:    %s\n", json_str(m, "created") ? json_str(m, "created") :
	    "?");
	printf("parent:     %s\n", json_str(m, "parent") ? json_str(m, "parent") :
	    "none");
	printf("vm:         %s (uuid %s, QEMU %s, machine %s)\n",
	    json_str(vm, "name") ? json_str(vm, "name") : "unnamed",
	    json_str(vm, "uuid") ? json_str(vm, "uuid") : "none",
	    json_str(vm, "qemu") ? json_str(vm, "qemu") : "?",
	    json_str(vm, "machine") ? json_str(vm, "machine") : "?");
	printf("mode:       %s%s%s\n", json_str(m, "mode") ? json_str(m, "mode") : "?",
	    json_is_true(json_object_get(m, "forced")) ?
	    ", forced by --timeout" : "",
	    json_is_true(json_object_get(m, "quiesced")) ?
	    ", filesystems frozen" : "");
	if (json_is_object(mem)) {
		format_bytes((uint64_t)json_integer_value(json_object_get(mem,
		    "bytes_on_disk")), a);
		format_bytes((uint64_t)json_integer_value(json_object_get(mem,
		    "ram_bytes")), b);
		format_bytes((uint64_t)json_integer_value(json_object_get(mem,
		    "stream_bytes")), c);
		printf("memory:     %s on disk (%s) for %s of RAM; %lld pages, "
		    "%lld zero; %s of stream received\n", a,
		    json_str(mem, "path") ? json_str(mem, "path") : "?", b,
		    (long long)json_integer_value(json_object_get(mem,
		    "pages")),
		    (long long)json_integer_value(json_object_get(mem,
		    "zero_pages")), c);
	} else {
		printf("memory:     none (disk-only)\n");
	}
	printf("timings:    guest paused %.1f ms", json_number_value(
	    json_object_get(t, "paused_ms")));
	if ((v = json_object_get(t, "qemu_downtime_ms")) != NULL)
		printf(", QEMU downtime %lld ms",
		    (long long)json_integer_value(v));
	if ((v = json_object_get(t, "frozen_ms")) != NULL)
		printf(", frozen %lld ms", (long long)json_integer_value(v));
	printf(", total %.1f s, %lld passes\n", json_number_value(
	    json_object_get(t, "total_s")), (long long)json_integer_value(
	    json_object_get(t, "passes")));
	json_array_foreach(json_object_get(m, "disks"), i, d) {
		printf("disk %s:\n", json_str(d, "device") ? json_str(d, "device") :
		    "?");
		printf("  state in: %s (%s, backing %s)\n",
		    json_str(d, "file") ? json_str(d, "file") : "?",
		    json_str(d, "format") ? json_str(d, "format") : "?",
		    json_str(d, "backing") ? json_str(d, "backing") : "none");
		printf("  VM moved to: %s\n", json_str(d, "overlay") ?
		    json_str(d, "overlay") : "?");
	}

	machine = json_str(vm, "machine");
	printf("\nTo start a QEMU to restore into, give it:\n");
	json_array_foreach(json_object_get(m, "disks"), i, d) {
		file = json_str(d, "file");
		if (file == NULL)
			continue;
		node = json_str(d, "node") ? json_str(d, "node") : json_str(d, "device");
		fmt = json_str(d, "format") ? json_str(d, "format") : "raw";
		if (node == NULL)
			continue;
		{
			char *fnode = xasprintf("%s-file", node);

			fputs("  ", stdout);
			print_blockdev(json_pack("{s:s, s:s, s:s}", "driver",
			    "file", "filename", file, "node-name", fnode));
			fputc(' ', stdout);
			print_blockdev(json_pack("{s:s, s:s, s:s}", "driver",
			    fmt, "file", fnode, "node-name", node));
			fputs(" \\\n", stdout);
			free(fnode);
		}
	}
	printf("  -incoming defer\n");
	printf("and keep the VM's -machine %s, its -m and its devices",
	    machine ? machine : "(as recorded)");
	json_array_foreach(json_object_get(m, "disks"), i, d) {
		node = json_str(d, "node") ? json_str(d, "node") : json_str(d, "device");
		printf("%s%s on drive=%s", i ? ", " : " (disk ",
		    json_str(d, "device") ? json_str(d, "device") : "?",
		    node ? node : "?");
	}
	printf("%s.\n", json_array_size(json_object_get(m, "disks")) ?
	    ")" : "");
}

int
cmd_info(int argc, char **argv, struct err *e)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, OPT_JSON },
		{ NULL, 0, NULL, 0 },
	};
	struct args a = { NULL, 0 };
	struct store *s = NULL;
	json_t *m = NULL;
	char *text;
	int ch, rc = -1;

	while ((ch = next_opt(argc, argv, longopts, &a, e)) != -1) {
		if (ch != OPT_JSON)
			goto out;
		options.json = 1;
	}
	if (cmd_check_args(cmd_find("info"), a.npos, e) < 0)
		goto out;
	if (resolve(a.pos[0], &s, &m, e) < 0)
		goto out;
	if (m == NULL) {
		rc = image_command(cmd_image_info, "info", a.pos[0], e);
		goto out;
	}
	if (options.json) {
		/* As written: the manifest's own number precision. */
		text = json_dumps(m, JSON_COMPACT | JSON_ENSURE_ASCII |
		    JSON_REAL_PRECISION(9));
		if (text == NULL) {
			err_set(e, ERR_FAIL, "cannot encode the manifest");
			goto out;
		}
		printf("%s\n", text);
		free(text);
	} else {
		info_text(m);
	}
	rc = 0;
out:
	args_release(&a);
	json_decref(m);
	store_close(s);
	return rc;
}

/* Every disk, then the memory image; the first failure is the answer. */
static int
verify_checkpoint(struct store *s, const char *name, const json_t *m,
    struct err *e)
{
	const json_t *mem = json_object_get(m, "memory"), *d;
	struct img_reader *r = NULL;
	json_t *disks = json_array(), *memj = json_null(), *out;
	const char *mpath;
	char *path = NULL;
	size_t i;
	int rc = -1;

	json_array_foreach(json_object_get(m, "disks"), i, d) {
		if (diskfile_check(d, e) < 0) {
			err_prefix(e, "%s: ", name);
			goto out;
		}
		json_array_append_new(disks, json_pack("{s:s?, s:s?, s:b}",
		    "device", json_str(d, "device"), "file", json_str(d, "file"),
		    "ok", 1));
	}
	if (json_is_object(mem)) {
		mpath = json_str(mem, "path");
		if (mpath == NULL || strchr(mpath, '/') != NULL ||
		    mpath[0] == '.') {
			err_set(e, ERR_FAIL, "%s: the manifest names no usable "
			    "memory image", name);
			goto out;
		}
		path = xasprintf("%s/%s/%s", store_path(s), name, mpath);
		r = img_open(path, e);
		if (r == NULL) {
			err_prefix(e, "%s: ", name);
			goto out;
		}
		if (img_verify_parallel(r, path, 0, e) < 0) {
			err_prefix(e, "%s: '%s': ", name, path);
			goto out;
		}
		json_decref(memj);
		memj = json_pack("{s:s, s:b}", "image", path, "ok", 1);
	}
	if (options.json) {
		out = json_pack("{s:s, s:b, s:O, s:O}", "name", name, "ok", 1,
		    "memory", memj, "disks", disks);
		print_json(out);
		json_decref(out);
	} else {
		printf("%s: ok\n", name);
	}
	rc = 0;
out:
	img_close(r);
	free(path);
	json_decref(memj);
	json_decref(disks);
	return rc;
}

int
cmd_verify(int argc, char **argv, struct err *e)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, OPT_JSON },
		{ NULL, 0, NULL, 0 },
	};
	struct args a = { NULL, 0 };
	struct store *s = NULL;
	json_t *m = NULL;
	int ch, rc = -1;

	while ((ch = next_opt(argc, argv, longopts, &a, e)) != -1) {
		if (ch != OPT_JSON)
			goto out;
		options.json = 1;
	}
	if (cmd_check_args(cmd_find("verify"), a.npos, e) < 0)
		goto out;
	if (resolve(a.pos[0], &s, &m, e) < 0)
		goto out;
	if (m == NULL)
		rc = image_command(cmd_image_verify, "verify", a.pos[0], e);
	else
		rc = verify_checkpoint(s, a.pos[0], m, e);
out:
	args_release(&a);
	json_decref(m);
	store_close(s);
	return rc;
}

/* ---- delete and prune ----------------------------------------------------- */

struct del_opts {
	int disks;
	int dry_run;
};

static int
in_names(const json_t *names, const char *name)
{
	const json_t *v;
	size_t i;

	json_array_foreach(names, i, v)
		if (strcmp(json_string_value(v), name) == 0)
			return 1;
	return 0;
}

/*
 * Delete the checkpoints named in gone (the store locked unless dry_run),
 * then, with --disks, the disk files that frees.  *out (new reference)
 * says what was done: {"deleted": [NAME...], "disks": [...]}, also on
 * failure after something was done.
 */
static int
delete_run(struct store *s, const json_t *all, const json_t *bad,
    const json_t *gone, const struct del_opts *o, json_t **out,
    struct err *e)
{
	struct diskgc_opts go = DISKGC_OPTS_INIT;
	struct qmp *q = NULL;
	json_t *deleted = json_array(), *vm_files = NULL, *report = NULL;
	const json_t *b, *n;
	size_t i;
	int unseen = 0, rc = -1;

	*out = NULL;
	if (o->disks) {
		/* A manifest we cannot read may name any file. */
		json_array_foreach(bad, i, b) {
			if (in_names(gone, json_str(b, "name")))
				continue;
			err_set(e, ERR_FAIL, "--disks needs every manifest of "
			    "the store, and %s; delete or repair checkpoint "
			    "'%s' first", json_str(b, "error"), json_str(b, "name"));
			goto out;
		}
		if (options.socket != NULL) {
			if ((q = cmd_qmp_connect(e)) == NULL)
				goto out;
			if ((vm_files = diskgc_vm_files(q, e)) == NULL) {
				err_prefix(e, "query-block: ");
				goto out;
			}
		}
	}
	json_array_foreach(gone, i, n) {
		if (!o->dry_run && store_remove_checkpoint(s,
		    json_string_value(n), e) < 0)
			goto done;
		json_array_append(deleted, (json_t *)n);
	}
	if (o->disks) {
		go.all = all;
		go.gone = gone;
		go.vm_files = vm_files;
		go.dry_run = o->dry_run;
		if (diskgc_run(&go, &report, &unseen, e) < 0)
			goto done;
		if (unseen > 0)
			warnx_("%d processes could not be looked at: files "
			    "they hold open were not seen", unseen);
	}
	rc = 0;
done:
	*out = json_pack("{s:O, s:o}", "deleted", deleted, "disks",
	    report ? report : json_array());
out:
	qmp_close(q);
	json_decref(vm_files);
	json_decref(deleted);
	return rc;
}

static void
print_deleted(const json_t *r, int dry_run)
{
	const json_t *v, *d, *why;
	size_t i, j;

	if (options.json) {
		print_json((json_t *)r);
		return;
	}
	json_array_foreach(json_object_get(r, "deleted"), i, v)
		printf("%s checkpoint '%s'\n", dry_run ? "would delete" :
		    "deleted", json_string_value(v));
	json_array_foreach(json_object_get(r, "disks"), i, d) {
		if (json_is_true(json_object_get(d, "removed"))) {
			printf("%s '%s'\n", dry_run ? "would remove" :
			    "removed", json_str(d, "file"));
			continue;
		}
		printf("%s '%s': ", dry_run ? "would keep" : "kept",
		    json_str(d, "file"));
		json_array_foreach(json_object_get(d, "reasons"), j, why)
			printf("%s%s", j ? "; " : "", json_string_value(why));
		fputc('\n', stdout);
	}
}

int
cmd_delete(int argc, char **argv, struct err *e)
{
	static const struct option longopts[] = {
		{ "disks", no_argument, NULL, OPT_DISKS },
		{ "json", no_argument, NULL, OPT_JSON },
		{ NULL, 0, NULL, 0 },
	};
	struct del_opts o = { 0, 0 };
	struct args a = { NULL, 0 };
	struct store *s = NULL;
	json_t *all = NULL, *bad = NULL, *gone = json_array(), *r = NULL;
	const json_t *m, *b;
	size_t j;
	int ch, i, found, rc = -1;

	while ((ch = next_opt(argc, argv, longopts, &a, e)) != -1) {
		switch (ch) {
		case OPT_DISKS:
			o.disks = 1;
			break;
		case OPT_JSON:
			options.json = 1;
			break;
		default:
			goto out;
		}
	}
	if (cmd_check_args(cmd_find("delete"), a.npos, e) < 0)
		goto out;
	if ((s = open_store(e)) == NULL || store_lock(s, e) < 0)
		goto out;
	if ((all = store_list(s, &bad, e)) == NULL)
		goto out;
	/* Every name first: an unknown one deletes nothing. */
	for (i = 0; i < a.npos; i++) {
		found = 0;
		json_array_foreach(all, j, m)
			found |= strcmp(json_str(m, "name"), a.pos[i]) == 0;
		json_array_foreach(bad, j, b)
			found |= strcmp(json_str(b, "name"), a.pos[i]) == 0;
		if (!found) {
			err_set(e, ERR_FAIL, "no checkpoint '%s' in '%s'",
			    a.pos[i], options.dir);
			goto out;
		}
		if (!in_names(gone, a.pos[i]))
			json_array_append_new(gone, json_string(a.pos[i]));
	}
	rc = delete_run(s, all, bad, gone, &o, &r, e);
	if (r != NULL)
		print_deleted(r, 0);
out:
	args_release(&a);
	json_decref(r);
	json_decref(gone);
	json_decref(all);
	json_decref(bad);
	store_close(s);
	return rc;
}

/* Same VM: equal uuid and name, null matching null (store_find_parent). */
static int
same_vm(const json_t *a, const json_t *b)
{
	static const char *const keys[] = { "uuid", "name" };
	const char *x, *y;
	size_t k;

	for (k = 0; k < ARRAY_SIZE(keys); k++) {
		x = json_str(json_object_get(a, "vm"), keys[k]);
		y = json_str(json_object_get(b, "vm"), keys[k]);
		if ((x == NULL) != (y == NULL) || (x != NULL &&
		    strcmp(x, y) != 0))
			return 0;
	}
	return 1;
}

int
cmd_prune(int argc, char **argv, struct err *e)
{
	static const struct option longopts[] = {
		{ "keep", required_argument, NULL, OPT_KEEP },
		{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
		{ "disks", no_argument, NULL, OPT_DISKS },
		{ "json", no_argument, NULL, OPT_JSON },
		{ NULL, 0, NULL, 0 },
	};
	struct del_opts o = { 0, 0 };
	struct args a = { NULL, 0 };
	struct store *s = NULL;
	json_t *all = NULL, *bad = NULL, *gone = json_array(), *r = NULL;
	json_t *kept = json_array();
	const json_t *m, *m2;
	uint64_t keep = 0;
	size_t i, j, newer;
	int ch, have_keep = 0, rc = -1;

	while ((ch = next_opt(argc, argv, longopts, &a, e)) != -1) {
		switch (ch) {
		case OPT_KEEP:
			if (opt_u64("--keep", optarg, 0, 1000000, &keep,
			    e) < 0)
				goto out;
			have_keep = 1;
			break;
		case OPT_DRY_RUN:
			o.dry_run = 1;
			break;
		case OPT_DISKS:
			o.disks = 1;
			break;
		case OPT_JSON:
			options.json = 1;
			break;
		default:
			goto out;
		}
	}
	if (cmd_check_args(cmd_find("prune"), a.npos, e) < 0)
		goto out;
	if (!have_keep) {
		err_set(e, ERR_USAGE, "prune: --keep N is required");
		goto out;
	}
	if ((s = open_store(e)) == NULL)
		goto out;
	if (!o.dry_run && store_lock(s, e) < 0)
		goto out;
	if ((all = store_list(s, &bad, e)) == NULL)
		goto out;
	warn_bad(bad);
	/* Oldest first: one goes if keep or more of its VM's are newer. */
	json_array_foreach(all, i, m) {
		newer = 0;
		for (j = i + 1; j < json_array_size(all); j++) {
			m2 = json_array_get(all, j);
			newer += same_vm(m, m2);
		}
		json_array_append_new(newer >= keep ? gone : kept,
		    json_string(json_str(m, "name")));
	}
	rc = delete_run(s, all, bad, gone, &o, &r, e);
	if (r != NULL) {
		json_object_set_new(r, "dry_run", json_boolean(o.dry_run));
		json_object_set(r, "kept", kept);
		print_deleted(r, o.dry_run);
	}
out:
	args_release(&a);
	json_decref(r);
	json_decref(kept);
	json_decref(gone);
	json_decref(all);
	json_decref(bad);
	store_close(s);
	return rc;
}
