"""Faster inference (`optimize_for_inference`): every precision and compiled path runs on tiny models of
every family and agrees with float32; int8 is saved and reloaded without calibrating; the pipeline,
`avs-models predict` and `avs-models evaluate` take the options; `import avs_models` prints nothing."""

import json
import logging
import platform
import subprocess
import sys

import pytest
import torch
from media import write_video
from test_avsegformer import clip_inputs as avsegformer_inputs
from test_avsegformer import tiny_model as tiny_avsegformer
from test_c3n import tiny_inputs as c3n_inputs
from test_c3n import tiny_model as tiny_c3n
from test_pcmanet import clip_inputs as pcmanet_inputs
from test_pcmanet import confident_model as confident_pcmanet
from test_pipeline_predict import save_tiny_pcmanet
from test_tpavi import clip_inputs as tpavi_inputs
from test_tpavi import tiny_model as tiny_tpavi
from transformers import pipeline

import avs_models  # noqa: F401  (registers the task and the Auto classes)
from avs_models.app import load_segmenter, segment
from avs_models.cli import main as cli_main
from avs_models.data import make_synthetic_avsbench
from avs_models.evaluation import evaluate_split
from avs_models.inference_optimization import (
    INT8_PROGRAM_NAME,
    INT8_RECORD_NAME,
    InferenceModel,
    optimize_for_inference,
    synthetic_calibration_inputs,
)

FAMILIES = {
    "pcmanet": (confident_pcmanet, pcmanet_inputs),
    "c3n": (tiny_c3n, c3n_inputs),
    "tpavi": (tiny_tpavi, tpavi_inputs),
    "avsegformer": (tiny_avsegformer, avsegformer_inputs),
}
needs_torchao = pytest.mark.skipif(
    __import__("importlib").util.find_spec("torchao") is None, reason="int8 needs torchao (the int8 extra)"
)


def calibration_clips(make_inputs, count: int = 3) -> list[dict]:
    return [make_inputs(seed=100 + index) for index in range(count)]


