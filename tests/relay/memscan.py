"""Search a live process's memory for byte strings (as root, through /proc/PID/mem)."""

from __future__ import annotations


def memory_contains(pid: int, needles: dict[str, bytes]) -> dict[str, bool]:
    """name -> whether the needle occurs anywhere in the readable memory of `pid`."""
    found = dict.fromkeys(needles, False)
    longest = max(len(n) for n in needles.values())
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if "r" not in fields[1] or (len(fields) > 5 and fields[5] in ("[vvar]",
                                                                         "[vsyscall]")):
                continue
            offset, tail = start, b""
            while offset < end:
                size = min(16 << 20, end - offset)
                try:
                    mem.seek(offset)
                    chunk = tail + mem.read(size)
                except OSError:
                    break
                for name, needle in needles.items():
                    if not found[name] and needle in chunk:
                        found[name] = True
                tail = chunk[-longest:]
                offset += size
    return found
