"""Corpus preparation at scale: wall time, throughput and peak memory of `trainer.corpus.prepare` on
100 MB and 1 GB of text, next to today's path.

    python bench/prepare_scale.py [--sizes 100,1000] [--cases baseline,char,bpe,hit-char,hit-bpe]
                                  [--work DIR] [--keep] [--bpe-vocab 4096]

For each size (MB = 10^6 bytes) a synthetic corpus is written into the work folder (a temporary one
under /tmp unless --work; removed at the end unless --keep): the built-in plays' lines, shuffled by a
seeded random.Random, one shuffle after another, streamed to one file. The cases, each in a process
of its own so its peak resident memory is its alone (VmHWM, the process's own high-water mark; not
ru_maxrss, which on Linux also counts the parent's memory at the fork); the wall time is taken
around the work, after the imports (`imports MB`: the memory they leave, torch included):

  baseline char  the previous implementation (a553e40): the whole text read into one string, hashed,
                 encoded char by char (np.fromiter) and written as one uint16 file
  char, bpe      prepare(DataConfig(name=text, workers=None), tokenizer) then save(): the new streamed,
                 sharded preparation, encoding in worker processes (one per core, up to 8; none under 64 MB)
  hit char, bpe  the same prepare() again in a fresh process: a cache hit, which reads the manifest only

`workers MB` is each encoding worker's peak (polled from /proc); `total MB` adds them to the case's own
peak (an upper bound: the peaks need not coincide), and the memory targets are on it. A cache hit is
judged on what it adds over its imports.
Targets: peak memory of char and bpe at the largest size <= 1 GB and within 20% of the smallest size;
a cache hit under 1 s and 200 MB; char at least 2x the baseline's throughput (at the smallest size).
The baseline needs ~3.2x the corpus in memory: it is skipped where less than 8x is available.
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CASES = ["baseline", "char", "bpe", "hit-char", "hit-bpe"]
LABELS = {
    "baseline": "baseline char",
    "char": "char",
    "bpe": "bpe",
    "hit-char": "cache hit char",
    "hit-bpe": "cache hit bpe",
}
MB = 10**6


def write_corpus_file(path: Path, size: int, seed: int = 0) -> None:
    """`size` bytes of the plays' lines, reshuffled for every round, written as they are made."""
    from trainer.named_corpora import shakespeare_plays

    lines = shakespeare_plays().splitlines(keepends=True)
    rng, written = random.Random(seed), 0
    with open(path, "wb") as out:
        while written < size:
            rng.shuffle(lines)
            chunk = "".join(lines).encode()
            if len(chunk) > size - written:  # the last round: cut, a character cut in two made newlines
                chunk = chunk[: size - written]
                whole = chunk.decode(errors="ignore").encode()
                chunk = whole + b"\n" * (len(chunk) - len(whole))
            out.write(chunk)
            written += len(chunk)


def baseline_prepare(path: Path, cache_dir: Path, val_fraction: float = 0.1) -> int:
    """a553e40's load_text (one file), prepare, Vocabulary.from_text/encode/to_dict and _write_prepared."""
    text = path.read_text(encoding="utf-8-sig")
    key = hashlib.sha256(f"1:{val_fraction}:".encode() + text.encode()).hexdigest()[:16]
    directory = cache_dir / key
    if (directory / "meta.json").exists():
        raise RuntimeError(f"{directory} is already prepared")
    chars = tuple(sorted(set(text)))
    lookup = {ch: i for i, ch in enumerate(chars)}
    ids = np.fromiter((lookup[ch] for ch in text), dtype=np.uint16, count=len(text))
    n_train = int(len(ids) * (1 - val_fraction))
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=".preparing-"))
    ids[:n_train].tofile(staging / "train.bin")
    ids[n_train:].tofile(staging / "val.bin")
    vocab = {"chars": list(chars), "base_size": len(chars), "size": len(chars) + 15}
    vocab.update(mask_id=len(chars), cls_id=len(chars) + 1)
    meta = {"vocab": vocab, "train_tokens": n_train, "val_tokens": len(ids) - n_train}
    (staging / "meta.json").write_text(json.dumps(meta))
    os.rename(staging, directory)
    return len(ids)


def status_kb(field: str, pid: int | str = "self") -> int:
    """A memory figure of /proc/PID/status in KiB (VmRSS now, VmHWM the peak); 0 for a process gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next((int(line.split()[1]) for line in status if line.startswith(field + ":")), 0)
    except OSError:
        return 0


class WorkerPeaks(threading.Thread):
    """The peak memory (VmHWM) of this process's children, the encoding workers, polled: a child's own
    ru_maxrss would count this process's memory at the fork before its exec."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peaks: dict[int, int] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            for pid in _children():
                self.peaks[pid] = max(self.peaks.get(pid, 0), status_kb("VmHWM", pid))

    def stop(self, workers: int) -> list[int]:
        """The peaks of the `workers` largest children (the resource tracker is the small one left out)."""
        self.done.set()
        self.join()
        return sorted(self.peaks.values(), reverse=True)[:workers]


