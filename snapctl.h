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
	int lock_wait_ms;	/* -w: how long to wait for a store's lock */
	int json_docs;		/* documents print_json() printed so far */
};
extern struct options options;

/* What a command needs and how its options are parsed. */
#define CMD_NEEDS_SOCKET 0x1
#define CMD_NEEDS_STORE 0x2
#define CMD_JSON 0x4		/* takes --json (sets options.json) */
#define CMD_OPTS_ANYWHERE 0x8	/* options among the arguments, up to "--"
				 * (else they end at the first argument) */
#define CMD_CKPT_ARGS 0x10	/* its arguments are checkpoint names (for
				 * completion) */

/* One option as the dispatcher parsed it, in command-line order. */
struct cmd_opt {
	int id;			/* the short option, or the long one's val */
	const char *arg;	/* its value, or NULL */
};

/* What a command's function gets: its options, parsed, and arguments. */
struct cmd_args {
	const struct cmd_entry *entry;
	struct cmd_opt *opts;	/* --json is not among them */
	int nopts;
	char **argv;		/* the positional arguments, NULL-terminated */
	int argc;		/* within the entry's min_args..max_args */
	int ndash;		/* CMD_OPTS_ANYWHERE: argv[ndash...] came
				 * after "--" (argc when there was none) */
};

struct option;
struct cmd_entry {
	const char *name;
	const char *usage;	/* synopsis after "snapctl NAME", = man page */
	const char *summary;	/* one line for the command list */
	const char *help;	/* option lines for "snapctl help NAME" */
	const char *shortopts;	/* getopt letters, "" for none */
	const struct option *longopts;	/* NULL for none */
	int min_args;		/* positional arguments after options */
	int max_args;		/* -1: no limit */
	unsigned flags;
	/* Returns 0, or -1 with e filled. */
	int (*run)(const struct cmd_args *a, struct err *e);
};

/* The table (snapctl.c), terminated by NULL; each entry is its file's. */
extern const struct cmd_entry *const cmd_table[];
const struct cmd_entry *cmd_find(const char *name);

/*
 * Parse argv (argv[0] the command's name) by c's options and argument
 * counts with getopt_long.  0 with *a filled (free with cmd_args_release()),
 * or -1 with e filled (ERR_USAGE: "NAME: unknown option '--x'", "NAME:
 * option '--x' needs a value", "NAME: missing arguments", "NAME: too many
 * arguments").
 */
int cmd_parse(const struct cmd_entry *c, int argc, char **argv,
    struct cmd_args *a, struct err *e);
void cmd_args_release(struct cmd_args *a);

/* Parse a number option: "invalid --level '99': too large" on failure. */
int opt_u64(const char *name, const char *val, uint64_t min, uint64_t max,
    uint64_t *out, struct err *e);
/* The same for an int. */
int opt_int(const char *name, const char *val, int min, int max, int *out,
    struct err *e);

/* Output.  Results go to stdout; everything chatty to stderr. */
void print_json(const json_t *j);	/* pretty, or compact with --json */
/* A command's result: print_json() with --json, else text(j). */
void print_result(const json_t *j, void (*text)(const json_t *j));
/*
 * What an action (checkpoint, delete, prune, recover) did: print_result(),
 * but nothing in text with -q, so a cron job that succeeds is silent.
 */
void print_done(const json_t *j, void (*text)(const json_t *j));
void info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void verbose(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void warnx_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/*
 * s with control characters (C0, DEL, C1 in UTF-8) written as \xHH, so a
 * string from a manifest or QEMU cannot drive the terminal.  New string.
 */
char *text_escape(const char *s);
/* A deep copy of j with every string text_escape()d (new reference). */
json_t *json_text_escape(const json_t *j);
/* "snapctl: [CLASS: ]MSG" on stderr, MSG text_escape()d. */
void print_error(const struct err *e);
/*
 * e as a QMP-style error on stdout, one JSON line: {"error": {"class":
 * QMP's class or "SnapctlError", "desc": MSG}} (shell --json's reply to a
 * command that failed).
 */
void print_error_json(const struct err *e);
/* 1 when progress lines should be drawn (stderr is a tty, not -q). */
int progress_enabled(void);

/* The QMP trace hook for -vv / SNAPCTL_TRACE=1 (stderr). */
void trace_qmp(void *opaque, const char *dir, const char *line);
int trace_enabled(void);

/* The commands, one file per family, each entry beside its function. */
extern const struct cmd_entry cmd_qmp_entry;		/* cmd_qmp.c */
extern const struct cmd_entry cmd_shell_entry;		/* shell.c */
extern const struct cmd_entry cmd_compact_entry;	/* cmd_image.c */
extern const struct cmd_entry cmd_export_entry;
extern const struct cmd_entry cmd_read_entry;
extern const struct cmd_entry cmd_verify_entry;		/* cmd_store.c */
extern const struct cmd_entry cmd_info_entry;
extern const struct cmd_entry cmd_list_entry;
extern const struct cmd_entry cmd_delete_entry;
extern const struct cmd_entry cmd_prune_entry;
extern const struct cmd_entry cmd_checkpoint_entry;	/* cmd_ckpt.c */
extern const struct cmd_entry cmd_recover_entry;
extern const struct cmd_entry cmd_restore_entry;	/* cmd_restore.c */
extern const struct cmd_entry cmd_revert_entry;
extern const struct cmd_entry cmd_sweep_entry;		/* cmd_sweep.c */

/* "removed 'F'" / "kept 'F': WHY" per entry of a diskgc_run() or
 * restoredir report (cmd_store.c). */
void print_files(const json_t *files, int dry_run);

/* info and verify of an image file (cmd_image.c), for cmd_store.c. */
int cmd_image_info(const char *path, struct err *e);
int cmd_image_verify(const char *path, struct err *e);

/*
 * cmd_qmp.c, for every command that talks to QEMU: connect to
 * options.socket (a missing socket or a refused connection is retried for
 * SNAPCTL_CONNECT_TIMEOUT seconds, default 2), replies bounded by
 * options.timeout_ms, the trace hook on when trace_enabled().  NULL with e
 * filled (ERR_QEMU; ERR_USAGE for a bad SNAPCTL_CONNECT_TIMEOUT).
 */
struct qmp;
struct qmp *cmd_qmp_connect(struct err *e);

/* The configuration cmd_qmp_connect() uses; -1 with e filled as it. */
struct qmp_config;
int cmd_qmp_config(struct qmp_config *cfg, struct err *e);

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

#endif
