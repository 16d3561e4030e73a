"""The bench's figures as a plain-text table, the daemon and the naive baseline side by side."""

from __future__ import annotations

from typing import Any

from edge.tools.bench import cstore
from edge.tools.bench.report import STAGES

STAGE_LABELS = {
    "detect": "detect (last write -> taken)",
    "header": "read header",
    "decode": "decode",
    "preprocess": "preprocess",
    "infer": "infer",
    "assemble": "assemble study",
    "publish": "publish (submit -> PUBACK)",
    "total": "pipeline (taken -> result)",
}


def render(doc: dict[str, Any]) -> str:
    """The whole report, ready to print."""
    parts = [_heading(doc), _end_to_end(doc), _stages(doc), _isolated(doc), _rest(doc)]
    if "cstore" in doc:
        parts.insert(2, cstore.render(doc["cstore"]))
    if "cad_sr" in doc:
        parts.append(_cad_sr(doc["cad_sr"]))
    parts.append(_targets(doc))
    return "\n\n".join(parts) + "\n"


def _cad_sr(sr: dict[str, Any]) -> str:
    figures = sr["result_to_store_response"]
    own = sr.get("queue_to_store_response_ms", {})
    return (
        f"CAD SR, ms: result at the hub -> the PACS's C-STORE response ({figures['n']} studies)"
        f"\n  p50 {figures['p50_ms']:.1f}, p95 {figures['p95_ms']:.1f} (target p50 <= "
        f"{sr['target_p50_ms']}; negative: the SR was stored first)"
        f"\n  the daemon's own, SR queued -> C-STORE response: p50 {own.get('p50', float('nan'))}"
        f", p95 {own.get('p95', float('nan'))}"
    )


def _heading(doc: dict[str, Any]) -> str:
    machine = doc["machine"]
    engine = doc["engine"]
    load = machine["load_average"]
    lines = [
        f"edge bench {doc['created_at']}{'  (QUICK RUN)' if doc['quick'] else ''}",
        f"machine  {machine['cpu_count']} cores, {machine['cpu_model']}, "
        f"backend {machine['backend']}",
        f"load     average {load['start'][0]:.2f} at start, {load['end'][0]:.2f} at end "
        "(1-minute; other work on the box slows every figure)",
        f"engine   {engine['name']} {engine['version']} (sha256 {engine['sha256'][:12]}…)",
    ]
    lines += [f"note     {note}" for note in doc["notes"]]
    return "\n".join(lines)


def _end_to_end(doc: dict[str, Any]) -> str:
    rows = [
        "end to end, ms: last view closed -> study result at the hub",
        f"{'encoding':<27}{'views 0.5 s apart':>22}{'all at once':>14}"
        f"{'naive baseline':>18}{'speed-up':>10}{'overhead':>16}",
        f"{'':<27}{'p50':>8}{'p95':>7}{'p99':>7}{'p50':>7}{'p95':>7}"
        f"{'p50':>9}{'p95':>9}{'x':>10}{'ratio':>10}{'ms':>6}",
    ]
    for values in doc["by_encoding"].values():
        e2e, burst, base = values["e2e"], values["e2e_burst"], values["baseline_e2e"]
        rows.append(
            f"{values['name']:<27}{e2e['p50_ms']:>8.0f}{e2e['p95_ms']:>7.0f}{e2e['p99_ms']:>7.0f}"
            f"{burst['p50_ms']:>7.0f}{burst['p95_ms']:>7.0f}"
            f"{base['p50_ms']:>9.0f}{base['p95_ms']:>9.0f}"
            f"{values['speedup_vs_baseline']:>10.1f}{values['overhead_ratio']:>10.2f}"
            f"{values['overhead_ms']:>6.1f}"
        )
    e2e, burst, base = doc["e2e"], doc["e2e_burst"], doc["baseline"]["e2e"]
    rows.append(
        f"{'all':<27}{e2e['p50_ms']:>8.0f}{e2e['p95_ms']:>7.0f}{e2e['p99_ms']:>7.0f}"
        f"{burst['p50_ms']:>7.0f}{burst['p95_ms']:>7.0f}"
        f"{base['p50_ms']:>9.0f}{base['p95_ms']:>9.0f}{'':>10}{doc['overhead_ratio']:>10.2f}"
        f"{doc['overhead_ms']:>6.1f}"
    )
    samples = f"{e2e['n']} + {burst['n']} studies, baseline {base['n']}"
    rows.append(f"({samples}; baseline polls every {doc['baseline']['poll_s']:g} s)")
    rows += [_level_line(v) for v in doc["by_encoding"].values() if "level_effect" in v]
    return "\n".join(rows)


