"""Every place chip relies on a private hook of `transformers.Trainer`, `HfArgumentParser`, accelerate or argparse.

Checked against the versions in `CHECKED_AGAINST`. Each override below turns a private hook into a
public method that the rest of chip overrides or calls, so when one of these libraries changes,
this module is the one to read; nothing else in chip names their private methods. No dependency
is imported at module level: the mixins are placed before the library class they extend
(``class NonFiniteGuard(TrainerHooks, Trainer)``), and the lightest command can use the argparse
helpers without loading transformers.

Not gathered here: attributes transformers documents for model code to read (a config's
``_attn_implementation``, a model's ``_no_split_modules``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import Field
from typing import Any

CHECKED_AGAINST = {"transformers": "5.24.0", "accelerate": "1.16.0", "argparse": "Python 3.11"}


class TrainerHooks:
    """Mixed in before `transformers.Trainer`: the private hooks chip needs, as public methods."""

    def _get_grad_norm(self, model: Any, grad_norm: Any = None) -> Any:
        # Trainer's loop computes the accumulated gradient's norm here, before the optimizer step.
        return self.on_grad_norm(super()._get_grad_norm(model, grad_norm=grad_norm))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        # Trainer.train loads a checkpoint's weights here on --resume_from_checkpoint.
        if not self.load_checkpoint_weights(resume_from_checkpoint, model):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        # ``_internal_call``: True when Trainer saves a checkpoint, False for a final save.
        super().save_model(output_dir, _internal_call)
        self.after_save_model(output_dir, checkpoint=_internal_call)

    def _determine_best_metric(self, metrics: dict[str, float], trial: Any) -> bool:
        # Trainer decides here, after each evaluation, whether it is the best so far.
        return self.qualifies_for_best(metrics) and super()._determine_best_metric(metrics, trial)

    def qualifies_for_best(self, metrics: dict[str, float]) -> bool:
        """Whether an evaluation's ``metrics`` may become the best checkpoint at all."""
        return True

    def on_grad_norm(self, grad_norm: Any) -> Any:
        """The gradient norm before the optimizer step; what it returns is what Trainer logs."""
        return grad_norm

    def load_checkpoint_weights(self, folder: str, model: Any) -> bool:
        """Load a checkpoint's weights; False leaves the loading to Trainer."""
        return False

    def after_save_model(self, output_dir: str | None, checkpoint: bool) -> None:
        """Called after each `save_model`, for a checkpoint (``checkpoint``) or a final save."""

    def write_weights(self, output_dir: str | None, state_dict: dict) -> None:
        """Write ``state_dict`` as the model's weights in ``output_dir``, as Trainer's own save does."""
        self._save(output_dir, state_dict=state_dict)

    def save_optimizer_and_scheduler(self, folder: str) -> None:
        """Trainer's save of the optimizer and scheduler state into ``folder`` (collective)."""
        self._save_optimizer_and_scheduler(folder)

    def prepare_inputs(self, inputs: dict) -> dict:
        """A batch moved to the device the way Trainer's training step moves it."""
        return self._prepare_inputs(inputs)


class DataclassFieldHook:
    """Mixed in before `transformers.HfArgumentParser`: its per-field hook as `add_dataclass_field`."""

    def _parse_dataclass_field(self, parser: argparse.ArgumentParser, field: Field) -> None:
        # HfArgumentParser.__init__ adds each dataclass field's option through this hook.
        self.add_dataclass_field(parser, field)

    def add_dataclass_field(self, parser: Any, field: Field) -> None:
        """Add ``field``'s option to ``parser`` (the parser or one of its argument groups)."""
        super()._parse_dataclass_field(parser, field)


def accelerate_shared_state() -> dict:
    """accelerate's process-wide state, read before any `Accelerator` exists (`PartialState`)."""
    from accelerate.state import PartialState

    return PartialState._shared_state


def add_flag_aliases(parser: argparse.ArgumentParser, alias: Callable[[str], str]) -> None:
    """Accept ``alias(flag)`` for every ``--flag`` of ``parser`` and its groups, without listing it in --help."""
    for action in list(parser._actions):  # groups' options too: they share this table
        for flag in [f for f in action.option_strings if f.startswith("--")]:
            parser._option_string_actions.setdefault(alias(flag), action)


def own_options_group(parser: argparse.ArgumentParser) -> Any:
    """The group that holds the options added to ``parser`` itself (titled "options" in --help)."""
    return parser._optionals


def order_groups(parser: argparse.ArgumentParser, first: list) -> None:
    """List the argument groups ``first`` first in --help, then the others in their order."""
    parser._action_groups = first + [group for group in parser._action_groups if group not in first]


@contextmanager
def groups_hidden(parser: argparse.ArgumentParser, hidden: list) -> Iterator[None]:
    """Leave the argument groups ``hidden`` out of --help inside the block."""
    shown = parser._action_groups
    parser._action_groups = [group for group in shown if group not in hidden]
    try:
        yield
    finally:
        parser._action_groups = shown


class OnceHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help that names each option once: its other spelling in parentheses on the same line and its
    value once; a ``--no_X`` switch with its own line; no "(default: …)" where the help already says
    the default or the default is None."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings:
            return super()._format_action_invocation(action)
        first, *others = action.option_strings
        also = f" ({', '.join(others)})" if others else ""
        if action.nargs == 0:
            return first + also
        return f"{first}{also} {self._format_args(action, self._get_default_metavar_for_optional(action))}"

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        first = action.option_strings[0] if action.option_strings else ""
        if first.startswith("--no_") and action.nargs == 0:
            return f"Turn --{first[5:]} off (the same as --{first[5:]} false)."
        if action.default is None or action.default is argparse.SUPPRESS or "default" in text.lower():
            return text
        return super()._get_help_string(action)
