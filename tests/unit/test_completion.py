"""`kubectl modelops completion bash|zsh` and `kubectl modelops version`."""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import re
import subprocess

import pytest

from modelops.cli import kubectl_plugin, plugin_parser


def script(shell, capsys):
    assert kubectl_plugin(["completion", shell]) == 0
    return capsys.readouterr().out


def subcommands():
    [action] = [a for a in plugin_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_the_script_names_every_subcommand_and_bash_accepts_it(shell, capsys):
    text = script(shell, capsys)
    [recognised] = re.findall(r'case "\$\{COMP_WORDS\[i\]\}" in\n\s+(\S+)\)', text)
    assert recognised.split("|") == list(subcommands())
    for name in subcommands():
        assert f"        {name}) words=" in text
    checked = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True)
    assert checked.returncode == 0, checked.stderr


def complete(text, *lines):
    """What the sourced script offers for each command line (words; the last one is being typed)."""
    calls = "".join(f'COMP_WORDS=({" ".join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}; '
                    f'_kubectl_modelops; echo "${{COMPREPLY[*]}}"\n' for words in lines)
    done = subprocess.run(["bash", "-c", text + calls], text=True, capture_output=True)
    assert done.returncode == 0, done.stderr
    return [set(line.split()) for line in done.stdout.splitlines()]


def test_bash_completes_commands_their_flags_and_the_values_of_choices(capsys):
    text = script("bash", capsys)
    got = complete(text, ("kubectl-modelops", "st"), ("kubectl-modelops", "-n", "prod", "get", "fraud", "--w"),
                   ("kubectl-modelops", "list", "-o", ""), ("kubectl-modelops", "history", "--output", "j"),
                   ("kubectl-modelops", "completion", "z"), ("kubectl-modelops", "rollback", "fraud", "--t"),
                   ("kubectl-modelops", "--n"))
    assert got == [{"status"}, {"--watch"}, {"json", "plain"}, {"json"}, {"zsh"}, {"--to"},
                   {"--namespace"}]


def test_every_flag_of_every_subcommand_is_offered_after_it(capsys):
    commands = subcommands()
    got = complete(script("bash", capsys), *[("kubectl-modelops", name, "-") for name in commands])
    for (name, sub), offered in zip(commands.items(), got):
        assert offered == {o for action in sub._actions for o in action.option_strings}, name


def test_version_names_the_package_and_python(capsys, monkeypatch):
    assert kubectl_plugin(["version"]) == 0
    python = platform.python_version()
    assert capsys.readouterr().out == f"kubectl-modelops {importlib.metadata.version('modelops')} (Python {python})\n"

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    kubectl_plugin(["version"])
    assert capsys.readouterr().out == f"kubectl-modelops unknown (not installed) (Python {python})\n"
