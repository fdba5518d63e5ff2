"""Make the figures the README shows (``make figures``): docs/figures/*.png.

Everything is drawn from the library with fixed seeds, so the figures are reproducible.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import vismap as vm  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs" / "figures"


def data_and_first_map(path: Path) -> None:
    """Top: Shapes scenes with their masks; middle: two-object scenes and sprites; bottom: the
    vanilla gradient of shapes-gap for the true class."""
    shapes = vm.data.make_shapes(6, seed=0)
    pairs = vm.data.make_shapes(3, seed=1, objects=2)
    sprites = vm.data.make_sprites(3, seed=0)
    model = vm.models.load_pretrained("shapes-gap")
    x = shapes.images.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).gather(1, shapes.labels[:, None]).sum(), x)
    saliency = grad.abs().amax(1)

    fig, axes = plt.subplots(3, 6, figsize=(12, 6.4))
    for k in range(6):
        axes[0, k].imshow(shapes.images[k].permute(1, 2, 0))
        axes[0, k].contour(shapes.masks[k, 0], levels=[0.5], colors="white", linewidths=0.8)
        axes[0, k].set_title(shapes.class_names[k])
        axes[2, k].imshow(saliency[k], cmap="magma")
        axes[2, k].contour(shapes.masks[k, 0], levels=[0.5], colors="cyan", linewidths=0.6)
        axes[2, k].set_title(f"∂y/∂x, '{shapes.class_names[k]}'", fontsize=9)
    for k in range(3):
        axes[1, k].imshow(pairs.images[k].permute(1, 2, 0))
        axes[1, k].set_title(" + ".join(pairs.class_names[k]), fontsize=9)
        axes[1, 3 + k].imshow(sprites.images[k, 0], cmap="gray")
        axes[1, 3 + k].set_title(
            "sprite " + vm.data.SPRITE_SHAPES[int(sprites.factors[k, 0])], fontsize=9
        )
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(
        "vismap data with ground truth (masks outlined) and a first map: the vanilla "
        "gradient of shapes-gap"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    data_and_first_map(OUT / "data_and_first_map.png")
    print("wrote", OUT)
