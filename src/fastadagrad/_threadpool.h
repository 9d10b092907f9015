/* fastadagrad's worker pool: dynamic chunks, passive waiting, fork-safe (included by kernels.pyx).
 *
 * fa_parallel_for(nitems, grain, fn, ctx, nthreads) calls fn(ctx, lo, hi) over [0, nitems) in
 * chunks of `grain` items (the last one shorter). The calling thread takes chunks too; up to
 * nthreads - 1 persistent workers join it. Chunks are claimed one at a time from an atomic
 * counter, so a worker that is descheduled (another process on its core) simply takes fewer
 * chunks and the caller does the rest: nobody waits for a thread that has not started.
 * Waiting is passive: a worker spins for a few microseconds for the next job, then sleeps on a
 * condition variable; the caller spins briefly for chunks still in flight, then sleeps too
 * (which hands its core to the late worker). No barrier ever spins for milliseconds.
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

typedef void (*fa_chunk_fn)(void *ctx, Py_ssize_t lo, Py_ssize_t hi);

#define FA_MAX_THREADS 256

#if (defined(__unix__) || defined(__APPLE__)) && (defined(__GNUC__) || defined(__clang__))
#define FA_POOL 1
#include <pthread.h>
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

/* Spin budgets in nanoseconds (then sleep). Short on purpose: on a busy machine a spinning
 * thread takes the CPU from the thread it waits for. */
static long long fa_worker_spin_ns = 50000;   /* a worker waiting for the next job */
static long long fa_caller_spin_ns = 20000;   /* the caller waiting for chunks in flight */

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
    /* the job (written by the caller before gen is published) */
    fa_chunk_fn fn;
    void *ctx;
    Py_ssize_t nitems, grain, nchunks;
    int job_workers;             /* workers with id < job_workers take part */
    Py_ssize_t next;             /* next chunk to claim */
} fa_pool_t;

static fa_pool_t fa_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                            PTHREAD_COND_INITIALIZER};

static long long fa_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Claim and run chunks of the current job until none is left. */
static void fa_run_chunks(void) {
    Py_ssize_t c, lo, hi;
    for (;;) {
        c = __atomic_fetch_add(&fa_pool.next, 1, __ATOMIC_SEQ_CST);
        if (c >= fa_pool.nchunks)
            return;
        lo = c * fa_pool.grain;
        hi = lo + fa_pool.grain < fa_pool.nitems ? lo + fa_pool.grain : fa_pool.nitems;
        fa_pool.fn(fa_pool.ctx, lo, hi);
    }
}

static void fa_leave_job(void) {
    if (FA_ADD(&fa_pool.active, -1) == 0 && FA_LOAD(&fa_pool.caller_sleeping)) {
        pthread_mutex_lock(&fa_pool.mu);
        pthread_cond_signal(&fa_pool.idle);
        pthread_mutex_unlock(&fa_pool.mu);
    }
}

static void *fa_worker_main(void *arg) {
    int id = (int)(Py_ssize_t)arg;
    unsigned long long seen = FA_LOAD(&fa_pool.gen), g;
    long long until;
    for (;;) {
        g = FA_LOAD(&fa_pool.gen);
        if (g == seen) {   /* spin a little, then sleep until the next job */
            until = fa_now_ns() + fa_worker_spin_ns;
            while ((g = FA_LOAD(&fa_pool.gen)) == seen && fa_now_ns() < until) {
                int k;
                for (k = 0; k < 16; k++)
                    FA_PAUSE();
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
        if (FA_LOAD(&fa_pool.open) == g && id < fa_pool.job_workers)
            fa_run_chunks();
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

/* Start workers up to `want` (under the busy flag); returns how many exist. */
static int fa_ensure_workers(int want) {
    pthread_attr_t attr;
    pthread_t tid;
    if (!fa_pool.atfork_registered) {
        if (pthread_atfork(fa_atfork_prepare, fa_atfork_parent, fa_atfork_child) != 0)
            return 0;   /* cannot be made fork-safe: stay serial */
        fa_pool.atfork_registered = 1;
    }
    if (fa_pool.nworkers >= want)
        return fa_pool.nworkers;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    while (fa_pool.nworkers < want) {
        if (pthread_create(&tid, &attr, fa_worker_main, (void *)(Py_ssize_t)fa_pool.nworkers) != 0)
            break;
        fa_pool.nworkers++;
    }
    pthread_attr_destroy(&attr);
    return fa_pool.nworkers;
}

static void fa_parallel_for(Py_ssize_t nitems, Py_ssize_t grain, fa_chunk_fn fn, void *ctx,
                            int nthreads) {
    Py_ssize_t nchunks;
    int expected = 0, workers;
    long long until;
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
    workers = fa_ensure_workers(nthreads - 1);
    if (workers > nthreads - 1)
        workers = nthreads - 1;
    if (workers < 1) {
        FA_STORE(&fa_pool.busy, 0);
        fn(ctx, 0, nitems);
        return;
    }
    fa_pool.fn = fn;
    fa_pool.ctx = ctx;
    fa_pool.nitems = nitems;
    fa_pool.grain = grain;
    fa_pool.nchunks = nchunks;
    fa_pool.job_workers = workers;
    FA_STORE(&fa_pool.next, 0);
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
    fa_run_chunks();
    /* Close the job, then wait for the workers still inside it (running a claimed chunk). */
    FA_STORE(&fa_pool.open, 0ULL);
    if (FA_LOAD(&fa_pool.active) != 0) {
        until = fa_now_ns() + fa_caller_spin_ns;
        while (FA_LOAD(&fa_pool.active) != 0 && fa_now_ns() < until)
            FA_PAUSE();
        if (FA_LOAD(&fa_pool.active) != 0) {
            pthread_mutex_lock(&fa_pool.mu);
            FA_STORE(&fa_pool.caller_sleeping, 1);
            while (FA_LOAD(&fa_pool.active) != 0)
                pthread_cond_wait(&fa_pool.idle, &fa_pool.mu);
            FA_STORE(&fa_pool.caller_sleeping, 0);
            pthread_mutex_unlock(&fa_pool.mu);
        }
    }
    FA_STORE(&fa_pool.busy, 0);
}

static void fa_set_spin_ns(long long worker, long long caller) {
    if (worker >= 0)
        fa_worker_spin_ns = worker;
    if (caller >= 0)
        fa_caller_spin_ns = caller;
}

static int fa_pool_workers(void) { return fa_pool.nworkers; }

#else  /* no pthreads: serial */

static void fa_parallel_for(Py_ssize_t nitems, Py_ssize_t grain, fa_chunk_fn fn, void *ctx,
                            int nthreads) {
    (void)grain;
    (void)nthreads;
    if (nitems > 0)
        fn(ctx, 0, nitems);
}

static void fa_set_spin_ns(long long worker, long long caller) { (void)worker; (void)caller; }
static int fa_pool_workers(void) { return 0; }

#endif
#endif
