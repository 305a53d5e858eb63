/* Loads 80-bit patterns into the x87 registers, eight at a time, and stops in
 * loaded() with st0 = the first of the eight ... st7 = the last, for gdb to print.
 *
 * The patterns come from the file named by argv[1]: 16 bytes each, the 10-byte
 * register image (significand, then sign and exponent) in the low bytes, as a long
 * double is laid out in memory.  FLD m80fp copies any encoding unchanged, NaNs,
 * denormals and unsupported encodings included: it raises no #IA or #D for a source
 * in double extended-precision format (SDM vol. 2A, FLD, "Floating-Point
 * Exceptions").  FNINIT leaves every exception masked and the stack empty, so eight
 * pushes fill it without overflow.
 *
 * Build: gcc -O1 -o x87load x87load.c.  Nothing here uses long double, so the
 * compiler never touches the x87 stack between the asm statements.
 */
#include <stdio.h>
#include <stdlib.h>

/* gdb's breakpoint: st0..st7 hold the current eight patterns while it runs. */
__attribute__((noinline, noipa)) void loaded(void) { __asm__ volatile("" ::: "memory"); }

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: x87load PATTERNS\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) {
        perror(argv[1]);
        return 2;
    }
    static unsigned char group[8][16];
    for (;;) {
        size_t n = fread(group, 16, 8, f);
        if (n == 0)
            break;
        for (size_t i = n; i < 8; i++)
            for (int b = 0; b < 16; b++)
                group[i][b] = 0;
        __asm__ volatile(
            "fninit\n\t"
            "fldt 112(%0)\n\t"
            "fldt 96(%0)\n\t"
            "fldt 80(%0)\n\t"
            "fldt 64(%0)\n\t"
            "fldt 48(%0)\n\t"
            "fldt 32(%0)\n\t"
            "fldt 16(%0)\n\t"
            "fldt 0(%0)"
            :
            : "r"(group)
            : "memory");
        loaded();
        __asm__ volatile("fninit" ::: "memory");
    }
    fclose(f);
    return 0;
}
