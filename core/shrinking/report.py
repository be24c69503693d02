"""What :func:`prunus.shrink` and :func:`prunus.prune_channels` report: every group of coupled channels, what was
removed (or masked) and why, what was left alone and why, and what changed beyond the channels themselves."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ChannelGroupReport", "ShrinkReport"]


class ChannelGroupReport(BaseModel):
    """One group of coupled channels (a root layer's outputs and everything that must follow them).

    Attributes:
        name: the root layer's qualified name (for attention heads, the attention module's).
        layers: qualified names of the layers whose shape the group changes.
        channels: channels of the root layer before.
        unit: channels per removable unit (1; a head's width; a key/value group's query width; with grouped
            convolutions, one channel per group).
        removed: root-layer channel indices removed (or masked by :func:`prunus.prune_channels`), all of them.
        beyond_amount: the channels among ``removed`` that ``amount`` did not ask for, by reason (channels that
            were silent already: their removal cannot change the outputs). Empty when only ``amount`` removed.
        left: why the group was left alone (``None`` when it could be pruned).
        note: what the removal changes beyond the channels (e.g. a LayerNorm now normalizes over fewer channels,
            constant outputs folded into the next layer's bias); ``None`` when nothing else changes.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    layers: list[str]
    channels: int
    unit: int
    removed: list[int]
    beyond_amount: dict[str, list[int]] = Field(default_factory=dict)
    left: str | None = None
    note: str | None = None

    @property
    def kept(self) -> int:
        return self.channels - len(self.removed)


class ShrinkReport(BaseModel):
    """What :func:`prunus.shrink` or :func:`prunus.prune_channels` did.

    Attributes:
        strategy: the strategy that ranked the channels (``None`` when :func:`prunus.shrink` removed what masks
            had pruned).
        options: that strategy's options (empty likewise).
        shrunk: whether channels were physically removed (``False`` for :func:`prunus.prune_channels`).
        groups: every group of coupled channels, pruned or left alone, and why.
        params_before: parameter count of the whole model before.
        params_after: parameter count after (equal to ``params_before`` when nothing was removed physically).
        macs_before: multiply-accumulates of the Linear, Conv and Conv1D layers on ``example_inputs``, before.
        macs_after: the same, after.
        max_abs_diff: largest output difference on ``example_inputs`` between the model before and after
            (for :func:`prunus.shrink` from masks: the masked model against the shrunken one).
        reason: why nothing was removed (``None`` when something was).
        config: the model configuration entries changed to describe the smaller model (Hugging Face models:
            ``num_attention_heads``, ``num_key_value_heads``, ``head_dim``, ``intermediate_size``...).
        reloads: whether the updated configuration alone rebuilds the smaller architecture (so
            ``save_pretrained`` then ``from_pretrained`` reloads it), and if not why; ``None`` for models
            without a configuration.
    """

    model_config = ConfigDict(frozen=True)

    strategy: str | None
    options: dict[str, Any]
    shrunk: bool
    groups: list[ChannelGroupReport]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    max_abs_diff: float | None = None
    reason: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    reloads: str | None = None

    @property
    def removed_channels(self) -> int:
        return sum(len(g.removed) for g in self.groups)

    @property
    def beyond_amount_channels(self) -> int:
        """Channels removed that ``amount`` did not ask for (each listed with its reason in its group)."""
        return sum(len(c) for g in self.groups for c in g.beyond_amount.values())

    @property
    def param_ratio(self) -> float:
        return self.params_after / self.params_before if self.params_before else 1.0

    @property
    def mac_ratio(self) -> float:
        return self.macs_after / self.macs_before if self.macs_before else 1.0

    def __str__(self) -> str:
        verb = "removed" if self.shrunk else "masked"
        lines = [
            f"{'shrink' if self.shrunk else 'prune_channels'} "
            + (f"{self.strategy} " if self.strategy else "(from masks) ")
            + " ".join(f"{k}={v}" for k, v in self.options.items()),
        ]
        width = max([len(g.name) for g in self.groups] + [5])
        for g in self.groups:
            if g.left is None:
                state = f"{verb} {len(g.removed):>5} of {g.channels:<5}"
                if g.unit > 1:
                    state += f" ({len(g.removed) // g.unit} units of {g.unit})"
            else:
                state = g.left
            lines.append(f"  {g.name:<{width}}  {state}")
            for why, channels in g.beyond_amount.items():
                lines.append(f"  {'':<{width}}    + {len(channels)} beyond amount: {why}")
            if g.note:
                lines.append(f"  {'':<{width}}    note: {g.note}")
        if self.reason:
            lines.append(f"nothing {verb}: {self.reason}")
        lines.append(
            f"parameters {self.params_before:,} -> {self.params_after:,} ({self.param_ratio:.1%}), "
            f"MACs {self.macs_before:,} -> {self.macs_after:,} ({self.mac_ratio:.1%})"
        )
        if self.config:
            lines.append("config: " + ", ".join(f"{k}={v}" for k, v in self.config.items()))
        if self.reloads:
            lines.append(f"reload: {self.reloads}")
        return "\n".join(lines)
