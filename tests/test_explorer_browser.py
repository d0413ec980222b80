"""The explorer page in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``)
driven by selenium with the system chromedriver (no Selenium Manager download). The page is built from a
tiny random SegNet in a second: it loads with no console error, choosing a class swaps the maps, clicking
a pixel shows the nearest cell's evidence, and the unit browser swaps units."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from segdeconv.models import SegNet, VGGEncoder
from segdeconv.visualize.classmaps import MapSettings, image_maps
from segdeconv.visualize.explorer import write_explorer
from segdeconv.visualize.projection import Projector
from segdeconv.visualize.topk import collect_tiles, search_topk

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
BROWSER = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (BROWSER and DRIVER), reason="no headless browser: apt-get install chromium "
                                "chromium-driver (Debian; .ci/run installs them)")
GRID, SIZE = 4, (48, 64)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    """An explorer of 2 random images × 3 classes (box region: every class mapped) of a model with dropout
    (2 Monte-Carlo passes: the uncertainty) and 2 units of conv3_2."""
    torch.manual_seed(0)
    model = SegNet(3, encoder=VGGEncoder("vgg11", width=0.125, num_stages=3), dropout=0.5).eval()
    images = [torch.randn(3, *SIZE) for _ in range(2)]
    s = MapSettings(region=(0, 0, *SIZE), patch=16, stride=16, grid=GRID, mc_samples=2)
    maps = [image_maps(model, x, (x * 0.2 + 0.5).clamp(0, 1), f"img{i}", [0, 1, 2], s) for i, x in enumerate(images)]
    projector = Projector.from_model(model)
    tables = search_topk(projector, images, ["conv3_2"], [0, 1], k=2, show_progress=False)
    units = collect_tiles(projector, images, tables, "deconvnet", show_progress=False)
    folder = tmp_path_factory.mktemp("explorer")
    write_explorer(folder, maps, units, ["sky", "road", "car"], [[128, 128, 128], [128, 64, 128], [64, 0, 128]],
                   {"checkpoint": "random"}, s)
    return folder / "index.html"


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER  # with the driver's path given too, Selenium Manager is never asked
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1200"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    os.environ.setdefault("SE_OFFLINE", "true")
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def src(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).get_attribute("src") or ""


def test_page_loads_without_console_errors(browser, page):
    browser.get(page.as_uri())
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    assert src(browser, "evidence-img").endswith(".jpg") and src(browser, "base-img").endswith("img0.jpg")
    rows = browser.find_elements("css selector", "#class-table tbody tr")
    assert [r.get_attribute("data-class") for r in rows] == ["sky", "road", "car"]  # the colour legend
    assert browser.find_element("id", "conf-title").text == "Uncertainty (MC dropout, 2 passes)"
    assert src(browser, "conf-img").endswith("img0_unc.png") and browser.find_element("id", "unc-head").is_displayed()


def test_choosing_a_class_swaps_its_maps(browser, page):
    browser.get(page.as_uri())
    before = src(browser, "evidence-img"), src(browser, "occlusion-img")
    other = browser.find_element("css selector", "#class-table tr.has:not(.sel)")
    name = other.get_attribute("data-class")
    other.click()
    after = src(browser, "evidence-img"), src(browser, "occlusion-img")
    assert after[0] != before[0] and after[1] != before[1] and all(a.endswith(".jpg") for a in after)
    assert browser.find_element("id", "evidence-title").text.endswith(name)
    assert "sel" in other.get_attribute("class")


@pytest.mark.parametrize("fy, fx", [(0.1, 0.1), (0.9, 0.6)])
def test_clicking_a_pixel_shows_the_nearest_cell_evidence(browser, page, fy, fx):
    from selenium.webdriver.common.action_chains import ActionChains

    browser.get(page.as_uri())
    view = browser.find_element("id", "base-img")
    w, h = view.size["width"], view.size["height"]
    ActionChains(browser).move_to_element_with_offset(view, int((fx - 0.5) * w), int((fy - 0.5) * h)).click().perform()
    cell = int(fy * GRID) * GRID + int(fx * GRID)
    assert src(browser, "pixel-img").endswith(f"img0_cell{cell}.jpg")
    info = browser.find_element("id", "pixel-info").text
    assert re.search(r"Pixel \(y \d+, x \d+\).*nearest precomputed cell centre.*4×4 grid", info), info
    assert browser.find_element("id", "pixel-title").text in {"Pixel evidence: sky", "Pixel evidence: road",
                                                               "Pixel evidence: car"}
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_image_and_unit_choices_swap_the_pictures(browser, page):
    from selenium.webdriver.support.ui import Select

    browser.get(page.as_uri())
    unit0 = src(browser, "unit-img")
    browser.find_elements("css selector", "#channels button")[1].click()
    assert src(browser, "unit-img") != unit0 and src(browser, "unit-img").endswith("conv3_2_1.png")
    Select(browser.find_element("id", "image")).select_by_index(1)
    assert src(browser, "base-img").endswith("img1.jpg") and "img1_" in src(browser, "evidence-img")
