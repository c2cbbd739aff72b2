/*
 * churn - the test guest's self-verifying workload.
 *
 * It fills memory with pages whose content is a pure function of (page
 * index, generation), keeps rewriting them (bumping generations), writes
 * ordered records to a disk, and regularly checks that memory and disk hold
 * exactly what its own bookkeeping says.  A guest restored from a
 * consistent checkpoint keeps printing "ok"; a lost page write, a stale
 * page, or a disk that does not match memory prints FAIL.
 *
 * Build: gcc -static -O2 -Wall -Wextra -Werror -o churn churn.c
 *
 * PARAMETERS come from the kernel command line (/proc/cmdline) as
 * churn.NAME=VALUE; when churn is run with arguments, only the arguments
 * are used, as NAME=VALUE or churn.NAME=VALUE (for trying it on a host).
 *
 *   churn.mb=160        MiB of memory to fill and verify (4 KiB pages)
 *   churn.hot=12        percent of the pages in the hot set
 *   churn.rate=5000     hot-page writes per second; 0 = as fast as it can
 *                       (the hot set is rewritten round-robin)
 *   churn.cold=20       cold-page writes per second (random pages outside
 *                       the hot set); 0 = none
 *   churn.random=30     percent of each page's 64-byte blocks that are
 *                       random; the rest repeat a word (zstd -1 of the whole
 *                       memory is then about 3:1)
 *   churn.verify=2000   ms between full self-verifications; 0 = never
 *   churn.tick=1000     ms between TICK lines
 *   churn.disk=PATH     block device (or file) for records; unset = no disk
 *   churn.diskrate=20   records per second; 0 = as fast as it can
 *   churn.diskevery=0   a record after every this many page writes,
 *                       synchronously in the page-writing loop (the block
 *                       stress of issue 15: with rate=0 and 2000, a
 *                       4 KiB O_DIRECT write in flight most of the time);
 *                       diskrate is then ignored; 0 = by diskrate
 *   churn.diskslots=1024  records in the ring (4 KiB each; clamped to the
 *                       device size)
 *   churn.diskoff=0     byte offset of the ring on the device (4 KiB
 *                       multiple)
 *   churn.secs=0        exit after this many seconds; 0 = run forever
 *   churn.corrupt=0     self-test of the verifier: after this many ms,
 *                       damage one memory page (and one disk record) behind
 *                       its own back, once; the next checks must FAIL
 *
 * OUTPUT, one line each on stdout (the serial console in the guest):
 *
 *   CHURN READY pages=N hot=H rate=R cold=C disk=PATH|none slots=K
 *         diskevery=E run=RUN uptime_ms=U
 *   CHURN TICK counter=C gen_sum=S disk_seq=D uptime_ms=U run=RUN
 *   CHURN VERIFY ok pages=N counter=C gen_sum=S ms=T
 *   CHURN VERIFY FAIL page=P expected_gen=G found_gen=H found_index=I
 *         offset=O kind=stale|ahead|garbage bad_pages=B counter=C
 *   CHURN BADPAGE page=P expected_gen=G found_gen=H kind=...  (<= 8 lines,
 *         before the FAIL line)
 *   CHURN VERIFY FAIL gen_sum expected=S found=S2 counter=C  (the generation
 *         table disagrees with the running sum)
 *   CHURN DISKVERIFY ok seq=D next=absent|old|written slots=K
 *   CHURN DISKVERIFY FAIL seq=D slot=J expected=E found=F
 *   CHURN ERROR what...  (setup problems; churn keeps running if it can)
 *
 * counter counts page writes since this process started: it only grows, so
 * a guest restored from a checkpoint continues from (at least) the last
 * value printed before the checkpoint, while a rebooted guest restarts near
 * 0 with a different run (a random 64-bit id chosen at start).  gen_sum is
 * the sum of all generations (mod 2^64).  disk_seq is the last record whose
 * write completed.
 *
 * Verification runs between two writes of the single-threaded loop, so no
 * page update or disk write of churn's own is in flight while it checks.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096u
#define WORDS (PAGE / 8)
#define BLOCK_WORDS 8u			/* 64-byte blocks */
#define HDR_WORDS 4u
#define PAGE_MAGIC UINT64_C(0x454741504e524843)	/* "CHRNPAGE" */
#define REC_MAGIC UINT64_C(0x434552204e524843)	/* "CHRN REC" */
#define REC PAGE
#define MAX_BAD_LINES 8

