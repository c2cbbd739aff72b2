/*
 * snapctl.c - main: global options, the command table, help, and turning a
 * command's struct err into one line on stderr and an exit code.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "snapctl.h"
#include "util.h"

struct options options = {
	.socket = NULL,
	.dir = NULL,
	.json = 0,
	.verbosity = 0,
	.timeout_ms = 10000,
};

const struct cmd_entry cmd_table[] = {
	{ "qmp", "COMMAND [ARGS...]",
	  "run one QMP command and print its reply",
	  "ARGS is one JSON object, or key=value pairs: values are parsed as\n"
	  "JSON when they parse, else taken as strings; dotted keys nest\n"
	  "(a.b=1 gives {\"a\":{\"b\":1}}).",
	  1, -1, CMD_NEEDS_SOCKET, cmd_qmp },
	{ "shell", "",
	  "interactive QMP shell with history and schema completion",
	  "Input: 'command key=value ...' or raw JSON.  'help [CMD]' lists\n"
	  "commands or shows a command's arguments.  Without a terminal it\n"
	  "reads one command per line and exits 1 if any failed.",
	  0, 0, CMD_NEEDS_SOCKET, cmd_shell },
	{ "compact", "[-l LEVEL] [-T THREADS] RAW IMAGE",
	  "import a raw QEMU migration stream into a compact image",
	  "  -l, --level N     zstd level (1-19, default 1)\n"
	  "  -T, --threads N   compression threads (default: online CPUs)\n"
	  "RAW is a file or - for standard input.",
	  2, 2, 0, cmd_compact },
	{ "export", "IMAGE OUT",
	  "regenerate a QEMU migration stream from an image",
	  "OUT is a file or - for standard output (not a terminal).",
	  2, 2, 0, cmd_export },
	{ "verify", "NAME|IMAGE",
	  "check a checkpoint (memory image, disk files) or an image",
	  "NAME is checkpoint STORE/NAME: every checksum of its memory\n"
	  "image, and each disk file present, of the recorded format and\n"
	  "backing, unchanged in size and mtime (else exit 4).  An argument\n"
	  "with a '/', or one that is no checkpoint of the store (-d), is\n"
	  "an image file: every checksum and structure of it.",
	  1, 1, 0, cmd_verify },
	{ "read", "IMAGE BLOCK OFFSET LENGTH",
	  "write raw guest bytes of a RAM block range to stdout",
	  "OFFSET and LENGTH are bytes (decimal, or hex with 0x).",
	  4, 4, 0, cmd_read },
	{ "info", "NAME|IMAGE",
	  "show a checkpoint and how to restore it, or an image",
	  "NAME is checkpoint STORE/NAME: its manifest, readably, and the\n"
	  "QEMU options to start a restore target (--json: the manifest as\n"
	  "written).  An argument with a '/', or one that is no checkpoint\n"
	  "of the store (-d), is an image file: machine type, RAM blocks,\n"
	  "pages and sizes.",
	  1, 1, 0, cmd_info },
	{ "list", "",
	  "list the checkpoints of the store, oldest first",
	  "One line each: name, created, parent, memory image size, disks.\n"
	  "--json: [{name, created, parent, vm, mode, memory_bytes,\n"
	  "disks: [DEVICE...]}].  Unreadable manifests are skipped with a\n"
	  "warning.",
	  0, 0, CMD_NEEDS_STORE, cmd_list },
	{ "delete", "[--disks] NAME...",
	  "delete checkpoints, and with --disks the disk files they free",
	  "  --disks   also remove disk files snapctl made that nothing\n"
	  "            needs any more: not the disk of a remaining\n"
	  "            checkpoint, not backing a file that stays, not open\n"
	  "            by any process, not used by the VM at -s\n"
	  "Takes the store's lock (exit 5 when busy).  Every removed and\n"
	  "kept disk file is reported with the reason.",
	  1, -1, CMD_NEEDS_STORE, cmd_delete },
	{ "prune", "--keep N [--dry-run] [--disks]",
	  "delete all but the newest N checkpoints of each VM",
	  "  --keep N    checkpoints to keep per VM (0 deletes them all)\n"
	  "  --dry-run   say what would be deleted, change nothing\n"
	  "  --disks     as for delete\n"
	  "A VM is the uuid and name its manifests record; newest is by\n"
	  "created, then name.",
	  0, 0, CMD_NEEDS_STORE, cmd_prune },
	{ "checkpoint", "[--mode live|background | --pause | --disk-only "
	  "[--quiesce --agent SOCKET]] "
	  "[--downtime MS] [--bandwidth RATE] [--timeout SEC "
	  "[--on-timeout stop|abort]] [--exclude DEVICE]... "
	  "[--overlay-dir DIR] [--level N] [--threads N] [NAME]",
	  "take a consistent live checkpoint of memory and disks",
	  "  --mode background    memory as at the start (QEMU's background\n"
	  "                       snapshot), disks cut at that instant; a\n"
	  "                       stopped guest is captured as with --pause\n"
	  "  --pause              keep the guest stopped during the capture\n"
	  "  --disk-only          cut the disks only, no memory\n"
	  "  --quiesce            with --disk-only: freeze filesystems\n"
	  "  --agent SOCKET       the guest agent socket for --quiesce\n"
	  "  --downtime MS        QEMU's downtime-limit for the switchover\n"
	  "  --bandwidth RATE     max-bandwidth, bytes/s, K/M/G suffixes\n"
	  "                       (default 64G: unlimited)\n"
	  "  --timeout SEC        past it, stop the guest to finish "
	  "(\"forced\")\n"
	  "  --on-timeout abort   ... or give up instead (exit 7)\n"
	  "  --exclude DEVICE     leave this disk alone (repeatable)\n"
	  "  --overlay-dir DIR    new overlays here, not beside the images\n"
	  "  --level N, --threads N  zstd level and threads for the image\n"
	  "NAME defaults to the UTC time (20261123T081500Z).  The checkpoint\n"
	  "goes to STORE/NAME; each disk's new overlay is\n"
	  "<image-stem>.NAME.qcow2 beside its image.",
	  0, 1, CMD_NEEDS_SOCKET | CMD_NEEDS_STORE, cmd_checkpoint },
	{ "recover", "[--agent SOCKET]",
	  "resume a guest an interrupted checkpoint left stopped",
	  "Cancels a pending migration, thaws filesystems (--agent), puts\n"
	  "back the migration settings recorded in STORE/.recover.json\n"
	  "(with -d), resumes the guest.  -s may be left out when -d is\n"
	  "given: the recovery note names the socket.",
	  0, 0, 0, cmd_recover },
	{ "restore", "[--paused] [--lazy] [--dry-run] [--overlay-dir DIR] "
	  "[--timeout SEC] NAME [--exec [--exec-log FILE] -- QEMU ARGS...]",
	  "load a checkpoint into a QEMU waiting with -incoming defer",
	  "  --paused             leave the guest paused after the load\n"
	  "  --lazy               postcopy: the guest runs once its devices\n"
	  "                       are in, its pages follow (those it touches\n"
	  "                       first); snapctl returns when all are in\n"
	  "  --dry-run            run every check, change nothing\n"
	  "  --overlay-dir DIR    new overlays here, not beside the disks\n"
	  "  --timeout SEC        give up loading after SEC (default 600)\n"
	  "  --exec -- QEMU ARGS  start QEMU with ARGS plus -incoming defer,\n"
	  "                       -S and a QMP monitor on -s SOCKET; it is\n"
	  "                       left running (killed if the restore fails)\n"
	  "  --exec-log FILE      QEMU's output (default SOCKET.log)\n"
	  "Checks the memory image, the disk files and the VM (machine type,\n"
	  "RAM blocks, disks opened on the checkpoint's files: see 'snapctl\n"
	  "info NAME') before touching QEMU; then puts a fresh overlay\n"
	  "<disk-stem>.restore-TIME.qcow2 on every disk, so the checkpoint\n"
	  "can be restored again, loads the memory and resumes the guest.",
	  1, -1, CMD_NEEDS_SOCKET | CMD_NEEDS_STORE, cmd_restore },
	{ NULL, NULL, NULL, NULL, 0, 0, 0, NULL },
};

static const char usage_head[] =
    "usage: snapctl [-qvV] [--json] [-s SOCKET] [-d STORE] COMMAND [ARGS]\n";

static void
print_usage(FILE *f)
{
	const struct cmd_entry *c;

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
	    "  -h, --help         this help\n"
	    "  -V, --version      print the version\n"
	    "\nCommands:\n", f);
	for (c = cmd_table; c->name != NULL; c++)
		fprintf(f, "  %-10s %s\n", c->name, c->summary);
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
	const struct cmd_entry *c;

	for (c = cmd_table; c->name != NULL; c++)
		if (strcmp(c->name, name) == 0)
			return c;
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
cmd_help(int argc, char **argv, struct err *e)
{
	const struct cmd_entry *c;

	if (argc < 2) {
		print_usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "help") == 0) {
		printf("usage: snapctl help [COMMAND]\n");
		return 0;
	}
	c = cmd_find(argv[1]);
	if (c == NULL)
		return err_set(e, ERR_USAGE, "unknown command '%s'", argv[1]);
	print_cmd_help(c, stdout);
	return 0;
}

int
cmd_getopt(int argc, char **argv, const char *shortopts,
    const struct option *longopts, int *argi, struct err *e)
{
	static const struct option none[] = { { NULL, 0, NULL, 0 } };
	char opts[64];
	int ch;

	/* Leading ':' to report missing arguments ourselves; '+' stops at
	 * the first positional argument. */
	snprintf(opts, sizeof(opts), "+:%s", shortopts);
	opterr = 0;
	ch = getopt_long(argc, argv, opts, longopts ? longopts : none, NULL);
	if (ch == -1) {
		*argi = optind;
		return -1;
	}
	if (ch == '?') {
		if (optopt)
			err_set(e, ERR_USAGE, "%s: unknown option '-%c'",
			    argv[0], optopt);
		else
			err_set(e, ERR_USAGE, "%s: unknown option '%s'",
			    argv[0], argv[optind - 1]);
		return '?';
	}
	if (ch == ':') {
		err_set(e, ERR_USAGE, "%s: option '%s' needs a value", argv[0],
		    argv[optind - 1]);
		return '?';
	}
	return ch;
}

