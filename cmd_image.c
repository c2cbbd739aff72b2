/*
 * cmd_image.c - the commands that work on a memory image file: compact (raw
 * stream in), export (stream out), verify, read (random access) and info.
 * With --json each prints one document, on failure too: the keys it has,
 * "ok" false and "error" the message that goes to stderr; read, and export
 * to standard output, write binary data there and refuse --json.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "export.h"
#include "imghash.h"
#include "ingest.h"
#include "save.h"
#include "sig.h"
#include "snapctl.h"
#include "stream.h"
#include "util.h"

#define READ_CHUNK (4u << 20)

/* A number in decimal or 0x-hex, whole. */
static int
parse_offset(const char *what, const char *s, uint64_t *out, struct err *e)
{
	unsigned long long v;
	char *end;

	errno = 0;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X') && s[2] != '\0')
		v = strtoull(s + 2, &end, 16);
	else if (s[0] >= '0' && s[0] <= '9')
		v = strtoull(s, &end, 10);
	else
		end = (char *)s;
	if (end == s || *end != '\0' || errno == ERANGE || s[0] == '-')
		return err_set(e, ERR_USAGE, "invalid %s '%s'", what, s);
	*out = v;
	return 0;
}

static void
progress_line(const char *what, uint64_t bytes, uint64_t start_ms, int final)
{
	char b[32];
	double secs = (double)(now_mono_ms() - start_ms) / 1000.0;

	format_bytes(bytes, b);
	fprintf(stderr, "\r%s %s in %.1f s (%.0f MiB/s)%s", what, b, secs,
	    secs > 0 ? (double)bytes / 1048576.0 / secs : 0.0,
	    final ? "\n" : "   ");
}

/*
 * With --json, the document of a failure: j with "ok" false and "error" the
 * message of le, which main() also prints on stderr.  Takes j.
 */
static void
print_failed(json_t *j, const struct err *le)
{
	if (options.json && j != NULL) {
		json_object_set_new(j, "ok", json_false());
		json_object_set_new(j, "error", json_string(le->msg));
		print_json(j);
	}
	json_decref(j);
}

/* le, set if the failure left it empty, into e; -1. */
static int
failed(struct err *e, struct err *le, const char *cmd)
{
	if (!err_isset(le))
		err_set(le, ERR_FAIL, "%s failed", cmd);
	return err_propagate(e, le, NULL);
}

enum { OPT_LEVEL = 'l', OPT_THREADS = 'T', OPT_PARENT = 'p' };

static const struct option compact_opts[] = {
	{ "level", required_argument, NULL, OPT_LEVEL },
	{ "threads", required_argument, NULL, OPT_THREADS },
	{ "parent", required_argument, NULL, OPT_PARENT },
	{ NULL, 0, NULL, 0 },
};

/*
 * compact --parent: the parent's image opened (its packs found beside it)
 * when it is a file in the output image's directory, as the image will
 * name it by its file name alone.  Misuse is ERR_USAGE.
 */
static struct img_reader *
parent_open(const char *parent, const char *image, struct err *e)
{
	char *pd = path_dirname(parent), *id = path_dirname(image);
	struct stat ps, ds, is;
	struct img_reader *r = NULL;

	if (stat(pd, &ds) < 0 || stat(id, &is) < 0 ||
	    ds.st_dev != is.st_dev || ds.st_ino != is.st_ino) {
		err_set(e, ERR_USAGE, "compact: parent '%s' is not in the "
		    "directory of '%s'", parent, image);
		goto out;
	}
	if (lstat(parent, &ps) < 0 || !S_ISREG(ps.st_mode)) {
		err_set(e, ERR_USAGE, "compact: parent '%s' is not an image "
		    "file", parent);
		goto out;
	}
	r = img_open_finder(parent, NULL, e);
out:
	free(pd);
	free(id);
	return r;
}

/*
 * Test hooks of the writer: SNAPCTL_TEST_CACHE_MIB (its chunk cache) and
 * SNAPCTL_TEST_SLIDE_MAX (img_opts.slide_max), so that a test on a real
 * stream can make frames die and the commit leave their holes.
 */
