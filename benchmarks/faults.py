"""Fault campaign for ``protlens embed``: kills, tampered progress, concurrent writers, hostile input,
and the cost of the checks.

Every trial runs the real command (``python -m protlens embed``) in a subprocess on a tiny random
ESM-2 and compares the result with an uninterrupted run. Kills at exact phases use the test-only
hook ``PROTLENS_FAULT=phase[:n]``; ``PROTLENS_BATCH_LOG`` lists the batches each run computed, and the
saved parts read after each kill say which batches were durable, so "recomputed a checkpointed
batch" is measured, not assumed. The cost compares this tree with the commit before issue 16
(``--baseline``, extracted with ``git archive``) on the 538 kinases, runs alternating.

    python benchmarks/faults.py            # 50 kills (15 in the final write), 3 rounds of each check
    python benchmarks/faults.py --quick    # 12 kills, 1 round: minutes
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _results import write_summary, write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
KINASES = ROOT.parent / "shared" / "data" / "kinases" / "hs_sequences.fasta"
RESULTS = ROOT / "benchmarks" / "results"
FINAL_WRITE = ("sidecar", "h5ad", "written")


def save_tiny_model(folder: Path, seed: int) -> Path:
    """A random ESM-2 of the test architecture (hidden 32, 2 layers) as an HF folder."""
    import torch
    from transformers import EsmForMaskedLM

    from protlens.models import EsmPLM, esm2_config

    torch.manual_seed(seed)
    EsmPLM(EsmForMaskedLM(esm2_config(2, 32, 4)).eval(), f"tiny-{seed}", "random").save_pretrained(folder)
    return folder


def read_fasta_text(path: Path, limit: int | None) -> str:
    recs = path.read_text().split(">")[1:]
    return "".join(">" + r for r in recs[:limit])


class Runner:
    """Runs ``protlens embed`` on ``in.fasta`` in a work folder, with a source tree on PYTHONPATH."""

    def __init__(self, src: Path, common: list[str]) -> None:
        self.src, self.common = src, common

    def env(self, fault: str | None = None, log: Path | None = None) -> dict:
        env = {**os.environ, "PYTHONPATH": str(self.src), "OMP_NUM_THREADS": "1"}
        for k in ("PROTLENS_FAULT", "PROTLENS_BATCH_LOG"):
            env.pop(k, None)
        if fault:
            env["PROTLENS_FAULT"] = fault
        if log:
            env["PROTLENS_BATCH_LOG"] = str(log)
        return env

    def cmd(self, d: Path, model: Path, extra: list[str] = ()) -> list[str]:
        return [sys.executable, "-m", "protlens", "embed", "in.fasta", "-o", "out.h5ad", "--model", str(model),
                *self.common, "--per-residue", "out.res.h5", *extra]

    def run(self, d: Path, model: Path, fault: str | None = None, log: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd(d, model), cwd=d, env=self.env(fault, log), capture_output=True, text=True)

    def start(self, d: Path, model: Path, log: Path | None = None) -> subprocess.Popen:
        return subprocess.Popen(self.cmd(d, model), cwd=d, env=self.env(None, log), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)


def batches(log: Path) -> list[int]:
    return [int(x) for x in log.read_text().split()] if log.exists() else []


def durable_batches(d: Path) -> set[int]:
    """Batches held by saved parts that pass protlens' own loading (read here independently)."""
    out: set[int] = set()
    for part in (d / "out.h5ad.parts").glob("part-*.npz"):
        try:
            with np.load(part) as z:
                out.update(z["batches"].tolist())
        except Exception:  # noqa: BLE001 -- a part cut by the kill is not durable
            pass
    return out


def same_result(a: Path, b: Path) -> bool:
    import h5py

    from protlens.io import read_h5ad

    x, y = read_h5ad(a / "out.h5ad"), read_h5ad(b / "out.h5ad")
    if list(x.obs_names) != list(y.obs_names) or not np.array_equal(x.X, y.X):
        return False
    with h5py.File(a / "out.res.h5") as fa, h5py.File(b / "out.res.h5") as fb:
        ga, gb = fa["layer2"], fb["layer2"]
        return sorted(ga) == sorted(gb) and all(np.array_equal(ga[k][()], gb[k][()]) for k in ga)