int
cmd_check_args(const struct cmd_entry *c, int nargs, struct err *e)
{
	if (nargs < c->min_args)
		return err_set(e, ERR_USAGE, "%s: missing arguments", c->name);
	if (c->max_args >= 0 && nargs > c->max_args)
		return err_set(e, ERR_USAGE, "%s: too many arguments",
		    c->name);
	return 0;
}

int
opt_u64(const char *name, const char *val, uint64_t min, uint64_t max,
    uint64_t *out, struct err *e)
{
	const char *why;

	if (parse_u64(val, min, max, out, &why) < 0)
		return err_set(e, ERR_USAGE, "invalid %s '%s': %s", name, val,
		    why);
	return 0;
}

void
print_json(json_t *j)
{
	size_t flags = (options.json ? JSON_COMPACT : JSON_INDENT(2)) |
	    JSON_REAL_PRECISION(12);

	json_dumpf(j, stdout, flags | JSON_ENCODE_ANY);
	fputc('\n', stdout);
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

static int
finish_stdout(struct err *e)
{
	/* Not err_sys(): a full stdout is a failed command (1), not exit 6,
	 * which means the image ran out of space. */
	if (fflush(stdout) != 0 || ferror(stdout))
		return err_set(e, ERR_FAIL, "cannot write to standard output: "
		    "%s", strerror(errno ? errno : EIO));
	return 0;
}

static const struct cmd_entry help_entry = {
	"help", "[COMMAND]", "show help for a command", NULL, 0, 1, 0,
	cmd_help,
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
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct err e = ERR_INIT;
	const struct cmd_entry *c;
	uint64_t secs;
	int ch, rc;

	sanitize_stdio();
	signal(SIGPIPE, SIG_IGN);
	options.socket = getenv("SNAPCTL_SOCKET");
	options.dir = getenv("SNAPCTL_DIR");

	opterr = 0;
	while ((ch = getopt_long(argc, argv, "+:s:d:qvt:hV", longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 's':
			options.socket = optarg;
			break;
		case 'd':
			options.dir = optarg;
			break;
		case 'J':
			options.json = 1;
			break;
		case 'q':
			options.verbosity = -1;
			break;
		case 'v':
			if (options.verbosity < 0)
				options.verbosity = 0;
			options.verbosity++;
			break;
		case 't':
			if (opt_u64("--qmp-timeout", optarg, 1, 3600, &secs,
			    &e) < 0)
				goto usage_error;
			options.timeout_ms = (int)secs * 1000;
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
	    cmd_find(argv[optind]);
	if (c == NULL) {
		err_set(&e, ERR_USAGE, "unknown command '%s'", argv[optind]);
		goto usage_error;
	}
	if ((c->flags & CMD_NEEDS_SOCKET) && options.socket == NULL) {
		err_set(&e, ERR_USAGE, "%s: no QMP socket: use -s or "
		    "SNAPCTL_SOCKET", c->name);
		goto usage_error;
	}
	if ((c->flags & CMD_NEEDS_STORE) && options.dir == NULL) {
		err_set(&e, ERR_USAGE, "%s: no checkpoint store: use -d or "
		    "SNAPCTL_DIR", c->name);
		goto usage_error;
	}

	argc -= optind;
	argv += optind;
	optind = 1;
	rc = c->run(argc, argv, &e);
	if (finish_stdout(rc == 0 ? &e : NULL) < 0)
		rc = -1;
	if (rc == 0)
		return 0;
	if (!err_isset(&e))
		err_set(&e, ERR_FAIL, "%s failed", c->name);
	if (e.kind == ERR_USAGE)
		goto usage_error;
	if (e.qmp_class[0] != '\0')
		fprintf(stderr, "snapctl: %s: %s\n", e.qmp_class, e.msg);
	else
		fprintf(stderr, "snapctl: %s\n", e.msg);
	return err_exit_code(e.kind);

flush:
	if (finish_stdout(&e) == 0)
		return 0;
	fprintf(stderr, "snapctl: %s\n", e.msg);
	return 1;

usage_error:
	fprintf(stderr, "snapctl: %s\n", e.msg);
	fputs("Try 'snapctl --help' for more information.\n", stderr);
	return 2;
}
