/* Arrays whose sizes the test chooses (-DRAM_BYTES=... -DFLASH_BYTES=...) to hit the linker limits. */
#include <stdint.h>
#ifndef RAM_BYTES
#define RAM_BYTES 16
#endif
#ifndef FLASH_BYTES
#define FLASH_BYTES 16
#endif

volatile uint8_t big_ram[RAM_BYTES];
const volatile uint8_t big_flash[FLASH_BYTES] = {7};

int main(void) {
    big_ram[RAM_BYTES - 1] = big_flash[FLASH_BYTES - 1];
    return big_ram[RAM_BYTES - 1] + big_flash[0];
}
