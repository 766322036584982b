"""`distill publish`: a run → sentence-transformers folder + model card whose numbers reproduce;
`--push` against a local fake of the hub API; `distill fit` publishing through a `publish:` section."""
from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import yaml

from factories import WORDS, make_lists, make_tiny_bert

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    keep = ("PATH", "HOME", "LANG", "TMPDIR", "DISTILL_DATA", "PYTHONPATH")
    base = {k: os.environ[k] for k in keep if k in os.environ}
    base.update(PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false", HF_HUB_DISABLE_TELEMETRY="1",
                PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "distill.cli", *args], cwd=ROOT, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def _beir(root: Path) -> Path:
    """A tiny BEIR folder over the factories' vocabulary: each query is two words of its one relevant doc."""
    rng = random.Random(1)
    (root / "qrels").mkdir(parents=True)
    docs = {f"d{i}": " ".join(rng.sample(WORDS, 5)) for i in range(30)}
    queries = {f"q{i}": (f"d{i}", " ".join(docs[f"d{i}"].split()[:2])) for i in range(12)}
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "text": t}) + "\n" for d, t in docs.items()))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, (_, t) in queries.items()))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                             + "".join(f"{q}\t{d}\t1\n" for q, (d, _) in queries.items()))
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One `distill fit` on the smoke recipe with an evaluation set and a `publish:` section."""
    from distill.data.lists import lists_from_rows, save_lists

    base = tmp_path_factory.mktemp("publish")
    bert = make_tiny_bert(base / "bert", dropout=0.0)
    rows = [json.loads(line) for line in make_lists(base / "rows.jsonl").read_text().splitlines()]
    lists = save_lists(lists_from_rows(rows), base / "lists")
    # what `distill mine` writes beside its lists; the card reads corpus, counts, filter and types
    (lists / "stats.json").write_text(json.dumps({
        "config": {"corpus": "toy-corpus", "filter": {"source_top_k": 5}}, "lists": len(rows),
        "candidates_per_list": 4.0, "filtered": {"source_not_in_teacher_top_k": 3},
        "query_types": {"keywords": len(rows)}}))
    beir = _beir(base / "toyset")
    out = _cli("fit", "--config", str(ROOT / "recipes/smoke.yaml"), "--model.student.name", str(bert),
               "--model.student.query_prefix", "query: ", "--data.lists", str(lists),
               "--trainer.default_root_dir", str(base / "run"), "--trainer.max_epochs", "2",
               "--trainer.precision", "32-true", f"--evaluation.datasets=[{beir}]",
               "--publish.output", str(base / "from-fit"), "--publish.repo_id", "my-org/tiny-student")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return {"run": base / "run", "bert": bert, "beir": beir, "base": base, "fit_stdout": out.stdout}


def _card_metric(readme: Path, dataset: str, metric: str) -> float:
    text = readme.read_text()
    front = yaml.safe_load(text.split("---")[1])
    for result in front["model-index"][0]["results"]:
        if result["dataset"]["name"] == dataset:
            return next(m["value"] for m in result["metrics"] if m["type"] == metric)
    raise AssertionError(f"{dataset} not in model-index")


def test_fit_publishes_at_the_end_without_pushing(run):
    folder = run["base"] / "from-fit"
    assert (folder / "README.md").is_file() and (folder / "modules.json").is_file()
    assert "would upload" in run["fit_stdout"] and "my-org/tiny-student" in run["fit_stdout"]


def test_published_folder_card_and_reproduced_numbers(run, tmp_path):
    beir, bert = str(run["beir"]), str(run["bert"])
    base_report = tmp_path / "base.json"
    out = _cli("evaluate", "--model", bert, "--dataset", beir, "--output", str(base_report), "--quiet",
               "--precision", "fp32")
    assert out.returncode == 0, out.stderr[-2000:]
    folder = tmp_path / "published"
    out = _cli("publish", str(run["run"]), "--output", str(folder), "--repo-id", "my-org/tiny-student",
               "--report", f"zero-shot={base_report}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "would upload" in out.stdout and "README.md" in out.stdout and "model.safetensors" in out.stdout
    assert "metrics.json" not in {p.name for p in folder.iterdir()}  # run bookkeeping stays in the run

    readme = folder / "README.md"
    text = readme.read_text()
    front = yaml.safe_load(text.split("---")[1])
    assert front["library_name"] == "sentence-transformers" and front["pipeline_tag"] == "sentence-similarity"
    assert front["datasets"] == ["toy-corpus"] and "listwise-distillation" in front["tags"]
    assert front["license"] == "apache-2.0"
    # the recipe verbatim, the objective's temperatures, the lists' stats, the comparison rows, citations
    recipe = next(run["run"].glob("**/config.yaml"))
    assert recipe.read_text().strip() in text and f"distill fit --config {recipe}" in text
    assert "teacher 0.3" in text and "| InfoNCE | 0.1 | 0.01" in text
    assert "toy-corpus" in text and '"source_not_in_teacher_top_k": 3' in text and "| keywords | 24 |" in text
    assert "| zero-shot |" in text and "| **student** |" in text
    for cite in ("Tamber", "Granularity Dilemma", "Large Dual Encoders", "Sentence-BERT"):
        assert cite in text
    assert "distill fit --config" in text and "encode_query" in text

    # the card's numbers reproduce from the folder alone
    out = _cli("evaluate", "--model", str(folder), "--dataset", beir, "--quiet", "--output", str(tmp_path / "r.json"))
    assert out.returncode == 0, out.stderr[-2000:]
    measured = json.loads((tmp_path / "r.json").read_text())
    assert abs(measured["ndcg@10"] - _card_metric(readme, "toyset", "ndcg@10")) <= 0.01

    # loadable by sentence-transformers alone; encode_query applies the query prefix from the prompts
    from sentence_transformers import SentenceTransformer

    from students import load_student

    st = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    student = load_student(folder, bf16=False)
    assert student.query_prefix == "query: "
    texts = ["the cat sat", "what is a dog"]
    torch.testing.assert_close(st.encode_query(texts, convert_to_tensor=True), student.encode_queries(texts),
                               atol=1e-5, rtol=0)
    assert not torch.allclose(st.encode_query(texts, convert_to_tensor=True), st.encode_document(texts, convert_to_tensor=True))


def test_bad_inputs_are_one_line_errors(run, tmp_path):
    cases = [
        (["publish", str(tmp_path / "nope"), "--output", str(tmp_path / "o")], "no such run folder"),
        (["publish", str(run["run"]), "--output", str(tmp_path / "o"), "--report", "base.json"], "NAME=path.json"),
        (["publish", str(run["run"]), "--output", str(tmp_path / "o"), "--push"], "--repo-id"),
    ]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"dataset": "toyset", "ndcg@10": 0.5}))
    cases.append((["publish", str(run["run"]), "--output", str(tmp_path / "o"), "--report", f"x={bad}"],
                  f"{bad}: field 'recall@100' missing"))
    for args, message in cases:
        out = _cli(*args)
        assert out.returncode == 2 and message in _one_error_line(out.stderr), out.stderr


def _one_error_line(stderr: str) -> str:
    """The error line; loading progress bars may precede it, a traceback may not."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("distill: error:")]
    assert len(errors) == 1 and stderr.rstrip().endswith(errors[0]), stderr
    return errors[0]


