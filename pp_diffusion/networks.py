"""Equinox denoising networks and classifiers used by the model zoo (and usable for one's own models).

Every denoising network here is called on one unbatched input and a scalar time, ``network(x, t)``,
the convention of :class:`~pp_diffusion.DiffusionModel`; a :class:`Classifier` on one unbatched
input, ``f(x)``, or with a time, ``g(x_t, t)``, when noise-conditional; batch with ``jax.vmap``. The zoo rebuilds a
network from the JSON hyper-parameters stored next to its weights (:meth:`UNet.config`), so a
checkpoint needs no pickle.

Convolutions here are channel-last (``(H, W, C)`` images, ``HWIO`` kernels), not Equinox's
channel-first ``eqx.nn.Conv2d``, and their derivatives are written as matrix products. On CPU,
XLA runs convolutions inside a loop body (``lax.scan``, which every sampler uses) far slower than
outside one (jax-ml/jax#12868; measured here with jax 0.12, batch 128, two 32-channel 3x3 convs):
channel-first forward passes ~20x slower, and even channel-last, the input gradient ~14x and the
weight gradient ~70x slower, while the same derivatives written as shifted slices and a matrix
product ("im2col") run at full speed. :class:`Conv2d` therefore evaluates with
``lax.conv_general_dilated`` (channel-last) and differentiates (forward or reverse mode, any order)
through the im2col form, via ``jax.custom_jvp``.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp

__all__ = ["sinusoidal_embedding", "TimeEmbedding", "Conv2d", "GroupNorm", "ResBlock", "UNet", "EnergyUNet", "ResidualMLP",
           "Classifier", "FunctionNetwork", "from_function", "num_parameters"]


def sinusoidal_embedding(t, dim: int, max_period: float = 10_000.0, scale: float = 1_000.0):
    """Transformer-style sinusoidal features of a scalar time ``t`` in [0, 1] (Vaswani et al., 2017;
    the DDPM time embedding with t scaled by ``scale`` to the familiar 0..1000 range)."""
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    arg = scale * jnp.asarray(t, jnp.float32) * freqs
    return jnp.concatenate([jnp.sin(arg), jnp.cos(arg)])


class TimeEmbedding(eqx.Module):
    """Sinusoidal features followed by a two-layer SiLU MLP."""

    dim: int = eqx.field(static=True)
    linear1: eqx.nn.Linear
    linear2: eqx.nn.Linear

    def __init__(self, dim: int, out_dim: int, *, key):
        k1, k2 = jax.random.split(key)
        self.dim = dim
        self.linear1 = eqx.nn.Linear(dim, out_dim, key=k1)
        self.linear2 = eqx.nn.Linear(out_dim, out_dim, key=k2)

    def __call__(self, t):
        h = sinusoidal_embedding(t, self.dim)
        return self.linear2(jax.nn.silu(self.linear1(h)))


class Conv2d(eqx.Module):
    """A 2-D convolution on one channel-last image ``(H, W, C_in) -> (H', W', C_out)``, "same"
    padding; weights ``(k, k, C_in, C_out)`` initialised like PyTorch's (uniform, bound 1/sqrt(fan_in))."""

    weight: jax.Array
    bias: jax.Array
    stride: int = eqx.field(static=True)

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, *, key, zero: bool = False):
        kw, kb = jax.random.split(key)
        bound = 1.0 / math.sqrt(c_in * kernel * kernel)
        shape = (kernel, kernel, c_in, c_out)
        self.weight = jnp.zeros(shape) if zero else jax.random.uniform(kw, shape, minval=-bound, maxval=bound)
        self.bias = jnp.zeros(c_out) if zero else jax.random.uniform(kb, (c_out,), minval=-bound, maxval=bound)
        self.stride = int(stride)

    def __call__(self, x):
        k = self.weight.shape[0]
        pad = ((k - 1) // 2, k // 2)
        return _conv(x[None], self.weight, self.stride, pad)[0] + self.bias


class GroupNorm(eqx.Module):
    """Group normalisation (Wu & He, 2018) of one channel-last image ``(H, W, C)``, with a per-channel affine map."""

    weight: jax.Array
    bias: jax.Array
    groups: int = eqx.field(static=True)
    eps: float = eqx.field(static=True)

    def __init__(self, groups: int, channels: int, eps: float = 1e-5):
        if channels % groups:
            raise ValueError(f"channels {channels} not divisible by groups {groups}")
        self.weight, self.bias = jnp.ones(channels), jnp.zeros(channels)
        self.groups, self.eps = int(groups), float(eps)

    def __call__(self, x):
        h, w, c = x.shape
        g = x.reshape(h, w, self.groups, c // self.groups)
        mean = jnp.mean(g, axis=(0, 1, 3), keepdims=True)
        var = jnp.var(g, axis=(0, 1, 3), keepdims=True)
        g = (g - mean) * jax.lax.rsqrt(var + self.eps)
        return g.reshape(h, w, c) * self.weight + self.bias


def _lax_conv(x, w, stride: int, pad):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), (pad, pad),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _matmul_conv(x, w, stride: int, pad):
    """The same convolution as shifted (strided) slices, concatenated, times the flattened kernel."""
    k = w.shape[0]
    _, h, wd, _ = x.shape
    xp = jnp.pad(x, ((0, 0), pad, pad, (0, 0)))
    ho = (h + sum(pad) - k) // stride + 1
    wo = (wd + sum(pad) - k) // stride + 1
    cols = [xp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride, :]
            for i in range(k) for j in range(k)]
    return jnp.concatenate(cols, axis=-1) @ w.reshape(-1, w.shape[-1])


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _conv(x, w, stride, pad):
    return _lax_conv(x, w, stride, pad)


