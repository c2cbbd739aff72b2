/*
 * shell.c - "snapctl shell": a QMP shell.  On a terminal it runs GNU
 * readline's callback interface beside the QMP socket, so events show up
 * while the user types; history, and completion of commands and of their
 * arguments from query-qmp-schema.  Otherwise it reads one command per line.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <readline/readline.h>
#include <readline/history.h>

#include <jansson.h>

#include "qmp.h"
#include "snapctl.h"
#include "util.h"

#define HISTORY_FILE ".snapctl_history"
#define HISTORY_MAX 1000

struct shell {
	struct qmp *q;
	int interactive;
	int done;
	int ncmds;
	int nfailed;
	struct err fatal;	/* the connection is gone */
	json_t *commands;	/* names from query-commands, sorted */
	json_t *schema;		/* query-qmp-schema: name -> SchemaInfo */
	int schema_failed;
	char *history;		/* file, or NULL */
};

/* An argument of a command, from the schema. */
struct arg {
	const char *name;	/* borrowed from the schema */
	char *type;		/* "str", "enum: a|b", "[int]" */
	const json_t *values;	/* enum values or NULL (borrowed) */
	int is_bool;
	int optional;
	int deprecated;
};

struct args {
	struct arg *v;
	size_t n;
	char *variants;		/* "'driver': file, qcow2, ..." or NULL */
};

/* Not "quit": that is QMP's, which ends QEMU. */
static const char *const builtins[] = { "help", "exit" };

/* Readline's callbacks reach the shell through these. */
static struct shell *current;
static volatile sig_atomic_t got_sigint;

/* ---- the schema ------------------------------------------------------ */

static const json_t *
schema_get(const struct shell *sh, const char *name)
{
	return name != NULL ? json_object_get(sh->schema, name) : NULL;
}

static int
load_schema(struct shell *sh, struct err *e)
{
	json_t *list;
	json_t *info;
	size_t i;

	if (sh->schema != NULL)
		return 0;
	if (sh->schema_failed)
		return err_set(e, ERR_FAIL, "no schema from QEMU");
	list = qmp_execute(sh->q, "query-qmp-schema", NULL, e);
	if (list == NULL || !json_is_array(list)) {
		sh->schema_failed = 1;
		if (list != NULL)
			err_set(e, ERR_QEMU, "unexpected reply to "
			    "'query-qmp-schema'");
		json_decref(list);
		return -1;
	}
	sh->schema = json_object();
	json_array_foreach(list, i, info) {
		const char *name = json_string_value(json_object_get(info,
		    "name"));

		if (name != NULL)
			json_object_set(sh->schema, name, info);
	}
	json_decref(list);
	return 0;
}

static int
cmp_json_str(const void *a, const void *b)
{
	return strcmp(json_string_value(*(json_t *const *)a),
	    json_string_value(*(json_t *const *)b));
}

static int
load_commands(struct shell *sh, struct err *e)
{
	json_t *list, *c, **v = NULL;
	const char *name;
	size_t i, n = 0;

	if (sh->commands != NULL)
		return 0;
	list = qmp_execute(sh->q, "query-commands", NULL, e);
	if (list == NULL)
		return -1;
	if (!json_is_array(list)) {
		json_decref(list);
		return err_set(e, ERR_QEMU, "unexpected reply to "
		    "'query-commands'");
	}
	v = xcalloc(json_array_size(list) + 1, sizeof(*v));
	json_array_foreach(list, i, c) {
		name = json_string_value(json_object_get(c, "name"));
		if (name != NULL)
			v[n++] = json_string(name);
	}
	qsort(v, n, sizeof(*v), cmp_json_str);
	sh->commands = json_array();
	for (i = 0; i < n; i++)
		json_array_append_new(sh->commands, v[i]);
	free(v);
	json_decref(list);
	return 0;
}

static int
has_deprecated(const json_t *info)
{
	const json_t *f;
	size_t i;

	json_array_foreach(json_object_get(info, "features"), i, f)
		if (json_is_string(f) &&
		    strcmp(json_string_value(f), "deprecated") == 0)
			return 1;
	return 0;
}

