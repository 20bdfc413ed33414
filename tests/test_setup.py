"""The two ways to install, uv (pyproject.toml, uv.lock) and pip (requirements.txt), ask for
the same packages."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def names(lines):
    return {re.match(r"[A-Za-z0-9_.-]+", line).group().lower() for line in lines}


def requirements_txt():
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        lines = [line.split("#")[0].strip() for line in f]
    return [line for line in lines if line]


def pyproject_dependencies():
    """The quoted entries of [project]'s dependencies list (no tomllib on Python 3.10)."""
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        text = f.read()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    return re.findall(r'^\s*"([^"]+)"', block, re.M)


def test_pyproject_and_requirements_txt_name_the_same_packages():
    assert names(pyproject_dependencies()) == names(requirements_txt())


def test_the_lock_file_pins_what_pyproject_asks_for():
    with open(os.path.join(ROOT, "uv.lock")) as f:
        locked = set(re.findall(r'^name = "([^"]+)"', f.read(), re.M))
    assert names(pyproject_dependencies()) <= locked
