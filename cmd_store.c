/*
 * cmd_store.c - the commands that work on the checkpoints of a store:
 * list, info and verify (of a checkpoint NAME, or of an image file, as
 * cmd_image.c does), delete and prune.  The work is store.c's and
 * storeops.c's; this file parses, calls them and prints.
 */
#include <sys/stat.h>

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "imgread.h"
#include "launch.h"
#include "manifest.h"
#include "qmp.h"
#include "relaunch.h"
#include "sig.h"
#include "snapctl.h"
#include "store.h"
#include "storeops.h"
#include "storepack.h"
#include "util.h"

enum {
	OPT_DISKS = 256, OPT_DRY_RUN, OPT_KEEP,
};

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

	char *n, *why;

	json_array_foreach(bad, i, b) {
		n = text_escape(json_str(b, "name"));
		why = text_escape(json_str(b, "error"));
		warnx_("skipped '%s': %s", n, why);
		free(n);
		free(why);
	}
}

/* ---- list ---------------------------------------------------------------- */

/*
 * The bytes of frames a checkpoint's image holds itself and those it reads
 * from other images (null without an image).  A manifest from before
 * version 2 images says neither: all its image is its own.
 */
static json_t *
own_bytes(const json_t *mem)
{
	const json_t *v = json_object_get(mem, MF_MEM_OWN);

	if (!json_is_object(mem))
		return json_null();
	if (!json_is_integer(v))
		v = json_object_get(mem, MF_MEM_BYTES);
	return json_is_integer(v) ? json_copy((json_t *)v) : json_null();
}

static json_t *
shared_bytes(const json_t *mem)
{
	const json_t *v = json_object_get(mem, MF_MEM_SHARED);

	if (!json_is_object(mem))
		return json_null();
	return json_is_integer(v) ? json_copy((json_t *)v) : json_integer(0);
}

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
	return json_pack("{s:s?, s:s?, s:s?, s:O?, s:s?, s:O?, s:o, s:o, "
	    "s:o}",
	    "name", json_str(m, "name"),
	    "created", json_str(m, "created"),
	    "parent", json_str(m, "parent"),
	    "vm", json_object_get(m, "vm"),
	    "mode", json_str(m, "mode"),
	    "memory_bytes", json_object_get(mem, "bytes_on_disk"),
	    "own_bytes", own_bytes(mem),
	    "shared_bytes", shared_bytes(mem),
	    "disks", disks);
}

static int
cmd_list(const struct cmd_args *a, struct err *e)
{
	struct store *s = NULL;
	json_t *all = NULL, *bad = NULL, *out = NULL, *m, *d;
	size_t i, j;
	int w = 4, wp = 6, rc = -1;
	char mem[32], own[32], shared[32];

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
	/* For a terminal: no control characters from the manifests. */
	out = json_text_escape(all);
	json_decref(all);
	all = out;
	out = NULL;
	json_array_foreach(all, i, m) {
		if ((int)strlen(json_str(m, "name")) > w)
			w = (int)strlen(json_str(m, "name"));
		if (json_str(m, "parent") != NULL &&
		    (int)strlen(json_str(m, "parent")) > wp)
			wp = (int)strlen(json_str(m, "parent"));
	}
	json_array_foreach(all, i, m) {
		const json_t *mj = json_object_get(m, "memory");
		const json_t *b = json_object_get(mj, "bytes_on_disk");
		json_t *ob = own_bytes(mj), *sb = shared_bytes(mj);

		if (json_is_integer(b))
			bytes_short((uint64_t)json_integer_value(b), mem);
		else
			snprintf(mem, sizeof(mem), "-");
		if (json_is_integer(ob))
			bytes_short((uint64_t)json_integer_value(ob), own);
		else
			snprintf(own, sizeof(own), "-");
		if (json_is_integer(sb))
			bytes_short((uint64_t)json_integer_value(sb), shared);
		else
			snprintf(shared, sizeof(shared), "-");
		json_decref(ob);
		json_decref(sb);
		printf("%-*s  %-20s  %-*s  %9s  %9s  %9s  ", w, json_str(m,
		    "name"), json_str(m, "created"), wp, json_str(m, "parent") ?
		    json_str(m, "parent") : "-", mem, own, shared);
		if (json_array_size(json_object_get(m, "disks")) == 0)
			fputs("-", stdout);
		json_array_foreach(json_object_get(m, "disks"), j, d)
			printf("%s%s", j ? "," : "", json_str(d, "device") ?
			    json_str(d, "device") : "?");
		fputc('\n', stdout);
	}
	rc = 0;
out:
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

/* A shell word: as is when it needs no quotes. */
static void
print_word(const char *s)
{
	const char *p;

	for (p = s; *p != '\0'; p++)
		if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		    "0123456789_./:=,+-@%", *p) == NULL)
			break;
	if (*p == '\0' && *s != '\0')
		fputs(s, stdout);
	else
		print_quoted(s);
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

