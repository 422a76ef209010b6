/* snap.h - the snapshot file format: write, verify, chain, restore (DESIGN.md 5).
 *
 * A snapshot is the memory image of a worker right after event P: a few page-aligned
 * regions (the arena [base, base + extent), the app module's writable segments) plus a small
 * header. A FULL snapshot holds every page of every region; a DELTA holds only the pages whose
 * xxh3-64 differs from the previous snapshot of the chain (the caller keeps the per-page
 * hashes between snapshots, struct snap_hashes). Restore = the full, then each delta in order.
 *
 * File layout, all integers little-endian, fixed size:
 *
 *   header, SNAP_HDR_LEN = 272 bytes
 *     0  u8  magic[8]       "CSNAP\0\0\1"
 *     8  u32 version        SNAP_VERSION
 *    12  u32 header_len     272
 *    16  u32 page_size      4096
 *    20  u32 kind           SNAP_FULL or SNAP_DELTA
 *    24  u32 flags          SNAP_HF_ZSTD: the writer had compression on (informational)
 *    28  u32 nregions       <= SNAP_MAX_REGIONS
 *    32  u64 session_id
 *    40  u64 position       P
 *    48  u64 base_position  the previous snapshot of the chain; 0 for a full
 *    56  u64 seq[2]         last consumed client / server sequence numbers
 *    72  u64 out_no[2]      outputs numbered so far to client / server
 *    88  u8  fingerprint[32]
 *   120  u64 nrecords       page records that follow
 *   128  {u64 addr, u64 len} regions[8]   unused slots are zero
 *   256  u32 max_message    the edge's max_message_bytes when the snapshot was taken: the
 *                           app saw it (-EMSGSIZE), so a restore under another is refused
 *   260  u32 reserved       0
 *   264  u64 xxh3-64 of header bytes [0, 264)
 *
 *   nrecords page records, sorted by (region, page), no duplicates
 *     u32 region      index into regions[]
 *     u32 flags       SNAP_REC_RAW (length 4096), SNAP_REC_ZSTD (one zstd frame of the
 *                     page, 0 < length < 4096), SNAP_REC_ZERO (an all-zero page, length 0)
 *     u64 page        page index inside the region
 *     u32 length      stored bytes that follow
 *     u8  stored[length]
 *
 *   trailer, SNAP_TRAILER_LEN = 32 bytes
 *     0  u8  magic[8]       "CSNAPEND"
 *     8  u64 nrecords       == the header's
 *    16  u64 file_len       the whole file, trailer included
 *    24  u64 xxh3-64 of every byte before the trailer
 *
 * Every byte is covered: the header by its own hash and the file hash, records by the file
 * hash, the trailer's fields by comparison with the header, the file size and the hash. A
 * full snapshot must hold every page of every region. Readers refuse anything else. */
#ifndef CESSNA_SNAP_H
#define CESSNA_SNAP_H

#include <stddef.h>
#include <stdint.h>

#define SNAP_PAGE        4096
#define SNAP_MAX_REGIONS 8
#define SNAP_VERSION     2u   /* 2: max_message in the header */
#define SNAP_HDR_LEN     272u
#define SNAP_REC_HDR_LEN 20u
#define SNAP_TRAILER_LEN 32u
/* A state of at most this many pages is written by the worker itself, without a fork
 * (worker/snapshot.c; never when a hot standby is asked for: that is the frozen child). */
#define SNAP_INLINE_PAGES 64

enum snap_kind { SNAP_FULL = 1, SNAP_DELTA = 2 };

/* Header flags. */
#define SNAP_HF_ZSTD 1u
/* Record flags: how the page is stored. */
enum snap_rec { SNAP_REC_RAW = 0, SNAP_REC_ZSTD = 1, SNAP_REC_ZERO = 2 };

struct snap_region { uint64_t addr; uint64_t len; };       /* page-aligned addr and len */

