"""A built Space, served by its own `app.py`, driven through gradio_client and a real headless Chromium."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from hfgal.constants import GZ10_CLASSES

pytest.importorskip("gradio", reason="the demo needs the `demo` extra (gradio)")

from fixtures.demo import free_port, galaxy  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO_ROOT = Path(__file__).resolve().parents[1]
TOP_K = 5


@pytest.fixture(scope="module")
def served_space(tmp_path_factory, demo_run_dir, vit_dir, sample_dir):  # noqa: F811
    """Build a Space with two local models and the sample galaxies, then run its app.py on a free local port."""
    from hfgal.demo.space import build_space

    space = build_space(
        [demo_run_dir, vit_dir], tmp_path_factory.mktemp("space") / "space", examples=sample_dir, title="GZ10 demo"
    )
    port = free_port()
    env = {
        **os.environ,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    log = space.parent / "app.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=space, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/gradio_api/info", timeout=5) as r:
                    json.load(r)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the Space app did not start:\n{log.read_text()[-3000:]}")
                time.sleep(1)
        yield {"url": url, "space": space, "models": [demo_run_dir.name, vit_dir.name]}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def expected():
    """Predictions of `load_classifier` on the Space's own model copies: what the page must show."""
    from hfgal.data.imageio import load_image
    from hfgal.inference import load_classifier

    cache = {}

    def predict(space: Path, model: str, path: Path, tta: bool) -> list[dict]:
        if model not in cache:
            cache[model] = load_classifier(space / "models" / model)
        return cache[model].predict([load_image(path)], top_k=len(GZ10_CLASSES), tta=tta)[0]

    return predict