static const json_t *
enum_values(const json_t *info)
{
	return json_object_get(info, "values");
}

/* A short description of a schema type; limit caps enum value lists. */
static void
describe_type(const struct shell *sh, const char *name, int depth,
    size_t limit, struct buf *b)
{
	const json_t *info = schema_get(sh, name), *v, *m;
	const char *meta;
	size_t i, n;

	meta = json_string_value(json_object_get(info, "meta-type"));
	if (info == NULL || meta == NULL || depth > 3) {
		buf_addstr(b, name != NULL ? name : "?");
		return;
	}
	if (strcmp(meta, "builtin") == 0) {
		buf_addstr(b, name);
	} else if (strcmp(meta, "enum") == 0) {
		buf_addstr(b, "enum ");
		v = enum_values(info);
		n = json_array_size(v);
		for (i = 0; i < n && (limit == 0 || i < limit); i++)
			buf_addf(b, "%s%s", i ? "|" : "",
			    json_string_value(json_array_get(v, i)));
		if (i < n)
			buf_addf(b, "|... (%zu)", n);
	} else if (strcmp(meta, "array") == 0) {
		buf_addc(b, '[');
		describe_type(sh, json_string_value(json_object_get(info,
		    "element-type")), depth + 1, limit, b);
		buf_addc(b, ']');
	} else if (strcmp(meta, "alternate") == 0) {
		json_array_foreach(json_object_get(info, "members"), i, m) {
			if (i > 0)
				buf_addc(b, '|');
			describe_type(sh, json_string_value(json_object_get(m,
			    "type")), depth + 1, limit, b);
		}
	} else if (strcmp(meta, "object") == 0 &&
	    json_array_size(json_object_get(info, "members")) == 0 &&
	    json_object_get(info, "variants") == NULL) {
		buf_addstr(b, "{}");
	} else {
		buf_addstr(b, meta);	/* "object" */
	}
}

static void
args_release(struct args *a)
{
	size_t i;

	for (i = 0; i < a->n; i++)
		free(a->v[i].type);
	free(a->v);
	free(a->variants);
	memset(a, 0, sizeof(*a));
}

static int
args_has(const struct args *a, const char *name)
{
	size_t i;

	for (i = 0; i < a->n; i++)
		if (strcmp(a->v[i].name, name) == 0)
			return 1;
	return 0;
}

/*
 * The members of object type tname; with variants, those of every variant
 * too (optional, as they depend on the tag).
 */
static void
collect_members(const struct shell *sh, const char *tname, int variants,
    int in_variant, size_t limit, struct args *a)
{
	const json_t *info = schema_get(sh, tname), *m, *tinfo;
	const char *mname, *mtype;
	struct buf b = BUF_INIT;
	struct arg *arg;
	size_t i;

	if (!json_is_object(info))
		return;
	json_array_foreach(json_object_get(info, "members"), i, m) {
		mname = json_string_value(json_object_get(m, "name"));
		mtype = json_string_value(json_object_get(m, "type"));
		if (mname == NULL || args_has(a, mname))
			continue;
		a->v = xreallocarray(a->v, a->n + 1, sizeof(*a->v));
		arg = &a->v[a->n++];
		memset(arg, 0, sizeof(*arg));
		arg->name = mname;
		buf_reset(&b);
		describe_type(sh, mtype, 0, limit, &b);
		arg->type = xstrdup(b.data != NULL ? (char *)b.data : "?");
		tinfo = schema_get(sh, mtype);
		if (enum_values(tinfo) != NULL)
			arg->values = enum_values(tinfo);
		arg->is_bool = mtype != NULL && strcmp(mtype, "bool") == 0;
		arg->optional = in_variant ||
		    json_object_get(m, "default") != NULL;
		arg->deprecated = has_deprecated(m);
	}
	buf_release(&b);
	if (!json_is_array(json_object_get(info, "variants")))
		return;
	if (variants) {
		json_array_foreach(json_object_get(info, "variants"), i, m)
			collect_members(sh, json_string_value(
			    json_object_get(m, "type")), 1, 1, limit, a);
	} else if (a->variants == NULL) {
		buf_addf(&b, "'%s':", json_string_value(json_object_get(info,
		    "tag")));
		json_array_foreach(json_object_get(info, "variants"), i, m)
			buf_addf(&b, " %s", json_string_value(
			    json_object_get(m, "case")));
		a->variants = xstrdup((char *)b.data);
		buf_release(&b);
	}
}

