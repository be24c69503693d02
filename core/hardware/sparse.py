"""Sparse execution of pruned Linear layers, and back.

Pruning with prunus leaves plain dense parameters whose pruned entries are zero: a forward pass costs what the
dense one costs. :func:`to_sparse` replaces eligible ``nn.Linear`` modules by :class:`SparseLinear` modules that
store only the nonzero weights and multiply with a sparse kernel; :func:`to_dense` puts plain ``nn.Linear``
modules back, with their prunus masks, so ``prunus.restore`` and ``prunus.remove`` work again.

Layouts:

* ``csr``: compressed sparse rows through ``torch.sparse`` (CPU and CUDA), 32-bit indices. It beats a dense
  matmul only above a sparsity that depends on the machine, the shape and the batch: measure it with
  :func:`prunus.probe` (often around 90 % on a CPU, higher on a GPU).
* ``bsr``: block sparse rows (``blocksize=(r, c)``), for weights pruned in blocks (the ``block`` granularity).
  On a CPU torch's kernel (MKL) takes square blocks only.
* ``semi_structured``: 2:4 semi-structured sparsity through ``torch.sparse.to_sparse_semi_structured``, on CUDA
  devices of compute capability 8.0 or more, float16 or bfloat16 weights whose every group of 4 consecutive
  input weights holds at most 2 nonzeros (the ``nm`` granularity's default), both dims multiples of 64.
  Untested in prunus's own test suite unless a CUDA device is present (``pytest -m gpu``).

``SparseLinear`` is for inference: its weight is a buffer, not a trained parameter. ``model.state_dict()`` holds
it in its sparse layout (``torch.save`` and ``load_state_dict`` into the same converted model work for ``csr``
and ``bsr``); convert back with :func:`to_dense` for a state dict that loads into the original architecture.
Forward hooks registered on a replaced ``nn.Linear`` do not carry over.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import masking
from ..arguments import check_model, check_number
from ..errors import ConfigError, TargetError, TargetTypeError
from ..targets import glob_patterns

__all__ = [
    "SparseLayout",
    "SparseLinear",
    "csr_linear",
    "follows_nm",
    "sparse_weight",
    "to_dense",
    "to_sparse",
]

SparseLayout = Literal["csr", "bsr", "semi_structured"]

_HELD = "_held_"  # prefix of the prunus mask buffers a SparseLinear keeps for to_dense
_SEMI_DTYPES = (torch.float16, torch.bfloat16)
_SEMI_MULTIPLE = (
    64  # both dims: safe for torch's CUTLASS and cuSPARSELt 2:4 kernels in float16/bfloat16
)


@contextmanager
def _quiet() -> Iterator[None]:
    """Hide torch's "sparse support is in beta" notices while converting (they say nothing actionable)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*[Ss]parse.*beta.*")
        warnings.filterwarnings("ignore", message=r".*[Ss]parse invariant checks.*")
        warnings.filterwarnings("ignore", message=r".*semi-structured.*prototype.*")
        yield


def follows_nm(weight: Tensor, n: int = 2, m: int = 4, dim: int = -1) -> bool:
    """Whether every group of ``m`` consecutive entries along ``dim`` holds at most ``n`` nonzeros.

    A trailing partial group counts as padded with zeros.
    """
    if weight.dim() == 0:
        return False
    moved = (weight != 0).movedim(dim, -1)
    size = moved.shape[-1]
    pad = (-size) % m
    if pad:
        moved = F.pad(moved.to(torch.uint8), (0, pad)).bool()
    groups = moved.reshape(*moved.shape[:-1], -1, m)
    return bool((groups.sum(dim=-1) <= n).all())


