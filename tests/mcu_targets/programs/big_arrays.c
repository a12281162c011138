/* Arrays whose sizes the test chooses (-DRAM_BYTES=... -DFLASH_BYTES=...) to hit the linker limits. */
#include <stdint.h>
#ifndef RAM_BYTES
#define RAM_BYTES 16
#endif
#ifndef FLASH_BYTES
#define FLASH_BYTES 16
#endif

volatile uint8_t big_ram[RAM_BYTES];
/* const (not volatile: gcc puts const volatile data in RAM) and read at an index the compiler
 * cannot know, so the whole table stays in flash */
const uint8_t big_flash[FLASH_BYTES] = {7};
volatile int32_t flash_index = FLASH_BYTES - 1;

int main(void) {
    big_ram[RAM_BYTES - 1] = big_flash[flash_index];
    return big_ram[RAM_BYTES - 1] + big_flash[flash_index - (FLASH_BYTES - 1)];
}
