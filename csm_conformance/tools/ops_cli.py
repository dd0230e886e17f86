"""`csm-conformance ops` (and `python -m csm_conformance ops`): the operator report of some cases,
on demand, without running the gate.

Only the device model is loaded: each distinct aten call a case runs is judged against its correctly
rounded standard, computed on the CPU from the call's own inputs (accuracy/ops), so no float32
reference model is needed. The model, device and dtype are resolved as the suite resolves them
(--model/--device/--dtype, else CSM_MODEL/CSM_DEVICE/CSM_DTYPE, else tiny/auto/bfloat16; the
catalogue is CSM_CASES's, else the packaged one). It writes <output>/ops.json (schema ops-1),
merged into an ops.json already there (this run's cases replace theirs, the others stay when they
are of the same model, device, dtype and versions), and a repro bundle per operator past its
standard (--repro). The verdict runs it on the current stack's interpreter (`--before-python`)
when only the candidate's gate wrote an operator report for a red case.

Exit codes: 0 no operator of these cases is past its standard, 1 one is, 2 bad input (one line on
stderr: an unknown case, a missing model path, an unavailable device, a damaged ops.json) or a case
whose operators could not be recorded (one line per case; the others are still written).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from csm_conformance.errors import UserError

PROG = "csm-conformance ops"
OK, PAST, BAD_INPUT = 0, 1, 2
REPRO_LIMIT = 10  # bundles per case


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        self.exit(BAD_INPUT, f"{self.prog}: error: {message}\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, allow_abbrev=False, description=(
        "Judge every distinct aten operator call the cases run on the device model against its correctly rounded standard, "
        "computed on the CPU from the call's own inputs (no reference model is loaded); write ops.json and repro bundles. "
        "Exit 0 when no operator is past its standard, 1 when one is, 2 on bad input."))
    p.add_argument("--case", action="append", required=True, metavar="ID",
                   help="a case id of the catalogue (repeatable, or comma-separated), or all")
    p.add_argument("--model", help="tiny (default), random-full, a local directory or a hub id; as the suite's --csm-model [env CSM_MODEL]")
    p.add_argument("--device", help="auto (default), cpu, npu[:i], cuda[:i], ...; as the suite's --csm-device [env CSM_DEVICE]")
    p.add_argument("--dtype", help="bfloat16 (default), float16 or float32; as the suite's --csm-dtype [env CSM_DTYPE]")
    p.add_argument("--require-device", action="store_true", default=None,
                   help="fail when auto finds no accelerator [env CSM_REQUIRE_DEVICE]")
    p.add_argument("--output", default="output/ops", help="directory of ops.json and the repro bundles (default: output/ops)")
    p.add_argument("--repro", choices=("past", "all", "none"), default="past",
                   help=f"repro bundles for the operators past their standard (default), for all (the first {REPRO_LIMIT}), or none")
    p.add_argument("--repro-for", action="append", default=[], metavar="TEXT",
                   help=f"also a repro bundle for every call (the first {REPRO_LIMIT} of a case) whose '<op> at <module>' contains TEXT, "
                        "e.g. aten.linear or layers.3.self_attn (repeatable)")
    p.add_argument("--trigger", default=PROG, help="why the report was made, recorded in each case's entry (default: the command's name)")
    return p


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return BAD_INPUT


def _cases(wanted: list[str], catalogue) -> list:
    """The cases asked for, in the order given ("all": the catalogue's order); CatalogueError for an unknown id."""
    ids = [item.strip() for entry in wanted for item in entry.split(",") if item.strip()]
    ids = catalogue.ids() if "all" in ids else list(dict.fromkeys(ids))
    if not ids:
        raise UserError("--case names no case")
    selected = catalogue.select(ids)  # an unknown id: one line listing the known ones
    by_id = {case.id: case for case in [*selected.prompts, *selected.codec]}
    return [by_id[i] for i in ids]


def _identity(doc: dict) -> tuple:
    return ((doc.get("model") or {}).get("key"), (doc.get("device") or {}).get("device"), doc.get("dtype"), doc.get("versions"))


def _merged(existing: dict | None, meta: dict, entries: list[dict]) -> tuple[list[dict], str]:
    """ops.json's cases after this run: the existing ones, this run's replacing theirs; the existing
    ones are dropped when they are of another model, device, dtype or stack (with the reason)."""
    if existing is None:
        return entries, ""
    if _identity(existing) != _identity(meta):
        return entries, f"its cases of another model, device, dtype or stack ({', '.join(c['case'] for c in existing['cases'])}) were dropped"
    new = {entry["case"]: entry for entry in entries}
    kept = [new.pop(c["case"], c) for c in existing["cases"]]
    return kept + list(new.values()), ""


def _meta(loaded, info) -> dict:
    """What ConformanceSession.run_meta() says of a gate run, for this model and device."""
    import torch

    from csm_conformance.runtime import devices
    from csm_conformance.runtime.models import dtype_name

    return {"model": loaded.identity.as_dict(),
            "device": {"spec": info.spec, "device": info.device, "type": info.type, "name": info.name, "count": info.count,
                       "torch_threads": torch.get_num_threads()},
            "dtype": dtype_name(loaded.dtype), "versions": devices.software_versions()}


def _bundles(output: Path, result, which: str) -> dict[int, str]:
    if which == "none":
        return {}
    from csm_conformance.accuracy.ops.bundle import write_bundles  # here: --help stays fast

    return write_bundles(output, result, which=which, limit=REPRO_LIMIT)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    from csm_conformance.accuracy.ops.run import case_ops
    from csm_conformance.catalogue.cases import load_catalogue
    from csm_conformance.reports import ops_report
    from csm_conformance.suite.options import settings_from
    from csm_conformance.tools import synthesis

    output = Path(args.output).expanduser()
    try:
        settings = settings_from({"csm_model": args.model, "csm_device": args.device, "csm_dtype": args.dtype,
                                  "csm_require_device": args.require_device})  # the CSM_* environment twins apply
        cases = _cases(args.case, load_catalogue(settings.csm_cases or None))
        if output.exists() and not output.is_dir():
            raise UserError(f"--output {output} is not a directory")
        existing = ops_report.read(output / "ops.json")  # a damaged one is bad input before any model is loaded
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        loaded, info = synthesis.load(settings.csm_model, settings.csm_device, settings.csm_dtype, settings.csm_require_device)
    except UserError as exc:
        return _fail(str(exc))
    print(f"model: {loaded.identity.describe()}")
    print(f"device: {info.device} ({info.name}) | dtype {settings.csm_dtype}")
    meta, entries, failed = _meta(loaded, info), [], 0
    for case in cases:
        try:
            result = case_ops(loaded, case)
        except Exception as exc:  # noqa: BLE001 - a case that cannot run on this stack: one line, the others still run
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            print(f"{PROG}: error: {case.id}: its operators could not be recorded: {type(exc).__name__}: {first}", file=sys.stderr)
            failed += 1
            continue
        try:
            bundles = _bundles(output, result, args.repro)
            if args.repro_for:
                from csm_conformance.accuracy.ops.bundle import write_bundles

                bundles.update(write_bundles(output, result, "match", REPRO_LIMIT, match=tuple(args.repro_for), skip=tuple(bundles)))
            entries.append(ops_report.case_document(result, args.trigger, bundles))
        except OSError as exc:
            return _fail(f"--output {output}: cannot write the repro bundles of {case.id} ({exc.strerror or exc})")
        print(ops_report.table(entries[-1]))
    if entries:
        cases_written, dropped = _merged(existing, meta, entries)
        try:
            path = ops_report.write(output / "ops.json", meta, cases_written)
        except OSError as exc:
            return _fail(f"--output {output}: cannot write ops.json ({exc.strerror or exc})")
        print(f"report: {path}" + (f" ({dropped})" if dropped else ""))
    if failed:
        return BAD_INPUT
    return PAST if any(entry["past_standard"] for entry in entries) else OK