def relative_error(fast: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean absolute logit difference in units of the reference logits' spread."""
    return ((fast.float() - reference).abs().mean() / reference.std()).item()


def mask_agreement(fast: torch.Tensor, reference: torch.Tensor) -> float:
    return ((fast.float() > 0) == (reference > 0)).float().mean().item()


# ----------------------------------------------------------------------------- import is quiet
def test_import_prints_nothing_on_stderr():
    # torchao (installed by the int8 extra) is imported by Transformers; its CUDA-kernel load notices
    # and PyTorch's enum-constant notices must not reach the user.
    child = subprocess.run([sys.executable, "-c", "import avs_models"], capture_output=True, text=True)
    assert child.returncode == 0, child.stderr
    assert child.stderr == ""


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_only_torchao_load_notices_are_dropped():
    torchao_logger, pytree_logger = logging.getLogger("torchao"), logging.getLogger("torch.utils._pytree")
    collect = _Collect()  # on the loggers themselves: torch's loggers do not propagate to the root
    torchao_logger.addHandler(collect)
    pytree_logger.addHandler(collect)
    try:
        cuda_library = "/site-packages/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so"
        torchao_logger.warning(f"Failed to load {cuda_library}: Could not load this library: {cuda_library}")
        torchao_logger.warning("Skipping import of cpp extensions due to incompatible torch version")
        pytree_logger.warning("%s is an Enum subclass and is now natively supported", logging.Handler)
    finally:
        torchao_logger.removeHandler(collect)
        pytree_logger.removeHandler(collect)
    assert any("incompatible torch version" in message for message in collect.messages)
    assert any("Enum subclass" in message for message in collect.messages)  # not a torchao class: kept
    assert any("_C_mxfp8" in message for message in collect.messages) == (torch.version.cuda is not None)


# ----------------------------------------------------------------------------- precisions
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fp32_is_the_model_without_gradients(family):
    make_model, make_inputs = FAMILIES[family]
    model = make_model()
    inputs = make_inputs()
    with torch.no_grad():
        reference = model(**inputs).logits
    fast = optimize_for_inference(model)
    output = fast(**inputs)
    assert isinstance(fast, InferenceModel) and fast.config is model.config
    assert not output.logits.requires_grad
    torch.testing.assert_close(output.logits, reference, rtol=0, atol=0)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_bf16_autocast_agrees_with_fp32(family):
    make_model, make_inputs = FAMILIES[family]
    model = make_model()
    inputs = make_inputs()
    with torch.no_grad():
        reference = model(**inputs).logits
    logits = optimize_for_inference(model, "bf16")(**inputs).logits
    assert torch.isfinite(logits).all()
    assert relative_error(logits, reference) < 0.05
    assert mask_agreement(logits, reference) > 0.98
    assert next(model.parameters()).dtype == torch.float32  # autocast: the weights stay float32


def test_fp16_is_for_gpus_and_unknown_precisions_are_refused():
    model = tiny_tpavi()
    with pytest.raises(ValueError, match="fp16.*GPU only.*use precision='bf16' on a CPU"):
        optimize_for_inference(model, "fp16")
    with pytest.raises(ValueError, match="`precision` must be one of fp32, bf16, fp16, int8, got 'float8'"):
        optimize_for_inference(model, "float8")
    with pytest.raises(TypeError, match="already an InferenceModel"):
        optimize_for_inference(optimize_for_inference(model))


@needs_torchao
@pytest.mark.parametrize("family", ["avsegformer", "pcmanet", "tpavi"])
def test_int8_agrees_with_fp32(family):
    make_model, make_inputs = FAMILIES[family]
    model = make_model()
    inputs = make_inputs()
    with torch.no_grad():
        reference = model(**inputs).logits
    fast = optimize_for_inference(model, "int8", calibration=calibration_clips(make_inputs))
    logits = fast(**inputs).logits
    assert fast.int8_record["calibration_clips"] == 6
    assert fast.eval() is fast  # evaluation loops call eval(); the exported program has no train mode
    with pytest.raises(ValueError, match="runs inference only"):
        fast.train()
    assert relative_error(logits, reference) < 0.35
    assert mask_agreement(logits, reference) > 0.85
    # The program takes any batch size; the other shapes are those of the calibration clips.
    single = fast(**{name: tensor[:1] for name, tensor in inputs.items()}).logits
    torch.testing.assert_close(single, logits[:1])
    other_size = make_inputs(height=32, width=32) if family != "tpavi" else make_inputs(size=16)
    with pytest.raises(ValueError, match="calibrated and exported for"):
        fast(**other_size)


@needs_torchao
def test_int8_of_c3n_says_why_it_cannot_be_quantized():
    model = tiny_c3n()
    with pytest.raises(RuntimeError, match="torch.export cannot capture C3NForAudioVisualSegmentation"):
        optimize_for_inference(model, "int8", calibration=calibration_clips(c3n_inputs, 1))


@needs_torchao
def test_int8_is_saved_and_reloaded_without_calibrating(tmp_path):
    model = tiny_tpavi()
    inputs = tpavi_inputs()
    fast = optimize_for_inference(model, "int8", calibration=calibration_clips(tpavi_inputs))
    expected = fast(**inputs).logits
    fast.save_pretrained(tmp_path)
    assert (tmp_path / INT8_PROGRAM_NAME).is_file()
    record = json.loads((tmp_path / INT8_RECORD_NAME).read_text())
    assert record["inputs"]["pixel_values"]["shape"] == ["batch", 5, 3, 32, 32]

    reloaded = InferenceModel.from_pretrained(tmp_path, precision="int8")
    assert reloaded.int8_record == record
    # Equal to the saved program's outputs: a fresh calibration on other clips would differ.
    torch.testing.assert_close(reloaded(**inputs).logits, expected)
    recalibrated = InferenceModel.from_pretrained(tmp_path, precision="int8", calibration=[tpavi_inputs(seed=7)])
    assert not torch.equal(recalibrated(**inputs).logits, expected)


@needs_torchao
def test_a_saved_int8_program_of_other_weights_is_refused(tmp_path):
    fast = optimize_for_inference(tiny_tpavi(), "int8", calibration=calibration_clips(tpavi_inputs, 1))
    fast.save_pretrained(tmp_path)
    tiny_tpavi(seed=1).save_pretrained(tmp_path)  # retrained weights, old program
    with pytest.raises(ValueError, match="quantized from other weights"):
        InferenceModel.from_pretrained(tmp_path, precision="int8")


@needs_torchao
def test_calibration_input_errors_name_the_problem(tmp_path):
    model = tiny_tpavi()
    with pytest.raises(ValueError, match="int8 calibration needs clips"):
        optimize_for_inference(model, "int8")
    with pytest.raises(FileNotFoundError, match="calibration video not found"):
        optimize_for_inference(model, "int8", calibration=[tmp_path / "missing.mp4"], processor=object())
    with pytest.raises(TypeError, match="calibration entry 0 is a int"):
        optimize_for_inference(model, "int8", calibration=[3])
    with pytest.raises(ValueError, match="`calibration` is empty"):
        optimize_for_inference(model, "int8", calibration=[])


def test_synthetic_calibration_clips_have_the_processor_shapes(tmp_path):
    _, processor = save_tiny_pcmanet(tmp_path)
    clips = synthetic_calibration_inputs(processor, num_clips=3)
    assert clips["pixel_values"].shape == (3, 2, 3, 32, 32)
    assert clips["input_features"].shape == (3, 2, 1, 96, 64)
    assert clips["frame_mask"].eq(1).all()
    # Different clips, and the audio is not silence.
    assert not torch.equal(clips["pixel_values"][0], clips["pixel_values"][1])
    assert clips["input_features"].std() > 0


# ----------------------------------------------------------------------------- compiled paths
def small_pcmanet_clip():
    return pcmanet_inputs(batch=1, frames=2, height=32, width=32)


@pytest.mark.torch_compile_test
def test_compile_with_freezing_gives_the_eager_masks():
    model = confident_pcmanet()
    inputs = small_pcmanet_clip()
    with torch.no_grad():
        reference = model(**inputs).logits
    logits = optimize_for_inference(model, compile=True)(**inputs).logits
    torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-4)
    assert torch.equal(logits > 0, reference > 0)


