/*
 * snapctl.c - main: global options, the command table, help, and turning a
 * command's struct err into one line on stderr and an exit code.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "snapctl.h"
#include "store.h"
#include "util.h"

/* --json, which the dispatcher takes for every CMD_JSON command. */
#define OPT_JSON 0x10000

struct options options = {
	.socket = NULL,
	.dir = NULL,
	.json = 0,
	.verbosity = 0,
	.timeout_ms = 10000,
};

const struct cmd_entry *const cmd_table[] = {
	&cmd_qmp_entry,
	&cmd_shell_entry,
	&cmd_compact_entry,
	&cmd_export_entry,
	&cmd_verify_entry,
	&cmd_read_entry,
	&cmd_info_entry,
	&cmd_list_entry,
	&cmd_delete_entry,
	&cmd_prune_entry,
	&cmd_checkpoint_entry,
	&cmd_recover_entry,
	&cmd_restore_entry,
	&cmd_revert_entry,
	&cmd_sweep_entry,
	NULL,
};

static const char usage_head[] =
    "usage: snapctl [-qvV] [--json] [-s SOCKET] [-d STORE] [-w SEC] COMMAND "
    "[ARGS]\n";

static void
print_usage(FILE *f)
{
	const struct cmd_entry *const *c;

	fputs(usage_head, f);
	fputs("\nOptions:\n"
	    "  -s, --socket ADDR  QMP socket: a path or tcp:HOST:PORT "
	    "(env SNAPCTL_SOCKET)\n"
	    "  -d, --dir STORE    checkpoint store directory "
	    "(env SNAPCTL_DIR)\n"
	    "      --json         print results as one JSON document\n"
	    "  -q, --quiet        no progress or notes on stderr\n"
	    "  -v, --verbose      more detail; -vv traces QMP traffic\n"
	    "  -t, --qmp-timeout SEC  QMP reply timeout (default 10)\n"
	    "  -w, --wait SEC     wait up to SEC for the store's lock "
	    "(default 0)\n"
	    "  -h, --help         this help\n"
	    "  -V, --version      print the version\n"
	    "\nCommands:\n", f);
	for (c = cmd_table; *c != NULL; c++)
		fprintf(f, "  %-10s %s\n", (*c)->name, (*c)->summary);
	fprintf(f, "  %-10s %s\n", "help", "show help for a command");
	fputs("\ninfo and verify take a checkpoint NAME or an IMAGE file: an "
	    "argument with\na '/' is a file; else STORE/NAME when -d is "
	    "given and it exists; else a file.\n", f);
	fputs("\nRun 'snapctl help COMMAND' for a command's options.\n"
	    "Exit status: 0 ok, 1 failed, 2 usage, 3 QEMU unreachable, "
	    "4 mismatch,\n5 store locked, 6 no space, 7 timeout, "
	    "8 interrupted, 9 needs attention.\n", f);
}

const struct cmd_entry *
cmd_find(const char *name)
{
	const struct cmd_entry *const *c;

	for (c = cmd_table; *c != NULL; c++)
		if (strcmp((*c)->name, name) == 0)
			return *c;
	return NULL;
}

static void
print_cmd_help(const struct cmd_entry *c, FILE *f)
{
	fprintf(f, "usage: snapctl %s%s%s\n", c->name, *c->usage ? " " : "",
	    c->usage);
	fprintf(f, "\n%s.\n", c->summary);
	if (c->help != NULL)
		fprintf(f, "\n%s\n", c->help);
}

static int
cmd_help(const struct cmd_args *a, struct err *e)
{
	const struct cmd_entry *c;

	if (a->argc == 0) {
		print_usage(stdout);
		return 0;
	}
	if (strcmp(a->argv[0], "help") == 0) {
		printf("usage: snapctl help [COMMAND]\n");
		return 0;
	}
	c = cmd_find(a->argv[0]);
	if (c == NULL)
		return err_set(e, ERR_USAGE, "unknown command '%s'",
		    a->argv[0]);
	print_cmd_help(c, stdout);
	return 0;
}