static int
writer_test_hooks(struct img_opts *o, struct err *e)
{
	const char *v = getenv("SNAPCTL_TEST_CACHE_MIB");
	uint64_t n;

	if (v != NULL && *v != '\0') {
		if (opt_u64("SNAPCTL_TEST_CACHE_MIB", v, 1, 65536, &n, e) < 0)
			return -1;
		o->cache_bytes = (size_t)n << 20;
	}
	v = getenv("SNAPCTL_TEST_SLIDE_MAX");
	if (v != NULL && *v != '\0' && opt_u64("SNAPCTL_TEST_SLIDE_MAX", v, 1,
	    UINT64_MAX, &o->slide_max, e) < 0)
		return -1;
	return 0;
}

static int
compact_run(const struct cmd_args *args, json_t **out, struct err *e)
{
	struct ingest_opts o = INGEST_OPTS_INIT;
	struct ingest *g = NULL;
	struct img_reader *base = NULL;
	struct img_stats st;
	struct pollfd pfd;
	char *name = NULL;
	uint64_t total, start, last = 0;
	const char *raw = args->argv[0], *image = args->argv[1];
	const char *parent = NULL;
	int i, fd = -1, rc = -1, progress;

	for (i = 0; i < args->nopts; i++) {
		if (args->opts[i].id == OPT_PARENT)
			parent = args->opts[i].arg;
		if (args->opts[i].id == OPT_LEVEL && opt_int("--level",
		    args->opts[i].arg, 1, 19, &o.img.level, e) < 0)
			return -1;
		if (args->opts[i].id == OPT_THREADS && opt_int("--threads",
		    args->opts[i].arg, 1, 256, &o.img.threads, e) < 0)
			return -1;
	}
	if (writer_test_hooks(&o.img, e) < 0)
		return -1;

	if (parent != NULL) {
		if ((base = parent_open(parent, image, e)) == NULL)
			return -1;
		o.img.base = base;
		o.img.base_hint = path_base(parent);
	}
	if (strcmp(raw, "-") == 0) {
		if (isatty(STDIN_FILENO)) {
			img_close(base);
			return err_set(e, ERR_USAGE, "compact: refusing to "
			    "read a migration stream from a terminal");
		}
		fd = STDIN_FILENO;
	} else {
		fd = open(raw, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			img_close(base);
			return err_sys(e, ERR_FAIL, "cannot open '%s'", raw);
		}
	}

	sig_catch();
	name = xasprintf("'%s'", raw);
	o.name = name;
	o.direct = 1;	/* a file or a program's pipe: it can wait */
	g = ingest_new(image, &o, e);
	if (g == NULL)
		goto out;
	progress = progress_enabled();
	start = now_mono_ms();
	if (ingest_start(g, fd, e) < 0)
		goto out;
	while (!ingest_finished(g)) {
		if (sig_caught())
			break;
		if (progress && now_mono_ms() - last >= 200) {
			last = now_mono_ms();
			progress_line("compact: read", ingest_bytes(g), start,
			    0);
		}
		pfd.fd = ingest_wake_fd(g);
		pfd.events = POLLIN;
		if (poll(&pfd, 1, 200) < 0 && errno != EINTR) {
			err_sys(e, ERR_FAIL, "poll");
			goto out;
		}
		ingest_wake_clear(g);
	}
	if (sig_caught()) {
		err_set(e, ERR_INTR, "compact: interrupted by %s; no "
		    "image written", sig_name(sig_caught()));
		goto out;
	}
	ingest_stop(g);
	if (ingest_result(g, e) < 0)
		goto out;
	total = ingest_bytes(g);
	if (ingest_commit(g, &st, e) < 0)
		goto out;
	if (progress)
		progress_line("compact: read", total, start, 1);
	*out = json_pack("{s:s, s:b, s:I, s:I, s:I, s:I, s:I, s:f, s:I, s:I,"
	    " s:I, s:I}",
	    "image", image,
	    "ok", 1,
	    "stream_bytes", (json_int_t)total,
	    "ram_bytes", (json_int_t)st.ram_bytes,
	    "pages", (json_int_t)st.pages,
	    "zero_pages", (json_int_t)st.zero_pages,
	    "file_bytes", (json_int_t)st.file_bytes,
	    "seconds", (double)(now_mono_ms() - start) / 1000.0,
	    "shared_chunks", (json_int_t)st.shared_chunks,
	    "shared_bytes", (json_int_t)st.shared_bytes,
	    "shared_elsewhere", (json_int_t)st.shared_elsewhere,
	    "hashed_only", (json_int_t)st.hashed_only);
	if (parent != NULL && *out != NULL)
		json_object_set_new(*out, "parent", json_string(parent));
	rc = 0;
out:
	sig_release();
	ingest_free(g);
	img_close(base);
	free(name);
	if (fd > STDIN_FILENO)
		close(fd);
	return rc;
}

