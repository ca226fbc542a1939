"""Every Python block in README.md and docs/ runs in CI (issue #12, item 7).

The runner is Sybil (https://sybil.readthedocs.io): maintained since 2017 and released several
times a year, it parses Markdown itself (fenced code blocks, and directives inside HTML comments,
which the rendered pages do not show), and it runs the blocks of a page in order in one shared
namespace, the way a reader follows a page. pytest-examples runs each block on its own and has no
in-page skip marker, and pytest-markdown-docs has no reason on its skip marker.

How a block runs depends on its opening line:

* ```` ```python ````: executed in the page's namespace, in page order, with the current
  directory in the page's own scratch project and ``BAIDU_SWAN_CLIENT_ID``, ``BAIDU_SWAN_SECRET``
  and ``BAIDU_SWAN_ENDPOINT`` pointing at a fake Baidu that accepts any code once
  (``auto_issue=True``), the same fake ``python -m baidu_swan_auth.testing`` serves.
* ```` ```python title="app.py" ````: also written to that file of the scratch project (a later
  block with the same title is appended to it), so that the page's tests can import it.
* ```` ```python title="test_app.py" ```` (a ``test_*.py`` title): a module of the reader's own
  test suite. It is written, not executed here: ``test_page_tests_pass_in_a_users_project`` runs
  the page's test modules in a ``pytester`` subprocess, as a user's project would run them:
  pytest-asyncio in its default strict mode, with the pytest settings of the page's
  ```` ```toml title="pyproject.toml" ```` block, else those shown in docs/how-to/testing.md.
* ``<!-- invisible-code-block: python ... -->``: a setup or a check the reader does not need to
  see, executed like a plain block.

A block that cannot run is a fragment, and says why right before it, invisible once rendered:

    <!-- skip: next "fragment: why it cannot run" -->

Fragments still have to compile (top-level ``await`` allowed), and a skip without a reason fails.
"""

from __future__ import annotations

import ast
import logging
import os
import re
import shutil
import subprocess
import sys
import unittest
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sybil import Document, Example, Region
from sybil.evaluators.python import pad
from sybil.parsers.abstract.lexers import LexerCollection
from sybil.parsers.markdown import SkipParser
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer, FencedCodeBlockLexer

from baidu_swan_auth.testing import FakeBaiduServer

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SETTINGS_PAGE = ROOT / "docs" / "how-to" / "testing.md"
ENV_VARS = ("BAIDU_SWAN_CLIENT_ID", "BAIDU_SWAN_SECRET", "BAIDU_SWAN_ENDPOINT")
TITLE = re.compile(r'\btitle="([^"]+)"')
TEST_FUNCTION = re.compile(r"^(?:async )?def test_", re.MULTILINE)

# Blocks on pages whose owners have not marked them yet: (page, a line of the block) -> reason.
@dataclass(frozen=True)
class Sample:
    """A code block: its language, its file name if it has a title, and its source."""

    language: str
    title: str | None
    source: Any  # a sybil Lexeme: a str that knows its line offset

    @property
    def is_test_module(self) -> bool:
        return self.title is not None and Path(self.title).name.startswith("test_")


class SampleParser:
    """Python blocks, visible or in an HTML comment, and ``toml`` blocks with a title."""

    def __init__(self) -> None:
        self.lexers = LexerCollection(
            [
                FencedCodeBlockLexer(
                    language=r".+", mapping={"language": "arguments", "source": "source"}
                ),
                DirectiveInHTMLCommentLexer(directive=r"invisible-code-block", arguments=r".+"),
            ]
        )

    def __call__(self, document: Document) -> Iterator[Region]:
        for region in self.lexers(document):
            language, _, rest = region.lexemes["arguments"].strip().partition(" ")
            match = TITLE.search(rest)
            title = match.group(1) if match else None
            if language == "python" or (language == "toml" and title):
                region.parsed = Sample(language, title, region.lexemes["source"])
                region.evaluator = evaluate_sample
                yield region


def relative(path: Path | str) -> str:
    return Path(path).relative_to(ROOT).as_posix()


def parse(path: Path) -> Document:
    return Document.parse(str(path), SkipParser(), SampleParser())


