/* it_resume_proxy.c - integration: the proxies keep what a new edge needs, store shipped
 * snapshots and resume sessions (docs/protocol.md). Real proxy processes and sockets; the
 * test plays the edges with raw frames. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "addr.h"
#include "cred.h"
#include "order.h"
#include "snap.h"
#include "t_helpers.h"
#include "wire.h"

TestSuite(resume_proxy, .timeout = 60);

#define SID 4242
#define FRAME_CAP ((1u << 20) + 8192)

static const uint8_t token[WIRE_TOKEN_LEN] = "client-cred-0001";
static const uint8_t wrong_token[WIRE_TOKEN_LEN] = "client-cred-XXXX";

/* ---- frames ---- */

static uint8_t fbuf[FRAME_CAP];

/* The next frame from fd (decoded into *f, pointing into a static buffer). */
static void read_frame(int fd, struct wire_frame *f, const char *what)
{
    long n = t_read_frame(fd, fbuf, sizeof(fbuf), 5000);

    cr_assert_gt(n, 0, "%s: no frame (%ld)", what, n);
    cr_assert_eq(wire_next(fbuf, (size_t)n, sizeof(fbuf), f), n, "%s: bad frame", what);
}

static void expect(int fd, uint8_t type, struct wire_frame *f, const char *what)
{
    read_frame(fd, f, what);
    cr_assert_eq(f->type, type, "%s: got %s, want %s", what, wire_type_name(f->type),
                 wire_type_name(type));
}

static void expect_error(int fd, uint32_t code, char *text, size_t len)
{
    struct wire_frame f;

    expect(fd, WIRE_ERROR, &f, "ERROR");
    cr_expect_eq(f.u.error.code, code, "code %u (%.*s)", f.u.error.code,
                 (int)f.u.error.text_len, f.u.error.text);
    if (text)
        snprintf(text, len, "%.*s", (int)f.u.error.text_len, f.u.error.text);
}

static void send_out(int fd, uint64_t no, const uint8_t *order, uint32_t olen, const char *p)
{
    uint8_t buf[4096];
    size_t n = wire_put_out_hdr(buf, no, order, olen, strlen(p));

    memcpy(buf + n, p, strlen(p));
    t_write_all(fd, buf, n + strlen(p));
}

static void send_empty(int fd, uint8_t type)
{
    uint8_t buf[WIRE_HDR_LEN];

    t_write_all(fd, buf, wire_put_empty(buf, type));
}

static void send_durable(int fd, uint64_t pos, uint64_t seq_client, uint64_t seq_server)
{
    uint8_t buf[WIRE_HDR_LEN + 24];

    t_write_all(fd, buf, wire_put_snap_durable(buf, pos, seq_client, seq_server));
}

/* Ship a file as SNAP_PUT pieces of piece bytes. */
static void ship(int fd, uint64_t pos, uint64_t base, const uint8_t *p, size_t len, size_t piece)
{
    uint8_t hdr[WIRE_SNAP_PUT_HDR_LEN];

    for (size_t off = 0; off < len; off += piece) {
        size_t n = len - off < piece ? len - off : piece;
        t_write_all(fd, hdr, wire_put_snap_put_hdr(hdr, pos, base, len, off, n));
        t_write_all(fd, p + off, n);
    }
}

static size_t order_bytes(uint8_t *buf, const struct order_entry *e, size_t n, uint64_t *prev)
{
    size_t len = 0;

    for (size_t i = 0; i < n; i++)
        len += order_encode(buf + len, &e[i], prev);
    return len;
}

/* ---- processes ---- */

