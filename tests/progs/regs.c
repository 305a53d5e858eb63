/*
 * regs: load seeded values into every user XSAVE register of every thread,
 * then hold still so that a core taken now shows exactly those values.
 *
 *   regs SEED THREADS MODE [--isa=auto|sse|avx|avx512] [--touch-mib=N]
 *   regs probe
 *
 * MODE is "gcore" (main thread prints "ready" and sleeps, for gdb's gcore)
 * or "abort" (main thread sleeps 1 ms, then sends itself SIGABRT: a kernel
 * core; see abort_pause). All are raw syscalls (write, nanosleep, tgkill)
 * rather than printf or abort(), which would run glibc code after the loads.
 * "probe" prints the host lines and exits.
 * --touch-mib first writes to every page of N MiB (cores for memory
 * benchmarks).
 *
 * stdout, one record a line, all written before any register is loaded
 * (except "ready"):
 *   vendor NAME      the CPUID vendor string (GenuineIntel, AuthenticAMD, ...)
 *   cpu LEVEL        what this CPU and its OS support (sse, avx, avx512f, avx512bw)
 *   xcr0 HEX         XCR0 (0x3 when the OS has not enabled XSAVE)
 *   pku 0|1          whether PKRU is there to load (CPUID OSPKE and XCR0 bit 9)
 *   xsave ID SIZE OFFSET   CPUID 0xD for each user component >= 2 in XCR0:
 *                    the standard-format layout of this host
 *   isa LEVEL        what this run loads
 *   tid INDEX TID    one per thread, INDEX 0 is the main thread
 *   ready            gcore mode only, written once every thread has loaded
 *
 * The values come from splitmix64 seeded with (SEED, thread index); the
 * tests compute the same values in Python (tests/coremaker.py), so any
 * change to the draw order here must be made there too.
 *
 * Why everything happens in one asm statement: any C or glibc code between
 * loading a register and blocking may use xmm/ymm registers (memcpy,
 * printf, even the dynamic loader's lazy binding), and the compiler is free
 * to spill through them. So each thread loads x87, MXCSR, vector and
 * opmask registers, announces itself with a locked increment and blocks in
 * a raw syscall loop without ever returning to C. The AVX-512 instructions
 * exist only as asm text, so the binary runs on any x86-64 CPU: the path
 * taken is chosen at run time from CPUID and XGETBV.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum isa { ISA_SSE, ISA_AVX, ISA_AVX512F, ISA_AVX512BW };
static const char *const isa_names[] = {"sse", "avx", "avx512f", "avx512bw"};

enum action { ACT_NONE = 0, ACT_READY = 1, ACT_ABORT = 2 };

/* Offsets below are spelled out for the asm; the static asserts keep them
 * honest. */
#define OFF_ZMM 0
#define OFF_K 2048
#define OFF_FILL 2112
#define OFF_PUSH 2240
#define OFF_NPUSH 2368
#define OFF_MXCSR 2372
#define OFF_FCW 2376
#define OFF_ACTION 2380
#define OFF_PID 2388
#define OFF_TID 2392
#define OFF_COUNTER 2400

struct plan {
    uint8_t zmm[32][64];     /* zmm0-31; ymm/xmm are their low bytes */
    uint64_t k[8];           /* k0-7 */
    uint8_t fill[8][16];     /* pushed then popped: the contents of empty slots */
    uint8_t push[8][16];     /* the first npush stay on the x87 stack */
    uint32_t npush;
    uint32_t mxcsr;
    uint16_t fcw;
    uint16_t pad;
    uint32_t action;
    uint32_t pkru;
    int32_t pid;
    int32_t tid;
    int *counter;
} __attribute__((aligned(64)));

