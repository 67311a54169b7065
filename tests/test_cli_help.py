"""Every option of every command says what it does and what its default is; devices and dtypes are
checked the same way everywhere (the parser is walked, so a new option cannot forget)."""

from __future__ import annotations

import argparse

import pytest

from spatialforge.cli import options
from spatialforge.cli.main import build_parser


def _commands(parser: argparse.ArgumentParser, prefix: str = "spatialforge"):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{prefix} {name}")


COMMANDS = dict(_commands(build_parser()))
FLAGS = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction, argparse._VersionAction,
         argparse._StoreConstAction)


def _options(parser):
    return [a for a in parser._actions if a.option_strings and not isinstance(a, FLAGS)]


def test_the_walk_finds_every_command():
    assert {"spatialforge generate", "spatialforge eval run", "spatialforge afford train", "spatialforge train",
            "spatialforge synth", "spatialforge show"} <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_has_help_and_shows_its_default(name):
    parser = COMMANDS[name]
    formatter = parser._get_formatter()  # the HelpFormatter that adds '(default: X)'
    missing, no_default = [], []
    for a in parser._actions:
        if isinstance(a, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
            continue
        if not (a.help or "").strip():
            missing.append(a.option_strings[0] if a.option_strings else a.dest)
            continue
        if a in _options(parser) and not a.required and "default" not in formatter._get_help_string(a).lower():
            no_default.append(a.option_strings[0])
    assert not missing, f"{name}: options without help: {missing}"
    assert not no_default, f"{name}: options whose help does not show the default: {no_default}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_device_and_dtype_are_the_same_everywhere(name):
    for a in COMMANDS[name]._actions:
        if a.dest == "device":
            assert a.type is options.device, f"{name} {a.option_strings}: use cli.options.device"
        if a.dest == "dtype":
            assert a.choices is not None and set(options.DTYPES) <= set(a.choices), f"{name}: --dtype choices"


def test_help_renders_for_every_command(capsys):
    for name, parser in COMMANDS.items():
        parser.print_help()
        assert capsys.readouterr().out.startswith(f"usage: {name}")