/* The arguments of command cmd: 0, or -1 if the schema does not know it. */
static int
command_args(struct shell *sh, const char *cmd, int variants, size_t limit,
    struct args *a)
{
	const json_t *info;
	const char *meta;

	memset(a, 0, sizeof(*a));
	if (load_schema(sh, NULL) < 0)
		return -1;
	info = schema_get(sh, cmd);
	meta = json_string_value(json_object_get(info, "meta-type"));
	if (meta == NULL || strcmp(meta, "command") != 0)
		return -1;
	collect_members(sh, json_string_value(json_object_get(info,
	    "arg-type")), variants, 0, limit, a);
	return 0;
}

/* ---- output ------------------------------------------------------------ */

static void
report(const struct err *e)
{
	print_error(e);
}

static void
format_event(const struct qmp_event *ev, struct buf *b)
{
	char when[32], *data = NULL;
	json_t *j;
	double secs = floor(ev->timestamp);
	time_t t = (time_t)secs;
	struct tm tm;

	if (options.json) {
		j = json_pack("{s:s, s:{s:I, s:I}}", "event", ev->name,
		    "timestamp", "seconds", (json_int_t)secs, "microseconds",
		    (json_int_t)((ev->timestamp - secs) * 1e6));
		if (ev->data != NULL)
			json_object_set(j, "data", ev->data);
		data = json_dumps(j, JSON_COMPACT);
		buf_addf(b, "%s\n", data);
		json_decref(j);
		free(data);
		return;
	}
	if (localtime_r(&t, &tm) == NULL ||
	    strftime(when, sizeof(when), "%H:%M:%S", &tm) == 0)
		snprintf(when, sizeof(when), "?");
	buf_addf(b, "[%s.%03d] %s", when,
	    (int)((ev->timestamp - secs) * 1000), ev->name);
	if (ev->data != NULL &&
	    (data = json_dumps(ev->data, JSON_COMPACT | JSON_ENCODE_ANY))) {
		buf_addf(b, " %s", data);
		free(data);
	}
	buf_addc(b, '\n');
}

/*
 * Print the queued events: in a terminal on stdout (around the line being
 * edited when async), otherwise on stderr with -v only.
 */
static void
print_events(struct shell *sh, int async)
{
	struct qmp_event *ev;
	struct buf b = BUF_INIT;
	char *saved = NULL;
	int point = 0;

	while ((ev = qmp_pop_event(sh->q)) != NULL) {
		format_event(ev, &b);
		qmp_event_free(ev);
	}
	if (b.len == 0)
		return;
	if (!sh->interactive) {
		if (options.verbosity >= 1)
			fputs((char *)b.data, stderr);
		buf_release(&b);
		return;
	}
	if (async) {
		point = rl_point;
		saved = rl_copy_text(0, rl_end);
		rl_save_prompt();
		rl_replace_line("", 0);
		rl_redisplay();
	}
	fputs((char *)b.data, stdout);
	fflush(stdout);
	if (async) {
		rl_restore_prompt();
		rl_replace_line(saved, 0);
		rl_point = point;
		rl_redisplay();
		free(saved);
	}
	buf_release(&b);
}

