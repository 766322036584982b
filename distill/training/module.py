"""DistillationModule: a frozen cross-encoder teacher and a dual-encoder student, trained with
``kl_weight · listwise KL + contrastive_weight · InfoNCE`` (CADET, Tamber et al. 2025).

Manual optimisation, because large batches go through the GradCache engine (chunked two-pass
encoding) and the contrastive term needs every passage of the batch — and of every other device.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import lightning as L
import torch

from distill.hardware import training_attention
from distill.losses import (DistillationObjective, ObjectiveConfig, list_entropy, list_scores, match_temperature,
                            normalize_teacher)
from distill.training.buckets import encode_in_buckets, length_order, take_rows, trim_padding
from distill.training.datamodule import ListBatch, collate_lists
from distill.training.distributed import gather_other_ranks, gather_other_ranks_objects
from distill.training.gradcache import GradCache
from distill.training.metrics import dev_list_metrics
from students.options import StudentOverrides
from teachers.spec import TeacherSpec


@dataclass
class StudentConfig(StudentOverrides):
    """The student dual encoder: a model name plus ``students.StudentOptions`` fields, each None for
    "the model name's default" (pooling, normalize, prefixes, max lengths, projection_dim)."""

    name: str = "all-MiniLM-L6-v2"
    gradient_checkpointing: bool = False

    def options(self) -> dict:
        return {**self.changes(), "gradient_checkpointing": self.gradient_checkpointing}


@dataclass
class OptimizerConfig:
    lr: float = 2e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float | None = 1.0
    min_lr_ratio: float = 0.0  # the linear decay ends at min_lr_ratio × lr (CADET: 0.1)
    fused: bool | None = None  # AdamW's fused kernel wherever gradients are whole and unscaled; False: never

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optimizer.lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"optimizer.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"optimizer.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")

    def lr_factor(self, step: int, total: int) -> float:
        """Multiplier of ``lr`` at optimiser step ``step`` of ``total``: linear warm-up over
        ``warmup_ratio × total`` steps, then linear decay from 1 to ``min_lr_ratio`` at ``total``."""
        warmup = int(self.warmup_ratio * total)
        if step < warmup:
            return (step + 1) / (warmup + 1)
        remaining = max(0.0, (total - step) / max(1, total - warmup))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * remaining


class DistillationModule(L.LightningModule):
    """Args mirror the recipe YAML's ``model:`` section.

    Args:
        student: the dual encoder to train.
        teacher: the frozen cross-encoder (used only for lists without scores; None forbids that).
        objective: loss weights and temperatures (KL-only / InfoNCE-only are weights at 0). Values
            read from the training data — the teacher scores' (p1, p99) for ``percentile`` and an
            ``auto`` student temperature — are set at setup / fit start and kept in the checkpoint.
        optimizer: AdamW with linear warm-up then linear decay (to ``min_lr_ratio × lr``), gradient clipping.
        chunk_size: GradCache chunk (sequences per encoder pass); None encodes the batch at once.
        bucket_size: sequences per length-sorted group, each padded only to its own longest (about
            half of a step's compute is padding otherwise); None pads the whole batch to its longest.
            Under GradCache the chunks are the groups (rows are length-sorted before chunking).
        cross_device_negatives: under DDP, every other device's passages are InfoNCE negatives.
        attention: the student's attention kernel while training: ``auto`` picks by device
            (``distill.hardware.training_attention``: eager on CPU for batches up to 128 tokens), or a transformers name
            (``sdpa``, ``eager``, ...). A speed choice; exports and evaluation are unaffected.
    """

    def __init__(self, student: StudentConfig = StudentConfig(), teacher: TeacherSpec | None = TeacherSpec(),
                 objective: ObjectiveConfig = ObjectiveConfig(), optimizer: OptimizerConfig = OptimizerConfig(),
                 chunk_size: int | None = None, bucket_size: int | None = 64, cross_device_negatives: bool = True,
                 attention: str = "auto"):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        from students import load_student

        self.student_config, self.teacher_config = student, teacher
        self.student = load_student(student.name, **student.options())
        # from_pretrained leaves models in eval mode; Lightning keeps modules' modes as it finds them
        self.student.train()
        self.objective = DistillationObjective(objective)
        self.optimizer_config = optimizer
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 or null, got {chunk_size}")
        self.chunk_size = chunk_size
        if bucket_size is not None and bucket_size < 1:
            raise ValueError(f"bucket_size must be >= 1 or null, got {bucket_size}")
        self.bucket_size = bucket_size
        self.cross_device_negatives = cross_device_negatives
        self.attention = attention
        self._teacher = None  # built lazily: an ONNX session is no nn.Module and never checkpointed

    # ---- teacher ---------------------------------------------------------------------------
    @property
    def teacher(self):
        if self._teacher is None:
            if self.teacher_config is None:
                raise ValueError("a list has no teacher scores and the recipe names no teacher (model.teacher)")
            self._teacher = self.teacher_config.load()
        return self._teacher

    def fill_teacher_scores(self, batch: ListBatch) -> torch.Tensor:
        scores = batch.teacher_scores
        missing = torch.isnan(scores) & batch.mask
        if missing.any():
            rows, cols = missing.nonzero(as_tuple=True)
        else:
            return scores.masked_fill(~batch.mask, 0.0)
        L_ = scores.shape[1]
        queries = [batch.queries[i] for i in rows.tolist()]
        passages = [batch.passages[i * L_ + j] for i, j in zip(rows.tolist(), cols.tolist())]
        scores = scores.clone()
        scores[rows, cols] = self.teacher.score(queries, passages).to(scores)
        return scores.masked_fill(~batch.mask, 0.0)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # dropout masks after a resume must continue the interrupted run's random stream
        checkpoint["rng_cpu"] = torch.get_rng_state()
        if torch.cuda.is_available():
            checkpoint["rng_cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # checkpoints written before the objective kept state: load with the values set at setup
        checkpoint.get("state_dict", {}).setdefault("objective._extra_state", self.objective.get_extra_state())
        if "rng_cpu" in checkpoint:
            torch.set_rng_state(checkpoint["rng_cpu"])
        if "rng_cuda" in checkpoint and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["rng_cuda"])

    # ---- values read from the training data ------------------------------------------------
    def setup(self, stage: str) -> None:
        # the checkpoint (restored after setup) overrides these on resume with the same numbers
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        percentiles = getattr(datamodule, "score_percentiles", None)
        if self.objective.percentiles is None and percentiles is not None:
            self.objective.set_percentiles(*percentiles)
        if self.objective.config.teacher_normalization == "percentile" and self.objective.percentiles is None:
            raise ValueError("model.objective.teacher_normalization: percentile needs teacher scores in the training "
                             "lists (their p1 / p99); these lists carry none")

    def on_fit_start(self) -> None:
        """The training attention kernel; then the entropies of the student's and
        the teacher's list distributions on the first training lists (``init/student_entropy``,
        ``init/teacher_entropy``), and the ``auto`` student temperature."""
        if self.attention == "auto":  # by each batch's padded length (see training_attention)
            self.student.set_attention(functools.partial(training_attention, self.device))
        elif self.attention is not None:
            self.student.set_attention(self.attention)
        config = self.objective.config
        chosen = self.objective.student_temperature
        if chosen is not None and self.trainer.ckpt_path:
            return  # a resumed run: measured (and chosen) when it started
        rows = getattr(getattr(self.trainer, "datamodule", None), "train_rows", None)
        if not rows:
            if chosen is None:
                raise ValueError("model.objective.student_temperature: auto needs the datamodule's training lists")
            return
        student, teacher, mask = self._first_lists(rows[:config.entropy_lists])
        target = list_entropy(teacher, config.teacher_temperature, mask).mean().item()
        if chosen is None:
            chosen = match_temperature(student, target, mask)
            chosen = float(self.trainer.strategy.broadcast(chosen, src=0))
            self.objective.set_student_temperature(chosen)
        measured = list_entropy(student, chosen, mask).mean().item()
        values = {"init/student_entropy": measured, "init/teacher_entropy": target, "init/student_temperature": chosen}
        for logger in self.loggers:
            logger.log_metrics(values, step=0)
        if self.trainer.is_global_zero:
            uniform = torch.log(mask.sum(-1).float()).mean().item()
            print(f"init: over {len(mask)} training lists, student entropy {measured:.4f} nats at T_s={chosen:.4g}"
                  f"{' (auto)' if config.student_temperature == 'auto' else ''}, teacher entropy {target:.4f} at "
                  f"T_t={config.teacher_temperature:g} ({config.teacher_normalization}), uniform {uniform:.4f}",
                  flush=True)

    @torch.no_grad()  # a measurement: no graph over hundreds of lists
    def _first_lists(self, rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Student scores, teacher scores on the KL's scale, and the mask, ``[N, L]`` each, for ``rows``
        (dropout off: a measurement, not a training step)."""
        size = self.trainer.datamodule.list_size
        was_training = self.student.training
        self.student.eval()
        students, teachers, masks = [], [], []
        try:
            for start in range(0, len(rows), 64):
                batch = collate_lists(rows[start:start + 64], size).to(self.device)
                scores = self.fill_teacher_scores(batch)
                q = self._encode(self.student.tokenize_queries(batch.queries), "query")
                p = self._encode(self.student.tokenize_passages(batch.passages), "passage")
                students.append(list_scores(q.float(), p.float()))
                teachers.append(normalize_teacher(scores, self.objective.config.teacher_normalization, batch.mask,
                                                  self.objective.percentiles))
                masks.append(batch.mask)
        finally:
            self.student.train(was_training)
        return torch.cat(students), torch.cat(teachers), torch.cat(masks)

    def on_train_epoch_start(self) -> None:
        self.student.train()  # fine-tuning wants dropout on, whatever ran before (export, monitoring)

    # ---- loss ------------------------------------------------------------------------------
    def _loss(self, query_emb, passage_emb, scores, batch: ListBatch):
        extra = extra_ids = extra_mask = None
        if self.cross_device_negatives and self.objective.config.contrastive_weight > 0 and self.trainer.world_size > 1:
            extra = gather_other_ranks(passage_emb)
            extra_ids = [d for ids in gather_other_ranks_objects(batch.doc_ids) for row in ids for d in row]
            extra_mask = torch.tensor([bool(d) for d in extra_ids], device=passage_emb.device)
        out = self.objective(query_emb, passage_emb, scores, batch.doc_ids, candidate_mask=batch.mask,
                             extra_passage_emb=extra, extra_doc_ids=extra_ids, extra_passage_mask=extra_mask)
        return out["loss"], {k: v for k, v in out.items() if k != "loss"}

    def _encode(self, tokens, side: str):
        return encode_in_buckets(lambda t: self.student.forward_tokens(t, side), tokens, self.bucket_size)

    def training_step(self, batch: ListBatch, batch_idx: int):
        opt, sched = self.optimizers(), self.lr_schedulers()
        scores = self.fill_teacher_scores(batch)
        q_tok = self.student.tokenize_queries(batch.queries)
        p_tok = self.student.tokenize_passages(batch.passages)
        if self.chunk_size is None:
            q = self._encode(q_tok, "query")
            p = self._encode(p_tok, "passage")
            loss, terms = self._loss(q, p, scores, batch)
            self.manual_backward(loss)
            loss = loss.detach()
        else:
            # rows sorted by length so each chunk is one length bucket (trimmed in the encoder);
            # the loss sees the embeddings back in list order
            inputs, inverse = {}, {}
            for side, tok in (("query", q_tok), ("passage", p_tok)):
                order, inverse[side] = length_order(tok) if self.bucket_size else (None, None)
                inputs[side] = take_rows(tok, order) if order is not None else dict(tok)

            def unsort(emb, side):
                return emb if inverse[side] is None else emb.index_select(0, inverse[side].to(emb.device))

            engine = GradCache(
                {"query": lambda b: self.student.forward_tokens(trim_padding(b), "query"),
                 "passage": lambda b: self.student.forward_tokens(trim_padding(b), "passage")},
                lambda q, p: self._loss(unsort(q, "query"), unsort(p, "passage"), scores, batch),
                chunk_size=self.chunk_size,
                backward_fn=lambda t, g: self.manual_backward(t, gradient=g),
            )
            result = engine(inputs)
            loss, terms = result.loss, result.aux
        if not torch.isfinite(loss).all():  # stop before the step: NaN weights are never saved or exported
            raise RuntimeError(f"training loss is {loss.item()} at step {self.global_step}, batch {batch_idx} "
                               f"(queries {', '.join(batch.query_ids[:4])}{', ...' if len(batch) > 4 else ''}); "
                               "stopped before the optimiser step")
        if self.optimizer_config.max_grad_norm:
            if opt.optimizer.defaults["fused"]:
                # Lightning refuses to clip for any fused optimiser (it fears fp16 loss scaling, which
                # _fused_optimizer rules out); unscaled local gradients clip as it would do itself
                torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.optimizer_config.max_grad_norm)
            else:
                self.clip_gradients(opt, gradient_clip_val=self.optimizer_config.max_grad_norm,
                                    gradient_clip_algorithm="norm")
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        size = len(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        for name, value in terms.items():
            self.log(f"train/{name}", value, batch_size=size)
        self.log("train/lr", sched.get_last_lr()[0], batch_size=size)
        return loss

    # ---- honest validation: the held-out dev lists only -------------------------------------
    def validation_step(self, batch: ListBatch, batch_idx: int):
        scores = self.fill_teacher_scores(batch)
        # the training step's encoding path: length buckets, so dev lists skip the padding too
        q = self._encode(self.student.tokenize_queries(batch.queries), "query")
        p = self._encode(self.student.tokenize_passages(batch.passages), "passage")
        student = list_scores(q.float(), p.float())
        size = len(batch)
        # the objective's own KL term, with the temperatures and normalisation the run trains with
        self.log("dev/kl", self.objective.kl_term(student, scores, batch.mask), prog_bar=True, batch_size=size,
                 sync_dist=True)
        metrics = dev_list_metrics(student, scores, batch.mask)
        if metrics:
            self.log("dev/kendall_tau", metrics["kendall_tau"], batch_size=size, sync_dist=True)
            self.log("dev/ndcg@10_vs_teacher", metrics["ndcg@10_vs_teacher"], prog_bar=True, batch_size=size,
                     sync_dist=True)

    # ---- optimiser -------------------------------------------------------------------------
    @property
    def _fused_optimizer(self) -> bool:
        """AdamW's fused kernel (one pass over all parameters; 4.8x faster than the per-tensor loop
        on this CPU, 55 ms of a 1.3 s step): where gradients are whole and unscaled, i.e. not under
        FSDP (sharded) or fp16 loss scaling."""
        trainer = self._trainer
        if trainer is None or self.optimizer_config.fused is False:
            return False
        sharded = "fsdp" in type(trainer.strategy).__name__.lower()
        scaled = getattr(trainer.precision_plugin, "scaler", None) is not None
        return not sharded and not scaled and self.device.type in ("cpu", "cuda")

    def configure_optimizers(self):
        cfg = self.optimizer_config
        decay, no_decay = [], []
        for name, param in self.student.named_parameters():
            if param.requires_grad:
                (no_decay if param.ndim < 2 or "LayerNorm" in name or "norm" in name.lower() else decay).append(param)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, fused=self._fused_optimizer)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: cfg.lr_factor(step, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
