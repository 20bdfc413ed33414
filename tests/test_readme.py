"""The README is the user's manual: short, with the quick start on its first screen, and every
option it (or docs/options.md) names is one the scripts really accept."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
OPTIONS_DOC = os.path.join(ROOT, "docs", "options.md")
SCRIPTS = ("train.py", "test.py", "evaluate.py", "benchmark.py", "export.py")

# Options the documents mention that belong to other tools, not to the five scripts.
NOT_OURS = {
    "--index-url", "--upgrade", "--build-constraint",  # pip install
    "--smoke",  # scripts/gpu_check.sh
    "--standalone", "--nproc_per_node", "--nnodes",  # torchrun
    "--rdzv_backend", "--rdzv_endpoint", "--rdzv_id",  # torchrun
    "--decay_epoch",  # train.py's former option, refused saying what replaced it
}

OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*[a-z0-9]")
SCRIPT = re.compile(r"\b(train|test|evaluate|benchmark|export)\.py\b")

# The script a README section is about (docs/options.md's sections are named after theirs).
# A section not listed here, or renamed, checks its options against all five scripts.
SECTION_SCRIPTS = {
    "Train": {"train.py"},
    "Watching training in visdom": {"train.py"},
    "Multiple GPUs and nodes": {"train.py"},
    "Translate": {"test.py"},
    "Translate a video": {"test.py"},
    "The authors' pretrained generators": {"test.py"},
    "Measure quality: FID and KID": {"evaluate.py"},
    "Speed": {"train.py", "benchmark.py"},
}


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


@pytest.fixture(scope="module")
def help_options():
    """{script: set of the --options its --help lists}, each script's --help run once, in
    parallel."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    runs = {s: subprocess.Popen([sys.executable, s, "--help"], cwd=ROOT, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for s in SCRIPTS}
    found = {}
    for script, proc in runs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"python {script} --help failed:\n{err}"
        found[script] = set(OPTION.findall(out))
        assert "--help" in found[script], f"{script} --help printed no options:\n{out}"
    return found


def mentions(path):
    """(line number, option, scripts it should belong to) for every --option in a file: the scripts
    named on its line; failing that, the script of its section; failing that, any of the five."""
    section, fenced = set(SCRIPTS), False
    for number, line in enumerate(read_lines(path), 1):
        fenced ^= line.startswith("```")
        heading = None if fenced else re.match(r"#+\s+(.*?)\s*$", line)
        if heading:
            title = heading.group(1)
            section = {title} if title in SCRIPTS else SECTION_SCRIPTS.get(title, set(SCRIPTS))
        named = {name + ".py" for name in SCRIPT.findall(line)}
        for option in OPTION.findall(line):
            yield number, option, named or section


def test_readme_is_at_most_250_lines():
    lines = read_lines(README)
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; the manual is kept to 250"


def quick_start_commands():
    """The commands of README's Quick start (its indented lines), without their comments."""
    lines = read_lines(README)
    start = lines.index("## Quick start")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("## "))
    return [line.split("#")[0].strip() for line in lines[start:end] if line.startswith("    ")]


def test_the_quick_start_is_two_commands_to_train_and_to_test_on_the_first_screen():
    assert quick_start_commands() == ["uv run train.py --dataroot datasets/horse2zebra",
                                      "uv run pytest"]
    assert "## Quick start" in read_lines(README)[:15]


def test_ci_runs_the_quick_starts_test_command_as_written():
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        assert quick_start_commands()[1] in f.read().splitlines()


def test_the_pip_line_needs_no_environment_variable():
    text = "\n".join(read_lines(README))
    assert ("python -m pip install -r requirements.txt --build-constraint build-constraints.txt"
            in text)
    assert "PIP_CONSTRAINT" not in text


def test_the_readme_links_the_option_tables():
    assert "docs/options.md" in "\n".join(read_lines(README))
    assert os.path.exists(OPTIONS_DOC)


def test_every_option_the_readme_mentions_exists_in_that_scripts_help(help_options):
    wrong = []
    for path in (README, OPTIONS_DOC):
        for number, option, owners in mentions(path):
            if option in NOT_OURS:
                continue
            if not any(option in help_options[s] for s in owners):
                wrong.append(f"{os.path.relpath(path, ROOT)}:{number}: {option} is not in "
                             f"the --help of {' or '.join(sorted(owners))}")
    assert not wrong, "\n".join(wrong)


def test_the_authors_options_named_as_not_taken_are_taken_by_no_script(help_options):
    from utils import AUTHORS_FLAGS
    taken = set().union(*help_options.values())
    assert not sorted(flag for flag in AUTHORS_FLAGS if flag in taken)


def test_the_allow_list_of_other_tools_options_is_still_needed():
    """An entry nobody mentions any more should go, so the allow-list cannot hide a typo."""
    text = "\n".join(read_lines(README) + read_lines(OPTIONS_DOC))
    unused = sorted(o for o in NOT_OURS if not re.search(re.escape(o) + r"(?![\w-])", text))
    assert not unused, f"no longer mentioned, drop from NOT_OURS: {unused}"
