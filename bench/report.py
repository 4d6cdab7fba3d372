"""results.json -> table.md, goodput.png, jetstream_timeline.png.

Also usable on its own, to redraw an old run: `python -m bench.report bench/results/<ts>`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.profiles import PROFILES, Profile, Workload, fmt_bytes, parse_profile
from bench.results import Result

TOOL_ORDER = ["jetstream", "jetstream-fixed", "scp", "rsync", "uftp", "iperf3-bbr",
              "iperf3-cubic", "iperf3-udp"]
TOOL_NAMES = {
    "jetstream": "jetstream",
    "jetstream-fixed": "jetstream (fixed rate)",
    "scp": "scp",
    "rsync": "rsync",
    "uftp": "uftp",
    "iperf3-bbr": "iperf3 TCP BBR",
    "iperf3-cubic": "iperf3 TCP CUBIC",
    "iperf3-udp": "iperf3 UDP",
}
COLORS = {
    "jetstream": "#d62728",
    "jetstream-fixed": "#ff9896",
    "scp": "#1f77b4",
    "rsync": "#2ca02c",
    "uftp": "#9467bd",
    "iperf3-bbr": "#7f7f7f",
    "iperf3-cubic": "#bcbd22",
    "iperf3-udp": "#17becf",
}
DASH = "–"


def _esc(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _mbit(bps: float | None) -> str:
    if bps is None:
        return DASH
    v = bps / 1e6
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 1 else f"{v:.3f}"


def profiles_of(
    meta: dict[str, Any], results: list[dict[str, Any]] | None = None
) -> dict[str, Profile]:
    """The run's profiles, in run order; with results, only those that have any."""
    ran = None if results is None else {r["profile"] for r in results}
    out = {}
    for d in meta.get("profiles", []):
        if ran is None or d["key"] in ran:
            out[d["key"]] = Profile(d["key"], d["rate"], d["rtt"], d["loss"], d.get("title", ""))
    return out


