"""Hardware targets: boards, toolchains, emulators, linker scripts and startup code."""