/* The global options a command's options may also hold (after it). */
static const struct option global_longopts[] = {
	{ "socket", required_argument, NULL, 's' },
	{ "dir", required_argument, NULL, 'd' },
	{ "quiet", no_argument, NULL, 'q' },
	{ "verbose", no_argument, NULL, 'v' },
	{ "qmp-timeout", required_argument, NULL, 't' },
	{ "wait", required_argument, NULL, 'w' },
};
#define GLOBAL_SHORTOPTS "s:d:qvt:w:"
#define NGLOBAL (sizeof(global_longopts) / sizeof(global_longopts[0]))

/* One global option into options: 1 if ch is one, 0 if not, -1 if bad. */
static int
global_opt(int ch, const char *arg, struct err *e)
{
	uint64_t secs;

	switch (ch) {
	case 's':
		options.socket = arg;
		return 1;
	case 'd':
		options.dir = arg;
		return 1;
	case 'q':
		options.verbosity = -1;
		return 1;
	case 'v':
		if (options.verbosity < 0)
			options.verbosity = 0;
		options.verbosity++;
		return 1;
	case 't':
		if (opt_u64("--qmp-timeout", arg, 1, 3600, &secs, e) < 0)
			return -1;
		options.timeout_ms = (int)secs * 1000;
		return 1;
	case 'w':
		if (opt_u64("--wait", arg, 0, 86400, &secs, e) < 0)
			return -1;
		options.lock_wait_ms = (int)secs * 1000;
		return 1;
	}
	return 0;
}

/* The long options of c, the global ones, and --json when it takes it
 * (new array). */
static struct option *
long_options(const struct cmd_entry *c)
{
	const struct option *lo;
	struct option *out;
	size_t n = 0, i = 0, g;

	for (lo = c->longopts; lo != NULL && lo->name != NULL; lo++)
		n++;
	out = xcalloc(n + NGLOBAL + 2, sizeof(*out));
	for (; i < n; i++)
		out[i] = c->longopts[i];
	for (g = 0; g < NGLOBAL; g++)
		out[i++] = global_longopts[g];
	if (c->flags & CMD_JSON) {
		out[i].name = "json";
		out[i].has_arg = no_argument;
		out[i].val = OPT_JSON;
	}
	return out;
}

int
cmd_parse(const struct cmd_entry *c, int argc, char **argv,
    struct cmd_args *a, struct err *e)
{
	struct option *longopts = long_options(c);
	char shortopts[64];
	int ch, rc = -1;

	memset(a, 0, sizeof(*a));
	a->entry = c;
	a->opts = xcalloc((size_t)argc + 1, sizeof(*a->opts));
	a->argv = xcalloc((size_t)argc + 1, sizeof(*a->argv));
	/*
	 * ':' to report missing values ourselves.  '-' hands each argument
	 * over in order (1) and stops at "--": options among arguments; '+'
	 * stops at the first argument.
	 */
	snprintf(shortopts, sizeof(shortopts), "%s:%s%s",
	    (c->flags & CMD_OPTS_ANYWHERE) ? "-" : "+", c->shortopts,
	    GLOBAL_SHORTOPTS);
	opterr = 0;
	optind = 0;		/* GNU: start afresh, argv[0] is the name */
	while ((ch = getopt_long(argc, argv, shortopts, longopts, NULL)) !=
	    -1) {
		switch (ch) {
		case 1:
			a->argv[a->argc++] = optarg;
			break;
		case OPT_JSON:
			options.json = 1;
			break;
		case '?':
			if (optopt)
				err_set(e, ERR_USAGE, "%s: unknown option "
				    "'-%c'", c->name, optopt);
			else
				err_set(e, ERR_USAGE, "%s: unknown option "
				    "'%s'", c->name, argv[optind - 1]);
			goto out;
		case ':':
			err_set(e, ERR_USAGE, "%s: option '%s' needs a value",
			    c->name, argv[optind - 1]);
			goto out;
		default:
			switch (global_opt(ch, optarg, e)) {
			case -1:
				goto out;
			case 1:
				continue;
			}
			a->opts[a->nopts].id = ch;
			a->opts[a->nopts++].arg = optarg;
		}
	}
	a->ndash = a->argc;
	while (optind < argc)
		a->argv[a->argc++] = argv[optind++];
	if (a->argc < c->min_args) {
		err_set(e, ERR_USAGE, "%s: missing arguments", c->name);
		goto out;
	}
	if (c->max_args >= 0 && a->argc > c->max_args) {
		err_set(e, ERR_USAGE, "%s: too many arguments", c->name);
		goto out;
	}
	rc = 0;
out:
	free(longopts);
	if (rc < 0)
		cmd_args_release(a);
	return rc;
}