def artifacts_dir(tmp_path: Path) -> Path:
    """Where screenshots go: $HFGAL_TEST_ARTIFACTS when set (CI collects it), else the test's tmp folder."""
    folder = Path(os.environ.get("HFGAL_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --------------------------------------------------------------------------- gradio_client


@pytest.mark.slow
def test_gradio_client_classify_matches_load_classifier(served_space, expected, sample_dir, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from hfgal.data.imageio import MAX_FILE_BYTES

    with urllib.request.urlopen(f"{served_space['url']}/config", timeout=10) as r:
        config = json.load(r)
    assert config["title"] == "GZ10 demo" and config["max_file_size"] == MAX_FILE_BYTES  # uploads are capped

    client = Client(served_space["url"], verbose=False)
    model = served_space["models"][0]
    path = galaxy(sample_dir, 8, 1)  # one of the Space's 20 examples
    label, description, preview = client.predict(handle_file(str(path)), model, True, api_name="/classify")
    want = expected(served_space["space"], model, path, True)
    assert label["label"] == want[0]["label"]
    # gr.Label sends the top-k, best first.
    got = [(c["label"], c["confidence"]) for c in label["confidences"]]
    assert [name for name, _ in got] == [w["label"] for w in want[:TOP_K]]
    assert [score for _, score in got] == pytest.approx([w["score"] for w in want[:TOP_K]], abs=1e-6)
    assert description.startswith(f"**{want[0]['label']}**")
    assert "Galaxy Zoo volunteers' label: **Edge-on without Bulge**" in description
    from PIL import Image

    assert Image.open(preview).size == (256, 256)
    saliency = client.predict(handle_file(str(path)), model, label, api_name="/explain")
    assert Image.open(saliency).size == (384, 384)

    bad = tmp_path / "notes.png"
    bad.write_text("observing log, not an image")
    with pytest.raises(AppError, match=r"^notes\.png: \S.*image"):
        client.predict(handle_file(str(bad)), model, False, api_name="/classify")
    with pytest.raises(AppError, match="Invalid file type"):
        client.predict(
            handle_file(str(served_space["space"] / "requirements.txt")), model, False, api_name="/classify"
        )


# --------------------------------------------------------------------------- the browser


def read_label(page) -> list[tuple[str, float]]:
    """(class, probability) pairs shown by the gr.Label, best first (the meters carry the exact values)."""
    meters = page.locator("#prediction meter")
    return [(m.get_attribute("aria-label"), float(m.get_attribute("value"))) for m in meters.all()]


def wait_for_label(page, want: list[dict], timeout: float = 120) -> list[tuple[str, float]]:
    """Wait until the page shows the top-k of `want` (labels in order, probabilities to 1e-6)."""
    deadline = time.monotonic() + timeout
    shown: list[tuple[str, float]] = []
    while time.monotonic() < deadline:
        shown = read_label(page)
        if len(shown) == TOP_K and all(
            name == w["label"] and abs(value - w["score"]) < 1e-6
            for (name, value), w in zip(shown, want[:TOP_K], strict=True)
        ):
            return shown
        page.wait_for_timeout(250)
    raise AssertionError(f"page shows {shown}, expected {[(w['label'], w['score']) for w in want[:TOP_K]]}")


@pytest.mark.browser
@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"
)
@pytest.mark.slow
def test_browser_upload_example_tta_and_model_choice(served_space, expected, sample_dir, tmp_path):
    from playwright.sync_api import sync_playwright

    space, (cnn, vit) = served_space["space"], served_space["models"]
    shots = artifacts_dir(tmp_path)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(served_space["url"], wait_until="domcontentloaded")
            page.get_by_role("heading", name="GZ10 demo").wait_for(timeout=60_000)
            # The model card link of the default (local) model is shown by name.
            assert cnn in page.locator("#model-info").inner_text()

            # Upload a real galaxy: the label, description and saliency map appear.
            upload = galaxy(sample_dir, 5, 1)
            page.locator("#galaxy-file input[type=file]").set_input_files(str(upload))
            want = expected(space, cnn, upload, False)
            shown = wait_for_label(page, want)
            assert page.locator("#prediction [data-testid=label-output-value]").inner_text() == want[0]["label"]
            assert shown[0][0] == want[0]["label"]
            page.locator("#saliency img").wait_for(timeout=30_000)
            description = page.locator("#description").inner_text()
            assert want[0]["label"] in description and "Barred Spiral" in description

            # Test-time augmentation: the page switches to the 8-view average.
            page.locator("#tta input[type=checkbox]").check()
            wait_for_label(page, expected(space, cnn, upload, True))

            # Click the example of class 4 (examples are one per class first, in class order).
            example = page.locator("#examples button.gallery-item").nth(4)
            example.click()
            example_path = space / "examples" / "4_0.png"
            wait_for_label(page, expected(space, cnn, example_path, True))
            page.get_by_text("Galaxy Zoo volunteers' label: Cigar Shaped Smooth").wait_for(timeout=30_000)

            # Choose the second model (a ViT): same example, that model's probabilities.
            page.locator("#model-choice input").click()
            page.get_by_role("option", name=vit).click()
            wait_for_label(page, expected(space, vit, example_path, True))
            assert vit in page.locator("#model-info").inner_text()
            page.locator("#saliency img").wait_for(timeout=30_000)
            page.screenshot(path=str(shots / "demo_desktop.png"), full_page=True)

            # Phones: one column, upload above the prediction, nothing wider than the screen.
            page.set_viewport_size({"width": 390, "height": 844})
            page.wait_for_timeout(500)
            upload_box = page.locator("#galaxy-file").bounding_box()
            label_box = page.locator("#prediction").bounding_box()
            assert label_box["y"] >= upload_box["y"] + upload_box["height"]
            assert abs(label_box["x"] - upload_box["x"]) < 5 and label_box["width"] <= 390
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            page.screenshot(path=str(shots / "demo_mobile.png"), full_page=True)

            # Not an image: a readable message, and the page keeps working afterwards.
            bad = tmp_path / "observing-log.png"
            bad.write_text("observing log, not an image")
            page.locator("#galaxy-file button[aria-label='Clear']").click()
            page.locator("#galaxy-file input[type=file]").set_input_files(str(bad))
            page.get_by_text(re.compile(r"^observing-log\.png: \S.*image")).first.wait_for(timeout=60_000)
            page.locator("#galaxy-file button[aria-label='Clear']").click()
            good = galaxy(sample_dir, 9, 0)
            page.locator("#galaxy-file input[type=file]").set_input_files(str(good))
            wait_for_label(page, expected(space, vit, good, True))
        finally:
            browser.close()
    print(f"screenshots: {shots / 'demo_desktop.png'} {shots / 'demo_mobile.png'}")
    assert (shots / "demo_desktop.png").stat().st_size > 10_000