def pick(results: Iterable[Result]) -> dict[tuple[str, str, str], tuple[Result, list[Result]]]:
    """(profile, workload, tool) -> (the median run by goodput, all runs)."""
    groups: dict[tuple[str, str, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.profile, r.workload, r.tool), []).append(r)
    out = {}
    for key, runs in groups.items():
        rated = sorted((r for r in runs if r.goodput_bps), key=lambda r: r.goodput_bps or 0.0)
        chosen = rated[(len(rated) - 1) // 2] if rated else runs[-1]
        out[key] = (chosen, runs)
    return out


def _goodput_cell(r: Result, runs: list[Result]) -> str:
    if r.status in ("unavailable", "skipped") or (r.status == "failed" and not r.goodput_bps):
        word = {"unavailable": "not available", "skipped": "skipped", "failed": "failed"}[r.status]
        why = r.error or "; ".join(r.notes) or "no reason given"
        return f"{word} ({_esc(why[:300])})"
    cell = _mbit(r.goodput_bps)
    rated = [x.goodput_bps for x in runs if x.goodput_bps]
    if len(rated) > 1:
        cell += f" ({_mbit(min(rated))}–{_mbit(max(rated))}, n={len(rated)})"
    if r.status == "partial":
        cell += " (partial: time-out)"
    if r.status == "failed":
        cell += " (FAILED)"
    return cell


def _per_gib(cpu: float | None, nbytes: int) -> str:
    if cpu is None or nbytes <= 0:
        return DASH
    return f"{cpu / (nbytes / (1 << 30)):.1f}"


def _mib(kib: int | None) -> str:
    return DASH if not kib else f"{kib / 1024:.0f}"


def table_rows(
    prof: Profile, workload: str, chosen: dict[tuple[str, str, str], tuple[Result, list[Result]]]
) -> list[str]:
    js = chosen.get((prof.key, workload, "jetstream"))
    js_rate = js[0].goodput_bps if js and js[0].status in ("ok", "partial") else None
    js_partial = bool(js and js[0].status == "partial")
    rows = []
    for tool in TOOL_ORDER:
        wl = "memory" if tool.startswith("iperf3") else workload
        got = chosen.get((prof.key, wl, tool))
        if got is None:
            continue
        r, runs = got
        cap = prof.capacity_bps
        share = f"{r.goodput_bps / cap:.0%}" if cap and r.goodput_bps else DASH
        ratio = DASH
        if tool != "jetstream" and js_rate and r.goodput_bps:
            x = js_rate / r.goodput_bps
            ratio = f"{x:.2f}×" if x >= 0.1 else f"{x:.2g}×"
            if js_partial or r.status == "partial":
                ratio += "*"
        wire = DASH
        if r.wire_ab_bytes and r.payload_bytes:
            wire = f"{r.wire_ab_bytes / r.payload_bytes:.3f}"
        rss = f"{_mib(r.rss_sender_kib)} / {_mib(r.rss_receiver_kib)}"
        time_s = DASH if r.wall_s is None else f"{r.wall_s:.1f}"
        integ = r.integrity or (DASH if wl == "memory" or r.status != "partial" else "partial")
        rows.append(
            f"| {_esc(r.label or TOOL_NAMES[tool])} | {_goodput_cell(r, runs)} | {share} | {ratio} "
            f"| {time_s} | {_per_gib(r.cpu_sender_s, r.payload_bytes)} "
            f"| {_per_gib(r.cpu_receiver_s, r.payload_bytes)} | {rss} | {wire} | {integ} |"
        )
    return rows


HEADER = (
    "| tool | goodput Mbit/s | share of capacity | jetstream ÷ tool | time s "
    "| CPU s/GiB sender | CPU s/GiB receiver | peak RSS MiB send / recv "
    "| wire bytes / payload | integrity |\n|---|---|---|---|---|---|---|---|---|---|"
)


def render_table(data: dict[str, Any]) -> str:
    meta = data["meta"]
    results = [Result.from_dict(d) for d in data["results"]]
    profs = profiles_of(meta, data["results"])
    workloads = {w["key"]: Workload(w["key"], w["count"], w["size"]) for w in meta["workloads"]}
    lo_wl = {
        w["key"]: Workload(w["key"], w["count"], w["size"])
        for w in meta.get("loopback_workloads", meta["workloads"])
    }
    chosen = pick(results)
    m = meta.get("machine", {})
    out = [
        f"# jetstream side-by-side benchmark, {meta.get('started', '')}",
        "",
        f"Command: `{meta.get('command', '')}`",
        "",
        f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('mem', '?')} RAM, "
        f"{m.get('os', '?')}, Linux {m.get('kernel', '?')}; load average "
        f"{m.get('load_start', '?')} at the start (a shared machine: other jobs may run).",
        "",
        f"Data: {meta.get('data_note', '')}. Integrity: BLAKE3 of every received file against "
        "the source. Versions: "
        + ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
        + ".",
        "",
        "How to read it: goodput = file payload / wall time of the whole copy (connection and "
        "set-up included; jetstream: CreateManifest to COMPLETED). Share of capacity = goodput / "
        "(R × (1 − loss) × 1472/1500), the payload a perfect tool could put through the link. "
        "jetstream ÷ tool > 1 means jetstream was faster. CPU seconds per GiB delivered, sender "
        "(namespace A) and receiver (B: the sshd, uftpd, iperf3 or jetstream server and its "
        "children). Wire bytes / payload: IP bytes the emulator accepted A->B per payload byte "
        "(retransmissions and headers included). iperf3 rows are memory to memory for a fixed "
        "time, the TCP and link ceilings, shown in every table of their profile.",
        "",
    ]
    # summary
    for wkey in workloads:
        cols = list(profs.values())
        lo = ""
        if any(p.loopback for p in cols) and wkey in lo_wl and lo_wl[wkey] != workloads[wkey]:
            lo = f" (loopback: {lo_wl[wkey].describe()})"
        out.append(f"## Summary: goodput in Mbit/s, {workloads[wkey].describe()}{lo}")
        out.append("")
        out.append("| tool | " + " | ".join(p.label() for p in cols) + " |")
        out.append("|---|" + "---|" * len(cols))
        for tool in TOOL_ORDER:
            wl = "memory" if tool.startswith("iperf3") else wkey
            cells = []
            for p in cols:
                got = chosen.get((p.key, wl, tool))
                if got is None:
                    cells.append(DASH)
                    continue
                r = got[0]
                if r.status in ("ok", "partial") and r.goodput_bps:
                    cells.append(
                        _mbit(r.goodput_bps) + (" (partial)" if r.status == "partial" else "")
                    )
                else:
                    cells.append({"unavailable": "n/a", "skipped": DASH}.get(r.status, "failed"))
            if any(c != DASH for c in cells):
                out.append(f"| {TOOL_NAMES[tool]} | " + " | ".join(cells) + " |")
        out.append("")
    # details
    for p in profs.values():
        link = meta.get("links", {}).get(p.key, p.describe())
        out.append(f"## ({p.key}) {p.describe()}")
        out.append("")
        cap = p.capacity_bps
        out.append(
            f"Link: {link}. "
            + (
                f"Capacity {cap / 1e6:.1f} Mbit/s of payload."
                if cap
                else "No emulator; no capacity."
            )
        )
        out.append("")
        for wkey in workloads:
            wl = (lo_wl if p.loopback else workloads).get(wkey, workloads[wkey])
            rows = table_rows(p, wkey, chosen)
            if not rows:
                continue
            out.append(f"### {wl.describe()}")
            out.append("")
            out.append(HEADER)
            out.extend(rows)
            notes: list[str] = []
            for tool in TOOL_ORDER:
                got = chosen.get((p.key, wkey, tool))
                if got:
                    notes.extend(f"{TOOL_NAMES[tool]}: {n}" for n in got[0].notes)
            if any(line.split("|")[4].strip().endswith("*") for line in rows):
                notes.append("*: from a copy stopped at its time-out (a partial goodput)")
            if notes:
                out.append("")
                out.extend(f"- {_esc(n)}" for n in notes)
            out.append("")
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------- charts


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def goodput_chart(data: dict[str, Any], path: Path) -> None:
    """Grouped bars: goodput per tool and profile, one panel per workload; log scale."""
    plt = _plt()
    meta = data["meta"]
    results = [Result.from_dict(d) for d in data["results"]]
    chosen = pick(results)
    profs = list(profiles_of(meta, data["results"]).values())
    wkeys = [w["key"] for w in meta["workloads"]]
    fig, axes = plt.subplots(
        len(wkeys), 1, figsize=(max(8, 2.2 * len(profs) + 3), 4.2 * len(wkeys)), squeeze=False
    )
    for ax, wkey in zip(axes[:, 0], wkeys, strict=True):
        tools = [
            t
            for t in TOOL_ORDER
            if any(
                (p.key, "memory" if t.startswith("iperf3") else wkey, t) in chosen for p in profs
            )
        ]
        width = 0.8 / max(1, len(tools))
        for i, tool in enumerate(tools):
            wl = "memory" if tool.startswith("iperf3") else wkey
            for j, p in enumerate(profs):
                got = chosen.get((p.key, wl, tool))
                x = j + (i - (len(tools) - 1) / 2) * width
                if got is None:
                    continue
                r = got[0]
                if r.goodput_bps and r.status in ("ok", "partial"):
                    ax.bar(
                        x,
                        r.goodput_bps / 1e6,
                        width,
                        color=COLORS[tool],
                        hatch="//" if r.status == "partial" else None,
                        edgecolor="black" if r.status == "partial" else None,
                    )
                else:
                    ax.text(x, 1.0, "n/a", rotation=90, ha="center", va="bottom", fontsize=7)
        for j, p in enumerate(profs):
            if p.capacity_bps:
                ax.hlines(
                    p.capacity_bps / 1e6,
                    j - 0.45,
                    j + 0.45,
                    colors="black",
                    linestyles="dashed",
                    linewidth=1,
                )
        handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS[t]) for t in tools]
        ax.legend(
            handles,
            [TOOL_NAMES[t] for t in tools],
            fontsize=8,
            ncol=min(7, len(tools)),
            loc="upper center",
            bbox_to_anchor=(0.5, -0.12),
            frameon=False,
        )
        ax.set_yscale("log")
        rated = [
            r.goodput_bps / 1e6
            for _key, (r, _runs) in chosen.items()
            if r.goodput_bps and r.status in ("ok", "partial")
        ]
        ax.set_ylim(max(0.01, min([0.5, *rated]) / 2), None)
        wls = {w["key"]: Workload(w["key"], w["count"], w["size"]) for w in meta["workloads"]}
        lo_wls = {
            w["key"]: Workload(w["key"], w["count"], w["size"])
            for w in meta.get("loopback_workloads", meta["workloads"])
        }
        ticks = []
        for p in profs:
            lo = lo_wls.get(wkey)
            extra = f"\n{lo.describe()}" if p.loopback and lo and lo != wls[wkey] else ""
            ticks.append(p.label() + extra)
        ax.set_xticks(range(len(profs)), ticks, fontsize=9)
        ax.set_title(f"Goodput, {wls[wkey].describe()}", fontsize=11)
        ax.set_ylabel("Mbit/s (log scale)")
        ax.grid(axis="y", which="both", alpha=0.3)
    fig.text(
        0.01,
        0.005,
        "iperf3: memory to memory, fixed time. Dashed: link payload capacity R(1-p)·1472/1500.\n"
        "Hatched: stopped at the time-out (goodput of what arrived). n/a: did not run.",
        fontsize=7,
    )
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def timeline_source(data: dict[str, Any]) -> Result | None:
    """The jetstream transfer to draw: profile (b) big if it has points, else the first one."""
    runs = [Result.from_dict(d) for d in data["results"]]
    js = [r for r in runs if r.tool == "jetstream" and r.extra.get("timeline")]
    js.sort(key=lambda r: (r.profile != "b", r.workload != "big", r.status != "ok"))
    return js[0] if js else None


