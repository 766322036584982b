"""The one chunked-encoding engine: GradCache (Gao et al. 2021, "Scaling Deep Contrastive Learning
Batch Size under Memory Limited Setup").

A listwise / contrastive loss needs every embedding of the batch at once, but activations for the
whole batch do not fit. GradCache splits the step in two:

1. encode every chunk under ``torch.no_grad`` (cheap in memory), remembering each chunk's RNG state;
   compute the loss on the detached full embeddings and backpropagate to them only, which caches
   d loss / d embedding;
2. re-encode each chunk with autograd under its replayed RNG state (so dropout masks are the
   ones the loss saw) and backpropagate the cached gradient slice into the encoder.

The parameter gradients equal those of one big forward + backward; peak activation memory is that
of one chunk. Nothing here steps an optimiser: call it from Lightning manual optimisation and pass
``backward_fn=lambda t, g: self.manual_backward(t, gradient=g)`` so the precision plugin sees every
backward. It runs inside whatever autocast context the caller set (both passes see the same one).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import Tensor

EncodeFn = Callable[[Any], Tensor]
# returns the loss, or (loss, aux dict)
LossFn = Callable[..., "Tensor | tuple[Tensor, dict[str, Any]]"]
BackwardFn = Callable[[Tensor, Tensor], None]


@dataclass
class GradCacheOutput:
    loss: Tensor  # detached scalar
    aux: dict[str, Any] = field(default_factory=dict)  # the loss's extra outputs, tensors detached
    embeddings: dict[str, Tensor] = field(default_factory=dict)  # pass-1 embeddings per side, detached


class RngState:
    """CPU (and CUDA, for the devices in use) generator states, replayable later."""

    def __init__(self, cuda_devices: list[int]) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda_devices = cuda_devices
        self.cuda = [torch.cuda.get_rng_state(d) for d in cuda_devices]

    @classmethod
    def capture(cls, inputs: Any) -> "RngState":
        devices: set[int] = set()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            # the model may live on the current device while the chunk is still on the host
            devices.add(torch.cuda.current_device())
            devices.update(t.device.index for t in _tensors(inputs) if t.is_cuda)
        return cls(sorted(devices))

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        # fork_rng restores the generators on exit, so replaying leaves the global stream untouched
        with torch.random.fork_rng(devices=self.cuda_devices):
            torch.set_rng_state(self.cpu)
            for device, state in zip(self.cuda_devices, self.cuda):
                torch.cuda.set_rng_state(state, device)
            yield


def _tensors(inputs: Any) -> list[Tensor]:
    if isinstance(inputs, Tensor):
        return [inputs]
    if isinstance(inputs, Mapping):
        return [v for v in inputs.values() if isinstance(v, Tensor)]
    raise TypeError(f"inputs must be a Tensor or a mapping of tensors, got {type(inputs).__name__}")


def batch_size(inputs: Any) -> int:
    tensors = _tensors(inputs)
    if not tensors:
        raise ValueError("inputs hold no tensors")
    sizes = {t.size(0) for t in tensors}
    if len(sizes) != 1:
        raise ValueError(f"input tensors disagree on the batch size: {sorted(sizes)}")
    return sizes.pop()


def split_inputs(inputs: Any, chunk_size: int | None) -> list[Any]:
    """Chunks of at most ``chunk_size`` rows (one chunk when None); a mapping stays a dict per chunk."""
    n = batch_size(inputs)
    if chunk_size is None or chunk_size >= n:
        return [inputs]
    if chunk_size <= 0:
        raise ValueError(f"chunk size must be positive, got {chunk_size}")
    if isinstance(inputs, Tensor):
        return list(inputs.split(chunk_size))
    return [{k: (v[s:s + chunk_size] if isinstance(v, Tensor) else v) for k, v in inputs.items()}
            for s in range(0, n, chunk_size)]


def _detach(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, dict):
        return {k: _detach(v) for k, v in value.items()}
    return value


class GradCache:
    """Chunked two-pass encoding for a loss over all embeddings of a batch.

    ``encoders`` maps a side name to its encoder function (chunk inputs → [n, D]); the loss is called
    with the full embeddings positionally, in the order of ``encoders``, plus the keyword arguments
    given to ``__call__``. ``chunk_size`` is the number of sequences per encoder pass on every side
    (None: no chunking). Under DDP every chunk's backward all-reduces (Lightning's manual
    optimisation does not defer it); that costs bandwidth, not correctness.

    The loss's own parameters (a learnt temperature, say) get their gradient in pass 1 through plain
    autograd, not ``backward_fn``; fp16 loss scaling would leave those unscaled (bf16 needs none).
    """

    def __init__(
        self,
        encoders: Mapping[str, EncodeFn],
        loss_fn: LossFn,
        chunk_size: int | None = None,
        backward_fn: BackwardFn | None = None,
    ) -> None:
        if not encoders:
            raise ValueError("GradCache needs at least one encoder")
        self.encoders = dict(encoders)
        self.loss_fn = loss_fn
        self.chunk_size = chunk_size
        self.backward_fn = backward_fn or torch.autograd.backward

    def __call__(self, inputs: Mapping[str, Any], **loss_kwargs: Any) -> GradCacheOutput:
        missing = set(self.encoders) - set(inputs)
        if missing:
            raise KeyError(f"no inputs for side(s) {sorted(missing)}")
        chunks = {side: split_inputs(inputs[side], self.chunk_size) for side in self.encoders}

        # pass 1: embeddings without activations, one RNG snapshot per chunk
        states: dict[str, list[RngState]] = {side: [] for side in self.encoders}
        full: dict[str, Tensor] = {}
        with torch.no_grad():
            for side, encode in self.encoders.items():
                parts = []
                for chunk in chunks[side]:
                    states[side].append(RngState.capture(chunk))
                    parts.append(encode(chunk))
                full[side] = torch.cat(parts)

        # the loss on detached leaves: its backward stops at the embeddings and caches their grads
        leaves = {side: emb.detach().requires_grad_() for side, emb in full.items()}
        with torch.enable_grad():
            result = self.loss_fn(*leaves.values(), **loss_kwargs)
        loss, aux = result if isinstance(result, tuple) else (result, {})
        if loss.dim() != 0:
            raise ValueError(f"the loss must be a scalar, got shape {tuple(loss.shape)}")
        loss.backward()

        # pass 2: re-encode with autograd, chunk by chunk, and push the cached gradients through
        work = []
        for side in self.encoders:
            grad = leaves[side].grad
            if grad is None:  # the loss ignores this side: nothing flows into its encoder
                continue
            sizes = [batch_size(chunk) for chunk in chunks[side]]
            work += [(side, c, s, g) for c, s, g in zip(chunks[side], states[side], grad.split(sizes))]
        frozen: set[str] = set()
        for side, chunk, state, grad in work:
            if side in frozen:
                continue
            with state.replay():
                emb = self.encoders[side](chunk)
                if not emb.requires_grad:  # a frozen encoder (e.g. a fixed passage tower)
                    frozen.add(side)
                    continue
                if emb.shape != grad.shape:
                    raise RuntimeError(f"{side} encoder gave shape {tuple(emb.shape)} on replay, "
                                       f"{tuple(grad.shape)} on the first pass")
                self.backward_fn(emb, grad.to(emb.dtype))
        return GradCacheOutput(loss.detach(), _detach(dict(aux)), {s: e.detach() for s, e in full.items()})
