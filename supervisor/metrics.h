/* metrics.h - the Prometheus endpoint of the edge node (metrics_listen): GET /metrics
 * answers the text exposition format 0.0.4, served from the io_uring loop. */
#ifndef CESSNA_METRICS_H
#define CESSNA_METRICS_H

#include <stdint.h>

/* A request larger than this (request line and headers) is refused with 431. */
#define METRICS_REQUEST_MAX 4096
/* Scrapers served at once; more are closed at accept. */
#define METRICS_CONNS       16
/* Descriptors the endpoint may hold: its listener and its connections (loop.c's budget). */
#define METRICS_FDS         (METRICS_CONNS + 1)
/* A connection not answered and closed by then is closed (a silent or slow scraper). */
#define METRICS_TIMEOUT_MS  3000

/* Listen on addr (HOST:PORT). The listener's fd, or -errno with a reason in err. */
int  metrics_listen(const char *addr, char *err, size_t errlen);
/* Start accepting (once the ring is up). */
void metrics_start(void);
/* Completions (loop.c): the multishot accept, and a connection's receive and send. */
void metrics_on_accept(int res, unsigned cqe_flags);
void metrics_on_recv(uint32_t idx, int res);
void metrics_on_send(uint32_t idx, int res);
/* From the periodic sweep: close connections past METRICS_TIMEOUT_MS; accept again after
 * accepting stopped (out of descriptors). */
void metrics_sweep(uint64_t now_ms);

/* Observations for the histograms: a durable snapshot took ns (fork plus write); a
 * recovery of this mode (fresh, cold, hot, remote) took ns from the worker's death (or the
 * fetched chain of a remote one) to the end of the replay. */
void metrics_observe_snapshot(uint64_t ns);
void metrics_observe_recovery(const char *mode, uint64_t ns);

#endif
