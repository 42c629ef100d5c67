"""The command line speaks to people: every expected error is one line naming the file or option, exit
code 2 and no traceback (`--debug` shows it); options are validated; every sub-command documents itself."""

import shutil
import subprocess

import pytest
from media import write_frames_and_wav, write_video
from test_pipeline_predict import save_tiny_pcmanet

from avs_models.cli import build_parser, main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    save_tiny_pcmanet(folder)
    return folder


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(arg) for arg in argv])
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, command: str, *fragments: str) -> str:
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith(f"avs-models {command}: error:")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("make_input", "fragments"),
    [
        (lambda d: d / "missing.mp4", ["input not found", "missing.mp4"]),
        (
            lambda d: (d / "notes.mp4").write_text("not a video") and d / "notes.mp4",
            ["cannot read video file", "notes.mp4"],
        ),
        (lambda d: write_video(d / "mute.mp4", seconds=2, with_audio=False), ["mute.mp4 has no audio track"]),
        (lambda d: write_video(d / "short.mp4", seconds=0.25), ["short.mp4 is too short", "at least 0.5 s"]),
        (
            lambda d: write_video(d / "sound.mp4", seconds=2, with_video=False),
            ["sound.mp4 has no video stream"],
        ),
        (lambda d: write_frames_and_wav(d, seconds=2)[0], ["is a folder of frames", "--audio FILE"]),
        (
            lambda d: write_video((d / "videos").mkdir() or d / "videos" / "a.mp4", seconds=2).parent,
            ["videos holds no images", "it holds a.mp4", "pass a folder of frames, or one video file"],
        ),
        (lambda d: (d / "empty").mkdir() or d / "empty", ["empty holds no images", "it is empty"]),
    ],
)
def test_predict_input_errors_are_one_line(tmp_path, capsys, model_dir, make_input, fragments):
    source = make_input(tmp_path)
    code, err = run_cli(capsys, "predict", model_dir, source, "--out", tmp_path / "out")
    assert_one_line_error(code, err, "predict", *fragments)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_predict_out_must_be_a_folder(tmp_path, capsys, model_dir):
    video = write_video(tmp_path / "clip.mp4", seconds=2)
    (tmp_path / "out.txt").write_text("a file")
    code, err = run_cli(capsys, "predict", model_dir, video, "--out", tmp_path / "out.txt")
    assert_one_line_error(code, err, "predict", "--out", "out.txt is a file: pass a folder")


def test_truncated_video_is_one_line(tmp_path, capsys, model_dir):
    video = write_video(tmp_path / "full.mp4", seconds=3)
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    code, err = run_cli(capsys, "predict", model_dir, truncated, "--out", tmp_path / "out")
    assert_one_line_error(code, err, "predict", "cannot read video file", "cut.mp4")


def test_model_folder_errors(tmp_path, capsys):
    video = write_video(tmp_path / "clip.mp4", seconds=2)
    code, err = run_cli(capsys, "predict", tmp_path / "nowhere", video, "--out", tmp_path / "out")
    assert_one_line_error(code, err, "predict", "model folder not found", "nowhere")
    (tmp_path / "empty").mkdir()
    code, err = run_cli(capsys, "predict", tmp_path / "empty", video, "--out", tmp_path / "out")
    assert_one_line_error(code, err, "predict", "has no config.json")


def test_audio_option_errors(tmp_path, capsys, model_dir):
    video = write_video(tmp_path / "clip.mp4", seconds=2)
    frames_dir, wav = write_frames_and_wav(tmp_path, seconds=2)
    code, err = run_cli(capsys, "predict", model_dir, video, "--audio", wav, "--out", tmp_path / "out")
    assert_one_line_error(code, err, "predict", "--audio goes with a frames folder", "clip.mp4")
    code, err = run_cli(
        capsys, "predict", model_dir, frames_dir, "--audio", tmp_path / "none.wav", "--out", tmp_path / "o"
    )
    assert_one_line_error(code, err, "predict", "audio file not found", "none.wav")
    (tmp_path / "bad.wav").write_text("not a sound")
    code, err = run_cli(
        capsys, "predict", model_dir, frames_dir, "--audio", tmp_path / "bad.wav", "--out", tmp_path / "o"
    )
    assert_one_line_error(code, err, "predict", "cannot read audio file", "bad.wav")


@pytest.mark.parametrize(
    ("option", "value", "fragment"),
    [
        ("--alpha", "5", "argument --alpha: must lie in [0, 1]"),
        ("--alpha", "-0.1", "argument --alpha: must lie in [0, 1]"),
        ("--threshold", "2", "argument --threshold: must be a probability strictly between 0 and 1"),
        ("--threshold", "0", "argument --threshold: must be a probability strictly between 0 and 1"),
        ("--threshold", "half", "argument --threshold: invalid probability value: 'half'"),
        ("--batch-size", "0", "argument --batch-size: must be a positive integer"),
    ],
)
def test_option_values_are_validated(tmp_path, capsys, option, value, fragment):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(tmp_path), str(tmp_path / "v.mp4"), "--out", str(tmp_path / "o"), option, value])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and fragment in err and "avs-models predict --help" in err


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        main(
            [
                "predict",
                str(tmp_path / "nowhere"),
                str(tmp_path / "v.mp4"),
                "--out",
                str(tmp_path / "o"),
                "--debug",
            ]
        )


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["evaluate", "{tmp}/nowhere", "{tmp}/data"], ["nowhere"]),
        (["train", "{tmp}/missing.yaml"], ["missing.yaml"]),
        (["prepare-avsbench", "{tmp}/raw", "{tmp}/out"], ["raw"]),
    ],
)
def test_other_commands_answer_missing_files_in_one_line(tmp_path, capsys, argv, fragments):
    code, err = run_cli(capsys, *[arg.format(tmp=tmp_path) for arg in argv])
    assert_one_line_error(code, err, argv[0], *fragments)


def test_version_and_help_of_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("avs-models ")
    parser = build_parser()
    subparsers = next(action for action in parser._actions if action.choices and "predict" in action.choices)
    assert set(subparsers.choices) >= {
        "predict",
        "evaluate",
        "train",
        "demo",
        "make-synthetic",
        "prepare-avsbench",
    }
    helps = {action.dest: action.help for action in subparsers._choices_actions}
    for name, subparser in subparsers.choices.items():
        assert helps.get(name), f"`avs-models {name}` has no one-line help"
        assert subparser.description, f"`avs-models {name}` has no description"
        for action in subparser._actions:
            assert action.help, (
                f"`avs-models {name}` option {action.option_strings or action.dest} has no help"
            )


@pytest.mark.skipif(
    shutil.which("avs-models") is None, reason="the avs-models console script is not installed"
)
def test_installed_command_prints_no_traceback(tmp_path):
    result = subprocess.run(
        [
            "avs-models",
            "predict",
            "/nonexistent-model",
            "/nonexistent-video.mp4",
            "--out",
            str(tmp_path / "X"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "avs-models predict: error: model folder not found: /nonexistent-model" in result.stderr
