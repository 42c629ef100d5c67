"""Input checks shared by the segmentation models."""

import pytest
import torch

from avs_models.models.inputs import check_pixel_values, check_shape


def test_any_float_dtype_is_cast_to_the_model_dtype():
    pixels = torch.zeros(1, 2, 3, 4, 4, dtype=torch.float64)
    assert check_pixel_values(pixels, torch.float32).dtype == torch.float32


@pytest.mark.parametrize(
    "pixels, error, message",
    [
        (torch.zeros(1, 2, 3, 4, 4, dtype=torch.uint8), TypeError, "float tensor of normalised frames"),
        (torch.zeros(2, 3, 4, 4), ValueError, r"shape \(B, T, 3, H, W\)"),
        (torch.zeros(0, 5, 3, 4, 4), ValueError, "empty"),
        (torch.zeros(1, 0, 3, 4, 4), ValueError, "empty"),
        (torch.tensor(float("nan")).expand(1, 1, 3, 2, 2), ValueError, "12 NaN or infinite"),
    ],
)
def test_bad_pixel_values_are_named(pixels, error, message):
    with pytest.raises(error, match=message):
        check_pixel_values(pixels)


def test_shape_mismatch_names_the_argument():
    with pytest.raises(ValueError, match=r"`audio_embeds` must have shape \(1, 5, 128\)"):
        check_shape("audio_embeds", torch.zeros(1, 4, 128), (1, 5, 128))
