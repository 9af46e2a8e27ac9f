"""The fuzzing campaign and its command line (`python -m dlc.tools.fuzz`): generate, check
(in a worker process, so a crash or a hang of one compile is a finding), minimise and save."""

from __future__ import annotations

import argparse
import base64
import json
import os
import select
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx

import dlc.tools.fuzz
from dlc.tools.fuzz.checks import ALL_CONFIGS, ORACLE_KINDS, Finding, check_model, config_name
from dlc.tools.fuzz.corpus import DEFAULT_CORPUS, corpus_entries, replay, save_to_corpus
from dlc.tools.fuzz.generator import GeneratorError, generate
from dlc.tools.fuzz.hostile import check_hostile, generate_hostile
from dlc.tools.fuzz.minimise import minimise

# --- running checks in a worker process ----------------------------------------------------------

class InProcess:
    """Checks in this process (tests, and minimising failures that do not crash)."""

    def __init__(self, threads: int = 1, hostile: bool = False):
        self.threads = threads
        self.hostile = hostile

    def check(self, model, feed_seed, configs, timeout=None) -> list[Finding]:
        if self.hostile:
            return check_hostile(model, feed_seed, configs, threads=self.threads)
        return check_model(model, feed_seed, configs, threads=self.threads)

    def close(self):
        pass


