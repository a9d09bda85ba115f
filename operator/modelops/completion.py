"""Shell completion for the kubectl plugin, written from its argparse parser (pure: text in, text out).

The script completes the `kubectl-modelops` command: its sub-commands, each one's flags, and the values of flags
and arguments that have a fixed set of choices (`-o json|plain`, `completion bash|zsh`). zsh runs the bash
function through its bashcompinit.
"""

from __future__ import annotations

import argparse

FUNCTION = "_kubectl_modelops"
COMMAND = "kubectl-modelops"


def _words(choices) -> str:
    return " ".join(str(choice) for choice in choices)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def _offered(parser: argparse.ArgumentParser) -> list[str]:
    """What may follow within `parser`'s own part of the command line: its flags, and its arguments' choices."""
    words: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            words += action.option_strings
        elif action.choices is not None and all(isinstance(choice, str) for choice in action.choices):
            words += action.choices
    return words


def _valued(parsers: list[argparse.ArgumentParser]) -> dict[str, str]:
    """Each flag that takes one of fixed choices, as a case pattern of its spellings (`-o|--output`): those choices."""
    return {"|".join(action.option_strings): _words(action.choices) for parser in parsers
            for action in parser._actions if action.option_strings and action.choices is not None}


def bash(parser: argparse.ArgumentParser) -> str:
    """A bash completion script for `parser` (the plugin's: sub-commands under its top level)."""
    commands = _subcommands(parser)
    valued = _valued([parser, *commands.values()])
    arms = "\n".join(f'        {name}) words="{_words(_offered(sub))}" ;;' for name, sub in commands.items())
    values = "\n".join(f'        {pattern}) COMPREPLY=($(compgen -W "{choices}" -- "$cur")); return ;;'
                       for pattern, choices in valued.items())
    return f"""# bash completion for {COMMAND}: source it, e.g. from ~/.bashrc: source <({COMMAND} completion bash)
{FUNCTION}() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}" command="" words="" i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            {"|".join(commands)}) command="${{COMP_WORDS[i]}}"; break ;;
        esac
    done
    case "$prev" in
{values}
    esac
    case "$command" in
        "") words="{_words(_offered(parser))} {_words(commands)}" ;;
{arms}
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
complete -F {FUNCTION} {COMMAND}
"""


def zsh(parser: argparse.ArgumentParser) -> str:
    """A zsh completion script for `parser`: the bash one, run by zsh's bash-completion emulation."""
    return (f"# zsh completion for {COMMAND}: source it, e.g. from ~/.zshrc: source <({COMMAND} completion zsh)\n"
            "autoload -U +X compinit && compinit\nautoload -U +X bashcompinit && bashcompinit\n" + bash(parser))


SHELLS = {"bash": bash, "zsh": zsh}
