"""argparse from ``flows/cli_options.py`` and the flows' own signatures, and back to a flow call.

Signatures are read from the flows' source with ``ast``, not by importing the flows: that
would import Prefect, and ``--help`` must stay instant. Each option records the flow parameter
it feeds (``args.flow_args``); ``flow_kwargs`` turns a parsed command line into the keyword
arguments of the flow call, leaving out what was not given so that the flow's own defaults
(and through them the settings) apply.
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from flows.cli_options import (
    COMMANDS,
    ENCODER_SHARED,
    ENCODERS,
    FLAGS,
    Command,
    Group,
    Opt,
    encoder_options,
)

FLOWS = Path(__file__).parent
ROLES = ("identity", "image", "text")


@dataclass(frozen=True)
class Param:
    annotation: str
    required: bool  # no default
    default: Any = None  # the literal default, where it is one


@cache
def flow_parameters(flow: str) -> dict[str, Param]:
    """``{name: Param}`` of the function ``module:function`` in flows/, read from its source."""
    module, name = flow.split(":")
    tree = ast.parse((FLOWS / f"{module}.py").read_text(encoding="utf-8"))
    function = next(node for node in tree.body
                    if isinstance(node, ast.FunctionDef) and node.name == name)
    spec = function.args
    positional = spec.posonlyargs + spec.args
    defaults = [None] * (len(positional) - len(spec.defaults)) + spec.defaults
    found = {}
    for arg, default in [*zip(positional, defaults, strict=True),
                         *zip(spec.kwonlyargs, spec.kw_defaults, strict=True)]:
        try:
            value = None if default is None else ast.literal_eval(default)
        except ValueError:  # a named constant: only the flow needs its value
            value = None
        found[arg.arg] = Param(ast.unparse(arg.annotation), default is None, value)
    return found


class KeyValue(tuple):
    """One ``KEY=VALUE`` of a repeatable mapping option (``dict[str, float]`` parameters)."""


def key_value(kind: Callable[[str], Any]) -> Callable[[str], KeyValue]:
    def parse(text: str) -> KeyValue:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
        try:
            return KeyValue((key, kind(value)))
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{text!r}: {error}") from error
    return parse


def _kind(annotation: str, opt: Opt, where: str) -> Any:
    """argparse's type or action for a parameter's annotation."""
    parts = {part.strip() for part in annotation.split("|")} - {"None"}
    if any(part.startswith("list[") for part in parts):
        return "append"
    if parts == {"dict[str, float]"}:
        return "mapping"
    kinds = {"bool": "flag", "int": int, "float": float, "str": None}
    if len(parts) == 1 and (kind := next(iter(parts))) in kinds:
        return kinds[kind]
    if opt.choices:  # a Literal alias
        return None
    raise TypeError(f"{where}: no command-line form for {opt.param}: {annotation}")


def _add(target: Any, opt: Opt, param: Param | None, where: str) -> tuple[str, str, bool]:
    """Add one option; return (namespace name, flow parameter, inverted)."""
    kind = opt.kind if param is None else _kind(param.annotation, opt, where)
    inverted = param is not None and kind == "flag" and param.default is True
    options: dict[str, Any] = {"help": opt.help}
    if opt.metavar:
        options["metavar"] = opt.metavar
    if opt.choices:
        options["choices"] = list(opt.choices)
    if kind == "flag":
        options["action"] = "store_true"
    elif kind == "append":
        options["action"] = "append"
    elif kind == "mapping":
        options.update(action="append", type=key_value(float))
    elif kind is not None:
        options["type"] = kind
    if param is None and opt.default is not None:
        options["default"] = opt.default
    required = opt.required or (param is not None and param.required)
    if opt.positional or (param is not None and param.required and not opt.flag
                          and opt.param not in FLAGS):
        if options.pop("action", None) == "append":
            options["nargs"] = "+" if required else "*"
        action = target.add_argument(opt.param, **options)
    else:
        flag = opt.flag or FLAGS.get(opt.param) or "--" + opt.param.replace("_", "-")
        action = target.add_argument(flag, required=required, **options)
    return action.dest, opt.param, inverted


def _encoder_group(parser: argparse.ArgumentParser, params: dict[str, Param]) -> tuple:
    roles = tuple(role for role in ROLES if f"{role}_encoder" in params)
    parser.set_defaults(encoder_roles=roles)
    group = parser.add_argument_group(ENCODERS.title)
    for opt in [*(o for role in roles for o in encoder_options(role)), *ENCODER_SHARED]:
        _add(group, opt, None, "")
    # A flow's own ``device`` takes --device too (beside the encoders' specs).
    return (("device", "device", False),) if "device" in params else ()


Handler = Callable[[argparse.Namespace], int]
HANDLERS: dict[str, Handler] = {}


def command(name: str) -> Callable[[Handler], Handler]:
    """Register the function that runs ``clip4sketch NAME`` (its options: flows/cli_options.py).

    Each imports its flow, and with it Prefect, when it runs: ``--help`` stays instant.
    """
    def register(handler: Handler) -> Handler:
        HANDLERS[name] = handler
        return handler
    return register


def add_command(commands: Any, name: str, spec: Command, handler: Handler,
                parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """One sub-command: its options in the table's order, every flow parameter covered."""
    sub = commands.add_parser(name, help=spec.help, description=spec.help,
                              parents=parents)
    params = flow_parameters(spec.flow) if spec.flow else {}
    listed = {o.param for item in spec.options
              for o in (item.options if isinstance(item, Group) else (item,))}
    encoders = any(p.endswith("_encoder") for p in params)
    # A flow parameter the table does not list still gets its option (without help).
    unlisted = [Opt(p) for p in params if p not in listed and p != "workspace"
                and not p.endswith("_encoder") and not (encoders and p == "device")]
    items = [*spec.options, *unlisted]
    if encoders and ENCODERS not in items:
        items.append(ENCODERS)
    bound: list[tuple[str, str, bool]] = []
    for item in items:
        if item is ENCODERS:
            bound += _encoder_group(sub, params)
            continue
        target = sub.add_argument_group(item.title) if isinstance(item, Group) else sub
        for opt in item.options if isinstance(item, Group) else (item,):
            if spec.flow and opt.param not in params:
                raise TypeError(f"{name}: {spec.flow} has no parameter {opt.param}")
            bound.append(_add(target, opt, params.get(opt.param), name))
    sub.set_defaults(handler=handler, runs_flow=spec.runs_flow or bool(spec.flow),
                     flow_args=tuple(bound) if spec.flow else ())
    return sub


