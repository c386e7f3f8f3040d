#!/usr/bin/env python
"""Writes docs/api.md, the API reference, from the docstrings and signatures of every public
name (each module's __all__). tests/test_docs.py checks that the file in the repository is what
this script writes, so the reference cannot drift from the code:

    python docs/gen_api.py            # rewrite docs/api.md
    python docs/gen_api.py --check    # exit 1 if docs/api.md is out of date
"""
from __future__ import annotations

import inspect
import sys
from pathlib import Path

import convkit
from convkit import data, distributed, functional, interop, models, nn, onnx, optim, training

MODULES = [("convkit", convkit), ("convkit.functional", functional), ("convkit.nn", nn),
           ("convkit.optim", optim), ("convkit.models", models), ("convkit.data", data),
           ("convkit.training", training), ("convkit.interop", interop),
           ("convkit.onnx", onnx), ("convkit.distributed", distributed)]
OUT = Path(__file__).with_name("api.md")


def own_doc(obj) -> str:
    """The object's own docstring (a class's, not one inherited from its base)."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if doc else ""


def fence_examples(text: str) -> str:
    """Doctest examples (from a '>>>' line to the next blank line) as fenced code blocks."""
    out, inside = [], False
    for line in text.splitlines():
        if line.startswith(">>>") and not inside:
            out.append("```pycon")
            inside = True
        elif inside and not line.strip():
            out.append("```")
            inside = False
        out.append(line)
    if inside:
        out.append("```")
    return "\n".join(out)


def signature(name, obj) -> str:
    try:
        return f"{name}{inspect.signature(obj)}"
    except (TypeError, ValueError):
        return name


def public(module):
    for name in module.__all__:
        obj = getattr(module, name)
        if not inspect.ismodule(obj):
            yield name, obj


def render() -> str:
    out = ["# convkit API reference", "",
           "Generated from the docstrings by `python docs/gen_api.py`; do not edit by hand.",
           "Names, arguments and semantics follow PyTorch's `torch.nn.functional`, `torch.nn` and",
           "`torch.optim` where PyTorch has the same function. Arrays are NumPy arrays, images are",
           "NCHW, results are float32. Convolution in more depth: `convolution.md`.", ""]
    for mname, module in MODULES:
        out += [f"## `{mname}`", "", inspect.cleandoc(module.__doc__ or ""), ""]
        for name, obj in public(module):
            if inspect.isclass(obj) or callable(obj):
                out += [f"### `{signature(name, obj)}`", "", fence_examples(own_doc(obj)), ""]
                if inspect.isclass(obj):
                    for meth in ("forward", "backward", "step", "zero_grad", "state_dict",
                                 "load_state_dict", "save", "load", "parameters",
                                 "named_modules", "add_module", "get_submodule", "apply",
                                 "append", "extend", "insert", "pop"):
                        m = obj.__dict__.get(meth)
                        if m is not None and getattr(m, "__doc__", None):
                            out += [f"- `{signature(meth, m)}`: "
                                    + fence_examples(inspect.cleandoc(m.__doc__)), ""]
            else:
                out += [f"### `{name}`", "", f"`{obj!r}`", ""]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if OUT.exists() and OUT.read_text() == text else 1)
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(text.splitlines())} lines)")