void
cmd_args_release(struct cmd_args *a)
{
	free(a->opts);
	free(a->argv);
	a->opts = NULL;
	a->argv = NULL;
	a->nopts = a->argc = 0;
}

int
opt_u64(const char *name, const char *val, uint64_t min, uint64_t max,
    uint64_t *out, struct err *e)
{
	const char *why;

	if (parse_u64(val, min, max, out, &why) < 0) {
		if (strcmp(why, "invalid") == 0)
			return err_set(e, ERR_USAGE, "invalid %s '%s': must "
			    "be a whole number from %llu to %llu", name, val,
			    (unsigned long long)min, (unsigned long long)max);
		return err_set(e, ERR_USAGE, "invalid %s '%s': %s", name, val,
		    why);
	}
	return 0;
}

int
opt_int(const char *name, const char *val, int min, int max, int *out,
    struct err *e)
{
	uint64_t v;

	if (opt_u64(name, val, (uint64_t)min, (uint64_t)max, &v, e) < 0)
		return -1;
	*out = (int)v;
	return 0;
}

char *
text_escape(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = 0;
	char *out, *o;

	for (; *p != '\0'; p++)
		n += (*p < 0x20 || *p == 0x7f) ? 4 :
		    (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) ? 7 : 1;
	o = out = xmalloc(n + 1);
	for (p = (const unsigned char *)s; *p != '\0'; p++) {
		if (*p < 0x20 || *p == 0x7f) {
			snprintf(o, 5, "\\x%02x", *p);
			o += 4;
		} else if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) {
			/* A C1 control in UTF-8: ESC [ to many terminals. */
			snprintf(o, 9, "\\xc2\\x%02x", p[1]);
			o += 8;
			p++;
		} else {
			*o++ = (char)*p;
		}
	}
	*o = '\0';
	return out;
}

json_t *
json_text_escape(const json_t *j)
{
	const char *k;
	json_t *v, *out;
	char *t;
	size_t i;

	if (json_is_string(j)) {
		t = text_escape(json_string_value(j));
		out = json_string(t);
		free(t);
		return out;
	}
	if (json_is_object(j)) {
		out = json_object();
		json_object_foreach((json_t *)j, k, v)
			json_object_set_new(out, k, json_text_escape(v));
		return out;
	}
	if (json_is_array(j)) {
		out = json_array();
		json_array_foreach(j, i, v)
			json_array_append_new(out, json_text_escape(v));
		return out;
	}
	return json_deep_copy(j);
}

void
print_error_json(const struct err *e)
{
	json_t *j = json_pack("{s:{s:s, s:s}}", "error", "class",
	    e->qmp_class[0] != '\0' ? e->qmp_class : "SnapctlError", "desc",
	    e->msg);

	print_json(j);
	fflush(stdout);
	json_decref(j);
}

void
print_error(const struct err *e)
{
	char *msg = text_escape(e->msg);

	if (e->qmp_class[0] != '\0')
		fprintf(stderr, "snapctl: %s: %s\n", e->qmp_class, msg);
	else
		fprintf(stderr, "snapctl: %s\n", msg);
	free(msg);
}

void
print_json(const json_t *j)
{
	size_t flags = (options.json ? JSON_COMPACT : JSON_INDENT(2)) |
	    JSON_REAL_PRECISION(12);

	json_dumpf(j, stdout, flags | JSON_ENCODE_ANY);
	fputc('\n', stdout);
	options.json_docs++;
}

/*
 * --json promises one document, success or failure.  A command that failed
 * before it printed its own gets {command, ok: false, kind, error}, with
 * the message stderr carries.  A usage error the command itself found
 * (export's stdout is the stream, read's the bytes) prints none.
 */
