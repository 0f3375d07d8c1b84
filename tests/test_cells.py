"""leuko.cells.preprocess: one cell at one scale and one stain, whatever the framing."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import study_params
from leuko.cells.preprocess import (
    TARGET_LAB_MEAN,
    CellPreprocess,
    average_views,
    background_lab_stats,
    cap_detail,
    dark_margin,
    detail,
    dihedral_views,
    fill_dark_margin,
    find_cell,
    frame_cell,
    mean_over_views,
    normalise_cell,
    prepare_cell,
    raise_detail,
    reinhard,
    tight_frame,
)

BACKGROUND = (236, 214, 200)  # pale pink glass and plasma
CYTOPLASM = (200, 180, 225)  # pale violet
NUCLEUS = (105, 55, 160)  # dark violet


def draw_cell(canvas: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    """A synthetic stained cell: a nucleus (0.55 of the radius) in its cytoplasm on glass."""
    height, width = canvas
    y, x = np.mgrid[0:height, 0:width]
    d = np.hypot(x - centre[0], y - centre[1])
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    image[d <= radius] = CYTOPLASM
    image[d <= 0.55 * radius] = NUCLEUS
    return image


NO_STAIN_NORM = CellPreprocess(stain_norm="none")


@pytest.mark.parametrize(("canvas", "centre", "radius"), [
    ((240, 320), (160, 120), 18),   # small in a wide frame
    ((363, 360), (180, 181), 60),   # centred, filling a third (PBC-like)
    ((300, 300), (110, 170), 40),   # off centre
    ((120, 160), (70, 60), 45),     # a tight crop: the cell nearly fills the frame
])
def test_one_cell_at_any_scale_and_offset_gives_nearly_the_same_crop(canvas, centre, radius):
    reference, found_ref = prepare_cell(draw_cell((300, 300), (150, 150), 50), 64, NO_STAIN_NORM)
    crop, found = prepare_cell(draw_cell(canvas, centre, radius), 64, NO_STAIN_NORM)
    assert found and found_ref
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    # the same picture up to resampling: the nucleus disc covers the same pixels
    nucleus = np.abs(crop.astype(int) - NUCLEUS).sum(axis=-1) < 60
    nucleus_ref = np.abs(reference.astype(int) - NUCLEUS).sum(axis=-1) < 60
    overlap = (nucleus & nucleus_ref).sum() / (nucleus | nucleus_ref).sum()
    assert overlap > 0.8
    assert np.abs(crop.astype(int) - reference.astype(int)).mean() < 8


def test_the_box_is_the_stained_cell():
    image = draw_cell((400, 400), (200, 200), 60)
    cell = find_cell(image)
    assert cell is not None
    xmin, ymin, xmax, ymax = cell.nucleus_box
    # the synthetic cytoplasm stains like a lymphocyte's (blue minus green 45 levels): the box
    # holds nucleus and cytoplasm, the cell's diameter
    assert abs((xmax - xmin) - 2 * 60) <= 4 and abs((ymax - ymin) - 2 * 60) <= 4
    assert abs((xmin + xmax) / 2 - 200) <= 3 and abs((ymin + ymax) / 2 - 200) <= 3


# a stain that colours the red cells bluish (half of data/bionet's fields): they pass Otsu's
# threshold on blue minus green with the nucleus
CYAN_GLASS, BLUISH_RED_CELL = (130, 186, 210), (95, 140, 190)
STUDY_FINDER = CellPreprocess(max_area=0.25, min_fill=0.4)


def bluish_field(centre: tuple[int, int] = (200, 150), radius: int = 30) -> np.ndarray:
    """A 400x300 field of touching bluish red cells on cyan glass with one white cell."""
    y, x = np.mgrid[0:300, 0:400]
    image = np.empty((300, 400, 3), dtype=np.uint8)
    image[:] = CYAN_GLASS
    for cy in range(15, 300, 30):
        for cx in range(15 + 15 * (cy // 30 % 2), 400, 30):
            image[np.hypot(x - cx, y - cy) <= 14] = BLUISH_RED_CELL
    d = np.hypot(x - centre[0], y - centre[1])
    image[d <= radius] = CYTOPLASM
    image[d <= 0.55 * radius] = NUCLEUS
    return image


def test_red_cells_that_stain_like_a_nucleus_raise_the_threshold():
    image = bluish_field()
    xmin, ymin, xmax, ymax = find_cell(image, STUDY_FINDER).nucleus_box
    # the white cell's nucleus (33 px across; its pale cytoplasm stains less than the red cells)
    assert 28 <= xmax - xmin <= 40 and 28 <= ymax - ymin <= 40
    assert abs((xmin + xmax) / 2 - 200) <= 4 and abs((ymin + ymax) / 2 - 150) <= 4
    before = find_cell(image, CellPreprocess()).nucleus_box  # not the net of red cells
    assert (before[2] - before[0]) * (before[3] - before[1]) > 0.5 * 400 * 300


def test_a_cell_among_pink_red_cells_is_framed_alike_with_or_without_the_raise():
    image = draw_cell((300, 400), (180, 160), 40)
    assert find_cell(image, STUDY_FINDER).nucleus_box == find_cell(image).nucleus_box


def test_config_names_bad_finder_limits():
    with pytest.raises(ValueError, match="max_area"):
        CellPreprocess(max_area=0.001)
    with pytest.raises(ValueError, match="min_fill"):
        CellPreprocess(min_fill=1.0)


def test_the_central_cell_wins_over_a_stained_speck_in_a_corner():
    image = draw_cell((300, 300), (160, 150), 45)
    image[5:25, 5:25] = NUCLEUS  # a platelet-sized speck at the edge
    cell = find_cell(image)
    xmin, ymin, xmax, ymax = cell.nucleus_box
    assert xmin > 100 and ymin > 100


def test_no_nucleus_falls_back_to_the_whole_image_and_says_so():
    blank = np.full((200, 300, 3), BACKGROUND, dtype=np.uint8)
    crop, found = prepare_cell(blank, 48, NO_STAIN_NORM)
    assert not found
    assert crop.shape == (48, 48, 3)
    assert np.abs(crop.astype(int) - BACKGROUND).max() <= 1


def test_whole_image_mode_does_not_search():
    image = draw_cell((200, 200), (50, 50), 20)
    crop, found = prepare_cell(image, 32, CellPreprocess(cell_crop=False, stain_norm="none"))
    assert found  # nothing was searched, so nothing is flagged
    assert crop.shape == (32, 32, 3)


def test_reinhard_maps_the_background_to_the_target():
    image = draw_cell((200, 200), (100, 100), 50)
    tinted = np.clip(image.astype(int) * np.array([0.8, 0.95, 1.1]), 0, 255).astype(np.uint8)
    background = np.abs(tinted.astype(int) - tinted[0, 0]).sum(axis=-1) == 0
    out = reinhard(tinted, background)
    mean, _ = background_lab_stats(out, background)
    assert np.allclose(mean, TARGET_LAB_MEAN, atol=2.0)


def test_two_labs_stains_come_closer_after_normalisation():
    lab_a = draw_cell((200, 200), (100, 100), 50)
    lab_b = np.clip(lab_a.astype(int) * np.array([0.85, 0.9, 1.05]) + 10, 0, 255).astype(np.uint8)
    before = np.abs(lab_a.astype(int) - lab_b.astype(int)).mean()
    a, _ = prepare_cell(lab_a, 64)
    b, _ = prepare_cell(lab_b, 64)
    after = np.abs(a.astype(int) - b.astype(int)).mean()
    assert after < before / 2


def test_config_names_bad_values():
    with pytest.raises(ValueError, match="cell preprocessing: unknown key"):
        CellPreprocess.from_dict({"scael": 2.0})
    with pytest.raises(ValueError, match="stain_norm"):
        CellPreprocess(stain_norm="macenko")
    with pytest.raises(ValueError, match="scale"):
        CellPreprocess(scale=0.5)
    with pytest.raises(ValueError, match="uint8"):
        prepare_cell(np.zeros((10, 10, 3), dtype=np.float32), 8)


def test_a_tight_crop_is_padded_with_plain_background_and_framed_as_a_loose_one():
    loose = draw_cell((300, 300), (150, 150), 50)
    tight = tight_frame(loose, NO_STAIN_NORM)
    assert tight.shape[0] < 130 and tight.shape[1] < 130  # the cell and little else
    a, found_a = prepare_cell(loose, 64, NO_STAIN_NORM)
    b, found_b = prepare_cell(tight, 64, NO_STAIN_NORM)
    assert found_a and found_b
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 8
    # the padding is the border's colour (glass), not a mirror image of the cell
    assert np.abs(b[0, 0].astype(int) - BACKGROUND).max() <= 2


RED_CELL = (215, 150, 150)


def with_black_corners(image: np.ndarray, cut: int) -> np.ndarray:
    """The image with its four corners black up to ``cut`` px along each edge, as a copy
    rotated by a few degrees is filled (blood-cell-images' TRAIN and TEST)."""
    height, width = image.shape[:2]
    y, x = np.mgrid[0:height, 0:width]
    corners = ((x + y < cut) | ((width - 1 - x) + y < cut) | (x + (height - 1 - y) < cut)
               | ((width - 1 - x) + (height - 1 - y) < cut))
    out = image.copy()
    out[corners] = 0
    return out


def smear_cell() -> np.ndarray:
    """A cell near a corner among red cells, so that its crop reaches the corner."""
    image = draw_cell((160, 200), (60, 55), 30)
    y, x = np.mgrid[0:160, 0:200]
    for cx, cy in ((150, 40), (120, 120), (170, 130), (30, 130)):
        image[np.hypot(x - cx, y - cy) < 16] = RED_CELL
    return image


def test_black_corners_are_filled_with_the_background_and_a_black_spot_inside_is_kept():
    clean = smear_cell()
    cornered = with_black_corners(clean, 50)
    cornered[80:84, 100:104] = 0  # dark, but inside the image: not a margin
    margin = dark_margin(cornered)
    assert margin[0, 0] and margin[-1, -1] and not margin[82, 102]
    filled = fill_dark_margin(cornered)
    assert (filled[margin] == np.median(cornered[~margin], axis=0)).all()
    assert (filled[~margin] == cornered[~margin]).all()
    assert (filled[82, 102] == 0).all()
    assert (fill_dark_margin(clean) == clean).all()  # nothing to fill: unchanged


def test_black_corners_do_not_change_the_prepared_cell_when_filled():
    clean = smear_cell()
    cornered = with_black_corners(clean, 50)
    fill = CellPreprocess(fill_dark_margin=True)
    reference, _ = prepare_cell(clean, 64, fill)
    as_before, _ = prepare_cell(cornered, 64)  # the corners in the crop and its statistics
    filled, found = prepare_cell(cornered, 64, fill)
    assert found
    assert (prepare_cell(clean, 64)[0] == reference).all()  # a clean image is untouched
    error_filled = np.abs(filled.astype(int) - reference.astype(int)).mean()
    error_before = np.abs(as_before.astype(int) - reference.astype(int)).mean()
    assert error_filled < 3 and error_before > 4 * error_filled


def test_real_third_lab_fields_are_framed_on_their_cell_not_on_the_field(unseen_root):
    """data/bionet: one white cell per 640x480 field, half of them under a stain that colours
    the red cells bluish or grey-violet. With the options off, about half of the boxes span
    more than a quarter of the field (measured: 172 of 358); with the study's, none does."""
    from leuko.core.images import load_rgb

    study = CellPreprocess.from_dict(study_params("cells")["preprocess"])
    before = CellPreprocess(**{**study.to_dict(), "max_area": 1.0, "min_fill": 0.0})
    fields = [load_rgb(f) for f in sorted(unseen_root.glob("*/*.jpg"))[::3]]

    def field_wide(config: CellPreprocess) -> int:
        boxes = [find_cell(fill_dark_margin(f), config).nucleus_box for f in fields]
        return sum((x1 - x0) * (y1 - y0) > 0.25 * 640 * 480 for x0, y0, x1, y1 in boxes)

    assert field_wide(study) == 0
    assert field_wide(before) > 0.3 * len(fields)


def test_real_annotated_fields_are_framed_on_the_annotated_white_cell(bccd_root):
    """BCCD's fields with one annotated white cell (blood-cell-images' originals): the study's
    finder puts the box's centre inside the annotated cell's box in every one."""
    import xml.etree.ElementTree as ET

    from leuko.core.images import load_rgb

    config, checked = CellPreprocess.from_dict(study_params("cells")["preprocess"]), 0
    for xml in sorted((bccd_root / "Annotations").glob("*.xml"))[::4]:
        white = [o.find("bndbox") for o in ET.parse(xml).getroot().iter("object")
                 if o.findtext("name") == "WBC"]
        if len(white) != 1:
            continue
        t = [int(float(white[0].findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax")]
        x0, y0, x1, y1 = find_cell(load_rgb(bccd_root / "JPEGImages" / f"{xml.stem}.jpg"),
                                   config).nucleus_box
        assert t[0] <= (x0 + x1) / 2 <= t[2] and t[1] <= (y0 + y1) / 2 <= t[3], xml.name
        checked += 1
    assert checked > 60


def test_real_rotated_copies_with_corners_filled_are_as_sharp_as_the_originals(wbc_root):
    """blood-cell-images' TEST images are rotated copies of TEST_SIMPLE's cells with black
    corners: filled, their prepared cells carry the originals' fine detail; left in, the
    corners wash the stain normalisation out and the cells come out softer."""
    from leuko.core.images import load_rgb

    def images(split: str) -> list[np.ndarray]:
        files = sorted((wbc_root / "images" / split).glob("*/*.jpeg"))
        return [load_rgb(f) for f in files[:: max(1, len(files) // 24)][:24]]

    copies, originals = images("TEST"), images("TEST_SIMPLE")
    shares = [dark_margin(image).mean() for image in copies]
    assert min(shares) > 0.01 and max(shares) < 0.3  # every copy has corners ...
    assert max(dark_margin(image).mean() for image in originals) == 0  # ... no original has

    def median_detail(frames, fill: bool) -> float:
        config = CellPreprocess(fill_dark_margin=fill)
        return float(np.median([detail(prepare_cell(f, 64, config)[0]) for f in frames]))

    reference = median_detail(originals, fill=False)
    filled = median_detail(copies, fill=True)
    as_imaged = median_detail(copies, fill=False)
    assert abs(filled - reference) < 0.2 * reference  # measured: 13.0 against 14.9
    assert as_imaged < 0.75 * reference  # measured: 9.7


def test_the_eight_views_are_the_symmetries_of_the_square_and_one_view_is_the_image():
    image = np.arange(3 * 3 * 1).reshape(1, 3, 3, 1)  # no symmetry of its own
    views = dihedral_views(image)
    assert len(views) == 8 and np.array_equal(views[0], image)
    expected = [np.rot90(m, k, axes=(1, 2)) for m in (image, image[:, :, ::-1]) for k in range(4)]
    keys = {v.tobytes() for v in views}
    assert keys == {e.tobytes() for e in expected} and len(keys) == 8
    wide = np.zeros((2, 4, 6, 3))
    assert dihedral_views(wide, 1)[0] is wide  # one view needs no square
    with pytest.raises(ValueError, match="square"):
        dihedral_views(wide, 8)
    with pytest.raises(ValueError, match="views must be one of"):
        dihedral_views(image, 4)


def test_mean_over_views_averages_a_predictor_over_the_views():
    images = np.random.default_rng(0).random((5, 4, 4, 3))

    def top_row_brightness(batch):  # depends on the orientation: a probability pair
        p = batch[:, 0].mean(axis=(1, 2))
        return np.stack([p, 1 - p], axis=1)

    expected = np.mean([top_row_brightness(v) for v in dihedral_views(images)], axis=0)
    np.testing.assert_allclose(mean_over_views(top_row_brightness, images, 8), expected)
    np.testing.assert_array_equal(mean_over_views(top_row_brightness, images, 1),
                                  top_row_brightness(images))


def test_average_views_is_the_float64_mean_in_the_views_dtype():
    probs = np.array([[[0.1, 0.9]], [[0.3, 0.7]], [[0.2, 0.8]]], np.float32)
    mean = average_views(probs)
    assert mean.dtype == np.float32
    np.testing.assert_allclose(mean, [[0.2, 0.8]], rtol=1e-6)
    np.testing.assert_array_equal(average_views(probs[:1]), probs[0])  # one view: itself


def test_prepare_cell_is_the_framed_cell_normalised():
    rgb = draw_cell((240, 320), (150, 110), 40)
    square, found = frame_cell(rgb, 64)
    assert square.shape == (64, 64, 3) and found is not None
    prepared, was_found = prepare_cell(rgb, 64)
    assert was_found
    np.testing.assert_array_equal(prepared, normalise_cell(square))
    # a nucleus level nothing exceeds: the statistics of the whole square, as with no mask
    np.testing.assert_array_equal(normalise_cell(square, nucleus_level=float("inf")),
                                  reinhard(square))
    assert not np.array_equal(normalise_cell(square, nucleus_level=float("inf")), prepared)


def test_cap_detail_blurs_only_what_is_sharper_than_the_ceiling():
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    soft = np.full((64, 64, 3), 120, np.uint8)
    soft[20:40, 20:40] = 90  # one soft edge
    assert detail(sharp) > 100 > 12 > detail(soft) > 0
    capped = cap_detail(sharp, 12.0)
    assert capped.dtype == np.uint8 and capped.shape == sharp.shape
    assert 10.0 < detail(capped) <= 12.5  # brought down to the ceiling, not below
    assert abs(float(capped.mean()) - float(sharp.mean())) < 2.0
    assert cap_detail(soft, 12.0) is soft  # nothing to soften
    config = CellPreprocess(cell_crop=False, stain_norm="none", max_detail=12.0)
    prepared, _ = prepare_cell(sharp, 64, config)
    assert detail(prepared) <= 12.5
    with pytest.raises(ValueError, match="max_detail"):
        CellPreprocess(max_detail=-1.0)


def test_raise_detail_sharpens_only_what_is_softer_than_the_floor():
    from scipy import ndimage as ndi

    rng = np.random.default_rng(1)
    texture = ndi.gaussian_filter(rng.uniform(0, 255, (64, 64, 3)), (1.5, 1.5, 0))
    soft = np.clip(np.rint(texture), 0, 255).astype(np.uint8)
    sharp = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert detail(soft) < 12 < detail(sharp)
    raised = raise_detail(soft, 12.0)
    assert raised.dtype == np.uint8 and raised.shape == soft.shape
    assert 11.5 <= detail(raised) < 14.0  # brought up to the floor, not far above
    assert abs(float(raised.mean()) - float(soft.mean())) < 2.0
    assert raise_detail(sharp, 12.0) is sharp  # nothing to sharpen
    config = CellPreprocess(cell_crop=False, stain_norm="none", min_detail=12.0)
    prepared, _ = prepare_cell(soft, 64, config)
    assert detail(prepared) >= 11.5
    with pytest.raises(ValueError, match="min_detail"):
        CellPreprocess(min_detail=-1.0)
    with pytest.raises(ValueError, match="min_detail"):
        CellPreprocess(min_detail=20.0, max_detail=12.0)
