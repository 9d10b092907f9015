/* fastadagrad's worker pool: dynamic chunks, passive waiting, fork-safe (included by kernels.pyx).
 *
 * fa_parallel_for(nitems, grain, fn, ctx, nthreads, site, elements) calls fn(ctx, lo, hi) over [0, nitems) in
 * chunks of `grain` items (the last one shorter). The calling thread takes chunks too; up to
 * nthreads - 1 persistent workers join it. Each thread has a home range of consecutive chunks
 * (the same one every call, so on a quiet machine each core finds its part of the arrays in its
 * own cache, as with a static split); chunks are claimed one at a time from per-range atomic
 * counters, and a thread that has finished its range takes the remaining chunks of the others.
 * So a worker that is descheduled (another process on its core) simply takes fewer chunks and
 * the caller does the rest: nobody waits for a thread that has not started.
 * Waiting is passive: a worker spins for a few microseconds for the next job, then sleeps on a
 * condition variable; the caller spins briefly for chunks still in flight, then sleeps too
 * (which hands its core to the late worker). No barrier ever spins for milliseconds.
 *
 * Busy machines: extra threads only pay when the cores are free. The pool times every call
 * and, per loop (site) and size class, runs parallel while its recent median beats serial's by
 * 10% (and switches to serial only when parallel stays slow for 2 ms), re-trying the mode not
 * chosen now and then (fa_choose: the intervals back off while the re-tries confirm the
 * choice). On a quiet machine calls are parallel; on a busy one they fall back to serial, and
 * return to parallel when the load goes.
 *
 * Which thread computes a chunk never changes a result: callers must make every item's result
 * independent of the chunk boundaries (fastadagrad: element-wise formulas, 16-element multiples;
 * whole rows for the sparse step).
 *
 * One job at a time: a second caller (another Python thread with the GIL released) that finds
 * the pool busy runs its loop on its own thread, serially, instead of queueing.
 * After fork() the child starts with no workers (pthread_atfork) and creates fresh ones on its
 * first parallel call. Without pthreads (MSVC) everything runs on the calling thread.
 *
 * The thread limit lives here, with exported C symbols fastadagrad_get_num_threads /
 * fastadagrad_set_num_threads (what the threadpoolctl controller calls).
 */
#ifndef FASTADAGRAD_THREADPOOL_H
#define FASTADAGRAD_THREADPOOL_H

#include <Python.h>
#include <string.h>

typedef void (*fa_chunk_fn)(void *ctx, Py_ssize_t lo, Py_ssize_t hi);

/* Loops, for the serial/parallel history (see fa_choose): a caller passes
 * fa_site(FA_KIND_x, variant), the variant being whatever else changes the loop's cost per
 * element (dtype, rule, master weights), so that interleaved calls of different loops of one
 * size (a float32 and a bfloat16 step, a step and the bandwidth probe) never judge serial and
 * parallel by each other's times. */
#define FA_KIND_DENSE 0
#define FA_KIND_MULTI 1
#define FA_KIND_SCAN 2
#define FA_KIND_SPARSE 3
#define FA_KIND_PROBE 4
#define FA_KIND_CLIP 5
#define FA_KIND_FAMILY 6
#define FA_KIND_MIXED 7
#define FA_KIND_MIXED_MULTI 8
#define FA_KIND_SPARSE_DUP 9
#define FA_KIND_SPARSE_FAMILY 10
#define FA_KIND_SPARSE_CLIP 11
#define FA_KIND_NORM 12
static inline int fa_site(int kind, int variant) { return kind | variant << 4; }

#define FA_MAX_THREADS 256

#if (defined(__unix__) || defined(__APPLE__)) && (defined(__GNUC__) || defined(__clang__))
#define FA_POOL 1
#include <pthread.h>
#include <sched.h>
#include <time.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FA_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define FA_PAUSE() __asm__ __volatile__("yield")
#else
#define FA_PAUSE() ((void)0)
#endif
#define FA_EXPORT __attribute__((visibility("default")))
#else
#define FA_POOL 0
#define FA_EXPORT
#endif

static int fa_num_threads = 1;   /* the limit used by fa_parallel_for's callers */

FA_EXPORT int fastadagrad_get_num_threads(void) { return fa_num_threads; }

