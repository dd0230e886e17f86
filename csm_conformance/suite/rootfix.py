"""Puts pytest back on the right root when a `--csm-* VALUE` was taken for a test path.

pytest chooses its rootdir and ini file from the positional arguments *before* it loads
entry-point plugins. In `pytest --csm-model /data/csm-1b` the option is still unknown then, so
`/data/csm-1b` counts as a test path: pytest roots itself there, finds no pytest.ini (no testpaths,
markers, addopts, timeouts) and would collect the whole invocation directory. Once this plugin is
loaded, pytest parses the arguments again knowing every `--csm-*` option; if its real positional
arguments then give another root, the root, ini file and the ini's addopts are set up again with
pytest's own `determine_setup`, exactly as if the user had written `--csm-model=/data/csm-1b`.

This touches private attributes of `pytest.Config` (there is no public hook before the root is
chosen); the self-tests run the space form from outside the repository on every pytest the
project supports, so a pytest that changes them is caught.
"""

from __future__ import annotations

import copy
import inspect

import pytest

from csm_conformance.suite.options import OPTIONS

VALUE_FLAGS = frozenset(opt.flag for opt in OPTIONS if opt.kind != "bool")


def spaced_values(args: list[str]) -> list[str]:
    """The values given to `--csm-*` options in the space form (`--csm-model DIR`)."""
    return [args[i + 1] for i, arg in enumerate(args[:-1]) if arg in VALUE_FLAGS]


def _determine_setup(config: pytest.Config, paths: list[str]):
    from _pytest.config.findpaths import determine_setup

    ns = config.known_args_namespace
    kwargs = {"inifile": ns.inifilename, "args": paths, "rootdir_cmd_arg": ns.rootdir or None,
              "invocation_dir": config.invocation_params.dir}
    if "override_ini" in inspect.signature(determine_setup).parameters:
        kwargs["override_ini"] = ns.override_ini
    return determine_setup(**kwargs)


def reroot(config: pytest.Config, parser: pytest.Parser, args: list[str]) -> bool:
    """Redo pytest's root and ini choice from the positional arguments it has now that the
    `--csm-*` options are known; True when they had been chosen from an option's value."""
    if not spaced_values(args) or config.known_args_namespace.rootdir or config.known_args_namespace.inifilename:
        return False
    rootpath, inipath, inicfg, *ignored = _determine_setup(config, list(config.known_args_namespace.file_or_dir))
    if (rootpath, inipath) == (config.rootpath, config.inipath):
        return False
    defaulted_cut = str(config.inipath.parent if config.inipath is not None else config.rootpath)
    config._rootpath, config._inipath, config._inicfg = rootpath, inipath, inicfg
    if ignored and hasattr(config, "_ignored_config_files"):
        config._ignored_config_files = ignored[0]
    config._inicache.clear()
    parser.extra_info["rootdir"] = str(rootpath)
    parser.extra_info["inifile"] = str(inipath)
    if inipath is not None:
        args[:] = config._validate_args(config.getini("addopts"), "via addopts config") + args
    confcutdir = config.known_args_namespace.confcutdir
    config.known_args_namespace = parser.parse_known_args(args, namespace=copy.copy(config.option))
    if confcutdir in (None, defaulted_cut):  # pytest's default, from the wrong root: redo it
        confcutdir = str(inipath.parent if inipath is not None else rootpath)
    config.known_args_namespace.confcutdir = confcutdir
    return True
