/*
 * jsonq - read one value out of a JSON document, for shell tests (no jq on
 * a fresh Debian).  Links jansson only.
 *
 *   jsonq FILE PATH      print the value at PATH: a string raw, anything
 *                        else as compact JSON ("null", "true", "3", ...)
 *   jsonq -k FILE PATH   print the keys of the object at PATH, sorted
 *   jsonq -n FILE PATH   print the number of elements at PATH (array or
 *                        object)
 *   jsonq -v FILE        only check that FILE is one JSON document
 *
 * FILE "-" is standard input; when it holds several lines each a document
 * (qmp-raw replies), the first is used.  PATH is dot-separated member names
 * and array indexes ("disks.0.overlay", "return.status"); "." is the root.
 * Exit status: 0 found, 1 no such path, 2 unreadable or invalid JSON.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

static int
cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static json_t *
walk(json_t *j, const char *path)
{
	char *copy, *part, *save = NULL, *end;
	long idx;

	if (strcmp(path, ".") == 0 || *path == '\0')
		return j;
	copy = strdup(path);
	for (part = strtok_r(copy, ".", &save); part != NULL && j != NULL;
	    part = strtok_r(NULL, ".", &save)) {
		if (json_is_array(j)) {
			idx = strtol(part, &end, 10);
			j = *end == '\0' && idx >= 0 ?
			    json_array_get(j, (size_t)idx) : NULL;
		} else if (json_is_object(j)) {
			j = json_object_get(j, part);
		} else {
			j = NULL;
		}
	}
	free(copy);
	return j;
}

int
main(int argc, char **argv)
{
	json_error_t jerr;
	json_t *doc, *v;
	const char *mode = "", *file, *path;
	const char *key;
	const char **keys;
	json_t *val;
	size_t n, i;
	char *s;
	FILE *f;

	if (argc > 1 && argv[1][0] == '-' && argv[1][1] != '\0') {
		mode = argv[1];
		argv++;
		argc--;
	}
	if (argc < 2 || (strcmp(mode, "-v") != 0 && argc != 3)) {
		fprintf(stderr, "usage: jsonq [-k|-n] FILE PATH | jsonq -v "
		    "FILE\n");
		return 2;
	}
	file = argv[1];
	path = argc > 2 ? argv[2] : ".";
	f = strcmp(file, "-") == 0 ? stdin : fopen(file, "r");
	if (f == NULL) {
		perror(file);
		return 2;
	}
	doc = json_loadf(f, JSON_DISABLE_EOF_CHECK, &jerr);
	if (f != stdin)
		fclose(f);
	if (doc == NULL) {
		fprintf(stderr, "jsonq: %s: line %d: %s\n", file, jerr.line,
		    jerr.text);
		return 2;
	}
	if (strcmp(mode, "-v") == 0) {
		json_decref(doc);
		return 0;
	}
	v = walk(doc, path);
	if (v == NULL) {
		json_decref(doc);
		return 1;
	}
	if (strcmp(mode, "-k") == 0) {
		if (!json_is_object(v)) {
			json_decref(doc);
			return 1;
		}
		n = json_object_size(v);
		keys = calloc(n ? n : 1, sizeof(*keys));
		i = 0;
		json_object_foreach(v, key, val)
			keys[i++] = key;
		qsort(keys, n, sizeof(*keys), cmp);
		for (i = 0; i < n; i++)
			printf("%s\n", keys[i]);
		free(keys);
	} else if (strcmp(mode, "-n") == 0) {
		printf("%zu\n", json_is_array(v) ? json_array_size(v) :
		    json_is_object(v) ? json_object_size(v) : 0);
	} else if (json_is_string(v)) {
		printf("%s\n", json_string_value(v));
	} else {
		s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY |
		    JSON_REAL_PRECISION(9));
		printf("%s\n", s);
		free(s);
	}
	json_decref(doc);
	return 0;
}
