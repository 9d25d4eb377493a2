/*
 * The socket plumbing shared by the bench's C PMI clients (pmi_load_client.c, pmi_wireup_client.c,
 * pmi_idle_client.c): connect to a PMI_PORT as MPICH reads it, write whole lines, read one line,
 * a monotonic clock; and for PMI-2 (`--pmi2`), build and read length-prefixed frames (a 6-byte
 * `%6u` length, then `cmd=NAME;key=value;…;`, src/protocol/pmi2-frame.ts) and read their pairs.
 * Header-only (static functions) so that each client stays one `cc` command.
 *
 * Define PMI_PROG (the program's name, for error messages) before including it; each client uses
 * only some of these (hence `unused`). The errors reported here are fatal: the bench treats a
 * client exiting non-zero as a failed run.
 */
#ifndef PMI_CLIENT_IO_H
#define PMI_CLIENT_IO_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef PMI_PROG
#error "define PMI_PROG before including pmi_client_io.h"
#endif

static void pmi_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn, unused));
static void pmi_fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, PMI_PROG ": ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static __attribute__((unused)) uint64_t pmi_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* A blocking write of all `len` bytes (requests are short lines). */
static __attribute__((unused)) void pmi_write_all(int fd, const char *s, size_t len)
{
    while (len) {
        ssize_t n = write(fd, s, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) pmi_fatal("write failed: %s", strerror(errno));
        s += n;
        len -= (size_t)n;
    }
}

/*
 * PMI_PORT as the clients accept it: unix:///path or /path, else tcp://host:port or host:port
 * with an IPv4 literal (the bench only uses 127.0.0.1). Fills `addr`; returns its length.
 */
static __attribute__((unused)) socklen_t pmi_parse_port(const char *port, struct sockaddr_storage *addr)
{
    const char *path = NULL;
    if (!strncmp(port, "unix://", 7)) path = port + 7;
    else if (port[0] == '/') path = port;
    memset(addr, 0, sizeof *addr);
    if (path) {
        struct sockaddr_un *a = (struct sockaddr_un *)addr;
        if (strlen(path) >= sizeof a->sun_path) pmi_fatal("unix path too long: %s", path);
        a->sun_family = AF_UNIX;
        strcpy(a->sun_path, path);
        return sizeof *a;
    }
    const char *hp = !strncmp(port, "tcp://", 6) ? port + 6 : port;
    const char *colon = strrchr(hp, ':');
    char host[64];
    if (!colon || (size_t)(colon - hp) >= sizeof host) pmi_fatal("bad PMI_PORT %s", port);
    memcpy(host, hp, (size_t)(colon - hp));
    host[colon - hp] = '\0';
    struct sockaddr_in *a = (struct sockaddr_in *)addr;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &a->sin_addr) != 1) pmi_fatal("PMI_PORT host must be an IPv4 literal: %s", port);
    return sizeof *a;
}

/* A connected socket to a parsed address (TCP_NODELAY on TCP: one line per round trip). */
static __attribute__((unused)) int pmi_connect(const struct sockaddr_storage *addr, socklen_t len)
{
    int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) pmi_fatal("socket: %s", strerror(errno));
    while (connect(fd, (const struct sockaddr *)addr, len) < 0) {
        if (errno == EINTR) continue;
        pmi_fatal("cannot connect: %s", strerror(errno));
    }
    if (addr->ss_family == AF_INET) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

static __attribute__((unused)) int pmi_connect_port(const char *port)
{
    struct sockaddr_storage addr;
    socklen_t len = pmi_parse_port(port, &addr);
    return pmi_connect(&addr, len);
}

/*
 * A blocking read of one line from fd through the connection's buffer (buf, *len bytes held, cap
 * bytes in all): the line is copied NUL-terminated without '\n' into line[linecap] (truncated if
 * longer) and removed from the buffer. Returns NULL, or what went wrong (the caller says whose).
 */
/* Move the first whole line of buf[0, *len) into line (cut to linecap-1 bytes): 1, or 0 when none is complete. */
static __attribute__((unused)) int pmi_take_line(char *buf, size_t *len, char *line, size_t linecap)
{
    char *nl = memchr(buf, '\n', *len);
    if (!nl) return 0;
    size_t n = (size_t)(nl - buf);
    size_t k = n < linecap - 1 ? n : linecap - 1;
    memcpy(line, buf, k);
    line[k] = '\0';
    memmove(buf, nl + 1, *len - n - 1);
    *len -= n + 1;
    return 1;
}