def _conv_jvp(stride, pad, primals, tangents):
    x, w = primals
    dx, dw = tangents
    zero = jax.custom_derivatives.SymbolicZero
    y = _conv(x, w, stride, pad)
    dy = jnp.zeros_like(y)
    if not isinstance(dx, zero):
        dy = dy + _matmul_conv(dx, w, stride, pad)
    if not isinstance(dw, zero):
        dy = dy + _matmul_conv(x, dw, stride, pad)
    return y, dy


_conv.defjvp(_conv_jvp, symbolic_zeros=True)


def _groups(channels: int) -> int:
    for g in (8, 4, 2):
        if channels % g == 0:
            return g
    return 1


class ResBlock(eqx.Module):
    """GroupNorm-SiLU-conv, plus a per-channel shift from the time embedding, GroupNorm-SiLU-conv,
    and a (1x1 projected) residual connection (the DDPM ResNet block). With ``emb_dim=None`` the
    block has no time input (call it with ``emb=None``)."""

    norm1: GroupNorm
    conv1: Conv2d
    emb: eqx.nn.Linear | None
    norm2: GroupNorm
    conv2: Conv2d
    skip: Conv2d | None

    def __init__(self, c_in: int, c_out: int, emb_dim: int | None, *, key):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        self.norm1 = GroupNorm(_groups(c_in), c_in)
        self.conv1 = Conv2d(c_in, c_out, 3, key=k1)
        self.emb = eqx.nn.Linear(emb_dim, c_out, key=k2) if emb_dim is not None else None
        self.norm2 = GroupNorm(_groups(c_out), c_out)
        # Zero-initialised last conv: every block starts as the identity (Goyal et al., 2017).
        self.conv2 = Conv2d(c_out, c_out, 3, key=k3, zero=True)
        self.skip = Conv2d(c_in, c_out, 1, key=k4) if c_in != c_out else None

    def __call__(self, x, emb):
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        if self.emb is not None:
            h = h + self.emb(jax.nn.silu(emb))
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        return h + (x if self.skip is None else self.skip(x))


