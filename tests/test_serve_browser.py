"""The studio page in a real browser: Debian's chromium driven by Selenium (headless, offline) picks "awe",
generates, waits for the image in the gallery, edits an uploaded photo and checks the before/after view;
its screenshots are saved and must not be blank."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
selenium = pytest.importorskip("selenium")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
    pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run "
                "installs them)", allow_module_level=True)

from serve_live import LiveServer  # noqa: E402

SHOTS = Path(os.environ.get("EMOGEN_SCREENSHOTS", "")) if os.environ.get("EMOGEN_SCREENSHOTS") else None


@pytest.fixture(scope="module")
def studio(mapper_config, tmp_path_factory):
    from emogen_cli.core.config import load_config
    from emogen_cli.pipeline import EmoGenPipeline
    from emogen_cli.serve.app import create_app
    from emogen_cli.serve.jobs import JobManager
    from emogen_cli.serve.service import Service

    cfg = load_config(mapper_config, {"model.resolution": 64, "generate.steps": 4})
    manager = JobManager([EmoGenPipeline(cfg)], queue_size=4)
    service = Service(cfg, manager, tmp_path_factory.mktemp("studio") / "out")
    live = LiveServer(create_app(service))
    yield live.url, service.out
    live.stop()
    manager.close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000",
                "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def not_blank(path: Path) -> None:
    from PIL import Image, ImageStat

    image = Image.open(path).convert("RGB")
    assert image.size[0] >= 800
    stat = ImageStat.Stat(image.convert("L"))
    assert stat.stddev[0] > 10, f"{path} looks blank"
    assert len(image.getcolors(1 << 24)) > 200, f"{path} has almost no colours"


def test_the_studio_generates_and_edits_in_a_real_browser(studio, browser, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, out = studio
    shots = SHOTS or tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    wait = WebDriverWait(browser, 120)
    browser.get(url)
    awe = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, ".chip[data-emotion=awe]")))
    awe.click()
    assert awe.get_attribute("aria-checked") == "true"
    count = browser.find_element(By.ID, "count")
    count.clear()
    count.send_keys("2")
    browser.find_element(By.ID, "prompt").send_keys("{} a lighthouse")
    browser.find_element(By.ID, "go").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery .card img")) >= 2)
    wait.until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('#gallery .card img')].every(i => i.complete && i.naturalWidth > 0)"))
    assert "written to the gallery" in browser.find_element(By.ID, "message").text
    browser.save_screenshot(str(shots / "studio-generate.png"))
    not_blank(shots / "studio-generate.png")
    assert sorted(p.name for p in out.glob("awe-a-lighthouse-*.png")) == ["awe-a-lighthouse-00000.png",
                                                                          "awe-a-lighthouse-00001.png"]

    # the detail view shows the settings and offers same-again / vary-seed / download / copy-infotext
    browser.find_element(By.CSS_SELECTOR, "#gallery .card img").click()
    detail = wait.until(ec.visibility_of_element_located((By.ID, "detail")))
    labels = [b.text for b in detail.find_elements(By.CSS_SELECTOR, "#detail-actions button, #detail-actions a")]
    assert {"Same again", "Vary seed", "Download", "Copy infotext", "Load settings"} <= set(labels)
    assert "seed" in detail.text and "awe" in detail.text
    detail.find_element(By.XPATH, ".//button[text()='Same again']").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery .card")) >= 3)

    # the valence-arousal pad
    browser.find_element(By.CSS_SELECTOR, "input[name=target][value=va]").click()
    pad = browser.find_element(By.ID, "pad")
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(browser).move_to_element_with_offset(pad, pad.size["width"] // 3, -pad.size["height"] // 3).click().perform()
    assert "valence 0.8" in browser.find_element(By.ID, "pad-readout").text
    browser.find_element(By.CSS_SELECTOR, "input[name=target][value=emotions]").click()

    # edit an uploaded photo: before/after
    photo = tmp_path / "photo.png"
    Image.linear_gradient("L").resize((96, 64)).convert("RGB").save(photo)
    browser.find_element(By.ID, "tab-edit").click()
    upload = browser.find_element(By.ID, "photo")
    browser.execute_script("arguments[0].hidden = false", upload)
    upload.send_keys(str(photo))
    wait.until(lambda d: d.find_element(By.ID, "drop-text").text == "photo.png")
    browser.find_element(By.ID, "go").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#result .compare img"))
    wait.until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('#result .compare img')].every(i => i.complete && i.naturalWidth > 0)"))
    browser.save_screenshot(str(shots / "studio-edit.png"))
    not_blank(shots / "studio-edit.png")
    edits = list(out.glob("photo-awe-*.png"))
    assert len(edits) == 1 and Image.open(edits[0]).size == (96, 64)
    logs = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not logs, logs
