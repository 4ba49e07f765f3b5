"""Peak memory of a batch: the kernel's high-water mark of this process's RSS (Linux)."""


def peak_rss_reset() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM), so the next read is this batch's peak."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def peak_rss_bytes() -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