struct params {
	uint64_t mb, hot, rate, cold, random, verify, tick;
	uint64_t diskrate, diskevery, diskslots, diskoff, secs, corrupt;
	char disk[256];
};

static struct params P = {
	.mb = 160, .hot = 12, .rate = 5000, .cold = 20, .random = 30,
	.verify = 2000, .tick = 1000, .diskrate = 20, .diskslots = 1024,
};

static uint64_t *mem;		/* npages pages */
static uint32_t *gen;		/* the generation table, its own pages */
static uint64_t npages, nhot;
static uint64_t gen_sum;	/* running sum of gen[] */
static uint64_t counter;	/* page writes since start */
static uint64_t run_id;
static uint64_t t0_ns;

static int disk_fd = -1;
static uint64_t nslots;
static uint64_t disk_seq;	/* last record whose write completed */
static uint64_t *recbuf;	/* one record, aligned for O_DIRECT */
static uint64_t *ringbuf;	/* RING_CHUNK records */
#define RING_CHUNK 64u

/* ---- output ---------------------------------------------------------- */

__attribute__((format(printf, 1, 2)))
static void say(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;
	size_t off = 0;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	while (off < (size_t)n) {
		ssize_t w = write(1, buf + off, (size_t)n - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		off += (size_t)w;
	}
}

/* ---- time ------------------------------------------------------------ */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t uptime_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000u),
			       .tv_nsec = (long)(ns % 1000000000u) };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* ---- parameters ------------------------------------------------------ */

static void set_param(const char *kv)
{
	static const struct {
		const char *name;
		uint64_t *val;
	} nums[] = {
		{ "mb", &P.mb }, { "hot", &P.hot }, { "rate", &P.rate },
		{ "cold", &P.cold }, { "random", &P.random },
		{ "verify", &P.verify }, { "tick", &P.tick },
		{ "diskrate", &P.diskrate }, { "diskevery", &P.diskevery },
		{ "diskslots", &P.diskslots },
		{ "diskoff", &P.diskoff }, { "secs", &P.secs },
		{ "corrupt", &P.corrupt },
	};
	const char *eq;
	size_t klen, i;

	if (strncmp(kv, "churn.", 6) == 0)
		kv += 6;
	eq = strchr(kv, '=');
	if (!eq)
		return;
	klen = (size_t)(eq - kv);
	if (klen == 4 && strncmp(kv, "disk", 4) == 0) {
		snprintf(P.disk, sizeof(P.disk), "%s", eq + 1);
		return;
	}
	for (i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
		if (strlen(nums[i].name) == klen &&
		    strncmp(kv, nums[i].name, klen) == 0) {
			char *end;
			unsigned long long v;

			errno = 0;
			v = strtoull(eq + 1, &end, 0);
			if (errno || end == eq + 1 || *end)
				say("CHURN ERROR bad value in %s", kv);
			else
				*nums[i].val = v;
			return;
		}
	}
	say("CHURN ERROR unknown parameter %s", kv);
}

static void read_cmdline(void)
{
	char buf[4096], *p, *save = NULL;
	ssize_t n;
	int fd = open("/proc/cmdline", O_RDONLY);

	if (fd < 0)
		return;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = 0;
	for (p = strtok_r(buf, " \t\n", &save); p;
	     p = strtok_r(NULL, " \t\n", &save))
		if (strncmp(p, "churn.", 6) == 0)
			set_param(p);
}

/* ---- page pattern ---------------------------------------------------- */

static inline uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= UINT64_C(0xbf58476d1ce4e5b9);
	x ^= x >> 27;
	x *= UINT64_C(0x94d049bb133111eb);
	x ^= x >> 31;
	return x;
}