/*
 * What the image shares (storepack.h): its own frames, the frames it
 * reads from other images, and which images those are.
 */
static void
info_sharing(const json_t *m)
{
	struct err le = ERR_INIT;
	struct img_reader *r;
	const json_t *p;
	json_t *sh;
	char *path, a[32], b[32];
	const char *file = json_str(json_object_get(m, MF_MEMORY),
	    MF_MEM_PATH);
	size_t i;

	if (file == NULL || *file == '.' || strchr(file, '/') != NULL)
		return;
	path = xasprintf("%s/%s/%s", options.dir, json_str(m, MF_NAME), file);
	r = img_open(path, &le);
	free(path);
	if (r == NULL) {
		path = text_escape(le.msg);
		printf("sharing:    unknown: %s\n", path);
		free(path);
		return;
	}
	sh = storepack_sharing(r);
	img_close(r);
	format_bytes((uint64_t)json_integer_value(json_object_get(sh,
	    "own_bytes")), a);
	format_bytes((uint64_t)json_integer_value(json_object_get(sh,
	    "shared_bytes")), b);
	printf("sharing:    %s of frames its own, %s shared (%lld chunks)%s\n",
	    a, b, (long long)json_integer_value(json_object_get(sh,
	    "shared_chunks")), json_array_size(json_object_get(sh, "packs")) ?
	    " from:" : "");
	json_array_foreach(json_object_get(sh, "packs"), i, p) {
		char *hint = text_escape(json_str(p, "hint"));

		format_bytes((uint64_t)json_integer_value(json_object_get(p,
		    "bytes")), a);
		printf("  pack %s (image %s): %lld chunks, %s\n", hint,
		    json_str(p, "id"), (long long)json_integer_value(
		    json_object_get(p, "chunks")), a);
		free(hint);
	}
	json_decref(sh);
}

/* m with its strings escaped; raw as read, for the -blockdev JSON (which
 * json_dumps() escapes itself). */