@pytest.mark.torch_compile_test
def test_compile_with_bf16_agrees_with_fp32():
    model = confident_pcmanet()
    inputs = small_pcmanet_clip()
    with torch.no_grad():
        reference = model(**inputs).logits
    logits = optimize_for_inference(model, "bf16", compile=True)(**inputs).logits
    assert relative_error(logits, reference) < 0.05
    assert mask_agreement(logits, reference) > 0.98


@pytest.mark.torch_compile_test
@needs_torchao
def test_compiled_int8_agrees_with_the_int8_reference():
    model = confident_pcmanet()
    inputs = small_pcmanet_clip()
    clips = [pcmanet_inputs(batch=1, frames=2, height=32, width=32, seed=100 + index) for index in range(3)]
    reference = optimize_for_inference(model, "int8", calibration=clips)
    compiled = optimize_for_inference(model, "int8", compile=True, calibration=clips)
    expected = reference(**inputs).logits
    # Inductor's int8 kernels requantize where the reference keeps float: close, not equal.
    assert relative_error(compiled(**inputs).logits, expected) < 0.1


# ----------------------------------------------------------------------------- pipeline and commands
@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("media") / "clip.mp4", seconds=4, fps=2, size=(36, 44))


def test_pipeline_takes_precision_and_compile(video, tmp_path):
    save_tiny_pcmanet(tmp_path / "model")
    reference = pipeline("audio-visual-segmentation", model=str(tmp_path / "model"))(str(video))
    segmenter = pipeline("audio-visual-segmentation", model=str(tmp_path / "model"), precision="bf16")
    assert segmenter.inference_model.precision == "bf16"
    seconds = segmenter(str(video))
    assert [second["time"] for second in seconds] == [second["time"] for second in reference]
    agreement = [(second["mask"] == expected["mask"]).mean() for second, expected in zip(seconds, reference)]
    assert min(agreement) > 0.95
    with pytest.raises(ValueError, match="fp16.*GPU only"):
        pipeline("audio-visual-segmentation", model=str(tmp_path / "model"), precision="fp16")


@needs_torchao
def test_pipeline_int8_calibrates_on_the_processor_and_reuses_a_saved_program(video, tmp_path):
    save_tiny_pcmanet(tmp_path / "model")
    segmenter = pipeline("audio-visual-segmentation", model=str(tmp_path / "model"), precision="int8")
    record = segmenter.inference_model.int8_record
    assert record["inputs"]["pixel_values"]["shape"] == ["batch", 2, 3, 32, 32]  # the processor's clips
    assert record["calibration_clips"] == 8  # synthetic clips
    first = segmenter(str(video))
    segmenter.inference_model.save_pretrained(tmp_path / "model")
    again = pipeline("audio-visual-segmentation", model=str(tmp_path / "model"), precision="int8")
    assert again.inference_model.int8_record == record
    assert all((a["mask"] == b["mask"]).all() for a, b in zip(again(str(video)), first))
    on_video = pipeline(
        "audio-visual-segmentation", model=str(tmp_path / "model"), precision="int8", calibration=[str(video)]
    )
    assert on_video.inference_model.int8_record["calibration_clips"] == 2  # the video's two clips


