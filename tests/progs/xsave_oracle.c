/*
 * xsave_oracle: let the CPU itself say what XRSTOR / XSAVE / XSAVEC / XSAVEOPT
 * do with an XSAVE image.  Built at test time by tests/cpu_oracle.py; x86-64
 * Linux only.  All instructions are the 64-bit forms (REX.W: XSAVE64 and so on),
 * the ones the Linux kernel uses, so FIP/FDP are 64-bit fields.
 *
 * Usage (numbers in C syntax: 0x.. hex, or decimal; a mask is EDX:EAX, and the
 * CPU ANDs it with XCR0 itself):
 *   xsave_oracle info
 *       JSON on stdout: XCR0, XINUSE, feature bits, MXCSR_MASK (from FXSAVE),
 *       CPUID leaf 0xD sub-leaves.
 *   xsave_oracle xrstor RFBM                       < image
 *       XRSTOR the image with RFBM, exit 0.
 *   xsave_oracle xrstor-xsave    RFBM SAVE_RFBM [FILL]   < image
 *   xsave_oracle xrstor-xsavec   RFBM SAVE_RFBM [FILL]   < image
 *   xsave_oracle xrstor-xsaveopt RFBM SAVE_RFBM [FILL]   < image
 *       XRSTOR the image with RFBM, then XSAVE / XSAVEC / XSAVEOPT with
 *       SAVE_RFBM into a buffer whose every byte is FILL (default 0), and
 *       write the buffer to stdout: CPUID.(0xD,0).EBX bytes (the standard size
 *       for the current XCR0) for XSAVE and XSAVEOPT, the compacted size for
 *       XCOMP_BV = (SAVE_RFBM & XCR0) | 1<<63 for XSAVEC (computed from CPUID
 *       leaf 0xD: 576, then for each set bit i >= 2 in ascending order, round up
 *       to 64 if sub-leaf i ECX[1], add sub-leaf i EAX).
 *   xsave_oracle xsave    SAVE_RFBM [FILL]
 *   xsave_oracle xsavec   SAVE_RFBM [FILL]
 *   xsave_oracle xsaveopt SAVE_RFBM [FILL]
 *       Snapshot of the state the process happens to have; no stdin.
 *
 * Faults: a #GP raised by XRSTOR is delivered by Linux as SIGSEGV.  It is
 * deliberately NOT caught: the caller sees the process killed by SIGSEGV and
 * takes that as "XRSTOR faults".  Everything that could fault for another
 * reason is ruled out first (static, 64-byte aligned buffers; input size
 * checked), and core dumps are switched off.
 *
 * Exit codes: 0 ok; 2 usage; 3 the CPU or OS lacks what the operation needs;
 * 4 the instruction wrote past the size computed from CPUID (guard bytes
 * changed): the size computation is wrong; 5 input larger than the buffer;
 * 6 refused: xrstor-xsave* of an image that would load a PKRU value denying
 * access to pkey 0, the key of all of this program's memory: the save after it
 * would die of a protection-key SIGSEGV, which would look like an XRSTOR fault.
 * The check is made before, and whatever else is wrong with the image: such an
 * image is refused even if XRSTOR would #GP on it.  Plain "xrstor" takes every
 * image: right after XRSTOR it puts the process's own PKRU back with WRPKRU
 * from a register, before any data access (protection keys check data
 * accesses only, not instruction fetches: SDM vol. 3 §4.6.2), so whatever
 * PKRU the image loads, the verdict is XRSTOR's.
 *
 * XSAVES / XRSTORS are not offered: they may be executed only at CPL 0 and
 * always raise #GP in user mode.
 *
 * Between XRSTOR and the following save nothing runs but a few moves into
 * EAX/EDX: the test state is loaded and saved inside one asm statement, so no
 * C or libc code (printf, memcpy, ... use SSE/AVX) can touch the vector, x87
 * or MXCSR state in between.  The same asm statement first XSAVEs the
 * process's own state into a private buffer and XRSTORs it at the end, so the
 * C runtime never runs on the (possibly odd: unmasked exceptions, pending x87
 * error) test state.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#if !defined(__x86_64__) || !defined(__linux__)
#error "xsave_oracle needs x86-64 Linux"
#endif

/* 64 KiB is far more than any standard-format image without AMX; AMX tile
 * data adds 8 KiB. */
#define BUF_SIZE (128 * 1024)
#define GUARD_SIZE 4096

static uint8_t image[BUF_SIZE] __attribute__((aligned(64)));
static uint8_t out[BUF_SIZE + GUARD_SIZE] __attribute__((aligned(64)));
static uint8_t host[BUF_SIZE] __attribute__((aligned(64)));