class Worker:
    """Checks in a child process: a segfault or a hang becomes a finding, and a fresh worker starts."""

    def __init__(self, threads: int = 1, hostile: bool = False):
        self.process: subprocess.Popen | None = None
        self.threads = threads
        self.hostile = hostile
        self.unread = b""  # replies read from the pipe, not yet taken (`_reply_line`)

    def _start(self):
        env = dict(os.environ, DLC_CACHE="0")
        # Replies are read with os.read (`_reply_line`), never through the pipe's buffered
        # reader: select() sees only the pipe, so a readline() that took two replies in one read
        # left the second where select() never looks, and a healthy worker read as hung (a
        # "timeout" finding on npu-sim/all, which answers right after its progress line).
        self.process = subprocess.Popen([sys.executable, "-m", "dlc.tools.fuzz", "--worker"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                                        cwd=str(Path(__file__).resolve().parents[3]))
        self.unread = b""

    def _reply_line(self, deadline: float) -> bytes | None:
        """The worker's next reply line, b"" if it died first, None if `deadline` passed first."""
        while b"\n" not in self.unread:
            ready, _, _ = select.select([self.process.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            chunk = os.read(self.process.stdout.fileno(), 1 << 16)
            if not chunk:
                return b""
            self.unread += chunk
        line, self.unread = self.unread.split(b"\n", 1)
        return line

    def check(self, model, feed_seed, configs, timeout=120.0) -> list[Finding]:
        """`timeout` bounds each configuration (compile, run, compare), not the whole request: a
        request holds up to five, and a slow but live machine must not be blamed on the last one."""
        if self.process is None or self.process.poll() is not None:
            self._start()
        request = {"model": base64.b64encode(model.SerializeToString()).decode(), "feed_seed": feed_seed,
                   "configs": [list(c) for c in configs], "threads": self.threads}
        if self.hostile:
            request["hostile"] = True
        self.process.stdin.write((json.dumps(request) + "\n").encode())
        self.process.stdin.flush()
        current = "startup"
        deadline = time.monotonic() + timeout
        while True:
            line = self._reply_line(deadline)
            if line is None:
                self.close()
                return [Finding("timeout", current, f"no answer within {timeout:.0f} s", "timeout")]
            if not line:
                code = self.process.wait()
                self.process = None
                signal = f"signal {-code}" if code < 0 else f"exit code {code}"
                return [Finding("crash", current, f"the worker died ({signal})", signal)]
            reply = json.loads(line)
            if "config" in reply:
                current = config_name(reply["config"])
                deadline = time.monotonic() + timeout
            else:
                return [Finding(**f) for f in reply["findings"]]

    def close(self):
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def worker_main() -> int:
    """Answer check requests from stdin, one JSON line each; native output goes to stderr."""
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def say(message: dict):
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    crash_on = os.environ.get("DLC_FUZZ_CRASH_ON_OP")  # tests: die like a segfaulting compile
    for line in sys.stdin:
        request = json.loads(line)
        model = onnx.ModelProto.FromString(base64.b64decode(request["model"]))
        if crash_on and any(n.op_type == crash_on for n in model.graph.node):
            say({"config": request["configs"][0]})
            import signal

            os.kill(os.getpid(), signal.SIGSEGV)
        check = check_hostile if request.get("hostile") else check_model
        findings = check(model, request["feed_seed"], [tuple(c) for c in request["configs"]],
                         threads=request.get("threads", 1), progress=lambda config: say({"config": list(config)}))
        say({"findings": [asdict(f) for f in findings]})
    return 0


# --- the campaign --------------------------------------------------------------------------------

@dataclass
class Summary:
    cases: int = 0
    seconds: float = 0.0
    findings: Counter = field(default_factory=Counter)
    saved: list = field(default_factory=list)

    @property
    def failing(self) -> int:
        """Findings that are dlc's (ORACLE_KINDS are onnxruntime's or the generator's)."""
        return sum(count for kind, count in self.findings.items() if kind not in ORACLE_KINDS)

    def report(self) -> str:
        rate = self.cases / max(self.seconds / 60, 1e-9)
        lines = [(f"{self.cases} models in {self.seconds:.0f} s ({rate:.0f}/minute); "
                  f"{self.failing} failing")]
        lines += [f"  {kind}: {count}{' (the oracle, not dlc)' if kind in ORACLE_KINDS else ''}"
                  for kind, count in sorted(self.findings.items())]
        lines += [f"  saved {p}" for p in self.saved]
        return "\n".join(lines)


PROGRESS_EVERY_S = 10.0  # a clean campaign says how far it got this often (a log line)


def fuzz(*, minutes: float | None = None, cases: int | None = None, seed: int = 0, configs=ALL_CONFIGS,
         corpus: Path | None = DEFAULT_CORPUS, isolate: bool = True, max_nodes: int = 10,
         minimise_s: float = 120.0, threads: int = 1, hostile: bool = False, log=print,
         progress_every_s: float | None = PROGRESS_EVERY_S) -> Summary:
    """Generate and check models until `minutes` pass or `cases` are done; minimise and save failures.
    `hostile`: the hostile generator and oracle (hostile.py) instead of the well-conditioned ones.
    Every `progress_every_s` (None: never) a line says how many models ran and how many failed;
    the live line of a terminal (dlc/progress.py) names the model being checked."""
    from dlc import progress

    runner = Worker(threads, hostile) if isolate else InProcess(threads, hostile)
    summary = Summary()
    start = last_report = time.monotonic()
    seen: set[tuple] = set()
    try:
        case = 0
        while (cases is None or case < cases) and (minutes is None or time.monotonic() - start < minutes * 60):
            case_seed = seed * 1_000_003 + case
            case += 1
            now = time.monotonic()
            if progress_every_s is not None and now - last_report >= progress_every_s:
                last_report = now
                log(f"fuzz: {summary.cases} models in {now - start:.0f} s, "
                    f"{summary.failing} failing")
            progress.current().begin(f"fuzz: model {case} (seed {case_seed}), {summary.cases} checked, "
                                     f"{summary.failing} failing")
            try:
                model = generate_hostile(case_seed, max_nodes) if hostile else generate(case_seed, max_nodes)
            except (GeneratorError, onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
                summary.cases += 1
                summary.findings["generator"] += 1
                log(f"case {case_seed}: generator: {error}")
                continue
            findings = runner.check(model, case_seed, configs)
            summary.cases += 1
            for finding in findings:
                summary.findings[finding.kind] += 1
                log(f"case {case_seed}: {finding.kind} on {finding.config}: {finding.message[:300]}")
            for finding in findings:
                # One corpus entry per way of failing (kind, config, error type, culprit ops).
                if corpus is None or finding.kind in ORACLE_KINDS:
                    continue
                target = tuple(c for c in configs if config_name(c) == finding.config) or configs

                def still_fails(candidate, finding=finding, target=target, case_seed=case_seed):
                    return any(f.signature() == finding.signature()
                               for f in runner.check(candidate, case_seed, target))

                small = minimise(model, still_fails, minimise_s)
                key = (*finding.signature(), tuple(sorted({n.op_type for n in small.graph.node})))
                if key in seen:
                    continue
                seen.add(key)
                again = [f for f in runner.check(small, case_seed, target) if f.signature() == finding.signature()]
                recorded = again[0] if again else finding
                path = save_to_corpus(Path(corpus), small, recorded, {
                    "seed": case_seed, "feed_seed": case_seed, "original_nodes": len(model.graph.node),
                    "threads": threads, **({"hostile": True} if hostile else {})})
                summary.saved.append(path)
                log(f"  minimised {len(model.graph.node)} -> {len(small.graph.node)} nodes: {path}")
    finally:
        runner.close()
        summary.seconds = time.monotonic() - start
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlc.tools.fuzz",
                                     description=dlc.tools.fuzz.__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=None, help="how long to fuzz (default: 1)")
    parser.add_argument("--cases", type=int, default=None, help="stop after this many models")
    parser.add_argument("--seed", type=int, default=0, help="campaign seed (case seeds follow from it)")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS,
                        help=f"where minimised failures go (default: {DEFAULT_CORPUS})")
    parser.add_argument("--targets", default="cpu,reference,npu-sim",
                        help="comma-separated targets (cpu runs with every fusion setting)")
    parser.add_argument("--max-nodes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1,
                        help="threads of the compiled models (results must not depend on it)")
    parser.add_argument("--no-isolate", action="store_true", help="check in this process (no crash guard)")
    parser.add_argument("--no-save", action="store_true", help="report failures without minimising/saving")
    parser.add_argument("--replay", type=Path, nargs="*",
                        help="check these .onnx files again (none named: the whole corpus)")
    parser.add_argument("--hostile", action="store_true",
                        help="hostile values: integer ops with zeros and extremes, out-of-range indices, "
                             "inf/nan/1e38/denormal floats, pools with ceil_mode and asymmetric pads")
    parser.add_argument("--artifacts", action="store_true",
                        help="mutate saved artifacts (manifest, object files, weights, file types) and "
                             "load+run each in a child: anything but a clean run or an ArtifactError/DlcError "
                             "is a finding")
    parser.add_argument("--quiet", action="store_true", help="no progress lines, only findings and the summary")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main()
    from dlc import progress
    from dlc.errors import DlcError

    try:
        with progress.reporting(progress.for_stream(sys.stderr, args.quiet)):
            return _campaign(args)
    except DlcError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def _campaign(args) -> int:
    # Thousands of one-off models: do not fill the cache. For the campaign only: main() runs
    # in-process too (the tests, `dlc fuzz`), and the caller's later compiles keep their cache.
    saved = os.environ.get("DLC_CACHE")
    os.environ.setdefault("DLC_CACHE", "0")
    try:
        return _run_campaign(args)
    finally:
        if saved is None:
            os.environ.pop("DLC_CACHE", None)


def _run_campaign(args) -> int:
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    configs = tuple(c for c in ALL_CONFIGS if c[0] in targets)
    unknown = set(targets) - {c[0] for c in ALL_CONFIGS}
    if unknown or not configs:
        print(f"error: unknown targets {sorted(unknown)}; choose from cpu, reference, npu-sim", file=sys.stderr)
        return 1
    if not args.artifacts:  # onnxruntime is the oracle: without it every model would "fail"
        from dlc.tools.oracle import import_onnxruntime

        import_onnxruntime()
    if args.replay is not None:
        failing = 0
        for path in args.replay or [p for p, _ in corpus_entries(args.corpus)]:
            info = json.loads(path.with_suffix(".json").read_text()) if path.with_suffix(".json").exists() else {}
            findings = replay(path, info, configs)
            failing += any(f.kind not in ORACLE_KINDS for f in findings)
            print(f"{path}: " + ("ok" if not findings else "; ".join(
                f"{f.kind} on {f.config}: {f.message[:300]}" for f in findings)))
        return 1 if failing else 0
    minutes = args.minutes if args.minutes is not None or args.cases is not None else 1.0
    if args.artifacts:
        from dlc.tools.fuzz.artifacts import fuzz_artifacts

        result = fuzz_artifacts(minutes=minutes, cases=args.cases, seed=args.seed,
                                corpus=None if args.no_save else args.corpus,
                                log=lambda line: print(line, flush=True), quiet=args.quiet)
        print(result.report())
        return 1 if result.findings else 0
    summary = fuzz(minutes=minutes, cases=args.cases, seed=args.seed, configs=configs,
                   corpus=None if args.no_save else args.corpus, isolate=not args.no_isolate,
                   max_nodes=args.max_nodes, threads=args.threads, hostile=args.hostile,
                   log=lambda line: print(line, flush=True), progress_every_s=None if args.quiet else PROGRESS_EVERY_S)
    print(summary.report())
    return 1 if summary.failing else 0