/* Compressible filler words: text-like 8-byte words. */
static const char fill_words[16][9] = {
	"snapctl ", "checkpnt", "qemu-mig", "memory  ", "pagedata",
	"zstd-ok ", "restore ", "guest-vm", "live-ram", "dirty-pg",
	"compact ", "verify  ", "stream  ", "counter ", "churning", "--------",
};

static uint64_t fill_word(unsigned k)
{
	uint64_t w;

	memcpy(&w, fill_words[k & 15], 8);
	return w;
}

/*
 * The expected content of page `idx` at generation `g`, one 64-bit word at
 * a time: words 0..3 are the header (magic, index, generation, a check
 * word); then per 64-byte block either random words (P.random percent of
 * blocks) or one text word repeated.
 */
struct pat {
	uint64_t seed, x;
	unsigned rnd_thresh;
};

static inline void pat_init(struct pat *s, uint64_t idx, uint64_t g)
{
	s->seed = mix64(idx * UINT64_C(0x9e3779b97f4a7c15) ^ (g << 40) ^ g ^
			UINT64_C(0x636875726e));
	s->rnd_thresh = (unsigned)(P.random * 256 / 100);
}

static inline uint64_t pat_block_kind(const struct pat *s, unsigned b)
{
	return mix64(s->seed + b);
}

/* Fill page p with pattern(idx, g). */
static void page_write(uint64_t *p, uint64_t idx, uint64_t g)
{
	struct pat s;
	unsigned b, w;

	pat_init(&s, idx, g);
	for (b = 0; b < WORDS / BLOCK_WORDS; b++) {
		uint64_t r = pat_block_kind(&s, b);
		uint64_t *q = p + b * BLOCK_WORDS;

		if ((r & 0xff) < s.rnd_thresh) {
			uint64_t x = r | 1;

			for (w = 0; w < BLOCK_WORDS; w++) {
				x ^= x >> 12;
				x ^= x << 25;
				x ^= x >> 27;
				q[w] = x * UINT64_C(0x2545f4914f6cdd1d);
			}
		} else {
			uint64_t f = fill_word((unsigned)(r >> 8));

			for (w = 0; w < BLOCK_WORDS; w++)
				q[w] = f;
		}
	}
	p[0] = PAGE_MAGIC;
	p[1] = idx;
	p[2] = g;
	p[3] = mix64(PAGE_MAGIC ^ idx ^ (g << 32));
}

/* 0 if page p equals pattern(idx, g), else 1 + the first differing word. */
static unsigned page_check(const uint64_t *p, uint64_t idx, uint64_t g)
{
	struct pat s;
	unsigned b, w;

	if (p[0] != PAGE_MAGIC)
		return 1;
	if (p[1] != idx)
		return 2;
	if (p[2] != g)
		return 3;
	if (p[3] != mix64(PAGE_MAGIC ^ idx ^ (g << 32)))
		return 4;
	pat_init(&s, idx, g);
	for (b = 0; b < WORDS / BLOCK_WORDS; b++) {
		uint64_t r = pat_block_kind(&s, b);
		const uint64_t *q = p + b * BLOCK_WORDS;
		unsigned w0 = b == 0 ? HDR_WORDS : 0;

		if ((r & 0xff) < s.rnd_thresh) {
			uint64_t x = r | 1;

			for (w = 0; w < BLOCK_WORDS; w++) {
				x ^= x >> 12;
				x ^= x << 25;
				x ^= x >> 27;
				if (w >= w0 &&
				    q[w] != x * UINT64_C(0x2545f4914f6cdd1d))
					return b * BLOCK_WORDS + w + 1;
			}
		} else {
			uint64_t f = fill_word((unsigned)(r >> 8));

			for (w = w0; w < BLOCK_WORDS; w++)
				if (q[w] != f)
					return b * BLOCK_WORDS + w + 1;
		}
	}
	return 0;
}

static void disk_write_next(void);