static uint64_t xcr0;
static uint64_t host_mask;
static int ospke; /* CPUID.(7,0):ECX[4]: CR4.PKE is set, RDPKRU/WRPKRU work */

static void cpuid2(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
}

static uint64_t xgetbv(uint32_t index)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(index));
    return ((uint64_t)hi << 32) | lo;
}

static int has_xsave_enabled(void)
{
    uint32_t r[4];
    cpuid2(1, 0, r);
    /* ECX[26] XSAVE, ECX[27] OSXSAVE (CR4.OSXSAVE: XGETBV and XSAVE usable) */
    return (r[2] & (1u << 26)) && (r[2] & (1u << 27));
}

static uint32_t leaf_0d_1_eax(void)
{
    uint32_t r[4];
    cpuid2(0xd, 1, r);
    return r[0];
}

static uint32_t standard_size(void)
{
    uint32_t r[4];
    cpuid2(0xd, 0, r);
    return r[1];
}

static uint32_t compacted_size(uint64_t xcomp_bv)
{
    uint32_t size = 576;
    for (int i = 2; i < 63; i++) {
        if (!(xcomp_bv & (1ull << i)))
            continue;
        uint32_t r[4];
        cpuid2(0xd, (uint32_t)i, r);
        if (r[2] & 2u)
            size = (size + 63u) & ~63u;
        size += r[0];
    }
    return size;
}

static uint64_t load_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Would XRSTOR with this RFBM load a PKRU (component 9) value with AD or WD
 * set for pkey 0? */
static int pkru_denies_pkey0(uint64_t rfbm)
{
    const uint64_t pkru_bit = 1ull << 9;
    if (!(xcr0 & rfbm & pkru_bit) || !(load_u64(image + 512) & pkru_bit))
        return 0;
    uint64_t xcomp_bv = load_u64(image + 520);
    size_t offset;
    if (xcomp_bv >> 63) {
        if (!(xcomp_bv & pkru_bit))
            return 0; /* XRSTOR will #GP: XSTATE_BV not a subset of XCOMP_BV */
        /* the offset of component 9 in the compacted format */
        offset = compacted_size(xcomp_bv & (pkru_bit - 1));
        uint32_t r[4];
        cpuid2(0xd, 9, r);
        if (r[2] & 2u)
            offset = (offset + 63u) & ~(size_t)63u;
    } else {
        uint32_t r[4];
        cpuid2(0xd, 9, r);
        offset = r[1];
    }
    if (offset + 4 > BUF_SIZE)
        return 0;
    uint32_t pkru;
    memcpy(&pkru, image + offset, 4);
    return (pkru & 3u) != 0;
}

static uint64_t parse_u64(const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *s == '\0' || *end != '\0') {
        fprintf(stderr, "xsave_oracle: bad number: %s\n", s);
        exit(2);
    }
    return (uint64_t)v;
}

static size_t read_image(void)
{
    size_t n = 0;
    for (;;) {
        if (n == BUF_SIZE) {
            uint8_t extra;
            ssize_t r = read(0, &extra, 1);
            if (r > 0) {
                fprintf(stderr, "xsave_oracle: image larger than %d bytes\n", BUF_SIZE);
                exit(5);
            }
            return n;
        }
        ssize_t r = read(0, image + n, BUF_SIZE - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            perror("xsave_oracle: read");
            exit(2);
        }
        if (r == 0)
            return n;
        n += (size_t)r;
    }
}

static void write_all(const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = write(1, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            perror("xsave_oracle: write");
            exit(2);
        }
        p += w;
        n -= (size_t)w;
    }
}

static uint8_t guard_byte(size_t i)
{
    return (uint8_t)(i * 37u + 0x5bu);
}

static void prepare_out(size_t size, uint8_t fill)
{
    memset(out, fill, size);
    for (size_t i = 0; i < GUARD_SIZE; i++)
        out[size + i] = guard_byte(i);
}

static void check_guard(size_t size)
{
    for (size_t i = 0; i < GUARD_SIZE; i++) {
        if (out[size + i] != guard_byte(i)) {
            fprintf(stderr,
                    "xsave_oracle: the instruction wrote at byte %zu, past the size %zu "
                    "computed from CPUID leaf 0xD\n",
                    size + i, size);
            exit(4);
        }
    }
}

/*
 * The whole sequence is one asm statement: save the process's own state into
 * host[], XRSTOR the test image, save it with SAVE_INSN into out[], restore
 * host[].  Masks are passed in memory so that loading EDX:EAX is all that
 * happens between the instructions.
 */
