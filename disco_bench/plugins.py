"""Plugins: modules named in the environment that add step kinds before a suite is planned.

``DISCO_BENCH_PLUGINS=module[,module...]`` names importable modules; each defines
``register_step_kinds()``, which calls ``steps.register_step_kind(name, config_fn, run_fn)`` once
per kind it adds. The runner loads them before it plans, and so does every process that runs a
step (a ``--jobs`` process, a torchrun worker, a submitit job): the environment reaches them all,
so they plan the same kinds as the runner. The tests' ``fake`` kind (tests/disco_bench/fake_steps.py)
comes in this way.

The hook is called on every load, not only on the first import, so a caller that restores
``STEP_KINDS`` (a test) gets the kinds back by loading again.
"""

from __future__ import annotations

import importlib
import os

from infra.errors import InputError

PLUGINS_VARIABLE = "DISCO_BENCH_PLUGINS"
HOOK = "register_step_kinds"


def plugin_modules(environ=os.environ) -> list[str]:
    """The module names ``DISCO_BENCH_PLUGINS`` lists (none when it is unset or empty)."""
    return [name.strip() for name in environ.get(PLUGINS_VARIABLE, "").split(",") if name.strip()]


def load_plugins(environ=os.environ) -> None:
    """Import every plugin module and call its ``register_step_kinds()``."""
    for name in plugin_modules(environ):
        expected = f"expected comma-separated importable modules, each defining {HOOK}()"
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise InputError(
                f"{PLUGINS_VARIABLE}={environ[PLUGINS_VARIABLE]}: cannot import {name!r} ({exc}); {expected}"
            ) from exc
        hook = getattr(module, HOOK, None)
        if not callable(hook):
            raise InputError(
                f"{PLUGINS_VARIABLE}={environ[PLUGINS_VARIABLE]}: module {name!r} has no {HOOK}(); {expected}"
            )
        hook()