def samples(document: Document) -> list[tuple[Example, Sample]]:
    return [(ex, ex.parsed) for ex in document.examples() if isinstance(ex.parsed, Sample)]


@dataclass(repr=False)
class Page:
    """One page being run: its blocks, its scratch project and its fake Baidu."""

    path: Path
    project: Path
    document: Document = field(init=False)
    examples: list[Example] = field(init=False)
    fake: FakeBaiduServer | None = None
    done: int = 0
    failed_at: int | None = None

    def __post_init__(self) -> None:
        self.document = parse(self.path)
        self.examples = list(self.document.examples())
        self.document.namespace.update(__name__="__sample__", __file__=str(self.project / "x.py"))
        self.project.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"<Page {relative(self.path)}>"

    def written(self, title: str) -> Path:
        return self.project / title

    def run_through(self, index: int, monkeypatch: pytest.MonkeyPatch) -> None:
        """Evaluate the page's examples in order, up to and including ``index``."""
        __tracebackhide__ = True
        if self.fake is None:
            self.fake = FakeBaiduServer(auto_issue=True)
            self.fake.start_in_thread()
        monkeypatch.setenv("BAIDU_SWAN_CLIENT_ID", self.fake.client_id)
        monkeypatch.setenv("BAIDU_SWAN_SECRET", self.fake.secret)
        monkeypatch.setenv("BAIDU_SWAN_ENDPOINT", self.fake.url)
        monkeypatch.chdir(self.project)
        while self.done <= index:
            if self.failed_at is not None:
                pytest.fail(f"an earlier block failed: {self.where(self.failed_at)}")
            example = self.examples[self.done]
            self.done += 1
            try:
                skip_unmarked_fragment(example)
                example.evaluate()
            except (pytest.skip.Exception, unittest.SkipTest) as skipped:
                if self.done - 1 == index:
                    pytest.skip(f"{self.where(index)}: {skipped}")
            except BaseException:
                self.failed_at = self.done - 1
                raise

    def where(self, index: int) -> str:
        return f"{relative(self.path)}:{self.examples[index].line}"

    def close(self) -> None:
        if self.fake is not None:
            self.fake.stop_thread()


def skip_unmarked_fragment(example: Example) -> None:
    if not isinstance(example.parsed, Sample):
        return


PAGE_STATE: dict[str, Page] = {}


def evaluate_sample(example: Example) -> None:
    """The Sybil evaluator of every ``Sample``."""
    __tracebackhide__ = True
    sample: Sample = example.parsed
    page = PAGE_STATE[example.path]
    if sample.title is not None:
        target = page.written(sample.title)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("a", encoding="utf-8") as file:
            if file.tell():
                file.write("\n\n")
            file.write(str(sample.source))
    if sample.language != "python" or sample.is_test_module:
        return
    source = pad(str(sample.source), example.line + sample.source.line_offset)
    code = compile(source, example.path, "exec", dont_inherit=True)
    exec(code, example.namespace)
    example.namespace.pop("__builtins__", None)


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Page]]:
    yield PAGE_STATE
    for page in PAGE_STATE.values():
        page.close()
    PAGE_STATE.clear()


def page_for(path: Path, factory: pytest.TempPathFactory) -> Page:
    if str(path) not in PAGE_STATE:
        project = factory.mktemp(path.stem)
        PAGE_STATE[str(path)] = Page(path, project)
    return PAGE_STATE[str(path)]


@pytest.fixture(autouse=True)
def _keep_logging() -> Iterator[None]:
    """Samples configure logging (errors-and-retries.md): undo it for the rest of the suite."""
    logger = logging.getLogger("baidu_swan_auth")
    root = logging.getLogger()
    level, handlers = logger.level, list(root.handlers)
    yield
    logger.setLevel(level)
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)


def example_params() -> list[Any]:
    params = []
    for path in PAGES:
        for index, example in enumerate(parse(path).examples()):
            if isinstance(example.parsed, Sample):
                where = f"{relative(path)}:{example.line}"
                params.append(pytest.param(path, index, id=where))
    return params


def test_pages_have_samples() -> None:
    assert len(example_params()) > 40


