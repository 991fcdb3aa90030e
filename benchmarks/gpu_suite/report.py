"""The document as people read it: ``gpu_suite.md`` (``render_markdown``) and the one-screen
summary printed at the end (``summary``). Both take the cleaned JSON document and change nothing."""
from __future__ import annotations

from .common import is_number

ENV_ROWS = ("gpu_name", "gpu_memory_gib", "compute_capability", "driver", "torch", "cuda", "cudnn", "torchvision",
            "timm", "numpy", "pillow", "python", "cpu_count", "torch_threads", "tf32_matmul", "tf32_cudnn",
            "git_commit", "lpld_source_sha1", "imported")
SPEED_PARTS = ("class_stats", "labels", "input_path", "teacher")  # recovery has a table of its own


def fmt(v, digits: int = 3) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 10 ** -digits):
            return f"{v:.{digits}g}"
        return f"{v:,.{digits}f}" if abs(v) < 100 else f"{v:,.1f}"
    return str(v)


def ratio_text(r: dict) -> str:
    v = r.get("value")
    if not is_number(v):
        text = str(v)
    else:
        text = f"{100 * v:.2f}%" if r.get("unit") == "share" else f"{v:.2f}x"
    if "goal" in r:
        met = r["goal_met"]
        text += f" (goal {r['goal']}: {'met' if met is True else 'not met' if met is False else met})"
    return text


def counts_text(counts: dict) -> str:
    return ", ".join(f"{n} {k}" for k, n in counts.items() if n)


# ---- gpu_suite.md --------------------------------------------------------------------------------------
def render_markdown(doc: dict) -> str:
    sec = doc["sections"]
    lines = _md_header(doc) + _md_tests(sec["tests"]) + _md_stages(sec["stages"]) + _md_speed(sec["speed"])
    return "\n".join(lines) + "\n"


def _md_header(doc: dict) -> list[str]:
    env, s = doc["environment"], doc["suite"]
    lines = [f"# GPU suite ({s['mode']})", ""]
    if s["mode"] == "cpu-smoke":
        lines += ["CPU smoke (toy sizes, not a benchmark): the same code path as the GPU run.", ""]
    lines += [f"Started {s['started']}, elapsed {fmt(s['elapsed_s'], 1)} s, budget {s['budget_s']}, "
              f"complete: {s['complete']}. Command: `{' '.join(s['command'])}`", "",
              "| | |", "| --- | --- |"]
    return lines + [f"| {k} | {env.get(k)} |" for k in ENV_ROWS]


def _md_tests(t: dict) -> list[str]:
    lines = ["", "## tests", "", f"Status: {t['status']}."]
    if isinstance(t.get("counts"), dict):
        lines.append(f"Counts: {counts_text(t['counts'])}; "
                     f"failing: {', '.join(t['failing']) or 'none'}; not collectable here: "
                     f"{', '.join(t['collection_errors']) or 'none'}.")
    return lines


