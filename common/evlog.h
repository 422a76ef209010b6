/* evlog.h - the ordering log files: each session's events, in order, with their payloads,
 * under STATE_DIR/SESSION_ID/events-FIRST.log (DESIGN.md section 7). The supervisor appends
 * (batched, no fsync per message); cessna-replay reads them.
 *
 * A file: a 32-byte header (magic "CSNEVLOG", u32 version, u32 0, u64 session id, u64 the
 * position of its first record), then records exactly as held in memory (supervisor/
 * evstore.h): u32 len, u16 type, u16 0, struct shm_rec, payload, padded to 8. A file
 * starts a new one after each durable snapshot; files whose events a durable snapshot
 * covers are removed. A torn last record (a crash mid-write) ends the readable log. */
#ifndef CESSNA_EVLOG_H
#define CESSNA_EVLOG_H

#include <stddef.h>
#include <stdint.h>

#define EVLOG_MAGIC   "CSNEVLOG"
#define EVLOG_VERSION 1u
#define EVLOG_HDR_LEN 32u

void evlog_name(char *buf, size_t len, uint64_t first);
/* Fill hdr (EVLOG_HDR_LEN bytes). */
void evlog_header(uint8_t *hdr, uint64_t session_id, uint64_t first);

/* Reading, for cessna-replay. */
struct evlog_reader {
    uint8_t *buf;       /* the records of every file, in order */
    size_t len;
    uint64_t first;     /* position of the first record */
    uint64_t count;
};
/* Read every events-*.log of dir, in order, keeping records after position `after`. 0 or
 * -errno with a reason. A gap between files is an error. */
int  evlog_read_dir(const char *dir, uint64_t session_id, uint64_t after,
                    struct evlog_reader *r, char *err, size_t errlen);
void evlog_reader_free(struct evlog_reader *r);

#endif