#define XRSTOR_THEN(SAVE_INSN)                                                  \
    __asm__ volatile("movl %[hlo], %%eax\n\t"                                   \
                     "movl %[hhi], %%edx\n\t"                                   \
                     "xsave64 (%[host])\n\t"                                    \
                     "movl %[rlo], %%eax\n\t"                                   \
                     "movl %[rhi], %%edx\n\t"                                   \
                     "xrstor64 (%[img])\n\t"                                    \
                     "movl %[slo], %%eax\n\t"                                   \
                     "movl %[shi], %%edx\n\t" SAVE_INSN " (%[out])\n\t"         \
                     "movl %[hlo], %%eax\n\t"                                   \
                     "movl %[hhi], %%edx\n\t"                                   \
                     "xrstor64 (%[host])\n\t"                                   \
                     :                                                          \
                     : [host] "r"(host), [img] "r"(image), [out] "r"(out),      \
                       [hlo] "m"(m[0]), [hhi] "m"(m[1]), [rlo] "m"(m[2]),       \
                       [rhi] "m"(m[3]), [slo] "m"(m[4]), [shi] "m"(m[5])        \
                     : "eax", "edx", "memory")

#define SAVE_ONLY(SAVE_INSN)                                                    \
    __asm__ volatile("movl %[slo], %%eax\n\t"                                   \
                     "movl %[shi], %%edx\n\t" SAVE_INSN " (%[out])\n\t"         \
                     :                                                          \
                     : [out] "r"(out), [slo] "m"(m[4]), [shi] "m"(m[5])         \
                     : "eax", "edx", "memory")

enum op { OP_XRSTOR, OP_XSAVE, OP_XSAVEC, OP_XSAVEOPT };

static void run(int with_xrstor, enum op save, uint64_t rfbm, uint64_t save_rfbm)
{
    uint32_t m[6] = {
        (uint32_t)host_mask, (uint32_t)(host_mask >> 32),
        (uint32_t)rfbm,      (uint32_t)(rfbm >> 32),
        (uint32_t)save_rfbm, (uint32_t)(save_rfbm >> 32),
    };
    if (with_xrstor) {
        switch (save) {
        case OP_XRSTOR:
            if (ospke) {
                /* ESI keeps the process's PKRU across the test XRSTOR; between
                 * that XRSTOR and WRPKRU only registers are touched, so a PKRU
                 * from the image that denies pkey 0 harms nothing. */
                __asm__ volatile("xor %%ecx, %%ecx\n\t"
                                 "rdpkru\n\t"
                                 "mov %%eax, %%esi\n\t"
                                 "movl %[hlo], %%eax\n\t"
                                 "movl %[hhi], %%edx\n\t"
                                 "xsave64 (%[host])\n\t"
                                 "movl %[rlo], %%eax\n\t"
                                 "movl %[rhi], %%edx\n\t"
                                 "xrstor64 (%[img])\n\t"
                                 "mov %%esi, %%eax\n\t"
                                 "xor %%ecx, %%ecx\n\t"
                                 "xor %%edx, %%edx\n\t"
                                 "wrpkru\n\t"
                                 "movl %[hlo], %%eax\n\t"
                                 "movl %[hhi], %%edx\n\t"
                                 "xrstor64 (%[host])\n\t"
                                 :
                                 : [host] "r"(host), [img] "r"(image), [hlo] "m"(m[0]),
                                   [hhi] "m"(m[1]), [rlo] "m"(m[2]), [rhi] "m"(m[3])
                                 : "eax", "ecx", "edx", "esi", "memory");
                break;
            }
            __asm__ volatile("movl %[hlo], %%eax\n\t"
                             "movl %[hhi], %%edx\n\t"
                             "xsave64 (%[host])\n\t"
                             "movl %[rlo], %%eax\n\t"
                             "movl %[rhi], %%edx\n\t"
                             "xrstor64 (%[img])\n\t"
                             "movl %[hlo], %%eax\n\t"
                             "movl %[hhi], %%edx\n\t"
                             "xrstor64 (%[host])\n\t"
                             :
                             : [host] "r"(host), [img] "r"(image), [hlo] "m"(m[0]),
                               [hhi] "m"(m[1]), [rlo] "m"(m[2]), [rhi] "m"(m[3])
                             : "eax", "edx", "memory");
            break;
        case OP_XSAVE:
            XRSTOR_THEN("xsave64");
            break;
        case OP_XSAVEC:
            XRSTOR_THEN("xsavec64");
            break;
        case OP_XSAVEOPT:
            XRSTOR_THEN("xsaveopt64");
            break;
        }
    } else {
        switch (save) {
        case OP_XRSTOR:
            break;
        case OP_XSAVE:
            SAVE_ONLY("xsave64");
            break;
        case OP_XSAVEC:
            SAVE_ONLY("xsavec64");
            break;
        case OP_XSAVEOPT:
            SAVE_ONLY("xsaveopt64");
            break;
        }
    }
}