class UNet(eqx.Module):
    """A small U-Net for single-channel square images, predicting an array of the input's shape.

    ``x`` has shape ``(size, size)`` (one image, no channel axis) and ``t`` is a scalar in [0, 1].
    Each resolution level has ``blocks`` residual blocks on the way down and ``blocks + 1`` on the
    way up (with skip connections, as in DDPM); between levels the resolution halves with a
    stride-2 convolution and doubles with nearest-neighbour upsampling and a convolution. The
    output convolution starts at zero, so an untrained network predicts 0.

    Parameters
    ----------
    size
        Image side (8 for the scikit-learn digits); must be divisible by ``2 ** (len(channel_mult) - 1)``.
    channels
        Width of the first level.
    channel_mult
        Width multiplier of each level, e.g. ``(1, 2, 2)``: 8x8, 4x4, 2x2 for ``size=8``.
    blocks
        Residual blocks per level on the way down.
    emb_dim
        Width of the time embedding.
    num_classes
        If set, ``network(x, t, label)`` adds a learned class embedding to the time embedding
        (label ``num_classes`` is reserved for the "null" class of classifier-free guidance).
    in_channels
        Image channels: 1 (the default) takes and returns ``(size, size)``; c > 1 takes and returns
        ``(c, size, size)`` (channel first), e.g. 2 for a phase-space state [x; m].
    """

    size: int = eqx.field(static=True)
    channels: int = eqx.field(static=True)
    channel_mult: tuple[int, ...] = eqx.field(static=True)
    blocks: int = eqx.field(static=True)
    emb_dim: int = eqx.field(static=True)
    num_classes: int | None = eqx.field(static=True)
    in_channels: int = eqx.field(static=True)
    time_embedding: TimeEmbedding
    class_embedding: eqx.nn.Embedding | None
    conv_in: Conv2d
    down: list
    downsample: list
    mid: list
    up: list
    upsample: list
    norm_out: GroupNorm
    conv_out: Conv2d

    def __init__(self, size: int = 8, channels: int = 32, channel_mult=(1, 2, 2), blocks: int = 2,
                 emb_dim: int = 128, num_classes: int | None = None, in_channels: int = 1, *, key):
        channel_mult = tuple(int(m) for m in channel_mult)
        if int(in_channels) < 1:
            raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
        self.in_channels = int(in_channels)
        if size % (2 ** (len(channel_mult) - 1)):
            raise ValueError(f"size {size} is not divisible by 2 ** {len(channel_mult) - 1}")
        keys = iter(jax.random.split(key, 64))
        self.size, self.channels, self.channel_mult = int(size), int(channels), channel_mult
        self.blocks, self.emb_dim, self.num_classes = int(blocks), int(emb_dim), num_classes
        self.time_embedding = TimeEmbedding(min(emb_dim, 64), emb_dim, key=next(keys))
        self.class_embedding = (eqx.nn.Embedding(num_classes + 1, emb_dim, key=next(keys))
                                if num_classes is not None else None)
        widths = [channels * m for m in channel_mult]
        self.conv_in = Conv2d(self.in_channels, channels, 3, key=next(keys))
        self.down, self.downsample, skips = [], [], [channels]
        c = channels
        for level, w in enumerate(widths):
            level_blocks = []
            for _ in range(blocks):
                level_blocks.append(ResBlock(c, w, emb_dim, key=next(keys)))
                c = w
                skips.append(c)
            self.down.append(level_blocks)
            if level < len(widths) - 1:
                self.downsample.append(Conv2d(c, c, 3, stride=2, key=next(keys)))
                skips.append(c)
        self.mid = [ResBlock(c, c, emb_dim, key=next(keys)), ResBlock(c, c, emb_dim, key=next(keys))]
        self.up, self.upsample = [], []
        for level, w in reversed(list(enumerate(widths))):
            level_blocks = []
            for _ in range(blocks + 1):
                level_blocks.append(ResBlock(c + skips.pop(), w, emb_dim, key=next(keys)))
                c = w
            self.up.append(level_blocks)
            if level > 0:
                self.upsample.append(Conv2d(c, c, 3, key=next(keys)))
        self.norm_out = GroupNorm(_groups(c), c)
        self.conv_out = Conv2d(c, self.in_channels, 3, key=next(keys), zero=True)

    def config(self) -> dict:
        """The constructor's hyper-parameters (JSON-serialisable): ``UNet(**config, key=...)`` rebuilds
        a network of the same structure."""
        config = {"size": self.size, "channels": self.channels, "channel_mult": list(self.channel_mult),
                  "blocks": self.blocks, "emb_dim": self.emb_dim, "num_classes": self.num_classes}
        return config if self.in_channels == 1 else {**config, "in_channels": self.in_channels}

    def __call__(self, x, t, label=None):
        shape = (self.size, self.size) if self.in_channels == 1 else (self.in_channels, self.size, self.size)
        if x.shape != shape:
            raise ValueError(f"UNet expects one unbatched image of shape {shape}, got "
                             f"{x.shape}; use jax.vmap for batches")
        emb = self.time_embedding(t)
        if self.class_embedding is not None:
            label = self.num_classes if label is None else label
            emb = emb + self.class_embedding(jnp.asarray(label, jnp.int32))
        h = self.conv_in(x[:, :, None] if self.in_channels == 1 else jnp.moveaxis(x, 0, -1))
        hs = [h]
        for level, level_blocks in enumerate(self.down):
            for block in level_blocks:
                h = block(h, emb)
                hs.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
                hs.append(h)
        for block in self.mid:
            h = block(h, emb)
        for level, level_blocks in enumerate(self.up):
            for block in level_blocks:
                h = block(jnp.concatenate([h, hs.pop()], axis=-1), emb)
            if level < len(self.upsample):
                h = jnp.repeat(jnp.repeat(h, 2, axis=0), 2, axis=1)
                h = self.upsample[level](h)
        out = self.conv_out(jax.nn.silu(self.norm_out(h)))
        return out[:, :, 0] if self.in_channels == 1 else jnp.moveaxis(out, -1, 0)


