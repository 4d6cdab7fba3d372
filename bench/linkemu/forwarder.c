/*
 * linkemu-fwd: user-space WAN link emulator between two TUN devices that live
 * in two network namespaces (the mahimahi design; this kernel has no netem).
 *
 * The process stays in its own network namespace. It enters each target
 * namespace with setns() only to open /dev/net/tun there, so each TUN device
 * is created inside its namespace, then returns.
 *
 * Per direction (ab = A->B, ba = B->A) every packet goes through:
 *   1. bottleneck: rate (bits/s over IP bytes + optional per-packet overhead)
 *      with a drop-tail queue limited in bytes. The queue is virtual: since
 *      service is FIFO at a constant rate, a packet's departure time is known
 *      on arrival (next_free = max(next_free, now) + size/rate), and the
 *      backlog in bytes is (next_free - now) * rate.
 *   2. path impairments after the bottleneck (the lost packet has used link
 *      capacity, as on a real lossy path): loss (Bernoulli or Gilbert-Elliott),
 *      corruption, duplication, reordering (an extra hold-back delay).
 *   3. constant one-way propagation delay.
 * Because the delay is constant, delivery times are non-decreasing, so the
 * delay line is a plain FIFO ring (plus a second FIFO for held-back packets).
 *
 * One thread, ppoll() with a nanosecond timeout up to the next due packet,
 * CLOCK_MONOTONIC, seeded xoshiro256** PRNG streams (one per impairment and
 * direction, so enabling one impairment does not change another's pattern).
 *
 * Signals: SIGTERM/SIGINT/SIGHUP -> write stats and exit 0; SIGUSR1 -> write
 * stats file now. Stats are one JSON object (also printed on stdout at exit).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <math.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SLOT_DATA 2032 /* packet bytes per slot; TUN MTU must be <= this */
#define READ_BATCH 256 /* max packets read per direction per wakeup */

struct slot {
    int64_t due; /* ns, relative to t0 */
    uint32_t len;
    uint32_t pad;
    uint8_t data[SLOT_DATA];
};

/* FIFO ring of slots, capacity a power of two, grows by doubling. */
struct ring {
    struct slot *s;
    size_t cap, head, count, max_cap, peak;
};

struct rng {
    uint64_t s[4];
};

struct counters {
    uint64_t pkts_in, bytes_in, pkts_out, bytes_out;
    uint64_t drop_queue, drop_loss, drop_overflow;
    uint64_t duplicated, corrupted, reordered;
    uint64_t write_err, read_err;
};

struct dir {
    const char *name;
    int in_fd, out_fd;
    /* configuration */
    double rate_bps; /* 0: unlimited */
    int64_t delay_ns;
    double queue_bytes;
    double loss;                                 /* bernoulli probability */
    int ge;                                      /* 1: gilbert-elliott */
    double ge_p, ge_r, ge_loss_bad, ge_loss_good; /* G->B, B->G, loss in B, loss in G */
    double reorder, duplicate, corrupt;
    int64_t reorder_delay_ns;
    /* state */
    int ge_bad;
    double next_free; /* ns: when the bottleneck finishes its backlog */
    double queue_peak;
    struct ring main, late;
    struct rng r_loss, r_corrupt, r_dup, r_reorder;
    struct counters c;
};