def _level_line(values: dict[str, Any]) -> str:
    """The score difference the chosen JPEG 2000 resolution level costs, beside its figures."""
    effect = values["level_effect"]
    sizes = "/".join(f"{r}x" for r in effect["reductions"])
    return (
        f"{values['name']}: decoded {sizes} smaller per side (decode.score_tolerance "
        f"{effect['tolerance']:g}); |score - score of a full decode| at most "
        f"{effect['max_abs_delta_score']:.4f} (mean {effect['mean_abs_delta_score']:.4f}) "
        f"over these {effect['images']} images"
    )


def _stages(doc: dict[str, Any]) -> str:
    rows = [
        "stages of a study's last view, ms (views 0.5 s apart)",
        f"{'stage':<31}{'p50':>8}{'p95':>8}{'p99':>8}",
    ]
    for name in (*STAGES, "total"):
        stage = doc["stages"][name]
        rows.append(
            f"{STAGE_LABELS[name]:<31}{stage['p50_ms']:>8.1f}"
            f"{stage['p95_ms']:>8.1f}{stage['p99_ms']:>8.1f}"
        )
    return "\n".join(rows)


def _isolated(doc: dict[str, Any]) -> str:
    rows = [
        "isolated compute, ms per image (in-process, one at a time, mean over the files);",
        "last view: its decode+preprocess+infer; paired: the same, p50 of the measures taken",
        "right after each e2e study (the overhead ratio's denominator)",
        f"{'encoding':<27}{'header':>8}{'decode':>8}{'prep':>8}{'infer':>8}{'last view':>11}"
        f"{'paired':>9}",
    ]
    for values in doc["by_encoding"].values():
        cost = values["isolated_ms"]
        rows.append(
            f"{values['name']:<27}{cost['header']:>8.1f}{cost['decode']:>8.1f}"
            f"{cost['preprocess']:>8.1f}{cost['infer']:>8.1f}"
            f"{values['isolated_last_view_compute_ms']:>11.1f}{values['paired_compute_ms']:>9.1f}"
        )
    return "\n".join(rows)


def _rest(doc: dict[str, Any]) -> str:
    burst = doc["burst"]
    ideal = burst["ideal"]
    rss = doc["rss_mb"]
    return "\n".join(
        [
            f"burst      {burst['studies']} studies ({burst['images']} images, "
            f"{'/'.join(burst['encodings'])}) dropped at once: {burst['seconds']:.1f} s, "
            f"{burst['images_per_s']:.2f} images/s",
            f"           ideal {burst['ideal_images_per_s']:.2f} images/s = min("
            f"{ideal['cores']} cores / {ideal['header_decode_preprocess_cpu_ms']:.0f} CPU ms, "
            f"infer {ideal['infer_images_per_s']:.0f} images/s): "
            f"efficiency {burst['efficiency']:.2f}; the daemon kept "
            f"{burst['daemon_cores_busy']:.2f} of {ideal['cores']} cores busy",
            f"footprint  idle CPU {doc['idle_cpu_percent']:.2f} % of one core over "
            f"{doc['idle_s']:g} s; RSS {rss['warm']:.0f} MB warm, {rss['after_soak']:.0f} MB "
            f"after {rss['soak_images']} images ({rss['growth_percent']:+.1f} %), "
            f"peak {rss['peak']:.0f} MB; decode workers {rss['decode_workers']:.0f} MB",
            *_repair(doc),
        ]
    )


def _repair(doc: dict[str, Any]) -> list[str]:
    repair = doc.get("repair")
    if repair is None:
        return ["repair     not measured (the hub extra is not installed)"]
    to_hub, after, gap = repair["to_hub"], repair["confirmed_after"], repair["gap_to_repair"]
    encoding = repair["encoding"]
    without = doc["by_encoding"][encoding]["e2e_burst"]
    return [
        f"confirm    {encoding}, all views at once, result at the hub: p50 "
        f"{to_hub['p50_ms']:.0f} ms, p95 {to_hub['p95_ms']:.0f} ms with the hub confirming "
        f"(without: p50 {without['p50_ms']:.0f}, p95 {without['p95_ms']:.0f});",
        f"           the confirmation reaches the box {after['p50_ms']:.0f} ms after the result "
        f"reaches the hub (p95 {after['p95_ms']:.0f})",
        f"repair     a lost result, from its gap at the hub to stored: p50 "
        f"{gap['p50_ms'] / 1000:.1f} s, p95 {gap['p95_ms'] / 1000:.1f} s "
        f"(n {gap['n']}; mqtt.resend_after_s {repair['resend_after_s']:g})",
    ]


def _targets(doc: dict[str, Any]) -> str:
    rows = ["targets (worst encoding where per encoding)"]
    for target in doc["targets"].values():
        met = target["met"]
        verdict = "n/a" if met is None else ("met" if met else "MISSED")
        figure = "-" if target["figure"] is None else f"{target['figure']:g}"
        rows.append(f"  {verdict:<7}{figure:>9}  {target['target']:<9} {target['what']}")
    return "\n".join(rows)
