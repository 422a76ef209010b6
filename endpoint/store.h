/* store.h - the server endpoint's copy of a session's snapshot chain (docs/protocol.md,
 * "Snapshots shipped to the server endpoint").
 *
 * The edge ships each snapshot file in SNAP_PUT pieces, in order; store_put() assembles
 * them and, on the last piece, makes the file durable: with a root directory, as
 * ROOT/<session id>/snap-<position>.full|.delta (temp file, fsync, rename, fsync of the
 * directory; then verified with snap_read()), else in memory. Only the newest chain is
 * kept: a full snapshot at P removes everything older; a delta must name the chain's last
 * position as its base. On RESUME, store_frames() gives the chain back as SNAP_PUT pieces. */
#ifndef CESSNA_STORE_H
#define CESSNA_STORE_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct wire_frame;

struct store_file {
    uint64_t position, base;   /* base 0: a full snapshot */
    uint64_t len;
    uint8_t *bytes;            /* in memory; NULL when on disk */
};

struct store {
    const char *root;          /* NULL: in memory */
    uint64_t session_id;
    char dir[PATH_MAX];        /* ROOT/<id>, made at the first piece */
    struct store_file *chain;  /* oldest (the full) first */
    size_t n, cap;
    /* The file being assembled. */
    bool busy;
    uint64_t position, base, total, got;
    uint8_t *buf;              /* in memory */
    int fd;                    /* on disk: the temp file */
    char tmp[PATH_MAX];
};

void store_init(struct store *st, const char *root, uint64_t session_id);
/* One SNAP_PUT piece. 0: taken; 1: the file is complete and durable (answer SNAP_ACK);
 * -EPROTO: the piece breaks the protocol (out of order, a delta on the wrong base, a file
 * that does not verify); -EIO/-ENOMEM: storing failed. err names the cause. */
int  store_put(struct store *st, const struct wire_frame *f, char *err, size_t errlen);
/* The chain as SNAP_PUT frames (full first, each piece <= WIRE_SNAP_PIECE bytes): emit is
 * called with (header, hdr_len, bytes, len) per piece. 0, or -errno with err set. */
int  store_frames(struct store *st,
                  int (*emit)(void *arg, const uint8_t *hdr, size_t hlen, const uint8_t *p,
                              size_t len),
                  void *arg, char *err, size_t errlen);
/* The position of the newest stored snapshot, 0 when none. */
uint64_t store_last(const struct store *st);
/* Delete everything stored for the session (files and directory) and free the memory. */
void store_remove(struct store *st);

#endif
