#!/usr/bin/env python3
"""Runs one libFuzzer target: first over its seed corpus, then fuzzing for --time seconds on one
core, under the ASan/UBSan runtime it was built with. Prints the tier line the other tests print,
then libFuzzer's output, then one summary line:

    <name>: <N> runs in <S> s (<E> exec/s), corpus <C> files (<A> new), <result>

The seed directory is only read: new inputs go to --corpus (kept, tools/fuzz) or to a temporary
directory (the meson test). Crash, leak and timeout inputs go to --artifacts. Exit status 1 when
the target crashed, leaked, hit undefined behaviour or a FUZZ_CHECK, or ran nothing."""
import argparse
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time


def host_kind():
    """The host kind as the e2e tests name it (tests/e2e/common.py); fuzzing itself needs no KVM."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "e2e"))
    try:
        import common  # noqa: E402  (the e2e helpers)
        return common.host_kind()
    except Exception:  # The tier line must not fail the test.
        return "this host"


def sanitizer_environment():
    environment = dict(os.environ)
    # UB is fatal (the libraries are built with recoverable UBSan checks), leaks are errors.
    environment["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1:" + environment.get("UBSAN_OPTIONS", "")
    environment["ASAN_OPTIONS"] = "detect_leaks=1:" + environment.get("ASAN_OPTIONS", "")
    return environment


def run(fuzzer, name, seeds, corpus, seconds, artifacts, extra):
    artifacts.mkdir(parents=True, exist_ok=True)
    corpus.mkdir(parents=True, exist_ok=True)
    before = len(list(corpus.iterdir()))
    command = [str(fuzzer), f"-max_total_time={seconds}", "-print_final_stats=1", "-timeout=25",
               "-rss_limit_mb=2048", f"-artifact_prefix={artifacts}/", *extra, str(corpus)]
    if seeds.is_dir():
        command.append(str(seeds))
    print("$ " + " ".join(command), flush=True)
    started = time.monotonic()
    process = subprocess.run(command, env=sanitizer_environment(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, errors="replace")
    elapsed = time.monotonic() - started
    output = process.stdout
    sys.stdout.write(output)
    stats = dict(re.findall(r"^stat::(\w+):\s+(\d+)", output, re.MULTILINE))
    runs = int(stats.get("number_of_executed_units", 0))
    rate = int(stats.get("average_exec_per_sec", 0))
    added = len(list(corpus.iterdir())) - before
    seed_count = len(list(seeds.iterdir())) if seeds.is_dir() else 0
    if process.returncode != 0:
        found = sorted(str(path) for path in artifacts.iterdir())
        result = f"FAILED (exit {process.returncode}; artifacts: {', '.join(found) or 'none'})"
    elif runs == 0:
        result = "FAILED (no runs)"
    else:
        result = "no crashes, leaks or UB"
    print(f"{name}: {runs} runs in {elapsed:.0f} s ({rate} exec/s), corpus "
          f"{seed_count + before + added} files ({added} new), {result}", flush=True)
    return 0 if result.startswith("no crashes") else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fuzzer", type=pathlib.Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--seeds", type=pathlib.Path, required=True, help="seed corpus (read only)")
    parser.add_argument("--corpus", type=pathlib.Path, help="working corpus (default: a temporary one)")
    parser.add_argument("--time", type=int, default=10, help="seconds of fuzzing")
    parser.add_argument("--artifacts", type=pathlib.Path, required=True)
    parser.add_argument("extra", nargs="*", help="more libFuzzer flags")
    arguments = parser.parse_args()
    print(f"tier 1 (fuzz, no KVM): {arguments.name} on {host_kind()}", flush=True)
    if arguments.corpus:
        return run(arguments.fuzzer, arguments.name, arguments.seeds, arguments.corpus,
                   arguments.time, arguments.artifacts, arguments.extra)
    with tempfile.TemporaryDirectory(prefix=f"ember-fuzz-{arguments.name}-") as scratch:
        return run(arguments.fuzzer, arguments.name, arguments.seeds, pathlib.Path(scratch),
                   arguments.time, arguments.artifacts, arguments.extra)


if __name__ == "__main__":
    sys.exit(main())