static void
info_text(const json_t *m, const json_t *raw)
{
	const json_t *vm = json_object_get(m, "vm");
	const json_t *mem = json_object_get(m, "memory");
	const json_t *t = json_object_get(m, "timings");
	const json_t *d, *v;
	const char *node, *file, *fmt, *machine;
	char a[32], b[32], c[32], **argv;
	size_t i, k;

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
		info_sharing(m);
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
	printf(", total %.1f s, %lld passes", json_number_value(
	    json_object_get(t, "total_s")), (long long)json_integer_value(
	    json_object_get(t, "passes")));
	if (json_object_get(t, "compaction_cpu_s") != NULL)
		printf(", CPU %.2f s compacting, %.2f s receiving",
		    json_number_value(json_object_get(t, "compaction_cpu_s")),
		    json_number_value(json_object_get(t, "receive_cpu_s")));
	printf("\n");
	json_array_foreach(json_object_get(m, "disks"), i, d) {
		printf("disk %s:\n", json_str(d, "device") ? json_str(d, "device") :
		    "?");
		printf("  state in: %s (%s, backing %s)\n",
		    json_str(d, "file") ? json_str(d, "file") : "?",
		    json_str(d, "format") ? json_str(d, "format") : "?",
		    json_str(d, "backing") ? json_str(d, "backing") : "none");
		if (json_str(d, "vm_path") != NULL)
			printf("  VM writes on at: %s (its own path)\n",
			    json_str(d, "vm_path"));
		else
			printf("  VM moved to: %s\n", json_str(d, "overlay") ?
			    json_str(d, "overlay") : "?");
	}

	machine = json_str(vm, "machine");
	/* A disk-only checkpoint boots; it has no instant to resume. */
	argv = json_is_object(mem) ? relaunch_argv(raw, json_str(raw, "name"),
	    NULL, NULL, NULL) : NULL;
	if (argv != NULL) {
		printf("\nTo restore it, once the VM is stopped, start QEMU as "
		    "recorded, on the checkpoint's disk state:\n ");
		for (k = 0; argv[k] != NULL; k++) {
			putchar(' ');
			print_word(argv[k]);
		}
		printf("\nthen: snapctl -s SOCKET -d STORE restore %s\n"
		    "or let snapctl start it beside the VM: snapctl -d STORE "
		    "restore %s --start\n", json_str(m, "name"),
		    json_str(m, "name"));
		relaunch_free(argv);
	} else if (json_is_object(mem)) {
		printf("\nNo record of how the VM was started (%s).\n",
		    json_str(json_object_get(m, MF_LAUNCH), "reason") ?
		    json_str(json_object_get(m, MF_LAUNCH), "reason") :
		    "checkpoint made before snapctl recorded it");
	}
	printf("\nTo start a QEMU of your own to restore into, give it:\n");
	json_array_foreach(json_object_get(raw, "disks"), i, d) {
		file = json_str(d, "file");
		if (file == NULL)
			continue;
		node = json_str(d, "node") ? json_str(d, "node") : json_str(d, "device");
		fmt = json_str(d, "format") ? json_str(d, "format") : "raw";
		if (node == NULL)
			continue;
		if (node[0] == '#' && json_str(d, "device") != NULL &&
		    json_str(d, "device")[0] != '\0') {
			/* A -drive VM: QEMU's own node names are not for
			 * the command line; the drive's id is. */
			char *f = qemu_opt_escape(file);
			char *w = xasprintf("if=none,id=%s,file=%s,format=%s",
			    json_str(d, "device"), f, fmt);

			fputs("  -drive ", stdout);
			print_word(w);
			fputs(" \\\n", stdout);
			free(w);
			free(f);
			continue;
		}
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
		if (node != NULL && node[0] == '#')
			node = json_str(d, "device");
		printf("%s%s on drive=%s", i ? ", " : " (disk ",
		    json_str(d, "device") ? json_str(d, "device") : "?",
		    node ? node : "?");
	}
	printf("%s.\n", json_array_size(json_object_get(m, "disks")) ?
	    ")" : "");
}

static int
cmd_info(const struct cmd_args *a, struct err *e)
{
	struct store *s = NULL;
	json_t *m = NULL;
	char *text;
	int rc = -1;

	if (resolve(a->argv[0], &s, &m, e) < 0)
		goto out;
	if (m == NULL) {
		rc = cmd_image_info(a->argv[0], e);
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
		json_t *esc = json_text_escape(m);

		info_text(esc, m);
		json_decref(esc);
	}
	rc = 0;
out:
	json_decref(m);
	store_close(s);
	return rc;
}

static void
print_verified(const json_t *r)
{
	printf("%s: ok\n", json_str(r, "name"));
}

static int
cmd_verify(const struct cmd_args *a, struct err *e)
{
	struct err le = ERR_INIT;
	struct store *s = NULL;
	json_t *m = NULL, *r = NULL;
	int rc = -1;

	/* e may be NULL; the failure's document needs the message. */
	if (resolve(a->argv[0], &s, &m, &le) < 0) {
		if (options.json) {
			r = json_pack("{s:s, s:b, s:n, s:[], s:s}", "name",
			    a->argv[0], "ok", 0, "memory", "disks", "error",
			    le.msg);
			print_json(r);
		}
		goto out;
	}
	if (m == NULL) {
		rc = cmd_image_verify(a->argv[0], &le);
		goto out;
	}
	rc = storeops_verify(s, a->argv[0], m, &r, &le);
	if (r != NULL && (rc == 0 || options.json))
		print_result(r, print_verified);
out:
	err_propagate(e, &le, NULL);
	json_decref(r);
	json_decref(m);
	store_close(s);
	return rc;
}

/* ---- delete and prune ----------------------------------------------------- */

static void print_deleted(const json_t *r);

/* A merge's progress on a terminal, at most every 200 ms. */
static void
merge_progress(void *opaque, const char *from, const char *into,
    uint64_t done, uint64_t total)
{
	uint64_t *last = opaque, now = now_mono_ms();
	int pct = total ? (int)(done * 100 / total) : 0;

	if (done < total && *last != 0 && now - *last < 200)
		return;
	*last = now;
	fprintf(stderr, "\rmerging '%s' into '%s': %3d%%%s", from, into, pct,
	    done >= total && total > 0 ? "\n" : "");
	fflush(stderr);
}

