"""docs/benchmarks.md and docs/bridge.md against what they document, so the pages cannot drift:
- every command in a code block uses only flags of the command line it runs;
- every `--flag` the pages name exists in one of the documented command lines;
- every option table ("| `benchmarks/run.py` option | default | meaning |") lists all of its command's
  options, and each default it states is the parser's;
- every results file the pages link exists, and the results tables they quote match those files.
The parsers are the commands' own: each entry point is called with argparse's parse_args intercepted."""

from __future__ import annotations

import argparse
import json
import re
import shlex
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "docs" / "benchmarks.md", ROOT / "docs" / "bridge.md"]


class _Parsed(BaseException):
    """Raised in place of parsing: the parser is all the test needs (BaseException: no CLI wrapper catches it)."""


def _entry(name: str):
    """The function that builds `name`'s parser and parses argv with it."""
    import importlib

    if name == "neuralcpu rlcp":
        from neuralcpu.rlcp import parse_args

        return parse_args
    module = importlib.import_module(name)
    return getattr(module, "parse_args", None) or module.main


@cache
def parser_of(name: str) -> argparse.ArgumentParser:
    """The ArgumentParser of the command line `name` ("benchmarks.run", "symbolic_ram init", ...)."""
    if name.startswith("symbolic_ram "):
        from symbolic_ram.cli import build_parser

        commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
        return commands.choices[name.split()[1]]
    seen: list[argparse.ArgumentParser] = []
    original = argparse.ArgumentParser.parse_args

    def grab(self, args=None, namespace=None):
        seen.append(self)
        raise _Parsed

    argparse.ArgumentParser.parse_args = grab
    try:
        _entry(name)([])
    except _Parsed:
        pass
    finally:
        argparse.ArgumentParser.parse_args = original
    assert seen, f"{name}: no parser was built"
    return seen[0]


def options(name: str) -> dict[str, argparse.Action]:
    """{option string: action} of a command line, without -h/--help."""
    return {o: a for a in parser_of(name)._actions for o in a.option_strings if o not in ("-h", "--help")}


