"""Hypothesis generators for pruning: tensors, keep-masks, amounts, real modules and strategy configs.

(Hypothesis calls these *strategies*; prunus names the module ``generators`` because a strategy is a pruning
method here. ``prunus.testing.strategies`` is kept as an alias of this module.)

They follow Hypothesis's house style: plural nouns, keyword-only options, and
:class:`hypothesis.errors.InvalidArgument` for an option that makes no sense. Use them in your own
``@given`` tests as well as through the kit:

>>> from hypothesis import given
>>> from prunus.testing import generators as pst
>>> @given(pst.tensors(dtypes=[torch.float16]), pst.amounts())      # doctest: +SKIP
... def test_my_criterion(tensor, amount): ...

Drawn tensors lean on the values that break pruning code: ties, zeros (also ``-0.0``), negatives, the
smallest normal and subnormal values of the dtype and its largest finite ones. Drawn parameters sit in the layers
that hold such parameters (:func:`holders`: a Linear's weight or bias, a norm's weight, a convolution's,
transposed or grouped, of 1 to 3 spatial dims), and :func:`scores` draws what a criterion could return: signed,
tied and infinite values.
"""

from __future__ import annotations

import functools
import math
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

import annotated_types
import torch
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from torch import Tensor, nn

from ..config import StrategyConfig
from ..layout import input_features
from ..statistics import InputGram, InputNorms, Statistic, Statistics
from .zoo import AttentionBlock, ResidualBlock

if TYPE_CHECKING:
    from ..strategy import Target

__all__ = [
    "DTYPES",
    "MODEL_KINDS",
    "MODULE_KINDS",
    "AttentionBlock",
    "Holder",
    "ResidualBlock",
    "amounts",
    "config_options",
    "holders",
    "masks",
    "models",
    "modules",
    "scores",
    "shapes",
    "statistics",
    "tensors",
]

DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
"""The floating dtypes the kit draws parameters in, simplest first (Hypothesis shrinks towards float32)."""

MODULE_KINDS: tuple[str, ...] = (
    "linear",
    "conv1d",
    "conv2d",
    "grouped_conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "grouped_conv_transpose2d",
    "batchnorm",
    "layernorm",
)
"""Single layers :func:`modules` draws."""

MODEL_KINDS: tuple[str, ...] = (*MODULE_KINDS, "sequential", "residual", "attention")
"""What :func:`models` draws: the single layers plus small composite models."""

_FINITE_MAX = {
    torch.float16: 65504.0,
    torch.bfloat16: 3.3895313892515355e38,
    torch.float32: 3.4028234663852886e38,
    torch.float64: 1.7976931348623157e308,
}
_WIDTH = {torch.float16: 16, torch.bfloat16: 32, torch.float32: 32, torch.float64: 64}


# -- validation helpers ----------------------------------------------------------------------------------


def _check_int(name: str, value: object, *, minimum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"{name}={value!r} must be an int")
    if minimum is not None and value < minimum:
        raise InvalidArgument(f"{name}={value!r} must be >= {minimum}")
    return value


def _check_dtypes(
    dtypes: Iterable[torch.dtype], *, what: str = "dtypes"
) -> tuple[torch.dtype, ...]:
    if isinstance(dtypes, torch.dtype):
        raise InvalidArgument(f"{what}={dtypes!r} must be a sequence of dtypes, e.g. [{dtypes}]")
    out = tuple(dtypes)
    if not out:
        raise InvalidArgument(f"{what}={out!r} must name at least one dtype")
    for dtype in out:
        if dtype not in _FINITE_MAX:
            raise InvalidArgument(
                f"{what} contains {dtype!r}; the kit draws the floating dtypes "
                f"{', '.join(map(str, DTYPES))}"
            )
    return out


# -- shapes, tensors, masks --------------------------------------------------------------------------------