static void write_page(uint64_t i)
{
	uint32_t g = gen[i] + 1;

	page_write(mem + i * WORDS, i, g);
	gen[i] = g;
	gen_sum++;
	counter++;
	if (P.diskevery && disk_fd >= 0 && counter % P.diskevery == 0)
		disk_write_next();
}

/* ---- disk records ---------------------------------------------------- */

/*
 * Record `seq` of run `run` (4 KiB, slot (seq-1) % nslots):
 * word 0 magic, 1 run, 2 seq, 3 slot, 4 checksum of the whole record with
 * word 4 zero, 5.. payload derived from (run, seq).  The content is a pure
 * function of (run, seq), so rewriting a record is idempotent.
 */
static uint64_t rec_sum(const uint64_t *r)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);
	unsigned w;

	for (w = 0; w < REC / 8; w++)
		h = (h ^ (w == 4 ? 0 : r[w])) * UINT64_C(0x100000001b3);
	return mix64(h);
}

static void rec_make(uint64_t *r, uint64_t run, uint64_t seq)
{
	unsigned w;

	r[0] = REC_MAGIC;
	r[1] = run;
	r[2] = seq;
	r[3] = (seq - 1) % nslots;
	r[4] = 0;
	for (w = 5; w < REC / 8; w++)
		r[w] = mix64(run ^ (seq << 20) ^ w);
	r[4] = rec_sum(r);
}

static int disk_open(void)
{
	struct stat st;
	uint64_t size = 0;

	disk_fd = open(P.disk, O_RDWR | O_DIRECT | O_DSYNC);
	if (disk_fd < 0 && errno == EINVAL)	/* e.g. tmpfs on a host */
		disk_fd = open(P.disk, O_RDWR | O_DSYNC);
	if (disk_fd < 0) {
		say("CHURN ERROR cannot open disk %s: %s", P.disk,
		    strerror(errno));
		return -1;
	}
	if (fstat(disk_fd, &st) == 0 && S_ISBLK(st.st_mode)) {
		if (ioctl(disk_fd, BLKGETSIZE64, &size) < 0)
			size = 0;
	} else if (S_ISREG(st.st_mode)) {
		size = (uint64_t)st.st_size;
	}
	if (P.diskoff % REC || size <= P.diskoff) {
		say("CHURN ERROR disk %s: size %" PRIu64 " offset %" PRIu64,
		    P.disk, size, P.diskoff);
		close(disk_fd);
		disk_fd = -1;
		return -1;
	}
	nslots = (size - P.diskoff) / REC;
	if (nslots > P.diskslots)
		nslots = P.diskslots;
	if (nslots < 2) {
		say("CHURN ERROR disk %s too small", P.disk);
		close(disk_fd);
		disk_fd = -1;
		return -1;
	}
	if (posix_memalign((void **)&recbuf, PAGE, REC) ||
	    posix_memalign((void **)&ringbuf, PAGE, REC * RING_CHUNK)) {
		say("CHURN ERROR out of memory");
		exit(1);
	}
	return 0;
}

static void disk_write_next(void)
{
	uint64_t seq = disk_seq + 1;
	off_t off = (off_t)(P.diskoff + ((seq - 1) % nslots) * REC);
	ssize_t w;

	rec_make(recbuf, run_id, seq);
	do
		w = pwrite(disk_fd, recbuf, REC, off);
	while (w < 0 && errno == EINTR);
	if (w != (ssize_t)REC) {
		say("CHURN ERROR disk write seq=%" PRIu64 ": %s", seq,
		    w < 0 ? strerror(errno) : "short write");
		sleep_ns(1000000000u);
		return;
	}
	/* O_DSYNC: the record is stable once pwrite returns. */
	disk_seq = seq;
}

