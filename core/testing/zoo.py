"""Small real models for tests, examples and benchmarks: the shapes pruning code has to get right.

Each model is plain PyTorch (no prunus, no Hypothesis: importing this module imports torch only), so a plugin's
own tests, prunus's test suite and its benchmarks prune the same architectures:

* :func:`mlp`: a ``nn.Sequential`` of Linear layers with ReLU between them (parameters ``0.weight``,
  ``2.weight``, ...), any widths, from a 4-layer toy to the 1024-4096-4096-1024 benchmark MLP;
  :func:`linear_stack`: square Linear layers with nothing between them (the global-ranking benchmark);
* :class:`MLP`: the same idea with named layers ``fc1``, ``fc2``, ... for tests that address a layer by name;
* :class:`LeNet`: two convolutions with pooling, then two Linear layers (a flatten between conv and Linear);
* :class:`ResidualBlock` and :class:`ResNet`: ResNet basic blocks (Conv-BN-ReLU-Conv-BN plus a shortcut, a
  1x1 projection when the shape changes) and a ResNet for 32x32 inputs built from them; :func:`resnet18` is the
  CIFAR ResNet-18 (3x3 stem, no max-pool);
* :class:`GroupedNet`, :class:`ConcatNet`, :class:`FlattenNet` and, with an MLP and a small ResNet, the table
  :data:`CHANNEL_NETS`: the ways channels are coupled that channel removal must follow; :func:`randomize_norms`
  gives BatchNorm layers statistics that matter to the outputs;
* :class:`AttentionBlock`: ``nn.MultiheadAttention`` with a residual connection, a LayerNorm and an MLP.

Constructors take sizes and draw weights from torch's default initialisation; seed torch first (or pass
``seed=`` to :func:`mlp` and :func:`linear_stack`) for reproducible weights.

>>> from prunus.testing.zoo import mlp, resnet18
>>> model = mlp((16, 32, 10), seed=0)
>>> [name for name, _ in model.named_parameters()]
['0.weight', '0.bias', '2.weight', '2.bias']
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = [
    "CHANNEL_NETS",
    "MLP",
    "AttentionBlock",
    "ConcatNet",
    "FlattenNet",
    "GroupedNet",
    "LeNet",
    "ResNet",
    "ResidualBlock",
    "linear_stack",
    "mlp",
    "randomize_norms",
    "resnet18",
]


def _seed(seed: int | None) -> None:
    # The global generator, as a test seeding itself would: what the caller draws next is reproducible too.
    if seed is not None:
        torch.manual_seed(seed)


def _check_widths(sizes: Sequence[int]) -> None:
    if len(sizes) < 2 or not all(isinstance(s, int) and s > 0 for s in sizes):
        raise ConfigError(
            f"sizes={tuple(sizes)!r} must be at least two positive int widths, the input's first"
        )


def mlp(sizes: Sequence[int], *, bias: bool = True, seed: int | None = None) -> nn.Sequential:
    """``Linear(sizes[0], sizes[1]), ReLU(), Linear(sizes[1], sizes[2]), ...``: no ReLU after the last layer.

    Args:
        sizes: the widths, input first; at least two.
        bias: whether the Linear layers have biases.
        seed: if given, ``torch.manual_seed(seed)`` is called first.
    """
    _check_widths(sizes)
    _seed(seed)
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b, bias=bias), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def linear_stack(
    layers: int, width: int, *, bias: bool = False, seed: int | None = None
) -> nn.Sequential:
    """``layers`` square ``Linear(width, width)`` modules in a ``nn.Sequential``, nothing between them.

    Args:
        layers: how many Linear layers.
        width: their input and output width.
        bias: whether they have biases.
        seed: if given, ``torch.manual_seed(seed)`` is called first.
    """
    _seed(seed)
    return nn.Sequential(*[nn.Linear(width, width, bias=bias) for _ in range(layers)])


class MLP(nn.Module):
    """Linear layers named ``fc1``, ``fc2``, ... with ReLU between them (input ``(batch, sizes[0])``).

    Args:
        sizes: the widths, input first (default ``(16, 32, 24, 10)``: ``fc1`` to ``fc3``).
    """

    def __init__(self, sizes: Sequence[int] = (16, 32, 24, 10)) -> None:
        super().__init__()
        _check_widths(sizes)
        self.depth = len(sizes) - 1
        for i, (a, b) in enumerate(itertools.pairwise(sizes), start=1):
            self.add_module(f"fc{i}", nn.Linear(a, b))

    def forward(self, x: Tensor) -> Tensor:
        for i in range(1, self.depth + 1):
            layer: nn.Module = getattr(self, f"fc{i}")
            x = layer(x) if i == self.depth else torch.relu(layer(x))
        return x


class LeNet(nn.Module):
    """LeNet-style: ``conv1`` (4 channels) with 2x2 max-pooling, ``conv2`` (8), then ``fc1`` and ``fc2``.

    Input ``(batch, 1, 16, 16)``; ten outputs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.conv2 = nn.Conv2d(4, 8, 3)
        self.fc1 = nn.Linear(8 * 5 * 5, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.relu(self.conv2(x))
        out: Tensor = self.fc2(torch.relu(self.fc1(x.flatten(1))))
        return out


class ResidualBlock(nn.Module):
    """A ResNet basic block: Conv-BN-ReLU-Conv-BN plus the shortcut, then ReLU.

    The shortcut is the identity (an empty ``nn.Sequential``) when the shape is kept, else a strided 1x1
    convolution and a BatchNorm, so the residual addition couples the block's output channels with its input's.

    Args:
        channels: input channels.
        out_channels: output channels (default: ``channels``).
        stride: the stride of the first convolution and of the projection.
    """

    def __init__(self, channels: int, out_channels: int | None = None, stride: int = 1) -> None:
        super().__init__()
        cout = channels if out_channels is None else out_channels
        self.conv1 = nn.Conv2d(channels, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or channels != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(channels, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """A ResNet for small images: a 3x3 ``stem`` and its BatchNorm ``bn``, residual blocks, a Linear ``head``.

    The blocks are ``block1``, ``block2``, ... in order: ``depth`` :class:`ResidualBlock` per stage, one stage
    per entry of ``widths``, each stage after the first halving the resolution in its first block. The head
    reads the channels averaged over the image.

    Args:
        widths: the channels of each stage.
        depth: residual blocks per stage.
        classes: outputs of the head.
        in_channels: channels of the input image.
    """

    def __init__(
        self,
        widths: Sequence[int] = (64, 128, 256, 512),
        depth: int = 2,
        classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if not widths or depth < 1:
            raise ConfigError(
                f"widths={tuple(widths)!r} and depth={depth} must give at least one block"
            )
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(widths[0])
        cin, index = widths[0], 0
        for stage, width in enumerate(widths):
            for i in range(depth):
                index += 1
                stride = 2 if stage and not i else 1
                self.add_module(f"block{index}", ResidualBlock(cin, width, stride))
                cin = width
        self.head = nn.Linear(cin, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        for module in self.children():
            if isinstance(module, ResidualBlock):
                x = module(x)
        out: Tensor = self.head(x.mean(dim=(2, 3)))
        return out


def resnet18(width: int = 64, classes: int = 10) -> ResNet:
    """ResNet-18 for 32x32 inputs (CIFAR): stages of ``width`` to ``8 * width`` channels, two blocks each."""
    return ResNet((width, 2 * width, 4 * width, 8 * width), depth=2, classes=classes)


class GroupedNet(nn.Module):
    """A grouped convolution, a depthwise one, then a pointwise one (input ``(batch, 3, 8, 8)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn = nn.BatchNorm2d(8)
        self.pointwise = nn.Conv2d(8, 12, 1)
        self.head = nn.Linear(12, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.grouped(torch.relu(self.conv(x))))
        x = torch.relu(self.bn(self.depthwise(x)))
        out: Tensor = self.head(self.pointwise(x).mean(dim=(2, 3)))
        return out


class ConcatNet(nn.Module):
    """Two convolution branches concatenated along channels (input ``(batch, 3, 8, 8)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Conv2d(3, 6, 3, padding=1)
        self.right = nn.Conv2d(3, 10, 1)
        self.mix = nn.Conv2d(16, 8, 3, padding=1)
        self.head = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.cat([torch.relu(self.left(x)), torch.relu(self.right(x))], dim=1)
        out: Tensor = self.head(torch.relu(self.mix(x)).mean(dim=(2, 3)))
        return out


class FlattenNet(nn.Module):
    """Conv features flattened into a Linear: each channel owns several of its input columns (input
    ``(batch, 3, 6, 6)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.fc = nn.Linear(6 * 4 * 4, 10)
        self.head = nn.Linear(10, 3)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.head(torch.relu(self.fc(torch.relu(self.conv(x)).flatten(1))))
        return out


CHANNEL_NETS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "mlp": (partial(MLP, (12, 32, 24, 5)), (4, 12)),
    "resnet": (partial(ResNet, (8, 16), depth=1, classes=4), (2, 3, 8, 8)),
    "grouped": (GroupedNet, (2, 3, 8, 8)),
    "concat": (ConcatNet, (2, 3, 8, 8)),
    "flatten": (FlattenNet, (2, 3, 6, 6)),
}
"""Small nets whose channels are coupled in every way channel removal must follow, by name: ``(constructor,
input shape)``. An MLP, residual additions with BatchNorm (a projection shortcut included), grouped and depthwise
convolutions, a concatenation, and a flatten into a Linear."""


def randomize_norms(model: nn.Module, seed: int = 7) -> nn.Module:
    """Give every BatchNorm of ``model`` statistics and affine terms far from the identity (so that they matter to
    the outputs), from a generator seeded with ``seed``; returns the model in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) * 2 - 1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=gen) * 2 - 1)
    return model.eval()


class AttentionBlock(nn.Module):
    """Self-attention with a residual connection, then a LayerNorm and an MLP: a small transformer block.

    Input ``(batch, sequence, embed)``.

    Args:
        embed: the embedding width (a multiple of ``heads``).
        heads: attention heads.
    """

    def __init__(self, embed: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(embed, heads, batch_first=True)
        self.norm = nn.LayerNorm(embed)
        self.mlp = nn.Sequential(
            nn.Linear(embed, 2 * embed), nn.GELU(), nn.Linear(2 * embed, embed)
        )

    def forward(self, x: Tensor) -> Tensor:
        attended: Tensor = self.attn(x, x, x, need_weights=False)[0]
        x = x + attended
        out: Tensor = x + self.mlp(self.norm(x))
        return out