def shapes(
    *,
    min_dims: int = 1,
    max_dims: int = 5,
    min_side: int = 1,
    max_side: int = 5,
    max_numel: int = 24,
) -> st.SearchStrategy[tuple[int, ...]]:
    """Shapes of ``min_dims`` to ``max_dims`` dims, each side in ``[min_side, max_side]``, at most ``max_numel`` entries.

    Shrinks towards fewer dims and sides of ``min_side``.
    """
    _check_int("min_dims", min_dims, minimum=0)
    _check_int("max_dims", max_dims, minimum=0)
    _check_int("min_side", min_side, minimum=0)
    _check_int("max_side", max_side, minimum=0)
    _check_int("max_numel", max_numel, minimum=0)
    if min_dims > max_dims:
        raise InvalidArgument(f"min_dims={min_dims} must be <= max_dims={max_dims}")
    if min_side > max_side:
        raise InvalidArgument(f"min_side={min_side} must be <= max_side={max_side}")
    if min_side**min_dims > max_numel:
        raise InvalidArgument(
            f"no shape with {min_dims} dims of side >= {min_side} has at most max_numel={max_numel} entries"
        )

    # The most dims that fit max_numel at sides of min_side.
    feasible = max_dims
    while feasible > min_dims and max(min_side, 1) ** feasible > max_numel:
        feasible -= 1
    return _shapes(min_dims, feasible, min_side, max_side, max_numel)


@functools.cache
def _shapes(
    min_dims: int, max_dims: int, min_side: int, max_side: int, max_numel: int
) -> st.SearchStrategy[tuple[int, ...]]:
    return _draw_shape(min_dims, max_dims, min_side, max_side, max_numel)


