/* Programs that go wrong on purpose: -DMODE=1 writes to unmapped memory, -DMODE=2 never exits,
 * -DMODE=3 exits with a negative code. */
#include <stdint.h>

int main(void) {
#if MODE == 1
    *(volatile uint32_t *)0x90000000u = 1u;
    return 0;
#elif MODE == 2
    for (volatile int i = 0;; i++) {
    }
#else
    return -3;
#endif
}
