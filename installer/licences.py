"""Licence check of what the app installs: no copyleft or non-commercial licence unless allowed in writing.

Reads installed metadata only (importlib.metadata), for every package named in the requirements files
and everything those require (Requires-Dist, with environment markers and extras applied):
* License-Expression (PEP 639: an SPDX expression; when present it is authoritative),
* otherwise the License field (a short name or expression, or a whole licence text) and the
  "License ::" classifiers.
Flagged: AGPL, GPL, LGPL, the NVIDIA Source Code License (NSCL) and non-commercial licences (CC BY-NC
and the like). An SPDX "A OR B" is fine when one side is. Anything flagged must be in ALLOWED with the
reason it is acceptable; BUNDLED records packages whose metadata is clean but whose wheels carry a
copyleft program. PLANNED lists what installer/plan.py adds on some machines only (so it is not installed
where the check runs): those are checked from their wheel's METADATA (`inspect_wheel`;
tests/installer/test_triton_windows.py downloads the pinned wheel and does so).
"""
from __future__ import annotations

import importlib.metadata as md
import re
from dataclasses import dataclass, field

FLAG_PATTERNS: tuple[tuple[str, str], ...] = (   # first match wins: AGPL and LGPL before GPL
    ("AGPL", r"\bAGPL|\bAffero\b"),
    ("LGPL", r"\bLGPL|\bGNU Lesser\b|\bGNU Library\b|\bLibrary or Lesser\b"),
    ("GPL", r"\bGPL|\bGNU General Public\b"),
    ("NSCL", r"\bNSCL\b|NVIDIA Source Code License"),
    ("non-commercial", r"\bCC[- ]BY[- ](?:\d\.\d[- ])?NC|NonCommercial|\bnon[- ]?commercial"),
)

# Flagged packages we accept, each with the reason. Keys are normalised names (PEP 503).
ALLOWED: dict[str, str] = {
    "scipy": (
        "scipy itself is BSD-3-Clause. Its License field also carries the licences of the libraries bundled "
        "in the wheel (scipy.libs/): libgfortran, the GCC Fortran runtime (GPL-3.0-or-later WITH "
        "GCC-exception-3.1: the GCC Runtime Library Exception exists so that programs under any licence can "
        "use it), and libquadmath (LGPL-2.1-or-later: a separate shared library loaded at run time, which the "
        "LGPL permits without obligations on the program that uses it). pip downloads the wheel from PyPI on "
        "the user's machine, so we do not redistribute either; an offline bundle that ships the wheel must "
        "carry its licence files (they are in the wheel's dist-info)."
    ),
}

# What we ship ourselves besides pip-installed packages: the one-file launcher TrellisDesktop(.exe), built by
# installer/build_launcher.py. These build tools are checked like the app's packages (tests/installer/test_launcher.py).
SHIPPED_BUILD_TOOLS = ("pyinstaller",)

ALLOWED.update({
    "pyinstaller": (
        "PyInstaller is GPL-2.0-or-later with a special exception: its bootloader (the part copied into every "
        "frozen executable) may be distributed with programs under any licence, and so may the executable "
        "PyInstaller builds. TrellisDesktop(.exe) holds the bootloader, PyInstaller's run-time hooks and "
        "run-time modules (Apache-2.0, per the same COPYING.txt), a Python runtime (PSF licence) and our MIT "
        "launcher code; PyInstaller itself is a build tool we run and never ship. The exception text is in "
        "PyInstaller's COPYING.txt (\"Bootloader Exception\")."
    ),
    "pyinstaller-hooks-contrib": (
        "Its licence file: the standard hooks are GPL-2.0-or-later and only run inside PyInstaller while it "
        "builds (they are never copied into an executable); the runtime hooks, the only files of it that can "
        "be bundled, are Apache-2.0. Our launcher imports only the standard library, so none of its runtime "
        "hooks is bundled either; nothing of it under the GPL is shipped."
    ),
})

# Metadata is clean, but the wheel carries a copyleft program. Not flagged by the check; listed so that
# the decision is written down next to the others.
BUNDLED: dict[str, str] = {
    "imageio-ffmpeg": (
        "imageio-ffmpeg is BSD-2-Clause, but its wheels include an ffmpeg executable configured with "
        "--enable-gpl --enable-version3 (with libx264 and libx265), so that program is GPL-3.0. Allowed: "
        "trellis/utils/render_utils.py runs it as a separate process fed through a pipe (the GPL's 'aggregate', "
        "not a combined work), so our code stays under its own licence, and pip downloads it from PyPI on the "
        "user's machine. If we ever ship it ourselves (an offline installer), we must include the GPL-3.0 text "
        "and offer the matching ffmpeg source. Encoding H.264 in a commercial product may also need a patent "
        "licence: a product decision, not a copyright one."
    ),
}