def clean_folder(d: Path) -> bool:
    return not [p for p in d.iterdir() if p.name.endswith((".parts", ".lock", ".tmp")) or p.name.startswith(".")]


class Campaign:
    def __init__(self, work: Path, runner: Runner, fasta: str, models: list[Path], refs: list[Path],
                 n_batches: int, ref_seconds: float, rng: random.Random) -> None:
        self.work, self.r, self.fasta, self.models, self.refs = work, runner, fasta, models, refs
        self.n_batches, self.ref_seconds, self.rng, self.k = n_batches, ref_seconds, rng, 0
        self.redrawn = 0  # random instants that fell after the run had finished (drawn again)

    def fresh(self) -> Path:
        self.k += 1
        d = self.work / f"t{self.k:03d}"
        d.mkdir()
        (d / "in.fasta").write_text(self.fasta)
        return d

    def kill(self, fault: str | None) -> dict:
        """One kill (at a phase, or at a random instant if ``fault`` is None) and the rerun."""
        if fault is None:
            upper = self.ref_seconds
            while True:  # an instant after the run had already finished is no kill: draw again, earlier
                d = self.fresh()
                t0 = time.perf_counter()
                p = self.r.start(d, self.models[0], d / "run1.log")
                try:
                    p.wait(timeout=self.rng.uniform(1.0, upper))
                except subprocess.TimeoutExpired:
                    p.send_signal(signal.SIGKILL)
                p.communicate()
                killed = p.returncode == -signal.SIGKILL
                if killed:
                    break
                self.redrawn += 1
                upper = max(1.5, 0.9 * (time.perf_counter() - t0))
        else:
            d = self.fresh()
            killed = self.r.run(d, self.models[0], fault, d / "run1.log").returncode == -signal.SIGKILL
        durable = durable_batches(d)
        r2 = self.r.run(d, self.models[0], log=d / "run2.log")
        second = batches(d / "run2.log")
        ok = killed and r2.returncode == 0 and same_result(d, self.refs[0]) and clean_folder(d)
        return dict(phase=fault or "random", ok=ok, recomputed=len(set(second) & set(batches(d / "run1.log"))),
                    checkpointed_recomputed=len(set(second) & durable))

    def tamper(self, kind: str, source: Path) -> bool:
        d = self.fresh()
        shutil.copytree(source / "out.h5ad.parts", d / "out.h5ad.parts")
        parts = sorted((d / "out.h5ad.parts").glob("part-*.npz"))
        part = self.rng.choice(parts)
        with np.load(part) as z:
            arrays = {k: z[k] for k in z.files}
        expect = arrays["batches"].tolist()
        if kind == "truncated":
            part.write_bytes(part.read_bytes()[: self.rng.randrange(1, part.stat().st_size)])
        elif kind == "zeroed":
            part.write_bytes(bytes(part.stat().st_size))
        elif kind == "empty":
            part.write_bytes(b"")
        else:
            key = self.rng.choice([k for k in arrays if k.startswith("b")])
            if kind == "foreign":
                arrays["fingerprint"] = np.array("f" * 64)
            elif kind == "nan":
                arrays[key] = arrays[key].copy()
                arrays[key].flat[self.rng.randrange(arrays[key].size)] = np.nan
            else:  # edited: plausible numbers, only the checksum can tell
                arrays[key] = arrays[key] * np.float32(1.0001)
            with open(part, "wb") as fh:
                np.savez(fh, **arrays)
        r = self.r.run(d, self.models[0], log=d / "run2.log")
        lines = r.stderr.strip().splitlines()
        named = len(lines) == 1 and ("out.h5ad.parts" in lines[0]) and lines[0].startswith("protlens: warning:")
        return (r.returncode == 0 and named and batches(d / "run2.log") == expect
                and same_result(d, self.refs[0]))

    def concurrent(self, second: int, killed_first: bool) -> dict:
        """Model 0 writes; model ``second`` tries the same output. Returns refused/mixed."""
        d = self.fresh()
        if killed_first:  # a kill/restart sequence across models: progress of model 0 must not leak
            self.r.run(d, self.models[0], f"batch:{self.rng.randrange(2, self.n_batches - 1)}")
            r = self.r.run(d, self.models[second])
            return dict(refused=None, mixed=not (r.returncode == 0 and same_result(d, self.refs[second])))
        a = self.r.start(d, self.models[0])
        lock = d / "out.h5ad.lock"
        while not (lock.exists() and lock.read_text().strip() == str(a.pid)) and a.poll() is None:
            time.sleep(0.01)
        os.kill(a.pid, signal.SIGSTOP)
        try:
            b = self.r.run(d, self.models[second])
        finally:
            os.kill(a.pid, signal.SIGCONT)
        a.communicate()
        refused = b.returncode == 2 and b.stderr.strip().splitlines() == [
            f"protlens: error: out.h5ad is being written by another protlens process (pid {a.pid}); "
            "wait for it to finish or choose another output"]
        return dict(refused=refused, mixed=not (a.returncode == 0 and same_result(d, self.refs[0])))