def timeline_chart(data: dict[str, Any], path: Path) -> None:
    plt = _plt()
    r = timeline_source(data)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    if r is None:
        errors = [Result.from_dict(d) for d in data["results"]]
        why = next((e.error for e in errors if e.tool == "jetstream" and e.error), "no run")
        fig.text(
            0.5,
            0.5,
            f"no jetstream transfer with progress in this run:\n{why[:200]}",
            ha="center",
            va="center",
            wrap=True,
            fontsize=10,
        )
        ax1.set_axis_off()
        ax2.set_axis_off()
    else:
        pts = r.extra["timeline"]
        t = [p[0] for p in pts]
        rate = [p[2] / 1e6 for p in pts]
        rtt = [p[3] for p in pts]
        goodput = [0.0] + [
            (b[1] - a[1]) * 8 / 1e6 / (b[0] - a[0]) if b[0] > a[0] else 0.0
            for a, b in zip(pts, pts[1:], strict=False)
        ]
        prof = PROFILES.get(r.profile) or parse_profile(r.profile)
        meta_profs = profiles_of(data["meta"])
        prof = meta_profs.get(r.profile, prof)
        ax1.plot(t, rate, label="progress.rate_bps (smoothed)", color="#d62728")
        ax1.plot(t, goodput, label="bytes_done per interval", color="#1f77b4", alpha=0.5)
        if prof.capacity_bps:
            ax1.axhline(
                prof.capacity_bps / 1e6,
                color="black",
                linestyle="dashed",
                linewidth=1,
                label="link capacity",
            )
        ax1.set_ylabel("Mbit/s")
        ax1.legend(fontsize=8)
        ax1.grid(alpha=0.3)
        ax2.plot(
            t,
            [x if x is not None else float("nan") for x in rtt],
            color="#2ca02c",
            label="progress.rtt",
        )
        if prof.rtt_s:
            ax2.axhline(
                prof.rtt_s * 1e3, color="black", linestyle="dashed", linewidth=1, label="base RTT"
            )
        ax2.set_ylabel("RTT ms")
        ax2.set_xlabel("seconds since CreateTransfer")
        ax2.legend(fontsize=8)
        ax2.grid(alpha=0.3)
        size = fmt_bytes(r.expected_bytes)
        ax1.set_title(
            f"jetstream on ({r.profile}) {prof.describe()}, {size} ({r.workload}), {r.status}",
            fontsize=10,
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(outdir: Path) -> str:
    data = json.loads((outdir / "results.json").read_text())
    table = render_table(data)
    (outdir / "table.md").write_text(table)
    try:
        goodput_chart(data, outdir / "goodput.png")
        timeline_chart(data, outdir / "jetstream_timeline.png")
    except ImportError as exc:
        print(f"charts skipped: {exc} (pip install matplotlib)", file=sys.stderr)
    return table


if __name__ == "__main__":
    print(write_all(Path(sys.argv[1])))
