"""Image grids and codebook usage histograms."""
import pytest
import torch


def run(node):
    from comfyui_genart.graph.context import RunContext, RunSettings

    with torch.inference_mode():
        return node.run(RunContext(RunSettings()))


def numbered_images(n, h=4, w=6):
    """Image i is filled with the value (i + 1) / 10 (channel 0), so cells are easy to find."""
    images = torch.zeros(n, h, w, 3)
    for i in range(n):
        images[i, ..., 0] = (i + 1) / 10
    return images


def test_image_grid_places_images_row_by_row_with_padding():
    from comfyui_genart.nodes.visualize import ImageGrid

    images = numbered_images(5)
    grid = run(ImageGrid(images=images, columns=2, padding=3, background=0.5)).image
    assert grid.shape == (1, 3 * (4 + 3) + 3, 2 * (6 + 3) + 3, 3)
    for i in range(5):
        y, x = 3 + (i // 2) * 7, 3 + (i % 2) * 9
        assert torch.equal(grid[0, y:y + 4, x:x + 6], images[i])
    empty = grid[0, 3 + 2 * 7:3 + 2 * 7 + 4, 3 + 9:3 + 9 + 6]
    assert torch.equal(empty, torch.full_like(empty, 0.5))
    assert torch.equal(grid[0, :3], torch.full_like(grid[0, :3], 0.5))


def test_image_grid_of_a_trajectory_has_one_row_per_item():
    """A decoded trajectory is item-major: K snapshots of item 0, then of item 1."""
    from comfyui_genart.nodes.visualize import ImageGrid

    items, snapshots = 2, 3
    images = numbered_images(items * snapshots)
    grid = run(ImageGrid(images=images, columns=snapshots, padding=0)).image
    assert grid.shape == (1, items * 4, snapshots * 6, 3)
    for item in range(items):
        row = grid[0, item * 4:(item + 1) * 4]
        assert torch.equal(row, torch.cat(list(images[item * snapshots:(item + 1) * snapshots]), dim=1))


def test_image_grid_with_more_columns_than_images_is_one_row():
    from comfyui_genart.nodes.visualize import ImageGrid

    grid = run(ImageGrid(images=numbered_images(3), columns=8, padding=1)).image
    assert grid.shape == (1, 4 + 2, 3 * (6 + 1) + 1, 3)


def test_image_grid_refuses_a_grid_over_the_pixel_limit(monkeypatch):
    from comfyui_genart.nodes import visualize

    monkeypatch.setattr(visualize, "MAX_PIXELS", 100)
    assert run(visualize.ImageGrid(images=numbered_images(3), columns=3, padding=0)).image.shape == (1, 4, 18, 3)
    with pytest.raises(ValueError, match=r"the grid would be 22x6 = 132 pixels, over the limit of 100"):
        run(visualize.ImageGrid(images=numbered_images(3), columns=3, padding=1))


def test_column_values_take_the_max_when_bars_outnumber_columns():
    from comfyui_genart.core.plots import column_values

    values = torch.tensor([1, 5, 2, 0, 0, 0, 7, 3])
    assert column_values(values, 4).tolist() == [5, 2, 0, 7]
    assert column_values(torch.tensor([4, 0]), 4).tolist() == [4, 4, 0, 0]
    assert column_values(values, 8).tolist() == values.tolist()


def bar_heights(image, colour):
    """Pixels of `colour` in each pixel column of a [1, H, W, 3] chart."""
    pixels = (image[0] * 255).round().to(torch.int64)
    return (pixels == torch.tensor(colour)).all(dim=-1).sum(dim=0)


@pytest.mark.parametrize("order", ["index", "count"])
def test_codebook_histogram_bars_follow_the_counts(order):
    from comfyui_genart.core.handles import CodeMap
    from comfyui_genart.core.plots import BAR_COLOUR, UNUSED_COLOUR
    from comfyui_genart.nodes.visualize import CodebookHistogram

    # 4 codes over a 64-pixel image: the plot is 56 columns wide (4-pixel margins), 14 per code.
    indices = torch.tensor([[[3, 3, 3], [1, 3, 3], [3, 1, 3]]])  # counts: code 1 twice, code 3 seven times
    image = run(CodebookHistogram(codes=CodeMap(indices, 4, 4), order=order, width=64, height=128)).image
    assert image.shape == (1, 128, 64, 3) and image.dtype == torch.float32
    assert float(image.min()) >= 0 and float(image.max()) <= 1
    heights = bar_heights(image, BAR_COLOUR)[4:60].reshape(4, 14)
    unused = bar_heights(image, UNUSED_COLOUR)[4:60].reshape(4, 14)
    assert (heights == heights[:, :1]).all() and (unused == unused[:, :1]).all()
    tallest, short = (3, 1) if order == "index" else (0, 1)
    # A bar of height k covers k + 1 pixels: it always shows its baseline pixel.
    assert int(heights[short, 0]) - 1 == pytest.approx((int(heights[tallest, 0]) - 1) * 2 / 7, abs=0.5)
    empty = [c for c in range(4) if c not in (tallest, short)]
    assert heights[empty].sum() == 0 and (unused[empty] > 0).all() and unused[[tallest, short]].sum() == 0
    title = image[0, :12]
    assert (title < 0.5).any(), "the title (codes used, perplexity) is written above the bars"


def test_codebook_histogram_log_scale_lifts_small_counts():
    from comfyui_genart.core.handles import CodeMap
    from comfyui_genart.core.plots import BAR_COLOUR
    from comfyui_genart.nodes.visualize import CodebookHistogram

    indices = torch.tensor([[[0] * 99 + [1]]])
    codes = CodeMap(indices, 2, 4)
    linear = bar_heights(run(CodebookHistogram(codes=codes, width=64, height=128)).image, BAR_COLOUR)
    log = bar_heights(run(CodebookHistogram(codes=codes, scale="log", width=64, height=128)).image, BAR_COLOUR)
    assert int(linear[40]) <= 2 and int(log[40]) > int(log[10]) * 0.1
    assert int(linear[10]) == int(log[10])
