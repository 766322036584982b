"""`distill fit` publishes at the end of a run when the recipe has a ``publish:`` section.

```yaml
publish:
  output: runs/capretrieval-en/published   # the sentence-transformers folder + README.md
  repo_id: my-org/minilm-capretrieval-en   # optional
  push: false                              # true uploads with huggingface_hub
```
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback


@dataclass
class PublishSettings:
    """The recipe's ``publish:`` section; no ``output`` means "do not publish"."""

    output: str | None = None
    repo_id: str | None = None
    push: bool = False
    private: bool = False
    reports: list[str] = field(default_factory=list)  # NAME=path.json, as `distill publish --report`
    license: str = "apache-2.0"

    def __post_init__(self) -> None:
        if self.push and not self.repo_id:
            raise ValueError("publish.push needs publish.repo_id (ORG/NAME)")


class PublishStudent(Callback):
    """After ``ExportStudent`` (it must come later in the callback list): `distill publish` on this run."""

    def __init__(self, output: str | None = None, repo_id: str | None = None, push: bool = False,
                 private: bool = False, reports: list[str] | None = None, license: str = "apache-2.0"):
        # the recipe's ``publish:`` keys are this signature (a LightningCLI callback group)
        self.settings = PublishSettings(output, repo_id, push, private, list(reports or []), license)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not self.settings.output:
            return
        from distill.publish import publish

        s = self.settings
        publish(Path(trainer.default_root_dir), s.output, repo_id=s.repo_id, push=s.push, private=s.private,
                reports=s.reports, license=s.license)
