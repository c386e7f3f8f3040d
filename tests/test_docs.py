"""The documentation runs as written: every code block of README.md and docs/*.md, every
docstring example; docs/api.md is what docs/gen_api.py writes from the docstrings; every public
name has a docstring of its own with an example."""
import doctest
import importlib.util
import inspect
import re
from pathlib import Path

import numpy as np
import pytest

import convkit
from convkit import data, distributed, functional, interop, models, nn, onnx, optim, training

ROOT = Path(__file__).resolve().parent.parent
MODULES = [convkit, functional, nn, optim, models, data, training, interop, onnx,
           distributed]


def _gen_api():
    spec = importlib.util.spec_from_file_location("gen_api", ROOT / "docs" / "gen_api.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _blocks(path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


def test_api_reference_is_generated_from_the_docstrings():
    gen = _gen_api()
    assert gen.OUT.read_text() == gen.render(), \
        "docs/api.md is out of date: run python docs/gen_api.py"


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_every_public_name_has_its_own_docstring_with_an_example(module):
    gen = _gen_api()
    missing = []
    for name, obj in gen.public(module):
        if not callable(obj):
            continue  # constants (__version__, KINDS)
        doc = gen.own_doc(obj)
        if not doc or ">>>" not in doc:
            missing.append(name)
    assert not missing, f"{module.__name__}: no docstring with an example: {missing}"


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples_run(module, threads):
    r = doctest.testmod(module, extraglobs={"np": np, "nn": nn},
                        optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert r.attempted > 0 and r.failed == 0, r


@pytest.mark.parametrize("doc", ["docs/convolution.md", "docs/interop.md",
                                 "docs/distributed.md"])
def test_docs_code_blocks_run(doc):
    blocks = _blocks(ROOT / doc)
    assert blocks
    for code in blocks:
        exec(compile(code, doc, "exec"), {})


def test_readme_code_blocks_run_and_the_training_snippet_learns(capsys):
    blocks = _blocks(ROOT / "README.md")
    assert len(blocks) >= 2
    ns = {}
    for code in blocks:
        ns = {}
        exec(compile(code, "README.md", "exec"), ns)
    # the last block trains LeNet-5 on the bundled sample and prints its test accuracy
    result = training.evaluate(ns["model"], ns["xt"], ns["yt"])
    assert result["accuracy"] >= 0.90, result
    assert "accuracy" in capsys.readouterr().out
