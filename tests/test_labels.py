"""The label rules shared by losses, metric functions and the evaluate module."""

import pytest
import torch

from avs_models.models.labels import check_binary_mask, check_class_map


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.uint8])
def test_binary_masks_in_zero_one_pass_unchanged(dtype):
    mask = torch.tensor([[0, 1], [1, 0]], dtype=dtype)
    assert torch.equal(check_binary_mask("labels", mask), mask)
    assert check_binary_mask("labels", mask.bool()).dtype == torch.bool


def test_zero_255_masks_are_refused_with_a_hint_and_converted_on_request():
    mask = torch.tensor([[0, 255], [255, 0]], dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"`references` must be a binary mask.*found values 255.*mask_values='0/255'"):
        check_binary_mask("references", mask)
    assert check_binary_mask("references", mask, mask_values="0/255").tolist() == [[0, 1], [1, 0]]


@pytest.mark.parametrize(
    "values, found", [([0.0, float("nan")], "nan"), ([0, -1], "-1"), ([0, 100], "100"), ([0.5, 1.0], "0.5")]
)
def test_other_binary_values_name_the_argument_and_values(values, found):
    with pytest.raises(ValueError, match=rf"`labels`.*found values {found}"):
        check_binary_mask("labels", torch.tensor(values))


def test_class_maps_accept_ids_and_the_ignore_index_and_refuse_the_rest():
    class_map = torch.tensor([[0, 70], [255, 3]])
    assert torch.equal(check_class_map("labels", class_map, 71), class_map)
    with pytest.raises(ValueError, match=r"`labels` must hold class ids in \[0, 71\) or the ignore index 255; found 80"):
        check_class_map("labels", torch.tensor([0, 80]), 71)
    with pytest.raises(ValueError, match="found 255"):
        check_class_map("labels", class_map, 71, ignore_index=None)
    with pytest.raises(ValueError, match="whole class ids"):
        check_class_map("labels", torch.tensor([0.0, 1.5]), 71)