def _md_stages(st: dict) -> list[str]:
    lines = ["", "## stages", "", f"Status: {st['status']}.", "",
             "| stage | status | wall s | peak GPU MiB | amp | channels_last | compile | result |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in st.get("rows", {}).items():
        res = row.get("result")
        res = ", ".join(f"{k}={fmt(v)}" for k, v in res.items() if not isinstance(v, dict) and k != "root") \
            if isinstance(res, dict) else ""
        lines.append(f"| {name} | {row['status']} | {fmt(row.get('wall_s', ''), 1)} | "
                     f"{fmt(row.get('peak_gpu_memory_mib', ''), 0)} | {row.get('amp', '')} | "
                     f"{row.get('channels_last', '')} | {row.get('compile', '')} | {res} |")
    return lines


def _md_speed(sp: dict) -> list[str]:
    lines = ["", "## speed", "", f"Status: {sp['status']}."]
    rec = sp.get("recovery", {})
    for name, out in rec.items():
        if isinstance(out, dict) and "settings" in out:
            anchor = rec.get("anchor_authors_code_h100_image_iters_per_s", {}).get(name, "n/a")
            lines += _md_recovery(name, out, anchor)
    for part in SPEED_PARTS:
        block = sp.get(part)
        if isinstance(block, dict):
            lines += _md_speed_part(part, block)
    return lines


def _md_recovery(name: str, out: dict, anchor) -> list[str]:
    cfg = out["settings"]
    lines = ["", f"### recovery, {name}: {cfg['image_size']} px, ipc {cfg['ipc']}, {cfg['model']}, "
                 f"{cfg['num_classes']} classes (anchor, authors' code on an H100: {fmt(anchor)} img-it/s)", "",
             "| variant | K | images/step | s/step | img-it/s | first call s | peak GPU MiB | vs authors' loop |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for variant in ("authors_loop", "ours_eager", "ours_compiled"):
        for key, row in out[variant].items():
            ratio = out["ratios"].get(f"{variant}_{key}_vs_authors_loop")
            lines.append(f"| {variant} | {key[1:]} | {fmt(row.get('batch_images', ''))} | "
                         f"{fmt(row['sec_per_step'])} | {fmt(row['image_iters_per_s'], 1)} | "
                         f"{fmt(row['first_call_overhead_s'], 1)} | {fmt(row['peak_gpu_memory_mib'], 0)} | "
                         f"{ratio_text(ratio) if ratio else '1.00x (reference)'} |")
    return lines


def _md_speed_part(part: str, block: dict) -> list[str]:
    lines = ["", f"### {part}", ""]
    for key, row in block.items():
        if key in ("settings", "ratios") or not isinstance(row, dict):
            continue
        vals = ", ".join(f"{k}={fmt(v)}" for k, v in row.items() if k not in ("traceback",))
        lines.append(f"- {key}: {vals}")
    return lines + [f"- **{key}**: {ratio_text(r)}" for key, r in block.get("ratios", {}).items()]


# ---- the one-screen summary ----------------------------------------------------------------------------
def summary(doc: dict) -> str:
    env, sec = doc["environment"], doc["sections"]
    out = [f"gpu_suite ({doc['suite']['mode']}) on {env['gpu_name']}: torch {env['torch']}, CUDA {env['cuda']}, "
           f"cuDNN {env['cudnn']}, torchvision {env['torchvision']}, timm {env['timm']}; "
           f"{fmt(doc['suite']['elapsed_s'], 1)} s"]
    t = sec["tests"]
    counts = t.get("counts")
    out.append(f"tests: {t['status']}" + (f" ({counts_text(counts)})" if isinstance(counts, dict) else ""))
    out += [f"  FAILED {fid}" for fid in t.get("failing", [])[:5]]
    rows = sec["stages"].get("rows", {})
    out.append(f"stages: {sec['stages']['status']}" + (": " if rows else "") + ", ".join(
        f"{n} {r['status'] if r['status'] != 'ok' else fmt(r['wall_s'], 1) + 's'}"
        + (f"/{fmt(r['peak_gpu_memory_mib'], 0)}MiB" if is_number(r.get('peak_gpu_memory_mib')) else "")
        for n, r in rows.items()))
    return "\n".join(out + _summary_speed(sec["speed"]))


def _summary_speed(sp: dict) -> list[str]:
    out = [f"speed: {sp['status']}"]
    for name, block in sp.get("recovery", {}).items():
        if isinstance(block, dict) and "ratios" in block:
            a = block["authors_loop"]["K1"]["image_iters_per_s"]
            anchor = sp["recovery"]["anchor_authors_code_h100_image_iters_per_s"].get(name)
            best = [(k, r) for k, r in block["ratios"].items() if k.startswith("ours_compiled")]
            out.append(f"  recovery {name}: authors' loop {fmt(a, 1) + ' img-it/s' if is_number(a) else a} "
                       f"(anchor, authors' code on an H100: {anchor}); "
                       + "; ".join(f"{k.split('_vs')[0].replace('ours_', '')} {ratio_text(r)}" for k, r in best))
    for part in SPEED_PARTS:
        for k, r in sp.get(part, {}).get("ratios", {}).items():
            out.append(f"  {part} {k}: {ratio_text(r)}")
    ip = sp.get("input_path", {}).get("measured", {})
    if is_number(ip.get("cores_to_feed_pil_decode")):
        out.append(f"  cores to feed {sp['input_path']['settings']['feed_images_per_s']} img/s at "
                   f"{ip['size']} px: PIL decode+view {fmt(ip['cores_to_feed_pil_decode'], 1)}, device path host "
                   f"{fmt(ip['cores_to_feed_device_host'], 2)}")
    return out
