"""The W-Net model: shapes at odd sizes, the paper's parameter count, every architecture option."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training.config import UPSAMPLING_MODES, ModelConfig  # noqa: E402
from training.model import WNet, count_parameters, pad_to_multiple  # noqa: E402
from wnetcli.errors import InputError  # noqa: E402

TINY = {"k": 3, "base_width": 4, "depth": 2}


def _images(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, height, width, generator=generator) * 255


def test_paper_configuration_has_the_measured_parameter_count():
    # Full width (64..1024), depth 4, separable, transposed up-convolutions, K = 20.
    model = WNet(ModelConfig(k=20))
    assert count_parameters(model) == 12_271_127
    assert count_parameters(model.encoder) == 6_131_220
    assert count_parameters(model.decoder) == 12_271_127 - 6_131_220


@pytest.mark.parametrize("height, width", [(17, 23), (1, 5), (32, 32), (31, 9)])
def test_shapes_at_odd_sizes(height, width):
    model = WNet(ModelConfig(**TINY)).eval()
    with torch.no_grad():
        probs, reconstruction = model(_images(2, height, width))
        encoded = model.encode(_images(2, height, width))
    assert probs.shape == encoded.shape == (2, 3, height, width)
    assert reconstruction.shape == (2, 3, height, width)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2, height, width))
    assert probs.min() >= 0


@pytest.mark.parametrize("upsampling", UPSAMPLING_MODES)
@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.parametrize("separable", [True, False])
def test_every_architecture_option_runs_and_trains(upsampling, skip, separable):
    config = ModelConfig(**TINY, upsampling=upsampling, skip=skip, separable=separable)
    model = WNet(config)
    probs, reconstruction = model(_images(2, 16, 16))
    assert probs.shape == (2, 3, 16, 16) and reconstruction.shape == (2, 3, 16, 16)
    reconstruction.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_options_change_the_parameter_count_as_expected():
    base = count_parameters(WNet(ModelConfig(**TINY)))
    assert count_parameters(WNet(ModelConfig(**TINY, skip=False))) < base
    assert count_parameters(WNet(ModelConfig(**TINY, separable=False))) > base
    assert count_parameters(WNet(ModelConfig(**TINY, upsampling="resize_conv"))) < base


def test_bilinear_transposed_upsampling_keeps_a_constant_image_constant():
    from training.model import make_upsampler

    layer = make_upsampler(8, 4, "transposed_bilinear")
    out = layer(torch.full((1, 8, 6, 6), 3.0))
    # Away from the border (where the transposed conv sees zero padding) the output is flat.
    torch.testing.assert_close(out[..., 1:-1, 1:-1], torch.full_like(out[..., 1:-1, 1:-1], 3.0))


@pytest.mark.parametrize("height, width, multiple", [(5, 7, 16), (3, 2, 16), (1, 1, 4), (16, 17, 16), (30, 2, 8)])
def test_reflect_padding_equals_numpy_reflect(height, width, multiple):
    images = _images(1, height, width)
    padded = pad_to_multiple(images, multiple)
    pads = ((0, 0), (0, 0), (0, (-height) % multiple), (0, (-width) % multiple))
    expected = np.pad(images.numpy(), pads, mode="reflect")
    assert padded.shape[-2] % multiple == 0 and padded.shape[-1] % multiple == 0
    np.testing.assert_array_equal(padded.numpy(), expected)


@pytest.mark.parametrize("height, width", [(1, 1), (1, 9), (3, 7), (20, 40), (33, 5)])
def test_min_side_padding_equals_the_runtimes_numpy_padding(height, width):
    from wnetcli.segmentation.runtime import pad_batch

    images = _images(1, height, width)
    padded = pad_to_multiple(images, 16, min_side=32)
    np.testing.assert_array_equal(padded.numpy(), pad_batch(images.numpy(), 16, min_side=32))
    assert min(padded.shape[-2:]) >= 32


def test_reflect_padded_wnet_encodes_images_smaller_than_two_multiples():
    # Reflection needs 2 pixels at the deepest level (1/16 of the input): a 1x1 or 3x7 image
    # padded only to 16 px failed there; ModelConfig.min_padded_side pads it to 32.
    config = ModelConfig(**TINY, padding_mode="reflect")
    assert config.min_padded_side == 2 * config.pad_multiple
    assert ModelConfig(**TINY).min_padded_side == config.pad_multiple
    model = WNet(config).eval()
    for height, width in [(1, 1), (3, 7)]:
        with torch.no_grad():
            probs, reconstruction = model(_images(2, height, width))
        assert probs.shape == (2, config.k, height, width) and reconstruction.shape == (2, 3, height, width)


def test_set_dropout_changes_every_dropout_layer():
    model = WNet(ModelConfig(**TINY, dropout=0.65))
    model.set_dropout(0.3)
    rates = {layer.p for layer in model.modules() if isinstance(layer, torch.nn.Dropout)}
    assert rates == {0.3}
    with pytest.raises(ValueError):
        model.set_dropout(1.0)


@pytest.mark.parametrize("changes", [{"k": 1}, {"base_width": 0}, {"depth": 7}, {"upsampling": "pixelshuffle"},
                                     {"dropout": 1.0}, {"padding_mode": "circular"}])
def test_model_config_rejects_bad_values(changes):
    with pytest.raises(InputError):
        ModelConfig(**changes)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_reflect_padding_hides_the_image_border(padding_mode):
    # A flat image carries no position: with reflect padding (and resize-conv upsampling, which
    # has no stride-2 pattern of its own) the soft segmentation of it is flat too; zero padding
    # makes the border pixels differ from the middle.
    torch.manual_seed(0)
    model = WNet(ModelConfig(**TINY, upsampling="resize_conv", padding_mode=padding_mode)).eval()
    with torch.no_grad():
        probs = model.encode(torch.full((1, 3, 16, 16), 90.0))
    spread = float((probs - probs[..., 8:9, 8:9]).abs().max())
    if padding_mode == "reflect":
        assert spread < 1e-5
    else:
        assert spread > 1e-3


@pytest.mark.parametrize("height, width", [(17, 23), (1, 5), (32, 32), (31, 9)])
def test_boundary_head_shapes_and_range_at_odd_sizes(height, width):
    model = WNet(ModelConfig(**TINY, boundary_head=True)).eval()
    images = _images(2, height, width)
    with torch.no_grad():
        probs, boundaries = model.encode_with_boundaries(images)
        logits = model.boundary_logits(images)
        encoded = model.encode(images)
    assert probs.shape == (2, 3, height, width) and boundaries.shape == logits.shape == (2, 1, height, width)
    assert boundaries.min() >= 0 and boundaries.max() <= 1
    # One encoder pass feeds both heads: the same probabilities as encode, the sigmoid of the logits.
    torch.testing.assert_close(probs, encoded)
    torch.testing.assert_close(boundaries, torch.sigmoid(logits))


def test_boundary_head_reads_the_features_that_feed_the_k_way_head():
    model = WNet(ModelConfig(**TINY, boundary_head=True)).eval()
    images = _images(1, 16, 16)
    with torch.no_grad():
        features = model.encoder.features(model.normalize(images))
        torch.testing.assert_close(model.encoder(model.normalize(images)), model.encoder.head(features))
        torch.testing.assert_close(model.boundary_logits(images), model.encoder.boundary_head(features))
    assert features.shape == (1, TINY["base_width"], 16, 16)
    # The head is a 1x1 convolution to one channel; the decoder gets none.
    assert model.encoder.boundary_head.kernel_size == (1, 1) and model.encoder.boundary_head.out_channels == 1
    assert model.decoder.boundary_head is None


def test_a_network_without_boundary_head_says_so():
    from wnetcli.errors import ModelError

    model = WNet(ModelConfig(**TINY))
    assert model.encoder.boundary_head is None
    with pytest.raises(ModelError, match="no boundary head"):
        model.encode_with_boundaries(_images(1, 8, 8))


def test_boundary_head_adds_only_its_parameters_and_keeps_the_others_in_order():
    plain, headed = WNet(ModelConfig(**TINY)), WNet(ModelConfig(**TINY, boundary_head=True))
    assert count_parameters(headed) - count_parameters(plain) == TINY["base_width"] + 1
    extra = [name for name in headed.state_dict() if name not in plain.state_dict()]
    assert extra == ["encoder.boundary_head.weight", "encoder.boundary_head.bias"]
    # Optimizer states are stored by parameter position: the head comes after the encoder's own.
    names = [name for name, _ in headed.encoder.named_parameters()]
    assert names[-2:] == ["boundary_head.weight", "boundary_head.bias"]


def test_checkpoints_without_the_boundary_head_key_load_as_before(tmp_path):
    from training.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = WNet(ModelConfig(**TINY)).eval()
    path = save_checkpoint(tmp_path / "old.pt", model, step=3)
    # A checkpoint written before the head existed has no boundary_head key in its config.
    payload = read_checkpoint(path)
    del payload["model_config"]["boundary_head"]
    torch.save(payload, path)
    loaded = load_checkpoint(path)
    assert loaded.config.boundary_head is False and loaded.encoder.boundary_head is None
    images = _images(1, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(images), model.encode(images))
