/*
 * pmi_load_client: the lock-step PMI-1 load generator of pmibridge's benchmarks (bench/, issue 5).
 *
 * Why C and not Node: the client side is then the same cheap, fixed cost for both servers (as
 * MPICH's own C client is), so a ratio compares the servers only; a Node client would add its own
 * ~10-20 us per round trip to both sides and pull every ratio towards 1, and on 2 cores it would
 * compete with the server for CPU much harder than this does.
 *
 * Like a real MPICH rank: one outstanding request per connection (write a line, read the reply
 * line, repeat). Connects as MPICH does: PMI_FD (inherited socket, no handshake), or PMI_PORT
 * (host:port, tcp://host:port, unix:///path, /path) + PMI_ID, which sends `cmd=initack pmiid=ID`
 * first. Then, untimed: init, barrier_in (so that every client of a job starts together). Then
 * the timed `cmd=get kvsname=K key=KEY` loop, then finalize (untimed).
 *
 *   --iters N --warmup M        count mode: M untimed gets, then N timed ones (B1)
 *   --warmup-ms W --window-ms D --tail-ms T
 *                               window mode: after the barrier, W ms of warm-up, D ms measured,
 *                               T ms more so that every client is still loading the server while
 *                               the others measure (B2); gets completed inside D are counted
 *   --conns K                   K lock-step connections in this process (PMI_PORT only; PMI_ID,
 *                               PMI_ID+1, …), driven with epoll; default 1 (blocking I/O)
 *   --key KEY --kvsname K       what to get (default PMI_process_mapping, kvs_pmibridge_0)
 *   --cmd LINE [--expect P]     repeat this request line instead of the get (B3: a get of a
 *                               missing key, which a relay must forward; get_maxes, which it
 *                               answers itself); every reply must start with P (default: any
 *                               reply but cmd=error). Without --cmd: `cmd=get_result rc=0`.
 *   --out DIR                   write DIR/client-<pid>.json (else stdout)
 *
 * The result: count, the measured span, and a histogram of round-trip times in 100 ns buckets
 * (sparse: [bucket, count] pairs), merged by the bench runner into exact percentiles.
 * Every read and wait is bounded (SO_RCVTIMEO 60 s); errors exit non-zero with a message.
 *
 * Build: cc -O2 -o pmi_load_client pmi_load_client.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define PMI_PROG "pmi_load_client"
#include "pmi_client_io.h"

#define BUCKET_NS 100
#define NBUCKETS 500000 /* 50 ms */
#define MAX_CONNS 1024

struct conn {
    int fd;
    char buf[8192];
    size_t len;
    uint64_t sent_at;
};

static uint32_t *hist;
static const char *expect_prefix = "cmd=get_result rc=0"; /* NULL: anything but cmd=error */
static uint64_t overflow, max_ns, measured;