/* Words in columns, as ls does. */
static void
print_columns(FILE *f, char **words, size_t n)
{
	size_t i, r, w = 0, cols, rows;
	int sw = 80, sh_rows;

	if (current != NULL && current->interactive)
		rl_get_screen_size(&sh_rows, &sw);
	for (i = 0; i < n; i++)
		if (strlen(words[i]) > w)
			w = strlen(words[i]);
	w += 2;
	cols = sw > 0 && (size_t)sw > w ? (size_t)sw / w : 1;
	rows = (n + cols - 1) / cols;
	for (r = 0; r < rows; r++) {
		for (i = r; i < n; i += rows)
			fprintf(f, "%-*s", i + rows < n ? (int)w : 0,
			    words[i]);
		fputc('\n', f);
	}
}

/* ---- help -------------------------------------------------------------- */

static int
help_list(struct shell *sh, struct err *e)
{
	char **words;
	size_t i, n;

	if (load_commands(sh, e) < 0)
		return -1;
	n = json_array_size(sh->commands);
	words = xcalloc(n + 1, sizeof(*words));
	for (i = 0; i < n; i++)
		words[i] = (char *)json_string_value(json_array_get(
		    sh->commands, i));
	printf("Shell: help [COMMAND], exit (or Ctrl-D).  Input: "
	    "COMMAND [KEY=VALUE...] or raw JSON.\nQMP commands (quit is "
	    "QEMU's: it ends the VM):\n");
	print_columns(stdout, words, n);
	free(words);
	return 0;
}

static int
help_command(struct shell *sh, const char *cmd, struct err *e)
{
	struct args a;
	size_t i, w = 0;
	const char *ret;

	if (strcmp(cmd, "help") == 0 || strcmp(cmd, "exit") == 0) {
		printf("%s: a shell command\n", cmd);
		return 0;
	}
	if (load_schema(sh, e) < 0)
		return -1;
	if (command_args(sh, cmd, 0, 0, &a) < 0)
		return err_set(e, ERR_FAIL, "unknown command '%s'", cmd);
	printf("%s\n", cmd);
	if (a.n == 0)
		printf("  (no arguments)\n");
	for (i = 0; i < a.n; i++)
		if (strlen(a.v[i].name) > w)
			w = strlen(a.v[i].name);
	for (i = 0; i < a.n; i++)
		printf("  %-*s  %s%s%s\n", (int)w, a.v[i].name, a.v[i].type,
		    a.v[i].optional ? "  (optional)" : "",
		    a.v[i].deprecated ? "  (deprecated)" : "");
	if (a.variants != NULL)
		printf("  and the members of the variant chosen by %s\n",
		    a.variants);
	ret = json_string_value(json_object_get(schema_get(sh, cmd),
	    "ret-type"));
	if (ret != NULL) {
		struct buf b = BUF_INIT;

		describe_type(sh, ret, 0, 8, &b);
		printf("returns: %s\n", (char *)b.data);
		buf_release(&b);
	}
	args_release(&a);
	return 0;
}

/* ---- reading a line ---------------------------------------------------- */

static void
free_words(char **w, int n)
{
	int i;

	for (i = 0; i < n; i++)
		free(w[i]);
	free(w);
}

/*
 * Copy the JSON value starting at *pp (on '{' or '[') as typed, and move
 * *pp past it: jansson reads one value and says where it ended.
 */
static int
copy_json(const char **pp, struct buf *b, struct err *e)
{
	json_error_t jerr;
	json_t *v;

	v = json_loads(*pp, JSON_DISABLE_EOF_CHECK, &jerr);
	if (v == NULL) {
		if (jerr.position >= (int)strlen(*pp))
			return err_set(e, ERR_USAGE, "unbalanced '%c' in JSON "
			    "value", **pp);
		return err_set(e, ERR_USAGE, "invalid JSON value: %s (column "
		    "%d)", jerr.text, jerr.column);
	}
	json_decref(v);
	buf_add(b, *pp, (size_t)jerr.position);
	*pp += jerr.position;
	return 0;
}

/*
 * Split a line into words as sh does ('...', "...", backslash), except
 * that a word or a value (after the first '=') that starts with '{' or
 * '[' runs to its matching bracket, quotes kept: JSON needs no quoting.
 */