def test_predict_command_runs_in_bf16_and_checks_the_options(video, tmp_path, capsys):
    save_tiny_pcmanet(tmp_path / "model")
    out = tmp_path / "out"
    assert cli_main(["predict", str(tmp_path / "model"), str(video), "--out", str(out), "--precision", "bf16"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["precision"] == "bf16" and summary["compiled"] is False
    assert summary["num_frames"] == 4
    argv = ["predict", str(tmp_path / "model"), str(video), "--out", str(out)]
    assert cli_main([*argv, "--calibration", str(video)]) == 2
    assert "--calibration calibrates int8 models" in capsys.readouterr().err
    assert cli_main([*argv, "--compile-mode", "max-autotune"]) == 2
    assert "--compile-mode goes with --compile" in capsys.readouterr().err
    assert cli_main([*argv, "--precision", "fp16", "--overwrite"]) == 2
    assert "GPU only" in capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["precision"] == "bf16"  # a failed run keeps it


def test_evaluate_in_bf16_records_the_precision_and_leaves_the_card(tmp_path, capsys):
    data_dir = tmp_path / "data"
    make_synthetic_avsbench(data_dir, "s4", 5, image_size=32)
    model, processor = save_tiny_pcmanet(tmp_path / "model")
    processor.num_frames = 5
    processor.save_pretrained(tmp_path / "model")
    fp32 = evaluate_split(model, data_dir, "s4", processor=processor)
    bf16 = evaluate_split(model, data_dir, "s4", processor=processor, precision="bf16")
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")
    assert abs(bf16["miou"] - fp32["miou"]) < 0.05

    argv = ["evaluate", str(tmp_path / "model"), str(data_dir), "--subset", "s4", "--precision", "bf16"]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "precision bf16" in printed
    assert "model card not updated" in printed
    assert not (tmp_path / "model" / "README.md").exists()


def test_int8_without_torchao_says_how_to_install(monkeypatch, video, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "torchao", None)  # as if the int8 extra were not installed
    with pytest.raises(ModuleNotFoundError, match=r"needs torchao.*pip install 'avs-models\[int8\]'"):
        optimize_for_inference(tiny_tpavi(), "int8")
    save_tiny_pcmanet(tmp_path / "model")
    argv = ["predict", str(tmp_path / "model"), str(video), "--out", str(tmp_path / "out")]
    argv += ["--precision", "int8"]
    assert cli_main(argv) == 2
    assert capsys.readouterr().err.strip().endswith(
        "--precision int8 needs torchao, which is not installed: pip install 'avs-models[int8]'"
    )


def test_int8_is_refused_on_a_cpu_that_is_not_x86(monkeypatch, video, tmp_path, capsys):
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    with pytest.raises(ValueError, match="quantizes for x86 CPUs.*this CPU is aarch64: use precision='bf16'"):
        optimize_for_inference(tiny_tpavi(), "int8")
    save_tiny_pcmanet(tmp_path / "model")
    argv = ["predict", str(tmp_path / "model"), str(video), "--out", str(tmp_path / "out")]
    argv += ["--precision", "int8"]
    assert cli_main(argv) == 2
    assert "this CPU is aarch64" in capsys.readouterr().err


# ----------------------------------------------------------------------------- web demo
def test_web_demo_segments_in_bf16_and_refuses_fp16_on_a_cpu(video, tmp_path):
    save_tiny_pcmanet(tmp_path / "model")
    model_dir = str(tmp_path / "model")
    reference = segment(str(video), model_dir)
    result = segment(str(video), model_dir, precision="bf16")
    assert load_segmenter(model_dir, precision="bf16").inference_model.precision == "bf16"
    # The page's logits come from the bf16 run (the recorder sits on the module the pipeline calls).
    assert len(result.logits) == len(reference.logits) == 4
    agreement = [((a > 0) == (b > 0)).mean() for a, b in zip(result.logits, reference.logits)]
    assert min(agreement) > 0.95
    with pytest.raises(ValueError, match="fp16.*GPU only"):
        segment(str(video), model_dir, precision="fp16")


def test_app_command_checks_the_speed_options_before_serving(tmp_path, capsys):
    save_tiny_pcmanet(tmp_path / "model")
    assert cli_main(["app", str(tmp_path / "model"), "--compile-mode", "max-autotune"]) == 2
    assert "--compile-mode goes with --compile" in capsys.readouterr().err
