/*
 * snapctl.h - the command-line layer: global options, the command table and
 * the output helpers the cmd_*.c files share.  Only this layer prints and
 * decides exit codes; the core (qmp, stream, save, checkpoint, store) never
 * does.
 */
#ifndef SNAPCTL_SNAPCTL_H
#define SNAPCTL_SNAPCTL_H

#include <stdint.h>

#include <jansson.h>

#include "err.h"

#ifndef SNAPCTL_VERSION
#define SNAPCTL_VERSION "0.1.0"
#endif

/* The global options: the one global the program has. */
struct options {
	const char *socket;	/* -s, SNAPCTL_SOCKET */
	const char *dir;	/* -d, SNAPCTL_DIR */
	int json;		/* --json */
	int verbosity;		/* -q: -1, default 0, -v: 1, -vv: 2 */
	int timeout_ms;		/* QMP reply timeout */
};
extern struct options options;

/* What a command needs before it runs. */
#define CMD_NEEDS_SOCKET 0x1
#define CMD_NEEDS_STORE 0x2

struct cmd_entry {
	const char *name;
	const char *usage;	/* synopsis after "snapctl NAME", = man page */
	const char *summary;	/* one line for the command list */
	const char *help;	/* option lines for "snapctl help NAME" */
	int min_args;		/* positional arguments after options */
	int max_args;		/* -1: no limit */
	unsigned flags;
	/*
	 * argv[0] is the command name; options are the command's own (parse
	 * them with cmd_getopt()).  Returns 0, or -1 with e filled.
	 */
	int (*run)(int argc, char **argv, struct err *e);
};

/* The table (snapctl.c), terminated by an entry with name NULL. */
extern const struct cmd_entry cmd_table[];
const struct cmd_entry *cmd_find(const char *name);

/*
 * Per-command option parsing: getopt_long over argv with the command's
 * short and long options.  Returns the option character, -1 at the end
 * (then *argi is the index of the first positional argument), or '?' after
 * filling e with a usage error.  Positional argument counts are checked
 * against the table by cmd_check_args().
 */
struct option;
int cmd_getopt(int argc, char **argv, const char *shortopts,
    const struct option *longopts, int *argi, struct err *e);
int cmd_check_args(const struct cmd_entry *c, int nargs, struct err *e);

/* Parse a number option: "invalid --level '99': too large" on failure. */
int opt_u64(const char *name, const char *val, uint64_t min, uint64_t max,
    uint64_t *out, struct err *e);

/* Output.  Results go to stdout; everything chatty to stderr. */
void print_json(json_t *j);	/* pretty, or compact with --json; borrows */
void info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void verbose(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void warnx_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* 1 when progress lines should be drawn (stderr is a tty, not -q). */
int progress_enabled(void);

/* The QMP trace hook for -vv / SNAPCTL_TRACE=1 (stderr). */
void trace_qmp(void *opaque, const char *dir, const char *line);
int trace_enabled(void);

/* Commands, one file per family. */
int cmd_qmp(int argc, char **argv, struct err *e);	/* cmd_qmp.c */
int cmd_shell(int argc, char **argv, struct err *e);	/* shell.c */
int cmd_list(int argc, char **argv, struct err *e);	/* cmd_store.c */
int cmd_info(int argc, char **argv, struct err *e);
int cmd_verify(int argc, char **argv, struct err *e);
int cmd_delete(int argc, char **argv, struct err *e);
int cmd_prune(int argc, char **argv, struct err *e);

/*
 * cmd_qmp.c, for every command that talks to QEMU: connect to
 * options.socket (a missing socket or a refused connection is retried for
 * SNAPCTL_CONNECT_TIMEOUT seconds, default 2), replies bounded by
 * options.timeout_ms, the trace hook on when trace_enabled().  NULL with e
 * filled (ERR_QEMU; ERR_USAGE for a bad SNAPCTL_CONNECT_TIMEOUT).
 */
struct qmp;
struct qmp *cmd_qmp_connect(struct err *e);

/* SNAPCTL_CONNECT_TIMEOUT in ms (default 2000); ERR_USAGE when bad. */
int cmd_connect_timeout(int *ms, struct err *e);

/*
 * QMP arguments from command-line words: none (*out = NULL), one JSON
 * object, or KEY=VALUE pairs whose values are JSON when they parse and
 * strings otherwise, dotted keys nesting (a.b=1 gives {"a":{"b":1}}).
 * *out is a new reference.  -1 with e filled (ERR_USAGE) on a bad word or
 * keys that conflict (a=1 a.b=2).
 */
int cmd_qmp_args(int argc, char *const argv[], json_t **out, struct err *e);
int cmd_compact(int argc, char **argv, struct err *e);	/* cmd_image.c */
int cmd_export(int argc, char **argv, struct err *e);
int cmd_image_verify(int argc, char **argv, struct err *e);
int cmd_read(int argc, char **argv, struct err *e);
int cmd_image_info(int argc, char **argv, struct err *e);
int cmd_checkpoint(int argc, char **argv, struct err *e);	/* cmd_ckpt.c */
int cmd_recover(int argc, char **argv, struct err *e);
int cmd_restore(int argc, char **argv, struct err *e);	/* cmd_restore.c */

#endif