_Static_assert(offsetof(struct plan, zmm) == OFF_ZMM, "zmm");
_Static_assert(offsetof(struct plan, k) == OFF_K, "k");
_Static_assert(offsetof(struct plan, fill) == OFF_FILL, "fill");
_Static_assert(offsetof(struct plan, push) == OFF_PUSH, "push");
_Static_assert(offsetof(struct plan, npush) == OFF_NPUSH, "npush");
_Static_assert(offsetof(struct plan, mxcsr) == OFF_MXCSR, "mxcsr");
_Static_assert(offsetof(struct plan, fcw) == OFF_FCW, "fcw");
_Static_assert(offsetof(struct plan, action) == OFF_ACTION, "action");
_Static_assert(offsetof(struct plan, pid) == OFF_PID, "pid");
_Static_assert(offsetof(struct plan, tid) == OFF_TID, "tid");
_Static_assert(offsetof(struct plan, counter) == OFF_COUNTER, "counter");

#define S(x) S_(x)
#define S_(x) #x

/* ---- the seeded values ------------------------------------------------ */

struct rng { uint64_t s; };

static uint64_t next(struct rng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static void put_ext(uint8_t out[16], int sign, unsigned exp, uint64_t mant)
{
    memset(out, 0, 16);
    memcpy(out, &mant, 8);
    uint16_t se = (uint16_t)((sign ? 0x8000 : 0) | (exp & 0x7fff));
    memcpy(out + 8, &se, 2);
}

/* Categories chosen so that ftag shows valid, zero and special entries. */
static void make_plan(struct plan *p, uint64_t seed, unsigned index)
{
    struct rng r = {seed ^ ((uint64_t)(index + 1) * 0xD1B54A32D192ED03ULL)};
    memset(p, 0, sizeof *p);
    for (int i = 0; i < 32; i++)
        for (int j = 0; j < 8; j++) {
            uint64_t v = next(&r);
            memcpy(&p->zmm[i][8 * j], &v, 8);
        }
    for (int i = 0; i < 8; i++)
        p->k[i] = next(&r);
    for (int i = 0; i < 8; i++) {
        uint64_t m = next(&r), e = next(&r);
        put_ext(p->fill[i], (e >> 6) & 1, 0x3fff - 32 + (e & 63), m | (1ULL << 63));
    }
    p->npush = 4 + next(&r) % 3;
    unsigned rot = next(&r) % 5;
    for (int j = 0; j < 8; j++) {
        uint64_t m = next(&r), e = next(&r);
        int sign = (e >> 6) & 1;
        switch ((j + rot) % 5) {
        case 0: /* normal */
            put_ext(p->push[j], sign, 0x3fff - 32 + (e & 63), m | (1ULL << 63));
            break;
        case 1: /* zero */
            put_ext(p->push[j], sign, 0, 0);
            break;
        case 2: /* denormal: exponent 0, integer bit clear, fraction not 0 */
            put_ext(p->push[j], sign, 0, (m & ~(1ULL << 63)) | 1);
            break;
        case 3: /* infinity */
            put_ext(p->push[j], sign, 0x7fff, 1ULL << 63);
            break;
        default: /* quiet NaN */
            put_ext(p->push[j], sign, 0x7fff, (3ULL << 62) | (m & ((1ULL << 62) - 1)));
            break;
        }
    }
    uint64_t d = next(&r);
    static const unsigned pcs[3] = {0, 2, 3}; /* 1 is reserved */
    /* all x87 exceptions masked: nothing here may trap */
    p->fcw = (uint16_t)(0x0040 | 0x3f | (pcs[d % 3] << 8) | (((d >> 8) & 3) << 10));
    d = next(&r);
    p->mxcsr = (uint32_t)(0x1f80 | (d & 0x3f) | (((d >> 8) & 3) << 13) | (((d >> 10) & 1) << 15)
                          | (((d >> 11) & 1) << 6));
    /* key 0 (bits 0-1) stays open: every page of the process, stacks
     * included, carries protection key 0 */
    p->pkru = (uint32_t)next(&r) & ~3u;
}

/* ---- the loads -------------------------------------------------------- */

#define X87_AND_MXCSR                                                         \
    "fninit\n\t"                                                              \
    "fldcw " S(OFF_FCW) "(%%rbx)\n\t"                                         \
    "lea " S(OFF_FILL) "(%%rbx), %%rsi\n\t"                                   \
    "mov $8, %%ecx\n"                                                         \
    "1:\n\t"                                                                  \
    "fldt (%%rsi)\n\t"                                                        \
    "add $16, %%rsi\n\t"                                                      \
    "dec %%ecx\n\t"                                                           \
    "jnz 1b\n\t"                                                              \
    "mov $8, %%ecx\n"                                                         \
    "2:\n\t"                                                                  \
    "fstp %%st(0)\n\t"                                                        \
    "dec %%ecx\n\t"                                                           \
    "jnz 2b\n\t"                                                              \
    "lea " S(OFF_PUSH) "(%%rbx), %%rsi\n\t"                                   \
    "mov " S(OFF_NPUSH) "(%%rbx), %%ecx\n"                                    \
    "3:\n\t"                                                                  \
    "fldt (%%rsi)\n\t"                                                        \
    "add $16, %%rsi\n\t"                                                      \
    "dec %%ecx\n\t"                                                           \
    "jnz 3b\n\t"                                                              \
    "ldmxcsr " S(OFF_MXCSR) "(%%rbx)\n\t"

/* After the loads: count this thread in, do the main thread's action, and
 * block for good. Only rax, rcx, rdx, rsi, rdi, r11 are touched here. */
#define ANNOUNCE_AND_BLOCK                                                    \
    "mov " S(OFF_COUNTER) "(%%rbx), %%rsi\n\t"                                \
    "lock incl (%%rsi)\n\t"                                                   \
    "mov " S(OFF_ACTION) "(%%rbx), %%ecx\n\t"                                 \
    "cmp $1, %%ecx\n\t"                                                       \
    "jne 5f\n\t"                                                              \
    "mov $" S(SYS_write) ", %%eax\n\t"                                        \
    "mov $1, %%edi\n\t"                                                       \
    "lea ready_text(%%rip), %%rsi\n\t"                                        \
    "mov $6, %%edx\n\t"                                                       \
    "syscall\n\t"                                                             \
    "jmp 6f\n"                                                                \
    "5:\n\t"                                                                  \
    "cmp $2, %%ecx\n\t"                                                       \
    "jne 6f\n\t"                                                              \
    "mov $" S(SYS_nanosleep) ", %%eax\n\t"                                    \
    "lea abort_pause(%%rip), %%rdi\n\t"                                       \
    "xor %%esi, %%esi\n\t"                                                    \
    "syscall\n\t"                                                             \
    "mov $" S(SYS_tgkill) ", %%eax\n\t"                                       \
    "mov " S(OFF_PID) "(%%rbx), %%edi\n\t"                                    \
    "mov " S(OFF_TID) "(%%rbx), %%esi\n\t"                                    \
    "mov $" S(SIGABRT) ", %%edx\n\t"                                          \
    "syscall\n"                                                               \
    "6:\n\t"                                                                  \
    "mov $" S(SYS_pause) ", %%eax\n\t"                                        \
    "syscall\n\t"                                                             \
    "jmp 6b\n\t"

#define V16(insn, reg)                                                        \
    insn " 0*64(%%rbx), %%" reg "0\n\t" insn " 1*64(%%rbx), %%" reg "1\n\t"      \
    insn " 2*64(%%rbx), %%" reg "2\n\t" insn " 3*64(%%rbx), %%" reg "3\n\t"      \
    insn " 4*64(%%rbx), %%" reg "4\n\t" insn " 5*64(%%rbx), %%" reg "5\n\t"      \
    insn " 6*64(%%rbx), %%" reg "6\n\t" insn " 7*64(%%rbx), %%" reg "7\n\t"      \
    insn " 8*64(%%rbx), %%" reg "8\n\t" insn " 9*64(%%rbx), %%" reg "9\n\t"      \
    insn " 10*64(%%rbx), %%" reg "10\n\t" insn " 11*64(%%rbx), %%" reg "11\n\t"  \
    insn " 12*64(%%rbx), %%" reg "12\n\t" insn " 13*64(%%rbx), %%" reg "13\n\t"  \
    insn " 14*64(%%rbx), %%" reg "14\n\t" insn " 15*64(%%rbx), %%" reg "15\n\t"

#define Z16_31                                                                \
    "vmovdqu64 16*64(%%rbx), %%zmm16\n\t" "vmovdqu64 17*64(%%rbx), %%zmm17\n\t"  \
    "vmovdqu64 18*64(%%rbx), %%zmm18\n\t" "vmovdqu64 19*64(%%rbx), %%zmm19\n\t"  \
    "vmovdqu64 20*64(%%rbx), %%zmm20\n\t" "vmovdqu64 21*64(%%rbx), %%zmm21\n\t"  \
    "vmovdqu64 22*64(%%rbx), %%zmm22\n\t" "vmovdqu64 23*64(%%rbx), %%zmm23\n\t"  \
    "vmovdqu64 24*64(%%rbx), %%zmm24\n\t" "vmovdqu64 25*64(%%rbx), %%zmm25\n\t"  \
    "vmovdqu64 26*64(%%rbx), %%zmm26\n\t" "vmovdqu64 27*64(%%rbx), %%zmm27\n\t"  \
    "vmovdqu64 28*64(%%rbx), %%zmm28\n\t" "vmovdqu64 29*64(%%rbx), %%zmm29\n\t"  \
    "vmovdqu64 30*64(%%rbx), %%zmm30\n\t" "vmovdqu64 31*64(%%rbx), %%zmm31\n\t"

#define K8(insn)                                                       \
    insn " " S(OFF_K) "+0*8(%%rbx), %%k0\n\t" insn " " S(OFF_K) "+1*8(%%rbx), %%k1\n\t"  \
    insn " " S(OFF_K) "+2*8(%%rbx), %%k2\n\t" insn " " S(OFF_K) "+3*8(%%rbx), %%k3\n\t"  \
    insn " " S(OFF_K) "+4*8(%%rbx), %%k4\n\t" insn " " S(OFF_K) "+5*8(%%rbx), %%k5\n\t"  \
    insn " " S(OFF_K) "+6*8(%%rbx), %%k6\n\t" insn " " S(OFF_K) "+7*8(%%rbx), %%k7\n\t"

__attribute__((used)) static const char ready_text[] = "ready\n";
/* Before SIGABRT the aborting thread sleeps once, so that the core shows the PKRU it
 * loaded. A kernel core takes PKRU from the task's thread.pkru, not from the XSAVE
 * buffer (xstateregs_get -> copy_xstate_to_uabi_buf(..., target->thread.pkru, ...)),
 * and thread.pkru is stashed from the register only when the task is switched out
 * (x86_pkru_load in __switch_to). A thread that writes PKRU and dumps core without
 * being switched out in between (a lone thread: no other thread for the dump to wait
 * for) gets the PKRU of its last switch in its core, 0x55555554 after exec. */
__attribute__((used)) static const struct timespec abort_pause = {0, 1000000};

__attribute__((noreturn, noinline)) static void load_sse(struct plan *p)
{
    __asm__ volatile(X87_AND_MXCSR V16("movdqu", "xmm") ANNOUNCE_AND_BLOCK
                     : : "b"(p) : "memory");
    __builtin_unreachable();
}

__attribute__((noreturn, noinline)) static void load_avx(struct plan *p)
{
    __asm__ volatile(X87_AND_MXCSR V16("vmovdqu", "ymm") ANNOUNCE_AND_BLOCK
                     : : "b"(p) : "memory");
    __builtin_unreachable();
}

__attribute__((noreturn, noinline)) static void load_avx512f(struct plan *p)
{
    /* without AVX512BW only kmovw exists: k registers get 16 bits */
    __asm__ volatile(X87_AND_MXCSR V16("vmovdqu64", "zmm") Z16_31 K8("kmovw")
                     ANNOUNCE_AND_BLOCK
                     : : "b"(p) : "memory");
    __builtin_unreachable();
}

__attribute__((noreturn, noinline)) static void load_avx512bw(struct plan *p)
{
    __asm__ volatile(X87_AND_MXCSR V16("vmovdqu64", "zmm") Z16_31 K8("kmovq")
                     ANNOUNCE_AND_BLOCK
                     : : "b"(p) : "memory");
    __builtin_unreachable();
}

static int g_pku;

__attribute__((noreturn)) static void load_and_block(struct plan *p, enum isa isa)
{
    /* Only the pkey_* functions of glibc touch PKRU, so C may set it. */
    if (g_pku)
        __asm__ volatile("wrpkru" : : "a"(p->pkru), "c"(0), "d"(0) : "memory");
    switch (isa) {
    case ISA_SSE: load_sse(p);
    case ISA_AVX: load_avx(p);
    case ISA_AVX512F: load_avx512f(p);
    case ISA_AVX512BW: load_avx512bw(p);
    }
    abort();
}

/* ---- what this CPU can do --------------------------------------------- */

static enum isa cpu_isa(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return ISA_SSE;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    if (!osxsave || !avx)
        return ISA_SSE;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    /* the OS must have enabled the state too, not just the CPU have it */
    if ((lo & 0x6) != 0x6)
        return ISA_SSE;
    if (__get_cpuid_max(0, NULL) < 7)
        return ISA_AVX;
    __cpuid_count(7, 0, a, b, c, d);
    int f = (b >> 16) & 1, bw = (b >> 30) & 1;
    if (!f || (lo & 0xe0) != 0xe0)
        return ISA_AVX;
    return bw ? ISA_AVX512BW : ISA_AVX512F;
}

/* DAZ (MXCSR bit 6) is seeded too; ldmxcsr of an unsupported bit faults. */
static unsigned mxcsr_mask(void)
{
    static uint8_t area[512] __attribute__((aligned(16)));
    __asm__ volatile("fxsave %0" : "=m"(area));
    uint32_t m;
    memcpy(&m, area + 28, 4);
    return m ? m : 0xffbf;
}

/* ---- threads ---------------------------------------------------------- */

static uint64_t g_seed;
static unsigned g_threads;
static enum isa g_isa;
static pthread_barrier_t g_barrier;
static int g_loaded;
static int g_tids[1024];

struct worker { unsigned index; struct plan plan; };

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    g_tids[w->index] = (int)syscall(SYS_gettid);
    make_plan(&w->plan, g_seed, w->index);
    w->plan.counter = &g_loaded;
    w->plan.action = ACT_NONE;
    pthread_barrier_wait(&g_barrier);
    load_and_block(&w->plan, g_isa);
    return NULL;
}