static uint32_t mxcsr_mask_raw(void)
{
    static uint8_t fx[512] __attribute__((aligned(16)));
    memset(fx, 0, sizeof fx);
    __asm__ volatile("fxsave64 (%0)" : : "r"(fx) : "memory");
    uint32_t mask;
    memcpy(&mask, fx + 28, 4);
    return mask;
}

static void print_info(void)
{
    uint32_t r[4];
    char vendor[13];
    cpuid2(0, 0, r);
    uint32_t max_leaf = r[0];
    memcpy(vendor, &r[1], 4);
    memcpy(vendor + 4, &r[3], 4);
    memcpy(vendor + 8, &r[2], 4);
    vendor[12] = '\0';

    cpuid2(1, 0, r);
    uint32_t sig = r[0];
    uint32_t family = (sig >> 8) & 0xf, model = (sig >> 4) & 0xf;
    if (family == 0xf)
        family += (sig >> 20) & 0xff;
    if (family == 0x6 || family >= 0xf)
        model += ((sig >> 16) & 0xf) << 4;
    int xsave = (r[2] >> 26) & 1, osxsave = (r[2] >> 27) & 1;

    uint32_t ebx7 = 0;
    if (max_leaf >= 7) {
        cpuid2(7, 0, r);
        ebx7 = r[1];
    }
    uint32_t ext_ebx8 = 0;
    cpuid2(0x80000000u, 0, r);
    if (r[0] >= 0x80000008u) {
        cpuid2(0x80000008u, 0, r);
        ext_ebx8 = r[1];
    }

    uint32_t raw_mask = mxcsr_mask_raw();

    printf("{\n");
    printf("  \"vendor\": \"%s\",\n", vendor);
    printf("  \"family\": %u,\n  \"model\": %u,\n  \"stepping\": %u,\n", family, model,
           sig & 0xf);
    printf("  \"xsave\": %s,\n  \"osxsave\": %s,\n", xsave ? "true" : "false",
           osxsave ? "true" : "false");
    printf("  \"mxcsr_mask_raw\": %u,\n", raw_mask);
    printf("  \"mxcsr_mask\": %u,\n", raw_mask ? raw_mask : 0xffbfu);
    /* CPUID.(7,0):EBX[6]: FDP updated only on x87 exceptions; [13]: FCS/FDS
     * deprecated (saved as 0).  CPUID.80000008h:EBX[2]: AMD saves FIP/FDP/FOP
     * always (otherwise only when FSW.ES = 1). */
    printf("  \"fdp_excptn_only\": %s,\n", (ebx7 >> 6) & 1 ? "true" : "false");
    printf("  \"fcs_fds_deprecated\": %s,\n", (ebx7 >> 13) & 1 ? "true" : "false");
    printf("  \"xsaveerptr\": %s", (ext_ebx8 >> 2) & 1 ? "true" : "false");
    if (xsave && osxsave && max_leaf >= 0xd) {
        uint32_t eax1 = leaf_0d_1_eax();
        printf(",\n  \"xcr0\": %llu,\n", (unsigned long long)xcr0);
        printf("  \"xsaveopt\": %s,\n", eax1 & 1 ? "true" : "false");
        printf("  \"xsavec\": %s,\n", eax1 & 2 ? "true" : "false");
        printf("  \"xgetbv1\": %s,\n", eax1 & 4 ? "true" : "false");
        printf("  \"xsaves\": %s,\n", eax1 & 8 ? "true" : "false");
        printf("  \"xfd\": %s,\n", eax1 & 16 ? "true" : "false");
        if (eax1 & 4)
            printf("  \"xinuse\": %llu,\n", (unsigned long long)xgetbv(1));
        else
            printf("  \"xinuse\": null,\n");
        printf("  \"leaf_0d\": {");
        int first = 1;
        for (uint32_t i = 0; i < 64; i++) {
            cpuid2(0xd, i, r);
            if (i > 1 && !(r[0] | r[1] | r[2] | r[3]))
                continue;
            printf("%s\n    \"%u\": [%u, %u, %u, %u]", first ? "" : ",", i, r[0], r[1], r[2],
                   r[3]);
            first = 0;
        }
        printf("\n  }");
    }
    printf("\n}\n");
}