static int
split_words(const char *line, char ***out, int *nout, struct err *e)
{
	struct buf b = BUF_INIT;
	const char *p = line;
	char **w = NULL, q;
	int n = 0, inword, has_eq;

	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
			p++;
		if (*p == '\0')
			break;
		buf_reset(&b);
		buf_addstr(&b, "");
		inword = 1;
		has_eq = 0;
		while (inword && *p != '\0') {
			if ((b.len == 0 || (has_eq == 1 &&
			    b.data[b.len - 1] == '=')) &&
			    (*p == '{' || *p == '[')) {
				if (copy_json(&p, &b, e) < 0)
					goto fail;
				continue;
			}
			switch (*p) {
			case ' ': case '\t': case '\n': case '\r':
				inword = 0;
				break;
			case '\'':
			case '"':
				q = *p++;
				while (*p != '\0' && *p != q) {
					if (q == '"' && *p == '\\' &&
					    (p[1] == '"' || p[1] == '\\'))
						p++;
					buf_addc(&b, (uint8_t)*p++);
				}
				if (*p != q) {
					err_set(e, ERR_USAGE, "unterminated "
					    "%c", q);
					goto fail;
				}
				p++;
				break;
			case '\\':
				if (p[1] != '\0')
					p++;
				buf_addc(&b, (uint8_t)*p++);
				break;
			case '=':
				has_eq++;
				buf_addc(&b, (uint8_t)*p++);
				break;
			default:
				buf_addc(&b, (uint8_t)*p++);
			}
		}
		w = xreallocarray(w, (size_t)n + 1, sizeof(*w));
		w[n++] = xstrdup((char *)b.data);
	}
	buf_release(&b);
	*out = w;
	*nout = n;
	return 0;
fail:
	buf_release(&b);
	free_words(w, n);
	return -1;
}

/*
 * {"execute": CMD, "arguments": {...}} typed as is.  An "id" is accepted
 * and ignored: the client numbers its commands itself.
 */
static json_t *
run_raw(struct shell *sh, const char *line, struct err *e)
{
	json_error_t jerr;
	json_t *req, *args;
	const char *key, *cmd;
	json_t *v;

	req = json_loads(line, 0, &jerr);
	if (req == NULL) {
		err_set(e, ERR_USAGE, "invalid JSON: %s (column %d)",
		    jerr.text, jerr.column);
		return NULL;
	}
	json_object_foreach(req, key, v) {
		if (strcmp(key, "execute") != 0 &&
		    strcmp(key, "arguments") != 0 && strcmp(key, "id") != 0) {
			err_set(e, ERR_USAGE, "unexpected member '%s' (only "
			    "'execute' and 'arguments')", key);
			json_decref(req);
			return NULL;
		}
	}
	cmd = json_string_value(json_object_get(req, "execute"));
	args = json_object_get(req, "arguments");
	if (cmd == NULL || (args != NULL && !json_is_object(args))) {
		err_set(e, ERR_USAGE, "expected {\"execute\": COMMAND, "
		    "\"arguments\": {...}}");
		json_decref(req);
		return NULL;
	}
	v = qmp_execute(sh->q, cmd, json_incref(args), e);
	json_decref(req);
	return v;
}

/* Run one line; 0, or -1 with e filled (then the line failed). */
static int
run_line(struct shell *sh, const char *line, struct err *e)
{
	json_t *args = NULL, *ret = NULL;
	char **w = NULL;
	int n = 0, rc = -1;

	while (isspace((unsigned char)*line))
		line++;
	if (*line == '\0' || *line == '#')
		return 0;
	sh->ncmds++;
	if (*line == '{') {
		ret = run_raw(sh, line, e);
		goto result;
	}
	if (split_words(line, &w, &n, e) < 0)
		goto out;
	if (strcmp(w[0], "exit") == 0) {
		sh->ncmds--;
		sh->done = 1;
		rc = 0;
		goto out;
	}
	if (strcmp(w[0], "help") == 0) {
		if (n > 2)
			err_set(e, ERR_USAGE, "usage: help [COMMAND]");
		else
			rc = n == 2 ? help_command(sh, w[1], e) :
			    help_list(sh, e);
		goto out;
	}
	if (cmd_qmp_args(n - 1, w + 1, &args, e) < 0)
		goto out;
	ret = qmp_execute(sh->q, w[0], args, e);
result:
	if (ret == NULL)
		goto out;
	print_events(sh, 0);	/* they came first */
	print_json(ret);
	rc = 0;
out:
	fflush(stdout);
	json_decref(ret);
	free_words(w, n);
	return rc;
}