FA_EXPORT void fastadagrad_set_num_threads(int n) {
    if (n < 1)
        n = 1;
    if (n > FA_MAX_THREADS)
        n = FA_MAX_THREADS;
    fa_num_threads = FA_POOL ? n : 1;
}

#if FA_POOL

#define FA_LOAD(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define FA_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#define FA_ADD(p, v) __atomic_add_fetch((p), (v), __ATOMIC_SEQ_CST)

/* How long a thread polls before it sleeps, in nanoseconds. Polling calls sched_yield(), so a
 * polling thread never keeps another runnable thread (the caller, or another process) off its
 * CPU: it only uses a CPU nobody else wants. A worker polls long enough to catch the next call
 * of a training loop without the cost of a wake-up (which on a virtual machine can exceed a
 * 1e5-element update). */
static long long fa_worker_spin_ns = 1000000; /* a worker waiting for the next job */
static long long fa_caller_spin_ns = 20000;   /* the caller waiting for chunks in flight */
/* The first part of a worker's polling does not yield: a sched_yield() is a system call
 * (~1 us on a virtual machine), and a worker inside one notices the next job late. Calls back
 * to back come a few microseconds apart, so they find the worker in this part. Measured
 * (always parallel, 2 threads, Zen 3 VM, interleaved samples): 4e4 elements 9.08 -> 8.82 us,
 * 1e5 19.5-19.9 -> 19.3-19.5 us in five runs of five, 1e6 184 -> 179 us, 3e5 55.4 -> 56.0 us.
 * 50 us of not yielding after a job is what a runnable thread of another process may wait. */
static long long fa_worker_pure_spin_ns = 50000;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t wake;         /* workers sleep here for a new job */
    pthread_cond_t idle;         /* the caller sleeps here for the last worker to leave */
    int nworkers;                /* started worker threads */
    int atfork_registered;
    int busy;                    /* a job is running (0/1, claimed by compare-exchange) */
    unsigned long long gen;      /* job number: workers wait for it to change */
    unsigned long long open;     /* == gen while the job accepts workers, 0 once closed */
    int sleeping;                /* workers blocked in pthread_cond_wait(wake) */
    int active;                  /* workers inside the current job */
    int caller_sleeping;
    int joined;                  /* a worker took part in the current job */
    /* the job (written by the caller before gen is published) */
    fa_chunk_fn fn;
    void *ctx;
    Py_ssize_t nitems, grain, nchunks;
    int job_workers;             /* workers with id < job_workers take part */
    int nranges;                 /* job_workers + 1 home ranges: the caller's is range 0 */
} fa_pool_t;

/* Range r holds chunks [fa_range_end[r - 1], fa_range_end[r]); next[r].c is its next chunk. */
typedef struct { Py_ssize_t c; char pad[64 - sizeof(Py_ssize_t)]; } fa_counter_t;
static fa_counter_t fa_next[FA_MAX_THREADS];
static Py_ssize_t fa_range_end[FA_MAX_THREADS];

static fa_pool_t fa_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                            PTHREAD_COND_INITIALIZER};

