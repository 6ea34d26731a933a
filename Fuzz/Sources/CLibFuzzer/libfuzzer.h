// libFuzzer's driver, for a program with a main of its own (libFuzzer's FuzzerInterface.h / FuzzerDriver.cpp).
// The definition comes from the sanitizer runtime that `swiftc -sanitize=fuzzer` links.
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*UserCb)(const uint8_t *Data, size_t Size));
