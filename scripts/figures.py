"""Draw README's Results figures from a training run: test inputs beside their translations and
reconstructions, and the loss curves of losses.csv.

    python scripts/figures.py output/horse2zebra --out docs/results

Reads RUN/results (test.py's output: real_A/, A2B/, rec_A/, real_B/, B2A/, rec_B/) and
RUN/losses.csv; writes OUT/translations.jpg and OUT/losses.jpg. The inputs shown are spread
evenly through the sorted test set, not picked by hand. The loss curves need matplotlib
(`pip install matplotlib`); nothing else in the repository does.
"""
import argparse
import csv
import os
import sys

from PIL import Image, ImageDraw, ImageOps

LOSSES = ("loss_G_GAN", "loss_G_cycle", "loss_G_identity", "loss_D")


def fail(message):
    print(f"figures.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def spread(names, n):
    """n names spread evenly through the sorted list (all of them if there are fewer)."""
    names = sorted(names)
    if len(names) <= n:
        return names
    return [names[(2 * i + 1) * len(names) // (2 * n)] for i in range(n)]


def panel_columns(results, domain, direction):
    """The folders of one direction's panel that exist, with their column titles."""
    columns = [(f"real_{domain}", "input"), (direction, "translated"),
               (f"rec_{domain}", "reconstructed")]
    return [(folder, title) for folder, title in columns
            if os.path.isdir(os.path.join(results, folder))]


def translations_figure(results, path, titles, n, cell, quality):
    """n inputs per direction in rows; per direction the columns input, translated and
    reconstructed (when test.py wrote rec_*), the two directions side by side."""
    panels = []
    for title, (domain, direction) in zip(titles, (("A", "A2B"), ("B", "B2A"))):
        if not os.path.isdir(os.path.join(results, direction)):
            fail(f"{results}: no {direction}/ folder; run test.py on the test sets first")
        names = spread(os.listdir(os.path.join(results, direction)), n)
        panels.append((title, panel_columns(results, domain, direction), names))
    rows = max(len(names) for _, _, names in panels)
    gap, header = 4, 36
    widths = [len(columns) * (cell + gap) for _, columns, _ in panels]
    size = (sum(widths) + gap * (len(panels) + 1), header + rows * (cell + gap) + gap)
    sheet = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(sheet)
    x0 = gap
    for (title, columns, names), width in zip(panels, widths):
        draw.text((x0, 4), title, fill="black")
        for c, (folder, column_title) in enumerate(columns):
            x = x0 + c * (cell + gap)
            draw.text((x, 20), column_title, fill="black")
            for r, name in enumerate(names):
                with Image.open(os.path.join(results, folder, name)) as image:
                    tile = ImageOps.contain(image.convert("RGB"), (cell, cell), Image.LANCZOS)
                y = header + r * (cell + gap)
                sheet.paste(tile, (x + (cell - tile.width) // 2, y + (cell - tile.height) // 2))
        x0 += width + gap
    sheet.save(path, quality=quality)


def read_losses(path):
    if not os.path.isfile(path):
        fail(f"{path}: no such file; it is written by train.py")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        fail(f"{path}: no rows yet")
    return rows


def losses_figure(csv_path, path, quality):
    """The four losses against iterations, with the learning rate on a second axis."""
    try:
        import matplotlib
    except ImportError:
        fail("the loss curves need matplotlib: pip install matplotlib")
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    rows = read_losses(csv_path)
    iterations = [int(r["iteration"]) for r in rows]
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    for name in LOSSES:
        ax.plot(iterations, [float(r[name]) for r in rows], label=name, linewidth=1)
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"mean loss over {iterations[0]} iterations")
    ax.grid(alpha=0.3)
    lr = ax.twinx()
    lr.plot(iterations, [float(r["lr"]) for r in rows], color="gray", linestyle="--", linewidth=1,
            label="lr")
    lr.set_ylabel("learning rate")
    lr.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()[0] + lr.get_legend_handles_labels()[0]
    ax.legend(lines, [line.get_label() for line in lines], loc="upper center",
              bbox_to_anchor=(0.5, -0.2), fontsize=8, ncol=5, frameon=False)
    fig.tight_layout()
    fig.savefig(path, pil_kwargs={"quality": quality})
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description="README's Results figures from a training run.")
    p.add_argument("run", help="a train.py --output folder, with results/ written by test.py")
    p.add_argument("--results", help="test.py's results folder (default: RUN/results)")
    p.add_argument("--out", default="docs/results",
                   help="where the figures go (default: docs/results)")
    p.add_argument("--images", type=int, default=4, help="test inputs per direction (default: 4)")
    p.add_argument("--cell", type=int, default=160,
                   help="pixels per image in the figure (default: 160)")
    p.add_argument("--titles", nargs=2, default=("A2B: horse -> zebra", "B2A: zebra -> horse"),
                   metavar=("A2B", "B2A"), help="the two panels' titles (default: horse and zebra)")
    p.add_argument("--quality", type=int, default=85, help="JPEG quality (default: 85)")
    args = p.parse_args(argv)
    if args.images < 1 or args.cell < 16:
        fail("--images must be at least 1 and --cell at least 16")
    if not os.path.isdir(args.run):
        fail(f"{args.run}: no such folder")
    os.makedirs(args.out, exist_ok=True)
    results = args.results or os.path.join(args.run, "results")
    translations_figure(results, os.path.join(args.out, "translations.jpg"), args.titles,
                        args.images, args.cell, args.quality)
    losses_figure(os.path.join(args.run, "losses.csv"), os.path.join(args.out, "losses.jpg"),
                  args.quality)
    print(f"figures in {args.out}: translations.jpg, losses.jpg")


if __name__ == "__main__":
    main(sys.argv[1:])