def run_bad_inputs(work: Path, src: Path, model: Path) -> tuple[int, int, list[str]]:
    import torch

    from protlens._faults import hostile_embed_cases

    d = work / "bad"
    d.mkdir()
    cases = hostile_embed_cases(d, model, torch.cuda.is_available())
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    failed = []
    for name, args in cases.items():
        before = sorted(d.rglob("*"))
        r = subprocess.run([sys.executable, "-m", "protlens", "embed", *args, "--no-progress"], env=env,
                           capture_output=True, text=True)
        lines = r.stderr.strip().splitlines()
        if not (r.returncode == 2 and len(lines) == 1 and lines[0].startswith("protlens: error: ")
                and sorted(d.rglob("*")) == before):
            failed.append(name)
    return len(cases) - len(failed), len(cases), failed


def cost(work: Path, src: Path, baseline_src: Path, models: Path, reps: int) -> dict:
    """Wall time of one full embed of the 538 kinases (process start to h5ad in place), alternating."""
    d = work / "cost"
    d.mkdir()
    (d / "in.fasta").write_text(KINASES.read_text())
    times: dict[str, list[float]] = {"checks": [], "baseline": []}
    embed_s: dict[str, list[float]] = {"checks": [], "baseline": []}
    from protlens.io import read_h5ad

    for rep in range(reps):
        order = ["checks", "baseline"] if rep % 2 == 0 else ["baseline", "checks"]
        for which in order:
            env = {**os.environ, "PYTHONPATH": str(src if which == "checks" else baseline_src), "OMP_NUM_THREADS": "1"}
            out = d / f"{which}.h5ad"
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "protlens", "embed", "in.fasta", "-o", out.name, "--model",
                                str(models), "--no-progress"], cwd=d, env=env, capture_output=True, text=True)
            times[which].append(time.perf_counter() - t0)
            assert r.returncode == 0, r.stderr
            embed_s[which].append(float(read_h5ad(out).uns["embed"]["seconds"]))
            out.unlink()
    return {"wall": times, "embed": embed_s}