@st.composite
def _draw_shape(
    draw: st.DrawFn, min_dims: int, max_dims: int, min_side: int, max_side: int, max_numel: int
) -> tuple[int, ...]:
    ndim = draw(_integers(min_dims, max_dims))
    sides: list[int] = []
    for index in range(ndim):
        used = math.prod(sides)
        if used == 0:
            sides.append(draw(_integers(min_side, max_side)))
            continue
        # Leave room for the remaining dims at their smallest side.
        rest = max(min_side, 1) ** (ndim - index - 1)
        limit = min(max_side, max_numel // (used * rest))
        sides.append(draw(_integers(min_side, max(min_side, limit))))
    return tuple(sides)


@functools.cache
def _choices(items: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    return st.sampled_from(items)


@functools.cache
def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    return st.integers(low, high)


@functools.cache
def _elements(dtype: torch.dtype) -> st.SearchStrategy[float]:
    """Finite values of ``dtype``."""
    big = _FINITE_MAX[dtype]
    return st.floats(
        min_value=-big,
        max_value=big,
        allow_nan=False,
        allow_infinity=False,
        width=_WIDTH[dtype],  # type: ignore[arg-type]
    )


@functools.cache
def _specials(dtype: torch.dtype) -> tuple[float, ...]:
    """The values of ``dtype`` that break pruning code: zeros, ones, extremes, subnormals."""
    big = _FINITE_MAX[dtype]
    finfo = torch.finfo(dtype)
    tiny = float(finfo.tiny)
    specials = [0.0, 1.0, -1.0, -0.0, 0.5, 2.0, tiny, -tiny, big, -big]
    if dtype != torch.bfloat16:
        specials.append(float(finfo.smallest_normal) / 2)  # a subnormal
    return tuple(specials)


@functools.cache
def _pools(dtype: torch.dtype) -> st.SearchStrategy[list[float]]:
    # A few values of the whole range, or a few values within a hair of each other (what half precision, a
    # cast or a sum in the wrong order ties or reorders).
    spread = st.lists(_elements(dtype), min_size=1, max_size=4)
    close = st.builds(
        _neighbours,
        st.floats(min_value=2.0**-8, max_value=2.0**8),
        st.sampled_from([2.0**-9, 2.0**-12, 2.0**-20]),
        st.integers(2, 4),
    )
    return st.one_of(spread, close)


def _neighbours(base: float, step: float, count: int) -> list[float]:
    return [base * (1 + index * step) for index in range(count)]


@functools.cache
def _bytes(size: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=size, max_size=size)


_POOL_SHARE = 176
"""Bytes below this pick a value of the drawn pool, the others one of the special values."""


def tensors(
    *,
    dtypes: Sequence[torch.dtype] = DTYPES,
    shape: Sequence[int] | None = None,
    min_dims: int = 1,
    max_dims: int = 5,
    max_side: int = 5,
    max_numel: int = 24,
    device: str | torch.device = "cpu",
) -> st.SearchStrategy[Tensor]:
    """Finite floating tensors of 1 to 5 dims, rich in ties, zeros, negatives, tiny and huge values.

    Args:
        dtypes: the dtypes to draw from (float32, float64, float16, bfloat16), simplest first.
        shape: a fixed shape; otherwise one is drawn from :func:`shapes` within the four bounds below.
        min_dims: the fewest dims of a drawn shape.
        max_dims: the most dims of a drawn shape.
        max_side: the largest size of a drawn shape's dims.
        max_numel: the most entries of a drawn shape.
        device: where the tensors live.
    """
    return _tensors(
        _check_dtypes(dtypes),
        None if shape is None else tuple(shape),
        min_dims,
        max_dims,
        max_side,
        max_numel,
        str(torch.device(device)),
    )


@functools.cache
def _tensors(
    dtype_choices: tuple[torch.dtype, ...],
    fixed: tuple[int, ...] | None,
    min_dims: int,
    max_dims: int,
    max_side: int,
    max_numel: int,
    device: str,
) -> st.SearchStrategy[Tensor]:
    if fixed is not None and not all(isinstance(s, int) and s >= 0 for s in fixed):
        raise InvalidArgument(f"shape={fixed!r} must be a sequence of ints >= 0")
    shape_strategy = (
        st.just(fixed)
        if fixed is not None
        else shapes(min_dims=min_dims, max_dims=max_dims, max_side=max_side, max_numel=max_numel)
    )
    return _draw_tensor(dtype_choices, shape_strategy, torch.device(device))


@st.composite
def _draw_tensor(
    draw: st.DrawFn,
    dtypes: tuple[torch.dtype, ...],
    shape: st.SearchStrategy[tuple[int, ...]],
    device: torch.device,
) -> Tensor:
    dtype = draw(_choices(dtypes))
    size = draw(shape)
    # Every entry picks from a few drawn values (so ties are common, not a coincidence) or from the special
    # values of the dtype: one byte per entry, which Hypothesis draws and shrinks as one block (towards the
    # first drawn value).
    pool = draw(_pools(dtype))
    specials = _specials(dtype)
    picks = draw(_bytes(math.prod(size)))
    values = [
        pool[b % len(pool)] if b < _POOL_SHARE else specials[(b - _POOL_SHARE) % len(specials)]
        for b in picks
    ]
    build = torch.float32 if dtype == torch.bfloat16 else dtype
    return torch.tensor(values, dtype=build).to(dtype).reshape(size).to(device)


def masks(*, shape: Sequence[int], device: str | torch.device = "cpu") -> st.SearchStrategy[Tensor]:
    """Bool keep-masks of ``shape`` (``True`` keeps an entry), shrinking towards keeping everything."""
    size = tuple(shape)
    if not all(isinstance(s, int) and s >= 0 for s in size):
        raise InvalidArgument(f"shape={shape!r} must be a sequence of ints >= 0")
    return _masks(size, str(torch.device(device)))


@functools.cache
def _masks(shape: tuple[int, ...], device: str) -> st.SearchStrategy[Tensor]:
    return _draw_mask(shape, torch.device(device))


@st.composite
def _draw_mask(draw: st.DrawFn, shape: tuple[int, ...], device: torch.device) -> Tensor:
    picks = draw(_bytes(math.prod(shape)))
    keep = torch.tensor([b < 160 for b in picks], dtype=torch.bool)
    return keep.reshape(shape).to(device)


_SCORE_VALUES = (
    1.0,
    0.0,
    -1.0,
    2.0,
    -2.0,
    -0.0,
    3.0,
    -3.0,
    0.5,
    -0.5,
    math.inf,
    1 + 2**-12,
    2**-30,
)
"""What :func:`scores` picks from: small signed values, exact in every dtype and in any sum of a few, one
infinity, and two values half precision cannot tell from their neighbours (``1 + 2**-12`` rounds to 1 and
``2**-30`` to 0 in float16)."""


def scores(
    *, shape: Sequence[int], dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> st.SearchStrategy[Tensor]:
    """Scores a criterion could return for a parameter of ``shape``: signed, tied, zero, ``-0.0`` and infinite.

    Most values are small multiples of 0.5 (exact in every dtype, and in any sum of a few of them); some are
    an infinity (those of one tensor have one sign, drawn, so no sum of scores is NaN), ``1 + 2**-12`` or
    ``2**-30`` (which a cast to half precision ties with 1 and 0). A granularity that ranks ``|score|``
    instead of ``score``, treats ``-inf`` as large or ranks in a narrower dtype shows on them.
    """
    size = tuple(shape)
    if not all(isinstance(s, int) and s >= 0 for s in size):
        raise InvalidArgument(f"shape={shape!r} must be a sequence of ints >= 0")
    return _scores(size, _check_dtypes([dtype], what="dtype")[0], str(torch.device(device)))


@functools.cache
def _scores(shape: tuple[int, ...], dtype: torch.dtype, device: str) -> st.SearchStrategy[Tensor]:
    return _draw_scores(shape, dtype, torch.device(device))


@st.composite
def _draw_scores(
    draw: st.DrawFn, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> Tensor:
    sign = draw(_choices((1.0, -1.0)))
    picks = draw(_bytes(math.prod(shape)))
    values = [_SCORE_VALUES[b % len(_SCORE_VALUES)] for b in picks]
    values = [sign * v if math.isinf(v) else v for v in values]
    return torch.tensor(values, dtype=torch.float64).to(dtype).reshape(shape).to(device)


@dataclass(frozen=True)
class Holder:
    """The layer that holds a drawn parameter: which module type, which of its parameters, how grouped.

    :meth:`build` makes a fresh module holding the values (its other parameters zero), so that a strategy
    sees a parameter where it lives in a real model: ``target.module`` is a Linear, a LayerNorm, a
    ``ConvTranspose2d`` with ``groups=2``..., and ``target.param_name`` is ``weight`` or ``bias``.

    Attributes:
        kind: ``linear``, ``bias`` (a Linear's bias), ``layernorm``, ``batchnorm`` (their weight), ``conv`` or
            ``conv_transpose`` (the weight of a convolution of ``ndim - 2`` spatial dims).
        groups: the convolution's groups.
    """

    kind: str
    groups: int = 1

    @property
    def param_name(self) -> str:
        """The name of the parameter it holds: ``bias`` for a Linear's bias, else ``weight``."""
        return "bias" if self.kind == "bias" else "weight"

    def build(self, values: Tensor) -> nn.Module:
        """A fresh module of this kind whose parameter :attr:`param_name` holds ``values``."""
        template = _template(self, tuple(values.shape), values.dtype)
        # A copy of a cached template: building a layer (a convolution above all) costs far more.
        module = type(template).__new__(type(template))
        module.__dict__.update(
            {
                key: type(value)(value) if isinstance(value, dict | set) else value
                for key, value in template.__dict__.items()
            }
        )
        for name, parameter in template.named_parameters():
            setattr(module, name, nn.Parameter(parameter.detach().clone()))
        for name, buffer in template.named_buffers():
            setattr(module, name, buffer.clone())
        setattr(module, self.param_name, nn.Parameter(values))
        return module

    def describe(self, ndim: int) -> str:
        """The layer in words, e.g. ``ConvTranspose2d, groups=2``, for a parameter of ``ndim`` dims."""
        if self.kind in ("linear", "bias"):
            return "Linear"
        if self.kind in ("layernorm", "batchnorm"):
            return "LayerNorm" if self.kind == "layernorm" else "BatchNorm1d"
        name = _CONVS[self.kind == "conv_transpose"][ndim - 3].__name__
        return name if self.groups == 1 else f"{name}, groups={self.groups}"


_CONVS: dict[bool, tuple[type[nn.Module], ...]] = {
    False: (nn.Conv1d, nn.Conv2d, nn.Conv3d),
    True: (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d),
}


@functools.cache
def _template(holder: Holder, shape: tuple[int, ...], dtype: torch.dtype) -> nn.Module:
    """A module of ``holder``'s kind for a parameter of ``shape``, its other parameters and buffers zero."""
    module: nn.Module
    # Built on the meta device (no initialisation), then given real tensors.
    if holder.kind == "linear":
        module = nn.Linear(shape[1], shape[0], bias=False, device="meta")
    elif holder.kind == "bias":
        module = nn.Linear(1, shape[0], device="meta")
        module.weight = nn.Parameter(torch.zeros(shape[0], 1, dtype=dtype))
    elif holder.kind in ("layernorm", "batchnorm"):
        norm = nn.LayerNorm if holder.kind == "layernorm" else nn.BatchNorm1d
        module = norm(shape[0], device="meta")
        module.bias = nn.Parameter(torch.zeros(shape[0], dtype=dtype))
        for name, buffer in module.named_buffers():
            fill = 1 if name == "running_var" else 0
            # Statistics in the parameter's dtype, as a model converted with .to(dtype) holds them.
            kind = dtype if buffer.is_floating_point() else buffer.dtype
            setattr(module, name, torch.full_like(buffer, fill, device="cpu", dtype=kind))
    else:
        conv = _CONVS[holder.kind == "conv_transpose"][len(shape) - 3]
        first, second = (
            (shape[1] * holder.groups, shape[0])
            if holder.kind == "conv"
            else (shape[0], shape[1] * holder.groups)
        )
        module = conv(first, second, shape[2:], groups=holder.groups, bias=False, device="meta")
    setattr(module, holder.param_name, nn.Parameter(torch.zeros(shape, dtype=dtype)))
    return module


def holders(*, shape: Sequence[int]) -> st.SearchStrategy[Holder]:
    """The layers that can hold a parameter of ``shape`` (see :class:`Holder`), the most common first.

    1 dim: a Linear's bias, a LayerNorm's or BatchNorm's weight; 2 dims: a Linear's weight; 3 to 5 dims: the
    weight of a convolution or a transposed convolution of 1 to 3 spatial dims, grouped when its first dim is
    even.
    """
    size = tuple(shape)
    if not (1 <= len(size) <= 5 and all(isinstance(s, int) and s >= 1 for s in size)):
        raise InvalidArgument(f"shape={shape!r} must have 1 to 5 dims, each >= 1")
    return _holders(size)


@functools.cache
def _holders(shape: tuple[int, ...]) -> st.SearchStrategy[Holder]:
    if len(shape) == 1:
        kinds = [Holder("bias"), Holder("layernorm"), Holder("batchnorm")]
    elif len(shape) == 2:
        kinds = [Holder("linear")]
    else:
        kinds = [Holder("conv"), Holder("conv_transpose")]
        if shape[0] % 2 == 0:
            kinds += [Holder("conv", 2), Holder("conv_transpose", 2)]
    return st.sampled_from(kinds)


# -- amounts -----------------------------------------------------------------------------------------------


def amounts(
    *, max_count: int | None = None, fractions: bool = True
) -> st.SearchStrategy[int | float]:
    """Valid ``amount`` options: float fractions in ``[0, 1]`` and, given ``max_count``, int counts.

    Fractions include 0.0, 1.0 and the values whose count lands on a rounding tie (``(j + 0.5) / max_count``),
    where half-to-even rounding matters, or a quarter off one (``(j + 0.25) / max_count``, ``(j + 0.75) /
    max_count``), where truncating or rounding up does; counts are ints in ``[0, max_count]`` (an int is a count, not a
    fraction: ``amount=1`` prunes one unit).

    Args:
        max_count: how many units can be pruned; ``None`` draws fractions only.
        fractions: also draw fractions (``False`` draws counts only; needs ``max_count``).
    """
    if max_count is not None:
        _check_int("max_count", max_count, minimum=0)
    if not isinstance(fractions, bool):
        raise InvalidArgument(f"fractions={fractions!r} must be a bool")
    if not fractions and max_count is None:
        raise InvalidArgument("amounts(fractions=False) draws counts only, so it needs max_count")
    return _amounts(max_count, fractions)


@functools.cache
def _amounts(max_count: int | None, fractions: bool) -> st.SearchStrategy[int | float]:
    options: list[st.SearchStrategy[int | float]] = []
    if fractions:
        notable = [0.0, 1.0, 0.5, 0.25, 0.75]
        if max_count:
            # Counts that land on x.5 (where half-to-even rounding matters), x.25 and x.75 (where floor and
            # ceil go wrong).
            notable += [
                (j + part) / max_count
                for j in range(min(max_count, 8))
                for part in (0.5, 0.75, 0.25)
            ]
        options += [st.sampled_from(notable), st.floats(min_value=0.0, max_value=1.0)]
    if max_count is not None:
        options.insert(0, st.integers(min_value=0, max_value=max_count))
    return st.one_of(options)


# -- real modules ------------------------------------------------------------------------------------------


def _build(kind: str, draw: st.DrawFn) -> tuple[Callable[[], nn.Module], tuple[int, ...]]:
    """A constructor for a ``kind`` model and the shape of its input, with sizes drawn now."""
    small = st.integers(1, 4)
    batch = draw(st.integers(1, 2))
    if kind == "linear":
        fan_in, fan_out, bias = draw(small), draw(small), draw(st.booleans())
        return lambda: nn.Linear(fan_in, fan_out, bias=bias), (batch, fan_in)
    if kind == "conv1d":
        cin, cout, k = draw(st.integers(1, 3)), draw(small), draw(st.integers(1, 3))
        length = k + draw(st.integers(0, 3))
        return lambda: nn.Conv1d(cin, cout, k), (batch, cin, length)
    if kind in ("conv2d", "grouped_conv2d", "conv_transpose2d", "grouped_conv_transpose2d"):
        groups = 2 if kind.startswith("grouped") else 1
        cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
        k = draw(st.integers(1, 3))
        side = k + draw(st.integers(0, 2))
        layer = nn.ConvTranspose2d if "transpose" in kind else nn.Conv2d
        return lambda: layer(cin, cout, k, groups=groups), (batch, cin, side, side)
    if kind == "conv3d":
        cin, cout, k = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
        side = k + draw(st.integers(0, 1))
        return lambda: nn.Conv3d(cin, cout, k), (batch, cin, side, side, side)
    if kind == "conv_transpose1d":
        cin, cout, k = draw(st.integers(1, 3)), draw(small), draw(st.integers(1, 3))
        length = draw(st.integers(1, 4))
        return lambda: nn.ConvTranspose1d(cin, cout, k), (batch, cin, length)
    if kind in ("batchnorm", "layernorm"):
        features = draw(small)
        norm = nn.BatchNorm1d if kind == "batchnorm" else nn.LayerNorm
        return lambda: norm(features), (batch, features)
    if kind == "sequential":
        if draw(st.booleans()):
            a, b, c = draw(small), draw(small), draw(small)
            return lambda: nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Linear(b, c)), (batch, a)
        cin, cout, side = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(2, 4))
        return (
            lambda: nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.Flatten(),
                nn.Linear(cout * side * side, 2),
            ),
            (batch, cin, side, side),
        )
    if kind == "residual":
        channels, side = draw(st.integers(1, 3)), draw(st.integers(2, 4))
        return lambda: ResidualBlock(channels), (batch, channels, side, side)
    if kind == "attention":
        heads, head_dim, seq = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(small)
        return lambda: AttentionBlock(heads * head_dim, heads), (batch, seq, heads * head_dim)
    raise InvalidArgument(f"unknown model kind {kind!r}; kinds are {', '.join(MODEL_KINDS)}")


def _model_strategy(
    kinds: Sequence[str], allowed: Sequence[str], dtypes: Sequence[torch.dtype], what: str
) -> st.SearchStrategy[tuple[nn.Module, Tensor]]:
    if isinstance(kinds, str):
        raise InvalidArgument(f"kinds={kinds!r} must be a sequence of kinds, e.g. [{kinds!r}]")
    chosen = tuple(kinds)
    if not chosen:
        raise InvalidArgument("kinds=() must name at least one kind")
    for kind in chosen:
        if kind not in allowed:
            raise InvalidArgument(f"unknown {what} kind {kind!r}; kinds are {', '.join(allowed)}")
    return _draw_model(chosen, _check_dtypes(dtypes))


@st.composite
def _draw_model(
    draw: st.DrawFn, kinds: tuple[str, ...], dtypes: tuple[torch.dtype, ...]
) -> tuple[nn.Module, Tensor]:
    kind = draw(st.sampled_from(kinds))
    dtype = draw(st.sampled_from(dtypes))
    make, input_shape = _build(kind, draw)
    seed = draw(st.integers(0, 2**16))
    coarse = draw(st.booleans())
    # Seed the default initialisation without touching the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make()
        inputs = torch.randn(input_shape)
    if coarse:  # weights on a grid of quarters: many ties and exact zeros
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.copy_((parameter * 4).round() / 4)
    return model.to(dtype).eval(), inputs.to(dtype)


def modules(
    *, kinds: Sequence[str] = MODULE_KINDS, dtypes: Sequence[torch.dtype] = (torch.float32,)
) -> st.SearchStrategy[tuple[nn.Module, Tensor]]:
    """Single real layers with an input batch: ``(module, inputs)``.

    Kinds: Linear, Conv1d/2d/3d, ConvTranspose1d/2d, grouped Conv2d and ConvTranspose2d, BatchNorm1d and
    LayerNorm (see :data:`MODULE_KINDS`). Weights come from torch's default initialisation under a drawn seed,
    sometimes rounded to quarters for ties and zeros.
    """
    return _model_strategy(kinds, MODULE_KINDS, dtypes, "module")


def models(
    *, kinds: Sequence[str] = MODEL_KINDS, dtypes: Sequence[torch.dtype] = (torch.float32,)
) -> st.SearchStrategy[tuple[nn.Module, Tensor]]:
    """Small real models with an input batch: ``(model, inputs)``.

    Everything :func:`modules` draws, plus a Sequential MLP or conv net, a residual block
    (:class:`ResidualBlock`) and an attention block (:class:`AttentionBlock`); see :data:`MODEL_KINDS`.
    """
    return _model_strategy(kinds, MODEL_KINDS, dtypes, "model")


# -- calibration statistics ------------------------------------------------------------------------------------------


def statistics(
    targets: Sequence[Target],
    kinds: Sequence[type[Statistic]] = (InputNorms, InputGram),
    *,
    max_rows: int = 4,
) -> st.SearchStrategy[Statistics]:
    """Calibration statistics of ``targets``, as ``prune(..., data=...)`` takes them for a data-aware strategy.

    Each parameter gets inputs drawn as a small ``(rows, features)`` matrix ``X`` (ties, zeros and whole zero
    columns, i.e. dead inputs, are common), and each statistic is computed from it by folding ``X`` in the way
    calibration does (so a statistic of a plugin's own works too). Feed a data-aware strategy to the kit with
    ``StrategyCase("wanda_row", data=lambda targets: pst.statistics(targets))``.

    Args:
        targets: the parameters (their layer decides how many input features they have).
        kinds: the statistics to compute (default: input norms and the input Gram matrix).
        max_rows: at most this many input rows per parameter.
    """
    _check_int("max_rows", max_rows, minimum=1)
    return _draw_statistics(tuple(targets), tuple(kinds), max_rows)


@st.composite
def _draw_statistics(
    draw: st.DrawFn,
    targets: tuple[Target, ...],
    kinds: tuple[type[Statistic], ...],
    max_rows: int,
) -> Statistics:
    values: dict[str, dict[type[Statistic], Tensor]] = {}
    for target in targets:
        features = input_features(target.module, tuple(target.tensor.shape))
        rows = draw(st.integers(1, max_rows))
        pool = draw(st.lists(st.integers(-4, 4), min_size=1, max_size=4))
        entries = draw(
            st.lists(st.sampled_from(pool), min_size=rows * features, max_size=rows * features)
        )
        inputs = torch.tensor(entries, dtype=torch.float32).reshape(rows, features)
        device = target.tensor.device
        folded = {}
        for kind in kinds:
            statistic = kind(features, device)
            statistic.add(inputs.to(device))
            folded[kind] = statistic.result()
        values[target.name] = folded
    return Statistics(values)


# -- strategy options --------------------------------------------------------------------------------------


def _bounds(metadata: Iterable[object]) -> tuple[float | None, float | None, bool, bool]:
    low: float | None = None
    high: float | None = None
    exclude_low = exclude_high = False
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            low = float(item.ge)  # type: ignore[arg-type]
        elif isinstance(item, annotated_types.Gt):
            low, exclude_low = float(item.gt), True  # type: ignore[arg-type]
        elif isinstance(item, annotated_types.Le):
            high = float(item.le)  # type: ignore[arg-type]
        elif isinstance(item, annotated_types.Lt):
            high, exclude_high = float(item.lt), True  # type: ignore[arg-type]
        elif isinstance(item, annotated_types.Interval):
            found = _bounds(
                [
                    annotated_types.Ge(item.ge) if item.ge is not None else None,
                    annotated_types.Gt(item.gt) if item.gt is not None else None,
                    annotated_types.Le(item.le) if item.le is not None else None,
                    annotated_types.Lt(item.lt) if item.lt is not None else None,
                ]
            )
            low, high, exclude_low, exclude_high = found
    return low, high, exclude_low, exclude_high


def _from_annotation(annotation: Any, metadata: list[object]) -> st.SearchStrategy[Any] | None:
    """Values of a config field's type, or ``None`` when the kit cannot draw it."""
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        inner, *extra = get_args(annotation)
        return _from_annotation(inner, [*metadata, *extra])
    if origin is typing.Union or origin is types.UnionType:
        members = [_from_annotation(arg, metadata) for arg in get_args(annotation)]
        if any(member is None for member in members):
            return None
        return st.one_of([m for m in members if m is not None])
    if origin is Literal:
        return st.sampled_from(get_args(annotation))
    if origin is tuple:
        args = get_args(annotation)
        if not args or args[-1] is Ellipsis:
            return None
        parts = [_from_annotation(arg, []) for arg in args]
        if any(part is None for part in parts):
            return None
        return st.tuples(*[part for part in parts if part is not None])
    if annotation is type(None):
        return st.none()
    if annotation is bool:
        return st.booleans()
    low, high, exclude_low, exclude_high = _bounds(metadata)
    if annotation is int:
        lo = None if low is None else math.floor(low) + (1 if exclude_low else 0)
        hi = None if high is None else math.ceil(high) - (1 if exclude_high else 0)
        if lo is None and hi is None:
            # Sizes, sides and counts are positive more often than not.
            return st.one_of(st.integers(1, 8), st.integers(-8, 8))
        # One bound: mostly values near it (a group size, a multiple, a seed), sometimes far.
        if lo is None:
            assert hi is not None
            return st.one_of(
                st.integers(hi - 4, hi), st.integers(hi - 16, hi), st.integers(hi - 2**16, hi)
            )
        if hi is None:
            return st.one_of(
                st.integers(lo, lo + 4), st.integers(lo, lo + 16), st.integers(lo, lo + 2**16)
            )
        return st.integers(lo, hi)
    if annotation is float:
        values = st.floats(
            min_value=low,
            max_value=high,
            exclude_min=exclude_low and low is not None,
            exclude_max=exclude_high and high is not None,
            allow_nan=False,
        )
        # Infinities, where allowed, are options people give (a norm order of inf), not a rare draw.
        infinities = [
            v
            for v in (math.inf, -math.inf)
            if (low is None or v > low) and (high is None or v < high)
        ]
        return st.one_of(values, st.sampled_from(infinities)) if infinities else values
    return None


def _min_ndim(targets: Sequence[Target] | None) -> int:
    if not targets:
        return 1
    return max(1, min(t.tensor.dim() for t in targets))


def config_options(
    config: type[StrategyConfig],
    *,
    targets: Sequence[Target] | None = None,
    exclude: Iterable[str] = ("amount",),
) -> st.SearchStrategy[dict[str, Any]]:
    """Option dicts drawn from a pydantic config model, field by field, each validated by the model.

    Ints, floats, bools, ``Literal``, ``None`` and fixed-length tuples of them are drawn within the field's
    ``ge``/``gt``/``le``/``lt`` bounds (unions combine them); a field named ``dim`` is drawn as a dim that is valid for every one of
    ``targets``; a field the kit cannot draw keeps its default. A required field the kit cannot draw raises
    :class:`~hypothesis.errors.InvalidArgument`: give the strategy an options function instead (see
    :class:`prunus.testing.StrategyCase`).

    Args:
        config: the config model (``registry.info(name).config``).
        targets: the parameters the options are for (to draw valid dims).
        exclude: fields not to draw (``amount`` by default: the kit draws it against the targets' sizes).
    """
    if not (isinstance(config, type) and issubclass(config, StrategyConfig)):
        raise InvalidArgument(f"config={config!r} must be a prunus.StrategyConfig subclass")
    return _config_options(config, _min_ndim(targets), frozenset(exclude))


@functools.cache
def _config_options(
    config: type[StrategyConfig], ndim: int, skipped: frozenset[str]
) -> st.SearchStrategy[dict[str, Any]]:
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for name, info in config.model_fields.items():
        if name in skipped:
            continue
        strategy = _field_values(name, info, ndim)
        if strategy is not None:
            fields[name] = strategy
        elif info.is_required():
            raise InvalidArgument(
                f"cannot draw the required option {name!r} ({info.annotation!r}) of {config.__name__}; "
                "give the strategy an options function: StrategyCase(name, options=...)"
            )

    return _draw_options(config, tuple(fields.items()), _placeholders(config, set(skipped)))


@st.composite
def _draw_options(
    draw: st.DrawFn,
    config: type[StrategyConfig],
    fields: tuple[tuple[str, st.SearchStrategy[Any]], ...],
    placeholders: dict[str, Any],
) -> dict[str, Any]:
    options = {name: draw(strategy) for name, strategy in fields}
    try:
        config.model_validate({**placeholders, **options})
    except ValidationError:
        assume(False)
    return options


def _field_values(name: str, info: FieldInfo, ndim: int) -> st.SearchStrategy[Any] | None:
    if name == "dim":
        dims = st.integers(-ndim, ndim - 1)
        # A dim that may be None (a granularity's own default, such as nm's input dim) is drawn None too.
        return st.one_of(st.none(), dims) if _allows_none(info.annotation) else dims
    return _from_annotation(info.annotation, list(info.metadata))


def _allows_none(annotation: Any) -> bool:
    if annotation is type(None):
        return True
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _allows_none(get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return any(_allows_none(arg) for arg in get_args(annotation))
    return False


def _placeholders(config: type[StrategyConfig], skipped: set[str]) -> dict[str, Any]:
    """Valid stand-ins for the excluded fields, so the drawn ones can be validated on their own."""
    return {"amount": 0.0} if "amount" in skipped and "amount" in config.model_fields else {}