static volatile sig_atomic_t g_stop, g_dump;
static int64_t g_t0;
static double g_overhead;
static int g_corrupt_fix_csum = 1;
static const char *g_stats_path;
static uint64_t g_seq, g_wakeups;
static struct timespec g_wall0;

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("linkemu-fwd: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---- PRNG: splitmix64 seeding, xoshiro256** ---- */
static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void rng_seed(struct rng *r, uint64_t seed, uint64_t stream)
{
    uint64_t x = seed ^ (stream * 0xd1b54a32d192ed03ULL);
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t rng_next(struct rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* uniform in [0, 1) */
static inline double rng_unit(struct rng *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

/* ---- ring ---- */
static void ring_init(struct ring *q, size_t want, size_t max_cap)
{
    size_t cap = 64;
    while (cap < want && cap < max_cap)
        cap <<= 1;
    q->s = calloc(cap, sizeof(struct slot));
    if (!q->s)
        die("out of memory for %zu slots", cap);
    q->cap = cap;
    q->head = q->count = q->peak = 0;
    q->max_cap = max_cap < cap ? cap : max_cap;
}

/* Make room for one more slot; returns 0 when at the memory cap. */
static int ring_room(struct ring *q)
{
    if (q->count < q->cap)
        return 1;
    if (q->cap * 2 > q->max_cap)
        return 0;
    struct slot *n = malloc(q->cap * 2 * sizeof(struct slot));
    if (!n)
        return 0;
    size_t first = q->cap - q->head;
    if (first > q->count)
        first = q->count;
    memcpy(n, q->s + q->head, first * sizeof(struct slot));
    memcpy(n + first, q->s, (q->count - first) * sizeof(struct slot));
    free(q->s);
    q->s = n;
    q->head = 0;
    q->cap *= 2;
    return 1;
}

static inline struct slot *ring_tail(struct ring *q) { return &q->s[(q->head + q->count) & (q->cap - 1)]; }
static inline struct slot *ring_head(struct ring *q) { return &q->s[q->head]; }

static inline struct slot *ring_last(struct ring *q) { return &q->s[(q->head + q->count - 1) & (q->cap - 1)]; }

static inline void ring_push(struct ring *q)
{
    q->count++;
    if (q->count > q->peak)
        q->peak = q->count;
}

static inline void ring_pop(struct ring *q)
{
    q->head = (q->head + 1) & (q->cap - 1);
    q->count--;
}

/* ---- corruption ---- */
static inline uint16_t csum_add(uint16_t a, uint16_t b)
{
    uint32_t s = (uint32_t)a + b;
    return (uint16_t)((s & 0xffff) + (s >> 16));
}

/* Incremental checksum update (RFC 1624, eqn. 3): HC' = ~(~HC + ~m + m'). */
static void csum_fix(uint8_t *csum_p, uint16_t old_word, uint16_t new_word, int udp)
{
    uint16_t hc = (uint16_t)((csum_p[0] << 8) | csum_p[1]);
    if (udp && hc == 0)
        return; /* UDP checksum disabled by the sender */
    uint16_t r = (uint16_t)~csum_add(csum_add((uint16_t)~hc, (uint16_t)~old_word), new_word);
    if (udp && r == 0)
        r = 0xffff;
    csum_p[0] = (uint8_t)(r >> 8);
    csum_p[1] = (uint8_t)r;
}

/*
 * Flip one random bit in the transport payload (headers stay intact so the
 * packet still reaches its socket). With checksum fixing on, the transport
 * checksum is updated so the damage reaches the application (the case an
 * end-to-end integrity check must catch); with it off, the receiving kernel
 * drops the packet as a checksum error. Returns 1 if the packet was changed.
 */
static int corrupt_packet(struct dir *d, uint8_t *p, uint32_t len)
{
    uint32_t l4, csum_off = 0, pay;
    int proto, udp = 0;
    if (len < 20)
        return 0;
    if ((p[0] >> 4) == 4) {
        l4 = (uint32_t)(p[0] & 0x0f) * 4;
        proto = p[9];
        if (((p[6] & 0x3f) | p[7]) != 0) /* fragment: no full transport header */
            return 0;
    } else if ((p[0] >> 4) == 6) {
        l4 = 40;
        proto = p[6];
    } else {
        return 0;
    }
    if (proto == 17) {
        pay = l4 + 8;
        csum_off = l4 + 6;
        udp = 1;
    } else if (proto == 6) {
        if (len < l4 + 20)
            return 0;
        pay = l4 + (uint32_t)(p[l4 + 12] >> 4) * 4;
        csum_off = l4 + 16;
    } else if (proto == 1 || proto == 58) {
        pay = l4 + 8;
        csum_off = l4 + 2;
    } else {
        pay = l4;
    }
    if (pay >= len)
        return 0;
    uint64_t x = rng_next(&d->r_corrupt);
    uint32_t off = pay + (uint32_t)((x >> 3) % (len - pay));
    uint8_t bit = (uint8_t)(1u << (x & 7));
    /* the 16-bit word holding the byte, aligned to the transport header */
    uint32_t w = l4 + ((off - l4) & ~1u);
    uint16_t old_word = (uint16_t)(p[w] << 8 | (w + 1 < len ? p[w + 1] : 0));
    p[off] ^= bit;
    uint16_t new_word = (uint16_t)(p[w] << 8 | (w + 1 < len ? p[w + 1] : 0));
    if (g_corrupt_fix_csum && csum_off && csum_off + 1 < len)
        csum_fix(p + csum_off, old_word, new_word, udp);
    return 1;
}

/* ---- the pipeline ---- */
static int is_lost(struct dir *d)
{
    if (d->ge) {
        int lost = rng_unit(&d->r_loss) < (d->ge_bad ? d->ge_loss_bad : d->ge_loss_good);
        double u = rng_unit(&d->r_loss);
        if (d->ge_bad) {
            if (u < d->ge_r)
                d->ge_bad = 0;
        } else if (u < d->ge_p) {
            d->ge_bad = 1;
        }
        return lost;
    }
    return d->loss > 0 && rng_unit(&d->r_loss) < d->loss;
}

/* Handle one packet already read into the main ring's tail slot. */
static void admit(struct dir *d, struct slot *s, uint32_t len, int64_t now)
{
    d->c.pkts_in++;
    d->c.bytes_in += len;
    double depart = (double)now;
    if (d->rate_bps > 0) {
        double nf = d->next_free;
        double backlog = nf > (double)now ? (nf - (double)now) * d->rate_bps / 8e9 : 0.0;
        double size = (double)len + g_overhead; /* what the rate is charged for */
        if (backlog + size > d->queue_bytes) {
            d->c.drop_queue++;
            return;
        }
        if (backlog + size > d->queue_peak)
            d->queue_peak = backlog + size;
        if (nf < (double)now)
            nf = (double)now;
        nf += size * 8e9 / d->rate_bps;
        d->next_free = nf;
        depart = nf;
    }
    if (is_lost(d)) {
        d->c.drop_loss++;
        return;
    }
    s->due = (int64_t)depart + d->delay_ns;
    s->len = len;
    if (d->corrupt > 0 && rng_unit(&d->r_corrupt) < d->corrupt && corrupt_packet(d, s->data, len))
        d->c.corrupted++;
    int dup = d->duplicate > 0 && rng_unit(&d->r_dup) < d->duplicate;
    struct ring *q = &d->main;
    if (d->reorder > 0 && rng_unit(&d->r_reorder) < d->reorder) {
        /* held back by an extra delay: later packets overtake it */
        q = &d->late;
        if (!ring_room(q)) {
            d->c.drop_overflow++;
            return;
        }
        struct slot *l = ring_tail(q);
        l->due = s->due + d->reorder_delay_ns;
        l->len = len;
        memcpy(l->data, s->data, len);
        d->c.reordered++;
    }
    ring_push(q); /* s (main) or l (late) is now the ring's last slot */
    if (dup) { /* the copy travels right behind the original */
        if (!ring_room(q)) { /* may move the ring: re-fetch the original below */
            d->c.drop_overflow++;
            return;
        }
        struct slot *orig = ring_last(q), *copy = ring_tail(q);
        copy->due = orig->due;
        copy->len = orig->len;
        memcpy(copy->data, orig->data, orig->len);
        ring_push(q);
        d->c.duplicated++;
    }
}

static void read_batch(struct dir *d)
{
    static uint8_t scratch[SLOT_DATA];
    for (int i = 0; i < READ_BATCH; i++) {
        int room = ring_room(&d->main);
        uint8_t *buf = room ? ring_tail(&d->main)->data : scratch;
        ssize_t n = read(d->in_fd, buf, SLOT_DATA);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                d->c.read_err++;
            return;
        }
        if (n == 0)
            return;
        if (!room) {
            d->c.pkts_in++;
            d->c.bytes_in += (uint64_t)n;
            d->c.drop_overflow++;
            continue;
        }
        admit(d, ring_tail(&d->main), (uint32_t)n, mono_ns() - g_t0);
    }
}

static void send_slot(struct dir *d, struct slot *s)
{
    ssize_t n;
    do
        n = write(d->out_fd, s->data, s->len);
    while (n < 0 && errno == EINTR);
    if (n == (ssize_t)s->len) {
        d->c.pkts_out++;
        d->c.bytes_out += s->len;
    } else {
        d->c.write_err++;
    }
}

/* Send every packet due by `now`, merging the main and held-back FIFOs. */
static void deliver(struct dir *d, int64_t now)
{
    for (;;) {
        struct slot *m = d->main.count ? ring_head(&d->main) : NULL;
        struct slot *l = d->late.count ? ring_head(&d->late) : NULL;
        if (m && m->due <= now && (!l || m->due <= l->due)) {
            send_slot(d, m);
            ring_pop(&d->main);
        } else if (l && l->due <= now) {
            send_slot(d, l);
            ring_pop(&d->late);
        } else {
            return;
        }
    }
}

static int64_t next_due(struct dir *d)
{
    int64_t t = INT64_MAX;
    if (d->main.count)
        t = ring_head(&d->main)->due;
    if (d->late.count && ring_head(&d->late)->due < t)
        t = ring_head(&d->late)->due;
    return t;
}

/* ---- stats ---- */
static void dir_json(FILE *f, struct dir *d)
{
    struct counters *c = &d->c;
    fprintf(f,
            "{\"pkts_in\":%" PRIu64 ",\"bytes_in\":%" PRIu64 ",\"pkts_out\":%" PRIu64
            ",\"bytes_out\":%" PRIu64 ",\"drop_queue\":%" PRIu64 ",\"drop_loss\":%" PRIu64
            ",\"drop_overflow\":%" PRIu64 ",\"duplicated\":%" PRIu64 ",\"corrupted\":%" PRIu64
            ",\"reordered\":%" PRIu64 ",\"write_err\":%" PRIu64 ",\"read_err\":%" PRIu64
            ",\"queue_peak_bytes\":%.0f,\"queue_limit_bytes\":%.0f,\"in_flight\":%zu"
            ",\"ring_peak\":%zu,\"rate_bps\":%.0f,\"delay_ns\":%" PRId64 "}",
            c->pkts_in, c->bytes_in, c->pkts_out, c->bytes_out, c->drop_queue, c->drop_loss,
            c->drop_overflow, c->duplicated, c->corrupted, c->reordered, c->write_err,
            c->read_err, d->queue_peak, d->queue_bytes, d->main.count + d->late.count,
            d->main.peak + d->late.peak, d->rate_bps, d->delay_ns);
}

static void stats_json(FILE *f, struct dir *ab, struct dir *ba, const char *event)
{
    struct rusage ru;
    struct timespec now;
    getrusage(RUSAGE_SELF, &ru);
    clock_gettime(CLOCK_MONOTONIC, &now);
    double wall = (double)(now.tv_sec - g_wall0.tv_sec) + (double)(now.tv_nsec - g_wall0.tv_nsec) * 1e-9;
    double ut = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6;
    double st = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
    fprintf(f,
            "{\"event\":\"%s\",\"seq\":%" PRIu64 ",\"pid\":%d,\"wall_s\":%.6f,\"cpu_user_s\":%.6f"
            ",\"cpu_sys_s\":%.6f,\"cpu_s\":%.6f,\"max_rss_kb\":%ld,\"wakeups\":%" PRIu64
            ",\"ctx_vol\":%ld,\"ctx_invol\":%ld,\"ab\":",
            event, ++g_seq, (int)getpid(), wall, ut, st, ut + st, ru.ru_maxrss, g_wakeups,
            ru.ru_nvcsw, ru.ru_nivcsw);
    dir_json(f, ab);
    fputs(",\"ba\":", f);
    dir_json(f, ba);
    fputs("}\n", f);
}

static void write_stats(struct dir *ab, struct dir *ba, const char *event)
{
    if (!g_stats_path)
        return;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", g_stats_path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return;
    stats_json(f, ab, ba, event);
    if (fclose(f) == 0)
        rename(tmp, g_stats_path);
}

/* ---- setup ---- */
static int open_tun_in_netns(const char *netns_path, const char *dev)
{
    int self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (self < 0)
        die("open /proc/self/ns/net: %s", strerror(errno));
    int ns = open(netns_path, O_RDONLY | O_CLOEXEC);
    if (ns < 0)
        die("open %s: %s", netns_path, strerror(errno));
    if (setns(ns, CLONE_NEWNET) < 0)
        die("setns %s: %s", netns_path, strerror(errno));
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    int err = errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", dev);
    if (fd >= 0 && ioctl(fd, TUNSETIFF, &ifr) < 0) {
        err = errno;
        close(fd);
        fd = -1;
    }
    if (setns(self, CLONE_NEWNET) < 0)
        die("setns back: %s", strerror(errno));
    close(ns);
    close(self);
    if (fd < 0)
        die("TUN %s in %s: %s", dev, netns_path, strerror(err));
    return fd;
}

static void on_stop(int sig) { (void)sig; g_stop = 1; }
static void on_usr1(int sig) { (void)sig; g_dump = 1; }

enum {
    O_NETNS_A = 1000, O_NETNS_B, O_DEV_A, O_DEV_B, O_SEED, O_STATS, O_READY_FD, O_OVERHEAD,
    O_CSUM, O_SLACK, O_MAX_MEM, O_PARENT, O_TICK,
    O_DIR_BASE = 2000 /* + dir*32 + field */
};
enum { F_RATE, F_DELAY, F_QUEUE, F_LOSS, F_GE_P, F_GE_R, F_GE_BAD, F_GE_GOOD, F_REORDER,
       F_REORDER_DELAY, F_DUP, F_CORRUPT, F_NFIELDS };
static const char *field_names[F_NFIELDS] = {
    "rate", "delay-ns", "queue-bytes", "loss", "ge-p", "ge-r", "ge-loss-bad", "ge-loss-good",
    "reorder", "reorder-delay-ns", "duplicate", "corrupt"};

static double parse_num(const char *opt, const char *s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < 0)
        die("bad value for --%s: %s", opt, s);
    return v;
}

static double parse_prob(const char *opt, const char *s)
{
    double v = parse_num(opt, s);
    if (v > 1)
        die("--%s is a probability in [0, 1]: %s", opt, s);
    return v;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: linkemu-fwd --netns-a PATH --netns-b PATH [--dev-a NAME] [--dev-b NAME]\n"
            "  [--seed N] [--stats FILE] [--ready-fd FD] [--overhead BYTES]\n"
            "  [--corrupt-fix-checksum 0|1] [--timer-slack-ns NS] [--max-mem-mb MB]\n"
            "  [--parent-pid PID] (exit when that process exits) [--tick-ns NS] (min wake-up spacing)\n"
            "  per direction D in {ab, ba}: --D-rate BPS --D-delay-ns NS --D-queue-bytes B\n"
            "  --D-loss P --D-ge-p P --D-ge-r P --D-ge-loss-bad P --D-ge-loss-good P\n"
            "  --D-reorder P --D-reorder-delay-ns NS --D-duplicate P --D-corrupt P\n"
            "  (probabilities in [0,1]; --D-ge-r > 0 selects Gilbert-Elliott loss)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *netns_a = NULL, *netns_b = NULL, *dev_a = "emu0", *dev_b = "emu0";
    uint64_t seed = 1;
    int ready_fd = -1;
    long slack_ns = 20000;
    int64_t tick_ns = 0;
    double max_mem_mb = 1024;
    long parent = 0;
    struct dir dirs[2];
    memset(dirs, 0, sizeof dirs);
    dirs[0].name = "ab";
    dirs[1].name = "ba";
    for (int i = 0; i < 2; i++) {
        dirs[i].queue_bytes = 1e18;
        dirs[i].ge_loss_bad = 1.0;
    }

    static char names[2 * F_NFIELDS][40];
    struct option opts[2 * F_NFIELDS + 16];
    int n = 0;
    struct option fixed[] = {
        {"netns-a", 1, 0, O_NETNS_A}, {"netns-b", 1, 0, O_NETNS_B}, {"dev-a", 1, 0, O_DEV_A},
        {"dev-b", 1, 0, O_DEV_B}, {"seed", 1, 0, O_SEED}, {"stats", 1, 0, O_STATS},
        {"ready-fd", 1, 0, O_READY_FD}, {"overhead", 1, 0, O_OVERHEAD},
        {"corrupt-fix-checksum", 1, 0, O_CSUM}, {"timer-slack-ns", 1, 0, O_SLACK},
        {"max-mem-mb", 1, 0, O_MAX_MEM}, {"parent-pid", 1, 0, O_PARENT}, {"tick-ns", 1, 0, O_TICK},
        {"help", 0, 0, 'h'},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
        opts[n++] = fixed[i];
    for (int d = 0; d < 2; d++)
        for (int f = 0; f < F_NFIELDS; f++) {
            char *nm = names[d * F_NFIELDS + f];
            snprintf(nm, 40, "%s-%s", dirs[d].name, field_names[f]);
            opts[n++] = (struct option){nm, 1, 0, O_DIR_BASE + d * 32 + f};
        }
    opts[n] = (struct option){0, 0, 0, 0};

    int c, idx;
    while ((c = getopt_long(argc, argv, "h", opts, &idx)) != -1) {
        const char *on = idx >= 0 && idx < n ? opts[idx].name : "?";
        if (c >= O_DIR_BASE) {
            struct dir *d = &dirs[(c - O_DIR_BASE) / 32];
            switch ((c - O_DIR_BASE) % 32) {
            case F_RATE: d->rate_bps = parse_num(on, optarg); break;
            case F_DELAY: d->delay_ns = (int64_t)parse_num(on, optarg); break;
            case F_QUEUE: d->queue_bytes = parse_num(on, optarg); break;
            case F_LOSS: d->loss = parse_prob(on, optarg); break;
            case F_GE_P: d->ge_p = parse_prob(on, optarg); break;
            case F_GE_R: d->ge_r = parse_prob(on, optarg); d->ge = d->ge_r > 0; break;
            case F_GE_BAD: d->ge_loss_bad = parse_prob(on, optarg); break;
            case F_GE_GOOD: d->ge_loss_good = parse_prob(on, optarg); break;
            case F_REORDER: d->reorder = parse_prob(on, optarg); break;
            case F_REORDER_DELAY: d->reorder_delay_ns = (int64_t)parse_num(on, optarg); break;
            case F_DUP: d->duplicate = parse_prob(on, optarg); break;
            case F_CORRUPT: d->corrupt = parse_prob(on, optarg); break;
            }
            continue;
        }
        switch (c) {
        case O_NETNS_A: netns_a = optarg; break;
        case O_NETNS_B: netns_b = optarg; break;
        case O_DEV_A: dev_a = optarg; break;
        case O_DEV_B: dev_b = optarg; break;
        case O_SEED: seed = strtoull(optarg, NULL, 0); break;
        case O_STATS: g_stats_path = optarg; break;
        case O_READY_FD: ready_fd = atoi(optarg); break;
        case O_OVERHEAD: g_overhead = parse_num("overhead", optarg); break;
        case O_CSUM: g_corrupt_fix_csum = atoi(optarg) != 0; break;
        case O_SLACK: slack_ns = (long)parse_num("timer-slack-ns", optarg); break;
        case O_MAX_MEM: max_mem_mb = parse_num("max-mem-mb", optarg); break;
        case O_PARENT: parent = atol(optarg); break;
        case O_TICK: tick_ns = (int64_t)parse_num("tick-ns", optarg); break;
        default: usage();
        }
        idx = -1;
    }
    if (!netns_a || !netns_b || optind != argc)
        usage();

    /*
     * Exit with the owning process. A pidfd (readable when the whole process
     * exits) rather than PR_SET_PDEATHSIG, which fires when the *thread* that
     * forked us exits: a link set up from a worker thread would otherwise die.
     */
    int parent_fd = -1;
    if (parent > 0) {
        parent_fd = (int)syscall(SYS_pidfd_open, (pid_t)parent, 0);
        if (parent_fd < 0 || getppid() != parent)
            die("parent %ld already gone", parent);
    }
    if (slack_ns > 0)
        prctl(PR_SET_TIMERSLACK, (unsigned long)slack_ns);

    int fd_a = open_tun_in_netns(netns_a, dev_a);
    int fd_b = open_tun_in_netns(netns_b, dev_b);
    dirs[0].in_fd = fd_a;
    dirs[0].out_fd = fd_b;
    dirs[1].in_fd = fd_b;
    dirs[1].out_fd = fd_a;

    size_t max_slots = (size_t)(max_mem_mb * 1048576.0 / sizeof(struct slot) / 4); /* 4 rings */
    for (int i = 0; i < 2; i++) {
        struct dir *d = &dirs[i];
        double inflight = d->rate_bps > 0
            ? (d->rate_bps / 8e9) * (double)(d->delay_ns + d->reorder_delay_ns) + d->queue_bytes
            : 0;
        size_t want = d->rate_bps > 0 ? (size_t)(inflight / 1000.0) + 256 : 4096;
        if (want > max_slots)
            want = max_slots;
        ring_init(&d->main, want, max_slots);
        ring_init(&d->late, d->reorder > 0 ? want / 8 + 64 : 64, max_slots);
        rng_seed(&d->r_loss, seed, (uint64_t)i * 4 + 1);
        rng_seed(&d->r_corrupt, seed, (uint64_t)i * 4 + 2);
        rng_seed(&d->r_dup, seed, (uint64_t)i * 4 + 3);
        rng_seed(&d->r_reorder, seed, (uint64_t)i * 4 + 4);
    }

    /* Signals are blocked except while waiting in ppoll(). */
    sigset_t block, waitmask;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, &waitmask);
    sigdelset(&waitmask, SIGTERM);
    sigdelset(&waitmask, SIGINT);
    sigdelset(&waitmask, SIGHUP);
    sigdelset(&waitmask, SIGUSR1);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    g_t0 = mono_ns();
    clock_gettime(CLOCK_MONOTONIC, &g_wall0);
    write_stats(&dirs[0], &dirs[1], "ready");
    if (ready_fd >= 0) {
        (void)!write(ready_fd, "ready\n", 6);
        close(ready_fd);
    }

    /*
     * tick_ns > 0 trades precision for CPU: wake-ups are spaced at least one tick
     * apart, so packets are read and delivered in batches, up to a tick late
     * (never early). A wake-up costs several microseconds on a VM.
     */
    struct pollfd pfd[3] = {{fd_a, POLLIN, 0}, {fd_b, POLLIN, 0}, {parent_fd, POLLIN, 0}};
    nfds_t npfd = parent_fd >= 0 ? 3 : 2;
    int64_t last_wake = 0;
    int read_some = 0; /* the last wake-up read packets: more are probably coming */
    while (!g_stop) {
        int64_t now = mono_ns() - g_t0;
        deliver(&dirs[0], now);
        deliver(&dirs[1], now);
        int64_t due = next_due(&dirs[0]);
        int64_t due_b = next_due(&dirs[1]);
        if (due_b < due)
            due = due_b;
        struct timespec ts, *tsp = NULL;
        now = mono_ns() - g_t0;
        if (tick_ns > 0 && now < last_wake + tick_ns) {
            int64_t until = last_wake + tick_ns;
            if (due < until || read_some) { /* busy: sleep to the end of the tick */
                ts.tv_sec = (until - now) / 1000000000LL;
                ts.tv_nsec = (until - now) % 1000000000LL;
                if (ppoll(NULL, 0, &ts, &waitmask) < 0 && errno != EINTR)
                    die("ppoll: %s", strerror(errno));
                continue; /* deliver, then poll the fds without waiting */
            }
        }
        if (due != INT64_MAX) {
            int64_t wait = due - now;
            if (wait < 0)
                wait = 0;
            ts.tv_sec = wait / 1000000000LL;
            ts.tv_nsec = wait % 1000000000LL;
            tsp = &ts;
        }
        int r = ppoll(pfd, npfd, tsp, &waitmask);
        g_wakeups++;
        last_wake = mono_ns() - g_t0;
        if (r < 0 && errno != EINTR)
            die("ppoll: %s", strerror(errno));
        if (r > 0) {
            if (npfd == 3 && pfd[2].revents)
                g_stop = 1; /* the owning process is gone */
            if (pfd[0].revents & (POLLERR | POLLHUP | POLLNVAL))
                die("TUN A failed (revents %#x)", pfd[0].revents);
            if (pfd[1].revents & (POLLERR | POLLHUP | POLLNVAL))
                die("TUN B failed (revents %#x)", pfd[1].revents);
            if (pfd[0].revents & POLLIN)
                read_batch(&dirs[0]);
            if (pfd[1].revents & POLLIN)
                read_batch(&dirs[1]);
        }
        read_some = r > 0;
        if (g_dump) {
            g_dump = 0;
            write_stats(&dirs[0], &dirs[1], "stats");
        }
    }
    write_stats(&dirs[0], &dirs[1], "exit");
    stats_json(stdout, &dirs[0], &dirs[1], "exit");
    fflush(stdout);
    for (int i = 0; i < 2; i++) {
        free(dirs[i].main.s);
        free(dirs[i].late.s);
    }
    return 0;
}
