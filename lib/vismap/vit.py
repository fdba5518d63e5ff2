"""A small vision transformer for the Shapes images (the appendix chapter 11).

Dosovitskiy et al. 2021, *An Image is Worth 16x16 Words: Transformers for Image Recognition at
Scale*, at the course's size. An image is cut into ``P x P`` patches, each patch is mapped
linearly to a token of ``D`` numbers, a learned class token is put in front, learned position
embeddings are added, and pre-norm transformer blocks mix the tokens (their Eq. 2-4):

    ``z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos``
    ``z'_l = MSA(LN(z_{l-1})) + z_{l-1}``,   ``z_l = MLP(LN(z'_l)) + z'_l``
    ``y = head(LN(z_L^0))``   (the class token's output)

Multi-head self-attention with ``d = D / heads`` per head (``Q, K, V`` from one linear map):

    ``A = softmax(Q K^T / sqrt(d))``  (n, heads, T, T),   ``MSA(z) = [A_1 V_1, ...] W_o``

The patch embedding ``x_p E`` is a small convolutional stem, the paper's *hybrid* input
(Dosovitskiy et al. 2021, Sec. 3.1: the tokens are "patches" of a CNN's feature map; Xiao et
al. 2021, *Early Convolutions Help Transformers See Better*): three 3x3 convolutions of stride
2 (16, 32, then ``D`` channels, ReLU between them) take the 64x64 image to an 8x8 grid, one
token for each 8x8 patch of the image, as the plain linear embedding gives. Trained on the
course's 24,576 scenes for 15,000 steps, the plain embedding (``stem=False``, one linear map of
each 8x8 patch) reached 72 % held-out accuracy; the stem makes a transformer of this size
learnable on a CPU in minutes. It is trained with a batch norm after its first two convolutions
(``batchnorm=True``), folded into them afterwards (:func:`fold_stem`), as the course's CNNs are.

Every part an explanation looks at is a module: the attention probabilities ``A`` are the output
of each block's ``attn.probs`` (an ``nn.Softmax``), so attention rollout and Chefer et al.'s map
record ``A`` and its gradient with forward hooks; the non-linearity is an ``nn.GELU`` module.
The module names follow timm's (``blocks.0``, ``blocks.0.attn.qkv``, ``blocks.0.mlp.fc1`` ...),
so a block's weights load into timm's ``Block`` as they are.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .data import SHAPE_CLASSES

__all__ = ["Attention", "Mlp", "Block", "ShapesViT", "conv_stem", "fold_stem", "shapes_vit"]


class Attention(nn.Module):
    """Multi-head self-attention: ``A = softmax(Q K^T / sqrt(d))`` (the module ``probs``,
    output ``(n, heads, T, T)``, each row sums to 1), ``out = concat_h(A_h V_h) W_o``."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim must be a multiple of heads, got dim={dim}, heads={heads}")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.probs = nn.Softmax(dim=-1)
        self.proj = nn.Linear(dim, dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n, t, dim = z.shape
        qkv = self.qkv(z).reshape(n, t, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (n, heads, T, d) each
        a = self.probs(q @ k.transpose(-2, -1) * self.scale)  # (n, heads, T, T)
        return self.proj((a @ v).transpose(1, 2).reshape(n, t, dim))


class Mlp(nn.Module):
    """``fc2(GELU(fc1(z)))``, applied to every token on its own."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(z)))


class Block(nn.Module):
    """A pre-norm transformer block: ``z = z + MSA(LN(z))``, then ``z = z + MLP(LN(z))``."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, hidden)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z + self.attn(self.norm1(z))
        return z + self.mlp(self.norm2(z))


class ShapesViT(nn.Module):
    """A vision transformer: patch embedding, class token, position embeddings, ``depth``
    blocks, a final layer norm and a linear head on the class token.

    The input is standardised by the training scenes' pixel statistics, then ``(n, 3, 64, 64)``
    images with 8x8 patches give an 8x8 grid of 64 patch tokens after the
    class token, ``T = 65`` tokens of ``D = dim`` numbers; a block's output is ``(n, T, D)``.

    Attributes:
        input_size: ``(C, H, W)`` the model was built for.
        num_prefix_tokens: tokens before the patch tokens (the class token): 1.
        token_grid: ``(h, w)`` of the patch tokens, row by row: the layer methods reshape a
            block's output to it (:func:`vismap._layers.capture`).
    """

    num_prefix_tokens = 1
    #: the pixel mean and standard deviation of the training scenes (the three channels alike):
    #: the model standardises its input first, ``(x - mean) / std``, a fixed affine map
    pixel_mean, pixel_std = 0.277, 0.177

    def __init__(
        self,
        classes: int = len(SHAPE_CLASSES),
        *,
        image_size: int = 64,
        patch: int = 8,
        dim: int = 64,
        depth: int = 3,
        heads: int = 4,
        mlp_ratio: int = 2,
        stem: bool = True,
        batchnorm: bool = False,
    ):
        super().__init__()
        grid = image_size // patch
        self.input_size = (3, image_size, image_size)
        self.token_grid = (grid, grid)
        # x_p E for every patch at once: the convolutional stem (one token per P x P patch), or a
        # P x P convolution with stride P (the paper's linear embedding of each patch)
        self.patch_embed = (
            conv_stem(dim, patch, batchnorm) if stem else nn.Conv2d(3, dim, patch, stride=patch)
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + grid * grid, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio * dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.pixel_mean) / self.pixel_std
        patches = self.patch_embed(x).flatten(2).transpose(1, 2)  # (n, h*w, D), row by row
        z = torch.cat([self.cls_token.expand(len(x), -1, -1), patches], 1) + self.pos_embed
        z = self.blocks(z)
        return self.head(self.norm(z)[:, 0])


def conv_stem(dim: int, patch: int = 8, batchnorm: bool = False) -> nn.Sequential:
    """The patch embedding as a convolutional stem: ``log2(patch)`` 3x3 convolutions of stride 2
    (``16, 32, ...`` channels, then ``dim``), each but the last followed by ``ReLU`` (and, with
    ``batchnorm``, a batch norm before it): ``(n, 3, H, W) -> (n, dim, H / patch, W / patch)``."""
    steps = patch.bit_length() - 1
    if patch < 2 or 2**steps != patch:
        raise ValueError(f"patch must be a power of 2 for the stem, got {patch}")
    widths = [3] + [16 * 2**i for i in range(steps - 1)] + [dim]
    layers: list[nn.Module] = []
    for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Conv2d(w_in, w_out, 3, stride=2, padding=1))
        if i < steps - 1:
            layers += [nn.BatchNorm2d(w_out)] if batchnorm else []
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def fold_stem(trained: ShapesViT) -> ShapesViT:
    """The plain ViT of a ViT trained with batch norms in its stem: each batch norm folded into
    the convolution before it (``torch.nn.utils.fusion.fuse_conv_bn_eval``: ``w' = w g / s``,
    ``b' = (b - mu) g / s + beta``, ``s = sqrt(var + eps)``), every other weight copied. Same
    outputs in eval mode, to float rounding."""
    convs = [m for m in trained.patch_embed.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in trained.patch_embed.modules() if isinstance(m, nn.BatchNorm2d)]
    fused = [
        nn.utils.fusion.fuse_conv_bn_eval(conv.eval(), norm.eval())
        for conv, norm in zip(convs, norms, strict=False)
    ] + convs[len(norms) :]
    plain = copy.deepcopy(trained).eval()
    plain.patch_embed = conv_stem(convs[-1].out_channels, 2 ** len(convs))
    stem_convs = [m for m in plain.patch_embed.modules() if isinstance(m, nn.Conv2d)]
    for target, conv in zip(stem_convs, fused, strict=True):
        target.load_state_dict(conv.state_dict())
    return plain.to(trained.cls_token.dtype).eval()


def shapes_vit(classes: int = len(SHAPE_CLASSES), batchnorm: bool = False) -> ShapesViT:
    """The course's ViT, ``shapes-vit``: a convolutional stem to 8x8 patch tokens of the 64x64
    images, ``D = 64``, 3 blocks of 4 heads, MLP width 128. ``batchnorm=True`` gives the variant
    it is trained as (batch norms in the stem, :func:`fold_stem` removes them)."""
    return ShapesViT(classes, batchnorm=batchnorm)
