/*
 * cmd_qmp.c - "snapctl qmp COMMAND [ARGS...]": one QMP command, its return
 * value printed as JSON.  Also the two pieces every QMP-speaking command
 * and the shell share: connecting with the global options, and turning
 * key=value words into a QMP arguments object.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "qmp.h"
#include "snapctl.h"
#include "util.h"

#define CONNECT_TIMEOUT_DEFAULT_MS 2000

int
cmd_connect_timeout(int *ms, struct err *e)
{
	const char *env = getenv("SNAPCTL_CONNECT_TIMEOUT");
	const char *why;
	uint64_t secs;

	*ms = CONNECT_TIMEOUT_DEFAULT_MS;
	if (env == NULL || *env == '\0')
		return 0;
	if (parse_u64(env, 0, 3600, &secs, &why) < 0)
		return err_set(e, ERR_USAGE, "invalid SNAPCTL_CONNECT_TIMEOUT "
		    "'%s': %s", env, why);
	*ms = (int)secs * 1000;
	return 0;
}

int
cmd_qmp_config(struct qmp_config *cfg, struct err *e)
{
	struct qmp_config init = QMP_CONFIG_INIT;

	*cfg = init;
	if (cmd_connect_timeout(&cfg->connect_ms, e) < 0)
		return -1;
	cfg->timeout_ms = options.timeout_ms;
	if (trace_enabled())
		cfg->trace = trace_qmp;
	return 0;
}

struct qmp *
cmd_qmp_connect(struct err *e)
{
	struct qmp_config cfg;

	if (cmd_qmp_config(&cfg, e) < 0)
		return NULL;
	return qmp_open_with(options.socket, &cfg, e);
}

/* A value: JSON when it parses as JSON, else the string itself. */
static json_t *
parse_value(const char *word, const char *val, struct err *e)
{
	json_error_t jerr;
	json_t *v;

	v = json_loads(val, JSON_DECODE_ANY, &jerr);
	if (v == NULL)
		v = json_string(val);
	if (v == NULL)
		err_set(e, ERR_USAGE, "'%s': not valid UTF-8", word);
	return v;
}

static int
valid_key(const char *key)
{
	size_t n = strlen(key);

	return n > 0 && key[0] != '.' && key[n - 1] != '.' &&
	    strstr(key, "..") == NULL;
}

/* Is a a dotted prefix of b ("a" of "a.b")? */
static int
key_prefix(const char *a, const char *b)
{
	size_t n = strlen(a);

	return strncmp(a, b, n) == 0 && b[n] == '.';
}

/* Store v (stolen) at the dotted path key, creating objects on the way. */
static void
set_path(json_t *obj, const char *key, json_t *v)
{
	const char *dot;
	json_t *child;
	char *seg;

	while ((dot = strchr(key, '.')) != NULL) {
		seg = xstrndup(key, (size_t)(dot - key));
		child = json_object_get(obj, seg);
		if (child == NULL) {
			child = json_object();
			json_object_set_new(obj, seg, child);
		}
		free(seg);
		obj = child;
		key = dot + 1;
	}
	json_object_set_new(obj, key, v);
}

int
cmd_qmp_args(int argc, char *const argv[], json_t **out, struct err *e)
{
	json_error_t jerr;
	json_t *args = NULL, *v;
	char **keys = NULL;
	const char *eq, *p;
	int i, j, rc = -1;

	*out = NULL;
	if (argc == 0)
		return 0;
	for (p = argv[0]; *p == ' ' || *p == '\t' || *p == '\n'; p++)
		;
	if (*p == '{') {
		if (argc > 1)
			return err_set(e, ERR_USAGE, "a JSON object must be "
			    "the only argument");
		args = json_loads(argv[0], 0, &jerr);
		if (args == NULL)
			return err_set(e, ERR_USAGE, "invalid JSON arguments: "
			    "%s (column %d)", jerr.text, jerr.column);
		if (!json_is_object(args)) {
			json_decref(args);
			return err_set(e, ERR_USAGE, "the arguments must be "
			    "a JSON object");
		}
		*out = args;
		return 0;
	}

	args = json_object();
	keys = xcalloc((size_t)argc, sizeof(*keys));
	for (i = 0; i < argc; i++) {
		eq = strchr(argv[i], '=');
		if (eq == NULL) {
			err_set(e, ERR_USAGE, "'%s': expected KEY=VALUE or "
			    "one JSON object", argv[i]);
			goto out;
		}
		keys[i] = xstrndup(argv[i], (size_t)(eq - argv[i]));
		if (!valid_key(keys[i])) {
			err_set(e, ERR_USAGE, "'%s': invalid key '%s'",
			    argv[i], keys[i]);
			goto out;
		}
		for (j = 0; j < i; j++) {
			if (strcmp(keys[j], keys[i]) == 0) {
				err_set(e, ERR_USAGE, "argument '%s' given "
				    "twice", keys[i]);
				goto out;
			}
			if (key_prefix(keys[j], keys[i]) ||
			    key_prefix(keys[i], keys[j])) {
				err_set(e, ERR_USAGE, "arguments '%s' and "
				    "'%s' conflict", keys[j], keys[i]);
				goto out;
			}
		}
		if ((v = parse_value(argv[i], eq + 1, e)) == NULL)
			goto out;
		set_path(args, keys[i], v);
	}
	*out = args;
	args = NULL;
	rc = 0;
out:
	for (i = 0; i < argc; i++)
		free(keys[i]);
	free(keys);
	json_decref(args);
	return rc;
}

static int
cmd_qmp(const struct cmd_args *a, struct err *e)
{
	struct err le = ERR_INIT;
	struct qmp *q = NULL;
	json_t *args = NULL, *ret = NULL;
	int rc = -1;

	/* Bad arguments are a usage error before any connection. */
	if (cmd_qmp_args(a->argc - 1, a->argv + 1, &args, &le) < 0)
		goto out;
	if ((q = cmd_qmp_connect(&le)) == NULL)
		goto out;
	ret = qmp_execute(q, a->argv[0], args, &le);
	args = NULL;
	if (ret == NULL)
		goto out;
	print_json(ret);
	rc = 0;
out:
	/* --json: a failure is a document too, as in shell --json. */
	if (rc < 0 && options.json) {
		if (!err_isset(&le))
			err_set(&le, ERR_FAIL, "qmp failed");
		print_error_json(&le);
	}
	err_propagate(e, &le, NULL);
	json_decref(ret);
	json_decref(args);
	qmp_close(q);
	return rc;
}

const struct cmd_entry cmd_qmp_entry = {
	"qmp", "COMMAND [ARGS...]",
	"run one QMP command and print its reply",
	"ARGS is one JSON object, or key=value pairs: values are parsed as\n"
	"JSON when they parse, else taken as strings; dotted keys nest\n"
	"(a.b=1 gives {\"a\":{\"b\":1}}).  --json: the reply in one line;\n"
	"a failure prints {\"error\": {\"class\", \"desc\"}}.",
	"", NULL, 1, -1, CMD_NEEDS_SOCKET | CMD_JSON, cmd_qmp,
};