def sparse_weight(
    weight: Tensor, layout: SparseLayout, blocksize: tuple[int, int] | None = None
) -> Tensor:
    """``weight`` (2-D, dense) in a sparse layout, with 32-bit indices for ``csr`` and ``bsr``.

    Raises:
        ConfigError: the layout does not suit this weight (the message says why).
    """
    reason = _ineligible(weight, layout, blocksize)
    if reason:
        raise ConfigError(f"cannot store a {tuple(weight.shape)} weight as {layout}: {reason}")
    dense = weight.detach().contiguous()
    with _quiet():
        if layout == "semi_structured":
            return _to_semi_structured(dense)
        if layout == "csr":
            csr = dense.to_sparse_csr()
            return torch.sparse_csr_tensor(
                csr.crow_indices().to(torch.int32),
                csr.col_indices().to(torch.int32),
                csr.values(),
                csr.shape,
            )
        assert blocksize is not None
        bsr = dense.to_sparse_bsr(blocksize)
        return torch.sparse_bsr_tensor(
            bsr.crow_indices().to(torch.int32),
            bsr.col_indices().to(torch.int32),
            bsr.values(),
            bsr.shape,
        )


def _to_semi_structured(dense: Tensor) -> Tensor:  # pragma: no cover - needs CUDA
    from torch.sparse import SparseSemiStructuredTensorCUTLASS, to_sparse_semi_structured

    cusparselt = getattr(torch.backends, "cusparselt", None)
    if cusparselt is not None and not cusparselt.is_available():
        # torch picks cuSPARSELt by default; without it, its CUTLASS kernels serve 2:4 matmuls.
        return SparseSemiStructuredTensorCUTLASS.from_dense(dense)
    return to_sparse_semi_structured(dense)


def _ineligible(weight: Tensor, layout: str, blocksize: tuple[int, int] | None) -> str:
    """Why ``weight`` cannot be stored in ``layout`` (empty when it can)."""
    if weight.dim() != 2:
        return f"the weight has {weight.dim()} dims, a sparse matmul needs 2"
    if layout == "csr":
        if weight.is_cuda:
            if weight.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
                return f"dtype {weight.dtype} has no CSR matmul on CUDA"
        elif weight.dtype not in (torch.float32, torch.float64):
            return f"dtype {weight.dtype} has no CSR matmul on {weight.device.type} (float32 or float64 only)"
        if weight.numel() >= 2**31:
            return "too many entries for 32-bit indices"
        return ""
    if layout == "bsr":
        if blocksize is None:
            return "layout 'bsr' needs blocksize=(rows, cols)"
        r, c = blocksize
        if r < 1 or c < 1 or weight.shape[0] % r or weight.shape[1] % c:
            return f"the shape is not a multiple of blocksize {blocksize}"
        if not weight.is_cuda and r != c:
            return "torch's CPU BSR matmul (MKL) takes square blocks only"
        if weight.dtype not in (torch.float32, torch.float64) and not weight.is_cuda:
            return f"dtype {weight.dtype} has no BSR matmul on {weight.device.type}"
        return ""
    if layout == "semi_structured":
        if not weight.is_cuda:
            return "2:4 semi-structured kernels run on CUDA devices only"
        major, _ = torch.cuda.get_device_capability(weight.device)
        if major < 8:
            return "2:4 semi-structured kernels need compute capability 8.0 or more"
        if weight.dtype not in _SEMI_DTYPES:
            return f"dtype {weight.dtype}: 2:4 kernels take float16 or bfloat16 (convert with model.half())"
        if weight.shape[0] % _SEMI_MULTIPLE or weight.shape[1] % _SEMI_MULTIPLE:
            return f"both dims must be multiples of {_SEMI_MULTIPLE}"
        if not follows_nm(weight, 2, 4):
            return "some group of 4 consecutive input weights holds more than 2 nonzeros (prune with l1_nm)"
        return ""
    return f"unknown layout {layout!r}"