/* Run a line and account for it: print its error, notice a lost link. */
static void
shell_line(struct shell *sh, const char *line)
{
	struct err e = ERR_INIT;
	int rc;

	got_sigint = 0;
	rc = run_line(sh, line, &e);
	got_sigint = 0;
	print_events(sh, 0);
	if (rc == 0)
		return;
	if (options.json)
		print_error_json(&e);
	if (!qmp_usable(sh->q)) {
		sh->fatal = e;
		sh->done = 1;
		return;
	}
	sh->nfailed++;
	report(&e);
}

/* ---- the terminal ------------------------------------------------------ */

/* Completion candidates; readline's generator walks them. */
static struct {
	char **words;
	char **types;
	size_t n;
	size_t next;
} cand;

static void
cand_reset(void)
{
	size_t i;

	for (i = 0; i < cand.n; i++) {
		free(cand.words[i]);
		free(cand.types[i]);
	}
	free(cand.words);
	free(cand.types);
	memset(&cand, 0, sizeof(cand));
}

static void
cand_add(const char *word, const char *type)
{
	cand.words = xreallocarray(cand.words, cand.n + 1,
	    sizeof(*cand.words));
	cand.types = xreallocarray(cand.types, cand.n + 1,
	    sizeof(*cand.types));
	cand.words[cand.n] = xstrdup(word);
	cand.types[cand.n] = type != NULL ? xstrdup(type) : NULL;
	cand.n++;
}

static char *
cand_next(const char *text, int state)
{
	size_t len = strlen(text);

	if (state == 0)
		cand.next = 0;
	while (cand.next < cand.n) {
		const char *w = cand.words[cand.next++];

		if (strncmp(w, text, len) == 0)
			return xstrdup(w);
	}
	return NULL;
}

/* Show "name=  type" for argument candidates, in columns. */
static void
display_args(char **matches, int num, int max)
{
	char **items;
	size_t i, j;
	int k;

	items = xcalloc((size_t)num + 1, sizeof(*items));
	for (k = 1; k <= num; k++) {
		const char *type = NULL;

		for (j = 0; j < cand.n; j++)
			if (strcmp(cand.words[j], matches[k]) == 0)
				type = cand.types[j];
		items[k - 1] = xasprintf("%s %s", matches[k],
		    type ? type : "");
	}
	fputc('\n', rl_outstream);
	print_columns(rl_outstream, items, (size_t)num);
	for (i = 0; i < (size_t)num; i++)
		free(items[i]);
	free(items);
	rl_forced_update_display();
}

static void
add_commands(struct shell *sh)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(builtins); i++)
		cand_add(builtins[i], NULL);
	if (load_commands(sh, NULL) < 0)
		return;
	for (i = 0; i < json_array_size(sh->commands); i++)
		cand_add(json_string_value(json_array_get(sh->commands, i)),
		    NULL);
}

/* Is "name=..." already one of the line's words (other than the one being
 * completed, at start)? */
static int
line_has_arg(char **w, int n, const char *name, const char *text)
{
	size_t len = strlen(name);
	int i;

	for (i = 1; i < n; i++)
		if (strncmp(w[i], name, len) == 0 && w[i][len] == '=' &&
		    strcmp(w[i], text) != 0)
			return 1;
	return 0;
}