static void fail(const char *fmt, const char *arg)
{
    fprintf(stderr, "pmi_load_client: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    exit(1);
}

static void record(uint64_t rtt)
{
    uint64_t b = rtt / BUCKET_NS;
    if (b >= NBUCKETS) overflow++;
    else hist[b]++;
    if (rtt > max_ns) max_ns = rtt;
    measured++;
}

/* Read one line (blocking); returns it NUL-terminated without '\n' in line[]. */
static void read_line(struct conn *c, char *line, size_t cap)
{
    const char *err = pmi_read_line(c->fd, c->buf, sizeof c->buf, &c->len, line, cap);
    if (err) fail("reading a reply: %s", err);
}

static void expect(struct conn *c, const char *prefix)
{
    char line[2048];
    read_line(c, line, sizeof line);
    if (strncmp(line, prefix, strlen(prefix)) != 0 || !strstr(line, "rc=0")) {
        fprintf(stderr, "pmi_load_client: expected %s…, got: %s\n", prefix, line);
        exit(1);
    }
}

/* Whether a reply to the timed request is the expected one (see --expect). */
static int reply_ok(const char *line)
{
    if (!expect_prefix) return strncmp(line, "cmd=error", 9) != 0;
    return strncmp(line, expect_prefix, strlen(expect_prefix)) == 0;
}

int main(int argc, char **argv)
{
    long iters = -1, warmup = 0;
    double warmup_ms = -1, window_ms = -1, tail_ms = 0;
    int nconns = 1;
    const char *key = "PMI_process_mapping", *kvsname = "kvs_pmibridge_0", *outdir = NULL;
    const char *cmd = NULL, *expect_opt = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) fail("missing value after %s", a);
        if (!strcmp(a, "--iters")) iters = atol(v);
        else if (!strcmp(a, "--warmup")) warmup = atol(v);
        else if (!strcmp(a, "--warmup-ms")) warmup_ms = atof(v);
        else if (!strcmp(a, "--window-ms")) window_ms = atof(v);
        else if (!strcmp(a, "--tail-ms")) tail_ms = atof(v);
        else if (!strcmp(a, "--conns")) nconns = atoi(v);
        else if (!strcmp(a, "--key")) key = v;
        else if (!strcmp(a, "--kvsname")) kvsname = v;
        else if (!strcmp(a, "--out")) outdir = v;
        else if (!strcmp(a, "--cmd")) cmd = v;
        else if (!strcmp(a, "--expect")) expect_opt = v;
        else fail("unknown option %s", a);
        i++;
    }
    int window_mode = window_ms > 0;
    if (!window_mode && iters <= 0) fail("%s", "give --iters N or --window-ms D");
    if (nconns < 1 || nconns > MAX_CONNS) fail("%s", "--conns must be 1..1024");
    if (cmd) expect_prefix = expect_opt; /* with --cmd, the default is NULL: any non-error reply */
    else if (expect_opt) fail("%s", "--expect goes with --cmd");
    hist = calloc(NBUCKETS, sizeof *hist);
    struct conn *cs = calloc((size_t)nconns, sizeof *cs);
    if (!hist || !cs) fail("%s", "out of memory");

    const char *pmi_fd = getenv("PMI_FD"), *pmi_port = getenv("PMI_PORT"), *pmi_id = getenv("PMI_ID");
    char line[2048];
    if (pmi_fd) {
        if (nconns != 1) fail("%s", "--conns needs PMI_PORT (PMI_FD is one connection)");
        cs[0].fd = atoi(pmi_fd);
    } else if (pmi_port) {
        int id = pmi_id ? atoi(pmi_id) : 0;
        for (int j = 0; j < nconns; j++) {
            cs[j].fd = pmi_connect_port(pmi_port);
            int n = snprintf(line, sizeof line, "cmd=initack pmiid=%d\n", id + j);
            pmi_write_all(cs[j].fd, line, (size_t)n);
        }
    } else {
        fail("%s", "neither PMI_FD nor PMI_PORT is set");
    }
    struct timeval tv = { .tv_sec = 60 };
    for (int j = 0; j < nconns; j++) setsockopt(cs[j].fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    /* Untimed set-up: handshake, init, and a barrier across the whole job. */
    for (int j = 0; j < nconns; j++) {
        if (!pmi_fd) {
            expect(&cs[j], "cmd=initack");
            for (int k = 0; k < 3; k++) read_line(&cs[j], line, sizeof line); /* cmd=set size/rank/debug */
        }
        static const char init[] = "cmd=init pmi_version=1 pmi_subversion=1\n";
        pmi_write_all(cs[j].fd, init, sizeof init - 1);
        expect(&cs[j], "cmd=response_to_init");
    }
    static const char bar[] = "cmd=barrier_in\n";
    for (int j = 0; j < nconns; j++) pmi_write_all(cs[j].fd, bar, sizeof bar - 1);
    for (int j = 0; j < nconns; j++) expect(&cs[j], "cmd=barrier_out");

    char req[512];
    int reqlen = cmd ? snprintf(req, sizeof req, "%s\n", cmd) : snprintf(req, sizeof req, "cmd=get kvsname=%s key=%s\n", kvsname, key);
    if (reqlen <= 0 || (size_t)reqlen >= sizeof req) fail("%s", "request line too long");
    uint64_t t0 = pmi_now_ns(), m0, m1, end;
    if (window_mode) {
        m0 = t0 + (uint64_t)(warmup_ms * 1e6);
        m1 = m0 + (uint64_t)(window_ms * 1e6);
        end = m1 + (uint64_t)(tail_ms * 1e6);
    } else {
        m0 = m1 = end = 0;
    }
    uint64_t span_start = 0, span_end = 0;

    if (nconns == 1) {
        struct conn *c = &cs[0];
        if (!window_mode) {
            for (long i = 0; i < warmup; i++) {
                pmi_write_all(c->fd, req, (size_t)reqlen);
                read_line(c, line, sizeof line);
                if (!reply_ok(line)) fail("unexpected reply: %s", line);
            }
            span_start = pmi_now_ns();
            for (long i = 0; i < iters; i++) {
                uint64_t s = pmi_now_ns();
                pmi_write_all(c->fd, req, (size_t)reqlen);
                read_line(c, line, sizeof line);
                record(pmi_now_ns() - s);
            }
            span_end = pmi_now_ns();
            if (!reply_ok(line)) fail("unexpected reply: %s", line);
        } else {
            span_start = m0;
            span_end = m1;
            for (long guard = 0; guard < 2000000000L; guard++) {
                uint64_t s = pmi_now_ns();
                if (s >= end) break;
                pmi_write_all(c->fd, req, (size_t)reqlen);
                read_line(c, line, sizeof line);
                uint64_t e = pmi_now_ns();
                if (s >= m0 && e <= m1) record(e - s);
            }
            if (!reply_ok(line)) fail("unexpected reply: %s", line);
        }
    } else {
        /* K lock-step connections multiplexed with epoll: each has at most one request out. */
        if (!window_mode) fail("%s", "--conns > 1 needs window mode");
        span_start = m0;
        span_end = m1;
        int ep = epoll_create1(EPOLL_CLOEXEC);
        for (int j = 0; j < nconns; j++) {
            struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)j };
            epoll_ctl(ep, EPOLL_CTL_ADD, cs[j].fd, &ev);
            cs[j].sent_at = pmi_now_ns();
            pmi_write_all(cs[j].fd, req, (size_t)reqlen);
        }
        int active = nconns;
        struct epoll_event evs[64];
        for (long guard = 0; active > 0 && guard < 2000000000L; guard++) {
            int n = epoll_wait(ep, evs, 64, 60000);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) fail("%s", "no reply within 60 s");
            for (int i = 0; i < n; i++) {
                struct conn *c = &cs[evs[i].data.u32];
                ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
                if (r <= 0) fail("%s", "server closed the connection or read failed");
                c->len += (size_t)r;
                char *nl;
                while ((nl = memchr(c->buf, '\n', c->len))) {
                    size_t l = (size_t)(nl - c->buf);
                    *nl = '\0';
                    if (!reply_ok(c->buf)) fail("unexpected reply: %s", c->buf);
                    memmove(c->buf, nl + 1, c->len - l - 1);
                    c->len -= l + 1;
                    uint64_t e = pmi_now_ns();
                    if (c->sent_at >= m0 && e <= m1) record(e - c->sent_at);
                    if (e >= end) {
                        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                        active--;
                    } else {
                        c->sent_at = e;
                        pmi_write_all(c->fd, req, (size_t)reqlen);
                    }
                }
            }
        }
        close(ep);
    }

    static const char fin[] = "cmd=finalize\n";
    for (int j = 0; j < nconns; j++) {
        pmi_write_all(cs[j].fd, fin, sizeof fin - 1);
        expect(&cs[j], "cmd=finalize_ack");
        close(cs[j].fd);
    }

    FILE *out = stdout;
    char path[4096];
    if (outdir) {
        snprintf(path, sizeof path, "%s/client-%d.json", outdir, (int)getpid());
        out = fopen(path, "w");
        if (!out) fail("cannot write %s", path);
    }
    fprintf(out, "{\"pid\":%d,\"conns\":%d,\"count\":%llu,\"span_ns\":%llu,\"bucket_ns\":%d,\"max_ns\":%llu,\"overflow\":%llu,\"hist\":[",
            (int)getpid(), nconns, (unsigned long long)measured, (unsigned long long)(span_end - span_start), BUCKET_NS,
            (unsigned long long)max_ns, (unsigned long long)overflow);
    int first = 1;
    for (long b = 0; b < NBUCKETS; b++) {
        if (!hist[b]) continue;
        fprintf(out, "%s[%ld,%u]", first ? "" : ",", b, hist[b]);
        first = 0;
    }
    fprintf(out, "]}\n");
    if (out != stdout) fclose(out);
    return 0;
}