def machine() -> str:
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except FileNotFoundError:
        pass
    return f"{cpu}, {os.cpu_count()} cores visible, torch CPU capability {torch.backends.cpu.get_cpu_capability()}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="12 kills, one round of each other check")
    p.add_argument("--baseline", default="775de65", help="commit to compare the cost against (before issue 16)")
    p.add_argument("--kill-seqs", type=int, default=160, help="kinases in the kill/tamper/concurrency input")
    p.add_argument("--seed", type=int, default=16)
    p.add_argument("--cost-reps", type=int, default=None, help="alternating pairs for the cost (default 3 quick, 5)")
    args = p.parse_args()
    rng = random.Random(args.seed)
    started = datetime.datetime.now(datetime.timezone.utc)
    load = os.getloadavg()
    src = ROOT / "src"
    with tempfile.TemporaryDirectory(prefix="protlens-faults-") as tmp:
        work = Path(tmp)
        models = [save_tiny_model(work / f"model{s}", s) for s in (0, 1)]
        runner = Runner(src, ["--max-tokens", "1024", "--checkpoint-every", "0", "--no-progress"])
        fasta = read_fasta_text(KINASES, args.kill_seqs)
        for k, m in enumerate(models):
            ref = work / f"ref{k}"
            ref.mkdir()
            (ref / "in.fasta").write_text(fasta)
            t0 = time.perf_counter()
            r = runner.run(ref, m, log=ref / "run.log")
            assert r.returncode == 0, r.stderr
            ref_seconds = time.perf_counter() - t0
        n_batches = len(batches(work / "ref0" / "run.log"))
        refs = [work / "ref0", work / "ref1"]
        c = Campaign(work, runner, fasta, models, refs, n_batches, ref_seconds, rng)

        # kills: exact phases (the final-write ones weighted up) plus random instants
        if args.quick:
            plan = ["load", "batch", "part", "assemble", "sidecar", "h5ad", "written", None, None, "sidecar", "h5ad",
                    "written"]
        else:
            plan = (["load"] * 4 + ["batch"] * 8 + ["part"] * 8 + ["assemble"] * 5 + ["sidecar"] * 5 + ["h5ad"] * 5
                    + ["written"] * 5 + [None] * 10)
        kills = []
        for phase in plan:
            fault = f"{phase}:{rng.randrange(1, n_batches)}" if phase in ("batch", "part") else phase
            kills.append(c.kill(fault))
            print(f"kill {len(kills)}/{len(plan)} {kills[-1]}", flush=True)
        rounds = 1 if args.quick else 3
        checkpointed = c.fresh()
        runner.run(checkpointed, models[0], "assemble")
        kinds = ["truncated", "zeroed", "empty", "foreign", "nan", "edited"]
        tampered = {k: [c.tamper(k, checkpointed) for _ in range(rounds)] for k in kinds}
        print("tampered", tampered, flush=True)
        conc = [c.concurrent(s, killed) for _ in range(rounds) for s in (0, 1) for killed in (False, True)]
        print("concurrent", conc, flush=True)
        bad_ok, bad_n, bad_failed = run_bad_inputs(work, src, models[0])
        print("bad inputs", bad_ok, bad_n, bad_failed, flush=True)

        base = work / "baseline"
        base.mkdir()
        subprocess.run(f"git -C {ROOT} archive {args.baseline} src | tar -x -C {base}", shell=True, check=True)
        costs = cost(work, src, base / "src", models[0], args.cost_reps or (3 if args.quick else 5))

    final = [k for k in kills if k["phase"].split(":")[0] in FINAL_WRITE]
    survived = sum(k["ok"] for k in kills)
    ck = sum(k["checkpointed_recomputed"] for k in kills)
    det = sum(sum(v) for v in tampered.values())
    n_t = sum(len(v) for v in tampered.values())
    n_refusals = [x for x in conc if x["refused"] is not None]
    mixed = sum(x["mixed"] for x in conc)
    wall = {k: float(np.median(v)) for k, v in costs["wall"].items()}
    emb = {k: float(np.median(v)) for k, v in costs["embed"].items()}
    slow_wall = wall["checks"] / wall["baseline"] - 1
    slow_emb = emb["checks"] / emb["baseline"] - 1
    pairs = [a / b - 1 for a, b in zip(costs["wall"]["checks"], costs["wall"]["baseline"])]
    quiet = load[0] <= (os.cpu_count() or 1)
    if not quiet and not (all(x < 0.03 for x in pairs) or all(x >= 0.03 for x in pairs)):
        cost_met = "unclear (pairs disagree under load)"
    else:
        cost_met = "yes" if slow_wall < 0.03 else "no"
    rows = [
        ("kills survived (identical output, nothing left behind)", "50/50, >= 10 in the final write",
         f"{survived}/{len(kills)} ({sum(k['ok'] for k in final)}/{len(final)} in the final write)",
         survived == len(kills) and len(kills) >= 50 and len(final) >= 10),
        ("checkpointed batches recomputed after a kill", "0 (only those since the last checkpoint)",
         f"{ck} (batches recomputed in all: {sum(k['recomputed'] for k in kills)}; kills that came after the run "
         f"had finished and removed its progress: {sum(k['recomputed'] == n_batches for k in kills)}, whose rerun "
         "recomputes everything as any rerun of a finished command does; otherwise at most "
         f"{max([k['recomputed'] for k in kills if k['recomputed'] < n_batches], default=0)} per kill with "
         "--checkpoint-every 0)", ck == 0),
        ("tampered parts detected, named, recomputed, equal result", "100%",
         f"{det}/{n_t} ({', '.join(f'{k} {sum(v)}/{len(v)}' for k, v in tampered.items())})", det == n_t),
        ("concurrent-writer trials mixed", "0",
         f"{mixed}/{len(conc)} mixed; second writer refused with the pid in {sum(x['refused'] for x in n_refusals)}"
         f"/{len(n_refusals)}", mixed == 0 and all(x["refused"] for x in n_refusals)),
        ("bad-input classes: one line, exit 2, nothing left", "100%",
         f"{bad_ok}/{bad_n}" + (f" (failed: {', '.join(bad_failed)})" if bad_failed else ""), bad_ok == bad_n),
        ("cost of the checks, 538 kinases, tiny model (process wall time)", "< 3% slower",
         f"{slow_wall:+.1%} (median {wall['checks']:.2f} s vs {wall['baseline']:.2f} s; alternating pairs "
         f"{', '.join(f'{x:+.0%}' for x in pairs)}; embedding alone {slow_emb:+.1%}; load average {load[0]:.1f} "
         f"on {os.cpu_count()} cores)", cost_met),
    ]
    met = [("yes" if ok else "no") if isinstance(ok, bool) else ok for *_, ok in rows]
    table = "| check | target | measured | met |\n|---|---|---|---|\n" + "\n".join(
        f"| {a} | {b} | {m} | {v} |" for (a, b, m, _), v in zip(rows, met))
    print(table)
    cmd = "python benchmarks/faults.py" + (" --quick" if args.quick else "")
    md = f"""## Faults: kills, tampered progress, concurrent writers, hostile input (issue 16)

`{cmd}` on {started:%Y-%m-%d %H:%M} UTC; {machine()}; load average at start {load[0]:.1f} (a machine shared with
other jobs: the cost row is a ratio of runs alternating in the same session, absolute times are not
comparable). Input: the first {args.kill_seqs} kinases of `hs_sequences.fasta` ({n_batches} batches at
`--max-tokens 1024 --checkpoint-every 0`, per-residue sidecar on) embedded by a tiny random ESM-2
(2 layers, hidden 32) saved as an HF folder; a second model with another seed for the mixing trials.
Kills: {len(kills)} ({', '.join(f'{ph} {sum(1 for k in kills if k["phase"].split(":")[0] == ph)}' for ph in dict.fromkeys(k["phase"].split(":")[0] for k in kills))}),
each followed by the same command and compared with an uninterrupted run (X and every per-residue
array bit-identical, no `.parts`, `.lock` or temp file left). A random instant that fell after the
run had already finished is no kill and is drawn again, earlier ({c.redrawn} such draws). Cost: `protlens embed` of all 538
kinases with default settings, this tree vs commit `{args.baseline}` (before issue 16), median of
{len(costs['wall']['checks'])} alternating runs each.

{table}
"""
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text_atomic(RESULTS / "faults.md", md)
    summary = [{"issue": "16", "target": f"{b}: {a}", "measured": m, "met": v} for (a, b, m, _), v in zip(rows, met)]
    write_summary(RESULTS / "faults.summary.json", summary)
    print(f"wrote {RESULTS / 'faults.md'}")


if __name__ == "__main__":
    main()
