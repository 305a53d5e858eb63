/* A 32-bit program that loads seeded values into x87, xmm0-7 (and ymm0-7, zmm0-7 and
 * k0-7 where the CPU has them) and has the kernel dump its core, for comparing decode with
 * gdb on an i386 core. Usage: regs32 SEED. Prints "pid tid isa" first.
 *
 * Everything from the loads to the tgkill is one asm statement, so that no libc code can
 * touch the vector registers in between. */
#include <cpuid.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <string.h>
#include <unistd.h>

/* One block, one pointer: i386 has too few registers for an operand per array. */
static struct {
    uint8_t vectors[8][64]; /* at 0 */
    uint16_t opmasks[8];    /* at 512 */
    uint8_t stack[3][16];   /* at 528: 80-bit values, 16 bytes apart */
} block __attribute__((aligned(64)));

static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}

static int isa_level(void) { /* 0 sse, 1 avx, 2 avx512f */
    unsigned a, b, c, d;
    __cpuid(1, a, b, c, d);
    if (!(c & (1u << 27)) || !(c & (1u << 28))) return 0;
    uint64_t xcr0 = xgetbv0();
    if ((xcr0 & 0x6) != 0x6) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    if ((b & (1u << 16)) && (xcr0 & 0xe6) == 0xe6) return 2;
    return 1;
}

int main(int argc, char **argv) {
    uint32_t seed = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 0) : 1;
    for (unsigned i = 0; i < sizeof block.vectors; i++) {
        seed = seed * 1103515245u + 12345u;
        ((uint8_t *)block.vectors)[i] = (uint8_t)(seed >> 16);
    }
    for (int i = 0; i < 8; i++) block.opmasks[i] = (uint16_t)(0x1111u * (unsigned)(i + 1) ^ seed);
    for (int i = 0; i < 3; i++) {
        long double value = (long double)(seed % 1000u) / (i + 3);
        memcpy(block.stack[i], &value, 10);
    }
    int level = isa_level();
    int pid = getpid(), tid = (int)syscall(SYS_gettid);
    printf("%d %d %s\n", pid, tid, level == 2 ? "avx512f" : level == 1 ? "avx" : "sse");
    fflush(stdout);
#define LOAD8(insn, reg) \
    insn " 0(%[v]), %%" reg "0\n\t" insn " 64(%[v]), %%" reg "1\n\t" \
    insn " 128(%[v]), %%" reg "2\n\t" insn " 192(%[v]), %%" reg "3\n\t" \
    insn " 256(%[v]), %%" reg "4\n\t" insn " 320(%[v]), %%" reg "5\n\t" \
    insn " 384(%[v]), %%" reg "6\n\t" insn " 448(%[v]), %%" reg "7\n\t"
    /* i386 tgkill is system call 270 */
    if (level == 2)
        __asm__ volatile("fninit\n\tfldt 528(%[v])\n\tfldt 544(%[v])\n\tfldt 560(%[v])\n\t"
                         LOAD8("vmovdqa64", "zmm")
                         "kmovw 514(%[v]), %%k1\n\tkmovw 516(%[v]), %%k2\n\tkmovw 518(%[v]), %%k3\n\t"
                         "kmovw 520(%[v]), %%k4\n\tkmovw 522(%[v]), %%k5\n\t"
                         "kmovw 524(%[v]), %%k6\n\tkmovw 526(%[v]), %%k7\n\t"
                         "int $0x80"
                         :: [v] "S"(&block),
                            "a"(270), "b"(pid), "c"(tid), "d"(SIGABRT) : "memory");
    else if (level == 1)
        __asm__ volatile("fninit\n\tfldt 528(%[v])\n\tfldt 544(%[v])\n\tfldt 560(%[v])\n\t"
                         LOAD8("vmovdqa", "ymm") "int $0x80"
                         :: [v] "S"(&block),
                            "a"(270), "b"(pid), "c"(tid), "d"(SIGABRT) : "memory");
    else
        __asm__ volatile("fninit\n\tfldt 528(%[v])\n\tfldt 544(%[v])\n\tfldt 560(%[v])\n\t"
                         LOAD8("movdqa", "xmm") "int $0x80"
                         :: [v] "S"(&block),
                            "a"(270), "b"(pid), "c"(tid), "d"(SIGABRT) : "memory");
    return 1; /* not reached */
}