def _children() -> list[int]:
    found, me = [], str(os.getpid())
    for name in os.listdir("/proc"):
        try:
            if name.isdigit() and open(f"/proc/{name}/stat").read().rsplit(")", 1)[1].split()[1] == me:
                found.append(int(name))
        except (OSError, IndexError):
            pass
    return found


def run_one(case: str, corpus: Path, cache: Path, bpe_vocab: int) -> dict:
    """One case in this process; its measurements as a dict (the child's last stdout line)."""
    start = time.perf_counter()
    if case != "baseline":
        from trainer.corpus import CorpusName, DataConfig, prepare
        from trainer.preparation import SMALL_CORPUS
        from trainer.vocab import BpeTokenizerConfig, CharTokenizerConfig
    result = {"import_s": time.perf_counter() - start, "import_kb": status_kb("VmRSS"), "workers": 0}
    watch = WorkerPeaks()
    watch.start()
    start = time.perf_counter()
    if case == "baseline":
        result["tokens"] = baseline_prepare(corpus, cache)
    else:
        tokenizer = CharTokenizerConfig() if case.endswith("char") else BpeTokenizerConfig(vocab_size=bpe_vocab)
        data = DataConfig(name=CorpusName.text, path=str(corpus), cache_dir=str(cache), workers=None)
        prepared = prepare(data, tokenizer)
        if (prepared.lock is None) != case.startswith("hit"):
            raise RuntimeError(f"{case}: expected {'a cache hit' if case.startswith('hit') else 'a preparation'}")
        prepared.save()
        result["tokens"] = prepared.manifest["tokens"]
        if not case.startswith("hit") and corpus.stat().st_size >= SMALL_CORPUS:
            result["workers"] = data.worker_count()
    result["wall_s"] = time.perf_counter() - start
    result["peak_kb"] = status_kb("VmHWM")  # not ru_maxrss: it counts the parent's memory at the fork
    result["workers_kb"] = watch.stop(result["workers"])
    return result


def measure(case: str, corpus: Path, cache: Path, bpe_vocab: int) -> dict:
    command = [sys.executable, __file__, "--one", case, "--corpus", str(corpus), "--cache", str(cache)]
    done = subprocess.run([*command, "--bpe-vocab", str(bpe_vocab)], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"{case} on {corpus.name} failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def available_bytes() -> int:
    with open("/proc/meminfo") as meminfo:
        return next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))


def same_ids(baseline: Path, prepared: Path) -> bool:
    """Whether the baseline's train.bin + val.bin hold the ids of the new char corpus's shards."""
    manifest = json.loads((prepared / "manifest.json").read_text())
    old = [baseline / "train.bin", baseline / "val.bin"]
    new = [prepared / shard["file"] for shard in manifest["shards"]]
    return _chunks(old) == _chunks(new)


