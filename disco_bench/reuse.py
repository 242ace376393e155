"""``run --reuse DIR``: take the steps a finished run in DIR already did instead of running them again.

A step is taken when DIR's records hold its id with the same config hash this run planned (hashes
chain through ``@`` references and do not depend on the output folder, so a suite that includes
another, e.g. ``cpu-full`` on top of ``cpu``, plans the included steps with the base run's hashes)
and, for a step that makes a checkpoint, DIR still holds that checkpoint. Its records are copied
into this run's ``results.jsonl`` unchanged (their provenance: the run that measured them), its
checkpoint hard-linked (copied across file systems) and its eval folder (pictures, tables)
copied, so this folder stands alone afterwards: deleting DIR loses nothing here. DIR is only read.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from disco_bench import results
from disco_bench.planning import CHECKPOINT_KINDS
from disco_bench.steps import RunContext, step_checkpoint
from disco_bench.suite import Step
from infra.errors import InputError


@dataclass(frozen=True)
class ReuseSource:
    """A finished run's folder and its records (``folder`` None: no ``--reuse``, nothing to take)."""

    folder: Path | None = None
    records: tuple[dict, ...] = ()

    @classmethod
    def open(cls, folder: Path | None, out: Path) -> ReuseSource:
        """DIR must be another folder holding a run's records (one line naming it otherwise)."""
        if folder is None:
            return cls()
        folder = Path(folder)
        if not (folder / "results.jsonl").is_file():
            raise InputError(
                f"--reuse {folder}: expected a run's output folder holding results.jsonl; found none"
            )
        if folder.resolve() == Path(out).resolve():
            raise InputError(
                f"--reuse {folder}: is the --out folder itself; finished steps there are skipped anyway"
            )
        return cls(folder, tuple(results.read_records(folder / "results.jsonl")))

    def records_of(self, step: Step, config_hash: str) -> list[dict]:
        """The records of ``step`` the run made with this config hash (empty: none, or its
        checkpoint is gone)."""
        mine = [r for r in self.records if r.get("step") == step.id and r.get("config_hash") == config_hash]
        if mine and step.kind in CHECKPOINT_KINDS and not step_checkpoint(self.folder, step.id).exists():
            return []
        return mine

    def take(self, step: Step, records: list[dict], ctx: RunContext) -> None:
        """Bring ``step``'s checkpoint and eval folder over, then its records (last, so an
        interrupted take is simply taken again)."""
        if step.kind in CHECKPOINT_KINDS and step.id not in ctx.external:
            _link_or_copy(step_checkpoint(self.folder, step.id), ctx.checkpoint(step.id))
        their_eval = self.folder / "eval" / step.id
        if their_eval.is_dir():
            shutil.copytree(their_eval, ctx.out / "eval" / step.id, dirs_exist_ok=True)
        results.append_records(ctx.records_path, records)


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.reuse-tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # another file system, or links not allowed: a copy
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)  # the checkpoint appears whole or not at all


NO_REUSE = ReuseSource()  # a run without --reuse: nothing to take