int main(int argc, char **argv)
{
    /* A #GP must not leave a core file (or feed a core-dump handler). */
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);

    if (argc < 2) {
        fprintf(stderr, "usage: xsave_oracle info | xrstor RFBM | "
                        "xrstor-xsave[c|opt] RFBM SAVE_RFBM [FILL] | "
                        "xsave[c|opt] SAVE_RFBM [FILL]\n");
        return 2;
    }
    const char *op = argv[1];
    int enabled = has_xsave_enabled();
    if (enabled) {
        xcr0 = xgetbv(0);
        /* Linux arms XFD for AMX tile data until the process asks for it;
         * ask, so that images with tile data can be loaded (harmless when
         * there is no AMX: the call just fails). ARCH_REQ_XCOMP_PERM = 0x1023,
         * XFEATURE_XTILEDATA = 18. */
        if (xcr0 & (1ull << 18))
            syscall(SYS_arch_prctl, 0x1023, 18);
        /* The process's own state is saved and restored around the test
         * without the AMX components, which the C runtime never uses. */
        host_mask = xcr0 & ~((1ull << 17) | (1ull << 18));
        uint32_t r[4];
        cpuid2(0, 0, r);
        if (r[0] >= 7) {
            cpuid2(7, 0, r);
            ospke = (r[2] >> 4) & 1;
        }
    }

    if (strcmp(op, "info") == 0) {
        print_info();
        return 0;
    }
    if (!enabled) {
        fprintf(stderr, "xsave_oracle: XSAVE not supported or not enabled by the OS\n");
        return 3;
    }
    if (standard_size() + GUARD_SIZE > BUF_SIZE) {
        fprintf(stderr, "xsave_oracle: standard size %u too large\n", standard_size());
        return 3;
    }

    int with_xrstor;
    enum op save;
    const char *name = op;
    if (strncmp(op, "xrstor", 6) == 0) {
        with_xrstor = 1;
        if (strcmp(op, "xrstor") == 0)
            save = OP_XRSTOR;
        else if (strcmp(op, "xrstor-xsave") == 0)
            save = OP_XSAVE;
        else if (strcmp(op, "xrstor-xsavec") == 0)
            save = OP_XSAVEC;
        else if (strcmp(op, "xrstor-xsaveopt") == 0)
            save = OP_XSAVEOPT;
        else
            goto usage;
        name = op + (save == OP_XRSTOR ? 0 : 7);
    } else {
        with_xrstor = 0;
        if (strcmp(op, "xsave") == 0)
            save = OP_XSAVE;
        else if (strcmp(op, "xsavec") == 0)
            save = OP_XSAVEC;
        else if (strcmp(op, "xsaveopt") == 0)
            save = OP_XSAVEOPT;
        else
            goto usage;
    }

    uint32_t eax1 = leaf_0d_1_eax();
    if ((save == OP_XSAVEC && !(eax1 & 2)) || (save == OP_XSAVEOPT && !(eax1 & 1))) {
        fprintf(stderr, "xsave_oracle: this CPU has no %s\n", name);
        return 3;
    }

    int argi = 2;
    uint64_t rfbm = 0, save_rfbm = 0;
    uint8_t fill = 0;
    if (with_xrstor) {
        if (argc <= argi)
            goto usage;
        rfbm = parse_u64(argv[argi++]);
    }
    if (save != OP_XRSTOR) {
        if (argc <= argi)
            goto usage;
        save_rfbm = parse_u64(argv[argi++]);
        if (argc > argi) {
            uint64_t f = parse_u64(argv[argi++]);
            if (f > 0xff)
                goto usage;
            fill = (uint8_t)f;
        }
    }
    if (argc != argi)
        goto usage;

    if (with_xrstor) {
        read_image();
        if (save != OP_XRSTOR && pkru_denies_pkey0(rfbm)) {
            fprintf(stderr, "xsave_oracle: refused: the image loads a PKRU value that denies "
                            "access to pkey 0 (bits 1:0 set)\n");
            return 6;
        }
    }

    size_t size = 0;
    if (save == OP_XSAVEC)
        size = compacted_size((save_rfbm & xcr0) | (1ull << 63));
    else if (save != OP_XRSTOR)
        size = standard_size();
    if (size + GUARD_SIZE > sizeof out) {
        fprintf(stderr, "xsave_oracle: size %zu too large\n", size);
        return 3;
    }
    if (save != OP_XRSTOR)
        prepare_out(size, fill);

    run(with_xrstor, save, rfbm, save_rfbm);

    if (save != OP_XRSTOR) {
        check_guard(size);
        write_all(out, size);
    }
    return 0;

usage:
    fprintf(stderr, "xsave_oracle: bad arguments (see the comment at the top of the source)\n");
    return 2;
}