static char **
complete(const char *text, int start, int end)
{
	struct shell *sh = current;
	struct args a = { NULL, 0, NULL };
	char **w = NULL, *before, *key;
	const char *eq;
	size_t i, j;
	int n = 0;

	rl_attempted_completion_over = 1;
	rl_completion_display_matches_hook = NULL;
	cand_reset();
	before = xstrndup(rl_line_buffer, (size_t)start);
	if (split_words(before, &w, &n, NULL) < 0)
		goto done;
	if (n == 0) {
		add_commands(sh);
		goto done;
	}
	if (strcmp(w[0], "help") == 0) {
		if (n == 1)
			add_commands(sh);
		goto done;
	}
	if (command_args(sh, w[0], 1, 6, &a) < 0)
		goto done;
	free_words(w, n);
	w = NULL;
	if (split_words(rl_line_buffer, &w, &n, NULL) < 0)
		goto done;
	if ((eq = strchr(text, '=')) != NULL) {
		/* A value: the values of an enum, or a boolean. */
		key = xstrndup(text, (size_t)(eq - text));
		for (i = 0; i < a.n; i++) {
			if (strcmp(a.v[i].name, key) != 0)
				continue;
			for (j = 0; j < json_array_size(a.v[i].values); j++) {
				char *s = xasprintf("%s=%s", key,
				    json_string_value(json_array_get(
				    a.v[i].values, j)));
				cand_add(s, NULL);
				free(s);
			}
			if (a.v[i].is_bool) {
				char *t = xasprintf("%s=true", key);
				char *f = xasprintf("%s=false", key);

				cand_add(t, NULL);
				cand_add(f, NULL);
				free(t);
				free(f);
			}
		}
		free(key);
		goto done;
	}
	for (i = 0; i < a.n; i++) {
		char *word, *type;

		if (line_has_arg(w, n, a.v[i].name, text))
			continue;
		word = xasprintf("%s=", a.v[i].name);
		type = xasprintf("(%s%s)", a.v[i].type,
		    a.v[i].optional ? ", optional" : "");
		cand_add(word, type);
		free(word);
		free(type);
	}
	rl_completion_append_character = '\0';
	rl_completion_display_matches_hook = display_args;
done:
	(void)end;
	args_release(&a);
	free_words(w, n);
	free(before);
	return rl_completion_matches(text, cand_next);
}

static void
on_line(char *line)
{
	HIST_ENTRY *last;

	if (line == NULL) {		/* Ctrl-D */
		fputc('\n', stdout);
		current->done = 1;
		return;
	}
	if (*line != '\0' && !isspace((unsigned char)*line)) {
		last = history_get(history_base + history_length - 1);
		if (last == NULL || strcmp(last->line, line) != 0)
			add_history(line);
	}
	shell_line(current, line);
	free(line);
	if (current->done)
		rl_callback_handler_remove();
}

static void
on_sigint(int signo)
{
	(void)signo;
	got_sigint = 1;
}

static int
interrupted(void *opaque)
{
	(void)opaque;
	return got_sigint;
}

static char *
make_prompt(const struct shell *sh)
{
	int major, minor, micro;

	qmp_version(sh->q, &major, &minor, &micro);
	return xasprintf("(QEMU %d.%d.%d) ", major, minor, micro);
}