static void die(const char *what)
{
    fprintf(stderr, "regs: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void usage(void)
{
    fputs("usage: regs SEED THREADS gcore|abort [--isa=auto|sse|avx|avx512] [--touch-mib=N]\n"
          "       regs probe\n",
          stderr);
    exit(2);
}

static int has_pku(uint64_t xcr0)
{
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, NULL) < 7 || !((xcr0 >> 9) & 1))
        return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (c >> 4) & 1; /* OSPKE: the OS has set CR4.PKE */
}

static void print_host(enum isa cpu)
{
    unsigned a, b, c, d;
    uint64_t xcr0 = 0x3;
    char vendor[13] = {0};
    __cpuid(0, a, b, c, d);
    memcpy(vendor, &b, 4);
    memcpy(vendor + 4, &d, 4);
    memcpy(vendor + 8, &c, 4);
    printf("vendor %s\n", vendor);
    printf("cpu %s\n", isa_names[cpu]);
    if (__get_cpuid(1, &a, &b, &c, &d) && ((c >> 27) & 1)) {
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        xcr0 = ((uint64_t)hi << 32) | lo;
    }
    printf("xcr0 %#llx\n", (unsigned long long)xcr0);
    printf("pku %d\n", has_pku(xcr0));
    if (__get_cpuid_max(0, NULL) >= 0xd)
        for (unsigned i = 2; i < 63; i++)
            if ((xcr0 >> i) & 1) {
                __cpuid_count(0xd, i, a, b, c, d);
                printf("xsave %u %u %u\n", i, a, b);
            }
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "probe")) {
        print_host(cpu_isa());
        return 0;
    }
    if (argc < 4)
        usage();
    char *end;
    g_seed = strtoull(argv[1], &end, 0);
    if (*end)
        usage();
    long n = strtol(argv[2], &end, 0);
    if (*end || n < 1 || n > 1024)
        usage();
    g_threads = (unsigned)n;
    enum action act;
    if (!strcmp(argv[3], "gcore"))
        act = ACT_READY;
    else if (!strcmp(argv[3], "abort"))
        act = ACT_ABORT;
    else
        usage();
    enum isa cpu = cpu_isa(), isa = cpu;
    long touch_mib = 0;
    for (int i = 4; i < argc; i++) {
        if (!strncmp(argv[i], "--isa=", 6)) {
            const char *v = argv[i] + 6;
            enum isa want;
            if (!strcmp(v, "auto"))
                want = cpu;
            else if (!strcmp(v, "sse"))
                want = ISA_SSE;
            else if (!strcmp(v, "avx"))
                want = ISA_AVX;
            else if (!strcmp(v, "avx512"))
                want = cpu >= ISA_AVX512F ? cpu : ISA_AVX512F;
            else
                usage();
            if (want > cpu) {
                fprintf(stderr, "regs: this CPU supports only %s\n", isa_names[cpu]);
                return 3;
            }
            isa = want;
        } else if (!strncmp(argv[i], "--touch-mib=", 12)) {
            touch_mib = strtol(argv[i] + 12, &end, 0);
            if (*end || touch_mib < 0)
                usage();
        } else {
            usage();
        }
    }
    g_isa = isa;
    {
        unsigned a, b, c, d;
        uint64_t xcr0 = 0;
        if (__get_cpuid(1, &a, &b, &c, &d) && ((c >> 27) & 1)) {
            unsigned lo, hi;
            __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
            xcr0 = ((uint64_t)hi << 32) | lo;
        }
        g_pku = has_pku(xcr0);
    }
    if (!(mxcsr_mask() & 0x40)) {
        fputs("regs: this CPU has no DAZ bit in MXCSR_MASK\n", stderr);
        return 3;
    }

    if (touch_mib > 0) {
        size_t len = (size_t)touch_mib << 20;
        uint8_t *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
                            0);
        if (mem == MAP_FAILED)
            die("mmap");
        /* non-zero bytes: the kernel must really write these pages */
        for (size_t off = 0; off < len; off += 4096)
            mem[off] = (uint8_t)(off >> 12) | 1;
    }

    /* SIGABRT must reach its default action: core. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGABRT);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    signal(SIGABRT, SIG_DFL);

    if (pthread_barrier_init(&g_barrier, NULL, g_threads))
        die("pthread_barrier_init");
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    /* small stacks keep cores of many threads small */
    pthread_attr_setstacksize(&attr, 64 * 1024);
    static struct worker main_worker;
    main_worker.index = 0;
    g_tids[0] = (int)syscall(SYS_gettid);
    for (unsigned i = 1; i < g_threads; i++) {
        struct worker *w = aligned_alloc(64, sizeof *w);
        if (!w)
            die("aligned_alloc");
        w->index = i;
        pthread_t t;
        int rc = pthread_create(&t, &attr, worker_main, w);
        if (rc) {
            errno = rc;
            die("pthread_create");
        }
    }
    make_plan(&main_worker.plan, g_seed, 0);
    main_worker.plan.counter = &g_loaded;
    main_worker.plan.action = act;
    main_worker.plan.pid = getpid();
    main_worker.plan.tid = g_tids[0];
    pthread_barrier_wait(&g_barrier);

    print_host(cpu);
    printf("isa %s\n", isa_names[isa]);
    for (unsigned i = 0; i < g_threads; i++)
        printf("tid %u %d\n", i, g_tids[i]);
    fflush(stdout);

    /* every other thread must hold its values before the main thread's
     * action makes the core */
    while (__atomic_load_n(&g_loaded, __ATOMIC_ACQUIRE) < (int)g_threads - 1) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    load_and_block(&main_worker.plan, g_isa);
}
