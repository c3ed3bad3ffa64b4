"""End-to-end fixtures: the real tollgate.wasm in a real Envoy, real authorization servers.

`stack` is one shared deployment (tests/rig/stack.py) for tests that do not disturb it; tests
that stop servers, rotate keys or need other Envoy settings build their own with `new_stack`.
Every process is started by these fixtures and stopped by them, by PID.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rig"))

import stack as rig_stack  # noqa: E402


@pytest.fixture(scope="session")
def wasm() -> Path:
    return rig_stack.build_wasm()


@pytest.fixture(scope="session")
def stack(wasm, tmp_path_factory):
    st = rig_stack.Stack(tmp_path_factory.mktemp("stack"))
    st.start()
    yield st
    st.stop()


@pytest.fixture(scope="module", params=[False, True], ids=["untagged", "tagged"])
def gw(request, wasm, tmp_path_factory):
    """One deployment per tagging mode (the gateway's routing tags off, then on), shared by
    every test of the module that uses it."""
    name = request.module.__name__.rsplit(".", 1)[-1]
    st = rig_stack.Stack(tmp_path_factory.mktemp(f"{name}-tagged" if request.param else name),
                         tagging=request.param)
    st.start()
    yield st
    st.stop()


@pytest.fixture
def new_stack(wasm, tmp_path):
    """Factory for a private deployment; everything it started is stopped after the test."""
    made: list[rig_stack.Stack] = []

    def make(**kwargs) -> rig_stack.Stack:
        st = rig_stack.Stack(tmp_path / f"stack{len(made)}", **kwargs)
        st.workdir.mkdir(parents=True, exist_ok=True)
        made.append(st)
        return st

    yield make
    for st in made:
        st.stop()