/*
 * "removed 'F'" or "kept 'F': REASON; REASON" for each entry of a
 * diskgc_run() report; a restore overlay says whose it is.
 */
void
print_files(const json_t *files, int dry_run)
{
	const json_t *d, *why;
	const char *ck;
	size_t i, j;

	json_array_foreach(files, i, d) {
		ck = json_str(d, "checkpoint");
		if (json_is_true(json_object_get(d, "removed")))
			printf("%s '%s'", dry_run ? "would remove" : "removed",
			    json_str(d, "file"));
		else
			printf("%s '%s'", dry_run ? "would keep" : "kept",
			    json_str(d, "file"));
		if (ck != NULL)
			printf(" (restore overlay of checkpoint '%s')", ck);
		if (json_is_true(json_object_get(d, "removed"))) {
			fputc('\n', stdout);
			continue;
		}
		fputs(": ", stdout);
		json_array_foreach(json_object_get(d, "reasons"), j, why)
			printf("%s%s", j ? "; " : "", json_string_value(why));
		fputc('\n', stdout);
	}
}

/*
 * With --disks and -s, how storeops_delete() reaches the VM; a merge a
 * killed run left is finished first; then delete gone, print what was done
 * (also after a failure midway).
 */
static int
delete_and_print(struct store *s, const json_t *all, const json_t *bad,
    const json_t *gone, struct storeops_delete_opts *o, json_t *extra,
    struct err *e)
{
	struct qmp_config cfg;
	json_t *r = NULL;
	uint64_t last = 0;
	int rc;

	if (o->disks && options.socket != NULL) {
		if (cmd_qmp_config(&cfg, e) < 0)
			return -1;
		o->socket = options.socket;
		o->qmp = &cfg;
	}
	if (o->disks && options.verbosity >= 0 && isatty(STDERR_FILENO)) {
		o->progress = merge_progress;
		o->opaque = &last;
	}
	sig_catch();
	/* storeops_delete() finishes what a killed run left first. */
	rc = storeops_delete(s, all, bad, gone, o, &r, e);
	sig_release();
	if (rc == 0 && o->unseen > 0)
		warnx_("%d processes could not be looked at: files they hold "
		    "open were not seen", o->unseen);
	if (json_str(json_object_get(r, "packs"), "skipped") != NULL)
		warnx_("no pack freed: %s", json_str(json_object_get(r,
		    "packs"), "skipped"));
	if (r != NULL) {
		if (extra != NULL)
			json_object_update(r, extra);
		print_done(r, print_deleted);
	}
	json_decref(r);
	return rc;
}

/* The disk report's entry for file, or NULL. */
static const json_t *
disk_entry(const json_t *r, const char *file)
{
	const json_t *d;
	size_t i;

	json_array_foreach(json_object_get(r, "disks"), i, d)
		if (file != NULL && json_str(d, "file") != NULL &&
		    strcmp(json_str(d, "file"), file) == 0)
			return d;
	return NULL;
}

/* 1 if reason says what one of d's reasons says already. */
static int
said(const json_t *d, const char *reason)
{
	static const char bk[] = "the backing file of ";
	const json_t *why;
	size_t j;

	json_array_foreach(json_object_get(d, "reasons"), j, why) {
		if (strcmp(json_string_value(why), reason) == 0)
			return 1;
		if (strncmp(reason, bk, sizeof(bk) - 1) == 0 &&
		    strncmp(json_string_value(why), bk, sizeof(bk) - 1) == 0)
			return 1;
	}
	return 0;
}

/* On d's "kept" line, why a merge left its file alone (once). */
static void
print_unmerged_why(const json_t *r, const json_t *d)
{
	const json_t *m;
	size_t i;

	json_array_foreach(json_object_get(r, "merged"), i, m) {
		if (json_is_true(json_object_get(m, "merged")) ||
		    json_str(m, "file") == NULL ||
		    strcmp(json_str(m, "file"), json_str(d, "file")) != 0 ||
		    said(d, json_str(m, "reason")))
			continue;
		printf("%s%s", json_array_size(json_object_get(d,
		    "reasons")) ? "; " : "", json_str(m, "reason"));
	}
}

