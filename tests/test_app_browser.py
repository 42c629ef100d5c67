"""The web demo in a real browser: `avs-models app` runs in a subprocess on a free local port and
headless Chromium (Debian's `chromium` and `chromium-driver`, which `.ci/run` installs) drives the
page through Selenium, as a person would: upload a video, wait for the overlay, count the seconds
in the gallery, move the threshold slider, upload files that are not usable videos.

The app serves a tiny saved PCMANet (not the demo-trained one), so a run takes seconds. These
tests are skipped, saying why, only where no browser or driver is installed. The page's pieces
(one run of the model, redrawing, C3N's consensus, the AVSS legend) are also checked directly.

`python tests/test_app_browser.py --screenshot docs/images/web_demo.png` takes the docs' picture of
the page: the demo-trained PCMANet (trained and cached on first use) on the first example clip.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from avs_models.app import _binary_mask

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    import selenium  # noqa: F401
except ImportError:
    selenium = None

needs_browser = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None or selenium is None,
    reason="no headless browser here: install Debian's chromium and chromium-driver and the app extra "
    "(selenium), as .ci/run does",
)

SECONDS = 3
SERVER_START_TIMEOUT = 240
RUN_TIMEOUT = 180
# Chromium flags for a machine with no display and no network but the loopback.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1100",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_app(arguments: list[str], cache: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """`avs-models app ARGUMENTS` on a free port of 127.0.0.1, once it answers; its URL."""
    port = free_port()
    environment = {**os.environ, "AVS_MODELS_CACHE": str(cache), "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen(
        [sys.executable, "-m", "avs_models.cli", "app", *arguments, "--port", str(port)],
        env=environment,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the app exited with code {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return server, url
        except OSError:
            time.sleep(1)
    server.terminate()
    raise RuntimeError(f"the app did not answer within {SERVER_START_TIMEOUT} s:\n{log.read_text()[-3000:]}")


def open_browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tempfile.mkdtemp(prefix='avs-chromium-')}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


class Page:
    """The demo page, as the elements a person sees (found by the ids `avs_models.app` gives them)."""

    def __init__(self, driver, url: str):
        from selenium.webdriver.common.by import By

        self.driver, self.by = driver, By
        driver.get(url)
        self.wait_for(lambda: self.driver.find_elements(By.CSS_SELECTOR, "#video-in input[type=file]"), 60)

    def wait_for(self, condition, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout} s; the page says: {self.status()!r}")

    def status(self) -> str:
        return " ".join(self.driver.find_element(self.by.ID, "status").text.split())

    def overlay_source(self) -> str | None:
        videos = self.driver.find_elements(self.by.CSS_SELECTOR, "#video-out video")
        return videos[0].get_attribute("src") if videos else None

    def gallery_sources(self) -> list[str]:
        return [image.get_attribute("src") for image in self.driver.find_elements(self.by.CSS_SELECTOR, "#gallery img")]

    def upload(self, path: Path) -> None:
        clear = self.driver.find_elements(self.by.CSS_SELECTOR, "#video-in button[aria-label='Clear']")
        if clear:
            clear[0].click()
        field = self.wait_for(lambda: self.driver.find_elements(self.by.CSS_SELECTOR, "#video-in input[type=file]"), 30)
        field[0].send_keys(str(path))

    def segment(self, path: Path, model: str | None = None) -> None:
        """Upload `path`, choose `model` (typed into the menu), press Segment and wait for the answer."""
        before = self.status()
        self.upload(path)
        if model is not None:
            from selenium.webdriver.common.keys import Keys

            box = self.driver.find_element(self.by.CSS_SELECTOR, "#model-in input")
            box.send_keys(Keys.CONTROL, "a")
            box.send_keys(model, Keys.ENTER)
        time.sleep(1)  # the upload reaches the server before the click
        self.driver.find_element(self.by.ID, "run").click()
        # While the model runs, the status box shows Gradio's progress; then one of the app's answers.
        self.wait_for(
            lambda: self.status() != before and re.match(r"(\d+ seconds? segmented by|Error:)", self.status()),
            RUN_TIMEOUT,
        )

    def move_threshold(self, fraction: float) -> None:
        """Click the threshold slider at `fraction` of its length (a press and a release, as a mouse)."""
        from selenium.webdriver.common.action_chains import ActionChains

        slider = self.driver.find_element(self.by.CSS_SELECTOR, "#threshold input[type=range]")
        offset = round((fraction - 0.5) * slider.size["width"])  # offsets count from the centre
        ActionChains(self.driver).move_to_element_with_offset(slider, offset, 0).click().perform()

    def threshold(self) -> float:
        return float(self.driver.find_element(self.by.CSS_SELECTOR, "#threshold input[type=number]").get_attribute("value"))


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """A tiny saved PCMANet with its processor, a 3-second mp4 with sound, and bad uploads."""
    from media import write_video
    from test_pipeline_predict import save_tiny_pcmanet

    folder = tmp_path_factory.mktemp("app")
    save_tiny_pcmanet(folder / "tiny-pcmanet")
    (folder / "notes.mp4").write_text("meeting notes, not a video\n")
    return {
        "model": folder / "tiny-pcmanet",
        "clip": write_video(folder / "clip.mp4", SECONDS, fps=4, size=(96, 128), marker=True),
        "not a video": folder / "notes.mp4",
        "no audio": write_video(folder / "mute.mp4", SECONDS, with_audio=False),
        "too short": write_video(folder / "short.mp4", 0.25),
        "cache": folder / "cache",
        "log": folder / "app.log",
    }


@pytest.fixture(scope="module")
def page(media):
    server, url = start_app([str(media["model"])], media["cache"], media["log"])
    driver = open_browser()
    try:
        yield Page(driver, url)
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=30)


@needs_browser
def test_segments_an_upload_and_redraws_at_another_threshold(page, media):
    page.segment(media["clip"])
    assert page.status().startswith(f"{SECONDS} seconds segmented by tiny-pcmanet"), page.status()
    first_video = page.wait_for(page.overlay_source, 60)
    assert first_video.endswith(".mp4")
    first_gallery = page.wait_for(page.gallery_sources, 60)
    assert len(first_gallery) == SECONDS  # one overlay per second of video

    # The tiny model puts every pixel above 0.5 and most below 0.9: a higher threshold changes every mask.
    page.move_threshold(0.9)
    page.wait_for(lambda: page.overlay_source() != first_video, 60)
    assert page.threshold() > 0.8
    assert page.status().startswith("Drawn again at threshold"), page.status()
    # Gradio names files by their content: new names are new pictures.
    new_gallery = page.wait_for(lambda: (sources := page.gallery_sources()) != first_gallery and sources, 60)
    assert len(new_gallery) == SECONDS
    assert set(new_gallery).isdisjoint(first_gallery)


@needs_browser
@pytest.mark.parametrize(
    "upload, message",
    [
        ("not a video", "Error: cannot read video file notes.mp4: Invalid data found when processing input"),
        ("no audio", "Error: mute.mp4 has no audio track: the models segment what makes the sound"),
        ("too short", "Error: short.mp4 is too short: 0.25 s of video, at least 0.5 s is needed"),
    ],
)
def test_bad_upload_shows_the_command_line_message_and_the_app_keeps_serving(page, media, upload, message):
    page.segment(media[upload])
    assert page.status().startswith(message), page.status()
    assert page.overlay_source() is None and page.gallery_sources() == []

    page.segment(media["clip"])
    assert page.status().startswith(f"{SECONDS} seconds segmented"), page.status()
    assert len(page.wait_for(page.gallery_sources, 60)) == SECONDS


def test_redrawing_at_a_threshold_equals_running_the_pipeline_at_it(media):
    from transformers import pipeline

    from avs_models.app import render, segment

    result = segment(str(media["clip"]), str(media["model"]))
    assert len(result.frames) == SECONDS and result.frames[0].shape == (96, 128, 3)
    segmenter = pipeline("audio-visual-segmentation", model=str(media["model"]))
    for threshold in (0.2, 0.5, 0.8):
        rendering = render(result, threshold, alpha=0.6)
        expected = segmenter(str(media["clip"]), threshold=threshold)
        for index, second in enumerate(expected):
            mask = _binary_mask(result.processor, result.logits[index], second["mask"].shape, threshold)
            assert np.array_equal(mask, second["mask"])
            assert rendering.gallery[index][1].endswith(f"{(second['mask'] > 0).mean():.0%} masked")
        assert Path(rendering.video).is_file()
    # Each redraw replaces the session's earlier overlay video.
    assert [path.name for path in Path(result.output_dir).glob("*.mp4")] == ["overlay_0003.mp4"]
    with av.open(rendering.video) as container:
        assert len(container.streams.audio) == 1  # the video's own sound
        assert container.streams.video[0].frames == SECONDS


def test_c3n_shows_its_consensus_per_second(media, tmp_path):
    from test_pipeline_predict import TINY_VGGISH_AUDIOSET, save_tiny_c3n

    from avs_models.app import render, segment
    from avs_models.models.vggish import VGGishFeatureExtractor
    from avs_models.processing import AudioVisualProcessor

    model = save_tiny_c3n(tmp_path / "c3n", TINY_VGGISH_AUDIOSET, VGGishFeatureExtractor())
    result = segment(str(media["clip"]), str(tmp_path / "c3n"))
    inputs = AudioVisualProcessor.from_pretrained(tmp_path / "c3n")(str(media["clip"]))
    with torch.no_grad():
        output = model(
            pixel_values=inputs["pixel_values"],
            input_features=inputs["input_features"],
            frame_mask=inputs["frame_mask"],
            output_attentions=True,
        )
    real = inputs["frame_mask"].bool()
    assert [row["unified label"] for row in result.consensus] == [
        f"class {label}" for label in output.unified_labels[real].tolist()
    ]
    assert [row["audio class"] for row in result.consensus] == [
        f"class {label}" for label in output.consensus_top_audio_classes[real][:, 0].tolist()
    ]
    assert [row["second"] for row in result.consensus] == list(range(SECONDS))
    assert model.config.output_attentions is False  # the app leaves the config as it found it
    assert len(render(result, 0.5, 0.5).gallery) == SECONDS


def test_avss_model_shows_its_class_legend_and_ignores_the_threshold(media, tmp_path):
    from test_pipeline_predict import save_tiny_pcmanet

    from avs_models.app import legend_html, render, segment
    from avs_models.data.avss_classes import avss_id2label

    save_tiny_pcmanet(tmp_path / "avss", id2label=avss_id2label())
    result = segment(str(media["clip"]), str(tmp_path / "avss"))
    assert result.semantic and result.logits == [] and len(result.masks) == SECONDS
    low, high = render(result, 0.1, 0.5), render(result, 0.9, 0.5)
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(low.gallery, high.gallery))
    found = {int(class_id) for mask in result.masks for class_id in np.unique(mask) if class_id}
    assert found and [name for name, _ in low.legend] == [avss_id2label()[class_id] for class_id in sorted(found)]
    assert all(name in legend_html(low.legend) for name, _ in low.legend)


def take_screenshot(path: Path) -> None:
    """The docs' picture: the demo-trained PCMANet (the app's default) on the first example clip."""
    from avs_models.app import cache_dir, example_clips

    with tempfile.TemporaryDirectory() as folder:
        server, url = start_app([], cache_dir(), Path(folder) / "app.log")
        driver = open_browser()
        try:
            page = Page(driver, url)
            page.segment(example_clips()[0])
            page.wait_for(page.gallery_sources, 60)
            time.sleep(2)
            driver.save_screenshot(str(path))
        finally:
            driver.quit()
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    if sys.argv[1:2] != ["--screenshot"] or len(sys.argv) != 3:
        sys.exit("usage: python tests/test_app_browser.py --screenshot PNG")
    take_screenshot(Path(sys.argv[2]))