struct snap_meta {
    uint64_t session_id;
    uint64_t position;        /* P: the state right after event P */
    uint64_t base_position;   /* the previous snapshot in the chain (0 for a full) */
    uint64_t seq[2];          /* last consumed client / server sequence numbers */
    uint64_t out_no[2];       /* outputs numbered so far to client / server */
    uint8_t  fingerprint[32]; /* layout fingerprint: compared byte for byte on restore */
    uint32_t kind;            /* SNAP_FULL or SNAP_DELTA */
    uint32_t max_message;     /* the edge's max_message_bytes (the app saw it) */
    uint32_t nregions;
    struct snap_region regions[SNAP_MAX_REGIONS];
};

/* Page hashes the writer compares against, one table per region index, caller-owned (it may
 * live in shared memory, so the fork child that writes updates the parent's copy):
 * page[r][i] = xxh3 of page i of region r in the previous snapshot, 0 = unknown (always
 * written). npages[r] is the table's size; pages beyond it are always written. A table
 * should be as large as its region can grow. After a durable write the writer stores the new
 * hashes and zeroes the entries beyond the region's current length (and whole tables of
 * region indexes >= nregions), so a region that shrinks and grows again is written in full. */
struct snap_hashes {
    uint64_t *page[SNAP_MAX_REGIONS];
    uint64_t npages[SNAP_MAX_REGIONS];
    uint64_t used[SNAP_MAX_REGIONS];   /* entries that may be nonzero (start at 0); the writer
                                        * clears only these, never the whole large table */
};

struct snap_stats { uint64_t bytes, pages_written, pages_total; };

/* The layout fingerprint of this process (snap_meta.fingerprint): the build id and load
 * address of every loaded object (the program, ld.so, libc, the app module and every library
 * it pulls in; not the vDSO), and the arena base. A snapshot holds raw pointers into all of
 * them, so it restores only where this is the same. 0, or -errno with a reason. */
int snap_layout_fingerprint(uint64_t arena_base, uint8_t out[32], char *err, size_t errlen);

/* Compression for the following snap_write()s in this process: the zstd level (default 1;
 * negative levels are zstd's fast modes), 0 = store every page raw. A page is stored
 * compressed only when that saves at least an eighth of it; all-zero pages take no bytes
 * either way. */
void snap_set_compression(int level);

/* Whether the following snap_write()s in this process fsync the file and the directory
 * (default 1). With 0 the file is written, closed and renamed, and nothing more: it is on
 * disk only once someone syncs the filesystem (the supervisor does, for a whole batch of
 * files at once: supervisor/snapsync.c); until then it must not be treated as durable, and
 * the hash tables it moved on describe a file that may yet be lost. */
void snap_set_sync(int on);
/* How many "spare.N" files the next write may find in its directory (snap_prune keeps them,
 * numbered from 0 up): it looks at spare.N-1 down to spare.0 only, instead of trying every
 * name. -1 (the default): unknown, try them all. */
void snap_set_spares(int n);
/* The next write takes the file of the full snapshot at `position` (no longer needed: the
 * supervisor says so) for its own, before any spare; 0: none. Used once. */
void snap_set_reuse(uint64_t position);

/* With on, the writer keeps its buffers (page hashes, write buffer, compression output) from
 * one file to the next instead of freeing them: a worker writing its small state itself on
 * every snapshot then allocates, faults in and gives back nothing each time (only the pages
 * a file touched stay resident). Off (the default): allocated and freed per file. */
void snap_keep_buffers(int on);

/* Write a snapshot of the regions (read from memory at their addresses) to dir/NAME where
 * NAME is snap_name(position, kind): a temp file (NAME.tmp.PID), fsync, rename, fsync(dir).
 * A FULL writes every page; a DELTA writes the pages whose hash differs from *hashes (with
 * hashes == NULL, every page). m->base_position must be the snapshot these hashes describe:
 * the last one written with them that returned 0. Updates hashes only after the file is
 * durable. 0, or -errno with the failed step named in err ("open", "write", "fsync",
 * "rename", "fsync dir", ...; -EINVAL for bad metadata); on error the temp file is unlinked
 * and hashes are unchanged. Fills *stats (if non-NULL) on success. */
int snap_write(const char *dir, const struct snap_meta *m, struct snap_hashes *hashes,
               struct snap_stats *stats, char *err, size_t errlen);
