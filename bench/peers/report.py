"""The peers' part of a `bench/bench_step.py` report: chip against the fastest peer, and the checks.

The targets are ratios to the fastest peer's plain DPO step in the same run (median step time),
and chip's peak memory against the lowest peer's: chip's DPO ≤ 0.6×, chip's CHiP step with a
precomputed reference ≤ 0.8×, with a live reference ≤ 1.0×. The same ratios in CPU time (user +
system of the process that ran the step; the fastest peer by CPU time) come with them: on a shared
machine waiting for a core counts in wall time only.
"""

from __future__ import annotations

from typing import Any

from bench.peers.variant import PEERS

TARGETS = {"chip-dpo": 0.6, "chip-precomputed": 0.8, "chip-live": 1.0}
MB = 2**20


def peer_summary(results: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Ratios of every variant to the fastest peer (time) and the lowest peer (memory); the targets."""
    ran = {key: r for key, r in results.items() if key in PEERS and "median_seconds" in r}
    unavailable = {key: r["unavailable"] for key, r in results.items() if "unavailable" in r}
    if not ran and not unavailable:
        return None
    summary: dict[str, Any] = {"unavailable": unavailable, "ran": sorted(ran)}
    if not ran:
        return summary
    fastest = min(ran, key=lambda key: ran[key]["median_seconds"])
    fastest_cpu = min(ran, key=lambda key: ran[key]["median_cpu_seconds"])
    measured = {key: r for key, r in ran.items() if "peak_bytes" in r}
    lowest = min(measured, key=lambda key: measured[key]["peak_bytes"]) if measured else None
    summary.update(fastest_peer=fastest, fastest_cpu_peer=fastest_cpu, lowest_memory_peer=lowest, targets={})
    for key, result in results.items():
        if "median_seconds" not in result:
            continue
        result["time_ratio_to_fastest_peer"] = result["median_seconds"] / ran[fastest]["median_seconds"]
        result["cpu_ratio_to_fastest_peer"] = (
            result["median_cpu_seconds"] / ran[fastest_cpu]["median_cpu_seconds"]
        )
        if lowest and "peak_bytes" in result:
            result["memory_ratio_to_lowest_peer"] = result["peak_bytes"] / measured[lowest]["peak_bytes"]
        if key in TARGETS:
            time_ratio, memory_ratio = (
                result["time_ratio_to_fastest_peer"],
                result.get("memory_ratio_to_lowest_peer"),
            )
            cpu_ratio = result["cpu_ratio_to_fastest_peer"]
            summary["targets"][key] = {
                "time_ratio": time_ratio,
                "time_target": TARGETS[key],
                "time_met": time_ratio <= TARGETS[key],
                "cpu_ratio": cpu_ratio,
                "cpu_met": cpu_ratio <= TARGETS[key],
                "memory_ratio": memory_ratio,
                "memory_met": None if memory_ratio is None else memory_ratio <= 1.0,
            }
    return summary


def print_peers(report: dict[str, Any]) -> None:
    summary = report.get("peers")
    if not summary:
        return
    variants = report["variants"]
    print()
    for key, error in summary["unavailable"].items():
        print(f"{variants[key]['label']}: cannot run here: {error}")
    for key in summary["ran"]:
        result, check = variants[key], variants[key]["logps_check"]
        versions = ", ".join(f"{name} {version}" for name, version in result["peer_versions"].items())
        print(
            f"{result['label']} ({versions}): log-probs vs TRL on {check['responses']} responses: max |diff| "
            f"{check['max_abs_diff']:.2e} ({check['max_rel_diff']:.1e} relative) {_ok(check['agree'])}; first "
            f"loss {result['first_loss']:.6f} vs log 2 {_ok(result['first_loss_is_log2'])}; real tokens per step "
            f"as TRL's {_ok(result['real_tokens_match_trl'])}; trainable parameters {result['trainable_parameters']:,}"
            f" (chip/TRL {result['trainable_parameters_expected']:,})"
        )
    if "fastest_peer" not in summary:
        return
    fastest, lowest = summary["fastest_peer"], summary["lowest_memory_peer"]
    print(
        f"fastest peer: {variants[fastest]['label']}; lowest peak memory: "
        f"{variants[lowest]['label'] if lowest else '-'}"
    )
    row = "{:<52} {:>7} {:>10} {:>6} {:>10} {:>8} {:>10} {:>13} {:>7}"
    print(
        row.format(
            "variant",
            "wall s",
            "x fastest",
            "cpu s",
            "x fastest",
            "peak MB",
            "x lowest",
            "dec. pos/step",
            "padding",
        )
    )
    for result in (r for r in variants.values() if "median_seconds" in r):
        peak = result.get("peak_bytes")
        memory = result.get("memory_ratio_to_lowest_peer")
        print(
            row.format(
                result["label"],
                f"{result['median_seconds']:.2f}",
                f"{result['time_ratio_to_fastest_peer']:.2f}",
                f"{result['median_cpu_seconds']:.2f}",
                f"{result['cpu_ratio_to_fastest_peer']:.2f}",
                "" if peak is None else f"{peak / MB:.0f}",
                "" if memory is None else f"{memory:.2f}",
                f"{result['decoder_positions_per_step']:,.0f}",
                f"{result['padding_fraction']:.1%}",
            )
        )
    for key, target in summary["targets"].items():
        memory = target["memory_ratio"]
        print(
            f"target {key}: {target['time_ratio']:.2f} x fastest peer (<= {target['time_target']}) "
            f"{_met(target['time_met'])}, in CPU time {target['cpu_ratio']:.2f} {_met(target['cpu_met'])}; peak memory {'-' if memory is None else f'{memory:.2f}'} x lowest peer "
            f"(<= 1) {_met(target['memory_met'])}"
        )


def _ok(value: bool) -> str:
    return "ok" if value else "MISMATCH"


def _met(value: bool | None) -> str:
    return "n/a" if value is None else ("met" if value else "NOT MET")