static void
print_merged(const json_t *r, int dry_run)
{
	const json_t *m;
	char b[32];
	size_t i;

	json_array_foreach(json_object_get(r, "merged"), i, m) {
		if (!json_is_true(json_object_get(m, "merged"))) {
			/* Said on the file's "kept" line, if it has one. */
			if (disk_entry(r, json_str(m, "file")) != NULL)
				continue;
			printf("kept '%s' of checkpoint '%s' (%s) unmerged: "
			    "%s\n", json_str(m, "file"), json_str(m,
			    "checkpoint"), json_str(m, "device"), json_str(m,
			    "reason"));
			continue;
		}
		format_bytes((uint64_t)json_integer_value(json_object_get(m,
		    "bytes")), b);
		printf("%s '%s' into '%s' (%s, %s, %s, %.1f s)\n",
		    dry_run ? "would merge" : "merged", json_str(m, "from"),
		    json_str(m, "into"), json_str(m, "how"),
		    json_is_true(json_object_get(m, "live")) ? "live" :
		    "offline", b, json_real_value(json_object_get(m,
		    "seconds")));
	}
}

static void
print_deleted(const json_t *r)
{
	const json_t *v, *d, *why;
	int dry_run = json_is_true(json_object_get(r, "dry_run"));
	size_t i, j;

	json_array_foreach(json_object_get(r, "deleted"), i, v)
		printf("%s checkpoint '%s'\n", dry_run ? "would delete" :
		    "deleted", json_string_value(v));
	print_merged(r, dry_run);
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
		print_unmerged_why(r, d);
		fputc('\n', stdout);
	}
	print_files(json_object_get(r, "restores"), dry_run);
	json_array_foreach(json_object_get(json_object_get(r, "packs"),
	    "removed"), i, v)
		printf("removed pack '%s'\n", json_string_value(v));
}

static int
cmd_delete(const struct cmd_args *a, struct err *e)
{
	struct storeops_delete_opts o = STOREOPS_DELETE_OPTS_INIT;
	struct store *s = NULL;
	json_t *all = NULL, *bad = NULL, *gone = NULL;
	int rc = -1;

	o.disks = a->nopts > 0;		/* --disks, the only one */
	if ((s = open_store(e)) == NULL || store_lock(s, options.lock_wait_ms, e) < 0)
		goto out;
	if ((all = store_list(s, &bad, e)) == NULL)
		goto out;
	/* Every name first: an unknown one deletes nothing. */
	if (storeops_delete_select(s, all, bad, a->argv, a->argc, &gone,
	    e) < 0)
		goto out;
	rc = delete_and_print(s, all, bad, gone, &o, NULL, e);
out:
	json_decref(gone);
	json_decref(all);
	json_decref(bad);
	store_close(s);
	return rc;
}

static int
cmd_prune(const struct cmd_args *a, struct err *e)
{
	struct storeops_delete_opts o = STOREOPS_DELETE_OPTS_INIT;
	struct store *s = NULL;
	json_t *all = NULL, *bad = NULL, *gone = NULL, *kept = NULL;
	json_t *extra = NULL;
	uint64_t keep = 0;
	int i, have_keep = 0, rc = -1;

	for (i = 0; i < a->nopts; i++) {
		switch (a->opts[i].id) {
		case OPT_KEEP:
			if (opt_u64("--keep", a->opts[i].arg, 0, 1000000,
			    &keep, e) < 0)
				goto out;
			have_keep = 1;
			break;
		case OPT_DRY_RUN:
			o.dry_run = 1;
			break;
		case OPT_DISKS:
			o.disks = 1;
			break;
		}
	}
	if (!have_keep) {
		err_set(e, ERR_USAGE, "prune: --keep N is required");
		goto out;
	}
	if ((s = open_store(e)) == NULL)
		goto out;
	if (!o.dry_run && store_lock(s, options.lock_wait_ms, e) < 0)
		goto out;
	if ((all = store_list(s, &bad, e)) == NULL)
		goto out;
	warn_bad(bad);
	storeops_prune_select(all, keep, &gone, &kept);
	extra = json_pack("{s:b, s:O}", "dry_run", o.dry_run, "kept", kept);
	rc = delete_and_print(s, all, bad, gone, &o, extra, e);
out:
	json_decref(extra);
	json_decref(kept);
	json_decref(gone);
	json_decref(all);
	json_decref(bad);
	store_close(s);
	return rc;
}

static const struct option delete_opts[] = {
	{ "disks", no_argument, NULL, OPT_DISKS },
	{ NULL, 0, NULL, 0 },
};

