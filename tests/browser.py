"""Debian's Chromium driven through Selenium and Debian's chromedriver (no browser download),
headless, with a fresh profile per browser; plus a helper that saves a screenshot of a page."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def available() -> bool:
    return CHROMIUM.exists() and CHROMEDRIVER.exists()


@contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = Path(tempfile.mkdtemp(prefix="cronflow-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    _viewport(driver, width, height)  # headless windows are at least 500 px wide: emulate
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _viewport(driver: Any, width: int, height: int) -> None:
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
    )


def screenshot(driver: Any, path: Path) -> Path:
    """The whole page (not only the viewport) as a PNG, at the viewport's width."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    full = driver.execute_script("return document.documentElement.scrollHeight")
    _viewport(driver, width, min(max(full, height), 4000))
    driver.save_screenshot(str(path))
    _viewport(driver, width, height)
    return path
