/* ---------------------------------------------------------------- thread pool */

typedef void (*work_fn)(void *arg, int ith, int nth);

static int g_nth = 1;
static pthread_t g_threads[MAX_THREADS];
static atomic_int g_gen, g_done, g_quit, g_sleepers;
static atomic_int g_bar_count, g_bar_phase;
static work_fn g_fn;
static void *g_arg;
static pthread_mutex_t g_call_lock = PTHREAD_MUTEX_INITIALIZER;   /* one parallel call at a time */

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void futex_wait(atomic_int *addr, int expected) {
#ifdef __linux__
    syscall(SYS_futex, (int *)addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
#else
    (void)addr; (void)expected; sched_yield();
#endif
}

static void futex_wake_all(atomic_int *addr) {
#ifdef __linux__
    syscall(SYS_futex, (int *)addr, FUTEX_WAKE_PRIVATE, 0x7fffffff, NULL, NULL, 0);
#else
    (void)addr;
#endif
}

/* All threads of a parallel call meet here between dependent steps. Spin briefly, then yield:
   the machine may be shared, and a preempted partner must get the core back. */
static void barrier(int nth) {
    if (nth == 1) return;
    int phase = atomic_load_explicit(&g_bar_phase, memory_order_acquire);
    if (atomic_fetch_add_explicit(&g_bar_count, 1, memory_order_acq_rel) == nth - 1) {
        atomic_store_explicit(&g_bar_count, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&g_bar_phase, 1, memory_order_acq_rel);
        return;
    }
    for (int spins = 0; atomic_load_explicit(&g_bar_phase, memory_order_acquire) == phase; spins++) {
        if (spins < 4000) cpu_relax();
        else sched_yield();
    }
}

/* Workers spin for a short while after a job (the next layer's call comes within microseconds
   during decoding), then sleep on a futex so an idle model costs no CPU. */
static int g_start_gen[MAX_THREADS];   /* the job generation when a worker was created */

static void *worker_main(void *p) {
    int ith = (int)(intptr_t)p;
    int seen = g_start_gen[ith];   /* not a fresh read: a job posted before we run must not be missed */
    for (;;) {
        double t0 = 0;
        for (int spins = 0;; spins++) {
            int gen = atomic_load_explicit(&g_gen, memory_order_acquire);
            if (gen != seen) { seen = gen; break; }
            if (spins < 2000) { cpu_relax(); continue; }
            if (t0 == 0) t0 = now_s();
            if (now_s() - t0 < 2e-3) { if (spins % 64 == 0) sched_yield(); else cpu_relax(); continue; }
            atomic_fetch_add(&g_sleepers, 1);
            if (atomic_load(&g_gen) == seen) futex_wait(&g_gen, seen);
            atomic_fetch_sub(&g_sleepers, 1);
            t0 = 0;
            spins = 0;
        }
        if (atomic_load(&g_quit)) return NULL;
        g_fn(g_arg, ith, g_nth);
        atomic_fetch_add_explicit(&g_done, 1, memory_order_acq_rel);
    }
}

static void pool_stop(void) {
    if (g_nth <= 1) return;
    atomic_store(&g_quit, 1);
    atomic_fetch_add(&g_gen, 1);
    futex_wake_all(&g_gen);
    for (int i = 1; i < g_nth; i++) pthread_join(g_threads[i], NULL);
    atomic_store(&g_quit, 0);
    g_nth = 1;
}

int lb_init(int nthreads) {
    if (nthreads < 1) nthreads = 1;
    if (nthreads > MAX_THREADS) nthreads = MAX_THREADS;
    pthread_mutex_lock(&g_call_lock);
    if (nthreads != g_nth) {
        pool_stop();
        g_nth = nthreads;
        for (int i = 1; i < nthreads; i++) {
            g_start_gen[i] = atomic_load(&g_gen);
            if (pthread_create(&g_threads[i], NULL, worker_main, (void *)(intptr_t)i) != 0) { g_nth = i; break; }
        }
    }
    int n = g_nth;
    pthread_mutex_unlock(&g_call_lock);
    return n;
}

int lb_threads(void) { return g_nth; }

static void pool_run(work_fn fn, void *arg) {
    int nth = g_nth;
    g_fn = fn;
    g_arg = arg;
    atomic_store(&g_done, 0);
    atomic_store(&g_bar_count, 0);
    atomic_fetch_add_explicit(&g_gen, 1, memory_order_acq_rel);
    if (atomic_load(&g_sleepers)) futex_wake_all(&g_gen);
    fn(arg, 0, nth);
    for (int spins = 0; atomic_load_explicit(&g_done, memory_order_acquire) != nth - 1; spins++) {
        if (spins < 4000) cpu_relax();
        else sched_yield();
    }
}

/* ---------------------------------------------------------------- scratch memory */

static void *g_scratch;
static size_t g_scratch_bytes;

static void *scratch(size_t bytes) {
    if (bytes > g_scratch_bytes) {
        free(g_scratch);
        g_scratch = aligned_alloc(64, (bytes + 63) / 64 * 64);
        g_scratch_bytes = g_scratch ? bytes : 0;
    }
    return g_scratch;
}

/* Thread ith's share [split_lo(ith), split_lo(ith + 1)) of `total` items. */
static int64_t split_lo(int64_t total, int ith, int nth) { return total * ith / nth; }
