"""The stack preflight: before any test, is the installed stack one that can run CSM at all?

Why: an environment built with the newest transformers and then downgraded in place
(`pip install transformers==4.52.4` over 5.25.0) keeps what only the newer release needed
(`kernels`, a huggingface_hub two majors on). The suite then stopped with a third-party message
naming neither the package nor what to do, or gave one ImportError per test. The preflight says it
once, in one line, before a model is built:

- check_consistency(): the installed distributions of the stack's closure (stack.closure(), and
  the suite's own requirements on them) satisfy each other's declared requirements, as `pip check`
  would say for those packages only. A distribution nothing else installed requires (a leftover,
  such as kernels after a downgrade) is named so.
- check_imports(): transformers imports its CSM classes. On any exception the line names the
  distribution whose code raised (the innermost frame in a file of an installed distribution, the
  standard library left out, through the __cause__/__context__ chain transformers' lazy import
  wraps it in), the transformers version and the exception's own first line.

Both raise StackError (a UserError: one line, usage exit). check() runs both, once per process.
"""

from __future__ import annotations

import importlib.metadata as md
import sys
import sysconfig
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from csm_conformance.errors import UserError
from csm_conformance.runtime import stack

SUITE = "csm-conformance"
SHOWN = 5  # conflicts named in the line; the rest are counted


class StackError(UserError, RuntimeError):
    """The installed stack cannot run the suite; the message is one line."""


@dataclass(frozen=True)
class Installed:
    version: str
    requires: tuple[str, ...] = ()  # requirement strings that apply here (markers true, no extra)

    def requirements(self) -> list[Requirement]:
        out = []
        for text in self.requires:
            try:
                out.append(Requirement(text))
            except InvalidRequirement:
                continue
        return out


@dataclass(frozen=True)
class Conflict:
    requirer: str
    requirer_version: str
    requirement: Requirement
    installed: str | None  # None: not installed

    @property
    def name(self) -> str:
        return stack.canonical(self.requirement.name)

    def text(self) -> str:
        head = f"{self.requirer} {self.requirer_version} requires {self.name}{self.requirement.specifier}"
        return f"{head}, which is not installed" if self.installed is None else f"{head}, but {self.installed} is installed"


def _satisfied(req: Requirement, version: str) -> bool:
    try:
        return req.specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return True  # a version packaging cannot read: not ours to judge


def find_conflicts(installed: dict[str, Installed]) -> list[Conflict]:
    """Every requirement of an installed distribution that the installed version does not
    satisfy, or whose distribution is not installed at all."""
    found = []
    for name, dist in sorted(installed.items()):
        for req in dist.requirements():
            target = stack.canonical(req.name)
            have = installed.get(target)
            if have is None or not _satisfied(req, have.version):
                found.append(Conflict(name, dist.version, req, None if have is None else have.version))
    return found


def leftovers(installed: dict[str, Installed], roots: tuple[str, ...] = (*stack.ROOTS, SUITE)) -> set[str]:
    """Distributions that no other installed one requires and that are not a root: kept from an
    environment they were installed for (kernels after transformers went back to 4.x)."""
    required = {stack.canonical(req.name) for name, dist in installed.items() for req in dist.requirements()
                if stack.canonical(req.name) != name}
    return {name for name in installed if name not in required and name not in {stack.canonical(r) for r in roots}}


def _why_installed(installed: dict[str, Installed], conflict: Conflict, left: set[str]) -> list[tuple[str, str]]:
    """(name, text) of the other requirers the installed version does satisfy: why it is the
    version it is; leftovers first, two at most."""
    others = []
    for name, dist in sorted(installed.items(), key=lambda item: (item[0] not in left, item[0])):
        if name in (conflict.requirer, conflict.name) or conflict.installed is None:
            continue
        for req in dist.requirements():
            if stack.canonical(req.name) == conflict.name and req.specifier and _satisfied(req, conflict.installed):
                leftover = ", which nothing else installed requires," if name in left else ""
                others.append((name, f"{name} {dist.version}{leftover} needs {conflict.name}{req.specifier}"))
    return others[:2]


def suite_spec() -> str:
    """How pip names this suite: `-e <checkout>` when it runs from a checkout (an editable install
    or none), else its distribution name."""
    checkout = Path(__file__).resolve().parents[2]
    return f"-e {checkout}" if (checkout / "pyproject.toml").is_file() else SUITE


def conflict_message(installed: dict[str, Installed], conflicts: list[Conflict], suite: str) -> str:
    left = leftovers(installed)
    parts, uninstall = [], {c.requirer for c in conflicts if c.requirer in left}
    for conflict in conflicts[:SHOWN]:
        why = _why_installed(installed, conflict, left)
        uninstall |= {name for name, _ in why if name in left}
        parts.append(conflict.text() + (f" ({'; '.join(text for _, text in why)})" if why else ""))
    if len(conflicts) > SHOWN:
        parts.append(f"and {len(conflicts) - SHOWN} more")
    pins = list(dict.fromkeys(f"'{c.requirer}=={c.requirer_version}'" for c in conflicts if c.requirer not in left | {SUITE}))
    them = "it" if len(uninstall) == 1 else "them"
    remove = f"pip uninstall {' '.join(sorted(uninstall))} (nothing else installed requires {them})"
    if uninstall and not pins:  # only leftovers conflict: removing them is the fix
        todo = f"{remove}, or build a fresh venv"
    else:
        todo = f"resolve the suite and its pins in one pip call or a fresh venv: pip install {' '.join([*pins, suite])}"
        todo += f", and {remove}" if uninstall else ""
    return f"the installed stack is inconsistent: {'; '.join(parts)}; {todo}"