# Installed by the plan on some machines only (installer/plan.py optional_packages), not from the requirements
# files: name -> the licence its wheel declares and where it is planned. Checked from the wheel (inspect_wheel).
PLANNED: dict[str, str] = {
    "triton-windows": (
        "MIT (classifier 'License :: OSI Approved :: MIT License', licence file: Triton's MIT licence). "
        "Planned on Windows with an NVIDIA GPU of compute capability 7.0 or newer, pinned by installer/plan.py "
        "TRITON_WINDOWS_VERSION (TRITON_WINDOWS_VERSION_CU128 where the plan picks torch 2.11.0)."
    ),
}

BUNDLED["triton-windows"] = (
    "triton-windows is MIT, but its wheels also carry two programs it runs to compile kernels: TinyCC "
    "(triton/runtime/tcc: tcc.exe, libtcc.dll; LGPL-2.1, used unmodified as a separate compiler library that "
    "Triton loads at run time, which the LGPL permits without obligations on the program that uses it) and "
    "NVIDIA's ptxas.exe, libdevice and cuda.lib (triton/backends/nvidia; CUDA Toolkit components that NVIDIA's "
    "CUDA EULA lets applications redistribute). pip downloads the wheel from PyPI on the user's machine, so we "
    "redistribute neither; an offline bundle that ships the wheel must keep its licence files and the TinyCC "
    "source offer of the LGPL."
)


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def flag_labels(text: str) -> list[str]:
    """The flagged licence kinds a free-text licence name mentions ("GPLv3" -> ["GPL"])."""
    for label, pattern in FLAG_PATTERNS:
        if re.search(pattern, text, re.IGNORECASE):
            return [label]
    return []


# -------------------------------------------------------------------------------- SPDX expressions

_TOKEN = re.compile(r"\s*(\(|\)|[A-Za-z0-9.+:-]+)")


def _tokens(expression: str) -> list[str] | None:
    pos, out = 0, []
    text = expression.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            return None
        out.append(m.group(1))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


def spdx_flags(expression: str) -> list[str] | None:
    """Flagged kinds an SPDX expression leaves us no way around, or None if it is not SPDX-shaped.

    "MIT OR GPL-2.0" -> [] (we take MIT); "MIT AND LGPL-2.1" -> ["LGPL"];
    "GPL-3.0-or-later WITH GCC-exception-3.1" -> ["GPL"] (an exception still needs a written allowance).
    """
    tokens = _tokens(expression)
    if not tokens:
        return None
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take():
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def atom():
        tok = take() if peek() is not None else None
        if tok == "(":
            result = either()
            if take() != ")":
                raise ValueError
            return result
        if tok is None or tok in (")", "AND", "OR", "WITH"):
            raise ValueError
        if peek() == "WITH":
            take()
            if peek() is None:
                raise ValueError
            take()
        return set(flag_labels(tok))

    def both():
        result = atom()
        while peek() == "AND":
            take()
            result |= atom()
        return result

    def either():
        options = [both()]
        while peek() == "OR":
            take()
            options.append(both())
        clean = [o for o in options if not o]
        return set() if clean else set().union(*options)

    try:
        result = either()
    except (ValueError, IndexError):
        return None
    if pos != len(tokens):
        return None
    return sorted(result)


# ------------------------------------------------------------------------------ one distribution

@dataclass
class LicenceInfo:
    name: str
    version: str
    licence: str                     # what we read, shortened for display
    flagged: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    allowed_reason: str | None = None

    @property
    def rejected(self) -> bool:
        return bool(self.flagged) and self.allowed_reason is None


_LICENCE_FIELD_LINE = re.compile(r"^\s*License\s*:\s*(.+?)\s*$", re.IGNORECASE)
_LICENCE_TITLE_LINE = re.compile(
    r"^\s*(GNU (AFFERO |LESSER |LIBRARY )?GENERAL PUBLIC LICENSE|NVIDIA Source Code License"
    r"|Creative Commons Attribution[- ]NonCommercial|Attribution-NonCommercial)", re.IGNORECASE)


def _licence_field_flags(text: str) -> tuple[list[str], list[str]]:
    """Flags from the License field: a name/expression, or a whole licence text (then only its
    'License: X' lines and licence titles count, not every sentence that mentions the GPL)."""
    text = text.strip()
    if not text or text.upper() in ("UNKNOWN", "NONE"):
        return [], []
    lines = text.splitlines()
    if len(lines) == 1 and len(text) <= 200:
        flags = spdx_flags(text)
        if flags is None:
            flags = flag_labels(text)
        return flags, [f"License: {text}"] if flags else []
    flags, evidence = set(), []
    for line in lines:
        m = _LICENCE_FIELD_LINE.match(line)
        found = None
        if m:
            found = spdx_flags(m.group(1))
            if found is None:
                found = flag_labels(m.group(1))
        if not found and _LICENCE_TITLE_LINE.match(line):
            found = flag_labels(line)
        if found:
            flags.update(found)
            evidence.append(f"License text line: {line.strip()[:120]}")
    return sorted(flags), evidence


