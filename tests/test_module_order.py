"""tests/module_order.py and its hooks in tests/conftest.py: modules go out longest first by
tests/module_durations.json (the order xdist's --dist loadscope then keeps), tests keep their order
inside a module, a module the file does not list goes last, and the durations round-trip."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tests.module_order import longest_first, module_of, recorded, store


def test_modules_go_longest_first_keeping_the_order_inside_each(tmp_path):
    durations = tmp_path / "module_durations.json"
    store({"tests/a.py": 1.0, "tests/b.py": 30.04, "tests/c.py": 5.0}, durations)
    assert json.loads(durations.read_text()) == {"tests/b.py": 30.0, "tests/c.py": 5.0, "tests/a.py": 1.0}
    ids = [
        "tests/a.py::x",
        "tests/a.py::y",
        "tests/new.py::z",
        "tests/b.py::x[1]",
        "tests/b.py::x[0]",
        "tests/c.py::x",
    ]
    items = [SimpleNamespace(nodeid=i) for i in ids]
    longest_first(items, durations)
    assert [i.nodeid for i in items] == [
        "tests/b.py::x[1]",
        "tests/b.py::x[0]",
        "tests/c.py::x",
        "tests/a.py::x",
        "tests/a.py::y",
        "tests/new.py::z",
    ]
    store({"tests/a.py": 40.0}, durations)  # a run of one file updates that file's entry only
    assert json.loads(durations.read_text()) == {"tests/a.py": 40.0, "tests/b.py": 30.0, "tests/c.py": 5.0}


def test_this_session_collected_longest_first_and_xdist_keeps_that_order(request, pytestconfig):
    pytest.importorskip("xdist", minversion="3.8")  # the release that made loadscope's reordering optional
    assert pytestconfig.option.loadscopereorder is False
    listed = recorded()
    order = [module_of(item.nodeid) for item in request.session.items]
    ranks = [-listed.get(module, 0.0) for module in dict.fromkeys(order)]
    assert ranks == sorted(ranks)
