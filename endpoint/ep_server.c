/* ep_server.c - native servers that hold their sessions across edges (docs/protocol.md):
 * cessna_ep_server_accept() answers HELLO with WELCOME + WIRE_F_STORES, so edges ship
 * snapshots here (stored with store.c, answered with SNAP_ACK by the session's receiver),
 * and handles RESUME for a known session itself: it checks the edge secret, the client
 * credential's verifier and the epoch, fences the old edge (shuts its connection), answers
 * RESUME_INFO + the stored chain + the kept order and DATA + RESUME_END, and attaches the
 * new connection to the existing struct cessna_ep. The session's receiver, waiting since
 * the old edge was lost, goes on with the new one. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cred.h"
#include "ep_priv.h"
#include "store.h"

#define AUTH_FAILED "authentication failed"   /* the one text for every auth failure */

struct cessna_ep_server {
    int listen_fd;
    char *store_dir;            /* NULL: in memory */
    uint8_t secret[WIRE_SECRET_MAX];
    size_t secret_len;
    bool has_secret;
    pthread_mutex_t mu;         /* the session list; held through a whole RESUME */
    struct cessna_ep *sessions;
};

struct cessna_ep_server *cessna_ep_server_new(int listen_fd, const char *store_dir,
                                              const char *edge_secret_file, char *err,
                                              size_t errlen)
{
    struct cessna_ep_server *srv;

    if (cred_init() < 0) {
        snprintf(err, errlen, "cannot initialise libsodium");
        return NULL;
    }
    if (!(srv = calloc(1, sizeof(*srv)))) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    srv->listen_fd = listen_fd;
    pthread_mutex_init(&srv->mu, NULL);
    if (edge_secret_file) {
        if (cred_load_secret(edge_secret_file, srv->secret, &srv->secret_len, err, errlen) < 0)
            goto fail;
        srv->has_secret = true;
    }
    if (store_dir) {
        if (mkdir(store_dir, 0700) == -1 && errno != EEXIST) {
            snprintf(err, errlen, "cannot create the store directory %s: %s", store_dir,
                     strerror(errno));
            goto fail;
        }
        if (!(srv->store_dir = strdup(store_dir))) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    }
    return srv;
fail:
    cessna_ep_server_free(srv);
    return NULL;
}

void cessna_ep_server_free(struct cessna_ep_server *srv)
{
    if (!srv)
        return;
    pthread_mutex_lock(&srv->mu);
    for (struct cessna_ep *ep = srv->sessions; ep; ep = ep->srv_next)
        ep->srv = NULL;   /* they live on, without resumes */
    pthread_mutex_unlock(&srv->mu);
    pthread_mutex_destroy(&srv->mu);
    free(srv->store_dir);
    free(srv);
}

static bool secret_ok(const struct cessna_ep_server *srv, const uint8_t *secret, size_t len)
{
    return !srv->has_secret || cred_equal(srv->secret, srv->secret_len, secret, len);
}

/* Called with srv->mu held. */
static struct cessna_ep *find(struct cessna_ep_server *srv, uint64_t id)
{
    for (struct cessna_ep *ep = srv->sessions; ep; ep = ep->srv_next)
        if (ep->session_id == id)
            return ep;
    return NULL;
}

int ep_server_snap_put(struct cessna_ep *ep, const struct wire_frame *f, int *ack)
{
    int rc = store_put(ep->store, f, ep->err, sizeof(ep->err));

    if (rc < 0)
        return rc;
    *ack = rc == 1;
    return 0;
}

void ep_server_ended(struct cessna_ep *ep)
{
    pthread_mutex_lock(&ep->lock);
    if (ep->store)
        store_remove(ep->store);
    pthread_mutex_unlock(&ep->lock);
}

void ep_server_forget(struct cessna_ep *ep)
{
    struct cessna_ep_server *srv = ep->srv;

    pthread_mutex_lock(&srv->mu);
    for (struct cessna_ep **p = &srv->sessions; *p; p = &(*p)->srv_next)
        if (*p == ep) {
            *p = ep->srv_next;
            break;
        }
    pthread_mutex_unlock(&srv->mu);
    ep->srv = NULL;
    if (ep->store) {
        store_remove(ep->store);
        free(ep->store);
        ep->store = NULL;
    }
}

static int put_piece(void *arg, const uint8_t *hdr, size_t hlen, const uint8_t *p, size_t len)
{
    ep_buf_put(arg, hdr, hlen);
    ep_buf_put(arg, p, len);
    return ((struct ep_buf *)arg)->rc;
}

