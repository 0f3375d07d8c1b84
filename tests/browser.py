"""Open a page from disk in headless Chromium (Debian's, via chromedriver) and report what a
reader would notice: broken images, console errors, requests that left the machine."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@dataclass
class PageCheck:
    """What the browser saw on one page."""

    images: int
    broken_images: list[str]
    console_errors: list[str]
    external_requests: list[str]
    text: str


def available() -> bool:
    """Whether Chromium and chromedriver are installed (`make browser` installs them)."""
    return Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()


def check_page(html: Path, screenshot: Path) -> PageCheck:
    """Load ``html`` from disk, wait for it, and collect images, errors and requests."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-default-apps", "--disable-sync", "--no-first-run",
                 "--disable-extensions", "--window-size=1280,2000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(Path(html).resolve().as_uri())
        driver.execute_script("return document.readyState")
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.src.slice(0, 60), i.complete,"
            " i.naturalWidth])")
        text = driver.execute_script("return document.body.innerText")
        driver.save_screenshot(str(screenshot))
        console = [entry["message"] for entry in driver.get_log("browser")
                   if entry["level"] in ("SEVERE", "ERROR")]
        requests = []
        for entry in driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                url = message["params"]["request"]["url"]
                if not url.startswith(("file:", "data:", "about:", "blob:")):
                    requests.append(url)
    finally:
        driver.quit()
    broken = [src for src, complete, width in images if not complete or not width]
    return PageCheck(len(images), broken, console, requests, text)