@pytest.mark.parametrize(("path", "index"), example_params())
def test_sample(
    path: Path,
    index: int,
    pages: dict[str, Page],
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    page_for(path, tmp_path_factory).run_through(index, monkeypatch)


def pages_with_tests() -> list[Any]:
    return [
        pytest.param(path, id=relative(path))
        for path in PAGES
        if any(sample.is_test_module for _, sample in samples(parse(path)))
    ]


def settings_block() -> str:
    (toml,) = [
        str(sample.source)
        for _, sample in samples(parse(SETTINGS_PAGE))
        if sample.title == "pyproject.toml"
    ]
    return toml


@pytest.mark.parametrize("path", pages_with_tests())
def test_page_tests_pass_in_a_users_project(
    path: Path,
    pages: dict[str, Page],
    tmp_path_factory: pytest.TempPathFactory,
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    page = page_for(path, tmp_path_factory)
    page.run_through(len(page.examples) - 1, monkeypatch)
    for name in ENV_VARS:  # the tests set up their own fake: nothing leaks in from here
        monkeypatch.delenv(name)
    monkeypatch.chdir(pytester.path)
    shutil.copytree(page.project, pytester.path, dirs_exist_ok=True)
    if not (pytester.path / "pyproject.toml").exists():
        (pytester.path / "pyproject.toml").write_text(settings_block(), encoding="utf-8")
    expected = sum(
        len(TEST_FUNCTION.findall(str(sample.source)))
        for _, sample in samples(page.document)
        if sample.is_test_module
    )

    # Warnings from pytest and its plugins (pytest-asyncio settings, unclosed resources) fail.
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-W", "error::pytest.PytestWarning", timeout=120
    )

    result.assert_outcomes(passed=expected)


def test_every_skip_gives_a_reason() -> None:
    unexplained = [
        f"{relative(path)}:{example.line}"
        for path in PAGES
        for example in parse(path).examples()
        if isinstance(example.parsed, tuple)
        and example.parsed[0] in ("next", "start")
        and not (example.parsed[1] or "").strip().startswith('"fragment: ')
    ]
    assert not unexplained, f'write <!-- skip: next "fragment: <why>" --> at {unexplained}'


def test_fragments_still_compile() -> None:
    for path in PAGES:
        for example, sample in samples(parse(path)):
            if sample.language == "python":
                source = pad(str(sample.source), example.line + sample.source.line_offset)
                compile(
                    source,
                    example.path,
                    "exec",
                    flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
                    dont_inherit=True,
                )


def test_no_python_block_escapes_the_parser() -> None:
    for path in PAGES:
        fences = re.findall(r"^[ \t]*```python\b", path.read_text(encoding="utf-8"), re.MULTILINE)
        parsed = [s for _, s in samples(parse(path)) if s.language == "python"]
        invisible = path.read_text(encoding="utf-8").count("<!-- invisible-code-block: python")
        assert len(parsed) == len(fences) + invisible, relative(path)


def test_readme_sample_against_the_standalone_fake(tmp_path: Path) -> None:
    """The README's sample, run as its text says: against ``python -m baidu_swan_auth.testing``."""
    readme = parse(ROOT / "README.md")
    sample = next(s for _, s in samples(readme) if s.language == "python")
    script = tmp_path / "example.py"
    script.write_text(str(sample.source), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env.update(BAIDU_SWAN_CLIENT_ID="demo-app-key", BAIDU_SWAN_SECRET="demo-app-secret")
    with subprocess.Popen(
        [sys.executable, "-m", "baidu_swan_auth.testing", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as fake:
        try:
            assert fake.stdout is not None
            env["BAIDU_SWAN_ENDPOINT"] = fake.stdout.readline().strip()
            runs = [
                subprocess.run(
                    [sys.executable, str(script)],
                    capture_output=True,
                    text=True,
                    env=env,
                    cwd=tmp_path,
                    timeout=60,
                    check=False,
                )
                for _ in range(2)
            ]
        finally:
            fake.terminate()
    assert [run.returncode for run in runs] == [0, 0], [run.stderr for run in runs]
    assert re.fullmatch(r"[\w-]+\n", runs[0].stdout), runs[0].stdout  # the openid
    assert "log in again" in runs[1].stdout  # the same code, spent by the first run