static int put_order_frame(void *arg, const uint8_t *frame, size_t len)
{
    ep_buf_put(arg, frame, len);
    return ((struct ep_buf *)arg)->rc;
}

/* RESUME_INFO, the stored chain, the kept order and DATA, RESUME_END (and CLOSE if the
 * program already closed). Called with ep->lock held. 0, or -errno with err set. */
static int resume_material(struct cessna_ep *ep, uint64_t epoch, struct ep_buf *b, char *err,
                           size_t errlen)
{
    uint8_t frame[WIRE_HDR_LEN + 32];
    const uint8_t *data;
    size_t len, cursor = 0;
    int rc;

    ep_buf_put(b, frame, wire_put_resume_info(frame, epoch, ep->last_out, ep->next_seq,
                                              ep->keep.order_base));
    if ((rc = store_frames(ep->store, put_piece, b, err, errlen)) < 0)
        return rc;
    keep_order_frames(&ep->keep, put_order_frame, b);
    while (keep_next_data(&ep->keep, &cursor, &data, &len))
        ep_buf_put(b, data, len);
    ep_buf_put(b, frame, wire_put_empty(frame, WIRE_RESUME_END));
    if (ep->close_sent)
        ep_buf_put(b, frame, wire_put_close(frame));
    if (b->rc < 0)
        snprintf(err, errlen, "out of memory for the resume material");
    return b->rc;
}

/* A RESUME on fd for a session of this server. 0: the session goes on over fd; -errno
 * with a reason in err (the edge got ERROR; fd is the caller's to close). */
static int server_resume(struct cessna_ep_server *srv, int fd, const struct wire_frame *f,
                         char *err, size_t errlen)
{
    uint64_t id = f->u.resume.session_id;
    struct ep_buf b = { 0 };
    struct cessna_ep *ep;
    int rc;

    pthread_mutex_lock(&srv->mu);
    ep = find(srv, id);
    const char *why = !secret_ok(srv, f->u.resume.secret, f->u.resume.secret_len)
                          ? "RESUME with a wrong edge secret"
                      : !ep || ep->state != 0 ? "RESUME of an unknown session"
                      : !cred_check(f->u.resume.token, ep->verifier)
                          ? "RESUME with a wrong client credential" : NULL;
    if (why) {
        pthread_mutex_unlock(&srv->mu);
        snprintf(err, errlen, "session %llu: %s", (unsigned long long)id, why);
        ep_refuse(fd, WIRE_ERR_AUTH, AUTH_FAILED);
        return -EACCES;
    }
    pthread_mutex_lock(&ep->resume_mu);
    pthread_mutex_lock(&ep->lock);
    ep->resuming = true;   /* frames still buffered from the old edge are dropped */
    int old = ep->fd;
    pthread_mutex_unlock(&ep->lock);
    if (old >= 0)
        shutdown(old, SHUT_RDWR);   /* fences the old edge; wakes a blocked sender */
    pthread_mutex_lock(&ep->wlock);
    pthread_mutex_lock(&ep->lock);
    uint64_t epoch = f->u.resume.epoch > ep->keep.epoch ? f->u.resume.epoch
                                                        : ep->keep.epoch + 1;
    rc = resume_material(ep, epoch, &b, err, errlen);
    pthread_mutex_unlock(&ep->lock);
    if (rc == 0 && (rc = ep_write_all(fd, b.p, b.len, ep_now_ms() + EP_HANDSHAKE_MS)) < 0)
        snprintf(err, errlen, "session %llu: send RESUME_INFO: %s", (unsigned long long)id,
                 strerror(-rc));
    else if (rc < 0)
        ep_refuse(fd, WIRE_ERR_SESSION, "resume failed at the server endpoint");
    free(b.p);
    pthread_mutex_lock(&ep->lock);
    if (rc == 0) {
        if (ep->stale_fd >= 0)
            close(ep->stale_fd);
        ep->stale_fd = old;
        ep->fd = fd;
        ep->gen++;
        ep->keep.epoch = epoch;
    }
    ep->resuming = false;
    pthread_cond_broadcast(&ep->cond);
    pthread_mutex_unlock(&ep->lock);
    pthread_mutex_unlock(&ep->wlock);
    pthread_mutex_unlock(&ep->resume_mu);
    pthread_mutex_unlock(&srv->mu);
    return rc;
}