def code_commands(text: str) -> list[tuple[str, list[str]]]:
    """(command line name, its flags) for every project command in the page's code blocks."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#\s.*$", "", line)
            for part in line.split("&&"):
                m = (re.search(r"-m (symbolic_ram \w+|neuralcpu rlcp)\b", part)
                     or re.search(r"-m ((?:benchmarks|bridge)\.\w+)", part)
                     or re.search(r"\b((?:benchmarks|bridge)/\w+)\.py", part))
                if not m:
                    continue
                name = m.group(1).replace("/", ".")
                flags = [t.split("=")[0] for t in shlex.split(part[m.end():]) if re.fullmatch(r"--?[a-zA-Z][\w-]*(=.*)?", t)]
                out.append((name, flags))
    return out


def option_tables(text: str) -> list[tuple[str, list[tuple[list[str], str]]]]:
    """(command line name, [(the row's flags, its default cell)]) for every "| `cmd` option | default |" table."""
    tables = []
    for m in re.finditer(r"^\| `([^`]+)` option \| default \| meaning \|\n\|[-|]+\|\n((?:\|.*\n)+)", text, re.M):
        name = re.sub(r"\.py$", "", m.group(1)).replace("/", ".")
        rows = []
        for row in m.group(2).splitlines():
            cells = [c.strip() for c in row.strip("|").split(" | ")]
            rows.append((re.findall(r"`(--?[a-zA-Z][\w-]*)", cells[0]), cells[1]))
        tables.append((name, rows))
    return tables


def states_default(cell: str, action: argparse.Action) -> bool:
    """Whether a table's default cell says what the parser does when the option is not given."""
    cell, default = cell.strip("`"), action.default
    if action.required:
        return cell == "required"
    if isinstance(action, argparse.BooleanOptionalAction):
        return cell == ("on" if default else "off")
    if isinstance(action, argparse._StoreTrueAction):
        return cell == "off"
    if default is None or (isinstance(default, str) and Path(default).is_absolute()):
        return True  # described in words ("the store an RLCP run dir names")
    if isinstance(default, list):
        default = " ".join(map(str, default))
    if isinstance(default, (int, float)):
        try:
            return float(cell) == float(default)
        except ValueError:
            return False
    return cell == str(default)


@pytest.fixture(scope="module", params=PAGES, ids=lambda p: p.name)
def page(request) -> str:
    return request.param.read_text(encoding="utf-8")


def test_every_command_uses_only_its_own_flags(page):
    commands = code_commands(page)
    assert len(commands) >= 6  # the pages show their commands; a format change must not pass silently
    wrong = [(name, flag) for name, flags in commands for flag in flags if flag not in options(name)]
    assert wrong == []


def test_every_flag_the_page_names_exists(page):
    # the commands the pages run, and the RLCP command whose run dirs they take ("--method ...")
    names = {n for p in PAGES for n, _ in code_commands(p.read_text(encoding="utf-8"))} | {"neuralcpu rlcp"}
    known = {o for name in names for o in options(name)} | {"--help"}
    named = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*[a-z0-9])", page))
    assert sorted(named - known) == []


def test_option_tables_list_every_option_with_the_parsers_default(page):
    tables = option_tables(page)
    assert len(tables) >= 4
    for name, rows in tables:
        opts = options(name)
        listed = [flag for flags, _ in rows for flag in flags]
        assert sorted(set(opts) - set(listed)) == [], f"{name}: options the table leaves out"
        assert sorted(set(listed) - set(opts)) == [], f"{name}: the table lists options the command lacks"
        wrong = [(flag, cell, opts[flag].default) for flags, cell in rows for flag in flags
                 if not states_default(cell, opts[flag])]
        assert wrong == [], f"{name}: defaults the table misstates"


def test_linked_results_files_exist(page):
    links = re.findall(r"\]\((results/[^)]+)\)", page)
    assert links and [link for link in links if not (ROOT / "docs" / link).is_file()] == []


def test_the_generation_table_is_the_committed_file():
    text = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    data = json.loads((ROOT / "docs" / "results" / "generation_bench.json").read_text())
    table = re.search(r"^\| mode \| seconds \| tokens \| tokens/s \| x HF b8 \| differing \|\n\|[-|]+\|\n((?:\|.*\n)+)",
                      text, re.M)
    assert table, "the generation table is gone from docs/benchmarks.md"
    want = [f"| {r['mode']} | {r['seconds']:.1f} | {r['tokens']} | {r['tokens_per_s']:.1f} | {r['ratio']:.2f} | "
            f"{r['differing']} |" for r in data["results"]]
    assert table.group(1).splitlines() == want
    prose = " ".join(text.split())
    assert f"{data['n']} test prompts" in prose and f"cap {data['max_new_tokens']}" in prose


@pytest.mark.parametrize("model", ["smollm2-135m", "qwen2.5-coder-0.5b", "heldout_qwen2.5-coder-0.5b",
                                   "heldout_rerun_qwen2.5-coder-0.5b", "heldout2_qwen2.5-coder-0.5b", "forget_smollm2-135m",
                                   "forget_rlcp-smollm2-135m", "heldout_forget_smollm2-135m",
                                   "heldout_forget_rlcp-smollm2-135m", "heldout3_qwen2.5-coder-0.5b",
                                   "heldout3_forget_smollm2-135m", "heldout3_forget_rlcp-recall-smollm2-135m",
                                   "heldout4_qwen2.5-coder-0.5b", "heldout5_qwen2.5-coder-0.5b",
                                   "heldout6_qwen2.5-coder-0.5b", "heldout7_qwen2.5-coder-0.5b",
                                   "heldout8_qwen2.5-coder-0.5b", "heldout9_qwen2.5-coder-0.5b",
                                   "heldout9_smollm2-135m", "heldout10_qwen2.5-coder-0.5b",
                                   "heldout11_qwen2.5-coder-0.5b",
                                   "heldout12_qwen2.5-coder-0.5b", "heldout13_qwen2.5-coder-0.5b",
                                   "heldout14_qwen2.5-coder-0.5b", "heldout15_qwen2.5-coder-0.5b",
                                   "elements_qwen2.5-coder-0.5b"])
def test_the_natural_questions_table_is_the_committed_file(model):
    text = (ROOT / "docs" / "bridge.md").read_text(encoding="utf-8")
    committed = (ROOT / "docs" / "results" / f"natural_questions_{model}.md").read_text(encoding="utf-8")
    link = text.index(f"(results/natural_questions_{model}.md)")
    table = re.compile(r"^(\| layout \| single-hop acc .*\n\|[-|]+\|\n(?:\|.*\n)+)", re.M).search(text, link)
    assert table, f"the natural-question table of {model} is gone from docs/bridge.md"
    assert table.group(1) in committed