static int
interactive(struct shell *sh, struct err *e)
{
	struct sigaction sa, old;
	struct pollfd pfd[2];
	struct err qe = ERR_INIT;
	char *prompt;
	int rc = 0;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sigint;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old);	/* no SA_RESTART: poll sees EINTR */
	qmp_set_cancel(sh->q, interrupted, NULL);

	rl_readline_name = "snapctl";
	rl_catch_signals = 0;
	rl_attempted_completion_function = complete;
	rl_completer_word_break_characters = (char *)" \t\n";
	if (!isatty(STDOUT_FILENO))
		rl_outstream = stderr;
	using_history();
	stifle_history(HISTORY_MAX);
	if (sh->history != NULL)
		read_history(sh->history);

	/* Commands and schema up front: completion must not wait. */
	if (load_commands(sh, &qe) < 0 || load_schema(sh, &qe) < 0) {
		if (!qmp_usable(sh->q)) {
			*e = qe;
			rc = -1;
			goto out;
		}
		warnx_("no completion: %s", qe.msg);
	}
	prompt = make_prompt(sh);
	rl_callback_handler_install(prompt, on_line);
	free(prompt);
	while (!sh->done) {
		pfd[0].fd = STDIN_FILENO;
		pfd[0].events = POLLIN;
		pfd[1].fd = qmp_fd(sh->q);
		pfd[1].events = POLLIN;
		pfd[0].revents = pfd[1].revents = 0;
		if (poll(pfd, 2, -1) < 0) {
			if (errno != EINTR) {
				rc = err_sys(e, ERR_FAIL, "poll");
				break;
			}
			if (got_sigint) {
				got_sigint = 0;
				rl_free_line_state();
				rl_callback_sigcleanup();
				rl_replace_line("", 0);
				fputs("^C\n", rl_outstream);
				rl_on_new_line();
				rl_redisplay();
			}
			continue;
		}
		if (pfd[1].revents != 0) {
			if (qmp_pump(sh->q, &qe) < 0) {
				sh->fatal = qe;
				rl_callback_handler_remove();
				fputc('\n', rl_outstream);
				break;
			}
			print_events(sh, 1);
		}
		if (pfd[0].revents != 0)
			rl_callback_read_char();
	}
	rl_callback_handler_remove();
	if (sh->history != NULL) {
		write_history(sh->history);
		history_truncate_file(sh->history, HISTORY_MAX);
	}
out:
	clear_history();
	cand_reset();
	qmp_set_cancel(sh->q, NULL, NULL);
	sigaction(SIGINT, &old, NULL);
	return rc;
}

/* ---- without a terminal ------------------------------------------------ */

static int
script(struct shell *sh, struct err *e)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int rc = 0;

	/* A reader that went away (| head) ends the script: main says so. */
	while (!sh->done && !ferror(stdout) &&
	    (n = getline(&line, &cap, stdin)) >= 0) {
		if (n > 0 && line[n - 1] == '\n')
			line[n - 1] = '\0';
		shell_line(sh, line);
	}
	if (!sh->done && ferror(stdin))
		rc = err_sys(e, ERR_FAIL, "reading standard input");
	free(line);
	return rc;
}

static int
cmd_shell(const struct cmd_args *a, struct err *e)
{
	struct shell sh;
	const char *home;
	int rc = -1;

	memset(&sh, 0, sizeof(sh));
	if ((sh.q = cmd_qmp_connect(e)) == NULL)
		return -1;
	current = &sh;
	sh.interactive = isatty(STDIN_FILENO);
	home = getenv("HOME");
	if (sh.interactive && home != NULL && *home != '\0')
		sh.history = xasprintf("%s/%s", home, HISTORY_FILE);

	if (sh.interactive)
		rc = interactive(&sh, e);
	else
		rc = script(&sh, e);
	if (rc == 0 && err_isset(&sh.fatal)) {
		*e = sh.fatal;
		rc = -1;
	} else if (rc == 0 && !sh.interactive && sh.nfailed > 0) {
		rc = err_set(e, ERR_FAIL, "%d of %d commands failed",
		    sh.nfailed, sh.ncmds);
	}
	current = NULL;
	json_decref(sh.commands);
	json_decref(sh.schema);
	free(sh.history);
	qmp_close(sh.q);
	return rc;
}

const struct cmd_entry cmd_shell_entry = {
	"shell", "",
	"interactive QMP shell with history and schema completion",
	"Input: 'command key=value ...' or raw JSON.  'help [CMD]' lists\n"
	"commands or shows a command's arguments; 'exit' or Ctrl-D leaves\n"
	"('quit' is QEMU's quit: it ends the VM).  Without a terminal it\n"
	"reads one command per line and exits 1 if any failed.",
	"", NULL, 0, 0, CMD_NEEDS_SOCKET | CMD_JSON, cmd_shell,
};