def _chunks(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as stream:
            while block := stream.read(1 << 24):
                digest.update(block)
    return digest.hexdigest()


def mb(kb: int) -> float:
    return kb * 1024 / MB


def print_table(results: dict, sizes: list[int]) -> None:
    small, large = sizes[0], sizes[-1]
    ratio_head = f"total {large}/{small}" if len(sizes) > 1 else ""
    print(
        f"\n{'corpus':>8}  {'case':<16}{'wall s':>9}{'MB/s':>9}{'peak MB':>9}{'imports MB':>12}{'workers MB':>12}"
        f"{'total MB':>10}{'x baseline':>12}{ratio_head:>16}"
    )
    for size in sizes:
        for case in CASES:
            row = results.get((size, case))
            if row is None:
                continue
            name = f"{size:,} MB"
            if row == "skipped":
                print(f"{name:>8}  {LABELS[case]:<16}{'skipped (memory)':>18}")
                continue
            rate = "-" if case.startswith("hit") else f"{row['rate']:.1f}"
            workers = "+".join(f"{mb(kb):.0f}" for kb in row["workers_kb"]) or "-"
            base = results.get((size, "baseline"))
            versus = f"{row['rate'] / base['rate']:.2f}x" if case in ("char", "bpe") and isinstance(base, dict) else ""
            first = results.get((small, case))
            growth = f"{row['total_mb'] / first['total_mb']:.2f}x" if size == large != small and first else ""
            print(
                f"{name:>8}  {LABELS[case]:<16}{row['wall_s']:>9.3f}{rate:>9}{mb(row['peak_kb']):>9.0f}"
                f"{mb(row['import_kb']):>12.0f}{workers:>12}{row['total_mb']:>10.0f}{versus:>12}{growth:>16}"
            )


def print_targets(results: dict, sizes: list[int], identical: dict) -> None:
    small, large = sizes[0], sizes[-1]
    print()

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    for case in ("char", "bpe"):
        big, first = results.get((large, case)), results.get((small, case))
        if big and first and large != small:
            peak, growth = big["total_mb"], big["total_mb"] / first["total_mb"]
            print(
                f"{verdict(peak <= 1000 and growth <= 1.2)}  {case}: peak memory at {large:,} MB {peak:.0f} MB "
                f"(with workers) <= 1,000 MB, within 20% of {small:,} MB's {first['total_mb']:.0f} MB ({growth:.2f}x)"
            )
    for case in ("hit-char", "hit-bpe"):
        for size in sizes:
            row = results.get((size, case))
            if row:
                wall, work = row["wall_s"], mb(max(row["peak_kb"] - row["import_kb"], 0))
                print(
                    f"{verdict(wall < 1 and work < 200)}  {LABELS[case]} at {size:,} MB: {wall:.3f} s < 1 s, "
                    f"+{work:.0f} MB over its imports < 200 MB (peak {mb(row['peak_kb']):.0f} MB with imports)"
                )
    char, base = results.get((small, "char")), results.get((small, "baseline"))
    if char and isinstance(base, dict):
        ratio = char["rate"] / base["rate"]
        print(f"{verdict(ratio >= 2)}  char at {small:,} MB: {ratio:.2f}x the baseline's throughput >= 2x")
    for size, same in identical.items():
        print(f"{verdict(same)}  char ids at {size:,} MB identical to the baseline's")
    imports = [row["import_s"] for (_, case), row in results.items() if isinstance(row, dict) and case != "baseline"]
    if imports:
        print(f"(imports, not in the wall times: trainer.corpus {min(imports):.2f}-{max(imports):.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000", help="corpus sizes in MB (10^6 bytes), comma-separated")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {','.join(CASES)}")
    parser.add_argument("--work", type=Path, help="folder for the corpora and caches (default: a new one in /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--bpe-vocab", type=int, default=4096)
    parser.add_argument("--one", choices=CASES, help=argparse.SUPPRESS)  # a child: run one case
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.corpus, args.cache, args.bpe_vocab)))
        return

    sizes = sorted(int(s) for s in args.sizes.split(","))
    wanted = set(args.cases.split(","))
    if wanted - set(CASES):
        parser.error(f"unknown cases {sorted(wanted - set(CASES))}; of {CASES}")
    wanted |= {case.removeprefix("hit-") for case in wanted if case.startswith("hit-")}  # a hit needs its entry
    cases = [case for case in CASES if case in wanted]
    work = args.work or Path(tempfile.mkdtemp(prefix="prepare_scale-"))
    work.mkdir(parents=True, exist_ok=True)
    results, identical = {}, {}
    try:
        for size in sizes:
            corpus = work / f"corpus-{size}MB.txt"
            start = time.perf_counter()
            write_corpus_file(corpus, size * MB)
            print(f"{size:,} MB corpus written in {time.perf_counter() - start:.1f} s: {corpus}", file=sys.stderr)
            for case in cases:
                cache = work / f"cache-{size}MB-{case.removeprefix('hit-')}"
                if case == "baseline" and available_bytes() < 8 * size * MB:
                    results[(size, case)] = "skipped"
                    print(
                        f"{size:,} MB {LABELS[case]}: skipped, {available_bytes() / 1e9:.1f} GB free", file=sys.stderr
                    )
                    continue
                if not case.startswith("hit"):
                    shutil.rmtree(cache, ignore_errors=True)
                row = measure(case, corpus, cache, args.bpe_vocab)
                row["rate"] = size / row["wall_s"]
                row["total_mb"] = mb(row["peak_kb"] + sum(row["workers_kb"]))
                results[(size, case)] = row
                print(
                    f"{size:,} MB {LABELS[case]}: {row['wall_s']:.2f} s, peak {mb(row['peak_kb']):.0f} MB",
                    file=sys.stderr,
                    flush=True,
                )
            if isinstance(results.get((size, "baseline")), dict) and (size, "char") in results:
                (old,) = (work / f"cache-{size}MB-baseline").iterdir()
                (new,) = (p for p in (work / f"cache-{size}MB-char").iterdir() if not p.name.startswith("."))
                identical[size] = same_ids(old, new)
            if not args.keep:  # the token files of this size are done with
                for cache in work.glob(f"cache-{size}MB-*"):
                    shutil.rmtree(cache)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_table(results, sizes)
    print_targets(results, sizes, identical)


if __name__ == "__main__":
    main()