/* A HELLO: a new session that stores and resumes. NULL with err set (fd closed by caller). */
static struct cessna_ep *server_hello(struct cessna_ep_server *srv, int fd,
                                      const struct wire_frame *f, char *err, size_t errlen)
{
    uint8_t frame[WIRE_HDR_LEN + 40];
    uint64_t id = f->u.hello.session_id;
    struct cessna_ep *ep;

    if (!secret_ok(srv, f->u.hello.secret, f->u.hello.secret_len)) {
        snprintf(err, errlen, "session %llu: HELLO with a wrong edge secret",
                 (unsigned long long)id);
        ep_refuse(fd, WIRE_ERR_AUTH, AUTH_FAILED);
        return NULL;
    }
    pthread_mutex_lock(&srv->mu);
    if (find(srv, id)) {
        pthread_mutex_unlock(&srv->mu);
        snprintf(err, errlen, "session %llu is already open", (unsigned long long)id);
        ep_refuse(fd, WIRE_ERR_UNEXPECTED, err);
        return NULL;
    }
    ep = ep_new(fd, EP_SERVER);
    if (ep && !(ep->store = malloc(sizeof(*ep->store)))) {
        cessna_ep_free(ep);
        ep = NULL;
    }
    if (!ep) {
        pthread_mutex_unlock(&srv->mu);
        snprintf(err, errlen, "out of memory");
        ep_refuse(fd, WIRE_ERR_UNAVAILABLE, "server endpoint out of memory");
        return NULL;
    }
    store_init(ep->store, srv->store_dir, id);
    ep->session_id = id;
    memcpy(ep->verifier, f->u.hello.verifier, WIRE_VERIFIER_LEN);
    ep->keep.epoch = f->u.hello.epoch ? f->u.hello.epoch : 1;
    ep->resumable = true;
    size_t n = wire_put_welcome(frame, id, NULL, ep->keep.epoch);
    wire_set_flags(frame, WIRE_F_STORES);   /* ship snapshots here: we store them */
    int rc = ep_write_all(fd, frame, n, ep_now_ms() + EP_HANDSHAKE_MS);
    if (rc < 0) {
        pthread_mutex_unlock(&srv->mu);
        snprintf(err, errlen, "session %llu: send WELCOME: %s", (unsigned long long)id,
                 strerror(-rc));
        ep->fd = -1;   /* the caller closes fd */
        free(ep->store);
        ep->store = NULL;
        cessna_ep_free(ep);
        return NULL;
    }
    ep->srv = srv;
    ep->srv_next = srv->sessions;
    srv->sessions = ep;
    pthread_mutex_unlock(&srv->mu);
    return ep;
}

struct cessna_ep *cessna_ep_server_accept(struct cessna_ep_server *srv, char *err,
                                          size_t errlen)
{
    uint8_t buf[EP_HS_FRAME_MAX + WIRE_SECRET_MAX];
    struct wire_frame f;

    for (;;) {
        int fd;
        do
            fd = accept4(srv->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        while (fd == -1 && errno == EINTR);
        if (fd == -1) {
            snprintf(err, errlen, "accept: %s", strerror(errno));
            return NULL;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        long n = ep_read_hs_frame(fd, buf, sizeof(buf), &f, ep_now_ms() + EP_HANDSHAKE_MS);
        if (n < 0) {
            if (n == -ETIMEDOUT)
                snprintf(err, errlen, "no HELLO or RESUME from the edge in %d ms",
                         EP_HANDSHAKE_MS);
            else if (n == -ECONNRESET)
                snprintf(err, errlen, "edge closed the connection before HELLO");
            else
                snprintf(err, errlen, "bad frame: want HELLO or RESUME (%s)",
                         strerror((int)-n));
            if (n == -EPROTO || n == -EMSGSIZE)
                ep_refuse(fd, n == -EMSGSIZE ? WIRE_ERR_TOO_BIG : WIRE_ERR_PROTO, err);
            close(fd);
            return NULL;
        }
        if (f.type == WIRE_RESUME) {
            if (server_resume(srv, fd, &f, err, errlen) == 0)
                continue;   /* an existing session goes on: not a new one */
            close(fd);
            return NULL;
        }
        if (f.type != WIRE_HELLO || f.u.hello.role != WIRE_ROLE_EDGE) {
            snprintf(err, errlen, "unexpected %s frame, want HELLO role EDGE or RESUME",
                     wire_type_name(f.type));
            ep_refuse(fd, WIRE_ERR_UNEXPECTED, err);
            close(fd);
            return NULL;
        }
        struct cessna_ep *ep = server_hello(srv, fd, &f, err, errlen);
        if (!ep)
            close(fd);
        return ep;
    }
}