static void
print_compacted(const json_t *j)
{
	char a[32], b[32];

	format_bytes((uint64_t)json_integer_value(json_object_get(j,
	    "stream_bytes")), a);
	format_bytes((uint64_t)json_integer_value(json_object_get(j,
	    "file_bytes")), b);
	printf("%s: %s stream -> %s image, %lld pages (%lld zero)\n",
	    json_str(j, "image"), a, b,
	    (long long)json_integer_value(json_object_get(j, "pages")),
	    (long long)json_integer_value(json_object_get(j, "zero_pages")));
	if (json_object_get(j, "parent") != NULL) {
		format_bytes((uint64_t)json_integer_value(json_object_get(j,
		    "shared_bytes")), a);
		printf("%s: shares %lld chunks (%s of frames) with '%s'\n",
		    json_str(j, "image"), (long long)json_integer_value(
		    json_object_get(j, "shared_chunks")), a,
		    json_str(j, "parent"));
	}
}

static int
cmd_compact(const struct cmd_args *a, struct err *e)
{
	struct err le = ERR_INIT;
	json_t *j = NULL;

	if (compact_run(a, &j, &le) < 0 || j == NULL) {
		json_decref(j);
		print_failed(json_pack("{s:s}", "image", a->argv[1]), &le);
		return failed(e, &le, "compact");
	}
	print_result(j, print_compacted);
	json_decref(j);
	return 0;
}

enum { OPT_STANDALONE = 256 };

/* A finder that finds nothing: a self-contained image needs none. */
static int
find_none(void *opaque, const char *image_path, const uint8_t id[IMG_ID_SIZE],
    uint64_t file_size, const char *hint, struct err *e)
{
	(void)opaque;
	(void)image_path;
	(void)id;
	(void)file_size;
	return err_set(e, ERR_FAIL, "it names pack '%s': not self-contained",
	    hint);
}

static const struct img_pack_finder no_packs = { find_none, NULL };

static const struct option export_opts[] = {
	{ "standalone", no_argument, NULL, OPT_STANDALONE },
	{ NULL, 0, NULL, 0 },
};

/*
 * export --standalone: IMAGE (its packs found beside it, as every reader
 * finds them) copied into a self-contained image OUT, frames copied, not
 * recompressed.
 */
static int
standalone_run(const char *image, const char *out, json_t **res,
    struct err *e)
{
	struct img_reader *r = NULL, *w = NULL;
	uint64_t start = now_mono_ms();
	int rc = -1;

	if (strcmp(out, "-") == 0)
		return err_set(e, ERR_USAGE, "export: --standalone writes an "
		    "image file, not to standard output");
	if ((r = img_open(image, e)) == NULL)
		return -1;
	if (img_write_standalone(r, out, e) < 0) {
		err_prefix(e, "export: ");
		goto out;
	}
	/* What was written opens by itself. */
	if ((w = img_open_finder(out, &no_packs, e)) == NULL) {
		err_prefix(e, "export: ");
		goto out;
	}
	*res = json_pack("{s:s, s:s, s:b, s:b, s:I, s:f}",
	    "image", image,
	    "output", out,
	    "ok", 1,
	    "standalone", 1,
	    "file_bytes", (json_int_t)img_meta(w)->file_bytes,
	    "seconds", (double)(now_mono_ms() - start) / 1000.0);
	rc = 0;
out:
	img_close(w);
	img_close(r);
	return rc;
}