def add_commands(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    for name, spec in COMMANDS.items():
        add_command(commands, name, spec, HANDLERS[name], parents)


def encoder_specs(args: argparse.Namespace) -> dict:
    """``{"<role>_encoder": EncoderSpec}`` for each role an encoder option was given for."""
    # pydantic models: loaded when a command runs, not for --help.
    from schemas.encoders import EncoderSpec
    from schemas.settings import load_settings

    specs = {}
    for role in getattr(args, "encoder_roles", ()):
        name = getattr(args, f"{role}_encoder")
        weights, arch = getattr(args, f"{role}_weights"), getattr(args, f"{role}_arch")
        config = args.image_config if role == "image" else None
        if name or weights or arch or config or args.device:
            default = getattr(load_settings(), f"{role}_encoder")
            specs[f"{role}_encoder"] = EncoderSpec(
                role=role, name=name or default, weights=weights, arch=arch, config=config,
                device=args.device)
    return specs


def flow_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The flow call of a parsed command: what was given, the workspace and encoder specs."""
    kwargs: dict[str, Any] = {"workspace": str(args.workspace)}
    for dest, param, inverted in args.flow_args:
        value = getattr(args, dest)
        if isinstance(value, list) and value and all(isinstance(v, KeyValue) for v in value):
            value = dict(value)
        if value is not None:
            kwargs[param] = not value if inverted else value
    return kwargs | encoder_specs(args)