def installed_stack() -> dict[str, Installed]:
    """The stack's closure as installed here, with the suite itself when installed."""
    dists = stack.closure()
    suite = stack._distribution(SUITE)
    if suite is not None:
        dists[SUITE] = suite
    return {name: Installed(dist.version, tuple(str(r) for r in stack.requirements_of(dist))) for name, dist in dists.items()}


def check_consistency() -> None:
    installed = installed_stack()
    stack_names = (set(installed) - {SUITE}) | {stack.canonical(r) for r in stack.ROOTS}
    # the suite's requirements only where they point into the stack (pytest and its plugins are not CSM's path)
    conflicts = [c for c in find_conflicts(installed) if c.requirer != SUITE or c.name in stack_names]
    if conflicts:
        raise StackError(conflict_message(installed, conflicts, suite_spec()))


# ---- the import check ------------------------------------------------------------------------------
def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, then what caused it, down to the first (wrappers first, the real error last)."""
    seen: list[BaseException] = []
    while exc is not None and all(exc is not s for s in seen):
        seen.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return seen


def _library_roots() -> list[Path]:
    paths = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib")}
    return [Path(p).resolve() for p in paths]


def owner(filename: str) -> tuple[str, str] | None:
    """(distribution, version) whose installed files hold `filename`; None for the standard
    library, frozen modules and files no distribution owns."""
    if not filename or filename.startswith("<"):
        return None
    path = Path(filename).resolve()
    entries = sorted({Path(p or ".").resolve() for p in sys.path}, key=lambda p: len(p.parts), reverse=True)
    for entry in entries:  # the deepest sys.path entry holding the file (site-packages before the stdlib above it)
        if not path.is_relative_to(entry) or path == entry:
            continue
        top = path.relative_to(entry).parts[0].removesuffix(".py")
        if entry in _library_roots() or top in sys.stdlib_module_names:
            return None
        for dist in md.distributions(path=[str(entry)]):
            names = {stack.canonical(dist.metadata["Name"] or "")} | set((dist.read_text("top_level.txt") or "").split())
            files = dist.files or []
            if stack.canonical(top) in names or top in names or any(f.parts and f.parts[0] == top for f in files):
                return dist.metadata["Name"], dist.version
        return None
    return None


def raised_by(exc: BaseException) -> tuple[tuple[str, str] | None, BaseException]:
    """The distribution whose code raised, and the exception it raised: the real error at the end
    of the chain, in the innermost frame that an installed distribution other than this suite owns;
    else, for an ImportError of a name a module lacks, the distribution of that module."""
    chain = _chain(exc)
    for err in reversed(chain):
        frames = []
        tb = err.__traceback__
        while tb is not None:
            frames.append(tb.tb_frame.f_code.co_filename)
            tb = tb.tb_next
        for filename in reversed(frames):
            found = owner(filename)
            if found is not None and stack.canonical(found[0]) != SUITE:
                return found, chain[-1]
    module = getattr(chain[-1], "name", None) if isinstance(chain[-1], ImportError) else None
    for name in md.packages_distributions().get((module or "").partition(".")[0], []):
        dist = stack._distribution(name)
        if dist is not None:
            return (dist.metadata["Name"], dist.version), chain[-1]
    return None, chain[-1]


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def import_message(exc: BaseException, transformers_version: str | None, installed: dict[str, Installed], suite: str) -> str:
    who, err = raised_by(exc)
    tf = f"transformers {transformers_version}" if transformers_version else "transformers (not installed)"
    where = f"{who[0]} {who[1]}" if who else "code no installed distribution owns"
    head = f"{tf} cannot import its CSM classes: {where} raised {first_line(err)}"
    name = stack.canonical(who[0]) if who else None
    if name is None or name == "transformers":
        todo = (f"install a transformers release this suite supports (docs/supported-stacks.md) in a fresh venv, "
                f"resolved with the suite in one pip call: pip install 'transformers==<version>' {suite}")
    elif name in leftovers(installed) or name not in installed:
        todo = f"nothing in the stack requires {who[0]}: pip uninstall {who[0]}, or build a fresh venv"
    else:
        wanted = [str(r.specifier) for d in installed.values() for r in d.requirements()
                  if stack.canonical(r.name) == name and r.specifier]
        pin = f"'{who[0]}{wanted[0]}'" if wanted else f"'{who[0]}'"
        todo = (f"this {tf} cannot use the installed {who[0]}: build a fresh venv, or reinstall it in one pip call "
                f"with what it is resolved against: pip install --force-reinstall 'transformers=={transformers_version}' {pin}")
    return f"{head}; {todo}"


def check_imports() -> None:
    try:
        from transformers import CsmConfig, CsmForConditionalGeneration, CsmProcessor  # noqa: F401
    except Exception as exc:  # anything: a broken stack raises what it raises
        dist = stack._distribution("transformers")
        raise StackError(import_message(exc, dist.version if dist else None, installed_stack(), suite_spec())) from None


@cache
def check() -> None:
    """Both checks, once per process (the plugin calls it before it imports transformers itself)."""
    check_consistency()
    check_imports()