static int
export_run(const struct cmd_args *a, json_t **res, struct err *e)
{
	struct atomic_file af = ATOMIC_FILE_INIT;
	struct img_reader *r = NULL;
	const char *image = a->argv[0], *out = a->argv[1];
	uint64_t bytes = 0, start = now_mono_ms();
	struct stat sb;
	int i, fd = -1, rc = -1;

	for (i = 0; i < a->nopts; i++)
		if (a->opts[i].id == OPT_STANDALONE)
			return standalone_run(image, out, res, e);
	r = img_open(image, e);
	if (r == NULL)
		return -1;
	sig_catch();
	if (strcmp(out, "-") == 0) {
		if (isatty(STDOUT_FILENO)) {
			err_set(e, ERR_USAGE, "export: refusing to write a "
			    "migration stream to a terminal");
			goto out;
		}
		fd = STDOUT_FILENO;
	} else if (stat(out, &sb) == 0 && (S_ISFIFO(sb.st_mode) ||
	    S_ISCHR(sb.st_mode) || S_ISSOCK(sb.st_mode))) {
		fd = open(out, O_WRONLY | O_CLOEXEC);
		if (fd < 0) {
			err_sys(e, ERR_FAIL, "cannot open '%s'", out);
			goto out;
		}
	} else {
		if (atomic_file_open(&af, out, 0600, e) < 0)
			goto out;
		fd = af.fd;
	}
	if (img_export(r, fd, out, &bytes, e) < 0) {
		err_prefix(e, "export: ");
		goto out;
	}
	if (af.tmp != NULL && atomic_file_commit(&af, 1, e) < 0)
		goto out;
	*res = json_pack("{s:s, s:s, s:b, s:I, s:f}",
	    "image", image,
	    "output", out,
	    "ok", 1,
	    "stream_bytes", (json_int_t)bytes,
	    "seconds", (double)(now_mono_ms() - start) / 1000.0);
	rc = 0;
out:
	sig_release();
	if (af.tmp == NULL && fd > STDOUT_FILENO)
		close(fd);
	atomic_file_release(&af);
	img_close(r);
	return rc;
}

static void
print_exported(const json_t *j)
{
	if (json_is_true(json_object_get(j, "standalone")))
		verbose("export: wrote a self-contained image of %lld bytes "
		    "to '%s'", (long long)json_integer_value(json_object_get(j,
		    "file_bytes")), json_str(j, "output"));
	else
		verbose("export: wrote %lld bytes to '%s'", (long long)
		    json_integer_value(json_object_get(j, "stream_bytes")),
		    json_str(j, "output"));
}

static int
cmd_export(const struct cmd_args *a, struct err *e)
{
	struct err le = ERR_INIT;
	json_t *j = NULL;

	/* Standard output is the stream: no room for a document. */
	if (options.json && strcmp(a->argv[1], "-") == 0)
		return err_set(e, ERR_USAGE, "export: --json needs an OUT "
		    "file: the stream goes to standard output");
	if (export_run(a, &j, &le) < 0 || j == NULL) {
		json_decref(j);
		print_failed(json_pack("{s:s, s:s}", "image", a->argv[0],
		    "output", a->argv[1]), &le);
		return failed(e, &le, "export");
	}
	print_result(j, print_exported);
	json_decref(j);
	return 0;
}

static void
print_ok(const json_t *j)
{
	printf("%s: ok\n", json_str(j, "image"));
}

int
cmd_image_verify(const char *path, struct err *e)
{
	struct err le = ERR_INIT;
	struct img_reader *r;
	json_t *j;
	int rc = -1;

	r = img_open(path, &le);
	if (r != NULL) {
		rc = img_verify_parallel(r, path, 0, &le);
		if (rc < 0)
			err_prefix(&le, "'%s': ", path);
		img_close(r);
	}
	j = json_pack("{s:s}", "image", path);
	if (rc < 0) {
		print_failed(j, &le);
		return failed(e, &le, "verify");
	}
	json_object_set_new(j, "ok", json_true());
	print_result(j, print_ok);
	json_decref(j);
	return 0;
}

/* BLOCK is a block name, or its index in the block table. */
static int
find_block(const struct img_meta *m, const char *s, uint32_t *out,
    struct err *e)
{
	uint64_t idx;
	const char *why;

	if (img_find_block(m, s, out) == 0)
		return 0;
	if (parse_u64(s, 0, m->nblocks ? m->nblocks - 1 : 0, &idx, &why) == 0 &&
	    m->nblocks > 0) {
		*out = (uint32_t)idx;
		return 0;
	}
	return err_set(e, ERR_FAIL, "no RAM block '%s' in the image", s);
}