/*
 * Check that the ring holds exactly what memory says was written: with
 * L = disk_seq (the last write that completed, as recorded in memory),
 *  - every slot whose latest seq s <= L (of this run) must hold record s,
 *    byte for byte;
 *  - slots no seq <= L of this run reached must hold no record of this run
 *    (zeros, or records of another run: a previous boot);
 *  - the slot of L+1 may hold either of two states: what it held before
 *    (record L+1-nslots, or no record of this run), or exactly record L+1.
 * Why the second state: memory and disk of a checkpoint are captured at one
 * instant T.  If churn was inside pwrite() of record L+1 at T, memory says
 * L; the request may or may not have reached the disk before T (QEMU drains
 * requests it already started, queued ones are replayed after restore).
 * Either way the guest finishes the write after the restore.  The same
 * holds if the disk was captured just after that write completed while
 * memory still said L.  Since records are a pure function of (run, seq),
 * rewriting L+1 is harmless.  Anything else (a hole, a record newer than
 * L+1, a torn or corrupt record of this run) means disk and memory do not
 * belong to the same instant.
 */
static void disk_verify(void)
{
	uint64_t L = disk_seq, jn = L % nslots, j, base;
	const char *next = "absent";
	uint64_t *want = NULL;

	if (posix_memalign((void **)&want, PAGE, REC)) {
		say("CHURN ERROR out of memory");
		return;
	}
	for (base = 0; base < nslots; base += RING_CHUNK) {
		uint64_t n = nslots - base < RING_CHUNK ? nslots - base
							 : RING_CHUNK;
		ssize_t r;

		do
			r = pread(disk_fd, ringbuf, n * REC,
				  (off_t)(P.diskoff + base * REC));
		while (r < 0 && errno == EINTR);
		if (r != (ssize_t)(n * REC)) {
			say("CHURN DISKVERIFY FAIL seq=%" PRIu64
			    " read error at slot %" PRIu64 ": %s",
			    L, base, r < 0 ? strerror(errno) : "short read");
			goto out;
		}
		for (j = base; j < base + n; j++) {
			const uint64_t *rec = ringbuf + (j - base) * (REC / 8);
			/* latest seq <= L with slot j, or 0 */
			uint64_t s_exp = L >= j + 1
				? j + 1 + (L - (j + 1)) / nslots * nslots : 0;
			int ours = rec[0] == REC_MAGIC && rec[1] == run_id;
			int matches_exp = 0;
			char found[96];

			if (s_exp) {
				rec_make(want, run_id, s_exp);
				matches_exp = memcmp(rec, want, REC) == 0;
			} else {
				matches_exp = !ours;
			}
			if (matches_exp) {
				if (j == jn)
					next = s_exp ? "old" : "absent";
				continue;
			}
			if (j == jn) {
				rec_make(want, run_id, L + 1);
				if (memcmp(rec, want, REC) == 0) {
					next = "written";
					continue;
				}
			}
			if (!ours)
				snprintf(found, sizeof(found), "%s",
					 rec[0] == REC_MAGIC ? "foreign"
							     : "absent");
			else if (rec_sum(rec) != rec[4])
				snprintf(found, sizeof(found),
					 "corrupt(seq=%" PRIu64 ")", rec[2]);
			else
				snprintf(found, sizeof(found), "%" PRIu64,
					 rec[2]);
			say("CHURN DISKVERIFY FAIL seq=%" PRIu64 " slot=%" PRIu64
			    " expected=%" PRIu64 "%s found=%s counter=%" PRIu64,
			    L, j, s_exp, j == jn ? "|next" : "", found,
			    counter);
			goto out;
		}
	}
	say("CHURN DISKVERIFY ok seq=%" PRIu64 " next=%s slots=%" PRIu64, L,
	    next, nslots);
out:
	free(want);
}

/* ---- verification ---------------------------------------------------- */

