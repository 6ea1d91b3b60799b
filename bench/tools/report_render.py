"""How a report (or compare page) renders in real headless Chromium.

    python -m inferbench.tools.report_render reports/<run>.html [--screenshot out.png]

Opens the page with Playwright driving the system's Chromium (Debian's `chromium`; `make
browser` installs it), then prints: the file's size, the time to the load event, the time
until plotly is ready (it loads when the charts come near), the time to draw every chart
(each is drawn as it nears the viewport, so the tool scrolls to each), and every console or
page error. One run's figures; rendering time depends on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from types import TracebackType
from typing import Any

BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class RenderedPage:
    """A page opened in headless Chromium; collects console and page errors (and dialogs,
    which an injected script would open), and how long loading and plotly took."""

    def __init__(self, html_path: Path, executable: str) -> None:
        self.html_path = html_path
        self.executable = executable
        self.errors: list[str] = []
        self.load_s = float("nan")
        self.charts_s = float("nan")
        self.charts_before_scrolling: str | None = None

    def __enter__(self) -> RenderedPage:
        from playwright.sync_api import sync_playwright

        self._pw = sync_playwright().start()
        self._browser = self._pw.chromium.launch(executable_path=self.executable, args=BROWSER_ARGS)
        page = self._browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("dialog", lambda d: self.errors.append(f"dialog opened: {d.message}"))
        t0 = time.perf_counter()
        page.goto(self.html_path.resolve().as_uri())
        self.load_s = time.perf_counter() - t0
        self.charts_before_scrolling = page.get_attribute("body", "data-charts")
        if page.locator("#charts").count():
            page.locator("#charts").scroll_into_view_if_needed()  # plotly loads when charts near
            page.wait_for_selector("body[data-charts]", timeout=60_000)
        self.charts_s = time.perf_counter() - t0
        self.page: Any = page
        return self

    def draw_every_chart(self) -> float:
        return draw_every_chart(self.page)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._browser.close()
        self._pw.stop()


def draw_every_chart(page: Any) -> float:
    """Charts are drawn as they near the viewport: scroll to each and wait until it is drawn;
    returns the seconds it took."""
    t0 = time.perf_counter()
    for chart in page.locator("div.chart").all():
        chart.scroll_into_view_if_needed()
        # Lazily drawn charts (run report, compare page) mark themselves; others (history
        # page) hold a plotly div once drawn.
        page.wait_for_function(
            "d => d.dataset.drawn === '1' || d.querySelector('.js-plotly-plot') !== null",
            arg=chart.element_handle(),
            timeout=60_000,
        )
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("page", type=Path, help="an HTML report or compare page")
    parser.add_argument("--screenshot", type=Path, help="save a full-page screenshot here")
    args = parser.parse_args(argv)
    executable = chromium_path()
    if executable is None:
        print("no chromium on this machine (make browser installs Debian's chromium)")
        return 2
    with RenderedPage(args.page, executable) as rendered:
        draw_s = rendered.draw_every_chart()
        charts = rendered.page.locator("div.chart").count()
        if args.screenshot:
            rendered.page.screenshot(path=str(args.screenshot), full_page=True)
    figures = {
        "page": str(args.page),
        "bytes": args.page.stat().st_size,
        "load_s": round(rendered.load_s, 3),
        "plotly_ready_s": round(rendered.charts_s, 3),
        "charts": charts,
        "draw_all_s": round(draw_s, 3),
        "errors": rendered.errors,
    }
    print(json.dumps(figures, indent=1))
    return 1 if rendered.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