def csr_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)`` with ``weight`` in a CSR or BSR layout: ``(weight @ x.T).T + bias``."""
    shape = x.shape
    flat = x.reshape(-1, shape[-1])
    out = torch.mm(weight, flat.t().contiguous()).t()
    if bias is not None:
        out = out + bias
    return out.reshape(*shape[:-1], weight.shape[0])


class SparseLinear(nn.Module):
    """An ``nn.Linear`` whose weight is stored and multiplied sparse (made by :func:`to_sparse`).

    Attributes:
        in_features, out_features: as ``nn.Linear``'s.
        layout: ``csr``, ``bsr`` or ``semi_structured``.
        weight: the sparse weight (a buffer).
        bias: the bias parameter, or ``None``.
    """

    weight: Tensor

    def __init__(
        self,
        weight: Tensor,
        bias: Tensor | None,
        layout: SparseLayout,
        *,
        in_features: int,
        out_features: int,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.layout = layout
        self.register_buffer("weight", weight)
        self.bias = bias if bias is None or isinstance(bias, nn.Parameter) else nn.Parameter(bias)

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        layout: SparseLayout = "csr",
        blocksize: tuple[int, int] | None = None,
    ) -> SparseLinear:
        """A sparse copy of ``linear`` (its weight's zeros dropped); keeps its prunus masks for ``to_dense``."""
        if not isinstance(linear, nn.Linear):
            raise TargetTypeError(
                f"SparseLinear.from_linear needs a torch.nn.Linear, not {type(linear).__name__}"
            )
        weight = sparse_weight(linear.weight, layout, blocksize)
        module = cls(
            weight,
            linear.bias,
            layout,
            in_features=linear.in_features,
            out_features=linear.out_features,
        )
        for key, buffer in linear._buffers.items():
            if buffer is not None and key.startswith(
                (masking.MASK_PREFIX, masking.VALUES_PREFIX, masking.ORIGINAL_PREFIX)
            ):
                module.register_buffer(_HELD + key, buffer, persistent=False)
        return module

    def to_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` equal to this module, with the prunus masks it held put back."""
        with _quiet():
            dense = self.weight.to_dense()
        linear = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            device=dense.device,
            dtype=dense.dtype,
        )
        with torch.no_grad():
            linear.weight.copy_(dense)
        if self.bias is not None:
            linear.bias = self.bias
        held = {k[len(_HELD) :]: v for k, v in self._buffers.items() if k.startswith(_HELD)}
        for key, mask in held.items():
            if mask is None or not key.startswith(masking.MASK_PREFIX):
                continue
            name = key[len(masking.MASK_PREFIX) :]
            param = getattr(linear, name, None)
            if param is None:
                continue
            masking.attach_mask(linear, name, masking.unpack(mask, param.shape), restorable=False)
            for prefix in (masking.VALUES_PREFIX, masking.ORIGINAL_PREFIX):
                values = held.get(prefix + name)
                if values is not None:
                    linear.register_buffer(prefix + name, values, persistent=False)
        return linear

    @property
    def nnz(self) -> int:
        """Stored nonzero weights."""
        if self.layout == "semi_structured":
            return self.weight.numel() // 2
        return int(self.weight.values().numel())

    def forward(self, x: Tensor) -> Tensor:
        if self.layout == "semi_structured":
            return F.linear(x, self.weight, self.bias)
        return csr_linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, layout={self.layout}, nnz={self.nnz}"
        )

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # A sparse tensor cannot be copied into another of a different nnz: take the loaded one as it is.
        key = prefix + "weight"
        value = state_dict.get(key)
        rest = {k: v for k, v in state_dict.items() if k != key}
        super()._load_from_state_dict(
            rest, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if value is None:
            return
        if key in missing_keys:
            missing_keys.remove(key)
        if value.layout != self.weight.layout or value.shape != self.weight.shape:
            error_msgs.append(
                f"{key}: expected a {self.weight.layout} tensor of shape {tuple(self.weight.shape)}, "
                f"got {value.layout} {tuple(value.shape)}"
            )
            return
        self.weight = value.to(self.weight.device)


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def to_sparse(
    model: nn.Module,
    *,
    layout: Literal["auto", "csr", "bsr", "semi_structured"] = "auto",
    min_sparsity: float = 0.0,
    blocksize: tuple[int, int] | None = None,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
) -> list[str]:
    """Replace the pruned ``nn.Linear`` modules of ``model`` by :class:`SparseLinear` modules, in place.

    Outputs equal the dense model's within floating-point rounding. Only modules whose type is exactly
    ``nn.Linear`` are converted (subclasses such as attention's ``out_proj`` are read by their owner directly).

    Args:
        model: the model; its Linear modules are replaced in place.
        layout: ``auto`` picks ``semi_structured`` for a CUDA weight that fits it and ``csr`` otherwise; or one
            layout for every layer (layers it does not suit are skipped).
        min_sparsity: convert only layers at least this sparse (fraction of zero weights); layers with no zero
            are never converted. :func:`prunus.probe` measures where sparse execution starts to pay off.
        blocksize: the block of the ``bsr`` layout, e.g. ``(8, 8)``.
        include: glob patterns over module names (``"fc1"``, ``"blocks.*.mlp.*"``); default every module.
        exclude: glob patterns of module names to leave dense.

    Returns:
        The names of the converted modules.

    Raises:
        TargetError: no layer could be converted (the message says why for each).
        ConfigError: a bad ``layout`` or ``min_sparsity``.
    """
    if layout not in ("auto", "csr", "bsr", "semi_structured"):
        raise ConfigError(
            f"layout={layout!r} is not one of 'auto', 'csr', 'bsr', 'semi_structured'"
        )
    check_number("min_sparsity", min_sparsity, minimum=0.0, maximum=1.0)
    check_model(model)
    if type(model) is nn.Linear:
        raise TargetError(
            "to_sparse replaces Linear modules inside a model; wrap a lone Linear in a container "
            "(nn.Sequential(linear)) or build prunus.SparseLinear.from_linear(linear)"
        )
    includes, excludes = glob_patterns("include", include), glob_patterns("exclude", exclude)
    converted: list[str] = []
    skipped: list[str] = []
    for name, module in list(model.named_modules()):
        if type(module) is not nn.Linear:
            continue
        if includes and not any(fnmatch.fnmatchcase(name, p) for p in includes):
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in excludes):
            continue
        weight = module.weight.detach()
        zeros = int((weight == 0).sum())
        sparsity = zeros / weight.numel() if weight.numel() else 0.0
        if zeros == 0 or sparsity < min_sparsity:
            skipped.append(f"{name}: sparsity {sparsity:.1%} below {max(min_sparsity, 1e-9):.1%}")
            continue
        chosen: SparseLayout
        if layout == "auto":
            chosen = (
                "semi_structured"
                if weight.is_cuda and not _ineligible(weight, "semi_structured", None)
                else "csr"
            )
        else:
            chosen = layout
        reason = _ineligible(weight, chosen, blocksize)
        if reason:
            skipped.append(f"{name}: {reason}")
            continue
        _replace(model, name, SparseLinear.from_linear(module, chosen, blocksize))
        converted.append(name)
    if not converted:
        why = "; ".join(skipped) or "the model has no nn.Linear module (matching include/exclude)"
        raise TargetError(f"to_sparse converted nothing in {type(model).__name__}: {why}")
    return converted


def to_dense(model: nn.Module) -> list[str]:
    """Replace every :class:`SparseLinear` in ``model`` by a plain ``nn.Linear`` with its prunus masks.

    Returns:
        The names of the converted modules.

    Raises:
        TargetError: ``model`` holds no SparseLinear.
    """
    check_model(model)
    names = [name for name, m in model.named_modules() if isinstance(m, SparseLinear)]
    if not names or "" in names:
        raise TargetError(
            f"{type(model).__name__} holds no SparseLinear module inside it (see prunus.to_sparse)"
        )
    for name in names:
        module = model.get_submodule(name)
        assert isinstance(module, SparseLinear)
        _replace(model, name, module.to_linear())
    return names