class EnergyUNet(eqx.Module):
    """A scalar energy E(x, t) built on a :class:`UNet`, for ``DiffusionModel(..., "energy", ...)``
    (score ``-grad_x E``).

    The form is that of Salimans & Ho (2021, "Should EBMs model the energy or the score?") and Du et
    al. (2023, "Reduce, Reuse, Recycle"),

        E(x, t) = ||x - f(x, t)||^2 / (2 sigma_t^2),

    with the denoiser written in the eps-preconditioning of an eps-prediction network,
    f(x, t) = x - sigma_t u(x, t) (= alpha_t xhat_0 when u is a noise prediction), where u is the
    U-Net. The noise levels cancel:

        E(x, t) = ||u(x, t)||^2 / 2,    -grad_x E = -J_u(x, t)^T u(x, t),

    so the network needs no schedule, and ``u`` lives in eps units, as a teacher's eps network
    does: a distilled energy can start from the teacher's weights. That start is close at both ends
    of the noise range (at high noise u ~ x and J_u ~ I, so sigma_t (-grad E) ~ -x ~ -eps; at low
    noise J_u ~ P / sigma_t, the projection onto the normals of the data manifold, along which eps
    lies), which is why this variant is used for the zoo's energy models rather than
    ``||x - f||^2 / (2 sigma_t^2)`` with f a free output (whose start, f = 0, is a point mass at 0).

    Parameters are those of :class:`UNet`; with ``num_classes`` set, ``network(x, t, label)`` is the
    energy of class ``label`` and label ``num_classes`` (the default) the null class of
    classifier-free guidance. The output is a scalar (shape ``()``), one unbatched image in.
    """

    unet: UNet

    def __init__(self, size: int = 8, channels: int = 32, channel_mult=(1, 2, 2), blocks: int = 2,
                 emb_dim: int = 128, num_classes: int | None = None, *, key):
        self.unet = UNet(size, channels, channel_mult, blocks, emb_dim, num_classes, key=key)

    @property
    def num_classes(self) -> int | None:
        """The number of classes of a class-conditional energy (``None``: unconditional)."""
        return self.unet.num_classes

    def config(self) -> dict:
        """The constructor's hyper-parameters (those of the U-Net; JSON-serialisable)."""
        return self.unet.config()

    @classmethod
    def from_unet(cls, unet: UNet) -> "EnergyUNet":
        """The energy ``||unet(x, t)||^2 / 2`` over the (e.g. trained, eps-prediction) ``unet``'s weights."""
        skeleton = eqx.filter_eval_shape(lambda: cls(**unet.config(), key=jax.random.key(0)))
        return eqx.tree_at(lambda e: e.unet, skeleton, unet)

    def __call__(self, x, t, label=None):
        u = self.unet(x, t, label)
        return 0.5 * jnp.sum(u * u)