static int
cmd_read(const struct cmd_args *a, struct err *e)
{
	struct img_reader *r = NULL;
	const struct img_meta *m;
	uint64_t off, len, size;
	uint8_t *buf = NULL;
	uint32_t block = 0;
	size_t n;
	int rc = -1;

	if (options.json)
		return err_set(e, ERR_USAGE, "read: no --json: it writes raw "
		    "guest bytes to standard output");
	if (parse_offset("OFFSET", a->argv[2], &off, e) < 0 ||
	    parse_offset("LENGTH", a->argv[3], &len, e) < 0)
		return -1;
	if (isatty(STDOUT_FILENO))
		return err_set(e, ERR_USAGE, "read: refusing to write guest "
		    "memory to a terminal");
	r = img_open(a->argv[0], e);
	if (r == NULL)
		return -1;
	m = img_meta(r);
	if (find_block(m, a->argv[1], &block, e) < 0)
		goto out;
	size = m->blocks[block].used_length;
	if (off > size || len > size - off) {
		err_set(e, ERR_FAIL, "range 0x%llx+0x%llx is outside block "
		    "'%s' (0x%llx bytes)", (unsigned long long)off,
		    (unsigned long long)len, m->blocks[block].name,
		    (unsigned long long)size);
		goto out;
	}
	buf = xmalloc(READ_CHUNK);
	while (len > 0) {
		n = len < READ_CHUNK ? (size_t)len : READ_CHUNK;
		if (img_read_at(r, block, off, n, buf, e) < 0)
			goto out;
		if (fwrite(buf, 1, n, stdout) != n) {
			err_sys(e, ERR_FAIL, "cannot write to standard output");
			goto out;
		}
		off += n;
		len -= n;
	}
	rc = 0;
out:
	free(buf);
	img_close(r);
	return rc;
}

static uint64_t
allocated_bytes(const char *path)
{
	struct stat sb;

	if (stat(path, &sb) < 0)
		return 0;
	return (uint64_t)sb.st_blocks * 512u;
}

/*
 * The packs whose frames an image reads (pack table entries some index
 * entry names): [{pack, hint, id, file_bytes, chunks}].
 */
static json_t *
image_packs_json(const struct img_reader *r)
{
	const struct img_meta *m = img_meta(r);
	struct img_pack_info pi;
	char hex[IMG_ID_HEX];
	json_t *a = json_array();
	uint32_t p;

	for (p = 1; p <= m->npacks; p++) {
		img_pack_info(r, p, &pi);
		if (pi.refs == 0)
			continue;
		img_id_hex(pi.id, hex);
		json_array_append_new(a, json_pack("{s:I, s:s, s:s, s:I, s:I}",
		    "pack", (json_int_t)p, "hint", pi.hint, "id", hex,
		    "file_bytes", (json_int_t)pi.file_size,
		    "chunks", (json_int_t)pi.refs));
	}
	return a;
}

/* "shared: ..." and a line per pack an image reads from. */
static void
print_image_packs(const struct img_reader *r)
{
	const struct img_meta *m = img_meta(r);
	struct img_pack_info pi;
	char a[32], b[32], hex[IMG_ID_HEX];
	uint32_t p;

	format_bytes(m->own_bytes, a);
	format_bytes(m->shared_bytes, b);
	printf("shared:     %llu chunks, %s of frames in other images "
	    "(own %s)\n", (unsigned long long)m->shared_chunks, b, a);
	for (p = 1; p <= m->npacks; p++) {
		img_pack_info(r, p, &pi);
		if (pi.refs == 0)
			continue;
		img_id_hex(pi.id, hex);
		printf("  pack %u '%s' (image %s): %llu chunks\n", p, pi.hint,
		    hex, (unsigned long long)pi.refs);
	}
}

