"""The `chip` command: a thin dispatcher to each subcommand's `main(argv)`.

    chip train --config recipe.yaml [--FIELD VALUE ...]
    chip demo [--quick] [--output_dir DIR]
    chip data check FILE
    chip data view FILE --output view.html
    chip eval --bench NAME ...
    chip pairs --model PATH --images DIR --annotations COCO_DIR --output DIR

Each subcommand lives in its own module and is imported only when called, so `chip --help`
stays fast and a broken optional dependency only affects the command that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from chip.compat import add_flag_aliases
from chip.errors import ChipError, ConfigError

# command words -> "module:function" taking argv and returning an exit code
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("train",): ("chip.training.cli:main", "CHiP / DPO preference training"),
    ("demo",): ("chip.demo.cli:main", "end-to-end run on the built-in synthetic world"),
    ("data", "check"): ("chip.data.cli:check_main", "validate a preference dataset"),
    ("data", "view"): ("chip.data.view:view_main", "a static page showing each preference pair"),
    ("data", "precompute"): ("chip.training.cli:precompute_main", "write a reference log-prob cache"),
    ("eval",): ("chip.evaluation.cli:main", "hallucination benchmarks"),
    ("pairs",): ("chip.pairs.cli:main", "preference pairs from your model's own samples, judged"),
    ("export",): ("chip.training.export:main", "merge a LoRA adapter into a standalone model"),
}


class OneLineParser(argparse.ArgumentParser):
    """argparse for chip's subcommands: mistakes are one `ConfigError` line, and every ``--a_b`` flag
    is also accepted as ``--a-b`` (and the other way round), so one spelling works everywhere."""

    def parse_known_args(self, args=None, namespace=None):
        add_flag_aliases(self, other_spelling)
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        raise ConfigError(f"{message} (see `{self.prog} --help`)")


def other_spelling(flag: str) -> str:
    """``--a_b`` -> ``--a-b`` and ``--a-b`` -> ``--a_b``."""
    body = flag[2:]
    return "--" + (body.replace("_", "-") if "_" in body else body.replace("-", "_"))


def _usage() -> str:
    lines = ["usage: chip COMMAND [ARGS]", "", "commands:"]
    for words, (_, help_text) in COMMANDS.items():
        lines.append(f"  {' '.join(words):<18} {help_text}")
    lines.append("")
    lines.append("Run `chip COMMAND --help` for a command's options.")
    return "\n".join(lines)


def _resolve(argv: list[str]) -> tuple[Callable[[list[str]], int], list[str]] | None:
    for words, (target, _) in sorted(COMMANDS.items(), key=lambda kv: -len(kv[0])):
        if tuple(argv[: len(words)]) == words:
            module_name, func_name = target.split(":")
            func = getattr(importlib.import_module(module_name), func_name)
            return func, argv[len(words) :]
    return None


def _say(line: str) -> None:
    """One line on stderr in a single write, so lines of processes sharing the stream (one per rank
    under ``accelerate launch``) never interleave mid-line (``print`` writes the newline apart)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    if argv[0] == "--version":
        from chip import __version__

        print(__version__)
        return 0
    resolved = _resolve(argv)
    if resolved is None:
        print(f"chip: unknown command {' '.join(argv[:2])!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    func, rest = resolved
    try:
        code = int(func(rest) or 0)
        _leave_process_group()
        return code
    except ChipError as err:
        # Expected user-facing failures: one clear line, no traceback.
        _say(f"chip: error: {err}")
        return err.exit_code
    except KeyboardInterrupt:
        _say("chip: interrupted")
        return 130


def _leave_process_group() -> None:
    """Close a launched run's process group before exit: left to the interpreter's teardown, gloo's
    threads sometimes abort a rank that has finished ("terminate called without an active exception",
    exit code -6, seen in a CI run of the FSDP LoRA test)."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