class ResidualMLP(eqx.Module):
    """A residual MLP denoiser on the flattened input: ``depth`` pre-LayerNorm blocks
    ``h + W2 silu(W1 LN(h + emb))`` of hidden width ``2 * width``, the time embedding added to
    every block's input. Cheap on CPU; suits low-dimensional data (2-D toy sets, 8x8 images).

    Parameters
    ----------
    event_shape
        Shape of one input (and of the output).
    width, depth
        Residual stream width and number of blocks.
    emb_dim
        Width of the sinusoidal features of t.
    """

    event_shape: tuple[int, ...] = eqx.field(static=True)
    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    emb_dim: int = eqx.field(static=True)
    time_embedding: TimeEmbedding
    linear_in: eqx.nn.Linear
    norms: list
    hidden: list
    proj: list
    linear_out: eqx.nn.Linear

    def __init__(self, event_shape=(8, 8), width: int = 256, depth: int = 4, emb_dim: int = 64, *, key):
        self.event_shape = tuple(int(n) for n in event_shape)
        self.width, self.depth, self.emb_dim = int(width), int(depth), int(emb_dim)
        dim = math.prod(self.event_shape)
        keys = jax.random.split(key, 3 + 2 * depth)
        self.time_embedding = TimeEmbedding(emb_dim, width, key=keys[0])
        self.linear_in = eqx.nn.Linear(dim, width, key=keys[1])
        self.norms = [eqx.nn.LayerNorm(width) for _ in range(depth)]
        self.hidden = [eqx.nn.Linear(width, 2 * width, key=keys[3 + 2 * i]) for i in range(depth)]
        self.proj = [eqx.nn.Linear(2 * width, width, key=keys[4 + 2 * i]) for i in range(depth)]
        out = eqx.nn.Linear(width, dim, key=keys[2])
        self.linear_out = eqx.tree_at(lambda m: (m.weight, m.bias), out,
                                      (jnp.zeros_like(out.weight), jnp.zeros_like(out.bias)))

    def config(self) -> dict:
        """The constructor's hyper-parameters (JSON-serialisable)."""
        return {"event_shape": list(self.event_shape), "width": self.width, "depth": self.depth,
                "emb_dim": self.emb_dim}

    def __call__(self, x, t):
        if x.shape != self.event_shape:
            raise ValueError(f"ResidualMLP expects one unbatched input of shape {self.event_shape}, got "
                             f"{x.shape}; use jax.vmap for batches")
        emb = self.time_embedding(t)
        h = self.linear_in(x.reshape(-1))
        for norm, hidden, proj in zip(self.norms, self.hidden, self.proj):
            h = h + proj(jax.nn.silu(hidden(norm(h + emb))))
        return self.linear_out(h).reshape(self.event_shape)