int
cmd_image_info(const char *path, struct err *e)
{
	struct err le = ERR_INIT;
	struct img_reader *r;
	const struct img_meta *m;
	json_t *j, *blocks;
	uint64_t alloc, own;
	char idhex[IMG_ID_HEX];
	const char *hash;
	double ratio;
	size_t i;

	r = img_open(path, &le);
	if (r == NULL) {
		print_failed(json_pack("{s:s}", "image", path), &le);
		return failed(e, &le, "info");
	}
	m = img_meta(r);
	alloc = allocated_bytes(path);
	img_id_hex(m->id, idhex);
	/* Version 1 has no chunk hashes. */
	hash = m->version >= IMG_VERSION_2 ?
	    img_hash_name(img_hash_algo_of(m->flags)) : NULL;
	/* A version 1 image holds all its frames. */
	own = m->version >= IMG_VERSION_2 ? m->own_bytes : m->data_bytes;
	ratio = m->file_bytes ? (double)m->ram_bytes / (double)m->file_bytes :
	    0.0;
	if (options.json) {
		blocks = json_array();
		for (i = 0; i < m->nblocks; i++)
			json_array_append_new(blocks, json_pack("{s:s, s:I}",
			    "name", m->blocks[i].name,
			    "bytes", (json_int_t)m->blocks[i].used_length));
		j = json_pack("{s:s, s:i, s:s?, s:s?, s:I, s:I, s:o, s:s, s:o, "
		    "s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:b, s:b, s:b}",
		    "image", path,
		    "format_version", (int)m->version,
		    "image_id", m->version >= IMG_VERSION_2 ? idhex : NULL,
		    "chunk_hash", hash,
		    "own_bytes", (json_int_t)own,
		    "shared_bytes", (json_int_t)m->shared_bytes,
		    "packs", image_packs_json(r),
		    "machine", m->machine,
		    "blocks", blocks,
		    "ram_bytes", (json_int_t)m->ram_bytes,
		    "pages", (json_int_t)m->pages,
		    "zero_pages", (json_int_t)m->zero_pages,
		    "data_bytes", (json_int_t)m->data_bytes,
		    "tail_bytes", (json_int_t)m->tail_bytes,
		    "file_bytes", (json_int_t)m->file_bytes,
		    "allocated_bytes", (json_int_t)alloc,
		    "ratio", ratio,
		    "switchover_start",
		    (m->flags & IMG_F_SWITCHOVER_START) != 0,
		    "background", (m->flags & IMG_F_NO_END) != 0,
		    "frame_crcs", (m->flags & IMG_F_FRAME_CRCS) != 0);
		print_json(j);
		json_decref(j);
	} else {
		char a[32], b[32], c[32];

		printf("image:      %s (format %u)\n", path, m->version);
		if (m->version >= IMG_VERSION_2)
			printf("id:         %s (chunk hashes: %s)\n", idhex,
			    hash);
		printf("machine:    %s\n", m->machine);
		format_bytes(m->ram_bytes, a);
		printf("ram:        %s in %zu blocks\n", a, m->nblocks);
		for (i = 0; i < m->nblocks; i++) {
			format_bytes(m->blocks[i].used_length, a);
			printf("  %-32s %10s\n", m->blocks[i].name, a);
		}
		printf("pages:      %llu (%llu zero)\n",
		    (unsigned long long)m->pages,
		    (unsigned long long)m->zero_pages);
		format_bytes(m->data_bytes, a);
		format_bytes(m->file_bytes, b);
		format_bytes(alloc, c);
		printf("compressed: %s of pages, file %s, allocated %s\n", a,
		    b, c);
		printf("ratio:      %.1f:1\n", ratio);
		if (m->shared_chunks > 0)
			print_image_packs(r);
	}
	img_close(r);
	return 0;
}

const struct cmd_entry cmd_compact_entry = {
	"compact", "[-l LEVEL] [-T THREADS] [-p PARENT] RAW IMAGE",
	"import a raw QEMU migration stream into a compact image",
	"  -l, --level N     zstd level (1-19, default 1)\n"
	"  -T, --threads N   compression threads (default: online CPUs)\n"
	"  -p, --parent P    share the frames of chunks unchanged since image\n"
	"                    P, a file in IMAGE's directory (needed to read\n"
	"                    IMAGE later)\n"
	"RAW is a file or - for standard input.  --json: {image, ok,\n"
	"stream_bytes, ram_bytes, pages, zero_pages, file_bytes, seconds,\n"
	"shared_chunks, shared_bytes, shared_elsewhere, hashed_only[, parent]}.",
	"l:T:p:", compact_opts, 2, 2, CMD_JSON, cmd_compact,
};

const struct cmd_entry cmd_export_entry = {
	"export", "[--standalone] IMAGE OUT",
	"regenerate a QEMU migration stream from an image",
	"  --standalone   write a self-contained image instead: no packs,\n"
	"                 frames copied (an image of a store checkpoint\n"
	"                 that shares frames with others, taken out)\n"
	"OUT is a file or - for standard output (not a terminal).\n"
	"--json (OUT a file): {image, output, ok, stream_bytes, seconds};\n"
	"with --standalone {image, output, ok, standalone, file_bytes,\n"
	"seconds}.",
	"", export_opts, 2, 2, CMD_JSON, cmd_export,
};

const struct cmd_entry cmd_read_entry = {
	"read", "IMAGE BLOCK OFFSET LENGTH",
	"write raw guest bytes of a RAM block range to stdout",
	"OFFSET and LENGTH are bytes (decimal, or hex with 0x).  No\n"
	"--json: the bytes go to standard output.",
	"", NULL, 4, 4, 0, cmd_read,
};