static void verify(void)
{
	uint64_t t = now_ns(), i, bad = 0, sum = 0;
	uint64_t first = 0, first_off = 0;

	for (i = 0; i < npages; i++) {
		const uint64_t *p = mem + i * WORDS;
		unsigned off;

		sum += gen[i];
		off = page_check(p, i, gen[i]);
		if (!off)
			continue;
		if (bad < MAX_BAD_LINES) {
			const char *kind = "garbage";

			if (p[0] == PAGE_MAGIC && p[1] == i &&
			    p[2] <= UINT32_MAX && page_check(p, i, p[2]) == 0)
				kind = p[2] < gen[i] ? "stale" : "ahead";
			say("CHURN BADPAGE page=%" PRIu64 " expected_gen=%" PRIu32
			    " found_gen=%" PRIu64 " found_index=%" PRIu64
			    " offset=%u kind=%s", i, gen[i], p[2], p[1],
			    (off - 1) * 8, kind);
		}
		if (!bad) {
			first = i;
			first_off = off;
		}
		bad++;
	}
	if (bad) {
		const uint64_t *p = mem + first * WORDS;
		const char *kind = "garbage";

		if (p[0] == PAGE_MAGIC && p[1] == first &&
		    p[2] <= UINT32_MAX && page_check(p, first, p[2]) == 0)
			kind = p[2] < gen[first] ? "stale" : "ahead";
		say("CHURN VERIFY FAIL page=%" PRIu64 " expected_gen=%" PRIu32
		    " found_gen=%" PRIu64 " found_index=%" PRIu64
		    " offset=%" PRIu64 " kind=%s bad_pages=%" PRIu64
		    " counter=%" PRIu64, first, gen[first], p[2], p[1],
		    (first_off - 1) * 8, kind, bad, counter);
	} else if (sum != gen_sum) {
		say("CHURN VERIFY FAIL gen_sum expected=%" PRIu64
		    " found=%" PRIu64 " counter=%" PRIu64, gen_sum, sum,
		    counter);
	} else {
		say("CHURN VERIFY ok pages=%" PRIu64 " counter=%" PRIu64
		    " gen_sum=%" PRIu64 " ms=%" PRIu64, npages, counter,
		    gen_sum, (now_ns() - t) / 1000000u);
	}
	if (disk_fd >= 0)
		disk_verify();
}

/* ---- main loop ------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
	rng_state += UINT64_C(0x9e3779b97f4a7c15);
	return mix64(rng_state);
}

/* Pages (or records) due by now at `rate` per second since `t0`. */
static uint64_t due(uint64_t rate, uint64_t t0, uint64_t t)
{
	return (uint64_t)((unsigned __int128)rate * (t - t0) / 1000000000u);
}

/*
 * Keep done within one second of due: after a long pause (a stopped or
 * restored VM) the loop resumes its rate instead of bursting.
 */
static void catch_up(uint64_t *done, uint64_t want, uint64_t rate)
{
	if (want > *done + rate)
		*done = want - rate;
}

static void corrupt_once(void)
{
	uint64_t i = npages / 2 + 1;

	mem[i * WORDS + 100] ^= 0x5a;	/* gen[] untouched: must be caught */
	say("CHURN CORRUPTED page=%" PRIu64 " (self-test)", i);
	if (disk_fd >= 0 && disk_seq >= 2) {
		uint64_t seq = disk_seq - 1;
		ssize_t w;

		rec_make(recbuf, run_id, seq);
		((unsigned char *)recbuf)[2000] ^= 0x5a;
		w = pwrite(disk_fd, recbuf, REC,
			   (off_t)(P.diskoff + ((seq - 1) % nslots) * REC));
		say("CHURN CORRUPTED record=%" PRIu64 " (self-test)%s", seq,
		    w == (ssize_t)REC ? "" : " write failed");
	}
}

