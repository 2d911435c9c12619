"""Error types shared by every coordexp package.

Every error a user can cause says where (file, line, dotted key path) and what was expected.
"""

from __future__ import annotations


class CoordexpError(Exception):
    """Base class of every error coordexp raises on purpose."""


class DataContractError(CoordexpError):
    """A record violates the JSONL data contract (spec 01 §1.1).

    Attributes name the location so callers (CLI, validators) can aggregate errors.
    """

    def __init__(
        self,
        rule: str,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        object_index: int | None = None,
        field: str | None = None,
    ) -> None:
        self.rule = rule
        self.message = message
        self.file = file
        self.line = line
        self.object_index = object_index
        self.field = field
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.file is not None:
            where.append(f"{self.file}:{self.line}" if self.line is not None else self.file)
        elif self.line is not None:
            where.append(f"line {self.line}")
        if self.object_index is not None:
            where.append(f"objects[{self.object_index}]")
        if self.field is not None:
            where.append(self.field)
        prefix = " ".join(where)
        return f"{prefix}: [{self.rule}] {self.message}" if prefix else f"[{self.rule}] {self.message}"

    def located(self, *, file: str | None = None, line: int | None = None) -> "DataContractError":
        """Return a copy of this error with file/line filled in (used by loaders)."""
        return DataContractError(
            self.rule,
            self.message,
            file=file if file is not None else self.file,
            line=line if line is not None else self.line,
            object_index=self.object_index,
            field=self.field,
        )


class CoordVocabError(CoordexpError):
    """The tokenizer's coord vocabulary is missing, duplicated or out of range (spec 01 §1.2)."""


class ConfigError(CoordexpError):
    """A configuration value or key is invalid. The message starts with the dotted key path."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class PluginError(CoordexpError):
    """A plugin could not be found, loaded, or is incompatible (spec 05 §5.1)."""


class PipelineError(CoordexpError):
    """A pipeline failed at run time in a way that must stop training (objective exceptions)."""


class StepAborted(CoordexpError):
    """A step failed on some rank; every rank raises this with the lowest failing rank's message."""