class Classifier(eqx.Module):
    """A small convolutional classifier of single-channel square images, clean or noise-conditional.

    ``classifier(x)`` (or ``classifier(x, t)`` when ``time_conditional``) maps one unbatched image
    ``(size, size)`` to ``num_classes`` logits. Layers: a 3x3 conv in, then per resolution level
    ``blocks`` residual blocks (:class:`ResBlock`, with the time embedding when noise-conditional)
    and a stride-2 conv between levels, then GroupNorm-SiLU and a global mean over positions: the
    :meth:`features` (width ``channels * channel_mult[-1]``), and a linear map to the logits.

    A noise-conditional classifier models p(c | x_t, t) for x_t = alpha_t x_0 + sigma_t eps, the
    classifier of classifier guidance (Dhariwal & Nichol, 2021); the clean one's features play the
    part of Inception features in a Frechet distance (Heusel et al., 2017).

    Parameters
    ----------
    size
        Image side; must be divisible by ``2 ** (len(channel_mult) - 1)``.
    channels, channel_mult
        Width of the first level and the width multiplier of each level.
    blocks
        Residual blocks per level.
    num_classes
        Number of logits.
    emb_dim
        Width of the time embedding of a noise-conditional classifier; ``None``: a clean classifier.
    """

    size: int = eqx.field(static=True)
    channels: int = eqx.field(static=True)
    channel_mult: tuple[int, ...] = eqx.field(static=True)
    blocks: int = eqx.field(static=True)
    num_classes: int = eqx.field(static=True)
    emb_dim: int | None = eqx.field(static=True)
    time_embedding: TimeEmbedding | None
    conv_in: Conv2d
    levels: list
    downsample: list
    norm_out: GroupNorm
    linear_out: eqx.nn.Linear

    def __init__(self, size: int = 8, channels: int = 32, channel_mult=(1, 2), blocks: int = 1,
                 num_classes: int = 10, emb_dim: int | None = None, *, key):
        channel_mult = tuple(int(m) for m in channel_mult)
        if size % (2 ** (len(channel_mult) - 1)):
            raise ValueError(f"size {size} is not divisible by 2 ** {len(channel_mult) - 1}")
        keys = iter(jax.random.split(key, 4 + len(channel_mult) * (blocks + 1)))
        self.size, self.channels, self.channel_mult = int(size), int(channels), channel_mult
        self.blocks, self.num_classes = int(blocks), int(num_classes)
        self.emb_dim = None if emb_dim is None else int(emb_dim)
        self.time_embedding = (TimeEmbedding(min(self.emb_dim, 64), self.emb_dim, key=next(keys))
                               if emb_dim is not None else None)
        self.conv_in = Conv2d(1, channels, 3, key=next(keys))
        self.levels, self.downsample = [], []
        c = channels
        for level, m in enumerate(channel_mult):
            w = channels * m
            level_blocks = []
            for _ in range(blocks):
                level_blocks.append(ResBlock(c, w, self.emb_dim, key=next(keys)))
                c = w
            self.levels.append(level_blocks)
            if level < len(channel_mult) - 1:
                self.downsample.append(Conv2d(c, c, 3, stride=2, key=next(keys)))
        self.norm_out = GroupNorm(_groups(c), c)
        self.linear_out = eqx.nn.Linear(c, num_classes, key=next(keys))

    @property
    def time_conditional(self) -> bool:
        """Whether the classifier takes a time, ``classifier(x_t, t)``."""
        return self.emb_dim is not None

    def config(self) -> dict:
        """The constructor's hyper-parameters (JSON-serialisable)."""
        return {"size": self.size, "channels": self.channels, "channel_mult": list(self.channel_mult),
                "blocks": self.blocks, "num_classes": self.num_classes, "emb_dim": self.emb_dim}

    def features(self, x, t=None):
        """The penultimate layer: the mean over positions of the last level's normalised activations."""
        if x.shape != (self.size, self.size):
            raise ValueError(f"Classifier expects one unbatched image of shape {(self.size, self.size)}, "
                             f"got {x.shape}; use jax.vmap for batches")
        if self.time_conditional and t is None:
            raise ValueError("this classifier is noise-conditional: call it as classifier(x_t, t)")
        if not self.time_conditional and t is not None:
            raise ValueError("this classifier is a clean one: call it as classifier(x), without t")
        emb = self.time_embedding(t) if self.time_conditional else None
        h = self.conv_in(x[:, :, None])
        for level, level_blocks in enumerate(self.levels):
            for block in level_blocks:
                h = block(h, emb)
            if level < len(self.downsample):
                h = self.downsample[level](h)
        return jnp.mean(jax.nn.silu(self.norm_out(h)), axis=(0, 1))

    def __call__(self, x, t=None):
        return self.linear_out(self.features(x, t))


