"""The web UI in a real browser: Debian's chromium driven by Selenium against ``python -m pipeline.app``
started on a free loopback port with seeded weights (fixed box, no restorer: a render takes seconds)."""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

import pytest

from tests.app_server import running_app, speech_frames
from tests.media_fixtures import read_all_frames

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_VIDEO = REPO / "examples" / "face.mp4"  # 320x320, 25 fps
SENTENCE = "Hello from the browser."
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (requirements-ui.txt)"
)
pytest.importorskip("gradio", reason="gradio is not installed (requirements-ui.txt, make ui)")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="no chromium/chromedriver here (apt-get install chromium-driver)"
)
RENDER_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The app's URL and output folder; the process is stopped after the module."""
    with running_app(tmp_path_factory.mktemp("app")) as served:
        yield served


@pytest.fixture
def browser(tmp_path):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,2000"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _upload_and_render(driver, url: str, video: Path, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    # Gradio mounts the page's components one after another: on a loaded machine the button can still be
    # missing when the upload field is there, so each element is waited for, never assumed.
    wait = WebDriverWait(driver, 60)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#face-video input[type=file]"))).send_keys(
        str(video)
    )
    uploaded = driver.find_element(By.ID, "face-video")
    wait.until(lambda _: video.stem in uploaded.text and video.suffix in uploaded.text)  # "face\n.mp4"
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#script textarea"))).send_keys(text)
    wait.until(ec.element_to_be_clickable((By.ID, "render"))).click()


def _status_when_done(driver) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def finished(d):
        value = d.find_element(By.CSS_SELECTOR, "#status textarea").get_attribute("value")
        return value if value and value != "cancelling..." else False

    return WebDriverWait(driver, RENDER_TIMEOUT_S, poll_frequency=0.5).until(finished)


def test_render_in_the_browser_plays_a_video_as_long_as_the_speech(app, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, out = app
    _upload_and_render(browser, url, EXAMPLE_VIDEO, SENTENCE)
    assert _status_when_done(browser) == "done"
    video = WebDriverWait(browser, 30).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "#result video[src]"))
    )
    summary = browser.find_element(By.CSS_SELECTOR, "#summary textarea").get_attribute("value")
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return arguments[0].readyState", video) >= 2)
    browser.save_screenshot(str(tmp_path / "finished.png"))
    played = tmp_path / "played.mp4"
    with urllib.request.urlopen(video.get_attribute("src"), timeout=30) as response:
        played.write_bytes(response.read())
    assert abs(len(read_all_frames(played)) - speech_frames(SENTENCE)) <= 1
    assert summary.startswith("wrote ") and "frames without a face" in summary and "time:" in summary
    assert len(list(out.glob("*_lipsync.mp4"))) == 1 and not list(out.glob(".*"))  # no temporary left


def test_a_text_file_as_the_video_shows_the_one_line_error(app, browser, tmp_path):
    from selenium.webdriver.common.by import By

    url, out = app
    notes = tmp_path / "notes.txt"
    notes.write_text("this is not a video\n")
    _upload_and_render(browser, url, notes, SENTENCE)
    status = _status_when_done(browser)
    browser.save_screenshot(str(tmp_path / "error.png"))
    assert status.startswith("error: ") and "notes.txt" in status and "\n" not in status
    assert "Traceback" not in browser.find_element(By.TAG_NAME, "body").text