/* The same into the directory open at dirfd (kept open; dir only names it in errors): a
 * sandboxed worker may open files only relative to its session directory. */
int snap_write_at(int dirfd, const char *dir, const struct snap_meta *m,
                  struct snap_hashes *hashes, struct snap_stats *stats, char *err, size_t errlen);

/* Read and verify a file (magic, version, sizes, the header hash, every record, the
 * trailer and the file hash; zstd pages are test-decompressed) and fill *m. With apply != 0,
 * then copy its pages into memory at the regions' addresses: a file that fails verification
 * changes nothing in memory. expect_fingerprint (may be NULL) must match or -EXDEV ("layout
 * fingerprint differs: snapshot from another build or layout"). Corrupt, truncated or
 * trailing garbage: -EBADMSG naming what is wrong. Other errors: -errno (open, read,
 * -ENOMEM). Memory use: the file's size, once. *m is filled on success only. */
int snap_read(const char *path, const uint8_t *expect_fingerprint, int apply,
              struct snap_meta *m, char *err, size_t errlen);

/* Only the header of the snapshot file open at fd (its own checksum checked, the records and
 * the trailer not): enough to name a file's position, base, seqs and layout cheaply. 0, or
 * -EBADMSG / -errno with a reason in err. *m is filled on success only. */
int snap_read_header(int fd, struct snap_meta *m, char *err, size_t errlen);

/* The newest restorable chain in dir: the newest full snapshot that verifies, then
 * repeatedly the newest verified delta whose base_position is the chain's last position
 * (same session and fingerprint, regions at the same addresses). Fills positions[] (oldest
 * first, at most max) and *n. Files that fail verification are skipped and named in err;
 * err is "" when nothing was wrong. 0, -ENOENT if no full snapshot verifies, -errno when dir
 * cannot be listed. */
int snap_find_chain(const char *dir, uint64_t *positions, int max, int *n, char *err, size_t errlen);

/* Apply the chain positions[0..n) from dir into memory: positions[0] is a full, the rest
 * deltas; each file is verified (fingerprint, and its link to the previous one: base
 * position, session, region addresses) before it is applied. Fills *m with the last one's
 * metadata. The caller maps each region at its address, as long as the longest length it
 * has in the chain. On failure the files before the failing one have been applied: discard
 * the memory. */
int snap_restore_chain(const char *dir, const uint64_t *positions, int n,
                       const uint8_t *expect_fingerprint, struct snap_meta *m,
                       char *err, size_t errlen);

/* File name of a snapshot: "snap-%020llu.full" / ".delta" (zero-padded so names sort). */
void snap_name(char *buf, size_t len, uint64_t position, uint32_t kind);

/* Retire the file name of the directory dfd: it becomes a spare ("spare.N", at most 12 in a
 * directory) that the next snapshot written there takes over instead of creating a file, or
 * it is removed when there are spares enough. With empty, the spare is emptied too (a spare
 * already is as well): for a directory another session gets next, which must not read this
 * one's state. Without, the contents of a file up to 64 KiB stay for the writer to write over
 * (the same session; freeing blocks can mean a discard the caller waits for); a larger one is
 * emptied all the same (spares must not double a session's disk use). 0 or -errno. */
int snap_retire(int dfd, const char *name, int empty);

/* Retire one snapshot file of dir by its name (as snap_retire, contents kept), without
 * reading the directory: for a caller that knows it is the only file to go. The spare
 * slots are tried from first_spare (how many the caller believes there are) on. */
int snap_retire_one(const char *dir, uint64_t position, uint32_t kind, int first_spare);

/* 1 when name is one of the spares snap_retire() makes ("spare.0" .. "spare.11"). */
int snap_is_spare(const char *name);

/* Remove the snapshot files (and leftover temp files) of dir at positions older than
 * keep_from, which must name a full snapshot present in dir (else -ENOENT, nothing
 * removed). Up to 12 of them stay as "spare.N" files (not emptied: the same session's) that the next snapshots written
 * in dir take over (snap_write_at) instead of creating new ones. Returns the number of files
 * removed or kept as spares, or -errno. */
int snap_prune(const char *dir, uint64_t keep_from);

#endif