static long long fa_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Serial or parallel? Per loop (`site`) and size class (a power of 4 in elements) the
 * pool keeps the last FA_HIST wall times per element of each mode and runs the mode with the
 * lower median; the other mode is re-tried when its newest sample is older than
 * max(FA_EXPLORE_NS, 32 calls' time) AND at least FA_EXPLORE_CALLS calls of this size class
 * ran since the last try, so a change of load is noticed within tens of milliseconds when
 * calls are frequent, and a training loop that makes one large call per step does not spend
 * its steps re-trying the slower mode (it did: a 1.6e7-element update called every ~80 ms
 * ran serially most of the time, 1.15x one thread instead of 1.6x). */
#define FA_SITES 64   /* distinct sites seen by a process (a 65th shares the last slot) */
#define FA_SIZES 20
#define FA_HIST 5
#define FA_EXPLORE_NS 50000000LL
#define FA_EXPLORE_CALLS 32
typedef struct {
    float ns[2][FA_HIST];        /* [serial, parallel] ns per element, ring buffers */
    long long count[2];          /* samples taken */
    long long at[2];             /* time of the newest sample */
    int since;                   /* calls of the chosen mode since the last try */
    int burst, burst_mode;       /* calls left in the current try of the other mode ... */
    long long burst_until;       /* ... and until when it lasts at least */
    int backoff;                 /* tries that confirmed the chosen mode in a row (capped) */
    int judging;                 /* a try ended: the next decision judges it */
    int lone_try;                /* the call being made is a one-call try (long calls) */
    int started;                 /* the first parallel calls were made */
    int in_burst;                /* the call being made is part of a burst */
    long long burst_start;       /* when the current burst began */
    int last_best;               /* the mode last chosen outside a try */
    long long lost_since;        /* when parallel, the chosen mode, first lost to serial in
                                  * its own samples (0: it has not; see FA_FLIP_NS) */
} fa_history_t;
static fa_history_t fa_history[FA_SITES][FA_SIZES];
static int fa_site_key[FA_SITES];
static int fa_nsites;
static int fa_adaptive = 1;
static long long fa_calls[2];    /* serial / parallel decisions taken (statistics) */

static int fa_size_class(Py_ssize_t elements) {
    int c = 0;
    while (elements >= 4 && c < FA_SIZES - 1) {
        elements >>= 2;
        c++;
    }
    return c;
}

/* The history row of a site, given one on first use (called with the pool owned). */
static int fa_site_slot(int site) {
    int i;
    for (i = 0; i < fa_nsites; i++)
        if (fa_site_key[i] == site)
            return i;
    if (fa_nsites == FA_SITES)
        return FA_SITES - 1;
    fa_site_key[fa_nsites] = site;
    return fa_nsites++;
}

static float fa_median(const float *x, long long count) {
    float v[FA_HIST] = {0}, t;
    int n = count < FA_HIST ? (int)count : FA_HIST, i, j;
    for (i = 0; i < n; i++) {
        v[i] = x[i];
        for (j = i; j > 0 && v[j - 1] > v[j]; j--) {
            t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    }
    return v[n / 2];
}

/* 1: run in parallel, 0: serially. First 3 serial calls (the reference; the workers are
 * started meanwhile), then a burst of parallel calls. A burst, the first one or a try of the
 * mode not chosen, is at least FA_BURST calls and FA_BURST_NS, so that it is judged warm, not
 * on its first calls: on a quiet 2-CPU VM a worker started or woken from sleep helped nobody
 * for its first ~1-2 ms (1e5 elements: 25 parallel calls at the serial time), and a 1 ms
 * burst sent the quiet machine serial in 5 runs of 6 (3 ms: 1 in 8, a median over the last 5
 * calls). A burst of parallel calls ends early at a stalled call (fa_end_stalled_burst). A
 * call of FA_LONG_CALL_NS or more is judged on its own (a wake-up is small next to it), so
 * its try is one call. A try's cost is bounded by FA_BURST_NS per FA_EXPLORE_NS of wall time
 * (6%, less with back-off) plus one call, and by FA_BURST calls of the slower mode per
 * FA_EXPLORE_CALLS x FA_BURST calls of the chosen one.
 * Back-off: each try that leaves the choice as it was doubles both intervals (up to
 * 2^FA_BACKOFF_MAX: 1.6 s and 1,024 calls, 5,120 for short calls); a try that changes it, or
 * a switch made by the chosen mode's own samples, resets them. On a steadily busy machine the
 * parallel re-tries (the calls that may wait for a descheduled worker) become rare: with 2
 * competitors on 2 cores, 1e6 elements, the default's share of calls slower than twice the
 * 1-thread median fell to the 1-thread share (without back-off: 3.0-7.2% against 2.2-4.0%).
 * When the load goes, parallel comes back within ~2 s. Calls of 1 ms or more do not back off:
 * their re-try is one call in 33, and 32x their interval (20 s for a 20 ms call) left a stale
 * median in charge (1.6e7 elements, 2 competitors: the default at 1.28x one thread). */
#define FA_BURST 5
#define FA_BURST_NS 3000000LL
#define FA_LONG_CALL_NS 1000000.0
#define FA_BACKOFF_MAX 5
/* Parallel only when its median beats serial's by 10%. On a machine whose other cores are
 * taken the caller does nearly all chunks itself, so the two medians tie, while a parallel
 * call can wait milliseconds for a worker descheduled inside its chunk (1e6 elements, 2
 * competitors: parallel's 95th percentile 4 ms against serial's 0.5 ms); a tie went to
 * parallel before (a quarter of the calls). (Also refusing parallel when one of its last 5
 * calls took 2x serial's median was tried: it kept a quiet machine's 1e5 and 6.4e7 steps
 * serial, whose re-tries are rare or one call each.) */
#define FA_PARALLEL_GAIN 0.9f
/* Parallel, once chosen, is given up for its own slow samples only when they stay slow for
 * FA_FLIP_NS. On the quiet 2-CPU VM (Intel Xeon, 2026-11-28) 1-2% of 1e5-element parallel
 * calls took the serial time (the second vCPU away for a moment), often several in a row:
 * three of five were enough to send the loop serial until the next re-try, 50 ms later, and
 * to reset the back-off. 4-41% of the calls ran serially (0.5-6% since), the mean call took
 * 28.0-38.1 us (27.1-30.7 since; 27.0-27.7 with every call parallel). A busy machine's slow
 * parallel calls persist, so the switch comes FA_FLIP_NS later than before (a stall or two). */
#define FA_FLIP_NS 2000000LL
static int fa_choose(fa_history_t *h, long long now, Py_ssize_t elements) {
    int wins, best, other, long_call, shift;
    if (!fa_adaptive)
        return 1;
    double call_ns;
    long long explore;
    h->in_burst = 0;
    if (h->burst > 0 || now < h->burst_until) {
        h->burst--;
        h->in_burst = 1;
        return h->burst_mode;
    }
    if (h->count[0] < 3)   /* serial first: the reference a stalled parallel call is told by */
        return 0;
    if (!h->started) {     /* then parallel calls (the first are cold), as a burst: FA_HIST
                              * calls and FA_BURST_NS, so that the median is over warm calls */
        h->started = 1;
        h->burst = FA_HIST - 1;
        h->burst_until = now + FA_BURST_NS;
        h->burst_mode = 1;
        h->burst_start = now;
        h->in_burst = 1;
        return 1;
    }
    if (h->count[1] == 0)   /* no parallel sample yet (no worker could be started) */
        return 1;
    wins = fa_median(h->ns[1], h->count[1]) < FA_PARALLEL_GAIN * fa_median(h->ns[0], h->count[0]);
    best = wins;
    if (!wins && h->last_best == 1 && h->lost_since == 0)
        h->lost_since = now;
    if (h->judging) {   /* the try just ended: did it leave the choice as it was? */
        h->judging = 0;
        if (best != h->burst_mode)
            h->backoff += h->backoff < FA_BACKOFF_MAX;
        else
            h->backoff = 0;
    } else if (!wins && h->last_best == 1 && now - h->lost_since < FA_FLIP_NS) {
        best = 1;   /* parallel's own samples lost for less than FA_FLIP_NS: a transient */
    } else if (best == h->burst_mode) {   /* the chosen mode's own samples switched it */
        h->backoff = 0;
    }
    if (wins || best == 0)
        h->lost_since = 0;
    h->last_best = best;
    other = !best;
    call_ns = (double)fa_median(h->ns[best], h->count[best]) * (double)elements;
    explore = (long long)(32.0 * call_ns);
    if (explore < FA_EXPLORE_NS)
        explore = FA_EXPLORE_NS;
    long_call = call_ns >= FA_LONG_CALL_NS;
    shift = long_call ? 0 : h->backoff;   /* long calls: see FA_BACKOFF_MAX */
    explore <<= shift;
    if (h->since < (FA_EXPLORE_CALLS * FA_BURST) << FA_BACKOFF_MAX)
        h->since++;
    /* at most one call in 33 is a re-try: a burst of FA_BURST calls needs 32 x FA_BURST calls
     * of the chosen mode first (a busy machine's slow re-tries stay out of the 95th percentile) */
    if (now - h->at[other] > explore
            && h->since >= (FA_EXPLORE_CALLS * (long_call ? 1 : FA_BURST)) << shift) {
        h->burst = long_call ? 0 : FA_BURST - 1;
        h->burst_until = long_call ? 0 : now + FA_BURST_NS;
        h->lone_try = long_call;
        h->burst_mode = other;
        h->burst_start = now;
        h->since = 0;
        h->judging = 1;
        h->in_burst = 1;
        return other;
    }
    return best;
}

/* A burst of parallel calls (the first ones, or a re-try) ends at its first stalled call: one
 * slower than twice serial's median and by more than FA_STALL_NS. On a quiet machine even a
 * cold call (workers woken or started) takes about the serial time, since the caller takes the
 * chunks nobody else has; a stall is a worker descheduled inside its chunk, which costs
 * milliseconds while another process has its core, and the burst's next calls would likely
 * stall too. With 2 competitors on 2 cores and short benchmarks (0.3 s per case), the
 * parallel calls of whole bursts were most of the default's excess of slow samples. */
#define FA_STALL_NS 500000.0
/* A parallel call that no worker took part in (none got a CPU in time) is not judged: the
 * burst goes on until workers take part, for up to FA_JOIN_WAIT_NS. On a quiet 2-CPU VM a
 * worker woken from sleep, or just started, did not run for 1-2 ms in about half the
 * processes (its idle virtual CPU is slow to be scheduled by the host): bursts of 1 ms sent
 * the quiet machine serial (1e5 elements, 5 runs of 6), and then the re-tries, which wake a
 * sleeping worker again, kept it there. */
#define FA_JOIN_WAIT_NS 20000000LL
static void fa_end_stalled_burst(fa_history_t *h, long long ns, Py_ssize_t elements) {
    double serial;
    if (h->burst_mode != 1 || h->count[0] == 0)
        return;
    serial = (double)fa_median(h->ns[0], h->count[0]) * (double)elements;
    if ((double)ns > 2.0 * serial && (double)ns > serial + FA_STALL_NS) {
        h->burst = 0;
        h->burst_until = 0;
    }
}

/* A one-call try of the mode not chosen (a long call) replaces that mode's whole history: its
 * older samples can be seconds old, and outvoted the fresh one. Seen on the quiet VM, 1.6e7
 * bfloat16 elements: three parallel calls at the serial time (the second CPU gone for ~20
 * ms) sent the loop serial, and the tries that followed (4.5 ms against 6.6 ms serial) could
 * not bring it back while those three stayed in the median: 24-37 serial calls of ~70, in 4
 * runs of 18 (0 of 10 since). A stalled try on a busy machine keeps serial as before; a lucky
 * one is undone by the parallel calls that follow (their median). */
static void fa_record(fa_history_t *h, int mode, long long t0, long long t1, Py_ssize_t elements) {
    float ns = (float)((double)(t1 - t0) / (double)elements);
    int k;
    if (h->lone_try) {
        h->lone_try = 0;
        for (k = 0; k < FA_HIST; k++)
            h->ns[mode][k] = ns;
        if (h->count[mode] < FA_HIST)
            h->count[mode] = FA_HIST;
    } else {
        h->ns[mode][h->count[mode] % FA_HIST] = ns;
        h->count[mode]++;
    }
    h->at[mode] = t1;
}

/* Claim and run chunks of the current job until none is left: the home range first, then
 * the others' leftovers. */
static void fa_run_chunks(int home) {
    Py_ssize_t c, lo, hi;
    int k, r;
    for (k = 0; k < fa_pool.nranges; k++) {
        r = (home + k) % fa_pool.nranges;
        for (;;) {
            if (__atomic_load_n(&fa_next[r].c, __ATOMIC_RELAXED) >= fa_range_end[r])
                break;
            c = __atomic_fetch_add(&fa_next[r].c, 1, __ATOMIC_SEQ_CST);
            if (c >= fa_range_end[r])
                break;
            lo = c * fa_pool.grain;
            hi = lo + fa_pool.grain < fa_pool.nitems ? lo + fa_pool.grain : fa_pool.nitems;
            fa_pool.fn(fa_pool.ctx, lo, hi);
        }
    }
}

static void fa_leave_job(void) {
    if (FA_ADD(&fa_pool.active, -1) == 0 && FA_LOAD(&fa_pool.caller_sleeping)) {
        pthread_mutex_lock(&fa_pool.mu);
        pthread_cond_signal(&fa_pool.idle);
        pthread_mutex_unlock(&fa_pool.mu);
    }
}

/* Where a new worker starts: Linux puts a new thread on its creator's CPU, and there a worker
 * shares the caller's CPU until the load balancer moves it, while the other CPUs idle. On the
 * quiet 2-CPU VM that took longer than 400 back-to-back 1e5-element calls (14 ms) in 5
 * processes of 8 (the workers joined 1-4 of them). So a worker is created allowed every CPU of
 * its creator but the one the creator runs on, and given back the creator's whole set as soon
 * as it runs: a start elsewhere, no pinning (with it, 8 processes of 8 ran parallel from the
 * first milliseconds on). */
#if defined(__linux__) && defined(CPU_SET)
#define FA_START_ELSEWHERE 1
#else
#define FA_START_ELSEWHERE 0
#endif
typedef struct {   /* what a new worker is told (its own copy, freed by it) */
    int id;
#if FA_START_ELSEWHERE
    int restore;   /* started elsewhere: take the creator's CPUs back */
    cpu_set_t cpus;
#endif
} fa_worker_start_t;

static void *fa_worker_main(void *arg) {
    fa_worker_start_t *start = (fa_worker_start_t *)arg;
    int id = start->id;
#if FA_START_ELSEWHERE
    if (start->restore)
        pthread_setaffinity_np(pthread_self(), sizeof start->cpus, &start->cpus);
#endif
    free(start);
    unsigned long long seen = FA_LOAD(&fa_pool.gen), g;
    long long polled_from, until, now;
    for (;;) {
        g = FA_LOAD(&fa_pool.gen);
        if (g == seen) {   /* spin a little, then sleep until the next job */
            polled_from = fa_now_ns();
            until = polled_from + fa_worker_spin_ns;
            while ((g = FA_LOAD(&fa_pool.gen)) == seen && (now = fa_now_ns()) < until) {
                FA_PAUSE();
                if (now - polled_from >= fa_worker_pure_spin_ns)
                    sched_yield();
            }
            if (g == seen) {
                pthread_mutex_lock(&fa_pool.mu);
                FA_ADD(&fa_pool.sleeping, 1);
                while ((g = FA_LOAD(&fa_pool.gen)) == seen)
                    pthread_cond_wait(&fa_pool.wake, &fa_pool.mu);
                FA_ADD(&fa_pool.sleeping, -1);
                pthread_mutex_unlock(&fa_pool.mu);
            }
        }
        seen = g;
        /* Join: announce first, then check the job is still open (the caller closes it, then
         * waits for active == 0), so nobody touches a job whose caller has returned. */
        FA_ADD(&fa_pool.active, 1);
        if (FA_LOAD(&fa_pool.open) == g && id < fa_pool.job_workers) {
            FA_STORE(&fa_pool.joined, 1);
            fa_run_chunks(id + 1);
        }
        fa_leave_job();
    }
    return NULL;
}

static void fa_atfork_prepare(void) { pthread_mutex_lock(&fa_pool.mu); }
static void fa_atfork_parent(void) { pthread_mutex_unlock(&fa_pool.mu); }

static void fa_atfork_child(void) {
    /* Only the forking thread exists in the child: forget the workers (and a job another
     * thread of the parent may have been running), start fresh ones on demand. */
    pthread_mutex_init(&fa_pool.mu, NULL);
    pthread_cond_init(&fa_pool.wake, NULL);
    pthread_cond_init(&fa_pool.idle, NULL);
    fa_pool.nworkers = 0;
    fa_pool.busy = 0;
    fa_pool.sleeping = 0;
    fa_pool.active = 0;
    fa_pool.caller_sleeping = 0;
    fa_pool.open = 0;
}

/* Detached workers with a small stack (start elsewhere set by the caller when it applies). */
static void fa_worker_attr(pthread_attr_t *attr) {
    pthread_attr_init(attr);
    pthread_attr_setdetachstate(attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(attr, 256 * 1024);
}

/* Start workers up to `want` (under the busy flag); returns how many exist. */
static int fa_ensure_workers(int want) {
    pthread_attr_t attr;
    pthread_t tid;
    fa_worker_start_t *start;
    int elsewhere_set = 0;
#if FA_START_ELSEWHERE
    cpu_set_t cpus, elsewhere;
#endif
    if (!fa_pool.atfork_registered) {
        if (pthread_atfork(fa_atfork_prepare, fa_atfork_parent, fa_atfork_child) != 0)
            return 0;   /* cannot be made fork-safe: stay serial */
        fa_pool.atfork_registered = 1;
    }
    if (fa_pool.nworkers >= want)
        return fa_pool.nworkers;
    fa_worker_attr(&attr);
#if FA_START_ELSEWHERE
    {
        int here = sched_getcpu();
        if (here >= 0 && here < CPU_SETSIZE
                && pthread_getaffinity_np(pthread_self(), sizeof cpus, &cpus) == 0
                && CPU_ISSET(here, &cpus) && CPU_COUNT(&cpus) > 1) {
            elsewhere = cpus;
            CPU_CLR(here, &elsewhere);
            elsewhere_set = pthread_attr_setaffinity_np(&attr, sizeof elsewhere, &elsewhere) == 0;
        }
    }
#endif
    while (fa_pool.nworkers < want) {
        start = (fa_worker_start_t *)malloc(sizeof *start);
        if (start == NULL)
            break;
        start->id = fa_pool.nworkers;
#if FA_START_ELSEWHERE
        start->restore = elsewhere_set;
        if (elsewhere_set)
            start->cpus = cpus;
#endif
        if (pthread_create(&tid, &attr, fa_worker_main, start) != 0) {
            free(start);
            if (elsewhere_set) {   /* the start elsewhere refused: start as usual */
                elsewhere_set = 0;
                pthread_attr_destroy(&attr);
                fa_worker_attr(&attr);
                continue;
            }
            break;
        }
        fa_pool.nworkers++;
    }
    pthread_attr_destroy(&attr);
    return fa_pool.nworkers;
}

static void fa_parallel_for(Py_ssize_t nitems, Py_ssize_t grain, fa_chunk_fn fn, void *ctx,
                            int nthreads, int site, Py_ssize_t elements) {
    Py_ssize_t nchunks;
    int expected = 0, workers;
    long long until, t0;
    fa_history_t *h;
    if (nitems <= 0)
        return;
    if (grain < 1)
        grain = 1;
    nchunks = (nitems + grain - 1) / grain;
    if (nthreads <= 1 || nchunks <= 1
            || !__atomic_compare_exchange_n(&fa_pool.busy, &expected, 1, 0, __ATOMIC_SEQ_CST,
                                            __ATOMIC_SEQ_CST)) {
        fn(ctx, 0, nitems);   /* serial, or the pool is serving another thread */
        return;
    }
    /* We own the pool (and the history) until busy is cleared. */
    h = &fa_history[fa_site_slot(site)][fa_size_class(elements)];
    t0 = fa_now_ns();
    if (!h->started)   /* the serial reference calls: start the workers now, so that they are
                        * up and polling on their CPUs when the first parallel calls come */
        fa_ensure_workers(nthreads - 1);
    workers = fa_choose(h, t0, elements) ? fa_ensure_workers(nthreads - 1) : 0;
    if (workers > nthreads - 1)
        workers = nthreads - 1;
    if (workers < 1) {
        fa_calls[0]++;
        fn(ctx, 0, nitems);
        fa_record(h, 0, t0, fa_now_ns(), elements);
        FA_STORE(&fa_pool.busy, 0);
        return;
    }
    fa_calls[1]++;
    fa_pool.fn = fn;
    fa_pool.ctx = ctx;
    fa_pool.nitems = nitems;
    fa_pool.grain = grain;
    fa_pool.nchunks = nchunks;
    fa_pool.job_workers = workers;
    fa_pool.nranges = workers + 1;
    fa_pool.joined = 0;
    {
        int r;
        for (r = 0; r <= workers; r++) {
            fa_next[r].c = r == 0 ? 0 : fa_range_end[r - 1];
            fa_range_end[r] = nchunks * (r + 1) / (workers + 1);
        }
    }
    {
        unsigned long long g = fa_pool.gen + 1;
        FA_STORE(&fa_pool.open, g);
        FA_STORE(&fa_pool.gen, g);
    }
    if (FA_LOAD(&fa_pool.sleeping) > 0) {
        pthread_mutex_lock(&fa_pool.mu);
        pthread_cond_broadcast(&fa_pool.wake);
        pthread_mutex_unlock(&fa_pool.mu);
    }
    fa_run_chunks(0);
    /* Close the job, then wait for the workers still inside it (running a claimed chunk). */
    FA_STORE(&fa_pool.open, 0ULL);
    if (FA_LOAD(&fa_pool.active) != 0) {
        until = fa_now_ns() + fa_caller_spin_ns;
        while (FA_LOAD(&fa_pool.active) != 0 && fa_now_ns() < until)
            sched_yield();
        if (FA_LOAD(&fa_pool.active) != 0) {
            pthread_mutex_lock(&fa_pool.mu);
            FA_STORE(&fa_pool.caller_sleeping, 1);
            while (FA_LOAD(&fa_pool.active) != 0)
                pthread_cond_wait(&fa_pool.idle, &fa_pool.mu);
            FA_STORE(&fa_pool.caller_sleeping, 0);
            pthread_mutex_unlock(&fa_pool.mu);
        }
    }
    {
        long long t1 = fa_now_ns();
        if (h->in_burst && !FA_LOAD(&fa_pool.joined) && t1 - h->burst_start < FA_JOIN_WAIT_NS) {
            h->burst++;   /* no worker took part: not a parallel sample, the burst waits on */
        } else {
            fa_record(h, 1, t0, t1, elements);
            fa_end_stalled_burst(h, t1 - t0, elements);
        }
    }
    FA_STORE(&fa_pool.busy, 0);
}

/* Benchmark/test knob: 0 makes every large call parallel (no serial/parallel choice), 1 (the
 * default) restores the choice. Either way the history is cleared. Call with no parallel call
 * in flight. */
static void fa_set_adaptive(int on) {
    fa_adaptive = on;
    memset(fa_history, 0, sizeof(fa_history));
    fa_nsites = 0;
}

/* Test knob: samples recorded per history row, out[3 * i ...] = site, serial samples, parallel
 * samples for the rows of calls of `elements` (their size class); returns the number of sites
 * (at most max). */
static int fa_pool_history(Py_ssize_t elements, long long *out, int max) {
    int i, size_class = fa_size_class(elements);
    for (i = 0; i < fa_nsites && i < max; i++) {
        out[3 * i] = fa_site_key[i];
        out[3 * i + 1] = fa_history[i][size_class].count[0];
        out[3 * i + 2] = fa_history[i][size_class].count[1];
    }
    return i;
}

static void fa_pool_stats(long long *out) {
    out[0] = fa_calls[1];
    out[1] = fa_calls[0];
}

/* Test knob: the adaptive rule alone (fa_choose, fa_record, fa_end_stalled_burst) on a fresh
 * history, over ncalls back-to-back calls of `elements` elements, 1 us apart, when a serial
 * call takes serial_ns and the i-th call, if parallel, parallel_ns[i]: out[i] = 1 if the i-th
 * call ran parallel. No job runs and no shared state changes. Returns 1 (0 without the pool). */
static int fa_simulate_choices(Py_ssize_t elements, long long serial_ns,
                               const long long *parallel_ns, int ncalls, int *out) {
    fa_history_t h;
    long long now = 1000000000LL, d;
    int i, mode;
    memset(&h, 0, sizeof h);
    for (i = 0; i < ncalls; i++) {
        mode = fa_choose(&h, now, elements);
        d = mode ? parallel_ns[i] : serial_ns;
        fa_record(&h, mode, now, now + d, elements);
        if (mode)
            fa_end_stalled_burst(&h, d, elements);
        now += d + 1000;
        out[i] = mode;
    }
    return 1;
}

static void fa_set_spin_ns(long long worker, long long caller, long long pure) {
    if (worker >= 0)
        fa_worker_spin_ns = worker;
    if (caller >= 0)
        fa_caller_spin_ns = caller;
    if (pure >= 0)
        fa_worker_pure_spin_ns = pure;
}

static int fa_pool_workers(void) { return fa_pool.nworkers; }

#else  /* no pthreads: serial */

static void fa_parallel_for(Py_ssize_t nitems, Py_ssize_t grain, fa_chunk_fn fn, void *ctx,
                            int nthreads, int site, Py_ssize_t elements) {
    (void)grain;
    (void)nthreads;
    (void)site;
    (void)elements;
    if (nitems > 0)
        fn(ctx, 0, nitems);
}

static void fa_set_spin_ns(long long worker, long long caller, long long pure) {
    (void)worker;
    (void)caller;
    (void)pure;
}
static int fa_pool_workers(void) { return 0; }
static void fa_set_adaptive(int on) { (void)on; }
static void fa_pool_stats(long long *out) { out[0] = out[1] = 0; }
static int fa_simulate_choices(Py_ssize_t elements, long long serial_ns,
                               const long long *parallel_ns, int ncalls, int *out) {
    (void)elements;
    (void)serial_ns;
    (void)parallel_ns;
    (void)ncalls;
    (void)out;
    return 0;
}
static int fa_pool_history(Py_ssize_t elements, long long *out, int max) {
    (void)elements;
    (void)out;
    (void)max;
    return 0;
}

#endif
#endif
