"""Finding trigger scripts, and the rule that decides which may run.

A script is `<trigger-dir>/<event>` or any file in the folder `<trigger-dir>/<event>/`.
Names starting with `.` or ending with `~` are ignored (editors' files; rename a script to
`.name` to disable it).

Scripts run with the server's rights, which are root's in production, so one may run only
if nobody but root could have written it or swapped it for another file:

- the script is a regular file (not a symbolic link), owned by the server's user (root),
  not writable by its group or others, and executable by its owner;
- its folder, the trigger directory and every directory above them (after resolving
  links) are owned by root (or the server's user) and not writable by group or others,
  except directories with the sticky bit (like /tmp), where others cannot rename or remove
  what is not theirs.

Anything else is refused, with the reason and the fix in one sentence. The rule is checked
when the directory is read and again just before each run: the script is run by path, and
since only root may change the directories on that path, what was checked is what runs.
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from jetstream.storage.paths import printable


@dataclass(frozen=True)
class Script:
    event: str
    path: Path
    problem: str = ""
    """Why it may not run; empty if it may."""


def find_scripts(directory: Path) -> list[Script]:
    """Every script in `directory`, by event and then by name (runnable or not)."""
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return []
    above = directory_problem(directory, top=True)
    found: list[Script] = []
    for entry in entries:
        if _ignored(entry.name):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            folder = above or _directory_problem(path, sticky_ok=False)
            try:
                children = sorted(os.listdir(path))
            except OSError as exc:
                found.append(Script(entry.name, path, f"cannot be read: {exc.strerror}"))
                continue
            found.extend(Script(entry.name, path / name, folder or script_problem(path / name))
                         for name in children if not _ignored(name))
        else:
            found.append(Script(entry.name, path, above or script_problem(path)))
    return found


def check(script: Script, directory: Path) -> str:
    """The rule again, just before `script` runs: why it may not run now, or ""."""
    problem = directory_problem(directory, top=True)
    if not problem and script.path.parent != directory:
        problem = _directory_problem(script.path.parent, sticky_ok=False)
    return problem or script_problem(script.path)


def script_problem(path: Path) -> str:
    shown = printable(str(path))
    try:
        info = os.lstat(path)
    except OSError as exc:
        return f"{shown} cannot be read: {exc.strerror}"
    if stat.S_ISLNK(info.st_mode):
        return f"{shown} is a symbolic link; put the script itself there"
    if not stat.S_ISREG(info.st_mode):
        return f"{shown} is not a regular file"
    owner = _owner_problem(shown, info)
    if owner:
        return owner
    writable = _writable_by(info.st_mode)
    if writable:
        return (f"{shown} is writable by {writable} (mode {stat.S_IMODE(info.st_mode):04o}); "
                f"run chmod go-w {shown}")
    if not info.st_mode & stat.S_IXUSR:
        return f"{shown} is not executable; run chmod u+x {shown}"
    return ""


def directory_problem(directory: Path, *, top: bool) -> str:
    """Why scripts in `directory` may not run: it, or a directory above it, could be changed
    by someone other than root. `top`: also check the directories above."""
    real = Path(os.path.realpath(directory))
    problem = _directory_problem(real, sticky_ok=False)
    if problem or not top:
        return problem
    for parent in real.parents:
        problem = _directory_problem(parent, sticky_ok=True)
        if problem:
            return problem
    return ""


def _directory_problem(path: Path, *, sticky_ok: bool) -> str:
    shown = printable(str(path))
    try:
        info = os.lstat(path)
    except OSError as exc:
        return f"{shown} cannot be read: {exc.strerror}"
    owner = _owner_problem(shown, info)
    if owner:
        return owner
    writable = _writable_by(info.st_mode)
    if writable and not (sticky_ok and info.st_mode & stat.S_ISVTX):
        return (f"the directory {shown} is writable by {writable} "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); run chmod go-w {shown}")
    return ""


def _owner_problem(shown: str, info: os.stat_result) -> str:
    if info.st_uid in (0, os.geteuid()):
        return ""
    return (f"{shown} is owned by {_user_name(info.st_uid)}, not by {_user_name(os.geteuid())} "
            f"(the user the server runs as); run chown {_user_name(os.geteuid())} {shown}")


def _writable_by(mode: int) -> str:
    group, others = bool(mode & stat.S_IWGRP), bool(mode & stat.S_IWOTH)
    return ("group and others" if group and others else "its group" if group
            else "others" if others else "")


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _ignored(name: str) -> bool:
    return name.startswith(".") or name.endswith("~")
