/*
 * fuzz_rp - libFuzzer target for stream_rp_parse(), the return-path
 * messages QEMU sends a lazy restore.  The input is a run of messages
 * (be16 type, be16 length, payload; the last may be cut short).  Every
 * message parses or fails with a message; a parsed page request names a
 * block exactly as its payload does, and parsing is repeatable.
 *
 * Seeds: fuzz/corpus/rp/, the messages QEMU 7.2 and 10.0 send (SHUT,
 * PONG, REQ_PAGES_ID for pc.ram, REQ_PAGES).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "streamgen.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct stream_rp_msg m, again;
	struct err e = ERR_INIT, e2 = ERR_INIT;
	uint16_t type;
	size_t len;
	int rc;

	while (size >= STREAM_RP_HEADER) {
		type = get_be16(data);
		len = get_be16(data + 2);
		data += STREAM_RP_HEADER;
		size -= STREAM_RP_HEADER;
		if (len > size)
			len = size;
		err_clear(&e);
		rc = stream_rp_parse(type, data, len, &m, &e);
		if (rc < 0 && (e.msg[0] == 0 || strstr(e.msg,
		    "malformed return-path message") == NULL))
			abort();
		if (rc == 0 && m.type != type)
			abort();
		if (rc == 0 && type == STREAM_RP_REQ_PAGES_ID &&
		    (strlen(m.block) != data[12] ||
		    memcmp(m.block, data + 13, data[12]) != 0))
			abort();
		if (rc == 0 && type != STREAM_RP_REQ_PAGES_ID &&
		    m.block[0] != 0)
			abort();
		err_clear(&e2);
		if (stream_rp_parse(type, data, len, &again, &e2) != rc ||
		    (rc == 0 && memcmp(&m, &again, sizeof(m)) != 0) ||
		    strcmp(e.msg, e2.msg) != 0)
			abort();
		data += len;
		size -= len;
	}
	return 0;
}
