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
 * With --pmi-version 2, the same in PMI-2 (src/protocol/pmi2-frame.ts): no initack; the line
 * `cmd=init pmi_version=2 pmi_subversion=0`, then length-prefixed frames: fullinit with
 * pmirank = PMI_ID (PMI_PORT) or PMI_RANK (PMI_FD), kvs-fence as the start barrier, the timed
 * `cmd=kvs-get;jobid=K;srcid=-1;key=KEY;` loop (each reply must start
 * `cmd=kvs-get-response;rc=0;found=TRUE;`), finalize. --cmd is then a frame body.
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
 *   --pmi-version 1|2           the wire (default 1: PMI-1 lines; 2: PMI-2 frames, see above)
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
static int pmi2; /* --pmi-version 2: frames after the init line */

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

/* Read one reply (blocking): a line, or after the PMI-2 init line a frame's body. */
static void read_reply(struct conn *c, char *line, size_t cap)
{
    const char *err = pmi2 ? pmi2_read_frame(c->fd, c->buf, sizeof c->buf, &c->len, line, cap) : pmi_read_line(c->fd, c->buf, sizeof c->buf, &c->len, line, cap);
    if (err) fail("reading a reply: %s", err);
}

/* A whole reply from the buffer, if there is one (epoll path): 1, or 0 when more bytes are needed. */
static int take_reply(struct conn *c, char *line, size_t cap)
{
    if (pmi2) {
        int t = pmi2_take_frame(c->buf, &c->len, line, cap);
        if (t < 0) fail("%s", "a reply is not a PMI-2 frame");
        return t;
    }
    return pmi_take_line(c->buf, &c->len, line, cap);
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

/* PMI-2: send the frame with this body, and expect `cmd=<response>` with rc=0. */
static void call2(struct conn *c, const char *body, const char *response)
{
    char req[1024], reply[2048];
    size_t n = pmi2_frame(req, sizeof req, body);
    pmi_write_all(c->fd, req, n);
    read_reply(c, reply, sizeof reply);
    if (!pmi2_reply_ok(reply, response)) {
        fprintf(stderr, "pmi_load_client: expected cmd=%s;rc=0;…, got: %s\n", response, reply);
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
        else if (!strcmp(a, "--pmi-version")) {
            if (strcmp(v, "1") && strcmp(v, "2")) fail("--pmi-version is 1 or 2, not %s", v);
            pmi2 = v[0] == '2';
        }
        else fail("unknown option %s", a);
        i++;
    }
    int window_mode = window_ms > 0;
    if (!window_mode && iters <= 0) fail("%s", "give --iters N or --window-ms D");
    if (nconns < 1 || nconns > MAX_CONNS) fail("%s", "--conns must be 1..1024");
    if (cmd) expect_prefix = expect_opt; /* with --cmd, the default is NULL: any non-error reply */
    else if (expect_opt) fail("%s", "--expect goes with --cmd");
    else if (pmi2) expect_prefix = "cmd=kvs-get-response;rc=0;found=TRUE;";
    hist = calloc(NBUCKETS, sizeof *hist);
    struct conn *cs = calloc((size_t)nconns, sizeof *cs);
    if (!hist || !cs) fail("%s", "out of memory");

    const char *pmi_fd = getenv("PMI_FD"), *pmi_port = getenv("PMI_PORT"), *pmi_id = getenv("PMI_ID");
    char line[2048];
    int id = 0; /* the first connection's rank (PMI_ID), PMI_RANK with PMI_FD */
    if (pmi_fd) {
        if (nconns != 1) fail("%s", "--conns needs PMI_PORT (PMI_FD is one connection)");
        cs[0].fd = atoi(pmi_fd);
        id = getenv("PMI_RANK") ? atoi(getenv("PMI_RANK")) : 0;
    } else if (pmi_port) {
        id = pmi_id ? atoi(pmi_id) : 0;
        for (int j = 0; j < nconns; j++) {
            cs[j].fd = pmi_connect_port(pmi_port);
            if (pmi2) continue; /* PMI-2 has no initack: the rank comes with fullinit */
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
        if (!pmi_fd && !pmi2) {
            expect(&cs[j], "cmd=initack");
            for (int k = 0; k < 3; k++) read_line(&cs[j], line, sizeof line); /* cmd=set size/rank/debug */
        }
        if (pmi2) {
            /* The init line is PMI-1 (lines); its answer too; frames follow. */
            static const char init2[] = "cmd=init pmi_version=2 pmi_subversion=0\n";
            pmi_write_all(cs[j].fd, init2, sizeof init2 - 1);
            expect(&cs[j], "cmd=response_to_init");
            snprintf(line, sizeof line, "cmd=fullinit;pmirank=%d;", id + j);
            call2(&cs[j], line, "fullinit-response");
            continue;
        }
        static const char init[] = "cmd=init pmi_version=1 pmi_subversion=1\n";
        pmi_write_all(cs[j].fd, init, sizeof init - 1);
        expect(&cs[j], "cmd=response_to_init");
    }
    char req[512];
    if (pmi2) {
        size_t fl = pmi2_frame(req, sizeof req, "cmd=kvs-fence;");
        for (int j = 0; j < nconns; j++) pmi_write_all(cs[j].fd, req, fl);
        for (int j = 0; j < nconns; j++) {
            read_reply(&cs[j], line, sizeof line);
            if (!pmi2_reply_ok(line, "kvs-fence-response")) fail("kvs-fence answered: %s", line);
        }
    } else {
        static const char bar[] = "cmd=barrier_in\n";
        for (int j = 0; j < nconns; j++) pmi_write_all(cs[j].fd, bar, sizeof bar - 1);
        for (int j = 0; j < nconns; j++) expect(&cs[j], "cmd=barrier_out");
    }

    int reqlen;
    if (pmi2) {
        char body[480];
        int bl = cmd ? snprintf(body, sizeof body, "%s", cmd) : snprintf(body, sizeof body, "cmd=kvs-get;jobid=%s;srcid=-1;key=%s;", kvsname, key);
        if (bl <= 0 || (size_t)bl >= sizeof body) fail("%s", "request frame too long");
        reqlen = (int)pmi2_frame(req, sizeof req, body);
    } else {
        reqlen = cmd ? snprintf(req, sizeof req, "%s\n", cmd) : snprintf(req, sizeof req, "cmd=get kvsname=%s key=%s\n", kvsname, key);
    }
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
                read_reply(c, line, sizeof line);
                if (!reply_ok(line)) fail("unexpected reply: %s", line);
            }
            span_start = pmi_now_ns();
            for (long i = 0; i < iters; i++) {
                uint64_t s = pmi_now_ns();
                pmi_write_all(c->fd, req, (size_t)reqlen);
                read_reply(c, line, sizeof line);
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
                read_reply(c, line, sizeof line);
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
                while (take_reply(c, line, sizeof line)) {
                    if (!reply_ok(line)) fail("unexpected reply: %s", line);
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
        if (pmi2) {
            call2(&cs[j], "cmd=finalize;", "finalize-response");
        } else {
            pmi_write_all(cs[j].fd, fin, sizeof fin - 1);
            expect(&cs[j], "cmd=finalize_ack");
        }
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
