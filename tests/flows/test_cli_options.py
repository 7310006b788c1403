"""The CLI's options come from the flows' signatures: read right, and fed back to the flows."""

from __future__ import annotations

import importlib
import inspect
import typing
from pathlib import Path

import pytest

from flows.cli import build_parser
from flows.cli_options import COMMANDS, Group
from flows.cli_parser import flow_kwargs, flow_parameters

FLOW_COMMANDS = {name: command for name, command in COMMANDS.items() if command.flow}


def _flow(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(f"flows.{module}"), name).fn


@pytest.mark.parametrize("name", sorted(FLOW_COMMANDS))
def test_the_signature_read_from_source_is_the_flows_own(name):
    """``ast`` reads what ``inspect`` sees: names, order, which are required, plain defaults."""
    spec = FLOW_COMMANDS[name].flow
    signature = inspect.signature(_flow(spec))
    read = flow_parameters(spec)
    assert list(read) == list(signature.parameters)
    for param_name, param in signature.parameters.items():
        assert read[param_name].required == (param.default is inspect.Parameter.empty)
        if isinstance(param.default, bool):
            assert read[param_name].default is param.default


@pytest.mark.parametrize("name", sorted(FLOW_COMMANDS))
def test_choices_are_the_flows_literal_values(name):
    command = FLOW_COMMANDS[name]
    hints = typing.get_type_hints(_flow(command.flow))
    options = [o for item in command.options
               for o in (item.options if isinstance(item, Group) else (item,))]
    for opt in options:
        if opt.choices:
            assert opt.choices == typing.get_args(hints[opt.param]), opt.param


def _call(argv: list[str], workspace: Path) -> dict:
    args = build_parser().parse_args(argv)
    args.workspace = workspace
    return flow_kwargs(args)


def test_only_what_is_given_reaches_the_flow(tmp_path):
    """Unset options are left out: the flow's defaults (and the settings) decide."""
    assert _call(["evaluate", "pairs.csv"], tmp_path) == {
        "workspace": str(tmp_path), "pairs": "pairs.csv"}
    kwargs = _call(["train-recognizer", "--no-synthetic", "--steps", "3", "--dataset", "a",
                    "--dataset", "b", "--synthetic-style", "s", "--device", "cpu"], tmp_path)
    spec = kwargs.pop("identity_encoder")
    assert kwargs == {"workspace": str(tmp_path), "include_synthetic": False, "steps": 3,
                      "dataset": ["a", "b"], "synthetic_styles": ["s"], "device": "cpu",
                      "drop_test_identities": False, "resume": False}
    assert (spec.role, spec.name, spec.device) == ("identity", "sface", "cpu")
    assert _call(["prune", "--keep", "2"], tmp_path) == {
        "workspace": str(tmp_path), "keep_published": 2, "dry_run": False}


def test_a_mapping_parameter_is_a_repeatable_key_value_option(tmp_path, capsys):
    kwargs = _call(["generate", "--style-eta", "cufsf-artist=3", "--style-eta",
                    "forensic-artist=1.5"], tmp_path)
    assert kwargs["style_eta"] == {"cufsf-artist": 3.0, "forensic-artist": 1.5}
    for bad in ("cufsf-artist", "cufsf-artist=three", "=3"):
        with pytest.raises(SystemExit):
            _call(["generate", "--style-eta", bad], tmp_path)
        assert f"--style-eta: {bad!r}" in capsys.readouterr().err  # names what it refused


@pytest.mark.parametrize("name", sorted(FLOW_COMMANDS))
def test_every_flow_parameter_has_an_option(name):
    """A parameter added to a flow shows up in its command (give it a help text in the
    table); the workspace is the global option, encoders come from the encoder options."""
    defaults = build_parser()._subparsers._group_actions[0].choices[name]._defaults
    covered = {param for _, param, _ in defaults["flow_args"]} | {"workspace"} | {
        f"{role}_encoder" for role in defaults.get("encoder_roles", ())}
    assert covered == set(flow_parameters(FLOW_COMMANDS[name].flow))
