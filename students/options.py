"""The one definition of a student's options: ``StudentOptions`` (resolved, validated) and
``StudentOverrides`` (the same fields, each optional: what a recipe or a flag changes).

Dependency-free (no torch), so ``distill.models`` can build its per-name defaults from it cheaply.
"""
from dataclasses import dataclass, fields, make_dataclass, replace
from typing import Literal, Optional

Pooling = Literal["cls", "mean", "last"]


@dataclass(frozen=True)
class StudentOptions:
    """What a dual encoder needs besides its weights. Validated on construction.

    ``projection_dim`` adds a bias-free linear bottleneck [hidden → projection_dim] after pooling
    and before normalisation (GTR's fixed-size head); None keeps the backbone's width.
    ``dropout`` sets every dropout probability of the backbone (hidden and attention) when it is
    loaded (CADET trains with 0.0); None keeps the backbone's own config.
    """

    pooling: Pooling = "mean"
    normalize: bool = True
    query_prefix: str = ""
    passage_prefix: str = ""
    query_max_length: int = 64
    passage_max_length: int = 256
    projection_dim: Optional[int] = None
    dropout: Optional[float] = None

    def __post_init__(self) -> None:
        if self.pooling not in ("cls", "mean", "last"):
            raise ValueError(f"pooling must be cls, mean or last, got {self.pooling!r}")
        for name in ("query_max_length", "passage_max_length"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.projection_dim is not None and (not isinstance(self.projection_dim, int) or self.projection_dim <= 0):
            raise ValueError(f"projection_dim must be a positive integer or null, got {self.projection_dim!r}")
        if self.dropout is not None and (isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float))
                                         or not 0 <= self.dropout < 1):
            raise ValueError(f"dropout must be a number in [0, 1) or null, got {self.dropout!r}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(StudentOptions))

    def override(self, **changes):
        """Copy with the non-None entries of ``changes`` applied (flags over name defaults)."""
        unknown = set(changes) - set(fields_of(self))
        if unknown:
            raise TypeError(f"unknown student option(s) {sorted(unknown)}; expected some of {list(fields_of(self))}")
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def student_options(self) -> "StudentOptions":
        """Just the student fields (a subclass such as ``distill.models.ModelDefaults`` carries more)."""
        return StudentOptions(**{name: getattr(self, name) for name in StudentOptions.names()})


def fields_of(obj) -> tuple[str, ...]:
    return tuple(f.name for f in fields(obj))


def _check_overrides(self) -> None:
    # an override is validated the moment it is read (a recipe's bad pooling fails at parse time)
    StudentOptions().override(**self.changes())


def _changes(self) -> dict:
    return {name: getattr(self, name) for name in StudentOptions.names() if getattr(self, name) is not None}


# The same fields as StudentOptions, each defaulting to None ("keep the model's default"); generated
# so a new option is declared once, above.
StudentOverrides = make_dataclass(
    "StudentOverrides",
    [(f.name, Optional[f.type], None) for f in fields(StudentOptions)],
    namespace={"__post_init__": _check_overrides, "changes": _changes,
               "__doc__": "StudentOptions fields, each optional: None keeps the model name's default."},
)
StudentOverrides.__module__ = __name__  # so jsonargparse / pickle find it here (make_dataclass has no module= before 3.12)
