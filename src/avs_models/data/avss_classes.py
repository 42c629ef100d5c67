"""AVSBench-semantic (AVSS) class names and colour map.

The 71 AVSS classes are the 70 sounding-object categories of AVSBench-semantic plus the
background, in the order of the release's `label2idx.json` (whose ids start at 1; class id here
is that id minus one, so the background is class 0). The colour of class `k` in the released
`labels_rgb/*.png` files is the PASCAL-VOC style bit-interleaved colour of `k`: bit `3i` of `k`
sets bit `7-i` of red, bit `3i+1` of green and bit `3i+2` of blue.
"""

from __future__ import annotations

import numpy as np

AVSS_CLASS_NAMES: tuple[str, ...] = (
    "background",
    "accordion",
    "airplane",
    "axe",
    "baby",
    "bassoon",
    "bell",
    "bird",
    "boat",
    "boy",
    "bus",
    "car",
    "cat",
    "cello",
    "clarinet",
    "clipper",
    "clock",
    "dog",
    "donkey",
    "drum",
    "duck",
    "elephant",
    "emergency-car",
    "erhu",
    "flute",
    "frying-food",
    "girl",
    "goose",
    "guitar",
    "gun",
    "guzheng",
    "hair-dryer",
    "handpan",
    "harmonica",
    "harp",
    "helicopter",
    "hen",
    "horse",
    "keyboard",
    "leopard",
    "lion",
    "man",
    "marimba",
    "missile-rocket",
    "motorcycle",
    "mower",
    "parrot",
    "piano",
    "pig",
    "pipa",
    "saw",
    "saxophone",
    "sheep",
    "sitar",
    "sorna",
    "squirrel",
    "tabla",
    "tank",
    "tiger",
    "tractor",
    "train",
    "trombone",
    "truck",
    "trumpet",
    "tuba",
    "ukulele",
    "utv",
    "vacuum-cleaner",
    "violin",
    "wolf",
    "woman",
)
AVSS_NUM_CLASSES = len(AVSS_CLASS_NAMES)


def avss_palette(num_classes: int = AVSS_NUM_CLASSES) -> np.ndarray:
    """The AVSS colour of every class id, as a `[num_classes, 3]` uint8 array (class 0 is black)."""
    ids = np.arange(num_classes)
    palette = np.zeros((num_classes, 3), dtype=np.int64)
    for level in range(8):
        for channel in range(3):
            bit = (ids >> (3 * level + channel)) & 1
            palette[:, channel] |= bit << (7 - level)
    return palette.astype(np.uint8)


def avss_id2label() -> dict[int, str]:
    """`id2label` of a 71-class AVSS model (`{0: "background", 1: "accordion", ...}`), for its config:
    converters, presets and training set it so that masks and legends show class names."""
    return dict(enumerate(AVSS_CLASS_NAMES))


def avss_class_table() -> list[tuple[int, str, tuple[int, int, int]]]:
    """`(class id, name, RGB colour in labels_rgb)` for the 71 AVSS classes, in id order."""
    return [
        (class_id, name, tuple(int(value) for value in color))
        for class_id, (name, color) in enumerate(zip(AVSS_CLASS_NAMES, avss_palette()))
    ]


def color_mask_to_class_ids(color_mask: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """Decode an RGB label image `[H, W, 3]` into class ids `[H, W]` (uint8).

    Like the official AVSS loader, a pixel whose colour is not in the palette becomes class 0
    (background).
    """
    color_mask = np.asarray(color_mask)
    if color_mask.ndim != 3 or color_mask.shape[-1] != 3:
        raise ValueError(f"color_mask must have shape [H, W, 3], got {color_mask.shape}")
    palette = avss_palette() if palette is None else np.asarray(palette)
    # Pack each RGB triple into one integer so the lookup is a single vectorised search.
    packed = (
        (color_mask[..., 0].astype(np.int64) << 16)
        | (color_mask[..., 1].astype(np.int64) << 8)
        | color_mask[..., 2]
    )
    packed_palette = (
        (palette[:, 0].astype(np.int64) << 16) | (palette[:, 1].astype(np.int64) << 8) | palette[:, 2]
    )
    order = np.argsort(packed_palette)
    sorted_palette = packed_palette[order]
    position = np.clip(np.searchsorted(sorted_palette, packed), 0, len(sorted_palette) - 1)
    found = sorted_palette[position] == packed
    return np.where(found, order[position], 0).astype(np.uint8)


def class_ids_to_color_mask(class_ids: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """Paint class ids `[H, W]` with the AVSS colours, giving an RGB image `[H, W, 3]` (uint8)."""
    palette = avss_palette() if palette is None else np.asarray(palette)
    class_ids = np.asarray(class_ids)
    if class_ids.min(initial=0) < 0 or class_ids.max(initial=0) >= len(palette):
        raise ValueError(
            f"class ids must lie in [0, {len(palette) - 1}], got {class_ids.min()}..{class_ids.max()}"
        )
    return palette[class_ids]