int main(int argc, char **argv)
{
	const uint64_t *at_random;
	uint64_t t_start, next_tick, next_verify, hot_done = 0, cold_done = 0;
	uint64_t disk_done = 0, hot_cursor = 0;
	int corrupted = 0, i;

	if (argc > 1)
		for (i = 1; i < argc; i++)
			set_param(argv[i]);
	else
		read_cmdline();

	if (P.mb == 0 || P.hot > 100 || P.random > 100 || P.tick == 0) {
		say("CHURN ERROR bad parameters");
		return 2;
	}
	at_random = (const uint64_t *)getauxval(AT_RANDOM);
	run_id = mix64((at_random ? at_random[0] ^ at_random[1] : 0) ^
		       now_ns() ^ ((uint64_t)getpid() << 48));
	rng_state = run_id;

	npages = P.mb * (1024 * 1024 / PAGE);
	nhot = npages * P.hot / 100;
	if (nhot == 0)
		nhot = 1;
	mem = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	gen = mmap(NULL, (npages * sizeof(*gen) + PAGE - 1) / PAGE * PAGE,
		   PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (mem == MAP_FAILED || gen == MAP_FAILED) {
		say("CHURN ERROR cannot allocate %" PRIu64 " MiB: %s", P.mb,
		    strerror(errno));
		return 1;
	}
	for (uint64_t k = 0; k < npages; k++)
		page_write(mem + k * WORDS, k, 0);	/* gen[] is zero */

	if (P.disk[0])
		disk_open();

	say("CHURN READY pages=%" PRIu64 " hot=%" PRIu64 " rate=%" PRIu64
	    " cold=%" PRIu64 " disk=%s slots=%" PRIu64 " diskevery=%" PRIu64
	    " run=%016" PRIx64 " uptime_ms=%" PRIu64,
	    npages, nhot, P.rate, P.cold, disk_fd >= 0 ? P.disk : "none",
	    disk_fd >= 0 ? nslots : 0, P.diskevery, run_id, uptime_ms());

	t_start = t0_ns = now_ns();
	next_tick = t_start + P.tick * 1000000u;
	next_verify = P.verify ? t_start + P.verify * 1000000u : UINT64_MAX;

	for (;;) {
		uint64_t t = now_ns(), n, wake;
		int worked = 0;

		/* hot set, round-robin */
		if (P.rate == 0) {
			n = 64;
		} else {
			uint64_t want = due(P.rate, t_start, t);

			catch_up(&hot_done, want, P.rate);
			n = want - hot_done;
			if (n > 256)
				n = 256;
		}
		for (uint64_t k = 0; k < n; k++) {
			write_page(hot_cursor);
			if (++hot_cursor == nhot)
				hot_cursor = 0;
		}
		hot_done += n;
		worked |= n > 0;

		/* cold pages, random */
		if (P.cold && npages > nhot) {
			uint64_t want = due(P.cold, t_start, t);

			catch_up(&cold_done, want, P.cold);
			for (; cold_done < want; cold_done++)
				write_page(nhot + rnd() % (npages - nhot));
		}

		/* disk records (by rate; diskevery writes them in write_page) */
		if (disk_fd >= 0 && !P.diskevery) {
			uint64_t want = P.diskrate ? due(P.diskrate, t_start, t)
						   : disk_done + 1;

			if (P.diskrate)
				catch_up(&disk_done, want, P.diskrate);
			if (disk_done < want) {
				disk_write_next();
				disk_done++;
				worked = 1;
			}
		}

		t = now_ns();
		if (P.corrupt && !corrupted &&
		    t - t_start >= P.corrupt * 1000000u) {
			corrupt_once();
			corrupted = 1;
		}
		if (t >= next_tick) {
			say("CHURN TICK counter=%" PRIu64 " gen_sum=%" PRIu64
			    " disk_seq=%" PRIu64 " uptime_ms=%" PRIu64
			    " run=%016" PRIx64, counter, gen_sum, disk_seq,
			    uptime_ms(), run_id);
			next_tick += P.tick * 1000000u;
			if (next_tick <= t)
				next_tick = t + P.tick * 1000000u;
		}
		if (t >= next_verify) {
			verify();
			next_verify = now_ns() + P.verify * 1000000u;
		}
		if (P.secs && t - t_start >= P.secs * 1000000000u)
			return 0;
		if (worked || P.rate == 0)
			continue;

		/* Sleep until the next thing is due (at most 20 ms). */
		t = now_ns();
		wake = t + 20000000u;
		if (P.rate) {
			uint64_t tn = t_start + (hot_done + 1) * 1000000000u /
				      P.rate;
			if (tn < wake)
				wake = tn;
		}
		if (next_tick < wake)
			wake = next_tick;
		if (next_verify < wake)
			wake = next_verify;
		if (wake > t)
			sleep_ns(wake - t);
	}
}
