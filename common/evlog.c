/* evlog.c - see evlog.h. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "evlog.h"
#include "shm.h"
#include "wire.h"

void evlog_name(char *buf, size_t len, uint64_t first)
{
    snprintf(buf, len, "events-%020" PRIu64 ".log", first);
}

void evlog_header(uint8_t *hdr, uint64_t session_id, uint64_t first)
{
    memset(hdr, 0, EVLOG_HDR_LEN);
    memcpy(hdr, EVLOG_MAGIC, 8);
    wire_le32(hdr + 8, EVLOG_VERSION);
    wire_le64(hdr + 16, session_id);
    wire_le64(hdr + 24, first);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Append the whole records of one file to r; returns the position after its last. */
static int read_file(const char *path, uint64_t session_id, uint64_t expect_first,
                     uint64_t after, struct evlog_reader *r, uint64_t *next,
                     char *err, size_t errlen)
{
    struct stat st;
    uint8_t *data;
    size_t got = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd == -1 || fstat(fd, &st) == -1) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -errno;
    }
    data = malloc((size_t)st.st_size + 1);
    while (data && got < (size_t)st.st_size) {
        ssize_t n = read(fd, data + got, (size_t)st.st_size - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (!data || got < EVLOG_HDR_LEN || memcmp(data, EVLOG_MAGIC, 8) ||
        wire_get32(data + 8) != EVLOG_VERSION || wire_get64(data + 16) != session_id ||
        wire_get64(data + 24) != expect_first) {
        snprintf(err, errlen, "%s: not an event log of session %llu starting at %llu", path,
                 (unsigned long long)session_id, (unsigned long long)expect_first);
        free(data);
        return -EBADMSG;
    }
    uint64_t pos = expect_first;
    for (size_t off = EVLOG_HDR_LEN; off + 8 <= got;) {
        uint32_t len = wire_get32(data + off);
        size_t space = (8 + (size_t)len + 7) & ~(size_t)7;
        struct shm_rec rec;
        if (len < sizeof(rec) || off + space > got)
            break;   /* a torn record: the log ends here */
        memcpy(&rec, data + off + 8, sizeof(rec));
        if (rec.pos != pos) {
            snprintf(err, errlen, "%s: record at byte %zu has position %llu, expected %llu",
                     path, off, (unsigned long long)rec.pos, (unsigned long long)pos);
            free(data);
            return -EBADMSG;
        }
        if (pos > after) {
            if (r->len + space > SIZE_MAX / 2) {
                free(data);
                return -ENOMEM;
            }
            uint8_t *nb = realloc(r->buf, r->len + space);
            if (!nb) {
                free(data);
                return -ENOMEM;
            }
            r->buf = nb;
            memcpy(r->buf + r->len, data + off, space);
            if (!r->count)
                r->first = pos;
            r->len += space;
            r->count++;
        }
        pos++;
        off += space;
    }
    free(data);
    *next = pos;
    return 0;
}

int evlog_read_dir(const char *dir, uint64_t session_id, uint64_t after,
                   struct evlog_reader *r, char *err, size_t errlen)
{
    uint64_t firsts[4096];
    int n = 0, rc = 0;
    struct dirent *de;
    DIR *d = opendir(dir);

    memset(r, 0, sizeof(*r));
    if (!d) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return -errno;
    }
    while ((de = readdir(d)) && n < 4096) {
        unsigned long long first;
        char tail[8];
        if (sscanf(de->d_name, "events-%20llu.%4s", &first, tail) == 2 && !strcmp(tail, "log"))
            firsts[n++] = first;
    }
    closedir(d);
    if (!n) {
        snprintf(err, errlen, "%s: no event log files", dir);
        return -ENOENT;
    }
    qsort(firsts, (size_t)n, sizeof(firsts[0]), cmp_u64);
    uint64_t next = firsts[0];
    for (int i = 0; i < n && rc == 0; i++) {
        char path[4096], name[64];
        if (firsts[i] != next) {
            snprintf(err, errlen, "%s: events %llu..%llu are missing", dir,
                     (unsigned long long)next, (unsigned long long)firsts[i] - 1);
            rc = -EBADMSG;
            break;
        }
        evlog_name(name, sizeof(name), firsts[i]);
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        rc = read_file(path, session_id, firsts[i], after, r, &next, err, errlen);
    }
    if (rc == 0 && firsts[0] > after + 1) {
        snprintf(err, errlen, "%s: the log starts at event %llu; the replay needs event %llu",
                 dir, (unsigned long long)firsts[0], (unsigned long long)after + 1);
        rc = -ENOENT;
    }
    if (rc < 0)
        evlog_reader_free(r);
    return rc;
}

void evlog_reader_free(struct evlog_reader *r)
{
    free(r->buf);
    memset(r, 0, sizeof(*r));
}
