#!/usr/bin/env python3
"""One render in this process with given glibc malloc settings: wall, CPU, kernel time, page faults, peak.

The pipeline sets glibc's mmap threshold and trim margin when it starts a render
(``pipeline.MMAP_THRESHOLD_BYTES`` / ``TRIM_THRESHOLD_BYTES``); this runs one render with other values, to
compare them. Run it several times, alternating the settings:

    for s in "1 0" "8 64" "1 0" "8 64"; do python benchmarks/bench_allocator.py $s -- --audio speech.wav \\
        --video clip.mp4 --box 180 540 460 820 --restorer none --wav2lip-checkpoint w.pth -o /tmp/o.mp4; done

The two numbers are the mmap threshold and the trim margin in MiB (0: glibc's default).
"""

from __future__ import annotations

import ctypes
import re
import resource
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc malloc.h


def main(argv: list[str]) -> int:
    mmap_mib, trim_mib = int(argv[0]), int(argv[1])
    cli_args = argv[argv.index("--") + 1 :]
    import pipeline

    def allocator_settings() -> None:
        libc = ctypes.CDLL("libc.so.6")
        if mmap_mib:
            libc.mallopt(_M_MMAP_THRESHOLD, mmap_mib << 20)
        if trim_mib:
            libc.mallopt(_M_TRIM_THRESHOLD, trim_mib << 20)

    pipeline._return_freed_frames_to_the_system = allocator_settings
    peak = [0]

    def sample() -> None:
        while True:
            status = Path("/proc/self/status").read_text()
            peak[0] = max(peak[0], int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) // 1024)
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()
    from pipeline.cli import main as cli

    started = time.perf_counter()
    try:
        cli([*cli_args, "--quiet"])
    except SystemExit:
        pass
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        f"mmap {mmap_mib} MiB, trim {trim_mib} MiB: wall {time.perf_counter() - started:.1f} s, user "
        f"{usage.ru_utime:.1f} s, kernel {usage.ru_stime:.1f} s, minor faults {usage.ru_minflt}, "
        f"peak RSS {peak[0]} MB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
