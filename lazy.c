/*
 * lazy.c - a memory image as a postcopy stream: header, return path and
 * advise, the ram START, the device state in one package, then every page
 * (chunks the guest asked for first) and END.  A sender thread writes, a
 * return-path thread queues QEMU's page requests for it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "imgfmt.h"
#include "imgread.h"
#include "lazy.h"
#include "stream.h"
#include "streamgen.h"
#include "util.h"

#include "banned.h"

#define QUEUE_MAX		4096u	/* requests waiting; more are dropped */

struct lazy_req {
	uint32_t block;
	uint64_t chunk;		/* chunk of the block */
};

struct lazy {
	struct img_reader *r;
	const struct img_meta *m;
	int fd;
	uint8_t *tail;
	size_t tail_len;
	size_t devices_len;
	uint64_t *base;		/* first global page number of each block */
	uint8_t *sent;		/* bit per global page */
	uint8_t page[IMG_PAGE_SIZE];

	pthread_mutex_t mu;
	struct lazy_req queue[QUEUE_MAX];
	size_t q_head, q_len;
	int stop;		/* lazy_free(): give up */
	int state;		/* 0 sending, 1 done, -1 failed */
	struct err err;		/* state -1 */
	struct lazy_stats st;
	uint32_t rp_block;	/* block of the last request */
	int rp_have_block;

	pthread_t sender, reader;
	int have_sender, have_reader;
};

static int
lazy_write(void *opaque, const void *data, size_t len, struct err *e)
{
	struct lazy *l = opaque;

	if (write_full(l->fd, data, len) < 0)
		return err_sys(e, ERR_FAIL, "cannot write the stream to QEMU");
	pthread_mutex_lock(&l->mu);
	l->st.stream_bytes += len;
	pthread_mutex_unlock(&l->mu);
	return 0;
}

static int
is_sent(const struct lazy *l, uint64_t gp)
{
	return (l->sent[gp / 8] >> (gp % 8)) & 1;
}

/*
 * Send chunk k of block b: every page of it not sent yet, absent pages
 * as zero pages (in postcopy QEMU must place every page), then flush.
 */
static int
send_chunk(struct lazy *l, struct stream_writer *w, uint32_t b, uint64_t k,
    int requested, struct err *e)
{
	uint64_t npages = l->m->blocks[b].used_length / IMG_PAGE_SIZE;
	uint64_t pi, end = (k + 1) * IMG_CHUNK_PAGES, gp, n = 0;
	enum img_page_state state;

	if (end > npages)
		end = npages;
	for (pi = k * IMG_CHUNK_PAGES; pi < end; pi++) {
		gp = l->base[b] + pi;
		if (is_sent(l, gp))
			continue;
		if (img_read_page(l->r, b, pi * IMG_PAGE_SIZE, l->page, &state,
		    e) < 0)
			return -1;
		if (stream_writer_page(w, b, pi * IMG_PAGE_SIZE,
		    state == IMG_PAGE_DATA ? l->page : NULL, e) < 0)
			return -1;
		l->sent[gp / 8] |= (uint8_t)(1u << (gp % 8));
		n++;
	}
	if (n == 0)
		return 0;
	pthread_mutex_lock(&l->mu);
	l->st.pages += n;
	if (requested)
		l->st.pages_on_request += n;
	pthread_mutex_unlock(&l->mu);
	return stream_writer_flush(w, e);
}

/* Serve the queued requests; 1 when told to stop. */
static int
serve_requests(struct lazy *l, struct stream_writer *w, struct err *e)
{
	struct lazy_req q;

	for (;;) {
		pthread_mutex_lock(&l->mu);
		if (l->stop) {
			pthread_mutex_unlock(&l->mu);
			return 1;
		}
		if (l->q_len == 0) {
			pthread_mutex_unlock(&l->mu);
			return 0;
		}
		q = l->queue[l->q_head];
		l->q_head = (l->q_head + 1) % QUEUE_MAX;
		l->q_len--;
		pthread_mutex_unlock(&l->mu);
		if (send_chunk(l, w, q.block, q.chunk, 1, e) < 0)
			return -1;
	}
}

static int
send_all(struct lazy *l, struct err *e)
{
	const struct img_meta *m = l->m;
	struct stream_writer *w;
	uint64_t k, nchunks;
	uint32_t b;
	int rc = -1, s;

	w = stream_writer_new(lazy_write, l);
	stream_writer_set_postcopy(w);
	if (stream_writer_begin(w, m->config, m->config_len, m->blocks,
	    m->nblocks, m->ram_section_id, e) < 0 ||
	    stream_writer_package(w, l->tail, l->devices_len, e) < 0)
		goto out;
	for (b = 0; b < m->nblocks; b++) {
		nchunks = img_chunks_of(m->blocks[b].used_length);
		for (k = 0; k < nchunks; k++) {
			s = serve_requests(l, w, e);
			if (s < 0)
				goto out;
			if (s > 0) {
				err_set(e, ERR_INTR, "the lazy restore was "
				    "stopped");
				goto out;
			}
			if (send_chunk(l, w, b, k, 0, e) < 0)
				goto out;
		}
	}
	if (stream_writer_finish_postcopy(w, e) < 0)
		goto out;
	rc = 0;
out:
	stream_writer_free(w);
	return rc;
}

static void *
sender_main(void *arg)
{
	struct lazy *l = arg;
	struct err e = ERR_INIT;
	int rc = send_all(l, &e);

	pthread_mutex_lock(&l->mu);
	if (rc < 0 && l->state == 0) {
		l->err = e;
		l->state = -1;
	} else if (rc == 0 && l->state == 0) {
		l->state = 1;
	}
	pthread_mutex_unlock(&l->mu);
	return NULL;
}

