/* cred.c - credentials and the edge secret (cred.h), on libsodium. */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cred.h"
#include "log.h"

int cred_init(void)
{
    return sodium_init() < 0 ? -EIO : 0;
}

void cred_random(void *buf, size_t len)
{
    randombytes_buf(buf, len);
}

void cred_verifier(const uint8_t token[WIRE_TOKEN_LEN], uint8_t out[WIRE_VERIFIER_LEN])
{
    static const char context[] = "cessna client credential v1";

    crypto_generichash(out, WIRE_VERIFIER_LEN, token, WIRE_TOKEN_LEN,
                       (const unsigned char *)context, sizeof(context) - 1);
}

int cred_check(const uint8_t token[WIRE_TOKEN_LEN], const uint8_t verifier[WIRE_VERIFIER_LEN])
{
    uint8_t v[WIRE_VERIFIER_LEN];

    cred_verifier(token, v);
    return sodium_memcmp(v, verifier, WIRE_VERIFIER_LEN) == 0;
}

int cred_equal(const void *a, size_t alen, const void *b, size_t blen)
{
    if (alen != blen)
        return 0;
    return alen == 0 || sodium_memcmp(a, b, alen) == 0;
}

int cred_load_secret(const char *path, uint8_t *buf, size_t *len, char *err, size_t errlen)
{
    uint8_t tmp[WIRE_SECRET_MAX + 2];
    struct stat st;
    ssize_t n;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        snprintf(err, errlen, "edge secret file %s: %s", path, strerror(errno));
        return -errno;
    }
    if (fstat(fd, &st) == 0 && (st.st_mode & 077))
        LOG(LOG_WARN, "msg=\"edge secret file is readable by group or others\" file=%s mode=%03o", path,
                 (unsigned)(st.st_mode & 0777));
    n = read(fd, tmp, sizeof(tmp));
    close(fd);
    if (n < 0) {
        snprintf(err, errlen, "edge secret file %s: %s", path, strerror(errno));
        return -EIO;
    }
    while (n > 0 && (tmp[n - 1] == '\n' || tmp[n - 1] == '\r'))
        n--;
    if ((size_t)n < CRED_SECRET_MIN || (size_t)n > WIRE_SECRET_MAX) {
        snprintf(err, errlen, "edge secret file %s: the secret must be %u to %u bytes",
                 path, CRED_SECRET_MIN, WIRE_SECRET_MAX);
        return -EINVAL;
    }
    memcpy(buf, tmp, (size_t)n);
    sodium_memzero(tmp, sizeof(tmp));
    *len = (size_t)n;
    return 0;
}