class FunctionNetwork(eqx.Module):
    """A network given as a plain function of its parameters: ``network(x, t) = apply(params, x, t)``.

    Build it with :func:`from_function`. ``params`` is an ordinary pytree field (its arrays are the
    module's leaves: :func:`pp_diffusion.save_model` writes them, ``jax.grad`` and Optax see them);
    ``apply`` is a static field (not saved: give it back to :func:`pp_diffusion.load_model` as
    ``apply=``). ``apply`` must be hashable (functions, bound methods and ``functools.partial``
    objects of hashable arguments are), as every static field of an Equinox module that is jitted.
    """

    params: Any
    apply: Callable = eqx.field(static=True)

    def __call__(self, x, t, *args):
        return self.apply(self.params, x, t, *args)


def from_function(apply: Callable, params) -> FunctionNetwork:
    """Wrap ``apply(params, x, t)``, such as a Flax module's ``apply`` or a hand-written function, as an
    Equinox module usable as the network of a :class:`~pp_diffusion.DiffusionModel`.

    Parameters
    ----------
    apply
        ``apply(params, x, t) -> prediction`` on **one unbatched** ``x`` (shape ``event_shape``)
        and a **scalar** ``t`` in [0, 1], returning the prediction the model's parameterization
        names (eps, x0, v or score: an array of ``x``'s shape; or a scalar energy). Samplers batch
        it with ``jax.vmap``. A function written for batches (most Flax modules) is wrapped as
        ``lambda p, x, t: module.apply(p, x[None], t[None])[0]``.
    params
        A pytree of arrays (e.g. Flax's ``variables``); NumPy arrays and Python numbers become JAX
        arrays (float32 unless ``jax_enable_x64`` is on). When it is built only of dicts with
        string keys, lists, tuples and arrays, :func:`pp_diffusion.load_model` rebuilds it from
        the saved file alone (with ``apply=`` given back); otherwise pass a skeleton,
        ``network=from_function(apply, like_params)``.

    Examples
    --------
    >>> import jax.numpy as jnp, pp_diffusion as ppd
    >>> apply = lambda p, x, t: p["w"] * x + p["b"] * t
    >>> net = ppd.networks.from_function(apply, {"w": jnp.ones(2), "b": jnp.zeros(2)})
    >>> model = ppd.DiffusionModel(net, "eps", ppd.schedules.VPCosine(), event_shape=(2,))
    >>> model.denoise(jnp.ones(2), 0.5).shape
    (2,)
    """
    if not callable(apply):
        raise TypeError(f"apply must be callable as apply(params, x, t), got {type(apply).__name__}")
    try:
        hash(apply)
    except TypeError:
        raise TypeError(f"apply must be hashable (it is a static field of the module), got an unhashable "
                        f"{type(apply).__name__}; wrap it in a function: lambda p, x, t: apply(p, x, t)") from None

    def as_array(leaf):
        return leaf if isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct)) else jnp.asarray(leaf)

    return FunctionNetwork(jax.tree_util.tree_map(as_array, params), apply)


def num_parameters(module) -> int:
    """Number of scalar parameters (inexact array leaves) of an Equinox module."""
    leaves = jax.tree_util.tree_leaves(eqx.filter(module, eqx.is_inexact_array))
    return int(sum(leaf.size for leaf in leaves))