static const struct option prune_opts[] = {
	{ "keep", required_argument, NULL, OPT_KEEP },
	{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
	{ "disks", no_argument, NULL, OPT_DISKS },
	{ NULL, 0, NULL, 0 },
};

#define STORE_CMD (CMD_JSON | CMD_OPTS_ANYWHERE)

const struct cmd_entry cmd_verify_entry = {
	"verify", "NAME|IMAGE",
	"check a checkpoint (memory image, disk files) or an image",
	"NAME is checkpoint STORE/NAME: every checksum of its memory\n"
	"image, and each disk file present, of the recorded format and\n"
	"backing, unchanged in size and mtime (else exit 4).  An argument\n"
	"with a '/', or one that is no checkpoint of the store (-d), is\n"
	"an image file: every checksum and structure of it.",
	"", NULL, 1, 1, STORE_CMD | CMD_CKPT_ARGS, cmd_verify,
};

const struct cmd_entry cmd_info_entry = {
	"info", "NAME|IMAGE",
	"show a checkpoint and how to restore it, or an image",
	"NAME is checkpoint STORE/NAME: its manifest, readably, what its\n"
	"memory image shares (own and shared frame bytes, the images it\n"
	"reads from), and the QEMU options to start a restore target\n"
	"(--json: the manifest as written).  An argument with a '/', or\n"
	"one that is no checkpoint of the store (-d), is an image file:\n"
	"machine type, RAM blocks, pages and sizes; for format 2 its id,\n"
	"own and shared bytes and the images it reads frames from.",
	"", NULL, 1, 1, STORE_CMD | CMD_CKPT_ARGS, cmd_info,
};

const struct cmd_entry cmd_list_entry = {
	"list", "",
	"list the checkpoints of the store, oldest first",
	"One line each: name, created, parent, memory image size, OWN and\n"
	"SHARED (frame bytes in the image itself, and read from the images\n"
	"of other checkpoints), disks.  --json: [{name, created, parent,\n"
	"vm, mode, memory_bytes, own_bytes, shared_bytes,\n"
	"disks: [DEVICE...]}].  Unreadable manifests are skipped with a\n"
	"warning.",
	"", NULL, 0, 0, CMD_NEEDS_STORE | STORE_CMD, cmd_list,
};

const struct cmd_entry cmd_delete_entry = {
	"delete", "[--disks] NAME...",
	"delete checkpoints, and with --disks merge and free their disks",
	"  --disks   merge the deleted checkpoints' disk layers into\n"
	"            their neighbours (live with -s: block-stream or\n"
	"            block-commit; else qemu-img), so the chain stays\n"
	"            kept+1 deep:  P -> P.c2 (c2) -> P.c1 (c1)\n"
	"            becomes  P -> P.c2 (c2)  when c1 goes (P: the\n"
	"            VM's own path, always its current disk); then\n"
	"            remove disk files snapctl made that nothing\n"
	"            needs any more:\n"
	"            not the disk of a remaining checkpoint, not\n"
	"            backing a file that stays, not open by any\n"
	"            process, not used by the VM at -s.  A killed merge\n"
	"            is finished by recover or the next --disks run\n"
	"Takes the store's lock (exit 5 when busy).  Every removed and\n"
	"kept disk file is reported with the reason.  Then, with or\n"
	"without --disks, the restore overlays no process holds go\n"
	"('snapctl help sweep'); those of the deleted checkpoints that\n"
	"stay are reported with the reason.  A memory image other images\n"
	"read frames from is kept as STORE/.packs/ID.img; the images and\n"
	"frames no remaining image names are then freed.",
	"", delete_opts, 1, -1, CMD_NEEDS_STORE | STORE_CMD | CMD_CKPT_ARGS,
	cmd_delete,
};

const struct cmd_entry cmd_prune_entry = {
	"prune", "--keep N [--dry-run] [--disks]",
	"delete all but the newest N checkpoints of each VM",
	"  --keep N    checkpoints to keep per VM (0 deletes them all)\n"
	"  --dry-run   say what would be deleted, change nothing\n"
	"  --disks     as for delete\n"
	"A VM is the uuid and name its manifests record; newest is by\n"
	"created, then name.  Sweeps restore overlays and frees memory\n"
	"images no remaining image names as delete does.",
	"", prune_opts, 0, 0, CMD_NEEDS_STORE | STORE_CMD, cmd_prune,
};