static void
json_failure(const struct cmd_entry *c, const struct err *e, int ran)
{
	json_t *j;

	if (!options.json || options.json_docs > 0 || c == NULL ||
	    !(c->flags & CMD_JSON) || (ran && e->kind == ERR_USAGE))
		return;
	j = json_pack("{s:s, s:b, s:s, s:s}", "command", c->name, "ok", 0,
	    "kind", err_kind_name(e->kind), "error", e->msg);
	if (j != NULL)
		print_json(j);
	json_decref(j);
	fflush(stdout);
}

void
print_result(const json_t *j, void (*text)(const json_t *j))
{
	if (options.json)
		print_json(j);
	else
		text(j);
}

void
print_done(const json_t *j, void (*text)(const json_t *j))
{
	if (options.json || options.verbosity >= 0)
		print_result(j, text);
}

static void
vmsg(int level, const char *fmt, va_list ap)
{
	if (options.verbosity < level)
		return;
	fputs("snapctl: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void
info(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg(0, fmt, ap);
	va_end(ap);
}

void
verbose(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmsg(1, fmt, ap);
	va_end(ap);
}

void
warnx_(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("snapctl: warning: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

int
progress_enabled(void)
{
	return options.verbosity >= 0 && isatty(STDERR_FILENO);
}

int
trace_enabled(void)
{
	const char *t = getenv("SNAPCTL_TRACE");

	return options.verbosity >= 2 || (t != NULL && strcmp(t, "1") == 0);
}

void
trace_qmp(void *opaque, const char *dir, const char *line)
{
	(void)opaque;
	fprintf(stderr, "%s %s\n", dir, line);
}

/* fds 0-2 must be open before we open sockets and images (curl, git). */
static void
sanitize_stdio(void)
{
	int fd;

	for (;;) {
		fd = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (fd < 0 || fd > 2) {
			if (fd >= 0)
				close(fd);
			break;
		}
	}
}

/* 1 when stdout is a pipe or socket whose reader went away (| head). */
static int
stdout_reader_gone(void)
{
	struct pollfd p = { STDOUT_FILENO, POLLOUT, 0 };

	return poll(&p, 1, 0) == 1 && (p.revents & (POLLERR | POLLHUP));
}

static int
finish_stdout(struct err *e)
{
	/* Not err_sys(): a full stdout is a failed command (1), not exit 6,
	 * which means the image ran out of space. */
	if (fflush(stdout) != 0 || ferror(stdout)) {
		/* A reader that stopped reading (| head) is a quiet end, as
		 * SIGPIPE would be, without the signal (ignored). */
		if (errno == EPIPE || stdout_reader_gone())
			return 0;
		return err_set(e, ERR_FAIL, "cannot write to standard output: "
		    "%s", strerror(errno ? errno : EIO));
	}
	return 0;
}

/* ---- completion ---------------------------------------------------------- */

/* The option words of c ("--keep -l ..."), and into vals those that take a
 * value. */
static void
option_words(const struct cmd_entry *c, struct buf *words, struct buf *vals)
{
	struct option *lo = long_options(c), *o;
	const char *p;

	for (o = lo; o->name != NULL; o++) {
		buf_addf(words, " --%s", o->name);
		if (o->has_arg != no_argument)
			buf_addf(vals, "|--%s", o->name);
	}
	for (p = c->shortopts; *p != '\0'; p++) {
		if (*p == ':')
			continue;
		buf_addf(words, " -%c", *p);
		if (p[1] == ':')
			buf_addf(vals, "|-%c", *p);
	}
	for (p = GLOBAL_SHORTOPTS; *p != '\0'; p++) {
		if (*p == ':')
			continue;
		buf_addf(words, " -%c", *p);
		if (p[1] == ':')
			buf_addf(vals, "|-%c", *p);
	}
	free(lo);
}

/* A bash completion script for the commands of the table. */
static void
print_bash_completion(FILE *f)
{
	const struct cmd_entry *const *c;
	struct buf words = BUF_INIT, vals = BUF_INIT;

	fputs("# bash completion for snapctl, generated by 'snapctl "
	    "completion bash'\n"
	    "# from its command table.  Install: snapctl completion bash "
	    ">/etc/bash_completion.d/snapctl\n"
	    "_snapctl() {\n"
	    "\tlocal cur=${COMP_WORDS[COMP_CWORD]} "
	    "prev=${COMP_WORDS[COMP_CWORD-1]}\n"
	    "\tlocal cmd= dir=${SNAPCTL_DIR-} i w opts= ckpt=0\n"
	    "\tlocal globals='-s --socket -d --dir -q --quiet -v --verbose "
	    "-t --qmp-timeout -w --wait --json -h --help -V --version'\n"
	    "\tfor ((i = 1; i < COMP_CWORD; i++)); do\n"
	    "\t\tw=${COMP_WORDS[i]}\n"
	    "\t\tcase $w in\n"
	    "\t\t-d | --dir) dir=${COMP_WORDS[i+1]}; i=$((i + 1)) ;;\n"
	    "\t\t-s | --socket | -t | --qmp-timeout | -w | --wait) "
	    "i=$((i + 1)) ;;\n"
	    "\t\t-*) ;;\n"
	    "\t\t*) [ -n \"$cmd\" ] || cmd=$w ;;\n"
	    "\t\tesac\n"
	    "\tdone\n"
	    "\tCOMPREPLY=()\n"
	    "\tif [ -z \"$cmd\" ]; then\n"
	    "\t\tcase $prev in\n"
	    "\t\t-s | --socket | -d | --dir) "
	    "COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n"
	    "\t\t-t | --qmp-timeout | -w | --wait) return ;;\n"
	    "\t\tesac\n"
	    "\t\tCOMPREPLY=($(compgen -W \"$globals help", f);
	for (c = cmd_table; *c != NULL; c++)
		fprintf(f, " %s", (*c)->name);
	fputs("\" -- \"$cur\"))\n"
	    "\t\treturn\n"
	    "\tfi\n"
	    "\tcase $cmd in\n", f);
	fputs("\thelp) COMPREPLY=($(compgen -W \"", f);
	for (c = cmd_table; *c != NULL; c++)
		fprintf(f, "%s%s", c == cmd_table ? "" : " ", (*c)->name);
	fputs("\" -- \"$cur\")); return ;;\n", f);
	for (c = cmd_table; *c != NULL; c++) {
		buf_reset(&words);
		buf_reset(&vals);
		option_words(*c, &words, &vals);
		fprintf(f, "\t%s)\n\t\topts='%s'\n", (*c)->name,
		    (char *)words.data + 1);
		fprintf(f, "\t\tcase $prev in %s) COMPREPLY=($(compgen -f -- "
		    "\"$cur\")); return ;; esac\n", (char *)vals.data + 1);
		if ((*c)->flags & CMD_CKPT_ARGS)
			fputs("\t\tckpt=1\n", f);
		fputs("\t\t;;\n", f);
	}
	fputs("\t*) return ;;\n"
	    "\tesac\n"
	    "\tif [[ $cur == -* ]]; then\n"
	    "\t\tCOMPREPLY=($(compgen -W \"$opts\" -- \"$cur\"))\n"
	    "\telif [ \"$ckpt\" = 1 ] && [ -n \"$dir\" ]; then\n"
	    "\t\tCOMPREPLY=($(compgen -W \"$(command snapctl -d \"$dir\" "
	    "list 2>/dev/null | awk '{ print $1 }')\" -- \"$cur\"))\n"
	    "\telse\n"
	    "\t\tCOMPREPLY=($(compgen -f -- \"$cur\"))\n"
	    "\tfi\n"
	    "}\n"
	    "complete -F _snapctl snapctl\n", f);
	buf_release(&words);
	buf_release(&vals);
}

/* Hidden: not in the command list, documented in the man page. */
static int
cmd_completion(const struct cmd_args *a, struct err *e)
{
	if (strcmp(a->argv[0], "bash") != 0)
		return err_set(e, ERR_USAGE, "completion: unknown shell '%s' "
		    "(bash)", a->argv[0]);
	print_bash_completion(stdout);
	return 0;
}

static const struct cmd_entry completion_entry = {
	"completion", "bash", "print a shell completion script", NULL, "",
	NULL, 1, 1, 0, cmd_completion,
};

static const struct cmd_entry help_entry = {
	"help", "[COMMAND]", "show help for a command", NULL, "", NULL, 0, -1,
	0, cmd_help,
};

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "dir", required_argument, NULL, 'd' },
		{ "json", no_argument, NULL, 'J' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "qmp-timeout", required_argument, NULL, 't' },
		{ "wait", required_argument, NULL, 'w' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct err e = ERR_INIT;
	struct cmd_args a;
	const struct cmd_entry *c = NULL;
	int ch, rc = -2;	/* -2: the command has not run */

	sanitize_stdio();
	signal(SIGPIPE, SIG_IGN);
	options.socket = getenv("SNAPCTL_SOCKET");
	options.dir = getenv("SNAPCTL_DIR");

	opterr = 0;
	while ((ch = getopt_long(argc, argv, "+:s:d:qvt:w:hV", longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 's':
		case 'd':
		case 'q':
		case 'v':
		case 't':
		case 'w':
			if (global_opt(ch, optarg, &e) < 0)
				goto usage_error;
			break;
		case 'J':
			options.json = 1;
			break;
		case 'h':
			print_usage(stdout);
			goto flush;
		case 'V':
			printf("snapctl %s\n", SNAPCTL_VERSION);
			goto flush;
		case ':':
			err_set(&e, ERR_USAGE, "option '%s' needs a value",
			    argv[optind - 1]);
			goto usage_error;
		default:
			if (optopt)
				err_set(&e, ERR_USAGE,
				    "unknown option '-%c'", optopt);
			else
				err_set(&e, ERR_USAGE, "unknown option '%s'",
				    argv[optind - 1]);
			goto usage_error;
		}
	}
	if (optind >= argc) {
		err_set(&e, ERR_USAGE, "no command given");
		goto usage_error;
	}

	c = strcmp(argv[optind], "help") == 0 ? &help_entry :
	    strcmp(argv[optind], "completion") == 0 ? &completion_entry :
	    cmd_find(argv[optind]);
	if (c == NULL) {
		err_set(&e, ERR_USAGE, "unknown command '%s'", argv[optind]);
		goto usage_error;
	}
	/* The command's options first: they may hold -s and -d. */
	if (cmd_parse(c, argc - optind, argv + optind, &a, &e) < 0)
		goto usage_error;
	if ((c->flags & CMD_NEEDS_SOCKET) && options.socket == NULL)
		err_set(&e, ERR_USAGE, "%s: no QMP socket: use -s or "
		    "SNAPCTL_SOCKET", c->name);
	else if ((c->flags & CMD_NEEDS_STORE) && options.dir == NULL)
		err_set(&e, ERR_USAGE, "%s: no checkpoint store: use -d or "
		    "SNAPCTL_DIR", c->name);
	if (err_isset(&e)) {
		cmd_args_release(&a);
		goto usage_error;
	}
	rc = c->run(&a, &e);
	cmd_args_release(&a);
	if (finish_stdout(rc == 0 ? &e : NULL) < 0)
		rc = -1;
	if (rc == 0)
		return 0;
	if (!err_isset(&e))
		err_set(&e, ERR_FAIL, "%s failed", c->name);
	if (e.kind == ERR_USAGE)
		goto usage_error;
	json_failure(c, &e, 1);
	print_error(&e);
	return err_exit_code(e.kind);

flush:
	if (finish_stdout(&e) == 0)
		return 0;
	fprintf(stderr, "snapctl: %s\n", e.msg);
	return 1;

usage_error:
	json_failure(c, &e, rc != -2);
	fprintf(stderr, "snapctl: %s\n", e.msg);
	if (c != NULL && c != &help_entry)
		fprintf(stderr, "Try 'snapctl help %s' for more "
		    "information.\n", c->name);
	else
		fputs("Try 'snapctl --help' for more information.\n", stderr);
	return 2;
}