/* Queue the chunks of [start, start + len) of the block (mu held). */
static void
queue_request(struct lazy *l, uint32_t b, uint64_t start, uint64_t len)
{
	uint64_t used = l->m->blocks[b].used_length, k, last;

	l->st.requests++;
	if (start >= used || len == 0)
		return;		/* QEMU asks within the block; ignore */
	if (len > used - start)
		len = used - start;
	last = (start + len - 1) / IMG_PAGE_SIZE / IMG_CHUNK_PAGES;
	for (k = start / IMG_PAGE_SIZE / IMG_CHUNK_PAGES; k <= last; k++) {
		if (l->q_len == QUEUE_MAX)
			return;	/* the bulk order sends it anyway */
		l->queue[(l->q_head + l->q_len) % QUEUE_MAX] =
		    (struct lazy_req){ b, k };
		l->q_len++;
	}
}

/* One return-path message; -1 with e filled on a malformed one. */
static int
rp_message(struct lazy *l, uint16_t type, const uint8_t *p, uint16_t len,
    struct err *e)
{
	struct stream_rp_msg m;
	uint32_t b;

	if (stream_rp_parse(type, p, len, &m, e) < 0)
		return -1;
	switch (type) {
	case STREAM_RP_SHUT:
		pthread_mutex_lock(&l->mu);
		l->st.shut = 1;
		l->st.shut_error = m.value;
		pthread_mutex_unlock(&l->mu);
		return 0;
	case STREAM_RP_REQ_PAGES_ID:
		if (img_find_block(l->m, m.block, &b) < 0)
			return err_set(e, ERR_FAIL, "QEMU asked for pages of a "
			    "RAM block the checkpoint does not have");
		pthread_mutex_lock(&l->mu);
		l->rp_block = b;
		l->rp_have_block = 1;
		queue_request(l, b, m.start, m.len);
		pthread_mutex_unlock(&l->mu);
		return 0;
	case STREAM_RP_REQ_PAGES:
		if (!l->rp_have_block)
			return err_set(e, ERR_FAIL, "QEMU asked for pages "
			    "before naming their RAM block");
		pthread_mutex_lock(&l->mu);
		queue_request(l, l->rp_block, m.start, m.len);
		pthread_mutex_unlock(&l->mu);
		return 0;
	default:
		return 0;	/* PONG and what postcopy recovery uses */
	}
}

static void *
reader_main(void *arg)
{
	struct lazy *l = arg;
	struct err e = ERR_INIT;
	uint8_t hdr[STREAM_RP_HEADER], body[65535];
	ssize_t n;
	uint16_t len;

	for (;;) {
		n = read_full(l->fd, hdr, STREAM_RP_HEADER);
		if (n != STREAM_RP_HEADER)
			break;	/* QEMU closed it (or lazy_free() did) */
		len = get_be16(hdr + 2);
		if (read_full(l->fd, body, len) != (ssize_t)len)
			break;
		if (rp_message(l, get_be16(hdr), body, len, &e) < 0) {
			pthread_mutex_lock(&l->mu);
			if (l->state == 0) {
				l->err = e;
				l->state = -1;
			}
			l->stop = 1;
			pthread_mutex_unlock(&l->mu);
			break;
		}
	}
	return NULL;
}

struct lazy *
lazy_start(struct img_reader *r, int fd, struct err *e)
{
	struct lazy *l = xcalloc(1, sizeof(*l));
	uint64_t total = 0;
	size_t i;

	l->r = r;
	l->m = img_meta(r);
	l->fd = fd;
	pthread_mutex_init(&l->mu, NULL);
	if (img_read_tail(r, &l->tail, &l->tail_len, e) < 0 ||
	    stream_tail_devices(l->tail, l->tail_len, &l->devices_len, e) < 0)
		goto fail;
	l->base = xcalloc(l->m->nblocks, sizeof(*l->base));
	for (i = 0; i < l->m->nblocks; i++) {
		l->base[i] = total;
		total += l->m->blocks[i].used_length / IMG_PAGE_SIZE;
	}
	l->sent = xcalloc(total / 8 + 1, 1);
	if (thread_start(&l->reader, reader_main, l, "page requests", e) < 0)
		goto fail;
	l->have_reader = 1;
	if (thread_start(&l->sender, sender_main, l, "sending pages", e) < 0)
		goto fail;
	l->have_sender = 1;
	return l;
fail:
	lazy_free(l);
	return NULL;
}

int
lazy_poll(struct lazy *l, struct err *e)
{
	int state;

	pthread_mutex_lock(&l->mu);
	state = l->state;
	if (state < 0 && e != NULL)
		*e = l->err;
	pthread_mutex_unlock(&l->mu);
	return state;
}

void
lazy_stats(struct lazy *l, struct lazy_stats *st)
{
	pthread_mutex_lock(&l->mu);
	*st = l->st;
	pthread_mutex_unlock(&l->mu);
}

void
lazy_free(struct lazy *l)
{
	if (l == NULL)
		return;
	pthread_mutex_lock(&l->mu);
	l->stop = 1;
	pthread_mutex_unlock(&l->mu);
	/* Wakes both threads: writes fail with EPIPE, reads see EOF. */
	shutdown(l->fd, SHUT_RDWR);
	if (l->have_sender)
		pthread_join(l->sender, NULL);
	if (l->have_reader)
		pthread_join(l->reader, NULL);
	pthread_mutex_destroy(&l->mu);
	free(l->tail);
	free(l->base);
	free(l->sent);
	free(l);
}