def inspect_metadata(name: str, version: str, metadata) -> LicenceInfo:
    """Classify one distribution from its metadata (anything with .get(key) and .get_all(key))."""
    expression = (metadata.get("License-Expression") or "").strip()
    licence_text = metadata.get("License") or ""
    classifiers = [c for c in (metadata.get_all("Classifier") or []) if c.startswith("License ::")]
    info = LicenceInfo(name=name, version=version, licence="")
    if expression:
        info.licence = expression
        flags = spdx_flags(expression)
        if flags is None:
            flags = flag_labels(expression)
        if flags:
            info.evidence.append(f"License-Expression: {expression}")
        info.flagged = sorted(set(flags))
    else:
        flags, evidence = _licence_field_flags(licence_text)
        for c in classifiers:
            found = flag_labels(c.split("::", 1)[1])
            if found:
                flags = sorted(set(flags) | set(found))
                evidence.append(f"classifier: {c}")
        first = licence_text.strip().splitlines()[0][:60] if licence_text.strip() else ""
        info.licence = first or "; ".join(c.split("::")[-1].strip() for c in classifiers) or "unknown"
        info.flagged, info.evidence = sorted(set(flags)), evidence
    if info.flagged:
        info.allowed_reason = ALLOWED.get(normalise(name))
    return info


def inspect_wheel(path: str) -> LicenceInfo:
    """Classify a wheel file from the METADATA inside it, without installing it."""
    import email.parser
    import zipfile

    with zipfile.ZipFile(path) as z:
        names = [n for n in z.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        if len(names) != 1:
            raise ValueError(f"{path}: expected one .dist-info/METADATA, found {len(names)}")
        text = z.read(names[0]).decode("utf-8", "replace")
    metadata = email.parser.Parser().parsestr(text, headersonly=True)
    return inspect_metadata(metadata.get("Name") or "", metadata.get("Version") or "", metadata)


# ------------------------------------------------------------------------------ what is installed

def _packaging():
    try:
        from packaging.markers import default_environment
        from packaging.requirements import Requirement
    except ImportError:
        try:
            from pip._vendor.packaging.markers import default_environment
            from pip._vendor.packaging.requirements import Requirement
        except ImportError:
            return None
    return Requirement, default_environment


def _parse(line: str):
    """(name, applies) for one requirement string; applies is False when its marker excludes it here."""
    tools = _packaging()
    if tools is None:   # no marker evaluation: take the name, skip extras-only dependencies
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if not m:
            return None, False
        return m.group(1), "extra" not in line.partition(";")[2]
    requirement_cls, default_environment = tools
    req = requirement_cls(line)
    if req.marker is None:
        return req.name, True
    env = dict(default_environment())
    env["extra"] = ""
    return req.name, req.marker.evaluate(env)


def requirement_names(path: str) -> list[str]:
    """Package names in a requirements file whose markers apply on this machine."""
    names = []
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = re.split(r"(^|\s)#", raw, maxsplit=1)[0].strip()
            if not line or line.startswith("-"):
                continue
            name, applies = _parse(line)
            if name and applies:
                names.append(name)
    return names


@dataclass
class LicenceReport:
    checked: list[LicenceInfo]
    missing: list[str]                 # required here but not installed: cannot be checked

    @property
    def rejected(self) -> list[LicenceInfo]:
        return [i for i in self.checked if i.rejected]

    @property
    def allowed(self) -> list[LicenceInfo]:
        return [i for i in self.checked if i.flagged and not i.rejected]

    def summary(self) -> str:
        lines = [f"{len(self.checked)} installed distributions checked"]
        for i in self.rejected:
            lines.append(f"REJECTED {i.name} {i.version}: {', '.join(i.flagged)} ({'; '.join(i.evidence)})")
        for i in self.allowed:
            lines.append(f"allowed  {i.name} {i.version}: {', '.join(i.flagged)}: {i.allowed_reason}")
        for name in self.missing:
            lines.append(f"MISSING  {name}: required but not installed, so its licence was not checked")
        for name, reason in BUNDLED.items():
            if any(normalise(i.name) == name for i in self.checked):
                lines.append(f"bundled  {name}: {reason}")
        return "\n".join(lines)


def check_distributions(roots: list[str]) -> LicenceReport:
    """Inspect the installed distributions `roots` and, recursively, everything they require."""
    seen: dict[str, LicenceInfo] = {}
    missing: list[str] = []
    queue = list(roots)
    while queue:
        name = queue.pop(0)
        key = normalise(name)
        if key in seen or key in missing:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            missing.append(key)
            continue
        seen[key] = inspect_metadata(dist.metadata["Name"] or name, dist.version, dist.metadata)
        for requirement in dist.requires or []:
            dep, applies = _parse(requirement)
            if dep and applies:
                queue.append(dep)
    return LicenceReport(checked=sorted(seen.values(), key=lambda i: normalise(i.name)), missing=missing)


def check_requirements(*paths: str) -> LicenceReport:
    roots: list[str] = []
    for p in paths:
        roots += requirement_names(p)
    return check_distributions(roots)
