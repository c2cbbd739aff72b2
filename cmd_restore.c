/*
 * cmd_restore.c - the "restore" command: options, and printing what was
 * done.  The work is restore.c's.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "restore.h"
#include "sig.h"
#include "snapctl.h"
#include "util.h"

enum {
	OPT_PAUSED = 256, OPT_DRY_RUN, OPT_OVERLAY_DIR, OPT_TIMEOUT, OPT_EXEC,
	OPT_EXEC_LOG, OPT_JSON, OPT_LAZY,
};

static void
print_summary(const json_t *r)
{
	const json_t *d, *t = json_object_get(r, "timings");
	const json_t *m = json_object_get(r, "memory");
	const char *status = json_string_value(json_object_get(r, "status"));
	size_t i;

	if (strcmp(status, "checked") == 0) {
		printf("checkpoint '%s' fits the QEMU at '%s' (%s, QEMU %s); "
		    "nothing was changed\n",
		    json_string_value(json_object_get(r, "name")),
		    json_string_value(json_object_get(r, "socket")),
		    json_string_value(json_object_get(r, "machine")),
		    json_string_value(json_object_get(r, "qemu")));
		return;
	}
	printf("restored '%s' into the QEMU at '%s'%s: guest %s\n",
	    json_string_value(json_object_get(r, "name")),
	    json_string_value(json_object_get(r, "socket")),
	    json_is_integer(json_object_get(r, "pid")) ? " (started by "
	    "snapctl)" : "", status);
	json_array_foreach(json_object_get(r, "disks"), i, d)
		printf("disk %s: '%s', the guest now writes to '%s'\n",
		    json_string_value(json_object_get(d, "device")),
		    json_string_value(json_object_get(d, "file")),
		    json_string_value(json_object_get(d, "overlay")));
	printf("checks %.2f s, load %.2f s, total %.2f s\n",
	    json_number_value(json_object_get(t, "check_s")),
	    json_number_value(json_object_get(t, "load_s")),
	    json_number_value(json_object_get(t, "total_s")));
	if (json_object_get(t, "memory_s") != NULL)
		printf("lazy: the guest could run after the load; all its "
		    "memory was in after %.2f s (%" JSON_INTEGER_FORMAT
		    " pages sent on its %" JSON_INTEGER_FORMAT " requests)\n",
		    json_number_value(json_object_get(t, "memory_s")),
		    json_integer_value(json_object_get(m, "pages_on_request")),
		    json_integer_value(json_object_get(m, "requests")));
}

int
cmd_restore(int argc, char **argv, struct err *e)
{
	static const struct option longopts[] = {
		{ "paused", no_argument, NULL, OPT_PAUSED },
		{ "lazy", no_argument, NULL, OPT_LAZY },
		{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
		{ "overlay-dir", required_argument, NULL, OPT_OVERLAY_DIR },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "exec", no_argument, NULL, OPT_EXEC },
		{ "exec-log", required_argument, NULL, OPT_EXEC_LOG },
		{ "json", no_argument, NULL, OPT_JSON },
		{ NULL, 0, NULL, 0 },
	};
	struct restore_opts o = RESTORE_OPTS_INIT;
	json_t *rep = NULL;
	uint64_t v;
	int ch, argi = 1, exec = 0, rc;

	while ((ch = cmd_getopt(argc, argv, "", longopts, &argi, e)) != -1) {
		switch (ch) {
		case OPT_PAUSED:
			o.paused = 1;
			break;
		case OPT_LAZY:
			o.lazy = 1;
			break;
		case OPT_DRY_RUN:
			o.dry_run = 1;
			break;
		case OPT_OVERLAY_DIR:
			o.overlay_dir = optarg;
			break;
		case OPT_TIMEOUT:
			if (opt_u64("--timeout", optarg, 1, 86400, &v, e) < 0)
				return -1;
			o.timeout_s = (int)v;
			break;
		case OPT_EXEC:
			exec = 1;
			break;
		case OPT_EXEC_LOG:
			o.exec_log = optarg;
			break;
		case OPT_JSON:
			options.json = 1;
			break;
		default:
			return -1;
		}
	}
	if (cmd_check_args(cmd_find("restore"), argc - argi, e) < 0)
		return -1;
	o.name = argv[argi++];
	/* After NAME: --exec [--exec-log FILE] -- QEMU ARGS... */
	while (argi < argc && strcmp(argv[argi], "--") != 0) {
		if (strcmp(argv[argi], "--exec") == 0) {
			exec = 1;
		} else if (strcmp(argv[argi], "--exec-log") == 0 &&
		    argi + 1 < argc) {
			o.exec_log = argv[++argi];
		} else if (strncmp(argv[argi], "--exec-log=", 11) == 0) {
			o.exec_log = argv[argi] + 11;
		} else {
			return err_set(e, ERR_USAGE, "restore: unexpected "
			    "argument '%s' (a QEMU command line goes after "
			    "--exec --)", argv[argi]);
		}
		argi++;
	}
	if (argi < argc)
		argi++;		/* the "--" */
	if (!exec && argi < argc)
		return err_set(e, ERR_USAGE, "restore: unexpected argument "
		    "'%s' (a QEMU command line goes after --exec --)",
		    argv[argi]);
	if (exec && argi == argc)
		return err_set(e, ERR_USAGE, "restore: --exec needs a QEMU "
		    "command line: restore NAME --exec -- qemu-system-x86_64 "
		    "ARGS...");
	if (o.exec_log != NULL && !exec)
		return err_set(e, ERR_USAGE, "--exec-log is for --exec");
	o.exec_argv = exec ? argv + argi : NULL;
	o.socket = options.socket;
	o.store = options.dir;
	o.qmp_timeout_ms = options.timeout_ms;
	if (cmd_connect_timeout(&o.connect_ms, e) < 0)
		return -1;
	if (trace_enabled())
		o.trace = trace_qmp;

	sig_catch();
	rc = restore_run(&o, &rep, e);
	if (rc == 0 && o.lazy && sig_caught())
		warnx_("%s came during the lazy restore; it finished "
		    "sending the guest's memory first",
		    sig_name(sig_caught()));
	sig_release();
	if (rc < 0)
		return -1;
	if (options.json)
		print_json(rep);
	else
		print_summary(rep);
	json_decref(rep);
	return 0;
}
