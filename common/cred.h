/* cred.h - session credentials and the edge secret (docs/protocol.md, "Who may resume").
 *
 * The client endpoint holds its session's credential (16 random bytes, from WELCOME). The
 * server endpoint holds only a verifier of it (BLAKE2b, 32 bytes): it can check a RESUME that
 * a new edge forwards, but cannot resume as the client. Edges prove the shared edge secret
 * (a file's content) to the server endpoint in HELLO and RESUME. Comparisons take the same
 * time wherever the bytes differ. */
#ifndef CESSNA_CRED_H
#define CESSNA_CRED_H

#include <stddef.h>
#include <stdint.h>

#include "wire.h"

#define CRED_SECRET_MIN 16u

/* 0, or -errno (the process could not initialise libsodium). Call once before the rest. */
int  cred_init(void);
void cred_random(void *buf, size_t len);
void cred_verifier(const uint8_t token[WIRE_TOKEN_LEN], uint8_t out[WIRE_VERIFIER_LEN]);
/* 1 when token's verifier is `verifier`. */
int  cred_check(const uint8_t token[WIRE_TOKEN_LEN], const uint8_t verifier[WIRE_VERIFIER_LEN]);
/* 1 when the two byte strings are equal (lengths included), in constant time for equal lengths. */
int  cred_equal(const void *a, size_t alen, const void *b, size_t blen);

/* Read the edge secret from path: its bytes without a trailing newline, CRED_SECRET_MIN to
 * WIRE_SECRET_MAX of them. 0 with *len set, or -errno with a reason in err (missing file,
 * too short or long, readable by others: a warning, not an error, goes to the log). */
int  cred_load_secret(const char *path, uint8_t *buf, size_t *len, char *err, size_t errlen);

#endif