static __attribute__((unused)) const char *pmi_read_line(int fd, char *buf, size_t cap, size_t *len, char *line, size_t linecap)
{
    for (;;) {
        if (pmi_take_line(buf, len, line, linecap)) return NULL;
        if (*len == cap) return "reply line too long";
        ssize_t r = read(fd, buf + *len, cap - *len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return strerror(errno);
        if (r == 0) return "the server closed the connection";
        *len += (size_t)r;
    }
}

/* ---- PMI-2 frames ------------------------------------------------------------------------- */

#define PMI2_HEADER 6

/*
 * `%6u` + body into out[cap] (what MPICH >= 4.1 and hydra write); returns the frame's length.
 * Requests are built once or are short: an overlong one is fatal.
 */
static __attribute__((unused)) size_t pmi2_frame(char *out, size_t cap, const char *body)
{
    size_t bl = strlen(body);
    if (bl > 999999 || PMI2_HEADER + bl >= cap) pmi_fatal("PMI-2 frame too long (%zu bytes)", bl);
    snprintf(out, cap, "%6u", (unsigned)bl);
    memcpy(out + PMI2_HEADER, body, bl + 1);
    return PMI2_HEADER + bl;
}

/*
 * If the connection's buffer (buf, *len bytes held) starts with a whole frame: copy its body
 * NUL-terminated into body[bodycap] (truncated if longer), remove the frame from the buffer and
 * return 1; 0 when more bytes are needed; -1 on a header that is not `spaces digits spaces`.
 * Bodies longer than the buffer can never complete: the caller reports a full buffer.
 */
static __attribute__((unused)) int pmi2_take_frame(char *buf, size_t *len, char *body, size_t bodycap)
{
    if (*len < PMI2_HEADER) return 0;
    size_t n = 0;
    int digits = 0, trailing = 0;
    for (int i = 0; i < PMI2_HEADER; i++) {
        char ch = buf[i];
        if (ch >= '0' && ch <= '9') {
            if (trailing) return -1;
            n = n * 10 + (size_t)(ch - '0');
            digits++;
        } else if (ch == ' ') {
            if (digits) trailing = 1;
        } else {
            return -1;
        }
    }
    if (!digits) return -1;
    if (*len < PMI2_HEADER + n) return 0;
    size_t k = n < bodycap - 1 ? n : bodycap - 1;
    memcpy(body, buf + PMI2_HEADER, k);
    body[k] = '\0';
    memmove(buf, buf + PMI2_HEADER + n, *len - PMI2_HEADER - n);
    *len -= PMI2_HEADER + n;
    return 1;
}

/* The blocking read of one frame's body, as pmi_read_line reads a line (same buffer contract). */
static __attribute__((unused)) const char *pmi2_read_frame(int fd, char *buf, size_t cap, size_t *len, char *body, size_t bodycap)
{
    for (;;) {
        int t = pmi2_take_frame(buf, len, body, bodycap);
        if (t > 0) return NULL;
        if (t < 0) return "not a PMI-2 length header";
        if (*len == cap) return "reply frame too long";
        ssize_t r = read(fd, buf + *len, cap - *len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return strerror(errno);
        if (r == 0) return "the server closed the connection";
        *len += (size_t)r;
    }
}

/*
 * The value of `name` in a frame body (pointer into the body, its length in *len), or NULL.
 * Pairs are `key=value;`; the first match wins (as MPICH's PMIU_cmd_find_keyval). A `;;` (an
 * escaped `;`) is not unescaped: no value the bench checks contains one.
 */
static __attribute__((unused)) const char *pmi2_attr(const char *body, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    for (const char *p = body; *p;) {
        const char *end = p;
        while (*end && !(*end == ';' && end[1] != ';')) end += *end == ';' ? 2 : 1;
        if ((size_t)(end - p) > nl && !strncmp(p, name, nl) && p[nl] == '=') {
            *len = (size_t)(end - p) - nl - 1;
            return p + nl + 1;
        }
        p = *end ? end + 1 : end;
    }
    return NULL;
}

/* The body answers `cmd=<cmd>` with rc=0 (the rc pair is required: every PMI-2 response has one). */
static __attribute__((unused)) int pmi2_reply_ok(const char *body, const char *cmd)
{
    size_t cl = strlen(cmd), len;
    if (strncmp(body, "cmd=", 4) || strncmp(body + 4, cmd, cl) || body[4 + cl] != ';') return 0;
    const char *rc = pmi2_attr(body, "rc", &len);
    return rc && len == 1 && rc[0] == '0';
}

#endif
