"""Sphinx extension: the configuration and command-line references are generated from the code, so they
cannot drift from it. A page holding ``<!-- generated: knobs -->`` gets the table of every knob declared in
:mod:`segdeconv.schema`; ``<!-- generated: commands -->`` the ``segdeconv`` subcommands."""
from __future__ import annotations

import re
from typing import Any


def knobs_table() -> str:
    """Every knob, one section per config group (``trainer``, ``dataset``, …, then the other commands'), each
    a definition: key, what it does, allowed values, default and resume policy
    (``segdeconv.schema.reference_rows``)."""
    from segdeconv.schema import reference_rows

    sections: dict[str, list[str]] = {}
    for key, what, default, rule, doc in reference_rows():
        task, _, plain = key.rpartition(":")
        head = plain.split(".")[0] if "." in plain and not task else (f"{task} only" if task else "other commands")
        facts = [f"allowed: {what}", f"default `{default}`" if default != "(per preset)" else "default: per preset"]
        facts += [f"on resume: **{rule}**"] if rule != "—" else []
        sections.setdefault(head, []).append(f"`{key}`\n: {doc}. <br>{' · '.join(facts)}\n")
    return "\n".join(f"## {head}\n\n" + "\n".join(items) for head, items in sections.items())


def commands_table() -> str:
    """``segdeconv <command>``: its config file and what it does (``segdeconv.tasks.commands.COMMANDS``)."""
    from segdeconv.tasks.commands import COMMANDS

    lines = ["| command | root script | config | what it does |", "|---|---|---|---|"]
    for name, c in COMMANDS.items():
        script = "check_data.py" if name == "check" else f"{name}.py"
        lines.append(f"| `segdeconv {name}` | `python {script}` | `conf/{c.config}.yaml` | {c.summary} |")
    return "\n".join(lines)


GENERATED = {"<!-- generated: knobs -->": knobs_table, "<!-- generated: commands -->": commands_table}


def fill(app: Any, docname: str, source: list[str]) -> None:
    """``source-read``: replace each marker in the page's Markdown by its generated table."""
    # tests/test_docs.py's "# doc-test: skip (reason)" first lines are for the test, not the reader
    source[0] = re.sub(r"^# doc-test:[^\n]*\n", "", source[0], flags=re.M)
    for marker, make in GENERATED.items():
        if marker in source[0]:
            source[0] = source[0].replace(marker, make())


def setup(app: Any) -> dict[str, Any]:
    app.connect("source-read", fill)
    return {"parallel_read_safe": True}