static void start_sproxy(struct t_proc *p, const char *target, char *const extra[])
{
    char *argv[16] = { (char *)t_bin("cessna-server-proxy"), "--listen", "127.0.0.1:0",
                       "--target", (char *)target };
    int n = 5;

    for (int i = 0; extra && extra[i]; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    t_start(p, t_tmpdir(), "server-proxy", argv);
}

static int listen_any(char *addr, size_t len)
{
    char err[128];
    int fd = addr_listen("127.0.0.1:0", err, sizeof(err));

    cr_assert_geq(fd, 0, "%s", err);
    snprintf(addr, len, "127.0.0.1:%d", addr_local_port(fd));
    return fd;
}

/* Accept within timeout_ms, or -1. */
static int accept_within(int lfd, int timeout_ms)
{
    struct pollfd p = { .fd = lfd, .events = POLLIN };

    if (poll(&p, 1, timeout_ms) != 1)
        return -1;
    return accept(lfd, NULL, NULL);
}

static void expect_plain(int fd, const char *want)
{
    char buf[256] = "";
    size_t n = strlen(want);

    cr_assert_eq(t_read_n(fd, buf, n, 5000), (long)n, "want '%s'", want);
    cr_expect_arr_eq(buf, want, n, "got '%.*s', want '%s'", (int)n, buf, want);
}

/* An edge session at the server proxy: HELLO with the verifier of `token`. */
static int edge_hello(const char *addr, uint64_t id, const char *secret)
{
    uint8_t buf[WIRE_RESUME_MAX], v[WIRE_VERIFIER_LEN];
    int fd = t_connect(addr);

    cred_verifier(token, v);
    t_write_all(fd, buf, wire_put_hello_edge(buf, id, 1, v, secret,
                                             secret ? strlen(secret) : 0));
    return fd;
}

static int edge_resume(const char *addr, uint64_t id, const uint8_t *tok, uint64_t epoch,
                       const char *secret)
{
    uint8_t buf[WIRE_RESUME_MAX];
    int fd = t_connect(addr);

    t_write_all(fd, buf, wire_put_resume(buf, id, tok, epoch, 0, 0, 0, secret,
                                         secret ? strlen(secret) : 0));
    return fd;
}

/* A session at a server proxy with a target the test holds. */
struct ssess {
    struct t_proc sp;
    int lfd, target, edge;
    char taddr[64];
};

static void ssess_open(struct ssess *s, char *const extra[], const char *secret)
{
    struct wire_frame f;

    cr_assert_eq(cred_init(), 0);
    s->lfd = listen_any(s->taddr, sizeof(s->taddr));
    start_sproxy(&s->sp, s->taddr, extra);
    s->edge = edge_hello(s->sp.addr, SID, secret);
    expect(s->edge, WIRE_WELCOME, &f, "WELCOME");
    cr_expect_eq(f.u.welcome.session_id, SID);
    cr_expect_eq(f.u.welcome.epoch, 1);
    s->target = accept_within(s->lfd, 5000);
    cr_assert_geq(s->target, 0, "the proxy connects to the target");
}

static void ssess_close(struct ssess *s)
{
    close(s->edge);
    close(s->target);
    close(s->lfd);
    t_stop(&s->sp);
}

/* ---- snapshot files (real ones: the store verifies them) ---- */

struct snapfile { uint8_t *bytes; size_t len; };

static struct snapfile make_snap(uint64_t id, uint64_t pos, uint64_t base, uint64_t seed)
{
    enum { PAGES = 20 };
    static uint8_t *mem;
    char dir[512], name[64], path[700], err[256];
    struct snap_meta m;
    struct snapfile sf;

    if (!mem)
        mem = mmap(NULL, PAGES * SNAP_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    t_fill(mem, PAGES * SNAP_PAGE, seed);   /* random: about 80 KiB, several pieces */
    snap_set_compression(0);
    memset(&m, 0, sizeof(m));
    m.session_id = id;
    m.position = pos;
    m.base_position = base;
    m.kind = base ? SNAP_DELTA : SNAP_FULL;
    m.max_message = 1u << 20;
    m.nregions = 1;
    m.regions[0] = (struct snap_region){ (uintptr_t)mem, PAGES * SNAP_PAGE };
    snprintf(dir, sizeof(dir), "%s", t_tmpdir());
    cr_assert_eq(snap_write(dir, &m, NULL, NULL, err, sizeof(err)), 0, "snap_write: %s", err);
    snap_name(name, sizeof(name), pos, m.kind);
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_RDONLY);
    cr_assert_geq(fd, 0);
    struct stat st;
    fstat(fd, &st);
    sf.len = (size_t)st.st_size;
    sf.bytes = malloc(sf.len);
    cr_assert_eq(read(fd, sf.bytes, sf.len), (ssize_t)sf.len);
    close(fd);
    return sf;
}

static bool exists(const char *dir, uint64_t pos, uint32_t kind)
{
    char name[64], path[700];
    struct stat st;

    snap_name(name, sizeof(name), pos, kind);
    snprintf(path, sizeof(path), "%s/%d/%s", dir, SID, name);
    return stat(path, &st) == 0;
}

/* Names in DIR/<SID> (the count), with any temp file failing the test. */
static int files_in(const char *dir)
{
    char cmd[700], line[256];
    int n = 0;

    snprintf(cmd, sizeof(cmd), "ls -1 %s/%d 2>/dev/null", dir, SID);
    FILE *p = popen(cmd, "r");
    while (p && fgets(line, sizeof(line), p)) {
        cr_expect(!strstr(line, ".tmp"), "temp file left: %s", line);
        n++;
    }
    if (p)
        pclose(p);
    return n;
}

/* ---- server proxy ---- */

Test(resume_proxy, server_stores_snapshot_pieces_acks_and_keeps_only_the_newest_chain)
{
    struct ssess s;
    struct wire_frame f;
    char store[600];
    struct stat st;

    snprintf(store, sizeof(store), "%s/store", t_tmpdir());
    ssess_open(&s, (char *[]){ "--store", store, NULL }, NULL);
    struct snapfile full = make_snap(SID, 5, 0, 1), delta = make_snap(SID, 9, 5, 2),
                    full2 = make_snap(SID, 12, 0, 3);
    cr_assert_gt(full.len, 2 * WIRE_SNAP_PIECE, "several pieces of 32 KiB");

    ship(s.edge, 5, 0, full.bytes, full.len, WIRE_SNAP_PIECE);
    send_out(s.edge, 1, NULL, 0, "interleaved");   /* OUTs go on meanwhile */
    expect(s.edge, WIRE_SNAP_ACK, &f, "SNAP_ACK 5");
    cr_expect_eq(f.u.snap.position, 5);
    cr_expect(exists(store, 5, SNAP_FULL), "the full snapshot file is there");
    expect_plain(s.target, "interleaved");

    ship(s.edge, 9, 5, delta.bytes, delta.len, 10000);
    expect(s.edge, WIRE_SNAP_ACK, &f, "SNAP_ACK 9");
    cr_expect_eq(f.u.snap.position, 9);
    cr_expect(exists(store, 9, SNAP_DELTA));
    cr_expect_eq(files_in(store), 2);

    ship(s.edge, 12, 0, full2.bytes, full2.len, WIRE_SNAP_PIECE);
    expect(s.edge, WIRE_SNAP_ACK, &f, "SNAP_ACK 12");
    cr_expect_eq(f.u.snap.position, 12);
    cr_expect(exists(store, 12, SNAP_FULL));
    cr_expect(!exists(store, 5, SNAP_FULL), "the older chain is removed");
    cr_expect(!exists(store, 9, SNAP_DELTA));
    cr_expect_eq(files_in(store), 1);

    /* The session ends with CLOSE: its store goes. */
    send_empty(s.edge, WIRE_CLOSE);
    expect(s.edge, WIRE_CLOSE, &f, "CLOSE");
    char path[700];
    snprintf(path, sizeof(path), "%s/%d", store, SID);
    for (int i = 0; i < 100 && stat(path, &st) == 0; i++)
        usleep(20000);
    cr_expect_neq(stat(path, &st), 0, "the session's store directory is removed");
    ssess_close(&s);
}

Test(resume_proxy, server_refuses_bad_snapshot_pieces)
{
    struct ssess s;
    char store[600], text[256];
    uint8_t hdr[WIRE_SNAP_PUT_HDR_LEN], bytes[100] = { 0 };
    struct wire_frame f;

    /* A gap: the second piece does not start where the first ended. */
    ssess_open(&s, NULL, NULL);
    t_write_all(s.edge, hdr, wire_put_snap_put_hdr(hdr, 3, 0, 300, 0, 100));
    t_write_all(s.edge, bytes, 100);
    t_write_all(s.edge, hdr, wire_put_snap_put_hdr(hdr, 3, 0, 300, 150, 100));
    t_write_all(s.edge, bytes, 100);
    expect_error(s.edge, WIRE_ERR_PROTO, text, sizeof(text));
    cr_expect(strstr(text, "out of order"), "%s", text);
    ssess_close(&s);

    /* A delta on a base that is not the chain's last snapshot. */
    ssess_open(&s, NULL, NULL);
    ship(s.edge, 4, 0, bytes, 100, 100);
    expect(s.edge, WIRE_SNAP_ACK, &f, "in memory, not verified: ACK");
    ship(s.edge, 8, 3, bytes, 100, 100);
    expect_error(s.edge, WIRE_ERR_PROTO, text, sizeof(text));
    cr_expect(strstr(text, "base 3"), "%s", text);
    ssess_close(&s);

    /* With --store, a file that does not verify gets ERROR, not SNAP_ACK. */
    snprintf(store, sizeof(store), "%s/store", t_tmpdir());
    ssess_open(&s, (char *[]){ "--store", store, NULL }, NULL);
    struct snapfile sf = make_snap(SID, 5, 0, 4);
    sf.bytes[sf.len / 2] ^= 1;
    ship(s.edge, 5, 0, sf.bytes, sf.len, WIRE_SNAP_PIECE);
    expect_error(s.edge, WIRE_ERR_PROTO, text, sizeof(text));
    cr_expect(strstr(text, "does not verify"), "%s", text);
    cr_expect(!exists(store, 5, SNAP_FULL), "no file left");
    ssess_close(&s);
}

static const char *secret_file(const char *secret)
{
    static char path[600];

    snprintf(path, sizeof(path), "%s/edge.secret", t_tmpdir());
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fprintf(f, "%s\n", secret);
    fclose(f);
    chmod(path, 0600);
    return path;
}

Test(resume_proxy, server_requires_the_edge_secret)
{
    struct t_proc sp;
    struct wire_frame f;
    char taddr[64], text[256];
    const char *path = secret_file("the-edge-secret-0123456789");
    int lfd = listen_any(taddr, sizeof(taddr));

    cr_assert_eq(cred_init(), 0);
    start_sproxy(&sp, taddr, (char *[]){ "--edge-secret-file", (char *)path, NULL });
    int e = edge_hello(sp.addr, 1, "a-wrong-secret-0123456789");
    expect_error(e, WIRE_ERR_AUTH, text, sizeof(text));
    cr_expect_str_eq(text, "authentication failed");
    close(e);
    e = edge_hello(sp.addr, 2, NULL);
    expect_error(e, WIRE_ERR_AUTH, text, sizeof(text));
    cr_expect_str_eq(text, "authentication failed");
    close(e);
    cr_expect_eq(accept_within(lfd, 300), -1, "nothing reached the target");

    e = edge_hello(sp.addr, 3, "the-edge-secret-0123456789");
    expect(e, WIRE_WELCOME, &f, "WELCOME with the right secret");
    int t = accept_within(lfd, 5000);
    cr_expect_geq(t, 0);
    close(e);
    close(t);
    close(lfd);
    t_stop(&sp);
}

Test(resume_proxy, server_resume_with_wrong_credential_gets_the_text_of_an_unknown_id)
{
    struct ssess s;
    char wrong[256], unknown[256];

    ssess_open(&s, NULL, NULL);
    int e = edge_resume(s.sp.addr, SID, wrong_token, 2, NULL);
    expect_error(e, WIRE_ERR_AUTH, wrong, sizeof(wrong));
    close(e);
    e = edge_resume(s.sp.addr, SID + 1, token, 2, NULL);
    expect_error(e, WIRE_ERR_AUTH, unknown, sizeof(unknown));
    close(e);
    cr_expect_str_eq(wrong, unknown, "one text for every auth failure");
    /* The session itself was not touched. */
    send_out(s.edge, 1, NULL, 0, "still");
    expect_plain(s.target, "still");
    ssess_close(&s);
}

/* Read one target chunk as exactly `want` after it is written (one DATA per chunk). */
static void target_says(struct ssess *s, const char *what, uint64_t seq)
{
    struct wire_frame f;

    t_write_all(s->target, what, strlen(what));
    if (seq) {
        expect(s->edge, WIRE_DATA, &f, what);
        cr_expect_eq(f.u.data.seq, seq);
        cr_expect_arr_eq(f.u.data.payload, what, strlen(what));
    }
}

Test(resume_proxy, server_resumes_after_edge_loss_with_chain_order_and_kept_data)
{
    struct ssess s;
    struct wire_frame f;
    uint8_t order[64], chain[100];
    uint64_t prev = 0;
    struct order_entry e[3] = {
        { ORDER_START, 1000, 0 }, { ORDER_CLIENT, 1010, 0 }, { ORDER_TIMER, 1020, 9 },
    };

    ssess_open(&s, (char *[]){ "--linger-ms", "5000", NULL }, NULL);
    send_out(s.edge, 1, order, (uint32_t)order_bytes(order, e, 2, &prev), "req1");
    expect_plain(s.target, "req1");
    target_says(&s, "rep1", 1);
    send_out(s.edge, 2, order, (uint32_t)order_bytes(order, e + 2, 1, &prev), "req2");
    expect_plain(s.target, "req2");
    target_says(&s, "rep2", 2);
    memset(chain, 7, sizeof(chain));
    ship(s.edge, 1, 0, chain, sizeof(chain), 60);
    expect(s.edge, WIRE_SNAP_ACK, &f, "SNAP_ACK 1");
    send_durable(s.edge, 1, 0, 1);   /* frees DATA 1 and the order before position 1 */
    usleep(100000);
    close(s.edge);                   /* lost without CLOSE */
    usleep(100000);
    target_says(&s, "late", 0);      /* read into the keep buffer while detached */
    usleep(200000);

    int n = edge_resume(s.sp.addr, SID, token, 1, NULL);
    expect(n, WIRE_RESUME_INFO, &f, "RESUME_INFO");
    cr_expect_eq(f.u.resume_info.epoch, 2);
    cr_expect_eq(f.u.resume_info.last_out, 2);
    cr_expect_eq(f.u.resume_info.next_seq, 4);
    cr_expect_eq(f.u.resume_info.order_base, 1);   /* the durable position's entry stays */
    expect(n, WIRE_SNAP_PUT, &f, "the chain");
    cr_expect_eq(f.u.snap_put.position, 1);
    cr_expect_eq(f.u.snap_put.base, 0);
    cr_expect_eq(f.u.snap_put.total, sizeof(chain));
    cr_expect_eq(f.u.snap_put.len, sizeof(chain));
    cr_expect_arr_eq(f.u.snap_put.bytes, chain, sizeof(chain));
    expect(n, WIRE_ORDER, &f, "ORDER");
    size_t off = 0;
    uint64_t t = 0;
    struct order_entry d;
    for (int i = 0; i < 3; i++) {   /* positions 1 to 3, times absolute from 0 */
        cr_assert_eq(order_decode(f.u.out.order, f.u.out.order_len, &off, &d, &t), 0);
        cr_expect_eq(d.src, e[i].src);
        cr_expect_eq(d.time_ms, e[i].time_ms);
    }
    cr_expect_eq(off, f.u.out.order_len);
    expect(n, WIRE_DATA, &f, "kept DATA 2");
    cr_expect_eq(f.u.data.seq, 2);
    cr_expect_arr_eq(f.u.data.payload, "rep2", 4);
    expect(n, WIRE_DATA, &f, "kept DATA 3");
    cr_expect_eq(f.u.data.seq, 3);
    cr_expect_arr_eq(f.u.data.payload, "late", 4);
    expect(n, WIRE_RESUME_END, &f, "RESUME_END");

    /* Live again on the same target connection. */
    send_out(n, 2, NULL, 0, "dup");      /* a duplicate: dropped */
    send_out(n, 3, NULL, 0, "req3");
    expect_plain(s.target, "req3");
    target_says(&s, "rep3", 4);
    send_empty(n, WIRE_CLOSE);
    expect(n, WIRE_CLOSE, &f, "CLOSE");
    char c;
    cr_expect_eq(t_recv_wait(s.target, &c, 1, 5000), 0, "the target sees a clean end");
    close(n);
    ssess_close(&s);
}

Test(resume_proxy, server_linger_expiry_resets_the_target)
{
    struct ssess s;
    char c;

    ssess_open(&s, (char *[]){ "--linger-ms", "400", NULL }, NULL);
    long t0 = t_now_ms();
    close(s.edge);
    long rc = t_recv_wait(s.target, &c, 1, 5000);
    cr_expect_eq(rc, -ECONNRESET, "the target sees a reset, got %ld", rc);
    cr_expect_geq(t_now_ms() - t0, 350, "not before the linger");
    /* The session is forgotten: a RESUME now is refused. */
    int e = edge_resume(s.sp.addr, SID, token, 2, NULL);
    expect_error(e, WIRE_ERR_AUTH, NULL, 0);
    close(e);
    s.edge = -1;
    ssess_close(&s);
}

Test(resume_proxy, server_fences_the_old_edge)
{
    struct ssess s;
    struct wire_frame f;
    char c;

    ssess_open(&s, NULL, NULL);
    int n = edge_resume(s.sp.addr, SID, token, 7, NULL);   /* the old edge is still attached */
    expect(n, WIRE_RESUME_INFO, &f, "RESUME_INFO");
    cr_expect_eq(f.u.resume_info.epoch, 7, "the proposed epoch, above the current");
    expect(n, WIRE_RESUME_END, &f, "RESUME_END");
    /* The old connection is closed; what it sends is never acted on. */
    send_out(s.edge, 1, NULL, 0, "from the fenced edge");
    long rc = t_recv_wait(s.edge, &c, 1, 5000);
    cr_expect(rc == 0 || rc == -ECONNRESET, "the old edge's connection ends, got %ld", rc);
    send_out(n, 1, NULL, 0, "new");
    expect_plain(s.target, "new");
    cr_expect_eq(t_recv_wait(s.target, &c, 1, 300), -ETIMEDOUT, "nothing else reached the target");
    send_empty(n, WIRE_CLOSE);
    expect(n, WIRE_CLOSE, &f, "CLOSE");
    close(n);
    ssess_close(&s);
}

/* ---- client proxy ---- */

/* A client proxy with edges A (listening) and B (bound; listening only when the test says),
 * a plain client, and the session open at A. */
struct csess {
    struct t_proc cp;
    int alfd, blfd, a, plain;
    char aaddr[64], baddr[64];
};

static void csess_open(struct csess *c, char *const extra[])
{
    char err[128];
    struct wire_frame f;
    uint8_t buf[64];
    char *argv[20] = { (char *)t_bin("cessna-client-proxy"), "--listen", "127.0.0.1:0",
                       "--edge", NULL };
    char edges[140];
    int n = 5;

    c->alfd = listen_any(c->aaddr, sizeof(c->aaddr));
    /* B: bound, not listening: connecting to it is refused until listen(). */
    c->blfd = addr_listen("127.0.0.1:0", err, sizeof(err));
    cr_assert_geq(c->blfd, 0, "%s", err);
    snprintf(c->baddr, sizeof(c->baddr), "127.0.0.1:%d", addr_local_port(c->blfd));
    close(c->blfd);
    c->blfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_storage ss;
    socklen_t sl;
    cr_assert_eq(addr_parse(c->baddr, &ss, &sl, err, sizeof(err)), 0);
    int one = 1;
    setsockopt(c->blfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    cr_assert_eq(bind(c->blfd, (struct sockaddr *)&ss, sl), 0, "bind B: %s", strerror(errno));
    snprintf(edges, sizeof(edges), "%s,%s", c->aaddr, c->baddr);
    argv[4] = edges;
    for (int i = 0; extra && extra[i]; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    t_start(&c->cp, t_tmpdir(), "client-proxy", argv);
    c->plain = t_connect(c->cp.addr);
    c->a = accept_within(c->alfd, 5000);
    cr_assert_geq(c->a, 0, "the proxy connects to edge A");
    close(c->alfd);   /* from now on A refuses: only B can take the session */
    expect(c->a, WIRE_HELLO, &f, "HELLO");
    t_write_all(c->a, buf, wire_put_welcome(buf, SID, token, 1));
}

static void csess_close(struct csess *c)
{
    if (c->a >= 0)
        close(c->a);
    close(c->blfd);
    close(c->plain);
    t_stop(&c->cp);
}

/* The plain client writes `what`; the edge at fd reads it as DATA seq. */
static void client_says(struct csess *c, int fd, const char *what, uint64_t seq)
{
    struct wire_frame f;

    t_write_all(c->plain, what, strlen(what));
    expect(fd, WIRE_DATA, &f, what);
    cr_expect_eq(f.u.data.seq, seq);
    cr_expect_arr_eq(f.u.data.payload, what, strlen(what));
}

/* B starts listening; the proxy's RESUME arrives. Returns B's connection. */
static int b_accepts_resume(struct csess *c, struct wire_frame *f, int timeout_ms)
{
    cr_assert_eq(listen(c->blfd, 8), 0);
    int b = accept_within(c->blfd, timeout_ms);
    cr_assert_geq(b, 0, "the proxy resumes at edge B");
    expect(b, WIRE_RESUME, f, "RESUME");
    cr_expect_eq(f->u.resume.session_id, SID);
    cr_expect_arr_eq(f->u.resume.token, token, WIRE_TOKEN_LEN);
    cr_expect_eq(f->u.resume.secret_len, 0);
    return b;
}

Test(resume_proxy, client_resumes_at_the_next_edge_with_order_and_kept_data)
{
    struct csess c;
    struct wire_frame f;
    uint8_t order[64], buf[64];
    uint64_t prev = 0;
    struct order_entry e[3] = {
        { ORDER_START, 500, 0 }, { ORDER_CLIENT, 510, 0 }, { ORDER_CLIENT, 530, 0 },
    };

    csess_open(&c, NULL);
    client_says(&c, c.a, "m1", 1);
    send_out(c.a, 1, order, (uint32_t)order_bytes(order, e, 2, &prev), "r1");
    expect_plain(c.plain, "r1");
    client_says(&c, c.a, "m2", 2);
    /* ORDER ahead of its OUT: position 3 */
    wire_put_hdr(buf, WIRE_ORDER, (uint32_t)order_bytes(buf + WIRE_HDR_LEN, e + 2, 1, &prev));
    t_write_all(c.a, buf, WIRE_HDR_LEN + wire_get32(buf + 8));
    send_durable(c.a, 1, 1, 0);           /* frees DATA 1 (position 1 stays) */
    usleep(100000);
    long t0 = t_now_ms();
    close(c.a);                           /* A is gone without CLOSE */
    c.a = -1;
    usleep(100000);
    t_write_all(c.plain, "m3", 2);        /* kept while no edge holds the session */
    usleep(300000);

    int b = b_accepts_resume(&c, &f, 5000);
    cr_expect_eq(f.u.resume.epoch, 1);
    cr_expect_eq(f.u.resume.last_out, 1);
    cr_expect_eq(f.u.resume.next_seq, 4);
    cr_expect_eq(f.u.resume.order_base, 1);   /* the durable position's entry stays */
    expect(b, WIRE_ORDER, &f, "ORDER");
    size_t off = 0;
    uint64_t t = 0;
    struct order_entry d;
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(order_decode(f.u.out.order, f.u.out.order_len, &off, &d, &t), 0);
        cr_expect_eq(d.src, e[i].src);
        cr_expect_eq(d.time_ms, e[i].time_ms, "absolute time, re-encoded from 0");
    }
    cr_expect_eq(off, f.u.out.order_len);
    expect(b, WIRE_DATA, &f, "kept DATA 2");
    cr_expect_eq(f.u.data.seq, 2);
    cr_expect_arr_eq(f.u.data.payload, "m2", 2);
    expect(b, WIRE_DATA, &f, "kept DATA 3");
    cr_expect_eq(f.u.data.seq, 3);
    cr_expect_arr_eq(f.u.data.payload, "m3", 2);
    expect(b, WIRE_RESUME_END, &f, "RESUME_END");
    t_write_all(b, buf, wire_put_welcome(buf, SID, token, 2));
    send_out(b, 1, NULL, 0, "r1 again");  /* a duplicate: dropped */
    send_out(b, 2, NULL, 0, "r2");
    expect_plain(c.plain, "r2");
    client_says(&c, b, "m4", 4);
    cr_expect_lt(t_now_ms() - t0, 5000);

    shutdown(c.plain, SHUT_WR);
    expect(b, WIRE_CLOSE, &f, "CLOSE");
    send_empty(b, WIRE_CLOSE);
    char ch;
    cr_expect_eq(t_recv_wait(c.plain, &ch, 1, 5000), 0, "a clean end for the client");
    close(b);
    csess_close(&c);
}

Test(resume_proxy, client_heartbeat_timeout_and_move_start_a_resume)
{
    struct csess c;
    struct wire_frame f;
    uint8_t buf[64];

    /* HEARTBEATs keep a quiet edge alive; silence past --heartbeat-ms loses it. */
    csess_open(&c, (char *[]){ "--heartbeat-ms", "400", NULL });
    cr_assert_eq(listen(c.blfd, 8), 0);
    for (int i = 0; i < 10; i++) {
        send_empty(c.a, WIRE_HEARTBEAT);
        usleep(100000);
    }
    cr_expect_eq(accept_within(c.blfd, 0), -1, "no resume while heartbeats arrive");
    long t0 = t_now_ms();
    int b = accept_within(c.blfd, 3000);
    cr_assert_geq(b, 0, "a resume after the heartbeat timeout");
    cr_expect_geq(t_now_ms() - t0, 250);
    expect(b, WIRE_RESUME, &f, "RESUME");
    expect(b, WIRE_RESUME_END, &f, "RESUME_END (nothing kept)");
    t_write_all(b, buf, wire_put_welcome(buf, SID, token, 2));
    client_says(&c, b, "after", 1);
    close(b);
    csess_close(&c);

    /* MOVE: the edge is leaving. */
    csess_open(&c, NULL);
    client_says(&c, c.a, "x", 1);
    /* B listens first: the resume goes there at once, and A (which refuses now) is never
     * tried, so nothing but the MOVE could mark A failed. */
    cr_assert_eq(listen(c.blfd, 8), 0);
    send_empty(c.a, WIRE_MOVE);
    b = b_accepts_resume(&c, &f, 3000);
    cr_expect_eq(f.u.resume.next_seq, 2);
    expect(b, WIRE_DATA, &f, "kept DATA 1");
    expect(b, WIRE_RESUME_END, &f, "RESUME_END");
    t_write_all(b, buf, wire_put_welcome(buf, SID, token, 5));
    client_says(&c, b, "y", 2);
    /* An edge that sent MOVE asked; it is not down: a new session still tries it first
     * (an edge marked failed would be skipped for --edge-retry-ms, 10 s by default). */
    char err[128];
    int alfd = addr_listen(c.aaddr, err, sizeof(err));
    cr_assert_geq(alfd, 0, "listen at A again: %s", err);
    int plain2 = t_connect(c.cp.addr);
    int a2 = accept_within(alfd, 2000);
    cr_expect_geq(a2, 0, "the next session goes to A, the edge that moved the first one");
    if (a2 >= 0)
        close(a2);
    close(plain2);
    close(alfd);
    close(b);
    csess_close(&c);
}

Test(resume_proxy, client_error_auth_ends_the_session_with_a_reset)
{
    struct csess c;
    struct wire_frame f;
    uint8_t buf[128];
    char ch;

    csess_open(&c, NULL);
    close(c.a);
    c.a = -1;
    int b = b_accepts_resume(&c, &f, 3000);
    expect(b, WIRE_RESUME_END, &f, "RESUME_END");
    t_write_all(b, buf, wire_put_error(buf, sizeof(buf), WIRE_ERR_AUTH, "authentication failed"));
    long rc = t_recv_wait(c.plain, &ch, 1, 5000);
    cr_expect_eq(rc, -ECONNRESET, "the client sees a reset, got %ld", rc);
    close(b);
    csess_close(&c);
}

Test(resume_proxy, client_other_errors_try_the_next_edge_and_a_stale_epoch_is_refused)
{
    struct csess c;
    struct wire_frame f;
    uint8_t buf[128];

    csess_open(&c, NULL);
    close(c.a);
    c.a = -1;
    int b = b_accepts_resume(&c, &f, 3000);
    expect(b, WIRE_RESUME_END, &f, "RESUME_END");
    t_write_all(b, buf, wire_put_error(buf, sizeof(buf), WIRE_ERR_UNAVAILABLE, "busy"));
    close(b);
    b = accept_within(c.blfd, 5000);   /* A refuses; back at B after the backoff */
    cr_assert_geq(b, 0, "tried again");
    expect(b, WIRE_RESUME, &f, "RESUME again");
    expect(b, WIRE_RESUME_END, &f, "RESUME_END");
    t_write_all(b, buf, wire_put_welcome(buf, SID, token, 1));   /* not above epoch 1 */
    close(b);
    b = accept_within(c.blfd, 5000);
    cr_assert_geq(b, 0, "a stale epoch is not accepted: tried again");
    expect(b, WIRE_RESUME, &f, "RESUME a third time");
    expect(b, WIRE_RESUME_END, &f, "RESUME_END");
    t_write_all(b, buf, wire_put_welcome(buf, SID, token, 2));
    client_says(&c, b, "ok", 1);
    close(b);
    csess_close(&c);
}

Test(resume_proxy, client_resume_timeout_resets_the_client)
{
    struct csess c;
    char ch;

    csess_open(&c, (char *[]){ "--resume-timeout-ms", "600", NULL });
    long t0 = t_now_ms();
    close(c.a);
    c.a = -1;
    long rc = t_recv_wait(c.plain, &ch, 1, 5000);
    cr_expect_eq(rc, -ECONNRESET, "the client sees a reset, got %ld", rc);
    cr_expect_geq(t_now_ms() - t0, 550, "not before the resume timeout");
    csess_close(&c);
}

struct writer { int fd; size_t total; volatile size_t written; };

static void *writer_main(void *p)
{
    struct writer *w = p;
    static uint8_t data[4096];

    memset(data, 'k', sizeof(data));
    while (w->written < w->total) {
        ssize_t k = send(w->fd, data, sizeof(data), MSG_NOSIGNAL);
        if (k <= 0)
            break;
        w->written += (size_t)k;
    }
    return NULL;
}

Test(resume_proxy, client_keep_cap_stops_reading_until_durable)
{
    struct csess c;
    struct writer w = { .total = 8u << 20 };
    pthread_t th;
    struct wire_frame f;
    size_t got = 0;
    uint64_t seq = 0;

    csess_open(&c, (char *[]){ "--keep-max-bytes", "200000", NULL });
    w.fd = c.plain;
    pthread_create(&th, NULL, writer_main, &w);
    /* Without SNAP_DURABLE the proxy stops past 200000 kept bytes (one read beyond). */
    for (;;) {
        long n = t_read_frame(c.a, fbuf, sizeof(fbuf), 500);
        if (n == -ETIMEDOUT)
            break;
        cr_assert_gt(n, 0);
        cr_assert_eq(wire_next(fbuf, (size_t)n, sizeof(fbuf), &f), n);
        cr_assert_eq(f.type, WIRE_DATA);
        seq = f.u.data.seq;
        got += f.u.data.len;
    }
    cr_expect_leq(got, 200000 + (1u << 20), "read %zu bytes past the cap", got);
    cr_expect_lt(got, w.total);
    /* Durable: room again, reading goes on. */
    send_durable(c.a, 0, seq, 0);
    long n = t_read_frame(c.a, fbuf, sizeof(fbuf), 3000);
    cr_assert_gt(n, 0, "more DATA once SNAP_DURABLE freed room");
    cr_assert_eq(wire_next(fbuf, (size_t)n, sizeof(fbuf), &f), n);
    cr_expect_eq(f.u.data.seq, seq + 1);
    shutdown(c.plain, SHUT_RDWR);
    pthread_join(th, NULL);
    csess_close(&c);
}