# ---- --push against a local fake of the hub API ---------------------------------------------------

class FakeHub(BaseHTTPRequestHandler):
    """Just enough of the hub's HTTP API for create_repo + upload_folder (every file sent inline)."""

    calls: list = []
    files: dict = {}

    def log_message(self, *args):
        pass

    def _root(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def _reply(self, body: dict, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.calls.append(("POST", self.path, self.headers.get("Authorization")))
        if self.path == "/api/repos/create":
            request = json.loads(body)
            private = request.get("private") or request.get("visibility") == "private"  # hub API, old and new
            self.calls.append(("create", request["name"], request.get("organization"), private))
            return self._reply({"url": f"{self._root()}/{request.get('organization')}/{request['name']}"})
        if self.path == "/api/validate-yaml":  # the hub checks the card's front matter before the commit
            self.calls.append(("validate-yaml", json.loads(body).get("repoType")))
            return self._reply({"errors": [], "warnings": []})
        if "/preupload/" in self.path:
            paths = [f["path"] for f in json.loads(body)["files"]]
            return self._reply({"files": [{"path": p, "uploadMode": "regular", "shouldIgnore": False} for p in paths]})
        if "/commit/" in self.path:
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item.get("key") == "file":
                    self.files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            return self._reply({"commitUrl": f"{self._root()}/my-org/tiny-student/commit/{'a' * 40}", "commitOid": "a" * 40,
                                "pullRequestUrl": None})
        return self._reply({"error": f"unexpected {self.path}"}, 404)

    def do_GET(self):
        self.calls.append(("GET", self.path, None))
        return self._reply({"error": f"unexpected {self.path}"}, 404)


def test_push_uploads_the_folder_to_the_hub_api(run, tmp_path):
    FakeHub.calls, FakeHub.files = [], {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        folder = tmp_path / "pushed"
        out = _cli("publish", str(run["run"]), "--output", str(folder), "--repo-id", "my-org/tiny-student",
                   "--push", "--private",
                   env={"HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}", "HF_TOKEN": "hf_fake_token"})
    finally:
        server.shutdown()
        thread.join()
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert ("create", "tiny-student", "my-org", True) in FakeHub.calls and ("validate-yaml", "model") in FakeHub.calls
    assert all(call[2] == "Bearer hf_fake_token" for call in FakeHub.calls if call[0] == "POST")
    local = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert FakeHub.files == local  # every file, byte for byte
    assert "README.md" in FakeHub.files and "model.safetensors" in FakeHub.files
    assert "pushed" in out.stdout


def test_push_without_network_fails_in_one_line_after_writing(run, tmp_path):
    folder = tmp_path / "offline"
    out = _cli("publish", str(run["run"]), "--output", str(folder), "--repo-id", "my-org/tiny-student", "--push",
               env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_fake_token"})
    assert out.returncode == 2
    assert "push to http://127.0.0.1:9 failed" in _one_error_line(out.stderr), out.stderr
    assert (folder / "README.md").is_file() and (folder / "modules.json").is_file()
